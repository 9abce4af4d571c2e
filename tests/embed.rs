//! The embedder on the real model (provisioned by `scripts/fetch-model`;
//! `scripts/test` exports its directory) and the sample registry.

use std::path::PathBuf;

use personas::persona::Persona;
use personas::persona::settings::parse_settings;
use personas::persona::validate::validate_persona;
use personas::vectors::embed::{EmbedError, Embedder};
use personas::vectors::text::embedding_text;

fn model_dir() -> PathBuf {
    let dir = std::env::var_os("PERSONAS_EMBED_MODEL_DIR").expect(
        "PERSONAS_EMBED_MODEL_DIR is not set: run `scripts/fetch-model` and export the directory it prints \
         (scripts/test does both)",
    );
    PathBuf::from(dir)
}

fn embedder() -> Embedder {
    Embedder::load(&model_dir(), None).expect("the provisioned model loads")
}

/// Every persona of the sample registry, by slug.
fn sample_registry() -> Vec<Persona> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("registry");
    let settings_text = std::fs::read(root.join("registry.toml")).unwrap();
    let (settings, problems) = parse_settings("registry/registry.toml", &settings_text);
    assert!(problems.is_empty());
    let mut personas = Vec::new();
    for entry in std::fs::read_dir(root.join("personas")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let parsed = validate_persona(&path.display().to_string(), &bytes, &stem, &settings);
        personas.push(parsed.persona.expect("the sample registry is valid"));
    }
    personas.sort_by_key(|persona| persona.slug.to_string());
    personas
}

/// The sample registry and each persona's vector, in the same order.
fn embedded_registry(embedder: &Embedder) -> (Vec<Persona>, Vec<Vec<f32>>) {
    let personas = sample_registry();
    let texts: Vec<String> = personas.iter().map(embedding_text).collect();
    let vectors = embedder.embed(&texts).unwrap();
    (personas, vectors)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Slugs ranked by similarity to `query`, best first.
fn rank(query: &[f32], personas: &[Persona], vectors: &[Vec<f32>]) -> Vec<String> {
    let mut scored: Vec<(f32, String)> = personas
        .iter()
        .zip(vectors)
        .map(|(persona, vector)| (cosine(query, vector), persona.slug.to_string()))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, slug)| slug).collect()
}

#[test]
fn vectors_are_normalized_deterministic_and_384_wide() {
    let embedder = embedder();
    assert_eq!(embedder.dimension(), 384);
    assert!(embedder.model_id().contains("@sha256:"), "{}", embedder.model_id());
    let texts = [
        "A physicist who loves thought experiments.",
        "A painter of self-portraits.",
    ];
    let first = embedder.embed(&texts).unwrap();
    let again = embedder.embed(&texts).unwrap();
    assert_eq!(first, again);
    for vector in &first {
        assert_eq!(vector.len(), 384);
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
    }
    assert!(cosine(&first[0], &first[1]) < 0.9, "different texts must not collapse");
    assert!(embedder.embed::<&str>(&[]).unwrap().is_empty());
}

#[test]
fn a_query_about_relativity_ranks_physicists_above_artists() {
    let embedder = embedder();
    let (personas, vectors) = embedded_registry(&embedder);
    let query = embedder
        .embed(&["Who can explain the theory of relativity, light, space-time and gravity?"])
        .unwrap()
        .remove(0);
    let ranking = rank(&query, &personas, &vectors);
    eprintln!("relativity query, top 5: {:?}", &ranking[..5]);
    let position = |slug: &str| ranking.iter().position(|s| s == slug).unwrap();
    assert!(position("albert-einstein") < 3, "{ranking:?}");
    for artist in ["frida-kahlo", "jane-austen", "nina-simone", "ludwig-van-beethoven"] {
        assert!(
            position("albert-einstein") < position(artist) && position("marie-curie") < position(artist),
            "{artist} outranks a physicist: {ranking:?}"
        );
    }
}

#[test]
fn the_personas_most_similar_to_a_scientist_are_mostly_scientists() {
    let embedder = embedder();
    let (personas, vectors) = embedded_registry(&embedder);
    let curie = personas
        .iter()
        .position(|p| p.slug.to_string() == "marie-curie")
        .unwrap();
    let similar: Vec<String> = rank(&vectors[curie], &personas, &vectors)
        .into_iter()
        .filter(|slug| slug != "marie-curie")
        .take(5)
        .collect();
    eprintln!("most similar to marie-curie: {similar:?}");
    let scientific = [
        "physics",
        "chemistry",
        "biology",
        "mathematics",
        "computing",
        "ecology",
        "medicine",
    ];
    let scientists = similar
        .iter()
        .filter(|slug| {
            let persona = personas.iter().find(|p| p.slug.to_string() == **slug).unwrap();
            persona
                .domains
                .iter()
                .any(|domain| scientific.iter().any(|field| domain.contains(field)))
        })
        .count();
    assert!(scientists >= 3, "only {scientists} of {similar:?} are scientists");
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let error = Embedder::load(empty.path(), None).unwrap_err();
    assert!(matches!(error, EmbedError::MissingModel { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("scripts/fetch-model") && message.contains("model.onnx"),
        "{message}"
    );
}

/// The thresholds of `personas review`'s near-duplicate check, on the
/// sample registry: no two of its personas reach them, and a copy of one
/// under a new name with a reworded description does (by meaning).
#[test]
fn near_duplicate_thresholds_separate_the_sample_registry_from_a_reworded_copy() {
    use personas::commands::near_duplicates::{
        EMBEDDING_SIMILARITY, NAME_SIMILARITY, by_meaning, by_name, cosine, text_similarity,
    };
    let embedder = embedder();
    let (personas, vectors) = embedded_registry(&embedder);
    let mut closest_meaning = (0.0f32, String::new());
    let mut closest_name = (0.0f32, String::new());
    for (i, a) in personas.iter().enumerate() {
        for (j, b) in personas.iter().enumerate().skip(i + 1) {
            let meaning = cosine(&vectors[i], &vectors[j]);
            if meaning > closest_meaning.0 {
                closest_meaning = (meaning, format!("{} ~ {}", a.slug, b.slug));
            }
            let name = text_similarity(&a.name.to_lowercase(), &b.name.to_lowercase())
                .max(text_similarity(a.slug.as_str(), b.slug.as_str()));
            if name > closest_name.0 {
                closest_name = (name, format!("{} ~ {}", a.slug, b.slug));
            }
        }
    }
    println!(
        "closest pair by meaning: {:.3} ({})",
        closest_meaning.0, closest_meaning.1
    );
    println!(
        "closest pair by name or slug: {:.3} ({})",
        closest_name.0, closest_name.1
    );
    assert!(closest_meaning.0 < EMBEDDING_SIMILARITY, "{closest_meaning:?}");
    assert!(closest_name.0 < NAME_SIMILARITY, "{closest_name:?}");

    let original = personas
        .iter()
        .find(|persona| persona.slug.as_str() == "marie-curie")
        .unwrap();
    let mut copy = original.clone();
    copy.id = personas::persona::PersonaId(uuid::Uuid::from_u128(7));
    copy.name = "Maria Skłodowska".to_string();
    copy.slug = "maria-sklodowska".parse().unwrap();
    copy.description = format!("{} (A second take.)", copy.description);
    let existing: Vec<&Persona> = personas.iter().collect();
    let found = by_meaning(&embedder, &[&copy], &existing).unwrap();
    let score = cosine(
        &embedder.embed(&[embedding_text(&copy)]).unwrap()[0],
        &vectors[personas.iter().position(|p| p.slug == original.slug).unwrap()],
    );
    println!("reworded copy of marie-curie by meaning: {score:.3}");
    assert!(
        found[0].iter().any(|duplicate| duplicate.of == "marie-curie"),
        "the copy scored {score}"
    );
    assert_eq!(found[0].len(), 1, "{:?}", found[0]);
    // By name it is not close (a new name), and a near-identical name is.
    assert!(by_name(&copy, &existing).is_empty());
    let mut renamed = copy.clone();
    renamed.name = "Marie Curie.".to_string();
    renamed.slug = "marie-curie-2".parse().unwrap();
    assert!(
        by_name(&renamed, &existing)
            .iter()
            .any(|duplicate| duplicate.of == "marie-curie")
    );
}

/// A copy of the model directory whose `1_Pooling/config.json` says `config`
/// (the file sentence-transformers models ship, bge's asking for CLS).
fn model_dir_with_pooling(config: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(copy.path().join("1_Pooling")).unwrap();
    std::fs::write(copy.path().join(personas::vectors::embed::POOLING_CONFIG), config).unwrap();
    copy
}

fn pooling_config(mode: &str) -> String {
    let modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens"];
    let fields: Vec<String> = modes
        .iter()
        .map(|name| format!("\"pooling_mode_{name}\": {}", *name == mode))
        .collect();
    format!("{{\"word_embedding_dimension\": 384, {}}}", fields.join(", "))
}

#[test]
fn the_model_directory_decides_the_pooling() {
    use personas::vectors::embed::PoolingChoice;
    let texts = [
        "Theoretical physicist known for the theory of relativity.",
        "A painter of self-portraits.",
    ];
    let mean = embedder();
    assert_eq!(PoolingChoice::of_model_dir(&model_dir()).unwrap(), PoolingChoice::Mean);
    let mean_vectors = mean.embed(&texts).unwrap();

    // A config asking for CLS pooling (bge's) gets CLS vectors, not mean ones.
    let cls_dir = model_dir_with_pooling(&pooling_config("cls_token"));
    assert_eq!(PoolingChoice::of_model_dir(cls_dir.path()).unwrap(), PoolingChoice::Cls);
    let cls = Embedder::load(cls_dir.path(), None).unwrap();
    assert!(cls.model_id().ends_with("+cls"), "{}", cls.model_id());
    assert_ne!(cls.model_id(), mean.model_id(), "other vectors, another model id");
    let cls_vectors = cls.embed(&texts).unwrap();
    assert_eq!(cls.embed(&texts).unwrap(), cls_vectors, "deterministic");
    for (cls_vector, mean_vector) in cls_vectors.iter().zip(&mean_vectors) {
        assert_eq!(cls_vector.len(), 384);
        assert!((cosine(cls_vector, cls_vector) - 1.0).abs() < 1e-4, "normalized");
        let agreement = cosine(cls_vector, mean_vector);
        assert!(
            agreement < 0.99,
            "CLS pooling gave the mean-pooled vector (cosine {agreement})"
        );
    }

    // A config asking for mean pooling is the default, vector for vector.
    let mean_dir = model_dir_with_pooling(&pooling_config("mean_tokens"));
    let explicit = Embedder::load(mean_dir.path(), None).unwrap();
    assert_eq!(explicit.embed(&texts).unwrap(), mean_vectors);

    // A pooling fastembed cannot do is refused, naming the file and the mode.
    let max_dir = model_dir_with_pooling(&pooling_config("max_tokens"));
    let error = Embedder::load(max_dir.path(), None).unwrap_err().to_string();
    assert!(
        error.contains("1_Pooling/config.json") && error.contains("pooling_mode_max_tokens"),
        "{error}"
    );
    let broken_dir = model_dir_with_pooling("{not json");
    let error = Embedder::load(broken_dir.path(), None).unwrap_err().to_string();
    assert!(error.contains("not JSON"), "{error}");
}

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

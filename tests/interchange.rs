//! Character Card export and import on real files: every sample persona
//! through both card specs and back, the cards against JSON Schemas of the
//! published specs, a PNG card built here, the seed documents' two JSON
//! shapes, broken inputs, and the `export`/`import` commands on disk.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::{TestRepo, personas, sample_repository};
use personas::interchange::{
    CardMeta, CardSpec, ImportOptions, Imported, MAX_IMPORT_BYTES, SourceFormat, export_card, import_persona,
    persona_to_toml,
};
use personas::persona::settings::parse_settings;
use personas::persona::{Persona, RegistrySettings, content_hash, validate_persona};
use serde_json::{Value, json};

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn registry_settings() -> RegistrySettings {
    let bytes = std::fs::read(manifest_path("registry/registry.toml")).unwrap();
    let (settings, diagnostics) = parse_settings("registry/registry.toml", &bytes);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    settings
}

/// Every persona of the sample registry, validated.
fn sample_personas(settings: &RegistrySettings) -> Vec<Persona> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(manifest_path("registry/personas"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "the sample registry is there");
    paths
        .iter()
        .map(|path| {
            let stem = path.file_stem().unwrap().to_str().unwrap();
            let parsed = validate_persona(
                &path.display().to_string(),
                &std::fs::read(path).unwrap(),
                stem,
                settings,
            );
            parsed.persona.unwrap_or_else(|| panic!("{:?}", parsed.diagnostics))
        })
        .collect()
}

fn meta(version: u32) -> CardMeta {
    CardMeta {
        version,
        system_prompt: Some("You are {{char}}. Stay in character.".to_string()),
        creator: Some("Ada Author".to_string()),
        created_at: Some(1_700_000_000),
        modified_at: Some(1_700_000_600),
    }
}

/// The imported TOML read back by the registry's validator.
fn reread(imported: &Imported, settings: &RegistrySettings) -> Persona {
    let slug = imported.persona.slug.as_str();
    let parsed = validate_persona(&format!("{slug}.toml"), imported.toml.as_bytes(), slug, settings);
    parsed
        .persona
        .unwrap_or_else(|| panic!("{}\n{:?}", imported.toml, parsed.diagnostics))
}

fn import(file: &str, bytes: &[u8], settings: &RegistrySettings) -> Imported {
    import_persona(file, bytes, &ImportOptions::default(), settings).unwrap_or_else(|error| panic!("{error}"))
}

fn import_error(file: &str, bytes: &[u8]) -> String {
    match import_persona(file, bytes, &ImportOptions::default(), &registry_settings()) {
        Ok(imported) => panic!("{file} was imported:\n{}", imported.toml),
        Err(error) => error.to_string(),
    }
}

fn notes_text(imported: &Imported) -> String {
    imported.notes.join("\n")
}

#[test]
fn every_sample_persona_survives_export_and_import_in_both_specs() {
    let settings = registry_settings();
    for persona in sample_personas(&settings) {
        let expected = content_hash(&persona);
        for spec in [CardSpec::V2, CardSpec::V3] {
            let card = export_card(&persona, spec, &meta(3));
            let bytes = serde_json::to_vec_pretty(&card).unwrap();
            let file = format!("{}.{spec}.json", persona.slug);
            let imported = import(&file, &bytes, &settings);
            assert!(imported.restored, "{file}: rebuilt from the embedded document");
            assert_eq!(
                imported.format,
                if spec == CardSpec::V2 {
                    SourceFormat::CardV2
                } else {
                    SourceFormat::CardV3
                }
            );
            assert!(imported.notes.is_empty(), "{file}: {:?}", imported.notes);
            let written = reread(&imported, &settings);
            assert_eq!(content_hash(&written), expected, "{file}:\n{}", imported.toml);
            assert_eq!(written, persona, "{file}");
            assert!(imported.toml.starts_with("# Imported by `personas import` from "));
        }
    }
}

#[test]
fn the_toml_writer_round_trips_every_sample_file() {
    let settings = registry_settings();
    for persona in sample_personas(&settings) {
        let text = persona_to_toml(&persona, "written by the test").unwrap();
        let slug = persona.slug.as_str();
        let parsed = validate_persona(&format!("{slug}.toml"), text.as_bytes(), slug, &settings);
        let written = parsed
            .persona
            .unwrap_or_else(|| panic!("{text}\n{:?}", parsed.diagnostics));
        assert_eq!(content_hash(&written), content_hash(&persona), "{text}");
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(manifest_path(&format!("tests/fixtures/{name}"))).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn schema_errors(validator: &jsonschema::Validator, card: &Value) -> Vec<String> {
    validator
        .iter_errors(card)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

#[test]
fn exported_cards_match_the_published_shapes() {
    let settings = registry_settings();
    let (v2, v3) = (schema("card-v2.schema.json"), schema("card-v3.schema.json"));
    for persona in sample_personas(&settings) {
        let hash = content_hash(&persona).to_string();
        let card_v2 = export_card(&persona, CardSpec::V2, &meta(3));
        let card_v3 = export_card(&persona, CardSpec::V3, &meta(3));
        assert_eq!(schema_errors(&v2, &card_v2), Vec::<String>::new(), "{}", persona.slug);
        assert_eq!(schema_errors(&v3, &card_v3), Vec::<String>::new(), "{}", persona.slug);
        // Each spec's card is not the other's.
        assert!(!v2.is_valid(&card_v3) && !v3.is_valid(&card_v2));

        for card in [&card_v2, &card_v3] {
            let data = &card["data"];
            assert_eq!(data["name"], json!(persona.name));
            assert_eq!(data["description"], json!(persona.description));
            assert_eq!(data["tags"], json!(persona.domains), "tags are the domains");
            assert_eq!(data["creator"], "Ada Author");
            assert_eq!(data["system_prompt"], "You are {{char}}. Stay in character.");
            let version = data["character_version"].as_str().unwrap();
            assert!(version.starts_with("3 ") && version.contains(&hash), "{version}");
            let ocean = &persona.traits["ocean"];
            let personality = data["personality"].as_str().unwrap();
            assert!(
                personality.contains(&format!("openness {:.2}", ocean["openness"])),
                "{personality}"
            );
            let embedded = &data["extensions"]["persona-registry"];
            assert_eq!(embedded["id"], json!(persona.id.to_string()));
            assert_eq!(embedded["version"], 3);
            assert_eq!(embedded["content_hash"], json!(hash));
        }

        let mut citations: Vec<String> = Vec::new();
        for source in persona.beliefs.iter().filter_map(|belief| belief.source.clone()) {
            if !citations.contains(&source) {
                citations.push(source);
            }
        }
        let data = &card_v3["data"];
        match data.get("source") {
            Some(sources) => assert_eq!(sources, &json!(citations), "{}", persona.slug),
            None => assert!(citations.is_empty(), "{}: citations missing from source", persona.slug),
        }
        assert_eq!(data["group_only_greetings"], json!([]));
        assert_eq!(data["creation_date"], 1_700_000_000);
        assert_eq!(data["modification_date"], 1_700_000_600);
    }

    // The schemas do reject what the specs rule out.
    let persona = &sample_personas(&settings)[0];
    let mut card = export_card(persona, CardSpec::V3, &meta(1));
    card["data"].as_object_mut().unwrap().remove("group_only_greetings");
    assert!(!v3.is_valid(&card), "group_only_greetings is required in V3");
    let mut card = export_card(persona, CardSpec::V2, &meta(1));
    card["data"]["tags"] = json!("physics");
    assert!(!v2.is_valid(&card), "tags is a list of strings");
}

/// A 1×1 grey PNG with the given text chunks.
fn png_with_text(chunks: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 1, 1);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        for (keyword, text) in chunks {
            encoder.add_text_chunk(keyword.to_string(), text.clone()).unwrap();
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[128]).unwrap();
    }
    out
}

fn base64_of(value: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(value).unwrap())
}

fn foreign_card() -> Value {
    json!({
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Captain Ilse Varga",
            "description": "A veteran freighter captain who has seen every port between the inner worlds and the rim.",
            "personality": "gruff, loyal, dry humor",
            "scenario": "{{user}} signs on as crew.",
            "first_mes": "You're late. The *Kestrel* leaves in ten minutes.",
            "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Stow your gear.",
            "creator_notes": "Works best with long replies.",
            "system_prompt": "Write Varga's next reply.",
            "post_history_instructions": "",
            "alternate_greetings": ["Another greeting."],
            "tags": ["Sci-Fi", "Space Opera", "sci-fi", "★"],
            "creator": "someone",
            "character_version": "1.2",
            "extensions": { "other-app/voice": { "id": 7 } }
        }
    })
}

#[test]
fn a_png_card_from_another_tool_is_mapped_and_the_gaps_are_named() {
    let settings = registry_settings();
    let png = png_with_text(&[("chara", base64_of(&foreign_card()))]);
    let imported = import("varga.png", &png, &settings);
    assert_eq!(imported.format, SourceFormat::CardV2);
    assert!(imported.from_png && !imported.restored);
    let persona = reread(&imported, &settings);
    assert_eq!(persona.name, "Captain Ilse Varga");
    assert_eq!(persona.slug.as_str(), "captain-ilse-varga");
    assert!(persona.description.starts_with("A veteran freighter captain"));
    assert_eq!(persona.domains, ["sci-fi", "space opera"]);
    assert!(!persona.is_real);
    let ocean = &persona.traits["ocean"];
    assert_eq!(ocean.len(), 5, "{ocean:?}");
    assert!(ocean.values().all(|value| *value == 0.5), "{ocean:?}");
    let first_mode = settings.modes.as_ref().unwrap()[0].clone();
    assert_eq!(persona.modes, BTreeMap::from([(first_mode.clone(), true)]));
    assert_eq!(persona.default_mode, Some(first_mode));

    let notes = notes_text(&imported);
    for unmapped in [
        "data.personality",
        "data.first_mes",
        "data.system_prompt",
        "data.scenario",
        "data.mes_example",
        "data.alternate_greetings",
        "data.creator_notes",
        "data.extensions.other-app/voice",
    ] {
        assert!(notes.contains(unmapped), "notes do not mention {unmapped}:\n{notes}");
    }
    assert!(
        !notes.contains("data.post_history_instructions"),
        "empty fields are not reported"
    );
    assert!(notes.contains("0.5") && notes.contains("is_real = false"), "{notes}");
    assert!(notes.contains("\"★\""), "the dropped tag is named: {notes}");
    // The notes are in the file too, for the reviewer.
    assert!(imported.toml.contains("# - not mapped"), "{}", imported.toml);
}

#[test]
fn a_png_with_both_chunks_is_read_from_ccv3_and_round_trips() {
    let settings = registry_settings();
    let persona = sample_personas(&settings).remove(0);
    let v3 = export_card(&persona, CardSpec::V3, &meta(2));
    let png = png_with_text(&[("chara", base64_of(&foreign_card())), ("ccv3", base64_of(&v3))]);
    let imported = import("card.png", &png, &settings);
    assert_eq!(imported.format, SourceFormat::CardV3);
    assert!(imported.restored);
    assert_eq!(content_hash(&reread(&imported, &settings)), content_hash(&persona));
}

#[test]
fn an_edited_card_keeps_the_registry_persona_and_says_so() {
    let settings = registry_settings();
    let persona = sample_personas(&settings).remove(0);
    let mut card = export_card(&persona, CardSpec::V2, &meta(1));
    card["data"]["description"] = json!("Rewritten in another tool.");
    let imported = import("edited.json", &serde_json::to_vec(&card).unwrap(), &settings);
    assert_eq!(imported.persona.description, persona.description);
    assert!(notes_text(&imported).contains("description"), "{:?}", imported.notes);
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(manifest_path(&format!("tests/fixtures/seeds/{name}"))).unwrap()
}

fn seed_ocean(seed: &Value) -> BTreeMap<String, f64> {
    let traits = &seed["traits"];
    let ocean = traits.get("OCEAN").unwrap_or(traits);
    [
        "openness",
        "conscientiousness",
        "extraversion",
        "agreeableness",
        "neuroticism",
    ]
    .iter()
    .map(|name| (name.to_string(), ocean[*name].as_f64().unwrap()))
    .collect()
}

#[test]
fn both_seed_shapes_import_with_their_traits_and_domains() {
    let settings = registry_settings();
    for name in ["example-entry-einstein.json", "mongodb-einstein.json"] {
        let bytes = fixture(name);
        let seed: Value = serde_json::from_slice(&bytes).unwrap();
        let imported = import(name, &bytes, &settings);
        assert_eq!(imported.format, SourceFormat::Seed, "{name}");
        let persona = reread(&imported, &settings);
        assert_eq!(persona.traits["ocean"], seed_ocean(&seed), "{name}");
        assert_eq!(persona.domains, ["physics", "philosophy"], "{name}");
        assert_eq!(persona.name, "Albert Einstein");
        assert_eq!(persona.slug.as_str(), "albert-einstein");
        assert!(!persona.is_real, "{name}: unsourced beliefs need is_real = false");
        assert_eq!(persona.config.humor_usage.to_string(), "low");
        assert_eq!(persona.config.emotional_style.to_string(), "reserved");
        let beliefs: Vec<&str> = persona.beliefs.iter().map(|belief| belief.text.as_str()).collect();
        let seed_beliefs: Vec<&str> = seed["beliefs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap())
            .collect();
        assert_eq!(beliefs, seed_beliefs);
        let modes: Vec<&str> = seed["modes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap())
            .collect();
        assert_eq!(persona.enabled_modes().collect::<Vec<_>>().len(), modes.len());
        assert_eq!(persona.default_mode.as_deref(), Some(modes[0]));
        let notes = notes_text(&imported);
        assert!(notes.contains("is_real not given"), "{name}: {notes}");
        assert!(notes.contains("language_style = \"concise\""), "{name}: {notes}");
    }

    let example = import(
        "example-entry-einstein.json",
        &fixture("example-entry-einstein.json"),
        &settings,
    );
    assert!(notes_text(&example).contains("\"einstein_1879\" is not a UUID"));
    assert_eq!(
        example.persona.description,
        "Theoretical physicist known for the theory of relativity."
    );
    assert!(!example.persona.config.voice_enabled);

    let mongodb = import("mongodb-einstein.json", &fixture("mongodb-einstein.json"), &settings);
    assert_eq!(mongodb.persona.signature_phrases, ["E=mc²"]);
    assert!(
        notes_text(&mongodb).contains("no description given"),
        "{:?}",
        mongodb.notes
    );
}

#[test]
fn broken_inputs_get_clear_errors() {
    let error = import_error("broken.json", b"{\"name\": \"Ada\", ");
    assert!(error.starts_with("broken.json: is not valid JSON"), "{error}");

    let error = import_error("plain.png", &png_with_text(&[("Software", "paint".to_string())]));
    assert!(
        error.starts_with("plain.png: is a PNG without a character card") && error.contains("Software"),
        "{error}"
    );
    let error = import_error(
        "bad.png",
        &png_with_text(&[("chara", "%%% not base64 %%%".to_string())]),
    );
    assert!(error.contains("`chara` chunk is not valid base64"), "{error}");
    let mut truncated = png_with_text(&[("chara", base64_of(&foreign_card()))]);
    truncated.truncate(40);
    let error = import_error("truncated.png", &truncated);
    assert!(error.contains("not a readable PNG"), "{error}");

    let mut huge = b"{\"name\": \"".to_vec();
    huge.resize(MAX_IMPORT_BYTES + 1, b'a');
    let error = import_error("huge.json", &huge);
    assert!(error.contains("may be at most"), "{error}");

    let error = import_error("list.json", b"[1, 2]");
    assert!(error.contains("a persona or card is a JSON object"), "{error}");
    let error = import_error("persona.toml", b"schema = 1\n");
    assert!(error.contains("neither JSON nor a PNG card"), "{error}");
    let error = import_error("future.json", br#"{"spec": "chara_card_v9", "data": {}}"#);
    assert!(error.contains("chara_card_v9"), "{error}");
    let error = import_error(
        "nameless.json",
        br#"{"spec": "chara_card_v2", "data": {"description": "x"}}"#,
    );
    assert!(error.contains("has no name"), "{error}");
    let error = import_error("typed.json", br#"{"spec": "chara_card_v2", "data": {"name": 5}}"#);
    assert!(
        error.contains("`data.name` must be a string, found a number"),
        "{error}"
    );
    let error = import_error("scale.json", br#"{"name": "X", "traits": {"OCEAN": {"openness": 95}}}"#);
    assert!(error.contains("`traits.OCEAN.openness` = 95 is outside"), "{error}");
    // A seed that says it is a real person needs sources for its beliefs:
    // the registry's own validator says so, with the written file's location.
    let error = import_error(
        "real.json",
        br#"{"name": "X", "is_real": true, "beliefs": ["Unsourced."]}"#,
    );
    assert!(
        error.contains("not valid in this registry") && error.contains("x.toml:") && error.contains("source"),
        "{error}"
    );
}

const CLI_SETTINGS: &str = r#"schema = 1
title = "Import test"
modes = ["Educator", "Critic", "Debater", "Mentor", "Storyteller", "Advisor", "Interviewer", "Muse"]

[policy]
require_sources_for_real = true
protected = []
"#;

/// A working directory with an empty registry at `reg/`.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("reg/personas")).unwrap();
    std::fs::write(dir.path().join("reg/registry.toml"), CLI_SETTINGS).unwrap();
    dir
}

#[test]
fn import_command_loads_a_seed_directory_and_refuses_overwrites() {
    let work = workspace();
    let root = work.path();
    std::fs::create_dir_all(root.join("seeds")).unwrap();
    std::fs::write(root.join("seeds/einstein.json"), fixture("example-entry-einstein.json")).unwrap();
    let curie = String::from_utf8(fixture("mongodb-einstein.json"))
        .unwrap()
        .replace("Albert Einstein", "Marie Curie")
        .replace("\"physics\", \"philosophy\"", "\"physics\", \"chemistry\"");
    std::fs::write(root.join("seeds/curie.json"), curie).unwrap();
    std::fs::write(root.join("seeds/notes.txt"), "not a persona").unwrap();

    let (code, stdout, stderr) = personas(&["import", "seeds/", "--registry", "reg"], root);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("seeds/einstein.json → reg/personas/albert-einstein.toml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("seeds/curie.json → reg/personas/marie-curie.toml"),
        "{stdout}"
    );
    assert!(stdout.contains("  note: is_real not given"), "{stdout}");
    assert!(stderr.contains("imported 2 of 2 files"), "{stderr}");

    let (code, stdout, stderr) = personas(&["check", "reg"], root);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("no problems"), "{stderr}");

    // Importing again would overwrite: refused, the file left as it was.
    let path = root.join("reg/personas/albert-einstein.toml");
    let before = std::fs::read_to_string(&path).unwrap();
    let (code, _, stderr) = personas(&["import", "seeds/einstein.json", "--registry", "reg"], root);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("reg/personas/albert-einstein.toml exists; pass --force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let (code, _, stderr) = personas(&["import", "seeds/einstein.json", "--registry", "reg", "--force"], root);
    assert_eq!(code, 0, "{stderr}");
    assert_ne!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        "a fresh id was written"
    );

    // One bad file fails the run but not the others.
    std::fs::write(root.join("seeds/broken.json"), "{").unwrap();
    let (code, stdout, stderr) = personas(
        &[
            "import",
            "seeds/broken.json",
            "seeds/curie.json",
            "--registry",
            "reg",
            "--slug",
            "x",
        ],
        root,
    );
    assert_eq!(code, 2, "--slug needs exactly one file: {stdout}\n{stderr}");
    let (code, stdout, stderr) = personas(
        &[
            "import",
            "seeds/broken.json",
            "seeds/curie.json",
            "--registry",
            "reg",
            "--force",
        ],
        root,
    );
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: seeds/broken.json: is not valid JSON"),
        "{stderr}"
    );
    assert!(
        stdout.contains("seeds/curie.json → reg/personas/marie-curie.toml"),
        "{stdout}"
    );
}

#[test]
fn export_command_reads_versions_from_git_and_its_cards_import_losslessly() {
    let repo: TestRepo = sample_repository();
    let original = std::fs::read_to_string(repo.path().join("registry/personas/ada-lovelace.toml")).unwrap();
    repo.write(
        "registry/personas/ada-lovelace.toml",
        &common::edit(&original, "humor_usage = \"medium\"", "humor_usage = \"high\""),
    );
    repo.commit("ada: humor changed");
    let repo_arg = repo.path().to_str().unwrap().to_string();
    let work = workspace();
    let root = work.path();

    let (code, stdout, stderr) = personas(
        &["export", "ada-lovelace", "--format", "json", "--repo", &repo_arg],
        root,
    );
    assert_eq!(code, 0, "{stderr}");
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["version"], 2);
    let current: Persona = serde_json::from_value(document["persona"].clone()).unwrap();
    assert_eq!(document["content_hash"], json!(content_hash(&current).to_string()));

    let (code, _, stderr) = personas(
        &[
            "export",
            "ada-lovelace@1",
            "--format",
            "card-v3",
            "--repo",
            &repo_arg,
            "--out",
            "ada.json",
        ],
        root,
    );
    assert_eq!(code, 0, "{stderr}");
    let card: Value = serde_json::from_str(&std::fs::read_to_string(root.join("ada.json")).unwrap()).unwrap();
    assert!(schema("card-v3.schema.json").is_valid(&card));
    assert_eq!(card["data"]["creator"], "Ada Author", "the commit author");
    assert!(
        card["data"]["character_version"]
            .as_str()
            .unwrap()
            .starts_with("1 (sha256:")
    );
    let first_hash = card["data"]["extensions"]["persona-registry"]["content_hash"].clone();
    assert_ne!(first_hash, document["content_hash"], "version 1 is not version 2");

    // The same version pinned by its content hash.
    let pin = format!("ada-lovelace@{}", first_hash.as_str().unwrap());
    let (code, stdout, stderr) = personas(&["export", &pin, "--format", "card-v2", "--repo", &repo_arg], root);
    assert_eq!(code, 0, "{stderr}");
    let card_v2: Value = serde_json::from_str(&stdout).unwrap();
    assert!(schema("card-v2.schema.json").is_valid(&card_v2));
    assert_eq!(
        card_v2["data"]["extensions"]["persona-registry"]["content_hash"],
        first_hash
    );

    // Imported back, the card gives the same content hash as version 1 in git.
    let (code, stdout, stderr) = personas(&["import", "ada.json", "--registry", "reg"], root);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("lossless"), "{stdout}");
    let (code, stdout, stderr) = personas(&["check", "reg"], root);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let written = std::fs::read(root.join("reg/personas/ada-lovelace.toml")).unwrap();
    let parsed = validate_persona("ada-lovelace.toml", &written, "ada-lovelace", &registry_settings());
    assert_eq!(json!(content_hash(&parsed.persona.unwrap()).to_string()), first_hash);
    // The same id under another slug would make two files one persona.
    let (code, _, stderr) = personas(&["import", "ada.json", "--registry", "reg", "--slug", "ada-copy"], root);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("already belongs to reg/personas/ada-lovelace.toml"),
        "{stderr}"
    );

    // Unknown slugs, versions and deleted personas are refused with a reason.
    let (code, _, stderr) = personas(&["export", "nobody", "--format", "json", "--repo", &repo_arg], root);
    assert_eq!(code, 2);
    assert!(stderr.contains("no persona with slug or id \"nobody\""), "{stderr}");
    let (code, _, stderr) = personas(
        &["export", "ada-lovelace@9", "--format", "json", "--repo", &repo_arg],
        root,
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("there is no version 9"), "{stderr}");
    repo.remove("registry/personas/socrates.toml");
    repo.commit("remove socrates");
    let (code, _, stderr) = personas(
        &["export", "socrates", "--format", "card-v2", "--repo", &repo_arg],
        root,
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("socrates was deleted in commit"), "{stderr}");
    let (code, _, stderr) = personas(
        &["export", "socrates@1", "--format", "card-v2", "--repo", &repo_arg],
        root,
    );
    assert_eq!(code, 0, "an earlier version still exports: {stderr}");
}

//! Canonical form invariance and the semantic diff.

mod common;

use common::*;
use personas::persona::diff::{Change, describe, diff, summarize};
use personas::persona::settings::parse_settings;
use personas::persona::{Persona, canonical_json, content_hash, validate_persona};

fn parse(text: &str) -> Persona {
    let (settings, _) = parse_settings("registry.toml", SETTINGS.as_bytes());
    let parsed = validate_persona("personas/p.toml", text.as_bytes(), "p", &settings);
    parsed
        .persona
        .unwrap_or_else(|| panic!("fixture invalid: {:?}", parsed.diagnostics))
}

#[test]
fn layout_comments_order_and_spelled_out_defaults_do_not_change_the_hash() {
    let base = persona(ID_A, "P");
    let hash = content_hash(&parse(&base));
    let variants = [
        // Comments and blank lines.
        format!("# a comment\n\n{}", base.replace("\n[", "\n# section\n\n[")),
        // Number spelling: 0.9 vs 0.90 vs 9e-1, 0.3 vs 0.300.
        edit(
            &edit(&base, "openness = 0.9", "openness = 0.90"),
            "extraversion = 0.3",
            "extraversion = 3e-1",
        ),
        // The default written out vs left out.
        edit(&base, "voice_enabled = false\n", ""),
        // Inline tables and different quoting, placed among the top-level keys.
        edit(
            &edit(&base, "[modes]\nEducator = true\nCritic = true\nDebater = false\n", ""),
            "default_mode = \"Educator\"\n",
            "default_mode = 'Educator'\nmodes = { Debater = false, Critic = true, 'Educator' = true }\n",
        ),
        // Tables and keys in another order: [config] first, name last among the keys.
        {
            let config_at = base.find("[config]").unwrap();
            let (head, config) = base.split_at(config_at);
            let head = edit(head, "name = \"P\"\n", "");
            let head = edit(&head, "[traits.ocean]", "name = \"P\"\n\n[traits.ocean]");
            let (keys, tables) = head.split_at(head.find("[traits.ocean]").unwrap());
            format!("{keys}{config}\n{tables}")
        },
    ];
    for (index, variant) in variants.iter().enumerate() {
        assert_eq!(
            content_hash(&parse(variant)),
            hash,
            "variant {index} changed the hash:\n{variant}"
        );
    }
}

#[test]
fn integers_and_floats_for_traits_hash_alike() {
    let one = edit(&persona(ID_A, "P"), "openness = 0.9", "openness = 1");
    let one_point_zero = edit(&persona(ID_A, "P"), "openness = 0.9", "openness = 1.0");
    assert_eq!(content_hash(&parse(&one)), content_hash(&parse(&one_point_zero)));
}

#[test]
fn every_content_change_changes_the_hash() {
    let base = persona(ID_A, "P");
    let hash = content_hash(&parse(&base));
    let edits = [
        ("openness = 0.9", "openness = 0.91"),
        ("name = \"P\"", "name = \"Q\""),
        (
            "domains = [\"testing\", \"physics\"]",
            "domains = [\"physics\", \"testing\"]",
        ),
        ("Debater = false", "Debater = true"),
        ("humor_usage = \"low\"", "humor_usage = \"high\""),
        ("source = \"isbn:0-201-83595-9\"", "source = \"isbn:0-306-40615-2\""),
        ("birth_date = 1900-01-01", "birth_date = 1900-01-02"),
    ];
    for (from, to) in edits {
        assert_ne!(content_hash(&parse(&edit(&base, from, to))), hash, "{from} → {to}");
    }
}

#[test]
fn canonical_json_sorts_keys_and_round_trips() {
    let persona = parse(&persona(ID_A, "P"));
    let json = canonical_json(&persona);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(json.find("\"agreeableness\"").unwrap() < json.find("\"openness\"").unwrap());
    let back: Persona = serde_json::from_str(&json).unwrap();
    assert_eq!(back, persona);
    assert_eq!(content_hash(&back).to_string().len(), 71);
}

#[test]
fn the_diff_names_each_field_that_changed() {
    let old = parse(&persona(ID_A, "P"));
    let text = persona(ID_A, "P");
    let text = edit(&text, "openness = 0.9", "openness = 0.95");
    let text = edit(&text, "wit = 0.5", "wit = 0.5\nirony = 0.4");
    let text = edit(
        &text,
        "domains = [\"testing\", \"physics\"]",
        "domains = [\"testing\", \"chemistry\"]",
    );
    let text = edit(&text, "Debater = false", "Debater = true");
    let text = edit(&text, "Critic = true", "Critic = false");
    let text = edit(&text, "humor_usage = \"low\"", "humor_usage = \"medium\"");
    let text = edit(
        &text,
        "[[beliefs]]\ntext = \"Measure before optimizing.\"\nsource = \"isbn:0-201-83595-9\"",
        "[[beliefs]]\ntext = \"Ship small changes.\"\nsource = \"https://example.org/small\"",
    );
    let text = edit(
        &text,
        "source = \"https://en.wikipedia.org/wiki/Software_testing\"",
        "source = \"https://en.wikipedia.org/wiki/Test\"",
    );
    let new = parse(&text);
    let changes = diff(&old, &new);
    let expected = [
        Change::Field {
            field: "config.humor_usage".into(),
            old: "low".into(),
            new: "medium".into(),
        },
        Change::ItemRemoved {
            field: "domains".into(),
            item: "physics".into(),
        },
        Change::ItemAdded {
            field: "domains".into(),
            item: "chemistry".into(),
        },
        Change::TraitChanged {
            trait_type: "ocean".into(),
            name: "openness".into(),
            old: 0.9,
            new: 0.95,
        },
        Change::TraitAdded {
            trait_type: "humor".into(),
            name: "irony".into(),
            value: 0.4,
        },
        Change::BeliefRemoved {
            text: "Measure before optimizing.".into(),
            source: Some("isbn:0-201-83595-9".into()),
        },
        Change::BeliefSourceChanged {
            text: "Tests should fail when the code is wrong.".into(),
            old: Some("https://en.wikipedia.org/wiki/Software_testing".into()),
            new: Some("https://en.wikipedia.org/wiki/Test".into()),
        },
        Change::BeliefAdded {
            text: "Ship small changes.".into(),
            source: Some("https://example.org/small".into()),
        },
        Change::ModeDisabled { mode: "Critic".into() },
        Change::ModeEnabled { mode: "Debater".into() },
    ];
    for change in &expected {
        assert!(changes.contains(change), "missing {change:?} in {changes:#?}");
    }
    assert_eq!(changes.len(), expected.len(), "{changes:#?}");
    let lines: Vec<String> = changes.iter().map(describe).collect();
    assert!(
        lines.contains(&"traits.ocean.openness: 0.90 → 0.95 (+0.05)".to_string()),
        "{lines:?}"
    );
    let summary = summarize(&changes);
    assert!(
        summary.contains("openness 0.90→0.95") && summary.contains("+1 belief"),
        "{summary}"
    );
}

#[test]
fn identical_personas_have_no_diff_and_reorders_are_reported() {
    let old = parse(&persona(ID_A, "P"));
    assert!(diff(&old, &old).is_empty());
    let reordered = parse(&edit(
        &persona(ID_A, "P"),
        "[\"testing\", \"physics\"]",
        "[\"physics\", \"testing\"]",
    ));
    assert_eq!(
        diff(&old, &reordered),
        vec![Change::Reordered {
            field: "domains".into()
        }]
    );
}

/// Content hashes are a published contract: A/B testers pin them and the
/// embedding cache is keyed on them. A change to the canonical form (or to a
/// dependency's JSON behaviour) must be a deliberate, visible decision, so
/// the hash of this fixture is recorded here.
#[test]
fn the_content_hash_of_a_fixed_persona_never_changes_silently() {
    let hash = content_hash(&parse(&persona(ID_A, "Alice")));
    assert_eq!(hash.to_string(), RECORDED_ALICE_HASH);
}

const RECORDED_ALICE_HASH: &str = "sha256:b142fe224816b3709a7bafa80130f4a0bfd4d650701c8abe777a6da345536636";

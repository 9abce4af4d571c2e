//! Every validation rule, each with a fixture that breaks it, checked for the
//! right code at the right line and column.

mod common;

use common::*;
use personas::persona::settings::parse_settings;
use personas::persona::snapshot::{Snapshot, SourceFile};
use personas::persona::{Code, Diagnostic, validate_persona};

fn settings() -> personas::persona::RegistrySettings {
    let (settings, diagnostics) = parse_settings("registry.toml", SETTINGS.as_bytes());
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    settings
}

fn check(text: &str, stem: &str) -> Vec<Diagnostic> {
    validate_persona(&format!("personas/{stem}.toml"), text.as_bytes(), stem, &settings()).diagnostics
}

/// Asserts that `text` yields a diagnostic with `code` at the position of `needle`.
fn assert_error_at(text: &str, stem: &str, code: Code, needle: &str) {
    let diagnostics = check(text, stem);
    let (line, column) = locate(text, needle);
    assert!(
        diagnostics
            .iter()
            .any(|d| d.code == code && d.line == line && d.column == column),
        "expected {code} at {line}:{column} ({needle:?}), got:\n{}",
        diagnostics.iter().map(|d| format!("  {d}\n")).collect::<String>()
    );
}

#[test]
fn the_fixture_is_valid() {
    let text = persona(ID_A, "Test Person");
    let parsed = validate_persona("personas/test-person.toml", text.as_bytes(), "test-person", &settings());
    assert_eq!(parsed.diagnostics, vec![]);
    let persona = parsed.persona.expect("a valid file yields a persona");
    assert_eq!(persona.slug.as_str(), "test-person");
    assert_eq!(persona.traits["ocean"]["openness"], 0.9);
    assert_eq!(persona.beliefs.len(), 2);
}

#[test]
fn each_rule_reports_its_code_at_the_offending_place() {
    let base = persona(ID_A, "Test Person");
    // (edit from, edit to, expected code, text that the error must point at)
    let cases: &[(&str, &str, Code, &str)] = &[
        ("openness = 0.9", "openness = 1.4", Code::Range, "1.4"),
        ("neuroticism = 0.2", "neuroticism = -0.1", Code::Range, "-0.1"),
        ("wit = 0.5", "wit = nan", Code::Range, "nan"),
        ("extraversion = 0.3", "extraversion = \"low\"", Code::Type, "\"low\""),
        ("is_real = true", "is_real = \"yes\"", Code::Type, "\"yes\""),
        (
            "domains = [\"testing\", \"physics\"]",
            "domains = \"testing\"",
            Code::Type,
            "\"testing\"",
        ),
        (
            "name = \"Test Person\"",
            "nmae = \"Test Person\"",
            Code::UnknownKey,
            "nmae",
        ),
        (
            "wit = 0.5",
            "wit = 0.5\n[traits.ocean.extra]\nx = 1",
            Code::UnknownKey,
            "extra]",
        ),
        (
            "agreeableness = 0.6",
            "agreeablenes = 0.6",
            Code::UnknownKey,
            "agreeablenes",
        ),
        (
            "humor_usage = \"low\"",
            "humor_usage = \"extreme\"",
            Code::Enum,
            "\"extreme\"",
        ),
        (
            "emotional_style = \"reserved\"",
            "emotional_style = \"calm\"",
            Code::Enum,
            "\"calm\"",
        ),
        (
            "language_style = \"concise\"",
            "language_style = \"terse\"",
            Code::Enum,
            "\"terse\"",
        ),
        (
            "voice_enabled = false",
            "voice_enabled = false\nvolume = 3",
            Code::UnknownKey,
            "volume",
        ),
        (ID_A, "not-a-uuid", Code::Uuid, "\"not-a-uuid\""),
        (ID_A, "00000000-0000-0000-0000-000000000000", Code::Uuid, "\"00000000"),
        ("schema = 1", "schema = 2", Code::Schema, "2"),
        (
            "description = \"A test persona.\"",
            "description = \"  \"",
            Code::Text,
            "\"  \"",
        ),
        (
            "domains = [\"testing\", \"physics\"]",
            "domains = [\"Testing\"]",
            Code::Name,
            "\"Testing\"",
        ),
        (
            "domains = [\"testing\", \"physics\"]",
            "domains = []",
            Code::Empty,
            "[]",
        ),
        (
            "domains = [\"testing\", \"physics\"]",
            "domains = [\"a\", \"a\"]",
            Code::Duplicate,
            "\"a\"]",
        ),
        (
            "birth_date = 1900-01-01",
            "birth_date = \"1900-01-01\"",
            Code::Type,
            "\"1900-01-01\"",
        ),
        (
            "birth_date = 1900-01-01",
            "birth_date = 1900-01-01T10:00:00Z",
            Code::Date,
            "1900-01-01T",
        ),
        (
            "birth_date = 1900-01-01",
            "avatar_url = \"http://example.org/a.png\"",
            Code::Url,
            "\"http://",
        ),
        (
            "birth_date = 1900-01-01",
            "avatar_url = \"not a url\"",
            Code::Url,
            "\"not a url\"",
        ),
        (
            "source = \"isbn:0-201-83595-9\"",
            "source = \"ftp://example.org/x\"",
            Code::Url,
            "\"ftp://",
        ),
        (
            "source = \"isbn:0-201-83595-9\"",
            "source = \"see the book\"",
            Code::Url,
            "\"see the book\"",
        ),
        (
            "source = \"isbn:0-201-83595-9\"",
            "source = \"isbn:0-201-83595-8\"",
            Code::Url,
            "\"isbn:0-201-83595-8\"",
        ),
        (
            "source = \"isbn:0-201-83595-9\"",
            "source = \"doi:10.12/x\"",
            Code::Url,
            "\"doi:10.12/x\"",
        ),
        (
            "source = \"isbn:0-201-83595-9\"",
            "source = \"madeup:123\"",
            Code::Url,
            "\"madeup:123\"",
        ),
        (
            "source = \"isbn:0-201-83595-9\"\n",
            "",
            Code::SourceRequired,
            "[[beliefs]]\ntext = \"Measure",
        ),
        (
            "text = \"Measure before optimizing.\"",
            "text = \"Tests should fail when the code is wrong.\"",
            Code::Duplicate,
            "\"Tests should fail when the code is wrong.\"\nsource = \"isbn",
        ),
        ("Debater = false", "Jester = true", Code::UnknownMode, "Jester"),
        (
            "default_mode = \"Educator\"",
            "default_mode = \"Debater\"",
            Code::DefaultMode,
            "\"Debater\"",
        ),
        (
            "default_mode = \"Educator\"",
            "default_mode = \"Mentor\"",
            Code::DefaultMode,
            "\"Mentor\"",
        ),
        (
            "Educator = true\nCritic = true",
            "Educator = false\nCritic = false",
            Code::NoEnabledMode,
            "[modes]",
        ),
        ("[traits.humor]", "[traits.Humor]", Code::Name, "Humor"),
        ("wit = 0.5", "Wit = 0.5", Code::Name, "Wit"),
        (
            "[config]\nhumor_usage = \"low\"\n",
            "[config]\n",
            Code::MissingKey,
            "[config]",
        ),
        ("neuroticism = 0.2\n", "", Code::MissingKey, "[traits.ocean]"),
        (
            "signature_phrases = [\"Test everything.\"]",
            "signature_phrases = [\"x\", \"x\"]",
            Code::Duplicate,
            "\"x\"]",
        ),
        (
            "name = \"Test Person\"",
            "name = \"Test Person\"\nslug = \"someone-else\"",
            Code::SlugMismatch,
            "\"someone-else\"",
        ),
        (
            "name = \"Test Person\"",
            "name = \"Test Person\"\nname = \"Again\"",
            Code::Syntax,
            "name = \"Again\"",
        ),
    ];
    for (from, to, code, needle) in cases {
        let text = edit(&base, from, to);
        assert_error_at(&text, "test-person", *code, needle);
    }
}

#[test]
fn a_missing_required_key_is_reported_at_the_top() {
    let text = edit(&persona(ID_A, "X"), "name = \"X\"\n", "");
    let diagnostics = check(&text, "x");
    assert!(
        diagnostics
            .iter()
            .any(|d| d.code == Code::MissingKey && d.message.contains("`name`"))
    );
}

#[test]
fn an_invalid_file_name_is_a_slug_error() {
    let diagnostics = check(&persona(ID_A, "X"), "Bad_Name");
    assert!(diagnostics.iter().any(|d| d.code == Code::Slug), "{diagnostics:?}");
}

#[test]
fn fictional_personas_may_omit_sources() {
    let text = edit(&persona(ID_A, "X"), "is_real = true", "is_real = false");
    let text = edit(&text, "source = \"isbn:0-201-83595-9\"\n", "");
    assert_eq!(check(&text, "x"), vec![]);
}

#[test]
fn every_error_in_a_file_is_reported_not_just_the_first() {
    let text = edit(&persona(ID_A, "X"), "openness = 0.9", "openness = 7");
    let text = edit(&text, "humor_usage = \"low\"", "humor_usage = \"lots\"");
    let text = edit(&text, "name = \"X\"", "nmae = \"X\"");
    let codes: Vec<Code> = check(&text, "x").iter().map(|d| d.code).collect();
    for code in [Code::Range, Code::Enum, Code::UnknownKey, Code::MissingKey] {
        assert!(codes.contains(&code), "{code} missing from {codes:?}");
    }
}

#[test]
fn oversized_and_deeply_nested_files_are_refused() {
    let huge = format!("{}\n# {}\n", persona(ID_A, "X"), "x".repeat(300 * 1024));
    assert!(check(&huge, "x").iter().any(|d| d.code == Code::TooLarge));
    let deep = format!("schema = {}1{}\n", "[".repeat(100), "]".repeat(100));
    assert!(check(&deep, "x").iter().any(|d| d.code == Code::TooDeep));
    let dotted = format!(
        "{} = 1\n",
        (0..20).map(|i| format!("k{i}")).collect::<Vec<_>>().join(".")
    );
    assert!(check(&dotted, "x").iter().any(|d| d.code == Code::TooDeep));
    assert!(check("\u{0}\u{ff}", "x").iter().all(|d| d.code != Code::TooDeep));
}

#[test]
fn non_utf8_is_reported_not_panicked_on() {
    let diagnostics = validate_persona("x.toml", &[b'a', b' ', b'=', b' ', 0xff, 0xfe], "x", &settings()).diagnostics;
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].code, Code::NotUtf8);
}

fn source(relative: &str, text: &str) -> SourceFile {
    SourceFile {
        display_path: format!("registry/{relative}"),
        relative_path: relative.to_string(),
        bytes: text.as_bytes().to_vec(),
    }
}

#[test]
fn ids_must_be_unique_across_the_registry() {
    let snapshot = Snapshot::build(
        vec![
            source("registry.toml", SETTINGS),
            source("personas/first.toml", &persona(ID_A, "First")),
            source("personas/second.toml", &persona(ID_A, "Second")),
            source("personas/third.toml", &persona(ID_B, "Third")),
        ],
        "registry/registry.toml",
    );
    let duplicates: Vec<&Diagnostic> = snapshot
        .all_diagnostics()
        .iter()
        .filter(|d| d.code == Code::DuplicateId)
        .cloned()
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .collect();
    let (line, column) = locate(&persona(ID_A, "First"), &format!("\"{ID_A}\""));
    assert_eq!(duplicates.len(), 2, "{duplicates:?}");
    for diagnostic in &duplicates {
        assert_eq!((diagnostic.line, diagnostic.column), (line, column));
    }
    let valid: Vec<&str> = snapshot.valid_personas().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(valid, vec!["Third"]);
}

#[test]
fn registry_settings_and_profiles_are_validated() {
    let bad_settings = "schema = 1\ntitle = \"T\"\nmodes = [\"Educator\", \"Educator\", \"9lives\"]\n[policy]\nprotected = [\"nobody\"]\nprotected_labels = [\"production\", \"Prod\"]\nstrict = true\n";
    let bad_profile = "schema = 1\nname = \"P\"\ndefault_mode = \"Jester\"\n[config]\nhumor_usage = \"loud\"\n";
    let snapshot = Snapshot::build(
        vec![
            source("registry.toml", bad_settings),
            source("personas/x.toml", &persona(ID_A, "X")),
            source("profiles/p.toml", bad_profile),
        ],
        "registry/registry.toml",
    );
    let found: Vec<(String, Code, usize, usize)> = snapshot
        .all_diagnostics()
        .into_iter()
        .map(|d| (d.file, d.code, d.line, d.column))
        .collect();
    let expect = |file: &str, text: &str, code: Code, needle: &str| {
        let (line, column) = locate(text, needle);
        assert!(
            found.contains(&(format!("registry/{file}"), code, line, column)),
            "{code} at {file}:{line}:{column} not in {found:?}"
        );
    };
    expect("registry.toml", bad_settings, Code::Duplicate, "\"Educator\", \"9");
    expect("registry.toml", bad_settings, Code::Name, "\"9lives\"");
    expect("registry.toml", bad_settings, Code::UnknownKey, "strict");
    expect("registry.toml", bad_settings, Code::Label, "\"Prod\"");
    expect("profiles/p.toml", bad_profile, Code::UnknownMode, "\"Jester\"");
    expect("profiles/p.toml", bad_profile, Code::Enum, "\"loud\"");
}

#[test]
fn protected_entries_must_name_a_persona() {
    let settings = edit(SETTINGS, "protected = []", "protected = [\"x\", \"ghost\"]");
    let snapshot = Snapshot::build(
        vec![
            source("registry.toml", &settings),
            source("personas/x.toml", &persona(ID_A, "X")),
        ],
        "registry/registry.toml",
    );
    let unknown: Vec<Diagnostic> = snapshot
        .all_diagnostics()
        .into_iter()
        .filter(|d| d.code == Code::UnknownPersona)
        .collect();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!((unknown[0].line, unknown[0].column), locate(&settings, "\"ghost\""));
}

#[test]
fn a_registry_without_settings_is_an_error() {
    let snapshot = Snapshot::build(
        vec![source("personas/x.toml", &persona(ID_A, "X"))],
        "registry/registry.toml",
    );
    assert!(
        snapshot
            .all_diagnostics()
            .iter()
            .any(|d| d.code == Code::MissingRegistry)
    );
}

#[test]
fn the_sample_registry_is_clean() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, stderr) = personas(&["check", "registry"], root);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let personas_written = std::fs::read_dir(root.join("registry/personas")).unwrap().count();
    assert!(personas_written >= 24, "only {personas_written} sample personas");
}

#[test]
fn check_cli_exit_codes_and_formats() {
    let registry = RegistryDir::new();
    registry.write("personas/good.toml", &persona(ID_A, "Good"));
    let (code, _, stderr) = personas(&["check", "."], registry.path());
    assert_eq!(code, 0, "{stderr}");

    let broken = edit(&persona(ID_B, "Bad"), "openness = 0.9", "openness = 1.4");
    registry.write("personas/bad.toml", &broken);
    registry.write("personas/worse.toml", "schema = 1\nname = [\n");
    let (code, stdout, _) = personas(&["check", "."], registry.path());
    assert_eq!(code, 1);
    let (line, column) = locate(&broken, "1.4");
    assert!(
        stdout.contains(&format!(
            "personas/bad.toml:{line}:{column}: range: traits.ocean.openness = 1.4 is outside 0.0..=1.0"
        )),
        "{stdout}"
    );
    assert!(stdout.contains("personas/worse.toml:2:"), "{stdout}");

    let (code, stdout, _) = personas(&["check", ".", "--format", "github"], registry.path());
    assert_eq!(code, 1);
    assert!(
        stdout.contains(&format!(
            "::error file=personas/bad.toml,line={line},col={column},title=range::"
        )),
        "{stdout}"
    );

    let (code, stdout, _) = personas(&["check", ".", "--format", "json"], registry.path());
    assert_eq!(code, 1);
    let records: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "range" && r["line"] == line)
    );

    // A single file is checked in its registry's context and reported alone.
    let (code, stdout, _) = personas(&["check", "personas/good.toml"], registry.path());
    assert_eq!((code, stdout.as_str()), (0, ""));

    let (code, _, stderr) = personas(&["check", "does-not-exist"], registry.path());
    assert_eq!(code, 2);
    assert!(stderr.contains("does not exist"), "{stderr}");
    let (code, _, _) = personas(&["check", "--format", "xml"], registry.path());
    assert_eq!(code, 2);
}

#[test]
fn new_scaffolds_a_file_that_passes_check() {
    let registry = RegistryDir::new();
    let (code, stdout, stderr) = personas(&["new", "Grace Hopper", "--registry", "."], registry.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.trim().ends_with("personas/grace-hopper.toml"), "{stdout}");
    let (code, out, err) = personas(&["check", "."], registry.path());
    assert_eq!(code, 0, "{out}{err}");
    // A second run must not overwrite the file.
    let (code, _, stderr) = personas(&["new", "Grace Hopper", "--registry", "."], registry.path());
    assert_eq!(code, 2, "{stderr}");
    // A real person's scaffold refuses to pass until sources are filled in.
    let (code, _, _) = personas(&["new", "Real One", "--real", "--registry", "."], registry.path());
    assert_eq!(code, 0);
    let (code, out, _) = personas(&["check", "."], registry.path());
    assert_eq!(code, 1);
    assert!(out.contains("source-required"), "{out}");
}

/// The settings with the quote rule on: a real person's phrase needs a source or a marking.
fn check_with_quote_rule(text: &str, stem: &str) -> Vec<Diagnostic> {
    let with_rule = SETTINGS.replace(
        "require_sources_for_real = true",
        "require_sources_for_real = true\nrequire_sources_for_real_quotes = true",
    );
    let (settings, diagnostics) = parse_settings("registry.toml", with_rule.as_bytes());
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    validate_persona(&format!("personas/{stem}.toml"), text.as_bytes(), stem, &settings).diagnostics
}

#[test]
fn quotes_of_real_people_need_a_source_or_a_marking() {
    let base = persona(ID_A, "X");
    // Without the rule, history written before it stays valid.
    assert_eq!(check(&base, "x"), vec![]);
    let diagnostics = check_with_quote_rule(&base, "x");
    let (line, column) = locate(&base, "\"Test everything.\"]");
    assert!(
        diagnostics
            .iter()
            .any(|d| d.code == Code::SourceRequired && (d.line, d.column) == (line, column)),
        "{diagnostics:?}"
    );
    for marked in [
        r#"{ text = "Test everything.", marking = "attributed" }"#,
        r#"{ text = "Test everything.", source = "https://example.org/quotes#testing" }"#,
        r#"{ text = "Test everything.", source = "isbn:0-306-40615-2", marking = "character" }"#,
    ] {
        let text = edit(&base, "\"Test everything.\"", marked);
        assert_eq!(check_with_quote_rule(&text, "x"), vec![], "{marked}");
        let persona = validate_persona("x.toml", text.as_bytes(), "x", &settings())
            .persona
            .unwrap();
        assert!(persona.phrase_citations.contains_key("Test everything."));
    }
    // A fictional character's phrases are not quotes of anyone.
    let fictional = edit(&base, "is_real = true", "is_real = false");
    assert_eq!(check_with_quote_rule(&fictional, "x"), vec![]);

    let cases: &[(&str, Code, &str)] = &[
        (
            r#"{ text = "Test everything.", marking = "verbatim" }"#,
            Code::Enum,
            "\"verbatim\"",
        ),
        (
            r#"{ text = "Test everything.", source = "junk:1" }"#,
            Code::Url,
            "\"junk:1\"",
        ),
        (r#"{ text = "Test everything.", cite = "x" }"#, Code::UnknownKey, "cite"),
        (r#"{ marking = "attributed" }"#, Code::MissingKey, "{ marking"),
        (
            r#""Test everything.", { text = "Test everything.", marking = "attributed" }"#,
            Code::Duplicate,
            "{ text",
        ),
    ];
    for (written, code, needle) in cases {
        let text = edit(&base, "\"Test everything.\"", written);
        assert_error_at(&text, "x", *code, needle);
    }
}

#[test]
fn beliefs_carry_markings_and_trait_types_their_sources() {
    let base = persona(ID_A, "X");
    let marked = edit(
        &base,
        "source = \"isbn:0-201-83595-9\"\n",
        "source = \"isbn:0-201-83595-9\"\nmarking = \"paraphrased\"\n",
    );
    let sourced = edit(
        &marked,
        "[[beliefs]]\ntext = \"Tests",
        "[trait_sources]\nocean = \"editorial-estimate\"\nhumor = \"doi:10.1000/182\"\n\n[[beliefs]]\ntext = \"Tests",
    );
    let parsed = validate_persona("x.toml", sourced.as_bytes(), "x", &settings());
    let persona = parsed.persona.unwrap_or_else(|| panic!("{:?}", parsed.diagnostics));
    assert_eq!(
        persona.beliefs[1].marking,
        Some(personas::persona::model::QuoteMarking::Paraphrased)
    );
    assert_eq!(
        persona.trait_sources["ocean"],
        personas::persona::model::TraitSource::EditorialEstimate
    );
    assert_eq!(
        persona.trait_sources["humor"],
        personas::persona::model::TraitSource::Cited("doi:10.1000/182".to_string())
    );
    // No markings and no trait sources: the canonical form (and so every
    // pinned content hash) is what it was before they existed.
    let plain = validate_persona("x.toml", base.as_bytes(), "x", &settings())
        .persona
        .unwrap();
    let canonical = personas::persona::canonical_json(&plain);
    assert!(
        !canonical.contains("marking")
            && !canonical.contains("trait_sources")
            && !canonical.contains("phrase_citations")
    );

    for (from, to, code, needle) in [
        (
            "marking = \"paraphrased\"",
            "marking = \"loosely\"",
            Code::Enum,
            "\"loosely\"",
        ),
        (
            "humor = \"doi:10.1000/182\"",
            "cognitive = \"doi:10.1000/182\"",
            Code::UnknownKey,
            "cognitive",
        ),
        (
            "ocean = \"editorial-estimate\"",
            "ocean = \"an estimate\"",
            Code::Url,
            "\"an estimate\"",
        ),
        (
            "ocean = \"editorial-estimate\"",
            "ocean = 0.5",
            Code::Type,
            "0.5\nhumor",
        ),
    ] {
        let text = edit(&sourced, from, to);
        assert_error_at(&text, "x", code, needle);
    }
}

#[test]
fn a_slug_that_would_shadow_a_route_is_refused() {
    // `/api/personas/search` is the search route: a persona called `search`
    // could never be read at `/api/personas/{slug}`.
    let text = persona(ID_A, "X");
    let diagnostics = check(&text, "search");
    let refusal = diagnostics
        .iter()
        .find(|d| d.code == Code::Slug)
        .unwrap_or_else(|| panic!("{diagnostics:?}"));
    assert!(refusal.message.contains("/api/personas/search"), "{}", refusal.message);
    assert!(refusal.message.contains("rename the file"), "{}", refusal.message);
    // A slug that only starts with the word is fine.
    assert_eq!(check(&text, "search-party"), vec![]);

    // And through the binary, as a contributor meets it: file:line:col and the code.
    let registry = RegistryDir::new();
    registry.write("personas/search.toml", &text);
    let (code, stdout, stderr) = personas(&["check", "."], registry.path());
    assert_ne!(code, 0, "{stdout}{stderr}");
    let report = format!("{stdout}{stderr}");
    assert!(report.contains("personas/search.toml:1:1"), "{report}");
    assert!(report.contains("slug"), "{report}");
}

//! `personas review BASE..HEAD` on real git repositories built here: a
//! clean change passes with its diff, prompt diffs and impact; a draft with
//! `personas new`'s placeholders and a broken file must not be merged, in
//! every output format.

mod common;

use common::*;
use serde_json::Value;

const PROMPT: &str = include_str!("../registry/prompt.jinja");
const ALICE: &str = "registry/personas/alice.toml";

const EXPERIMENT: &str = r#"schema = 1
status = "running"
salt = "alice-1"
persona = "alice"

[[variants]]
name = "control"
pin = "production"
weight = 50

[[variants]]
name = "treatment"
pin = 1
weight = 50
"#;

/// main: Alice (protected, labelled, in a running experiment) and Bob.
/// `feature`: Alice's description rewritten. `draft`: a persona fresh from
/// `personas new`, and a file that does not parse.
fn repository() -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "registry/registry.toml",
        &SETTINGS.replace("protected = []", "protected = [\"alice\"]"),
    );
    repo.write("registry/prompt.jinja", PROMPT);
    repo.write(ALICE, &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.write("registry/labels.toml", "[production]\nalice = 1\n");
    repo.write("registry/experiments/alice-test.toml", EXPERIMENT);
    repo.commit("alice and bob");
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write(
        ALICE,
        &edit(
            &persona(ID_A, "Alice"),
            "description = \"A test persona.\"",
            "description = \"A physicist who explains by experiment.\"",
        ),
    );
    repo.commit("alice: a real description");
    repo.git(&["checkout", "-q", "-b", "draft"]);
    let (code, _, errors) = personas(&["new", "Carol Draft", "--registry", "registry"], repo.path());
    assert_eq!(code, 0, "{errors}");
    repo.write("registry/personas/broken.toml", "schema = 1\nname = \n");
    // Bob again under another id and a near-identical name.
    repo.write(
        "registry/personas/bobb.toml",
        &persona("33333333-3333-4333-8333-333333333333", "Bobb"),
    );
    // The citation check of the draft: Bob's Wikipedia source answered 404.
    repo.write(
        "registry/citations.json",
        r#"{"schema": 1, "checks": [{"file": "registry/personas/bobb.toml",
            "belief": "Tests should fail when the code is wrong.",
            "url": "https://en.wikipedia.org/wiki/Software_testing",
            "final_url": "https://en.wikipedia.org/wiki/Software_testing", "status": 404,
            "content_type": "text/html", "checked_at": "2026-12-01T00:00:00Z", "digest": null,
            "outcome": "dead", "found": null}]}"#,
    );
    repo.commit("carol, not finished");
    repo
}

fn run_review(repo: &TestRepo, range: &str, format: &str) -> (i32, String) {
    let (code, out, errors) = personas(&["review", range, "--format", format], repo.path());
    assert!(code == 0 || code == 1, "review failed to run: {errors}");
    (code, out)
}

fn persona_entry<'a>(review: &'a Value, slug: &str) -> &'a Value {
    review["personas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|persona| persona["slug"] == slug)
        .unwrap_or_else(|| panic!("{slug} is not in the review: {review}"))
}

fn notes_of(persona: &Value) -> Vec<(String, String)> {
    persona["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|note| {
            (
                note["kind"].as_str().unwrap().to_string(),
                note["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_clean_change_is_reviewed_with_its_diff_prompts_and_impact() {
    let repo = repository();
    let (code, out) = run_review(&repo, "main..feature", "json");
    assert_eq!(code, 0, "{out}");
    let review: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(review["mergeable"], true);
    assert_eq!(review["problems"].as_array().unwrap().len(), 0);
    assert_eq!(review["personas"].as_array().unwrap().len(), 1, "only Alice changed");
    let alice = persona_entry(&review, "alice");
    assert_eq!(alice["kind"], "modified");
    assert_eq!(alice["next_version"], 2);
    assert_eq!(alice["file"], ALICE);
    let notes = notes_of(alice);
    assert!(
        notes
            .iter()
            .any(|(kind, message)| kind == "protected" && message.contains("maintainer")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|(kind, message)| kind == "impact" && message.contains("label production serves version 1")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|(kind, message)| kind == "impact" && message.contains("experiment alice-test")),
        "{notes:?}"
    );
    assert!(notes.iter().all(|(kind, _)| kind != "placeholder"), "{notes:?}");
    // Its beliefs and sources did not change: their citations are not asked about again.
    assert!(notes.iter().all(|(kind, _)| kind != "citation"), "{notes:?}");
    // Both enabled modes are diffed, and the diff shows the new description.
    let prompts = alice["prompts"].as_array().unwrap();
    let modes: Vec<&str> = prompts.iter().map(|prompt| prompt["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["Critic", "Educator"]);
    for prompt in prompts {
        let diff = prompt["diff"].as_str().unwrap();
        assert!(diff.contains("-A test persona."), "{diff}");
        assert!(diff.contains("+A physicist who explains by experiment."), "{diff}");
    }

    let (code, markdown) = run_review(&repo, "main..feature", "markdown");
    assert_eq!(code, 0);
    assert!(markdown.contains("ready for review"), "{markdown}");
    assert!(
        markdown.contains("### Alice (`alice`): modified, becomes v2"),
        "{markdown}"
    );
    assert!(markdown.contains("```diff"), "{markdown}");
}

#[test]
fn placeholders_and_broken_files_stop_the_merge_in_every_format() {
    let repo = repository();
    let (code, out) = run_review(&repo, "main..draft", "json");
    assert_eq!(code, 1, "{out}");
    let review: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(review["mergeable"], false);
    let problems = review["problems"].as_array().unwrap();
    let broken = problems
        .iter()
        .find(|problem| problem["file"] == "registry/personas/broken.toml")
        .unwrap_or_else(|| panic!("the broken file is not reported: {problems:?}"));
    assert_eq!((broken["line"].as_u64(), broken["column"].as_u64()), (Some(2), Some(8)));
    let carol = persona_entry(&review, "carol-draft");
    assert_eq!(carol["kind"], "added");
    assert_eq!(carol["next_version"], 1);
    let notes = carol["notes"].as_array().unwrap();
    let blocking: Vec<&str> = notes
        .iter()
        .filter(|note| note["severity"] == "block")
        .map(|note| note["message"].as_str().unwrap())
        .collect();
    assert!(
        blocking.iter().any(|message| message.contains("description")),
        "{blocking:?}"
    );
    assert!(
        blocking.iter().any(|message| message.contains("belief")),
        "{blocking:?}"
    );
    let warned: Vec<&str> = notes
        .iter()
        .filter(|note| note["severity"] == "warn")
        .map(|note| note["message"].as_str().unwrap())
        .collect();
    assert!(warned.iter().any(|message| message.contains("`general`")), "{warned:?}");
    assert!(warned.iter().any(|message| message.contains("0.5")), "{warned:?}");

    let bobb = persona_entry(&review, "bobb");
    let duplicates: Vec<(String, String)> = notes_of(bobb)
        .into_iter()
        .filter(|(kind, _)| kind == "duplicate")
        .collect();
    assert!(
        duplicates
            .iter()
            .any(|(_, message)| message.contains("existing bob by name")),
        "{duplicates:?}"
    );
    assert!(
        duplicates
            .iter()
            .any(|(_, message)| message.contains("existing bob by meaning")),
        "{duplicates:?}"
    );
    assert!(
        review["duplicates_by_meaning"]
            .as_str()
            .unwrap()
            .starts_with("compared with"),
        "{}",
        review["duplicates_by_meaning"]
    );
    assert!(notes_of(carol).iter().all(|(kind, _)| kind != "duplicate"));
    // A new belief's URL source that the recorded check found dead.
    let citations: Vec<String> = notes_of(bobb)
        .into_iter()
        .filter(|(kind, _)| kind == "citation")
        .map(|(_, message)| message)
        .collect();
    assert_eq!(citations.len(), 1, "{citations:?}");
    assert!(
        citations[0].contains("could not confirm") && citations[0].contains("answered 404"),
        "{citations:?}"
    );

    let (code, github) = run_review(&repo, "main..draft", "github");
    assert_eq!(code, 1);
    assert!(
        github.contains("::error file=registry/personas/broken.toml,line=2,col=8,"),
        "{github}"
    );
    assert!(
        github.contains("::error file=registry/personas/carol-draft.toml,line=1,col=1,title=placeholder::"),
        "{github}"
    );
    let (code, markdown) = run_review(&repo, "main..draft", "markdown");
    assert_eq!(code, 1);
    assert!(markdown.contains("must not be merged"), "{markdown}");
    assert!(markdown.contains("`registry/personas/broken.toml:2:8`"), "{markdown}");
}

#[test]
fn new_sources_unchecked_and_quotes_unmarked_are_noted() {
    let repo = repository();
    repo.git(&["checkout", "-q", "-b", "resourced", "feature"]);
    let alice = std::fs::read_to_string(repo.path().join(ALICE)).unwrap();
    // A belief re-sourced to a page `cite check` never read, one phrase
    // marked, and one left to read as a verbatim quote.
    let alice = edit(
        &alice,
        "source = \"https://en.wikipedia.org/wiki/Software_testing\"",
        "source = \"https://example.org/alice/testing\"",
    );
    let alice = edit(
        &alice,
        "signature_phrases = [\"Test everything.\"]",
        "signature_phrases = [\"Test everything.\", { text = \"Measure twice.\", marking = \"attributed\" }]",
    );
    repo.write(ALICE, &alice);
    repo.commit("alice: a new source and a new phrase");
    let (code, out) = run_review(&repo, "feature..resourced", "json");
    let review: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "warnings alone do not stop the merge: {out}");
    let notes = notes_of(persona_entry(&review, "alice"));
    let citation: Vec<&String> = notes
        .iter()
        .filter(|(kind, _)| kind == "citation")
        .map(|(_, message)| message)
        .collect();
    assert_eq!(citation.len(), 1, "{notes:?}");
    assert!(
        citation[0].contains("https://example.org/alice/testing") && citation[0].contains("has not been checked"),
        "{citation:?}"
    );
    let unsourced: Vec<&String> = notes
        .iter()
        .filter(|(kind, _)| kind == "unsourced")
        .map(|(_, message)| message)
        .collect();
    assert_eq!(unsourced.len(), 1, "only the unmarked phrase: {notes:?}");
    assert!(unsourced[0].contains("\"Test everything.\""), "{unsourced:?}");
    // The marking itself is part of the field-level diff.
    let changes = persona_entry(&review, "alice")["changes"].to_string();
    assert!(changes.contains("Measure twice."), "{changes}");
}

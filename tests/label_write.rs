//! Moving labels through the API: `PUT` and `DELETE
//! /api/personas/{ref}/labels/{label}` against the real `personas serve` on
//! a git repository built here. Every refusal must leave the repository
//! exactly as it was; every move must be one commit of `registry/labels.toml`
//! that keeps the file's comments, with the token's identity as author, and
//! show up in the label's answers and its history.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::server::*;
use common::*;
use serde_json::{Value, json};

const LABELS: &str = "registry/labels.toml";
const LABELS_TEXT: &str = "# Who serves what.\n[production]\nalice = 1\nbob = 1\n\n[candidate]\n# Alice's rewrite, under test.\nalice = 1 # first try\n";

/// Alice in two versions, Bob (a protected persona) in one, a protected
/// `production` label, and a tag `v1` a label may not shadow.
fn registry() -> TestRepo {
    let repo = TestRepo::new();
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.write(".gitignore", ".personas/\n");
    repo.write(
        "registry/registry.toml",
        &SETTINGS.replace(
            "protected = []",
            "protected = [\"bob\"]\nprotected_labels = [\"production\"]",
        ),
    );
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("alice and bob");
    repo.git(&["tag", "v1"]);
    let alice = persona(ID_A, "Alice");
    repo.write(
        "registry/personas/alice.toml",
        &edit(&alice, "openness = 0.9", "openness = 0.95"),
    );
    repo.commit("alice v2");
    repo.write(LABELS, LABELS_TEXT);
    repo.commit("labels");
    repo
}

fn repository_state(repo: &TestRepo) -> String {
    format!(
        "{}\n{}\n{}",
        repo.git(&["for-each-ref", "--format=%(refname) %(objectname)"]),
        repo.git(&["status", "--porcelain", "--untracked-files=all"]),
        std::fs::read_to_string(repo.path().join(LABELS)).unwrap()
    )
}

/// A label write with the given token and guard headers.
fn label_write(
    server: &str,
    method: &str,
    target: &str,
    token: Option<&str>,
    guard: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    headers.extend_from_slice(guard);
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request(method, &format!("{server}/api/personas/{target}"), &headers, &body)
}

fn get(server: &Server, path: &str) -> Reply {
    request("GET", &server.url(path), &[], b"")
}

fn assert_refused(repo: &TestRepo, before: &str, reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], code, "{}", reply.body);
    assert_eq!(
        repository_state(repo),
        before,
        "a refused label write ({status} {code}) changed the repository"
    );
}

#[test]
fn label_moves_are_commits_and_every_refusal_leaves_the_repository_alone() {
    let repo = registry();
    let server = Server::start_with(repo.path(), &[("PERSONAS_TOKENS", &token_list())]);
    wait_for("the first sync", Duration::from_secs(90), || {
        get(&server, "/api/personas/alice@candidate").status == 200
    });
    let candidate = get(&server, "/api/personas/alice@candidate");
    assert_eq!(candidate.json()["version"], 1);
    let tag = candidate.header("etag").unwrap().to_string();
    let v1 = get(&server, "/api/personas/alice@1").json()["content_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let v2 = get(&server, "/api/personas/alice@2").json()["content_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let to_two = json!({"version": 2, "reason": "the rewrite read better in review"});
    let guarded = [("If-Match", tag.as_str())];
    let before = repository_state(&repo);

    // Who may move a label.
    let reply = label_write(&server.base, "PUT", "alice/labels/candidate", None, &guarded, &to_two);
    assert_refused(&repo, &before, &reply, 401, "unauthorized");
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(READER),
        &guarded,
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 403, "forbidden");
    let production = get(&server, "/api/personas/alice@production");
    let production_tag = production.header("etag").unwrap().to_string();
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/production",
        Some(EDITOR),
        &[("If-Match", &production_tag)],
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 403, "protected");
    assert!(reply.body.contains("protected_labels"), "{}", reply.body);
    let reply = label_write(
        &server.base,
        "PUT",
        "bob/labels/candidate",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &json!({"version": 1}),
    );
    assert_refused(&repo, &before, &reply, 403, "protected");

    // What the request must look like.
    let reply = request(
        "PUT",
        &server.url("/api/personas/alice/labels/candidate"),
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", &format!("Bearer {EDITOR}")),
            ("If-Match", &tag),
        ],
        b"version=2",
    );
    assert_refused(&repo, &before, &reply, 415, "unsupported_media_type");
    let reply = request(
        "PUT",
        &server.url("/api/personas/alice/labels/candidate"),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {EDITOR}")),
            ("If-Match", &tag),
        ],
        b"{\"version\": 2",
    );
    assert_refused(&repo, &before, &reply, 400, "bad_json");
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &[],
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 428, "precondition_required");
    let both = [("If-Match", tag.as_str()), ("If-None-Match", "*")];
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &both,
        &to_two,
    );
    // RFC 9110: both preconditions are evaluated, and they cannot both hold.
    assert_refused(&repo, &before, &reply, 412, "stale");
    let weak = format!("W/{tag}");
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &[("If-Match", &weak)],
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 400, "bad_if_match");
    for bad_label in ["Candidate", "42", "cafe", "with_underscore"] {
        let reply = label_write(
            &server.base,
            "PUT",
            &format!("alice/labels/{bad_label}"),
            Some(EDITOR),
            &guarded,
            &to_two,
        );
        assert_refused(&repo, &before, &reply, 400, "bad_label");
    }
    let reply = label_write(
        &server.base,
        "PUT",
        "alice@2/labels/candidate",
        Some(EDITOR),
        &guarded,
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 400, "bad_pin");
    let reply = label_write(
        &server.base,
        "PUT",
        "nobody/labels/candidate",
        Some(EDITOR),
        &guarded,
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 404, "not_found");

    // What the body must say.
    for (body, field) in [
        (json!({"version": 9}), "version"),
        (
            json!({"content_hash": format!("sha256:{}", "0".repeat(64))}),
            "content_hash",
        ),
        (json!({"content_hash": "sha256:short"}), "content_hash"),
        (json!({"version": 2, "content_hash": v2}), ""),
        (json!({}), ""),
        (json!({"version": 2, "colour": "red"}), ""),
        (json!({"version": 2, "reason": "x".repeat(501)}), "reason"),
    ] {
        let reply = label_write(
            &server.base,
            "PUT",
            "alice/labels/candidate",
            Some(EDITOR),
            &guarded,
            &body,
        );
        assert_refused(&repo, &before, &reply, 422, "invalid");
        assert_eq!(
            reply.json()["error"]["details"]["problems"][0]["path"],
            field,
            "{body}: {}",
            reply.body
        );
    }
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/v1",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &json!({"version": 1}),
    );
    assert_refused(&repo, &before, &reply, 422, "invalid");
    assert!(reply.body.contains("git tag"), "{}", reply.body);

    // Preconditions: the label must be where the client read it.
    let stale = format!("\"sha256:{}\"", "0".repeat(64));
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &[("If-Match", &stale)],
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 412, "stale");
    assert_eq!(reply.json()["error"]["details"]["current"], v1.as_str());
    assert_eq!(reply.header("etag"), Some(format!("\"{v1}\"").as_str()));
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 412, "stale");
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/staging",
        Some(EDITOR),
        &[("If-Match", "@1")],
        &to_two,
    );
    assert_refused(&repo, &before, &reply, 412, "stale");
    assert!(reply.body.contains("If-None-Match"), "{}", reply.body);

    // A move that lands: one commit of the labels file, by the token's identity.
    let head_before = repo.git(&["rev-parse", "main"]);
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &guarded,
        &to_two,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let pointer = reply.json();
    assert_eq!(pointer["label"], "candidate");
    assert_eq!(pointer["slug"], "alice");
    assert_eq!(pointer["version"], 2);
    assert_eq!(pointer["content_hash"], v2.as_str());
    let commit = pointer["commit"].as_str().unwrap().to_string();
    assert_eq!(repo.git(&["rev-parse", "main"]), commit);
    assert_eq!(repo.git(&["rev-parse", &format!("{commit}^")]), head_before);
    assert_eq!(
        repo.git(&["log", "-1", "--format=%an <%ae>", &commit]),
        "Ada Editor <ada@example.org>"
    );
    let message = repo.git(&["log", "-1", "--format=%B", &commit]);
    assert!(
        message.starts_with("Move label candidate of Alice: version 1 to 2"),
        "{message}"
    );
    assert!(message.contains("the rewrite read better in review"), "{message}");
    assert!(
        message.contains("PUT /api/personas/alice/labels/candidate"),
        "{message}"
    );
    assert_eq!(repo.git(&["diff", "--name-only", &head_before, &commit]), LABELS);
    let text = std::fs::read_to_string(repo.path().join(LABELS)).unwrap();
    assert_eq!(
        text,
        LABELS_TEXT.replace("alice = 1 # first try", "alice = 2 # first try"),
        "the move changes one value and keeps the comments"
    );
    assert_eq!(repo.git(&["status", "--porcelain"]), "", "the checkout lags the branch");
    let (code, out, errors) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 0, "the committed labels file fails personas check: {out}{errors}");

    // Readers see the move at once: the pin, its ETag, the history with the author.
    let moved = get(&server, "/api/personas/alice@candidate");
    assert_eq!(moved.json()["version"], 2);
    assert_ne!(
        moved.header("etag").unwrap(),
        tag,
        "the ETag did not change with the label"
    );
    let history = get(&server, "/api/labels/candidate/history").json();
    let last = history["moves"]
        .as_array()
        .expect("the history lists moves")
        .iter()
        .find(|entry| entry["commit"] == commit.as_str())
        .unwrap_or_else(|| panic!("the move is not in the history: {history}"))
        .clone();
    assert_eq!(
        (last["from_version"].clone(), last["to_version"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(last["author_name"], "Ada Editor");

    // The old guard is stale now; the same move with the new one changes nothing.
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &guarded,
        &to_two,
    );
    assert_eq!(reply.status, 412, "{}", reply.body);
    assert_eq!(reply.json()["error"]["details"]["current"], v2.as_str());
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &[("If-Match", "@2")],
        &to_two,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(repo.git(&["rev-parse", "main"]), commit, "an unchanged move committed");

    // A new label by content hash, then its removal.
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/staging",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &json!({"content_hash": v1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["version"], 1);
    let text = std::fs::read_to_string(repo.path().join(LABELS)).unwrap();
    assert!(text.ends_with(&format!("\n\n[staging]\nalice = \"{v1}\"\n")), "{text}");
    assert_eq!(get(&server, "/api/personas/alice@staging").json()["version"], 1);
    let reply = label_write(
        &server.base,
        "DELETE",
        "alice/labels/staging",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &Value::Null,
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = label_write(
        &server.base,
        "DELETE",
        "alice/labels/staging",
        Some(EDITOR),
        &[("If-Match", "@1")],
        &Value::Null,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["status"], "removed");
    let message = repo.git(&["log", "-1", "--format=%s"]);
    assert_eq!(message, "Remove Alice from label staging (was version 1)");
    let text = std::fs::read_to_string(repo.path().join(LABELS)).unwrap();
    assert!(text.ends_with("\n\n[staging]\n"), "{text}");
    assert_ne!(get(&server, "/api/personas/alice@staging").status, 200);

    // A maintainer moves the protected label.
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/production",
        Some(MAINTAINER),
        &[("If-Match", &production_tag)],
        &json!({"version": 2}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(get(&server, "/api/personas/alice@production").json()["version"], 2);
    assert_eq!(repo.git(&["log", "-1", "--format=%an", "main"]), "Max Maintainer");
    let merges = repo.git(&["rev-list", "--merges", "--count", "main"]);
    assert_eq!(merges, "0", "history stays linear");
}

#[test]
fn branch_mode_proposes_label_moves_on_a_review_branch() {
    let repo = registry();
    let server = Server::start_with(
        repo.path(),
        &[("PERSONAS_TOKENS", &token_list()), ("PERSONAS_WRITE_MODE", "branch")],
    );
    wait_for("the first sync", Duration::from_secs(90), || {
        get(&server, "/api/personas/alice@candidate").status == 200
    });
    let main = repo.git(&["rev-parse", "main"]);
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/candidate",
        Some(EDITOR),
        &[("If-Match", "@1")],
        &json!({"version": 2}),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["status"], "proposed");
    let v2 = get(&server, "/api/personas/alice@2").json()["content_hash"].clone();
    assert_eq!(answer["content_hash"], v2);
    let commit = answer["commit"].as_str().unwrap();
    let branch = answer["branch"].as_str().unwrap();
    assert_eq!(branch, format!("labels/candidate-alice-{}", &commit[..7]));
    assert_eq!(repo.git(&["rev-parse", "main"]), main, "branch mode moved main");
    assert_eq!(repo.git(&["rev-parse", &format!("{commit}^")]), main);
    let proposed = repo.git(&["show", &format!("{branch}:{LABELS}")]);
    assert!(proposed.contains("alice = 2 # first try"), "{proposed}");
    assert_eq!(
        get(&server, "/api/personas/alice@candidate").json()["version"],
        1,
        "a proposal moved the label"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "branch mode touched the checkout"
    );
}

#[test]
fn the_first_label_creates_the_labels_file_and_the_checkout_follows() {
    let repo = TestRepo::new();
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.write(".gitignore", ".personas/\n");
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.commit("alice");
    let server = Server::start_with(repo.path(), &[("PERSONAS_TOKENS", &token_list())]);
    wait_for("the first sync", Duration::from_secs(90), || {
        get(&server, "/api/personas/alice").status == 200
    });
    // A guard naming a version is refused: there is no label to match.
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/production",
        Some(EDITOR),
        &[("If-Match", "@1")],
        &json!({"version": 1}),
    );
    assert_eq!(reply.status, 412, "{}", reply.body);
    assert!(!repo.path().join(LABELS).exists());
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/production",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &json!({"version": 1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["version"], 1);
    assert_eq!(
        repo.git(&["show", &format!("main:{LABELS}")]),
        "[production]\nalice = 1",
        "the new file as committed"
    );
    assert_eq!(
        std::fs::read_to_string(repo.path().join(LABELS)).unwrap(),
        "[production]\nalice = 1\n"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain", "--untracked-files=all"]),
        "",
        "the checkout does not show the new file as committed"
    );
    assert_eq!(get(&server, "/api/personas/alice@production").json()["version"], 1);
}

/// Writers racing on one label, and entries written in the forms the sync
/// accepts: by id, in another letter case, and one naming no version.
#[test]
fn racing_moves_land_once_and_entries_are_matched_as_the_sync_reads_them() {
    let repo = registry();
    let unknown = format!("sha256:{}", "0".repeat(64));
    let text = format!("{LABELS_TEXT}\n[staging]\n\"{ID_A}\" = 1\n\n[canary]\nAlice = \"{unknown}\"\n");
    repo.write(LABELS, &text);
    repo.commit("more labels");
    let server = Server::start_with(repo.path(), &[("PERSONAS_TOKENS", &token_list())]);
    wait_for("the first sync", Duration::from_secs(90), || {
        get(&server, "/api/personas/alice@staging").status == 200
    });
    assert_eq!(
        get(&server, "/api/personas/alice@canary").status,
        404,
        "a broken entry pins nothing"
    );

    // Eight writers move the same label from the same version: one lands.
    let head = repo.git(&["rev-parse", "main"]);
    let base = server.base.as_str();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    label_write(
                        base,
                        "PUT",
                        "alice/labels/candidate",
                        Some(EDITOR),
                        &[("If-Match", "@1")],
                        &json!({"version": 2}),
                    )
                    .status
                })
            })
            .collect();
        writers.into_iter().map(|writer| writer.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|status| **status == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|status| **status == 412).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(repo.git(&["rev-list", "--count", &format!("{head}..main")]), "1");

    // An entry keyed by id keeps its key.
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/staging",
        Some(EDITOR),
        &[("If-Match", "@1")],
        &json!({"version": 2}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let written = std::fs::read_to_string(repo.path().join(LABELS)).unwrap();
    assert!(written.contains(&format!("\n\"{ID_A}\" = 2\n")), "{written}");

    // An entry naming no version is replaced in place, under its own key.
    let reply = label_write(
        &server.base,
        "PUT",
        "alice/labels/canary",
        Some(EDITOR),
        &[("If-None-Match", "*")],
        &json!({"version": 1}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let written = std::fs::read_to_string(repo.path().join(LABELS)).unwrap();
    assert!(written.ends_with("[canary]\nAlice = 1\n"), "{written}");
    assert!(!written.contains(&unknown), "{written}");
    assert_eq!(get(&server, "/api/personas/alice@canary").json()["version"], 1);

    // A removal needs a guard too.
    let before = repository_state(&repo);
    let reply = label_write(
        &server.base,
        "DELETE",
        "alice/labels/canary",
        Some(EDITOR),
        &[],
        &Value::Null,
    );
    assert_refused(&repo, &before, &reply, 428, "precondition_required");
}

//! The write path end to end: `PATCH /api/personas/{id}/settings` against
//! the real `personas serve` on a git repository built here, with its managed
//! PostgreSQL and in-process sync. Every refusal must leave the repository
//! exactly as it was; every success must be one commit, linear, with the
//! token's identity as author, and show up in the API and the history page.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::server::*;
use common::*;
use personas::access::{Identity, TokenHash};
use personas::config::WriteMode;
use personas::git::write::{FileChange, RegistryWriter, WriteOutcome};
use serde_json::{Value, json};

const ALICE: &str = "registry/personas/alice.toml";
const COMMENT: &str = "# Alice keeps her humor dry; see the interview notes.";

/// Alice (editable, with a comment to keep) and Bob (protected by policy).
fn registry() -> TestRepo {
    let repo = TestRepo::new();
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo.write(
        "registry/registry.toml",
        &SETTINGS.replace("protected = []", "protected = [\"bob\"]"),
    );
    let alice = persona(ID_A, "Alice").replace("[config]\n", &format!("{COMMENT}\n[config]\n"));
    repo.write(ALICE, &alice);
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("add alice and bob");
    // The server's data directory lives in the checkout; it is not part of the registry.
    std::fs::write(repo.path().join(".git/info/exclude"), ".personas/\n").unwrap();
    repo
}

/// Everything a refused request must leave alone: refs, index, working tree.
fn repository_state(repo: &TestRepo) -> String {
    format!(
        "{}\n{}\n{}",
        repo.git(&["for-each-ref", "--format=%(refname) %(objectname)"]),
        repo.git(&["status", "--porcelain", "--untracked-files=all"]),
        std::fs::read_to_string(repo.path().join(ALICE)).unwrap()
    )
}

fn patch(server: &str, persona: &str, token: Option<&str>, if_match: Option<&str>, body: &Value) -> Reply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("Content-Type", "application/merge-patch+json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    if let Some(if_match) = if_match {
        headers.push(("If-Match", if_match));
    }
    request(
        "PATCH",
        &format!("{server}/api/personas/{persona}/settings"),
        &headers,
        body.to_string().as_bytes(),
    )
}

fn etag_of(server: &str, persona: &str, token: Option<&str>) -> String {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|value| ("Authorization", value.as_str())).collect();
    let reply = request("GET", &format!("{server}/api/personas/{persona}"), &headers, b"");
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.header("etag").expect("persona answers carry an ETag").to_string()
}

fn synced(server: &Server) {
    wait_for("the first sync", Duration::from_secs(60), || {
        http_get(&server.url("/api/personas/alice")).0 == 200
    });
}

fn assert_refused(repo: &TestRepo, before: &str, reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], code, "{}", reply.body);
    assert_eq!(
        repository_state(repo),
        before,
        "a refused PATCH ({status} {code}) changed the repository"
    );
}

#[test]
fn settings_changes_are_commits_and_every_refusal_leaves_the_repository_alone() {
    let repo = registry();
    let server = Server::start_with(repo.path(), &[("PERSONAS_TOKENS", &token_list())]);
    synced(&server);
    let tag = etag_of(&server.base, "alice", None);
    let change = json!({"config": {"humor_usage": "high"}});
    let before = repository_state(&repo);

    // Who may write.
    let reply = patch(&server.base, "alice", None, Some(&tag), &change);
    assert_refused(&repo, &before, &reply, 401, "unauthorized");
    assert_eq!(reply.header("www-authenticate"), Some("Bearer realm=\"personas\""));
    let reply = patch(&server.base, "alice", Some("prs_not_a_real_token"), Some(&tag), &change);
    assert_refused(&repo, &before, &reply, 401, "unauthorized");
    let reply = patch(&server.base, "alice", Some(READER), Some(&tag), &change);
    assert_refused(&repo, &before, &reply, 403, "forbidden");
    let bob = etag_of(&server.base, "bob", None);
    let reply = patch(&server.base, "bob", Some(EDITOR), Some(&bob), &change);
    assert_refused(&repo, &before, &reply, 403, "protected");

    // What the request must look like.
    let reply = request(
        "PATCH",
        &server.url("/api/personas/alice/settings"),
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", &format!("Bearer {EDITOR}")),
            ("If-Match", &tag),
        ],
        change.to_string().as_bytes(),
    );
    assert_refused(&repo, &before, &reply, 415, "unsupported_media_type");
    let oversized = json!({"config": {"language_style": "x".repeat(100_000)}});
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&tag), &oversized);
    assert_refused(&repo, &before, &reply, 413, "too_large");
    let reply = patch(&server.base, "alice", Some(EDITOR), None, &change);
    assert_refused(&repo, &before, &reply, 428, "precondition_required");
    let reply = patch(&server.base, "alice", Some(EDITOR), Some("*"), &change);
    assert_refused(&repo, &before, &reply, 400, "bad_if_match");

    // Stale: the answer names the current hash.
    let stale = format!("\"sha256:{}\"", "0".repeat(64));
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&stale), &change);
    assert_refused(&repo, &before, &reply, 412, "stale");
    let current = reply.json()["error"]["details"]["current"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tag.contains(&current), "412 names {current}, the ETag was {tag}");
    assert_eq!(reply.header("etag"), Some(format!("\"{current}\"").as_str()));

    // Invalid values: every problem with its field path.
    let invalid = json!({
        "config": {"humor_usage": "loud", "default_mode": "Debater"},
        "traits": {"ocean": {"openness": 1.7}},
        "name": "Mallory"
    });
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&tag), &invalid);
    assert_refused(&repo, &before, &reply, 422, "invalid");
    let paths: Vec<String> = reply.json()["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["name"], "fields outside the settings are refused first");
    let invalid =
        json!({"config": {"humor_usage": "loud", "default_mode": "Debater"}, "traits": {"ocean": {"openness": 1.7}}});
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&tag), &invalid);
    assert_refused(&repo, &before, &reply, 422, "invalid");
    let problems = reply.json()["error"]["details"]["problems"].clone();
    for path in ["config.humor_usage", "config.default_mode", "traits.ocean.openness"] {
        assert!(
            problems
                .as_array()
                .unwrap()
                .iter()
                .any(|problem| problem["path"] == path),
            "{path} missing from {problems}"
        );
    }

    // A change that lands: the new version, committed as the token's identity.
    let head_before = repo.git(&["rev-parse", "main"]);
    let reply = patch(
        &server.base,
        "alice",
        Some(EDITOR),
        Some(&tag),
        &json!({"config": {"humor_usage": "high", "voice_enabled": true}, "modes": {"Debater": true}, "traits": {"ocean": {"openness": 0.8}}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["author"], "Ada Editor");
    assert_eq!(answer["persona"]["config"]["humor_usage"], "high");
    assert_eq!(answer["persona"]["modes"]["Debater"], true);
    let commit = answer["commit"].as_str().unwrap().to_string();
    assert_eq!(repo.git(&["rev-parse", "main"]), commit);
    assert_eq!(repo.git(&["rev-parse", &format!("{commit}^")]), head_before);
    assert_eq!(
        repo.git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>", &commit]),
        "Ada Editor <ada@example.org>|Persona Registry <registry@personas.invalid>"
    );
    let message = repo.git(&["log", "-1", "--format=%B", &commit]);
    assert!(message.starts_with("Update settings of Alice:"), "{message}");
    assert!(message.contains("traits.ocean.openness: 0.90 → 0.80"), "{message}");
    // Only alice.toml changed, its comment kept, and the checkout follows the branch.
    assert_eq!(
        repo.git(&["diff", "--name-only", &head_before, &commit]),
        ALICE,
        "the commit touches only the persona's file"
    );
    let text = std::fs::read_to_string(repo.path().join(ALICE)).unwrap();
    assert!(text.contains(COMMENT), "{text}");
    assert!(text.contains("humor_usage = \"high\""), "{text}");
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "the checked-out copy lags the branch"
    );
    let (code, out, errors) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 0, "the committed file fails personas check: {out}{errors}");
    let (status, history) = http_get(&server.url("/p/alice/history"));
    assert_eq!(status, 200);
    assert!(
        history.contains("Ada Editor"),
        "the history page does not name the author"
    );

    // A maintainer may change a protected persona; a version pin works as If-Match.
    let reply = patch(
        &server.base,
        "bob",
        Some(MAINTAINER),
        Some("@1"),
        &json!({"modes": {"Debater": true}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["author"], "Max Maintainer");

    // The same patch again changes nothing and commits nothing.
    let tip = repo.git(&["rev-parse", "main"]);
    let again = etag_of(&server.base, "bob", None);
    let reply = patch(
        &server.base,
        "bob",
        Some(MAINTAINER),
        Some(&again),
        &json!({"modes": {"Debater": true}}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(repo.git(&["rev-parse", "main"]), tip, "a no-op PATCH made a commit");

    race_on_one_version(&repo, &server.base);
    race_with_retries(&repo, &server.base);

    // Uncommitted edits in the server's checkout: committing under them would
    // leave the checkout reverting the commit, so the write is refused.
    let tag = etag_of(&server.base, "alice", None);
    let dirty = format!(
        "{}# an edit in progress\n",
        std::fs::read_to_string(repo.path().join(ALICE)).unwrap()
    );
    std::fs::write(repo.path().join(ALICE), &dirty).unwrap();
    let before = repository_state(&repo);
    let medium = json!({"config": {"humor_usage": "medium"}});
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&tag), &medium);
    assert_refused(&repo, &before, &reply, 409, "dirty_checkout");
    assert_eq!(std::fs::read_to_string(repo.path().join(ALICE)).unwrap(), dirty);
    repo.git(&["checkout", "--", ALICE]);

    // Broken registry settings protect nobody, so they refuse every write.
    repo.write("registry/registry.toml", "schema = 1\nmodes = [\n");
    repo.commit("break the registry settings");
    let before = repository_state(&repo);
    let bob = etag_of(&server.base, "bob", None);
    let reply = patch(
        &server.base,
        "bob",
        Some(EDITOR),
        Some(&bob),
        &json!({"modes": {"Critic": false}}),
    );
    assert_refused(&repo, &before, &reply, 409, "invalid_at_tip");

    // Neither a token nor its hash ever reached the log.
    let logged: Vec<String> = server.log.try_iter().collect();
    assert!(
        logged.iter().any(|line| line.contains("settings changed")),
        "{logged:?}"
    );
    for secret in [EDITOR, READER, MAINTAINER] {
        let hash = TokenHash::of(secret).to_string();
        assert!(
            !logged
                .iter()
                .any(|line| line.contains(secret) || line.contains(&hash[7..])),
            "a token or its hash was logged"
        );
    }
}

/// 20 writers with the same If-Match: exactly one wins, the rest get 412,
/// and the repository gains exactly one commit holding the winner's value.
fn race_on_one_version(repo: &TestRepo, server: &str) {
    let tag = etag_of(server, "alice", None);
    let tip = repo.git(&["rev-parse", "main"]);
    let barrier = Arc::new(Barrier::new(20));
    let replies: Vec<(usize, Reply)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|index| {
                let (barrier, tag) = (Arc::clone(&barrier), tag.clone());
                scope.spawn(move || {
                    barrier.wait();
                    // Every value differs from the current 0.5, so no request is a no-op.
                    let value = 0.6 + index as f64 / 100.0;
                    let body = json!({"traits": {"humor": {"wit": value}}});
                    (index, patch(server, "alice", Some(EDITOR), Some(&tag), &body))
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let winners: Vec<usize> = replies
        .iter()
        .filter(|(_, reply)| reply.status == 200)
        .map(|(index, _)| *index)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        replies.iter().map(|(_, reply)| reply.status).collect::<Vec<_>>()
    );
    assert!(
        replies
            .iter()
            .all(|(_, reply)| reply.status == 200 || reply.status == 412)
    );
    assert_eq!(repo.git(&["rev-list", "--count", &format!("{tip}..main")]), "1");
    let text = repo.git(&["show", &format!("main:{ALICE}")]);
    let expected = format!("wit = {}", 0.6 + winners[0] as f64 / 100.0);
    assert!(
        text.contains(&expected),
        "the winner's value {expected} is not in {text}"
    );
}

/// 20 writers, each adding its own trait and retrying on 412 with the hash
/// the refusal names: all succeed, one commit each, none lost, linear.
fn race_with_retries(repo: &TestRepo, server: &str) {
    let tip = repo.git(&["rev-list", "--count", "main"]);
    let barrier = Arc::new(Barrier::new(20));
    let attempts: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|index| {
                let barrier = Arc::clone(&barrier);
                scope.spawn(move || {
                    let mut tag = etag_of(server, "alice", None);
                    barrier.wait();
                    for attempt in 1..=200 {
                        let body = json!({"traits": {"race": {format!("t{index}"): 0.5}}});
                        let reply = patch(server, "alice", Some(EDITOR), Some(&tag), &body);
                        match reply.status {
                            200 => return attempt,
                            412 => {
                                let current = reply.json()["error"]["details"]["current"].clone();
                                tag = format!("\"{}\"", current.as_str().unwrap());
                            }
                            other => panic!("writer {index}: {other} {}", reply.body),
                        }
                    }
                    panic!("writer {index} never got its change in");
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let commits: usize = repo.git(&["rev-list", "--count", "main"]).parse().unwrap();
    assert_eq!(
        commits,
        tip.parse::<usize>().unwrap() + 20,
        "one commit per successful PATCH"
    );
    assert_eq!(
        repo.git(&["rev-list", "--min-parents=2", "main"]),
        "",
        "history is not linear"
    );
    let text = repo.git(&["show", &format!("main:{ALICE}")]);
    for index in 0..20 {
        assert!(
            text.contains(&format!("t{index} = 0.5")),
            "writer {index}'s change was lost:\n{text}"
        );
    }
    assert!(text.contains(COMMENT));
    let authors = repo.git(&["log", "-20", "--format=%an", "main"]);
    assert!(authors.lines().all(|author| author == "Ada Editor"), "{authors}");
    let version = http_get(&format!("{server}/api/personas/alice")).1;
    assert!(version.contains("\"t19\":0.5"), "the API does not show the last change");
    report(&format!(
        "write: 20 racing writers landed 20 commits in {} attempts",
        attempts.iter().sum::<usize>()
    ));
}

#[test]
fn branch_mode_proposes_on_a_review_branch_and_a_private_registry_needs_a_token() {
    let repo = registry();
    let server = Server::start_with(
        repo.path(),
        &[
            ("PERSONAS_TOKENS", &token_list()),
            ("PERSONAS_WRITE_MODE", "branch"),
            ("PERSONAS_PRIVATE", "true"),
            ("PERSONAS_BOT", "Review Bot <review-bot@example.org>"),
        ],
    );
    wait_for("the first sync", Duration::from_secs(60), || {
        request(
            "GET",
            &server.url("/api/personas/alice"),
            &[("Authorization", &format!("Bearer {READER}"))],
            b"",
        )
        .status
            == 200
    });

    // Private: reads need a token, probes do not, and caches stay private.
    assert_eq!(http_get(&server.url("/api/personas/alice")).0, 401);
    assert_eq!(http_get(&server.url("/p/alice")).0, 401);
    assert_eq!(http_get(&server.url("/healthz")).0, 200);
    // The document and the metrics say what the registry holds: gated too.
    for gated in ["/api/openapi.json", "/metrics"] {
        let refused = request("GET", &server.url(gated), &[], b"");
        assert_eq!(refused.status, 401, "{gated}: {}", refused.body);
        assert_eq!(refused.json()["error"]["code"], "unauthorized", "{gated}");
        let read = request(
            "GET",
            &server.url(gated),
            &[("Authorization", &format!("Bearer {READER}"))],
            b"",
        );
        assert_eq!(read.status, 200, "{gated}: {}", read.body);
    }
    let reply = request(
        "GET",
        &server.url("/api/personas/alice@1"),
        &[("Authorization", &format!("Bearer {READER}"))],
        b"",
    );
    assert_eq!(reply.status, 200);
    let policy = reply.header("cache-control").unwrap();
    assert!(policy.starts_with("private") && !policy.contains("public"), "{policy}");

    let main = repo.git(&["rev-parse", "main"]);
    let tag = etag_of(&server.base, "alice", Some(READER));
    let reply = patch(
        &server.base,
        "alice",
        Some(EDITOR),
        Some(&tag),
        &json!({"config": {"emotional_style": "expressive"}}),
    );
    assert_eq!(reply.status, 202, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["status"], "proposed");
    let branch = answer["branch"].as_str().unwrap();
    let commit = answer["commit"].as_str().unwrap();
    assert_eq!(branch, format!("settings/alice-{}", &commit[..7]));
    assert_eq!(repo.git(&["rev-parse", "main"]), main, "branch mode moved main");
    assert_eq!(repo.git(&["rev-parse", branch]), commit);
    assert_eq!(repo.git(&["rev-parse", &format!("{commit}^")]), main);
    assert_eq!(
        repo.git(&["log", "-1", "--format=%an|%cn <%ce>", commit]),
        "Ada Editor|Review Bot <review-bot@example.org>"
    );
    let proposed = repo.git(&["show", &format!("{branch}:{ALICE}")]);
    assert!(proposed.contains("emotional_style = \"expressive\"") && proposed.contains(COMMENT));
    assert!(
        repo.git(&["show", &format!("main:{ALICE}")])
            .contains("emotional_style = \"reserved\"")
    );
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "branch mode touched the checkout"
    );
}

/// Writers that do not share a process lock (as two servers would not)
/// still never lose a commit: the branch ref moves only by compare-and-swap.
#[test]
fn independent_writers_meet_at_the_ref_and_none_is_lost() {
    let repo = registry();
    let base: usize = repo.git(&["rev-list", "--count", "main"]).parse().unwrap();
    let author = Identity::new("Ada Editor", "ada@example.org").unwrap();
    let writers: Vec<RegistryWriter> = (0..2)
        .map(|_| RegistryWriter::new(repo.path(), "main", WriteMode::Commit, personas::config::default_bot()))
        .collect();
    let barrier = Barrier::new(16);
    std::thread::scope(|scope| {
        for index in 0..16 {
            let (writer, author, barrier) = (&writers[index % 2], &author, &barrier);
            scope.spawn(move || {
                barrier.wait();
                let outcome = writer
                    .write::<()>(
                        author,
                        |short| format!("unused-{short}"),
                        |_tip| {
                            Ok(Some(FileChange {
                                path: format!("notes/writer-{index}.txt"),
                                bytes: format!("writer {index}\n").into_bytes(),
                                message: format!("note {index}"),
                            }))
                        },
                    )
                    .unwrap_or_else(|error| panic!("writer {index}: {error}"));
                assert!(matches!(outcome, WriteOutcome::Committed { .. }));
            });
        }
    });
    assert_eq!(
        repo.git(&["rev-list", "--count", "main"]).parse::<usize>().unwrap(),
        base + 16
    );
    assert_eq!(repo.git(&["rev-list", "--min-parents=2", "main"]), "");
    let files = repo.git(&["ls-tree", "--name-only", "main", "notes/"]);
    assert_eq!(files.lines().count(), 16, "{files}");
    assert_eq!(repo.git(&["fsck", "--no-dangling"]), "", "the repository is corrupt");
}

#[test]
fn personas_token_shows_the_token_once_and_configures_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let (code, token, instructions) = personas(
        &[
            "token",
            "--role",
            "maintainer",
            "--name",
            "Max Maintainer",
            "--email",
            "max@example.org",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{instructions}");
    let token = token.trim();
    assert!(token.starts_with("prs_") && token.len() == 68, "{token}");
    assert!(
        !instructions.contains(token),
        "the token leaked into the configuration text"
    );
    // The personas.toml entry it prints configures a server that knows the token.
    let start = instructions.find("[[access.tokens]]").unwrap();
    let entry = instructions[start..].split("\n\n").next().unwrap();
    let config = personas::config::parse("personas.toml", entry.as_bytes(), std::path::Path::new(".")).unwrap();
    let tokens = personas::access::Tokens::new(config.tokens.unwrap());
    let found = tokens.find(token).expect("the printed entry matches the token");
    assert_eq!(found.role, personas::access::Role::Maintainer);
    assert_eq!(found.identity.to_string(), "Max Maintainer <max@example.org>");
    // So does the PERSONAS_TOKENS line.
    let line = instructions
        .lines()
        .find_map(|line| line.strip_prefix("PERSONAS_TOKENS='"))
        .unwrap()
        .trim_end_matches('\'');
    let listed = personas::access::Tokens::new(personas::access::parse_token_list(line).unwrap());
    assert!(listed.find(token).is_some());
    assert!(listed.find("prs_someone_else").is_none());

    let (code, _, errors) = personas(
        &["token", "--role", "editor", "--name", "X", "--email", "not-an-address"],
        dir.path(),
    );
    assert_eq!(code, 2);
    assert!(errors.contains("not an email address"), "{errors}");
}

/// A change computed on a tip that another writer then moves must be
/// recomputed on the new tip, where its precondition fails: refused, not
/// written over the other change.
#[test]
fn a_lost_compare_and_swap_recomputes_and_refuses_a_stale_change() {
    let repo = registry();
    let original = std::fs::read(repo.path().join(ALICE)).unwrap();
    let author = Identity::new("Ada Editor", "ada@example.org").unwrap();
    let writers: Vec<RegistryWriter> = (0..2)
        .map(|_| RegistryWriter::new(repo.path(), "main", WriteMode::Commit, personas::config::default_bot()))
        .collect();
    let tip = repo.git(&["rev-parse", "main"]);
    // Both plans read the same tip before either commits.
    let both_planned = Barrier::new(2);
    let outcomes: Vec<Result<WriteOutcome, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(index, writer)| {
                let (author, both_planned, original) = (&author, &both_planned, &original);
                scope.spawn(move || {
                    let mut first = true;
                    writer
                        .write::<String>(
                            author,
                            |short| format!("unused-{short}"),
                            |tip| {
                                let current = tip.read(ALICE).map_err(|error| error.to_string())?.unwrap();
                                if first {
                                    first = false;
                                    both_planned.wait();
                                }
                                if &current != original {
                                    return Err("stale".to_string());
                                }
                                let mut bytes = current.clone();
                                bytes.extend_from_slice(format!("# writer {index}\n").as_bytes());
                                Ok(Some(FileChange {
                                    path: ALICE.to_string(),
                                    bytes,
                                    message: format!("writer {index}"),
                                }))
                            },
                        )
                        .map_err(|error| match error {
                            personas::git::write::WriteError::Refused(reason) => reason,
                            other => panic!("writer {index}: {other}"),
                        })
                })
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().unwrap()).collect()
    });
    let committed = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let stale = outcomes
        .iter()
        .filter(|outcome| outcome.as_ref().err().map(String::as_str) == Some("stale"))
        .count();
    assert_eq!((committed, stale), (1, 1), "{outcomes:?}");
    assert_eq!(repo.git(&["rev-list", "--count", &format!("{tip}..main")]), "1");
    let text = repo.git(&["show", &format!("main:{ALICE}")]);
    assert_eq!(text.matches("# writer").count(), 1, "{text}");
}

/// Runs `personas sync` (no vectors) of `repo` into `database_url`: the
/// projection writer a `--no-sync` server leaves to another process.
fn sync_into(repo: &TestRepo, database_url: &str) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_personas"))
        .args(["sync", "--no-vectors", "--repo"])
        .arg(repo.path())
        .env("DATABASE_URL", database_url)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The refusals the other tests do not reach, on a server whose projection
/// is another process's (`--no-sync`): the answer to a committed change is
/// then 202, and the persona can move on the branch before the sync sees it.
#[test]
fn the_remaining_refusals_and_the_202_answer_as_documented() {
    let repo = registry();
    let database = tokio::runtime::Runtime::new().unwrap().block_on(common::db::fresh());
    sync_into(&repo, &database.url);
    let tokens = token_list();
    let server = Server::start_args(
        repo.path(),
        &["--no-sync"],
        &[("PERSONAS_TOKENS", &tokens), ("DATABASE_URL", &database.url)],
    );
    synced(&server);
    let tag = etag_of(&server.base, "alice", None);
    let change = json!({"config": {"humor_usage": "high"}});
    let before = repository_state(&repo);

    // Malformed JSON, a weak ETag, and a pin naming no version.
    let reply = request(
        "PATCH",
        &server.url("/api/personas/alice/settings"),
        &[
            ("Content-Type", "application/merge-patch+json"),
            ("Authorization", &format!("Bearer {EDITOR}")),
            ("If-Match", &tag),
        ],
        b"{\"config\": {\"humor_usage\": ",
    );
    assert_refused(&repo, &before, &reply, 400, "bad_json");
    let weak = format!("W/{tag}");
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&weak), &change);
    assert_refused(&repo, &before, &reply, 400, "bad_if_match");
    assert!(reply.body.contains("weak"), "{}", reply.body);
    // Not ASCII: schemathesis found it refused before the handler with an
    // empty body; it is the documented JSON error, naming the header.
    let reply = patch(&server.base, "alice", Some(EDITOR), Some("\"sha256:é\""), &change);
    assert_refused(&repo, &before, &reply, 400, "bad_if_match");
    assert!(
        reply
            .headers
            .iter()
            .any(|(name, value)| name == "content-type" && value.starts_with("application/json")),
        "{:?}",
        reply.headers
    );
    let reply = patch(&server.base, "alice", Some(EDITOR), Some("@99"), &change);
    assert_refused(&repo, &before, &reply, 412, "stale");

    // A change the registry's prompt template can no longer render: 422 on "modes".
    repo.write(
        "registry/prompt.jinja",
        "You are {{ persona.name }}.{% if mode == \"Debater\" %} {{ persona.no_such_field }}{% endif %}\n",
    );
    repo.commit("a template that cannot render debaters");
    sync_into(&repo, &database.url);
    let before = repository_state(&repo);
    let tag = etag_of(&server.base, "alice", None);
    let reply = patch(
        &server.base,
        "alice",
        Some(EDITOR),
        Some(&tag),
        &json!({"modes": {"Debater": true}}),
    );
    assert_refused(&repo, &before, &reply, 422, "invalid");
    let problems = reply.json()["error"]["details"]["problems"].clone();
    assert_eq!(problems[0]["path"], "modes", "{problems}");
    assert!(
        problems[0]["message"].as_str().unwrap().contains("Debater"),
        "{problems}"
    );

    // Committed but not projected yet: 202, and the sync then shows it.
    let main = repo.git(&["rev-parse", "main"]);
    let reply = patch(&server.base, "alice", Some(EDITOR), Some(&tag), &change);
    assert_eq!(reply.status, 202, "{}", reply.body);
    let answer = reply.json();
    assert_eq!(answer["status"], "committed");
    assert_eq!(answer["branch"], "main");
    let commit = answer["commit"].as_str().unwrap().to_string();
    assert_eq!(repo.git(&["rev-parse", "main"]), commit);
    assert_eq!(repo.git(&["rev-parse", &format!("{commit}^")]), main);
    sync_into(&repo, &database.url);
    wait_for("the change to be read back", Duration::from_secs(30), || {
        let reply = request("GET", &server.url("/api/personas/alice"), &[], b"");
        reply.json()["persona"]["config"]["humor_usage"] == "high"
    });

    // The file moved on the branch after the projection read it: 409 moved.
    let tag = etag_of(&server.base, "alice", None);
    repo.git(&["mv", ALICE, "registry/personas/alice-moved.toml"]);
    repo.commit("alice moves");
    let before = repository_state_at(&repo, "registry/personas/alice-moved.toml");
    let reply = patch(
        &server.base,
        "alice",
        Some(EDITOR),
        Some(&tag),
        &json!({"config": {"humor_usage": "low"}}),
    );
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "moved", "{}", reply.body);
    assert_eq!(repository_state_at(&repo, "registry/personas/alice-moved.toml"), before);

    // A server that only mirrors a remote refuses every write: 503 read_only.
    let bare = tempfile::tempdir().unwrap();
    let remote = bare.path().join("registry.git");
    repo.git(&["clone", "-q", "--bare", ".", remote.to_str().unwrap()]);
    let mirror = TestRepo::new();
    // The mirror's managed PostgreSQL runs as `postgres` when the tests run as root.
    std::fs::set_permissions(mirror.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mirroring = Server::start_args(
        mirror.path(),
        &["--remote", remote.to_str().unwrap()],
        &[("PERSONAS_TOKENS", &tokens)],
    );
    wait_for("the mirror's first sync", Duration::from_secs(60), || {
        http_get(&mirroring.url("/api/personas/alice")).0 == 200
    });
    let tag = etag_of(&mirroring.base, "alice", None);
    let reply = patch(&mirroring.base, "alice", Some(EDITOR), Some(&tag), &change);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "read_only", "{}", reply.body);
}

/// Refs, index, working tree and the one file, wherever it now lives.
fn repository_state_at(repo: &TestRepo, file: &str) -> String {
    format!(
        "{}\n{}\n{}",
        repo.git(&["for-each-ref", "--format=%(refname) %(objectname)"]),
        repo.git(&["status", "--porcelain", "--untracked-files=all"]),
        std::fs::read_to_string(repo.path().join(file)).unwrap()
    )
}

/// A branch that moves under every attempt: the writer gives up after its
/// attempts with `Contended` (the API's 409 `contended`), writes nothing,
/// and leaves every commit the others made in place.
#[test]
fn a_branch_that_never_holds_still_is_contended_and_nothing_is_lost() {
    let repo = registry();
    let author = Identity::new("Ada Editor", "ada@example.org").unwrap();
    let writer = RegistryWriter::new(repo.path(), "main", WriteMode::Commit, personas::config::default_bot());
    let mut attempts = 0;
    let outcome = writer.write::<String>(
        &author,
        |short| format!("unused-{short}"),
        |tip| {
            attempts += 1;
            let current = tip.read(ALICE).map_err(|error| error.to_string())?.unwrap();
            // Someone else commits after this attempt read the tip and before its CAS.
            repo.git(&["commit", "-q", "--allow-empty", "-m", &format!("meanwhile {attempts}")]);
            let mut bytes = current;
            bytes.extend_from_slice(b"# never lands\n");
            Ok(Some(FileChange {
                path: ALICE.to_string(),
                bytes,
                message: "contended".to_string(),
            }))
        },
    );
    match outcome {
        Err(personas::git::write::WriteError::Contended { branch }) => assert_eq!(branch, "main"),
        other => panic!("a branch that always moved was written: {other:?}"),
    }
    assert!(attempts > 1, "the writer did not retry ({attempts} attempt)");
    let log = repo.git(&["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines().filter(|subject| subject.starts_with("meanwhile")).count(),
        attempts
    );
    assert!(!log.contains("contended"), "{log}");
    assert!(
        !std::fs::read_to_string(repo.path().join(ALICE))
            .unwrap()
            .contains("never lands")
    );
}

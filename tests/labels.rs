//! Labels and experiments end to end: registry files in a real git
//! repository, projected by the real `personas serve` (managed PostgreSQL,
//! in-process sync), read through the API, and assignment computed both by
//! the server and by `personas assign` from git alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::server::*;
use common::*;

const PROMPT: &str = include_str!("../registry/prompt.jinja");

fn registry() -> TestRepo {
    let repo = TestRepo::new();
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The server's data directory lives in the repository: keep it out of commits.
    repo.write(".gitignore", ".personas/\n");
    repo.write("registry/prompt.jinja", PROMPT);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("alice and bob");
    let alice = persona(ID_A, "Alice");
    repo.write(
        "registry/personas/alice.toml",
        &edit(&alice, "openness = 0.9", "openness = 0.95"),
    );
    repo.commit("alice v2");
    repo
}

const EXPERIMENT: &str = r#"schema = 1
status = "running"
salt = "alice-open-1"
persona = "alice"

[[variants]]
name = "control"
pin = "production"
weight = 10
mode = "Educator"

[[variants]]
name = "treatment"
pin = 2
weight = 90
mode = "Critic"
"#;

fn json_get(server: &Server, path: &str) -> (u16, serde_json::Value, Reply) {
    let reply = request("GET", &server.url(path), &[], b"");
    let value = serde_json::from_str(&reply.body).unwrap_or(serde_json::Value::Null);
    (reply.status, value, reply)
}

#[test]
fn labels_pin_move_and_record_their_history_and_experiments_assign_the_same_everywhere() {
    let repo = registry();
    repo.write(
        "registry/labels.toml",
        "[production]\nalice = 1\nbob = 1\n\n[staging]\nalice = 2\n",
    );
    repo.write("registry/experiments/alice-open.toml", EXPERIMENT);
    let defined = repo.commit("labels and an experiment");
    let (code, _, stderr) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 0, "{stderr}");

    let server = Server::start(repo.path());
    wait_for("the first sync", Duration::from_secs(90), || {
        http_get(&server.url("/api/labels/production")).0 == 200
    });

    // A label pin answers the version the label names, and revalidates.
    let (status, body, reply) = json_get(&server, "/api/personas/alice@production");
    assert_eq!(status, 200);
    assert_eq!(body["version"], 1);
    let first_etag = reply.header("etag").unwrap().to_string();
    assert!(!reply.header("cache-control").unwrap().contains("immutable"));
    assert_eq!(json_get(&server, "/api/personas/alice@label:staging").1["version"], 2);
    assert_eq!(json_get(&server, "/api/personas/alice@staging").1["version"], 2);
    let (status, body, _) = json_get(&server, "/api/personas/bob@staging");
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("does not point"),
        "{body}"
    );
    // A pinned prompt and a page by label.
    let (status, prompt, _) = json_get(&server, "/api/personas/alice@production/prompt");
    assert_eq!((status, prompt["version"].as_i64()), (200, Some(1)));
    assert_eq!(http_get(&server.url("/p/alice/v/staging")).0, 200);

    // Assignment: the server and git agree unit by unit, and the split follows the weights.
    let mut treatment = 0;
    for index in 0..40 {
        let unit = format!("user-{index}");
        let (status, served, _) = json_get(&server, &format!("/api/experiments/alice-open/assign?unit={unit}"));
        assert_eq!(status, 200, "{served}");
        let (code, stdout, stderr) = personas(&["assign", "alice-open", &unit], repo.path());
        assert_eq!(code, 0, "{stderr}");
        let from_git: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(served, from_git, "{unit}");
        assert_eq!(served["experiment_commit"], defined.as_str());
        match served["variant"].as_str().unwrap() {
            "treatment" => {
                treatment += 1;
                assert_eq!(
                    (served["version"].as_i64(), served["mode"].as_str()),
                    (Some(2), Some("Critic"))
                );
            }
            "control" => assert_eq!(
                (served["version"].as_i64(), served["mode"].as_str()),
                (Some(1), Some("Educator"))
            ),
            other => panic!("unknown variant {other}"),
        }
    }
    assert!((28..=40).contains(&treatment), "{treatment} of 40 in the 90% variant");
    let (_, with_prompt, _) = json_get(&server, "/api/experiments/alice-open/assign?unit=user-1&include=prompt");
    let prompt_text = with_prompt["prompt"].as_str().unwrap();
    assert!(prompt_text.contains("Alice"));
    for (path, status, code) in [
        ("/api/experiments/alice-open/assign", 400, "bad_unit"),
        ("/api/experiments/alice-open/assign?unit=", 400, "bad_unit"),
        (
            "/api/experiments/alice-open/assign?unit=u&include=all",
            400,
            "bad_include",
        ),
        ("/api/experiments/alice-open/assign?unit=u&at=zzz", 400, "bad_at"),
        ("/api/experiments/nobody/assign?unit=u", 404, "not_found"),
    ] {
        let (got, body, _) = json_get(&server, path);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    let before: Vec<serde_json::Value> = (0..200)
        .map(|index| json_get(&server, &format!("/api/experiments/alice-open/assign?unit=u{index}")).1)
        .collect();

    // Move the label and raise the control's weight: a new commit.
    repo.write(
        "registry/labels.toml",
        "[production]\nalice = 2\nbob = 1\n\n[staging]\nalice = 2\n",
    );
    repo.write(
        "registry/experiments/alice-open.toml",
        &EXPERIMENT
            .replacen("weight = 10", "weight = 20", 1)
            .replacen("weight = 90", "weight = 80", 1),
    );
    let moved = repo.commit("production: alice v2; control 20%");
    wait_for("the label move", Duration::from_secs(30), || {
        json_get(&server, "/api/personas/alice@production").1["version"] == 2
    });
    let (_, _, reply) = json_get(&server, "/api/personas/alice@production");
    assert_ne!(reply.header("etag").unwrap(), first_etag, "the ETag follows the label");

    // History: every move with from, to, commit and author.
    let (_, history, _) = json_get(&server, "/api/labels/production/history");
    let moves = history["moves"].as_array().unwrap();
    let alice_moves: Vec<(serde_json::Value, serde_json::Value, String)> = moves
        .iter()
        .filter(|step| step["slug"] == "alice")
        .map(|step| {
            (
                step["from_version"].clone(),
                step["to_version"].clone(),
                step["commit"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        alice_moves,
        [
            (serde_json::json!(1), serde_json::json!(2), moved.clone()),
            (serde_json::Value::Null, serde_json::json!(1), defined.clone())
        ]
    );
    assert!(moves.iter().all(|step| step["author_name"] == "Ada Author"));
    let (_, page) = http_get(&server.url("/p/alice/history"));
    assert!(
        page.contains("href=\"/labels/production\""),
        "the history page marks the label"
    );

    // Units move only into the raised variant; `at` replays the old assignment exactly.
    let mut moved_units = 0;
    for (index, old) in before.iter().enumerate() {
        let now = json_get(&server, &format!("/api/experiments/alice-open/assign?unit=u{index}")).1;
        if old["variant"] != now["variant"] {
            assert_eq!(
                (old["variant"].as_str(), now["variant"].as_str()),
                (Some("treatment"), Some("control"))
            );
            moved_units += 1;
        }
        if old["variant"] == "control" {
            assert_eq!(now["version"], 2, "the control now serves production's new version");
        }
        let replayed = json_get(
            &server,
            &format!("/api/experiments/alice-open/assign?unit=u{index}&at={}", &defined[..10]),
        )
        .1;
        assert_eq!(&replayed, old, "u{index} replayed at the old commit");
    }
    assert!(moved_units > 0 && moved_units < 50, "{moved_units} of 200 moved");
    let (code, stdout, _) = personas(&["assign", "alice-open", "u3", "--at", &defined], repo.path());
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout).unwrap(), before[3]);

    // Stopping the experiment stops assignment, but the past stays replayable.
    repo.write(
        "registry/experiments/alice-open.toml",
        &EXPERIMENT.replace("status = \"running\"", "status = \"stopped\""),
    );
    repo.commit("stop alice-open");
    wait_for("the stop", Duration::from_secs(30), || {
        json_get(&server, "/api/experiments/alice-open/assign?unit=u1").0 == 409
    });
    let (status, _, _) = json_get(
        &server,
        &format!("/api/experiments/alice-open/assign?unit=u1&at={moved}"),
    );
    assert_eq!(status, 200);
    let (_, detail, _) = json_get(&server, "/api/experiments/alice-open");
    assert_eq!(detail["history"].as_array().unwrap().len(), 3);
    for path in [
        "/labels",
        "/labels/production",
        "/experiments",
        "/experiments/alice-open",
    ] {
        assert_eq!(http_get(&server.url(path)).0, 200, "{path}");
    }
}

#[test]
fn a_bare_name_is_a_label_first_then_a_tag_and_check_refuses_a_label_named_like_a_tag() {
    let repo = registry();
    repo.git(&["tag", "v1", "HEAD~1"]);
    repo.git(&["tag", "release", "HEAD"]);
    repo.write("registry/labels.toml", "[production]\nalice = 1\n");
    repo.commit("production label");
    let server = Server::start(repo.path());
    wait_for("the first sync", Duration::from_secs(90), || {
        http_get(&server.url("/api/labels/production")).0 == 200
    });
    for (pin, version) in [
        ("v1", 1),         // only a tag has that name
        ("tag:v1", 1),     // a tag, explicitly
        ("release", 2),    // a tag at the commit of version 2
        ("production", 1), // a label
        ("label:production", 1),
        ("2", 2), // a number, never a label
    ] {
        let (status, body, reply) = json_get(&server, &format!("/api/personas/alice@{pin}"));
        assert_eq!(
            (status, body["version"].as_i64()),
            (200, Some(version)),
            "@{pin}: {body}"
        );
        assert_eq!(
            reply.header("cache-control").unwrap().contains("immutable"),
            pin == "2",
            "@{pin}"
        );
    }
    for (pin, status, needle) in [
        ("label:v1", 404, "no label"),
        ("tag:production", 404, "no tag"),
        ("nothing", 404, "no label or tag"),
        ("label:42", 400, "lowercase letter"),
        ("label:cafe", 400, "hex digits only"),
    ] {
        let (got, body, _) = json_get(&server, &format!("/api/personas/alice@{pin}"));
        assert_eq!(got, status, "@{pin}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "@{pin}: {body}"
        );
    }
    drop(server);

    // A label named like a tag would change what a bare @release means: refused.
    repo.write(
        "registry/labels.toml",
        "[production]\nalice = 1\n\n[release]\nalice = 2\n",
    );
    let (code, stdout, _) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 1);
    assert!(stdout.contains("registry/labels.toml:4:2: label:"), "{stdout}");
    assert!(stdout.contains("git tag"), "{stdout}");
}

#[test]
fn check_reports_labels_and_experiments_against_history_at_their_lines() {
    let repo = registry();
    repo.write(
        "registry/labels.toml",
        "[production]\nalice = 3\nnobody = 1\nbob = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n\n[1]\nalice = 1\n",
    );
    let (code, stdout, _) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 1);
    // A malformed entry makes the file invalid as a whole: reported first, alone.
    assert!(stdout.contains("registry/labels.toml:6:2: label:"), "{stdout}");

    repo.write("registry/labels.toml", "[production]\nalice = 3\nnobody = 1\nbob = 1\n");
    let (code, stdout, _) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 1);
    assert!(
        stdout.contains("registry/labels.toml:2:1: unknown-version:") && stdout.contains("versions 1 to 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("registry/labels.toml:3:1: unknown-persona:"),
        "{stdout}"
    );

    // An uncommitted edit is the next version: a label may point at it.
    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "openness = 0.9", "openness = 0.5"),
    );
    repo.write("registry/labels.toml", "[production]\nalice = 3\nbob = 1\n");
    let (code, stdout, stderr) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Experiments: pins that resolve, enabled modes, a running experiment on a deleted persona.
    repo.write(
        "registry/experiments/bad.toml",
        &EXPERIMENT
            .replace("pin = \"production\"", "pin = \"staging\"")
            .replace("mode = \"Critic\"", "mode = \"Debater\""),
    );
    let (code, stdout, _) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 1);
    assert!(
        stdout.contains("registry/experiments/bad.toml:6:1: pin:") && stdout.contains("no label \"staging\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("registry/experiments/bad.toml:12:1: unknown-mode:"),
        "{stdout}"
    );
    repo.remove("registry/experiments/bad.toml");
    repo.write(
        "registry/experiments/gone.toml",
        &EXPERIMENT.replace("persona = \"alice\"", "persona = \"bob\""),
    );
    repo.remove("registry/personas/bob.toml");
    repo.write("registry/labels.toml", "[production]\nalice = 3\n");
    let (code, stdout, _) = personas(&["check", "registry"], repo.path());
    assert_eq!(code, 1);
    assert!(
        stdout.contains("bob is deleted, but the experiment is running"),
        "{stdout}"
    );
}

#[test]
fn the_static_export_carries_the_labels_and_experiments_pages_and_their_json() {
    let repo = registry();
    repo.write("registry/labels.toml", "[production]\nalice = 1\nbob = 1\n");
    repo.write("registry/experiments/alice-open.toml", EXPERIMENT);
    repo.commit("labels and an experiment");
    let out = repo.path().join("site");
    let data = repo.path().join(".personas");
    let (code, _, stderr) = personas(
        &[
            "build-site",
            "--repo",
            repo.path().to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        repo.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    for page in [
        "labels/index.html",
        "labels/production/index.html",
        "experiments/index.html",
        "experiments/alice-open/index.html",
    ] {
        let html = std::fs::read_to_string(out.join(page)).unwrap_or_else(|error| panic!("{page}: {error}"));
        assert!(html.contains("production") || html.contains("alice-open"), "{page}");
    }
    let read = |file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(file)).unwrap_or_else(|error| panic!("{file}: {error}")))
            .unwrap()
    };
    assert_eq!(read("api/labels.json")["labels"][0]["name"], "production");
    assert_eq!(
        read("api/labels/production/history.json")["moves"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(read("api/experiments/alice-open.json")["variants"][1]["version"], 2);
    assert_eq!(read("api/personas/alice@production.json")["version"], 1);
}

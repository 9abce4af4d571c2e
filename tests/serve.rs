//! `personas serve` end to end: the real binary on a registry built here,
//! with its managed PostgreSQL, the in-process sync following commits, and
//! a real headless Chromium reading the pages.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::server::*;
use common::*;

fn traversable_repo() -> TestRepo {
    let repo = TestRepo::new();
    // As root the managed PostgreSQL runs as `postgres`, which must reach the data directory.
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    repo
}

#[test]
fn serve_follows_commits_and_stops_cleanly() {
    let repo = traversable_repo();
    repo.write("registry/registry.toml", SETTINGS);
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.commit("add alice");
    let mut server = Server::start(repo.path());
    wait_for("the first sync", Duration::from_secs(60), || {
        http_get(&server.url("/api/personas/alice")).0 == 200
    });
    assert!(http_get(&server.url("/api/personas/alice")).1.contains("\"version\":1"));
    // The data directory inside the work tree ignores itself: a contributor's
    // `git add -A` must not stage the live cluster.
    assert_eq!(repo.git(&["status", "--porcelain", "--untracked-files=all"]), "");

    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "openness = 0.9", "openness = 0.95"),
    );
    repo.commit("alice: more open");
    let latency = wait_for("the new version in the API", Duration::from_secs(30), || {
        http_get(&server.url("/api/personas/alice")).1.contains("\"version\":2")
    });
    report(&format!("serve: a commit reached the API in {latency:?}"));
    let (status, page) = http_get(&server.url("/p/alice"));
    assert_eq!(status, 200);
    assert!(page.contains("v2"), "{page}");
    let (status, history) = http_get(&server.url("/p/alice/history"));
    assert_eq!(status, 200);
    assert!(history.contains("traits.ocean.openness: 0.90 → 0.95"), "{history}");

    let status = server.terminate();
    assert!(status.success(), "serve exited with {status}");
    let logged: Vec<String> = server.log.try_iter().collect();
    assert!(logged.iter().any(|line| line.contains("shutting down")), "{logged:?}");
    // The managed cluster was stopped, not left running.
    assert!(!repo.path().join(".personas/postgres/postmaster.pid").exists());
}

/// Chromium's headless flags for a root user in a fresh profile.
fn screenshots_dir() -> PathBuf {
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

#[test]
fn a_real_browser_renders_the_index_a_persona_and_its_history() {
    let repo = sample_repository();
    std::fs::set_permissions(repo.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = repo.path().join("registry/personas/marie-curie.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("openness = ", "openness = 0.99 #", 1)).unwrap();
    repo.commit("curie: more open");
    let server = Server::start(repo.path());
    wait_for("the sync", Duration::from_secs(60), || {
        http_get(&server.url("/api/personas/marie-curie"))
            .1
            .contains("\"version\":2")
    });
    // The vector worker runs beside the sync: similar personas appear once it has embedded them.
    wait_for("the vector index", Duration::from_secs(120), || {
        http_get(&server.url("/api/personas/marie-curie/similar")).0 == 200
    });

    let profile = tempfile::tempdir().unwrap();
    let shots = screenshots_dir();
    for (name, path, expected) in [
        ("index", "/", vec!["Marie Curie", "class=\"card\""]),
        (
            "persona",
            "/p/marie-curie",
            vec![
                "<h1>Marie Curie</h1>",
                "trait-chart",
                "trait-bar",
                "class=\"similar-persona\"",
            ],
        ),
        (
            "history",
            "/p/marie-curie/history",
            vec!["curie: more open", "class=\"diff\"", "openness"],
        ),
    ] {
        let url = server.url(path);
        let dom = chromium(profile.path()).arg("--dump-dom").arg(&url).output().unwrap();
        assert!(
            dom.status.success(),
            "chromium failed on {url}: {}",
            String::from_utf8_lossy(&dom.stderr)
        );
        let dom = String::from_utf8_lossy(&dom.stdout);
        for needle in expected {
            assert!(dom.contains(needle), "{url}: the rendered page lacks {needle:?}");
        }
        let file = shots.join(format!("{name}.png"));
        // An earlier run's screenshot must not pass for this one's.
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("cannot remove {}: {error}", file.display()),
        }
        let shot = chromium(profile.path())
            .arg(format!("--screenshot={}", file.display()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(shot.status.success(), "screenshot of {url} failed");
        let png = std::fs::read(&file).unwrap_or_else(|error| panic!("no screenshot {}: {error}", file.display()));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{} is not a rendered page",
            file.display()
        );
        report(&format!("browser: {url} rendered; screenshot {}", file.display()));
    }
}

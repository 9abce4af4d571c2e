//! Following a branch as it moves: `sync --watch` on a local repository,
//! `sync --remote` through a mirror, and a database restart in mid-sync.
//! All on real git repositories, a real PostgreSQL and the real binary.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::db::{TestDatabase, count, digest, fresh, orphan_rows};
use common::*;
use personas::store::local_pg::LocalCluster;
use personas::store::pool::{MIGRATOR, connect, ensure_database};
use personas::sync::{SyncOptions, sync_once};
use personas::synthetic::SyntheticRegistry;
use sqlx::PgPool;

fn spawn_sync(args: &[&str], database_url: &str, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_personas"))
        .arg("sync")
        // These tests are about the projection; the vector side has its own (tests/vectors.rs).
        .arg("--no-vectors")
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn,personas=info")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("personas runs")
}

/// Waits until `sql` returns `expected`, giving up after a generous deadline
/// (this checks that it happens, not how fast: the benchmarks measure speed).
async fn eventually(pool: &PgPool, sql: &str, expected: i64) -> Duration {
    let started = Instant::now();
    while count(pool, sql).await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{sql} never reached {expected} (now {})",
            count(pool, sql).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), rustix::process::Signal::TERM)
        .expect("the sync is still running");
    child.wait().unwrap()
}

#[tokio::test]
async fn watch_projects_each_new_commit_and_stops_cleanly_on_sigterm() {
    let repo = TestRepo::new();
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.commit("add alice");
    let TestDatabase { url, pool } = fresh().await;
    let repo_path = repo.path().to_str().unwrap();
    let mut child = spawn_sync(&["--watch", "--repo", repo_path], &url, Stdio::null());
    eventually(&pool, "SELECT count(*) FROM persona_versions", 1).await;

    // Commits made while it watches: an edit, then a new persona on a second commit.
    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "openness = 0.9", "openness = 0.4"),
    );
    repo.commit("alice opens up less");
    let latency = eventually(&pool, "SELECT count(*) FROM persona_versions", 2).await;
    eprintln!("watch: the edit was projected {latency:?} after the commit");
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    let tip = repo.commit("add bob");
    eventually(&pool, "SELECT count(*) FROM persona_versions", 3).await;
    let cursor: String = sqlx::query_scalar("SELECT last_commit FROM sync_state")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cursor, tip);

    // `git add` alone (the index changes, no ref moves) projects nothing new.
    repo.write("registry/personas/carol.toml", &persona(ID_C, "Carol"));
    repo.git(&["add", "-A"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&pool, "SELECT count(*) FROM persona_versions").await, 3);

    let status = terminate(&mut child);
    assert!(status.success(), "sync --watch exited with {status} on SIGTERM");
}

#[tokio::test]
async fn remote_sync_follows_a_bare_repository_through_pushes_and_force_pushes() {
    let repo = TestRepo::new();
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.commit("add alice");
    let hosted = tempfile::tempdir().unwrap();
    let bare = hosted.path().join("registry.git");
    repo.git(&["clone", "-q", "--bare", ".", bare.to_str().unwrap()]);
    let url = format!("file://{}", bare.display());
    let data = tempfile::tempdir().unwrap();
    let TestDatabase { url: database, pool } = fresh().await;
    let remote_sync = |remote: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_personas"))
            .arg("sync")
            .arg("--no-vectors")
            .args(extra)
            .args(["--remote", remote, "--data-dir"])
            .arg(data.path())
            .env("DATABASE_URL", &database)
            .output()
            .unwrap()
    };
    let sync = || {
        let output = remote_sync(&url, &["--once"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };

    sync();
    assert_eq!(count(&pool, "SELECT count(*) FROM persona_versions").await, 1);

    // A push upstream arrives with the next fetch.
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.commit("add bob");
    repo.git(&["push", "-q", bare.to_str().unwrap(), "main"]);
    sync();
    assert_eq!(count(&pool, "SELECT count(*) FROM persona_versions").await, 2);

    // A force-push upstream that drops bob retracts his version.
    repo.git(&["reset", "-q", "--hard", "HEAD~1"]);
    repo.git(&["push", "-q", "--force", bare.to_str().unwrap(), "main"]);
    sync();
    assert_eq!(
        count(&pool, "SELECT count(*) FROM persona_versions WHERE retracted").await,
        1
    );

    // A remote without the branch, and one that does not exist, fail clearly.
    let wrong_branch = remote_sync(&url, &["--once", "--branch", "no-such-branch"]);
    assert_eq!(wrong_branch.status.code(), Some(2));
    let message = String::from_utf8_lossy(&wrong_branch.stderr);
    assert!(
        message.contains("fetching from") && message.contains("no-such-branch"),
        "{message}"
    );
    let missing = format!("file://{}", hosted.path().join("missing.git").display());
    let gone = remote_sync(&missing, &["--once"]);
    assert_eq!(gone.status.code(), Some(2));
    let message = String::from_utf8_lossy(&gone.stderr);
    assert!(
        message.contains("fetching from") && message.contains("missing.git"),
        "{message}"
    );
    // Following it with --watch fails the same way at once, rather than retrying forever.
    let watching = remote_sync(&missing, &["--watch"]);
    assert_eq!(watching.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&watching.stderr).contains("missing.git"));
}

/// A database of its own on a cluster of its own, so restarting the server
/// does not disturb the other tests.
struct PrivateServer {
    cluster: LocalCluster,
    _directory: tempfile::TempDir,
}

impl PrivateServer {
    async fn start() -> (PrivateServer, String) {
        let directory = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let cluster_dir = directory.path().join("postgres");
        let cluster = tokio::task::spawn_blocking(move || {
            let mut cluster = LocalCluster::new(&cluster_dir).expect("PostgreSQL binaries");
            cluster.start().expect("the private cluster starts");
            cluster
        })
        .await
        .unwrap();
        ensure_database(&cluster.url("postgres"), "restart").await.unwrap();
        let url = cluster.url("restart");
        let pool = connect(&url).await.unwrap();
        MIGRATOR.run(&pool).await.unwrap();
        pool.close().await;
        (
            PrivateServer {
                cluster,
                _directory: directory,
            },
            url,
        )
    }
}

#[tokio::test]
async fn a_database_restart_mid_sync_is_retried_and_the_projection_is_complete() {
    let repo_dir = tempfile::tempdir().unwrap();
    // One persona per commit: thousands of small commits keep the sync busy
    // long enough to restart the server under it.
    let shape = SyntheticRegistry {
        personas: 1_500,
        revisions: 3,
        personas_per_commit: 1,
    };
    shape.write_repository(repo_dir.path(), "main").unwrap();
    let reference = fresh().await;
    sync_once(&reference.pool, &SyncOptions::new(repo_dir.path(), "main"))
        .await
        .unwrap();
    let expected = digest(&reference.pool).await;

    let (mut server, url) = PrivateServer::start().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = spawn_sync(
        &["--once", "--repo", repo_dir.path().to_str().unwrap()],
        &url,
        Stdio::from(log.reopen().unwrap()),
    );
    // Restart once the first runs are committed, i.e. while it is mid-way.
    let pool = connect(&url).await.unwrap();
    eventually(&pool, "SELECT count(*) FROM sync_state", 1).await;
    pool.close().await;
    let restarted_at = Instant::now();
    let mut server = tokio::task::spawn_blocking(move || {
        server.cluster.stop().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        server.cluster.start().unwrap();
        server
    })
    .await
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let stderr = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.success(), "the sync did not survive the restart: {stderr}");
    assert!(
        stderr.contains("retrying"),
        "the sync finished before the restart ({:?} in), so nothing was tested: {stderr}",
        restarted_at.elapsed()
    );

    let pool = connect(&url).await.unwrap();
    assert_eq!(digest(&pool).await, expected);
    assert_eq!(orphan_rows(&pool).await, 0);
    pool.close().await;
    tokio::task::spawn_blocking(move || server.cluster.stop().unwrap())
        .await
        .unwrap();
}

/// A real PostgreSQL restart under a running `serve` (the server process
/// stopped and started, not a closed client pool): `/readyz` turns 503 and
/// back, nothing kept is served while change notifications cannot arrive,
/// LISTEN comes back, and a commit made during the outage appears.
#[tokio::test]
async fn serve_rides_out_a_postgresql_restart() {
    use common::server::{Server, http_get, wait_for};
    let repo = TestRepo::new();
    std::fs::set_permissions(
        repo.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.commit("add alice");
    let (server, url) = PrivateServer::start().await;
    let serve = Server::start_args(repo.path(), &["--sync"], &[("DATABASE_URL", url.as_str())]);
    let readiness = |serve: &Server| -> (u16, serde_json::Value) {
        let (status, body) = http_get(&serve.url("/readyz"));
        (status, serde_json::from_str(&body).unwrap_or_default())
    };
    let description = |serve: &Server| -> Option<String> {
        let (status, body) = http_get(&serve.url("/api/personas/alice"));
        (status == 200).then(|| {
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            answer["persona"]["description"].as_str().unwrap().to_string()
        })
    };
    wait_for("the first sync and LISTEN", Duration::from_secs(60), || {
        let (status, body) = readiness(&serve);
        status == 200 && body["listening"] == true && description(&serve).is_some()
    });
    // A version pinned by id takes the coalesced reads, on their own connections.
    let pinned = |serve: &Server| http_get(&serve.url(&format!("/api/personas/{ID_A}@1")));
    assert_eq!(pinned(&serve).0, 200, "{}", pinned(&serve).1);
    // Kept: the second read is answered from memory.
    let before = description(&serve).unwrap();
    assert_eq!(description(&serve).as_deref(), Some(before.as_str()));

    // The database goes away.
    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.cluster.stop().unwrap();
        server
    })
    .await
    .unwrap();
    wait_for("/readyz to say 503", Duration::from_secs(30), || {
        readiness(&serve).0 == 503
    });
    wait_for("kept answers to stop", Duration::from_secs(30), || {
        description(&serve).is_none()
    });
    // A commit made meanwhile; nothing is served as current while the server cannot hear of it.
    let path = "registry/personas/alice.toml";
    repo.write(
        path,
        &edit(&persona(ID_A, "Alice"), "A test persona.", "Written during the outage."),
    );
    repo.commit("alice, during the outage");
    for _ in 0..20 {
        let (status, body) = http_get(&serve.url("/api/personas/alice"));
        assert_ne!(status, 200, "a kept answer was served with the database down: {body}");
        assert!(body.contains("\"error\""), "{body}");
        let (status, body) = pinned(&serve);
        assert_eq!(status, 503, "a pinned read with the database down: {body}");
        assert!(body.contains("database"), "{body}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // It comes back on the same socket: ready, listening, and the commit is there.
    let server = tokio::task::spawn_blocking(move || {
        server.cluster.start().unwrap();
        server
    })
    .await
    .unwrap();
    wait_for(
        "/readyz to say 200 and LISTEN to resume",
        Duration::from_secs(60),
        || {
            let (status, body) = readiness(&serve);
            status == 200 && body["listening"] == true
        },
    );
    // The first pinned read after the restart answers, though the coalesced
    // reads' connections went away with the old server.
    let (status, body) = pinned(&serve);
    assert_eq!(status, 200, "the first pinned read after the restart: {body}");
    wait_for("the outage's commit to appear", Duration::from_secs(60), || {
        description(&serve).as_deref() == Some("Written during the outage.")
    });
    // Notifications flow again: a kept answer is dropped at the next commit.
    assert_eq!(description(&serve).as_deref(), Some("Written during the outage."));
    repo.write(
        path,
        &edit(&persona(ID_A, "Alice"), "A test persona.", "Written after the outage."),
    );
    repo.commit("alice, after the outage");
    wait_for("the next commit to appear", Duration::from_secs(30), || {
        description(&serve).as_deref() == Some("Written after the outage.")
    });
    drop(serve);
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.cluster.stop().unwrap()
    })
    .await
    .unwrap();
}

/// A catch-up is a burst: the walk state it grew is dropped (its small
/// allocations would pin the pages of the burst's garbage), and a follower
/// primes a fresh one at the tip right away, before a commit waits for it.
/// The next commit is then projected from that primed state.
#[tokio::test]
async fn a_follower_primes_a_fresh_walk_state_after_a_catch_up() {
    let repo_dir = tempfile::tempdir().unwrap();
    // 1,200 versions: over the 1,000 from which a sync is a burst.
    let shape = SyntheticRegistry {
        personas: 400,
        revisions: 3,
        personas_per_commit: 40,
    };
    shape.write_repository(repo_dir.path(), "main").unwrap();
    let TestDatabase { url, pool } = fresh().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_personas"))
        .args(["sync", "--no-vectors", "--watch", "--repo"])
        .arg(repo_dir.path())
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn,personas::sync=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .expect("personas runs");
    eventually(&pool, "SELECT count(*) FROM persona_versions", 1_200).await;
    let started = Instant::now();
    while !std::fs::read_to_string(log.path())
        .unwrap()
        .contains("walk primed at the cursor")
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the follower did not prime a walk state after the catch-up: {}",
            std::fs::read_to_string(log.path()).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let file = repo_dir.path().join("registry/personas/synthetic-7.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("Persona 7", "Persona seven")).unwrap();
    let status = Command::new("git")
        .args(["commit", "--quiet", "-am", "rename persona 7 in its description"])
        .current_dir(repo_dir.path())
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .status()
        .unwrap();
    assert!(status.success());
    eventually(&pool, "SELECT count(*) FROM persona_versions", 1_201).await;
    let id = SyntheticRegistry::persona_id(7);
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) FROM persona_versions WHERE persona_id = '{id}'")
        )
        .await,
        4,
        "the new version is persona 7's fourth"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM sync_errors").await, 0);
    let status = terminate(&mut child);
    assert!(status.success(), "sync --watch exited with {status} on SIGTERM");
}

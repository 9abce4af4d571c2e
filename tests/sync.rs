//! The PostgreSQL projection on a real server and real git repositories.

mod common;

use std::path::Path;

use common::db::{TestDatabase, count, digest, fresh, orphan_rows};
use common::*;
use personas::git::replay::Replay;
use personas::sync::{SyncError, SyncOptions, lock_key, sync_once};

fn options(repo: &Path, branch: &str) -> SyncOptions {
    SyncOptions::new(repo, branch)
}

#[tokio::test]
async fn every_version_is_projected_once_and_a_second_run_is_a_no_op() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;

    let summary = sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    let replay = Replay::of(repo.path(), "main").unwrap();
    let expected: usize = replay.personas.values().map(|history| history.versions.len()).sum();
    assert!(
        expected > replay.personas.len(),
        "the story has personas with several versions"
    );
    assert_eq!(summary.versions as usize, expected);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM persona_versions").await as usize,
        expected
    );
    for history in replay.personas.values() {
        let numbers: Vec<i32> =
            sqlx::query_scalar("SELECT version_no FROM persona_versions WHERE persona_id = $1 ORDER BY version_no")
                .bind(history.id.0)
                .fetch_all(&pool)
                .await
                .unwrap();
        let from_git: Vec<i32> = history.versions.iter().map(|v| v.number as i32).collect();
        assert_eq!(numbers, from_git);
    }
    // The full-text index holds each live persona's current version, and finds by belief words.
    let stale = count(
        &pool,
        "SELECT count(*) FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
         WHERE NOT p.deleted AND (p.search_vector <> persona_search_vector('english', v.document)
                                  OR p.exact_vector <> persona_search_vector('personas_exact', v.document))",
    )
    .await;
    assert_eq!(stale, 0);
    let emptied = count(
        &pool,
        "SELECT count(*) FROM personas WHERE deleted AND (search_vector <> ''::tsvector OR exact_vector <> ''::tsvector)",
    )
    .await;
    assert_eq!(emptied, 0, "a deleted persona is found by nothing");
    let live = count(&pool, "SELECT count(*) FROM personas WHERE NOT deleted").await;
    let found = count(
        &pool,
        "SELECT count(*) FROM personas WHERE search_vector @@ plainto_tsquery('english', 'optimizing')",
    )
    .await;
    assert!(live > 0 && found > 0 && found <= live, "{found} of {live}");
    let cursor: String = sqlx::query_scalar("SELECT last_commit FROM sync_state WHERE branch = 'main'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(&cursor, commits.last().unwrap());

    // Normalized rows of alice's second version match the file.
    let openness: f64 = sqlx::query_scalar(
        "SELECT t.value FROM persona_traits t JOIN persona_versions v ON v.id = t.version_id
         WHERE v.persona_id = $1 AND v.version_no = 2 AND t.trait_type = 'ocean' AND t.trait_name = 'openness'",
    )
    .bind(uuid::Uuid::parse_str(ID_A).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(openness, 0.95);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM persona_beliefs WHERE version_id = (SELECT min(id) FROM persona_versions)"
        )
        .await,
        2
    );

    let before = digest(&pool).await;
    let again = sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!((again.commits, again.versions), (0, 0));
    assert_eq!(digest(&pool).await, before);
}

#[tokio::test]
async fn renames_deletes_and_broken_files_are_projected_faithfully() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;

    // Up to 'break bob': bob's syntax error is recorded, bob keeps version 1.
    sync_once(&pool, &options(repo.path(), &commits[5])).await.unwrap();
    let errors: Vec<(String, i32, String)> = sqlx::query_as("SELECT path, line, code FROM sync_errors")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        errors,
        vec![("registry/personas/bob.toml".to_string(), 2, "syntax".to_string())]
    );
    let bob_current: i32 = sqlx::query_scalar(
        "SELECT v.version_no FROM personas p JOIN persona_versions v ON v.id = p.current_version_id WHERE p.id = $1",
    )
    .bind(uuid::Uuid::parse_str(ID_B).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bob_current, 1);

    // The rename keeps one persona with both slugs on record.
    let slugs: Vec<String> = sqlx::query_scalar("SELECT slug FROM persona_slugs WHERE persona_id = $1 ORDER BY slug")
        .bind(uuid::Uuid::parse_str(ID_A).unwrap())
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(slugs, vec!["alice", "alicia"]);

    // Fixing bob clears its error; deleting alicia marks it deleted, history intact.
    sync_once(&pool, &options(repo.path(), &commits[7])).await.unwrap();
    assert_eq!(count(&pool, "SELECT count(*) FROM sync_errors").await, 0);
    let (deleted, versions): (bool, i64) = sqlx::query_as(
        "SELECT p.deleted, (SELECT count(*) FROM persona_versions v WHERE v.persona_id = p.id) FROM personas p WHERE p.id = $1",
    )
    .bind(uuid::Uuid::parse_str(ID_A).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(deleted);
    assert_eq!(versions, 4);
    let outbox_ops: Vec<String> = sqlx::query_scalar("SELECT op FROM vector_outbox WHERE persona_id = $1 ORDER BY id")
        .bind(uuid::Uuid::parse_str(ID_A).unwrap())
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(outbox_ops.last().map(String::as_str), Some("delete"));
}

#[tokio::test]
async fn force_pushed_history_retracts_unreachable_versions() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    let versions_before = count(&pool, "SELECT count(*) FROM persona_versions").await;

    // Rewrite: drop everything after 'fix bob' and make a different change.
    repo.git(&["reset", "-q", "--hard", &commits[6]]);
    repo.write(
        "registry/personas/alicia.toml",
        &edit(&persona(ID_A, "Alice"), "wit = 0.5", "wit = 0.9"),
    );
    let new_tip = repo.commit("alicia: wittier, on the rewritten line");

    let summary = sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    assert!(summary.retracted > 0);
    assert_eq!(summary.commits, 1);
    // Nothing was deleted: old versions stay, marked retracted.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM persona_versions").await,
        versions_before + 1
    );
    let retracted: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT commit_sha FROM persona_versions WHERE retracted ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(!retracted.is_empty(), "no version is marked retracted");
    for commit in &retracted {
        assert!(!commits[..=6].contains(commit), "{commit} is still reachable");
    }
    // Alicia's deletion was retracted; the new version continues the numbering.
    let (deleted, version_no, commit): (bool, i32, String) = sqlx::query_as(
        "SELECT p.deleted, v.version_no, v.commit_sha FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
         WHERE p.id = $1",
    )
    .bind(uuid::Uuid::parse_str(ID_A).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!deleted);
    assert_eq!(version_no, 5, "v4 (the retracted deletion) keeps its number");
    assert_eq!(commit, new_tip);
    // Carol only ever existed on the discarded line: hidden, never deleted from history.
    let carol_deleted: bool = sqlx::query_scalar("SELECT deleted FROM personas WHERE id = $1")
        .bind(uuid::Uuid::parse_str(ID_C).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(carol_deleted);

    // A second sync after the rewrite changes nothing.
    let before = digest(&pool).await;
    sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!(digest(&pool).await, before);
    assert_eq!(orphan_rows(&pool).await, 0);
}

/// A catch-up writes the normalized rows on a second connection and commits
/// them just before the versions; if the versions then fail to commit, the
/// rows are left behind. Every sync removes such rows before it writes.
#[tokio::test]
async fn rows_of_versions_that_never_committed_are_removed_by_the_next_sync() {
    let repo = TestRepo::new();
    build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    let clean = digest(&pool).await;
    let rows_before = count(&pool, "SELECT count(*) FROM persona_traits").await;
    assert!(rows_before > 0, "the story's versions have traits");

    // What a run whose versions failed to commit leaves: rows under version
    // ids the sequence handed out, with no version.
    let mut connection = pool.acquire().await.unwrap();
    let unwritten: i64 = sqlx::query_scalar("SELECT nextval('persona_versions_id_seq')")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO persona_traits (version_id, trait_type, trait_name, value) VALUES ($1, 'ocean', 'openness', 0.5)",
        "INSERT INTO persona_beliefs (version_id, position, belief, source) VALUES ($1, 0, 'never committed', NULL)",
        "INSERT INTO persona_modes (version_id, mode, enabled) VALUES ($1, 'teaching', true)",
        "INSERT INTO persona_domains (version_id, position, domain) VALUES ($1, 0, 'physics')",
        "INSERT INTO persona_phrases (version_id, position, phrase) VALUES ($1, 0, 'never committed')",
        "INSERT INTO persona_config (version_id, humor_usage, emotional_style, language_style, voice_enabled, default_mode)
         VALUES ($1, 'low', 'reserved', 'concise', false, NULL)",
    ] {
        sqlx::query(statement)
            .bind(unwritten)
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    drop(connection);
    assert_eq!(orphan_rows(&pool).await, 6);

    // The next sync, with nothing to project, removes them and nothing else.
    let summary = sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!(summary.versions, 0);
    assert_eq!(orphan_rows(&pool).await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM persona_traits").await, rows_before);
    assert_eq!(digest(&pool).await, clean);
}

/// The links between personas, versions and slugs have no foreign keys (the
/// sync is their only writer): the check the sync tests run after each sync
/// must see every kind of broken link, a head on another persona's version
/// included, which no foreign key ever caught.
/// Versions projected before their answer text was stored (migration 0012)
/// get it from the next sync, byte for byte what a fresh sync stores; a
/// document that no longer parses as a persona is left without it, and does
/// not stop the others or the sync.
#[tokio::test]
async fn the_next_sync_stores_the_answer_text_of_versions_projected_without_it() {
    let repo = TestRepo::new();
    build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    let texts = || async {
        sqlx::query_as::<_, (i64, Option<String>)>("SELECT id, document_json FROM persona_versions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    let stored_by_the_sync = texts().await;
    let with_text = stored_by_the_sync.iter().filter(|(_, text)| text.is_some()).count();
    assert!(with_text > 3, "the story's versions have documents: {with_text}");

    sqlx::query("UPDATE persona_versions SET document_json = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let broken: i64 =
        sqlx::query_scalar("SELECT id FROM persona_versions WHERE document IS NOT NULL ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    sqlx::query(r#"UPDATE persona_versions SET document = '{"not": "a persona"}' WHERE id = $1"#)
        .bind(broken)
        .execute(&pool)
        .await
        .unwrap();
    let summary = sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!(summary.versions, 0, "nothing new to project");
    for ((id, before), (_, after)) in stored_by_the_sync.into_iter().zip(texts().await) {
        if id == broken {
            assert_eq!(after, None, "the broken document is left without text");
        } else {
            assert_eq!(after, before, "version {id}: the text a fresh sync stores");
        }
    }
}

#[tokio::test]
async fn the_link_check_sees_each_kind_of_broken_link() {
    let repo = TestRepo::new();
    build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;
    sync_once(&pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!(orphan_rows(&pool).await, 0);

    let breakages = [
        // A head on a version of another persona.
        "UPDATE personas SET current_version_id = (SELECT v.id FROM persona_versions v
             WHERE v.persona_id <> personas.id ORDER BY v.id LIMIT 1)
         WHERE id = (SELECT min(id::text)::uuid FROM personas)",
        // A slug whose first version does not exist.
        "UPDATE persona_slugs SET first_version_id = -1
         WHERE (slug, persona_id) = (SELECT slug, persona_id FROM persona_slugs ORDER BY slug LIMIT 1)",
        // A version whose persona does not exist.
        "UPDATE persona_versions SET persona_id = '00000000-0000-4000-8000-00000000dead'
         WHERE id = (SELECT max(id) FROM persona_versions)",
    ];
    let mut seen = 0;
    for statement in breakages {
        let changed = sqlx::query(statement).execute(&pool).await.unwrap().rows_affected();
        assert_eq!(changed, 1, "{statement}");
        let now = orphan_rows(&pool).await;
        assert!(now > seen, "the check missed: {statement}");
        seen = now;
    }
}

#[tokio::test]
async fn only_one_writer_at_a_time() {
    let repo = TestRepo::new();
    build_story(&repo);
    let TestDatabase { pool, .. } = fresh().await;
    let mut holder = pool.acquire().await.unwrap().detach();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key("main"))
        .execute(&mut holder)
        .await
        .unwrap();
    let refused = sync_once(&pool, &options(repo.path(), "main")).await;
    assert!(matches!(refused, Err(SyncError::Locked { .. })), "{refused:?}");
    assert_eq!(count(&pool, "SELECT count(*) FROM persona_versions").await, 0);

    let mut waiting = options(repo.path(), "main");
    waiting.wait_for_lock = true;
    let pool_for_waiter = pool.clone();
    let waiter = tokio::spawn(async move { sync_once(&pool_for_waiter, &waiting).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiting sync must block on the lock");
    use sqlx::Connection;
    holder.close().await.unwrap();
    let summary = waiter.await.unwrap().unwrap();
    assert!(summary.versions > 0);
}

#[tokio::test]
async fn killing_the_sync_at_random_points_loses_and_duplicates_nothing() {
    let repo = TestRepo::new();
    generate_history(&repo, 24, 240);
    let reference = fresh().await;
    sync_once(&reference.pool, &options(repo.path(), "main")).await.unwrap();
    let expected = digest(&reference.pool).await;

    let target = fresh().await;
    let binary = env!("CARGO_BIN_EXE_personas");
    let mut kills_mid_sync = 0;
    // Counted from the server's side: with the child stopped (SIGSTOP), a
    // backend of its with an open transaction that is not committing.
    let mut kills_inside_transactions = 0;
    // Delays spread over the sync's duration; deterministic so a failure reproduces.
    let delays_ms: Vec<u64> = (0..20).map(|trial| 20 + (trial * 37) % 400).collect();
    for delay in delays_ms {
        let mut child = std::process::Command::new(binary)
            .args(["sync", "--no-vectors", "--once", "--wait", "--branch", "main", "--repo"])
            .arg(repo.path())
            .env("DATABASE_URL", &target.url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        if child.try_wait().unwrap().is_none() {
            kills_mid_sync += 1;
            let pid = rustix::process::Pid::from_child(&child);
            rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = 'personas'
                   AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
                   AND NOT (state = 'active' AND query ILIKE 'COMMIT%')",
            )
            .fetch_one(&target.pool)
            .await
            .unwrap();
            kills_inside_transactions += i32::from(open > 0);
        }
        // SIGKILL: no chance to clean up (a stopped process dies too).
        let _ = child.kill();
        let _ = child.wait();
    }
    // Resume to the end and compare with the clean one-shot projection.
    sync_once(&target.pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!(digest(&target.pool).await, expected);
    assert_eq!(orphan_rows(&target.pool).await, 0);
    assert!(
        kills_mid_sync >= 5,
        "only {kills_mid_sync} kills landed mid-sync; the test did not exercise crashes"
    );
    assert!(
        kills_inside_transactions >= 3,
        "only {kills_inside_transactions} of {kills_mid_sync} kills landed inside a transaction"
    );
    common::server::report(&format!(
        "crash trials: {kills_mid_sync} of 20 kills mid-sync, {kills_inside_transactions} inside a transaction"
    ));
}

/// A process that follows a branch syncs once per commit, resuming each
/// walk from the state the last one left (instead of re-reading the whole
/// registry at the cursor). Commit by commit, through renames, a broken
/// file, its fix and a deletion, that must project exactly what one sync of
/// the whole history does.
#[tokio::test]
async fn syncing_commit_by_commit_from_the_kept_state_matches_one_full_sync() {
    let repo = TestRepo::new();
    let commits = build_story(&repo);
    let following = fresh().await;
    let options = options(repo.path(), "follow");
    for commit in &commits {
        repo.git(&["branch", "-f", "follow", commit]);
        sync_once(&following.pool, &options).await.unwrap();
        assert!(
            format!("{:?}", options.resume).contains(commit.as_str()),
            "the sync at {commit} kept no state to resume from: {:?}",
            options.resume
        );
    }
    let whole = fresh().await;
    sync_once(&whole.pool, &SyncOptions::new(repo.path(), "follow"))
        .await
        .unwrap();
    assert_eq!(digest(&following.pool).await, digest(&whole.pool).await);
}

/// A process that follows a branch reads the registry at the cursor on its
/// first sync even when there is nothing to project, so that its first
/// commit costs only its own changes; a one-off sync leaves no state. The
/// state primed that way must project the next commit as a full sync does.
#[tokio::test]
async fn a_following_process_primes_its_walk_even_when_up_to_date() {
    let repo = TestRepo::new();
    build_story(&repo);
    let tip = repo.git(&["rev-parse", "main"]);
    let database = fresh().await;
    sync_once(&database.pool, &options(repo.path(), "main")).await.unwrap();

    let one_off = options(repo.path(), "main");
    assert_eq!(sync_once(&database.pool, &one_off).await.unwrap().commits, 0);
    assert_eq!(format!("{:?}", one_off.resume), "ResumeCache(None)");

    let following = SyncOptions {
        keep_walk_primed: true,
        ..options(repo.path(), "main")
    };
    assert_eq!(sync_once(&database.pool, &following).await.unwrap().commits, 0);
    assert!(
        format!("{:?}", following.resume).contains(tip.as_str()),
        "nothing primed at {tip}: {:?}",
        following.resume
    );

    // The Critic mode back (the story's last commit dropped it, which broke
    // the personas that use it), and Bob changed besides.
    repo.write("registry/registry.toml", SETTINGS);
    repo.write(
        "registry/personas/bob.toml",
        &edit(&persona(ID_B, "Bob"), "openness = 0.9", "openness = 0.5"),
    );
    let next = repo.commit("the Critic mode back; bob: less open");
    let summary = sync_once(&database.pool, &following).await.unwrap();
    assert_eq!(summary.commits, 1);
    assert!(summary.versions > 0, "{summary}");
    assert!(format!("{:?}", following.resume).contains(next.as_str()));
    let whole = fresh().await;
    sync_once(&whole.pool, &options(repo.path(), "main")).await.unwrap();
    assert_eq!(digest(&database.pool).await, digest(&whole.pool).await);
}

/// A one-off sync after a commit primes its walk at the cursor from the file
/// readings an earlier run saved, instead of reading and validating every
/// file there again: it must not read the blobs of unchanged files at all
/// (here they are deleted from the object store), and must project the
/// commit exactly as a full sync does, broken file included.
#[tokio::test]
async fn a_one_off_sync_primes_from_saved_readings_without_reading_unchanged_files() {
    let repo = TestRepo::new();
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    repo.write("registry/personas/carol.toml", &persona(ID_C, "Carol"));
    repo.write("registry/personas/broken.toml", "schema = 1\nname = [\n");
    repo.commit("alice, bob, carol and a broken file");
    let saved = tempfile::tempdir().unwrap();
    let readings = saved.path().join("readings.json");
    let one_off = || SyncOptions {
        readings_file: Some(readings.clone()),
        ..options(repo.path(), "main")
    };
    let database = fresh().await;
    sync_once(&database.pool, &one_off()).await.unwrap();
    assert!(readings.is_file(), "the sync saved no readings");

    repo.write(
        "registry/personas/bob.toml",
        &edit(&persona(ID_B, "Bob"), "openness = 0.9", "openness = 0.5"),
    );
    repo.commit("bob: less open");
    let whole = fresh().await;
    sync_once(&whole.pool, &options(repo.path(), "main")).await.unwrap();

    // The unchanged files' contents are gone: only their saved readings remain.
    for file in ["carol.toml", "broken.toml"] {
        let blob = repo.git(&["rev-parse", &format!("main:registry/personas/{file}")]);
        let object = repo.path().join(".git/objects").join(&blob[..2]).join(&blob[2..]);
        assert!(
            object.is_file(),
            "{file}'s blob is not a loose object at {}",
            object.display()
        );
        std::fs::remove_file(&object).unwrap();
    }
    let summary = sync_once(&database.pool, &one_off()).await.unwrap();
    assert_eq!((summary.commits, summary.versions), (1, 1), "{summary}");
    assert_eq!(digest(&database.pool).await, digest(&whole.pool).await);
    let broken: Vec<String> = sqlx::query_scalar("SELECT path FROM sync_errors")
        .fetch_all(&database.pool)
        .await
        .unwrap();
    assert_eq!(broken, vec!["registry/personas/broken.toml".to_string()]);
}

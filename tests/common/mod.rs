//! Helpers shared by the integration tests: fixture personas and real git
//! repositories built in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub mod app;
pub mod qdrant;
pub mod server;

pub const SETTINGS: &str = r#"schema = 1
title = "Test registry"
modes = ["Educator", "Critic", "Debater", "Mentor"]

[policy]
require_sources_for_real = true
protected = []
"#;

/// A valid persona file. Line numbers matter to the validation tests, which
/// break one line at a time and locate the expected error by searching the text.
pub fn persona(id: &str, name: &str) -> String {
    format!(
        r#"schema = 1
id = "{id}"
name = "{name}"
description = "A test persona."
domains = ["testing", "physics"]
is_real = true
birth_date = 1900-01-01
signature_phrases = ["Test everything."]
default_mode = "Educator"

[traits.ocean]
openness = 0.9
conscientiousness = 0.7
extraversion = 0.3
agreeableness = 0.6
neuroticism = 0.2

[traits.humor]
wit = 0.5

[[beliefs]]
text = "Tests should fail when the code is wrong."
source = "https://en.wikipedia.org/wiki/Software_testing"

[[beliefs]]
text = "Measure before optimizing."
source = "isbn:0-201-83595-9"

[modes]
Educator = true
Critic = true
Debater = false

[config]
humor_usage = "low"
emotional_style = "reserved"
language_style = "concise"
voice_enabled = false
"#
    )
}

pub const ID_A: &str = "11111111-1111-4111-8111-111111111111";
pub const ID_B: &str = "22222222-2222-4222-8222-222222222222";
pub const ID_C: &str = "33333333-3333-4333-8333-333333333333";

/// Headless Chromium with a throwaway profile, for page checks in a real browser.
pub fn chromium(profile: &Path) -> Command {
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .expect("Chromium is not installed: `apt-get install chromium` (scripts/test installs it)");
    let mut command = Command::new(binary);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
    command
}

/// Replaces the first occurrence of `from` with `to`, failing loudly if absent
/// so a fixture edit can never silently do nothing.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture does not contain {from:?}");
    text.replacen(from, to, 1)
}

/// 1-based line and column of the first occurrence of `needle`.
pub fn locate(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in fixture"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A registry directory on disk.
pub struct RegistryDir {
    pub dir: TempDir,
}

impl RegistryDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("personas")).unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        std::fs::write(dir.path().join("registry.toml"), SETTINGS).unwrap();
        RegistryDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A real git repository, driven by the git CLI with all user and system
/// configuration shut out, and with fixed identities and dates so ids repeat.
pub struct TestRepo {
    pub dir: TempDir,
    clock: std::cell::Cell<i64>,
}

impl TestRepo {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let repo = TestRepo {
            dir,
            clock: std::cell::Cell::new(1_700_000_000),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write("registry/registry.toml", SETTINGS);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        let time = self.clock.get();
        self.clock.set(time + 60);
        let date = format!("{time} +0000");
        let output = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Ada Author")
            .env("GIT_AUTHOR_EMAIL", "ada@example.org")
            .env("GIT_COMMITTER_NAME", "Reg Bot")
            .env("GIT_COMMITTER_EMAIL", "bot@example.org")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn remove(&self, relative: &str) {
        std::fs::remove_file(self.path().join(relative)).unwrap();
    }

    /// Stages everything and commits; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }
}

/// Runs the built `personas` binary; returns (exit code, stdout, stderr).
pub fn personas(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_personas"))
        .args(args)
        .current_dir(cwd)
        // Each run's own embedded index: the shared server's collections are for the tests that ask for them.
        .env_remove("QDRANT_URL")
        .output()
        .expect("personas runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A history exercising every kind of change; the history and sync tests read it back.
/// Returns the main-line commit ids in order.
pub fn build_story(repo: &TestRepo) -> Vec<String> {
    let mut commits = Vec::new();
    repo.write("registry/personas/alice.toml", &persona(ID_A, "Alice"));
    repo.write("registry/personas/bob.toml", &persona(ID_B, "Bob"));
    commits.push(repo.commit("add alice and bob")); // 0
    repo.write(
        "registry/personas/alice.toml",
        &edit(&persona(ID_A, "Alice"), "openness = 0.9", "openness = 0.95"),
    );
    commits.push(repo.commit("alice: more open")); // 1
    let reformatted = format!(
        "# Bob, reformatted\n{}",
        persona(ID_B, "Bob").replace(" = ", "   =   ").replace("0.9", "0.90")
    );
    repo.write("registry/personas/bob.toml", &reformatted);
    commits.push(repo.commit("bob: reformat only")); // 2
    repo.write("README.md", "not part of the registry\n");
    commits.push(repo.commit("docs only")); // 3
    repo.git(&["mv", "registry/personas/alice.toml", "registry/personas/alicia.toml"]);
    commits.push(repo.commit("rename alice to alicia")); // 4
    repo.write("registry/personas/bob.toml", "schema = 1\nname = [\n");
    commits.push(repo.commit("break bob")); // 5
    repo.write(
        "registry/personas/bob.toml",
        &edit(&persona(ID_B, "Bob"), "humor_usage = \"low\"", "humor_usage = \"high\""),
    );
    commits.push(repo.commit("fix bob, funnier")); // 6
    repo.remove("registry/personas/alicia.toml");
    commits.push(repo.commit("delete alicia")); // 7
    repo.git(&["checkout", "-q", "-b", "side"]);
    repo.write("registry/personas/carol.toml", &persona(ID_C, "Carol"));
    repo.commit("side: add carol");
    repo.write(
        "registry/personas/carol.toml",
        &edit(&persona(ID_C, "Carol"), "wit = 0.5", "wit = 0.6"),
    );
    repo.commit("side: carol wittier");
    repo.git(&["checkout", "-q", "main"]);
    repo.write(
        "registry/personas/bob.toml",
        &edit(
            &persona(ID_B, "Bob"),
            "humor_usage = \"low\"",
            "humor_usage = \"medium\"",
        ),
    );
    repo.commit("bob: medium humor");
    repo.git(&["merge", "-q", "--no-ff", "-m", "merge side", "side"]);
    commits.push(repo.git(&["rev-parse", "HEAD"])); // 8 (the merge; 'bob: medium humor' sits before it)
    repo.write("registry/personas/bob-copy.toml", &persona(ID_B, "Bob copy"));
    commits.push(repo.commit("copy bob (same id)")); // 9
    repo.remove("registry/personas/bob-copy.toml");
    repo.write("registry/registry.toml", &SETTINGS.replace("\"Critic\", ", ""));
    commits.push(repo.commit("drop the Critic mode")); // 10
    commits
}

/// A repository whose one commit holds this project's sample registry.
pub fn sample_repository() -> TestRepo {
    let repo = TestRepo::new();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry");
    for entry in files_under(&source) {
        let relative = entry.strip_prefix(&source).unwrap();
        let text = std::fs::read_to_string(&entry).unwrap();
        repo.write(&format!("registry/{}", relative.display()), &text);
    }
    repo.commit("the sample registry");
    repo
}

fn files_under(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

pub mod db {
    //! A real PostgreSQL for tests: `DATABASE_URL` if set, otherwise one
    //! managed cluster shared by all test binaries of a run. Each test gets a
    //! fresh database copied from a migrated template.

    use std::path::PathBuf;

    use personas::store::local_pg::LocalCluster;
    use personas::store::pool::{MIGRATOR, connect, ensure_database};
    use sqlx::PgPool;

    static TEMPLATE: tokio::sync::Mutex<Option<String>> = tokio::sync::Mutex::const_new(None);

    /// Under the system temp dir, not the target dir: when tests run as root
    /// the server runs as `postgres`, which must be able to reach it.
    pub fn cluster_dir() -> PathBuf {
        std::env::temp_dir().join("personas-test-postgres")
    }

    /// URL of the server's maintenance database, with `{db}` left for the database name.
    fn server_url() -> String {
        match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let (base, query) = url.split_once('?').map_or((url.as_str(), ""), |(b, q)| (b, q));
                let base = base.rsplit_once('/').map_or(base, |(server, _)| server);
                if query.is_empty() {
                    format!("{base}/{{db}}")
                } else {
                    format!("{base}/{{db}}?{query}")
                }
            }
            Err(_) => {
                // Threads of this binary and other test binaries may get here at once.
                static STARTED: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
                let mut started = STARTED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(url) = started.as_ref() {
                    return url.clone();
                }
                let lock = std::fs::File::create(std::env::temp_dir().join("personas-test-postgres.lock")).unwrap();
                lock.lock().unwrap();
                let directory = cluster_dir();
                std::fs::create_dir_all(&directory).unwrap();
                // The temp dir itself is world-traversable; make ours so too.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o755)).unwrap();
                let mut cluster = LocalCluster::new(&directory).expect("PostgreSQL binaries");
                cluster.start().expect("test cluster starts");
                let url = cluster.url("{db}");
                *started = Some(url.clone());
                url
            }
        }
    }

    pub struct TestDatabase {
        pub url: String,
        pub pool: PgPool,
    }

    /// A fresh, migrated database of its own.
    pub async fn fresh() -> TestDatabase {
        let server = tokio::task::spawn_blocking(server_url).await.unwrap();
        let template = {
            let mut guard = TEMPLATE.lock().await;
            if guard.is_none() {
                *guard = Some(create_template(&server).await);
            }
            guard.clone().unwrap()
        };
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let maintenance = connect(&server.replace("{db}", "postgres")).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .execute(&maintenance)
            .await
            .unwrap();
        maintenance.close().await;
        let url = server.replace("{db}", &name);
        let pool = connect(&url).await.unwrap();
        TestDatabase { url, pool }
    }

    /// The template is named after the migrations it holds, so a changed
    /// migration never meets a stale template left by an earlier run.
    async fn create_template(server: &str) -> String {
        let mut fingerprint: u64 = 0xcbf29ce484222325;
        for migration in MIGRATOR.iter() {
            for byte in migration.checksum.iter() {
                fingerprint ^= u64::from(*byte);
                fingerprint = fingerprint.wrapping_mul(0x100000001b3);
            }
        }
        let name = format!("template_{fingerprint:016x}");
        let maintenance = connect(&server.replace("{db}", "postgres")).await.unwrap();
        // Test binaries may run at once: one of them builds the template.
        sqlx::query("SELECT pg_advisory_lock(4242)")
            .execute(&maintenance)
            .await
            .unwrap();
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&maintenance)
            .await
            .unwrap();
        if !exists {
            let building = format!("{name}_building");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {building}"))
                .execute(&maintenance)
                .await
                .unwrap();
            ensure_database(&server.replace("{db}", "postgres"), &building)
                .await
                .unwrap();
            let pool = connect(&server.replace("{db}", &building)).await.unwrap();
            MIGRATOR.run(&pool).await.unwrap();
            pool.close().await;
            sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                .execute(&maintenance)
                .await
                .unwrap();
        }
        sqlx::query("SELECT pg_advisory_unlock(4242)")
            .execute(&maintenance)
            .await
            .unwrap();
        maintenance.close().await;
        name
    }

    /// Rows that point at a version or persona that does not exist, or at
    /// another persona's version: must always be zero (the projection relies
    /// on its single writer rather than foreign keys; see migrations 0002
    /// and 0011).
    pub async fn orphan_rows(pool: &PgPool) -> i64 {
        count(
            pool,
            "SELECT (SELECT count(*) FROM persona_traits t WHERE NOT EXISTS (SELECT 1 FROM persona_versions v WHERE v.id = t.version_id))
                  + (SELECT count(*) FROM persona_beliefs t WHERE NOT EXISTS (SELECT 1 FROM persona_versions v WHERE v.id = t.version_id))
                  + (SELECT count(*) FROM persona_modes t WHERE NOT EXISTS (SELECT 1 FROM persona_versions v WHERE v.id = t.version_id))
                  + (SELECT count(*) FROM persona_config t WHERE NOT EXISTS (SELECT 1 FROM persona_versions v WHERE v.id = t.version_id))
                  + (SELECT count(*) FROM persona_domains t WHERE NOT EXISTS (SELECT 1 FROM persona_versions v WHERE v.id = t.version_id))
                  + (SELECT count(*) FROM persona_phrases t WHERE NOT EXISTS (SELECT 1 FROM persona_versions v WHERE v.id = t.version_id))
                  + (SELECT count(*) FROM persona_versions v WHERE NOT EXISTS (SELECT 1 FROM personas p WHERE p.id = v.persona_id))
                  + (SELECT count(*) FROM personas p WHERE p.current_version_id IS NOT NULL AND NOT EXISTS
                        (SELECT 1 FROM persona_versions v WHERE v.id = p.current_version_id AND v.persona_id = p.id))
                  + (SELECT count(*) FROM persona_slugs s WHERE NOT EXISTS
                        (SELECT 1 FROM persona_versions v WHERE v.id = s.first_version_id AND v.persona_id = s.persona_id))",
        )
        .await
    }

    /// A digest of everything the projection holds, for comparing two
    /// databases: every value of every table, not only how many rows.
    pub async fn digest(pool: &PgPool) -> String {
        sqlx::query_scalar(
            "SELECT md5(concat_ws('|',
                (SELECT string_agg(concat_ws(',', persona_id, version_no, commit_sha, change_kind, slug, path,
                                             content_hash, retracted, md5(document::text)), ';'
                                   ORDER BY persona_id, version_no) FROM persona_versions),
                (SELECT string_agg(concat_ws(',', p.id, p.slug, p.deleted, p.created_at, v.version_no), ';' ORDER BY p.id)
                   FROM personas p LEFT JOIN persona_versions v ON v.id = p.current_version_id),
                (SELECT string_agg(concat_ws(',', commit_sha, path, line, col, code), ';'
                                   ORDER BY path, line, col, code) FROM sync_errors),
                (SELECT string_agg(concat_ws(',', branch, last_commit), ';') FROM sync_state),
                -- The normalized tables by value, keyed by persona and version
                -- (their version_id is a sequence number local to one database).
                (SELECT md5(string_agg(concat_ws(',', v.persona_id, v.version_no, t.trait_type, t.trait_name, t.value), ';'
                                   ORDER BY v.persona_id, v.version_no, t.trait_type, t.trait_name))
                   FROM persona_traits t JOIN persona_versions v ON v.id = t.version_id),
                (SELECT md5(string_agg(concat_ws(',', v.persona_id, v.version_no, t.position, md5(t.belief), coalesce(t.source, '<none>')), ';'
                                   ORDER BY v.persona_id, v.version_no, t.position))
                   FROM persona_beliefs t JOIN persona_versions v ON v.id = t.version_id),
                (SELECT md5(string_agg(concat_ws(',', v.persona_id, v.version_no, t.mode, t.enabled), ';'
                                   ORDER BY v.persona_id, v.version_no, t.mode))
                   FROM persona_modes t JOIN persona_versions v ON v.id = t.version_id),
                (SELECT md5(string_agg(concat_ws(',', v.persona_id, v.version_no, t.humor_usage, t.emotional_style, t.language_style, t.voice_enabled, coalesce(t.default_mode, '<none>')), ';'
                                   ORDER BY v.persona_id, v.version_no))
                   FROM persona_config t JOIN persona_versions v ON v.id = t.version_id),
                (SELECT md5(string_agg(concat_ws(',', v.persona_id, v.version_no, t.position, t.domain), ';'
                                   ORDER BY v.persona_id, v.version_no, t.position))
                   FROM persona_domains t JOIN persona_versions v ON v.id = t.version_id),
                (SELECT md5(string_agg(concat_ws(',', v.persona_id, v.version_no, t.position, md5(t.phrase)), ';'
                                   ORDER BY v.persona_id, v.version_no, t.position))
                   FROM persona_phrases t JOIN persona_versions v ON v.id = t.version_id),
                (SELECT count(*) FROM persona_slugs), (SELECT count(*) FROM vector_outbox),
            (SELECT string_agg(concat_ws(',', id, md5(search_vector::text), md5(exact_vector::text)), ';' ORDER BY id) FROM personas),
                (SELECT string_agg(concat_ws(',', o.persona_id, v.version_no, o.op), ';' ORDER BY o.id)
               FROM vector_outbox o LEFT JOIN persona_versions v ON v.id = o.version_id)))",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    }

    pub async fn count(pool: &PgPool, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }
}

/// Writes a synthetic history with `git fast-import`: `personas` personas,
/// then `commits` commits each modifying one or two of them (and sometimes
/// breaking one file for a commit), so a sync has hundreds of commits to do.
pub fn generate_history(repo: &TestRepo, personas_count: usize, commits: usize) {
    let id = |n: usize| format!("{:08x}-0000-4000-8000-{:012x}", n + 1, n + 1);
    let mut history = personas::synthetic::FastImport::new("main", "Gen <gen@example.org>");
    let time = |step: usize| 1_700_000_000 + step as u64 * 60;
    let mut initial = vec![("registry/registry.toml".to_string(), SETTINGS.to_string())];
    for n in 0..personas_count {
        initial.push((
            format!("registry/personas/p{n}.toml"),
            persona(&id(n), &format!("Persona {n}")),
        ));
    }
    history.commit("initial registry", &initial, time(0));
    for step in 1..=commits {
        let n = (step * 7) % personas_count;
        let value = format!("openness = 0.{:02}", step % 100);
        let mut files = vec![(
            format!("registry/personas/p{n}.toml"),
            edit(&persona(&id(n), &format!("Persona {n}")), "openness = 0.9", &value),
        )];
        if step % 3 == 0 {
            let other = (step * 13 + 1) % personas_count;
            files.push((
                format!("registry/personas/p{other}.toml"),
                edit(
                    &persona(&id(other), &format!("Persona {other}")),
                    "wit = 0.5",
                    &format!("wit = 0.{:02}", step % 97),
                ),
            ));
        }
        if step % 17 == 0 {
            files.push((
                format!("registry/personas/p{}.toml", (n + 1) % personas_count),
                "schema = [\n".to_string(),
            ));
        }
        history.commit(&format!("change {step}"), &files, time(step));
    }
    history.import_into(repo.path()).expect("git fast-import");
}

/// The current versions in `pool` embedded with the real model into a fresh
/// qdrant-edge index (kept in the returned directory), the outbox drained.
pub async fn indexed_on_edge(
    pool: &sqlx::PgPool,
    embedder: &std::sync::Arc<personas::vectors::embed::Embedder>,
) -> (TempDir, std::sync::Arc<personas::vectors::setup::AnyIndex>) {
    use personas::vectors::setup::AnyIndex;
    use std::sync::Arc;
    let directory = tempfile::tempdir().unwrap();
    let index = Arc::new(AnyIndex::Edge(
        personas::vectors::edge::EdgeIndex::open(&directory.path().join("vectors"), embedder.dimension())
            .await
            .unwrap(),
    ));
    personas::vectors::projector::VectorProjector::new(pool.clone(), Arc::clone(&index), Arc::clone(embedder))
        .drain()
        .await
        .unwrap();
    (directory, index)
}

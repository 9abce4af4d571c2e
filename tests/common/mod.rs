//! Helpers shared by the integration tests: fixture personas and real git
//! repositories built in a temporary directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

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
        .output()
        .expect("personas runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

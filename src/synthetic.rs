//! Synthetic registries for benchmarks and load tests: N personas, each
//! revised R times, in commits that touch a few personas each, written into a
//! real git repository with `git fast-import`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// The shape of a generated history.
#[derive(Debug, Clone, Copy)]
pub struct SyntheticRegistry {
    pub personas: usize,
    /// Versions per persona, the first (its addition) included.
    pub revisions: usize,
    /// How many personas one commit adds or edits.
    pub personas_per_commit: usize,
}

const DOMAINS: [&str; 12] = [
    "physics",
    "mathematics",
    "philosophy",
    "music",
    "literature",
    "politics",
    "economics",
    "biology",
    "chemistry",
    "art",
    "history",
    "engineering",
];

/// The registry settings every synthetic history starts with.
pub const SETTINGS: &str = r#"schema = 1
title = "Synthetic registry"
modes = ["Educator", "Critic", "Debater", "Mentor"]

[policy]
require_sources_for_real = true
protected = []
"#;

impl SyntheticRegistry {
    /// How many commits the history will have (settings commit included).
    pub fn commit_count(&self) -> usize {
        let per_commit = self.personas_per_commit.max(1);
        1 + (self.personas * self.revisions).div_ceil(per_commit)
    }

    /// The id of persona `n`: deterministic, so runs are comparable.
    pub fn persona_id(n: usize) -> String {
        format!("{:08x}-0000-4000-8000-{:012x}", n + 1, n + 1)
    }

    /// The file text of persona `n` at revision `revision` (0 = as added).
    /// Each revision changes a trait value, and every third one also a belief
    /// and the description, like real edits do.
    pub fn persona_text(n: usize, revision: usize) -> String {
        // A cheap deterministic mix so values differ between personas and revisions.
        let mix = |salt: usize| ((n.wrapping_mul(2654435761) ^ salt.wrapping_mul(40503)) % 89 + 5) as f64 / 100.0;
        let domain_a = DOMAINS[n % DOMAINS.len()];
        // An offset of 1..=11 places: never the same domain twice.
        let domain_b = DOMAINS[(n + 1 + (n / DOMAINS.len()) % (DOMAINS.len() - 1)) % DOMAINS.len()];
        let belief_edit = revision / 3;
        let mut text = String::with_capacity(2048);
        let _ = write!(
            text,
            r#"schema = 1
id = "{id}"
name = "Synthetic Persona {n}"
slug = "synthetic-{n}"
description = "A generated persona number {n} working in {domain_a} and {domain_b}; description revision {belief_edit}."
domains = ["{domain_a}", "{domain_b}"]
is_real = false
signature_phrases = ["Phrase {n} one.", "Phrase {n} two."]
default_mode = "{mode}"

[traits.ocean]
openness = {openness:.2}
conscientiousness = {conscientiousness:.2}
extraversion = {extraversion:.2}
agreeableness = {agreeableness:.2}
neuroticism = {neuroticism:.2}

[traits.humor]
wit = {wit:.2}
irony = {irony:.2}

[[beliefs]]
text = "Belief one of persona {n}, as revised {belief_edit} times."
source = "https://example.org/sources/{n}/1"

[[beliefs]]
text = "Belief two of persona {n}: {domain_a} and {domain_b} inform each other."
source = "https://example.org/sources/{n}/2"

[[beliefs]]
text = "Belief three of persona {n}."

[modes]
Educator = true
Critic = {critic}
Debater = {debater}
Mentor = true

[config]
humor_usage = "{humor}"
emotional_style = "{emotion}"
language_style = "concise"
voice_enabled = {voice}
"#,
            id = Self::persona_id(n),
            // Only modes every persona enables can be its default.
            mode = ["Educator", "Mentor"][n % 2],
            openness = mix(1 + revision * 7),
            conscientiousness = mix(2),
            extraversion = mix(3),
            agreeableness = mix(4),
            neuroticism = mix(5),
            wit = mix(6 + revision),
            // Distinct for every revision below 90, so each one is a real change.
            irony = (revision % 90 + 5) as f64 / 100.0,
            critic = n.is_multiple_of(2),
            debater = n.is_multiple_of(3),
            humor = ["low", "medium", "high"][n % 3],
            emotion = ["reserved", "expressive"][n % 2],
            voice = n.is_multiple_of(5),
        );
        text
    }

    /// The whole history as a `git fast-import` stream on `branch`.
    /// Revision r of every persona lands before revision r + 1 of any, so the
    /// history reads like a registry growing and then being edited.
    pub fn history(&self, branch: &str) -> FastImport {
        let per_commit = self.personas_per_commit.max(1);
        let mut import = FastImport::new(branch, "Synthetic <synthetic@example.org>");
        let mut time = 1_700_000_000;
        let mut tick = || {
            time += 60;
            time
        };
        import.commit(
            "registry settings",
            &[("registry/registry.toml".to_string(), SETTINGS.to_string())],
            tick(),
        );
        let edits = (0..self.revisions).flat_map(|revision| (0..self.personas).map(move |n| (n, revision)));
        let edits: Vec<(usize, usize)> = edits.collect();
        for chunk in edits.chunks(per_commit) {
            let files: Vec<(String, String)> = chunk
                .iter()
                .map(|&(n, revision)| {
                    (
                        format!("registry/personas/synthetic-{n}.toml"),
                        Self::persona_text(n, revision),
                    )
                })
                .collect();
            let (first, revision) = chunk[0];
            let verb = if revision == 0 { "add" } else { "revise" };
            import.commit(&format!("{verb} personas from {first}"), &files, tick());
        }
        import
    }

    /// Creates a git repository at `directory` holding the history on `branch`.
    pub fn write_repository(&self, directory: &Path, branch: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(directory)?;
        run_git(directory, &["init", "--quiet", "--initial-branch", branch], None)?;
        self.history(branch).import_into(directory)?;
        run_git(directory, &["reset", "--quiet", "--hard", branch], None)
    }
}

/// A linear history on one branch, as a `git fast-import` stream: the fastest
/// honest way to make thousands of real commits.
#[derive(Debug, Clone)]
pub struct FastImport {
    branch: String,
    /// `Name <email>`, used as author and committer.
    identity: String,
    stream: String,
    commits: usize,
}

impl FastImport {
    pub fn new(branch: &str, identity: &str) -> FastImport {
        FastImport {
            branch: branch.to_string(),
            identity: identity.to_string(),
            stream: String::new(),
            commits: 0,
        }
    }

    /// Appends a commit at `time` (seconds since the epoch, UTC) that writes
    /// `files` (path, content) on top of the previous one.
    pub fn commit(&mut self, message: &str, files: &[(String, String)], time: u64) {
        self.commits += 1;
        let mark = self.commits;
        let (branch, identity, stream) = (&self.branch, &self.identity, &mut self.stream);
        let _ = writeln!(stream, "commit refs/heads/{branch}\nmark :{mark}");
        let _ = writeln!(stream, "author {identity} {time} +0000");
        let _ = writeln!(stream, "committer {identity} {time} +0000");
        let _ = writeln!(stream, "data {}\n{message}", message.len());
        if mark > 1 {
            let _ = writeln!(stream, "from :{}", mark - 1);
        }
        for (path, text) in files {
            let _ = writeln!(stream, "M 100644 inline {path}\ndata {}\n{text}", text.len());
        }
    }

    /// Imports the history into the existing repository at `directory`.
    pub fn import_into(&self, directory: &Path) -> std::io::Result<()> {
        run_git(
            directory,
            &["fast-import", "--quiet", "--force"],
            Some(self.stream.as_bytes()),
        )
    }
}

/// Runs git with the user's and system's configuration shut out, so the result
/// does not depend on the machine.
fn run_git(directory: &Path, arguments: &[&str], input: Option<&[u8]>) -> std::io::Result<()> {
    let mut child = Command::new("git")
        .args(arguments)
        .current_dir(directory)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .spawn()?;
    if let Some(input) = input {
        child.stdin.take().expect("stdin was piped").write_all(input)?;
    }
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "git {} failed: {status}",
            arguments.join(" ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::validate::validate_persona;

    #[test]
    fn every_generated_revision_is_a_valid_distinct_persona() {
        let (settings, problems) = crate::persona::settings::parse_settings("registry.toml", SETTINGS.as_bytes());
        assert!(problems.is_empty(), "{problems:?}");
        let mut seen = std::collections::HashSet::new();
        for revision in 0..4 {
            for n in [0, 1, 5, 17, 143, 9_999] {
                let text = SyntheticRegistry::persona_text(n, revision);
                let stem = format!("synthetic-{n}");
                let parsed = validate_persona(&format!("{stem}.toml"), text.as_bytes(), &stem, &settings);
                assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
                assert!(seen.insert(text), "revision {revision} of {n} repeats an earlier one");
            }
        }
    }
}

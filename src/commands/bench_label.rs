//! `personas bench label`: a label move committed to the registry until
//! every replica answers the new version at `@production`. One writer
//! (`serve`, syncing in-process into its managed PostgreSQL) and N replicas
//! (`serve --no-sync` on that same database) run from this process. Before
//! each commit every replica has answered the old version (so it keeps that
//! answer); the time is taken when the last replica answers the new one.
//!
//! The reference, measured on the same servers in the same run: a new
//! version committed the same way (a persona file edited, `git commit`)
//! until every replica answers it as current. Both reach the replicas by
//! one path (the writer's sync, its NOTIFY, each replica dropping its kept
//! answers); a label move adds the labels file's projection. A third line
//! moves the label through `PUT …/labels/production` on the writer.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bench::{bench_root, prepare_repository};
use super::bench_http::{Running, caught_up, free_port, start_server, start_server_with, terminate, wait_until};
use super::bench_write::{distinct_value, git, percentiles, replace_trait};
use super::http_probe::request;
use crate::access::{TokenHash, generate_token};
use crate::cli::Outcome;
use crate::store::local_pg::{DATABASE, LocalCluster};
use crate::synthetic::SyntheticRegistry;

pub struct LabelBench<'a> {
    pub shape: SyntheticRegistry,
    /// Keep (and reuse) the repository and database here; the bench adds commits to it.
    pub keep: Option<&'a Path>,
    /// Moves made each way, one after another.
    pub rounds: usize,
    /// Replicas reading the writer's database.
    pub replicas: usize,
}

const LABEL: &str = "production";
const LABELS_FILE: &str = "registry/labels.toml";
/// How long one change may take to reach every replica before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(60);

pub fn label(bench: LabelBench<'_>) -> anyhow::Result<Outcome> {
    if bench.shape.revisions < 2 || bench.shape.personas == 0 {
        bail!("the bench moves a label between versions 1 and 2: it needs --revisions 2 or more");
    }
    if bench.replicas == 0 || bench.rounds == 0 {
        bail!("the bench needs at least one replica and one round");
    }
    let (temporary, root) = bench_root(bench.keep)?;
    let repository = prepare_repository(&bench.shape, Some(&root), temporary.path())?;
    let pointers = label_every_persona(&repository, bench.shape.personas)?;

    let token = generate_token().context("making a token")?;
    let tokens = format!("editor {} Bench Editor <bench@personas.invalid>", TokenHash::of(&token));
    let writer_data = root.join("data");
    let writer_port = free_port()?;
    eprintln!(
        "starting the writer (first run: sync {} personas)…",
        bench.shape.personas
    );
    let writer = start_server(&repository, &writer_data, writer_port, &[("PERSONAS_TOKENS", tokens)])?;
    wait_until("the writer's sync and indexing", Duration::from_secs(3600), || {
        caught_up(writer_port)
    })?;
    // The writer's managed cluster, reached over its socket as any replica would reach a shared database.
    let database_url = LocalCluster::new(&writer_data.join("postgres"))?.url(DATABASE);
    let mut replicas: Vec<(u16, Running)> = Vec::new();
    for number in 0..bench.replicas {
        let port = free_port()?;
        let server = start_server_with(
            &repository,
            &root.join(format!("replica-{number}")),
            port,
            &["--no-sync"],
            &[("DATABASE_URL", database_url.clone())],
        )?;
        replicas.push((port, server));
    }
    for (port, _) in &replicas {
        wait_until("a replica's readiness", Duration::from_secs(300), || {
            request(*port, "GET", "/readyz", &[], b"").is_ok_and(|answer| answer.status == 200)
        })?;
    }
    let ports: Vec<u16> = replicas.iter().map(|(port, _)| *port).collect();

    let mut pointers = pointers;
    let (mut version_times, mut label_times, mut put_times) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..bench.rounds {
        let persona = round % bench.shape.personas;
        let id = SyntheticRegistry::persona_id(persona);

        // The reference: a new version by git, until every replica answers it as current.
        let before = agreed(&ports, &format!("/api/personas/{id}"))?;
        let slug = slug_of(writer_port, &id)?;
        let file = repository.join(format!("registry/personas/{slug}.toml"));
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        std::fs::write(&file, replace_trait(&text, "openness", distinct_value(round, 5))?)?;
        let started = Instant::now();
        git(
            &repository,
            &["commit", "--quiet", "--all", "--message", "bench: a new version"],
        )?;
        version_times.push(until_every_replica(
            &ports,
            &format!("/api/personas/{id}"),
            |version| version > before,
            started,
        )?);

        // A label move by git: the labels file's line for this persona, 1 ↔ 2.
        let pinned = format!("/api/personas/{id}@{LABEL}");
        let from = agreed(&ports, &pinned)?;
        let to = if from == 1 { 2 } else { 1 };
        set_pointer(&repository, &mut pointers, persona, to)?;
        let started = Instant::now();
        git(
            &repository,
            &["commit", "--quiet", "--all", "--message", "bench: move production"],
        )?;
        label_times.push(until_every_replica(&ports, &pinned, |version| version == to, started)?);

        // The same move back through the API's write path on the writer.
        let back = from;
        agreed(&ports, &pinned)?;
        let started = Instant::now();
        let answer = request(
            writer_port,
            "PUT",
            &format!("/api/personas/{id}/labels/{LABEL}"),
            &[
                ("Authorization", &format!("Bearer {token}")),
                ("If-Match", &format!("@{to}")),
                ("Content-Type", "application/json"),
            ],
            format!("{{\"version\": {back}}}").as_bytes(),
        )?;
        // 202: committed, the writer's projection slower than its wait; the replicas are timed all the same.
        if answer.status != 200 && answer.status != 202 {
            bail!(
                "PUT …/labels/{LABEL} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        put_times.push(until_every_replica(
            &ports,
            &pinned,
            |version| version == back,
            started,
        )?);
        // The writer committed and refreshed its checkout; the bench's copy of the lines follows.
        pointers[persona] = back;
    }
    for (_, server) in replicas {
        terminate(server)?;
    }
    terminate(writer)?;

    println!(
        "registry        {} personas × {} versions; label {LABEL} on every persona; 1 writer + {} replicas \
         (serve --no-sync) on the writer's PostgreSQL; {} rounds",
        bench.shape.personas, bench.shape.revisions, bench.replicas, bench.rounds
    );
    let (version_p50, version_p99) = percentiles(&mut version_times);
    let (label_p50, label_p99) = percentiles(&mut label_times);
    let (put_p50, put_p99) = percentiles(&mut put_times);
    println!(
        "new version     p50 {version_p50:>7.1} ms  p99 {version_p99:>7.1} ms  (git commit of a persona file until \
         every replica answers the new version at GET /api/personas/{{id}}, each polled every 2 ms: the reference)"
    );
    println!(
        "label move      p50 {label_p50:>7.1} ms  p99 {label_p99:>7.1} ms  (git commit moving {LABEL} for one persona \
         until every replica, which answered the old version just before, answers the new one at \
         /api/personas/{{id}}@{LABEL}; {:.2}× the reference at p50, {:.2}× at p99)",
        label_p50 / version_p50,
        label_p99 / version_p99
    );
    println!(
        "label PUT       p50 {put_p50:>7.1} ms  p99 {put_p99:>7.1} ms  (PUT /api/personas/{{id}}/labels/{LABEL} on \
         the writer, from sending the request (so the gix commit is inside, where the reference starts after \
         its git commit) until every replica answers the new version; {:.2}× the reference at p50, {:.2}× at p99)",
        put_p50 / version_p50,
        put_p99 / version_p99
    );
    Ok(Outcome::Clean)
}

/// Writes `[production]` covering every persona at version 1 (by id, which
/// a labels file accepts as well as a slug) and commits it; a kept
/// repository from an earlier run is taken as it is.
fn label_every_persona(repository: &Path, personas: usize) -> anyhow::Result<Vec<i64>> {
    let file = repository.join(LABELS_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        return (0..personas)
            .map(|persona| {
                let prefix = format!("\"{}\" = ", SyntheticRegistry::persona_id(persona));
                text.lines()
                    .find_map(|line| line.strip_prefix(&prefix))
                    .and_then(|value| value.trim().parse().ok())
                    .with_context(|| format!("{} does not label persona {persona}", file.display()))
            })
            .collect();
    }
    let pointers = vec![1; personas];
    std::fs::write(&file, labels_text(&pointers))?;
    git(repository, &["add", LABELS_FILE])?;
    git(
        repository,
        &["commit", "--quiet", "--message", "bench: label production"],
    )?;
    Ok(pointers)
}

fn labels_text(pointers: &[i64]) -> String {
    let mut text = format!("[{LABEL}]\n");
    for (persona, version) in pointers.iter().enumerate() {
        text.push_str(&format!("\"{}\" = {version}\n", SyntheticRegistry::persona_id(persona)));
    }
    text
}

fn set_pointer(repository: &Path, pointers: &mut [i64], persona: usize, version: i64) -> anyhow::Result<()> {
    pointers[persona] = version;
    std::fs::write(repository.join(LABELS_FILE), labels_text(pointers))?;
    Ok(())
}

fn slug_of(port: u16, id: &str) -> anyhow::Result<String> {
    let answer = request(port, "GET", &format!("/api/personas/{id}"), &[], b"")?;
    let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
    Ok(body["slug"].as_str().context("the persona's slug")?.to_string())
}

/// The version `path` answers on one server.
fn version_at(port: u16, path: &str) -> anyhow::Result<i64> {
    let answer = request(port, "GET", path, &[], b"")?;
    if answer.status != 200 {
        bail!("GET {path} answered {}", answer.status);
    }
    let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
    body["version"].as_i64().context("a version number")
}

/// The version every replica answers at `path` (asked twice each, so each
/// keeps the answer), once they agree.
fn agreed(ports: &[u16], path: &str) -> anyhow::Result<i64> {
    let started = Instant::now();
    loop {
        let mut versions = Vec::with_capacity(ports.len());
        for port in ports {
            version_at(*port, path)?;
            versions.push(version_at(*port, path)?);
        }
        if versions.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(versions[0]);
        }
        if started.elapsed() > PATIENCE {
            bail!("the replicas did not agree on {path}: {versions:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long after `started` the last replica answered a version that `wanted` accepts.
fn until_every_replica(
    ports: &[u16],
    path: &str,
    wanted: impl Fn(i64) -> bool,
    started: Instant,
) -> anyhow::Result<Duration> {
    let mut pending: Vec<u16> = ports.to_vec();
    let mut last = Duration::ZERO;
    while !pending.is_empty() {
        let mut still = Vec::with_capacity(pending.len());
        for port in pending {
            if version_at(port, path).is_ok_and(&wanted) {
                last = started.elapsed();
            } else {
                still.push(port);
            }
        }
        pending = still;
        if started.elapsed() > PATIENCE {
            bail!(
                "{} replicas did not answer the change at {path} within a minute",
                pending.len()
            );
        }
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::labels::{LabelTarget, parse_labels};

    #[test]
    fn the_generated_labels_file_is_one_the_registry_accepts() {
        let text = labels_text(&[1, 2]);
        let (file, problems) = parse_labels(LABELS_FILE, text.as_bytes());
        assert!(problems.is_empty(), "{problems:?}");
        let entries = &file.unwrap().labels[0].entries;
        assert_eq!(entries[1].persona, SyntheticRegistry::persona_id(1));
        assert_eq!(entries[1].target, LabelTarget::Version(2));
    }
}

//! `personas bench write`: settings changes through `PATCH …/settings` on a
//! running `personas serve`, until the answer carries the projected version,
//! against the same change made the ordinary way in the same run: `git
//! commit` in the served repository, until the API shows the new version.
//! Both paths end at the same sync; the ratio is what the API's write costs
//! on top (HTTP, checks, the gix commit and CAS).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bench::{bench_root, prepare_repository};
use super::bench_http::{free_port, start_server, wait_until};
use super::http_probe::{Answer, request};
use crate::access::{TokenHash, generate_token};
use crate::cli::Outcome;
use crate::synthetic::SyntheticRegistry;

pub struct WriteBench<'a> {
    pub shape: SyntheticRegistry,
    /// Keep (and reuse) the repository and database here; the bench adds commits to it.
    pub keep: Option<&'a Path>,
    /// Changes made each way, one after another.
    pub rounds: usize,
    /// Concurrent writers in the throughput run, each on its own persona.
    pub writers: usize,
}

const IDENTITY: (&str, &str) = ("Bench Editor", "bench@personas.invalid");

pub fn write(bench: WriteBench<'_>) -> anyhow::Result<Outcome> {
    if bench.shape.personas < bench.writers.max(1) * 2 {
        bail!(
            "the registry needs at least {} personas for this run",
            bench.writers.max(1) * 2
        );
    }
    let (temporary, root) = bench_root(bench.keep)?;
    let repository = prepare_repository(&bench.shape, Some(&root), temporary.path())?;
    let token = generate_token().context("making a token")?;
    let port = free_port()?;
    eprintln!(
        "starting personas serve (first run: sync {} personas)…",
        bench.shape.personas
    );
    let tokens = format!("editor {} {} <{}>", TokenHash::of(&token), IDENTITY.0, IDENTITY.1);
    let _server = start_server(&repository, &root.join("data"), port, &[("PERSONAS_TOKENS", tokens)])?;
    // Synced, and the first indexing done (when there is a model), so the
    // measurement does not share the machine with embedding the whole registry.
    wait_until("the server's sync and indexing", Duration::from_secs(3600), || {
        request(port, "GET", "/readyz", &[], b"").is_ok_and(|answer| {
            let body = String::from_utf8_lossy(&answer.body);
            answer.status == 200
                && body.contains("\"sync_lag_seconds\":0.0")
                && (body.contains("\"outbox_depth\":0") || body.contains("\"semantic_search\":false"))
        })
    })?;

    // The reference: a commit made with git, timed until the API shows it.
    // One more first, untimed: it waits for whatever the server still does
    // after its start (reading the registry at the cursor, for one), which
    // a commit to a running server does not.
    let mut git_times = Vec::with_capacity(bench.rounds + 1);
    for round in 0..=bench.rounds {
        let persona = round % bench.shape.personas;
        let before = current(port, persona)?;
        let file = repository.join(format!("registry/personas/{}.toml", before.slug));
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        // A kept repository may hold this value from an earlier run: then
        // another, or git would have nothing to commit.
        let mut changed = replace_trait(&text, "openness", distinct_value(round, 0))?;
        if changed == text {
            changed = replace_trait(&text, "openness", distinct_value(round, 3))?;
        }
        std::fs::write(&file, changed)?;
        let started = Instant::now();
        git(
            &repository,
            &["commit", "--quiet", "--all", "--message", "bench: openness by git"],
        )?;
        // Polled every few milliseconds: the reference must not be slowed by its own measurement.
        while !current(port, persona).is_ok_and(|now| now.version > before.version) {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the git commit did not reach the API within a minute");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        git_times.push(started.elapsed());
    }
    let first_after_start = git_times.remove(0);

    // The same change through the API, one at a time.
    let mut api_times = Vec::with_capacity(bench.rounds);
    for round in 0..bench.rounds {
        let persona = round % bench.shape.personas;
        let before = current(port, persona)?;
        let answer = patch_openness(&token, port, persona, &before.etag, distinct_value(round, 1))?;
        if answer.status != 200 {
            bail!(
                "PATCH answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        api_times.push(answer.elapsed);
    }

    // Throughput: concurrent writers on distinct personas; every write moves
    // the same branch, so they meet at the ref's compare-and-swap.
    let per_writer = bench.rounds.div_ceil(bench.writers.max(1));
    let commits_before = commit_count(&repository)?;
    let started = Instant::now();
    let outcomes: Vec<anyhow::Result<usize>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..bench.writers)
            .map(|writer| {
                let token = &token;
                scope.spawn(move || -> anyhow::Result<usize> {
                    let persona = bench.shape.personas - 1 - writer;
                    let mut etag = current(port, persona)?.etag;
                    for round in 0..per_writer {
                        let answer = patch_openness(token, port, persona, &etag, distinct_value(round, 2 + writer))?;
                        if answer.status != 200 {
                            bail!(
                                "PATCH answered {}: {}",
                                answer.status,
                                String::from_utf8_lossy(&answer.body)
                            );
                        }
                        etag = answer
                            .header("etag")
                            .context("a new version without an ETag")?
                            .to_string();
                    }
                    Ok(per_writer)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a writer panicked")))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut reported = 0;
    for outcome in outcomes {
        reported += outcome?;
    }
    // Counted in git, not taken from the writers' word.
    let committed = commit_count(&repository)? - commits_before;
    if committed != reported {
        bail!("the writers reported {reported} changes but the branch gained {committed} commits");
    }
    let linear = git(&repository, &["rev-list", "--min-parents=2", "main"])?
        .trim()
        .is_empty();

    println!(
        "registry        {} personas × {} versions; {} changes each way",
        bench.shape.personas, bench.shape.revisions, bench.rounds
    );
    let (git_p50, git_p99) = percentiles(&mut git_times);
    let (api_p50, api_p99) = percentiles(&mut api_times);
    println!(
        "git commit      p50 {:>7.1} ms  p99 {:>7.1} ms  (commit to version in the API: the reference; \
         the first commit after the start, not counted: {:.1} ms)",
        git_p50,
        git_p99,
        first_after_start.as_secs_f64() * 1000.0
    );
    println!(
        "PATCH settings  p50 {:>7.1} ms  p99 {:>7.1} ms  {:.2}× the git path (request to the projected version)",
        api_p50,
        api_p99,
        api_p50 / git_p50
    );
    println!(
        "concurrent      {:>7.1} changes/s  ({} writers × {per_writer}, {committed} commits counted in git, history {}) vs {:.1}/s one git commit at a time",
        committed as f64 / elapsed.as_secs_f64(),
        bench.writers,
        if linear { "linear" } else { "NOT linear" },
        1000.0 / git_p50
    );
    if !linear {
        bail!("the concurrent writes made a merge: history is not linear");
    }
    Ok(Outcome::Clean)
}

/// Commits on the served branch.
pub(crate) fn commit_count(repository: &Path) -> anyhow::Result<usize> {
    let count = git(repository, &["rev-list", "--count", "main"])?;
    count
        .trim()
        .parse()
        .with_context(|| format!("git rev-list --count answered {count:?}"))
}

pub(crate) struct Current {
    pub slug: String,
    pub version: i64,
    pub etag: String,
}

pub(crate) fn current(port: u16, persona: usize) -> anyhow::Result<Current> {
    let id = SyntheticRegistry::persona_id(persona);
    let answer = request(port, "GET", &format!("/api/personas/{id}"), &[], b"")?;
    if answer.status != 200 {
        bail!("GET {id} answered {}", answer.status);
    }
    let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
    Ok(Current {
        slug: body["slug"].as_str().context("a slug")?.to_string(),
        version: body["version"].as_i64().context("a version")?,
        etag: answer.header("etag").context("an ETag")?.to_string(),
    })
}

pub(crate) fn patch_openness(
    token: &str,
    port: u16,
    persona: usize,
    etag: &str,
    openness: f64,
) -> anyhow::Result<Answer> {
    let id = SyntheticRegistry::persona_id(persona);
    let body = serde_json::json!({"traits": {"ocean": {"openness": openness}}}).to_string();
    request(
        port,
        "PATCH",
        &format!("/api/personas/{id}/settings"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("If-Match", etag),
            ("Content-Type", "application/merge-patch+json"),
        ],
        body.as_bytes(),
    )
}

/// A value no earlier round wrote (so every change is a real change).
pub(crate) fn distinct_value(round: usize, lane: usize) -> f64 {
    ((round * 7 + lane * 13) % 89 + 5) as f64 / 100.0 + 0.001 * ((round / 89) % 9 + 1) as f64
}

pub(crate) fn replace_trait(text: &str, name: &str, value: f64) -> anyhow::Result<String> {
    let start = text
        .find(&format!("\n{name} = "))
        .with_context(|| format!("no {name} in the persona"))?
        + 1;
    let end = start + text[start..].find('\n').unwrap_or(text.len() - start);
    Ok(format!("{}{name} = {value}{}", &text[..start], &text[end..]))
}

pub(crate) fn git(repository: &Path, arguments: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repository)
        .args([
            "-c",
            &format!("user.name={}", IDENTITY.0),
            "-c",
            &format!("user.email={}", IDENTITY.1),
        ])
        .args(arguments)
        .output()
        .context("running git")?;
    if !output.status.success() {
        bail!("git {arguments:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// p50 and p99 in milliseconds.
pub(crate) fn percentiles(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let at = |fraction: f64| {
        let index = ((times.len() as f64 * fraction) as usize).min(times.len().saturating_sub(1));
        times.get(index).map_or(f64::NAN, |time| time.as_secs_f64() * 1000.0)
    };
    (at(0.5), at(0.99))
}

//! `personas bench soak`: everything at once for a while, on one `serve`:
//! wrk on pinned and current answers, a `git commit` every second, PATCH
//! writers, and the vector worker embedding what they change. It fails on
//! any error answer or when the versions projected differ from the commits
//! made, and prints each window's requests, p99 and the server's RSS, so a
//! leak shows as growth that does not level off.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bench::{bench_root, prepare_repository};
use super::bench_http::{free_port, start_server, wait_until};
use super::bench_write::{commit_count, current, distinct_value, git, replace_trait};
use super::http_probe::request;
use super::process_memory::{ProcessMemory, mib};
use crate::access::{TokenHash, generate_token};
use crate::cli::Outcome;
use crate::synthetic::SyntheticRegistry;

pub struct SoakBench<'a> {
    pub shape: SyntheticRegistry,
    pub keep: Option<&'a Path>,
    pub minutes: f64,
    pub connections: u32,
    /// Concurrent PATCH writers, each on its own persona.
    pub writers: usize,
}

/// One wrk run: what it served and how fast.
struct Window {
    requests: u64,
    /// Answers other than 2xx and 3xx (wrk's own count).
    errors: u64,
    /// Answers of 500 and above (counted by the wrk script).
    server_errors: u64,
    /// Connections that failed or requests that timed out (wrk's socket errors).
    socket_errors: u64,
    p99_ms: f64,
    rss_kib: u64,
}

const WINDOW: Duration = Duration::from_secs(60);

pub fn soak(bench: SoakBench<'_>) -> anyhow::Result<Outcome> {
    let writers = bench.writers.max(1);
    if bench.shape.personas < writers + 2 {
        bail!("the registry needs at least {} personas for this run", writers + 2);
    }
    let (temporary, root) = bench_root(bench.keep)?;
    let repository = prepare_repository(&bench.shape, Some(&root), temporary.path())?;
    let token = generate_token().context("making a token")?;
    let port = free_port()?;
    let tokens = format!("editor {} Soak Writer <soak@personas.invalid>", TokenHash::of(&token));
    eprintln!(
        "starting personas serve (first run: sync and index {} personas)…",
        bench.shape.personas
    );
    let server = start_server(&repository, &root.join("data"), port, &[("PERSONAS_TOKENS", tokens)])?;
    let pid = server.0.id();
    wait_until("the server's sync and indexing", Duration::from_secs(3600), || {
        ready(port)
    })?;

    // The personas each lane changes: the committer the first half (past the
    // writers'), each writer one of its own at the end.
    let committed: Vec<usize> = (0..(bench.shape.personas - writers).max(1)).collect();
    let written: Vec<usize> = (bench.shape.personas - writers..bench.shape.personas).collect();
    let touched: Vec<usize> = committed.iter().chain(&written).copied().collect();
    let versions_before = versions(port, &touched)?;
    let commits_before = commit_count(&repository)?;
    let urls = urls(port, &touched)?;
    let script = root.join("soak.lua");
    std::fs::write(&script, lua_cycling(&urls))?;
    let start_memory = ProcessMemory::of(pid).context("reading the server's memory")?;

    let stop = AtomicBool::new(false);
    let git_commits = AtomicU64::new(0);
    let git_failures = AtomicU64::new(0);
    let patches = AtomicU64::new(0);
    let patch_retries = AtomicU64::new(0);
    let unchanged = AtomicU64::new(0);
    let total = Duration::from_secs_f64(bench.minutes * 60.0);
    let windows: anyhow::Result<Vec<Window>> = std::thread::scope(|scope| {
        // A commit every second, through git in the served checkout.
        let committer = scope.spawn(|| -> anyhow::Result<()> {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                let persona = committed[round % committed.len()];
                match commit_once(&repository, port, persona, round) {
                    Ok(()) => git_commits.fetch_add(1, Ordering::Relaxed),
                    // A PATCH landed meanwhile (the index is busy): the next second tries again.
                    Err(_) => git_failures.fetch_add(1, Ordering::Relaxed),
                };
                round += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        });
        let writer_handles: Vec<_> = written
            .iter()
            .enumerate()
            .map(|(lane, &persona)| {
                let (token, stop, patches, patch_retries, unchanged) =
                    (&token, &stop, &patches, &patch_retries, &unchanged);
                scope.spawn(move || -> anyhow::Result<()> {
                    let mut round = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let etag = current(port, persona)?.etag;
                        let answer = super::bench_write::patch_openness(
                            token,
                            port,
                            persona,
                            &etag,
                            distinct_value(round, 3 + lane),
                        )?;
                        match answer.status {
                            // The value drawn can equal the current one (the values repeat
                            // every 801 rounds): answered `unchanged`, no commit made.
                            200 if String::from_utf8_lossy(&answer.body).contains("\"status\":\"unchanged\"") => {
                                unchanged.fetch_add(1, Ordering::Relaxed)
                            }
                            200 | 202 => patches.fetch_add(1, Ordering::Relaxed),
                            // Another commit moved the branch or dirtied the checkout: read again.
                            409 | 412 => patch_retries.fetch_add(1, Ordering::Relaxed),
                            status => bail!("PATCH answered {status}: {}", String::from_utf8_lossy(&answer.body)),
                        };
                        round += 1;
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Ok(())
                })
            })
            .collect();

        let started = Instant::now();
        let mut windows = Vec::new();
        let mut outcome = Ok(());
        // Whole seconds only: wrk runs for at least one.
        while total.saturating_sub(started.elapsed()) >= Duration::from_secs(1) {
            let length = WINDOW.min(total.saturating_sub(started.elapsed()));
            match wrk_window(&urls[0], &script, length, bench.connections, pid) {
                Ok(window) => {
                    eprintln!(
                        "  window {:>2}: {:>8} requests, {} errors ({} 5xx, {} socket), p99 {:.2} ms, RSS {:.1} MiB",
                        windows.len() + 1,
                        window.requests,
                        window.errors,
                        window.server_errors,
                        window.socket_errors,
                        window.p99_ms,
                        mib(window.rss_kib)
                    );
                    windows.push(window);
                }
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        committer.join().expect("the committer thread")?;
        for handle in writer_handles {
            handle.join().expect("a writer thread")?;
        }
        outcome.map(|()| windows)
    });
    let windows = windows?;

    // Everything committed is projected: wait for the sync to reach the tip.
    let head = git(&repository, &["rev-parse", "main"])?.trim().to_string();
    wait_until("the sync to reach the last commit", Duration::from_secs(300), || {
        request(port, "GET", "/readyz", &[], b"")
            .is_ok_and(|answer| answer.status == 200 && String::from_utf8_lossy(&answer.body).contains(&head))
    })?;
    // And embedded: the vector worker's outbox drains once the writes stop.
    let drain_started = Instant::now();
    wait_until("the vector outbox to drain", Duration::from_secs(600), || ready(port))?;
    let drain = drain_started.elapsed();
    let commits = commit_count(&repository)? - commits_before;
    let versions_after = versions(port, &touched)?;
    let projected: i64 = versions_after
        .iter()
        .zip(&versions_before)
        .map(|(after, before)| after - before)
        .sum();
    let end_memory = ProcessMemory::of(pid).context("reading the server's memory")?;
    drop(server);

    let requests: u64 = windows.iter().map(|window| window.requests).sum();
    let errors: u64 = windows.iter().map(|window| window.errors).sum();
    let server_errors: u64 = windows.iter().map(|window| window.server_errors).sum();
    let socket_errors: u64 = windows.iter().map(|window| window.socket_errors).sum();
    let rss: Vec<u64> = windows.iter().map(|window| window.rss_kib).collect();
    let growth = memory_growth(&rss);
    let p99s: Vec<String> = windows.iter().map(|window| format!("{:.1}", window.p99_ms)).collect();
    println!(
        "soak ({:.1} min, {} personas, {} wrk connections on pinned and current answers, 1 git commit/s, {writers} PATCH writers, the vector worker on):",
        bench.minutes, bench.shape.personas, bench.connections
    );
    println!(
        "  requests                {requests}: {server_errors} answered 5xx, {errors} answered other than 2xx/3xx in all, {socket_errors} socket errors or timeouts"
    );
    println!(
        "  commits made            {commits}, counted in git ({} by git, {} by PATCH; {} git attempts and {} PATCHes retried after a race, {} PATCHes answered unchanged)",
        git_commits.load(Ordering::Relaxed),
        patches.load(Ordering::Relaxed),
        git_failures.load(Ordering::Relaxed),
        patch_retries.load(Ordering::Relaxed),
        unchanged.load(Ordering::Relaxed)
    );
    println!("  versions projected      {projected}");
    println!(
        "  server RSS              {:.1} MiB at the start, {:.1} MiB at the end (after each window: {})",
        mib(start_memory.rss_kib),
        mib(end_memory.rss_kib),
        windows
            .iter()
            .map(|window| format!("{:.0}", mib(window.rss_kib)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &growth {
        Some(growth) => println!(
            "  RSS growth              median {:.1} MiB over the first half of the windows, {:.1} MiB over the second ({:+.1}): {}",
            mib(growth.first_half_median_kib),
            mib(growth.second_half_median_kib),
            growth.change_mib(),
            if growth.levels_off() {
                "levels off"
            } else {
                "still growing"
            }
        ),
        None => println!("  RSS growth              not judged: fewer than {MIN_WINDOWS_FOR_GROWTH} windows"),
    }
    println!("  p99 per window (ms)     {}", p99s.join(", "));
    println!(
        "  outbox drained          {:.1} s after the last write",
        drain.as_secs_f64()
    );
    if server_errors > 0 {
        bail!("{server_errors} requests were answered 5xx");
    }
    if errors > 0 {
        bail!("{errors} requests were answered with an error");
    }
    if socket_errors > 0 {
        bail!("{socket_errors} requests failed on the socket or timed out");
    }
    if growth.as_ref().is_some_and(|growth| !growth.levels_off()) {
        bail!("the server's memory is still growing in the second half of the run");
    }
    if projected != commits as i64 {
        bail!("{commits} commits were made but {projected} versions projected");
    }
    Ok(Outcome::Clean)
}

/// Windows needed before growth is judged: with fewer, the first indexing's
/// and the kept answers' warm-up are all there is to see.
const MIN_WINDOWS_FOR_GROWTH: usize = 4;

/// The server's RSS over the windows' two halves. The embedder takes its
/// working memory for a batch and gives it back, so single readings swing by
/// a hundred MiB or more (317, 211, 326 MiB in consecutive minutes at 2,000
/// personas); each half is judged by its median, which a leak lifts and a
/// swing does not.
struct MemoryGrowth {
    first_half_median_kib: u64,
    second_half_median_kib: u64,
}

impl MemoryGrowth {
    /// The second half's median may exceed the first's by 16 MiB or 10%,
    /// whichever is more: room for the kept answers filling up.
    fn levels_off(&self) -> bool {
        let allowance = (16 * 1024).max(self.first_half_median_kib / 10);
        self.second_half_median_kib <= self.first_half_median_kib + allowance
    }

    fn change_mib(&self) -> f64 {
        (self.second_half_median_kib as f64 - self.first_half_median_kib as f64) / 1024.0
    }
}

fn memory_growth(rss_kib: &[u64]) -> Option<MemoryGrowth> {
    if rss_kib.len() < MIN_WINDOWS_FOR_GROWTH {
        return None;
    }
    let median = |half: &[u64]| {
        let mut sorted = half.to_vec();
        sorted.sort_unstable();
        sorted[sorted.len() / 2]
    };
    let (first, second) = rss_kib.split_at(rss_kib.len() / 2);
    Some(MemoryGrowth {
        first_half_median_kib: median(first),
        second_half_median_kib: median(second),
    })
}

fn ready(port: u16) -> bool {
    request(port, "GET", "/readyz", &[], b"").is_ok_and(|answer| {
        let body = String::from_utf8_lossy(&answer.body);
        answer.status == 200
            && body.contains("\"sync_lag_seconds\":0.0")
            && (body.contains("\"outbox_depth\":0") || body.contains("\"semantic_search\":false"))
    })
}

/// Edits one trait of `persona` in the checkout and commits it with git.
fn commit_once(repository: &Path, port: u16, persona: usize, round: usize) -> anyhow::Result<()> {
    let slug = current(port, persona)?.slug;
    let file = repository.join(format!("registry/personas/{slug}.toml"));
    let text = std::fs::read_to_string(&file)?;
    std::fs::write(&file, replace_trait(&text, "openness", distinct_value(round, 1))?)?;
    let relative = format!("registry/personas/{slug}.toml");
    // Only this file: a commit must change exactly one persona, whatever else is in the checkout.
    let committed = git(
        repository,
        &[
            "commit",
            "--quiet",
            "--message",
            "soak: openness by git",
            "--",
            &relative,
        ],
    );
    if committed.is_err() {
        // Put the file back (the index may be busy with a PATCH for a moment),
        // so no later commit carries this change along with its own.
        let restored = (0..100).any(|_| {
            let done = git(repository, &["checkout", "--", &relative]).is_ok();
            if !done {
                std::thread::sleep(Duration::from_millis(20));
            }
            done
        });
        if !restored {
            bail!("{relative} could not be restored after a failed commit");
        }
    }
    committed.map(|_| ())
}

fn versions(port: u16, personas: &[usize]) -> anyhow::Result<Vec<i64>> {
    personas
        .iter()
        .map(|persona| current(port, *persona).map(|current| current.version))
        .collect()
}

/// Pinned (`@1`, immutable) and current answers of the personas changed.
fn urls(port: u16, personas: &[usize]) -> anyhow::Result<Vec<String>> {
    let mut urls = Vec::new();
    for persona in personas.iter().take(50) {
        let id = SyntheticRegistry::persona_id(*persona);
        urls.push(format!("http://127.0.0.1:{port}/api/personas/{id}@1"));
        urls.push(format!("http://127.0.0.1:{port}/api/personas/{id}"));
    }
    Ok(urls)
}

/// A wrk script that walks the paths of `urls` in turn.
fn lua_cycling(urls: &[String]) -> String {
    let paths: Vec<String> = urls
        .iter()
        .map(|url| {
            format!(
                "{:?}",
                url.splitn(4, '/')
                    .nth(3)
                    .map(|path| format!("/{path}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    // Each wrk thread runs its own Lua state: `server_errors` is a global so
    // that `done` can read every thread's count through `thread:get`.
    format!(
        r#"local paths = {{{}}}
local i = 0
server_errors = 0
local threads = {{}}
setup = function(thread) table.insert(threads, thread) end
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
response = function(status, headers, body)
  if status >= 500 then server_errors = server_errors + 1 end
end
done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("server_errors") end
  io.write(string.format("Server errors: %d\n", total))
end
"#,
        paths.join(", ")
    )
}

fn wrk_window(url: &str, script: &Path, length: Duration, connections: u32, pid: u32) -> anyhow::Result<Window> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", length.as_secs().max(1)),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .context("running wrk (apt-get install wrk)")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let requests = text
        .lines()
        .find_map(|line| {
            line.trim()
                .split_once(" requests in ")
                .map(|(count, _)| count.trim().to_string())
        })
        .with_context(|| format!("no request count in wrk's output:\n{text}"))?
        .parse()?;
    let errors = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map_or(Ok(0), |count| count.trim().parse())?;
    let server_errors = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Server errors:"))
        .with_context(|| format!("no 5xx count from the wrk script:\n{text}"))?
        .trim()
        .parse()?;
    let socket_errors = socket_errors(&text)?;
    let p99 = text
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("99%"))
        .with_context(|| format!("no p99 in wrk's output:\n{text}"))?
        .trim();
    Ok(Window {
        requests,
        errors,
        server_errors,
        socket_errors,
        p99_ms: super::bench_http::milliseconds(p99)?,
        rss_kib: ProcessMemory::of(pid).map_or(0, |memory| memory.rss_kib),
    })
}

/// The sum of wrk's `Socket errors: connect N, read N, write N, timeout N`
/// (a line wrk prints only when there were some).
fn socket_errors(wrk_output: &str) -> anyhow::Result<u64> {
    let Some(line) = wrk_output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Socket errors:"))
    else {
        return Ok(0);
    };
    line.split(',')
        .map(|part| {
            let count = part.split_whitespace().last().unwrap_or("");
            count
                .parse::<u64>()
                .with_context(|| format!("wrk's socket errors line: {line}"))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_are_summed_and_absent_means_none() {
        let output = "  Socket errors: connect 1, read 2, write 0, timeout 4\n";
        assert_eq!(socket_errors(output).unwrap(), 7);
        assert_eq!(socket_errors("  Requests/sec: 10\n").unwrap(), 0);
        assert!(socket_errors("Socket errors: connect x").is_err());
    }

    #[test]
    fn growth_that_goes_on_at_the_same_pace_does_not_level_off() {
        let mib = |values: &[u64]| values.iter().map(|value| value * 1024).collect::<Vec<_>>();
        assert!(memory_growth(&mib(&[100, 110])).is_none());
        let warm_up_then_flat = memory_growth(&mib(&[100, 160, 170, 172, 173, 174])).unwrap();
        assert!(warm_up_then_flat.levels_off());
        let leak = memory_growth(&mib(&[100, 140, 180, 220, 260, 300])).unwrap();
        assert!(!leak.levels_off());
        // Measured in a 10-minute soak: batches of embedding working memory come and go.
        let swinging = memory_growth(&mib(&[317, 323, 211, 326, 298, 175, 269, 216, 185, 265])).unwrap();
        assert!(swinging.levels_off());
    }
}

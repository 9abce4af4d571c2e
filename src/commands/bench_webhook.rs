//! `personas bench webhook`: a commit to the delivery of its
//! `version.created` event at a receiver in this process, through a running
//! `personas serve` with one webhook, against the reference measured on the
//! same commits in the same run: the same commit until the API shows the
//! new version (what `bench write` calls the git path). The webhook adds
//! what comes after the projection: the NOTIFY, the worker's transaction,
//! signing and one HTTP POST.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bench::{bench_root, prepare_repository};
use super::bench_http::{caught_up, free_port, start_server, terminate, wait_until};
use super::bench_write::{current, distinct_value, git, percentiles, replace_trait};
use super::http_probe::request;
use crate::cli::Outcome;
use crate::synthetic::SyntheticRegistry;
use crate::webhooks::signature;

pub struct WebhookBench<'a> {
    pub shape: SyntheticRegistry,
    /// Keep (and reuse) the repository and database here; the bench adds commits to it.
    pub keep: Option<&'a Path>,
    /// Commits made, one after another.
    pub rounds: usize,
}

const SECRET: &str = "bench webhook secret";

/// One request the receiver took: when it was read whole, and its body.
struct Arrival {
    at: Instant,
    body: Vec<u8>,
    signed: bool,
}

pub fn webhook(bench: WebhookBench<'_>) -> anyhow::Result<Outcome> {
    if bench.shape.personas == 0 || bench.rounds == 0 {
        bail!("the bench needs at least one persona and one round");
    }
    let (temporary, root) = bench_root(bench.keep)?;
    let repository = prepare_repository(&bench.shape, Some(&root), temporary.path())?;
    let data = root.join("data");

    // The first sync runs without the webhook: `from = "now"` then starts
    // the webhook's cursor after the generated history instead of
    // delivering all of it.
    let port = free_port()?;
    eprintln!(
        "starting personas serve for the first sync ({} personas)…",
        bench.shape.personas
    );
    let server = start_server(&repository, &data, port, &[])?;
    wait_until("the server's sync and indexing", Duration::from_secs(3600), || {
        caught_up(port)
    })?;
    terminate(server)?;

    let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let receiver = TcpListener::bind("127.0.0.1:0").context("binding the receiver")?;
    let receiver_port = receiver.local_addr()?.port();
    {
        let arrivals = Arc::clone(&arrivals);
        std::thread::spawn(move || receive(&receiver, &arrivals));
    }
    let config = root.join("personas-webhook.toml");
    std::fs::write(
        &config,
        format!(
            "[[webhooks]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{receiver_port}/hook\"\n\
             secret_env = \"PERSONAS_BENCH_WEBHOOK_SECRET\"\nfrom = \"now\"\n"
        ),
    )?;
    let port = free_port()?;
    eprintln!("starting personas serve with a webhook to 127.0.0.1:{receiver_port}…");
    let server = start_server(
        &repository,
        &data,
        port,
        &[
            ("PERSONAS_CONFIG", config.display().to_string()),
            ("PERSONAS_BENCH_WEBHOOK_SECRET", SECRET.to_string()),
        ],
    )?;
    wait_until("the server and the webhook's cursor", Duration::from_secs(600), || {
        caught_up(port) && cursor_ready(port)
    })?;

    let mut api_times = Vec::with_capacity(bench.rounds);
    let mut hook_times = Vec::with_capacity(bench.rounds);
    for round in 0..bench.rounds {
        let persona = round % bench.shape.personas;
        let before = current(port, persona)?;
        let file = repository.join(format!("registry/personas/{}.toml", before.slug));
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        std::fs::write(&file, replace_trait(&text, "openness", distinct_value(round, 3))?)?;
        let started = Instant::now();
        git(
            &repository,
            &[
                "commit",
                "--quiet",
                "--all",
                "--message",
                "bench: openness for the webhook",
            ],
        )?;
        // The reference, polled every few milliseconds like `bench write`'s.
        while !current(port, persona).is_ok_and(|now| now.version > before.version) {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the commit did not reach the API within a minute");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        api_times.push(started.elapsed());
        // The receiver stamped the arrival itself; this only looks it up.
        let sha = git(&repository, &["rev-parse", "HEAD"])?.trim().to_string();
        let arrived = loop {
            if let Some(at) = arrival_of(&arrivals, &sha)? {
                break at;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the webhook for {sha} was not delivered within a minute");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        hook_times.push(arrived.saturating_duration_since(started));
    }
    let (received, unsigned) = {
        let arrivals = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (
            arrivals.len(),
            arrivals.iter().filter(|arrival| !arrival.signed).count(),
        )
    };
    terminate(server)?;

    println!(
        "registry        {} personas × {} versions; {} commits, one trait edit each",
        bench.shape.personas, bench.shape.revisions, bench.rounds
    );
    let (api_p50, api_p99) = percentiles(&mut api_times);
    let (hook_p50, hook_p99) = percentiles(&mut hook_times);
    println!(
        "API shows it    p50 {api_p50:>7.1} ms  p99 {api_p99:>7.1} ms  (git commit to the new version in \
         GET /api/personas/{{id}}, polled every 2 ms: the reference)"
    );
    println!(
        "webhook         p50 {hook_p50:>7.1} ms  p99 {hook_p99:>7.1} ms  (git commit to its version.created POST \
         read whole by a receiver in this process; {:+.1} ms at p50 against the reference)",
        hook_p50 - api_p50
    );
    println!("deliveries      {received} received, {unsigned} with a bad signature");
    if unsigned > 0 {
        bail!("{unsigned} deliveries carried a bad signature");
    }
    Ok(Outcome::Clean)
}

fn cursor_ready(port: u16) -> bool {
    request(port, "GET", "/api/webhooks", &[], b"").is_ok_and(|answer| {
        serde_json::from_slice::<serde_json::Value>(&answer.body)
            .is_ok_and(|body| body["webhooks"][0]["cursor"].is_i64() && body["webhooks"][0]["pending"] == 0)
    })
}

/// SIGTERM, so the managed PostgreSQL is shut down with the server.
/// When the `version.created` event of `sha` arrived, if it did.
fn arrival_of(arrivals: &Mutex<Vec<Arrival>>, sha: &str) -> anyhow::Result<Option<Instant>> {
    let arrivals = arrivals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for arrival in arrivals.iter() {
        let body: serde_json::Value = serde_json::from_slice(&arrival.body).context("a delivery that is not JSON")?;
        if body["type"] == "version.created" && body["commit"]["sha"] == sha {
            return Ok(Some(arrival.at));
        }
    }
    Ok(None)
}

/// The receiver: each request is read whole, stamped, checked and answered 204.
fn receive(listener: &TcpListener, arrivals: &Arc<Mutex<Vec<Arrival>>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let arrivals = Arc::clone(arrivals);
        std::thread::spawn(move || {
            if let Some(arrival) = read_request(stream) {
                arrivals
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(arrival);
            }
        });
    }
}

fn read_request(stream: TcpStream) -> Option<Arrival> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut signature_header = None;
    let mut length = 0;
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok()?;
        } else if name.eq_ignore_ascii_case(signature::HEADER) {
            signature_header = Some(value.trim().to_string());
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let at = Instant::now();
    let signed = signature_header.is_some_and(|header| signature::verify(SECRET.as_bytes(), &body, &header));
    let mut stream = reader.into_inner();
    let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    Some(Arrival { at, body, signed })
}

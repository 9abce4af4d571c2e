//! `personas bench http`: the server under load, next to nginx serving the
//! same bytes from a file, in one run. wrk drives both; semantic search is
//! timed request by request; the server's memory is read from /proc.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::bench::prepare_repository;
use super::http_probe::request;
use super::process_memory::{ProcessMemory, mib, proportional_kib, resident_by_mapping};
use crate::cli::Outcome;
use crate::synthetic::SyntheticRegistry;

pub struct HttpBench<'a> {
    pub shape: SyntheticRegistry,
    /// Keep the repository, database and index here, so later runs skip indexing.
    pub keep: Option<&'a Path>,
    pub seconds: u32,
    pub connections: u32,
}

/// A child process stopped when dropped: SIGTERM first, so a server stops
/// its own children (its managed PostgreSQL, nginx's workers) before it
/// exits; SIGKILL only if it has not stopped within [`STOP_GRACE`].
pub(crate) struct Running(pub Child);

const STOP_GRACE: Duration = Duration::from_secs(30);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if matches!(self.0.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `personas serve` on the embedded defaults (managed PostgreSQL, embedded
/// index) for a benchmark, with `environment` added; killed when dropped.
pub(crate) fn start_server(
    repository: &Path,
    data_dir: &Path,
    port: u16,
    environment: &[(&str, String)],
) -> anyhow::Result<Running> {
    start_server_with(repository, data_dir, port, &[], environment)
}

/// [`start_server`] with extra `serve` arguments (`--no-sync` for a replica…).
pub(crate) fn start_server_with(
    repository: &Path,
    data_dir: &Path,
    port: u16,
    arguments: &[&str],
    environment: &[(&str, String)],
) -> anyhow::Result<Running> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args([
            "serve",
            "--branch",
            "main",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--repo",
        ])
        .arg(repository)
        .arg("--data-dir")
        .arg(data_dir)
        .args(arguments)
        .env_remove("DATABASE_URL")
        .env_remove("QDRANT_URL")
        .env_remove("PERSONAS_TOKENS")
        .env_remove("PERSONAS_PRIVATE")
        .env_remove("PERSONAS_WRITE_MODE")
        .env("RUST_LOG", "warn,qdrant_edge=error")
        .stderr(Stdio::inherit());
    for (name, value) in environment {
        command.env(name, value);
    }
    Ok(Running(command.spawn()?))
}

/// Stops a bench server with SIGTERM and waits for it, so its managed
/// PostgreSQL shuts down cleanly before another server starts on it.
pub(crate) fn terminate(mut server: Running) -> anyhow::Result<()> {
    let pid = rustix::process::Pid::from_raw(server.0.id() as i32).context("the server's pid")?;
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.0.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("personas serve did not stop within a minute of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Synced to the tip, and the first indexing done when there is a model.
pub(crate) fn caught_up(port: u16) -> bool {
    request(port, "GET", "/readyz", &[], b"").is_ok_and(|answer| {
        let body = String::from_utf8_lossy(&answer.body);
        answer.status == 200
            && body.contains("\"sync_lag_seconds\":0.0")
            && (body.contains("\"outbox_depth\":0") || body.contains("\"semantic_search\":false"))
    })
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One HTTP/1.1 GET on a fresh connection: (status, body, time).
fn get(port: u16, path: &str) -> anyhow::Result<(u16, Vec<u8>, Duration)> {
    let answer = request(port, "GET", path, &[], b"")?;
    Ok((answer.status, answer.body, answer.elapsed))
}

struct WrkResult {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn wrk(url: &str, seconds: u32, connections: u32) -> anyhow::Result<WrkResult> {
    wrk_with(url, seconds, connections, None)
}

/// wrk with an optional Lua script (to make every request distinct).
fn wrk_with(url: &str, seconds: u32, connections: u32, script: Option<&Path>) -> anyhow::Result<WrkResult> {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command.arg(url).output().context("running wrk (apt-get install wrk)")?;
    if !output.status.success() {
        bail!("wrk failed on {url}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") {
        bail!("wrk saw error answers from {url}:\n{text}");
    }
    let field = |prefix: &str| -> anyhow::Result<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
            .with_context(|| format!("no {prefix:?} in wrk's output:\n{text}"))
    };
    Ok(WrkResult {
        requests_per_second: field("Requests/sec:")?.parse()?,
        p50_ms: milliseconds(field("50%")?)?,
        p99_ms: milliseconds(field("99%")?)?,
    })
}

/// wrk's `1.23ms`, `456.00us`, `1.02s`.
pub(crate) fn milliseconds(text: &str) -> anyhow::Result<f64> {
    let (number, factor) = if let Some(number) = text.strip_suffix("us") {
        (number, 0.001)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1000.0)
    } else {
        bail!("unexpected latency {text:?}")
    };
    Ok(number.parse::<f64>()? * factor)
}

pub(crate) fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !ready() {
        if started.elapsed() > limit {
            bail!("{what} did not happen within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Stops nginx as nginx is stopped (SIGTERM to the master, which stops its
/// workers and exits), then checks that nothing listens on its port.
fn stop_nginx(nginx: Running, port: u16) -> anyhow::Result<()> {
    drop(nginx);
    wait_until("nginx's workers to stop", Duration::from_secs(10), || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
}

/// The server's kept-answer counters, and how its reads pinned by id were
/// coalesced, from `/metrics`.
#[derive(Debug, Clone, Copy)]
struct ReadCounters {
    kept: u64,
    computed: u64,
    pinned_reads: u64,
    pinned_read_queries: u64,
}

impl ReadCounters {
    fn since(self, earlier: ReadCounters) -> ReadCounters {
        ReadCounters {
            kept: self.kept - earlier.kept,
            computed: self.computed - earlier.computed,
            pinned_reads: self.pinned_reads - earlier.pinned_reads,
            pinned_read_queries: self.pinned_read_queries - earlier.pinned_read_queries,
        }
    }
}

fn read_counters(port: u16) -> anyhow::Result<ReadCounters> {
    let (status, body, _) = get(port, "/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    let text = String::from_utf8_lossy(&body);
    let count = |series: &str| -> u64 {
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(ReadCounters {
        kept: count("personas_answer_lookups_total{outcome=\"kept\"}"),
        computed: count("personas_answer_lookups_total{outcome=\"computed\"}"),
        pinned_reads: count("personas_pinned_reads_total"),
        pinned_read_queries: count("personas_pinned_read_queries_total"),
    })
}

fn start_nginx(root: &Path, port: u16) -> anyhow::Result<Running> {
    let config = root.join("nginx.conf");
    std::fs::write(
        &config,
        format!(
            "daemon off;\nworker_processes 2;\nuser root;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  default_type application/json;\n  types {{ text/html html; }}\n  etag on;\n\
               client_body_temp_path {root}/tmp;\n  proxy_temp_path {root}/tmp;\n  fastcgi_temp_path {root}/tmp;\n\
               uwsgi_temp_path {root}/tmp;\n  scgi_temp_path {root}/tmp;\n\
               server {{ listen 127.0.0.1:{port}; root {root}/static; }}\n}}\n",
            root = root.display()
        ),
    )?;
    std::fs::create_dir_all(root.join("tmp"))?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    Ok(Running(child))
}

/// Queries for the semantic timing: varied, so no answer is a repeat.
fn queries(count: usize) -> Vec<String> {
    let subjects = [
        "physics",
        "poetry",
        "leadership",
        "ecology",
        "music",
        "negotiation",
        "medicine",
        "history",
    ];
    let manners = [
        "a patient teacher of",
        "a sharp critic of",
        "a storyteller about",
        "a mentor in",
    ];
    (0..count)
        .map(|n| {
            format!(
                "{} {} number {n}",
                manners[n % manners.len()],
                subjects[(n / 4) % subjects.len()]
            )
        })
        .collect()
}

pub fn http(bench: HttpBench<'_>) -> anyhow::Result<Outcome> {
    let (temporary, root) = super::bench::bench_root(bench.keep)?;
    let repository = prepare_repository(&bench.shape, Some(&root), temporary.path())?;
    let data_dir = root.join("data");
    let port = free_port()?;
    eprintln!(
        "starting personas serve (first run: sync and embed {} personas)…",
        bench.shape.personas
    );
    add_bench_experiment(&repository, bench.shape.revisions)?;
    let server = start_server(&repository, &data_dir, port, &[])?;
    wait_until("the server's sync and indexing", Duration::from_secs(3600), || {
        get(port, "/readyz").is_ok_and(|(status, body, _)| {
            let body = String::from_utf8_lossy(&body);
            status == 200
                && body.contains("\"sync_lag_seconds\":0.0")
                && body.contains("\"outbox_depth\":0")
                && body.contains("\"semantic_search\":true")
        })
    })?;
    // The index is filled once the outbox is empty and a probe finds neighbours.
    let probe = SyntheticRegistry::persona_id(0);
    wait_until("the vector index", Duration::from_secs(3600), || {
        get(port, &format!("/api/personas/{probe}/similar")).is_ok_and(|(status, _, _)| status == 200)
    })?;

    // The third version, as A/B tests pin a past one (the last on a shorter history).
    let pinned = format!("/api/personas/{probe}@{}", bench.shape.revisions.clamp(1, 3));
    let (status, bytes, _) = get(port, &pinned)?;
    if status != 200 {
        bail!("{pinned} answered {status}");
    }
    let slug_page = {
        let (_, body, _) = get(port, &format!("/api/personas/{probe}"))?;
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        format!("/p/{}", value["slug"].as_str().context("a slug")?)
    };
    let (status, page_bytes, _) = get(port, &slug_page)?;
    if status != 200 {
        bail!("{slug_page} answered {status}");
    }
    // nginx serves each answer's own bytes: the reference does the same work on the wire.
    let nginx_root = root.join("nginx");
    std::fs::create_dir_all(nginx_root.join("static"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&nginx_root, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(nginx_root.join("static/persona.json"), &bytes)?;
    std::fs::write(nginx_root.join("static/persona.html"), &page_bytes)?;
    let nginx_port = free_port()?;
    let nginx = start_nginx(&nginx_root, nginx_port)?;
    wait_until("nginx", Duration::from_secs(10), || {
        get(nginx_port, "/persona.json").is_ok_and(|(status, body, _)| status == 200 && body == bytes)
    })?;

    let (seconds, connections) = (bench.seconds, bench.connections);
    println!(
        "load: wrk -t2 -c{connections} -d{seconds}s on this {}-core machine",
        num_cpus()
    );
    let reference = wrk(
        &format!("http://127.0.0.1:{nginx_port}/persona.json"),
        seconds,
        connections,
    )?;
    println!(
        "nginx json      {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  (the pinned answer's {} bytes from a file: the API's reference)",
        reference.requests_per_second,
        reference.p50_ms,
        reference.p99_ms,
        bytes.len()
    );
    let page_reference = wrk(
        &format!("http://127.0.0.1:{nginx_port}/persona.html"),
        seconds,
        connections,
    )?;
    println!(
        "nginx page      {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  (the persona page's {} bytes from a file: the page's reference)",
        page_reference.requests_per_second,
        page_reference.p50_ms,
        page_reference.p99_ms,
        page_bytes.len()
    );
    stop_nginx(nginx, nginx_port)?;

    let before = read_counters(port)?;
    let api = wrk(&format!("http://127.0.0.1:{port}{pinned}"), seconds, connections)?;
    let lookups = read_counters(port)?.since(before);
    println!(
        "api pinned      {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:.2}× nginx json (one pinned answer over and over: \
         {} of {} answered from memory)",
        api.requests_per_second,
        api.p50_ms,
        api.p99_ms,
        api.requests_per_second / reference.requests_per_second,
        lookups.kept,
        lookups.kept + lookups.computed
    );
    // Assignment: every request a distinct unit, so no answer is kept; what
    // is kept is the experiment's plan (its variants resolved and rendered).
    let (status, body, _) = get(port, "/api/experiments/bench/assign?unit=probe")?;
    if status != 200 {
        bail!("assign answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let assign_script = nginx_root.join("assign.lua");
    std::fs::write(
        &assign_script,
        "counter = 0\nrequest = function()\n  counter = counter + 1\n  \
         return wrk.format(\"GET\", \"/api/experiments/bench/assign?unit=u\" .. counter .. \"-\" .. math.random(1, 1000000000))\nend\n",
    )?;
    let assigned = wrk_with(
        &format!("http://127.0.0.1:{port}/"),
        seconds,
        connections,
        Some(&assign_script),
    )?;
    println!(
        "assign          {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:.2}× api pinned (GET /api/experiments/bench/assign, \
         a distinct unit per request)",
        assigned.requests_per_second,
        assigned.p50_ms,
        assigned.p99_ms,
        assigned.requests_per_second / api.requests_per_second
    );

    // The database path: a replica on the same database that keeps no
    // answers, asked for version 1 of a random persona each time; its
    // counters must show that every request was computed.
    let database_url =
        crate::store::local_pg::LocalCluster::new(&data_dir.join("postgres"))?.url(crate::store::local_pg::DATABASE);
    let replica_port = free_port()?;
    let replica = start_server_with(
        &repository,
        &root.join("replica"),
        replica_port,
        &["--no-sync", "--kept-answers-mib", "0"],
        &[("DATABASE_URL", database_url)],
    )?;
    wait_until("the replica", Duration::from_secs(120), || {
        get(replica_port, "/readyz").is_ok_and(|(status, _, _)| status == 200)
    })?;
    let script = nginx_root.join("distinct.lua");
    std::fs::write(
        &script,
        format!(
            "request = function()\n  local n = math.random(1, {personas})\n  \
             return wrk.format(\"GET\", string.format(\"/api/personas/%08x-0000-4000-8000-%012x@1\", n, n))\nend\n",
            personas = bench.shape.personas
        ),
    )?;
    let before = read_counters(replica_port)?;
    let uncached = wrk_with(
        &format!("http://127.0.0.1:{replica_port}/"),
        seconds,
        connections,
        Some(&script),
    )?;
    let lookups = read_counters(replica_port)?.since(before);
    if lookups.kept > 0 {
        bail!(
            "the replica answered {} requests from memory: not the database path",
            lookups.kept
        );
    }
    println!(
        "api database    {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:.2}× nginx json (version 1 of a random persona \
         from a replica that keeps no answers: {} of {} read from the database, {} pins by id in {} queries)",
        uncached.requests_per_second,
        uncached.p50_ms,
        uncached.p99_ms,
        uncached.requests_per_second / reference.requests_per_second,
        lookups.computed,
        lookups.kept + lookups.computed,
        lookups.pinned_reads,
        lookups.pinned_read_queries
    );
    terminate(replica)?;
    let page = wrk(&format!("http://127.0.0.1:{port}{slug_page}"), seconds, connections)?;
    println!(
        "persona page    {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  {:.2}× nginx page",
        page.requests_per_second,
        page.p50_ms,
        page.p99_ms,
        page.requests_per_second / page_reference.requests_per_second
    );

    let mut times = Vec::new();
    for query in queries(200) {
        let path = format!(
            "/api/personas/search?semantic=true&limit=10&q={}",
            url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
        );
        let (status, _, elapsed) = get(port, &path)?;
        if status != 200 {
            bail!("{path} answered {status}");
        }
        times.push(elapsed);
    }
    times.sort();
    let points = bench.shape.personas;
    println!(
        "semantic search p50 {:>6.2} ms  p99 {:>6.2} ms  (200 distinct queries over HTTP, {points} personas, one at a time)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() * 99 / 100].as_secs_f64() * 1000.0
    );
    match ProcessMemory::of(server.0.id()) {
        Some(memory) => println!(
            "server RSS      {:>9.1} MiB after the runs (peak {:.1} MiB, anonymous {:.1} MiB)",
            mib(memory.rss_kib),
            mib(memory.peak_kib),
            mib(memory.anonymous_kib)
        ),
        None => println!("server RSS      unknown"),
    }
    if let Some(proportional) = proportional_kib(server.0.id()) {
        println!(
            "server PSS      {:>9.1} MiB (each page counted once, however many times it is mapped)",
            mib(proportional)
        );
    }
    if let Some(parts) = resident_by_mapping(server.0.id()) {
        // Where the resident memory is: the largest parts, then the rest together.
        let shown: Vec<String> = parts
            .iter()
            .take(6)
            .map(|(label, kib)| format!("{label} {:.1}", mib(*kib)))
            .collect();
        let rest: u64 = parts.iter().skip(6).map(|(_, kib)| kib).sum();
        println!(
            "server RSS by mapping, MiB: {}, the rest {:.1}",
            shown.join(", "),
            mib(rest)
        );
    }
    Ok(Outcome::Clean)
}

/// A two-variant experiment on the first persona (versions 2 and 3, or the
/// first two of a shorter history) and the registry's prompt template,
/// committed on top of the generated history once, so `bench http` can
/// measure assignment on the same server.
fn add_bench_experiment(repository: &Path, revisions: usize) -> anyhow::Result<()> {
    let (pin_a, pin_b) = if revisions >= 3 { (2, 3) } else { (1, revisions.max(1)) };
    let file = repository.join("registry/experiments/bench.toml");
    if file.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(file.parent().context("a parent")?)?;
    std::fs::write(
        repository.join("registry/prompt.jinja"),
        include_str!("../../registry/prompt.jinja"),
    )?;
    let persona = SyntheticRegistry::persona_id(0);
    std::fs::write(
        &file,
        format!(
            "schema = 1\nstatus = \"running\"\nsalt = \"bench-1\"\npersona = \"{persona}\"\n\n\
             [[variants]]\nname = \"a\"\npin = {pin_a}\nweight = 50\n\n[[variants]]\nname = \"b\"\npin = {pin_b}\nweight = 50\n"
        ),
    )?;
    super::bench_write::git(repository, &["add", "registry"])?;
    super::bench_write::git(
        repository,
        &["commit", "-q", "-m", "bench: an experiment and the prompt template"],
    )?;
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

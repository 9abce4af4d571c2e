//! `personas bench …`: each figure measured against a reference taken in the
//! same run. `sync`: the full sync of a synthetic registry against merely
//! reading its history with git. `vectors`: indexing it against the model's
//! forward pass. `embed`: our embedder against a plain Python onnxruntime loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::process_memory::{ProcessMemory, mib};
use crate::cli::Outcome;
use crate::git::history::{HistoryWalk, WalkOptions};
use crate::git::open_repository;
use crate::store::Database;
use crate::sync::{SyncOptions, sync_once};
use crate::synthetic::SyntheticRegistry;
use crate::vectors::embed::SessionTuning;

const BRANCH: &str = "main";
/// Names the generated shape inside a kept repository's `.git`.
const SHAPE_MARKER: &str = ".git/personas-bench-shape";

fn shape_text(shape: &SyntheticRegistry) -> String {
    format!(
        "{} personas × {} revisions, {} per commit\n",
        shape.personas, shape.revisions, shape.personas_per_commit
    )
}

pub struct SyncBench<'a> {
    pub shape: SyntheticRegistry,
    /// Keep the generated repository and database here instead of a temporary directory.
    pub keep: Option<&'a Path>,
    /// An empty database to sync into instead of a managed cluster.
    pub database_url: Option<&'a str>,
}

/// A benchmark's working directory: `keep` when given (reused across runs,
/// made if missing), else a temporary one. Readable by other users: the
/// managed PostgreSQL and nginx workers read in there.
pub(crate) fn bench_root(keep: Option<&Path>) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let temporary = tempfile::Builder::new().prefix("personas-bench-").tempdir()?;
    let root = keep.map_or_else(|| temporary.path().to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&root).with_context(|| format!("making the --keep directory {}", root.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} readable by the database and nginx", root.display()))?;
    Ok((temporary, root))
}

/// The synthetic repository: generated under `keep` (or `temporary`), or
/// reused from `keep` when a previous run left one of the same shape.
pub(crate) fn prepare_repository(
    shape: &SyntheticRegistry,
    keep: Option<&Path>,
    temporary: &Path,
) -> anyhow::Result<PathBuf> {
    let repository = keep.unwrap_or(temporary).join("repository");
    if repository.exists() {
        // Generating is slow at full size; a kept repository of the same shape is reused.
        let marker = std::fs::read_to_string(repository.join(SHAPE_MARKER)).unwrap_or_default();
        if marker != shape_text(shape) {
            bail!(
                "{} holds a repository of another shape ({:?}); pass another --keep directory",
                repository.display(),
                marker.trim()
            );
        }
        eprintln!("reusing {}", repository.display());
    } else {
        eprintln!(
            "generating {} personas × {} revisions, {} per commit ({} commits)…",
            shape.personas,
            shape.revisions,
            shape.personas_per_commit,
            shape.commit_count()
        );
        let started = Instant::now();
        shape
            .write_repository(&repository, BRANCH)
            .context("generating the repository")?;
        std::fs::write(repository.join(SHAPE_MARKER), shape_text(shape))?;
        println!("generate        {:>9.2?}", started.elapsed());
    }
    Ok(repository)
}

/// Opens an empty database: the managed cluster in `data_dir`, or `database_url`.
async fn empty_database(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Database> {
    let database = Database::open(database_url, data_dir).await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM persona_versions")
        .fetch_one(&database.pool)
        .await?;
    if existing > 0 {
        database.close().await?;
        bail!("the bench needs an empty database; this one holds {existing} versions");
    }
    Ok(database)
}

pub fn sync(bench: SyncBench<'_>) -> anyhow::Result<Outcome> {
    let temporary = tempfile::Builder::new().prefix("personas-bench-").tempdir()?;
    let shape = bench.shape;
    let repository = prepare_repository(&shape, bench.keep, temporary.path())?;

    // Median of three on every side: the floor's spread between runs is
    // about a third, and a ratio of one lucky run to another says little.
    let mut floors = Vec::new();
    let mut blobs = 0;
    for _ in 0..RUNS {
        let (elapsed, count) = git_read_floor(&repository)?;
        floors.push(elapsed);
        blobs = count;
    }
    let floor = median(&mut floors);
    println!("git floor       {floor:>9.2?}  (git log --raw + cat-file --batch of {blobs} blobs, median of {RUNS})");

    let mut walks = Vec::new();
    let mut walked = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        walked = walk_only(&repository)?;
        walks.push(started.elapsed());
    }
    let walk = median(&mut walks);
    println!(
        "history read    {walk:>9.2?}  (gix walk + validation, {walked} commits, median of {RUNS})   {:.2}× floor",
        ratio(walk, floor)
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let mut syncs = Vec::new();
    let mut summary = None;
    // A database given by URL is filled by the first run: it is measured once.
    let sync_runs = if bench.database_url.is_some() { 1 } else { RUNS };
    for run in 0..sync_runs {
        let (done, elapsed) = runtime.block_on(async {
            // Each run into an empty database of its own.
            let database = empty_database(bench.database_url, &temporary.path().join(format!("data-{run}"))).await?;
            let started = Instant::now();
            let summary = sync_once(&database.pool, &SyncOptions::new(&repository, BRANCH)).await;
            let elapsed = started.elapsed();
            database.close().await?;
            anyhow::Ok((summary?, elapsed))
        })?;
        syncs.push(elapsed);
        summary = Some(done);
    }
    let summary = summary.context("no sync ran")?;
    let sync_time = median(&mut syncs);
    println!(
        "full sync       {sync_time:>9.2?}  ({} commits, {} versions, {:.0} versions/s, into an empty database, median of {sync_runs})",
        summary.commits,
        summary.versions,
        summary.versions as f64 / sync_time.as_secs_f64()
    );
    println!("ratio           {:>9.2}×  sync / git floor", ratio(sync_time, floor));
    let expected = (shape.personas * shape.revisions) as u64;
    if summary.versions != expected {
        bail!(
            "the sync wrote {} versions; the history holds {expected}",
            summary.versions
        );
    }
    Ok(Outcome::Clean)
}

/// Runs of each side of the sync bench; the median is reported.
const RUNS: usize = 3;

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ratio(time: Duration, reference: Duration) -> f64 {
    time.as_secs_f64() / reference.as_secs_f64()
}

/// What any reader of the history must at least do: list each commit's
/// changed files and read every changed blob once. Returns the time and the
/// number of blobs read.
fn git_read_floor(repository: &Path) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let log = Command::new("git")
        .args([
            "log",
            "--first-parent",
            "--reverse",
            "--raw",
            "--no-abbrev",
            "--format=%H",
            BRANCH,
        ])
        .current_dir(repository)
        .stderr(Stdio::inherit())
        .output()
        .context("running git log")?;
    if !log.status.success() {
        bail!("git log failed: {}", log.status);
    }
    let mut blobs = String::new();
    let mut count = 0;
    for line in log.stdout.split(|byte| *byte == b'\n') {
        // `:100644 100644 <old> <new> M\tpath`: the new blob is the fourth field.
        if line.first() == Some(&b':')
            && let Some(new) = line.split(|byte| *byte == b' ').nth(3)
            && new.iter().any(|byte| *byte != b'0')
        {
            blobs.push_str(std::str::from_utf8(new)?);
            blobs.push('\n');
            count += 1;
        }
    }
    let mut cat_file = Command::new("git")
        .args(["cat-file", "--batch"])
        .current_dir(repository)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running git cat-file")?;
    let mut stdin = cat_file.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(blobs.as_bytes()));
    let mut output = BufReader::new(cat_file.stdout.take().expect("piped"));
    let mut header = String::new();
    let mut body = Vec::new();
    loop {
        header.clear();
        if output.read_line(&mut header)? == 0 {
            break;
        }
        let size: usize = header
            .split(' ')
            .nth(2)
            .and_then(|size| size.trim().parse().ok())
            .with_context(|| format!("unexpected cat-file header {header:?}"))?;
        body.resize(size + 1, 0);
        output.read_exact(&mut body)?;
    }
    writer.join().expect("writer thread")?;
    cat_file.wait()?;
    Ok((started.elapsed(), count))
}

/// The history reader alone, without the database: where the sync's time goes.
fn walk_only(repository: &Path) -> anyhow::Result<usize> {
    let walk = HistoryWalk::new(
        open_repository(repository)?,
        &WalkOptions {
            tip: BRANCH.to_string(),
            after: None,
        },
    )?;
    let mut commits = 0;
    for record in walk {
        record?;
        commits += 1;
    }
    Ok(commits)
}

pub struct EmbedBench<'a> {
    pub texts: usize,
    pub model_dir: &'a Path,
    /// A Python with onnxruntime, tokenizers and numpy (`scripts/bench-python`).
    pub python: &'a Path,
    /// The session settings compared, each measured in a process of its own
    /// so one's memory cannot hide in another's figures.
    pub tunings: Vec<SessionTuning>,
    /// Set in those processes: measure this one setting and print it as JSON.
    pub probe: bool,
}

/// What one embedder setting did, measured in its own process.
#[derive(serde::Serialize, serde::Deserialize)]
struct EmbedProbe {
    texts_per_second: f64,
    tokens: usize,
    /// Before the model is loaded: the binary and the runtime library.
    before_load: ProcessMemory,
    /// The session created and one short text embedded.
    loaded: ProcessMemory,
    /// After all texts, the peak included.
    after: ProcessMemory,
    first_vector: Vec<f32>,
}

/// Synthetic persona profiles, as the projector would embed them.
fn embed_bench_texts(count: usize) -> Vec<String> {
    use crate::persona::settings::parse_settings;
    use crate::persona::validate::validate_persona;
    use crate::vectors::text::embedding_text;

    let (settings, _) = parse_settings("registry.toml", crate::synthetic::SETTINGS.as_bytes());
    (0..count)
        .map(|n| {
            let source = SyntheticRegistry::persona_text(n, n % 7);
            let parsed = validate_persona(
                "synthetic.toml",
                source.as_bytes(),
                &format!("synthetic-{n}"),
                &settings,
            );
            parsed.persona.as_ref().map(embedding_text).unwrap_or(source)
        })
        .collect()
}

fn probe_embedder(texts: &[String], model_dir: &Path, tuning: SessionTuning) -> anyhow::Result<EmbedProbe> {
    use crate::vectors::embed::Embedder;
    let memory = || ProcessMemory::of_this_process().context("reading /proc/self/status");
    let before_load = memory()?;
    let embedder = Embedder::load_with(model_dir, None, tuning)?;
    let loaded = memory()?;
    let tokens = embedder.tokenize(texts)?;
    embedder.embed(&texts[..tuning.batch_size.min(texts.len())])?; // warm-up
    let started = Instant::now();
    let vectors = embedder.embed(texts)?;
    let elapsed = started.elapsed();
    Ok(EmbedProbe {
        texts_per_second: texts.len() as f64 / elapsed.as_secs_f64(),
        tokens,
        before_load,
        loaded,
        after: memory()?,
        first_vector: vectors.into_iter().next().unwrap_or_default(),
    })
}

/// Embedding throughput and memory of our embedder, per session setting,
/// against a plain Python onnxruntime loop on the same model, texts, batch
/// size and token limit.
pub fn embed(bench: EmbedBench<'_>) -> anyhow::Result<Outcome> {
    use crate::vectors::embed::{BATCH_SIZE, MAX_TOKENS};

    let texts = embed_bench_texts(bench.texts);
    if bench.probe {
        let [tuning] = bench.tunings.as_slice() else {
            bail!("--probe measures one setting: give one --memory and one --batch");
        };
        let probe = probe_embedder(&texts, bench.model_dir, *tuning)?;
        println!("{}", serde_json::to_string(&probe)?);
        return Ok(Outcome::Clean);
    }
    let myself = std::env::current_exe().context("finding this program to run the probes")?;
    let mut probes = Vec::new();
    for tuning in &bench.tunings {
        let output = Command::new(&myself)
            .args(["bench", "embed", "--probe", "--texts", &bench.texts.to_string()])
            .arg("--model-dir")
            .arg(bench.model_dir)
            .args([
                "--memory",
                tuning.memory.name(),
                "--batch",
                &tuning.batch_size.to_string(),
            ])
            .args(["--constant-folding", &tuning.constant_folding.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .context("running an embedder probe")?;
        if !output.status.success() {
            bail!("the embedder probe for {tuning:?} failed ({})", output.status);
        }
        let probe: EmbedProbe = serde_json::from_slice(&output.stdout).context("reading a probe's output")?;
        probes.push((*tuning, probe));
    }

    let reference = python_reference(bench.python, bench.model_dir, &texts, BATCH_SIZE)?;
    let reference_rate = reference["texts_per_second"].as_f64().context("texts_per_second")?;
    let reference_vector: Vec<f32> = serde_json::from_value(reference["first_vector"].clone())?;
    let tokens = probes.first().map(|(_, probe)| probe.tokens).unwrap_or(0);
    println!(
        "texts           {:>9}  (synthetic persona profiles, {:.0} tokens each on average, ≤ {MAX_TOKENS})",
        texts.len(),
        tokens as f64 / texts.len().max(1) as f64
    );
    println!(
        "python ort      {reference_rate:>9.1} texts/s  (plain onnxruntime loop, batch {BATCH_SIZE}, its default arena)"
    );
    for (tuning, probe) in &probes {
        println!(
            "{:<8} × {:<3} {:<8} {:>7.1} texts/s  {:.2}× the reference; RSS {:.0} MiB before loading, \
             {:.0} loaded, {:.0} after the texts (peak {:.0}, anonymous {:.0})",
            tuning.memory.name(),
            tuning.batch_size,
            if tuning.constant_folding { "folded" } else { "unfolded" },
            probe.texts_per_second,
            probe.texts_per_second / reference_rate,
            mib(probe.before_load.rss_kib),
            mib(probe.loaded.rss_kib),
            mib(probe.after.rss_kib),
            mib(probe.after.peak_kib),
            mib(probe.after.anonymous_kib),
        );
        let agreement: f32 = reference_vector
            .iter()
            .zip(&probe.first_vector)
            .map(|(a, b)| a * b)
            .sum();
        if agreement < 0.999 {
            bail!("{tuning:?}: our vectors differ from the reference's (cosine {agreement}): not the same computation");
        }
    }
    println!("agreement       every setting's first vector has cosine ≥ 0.999 with the reference's");
    Ok(Outcome::Clean)
}

pub struct VectorBench<'a> {
    pub shape: SyntheticRegistry,
    pub keep: Option<&'a Path>,
    pub database_url: Option<&'a str>,
    pub model_dir: Option<&'a Path>,
    pub ort_library: Option<&'a Path>,
    /// A Python with onnxruntime: it times the forward pass alone.
    pub python: &'a Path,
}

/// Runs `benches/embed_reference.py` (plain Python onnxruntime) on `texts`
/// and returns its JSON report.
fn python_reference(
    python: &Path,
    model_dir: &Path,
    texts: &[String],
    batch_size: usize,
) -> anyhow::Result<serde_json::Value> {
    let file = tempfile::NamedTempFile::new()?;
    serde_json::to_writer(&file, texts)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/embed_reference.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(model_dir)
        .arg(file.path())
        .arg(batch_size.to_string())
        .arg(crate::vectors::embed::MAX_TOKENS.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} (make one with scripts/bench-python)", python.display()))?;
    if !output.status.success() {
        bail!(
            "the Python reference failed ({}); try --python $(scripts/bench-python)",
            output.status
        );
    }
    serde_json::from_slice(&output.stdout).context("reading the reference's output")
}

/// Indexing a synthetic registry after a full sync: how many model passes it
/// takes (one per current persona, none on a re-sync) and how much of the
/// time is spent outside the model's forward pass.
pub fn vectors(bench: VectorBench<'_>) -> anyhow::Result<Outcome> {
    use crate::vectors::edge::EdgeIndex;
    use crate::vectors::projector::VectorProjector;
    use crate::vectors::setup::{PROVISIONING_HINT, load_embedder};
    use crate::vectors::text::embedding_text;

    let temporary = tempfile::Builder::new().prefix("personas-bench-").tempdir()?;
    let shape = bench.shape;
    let repository = prepare_repository(&shape, bench.keep, temporary.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let database = empty_database(bench.database_url, &temporary.path().join("data")).await?;
        let options = SyncOptions::new(&repository, BRANCH);
        let started = Instant::now();
        let synced = sync_once(&database.pool, &options).await?;
        println!(
            "sync            {:>9.2?}  ({} commits, {} versions)",
            started.elapsed(),
            synced.commits,
            synced.versions
        );
        let model = crate::config::Config {
            model_dir: bench.model_dir.map(Path::to_path_buf),
            ort_library: bench.ort_library.map(Path::to_path_buf),
            ..crate::config::Config::default()
        };
        let embedder = load_embedder(&model)
            .await?
            .with_context(|| format!("no embedding model; {PROVISIONING_HINT}"))?;
        let index = EdgeIndex::open(&temporary.path().join("vectors"), embedder.dimension()).await?;
        let projector = VectorProjector::new(database.pool.clone(), index, embedder.clone());

        let started = Instant::now();
        let indexed = projector.drain().await?;
        let total = started.elapsed();

        // The floor: the model's forward pass alone on the same texts and
        // batch size, timed around onnxruntime's session.run in the Python
        // reference (the same model file and runtime version); and our
        // tokenizer alone on those texts.
        let documents: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT v.document FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
             WHERE NOT p.deleted",
        )
        .fetch_all(&database.pool)
        .await?;
        let texts = documents
            .into_iter()
            .map(|document| serde_json::from_value(document).map(|persona| embedding_text(&persona)))
            .collect::<Result<Vec<String>, _>>()?;
        let model_dir = model
            .model_dir
            .clone()
            .with_context(|| format!("the forward pass is timed on the model directory; {PROVISIONING_HINT}"))?;
        let reference = python_reference(bench.python, &model_dir, &texts, embedder.batch_size())?;
        let forward = Duration::from_secs_f64(
            reference["forward_seconds"]
                .as_f64()
                .context("the reference reported no forward_seconds")?,
        );
        let tokenizer = embedder.clone();
        let tokenize_started = Instant::now();
        let tokens = tokio::task::spawn_blocking(move || tokenizer.tokenize(&texts)).await??;
        let tokenizing = tokenize_started.elapsed();
        let overhead = total.saturating_sub(forward);

        sync_once(&database.pool, &options).await?;
        let started = Instant::now();
        let resynced = projector.drain().await?;
        let resync_time = started.elapsed();
        let points = crate::vectors::index::VectorIndex::count(projector.index()).await?;
        drop(projector);
        database.close().await?;

        println!(
            "index           {total:>9.2?}  ({} personas, {:.1} personas/s, {tokens} tokens)",
            indexed.upserted,
            indexed.upserted as f64 / total.as_secs_f64()
        );
        println!(
            "  forward pass  {forward:>9.2?}  (the model alone, measured: session.run in Python onnxruntime on the \
             same texts, batches of {}: the floor)",
            embedder.batch_size()
        );
        println!("  tokenizing    {tokenizing:>9.2?}  (our tokenizer alone on the same texts, measured)");
        println!(
            "  the rest      {:>9.2?}  (the index time less the two above: text, pooling, outbox, cache, upserts)",
            overhead.saturating_sub(tokenizing)
        );
        println!(
            "overhead        {:>8.1}%  of the indexing time spent outside the forward pass",
            100.0 * overhead.as_secs_f64() / total.as_secs_f64()
        );
        println!(
            "model passes    {:>9}  for {} versions of {} current personas ({} wasted)",
            indexed.embedded,
            synced.versions,
            points,
            indexed.embedded.saturating_sub(points)
        );
        println!(
            "re-sync         {resync_time:>9.2?}  ({} model passes, {} writes)",
            resynced.embedded, resynced.upserted
        );
        if indexed.embedded != shape.personas as u64 || points != shape.personas as u64 || resynced.embedded != 0 {
            bail!(
                "expected {} model passes and points, then none: got {} passes, {points} points, {} on the re-sync",
                shape.personas,
                indexed.embedded,
                resynced.embedded
            );
        }
        Ok(Outcome::Clean)
    })
}

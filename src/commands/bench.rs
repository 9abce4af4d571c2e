//! `personas bench sync`: the full-sync time of a synthetic registry, against
//! the floor of merely reading the same history with git, in one run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::cli::Outcome;
use crate::git::history::{HistoryWalk, WalkOptions};
use crate::git::open_repository;
use crate::store::Database;
use crate::sync::{SyncOptions, sync_once};
use crate::synthetic::SyntheticRegistry;

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

pub fn sync(bench: SyncBench<'_>) -> anyhow::Result<Outcome> {
    let temporary = tempfile::Builder::new().prefix("personas-bench-").tempdir()?;
    let repository = bench.keep.unwrap_or(temporary.path()).join("repository");
    let shape = bench.shape;
    if repository.exists() {
        // Generating is slow at full size; a kept repository of the same shape is reused.
        let marker = std::fs::read_to_string(repository.join(SHAPE_MARKER)).unwrap_or_default();
        if marker != shape_text(&shape) {
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
        std::fs::write(repository.join(SHAPE_MARKER), shape_text(&shape))?;
        println!("generate        {:>9.2?}", started.elapsed());
    }

    // Best of three: the floor should be the floor, page cache warm.
    let mut floor = Duration::MAX;
    let mut blobs = 0;
    for _ in 0..3 {
        let (elapsed, count) = git_read_floor(&repository)?;
        floor = floor.min(elapsed);
        blobs = count;
    }
    println!("git floor       {floor:>9.2?}  (git log --raw + cat-file --batch of {blobs} blobs)");

    let started = Instant::now();
    let walked = walk_only(&repository)?;
    let walk = started.elapsed();
    println!(
        "history read    {walk:>9.2?}  (gix walk + validation, {walked} commits)   {:.2}× floor",
        ratio(walk, floor)
    );

    let runtime = tokio::runtime::Runtime::new()?;
    let (summary, sync_time) = runtime.block_on(async {
        // The managed cluster always starts empty, in the temporary directory.
        let database = Database::open(bench.database_url, &temporary.path().join("data")).await?;
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM persona_versions")
            .fetch_one(&database.pool)
            .await?;
        if existing > 0 {
            database.close().await?;
            bail!("the bench needs an empty database; this one holds {existing} versions");
        }
        let started = Instant::now();
        let summary = sync_once(&database.pool, &SyncOptions::new(&repository, BRANCH)).await;
        let elapsed = started.elapsed();
        database.close().await?;
        anyhow::Ok((summary?, elapsed))
    })?;
    println!(
        "full sync       {sync_time:>9.2?}  ({} commits, {} versions, {:.0} versions/s)",
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
}

/// Embedding throughput of our embedder against a plain Python onnxruntime
/// loop on the same model, texts, batch size and token limit.
pub fn embed(bench: EmbedBench<'_>) -> anyhow::Result<Outcome> {
    use crate::persona::settings::parse_settings;
    use crate::persona::validate::validate_persona;
    use crate::vectors::embed::{BATCH_SIZE, Embedder, MAX_TOKENS};
    use crate::vectors::text::embedding_text;

    let (settings, _) = parse_settings("registry.toml", crate::synthetic::SETTINGS.as_bytes());
    let texts: Vec<String> = (0..bench.texts)
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
        .collect();
    let embedder = Embedder::load(bench.model_dir, None)?;
    embedder.embed(&texts[..BATCH_SIZE.min(texts.len())])?; // warm-up
    let started = Instant::now();
    let ours = embedder.embed(&texts)?;
    let our_time = started.elapsed();

    let file = tempfile::NamedTempFile::new()?;
    serde_json::to_writer(&file, &texts)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/embed_reference.py");
    let output = Command::new(bench.python)
        .arg(&script)
        .arg(bench.model_dir)
        .arg(file.path())
        .arg(BATCH_SIZE.to_string())
        .arg(MAX_TOKENS.to_string())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "running {} (make one with scripts/bench-python)",
                bench.python.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "the Python reference failed ({}); try --python $(scripts/bench-python)",
            output.status
        );
    }
    let reference: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading the reference's output")?;
    let reference_rate = reference["texts_per_second"].as_f64().context("texts_per_second")?;
    let first: Vec<f32> = serde_json::from_value(reference["first_vector"].clone())?;
    let agreement: f32 = first.iter().zip(&ours[0]).map(|(a, b)| a * b).sum();
    let our_rate = texts.len() as f64 / our_time.as_secs_f64();
    println!(
        "texts           {:>9}  (synthetic persona profiles, batch {BATCH_SIZE}, ≤ {MAX_TOKENS} tokens)",
        texts.len()
    );
    println!("python ort      {reference_rate:>9.1} texts/s  (plain onnxruntime loop, same model and inputs)");
    println!("personas        {our_rate:>9.1} texts/s  ({:.2?})", our_time);
    println!("ratio           {:>9.2}×  ours / reference", our_rate / reference_rate);
    println!("agreement       {agreement:>9.5}   cosine of the first text's two vectors");
    if agreement < 0.999 {
        bail!("our vectors differ from the reference's (cosine {agreement}): not the same computation");
    }
    Ok(Outcome::Clean)
}

//! `personas bench site`: `build-site` on a synthetic registry, against the
//! floor of copying the very files it wrote (`cp -r`, measured in the same
//! run); then one commit editing 10 personas and `build-site` into the same
//! directory, checked against a full build of that commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};

use super::bench::{bench_root, prepare_repository};
use super::bench_write::git;
use crate::cli::Outcome;
use crate::synthetic::SyntheticRegistry;

pub struct SiteBench<'a> {
    pub shape: SyntheticRegistry,
    /// Keep (and reuse) the repository, database and index here.
    pub keep: Option<&'a Path>,
}

pub fn site(bench: SiteBench<'_>) -> anyhow::Result<Outcome> {
    let (temporary, root) = bench_root(bench.keep)?;
    let repository = prepare_repository(&bench.shape, Some(&root), temporary.path())?;
    let data_dir = root.join("data");
    let personas = |arguments: &[&str], out: Option<&Path>| -> anyhow::Result<()> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(arguments)
            .args(["--branch", "main", "--repo"])
            .arg(&repository)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("DATABASE_URL")
            .env_remove("QDRANT_URL")
            .env("RUST_LOG", "warn,qdrant_edge=error");
        if let Some(out) = out {
            command.arg("--out").arg(out);
        }
        let status = command
            .status()
            .with_context(|| format!("running personas {}", arguments[0]))?;
        if !status.success() {
            bail!("personas {} failed ({status})", arguments[0]);
        }
        Ok(())
    };
    // Syncing and embedding a fresh registry is the sync's cost, not the
    // build's: done first (a no-op on kept data), so the measured build finds
    // the projection current, as a CI build of a synced registry does.
    eprintln!("preparing: sync and index {} personas…", bench.shape.personas);
    personas(&["sync"], None)?;
    // Three full builds, each followed by a copy of its output, nothing
    // deleted in between: on ext4 without a journal, creating files soon
    // after deleting many is slower (inodes freed in the last 30 to 60 s
    // are skipped), and whichever side ran after a deletion would pay it.
    let (mut build_times, mut copy_times) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let built = temporary.path().join(format!("site-{run}"));
        flush_written_files()?;
        let started = Instant::now();
        personas(&["build-site", "--no-sync"], Some(&built))?;
        build_times.push(started.elapsed());
        let copy = temporary.path().join(format!("copy-{run}"));
        flush_written_files()?;
        let started = Instant::now();
        let status = Command::new("cp").arg("-r").arg(&built).arg(&copy).status()?;
        copy_times.push(started.elapsed());
        if !status.success() {
            bail!("cp -r failed ({status})");
        }
    }
    let site = temporary.path().join("site-0");
    let (files, bytes) = tree_size(&site)?;
    let build_time = median(&mut build_times);
    let copy_time = median(&mut copy_times);
    println!(
        "registry        {} personas × {} versions",
        bench.shape.personas, bench.shape.revisions
    );
    println!(
        "build-site      {:>9.2?}  (a full build into a new directory, median of {RUNS}: {files} files, {:.1} MiB, {:.0} files/s)",
        build_time,
        bytes as f64 / (1024.0 * 1024.0),
        files as f64 / build_time.as_secs_f64()
    );
    println!("cp -r (floor)   {copy_time:>9.2?}  (the same files copied, median of {RUNS}: the reference)");
    println!(
        "ratio           {:>8.2}×  the copy floor",
        build_time.as_secs_f64() / copy_time.as_secs_f64()
    );

    // One commit that edits 10 personas (a description each, so their
    // vectors move too), then build-site into the same directory.
    let edited = edit_personas(&repository, bench.shape.personas, EDITED)?;
    let before = modification_times(&site)?;
    flush_written_files()?;
    let started = Instant::now();
    personas(&["build-site"], Some(&site))?;
    let incremental_time = started.elapsed();
    let after = modification_times(&site)?;
    let rewritten = after
        .iter()
        .filter(|(file, stamp)| before.get(*file) != Some(*stamp))
        .count();
    let removed = before.keys().filter(|file| !after.contains_key(*file)).count();
    // The same commit built in full into a fresh directory: the update must equal it.
    let fresh = temporary.path().join("fresh");
    personas(&["build-site", "--no-sync"], Some(&fresh))?;
    let differing = differing_files(&site, &fresh)?;
    println!(
        "after a commit  {incremental_time:>9.2?}  (build-site into the same directory after one commit editing \
         {edited} personas, sync and indexing included: {rewritten} files written, {removed} removed, of {})",
        after.len()
    );
    if differing.is_empty() {
        println!("                           (byte-identical to a full build of the same commit)");
    } else {
        bail!(
            "the updated copy differs from a full build of the same commit in {} files, e.g. {:?}",
            differing.len(),
            &differing[..differing.len().min(5)]
        );
    }
    Ok(Outcome::Clean)
}

/// Writes the page cache's dirty pages to disk (`sync`) before a timed step:
/// a 1.6 GB build or copy leaves that much dirty, and the kernel writes it
/// back during whatever runs next, so without this each side paid for part
/// of the other's writeback (the same copy took 33 s alone and 46 to 57 s
/// after a build).
fn flush_written_files() -> anyhow::Result<()> {
    let status = Command::new("sync")
        .status()
        .context("running sync(1) to flush the previous step's writes")?;
    if !status.success() {
        bail!("sync(1) failed ({status})");
    }
    Ok(())
}

/// Full builds and copies measured; the median of each is reported.
const RUNS: usize = 3;

fn median(times: &mut [std::time::Duration]) -> std::time::Duration {
    times.sort();
    times[times.len() / 2]
}

/// Personas one measured commit edits.
const EDITED: usize = 10;

/// Commits a new description for `count` personas spread over the registry; returns how many.
fn edit_personas(repository: &Path, personas: usize, count: usize) -> anyhow::Result<usize> {
    let round = git(repository, &["rev-list", "--count", "HEAD"])?.trim().to_string();
    let count = count.min(personas);
    // Other personas each round: on a kept repository, editing the same ones
    // every run would grow their histories, and with them what the build
    // in place renders, so that runs would not measure the same work.
    let shift: usize = round.parse().unwrap_or(0);
    for slot in 0..count {
        let n = (slot * personas / count + shift) % personas;
        let path = repository.join(format!("registry/personas/synthetic-{n}.toml"));
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let start = text.find("\ndescription = ").context("a description line")? + 1;
        let end = start + text[start..].find('\n').unwrap_or(text.len() - start);
        let edited = format!(
            "{}description = \"Persona {n}, rewritten by bench site in round {round}.\"{}",
            &text[..start],
            &text[end..]
        );
        std::fs::write(&path, edited).with_context(|| format!("writing {}", path.display()))?;
    }
    git(
        repository,
        &[
            "commit",
            "--quiet",
            "-am",
            &format!("bench site: edit {count} personas"),
        ],
    )?;
    Ok(count)
}

/// Every file's modification time, by path relative to `root`.
fn modification_times(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, SystemTime>> {
    let mut times = BTreeMap::new();
    for (file, metadata) in walk(root)? {
        times.insert(file, metadata.modified()?);
    }
    Ok(times)
}

/// Files present in one tree only or with different bytes.
fn differing_files(left: &Path, right: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let left_files: BTreeMap<PathBuf, std::fs::Metadata> = walk(left)?.into_iter().collect();
    let right_files: BTreeMap<PathBuf, std::fs::Metadata> = walk(right)?.into_iter().collect();
    let mut differing = Vec::new();
    for file in left_files
        .keys()
        .chain(right_files.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let same = left_files.contains_key(file)
            && right_files.contains_key(file)
            && std::fs::read(left.join(file))? == std::fs::read(right.join(file))?;
        if !same {
            differing.push(file.clone());
        }
    }
    Ok(differing)
}

fn walk(root: &Path) -> anyhow::Result<Vec<(PathBuf, std::fs::Metadata)>> {
    let mut found = Vec::new();
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                directories.push(entry.path());
            } else {
                found.push((entry.path().strip_prefix(root)?.to_path_buf(), metadata));
            }
        }
    }
    Ok(found)
}

fn tree_size(root: &Path) -> anyhow::Result<(usize, u64)> {
    let files = walk(root)?;
    Ok((files.len(), files.iter().map(|(_, metadata)| metadata.len()).sum()))
}

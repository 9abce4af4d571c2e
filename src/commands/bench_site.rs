//! `personas bench site`: `build-site` on a synthetic registry, against the
//! floor of copying the very files it wrote (`cp -r`, measured in the same run).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use super::bench::{bench_root, prepare_repository};
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
    let site = temporary.path().join("site");
    let started = Instant::now();
    personas(&["build-site"], Some(&site))?;
    let build_time = started.elapsed();

    let (files, bytes) = tree_size(&site)?;
    let copy = temporary.path().join("copy");
    let started = Instant::now();
    let status = Command::new("cp").arg("-r").arg(&site).arg(&copy).status()?;
    let copy_time = started.elapsed();
    if !status.success() {
        bail!("cp -r failed ({status})");
    }
    println!(
        "registry        {} personas × {} versions",
        bench.shape.personas, bench.shape.revisions
    );
    println!(
        "build-site      {:>9.2?}  ({files} files, {:.1} MiB, {:.0} files/s)",
        build_time,
        bytes as f64 / (1024.0 * 1024.0),
        files as f64 / build_time.as_secs_f64()
    );
    println!("cp -r (floor)   {copy_time:>9.2?}  (the same files copied: the reference)");
    println!(
        "ratio           {:>8.1}×  the copy floor",
        build_time.as_secs_f64() / copy_time.as_secs_f64()
    );
    Ok(Outcome::Clean)
}

fn tree_size(root: &Path) -> anyhow::Result<(usize, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                directories.push(entry.path());
            } else {
                files += 1;
                bytes += metadata.len();
            }
        }
    }
    Ok((files, bytes))
}

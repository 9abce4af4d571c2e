//! `personas build-site --out DIR`: project the repository (as `sync` does),
//! bring the vector index up to date for the "similar personas" lists, then
//! write a static copy of the site and the read API.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::session::{progress_bar, with_database};
use super::sync::vector_projector;
use crate::cli::Outcome;
use crate::config::Config;
use crate::export::{SiteBuild, build};
use crate::sync::{RETRY_ATTEMPTS, SyncOptions, sync_with_retry};
use crate::vectors::setup::{PROVISIONING_HINT, open_vectors};
use crate::web::{Shared, StaticSite};

pub struct BuildSiteCommand<'a> {
    pub repository: &'a Path,
    pub branch: &'a str,
    pub out: &'a Path,
    pub base_url: Option<&'a str>,
    /// Render the projection as it is, without syncing first.
    pub no_sync: bool,
    pub config: &'a Config,
}

pub fn run(command: BuildSiteCommand<'_>) -> anyhow::Result<Outcome> {
    if let Some(base) = command.base_url {
        let parsed = url::Url::parse(base).with_context(|| format!("--base-url {base:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--base-url {base:?}: only http and https addresses can host the site");
        }
    }
    with_database(command.repository, command.config, async |database, data_dir| {
        if !command.no_sync {
            let mut options = SyncOptions::new(command.repository, command.branch);
            options.progress = progress_bar("syncing", "commits");
            let summary = sync_with_retry(&database.pool, &options, RETRY_ATTEMPTS).await?;
            options.progress.finish_and_clear();
            eprintln!("sync: {summary}");
        }
        let vectors = open_vectors(command.config, data_dir).await?;
        match vector_projector(database, vectors.as_ref()) {
            Some(projector) => {
                let bar = progress_bar("indexing", "personas");
                let summary = projector.reconcile(false, &bar).await?;
                bar.finish_and_clear();
                eprintln!("vectors: {summary}");
            }
            None => eprintln!("note: no embedding model, so pages list no similar personas; {PROVISIONING_HINT}"),
        }
        let state = Arc::new(Shared::for_static_site(
            database.pool.clone(),
            vectors,
            StaticSite {
                base_url: command.base_url.map(str::to_string),
            },
        ));
        let started = std::time::Instant::now();
        let progress = progress_bar("rendering", "files");
        let summary = build(
            state,
            &SiteBuild {
                out: command.out,
                progress: progress.clone(),
            },
        )
        .await?;
        progress.finish_and_clear();
        eprintln!(
            "build-site: {summary} in {:.1} s → {}",
            started.elapsed().as_secs_f64(),
            command.out.display()
        );
        Ok(Outcome::Clean)
    })
}

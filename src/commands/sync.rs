//! `personas sync`: project the repository into PostgreSQL, once or continuously.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::session::{Stop, progress_bar, shutdown_signal, with_database};
use crate::cli::Outcome;
use crate::config::Config;
use crate::git::remote::Mirror;
use crate::store::Database;
use crate::sync::follow::{Source, follow};
use crate::sync::{RETRY_ATTEMPTS, SyncOptions, sync_with_retry};
use crate::vectors::index::VectorIndex;
use crate::vectors::projector::VectorProjector;
use crate::vectors::setup::{AnyIndex, PROVISIONING_HINT, Vectors, open_vectors};
use crate::webhooks::deliver::Worker;

pub struct SyncCommand<'a> {
    pub repository: &'a Path,
    pub branch: &'a str,
    pub watch: bool,
    pub wait: bool,
    pub remote: Option<&'a str>,
    pub fetch_interval: Duration,
    /// Keep the vector index in step (unless `--no-vectors`).
    pub vectors: bool,
    pub config: &'a Config,
}

pub fn run(command: SyncCommand<'_>) -> anyhow::Result<Outcome> {
    with_database(command.repository, command.config, async |database, data_dir| {
        sync(&command, data_dir, database).await.map(|()| Outcome::Clean)
    })
}

/// The vector side of a sync: `None` (with the reason logged) when it is
/// switched off or no model is provisioned; the outbox then keeps the updates.
async fn projector(
    command: &SyncCommand<'_>,
    data_dir: &Path,
    database: &Database,
) -> anyhow::Result<Option<VectorProjector<Arc<AnyIndex>>>> {
    if !command.vectors {
        return Ok(None);
    }
    let vectors = open_vectors(command.config, data_dir).await?;
    Ok(vector_projector(database, vectors.as_ref()))
}

/// The outbox worker over `vectors`; `None`, with the reason logged, without a model.
pub fn vector_projector(database: &Database, vectors: Option<&Vectors>) -> Option<VectorProjector<Arc<AnyIndex>>> {
    match vectors {
        Some(Vectors { embedder, index }) => Some(VectorProjector::new(
            database.pool.clone(),
            Arc::clone(index),
            Arc::clone(embedder),
        )),
        None => {
            tracing::warn!(
                "the vector index is not updated: no embedding model; {PROVISIONING_HINT}. \
                 Its updates wait in the outbox until then"
            );
            None
        }
    }
}

/// Where commits come from (the repository, or a mirror of `remote` under
/// `data_dir`) and the sync options for it.
pub fn source_and_options(
    repository: &Path,
    branch: &str,
    remote: Option<&str>,
    fetch_interval: Duration,
    data_dir: &Path,
) -> (Source, SyncOptions) {
    let (source, repository) = match remote {
        Some(url) => {
            let mirror = Mirror::under(data_dir, url, branch);
            let path = mirror.path.clone();
            (
                Source::Remote {
                    mirror,
                    interval: fetch_interval,
                },
                path,
            )
        }
        None => (Source::Local, repository.to_path_buf()),
    };
    let mut options = SyncOptions::new(repository, branch);
    options.readings_file = crate::git::readings::location(data_dir);
    (source, options)
}

async fn sync(command: &SyncCommand<'_>, data_dir: &Path, database: &Database) -> anyhow::Result<()> {
    let (source, mut options) = source_and_options(
        command.repository,
        command.branch,
        command.remote,
        command.fetch_interval,
        data_dir,
    );
    options.wait_for_lock = command.wait;
    options.progress = progress_bar("syncing", "commits");
    if !command.watch {
        if let Source::Remote { mirror, .. } = &source {
            let mirror = mirror.clone();
            tokio::task::spawn_blocking(move || mirror.fetch()).await??;
        }
        let summary = sync_with_retry(&database.pool, &options, RETRY_ATTEMPTS).await?;
        options.progress.finish_and_clear();
        eprintln!("sync: {summary}");
        if let Some(projector) = projector(command, data_dir, database).await? {
            let bar = progress_bar("indexing", "personas");
            let summary = projector.reconcile(false, &bar).await.with_context(|| {
                format!(
                    "the versions are projected, but updating the vector index ({}) failed; \
                     its updates stay in the outbox and the next sync retries them",
                    projector.index().location()
                )
            })?;
            bar.finish_and_clear();
            eprintln!("vectors: {summary}");
        }
        return Ok(());
    }
    let projector = projector(command, data_dir, database).await?;
    let stop = Stop::new();
    // The writer delivers the change notifications too (serve replicas may share the work).
    let webhooks = Worker::for_command(&database.pool, command.config.webhooks.as_deref())?;
    if let Some(worker) = &webhooks {
        eprintln!("webhooks: {}", worker.describe());
    }
    let delivering = async {
        if let Some(worker) = webhooks {
            worker.run(stop.wait()).await;
        }
    };
    let signalled = async {
        tokio::select! {
            _ = shutdown_signal() => stop.now(),
            _ = stop.wait() => {}
        }
    };
    let (result, (), ()) = tokio::join!(
        follow_and_index(database, &options, &source, projector.as_ref(), &stop),
        signalled,
        delivering
    );
    result?;
    Ok(())
}

/// Follows the branch and keeps the vector index in step until `stop`; a
/// failed follow stops everything else too.
pub async fn follow_and_index(
    database: &Database,
    options: &SyncOptions,
    source: &Source,
    projector: Option<&VectorProjector<Arc<AnyIndex>>>,
    stop: &Stop,
) -> anyhow::Result<()> {
    let wake = tokio::sync::Notify::new();
    let following = async {
        let result = follow(&database.pool, options, source, stop.wait(), |summary| {
            options.progress.finish_and_clear();
            eprintln!("sync: {summary}");
            options.progress.reset();
            wake.notify_one();
        })
        .await;
        stop.now();
        result
    };
    let indexing = async {
        if let Some(projector) = projector {
            projector.run(&wake, stop.wait()).await;
        }
    };
    let (result, ()) = tokio::join!(following, indexing);
    Ok(result?)
}

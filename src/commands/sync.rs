//! `personas sync`: project the repository into PostgreSQL, once or continuously.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::Outcome;
use crate::config::Config;
use crate::git::remote::Mirror;
use crate::store::Database;
use crate::sync::follow::{Source, follow};
use crate::sync::{RETRY_ATTEMPTS, SyncOptions, sync_with_retry};
use crate::vectors::index::VectorIndex;
use crate::vectors::projector::VectorProjector;
use crate::vectors::setup::{AnyIndex, PROVISIONING_HINT, Vectors, open_vectors};

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

/// The managed cluster and the embedded index live here unless configured elsewhere.
pub fn data_dir(config: &Config, repository: &Path) -> PathBuf {
    config.data_dir.clone().unwrap_or_else(|| repository.join(".personas"))
}

pub fn run(command: SyncCommand<'_>) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let data_dir = data_dir(command.config, command.repository);
        let database = Database::open(command.config.database_url.as_deref(), &data_dir).await?;
        let result = sync(&command, &data_dir, &database).await;
        database.close().await?;
        result.map(|()| Outcome::Clean)
    })
}

/// The vector side of a sync: `None` (with the reason logged) when it is
/// switched off or no model is provisioned; the outbox then keeps the updates.
async fn projector(
    command: &SyncCommand<'_>,
    data_dir: &Path,
    database: &Database,
) -> anyhow::Result<Option<VectorProjector<AnyIndex>>> {
    if !command.vectors {
        return Ok(None);
    }
    match open_vectors(command.config, data_dir).await? {
        Some(Vectors { embedder, index }) => Ok(Some(VectorProjector::new(database.pool.clone(), index, embedder))),
        None => {
            tracing::warn!(
                "the vector index is not updated: no embedding model; {PROVISIONING_HINT}. \
                 Its updates wait in the outbox until then"
            );
            Ok(None)
        }
    }
}

async fn sync(command: &SyncCommand<'_>, data_dir: &Path, database: &Database) -> anyhow::Result<()> {
    let (source, repository) = match command.remote {
        Some(url) => {
            let mirror = Mirror::under(data_dir, url, command.branch);
            let path = mirror.path.clone();
            let interval = command.fetch_interval;
            (Source::Remote { mirror, interval }, path)
        }
        None => (Source::Local, command.repository.to_path_buf()),
    };
    let mut options = SyncOptions::new(repository, command.branch);
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
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wake = tokio::sync::Notify::new();
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    let following = async {
        let result = follow(&database.pool, &options, &source, until_stopped(), |summary| {
            options.progress.finish_and_clear();
            eprintln!("sync: {summary}");
            options.progress.reset();
            wake.notify_one();
        })
        .await;
        // A failed follow ends the vector worker too.
        let _ = stop.send(true);
        result
    };
    let indexing = async {
        if let Some(projector) = &projector {
            projector.run(&wake, until_stopped()).await;
        }
    };
    let signalled = async {
        tokio::select! {
            _ = shutdown_signal() => { let _ = stop.send(true); }
            _ = until_stopped() => {}
        }
    };
    let (result, (), ()) = tokio::join!(following, indexing, signalled);
    result?;
    Ok(())
}

/// A bar on an interactive terminal, nothing otherwise (logs stay clean).
pub fn progress_bar(doing: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {doing} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"
        ))
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar
}

/// Resolves on Ctrl-C or SIGTERM (how service managers stop a daemon).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

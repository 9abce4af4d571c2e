//! `personas sync`: project the repository into PostgreSQL, once or continuously.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Outcome, StoreArgs};
use crate::git::remote::Mirror;
use crate::store::Database;
use crate::sync::follow::{Source, follow};
use crate::sync::{RETRY_ATTEMPTS, SyncOptions, sync_with_retry};

pub struct SyncCommand<'a> {
    pub repository: &'a Path,
    pub branch: &'a str,
    pub watch: bool,
    pub wait: bool,
    pub remote: Option<&'a str>,
    pub fetch_interval: Duration,
    pub store: &'a StoreArgs,
}

pub fn run(command: SyncCommand<'_>) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let data_dir = command
            .store
            .data_dir
            .clone()
            .unwrap_or_else(|| command.repository.join(".personas"));
        let database = Database::open(command.store.database_url.as_deref(), &data_dir).await?;
        let result = sync(&command, &data_dir, &database).await;
        database.close().await?;
        result.map(|()| Outcome::Clean)
    })
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
    options.progress = progress_bar();
    if !command.watch {
        if let Source::Remote { mirror, .. } = &source {
            let mirror = mirror.clone();
            tokio::task::spawn_blocking(move || mirror.fetch()).await??;
        }
        let summary = sync_with_retry(&database.pool, &options, RETRY_ATTEMPTS).await?;
        options.progress.finish_and_clear();
        eprintln!("sync: {summary}");
        return Ok(());
    }
    follow(&database.pool, &options, &source, shutdown_signal(), |summary| {
        options.progress.finish_and_clear();
        eprintln!("sync: {summary}");
        options.progress.reset();
    })
    .await?;
    Ok(())
}

/// A bar on an interactive terminal, nothing otherwise (logs stay clean).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} syncing [{bar:40}] {pos}/{len} commits ({per_sec}, eta {eta})")
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

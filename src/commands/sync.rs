//! `personas sync`: project the repository into PostgreSQL, once or continuously.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Outcome, StoreArgs};
use crate::git::{open_repository, resolve_commit};
use crate::store::Database;
use crate::sync::{SyncOptions, sync_with_retry};

/// How often `--watch` looks at the branch tip.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Tries before a sync gives up on an unreachable database.
const RETRY_ATTEMPTS: u32 = 8;

pub fn run(repository: &Path, branch: &str, watch: bool, wait: bool, store: &StoreArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let data_dir = store.data_dir.clone().unwrap_or_else(|| repository.join(".personas"));
        let database = Database::open(store.database_url.as_deref(), &data_dir).await?;
        let options = SyncOptions {
            repository: repository.to_path_buf(),
            branch: branch.to_string(),
            wait_for_lock: wait,
        };
        let result = if watch {
            watch_loop(&database, &options).await
        } else {
            sync_with_retry(&database.pool, &options, RETRY_ATTEMPTS)
                .await
                .map(|summary| eprintln!("sync: {summary}"))
                .map_err(anyhow::Error::from)
        };
        database.close().await?;
        result.map(|()| Outcome::Clean)
    })
}

/// Syncs whenever the branch tip moves, until interrupted (Ctrl-C / SIGTERM).
async fn watch_loop(database: &Database, options: &SyncOptions) -> anyhow::Result<()> {
    let mut last_tip = None;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let repository = options.repository.clone();
        let branch = options.branch.clone();
        let tip = tokio::task::spawn_blocking(move || {
            open_repository(&repository).and_then(|repo| resolve_commit(&repo, &branch))
        })
        .await??;
        if last_tip != Some(tip) {
            let summary = sync_with_retry(&database.pool, options, RETRY_ATTEMPTS).await?;
            if summary.commits > 0 || summary.retracted > 0 {
                eprintln!("sync: {summary}");
            }
            last_tip = Some(tip);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        }
    }
}

//! What the commands that hold a database share: the async runtime, the
//! database's lifetime (the managed cluster is stopped whatever the command
//! returned), a shutdown every long-running part waits on, progress bars.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Config;
use crate::store::Database;

/// The managed cluster and the embedded index live here unless configured elsewhere.
pub fn data_dir(config: &Config, repository: &Path) -> PathBuf {
    config.data_dir.clone().unwrap_or_else(|| repository.join(".personas"))
}

/// Creates the data directory with a `.gitignore` that ignores all of it.
/// The default one sits inside the registry's work tree, where a contributor's
/// `git add -A` would otherwise stage a live PostgreSQL cluster (and fail on
/// files that change while git hashes them).
pub fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let ignore = data_dir.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(&ignore, "# personas: local state, never committed\n*\n")
            .with_context(|| format!("cannot write {}", ignore.display()))?;
    }
    Ok(())
}

/// Opens the database (the managed cluster unless `DATABASE_URL` is set),
/// runs `work`, and closes it again whatever `work` returned.
pub fn with_database<T>(
    repository: &Path,
    config: &Config,
    work: impl AsyncFnOnce(&Database, &Path) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let data_dir = data_dir(config, repository);
        prepare_data_dir(&data_dir)?;
        let database = Database::open(config.database_url.as_deref(), &data_dir).await?;
        let result = work(&database, &data_dir).await;
        database.close().await?;
        result
    })
}

/// A shutdown every part of a long-running command waits on.
pub struct Stop {
    sender: tokio::sync::watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            sender: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn now(&self) {
        self.sender.send_replace(true);
    }

    /// Resolves once [`Stop::now`] was called (at once if it already was).
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }
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

//! `personas serve`: the website and read API. On the embedded defaults it
//! also runs the managed PostgreSQL, the sync in watch mode and the vector
//! worker in-process, so one command gives a live site; with `DATABASE_URL`
//! it only reads, and any number of replicas can run side by side.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::session::{Stop, shutdown_signal, with_database};
use super::sync::{follow_and_index, source_and_options, vector_projector};
use crate::access::Tokens;
use crate::cli::Outcome;
use crate::config::{Config, default_bot};
use crate::git::write::RegistryWriter;
use crate::store::Database;
use crate::vectors::setup::{PROVISIONING_HINT, open_stored_index, open_vectors};
use crate::web::access::Access;
use crate::web::{Shared, router};
use crate::webhooks::deliver::Worker;

pub struct ServeCommand<'a> {
    pub repository: &'a Path,
    pub branch: &'a str,
    pub listen: SocketAddr,
    pub remote: Option<&'a str>,
    pub fetch_interval: Duration,
    /// Run the sync in this process: `None` decides by whether the database is external.
    pub sync: Option<bool>,
    /// The bound on answers kept in memory (0: none).
    pub kept_answers_bytes: usize,
    pub config: &'a Config,
}

pub fn run(command: ServeCommand<'_>) -> anyhow::Result<Outcome> {
    crate::heap::settle_malloc_for_a_server();
    // The database closes after `serve` returned: in-flight requests are done by then.
    with_database(command.repository, command.config, async |database, data_dir| {
        serve(&command, data_dir, database).await.map(|()| Outcome::Clean)
    })
}

async fn serve(command: &ServeCommand<'_>, data_dir: &Path, database: &Database) -> anyhow::Result<()> {
    let syncing = command.sync.unwrap_or(command.config.database_url.is_none());
    // The embedded index is filled only by a sync in this process; a replica
    // reading another writer's projection needs the shared Qdrant server.
    let vectors = if syncing || command.config.qdrant_url.is_some() {
        open_vectors(command.config, data_dir).await?
    } else {
        tracing::warn!(
            "semantic search is off: another process syncs, so the vectors must come from the Qdrant \
             server it writes to; set QDRANT_URL"
        );
        None
    };
    let mut stored_index = None;
    if vectors.is_none() && (syncing || command.config.qdrant_url.is_some()) {
        tracing::warn!("semantic search is not configured: no embedding model; {PROVISIONING_HINT}");
        // Similar personas and stored embeddings still answer from the index.
        stored_index = match open_stored_index(command.config, data_dir, &database.pool).await {
            Ok(index) => index.map(Arc::new),
            Err(error) => {
                tracing::warn!(%error, "similar personas are off: the vector index cannot be opened");
                None
            }
        };
    }
    let (source, options) = source_and_options(
        command.repository,
        command.branch,
        command.remote,
        command.fetch_interval,
        data_dir,
    );
    // With --remote the repository followed is the fetched mirror.
    let following = syncing.then(|| (options.repository.clone(), options.branch.clone()));
    let projector = if syncing {
        vector_projector(database, vectors.as_ref())
    } else {
        None
    };
    let (access, writer) = writes(command)?;
    let webhooks = command.config.webhooks.as_deref();
    let state = Arc::new(
        Shared::new(database.pool.clone(), vectors, following)
            .with_stored_index(stored_index)
            .with_writes(access, writer)
            .with_webhooks(webhooks.unwrap_or_default())
            .with_kept_answers(command.kept_answers_bytes),
    );
    // Every replica runs the deliveries; the cursor locks share the work out.
    let webhooks = Worker::for_command(&database.pool, webhooks)?;
    if let Some(worker) = &webhooks {
        eprintln!("webhooks: {}", worker.describe());
    }
    let listener = tokio::net::TcpListener::bind(command.listen)
        .await
        .with_context(|| format!("cannot listen on {}", command.listen))?;
    let address = listener.local_addr()?;
    eprintln!(
        "serving http://{address}/ ({})",
        if syncing {
            format!(
                "following {} of {}",
                command.branch,
                command.remote.unwrap_or(&command.repository.display().to_string())
            )
        } else {
            "reading the projection; another process syncs".to_string()
        }
    );

    let stop = Stop::new();
    let changes = state.answers.follow_changes(&database.pool, stop.wait());
    let server = async {
        let result = axum::serve(listener, router(Arc::clone(&state)))
            .with_graceful_shutdown(stop.wait())
            .await;
        stop.now();
        result.context("the HTTP server failed")
    };
    let sync = async {
        if syncing {
            follow_and_index(database, &options, &source, projector.as_ref(), &stop).await
        } else {
            Ok(())
        }
    };
    let signalled = async {
        tokio::select! {
            _ = shutdown_signal() => {
                eprintln!("shutting down: finishing requests in flight");
                stop.now();
            }
            _ = stop.wait() => {}
        }
    };
    let delivering = async {
        if let Some(worker) = webhooks {
            worker.run(stop.wait()).await;
        }
    };
    let (served, synced, (), (), ()) = tokio::join!(server, sync, signalled, changes, delivering);
    served?;
    synced?;
    Ok(())
}

/// Who may read and write, and where settings changes are committed. With
/// `--remote` the repository here is a fetched mirror, so there is nowhere
/// to commit: changes then go to the hosted repository by pull request.
fn writes(command: &ServeCommand<'_>) -> anyhow::Result<(Access, Option<RegistryWriter>)> {
    let config = command.config;
    let access = Access {
        tokens: Tokens::new(config.tokens.clone().unwrap_or_default()),
        private: config.private.unwrap_or(false),
    };
    if access.private && access.tokens.is_empty() {
        anyhow::bail!(
            "the registry is private but no API tokens are configured, so nobody could read it; \
             make one with `personas token` and configure its hash"
        );
    }
    let writer = match command.remote {
        Some(_) => None,
        None => Some(RegistryWriter::new(
            command.repository,
            command.branch,
            config.write_mode.unwrap_or_default(),
            config.bot.clone().unwrap_or_else(default_bot),
        )),
    };
    match &writer {
        _ if access.tokens.is_empty() => eprintln!("settings changes: off (no API tokens configured)"),
        None => eprintln!("settings changes: off (following a remote; propose changes there)"),
        Some(writer) => eprintln!(
            "settings changes: {} as {}",
            match writer.mode {
                crate::config::WriteMode::Commit => format!("committed to {}", writer.branch),
                crate::config::WriteMode::Branch => "proposed on settings/* branches".to_string(),
            },
            writer.committer
        ),
    }
    Ok((access, writer))
}

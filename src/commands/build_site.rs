//! `personas build-site --out DIR`: project the repository (as `sync` does),
//! bring the vector index up to date for the "similar personas" lists, then
//! write a static copy of the site and the read API. With `--preview
//! BASE..HEAD` the copy is of HEAD, projected into a throwaway database and
//! index (never the configured ones), with the preview's banner on every page.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::diff::{PersonaDelta, parse_range, range_diff};
use super::session::{progress_bar, with_database};
use super::sync::vector_projector;
use crate::cli::Outcome;
use crate::config::Config;
use crate::export::preview::{Preview, PreviewChange};
use crate::export::{SiteBuild, SiteInputs, build};
use crate::git::{open_repository, resolve_commit};
use crate::store::queries;
use crate::sync::{RETRY_ATTEMPTS, SyncOptions, sync_with_retry};
use crate::vectors::exact::ExactNeighbours;
use crate::vectors::setup::{PROVISIONING_HINT, open_vectors};
use crate::web::reads::SiteSnapshot;
use crate::web::{Shared, StaticSite};

pub struct BuildSiteCommand<'a> {
    pub repository: &'a Path,
    pub branch: &'a str,
    pub out: &'a Path,
    pub base_url: Option<&'a str>,
    /// Render the projection as it is, without syncing first.
    pub no_sync: bool,
    /// `BASE..HEAD`: a pull request's preview of HEAD (replaces `branch`).
    pub preview: Option<&'a str>,
    /// No snapshot: every read through the database, as `serve` reads.
    pub through_database: bool,
    pub config: &'a Config,
}

/// What the preview is of, read from git before anything is projected.
struct PreviewPlan {
    base: String,
    head: String,
    base_commit: String,
    head_commit: String,
    changes: Vec<PersonaDelta>,
    /// The throwaway data directory (database and index), removed on drop.
    scratch: tempfile::TempDir,
}

fn plan_preview(repository: &Path, range: &str) -> anyhow::Result<PreviewPlan> {
    let (base, head) = parse_range(range)?;
    let git = open_repository(repository)?;
    let base_commit = resolve_commit(&git, &base)?.to_string();
    let head_commit = resolve_commit(&git, &head)?.to_string();
    let changes = range_diff(repository, &base, &head)?.personas;
    let scratch = tempfile::Builder::new()
        .prefix("personas-preview-")
        .tempdir()
        .context("creating the preview's temporary data directory")?;
    // The managed PostgreSQL may run as another user than the one who made the directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
            .context("opening the preview's data directory to the database server")?;
    }
    Ok(PreviewPlan {
        base,
        head,
        base_commit,
        head_commit,
        changes,
        scratch,
    })
}

/// Where each changed persona's base and head versions are in HEAD's projection.
async fn preview_of(pool: &sqlx::PgPool, plan: &PreviewPlan) -> anyhow::Result<Preview> {
    let mut changes = Vec::with_capacity(plan.changes.len());
    for delta in &plan.changes {
        let versions = queries::versions(pool, delta.persona_id.0).await?;
        let version_with = |hash: Option<String>| {
            let hash = hash?;
            versions
                .iter()
                .rev()
                .find(|version| version.content_hash.as_deref() == Some(hash.as_str()))
                .map(|version| version.version)
        };
        changes.push(PreviewChange {
            slug: delta.slug.clone(),
            name: delta.name.clone(),
            kind: delta.kind.to_string(),
            base_version: version_with(delta.old_hash.map(|hash| hash.to_string())),
            head_version: version_with(delta.new_hash.map(|hash| hash.to_string())),
            on_base: delta.old_hash.is_some(),
        });
    }
    Ok(Preview {
        base: plan.base.clone(),
        head: plan.head.clone(),
        base_commit: plan.base_commit.clone(),
        head_commit: plan.head_commit.clone(),
        changes,
    })
}

pub fn run(command: BuildSiteCommand<'_>) -> anyhow::Result<Outcome> {
    if let Some(base) = command.base_url {
        let parsed = url::Url::parse(base).with_context(|| format!("--base-url {base:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("--base-url {base:?}: only http and https addresses can host the site");
        }
    }
    let plan = command
        .preview
        .map(|range| plan_preview(command.repository, range))
        .transpose()?;
    // A preview never touches the configured database or Qdrant: a pull
    // request's content must not reach what production reads.
    let preview_config;
    let (config, branch) = match &plan {
        Some(plan) => {
            preview_config = Config {
                database_url: None,
                data_dir: Some(plan.scratch.path().to_path_buf()),
                qdrant_url: None,
                qdrant_api_key: None,
                collection: None,
                ..command.config.clone()
            };
            eprintln!(
                "preview: projecting {} ({}) into a temporary database and index in {}; \
                 the configured database and Qdrant are not used",
                plan.head,
                &plan.head_commit[..10],
                plan.scratch.path().display()
            );
            (&preview_config, plan.head_commit.as_str())
        }
        None => (command.config, command.branch),
    };
    with_database(command.repository, config, async |database, data_dir| {
        // The model and the index are opened while the sync runs: loading
        // the model (a few tenths of a second) needs neither the database nor
        // git, and a build after one commit is otherwise a chain of such waits.
        let syncing = async {
            if !command.no_sync {
                let mut options = SyncOptions::new(command.repository, branch);
                options.readings_file = crate::git::readings::location(data_dir);
                options.progress = progress_bar("syncing", "commits");
                let summary = sync_with_retry(&database.pool, &options, RETRY_ATTEMPTS).await?;
                options.progress.finish_and_clear();
                eprintln!("sync: {summary}");
            }
            anyhow::Ok(())
        };
        let opening = async { anyhow::Ok(open_vectors(config, data_dir).await?) };
        let ((), vectors) = tokio::try_join!(syncing, opening)?;
        let preview = match &plan {
            Some(plan) => Some(Arc::new(preview_of(&database.pool, plan).await?)),
            None => None,
        };
        // The index is brought up to date while the build's inputs are
        // read: neither waits for the other, and the similar lists, the one
        // part of the build that reads the index, come after both.
        let indexing = async {
            match vector_projector(database, vectors.as_ref()) {
                Some(projector) => {
                    let bar = progress_bar("indexing", "personas");
                    let summary = projector.reconcile(false, &bar).await?;
                    bar.finish_and_clear();
                    eprintln!("vectors: {summary}");
                }
                None => eprintln!("note: no embedding model, so pages list no similar personas; {PROVISIONING_HINT}"),
            }
            anyhow::Ok(vectors)
        };
        let reading = async {
            let snapshot = match command.through_database {
                true => None,
                false => Some(Arc::new(SiteSnapshot::load(&database.pool).await?)),
            };
            let inputs = SiteInputs::read(
                &database.pool,
                snapshot.as_deref(),
                command.base_url,
                preview.as_deref(),
            )
            .await?;
            anyhow::Ok((snapshot, inputs))
        };
        let (vectors, (snapshot, inputs)) = tokio::try_join!(indexing, reading)?;
        // The similar lists are scored from the index as it stands now.
        let neighbours = match &vectors {
            Some(vectors) => Some(Arc::new(ExactNeighbours::load(&*vectors.index).await?)),
            None => None,
        };
        let state = Arc::new(Shared {
            snapshot,
            ..Shared::for_static_site(
                database.pool.clone(),
                vectors,
                StaticSite {
                    base_url: command.base_url.map(str::to_string),
                    neighbours,
                },
            )
        });
        let started = std::time::Instant::now();
        let progress = progress_bar("rendering", "files");
        let summary = build(
            state,
            SiteBuild {
                out: command.out,
                progress: progress.clone(),
                preview,
                inputs,
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

//! `personas reindex`, `personas search` and `personas similar`: the vector
//! index from the command line.

use std::path::Path;

use anyhow::Context;

use super::session::{progress_bar, with_database};
use crate::cli::Outcome;
use crate::config::Config;
use crate::persona::search_filter::SearchFilter;
use crate::search::{self, Found, SearchError, Semantic};
use crate::store::Database;
use crate::vectors::projector::VectorProjector;
use crate::vectors::setup::{AnyIndex, IndexLocation, PROVISIONING_HINT, Vectors, load_embedder, open_vectors};

/// Rewrites every point from the current versions. Vectors already computed
/// for the same content and model come from the cache, so a reindex after
/// deleting the index costs no model time; one after a model change embeds
/// every persona once.
pub fn reindex(repository: &Path, recreate: bool, config: &Config) -> anyhow::Result<Outcome> {
    with_database(repository, config, async |database, data_dir| {
        let embedder = load_embedder(config)
            .await?
            .with_context(|| format!("cannot reindex without an embedding model; {PROVISIONING_HINT}"))?;
        let location = IndexLocation::from_config(config, data_dir);
        let index = if recreate {
            AnyIndex::recreate(&location, embedder.dimension()).await?
        } else {
            AnyIndex::open(&location, embedder.dimension()).await?
        };
        let projector = VectorProjector::new(database.pool.clone(), index, embedder);
        let bar = progress_bar("indexing", "personas");
        let summary = projector.reconcile(true, &bar).await?;
        bar.finish_and_clear();
        eprintln!("reindex: {summary}");
        Ok(Outcome::Clean)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    FullText,
    Semantic,
    Hybrid,
}

pub struct SearchCommand<'a> {
    pub query: &'a str,
    pub kind: SearchKind,
    pub filter: SearchFilter,
    pub limit: usize,
    pub json: bool,
    pub repository: &'a Path,
    pub config: &'a Config,
}

pub fn search(command: SearchCommand<'_>) -> anyhow::Result<Outcome> {
    with_database(command.repository, command.config, async |database, data_dir| {
        let vectors = match command.kind {
            SearchKind::FullText => None,
            SearchKind::Semantic | SearchKind::Hybrid => open_vectors(command.config, data_dir).await?,
        };
        let semantic = Semantic {
            embedder: vectors.as_ref().map(|vectors| &vectors.embedder),
            index: vectors.as_ref().map(|vectors| &vectors.index),
        };
        let (query, filter, limit) = (command.query, &command.filter, command.limit);
        let found = match command.kind {
            SearchKind::FullText => search::full_text(&database.pool, query, filter, limit).await,
            SearchKind::Semantic => search::semantic(&semantic, query, filter, limit).await,
            SearchKind::Hybrid => search::hybrid(&database.pool, &semantic, query, filter, limit).await,
        }?;
        print_found(&found, command.json, database).await
    })
}

pub struct SimilarCommand<'a> {
    pub persona: &'a str,
    pub filter: SearchFilter,
    pub limit: usize,
    pub json: bool,
    pub repository: &'a Path,
    pub config: &'a Config,
}

pub fn similar(command: SimilarCommand<'_>) -> anyhow::Result<Outcome> {
    with_database(command.repository, command.config, async |database, data_dir| {
        let vectors = open_vectors(command.config, data_dir).await?;
        let index = vectors.as_ref().map(|Vectors { index, .. }| index);
        let found = search::similar(&database.pool, index, command.persona, &command.filter, command.limit)
            .await
            .map_err(|error| match error {
                SearchError::Index(crate::vectors::index::IndexError::NotIndexed(id)) => anyhow::anyhow!(
                    "persona {id} is not in the vector index yet; run `personas sync` (or `personas reindex`)"
                ),
                other => other.into(),
            })?;
        print_found(&found, command.json, database).await
    })
}

async fn print_found(found: &[Found], json: bool, database: &Database) -> anyhow::Result<Outcome> {
    if json {
        println!("{}", serde_json::to_string_pretty(found)?);
        return Ok(Outcome::Clean);
    }
    if found.is_empty() {
        let projected: i64 = sqlx::query_scalar("SELECT count(*) FROM personas")
            .fetch_one(&database.pool)
            .await?;
        if projected == 0 {
            eprintln!("nothing is projected yet: run `personas sync` first");
        } else {
            eprintln!("no persona matches");
        }
    }
    for hit in found {
        let kind = if hit.is_real { "real" } else { "fictional" };
        println!(
            "{:>7.4}  {:<28} {} ({kind}; {})",
            hit.score,
            hit.slug,
            hit.name,
            hit.domains.join(", ")
        );
    }
    Ok(Outcome::Clean)
}

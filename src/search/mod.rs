//! Finding personas: full-text (PostgreSQL), semantic (the vector index),
//! both merged, and similar personas. What the CLI and the web call.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::persona::search_filter::SearchFilter;
use crate::store::queries::find_persona;
use crate::store::search::{TextMatch, full_text_search};
use crate::vectors::embed::{EmbedError, Embedder};
use crate::vectors::exact::ExactNeighbours;
use crate::vectors::index::{Hit, IndexError, Point, VectorIndex};
use crate::vectors::setup::PROVISIONING_HINT;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Found {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domains: Vec<String>,
    pub is_real: bool,
    /// Full text: the rank; semantic: cosine similarity; hybrid: the
    /// reciprocal-rank-fusion score. Comparable within one result list only.
    pub score: f64,
}

/// Which ranking answers a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ranking {
    /// Full text and meaning merged by reciprocal rank fusion.
    Merged,
    /// Full text only: the words as written, weighted by field.
    Text,
    /// Meaning only: nearest embeddings.
    Semantic,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("semantic search is not configured: no embedding model; {PROVISIONING_HINT}")]
    NotConfigured,
    #[error("no live persona is called {0:?}")]
    UnknownPersona(String),
    #[error("{0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Embed(#[from] EmbedError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the search query is empty")]
    EmptyQuery,
}

/// The semantic side: the model and the index, when both are available.
pub struct Semantic<'a, I> {
    pub embedder: Option<&'a Arc<Embedder>>,
    pub index: Option<&'a I>,
}

impl<I: VectorIndex> Semantic<'_, I> {
    fn parts(&self) -> Result<(&Arc<Embedder>, &I), SearchError> {
        match (self.embedder, self.index) {
            (Some(embedder), Some(index)) => Ok((embedder, index)),
            _ => Err(SearchError::NotConfigured),
        }
    }
}

pub async fn full_text(
    pool: &PgPool,
    query: &str,
    filter: &SearchFilter,
    limit: usize,
) -> Result<Vec<Found>, SearchError> {
    let query = non_empty(query)?;
    Ok(full_text_search(pool, query, filter, limit)
        .await?
        .into_iter()
        .map(found_from_text)
        .collect())
}

/// The personas whose embedding is nearest to the query's.
pub async fn semantic<I: VectorIndex>(
    semantic: &Semantic<'_, I>,
    query: &str,
    filter: &SearchFilter,
    limit: usize,
) -> Result<Vec<Found>, SearchError> {
    let query = non_empty(query)?.to_string();
    let (embedder, index) = semantic.parts()?;
    let vector = embed_query(embedder, query).await?;
    Ok(index
        .search(vector, filter, limit)
        .await?
        .into_iter()
        .map(found_from_hit)
        .collect())
}

/// Both rankings merged by reciprocal rank fusion: robust to their scores
/// being on different scales, and a persona found by both rises to the top.
pub async fn hybrid<I: VectorIndex>(
    pool: &PgPool,
    semantic_side: &Semantic<'_, I>,
    query: &str,
    filter: &SearchFilter,
    limit: usize,
) -> Result<Vec<Found>, SearchError> {
    let depth = fusion_depth(limit);
    let texts = full_text(pool, query, filter, depth).await?;
    let meanings = semantic(semantic_side, query, filter, depth).await?;
    Ok(fuse(&[texts, meanings], limit))
}

/// How deep each side of a merged ranking looks for a page of `limit`: deeper
/// than the page, so fusion has something to merge.
pub fn fusion_depth(limit: usize) -> usize {
    (limit * 3).max(20)
}

/// Reciprocal rank fusion (Cormack et al.): score = Σ 1 / (60 + rank).
pub fn fuse(rankings: &[Vec<Found>], limit: usize) -> Vec<Found> {
    const K: f64 = 60.0;
    let mut merged: HashMap<Uuid, Found> = HashMap::new();
    for ranking in rankings {
        for (position, found) in ranking.iter().enumerate() {
            let contribution = 1.0 / (K + position as f64 + 1.0);
            merged
                .entry(found.id)
                .and_modify(|existing| existing.score += contribution)
                .or_insert_with(|| Found {
                    score: contribution,
                    ..found.clone()
                });
        }
    }
    let mut merged: Vec<Found> = merged.into_values().collect();
    merged.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.slug.cmp(&b.slug)));
    merged.truncate(limit);
    merged
}

/// Personas most like the one `reference` names (slug, former slug or id), itself excluded.
pub async fn similar<I: VectorIndex>(
    pool: &PgPool,
    index: Option<&I>,
    reference: &str,
    filter: &SearchFilter,
    limit: usize,
) -> Result<Vec<Found>, SearchError> {
    index.ok_or(SearchError::NotConfigured)?;
    let id = live_persona(pool, reference).await?;
    similar_to(index, id, filter, limit).await
}

/// Personas most like the persona `id`, itself excluded, from the index's
/// approximate graph.
pub async fn similar_to<I: VectorIndex>(
    index: Option<&I>,
    id: Uuid,
    filter: &SearchFilter,
    limit: usize,
) -> Result<Vec<Found>, SearchError> {
    let index = index.ok_or(SearchError::NotConfigured)?;
    let hits = index.similar(id, filter, limit + TIE_MARGIN).await?;
    Ok(in_stable_order(hits, limit))
}

/// Personas most like the persona `id`, itself excluded, scored against
/// every stored vector: the same vectors give the same list whatever the
/// index's history (the static build's promise of byte-identical output
/// for one commit). `neighbours` is `None` when no model is configured.
pub fn similar_exactly(
    neighbours: Option<&ExactNeighbours>,
    id: Uuid,
    limit: usize,
) -> Result<Vec<Found>, SearchError> {
    let neighbours = neighbours.ok_or(SearchError::NotConfigured)?;
    Ok(in_stable_order(neighbours.nearest(id, limit + TIE_MARGIN)?, limit))
}

/// [`similar_exactly`] for each of `ids` at once, on every core; the same
/// lists to the bit.
pub fn similar_exactly_each(
    neighbours: &ExactNeighbours,
    ids: &[Uuid],
    limit: usize,
) -> Vec<(Uuid, Result<Vec<Found>, SearchError>)> {
    neighbours
        .nearest_of_each(ids, limit + TIE_MARGIN)
        .into_iter()
        .map(|(id, hits)| {
            (
                id,
                hits.map(|hits| in_stable_order(hits, limit)).map_err(SearchError::from),
            )
        })
        .collect()
}

/// Hits asked for beyond the limit, so that a tie at the cut is decided by
/// the stable key and not by which of the tied points the store returned.
const TIE_MARGIN: usize = 8;

/// Scores rounded to this step count as tied: vectors of one text embedded
/// in batches of other shapes differ in their last bits, and pages show two
/// decimals.
const SCORE_STEP: f64 = 1e-4;

/// Best first; ties (scores equal to [`SCORE_STEP`]) by slug, then id.
fn in_stable_order(hits: Vec<Hit>, limit: usize) -> Vec<Found> {
    let mut found: Vec<Found> = hits.into_iter().map(found_from_hit).collect();
    let key = |found: &Found| (found.score / SCORE_STEP).round() as i64;
    found.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then_with(|| a.slug.cmp(&b.slug))
            .then_with(|| a.id.cmp(&b.id))
    });
    found.truncate(limit);
    found
}

/// The stored vector of a persona and the model that made it (the seed's
/// `GET /personas/:id/embed`).
pub async fn stored_embedding<I: VectorIndex>(
    pool: &PgPool,
    index: Option<&I>,
    reference: &str,
) -> Result<Point, SearchError> {
    let index = index.ok_or(SearchError::NotConfigured)?;
    let id = live_persona(pool, reference).await?;
    index
        .point(id)
        .await?
        .ok_or(SearchError::Index(IndexError::NotIndexed(id)))
}

/// The live persona `reference` names (slug, former slug or id).
async fn live_persona(pool: &PgPool, reference: &str) -> Result<Uuid, SearchError> {
    match find_persona(pool, reference).await? {
        Some(persona) if !persona.deleted => Ok(persona.id),
        _ => Err(SearchError::UnknownPersona(reference.to_string())),
    }
}

async fn embed_query(embedder: &Arc<Embedder>, query: String) -> Result<Vec<f32>, SearchError> {
    let embedder = Arc::clone(embedder);
    let mut vectors = tokio::task::spawn_blocking(move || embedder.embed(&[query]))
        .await
        .map_err(|error| EmbedError::Model(error.to_string()))??;
    vectors
        .pop()
        .ok_or_else(|| SearchError::Embed(EmbedError::Model("the model returned no vector".to_string())))
}

fn non_empty(query: &str) -> Result<&str, SearchError> {
    let query = query.trim();
    if query.is_empty() {
        Err(SearchError::EmptyQuery)
    } else {
        Ok(query)
    }
}

fn found_from_text(found: TextMatch) -> Found {
    Found {
        id: found.id,
        slug: found.slug,
        name: found.name,
        domains: found.domains,
        is_real: found.is_real,
        score: f64::from(found.rank),
    }
}

fn found_from_hit(hit: Hit) -> Found {
    Found {
        id: hit.id,
        slug: hit.payload.slug,
        name: hit.payload.name,
        domains: hit.payload.domains,
        is_real: hit.payload.is_real,
        score: f64::from(hit.score),
    }
}

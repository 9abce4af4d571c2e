//! The vector index: one point per live persona, keyed by the persona's UUID,
//! with a payload for filtering. One trait, two implementations: the embedded
//! qdrant-edge shard ([`super::edge`]) and a Qdrant server ([`super::server`]).

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::persona::Persona;
use crate::persona::search_filter::SearchFilter;

/// Points per write: one WAL record or one request each, small enough that a
/// failed batch costs little to redo.
pub const WRITE_BATCH: usize = 64;

/// What a point carries besides its vector. Enough to filter on and to show a
/// result without a database round trip, and to tell whether the point is
/// stale (`content_hash`, `model_id`, `text_format`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointPayload {
    pub name: String,
    pub slug: String,
    pub domains: Vec<String>,
    /// Enabled modes only.
    pub modes: Vec<String>,
    pub is_real: bool,
    /// Trait type → trait name → value, so `traits.ocean.openness` is a path
    /// a range filter can use.
    pub traits: BTreeMap<String, BTreeMap<String, f64>>,
    pub version_no: i32,
    pub content_hash: String,
    pub model_id: String,
    pub text_format: String,
}

impl PointPayload {
    /// Whether this point meets the filter: what the index is asked to do,
    /// written out so tests can check an index's answers against it.
    pub fn meets(&self, filter: &SearchFilter) -> bool {
        filter
            .domain
            .as_ref()
            .is_none_or(|domain| self.domains.contains(domain))
            && filter.mode.as_ref().is_none_or(|mode| self.modes.contains(mode))
            && filter.is_real.is_none_or(|is_real| self.is_real == is_real)
            && filter.traits.iter().all(|range| {
                let value = range
                    .path
                    .split_once('.')
                    .and_then(|(kind, name)| self.traits.get(kind)?.get(name));
                value.is_some_and(|value| {
                    range.min.is_none_or(|min| *value >= min) && range.max.is_none_or(|max| *value <= max)
                })
            })
    }

    pub fn new(persona: &Persona, version_no: i32, content_hash: &str, model_id: &str, text_format: &str) -> Self {
        PointPayload {
            name: persona.name.clone(),
            slug: persona.slug.as_str().to_string(),
            domains: persona.domains.clone(),
            modes: persona.enabled_modes().map(str::to_string).collect(),
            is_real: persona.is_real,
            traits: persona.traits.clone(),
            version_no,
            content_hash: content_hash.to_string(),
            model_id: model_id.to_string(),
            text_format: text_format.to_string(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a payload always serializes")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: PointPayload,
}

/// What reconciliation needs to know about a stored point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointStamp {
    pub id: Uuid,
    pub content_hash: String,
    pub model_id: String,
    pub text_format: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    /// Cosine similarity: 1 is the same direction.
    pub score: f32,
    pub payload: PointPayload,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The index cannot be reached or refused the operation; worth retrying.
    #[error("the vector index is unavailable: {0}")]
    Unavailable(String),
    /// The stored collection does not fit the model (a different dimension).
    #[error("{0}")]
    Incompatible(String),
    #[error("persona {0} is not in the vector index")]
    NotIndexed(Uuid),
    #[error("the vector index returned a point it cannot read: {0}")]
    Corrupt(String),
}

/// The operations the registry needs from a vector store. Writes are
/// idempotent: upserting a point replaces it, deleting a missing one is fine.
pub trait VectorIndex: Send + Sync {
    /// Where the points live, for logs and errors.
    fn location(&self) -> String;

    fn upsert(&self, points: Vec<Point>) -> impl Future<Output = Result<(), IndexError>> + Send;

    fn delete(&self, ids: Vec<Uuid>) -> impl Future<Output = Result<(), IndexError>> + Send;

    /// The `limit` points nearest to `vector` that meet `filter`, best first.
    fn search(
        &self,
        vector: Vec<f32>,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send;

    /// The points nearest to the stored point `id`, without `id` itself.
    fn similar(
        &self,
        id: Uuid,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send;

    /// Every stored point, with its vector and payload, in no set order:
    /// what [`super::exact::ExactNeighbours`] scores a static build's
    /// similar lists from.
    fn points(&self) -> impl Future<Output = Result<Vec<Point>, IndexError>> + Send;

    /// The stored vector and payload of one point.
    fn point(&self, id: Uuid) -> impl Future<Output = Result<Option<Point>, IndexError>> + Send;

    fn count(&self) -> impl Future<Output = Result<u64, IndexError>> + Send;

    /// Every point's identity and staleness stamp.
    fn stamps(&self) -> impl Future<Output = Result<Vec<PointStamp>, IndexError>> + Send;
}

/// Reads a stored payload back; a point written by something else is reported, not guessed at.
pub fn payload_from_json(id: Uuid, value: serde_json::Value) -> Result<PointPayload, IndexError> {
    serde_json::from_value(value).map_err(|error| IndexError::Corrupt(format!("point {id}: {error}")))
}

pub fn stamp_from_json(id: Uuid, value: &serde_json::Value) -> Result<PointStamp, IndexError> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| IndexError::Corrupt(format!("point {id} has no {name}")))
    };
    Ok(PointStamp {
        id,
        content_hash: field("content_hash")?,
        model_id: field("model_id")?,
        text_format: field("text_format")?,
    })
}

/// The payload fields a stamp is read from (what `stamps` asks the store for).
pub const STAMP_FIELDS: [&str; 3] = ["content_hash", "model_id", "text_format"];

/// The payload fields filters use, indexed by both stores.
pub const FILTERED_KEYWORDS: [&str; 3] = ["domains", "modes", "slug"];
pub const FILTERED_BOOLS: [&str; 1] = ["is_real"];

/// A shared index is an index: the web server and the outbox worker hold one.
impl<T: VectorIndex> VectorIndex for std::sync::Arc<T> {
    fn location(&self) -> String {
        (**self).location()
    }

    fn upsert(&self, points: Vec<Point>) -> impl Future<Output = Result<(), IndexError>> + Send {
        (**self).upsert(points)
    }

    fn delete(&self, ids: Vec<Uuid>) -> impl Future<Output = Result<(), IndexError>> + Send {
        (**self).delete(ids)
    }

    fn search(
        &self,
        vector: Vec<f32>,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send {
        (**self).search(vector, filter, limit)
    }

    fn similar(
        &self,
        id: Uuid,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send {
        (**self).similar(id, filter, limit)
    }

    fn points(&self) -> impl Future<Output = Result<Vec<Point>, IndexError>> + Send {
        (**self).points()
    }

    fn point(&self, id: Uuid) -> impl Future<Output = Result<Option<Point>, IndexError>> + Send {
        (**self).point(id)
    }

    fn count(&self) -> impl Future<Output = Result<u64, IndexError>> + Send {
        (**self).count()
    }

    fn stamps(&self) -> impl Future<Output = Result<Vec<PointStamp>, IndexError>> + Send {
        (**self).stamps()
    }
}

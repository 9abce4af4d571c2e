//! Keeping the vector index in step with PostgreSQL.
//!
//! The sync writes one `vector_outbox` row per persona change, in the same
//! transaction as the version. [`VectorProjector::drain`] turns those rows
//! into index writes: rows are coalesced per persona (a catch-up over a long
//! history embeds each persona once, at its current version), vectors come
//! from the embedding cache when the same content was embedded before, and
//! the rows are deleted only after the index confirmed the write. A failure
//! leaves them with `attempts`, `last_error` and a backoff, so an index
//! outage delays updates and loses none.
//!
//! [`VectorProjector::reconcile`] compares the whole index with the current
//! versions (on start-up, after a model change, or when the index was
//! deleted) and repairs every difference.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use super::cache::{cached_vectors, store_vectors};
use super::embed::{EmbedError, Embedder};
use super::index::{IndexError, Point, PointPayload, VectorIndex, WRITE_BATCH};
use super::text::{TEXT_FORMAT, embedding_text};
use crate::persona::Persona;
use crate::store::projection::notify_change;

/// Personas handled per step: a few forward-pass batches, so progress is
/// committed often and a failure repeats little work.
const STEP_PERSONAS: i64 = 256;
/// The longest wait before a failed update is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the worker looks at the outbox without being woken (rows due
/// after a backoff, or written by another process).
const IDLE_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the stored document of persona {id} does not read back as a persona: {reason}")]
    Document { id: Uuid, reason: String },
}

/// What one drain or reconcile did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProjectionSummary {
    pub upserted: u64,
    pub deleted: u64,
    /// Texts run through the model (cache misses).
    pub embedded: u64,
    /// Vectors taken from the cache.
    pub reused: u64,
    /// Time spent inside the model (tokenizing, the forward pass, pooling).
    pub embedding_time: Duration,
    pub elapsed: Duration,
}

impl ProjectionSummary {
    pub fn changed(&self) -> bool {
        self.upserted > 0 || self.deleted > 0
    }

    fn add(&mut self, other: &ProjectionSummary) {
        self.upserted += other.upserted;
        self.deleted += other.deleted;
        self.embedded += other.embedded;
        self.reused += other.reused;
        self.embedding_time += other.embedding_time;
    }
}

impl std::fmt::Display for ProjectionSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} points written, {} removed; {} embedded, {} from cache in {:.2?}",
            self.upserted, self.deleted, self.embedded, self.reused, self.elapsed
        )
    }
}

pub struct VectorProjector<I> {
    pool: PgPool,
    index: I,
    embedder: Arc<Embedder>,
}

/// A persona's current version as PostgreSQL holds it (all `None` when it never existed).
#[derive(sqlx::FromRow)]
struct TargetRow {
    id: Uuid,
    deleted: bool,
    version_no: Option<i32>,
    content_hash: Option<String>,
    document: Option<serde_json::Value>,
}

/// A persona's state as the index should reflect it.
enum Target {
    Live {
        id: Uuid,
        version_no: i32,
        content_hash: String,
        persona: Box<Persona>,
    },
    Gone(Uuid),
}

impl<I: VectorIndex> VectorProjector<I> {
    pub fn new(pool: PgPool, index: I, embedder: Arc<Embedder>) -> Self {
        VectorProjector { pool, index, embedder }
    }

    pub fn index(&self) -> &I {
        &self.index
    }

    /// The index back, for another worker (another model, say) to write to.
    pub fn into_index(self) -> I {
        self.index
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// Applies every due outbox row, step by step, until none is left. On
    /// failure the step's rows are rescheduled and the error returned.
    pub async fn drain(&self) -> Result<ProjectionSummary, ProjectError> {
        let started = Instant::now();
        let mut summary = ProjectionSummary::default();
        loop {
            let due: Vec<(Uuid, i64)> = sqlx::query_as(
                "SELECT persona_id, max(id) FROM vector_outbox
                 WHERE next_attempt_at <= now()
                 GROUP BY persona_id ORDER BY min(id) LIMIT $1",
            )
            .bind(STEP_PERSONAS)
            .fetch_all(&self.pool)
            .await?;
            if due.is_empty() {
                break;
            }
            let (personas, last_rows): (Vec<Uuid>, Vec<i64>) = due.into_iter().unzip();
            match self.apply(&personas).await {
                Ok(step) => {
                    summary.add(&step);
                    // Only rows up to those read: a change enqueued meanwhile stays.
                    sqlx::query(
                        "DELETE FROM vector_outbox o USING UNNEST($1::uuid[], $2::bigint[]) AS done(persona_id, last_id)
                         WHERE o.persona_id = done.persona_id AND o.id <= done.last_id",
                    )
                    .bind(&personas)
                    .bind(&last_rows)
                    .execute(&self.pool)
                    .await?;
                }
                Err(error) => {
                    self.reschedule(&personas, &last_rows, &error).await?;
                    return Err(error);
                }
            }
        }
        if summary.embedded > 0 {
            crate::heap::return_freed_heap_after_burst();
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    async fn reschedule(&self, personas: &[Uuid], last_rows: &[i64], error: &ProjectError) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE vector_outbox o SET
                 attempts = attempts + 1,
                 last_error = $3,
                 next_attempt_at = now() + least(interval '0.5 seconds' * power(2, least(attempts, 20)), $4 * interval '1 second')
             FROM UNNEST($1::uuid[], $2::bigint[]) AS failed(persona_id, last_id)
             WHERE o.persona_id = failed.persona_id AND o.id <= failed.last_id",
        )
        .bind(personas)
        .bind(last_rows)
        .bind(error.to_string())
        .bind(MAX_BACKOFF.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes the index equal to the current versions: writes every live
    /// persona whose point is missing or stale (another content hash, model
    /// or text layout; every one when `rewrite_all`), removes points of
    /// personas that are gone, then clears the outbox rows this covered.
    pub async fn reconcile(
        &self,
        rewrite_all: bool,
        progress: &indicatif::ProgressBar,
    ) -> Result<ProjectionSummary, ProjectError> {
        let started = Instant::now();
        // Read before the current versions: every row up to here is reflected in them.
        let covered: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM vector_outbox")
            .fetch_one(&self.pool)
            .await?;
        let live: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT p.id, v.content_hash FROM personas p JOIN persona_versions v ON v.id = p.current_version_id
             WHERE NOT p.deleted AND v.content_hash IS NOT NULL ORDER BY p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let stamps: HashMap<Uuid, _> = self
            .index
            .stamps()
            .await?
            .into_iter()
            .map(|stamp| (stamp.id, stamp))
            .collect();
        tracing::debug!(elapsed = ?started.elapsed(), live = live.len(), points = stamps.len(), "read the live personas and the index's stamps");
        let model_id = self.embedder.model_id();
        let stale: Vec<Uuid> = live
            .iter()
            .filter(|(id, hash)| {
                rewrite_all
                    || stamps.get(id).is_none_or(|stamp| {
                        stamp.content_hash != *hash || stamp.model_id != model_id || stamp.text_format != TEXT_FORMAT
                    })
            })
            .map(|(id, _)| *id)
            .collect();
        let live_ids: HashSet<Uuid> = live.iter().map(|(id, _)| *id).collect();
        let extra: Vec<Uuid> = stamps.keys().filter(|id| !live_ids.contains(id)).copied().collect();

        let mut summary = ProjectionSummary::default();
        progress.set_length((stale.len() + extra.len()) as u64);
        for chunk in stale.chunks(STEP_PERSONAS as usize) {
            summary.add(&self.apply(chunk).await?);
            progress.inc(chunk.len() as u64);
        }
        tracing::debug!(elapsed = ?started.elapsed(), stale = stale.len(), "embedded and stored the stale personas");
        let mut removed = ProjectionSummary::default();
        let deleted = self.write(&[], &extra, &mut removed).await;
        progress.inc(removed.deleted);
        summary.add(&removed);
        if removed.changed() {
            notify_change(&self.pool).await?;
        }
        deleted?;
        if let Some(covered) = covered {
            sqlx::query("DELETE FROM vector_outbox WHERE id <= $1")
                .bind(covered)
                .execute(&self.pool)
                .await?;
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Brings the points of `personas` up to date with their current versions.
    async fn apply(&self, personas: &[Uuid]) -> Result<ProjectionSummary, ProjectError> {
        let targets = self.targets(personas).await?;
        let mut summary = ProjectionSummary::default();
        let model_id = self.embedder.model_id().to_string();

        let live: Vec<(&Uuid, i32, &String, &Persona)> = targets
            .iter()
            .filter_map(|target| match target {
                Target::Live {
                    id,
                    version_no,
                    content_hash,
                    persona,
                } => Some((id, *version_no, content_hash, persona.as_ref())),
                Target::Gone(_) => None,
            })
            .collect();
        let hashes: Vec<String> = live.iter().map(|(_, _, hash, _)| (*hash).clone()).collect();
        let mut vectors = cached_vectors(&self.pool, &model_id, TEXT_FORMAT, &hashes).await?;
        summary.reused = vectors.len() as u64;

        // The same content twice in one step (two personas cannot share a
        // hash, but be exact) is embedded once.
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        for (_, _, hash, persona) in &live {
            if !vectors.contains_key(*hash) && seen.insert((*hash).clone()) {
                missing.push(((*hash).clone(), embedding_text(persona)));
            }
        }
        if !missing.is_empty() {
            let texts: Vec<String> = missing.iter().map(|(_, text)| text.clone()).collect();
            let embedder = Arc::clone(&self.embedder);
            let model_started = Instant::now();
            let computed = tokio::task::spawn_blocking(move || embedder.embed(&texts))
                .await
                .map_err(|error| EmbedError::Model(error.to_string()))??;
            summary.embedding_time = model_started.elapsed();
            summary.embedded = computed.len() as u64;
            let fresh: Vec<(String, Vec<f32>)> = missing.into_iter().map(|(hash, _)| hash).zip(computed).collect();
            store_vectors(&self.pool, &model_id, TEXT_FORMAT, &fresh).await?;
            vectors.extend(fresh);
        }

        let points: Vec<Point> = live
            .iter()
            .map(|(id, version_no, hash, persona)| Point {
                id: **id,
                vector: vectors[*hash].clone(),
                payload: PointPayload::new(persona, *version_no, hash, &model_id, TEXT_FORMAT),
            })
            .collect();
        let gone: Vec<Uuid> = targets
            .iter()
            .filter_map(|target| match target {
                Target::Gone(id) => Some(*id),
                Target::Live { .. } => None,
            })
            .collect();
        let written = self.write(&points, &gone, &mut summary).await;
        if summary.changed() {
            // Similar personas and semantic results have changed, even when a
            // later batch failed.
            notify_change(&self.pool).await?;
        }
        written?;
        Ok(summary)
    }

    async fn write(&self, points: &[Point], gone: &[Uuid], summary: &mut ProjectionSummary) -> Result<(), IndexError> {
        for chunk in points.chunks(WRITE_BATCH) {
            self.index.upsert(chunk.to_vec()).await?;
            summary.upserted += chunk.len() as u64;
        }
        for chunk in gone.chunks(WRITE_BATCH) {
            self.index.delete(chunk.to_vec()).await?;
            summary.deleted += chunk.len() as u64;
        }
        Ok(())
    }

    async fn targets(&self, personas: &[Uuid]) -> Result<Vec<Target>, ProjectError> {
        let rows: Vec<TargetRow> = sqlx::query_as(
            "SELECT wanted.id, coalesce(p.deleted, true) AS deleted, v.version_no, v.content_hash, v.document
             FROM UNNEST($1::uuid[]) AS wanted(id)
             LEFT JOIN personas p ON p.id = wanted.id
             LEFT JOIN persona_versions v ON v.id = p.current_version_id",
        )
        .bind(personas)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(
                |TargetRow {
                     id,
                     deleted,
                     version_no,
                     content_hash,
                     document,
                 }| {
                    match (deleted, version_no, content_hash, document) {
                        (false, Some(version_no), Some(content_hash), Some(document)) => {
                            let persona: Persona =
                                serde_json::from_value(document).map_err(|error| ProjectError::Document {
                                    id,
                                    reason: error.to_string(),
                                })?;
                            Ok(Target::Live {
                                id,
                                version_no,
                                content_hash,
                                persona: Box::new(persona),
                            })
                        }
                        _ => Ok(Target::Gone(id)),
                    }
                },
            )
            .collect()
    }

    /// How long until the next outbox row is due (`None`: the outbox is empty).
    async fn next_due(&self) -> sqlx::Result<Option<Duration>> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "SELECT greatest(0, extract(epoch FROM min(next_attempt_at) - now()))::float8 FROM vector_outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(seconds.map(|seconds| Duration::from_secs_f64(seconds.min(MAX_BACKOFF.as_secs_f64()))))
    }

    /// Runs until `shutdown`: reconciles once, then drains whenever `wake` is
    /// notified (after each sync), when a backed-off row falls due, and
    /// every few seconds. Failures are logged and retried, never fatal.
    pub async fn run(&self, wake: &tokio::sync::Notify, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut reconciled = false;
        loop {
            let outcome = if reconciled {
                self.drain().await
            } else {
                self.reconcile(false, &indicatif::ProgressBar::hidden()).await
            };
            let failed = match outcome {
                Ok(summary) => {
                    reconciled = true;
                    if summary.changed() {
                        tracing::info!("vectors: {summary}");
                    }
                    false
                }
                Err(error) => {
                    tracing::warn!(%error, "updating the vector index failed; it will be retried");
                    true
                }
            };
            // After a failure that left nothing scheduled (the database
            // itself away), still wait a little rather than spin.
            let shortest = if failed {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(50)
            };
            let pause = match self.next_due().await {
                Ok(Some(due)) => due.clamp(shortest, IDLE_POLL),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

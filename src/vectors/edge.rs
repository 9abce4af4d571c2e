//! The embedded vector index: a qdrant-edge shard in the data directory.
//!
//! qdrant-edge is synchronous, so every call runs on tokio's blocking pool.
//! Two of its habits shape this module (see `docs/dev/qdrant-edge.md`):
//! `load` does not replay the WAL, so each write is flushed before it is
//! reported done; and `flush` panics if an update runs at the same moment,
//! so writes and flushes share one lock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qdrant_edge::{
    CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldIndexOperations, Filter, JsonPath, NamedQuery, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStruct, QueryEnum, Record, ScoredPoint, ScrollRequest, SearchRequest,
    UpdateOperation, VectorInternal, VectorStructInternal, WalOptions, WithPayloadInterface, WithVector,
};
use serde_json::json;
use uuid::Uuid;

use crate::persona::search_filter::SearchFilter;

use super::index::{
    FILTERED_BOOLS, FILTERED_KEYWORDS, Hit, IndexError, Point, PointStamp, STAMP_FIELDS, VectorIndex,
    payload_from_json, stamp_from_json,
};

/// The WAL is never truncated by qdrant-edge 0.7.2, and every segment kept
/// is mapped and read when the shard opens, so a segment's size is resident
/// memory for good: the default is two 32 MiB files. At 4 MiB, a server at
/// 10,000 personas held 7.7 MiB of log it never reads again. A segment
/// holds a few hundred points (a 64-point write batch is about 200 KiB; a
/// larger entry grows its segment).
const WAL_SEGMENT_BYTES: usize = 1024 * 1024;

/// A qdrant-edge shard. Clones share the shard.
#[derive(Clone)]
pub struct EdgeIndex {
    inner: Arc<Shard>,
}

struct Shard {
    shard: EdgeShard,
    /// Serializes update and flush (qdrant-edge panics otherwise).
    write_lock: Mutex<()>,
    directory: PathBuf,
}

impl std::fmt::Debug for EdgeIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EdgeIndex")
            .field("directory", &self.inner.directory)
            .finish()
    }
}

/// Vectors and payloads are kept on disk (memory-mapped, paged in as
/// searches read them). Kept "in RAM", qdrant-edge prefaults the whole
/// preallocated 32 MiB vector chunk when it opens the shard, whatever the
/// registry's size: 32.8 MiB of a server's memory for 15 MB of vectors at
/// 10,000 personas. The page cache serves a search as fast once the pages
/// are in. Shards built before keep the storage they were built with (the
/// segments carry their own); `personas reindex --recreate` rebuilds one.
fn config(dimension: usize) -> EdgeConfig {
    EdgeConfig::builder()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParams::builder(dimension, Distance::Cosine)
                .on_disk(true)
                .build(),
        )
        .on_disk_payload(true)
        .wal_options(WalOptions {
            segment_capacity: WAL_SEGMENT_BYTES,
            ..WalOptions::default()
        })
        .build()
}

impl EdgeIndex {
    /// Opens the shard in `directory`, creating it if needed. The index is
    /// derived data: a shard built for another vector size is removed and
    /// created afresh (the caller then refills it from PostgreSQL).
    pub async fn open(directory: &Path, dimension: usize) -> Result<EdgeIndex, IndexError> {
        let directory = directory.to_path_buf();
        blocking(move || open_shard(directory, dimension)).await?
    }

    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shard) -> Result<T, IndexError> + Send + 'static,
    ) -> impl Future<Output = Result<T, IndexError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move { blocking(move || work(&inner)).await? }
    }

    /// The points nearest to the stored point `id`, itself excluded.
    fn similar_by(
        &self,
        id: Uuid,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send + 'static {
        let filter = edge_filter(filter, Some(id));
        self.run(move |shard| {
            shard
                .search(shard.stored_vector(id)?, filter?, limit)?
                .into_iter()
                .map(hit)
                .collect()
        })
    }
}

fn open_shard(directory: PathBuf, dimension: usize) -> Result<EdgeIndex, IndexError> {
    let unavailable = |error: String| IndexError::Unavailable(format!("{}: {error}", directory.display()));
    let shard = if directory.join("edge_config.json").exists() {
        prune_closed_wal_segments(&directory.join("wal")).map_err(|error| unavailable(error.to_string()))?;
        match EdgeShard::load(&directory, Some(config(dimension))) {
            Ok(shard) => shard,
            Err(error) if error.to_string().contains("Incompatible") => {
                tracing::warn!(
                    directory = %directory.display(),
                    "the embedded vector index was built for another vector size; rebuilding it"
                );
                std::fs::remove_dir_all(&directory).map_err(|error| unavailable(error.to_string()))?;
                create_shard(&directory, dimension)?
            }
            Err(error) => return Err(describe_open_error(&directory, &error.to_string())),
        }
    } else {
        // A directory without a config is at most the debris of a failed
        // create; qdrant-edge refuses to create over segment data.
        if directory.exists() {
            std::fs::remove_dir_all(&directory).map_err(|error| unavailable(error.to_string()))?;
        }
        create_shard(&directory, dimension)?
    };
    let index = EdgeIndex {
        inner: Arc::new(Shard {
            shard,
            write_lock: Mutex::new(()),
            directory,
        }),
    };
    index.inner.create_payload_indexes()?;
    Ok(index)
}

/// Deletes every closed WAL segment but the newest. qdrant-edge 0.7.2 never
/// truncates its WAL and never replays it on load (every update here is
/// flushed into the segments before it returns), yet it maps and reads every
/// segment when it opens: the WAL grew by 4 MiB per few thousand updates for
/// good, on disk and resident (24.5 MiB of a server's memory at 10,000
/// personas). The newest closed segment stays because the WAL takes its next
/// operation number from it, and the segments ignore operations numbered
/// below what they already hold; that is also what qdrant's own
/// `prefix_truncate` keeps. Only under the WAL's own lock (the `flock` on its
/// directory that qdrant-edge takes), so a second process, which the load
/// then refuses, never touches the files of a shard in use.
fn prune_closed_wal_segments(wal: &Path) -> std::io::Result<()> {
    let Ok(directory) = std::fs::File::open(wal) else {
        return Ok(()); // no WAL yet: qdrant-edge creates it
    };
    if directory.try_lock().is_err() {
        return Ok(()); // in use: the load reports it
    }
    let entries = std::fs::read_dir(wal)?;
    let mut closed: Vec<(u64, PathBuf)> = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let start = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("closed-"))
            .and_then(|start| start.parse::<u64>().ok());
        if let Some(start) = start {
            closed.push((start, path));
        }
    }
    closed.sort_unstable_by_key(|(start, _)| *start);
    closed.pop();
    for (_, path) in closed {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

fn create_shard(directory: &Path, dimension: usize) -> Result<EdgeShard, IndexError> {
    std::fs::create_dir_all(directory)
        .map_err(|error| IndexError::Unavailable(format!("{}: {error}", directory.display())))?;
    EdgeShard::new(directory, config(dimension)).map_err(|error| describe_open_error(directory, &error.to_string()))
}

fn describe_open_error(directory: &Path, error: &str) -> IndexError {
    if error.contains("WouldBlock") {
        IndexError::Unavailable(format!(
            "the embedded vector index {} is open in another personas process (serve or sync --watch); \
             use that process, or point every process at one Qdrant server with QDRANT_URL",
            directory.display()
        ))
    } else {
        IndexError::Unavailable(format!("{}: {error}", directory.display()))
    }
}

impl Shard {
    fn update(&self, operation: UpdateOperation) -> Result<(), IndexError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.shard.update(operation).map_err(unavailable)?;
        // The commit point: qdrant-edge does not replay its WAL on load.
        self.shard.flush();
        Ok(())
    }

    fn create_payload_indexes(&self) -> Result<(), IndexError> {
        let fields = FILTERED_KEYWORDS
            .iter()
            .map(|field| (*field, PayloadSchemaType::Keyword))
            .chain(FILTERED_BOOLS.iter().map(|field| (*field, PayloadSchemaType::Bool)));
        for (field, schema) in fields {
            if self.shard.info().payload_schema.contains_key(&json_path(field)?) {
                continue;
            }
            self.update(UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                CreateIndex {
                    field_name: json_path(field)?,
                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                },
            )))?;
        }
        Ok(())
    }

    fn search(&self, query: Vec<f32>, filter: Option<Filter>, limit: usize) -> Result<Vec<ScoredPoint>, IndexError> {
        self.shard
            .search(SearchRequest {
                query: QueryEnum::Nearest(NamedQuery {
                    query: VectorInternal::Dense(query),
                    using: None,
                }),
                filter,
                params: None,
                limit,
                offset: 0,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: None,
                score_threshold: None,
            })
            .map_err(unavailable)
    }

    /// Every point of the shard, a page at a time, each read by `read`.
    fn scroll_every_point<T>(
        &self,
        with_payload: WithPayloadInterface,
        with_vector: bool,
        mut read: impl FnMut(Record) -> Result<T, IndexError>,
    ) -> Result<Vec<T>, IndexError> {
        let mut read_points = Vec::new();
        let mut offset = None;
        loop {
            let (records, next) = self
                .shard
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(1000),
                    filter: None,
                    with_payload: Some(with_payload.clone()),
                    with_vector: WithVector::Bool(with_vector),
                    order_by: None,
                })
                .map_err(unavailable)?;
            for record in records {
                read_points.push(read(record)?);
            }
            match next {
                Some(next) => offset = Some(next),
                None => return Ok(read_points),
            }
        }
    }

    /// The vector stored for `id`: the query of a search for its neighbours.
    fn stored_vector(&self, id: Uuid) -> Result<Vec<f32>, IndexError> {
        let record = self.retrieve(id)?.ok_or(IndexError::NotIndexed(id))?;
        dense_vector(id, record.vector)
    }

    fn retrieve(&self, id: Uuid) -> Result<Option<Record>, IndexError> {
        let mut records = self
            .shard
            .retrieve(
                &[PointId::Uuid(id)],
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Bool(true)),
            )
            .map_err(unavailable)?;
        Ok(records.pop())
    }
}

impl VectorIndex for EdgeIndex {
    fn location(&self) -> String {
        format!("qdrant-edge at {}", self.inner.directory.display())
    }

    fn upsert(&self, points: Vec<Point>) -> impl Future<Output = Result<(), IndexError>> + Send {
        self.run(move |shard| {
            let points: Vec<_> = points
                .into_iter()
                .map(|point| PointStruct::new(PointId::Uuid(point.id), point.vector, point.payload.to_json()).into())
                .collect();
            if points.is_empty() {
                return Ok(());
            }
            shard.update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(points),
            )))
        })
    }

    fn delete(&self, ids: Vec<Uuid>) -> impl Future<Output = Result<(), IndexError>> + Send {
        self.run(move |shard| {
            if ids.is_empty() {
                return Ok(());
            }
            shard.update(UpdateOperation::PointOperation(PointOperations::DeletePoints {
                ids: ids.into_iter().map(PointId::Uuid).collect(),
            }))
        })
    }

    fn search(
        &self,
        vector: Vec<f32>,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send {
        let filter = edge_filter(filter, None);
        self.run(move |shard| shard.search(vector, filter?, limit)?.into_iter().map(hit).collect())
    }

    fn similar(
        &self,
        id: Uuid,
        filter: &SearchFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, IndexError>> + Send {
        self.similar_by(id, filter, limit)
    }

    fn points(&self) -> impl Future<Output = Result<Vec<Point>, IndexError>> + Send {
        self.run(|shard| shard.scroll_every_point(WithPayloadInterface::Bool(true), true, point_of))
    }

    fn point(&self, id: Uuid) -> impl Future<Output = Result<Option<Point>, IndexError>> + Send {
        self.run(move |shard| shard.retrieve(id)?.map(point_of).transpose())
    }

    fn count(&self) -> impl Future<Output = Result<u64, IndexError>> + Send {
        self.run(|shard| {
            let count = shard
                .shard
                .count(CountRequest {
                    filter: None,
                    exact: true,
                })
                .map_err(unavailable)?;
            Ok(count as u64)
        })
    }

    fn stamps(&self) -> impl Future<Output = Result<Vec<PointStamp>, IndexError>> + Send {
        self.run(|shard| {
            let fields = STAMP_FIELDS
                .iter()
                .map(|field| json_path(field))
                .collect::<Result<Vec<_>, _>>()?;
            shard.scroll_every_point(WithPayloadInterface::Fields(fields), false, |record| {
                let id = uuid_of(record.id)?;
                stamp_from_json(id, &payload_value(record.payload.map(|payload| payload.0)))
            })
        })
    }
}

/// Qdrant's filter, written in its documented JSON form (qdrant-edge
/// deserializes the same shape the REST API takes).
fn edge_filter(filter: &SearchFilter, exclude: Option<Uuid>) -> Result<Option<Filter>, IndexError> {
    let mut must = Vec::new();
    if let Some(domain) = &filter.domain {
        must.push(json!({"key": "domains", "match": {"value": domain}}));
    }
    if let Some(mode) = &filter.mode {
        must.push(json!({"key": "modes", "match": {"value": mode}}));
    }
    if let Some(is_real) = filter.is_real {
        must.push(json!({"key": "is_real", "match": {"value": is_real}}));
    }
    for range in &filter.traits {
        must.push(json!({"key": format!("traits.{}", range.path), "range": {"gte": range.min, "lte": range.max}}));
    }
    let must_not: Vec<_> = exclude.map(|id| json!({"has_id": [id]})).into_iter().collect();
    if must.is_empty() && must_not.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(json!({"must": must, "must_not": must_not}))
        .map(Some)
        .map_err(|error| IndexError::Corrupt(format!("cannot express the filter: {error}")))
}

fn json_path(field: &str) -> Result<JsonPath, IndexError> {
    field
        .parse()
        .map_err(|()| IndexError::Corrupt(format!("{field:?} is not a payload path")))
}

fn hit(point: ScoredPoint) -> Result<Hit, IndexError> {
    let id = uuid_of(point.id)?;
    Ok(Hit {
        id,
        score: point.score,
        payload: payload_from_json(id, payload_value(point.payload.map(|payload| payload.0)))?,
    })
}

fn point_of(record: Record) -> Result<Point, IndexError> {
    let id = uuid_of(record.id)?;
    Ok(Point {
        id,
        vector: dense_vector(id, record.vector)?,
        payload: payload_from_json(id, payload_value(record.payload.map(|payload| payload.0)))?,
    })
}

fn payload_value(payload: Option<serde_json::Map<String, serde_json::Value>>) -> serde_json::Value {
    serde_json::Value::Object(payload.unwrap_or_default())
}

fn dense_vector(id: Uuid, vector: Option<VectorStructInternal>) -> Result<Vec<f32>, IndexError> {
    match vector {
        Some(VectorStructInternal::Single(vector)) => Ok(vector),
        _ => Err(IndexError::Corrupt(format!("point {id} has no dense vector"))),
    }
}

fn uuid_of(id: PointId) -> Result<Uuid, IndexError> {
    match id {
        PointId::Uuid(id) => Ok(id),
        PointId::NumId(number) => Err(IndexError::Corrupt(format!(
            "point {number} has a numeric id; this index holds persona UUIDs only"
        ))),
    }
}

fn unavailable(error: qdrant_edge::OperationError) -> IndexError {
    // `{}`: the Debug form carries a whole backtrace.
    IndexError::Unavailable(error.to_string())
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, IndexError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| IndexError::Unavailable(format!("the vector index task failed: {error}")))
}

//! The vector index on a Qdrant server (or cluster) over gRPC: the scale-out
//! path, shared by several `serve` replicas.

use std::time::Duration;

use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, GetPointsBuilder, PayloadIncludeSelector, PointId, PointStruct, PointsIdsList, Query,
    QueryPointsBuilder, Range, RetrievedPoint, ScrollPointsBuilder, UpsertPointsBuilder, VectorInput,
    VectorParamsBuilder, point_id::PointIdOptions, vector_output, vectors_config,
    with_payload_selector::SelectorOptions,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use uuid::Uuid;

use crate::persona::search_filter::SearchFilter;

use super::index::{
    FILTERED_BOOLS, FILTERED_KEYWORDS, Hit, IndexError, Point, PointStamp, STAMP_FIELDS, VectorIndex,
    payload_from_json, stamp_from_json,
};

pub struct QdrantIndex {
    client: Qdrant,
    url: String,
    collection: String,
    /// Whether a key was given, for the error when the server refuses it.
    has_api_key: bool,
}

impl std::fmt::Debug for QdrantIndex {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the API key.
        formatter
            .debug_struct("QdrantIndex")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .finish()
    }
}

impl QdrantIndex {
    /// Connects and makes sure `collection` exists with `dimension`-sized
    /// cosine vectors. An existing collection is never dropped here: other
    /// replicas may be reading it. One with another vector size is an error
    /// that names the fix (`personas reindex --recreate`).
    pub async fn open(
        url: &str,
        api_key: Option<&str>,
        collection: &str,
        dimension: usize,
    ) -> Result<QdrantIndex, IndexError> {
        let index = QdrantIndex::connect(url, api_key, collection)?;
        index.ensure_collection(dimension).await?;
        Ok(index)
    }

    /// A client for `collection`, without checking or creating it.
    pub fn connect(url: &str, api_key: Option<&str>, collection: &str) -> Result<QdrantIndex, IndexError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_string))
            .skip_compatibility_check()
            .build()
            .map_err(|error| IndexError::Unavailable(format!("Qdrant at {url}: {error}")))?;
        Ok(QdrantIndex {
            client,
            url: url.to_string(),
            collection: collection.to_string(),
            has_api_key: api_key.is_some(),
        })
    }

    async fn ensure_collection(&self, dimension: usize) -> Result<(), IndexError> {
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(|error| self.unavailable(error))?;
        if !exists {
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(&self.collection)
                        .vectors_config(VectorParamsBuilder::new(dimension as u64, Distance::Cosine)),
                )
                .await;
            // Another replica may have created it in the meantime.
            if let Err(error) = created
                && !error.to_string().contains("already exists")
            {
                return Err(self.unavailable(error));
            }
        } else {
            let stored = self.stored_dimension().await?;
            if stored != Some(dimension as u64) {
                return Err(IndexError::Incompatible(format!(
                    "the Qdrant collection {:?} at {} holds vectors of size {}, but the model gives {dimension}; \
                     run `personas reindex --recreate` to rebuild it for this model",
                    self.collection,
                    self.url,
                    stored.map_or("unknown".to_string(), |size| size.to_string()),
                )));
            }
        }
        let fields = FILTERED_KEYWORDS
            .iter()
            .map(|field| (*field, FieldType::Keyword))
            .chain(FILTERED_BOOLS.iter().map(|field| (*field, FieldType::Bool)));
        for (field, kind) in fields {
            // Creating an index that exists is accepted by Qdrant (a no-op).
            self.client
                .create_field_index(CreateFieldIndexCollectionBuilder::new(&self.collection, field, kind).wait(true))
                .await
                .map_err(|error| self.unavailable(error))?;
        }
        self.wait_until_readable().await
    }

    /// Waits until the collection answers a read. A collection that another
    /// writer is still creating is already listed while its shard is
    /// `Initializing`, and every read of it then fails with "0 of 0 read
    /// operations failed" (seen when two syncs start at once); it becomes
    /// readable within moments, so that one condition is waited out, for a
    /// bounded time, and any other error is returned at once.
    async fn wait_until_readable(&self) -> Result<(), IndexError> {
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let probe = self
                .client
                .count(CountPointsBuilder::new(&self.collection).exact(false))
                .await;
            match probe {
                Ok(_) => return Ok(()),
                Err(error) if shard_not_yet_readable(&error) && started.elapsed() < READABLE_WITHIN => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(error) if shard_not_yet_readable(&error) => {
                    return Err(IndexError::Unavailable(format!(
                        "Qdrant at {}: the collection {:?} has no readable shard replica after {} s \
                         (it is still being created, or its replicas are down): {error}",
                        self.url,
                        self.collection,
                        READABLE_WITHIN.as_secs(),
                    )));
                }
                Err(error) => return Err(self.unavailable(error)),
            }
        }
    }

    async fn stored_dimension(&self) -> Result<Option<u64>, IndexError> {
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(|error| self.unavailable(error))?;
        let config = info
            .result
            .and_then(|info| info.config)
            .and_then(|config| config.params)
            .and_then(|params| params.vectors_config)
            .and_then(|vectors| vectors.config);
        Ok(match config {
            Some(vectors_config::Config::Params(params)) => Some(params.size),
            _ => None,
        })
    }

    /// Drops the collection (for `reindex --recreate`), then creates it anew.
    pub async fn recreate(&self, dimension: usize) -> Result<(), IndexError> {
        self.drop_collection().await?;
        self.ensure_collection(dimension).await
    }

    /// Deletes the collection and every point in it.
    pub async fn drop_collection(&self) -> Result<(), IndexError> {
        self.client
            .delete_collection(&self.collection)
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(())
    }

    fn unavailable(&self, error: QdrantError) -> IndexError {
        if let QdrantError::ResponseError { status } = &error
            && matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            )
        {
            let problem = if self.has_api_key {
                "refused the API key given (QDRANT_API_KEY): set it to a key the server accepts"
            } else {
                "needs an API key: set QDRANT_API_KEY"
            };
            return IndexError::Unavailable(format!("Qdrant at {} {problem} ({})", self.url, status.message()));
        }
        IndexError::Unavailable(format!("Qdrant at {} ({}): {error}", self.url, self.collection))
    }

    /// Every point of the collection, a page at a time, each read by `read`.
    async fn scroll_every_point<T>(
        &self,
        with_payload: SelectorOptions,
        with_vectors: bool,
        mut read: impl FnMut(RetrievedPoint) -> Result<T, IndexError>,
    ) -> Result<Vec<T>, IndexError> {
        let mut read_points = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .limit(1000)
                .with_payload(with_payload.clone())
                .with_vectors(with_vectors);
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            let response = self
                .client
                .scroll(request)
                .await
                .map_err(|error| self.unavailable(error))?;
            for point in response.result {
                read_points.push(read(point)?);
            }
            match response.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(read_points),
            }
        }
    }

    /// The points nearest to the stored point `id`, itself excluded.
    async fn similar_by(&self, id: Uuid, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, IndexError> {
        if self.point(id).await?.is_none() {
            return Err(IndexError::NotIndexed(id));
        }
        let input = VectorInput::new_id(PointId::from(id.to_string()));
        self.query(input, server_filter(filter, Some(id)), limit).await
    }

    async fn query(&self, input: VectorInput, filter: Option<Filter>, limit: usize) -> Result<Vec<Hit>, IndexError> {
        let mut request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(input))
            .limit(limit as u64)
            .with_payload(true);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let response = self
            .client
            .query(request)
            .await
            .map_err(|error| self.unavailable(error))?;
        response
            .result
            .into_iter()
            .map(|point| {
                let id = uuid_of(point.id)?;
                Ok(Hit {
                    id,
                    score: point.score,
                    payload: payload_from_json(id, Payload::from(point.payload).into())?,
                })
            })
            .collect()
    }
}

impl VectorIndex for QdrantIndex {
    fn location(&self) -> String {
        format!("Qdrant at {} (collection {})", self.url, self.collection)
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        if points.is_empty() {
            return Ok(());
        }
        let points = points
            .into_iter()
            .map(|point| {
                let payload = Payload::try_from(point.payload.to_json())
                    .map_err(|error| IndexError::Corrupt(format!("payload of {}: {error}", point.id)))?;
                Ok(PointStruct::new(point.id.to_string(), point.vector, payload))
            })
            .collect::<Result<Vec<_>, IndexError>>()?;
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(())
    }

    async fn delete(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(PointsIdsList { ids })
                    .wait(true),
            )
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(())
    }

    async fn search(&self, vector: Vec<f32>, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, IndexError> {
        self.query(VectorInput::from(vector), server_filter(filter, None), limit)
            .await
    }

    async fn similar(&self, id: Uuid, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, IndexError> {
        self.similar_by(id, filter, limit).await
    }

    async fn points(&self) -> Result<Vec<Point>, IndexError> {
        self.scroll_every_point(SelectorOptions::Enable(true), true, |point| {
            let id = uuid_of(point.id)?;
            Ok(Point {
                id,
                vector: dense_vector(id, point.vectors.as_ref())?,
                payload: payload_from_json(id, Payload::from(point.payload).into())?,
            })
        })
        .await
    }

    async fn point(&self, id: Uuid) -> Result<Option<Point>, IndexError> {
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.collection, vec![PointId::from(id.to_string())])
                    .with_payload(true)
                    .with_vectors(true),
            )
            .await
            .map_err(|error| self.unavailable(error))?;
        let Some(point) = response.result.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(Point {
            id,
            vector: dense_vector(id, point.vectors.as_ref())?,
            payload: payload_from_json(id, Payload::from(point.payload).into())?,
        }))
    }

    async fn count(&self) -> Result<u64, IndexError> {
        let response = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(|error| self.unavailable(error))?;
        Ok(response.result.map_or(0, |result| result.count))
    }

    async fn stamps(&self) -> Result<Vec<PointStamp>, IndexError> {
        let fields = PayloadIncludeSelector {
            fields: STAMP_FIELDS.iter().map(|field| field.to_string()).collect(),
        };
        self.scroll_every_point(fields.into(), false, |point| {
            let id = uuid_of(point.id)?;
            stamp_from_json(id, &Payload::from(point.payload).into())
        })
        .await
    }
}

/// How long opening waits for a collection's shard to become readable.
const READABLE_WITHIN: Duration = Duration::from_secs(30);

/// Whether `error` is Qdrant saying that no replica of a shard can serve
/// reads yet (a shard being created or recovering), rather than a real failure.
fn shard_not_yet_readable(error: &QdrantError) -> bool {
    let QdrantError::ResponseError { status } = error else {
        return false;
    };
    let message = status.message();
    status.code() == tonic::Code::Internal
        && (message.contains("0 of 0 read operations failed")
            || message.contains("does not have enough active replicas"))
}

fn dense_vector(id: Uuid, vectors: Option<&qdrant_client::qdrant::VectorsOutput>) -> Result<Vec<f32>, IndexError> {
    match vectors.and_then(|vectors| vectors.get_vector()) {
        Some(vector_output::Vector::Dense(dense)) => Ok(dense.data),
        _ => Err(IndexError::Corrupt(format!("point {id} has no dense vector"))),
    }
}

fn server_filter(filter: &SearchFilter, exclude: Option<Uuid>) -> Option<Filter> {
    let mut must = Vec::new();
    if let Some(domain) = &filter.domain {
        must.push(Condition::matches("domains", domain.clone()));
    }
    if let Some(mode) = &filter.mode {
        must.push(Condition::matches("modes", mode.clone()));
    }
    if let Some(is_real) = filter.is_real {
        must.push(Condition::matches("is_real", is_real));
    }
    for range in &filter.traits {
        must.push(Condition::range(
            format!("traits.{}", range.path),
            Range {
                gte: range.min,
                lte: range.max,
                gt: None,
                lt: None,
            },
        ));
    }
    let must_not: Vec<Condition> = exclude
        .map(|id| Condition::has_id([PointId::from(id.to_string())]))
        .into_iter()
        .collect();
    if must.is_empty() && must_not.is_empty() {
        return None;
    }
    Some(Filter {
        must,
        must_not,
        ..Default::default()
    })
}

fn uuid_of(id: Option<PointId>) -> Result<Uuid, IndexError> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(text)) => text
            .parse()
            .map_err(|_| IndexError::Corrupt(format!("point id {text:?} is not a UUID"))),
        Some(PointIdOptions::Num(number)) => Err(IndexError::Corrupt(format!(
            "point {number} has a numeric id; this collection should hold persona UUIDs only"
        ))),
        None => Err(IndexError::Corrupt("a point without an id".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(code: tonic::Code, message: &str) -> QdrantError {
        QdrantError::ResponseError {
            status: tonic::Status::new(code, message),
        }
    }

    #[test]
    fn only_a_shard_without_readable_replicas_is_waited_for() {
        // The message a sync met on a collection another sync was creating.
        let creating = response(
            tonic::Code::Internal,
            "Service internal error: 0 of 0 read operations failed",
        );
        assert!(shard_not_yet_readable(&creating));
        let recovering = response(
            tonic::Code::Internal,
            "Service internal error: The replica set for shard 0 on peer 1 does not have enough active replicas",
        );
        assert!(shard_not_yet_readable(&recovering));
        // Real failures are not: a replica that answered with an error, a
        // missing collection, a refused key.
        let failed = response(
            tonic::Code::Internal,
            "Service internal error: 1 of 1 read operations failed:\n  Service internal error: disk full",
        );
        assert!(!shard_not_yet_readable(&failed));
        assert!(!shard_not_yet_readable(&response(
            tonic::Code::NotFound,
            "Not found: Collection `x` doesn't exist!"
        )));
        assert!(!shard_not_yet_readable(&response(
            tonic::Code::Unauthenticated,
            "0 of 0 read operations failed"
        )));
    }
}

//! From configuration to a loaded model and an open index: where the model
//! lives, and which of the two vector stores to use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use super::cache::cached_dimension;
use super::edge::EdgeIndex;
use super::embed::{EmbedError, Embedder, SessionMemory, SessionTuning};
use super::index::{Hit, IndexError, Point, PointStamp, VectorIndex};
use super::server::QdrantIndex;
use super::text::TEXT_FORMAT;
use crate::config::Config;
use crate::persona::search_filter::SearchFilter;

/// The directory `scripts/fetch-model` unpacks the default model into,
/// under the cache root.
pub const DEFAULT_MODEL: &str = "models/all-minilm-l6-v2-int8";

/// The Qdrant collection used when none is configured.
pub const DEFAULT_COLLECTION: &str = "personas";

/// How to provision the model, for messages where it is missing.
pub const PROVISIONING_HINT: &str = "run scripts/fetch-model and set PERSONAS_EMBED_MODEL_DIR to the directory it prints \
     (or leave it unset to use the default cache)";

/// The cache root: `$PERSONAS_CACHE`, else `$XDG_CACHE_HOME/personas`, else `~/.cache/personas`
/// (the same rule as `scripts/fetch-model`).
pub fn cache_root() -> Option<PathBuf> {
    if let Some(root) = std::env::var_os("PERSONAS_CACHE").filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(root));
    }
    if let Some(root) = std::env::var_os("XDG_CACHE_HOME").filter(|value| !value.is_empty()) {
        return Some(PathBuf::from(root).join("personas"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/personas"))
}

/// The model directory to use: the configured one, else the default cache
/// location if `scripts/fetch-model` has filled it.
pub fn resolve_model_dir(configured: Option<&Path>) -> Option<PathBuf> {
    match configured {
        Some(directory) => Some(directory.to_path_buf()),
        None => cache_root()
            .map(|root| root.join(DEFAULT_MODEL))
            .filter(|directory| directory.join("model.onnx").is_file()),
    }
}

/// Loads the model the configuration names: `model_dir` (offline) first,
/// then a named model fastembed downloads (`model`, online builds only),
/// else the default offline model if it is provisioned. `Ok(None)` means no
/// model is configured or provisioned (semantic features then answer "not
/// configured"); a configured model that fails to load is an error.
pub async fn load_embedder(config: &Config) -> Result<Option<Arc<Embedder>>, EmbedError> {
    let runtime_library = config.ort_library.clone();
    let loading = match (&config.model_dir, &config.model, &resolve_model_dir(None)) {
        (Some(model_dir), _, _) | (None, None, Some(model_dir)) => {
            let model_dir = model_dir.clone();
            let tuning = SessionTuning {
                memory: config.embed_memory.unwrap_or(SessionMemory::Released),
                ..SessionTuning::default()
            };
            tokio::task::spawn_blocking(move || Embedder::load_with(&model_dir, runtime_library.as_deref(), tuning))
                .await
        }
        (None, Some(name), _) => {
            let name = name.clone();
            tokio::task::spawn_blocking(move || load_named(&name, runtime_library)).await
        }
        (None, None, None) => return Ok(None),
    };
    let embedder = loading.map_err(|error| EmbedError::Model(error.to_string()))??;
    Ok(Some(Arc::new(embedder)))
}

#[cfg(feature = "online-models")]
fn load_named(name: &str, runtime_library: Option<PathBuf>) -> Result<Embedder, EmbedError> {
    let default_model = cache_root().map(|root| root.join(DEFAULT_MODEL));
    let library = runtime_library
        .or_else(|| default_model.as_deref().and_then(super::embed::find_runtime_library))
        .ok_or_else(|| EmbedError::Runtime {
            path: "libonnxruntime.so".to_string(),
            reason: "not found; set PERSONAS_ORT_LIBRARY (or embed.runtime_library), or run scripts/fetch-model"
                .to_string(),
        })?;
    let cache = cache_root()
        .map(|root| root.join("hub"))
        .ok_or_else(|| EmbedError::Model("no cache directory: set PERSONAS_CACHE or HOME".to_string()))?;
    Embedder::load_named(name, &cache, &library)
}

#[cfg(not(feature = "online-models"))]
fn load_named(name: &str, _runtime_library: Option<PathBuf>) -> Result<Embedder, EmbedError> {
    Err(EmbedError::Model(format!(
        "embed.model = {name:?} names a model to download, but this build cannot download models; \
         rebuild with `cargo build --release --features online-models`, or use the offline model: {PROVISIONING_HINT}"
    )))
}

/// The loaded model and the open index: what semantic features need.
#[derive(Debug)]
pub struct Vectors {
    pub embedder: Arc<Embedder>,
    /// Shared: a server reads it while its outbox worker writes it.
    pub index: Arc<AnyIndex>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Loads the model and opens the index the configuration names (a Qdrant
/// server when `qdrant_url` is set, else qdrant-edge under `data_dir`).
/// `Ok(None)` when no model is configured or provisioned: the caller then
/// runs without semantic features and says so.
pub async fn open_vectors(config: &Config, data_dir: &Path) -> Result<Option<Vectors>, SetupError> {
    let Some(embedder) = load_embedder(config).await? else {
        return Ok(None);
    };
    let index = AnyIndex::open(&IndexLocation::from_config(config, data_dir), embedder.dimension()).await?;
    Ok(Some(Vectors {
        embedder,
        index: Arc::new(index),
    }))
}

/// The index alone, to read the vectors already stored in it on a host
/// without the model (similar personas need no model). Its dimension is that
/// of the vectors the embedding cache holds. `Ok(None)` when nothing was ever
/// embedded, or when the embedded index was never created here.
pub async fn open_stored_index(
    config: &Config,
    data_dir: &Path,
    pool: &PgPool,
) -> Result<Option<AnyIndex>, SetupError> {
    let Some(dimension) = cached_dimension(pool, TEXT_FORMAT).await? else {
        return Ok(None);
    };
    let location = IndexLocation::from_config(config, data_dir);
    if let IndexLocation::Embedded(directory) = &location
        && !directory.exists()
    {
        return Ok(None);
    }
    Ok(Some(AnyIndex::open(&location, dimension).await?))
}

/// Where the vectors are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexLocation {
    /// qdrant-edge in this directory (the default: `<data-dir>/vectors`).
    Embedded(PathBuf),
    /// A Qdrant server or cluster (`QDRANT_URL`).
    Server {
        url: String,
        api_key: Option<String>,
        collection: String,
    },
}

impl IndexLocation {
    pub fn from_config(config: &Config, data_dir: &Path) -> IndexLocation {
        IndexLocation::new(
            config.qdrant_url.as_deref(),
            config.qdrant_api_key.as_deref(),
            config.collection.as_deref(),
            data_dir,
        )
    }

    pub fn new(
        qdrant_url: Option<&str>,
        api_key: Option<&str>,
        collection: Option<&str>,
        data_dir: &Path,
    ) -> IndexLocation {
        match qdrant_url {
            Some(url) => IndexLocation::Server {
                url: url.to_string(),
                api_key: api_key.map(str::to_string),
                collection: collection.unwrap_or(DEFAULT_COLLECTION).to_string(),
            },
            None => IndexLocation::Embedded(data_dir.join("vectors").join(collection.unwrap_or(DEFAULT_COLLECTION))),
        }
    }
}

/// Either index, chosen at run time.
#[derive(Debug)]
pub enum AnyIndex {
    Edge(EdgeIndex),
    Server(QdrantIndex),
}

impl AnyIndex {
    pub async fn open(location: &IndexLocation, dimension: usize) -> Result<AnyIndex, IndexError> {
        match location {
            IndexLocation::Embedded(directory) => Ok(AnyIndex::Edge(EdgeIndex::open(directory, dimension).await?)),
            IndexLocation::Server {
                url,
                api_key,
                collection,
            } => Ok(AnyIndex::Server(
                QdrantIndex::open(url, api_key.as_deref(), collection, dimension).await?,
            )),
        }
    }

    /// Drops every point and the collection's settings, and opens it empty
    /// (`personas reindex --recreate`, e.g. for a model of another size).
    pub async fn recreate(location: &IndexLocation, dimension: usize) -> Result<AnyIndex, IndexError> {
        match location {
            IndexLocation::Embedded(directory) => {
                if directory.exists() {
                    std::fs::remove_dir_all(directory)
                        .map_err(|error| IndexError::Unavailable(format!("{}: {error}", directory.display())))?;
                }
                AnyIndex::open(location, dimension).await
            }
            IndexLocation::Server {
                url,
                api_key,
                collection,
            } => {
                let index = match QdrantIndex::open(url, api_key.as_deref(), collection, dimension).await {
                    Ok(index) => index,
                    // The size mismatch is what --recreate is for.
                    Err(IndexError::Incompatible(_)) => QdrantIndex::connect(url, api_key.as_deref(), collection)?,
                    Err(error) => return Err(error),
                };
                index.recreate(dimension).await?;
                Ok(AnyIndex::Server(index))
            }
        }
    }
}

impl VectorIndex for AnyIndex {
    fn location(&self) -> String {
        match self {
            AnyIndex::Edge(index) => index.location(),
            AnyIndex::Server(index) => index.location(),
        }
    }

    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        match self {
            AnyIndex::Edge(index) => index.upsert(points).await,
            AnyIndex::Server(index) => index.upsert(points).await,
        }
    }

    async fn delete(&self, ids: Vec<Uuid>) -> Result<(), IndexError> {
        match self {
            AnyIndex::Edge(index) => index.delete(ids).await,
            AnyIndex::Server(index) => index.delete(ids).await,
        }
    }

    async fn search(&self, vector: Vec<f32>, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, IndexError> {
        match self {
            AnyIndex::Edge(index) => index.search(vector, filter, limit).await,
            AnyIndex::Server(index) => index.search(vector, filter, limit).await,
        }
    }

    async fn similar(&self, id: Uuid, filter: &SearchFilter, limit: usize) -> Result<Vec<Hit>, IndexError> {
        match self {
            AnyIndex::Edge(index) => index.similar(id, filter, limit).await,
            AnyIndex::Server(index) => index.similar(id, filter, limit).await,
        }
    }

    async fn points(&self) -> Result<Vec<Point>, IndexError> {
        match self {
            AnyIndex::Edge(index) => index.points().await,
            AnyIndex::Server(index) => index.points().await,
        }
    }

    async fn point(&self, id: Uuid) -> Result<Option<Point>, IndexError> {
        match self {
            AnyIndex::Edge(index) => index.point(id).await,
            AnyIndex::Server(index) => index.point(id).await,
        }
    }

    async fn count(&self) -> Result<u64, IndexError> {
        match self {
            AnyIndex::Edge(index) => index.count().await,
            AnyIndex::Server(index) => index.count().await,
        }
    }

    async fn stamps(&self) -> Result<Vec<PointStamp>, IndexError> {
        match self {
            AnyIndex::Edge(index) => index.stamps().await,
            AnyIndex::Server(index) => index.stamps().await,
        }
    }
}

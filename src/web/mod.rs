//! The website and the read API: one axum router over the PostgreSQL
//! projection (and the vector index for semantic features). The server only
//! reads the projection; its writes (settings, labels) are git commits, which
//! the sync projects like any other.

pub mod access;
pub mod answers;
pub mod api;
pub mod cache;
pub mod card;
pub mod contract;
pub mod error;
pub mod experiment_pages;
pub mod experiments;
pub mod label_write;
pub mod metrics;
pub mod pages;
pub mod profile_pages;
pub mod profiles;
pub mod prompt;
pub mod reads;
pub mod seed_paths;
pub mod settings;
pub mod webhooks;
pub mod write_request;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

use crate::git::write::RegistryWriter;
use crate::persona::pin::Pin;
use crate::store::pinned_reads::PinnedReads;
use crate::store::queries::{self, PersonaRef, VersionRecord};
use crate::vectors::exact::ExactNeighbours;
use crate::vectors::setup::{AnyIndex, Vectors};
use error::WebError;

/// What every handler can reach.
pub struct Shared {
    pub pool: PgPool,
    /// Reads of versions pinned by id, coalesced under load.
    pub pinned_reads: PinnedReads,
    /// The model and index, when a model is provisioned.
    pub vectors: Option<Vectors>,
    /// The index alone: `vectors`' when there is a model, else one opened
    /// without it, so that reads of stored vectors (similar personas)
    /// answer on a host without the model.
    pub index: Option<Arc<AnyIndex>>,
    pub metrics: metrics::Metrics,
    /// The repository and branch this process syncs in-process, if it does
    /// (sync lag is then measured against the branch tip).
    pub following: Option<(PathBuf, String)>,
    /// Answers kept until the projection changes (only while change
    /// notifications are followed: see [`answers::Answers::follow_changes`]).
    pub answers: answers::Answers,
    /// Set while `personas build-site` renders a static copy through this router.
    pub static_site: Option<StaticSite>,
    /// Tokens, roles and whether reads need one.
    pub access: access::Access,
    /// Where `PATCH …/settings` commits; `None` on a server without a local repository.
    pub writer: Option<Arc<RegistryWriter>>,
    /// The webhooks this server delivers (what `/api/webhooks` may show of them).
    pub webhooks: Vec<crate::webhooks::status::Configured>,
    /// Experiments ready to assign units, kept like `answers`.
    pub plans: experiments::Plans,
    /// What a static build preloaded for the personas it renders (see [`reads`]).
    pub snapshot: Option<Arc<reads::SiteSnapshot>>,
}

/// How a static copy differs from the live site: pages leave out what only
/// a running server knows (sync lag, pending index updates), the search page
/// searches a prebuilt index in the browser, and the feed links to
/// `base_url` (relative links when none is given).
#[derive(Debug, Clone, Default)]
pub struct StaticSite {
    pub base_url: Option<String>,
    /// Every stored vector, for the pages' "similar personas" (`None`
    /// without a model): scored here rather than searched in the index one
    /// persona at a time.
    pub neighbours: Option<Arc<ExactNeighbours>>,
}

impl Shared {
    pub fn new(pool: PgPool, vectors: Option<Vectors>, following: Option<(PathBuf, String)>) -> Shared {
        let answers = answers::Answers::default();
        let pinned_reads = PinnedReads::new(pool.clone());
        Shared {
            metrics: metrics::Metrics::new(answers.lookups(), pinned_reads.counts()),
            pinned_reads,
            pool,
            index: vectors.as_ref().map(|vectors| Arc::clone(&vectors.index)),
            vectors,
            following,
            answers,
            static_site: None,
            access: access::Access::default(),
            writer: None,
            webhooks: Vec::new(),
            plans: experiments::Plans::default(),
            snapshot: None,
        }
    }

    /// Keeps at most `max_bytes` of answers between changes (0: none).
    pub fn with_kept_answers(self, max_bytes: usize) -> Shared {
        Shared {
            answers: self.answers.limited_to(max_bytes),
            ..self
        }
    }

    /// Reads stored vectors from `index` when no model is loaded.
    pub fn with_stored_index(self, index: Option<Arc<AnyIndex>>) -> Shared {
        Shared {
            index: self.index.or(index),
            ..self
        }
    }

    /// Shows these webhooks in `/api/webhooks` and on `/status`.
    pub fn with_webhooks(self, webhooks: &[crate::webhooks::WebhookConfig]) -> Shared {
        Shared {
            webhooks: webhooks.iter().map(Into::into).collect(),
            ..self
        }
    }

    /// Accepts settings changes: tokens as `access`, commits through `writer`.
    pub fn with_writes(self, access: access::Access, writer: Option<RegistryWriter>) -> Shared {
        Shared {
            access,
            writer: writer.map(Arc::new),
            ..self
        }
    }

    /// The state for rendering a static copy of the site.
    pub fn for_static_site(pool: PgPool, vectors: Option<Vectors>, site: StaticSite) -> Shared {
        Shared {
            static_site: Some(site),
            ..Shared::new(pool, vectors, None)
        }
    }
}

pub type AppState = Arc<Shared>;

/// A request may take this long before it is answered with 503; the
/// slowest honest request (a semantic search) takes a few tens of ms.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole site: pages, API, health and metrics.
pub fn router(state: AppState) -> Router {
    routes()
        // A bug must cost one request, not the process; the answer is still a rendered error.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                WebError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed on this request",
                )
                .into_response()
            },
        ))
        .layer(axum::middleware::from_fn(reject_nul))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::private_reads,
        ))
        .layer(axum::middleware::from_fn(error::render_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::record))
        .layer(CompressionLayer::new())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The site as `build-site` asks it for each file: the same routes and the
/// same error pages, without what only a served request needs (access
/// checks, metrics, compression, a timeout, a trace span). Each layer of
/// [`router`] is cloned into every request, which a build makes 440,000 of
/// at 10,000 personas; none of them changes an answer's bytes. A handler's
/// panic fails the build's render worker, which fails the build.
pub fn site_router(state: AppState) -> Router {
    routes()
        .layer(axum::middleware::from_fn(error::render_errors))
        .with_state(state)
}

fn routes() -> Router<AppState> {
    Router::new()
        .merge(pages::routes())
        .merge(experiment_pages::routes())
        .merge(profile_pages::routes())
        .nest("/api", api::routes())
        .merge(seed_paths::routes())
        .merge(webhooks::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .fallback(not_found)
}

/// PostgreSQL text cannot hold a NUL byte; an address carrying one names
/// nothing, and is answered before any query could fail on it.
async fn reject_nul(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    let raw = uri.path_and_query().map_or(uri.path(), |path| path.as_str());
    if raw.to_ascii_lowercase().contains("%00") {
        return WebError::bad_request("bad_request", "the address contains a NUL byte").into_response();
    }
    next.run(request).await
}

async fn not_found(uri: axum::http::Uri) -> WebError {
    WebError::not_found(format!("nothing is at {}", uri.path()))
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers; the body says how far the sync is.
async fn readyz(State(state): State<AppState>) -> Response {
    match queries::sync_status(&state.pool).await {
        Ok(status) => {
            let lag = metrics::sync_lag(&state, &status).await;
            axum::Json(serde_json::json!({
                "database": "ok",
                "last_commit": status.last_commit,
                "synced_at": status.synced_at,
                "sync_lag_seconds": lag,
                "outbox_depth": status.outbox_depth,
                "semantic_search": state.vectors.is_some(),
                // Whether change notifications arrive; until they do, no kept answer is served.
                "listening": state.answers.is_listening(),
            }))
            .into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "readiness check: the database is unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "database": "unreachable" })),
            )
                .into_response()
        }
    }
}

/// A persona named in a URL, at its current version or a pinned one.
pub struct Resolved {
    pub persona: PersonaRef,
    pub version: VersionRecord,
    /// Whether a pin named the version.
    pub pinned: bool,
    /// Whether the pin names the same version forever: a version number, a
    /// content hash (its first version) or a full commit id. Tags move and a
    /// short commit prefix can become ambiguous, so those answers revalidate.
    pub immutable: bool,
}

/// Splits `slug@pin` (the `@` form of the API) into its parts.
pub fn split_pin(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('@') {
        Some((persona, pin)) => (persona, Some(pin)),
        None => (reference, None),
    }
}

/// The persona and pin of `{reference}` (`slug@pin`) and `?version=`, which
/// may not both name a version.
pub fn reference_and_pin<'a>(
    reference: &'a str,
    version: Option<&'a str>,
) -> Result<(&'a str, Option<&'a str>), WebError> {
    match split_pin(reference) {
        (_, Some(_)) if version.is_some() => Err(WebError::bad_request(
            "bad_pin",
            "give the version either as @pin or as ?version=, not both",
        )),
        (persona, at_pin) => Ok((persona, at_pin.or(version))),
    }
}

pub fn parse_pin(text: &str) -> Result<Pin, WebError> {
    text.parse::<Pin>()
        .map_err(|error| WebError::bad_request("bad_pin", error.to_string()))
}

pub use reads::resolve;

/// Extractor rejections (a malformed query string, path or body) become
/// [`WebError`]s, so they render like every other error.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, WebError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| WebError::bad_request("bad_query", rejection.body_text()))
    }
}

pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, WebError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| WebError::bad_request("bad_path", rejection.body_text()))
    }
}

//! Prometheus metrics: request counts and latencies per route, and the
//! projection's state (sync lag, outbox depth) read at scrape time.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;
use super::error::WebError;
use crate::git::{open_repository, resolve_commit};
use crate::store::pinned_reads::PinnedReadCounts;
use crate::store::queries::{self, SyncStatus};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route pattern (`/p/{slug}`), never the raw path: bounded cardinality.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    sync_lag: Gauge<f64, AtomicU64>,
    outbox_depth: Gauge,
    personas: Gauge,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    /// The metrics, with the kept answers' lookup counters among them.
    pub fn new(answer_lookups: Family<super::answers::LookupLabels, Counter>, pinned_reads: PinnedReadCounts) -> Self {
        let mut registry = Registry::with_prefix("personas");
        registry.register(
            "answer_lookups",
            "Answers looked up in memory: kept (answered from memory) or computed (read from the database)",
            answer_lookups,
        );
        registry.register(
            "pinned_reads",
            "Versions pinned by id and number read from the database, coalesced into pinned_read_queries",
            pinned_reads.pins,
        );
        registry.register(
            "pinned_read_queries",
            "Queries that answered pinned_reads (fewer than the reads when concurrent reads coalesce)",
            pinned_reads.queries,
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request",
            latency.clone(),
        );
        let sync_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "sync_lag_seconds",
            "Commit time of the branch tip minus that of the last projected commit (0: in step)",
            sync_lag.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "vector_outbox_depth",
            "Vector index updates not yet applied",
            outbox_depth.clone(),
        );
        let personas = Gauge::default();
        registry.register("live_personas", "Personas with a current version", personas.clone());
        Metrics {
            registry,
            requests,
            latency,
            sync_lag,
            outbox_depth,
            personas,
        }
    }
}

/// Counts and times every request by its route.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .latency
        .get_or_create(&RouteLabels { route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// How far the projection is behind the branch, in seconds of commit time:
/// known when this process follows a local repository, `None` otherwise.
pub async fn sync_lag(state: &AppState, status: &SyncStatus) -> Option<f64> {
    let (repository, branch) = state.following.clone()?;
    let tip_time = tokio::task::spawn_blocking(move || {
        let repo = open_repository(&repository).ok()?;
        let tip = resolve_commit(&repo, &branch).ok()?;
        let commit = repo.find_commit(tip).ok()?;
        commit.time().ok().map(|time| time.seconds)
    })
    .await
    .ok()??;
    let projected = status.last_commit_at.map_or(0, |time| time.timestamp());
    Some((tip_time - projected).max(0) as f64)
}

pub async fn scrape(State(state): State<AppState>) -> Result<Response, WebError> {
    let status = queries::sync_status(&state.pool).await?;
    let metrics = &state.metrics;
    metrics
        .sync_lag
        .set(sync_lag(&state, &status).await.unwrap_or(f64::NAN));
    metrics.outbox_depth.set(status.outbox_depth);
    metrics.personas.set(status.personas);
    let mut text = String::new();
    encode(&mut text, &metrics.registry).map_err(|error| WebError::unavailable("metrics", &error))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

//! `GET /api/webhooks` and `GET /api/webhooks/deliveries`: how far each
//! webhook's deliveries are, and the delivery log. Read access like every
//! other read (a private registry asks for a token); URLs are shown by
//! scheme and host only, secrets never.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use super::error::{ErrorBody, WebError};
use super::{AppState, Query};
use crate::webhooks::status::{self, DeliveryRecord, WebhookStatus};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/webhooks", get(list))
        .route("/api/webhooks/deliveries", get(deliveries))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, deliveries),
    components(schemas(WebhookList, WebhookStatus, DeliveryList, DeliveryRecord))
)]
pub struct WebhooksDoc;

#[derive(Serialize, utoipa::ToSchema)]
struct WebhookList {
    /// `seq` of the newest change event (`null`: none yet).
    newest_event: Option<i64>,
    webhooks: Vec<WebhookStatus>,
}

/// Each webhook: its kinds of event, cursor, pending count and newest delivery.
#[utoipa::path(get, path = "/api/webhooks",
    responses((status = 200, body = WebhookList), (status = 503, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> Result<Response, WebError> {
    // The newest event first: read before the cursors, it can only make `pending` look smaller.
    let newest_event = status::newest_event(&state.pool).await?;
    let webhooks = status::overview(&state.pool, &state.webhooks).await?;
    Ok(uncached(Json(WebhookList { newest_event, webhooks })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryParams {
    /// Only this webhook's deliveries.
    webhook: Option<String>,
    /// 1 to 500; default 50.
    #[serde(default, deserialize_with = "super::api::strict_query_value")]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DeliveryList {
    /// Newest event first.
    deliveries: Vec<DeliveryRecord>,
}

/// The delivery log: per (webhook, event) its state, attempts, last status and last error.
#[utoipa::path(get, path = "/api/webhooks/deliveries", params(DeliveryParams),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody),
              (status = 404, description = "no webhook of that name", body = ErrorBody)))]
async fn deliveries(State(state): State<AppState>, Query(params): Query<DeliveryParams>) -> Result<Response, WebError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(WebError::bad_request("bad_limit", "limit must be 1 to 500"));
    }
    let webhook = params.webhook.as_deref().filter(|name| !name.is_empty());
    if let Some(name) = webhook
        && !state.webhooks.iter().any(|hook| hook.name == name)
        && !status::is_known(&state.pool, name).await?
    {
        return Err(WebError::not_found(format!("no webhook is called {name:?}")));
    }
    let deliveries = status::deliveries(&state.pool, webhook, limit).await?;
    Ok(uncached(Json(DeliveryList { deliveries })))
}

/// Deliveries change by the second: nothing may keep these answers.
fn uncached(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

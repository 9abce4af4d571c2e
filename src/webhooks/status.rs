//! How far each webhook is, and its delivery log: the reads behind
//! `GET /api/webhooks`, `GET /api/webhooks/deliveries` and `/status`.
//! Nothing here shows a URL beyond its scheme and host, or any secret.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::config::{EVENT_KINDS, WebhookConfig};

/// What a server may show about a webhook it is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub name: String,
    /// Scheme, host and port only.
    pub endpoint: String,
    pub events: Vec<String>,
}

impl From<&WebhookConfig> for Configured {
    fn from(config: &WebhookConfig) -> Configured {
        Configured {
            name: config.name.clone(),
            endpoint: config.endpoint(),
            events: config.events.iter().map(|kind| kind.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    pub name: String,
    /// Whether this server is configured with it. A webhook known only from
    /// the database is delivered by another process (or was removed from
    /// the configuration).
    pub configured: bool,
    /// The receiver's scheme, host and port (the rest of the URL can hold a token).
    pub endpoint: Option<String>,
    /// The kinds delivered (all of them for a webhook configured elsewhere).
    pub events: Vec<String>,
    /// `seq` of the last event delivered or skipped; `null` until the first run.
    pub cursor: Option<i64>,
    /// Events after the cursor waiting to be delivered.
    pub pending: Option<i64>,
    /// The newest event tried: delivered, or failing and waiting for its retry.
    pub last_delivery: Option<DeliveryRecord>,
}

/// One (webhook, event) of the delivery log.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub webhook: String,
    pub event_seq: i64,
    /// The `X-Personas-Delivery` id.
    pub event_id: Uuid,
    pub kind: String,
    /// `delivered` or `failing`.
    pub state: String,
    pub attempts: i32,
    /// The receiver's last HTTP status (`null`: no answer, e.g. refused or timed out).
    pub last_status: Option<i32>,
    /// The last failure, if any attempt failed (kept once a retry succeeds).
    pub last_error: Option<String>,
    /// When a failing delivery is tried again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str = "d.webhook, d.event_seq, e.event_id, e.kind, d.state, d.attempts, d.last_status,
     d.last_error, CASE WHEN d.state = 'failing' THEN d.next_attempt_at END AS next_attempt_at,
     d.delivered_at, d.updated_at
     FROM webhook_deliveries d JOIN change_events e ON e.seq = d.event_seq";

/// Every configured webhook, then any other the database knows of.
pub async fn overview(pool: &PgPool, configured: &[Configured]) -> sqlx::Result<Vec<WebhookStatus>> {
    let cursors: Vec<(String, i64)> = sqlx::query_as("SELECT webhook, last_seq FROM webhook_cursors ORDER BY webhook")
        .fetch_all(pool)
        .await?;
    let mut listed: Vec<(String, bool, Option<String>, Vec<String>)> = configured
        .iter()
        .map(|hook| {
            (
                hook.name.clone(),
                true,
                Some(hook.endpoint.clone()),
                hook.events.clone(),
            )
        })
        .collect();
    for (name, _) in &cursors {
        if !configured.iter().any(|hook| &hook.name == name) {
            let every = EVENT_KINDS.iter().map(|kind| kind.to_string()).collect();
            listed.push((name.clone(), false, None, every));
        }
    }
    let mut statuses = Vec::with_capacity(listed.len());
    for (name, configured, endpoint, events) in listed {
        let cursor = cursors
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, last_seq)| *last_seq);
        let pending = match cursor {
            Some(last_seq) => Some(
                sqlx::query_scalar("SELECT count(*) FROM change_events WHERE seq > $1 AND kind = ANY($2::text[])")
                    .bind(last_seq)
                    .bind(&events)
                    .fetch_one(pool)
                    .await?,
            ),
            None => None,
        };
        let last_delivery = sqlx::query_as::<_, DeliveryRecord>(&format!(
            "SELECT {DELIVERY_COLUMNS} WHERE d.webhook = $1 ORDER BY d.event_seq DESC LIMIT 1"
        ))
        .bind(&name)
        .fetch_optional(pool)
        .await?;
        statuses.push(WebhookStatus {
            name,
            configured,
            endpoint,
            events,
            cursor,
            pending,
            last_delivery,
        });
    }
    Ok(statuses)
}

/// The newest entries of the delivery log (of one webhook, or of all).
pub async fn deliveries(pool: &PgPool, webhook: Option<&str>, limit: i64) -> sqlx::Result<Vec<DeliveryRecord>> {
    sqlx::query_as::<_, DeliveryRecord>(&format!(
        "SELECT {DELIVERY_COLUMNS} WHERE $1::text IS NULL OR d.webhook = $1
         ORDER BY d.event_seq DESC, d.webhook LIMIT $2"
    ))
    .bind(webhook)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether the database knows a webhook of this name (it has run somewhere).
pub async fn is_known(pool: &PgPool, webhook: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_cursors WHERE webhook = $1)")
        .bind(webhook)
        .fetch_one(pool)
        .await
}

/// `seq` of the newest event the projection has announced.
pub async fn newest_event(pool: &PgPool) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT max(seq) FROM change_events")
        .fetch_one(pool)
        .await
}

//! The delivery worker: takes the events the projection committed to
//! `change_events` to each configured webhook, one at a time in `seq` order,
//! at least once, across any number of processes.
//!
//! Per webhook and per attempt, one transaction:
//! 1. lock the webhook's row of `webhook_cursors` (`FOR UPDATE SKIP LOCKED`:
//!    another process holding it is delivering, so this one waits);
//! 2. take the next event after the cursor of a kind the webhook wants
//!    (moving past the kinds it does not);
//! 3. send it; on 2xx move the cursor and mark the delivery `delivered`, on
//!    anything else record the failure and when to try again, and leave the
//!    cursor where it is: later events wait behind it (head of line), which
//!    keeps every persona's changes in commit order.
//!
//! A process that dies mid-attempt leaves its transaction to roll back: the
//! event is sent again (with the same `X-Personas-Delivery` id), which is why
//! delivery is at least once and receivers deduplicate by that id.
//!
//! Events become visible in `seq` order because the projection has one
//! writer (the sync's advisory lock); a cursor can therefore never pass an
//! event that commits later with a smaller `seq`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::client::{Event, Outcome, Sender};
use super::config::{StartAt, WebhookConfig};
use crate::store::projection::CHANNEL;

/// Looked at this often even without a notification: a missed NOTIFY (the
/// listener reconnecting) or another process's lock released by its death.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);
/// The wait after a first failed attempt; it doubles with each further one…
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// …up to this.
pub const LAST_RETRY: Duration = Duration::from_secs(300);
/// The longest wait after a database error (they double from a second).
const DATABASE_RETRY_CAP: Duration = Duration::from_secs(30);

/// How long to wait after the `attempts`-th failed attempt (1-based).
pub fn retry_delay(attempts: i32) -> Duration {
    let doublings = attempts.saturating_sub(1).clamp(0, 16) as u32;
    FIRST_RETRY.saturating_mul(1 << doublings).min(LAST_RETRY)
}

struct Hook {
    config: WebhookConfig,
    sender: Sender,
}

/// Delivers every configured webhook's events until stopped.
pub struct Worker {
    pool: PgPool,
    /// Whether `pool` was made for the worker (and is closed with it).
    owns_pool: bool,
    hooks: Vec<Arc<Hook>>,
    poll: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.hooks.iter().map(|hook| hook.config.name.as_str()).collect();
        formatter.debug_struct("Worker").field("webhooks", &names).finish()
    }
}

impl Worker {
    /// A worker on `pool` (whose connections it shares).
    pub fn new(pool: PgPool, webhooks: &[WebhookConfig]) -> anyhow::Result<Worker> {
        let hooks = webhooks
            .iter()
            .map(|config| {
                Ok(Arc::new(Hook {
                    sender: Sender::new(config)?,
                    config: config.clone(),
                }))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Worker {
            pool,
            owns_pool: false,
            hooks,
            poll: POLL_INTERVAL,
        })
    }

    /// The worker of a long-running command, or `None` without webhooks. It
    /// gets connections of its own: an attempt holds one for as long as the
    /// receiver takes to answer, and slow receivers must not starve the
    /// web server of the connections it serves requests with.
    pub fn for_command(pool: &PgPool, webhooks: Option<&[WebhookConfig]>) -> anyhow::Result<Option<Worker>> {
        let Some(webhooks) = webhooks.filter(|webhooks| !webhooks.is_empty()) else {
            return Ok(None);
        };
        let options = (*pool.connect_options()).clone();
        // One per webhook, one for the listener, one to spare for a reconnect.
        let connections = u32::try_from(webhooks.len()).unwrap_or(u32::MAX).saturating_add(2);
        let own = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let mut worker = Worker::new(own, webhooks)?;
        worker.owns_pool = true;
        Ok(Some(worker))
    }

    /// Looks for events at least this often (tests shorten it).
    pub fn with_poll_interval(mut self, poll: Duration) -> Worker {
        self.poll = poll;
        self
    }

    /// One line for the start-up banner: each webhook and where it goes.
    pub fn describe(&self) -> String {
        let hooks: Vec<String> = self
            .hooks
            .iter()
            .map(|hook| format!("{} → {}", hook.config.name, hook.config.endpoint()))
            .collect();
        hooks.join(", ")
    }

    /// Delivers until `stop` resolves. Never fails: database and receiver
    /// errors are logged and retried, so they cannot take the server down.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let (stopping, stopped) = watch::channel(false);
        let (wake, woken) = watch::channel(0_u64);
        let mut tasks = JoinSet::new();
        for hook in &self.hooks {
            tasks.spawn(deliver_loop(
                self.pool.clone(),
                Arc::clone(hook),
                woken.clone(),
                stopped.clone(),
                self.poll,
            ));
        }
        tasks.spawn(listen(self.pool.clone(), wake, stopped.clone()));
        stop.await;
        stopping.send_replace(true);
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined
                && error.is_panic()
            {
                tracing::error!(%error, "a webhook task panicked");
            }
        }
        if self.owns_pool {
            self.pool.close().await;
        }
    }
}

/// Resolves once `stopped` turns true.
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// Bumps `wake` on every change notification of the projection, reconnecting
/// with a backoff when the connection fails (polling covers the gap).
async fn listen(pool: PgPool, wake: watch::Sender<u64>, mut stopped: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = Instant::now();
        let listened = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            // Whatever happened while not listening is looked at once.
            wake.send_modify(|generation| *generation += 1);
            // `Ok(None)`: the connection dropped.
            while listener.try_recv().await?.is_some() {
                wake.send_modify(|generation| *generation += 1);
            }
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = stopping(&mut stopped) => return,
            result = listened => match result {
                Ok(()) => tracing::warn!("webhooks: lost the change notifications; reconnecting"),
                Err(error) => tracing::warn!(%error, "webhooks: cannot listen for changes; polling meanwhile"),
            },
        }
        // A connection that held for a while earns a quick reconnect.
        if attempt.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        tokio::select! {
            () = stopping(&mut stopped) => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// What one look at a webhook's queue came to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// An event was delivered, or the cursor was just created: look again at once.
    Progress,
    /// The head event failed (again) or is waiting out its backoff.
    RetryIn(Duration),
    /// Nothing to deliver.
    Idle,
    /// Another process holds the webhook's cursor (it is delivering).
    Busy,
}

async fn deliver_loop(
    pool: PgPool,
    hook: Arc<Hook>,
    mut woken: watch::Receiver<u64>,
    mut stopped: watch::Receiver<bool>,
    poll: Duration,
) {
    let name = hook.config.name.as_str();
    let mut database_retry = Duration::from_secs(1);
    loop {
        // Marked seen before looking, so a notification that arrives while
        // looking is not lost: it wakes the wait below at once.
        woken.borrow_and_update();
        let step = tokio::select! {
            // An attempt in flight is abandoned: its transaction rolls back
            // and the event is sent again by whoever runs next.
            () = stopping(&mut stopped) => return,
            step = step(&pool, &hook) => step,
        };
        let wait = match step {
            Ok(Step::Progress) => {
                database_retry = Duration::from_secs(1);
                continue;
            }
            Ok(Step::RetryIn(delay)) => {
                database_retry = Duration::from_secs(1);
                Some(delay)
            }
            Ok(Step::Idle | Step::Busy) => {
                database_retry = Duration::from_secs(1);
                None
            }
            Err(error) => {
                tracing::warn!(webhook = name, %error, "webhook delivery: database error; retrying in {database_retry:?}");
                let delay = database_retry;
                database_retry = (database_retry * 2).min(DATABASE_RETRY_CAP);
                Some(delay)
            }
        };
        match wait {
            Some(delay) => tokio::select! {
                () = stopping(&mut stopped) => return,
                () = tokio::time::sleep(delay) => {}
            },
            None => tokio::select! {
                () = stopping(&mut stopped) => return,
                () = changed(&mut woken) => {}
                () = tokio::time::sleep(poll) => {}
            },
        }
    }
}

/// The next change notification (never, if the listener is gone: the poll covers it).
async fn changed(woken: &mut watch::Receiver<u64>) {
    if woken.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One look at `hook`'s queue, in one transaction.
async fn step(pool: &PgPool, hook: &Hook) -> sqlx::Result<Step> {
    let name = hook.config.name.as_str();
    let mut transaction = pool.begin().await?;
    let cursor: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM webhook_cursors WHERE webhook = $1 FOR UPDATE SKIP LOCKED")
            .bind(name)
            .fetch_optional(&mut *transaction)
            .await?;
    let Some(last_seq) = cursor else {
        // Locked by another process, or the first run under this name.
        // `DO NOTHING` does not wait for the other process's row lock.
        let created = sqlx::query(
            "INSERT INTO webhook_cursors (webhook, last_seq)
             SELECT $1, CASE WHEN $2 THEN 0 ELSE coalesce(max(seq), 0) END FROM change_events
             ON CONFLICT (webhook) DO NOTHING",
        )
        .bind(name)
        .bind(hook.config.from == StartAt::First)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        if created == 1 {
            tracing::info!(webhook = name, "webhook: first run under this name; cursor created");
            return Ok(Step::Progress);
        }
        return Ok(Step::Busy);
    };
    // The newest event and the next wanted one in one statement, so one
    // snapshot: skipping to `newest` cannot jump over a wanted event that
    // committed in between.
    let row = sqlx::query(
        "SELECT newest.seq AS newest, next.seq, next.event_id, next.kind, next.payload::text AS body
         FROM (SELECT max(seq) AS seq FROM change_events) newest
         LEFT JOIN LATERAL (
             SELECT seq, event_id, kind, payload FROM change_events
             WHERE seq > $1 AND kind = ANY($2::text[]) ORDER BY seq LIMIT 1
         ) next ON true",
    )
    .bind(last_seq)
    .bind(&hook.config.events)
    .fetch_one(&mut *transaction)
    .await?;
    let newest: Option<i64> = row.try_get("newest")?;
    let Some(seq) = row.try_get::<Option<i64>, _>("seq")? else {
        // Only kinds this webhook does not take: move past them, so the
        // cursor (and the pending count) say how far it has looked.
        if let Some(newest) = newest.filter(|newest| *newest > last_seq) {
            sqlx::query("UPDATE webhook_cursors SET last_seq = $2 WHERE webhook = $1")
                .bind(name)
                .bind(newest)
                .execute(&mut *transaction)
                .await?;
        }
        transaction.commit().await?;
        return Ok(Step::Idle);
    };
    let event = Event {
        seq,
        id: row.try_get::<Uuid, _>("event_id")?,
        kind: row.try_get("kind")?,
        body: row.try_get::<String, _>("body")?.into_bytes(),
    };
    // An earlier failure of this event sets when it may be tried again
    // (by the database's clock, which every process shares).
    let earlier = sqlx::query(
        "SELECT attempts, extract(epoch FROM next_attempt_at - clock_timestamp())::float8 AS wait
         FROM webhook_deliveries WHERE webhook = $1 AND event_seq = $2 AND state = 'failing'",
    )
    .bind(name)
    .bind(seq)
    .fetch_optional(&mut *transaction)
    .await?;
    let mut attempts = 0;
    if let Some(earlier) = earlier {
        attempts = earlier.try_get::<i32, _>("attempts")?;
        let wait: f64 = earlier.try_get("wait")?;
        if wait > 0.0 {
            transaction.rollback().await?;
            return Ok(Step::RetryIn(Duration::from_secs_f64(
                wait.min(LAST_RETRY.as_secs_f64()),
            )));
        }
    }
    let outcome = hook.sender.send(&event).await;
    let step = match &outcome {
        Outcome::Delivered { status } => {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook, event_seq, attempts, state, last_status, delivered_at, updated_at)
                 VALUES ($1, $2, 1, 'delivered', $3, clock_timestamp(), clock_timestamp())
                 ON CONFLICT (webhook, event_seq) DO UPDATE SET
                     attempts = webhook_deliveries.attempts + 1, state = 'delivered',
                     last_status = excluded.last_status, delivered_at = excluded.delivered_at,
                     updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(seq)
            .bind(i32::from(*status))
            .execute(&mut *transaction)
            .await?;
            sqlx::query("UPDATE webhook_cursors SET last_seq = $2 WHERE webhook = $1")
                .bind(name)
                .bind(seq)
                .execute(&mut *transaction)
                .await?;
            Step::Progress
        }
        Outcome::Failed { status, error } => {
            let delay = retry_delay(attempts + 1);
            sqlx::query(
                "INSERT INTO webhook_deliveries
                     (webhook, event_seq, attempts, state, last_status, last_error, next_attempt_at, updated_at)
                 VALUES ($1, $2, 1, 'failing', $3, $4, clock_timestamp() + make_interval(secs => $5), clock_timestamp())
                 ON CONFLICT (webhook, event_seq) DO UPDATE SET
                     attempts = webhook_deliveries.attempts + 1, state = 'failing',
                     last_status = excluded.last_status, last_error = excluded.last_error,
                     next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(seq)
            .bind(status.map(i32::from))
            .bind(error)
            .bind(delay.as_secs_f64())
            .execute(&mut *transaction)
            .await?;
            Step::RetryIn(delay)
        }
    };
    transaction.commit().await?;
    match outcome {
        Outcome::Delivered { .. } if attempts > 0 => tracing::info!(
            webhook = name,
            seq,
            attempts = attempts + 1,
            "webhook: delivered after earlier failures"
        ),
        Outcome::Delivered { .. } => tracing::debug!(webhook = name, seq, kind = %event.kind, "webhook: delivered"),
        Outcome::Failed { error, .. } => tracing::warn!(
            webhook = name,
            seq,
            attempts = attempts + 1,
            %error,
            "webhook delivery failed; retrying in {:?}",
            retry_delay(attempts + 1)
        ),
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|attempt| retry_delay(attempt).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(0), FIRST_RETRY);
        assert_eq!(retry_delay(i32::MAX), LAST_RETRY);
    }
}

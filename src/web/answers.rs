//! Answers computed from the projection, kept in memory until the projection
//! changes. The sync and the vector worker `NOTIFY` on `CHANNEL` in the
//! transaction that changes anything; every server `LISTEN`s and drops its
//! answers on each notification. While the server is not listening (the
//! database away, a reconnect) nothing is served from memory, so a replica
//! can never show an answer older than the database.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::cache::Freshness;
use crate::store::projection::CHANNEL;

/// More bytes than this between two changes and the cache starts over: a
/// bound on memory (pages are ~15 KiB, API answers ~1.5 KiB) that costs
/// nothing in the common case.
const MAX_BYTES: usize = 64 * 1024 * 1024;

/// One answer as it is sent, before compression.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Bytes,
    pub content_type: &'static str,
    pub validator: String,
    pub freshness: Freshness,
}

impl Answer {
    /// The answer (or a 304) with its ETag and cache policy.
    pub fn respond(&self, request_headers: &axum::http::HeaderMap) -> axum::response::Response {
        super::cache::cached(
            request_headers,
            &self.validator,
            self.freshness,
            (
                [(axum::http::header::CONTENT_TYPE, self.content_type)],
                self.body.clone(),
            ),
        )
    }
}

#[derive(Debug, Default)]
struct Entries {
    answers: HashMap<String, Answer>,
    bytes: usize,
}

#[derive(Debug, Default)]
pub struct Answers {
    entries: Mutex<Entries>,
    /// Whether notifications are being received (only then is memory trusted).
    listening: AtomicBool,
}

impl Answers {
    pub fn get(&self, key: &str) -> Option<Answer> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.lock().answers.get(key).cloned()
    }

    pub fn put(&self, key: String, answer: Answer) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.lock();
        let size = key.len() + answer.body.len() + answer.validator.len();
        if entries.bytes + size > MAX_BYTES {
            *entries = Entries::default();
        }
        entries.bytes += size;
        if let Some(replaced) = entries.answers.insert(key, answer) {
            entries.bytes -= replaced.body.len() + replaced.validator.len();
        }
    }

    /// Whether change notifications are being received (answers are kept only then).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub fn clear(&self) {
        *self.lock() = Entries::default();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_listening(&self, listening: bool) {
        // Whatever was cached may have missed a notification: start empty.
        self.clear();
        self.listening.store(listening, Ordering::Release);
    }

    /// Listens for changes until `stop`, dropping the answers on each one and
    /// reconnecting (with the cache off meanwhile) when the connection fails.
    pub async fn follow_changes(&self, pool: &PgPool, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(200);
        loop {
            let attempt = std::time::Instant::now();
            let listened = async {
                let mut listener = PgListener::connect_with(pool).await?;
                listener.listen(CHANNEL).await?;
                self.set_listening(true);
                // `Ok(None)`: the connection dropped; notifications may have been missed.
                while listener.try_recv().await?.is_some() {
                    self.clear();
                }
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = &mut stop => {
                    self.set_listening(false);
                    return;
                }
                result = listened => {
                    self.set_listening(false);
                    match result {
                        Ok(()) => tracing::warn!("lost the change notifications; reconnecting"),
                        Err(error) => tracing::warn!(%error, "cannot listen for changes; answers are not cached meanwhile"),
                    }
                }
            }
            // A connection that held for a while earns a quick reconnect.
            if attempt.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(200);
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

//! Answers computed from the projection, kept in memory until the projection
//! changes. The sync and the vector worker `NOTIFY` on `CHANNEL` in the
//! transaction that changes anything; every server `LISTEN`s and drops its
//! answers on each notification. While the server is not listening (the
//! database away, a reconnect) nothing is served from memory, so a replica
//! can never show an answer older than the database.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::cache::Freshness;
use crate::store::projection::CHANNEL;

/// More bytes than this between two changes and the kept answers start
/// over: a bound on memory (pages are ~15 KiB, API answers ~1.5 KiB) that
/// costs nothing in the common case. `serve --kept-answers-mib` sets another.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

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
    /// Bumped by every change notification and every listening change. An
    /// answer computed from reads that began in an older generation may
    /// predate the change, so it is not kept.
    generation: u64,
    /// Whether notifications are being received (only then is memory trusted).
    listening: bool,
}

#[derive(Debug)]
pub struct Answers {
    entries: Mutex<Entries>,
    /// Woken by every change notification, for requests that wait for one.
    changed: tokio::sync::Notify,
    /// Keys and bodies held at most; 0 keeps nothing (every request reads the database).
    max_bytes: usize,
    /// Lookups answered from memory and not, for `/metrics` (and the
    /// benchmark, which must know which path it measured).
    lookups: Family<LookupLabels, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    outcome: &'static str,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers::with_limit(DEFAULT_MAX_BYTES)
    }
}

/// Where an answer's reads began: take it before the first query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl Answers {
    pub fn with_limit(max_bytes: usize) -> Answers {
        Answers {
            entries: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            max_bytes,
            lookups: Family::default(),
        }
    }

    /// The same answers with another bound (the counters stay registered).
    pub fn limited_to(self, max_bytes: usize) -> Answers {
        Answers { max_bytes, ..self }
    }

    /// The lookup counters, to register with the metrics.
    pub fn lookups(&self) -> Family<LookupLabels, Counter> {
        self.lookups.clone()
    }

    pub fn get(&self, key: &str) -> Option<Answer> {
        let found = {
            let entries = self.lock();
            entries.listening.then(|| entries.answers.get(key).cloned()).flatten()
        };
        let outcome = if found.is_some() { "kept" } else { "computed" };
        self.lookups.get_or_create(&LookupLabels { outcome }).inc();
        found
    }

    /// The generation to pass to [`Answers::put`] for reads starting now.
    pub fn generation(&self) -> Generation {
        Generation(self.lock().generation)
    }

    /// Keeps `answer` unless a change (or a lapse in listening) happened
    /// since `read_from`.
    pub fn put(&self, key: String, answer: Answer, read_from: Generation) {
        let mut entries = self.lock();
        if !entries.listening || entries.generation != read_from.0 {
            return;
        }
        let size = key.len() + answer.body.len() + answer.validator.len();
        if size > self.max_bytes {
            return;
        }
        if entries.bytes + size > self.max_bytes {
            entries.answers.clear();
            entries.bytes = 0;
        }
        entries.bytes += size;
        if let Some(replaced) = entries.answers.insert(key.clone(), answer) {
            entries.bytes -= key.len() + replaced.body.len() + replaced.validator.len();
        }
    }

    /// Whether change notifications are being received (answers are kept only then).
    pub fn is_listening(&self) -> bool {
        self.lock().listening
    }

    /// Drops every answer: the projection changed.
    pub fn clear(&self) {
        let mut entries = self.lock();
        entries.answers.clear();
        entries.bytes = 0;
        entries.generation += 1;
        drop(entries);
        self.changed.notify_waiters();
    }

    /// Resolves at the next change of the projection this server hears of
    /// (never, while it is not listening: wait with a timeout).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_listening(&self, listening: bool) {
        // Whatever was cached may have missed a notification: start empty.
        self.clear();
        self.lock().listening = listening;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> Answer {
        Answer {
            body: Bytes::from_static(body.as_bytes()),
            content_type: "text/plain",
            validator: body.to_string(),
            freshness: Freshness::Revalidate,
        }
    }

    #[test]
    fn nothing_is_kept_while_not_listening() {
        let answers = Answers::default();
        answers.put("k".into(), answer("old"), answers.generation());
        assert!(answers.get("k").is_none());
        answers.set_listening(true);
        answers.put("k".into(), answer("new"), answers.generation());
        assert_eq!(answers.get("k").unwrap().validator, "new");
        answers.set_listening(false);
        assert!(answers.get("k").is_none(), "a lapse in listening forgets everything");
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_kept() {
        let answers = Answers::default();
        answers.set_listening(true);
        let read_from = answers.generation();
        // The change's notification arrives while the handler is still reading.
        answers.clear();
        answers.put("k".into(), answer("stale"), read_from);
        assert!(answers.get("k").is_none());
        answers.put("k".into(), answer("fresh"), answers.generation());
        assert_eq!(answers.get("k").unwrap().validator, "fresh");
    }

    #[test]
    fn replacing_an_answer_keeps_the_byte_count_exact() {
        let answers = Answers::default();
        answers.set_listening(true);
        for _ in 0..3 {
            answers.put("key".into(), answer("body"), answers.generation());
        }
        assert_eq!(answers.lock().bytes, "key".len() + 2 * "body".len());
    }
}

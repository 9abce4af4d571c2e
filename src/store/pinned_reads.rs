//! Pinned reads by id (`{id}@3`, the A/B tester's hot path), coalesced:
//! the pins asked for while the workers' queries are out go together into
//! the next query. Under load one round trip then answers many requests, so
//! the database's per-statement work and the wake-ups on both ends of the
//! socket, most of what such a read costs, are shared; a lone request still
//! gets its own query at once.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::queries::{self, PersonaRef, VersionRecord};

/// Queries out at once: enough to keep a batch forming while others run,
/// and well inside the pool, which other reads share.
const WORKERS: usize = 4;
/// Pins in one query; a longer queue waits for the next.
const MAX_PINS: usize = 64;

/// A persona id and one of its version numbers.
type PinById = (Uuid, i32);
/// What a pinned read by id found.
pub enum PinnedRead {
    Found(Box<(PersonaRef, VersionRecord)>),
    /// No persona has that id, or it has no such version.
    Missing,
    /// The shared query failed (or the reads are closed): the asker reads on
    /// its own, so that the error it reports is its own.
    Failed,
}
type Queue = mpsc::UnboundedSender<(PinById, oneshot::Sender<PinnedRead>)>;
type Waiting = Arc<Mutex<mpsc::UnboundedReceiver<(PinById, oneshot::Sender<PinnedRead>)>>>;

pub struct PinnedReads {
    pool: PgPool,
    // Started on the first read, which runs on the runtime the workers need.
    queue: OnceLock<Queue>,
    counts: PinnedReadCounts,
}

/// How well reads coalesce: pins asked for, and queries that answered them.
#[derive(Clone, Default)]
pub struct PinnedReadCounts {
    pub pins: Counter,
    pub queries: Counter,
}

impl PinnedReads {
    pub fn new(pool: PgPool) -> PinnedReads {
        PinnedReads {
            pool,
            queue: OnceLock::new(),
            counts: PinnedReadCounts::default(),
        }
    }

    /// The counters, to register with the metrics.
    pub fn counts(&self) -> PinnedReadCounts {
        self.counts.clone()
    }

    /// Version `number` of the persona whose id is `id`.
    pub async fn read(&self, id: Uuid, number: i32) -> PinnedRead {
        // Once the owner closed its pool, reads go its way and fail as it says.
        if self.pool.is_closed() {
            return PinnedRead::Failed;
        }
        let (reply, answer) = oneshot::channel();
        if self.queue().send(((id, number), reply)).is_err() {
            return PinnedRead::Failed;
        }
        answer.await.unwrap_or(PinnedRead::Failed)
    }

    fn queue(&self) -> &Queue {
        self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            let waiting: Waiting = Arc::new(Mutex::new(waiting));
            let pool = own_connections(&self.pool);
            for _ in 0..WORKERS {
                tokio::spawn(answer_pins(pool.clone(), Arc::clone(&waiting), self.counts.clone()));
            }
            queue
        })
    }
}

/// The workers' own connections to `pool`'s database, set for this one
/// statement: it is planned once, and the pool does not check a connection
/// before each query (a broken one fails one batch, whose askers then read
/// through the shared pool, which does; the failed connection is dropped).
fn own_connections(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(WORKERS as u32)
        .test_before_acquire(false)
        // A database that does not answer soon sends the askers to the
        // shared pool, whose own wait and error they then report.
        .acquire_timeout(Duration::from_secs(1))
        .after_connect(|connection, _| {
            Box::pin(async move {
                // Its best plan does not depend on the pins, but PostgreSQL
                // keeps planning it afresh for each new count of them
                // (custom plans look cheaper), and planning was the largest
                // part of what the database spent on a read.
                connection.execute("SET plan_cache_mode = force_generic_plan").await?;
                Ok(())
            })
        })
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// One worker: takes every pin waiting (up to [`MAX_PINS`]), reads them in
/// one query and answers each asker, until the reads' owner is dropped.
async fn answer_pins(pool: PgPool, waiting: Waiting, counts: PinnedReadCounts) {
    loop {
        let mut askers: HashMap<PinById, Vec<oneshot::Sender<PinnedRead>>> = HashMap::new();
        {
            let mut waiting = waiting.lock().await;
            let Some((pin, reply)) = waiting.recv().await else {
                return;
            };
            askers.entry(pin).or_default().push(reply);
            while askers.len() < MAX_PINS
                && let Ok((pin, reply)) = waiting.try_recv()
            {
                askers.entry(pin).or_default().push(reply);
            }
        }
        let pins: Vec<PinById> = askers.keys().copied().collect();
        counts
            .pins
            .inc_by(askers.values().map(|replies| replies.len() as u64).sum());
        counts.queries.inc();
        match queries::numbered_versions_by_id(&pool, &pins).await {
            Ok(found) => {
                for (persona, version) in found {
                    if let Some(replies) = askers.remove(&(persona.id, version.version)) {
                        for reply in replies {
                            // An asker that gave up (a timed-out request) no longer listens.
                            let _ = reply.send(PinnedRead::Found(Box::new((persona.clone(), version.clone()))));
                        }
                    }
                }
                for reply in askers.into_values().flatten() {
                    let _ = reply.send(PinnedRead::Missing);
                }
            }
            Err(error) => {
                tracing::debug!(%error, pins = pins.len(), "a coalesced pinned read failed; each asker reads on its own");
                for reply in askers.into_values().flatten() {
                    let _ = reply.send(PinnedRead::Failed);
                }
            }
        }
    }
}

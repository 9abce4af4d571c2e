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
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use super::queries::{self, PinnedVersion};

/// Queries out at once: one forms its batch while the other runs. Measured
/// on a replica under the load of `bench http`'s `api database` line (wrk,
/// a random pin by id per request, 10,000 personas), alternating runs: 2
/// workers served more requests than 4 with less CPU per request (larger
/// batches, fewer round trips): 16.5k and 17.9k req/s against 16.3k and 14.9k.
const WORKERS: usize = 2;
/// Pins in one query; a longer queue waits for the next.
const MAX_PINS: usize = 64;
/// How long a worker waits to connect before its askers read elsewhere.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A persona id and one of its version numbers.
type PinById = (Uuid, i32);
/// What a pinned read by id found.
pub enum PinnedRead {
    Found(Box<PinnedVersion>),
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
            let options = (*self.pool.connect_options()).clone();
            for _ in 0..WORKERS {
                tokio::spawn(answer_pins(options.clone(), Arc::clone(&waiting), self.counts.clone()));
            }
            queue
        })
    }
}

/// Connects a worker to the database, set for its one statement: it is
/// planned once. A database that does not answer soon sends the askers to
/// the shared pool, whose own wait and error they then report.
async fn connect(options: &PgConnectOptions) -> sqlx::Result<PgConnection> {
    let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    // Its best plan does not depend on the pins, but PostgreSQL keeps
    // planning it afresh for each new count of them (custom plans look
    // cheaper), and planning was the largest part of what the database spent
    // on a read.
    connection.execute("SET plan_cache_mode = force_generic_plan").await?;
    Ok(connection)
}

/// One worker: takes every pin waiting (up to [`MAX_PINS`]), reads them in
/// one query and answers each asker, until the reads' owner is dropped.
///
/// The worker keeps one connection of its own rather than taking one from a
/// pool for each query: a pool makes a round trip to the database each time
/// a connection comes back to it (sqlx checks it is still usable), which
/// doubled the round trips of a read. A query that fails drops the
/// connection (its askers read through the shared pool, which reports the
/// error); the next batch connects afresh.
async fn answer_pins(options: PgConnectOptions, waiting: Waiting, counts: PinnedReadCounts) {
    let mut connection: Option<PgConnection> = None;
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
        let found = match connection.as_mut() {
            Some(connection) => queries::numbered_versions_by_id(connection, &pins).await,
            None => match connect(&options).await {
                Ok(fresh) => queries::numbered_versions_by_id(connection.insert(fresh), &pins).await,
                Err(error) => Err(error),
            },
        };
        if found.is_err() {
            connection = None;
        }
        match found {
            Ok(found) => {
                for pinned in found {
                    if let Some(mut replies) = askers.remove(&(pinned.persona.id, pinned.version.version)) {
                        // The last asker (usually the only one) takes the row itself.
                        let last = replies.pop();
                        for reply in replies {
                            // An asker that gave up (a timed-out request) no longer listens.
                            let _ = reply.send(PinnedRead::Found(Box::new(pinned.clone())));
                        }
                        if let Some(reply) = last {
                            let _ = reply.send(PinnedRead::Found(Box::new(pinned)));
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

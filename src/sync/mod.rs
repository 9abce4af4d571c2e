//! The sync: git history → PostgreSQL, whole commits per transaction.
//!
//! The cursor (`sync_state`) names the last commit fully projected, and it is
//! written in the same transaction as that commit's versions (and those of the
//! commits before it in the same run), so a crash at any instant resumes
//! exactly where the database says: nothing is lost and, since re-projecting a
//! commit is a no-op, nothing is duplicated.

pub mod follow;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gix::ObjectId;
use sqlx::{Connection, PgConnection, PgPool};

use crate::git::history::{CommitRecord, HistoryWalk, KnownVersion, ResumePoint, WalkOptions, first_parent_chain};
use crate::git::{GitError, commit_tags, open_repository, readings, resolve_commit};
use crate::persona::{ContentHash, Persona, PersonaId};
use crate::store::projection::{
    CommitStats, WrittenSoFar, cursor, project_commits, refresh_search, remove_rows_of_unwritten_versions,
    replace_tags, retract_commits, retract_unreachable_commits, set_cursor, store_missing_document_texts,
};

/// Bounds on the commits one transaction projects while catching up: large
/// enough that per-statement overhead vanishes, small enough that a crash
/// loses little work and memory stays flat.
const MAX_RUN_COMMITS: usize = 500;
const MAX_RUN_CHANGES: usize = 2_000;
/// Tries before a sync gives up on an unreachable database: with the backoff
/// of [`sync_with_retry`] about 20 s, enough for a restart or failover.
pub const RETRY_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub repository: PathBuf,
    pub branch: String,
    /// Wait for another sync holding the lock instead of failing at once.
    pub wait_for_lock: bool,
    /// Advanced by one per projected commit; hidden unless a terminal shows it.
    pub progress: indicatif::ProgressBar,
    /// Where the last sync in this process left the walk, shared by clones of these options.
    pub resume: ResumeCache,
    /// Read the registry at the cursor into `resume` even when there is
    /// nothing to project, so that the next commit does not wait for it: for
    /// a process that follows the branch.
    pub keep_walk_primed: bool,
    /// Where a walk's file readings are saved for the next process that
    /// primes a walk here (see [`crate::git::readings`]): for one-off
    /// commands, whose every run would otherwise validate the whole registry.
    pub readings_file: Option<PathBuf>,
}

/// The walk state at the projection's cursor, as the last successful sync
/// in this process left it. A process that follows a branch syncs once per
/// commit; without this, each sync would first read and validate every file
/// of the registry at the cursor (about a second at 10,000 personas).
/// It is used only when the stored cursor is that very commit, so a sync by
/// another process, or rewritten history, simply misses it.
#[derive(Clone, Default)]
pub struct ResumeCache(std::sync::Arc<std::sync::Mutex<Option<ResumePoint>>>);

impl ResumeCache {
    /// The kept state, if it is the state at `cursor` (taken: a sync that
    /// fails half-way must not leave a state that no longer matches).
    fn take_at(&self, cursor: ObjectId) -> Option<ResumePoint> {
        let mut kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.take().filter(|point| point.commit == cursor)
    }

    /// Whether no walk state is kept at all.
    pub fn is_empty(&self) -> bool {
        let kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.is_none()
    }

    fn holds(&self, cursor: ObjectId) -> bool {
        let kept = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.as_ref().is_some_and(|point| point.commit == cursor)
    }

    fn keep(&self, point: ResumePoint) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(point);
    }
}

impl std::fmt::Debug for ResumeCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self
            .0
            .lock()
            .ok()
            .and_then(|kept| kept.as_ref().map(|point| point.commit));
        formatter.debug_tuple("ResumeCache").field(&kept).finish()
    }
}

impl SyncOptions {
    pub fn new(repository: impl Into<PathBuf>, branch: impl Into<String>) -> Self {
        SyncOptions {
            repository: repository.into(),
            branch: branch.into(),
            wait_for_lock: false,
            progress: indicatif::ProgressBar::hidden(),
            resume: ResumeCache::default(),
            keep_walk_primed: false,
            readings_file: None,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncSummary {
    pub commits: u64,
    pub versions: u64,
    pub errors: u64,
    pub retracted: u64,
    pub elapsed: Duration,
}

impl std::fmt::Display for SyncSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} commits, {} new versions, {} validation errors, {} retracted, in {:.2?}",
            self.commits, self.versions, self.errors, self.retracted, self.elapsed
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("database error during sync: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "another sync of branch {branch:?} holds the lock (only one writer may project a registry); \
         wait for it or pass --wait"
    )]
    Locked { branch: String },
    #[error("the history reader stopped unexpectedly: {0}")]
    Reader(String),
}

impl SyncError {
    /// Errors worth retrying: the database went away or refused connections for a while.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Database(error) => match error {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                sqlx::Error::Database(database) => database
                    .code()
                    .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Advisory-lock key for one branch's writer; stable across processes and versions.
pub fn lock_key(branch: &str) -> i64 {
    // FNV-1a: tiny, dependency-free and fixed forever (unlike std's hasher).
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in b"personas-sync:".iter().chain(branch.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash as i64
}

/// Retries [`sync_once`] with exponential backoff while the database is
/// unreachable, up to `attempts` tries.
pub async fn sync_with_retry(pool: &PgPool, options: &SyncOptions, attempts: u32) -> Result<SyncSummary, SyncError> {
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match sync_once(pool, options).await {
            Err(error) if error.is_transient() && attempt < attempts => {
                tracing::warn!(%error, attempt, "sync failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// Projects every commit after the cursor up to the branch tip.
pub async fn sync_once(pool: &PgPool, options: &SyncOptions) -> Result<SyncSummary, SyncError> {
    let started = Instant::now();
    // One connection, outside the pool, holds the lock and does every write.
    // Closing it releases the lock whatever happens below; and since the
    // server releases a dead client's lock only after finishing that same
    // session's last statement, a killed writer's in-flight COMMIT always
    // lands before the next writer can read the cursor. (On a separate lock
    // connection the lock could be freed first, and the next writer would
    // project the same commits again.)
    let mut lock = pool.acquire().await?.detach();
    let key = lock_key(&options.branch);
    if options.wait_for_lock {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut lock)
            .await?;
    } else {
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut lock)
            .await?;
        if !acquired {
            return Err(SyncError::Locked {
                branch: options.branch.clone(),
            });
        }
    }
    let result = sync_locked(&mut lock, pool, options).await;
    // Closing the connection releases the lock even if unlocking fails.
    let _ = lock.close().await;
    result.map(|mut summary| {
        summary.elapsed = started.elapsed();
        summary
    })
}

async fn sync_locked(
    connection: &mut PgConnection,
    pool: &PgPool,
    options: &SyncOptions,
) -> Result<SyncSummary, SyncError> {
    let mut summary = SyncSummary::default();
    let removed = remove_rows_of_unwritten_versions(&mut *connection).await?;
    if removed > 0 {
        tracing::warn!(
            rows = removed,
            "removed the normalized rows of versions an interrupted sync did not commit"
        );
    }
    let stored = store_missing_document_texts(&mut *connection).await?;
    if stored > 0 {
        tracing::info!(
            versions = stored,
            "stored the answer text of versions projected before it was kept"
        );
    }
    let stored_cursor = cursor(&mut *connection, &options.branch).await?;

    let repository_path = options.repository.clone();
    let branch = options.branch.clone();
    let planning = Instant::now();
    let plan = tokio::task::spawn_blocking(move || plan_walk(&repository_path, &branch, stored_cursor))
        .await
        .map_err(|error| SyncError::Reader(error.to_string()))??;
    tracing::debug!(elapsed = ?planning.elapsed(), pending = plan.pending, "sync planned");

    if !plan.unreachable.is_empty() || plan.cursor_reset {
        let mut transaction = connection.begin().await?;
        let projected: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT commit_sha FROM persona_versions WHERE NOT retracted")
                .fetch_all(&mut *transaction)
                .await?;
        let gone: Vec<String> = projected
            .into_iter()
            .filter(|commit| !plan.reachable.contains(commit))
            .collect();
        summary.retracted = retract_commits(&mut transaction, &gone).await?;
        let reachable: Vec<String> = plan.reachable.iter().cloned().collect();
        retract_unreachable_commits(&mut transaction, &reachable).await?;
        match &plan.after {
            Some(base) => set_cursor(&mut transaction, &options.branch, &base.to_string()).await?,
            None => {
                sqlx::query("DELETE FROM sync_state WHERE branch = $1")
                    .bind(&options.branch)
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        transaction.commit().await?;
        tracing::info!(
            retracted = summary.retracted,
            "history was rewritten; retracted unreachable versions"
        );
    }
    let mut transaction = connection.begin().await?;
    replace_tags(&mut transaction, &plan.tags).await?;
    transaction.commit().await?;
    let unprimed = plan.after.is_some_and(|after| !options.resume.holds(after));
    // A one-off process with no readings saved by this program makes them
    // now, so that the next one, after a commit, need not validate every file.
    let readings_missing =
        !options.keep_walk_primed && options.readings_file.as_deref().is_some_and(|file| !file.exists());
    if plan.up_to_date && !(options.keep_walk_primed && unprimed) && !readings_missing {
        // A sync that crashed before its last step left the index behind.
        refresh_search(&mut *connection, None).await?;
        return Ok(summary);
    }
    // Up to date but unprimed (or without saved readings), the walk below
    // has no commit to project: it primes itself at the cursor and its state
    // is kept (or its readings saved).

    // Git is read on a blocking thread while this task writes: the two overlap.
    // gix's repository handle stays on that thread, so resuming is a short
    // exchange with it: it reports the versions it primed from the tree at the
    // cursor, and is told where the projection recorded otherwise.
    let (primed_sender, primed_receiver) = tokio::sync::oneshot::channel::<HashMap<PersonaId, ContentHash>>();
    let (restore_sender, restore_receiver) = tokio::sync::oneshot::channel::<(Vec<KnownVersion>, Vec<PersonaId>)>();
    // Room for a whole run, so the reader prepares the next run while the database writes this one.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<CommitRecord, GitError>>(MAX_RUN_COMMITS);
    let repository_path = options.repository.clone();
    let walk_options = WalkOptions {
        tip: plan.tip.to_string(),
        after: plan.after.map(|id| id.to_string()),
    };
    let resuming = plan.after.is_some();
    // The state this process left at the cursor, if it did; otherwise the
    // walk primes itself from the tree there.
    let kept = match plan.after {
        Some(after) if !plan.cursor_reset => options.resume.take_at(after),
        _ => None,
    };
    let priming = resuming && kept.is_none();
    // A follower keeps its state in memory; a one-off process leaves the
    // readings on disk for the next.
    let readings_file = options.readings_file.clone();
    let save_readings = readings_file.clone().filter(|_| !options.keep_walk_primed);
    let reader = tokio::task::spawn_blocking(move || {
        let opened = open_repository(&repository_path).and_then(|repo| match kept {
            Some(point) => HistoryWalk::resume(repo, &walk_options.tip, point),
            None => {
                let known = readings_file.as_deref().filter(|_| priming).and_then(readings::load);
                HistoryWalk::new_with_known(repo, &walk_options, known)
            }
        });
        let mut walk = match opened {
            Ok(walk) => walk,
            Err(error) => {
                let _ = sender.blocking_send(Err(error));
                return None;
            }
        };
        if priming {
            if primed_sender.send(walk.current_hashes()).is_err() {
                return None;
            }
            let Ok((known, gone)) = restore_receiver.blocking_recv() else {
                return None;
            };
            walk.restore_current(known, &gone);
        }
        for record in walk.by_ref() {
            if sender.blocking_send(record).is_err() {
                return None; // The writer stopped; it reports why.
            }
        }
        let finished = walk.finish();
        if let (Some(path), Some(point)) = (&save_readings, &finished)
            && let Err(error) = readings::save(path, point)
        {
            // Only the next run's speed depends on it.
            tracing::warn!(path = %path.display(), %error, "could not save the file readings");
        }
        finished
    });
    if priming {
        let started = Instant::now();
        // If the reader failed to open the walk, its error waits in `receiver`.
        if let Ok(primed) = primed_receiver.await {
            let differences = recorded_differences(&mut *connection, &primed).await?;
            tracing::debug!(elapsed = ?started.elapsed(), personas = primed.len(), "walk primed at the cursor");
            let _ = restore_sender.send(differences);
        }
    }
    options.progress.set_length(plan.pending);
    // A catch-up writes its normalized rows on a second connection, beside
    // the rest (see `project_commits`), and tokenizes half of its personas
    // there at the end; following one commit needs none.
    let mut rows_connection = if plan.pending >= ROWS_BESIDE_FROM_COMMITS {
        Some(PgConnection::connect_with(&pool.connect_options()).await?)
    } else {
        None
    };
    let mut written_so_far = WrittenSoFar::default();
    while let Some(first) = receiver.recv().await {
        // Whatever the reader has ready goes into one transaction: while
        // catching up that is a large run, when following a branch one commit.
        let mut run = Vec::new();
        let mut changes = 0;
        let mut failure = None;
        let mut next = Some(first);
        while let Some(record) = next.take() {
            match record {
                Ok(record) => {
                    changes += record.changes.len();
                    run.push(record);
                    if run.len() < MAX_RUN_COMMITS && changes < MAX_RUN_CHANGES {
                        next = receiver.try_recv().ok();
                    }
                }
                Err(error) => failure = Some(error),
            }
        }
        if !run.is_empty() {
            let stats = project_run(
                &mut *connection,
                rows_connection.as_mut(),
                &mut written_so_far,
                &options.branch,
                &run,
            )
            .await?;
            summary.commits += run.len() as u64;
            summary.versions += stats.versions;
            summary.errors += stats.errors;
            options.progress.inc(run.len() as u64);
        }
        if let Some(error) = failure {
            return Err(error.into());
        }
    }
    drop(receiver);
    let finished = reader.await.map_err(|error| SyncError::Reader(error.to_string()))?;
    // A catch-up's walk state grew among the burst's short-lived garbage, and
    // its small allocations keep the pages that garbage left mostly free from
    // going back to the system: a server that had caught up on 2,000 personas'
    // history held 14.4 MiB more anonymous memory than one restarted on the
    // same database, and 1.4 MiB more once it dropped the state. A process
    // that keeps the state drops it here and primes it afresh from the tree
    // at the cursor (`follow` does, right away), in a heap the trim below
    // has emptied.
    let finished = finished.filter(|_| !options.keep_walk_primed || summary.versions < BURST_VERSIONS);
    if priming || summary.versions >= BURST_VERSIONS {
        // Priming read every file at the cursor, a catch-up many: the heap
        // they used is free now, and a followed branch brings little at a time.
        crate::heap::return_freed_heap_after_burst();
    }
    refresh_search(&mut *connection, rows_connection.as_mut()).await?;
    if let Some(rows_connection) = rows_connection {
        // Only the goodbye can fail here: everything is committed.
        let _ = rows_connection.close().await;
    }
    // Every commit up to the tip is projected: the walk's state is the cursor's.
    if let Some(point) = finished {
        options.resume.keep(point);
    }
    Ok(summary)
}

/// Where the projection's current versions differ from those the walk primed
/// from the tree at the cursor (a file broken there, say): the recorded
/// versions to restore, and the personas the projection has no live version of.
/// Only hashes are compared, so a resume loads documents just for those.
async fn recorded_differences(
    connection: &mut PgConnection,
    primed: &HashMap<PersonaId, ContentHash>,
) -> Result<(Vec<KnownVersion>, Vec<PersonaId>), SyncError> {
    let recorded: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT p.id, v.content_hash FROM personas p
         JOIN persona_versions v ON v.id = p.current_version_id
         WHERE NOT p.deleted AND v.content_hash IS NOT NULL",
    )
    .fetch_all(&mut *connection)
    .await?;
    let recorded_ids: HashSet<PersonaId> = recorded.iter().map(|(id, _)| PersonaId(*id)).collect();
    let gone: Vec<PersonaId> = primed.keys().filter(|id| !recorded_ids.contains(id)).copied().collect();
    let differing: Vec<uuid::Uuid> = recorded
        .into_iter()
        .filter(|(id, hash)| primed.get(&PersonaId(*id)).map(ToString::to_string).as_ref() != Some(hash))
        .map(|(id, _)| id)
        .collect();
    if differing.is_empty() {
        return Ok((Vec::new(), gone));
    }
    let rows: Vec<(uuid::Uuid, String, sqlx::types::Json<Persona>)> = sqlx::query_as(
        "SELECT p.id, v.path, v.document FROM personas p
         JOIN persona_versions v ON v.id = p.current_version_id
         WHERE p.id = ANY($1)",
    )
    .bind(&differing)
    .fetch_all(connection)
    .await?;
    let known = rows
        .into_iter()
        .map(|(id, path, document)| KnownVersion {
            persona_id: PersonaId(id),
            path,
            persona: document.0,
        })
        .collect();
    Ok((known, gone))
}

async fn project_run(
    connection: &mut PgConnection,
    rows_connection: Option<&mut PgConnection>,
    written_so_far: &mut WrittenSoFar,
    branch: &str,
    run: &[CommitRecord],
) -> sqlx::Result<CommitStats> {
    let mut transaction = connection.begin().await?;
    let mut rows_transaction = match rows_connection {
        Some(rows_connection) => Some(rows_connection.begin().await?),
        None => None,
    };
    let stats = project_commits(
        &mut transaction,
        rows_transaction.as_deref_mut(),
        written_so_far,
        branch,
        run,
    )
    .await?;
    // The rows first, then the versions that make them visible.
    if let Some(rows_transaction) = rows_transaction {
        rows_transaction.commit().await?;
    }
    transaction.commit().await?;
    Ok(stats)
}

/// From how many pending commits a sync writes the normalized rows on a
/// second connection: a follower's single commit is not worth a connection.
const ROWS_BESIDE_FROM_COMMITS: u64 = 2;

/// Versions from which a sync counts as a burst whose freed heap is handed back.
const BURST_VERSIONS: u64 = 1_000;

/// What the walk must do, decided from the cursor and the branch tip.
struct WalkPlan {
    tip: ObjectId,
    /// Walk the commits after this one (`None`: from the root).
    after: Option<ObjectId>,
    up_to_date: bool,
    /// Commits to project.
    pending: u64,
    /// Set when the cursor is not on the tip's first-parent history.
    cursor_reset: bool,
    unreachable: Vec<String>,
    reachable: HashSet<String>,
    /// The repository's tags, recorded for pins by tag.
    tags: Vec<(String, String)>,
}

fn plan_walk(repository: &std::path::Path, branch: &str, stored_cursor: Option<String>) -> Result<WalkPlan, SyncError> {
    let repo = open_repository(repository)?;
    let tip = resolve_commit(&repo, branch)?;
    let tags = commit_tags(&repo)?;
    // The usual case, a branch that moved forward: walk back from the tip to
    // the cursor only, not through the whole history.
    if let Some(after) = stored_cursor
        .as_deref()
        .and_then(|cursor| ObjectId::from_hex(cursor.as_bytes()).ok())
    {
        match first_parent_chain(&repo, tip, Some(after)) {
            Ok(chain) => {
                return Ok(WalkPlan {
                    tip,
                    after: Some(after),
                    up_to_date: chain.is_empty(),
                    pending: chain.len() as u64,
                    cursor_reset: false,
                    unreachable: Vec::new(),
                    reachable: HashSet::new(),
                    tags,
                });
            }
            Err(GitError::NotAnAncestor { .. }) => {} // rewritten history: below
            Err(error) => return Err(error.into()),
        }
    }
    let chain = first_parent_chain(&repo, tip, None)?;
    let reachable: HashSet<String> = chain.iter().map(ObjectId::to_string).collect();
    let Some(cursor) = stored_cursor else {
        return Ok(WalkPlan {
            tip,
            after: None,
            up_to_date: false,
            pending: chain.len() as u64,
            cursor_reset: false,
            unreachable: Vec::new(),
            reachable,
            tags,
        });
    };
    // Rewritten history: follow the old cursor's first parents back to the
    // newest commit still on the branch. If the old commits are gone from the
    // object store, start from the root; re-projecting is idempotent.
    let mut unreachable = Vec::new();
    let mut base = None;
    if let Ok(mut id) = ObjectId::from_hex(cursor.as_bytes()) {
        while let Ok(commit) = repo.find_commit(id) {
            if reachable.contains(&id.to_string()) {
                base = Some(id);
                break;
            }
            unreachable.push(id.to_string());
            match commit.parent_ids().next() {
                Some(parent) => id = parent.detach(),
                None => break,
            }
        }
    }
    if unreachable.is_empty() {
        unreachable.push(cursor);
    }
    let pending = match base {
        Some(base) => chain.len() - chain.iter().position(|id| *id == base).unwrap_or(0) - 1,
        None => chain.len(),
    };
    Ok(WalkPlan {
        tip,
        after: base,
        up_to_date: false,
        pending: pending as u64,
        cursor_reset: true,
        unreachable,
        reachable,
        tags,
    })
}

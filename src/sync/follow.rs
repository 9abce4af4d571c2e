//! Keeping the projection in step with a branch as it moves: a local
//! repository is watched through its refs (notify, with a slow poll as a
//! safety net), a remote one is fetched into a mirror on an interval.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sqlx::PgPool;

use super::{RETRY_ATTEMPTS, SyncError, SyncOptions, SyncSummary, sync_with_retry};
use crate::git::remote::Mirror;
use crate::git::{GitError, open_repository, resolve_commit};

/// Where new commits come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A repository on this machine; its refs are watched.
    Local,
    /// A remote fetched into `mirror` every `interval`.
    Remote { mirror: Mirror, interval: Duration },
}

/// How long ref events must be quiet before syncing: a `git commit` or
/// `git pull` touches several refs within a millisecond or two. Every
/// commit waits this long before it is synced, so it is short; a sync that
/// starts mid-burst is still correct (it reads the branch tip, and the next
/// event brings another).
const DEBOUNCE: Duration = Duration::from_millis(10);
/// Longest wait after the first event, so a busy repository still syncs.
const DEBOUNCE_LIMIT: Duration = Duration::from_millis(250);
/// The safety net when file events are missed (network file systems, a
/// watcher that could not start).
const FALLBACK_POLL: Duration = Duration::from_secs(5);

/// Syncs now, then again whenever the branch moves, until `shutdown` resolves.
/// Each sync that changed something is reported to `on_sync`. A branch that
/// cannot be read on the first round (wrong URL, no such branch) is an error;
/// later failures (the network or remote down for a while) are retried.
pub async fn follow(
    pool: &PgPool,
    options: &SyncOptions,
    source: &Source,
    shutdown: impl Future<Output = ()>,
    mut on_sync: impl FnMut(&SyncSummary),
) -> Result<(), SyncError> {
    tokio::pin!(shutdown);
    // Each commit then costs only its own changes, the first one too.
    // It waits for the writer's lock rather than failing: the holder is
    // another process's sync, or this one's previous connection, which the
    // database releases a moment after it closes.
    let options = &SyncOptions {
        keep_walk_primed: true,
        wait_for_lock: true,
        ..options.clone()
    };
    let mut watcher = match source {
        Source::Local => match RefWatcher::start(&options.repository) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch the repository's refs; polling every {FALLBACK_POLL:?} instead");
                None
            }
        },
        Source::Remote { .. } => None,
    };
    let mut last_tip = None;
    loop {
        let tip = match source {
            Source::Local => branch_tip(&options.repository, &options.branch).await,
            Source::Remote { mirror, .. } => fetch(mirror).await,
        };
        match tip {
            Ok(tip) if last_tip != Some(tip) => {
                let summary = sync_with_retry(pool, options, RETRY_ATTEMPTS).await?;
                if summary.commits > 0 || summary.retracted > 0 {
                    on_sync(&summary);
                }
                if options.resume.is_empty() {
                    // A catch-up leaves no walk state (see `sync_locked`): it is
                    // primed now, not when the next commit waits for it. (A
                    // state at a newer tip than `tip` is fine: the branch moved
                    // during the sync, and the watcher reports that commit.)
                    sync_with_retry(pool, options, RETRY_ATTEMPTS).await?;
                }
                last_tip = Some(tip);
            }
            Ok(_) => {}
            Err(error) if last_tip.is_none() => return Err(error),
            Err(error) => tracing::warn!(%error, "cannot read the branch; trying again"),
        }
        let pause = match source {
            Source::Local => FALLBACK_POLL,
            Source::Remote { interval, .. } => *interval,
        };
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = next_change(watcher.as_mut(), pause) => {}
        }
    }
}

async fn next_change(watcher: Option<&mut RefWatcher>, pause: Duration) {
    match watcher {
        Some(watcher) => watcher.changed(pause).await,
        None => tokio::time::sleep(pause).await,
    }
}

async fn branch_tip(repository: &Path, branch: &str) -> Result<gix::ObjectId, SyncError> {
    let repository = repository.to_path_buf();
    let branch = branch.to_string();
    read_git(move || open_repository(&repository).and_then(|repo| resolve_commit(&repo, &branch))).await
}

async fn fetch(mirror: &Mirror) -> Result<gix::ObjectId, SyncError> {
    let mirror = mirror.clone();
    read_git(move || mirror.fetch()).await
}

/// Runs blocking git work off the async threads.
async fn read_git(
    work: impl FnOnce() -> Result<gix::ObjectId, GitError> + Send + 'static,
) -> Result<gix::ObjectId, SyncError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(SyncError::from),
        Err(error) => Err(SyncError::Reader(error.to_string())),
    }
}

/// File events on the files that hold a repository's branch tips.
pub struct RefWatcher {
    // Kept alive for as long as events are wanted.
    _watcher: notify::RecommendedWatcher,
    events: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl RefWatcher {
    pub fn start(repository: &Path) -> Result<RefWatcher, String> {
        let repo = open_repository(repository).map_err(|error| error.to_string())?;
        let git_dir = repo.git_dir().to_path_buf();
        let common_dir = repo.common_dir().to_path_buf();
        let (sender, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && event.paths.iter().any(|path| is_ref_file(path))
            {
                let _ = sender.send(());
            }
        })
        .map_err(|error| error.to_string())?;
        let mut watched: Vec<(PathBuf, RecursiveMode)> = vec![
            (common_dir.clone(), RecursiveMode::NonRecursive),
            (common_dir.join("refs").join("heads"), RecursiveMode::Recursive),
        ];
        if git_dir != common_dir {
            watched.push((git_dir, RecursiveMode::NonRecursive));
        }
        for (path, mode) in watched {
            watcher
                .watch(&path, mode)
                .map_err(|error| format!("watching {}: {error}", path.display()))?;
        }
        Ok(RefWatcher {
            _watcher: watcher,
            events,
        })
    }

    /// Returns once a ref changed and the burst of events settled, or after
    /// `fallback` without any event.
    pub async fn changed(&mut self, fallback: Duration) {
        if tokio::time::timeout(fallback, self.events.recv()).await.is_err() {
            return;
        }
        let deadline = tokio::time::Instant::now() + DEBOUNCE_LIMIT;
        while tokio::time::Instant::now() < deadline {
            match tokio::time::timeout(DEBOUNCE, self.events.recv()).await {
                Ok(Some(())) => continue,
                _ => return,
            }
        }
    }
}

/// `HEAD`, `packed-refs` and loose refs count; the index, logs, lock files
/// and objects do not, so `git add` does not wake the sync.
fn is_ref_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("");
    if name.ends_with(".lock") {
        return false;
    }
    name == "HEAD" || name == "packed-refs" || path.components().any(|part| part.as_os_str() == "refs")
}

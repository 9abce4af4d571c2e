//! The registry's writes (settings, labels): a commit that replaces one file, made with gix
//! straight into the object database, and a compare-and-swap of the branch
//! ref on the tip the change was computed from. Nothing is ever written
//! over a tip that moved: the change is recomputed on the new tip instead,
//! so concurrent writers (threads here, or other processes and `git push`)
//! never lose each other's commits, and history stays linear.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gix::bstr::ByteSlice;
use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use super::{GitError, open_repository, resolve_commit};
use crate::access::Identity;
use crate::config::WriteMode;

/// How often a change is recomputed when the branch keeps moving under it.
const ATTEMPTS: usize = 16;
/// How long to wait for another process's lock on the branch ref (or the index).
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// A write gives up after this long, well inside the server's request timeout,
/// so a client never hears "failed" about a commit that then lands.
const WRITE_BUDGET: Duration = Duration::from_secs(12);

/// Where changes are committed, and as whom.
#[derive(Debug)]
pub struct RegistryWriter {
    pub repository: PathBuf,
    pub branch: String,
    pub mode: WriteMode,
    pub committer: Identity,
    /// Writers in this process take turns; other processes are kept out by the ref's lock and CAS.
    turn: Mutex<()>,
}

/// The branch tip a change is computed against, and its files.
pub struct Tip<'repo> {
    pub commit: gix::ObjectId,
    tree: gix::Tree<'repo>,
}

impl Tip<'_> {
    /// The bytes of the file at `path` (relative to the repository root), if it exists.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        super::blob_in_tree(&self.tree, self.commit, path)
    }

    /// Whether the repository has a tag of this name (a label must not shadow one).
    pub fn has_tag(&self, name: &str) -> Result<bool, GitError> {
        let reference = format!("refs/tags/{name}");
        self.tree
            .repo
            .try_find_reference(reference.as_str())
            .map(|found| found.is_some())
            .map_err(|error| GitError::Revision {
                revision: reference.clone(),
                message: error.to_string(),
            })
    }
}

/// A change to commit: the file's new bytes and the commit message.
pub struct FileChange {
    pub path: String,
    pub bytes: Vec<u8>,
    pub message: String,
}

/// What a write came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The change was already in place at `tip`; nothing was committed.
    Unchanged { tip: gix::ObjectId },
    /// `commit` (child of `parent`) is now the tip of `branch`.
    Committed {
        commit: gix::ObjectId,
        parent: gix::ObjectId,
        branch: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The caller declined to write (stale precondition, invalid change…).
    #[error("the change was refused")]
    Refused(E),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("the branch {branch} kept moving while the change was being written; try again")]
    Contended { branch: String },
    /// The branch is checked out here and `path` has uncommitted changes:
    /// committing under them would leave the checkout silently reverting the commit.
    #[error("the checkout has uncommitted changes to {path}")]
    DirtyCheckout { path: String },
}

impl RegistryWriter {
    pub fn new(repository: &Path, branch: &str, mode: WriteMode, committer: Identity) -> RegistryWriter {
        RegistryWriter {
            repository: repository.to_path_buf(),
            branch: branch.to_string(),
            mode,
            committer,
            turn: Mutex::new(()),
        }
    }

    /// Computes a change with `plan` against the current tip and commits it
    /// as `author`. `plan` answers `Ok(None)` when there is nothing to
    /// change; it may run more than once, each time on a newer tip. In
    /// branch mode the commit goes on a new branch named by `review_branch`
    /// (given the commit's short id), and the followed branch is left alone.
    pub fn write<E>(
        &self,
        author: &Identity,
        review_branch: impl Fn(&str) -> String,
        mut plan: impl FnMut(&Tip<'_>) -> Result<Option<FileChange>, E>,
    ) -> Result<WriteOutcome, WriteError<E>> {
        // Waiting for the turn counts against the budget too.
        let deadline = Instant::now() + WRITE_BUDGET;
        // A poisoned turn only means another writer panicked; the repository
        // is guarded by the ref CAS, not by this lock.
        let _turn = self.turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let repository = open_repository(&self.repository)?;
        let branch_ref = format!("refs/heads/{}", self.branch);
        let checkout = self.checkout(&repository, &branch_ref);
        for _ in 0..ATTEMPTS {
            if Instant::now() > deadline {
                break;
            }
            let tip_commit = resolve_commit(&repository, &branch_ref)?;
            let tree = repository
                .find_commit(tip_commit)
                .and_then(|commit| commit.tree())
                .map_err(|error| object_error(tip_commit, error))?;
            let tip = Tip {
                commit: tip_commit,
                tree,
            };
            let started = Instant::now();
            let Some(change) = plan(&tip).map_err(WriteError::Refused)? else {
                return Ok(WriteOutcome::Unchanged { tip: tip_commit });
            };
            let old = tip.read(&change.path)?;
            if let Some(workdir) = checkout
                && !is_clean(&repository, workdir, &change.path, old.as_deref())
            {
                return Err(WriteError::DirtyCheckout { path: change.path });
            }
            let planned = started.elapsed();
            let commit = self.commit_object(&repository, &tip, &change, author)?;
            let written = started.elapsed();
            let (target, expected) = match self.mode {
                WriteMode::Commit => (
                    branch_ref.clone(),
                    PreviousValue::MustExistAndMatch(Target::Object(tip_commit)),
                ),
                WriteMode::Branch => {
                    let short = commit.to_hex_with_len(7).to_string();
                    (
                        format!("refs/heads/{}", review_branch(&short)),
                        PreviousValue::MustNotExist,
                    )
                }
            };
            match self.move_ref(&repository, &target, commit, expected, &change.message) {
                Ok(()) => {
                    let swapped = started.elapsed();
                    if let Some(workdir) = checkout
                        && let Err(reason) = refresh_checkout(&repository, workdir, &change, old.as_deref())
                    {
                        tracing::warn!(
                            file = %change.path,
                            "the commit is on the branch, but the checked-out copy could not follow it: {reason}"
                        );
                    }
                    tracing::debug!(
                        ?planned, ?written, ?swapped, checkout = ?started.elapsed(),
                        "settings change committed"
                    );
                    return Ok(WriteOutcome::Committed {
                        commit,
                        parent: tip_commit,
                        branch: target.trim_start_matches("refs/heads/").to_string(),
                    });
                }
                // Someone else moved the branch between our read and our swap:
                // recompute on their tip. Any other failure is reported.
                Err(error) => {
                    if self.mode == WriteMode::Branch {
                        // The same change by the same author in the same second is the same
                        // commit, and its branch exists already: that is this write, done.
                        return match resolve_commit(&repository, &target) {
                            Ok(existing) if existing == commit => Ok(WriteOutcome::Committed {
                                commit,
                                parent: tip_commit,
                                branch: target.trim_start_matches("refs/heads/").to_string(),
                            }),
                            _ => Err(error.into()),
                        };
                    }
                    let now = resolve_commit(&repository, &branch_ref)?;
                    if now == tip_commit {
                        return Err(error.into());
                    }
                    tracing::debug!(branch = %self.branch, "the branch moved during a write; recomputing");
                }
            }
        }
        Err(WriteError::Contended {
            branch: self.branch.clone(),
        })
    }

    /// The working tree that has the followed branch checked out, if any
    /// (in commit mode only: a review branch is never checked out).
    fn checkout<'repo>(&self, repository: &'repo gix::Repository, branch_ref: &str) -> Option<&'repo Path> {
        if self.mode != WriteMode::Commit {
            return None;
        }
        let workdir = repository.workdir()?;
        let head = repository.head_name().ok().flatten()?;
        (head.as_bstr() == branch_ref.as_bytes().as_bstr()).then_some(workdir)
    }

    /// Writes the blob, the tree and the commit object (no ref changes yet).
    fn commit_object(
        &self,
        repository: &gix::Repository,
        tip: &Tip<'_>,
        change: &FileChange,
        author: &Identity,
    ) -> Result<gix::ObjectId, GitError> {
        let failed = |message: String| GitError::Object {
            object: format!("{}:{}", tip.commit, change.path),
            message,
        };
        let blob = repository
            .write_blob(&change.bytes)
            .map_err(|error| failed(error.to_string()))?;
        let mut editor = tip.tree.edit().map_err(|error| failed(error.to_string()))?;
        editor
            .upsert(change.path.as_str(), gix::object::tree::EntryKind::Blob, blob)
            .map_err(|error| failed(error.to_string()))?;
        let tree = editor.write().map_err(|error| failed(error.to_string()))?;
        let now = gix::date::Time::now_local_or_utc();
        let commit = gix::objs::Commit {
            tree: tree.detach(),
            parents: [tip.commit].into_iter().collect(),
            author: signature(author, now),
            committer: signature(&self.committer, now),
            encoding: None,
            message: change.message.clone().into(),
            extra_headers: Vec::new(),
        };
        let id = repository
            .write_object(&commit)
            .map_err(|error| failed(error.to_string()))?;
        Ok(id.detach())
    }

    /// Points `name` at `commit` if its current value is still `expected`,
    /// under the ref's lock, with a reflog entry by the committer.
    fn move_ref(
        &self,
        repository: &gix::Repository,
        name: &str,
        commit: gix::ObjectId,
        expected: PreviousValue,
        message: &str,
    ) -> Result<(), GitError> {
        let failed = |message: String| GitError::Revision {
            revision: name.to_string(),
            message,
        };
        let subject = message.lines().next().unwrap_or_default();
        let edit = RefEdit {
            change: Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: format!("commit: {subject}").into(),
                },
                expected,
                new: Target::Object(commit),
            },
            name: name
                .try_into()
                .map_err(|error: gix::validate::reference::name::Error| failed(error.to_string()))?,
            deref: false,
        };
        let committer = signature(&self.committer, gix::date::Time::now_local_or_utc());
        let wait = gix::lock::acquire::Fail::AfterDurationWithBackoff(LOCK_WAIT);
        repository
            .refs
            .transaction()
            .prepare([edit], wait, wait)
            .map_err(|error| failed(error.to_string()))?
            .commit(Some(committer.to_ref(&mut gix::date::parse::TimeBuf::default())))
            .map_err(|error| failed(error.to_string()))?;
        Ok(())
    }
}

fn signature(identity: &Identity, time: gix::date::Time) -> gix::actor::Signature {
    gix::actor::Signature {
        name: identity.name.as_str().into(),
        email: identity.email.as_str().into(),
        time,
    }
}

fn object_error(commit: gix::ObjectId, error: impl std::fmt::Display) -> GitError {
    GitError::Object {
        object: commit.to_string(),
        message: error.to_string(),
    }
}

/// Whether the checked-out `path` is exactly as the tip has it, in the
/// working tree and in the index (`old`: its bytes at the tip).
fn is_clean(repository: &gix::Repository, workdir: &Path, path: &str, old: Option<&[u8]>) -> bool {
    let on_disk = std::fs::read(workdir.join(path)).ok();
    if on_disk.as_deref() != old {
        return false;
    }
    let Ok(index) = repository.open_index() else {
        return false;
    };
    index_entry(&index, path) == blob_id(repository, old)
}

fn index_entry(index: &gix::index::File, path: &str) -> Option<gix::ObjectId> {
    index
        .entry_index_by_path_and_stage(path.as_bytes().as_bstr(), gix::index::entry::Stage::Unconflicted)
        .map(|position| index.entries()[position].id)
}

fn blob_id(repository: &gix::Repository, bytes: Option<&[u8]>) -> Option<gix::ObjectId> {
    bytes.and_then(|bytes| gix::objs::compute_hash(repository.object_hash(), gix::objs::Kind::Blob, bytes).ok())
}

/// Brings the checked-out file and its index entry along with the commit
/// (as `git push` does with `receive.denyCurrentBranch = updateInstead`), so
/// the checkout does not show the commit as reverted. The index stays locked
/// from reading to writing, so a concurrent `git add` is never overwritten;
/// if the checkout changed meanwhile it is left alone (and lags, as after
/// any push to it), and if the index cannot be written the old file is put back.
fn refresh_checkout(
    repository: &gix::Repository,
    workdir: &Path,
    change: &FileChange,
    old: Option<&[u8]>,
) -> Result<(), String> {
    let started = Instant::now();
    let mut lock = gix::lock::File::acquire_to_update_resource(
        repository.index_path(),
        gix::lock::acquire::Fail::AfterDurationWithBackoff(LOCK_WAIT),
        None,
        0,
    )
    .map_err(|error| format!("the index is locked: {error}"))?;
    let locked = started.elapsed();
    let mut index = repository.open_index().map_err(|error| error.to_string())?;
    let read = started.elapsed();
    let file = workdir.join(&change.path);
    let path = change.path.as_bytes().as_bstr();
    let existing = index.entry_index_by_path_and_stage(path, gix::index::entry::Stage::Unconflicted);
    // A file the commit adds (the first label, say) has no entry yet; one it replaces must be as the old tip had it.
    let position = match (existing, old) {
        (None, None) => None,
        (Some(position), Some(_)) if Some(index.entries()[position].id) == blob_id(repository, old) => Some(position),
        _ => return Err("the file is not in the index as the old tip had it".to_string()),
    };
    if std::fs::read(&file).ok().as_deref() != old {
        return Err("the file changed in the checkout meanwhile".to_string());
    }
    if let Some(directory) = file.parent() {
        std::fs::create_dir_all(directory).map_err(|error| error.to_string())?;
    }
    replace_file(&file, &change.bytes)?;
    let replaced = started.elapsed();
    let staged = (|| -> Result<(), String> {
        let metadata = gix::index::fs::Metadata::from_path_no_follow(&file).map_err(|error| error.to_string())?;
        let id = blob_id(repository, Some(&change.bytes)).ok_or("cannot hash the new file")?;
        let stat = gix::index::entry::Stat::from_fs(&metadata).map_err(|error| error.to_string())?;
        match position {
            Some(position) => {
                let entry = &mut index.entries_mut()[position];
                entry.id = id;
                entry.stat = stat;
            }
            None => {
                index.dangerously_push_entry(
                    stat,
                    id,
                    gix::index::entry::Flags::empty(),
                    gix::index::entry::Mode::FILE,
                    path,
                );
                index.sort_entries();
            }
        }
        // The cached tree of the changed directory is stale now (see gix_index::File::write).
        index.remove_tree();
        // Buffered: the index is written in many small pieces (a syscall
        // each, unbuffered: half a second for 10,000 entries).
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut lock);
        index
            .write_to(&mut out, gix::index::write::Options::default())
            .map_err(|error| error.to_string())?;
        std::io::Write::flush(&mut out).map_err(|error| error.to_string())?;
        drop(out);
        lock.commit().map(drop).map_err(|error| error.error.to_string())
    })();
    if let Err(reason) = staged {
        match old {
            Some(old) => {
                let _ = replace_file(&file, old);
            }
            None => {
                let _ = std::fs::remove_file(&file);
            }
        }
        return Err(format!(
            "the index could not be updated ({reason}); the file was put back"
        ));
    }
    tracing::debug!(?locked, ?read, ?replaced, written = ?started.elapsed(), "checkout refreshed");
    Ok(())
}

/// Writes `bytes` to a new temporary file beside `file` and renames it over,
/// so the checkout never holds half a file and no existing path (a symlink
/// with a guessable name) is written through.
fn replace_file(file: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let directory = file.parent().ok_or("the file has no directory")?;
    let mut staged = tempfile::NamedTempFile::new_in(directory).map_err(|error| error.to_string())?;
    staged.write_all(bytes).map_err(|error| error.to_string())?;
    staged.persist(file).map(drop).map_err(|error| error.error.to_string())
}

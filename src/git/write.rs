//! The registry's one write: a commit that replaces one file, made with gix
//! straight into the object database, and a compare-and-swap of the branch
//! ref on the tip the change was computed from. Nothing is ever written
//! over a tip that moved: the change is recomputed on the new tip instead,
//! so concurrent writers (threads here, or other processes and `git push`)
//! never lose each other's commits, and history stays linear.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use gix::bstr::ByteSlice;
use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use super::{GitError, open_repository, resolve_commit};
use crate::access::Identity;
use crate::config::WriteMode;

/// How often a change is recomputed when the branch keeps moving under it.
const ATTEMPTS: usize = 16;
/// How long to wait for another process's lock on the branch ref.
const REF_LOCK_WAIT: Duration = Duration::from_secs(2);

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
        let failed = |message: String| GitError::Object {
            object: format!("{}:{path}", self.commit),
            message,
        };
        let Some(entry) = self
            .tree
            .lookup_entry_by_path(path)
            .map_err(|error| failed(error.to_string()))?
        else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let object = entry.object().map_err(|error| failed(error.to_string()))?;
        Ok(Some(object.data.clone()))
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
    #[error("the branch {branch} moved {ATTEMPTS} times while the change was being written; try again")]
    Contended { branch: String },
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
        // A poisoned turn only means another writer panicked; the repository
        // is guarded by the ref CAS, not by this lock.
        let _turn = self.turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let repository = open_repository(&self.repository)?;
        let branch_ref = format!("refs/heads/{}", self.branch);
        for _ in 0..ATTEMPTS {
            let tip_commit = resolve_commit(&repository, &branch_ref)?;
            let tree = repository
                .find_commit(tip_commit)
                .and_then(|commit| commit.tree())
                .map_err(|error| object_error(tip_commit, error))?;
            let tip = Tip {
                commit: tip_commit,
                tree,
            };
            let Some(change) = plan(&tip).map_err(WriteError::Refused)? else {
                return Ok(WriteOutcome::Unchanged { tip: tip_commit });
            };
            let commit = self.commit_object(&repository, &tip, &change, author)?;
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
                    if self.mode == WriteMode::Commit {
                        update_checkout(&repository, &branch_ref, &change, &tip);
                    }
                    return Ok(WriteOutcome::Committed {
                        commit,
                        parent: tip_commit,
                        branch: target.trim_start_matches("refs/heads/").to_string(),
                    });
                }
                // Someone else moved the branch between our read and our swap:
                // recompute on their tip. Any other failure is reported.
                Err(error) => {
                    let now = resolve_commit(&repository, &branch_ref)?;
                    if now == tip_commit || self.mode == WriteMode::Branch {
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
        let wait = gix::lock::acquire::Fail::AfterDurationWithBackoff(REF_LOCK_WAIT);
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

/// When the branch is checked out in this repository's working tree, brings
/// the changed file and its index entry along (as `git push` does with
/// `receive.denyCurrentBranch = updateInstead`), so the checkout does not
/// show the commit as reverted. Only a file left exactly as it was at the
/// old tip is touched: someone's uncommitted edits are never overwritten,
/// and then the checkout simply lags, as after any push to it.
fn update_checkout(repository: &gix::Repository, branch_ref: &str, change: &FileChange, old_tip: &Tip<'_>) {
    let Some(workdir) = repository.workdir() else {
        return;
    };
    let checked_out =
        matches!(repository.head_name(), Ok(Some(head)) if head.as_bstr() == branch_ref.as_bytes().as_bstr());
    if !checked_out {
        return;
    }
    if let Err(reason) = refresh_file(repository, workdir, change, old_tip) {
        tracing::warn!(
            file = %change.path,
            "the commit is on the branch, but the checked-out copy was left as it is: {reason}"
        );
    }
}

fn refresh_file(
    repository: &gix::Repository,
    workdir: &Path,
    change: &FileChange,
    old_tip: &Tip<'_>,
) -> Result<(), String> {
    let old = old_tip.read(&change.path).map_err(|error| error.to_string())?;
    let file = workdir.join(&change.path);
    let on_disk = std::fs::read(&file).ok();
    if on_disk != old {
        return Err("it has uncommitted changes".to_string());
    }
    let mut index = repository.open_index().map_err(|error| error.to_string())?;
    let path = change.path.as_bytes().as_bstr();
    let position = index.entry_index_by_path_and_stage(path, gix::index::entry::Stage::Unconflicted);
    let old_blob = old
        .as_deref()
        .map(|bytes| gix::objs::compute_hash(repository.object_hash(), gix::objs::Kind::Blob, bytes));
    let Some(position) =
        position.filter(|&position| Some(index.entries()[position].id) == old_blob.transpose().ok().flatten())
    else {
        return Err("its index entry is staged differently".to_string());
    };
    let new_blob = gix::objs::compute_hash(repository.object_hash(), gix::objs::Kind::Blob, &change.bytes)
        .map_err(|error| error.to_string())?;
    // Written beside and renamed over, so the checkout never holds half a file.
    let staged = file.with_extension("personas-write");
    std::fs::write(&staged, &change.bytes)
        .and_then(|()| std::fs::rename(&staged, &file))
        .map_err(|error| error.to_string())?;
    let metadata = gix::index::fs::Metadata::from_path_no_follow(&file).map_err(|error| error.to_string())?;
    let entry = &mut index.entries_mut()[position];
    entry.id = new_blob;
    entry.stat = gix::index::entry::Stat::from_fs(&metadata).map_err(|error| error.to_string())?;
    // The cached tree of the changed directory is stale now (see gix_index::File::write).
    index.remove_tree();
    index
        .write(gix::index::write::Options::default())
        .map_err(|error| error.to_string())
}

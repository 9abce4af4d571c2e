//! Everything that reads the registry's git repository.

pub mod history;
pub mod readings;
pub mod remote;
pub mod replay;
pub mod tree_delta;
pub mod write;

use std::path::Path;

/// Errors from the git layer, each naming the repository or revision involved.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open git repository at {path}: {message}")]
    Open { path: String, message: String },
    #[error("cannot resolve {revision:?} in the repository: {message}")]
    Revision { revision: String, message: String },
    #[error("commit {commit} is not on the first-parent history of {tip}")]
    NotAnAncestor { commit: String, tip: String },
    #[error("reading git object {object}: {message}")]
    Object { object: String, message: String },
    #[error("fetching from {url}: {message}")]
    Fetch { url: String, message: String },
}

/// Opens a repository so that no user or system git configuration leaks in:
/// the same repository must read the same on every machine.
pub fn open_repository(path: &Path) -> Result<gix::Repository, GitError> {
    let mut repository = gix::open_opts(path, gix::open::Options::isolated()).map_err(|error| GitError::Open {
        path: path.display().to_string(),
        message: error.to_string(),
    })?;
    // Trees of a large registry are read again and again while walking history.
    repository.object_cache_size_if_unset(64 * 1024 * 1024);
    Ok(repository)
}

/// The bytes of the file at `path` in the tree of `revision`, if it is there.
pub fn read_file_at(repository: &Path, revision: &str, path: &str) -> Result<Option<Vec<u8>>, GitError> {
    let repository = open_repository(repository)?;
    let commit = resolve_commit(&repository, revision)?;
    let tree = repository
        .find_commit(commit)
        .and_then(|commit| commit.tree())
        .map_err(|error| GitError::Object {
            object: commit.to_string(),
            message: error.to_string(),
        })?;
    blob_in_tree(&tree, commit, path)
}

/// The bytes of the blob at `path` in `tree` (of `commit`, for messages);
/// `None` when there is nothing there, or a directory.
pub fn blob_in_tree(tree: &gix::Tree<'_>, commit: gix::ObjectId, path: &str) -> Result<Option<Vec<u8>>, GitError> {
    let failed = |message: String| GitError::Object {
        object: format!("{commit}:{path}"),
        message,
    };
    let Some(entry) = tree
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

/// Every tag of the repository that names a commit, as (tag name, commit id);
/// annotated tags are peeled. Tags of trees or blobs are left out.
pub fn commit_tags(repository: &gix::Repository) -> Result<Vec<(String, String)>, GitError> {
    let failed = |message: String| GitError::Revision {
        revision: "refs/tags/*".to_string(),
        message,
    };
    let references = repository.references().map_err(|error| failed(error.to_string()))?;
    let mut tags = Vec::new();
    for reference in references.tags().map_err(|error| failed(error.to_string()))? {
        let mut reference = reference.map_err(|error| failed(error.to_string()))?;
        let name = reference.name().shorten().to_string();
        if let Ok(commit) = reference.peel_to_commit() {
            tags.push((name, commit.id.to_string()));
        }
    }
    tags.sort();
    Ok(tags)
}

/// Resolves a revision (branch, tag, sha prefix, `HEAD~2`, …) to a commit id.
pub fn resolve_commit(repository: &gix::Repository, revision: &str) -> Result<gix::ObjectId, GitError> {
    let revision_error = |message: String| GitError::Revision {
        revision: revision.to_string(),
        message,
    };
    let id = repository
        .rev_parse_single(revision)
        .map_err(|error| revision_error(error.to_string()))?;
    let object = id.object().map_err(|error| revision_error(error.to_string()))?;
    let commit = object
        .peel_to_commit()
        .map_err(|error| revision_error(error.to_string()))?;
    Ok(commit.id)
}

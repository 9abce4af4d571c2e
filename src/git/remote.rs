//! Following a hosted repository: a bare mirror under the data directory,
//! kept current with gix fetch, which the sync then reads like any local
//! repository.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::{GitError, open_repository, resolve_commit};

/// A bare repository holding one branch of a remote.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub path: PathBuf,
    pub url: String,
    pub branch: String,
}

impl Mirror {
    /// The mirror of `url` under `data_dir`, one directory per remote so that
    /// pointing a deployment at another remote never mixes their histories.
    pub fn under(data_dir: &Path, url: &str, branch: &str) -> Mirror {
        let name: String = url
            .chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() {
                    character
                } else {
                    '_'
                }
            })
            .collect();
        Mirror {
            path: data_dir.join("mirrors").join(format!("{name}.git")),
            url: url.to_string(),
            branch: branch.to_string(),
        }
    }

    /// Fetches the branch (creating the mirror on first use) and returns its
    /// tip. The refspec is forced: a force-push upstream is followed, and the
    /// sync retracts what it rewrote.
    pub fn fetch(&self) -> Result<gix::ObjectId, GitError> {
        let fetch_error = |message: String| GitError::Fetch {
            url: self.url.clone(),
            message,
        };
        if !self.path.join("HEAD").exists() {
            std::fs::create_dir_all(&self.path).map_err(|error| fetch_error(error.to_string()))?;
            gix::init_bare(&self.path).map_err(|error| fetch_error(error.to_string()))?;
        }
        let repository = open_repository(&self.path)?;
        let refspec = format!("+refs/heads/{0}:refs/heads/{0}", self.branch);
        let remote = repository
            .remote_at(self.url.as_str())
            .map_err(|error| fetch_error(error.to_string()))?
            .with_refspecs([refspec.as_str()], gix::remote::Direction::Fetch)
            .map_err(|error| fetch_error(error.to_string()))?
            // Only the branch: tags are not part of the registry's history.
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        let interrupt = AtomicBool::new(false);
        let outcome = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|error| fetch_error(error.to_string()))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|error| fetch_error(error.to_string()))?
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|error| fetch_error(error.to_string()))?;
        let found = outcome.ref_map.mappings.iter().any(|mapping| mapping.local.is_some());
        if !found {
            return Err(fetch_error(format!("the remote has no branch {:?}", self.branch)));
        }
        // Reopen: the handle above caches the refs as they were before the fetch.
        let repository = open_repository(&self.path)?;
        resolve_commit(&repository, &format!("refs/heads/{}", self.branch))
    }
}

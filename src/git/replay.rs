//! Folds a branch's history into per-persona version lists, numbered the way
//! the projection numbers them: 1, 2, 3 … per persona, one per content change.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::history::{ChangeKind, CommitInfo, FileProblem, HistoryWalk, WalkOptions};
use super::{GitError, open_repository};
use crate::persona::diff::{Change, diff};
use crate::persona::{ContentHash, Persona, PersonaId};

#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub number: u32,
    pub kind: ChangeKind,
    pub commit: CommitInfo,
    pub path: String,
    pub content_hash: Option<ContentHash>,
    /// `None` for a deletion.
    pub persona: Option<Persona>,
    /// What changed against the previous version (empty for the first).
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersonaHistory {
    pub id: PersonaId,
    /// Oldest first.
    pub versions: Vec<Version>,
}

impl PersonaHistory {
    /// The last version's content, unless the persona is deleted.
    pub fn current(&self) -> Option<&Persona> {
        self.versions.last().and_then(|version| version.persona.as_ref())
    }

    /// The slug of the newest version that had content.
    pub fn latest_slug(&self) -> Option<&str> {
        self.versions
            .iter()
            .rev()
            .find_map(|version| version.persona.as_ref())
            .map(|persona| persona.slug.as_str())
    }

    pub fn is_known_as(&self, name: &str) -> bool {
        self.id.to_string() == name.to_lowercase()
            || self
                .versions
                .iter()
                .filter_map(|version| version.persona.as_ref())
                .any(|persona| persona.slug.as_str() == name)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Replay {
    pub personas: HashMap<PersonaId, PersonaHistory>,
    /// Files still invalid at the tip, by path.
    pub open_problems: BTreeMap<String, FileProblem>,
    pub commits: usize,
}

impl Replay {
    /// Replays the first-parent history of `tip` from the root.
    pub fn of(repository: &Path, tip: &str) -> Result<Replay, GitError> {
        let walk = HistoryWalk::new(
            open_repository(repository)?,
            &WalkOptions {
                tip: tip.to_string(),
                after: None,
            },
        )?;
        let mut replay = Replay::default();
        for record in walk {
            let record = record?;
            replay.commits += 1;
            for path in &record.checked_paths {
                replay.open_problems.remove(path);
            }
            for problem in record.problems {
                replay.open_problems.insert(problem.path.clone(), problem);
            }
            for change in record.changes {
                let history = replay
                    .personas
                    .entry(change.persona_id)
                    .or_insert_with(|| PersonaHistory {
                        id: change.persona_id,
                        versions: Vec::new(),
                    });
                let changes = match (&change.previous, &change.persona) {
                    (Some(old), Some(new)) => diff(old, new),
                    _ => Vec::new(),
                };
                history.versions.push(Version {
                    number: history.versions.len() as u32 + 1,
                    kind: change.kind,
                    commit: record.commit.clone(),
                    path: change.path,
                    content_hash: change.content_hash,
                    persona: change.persona.map(std::sync::Arc::unwrap_or_clone),
                    changes,
                });
            }
        }
        Ok(replay)
    }

    /// Histories sorted by their latest slug, for stable output.
    pub fn sorted(&self) -> Vec<&PersonaHistory> {
        let mut histories: Vec<&PersonaHistory> = self.personas.values().collect();
        histories.sort_by(|a, b| (a.latest_slug(), a.id).cmp(&(b.latest_slug(), b.id)));
        histories
    }
}

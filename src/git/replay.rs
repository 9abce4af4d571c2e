//! Folds a branch's history into per-persona version lists, numbered the way
//! the projection numbers them: 1, 2, 3 … per persona, one per content change.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::history::{ChangeKind, CommitInfo, FileProblem, HistoryWalk, WalkOptions};
use super::{GitError, commit_tags, open_repository, resolve_commit};
use crate::persona::Diagnostic;
use crate::persona::diff::{Change, diff};
use crate::persona::experiment::Experiment;
use crate::persona::labels::{KnownPersona, KnownVersion, LabelsFile, ResolvedLabel, resolve as resolve_labels};
use crate::persona::pin::Pin;
use crate::persona::profile::Profile;
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

/// A commit that changed the labels file.
#[derive(Debug, Clone, Serialize)]
pub struct LabelsChange {
    pub position: usize,
    pub commit: CommitInfo,
    /// `None`: the commit removed the file.
    pub file: Option<LabelsFile>,
}

/// A commit that changed one experiment file.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentChange {
    pub position: usize,
    pub commit: CommitInfo,
    /// `None`: the commit removed the experiment.
    pub experiment: Option<Experiment>,
}

/// A commit that changed the prompt template.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateChange {
    pub position: usize,
    pub commit: String,
    /// `None`: the commit removed the template.
    pub source: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Replay {
    pub personas: HashMap<PersonaId, PersonaHistory>,
    /// Files still invalid at the tip, by path.
    pub open_problems: BTreeMap<String, FileProblem>,
    pub commits: usize,
    /// Each commit's position in the walk, oldest first.
    pub commit_positions: HashMap<String, usize>,
    /// Prompt template changes, oldest first.
    pub prompt_templates: Vec<TemplateChange>,
    /// The profiles at the tip, by slug.
    pub profiles: BTreeMap<String, Profile>,
    /// Changes of the labels file, oldest first.
    pub labels_changes: Vec<LabelsChange>,
    /// Changes of each experiment, oldest first, by name.
    pub experiment_changes: BTreeMap<String, Vec<ExperimentChange>>,
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
            let position = replay.commits;
            replay.commits += 1;
            replay.commit_positions.insert(record.commit.id.clone(), position);
            if let Some(source) = record.prompt_template {
                replay.prompt_templates.push(TemplateChange {
                    position,
                    commit: record.commit.id.clone(),
                    source,
                });
            }
            if let Some(file) = record.labels {
                replay.labels_changes.push(LabelsChange {
                    position,
                    commit: record.commit.clone(),
                    file,
                });
            }
            for (name, experiment) in record.experiments {
                replay
                    .experiment_changes
                    .entry(name)
                    .or_default()
                    .push(ExperimentChange {
                        position,
                        commit: record.commit.clone(),
                        experiment,
                    });
            }
            for (slug, profile) in record.profiles {
                match profile {
                    Some(profile) => replay.profiles.insert(slug, profile),
                    None => replay.profiles.remove(&slug),
                };
            }
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
                // The replay keeps every version, so the one replaced is its own last.
                let replaced = change
                    .previous
                    .as_ref()
                    .and_then(|_| history.versions.last())
                    .and_then(|version| version.persona.as_ref());
                let changes = match (replaced, &change.persona) {
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

    /// Finds `reference` (slug, former slug or id, with an optional `@pin`):
    /// the pinned version, or the current one. A commit or tag pin names the
    /// version current at that commit; `repository` resolves those.
    pub fn locate(&self, repository: &Path, reference: &str) -> anyhow::Result<(&PersonaHistory, &Version)> {
        let (name, pin) = match reference.split_once('@') {
            Some((name, pin)) => (name, Some(pin.parse::<Pin>()?)),
            None => (reference, None),
        };
        let history = self.find(name)?;
        let versions = &history.versions;
        let version = match &pin {
            None => {
                let last = versions
                    .last()
                    .ok_or_else(|| anyhow::anyhow!("{name} has no versions"))?;
                if last.persona.is_none() {
                    let hint = match last.number {
                        1 => String::new(),
                        number => format!("; pin an earlier version, e.g. {name}@{}", number - 1),
                    };
                    anyhow::bail!(
                        "{name} was deleted in commit {} (version {}){hint}",
                        last.commit.short_id(),
                        last.number
                    );
                }
                last
            }
            Some(Pin::Number(number)) => usize::try_from(*number)
                .ok()
                .and_then(|number| number.checked_sub(1))
                .and_then(|index| versions.get(index))
                .ok_or_else(|| match versions.len() {
                    1 => anyhow::anyhow!("{name} has only version 1; there is no version {number}"),
                    count => anyhow::anyhow!("{name} has versions 1 to {count}; there is no version {number}"),
                })?,
            Some(Pin::Content(hash)) => versions
                .iter()
                .find(|version| version.content_hash.as_ref() == Some(hash))
                .ok_or_else(|| anyhow::anyhow!("no version of {name} has the content hash {hash}"))?,
            Some(Pin::Label(label)) => self.labelled_version(repository, history, label)?,
            Some(Pin::Name(label)) if self.defines_label(label, self.tip_position()) => {
                self.labelled_version(repository, history, label)?
            }
            Some(Pin::Commit(revision) | Pin::Tag(revision) | Pin::Name(revision)) => {
                let commit = resolve_commit(&open_repository(repository)?, revision)?.to_string();
                let position = *self
                    .commit_positions
                    .get(&commit)
                    .ok_or_else(|| anyhow::anyhow!("commit {commit} is not on this branch's first-parent history"))?;
                versions
                    .iter()
                    .rev()
                    .find(|version| {
                        self.commit_positions
                            .get(&version.commit.id)
                            .is_some_and(|at| *at <= position)
                    })
                    .ok_or_else(|| anyhow::anyhow!("{name} did not exist yet at commit {commit}"))?
            }
        };
        if version.persona.is_none() {
            anyhow::bail!(
                "version {} of {name} is its deletion (commit {}); pin an earlier version",
                version.number,
                version.commit.short_id()
            );
        }
        Ok((history, version))
    }

    /// The position of the newest walked commit.
    pub fn tip_position(&self) -> usize {
        self.commits.saturating_sub(1)
    }

    /// The position of `revision` on the walked history.
    pub fn position_of(&self, repository: &Path, revision: &str) -> anyhow::Result<(String, usize)> {
        let commit = resolve_commit(&open_repository(repository)?, revision)?.to_string();
        let position = *self
            .commit_positions
            .get(&commit)
            .ok_or_else(|| anyhow::anyhow!("commit {commit} is not on this branch's first-parent history"))?;
        Ok((commit, position))
    }

    /// The labels file in force at `position`.
    pub fn labels_at(&self, position: usize) -> Option<&LabelsChange> {
        self.labels_changes
            .iter()
            .rev()
            .find(|change| change.position <= position)
            .filter(|change| change.file.is_some())
    }

    pub fn defines_label(&self, label: &str, position: usize) -> bool {
        self.labels_at(position)
            .and_then(|change| change.file.as_ref())
            .is_some_and(|file| file.names().contains(label))
    }

    /// A persona as it stood at `position`: the versions made up to then.
    pub fn known_persona(&self, reference: &str, position: usize) -> Option<KnownPersona> {
        let history = self.find(reference).ok()?;
        let versions: Vec<KnownVersion> = history
            .versions
            .iter()
            .filter(|version| {
                self.commit_positions
                    .get(&version.commit.id)
                    .is_some_and(|at| *at <= position)
            })
            .map(|version| KnownVersion {
                number: version.number,
                content_hash: version.content_hash,
            })
            .collect();
        if versions.is_empty() {
            return None;
        }
        Some(KnownPersona {
            id: history.id,
            slug: history.latest_slug().unwrap_or_default().to_string(),
            versions,
        })
    }

    /// Where every label pointed at `position`, and the entries that did not
    /// resolve then. `tags` are the repository's tag names (a label a tag
    /// shadows does not count).
    pub fn labels_resolved_at(
        &self,
        position: usize,
        tags: &std::collections::BTreeSet<String>,
    ) -> (Vec<ResolvedLabel>, Vec<Diagnostic>) {
        match self.labels_at(position).and_then(|change| change.file.as_ref()) {
            Some(file) => resolve_labels(
                file,
                |reference| self.known_persona(reference, position),
                |name| tags.contains(name),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// The version `label` names for `history` at the tip.
    fn labelled_version<'r>(
        &'r self,
        repository: &Path,
        history: &'r PersonaHistory,
        label: &str,
    ) -> anyhow::Result<&'r Version> {
        let tags = tag_names(repository)?;
        let position = self.tip_position();
        if !self.defines_label(label, position) {
            anyhow::bail!("the registry has no label {label:?} (registry/labels.toml)");
        }
        let (resolved, _) = self.labels_resolved_at(position, &tags);
        let number = resolved
            .iter()
            .find(|entry| entry.label == label && entry.persona_id == history.id)
            .map(|entry| entry.version)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "label {label:?} does not point at any version of {}",
                    history.latest_slug().unwrap_or_default()
                )
            })?;
        history
            .versions
            .get(number as usize - 1)
            .ok_or_else(|| anyhow::anyhow!("label {label:?} names version {number}, which this history lacks"))
    }

    /// The experiment as it stood at `position`, with the change that made it so.
    pub fn experiment_at(&self, name: &str, position: usize) -> Option<&ExperimentChange> {
        self.experiment_changes
            .get(name)?
            .iter()
            .rev()
            .find(|change| change.position <= position)
            .filter(|change| change.experiment.is_some())
    }

    /// The persona a slug (current or former) or id names. A slug can have
    /// named different personas over time; the one that bears it now wins.
    pub fn find(&self, name: &str) -> anyhow::Result<&PersonaHistory> {
        let known: Vec<&PersonaHistory> = self
            .sorted()
            .into_iter()
            .filter(|history| history.is_known_as(name))
            .collect();
        let current: Vec<&PersonaHistory> = known
            .iter()
            .copied()
            .filter(|history| history.latest_slug() == Some(name) || history.id.to_string() == name.to_lowercase())
            .collect();
        match (known.as_slice(), current.as_slice()) {
            ([], _) => anyhow::bail!("no persona with slug or id {name:?} in this history"),
            ([only], _) | (_, [only]) => Ok(only),
            (several, _) => {
                let ids: Vec<String> = several.iter().map(|history| history.id.to_string()).collect();
                anyhow::bail!(
                    "{name:?} was the slug of several personas ({}); name one by its id",
                    ids.join(", ")
                )
            }
        }
    }

    /// The prompt template in force at `commit` (one of the walked commits).
    /// A commit older than the first template gets that first one (as the
    /// projection does): it is as fixed as the one in force.
    pub fn prompt_template_at(&self, commit: &str) -> Option<&TemplateChange> {
        let position = *self.commit_positions.get(commit)?;
        match self
            .prompt_templates
            .iter()
            .rev()
            .find(|change| change.position <= position)
        {
            Some(change) => Some(change).filter(|change| change.source.is_some()),
            None => self.prompt_templates.iter().find(|change| change.source.is_some()),
        }
    }

    /// The prompt template at the tip.
    pub fn current_prompt_template(&self) -> Option<&TemplateChange> {
        self.prompt_templates.last().filter(|change| change.source.is_some())
    }

    /// Names of the experiments that exist at the tip.
    pub fn experiment_names(&self) -> Vec<&str> {
        let tip = self.tip_position();
        self.experiment_changes
            .keys()
            .filter(|name| self.experiment_at(name, tip).is_some())
            .map(String::as_str)
            .collect()
    }

    /// Histories sorted by their latest slug, for stable output.
    pub fn sorted(&self) -> Vec<&PersonaHistory> {
        let mut histories: Vec<&PersonaHistory> = self.personas.values().collect();
        histories.sort_by(|a, b| (a.latest_slug(), a.id).cmp(&(b.latest_slug(), b.id)));
        histories
    }
}

/// The repository's tag names.
pub fn tag_names(repository: &Path) -> Result<std::collections::BTreeSet<String>, GitError> {
    Ok(commit_tags(&open_repository(repository)?)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

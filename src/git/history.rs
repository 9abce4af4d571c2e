//! Git history → persona revisions.
//!
//! Walks the first-parent history of a branch, oldest first, and for each
//! commit compares `registry/` with the parent's, yielding what happened to
//! each persona. Only files whose blob changed are parsed again, so a long
//! history of a large registry costs about one tree listing per commit.

use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use gix::ObjectId;
use serde::Serialize;

use super::tree_delta::{IndexedTree, NotRegular};
use super::{GitError, resolve_commit};
use crate::persona::experiment::{EXPERIMENTS_DIR, Experiment, ParsedExperiment, validate_experiment};
use crate::persona::labels::{LABELS_FILE, LabelsFile, parse_labels};
use crate::persona::profile::{ParsedProfile, Profile, validate_profile};
use crate::persona::prompt::{PROMPT_FILE, PromptTemplate};
use crate::persona::settings::{RegistrySettings, SETTINGS_FILE, parse_settings};
use crate::persona::snapshot::{PERSONAS_DIR, PROFILES_DIR, duplicate_diagnostics};
use crate::persona::{
    Code, ContentHash, Diagnostic, FileReading, ParsedPersona, Persona, PersonaId, content_hash, validate_persona,
};

/// The directory of the repository that holds the registry.
pub const REGISTRY_DIR: &str = "registry";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// Full hex object id.
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    pub authored_at: DateTime<FixedOffset>,
    pub committed_at: DateTime<FixedOffset>,
    pub message: String,
}

impl CommitInfo {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(7)]
    }

    /// The first line of the message.
    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("").trim()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Renamed,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Renamed => "renamed",
            ChangeKind::Deleted => "deleted",
        }
    }
}

/// A new version of one persona.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonaChange {
    pub persona_id: PersonaId,
    pub kind: ChangeKind,
    /// The file now holding the persona (for a deletion: the file it was in).
    pub path: String,
    /// For a rename: the file it moved from.
    pub previous_path: Option<String>,
    /// The new content; `None` for a deletion. Behind an `Arc` so that
    /// whoever keeps it (a replay's versions) takes it without a copy.
    pub persona: Option<Arc<Persona>>,
    pub content_hash: Option<ContentHash>,
    /// The version this change replaces, if the persona existed before.
    pub previous: Option<PreviousVersion>,
}

/// What the walk remembers of the version a change replaces: what files and
/// names it. The content itself is not kept between commits; at 10,000
/// personas a parsed copy of each was most of a following server's memory.
/// Whoever needs the old content has it already (a replay keeps every
/// version; the projection has each in PostgreSQL).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviousVersion {
    pub slug: String,
    pub name: String,
    pub content_hash: ContentHash,
}

/// A registry file that is invalid at this commit. The persona it belongs to
/// (when its id could be read, or the file held one before) keeps its last
/// valid version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileProblem {
    pub path: String,
    pub persona_id: Option<PersonaId>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Everything one commit did to the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommitRecord {
    pub commit: CommitInfo,
    pub changes: Vec<PersonaChange>,
    /// Invalid files among those this commit re-checked.
    pub problems: Vec<FileProblem>,
    /// Every registry file this commit re-checked: earlier problems recorded
    /// for these paths are superseded by `problems`.
    pub checked_paths: Vec<String>,
    /// The registry settings, when this commit changed them.
    pub settings: Option<RegistrySettings>,
    /// Profiles this commit added or changed (`Some`) or removed (`None`), by slug.
    pub profiles: BTreeMap<String, Option<Profile>>,
    /// The prompt template's source, when this commit changed it to a valid
    /// template (`Some(Some)`) or removed it (`Some(None)`). An invalid
    /// template is a problem and leaves the one in force unchanged.
    pub prompt_template: Option<Option<String>>,
    /// The labels file, when this commit changed it to a well-formed one
    /// (`Some(Some)`) or removed it (`Some(None)`). A malformed file is a
    /// problem and leaves the labels in force unchanged.
    pub labels: Option<Option<LabelsFile>>,
    /// Experiments this commit added or changed (`Some`) or removed (`None`),
    /// by name. A malformed file is a problem and leaves the experiment as it was.
    pub experiments: BTreeMap<String, Option<Experiment>>,
}

/// Where the walk starts and what it follows.
#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Branch, tag or any revision naming the tip.
    pub tip: String,
    /// Yield only commits after this one (it must be on the tip's first-parent
    /// history). `None` starts at the root commit.
    pub after: Option<String>,
}

/// A persona's current content as recorded elsewhere, used to resume a walk
/// (see [`HistoryWalk::restore_current`]).
#[derive(Debug, Clone)]
pub struct KnownVersion {
    pub persona_id: PersonaId,
    pub path: String,
    pub persona: Persona,
}

/// Changed files in one commit from which validating them in parallel
/// pays for handing them to other threads.
const PARALLEL_FROM: usize = 32;

/// Files read and validated together in a big commit: enough to keep every
/// core busy, few enough that their text and parse trees stay small.
const READ_CHUNK: usize = 512;

/// Whether a commit's record carries the new personas (a walk's commits) or
/// only the state is wanted (priming at the resume point, whose record is
/// dropped: holding every persona of the registry at once was its peak).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Content {
    Kept,
    Dropped,
}

/// One registry file as of the last commit processed. The state is kept
/// between syncs (the resume cache), so it holds what the next commit is
/// decided by (the id, the slug, the problems, the content hash, and the
/// name a deletion is announced with) and not the persona: a file whose
/// content is needed again is read again from its blob.
pub(super) struct TrackedFile {
    pub(super) reading: FileReading,
    pub(super) blob: Option<ObjectId>,
    pub(super) valid: Option<ValidFile>,
}

/// What a valid file's persona is known by between commits.
pub(super) struct ValidFile {
    pub(super) hash: ContentHash,
    pub(super) slug: Arc<str>,
    pub(super) name: Arc<str>,
}

/// Readings of persona files an earlier process saved (see
/// [`super::readings`]): a walk priming itself takes a file's reading from
/// here instead of reading and validating its blob again, when the path, the
/// blob and the registry's settings are the same.
pub struct KnownReadings {
    pub(super) settings: RegistrySettings,
    pub(super) files: HashMap<String, TrackedFile>,
}

/// The reading of a persona path that is not a regular file: one problem, at its start.
fn not_a_file(path: &str, kind: NotRegular) -> ParsedPersona {
    ParsedPersona {
        file: path.to_string(),
        persona: None,
        id: None,
        id_location: (1, 1),
        slug: None,
        slug_location: (1, 1),
        diagnostics: vec![Diagnostic {
            path: None,
            file: path.to_string(),
            line: 1,
            column: 1,
            code: Code::NotAFile,
            message: format!(
                "{path} is {} in git, not a regular file; a persona must be the file itself (commit its text, \
                 not a link to it)",
                kind.describe()
            ),
        }],
    }
}

impl TrackedFile {
    /// The tracked file and, for a valid one, the persona it holds.
    fn new(parsed: ParsedPersona, blob: Option<ObjectId>) -> (TrackedFile, Option<Persona>) {
        let (reading, persona) = parsed.split();
        let valid = persona.as_ref().map(|persona| ValidFile {
            hash: content_hash(persona),
            slug: persona.slug.as_str().into(),
            name: persona.name.as_str().into(),
        });
        (TrackedFile { reading, blob, valid }, persona)
    }
}

/// The last valid version of a live persona. Its path, slug and name are
/// shared with the tracked file they were read from (one allocation each for
/// the whole state, which a server keeps for good).
struct Current {
    path: Arc<str>,
    slug: Arc<str>,
    name: Arc<str>,
    hash: ContentHash,
}

impl Current {
    fn of(path: Arc<str>, file: &ValidFile) -> Current {
        Current {
            path,
            slug: Arc::clone(&file.slug),
            name: Arc::clone(&file.name),
            hash: file.hash,
        }
    }

    fn as_previous(&self) -> PreviousVersion {
        PreviousVersion {
            slug: self.slug.to_string(),
            name: self.name.to_string(),
            content_hash: self.hash,
        }
    }
}

/// The registry as of the last processed commit.
struct RegistryState {
    registry_tree: Option<ObjectId>,
    personas_tree: IndexedTree,
    settings_blob: Option<ObjectId>,
    settings: RegistrySettings,
    files: BTreeMap<Arc<str>, TrackedFile>,
    /// The files claiming each readable id, in path order. Kept beside
    /// `files` (and `current_at` beside `current`) so that a commit costs
    /// what it touched, not a scan of the whole registry. A sorted `Vec`, not
    /// a `BTreeSet`: nearly every id has one claimant, and a set's first node
    /// is about 280 bytes, 2.8 MiB of a server's memory at 10,000 personas.
    claims: HashMap<PersonaId, Vec<Arc<str>>>,
    profile_blobs: BTreeMap<String, ObjectId>,
    prompt_blob: Option<ObjectId>,
    labels_blob: Option<ObjectId>,
    experiment_blobs: BTreeMap<String, ObjectId>,
    current: HashMap<PersonaId, Current>,
    current_at: HashMap<Arc<str>, PersonaId>,
}

impl RegistryState {
    fn empty() -> Self {
        RegistryState {
            registry_tree: None,
            personas_tree: IndexedTree::default(),
            settings_blob: None,
            settings: RegistrySettings::permissive(),
            files: BTreeMap::new(),
            claims: HashMap::new(),
            profile_blobs: BTreeMap::new(),
            prompt_blob: None,
            labels_blob: None,
            experiment_blobs: BTreeMap::new(),
            current: HashMap::new(),
            current_at: HashMap::new(),
        }
    }

    fn insert_file(&mut self, path: Arc<str>, file: TrackedFile) {
        self.remove_file(&path);
        if let Some(id) = file.reading.id {
            let paths = self.claims.entry(id).or_default();
            if let Err(position) = paths.binary_search(&path) {
                paths.insert(position, Arc::clone(&path));
            }
        }
        self.files.insert(path, file);
    }

    fn remove_file(&mut self, path: &str) {
        let Some(file) = self.files.remove(path) else { return };
        if let Some(id) = file.reading.id
            && let Some(paths) = self.claims.get_mut(&id)
        {
            paths.retain(|claimant| &**claimant != path);
            if paths.is_empty() {
                self.claims.remove(&id);
            }
        }
    }

    /// Sets (or with `None` clears) a persona's current version.
    fn set_current(&mut self, id: PersonaId, current: Option<Current>) {
        if let Some(old) = self.current.remove(&id)
            && self.current_at.get(&old.path) == Some(&id)
        {
            // Another persona may already have moved into this path in the same commit.
            self.current_at.remove(&old.path);
        }
        if let Some(current) = current {
            self.current_at.insert(Arc::clone(&current.path), id);
            self.current.insert(id, current);
        }
    }
}

/// The listing of `registry/` at one commit. The personas directory is
/// only named here; it is compared with the previous one entry by entry.
#[derive(Default)]
struct RegistryListing {
    tree: Option<ObjectId>,
    settings: Option<ObjectId>,
    personas_tree: Option<ObjectId>,
    profiles: BTreeMap<String, ObjectId>,
    prompt: Option<ObjectId>,
    labels: Option<ObjectId>,
    experiments: BTreeMap<String, ObjectId>,
}

/// Persona files that differ between two commits' `registry/personas` trees.
#[derive(Default)]
struct PersonasDelta {
    /// Added or changed files (every file, when all must be re-read), with their blobs.
    changed: BTreeMap<String, ObjectId>,
    removed: Vec<String>,
    /// Those of `changed` that are links or submodules: refused, not read.
    not_regular: BTreeMap<String, NotRegular>,
}

/// An iterator over the commit records of a branch's first-parent history.
pub struct HistoryWalk {
    repository: gix::Repository,
    /// Readings saved by an earlier process, for priming; dropped after it.
    known: Option<KnownReadings>,
    /// Where the walk starts: its state is the registry as of this commit.
    after: Option<ObjectId>,
    commits: Vec<ObjectId>,
    next: usize,
    state: RegistryState,
}

/// The registry as a finished walk left it at `commit`, kept so that the
/// next walk from there (the next sync of a followed branch) does not read
/// and validate every file at `commit` again.
pub struct ResumePoint {
    pub commit: ObjectId,
    state: RegistryState,
}

impl ResumePoint {
    /// The registry's settings at the commit, and every persona file's reading.
    pub(super) fn readings(&self) -> (&RegistrySettings, impl Iterator<Item = (&str, &TrackedFile)>) {
        let files = self.state.files.iter().map(|(path, file)| (&**path, file));
        (&self.state.settings, files)
    }
}

impl HistoryWalk {
    pub fn new(repository: gix::Repository, options: &WalkOptions) -> Result<Self, GitError> {
        HistoryWalk::new_with_known(repository, options, None)
    }

    /// [`HistoryWalk::new`], priming from `known` readings where they still hold.
    pub fn new_with_known(
        repository: gix::Repository,
        options: &WalkOptions,
        known: Option<KnownReadings>,
    ) -> Result<Self, GitError> {
        let tip = resolve_commit(&repository, &options.tip)?;
        let after = options
            .after
            .as_deref()
            .map(|revision| resolve_commit(&repository, revision))
            .transpose()?;
        let commits = first_parent_chain(&repository, tip, after)?;
        let mut walk = HistoryWalk {
            repository,
            known,
            after,
            commits,
            next: 0,
            state: RegistryState::empty(),
        };
        if let Some(after) = after {
            // Prime the state with the registry as it stood, yielding nothing for it.
            walk.process(after, Content::Dropped)?;
        }
        Ok(walk)
    }

    /// A walk from `point` to `tip` that starts from the state a previous
    /// walk finished with, instead of reading the registry at `point.commit`.
    pub fn resume(repository: gix::Repository, tip: &str, point: ResumePoint) -> Result<Self, GitError> {
        let tip = resolve_commit(&repository, tip)?;
        let commits = first_parent_chain(&repository, tip, Some(point.commit))?;
        Ok(HistoryWalk {
            repository,
            known: None,
            after: Some(point.commit),
            commits,
            next: 0,
            state: point.state,
        })
    }

    /// The state at the last commit, once every commit has been walked
    /// (`None` for a walk stopped early: its state is of no commit in particular).
    pub fn finish(self) -> Option<ResumePoint> {
        if self.next < self.commits.len() {
            return None;
        }
        let commit = self.commits.last().copied().or(self.after)?;
        Some(ResumePoint {
            commit,
            state: self.state,
        })
    }

    /// The content hash of each persona's current version as the walk sees it.
    /// After resuming at a commit, a persona whose file was broken there has
    /// no current version here; compare with the projection's record and
    /// hand the differences to [`HistoryWalk::restore_current`].
    pub fn current_hashes(&self) -> HashMap<PersonaId, ContentHash> {
        self.state
            .current
            .iter()
            .map(|(id, current)| (*id, current.hash))
            .collect()
    }

    /// Replaces the walk's current versions of `known` and drops those of
    /// `gone`, so later commits compare against what was recorded before the
    /// resume point, exactly as an uninterrupted walk would.
    pub fn restore_current(&mut self, known: Vec<KnownVersion>, gone: &[PersonaId]) {
        for id in gone {
            self.state.set_current(*id, None);
        }
        for known in known {
            let current = Current {
                path: known.path.into(),
                slug: known.persona.slug.as_str().into(),
                hash: content_hash(&known.persona),
                name: known.persona.name.as_str().into(),
            };
            self.state.set_current(known.persona_id, Some(current));
        }
    }

    /// Number of commits this walk yields in total.
    pub fn len(&self) -> usize {
        self.commits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
    }

    fn object_error(object: impl ToString, error: impl ToString) -> GitError {
        GitError::Object {
            object: object.to_string(),
            message: error.to_string(),
        }
    }

    fn blob(&self, id: ObjectId) -> Result<Vec<u8>, GitError> {
        let object = self
            .repository
            .find_object(id)
            .map_err(|error| Self::object_error(id, error))?;
        Ok(object.detach().data)
    }

    fn tree_entries(&self, id: ObjectId) -> Result<Vec<(String, ObjectId, bool)>, GitError> {
        let tree = self
            .repository
            .find_tree(id)
            .map_err(|error| Self::object_error(id, error))?;
        let decoded = tree.decode().map_err(|error| Self::object_error(id, error))?;
        Ok(decoded
            .entries
            .iter()
            .map(|entry| (entry.filename.to_string(), entry.oid.to_owned(), entry.mode.is_tree()))
            .collect())
    }

    fn listing(&self, commit: &gix::Commit<'_>) -> Result<RegistryListing, GitError> {
        let root = commit.tree_id().map_err(|error| Self::object_error(commit.id, error))?;
        let registry = self
            .tree_entries(root.detach())?
            .into_iter()
            .find(|(name, _, is_tree)| name == REGISTRY_DIR && *is_tree);
        let Some((_, registry_tree, _)) = registry else {
            return Ok(RegistryListing::default());
        };
        let mut listing = RegistryListing {
            tree: Some(registry_tree),
            ..RegistryListing::default()
        };
        if self.state.registry_tree == Some(registry_tree) {
            return Ok(listing);
        }
        for (name, id, is_tree) in self.tree_entries(registry_tree)? {
            match (name.as_str(), is_tree) {
                (SETTINGS_FILE, false) => listing.settings = Some(id),
                (PROMPT_FILE, false) => listing.prompt = Some(id),
                (LABELS_FILE, false) => listing.labels = Some(id),
                (EXPERIMENTS_DIR, true) => {
                    listing.experiments = self.toml_files(id, &format!("{REGISTRY_DIR}/{EXPERIMENTS_DIR}"))?
                }
                (PERSONAS_DIR, true) => listing.personas_tree = Some(id),
                (PROFILES_DIR, true) => {
                    listing.profiles = self.toml_files(id, &format!("{REGISTRY_DIR}/{PROFILES_DIR}"))?
                }
                _ => {}
            }
        }
        Ok(listing)
    }

    fn toml_files(&self, tree: ObjectId, prefix: &str) -> Result<BTreeMap<String, ObjectId>, GitError> {
        Ok(self
            .tree_entries(tree)?
            .into_iter()
            .filter(|(name, _, is_tree)| !is_tree && name.ends_with(".toml"))
            .map(|(name, id, _)| (format!("{prefix}/{name}"), id))
            .collect())
    }

    /// The personas files that differ from the previous commit's tree;
    /// with `everything`, all files (new settings mean re-checking them all).
    fn personas_delta(
        &self,
        new: Option<ObjectId>,
        everything: bool,
    ) -> Result<(PersonasDelta, Option<IndexedTree>), GitError> {
        let old = &self.state.personas_tree;
        if new == old.id && !everything {
            // Unchanged: the tree already held stays (`None`), nothing is copied.
            return Ok((PersonasDelta::default(), None));
        }
        let corrupt = |error: String| Self::object_error(new.map(|id| id.to_string()).unwrap_or_default(), error);
        let data = match new {
            Some(_) if new == old.id => old.data().to_vec(),
            Some(id) => {
                self.repository
                    .find_tree(id)
                    .map_err(|e| Self::object_error(id, e))?
                    .detach()
                    .data
            }
            None => Vec::new(),
        };
        let hash_len = self.repository.object_hash().len_in_bytes();
        let (tree, delta) = old.successor(new, data, everything, hash_len).map_err(corrupt)?;
        let path_of = |name: &[u8]| format!("{REGISTRY_DIR}/{PERSONAS_DIR}/{}", String::from_utf8_lossy(name));
        let owned = PersonasDelta {
            changed: delta
                .changed
                .iter()
                .map(|(name, blob)| (path_of(name), *blob))
                .collect(),
            removed: delta.removed.iter().map(|name| path_of(name)).collect(),
            not_regular: delta
                .not_regular
                .iter()
                .map(|(name, kind)| (path_of(name), *kind))
                .collect(),
        };
        Ok((owned, Some(tree)))
    }

    fn commit_info(commit: &gix::Commit<'_>) -> Result<CommitInfo, GitError> {
        let author = commit.author().map_err(|e| Self::object_error(commit.id, e))?;
        let authored = author.time().map_err(|e| Self::object_error(commit.id, e))?;
        let committed = commit.time().map_err(|e| Self::object_error(commit.id, e))?;
        let message = commit.message_raw().map_err(|e| Self::object_error(commit.id, e))?;
        Ok(CommitInfo {
            id: commit.id.to_string(),
            author_name: author.name.to_string().trim().to_string(),
            author_email: author.email.to_string().trim().to_string(),
            authored_at: to_datetime(authored),
            committed_at: to_datetime(committed),
            message: message.to_string().trim_end().to_string(),
        })
    }

    /// Applies one commit to the state and describes what changed; with
    /// [`Content::Dropped`], only the state (the record has no changes).
    fn process(&mut self, id: ObjectId, content: Content) -> Result<CommitRecord, GitError> {
        let commit = self
            .repository
            .find_commit(id)
            .map_err(|error| Self::object_error(id, error))?;
        let info = Self::commit_info(&commit)?;
        let listing = self.listing(&commit)?;
        drop(commit);
        let mut record = CommitRecord {
            commit: info,
            changes: Vec::new(),
            problems: Vec::new(),
            checked_paths: Vec::new(),
            settings: None,
            profiles: BTreeMap::new(),
            prompt_template: None,
            labels: None,
            experiments: BTreeMap::new(),
        };
        if listing.tree == self.state.registry_tree && listing.tree.is_some() {
            return Ok(record);
        }
        self.state.registry_tree = listing.tree;

        // Settings first: they are the rules every persona is checked against.
        let mut settings_problem = None;
        let settings_changed = listing.settings != self.state.settings_blob;
        if settings_changed {
            let path = format!("{REGISTRY_DIR}/{SETTINGS_FILE}");
            self.state.settings = match listing.settings {
                Some(blob) => {
                    let (settings, diagnostics) = parse_settings(&path, &self.blob(blob)?);
                    if !diagnostics.is_empty() {
                        settings_problem = Some(FileProblem {
                            path: path.clone(),
                            persona_id: None,
                            diagnostics,
                        });
                    }
                    settings
                }
                None => RegistrySettings::permissive(),
            };
            self.state.settings_blob = listing.settings;
            record.settings = Some(self.state.settings.clone());
            record.checked_paths.push(path);
        }

        self.update_profiles(&listing, &mut record)?;
        self.update_prompt_template(&listing, &mut record)?;
        self.update_labels(&listing, &mut record)?;
        self.update_experiments(&listing, &mut record)?;

        // Which persona files need reading again.
        let (
            PersonasDelta {
                changed,
                removed,
                not_regular,
            },
            personas_tree,
        ) = self.personas_delta(listing.personas_tree, settings_changed)?;
        if let Some(tree) = personas_tree {
            self.state.personas_tree = tree;
        }
        let checked: BTreeSet<String> = changed.keys().cloned().collect();

        // Ids whose fate this commit may change: those of files read or removed, before and after.
        let mut affected: BTreeSet<PersonaId> = BTreeSet::new();
        for path in checked.iter().chain(&removed) {
            if let Some(id) = self.state.files.get(path.as_str()).and_then(|file| file.reading.id) {
                affected.insert(id);
            }
            if let Some(id) = self.state.current_at.get(path.as_str()) {
                affected.insert(*id);
            }
        }
        for path in &removed {
            self.state.remove_file(path);
        }
        // Blobs are read in order (the object store is one handle); parsing,
        // validating and hashing them is independent per file, so a big
        // commit spreads it over every core. A chunk at a time, so that
        // reading a whole registry (priming, new settings) never holds every
        // file's text at once.
        let mut fresh: HashMap<String, Persona> = HashMap::new();
        // Saved readings serve only the priming (which keeps no persona),
        // and only under the settings they were made with.
        let mut known = match content {
            Content::Dropped => self.known.take().filter(|known| known.settings == self.state.settings),
            Content::Kept => None,
        };
        let paths: Vec<&String> = checked.iter().collect();
        for chunk in paths.chunks(READ_CHUNK) {
            let mut read = Vec::with_capacity(chunk.len());
            for &path in chunk {
                // A link's object is its target's name, a submodule's a commit of
                // another repository: neither is the file's text.
                let bytes = match not_regular.get(path) {
                    Some(_) => None,
                    None => {
                        let saved = known.as_mut().and_then(|known| known.files.remove(path.as_str()));
                        if let Some(file) = saved.filter(|file| file.blob == Some(changed[path])) {
                            if let Some(id) = file.reading.id {
                                affected.insert(id);
                            }
                            self.state.insert_file(path.as_str().into(), file);
                            continue;
                        }
                        Some(self.blob(changed[path])?)
                    }
                };
                read.push((path, bytes));
            }
            let settings = &self.state.settings;
            let validate = |(path, bytes): &(&String, Option<Vec<u8>>)| {
                let (file, persona) = match bytes {
                    Some(bytes) => TrackedFile::new(
                        validate_persona(path, bytes, stem_of(path), settings),
                        Some(changed[*path]),
                    ),
                    None => TrackedFile::new(not_a_file(path, not_regular[*path]), None),
                };
                (file, persona.filter(|_| content == Content::Kept))
            };
            let tracked: Vec<(TrackedFile, Option<Persona>)> = if read.len() >= PARALLEL_FROM {
                read.par_iter().map(validate).collect()
            } else {
                read.iter().map(validate).collect()
            };
            for ((path, _), (file, persona)) in read.into_iter().zip(tracked) {
                if let Some(id) = file.reading.id {
                    affected.insert(id);
                }
                // The personas read this commit, by path, until the decisions below take them.
                if let Some(persona) = persona {
                    fresh.insert(path.clone(), persona);
                }
                self.state.insert_file(path.as_str().into(), file);
            }
        }

        // Decide each affected persona's fate from the files now claiming its id.
        let mut problems: BTreeMap<String, FileProblem> = BTreeMap::new();
        let mut next_current: Vec<(PersonaId, Option<Current>)> = Vec::new();
        for id in &affected {
            let state = &self.state;
            let claimants: Vec<(&Arc<str>, &TrackedFile)> = state
                .claims
                .get(id)
                .into_iter()
                .flatten()
                .map(|path| (path, &state.files[path]))
                .collect();
            let previous = state.current.get(id);
            match claimants.as_slice() {
                [] => {
                    // A file whose id can no longer be read is broken, not gone:
                    // the persona keeps its last valid version.
                    let broken_in_place = previous
                        .and_then(|previous| state.files.get(&previous.path))
                        .is_some_and(|file| file.reading.id.is_none());
                    if let Some(previous) = previous.filter(|_| !broken_in_place) {
                        record.changes.push(PersonaChange {
                            persona_id: *id,
                            kind: ChangeKind::Deleted,
                            path: previous.path.to_string(),
                            previous_path: None,
                            persona: None,
                            content_hash: None,
                            previous: Some(previous.as_previous()),
                        });
                        next_current.push((*id, None));
                    }
                }
                &[(path, file)] => match &file.valid {
                    Some(valid) => {
                        let hash = valid.hash;
                        if previous.is_some_and(|previous| previous.hash == hash) {
                            continue;
                        }
                        let current = Current::of(Arc::clone(path), valid);
                        if content == Content::Dropped {
                            next_current.push((*id, Some(current)));
                            continue;
                        }
                        // A file this commit did not touch can still become its
                        // persona's version (the other claimant of its id went away).
                        let persona = match fresh.remove(&**path) {
                            Some(persona) => persona,
                            None => self.reread(file)?,
                        };
                        let persona = Arc::new(persona);
                        let kind = match previous {
                            None => ChangeKind::Added,
                            Some(previous) if previous.path != *path => ChangeKind::Renamed,
                            Some(_) => ChangeKind::Modified,
                        };
                        record.changes.push(PersonaChange {
                            persona_id: *id,
                            kind,
                            path: path.to_string(),
                            previous_path: previous.filter(|p| p.path != *path).map(|p| p.path.to_string()),
                            persona: Some(persona),
                            content_hash: Some(hash),
                            previous: previous.map(Current::as_previous),
                        });
                        next_current.push((*id, Some(current)));
                    }
                    None => {
                        problems.insert(
                            file.reading.file.clone(),
                            FileProblem {
                                path: file.reading.file.clone(),
                                persona_id: Some(*id),
                                diagnostics: file.reading.diagnostics.clone(),
                            },
                        );
                    }
                },
                several => {
                    // Nobody wins a clash: every claimant is an error, the persona stays as it was.
                    for diagnostic in duplicate_diagnostics(several.iter().map(|(_, file)| &file.reading)) {
                        let file = several
                            .iter()
                            .map(|(_, file)| file)
                            .find(|file| file.reading.file == diagnostic.file);
                        let entry = problems.entry(diagnostic.file.clone()).or_insert_with(|| FileProblem {
                            path: diagnostic.file.clone(),
                            persona_id: Some(*id),
                            diagnostics: file.map(|f| f.reading.diagnostics.clone()).unwrap_or_default(),
                        });
                        entry.diagnostics.push(diagnostic);
                    }
                }
            }
        }
        // Files read this commit whose id is unreadable still need reporting.
        for path in &checked {
            let file = &self.state.files[path.as_str()];
            if file.reading.id.is_none() {
                let persona_id = self.state.current_at.get(path.as_str()).copied();
                problems.insert(
                    path.clone(),
                    FileProblem {
                        path: path.clone(),
                        persona_id,
                        diagnostics: file.reading.diagnostics.clone(),
                    },
                );
            }
        }
        for (id, current) in next_current {
            self.state.set_current(id, current);
        }
        record.changes.sort_by(|a, b| a.path.cmp(&b.path));
        record.problems.extend(settings_problem);
        record.problems.extend(problems.into_values());
        record.checked_paths.extend(checked);
        record.checked_paths.extend(removed);
        record.checked_paths.sort();
        Ok(record)
    }

    /// A valid file's persona, read again from its blob (the state keeps
    /// only its hash). The settings are those it was validated against, since
    /// new settings re-read every file, so the reading is the one it had.
    fn reread(&self, file: &TrackedFile) -> Result<Persona, GitError> {
        let path = &file.reading.file;
        let blob = file
            .blob
            .ok_or_else(|| Self::object_error(path, "a valid persona file without a blob"))?;
        let bytes = self.blob(blob)?;
        validate_persona(path, &bytes, stem_of(path), &self.state.settings)
            .persona
            .ok_or_else(|| Self::object_error(blob, format!("{path} no longer reads as the valid file it was")))
    }

    fn update_prompt_template(&mut self, listing: &RegistryListing, record: &mut CommitRecord) -> Result<(), GitError> {
        if listing.prompt == self.state.prompt_blob {
            return Ok(());
        }
        self.state.prompt_blob = listing.prompt;
        let path = format!("{REGISTRY_DIR}/{PROMPT_FILE}");
        record.checked_paths.push(path.clone());
        let Some(blob) = listing.prompt else {
            record.prompt_template = Some(None);
            return Ok(());
        };
        let bytes = self.blob(blob)?;
        let parsed = match String::from_utf8(bytes) {
            Ok(source) => PromptTemplate::parse(&path, &source).map(|_| source),
            Err(_) => Err(Diagnostic {
                path: None,
                file: path.clone(),
                line: 1,
                column: 1,
                code: Code::NotUtf8,
                message: "the template is not UTF-8 text".to_string(),
            }),
        };
        match parsed {
            Ok(source) => record.prompt_template = Some(Some(source)),
            Err(diagnostic) => record.problems.push(FileProblem {
                path,
                persona_id: None,
                diagnostics: vec![diagnostic],
            }),
        }
        Ok(())
    }

    fn update_labels(&mut self, listing: &RegistryListing, record: &mut CommitRecord) -> Result<(), GitError> {
        if listing.labels == self.state.labels_blob {
            return Ok(());
        }
        self.state.labels_blob = listing.labels;
        let path = format!("{REGISTRY_DIR}/{LABELS_FILE}");
        record.checked_paths.push(path.clone());
        let Some(blob) = listing.labels else {
            record.labels = Some(None);
            return Ok(());
        };
        match parse_labels(&path, &self.blob(blob)?) {
            (Some(labels), _) => record.labels = Some(Some(labels)),
            (None, diagnostics) => record.problems.push(FileProblem {
                path,
                persona_id: None,
                diagnostics,
            }),
        }
        Ok(())
    }

    /// Experiments are checked on their own here; whether their pins resolve
    /// is decided where versions are known (the projection, `check`).
    fn update_experiments(&mut self, listing: &RegistryListing, record: &mut CommitRecord) -> Result<(), GitError> {
        let settings_changed = record.settings.is_some();
        let removed: Vec<String> = self
            .state
            .experiment_blobs
            .keys()
            .filter(|path| !listing.experiments.contains_key(*path))
            .cloned()
            .collect();
        for path in removed {
            self.state.experiment_blobs.remove(&path);
            record.experiments.insert(stem_of(&path).to_string(), None);
            record.checked_paths.push(path);
        }
        for (path, blob) in &listing.experiments {
            if !settings_changed && self.state.experiment_blobs.get(path) == Some(blob) {
                continue;
            }
            self.state.experiment_blobs.insert(path.clone(), *blob);
            record.checked_paths.push(path.clone());
            let bytes = self.blob(*blob)?;
            let ParsedExperiment {
                experiment,
                diagnostics,
            } = validate_experiment(path, &bytes, stem_of(path), &self.state.settings);
            match experiment {
                Some(experiment) => {
                    record.experiments.insert(experiment.name.clone(), Some(experiment));
                }
                None => record.problems.push(FileProblem {
                    path: path.clone(),
                    persona_id: None,
                    diagnostics,
                }),
            }
        }
        Ok(())
    }

    fn update_profiles(&mut self, listing: &RegistryListing, record: &mut CommitRecord) -> Result<(), GitError> {
        let settings_changed = record.settings.is_some();
        let removed: Vec<String> = self
            .state
            .profile_blobs
            .keys()
            .filter(|path| !listing.profiles.contains_key(*path))
            .cloned()
            .collect();
        for path in removed {
            self.state.profile_blobs.remove(&path);
            record.profiles.insert(stem_of(&path).to_string(), None);
            record.checked_paths.push(path);
        }
        for (path, blob) in &listing.profiles {
            if !settings_changed && self.state.profile_blobs.get(path) == Some(blob) {
                continue;
            }
            let bytes = self.blob(*blob)?;
            let ParsedProfile {
                profile, diagnostics, ..
            } = validate_profile(path, &bytes, stem_of(path), &self.state.settings);
            if !diagnostics.is_empty() {
                record.problems.push(FileProblem {
                    path: path.clone(),
                    persona_id: None,
                    diagnostics,
                });
            }
            record.profiles.insert(stem_of(path).to_string(), profile);
            record.checked_paths.push(path.clone());
            self.state.profile_blobs.insert(path.clone(), *blob);
        }
        Ok(())
    }
}

impl Iterator for HistoryWalk {
    type Item = Result<CommitRecord, GitError>;

    fn next(&mut self) -> Option<Self::Item> {
        let id = *self.commits.get(self.next)?;
        self.next += 1;
        Some(self.process(id, Content::Kept))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.commits.len() - self.next;
        (left, Some(left))
    }
}

/// The file name without directory and `.toml`.
fn stem_of(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".toml").unwrap_or(name)
}

fn to_datetime(time: gix::date::Time) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(time.offset).unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    offset
        .timestamp_opt(time.seconds, 0)
        .single()
        .unwrap_or_else(|| Utc.timestamp_opt(0, 0).single().expect("epoch").fixed_offset())
}

/// Commits from the tip back along first parents, stopping before `after`
/// (or at the root); returned oldest first.
pub fn first_parent_chain(
    repository: &gix::Repository,
    tip: ObjectId,
    after: Option<ObjectId>,
) -> Result<Vec<ObjectId>, GitError> {
    let mut chain = Vec::new();
    let mut cursor = Some(tip);
    while let Some(id) = cursor {
        if Some(id) == after {
            chain.reverse();
            return Ok(chain);
        }
        chain.push(id);
        let commit = repository.find_commit(id).map_err(|error| GitError::Object {
            object: id.to_string(),
            message: error.to_string(),
        })?;
        cursor = commit.parent_ids().next().map(|parent| parent.detach());
    }
    if let Some(after) = after {
        return Err(GitError::NotAnAncestor {
            commit: after.to_string(),
            tip: tip.to_string(),
        });
    }
    chain.reverse();
    Ok(chain)
}

//! The part of `personas check` that needs history: `labels.toml` and
//! `experiments/*.toml` name versions, which only git can tell exist.
//!
//! The history is the registry repository's `HEAD`, replayed with gix, plus
//! what the working tree would add on top: a persona whose file differs from
//! its last version in `HEAD` is checked as if committed (its next version
//! number, with the working tree's content), and one whose file is gone as
//! deleted. So a pull request that adds version 4 and moves `production` to
//! it in the same commit checks clean, and one that points a label at a
//! version nobody made does not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::registry_files::{display_path, read_limited, read_up_to};
use crate::git::history::REGISTRY_DIR;
use crate::git::replay::{Replay, tag_names};
use crate::persona::experiment::{EXPERIMENTS_DIR, Experiment, Status, VariantPin, validate_experiment};
use crate::persona::labels::{
    KnownPersona, KnownVersion, LABELS_FILE, LabelTarget, LabelsFile, MAX_LABELS_FILE_BYTES, parse_labels, resolve,
    target_version,
};
use crate::persona::{Code, Diagnostic, Persona, PersonaId, Snapshot, content_hash};

/// One persona as history plus working tree know it.
struct Known {
    id: PersonaId,
    slugs: BTreeSet<String>,
    slug: String,
    /// (number, content), oldest first; content `None` for a deletion.
    versions: Vec<(u32, Option<Persona>)>,
}

impl Known {
    fn facts(&self) -> KnownPersona {
        KnownPersona {
            id: self.id,
            slug: self.slug.clone(),
            versions: self
                .versions
                .iter()
                .map(|(number, persona)| KnownVersion {
                    number: *number,
                    content_hash: persona.as_ref().map(content_hash),
                })
                .collect(),
        }
    }

    fn is_deleted(&self) -> bool {
        self.versions.last().is_some_and(|(_, persona)| persona.is_none())
    }
}

/// The registry's personas with their versions, and the tag names.
struct Universe {
    personas: Vec<Known>,
    tags: BTreeSet<String>,
}

impl Universe {
    fn find(&self, reference: &str) -> Option<&Known> {
        let reference = reference.to_lowercase();
        let named: Vec<&Known> = self
            .personas
            .iter()
            .filter(|known| known.id.to_string() == reference || known.slugs.contains(&reference))
            .collect();
        match named.as_slice() {
            [only] => Some(only),
            several => several.iter().copied().find(|known| known.slug == reference),
        }
    }
}

/// The git repository `root` is the `registry/` directory of, if any.
fn repository_of(root: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(root).ok()?;
    let top = absolute.parent()?;
    (absolute.file_name()? == REGISTRY_DIR && top.join(".git").exists()).then(|| top.to_path_buf())
}

/// Builds the universe from `HEAD` and the working tree's valid personas.
fn universe(root: &Path, snapshot: &Snapshot) -> anyhow::Result<Universe> {
    let mut personas: BTreeMap<PersonaId, Known> = BTreeMap::new();
    let mut tags = BTreeSet::new();
    match repository_of(root) {
        Some(repository) => {
            tags = tag_names(&repository)?;
            match Replay::of(&repository, "HEAD") {
                Ok(replay) => {
                    for history in replay.personas.values() {
                        let known = Known {
                            id: history.id,
                            slugs: history
                                .versions
                                .iter()
                                .filter_map(|version| version.persona.as_ref())
                                .map(|persona| persona.slug.to_string())
                                .collect(),
                            slug: history.latest_slug().unwrap_or_default().to_string(),
                            versions: history
                                .versions
                                .iter()
                                .map(|version| (version.number, version.persona.clone()))
                                .collect(),
                        };
                        personas.insert(history.id, known);
                    }
                }
                // A repository without commits yet: everything is new.
                Err(error) if error.to_string().contains("HEAD") => {}
                Err(error) => return Err(error).context("reading the registry's history for labels and experiments"),
            }
        }
        None => eprintln!(
            "note: {} is not the registry/ directory of a git repository; labels and experiments are checked \
             against the working tree alone (each persona as version 1)",
            display_path(root)
        ),
    }
    // What committing the working tree would add.
    let current: Vec<&Persona> = snapshot.valid_personas();
    let present: BTreeSet<PersonaId> = current.iter().map(|persona| persona.id).collect();
    for persona in current {
        let known = personas.entry(persona.id).or_insert_with(|| Known {
            id: persona.id,
            slugs: BTreeSet::new(),
            slug: String::new(),
            versions: Vec::new(),
        });
        known.slugs.insert(persona.slug.to_string());
        known.slug = persona.slug.to_string();
        let unchanged = known
            .versions
            .last()
            .and_then(|(_, last)| last.as_ref())
            .is_some_and(|last| content_hash(last) == content_hash(persona));
        if !unchanged {
            let number = known.versions.len() as u32 + 1;
            known.versions.push((number, Some(persona.clone())));
        }
    }
    // A file that is broken in the working tree keeps its persona (as the sync does);
    // one that is gone deletes it.
    let unreadable: BTreeSet<String> = snapshot
        .personas
        .iter()
        .filter(|parsed| parsed.persona.is_none())
        .map(|parsed| parsed.file.clone())
        .collect();
    for known in personas.values_mut() {
        let file_broken = unreadable
            .iter()
            .any(|file| file.ends_with(&format!("/{}.toml", known.slug)));
        if !present.contains(&known.id) && !known.is_deleted() && !file_broken {
            let number = known.versions.len() as u32 + 1;
            known.versions.push((number, None));
        }
    }
    Ok(Universe {
        personas: personas.into_values().collect(),
        tags,
    })
}

/// Diagnostics of `labels.toml` and the experiments, and how many files were read.
pub fn check(root: &Path, snapshot: &Snapshot) -> anyhow::Result<(Vec<Diagnostic>, usize)> {
    let labels_path = root.join(LABELS_FILE);
    let experiments_dir = root.join(EXPERIMENTS_DIR);
    let mut experiment_files: Vec<PathBuf> = Vec::new();
    if experiments_dir.is_dir() {
        for entry in
            std::fs::read_dir(&experiments_dir).with_context(|| format!("cannot list {}", experiments_dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|extension| extension == "toml") && path.is_file() {
                experiment_files.push(path);
            }
        }
    }
    experiment_files.sort();
    if !labels_path.is_file() && experiment_files.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut diagnostics = Vec::new();
    let universe = universe(root, snapshot)?;
    let settings = snapshot
        .settings
        .clone()
        .unwrap_or_else(crate::persona::RegistrySettings::permissive);

    let mut labels: Option<LabelsFile> = None;
    if labels_path.is_file() {
        let (parsed, problems) = parse_labels(
            &display_path(&labels_path),
            &read_up_to(&labels_path, MAX_LABELS_FILE_BYTES)?,
        );
        diagnostics.extend(problems);
        if let Some(file) = parsed {
            let (_, problems) = resolve(
                &file,
                |reference| universe.find(reference).map(Known::facts),
                |name| universe.tags.contains(name),
            );
            diagnostics.extend(problems);
            labels = Some(file);
        }
    }
    for path in &experiment_files {
        let shown = display_path(path);
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = validate_experiment(&shown, &read_limited(path)?, &stem, &settings);
        diagnostics.extend(parsed.diagnostics);
        if let Some(experiment) = parsed.experiment {
            diagnostics.extend(check_variants(
                &shown,
                &experiment,
                &universe,
                labels.as_ref(),
                snapshot,
            ));
        }
    }
    Ok((diagnostics, usize::from(labels_path.is_file()) + experiment_files.len()))
}

/// Each variant must serve something: its persona exists (and, while the
/// experiment runs, is not deleted), its pin names a version, and its mode is
/// enabled for that version (after its profile, if any, is applied).
fn check_variants(
    file: &str,
    experiment: &Experiment,
    universe: &Universe,
    labels: Option<&LabelsFile>,
    snapshot: &Snapshot,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for variant in &experiment.variants {
        let (line, column) = variant.position.unwrap_or((1, 1));
        let mut problem = |code: Code, message: String| {
            problems.push(Diagnostic {
                file: file.to_string(),
                line,
                column,
                code,
                message: format!("variant {:?}: {message}", variant.name),
                path: None,
            })
        };
        let Some(known) = universe.find(&variant.persona) else {
            problem(
                Code::UnknownPersona,
                format!("no persona is called {:?}", variant.persona),
            );
            continue;
        };
        if experiment.status == Status::Running && known.is_deleted() {
            problem(
                Code::UnknownPersona,
                format!(
                    "{} is deleted, but the experiment is running; stop the experiment or point the variant elsewhere",
                    known.slug
                ),
            );
            continue;
        }
        let target = match &variant.pin {
            VariantPin::Version(number) => LabelTarget::Version(*number),
            VariantPin::Content(hash) => LabelTarget::Content(*hash),
            VariantPin::Label(label) => {
                let pointed = labels.and_then(|file| {
                    file.labels
                        .iter()
                        .find(|definition| definition.name == *label)
                        .map(|definition| {
                            definition
                                .entries
                                .iter()
                                .find(|entry| universe.find(&entry.persona).is_some_and(|other| other.id == known.id))
                                .map(|entry| entry.target.clone())
                        })
                });
                match pointed {
                    Some(Some(target)) => target,
                    Some(None) => {
                        problem(Code::Pin, format!("label {label:?} does not cover {}", known.slug));
                        continue;
                    }
                    None => {
                        problem(
                            Code::Pin,
                            format!("the registry has no label {label:?} (registry/labels.toml)"),
                        );
                        continue;
                    }
                }
            }
        };
        let number = match target_version(&target, &known.facts().versions) {
            Ok(number) => number,
            Err(reason) => {
                problem(Code::UnknownVersion, format!("{}: {reason}", known.slug));
                continue;
            }
        };
        let Some(Some(persona)) = known
            .versions
            .iter()
            .find(|(version, _)| *version == number)
            .map(|(_, persona)| persona)
        else {
            continue;
        };
        let profile = match &variant.profile {
            Some(name) => match snapshot
                .valid_profiles()
                .into_iter()
                .find(|profile| profile.slug.as_str() == name)
            {
                Some(profile) => Some(profile),
                None => {
                    problem(Code::UnknownKey, format!("no profile is called {name:?}"));
                    continue;
                }
            },
            None => None,
        };
        let shown = profile.map_or_else(|| persona.clone(), |profile| profile.apply(persona));
        if let Some(mode) = &variant.mode
            && shown.modes.get(mode) != Some(&true)
        {
            problem(
                Code::UnknownMode,
                format!(
                    "mode {mode:?} is not enabled for {} version {number}; enabled: {}",
                    known.slug,
                    shown
                        .modes
                        .iter()
                        .filter(|(_, enabled)| **enabled)
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    problems
}

//! `personas review BASE..HEAD`: what a reviewer of a registry pull request
//! needs, from git alone. The head's problems at file:line:col, and for every
//! changed persona:
//! - the version it becomes on the base and its field-level diff;
//! - the diff of its rendered prompt in each enabled mode;
//! - policy notes, the placeholder text `personas new` leaves;
//! - the labels and running experiments that serve it.
//!
//! Exit status 1 when the change must not be merged (a problem, or a
//! placeholder still in place).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;

use super::diff::{PersonaDelta, parse_range, range_diff};
use super::near_duplicates::{self, NearDuplicate};
use crate::citations::record::{RECORD_FILE, Record};
use crate::cli::{Outcome, ReviewFormat};
use crate::git::history::REGISTRY_DIR;
use crate::git::read_file_at;
use crate::git::replay::Replay;
use crate::git::replay::tag_names;
use crate::persona::diff::describe;
use crate::persona::experiment::Status;
use crate::persona::prompt::{PromptTemplate, template_path};
use crate::persona::settings::{RegistrySettings, SETTINGS_FILE, parse_settings};
use crate::persona::{Diagnostic, Persona, PersonaId};

/// How serious a note is: `block` stops the merge, `warn` asks a reviewer to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Block,
    Warn,
}

#[derive(Debug, Serialize)]
pub struct Note {
    pub severity: Severity,
    /// A short stable name: `protected`, `unsourced`, `citation`, `placeholder`, `duplicate`, `impact`.
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct PromptDiff {
    pub mode: String,
    /// A unified diff of the rendered prompt, base to head (empty: unchanged).
    pub diff: String,
}

#[derive(Debug, Serialize)]
pub struct PersonaReview {
    #[serde(flatten)]
    pub delta: PersonaDelta,
    /// The file at the head (absent for a deletion).
    pub file: Option<String>,
    pub prompts: Vec<PromptDiff>,
    pub notes: Vec<Note>,
}

#[derive(Debug, Serialize)]
pub struct Review {
    pub base: String,
    pub head: String,
    /// Every problem at the head, as `personas check` reports them.
    pub problems: Vec<Diagnostic>,
    pub personas: Vec<PersonaReview>,
    /// Whether new personas were compared by meaning, and with which model
    /// (or why not: no model provisioned).
    pub duplicates_by_meaning: String,
    /// Whether the change may be merged as it is.
    pub mergeable: bool,
}

pub fn run(repository: &Path, range: &str, format: ReviewFormat) -> anyhow::Result<Outcome> {
    let (base, head) = parse_range(range)?;
    let review = review(repository, &base, &head)?;
    match format {
        ReviewFormat::Json => println!("{}", serde_json::to_string_pretty(&review)?),
        ReviewFormat::Markdown => print!("{}", render_markdown(&review)),
        ReviewFormat::Github => print!("{}", render_github(&review)),
    }
    Ok(if review.mergeable {
        Outcome::Clean
    } else {
        Outcome::Invalid
    })
}

pub fn review(repository: &Path, base: &str, head: &str) -> anyhow::Result<Review> {
    let changes = range_diff(repository, base, head)?;
    let base_replay = Replay::of(repository, base)?;
    let head_replay = Replay::of(repository, head)?;
    let mut problems: Vec<Diagnostic> = changes
        .problems
        .iter()
        .flat_map(|problem| problem.diagnostics.iter().cloned())
        .collect();
    let tags = tag_names(repository)?;
    let tip = head_replay.tip_position();
    let (labels, label_problems) = head_replay.labels_resolved_at(tip, &tags);
    problems.extend(label_problems);
    // The base's policy decides who must approve: a pull request cannot unprotect itself.
    let base_settings = settings_at(repository, base)?;
    let base_template = template_of(&base_replay);
    let head_template = template_of(&head_replay);
    let existing: Vec<&Persona> = base_replay
        .personas
        .values()
        .filter_map(|history| history.current())
        .collect();
    let added: Vec<&Persona> = changes
        .personas
        .iter()
        .filter(|delta| delta.kind == "added")
        .filter_map(|delta| current(&head_replay, delta.persona_id))
        .collect();
    let (mut duplicates, duplicates_by_meaning) = duplicates_of(&added, &existing);
    // What `personas cite check` recorded at the head (the pull request should carry its own results).
    let citations = match read_file_at(repository, head, &format!("{REGISTRY_DIR}/{RECORD_FILE}"))? {
        Some(bytes) => Some(Record::parse(&bytes)?),
        None => None,
    };
    let mut personas = Vec::new();
    for delta in changes.personas {
        let id = delta.persona_id;
        let old = current(&base_replay, id);
        let new = current(&head_replay, id);
        let mut notes = Vec::new();
        if base_settings.policy.protects(id, &delta.slug) {
            notes.push(Note {
                severity: Severity::Warn,
                kind: "protected",
                message: format!(
                    "{} is protected by the base's policy: a maintainer must approve this change",
                    delta.slug
                ),
            });
        }
        if let Some(new) = new {
            notes.extend(content_notes(new));
            notes.extend(citation_notes(new, old, citations.as_ref()));
        }
        for duplicate in duplicates.remove(&id).unwrap_or_default() {
            notes.push(Note {
                severity: Severity::Warn,
                kind: "duplicate",
                message: format!(
                    "close to the existing {} by {} ({:.2}): the same persona twice?",
                    duplicate.of, duplicate.by, duplicate.similarity
                ),
            });
        }
        notes.extend(impact_notes(&head_replay, tip, id, &delta.slug, &labels));
        personas.push(PersonaReview {
            file: head_replay
                .personas
                .get(&id)
                .and_then(|history| history.versions.last())
                .filter(|version| version.persona.is_some())
                .map(|version| version.path.clone()),
            prompts: prompt_diffs(base_template.as_ref(), old, head_template.as_ref(), new),
            delta,
            notes,
        });
    }
    let mergeable = problems.is_empty()
        && personas
            .iter()
            .all(|persona| persona.notes.iter().all(|note| note.severity != Severity::Block));
    Ok(Review {
        base: base.to_string(),
        head: head.to_string(),
        problems,
        personas,
        duplicates_by_meaning,
        mergeable,
    })
}

/// The near duplicates of each added persona among the base's, and what
/// the comparison by meaning could do.
fn duplicates_of(added: &[&Persona], existing: &[&Persona]) -> (HashMap<PersonaId, Vec<NearDuplicate>>, String) {
    let mut found: HashMap<PersonaId, Vec<NearDuplicate>> = added
        .iter()
        .map(|persona| (persona.id, near_duplicates::by_name(persona, existing)))
        .collect();
    if added.is_empty() {
        return (found, "no persona added".to_string());
    }
    let status = match near_duplicates::load_model() {
        Ok(embedder) => match near_duplicates::by_meaning(&embedder, added, existing) {
            Ok(by_meaning) => {
                for (persona, duplicates) in added.iter().zip(by_meaning) {
                    found.entry(persona.id).or_default().extend(duplicates);
                }
                format!(
                    "compared with {} (cosine ≥ {})",
                    embedder.model_id(),
                    near_duplicates::EMBEDDING_SIMILARITY
                )
            }
            Err(reason) => format!("not compared: {reason}"),
        },
        Err(reason) => format!("not compared: {reason}"),
    };
    (found, status)
}

fn current(replay: &Replay, id: PersonaId) -> Option<&Persona> {
    replay.personas.get(&id).and_then(|history| history.current())
}

fn settings_at(repository: &Path, revision: &str) -> anyhow::Result<RegistrySettings> {
    let path = format!("{REGISTRY_DIR}/{SETTINGS_FILE}");
    Ok(match read_file_at(repository, revision, &path)? {
        Some(bytes) => parse_settings(&path, &bytes).0,
        None => RegistrySettings::permissive(),
    })
}

/// The prompt template in force at the replay's tip, if it has a valid one.
fn template_of(replay: &Replay) -> Option<PromptTemplate> {
    let source = replay.prompt_templates.last()?.source.as_deref()?;
    PromptTemplate::parse(&template_path(), source).ok()
}

/// What `personas new` writes for the author to replace.
const PLACEHOLDER_BELIEF: &str = "A belief this persona holds.";

fn content_notes(persona: &Persona) -> Vec<Note> {
    let mut notes = Vec::new();
    let mut note = |severity, kind, message: String| {
        notes.push(Note {
            severity,
            kind,
            message,
        })
    };
    if persona.description.starts_with("Describe ") && persona.description.ends_with(" in one or two sentences.") {
        note(
            Severity::Block,
            "placeholder",
            "the description is still the placeholder `personas new` writes".to_string(),
        );
    }
    if persona.beliefs.iter().any(|belief| belief.text == PLACEHOLDER_BELIEF) {
        note(
            Severity::Block,
            "placeholder",
            format!("a belief is still the placeholder {PLACEHOLDER_BELIEF:?}"),
        );
    }
    if persona.domains == ["general"] {
        note(
            Severity::Warn,
            "placeholder",
            "the only domain is `general`, the default of `personas new`".to_string(),
        );
    }
    let ocean = persona.traits.get("ocean");
    if ocean.is_some_and(|ocean| !ocean.is_empty() && ocean.values().all(|value| *value == 0.5)) {
        note(
            Severity::Warn,
            "placeholder",
            "every OCEAN trait is 0.5, the default of `personas new`".to_string(),
        );
    }
    if persona.is_real {
        for belief in persona.beliefs.iter().filter(|belief| belief.source.is_none()) {
            note(
                Severity::Warn,
                "unsourced",
                format!("a real person's belief has no source: {:?}", belief.text),
            );
        }
        for phrase in persona
            .signature_phrases
            .iter()
            .filter(|phrase| !persona.phrase_citations.contains_key(*phrase))
        {
            note(
                Severity::Warn,
                "unsourced",
                format!(
                    "a real person's signature phrase reads as a verbatim quote but has no source or marking \
                     (attributed, paraphrased, character): {phrase:?}"
                ),
            );
        }
    }
    notes
}

/// The URL sources a change adds or keeps whose check does not confirm them.
/// Only beliefs and phrases new or re-sourced in this change are asked about: the rest
/// were reviewed before.
fn citation_notes(new: &Persona, old: Option<&Persona>, record: Option<&Record>) -> Vec<Note> {
    let unchanged = |text: &str, url: &str| old.is_some_and(|old| old.cited_texts().any(|cited| cited == (text, url)));
    let mut notes = Vec::new();
    for (cited, url) in new.cited_texts() {
        if !url.starts_with("http") || unchanged(cited, url) {
            continue;
        }
        let message = match record.and_then(|record| record.find_anywhere(cited, url)) {
            Some(check) => match check.problem() {
                Some(problem) => format!("the citation check could not confirm {cited:?}: {problem}"),
                None => continue,
            },
            None => format!(
                "{url} (for {cited:?}) has not been checked: run `personas cite check` and commit {RECORD_FILE}"
            ),
        };
        notes.push(Note {
            severity: Severity::Warn,
            kind: "citation",
            message,
        });
    }
    notes
}

/// Labels at the head that point at the persona, and running experiments that serve it.
fn impact_notes(
    replay: &Replay,
    tip: usize,
    id: PersonaId,
    slug: &str,
    labels: &[crate::persona::labels::ResolvedLabel],
) -> Vec<Note> {
    let mut notes = Vec::new();
    for label in labels.iter().filter(|label| label.persona_id == id) {
        notes.push(Note {
            severity: Severity::Warn,
            kind: "impact",
            message: format!(
                "label {} serves version {} of {slug}; this change does not move it",
                label.label, label.version
            ),
        });
    }
    let names: BTreeSet<&str> = replay.experiment_names().into_iter().collect();
    for name in names {
        let Some(experiment) = replay
            .experiment_at(name, tip)
            .and_then(|change| change.experiment.as_ref())
        else {
            continue;
        };
        let serves = experiment.variants.iter().any(|variant| {
            replay
                .personas
                .get(&id)
                .is_some_and(|history| history.is_known_as(&variant.persona))
        });
        if experiment.status == Status::Running && serves {
            notes.push(Note {
                severity: Severity::Warn,
                kind: "impact",
                message: format!("the running experiment {name} serves {slug}"),
            });
        }
    }
    notes
}

/// The rendered prompt in each mode enabled at the base or the head, diffed.
fn prompt_diffs(
    base_template: Option<&PromptTemplate>,
    old: Option<&Persona>,
    head_template: Option<&PromptTemplate>,
    new: Option<&Persona>,
) -> Vec<PromptDiff> {
    let modes: BTreeSet<&str> = old
        .into_iter()
        .chain(new)
        .flat_map(|persona| persona.enabled_modes())
        .collect();
    let render = |template: Option<&PromptTemplate>, persona: Option<&Persona>, mode: &str| -> String {
        match (template, persona) {
            (Some(template), Some(persona)) if persona.enabled_modes().any(|enabled| enabled == mode) => template
                .render(persona, Some(mode), None)
                .map(|rendered| rendered.text)
                .unwrap_or_else(|error| format!("(cannot render: {error})\n")),
            _ => String::new(),
        }
    };
    modes
        .into_iter()
        .map(|mode| {
            let before = render(base_template, old, mode);
            let after = render(head_template, new, mode);
            let diff = if before == after {
                String::new()
            } else {
                similar::TextDiff::from_lines(&before, &after)
                    .unified_diff()
                    .context_radius(2)
                    .header("base", "head")
                    .to_string()
            };
            PromptDiff {
                mode: mode.to_string(),
                diff,
            }
        })
        .collect()
}

fn render_markdown(review: &Review) -> String {
    let mut out = format!(
        "## Registry review: `{}..{}` — {}\n\n",
        review.base,
        review.head,
        if review.mergeable {
            "ready for review"
        } else {
            "**must not be merged as it is**"
        }
    );
    if !review.problems.is_empty() {
        out.push_str("### Problems\n\n");
        for problem in &review.problems {
            out.push_str(&format!(
                "- `{}:{}:{}` {}: {}\n",
                problem.file, problem.line, problem.column, problem.code, problem.message
            ));
        }
        out.push('\n');
    }
    if review.personas.is_empty() {
        out.push_str("No persona content changes.\n");
    }
    out.push_str(&format!(
        "New personas by meaning: {}.\n\n",
        review.duplicates_by_meaning
    ));
    for persona in &review.personas {
        let delta = &persona.delta;
        out.push_str(&format!(
            "### {} (`{}`): {}, becomes v{}\n\n",
            delta.name, delta.slug, delta.kind, delta.next_version
        ));
        for note in &persona.notes {
            let marker = match note.severity {
                Severity::Block => "⛔",
                Severity::Warn => "⚠️",
            };
            out.push_str(&format!("- {marker} {}: {}\n", note.kind, note.message));
        }
        for change in &delta.changes {
            out.push_str(&format!("- {}\n", describe(change)));
        }
        for prompt in persona.prompts.iter().filter(|prompt| !prompt.diff.is_empty()) {
            out.push_str(&format!(
                "\n<details><summary>Prompt in mode {}</summary>\n\n```diff\n{}```\n</details>\n",
                prompt.mode, prompt.diff
            ));
        }
        out.push('\n');
    }
    out
}

fn render_github(review: &Review) -> String {
    let mut out =
        crate::persona::diagnostic::render(&review.problems, crate::persona::diagnostic::OutputFormat::Github);
    for persona in &review.personas {
        for note in &persona.notes {
            let level = match note.severity {
                Severity::Block => "error",
                Severity::Warn => "warning",
            };
            let file = persona
                .file
                .as_deref()
                .map(|file| format!(" file={file},line=1,col=1,"))
                .unwrap_or_else(|| " ".to_string());
            out.push_str(&format!(
                "::{level}{file}title={}::{}\n",
                note.kind,
                note.message.replace('%', "%25").replace('\n', "%0A")
            ));
        }
    }
    out
}

//! `registry/labels.toml`: movable names (`production`, `staging`, …) for
//! persona versions. Moving a label is a commit to this file, so every move
//! is reviewed and recorded like any other change.
//!
//! ```toml
//! [production]
//! albert-einstein = 3            # version number
//! ada-lovelace = "sha256:…"      # or content hash (the first version with it)
//! ```
//!
//! A key names the persona by slug (current or former) or id. Parsing checks
//! the file's shape; [`resolve`] checks it against the versions that exist,
//! which only a history can tell (the sync's projection, or `check`'s
//! replay of git).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::diagnostic::{Code, Diagnostic, Diagnostics};
use super::model::{ContentHash, PersonaId};
use super::pin::check_label_name;
use super::source::{self, LineIndex, NodeValue};
use super::validate::source_error;

/// The file's name inside `registry/`.
pub const LABELS_FILE: &str = "labels.toml";
/// The labels file has a line per labelled persona (about 50 bytes), so it is
/// allowed far more than a persona file: a label over 100,000 personas fits.
pub const MAX_LABELS_FILE_BYTES: usize = 8 * 1024 * 1024;

/// What a label points at for one persona, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelTarget {
    Version(u32),
    Content(ContentHash),
}

impl std::fmt::Display for LabelTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelTarget::Version(number) => write!(formatter, "version {number}"),
            LabelTarget::Content(hash) => write!(formatter, "{hash}"),
        }
    }
}

/// One `persona = target` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelEntry {
    /// The slug or id as written.
    pub persona: String,
    pub target: LabelTarget,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelDefinition {
    pub name: String,
    pub line: usize,
    pub column: usize,
    pub entries: Vec<LabelEntry>,
}

/// A well-formed labels file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LabelsFile {
    pub path: String,
    /// In file order.
    pub labels: Vec<LabelDefinition>,
}

impl LabelsFile {
    pub fn names(&self) -> BTreeSet<&str> {
        self.labels.iter().map(|label| label.name.as_str()).collect()
    }
}

/// Parses the file. Any problem makes the whole file invalid (`None`): a
/// half-read labels file would silently move labels.
pub fn parse_labels(file: &str, bytes: &[u8]) -> (Option<LabelsFile>, Vec<Diagnostic>) {
    let mut diagnostics = Diagnostics::new(file, bytes);
    let lines = LineIndex::new(bytes);
    let root = match source::parse_with_limit(bytes, MAX_LABELS_FILE_BYTES) {
        Ok(root) => root,
        Err(error) => {
            source_error(&mut diagnostics, &error);
            return (None, diagnostics.into_vec());
        }
    };
    let mut labels = Vec::new();
    if let NodeValue::Table(tables) = &root.value {
        for table in tables {
            let (line, column) = lines.position(table.key_span.start);
            if let Err(reason) = check_label_name(&table.key) {
                diagnostics.push_at(&table.key_span, Code::Label, &table.key, reason);
                continue;
            }
            let NodeValue::Table(entries) = &table.value.value else {
                diagnostics.push_at(
                    &table.key_span,
                    Code::Type,
                    &table.key,
                    format!(
                        "`{}` must be a table of persona = version lines ([{}] then e.g. albert-einstein = 3), found {}",
                        table.key,
                        table.key,
                        table.value.value.type_name()
                    ),
                );
                continue;
            };
            let mut definition = LabelDefinition {
                name: table.key.clone(),
                line,
                column,
                entries: Vec::new(),
            };
            for entry in entries {
                let path = format!("{}.{}", table.key, entry.key);
                let (line, column) = lines.position(entry.key_span.start);
                let target = match &entry.value.value {
                    NodeValue::Integer(number) if (1..=i64::from(i32::MAX)).contains(number) => {
                        LabelTarget::Version(*number as u32)
                    }
                    NodeValue::Integer(number) => {
                        diagnostics.push_at(
                            &entry.value.span,
                            Code::Range,
                            &path,
                            format!("{path} = {number}: version numbers start at 1"),
                        );
                        continue;
                    }
                    NodeValue::String(text) => match text.parse::<ContentHash>() {
                        Ok(hash) => LabelTarget::Content(hash),
                        Err(_) => {
                            diagnostics.push_at(
                                &entry.value.span,
                                Code::Type,
                                &path,
                                format!(
                                    "{path} = {text:?}: a label points at a version number (3) or a content hash \
                                     (\"sha256:\" and 64 hex digits)"
                                ),
                            );
                            continue;
                        }
                    },
                    other => {
                        diagnostics.push_at(
                            &entry.value.span,
                            Code::Type,
                            &path,
                            format!(
                                "{path} must be a version number or a \"sha256:…\" content hash, found {}",
                                other.type_name()
                            ),
                        );
                        continue;
                    }
                };
                definition.entries.push(LabelEntry {
                    persona: entry.key.clone(),
                    target,
                    line,
                    column,
                });
            }
            labels.push(definition);
        }
    }
    if diagnostics.is_empty() {
        (
            Some(LabelsFile {
                path: file.to_string(),
                labels,
            }),
            Vec::new(),
        )
    } else {
        (None, diagnostics.into_vec())
    }
}

/// One version of a persona, as a history knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownVersion {
    pub number: u32,
    /// `None`: the version is the persona's deletion.
    pub content_hash: Option<ContentHash>,
}

/// A persona as a history knows it: what a label entry is checked against.
#[derive(Debug, Clone)]
pub struct KnownPersona {
    pub id: PersonaId,
    pub slug: String,
    /// Oldest first; only versions that exist at the labels file's commit.
    pub versions: Vec<KnownVersion>,
}

/// Where each label points after resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedLabel {
    pub label: String,
    pub persona_id: PersonaId,
    pub slug: String,
    pub version: u32,
}

/// The version a target names among `versions`: a number as is, a content
/// hash as the first version with that content (as a `sha256:` pin does).
pub fn target_version(target: &LabelTarget, versions: &[KnownVersion]) -> Result<u32, String> {
    let found = match target {
        LabelTarget::Version(number) => versions.iter().find(|version| version.number == *number),
        LabelTarget::Content(hash) => versions
            .iter()
            .find(|version| version.content_hash.as_ref() == Some(hash)),
    };
    match found {
        Some(version) if version.content_hash.is_none() => Err(format!(
            "version {} is the persona's deletion; point at a version with content",
            version.number
        )),
        Some(version) => Ok(version.number),
        None => Err(match (target, versions.last()) {
            (LabelTarget::Content(hash), _) => format!("no version has the content hash {hash}"),
            (LabelTarget::Version(number), Some(last)) => {
                format!("there is no version {number}; versions 1 to {} exist", last.number)
            }
            (LabelTarget::Version(number), None) => format!("there is no version {number}"),
        }),
    }
}

/// Checks every entry against what the history knows (`lookup` finds a
/// persona by slug or id) and against the repository's tags (a label a tag
/// shadows is refused, see [`super::pin`]). Entries that do not resolve are
/// left out and reported at their line; the rest are the labels in force.
pub fn resolve(
    file: &LabelsFile,
    lookup: impl Fn(&str) -> Option<KnownPersona>,
    is_tag: impl Fn(&str) -> bool,
) -> (Vec<ResolvedLabel>, Vec<Diagnostic>) {
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    let problem = |line: usize, column: usize, code: Code, path: String, message: String| Diagnostic {
        file: file.path.clone(),
        line,
        column,
        code,
        message,
        path: Some(path),
    };
    for label in &file.labels {
        if is_tag(&label.name) {
            problems.push(problem(
                label.line,
                label.column,
                Code::Label,
                label.name.clone(),
                format!(
                    "label {:?} has the name of a git tag; a bare @{} would then name the label, not the tag \
                     pinned so far: rename the label",
                    label.name, label.name
                ),
            ));
            continue;
        }
        let mut seen: BTreeMap<PersonaId, &str> = BTreeMap::new();
        for entry in &label.entries {
            let path = format!("{}.{}", label.name, entry.persona);
            let Some(persona) = lookup(&entry.persona) else {
                problems.push(problem(
                    entry.line,
                    entry.column,
                    Code::UnknownPersona,
                    path,
                    format!(
                        "label {:?} names {:?}, which is not the slug or id of any persona",
                        label.name, entry.persona
                    ),
                ));
                continue;
            };
            if let Some(first) = seen.insert(persona.id, &entry.persona) {
                problems.push(problem(
                    entry.line,
                    entry.column,
                    Code::Duplicate,
                    path,
                    format!(
                        "label {:?} names {} twice (as {first:?} and {:?})",
                        label.name, persona.slug, entry.persona
                    ),
                ));
                continue;
            }
            match target_version(&entry.target, &persona.versions) {
                Ok(version) => resolved.push(ResolvedLabel {
                    label: label.name.clone(),
                    persona_id: persona.id,
                    slug: persona.slug.clone(),
                    version,
                }),
                Err(reason) => problems.push(problem(
                    entry.line,
                    entry.column,
                    Code::UnknownVersion,
                    path,
                    format!("label {:?} for {}: {reason}", label.name, persona.slug),
                )),
            }
        }
    }
    (resolved, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(byte: u8) -> ContentHash {
        ContentHash([byte; 32])
    }

    fn einstein() -> KnownPersona {
        KnownPersona {
            id: PersonaId(uuid::Uuid::from_u128(1)),
            slug: "albert-einstein".into(),
            versions: vec![
                KnownVersion {
                    number: 1,
                    content_hash: Some(hash(1)),
                },
                KnownVersion {
                    number: 2,
                    content_hash: Some(hash(2)),
                },
                KnownVersion {
                    number: 3,
                    content_hash: None,
                },
            ],
        }
    }

    fn lookup(reference: &str) -> Option<KnownPersona> {
        (reference == "albert-einstein" || reference == "00000000-0000-0000-0000-000000000001").then(einstein)
    }

    #[test]
    fn a_label_over_a_large_registry_is_not_refused_for_its_size() {
        let mut text = String::from("[production]\n");
        for persona in 0..20_000 {
            text.push_str(&format!(
                "\"{:08x}-0000-4000-8000-{:012x}\" = 1\n",
                persona + 1,
                persona + 1
            ));
        }
        assert!(text.len() > crate::persona::source::MAX_FILE_BYTES);
        let (file, problems) = parse_labels("registry/labels.toml", text.as_bytes());
        assert!(problems.is_empty(), "{:?}", problems.first());
        assert_eq!(file.unwrap().labels[0].entries.len(), 20_000);
        let oversized = "#".repeat(MAX_LABELS_FILE_BYTES + 1);
        let (file, problems) = parse_labels("registry/labels.toml", oversized.as_bytes());
        assert!(file.is_none());
        assert_eq!(problems[0].code, Code::TooLarge);
    }

    #[test]
    fn a_well_formed_file_parses_with_positions() {
        let text = format!(
            "# who is live\n[production]\nalbert-einstein = 2\n\n[staging]\nalbert-einstein = \"{}\"\n",
            hash(1)
        );
        let (file, problems) = parse_labels("registry/labels.toml", text.as_bytes());
        assert!(problems.is_empty(), "{problems:?}");
        let file = file.unwrap();
        assert_eq!(file.names().into_iter().collect::<Vec<_>>(), ["production", "staging"]);
        let entry = &file.labels[0].entries[0];
        assert_eq!((entry.line, entry.column), (3, 1));
        assert_eq!(entry.target, LabelTarget::Version(2));
        let (resolved, problems) = resolve(&file, lookup, |_| false);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(resolved.iter().map(|label| label.version).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn malformed_entries_are_reported_where_they_are() {
        for (text, line, column, code) in [
            ("[production]\nx = 0\n", 2, 5, Code::Range),
            ("[production]\nx = \"three\"\n", 2, 5, Code::Type),
            ("[production]\nx = 1.5\n", 2, 5, Code::Type),
            ("[Production]\nx = 1\n", 1, 2, Code::Label),
            ("[42]\nx = 1\n", 1, 2, Code::Label),
            ("[cafe]\nx = 1\n", 1, 2, Code::Label),
            ("production = 3\n", 1, 1, Code::Type),
            ("[production\n", 1, 12, Code::Syntax),
        ] {
            let (file, problems) = parse_labels("registry/labels.toml", text.as_bytes());
            assert!(file.is_none(), "{text:?}");
            let first = &problems[0];
            assert_eq!(
                (first.line, first.column, first.code),
                (line, column, code),
                "{text:?}: {first}"
            );
        }
    }

    #[test]
    fn entries_that_do_not_resolve_say_why() {
        let text = format!(
            "[production]\nnobody = 1\nalbert-einstein = 7\n\n[staging]\nalbert-einstein = 3\n\n\
             [canary]\n00000000-0000-0000-0000-000000000001 = 1\n\n[candidate]\nalbert-einstein = \"{}\"\n",
            hash(9)
        );
        let (file, _) = parse_labels("registry/labels.toml", text.as_bytes());
        let (resolved, problems) = resolve(&file.unwrap(), lookup, |_| false);
        assert_eq!(resolved.len(), 1);
        assert_eq!((resolved[0].label.as_str(), resolved[0].version), ("canary", 1));
        let found: Vec<(usize, Code, bool)> = problems
            .iter()
            .map(|problem| (problem.line, problem.code, !problem.message.is_empty()))
            .collect();
        assert_eq!(
            found,
            [
                (2, Code::UnknownPersona, true),
                (3, Code::UnknownVersion, true),
                (6, Code::UnknownVersion, true),
                (12, Code::UnknownVersion, true),
            ]
        );
        assert!(problems[1].message.contains("versions 1 to 3"), "{}", problems[1]);
        assert!(problems[2].message.contains("deletion"), "{}", problems[2]);
    }

    #[test]
    fn a_label_named_like_a_tag_is_refused() {
        let (file, _) = parse_labels("registry/labels.toml", b"[release]\nalbert-einstein = 1\n");
        let (resolved, problems) = resolve(&file.unwrap(), lookup, |name| name == "release");
        assert!(resolved.is_empty());
        assert_eq!(problems[0].code, Code::Label);
        assert!(problems[0].message.contains("git tag"));
    }

    #[test]
    fn the_same_persona_twice_in_one_label_is_refused() {
        let text = b"[production]\nalbert-einstein = 1\n00000000-0000-0000-0000-000000000001 = 2\n";
        let (file, _) = parse_labels("registry/labels.toml", text);
        let (resolved, problems) = resolve(&file.unwrap(), lookup, |_| false);
        assert_eq!(resolved.len(), 1);
        assert_eq!(problems[0].code, Code::Duplicate);
    }
}

//! A whole registry at one point in time (a working tree or a commit's tree):
//! every file validated, plus the checks that span files.

use std::collections::BTreeMap;

use super::diagnostic::{Code, Diagnostic};
use super::model::{Persona, PersonaId, Slug};
use super::profile::{ParsedProfile, Profile, validate_profile};
use super::settings::{RegistrySettings, SETTINGS_FILE, names_persona, parse_settings};
use super::source::LineIndex;
use super::validate::{FileReading, ParsedPersona, validate_persona};

pub const PERSONAS_DIR: &str = "personas";
pub const PROFILES_DIR: &str = "profiles";

/// What a path inside a registry directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryFile<'a> {
    Settings,
    /// A persona file; the file stem gives its slug.
    Persona {
        stem: &'a str,
    },
    Profile {
        stem: &'a str,
    },
    /// Anything else (READMEs, images): not ours to validate.
    Other,
}

/// Classifies a path relative to the registry root (e.g. `personas/ada.toml`).
pub fn classify(relative: &str) -> RegistryFile<'_> {
    if relative == SETTINGS_FILE {
        return RegistryFile::Settings;
    }
    let Some((dir, file)) = relative.split_once('/') else {
        return RegistryFile::Other;
    };
    let Some(stem) = file.strip_suffix(".toml") else {
        return RegistryFile::Other;
    };
    if file.contains('/') {
        return RegistryFile::Other;
    }
    match dir {
        PERSONAS_DIR => RegistryFile::Persona { stem },
        PROFILES_DIR => RegistryFile::Profile { stem },
        _ => RegistryFile::Other,
    }
}

/// One registry file's bytes, named for diagnostics and by its place in the registry.
pub struct SourceFile {
    /// The path shown in diagnostics, e.g. `registry/personas/ada.toml`.
    pub display_path: String,
    /// The path relative to the registry root, e.g. `personas/ada.toml`.
    pub relative_path: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub settings: Option<RegistrySettings>,
    pub personas: Vec<ParsedPersona>,
    pub profiles: Vec<ParsedProfile>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Snapshot {
    /// Validates a complete registry. `settings_display_path` names the
    /// settings file in the "missing registry.toml" error.
    pub fn build(files: Vec<SourceFile>, settings_display_path: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        let settings_file = files
            .iter()
            .find(|file| classify(&file.relative_path) == RegistryFile::Settings);
        let settings = match settings_file {
            Some(file) => {
                let (settings, diagnostics) = parse_settings(&file.display_path, &file.bytes);
                snapshot.diagnostics.extend(diagnostics);
                settings
            }
            None => {
                snapshot.diagnostics.push(Diagnostic {
                    path: None,
                    file: settings_display_path.to_string(),
                    line: 1,
                    column: 1,
                    code: Code::MissingRegistry,
                    message: "registry.toml is missing; it defines the registry's title, mode vocabulary and policy"
                        .to_string(),
                });
                RegistrySettings::permissive()
            }
        };
        for file in &files {
            match classify(&file.relative_path) {
                RegistryFile::Persona { stem } => {
                    snapshot
                        .personas
                        .push(validate_persona(&file.display_path, &file.bytes, stem, &settings))
                }
                RegistryFile::Profile { stem } => {
                    snapshot
                        .profiles
                        .push(validate_profile(&file.display_path, &file.bytes, stem, &settings))
                }
                RegistryFile::Settings | RegistryFile::Other => {}
            }
        }
        let readings: Vec<FileReading> = snapshot.personas.iter().map(ParsedPersona::reading).collect();
        let cross_file = duplicate_diagnostics(readings.iter());
        snapshot.diagnostics.extend(cross_file);
        if let Some(file) = settings_file {
            snapshot
                .diagnostics
                .extend(protected_diagnostics(file, &settings, &snapshot.personas));
        }
        snapshot.settings = Some(settings);
        snapshot
    }

    /// Every diagnostic, sorted by file, line and column.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self
            .diagnostics
            .iter()
            .chain(self.personas.iter().flat_map(|parsed| &parsed.diagnostics))
            .chain(self.profiles.iter().flat_map(|parsed| &parsed.diagnostics))
            .cloned()
            .collect();
        all.sort_by(|a, b| (&a.file, a.line, a.column, a.code).cmp(&(&b.file, b.line, b.column, b.code)));
        all.dedup();
        all
    }

    /// The valid personas that no cross-file rule rejects.
    pub fn valid_personas(&self) -> Vec<&Persona> {
        let rejected: Vec<&str> = self.diagnostics.iter().map(|d| d.file.as_str()).collect();
        self.personas
            .iter()
            .filter(|parsed| !rejected.contains(&parsed.file.as_str()))
            .filter_map(|parsed| parsed.persona.as_ref())
            .collect()
    }

    pub fn valid_profiles(&self) -> Vec<&Profile> {
        self.profiles
            .iter()
            .filter_map(|parsed| parsed.profile.as_ref())
            .collect()
    }
}

/// Ids and slugs must be unique across the registry. Every file involved in a
/// clash gets an error pointing at its own `id` (or slug), naming the others.
pub fn duplicate_diagnostics<'a>(personas: impl Iterator<Item = &'a FileReading>) -> Vec<Diagnostic> {
    let mut by_id: BTreeMap<PersonaId, Vec<&FileReading>> = BTreeMap::new();
    let mut by_slug: BTreeMap<&Slug, Vec<&FileReading>> = BTreeMap::new();
    for parsed in personas {
        if let Some(id) = parsed.id {
            by_id.entry(id).or_default().push(parsed);
        }
        if let Some(slug) = &parsed.slug {
            by_slug.entry(slug).or_default().push(parsed);
        }
    }
    let mut diagnostics = Vec::new();
    for (id, group) in &by_id {
        clash_diagnostics(
            &mut diagnostics,
            group,
            Code::DuplicateId,
            (&format!("id {id}"), "ids"),
            |p| p.id_location,
        );
    }
    for (slug, group) in &by_slug {
        clash_diagnostics(
            &mut diagnostics,
            group,
            Code::DuplicateSlug,
            (&format!("slug {slug}"), "slugs"),
            |p| p.slug_location,
        );
    }
    diagnostics
}

/// One diagnostic per file of a group sharing `what` (e.g. "id …", plural "ids"),
/// when there is more than one file.
fn clash_diagnostics(
    diagnostics: &mut Vec<Diagnostic>,
    group: &[&FileReading],
    code: Code,
    (what, plural): (&str, &str),
    location: impl Fn(&FileReading) -> (usize, usize),
) {
    if group.len() < 2 {
        return;
    }
    for parsed in group {
        let others: Vec<&str> = group
            .iter()
            .filter(|other| other.file != parsed.file)
            .map(|other| other.file.as_str())
            .collect();
        let (line, column) = location(parsed);
        diagnostics.push(Diagnostic {
            path: None,
            file: parsed.file.clone(),
            line,
            column,
            code,
            message: format!("{what} is also used by {}; {plural} must be unique", others.join(", ")),
        });
    }
}

/// Every protected entry must name an existing persona, by id or slug; a
/// typo there would silently leave a real figure unprotected.
fn protected_diagnostics(
    file: &SourceFile,
    settings: &RegistrySettings,
    personas: &[ParsedPersona],
) -> Vec<Diagnostic> {
    let text = String::from_utf8_lossy(&file.bytes);
    let lines = LineIndex::new(&file.bytes);
    settings
        .policy
        .protected
        .iter()
        .filter(|name| {
            !personas
                .iter()
                .any(|parsed| names_persona(name, parsed.id, parsed.slug.as_ref().map(Slug::as_str)))
        })
        .map(|name| {
            // The settings reader keeps no spans for list items; the quoted
            // name is unique enough in a settings file to point at it.
            let offset = text.find(&format!("\"{name}\"")).unwrap_or(0);
            let (line, column) = lines.position(offset);
            Diagnostic {
                path: None,
                file: file.display_path.clone(),
                line,
                column,
                code: Code::UnknownPersona,
                message: format!("policy.protected names {name:?}, which is neither the id nor the slug of a persona"),
            }
        })
        .collect()
}

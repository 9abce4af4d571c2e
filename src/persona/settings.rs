//! `registry/registry.toml`: the registry's title, its mode vocabulary and its policy.

use serde::{Deserialize, Serialize};

use super::diagnostic::{Code, Diagnostic, Diagnostics};
use super::model::PersonaId;
use super::pin::check_label_name;
use super::reader::{TableReader, expect_array, expect_text};
use super::source::{self, Node};
use super::validate::{read_schema, source_error};

pub const SETTINGS_FILE: &str = "registry.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySettings {
    pub title: String,
    pub description: Option<String>,
    /// The allowed mode names. `None` only for a registry without a settings
    /// file, where any mode name is accepted (and `check` says so).
    pub modes: Option<Vec<String>>,
    pub policy: Policy,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub require_sources_for_real: bool,
    /// A real person's every signature phrase needs a source or a marking
    /// (attributed, paraphrased, a character's line): a bare phrase reads as
    /// a verbatim quote. Its own key, so history written before it stays valid.
    #[serde(default)]
    pub require_sources_for_real_quotes: bool,
    /// Persona ids or slugs of verified real figures; only maintainers may change them.
    pub protected: Vec<String>,
    /// Labels only maintainers may move through the API (typically `production`):
    /// what every consumer receives deserves the stricter role.
    #[serde(default)]
    pub protected_labels: Vec<String>,
}

impl Policy {
    /// Whether the policy protects the persona with this id and slug.
    pub fn protects(&self, id: PersonaId, slug: &str) -> bool {
        self.protected
            .iter()
            .any(|name| names_persona(name, Some(id), Some(slug)))
    }

    /// Whether moving `label` through the API needs the maintainer role.
    pub fn protects_label(&self, label: &str) -> bool {
        self.protected_labels.iter().any(|name| name == label)
    }
}

/// Whether an entry of `policy.protected` names this persona: its slug as
/// written, or its id in any letter case.
pub fn names_persona(name: &str, id: Option<PersonaId>, slug: Option<&str>) -> bool {
    slug == Some(name) || id.is_some_and(|id| id.to_string() == name.to_lowercase())
}

impl RegistrySettings {
    /// What applies where no `registry.toml` exists (e.g. an old commit).
    pub fn permissive() -> Self {
        RegistrySettings {
            title: "Persona registry".to_string(),
            description: None,
            modes: None,
            policy: Policy::default(),
        }
    }

    pub fn allows_mode(&self, mode: &str) -> bool {
        self.modes
            .as_ref()
            .is_none_or(|modes| modes.iter().any(|known| known == mode))
    }
}

const TOP_KEYS: &[&str] = &["schema", "title", "description", "modes", "policy"];
const POLICY_KEYS: &[&str] = &[
    "require_sources_for_real",
    "require_sources_for_real_quotes",
    "protected",
    "protected_labels",
];

/// Parses and validates a `registry.toml`. On errors the readable part of the
/// settings (or, failing that, the permissive ones) comes back with the
/// diagnostics, so personas can still be checked.
pub fn parse_settings(file: &str, bytes: &[u8]) -> (RegistrySettings, Vec<Diagnostic>) {
    let mut diagnostics = Diagnostics::new(file, bytes);
    let root = match source::parse(bytes) {
        Ok(root) => root,
        Err(error) => {
            source_error(&mut diagnostics, &error);
            return (RegistrySettings::permissive(), diagnostics.into_vec());
        }
    };
    // Partly broken settings still carry their valid parts (the modes that
    // are well formed), which is better than accepting every mode.
    let settings = read_settings(&mut diagnostics, &root).unwrap_or_else(RegistrySettings::permissive);
    (settings, diagnostics.into_vec())
}

fn read_settings(diagnostics: &mut Diagnostics, root: &Node) -> Option<RegistrySettings> {
    let mut top = TableReader::new(diagnostics, root, "", TOP_KEYS)?;
    read_schema(diagnostics, &mut top);
    let title = top
        .required(diagnostics, "title")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "title", 200));
    let description = top
        .optional("description")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "description", 2000));
    let modes = top.required(diagnostics, "modes").and_then(|entry| {
        let items = expect_array(diagnostics, &entry.value, "modes")?;
        let mut modes: Vec<String> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("modes[{index}]");
            let Some(mode) = expect_text(diagnostics, item, &path, 40) else {
                continue;
            };
            if !is_mode_name(mode) {
                diagnostics.push(
                    &item.span,
                    Code::Name,
                    format!("{path} = {mode:?} is not a mode name (a letter, then letters, digits, `-` or `_`)"),
                );
            } else if modes.iter().any(|known| known == mode) {
                diagnostics.push(&item.span, Code::Duplicate, format!("mode {mode:?} is listed twice"));
            } else {
                modes.push(mode.to_string());
            }
        }
        if modes.is_empty() && items.is_empty() {
            diagnostics.push(&entry.value.span, Code::Empty, "modes must list at least one mode");
        }
        Some(modes)
    });
    let mut policy = Policy::default();
    if let Some(entry) = top.optional("policy")
        && let Some(mut reader) = TableReader::new(diagnostics, &entry.value, "policy", POLICY_KEYS)
    {
        policy.require_sources_for_real = reader
            .boolean(diagnostics, "require_sources_for_real", false)
            .unwrap_or(false);
        policy.require_sources_for_real_quotes = reader
            .boolean(diagnostics, "require_sources_for_real_quotes", false)
            .unwrap_or(false);
        if let Some(entry) = reader.optional("protected")
            && let Some(items) = expect_array(diagnostics, &entry.value, "policy.protected")
        {
            for (index, item) in items.iter().enumerate() {
                let path = format!("policy.protected[{index}]");
                if let Some(name) = expect_text(diagnostics, item, &path, 64) {
                    policy.protected.push(name.to_string());
                }
            }
        }
        if let Some(entry) = reader.optional("protected_labels")
            && let Some(items) = expect_array(diagnostics, &entry.value, "policy.protected_labels")
        {
            for (index, item) in items.iter().enumerate() {
                let path = format!("policy.protected_labels[{index}]");
                if let Some(name) = expect_text(diagnostics, item, &path, 40) {
                    if let Err(reason) = check_label_name(name) {
                        diagnostics.push_at(&item.span, Code::Label, &path, format!("{path}: {reason}"));
                    } else {
                        policy.protected_labels.push(name.to_string());
                    }
                }
            }
        }
        reader.finish(diagnostics);
    }
    top.finish(diagnostics);
    Some(RegistrySettings {
        title: title?.to_string(),
        description: description.map(str::to_string),
        modes: Some(modes?),
        policy,
    })
}

/// Mode names are shown to readers as written ("Educator"), so they are
/// identifiers rather than slugs.
pub fn is_mode_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

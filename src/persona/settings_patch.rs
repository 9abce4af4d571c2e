//! The settings the write API may change, and how a change is made: a JSON
//! merge patch (RFC 7396) over `config`, `modes` and `traits`, applied to the
//! persona's TOML text with toml_edit, so the file keeps its comments, key
//! order and layout, and only the values named change. The result is checked
//! by the same validator as `personas check`.

use serde::Serialize;
use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::diff::{Change, diff};
use super::model::Persona;
use super::settings::{RegistrySettings, is_mode_name};
use super::validate::validate_persona;

/// The `config` keys a patch may set. `default_mode` is listed with the
/// config (as the API presents it) but lives at the top of the file.
pub const EDITABLE_CONFIG: [&str; 5] = [
    "humor_usage",
    "emotional_style",
    "language_style",
    "voice_enabled",
    "default_mode",
];

/// One reason a patch was refused, at a dotted path in the patch's terms
/// (`config.humor_usage`, `modes.Critic`, `traits.ocean.openness`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PatchProblem {
    pub path: String,
    pub message: String,
    /// Where in the resulting file the validator found it (absent for a
    /// problem with the patch itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl PatchProblem {
    fn at(path: &str, message: impl Into<String>) -> PatchProblem {
        PatchProblem {
            path: path.to_string(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

/// What applying a patch comes to.
#[derive(Debug)]
pub enum PatchOutcome {
    /// The persona's content would not change (the values are already set).
    Unchanged,
    /// The new file, valid, with the semantic changes it makes.
    Changed {
        text: String,
        persona: Box<Persona>,
        changes: Vec<Change>,
    },
    /// The patch, or the file it would produce, is invalid.
    Invalid(Vec<PatchProblem>),
}

/// Applies `patch` to the persona file `text` (at `file`, named `stem`.toml)
/// whose current content is `current`, and validates the result against the
/// registry's `settings`.
pub fn apply_settings_patch(
    file: &str,
    stem: &str,
    text: &str,
    current: &Persona,
    patch: &serde_json::Value,
    settings: &RegistrySettings,
) -> PatchOutcome {
    let mut document: DocumentMut = match text.parse() {
        Ok(document) => document,
        Err(error) => {
            return PatchOutcome::Invalid(vec![PatchProblem::at(
                "",
                format!("the persona's file {file} cannot be edited: {error}"),
            )]);
        }
    };
    let mut problems = Vec::new();
    merge(&mut document, patch, &mut problems);
    if !problems.is_empty() {
        return PatchOutcome::Invalid(problems);
    }
    let edited = document.to_string();
    let parsed = validate_persona(file, edited.as_bytes(), stem, settings);
    let Some(persona) = parsed.persona else {
        return PatchOutcome::Invalid(
            parsed
                .diagnostics
                .into_iter()
                .map(|diagnostic| PatchProblem {
                    path: diagnostic.path.as_deref().map(patch_path).unwrap_or_default(),
                    message: diagnostic.message,
                    line: Some(diagnostic.line),
                    column: Some(diagnostic.column),
                })
                .collect(),
        );
    };
    let changes = diff(current, &persona);
    if changes.is_empty() {
        return PatchOutcome::Unchanged;
    }
    PatchOutcome::Changed {
        text: edited,
        persona: Box::new(persona),
        changes,
    }
}

/// The patch's name for a key of the file: `default_mode` is presented
/// among the config settings.
fn patch_path(file_path: &str) -> String {
    if file_path == "default_mode" {
        "config.default_mode".to_string()
    } else {
        file_path.to_string()
    }
}

fn merge(document: &mut DocumentMut, patch: &serde_json::Value, problems: &mut Vec<PatchProblem>) {
    let Some(patch) = patch.as_object() else {
        problems.push(PatchProblem::at(
            "",
            "the body must be a JSON object: a merge patch over config, modes and traits",
        ));
        return;
    };
    for (key, value) in patch {
        match key.as_str() {
            "config" => merge_config(document, value, problems),
            "modes" => merge_modes(document, value, problems),
            "traits" => merge_traits(document, value, problems),
            other => problems.push(PatchProblem::at(
                other,
                format!(
                    "{other} is not an editable setting; the API changes config, modes and traits, \
                     and everything else is proposed as a pull request"
                ),
            )),
        }
    }
}

/// The members of a patch group, or a problem when the group is not an object.
fn members<'a>(
    path: &str,
    value: &'a serde_json::Value,
    problems: &mut Vec<PatchProblem>,
) -> Option<&'a serde_json::Map<String, serde_json::Value>> {
    match value {
        serde_json::Value::Object(members) => Some(members),
        serde_json::Value::Null => {
            problems.push(PatchProblem::at(path, format!("{path} cannot be removed")));
            None
        }
        _ => {
            problems.push(PatchProblem::at(path, format!("{path} must be an object")));
            None
        }
    }
}

fn merge_config(document: &mut DocumentMut, value: &serde_json::Value, problems: &mut Vec<PatchProblem>) {
    let Some(members) = members("config", value, problems) else {
        return;
    };
    for (key, value) in members {
        let path = format!("config.{key}");
        if !EDITABLE_CONFIG.contains(&key.as_str()) {
            problems.push(PatchProblem::at(
                &path,
                format!(
                    "{path} is not an editable setting; config has {}",
                    EDITABLE_CONFIG.join(", ")
                ),
            ));
            continue;
        }
        let new = match (key.as_str(), value) {
            (_, serde_json::Value::Null) => None,
            ("voice_enabled", serde_json::Value::Bool(flag)) => Some(Value::from(*flag)),
            ("voice_enabled", _) => {
                problems.push(PatchProblem::at(&path, format!("{path} must be true or false")));
                continue;
            }
            (_, serde_json::Value::String(text)) => Some(Value::from(text.as_str())),
            _ => {
                problems.push(PatchProblem::at(&path, format!("{path} must be a string")));
                continue;
            }
        };
        if key == "default_mode" {
            set_or_remove(document.as_table_mut(), key, new);
        } else {
            set_or_remove(table_at(document.as_table_mut(), "config"), key, new);
        }
    }
}

fn merge_modes(document: &mut DocumentMut, value: &serde_json::Value, problems: &mut Vec<PatchProblem>) {
    let Some(members) = members("modes", value, problems) else {
        return;
    };
    for (mode, value) in members {
        // Checked here too, not only against the vocabulary: a registry
        // without one accepts any name, and names end up in commit messages.
        if !is_mode_name(mode) {
            problems.push(PatchProblem::at(
                &format!("modes.{mode}"),
                format!("{mode:?} is not a mode name (a letter, then letters, digits, - or _)"),
            ));
            continue;
        }
        let new = match value {
            serde_json::Value::Null => None,
            serde_json::Value::Bool(enabled) => Some(Value::from(*enabled)),
            _ => {
                problems.push(PatchProblem::at(
                    &format!("modes.{mode}"),
                    format!("modes.{mode} must be true (enabled), false (disabled) or null (removed)"),
                ));
                continue;
            }
        };
        set_or_remove(table_at(document.as_table_mut(), "modes"), mode, new);
    }
}

fn merge_traits(document: &mut DocumentMut, value: &serde_json::Value, problems: &mut Vec<PatchProblem>) {
    let Some(types) = members("traits", value, problems) else {
        return;
    };
    for (trait_type, value) in types {
        let type_path = format!("traits.{trait_type}");
        let traits = table_at(document.as_table_mut(), "traits");
        if value.is_null() {
            traits.remove(trait_type);
            continue;
        }
        let Some(values) = members(&type_path, value, problems) else {
            continue;
        };
        for (name, value) in values {
            let new = match value {
                serde_json::Value::Null => None,
                serde_json::Value::Number(number) => number.as_f64().map(Value::from),
                _ => {
                    problems.push(PatchProblem::at(
                        &format!("{type_path}.{name}"),
                        format!("{type_path}.{name} must be a number in 0.0..=1.0, or null (removed)"),
                    ));
                    continue;
                }
            };
            set_or_remove(table_at(traits, trait_type), name, new);
        }
    }
}

/// The table under `key`, created (as a `[section]`) when the file has none.
/// A key holding something else is replaced by a table, which the validator
/// then judges.
fn table_at<'a>(parent: &'a mut dyn TableLike, key: &str) -> &'a mut dyn TableLike {
    let is_table = parent.get(key).is_some_and(|item| item.is_table_like());
    if !is_table {
        let mut table = toml_edit::Table::new();
        // `[traits.humor]` rather than an empty `[traits]` header above it.
        table.set_implicit(true);
        parent.insert(key, Item::Table(table));
    }
    parent
        .get_mut(key)
        .and_then(Item::as_table_like_mut)
        .expect("the key holds a table: it was just checked or inserted")
}

/// Sets `key` to `new` keeping the comments around the old value, or removes
/// it for `None`.
fn set_or_remove(table: &mut dyn TableLike, key: &str, new: Option<Value>) {
    let Some(mut new) = new else {
        table.remove(key);
        return;
    };
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(old) => {
            if same_value(old, &new) {
                return;
            }
            *new.decor_mut() = old.decor().clone();
            *old = new;
        }
        None => {
            table.insert(key, Item::Value(new));
        }
    }
}

/// Whether two values mean the same (`0.7` and `0.70`, `1` and `1.0`), so an
/// unchanged value keeps its spelling.
fn same_value(old: &Value, new: &Value) -> bool {
    let number = |value: &Value| {
        value
            .as_float()
            .or_else(|| value.as_integer().map(|integer| integer as f64))
    };
    match (number(old), number(new)) {
        (Some(old), Some(new)) => old == new,
        _ => match (old, new) {
            (Value::String(old), Value::String(new)) => old.value() == new.value(),
            (Value::Boolean(old), Value::Boolean(new)) => old.value() == new.value(),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::settings::Policy;

    const FILE: &str = r#"schema = 1
id = "6f1c2a4e-8b1d-4c3e-9f2a-1b2c3d4e5f60"
name = "Ada Lovelace"
slug = "ada"
description = "Mathematician."
domains = ["mathematics"]
is_real = false
default_mode = "Educator"

[traits.ocean]
openness = 0.90 # the poetical science
conscientiousness = 0.7
extraversion = 0.5
agreeableness = 0.6
neuroticism = 0.4

# Modes she works in.
[modes]
Educator = true
Critic = false

[config]
humor_usage = "low"
emotional_style = "reserved"
language_style = "verbose"
"#;

    fn settings() -> RegistrySettings {
        RegistrySettings {
            title: "test".into(),
            description: None,
            modes: Some(vec!["Educator".into(), "Critic".into(), "Muse".into()]),
            policy: Policy::default(),
        }
    }

    fn current() -> Persona {
        validate_persona("ada.toml", FILE.as_bytes(), "ada", &settings())
            .persona
            .expect("the fixture is valid")
    }

    fn apply(patch: serde_json::Value) -> PatchOutcome {
        apply_settings_patch("ada.toml", "ada", FILE, &current(), &patch, &settings())
    }

    #[test]
    fn changes_only_the_named_values_and_keeps_comments() {
        let PatchOutcome::Changed { text, persona, changes } = apply(serde_json::json!({
            "config": {"humor_usage": "high", "voice_enabled": true, "default_mode": "Critic"},
            "modes": {"Critic": true, "Muse": true},
            "traits": {"ocean": {"openness": 0.95}, "humor": {"wit": 1}}
        })) else {
            panic!("a valid patch was refused");
        };
        assert!(text.contains("openness = 0.95 # the poetical science"), "{text}");
        assert!(text.contains("# Modes she works in.\n[modes]"), "{text}");
        assert!(text.contains("conscientiousness = 0.7\n"), "{text}");
        assert!(text.contains("[traits.humor]\nwit = 1.0"), "{text}");
        assert_eq!(persona.default_mode.as_deref(), Some("Critic"));
        assert!(persona.config.voice_enabled);
        assert_eq!(persona.modes.get("Muse"), Some(&true));
        assert_eq!(changes.len(), 7, "{changes:?}");
    }

    #[test]
    fn values_already_set_change_nothing() {
        let outcome =
            apply(serde_json::json!({"config": {"humor_usage": "low"}, "traits": {"ocean": {"openness": 0.9}}}));
        assert!(matches!(outcome, PatchOutcome::Unchanged), "{outcome:?}");
    }

    #[test]
    fn invalid_values_are_reported_at_their_paths() {
        let PatchOutcome::Invalid(problems) = apply(serde_json::json!({
            "config": {"humor_usage": "loud", "default_mode": "Muse"},
            "traits": {"ocean": {"openness": 1.5}},
            "modes": {"Dancer": true}
        })) else {
            panic!("invalid values were accepted");
        };
        let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
        for expected in [
            "config.humor_usage",
            "traits.ocean.openness",
            "modes.Dancer",
            "config.default_mode",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {problems:?}");
        }
        assert!(problems.iter().all(|problem| problem.line.is_some()), "{problems:?}");
    }

    #[test]
    fn fields_outside_the_settings_and_wrong_types_are_refused_before_validation() {
        let PatchOutcome::Invalid(problems) = apply(serde_json::json!({
            "name": "Someone Else",
            "config": {"voice_enabled": "yes", "temperature": 0.3},
            "modes": {"Critic": "on", "X\n\nSigned-off-by: M <m@x>": true},
            "traits": {"ocean": {"openness": "high"}}
        })) else {
            panic!("a patch of fixed fields was accepted");
        };
        let paths: Vec<&str> = problems.iter().map(|problem| problem.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "name",
                "config.voice_enabled",
                "config.temperature",
                "modes.Critic",
                "modes.X\n\nSigned-off-by: M <m@x>",
                "traits.ocean.openness"
            ],
            "{problems:?}"
        );
        assert!(matches!(apply(serde_json::json!([1, 2])), PatchOutcome::Invalid(_)));
        assert!(matches!(
            apply(serde_json::json!({"config": null})),
            PatchOutcome::Invalid(_)
        ));
    }

    #[test]
    fn null_removes_and_the_validator_judges_the_result() {
        let PatchOutcome::Invalid(problems) = apply(serde_json::json!({"config": {"humor_usage": null}})) else {
            panic!("removing a required setting was accepted");
        };
        assert_eq!(problems[0].path, "config.humor_usage", "{problems:?}");
        let PatchOutcome::Changed { persona, .. } = apply(serde_json::json!({"modes": {"Critic": null}})) else {
            panic!("removing a mode was refused");
        };
        assert!(!persona.modes.contains_key("Critic"));
    }
}

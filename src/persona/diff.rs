//! Field-level differences between two versions of a persona: what a reviewer
//! wants to see, not a line diff of the TOML.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{Value, json};

use super::model::{Belief, Persona};

/// One semantic change. Serialized with a `kind` tag for the JSON API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A single value changed (name, description, config.humor_usage, …).
    Field {
        field: String,
        old: Value,
        new: Value,
    },
    ItemAdded {
        field: String,
        item: String,
    },
    ItemRemoved {
        field: String,
        item: String,
    },
    /// Same items, new order.
    Reordered {
        field: String,
    },
    BeliefAdded {
        text: String,
        source: Option<String>,
    },
    BeliefRemoved {
        text: String,
        source: Option<String>,
    },
    BeliefSourceChanged {
        text: String,
        old: Option<String>,
        new: Option<String>,
    },
    TraitChanged {
        trait_type: String,
        name: String,
        old: f64,
        new: f64,
    },
    TraitAdded {
        trait_type: String,
        name: String,
        value: f64,
    },
    TraitRemoved {
        trait_type: String,
        name: String,
        value: f64,
    },
    ModeEnabled {
        mode: String,
    },
    ModeDisabled {
        mode: String,
    },
    ModeAdded {
        mode: String,
        enabled: bool,
    },
    ModeRemoved {
        mode: String,
        enabled: bool,
    },
}

/// Every difference from `old` to `new`, in a stable order: identity and
/// description first, then lists, traits, beliefs, modes and config.
pub fn diff(old: &Persona, new: &Persona) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut field = |name: &str, old: Value, new: Value| {
        if old != new {
            changes.push(Change::Field {
                field: name.to_string(),
                old,
                new,
            });
        }
    };
    field("schema", json!(old.schema), json!(new.schema));
    field("slug", json!(old.slug), json!(new.slug));
    field("name", json!(old.name), json!(new.name));
    field("description", json!(old.description), json!(new.description));
    field("is_real", json!(old.is_real), json!(new.is_real));
    field("birth_date", json!(old.birth_date), json!(new.birth_date));
    field("avatar_url", json!(old.avatar_url), json!(new.avatar_url));
    field("default_mode", json!(old.default_mode), json!(new.default_mode));
    field(
        "config.humor_usage",
        json!(old.config.humor_usage),
        json!(new.config.humor_usage),
    );
    field(
        "config.emotional_style",
        json!(old.config.emotional_style),
        json!(new.config.emotional_style),
    );
    field(
        "config.language_style",
        json!(old.config.language_style),
        json!(new.config.language_style),
    );
    field(
        "config.voice_enabled",
        json!(old.config.voice_enabled),
        json!(new.config.voice_enabled),
    );

    list_changes(&mut changes, "domains", &old.domains, &new.domains);
    list_changes(
        &mut changes,
        "signature_phrases",
        &old.signature_phrases,
        &new.signature_phrases,
    );
    citation_changes(&mut changes, old, new);
    trait_changes(&mut changes, old, new);
    belief_changes(&mut changes, &old.beliefs, &new.beliefs);
    mode_changes(&mut changes, old, new);
    changes
}

/// A phrase's source or marking, a kept belief's marking and a trait
/// type's source, as field changes: a reviewer must see an attribution
/// turn into a claimed quotation as plainly as a changed text.
fn citation_changes(changes: &mut Vec<Change>, old: &Persona, new: &Persona) {
    let mut field = |field: String, old: Value, new: Value| {
        if old != new {
            changes.push(Change::Field { field, old, new });
        }
    };
    for phrase in new
        .signature_phrases
        .iter()
        .filter(|phrase| old.signature_phrases.contains(phrase))
    {
        field(
            format!("signature_phrases[{phrase:?}]"),
            json!(old.phrase_citations.get(phrase)),
            json!(new.phrase_citations.get(phrase)),
        );
    }
    for belief in &new.beliefs {
        if let Some(kept) = old.beliefs.iter().find(|candidate| candidate.text == belief.text) {
            field(
                format!("beliefs[{:?}].marking", belief.text),
                json!(kept.marking),
                json!(belief.marking),
            );
        }
    }
    let kinds: BTreeSet<&String> = old.trait_sources.keys().chain(new.trait_sources.keys()).collect();
    for kind in kinds {
        field(
            format!("trait_sources.{kind}"),
            json!(old.trait_sources.get(kind)),
            json!(new.trait_sources.get(kind)),
        );
    }
}

fn list_changes(changes: &mut Vec<Change>, field: &str, old: &[String], new: &[String]) {
    let removed: Vec<&String> = old.iter().filter(|item| !new.contains(item)).collect();
    let added: Vec<&String> = new.iter().filter(|item| !old.contains(item)).collect();
    for item in &removed {
        changes.push(Change::ItemRemoved {
            field: field.to_string(),
            item: (*item).clone(),
        });
    }
    for item in &added {
        changes.push(Change::ItemAdded {
            field: field.to_string(),
            item: (*item).clone(),
        });
    }
    let kept_old: Vec<&String> = old.iter().filter(|item| new.contains(item)).collect();
    let kept_new: Vec<&String> = new.iter().filter(|item| old.contains(item)).collect();
    if kept_old != kept_new {
        changes.push(Change::Reordered {
            field: field.to_string(),
        });
    }
}

fn trait_changes(changes: &mut Vec<Change>, old: &Persona, new: &Persona) {
    let types: BTreeSet<&String> = old.traits.keys().chain(new.traits.keys()).collect();
    for trait_type in types {
        let empty = Default::default();
        let old_values = old.traits.get(trait_type).unwrap_or(&empty);
        let new_values = new.traits.get(trait_type).unwrap_or(&empty);
        let names: BTreeSet<&String> = old_values.keys().chain(new_values.keys()).collect();
        for name in names {
            let change = match (old_values.get(name), new_values.get(name)) {
                (Some(&old), Some(&new)) if old != new => Change::TraitChanged {
                    trait_type: trait_type.clone(),
                    name: name.clone(),
                    old,
                    new,
                },
                (Some(&value), None) => Change::TraitRemoved {
                    trait_type: trait_type.clone(),
                    name: name.clone(),
                    value,
                },
                (None, Some(&value)) => Change::TraitAdded {
                    trait_type: trait_type.clone(),
                    name: name.clone(),
                    value,
                },
                _ => continue,
            };
            changes.push(change);
        }
    }
}

fn belief_changes(changes: &mut Vec<Change>, old: &[Belief], new: &[Belief]) {
    for belief in old {
        match new.iter().find(|candidate| candidate.text == belief.text) {
            None => changes.push(Change::BeliefRemoved {
                text: belief.text.clone(),
                source: belief.source.clone(),
            }),
            Some(kept) if kept.source != belief.source => changes.push(Change::BeliefSourceChanged {
                text: belief.text.clone(),
                old: belief.source.clone(),
                new: kept.source.clone(),
            }),
            Some(_) => {}
        }
    }
    for belief in new {
        if !old.iter().any(|candidate| candidate.text == belief.text) {
            changes.push(Change::BeliefAdded {
                text: belief.text.clone(),
                source: belief.source.clone(),
            });
        }
    }
    let old_order: Vec<&String> = old
        .iter()
        .map(|b| &b.text)
        .filter(|t| new.iter().any(|b| &b.text == *t))
        .collect();
    let new_order: Vec<&String> = new
        .iter()
        .map(|b| &b.text)
        .filter(|t| old.iter().any(|b| &b.text == *t))
        .collect();
    if old_order != new_order {
        changes.push(Change::Reordered {
            field: "beliefs".to_string(),
        });
    }
}

fn mode_changes(changes: &mut Vec<Change>, old: &Persona, new: &Persona) {
    let modes: BTreeSet<&String> = old.modes.keys().chain(new.modes.keys()).collect();
    for mode in modes {
        let change = match (old.modes.get(mode), new.modes.get(mode)) {
            (Some(false), Some(true)) => Change::ModeEnabled { mode: mode.clone() },
            (Some(true), Some(false)) => Change::ModeDisabled { mode: mode.clone() },
            (None, Some(&enabled)) => Change::ModeAdded {
                mode: mode.clone(),
                enabled,
            },
            (Some(&enabled), None) => Change::ModeRemoved {
                mode: mode.clone(),
                enabled,
            },
            _ => continue,
        };
        changes.push(change);
    }
}

fn show(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_string(),
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

/// Two decimals is how traits are authored; more would be noise in a review.
fn number(value: f64) -> String {
    format!("{value:.2}")
}

/// One line per change, readable in a terminal or a review comment.
pub fn describe(change: &Change) -> String {
    match change {
        Change::Field { field, old, new } => format!("{field}: {} → {}", show(old), show(new)),
        Change::ItemAdded { field, item } => format!("{field}: + {item:?}"),
        Change::ItemRemoved { field, item } => format!("{field}: − {item:?}"),
        Change::Reordered { field } => format!("{field}: reordered"),
        Change::BeliefAdded { text, source } => match source {
            Some(source) => format!("belief added: {text:?} (source: {source})"),
            None => format!("belief added: {text:?} (no source)"),
        },
        Change::BeliefRemoved { text, .. } => format!("belief removed: {text:?}"),
        Change::BeliefSourceChanged { text, old, new } => format!(
            "belief source changed for {text:?}: {} → {}",
            old.as_deref().unwrap_or("(none)"),
            new.as_deref().unwrap_or("(none)")
        ),
        Change::TraitChanged {
            trait_type,
            name,
            old,
            new,
        } => format!(
            "traits.{trait_type}.{name}: {} → {} ({:+.2})",
            number(*old),
            number(*new),
            new - old
        ),
        Change::TraitAdded {
            trait_type,
            name,
            value,
        } => format!("traits.{trait_type}.{name}: added = {}", number(*value)),
        Change::TraitRemoved {
            trait_type,
            name,
            value,
        } => {
            format!("traits.{trait_type}.{name}: removed (was {})", number(*value))
        }
        Change::ModeEnabled { mode } => format!("mode {mode}: enabled"),
        Change::ModeDisabled { mode } => format!("mode {mode}: disabled"),
        Change::ModeAdded { mode, enabled } => {
            format!("mode {mode}: added ({})", if *enabled { "enabled" } else { "disabled" })
        }
        Change::ModeRemoved { mode, .. } => format!("mode {mode}: removed"),
    }
}

/// A one-line summary for timelines: "openness 0.90→0.95, +1 belief, name".
pub fn summarize(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no content change".to_string();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut beliefs_added = 0;
    let mut beliefs_removed = 0;
    for change in changes {
        match change {
            Change::Field { field, .. } => parts.push(field.clone()),
            Change::ItemAdded { field, item } => parts.push(format!("+{field} {item:?}")),
            Change::ItemRemoved { field, item } => parts.push(format!("−{field} {item:?}")),
            Change::Reordered { field } => parts.push(format!("{field} reordered")),
            Change::BeliefAdded { .. } => beliefs_added += 1,
            Change::BeliefRemoved { .. } => beliefs_removed += 1,
            Change::BeliefSourceChanged { .. } => parts.push("belief source".to_string()),
            Change::TraitChanged { name, old, new, .. } => {
                parts.push(format!("{name} {}→{}", number(*old), number(*new)))
            }
            Change::TraitAdded { name, .. } => parts.push(format!("+trait {name}")),
            Change::TraitRemoved { name, .. } => parts.push(format!("−trait {name}")),
            Change::ModeEnabled { mode } | Change::ModeAdded { mode, enabled: true } => {
                parts.push(format!("+mode {mode}"))
            }
            Change::ModeDisabled { mode }
            | Change::ModeAdded { mode, enabled: false }
            | Change::ModeRemoved { mode, .. } => parts.push(format!("−mode {mode}")),
        }
    }
    if beliefs_added > 0 {
        parts.push(format!(
            "+{beliefs_added} belief{}",
            if beliefs_added == 1 { "" } else { "s" }
        ));
    }
    if beliefs_removed > 0 {
        parts.push(format!(
            "−{beliefs_removed} belief{}",
            if beliefs_removed == 1 { "" } else { "s" }
        ));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::{RegistrySettings, validate_persona};

    fn persona(phrases: &str, belief_marking: &str, trait_sources: &str) -> Persona {
        let text = format!(
            r#"schema = 1
id = "0b7f6f0e-5d38-4d6c-9a51-3f3c1c1e1879"
name = "Test"
slug = "test"
description = "A test."
domains = ["physics"]
is_real = true
signature_phrases = [{phrases}]

[traits.ocean]
openness = 0.1
conscientiousness = 0.2
extraversion = 0.3
agreeableness = 0.4
neuroticism = 0.5

[trait_sources]
{trait_sources}

[[beliefs]]
text = "A belief."
source = "https://example.org/"
{belief_marking}

[modes]
Educator = true

[config]
humor_usage = "low"
emotional_style = "reserved"
language_style = "concise"
voice_enabled = false
"#
        );
        let parsed = validate_persona("test.toml", text.as_bytes(), "test", &RegistrySettings::permissive());
        parsed
            .persona
            .unwrap_or_else(|| panic!("{text}\n{:?}", parsed.diagnostics))
    }

    #[test]
    fn markings_and_sources_are_changes() {
        let old = persona(r#""Quote.""#, "", "");
        let new = persona(
            r#"{ text = "Quote.", marking = "attributed" }"#,
            r#"marking = "paraphrased""#,
            r#"ocean = "editorial-estimate""#,
        );
        let fields: Vec<String> = diff(&old, &new)
            .into_iter()
            .map(|change| match change {
                Change::Field { field, old, new } => format!("{field}: {old} -> {new}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            fields,
            [
                r#"signature_phrases["Quote."]: null -> {"marking":"attributed"}"#,
                r#"beliefs["A belief."].marking: null -> "paraphrased""#,
                r#"trait_sources.ocean: null -> "editorial-estimate""#,
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}

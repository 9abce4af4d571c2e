//! The JSON persona shapes of the seed documents as a persona.
//!
//! Two shapes are known: the "Example Entry (Einstein)" (`domain`, OCEAN
//! nested under `traits.OCEAN`, `humor_usage` and `emotional_style` inside
//! `traits`, `modes` as a list, a non-UUID `id`) and the flatter MongoDB
//! document (`_id`, `traits` holding the five OCEAN values directly,
//! `humor_usage` at the top level, `signature_phrases`). Rather than one
//! parser per shape, each field is looked for in the places either shape
//! (and the seed's tables, e.g. `config`) puts it, so near variants work too.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::draft::{self, ConfigText, Notes};
use super::from_card::{Mapped, has_content, string_field, string_list, type_name};
use crate::persona::model::{OCEAN_TRAITS, SCHEMA_VERSION, Traits};
use crate::persona::{Persona, RegistrySettings, Slug};

/// Top-level keys the mapping reads; any other key with content is reported.
const KNOWN_KEYS: &[&str] = &[
    "id",
    "_id",
    "uuid",
    "name",
    "slug",
    "description",
    "domain",
    "domains",
    "tags",
    "is_real",
    "birth_date",
    "avatar_url",
    "signature_phrases",
    "traits",
    "beliefs",
    "modes",
    "default_mode",
    "config",
    "humor_usage",
    "emotional_style",
    "language_style",
    "voice_enabled",
];

const CONFIG_TEXT_KEYS: [&str; 3] = ["humor_usage", "emotional_style", "language_style"];

/// The trait group that flat traits other than the OCEAN five go into.
const OTHER_TRAITS: &str = "other";

pub fn persona_from_seed(
    seed: &Map<String, Value>,
    slug: Option<&Slug>,
    settings: &RegistrySettings,
) -> Result<Mapped, String> {
    let mut notes = Notes::new();
    let name = draft::name(string_field(seed, "name", "")?, &mut notes)?;
    let id_text = ["id", "_id", "uuid"]
        .iter()
        .find_map(|key| seed.get(*key).and_then(Value::as_str));
    let id = draft::id(id_text, &mut notes);
    let slug = draft::slug(slug, string_field(seed, "slug", "")?, &name, &mut notes)?;

    let mut tags = Vec::new();
    for key in ["domains", "domain", "tags"] {
        tags.extend(string_list(seed, key, "")?);
    }
    let domains = draft::domains(&tags, &mut notes);
    let description = draft::description(string_field(seed, "description", "")?, &name, &domains, &mut notes);

    let is_real = match seed.get("is_real") {
        Some(Value::Bool(flag)) => *flag,
        _ => {
            notes.push(
                "is_real not given; set to false (a real person's beliefs need sources): set it to true once \
                 every belief has a source"
                    .to_string(),
            );
            false
        }
    };
    let birth_date = birth_date(string_field(seed, "birth_date", "")?, &mut notes);
    let avatar_url = avatar_url(string_field(seed, "avatar_url", "")?, &mut notes);
    let signature_phrases = draft::signature_phrases(&string_list(seed, "signature_phrases", "")?, &mut notes);

    let mut config_text = ConfigText::default();
    let empty = Map::new();
    let config_table = match seed.get("config") {
        Some(Value::Object(config)) => config,
        _ => &empty,
    };
    read_config(config_table, &mut config_text);
    read_config(seed, &mut config_text);
    let traits = read_traits(seed.get("traits"), &mut config_text, &mut notes)?;
    let config = draft::config(&config_text, &mut notes);

    let beliefs = draft::beliefs(&read_beliefs(seed.get("beliefs"), &mut notes)?, &mut notes);
    let given_modes = read_modes(seed.get("modes"))?;
    let default_mode =
        string_field(seed, "default_mode", "")?.or(string_field(config_table, "default_mode", "config.")?);
    let (modes, default_mode) = draft::modes(&given_modes, default_mode, settings, &mut notes);

    let unmapped: Vec<String> = seed
        .iter()
        .filter(|(key, value)| !KNOWN_KEYS.contains(&key.as_str()) && has_content(value))
        .map(|(key, _)| key.clone())
        .chain(
            config_table
                .iter()
                .filter(|(key, _)| {
                    !CONFIG_TEXT_KEYS.contains(&key.as_str())
                        && !matches!(key.as_str(), "voice_enabled" | "default_mode")
                })
                .map(|(key, _)| format!("config.{key}")),
        )
        .collect();
    draft::not_mapped(&unmapped, &mut notes);

    Ok(Mapped {
        persona: Persona {
            schema: SCHEMA_VERSION,
            id,
            slug,
            name,
            description,
            domains,
            is_real,
            birth_date,
            avatar_url,
            signature_phrases,
            phrase_citations: Default::default(),
            trait_sources: Default::default(),
            traits,
            beliefs,
            modes,
            default_mode,
            config,
        },
        notes,
        restored: false,
    })
}

/// Fills the config values `table` has that are still unknown, so the first
/// place that gives a value wins.
fn read_config(table: &Map<String, Value>, config: &mut ConfigText) {
    let text = |key: &str| table.get(key).and_then(Value::as_str).map(str::to_string);
    config.humor_usage = config.humor_usage.take().or_else(|| text("humor_usage"));
    config.emotional_style = config.emotional_style.take().or_else(|| text("emotional_style"));
    config.language_style = config.language_style.take().or_else(|| text("language_style"));
    config.voice_enabled = config
        .voice_enabled
        .or_else(|| table.get("voice_enabled").and_then(Value::as_bool));
}

/// Trait groups (`"OCEAN": {…}`), flat trait values (the five OCEAN names
/// go to `ocean`, others to `other`) and config values kept inside `traits`.
fn read_traits(traits: Option<&Value>, config: &mut ConfigText, notes: &mut Notes) -> Result<Traits, String> {
    let entries = match traits {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(entries)) => entries.clone(),
        Some(other) => return Err(format!("`traits` must be an object, found {}", type_name(other))),
    };
    read_config(&entries, config);
    let mut groups: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut moved: Vec<String> = Vec::new();
    for (key, value) in &entries {
        let path = format!("traits.{key}");
        match value {
            Value::Object(values) => {
                let Some(group) = draft::trait_name(key).map(|group| ocean_synonym(&group)) else {
                    skipped.push(path);
                    continue;
                };
                for (trait_key, trait_value) in values {
                    let trait_path = format!("{path}.{trait_key}");
                    match (draft::trait_name(trait_key), trait_value.as_f64()) {
                        (Some(name), Some(number)) => {
                            let group = if group == "ocean" && !OCEAN_TRAITS.contains(&name.as_str()) {
                                moved.push(trait_path.clone());
                                OTHER_TRAITS.to_string()
                            } else {
                                group.clone()
                            };
                            insert_trait(&mut groups, group, name, number, &trait_path)?;
                        }
                        _ => skipped.push(trait_path),
                    }
                }
            }
            Value::Number(number) => match (draft::trait_name(key), number.as_f64()) {
                (Some(name), Some(number)) => {
                    let group = if OCEAN_TRAITS.contains(&name.as_str()) {
                        "ocean"
                    } else {
                        OTHER_TRAITS
                    };
                    insert_trait(&mut groups, group.to_string(), name, number, &path)?;
                }
                _ => skipped.push(path),
            },
            Value::String(_) if CONFIG_TEXT_KEYS.contains(&key.as_str()) => {}
            Value::Bool(_) if key == "voice_enabled" => {}
            _ => skipped.push(path),
        }
    }
    if !moved.is_empty() {
        notes.push(format!(
            "not OCEAN traits, kept under [traits.{OTHER_TRAITS}]: {}",
            moved.join(", ")
        ));
    }
    if !skipped.is_empty() {
        notes.push(format!(
            "traits that are not named numbers dropped: {}",
            skipped.join(", ")
        ));
    }
    let given_ocean = groups.remove("ocean").unwrap_or_default();
    let mut traits = Traits::new();
    traits.insert("ocean".to_string(), draft::ocean(&given_ocean, notes));
    traits.extend(groups);
    Ok(traits)
}

/// The names seed data uses for the Big Five, which the registry calls `ocean`.
fn ocean_synonym(group: &str) -> String {
    match group {
        "big_five" | "bigfive" | "big5" | "five_factor" => "ocean".to_string(),
        other => other.to_string(),
    }
}

fn insert_trait(
    groups: &mut BTreeMap<String, BTreeMap<String, f64>>,
    group: String,
    name: String,
    value: f64,
    path: &str,
) -> Result<(), String> {
    if !(0.0..=1.0).contains(&value) {
        return Err(format!(
            "`{path}` = {value} is outside 0.0..=1.0, the registry's trait scale"
        ));
    }
    groups.entry(group).or_default().insert(name, value);
    Ok(())
}

/// Beliefs as plain strings or as objects with `text` (or `belief`) and `source`.
fn read_beliefs(beliefs: Option<&Value>, notes: &mut Notes) -> Result<Vec<(String, Option<String>)>, String> {
    let items = match beliefs {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("`beliefs` must be a list, found {}", type_name(other))),
    };
    let mut beliefs = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(text) => beliefs.push((text.clone(), None)),
            Value::Object(fields) => {
                let text = ["text", "belief"]
                    .iter()
                    .find_map(|key| fields.get(*key).and_then(Value::as_str));
                let source = fields.get("source").and_then(Value::as_str).map(str::to_string);
                match text {
                    Some(text) => beliefs.push((text.to_string(), source)),
                    None => notes.push(format!("beliefs[{index}] has no text and was dropped")),
                }
            }
            other => notes.push(format!("beliefs[{index}] is {} and was dropped", type_name(other))),
        }
    }
    Ok(beliefs)
}

/// Modes as a list of names (all enabled), an object of name → enabled, or
/// a list of `{mode, enabled}` rows.
fn read_modes(modes: Option<&Value>) -> Result<Vec<(String, bool)>, String> {
    match modes {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(entries)) => Ok(entries
            .iter()
            .map(|(name, enabled)| (name.clone(), enabled.as_bool().unwrap_or(true)))
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(name) => Ok((name.clone(), true)),
                Value::Object(row) => match row.get("mode").and_then(Value::as_str) {
                    Some(name) => Ok((
                        name.to_string(),
                        row.get("enabled").and_then(Value::as_bool).unwrap_or(true),
                    )),
                    None => Err(format!("`modes[{index}]` has no `mode` name")),
                },
                other => Err(format!(
                    "`modes[{index}]` must be a mode name, found {}",
                    type_name(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "`modes` must be a list of mode names, found {}",
            type_name(other)
        )),
    }
}

fn birth_date(text: Option<&str>, notes: &mut Notes) -> Option<chrono::NaiveDate> {
    let text = text?.trim();
    match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(date) if (0..=9999).contains(&chrono::Datelike::year(&date)) => Some(date),
        _ => {
            notes.push(format!(
                "birth_date {text:?} is not a date such as 1879-03-14; left out"
            ));
            None
        }
    }
}

fn avatar_url(text: Option<&str>, notes: &mut Notes) -> Option<String> {
    let text = text?.trim();
    match url::Url::parse(text) {
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Some(text.to_string()),
        _ => {
            notes.push(format!("avatar_url {text:?} is not an https:// URL; left out"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> RegistrySettings {
        RegistrySettings {
            modes: Some(vec!["Educator".into(), "Critic".into()]),
            ..RegistrySettings::permissive()
        }
    }

    #[test]
    fn near_variants_of_the_seed_shapes_are_read() {
        let seed = json!({
            "name": "Grace Hopper",
            "traits": {"Big Five": {"Openness": 0.9, "honesty": 0.8}, "Extraversion": 0.6},
            "modes": [{"mode": "critic", "enabled": true}, {"mode": "Educator", "enabled": false}],
            "config": {"language_style": "verbose", "voice_enabled": true, "default_mode": "Critic"},
            "beliefs": [{"text": "Ships are safe in harbor.", "source": "isbn:0-00-000000-0"}]
        });
        let mapped = persona_from_seed(seed.as_object().unwrap(), None, &settings()).unwrap();
        let persona = mapped.persona;
        assert_eq!(persona.traits["ocean"]["openness"], 0.9);
        assert_eq!(persona.traits["ocean"]["extraversion"], 0.6);
        assert_eq!(persona.traits["other"]["honesty"], 0.8);
        assert_eq!(
            persona.modes,
            BTreeMap::from([("Critic".to_string(), true), ("Educator".to_string(), false)])
        );
        assert_eq!(persona.default_mode.as_deref(), Some("Critic"));
        assert!(persona.config.voice_enabled);
        assert_eq!(persona.beliefs[0].source.as_deref(), Some("isbn:0-00-000000-0"));
        let notes = mapped.notes.join("\n");
        assert!(notes.contains("traits.Big Five.honesty"), "{notes}");
    }
}

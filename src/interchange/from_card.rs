//! A Character Card (V1, V2 or V3) as a persona.
//!
//! A card exported by this registry carries the whole persona under
//! `data.extensions["persona-registry"]`; that document is used as it is, so
//! the round trip is exact. Any other card is mapped: a card is prose for a
//! chat front-end and has no traits, beliefs, modes or style settings, so
//! those get neutral defaults, and every card field without a counterpart
//! (personality, first_mes, system_prompt …) is named in the notes.

use serde_json::{Map, Value};

use super::document::{EXTENSION_KEY, PersonaDocument};
use super::draft::{self, ConfigText, Notes};
use crate::persona::model::{OCEAN_TRAITS, SCHEMA_VERSION, Traits};
use crate::persona::{Persona, RegistrySettings, Slug};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardVersion {
    /// Flat `name`, `description`, `personality`, … with no `spec`.
    V1,
    V2,
    V3,
}

/// A persona made from foreign data, and what the mapping could not carry.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub persona: Persona,
    pub notes: Notes,
    /// Rebuilt from the registry's own document rather than mapped.
    pub restored: bool,
}

/// The fields a card's `data` object has by the specs, which the mapping
/// either uses or reports.
const MAPPED_FIELDS: &[&str] = &["name", "description", "tags"];

pub fn persona_from_card(
    card: &Map<String, Value>,
    version: CardVersion,
    slug: Option<&Slug>,
    settings: &RegistrySettings,
) -> Result<Mapped, String> {
    let data = match version {
        CardVersion::V1 => card,
        CardVersion::V2 | CardVersion::V3 => match card.get("data") {
            Some(Value::Object(data)) => data,
            Some(other) => return Err(format!("`data` must be an object, found {}", type_name(other))),
            None => return Err("is a V2/V3 card without its `data` object".to_string()),
        },
    };
    let mut notes = Notes::new();
    if let Some(embedded) = data
        .get("extensions")
        .and_then(|extensions| extensions.get(EXTENSION_KEY))
    {
        match PersonaDocument::from_json(embedded) {
            Ok(document) => return Ok(restore(document, data, slug, notes)),
            Err(error) => notes.push(format!(
                "the card's `{EXTENSION_KEY}` extension cannot be read ({error}); mapped the card's fields instead"
            )),
        }
    }
    map_fields(data, version, slug, settings, notes)
}

/// The persona exactly as the registry exported it, with notes where the
/// card's visible fields were edited since (those edits are not taken).
fn restore(document: PersonaDocument, data: &Map<String, Value>, slug: Option<&Slug>, mut notes: Notes) -> Mapped {
    if !document.is_intact() {
        notes.push(format!(
            "the embedded persona no longer matches its recorded content hash {}: it was edited after export",
            document.content_hash
        ));
    }
    let mut persona = document.persona;
    let edited = |field: &str, current: Value| data.get(field).is_some_and(|value| *value != current);
    let mut changed: Vec<&str> = Vec::new();
    if edited("name", Value::from(persona.name.clone())) {
        changed.push("name");
    }
    if edited("description", Value::from(persona.description.clone())) {
        changed.push("description");
    }
    if edited("tags", Value::from(persona.domains.clone())) {
        changed.push("tags");
    }
    if !changed.is_empty() {
        notes.push(format!(
            "the card's {} differ from the embedded registry persona (edited in another tool?); the registry's version was kept",
            changed.join(", ")
        ));
    }
    draft::rename(&mut persona, slug, &mut notes);
    Mapped {
        persona,
        notes,
        restored: true,
    }
}

fn map_fields(
    data: &Map<String, Value>,
    version: CardVersion,
    slug: Option<&Slug>,
    settings: &RegistrySettings,
    mut notes: Notes,
) -> Result<Mapped, String> {
    let prefix = if version == CardVersion::V1 { "" } else { "data." };
    let name = draft::name(string_field(data, "name", prefix)?, &mut notes)?;
    let tags = string_list(data, "tags", prefix)?;
    let domains = draft::domains(&tags, &mut notes);
    let description = draft::description(string_field(data, "description", prefix)?, &name, &domains, &mut notes);
    let slug = draft::slug(slug, None, &name, &mut notes)?;
    let avatar_url = icon_url(data);

    notes.push(
        "is_real = false: a card does not say whether its character is a real person, and a real person's \
         beliefs need sources; set is_real = true (with sourced beliefs) if it is one"
            .to_string(),
    );
    let mut traits = Traits::new();
    traits.insert("ocean".to_string(), draft::ocean(&Default::default(), &mut notes));
    debug_assert_eq!(traits["ocean"].len(), OCEAN_TRAITS.len());
    notes.push("no beliefs: a card has none; add [[beliefs]] by hand".to_string());
    let (modes, default_mode) = draft::modes(&[], None, settings, &mut notes);
    let config = draft::config(&ConfigText::default(), &mut notes);

    let mut unmapped: Vec<String> = data
        .iter()
        .filter(|(key, value)| {
            !MAPPED_FIELDS.contains(&key.as_str()) && key.as_str() != "extensions" && has_content(value)
        })
        .filter(|(key, _)| !(key.as_str() == "assets" && avatar_url.is_some()))
        .map(|(key, _)| format!("{prefix}{key}"))
        .collect();
    if let Some(Value::Object(extensions)) = data.get("extensions") {
        unmapped.extend(extensions.keys().map(|key| format!("{prefix}extensions.{key}")));
    }
    draft::not_mapped(&unmapped, &mut notes);

    Ok(Mapped {
        persona: Persona {
            schema: SCHEMA_VERSION,
            id: draft::id(None, &mut notes),
            slug,
            name,
            description,
            domains,
            is_real: false,
            birth_date: None,
            avatar_url,
            signature_phrases: Vec::new(),
            phrase_citations: Default::default(),
            trait_sources: Default::default(),
            traits,
            beliefs: Vec::new(),
            modes,
            default_mode,
            config,
        },
        notes,
        restored: false,
    })
}

/// A V3 card's main icon, when it is an https URL (what `avatar_url` allows).
fn icon_url(data: &Map<String, Value>) -> Option<String> {
    let assets = data.get("assets")?.as_array()?;
    let icons = assets
        .iter()
        .filter(|asset| asset.get("type").and_then(Value::as_str) == Some("icon"));
    let mut main_first: Vec<&Value> = icons.collect();
    main_first.sort_by_key(|asset| asset.get("name").and_then(Value::as_str) != Some("main"));
    main_first
        .into_iter()
        .filter_map(|asset| asset.get("uri").and_then(Value::as_str))
        .find(|uri| url::Url::parse(uri).is_ok_and(|url| url.scheme() == "https" && url.host().is_some()))
        .map(str::to_string)
}

/// A string field: absent or null is `None`; another type is an error.
pub fn string_field<'a>(data: &'a Map<String, Value>, key: &str, prefix: &str) -> Result<Option<&'a str>, String> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!("`{prefix}{key}` must be a string, found {}", type_name(other))),
    }
}

/// A list of strings: absent or null is empty; another type is an error.
pub fn string_list(data: &Map<String, Value>, key: &str, prefix: &str) -> Result<Vec<String>, String> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::String(text) => Ok(text.clone()),
                other => Err(format!(
                    "`{prefix}{key}[{index}]` must be a string, found {}",
                    type_name(other)
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "`{prefix}{key}` must be a list of strings, found {}",
            type_name(other)
        )),
    }
}

/// Whether a value carries anything worth reporting as lost.
pub fn has_content(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::String(text) => !text.trim().is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        Value::Bool(_) | Value::Number(_) => true,
    }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

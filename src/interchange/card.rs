//! A persona as a Character Card, the JSON shape chat front-ends import.
//!
//! The shapes follow the published specifications: V2
//! (`spec: "chara_card_v2"`, malfoyslastname/character-card-spec-v2) and V3
//! (`spec: "chara_card_v3"`, kwaroran/character-card-spec-v3). V3 keeps every
//! V2 field and adds `group_only_greetings` (required), `source`, dates and
//! assets. Fields a persona has no counterpart for are written as the empty
//! values the specs require rather than left out.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use super::document::{EXTENSION_KEY, PersonaDocument};
use crate::persona::Persona;
use crate::persona::model::ContentHash;
use crate::persona::model::{EmotionalStyle, HumorUsage, LanguageStyle, OCEAN_TRAITS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardSpec {
    V2,
    V3,
}

impl CardSpec {
    /// The value of the card's `spec` field.
    pub fn spec_name(self) -> &'static str {
        match self {
            CardSpec::V2 => "chara_card_v2",
            CardSpec::V3 => "chara_card_v3",
        }
    }

    pub fn spec_version(self) -> &'static str {
        match self {
            CardSpec::V2 => "2.0",
            CardSpec::V3 => "3.0",
        }
    }
}

impl fmt::Display for CardSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            CardSpec::V2 => "card-v2",
            CardSpec::V3 => "card-v3",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown card spec {0:?}; expected v2, v3, card-v2 or card-v3")]
pub struct UnknownCardSpec(pub String);

impl FromStr for CardSpec {
    type Err = UnknownCardSpec;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "v2" | "card-v2" | "chara_card_v2" => Ok(CardSpec::V2),
            "v3" | "card-v3" | "chara_card_v3" => Ok(CardSpec::V3),
            _ => Err(UnknownCardSpec(text.to_string())),
        }
    }
}

/// What a card says about the version it was made from, which the persona
/// itself does not know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardMeta {
    /// The persona's version number (1, 2, 3 …).
    pub version: u32,
    /// The rendered system prompt; the card's `system_prompt` is empty without one.
    pub system_prompt: Option<String>,
    /// Who made this version (the commit author); empty without one.
    pub creator: Option<String>,
    /// Unix seconds of the persona's first version (V3 `creation_date`).
    pub created_at: Option<i64>,
    /// Unix seconds of this version (V3 `modification_date`).
    pub modified_at: Option<i64>,
}

/// The card for one version of a persona. The content hash is computed from
/// the persona itself, so the card cannot name a version it does not hold.
pub fn export_card(persona: &Persona, spec: CardSpec, meta: &CardMeta) -> Value {
    let document = PersonaDocument::new(persona, meta.version);
    let mut extensions = Map::new();
    extensions.insert(EXTENSION_KEY.to_string(), document.to_json());
    let (first_mes, alternate_greetings) = match persona.signature_phrases.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let mut data = json!({
        "name": persona.name,
        "description": persona.description,
        "personality": personality_text(persona),
        "scenario": "",
        "first_mes": first_mes,
        "mes_example": "",
        "creator_notes": creator_notes(persona, meta.version),
        "system_prompt": meta.system_prompt.clone().unwrap_or_default(),
        "post_history_instructions": "",
        "alternate_greetings": alternate_greetings,
        "tags": persona.domains,
        "creator": meta.creator.clone().unwrap_or_default(),
        // The document's hash: computing it means encoding the whole persona.
        "character_version": character_version(meta.version, &document.content_hash),
        "extensions": Value::Object(extensions),
    });
    if spec == CardSpec::V3 {
        let fields = data.as_object_mut().expect("the card data is an object");
        fields.insert("group_only_greetings".to_string(), json!([]));
        let sources = belief_sources(persona);
        if !sources.is_empty() {
            fields.insert("source".to_string(), json!(sources));
        }
        if let Some(created) = meta.created_at {
            fields.insert("creation_date".to_string(), json!(created));
        }
        if let Some(modified) = meta.modified_at {
            fields.insert("modification_date".to_string(), json!(modified));
        }
        if let Some(url) = &persona.avatar_url {
            fields.insert(
                "assets".to_string(),
                json!([{ "type": "icon", "uri": url, "name": "main", "ext": asset_extension(url) }]),
            );
        }
    }
    json!({
        "spec": spec.spec_name(),
        "spec_version": spec.spec_version(),
        "data": data,
    })
}

/// `"3 (sha256:…)"`: front-ends show and sort by it; the hash names the exact content.
pub fn character_version(version: u32, content_hash: &ContentHash) -> String {
    format!("{version} ({content_hash})")
}

/// The belief citations, each once, in the order the beliefs cite them.
pub fn belief_sources(persona: &Persona) -> Vec<String> {
    let mut sources: Vec<String> = Vec::new();
    for source in persona.beliefs.iter().filter_map(|belief| belief.source.as_ref()) {
        if !sources.contains(source) {
            sources.push(source.clone());
        }
    }
    sources
}

/// A short, deterministic description of the persona's temperament: the
/// OCEAN traits with a word for each level, the other trait groups, then the
/// style settings. Front-ends put `personality` into every prompt, so it
/// says what a model can act on rather than restating the description.
pub fn personality_text(persona: &Persona) -> String {
    let mut sentences = Vec::new();
    if let Some(ocean) = persona.traits.get("ocean") {
        let parts: Vec<String> = OCEAN_TRAITS
            .iter()
            .filter_map(|name| ocean.get(*name).map(|value| (name, *value)))
            .map(|(name, value)| format!("{name} {value:.2} ({})", level_word(value)))
            .collect();
        sentences.push(format!("Big Five (0 to 1): {}.", parts.join(", ")));
    }
    for (kind, values) in persona.traits.iter().filter(|(kind, _)| kind.as_str() != "ocean") {
        let parts: Vec<String> = values
            .iter()
            .map(|(name, value)| format!("{} {value:.2}", name.replace('_', " ")))
            .collect();
        sentences.push(format!(
            "{}: {}.",
            capitalized(&kind.replace('_', " ")),
            parts.join(", ")
        ));
    }
    let config = &persona.config;
    let humor = match config.humor_usage {
        HumorUsage::Low => "uses humor sparingly",
        HumorUsage::Medium => "uses humor now and then",
        HumorUsage::High => "uses humor often",
    };
    let emotion = match config.emotional_style {
        EmotionalStyle::Reserved => "emotionally reserved",
        EmotionalStyle::Expressive => "emotionally expressive",
    };
    let language = match config.language_style {
        LanguageStyle::Verbose => "speaks at length",
        LanguageStyle::Concise => "speaks concisely",
    };
    sentences.push(format!("{}, {emotion}, {language}.", capitalized(humor)));
    sentences.join(" ")
}

fn level_word(value: f64) -> &'static str {
    match value {
        v if v < 0.2 => "very low",
        v if v < 0.4 => "low",
        v if v < 0.6 => "moderate",
        v if v < 0.8 => "high",
        _ => "very high",
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// For people browsing cards (never put into prompts, per the specs): where
/// the card came from, the modes, and each belief with its citation.
fn creator_notes(persona: &Persona, version: u32) -> String {
    let mut notes = format!(
        "{} ({}), version {version} from the persona registry.",
        persona.name,
        persona.slug.as_str()
    );
    let modes: Vec<&str> = persona.enabled_modes().collect();
    if !modes.is_empty() {
        notes.push_str(&format!("\nModes: {}", modes.join(", ")));
        if let Some(default) = &persona.default_mode {
            notes.push_str(&format!(" (default {default})"));
        }
        notes.push('.');
    }
    if !persona.beliefs.is_empty() {
        notes.push_str("\nBeliefs:");
        for belief in &persona.beliefs {
            notes.push_str(&format!("\n- {}", belief.text));
            if let Some(source) = &belief.source {
                notes.push_str(&format!(" [{source}]"));
            }
        }
    }
    notes
}

/// The file extension of an asset URL's path, lowercase, or `unknown` as V3 allows.
fn asset_extension(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|parsed| parsed.path().to_string())
        .unwrap_or_default();
    let file = path.rsplit('/').next().unwrap_or("");
    match file.rsplit_once('.') {
        Some((stem, extension))
            if !stem.is_empty()
                && !extension.is_empty()
                && extension.len() <= 8
                && extension.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            extension.to_ascii_lowercase()
        }
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_from_their_spellings() {
        for (text, spec) in [
            ("v2", CardSpec::V2),
            ("card-v2", CardSpec::V2),
            ("V3", CardSpec::V3),
            ("card-v3", CardSpec::V3),
        ] {
            assert_eq!(text.parse::<CardSpec>(), Ok(spec));
        }
        assert!("v4".parse::<CardSpec>().is_err());
    }

    #[test]
    fn levels_have_words() {
        assert_eq!(level_word(0.0), "very low");
        assert_eq!(level_word(0.3), "low");
        assert_eq!(level_word(0.5), "moderate");
        assert_eq!(level_word(0.72), "high");
        assert_eq!(level_word(1.0), "very high");
    }

    #[test]
    fn asset_extensions_come_from_the_path() {
        assert_eq!(asset_extension("https://example.org/a/Face.PNG?x=1"), "png");
        assert_eq!(asset_extension("https://example.org/avatar"), "unknown");
        assert_eq!(asset_extension("https://example.org/.hidden"), "unknown");
    }
}

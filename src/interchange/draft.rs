//! The field-by-field rules shared by the card and seed mappings: each turns
//! a foreign value into one the registry's validator accepts, and records a
//! note whenever it had to drop, shorten or default something, so that an
//! import never changes data without saying so.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use crate::commands::new::slugify;
use crate::persona::model::{
    Belief, EMOTIONAL_STYLES, EmotionalStyle, HUMOR_USAGES, HumorUsage, LANGUAGE_STYLES, LanguageStyle, MAX_SLUG_LEN,
    OCEAN_TRAITS, PersonaConfig,
};
use crate::persona::validate::{
    MAX_BELIEF_CHARS, MAX_DESCRIPTION_CHARS, MAX_DOMAIN_CHARS, MAX_NAME_CHARS, MAX_PHRASE_CHARS, source_problem,
};
use crate::persona::{Persona, PersonaId, RegistrySettings, Slug};

/// What an import had to drop, shorten or default, in words for the user.
pub type Notes = Vec<String>;

/// Gives a restored persona the slug asked for, saying what that changes.
pub fn rename(persona: &mut Persona, slug: Option<&Slug>, notes: &mut Notes) {
    if let Some(slug) = slug
        && *slug != persona.slug
    {
        notes.push(format!(
            "slug changed from {} to {slug} as asked; the content hash changes with it",
            persona.slug
        ));
        persona.slug = slug.clone();
    }
}

/// The value given to every OCEAN trait nothing says anything about: the
/// middle of the scale, i.e. "unknown", not a claim about the character.
pub const NEUTRAL_TRAIT: f64 = 0.5;

/// The mode enabled when the source names none the registry knows and the
/// registry has no vocabulary to pick from.
const FALLBACK_MODE: &str = "Educator";

/// The display name: trimmed, required, shortened to the validator's limit.
pub fn name(text: Option<&str>, notes: &mut Notes) -> Result<String, String> {
    let text = text.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err("has no name; a persona needs one".to_string());
    }
    Ok(clip(text, MAX_NAME_CHARS, "name", notes))
}

/// The description, or a placeholder built from the name and domains (with
/// a note) when the source has none.
pub fn description(text: Option<&str>, name: &str, domains: &[String], notes: &mut Notes) -> String {
    match text.map(str::trim).filter(|text| !text.is_empty()) {
        Some(text) => clip(text, MAX_DESCRIPTION_CHARS, "description", notes),
        None => {
            notes.push("no description given; wrote a placeholder from the name and domains: replace it".to_string());
            clip(
                &format!("{name}: {}.", domains.join(", ")),
                MAX_DESCRIPTION_CHARS,
                "description",
                notes,
            )
        }
    }
}

/// `text` cut to at most `max` characters, at the last space before the
/// limit where there is one, with a note saying how much was dropped.
pub fn clip(text: &str, max: usize, what: &str, notes: &mut Notes) -> String {
    let length = text.chars().count();
    if length <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    let at_word = match cut.rfind(char::is_whitespace) {
        Some(space) if space > cut.len() / 2 => cut[..space].trim_end().to_string(),
        _ => cut,
    };
    notes.push(format!(
        "{what} was {length} characters; cut to {} (the registry allows {max}), the rest is not kept",
        at_word.chars().count()
    ));
    at_word
}

/// Tags or seed domains as registry domains: lowercase words of a-z, 0-9,
/// `-` and spaces, at most 40 characters, each once. At least one is needed,
/// so `general` stands in (with a note) when none survive.
pub fn domains(tags: &[String], notes: &mut Notes) -> Vec<String> {
    let mut domains: Vec<String> = Vec::new();
    let mut changed: Vec<String> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for tag in tags {
        let domain = domain_of(tag);
        if domain.is_empty() {
            dropped.push(tag.clone());
        } else if domains.contains(&domain) {
            continue;
        } else {
            if domain != *tag {
                changed.push(format!("{tag:?} → {domain:?}"));
            }
            domains.push(domain);
        }
    }
    if !changed.is_empty() {
        notes.push(format!("domains rewritten as lowercase words: {}", changed.join(", ")));
    }
    if !dropped.is_empty() {
        notes.push(format!(
            "tags without letters or digits dropped: {}",
            dropped
                .iter()
                .map(|tag| format!("{tag:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if domains.is_empty() {
        notes.push("no usable domains or tags; set domains = [\"general\"]: replace it".to_string());
        domains.push("general".to_string());
    }
    domains
}

fn domain_of(tag: &str) -> String {
    let lowered: String = tag
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = lowered
        .split(' ')
        .map(|word| word.trim_matches('-'))
        .filter(|word| !word.is_empty())
        .collect();
    let mut domain = String::new();
    for word in words {
        let extra = usize::from(!domain.is_empty()) + word.len();
        if domain.len() + extra > MAX_DOMAIN_CHARS {
            break;
        }
        if !domain.is_empty() {
            domain.push(' ');
        }
        domain.push_str(word);
    }
    domain
}

/// Non-empty texts, each once and at most `max` characters.
pub fn unique_texts(items: &[String], max: usize, what: &str, notes: &mut Notes) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut texts = Vec::new();
    let mut repeats = 0;
    for item in items.iter().map(|item| item.trim()).filter(|item| !item.is_empty()) {
        let text = clip(item, max, what, notes);
        if seen.insert(text.clone()) {
            texts.push(text);
        } else {
            repeats += 1;
        }
    }
    if repeats > 0 {
        notes.push(format!("{repeats} repeated {what} dropped"));
    }
    texts
}

pub fn signature_phrases(items: &[String], notes: &mut Notes) -> Vec<String> {
    unique_texts(items, MAX_PHRASE_CHARS, "signature phrase", notes)
}

/// Beliefs as (text, source). A source that is neither an http(s) URL nor a
/// document id is dropped with a note rather than failing the import.
pub fn beliefs(items: &[(String, Option<String>)], notes: &mut Notes) -> Vec<Belief> {
    let mut seen = HashSet::new();
    let mut beliefs = Vec::new();
    for (text, source) in items {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let text = clip(text, MAX_BELIEF_CHARS, "a belief", notes);
        if !seen.insert(text.clone()) {
            notes.push(format!("repeated belief dropped: {text:?}"));
            continue;
        }
        let source = source.as_deref().map(str::trim).filter(|source| !source.is_empty());
        let source = match source.map(|source| (source, source_problem(source))) {
            None => None,
            Some((source, None)) => Some(source.to_string()),
            Some((_, Some(problem))) => {
                notes.push(format!("belief source dropped: {problem}"));
                None
            }
        };
        beliefs.push(Belief {
            text,
            source,
            marking: None,
        });
    }
    beliefs
}

/// The persona's id: the source's own when it is a UUID, a new one otherwise.
pub fn id(written: Option<&str>, notes: &mut Notes) -> PersonaId {
    match written.map(str::trim).filter(|text| !text.is_empty()) {
        Some(text) => match text.parse::<PersonaId>() {
            Ok(id) if !id.0.is_nil() => id,
            _ => {
                notes.push(format!("id {text:?} is not a UUID; a new id was generated"));
                PersonaId(Uuid::new_v4())
            }
        },
        None => PersonaId(Uuid::new_v4()),
    }
}

/// The slug: the one asked for, else the source's own, else one made from
/// the name.
pub fn slug(explicit: Option<&Slug>, written: Option<&str>, name: &str, notes: &mut Notes) -> Result<Slug, String> {
    if let Some(slug) = explicit {
        return Ok(slug.clone());
    }
    if let Some(text) = written {
        match text.parse::<Slug>() {
            Ok(slug) => return Ok(slug),
            Err(error) => notes.push(format!("{error}; made one from the name instead")),
        }
    }
    let mut derived = slugify(name);
    if derived.len() > MAX_SLUG_LEN {
        derived.truncate(MAX_SLUG_LEN);
        derived = derived.trim_end_matches('-').to_string();
    }
    derived
        .parse()
        .map_err(|_| format!("cannot make a slug from the name {name:?}; pass --slug"))
}

/// Trait and trait-type names as the registry spells them: lowercase
/// snake_case starting with a letter (`"Big Five"` → `big_five`).
pub fn trait_name(key: &str) -> Option<String> {
    let lowered: String = key
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = lowered
        .split('_')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    name.starts_with(|c: char| c.is_ascii_lowercase()).then_some(name)
}

/// The five OCEAN traits: the given values, and the neutral value (with a
/// note) for each one the source does not give.
pub fn ocean(given: &BTreeMap<String, f64>, notes: &mut Notes) -> BTreeMap<String, f64> {
    let missing: Vec<&str> = OCEAN_TRAITS
        .iter()
        .copied()
        .filter(|name| !given.contains_key(*name))
        .collect();
    if missing.len() == OCEAN_TRAITS.len() {
        notes.push(format!(
            "no OCEAN traits given; all five set to {NEUTRAL_TRAIT} (neutral): edit [traits.ocean]"
        ));
    } else if !missing.is_empty() {
        notes.push(format!(
            "OCEAN traits not given, set to {NEUTRAL_TRAIT} (neutral): {}",
            missing.join(", ")
        ));
    }
    OCEAN_TRAITS
        .iter()
        .map(|name| (name.to_string(), given.get(*name).copied().unwrap_or(NEUTRAL_TRAIT)))
        .collect()
}

/// Modes as (name, enabled), matched to the registry's vocabulary ignoring
/// case; unknown ones are dropped with a note. When none is left enabled the
/// vocabulary's first mode is enabled (with a note), since a persona needs
/// one. The default mode is the one asked for if enabled, else the first
/// enabled mode in the source's order.
pub fn modes(
    given: &[(String, bool)],
    default: Option<&str>,
    settings: &RegistrySettings,
    notes: &mut Notes,
) -> (BTreeMap<String, bool>, Option<String>) {
    let known = |name: &str| -> Option<String> {
        match &settings.modes {
            None => crate::persona::settings::is_mode_name(name).then(|| name.to_string()),
            Some(vocabulary) => vocabulary.iter().find(|mode| mode.eq_ignore_ascii_case(name)).cloned(),
        }
    };
    let mut modes = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (name, enabled) in given {
        match known(name.trim()) {
            Some(mode) => {
                if !modes.contains_key(&mode) {
                    order.push(mode.clone());
                }
                modes.insert(mode, *enabled);
            }
            None => unknown.push(name),
        }
    }
    if !unknown.is_empty() {
        let vocabulary = settings.modes.as_deref().unwrap_or_default().join(", ");
        notes.push(format!(
            "modes not in the registry's vocabulary ({vocabulary}) dropped: {}",
            unknown.join(", ")
        ));
    }
    if !modes.values().any(|enabled| *enabled) {
        let fallback = settings
            .modes
            .as_ref()
            .and_then(|vocabulary| vocabulary.first())
            .map(String::as_str)
            .unwrap_or(FALLBACK_MODE)
            .to_string();
        notes.push(format!(
            "no usable mode given; enabled {fallback}: choose the persona's modes"
        ));
        order.insert(0, fallback.clone());
        modes.insert(fallback, true);
    }
    let enabled = |mode: &String| modes.get(mode).copied().unwrap_or(false);
    let asked = default.and_then(known);
    let default_mode = match asked {
        Some(mode) if enabled(&mode) => Some(mode),
        _ => {
            if let Some(text) = default {
                notes.push(format!(
                    "default mode {text:?} is not an enabled mode; the first enabled mode is the default"
                ));
            }
            order.iter().find(|mode| enabled(mode)).cloned()
        }
    };
    (modes, default_mode)
}

/// Config values as the source spells them; `None` where it has none.
#[derive(Debug, Clone, Default)]
pub struct ConfigText {
    pub humor_usage: Option<String>,
    pub emotional_style: Option<String>,
    pub language_style: Option<String>,
    pub voice_enabled: Option<bool>,
}

/// The config, defaulting (with one note) what is missing or misspelt.
pub fn config(given: &ConfigText, notes: &mut Notes) -> PersonaConfig {
    let mut defaulted: Vec<String> = Vec::new();
    let mut pick = |key: &str, text: &Option<String>, default_name: &str| -> String {
        match text.as_deref().map(|text| text.trim().to_lowercase()) {
            Some(text) if !text.is_empty() => text,
            _ => {
                defaulted.push(format!("{key} = {default_name:?}"));
                default_name.to_string()
            }
        }
    };
    let humor = pick("humor_usage", &given.humor_usage, "medium");
    let emotion = pick("emotional_style", &given.emotional_style, "reserved");
    let language = pick("language_style", &given.language_style, "concise");
    let humor_usage = choice("humor_usage", &humor, &HUMOR_USAGES, HumorUsage::Medium, notes);
    let emotional_style = choice(
        "emotional_style",
        &emotion,
        &EMOTIONAL_STYLES,
        EmotionalStyle::Reserved,
        notes,
    );
    let language_style = choice(
        "language_style",
        &language,
        &LANGUAGE_STYLES,
        LanguageStyle::Concise,
        notes,
    );
    if given.voice_enabled.is_none() {
        defaulted.push("voice_enabled = false".to_string());
    }
    if !defaulted.is_empty() {
        notes.push(format!("config not given, defaulted: {}", defaulted.join(", ")));
    }
    PersonaConfig {
        humor_usage,
        emotional_style,
        language_style,
        voice_enabled: given.voice_enabled.unwrap_or(false),
    }
}

fn choice<T: Copy + PartialEq>(key: &str, text: &str, choices: &[(&str, T)], default: T, notes: &mut Notes) -> T {
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return *value;
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let default_name = choices
        .iter()
        .find(|(_, value)| *value == default)
        .map_or("?", |(name, _)| *name);
    notes.push(format!(
        "{key} = {text:?} is not one of {}; used {default_name:?}",
        names.join(", ")
    ));
    default
}

/// One note naming the source fields a persona has no place for.
pub fn not_mapped(fields: &[String], notes: &mut Notes) {
    if !fields.is_empty() {
        notes.push(format!(
            "not mapped (a persona has no field for them): {}",
            fields.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_domains() {
        let mut notes = Notes::new();
        let tags: Vec<String> = ["Sci-Fi", "Role_Play", "sci-fi", "🔞", "physics"]
            .iter()
            .map(|tag| tag.to_string())
            .collect();
        assert_eq!(domains(&tags, &mut notes), ["sci-fi", "role play", "physics"]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        let mut notes = Notes::new();
        assert_eq!(domains(&[], &mut notes), ["general"]);
        assert!(notes[0].contains("general"));
    }

    #[test]
    fn long_text_is_cut_at_a_word() {
        let mut notes = Notes::new();
        assert_eq!(clip("alpha beta gamma", 12, "x", &mut notes), "alpha beta");
        assert!(notes[0].contains("16 characters"), "{notes:?}");
    }

    #[test]
    fn trait_names_become_snake_case() {
        assert_eq!(trait_name("OCEAN").as_deref(), Some("ocean"));
        assert_eq!(trait_name("Visual thinking").as_deref(), Some("visual_thinking"));
        assert_eq!(trait_name("9lives"), None);
    }

    #[test]
    fn unknown_config_values_are_defaulted_with_a_note() {
        let mut notes = Notes::new();
        let config = config(
            &ConfigText {
                humor_usage: Some("Moderate".into()),
                emotional_style: Some("Expressive".into()),
                language_style: None,
                voice_enabled: Some(true),
            },
            &mut notes,
        );
        assert_eq!(config.humor_usage, HumorUsage::Medium);
        assert_eq!(config.emotional_style, EmotionalStyle::Expressive);
        assert!(config.voice_enabled);
        assert!(
            notes.iter().any(|note| note.contains("\"moderate\" is not one of")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|note| note.contains("language_style")), "{notes:?}");
    }
}

//! The typed persona and the validated newtypes it is made of.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The format version this build reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The five traits every persona's `[traits.ocean]` table must carry.
pub const OCEAN_TRAITS: [&str; 5] = [
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
];

/// A persona's stable identity: a UUID that never changes, whatever the file is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonaId(pub Uuid);

impl fmt::Display for PersonaId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(formatter)
    }
}

impl FromStr for PersonaId {
    type Err = uuid::Error;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(PersonaId)
    }
}

/// A URL-safe name: lowercase ASCII letters and digits in groups joined by single dashes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

pub const MAX_SLUG_LEN: usize = 64;

/// Words the site's addresses use where a slug goes (`/api/personas/search`
/// beside `/api/personas/{slug}`): a persona with one of these slugs could
/// not be reached, so `check` refuses them. A test over the API document
/// keeps this list complete.
pub const RESERVED_SLUGS: &[&str] = &["search"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a valid slug (lowercase a-z and 0-9 in groups joined by single dashes, 1..={MAX_SLUG_LEN} characters)"
)]
pub struct InvalidSlug(pub String);

impl Slug {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Slug {
    type Err = InvalidSlug;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let well_formed = !text.is_empty()
            && text.len() <= MAX_SLUG_LEN
            && text
                .split('-')
                .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if well_formed {
            Ok(Slug(text.to_string()))
        } else {
            Err(InvalidSlug(text.to_string()))
        }
    }
}

impl TryFrom<String> for Slug {
    type Error = InvalidSlug;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Slug> for String {
    fn from(slug: Slug) -> String {
        slug.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// SHA-256 of a persona's canonical JSON; written `sha256:<64 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a content hash (expected sha256: followed by 64 hex digits)")]
pub struct InvalidContentHash(pub String);

impl ContentHash {
    pub fn hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "sha256:{}", self.hex())
    }
}

impl FromStr for ContentHash {
    type Err = InvalidContentHash;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidContentHash(text.to_string());
        let hex = text.strip_prefix("sha256:").ok_or_else(invalid)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).map_err(|_| invalid())?;
        }
        Ok(ContentHash(bytes))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HumorUsage {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmotionalStyle {
    Reserved,
    Expressive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LanguageStyle {
    Verbose,
    Concise,
}

/// Allowed spellings of each config enum, in the order the format documents them.
pub const HUMOR_USAGES: [(&str, HumorUsage); 3] = [
    ("low", HumorUsage::Low),
    ("medium", HumorUsage::Medium),
    ("high", HumorUsage::High),
];
pub const EMOTIONAL_STYLES: [(&str, EmotionalStyle); 2] = [
    ("reserved", EmotionalStyle::Reserved),
    ("expressive", EmotionalStyle::Expressive),
];
pub const LANGUAGE_STYLES: [(&str, LanguageStyle); 2] =
    [("verbose", LanguageStyle::Verbose), ("concise", LanguageStyle::Concise)];

macro_rules! display_as_serde_name {
    ($($kind:ty => $table:ident),*) => {$(
        impl fmt::Display for $kind {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = $table
                    .iter()
                    .find(|(_, value)| value == self)
                    .map(|(name, _)| *name)
                    .unwrap_or("?");
                formatter.write_str(name)
            }
        }
    )*};
}
display_as_serde_name!(HumorUsage => HUMOR_USAGES, EmotionalStyle => EMOTIONAL_STYLES, LanguageStyle => LANGUAGE_STYLES);

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PersonaConfig {
    pub humor_usage: HumorUsage,
    pub emotional_style: EmotionalStyle,
    pub language_style: LanguageStyle,
    pub voice_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Belief {
    pub text: String,
    /// An http(s) URL or a document id such as `isbn:…`.
    pub source: Option<String>,
    /// How the text relates to the person's own words, when it is not
    /// their wording as the source gives it. Left out of the canonical form
    /// when absent, so versions written before markings existed keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marking: Option<QuoteMarking>,
}

/// What a quote or belief is, when it is not the person's verbatim words.
/// Pages show it beside the text, so a reader never takes an attribution
/// for a quotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuoteMarking {
    /// Widely ascribed to the person; no primary source confirms it.
    Attributed,
    /// The person's idea in other words.
    Paraphrased,
    /// Spoken by a character in the person's work, not in their own voice.
    Character,
}

pub const QUOTE_MARKINGS: &[(&str, QuoteMarking)] = &[
    ("attributed", QuoteMarking::Attributed),
    ("paraphrased", QuoteMarking::Paraphrased),
    ("character", QuoteMarking::Character),
];

impl QuoteMarking {
    /// How a file writes it.
    pub fn name(self) -> &'static str {
        QUOTE_MARKINGS
            .iter()
            .find(|(_, marking)| *marking == self)
            .map_or("attributed", |(name, _)| name)
    }

    /// How a page labels the text.
    pub fn label(self) -> &'static str {
        match self {
            QuoteMarking::Attributed => "attributed",
            QuoteMarking::Paraphrased => "paraphrase",
            QuoteMarking::Character => "a character's line",
        }
    }

    /// What the label means, for a tooltip.
    pub fn explanation(self) -> &'static str {
        match self {
            QuoteMarking::Attributed => "Widely ascribed to this person; no primary source confirms the wording.",
            QuoteMarking::Paraphrased => "This person's idea in other words, not their own wording.",
            QuoteMarking::Character => "Spoken by a character in this person's work, not in their own voice.",
        }
    }
}

/// Where a signature phrase comes from. A phrase with a source and no
/// marking claims to be a verbatim quote of that source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PhraseCitation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marking: Option<QuoteMarking>,
}

/// What a trait type's values rest on: a biography or study, or the
/// registry editors' own estimate, said so explicitly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum TraitSource {
    EditorialEstimate,
    Cited(String),
}

/// How a file writes [`TraitSource::EditorialEstimate`].
pub const EDITORIAL_ESTIMATE: &str = "editorial-estimate";

impl From<TraitSource> for String {
    fn from(source: TraitSource) -> String {
        match source {
            TraitSource::EditorialEstimate => EDITORIAL_ESTIMATE.to_string(),
            TraitSource::Cited(source) => source,
        }
    }
}

impl From<String> for TraitSource {
    fn from(text: String) -> TraitSource {
        if text == EDITORIAL_ESTIMATE {
            TraitSource::EditorialEstimate
        } else {
            TraitSource::Cited(text)
        }
    }
}

/// Trait values grouped by trait type (`ocean`, `humor`, …), then by trait name.
pub type Traits = BTreeMap<String, BTreeMap<String, f64>>;

/// One persona as the registry defines it. Field order here is irrelevant to
/// the content hash: canonical JSON sorts keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persona {
    pub schema: i64,
    pub id: PersonaId,
    pub slug: Slug,
    pub name: String,
    pub description: String,
    pub domains: Vec<String>,
    pub is_real: bool,
    pub birth_date: Option<NaiveDate>,
    pub avatar_url: Option<String>,
    pub signature_phrases: Vec<String>,
    /// The sources and markings of signature phrases, by phrase. Kept beside
    /// the plain list (rather than inside it) so that the list API readers
    /// and prompt templates use keeps its shape, and so that versions
    /// without any keep their content hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub phrase_citations: BTreeMap<String, PhraseCitation>,
    pub traits: Traits,
    /// What each trait type's values rest on, by trait type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trait_sources: BTreeMap<String, TraitSource>,
    pub beliefs: Vec<Belief>,
    pub modes: BTreeMap<String, bool>,
    pub default_mode: Option<String>,
    pub config: PersonaConfig,
}

impl Persona {
    /// Every cited text with its source: signature phrases that carry one,
    /// then beliefs, each in file order.
    pub fn cited_texts(&self) -> impl Iterator<Item = (&str, &str)> {
        let phrases = self.signature_phrases.iter().filter_map(|phrase| {
            let source = self.phrase_citations.get(phrase)?.source.as_deref()?;
            Some((phrase.as_str(), source))
        });
        let beliefs = self
            .beliefs
            .iter()
            .filter_map(|belief| Some((belief.text.as_str(), belief.source.as_deref()?)));
        phrases.chain(beliefs)
    }

    pub fn enabled_modes(&self) -> impl Iterator<Item = &str> {
        self.modes
            .iter()
            .filter(|(_, enabled)| **enabled)
            .map(|(mode, _)| mode.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercase_dash_separated() {
        for good in ["a", "ada-lovelace", "sable-9", "x1-y2-z3"] {
            assert!(good.parse::<Slug>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Ada",
            "ada--lovelace",
            "-ada",
            "ada-",
            "ada_lovelace",
            "ada lovelace",
            "é",
        ] {
            assert!(bad.parse::<Slug>().is_err(), "{bad}");
        }
        assert!("a".repeat(MAX_SLUG_LEN + 1).parse::<Slug>().is_err());
    }

    #[test]
    fn content_hash_round_trips() {
        let hash = ContentHash([0xab; 32]);
        let text = hash.to_string();
        assert_eq!(text.len(), "sha256:".len() + 64);
        assert_eq!(text.parse::<ContentHash>().unwrap(), hash);
        assert!("sha256:zz".parse::<ContentHash>().is_err());
        assert!("md5:abcd".parse::<ContentHash>().is_err());
    }

    #[test]
    fn enums_display_their_file_spelling() {
        assert_eq!(HumorUsage::Medium.to_string(), "medium");
        assert_eq!(EmotionalStyle::Expressive.to_string(), "expressive");
        assert_eq!(LanguageStyle::Concise.to_string(), "concise");
    }
}

//! One file in, one registry file out: recognises what the bytes are (a PNG
//! card, a V1/V2/V3 card, a seed persona, or the registry's own JSON),
//! maps it, writes the TOML and runs the registry's validator on that text,
//! so what comes back is exactly what `personas check` will accept.

use std::fmt;

use serde_json::{Map, Value};

use super::document::PersonaDocument;
use super::from_card::{CardVersion, Mapped, persona_from_card, type_name};
use super::from_seed::persona_from_seed;
use super::png_text::{self, CardChunk};
use super::toml_writer::persona_to_toml;
use crate::persona::canonical::content_hash;
use crate::persona::{Persona, RegistrySettings, Slug, validate_persona};

/// Larger inputs are refused before any parsing: cards with their picture
/// are a few hundred KiB, seed files a few KiB.
pub const MAX_IMPORT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The slug to file the persona under, instead of the source's own or
    /// one made from the name.
    pub slug: Option<Slug>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    CardV1,
    CardV2,
    CardV3,
    /// A JSON persona in one of the seed documents' shapes.
    Seed,
    /// `personas export --format json`, or a bare canonical persona.
    Registry,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            SourceFormat::CardV1 => "Character Card V1",
            SourceFormat::CardV2 => "Character Card V2",
            SourceFormat::CardV3 => "Character Card V3",
            SourceFormat::Seed => "seed persona JSON",
            SourceFormat::Registry => "persona registry JSON",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Imported {
    /// The persona as the validator read it back from `toml`.
    pub persona: Persona,
    /// The registry file to write as `personas/<slug>.toml`.
    pub toml: String,
    /// What could not be mapped, was shortened or was defaulted.
    pub notes: Vec<String>,
    pub format: SourceFormat,
    /// The card came inside a PNG.
    pub from_png: bool,
    /// Rebuilt from the registry's own document (lossless), not mapped.
    pub restored: bool,
}

/// Why a file could not be imported; shown as `file: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ImportError {
    pub file: String,
    pub message: String,
}

/// Imports one file. `file` names it in messages and in the header comment
/// of the written TOML; `settings` are the target registry's (its mode
/// vocabulary and source policy decide what is valid).
pub fn import_persona(
    file: &str,
    bytes: &[u8],
    options: &ImportOptions,
    settings: &RegistrySettings,
) -> Result<Imported, ImportError> {
    let fail = |message: String| ImportError {
        file: file.to_string(),
        message,
    };
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(fail(format!(
            "is {} bytes; files to import may be at most {MAX_IMPORT_BYTES} bytes ({} MiB)",
            bytes.len(),
            MAX_IMPORT_BYTES / (1024 * 1024)
        )));
    }
    let (json, from_png) = if png_text::is_png(bytes) {
        let card = png_text::embedded_card(bytes).map_err(fail)?;
        let json = parse_object(card.json.as_bytes())
            .map_err(|problem| fail(format!("the `{}` chunk {problem}", card.chunk.keyword())))?;
        if card.chunk == CardChunk::Ccv3 && json.get("spec").and_then(Value::as_str) != Some("chara_card_v3") {
            return Err(fail("the `ccv3` chunk does not hold a chara_card_v3 card".to_string()));
        }
        (json, true)
    } else {
        (parse_object(bytes).map_err(fail)?, false)
    };
    let format = recognise(&json).map_err(fail)?;
    let slug = options.slug.as_ref();
    let mapped = match format {
        SourceFormat::CardV1 => persona_from_card(&json, CardVersion::V1, slug, settings),
        SourceFormat::CardV2 => persona_from_card(&json, CardVersion::V2, slug, settings),
        SourceFormat::CardV3 => persona_from_card(&json, CardVersion::V3, slug, settings),
        SourceFormat::Seed => persona_from_seed(&json, slug, settings),
        SourceFormat::Registry => registry_json(&json, slug),
    }
    .map_err(fail)?;
    let Mapped {
        persona,
        notes,
        restored,
    } = mapped;

    let container = if from_png { " in a PNG" } else { "" };
    let mut header = format!("Imported by `personas import` from {file} ({format}{container}).");
    if !notes.is_empty() {
        header.push_str("\nReview before committing; the import noted:");
        for note in &notes {
            header.push_str(&format!("\n- {note}"));
        }
    }
    let toml = persona_to_toml(&persona, &header).map_err(|error| fail(error.to_string()))?;
    let target = format!("{}.toml", persona.slug);
    let parsed = validate_persona(&target, toml.as_bytes(), persona.slug.as_str(), settings);
    let Some(validated) = parsed.persona else {
        let listed: Vec<String> = parsed
            .diagnostics
            .iter()
            .map(|diagnostic| format!("\n  {diagnostic}"))
            .collect();
        return Err(fail(format!(
            "the persona it maps to is not valid in this registry:{}",
            listed.concat()
        )));
    };
    // The writer's promise; a difference would be a bug in it, not in the input.
    if content_hash(&validated) != content_hash(&persona) {
        return Err(fail(
            "the written TOML reads back as a different persona (a bug in the TOML writer; please report it)"
                .to_string(),
        ));
    }
    Ok(Imported {
        persona: validated,
        toml,
        notes,
        format,
        from_png,
        restored,
    })
}

/// The bytes as a JSON object, or what is wrong with them.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if !matches!(first, Some(b'{' | b'[')) {
        return Err("is neither JSON nor a PNG card (a character card, or a seed persona, is expected)".to_string());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(format!(
            "holds {} at the top level; a persona or card is a JSON object",
            type_name(&other)
        )),
        Err(error) => Err(format!("is not valid JSON ({error})")),
    }
}

/// Which kind of persona document an object is, by the keys each kind must have.
fn recognise(json: &Map<String, Value>) -> Result<SourceFormat, String> {
    if let Some(spec) = json.get("spec") {
        return match spec.as_str() {
            Some("chara_card_v2") => Ok(SourceFormat::CardV2),
            Some("chara_card_v3") => Ok(SourceFormat::CardV3),
            _ => Err(format!(
                "has spec {spec}, which is not a card this version reads (chara_card_v2 or chara_card_v3)"
            )),
        };
    }
    let has = |key: &str| json.contains_key(key);
    if has("persona") && has("content_hash") || has("schema") && has("config") && has("traits") {
        return Ok(SourceFormat::Registry);
    }
    if !has("name") {
        return Err("is not a persona: it has no `name` (expected a character card or a seed persona)".to_string());
    }
    let seed_keys = ["traits", "domain", "domains", "beliefs", "modes", "humor_usage"];
    if seed_keys.iter().any(|key| has(key)) {
        return Ok(SourceFormat::Seed);
    }
    let card_keys = ["first_mes", "personality", "scenario", "mes_example"];
    if card_keys.iter().any(|key| has(key)) {
        return Ok(SourceFormat::CardV1);
    }
    Err(
        "is not a recognised persona: expected a character card (spec chara_card_v2/v3, or V1's name, \
         description, personality, first_mes …) or a seed persona (name, traits, domain, beliefs …)"
            .to_string(),
    )
}

/// `export --format json` (the document) or a bare canonical persona: taken as it is.
fn registry_json(json: &Map<String, Value>, slug: Option<&Slug>) -> Result<Mapped, String> {
    let value = Value::Object(json.clone());
    let mut notes = Vec::new();
    let mut persona = if json.contains_key("persona") {
        let document =
            PersonaDocument::from_json(&value).map_err(|error| format!("is not a persona document ({error})"))?;
        if !document.is_intact() {
            notes.push(format!(
                "the persona no longer matches its recorded content hash {}: it was edited after export",
                document.content_hash
            ));
        }
        document.persona
    } else {
        serde_json::from_value::<Persona>(value).map_err(|error| format!("is not a registry persona ({error})"))?
    };
    super::draft::rename(&mut persona, slug, &mut notes);
    Ok(Mapped {
        persona,
        notes,
        restored: true,
    })
}

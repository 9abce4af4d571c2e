//! A persona as a registry file, laid out like the hand-written ones: the
//! scalar keys in the order the format documents them, then
//! `[traits.ocean]` and the other trait tables, `[[beliefs]]`, `[modes]` and
//! `[config]`. Reading the text back with the validator gives the same
//! persona (and so the same content hash): numbers are written in their
//! shortest round-trip form, and nothing the canonical form depends on is
//! left to a default.

use toml_edit::{Array, ArrayOfTables, Date, Datetime, DocumentMut, InlineTable, Item, Table, Value, value};

use crate::persona::Persona;
use crate::persona::model::OCEAN_TRAITS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TomlWriteError {
    #[error("birth_date {0} cannot be written: TOML dates have years 0000 to 9999")]
    DateOutOfRange(chrono::NaiveDate),
}

/// The file's text. `header` becomes comment lines at the top (say where
/// the persona came from); control characters in it are replaced so a
/// comment can never end early and turn the rest into keys.
pub fn persona_to_toml(persona: &Persona, header: &str) -> Result<String, TomlWriteError> {
    let mut document = DocumentMut::new();
    document["schema"] = value(persona.schema);
    document["id"] = value(persona.id.to_string());
    document["name"] = value(persona.name.as_str());
    document["slug"] = value(persona.slug.as_str());
    document["description"] = value(persona.description.as_str());
    document["domains"] = value(Array::from_iter(persona.domains.iter().map(String::as_str)));
    document["is_real"] = value(persona.is_real);
    if let Some(date) = persona.birth_date {
        document["birth_date"] = value(toml_date(date)?);
    }
    if let Some(url) = &persona.avatar_url {
        document["avatar_url"] = value(url.as_str());
    }
    document["signature_phrases"] = value(signature_phrases(persona));
    if let Some(mode) = &persona.default_mode {
        document["default_mode"] = value(mode.as_str());
    }

    let mut traits = Table::new();
    traits.set_implicit(true);
    // OCEAN first and in its usual order, as people read it; the rest by name.
    if let Some(ocean) = persona.traits.get("ocean") {
        let mut table = Table::new();
        for name in OCEAN_TRAITS {
            if let Some(number) = ocean.get(name) {
                table[name] = value(*number);
            }
        }
        for (name, number) in ocean.iter().filter(|(name, _)| !OCEAN_TRAITS.contains(&name.as_str())) {
            table[name.as_str()] = value(*number);
        }
        traits.insert("ocean", Item::Table(table));
    }
    for (kind, values) in persona.traits.iter().filter(|(kind, _)| kind.as_str() != "ocean") {
        let mut table = Table::new();
        for (name, number) in values {
            table[name.as_str()] = value(*number);
        }
        traits.insert(kind, Item::Table(table));
    }
    document["traits"] = Item::Table(traits);
    if !persona.trait_sources.is_empty() {
        let mut sources = Table::new();
        for (kind, source) in &persona.trait_sources {
            sources[kind.as_str()] = value(String::from(source.clone()));
        }
        document["trait_sources"] = Item::Table(sources);
    }

    if !persona.beliefs.is_empty() {
        let mut beliefs = ArrayOfTables::new();
        for belief in &persona.beliefs {
            let mut table = Table::new();
            table["text"] = value(belief.text.as_str());
            if let Some(source) = &belief.source {
                table["source"] = value(source.as_str());
            }
            if let Some(marking) = belief.marking {
                table["marking"] = value(marking.name());
            }
            beliefs.push(table);
        }
        document["beliefs"] = Item::ArrayOfTables(beliefs);
    }

    let mut modes = Table::new();
    for (mode, enabled) in &persona.modes {
        modes[mode.as_str()] = value(*enabled);
    }
    document["modes"] = Item::Table(modes);

    let mut config = Table::new();
    config["humor_usage"] = value(persona.config.humor_usage.to_string());
    config["emotional_style"] = value(persona.config.emotional_style.to_string());
    config["language_style"] = value(persona.config.language_style.to_string());
    config["voice_enabled"] = value(persona.config.voice_enabled);
    document["config"] = Item::Table(config);

    let mut text = comment_lines(header);
    text.push_str(&document.to_string());
    Ok(text)
}

fn toml_date(date: chrono::NaiveDate) -> Result<Datetime, TomlWriteError> {
    use chrono::Datelike;
    let year = u16::try_from(date.year())
        .ok()
        .filter(|year| *year <= 9999)
        .ok_or(TomlWriteError::DateOutOfRange(date))?;
    Ok(Datetime {
        date: Some(Date {
            year,
            month: date.month() as u8,
            day: date.day() as u8,
        }),
        time: None,
        offset: None,
    })
}

/// The phrases as strings, or as inline tables where they carry a source or marking.
fn signature_phrases(persona: &Persona) -> Array {
    let items = persona.signature_phrases.iter().map(|phrase| {
        let Some(citation) = persona.phrase_citations.get(phrase) else {
            return Value::from(phrase.as_str());
        };
        let mut table = InlineTable::new();
        table.insert("text", Value::from(phrase.as_str()));
        if let Some(source) = &citation.source {
            table.insert("source", Value::from(source.as_str()));
        }
        if let Some(marking) = citation.marking {
            table.insert("marking", Value::from(marking.name()));
        }
        Value::InlineTable(table)
    });
    one_per_line(Array::from_iter(items))
}

/// An array written one item per line with a trailing comma, as the sample
/// files write signature phrases; short or empty ones stay on one line.
fn one_per_line(mut array: Array) -> Array {
    if array.len() > 1 {
        for item in array.iter_mut() {
            item.decor_mut().set_prefix("\n    ");
        }
        array.set_trailing_comma(true);
        array.set_trailing("\n");
    }
    array
}

fn comment_lines(header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let clean: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let clean = clean.trim_end();
        if clean.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(clean);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::canonical::content_hash;
    use crate::persona::{RegistrySettings, validate_persona};

    const SAMPLE: &str = r#"schema = 1
id = "0b7f6f0e-5d38-4d6c-9a51-3f3c1c1e1879"
name = "Test \"Quoted\" Person"
description = """Line one.
Line two with a 'quote' and a \\ backslash."""
domains = ["physics"]
is_real = false
birth_date = 0001-01-01
signature_phrases = [
    "One.",
    { text = "Two.", source = "isbn:0-306-40615-2", marking = "paraphrased" },
    { text = "Three.", marking = "character" },
]
default_mode = "Educator"

[traits.ocean]
openness = 1
conscientiousness = 0.1
extraversion = 0.30000000000000004
agreeableness = 1e-7
neuroticism = 0.0

[traits.humor]
wit = 0.333333333333333314829616256247390992939472198486328125

[trait_sources]
ocean = "editorial-estimate"
humor = "https://example.org/study"

[[beliefs]]
text = "A belief in other words."
source = "https://example.org/letters"
marking = "paraphrased"

[modes]
Educator = true
Critic = false

[config]
humor_usage = "high"
emotional_style = "expressive"
language_style = "verbose"
"#;

    #[test]
    fn awkward_values_read_back_to_the_same_hash() {
        let settings = RegistrySettings::permissive();
        let stem = "test-quoted-person";
        let original = validate_persona("in.toml", SAMPLE.as_bytes(), stem, &settings);
        let persona = original.persona.unwrap_or_else(|| panic!("{:?}", original.diagnostics));
        let text = persona_to_toml(&persona, "header\nwith # and \r control").unwrap();
        let again = validate_persona("out.toml", text.as_bytes(), stem, &settings);
        let read = again
            .persona
            .unwrap_or_else(|| panic!("{text}\n{:?}", again.diagnostics));
        assert_eq!(content_hash(&read), content_hash(&persona), "{text}");
        assert_eq!(read, persona, "{text}");
        assert_eq!(read.phrase_citations.len(), 2, "{text}");
        assert_eq!(read.trait_sources.len(), 2, "{text}");
        assert!(
            text.starts_with("# header\n# with # and   control\nschema = 1\n"),
            "{text}"
        );
    }
}

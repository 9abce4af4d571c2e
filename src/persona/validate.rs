//! One persona file → a typed [`Persona`], or every reason it is not one.

use std::collections::{BTreeMap, HashSet};

use super::diagnostic::{Code, Diagnostic, Diagnostics};
use super::model::{
    Belief, EDITORIAL_ESTIMATE, EMOTIONAL_STYLES, HUMOR_USAGES, LANGUAGE_STYLES, OCEAN_TRAITS, Persona, PersonaConfig,
    PersonaId, PhraseCitation, QUOTE_MARKINGS, QuoteMarking, RESERVED_SLUGS, SCHEMA_VERSION, Slug, TraitSource, Traits,
};
use super::reader::{
    TableReader, expect_array, expect_bool, expect_choice, expect_integer, expect_table, expect_text,
    expect_unit_interval, join_path,
};
use super::settings::RegistrySettings;
use super::source::{self, Node, NodeValue, SourceError, Span};

const PERSONA_KEYS: &[&str] = &[
    "schema",
    "id",
    "name",
    "slug",
    "description",
    "domains",
    "is_real",
    "birth_date",
    "avatar_url",
    "signature_phrases",
    "default_mode",
    "traits",
    "trait_sources",
    "beliefs",
    "modes",
    "config",
];
const CONFIG_KEYS: &[&str] = &["humor_usage", "emotional_style", "language_style", "voice_enabled"];
const BELIEF_KEYS: &[&str] = &["text", "source", "marking"];
const PHRASE_KEYS: &[&str] = &["text", "source", "marking"];

pub const MAX_NAME_CHARS: usize = 120;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
pub const MAX_BELIEF_CHARS: usize = 1000;
pub const MAX_PHRASE_CHARS: usize = 300;
pub const MAX_DOMAIN_CHARS: usize = 40;

/// A 1-based line and column.
pub type Location = (usize, usize);

/// The outcome of reading one persona file.
#[derive(Debug, Clone)]
pub struct ParsedPersona {
    pub file: String,
    /// Present only when the file has no errors at all.
    pub persona: Option<Persona>,
    /// The file's id when it could be read, even if other fields are broken:
    /// the history keeps broken revisions attached to the right persona.
    pub id: Option<PersonaId>,
    pub id_location: Location,
    pub slug: Option<Slug>,
    pub slug_location: Location,
    pub diagnostics: Vec<Diagnostic>,
}

/// A file's reading without its persona: what the registry's uniqueness
/// checks need, and what the history keeps of every file between commits
/// (a persona is most of a reading's size even when absent, since
/// `Option<Persona>` is as large as one).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FileReading {
    pub file: String,
    pub id: Option<PersonaId>,
    pub id_location: Location,
    pub slug: Option<Slug>,
    pub slug_location: Location,
    pub diagnostics: Vec<Diagnostic>,
}

impl ParsedPersona {
    /// The reading and the persona, apart.
    pub fn split(self) -> (FileReading, Option<Persona>) {
        let ParsedPersona {
            file,
            persona,
            id,
            id_location,
            slug,
            slug_location,
            diagnostics,
        } = self;
        let reading = FileReading {
            file,
            id,
            id_location,
            slug,
            slug_location,
            diagnostics,
        };
        (reading, persona)
    }

    /// A copy of the reading, without the persona.
    pub fn reading(&self) -> FileReading {
        FileReading {
            file: self.file.clone(),
            id: self.id,
            id_location: self.id_location,
            slug: self.slug.clone(),
            slug_location: self.slug_location,
            diagnostics: self.diagnostics.clone(),
        }
    }
}

/// Reports a file that could not be parsed into a tree.
pub fn source_error(diagnostics: &mut Diagnostics, error: &SourceError) {
    match error {
        SourceError::TooLarge { bytes, limit } => diagnostics.push(
            &(0..0),
            Code::TooLarge,
            format!("file is {bytes} bytes; this registry file may be at most {limit} bytes"),
        ),
        SourceError::NotUtf8 { offset } => {
            diagnostics.push(&(*offset..*offset), Code::NotUtf8, "file is not valid UTF-8 text")
        }
        SourceError::Syntax { span, message } => {
            diagnostics.push(span, Code::Syntax, format!("invalid TOML: {message}"))
        }
        SourceError::TooDeep { span } => diagnostics.push(
            span,
            Code::TooDeep,
            format!(
                "nesting deeper than {} levels; the file was not read further",
                source::MAX_DEPTH
            ),
        ),
    }
}

/// Reads the required `schema` key every registry file starts with.
pub fn read_schema(diagnostics: &mut Diagnostics, top: &mut TableReader<'_>) -> Option<i64> {
    let entry = top.required(diagnostics, "schema")?;
    let schema = expect_integer(diagnostics, &entry.value, "schema")?;
    check_schema(diagnostics, &entry.value.span, schema);
    Some(schema)
}

fn check_schema(diagnostics: &mut Diagnostics, span: &Span, schema: i64) {
    if schema != SCHEMA_VERSION {
        diagnostics.push(
            span,
            Code::Schema,
            format!("schema = {schema} is not supported; this version of personas reads schema {SCHEMA_VERSION}"),
        );
    }
}

/// Validates one persona file. `file` is the path shown in diagnostics;
/// `stem` is the file name without `.toml`, which the slug must equal.
pub fn validate_persona(file: &str, bytes: &[u8], stem: &str, settings: &RegistrySettings) -> ParsedPersona {
    let mut diagnostics = Diagnostics::new(file, bytes);
    let mut parsed = ParsedPersona {
        file: file.to_string(),
        persona: None,
        id: None,
        id_location: (1, 1),
        slug: None,
        slug_location: (1, 1),
        diagnostics: Vec::new(),
    };
    let root = match source::parse(bytes) {
        Ok(root) => root,
        Err(error) => {
            source_error(&mut diagnostics, &error);
            parsed.diagnostics = diagnostics.into_vec();
            return parsed;
        }
    };
    let lines = source::LineIndex::new(bytes);
    let persona = read_persona(&mut diagnostics, &root, stem, settings, &mut parsed, &lines);
    if diagnostics.is_empty() {
        // Every path that yields no persona records a diagnostic first.
        debug_assert!(persona.is_some(), "{file}: rejected without a diagnostic");
        parsed.persona = persona;
    }
    parsed.diagnostics = diagnostics.into_vec();
    parsed
}

fn read_persona(
    diagnostics: &mut Diagnostics,
    root: &Node,
    stem: &str,
    settings: &RegistrySettings,
    parsed: &mut ParsedPersona,
    lines: &source::LineIndex,
) -> Option<Persona> {
    let mut top = TableReader::new(diagnostics, root, "", PERSONA_KEYS)?;

    let schema = read_schema(diagnostics, &mut top);

    let id = top.required(diagnostics, "id").and_then(|entry| {
        parsed.id_location = lines.position(entry.value.span.start);
        let text = super::reader::expect_string(diagnostics, &entry.value, "id")?;
        match text.parse::<PersonaId>() {
            Ok(id) if !id.0.is_nil() => Some(id),
            Ok(_) => {
                diagnostics.push(&entry.value.span, Code::Uuid, "id must not be the nil UUID");
                None
            }
            Err(error) => {
                diagnostics.push(
                    &entry.value.span,
                    Code::Uuid,
                    format!("id = {text:?} is not a UUID ({error}); generate one with `personas new`"),
                );
                None
            }
        }
    });
    parsed.id = id;

    let slug = read_slug(diagnostics, &mut top, stem, parsed, lines);
    parsed.slug = slug.clone();

    let name = top
        .required(diagnostics, "name")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "name", MAX_NAME_CHARS));
    let description = top
        .required(diagnostics, "description")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "description", MAX_DESCRIPTION_CHARS));
    let domains = top
        .required(diagnostics, "domains")
        .and_then(|entry| read_domains(diagnostics, &entry.value));
    let is_real = top.boolean(diagnostics, "is_real", true);
    let birth_date = match top.optional("birth_date") {
        None => Some(None),
        Some(entry) => read_date(diagnostics, &entry.value, "birth_date").map(Some),
    };
    let avatar_url = match top.optional("avatar_url") {
        None => Some(None),
        Some(entry) => read_avatar_url(diagnostics, &entry.value).map(Some),
    };
    let phrases = match top.optional("signature_phrases") {
        None => Some((Vec::new(), BTreeMap::new())),
        Some(entry) => read_signature_phrases(diagnostics, &entry.value, is_real.unwrap_or(false), settings),
    };
    let traits = top
        .required(diagnostics, "traits")
        .and_then(|entry| read_traits(diagnostics, &entry.value));
    let trait_sources = match top.optional("trait_sources") {
        None => Some(BTreeMap::new()),
        Some(entry) => read_trait_sources(diagnostics, &entry.value, traits.as_ref()),
    };
    let beliefs = match top.optional("beliefs") {
        None => Some(Vec::new()),
        Some(entry) => read_beliefs(diagnostics, &entry.value, is_real.unwrap_or(false), settings),
    };
    let modes_as_written = top
        .required(diagnostics, "modes")
        .and_then(|entry| read_modes(diagnostics, &entry.value, settings));
    let default_mode = match top.optional("default_mode") {
        None => Some(None),
        Some(entry) => read_default_mode(
            diagnostics,
            &entry.value,
            modes_as_written.as_ref().map(|(modes, _)| modes),
        )
        .map(Some),
    };
    let modes = modes_as_written.and_then(|(modes, valid)| valid.then_some(modes));
    let config = top
        .required(diagnostics, "config")
        .and_then(|entry| read_config(diagnostics, &entry.value));
    top.finish(diagnostics);

    Some(Persona {
        schema: schema?,
        id: id?,
        slug: slug?,
        name: name?.to_string(),
        description: description?.to_string(),
        domains: domains?,
        is_real: is_real?,
        birth_date: birth_date?,
        avatar_url: avatar_url?,
        signature_phrases: phrases.as_ref()?.0.clone(),
        phrase_citations: phrases?.1,
        traits: traits?,
        trait_sources: trait_sources?,
        beliefs: beliefs?,
        modes: modes?,
        default_mode: default_mode?,
        config: config?,
    })
}

fn read_slug(
    diagnostics: &mut Diagnostics,
    top: &mut TableReader<'_>,
    stem: &str,
    parsed: &mut ParsedPersona,
    lines: &source::LineIndex,
) -> Option<Slug> {
    let written = top.optional("slug");
    let span = written.map(|entry| entry.value.span.clone()).unwrap_or(0..0);
    parsed.slug_location = lines.position(span.start);
    let from_stem = match stem.parse::<Slug>() {
        Ok(slug) if RESERVED_SLUGS.contains(&slug.as_str()) => {
            diagnostics.push(
                &span,
                Code::Slug,
                format!(
                    "the slug {stem:?} (from the file name) is a word the site's addresses use \
                     (/api/personas/{stem}), so the persona could not be reached; rename the file"
                ),
            );
            None
        }
        Ok(slug) => Some(slug),
        Err(error) => {
            diagnostics.push(
                &span,
                Code::Slug,
                format!("the file name gives the slug, and {error}; rename the file"),
            );
            None
        }
    };
    let Some(entry) = written else { return from_stem };
    let text = super::reader::expect_string(diagnostics, &entry.value, "slug")?;
    if text != stem {
        diagnostics.push(
            &entry.value.span,
            Code::SlugMismatch,
            format!("slug = {text:?} must equal the file name's stem {stem:?} (or be left out)"),
        );
        return None;
    }
    from_stem
}

fn read_domains(diagnostics: &mut Diagnostics, node: &Node) -> Option<Vec<String>> {
    let domains = read_unique_texts(diagnostics, node, "domains", MAX_DOMAIN_CHARS)?;
    if domains.is_empty() {
        diagnostics.push(&node.span, Code::Empty, "domains must list at least one domain");
        return None;
    }
    let items = expect_array(diagnostics, node, "domains")?;
    let mut valid = true;
    for (index, (domain, item)) in domains.iter().zip(items).enumerate() {
        let well_formed = domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ' ')
            && !domain.starts_with([' ', '-'])
            && !domain.ends_with([' ', '-']);
        if !well_formed {
            diagnostics.push(
                &item.span,
                Code::Name,
                format!("domains[{index}] = {domain:?} must be lowercase words (a-z, 0-9, `-`, spaces)"),
            );
            valid = false;
        }
    }
    valid.then_some(domains)
}

/// An array of non-empty strings without repeats.
fn read_unique_texts(diagnostics: &mut Diagnostics, node: &Node, path: &str, max: usize) -> Option<Vec<String>> {
    let items = expect_array(diagnostics, node, path)?;
    let mut texts = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    let mut valid = true;
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        match expect_text(diagnostics, item, &item_path, max) {
            Some(text) if !seen.insert(text) => {
                diagnostics.push(
                    &item.span,
                    Code::Duplicate,
                    format!("{item_path} = {text:?} is listed twice"),
                );
                valid = false;
            }
            Some(text) => texts.push(text.to_string()),
            None => valid = false,
        }
    }
    valid.then_some(texts)
}

fn read_date(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<chrono::NaiveDate> {
    match &node.value {
        NodeValue::Date(date) => Some(*date),
        NodeValue::OtherDatetime(written) => {
            diagnostics.push(
                &node.span,
                Code::Date,
                format!("{path} = {written} must be a plain date such as 1879-03-14, without time or offset"),
            );
            None
        }
        NodeValue::String(text) => {
            diagnostics.push(
                &node.span,
                Code::Type,
                format!(
                    "{path} must be a TOML date, found the string {text:?}; write it without quotes, e.g. 1879-03-14"
                ),
            );
            None
        }
        other => {
            diagnostics.push(
                &node.span,
                Code::Type,
                format!(
                    "{path} must be a TOML date such as 1879-03-14, found {}",
                    other.type_name()
                ),
            );
            None
        }
    }
}

fn read_avatar_url(diagnostics: &mut Diagnostics, node: &Node) -> Option<String> {
    let text = super::reader::expect_string(diagnostics, node, "avatar_url")?;
    match url::Url::parse(text) {
        Ok(parsed) if parsed.scheme() == "https" && parsed.host().is_some() => Some(text.to_string()),
        Ok(_) => {
            diagnostics.push(
                &node.span,
                Code::Url,
                format!("avatar_url = {text:?} must be an https:// URL"),
            );
            None
        }
        Err(error) => {
            diagnostics.push(
                &node.span,
                Code::Url,
                format!("avatar_url = {text:?} is not a URL ({error})"),
            );
            None
        }
    }
}

/// Checks a belief source: an http(s) URL, or a document id of a scheme
/// [`super::document_id`] can check (`isbn:`, `doi:`, …).
pub fn source_problem(text: &str) -> Option<String> {
    let looks_like_url = text.contains("://") || text.starts_with("http:") || text.starts_with("https:");
    if looks_like_url {
        return match url::Url::parse(text) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => None,
            Ok(parsed) => Some(format!(
                "{text:?} uses {}:, only http and https URLs are allowed",
                parsed.scheme()
            )),
            Err(error) => Some(format!("{text:?} is not a well-formed URL ({error})")),
        };
    }
    super::document_id::document_id_problem(text)
}

/// A source as written: an http(s) URL or a checkable document id.
fn read_source(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<String> {
    let text = expect_text(diagnostics, node, path, 2000)?;
    match source_problem(text) {
        None => Some(text.to_string()),
        Some(problem) => {
            diagnostics.push(&node.span, Code::Url, format!("{path} = {problem}"));
            None
        }
    }
}

/// The optional `marking` of a belief or phrase: `Some(None)` when absent,
/// `None` when written wrong.
fn read_marking(
    diagnostics: &mut Diagnostics,
    reader: &mut TableReader<'_>,
    path: &str,
) -> Option<Option<QuoteMarking>> {
    match reader.optional("marking") {
        None => Some(None),
        Some(entry) => expect_choice(diagnostics, &entry.value, &format!("{path}.marking"), QUOTE_MARKINGS).map(Some),
    }
}

/// Signature phrases: each a string (a verbatim quote) or a table with its
/// `text`, `source` and `marking`. Under `require_sources_for_real_quotes` a
/// real person's phrase needs a source or a marking: unmarked, a reader
/// takes it for the person's own words.
fn read_signature_phrases(
    diagnostics: &mut Diagnostics,
    node: &Node,
    is_real: bool,
    settings: &RegistrySettings,
) -> Option<(Vec<String>, BTreeMap<String, PhraseCitation>)> {
    let items = expect_array(diagnostics, node, "signature_phrases")?;
    let mut phrases = Vec::with_capacity(items.len());
    let mut citations = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut valid = true;
    for (index, item) in items.iter().enumerate() {
        let path = format!("signature_phrases[{index}]");
        let (text, citation) = match &item.value {
            NodeValue::Table(_) => {
                let Some(mut reader) = TableReader::new(diagnostics, item, &path, PHRASE_KEYS) else {
                    valid = false;
                    continue;
                };
                let text = reader.required(diagnostics, "text").and_then(|entry| {
                    expect_text(diagnostics, &entry.value, &format!("{path}.text"), MAX_PHRASE_CHARS)
                });
                let source = match reader.optional("source") {
                    None => Some(None),
                    Some(entry) => read_source(diagnostics, &entry.value, &format!("{path}.source")).map(Some),
                };
                let marking = read_marking(diagnostics, &mut reader, &path);
                reader.finish(diagnostics);
                match (text, source, marking) {
                    (Some(text), Some(source), Some(marking)) => (text, PhraseCitation { source, marking }),
                    _ => {
                        valid = false;
                        continue;
                    }
                }
            }
            _ => match expect_text(diagnostics, item, &path, MAX_PHRASE_CHARS) {
                Some(text) => (
                    text,
                    PhraseCitation {
                        source: None,
                        marking: None,
                    },
                ),
                None => {
                    valid = false;
                    continue;
                }
            },
        };
        if !seen.insert(text) {
            diagnostics.push(
                &item.span,
                Code::Duplicate,
                format!("{path} = {text:?} is listed twice"),
            );
            valid = false;
            continue;
        }
        let unmarked = citation.source.is_none() && citation.marking.is_none();
        if unmarked && is_real && settings.policy.require_sources_for_real_quotes {
            diagnostics.push(
                &item.span,
                Code::SourceRequired,
                format!(
                    "{path} reads as a verbatim quote of a real person but has no source; write \
                     {{ text = ..., source = \"...\" }}, or mark it with marking = \"attributed\", \
                     \"paraphrased\" or \"character\""
                ),
            );
            valid = false;
        }
        phrases.push(text.to_string());
        if !unmarked {
            citations.insert(text.to_string(), citation);
        }
    }
    valid.then_some((phrases, citations))
}

/// `[trait_sources]`: per trait type, a source or `editorial-estimate`.
fn read_trait_sources(
    diagnostics: &mut Diagnostics,
    node: &Node,
    traits: Option<&Traits>,
) -> Option<BTreeMap<String, TraitSource>> {
    let entries = expect_table(diagnostics, node, "trait_sources")?;
    let mut sources = BTreeMap::new();
    let mut valid = true;
    for entry in entries {
        let path = join_path("trait_sources", &entry.key);
        if traits.is_some_and(|traits| !traits.contains_key(&entry.key)) {
            diagnostics.push_at(
                &entry.key_span,
                Code::UnknownKey,
                &path,
                format!(
                    "{path} names no trait type of this persona (there is no [traits.{}])",
                    entry.key
                ),
            );
            valid = false;
            continue;
        }
        let source = match &entry.value.value {
            NodeValue::String(text) if text == EDITORIAL_ESTIMATE => Some(TraitSource::EditorialEstimate),
            _ => read_source(diagnostics, &entry.value, &path).map(TraitSource::Cited),
        };
        match source {
            Some(source) => {
                sources.insert(entry.key.clone(), source);
            }
            None => valid = false,
        }
    }
    valid.then_some(sources)
}

fn read_beliefs(
    diagnostics: &mut Diagnostics,
    node: &Node,
    is_real: bool,
    settings: &RegistrySettings,
) -> Option<Vec<Belief>> {
    let items = expect_array(diagnostics, node, "beliefs")?;
    let mut beliefs = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    let mut valid = true;
    for (index, item) in items.iter().enumerate() {
        let path = format!("beliefs[{index}]");
        let Some(mut reader) = TableReader::new(diagnostics, item, &path, BELIEF_KEYS) else {
            valid = false;
            continue;
        };
        let text = reader.required(diagnostics, "text").and_then(|entry| {
            let text = expect_text(diagnostics, &entry.value, &format!("{path}.text"), MAX_BELIEF_CHARS)?;
            if !seen.insert(text) {
                diagnostics.push(
                    &entry.value.span,
                    Code::Duplicate,
                    format!("{path}.text repeats an earlier belief"),
                );
                return None;
            }
            Some(text)
        });
        let source = match reader.optional("source") {
            None => {
                if is_real && settings.policy.require_sources_for_real {
                    diagnostics.push(
                        reader.span(),
                        Code::SourceRequired,
                        format!(
                            "{path} has no source; the registry requires a source for every belief of a real person"
                        ),
                    );
                    valid = false;
                }
                Some(None)
            }
            Some(entry) => read_source(diagnostics, &entry.value, &format!("{path}.source")).map(Some),
        };
        let marking = read_marking(diagnostics, &mut reader, &path);
        reader.finish(diagnostics);
        match (text, source, marking) {
            (Some(text), Some(source), Some(marking)) => beliefs.push(Belief {
                text: text.to_string(),
                source,
                marking,
            }),
            _ => valid = false,
        }
    }
    valid.then_some(beliefs)
}

/// Trait type and trait names: lowercase snake_case identifiers.
fn is_trait_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn read_traits(diagnostics: &mut Diagnostics, node: &Node) -> Option<Traits> {
    let types = expect_table(diagnostics, node, "traits")?;
    let mut traits = Traits::new();
    let mut valid = true;
    for entry in types {
        let type_path = join_path("traits", &entry.key);
        if !is_trait_name(&entry.key) {
            diagnostics.push_at(
                &entry.key_span,
                Code::Name,
                &type_path,
                format!("trait type `{}` must be lowercase snake_case (e.g. `humor`)", entry.key),
            );
            valid = false;
            continue;
        }
        let Some(values) = expect_table(diagnostics, &entry.value, &type_path) else {
            valid = false;
            continue;
        };
        if values.is_empty() {
            diagnostics.push_at(
                &entry.value.span,
                Code::Empty,
                &type_path,
                format!("[{type_path}] names no traits"),
            );
            valid = false;
            continue;
        }
        let mut table = BTreeMap::new();
        for value in values {
            let path = join_path(&type_path, &value.key);
            if entry.key == "ocean" && !OCEAN_TRAITS.contains(&value.key.as_str()) {
                diagnostics.push_at(
                    &value.key_span,
                    Code::UnknownKey,
                    &path,
                    format!(
                        "unknown key `{}` in [traits.ocean]; the OCEAN traits are {}",
                        value.key,
                        OCEAN_TRAITS.join(", ")
                    ),
                );
                valid = false;
                continue;
            }
            if !is_trait_name(&value.key) {
                diagnostics.push_at(
                    &value.key_span,
                    Code::Name,
                    &path,
                    format!("trait name `{}` must be lowercase snake_case", value.key),
                );
                valid = false;
                continue;
            }
            match expect_unit_interval(diagnostics, &value.value, &path) {
                Some(number) => {
                    table.insert(value.key.clone(), number);
                }
                None => valid = false,
            }
        }
        traits.insert(entry.key.clone(), table);
    }
    match types.iter().find(|entry| entry.key == "ocean") {
        None => {
            diagnostics.push_at(
                &node.span,
                Code::MissingKey,
                "traits.ocean",
                "missing required table [traits.ocean] (openness, conscientiousness, extraversion, agreeableness, neuroticism)",
            );
            valid = false;
        }
        Some(ocean) => {
            let present = traits.get("ocean");
            for name in OCEAN_TRAITS {
                let written =
                    matches!(&ocean.value.value, NodeValue::Table(values) if values.iter().any(|v| v.key == name));
                if !written {
                    diagnostics.push_at(
                        &ocean.value.span,
                        Code::MissingKey,
                        &format!("traits.ocean.{name}"),
                        format!("missing required key `traits.ocean.{name}` in [traits.ocean]"),
                    );
                    valid = false;
                } else if present.is_none_or(|values| !values.contains_key(name)) {
                    valid = false;
                }
            }
        }
    }
    valid.then_some(traits)
}

/// The modes as written, and whether they are valid. The map is returned
/// even when invalid so `default_mode` can still be checked against it.
fn read_modes(
    diagnostics: &mut Diagnostics,
    node: &Node,
    settings: &RegistrySettings,
) -> Option<(BTreeMap<String, bool>, bool)> {
    let entries = expect_table(diagnostics, node, "modes")?;
    let mut modes = BTreeMap::new();
    let mut valid = true;
    for entry in entries {
        let path = join_path("modes", &entry.key);
        if !settings.allows_mode(&entry.key) {
            let vocabulary = settings.modes.as_deref().unwrap_or_default().join(", ");
            diagnostics.push_at(
                &entry.key_span,
                Code::UnknownMode,
                &path,
                format!(
                    "mode `{}` is not in the registry's vocabulary ({vocabulary}); add it to registry.toml first",
                    entry.key
                ),
            );
            valid = false;
        }
        match expect_bool(diagnostics, &entry.value, &path) {
            Some(enabled) => {
                modes.insert(entry.key.clone(), enabled);
            }
            None => valid = false,
        }
    }
    if !modes.values().any(|enabled| *enabled) && modes.len() == entries.len() {
        diagnostics.push_at(
            &node.span,
            Code::NoEnabledMode,
            "modes",
            "[modes] must enable at least one mode",
        );
        valid = false;
    }
    Some((modes, valid))
}

fn read_default_mode(
    diagnostics: &mut Diagnostics,
    node: &Node,
    modes: Option<&BTreeMap<String, bool>>,
) -> Option<String> {
    let mode = super::reader::expect_string(diagnostics, node, "default_mode")?;
    // Without readable modes there is nothing to compare against; that error is reported already.
    let modes = modes?;
    match modes.get(mode) {
        Some(true) => Some(mode.to_string()),
        Some(false) => {
            diagnostics.push_at(
                &node.span,
                Code::DefaultMode,
                "default_mode",
                format!("default_mode = {mode:?} is disabled in [modes]; enable it or pick an enabled mode"),
            );
            None
        }
        None => {
            let enabled: Vec<&str> = modes.iter().filter(|(_, on)| **on).map(|(m, _)| m.as_str()).collect();
            diagnostics.push_at(
                &node.span,
                Code::DefaultMode,
                "default_mode",
                format!(
                    "default_mode = {mode:?} is not a mode of this persona; enabled modes: {}",
                    enabled.join(", ")
                ),
            );
            None
        }
    }
}

fn read_config(diagnostics: &mut Diagnostics, node: &Node) -> Option<PersonaConfig> {
    let mut reader = TableReader::new(diagnostics, node, "config", CONFIG_KEYS)?;
    let humor_usage = reader
        .required(diagnostics, "humor_usage")
        .and_then(|entry| expect_choice(diagnostics, &entry.value, "config.humor_usage", &HUMOR_USAGES));
    let emotional_style = reader
        .required(diagnostics, "emotional_style")
        .and_then(|entry| expect_choice(diagnostics, &entry.value, "config.emotional_style", &EMOTIONAL_STYLES));
    let language_style = reader
        .required(diagnostics, "language_style")
        .and_then(|entry| expect_choice(diagnostics, &entry.value, "config.language_style", &LANGUAGE_STYLES));
    let voice_enabled = match reader.optional("voice_enabled") {
        None => Some(false),
        Some(entry) => expect_bool(diagnostics, &entry.value, "config.voice_enabled"),
    };
    reader.finish(diagnostics);
    Some(PersonaConfig {
        humor_usage: humor_usage?,
        emotional_style: emotional_style?,
        language_style: language_style?,
        voice_enabled: voice_enabled?,
    })
}

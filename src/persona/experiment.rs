//! `registry/experiments/<name>.toml`: an A/B experiment over persona
//! versions, defined in git so that every change to it is reviewed and any
//! past assignment can be recomputed from the commit it was made at.
//!
//! ```toml
//! schema = 1
//! description = "Does a warmer Einstein keep learners longer?"
//! status = "running"            # draft | running | stopped
//! salt = "einstein-warmth-1"    # changing it reshuffles every unit
//! persona = "albert-einstein"   # the default for every variant
//!
//! [[variants]]
//! name = "control"
//! pin = "production"            # a label, a version number or "sha256:…"
//! weight = 50
//!
//! [[variants]]
//! name = "warmer"
//! pin = 4
//! weight = 50
//! mode = "Educator"             # optional: the mode the prompt is rendered in
//! profile = "gentle-tutor"      # optional: a registry profile applied first
//! ```

use serde::{Deserialize, Serialize};

use super::diagnostic::{Code, Diagnostic, Diagnostics};
use super::model::{ContentHash, Slug};
use super::pin::check_label_name;
use super::reader::{TableReader, expect_array, expect_choice, expect_integer, expect_string, expect_text};
use super::settings::RegistrySettings;
use super::source::{self, LineIndex, NodeValue};
use super::validate::{read_schema, source_error};

/// The directory of experiment files inside `registry/`.
pub const EXPERIMENTS_DIR: &str = "experiments";

/// At most this many variants: more would make each one too small to read.
pub const MAX_VARIANTS: usize = 26;
/// A weight is a whole number of parts; the sum is the whole.
pub const MAX_WEIGHT: i64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being prepared: assignment is refused.
    Draft,
    /// Assigning units.
    Running,
    /// Over: assignment is refused, past assignments stay replayable with `at`.
    Stopped,
}

impl Status {
    pub const ALL: [(&'static str, Status); 3] = [
        ("draft", Status::Draft),
        ("running", Status::Running),
        ("stopped", Status::Stopped),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Running => "running",
            Status::Stopped => "stopped",
        }
    }
}

/// What a variant serves: a label (resolved at the commit assignment is
/// evaluated at) or a fixed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantPin {
    Version(u32),
    Content(ContentHash),
    Label(String),
}

impl std::fmt::Display for VariantPin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VariantPin::Version(number) => write!(formatter, "{number}"),
            VariantPin::Content(hash) => write!(formatter, "{hash}"),
            VariantPin::Label(label) => formatter.write_str(label),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub name: String,
    /// The persona's slug or id, as written.
    pub persona: String,
    pub pin: VariantPin,
    pub weight: u32,
    pub mode: Option<String>,
    pub profile: Option<String>,
    /// Where the variant is written (1-based line and column), for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Experiment {
    /// The file's stem.
    pub name: String,
    pub description: Option<String>,
    pub status: Status,
    pub salt: String,
    /// In file order: the order of their bucket ranges.
    pub variants: Vec<Variant>,
}

impl Experiment {
    pub fn weights(&self) -> Vec<u32> {
        self.variants.iter().map(|variant| variant.weight).collect()
    }

    /// Distinct personas the variants serve, as written, in order.
    pub fn personas(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for variant in &self.variants {
            if !names.contains(&variant.persona.as_str()) {
                names.push(&variant.persona);
            }
        }
        names
    }
}

#[derive(Debug)]
pub struct ParsedExperiment {
    pub experiment: Option<Experiment>,
    pub diagnostics: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &["schema", "description", "status", "salt", "persona", "variants"];
const VARIANT_KEYS: &[&str] = &["name", "persona", "pin", "weight", "mode", "profile"];

/// A salt is what the unit id is hashed with; it stays out of the way of the
/// `salt:unit` separator and of any quoting in other languages.
fn is_salt(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 100
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte))
}

/// Parses and checks an experiment file on its own: shape, names, weights and
/// modes the registry knows. Whether its personas, labels and versions exist
/// is checked against a history (see `personas check`).
pub fn validate_experiment(file: &str, bytes: &[u8], stem: &str, settings: &RegistrySettings) -> ParsedExperiment {
    let mut diagnostics = Diagnostics::new(file, bytes);
    let experiment = match source::parse(bytes) {
        Ok(root) => read_experiment(&mut diagnostics, &root, stem, settings, &LineIndex::new(bytes)),
        Err(error) => {
            source_error(&mut diagnostics, &error);
            None
        }
    };
    ParsedExperiment {
        experiment: if diagnostics.is_empty() { experiment } else { None },
        diagnostics: diagnostics.into_vec(),
    }
}

fn read_experiment(
    diagnostics: &mut Diagnostics,
    root: &source::Node,
    stem: &str,
    settings: &RegistrySettings,
    lines: &LineIndex,
) -> Option<Experiment> {
    let mut top = TableReader::new(diagnostics, root, "", TOP_KEYS)?;
    if let Err(error) = stem.parse::<Slug>() {
        diagnostics.push(
            &(0..0),
            Code::Slug,
            format!("the file name gives the experiment's name, and {error}"),
        );
    }
    read_schema(diagnostics, &mut top);
    let description = top
        .optional("description")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "description", 2000))
        .map(str::to_string);
    let status = top
        .required(diagnostics, "status")
        .and_then(|entry| expect_choice(diagnostics, &entry.value, "status", &Status::ALL));
    let salt = top.required(diagnostics, "salt").and_then(|entry| {
        let text = expect_string(diagnostics, &entry.value, "salt")?;
        if is_salt(text) {
            Some(text.to_string())
        } else {
            diagnostics.push_at(
                &entry.value.span,
                Code::Text,
                "salt",
                format!("salt = {text:?}: use 1 to 100 of A-Z a-z 0-9 . _ -"),
            );
            None
        }
    });
    let default_persona = top
        .optional("persona")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "persona", 100))
        .map(str::to_string);
    let mut variants = Vec::new();
    if let Some(entry) = top.required(diagnostics, "variants")
        && let Some(items) = expect_array(diagnostics, &entry.value, "variants")
    {
        if items.len() < 2 || items.len() > MAX_VARIANTS {
            diagnostics.push_at(
                &entry.value.span,
                Code::Range,
                "variants",
                format!(
                    "an experiment has 2 to {MAX_VARIANTS} variants, this one has {}",
                    items.len()
                ),
            );
        }
        for (index, item) in items.iter().enumerate() {
            let path = format!("variants[{index}]");
            if let Some(variant) = read_variant(diagnostics, item, &path, default_persona.as_deref(), settings, lines) {
                if variants.iter().any(|other: &Variant| other.name == variant.name) {
                    diagnostics.push_at(
                        &item.span,
                        Code::Duplicate,
                        &path,
                        format!("two variants are named {:?}", variant.name),
                    );
                }
                variants.push(variant);
            }
        }
        if !variants.is_empty() && variants.iter().all(|variant| variant.weight == 0) {
            diagnostics.push_at(
                &entry.value.span,
                Code::Weight,
                "variants",
                "every weight is 0, so no unit could be assigned; give at least one variant a weight",
            );
        }
    }
    top.finish(diagnostics);
    Some(Experiment {
        name: stem.to_string(),
        description,
        status: status?,
        salt: salt?,
        variants,
    })
}

fn read_variant(
    diagnostics: &mut Diagnostics,
    node: &source::Node,
    path: &str,
    default_persona: Option<&str>,
    settings: &RegistrySettings,
    lines: &LineIndex,
) -> Option<Variant> {
    let mut table = TableReader::new(diagnostics, node, path, VARIANT_KEYS)?;
    let name = table.required(diagnostics, "name").and_then(|entry| {
        let text = expect_string(diagnostics, &entry.value, &format!("{path}.name"))?;
        match text.parse::<Slug>() {
            Ok(_) => Some(text.to_string()),
            Err(error) => {
                diagnostics.push_at(
                    &entry.value.span,
                    Code::Name,
                    &format!("{path}.name"),
                    error.to_string(),
                );
                None
            }
        }
    });
    let persona = match table.optional("persona") {
        Some(entry) => expect_text(diagnostics, &entry.value, &format!("{path}.persona"), 100).map(str::to_string),
        None => {
            if default_persona.is_none() {
                diagnostics.push_at(
                    &node.span,
                    Code::MissingKey,
                    &format!("{path}.persona"),
                    format!("{path} names no persona: set `persona` at the top of the file or in the variant"),
                );
            }
            default_persona.map(str::to_string)
        }
    };
    let pin = table.required(diagnostics, "pin").and_then(|entry| {
        let pin_path = format!("{path}.pin");
        match &entry.value.value {
            NodeValue::Integer(number) if (1..=i64::from(i32::MAX)).contains(number) => {
                Some(VariantPin::Version(*number as u32))
            }
            NodeValue::String(text) if text.starts_with("sha256:") => match text.parse::<ContentHash>() {
                Ok(hash) => Some(VariantPin::Content(hash)),
                Err(error) => {
                    diagnostics.push_at(&entry.value.span, Code::Pin, &pin_path, error.to_string());
                    None
                }
            },
            NodeValue::String(text) => {
                let label = text.strip_prefix("label:").unwrap_or(text);
                match check_label_name(label) {
                    Ok(()) => Some(VariantPin::Label(label.to_string())),
                    Err(reason) => {
                        diagnostics.push_at(
                            &entry.value.span,
                            Code::Pin,
                            &pin_path,
                            format!("{pin_path}: a variant pins a label, a version number or \"sha256:…\"; {reason}"),
                        );
                        None
                    }
                }
            }
            other => {
                diagnostics.push_at(
                    &entry.value.span,
                    Code::Pin,
                    &pin_path,
                    format!(
                        "{pin_path} must be a label, a version number (from 1) or \"sha256:…\", found {}",
                        match other {
                            NodeValue::Integer(number) => number.to_string(),
                            other => other.type_name().to_string(),
                        }
                    ),
                );
                None
            }
        }
    });
    let weight = table.required(diagnostics, "weight").and_then(|entry| {
        let weight_path = format!("{path}.weight");
        let weight = expect_integer(diagnostics, &entry.value, &weight_path)?;
        if (0..=MAX_WEIGHT).contains(&weight) {
            Some(weight as u32)
        } else {
            diagnostics.push_at(
                &entry.value.span,
                Code::Weight,
                &weight_path,
                format!("{weight_path} = {weight}: a weight is a whole number from 0 to {MAX_WEIGHT}"),
            );
            None
        }
    });
    let mode = table.optional("mode").and_then(|entry| {
        let mode_path = format!("{path}.mode");
        let mode = expect_string(diagnostics, &entry.value, &mode_path)?;
        if settings.allows_mode(mode) {
            Some(mode.to_string())
        } else {
            diagnostics.push_at(
                &entry.value.span,
                Code::UnknownMode,
                &mode_path,
                format!("{mode_path} = {mode:?} is not in the registry's mode vocabulary"),
            );
            None
        }
    });
    let profile = table.optional("profile").and_then(|entry| {
        let profile_path = format!("{path}.profile");
        let profile = expect_string(diagnostics, &entry.value, &profile_path)?;
        match profile.parse::<Slug>() {
            Ok(_) => Some(profile.to_string()),
            Err(error) => {
                diagnostics.push_at(&entry.value.span, Code::Slug, &profile_path, error.to_string());
                None
            }
        }
    });
    table.finish(diagnostics);
    Some(Variant {
        name: name?,
        persona: persona?,
        pin: pin?,
        weight: weight?,
        mode,
        profile,
        position: Some(lines.position(node.span.start)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"schema = 1
description = "Warmer or not"
status = "running"
salt = "einstein-warmth-1"
persona = "albert-einstein"

[[variants]]
name = "control"
pin = "production"
weight = 50

[[variants]]
name = "warmer"
pin = 4
weight = 50
mode = "Educator"
profile = "gentle-tutor"
"#;

    fn parse(text: &str) -> ParsedExperiment {
        validate_experiment(
            "registry/experiments/einstein-warmth.toml",
            text.as_bytes(),
            "einstein-warmth",
            &RegistrySettings {
                modes: Some(vec!["Educator".into(), "Critic".into()]),
                ..RegistrySettings::permissive()
            },
        )
    }

    #[test]
    fn a_well_formed_experiment_reads_back() {
        let parsed = parse(GOOD);
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let experiment = parsed.experiment.unwrap();
        assert_eq!(experiment.status, Status::Running);
        assert_eq!(experiment.weights(), [50, 50]);
        assert_eq!(experiment.variants[0].pin, VariantPin::Label("production".into()));
        assert_eq!(experiment.variants[1].pin, VariantPin::Version(4));
        assert_eq!(experiment.variants[1].mode.as_deref(), Some("Educator"));
        assert_eq!(experiment.variants[0].position, Some((7, 1)));
        assert_eq!(experiment.personas(), ["albert-einstein"]);
        // The stored form (JSONB) round-trips.
        let json = serde_json::to_value(&experiment).unwrap();
        let back: Experiment = serde_json::from_value(json).unwrap();
        assert_eq!(back, experiment);
    }

    #[test]
    fn mistakes_are_reported_at_their_place() {
        for (from, to, code) in [
            ("status = \"running\"", "status = \"live\"", Code::Enum),
            ("salt = \"einstein-warmth-1\"", "salt = \"a:b\"", Code::Text),
            ("pin = 4", "pin = 0", Code::Pin),
            ("pin = 4", "pin = \"4c1d2e9f\"", Code::Pin),
            ("pin = 4", "pin = \"sha256:12\"", Code::Pin),
            ("weight = 50\nmode", "weight = -1\nmode", Code::Weight),
            ("mode = \"Educator\"", "mode = \"educator mode\"", Code::UnknownMode),
            ("name = \"warmer\"", "name = \"control\"", Code::Duplicate),
            ("profile = \"gentle-tutor\"", "colour = \"red\"", Code::UnknownKey),
        ] {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from}");
            let parsed = parse(&text);
            assert!(parsed.experiment.is_none(), "{to}");
            assert!(
                parsed
                    .diagnostics
                    .iter()
                    .any(|problem| problem.code == code && problem.line > 1),
                "{to}: {:?}",
                parsed.diagnostics
            );
        }
        let zero = GOOD.replace("weight = 50", "weight = 0");
        assert!(
            parse(&zero)
                .diagnostics
                .iter()
                .any(|problem| problem.code == Code::Weight)
        );
        let no_persona = GOOD.replace("persona = \"albert-einstein\"\n", "");
        assert!(
            parse(&no_persona)
                .diagnostics
                .iter()
                .any(|problem| problem.code == Code::MissingKey)
        );
    }
}

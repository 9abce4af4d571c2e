//! `registry/profiles/<name>.toml`: config templates applied to a persona on read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::diagnostic::{Code, Diagnostic, Diagnostics};
use super::model::{
    EMOTIONAL_STYLES, EmotionalStyle, HUMOR_USAGES, HumorUsage, LANGUAGE_STYLES, LanguageStyle, Persona, Slug,
};
use super::reader::{TableReader, expect_bool, expect_choice, expect_string, expect_table, expect_text, join_path};
use super::settings::RegistrySettings;
use super::source;
use super::validate::{read_schema, source_error};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigOverrides {
    pub humor_usage: Option<HumorUsage>,
    pub emotional_style: Option<EmotionalStyle>,
    pub language_style: Option<LanguageStyle>,
    pub voice_enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub slug: Slug,
    pub name: String,
    pub description: Option<String>,
    pub default_mode: Option<String>,
    pub config: ConfigOverrides,
    pub modes: BTreeMap<String, bool>,
}

impl Profile {
    /// The persona as it reads with this profile applied. Overrides win; a
    /// profile's default mode is switched on so the result stays valid.
    pub fn apply(&self, persona: &Persona) -> Persona {
        let mut applied = persona.clone();
        let overrides = &self.config;
        if let Some(value) = overrides.humor_usage {
            applied.config.humor_usage = value;
        }
        if let Some(value) = overrides.emotional_style {
            applied.config.emotional_style = value;
        }
        if let Some(value) = overrides.language_style {
            applied.config.language_style = value;
        }
        if let Some(value) = overrides.voice_enabled {
            applied.config.voice_enabled = value;
        }
        for (mode, enabled) in &self.modes {
            applied.modes.insert(mode.clone(), *enabled);
        }
        if let Some(mode) = &self.default_mode {
            applied.modes.insert(mode.clone(), true);
            applied.default_mode = Some(mode.clone());
        }
        // A profile may disable the persona's own default mode.
        if let Some(mode) = &applied.default_mode
            && applied.modes.get(mode) != Some(&true)
        {
            applied.default_mode = None;
        }
        applied
    }
}

const PROFILE_KEYS: &[&str] = &["schema", "name", "description", "default_mode", "config", "modes"];
const CONFIG_KEYS: &[&str] = &["humor_usage", "emotional_style", "language_style", "voice_enabled"];

#[derive(Debug)]
pub struct ParsedProfile {
    pub file: String,
    pub profile: Option<Profile>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn validate_profile(file: &str, bytes: &[u8], stem: &str, settings: &RegistrySettings) -> ParsedProfile {
    let mut diagnostics = Diagnostics::new(file, bytes);
    let profile = match source::parse(bytes) {
        Ok(root) => read_profile(&mut diagnostics, &root, stem, settings),
        Err(error) => {
            source_error(&mut diagnostics, &error);
            None
        }
    };
    ParsedProfile {
        file: file.to_string(),
        profile: if diagnostics.is_empty() { profile } else { None },
        diagnostics: diagnostics.into_vec(),
    }
}

fn read_profile(
    diagnostics: &mut Diagnostics,
    root: &source::Node,
    stem: &str,
    settings: &RegistrySettings,
) -> Option<Profile> {
    let mut top = TableReader::new(diagnostics, root, "", PROFILE_KEYS)?;
    let slug = match stem.parse::<Slug>() {
        Ok(slug) => Some(slug),
        Err(error) => {
            diagnostics.push(
                &(0..0),
                Code::Slug,
                format!("the file name gives the profile's slug, and {error}"),
            );
            None
        }
    };
    read_schema(diagnostics, &mut top);
    let name = top
        .required(diagnostics, "name")
        .and_then(|entry| expect_text(diagnostics, &entry.value, "name", 120));
    let description = match top.optional("description") {
        None => Some(None),
        Some(entry) => expect_text(diagnostics, &entry.value, "description", 2000).map(|text| Some(text.to_string())),
    };
    let default_mode = match top.optional("default_mode") {
        None => Some(None),
        Some(entry) => expect_string(diagnostics, &entry.value, "default_mode").and_then(|mode| {
            if settings.allows_mode(mode) {
                Some(Some(mode.to_string()))
            } else {
                diagnostics.push(
                    &entry.value.span,
                    Code::UnknownMode,
                    format!("default_mode = {mode:?} is not in the registry's mode vocabulary"),
                );
                None
            }
        }),
    };
    let config = match top.optional("config") {
        None => Some(ConfigOverrides::default()),
        Some(entry) => read_overrides(diagnostics, &entry.value),
    };
    let modes = match top.optional("modes") {
        None => Some(BTreeMap::new()),
        Some(entry) => read_mode_overrides(diagnostics, &entry.value, settings),
    };
    top.finish(diagnostics);
    Some(Profile {
        slug: slug?,
        name: name?.to_string(),
        description: description?,
        default_mode: default_mode?,
        config: config?,
        modes: modes?,
    })
}

fn read_overrides(diagnostics: &mut Diagnostics, node: &source::Node) -> Option<ConfigOverrides> {
    let mut reader = TableReader::new(diagnostics, node, "config", CONFIG_KEYS)?;
    let mut overrides = ConfigOverrides::default();
    let mut valid = true;
    if let Some(entry) = reader.optional("humor_usage") {
        overrides.humor_usage = expect_choice(diagnostics, &entry.value, "config.humor_usage", &HUMOR_USAGES);
        valid &= overrides.humor_usage.is_some();
    }
    if let Some(entry) = reader.optional("emotional_style") {
        overrides.emotional_style =
            expect_choice(diagnostics, &entry.value, "config.emotional_style", &EMOTIONAL_STYLES);
        valid &= overrides.emotional_style.is_some();
    }
    if let Some(entry) = reader.optional("language_style") {
        overrides.language_style = expect_choice(diagnostics, &entry.value, "config.language_style", &LANGUAGE_STYLES);
        valid &= overrides.language_style.is_some();
    }
    if let Some(entry) = reader.optional("voice_enabled") {
        overrides.voice_enabled = expect_bool(diagnostics, &entry.value, "config.voice_enabled");
        valid &= overrides.voice_enabled.is_some();
    }
    reader.finish(diagnostics);
    valid.then_some(overrides)
}

fn read_mode_overrides(
    diagnostics: &mut Diagnostics,
    node: &source::Node,
    settings: &RegistrySettings,
) -> Option<BTreeMap<String, bool>> {
    let entries = expect_table(diagnostics, node, "modes")?;
    let mut modes = BTreeMap::new();
    let mut valid = true;
    for entry in entries {
        if !settings.allows_mode(&entry.key) {
            diagnostics.push(
                &entry.key_span,
                Code::UnknownMode,
                format!("mode `{}` is not in the registry's vocabulary", entry.key),
            );
            valid = false;
        }
        match expect_bool(diagnostics, &entry.value, &join_path("modes", &entry.key)) {
            Some(enabled) => {
                modes.insert(entry.key.clone(), enabled);
            }
            None => valid = false,
        }
    }
    valid.then_some(modes)
}

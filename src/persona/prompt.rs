//! `registry/prompt.jinja`: the registry's system-prompt template. It renders
//! a persona in one mode (with a profile applied, if any) into the text an
//! A/B tester sends to a model. The template is versioned in git like the
//! personas, and rendering is deterministic: the same template, persona,
//! mode and profile always give the same bytes, named by the prompt's hash.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::diagnostic::{Code, Diagnostic};
use super::model::{ContentHash, Persona};
use super::profile::Profile;
use super::source::LineIndex;

/// The template's file name inside `registry/`.
pub const PROMPT_FILE: &str = "prompt.jinja";
/// Templates are small; a larger file is a mistake, not a template.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Instructions one render may execute. A template is reviewed text, but a
/// runaway loop in one must cost a clear error, not a server thread.
const RENDER_FUEL: u64 = 1_000_000;
/// The rendered prompt may not exceed this; models take a few pages of system prompt at most.
const MAX_PROMPT_BYTES: usize = 256 * 1024;

/// A parsed template, ready to render.
pub struct PromptTemplate {
    environment: Environment<'static>,
    hash: ContentHash,
}

impl std::fmt::Debug for PromptTemplate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PromptTemplate")
            .field("hash", &self.hash)
            .finish()
    }
}

/// Why a prompt could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("mode {mode:?} is not enabled for this persona (enabled: {})", enabled.join(", "))]
    ModeNotEnabled { mode: String, enabled: Vec<String> },
    #[error("the persona has no enabled mode to render")]
    NoMode,
    #[error("{file}:{line}: the prompt template failed: {message}")]
    Render { file: String, line: usize, message: String },
}

/// A rendered prompt and everything an experiment records about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedPrompt {
    pub mode: String,
    pub text: String,
    /// SHA-256 of `text` (UTF-8), `sha256:<hex>`.
    pub hash: ContentHash,
}

/// A rendered prompt with what names it exactly: the answer of
/// `personas prompt --json` and `GET /api/personas/{id}/prompt`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PromptRecord {
    #[schema(value_type = String)]
    pub id: super::PersonaId,
    pub slug: String,
    pub version: i64,
    pub content_hash: String,
    pub mode: String,
    /// The profile applied, if any.
    pub profile: Option<String>,
    /// The template used: the one in force at the version's commit when the
    /// version was pinned, the registry's current one otherwise.
    pub template: TemplateRef,
    /// SHA-256 of `prompt`: record it with an experiment's results.
    pub prompt_hash: String,
    pub prompt: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TemplateRef {
    /// The commit that last changed the template (as of the version used).
    pub commit: String,
    pub hash: String,
}

/// The SHA-256 of some bytes, in the registry's hash notation.
pub fn sha256(bytes: &[u8]) -> ContentHash {
    ContentHash(Sha256::digest(bytes).into())
}

/// Where the template lives in the repository (and in messages).
pub fn template_path() -> String {
    format!("registry/{PROMPT_FILE}")
}

impl PromptTemplate {
    /// Parses a template; syntax errors are reported as `file:line:col`.
    pub fn parse(file: &str, source: &str) -> Result<PromptTemplate, Diagnostic> {
        let at = |line: usize, column: usize, code: Code, message: String| Diagnostic {
            path: None,
            file: file.to_string(),
            line,
            column,
            code,
            message,
        };
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(at(
                1,
                1,
                Code::TooLarge,
                format!(
                    "the template is {} bytes; at most {MAX_TEMPLATE_BYTES} are allowed",
                    source.len()
                ),
            ));
        }
        let mut environment = Environment::new();
        // Whitespace as a prompt author expects it: a line holding only a
        // block tag leaves no blank line behind.
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build();
        if let Ok(syntax) = syntax {
            environment.set_syntax(syntax);
        }
        // A misspelt field is an error, not a silently empty sentence.
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.set_fuel(Some(RENDER_FUEL));
        environment.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        if let Err(error) = environment.add_template_owned("prompt", source.to_string()) {
            let lines = LineIndex::new(source.as_bytes());
            let (line, column) = match error.range() {
                Some(range) => lines.position(range.start),
                None => (error.line().unwrap_or(1), 1),
            };
            return Err(at(
                line,
                column,
                Code::Syntax,
                error.detail().unwrap_or("invalid template").to_string(),
            ));
        }
        Ok(PromptTemplate {
            environment,
            hash: sha256(source.as_bytes()),
        })
    }

    /// The hash of the template's source.
    pub fn hash(&self) -> ContentHash {
        self.hash
    }

    /// Renders `persona` (already profiled, if a profile applies) in `mode`,
    /// or in its default mode when `mode` is `None`.
    pub fn render(
        &self,
        persona: &Persona,
        mode: Option<&str>,
        profile: Option<&Profile>,
    ) -> Result<RenderedPrompt, PromptError> {
        let mode = choose_mode(persona, mode)?;
        let context = minijinja::context! {
            persona => minijinja::Value::from(minijinja::value::Serde(persona)),
            enabled_modes => persona.enabled_modes().map(str::to_string).collect::<Vec<_>>(),
            mode => mode.clone(),
            profile => profile.map(|profile| minijinja::context! {
                slug => profile.slug.to_string(),
                name => profile.name.clone(),
                description => profile.description.clone(),
            }),
        };
        let render_error = |error: minijinja::Error| PromptError::Render {
            file: template_path(),
            line: error.line().unwrap_or(0),
            message: error
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| error.kind().to_string()),
        };
        let template = self.environment.get_template("prompt").map_err(render_error)?;
        let rendered = template.render(context).map_err(render_error)?;
        if rendered.len() > MAX_PROMPT_BYTES {
            return Err(PromptError::Render {
                file: template_path(),
                line: 0,
                message: format!(
                    "the rendered prompt is {} bytes; at most {MAX_PROMPT_BYTES} are allowed",
                    rendered.len()
                ),
            });
        }
        let text = normalize(&rendered);
        Ok(RenderedPrompt {
            hash: sha256(text.as_bytes()),
            mode,
            text,
        })
    }
}

/// The mode asked for, if enabled; otherwise the default mode, or the first enabled one.
fn choose_mode(persona: &Persona, asked: Option<&str>) -> Result<String, PromptError> {
    let enabled: Vec<&str> = persona.enabled_modes().collect();
    match asked {
        Some(mode) if enabled.contains(&mode) => Ok(mode.to_string()),
        Some(mode) => Err(PromptError::ModeNotEnabled {
            mode: mode.to_string(),
            enabled: enabled.iter().map(|mode| mode.to_string()).collect(),
        }),
        None => persona
            .default_mode
            .as_deref()
            .filter(|mode| enabled.contains(mode))
            .or(enabled.first().copied())
            .map(str::to_string)
            .ok_or(PromptError::NoMode),
    }
}

/// Trailing spaces and runs of blank lines are template noise, not meaning:
/// dropping them keeps the prompt (and its hash) stable under cosmetic
/// template edits. The text ends with exactly one newline.
fn normalize(rendered: &str) -> String {
    let mut text = String::with_capacity(rendered.len());
    let mut blank_run = 0;
    for line in rendered.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 {
                continue;
            }
        } else {
            blank_run = 0;
        }
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Validates a template against every persona it will render: it must parse,
/// and render each persona in each enabled mode. Problems name the template.
pub fn check_template<'a>(
    file: &str,
    source: &str,
    personas: impl IntoIterator<Item = &'a Persona>,
) -> Vec<Diagnostic> {
    match PromptTemplate::parse(file, source) {
        Ok(template) => template.check(file, personas),
        Err(diagnostic) => vec![diagnostic],
    }
}

impl PromptTemplate {
    /// Where this (parsed) template fails to render each persona in each
    /// enabled mode; one problem per persona says enough.
    pub fn check<'a>(&self, file: &str, personas: impl IntoIterator<Item = &'a Persona>) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for persona in personas {
            for mode in persona.enabled_modes() {
                if let Err(PromptError::Render { line, message, .. }) = self.render(persona, Some(mode), None) {
                    problems.push(Diagnostic {
                        path: None,
                        file: file.to_string(),
                        line: line.max(1),
                        column: 1,
                        code: Code::Template,
                        message: format!("rendering {} in mode {mode}: {message}", persona.slug),
                    });
                    break;
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persona() -> Persona {
        let source = include_str!("../../registry/personas/albert-einstein.toml");
        let parsed = super::super::validate_persona(
            "albert-einstein.toml",
            source.as_bytes(),
            "albert-einstein",
            &super::super::RegistrySettings::permissive(),
        );
        parsed.persona.expect("the sample persona is valid")
    }

    #[test]
    fn rendering_is_deterministic_and_hashed() {
        let template = PromptTemplate::parse(
            "t",
            "You are {{ persona.name }}.\n\n\n{% for b in persona.beliefs %}- {{ b.text }}\n{% endfor %}Mode: {{ mode }}   \n",
        )
        .unwrap();
        let first = template.render(&persona(), None, None).unwrap();
        let second = template.render(&persona(), None, None).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.mode, "Educator");
        assert!(first.text.starts_with("You are Albert Einstein.\n\n- Imagination"));
        assert!(first.text.ends_with("Mode: Educator\n"), "{}", first.text);
        assert_eq!(first.hash, sha256(first.text.as_bytes()));
        let debating = template.render(&persona(), Some("Debater"), None).unwrap();
        assert_ne!(debating.hash, first.hash);
    }

    #[test]
    fn a_disabled_mode_and_an_unknown_field_are_errors() {
        let template = PromptTemplate::parse("t", "{{ persona.nmae }}").unwrap();
        assert!(matches!(
            template.render(&persona(), Some("Mentor"), None),
            Err(PromptError::ModeNotEnabled { .. })
        ));
        let error = template.render(&persona(), None, None).unwrap_err();
        assert!(matches!(error, PromptError::Render { .. }), "{error}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let error = PromptTemplate::parse("registry/prompt.jinja", "line one\n{% if x %}\nunclosed").unwrap_err();
        assert_eq!(error.file, "registry/prompt.jinja");
        assert!(error.line >= 2, "{error}");
        assert_eq!(error.code, Code::Syntax);
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel() {
        let template = PromptTemplate::parse(
            "t",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(template.render(&persona(), None, None).is_err());
    }
}

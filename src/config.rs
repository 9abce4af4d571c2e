//! One configuration for every command. Precedence: command-line flags, then
//! environment variables (clap reads both), then `personas.toml`, then the
//! built-in defaults each command applies.
//!
//! The file is read with the same spanned reader as registry files, so a
//! mistake in it is reported as `personas.toml:LINE:COL` with a suggestion
//! for a misspelt key, never silently ignored.

use std::path::{Path, PathBuf};

use crate::access::{ApiToken, Identity, Role, TokenHash};
use crate::persona::diagnostic::{Code, Diagnostic, Diagnostics};
use crate::persona::reader::{TableReader, expect_array, expect_bool, expect_choice, expect_text};
use crate::persona::source;
use crate::persona::validate::source_error;
use crate::vectors::embed::SessionMemory;
use crate::webhooks::WebhookConfig;

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "personas.toml";

/// Every setting that can come from more than one place. `None` means "not
/// set here"; [`Config::or`] fills gaps from a lower layer.
#[derive(Clone, Default, PartialEq)]
pub struct Config {
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub model_dir: Option<PathBuf>,
    /// A model fastembed downloads by name (online builds only), e.g. `BGESmallENV15`.
    pub model: Option<String>,
    pub ort_library: Option<PathBuf>,
    /// `[embed] memory`: how the model keeps its working memory between batches.
    pub embed_memory: Option<SessionMemory>,
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<String>,
    pub collection: Option<String>,
    /// API tokens (`[[access.tokens]]` or `PERSONAS_TOKENS`).
    pub tokens: Option<Vec<ApiToken>>,
    /// Reads need a token too (`[access] private`, `PERSONAS_PRIVATE`).
    pub private: Option<bool>,
    /// Where settings changes are committed (`[write] mode`, `PERSONAS_WRITE_MODE`).
    pub write_mode: Option<WriteMode>,
    /// The committer of settings changes (`[write] bot_name`/`bot_email`, `PERSONAS_BOT`).
    pub bot: Option<Identity>,
    /// Change notifications (`[[webhooks]]`); their `Debug` hides secrets and URL paths.
    pub webhooks: Option<Vec<WebhookConfig>>,
}

/// Where `PATCH …/settings` puts its commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WriteMode {
    /// On the followed branch, which the sync then projects.
    #[default]
    Commit,
    /// On a new branch `settings/<slug>-<commit>`, for review as a pull request.
    Branch,
}

impl WriteMode {
    pub const ALL: [(&'static str, WriteMode); 2] = [("commit", WriteMode::Commit), ("branch", WriteMode::Branch)];
}

/// Who commits settings changes when nothing else is configured.
pub fn default_bot() -> Identity {
    Identity {
        name: "Persona Registry".to_string(),
        email: "registry@personas.invalid".to_string(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A database URL may carry a password and the API key is a secret.
        let hidden = |value: &Option<String>| value.as_ref().map(|_| "<hidden>");
        formatter
            .debug_struct("Config")
            .field("database_url", &hidden(&self.database_url))
            .field("data_dir", &self.data_dir)
            .field("model_dir", &self.model_dir)
            .field("model", &self.model)
            .field("ort_library", &self.ort_library)
            .field("embed_memory", &self.embed_memory)
            .field("qdrant_url", &self.qdrant_url)
            .field("qdrant_api_key", &hidden(&self.qdrant_api_key))
            .field("collection", &self.collection)
            .field("tokens", &self.tokens.as_ref().map(Vec::len))
            .field("private", &self.private)
            .field("write_mode", &self.write_mode)
            .field("bot", &self.bot)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl Config {
    /// Each setting from `self`, or from `lower` where `self` leaves it unset.
    pub fn or(self, lower: Config) -> Config {
        Config {
            database_url: self.database_url.or(lower.database_url),
            data_dir: self.data_dir.or(lower.data_dir),
            model_dir: self.model_dir.or(lower.model_dir),
            model: self.model.or(lower.model),
            ort_library: self.ort_library.or(lower.ort_library),
            embed_memory: self.embed_memory.or(lower.embed_memory),
            qdrant_url: self.qdrant_url.or(lower.qdrant_url),
            qdrant_api_key: self.qdrant_api_key.or(lower.qdrant_api_key),
            collection: self.collection.or(lower.collection),
            tokens: self.tokens.or(lower.tokens),
            private: self.private.or(lower.private),
            write_mode: self.write_mode.or(lower.write_mode),
            bot: self.bot.or(lower.bot),
            webhooks: self.webhooks.or(lower.webhooks),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    format!("invalid configuration:\n{}", lines.join("\n"))
}

/// Reads the configuration file: `explicit` (from `--config` or
/// `PERSONAS_CONFIG`) must exist; otherwise `personas.toml` in the working
/// directory is used when present, and no file means an empty layer.
pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_FILE);
            if !default.is_file() {
                return Ok(Config::default());
            }
            default
        }
    };
    let bytes = std::fs::read(&path).map_err(|error| ConfigError::Unreadable {
        path: path.display().to_string(),
        reason: error.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&path.display().to_string(), &bytes, base)
}

const TOP_KEYS: &[&str] = &["database", "embed", "qdrant", "access", "write", "webhooks"];
const ACCESS_KEYS: &[&str] = &["private", "tokens"];
const TOKEN_KEYS: &[&str] = &["role", "name", "email", "hash"];
const WRITE_KEYS: &[&str] = &["mode", "bot_name", "bot_email"];
const DATABASE_KEYS: &[&str] = &["url", "data_dir"];
const EMBED_KEYS: &[&str] = &["model_dir", "model", "runtime_library", "memory"];
const QDRANT_KEYS: &[&str] = &["url", "api_key", "collection"];

/// Parses configuration text. Relative paths in it are taken relative to
/// `base` (the file's directory), so the file means the same from anywhere.
pub fn parse(file: &str, bytes: &[u8], base: &Path) -> Result<Config, ConfigError> {
    let mut diagnostics = Diagnostics::new(file, bytes);
    let root = match source::parse(bytes) {
        Ok(root) => root,
        Err(error) => {
            source_error(&mut diagnostics, &error);
            return Err(ConfigError::Invalid(diagnostics.into_vec()));
        }
    };
    let mut config = Config::default();
    if let Some(mut top) = TableReader::new(&mut diagnostics, &root, "", TOP_KEYS) {
        let path = |text: &str| base.join(text);
        if let Some(mut section) = section(&mut diagnostics, &mut top, "database", DATABASE_KEYS) {
            config.database_url = text(&mut diagnostics, &mut section, "url");
            config.data_dir = text(&mut diagnostics, &mut section, "data_dir").map(|text| path(&text));
            section.finish(&mut diagnostics);
        }
        if let Some(mut section) = section(&mut diagnostics, &mut top, "embed", EMBED_KEYS) {
            config.model_dir = text(&mut diagnostics, &mut section, "model_dir").map(|text| path(&text));
            config.model = text(&mut diagnostics, &mut section, "model");
            config.ort_library = text(&mut diagnostics, &mut section, "runtime_library").map(|text| path(&text));
            config.embed_memory = section
                .optional("memory")
                .and_then(|entry| expect_choice(&mut diagnostics, &entry.value, "embed.memory", &SessionMemory::ALL));
            section.finish(&mut diagnostics);
        }
        if let Some(mut section) = section(&mut diagnostics, &mut top, "qdrant", QDRANT_KEYS) {
            config.qdrant_url = text(&mut diagnostics, &mut section, "url");
            config.qdrant_api_key = text(&mut diagnostics, &mut section, "api_key");
            config.collection = text(&mut diagnostics, &mut section, "collection");
            section.finish(&mut diagnostics);
        }
        if let Some(mut section) = section(&mut diagnostics, &mut top, "access", ACCESS_KEYS) {
            config.private = section
                .optional("private")
                .and_then(|entry| expect_bool(&mut diagnostics, &entry.value, "access.private"));
            config.tokens = section
                .optional("tokens")
                .and_then(|entry| tokens(&mut diagnostics, &entry.value));
            section.finish(&mut diagnostics);
        }
        if let Some(mut section) = section(&mut diagnostics, &mut top, "write", WRITE_KEYS) {
            config.write_mode = section
                .optional("mode")
                .and_then(|entry| expect_choice(&mut diagnostics, &entry.value, "write.mode", &WriteMode::ALL));
            let span = section.span().clone();
            let name = text(&mut diagnostics, &mut section, "bot_name");
            let email = text(&mut diagnostics, &mut section, "bot_email");
            config.bot = match (name, email) {
                (None, None) => None,
                (name, email) => {
                    let fallback = default_bot();
                    let name = name.unwrap_or(fallback.name);
                    let email = email.unwrap_or(fallback.email);
                    identity(&mut diagnostics, &span, "write", &name, &email)
                }
            };
            section.finish(&mut diagnostics);
        }
        config.webhooks = top.optional("webhooks").and_then(|entry| {
            crate::webhooks::config::parse(&mut diagnostics, &entry.value, &|name| std::env::var(name).ok())
        });
        top.finish(&mut diagnostics);
    }
    if diagnostics.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(diagnostics.into_vec()))
    }
}

fn section<'a>(
    diagnostics: &mut Diagnostics,
    top: &mut TableReader<'a>,
    name: &str,
    keys: &'static [&'static str],
) -> Option<TableReader<'a>> {
    let entry = top.optional(name)?;
    TableReader::new(diagnostics, &entry.value, name, keys)
}

/// `[[access.tokens]]`: each with a role, an identity and the token's hash.
fn tokens(diagnostics: &mut Diagnostics, node: &crate::persona::source::Node) -> Option<Vec<ApiToken>> {
    let items = expect_array(diagnostics, node, "access.tokens")?;
    let mut tokens = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let path = format!("access.tokens[{index}]");
        let Some(mut table) = TableReader::new(diagnostics, item, &path, TOKEN_KEYS) else {
            continue;
        };
        let role = table.required(diagnostics, "role").and_then(|entry| {
            let choices: Vec<(&str, Role)> = Role::ALL.to_vec();
            expect_choice(diagnostics, &entry.value, &format!("{path}.role"), &choices)
        });
        let name = table
            .required(diagnostics, "name")
            .and_then(|entry| expect_text(diagnostics, &entry.value, &format!("{path}.name"), 200));
        let email = table
            .required(diagnostics, "email")
            .and_then(|entry| expect_text(diagnostics, &entry.value, &format!("{path}.email"), 200));
        let identity = match (name, email) {
            (Some(name), Some(email)) => identity(diagnostics, &item.span, &path, name, email),
            _ => None,
        };
        let hash = table.required(diagnostics, "hash").and_then(|entry| {
            let text = expect_text(diagnostics, &entry.value, &format!("{path}.hash"), 100)?;
            text.parse::<TokenHash>()
                .map_err(|reason| diagnostics.push_at(&entry.value.span, Code::Text, &format!("{path}.hash"), reason))
                .ok()
        });
        table.finish(diagnostics);
        if let (Some(role), Some(identity), Some(hash)) = (role, identity, hash) {
            tokens.push(ApiToken { hash, role, identity });
        }
    }
    Some(tokens)
}

fn identity(
    diagnostics: &mut Diagnostics,
    span: &crate::persona::source::Span,
    path: &str,
    name: &str,
    email: &str,
) -> Option<Identity> {
    Identity::new(name, email)
        .map_err(|reason| diagnostics.push_at(span, Code::Text, path, reason))
        .ok()
}

fn text(diagnostics: &mut Diagnostics, section: &mut TableReader<'_>, key: &str) -> Option<String> {
    let entry = section.optional(key)?;
    expect_text(diagnostics, &entry.value, &section.path_of(key), 4096).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_section_and_resolves_paths_against_the_file() {
        let text = br#"
[database]
url = "postgres://registry@db/personas"
data_dir = "state"

[embed]
model_dir = "/models/minilm"
memory = "arena"

[qdrant]
url = "http://qdrant:6334"
api_key = "secret"
collection = "staging"
"#;
        let config = parse("personas.toml", text, Path::new("/etc/personas")).unwrap();
        assert_eq!(config.database_url.as_deref(), Some("postgres://registry@db/personas"));
        assert_eq!(config.data_dir, Some(PathBuf::from("/etc/personas/state")));
        assert_eq!(config.model_dir, Some(PathBuf::from("/models/minilm")));
        assert_eq!(config.embed_memory, Some(SessionMemory::Arena));
        assert_eq!(config.collection.as_deref(), Some("staging"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret") && !shown.contains("registry@db"), "{shown}");
    }

    #[test]
    fn mistakes_are_reported_with_line_and_column() {
        let text = b"[qdrant]\nurl = \"http://q:6334\"\ncolection = \"x\"\n\n[embed]\nmodel_dir = 3\n";
        let Err(ConfigError::Invalid(problems)) = parse("personas.toml", text, Path::new(".")) else {
            panic!("accepted a misspelt key and a number for a path");
        };
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|line| line.starts_with("personas.toml:3:1: unknown-key")
                    && line.contains("did you mean `collection`")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|line| line.starts_with("personas.toml:6:13: type")),
            "{shown:?}"
        );
    }

    #[test]
    fn tokens_and_write_settings_are_read_and_checked() {
        let hash = TokenHash::of("prs_example").to_string();
        let text = format!(
            "[access]\nprivate = true\n\n[[access.tokens]]\nrole = \"editor\"\nname = \"Ada\"\nemail = \"ada@example.org\"\nhash = \"{hash}\"\n\n[write]\nmode = \"branch\"\nbot_email = \"bot@example.org\"\n"
        );
        let config = parse("personas.toml", text.as_bytes(), Path::new(".")).unwrap();
        let tokens = config.tokens.as_ref().unwrap();
        assert_eq!(tokens[0].role, Role::Editor);
        assert_eq!(tokens[0].identity.to_string(), "Ada <ada@example.org>");
        assert_eq!(config.private, Some(true));
        assert_eq!(config.write_mode, Some(WriteMode::Branch));
        assert_eq!(
            config.bot.as_ref().unwrap().to_string(),
            "Persona Registry <bot@example.org>"
        );
        assert!(!format!("{config:?}").contains(&hash[10..]));

        let text = b"[[access.tokens]]\nrole = \"admin\"\nname = \"Ada\"\nemail = \"ada\"\nhash = \"abc\"\n";
        let Err(ConfigError::Invalid(problems)) = parse("personas.toml", text, Path::new(".")) else {
            panic!("accepted a bad token entry");
        };
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            shown.iter().any(|line| line.starts_with("personas.toml:2:8: enum")),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|line| line.contains("not an email address")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|line| line.starts_with("personas.toml:5:8") && line.contains("not a token hash")),
            "{shown:?}"
        );
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let file = Config {
            qdrant_url: Some("http://file:6334".into()),
            collection: Some("from-file".into()),
            ..Config::default()
        };
        let flags = Config {
            qdrant_url: Some("http://flag:6334".into()),
            ..Config::default()
        };
        let merged = flags.or(file);
        assert_eq!(merged.qdrant_url.as_deref(), Some("http://flag:6334"));
        assert_eq!(merged.collection.as_deref(), Some("from-file"));
    }
}

//! Problems found in registry files: what, where (file:line:col) and a stable
//! code, plus the three renderings `personas check` offers.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::source::{LineIndex, Span};

/// Stable, machine-readable error codes. Tools and CI filters match on these,
/// so a code is never renamed once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    Io,
    TooLarge,
    TooDeep,
    NotUtf8,
    Syntax,
    Type,
    MissingKey,
    UnknownKey,
    Range,
    Enum,
    Uuid,
    Slug,
    SlugMismatch,
    Date,
    Url,
    Text,
    Duplicate,
    DuplicateId,
    DuplicateSlug,
    UnknownMode,
    DefaultMode,
    NoEnabledMode,
    SourceRequired,
    Schema,
    UnknownPersona,
    Name,
    Empty,
    MissingRegistry,
    /// The prompt template fails to render a persona.
    Template,
    /// A malformed label name, or a label that a git tag shadows.
    Label,
    /// A label or experiment names a version the persona does not have.
    UnknownVersion,
    /// An experiment variant's pin is not a label or a version.
    Pin,
    /// Experiment weights that cannot split traffic.
    Weight,
    /// A cited page that is dead, unreachable, unreadable, or does not hold the belief.
    Citation,
    /// A registry path that is a symbolic link or a submodule, not a file.
    NotAFile,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Io => "io",
            Code::TooLarge => "too-large",
            Code::TooDeep => "too-deep",
            Code::NotUtf8 => "not-utf8",
            Code::Syntax => "syntax",
            Code::Type => "type",
            Code::MissingKey => "missing-key",
            Code::UnknownKey => "unknown-key",
            Code::Range => "range",
            Code::Enum => "enum",
            Code::Uuid => "uuid",
            Code::Slug => "slug",
            Code::SlugMismatch => "slug-mismatch",
            Code::Date => "date",
            Code::Url => "url",
            Code::Text => "text",
            Code::Duplicate => "duplicate",
            Code::DuplicateId => "duplicate-id",
            Code::DuplicateSlug => "duplicate-slug",
            Code::UnknownMode => "unknown-mode",
            Code::DefaultMode => "default-mode",
            Code::NoEnabledMode => "no-enabled-mode",
            Code::SourceRequired => "source-required",
            Code::Schema => "schema",
            Code::UnknownPersona => "unknown-persona",
            Code::Name => "name",
            Code::Empty => "empty",
            Code::MissingRegistry => "missing-registry",
            Code::Template => "template",
            Code::Label => "label",
            Code::UnknownVersion => "unknown-version",
            Code::Pin => "pin",
            Code::Weight => "weight",
            Code::Citation => "citation",
            Code::NotAFile => "not-a-file",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// One problem in one file. `line` and `column` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub code: Code,
    pub message: String,
    /// The dotted key the problem is about (`config.humor_usage`), where one
    /// is known: API clients point at the field, not at a line of a file
    /// they never saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

/// Collects diagnostics for one file, turning spans into line:col as they come.
#[derive(Debug)]
pub struct Diagnostics {
    file: String,
    lines: LineIndex,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>, bytes: &[u8]) -> Self {
        Diagnostics {
            file: file.into(),
            lines: LineIndex::new(bytes),
            items: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn push(&mut self, span: &Span, code: Code, message: impl Into<String>) {
        self.record(span, code, None, message.into());
    }

    /// Like [`Diagnostics::push`], for a problem with one key (`path`, dotted).
    pub fn push_at(&mut self, span: &Span, code: Code, path: &str, message: impl Into<String>) {
        let path = (!path.is_empty()).then(|| path.to_string());
        self.record(span, code, path, message.into());
    }

    fn record(&mut self, span: &Span, code: Code, path: Option<String>, message: String) {
        let (line, column) = self.lines.position(span.start);
        self.items.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            code,
            message,
            path,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

/// How `personas check` prints its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `file:line:col: code: message`, one per line.
    Human,
    /// One JSON array of `{file, line, column, code, message}` records.
    Json,
    /// GitHub Actions workflow commands (`::error file=…,line=…,col=…::…`).
    Github,
}

/// Renders diagnostics in the requested format; the result ends with a newline
/// unless it is empty.
pub fn render(diagnostics: &[Diagnostic], format: OutputFormat) -> String {
    match format {
        OutputFormat::Human => diagnostics.iter().map(|diagnostic| format!("{diagnostic}\n")).collect(),
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(diagnostics).expect("diagnostics always serialize");
            json.push('\n');
            json
        }
        OutputFormat::Github => diagnostics
            .iter()
            .map(|diagnostic| {
                format!(
                    "::error file={},line={},col={},title={}::{}\n",
                    escape_github_property(&diagnostic.file),
                    diagnostic.line,
                    diagnostic.column,
                    escape_github_property(diagnostic.code.as_str()),
                    escape_github_data(&diagnostic.message)
                )
            })
            .collect(),
    }
}

/// Escaping rules of GitHub's workflow commands: data escapes `%`, CR and LF;
/// properties additionally escape `:` and `,`.
fn escape_github_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn escape_github_property(text: &str) -> String {
    escape_github_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Diagnostic> {
        let mut diagnostics = Diagnostics::new("registry/personas/x.toml", b"a = 1\nb = 2\n");
        diagnostics.push(&(8..9), Code::Range, "b = 2 is outside 0.0..=1.0, 100%");
        diagnostics.into_vec()
    }

    #[test]
    fn human_format_is_file_line_col() {
        assert_eq!(
            render(&sample(), OutputFormat::Human),
            "registry/personas/x.toml:2:3: range: b = 2 is outside 0.0..=1.0, 100%\n"
        );
    }

    #[test]
    fn github_format_escapes_data_and_properties() {
        assert_eq!(
            render(&sample(), OutputFormat::Github),
            "::error file=registry/personas/x.toml,line=2,col=3,title=range::b = 2 is outside 0.0..=1.0, 100%25\n"
        );
    }

    #[test]
    fn json_format_has_every_field() {
        let parsed: serde_json::Value = serde_json::from_str(&render(&sample(), OutputFormat::Json)).unwrap();
        assert_eq!(parsed[0]["line"], 2);
        assert_eq!(parsed[0]["column"], 3);
        assert_eq!(parsed[0]["code"], "range");
    }
}

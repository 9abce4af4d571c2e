//! `[[webhooks]]` in `personas.toml`: where change notifications go, signed
//! with which secret, and which kinds of event each receiver wants.
//!
//! ```toml
//! [[webhooks]]
//! name = "ci"                          # [a-z0-9-]+, unique: the key of its cursor and log
//! url = "https://ci.example.org/hooks/personas"
//! secret_env = "PERSONAS_CI_SECRET"    # or: secret = "…" (exactly one of the two)
//! events = ["version.created", "label.moved"]   # default: every kind ("*")
//! from = "now"                         # or "start": every event since the first
//! timeout_secs = 10
//! ```
//!
//! Read with the same spanned reader as the rest of the file, so a mistake
//! is reported as `personas.toml:LINE:COL`.

use std::time::Duration;

use url::Url;

use crate::persona::diagnostic::{Code, Diagnostics};
use crate::persona::reader::{TableReader, expect_array, expect_choice, expect_integer, expect_string, expect_text};
use crate::persona::source::Node;

/// Every kind of event the projection announces, in the order lists show them.
pub const EVENT_KINDS: [&str; 5] = [
    "version.created",
    "persona.deleted",
    "version.retracted",
    "label.moved",
    "experiment.changed",
];

/// A receiver that has not answered by then has failed this attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT_SECS: i64 = 300;
/// Names key database rows and appear in URLs (`?webhook=`): short and plain.
const MAX_NAME: usize = 64;

const KEYS: &[&str] = &["name", "url", "secret", "secret_env", "events", "from", "timeout_secs"];

/// Where a webhook's cursor starts the first time its name is seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartAt {
    /// After the newest event already projected: no replay of history.
    #[default]
    Now,
    /// Before the first event: the whole recorded history is delivered.
    First,
}

impl StartAt {
    pub const ALL: [(&'static str, StartAt); 2] = [("now", StartAt::Now), ("start", StartAt::First)];
}

/// The shared secret of a webhook. It never appears in `Debug` output, logs
/// or answers.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<hidden>")
    }
}

/// One configured receiver.
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    pub name: String,
    pub url: Url,
    pub secret: Secret,
    /// The kinds delivered, in [`EVENT_KINDS`] order; the others are skipped.
    pub events: Vec<&'static str>,
    pub from: StartAt,
    pub timeout: Duration,
}

impl WebhookConfig {
    /// The receiver's scheme, host and port only: paths and query strings of
    /// webhook URLs often carry a token of their own, so nothing shows them.
    pub fn endpoint(&self) -> String {
        endpoint(&self.url)
    }

    /// Whether every kind of event is delivered.
    pub fn all_events(&self) -> bool {
        self.events.len() == EVENT_KINDS.len()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint())
            .field("secret", &self.secret)
            .field("events", &self.events)
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `scheme://host[:port]` of `url`.
pub fn endpoint(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Reads the `webhooks` array of tables. `environment` looks up the
/// variables named by `secret_env` (the process environment, except in tests).
pub fn parse(
    diagnostics: &mut Diagnostics,
    node: &Node,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<WebhookConfig>> {
    let items = expect_array(diagnostics, node, "webhooks")?;
    let mut webhooks: Vec<WebhookConfig> = Vec::new();
    // Names already taken, with the index that took them (for the message).
    let mut names: Vec<(String, usize)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let path = format!("webhooks[{index}]");
        let Some(mut table) = TableReader::new(diagnostics, item, &path, KEYS) else {
            continue;
        };
        let name = table.required(diagnostics, "name").and_then(|entry| {
            let name = webhook_name(diagnostics, &entry.value, &format!("{path}.name"))?;
            if let Some((_, first)) = names.iter().find(|(taken, _)| *taken == name) {
                diagnostics.push_at(
                    &entry.value.span,
                    Code::Duplicate,
                    &format!("{path}.name"),
                    format!("webhook name {name:?} is already used by webhooks[{first}]; names must be unique"),
                );
                return None;
            }
            names.push((name.clone(), index));
            Some(name)
        });
        let url = table
            .required(diagnostics, "url")
            .and_then(|entry| webhook_url(diagnostics, &entry.value, &format!("{path}.url")));
        let secret = secret(diagnostics, &mut table, &path, environment);
        let events = match table.optional("events") {
            Some(entry) => events(diagnostics, &entry.value, &format!("{path}.events")),
            None => Some(EVENT_KINDS.to_vec()),
        };
        let from = match table.optional("from") {
            Some(entry) => expect_choice(diagnostics, &entry.value, &format!("{path}.from"), &StartAt::ALL),
            None => Some(StartAt::default()),
        };
        let timeout = match table.optional("timeout_secs") {
            Some(entry) => timeout(diagnostics, &entry.value, &format!("{path}.timeout_secs")),
            None => Some(DEFAULT_TIMEOUT),
        };
        table.finish(diagnostics);
        if let (Some(name), Some(url), Some(secret), Some(events), Some(from), Some(timeout)) =
            (name, url, secret, events, from, timeout)
        {
            webhooks.push(WebhookConfig {
                name,
                url,
                secret,
                events,
                from,
                timeout,
            });
        }
    }
    Some(webhooks)
}

fn webhook_name(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<String> {
    let name = expect_text(diagnostics, node, path, MAX_NAME)?;
    if name
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    {
        Some(name.to_string())
    } else {
        diagnostics.push_at(
            &node.span,
            Code::Name,
            path,
            format!("{path} = {name:?}: a webhook name is lowercase letters, digits and `-`"),
        );
        None
    }
}

/// An absolute http or https URL. The URL itself is never repeated in a
/// message: its path or query may hold a token.
fn webhook_url(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<Url> {
    let text = expect_text(diagnostics, node, path, 2048)?;
    let problem = match Url::parse(text) {
        Err(error) => format!("{path} is not an absolute URL ({error})"),
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            format!("{path} must be an http or https URL, not {}:", url.scheme())
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => format!("{path} has no host"),
        Ok(url) => return Some(url),
    };
    diagnostics.push_at(&node.span, Code::Url, path, problem);
    None
}

/// `secret`, or the environment variable `secret_env` names: exactly one.
fn secret(
    diagnostics: &mut Diagnostics,
    table: &mut TableReader<'_>,
    path: &str,
    environment: &dyn Fn(&str) -> Option<String>,
) -> Option<Secret> {
    let inline = table.optional("secret");
    let variable = table.optional("secret_env");
    match (inline, variable) {
        (Some(entry), None) => expect_text(diagnostics, &entry.value, &format!("{path}.secret"), 4096).map(Secret::new),
        (None, Some(entry)) => {
            let key = format!("{path}.secret_env");
            let name = expect_text(diagnostics, &entry.value, &key, 200)?;
            match environment(name) {
                Some(value) if !value.trim().is_empty() => Some(Secret::new(value)),
                _ => {
                    diagnostics.push_at(
                        &entry.value.span,
                        Code::Text,
                        &key,
                        format!("{key}: the environment variable {name} is not set (or is empty)"),
                    );
                    None
                }
            }
        }
        (Some(_), Some(entry)) => {
            diagnostics.push_at(
                &entry.key_span,
                Code::Duplicate,
                &format!("{path}.secret_env"),
                format!("[{path}] has both `secret` and `secret_env`; give exactly one"),
            );
            None
        }
        (None, None) => {
            diagnostics.push_at(
                table.span(),
                Code::MissingKey,
                &format!("{path}.secret"),
                format!("missing required key `{path}.secret` (or `{path}.secret_env`) in [{path}]"),
            );
            None
        }
    }
}

/// A list of event kinds, or `["*"]` for all of them.
fn events(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<Vec<&'static str>> {
    let items = expect_array(diagnostics, node, path)?;
    if items.is_empty() {
        diagnostics.push_at(
            &node.span,
            Code::Empty,
            path,
            format!("{path} is empty, so nothing would be delivered; leave it out (or write [\"*\"]) for every kind"),
        );
        return None;
    }
    let mut wanted = [false; EVENT_KINDS.len()];
    let mut valid = true;
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let Some(kind) = expect_string(diagnostics, item, &item_path) else {
            valid = false;
            continue;
        };
        if kind == "*" {
            wanted = [true; EVENT_KINDS.len()];
        } else if let Some(position) = EVENT_KINDS.iter().position(|known| *known == kind) {
            wanted[position] = true;
        } else {
            valid = false;
            diagnostics.push_at(
                &item.span,
                Code::Enum,
                &item_path,
                format!(
                    "{item_path} = {kind:?} is not an event kind; the kinds are {} (or \"*\")",
                    EVENT_KINDS.map(|known| format!("{known:?}")).join(", ")
                ),
            );
        }
    }
    valid.then(|| {
        EVENT_KINDS
            .iter()
            .zip(wanted)
            .filter_map(|(kind, wanted)| wanted.then_some(*kind))
            .collect()
    })
}

fn timeout(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<Duration> {
    let seconds = expect_integer(diagnostics, node, path)?;
    if (1..=MAX_TIMEOUT_SECS).contains(&seconds) {
        Some(Duration::from_secs(seconds.unsigned_abs()))
    } else {
        diagnostics.push_at(
            &node.span,
            Code::Range,
            path,
            format!("{path} = {seconds} is outside 1..={MAX_TIMEOUT_SECS}"),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::source;

    fn read(text: &str, environment: &dyn Fn(&str) -> Option<String>) -> Result<Vec<WebhookConfig>, Vec<String>> {
        let mut diagnostics = Diagnostics::new("personas.toml", text.as_bytes());
        let root = source::parse(text.as_bytes()).expect("valid TOML");
        let source::NodeValue::Table(entries) = &root.value else {
            panic!("not a table");
        };
        let node = &entries.iter().find(|entry| entry.key == "webhooks").unwrap().value;
        let parsed = parse(&mut diagnostics, node, environment);
        if diagnostics.is_empty() {
            Ok(parsed.unwrap())
        } else {
            Err(diagnostics.into_vec().iter().map(ToString::to_string).collect())
        }
    }

    fn no_environment(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn reads_a_webhook_with_defaults_and_one_with_everything() {
        let text = r#"
[[webhooks]]
name = "ci"
url = "https://ci.example.org/hooks/personas?token=abc"
secret = "s3cret"

[[webhooks]]
name = "labels-only"
url = "http://127.0.0.1:9000/"
secret_env = "HOOK_SECRET"
events = ["label.moved", "version.created", "label.moved"]
from = "start"
timeout_secs = 3
"#;
        let environment = |name: &str| (name == "HOOK_SECRET").then(|| "from-env".to_string());
        let webhooks = read(text, &environment).unwrap();
        assert_eq!(webhooks.len(), 2);
        let ci = &webhooks[0];
        assert_eq!(ci.events, EVENT_KINDS.to_vec());
        assert!(ci.all_events());
        assert_eq!(ci.from, StartAt::Now);
        assert_eq!(ci.timeout, DEFAULT_TIMEOUT);
        assert_eq!(ci.endpoint(), "https://ci.example.org");
        let labels = &webhooks[1];
        assert_eq!(labels.secret.expose(), b"from-env");
        assert_eq!(labels.events, vec!["version.created", "label.moved"]);
        assert_eq!(labels.from, StartAt::First);
        assert_eq!(labels.timeout, Duration::from_secs(3));
        assert_eq!(labels.endpoint(), "http://127.0.0.1:9000");
        let shown = format!("{webhooks:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("from-env") && !shown.contains("token=abc"),
            "{shown}"
        );
    }

    #[test]
    fn every_mistake_is_reported_where_it_was_made() {
        let text = r#"
[[webhooks]]
name = "CI hook"
url = "ftp://example.org/"
secret = "x"
secret_env = "X"
events = ["version.created", "version.made"]
from = "yesterday"
timeout_secs = 0

[[webhooks]]
name = "dup"
url = "not a url"

[[webhooks]]
name = "dup"
url = "https://example.org/?token=abc"
secret_env = "UNSET"
evnts = ["*"]

[[webhooks]]
name = "empty"
url = "https://example.org/"
secret = "x"
events = []
"#;
        let problems = read(text, &no_environment).unwrap_err();
        let expect = |prefix: &str, needle: &str| {
            assert!(
                problems
                    .iter()
                    .any(|line| line.starts_with(prefix) && line.contains(needle)),
                "no {prefix}…{needle} in {problems:#?}"
            );
        };
        expect("personas.toml:3:8: name", "lowercase letters");
        expect("personas.toml:4:7: url", "http or https");
        expect("personas.toml:6:1: duplicate", "both `secret` and `secret_env`");
        expect("personas.toml:7:30: enum", "\"version.made\" is not an event kind");
        expect("personas.toml:8:8: enum", "webhooks[0].from");
        expect("personas.toml:9:16: range", "outside 1..=300");
        expect("personas.toml:13:7: url", "not an absolute URL");
        expect("personas.toml:11:1: missing-key", "`webhooks[1].secret` (or");
        expect("personas.toml:16:8: duplicate", "already used by webhooks[1]");
        expect("personas.toml:18:14: text", "UNSET is not set");
        expect("personas.toml:19:1: unknown-key", "did you mean `events`");
        expect("personas.toml:25:10: empty", "nothing would be delivered");
        assert!(
            problems.iter().all(|line| !line.contains("token=abc")),
            "a URL was echoed: {problems:#?}"
        );
    }

    #[test]
    fn a_table_instead_of_an_array_of_tables_is_a_type_error() {
        let problems = read("[webhooks]\nname = \"x\"\n", &no_environment).unwrap_err();
        assert!(
            problems[0].starts_with("personas.toml:1:1: type") && problems[0].contains("an array"),
            "{problems:?}"
        );
    }
}

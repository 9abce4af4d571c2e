//! `registry/citations.json`: the outcome of every citation check, one
//! entry per (persona file, belief, URL), sorted so that a pull request's
//! diff shows exactly which citations changed.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::matching::Found;

pub const RECORD_FILE: &str = "citations.json";

/// What a check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The page was read and the belief searched for (see `found`).
    Checked,
    /// The server answered an error status (4xx, 5xx).
    Dead,
    /// No answer: a timeout, a refused connection, a name that does not resolve.
    Unreachable,
    /// The answer is not HTML or text (a PDF, an image): its words cannot be read here.
    NotText,
    /// Larger than the size cap: not read whole, so not searched.
    TooLarge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub file: String,
    /// The cited text: a belief, or a signature phrase with a URL source.
    pub belief: String,
    pub url: String,
    /// Where the redirects led (the same as `url` when there were none).
    pub final_url: String,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub checked_at: DateTime<Utc>,
    /// SHA-256 of the page's extracted text, so a later check shows whether the page changed.
    pub digest: Option<String>,
    pub outcome: Outcome,
    /// Present when `outcome` is `checked`.
    pub found: Option<Found>,
    /// Why, in words, when the check did not come to `checked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Check {
    /// Whether the citation holds: read, and the belief found on the page.
    pub fn holds(&self) -> bool {
        self.outcome == Outcome::Checked && matches!(self.found, Some(Found::Verbatim | Found::Words))
    }

    /// The problem to report, if the citation does not hold.
    pub fn problem(&self) -> Option<String> {
        let redirect = if self.final_url != self.url {
            format!(" (redirected to {})", self.final_url)
        } else {
            String::new()
        };
        match (self.outcome, self.found) {
            (Outcome::Checked, Some(Found::Verbatim | Found::Words)) => None,
            (Outcome::Checked, _) => Some(format!("the cited text is not on {}{redirect}", self.url)),
            (Outcome::Dead, _) => Some(format!(
                "dead link: {} answered {}{redirect}",
                self.url,
                self.status
                    .map_or_else(|| "an error".to_string(), |status| status.to_string())
            )),
            (Outcome::Unreachable, _) => Some(format!(
                "{} could not be reached: {}",
                self.url,
                self.detail.as_deref().unwrap_or("no answer")
            )),
            (Outcome::NotText, _) => Some(format!(
                "{} is {}, not a page whose text can be searched; confirm the citation by hand",
                self.url,
                self.content_type.as_deref().unwrap_or("of an unknown type")
            )),
            (Outcome::TooLarge, _) => Some(format!("{} is larger than the size cap; it was not searched", self.url)),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub checks: Vec<Check>,
}

impl Record {
    pub fn read(registry: &Path) -> anyhow::Result<Record> {
        let path = registry.join(RECORD_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).with_context(|| format!("{} is not a citation record", path.display()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Record {
                schema: 1,
                checks: Vec::new(),
            }),
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// A record as committed (`bytes` of `registry/citations.json`).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<Record> {
        serde_json::from_slice(bytes).context("registry/citations.json is not a citation record")
    }

    pub fn write(mut self, registry: &Path) -> anyhow::Result<()> {
        self.schema = 1;
        self.checks
            .sort_by(|a, b| (&a.file, &a.url, &a.belief).cmp(&(&b.file, &b.url, &b.belief)));
        let mut text = serde_json::to_string_pretty(&self)?;
        text.push('\n');
        let path = registry.join(RECORD_FILE);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The check of a belief's URL in any file (a persona's file may move).
    pub fn find_anywhere(&self, belief: &str, url: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|check| check.belief == belief && check.url == url)
    }

    pub fn find(&self, file: &str, belief: &str, url: &str) -> Option<&Check> {
        self.checks
            .iter()
            .find(|check| check.file == file && check.belief == belief && check.url == url)
    }
}

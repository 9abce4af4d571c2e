//! `personas diff FROM..TO`: the semantic diff of every persona a range
//! touches, as text, Markdown for a pull-request review, or JSON.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::bail;
use serde::Serialize;

use crate::cli::{DiffFormat, Outcome};
use crate::git::history::FileProblem;
use crate::git::replay::Replay;
use crate::persona::diff::{Change, describe, diff};
use crate::persona::{ContentHash, Persona, PersonaId, content_hash};

#[derive(Debug, Serialize)]
pub struct PersonaDelta {
    pub persona_id: PersonaId,
    pub slug: String,
    pub name: String,
    /// added, modified, renamed or deleted, relative to FROM.
    pub kind: &'static str,
    /// The version number this change becomes once merged onto FROM.
    pub next_version: u32,
    pub old_hash: Option<ContentHash>,
    pub new_hash: Option<ContentHash>,
    pub changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
pub struct RangeDiff {
    pub from: String,
    pub to: String,
    pub personas: Vec<PersonaDelta>,
    /// Files invalid at TO.
    pub problems: Vec<FileProblem>,
}

/// Splits `A..B`; an empty side means HEAD, as in git.
pub fn parse_range(range: &str) -> anyhow::Result<(String, String)> {
    if range.contains("...") {
        bail!("{range:?}: use FROM..TO (two dots); the three-dot form is not supported");
    }
    let Some((from, to)) = range.split_once("..") else {
        bail!("{range:?} is not a range; write FROM..TO, e.g. main..my-branch");
    };
    let side = |text: &str| {
        if text.is_empty() {
            "HEAD".to_string()
        } else {
            text.to_string()
        }
    };
    Ok((side(from), side(to)))
}

/// Compares the registry as of FROM with the registry as of TO.
pub fn range_diff(repository: &Path, from: &str, to: &str) -> anyhow::Result<RangeDiff> {
    let base = Replay::of(repository, from)?;
    let head = Replay::of(repository, to)?;
    let ids: BTreeSet<PersonaId> = base.personas.keys().chain(head.personas.keys()).copied().collect();
    let mut personas = Vec::new();
    for id in ids {
        let old: Option<&Persona> = base.personas.get(&id).and_then(|history| history.current());
        let new: Option<&Persona> = head.personas.get(&id).and_then(|history| history.current());
        let (old_hash, new_hash) = (old.map(content_hash), new.map(content_hash));
        if old_hash == new_hash {
            continue;
        }
        let kind = match (old, new) {
            (None, Some(_)) => "added",
            (Some(_), None) => "deleted",
            (Some(old), Some(new)) if old.slug != new.slug => "renamed",
            _ => "modified",
        };
        let Some(shown) = new.or(old) else { continue };
        personas.push(PersonaDelta {
            persona_id: id,
            slug: shown.slug.to_string(),
            name: shown.name.clone(),
            kind,
            next_version: base
                .personas
                .get(&id)
                .map_or(0, |history| history.versions.len() as u32)
                + 1,
            old_hash,
            new_hash,
            changes: match (old, new) {
                (Some(old), Some(new)) => diff(old, new),
                _ => Vec::new(),
            },
        });
    }
    personas.sort_by(|a, b| a.slug.cmp(&b.slug));
    Ok(RangeDiff {
        from: from.to_string(),
        to: to.to_string(),
        personas,
        problems: head.open_problems.into_values().collect(),
    })
}

pub fn run(repository: &Path, range: &str, format: DiffFormat) -> anyhow::Result<Outcome> {
    let (from, to) = parse_range(range)?;
    let result = range_diff(repository, &from, &to)?;
    match format {
        DiffFormat::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        DiffFormat::Text => print!("{}", render_text(&result)),
        DiffFormat::Markdown => print!("{}", render_markdown(&result)),
    }
    Ok(if result.problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Invalid
    })
}

fn render_text(result: &RangeDiff) -> String {
    let mut out = String::new();
    if result.personas.is_empty() {
        out.push_str(&format!("no persona changes in {}..{}\n", result.from, result.to));
    }
    for delta in &result.personas {
        out.push_str(&format!(
            "{} ({}) — {} → v{}\n",
            delta.slug, delta.name, delta.kind, delta.next_version
        ));
        for change in &delta.changes {
            out.push_str(&format!("  {}\n", describe(change)));
        }
    }
    for problem in &result.problems {
        for diagnostic in &problem.diagnostics {
            out.push_str(&format!("invalid: {diagnostic}\n"));
        }
    }
    out
}

/// Escapes what Markdown would otherwise interpret in persona text.
fn escape_markdown(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn render_markdown(result: &RangeDiff) -> String {
    let mut out = format!(
        "### Persona changes: `{}..{}`\n\n",
        escape_markdown(&result.from),
        escape_markdown(&result.to)
    );
    if result.personas.is_empty() {
        out.push_str("No persona content changes.\n");
    }
    for delta in &result.personas {
        out.push_str(&format!(
            "#### {} (`{}`): {}, becomes **v{}**\n\n",
            escape_markdown(&delta.name),
            delta.slug,
            delta.kind,
            delta.next_version
        ));
        if delta.changes.is_empty() {
            let what = match delta.kind {
                "added" => "New persona.",
                "deleted" => "Persona removed; its history stays readable.",
                _ => "No field-level changes.",
            };
            out.push_str(what);
            out.push('\n');
        }
        for change in &delta.changes {
            out.push_str(&format!("- {}\n", escape_markdown(&describe(change))));
        }
        out.push('\n');
    }
    if !result.problems.is_empty() {
        out.push_str("#### Validation errors\n\n");
        for problem in &result.problems {
            for diagnostic in &problem.diagnostics {
                out.push_str(&format!(
                    "- `{}:{}:{}` {}: {}\n",
                    diagnostic.file,
                    diagnostic.line,
                    diagnostic.column,
                    diagnostic.code,
                    escape_markdown(&diagnostic.message)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_parse_like_git() {
        assert_eq!(parse_range("a..b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(parse_range("main..").unwrap(), ("main".into(), "HEAD".into()));
        assert!(parse_range("main").is_err());
        assert!(parse_range("a...b").is_err());
    }
}

//! `personas log`: the version timeline of each persona, straight from git.

use std::path::Path;

use anyhow::bail;

use crate::cli::{LogFormat, Outcome};
use crate::git::history::ChangeKind;
use crate::git::replay::{PersonaHistory, Replay};
use crate::persona::diff::summarize;

pub fn run(repository: &Path, branch: &str, slug: Option<&str>, format: LogFormat) -> anyhow::Result<Outcome> {
    let replay = Replay::of(repository, branch)?;
    let histories: Vec<&PersonaHistory> = replay
        .sorted()
        .into_iter()
        .filter(|history| slug.is_none_or(|name| history.is_known_as(name)))
        .collect();
    if let Some(name) = slug
        && histories.is_empty()
    {
        bail!("no persona with slug or id {name:?} in the history of {branch}");
    }
    match format {
        LogFormat::Json => println!("{}", serde_json::to_string_pretty(&histories)?),
        LogFormat::Text => print!("{}", render_text(&histories)),
    }
    Ok(Outcome::Clean)
}

fn render_text(histories: &[&PersonaHistory]) -> String {
    let mut out = String::new();
    for (index, history) in histories.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let name = history
            .versions
            .iter()
            .rev()
            .find_map(|version| version.persona.as_ref())
            .map(|persona| persona.name.as_str())
            .unwrap_or("?");
        let status = if history.current().is_none() { "  [deleted]" } else { "" };
        out.push_str(&format!(
            "{} — {name} ({}){status}\n",
            history.latest_slug().unwrap_or("?"),
            history.id
        ));
        for version in history.versions.iter().rev() {
            let summary = match version.kind {
                ChangeKind::Added => "added".to_string(),
                ChangeKind::Deleted => "deleted".to_string(),
                ChangeKind::Renamed => format!("renamed to {}: {}", version.path, summarize(&version.changes)),
                ChangeKind::Modified => summarize(&version.changes),
            };
            out.push_str(&format!(
                "  v{:<3} {}  {}  {:<20}  {summary}\n",
                version.number,
                version.commit.short_id(),
                version.commit.committed_at.format("%Y-%m-%d"),
                truncate(&version.commit.author_name, 20),
            ));
        }
    }
    out
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}

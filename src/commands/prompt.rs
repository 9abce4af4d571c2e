//! `personas prompt SLUG[@PIN]`: the system prompt the registry's template
//! renders for a persona, straight from git (no database needed).

use std::path::Path;

use anyhow::{Context, bail};

use crate::cli::Outcome;
use crate::git::replay::{Replay, TemplateChange};
use crate::persona::prompt::{PROMPT_FILE, PromptRecord, PromptTemplate, TemplateRef};

/// The registry has no prompt template for the version asked about.
#[derive(Debug, thiserror::Error)]
#[error("the registry has no prompt template ({0}) at that version's commit")]
pub struct NoTemplate(pub String);

pub struct PromptCommand<'a> {
    pub repository: &'a Path,
    pub reference: &'a str,
    pub mode: Option<&'a str>,
    pub profile: Option<&'a str>,
    pub json: bool,
}

pub fn run(command: PromptCommand<'_>) -> anyhow::Result<Outcome> {
    let replay = Replay::of(command.repository, "HEAD")?;
    let record = render(
        &replay,
        command.repository,
        command.reference,
        command.mode,
        command.profile,
    )?;
    if command.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    } else {
        print!("{}", record.prompt);
        eprintln!(
            "{}@{} mode {} · prompt {} · template {}",
            record.slug, record.version, record.mode, record.prompt_hash, record.template.hash
        );
    }
    Ok(Outcome::Clean)
}

/// Renders `reference` (`slug[@pin]`) with the template its version calls
/// for: a pinned version uses the template in force at its commit, so the
/// same pin always gives the same prompt; an unpinned one the current template.
pub fn render(
    replay: &Replay,
    repository: &Path,
    reference: &str,
    mode: Option<&str>,
    profile: Option<&str>,
) -> anyhow::Result<PromptRecord> {
    let (history, version) = replay.locate(repository, reference)?;
    let Some(persona) = &version.persona else {
        bail!("{reference} names a deletion");
    };
    let template = if reference.contains('@') {
        replay.prompt_template_at(&version.commit.id)
    } else {
        replay.current_prompt_template()
    };
    let Some(TemplateChange {
        commit,
        source: Some(source),
        ..
    }) = template
    else {
        let path = format!("registry/{PROMPT_FILE}");
        if let Some(problem) = replay.open_problems.get(&path) {
            let reasons: Vec<String> = problem.diagnostics.iter().map(ToString::to_string).collect();
            bail!("the prompt template is invalid:\n{}", reasons.join("\n"));
        }
        return Err(NoTemplate(path).into());
    };
    let compiled = PromptTemplate::parse(&format!("registry/{PROMPT_FILE}"), source)
        .map_err(|diagnostic| anyhow::anyhow!("{diagnostic}"))?;
    let profile = profile
        .map(|name| {
            replay
                .profiles
                .get(name)
                .with_context(|| format!("no profile is called {name:?}"))
        })
        .transpose()?;
    let shown = profile.map_or_else(|| persona.clone(), |profile| profile.apply(persona));
    let rendered = compiled.render(&shown, mode, profile)?;
    Ok(PromptRecord {
        id: history.id,
        slug: persona.slug.to_string(),
        version: i64::from(version.number),
        content_hash: version.content_hash.map(|hash| hash.to_string()).unwrap_or_default(),
        mode: rendered.mode,
        profile: profile.map(|profile| profile.slug.to_string()),
        template: TemplateRef {
            commit: commit.clone(),
            hash: compiled.hash().to_string(),
        },
        prompt_hash: rendered.hash.to_string(),
        prompt: rendered.text,
    })
}

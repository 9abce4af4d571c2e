//! `personas cite check`: every belief whose source is a URL is fetched and
//! searched for the belief; the outcomes go to `registry/citations.json`,
//! and the citations that do not hold are reported at the source's
//! file:line:col. `--offline` reports from the record alone.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::registry_files::load_registry;
use crate::citations::fetch::{self, Body};
use crate::citations::matching::{find, words};
use crate::citations::record::{Check, Outcome as CheckOutcome, RECORD_FILE, Record};
use crate::cli::Outcome;
use crate::persona::diagnostic::{Code, Diagnostic, OutputFormat, render};
use crate::persona::source::LineIndex;

pub struct CiteCheck<'a> {
    pub registry: &'a Path,
    pub offline: bool,
    pub timeout: Duration,
    pub max_bytes: usize,
    pub format: OutputFormat,
}

/// Pages fetched at once: enough to overlap slow servers, few enough to be polite.
const CONCURRENT_FETCHES: usize = 8;

/// One belief cited by URL, and where its source is written.
struct Citation {
    file: String,
    belief: String,
    url: String,
    line: usize,
    column: usize,
}

pub fn run(command: CiteCheck<'_>) -> anyhow::Result<Outcome> {
    let citations = citations(command.registry)?;
    let checks: Vec<Check> = if command.offline {
        let record = Record::read(command.registry)?;
        citations
            .iter()
            .filter_map(|citation| record.find(&citation.file, &citation.belief, &citation.url).cloned())
            .collect()
    } else {
        let checks = fetch_all(&citations, command.timeout, command.max_bytes)?;
        Record {
            schema: 1,
            checks: checks.clone(),
        }
        .write(command.registry)?;
        checks
    };
    let mut problems = Vec::new();
    let mut holding = 0;
    for citation in &citations {
        let check = checks
            .iter()
            .find(|check| check.file == citation.file && check.belief == citation.belief && check.url == citation.url);
        let message = match check {
            Some(check) if check.holds() => {
                holding += 1;
                continue;
            }
            Some(check) => check.problem().unwrap_or_default(),
            None => format!(
                "{} has not been checked yet: run `personas cite check` (online) and commit {RECORD_FILE}",
                citation.url
            ),
        };
        problems.push(Diagnostic {
            file: citation.file.clone(),
            line: citation.line,
            column: citation.column,
            code: Code::Citation,
            message,
            path: None,
        });
    }
    print!("{}", render(&problems, command.format));
    eprintln!(
        "{} citations by URL: {holding} hold, {} do not{}",
        citations.len(),
        problems.len(),
        if command.offline {
            format!(" (from {RECORD_FILE}, offline)")
        } else {
            format!("; recorded in {}", command.registry.join(RECORD_FILE).display())
        }
    );
    Ok(if problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Invalid
    })
}

/// Every valid persona's beliefs and signature phrases sourced by an
/// http(s) URL, in file order (a phrase is checked like a belief: its words
/// must be on the page).
fn citations(registry: &Path) -> anyhow::Result<Vec<Citation>> {
    let snapshot = load_registry(registry)?;
    let mut found = Vec::new();
    for parsed in &snapshot.personas {
        let Some(persona) = &parsed.persona else { continue };
        let bytes = std::fs::read(&parsed.file).with_context(|| format!("reading {}", parsed.file))?;
        let text = String::from_utf8_lossy(&bytes);
        let lines = LineIndex::new(&bytes);
        for (cited, url) in persona.cited_texts() {
            if !url.starts_with("http") {
                continue;
            }
            // The source written after the cited text: where a reader fixes it.
            let after = text.find(cited).unwrap_or(0);
            let offset = text[after..].find(url).map_or(after, |at| after + at);
            let (line, column) = lines.position(offset);
            found.push(Citation {
                file: parsed.file.clone(),
                belief: cited.to_string(),
                url: url.to_string(),
                line,
                column,
            });
        }
    }
    Ok(found)
}

fn fetch_all(citations: &[Citation], timeout: Duration, cap: usize) -> anyhow::Result<Vec<Check>> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = fetch::client(timeout).context("making the HTTP client")?;
        let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_FETCHES));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, citation) in citations.iter().enumerate() {
            let (client, permits, url) = (client.clone(), Arc::clone(&permits), citation.url.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                (index, fetch::fetch(&client, &url, cap).await)
            });
        }
        let mut fetched = Vec::with_capacity(citations.len());
        while let Some(joined) = tasks.join_next().await {
            fetched.push(joined.context("a fetch task failed")?);
        }
        fetched.sort_by_key(|(index, _)| *index);
        Ok(fetched
            .into_iter()
            .map(|(index, page)| check_of(&citations[index], page))
            .collect())
    })
}

fn check_of(citation: &Citation, page: fetch::Fetched) -> Check {
    let mut check = Check {
        file: citation.file.clone(),
        belief: citation.belief.clone(),
        url: citation.url.clone(),
        final_url: page.final_url,
        status: page.status,
        content_type: page.content_type,
        checked_at: chrono::Utc::now(),
        digest: None,
        outcome: CheckOutcome::Checked,
        found: None,
        detail: None,
    };
    match page.body {
        Body::Text(text) => {
            check.digest = Some(format!("sha256:{:x}", Sha256::digest(text.as_bytes())));
            check.found = Some(find(&citation.belief, &words(&text)));
        }
        Body::Error => check.outcome = CheckOutcome::Dead,
        Body::NotText => check.outcome = CheckOutcome::NotText,
        Body::TooLarge { cap } => {
            check.outcome = CheckOutcome::TooLarge;
            check.detail = Some(format!("over {cap} bytes"));
        }
        Body::Unreachable(reason) => {
            check.outcome = CheckOutcome::Unreachable;
            check.detail = Some(reason);
        }
    }
    check
}

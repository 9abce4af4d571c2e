//! `personas build-site`: a static copy of the website and a static mirror
//! of the read API, rendered through the same router as `personas serve`
//! (no second renderer). Every address is requested from the router, its
//! answer written to the file [`links::SiteMap`] assigns it, and the links
//! of each page rewritten to be relative. Pages are crawled from a seed list
//! (every persona, version and API answer), so whatever a page links to is
//! written too.

pub mod links;
pub mod preview;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use indicatif::ProgressBar;
use serde::Serialize;
use tower::ServiceExt;

use crate::store::queries::{self, InventoryEntry};
use crate::web::{AppState, router};
use links::{NOT_FOUND_FILE, SiteMap, canonical_address};
use preview::Preview;

/// Marks a directory as a copy made by `build-site`, so a rebuild may replace it.
pub const MARKER_FILE: &str = ".personas-site";
/// The prebuilt search index, as data and as a script (a `file://` page may
/// not fetch JSON, but it may load a script).
const SEARCH_INDEX_JSON: &str = "search-index.json";
const SEARCH_INDEX_SCRIPT: &str = "search-index.js";
/// Requests in flight at once: enough to keep both the database and the
/// renderer busy on a small machine.
const CONCURRENCY: usize = 8;

pub struct SiteBuild<'a> {
    pub out: &'a Path,
    pub progress: ProgressBar,
    /// Set for a pull request's preview: every page carries its banner.
    pub preview: Option<Arc<Preview>>,
}

#[derive(Debug, Default, Serialize)]
pub struct BuildSummary {
    pub files: usize,
    pub bytes: u64,
    pub personas: usize,
    /// Addresses the router did not answer with 200 (written all the same:
    /// a deleted persona's page says it was deleted). Sorted.
    pub not_ok: Vec<(String, u16)>,
}

impl std::fmt::Display for BuildSummary {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} files, {:.1} MiB, {} personas",
            self.files,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.personas
        )?;
        if !self.not_ok.is_empty() {
            write!(formatter, ", {} pages answered other than 200", self.not_ok.len())?;
        }
        Ok(())
    }
}

/// One answer of the router, ready to be written.
struct Rendered {
    file: String,
    status: StatusCode,
    bytes: Vec<u8>,
    /// Site addresses this page links to (empty for non-HTML answers).
    links: Vec<String>,
}

/// Builds the copy into a fresh directory beside `out`, then puts it in
/// place: a failed build leaves the previous copy untouched.
pub async fn build(state: AppState, build: &SiteBuild<'_>) -> anyhow::Result<BuildSummary> {
    let staging = prepare_staging(build.out)?;
    let result = render_into(state, staging.path(), &build.progress, build.preview.clone()).await;
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => return Err(error),
    };
    replace_directory(staging, build.out)?;
    Ok(summary)
}

async fn render_into(
    state: AppState,
    directory: &Path,
    progress: &ProgressBar,
    preview: Option<Arc<Preview>>,
) -> anyhow::Result<BuildSummary> {
    let (inventory, former) = queries::site_inventory(&state.pool).await?;
    let slugs: HashMap<uuid::Uuid, String> = inventory.iter().map(|entry| (entry.id, entry.slug.clone())).collect();
    let renamed: HashMap<String, String> = former
        .into_iter()
        .filter_map(|(old, id)| Some((old, slugs.get(&id)?.clone())))
        .collect();
    let base_url = state.static_site.as_ref().and_then(|site| site.base_url.as_deref());
    let site_map = Arc::new(SiteMap::new(renamed, base_url));
    let app = router(Arc::clone(&state));
    let status = queries::sync_status(&state.pool).await?;

    let mut summary = BuildSummary {
        personas: inventory.iter().filter(|entry| !entry.deleted).count(),
        ..BuildSummary::default()
    };
    // Files this build writes itself rather than asking the router for.
    let index = search_index(&inventory)?;
    let mut written: BTreeSet<String> = BTreeSet::new();
    for (file, bytes) in [
        (SEARCH_INDEX_JSON.to_string(), index.clone()),
        (
            SEARCH_INDEX_SCRIPT.to_string(),
            [b"window.PERSONAS_SEARCH_INDEX = ".as_slice(), &index, b";\n"].concat(),
        ),
        (
            MARKER_FILE.to_string(),
            match &preview {
                None => format!(
                    "A static copy of the persona registry, made by `personas build-site` from commit {}.\n",
                    status.last_commit.as_deref().unwrap_or("(none)")
                ),
                Some(preview) => format!(
                    "A preview of the persona registry, made by `personas build-site --preview` from commit {} ({}) against {} ({}).\n",
                    preview.head_commit, preview.head, preview.base_commit, preview.base
                ),
            }
            .into_bytes(),
        ),
    ] {
        write_file(directory, &file, &bytes)?;
        summary.files += 1;
        summary.bytes += bytes.len() as u64;
        written.insert(file);
    }

    // The 404 page: any address the router does not know.
    let not_found = fetch(&app, &site_map, preview.as_deref(), "/404", NOT_FOUND_FILE).await?;
    write_file(directory, NOT_FOUND_FILE, &not_found.bytes)?;
    summary.files += 1;
    summary.bytes += not_found.bytes.len() as u64;
    written.insert(NOT_FOUND_FILE.to_string());

    let crawl = Arc::new(Crawl {
        site_map: Arc::clone(&site_map),
        directory: directory.to_path_buf(),
        known: std::sync::Mutex::new(written),
        found: std::sync::Mutex::new(Vec::new()),
        progress: progress.clone(),
        preview: preview.clone(),
    });
    // Without a prompt template there is no prompt to mirror (the API answers 404).
    let with_prompts = queries::prompt_template(&state.pool, None).await?.is_some();
    let label_names: Vec<String> = crate::store::labels::label_moves(&state.pool, None, None)
        .await?
        .into_iter()
        .map(|step| step.label)
        .collect::<BTreeSet<String>>()
        .into_iter()
        .collect();
    let experiment_names: Vec<String> = crate::store::labels::experiments_at(&state.pool, None, None)
        .await?
        .into_iter()
        .map(|revision| revision.name)
        .collect();
    let mut round: Vec<String> = seeds(&inventory, with_prompts)
        .into_iter()
        .chain(acting_seeds(&label_names, &experiment_names))
        .chain(preview.iter().flat_map(|preview| preview.addresses()))
        .filter_map(|address| site_map.target(&address).map(|target| target.file))
        .filter(|file| crawl.claim(file))
        .collect();
    progress.set_length(round.len() as u64);
    // Rounds: the seeds, then what they link to that is not written yet, and so on.
    while !round.is_empty() {
        for written in render_round(&app, &crawl, round).await? {
            summary.files += 1;
            summary.bytes += written.size;
            if written.status != StatusCode::OK {
                summary
                    .not_ok
                    .push((canonical_address(&written.file), written.status.as_u16()));
            }
        }
        round = crawl
            .found
            .lock()
            .map(|mut found| std::mem::take(&mut *found))
            .unwrap_or_default();
        round.sort();
        progress.inc_length(round.len() as u64);
    }
    summary.not_ok.sort();
    Ok(summary)
}

/// Every address the copy must hold whether or not a page links to it: the
/// API mirror above all, which pages do not link to one by one.
fn seeds(inventory: &[InventoryEntry], with_prompts: bool) -> Vec<String> {
    let mut addresses: Vec<String> = [
        "/",
        "/search",
        "/changes",
        "/changes.atom",
        "/status",
        "/style.css",
        "/search.js",
        "/api/openapi.json",
        "/api/personas",
    ]
    .iter()
    .map(|address| address.to_string())
    .collect();
    for entry in inventory {
        let slug = &entry.slug;
        addresses.push(format!("/p/{slug}/history"));
        addresses.push(format!("/api/personas/{slug}/versions"));
        if !entry.deleted {
            addresses.push(format!("/p/{slug}"));
            addresses.push(format!("/api/personas/{slug}"));
            addresses.push(format!("/api/personas/{slug}/card"));
            if with_prompts {
                addresses.push(format!("/api/personas/{slug}/prompt"));
            }
        }
        for version in &entry.versions {
            addresses.push(format!("/p/{slug}/v/{version}"));
            addresses.push(format!("/api/personas/{slug}@{version}"));
            // What an A/B test pins: the prompt of one version, forever.
            if with_prompts {
                addresses.push(format!("/api/personas/{slug}@{version}/prompt"));
            }
        }
    }
    addresses
}

/// The labels and experiments pages and their JSON (the label pages link
/// each persona's answer pinned by the label, so those are written too).
fn acting_seeds(labels: &[String], experiments: &[String]) -> Vec<String> {
    let mut addresses = vec![
        "/labels".to_string(),
        "/experiments".to_string(),
        "/api/labels".to_string(),
        "/api/experiments".to_string(),
    ];
    for label in labels {
        addresses.push(format!("/labels/{label}"));
        addresses.push(format!("/api/labels/{label}"));
        addresses.push(format!("/api/labels/{label}/history"));
    }
    for name in experiments {
        addresses.push(format!("/experiments/{name}"));
        addresses.push(format!("/api/experiments/{name}"));
    }
    addresses
}

/// What the render workers share: where files go, which files are already
/// written or scheduled, and the newly linked ones for the next round. Links
/// are reduced to unseen files as they are found, so memory holds one
/// entry per file, not one per link.
struct Crawl {
    site_map: Arc<SiteMap>,
    directory: PathBuf,
    known: std::sync::Mutex<BTreeSet<String>>,
    found: std::sync::Mutex<Vec<String>>,
    progress: ProgressBar,
    preview: Option<Arc<Preview>>,
}

impl Crawl {
    /// Whether `file` was new (and is now claimed by the caller).
    fn claim(&self, file: &str) -> bool {
        self.known.lock().is_ok_and(|mut known| known.insert(file.to_string()))
    }

    fn linked(&self, addresses: Vec<String>) {
        let fresh: Vec<String> = addresses
            .iter()
            .filter_map(|address| self.site_map.target(address))
            .map(|target| target.file)
            .filter(|file| self.claim(file))
            .collect();
        if let Ok(mut found) = self.found.lock() {
            found.extend(fresh);
        }
    }
}

/// A file written by a round.
struct Written {
    file: String,
    status: StatusCode,
    size: u64,
}

/// Renders and writes one round of files, `CONCURRENCY` requests at a time.
async fn render_round(app: &Router, crawl: &Arc<Crawl>, files: Vec<String>) -> anyhow::Result<Vec<Written>> {
    let files = Arc::new(files);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (app, crawl, files, next) = (app.clone(), Arc::clone(crawl), Arc::clone(&files), Arc::clone(&next));
        workers.spawn(async move {
            let mut done = Vec::new();
            loop {
                let position = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(file) = files.get(position) else { break };
                let rendered = fetch(
                    &app,
                    &crawl.site_map,
                    crawl.preview.as_deref(),
                    &canonical_address(file),
                    file,
                )
                .await?;
                write_file(&crawl.directory, &rendered.file, &rendered.bytes)?;
                crawl.linked(rendered.links);
                crawl.progress.inc(1);
                done.push(Written {
                    size: rendered.bytes.len() as u64,
                    file: rendered.file,
                    status: rendered.status,
                });
            }
            anyhow::Ok(done)
        });
    }
    let mut written = Vec::with_capacity(files.len());
    while let Some(result) = workers.join_next().await {
        written.extend(result.context("a render worker failed")??);
    }
    Ok(written)
}

/// Asks the router for `address` and prepares the answer for `file`.
async fn fetch(
    app: &Router,
    site_map: &SiteMap,
    preview: Option<&Preview>,
    address: &str,
    file: &str,
) -> anyhow::Result<Rendered> {
    let request = Request::builder()
        .uri(address)
        .header(header::HOST, "localhost")
        .body(Body::empty())
        .context("building a request")?;
    let response = app.clone().oneshot(request).await.context("the router failed")?;
    let status = response.status();
    if status.is_server_error() || status.is_redirection() {
        bail!("{address} answered {status}; the copy would be broken there");
    }
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|error| anyhow::anyhow!("reading the answer to {address}: {error}"))?;
    if !is_html {
        return Ok(Rendered {
            file: file.to_string(),
            status,
            bytes: body.to_vec(),
            links: Vec::new(),
        });
    }
    let html =
        String::from_utf8(body.to_vec()).with_context(|| format!("{address} answered HTML that is not UTF-8"))?;
    let html = match preview {
        Some(preview) => preview
            .decorate(&html)
            .with_context(|| format!("adding the preview banner to {address}"))?,
        None => html,
    };
    let (rewritten, links) = site_map
        .rewrite_page(&html, file)
        .map_err(|error| anyhow::anyhow!("rewriting the links of {address}: {error}"))?;
    Ok(Rendered {
        file: file.to_string(),
        status,
        bytes: rewritten.into_bytes(),
        links,
    })
}

/// One persona in the prebuilt search index.
#[derive(Serialize)]
struct IndexedPersona<'a> {
    slug: &'a str,
    name: &'a str,
    domains: &'a [String],
    modes: Vec<&'a str>,
    is_real: bool,
    /// Description and beliefs, for word matches.
    text: String,
    /// The persona's page, relative to the copy's root.
    href: String,
}

#[derive(Serialize)]
struct SearchIndex<'a> {
    personas: Vec<IndexedPersona<'a>>,
}

fn search_index(inventory: &[InventoryEntry]) -> anyhow::Result<Vec<u8>> {
    let personas = inventory
        .iter()
        .filter(|entry| !entry.deleted)
        .filter_map(|entry| {
            let persona = entry.current.as_ref()?;
            let mut text = persona.description.clone();
            for belief in &persona.beliefs {
                text.push(' ');
                text.push_str(&belief.text);
            }
            Some(IndexedPersona {
                slug: &entry.slug,
                name: &persona.name,
                domains: &persona.domains,
                modes: persona.enabled_modes().collect(),
                is_real: persona.is_real,
                text,
                href: format!("p/{}/index.html", entry.slug),
            })
        })
        .collect();
    Ok(serde_json::to_vec(&SearchIndex { personas })?)
}

fn write_file(directory: &Path, file: &str, bytes: &[u8]) -> anyhow::Result<()> {
    // Files come from the site map, which only joins URL path segments; a
    // segment that climbs out of the copy would be a bug, refused here.
    if file.split('/').any(|segment| segment == ".." || segment.is_empty()) {
        bail!("refusing to write {file:?} outside the copy");
    }
    let path = directory.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// A fresh directory beside `out`, so the final move is a rename on one file system.
fn prepare_staging(out: &Path) -> anyhow::Result<tempfile::TempDir> {
    if out.exists() {
        let is_copy = out.join(MARKER_FILE).is_file();
        let is_empty = out
            .read_dir()
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        if !out.is_dir() || !(is_copy || is_empty) {
            bail!(
                "{} exists and is not a copy made by build-site (no {MARKER_FILE} in it); \
                 refusing to replace it: choose another --out or remove it",
                out.display()
            );
        }
    }
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(".personas-site-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a build directory in {}", parent.display()))
}

fn replace_directory(staging: tempfile::TempDir, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing the previous copy {}", out.display()))?;
    }
    let built = staging.keep();
    std::fs::rename(&built, out).with_context(|| format!("moving the copy to {}", out.display()))?;
    // A temporary directory is private; a site is read by a web server's user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} readable", out.display()))?;
    }
    Ok(())
}

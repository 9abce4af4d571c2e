//! `personas build-site`: a static copy of the website and a static mirror
//! of the read API, rendered through the same router as `personas serve`
//! (no second renderer). Every address is requested from the router, its
//! answer written to the file [`links::SiteMap`] assigns it, and the links
//! of each page rewritten to be relative. Pages are crawled from a seed list
//! (every persona, version and API answer), so whatever a page links to is
//! written too.

pub mod links;
pub mod manifest;
pub mod preview;
pub mod tag_scan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use indicatif::ProgressBar;
use serde::Serialize;
use tower::ServiceExt;

use crate::search::{self, Found};
use crate::store::queries::{self, InventoryEntry};
use crate::vectors::exact::ExactNeighbours;
use crate::web::reads::{Batch, SiteSnapshot};
use crate::web::{AppState, site_router};
use links::{NOT_FOUND_FILE, SiteMap, canonical_address};
use manifest::{MANIFEST_FILE, Manifest, ShownSimilar, owner};
use preview::Preview;
use sqlx::PgPool;

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
    /// Read with [`SiteInputs::read`] before the build, from the state the build renders.
    pub inputs: SiteInputs,
}

#[derive(Debug, Default, Serialize)]
pub struct BuildSummary {
    pub files: usize,
    pub bytes: u64,
    pub personas: usize,
    /// Addresses the router did not answer with 200 (written all the same:
    /// a deleted persona's page says it was deleted). Sorted.
    pub not_ok: Vec<(String, u16)>,
    /// Whether an earlier copy was updated in place.
    pub incremental: bool,
    /// Files whose bytes were written (in place: those that changed).
    pub rewritten: usize,
    /// Files of the earlier copy that this one no longer has.
    pub removed: usize,
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
        if self.incremental {
            write!(
                formatter,
                "; updated in place: {} files rendered, {} rewritten, {} removed",
                self.files, self.rewritten, self.removed
            )?;
        }
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

/// Builds the copy. A directory holding a copy made by the same program
/// with the same options (its manifest says so) is updated in place:
/// only the files of personas whose inputs changed, the pages whose
/// "similar personas" changed and the registry-wide pages are rendered,
/// files that come out the same are left alone, and the files of removed
/// personas are deleted. Anything else is a full build into a fresh
/// directory beside `out`, put in place at the end, so a failed build leaves
/// the previous copy untouched.
pub async fn build(state: AppState, build: SiteBuild<'_>) -> anyhow::Result<BuildSummary> {
    let inputs = build.inputs;
    // A preview's banner, on every page, names the change: nothing carries
    // over; nor does it without a snapshot, which a build in place needs.
    let started = std::time::Instant::now();
    let previous = if build.preview.is_none() && state.snapshot.is_some() && build.out.join(MARKER_FILE).is_file() {
        Manifest::read(build.out).filter(|manifest| manifest.site == inputs.site)
    } else {
        None
    };
    tracing::debug!(elapsed = ?started.elapsed(), found = previous.is_some(), "read the copy's manifest");
    match previous {
        Some(previous) => {
            // Until the new manifest is written, the copy is between two
            // builds; without a manifest, the next build is a full one.
            let manifest_path = build.out.join(MANIFEST_FILE);
            std::fs::remove_file(&manifest_path)
                .with_context(|| format!("removing {} before updating the copy", manifest_path.display()))?;
            render_into(
                state,
                build.out,
                &build.progress,
                build.preview.clone(),
                inputs,
                Some(previous),
            )
            .await
        }
        None => {
            let staging = prepare_staging(build.out)?;
            let summary = render_into(
                state,
                staging.path(),
                &build.progress,
                build.preview.clone(),
                inputs,
                None,
            )
            .await?;
            replace_directory(staging, build.out)?;
            Ok(summary)
        }
    }
}

/// What the build reads of the registry before rendering anything. It is
/// read apart from the build so that the caller can read it while the
/// vector index is brought up to date: none of it depends on the index.
pub struct SiteInputs {
    inventory: Vec<InventoryEntry>,
    site_map: Arc<SiteMap>,
    /// The digest of what every file depends on (see [`manifest::site_inputs`]).
    site: String,
    /// Every version's stamp, by current slug.
    stamps: BTreeMap<String, Vec<queries::VersionStamp>>,
    /// The current profiles' slugs, and their digest (see [`manifest::profiles_digest`]).
    profiles: Vec<String>,
    profiles_digest: String,
}

impl SiteInputs {
    /// Reads the inputs of a build of the projection in `pool`, whose pages
    /// read through `snapshot` (when the build has one) and link under `base_url`.
    pub async fn read(
        pool: &PgPool,
        snapshot: Option<&SiteSnapshot>,
        base_url: Option<&str>,
        preview: Option<&Preview>,
    ) -> anyhow::Result<SiteInputs> {
        let started = std::time::Instant::now();
        // Independent passes over the registry, each on its own connection:
        // the database answers them side by side.
        let (inventory, templates, version_stamps, profiles) = tokio::try_join!(
            queries::site_inventory(pool),
            queries::prompt_template_history(pool),
            queries::version_stamps(pool),
            // Through the snapshot, so the digest names the very profiles the pages apply.
            crate::web::reads::profiles_through(pool, snapshot),
        )?;
        let (inventory, former) = inventory;
        let slugs: HashMap<uuid::Uuid, String> = inventory.iter().map(|entry| (entry.id, entry.slug.clone())).collect();
        let renamed: BTreeMap<String, String> = former
            .into_iter()
            .filter_map(|(old, id)| Some((old, slugs.get(&id)?.clone())))
            .collect();
        let site = manifest::site_inputs(&[
            base_url.unwrap_or(""),
            &format!("{preview:?}"),
            &format!("{renamed:?}"),
            &format!("{templates:?}"),
        ])?;
        let site_map = Arc::new(SiteMap::new(renamed.into_iter().collect(), base_url));
        let mut stamps: BTreeMap<String, Vec<queries::VersionStamp>> = BTreeMap::new();
        for stamp in version_stamps {
            stamps.entry(stamp.persona_slug.clone()).or_default().push(stamp);
        }
        tracing::debug!(elapsed = ?started.elapsed(), "read the site's inputs");
        Ok(SiteInputs {
            inventory,
            site_map,
            site,
            stamps,
            profiles_digest: manifest::profiles_digest(&profiles)?,
            profiles: profiles.into_iter().map(|profile| profile.slug.to_string()).collect(),
        })
    }
}

/// Personas rendered in one batch: their versions are read with one query.
const BATCH: usize = 200;

/// What a build renders of each slug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every file of the slug.
    All,
    /// Only the current page, whose "similar personas" changed.
    CurrentPage,
    /// The current page (it lists the profiles) and the pages with each
    /// profile applied: the profiles changed, the persona did not.
    Profiles,
}

async fn render_into(
    state: AppState,
    directory: &Path,
    progress: &ProgressBar,
    preview: Option<Arc<Preview>>,
    inputs: SiteInputs,
    previous: Option<Manifest>,
) -> anyhow::Result<BuildSummary> {
    let SiteInputs {
        inventory,
        site_map,
        site,
        stamps,
        profiles,
        profiles_digest,
    } = inputs;
    // Without one, every read goes to the database (see `--through-database`).
    let snapshot = state.snapshot.clone();
    // That is the reference path: its links go through the HTML parser too.
    let links = if snapshot.is_some() {
        LinkRewrite::Scan
    } else {
        LinkRewrite::Parser
    };
    let app = site_router(Arc::clone(&state));
    let started = std::time::Instant::now();
    let status = queries::sync_status(&state.pool).await?;
    let in_place = previous.is_some();
    let mut manifest = Manifest::new(site, profiles_digest);
    for (slug, versions) in &stamps {
        let entry = manifest.personas.entry(slug.clone()).or_default();
        if let Some(snapshot) = &snapshot {
            entry.inputs = manifest::persona_inputs(versions, snapshot.slugs(), snapshot.labels());
        }
    }

    // What to render of each slug, and the files kept from the previous build.
    let mut scopes: BTreeMap<String, Scope> = BTreeMap::new();
    let mut similar: HashMap<uuid::Uuid, Vec<Found>> = HashMap::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    match &previous {
        None => {
            scopes.extend(stamps.keys().map(|slug| (slug.clone(), Scope::All)));
        }
        Some(previous) => {
            let snapshot = snapshot
                .as_ref()
                .context("a build in place needs the registry's snapshot")?;
            for (slug, entry) in &mut manifest.personas {
                match previous.personas.get(slug) {
                    Some(old) if old.inputs == entry.inputs => {
                        entry.similar = old.similar.clone();
                        entry.files = old.files.clone();
                        kept.extend(old.files.iter().cloned());
                    }
                    _ => {
                        scopes.insert(slug.clone(), Scope::All);
                    }
                }
            }
            tracing::debug!(elapsed = ?started.elapsed(), "compared the inputs of every slug");
            let changed: BTreeSet<&str> = scopes
                .keys()
                .map(String::as_str)
                .chain(
                    previous
                        .personas
                        .keys()
                        .filter(|slug| !manifest.personas.contains_key(*slug))
                        .map(String::as_str),
                )
                .collect();
            let similar_changed = similar_changes(&state, snapshot, &manifest, &changed).await?;
            tracing::debug!(elapsed = ?started.elapsed(), lists = similar_changed.len(), "found the similar lists that changed");
            for (slug, found) in similar_changed {
                if let Some(entry) = manifest.personas.get_mut(&slug) {
                    entry.similar = ShownSimilar::list(&found);
                }
                if let Some(persona) = snapshot.persona(&slug) {
                    similar.insert(persona.id, found);
                }
                scopes.insert(slug.clone(), Scope::CurrentPage);
                kept.remove(&format!("p/{slug}/index.html"));
            }
            // A change of any profile reaches every live persona's current
            // page and its pages with a profile applied, and nothing else of it.
            if previous.profiles != manifest.profiles {
                for (slug, entry) in &mut manifest.personas {
                    let live = snapshot.persona(slug).is_some_and(|persona| !persona.deleted);
                    if !live || scopes.get(slug) == Some(&Scope::All) {
                        continue;
                    }
                    let applied = manifest::applied_prefix(slug);
                    let stale: Vec<String> = entry
                        .files
                        .iter()
                        .filter(|file| file.starts_with(&applied))
                        .cloned()
                        .collect();
                    for file in stale {
                        kept.remove(&file);
                        entry.files.remove(&file);
                    }
                    kept.remove(&format!("p/{slug}/index.html"));
                    scopes.insert(slug.clone(), Scope::Profiles);
                }
            }
        }
    }

    tracing::debug!(rendered = scopes.len(), "planned the slugs to render");
    let mut summary = BuildSummary {
        personas: inventory.iter().filter(|entry| !entry.deleted).count(),
        incremental: in_place,
        ..BuildSummary::default()
    };
    let crawl = Arc::new(Crawl {
        site_map: Arc::clone(&site_map),
        directory: directory.to_path_buf(),
        known: std::sync::Mutex::new(kept),
        found: std::sync::Mutex::new(Vec::new()),
        progress: progress.clone(),
        preview: preview.clone(),
        in_place,
        made: std::sync::Mutex::new(std::collections::HashSet::new()),
        links,
    });
    let mut produced: BTreeSet<String> = BTreeSet::new();
    let tally = |summary: &mut BuildSummary, produced: &mut BTreeSet<String>, written: Written| {
        summary.files += 1;
        summary.bytes += written.size;
        if written.rewritten {
            summary.rewritten += 1;
        }
        if written.status != StatusCode::OK {
            summary
                .not_ok
                .push((canonical_address(&written.file), written.status.as_u16()));
        }
        produced.insert(written.file);
    };

    // Files this build writes itself, or asks the router for under another name.
    let index = search_index(&inventory)?;
    let marker = match &preview {
        None => format!(
            "A static copy of the persona registry, made by `personas build-site` from commit {}.\n",
            status.last_commit.as_deref().unwrap_or("(none)")
        ),
        Some(preview) => format!(
            "A preview of the persona registry, made by `personas build-site --preview` from commit {} ({}) against {} ({}).\n",
            preview.head_commit, preview.head, preview.base_commit, preview.base
        ),
    };
    // The 404 page: any address the router does not know.
    let not_found = fetch(&app, &site_map, links, preview.as_deref(), "/404", NOT_FOUND_FILE).await?;
    for (file, bytes) in [
        (NOT_FOUND_FILE.to_string(), not_found.bytes),
        (SEARCH_INDEX_JSON.to_string(), index.clone()),
        (
            SEARCH_INDEX_SCRIPT.to_string(),
            [b"window.PERSONAS_SEARCH_INDEX = ".as_slice(), &index, b";\n"].concat(),
        ),
        (MARKER_FILE.to_string(), marker.into_bytes()),
    ] {
        crawl.claim(&file);
        let rewritten = crawl.write(&file, &bytes)?;
        tally(
            &mut summary,
            &mut produced,
            Written {
                size: bytes.len() as u64,
                file,
                status: StatusCode::OK,
                rewritten,
            },
        );
    }

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
    // Claimed before anything renders, so that a link to a persona's file
    // from a shared page leaves it to the persona's batch.
    let claim_all = |addresses: Vec<String>| -> Vec<String> {
        addresses
            .into_iter()
            .filter_map(|address| site_map.target(&address).map(|target| target.file))
            .filter(|file| crawl.claim(file))
            .collect()
    };
    let shared_round = claim_all(
        shared_seeds()
            .into_iter()
            .chain(acting_seeds(&label_names, &experiment_names))
            .chain(profile_seeds(&profiles))
            .chain(preview.iter().flat_map(|preview| preview.addresses()))
            .collect(),
    );
    let mut by_slug: HashMap<&str, Vec<&InventoryEntry>> = HashMap::new();
    for entry in &inventory {
        by_slug.entry(entry.slug.as_str()).or_default().push(entry);
    }
    let mut batches: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let scoped: Vec<(&String, &Scope)> = scopes.iter().collect();
    for chunk in scoped.chunks(BATCH) {
        let mut files = Vec::new();
        let mut slugs = Vec::new();
        for (slug, scope) in chunk {
            slugs.push((*slug).clone());
            let addresses = match scope {
                Scope::All => persona_seeds(
                    slug,
                    by_slug.get(slug.as_str()).map_or(&[][..], Vec::as_slice),
                    with_prompts,
                    &profiles,
                ),
                Scope::CurrentPage => vec![format!("/p/{slug}")],
                Scope::Profiles => std::iter::once(format!("/p/{slug}"))
                    .chain(applied_seeds(slug, &profiles))
                    .collect(),
            };
            files.extend(claim_all(addresses));
        }
        batches.push((slugs, files));
    }
    let total: usize = shared_round.len() + batches.iter().map(|(_, files)| files.len()).sum::<usize>();
    progress.set_length(total as u64);

    tracing::debug!("seeds claimed");
    let mut leftover = Vec::new();
    for written in render_round(&app, &crawl, shared_round).await? {
        tally(&mut summary, &mut produced, written);
    }
    leftover.extend(crawl.take_found());
    tracing::debug!("shared pages rendered");
    // Each batch's reads (its similar lists, versions and templates) are
    // made while the batch before it renders, so that neither core waits on
    // the database or the vector index between batches.
    let mut batches = batches.into_iter();
    let reads = BatchReads {
        state: &state,
        snapshot: snapshot.as_deref(),
        stamps: &stamps,
        scopes: &scopes,
    };
    let mut next = reads.prepare(batches.next(), &mut similar).await?;
    while let Some(ReadyBatch { slugs, files, prepared }) = next.take() {
        if let (Some(snapshot), Some(prepared)) = (&snapshot, prepared) {
            for (slug, shown) in prepared.shown {
                if let Some(entry) = manifest.personas.get_mut(&slug) {
                    entry.similar = shown;
                }
            }
            snapshot.set_batch(prepared.batch);
        }
        let render = async {
            let in_batch: BTreeSet<&str> = slugs.iter().map(String::as_str).collect();
            let mut round = files;
            // The batch's own links (compare pages, pinned cards) while its versions are loaded.
            while !round.is_empty() {
                for written in render_round(&app, &crawl, round).await? {
                    tally(&mut summary, &mut produced, written);
                }
                let (own, other): (Vec<String>, Vec<String>) = crawl
                    .take_found()
                    .into_iter()
                    .partition(|file| owner(file).is_some_and(|slug| in_batch.contains(slug)));
                leftover.extend(other);
                progress.inc_length(own.len() as u64);
                round = own;
            }
            anyhow::Ok(())
        };
        let prepare = reads.prepare(batches.next(), &mut similar);
        let (rendered, prepared) = tokio::join!(render, prepare);
        rendered?;
        next = prepared?;
    }
    if let Some(snapshot) = &snapshot {
        snapshot.set_batch(Batch::default());
    }
    // Whatever else was linked: read from the database, round after round.
    let mut round = leftover;
    while !round.is_empty() {
        round.sort();
        progress.inc_length(round.len() as u64);
        for written in render_round(&app, &crawl, round).await? {
            tally(&mut summary, &mut produced, written);
        }
        round = crawl.take_found();
    }

    // The manifest: who owns each file produced, and what was kept.
    for file in &produced {
        match owner(file).and_then(|slug| manifest.personas.get_mut(slug)) {
            // A persona rendered in part keeps the files of the previous build (a
            // profiles change took its pages with a profile applied out of them).
            Some(entry)
                if matches!(
                    scopes.get(owner(file).unwrap_or_default()),
                    Some(Scope::All | Scope::Profiles)
                ) =>
            {
                entry.files.insert(file.clone());
            }
            Some(_) => {}
            None => {
                manifest.shared_files.insert(file.clone());
            }
        }
    }
    if let Some(previous) = &previous {
        let now: BTreeSet<&String> = manifest.files().collect();
        let mut gone: Vec<&String> = previous.files().filter(|file| !now.contains(file)).collect();
        gone.sort();
        gone.dedup();
        for file in gone {
            remove_file(directory, file)?;
            summary.removed += 1;
        }
    }
    // Without a snapshot the inputs were not read: no manifest, so the next build is a full one.
    if snapshot.is_some() {
        let started = std::time::Instant::now();
        crawl.write(MANIFEST_FILE, &manifest.to_bytes()?)?;
        tracing::debug!(elapsed = ?started.elapsed(), "wrote the manifest");
    }
    summary.not_ok.sort();
    Ok(summary)
}

/// What a batch of personas' pages read besides the registry-wide snapshot.
struct PreparedBatch {
    /// The similar lists shown, by slug, for the manifest.
    shown: Vec<(String, Vec<ShownSimilar>)>,
    batch: Batch,
}

/// A batch's slugs and files, with its reads made.
struct ReadyBatch {
    slugs: Vec<String>,
    files: Vec<String>,
    /// `None` without a snapshot, where every page reads the database itself.
    prepared: Option<PreparedBatch>,
}

/// What every batch's reads depend on.
struct BatchReads<'a> {
    state: &'a AppState,
    snapshot: Option<&'a SiteSnapshot>,
    stamps: &'a BTreeMap<String, Vec<queries::VersionStamp>>,
    scopes: &'a BTreeMap<String, Scope>,
}

impl BatchReads<'_> {
    /// Reads a batch's similar lists, versions and prompt templates.
    async fn prepare(
        &self,
        batch: Option<(Vec<String>, Vec<String>)>,
        similar: &mut HashMap<uuid::Uuid, Vec<Found>>,
    ) -> anyhow::Result<Option<ReadyBatch>> {
        let Some((slugs, files)) = batch else {
            return Ok(None);
        };
        let Some(snapshot) = self.snapshot else {
            return Ok(Some(ReadyBatch {
                slugs,
                files,
                prepared: None,
            }));
        };
        let ids: Vec<uuid::Uuid> = slugs
            .iter()
            .flat_map(|slug| {
                self.stamps
                    .get(slug)
                    .into_iter()
                    .flatten()
                    .map(|stamp| stamp.persona_id)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let lists = similar_lists(self.state, snapshot, &slugs, self.scopes, similar).await?;
        let shown = lists
            .iter()
            .map(|(slug, found)| (slug.clone(), ShownSimilar::list(found)))
            .collect();
        let by_id = lists
            .into_iter()
            .filter_map(|(slug, found)| Some((snapshot.persona(&slug)?.id, found)))
            .collect();
        let batch = Batch::load(&self.state.pool, &ids, by_id).await?;
        // Every version's pages and prompt name the template of its commit.
        snapshot.read_templates(&self.state.pool, batch.commits()).await?;
        Ok(Some(ReadyBatch {
            slugs,
            files,
            prepared: Some(PreparedBatch { shown, batch }),
        }))
    }
}

/// The similar lists to compute for a batch: every live persona rendered
/// whole (a persona whose list changed was computed already).
async fn similar_lists(
    state: &AppState,
    snapshot: &SiteSnapshot,
    slugs: &[String],
    scopes: &BTreeMap<String, Scope>,
    known: &mut HashMap<uuid::Uuid, Vec<Found>>,
) -> anyhow::Result<HashMap<String, Vec<Found>>> {
    let Some(neighbours) = neighbours_of(state) else {
        return Ok(HashMap::new());
    };
    let mut lists = HashMap::new();
    let mut wanted = Vec::new();
    for slug in slugs {
        let Some(persona) = snapshot.persona(slug).filter(|persona| !persona.deleted) else {
            continue;
        };
        if let Some(found) = known.remove(&persona.id) {
            lists.insert(slug.clone(), found);
        } else if matches!(scopes.get(slug), Some(Scope::All | Scope::Profiles)) {
            wanted.push((slug.clone(), persona.id));
        }
    }
    // A persona the index does not hold yet shows the page's note instead.
    lists.extend(similar_in_parallel(neighbours, wanted).await?);
    Ok(lists)
}

/// The stored vectors a build scores similar lists from, if it has a model.
fn neighbours_of(state: &AppState) -> Option<Arc<ExactNeighbours>> {
    state.static_site.as_ref()?.neighbours.clone()
}

/// The exhaustive "similar personas" of each persona, scored on every core
/// (off the async workers); a persona the index cannot answer for is left out.
async fn similar_in_parallel(
    neighbours: Arc<ExactNeighbours>,
    personas: Vec<(String, uuid::Uuid)>,
) -> anyhow::Result<Vec<(String, Vec<Found>)>> {
    if personas.is_empty() {
        return Ok(Vec::new());
    }
    tokio::task::spawn_blocking(move || {
        let ids: Vec<uuid::Uuid> = personas.iter().map(|(_, id)| *id).collect();
        let mut found: HashMap<uuid::Uuid, Vec<Found>> = search::similar_exactly_each(&neighbours, &ids, SIMILAR_SHOWN)
            .into_iter()
            .filter_map(|(id, found)| Some((id, found.ok()?)))
            .collect();
        personas
            .into_iter()
            .filter_map(|(slug, id)| Some((slug, found.remove(&id)?)))
            .collect()
    })
    .await
    .context("the similar-persona scoring failed")
}

/// How many similar personas a page shows (the page handler's figure).
const SIMILAR_SHOWN: usize = 5;
/// A score this far below a list's last one may still enter it once the
/// page's two-decimal rounding and the tie step are allowed for.
const ENTRY_MARGIN: f64 = 0.01;

/// The kept personas whose "similar personas" list differs now, with the
/// new list. Only lists a change can reach are recomputed: those showing a
/// changed or removed persona, those not full yet, and those a changed
/// persona now scores high enough to enter.
async fn similar_changes(
    state: &AppState,
    snapshot: &SiteSnapshot,
    manifest: &Manifest,
    changed: &BTreeSet<&str>,
) -> anyhow::Result<Vec<(String, Vec<Found>)>> {
    let Some(neighbours) = neighbours_of(state) else {
        return Ok(Vec::new());
    };
    // Each changed live persona's score against every stored persona; the
    // index is current, so a point's persona goes by its current slug.
    let slug_of: HashMap<uuid::Uuid, &str> = manifest
        .personas
        .keys()
        .filter_map(|slug| Some((snapshot.persona(slug)?.id, slug.as_str())))
        .collect();
    let mut entering: HashMap<&str, f64> = HashMap::new();
    for slug in changed {
        let Some(persona) = snapshot.persona(slug).filter(|persona| !persona.deleted) else {
            continue;
        };
        let Ok(scores) = neighbours.scores(persona.id) else {
            continue;
        };
        for (id, score) in scores {
            let Some(slug) = slug_of.get(&id) else { continue };
            let best = entering.entry(slug).or_insert(f64::MIN);
            *best = best.max(f64::from(score));
        }
    }
    let mut candidates = Vec::new();
    for (slug, entry) in &manifest.personas {
        if changed.contains(slug.as_str()) {
            continue;
        }
        let Some(persona) = snapshot.persona(slug).filter(|persona| !persona.deleted) else {
            continue;
        };
        let shows_changed = entry.similar.iter().any(|shown| changed.contains(shown.slug.as_str()));
        let threshold = if entry.similar.len() < SIMILAR_SHOWN {
            f64::MIN
        } else {
            entry
                .similar
                .last()
                .and_then(|last| last.score.parse::<f64>().ok())
                .map_or(f64::MIN, |score| score - ENTRY_MARGIN)
        };
        let may_enter = entering.get(slug.as_str()).is_some_and(|score| *score >= threshold);
        if shows_changed || may_enter || (entry.similar.len() < SIMILAR_SHOWN && !changed.is_empty()) {
            candidates.push((slug.clone(), persona.id));
        }
    }
    let mut differing = Vec::new();
    for (slug, found) in similar_in_parallel(neighbours, candidates).await? {
        if manifest
            .personas
            .get(&slug)
            .is_some_and(|entry| entry.similar != ShownSimilar::list(&found))
        {
            differing.push((slug, found));
        }
    }
    differing.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(differing)
}

/// The registry-wide addresses the copy must hold whether or not a page links to them.
fn shared_seeds() -> Vec<String> {
    [
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
    .collect()
}

/// One slug's addresses: the API mirror above all, which pages do not link
/// to one by one (every persona that had the slug, the live one last).
fn persona_seeds(slug: &str, entries: &[&InventoryEntry], with_prompts: bool, profiles: &[String]) -> Vec<String> {
    let mut addresses = Vec::new();
    for entry in entries {
        addresses.extend(entry_seeds(slug, entry, with_prompts, profiles));
    }
    addresses
}

fn entry_seeds(slug: &str, entry: &InventoryEntry, with_prompts: bool, profiles: &[String]) -> Vec<String> {
    let mut addresses = vec![format!("/p/{slug}/history"), format!("/api/personas/{slug}/versions")];
    if !entry.deleted {
        addresses.push(format!("/p/{slug}"));
        addresses.extend(applied_seeds(slug, profiles));
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
    addresses
}

/// A live persona with each profile applied.
fn applied_seeds<'a>(slug: &'a str, profiles: &'a [String]) -> impl Iterator<Item = String> + 'a {
    profiles
        .iter()
        .map(move |profile| format!("/p/{slug}/profile/{profile}"))
}

/// The profiles pages and their JSON (each profile's page links every live
/// persona with the profile applied; those files are the personas').
fn profile_seeds(profiles: &[String]) -> Vec<String> {
    let mut addresses = vec!["/profiles".to_string(), "/api/profiles".to_string()];
    for profile in profiles {
        addresses.push(format!("/profiles/{profile}"));
        addresses.push(format!("/api/profiles/{profile}"));
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
    /// Updating a copy in place: a file that comes out the same is not rewritten.
    in_place: bool,
    /// Directories this build has made or found.
    made: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    links: LinkRewrite,
}

/// How a page's links are rewritten (the same bytes either way).
#[derive(Debug, Clone, Copy)]
enum LinkRewrite {
    /// [`SiteMap::rewrite_page`]: a scan, the parser where the scan gives up.
    Scan,
    /// [`SiteMap::rewrite_page_parsed`]: the HTML parser for every page.
    Parser,
}

impl Crawl {
    fn take_found(&self) -> Vec<String> {
        self.found
            .lock()
            .map(|mut found| std::mem::take(&mut *found))
            .unwrap_or_default()
    }

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
    /// Whether the file's bytes were written (an in-place update leaves equal files alone).
    rewritten: bool,
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
                    crawl.links,
                    crawl.preview.as_deref(),
                    &canonical_address(file),
                    file,
                )
                .await?;
                let rewritten = crawl.write(&rendered.file, &rendered.bytes)?;
                crawl.linked(rendered.links);
                crawl.progress.inc(1);
                done.push(Written {
                    size: rendered.bytes.len() as u64,
                    file: rendered.file,
                    status: rendered.status,
                    rewritten,
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
    links: LinkRewrite,
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
            // Without a copy when the router's answer is one buffer of its own.
            bytes: Vec::from(body),
            links: Vec::new(),
        });
    }
    let html = std::str::from_utf8(&body).with_context(|| format!("{address} answered HTML that is not UTF-8"))?;
    let decorated;
    let html = match preview {
        Some(preview) => {
            decorated = preview
                .decorate(html)
                .with_context(|| format!("adding the preview banner to {address}"))?;
            decorated.as_str()
        }
        None => html,
    };
    let rewritten = match links {
        LinkRewrite::Scan => site_map.rewrite_page(html, file),
        LinkRewrite::Parser => site_map.rewrite_page_parsed(html, file),
    };
    let (rewritten, linked) =
        rewritten.map_err(|error| anyhow::anyhow!("rewriting the links of {address}: {error}"))?;
    Ok(Rendered {
        file: file.to_string(),
        status,
        bytes: rewritten.into_bytes(),
        links: linked,
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

impl Crawl {
    /// Writes one file of the copy; in place, only when its bytes differ,
    /// and through a rename, so a server reading the copy never sees half a
    /// file. Returns whether it wrote.
    fn write(&self, file: &str, bytes: &[u8]) -> anyhow::Result<bool> {
        let path = path_in_copy(&self.directory, file)?;
        if self.in_place && std::fs::read(&path).is_ok_and(|existing| existing == bytes) {
            return Ok(false);
        }
        if let Some(parent) = path.parent() {
            self.make_directory(parent)?;
        }
        write_bytes(&path, bytes, self.in_place)?;
        Ok(true)
    }

    /// Creates a directory once: asking the file system again for each of
    /// its files costs a locked lookup in the parent every time.
    fn make_directory(&self, directory: &Path) -> anyhow::Result<()> {
        let known = |made: &std::collections::HashSet<PathBuf>| made.contains(directory);
        if self.made.lock().is_ok_and(|made| known(&made)) {
            return Ok(());
        }
        std::fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
        if let Ok(mut made) = self.made.lock() {
            made.insert(directory.to_path_buf());
        }
        Ok(())
    }
}

fn write_bytes(path: &Path, bytes: &[u8], in_place: bool) -> anyhow::Result<()> {
    if in_place {
        let mut temporary = path.to_path_buf().into_os_string();
        temporary.push(".personas-partial");
        std::fs::write(&temporary, bytes).with_context(|| format!("writing {}", path.display()))?;
        std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    } else {
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Removes a file a previous build wrote and this one does not, and the
/// directories it leaves empty.
fn remove_file(directory: &Path, file: &str) -> anyhow::Result<()> {
    let path = path_in_copy(directory, file)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
    }
    let mut parent = path.parent();
    while let Some(folder) = parent
        && folder != directory
        && std::fs::remove_dir(folder).is_ok()
    {
        parent = folder.parent();
    }
    Ok(())
}

fn path_in_copy(directory: &Path, file: &str) -> anyhow::Result<PathBuf> {
    // Files come from the site map, which only joins URL path segments; a
    // segment that climbs out of the copy would be a bug, refused here.
    if file.split('/').any(|segment| segment == ".." || segment.is_empty()) {
        bail!("refusing to write {file:?} outside the copy");
    }
    Ok(directory.join(file))
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

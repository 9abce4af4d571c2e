//! The website: server-rendered askama pages over the same reads as the API.
//! Every value from a persona file goes through askama's HTML escaping.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

use super::answers::Answer;
use super::api::{FilterParams, run_search};
use super::cache::{Freshness, cached, digest};
use super::error::WebError;
use super::reads;
use super::{AppState, Path, Query, Resolved, resolve};
use crate::persona::Persona;
use crate::persona::diff::{Change, describe, diff};
use crate::persona::search_filter::SearchFilter;
use crate::search::{self, Found, Ranking};
use crate::store::queries::{self, ChangeRecord, Facets, FileError, PersonaSummary, Sort, SyncStatus, VersionRecord};

const STYLE: &str = include_str!("../../templates/style.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/style.css", get(style))
        .route("/search.js", get(search_script))
        .route("/p/{slug}", get(persona_page))
        .route("/p/{slug}/history", get(history_page))
        .route("/p/{slug}/v/{pin}", get(pinned_page))
        .route("/p/{slug}/compare/{range}", get(compare_page))
        .route("/search", get(search_page))
        .route("/changes", get(changes_page))
        .route("/changes.atom", get(changes_feed))
        .route("/status", get(status_page))
}

fn page(template: &impl Template) -> Result<Html<String>, WebError> {
    template
        .render()
        .map(Html)
        .map_err(|error| WebError::unavailable("rendering the page", &error))
}

/// The static copy's search: filters the prebuilt index in the browser.
async fn search_script(headers: HeaderMap) -> Response {
    cached(
        &headers,
        concat!("search-js-", env!("CARGO_PKG_VERSION")),
        Freshness::Revalidate,
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("../../templates/search.js"),
        ),
    )
}

async fn style(headers: HeaderMap) -> Response {
    cached(
        &headers,
        concat!("style-", env!("CARGO_PKG_VERSION")),
        Freshness::Revalidate,
        ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE),
    )
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// The HTML page for an error (see `error::render_errors`).
pub fn error_page(error: &WebError) -> String {
    ErrorPage {
        status: error.status.as_u16(),
        reason: error.status.canonical_reason().unwrap_or("Error"),
        message: &error.message,
    }
    .render()
    .unwrap_or_else(|_| format!("{} {}", error.status, error.code))
}

#[derive(Debug, Default, Deserialize)]
struct IndexParams {
    #[serde(flatten)]
    filter: FilterParams,
    sort: Option<Sort>,
    #[serde(default, deserialize_with = "super::api::query_value")]
    page: Option<i64>,
}

const PAGE_SIZE: i64 = 60;
/// Far beyond any registry, and small enough that the offset cannot overflow.
const MAX_PAGE_NUMBER: i64 = 1_000_000;

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    personas: Vec<PersonaSummary>,
    total: i64,
    facets: Facets,
    filter: SearchFilter,
    page: i64,
    pages: i64,
    /// The current filter as a query string, for pagination links.
    query: String,
}

async fn index(State(state): State<AppState>, Query(params): Query<IndexParams>) -> Result<Response, WebError> {
    let filter = params.filter.filter()?;
    let page_number = params.page.unwrap_or(1);
    if !(1..=MAX_PAGE_NUMBER).contains(&page_number) {
        return Err(WebError::bad_request(
            "bad_page",
            format!("page must be 1 to {MAX_PAGE_NUMBER}"),
        ));
    }
    let (personas, total) = reads::list_personas(
        &state,
        &filter,
        params.sort.unwrap_or_default(),
        PAGE_SIZE,
        (page_number - 1) * PAGE_SIZE,
    )
    .await?;
    let facets = reads::facets(&state).await?;
    let mut query = Vec::new();
    if let Some(domain) = &filter.domain {
        query.push(format!("domain={}", encode(domain)));
    }
    if let Some(mode) = &filter.mode {
        query.push(format!("mode={}", encode(mode)));
    }
    if let Some(is_real) = filter.is_real {
        query.push(format!("is_real={is_real}"));
    }
    if let Some(traits) = params.filter.traits.as_deref().filter(|traits| !traits.is_empty()) {
        query.push(format!("traits={}", encode(traits)));
    }
    if let Some(sort) = params.sort {
        query.push(format!("sort={}", sort.as_str()));
    }
    Ok(page(&IndexPage {
        personas,
        total,
        facets,
        filter,
        page: page_number,
        pages: ((total + PAGE_SIZE - 1) / PAGE_SIZE).max(1),
        query: query.join("&"),
    })?
    .into_response())
}

/// Percent-encodes a query-string value.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One trait as drawn: its bar width in the 0..=200 SVG box.
pub struct TraitBar {
    pub name: String,
    pub value: f64,
}

impl TraitBar {
    pub fn width(&self) -> String {
        format!("{:.1}", self.value.clamp(0.0, 1.0) * 200.0)
    }

    pub fn label(&self) -> String {
        format!("{:.2}", self.value)
    }
}

pub struct TraitGroup {
    pub kind: String,
    pub bars: Vec<TraitBar>,
}

fn trait_groups(persona: &Persona) -> Vec<TraitGroup> {
    persona
        .traits
        .iter()
        .map(|(kind, values)| TraitGroup {
            kind: kind.clone(),
            bars: values
                .iter()
                .map(|(name, value)| TraitBar {
                    name: name.clone(),
                    value: *value,
                })
                .collect(),
        })
        .collect()
}

/// A belief's source: a link when it is a web address, plain text otherwise
/// (`isbn:…`), never a `javascript:` or other scheme.
pub fn source_link(source: &str) -> Option<&str> {
    (source.starts_with("https://") || source.starts_with("http://")).then_some(source)
}

#[derive(Template)]
#[template(path = "persona.html")]
struct PersonaPage {
    persona: Persona,
    version: VersionRecord,
    traits: Vec<TraitGroup>,
    /// The current version number, when this page shows an older one.
    pinned_of: Option<i32>,
    similar: Vec<Found>,
    /// Why "similar personas" is empty, when it is.
    similar_note: Option<String>,
    former_slugs: Vec<String>,
    /// Whether a prompt template renders this version (the page links to its prompt).
    has_prompt: bool,
    /// The labels that point at a version of this persona now.
    labels: Vec<crate::store::labels::LabelPointer>,
    /// The profile picker, `(slug, name)` of each profile: on the current page only.
    profiles: Vec<(String, String)>,
}

impl PersonaPage {
    fn short_commit(&self) -> &str {
        &self.version.commit[..self.version.commit.len().min(7)]
    }

    fn date(&self) -> String {
        self.version.committed_at.format("%Y-%m-%d").to_string()
    }

    fn link<'a>(&self, source: &'a str) -> Option<&'a str> {
        source_link(source)
    }

    fn avatar(&self) -> Option<&str> {
        self.persona.avatar_url.as_deref().and_then(source_link)
    }

    /// What a trait type rests on: `Some(Some(source))` when cited,
    /// `Some(None)` for an editorial estimate, `None` when the file is silent.
    fn trait_source(&self, kind: &str) -> Option<Option<&str>> {
        self.persona.trait_sources.get(kind).map(|source| match source {
            crate::persona::model::TraitSource::Cited(source) => Some(source.as_str()),
            crate::persona::model::TraitSource::EditorialEstimate => None,
        })
    }
}

async fn persona_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path(slug): Path<String>,
) -> Result<Response, WebError> {
    if let Some(answer) = state.answers.get(uri.path()) {
        return Ok(answer.respond(&headers));
    }
    let generation = state.answers.generation();
    let resolved = resolve(&state, &slug, None).await?;
    if resolved.persona.slug != slug {
        // A former slug or an id: the persona lives at its current address.
        // Temporary, since a new persona may take the old slug one day.
        return Ok(Redirect::temporary(&format!("/p/{}", resolved.persona.slug)).into_response());
    }
    let answer = render_persona(&state, resolved).await?;
    let response = answer.respond(&headers);
    state.answers.put(uri.path().to_string(), answer, generation);
    Ok(response)
}

async fn pinned_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((slug, pin)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let resolved = resolve(&state, &slug, Some(&pin)).await?;
    Ok(render_persona(&state, resolved).await?.respond(&headers))
}

async fn render_persona(state: &AppState, resolved: Resolved) -> Result<Answer, WebError> {
    let Resolved {
        persona: reference,
        version,
        pinned,
        ..
    } = resolved;
    let Some(persona) = version.persona.clone() else {
        return Err(WebError::new(
            StatusCode::GONE,
            "deleted",
            format!("version {} records the deletion of {:?}", version.version, version.slug),
        ));
    };
    // Unpinned, the version shown is the current one: no second lookup.
    let pinned_of = if pinned {
        reads::current_version(state, reference.id)
            .await?
            .map(|current| current.version)
            .filter(|current| *current != version.version)
    } else {
        None
    };
    let (similar, similar_note) = if pinned {
        (Vec::new(), None)
    } else {
        let found = match (reads::similar_in_snapshot(state, reference.id), &state.static_site) {
            (Some(found), _) => Ok(found),
            // A static copy must be the same for the same commit, whatever the index's past.
            (None, Some(site)) => search::similar_exactly(site.neighbours.as_deref(), reference.id, 5),
            (None, None) => {
                let index = state.index.as_deref();
                search::similar_to(index, reference.id, &SearchFilter::default(), 5).await
            }
        };
        match found {
            Ok(found) => (found, None),
            Err(error) => (Vec::new(), Some(WebError::from(error).message)),
        }
    };
    let former_slugs = reads::former_slugs(state, reference.id, &reference.slug).await?;
    // The page links to the pinned prompt, rendered with the template of the version's commit.
    let has_prompt = reads::prompt_template(state, Some(version.commit.as_str()))
        .await?
        .is_some();
    let traits = trait_groups(&persona);
    let labels = reads::labels_of(state, reference.id).await?;
    // A profile applies to the current version: a pinned page offers none.
    let profiles = if pinned {
        Vec::new()
    } else {
        super::profile_pages::picker(state).await?
    };
    let Html(body) = page(&PersonaPage {
        persona,
        version,
        traits,
        pinned_of,
        similar,
        similar_note,
        former_slugs,
        has_prompt,
        labels,
        profiles,
    })?;
    // Even a pinned page shows the current version number, the retraction
    // state and similar personas, which change: pages revalidate, tagged by
    // their bytes (the JSON API has the immutable answers).
    Ok(Answer {
        validator: format!("page-{}", digest(body.as_bytes())),
        body: body.into(),
        content_type: "text/html; charset=utf-8",
        freshness: Freshness::Revalidate,
    })
}

/// One change, as the history and compare pages draw it.
pub struct ChangeView {
    pub text: String,
    /// For a trait change: the old and new bar widths (0..=100).
    pub bars: Option<(String, String)>,
}

fn change_views(changes: &[Change]) -> Vec<ChangeView> {
    changes
        .iter()
        .map(|change| ChangeView {
            text: describe(change),
            bars: match change {
                Change::TraitChanged { old, new, .. } => Some((
                    format!("{:.1}", old.clamp(0.0, 1.0) * 100.0),
                    format!("{:.1}", new.clamp(0.0, 1.0) * 100.0),
                )),
                _ => None,
            },
        })
        .collect()
}

pub struct HistoryEntry {
    pub version: VersionRecord,
    pub changes: Vec<ChangeView>,
    /// The labels pointing at this version now.
    pub labels: Vec<String>,
}

impl HistoryEntry {
    pub fn short_commit(&self) -> &str {
        &self.version.commit[..self.version.commit.len().min(7)]
    }

    pub fn date(&self) -> String {
        self.version.committed_at.format("%Y-%m-%d %H:%M").to_string()
    }
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    slug: String,
    name: String,
    entries: Vec<HistoryEntry>,
}

async fn history_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, WebError> {
    let persona = reads::find_persona(&state, &slug)
        .await?
        .ok_or_else(|| WebError::no_persona(&slug))?;
    if persona.slug != slug {
        return Ok(Redirect::temporary(&format!("/p/{}/history", persona.slug)).into_response());
    }
    // The stamp before the data (see `api::list`).
    let stamp = reads::projection_stamp(&state).await?.unwrap_or_default();
    let versions = reads::versions(&state, persona.id).await?;
    let name = versions
        .iter()
        .find_map(|version| version.persona.as_ref().map(|persona| persona.name.clone()))
        .unwrap_or_else(|| slug.clone());
    let labels = reads::labels_of(&state, persona.id).await?;
    let mut entries = Vec::with_capacity(versions.len());
    for (position, version) in versions.iter().enumerate() {
        // Compared with the previous version that had content (newest first).
        let previous = versions[position + 1..].iter().find_map(|older| older.persona.as_ref());
        let changes = match (previous, &version.persona) {
            (Some(old), Some(new)) => change_views(&diff(old, new)),
            _ => Vec::new(),
        };
        entries.push(HistoryEntry {
            version: version.clone(),
            changes,
            labels: labels
                .iter()
                .filter(|pointer| pointer.version == version.version && !version.retracted)
                .map(|pointer| pointer.label.clone())
                .collect(),
        });
    }
    let body = page(&HistoryPage {
        slug: persona.slug.clone(),
        name,
        entries,
    })?;
    Ok(cached(
        &headers,
        &format!("history-{}-{stamp}", persona.id),
        Freshness::Revalidate,
        body,
    ))
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    slug: String,
    name: String,
    from: VersionRecord,
    to: VersionRecord,
    changes: Vec<ChangeView>,
}

async fn compare_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((slug, range)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let Some((from, to)) = range.split_once("...") else {
        return Err(WebError::bad_request(
            "bad_range",
            format!("{range:?} is not a range; write FROM...TO, e.g. 1...3"),
        ));
    };
    let from = resolve(&state, &slug, Some(from)).await?;
    let to = resolve(&state, &slug, Some(to)).await?;
    let (Some(old), Some(new)) = (&from.version.persona, &to.version.persona) else {
        return Err(WebError::new(
            StatusCode::GONE,
            "deleted",
            "one side of the comparison records a deletion and has no content",
        ));
    };
    let changes = change_views(&diff(old, new));
    let body = page(&ComparePage {
        slug: to.persona.slug.clone(),
        name: new.name.clone(),
        from: from.version,
        to: to.version,
        changes,
    })?;
    let validator = format!("compare-{}", digest(body.0.as_bytes()));
    Ok(cached(&headers, &validator, Freshness::Revalidate, body))
}

#[derive(Debug, Default, Deserialize)]
struct SearchPageParams {
    #[serde(default)]
    q: String,
    #[serde(flatten)]
    filter: FilterParams,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    query: String,
    filter: SearchFilter,
    facets: Facets,
    /// Full text and meaning merged: empty when there is no model.
    merged: Vec<Found>,
    full_text: Vec<Found>,
    semantic: Vec<Found>,
    semantic_note: Option<String>,
    /// The static copy searches in the browser (`search.js` over `search-index.js`).
    static_site: bool,
}

/// How many results each list of the search page shows.
const MERGED_SHOWN: usize = 10;
const WORDS_SHOWN: usize = 20;
const MEANING_SHOWN: usize = 10;

fn head(mut found: Vec<Found>, shown: usize) -> Vec<Found> {
    found.truncate(shown);
    found
}

async fn search_page(
    State(state): State<AppState>,
    Query(params): Query<SearchPageParams>,
) -> Result<Response, WebError> {
    let filter = params.filter.filter()?;
    let query = params.q.trim().to_string();
    let facets = reads::facets(&state).await?;
    let (merged, full_text, semantic, semantic_note) = if query.is_empty() {
        (Vec::new(), Vec::new(), Vec::new(), None)
    } else {
        // Both sides once, deep enough to merge; each list shows its head.
        let depth = search::fusion_depth(MERGED_SHOWN);
        let full_text = run_search(&state, &query, Ranking::Text, &filter, depth).await?;
        match run_search(&state, &query, Ranking::Semantic, &filter, depth).await {
            Ok(semantic) => {
                let merged = search::fuse(&[full_text.clone(), semantic.clone()], MERGED_SHOWN);
                (
                    merged,
                    head(full_text, WORDS_SHOWN),
                    head(semantic, MEANING_SHOWN),
                    None,
                )
            }
            Err(error) => (
                Vec::new(),
                head(full_text, WORDS_SHOWN),
                Vec::new(),
                Some(error.message),
            ),
        }
    };
    Ok(page(&SearchPage {
        query,
        filter,
        facets,
        merged,
        full_text,
        semantic,
        semantic_note,
        static_site: state.static_site.is_some(),
    })?
    .into_response())
}

pub struct ChangeItem {
    pub change: ChangeRecord,
}

impl ChangeItem {
    pub fn short_commit(&self) -> &str {
        &self.change.commit[..self.change.commit.len().min(7)]
    }

    pub fn date(&self) -> String {
        self.change.committed_at.format("%Y-%m-%d %H:%M").to_string()
    }

    pub fn rfc3339(&self) -> String {
        self.change.committed_at.to_rfc3339()
    }

    pub fn title(&self) -> String {
        format!(
            "{} v{}: {}",
            self.change.name.as_deref().unwrap_or(&self.change.slug),
            self.change.version,
            self.change.change
        )
    }
}

#[derive(Template)]
#[template(path = "changes.html")]
struct ChangesPage {
    items: Vec<ChangeItem>,
}

async fn recent(state: &AppState) -> Result<Vec<ChangeItem>, WebError> {
    Ok(queries::recent_changes(&state.pool, 100)
        .await?
        .into_iter()
        .map(|change| ChangeItem { change })
        .collect())
}

async fn changes_page(State(state): State<AppState>) -> Result<Response, WebError> {
    Ok(page(&ChangesPage {
        items: recent(&state).await?,
    })?
    .into_response())
}

#[derive(Template)]
#[template(path = "feed.xml")]
struct ChangesFeed {
    base: String,
    updated: String,
    items: Vec<ChangeItem>,
}

async fn changes_feed(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    let items = recent(&state).await?;
    let base = match &state.static_site {
        // Relative to the feed's own address (the copy's root) unless a base URL was given.
        Some(site) => site
            .base_url
            .as_deref()
            .unwrap_or(".")
            .trim_end_matches('/')
            .to_string(),
        None => format!("http://{}", request_host(&headers)),
    };
    let updated = items
        .first()
        .map_or_else(|| "1970-01-01T00:00:00+00:00".to_string(), ChangeItem::rfc3339);
    let feed = ChangesFeed { base, updated, items }
        .render()
        .map_err(|error| WebError::unavailable("rendering the feed", &error))?;
    Ok(([(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")], feed).into_response())
}

/// The Host header when it is a plausible host name, for absolute links.
fn request_host(headers: &HeaderMap) -> &str {
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| {
            host.bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b".:-[]".contains(&byte))
        })
        .unwrap_or("localhost")
}

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage {
    status: SyncStatus,
    errors: Vec<FileError>,
    lag: Option<f64>,
    semantic: bool,
    /// A live server shows sync time, lag and pending index updates; a static copy cannot know them.
    live: bool,
    /// Change notifications: each webhook's cursor, pending count and newest delivery (live only).
    webhooks: Vec<crate::webhooks::status::WebhookStatus>,
}

async fn status_page(State(state): State<AppState>) -> Result<Response, WebError> {
    let status = queries::sync_status(&state.pool).await?;
    let lag = super::metrics::sync_lag(&state, &status).await;
    let errors = status.errors.clone();
    let webhooks = match state.static_site {
        None => crate::webhooks::status::overview(&state.pool, &state.webhooks).await?,
        Some(_) => Vec::new(),
    };
    Ok(page(&StatusPage {
        status,
        errors,
        lag,
        semantic: state.vectors.is_some(),
        live: state.static_site.is_none(),
        webhooks,
    })?
    .into_response())
}

//! The JSON read API under `/api`, described by the OpenAPI document at
//! `/api/openapi.json`. Pinned answers are immutable and cacheable forever;
//! unpinned ones revalidate by ETag.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use uuid::Uuid;

use super::answers::Answer;
use super::cache::{Freshness, cached, digest};
use super::error::{ErrorBody, WebError};
use super::reads::resolve_stored;
use super::{AppState, Path, Query, Resolved, reference_and_pin, resolve};
use crate::persona::Persona;
use crate::persona::diff::{Change, diff};
use crate::persona::profile::Profile;
use crate::persona::search_filter::{SearchFilter, TraitRange};
use crate::search::{self, Found, Ranking, Semantic};
use crate::store::queries::{self, ChangeRecord, PersonaSummary, Sort};
use crate::vectors::cache::cached_embedding;
use crate::vectors::text::TEXT_FORMAT;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/personas", get(list))
        .route("/personas/search", get(search_personas))
        .route("/personas/{reference}", get(persona))
        .route("/personas/{reference}/versions", get(versions))
        .route("/personas/{reference}/diff", get(persona_diff))
        .route("/personas/{reference}/similar", get(similar))
        .route("/personas/{reference}/embed", get(embedding))
        .route("/personas/{reference}/prompt", get(super::prompt::persona_prompt))
        .route("/personas/{reference}/card", get(super::card::persona_card))
        .route(
            "/personas/{reference}/settings",
            patch(super::settings::update_settings),
        )
        .route("/changes", get(changes))
        .merge(super::experiments::routes())
        .merge(super::profiles::routes())
        .merge(super::label_write::routes())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Persona registry API",
        description = "Personas and every version of them, projected from the registry's git history. \
                       Pin a version with `{id}@{pin}` or `?version={pin}`: a version number, a commit \
                       (7+ hex digits), `sha256:<content hash>`, a label (`production`, or `label:production`) or a git tag \
                       (`tag:v1`; a bare name is a label when the registry defines one, else a tag). The writes, \
                       `PATCH …/settings` and `PUT`/`DELETE …/labels/{label}`, commit to the registry's repository \
                       with a Bearer token."
    ),
    paths(
        list,
        search_personas,
        persona,
        versions,
        persona_diff,
        similar,
        embedding,
        super::prompt::persona_prompt,
        super::card::persona_card,
        super::settings::update_settings,
        changes
    ),
    components(schemas(
        ErrorBody,
        PersonaList,
        PersonaSummary,
        PersonaResponse,
        VersionList,
        VersionEntry,
        DiffResponse,
        DiffSide,
        SearchResponse,
        Ranking,
        Found,
        EmbeddingResponse,
        crate::persona::prompt::PromptRecord,
        crate::persona::prompt::TemplateRef,
        ChangeList,
        ChangeRecord,
        Sort,
        super::write_request::PendingChange,
        crate::persona::settings_patch::PatchProblem
    ))
)]
pub struct ApiDoc;

/// The whole API's document, before [`super::contract::constrain`] adds the constraints.
pub fn api_document() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.merge(super::webhooks::WebhooksDoc::openapi());
    document.merge(super::experiments::ExperimentsDoc::openapi());
    document.merge(super::profiles::ProfilesDoc::openapi());
    document.merge(super::label_write::LabelWriteDoc::openapi());
    document
}

async fn openapi(headers: HeaderMap) -> Response {
    let mut document = serde_json::to_value(api_document()).unwrap_or_default();
    super::contract::constrain(&mut document);
    let document = serde_json::to_string_pretty(&document).unwrap_or_default();
    let validator = format!("openapi-{}", digest(document.as_bytes()));
    cached(
        &headers,
        &validator,
        Freshness::Revalidate,
        ([(axum::http::header::CONTENT_TYPE, "application/json")], document),
    )
}

/// The filters every listing and search accepts.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// Only personas with this domain.
    pub domain: Option<String>,
    /// Only personas with this mode enabled.
    pub mode: Option<String>,
    /// `true`: real people only; `false`: fictional characters only.
    #[serde(default, deserialize_with = "query_value")]
    pub is_real: Option<bool>,
    /// Trait ranges, comma-separated: `ocean.openness=0.6..1,humor.wit=..0.3`.
    pub traits: Option<String>,
}

impl FilterParams {
    pub fn filter(&self) -> Result<SearchFilter, WebError> {
        let traits = match &self.traits {
            Some(text) if !text.trim().is_empty() => text
                .split(',')
                .map(|range| range.trim().parse::<TraitRange>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| WebError::bad_request("bad_filter", error))?,
            _ => Vec::new(),
        };
        Ok(SearchFilter {
            domain: self.domain.clone().filter(|domain| !domain.is_empty()),
            mode: self.mode.clone().filter(|mode| !mode.is_empty()),
            is_real: self.is_real,
            traits,
        })
    }
}

/// A typed query value. Query parameters in a struct that flattens another
/// reach serde as text, so numbers and booleans are parsed here (an empty
/// value, as an HTML form sends for "any", means unset).
pub(super) fn query_value<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|error| serde::de::Error::custom(format!("{text:?}: {error}"))),
    }
}

/// A query value that must be well formed when given: `limit=` (empty) is
/// refused, as the document's integer and boolean types say. (The HTML
/// forms' fields, which send empty values for "any", use [`query_value`].)
pub(super) fn strict_query_value<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: Option<String> = Option::deserialize(deserializer)?;
    match text {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|error| serde::de::Error::custom(format!("{text:?}: {error}"))),
    }
}

pub const MAX_PAGE: i64 = 500;

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(flatten)]
    filter: FilterParams,
    sort: Option<Sort>,
    #[serde(default, deserialize_with = "strict_query_value")]
    limit: Option<i64>,
    #[serde(default, deserialize_with = "strict_query_value")]
    offset: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct PersonaList {
    items: Vec<PersonaSummary>,
    total: i64,
    limit: i64,
    offset: i64,
}

fn page(limit: Option<i64>, offset: Option<i64>) -> Result<(i64, i64), WebError> {
    let limit = limit.unwrap_or(50);
    let offset = offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(WebError::bad_request(
            "bad_limit",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    if offset < 0 {
        return Err(WebError::bad_request("bad_offset", "offset must not be negative"));
    }
    Ok((limit, offset))
}

/// Validator of answers that depend on the whole projection: the last
/// projected commit plus the request, so any new commit changes it.
async fn projection_validator(state: &AppState, request: &str) -> Result<String, WebError> {
    let stamp = super::reads::projection_stamp(state).await?.unwrap_or_default();
    Ok(format!(
        "{}-{}",
        &stamp[..stamp.len().min(12)],
        digest(request.as_bytes())
    ))
}

/// Live personas, filtered, sorted and paginated.
#[utoipa::path(get, path = "/api/personas",
    params(FilterParams,
           ("sort" = Option<Sort>, Query, description = "name (default), updated or created"),
           ("limit" = Option<i64>, Query, description = "1 to 500; default 50"),
           ("offset" = Option<i64>, Query, description = "default 0")),
    responses((status = 200, body = PersonaList), (status = 400, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Query(params): Query<ListParams>,
) -> Result<Response, WebError> {
    let filter = params.filter.filter()?;
    let (limit, offset) = match (&state.static_site, params.limit) {
        // The static mirror's api/personas.json lists every persona: a static host cannot paginate.
        (Some(_), None) => (i64::from(i32::MAX), 0),
        _ => page(params.limit, params.offset)?,
    };
    // The stamp before the data: a commit landing in between then changes the
    // tag of the next answer instead of labelling this one as newer than it is.
    let validator = projection_validator(&state, uri.query().unwrap_or("")).await?;
    let (items, total) =
        queries::list_personas(&state.pool, &filter, params.sort.unwrap_or_default(), limit, offset).await?;
    Ok(cached(
        &headers,
        &validator,
        Freshness::Revalidate,
        Json(PersonaList {
            items,
            total,
            limit,
            offset,
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    /// Words to find in name, description, domains and beliefs, or a
    /// description of what to find.
    q: String,
    ranking: Option<Ranking>,
    /// The older spelling: `semantic=true` is `ranking=semantic`, `false` is
    /// `ranking=text`; `ranking` wins when both are given.
    #[serde(default, deserialize_with = "strict_query_value")]
    semantic: Option<bool>,
    #[serde(flatten)]
    filter: FilterParams,
    #[serde(default, deserialize_with = "strict_query_value")]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SearchResponse {
    query: String,
    /// The ranking that answered.
    ranking: Ranking,
    /// Whether the vector index took part.
    semantic: bool,
    results: Vec<Found>,
}

/// Search over live personas. By default one merged ranking (full text and
/// meaning together) when the server has the model, else full text; the
/// answer's `ranking` says which. `ranking=text` or `ranking=semantic` asks
/// for one side alone.
#[utoipa::path(get, path = "/api/personas/search",
    params(("q" = String, Query, description = "words, or a description of who to find"),
           ("ranking" = Option<Ranking>, Query, description = "merged (the default with a model), text (the default without) or semantic"),
           ("semantic" = Option<bool>, Query, description = "older spelling of ranking: true is semantic, false is text; ignored when ranking is given"),
           FilterParams,
           ("limit" = Option<i64>, Query, description = "1 to 100; default 20")),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody),
              (status = 503, description = "a ranking by meaning without a model", body = ErrorBody)))]
async fn search_personas(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<Response, WebError> {
    let filter = params.filter.filter()?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(WebError::bad_request("bad_limit", "limit must be 1 to 100"));
    }
    // `ranking` is the word for it now; `semantic` stays for clients written
    // before it, and gives way when both are sent (the answer says which ran).
    let ranking = match (params.ranking, params.semantic) {
        (Some(ranking), _) => ranking,
        (None, Some(true)) => Ranking::Semantic,
        (None, Some(false)) => Ranking::Text,
        (None, None) if state.vectors.is_some() => Ranking::Merged,
        (None, None) => Ranking::Text,
    };
    let results = run_search(&state, &params.q, ranking, &filter, limit as usize).await?;
    Ok(Json(SearchResponse {
        query: params.q,
        ranking,
        semantic: ranking != Ranking::Text,
        results,
    })
    .into_response())
}

pub async fn run_search(
    state: &AppState,
    query: &str,
    ranking: Ranking,
    filter: &SearchFilter,
    limit: usize,
) -> Result<Vec<Found>, WebError> {
    let semantic = Semantic {
        embedder: state.vectors.as_ref().map(|vectors| &vectors.embedder),
        index: state.vectors.as_ref().map(|vectors| vectors.index.as_ref()),
    };
    Ok(match ranking {
        Ranking::Text => search::full_text(&state.pool, query, filter, limit).await?,
        Ranking::Semantic => search::semantic(&semantic, query, filter, limit).await?,
        Ranking::Merged => search::hybrid(&state.pool, &semantic, query, filter, limit).await?,
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PersonaParams {
    /// A pin: version number, commit (7+ hex digits), `sha256:…` or tag.
    version: Option<String>,
    /// Apply a registry profile (a config template) on read.
    profile: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PersonaResponse<'a> {
    id: Uuid,
    slug: &'a str,
    version: i32,
    content_hash: &'a str,
    commit: &'a str,
    /// When the commit that first added the persona was made.
    created_at: chrono::DateTime<chrono::Utc>,
    /// When this version's commit was made (for the current version: the last change).
    committed_at: chrono::DateTime<chrono::Utc>,
    author: &'a str,
    /// The id and version as a permanent pin: `id@version` (slugs can be renamed).
    permalink: String,
    /// Whether the request pinned the version (the answer is then immutable).
    pinned: bool,
    retracted: bool,
    /// The profile applied, if any.
    profile: Option<String>,
    #[schema(value_type = Object)]
    persona: PersonaDocument<'a>,
}

/// The document of an answer: parsed, profiled, or the JSON
/// text the sync stored, which serializes to the same bytes.
#[derive(Serialize)]
#[serde(untagged)]
enum PersonaDocument<'a> {
    Parsed(&'a Persona),
    Profiled(Box<Persona>),
    Stored(&'a serde_json::value::RawValue),
}

/// One persona: current, or pinned with `{reference}@{pin}` / `?version=`.
#[utoipa::path(get, path = "/api/personas/{reference}",
    params(("reference" = String, Path, description = "id, slug or former slug, optionally `@pin`"), PersonaParams),
    responses((status = 200, body = PersonaResponse), (status = 304, description = "not modified"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "ambiguous commit prefix", body = ErrorBody),
              (status = 410, description = "deleted", body = ErrorBody)))]
async fn persona(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    Query(params): Query<PersonaParams>,
) -> Result<Response, WebError> {
    let (reference, pin) = reference_and_pin(&reference, params.version.as_deref())?;
    // The hot path of A/B tests: the same pinned request, over and over. The
    // key is what the answer depends on, so stray query parameters cannot
    // multiply the entries.
    let key = format!(
        "persona\u{0}{reference}\u{0}{:?}\u{0}{:?}",
        pin,
        params.profile.as_deref()
    );
    if let Some(answer) = state.answers.get(&key) {
        return Ok(answer.respond(&headers));
    }
    let generation = state.answers.generation();
    let answer = match &params.profile {
        Some(name) => {
            let resolved = resolve(&state, reference, pin).await?;
            let profile = queries::profile(&state.pool, name)
                .await?
                .ok_or_else(|| WebError::not_found(format!("no profile is called {name:?}")))?;
            json_answer(persona_body(&resolved, Some(&profile))?)?
        }
        None => {
            let (resolved, document_json) = resolve_stored(&state, reference, pin).await?;
            match document_json {
                // The hot path of a replica: the stored text goes out as it came in.
                Some(json) => {
                    let stored = serde_json::value::RawValue::from_string(json)
                        .map_err(|error| WebError::unavailable("reading the stored document", &error))?;
                    json_answer(stored_persona_body(&resolved, &stored)?)?
                }
                None => json_answer(persona_body(&resolved, None)?)?,
            }
        }
    };
    let response = answer.respond(&headers);
    state.answers.put(key, answer, generation);
    Ok(response)
}

/// A persona answer, encoded.
fn json_answer((body, validator, freshness): (PersonaResponse<'_>, String, Freshness)) -> Result<Answer, WebError> {
    Ok(Answer {
        body: serde_json::to_vec(&body)
            .map_err(|error| WebError::unavailable("encoding the answer", &error))?
            .into(),
        content_type: "application/json",
        validator,
        freshness,
    })
}

pub(super) fn persona_body<'a>(
    resolved: &'a Resolved,
    profile: Option<&Profile>,
) -> Result<(PersonaResponse<'a>, String, Freshness), WebError> {
    let version = &resolved.version;
    let (Some(document), Some(hash)) = (&version.persona, &version.content_hash) else {
        return Err(WebError::deletion(version.version));
    };
    match profile {
        // A profile can change later, so a profiled answer revalidates even when pinned.
        Some(profile) => {
            let profile_json = serde_json::to_vec(profile).unwrap_or_default();
            Ok((
                response_of(
                    resolved,
                    hash,
                    PersonaDocument::Profiled(Box::new(profile.apply(document))),
                    Some(profile),
                ),
                format!("{hash}+{}:{}", profile.slug.as_str(), digest(&profile_json)),
                Freshness::Revalidate,
            ))
        }
        None => {
            let (validator, freshness) = unprofiled_validator(resolved, hash);
            Ok((
                response_of(resolved, hash, PersonaDocument::Parsed(document), None),
                validator,
                freshness,
            ))
        }
    }
}

/// [`persona_body`] without a profile, for a version whose document is
/// still the stored JSON text.
fn stored_persona_body<'a>(
    resolved: &'a Resolved,
    document: &'a serde_json::value::RawValue,
) -> Result<(PersonaResponse<'a>, String, Freshness), WebError> {
    let Some(hash) = &resolved.version.content_hash else {
        return Err(WebError::deletion(resolved.version.version));
    };
    let (validator, freshness) = unprofiled_validator(resolved, hash);
    Ok((
        response_of(resolved, hash, PersonaDocument::Stored(document), None),
        validator,
        freshness,
    ))
}

/// The ETag and cache policy of an answer without a profile.
fn unprofiled_validator(resolved: &Resolved, hash: &str) -> (String, Freshness) {
    if resolved.immutable {
        (hash.to_string(), Freshness::Immutable)
    } else {
        // The same content can come back as a later version: the version is part of the tag.
        (format!("{hash}@v{}", resolved.version.version), Freshness::Revalidate)
    }
}

fn response_of<'a>(
    resolved: &'a Resolved,
    hash: &'a str,
    persona: PersonaDocument<'a>,
    profile: Option<&Profile>,
) -> PersonaResponse<'a> {
    let version = &resolved.version;
    PersonaResponse {
        id: resolved.persona.id,
        slug: &version.slug,
        version: version.version,
        content_hash: hash,
        commit: &version.commit,
        created_at: resolved.persona.created_at,
        committed_at: version.committed_at,
        author: &version.author_name,
        permalink: format!("{}@{}", resolved.persona.id, version.version),
        pinned: resolved.pinned,
        retracted: version.retracted,
        profile: profile.map(|profile| profile.slug.to_string()),
        persona,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct VersionEntry {
    version: i32,
    change: String,
    slug: String,
    commit: String,
    author_name: String,
    authored_at: chrono::DateTime<chrono::Utc>,
    committed_at: chrono::DateTime<chrono::Utc>,
    message: String,
    content_hash: Option<String>,
    retracted: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
struct VersionList {
    id: Uuid,
    slug: String,
    /// Newest first; retracted versions are listed and marked.
    versions: Vec<VersionEntry>,
}

/// Every version of a persona, newest first.
#[utoipa::path(get, path = "/api/personas/{reference}/versions",
    params(("reference" = String, Path, description = "id, slug or former slug")),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorBody)))]
async fn versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> Result<Response, WebError> {
    let persona = super::reads::find_persona(&state, &reference)
        .await?
        .ok_or_else(|| WebError::no_persona(&reference))?;
    let validator = projection_validator(&state, &format!("versions/{}", persona.id)).await?;
    let versions = super::reads::versions(&state, persona.id).await?;
    let entries = versions
        .iter()
        .map(|version| VersionEntry {
            version: version.version,
            change: version.change.clone(),
            slug: version.slug.clone(),
            commit: version.commit.clone(),
            author_name: version.author_name.clone(),
            authored_at: version.authored_at,
            committed_at: version.committed_at,
            message: version.message.clone(),
            content_hash: version.content_hash.clone(),
            retracted: version.retracted,
        })
        .collect();
    Ok(cached(
        &headers,
        &validator,
        Freshness::Revalidate,
        Json(VersionList {
            id: persona.id,
            slug: persona.slug,
            versions: entries,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DiffParams {
    /// The older pin.
    from: String,
    /// The newer pin (default: the current version).
    to: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DiffSide {
    version: i32,
    content_hash: String,
    commit: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct DiffResponse {
    id: Uuid,
    from: DiffSide,
    to: DiffSide,
    /// Field-level changes, each with a `kind`.
    #[schema(value_type = Vec<Object>)]
    changes: Vec<Change>,
}

/// Field-level differences between two versions.
#[utoipa::path(get, path = "/api/personas/{reference}/diff",
    params(("reference" = String, Path, description = "id, slug or former slug"), DiffParams),
    responses((status = 200, body = DiffResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn persona_diff(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    Query(params): Query<DiffParams>,
) -> Result<Response, WebError> {
    let from = resolve(&state, &reference, Some(&params.from)).await?;
    let to = resolve(&state, &reference, params.to.as_deref()).await?;
    let (from_side, from_persona) = diff_side(&from)?;
    let (to_side, to_persona) = diff_side(&to)?;
    let validator = format!("diff:{}..{}", from_side.content_hash, to_side.content_hash);
    let body = DiffResponse {
        id: from.persona.id,
        changes: diff(from_persona, to_persona),
        from: from_side,
        to: to_side,
    };
    let freshness = if to.pinned {
        Freshness::Immutable
    } else {
        Freshness::Revalidate
    };
    Ok(cached(&headers, &validator, freshness, Json(body)))
}

fn diff_side(resolved: &Resolved) -> Result<(DiffSide, &Persona), WebError> {
    let version = &resolved.version;
    match (&version.persona, &version.content_hash) {
        (Some(persona), Some(hash)) => Ok((
            DiffSide {
                version: version.version,
                content_hash: hash.clone(),
                commit: version.commit.clone(),
            },
            persona,
        )),
        _ => Err(WebError::new(
            StatusCode::GONE,
            "deleted",
            format!(
                "version {} records a deletion and has no content to compare",
                version.version
            ),
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct SimilarParams {
    /// 1 to 50; default 5.
    limit: Option<i64>,
}

/// The personas nearest to this one in the vector index, by the vectors
/// stored there: no model is needed to answer.
#[utoipa::path(get, path = "/api/personas/{reference}/similar",
    params(("reference" = String, Path, description = "id, slug or former slug"), SimilarParams),
    responses((status = 200, body = SearchResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, description = "no vector index here, or the persona is not indexed yet", body = ErrorBody)))]
async fn similar(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    Query(params): Query<SimilarParams>,
) -> Result<Response, WebError> {
    let limit = params.limit.unwrap_or(5);
    if !(1..=50).contains(&limit) {
        return Err(WebError::bad_request("bad_limit", "limit must be 1 to 50"));
    }
    let index = state.index.as_deref();
    let results = search::similar(&state.pool, index, &reference, &SearchFilter::default(), limit as usize).await?;
    Ok(Json(SearchResponse {
        query: reference,
        ranking: Ranking::Semantic,
        semantic: true,
        results,
    })
    .into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
struct EmbeddingResponse {
    id: Uuid,
    slug: String,
    version: i32,
    /// Whether the request pinned the version.
    pinned: bool,
    content_hash: String,
    model_id: String,
    /// The layout of the persona text the model read (see the README).
    text_format: String,
    dimension: usize,
    vector: Vec<f32>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EmbeddingParams {
    /// A pin: version number, commit (7+ hex digits), `sha256:…`, label or tag.
    version: Option<String>,
}

/// The stored embedding of a persona's version (current, or pinned with
/// `{reference}@{pin}` / `?version=`) and the model that made it, read from
/// the embedding cache: no model is needed to answer. A version whose content
/// was never embedded is a 404 that says so.
#[utoipa::path(get, path = "/api/personas/{reference}/embed",
    params(("reference" = String, Path, description = "id, slug or former slug, optionally `@pin`"), EmbeddingParams),
    responses((status = 200, body = EmbeddingResponse), (status = 304, description = "not modified"),
              (status = 400, body = ErrorBody),
              (status = 404, description = "no such persona or version, or the version was never embedded", body = ErrorBody),
              (status = 409, description = "ambiguous commit prefix", body = ErrorBody),
              (status = 410, description = "the version records a deletion", body = ErrorBody)))]
async fn embedding(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    Query(params): Query<EmbeddingParams>,
) -> Result<Response, WebError> {
    let (reference, pin) = reference_and_pin(&reference, params.version.as_deref())?;
    let resolved = resolve(&state, reference, pin).await?;
    let version = &resolved.version;
    let Some(content_hash) = &version.content_hash else {
        return Err(WebError::deletion(version.version));
    };
    let loaded_model = state.vectors.as_ref().map(|vectors| vectors.embedder.model_id());
    let Some(stored) = cached_embedding(&state.pool, content_hash, TEXT_FORMAT, loaded_model).await? else {
        return Err(WebError::new(
            StatusCode::NOT_FOUND,
            "not_embedded",
            format!(
                "version {} of {} ({content_hash}) was never embedded: the index embeds each persona's \
                 current version when it changes{}",
                version.version,
                resolved.persona.slug,
                if resolved.pinned {
                    ""
                } else {
                    ", and this one is still queued"
                }
            ),
        ));
    };
    let validator = format!("{content_hash}@{}@{}", stored.model_id, stored.text_format);
    Ok(cached(
        &headers,
        &validator,
        Freshness::Revalidate,
        Json(EmbeddingResponse {
            id: resolved.persona.id,
            slug: resolved.persona.slug.clone(),
            version: version.version,
            pinned: resolved.pinned,
            content_hash: content_hash.clone(),
            model_id: stored.model_id,
            text_format: stored.text_format,
            dimension: stored.vector.len(),
            vector: stored.vector,
        }),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ChangesParams {
    /// 1 to 500; default 50.
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ChangeList {
    changes: Vec<ChangeRecord>,
}

/// The newest versions across the registry.
#[utoipa::path(get, path = "/api/changes", params(ChangesParams),
    responses((status = 200, body = ChangeList), (status = 400, body = ErrorBody)))]
async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ChangesParams>,
) -> Result<Response, WebError> {
    let (limit, _) = page(params.limit, None)?;
    let validator = projection_validator(&state, &format!("changes/{limit}")).await?;
    let changes = queries::recent_changes(&state.pool, limit).await?;
    Ok(cached(
        &headers,
        &validator,
        Freshness::Revalidate,
        Json(ChangeList { changes }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::model::RESERVED_SLUGS;

    /// A fixed word beside `{reference}` under `/api/personas/` takes the
    /// place of a slug; `check` must refuse a persona of that slug, or the
    /// route would shadow it.
    #[test]
    fn every_word_beside_a_persona_reference_is_a_reserved_slug() {
        let document = api_document();
        let words: Vec<&str> = document
            .paths
            .paths
            .keys()
            .filter_map(|path| path.strip_prefix("/api/personas/"))
            .filter_map(|rest| rest.split('/').next())
            .filter(|segment| !segment.starts_with('{'))
            .collect();
        assert!(words.contains(&"search"), "{words:?}");
        for word in words {
            assert!(RESERVED_SLUGS.contains(&word), "{word:?} is not in RESERVED_SLUGS");
        }
    }
}

//! `PATCH /api/personas/{id}/settings`: the one write. A merge patch over a
//! persona's editable settings becomes a git commit on the registry's branch
//! (or a review branch); the sync projects it like any other commit.
//!
//! Every refusal happens before anything is written, and the commit only
//! lands through a compare-and-swap on the tip it was computed from, so a
//! refused or lost race leaves the repository exactly as it was.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::api::persona_body;
use super::cache::{cached, etag};
use super::error::{ErrorBody, WebError};
use super::{AppState, Path, Resolved, parse_pin};
use crate::access::{ApiToken, Role};
use crate::config::WriteMode;
use crate::git::history::REGISTRY_DIR;
use crate::git::write::{FileChange, RegistryWriter, Tip, WriteError, WriteOutcome};
use crate::persona::diff::{describe, summarize};
use crate::persona::pin::Pin;
use crate::persona::prompt::{PromptTemplate, template_path};
use crate::persona::settings::{RegistrySettings, SETTINGS_FILE, parse_settings};
use crate::persona::settings_patch::{PatchOutcome, PatchProblem, apply_settings_patch};
use crate::persona::{ContentHash, Persona, PersonaId, content_hash, validate_persona};
use crate::store::queries::{self, PinLookupError};

/// Settings patches are a few hundred bytes; anything near this is not one.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a PATCH waits for the in-process sync to project its commit
/// before answering 202 instead of the new version.
const PROJECTION_WAIT: Duration = Duration::from_secs(8);
/// The projection is looked at again on each change notification, and at
/// least this often (the safety net while notifications are not heard).
const PROJECTION_POLL: Duration = Duration::from_millis(250);

/// The answer when the new version is not (yet) in the projection: the
/// commit is made, and the sync, or a review, will bring it in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingChange {
    /// `proposed` (on a review branch), `committed` (not projected yet) or `unchanged`.
    pub status: &'static str,
    pub commit: String,
    pub branch: String,
    /// The persona's content hash with the change applied.
    pub content_hash: String,
}

/// Why a change was not written.
enum Refusal {
    Protected { slug: String },
    NotAtTip { path: String },
    BrokenAtTip { path: String },
    Stale { current: ContentHash },
    Invalid(Vec<PatchProblem>),
    DirtyCheckout { path: String },
}

/// Changes a persona's settings (config, modes, trait values) with a JSON
/// merge patch (RFC 7396), committed to the registry's git repository.
#[utoipa::path(patch, path = "/api/personas/{reference}/settings",
    params(
        ("reference" = String, Path, description = "id, slug or former slug"),
        ("If-Match" = String, Header, description = "the current content hash (the ETag of GET /api/personas/{id}) or a version pin such as @3"),
        ("Authorization" = String, Header, description = "Bearer token with the editor role (maintainer for protected personas)"),
    ),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "e.g. {\"config\": {\"humor_usage\": \"high\"}, \"modes\": {\"Critic\": true}, \"traits\": {\"ocean\": {\"openness\": 0.8}}}"),
    responses(
        (status = 200, description = "the new version (or the current one, when nothing changed)", body = super::api::PersonaResponse),
        (status = 202, description = "committed but not projected by this server yet, or proposed on a review branch", body = PendingChange),
        (status = 400, description = "malformed JSON or If-Match", body = ErrorBody),
        (status = 401, description = "no token, or an unknown one", body = ErrorBody),
        (status = 403, description = "the token's role is too low (protected personas need maintainer)", body = ErrorBody),
        (status = 404, description = "no such persona", body = ErrorBody),
        (status = 409, description = "the persona's file at the branch tip is not where the projection says, or does not validate", body = ErrorBody),
        (status = 412, description = "If-Match names an older content; details.current is the current hash", body = ErrorBody),
        (status = 413, description = "body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "body is not JSON", body = ErrorBody),
        (status = 422, description = "the change is invalid; details.problems lists each with its field path", body = ErrorBody),
        (status = 428, description = "If-Match is missing", body = ErrorBody),
        (status = 503, description = "this server cannot write (no local repository)", body = ErrorBody),
    ))]
pub async fn update_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    body: Body,
) -> Result<Response, WebError> {
    let received = std::time::Instant::now();
    let token = state
        .access
        .require(&headers, Role::Editor, "changing settings")?
        .clone();
    require_json(&headers)?;
    let precondition = if_match(&headers)?;
    let patch = read_patch(body).await?;
    let writer = state.writer.clone().ok_or_else(|| {
        WebError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            "this server has no local registry repository to commit to (it follows a remote); \
             send the change to the server that writes, or propose it as a pull request",
        )
    })?;
    if reference.contains('@') {
        return Err(WebError::bad_request(
            "bad_pin",
            "settings change the current version; name the version you edited in If-Match, not in the address",
        ));
    }
    let resolved = super::resolve(&state.pool, &reference, None).await?;
    let expected = expected_content(&state, resolved.persona.id, &precondition).await?;
    let persona_id = resolved.persona.id;
    let slug = resolved.persona.slug.clone();
    let path = resolved.version.path.clone();
    let author = token.identity.clone();
    let write_target = Arc::clone(&writer);
    let written = tokio::task::spawn_blocking(move || {
        write_change(&write_target, &token, persona_id, &slug, &path, expected, &patch)
    })
    .await
    .map_err(|error| WebError::unavailable("the settings writer", &error))?;
    let (outcome, new_hash) = match written {
        Ok(written) => written,
        Err(WriteError::Refused(refusal)) => return Ok(refused(refusal)),
        Err(WriteError::Contended { branch }) => {
            return Err(WebError::new(
                StatusCode::CONFLICT,
                "contended",
                format!("the branch {branch} kept moving while the change was written; try again"),
            ));
        }
        Err(WriteError::DirtyCheckout { path }) => return Ok(refused(Refusal::DirtyCheckout { path })),
        Err(WriteError::Git(error)) => return Err(WebError::unavailable("the registry repository", &error)),
    };
    if let WriteOutcome::Committed { commit, branch, .. } = &outcome {
        tracing::info!(persona = %resolved.persona.slug, %commit, %branch, author = %author, "settings changed");
    }
    tracing::debug!(elapsed = ?received.elapsed(), "settings change written; waiting for the projection");
    respond(&state, &writer, &resolved, outcome, new_hash).await
}

/// `application/json` or `application/merge-patch+json` (parameters allowed).
fn require_json(headers: &HeaderMap) -> Result<(), WebError> {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/json" | "application/merge-patch+json") => Ok(()),
        other => Err(WebError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be a JSON merge patch (Content-Type: application/merge-patch+json or \
                 application/json), not {}",
                other.unwrap_or("an undeclared type")
            ),
        )),
    }
}

/// What `If-Match` names: a content hash, or a pin to look up.
enum Precondition {
    Content(ContentHash),
    Pin(String),
}

fn if_match(headers: &HeaderMap) -> Result<Precondition, WebError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Err(WebError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "send If-Match with the content hash you edited (the ETag of GET /api/personas/{id}) or its \
             version pin (e.g. @3), so a change made meanwhile is not overwritten",
        ));
    };
    let bad = |reason: &str| WebError::bad_request("bad_if_match", format!("If-Match {value:?}: {reason}"));
    let text = value.to_str().map_err(|_| bad("not text"))?.trim();
    if text.contains(',') || text == "*" {
        return Err(bad("name exactly one version (`*` would overwrite whatever is there)"));
    }
    if text.starts_with("W/") {
        return Err(bad("a weak ETag cannot guard a write"));
    }
    let text = text.trim_matches('"');
    if text.starts_with("sha256:") {
        // An unpinned GET's ETag is `sha256:…@vN`; the content is what counts.
        let (hash, suffix) = text.split_at(text.find(['@', '+']).unwrap_or(text.len()));
        if suffix.starts_with('+') {
            return Err(bad(
                "this ETag is of a profiled view, not of the persona; GET it without ?profile=",
            ));
        }
        return hash
            .parse()
            .map(Precondition::Content)
            .map_err(|error: crate::persona::model::InvalidContentHash| bad(&error.to_string()));
    }
    Ok(Precondition::Pin(text.trim_start_matches('@').to_string()))
}

/// The content hash the client says it edited.
async fn expected_content(
    state: &AppState,
    persona: Uuid,
    precondition: &Precondition,
) -> Result<ContentHash, WebError> {
    let pin = match precondition {
        Precondition::Content(hash) => return Ok(*hash),
        Precondition::Pin(pin) => parse_pin(pin)?,
    };
    let version = match queries::pinned_version(&state.pool, persona, &pin).await {
        Ok(version) => version,
        Err(PinLookupError::Pin(reason)) => {
            return Err(WebError::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                format!("If-Match names no version of this persona: {reason}"),
            ));
        }
        Err(PinLookupError::Database(error)) => return Err(error.into()),
    };
    version
        .content_hash
        .as_deref()
        .and_then(|hash| hash.parse().ok())
        .ok_or_else(|| {
            WebError::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                format!(
                    "version {} is the persona's deletion; it has no settings to edit",
                    version.version
                ),
            )
        })
}

async fn read_patch(body: Body) -> Result<serde_json::Value, WebError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        WebError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a settings patch may be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|error| WebError::bad_request("bad_json", format!("the body is not JSON: {error}")))
}

/// The blocking part: read the tip, check, patch, commit (retried by the
/// writer on a newer tip if the branch moves meanwhile).
fn write_change(
    writer: &RegistryWriter,
    token: &ApiToken,
    persona: Uuid,
    slug: &str,
    path: &str,
    expected: ContentHash,
    patch: &serde_json::Value,
) -> Result<(WriteOutcome, ContentHash), WriteError<Refusal>> {
    let mut new_hash = expected;
    let outcome = writer.write(
        &token.identity,
        |short| format!("settings/{slug}-{short}"),
        |tip: &Tip<'_>| {
            let settings = registry_settings(tip)?;
            if settings.policy.protects(PersonaId(persona), slug) && token.role < Role::Maintainer {
                return Err(Refusal::Protected { slug: slug.to_string() });
            }
            let bytes = tip
                .read(path)
                .map_err(|_| Refusal::NotAtTip { path: path.to_string() })?
                .ok_or_else(|| Refusal::NotAtTip { path: path.to_string() })?;
            let stem = path.rsplit('/').next().unwrap_or(path).trim_end_matches(".toml");
            let parsed = validate_persona(path, &bytes, stem, &settings);
            let current = match parsed.persona {
                Some(current) if current.id.0 == persona => current,
                Some(_) => return Err(Refusal::NotAtTip { path: path.to_string() }),
                None => return Err(Refusal::BrokenAtTip { path: path.to_string() }),
            };
            let current_hash = content_hash(&current);
            if current_hash != expected {
                return Err(Refusal::Stale { current: current_hash });
            }
            let text = String::from_utf8_lossy(&bytes);
            match apply_settings_patch(path, stem, &text, &current, patch, &settings) {
                PatchOutcome::Invalid(problems) => Err(Refusal::Invalid(problems)),
                PatchOutcome::Unchanged => {
                    new_hash = current_hash;
                    Ok(None)
                }
                PatchOutcome::Changed { text, persona, changes } => {
                    // `personas check` also renders the prompt in every enabled mode.
                    let problems = prompt_problems(tip, &persona);
                    if !problems.is_empty() {
                        return Err(Refusal::Invalid(problems));
                    }
                    new_hash = content_hash(&persona);
                    let details: Vec<String> = changes.iter().map(|change| format!("- {}", describe(change))).collect();
                    Ok(Some(FileChange {
                        path: path.to_string(),
                        bytes: text.into_bytes(),
                        message: format!(
                            "Update settings of {}: {}\n\n{}\n\nMade through PATCH /api/personas/{slug}/settings \
                             by a token with the {} role.\n",
                            persona.name,
                            summarize(&changes),
                            details.join("\n"),
                            token.role
                        ),
                    }))
                }
            }
        },
    )?;
    Ok((outcome, new_hash))
}

/// The registry's settings at the tip: the policy and mode vocabulary in
/// force there. Broken settings refuse every write: their fallback is the
/// permissive policy, which protects nobody.
fn registry_settings(tip: &Tip<'_>) -> Result<RegistrySettings, Refusal> {
    let path = format!("{REGISTRY_DIR}/{SETTINGS_FILE}");
    match tip.read(&path) {
        Ok(Some(bytes)) => match parse_settings(&path, &bytes) {
            (settings, problems) if problems.is_empty() => Ok(settings),
            _ => Err(Refusal::BrokenAtTip { path }),
        },
        Ok(None) => Ok(RegistrySettings::permissive()),
        Err(_) => Err(Refusal::NotAtTip { path }),
    }
}

/// Where the new persona fails the registry's prompt template at the tip
/// (a mode it cannot render, a field it needs removed). A template that is
/// broken by itself is the registry's problem, reported on /status, not
/// this change's.
fn prompt_problems(tip: &Tip<'_>, persona: &Persona) -> Vec<PatchProblem> {
    let path = template_path();
    let Ok(Some(bytes)) = tip.read(&path) else {
        return Vec::new();
    };
    let Ok(template) = PromptTemplate::parse(&path, &String::from_utf8_lossy(&bytes)) else {
        return Vec::new();
    };
    template
        .check(&path, [persona])
        .into_iter()
        .map(|diagnostic| PatchProblem {
            path: "modes".to_string(),
            message: diagnostic.to_string(),
            line: None,
            column: None,
        })
        .collect()
}

fn refused(refusal: Refusal) -> Response {
    let error = match refusal {
        Refusal::Protected { slug } => WebError::new(
            StatusCode::FORBIDDEN,
            "protected",
            format!("{slug} is protected by the registry's policy; changing it needs the maintainer role"),
        ),
        Refusal::NotAtTip { path } => WebError::new(
            StatusCode::CONFLICT,
            "moved",
            format!(
                "the persona is no longer at {path} on the branch tip (renamed or deleted since the last sync); \
                 read it again and retry"
            ),
        ),
        Refusal::BrokenAtTip { path } => WebError::new(
            StatusCode::CONFLICT,
            "invalid_at_tip",
            format!("{path} does not pass `personas check` on the branch tip; fix it with a pull request first"),
        ),
        Refusal::DirtyCheckout { path } => WebError::new(
            StatusCode::CONFLICT,
            "dirty_checkout",
            format!(
                "the server's checkout of the branch has uncommitted changes to {path}; committing over them \
                 would hide them, so commit or discard them first (or serve a bare repository)"
            ),
        ),
        Refusal::Stale { current } => {
            let error = WebError::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                format!(
                    "the persona changed since the version you edited; it is now {current}: read it again and reapply"
                ),
            )
            .with_details(serde_json::json!({ "current": current.to_string() }));
            // The current ETag, so a client can reread or retry knowingly.
            return ([(header::ETAG, etag(&current.to_string()))], error).into_response();
        }
        Refusal::Invalid(problems) => WebError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "the change is invalid: {}",
                problems
                    .iter()
                    .map(|problem| if problem.path.is_empty() {
                        problem.message.clone()
                    } else {
                        format!("{}: {}", problem.path, problem.message)
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
        .with_details(serde_json::json!({ "problems": problems })),
    };
    error.into_response()
}

/// 200 with the new version once this server's sync has projected it;
/// 202 with the commit when it is on a review branch or projected elsewhere.
async fn respond(
    state: &AppState,
    writer: &RegistryWriter,
    resolved: &Resolved,
    outcome: WriteOutcome,
    new_hash: ContentHash,
) -> Result<Response, WebError> {
    let (commit, branch, status) = match &outcome {
        WriteOutcome::Unchanged { tip } => (tip.to_string(), None, "unchanged"),
        WriteOutcome::Committed { commit, branch, .. } => (commit.to_string(), Some(branch.clone()), "committed"),
    };
    let pending = |status: &'static str| {
        let mut response = (
            StatusCode::ACCEPTED,
            axum::Json(PendingChange {
                status,
                commit: commit.clone(),
                branch: branch.clone().unwrap_or_else(|| writer.branch.clone()),
                content_hash: new_hash.to_string(),
            }),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    };
    if writer.mode == WriteMode::Branch && status == "committed" {
        return Ok(pending("proposed"));
    }
    if state.following.is_none() {
        return Ok(pending(status));
    }
    let deadline = tokio::time::Instant::now() + PROJECTION_WAIT;
    let wanted = new_hash.to_string();
    // The version current at our commit: later commits (other writers') may
    // already be projected too, so "current" could be past it.
    let at_commit = Pin::Commit(commit.clone());
    loop {
        // Registered before looking, so a change between the look and the wait is not missed.
        let changed = state.answers.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match queries::pinned_version(&state.pool, resolved.persona.id, &at_commit).await {
            Ok(version) if version.content_hash.as_deref() == Some(wanted.as_str()) => {
                let projected = Resolved {
                    persona: resolved.persona.clone(),
                    version,
                    pinned: true,
                    immutable: true,
                };
                let (body, validator, freshness) = persona_body(&projected, None)?;
                let location = format!("/api/personas/{}@{}", projected.persona.slug, projected.version.version);
                let mut response = cached(&HeaderMap::new(), &validator, freshness, axum::Json(body));
                if let Ok(value) = HeaderValue::from_str(&location) {
                    response.headers_mut().insert(header::CONTENT_LOCATION, value);
                }
                return Ok(response);
            }
            // Not projected yet.
            Ok(_) | Err(PinLookupError::Pin(_)) => {}
            Err(PinLookupError::Database(error)) => return Err(error.into()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(pending(status));
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep(PROJECTION_POLL) => {}
        }
    }
}

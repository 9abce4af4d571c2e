//! `PATCH /api/personas/{id}/settings`: a merge patch over a
//! persona's editable settings becomes a git commit on the registry's branch
//! (or a review branch); the sync projects it like any other commit.
//!
//! Every refusal happens before anything is written, and the commit only
//! lands through a compare-and-swap on the tip it was computed from, so a
//! refused or lost race leaves the repository exactly as it was.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use uuid::Uuid;

use super::api::persona_body;
use super::cache::cached;
use super::error::{ErrorBody, WebError};
use super::write_request::{
    PendingChange, Refusal, Written, await_projection, expected_content, if_match, precondition_required, read_json,
    registry_settings, require_json, write_failed, writer,
};
use super::{AppState, Path, Resolved};
use crate::access::{ApiToken, Role};
use crate::git::write::{FileChange, RegistryWriter, Tip, WriteError, WriteOutcome};
use crate::persona::diff::{describe, summarize};
use crate::persona::pin::Pin;
use crate::persona::prompt::{PromptTemplate, template_path};
use crate::persona::settings_patch::{PatchOutcome, PatchProblem, apply_settings_patch};
use crate::persona::{ContentHash, Persona, PersonaId, content_hash, validate_persona};
use crate::store::queries::{self, PinLookupError};

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
    require_json(&headers, "a JSON merge patch")?;
    let precondition = if_match(&headers)?.ok_or_else(|| {
        precondition_required(
            "send If-Match with the content hash you edited (the ETag of GET /api/personas/{id}) or its \
             version pin (e.g. @3), so a change made meanwhile is not overwritten",
        )
    })?;
    let patch = read_json(body, "a settings patch").await?;
    let writer = writer(&state)?;
    if reference.contains('@') {
        return Err(WebError::bad_request(
            "bad_pin",
            "settings change the current version; name the version you edited in If-Match, not in the address",
        ));
    }
    let resolved = super::resolve(&state, &reference, None).await?;
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
        Err(error) => return Ok(write_failed(error)),
    };
    if let WriteOutcome::Committed { commit, branch, .. } = &outcome {
        tracing::info!(persona = %resolved.persona.slug, %commit, %branch, author = %author, "settings changed");
    }
    tracing::debug!(elapsed = ?received.elapsed(), "settings change written; waiting for the projection");
    respond(&state, &writer, &resolved, outcome, new_hash).await
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
                return Err(Refusal::Protected {
                    message: format!(
                        "{slug} is protected by the registry's policy; changing it needs the maintainer role"
                    ),
                });
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

/// 200 with the new version once this server's sync has projected it;
/// 202 with the commit when it is on a review branch or projected elsewhere.
async fn respond(
    state: &AppState,
    writer: &RegistryWriter,
    resolved: &Resolved,
    outcome: WriteOutcome,
    new_hash: ContentHash,
) -> Result<Response, WebError> {
    let written = Written::new(writer, &outcome);
    let pending = || written.pending(Some(new_hash.to_string()));
    if written.proposed {
        return Ok(pending());
    }
    let wanted = new_hash.to_string();
    // The version current at our commit: later commits (other writers') may
    // already be projected too, so "current" could be past it.
    let at_commit = Pin::Commit(written.commit.clone());
    let (pool, persona, at_commit, wanted) = (&state.pool, resolved.persona.id, &at_commit, wanted.as_str());
    let projected = await_projection(state, || {
        Box::pin(async move {
            match queries::pinned_version(pool, persona, at_commit).await {
                Ok(version) if version.content_hash.as_deref() == Some(wanted) => Ok(Some(version)),
                // Not projected yet.
                Ok(_) | Err(PinLookupError::Pin(_)) => Ok(None),
                Err(PinLookupError::Database(error)) => Err(error.into()),
            }
        })
    })
    .await?;
    let Some(version) = projected else {
        return Ok(pending());
    };
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
    Ok(response)
}

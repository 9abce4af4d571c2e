//! `GET /api/personas/{reference}/prompt`: the system prompt the registry's
//! template renders for a persona version, mode and profile. A pinned
//! version renders with the template in force at its commit, so its answer
//! never changes and is cached like every other pinned answer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::answers::Answer;
use super::cache::{Freshness, digest};
use super::error::{ErrorBody, WebError};
use super::{AppState, Path, Query, Resolved, reference_and_pin, resolve};
use crate::persona::prompt::{PROMPT_FILE, PromptError, PromptRecord, PromptTemplate, TemplateRef};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PromptParams {
    /// A pin: version number, commit (7+ hex digits), `sha256:…` or tag.
    pub version: Option<String>,
    /// The mode to render (default: the persona's default mode); it must be enabled.
    pub mode: Option<String>,
    /// Apply a registry profile before rendering.
    pub profile: Option<String>,
}

/// The rendered system prompt, with the hashes an experiment records.
#[utoipa::path(get, path = "/api/personas/{reference}/prompt",
    params(("reference" = String, Path, description = "id, slug or former slug, optionally `@pin`"), PromptParams),
    responses((status = 200, body = PromptRecord), (status = 304, description = "not modified"),
              (status = 400, description = "a malformed pin", body = ErrorBody),
              (status = 404, description = "no such persona, version or profile, a mode the version does not enable, or the registry has no template", body = ErrorBody),
              (status = 409, description = "no mode asked for and the persona has no default mode", body = ErrorBody),
              (status = 410, description = "deleted", body = ErrorBody)))]
pub async fn persona_prompt(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    Query(params): Query<PromptParams>,
) -> Result<Response, WebError> {
    let (reference, pin) = reference_and_pin(&reference, params.version.as_deref())?;
    let key = format!(
        "prompt\u{0}{reference}\u{0}{:?}\u{0}{:?}\u{0}{:?}",
        pin,
        params.mode.as_deref(),
        params.profile.as_deref()
    );
    if let Some(answer) = state.answers.get(&key) {
        return Ok(answer.respond(&headers));
    }
    let generation = state.answers.generation();
    let resolved = resolve(&state, reference, pin).await?;
    let record = render(&state, &resolved, params.mode.as_deref(), params.profile.as_deref()).await?;
    let body = serde_json::to_vec(&record).map_err(|error| WebError::unavailable("encoding the answer", &error))?;
    // A profile can change later, so only an unprofiled answer for a pin that
    // names one version forever is immutable.
    let freshness = if resolved.immutable && params.profile.is_none() {
        Freshness::Immutable
    } else {
        Freshness::Revalidate
    };
    let answer = Answer {
        validator: format!("prompt-{}", digest(&body)),
        body: body.into(),
        content_type: "application/json",
        freshness,
    };
    let response = answer.respond(&headers);
    state.answers.put(key, answer, generation);
    Ok(response)
}

/// Renders the resolved version. Shared with the card export, whose
/// `system_prompt` is this prompt.
pub async fn render(
    state: &AppState,
    resolved: &Resolved,
    mode: Option<&str>,
    profile: Option<&str>,
) -> Result<PromptRecord, WebError> {
    let version = &resolved.version;
    let (Some(persona), Some(hash)) = (&version.persona, &version.content_hash) else {
        return Err(WebError::deletion(version.version));
    };
    let at_commit = resolved.pinned.then_some(version.commit.as_str());
    let stored = super::reads::prompt_template(state, at_commit).await?.ok_or_else(|| {
        WebError::new(
            StatusCode::NOT_FOUND,
            "no_template",
            format!("the registry has no prompt template (registry/{PROMPT_FILE}) for this version"),
        )
    })?;
    let template = PromptTemplate::parse(&format!("registry/{PROMPT_FILE}"), &stored.source).map_err(|diagnostic| {
        WebError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "prompt_template",
            diagnostic.to_string(),
        )
    })?;
    let profile = match profile {
        Some(name) => Some(
            super::reads::profile(state, name)
                .await?
                .ok_or_else(|| WebError::not_found(format!("no profile is called {name:?}")))?,
        ),
        None => None,
    };
    let shown = profile
        .as_ref()
        .map_or_else(|| persona.clone(), |profile| profile.apply(persona));
    let rendered = template
        .render(&shown, mode, profile.as_ref())
        .map_err(|error| match error {
            // The prompt of a mode the version does not enable does not exist;
            // a persona without a default mode cannot answer a request without one.
            PromptError::ModeNotEnabled { .. } => {
                WebError::new(StatusCode::NOT_FOUND, "mode_not_enabled", error.to_string())
            }
            PromptError::NoMode => WebError::new(StatusCode::CONFLICT, "no_mode", error.to_string()),
            PromptError::Render { .. } => {
                WebError::new(StatusCode::INTERNAL_SERVER_ERROR, "prompt_template", error.to_string())
            }
        })?;
    Ok(PromptRecord {
        id: crate::persona::PersonaId(resolved.persona.id),
        slug: version.slug.clone(),
        version: i64::from(version.version),
        content_hash: hash.clone(),
        mode: rendered.mode,
        profile: profile.map(|profile| profile.slug.to_string()),
        template: TemplateRef {
            commit: stored.commit_sha,
            hash: template.hash().to_string(),
        },
        prompt_hash: rendered.hash.to_string(),
        prompt: rendered.text,
    })
}

//! `GET /api/personas/{reference}/card?spec=v2|v3`: a persona version as a
//! Character Card, with the rendered prompt as its `system_prompt` and the
//! whole persona document under `data.extensions` (see `crate::interchange`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::answers::Answer;
use super::cache::{Freshness, digest};
use super::error::{ErrorBody, WebError};
use super::{AppState, Path, Query, reference_and_pin, resolve};
use crate::interchange::{CardMeta, CardSpec, export_card};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CardParams {
    /// `v2` (chara_card_v2, the default) or `v3` (chara_card_v3, with the belief citations in `source`).
    pub spec: Option<String>,
    /// A pin: version number, commit (7+ hex digits), `sha256:…` or tag.
    pub version: Option<String>,
}

/// A persona version as a Character Card V2 or V3.
#[utoipa::path(get, path = "/api/personas/{reference}/card",
    params(("reference" = String, Path, description = "id, slug or former slug, optionally `@pin`"), CardParams),
    responses((status = 200, description = "the card", content_type = "application/json"),
              (status = 304, description = "not modified"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn persona_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(reference): Path<String>,
    Query(params): Query<CardParams>,
) -> Result<Response, WebError> {
    let (reference, pin) = reference_and_pin(&reference, params.version.as_deref())?;
    let spec: CardSpec = params
        .spec
        .as_deref()
        .unwrap_or("v2")
        .parse()
        .map_err(|_| WebError::bad_request("bad_spec", "spec must be v2 or v3"))?;
    let resolved = resolve(&state, reference, pin).await?;
    let Some(persona) = &resolved.version.persona else {
        return Err(WebError::deletion(resolved.version.version));
    };
    // A registry without a template still exports; the card then leaves the
    // prompt to the front-end, as the card specs allow.
    let system_prompt = match super::prompt::render(&state, &resolved, None, None).await {
        Ok(record) => Some(record.prompt),
        Err(error) if error.code == "no_template" => None,
        Err(error) => return Err(error),
    };
    let meta = CardMeta {
        version: u32::try_from(resolved.version.version).unwrap_or_default(),
        system_prompt,
        creator: Some(resolved.version.author_name.clone()),
        created_at: None,
        modified_at: Some(resolved.version.committed_at.timestamp()),
    };
    let body = serde_json::to_vec(&export_card(persona, spec, &meta))
        .map_err(|error| WebError::unavailable("encoding the card", &error))?;
    let answer = Answer {
        validator: format!("card-{}", digest(&body)),
        body: body.into(),
        content_type: "application/json",
        freshness: if resolved.immutable {
            Freshness::Immutable
        } else {
            Freshness::Revalidate
        },
    };
    Ok(answer.respond(&headers))
}

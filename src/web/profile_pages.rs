//! The profile pages: every profile and what it sets, one profile with its
//! history and the personas to apply it to, and a persona with a profile
//! applied (what changed, and the prompt it renders to).

use std::collections::BTreeSet;

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::error::WebError;
use super::experiment_pages::kept_page;
use super::profiles::{ProfileDetail, ProfileSummary, no_profile, profile_detail};
use super::{AppState, Path, reads, resolve};
use crate::persona::Persona;
use crate::persona::diff::{Change, describe, diff};
use crate::persona::prompt::PromptRecord;
use crate::persona::search_filter::SearchFilter;
use crate::store::queries::{PersonaSummary, Sort, VersionRecord};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/profiles", get(profiles_page))
        .route("/profiles/{name}", get(profile_page))
        .route("/p/{slug}/profile/{name}", get(applied_page))
}

/// The profile picker of a persona's pages: `(slug, name)` of every profile.
pub async fn picker(state: &AppState) -> Result<Vec<(String, String)>, WebError> {
    Ok(reads::profiles(state)
        .await?
        .into_iter()
        .map(|profile| (profile.slug.to_string(), profile.name))
        .collect())
}

#[derive(Template)]
#[template(path = "profiles.html")]
struct ProfilesPage {
    profiles: Vec<ProfileSummary>,
}

async fn profiles_page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    kept_page(&state, &headers, "/profiles".into(), async || {
        Ok(ProfilesPage {
            profiles: reads::profiles(&state).await?.iter().map(ProfileSummary::of).collect(),
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "profile.html")]
struct ProfilePage {
    detail: ProfileDetail,
    /// The live personas, each linked with the profile applied (none for a deleted profile).
    personas: Vec<PersonaSummary>,
}

async fn profile_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    kept_page(&state, &headers, format!("/profiles/{name}"), async || {
        // On the site an address that names no profile is simply not there.
        let detail = profile_detail(&state, &name)
            .await
            .map_err(|error| match error.status {
                StatusCode::BAD_REQUEST => no_profile(&name),
                _ => error,
            })?;
        let personas = if detail.deleted {
            Vec::new()
        } else {
            reads::list_personas(&state, &SearchFilter::default(), Sort::Name, i64::MAX, 0)
                .await?
                .0
        };
        Ok(ProfilePage { detail, personas })
    })
    .await
}

#[derive(Template)]
#[template(path = "profile_applied.html")]
struct AppliedPage {
    /// The persona as it reads with the profile applied.
    persona: Persona,
    profile: ProfileSummary,
    version: VersionRecord,
    /// What the profile changed, one line each; empty when the persona already read that way.
    changes: Vec<String>,
    /// The fields it changed (`default_mode`, `config.humor_usage`, `modes.Critic`), to mark them.
    changed: BTreeSet<String>,
    /// The applied persona's prompt in its default mode, or why there is none.
    prompt: Result<PromptRecord, String>,
    /// The picker: every profile, `(slug, name)`.
    profiles: Vec<(String, String)>,
}

impl AppliedPage {
    fn changed(&self, field: &str) -> bool {
        self.changed.contains(field)
    }

    fn mode_changed(&self, mode: &str) -> bool {
        self.changed.contains(&format!("modes.{mode}"))
    }

    fn short<'a>(&self, commit: &'a str) -> &'a str {
        &commit[..commit.len().min(7)]
    }
}

/// The field a change is about, in the form [`AppliedPage::changed`] looks up.
fn changed_field(change: &Change) -> Option<String> {
    match change {
        Change::Field { field, .. } => Some(field.clone()),
        Change::ModeEnabled { mode }
        | Change::ModeDisabled { mode }
        | Change::ModeAdded { mode, .. }
        | Change::ModeRemoved { mode, .. } => Some(format!("modes.{mode}")),
        _ => None,
    }
}

async fn applied_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    Path((slug, name)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let resolved = resolve(&state, &slug, None).await?;
    if resolved.persona.slug != slug {
        // As the persona page does: a former slug or an id lives at the current address.
        let current = format!("/p/{}/profile/{name}", resolved.persona.slug);
        return Ok(Redirect::temporary(&current).into_response());
    }
    kept_page(&state, &headers, uri.path().to_string(), async || {
        let profile = reads::profile(&state, &name).await?.ok_or_else(|| no_profile(&name))?;
        let Some(original) = &resolved.version.persona else {
            return Err(WebError::new(
                StatusCode::GONE,
                "deleted",
                format!("persona {slug:?} was deleted"),
            ));
        };
        let applied = profile.apply(original);
        let differences = diff(original, &applied);
        let prompt = match super::prompt::render(&state, &resolved, None, Some(&name)).await {
            Ok(record) => Ok(record),
            // No template, or no mode to render in: the page says so instead.
            Err(error) if matches!(error.code, "no_template" | "no_mode") => Err(error.message),
            Err(error) => return Err(error),
        };
        Ok(AppliedPage {
            changes: differences.iter().map(describe).collect(),
            changed: differences.iter().filter_map(changed_field).collect(),
            persona: applied,
            profile: ProfileSummary::of(&profile),
            version: resolved.version.clone(),
            prompt,
            profiles: picker(&state).await?,
        })
    })
    .await
}

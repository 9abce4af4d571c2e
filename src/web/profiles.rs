//! Profiles in the read API: which profiles the registry has, what each one
//! sets when applied, and how it changed. Applying one is
//! `GET /api/personas/{reference}?profile={name}` (and `…/prompt?profile=`);
//! these routes are how a client learns the names.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::error::{ErrorBody, WebError};
use super::experiments::kept;
use super::{AppState, Path, reads};
use crate::persona::model::Slug;
use crate::persona::profile::Profile;
use crate::store::profiles::{ProfileChange, ProfileRevision, profile_history};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/profiles", get(all_profiles))
        .route("/profiles/{slug}", get(one_profile))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(all_profiles, one_profile),
    components(schemas(
        ProfileList,
        ProfileSummary,
        ProfileDetail,
        ProfileSets,
        ConfigSets,
        RevisionView,
        ProfileChange
    ))
)]
pub struct ProfilesDoc;

/// The config values a profile overrides; a field it leaves alone is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConfigSets {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub humor_usage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emotional_style: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_style: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voice_enabled: Option<bool>,
}

/// Everything a profile changes in a persona it is applied to.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProfileSets {
    pub config: ConfigSets,
    /// Modes it switches on (`true`) or off (`false`).
    pub modes: BTreeMap<String, bool>,
    /// The mode it makes the default (switching it on), if any. A persona
    /// whose own default mode the profile switches off is left without one.
    pub default_mode: Option<String>,
}

impl ProfileSets {
    pub fn of(profile: &Profile) -> ProfileSets {
        let overrides = &profile.config;
        ProfileSets {
            config: ConfigSets {
                humor_usage: overrides.humor_usage.map(|value| value.to_string()),
                emotional_style: overrides.emotional_style.map(|value| value.to_string()),
                language_style: overrides.language_style.map(|value| value.to_string()),
                voice_enabled: overrides.voice_enabled,
            },
            modes: profile.modes.clone(),
            default_mode: profile.default_mode.clone(),
        }
    }

    /// One `(setting, value)` per thing it sets, in the order the pages list them.
    pub fn lines(&self) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        if let Some(mode) = &self.default_mode {
            lines.push(("default mode".to_string(), mode.clone()));
        }
        let config = &self.config;
        for (field, value) in [
            ("humor usage", config.humor_usage.clone()),
            ("emotional style", config.emotional_style.clone()),
            ("language style", config.language_style.clone()),
            (
                "voice",
                config
                    .voice_enabled
                    .map(|enabled| if enabled { "enabled" } else { "disabled" }.to_string()),
            ),
        ] {
            if let Some(value) = value {
                lines.push((field.to_string(), value));
            }
        }
        for (mode, enabled) in &self.modes {
            lines.push((format!("mode {mode}"), if *enabled { "on" } else { "off" }.to_string()));
        }
        lines
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProfileSummary {
    /// The file's name without `.toml`: what `?profile=` takes.
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub sets: ProfileSets,
}

impl ProfileSummary {
    pub fn of(profile: &Profile) -> ProfileSummary {
        ProfileSummary {
            slug: profile.slug.to_string(),
            name: profile.name.clone(),
            description: profile.description.clone(),
            sets: ProfileSets::of(profile),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProfileList {
    /// The registry's profiles now, by slug.
    pub profiles: Vec<ProfileSummary>,
}

/// One commit that changed a profile.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RevisionView {
    pub change: ProfileChange,
    pub commit: String,
    pub committed_at: DateTime<Utc>,
    pub author_name: String,
    pub author_email: String,
    pub message: String,
    /// The commit is no longer on the followed branch (history was rewritten).
    pub retracted: bool,
    /// The profile's name as the commit left it; `None` when it deleted it.
    pub name: Option<String>,
    /// What the profile set as the commit left it; `None` when it deleted it.
    pub sets: Option<ProfileSets>,
}

impl RevisionView {
    fn of(revision: ProfileRevision) -> RevisionView {
        RevisionView {
            change: revision.change,
            name: revision.profile.as_ref().map(|profile| profile.name.clone()),
            sets: revision.profile.as_ref().map(ProfileSets::of),
            commit: revision.commit,
            committed_at: revision.committed_at,
            author_name: revision.author_name,
            author_email: revision.author_email,
            message: revision.message,
            retracted: revision.retracted,
        }
    }

    pub fn short_commit(&self) -> &str {
        &self.commit[..self.commit.len().min(7)]
    }

    pub fn summary(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProfileDetail {
    pub slug: String,
    /// The registry no longer has the profile (its last revision deleted
    /// it); name, description and `sets` are as they were before.
    pub deleted: bool,
    pub name: String,
    pub description: Option<String>,
    pub sets: ProfileSets,
    /// Every commit that added, changed or deleted the profile, newest first.
    pub history: Vec<RevisionView>,
}

/// Every profile the registry has now, with what each one sets.
#[utoipa::path(get, path = "/api/profiles",
    responses((status = 200, body = ProfileList), (status = 304, description = "not modified")))]
async fn all_profiles(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    kept(&state, &headers, "profiles".into(), async || {
        Ok(ProfileList {
            profiles: reads::profiles(&state).await?.iter().map(ProfileSummary::of).collect(),
        })
    })
    .await
}

/// One profile: what it sets when applied and every change to it. A
/// deleted profile answers with `deleted: true` and its history.
#[utoipa::path(get, path = "/api/profiles/{slug}",
    params(("slug" = String, Path, description = "the profile's slug (its file name without .toml, what `?profile=` takes), e.g. debate-ready")),
    responses((status = 200, body = ProfileDetail), (status = 304, description = "not modified"),
              (status = 400, description = "not a profile name (a slug)", body = ErrorBody),
              (status = 404, description = "no profile of that name was ever in the registry", body = ErrorBody)))]
async fn one_profile(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(slug): Path<String>,
) -> Result<Response, WebError> {
    kept(&state, &headers, format!("profile\u{0}{slug}"), async || {
        profile_detail(&state, &slug).await
    })
    .await
}

/// The profile `name` with its history, for the API and the profile page.
pub async fn profile_detail(state: &AppState, name: &str) -> Result<ProfileDetail, WebError> {
    let slug = name
        .parse::<Slug>()
        .map_err(|error| WebError::bad_request("bad_name", format!("a profile is named by its slug: {error}")))?;
    let current = reads::profile(state, slug.as_str()).await?;
    let history = profile_history(&state.pool, slug.as_str()).await?;
    let deleted = current.is_none();
    // A deleted profile is described as its last revision with content left it.
    let shown = match current {
        Some(profile) => Some(profile),
        None => history.iter().find_map(|revision| revision.profile.clone()),
    };
    let profile = shown.ok_or_else(|| no_profile(name))?;
    let summary = ProfileSummary::of(&profile);
    Ok(ProfileDetail {
        slug: summary.slug,
        deleted,
        name: summary.name,
        description: summary.description,
        sets: summary.sets,
        history: history.into_iter().map(RevisionView::of).collect(),
    })
}

pub fn no_profile(name: &str) -> WebError {
    WebError::not_found(format!("no profile is called {name:?} (registry/profiles/{name}.toml)"))
}

//! What every write through the API shares, whatever file it changes: the
//! JSON body, the `If-Match` guard, the writer this server commits through,
//! the refusals and how they are answered, and the wait for the sync to
//! project the commit. `PATCH …/settings` and `PUT …/labels/{label}` differ
//! only in the file they compute.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use super::cache::etag;
use super::error::WebError;
use super::{AppState, parse_pin};
use crate::git::history::REGISTRY_DIR;
use crate::git::write::{RegistryWriter, Tip, WriteError, WriteOutcome};
use crate::persona::ContentHash;
use crate::persona::settings::{RegistrySettings, SETTINGS_FILE, parse_settings};
use crate::persona::settings_patch::PatchProblem;
use crate::store::queries::{self, PinLookupError};

/// Write bodies are a few hundred bytes; anything near this is not one.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a write waits for the in-process sync to project its commit
/// before answering 202 instead of the result.
const PROJECTION_WAIT: Duration = Duration::from_secs(8);
/// The projection is looked at again on each change notification, and at
/// least this often (the safety net while notifications are not heard).
const PROJECTION_POLL: Duration = Duration::from_millis(250);

/// The answer when the result is not (yet) in the projection: the commit
/// is made, and the sync, or a review, will bring it in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PendingChange {
    /// `proposed` (on a review branch), `committed` (not projected yet), `unchanged`, or
    /// `not_applied` (a label move whose commit is projected, but the sync did not
    /// take the labels file as written: its problems are on `/status`).
    pub status: &'static str,
    pub commit: String,
    pub branch: String,
    /// The persona's content hash with the change applied (for a label: the
    /// content the label now points at; absent when it was removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

/// Why a change was not written. Every refusal is decided on the branch tip
/// before anything is written.
pub enum Refusal {
    /// The policy reserves this change for maintainers; the message says what is protected.
    Protected {
        message: String,
    },
    NotAtTip {
        path: String,
    },
    BrokenAtTip {
        path: String,
    },
    /// The content the client edited is no longer the current one.
    Stale {
        current: ContentHash,
    },
    /// Another precondition failed (412), with the current state if there is one.
    Precondition {
        message: String,
        current: Option<String>,
    },
    Invalid(Vec<PatchProblem>),
    DirtyCheckout {
        path: String,
    },
    /// The repository could not be read (503, like any failure of git).
    Repository {
        message: String,
    },
}

impl Refusal {
    /// One problem with one field of the request.
    pub fn invalid(path: &str, message: impl Into<String>) -> Refusal {
        Refusal::Invalid(vec![PatchProblem {
            path: path.to_string(),
            message: message.into(),
            line: None,
            column: None,
        }])
    }
}

/// `application/json` (or `application/merge-patch+json`, parameters allowed).
pub fn require_json(headers: &HeaderMap, what: &str) -> Result<(), WebError> {
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
                "the body must be {what} (Content-Type: application/json{}), not {}",
                if what.contains("merge patch") {
                    " or application/merge-patch+json"
                } else {
                    ""
                },
                other.unwrap_or("an undeclared type")
            ),
        )),
    }
}

/// The body as JSON, at most [`MAX_BODY_BYTES`].
pub async fn read_json(body: Body, what: &str) -> Result<serde_json::Value, WebError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        WebError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} may be at most {MAX_BODY_BYTES} bytes"),
        )
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|error| WebError::bad_request("bad_json", format!("the body is not JSON: {error}")))
}

/// The writer, or why this server cannot write.
pub fn writer(state: &AppState) -> Result<Arc<RegistryWriter>, WebError> {
    state.writer.clone().ok_or_else(|| {
        WebError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "read_only",
            "this server has no local registry repository to commit to (it follows a remote); \
             send the change to the server that writes, or propose it as a pull request",
        )
    })
}

/// What `If-Match` names: a content hash, or a pin to look up.
pub enum Precondition {
    Content(ContentHash),
    Pin(String),
}

/// The `If-Match` header; `None` when absent (the caller decides whether
/// another precondition, such as `If-None-Match: *`, stands in for it).
pub fn if_match(headers: &HeaderMap) -> Result<Option<Precondition>, WebError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
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
            .map(|hash| Some(Precondition::Content(hash)))
            .map_err(|error: crate::persona::model::InvalidContentHash| bad(&error.to_string()));
    }
    Ok(Some(Precondition::Pin(text.trim_start_matches('@').to_string())))
}

/// The 428 for a write without a precondition.
pub fn precondition_required(message: &str) -> WebError {
    WebError::new(
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
        message.to_string(),
    )
}

/// The content hash a precondition names for `persona`.
pub async fn expected_content(
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
                    "version {} is the persona's deletion; it has no content to guard a change",
                    version.version
                ),
            )
        })
}

/// The registry's settings at the tip: the policy and mode vocabulary in
/// force there. Broken settings refuse every write: their fallback is the
/// permissive policy, which protects nobody.
pub fn registry_settings(tip: &Tip<'_>) -> Result<RegistrySettings, Refusal> {
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

/// The answer to a write that did not commit: a refusal, or a writer failure.
pub fn write_failed(error: WriteError<Refusal>) -> Response {
    match error {
        WriteError::Refused(refusal) => refused(refusal),
        WriteError::Contended { branch } => WebError::new(
            StatusCode::CONFLICT,
            "contended",
            format!("the branch {branch} kept moving while the change was written; try again"),
        )
        .into_response(),
        WriteError::DirtyCheckout { path } => refused(Refusal::DirtyCheckout { path }),
        WriteError::Git(error) => WebError::unavailable("the registry repository", &error).into_response(),
    }
}

fn refused(refusal: Refusal) -> Response {
    let error = match refusal {
        Refusal::Protected { message } => WebError::new(StatusCode::FORBIDDEN, "protected", message),
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
        Refusal::Precondition { message, current } => {
            let error = WebError::new(StatusCode::PRECONDITION_FAILED, "stale", message)
                .with_details(serde_json::json!({ "current": current }));
            return match current {
                Some(current) => ([(header::ETAG, etag(&current))], error).into_response(),
                None => error.into_response(),
            };
        }
        Refusal::Repository { message } => WebError::unavailable("the registry repository", &message),
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

/// The commit and branch a write came to, and the 202 that says so.
pub struct Written {
    pub commit: String,
    pub branch: String,
    /// `committed`, or `unchanged` when nothing had to be written.
    pub status: &'static str,
    /// Whether the commit went on a review branch rather than the followed one.
    pub proposed: bool,
}

impl Written {
    pub fn new(writer: &RegistryWriter, outcome: &WriteOutcome) -> Written {
        match outcome {
            WriteOutcome::Unchanged { tip } => Written {
                commit: tip.to_string(),
                branch: writer.branch.clone(),
                status: "unchanged",
                proposed: false,
            },
            WriteOutcome::Committed { commit, branch, .. } => Written {
                commit: commit.to_string(),
                branch: branch.clone(),
                status: "committed",
                proposed: writer.mode == crate::config::WriteMode::Branch,
            },
        }
    }

    pub fn pending(&self, content_hash: Option<String>) -> Response {
        let status = if self.proposed { "proposed" } else { self.status };
        let mut response = (
            StatusCode::ACCEPTED,
            axum::Json(PendingChange {
                status,
                commit: self.commit.clone(),
                branch: self.branch.clone(),
                content_hash,
            }),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// One look at the projection. Boxed: an async closure's future is not
/// `Send` for every lifetime, which axum's handlers need.
pub type Probe<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<Option<T>, WebError>> + Send + 'a>>;

/// Looks at the projection with `probe` until it answers `Some` (the write
/// is projected) or [`PROJECTION_WAIT`] has passed (`None`). Only a server
/// that runs the sync itself waits; another server's sync is not watched.
pub async fn await_projection<'a, T>(
    state: &AppState,
    mut probe: impl FnMut() -> Probe<'a, T>,
) -> Result<Option<T>, WebError> {
    if state.following.is_none() {
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + PROJECTION_WAIT;
    loop {
        // Registered before looking, so a change between the look and the wait is not missed.
        let changed = state.answers.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(found) = probe().await? {
            return Ok(Some(found));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::select! {
            () = &mut changed => {}
            () = tokio::time::sleep(PROJECTION_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's `Contended` (its own test makes a branch that never holds
    /// still) reaches the client as the documented 409 `contended` (the error
    /// middleware renders the carried error as JSON or HTML).
    #[test]
    fn a_contended_write_is_answered_409_contended() {
        let response = write_failed(WriteError::Contended {
            branch: "main".to_string(),
        });
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let error = response.extensions().get::<WebError>().expect("a WebError to render");
        assert_eq!(error.code, "contended");
        assert!(error.message.contains("main"), "{}", error.message);
    }
}

//! `PUT /api/personas/{ref}/labels/{label}` and its `DELETE`: moving a label
//! is an edit of `registry/labels.toml`, committed through the same writer,
//! with the same compare-and-swap, branch mode and refusals as a settings
//! change. `If-Match` names the version the label pointed at when the client
//! read it (`If-None-Match: *` when the label does not cover the persona
//! yet), so two people moving one label never overwrite each other.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ErrorBody, WebError};
use super::write_request::{
    PendingChange, Refusal, Written, await_projection, expected_content, if_match, precondition_required, read_json,
    registry_settings, require_json, write_failed, writer,
};
use super::{AppState, Path};
use crate::access::{ApiToken, Role};
use crate::git::history::REGISTRY_DIR;
use crate::git::write::{FileChange, RegistryWriter, Tip, WriteError, WriteOutcome};
use crate::persona::labels::{KnownVersion, LABELS_FILE, LabelTarget, parse_labels, target_version};
use crate::persona::labels_edit::{LabelEdit, edit_labels};
use crate::persona::pin::check_label_name;
use crate::persona::settings::names_persona;
use crate::persona::{ContentHash, PersonaId};
use crate::store::labels::{self, LabelPointer};
use crate::store::queries;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/personas/{reference}/labels/{label}",
        put(point_label).delete(remove_label),
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(point_label, remove_label),
    components(schemas(LabelMoveRequest, LabelRemoved, LabelPointer, PendingChange))
)]
pub struct LabelWriteDoc;

/// Where to point the label: exactly one of `version` and `content_hash`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelMoveRequest {
    /// A version number of the persona.
    #[schema(minimum = 1)]
    pub version: Option<u32>,
    /// A content hash (`sha256:` and 64 hex digits): the first version with that content.
    pub content_hash: Option<String>,
    /// Why the label moves; recorded in the commit message.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// The answer to a removal once it is projected.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LabelRemoved {
    pub label: String,
    pub persona_id: Uuid,
    pub slug: String,
    /// The commit that removed the entry (or the tip, when there was nothing to remove).
    pub commit: String,
    pub status: &'static str,
}

const MAX_REASON: usize = 500;

/// Points a label at a version of a persona (adding the persona to the
/// label when `If-None-Match: *` is sent), committed to `registry/labels.toml`.
#[utoipa::path(put, path = "/api/personas/{reference}/labels/{label}",
    params(
        ("reference" = String, Path, description = "id, slug or former slug (no pin)"),
        ("label" = String, Path, description = "a label name: a lowercase letter, then lowercase letters, digits or '-', at most 40, not all hex digits",
            pattern = "^[a-z][a-z0-9-]{0,39}$"),
        ("If-Match" = Option<String>, Header, description = "the content hash the label points at now (the ETag of GET /api/personas/{reference}@{label}) or that version's pin (@3); required unless If-None-Match: * is sent"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: add the persona to the label, only if the label does not cover it yet"),
        ("Authorization" = String, Header, description = "Bearer token with the editor role (maintainer for protected personas and protected labels)"),
    ),
    request_body(content = LabelMoveRequest, content_type = "application/json",
        description = "e.g. {\"version\": 2, \"reason\": \"the concise rewrite won the experiment\"}"),
    responses(
        (status = 200, description = "where the label points now, once projected", body = LabelPointer),
        (status = 202, description = "committed but not projected by this server yet, proposed on a review branch, or projected but not applied (status not_applied: the labels file's problems are on /status)", body = PendingChange),
        (status = 400, description = "malformed JSON, If-Match, label name, or a pin in the address", body = ErrorBody),
        (status = 401, description = "no token, or an unknown one", body = ErrorBody),
        (status = 403, description = "the token's role is too low (protected personas and labels need maintainer)", body = ErrorBody),
        (status = 404, description = "no such persona", body = ErrorBody),
        (status = 409, description = "the labels file at the branch tip does not validate (or names the persona twice), the checkout is dirty, or the branch kept moving", body = ErrorBody),
        (status = 412, description = "the label no longer points where If-Match says (details.current), or already covers the persona (If-None-Match: *)", body = ErrorBody),
        (status = 413, description = "body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "body is not JSON", body = ErrorBody),
        (status = 422, description = "no such version, a deletion, a label named like a git tag; details.problems says which", body = ErrorBody),
        (status = 428, description = "neither If-Match nor If-None-Match: * was sent", body = ErrorBody),
        (status = 503, description = "this server cannot write (no local repository), or the database or the repository is unavailable", body = ErrorBody),
    ))]
pub async fn point_label(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((reference, label)): Path<(String, String)>,
    body: Body,
) -> Result<Response, WebError> {
    let token = state.access.require(&headers, Role::Editor, "moving a label")?.clone();
    require_json(&headers, "a JSON object")?;
    let guard = label_guard(&headers)?;
    let request = move_request(read_json(body, "a label move").await?)?;
    let target = match (&request.version, &request.content_hash) {
        (Some(version), None) => LabelTarget::Version(*version),
        (None, Some(hash)) => LabelTarget::Content(
            hash.parse()
                .map_err(|error| invalid_request("content_hash", format!("content_hash {hash:?}: {error}")))?,
        ),
        _ => {
            return Err(invalid_request(
                "",
                "send exactly one of version (a number) and content_hash (\"sha256:…\")",
            ));
        }
    };
    let subject = LabelSubject::read(&state, &reference, &label, &guard).await?;
    let version = target_version(&target, &subject.versions).map_err(|reason| {
        let field = if matches!(target, LabelTarget::Version(_)) {
            "version"
        } else {
            "content_hash"
        };
        invalid_request(field, format!("{}: {reason}", subject.slug))
    })?;
    let change = Change::Point { target, version };
    commit_label_change(&state, token, subject, change, request.reason).await
}

/// Takes a persona out of a label, committed to `registry/labels.toml`.
#[utoipa::path(delete, path = "/api/personas/{reference}/labels/{label}",
    params(
        ("reference" = String, Path, description = "id, slug or former slug (no pin)"),
        ("label" = String, Path, description = "a label name", pattern = "^[a-z][a-z0-9-]{0,39}$"),
        ("If-Match" = String, Header, description = "the content hash the label points at now, or that version's pin (@3)"),
        ("Authorization" = String, Header, description = "Bearer token with the editor role (maintainer for protected personas and protected labels)"),
    ),
    responses(
        (status = 200, description = "the label no longer covers the persona, once projected", body = LabelRemoved),
        (status = 202, description = "committed but not projected by this server yet, proposed on a review branch, or projected but not applied (status not_applied: the labels file's problems are on /status)", body = PendingChange),
        (status = 400, description = "malformed If-Match or label name, or a pin in the address", body = ErrorBody),
        (status = 401, description = "no token, or an unknown one", body = ErrorBody),
        (status = 403, description = "the token's role is too low", body = ErrorBody),
        (status = 404, description = "no such persona", body = ErrorBody),
        (status = 409, description = "the labels file at the branch tip does not validate (or names the persona twice), the checkout is dirty, or the branch kept moving", body = ErrorBody),
        (status = 412, description = "the label does not point where If-Match says, or does not cover the persona", body = ErrorBody),
        (status = 428, description = "If-Match is missing", body = ErrorBody),
        (status = 503, description = "this server cannot write, or the database is unavailable", body = ErrorBody),
    ))]
pub async fn remove_label(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((reference, label)): Path<(String, String)>,
) -> Result<Response, WebError> {
    let token = state.access.require(&headers, Role::Editor, "moving a label")?.clone();
    let guard = match label_guard(&headers)? {
        Guard::Absent => {
            return Err(WebError::bad_request(
                "bad_if_match",
                "If-None-Match: * guards adding a persona to a label; a removal needs If-Match with where the label points",
            ));
        }
        guard => guard,
    };
    let subject = LabelSubject::read(&state, &reference, &label, &guard).await?;
    commit_label_change(&state, token, subject, Change::Remove, None).await
}

/// What the client says the label's entry is now.
enum Guard {
    /// `If-Match`: the label points at this content.
    Points(super::write_request::Precondition),
    /// `If-None-Match: *`: the label does not cover the persona.
    Absent,
}

/// What the client says the label's entry is now, resolved to content.
enum Expected {
    Points(ContentHash),
    Absent,
}

fn label_guard(headers: &HeaderMap) -> Result<Guard, WebError> {
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .map(|value| value.to_str().map(str::trim));
    match (if_match(headers)?, if_none_match) {
        // RFC 9110 evaluates both: when If-Match holds the label covers the
        // persona, so If-None-Match: * fails; when it does not, If-Match fails.
        (Some(_), Some(_)) => Err(WebError::new(
            StatusCode::PRECONDITION_FAILED,
            "stale",
            "If-Match (the label points at this version) and If-None-Match: * (the label does not cover the persona) \
             cannot both hold; send one of them",
        )),
        (Some(precondition), None) => Ok(Guard::Points(precondition)),
        (None, Some(Ok("*"))) => Ok(Guard::Absent),
        (None, Some(value)) => Err(WebError::bad_request(
            "bad_if_match",
            format!(
                "If-None-Match {:?}: only `*` (the label does not cover the persona yet) guards a label write",
                value.unwrap_or("(not text)")
            ),
        )),
        (None, None) => Err(precondition_required(
            "send If-Match with the content hash the label points at now (the ETag of \
             GET /api/personas/{id}@{label}) or its version pin (e.g. @3), or If-None-Match: * to add the \
             persona to the label, so a move made meanwhile is not overwritten",
        )),
    }
}

fn invalid_request(path: &str, message: impl Into<String>) -> WebError {
    let problem = crate::persona::settings_patch::PatchProblem {
        path: path.to_string(),
        message: message.into(),
        line: None,
        column: None,
    };
    WebError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        format!("the label move is invalid: {}", problem.message),
    )
    .with_details(serde_json::json!({ "problems": [problem] }))
}

fn move_request(body: serde_json::Value) -> Result<LabelMoveRequest, WebError> {
    let request: LabelMoveRequest =
        serde_json::from_value(body).map_err(|error| invalid_request("", format!("the body: {error}")))?;
    if let Some(reason) = &request.reason
        && (reason.chars().count() > MAX_REASON || reason.contains('\0'))
    {
        return Err(invalid_request(
            "reason",
            format!("a reason is at most {MAX_REASON} characters of text"),
        ));
    }
    Ok(request)
}

/// The persona's former slugs that no other persona bears now: a key of the
/// labels file that is another persona's current slug names that persona.
async fn own_former_slugs(state: &AppState, persona: Uuid, current: &str) -> Result<Vec<String>, WebError> {
    let former = queries::former_slugs(&state.pool, persona, current).await?;
    let taken: Vec<String> = sqlx::query_scalar("SELECT slug FROM personas WHERE slug = ANY($1) AND id <> $2")
        .bind(&former)
        .bind(persona)
        .fetch_all(&state.pool)
        .await?;
    Ok(former.into_iter().filter(|slug| !taken.contains(slug)).collect())
}

/// The persona and label a write is about, as the projection knows them.
struct LabelSubject {
    label: String,
    persona: Uuid,
    slug: String,
    name: String,
    /// Every name a labels file may use for the persona: slugs (current and former) and id.
    former_slugs: Vec<String>,
    /// The persona's versions, oldest first, without retracted ones.
    versions: Vec<KnownVersion>,
    expected: Expected,
}

impl LabelSubject {
    async fn read(state: &AppState, reference: &str, label: &str, guard: &Guard) -> Result<LabelSubject, WebError> {
        check_label_name(label).map_err(|reason| WebError::bad_request("bad_label", reason))?;
        if reference.contains('@') {
            return Err(WebError::bad_request(
                "bad_pin",
                "a label write names the persona, not a version of it: put the version in the body",
            ));
        }
        let resolved = super::resolve(state, reference, None).await?;
        let persona = resolved.persona.id;
        let mut versions: Vec<KnownVersion> = queries::versions(&state.pool, persona)
            .await?
            .into_iter()
            .filter(|version| !version.retracted)
            .map(|version| KnownVersion {
                number: version.version as u32,
                content_hash: version.content_hash.and_then(|hash| hash.parse().ok()),
            })
            .collect();
        versions.sort_by_key(|version| version.number);
        let expected = match guard {
            Guard::Points(precondition) => Expected::Points(expected_content(state, persona, precondition).await?),
            Guard::Absent => Expected::Absent,
        };
        Ok(LabelSubject {
            label: label.to_string(),
            persona,
            slug: resolved.persona.slug.clone(),
            name: resolved
                .version
                .persona
                .as_ref()
                .map_or_else(|| resolved.persona.slug.clone(), |persona| persona.name.clone()),
            former_slugs: own_former_slugs(state, persona, &resolved.persona.slug).await?,
            versions,
            expected,
        })
    }

    /// Whether a key of the labels file names this persona, as the sync reads
    /// keys: in any letter case, a former slug only while no one else bears it.
    fn names(&self, key: &str) -> bool {
        let key = key.to_lowercase();
        names_persona(&key, Some(PersonaId(self.persona)), Some(&self.slug)) || self.former_slugs.contains(&key)
    }

    fn newest_version(&self) -> u32 {
        self.versions.last().map_or(0, |version| version.number)
    }

    fn content_of(&self, number: u32) -> Option<ContentHash> {
        self.versions
            .iter()
            .find(|version| version.number == number)
            .and_then(|version| version.content_hash)
    }
}

enum Change {
    Point { target: LabelTarget, version: u32 },
    Remove,
}

async fn commit_label_change(
    state: &AppState,
    token: ApiToken,
    subject: LabelSubject,
    change: Change,
    reason: Option<String>,
) -> Result<Response, WebError> {
    let writer = writer(state)?;
    let subject = Arc::new(subject);
    let change = Arc::new(change);
    let (write_target, write_subject, write_change) = (Arc::clone(&writer), Arc::clone(&subject), Arc::clone(&change));
    let author = token.identity.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        write_label(&write_target, &token, &write_subject, &write_change, reason.as_deref())
    })
    .await
    .map_err(|error| WebError::unavailable("the label writer", &error))?;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return Ok(write_failed(error)),
    };
    if let WriteOutcome::Committed { commit, branch, .. } = &outcome {
        tracing::info!(label = %subject.label, persona = %subject.slug, %commit, %branch, author = %author, "label moved");
    }
    respond(state, &writer, &subject, &change, &outcome).await
}

/// The blocking part: read the tip's labels file, check, edit, commit
/// (recomputed by the writer on a newer tip if the branch moves meanwhile).
fn write_label(
    writer: &RegistryWriter,
    token: &ApiToken,
    subject: &LabelSubject,
    change: &Change,
    reason: Option<&str>,
) -> Result<WriteOutcome, WriteError<Refusal>> {
    let label = subject.label.as_str();
    let path = format!("{REGISTRY_DIR}/{LABELS_FILE}");
    writer.write(
        &token.identity,
        |short| format!("labels/{label}-{}-{short}", subject.slug),
        |tip: &Tip<'_>| {
            let settings = registry_settings(tip)?;
            let maintainer_only = if settings.policy.protects(PersonaId(subject.persona), &subject.slug) {
                Some(format!("{} is protected by the registry's policy", subject.slug))
            } else if settings.policy.protects_label(label) {
                Some(format!("the label {label} is protected by the registry's policy (policy.protected_labels)"))
            } else {
                None
            };
            if let Some(why) = maintainer_only
                && token.role < Role::Maintainer
            {
                return Err(Refusal::Protected {
                    message: format!(
                        "{why}: moving this label needs the maintainer role, and this token's role is {}",
                        token.role
                    ),
                });
            }
            let unreadable = |error: crate::git::GitError| Refusal::Repository {
                message: error.to_string(),
            };
            if tip.has_tag(label).map_err(unreadable)? {
                return Err(Refusal::invalid(
                    "label",
                    format!("{label:?} is the name of a git tag; a bare @{label} pins the tag, so a label may not take its name"),
                ));
            }
            let text = match tip.read(&path) {
                Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| Refusal::BrokenAtTip { path: path.clone() })?,
                Ok(None) => String::new(),
                Err(error) => return Err(unreadable(error)),
            };
            let (parsed, problems) = parse_labels(&path, text.as_bytes());
            let Some(parsed) = parsed.filter(|_| problems.is_empty()) else {
                return Err(Refusal::BrokenAtTip { path: path.clone() });
            };
            let entries: Vec<_> = parsed
                .labels
                .iter()
                .filter(|definition| definition.name == label)
                .flat_map(|definition| definition.entries.iter())
                .filter(|entry| subject.names(&entry.persona))
                .collect();
            // Two lines for one persona fail `check` (and the sync takes the first):
            // which one to edit is for a pull request to decide.
            if entries.len() > 1 {
                return Err(Refusal::BrokenAtTip { path: path.clone() });
            }
            // The entry's key, and the version it names (`None`: it names none the
            // projection has, and the sync left it out, so it is replaced like an absent one).
            let current: Option<(&str, Option<u32>)> = match entries.first() {
                None => None,
                Some(entry) => match target_version(&entry.target, &subject.versions) {
                    Ok(number) => Some((entry.persona.as_str(), Some(number))),
                    Err(_) if matches!(entry.target, LabelTarget::Version(number) if number > subject.newest_version()) => {
                        // Most likely a version the tip has and this server has not projected yet.
                        return Err(Refusal::Precondition {
                            message: format!(
                                "the label {label} for {} names {} at the branch tip, past the newest version \
                                 this server has projected; retry once the sync has caught up",
                                subject.slug, entry.target
                            ),
                            current: None,
                        });
                    }
                    Err(_) => Some((entry.persona.as_str(), None)),
                },
            };
            check_expected(subject, current.and_then(|(_, number)| number))?;
            let (edit, message) = match (change, current) {
                (Change::Point { version, .. }, Some((_, Some(number)))) if *version == number => return Ok(None),
                (Change::Point { target, version }, current) => (
                    LabelEdit::Point {
                        existing_key: current.map(|(key, _)| key),
                        new_key: &subject.slug,
                        target,
                    },
                    match current {
                        Some((_, Some(from))) => {
                            format!("Move label {label} of {}: version {from} to {version}", subject.name)
                        }
                        Some((_, None)) => format!(
                            "Point label {label} of {} at version {version} (its entry named no version)",
                            subject.name
                        ),
                        None => format!("Add {} to label {label} at version {version}", subject.name),
                    },
                ),
                (Change::Remove, Some((key, Some(from)))) => (
                    LabelEdit::Remove { key },
                    format!("Remove {} from label {label} (was version {from})", subject.name),
                ),
                (Change::Remove, _) => not_covered(label, &subject.slug)?,
            };
            let edited = edit_labels(&text, label, edit).map_err(|_| Refusal::BrokenAtTip { path: path.clone() })?;
            let (_, problems) = parse_labels(&path, edited.as_bytes());
            if let Some(problem) = problems.first() {
                return Err(Refusal::invalid("label", problem.to_string()));
            }
            let route = format!("/api/personas/{}/labels/{label}", subject.slug);
            let method = if matches!(change, Change::Remove) { "DELETE" } else { "PUT" };
            let reason = reason.map(|reason| format!("{}\n\n", reason.trim())).unwrap_or_default();
            Ok(Some(FileChange {
                path: path.clone(),
                bytes: edited.into_bytes(),
                message: format!(
                    "{message}\n\n{reason}Made through {method} {route} by a token with the {} role.\n",
                    token.role
                ),
            }))
        },
    )
}

/// A removal of an entry that is not there. [`check_expected`] refuses it
/// first (a removal always carries `If-Match`, and `If-Match` against an
/// absent entry is a 412); this says the same should that ever change.
fn not_covered<T>(label: &str, slug: &str) -> Result<T, Refusal> {
    Err(Refusal::Precondition {
        message: format!("the label {label} does not cover {slug}"),
        current: None,
    })
}

/// Whether the label's entry at the tip (`current`, a version number) is
/// what the client said it was.
fn check_expected(subject: &LabelSubject, current: Option<u32>) -> Result<(), Refusal> {
    let label = &subject.label;
    match (&subject.expected, current) {
        (Expected::Absent, None) => Ok(()),
        (Expected::Absent, Some(number)) => Err(Refusal::Precondition {
            message: format!(
                "the label {label} already covers {} (version {number}); move it with If-Match naming that version",
                subject.slug
            ),
            current: subject.content_of(number).map(|hash| hash.to_string()),
        }),
        (Expected::Points(_), None) => Err(Refusal::Precondition {
            message: format!(
                "the label {label} does not cover {} (any more); to add it, send If-None-Match: * instead of If-Match",
                subject.slug
            ),
            current: None,
        }),
        (Expected::Points(expected), Some(number)) => {
            let current = subject.content_of(number);
            if current.as_ref() == Some(expected) {
                Ok(())
            } else {
                Err(Refusal::Precondition {
                    message: format!(
                        "the label {label} for {} points at version {number} now, not at {expected}: read it again \
                         (GET /api/personas/{}@{label}) and retry",
                        subject.slug, subject.slug
                    ),
                    current: current.map(|hash| hash.to_string()),
                })
            }
        }
    }
}

/// 200 with where the label points once this server's sync has projected
/// the commit; 202 with the commit when it is on a review branch or
/// projected elsewhere.
async fn respond(
    state: &AppState,
    writer: &RegistryWriter,
    subject: &LabelSubject,
    change: &Change,
    outcome: &WriteOutcome,
) -> Result<Response, WebError> {
    let written = Written::new(writer, outcome);
    let target_hash = match change {
        Change::Point { version, .. } => subject.content_of(*version).map(|hash| hash.to_string()),
        Change::Remove => None,
    };
    if written.proposed {
        return Ok(written.pending(target_hash));
    }
    let (pool, commit) = (&state.pool, written.commit.as_str());
    let (persona, label) = (subject.persona, subject.label.as_str());
    // The label as our commit left it: later commits may already be projected too.
    let projected = await_projection(state, || {
        Box::pin(async move {
            let Some(seq) = labels::commit_seq_of(pool, commit).await? else {
                return Ok(None);
            };
            let pointers = labels::label_pointers(pool, Some(seq), Some(persona), Some(label)).await?;
            Ok(Some(pointers.into_iter().next()))
        })
    })
    .await?;
    match (projected, change) {
        (None, _) => Ok(written.pending(target_hash)),
        (Some(Some(pointer)), Change::Point { version, .. }) if pointer.version == *version as i32 => {
            Ok(no_store(axum::Json(pointer)))
        }
        (Some(None), Change::Remove) => Ok(no_store(axum::Json(LabelRemoved {
            label: subject.label.clone(),
            persona_id: subject.persona,
            slug: subject.slug.clone(),
            commit: written.commit.clone(),
            status: if written.status == "unchanged" {
                "unchanged"
            } else {
                "removed"
            },
        }))),
        // The commit is projected but the label does not read as it wrote it:
        // the sync refused the labels file (its problems are on /status). The
        // commit exists, so this is not a refusal: a retry would commit again.
        (Some(_), _) => {
            tracing::warn!(commit = %written.commit, %label, "a label write is projected but not applied; see /status");
            let not_applied = Written {
                status: "not_applied",
                proposed: false,
                ..written
            };
            Ok(not_applied.pending(target_hash))
        }
    }
}

fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

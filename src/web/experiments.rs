//! Labels and experiments in the read API: where each label points and how
//! it moved, each experiment with its variants, and assignment of units.
//! Assignment reads the experiment as it stood at a commit (`?at=`, the
//! projected tip by default) and is a pure function of that and the unit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::answers::{Answer, Generation};
use super::cache::{Freshness, digest};
use super::error::{ErrorBody, WebError};
use super::{AppState, Path, Query, resolve};
use crate::persona::assignment::{AssignError, Assignment, AssignmentPlan, PlannedVariant};
use crate::persona::experiment::{Experiment, Variant, VariantPin};
use crate::persona::pin::Pin;
use crate::store::labels::{self, ExperimentRevision, LabelMove, LabelPointer};
use crate::store::queries;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/labels", get(all_labels))
        .route("/labels/{label}", get(one_label))
        .route("/labels/{label}/history", get(label_history))
        .route("/experiments", get(all_experiments))
        .route("/experiments/{name}", get(one_experiment))
        .route("/experiments/{name}/assign", get(assign))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(all_labels, one_label, label_history, all_experiments, one_experiment, assign),
    components(schemas(
        LabelList,
        LabelSummary,
        LabelPointer,
        LabelHistory,
        LabelMove,
        ExperimentList,
        ExperimentDetail,
        ExperimentRevision,
        VariantView,
        Assignment,
        crate::persona::assignment::AssignedPersona
    ))
)]
pub struct ExperimentsDoc;

/// Answers of this module revalidate: labels and experiments move.
fn json_answer<T: Serialize>(body: &T) -> Result<Answer, WebError> {
    let body = serde_json::to_vec(body).map_err(|error| WebError::unavailable("encoding the answer", &error))?;
    Ok(Answer {
        validator: format!("x-{}", digest(&body)),
        body: body.into(),
        content_type: "application/json",
        freshness: Freshness::Revalidate,
    })
}

/// Serves `key` from memory or computes and keeps it.
pub(super) async fn kept<F, T>(
    state: &AppState,
    headers: &HeaderMap,
    key: String,
    compute: F,
) -> Result<Response, WebError>
where
    F: AsyncFnOnce() -> Result<T, WebError>,
    T: Serialize,
{
    if let Some(answer) = state.answers.get(&key) {
        return Ok(answer.respond(headers));
    }
    let generation = state.answers.generation();
    let answer = json_answer(&compute().await?)?;
    let response = answer.respond(headers);
    state.answers.put(key, answer, generation);
    Ok(response)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LabelSummary {
    pub name: String,
    /// Where the label points, one entry per persona it covers.
    pub personas: Vec<LabelPointer>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LabelList {
    pub labels: Vec<LabelSummary>,
}

/// Groups pointers (sorted by label) into labels.
pub fn group_labels(pointers: Vec<LabelPointer>) -> Vec<LabelSummary> {
    let mut labels: Vec<LabelSummary> = Vec::new();
    for pointer in pointers {
        match labels.last_mut() {
            Some(last) if last.name == pointer.label => last.personas.push(pointer),
            _ => labels.push(LabelSummary {
                name: pointer.label.clone(),
                personas: vec![pointer],
            }),
        }
    }
    labels
}

/// Every label and where it points now (from `registry/labels.toml`).
#[utoipa::path(get, path = "/api/labels", responses((status = 200, body = LabelList)))]
async fn all_labels(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    kept(&state, &headers, "labels".into(), async || {
        let pointers = labels::label_pointers(&state.pool, None, None, None).await?;
        Ok(LabelList {
            labels: group_labels(pointers),
        })
    })
    .await
}

/// One label: the version it names of each persona it covers. Pin with
/// `GET /api/personas/{slug}@{label}`.
#[utoipa::path(get, path = "/api/labels/{label}",
    params(("label" = String, Path, description = "a label name, e.g. production")),
    responses((status = 200, body = LabelSummary), (status = 404, body = ErrorBody)))]
async fn one_label(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(label): Path<String>,
) -> Result<Response, WebError> {
    kept(&state, &headers, format!("label\u{0}{label}"), async || {
        let personas = labels::label_pointers(&state.pool, None, None, Some(&label)).await?;
        if personas.is_empty() {
            return Err(WebError::not_found(format!("the registry has no label {label:?}")));
        }
        Ok(LabelSummary { name: label, personas })
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LabelHistory {
    pub label: String,
    /// Newest first: each commit that moved the label for a persona, with the
    /// version it pointed at before (`from_version`) and after (`to_version`).
    pub moves: Vec<LabelMove>,
}

/// Every move of a label, newest first (retracted commits listed and marked).
#[utoipa::path(get, path = "/api/labels/{label}/history",
    params(("label" = String, Path, description = "a label name")),
    responses((status = 200, body = LabelHistory), (status = 404, body = ErrorBody)))]
async fn label_history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(label): Path<String>,
) -> Result<Response, WebError> {
    kept(&state, &headers, format!("label-history\u{0}{label}"), async || {
        let moves = labels::label_moves(&state.pool, Some(&label), None).await?;
        if moves.is_empty() {
            return Err(WebError::not_found(format!("no label {label:?} was ever defined")));
        }
        Ok(LabelHistory { label, moves })
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExperimentList {
    pub experiments: Vec<ExperimentRevision>,
}

/// Every experiment in the registry now, with its definition.
#[utoipa::path(get, path = "/api/experiments", responses((status = 200, body = ExperimentList)))]
async fn all_experiments(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    kept(&state, &headers, "experiments".into(), async || {
        Ok(ExperimentList {
            experiments: labels::experiments_at(&state.pool, None, None).await?,
        })
    })
    .await
}

/// A variant as it is served now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VariantView {
    pub name: String,
    pub weight: u32,
    /// Its share of units, in percent.
    pub share: f64,
    /// Bucket range `[start, end)` of 0..10000.
    pub buckets: (u32, u32),
    pub persona: String,
    pub pin: String,
    pub mode: Option<String>,
    pub profile: Option<String>,
    /// What it serves now; `None` with `problem` when its pin does not resolve.
    pub version: Option<i64>,
    pub content_hash: Option<String>,
    pub prompt_hash: Option<String>,
    pub problem: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ExperimentDetail {
    pub name: String,
    #[schema(value_type = Object)]
    pub experiment: Experiment,
    pub commit: String,
    pub variants: Vec<VariantView>,
    /// Every revision of the experiment's file, newest first.
    pub history: Vec<ExperimentRevision>,
}

/// What the variants of a plan serve, for pages and the detail answer.
pub fn variant_views(experiment: &Experiment, plan: &AssignmentPlan) -> Vec<VariantView> {
    let ranges = crate::persona::assignment::ranges(&plan.weights);
    let total: u32 = plan.weights.iter().sum();
    experiment
        .variants
        .iter()
        .zip(&plan.variants)
        .zip(ranges)
        .map(|((variant, planned), buckets)| {
            let served = planned.as_ref().ok();
            VariantView {
                name: variant.name.clone(),
                weight: variant.weight,
                share: if total == 0 {
                    0.0
                } else {
                    f64::from(variant.weight) * 100.0 / f64::from(total)
                },
                buckets,
                persona: served.map_or_else(|| variant.persona.clone(), |served| served.slug.clone()),
                pin: variant.pin.to_string(),
                mode: served
                    .map(|served| served.mode.clone())
                    .or_else(|| variant.mode.clone()),
                profile: variant.profile.clone(),
                version: served.map(|served| served.version),
                content_hash: served.map(|served| served.content_hash.clone()),
                prompt_hash: served.map(|served| served.prompt_hash.clone()),
                problem: planned.as_ref().err().map(|(_, reason)| reason.clone()),
            }
        })
        .collect()
}

/// An experiment: its definition, what each variant serves now, its history.
#[utoipa::path(get, path = "/api/experiments/{name}",
    params(("name" = String, Path, description = "the experiment file's name without .toml")),
    responses((status = 200, body = ExperimentDetail), (status = 404, body = ErrorBody)))]
async fn one_experiment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    kept(&state, &headers, format!("experiment\u{0}{name}"), async || {
        experiment_detail(&state, &name).await
    })
    .await
}

pub async fn experiment_detail(state: &AppState, name: &str) -> Result<ExperimentDetail, WebError> {
    let plan = plan(state, name, None).await?;
    let revision = labels::experiments_at(&state.pool, None, Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| no_experiment(name))?;
    let experiment = revision.experiment.clone().ok_or_else(|| no_experiment(name))?;
    Ok(ExperimentDetail {
        name: name.to_string(),
        variants: variant_views(&experiment, &plan),
        commit: revision.commit,
        experiment,
        history: labels::experiment_history(&state.pool, name).await?,
    })
}

fn no_experiment(name: &str) -> WebError {
    WebError::not_found(format!(
        "no experiment is called {name:?} (registry/experiments/{name}.toml)"
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AssignParams {
    /// The unit to assign: a user, session or account id (1 to 256 characters, no control characters).
    pub unit: Option<String>,
    /// Evaluate the experiment (and its labels) as they stood at this commit
    /// (7 to 40 hex digits); default: the newest projected commit.
    pub at: Option<String>,
    /// `prompt`: include the rendered system prompt.
    pub include: Option<String>,
}

/// The variant a unit is served, deterministically: the same unit gets the
/// same answer on every server, and `?at=<commit>` recomputes any past one.
#[utoipa::path(get, path = "/api/experiments/{name}/assign",
    params(("name" = String, Path, description = "the experiment"), AssignParams),
    responses((status = 200, body = Assignment),
              (status = 400, description = "no or bad unit, bad `at` or `include`", body = ErrorBody),
              (status = 404, description = "no such experiment (at that commit)", body = ErrorBody),
              (status = 409, description = "the experiment is not running, or the unit's variant cannot be served",
               body = ErrorBody)))]
async fn assign(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<AssignParams>,
) -> Result<Response, WebError> {
    let unit = params
        .unit
        .as_deref()
        .ok_or_else(|| WebError::bad_request("bad_unit", "pass the unit to assign as ?unit=<id>"))?;
    let include_prompt = match params.include.as_deref() {
        None | Some("") => false,
        Some("prompt") => true,
        Some(other) => {
            return Err(WebError::bad_request(
                "bad_include",
                format!("include={other:?}: the only thing to include is `prompt`"),
            ));
        }
    };
    let plan = plan(&state, &name, params.at.as_deref()).await?;
    let assignment = plan.assign(unit, include_prompt).map_err(|error| match error {
        AssignError::BadUnit(reason) => WebError::bad_request("bad_unit", reason),
        AssignError::NotRunning { .. } => WebError::new(StatusCode::CONFLICT, "not_running", error.to_string()),
        AssignError::Unresolved { .. } => WebError::new(StatusCode::CONFLICT, "unresolved_variant", error.to_string()),
    })?;
    json_answer(&assignment).map(|answer| answer.respond(&headers))
}

/// An experiment's name and the `at` commit asked for (`None`: the tip).
type PlanKey = (String, Option<String>);

/// Plans kept per (experiment, commit) for the generation they were read in.
#[derive(Default)]
pub struct Plans(Mutex<HashMap<PlanKey, (Generation, Arc<AssignmentPlan>)>>);

impl Plans {
    fn get(&self, key: &PlanKey, generation: Generation) -> Option<Arc<AssignmentPlan>> {
        let plans = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        plans
            .get(key)
            .filter(|(kept_at, _)| *kept_at == generation)
            .map(|(_, plan)| Arc::clone(plan))
    }

    fn put(&self, key: PlanKey, generation: Generation, plan: Arc<AssignmentPlan>) {
        let mut plans = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Plans of an older generation are dead weight.
        plans.retain(|_, (kept_at, _)| *kept_at == generation);
        if plans.len() < 1024 {
            plans.insert(key, (generation, plan));
        }
    }
}

/// The experiment `name` as it stood at `at` (the projected tip by
/// default), every variant resolved and rendered. Kept while the projection
/// is unchanged and change notifications are heard, so assigning a unit
/// costs one hash.
pub async fn plan(state: &AppState, name: &str, at: Option<&str>) -> Result<Arc<AssignmentPlan>, WebError> {
    let key = (name.to_string(), at.map(str::to_lowercase));
    let generation = state.answers.generation();
    let listening = state.answers.is_listening();
    if listening && let Some(plan) = state.plans.get(&key, generation) {
        return Ok(plan);
    }
    let plan = Arc::new(build_plan(state, name, at).await?);
    if listening {
        state.plans.put(key, generation, Arc::clone(&plan));
    }
    Ok(plan)
}

async fn build_plan(state: &AppState, name: &str, at: Option<&str>) -> Result<AssignmentPlan, WebError> {
    let commit = match at {
        Some(prefix) => {
            match prefix.parse::<Pin>() {
                Ok(Pin::Commit(_)) => {}
                _ => {
                    return Err(WebError::bad_request(
                        "bad_at",
                        format!("at={prefix:?}: give a commit id (7 to 40 hex digits)"),
                    ));
                }
            }
            queries::commit_by_prefix(&state.pool, &prefix.to_lowercase()).await?
        }
        None => queries::projection_stamp(&state.pool).await?.ok_or_else(|| {
            WebError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_synced",
                "nothing is projected yet",
            )
        })?,
    };
    let seq = labels::commit_seq_of(&state.pool, &commit)
        .await?
        .ok_or_else(|| WebError::not_found(format!("commit {commit} is not projected")))?;
    let revision = labels::experiments_at(&state.pool, Some(seq), Some(name))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| match at {
            Some(_) => WebError::not_found(format!("experiment {name:?} did not exist at commit {commit}")),
            None => no_experiment(name),
        })?;
    let experiment = revision.experiment.ok_or_else(|| no_experiment(name))?;
    let mut variants = Vec::new();
    for variant in &experiment.variants {
        variants.push(
            plan_variant(state, variant, seq)
                .await
                .map_err(|reason| (variant.name.clone(), reason)),
        );
    }
    Ok(AssignmentPlan {
        experiment: experiment.name.clone(),
        status: experiment.status,
        salt: experiment.salt.clone(),
        weights: experiment.weights(),
        experiment_commit: revision.commit,
        at: commit,
        variants,
    })
}

/// Resolves a variant's pin at commit `seq` and renders its prompt. A
/// database failure is an error of the request, not of the variant.
async fn plan_variant(state: &AppState, variant: &Variant, seq: i64) -> Result<PlannedVariant, String> {
    let persona = queries::find_persona(&state.pool, &variant.persona)
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("no persona is called {:?}", variant.persona))?;
    let number = match &variant.pin {
        VariantPin::Version(number) => i64::from(*number),
        VariantPin::Content(hash) => {
            let version = queries::pinned_version(&state.pool, persona.id, &Pin::Content(*hash))
                .await
                .map_err(|error| error.to_string())?;
            i64::from(version.version)
        }
        VariantPin::Label(label) => {
            let pointers = labels::label_pointers(&state.pool, Some(seq), Some(persona.id), Some(label))
                .await
                .map_err(|error| error.to_string())?;
            let pointer = pointers
                .first()
                .ok_or_else(|| format!("label {label:?} does not point at any version of {}", persona.slug))?;
            i64::from(pointer.version)
        }
    };
    let resolved = resolve(state, &persona.id.to_string(), Some(&number.to_string()))
        .await
        .map_err(|error| error.message)?;
    let record = super::prompt::render(state, &resolved, variant.mode.as_deref(), variant.profile.as_deref())
        .await
        .map_err(|error| error.message)?;
    Ok(PlannedVariant::serving(&variant.name, &variant.pin, record))
}

//! The labels and experiments pages: where each label points and how it
//! moved, and each experiment with what its variants serve, how their
//! versions differ and the experiment's own history.

use askama::Template;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;

use super::answers::Answer;
use super::cache::{Freshness, digest};
use super::error::WebError;
use super::experiments::{ExperimentDetail, LabelSummary, experiment_detail, group_labels};
use super::{AppState, Path};
use crate::store::labels::{self, ExperimentRevision, LabelMove};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/labels", get(labels_page))
        .route("/labels/{label}", get(label_page))
        .route("/experiments", get(experiments_page))
        .route("/experiments/{name}", get(experiment_page))
}

/// A page kept in memory until the projection changes, revalidated by its bytes.
pub(super) async fn kept_page<F, T>(
    state: &AppState,
    headers: &HeaderMap,
    key: String,
    compute: F,
) -> Result<Response, WebError>
where
    F: AsyncFnOnce() -> Result<T, WebError>,
    T: Template,
{
    if let Some(answer) = state.answers.get(&key) {
        return Ok(answer.respond(headers));
    }
    let generation = state.answers.generation();
    let body = compute()
        .await?
        .render()
        .map_err(|error| WebError::unavailable("rendering the page", &error))?;
    let answer = Answer {
        validator: format!("page-{}", digest(body.as_bytes())),
        body: body.into(),
        content_type: "text/html; charset=utf-8",
        freshness: Freshness::Revalidate,
    };
    let response = answer.respond(headers);
    state.answers.put(key, answer, generation);
    Ok(response)
}

/// A label move as a page shows it.
pub struct MoveView {
    pub step: LabelMove,
}

impl MoveView {
    pub fn short_commit(&self) -> &str {
        &self.step.commit[..self.step.commit.len().min(7)]
    }

    pub fn date(&self) -> String {
        self.step.committed_at.format("%Y-%m-%d %H:%M").to_string()
    }

    pub fn summary(&self) -> &str {
        self.step.message.lines().next().unwrap_or("")
    }
}

#[derive(Template)]
#[template(path = "labels.html")]
struct LabelsPage {
    labels: Vec<LabelSummary>,
    moves: Vec<MoveView>,
}

async fn labels_page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    kept_page(&state, &headers, "/labels".into(), async || {
        let pointers = labels::label_pointers(&state.pool, None, None, None).await?;
        let mut moves = labels::label_moves(&state.pool, None, None).await?;
        moves.truncate(50);
        Ok(LabelsPage {
            labels: group_labels(pointers),
            moves: moves.into_iter().map(|step| MoveView { step }).collect(),
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "label.html")]
struct LabelPage {
    name: String,
    label: Option<LabelSummary>,
    moves: Vec<MoveView>,
}

async fn label_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(label): Path<String>,
) -> Result<Response, WebError> {
    kept_page(&state, &headers, format!("/labels/{label}"), async || {
        let moves = labels::label_moves(&state.pool, Some(&label), None).await?;
        if moves.is_empty() {
            return Err(WebError::not_found(format!("no label {label:?} was ever defined")));
        }
        let pointers = labels::label_pointers(&state.pool, None, None, Some(&label)).await?;
        Ok(LabelPage {
            label: group_labels(pointers).into_iter().next(),
            name: label,
            moves: moves.into_iter().map(|step| MoveView { step }).collect(),
        })
    })
    .await
}

#[derive(Template)]
#[template(path = "experiments.html")]
struct ExperimentsPage {
    experiments: Vec<ExperimentRevision>,
}

async fn experiments_page(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, WebError> {
    kept_page(&state, &headers, "/experiments".into(), async || {
        Ok(ExperimentsPage {
            experiments: labels::experiments_at(&state.pool, None, None).await?,
        })
    })
    .await
}

/// Two variants of the same persona that serve different versions: the page
/// links their comparison.
pub struct VariantComparison {
    pub slug: String,
    pub from: (String, i64),
    pub to: (String, i64),
}

#[derive(Template)]
#[template(path = "experiment.html")]
struct ExperimentPage {
    detail: ExperimentDetail,
    comparisons: Vec<VariantComparison>,
}

impl ExperimentPage {
    fn short(&self, commit: &str) -> String {
        commit[..commit.len().min(7)].to_string()
    }
}

async fn experiment_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, WebError> {
    kept_page(&state, &headers, format!("/experiments/{name}"), async || {
        let detail = experiment_detail(&state, &name).await?;
        // Each later variant against the first one of the same persona.
        let mut comparisons = Vec::new();
        for (index, variant) in detail.variants.iter().enumerate() {
            let Some(version) = variant.version else { continue };
            let base = detail.variants[..index]
                .iter()
                .find(|other| other.persona == variant.persona && other.version.is_some());
            if let Some(base) = base
                && let Some(base_version) = base.version
                && base_version != version
            {
                comparisons.push(VariantComparison {
                    slug: variant.persona.clone(),
                    from: (base.name.clone(), base_version),
                    to: (variant.name.clone(), version),
                });
            }
        }
        Ok(ExperimentPage { detail, comparisons })
    })
    .await
}

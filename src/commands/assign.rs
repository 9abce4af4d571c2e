//! `personas assign EXPERIMENT UNIT [--at COMMIT]`: the variant a unit is
//! served, computed from git alone (no server, no database). It gives the
//! same answer as `GET /api/experiments/{name}/assign`, because both build
//! the same [`AssignmentPlan`] and assignment is a pure function of it.

use std::path::Path;

use anyhow::{Context, bail};

use super::prompt::render;
use crate::cli::Outcome;
use crate::git::replay::{Replay, tag_names};
use crate::persona::assignment::{AssignmentPlan, PlannedVariant};
use crate::persona::experiment::{Variant, VariantPin};
use crate::persona::labels::{KnownVersion, LabelTarget, target_version};

pub struct AssignCommand<'a> {
    pub repository: &'a Path,
    pub experiment: &'a str,
    pub unit: &'a str,
    pub at: Option<&'a str>,
    pub include_prompt: bool,
}

pub fn run(command: AssignCommand<'_>) -> anyhow::Result<Outcome> {
    let replay = Replay::of(command.repository, "HEAD")?;
    let plan = plan(&replay, command.repository, command.experiment, command.at)?;
    let assignment = plan.assign(command.unit, command.include_prompt)?;
    println!("{}", serde_json::to_string_pretty(&assignment)?);
    Ok(Outcome::Clean)
}

/// The experiment as it stood at `at` (default: `HEAD`), every variant resolved.
pub fn plan(replay: &Replay, repository: &Path, name: &str, at: Option<&str>) -> anyhow::Result<AssignmentPlan> {
    let (commit, position) = replay.position_of(repository, at.unwrap_or("HEAD"))?;
    let change = replay.experiment_at(name, position).with_context(|| match at {
        Some(at) => format!("experiment {name:?} did not exist at commit {at}"),
        None => format!("no experiment is called {name:?} (registry/experiments/{name}.toml)"),
    })?;
    let Some(experiment) = &change.experiment else {
        bail!("experiment {name:?} was removed");
    };
    let tags = tag_names(repository)?;
    let variants = experiment
        .variants
        .iter()
        .map(|variant| {
            plan_variant(replay, repository, variant, position, &tags)
                .map_err(|error| (variant.name.clone(), format!("{error:#}")))
        })
        .collect();
    Ok(AssignmentPlan {
        experiment: experiment.name.clone(),
        status: experiment.status,
        salt: experiment.salt.clone(),
        weights: experiment.weights(),
        experiment_commit: change.commit.id.clone(),
        at: commit,
        variants,
    })
}

fn plan_variant(
    replay: &Replay,
    repository: &Path,
    variant: &Variant,
    position: usize,
    tags: &std::collections::BTreeSet<String>,
) -> anyhow::Result<PlannedVariant> {
    let history = replay.find(&variant.persona)?;
    let known: Vec<KnownVersion> = replay
        .known_persona(&history.id.to_string(), position)
        .map(|known| known.versions)
        .unwrap_or_default();
    let number = match &variant.pin {
        VariantPin::Version(number) => *number,
        VariantPin::Content(hash) => {
            target_version(&LabelTarget::Content(*hash), &known).map_err(anyhow::Error::msg)?
        }
        VariantPin::Label(label) => {
            let (resolved, _) = replay.labels_resolved_at(position, tags);
            resolved
                .iter()
                .find(|entry| entry.label == *label && entry.persona_id == history.id)
                .map(|entry| entry.version)
                .with_context(|| {
                    format!(
                        "label {label:?} does not point at any version of {}",
                        history.latest_slug().unwrap_or_default()
                    )
                })?
        }
    };
    let record = render(
        replay,
        repository,
        &format!("{}@{number}", history.id),
        variant.mode.as_deref(),
        variant.profile.as_deref(),
    )?;
    Ok(PlannedVariant::serving(&variant.name, &variant.pin, record))
}

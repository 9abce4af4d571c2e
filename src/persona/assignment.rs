//! Deterministic experiment assignment: a pure function of the experiment's
//! salt and weights and the unit id, so every server, every process and any
//! later replay give a unit the same variant, with nothing stored.
//!
//! The function, for a client in any language (test vectors in
//! `docs/assignment-vectors.json`):
//! 1. `digest = SHA-256(UTF-8 bytes of salt + ":" + unit)`;
//! 2. `bucket = (first 8 bytes of digest, as a big-endian unsigned 64-bit
//!    integer) mod 10000`, a number in 0..9999;
//! 3. with weights `w1..wn` (whole numbers, total `W`), variant `i` owns the
//!    buckets from `floor(10000 × (w1+…+w(i-1)) / W)` up to, not including,
//!    `floor(10000 × (w1+…+wi) / W)`; the unit gets the variant that owns
//!    its bucket.
//!
//! Because the ranges are laid out in file order from bucket 0, raising the
//! first variant from 10% to 20% (the second from 90% to 80%) keeps every
//! unit of the first 10% where it was and moves exactly the 10% between the
//! old and the new boundary: no assignment scheme moves fewer. (Adding a
//! variant at the end likewise only takes units from the ones before it in
//! proportion to where the boundaries move.)

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::experiment::Status;
use super::model::PersonaId;

/// The number of buckets: a weight resolves to 0.01%.
pub const BUCKETS: u32 = 10_000;

/// The longest unit id accepted: ids are user or session ids, not documents.
pub const MAX_UNIT_CHARS: usize = 256;

/// The bucket of `unit` under `salt`, in `0..BUCKETS`.
pub fn bucket(salt: &str, unit: &str) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(b":");
    hasher.update(unit.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

/// The first bucket past variant `index`'s range (its range's end).
fn boundary(weights: &[u32], index: usize, total: u64) -> u32 {
    let cumulative: u64 = weights[..=index].iter().map(|weight| u64::from(*weight)).sum();
    (u64::from(BUCKETS) * cumulative / total) as u32
}

/// Each variant's bucket range `[start, end)`, in order.
pub fn ranges(weights: &[u32]) -> Vec<(u32, u32)> {
    let total: u64 = weights.iter().map(|weight| u64::from(*weight)).sum();
    if total == 0 {
        return vec![(0, 0); weights.len()];
    }
    let mut start = 0;
    (0..weights.len())
        .map(|index| {
            let end = boundary(weights, index, total);
            let range = (start, end);
            start = end;
            range
        })
        .collect()
}

/// The index of the variant that owns `bucket`; `None` only when every weight is 0.
pub fn variant_for_bucket(weights: &[u32], bucket: u32) -> Option<usize> {
    ranges(weights)
        .iter()
        .position(|(start, end)| (*start..*end).contains(&bucket))
}

/// Why a unit id is refused.
pub fn check_unit(unit: &str) -> Result<(), String> {
    if unit.is_empty() {
        return Err("the unit id is empty; pass the user or session id as unit".to_string());
    }
    // Counted in characters, as the API document's maxLength counts them.
    let length = unit.chars().count();
    if length > MAX_UNIT_CHARS {
        return Err(format!(
            "the unit id is {length} characters long; at most {MAX_UNIT_CHARS} are accepted"
        ));
    }
    if unit.chars().any(char::is_control) {
        return Err("the unit id contains control characters".to_string());
    }
    Ok(())
}

/// The variant index and bucket of `unit`.
pub fn assign(salt: &str, weights: &[u32], unit: &str) -> Result<(usize, u32), String> {
    check_unit(unit)?;
    let bucket = bucket(salt, unit);
    let index = variant_for_bucket(weights, bucket).ok_or("every variant has weight 0")?;
    Ok((index, bucket))
}

/// One variant as an experiment at one commit serves it: its pin resolved
/// to a version and its prompt rendered. Computed once per experiment
/// revision, then every unit costs one hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedVariant {
    pub name: String,
    pub persona_id: PersonaId,
    pub slug: String,
    /// The pin as the experiment writes it (`production`, `4`, `sha256:…`).
    pub pin: String,
    pub version: i64,
    pub content_hash: String,
    pub mode: String,
    pub profile: Option<String>,
    pub prompt_hash: String,
    pub template_hash: String,
    pub prompt: String,
}

impl PlannedVariant {
    /// The variant `name` (pinned as `pin`) serving the rendered `record`.
    /// The server and `personas assign` both build variants here, so their
    /// answers cannot drift apart.
    pub fn serving(name: &str, pin: &super::experiment::VariantPin, record: super::prompt::PromptRecord) -> Self {
        PlannedVariant {
            name: name.to_string(),
            persona_id: record.id,
            slug: record.slug,
            pin: pin.to_string(),
            version: record.version,
            content_hash: record.content_hash,
            mode: record.mode,
            profile: record.profile,
            prompt_hash: record.prompt_hash,
            template_hash: record.template.hash,
            prompt: record.prompt,
        }
    }
}

/// An experiment as it stood at one commit, ready to assign units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentPlan {
    pub experiment: String,
    pub status: Status,
    pub salt: String,
    pub weights: Vec<u32>,
    /// The commit that last changed the experiment's file.
    pub experiment_commit: String,
    /// The commit the experiment, its labels and its versions were read at:
    /// `?at=` this commit (or `--at`) gives the same answer forever.
    pub at: String,
    /// In the experiment's order; a variant whose pin does not resolve at
    /// `at` has its name and why (units that land in it are refused with that reason).
    pub variants: Vec<Result<PlannedVariant, (String, String)>>,
}

/// The persona part of an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AssignedPersona {
    pub id: uuid::Uuid,
    pub slug: String,
}

/// What a unit is served: the answer of `GET /api/experiments/{name}/assign`
/// and of `personas assign`. Record `prompt_hash` (or version and content
/// hash) with every exposure; (`at`, `unit`) recomputes it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Assignment {
    pub experiment: String,
    pub unit: String,
    /// The unit's bucket, 0 to 9999.
    pub bucket: u32,
    pub variant: String,
    pub persona: AssignedPersona,
    pub pin: String,
    pub version: i64,
    pub content_hash: String,
    pub mode: String,
    pub profile: Option<String>,
    pub prompt_hash: String,
    pub template_hash: String,
    pub experiment_commit: String,
    pub at: String,
    /// The rendered system prompt, with `include=prompt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// Why a unit gets no variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    #[error("{0}")]
    BadUnit(String),
    #[error("experiment {experiment:?} is {status} at commit {at}; only a running experiment assigns units")]
    NotRunning {
        experiment: String,
        status: &'static str,
        at: String,
    },
    #[error("variant {variant:?} of experiment {experiment:?} cannot be served: {reason}")]
    Unresolved {
        experiment: String,
        variant: String,
        reason: String,
    },
}

impl AssignmentPlan {
    /// The variant `unit` is served.
    pub fn assign(&self, unit: &str, include_prompt: bool) -> Result<Assignment, AssignError> {
        let (index, bucket) = assign(&self.salt, &self.weights, unit).map_err(AssignError::BadUnit)?;
        if self.status != Status::Running {
            return Err(AssignError::NotRunning {
                experiment: self.experiment.clone(),
                status: self.status.as_str(),
                at: self.at.clone(),
            });
        }
        let variant = self.variants[index]
            .as_ref()
            .map_err(|(name, reason)| AssignError::Unresolved {
                experiment: self.experiment.clone(),
                variant: name.clone(),
                reason: reason.clone(),
            })?;
        Ok(Assignment {
            experiment: self.experiment.clone(),
            unit: unit.to_string(),
            bucket,
            variant: variant.name.clone(),
            persona: AssignedPersona {
                id: variant.persona_id.0,
                slug: variant.slug.clone(),
            },
            pin: variant.pin.clone(),
            version: variant.version,
            content_hash: variant.content_hash.clone(),
            mode: variant.mode.clone(),
            profile: variant.profile.clone(),
            prompt_hash: variant.prompt_hash.clone(),
            template_hash: variant.template_hash.clone(),
            experiment_commit: self.experiment_commit.clone(),
            at: self.at.clone(),
            prompt: include_prompt.then(|| variant.prompt.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Vectors {
        buckets: Vec<BucketVector>,
        assignments: Vec<AssignmentVector>,
    }

    #[derive(serde::Deserialize)]
    struct BucketVector {
        salt: String,
        unit: String,
        bucket: u32,
    }

    #[derive(serde::Deserialize)]
    struct AssignmentVector {
        salt: String,
        weights: Vec<u32>,
        unit: String,
        variant: usize,
    }

    /// The published vectors are what clients in other languages check
    /// themselves against; this keeps the Rust side honest to them.
    #[test]
    fn the_published_test_vectors_hold() {
        let text = include_str!("../../docs/assignment-vectors.json");
        let vectors: Vectors = serde_json::from_str(text).unwrap();
        assert!(vectors.buckets.len() >= 10 && vectors.assignments.len() >= 10);
        for vector in &vectors.buckets {
            assert_eq!(
                bucket(&vector.salt, &vector.unit),
                vector.bucket,
                "{}:{}",
                vector.salt,
                vector.unit
            );
        }
        for vector in &vectors.assignments {
            let (index, _) = assign(&vector.salt, &vector.weights, &vector.unit).unwrap();
            assert_eq!(
                index, vector.variant,
                "{}:{} {:?}",
                vector.salt, vector.unit, vector.weights
            );
        }
    }

    #[test]
    fn the_bucket_is_the_documented_digest_prefix() {
        // Computed by hand from the definition, independently of `bucket`.
        let digest = Sha256::digest(b"exp-1:user-42");
        let number = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(bucket("exp-1", "user-42"), (number % 10_000) as u32);
    }

    #[test]
    fn ranges_cover_every_bucket_once() {
        for weights in [
            vec![50, 50],
            vec![1, 2, 3],
            vec![10, 0, 90],
            vec![1, 1, 1],
            vec![999_999, 1],
        ] {
            let ranges = ranges(&weights);
            assert_eq!(ranges.first().unwrap().0, 0);
            assert_eq!(ranges.last().unwrap().1, BUCKETS);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1, pair[1].0);
            }
        }
        assert_eq!(ranges(&[10, 0, 90])[1], (1000, 1000));
        assert_eq!(variant_for_bucket(&[0, 0], 5), None);
    }

    fn units() -> impl Iterator<Item = String> {
        (0..100_000).map(|index| format!("unit-{index}"))
    }

    #[test]
    fn the_split_follows_the_weights_on_100000_units() {
        for weights in [vec![50, 50], vec![10, 90], vec![20, 30, 50], vec![1, 1, 1, 1]] {
            let mut counts = vec![0u32; weights.len()];
            for unit in units() {
                counts[assign("split-check", &weights, &unit).unwrap().0] += 1;
            }
            let total: u32 = weights.iter().sum();
            for (count, weight) in counts.iter().zip(&weights) {
                let share = f64::from(*count) / 100_000.0;
                let expected = f64::from(*weight) / f64::from(total);
                assert!((share - expected).abs() < 0.01, "{weights:?}: {counts:?}");
            }
        }
    }

    #[test]
    fn raising_a_weight_moves_only_the_minimum_on_100000_units() {
        let before = [10, 90];
        let after = [20, 80];
        let mut moved = 0u32;
        let mut first_kept = 0u32;
        let mut first_before = 0u32;
        for unit in units() {
            let old = assign("reweigh", &before, &unit).unwrap().0;
            let new = assign("reweigh", &after, &unit).unwrap().0;
            if old == 0 {
                first_before += 1;
                // Every unit of the first 10% stays in the first variant.
                assert_eq!(new, 0, "{unit}");
                first_kept += 1;
            }
            if old != new {
                // Units only move into the raised variant.
                assert_eq!((old, new), (1, 0), "{unit}");
                moved += 1;
            }
        }
        assert_eq!(first_kept, first_before);
        // The minimum any scheme must move is the 10 points the weight rose.
        let share = f64::from(moved) / 100_000.0;
        assert!((share - 0.10).abs() < 0.01, "moved {share}");

        // A three-way experiment whose last two variants trade weight leaves the first alone.
        let mut moved = 0u32;
        for unit in units() {
            let old = assign("three", &[30, 30, 40], &unit).unwrap().0;
            let new = assign("three", &[30, 40, 30], &unit).unwrap().0;
            if old != new {
                assert_eq!((old, new), (2, 1), "{unit}");
                moved += 1;
            }
        }
        assert!((f64::from(moved) / 100_000.0 - 0.10).abs() < 0.01);
    }

    #[test]
    fn bad_unit_ids_are_refused() {
        assert!(assign("s", &[1, 1], "").unwrap_err().contains("empty"));
        assert!(assign("s", &[1, 1], &"x".repeat(300)).unwrap_err().contains("256"));
        assert!(assign("s", &[1, 1], "a\nb").unwrap_err().contains("control"));
    }
}

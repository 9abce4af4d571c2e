//! Near duplicates for `personas review`: a persona a pull request adds
//! whose name or slug is close to an existing one's, or whose embedding is.
//!
//! The thresholds were chosen on the sample registry (see
//! `tests/review.rs`, which keeps them honest): no two of its personas come
//! near either, while a copy of one with a new name, id and a reworded
//! sentence is caught by meaning.

use std::path::Path;

use serde::Serialize;

use crate::persona::Persona;
use crate::vectors::embed::Embedder;
use crate::vectors::setup::resolve_model_dir;
use crate::vectors::text::embedding_text;

/// Character-level similarity (similar's ratio: 2·matches / total length)
/// of two names or slugs at or above which they read as the same persona.
/// Measured on the sample registry: its closest pair is 0.615
/// (andrew-carnegie ~ marie-curie); `marie-curie-2` against `marie-curie` is 0.92.
pub const NAME_SIMILARITY: f32 = 0.85;

/// Cosine similarity of the embeddings at or above which a new persona is
/// reported as a near duplicate. Measured with the default model on the
/// sample registry: its most similar distinct pair is 0.608
/// (albert-einstein ~ charles-darwin), while a copy of marie-curie under a
/// new name with one sentence added scores 0.893. 0.80 sits between, with
/// room on both sides.
pub const EMBEDDING_SIMILARITY: f32 = 0.80;

#[derive(Debug, Clone, Serialize)]
pub struct NearDuplicate {
    /// The existing persona's slug.
    pub of: String,
    /// `name`, `slug` or `meaning`.
    pub by: &'static str,
    pub similarity: f32,
}

/// Names and slugs close to an existing persona's.
pub fn by_name(new: &Persona, existing: &[&Persona]) -> Vec<NearDuplicate> {
    let mut found = Vec::new();
    for other in existing.iter().filter(|other| other.id != new.id) {
        let name = text_similarity(&new.name.to_lowercase(), &other.name.to_lowercase());
        let slug = text_similarity(new.slug.as_str(), other.slug.as_str());
        let (by, similarity) = if name >= slug { ("name", name) } else { ("slug", slug) };
        if similarity >= NAME_SIMILARITY {
            found.push(NearDuplicate {
                of: other.slug.to_string(),
                by,
                similarity,
            });
        }
    }
    found
}

pub fn text_similarity(a: &str, b: &str) -> f32 {
    similar::TextDiff::from_chars(a, b).ratio()
}

/// The model, when one is provisioned (`PERSONAS_EMBED_MODEL_DIR` or the
/// default cache); `Err` says why meaning could not be compared.
pub fn load_model() -> Result<Embedder, String> {
    let configured = std::env::var_os("PERSONAS_EMBED_MODEL_DIR").map(std::path::PathBuf::from);
    let directory = resolve_model_dir(configured.as_deref())
        .ok_or_else(|| "no embedding model is provisioned (run scripts/fetch-model)".to_string())?;
    let library = std::env::var_os("PERSONAS_ORT_LIBRARY").map(std::path::PathBuf::from);
    Embedder::load(&directory, library.as_deref().map(Path::new)).map_err(|error| error.to_string())
}

/// Existing personas whose embedding is close to `new`'s.
pub fn by_meaning(
    embedder: &Embedder,
    new: &[&Persona],
    existing: &[&Persona],
) -> Result<Vec<Vec<NearDuplicate>>, String> {
    let texts: Vec<String> = new
        .iter()
        .chain(existing)
        .map(|persona| embedding_text(persona))
        .collect();
    let vectors = embedder.embed(&texts).map_err(|error| error.to_string())?;
    let (new_vectors, existing_vectors) = vectors.split_at(new.len());
    Ok(new
        .iter()
        .zip(new_vectors)
        .map(|(persona, vector)| {
            existing
                .iter()
                .zip(existing_vectors)
                .filter(|(other, _)| other.id != persona.id)
                .map(|(other, other_vector)| NearDuplicate {
                    of: other.slug.to_string(),
                    by: "meaning",
                    similarity: cosine(vector, other_vector),
                })
                .filter(|found| found.similarity >= EMBEDDING_SIMILARITY)
                .collect()
        })
        .collect())
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 { 0.0 } else { dot / denominator }
}

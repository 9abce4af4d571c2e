//! The vector side of the registry: persona embeddings for semantic search
//! and similar personas.

pub mod embed;
pub mod text;

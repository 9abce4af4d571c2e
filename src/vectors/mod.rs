//! The vector side of the registry: persona embeddings kept in a vector
//! index (embedded qdrant-edge or a Qdrant server) for semantic search and
//! similar personas.

pub mod cache;
pub mod edge;
pub mod embed;
pub mod exact;
pub mod index;
pub mod projector;
pub mod server;
pub mod setup;
pub mod text;

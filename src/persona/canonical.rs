//! The canonical JSON form of a persona and its content hash.
//!
//! Canonical JSON is serde_json's output of the typed persona: object keys
//! come out sorted (serde_json's map is a BTreeMap), numbers in their shortest
//! round-trip form, optional fields as `null`. Because it is built from the
//! typed value and not from the file's text, layout, comments, key order and
//! spelled-out defaults cannot change it.

use sha2::{Digest, Sha256};

use super::model::{ContentHash, Persona};

/// The persona as a JSON value with sorted keys.
pub fn canonical_value(persona: &Persona) -> serde_json::Value {
    serde_json::to_value(persona).expect("a persona always serializes to JSON")
}

/// The exact bytes that are hashed.
pub fn canonical_json(persona: &Persona) -> String {
    // Going through `Value` is what sorts the keys of structs as well as maps.
    serde_json::to_string(&canonical_value(persona)).expect("a JSON value always serializes")
}

pub fn content_hash(persona: &Persona) -> ContentHash {
    ContentHash(Sha256::digest(canonical_json(persona).as_bytes()).into())
}

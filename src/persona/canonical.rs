//! The canonical JSON form of a persona and its content hash.
//!
//! Canonical JSON is the typed persona written with every object's keys in
//! sorted order, numbers in their shortest round-trip form and optional
//! fields as `null`. Because it is built from the typed value and not from
//! the file's text, layout, comments, key order and spelled-out defaults
//! cannot change it. Keys are sorted here rather than left to serde_json's
//! map: any dependency may switch that map to insertion order (the
//! `preserve_order` feature is unified across the build), and content hashes
//! are pinned by users, so they must not depend on the dependency graph.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::model::{ContentHash, Persona};

/// The persona as a JSON value (for storing as JSONB; its key order is
/// irrelevant there).
pub fn canonical_value(persona: &Persona) -> serde_json::Value {
    serde_json::to_value(persona).expect("a persona always serializes to JSON")
}

/// The exact bytes that are hashed.
pub fn canonical_json(persona: &Persona) -> String {
    let mut out = String::with_capacity(2048);
    write_sorted(&canonical_value(persona), &mut out);
    out
}

/// Compact JSON with the keys of every object sorted by their UTF-8 bytes.
pub fn write_sorted(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_scalar(&serde_json::Value::String(key.clone()), out);
                out.push(':');
                write_sorted(item, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &serde_json::Value, out: &mut String) {
    // serde_json's own escaping and shortest-form numbers.
    let _ = write!(out, "{value}");
}

pub fn content_hash(persona: &Persona) -> ContentHash {
    ContentHash(Sha256::digest(canonical_json(persona).as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_whatever_order_the_map_keeps() {
        // Parsed from text whose keys are out of order: with serde_json's
        // `preserve_order` on, the map keeps that order and only explicit
        // sorting yields the canonical form.
        let value: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":true,"y":null}],"c":"é\"x"},"A":0.5}"#).unwrap();
        let mut out = String::new();
        write_sorted(&value, &mut out);
        assert_eq!(out, r#"{"A":0.5,"a":{"c":"é\"x","d":[{"y":null,"z":true}]},"b":1}"#);
    }
}

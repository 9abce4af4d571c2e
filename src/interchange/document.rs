//! The registry's own JSON document for one version of a persona: the
//! canonical persona plus which version it is. `personas export --format json`
//! prints it, and every exported card carries it under
//! `data.extensions["persona-registry"]` (the card specs ask applications to
//! namespace their extension keys and to keep unknown ones), which is what
//! lets a card come back into the registry without loss.

use serde::{Deserialize, Serialize};

use crate::persona::canonical::content_hash;
use crate::persona::{ContentHash, Persona, PersonaId};

/// The namespaced key under a card's `data.extensions`.
pub const EXTENSION_KEY: &str = "persona-registry";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonaDocument {
    pub id: PersonaId,
    /// The persona's version number in the registry's history (1, 2, 3 …).
    pub version: u32,
    /// The content hash of `persona` as recorded at export.
    pub content_hash: ContentHash,
    /// The persona in its canonical JSON form.
    pub persona: Persona,
}

impl PersonaDocument {
    pub fn new(persona: &Persona, version: u32) -> Self {
        PersonaDocument {
            id: persona.id,
            version,
            content_hash: content_hash(persona),
            persona: persona.clone(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a persona document always serializes to JSON")
    }

    /// Reads a document back; the message says which field is wrong.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        PersonaDocument::deserialize(value).map_err(|error| error.to_string())
    }

    /// Whether the recorded hash still matches the persona, i.e. nobody
    /// edited the document after it was exported.
    pub fn is_intact(&self) -> bool {
        content_hash(&self.persona) == self.content_hash
    }
}

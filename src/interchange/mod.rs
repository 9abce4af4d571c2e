//! Personas travelling to and from other tools: Character Cards (V2 and V3)
//! out, and cards, PNG cards and the seed documents' JSON shapes in.
//!
//! Export never loses anything: the full persona rides along inside the card
//! (see [`document`]), so exporting and importing one of our own personas
//! gives back the same content hash. Import of foreign data is a mapping
//! with gaps; it reports every gap as a note instead of guessing silently,
//! and its result always passes the registry's one validator.

pub mod card;
pub mod document;
pub mod draft;
pub mod from_card;
pub mod from_seed;
pub mod import;
pub mod png_text;
pub mod toml_writer;

pub use card::{CardMeta, CardSpec, export_card, personality_text};
pub use document::{EXTENSION_KEY, PersonaDocument};
pub use import::{ImportError, ImportOptions, Imported, MAX_IMPORT_BYTES, SourceFormat, import_persona};
pub use toml_writer::{TomlWriteError, persona_to_toml};

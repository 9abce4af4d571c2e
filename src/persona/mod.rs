//! The persona format: parsing, validation, canonical form and semantic diff.
//! Pure: no file system, database, git or network access happens in here.

pub mod assignment;
pub mod canonical;
pub mod diagnostic;
pub mod diff;
pub mod document_id;
pub mod experiment;
pub mod labels;
pub mod labels_edit;
pub mod model;
pub mod pin;
pub mod profile;
pub mod prompt;
pub mod reader;
pub mod search_filter;
pub mod settings;
pub mod settings_patch;
pub mod snapshot;
pub mod source;
pub mod validate;

pub use canonical::{canonical_json, content_hash};
pub use diagnostic::{Code, Diagnostic, OutputFormat};
pub use model::{ContentHash, Persona, PersonaId, Slug};
pub use settings::RegistrySettings;
pub use snapshot::{Snapshot, SourceFile};
pub use validate::{FileReading, ParsedPersona, validate_persona};

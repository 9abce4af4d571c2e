//! PostgreSQL: connecting (or running a private cluster), migrations, and the
//! projection writes. Every read of the registry is served from here.

pub mod events;
pub mod labels;
pub mod local_pg;
pub mod pinned_reads;
pub mod pool;
pub mod profiles;
pub mod projection;
pub mod queries;
pub mod search;

pub use pool::Database;

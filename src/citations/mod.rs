//! Citations that are checked, not just present: each belief's URL source
//! is fetched (`fetch`), its text is searched for the belief (`matching`),
//! and the outcome is kept in the registry (`record`), so a pull request
//! shows what changed in its citations and a check can be replayed offline.

pub mod fetch;
pub mod matching;
pub mod record;

//! Change notifications: the events the projection writes to `change_events`
//! (in the transaction of the commit they announce) are delivered to the
//! configured webhooks, signed, in order and at least once.
//!
//! - [`config`]: `[[webhooks]]` in `personas.toml`;
//! - [`signature`]: the HMAC-SHA256 signature header;
//! - [`client`]: one HTTP delivery attempt and what came of it;
//! - [`deliver`]: the worker (cursor per webhook, backoff, several replicas);
//! - [`status`]: the reads behind `/api/webhooks` and `/status`.

pub mod client;
pub mod config;
pub mod deliver;
pub mod signature;
pub mod status;

pub use config::{EVENT_KINDS, WebhookConfig};

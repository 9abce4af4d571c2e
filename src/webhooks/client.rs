//! One delivery attempt: a signed POST of the event's body, and what came
//! of it, in words fit for the delivery log (never the URL: its path or
//! query may carry a token).

use std::error::Error as _;

use anyhow::Context;
use uuid::Uuid;

use super::config::{Secret, WebhookConfig};
use super::signature;

pub const USER_AGENT: &str = concat!("personas/", env!("CARGO_PKG_VERSION"));
/// The kind of event, e.g. `version.created`.
pub const EVENT_HEADER: &str = "X-Personas-Event";
/// The event's stable id: the same on every redelivery, so receivers can deduplicate.
pub const DELIVERY_HEADER: &str = "X-Personas-Delivery";

/// How much of a failing receiver's answer the log keeps.
const ERROR_BODY_BYTES: usize = 300;

/// One event as it is sent.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: i64,
    pub id: Uuid,
    pub kind: String,
    /// The payload exactly as signed and sent.
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// Anything else: another status (redirects included: they are not
    /// followed, since the signature was made for this receiver), a timeout,
    /// a refused connection…
    Failed { status: Option<u16>, error: String },
}

/// Sends one webhook's events.
pub struct Sender {
    client: reqwest::Client,
    url: url::Url,
    secret: Secret,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sender")
            .field("endpoint", &super::config::endpoint(&self.url))
            .finish()
    }
}

impl Sender {
    pub fn new(config: &WebhookConfig) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .build()
            .with_context(|| format!("setting up the HTTP client of webhook {}", config.name))?;
        Ok(Sender {
            client,
            url: config.url.clone(),
            secret: config.secret.clone(),
        })
    }

    pub async fn send(&self, event: &Event) -> Outcome {
        let signature = signature::sign(self.secret.expose(), &event.body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &event.kind)
            .header(DELIVERY_HEADER, event.id.to_string())
            .header(signature::HEADER, signature)
            .body(event.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => {
                return Outcome::Failed {
                    status: None,
                    error: describe(error),
                };
            }
        };
        let status = response.status();
        if status.is_success() {
            // The answer's body means nothing; reading it lets the connection be reused.
            while let Ok(Some(_)) = response.chunk().await {}
            return Outcome::Delivered {
                status: status.as_u16(),
            };
        }
        let mut error = match status.canonical_reason() {
            Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
            None => format!("HTTP {}", status.as_u16()),
        };
        if status.is_redirection() {
            error.push_str(" (redirects are not followed; configure the final URL)");
        }
        let said = first_bytes(&mut response).await;
        if !said.is_empty() {
            error.push_str(": ");
            error.push_str(&said);
        }
        Outcome::Failed {
            status: Some(status.as_u16()),
            error,
        }
    }
}

/// The start of a failing receiver's answer, as one line of printable text.
async fn first_bytes(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_BYTES)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// What went wrong on the way, from the innermost cause (`Connection
/// refused`, `deadline has elapsed`…), without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "the request failed"
    };
    let mut cause = None;
    let mut source = error.source();
    while let Some(inner) = source {
        cause = Some(inner.to_string());
        source = inner.source();
    }
    match cause {
        Some(cause) => format!("{what}: {cause}"),
        None => format!("{what}: {error}"),
    }
}

//! Who a request is: `Authorization: Bearer <token>` checked against the
//! configured token hashes. Reads are public unless the registry is private;
//! writes always need a token with the right role.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::WebError;
use crate::access::{ApiToken, Role, Tokens};

/// The access rules a server runs with.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub tokens: Tokens,
    /// Reads need a token too.
    pub private: bool,
}

/// What `WWW-Authenticate` says on a 401, so clients know what to send.
const CHALLENGE: &str = "Bearer realm=\"personas\"";

impl Access {
    /// The token the request presents, if it presents one. A malformed
    /// header or an unknown token is an error, never "anonymous": a client
    /// with a revoked token should hear so rather than get the public view.
    pub fn identify(&self, headers: &HeaderMap) -> Result<Option<&ApiToken>, WebError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|text| {
                let (scheme, token) = text.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))?;
        match self.tokens.find(presented) {
            Some(token) => Ok(Some(token)),
            None => Err(unauthorized("the token is not valid on this server")),
        }
    }

    /// The request's token, which must carry at least `role`.
    pub fn require(&self, headers: &HeaderMap, role: Role, action: &str) -> Result<&ApiToken, WebError> {
        if self.tokens.is_empty() {
            return Err(unauthorized(&format!(
                "{action} needs a token, and this server has none configured (see `personas token`)"
            )));
        }
        let token = self
            .identify(headers)?
            .ok_or_else(|| unauthorized(&format!("{action} needs a token: send Authorization: Bearer <token>")))?;
        if token.role < role {
            return Err(WebError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{action} needs the {role} role; this token is a {}", token.role),
            ));
        }
        Ok(token)
    }
}

pub fn unauthorized(message: &str) -> WebError {
    WebError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Addresses that stay open on a private registry: probes carry no tokens.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// On a private registry, every request but the probes needs a token (any
/// role), and answers may be cached by the client only, never by a shared cache.
pub async fn private_reads(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.access.private || is_probe(request.uri().path()) {
        return next.run(request).await;
    }
    if let Err(error) = state
        .access
        .require(request.headers(), Role::Reader, "reading this registry")
    {
        return error.into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Some(policy) = headers.get(header::CACHE_CONTROL).and_then(|value| value.to_str().ok()) {
        let private = policy.replace("public", "private");
        if let Ok(value) = HeaderValue::from_str(&private) {
            headers.insert(header::CACHE_CONTROL, value);
        }
    }
    headers.append(header::VARY, HeaderValue::from_static("authorization"));
    response
}

/// Adds the challenge to a 401, whichever handler produced it.
pub fn challenge(response: &mut Response) {
    if response.status() == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE));
    }
}

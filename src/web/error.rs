//! One error type for the whole web layer. A handler returns it as it is;
//! the router renders it as an HTML page on the site and as JSON
//! `{"error": {"code", "message"}}` under `/api/` (see [`render_errors`]),
//! so every failure has one status and one wording whichever way it is read.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::search::SearchError;
use crate::store::queries::{PinError, PinLookupError};
use crate::vectors::index::IndexError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebError {
    #[serde(skip)]
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `bad_pin`, …).
    pub code: &'static str,
    /// What went wrong and, where it helps, what to do about it.
    pub message: String,
    /// Structured detail for clients: the problems of a refused change, or
    /// the current content hash a stale `If-Match` should have named.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl WebError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> WebError {
        WebError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> WebError {
        self.details = Some(details);
        self
    }

    pub fn not_found(message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A pin named a version that records the persona's deletion: nothing to show.
    pub fn deletion(version: i32) -> WebError {
        WebError::new(
            StatusCode::GONE,
            "deleted",
            format!("version {version} records the persona's deletion; it has no content"),
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> WebError {
        WebError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The database or another dependency failed. The detail goes to the log,
    /// not to the reader.
    pub fn unavailable(what: &str, error: &dyn std::fmt::Display) -> WebError {
        tracing::error!(%error, "{what} failed");
        WebError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{what} is unavailable right now; try again shortly"),
        )
    }

    pub fn no_persona(reference: &str) -> WebError {
        WebError::not_found(format!("no persona is called {reference:?}"))
    }
}

/// The JSON form: `{"error": {"code": …, "message": …}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: WebError,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        // A placeholder the error middleware replaces with the right rendering.
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<sqlx::Error> for WebError {
    fn from(error: sqlx::Error) -> Self {
        WebError::unavailable("the database", &error)
    }
}

impl From<PinLookupError> for WebError {
    fn from(error: PinLookupError) -> Self {
        match error {
            PinLookupError::Pin(PinError::NotFound(message)) => WebError::not_found(message),
            PinLookupError::Pin(ambiguous @ PinError::Ambiguous { .. }) => {
                WebError::new(StatusCode::CONFLICT, "ambiguous_pin", ambiguous.to_string())
            }
            PinLookupError::Database(error) => error.into(),
        }
    }
}

impl From<SearchError> for WebError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::NotConfigured => WebError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "semantic_not_configured",
                error.to_string(),
            ),
            SearchError::UnknownPersona(reference) => WebError::no_persona(&reference),
            SearchError::EmptyQuery => WebError::bad_request("empty_query", error.to_string()),
            SearchError::Index(IndexError::NotIndexed(id)) => WebError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_indexed",
                format!("persona {id} is not in the vector index yet; it is being indexed"),
            ),
            SearchError::Index(error) => WebError::unavailable("the vector index", &error),
            SearchError::Embed(error) => WebError::unavailable("the embedding model", &error),
            SearchError::Database(error) => error.into(),
        }
    }
}

/// Whether a request is for the JSON API or another machine endpoint
/// (`/metrics`, read by scrapers): errors then render as JSON, not a page.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/") || path == "/metrics"
}

/// Renders every [`WebError`] a handler (or an extractor) produced: JSON for
/// the API, a real HTML page for the site.
pub async fn render_errors(request: Request, next: Next) -> Response {
    let api = is_api_path(request.uri().path());
    let response = next.run(request).await;
    let error = match response.extensions().get::<WebError>() {
        Some(error) => error.clone(),
        // The router's own answer to a known path with another method.
        None if response.status() == StatusCode::METHOD_NOT_ALLOWED => WebError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this address does not accept that method; the API is read-only apart from PATCH …/settings",
        ),
        None => return response,
    };
    let mut rendered = if api {
        (error.status, axum::Json(ErrorBody { error: error.clone() })).into_response()
    } else {
        (error.status, axum::response::Html(super::pages::error_page(&error))).into_response()
    };
    // Errors are never cached as if they were the resource.
    rendered
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in response.headers() {
        // A 412 names the current ETag, so the client can retry without another read.
        if name == header::ALLOW || name == header::RETRY_AFTER || name == header::ETAG {
            rendered.headers_mut().insert(name.clone(), value.clone());
        }
    }
    super::access::challenge(&mut rendered);
    rendered
}

//! The seed documents' endpoints, `GET /personas`, `GET /personas/:id`,
//! `PATCH /personas/:id/settings`, `GET /personas/:id/embed` and
//! `GET /personas/search?q=`, kept as permanent redirects to the same path
//! under `/api`. 308 (not 301) keeps the method and body, so a PATCH written
//! against the seed's table arrives as a PATCH after one redirect.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::error::WebError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/personas", any(to_api))
        .route("/personas/{*rest}", any(to_api))
}

async fn to_api(uri: Uri) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |path| path.as_str());
    match HeaderValue::from_str(&format!("/api{path}")) {
        Ok(location) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response(),
        Err(_) => WebError::bad_request("bad_path", "the address cannot be redirected").into_response(),
    }
}

//! HTTP caching. A pinned answer names content that never changes, so it is
//! cacheable forever; an unpinned one changes when the registry does, so it
//! revalidates. Either way the ETag lets a client ask "still this?" and get a
//! bodiless 304.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Cache-Control of pinned answers: the content hash names the bytes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache-Control of unpinned answers: short-lived, then revalidated by ETag.
pub const REVALIDATE: &str = "public, max-age=5, must-revalidate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Immutable,
    Revalidate,
}

/// Whether `If-None-Match` already names `etag` (a strong tag, quoted).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// A short digest of some bytes, for validators of answers that have no content hash of their own.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The ETag for a validator (a content hash, or a commit id plus the query).
pub fn etag(validator: &str) -> String {
    format!("\"{validator}\"")
}

/// Answers with `body` (or 304 when the client holds it already), carrying
/// the ETag and the cache policy.
pub fn cached(request_headers: &HeaderMap, validator: &str, freshness: Freshness, body: impl IntoResponse) -> Response {
    let tag = etag(validator);
    let mut response = if matches(request_headers, &tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    let policy = match freshness {
        Freshness::Immutable => IMMUTABLE,
        Freshness::Revalidate => REVALIDATE,
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    // Compressed and plain bodies are different representations.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\", W/\"b\""));
        assert!(matches(&headers, "\"b\""));
        assert!(matches(&headers, "\"a\""));
        assert!(!matches(&headers, "\"c\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(matches(&headers, "\"anything\""));
        assert!(!matches(&HeaderMap::new(), "\"a\""));
    }

    #[test]
    fn a_match_is_a_bodiless_304_with_the_same_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"sha256:x\""));
        let response = cached(&headers, "sha256:x", Freshness::Immutable, "body");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(response.headers()[header::CACHE_CONTROL], IMMUTABLE);
        let fresh = cached(&HeaderMap::new(), "sha256:x", Freshness::Revalidate, "body");
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[header::ETAG], "\"sha256:x\"");
        assert_eq!(fresh.headers()[header::CACHE_CONTROL], REVALIDATE);
    }
}

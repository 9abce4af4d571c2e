//! Fetching a cited page: redirects followed (and reported), a timeout per
//! request, a cap on the bytes read, and only HTML or plain text turned into
//! words; anything else (a PDF, an image) is recognized and said so.

use std::time::Duration;

use scraper::{Html, Node};

/// What a fetch came to.
#[derive(Debug)]
pub struct Fetched {
    pub final_url: String,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub body: Body,
}

#[derive(Debug)]
pub enum Body {
    /// The page's visible text.
    Text(String),
    /// Not HTML or text.
    NotText,
    /// More than the cap.
    TooLarge { cap: usize },
    /// An error status; the body is not read.
    Error,
    /// No answer, or the answer broke off.
    Unreachable(String),
}

pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .user_agent(concat!("personas-cite-check/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub async fn fetch(client: &reqwest::Client, url: &str, cap: usize) -> Fetched {
    let unreachable = |reason: String| Fetched {
        final_url: url.to_string(),
        status: None,
        content_type: None,
        body: Body::Unreachable(reason),
    };
    let mut response = match client.get(url).send().await {
        Ok(response) => response,
        Err(error) => return unreachable(describe(&error)),
    };
    let final_url = response.url().to_string();
    let status = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.split(';').next().unwrap_or(value).trim().to_ascii_lowercase());
    let answered = |body: Body| Fetched {
        final_url: final_url.clone(),
        status: Some(status.as_u16()),
        content_type: content_type.clone(),
        body,
    };
    if !status.is_success() {
        return answered(Body::Error);
    }
    let kind = match content_type.as_deref() {
        Some("text/html" | "application/xhtml+xml") => Kind::Html,
        Some("text/plain") | None => Kind::Plain,
        Some(_) => return answered(Body::NotText),
    };
    if response.content_length().is_some_and(|length| length > cap as u64) {
        return answered(Body::TooLarge { cap });
    }
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > cap {
                    return answered(Body::TooLarge { cap });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => return answered(Body::Unreachable(describe(&error))),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    answered(Body::Text(match kind {
        Kind::Html => visible_text(&text),
        Kind::Plain => text.into_owned(),
    }))
}

enum Kind {
    Html,
    Plain,
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "the connection failed".to_string()
    } else if error.is_redirect() {
        "too many redirects".to_string()
    } else {
        error.to_string()
    }
}

/// The text a reader sees: every text node outside scripts, styles and templates.
pub fn visible_text(html: &str) -> String {
    let document = Html::parse_document(html);
    let mut text = String::new();
    for node in document.tree.nodes() {
        let Node::Text(fragment) = node.value() else {
            continue;
        };
        let hidden = node.ancestors().any(|ancestor| {
            matches!(ancestor.value(), Node::Element(element)
                if matches!(element.name(), "script" | "style" | "noscript" | "template"))
        });
        if !hidden {
            text.push_str(fragment);
            text.push(' ');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::visible_text;

    #[test]
    fn scripts_and_styles_are_not_text_and_entities_are_decoded() {
        let text = visible_text(
            "<html><head><style>p{}</style><script>var quote = 'hidden';</script></head>\
             <body><p>Curie &amp; Pierre <b>said</b> it&#39;s so.</p></body></html>",
        );
        assert!(text.contains("Curie & Pierre"), "{text}");
        assert!(text.contains("it's so"), "{text}");
        assert!(!text.contains("hidden"), "{text}");
    }
}

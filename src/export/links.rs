//! Where each address of the live site lives in a static copy, and how a
//! page's links are rewritten to reach it. Every link becomes relative to
//! the page and names a file (`…/index.html`, `….json`), so the copy works
//! at a domain's root, under a sub-path such as `/registry/`, and from
//! `file://`, where a directory does not resolve to its index.

use std::cell::RefCell;
use std::collections::HashMap;

use lol_html::{RewriteStrSettings, element, rewrite_str};

use super::tag_scan;

/// A site address mapped into the copy: the file, and the query string a
/// browser keeps for the search page's script (`None` for plain files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub file: String,
    pub query: Option<String>,
}

/// The address whose answer fills a file of the copy: the link's address
/// with former slugs replaced and the search's query left to the browser.
pub fn canonical_address(file: &str) -> String {
    let path = file.strip_suffix("index.html").unwrap_or(file);
    if path.is_empty() {
        return "/".to_string();
    }
    if let Some(page) = path.strip_prefix("page/").and_then(|rest| rest.strip_suffix('/')) {
        return format!("/?page={page}");
    }
    if file != "api/openapi.json"
        && let Some(api) = file.strip_prefix("api/").and_then(|rest| rest.strip_suffix(".json"))
    {
        return format!("/api/{api}");
    }
    format!("/{}", path.trim_end_matches('/'))
}

/// Maps addresses of the live site to files of the copy.
#[derive(Debug, Default, Clone)]
pub struct SiteMap {
    /// Former slug → current slug: the live site redirects these; a static
    /// host cannot, so links go straight to the current pages.
    renamed: HashMap<String, String>,
    /// Where the copy will be served from, if known: the 404 page is served
    /// at any depth, so its links can only be absolute.
    base_url: Option<String>,
}

/// The page a static host serves for every missing address.
pub const NOT_FOUND_FILE: &str = "404.html";

impl SiteMap {
    pub fn new(renamed: HashMap<String, String>, base_url: Option<&str>) -> SiteMap {
        SiteMap {
            renamed,
            base_url: base_url.map(|base| base.trim_end_matches('/').to_string()),
        }
    }

    /// The file for a site-absolute address (`/p/ada?x=1`), or `None` for
    /// addresses outside the site (other hosts, fragments, `mailto:`).
    pub fn target(&self, address: &str) -> Option<Target> {
        if !address.starts_with('/') || address.starts_with("//") {
            return None;
        }
        let path = address.split_once('#').map_or(address, |(path, _)| path);
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let path = self.current_slug(path);
        let segments: Vec<&str> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let kept_query = query.filter(|query| !query.is_empty()).map(str::to_string);
        let target = match segments.as_slice() {
            // The index: its pages are files; any other query is a search.
            [] => match query.map(index_page) {
                None | Some(Some(1)) => Target::file("index.html"),
                Some(Some(page)) => Target::file(&format!("page/{page}/index.html")),
                Some(None) => Target {
                    file: "search/index.html".to_string(),
                    query: kept_query,
                },
            },
            ["search"] => Target {
                file: "search/index.html".to_string(),
                query: kept_query,
            },
            ["api", "openapi.json"] => Target::file("api/openapi.json"),
            // The API mirror: every answer is a JSON file.
            ["api", ..] => Target::file(&format!("{}.json", segments.join("/"))),
            [.., last] if is_asset(last) => Target::file(&segments.join("/")),
            _ => Target::file(&format!("{}/index.html", segments.join("/"))),
        };
        Some(target)
    }

    /// `/p/<former>/…` and `/api/personas/<former>…` name the current slug.
    fn current_slug(&self, path: &str) -> String {
        for prefix in ["/p/", "/api/personas/"] {
            if let Some(rest) = path.strip_prefix(prefix) {
                let end = rest.find(['/', '@']).unwrap_or(rest.len());
                if let Some(current) = self.renamed.get(&rest[..end]) {
                    return format!("{prefix}{current}{}", &rest[end..]);
                }
            }
        }
        path.to_string()
    }

    /// Rewrites every site-absolute link of an HTML page written at
    /// `page_file`; returns the page and the addresses it linked to. The
    /// links are found by [`tag_scan`], or by the HTML parser when the page
    /// holds markup the scan leaves to it; both give the same bytes.
    pub fn rewrite_page(&self, html: &str, page_file: &str) -> Result<(String, Vec<String>), RewriteError> {
        let Some(values) = tag_scan::link_values(html) else {
            return self.rewrite_page_parsed(html, page_file);
        };
        let mut page = String::with_capacity(html.len() + html.len() / 16);
        let mut linked = Vec::new();
        let mut copied = 0;
        for value in values {
            if let Some((link, address)) = self.link_from(&html[value.clone()], page_file) {
                page.push_str(&html[copied..value.start]);
                // What the parser does to a value it writes back.
                page.push_str(&link.replace('"', "&quot;"));
                copied = value.end;
                linked.push(address);
            }
        }
        page.push_str(&html[copied..]);
        Ok((page, linked))
    }

    /// [`SiteMap::rewrite_page`] through the HTML parser alone: the
    /// fallback, and the reference the scan is checked against
    /// (`build-site --through-database` renders with it).
    pub fn rewrite_page_parsed(&self, html: &str, page_file: &str) -> Result<(String, Vec<String>), RewriteError> {
        // lol_html 3.0.3 panics on some malformed markup (`<style  href="/"-=><script>…`,
        // found by the property test): an error for that page, not a crashed build.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.rewrite_with_parser(html, page_file)
        }))
        .unwrap_or(Err(RewriteError::ParserPanicked))
    }

    fn rewrite_with_parser(&self, html: &str, page_file: &str) -> Result<(String, Vec<String>), RewriteError> {
        let linked = RefCell::new(Vec::new());
        let handler = |attribute: &'static str| {
            let linked = &linked;
            move |element: &mut lol_html::html_content::Element<'_, '_>| {
                if let Some((link, address)) = element
                    .get_attribute(attribute)
                    .and_then(|value| self.link_from(&value, page_file))
                {
                    element.set_attribute(attribute, &link)?;
                    linked.borrow_mut().push(address);
                }
                Ok(())
            }
        };
        let page = rewrite_str(
            html,
            RewriteStrSettings::new()
                .append_element_content_handler(element!("a[href], link[href]", handler("href")))
                .append_element_content_handler(element!("script[src], img[src]", handler("src")))
                .append_element_content_handler(element!("form[action]", handler("action"))),
        )?;
        Ok((page, linked.into_inner()))
    }

    /// The value a link attribute gets in the copy, as written in the page,
    /// and the address it named; `None` for links outside the site.
    fn link_from(&self, value: &str, page_file: &str) -> Option<(String, String)> {
        // Attribute values arrive with their entities; the templates only ever emit `&amp;`.
        let address = value.replace("&amp;", "&");
        let target = self.target(&address)?;
        let mut link = match &self.base_url {
            Some(base) if page_file == NOT_FOUND_FILE => format!("{base}/{}", target.file),
            _ => relative(page_file, &target.file),
        };
        if let Some(query) = target.query {
            link.push('?');
            link.push_str(&query);
        }
        if let Some((_, fragment)) = address.split_once('#') {
            link.push('#');
            link.push_str(fragment);
        }
        Some((link.replace('&', "&amp;"), address))
    }
}

/// Why a page's links could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error(transparent)]
    Parser(#[from] lol_html::errors::RewritingError),
    #[error("the HTML parser (lol_html) panicked on this page's markup")]
    ParserPanicked,
}

impl Target {
    fn file(file: &str) -> Target {
        Target {
            file: file.to_string(),
            query: None,
        }
    }
}

/// Files the site serves as they are (a compare page's `1...2` is not one).
fn is_asset(segment: &str) -> bool {
    let extension = segment.rsplit_once('.').map(|(_, extension)| extension);
    matches!(
        extension,
        Some("css" | "js" | "json" | "atom" | "xml" | "txt" | "png" | "svg" | "ico")
    )
}

/// `Some(n)` when a query asks for nothing but index page `n`.
fn index_page(query: &str) -> Option<i64> {
    let mut page = 1;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("page", number)) => page = number.parse().ok()?,
            Some((_, "")) => {}
            _ => return None,
        }
    }
    Some(page)
}

/// The link from the page at `from` (a file path inside the copy) to `to`.
pub fn relative(from: &str, to: &str) -> String {
    let from_dirs: Vec<&str> = from
        .split('/')
        .collect::<Vec<_>>()
        .split_last()
        .map_or(Vec::new(), |(_, dirs)| dirs.to_vec());
    let to_parts: Vec<&str> = to.split('/').collect();
    let shared = from_dirs
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count()
        // The last part of `to` is a file, never a shared directory.
        .min(to_parts.len() - 1);
    let mut link = "../".repeat(from_dirs.len() - shared);
    link.push_str(&to_parts[shared..].join("/"));
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> SiteMap {
        SiteMap::new(HashMap::from([("old-name".to_string(), "new-name".to_string())]), None)
    }

    #[test]
    fn addresses_map_to_files() {
        let site = map();
        let file = |address: &str| site.target(address).map(|target| (target.file, target.query));
        assert_eq!(file("/"), Some(("index.html".into(), None)));
        assert_eq!(file("/?page=1"), Some(("index.html".into(), None)));
        assert_eq!(file("/?&page=3"), Some(("page/3/index.html".into(), None)));
        assert_eq!(
            file("/?domain=physics"),
            Some(("search/index.html".into(), Some("domain=physics".into())))
        );
        assert_eq!(file("/p/ada"), Some(("p/ada/index.html".into(), None)));
        assert_eq!(
            file("/p/ada/compare/1...2"),
            Some(("p/ada/compare/1...2/index.html".into(), None))
        );
        assert_eq!(
            file("/p/old-name/v/2"),
            Some(("p/new-name/v/2/index.html".into(), None))
        );
        assert_eq!(
            file("/api/personas/ada@2"),
            Some(("api/personas/ada@2.json".into(), None))
        );
        assert_eq!(
            file("/api/personas/old-name"),
            Some(("api/personas/new-name.json".into(), None))
        );
        assert_eq!(file("/api/openapi.json"), Some(("api/openapi.json".into(), None)));
        assert_eq!(file("/style.css"), Some(("style.css".into(), None)));
        assert_eq!(file("/changes.atom"), Some(("changes.atom".into(), None)));
        assert_eq!(file("https://example.org/x"), None);
        assert_eq!(file("//example.org/x"), None);
        assert_eq!(file("#top"), None);
    }

    #[test]
    fn files_name_the_address_that_fills_them() {
        for (file, address) in [
            ("index.html", "/"),
            ("page/3/index.html", "/?page=3"),
            ("search/index.html", "/search"),
            ("p/ada/compare/1...2/index.html", "/p/ada/compare/1...2"),
            ("api/personas/ada@2.json", "/api/personas/ada@2"),
            ("api/personas/ada/versions.json", "/api/personas/ada/versions"),
            ("api/openapi.json", "/api/openapi.json"),
            ("style.css", "/style.css"),
        ] {
            assert_eq!(canonical_address(file), address, "{file}");
            assert_eq!(map().target(address).unwrap().file, file, "{address}");
        }
    }

    #[test]
    fn links_are_relative_to_the_page() {
        assert_eq!(relative("index.html", "p/ada/index.html"), "p/ada/index.html");
        assert_eq!(relative("p/ada/index.html", "style.css"), "../../style.css");
        assert_eq!(relative("p/ada/v/2/index.html", "p/ada/index.html"), "../../index.html");
        assert_eq!(
            relative("p/ada/index.html", "p/ada/history/index.html"),
            "history/index.html"
        );
        assert_eq!(relative("p/ada/index.html", "p/ada/index.html"), "index.html");
        assert_eq!(relative("search/index.html", "search/index.html"), "index.html");
    }

    #[test]
    fn pages_are_rewritten_and_outside_links_kept() {
        let html = r#"<a href="/p/ada">A</a><a href="https://x.org/">X</a><a href="/?&amp;page=2">next</a><link href="/style.css"><form action="/search"></form>"#;
        let (rewritten, linked) = map().rewrite_page(html, "p/bob/index.html").unwrap();
        assert_eq!(linked, ["/p/ada", "/?&page=2", "/style.css", "/search"]);
        let hosted = SiteMap::new(HashMap::new(), Some("https://example.org/registry/"));
        let (not_found, _) = hosted
            .rewrite_page(r#"<link href="/style.css">"#, NOT_FOUND_FILE)
            .unwrap();
        assert_eq!(not_found, r#"<link href="https://example.org/registry/style.css">"#);
        assert_eq!(
            rewritten,
            r#"<a href="../ada/index.html">A</a><a href="https://x.org/">X</a><a href="../../page/2/index.html">next</a><link href="../../style.css"><form action="../../search/index.html"></form>"#
        );
    }
}

//! A preview copy of the site for a pull request (`build-site --preview
//! BASE..HEAD`): every page carries a banner that names the head and the
//! base and lists the changed personas first, each linked to its compare
//! page from the base's version to the head's; persona cards of changed
//! personas are marked wherever a list shows them. Pages are decorated with
//! site addresses before the copy's links are rewritten, so the banner's
//! links are made relative, and crawled, like every other link.

use askama::Template;
use lol_html::html_content::ContentType;
use lol_html::{RewriteStrSettings, element, rewrite_str};

/// What the preview shows about the change.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The base and head as the user named them (`main`, `HEAD`, a branch).
    pub base: String,
    pub head: String,
    pub base_commit: String,
    pub head_commit: String,
    pub changes: Vec<PreviewChange>,
}

#[derive(Debug, Clone)]
pub struct PreviewChange {
    pub slug: String,
    pub name: String,
    /// added, modified, renamed or deleted.
    pub kind: String,
    /// The head projection's version whose content is the base's (`None`
    /// when added, or when the base's content never was on the head's history).
    pub base_version: Option<i32>,
    /// The head's current version (`None` when deleted).
    pub head_version: Option<i32>,
    /// Whether the persona existed on the base.
    pub on_base: bool,
}

impl PreviewChange {
    /// The live site's compare page for this change, when both sides exist.
    pub fn compare_address(&self) -> Option<String> {
        match (self.base_version, self.head_version) {
            (Some(from), Some(to)) if from != to => Some(format!("/p/{}/compare/{from}...{to}", self.slug)),
            _ => None,
        }
    }

    /// Why there is no compare page, when there is none and it is not obvious.
    fn no_compare_reason(&self) -> Option<&'static str> {
        if self.compare_address().is_some() {
            return None;
        }
        match (self.on_base, self.head_version) {
            (false, _) => Some("new in this change"),
            (true, None) => Some("deleted in this change"),
            (true, Some(_)) => Some("the base's version is not on the head's history: rebase the branch to compare"),
        }
    }
}

#[derive(Template)]
#[template(path = "preview_banner.html")]
struct Banner<'a> {
    base: &'a str,
    head: &'a str,
    base_commit: &'a str,
    head_commit: &'a str,
    changes: &'a [PreviewChange],
}

impl Banner<'_> {
    fn short<'s>(&self, commit: &'s str) -> &'s str {
        &commit[..commit.len().min(10)]
    }

    fn versions(&self, change: &PreviewChange) -> String {
        match (change.base_version, change.head_version) {
            (Some(from), Some(to)) => format!("v{from} → v{to}"),
            _ => String::new(),
        }
    }
}

impl Preview {
    /// The addresses the copy must hold for the banner's links to work.
    pub fn addresses(&self) -> Vec<String> {
        self.changes.iter().filter_map(PreviewChange::compare_address).collect()
    }

    /// `html` with the banner at the start of `<main>` and changed
    /// personas' cards marked.
    pub fn decorate(&self, html: &str) -> anyhow::Result<String> {
        let banner = Banner {
            base: &self.base,
            head: &self.head,
            base_commit: &self.base_commit,
            head_commit: &self.head_commit,
            changes: &self.changes,
        }
        .render()?;
        let mark = |element: &mut lol_html::html_content::Element<'_, '_>| {
            let href = element.get_attribute("href").unwrap_or_default();
            let slug = href.strip_prefix("/p/").unwrap_or_default();
            if let Some(change) = self.changes.iter().find(|change| change.slug == slug) {
                element.after(
                    &format!(
                        r#" <span class="badge preview-change {0}" title="Changed in this preview">{0}</span>"#,
                        change.kind
                    ),
                    ContentType::Html,
                );
            }
            Ok(())
        };
        let decorated = rewrite_str(
            html,
            RewriteStrSettings::new()
                .append_element_content_handler(element!("main", |main| {
                    main.prepend(&banner, ContentType::Html);
                    Ok(())
                }))
                .append_element_content_handler(element!("article.card h2 a[href]", mark)),
        )?;
        Ok(decorated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(slug: &str, kind: &str, base_version: Option<i32>, head_version: Option<i32>) -> PreviewChange {
        PreviewChange {
            slug: slug.to_string(),
            name: format!("Name of {slug}"),
            kind: kind.to_string(),
            base_version,
            head_version,
            on_base: kind != "added",
        }
    }

    #[test]
    fn the_banner_lists_changes_and_cards_are_marked() {
        let preview = Preview {
            base: "main".to_string(),
            head: "feature/<x>".to_string(),
            base_commit: "a".repeat(40),
            head_commit: "b".repeat(40),
            changes: vec![
                change("ada", "modified", Some(2), Some(3)),
                change("new-one", "added", None, Some(1)),
                change("gone", "deleted", Some(1), None),
            ],
        };
        let page = "<html><body><main><article class=\"card\"><h2><a href=\"/p/ada\">Ada</a></h2></article>\
                    <article class=\"card\"><h2><a href=\"/p/other\">Other</a></h2></article></main></body></html>";
        let decorated = preview.decorate(page).unwrap();
        assert!(
            decorated.contains("<main><aside class=\"preview-banner\""),
            "{decorated}"
        );
        assert!(
            decorated.contains("feature/&#60;x&#62;") || decorated.contains("feature/&lt;x&gt;"),
            "{decorated}"
        );
        assert!(decorated.contains("href=\"/p/ada/compare/2...3\""), "{decorated}");
        assert!(decorated.contains("new in this change"), "{decorated}");
        assert!(decorated.contains("href=\"/p/gone/history\""), "{decorated}");
        assert_eq!(
            decorated.matches("title=\"Changed in this preview\"").count(),
            1,
            "{decorated}"
        );
        assert_eq!(preview.addresses(), ["/p/ada/compare/2...3"]);
        assert!(
            decorated.contains("<details open>"),
            "a short list is shown open: {decorated}"
        );
        let many = Preview {
            changes: (0..11)
                .map(|n| change(&format!("p{n}"), "modified", Some(1), Some(2)))
                .collect(),
            ..preview
        };
        let decorated = many.decorate(page).unwrap();
        assert!(
            decorated.contains("<details>") && decorated.contains("11 personas changed here"),
            "a long list is folded: {decorated}"
        );
    }
}

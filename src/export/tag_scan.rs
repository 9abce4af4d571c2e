//! Finds the link attributes of a page the templates wrote, in one pass
//! over its bytes, for the static build to rewrite in place. An HTML parser
//! (lol_html, kept as the fallback and as the reference the tests compare
//! with) tokenizes every tag and text of every page: that was a tenth of a
//! full build's CPU. The templates write plain, regular markup, so a scan
//! that jumps from `<` to `<` finds the same attributes; anything outside
//! that plain markup makes the scan give up, and the page goes to the parser.

use std::ops::Range;

/// The elements and attributes the static build rewrites (the parser's
/// selectors: `a[href], link[href]`, `script[src], img[src]`, `form[action]`).
pub fn link_attribute(tag: &str) -> Option<&'static str> {
    match tag {
        "a" | "link" => Some("href"),
        "script" | "img" => Some("src"),
        "form" => Some("action"),
        _ => None,
    }
}

/// Elements whose content the HTML tokenizer reads as text up to their end
/// tag (what the parser assumes, scripting on: `noscript` included).
const TEXT_ELEMENTS: [&str; 10] = [
    "script",
    "style",
    "textarea",
    "title",
    "iframe",
    "xmp",
    "noembed",
    "noframes",
    "noscript",
    "plaintext",
];

/// HTML elements that end SVG or MathML content where they start: the
/// parser tracks that; the scan gives up instead.
const FOREIGN_CONTENT_EXITS: [&str; 46] = [
    "b",
    "big",
    "blockquote",
    "body",
    "br",
    "center",
    "code",
    "dd",
    "div",
    "dl",
    "dt",
    "em",
    "embed",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "hr",
    "i",
    "img",
    "li",
    "listing",
    "menu",
    "meta",
    "nobr",
    "ol",
    "p",
    "pre",
    "ruby",
    "s",
    "small",
    "span",
    "strong",
    "strike",
    "sub",
    "sup",
    "table",
    "tt",
    "u",
    "ul",
    "var",
    "font",
    "a",
];

/// The byte range of each link attribute's value (between its quotes) in
/// `html`, in document order; `None` when the page holds markup the scan
/// does not read the way an HTML parser would, or a link tag the parser
/// would write back differently from how it stands (anything but single
/// spaces between attributes and a double-quoted link).
pub fn link_values(html: &str) -> Option<Vec<Range<usize>>> {
    let bytes = html.as_bytes();
    let mut values = Vec::new();
    let mut position = 0;
    // The SVG and MathML elements open around the position, innermost last.
    let mut foreign: Vec<&str> = Vec::new();
    while let Some(offset) = memchr::memchr(b'<', &bytes[position..]) {
        let start = position + offset;
        let rest = &bytes[start + 1..];
        if rest.starts_with(b"!--") {
            let end = memchr::memmem::find(&bytes[start + 4..], b"-->")?;
            position = start + 4 + end + 3;
            continue;
        }
        if rest.starts_with(b"!") || rest.starts_with(b"?") {
            // A doctype (a CDATA section or bogus comment is not the templates').
            if rest.starts_with(b"![CDATA[") {
                return None;
            }
            position = start + 1 + memchr::memchr(b'>', rest)? + 1;
            continue;
        }
        let closing = rest.starts_with(b"/");
        let name_start = start + 1 + usize::from(closing);
        // A name starts with a letter and runs to a space, `/` or `>`.
        let name_length = match bytes.get(name_start) {
            Some(first) if first.is_ascii_alphabetic() => bytes[name_start..]
                .iter()
                .take_while(|byte| !byte.is_ascii_whitespace() && !matches!(byte, b'/' | b'>'))
                .count(),
            _ => 0,
        };
        if name_length == 0 {
            if closing {
                // `</` and no name opens a bogus comment: not the templates' markup.
                return None;
            }
            // `<` followed by anything else is text to the tokenizer.
            position = start + 1;
            continue;
        }
        let name = html.get(name_start..name_start + name_length)?;
        if name.bytes().any(|byte| byte.is_ascii_uppercase()) {
            return None;
        }
        let wanted = link_attribute(name).filter(|_| !closing);
        let tag = read_tag(bytes, name_start + name_length, wanted)?;
        position = tag.end;
        if closing {
            if matches!(name, "svg" | "math") && foreign.pop()? != name {
                // Mismatched: how the parser nests them is its call.
                return None;
            }
            continue;
        }
        if matches!(name, "svg" | "math") {
            // Whether a self-closed one leaves foreign content is the parser's call.
            if tag.self_closing {
                return None;
            }
            foreign.push(name);
            continue;
        }
        if !foreign.is_empty() {
            // The parser's rules differ there: only a drawing's own elements are read.
            let is_text_element = TEXT_ELEMENTS.contains(&name) && name != "title";
            if is_text_element || link_attribute(name).is_some() || FOREIGN_CONTENT_EXITS.contains(&name) {
                return None;
            }
            continue;
        }
        if let Some(link) = &tag.link {
            let written_plainly = link.written_as_asked && matches!(link.value, Value::DoubleQuoted(_) | Value::None);
            if link.occurrences > 1 || !tag.plain || !written_plainly {
                return None;
            }
            if let Value::DoubleQuoted(range) = &link.value {
                values.push(range.clone());
            }
        }
        if TEXT_ELEMENTS.contains(&name) {
            if name == "plaintext" {
                return None;
            }
            position = text_end(bytes, tag.end, name)?;
        }
    }
    Some(values)
}

/// The link attribute of a start tag: its first occurrence.
struct LinkAttribute {
    value: Value,
    /// Named in lowercase, as asked (the parser matches any case).
    written_as_asked: bool,
    occurrences: usize,
}

/// Where an attribute's value is, between its quotes.
enum Value {
    None,
    DoubleQuoted(Range<usize>),
    SingleQuoted,
}

/// A start or end tag, from the end of its name.
struct Tag {
    /// The attribute asked for, when the tag has it.
    link: Option<LinkAttribute>,
    /// Just past the `>`.
    end: usize,
    self_closing: bool,
    /// Single spaces between attributes and nothing before `>`: what the
    /// parser writes back when it changes an attribute (it keeps the others
    /// as they stand).
    plain: bool,
}

/// Reads a tag's attributes from the end of its name to its `>`, noting
/// the one named `wanted` (in any case).
fn read_tag(bytes: &[u8], mut cursor: usize, wanted: Option<&str>) -> Option<Tag> {
    let mut tag = Tag {
        link: None,
        end: 0,
        self_closing: false,
        plain: true,
    };
    loop {
        let spaces = bytes[cursor..]
            .iter()
            .take_while(|byte| byte.is_ascii_whitespace())
            .count();
        let separated_plainly = spaces == 1 && bytes[cursor] == b' ';
        cursor += spaces;
        match bytes.get(cursor)? {
            b'>' => {
                tag.plain &= spaces == 0;
                tag.end = cursor + 1;
                return Some(tag);
            }
            b'/' if bytes.get(cursor + 1) == Some(&b'>') => {
                tag.self_closing = true;
                tag.plain = false;
                tag.end = cursor + 2;
                return Some(tag);
            }
            _ => {}
        }
        tag.plain &= separated_plainly;
        let name_length = bytes[cursor..]
            .iter()
            .take_while(|byte| !byte.is_ascii_whitespace() && !matches!(byte, b'=' | b'>' | b'/' | b'"' | b'\''))
            .count();
        if name_length == 0 {
            // A stray `/`, quote or `=` where a name belongs: not the templates' markup.
            return None;
        }
        let name = &bytes[cursor..cursor + name_length];
        cursor += name_length;
        let mut value = Value::None;
        if bytes.get(cursor) == Some(&b'=') {
            cursor += 1;
            match bytes.get(cursor)? {
                quote @ (b'"' | b'\'') => {
                    let length = memchr::memchr(*quote, &bytes[cursor + 1..])?;
                    value = match quote {
                        b'"' => Value::DoubleQuoted(cursor + 1..cursor + 1 + length),
                        _ => Value::SingleQuoted,
                    };
                    cursor += length + 2;
                }
                _ => return None,
            }
        } else if bytes.get(cursor).is_some_and(u8::is_ascii_whitespace) {
            // `name = value` is legal HTML, but not the templates'.
            let after = bytes[cursor..]
                .iter()
                .take_while(|byte| byte.is_ascii_whitespace())
                .count();
            if bytes.get(cursor + after) == Some(&b'=') {
                return None;
            }
        }
        if let Some(wanted) = wanted.filter(|wanted| name.eq_ignore_ascii_case(wanted.as_bytes())) {
            match &mut tag.link {
                Some(link) => link.occurrences += 1,
                None => {
                    tag.link = Some(LinkAttribute {
                        value,
                        written_as_asked: name == wanted.as_bytes(),
                        occurrences: 1,
                    });
                }
            }
        }
    }
}

/// Where the text content of a `name` element opened before `from` ends:
/// at its end tag, whatever the case of its name.
fn text_end(bytes: &[u8], from: usize, name: &str) -> Option<usize> {
    let mut position = from;
    loop {
        let offset = memchr::memmem::find(&bytes[position..], b"</")?;
        let at = position + offset;
        let candidate = bytes.get(at + 2..at + 2 + name.len())?;
        let follows = bytes.get(at + 2 + name.len()).copied();
        if candidate.eq_ignore_ascii_case(name.as_bytes())
            && follows.is_some_and(|byte| byte.is_ascii_whitespace() || byte == b'>' || byte == b'/')
        {
            return Some(at);
        }
        position = at + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(html: &str) -> Option<Vec<&str>> {
        link_values(html).map(|ranges| ranges.into_iter().map(|range| &html[range]).collect())
    }

    #[test]
    fn finds_the_links_the_parser_would_rewrite() {
        let html = r#"<!DOCTYPE html><html><head><link rel="stylesheet" href="/style.css"><title>a <b> "x"</title></head>
<body><!-- <a href="/commented"> --><a class="x" href="/p/ada">Ada</a><img src="/i.png" alt='q'>
<script src="/search.js"></script><script>if (a < b) { x = '<a href="/in-script">'; }</script>
<noscript><a href="/">index</a></noscript><form action="/search"><input name="q"></form>
<svg viewBox="0 0 1 1"><rect><title>t</title></rect></svg><a href="https://example.org/">out</a></body></html>"#;
        assert_eq!(
            values(html).unwrap(),
            [
                "/style.css",
                "/p/ada",
                "/i.png",
                "/search.js",
                "/search",
                "https://example.org/"
            ]
        );
    }

    #[test]
    fn gives_up_on_markup_the_parser_would_write_back_otherwise() {
        for html in [
            r#"<a  href="/p/ada">"#,
            r#"<a href="/p/ada" >"#,
            r#"<a href='/p/ada'>"#,
            r#"<a href=/p/ada>"#,
            r#"<a href = "/p/ada">"#,
            r#"<a HREF="/p/ada">"#,
            r#"<A href="/p/ada">"#,
            r#"<link href="/style.css"/>"#,
            r#"<a href="/one" href="/two">"#,
            r#"<svg><a href="/p/ada"></a></svg>"#,
            r#"<svg><p>exit</p></svg>"#,
            r#"<plaintext><a href="/p/ada">"#,
            r#"<a href="/p/ada"#,
            r#"<!-- never closed"#,
        ] {
            assert_eq!(values(html), None, "{html}");
        }
    }

    #[test]
    fn plain_text_and_other_tags_may_take_any_form() {
        let html = "<p\n  class='x'>1 < 2 <br/><a class=\"y\" href=\"/p/ada\">a</a></p>";
        assert_eq!(values(html).unwrap(), ["/p/ada"]);
    }
}

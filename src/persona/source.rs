//! TOML text → a small tree in which every value and key knows where it was
//! written. The validator works on this tree, not on toml_edit's types, so the
//! rules read as plain Rust and a parser upgrade touches this file alone.

use std::ops::Range;

use chrono::NaiveDate;

/// Byte range in the source text.
pub type Span = Range<usize>;

/// Files larger than this are refused before parsing: nothing legitimate is
/// that big, and refusing early keeps a hostile file from costing anything.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// Deepest nesting of tables and arrays a registry file may use. The format
/// itself needs three levels; eight leaves room without inviting abuse.
pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    /// A TOML local date (no time, no offset).
    Date(NaiveDate),
    /// Any other TOML datetime form, kept as written so it can be reported.
    OtherDatetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl NodeValue {
    /// The TOML type name, as a contributor reads it in an error message.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeValue::String(_) => "string",
            NodeValue::Integer(_) => "integer",
            NodeValue::Float(_) => "float",
            NodeValue::Boolean(_) => "boolean",
            NodeValue::Date(_) => "date",
            NodeValue::OtherDatetime(_) => "datetime",
            NodeValue::Array(_) => "array",
            NodeValue::Table(_) => "table",
        }
    }
}

/// Why a file could not be turned into a tree at all.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceError {
    TooLarge { bytes: usize, limit: usize },
    NotUtf8 { offset: usize },
    Syntax { span: Span, message: String },
    TooDeep { span: Span },
}

/// Parses `bytes` as TOML into a spanned tree, enforcing the size and depth limits.
pub fn parse(bytes: &[u8]) -> Result<Node, SourceError> {
    parse_with_limit(bytes, MAX_FILE_BYTES)
}

/// [`parse`] for a file whose size grows with the registry (the labels file
/// has a line per labelled persona), with its own size limit.
pub fn parse_with_limit(bytes: &[u8], limit: usize) -> Result<Node, SourceError> {
    if bytes.len() > limit {
        return Err(SourceError::TooLarge {
            bytes: bytes.len(),
            limit,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|error| SourceError::NotUtf8 {
        offset: error.valid_up_to(),
    })?;
    // A cheap pre-scan: the parser recurses on nested inline arrays and tables,
    // so an absurdly nested file is refused before it is parsed.
    if let Some(offset) = first_offset_beyond_depth(text) {
        return Err(SourceError::TooDeep {
            span: offset..offset + 1,
        });
    }
    let document = toml_edit::Document::parse(text).map_err(|error| SourceError::Syntax {
        span: error.span().unwrap_or(0..0),
        message: error.message().trim().to_string(),
    })?;
    let root = document.as_table();
    convert_table(root, 0..text.len(), 0)
}

/// Offset of the first bracket that opens nesting deeper than [`MAX_DEPTH`],
/// counting inline `[`/`{` only outside strings and comments.
fn first_offset_beyond_depth(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut index = 0;
    let mut at_line_start = true;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'\n' => at_line_start = true,
            b' ' | b'\t' | b'\r' => {}
            b'#' => {
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                index = skip_string(bytes, index);
                at_line_start = false;
                continue;
            }
            b'[' if at_line_start && depth == 0 => {
                // A table header (`[a.b]` or `[[a]]`): skip to the end of the line.
                while index < bytes.len() && bytes[index] != b'\n' {
                    index += 1;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(index);
                }
                at_line_start = false;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                at_line_start = false;
            }
            _ => at_line_start = false,
        }
        index += 1;
    }
    None
}

/// Returns the offset just past the string starting at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let triple = bytes.get(start..start + 3) == Some(&[quote, quote, quote][..]);
    let mut index = start + if triple { 3 } else { 1 };
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'\\' && quote == b'"' {
            index += 2;
            continue;
        }
        if byte == quote {
            if !triple {
                return index + 1;
            }
            if bytes.get(index..index + 3) == Some(&[quote, quote, quote][..]) {
                return index + 3;
            }
        }
        if byte == b'\n' && !triple {
            return index;
        }
        index += 1;
    }
    index
}

fn convert_table(table: &toml_edit::Table, span: Span, depth: usize) -> Result<Node, SourceError> {
    let span = table.span().unwrap_or(span);
    let mut entries = Vec::with_capacity(table.len());
    for (key, item) in table.iter() {
        let key_span = table
            .key(key)
            .and_then(|key| key.span())
            .unwrap_or_else(|| span.clone());
        let value = convert_item(item, key_span.clone(), depth + 1)?;
        entries.push(Entry {
            key: key.to_string(),
            key_span,
            value,
        });
    }
    Ok(Node {
        span,
        value: NodeValue::Table(entries),
    })
}

fn convert_item(item: &toml_edit::Item, fallback: Span, depth: usize) -> Result<Node, SourceError> {
    if depth > MAX_DEPTH {
        return Err(SourceError::TooDeep { span: fallback });
    }
    match item {
        toml_edit::Item::None => Ok(Node {
            span: fallback,
            value: NodeValue::Table(Vec::new()),
        }),
        toml_edit::Item::Value(value) => convert_value(value, fallback, depth),
        toml_edit::Item::Table(table) => convert_table(table, fallback, depth),
        toml_edit::Item::ArrayOfTables(array) => {
            let span = array.span().unwrap_or_else(|| fallback.clone());
            let tables = array
                .iter()
                .map(|table| convert_table(table, span.clone(), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Node {
                span,
                value: NodeValue::Array(tables),
            })
        }
    }
}

fn convert_value(value: &toml_edit::Value, fallback: Span, depth: usize) -> Result<Node, SourceError> {
    if depth > MAX_DEPTH {
        return Err(SourceError::TooDeep { span: fallback });
    }
    let span = value.span().unwrap_or(fallback);
    let converted = match value {
        toml_edit::Value::String(text) => NodeValue::String(text.value().clone()),
        toml_edit::Value::Integer(number) => NodeValue::Integer(*number.value()),
        toml_edit::Value::Float(number) => NodeValue::Float(*number.value()),
        toml_edit::Value::Boolean(flag) => NodeValue::Boolean(*flag.value()),
        toml_edit::Value::Datetime(datetime) => {
            let datetime = datetime.value();
            match (datetime.date, datetime.time, datetime.offset) {
                (Some(date), None, None) => {
                    match NaiveDate::from_ymd_opt(date.year.into(), date.month.into(), date.day.into()) {
                        Some(date) => NodeValue::Date(date),
                        None => NodeValue::OtherDatetime(datetime.to_string()),
                    }
                }
                _ => NodeValue::OtherDatetime(datetime.to_string()),
            }
        }
        toml_edit::Value::Array(array) => NodeValue::Array(
            array
                .iter()
                .map(|element| convert_value(element, span.clone(), depth + 1))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        toml_edit::Value::InlineTable(table) => {
            let mut entries = Vec::with_capacity(table.len());
            for (key, element) in table.iter() {
                let key_span = table
                    .key(key)
                    .and_then(|key| key.span())
                    .unwrap_or_else(|| span.clone());
                entries.push(Entry {
                    key: key.to_string(),
                    key_span: key_span.clone(),
                    value: convert_value(element, key_span, depth + 1)?,
                });
            }
            NodeValue::Table(entries)
        }
    };
    Ok(Node { span, value: converted })
}

/// Maps byte offsets to 1-based line and column numbers (columns count characters).
#[derive(Debug, Clone)]
pub struct LineIndex {
    line_starts: Vec<usize>,
    text: String,
}

impl LineIndex {
    pub fn new(bytes: &[u8]) -> Self {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(offset, _)| offset + 1));
        LineIndex { line_starts, text }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end map to the last position.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(exact) => exact,
            Err(insert_at) => insert_at - 1,
        };
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map(|prefix| prefix.chars().count())
            .unwrap_or(offset - start);
        (line + 1, column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let index = LineIndex::new("a = 1\nbé = 2\n".as_bytes());
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(6), (2, 1));
        // "bé = " is 6 bytes but 5 characters.
        assert_eq!(index.position(12), (2, 6));
    }

    #[test]
    fn spans_point_at_keys_and_values() {
        let text = "name = \"x\"\n[traits.ocean]\nopenness = 0.5\n";
        let root = parse(text.as_bytes()).unwrap();
        let NodeValue::Table(entries) = root.value else {
            panic!("root is a table")
        };
        assert_eq!(&text[entries[0].key_span.clone()], "name");
        assert_eq!(&text[entries[0].value.span.clone()], "\"x\"");
        let NodeValue::Table(traits) = &entries[1].value.value else {
            panic!("traits")
        };
        let NodeValue::Table(ocean) = &traits[0].value.value else {
            panic!("ocean")
        };
        assert_eq!(&text[ocean[0].value.span.clone()], "0.5");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let text = format!("a = {}1{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(parse(text.as_bytes()), Err(SourceError::TooDeep { .. })));
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!("a = \"{}\"\n", "[".repeat(50));
        assert!(parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn oversized_files_are_refused() {
        let text = vec![b' '; MAX_FILE_BYTES + 1];
        assert!(matches!(parse(&text), Err(SourceError::TooLarge { .. })));
    }
}

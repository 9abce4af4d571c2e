//! Typed access to a spanned TOML tree that reports every problem instead of
//! stopping at the first: each accessor records a diagnostic and returns
//! `None`, so validation carries on and a contributor sees all errors at once.

use super::diagnostic::{Code, Diagnostics};
use super::source::{Entry, Node, NodeValue, Span};

/// Reads one table, remembering which keys were consumed so that `finish`
/// can report the rest as unknown.
pub struct TableReader<'a> {
    entries: &'a [Entry],
    span: Span,
    path: String,
    allowed: &'static [&'static str],
    used: Vec<bool>,
}

impl<'a> TableReader<'a> {
    /// `path` is the dotted location of this table (empty for the file's root).
    pub fn new(
        diagnostics: &mut Diagnostics,
        node: &'a Node,
        path: &str,
        allowed: &'static [&'static str],
    ) -> Option<Self> {
        let entries = expect_table(diagnostics, node, path)?;
        Some(TableReader {
            entries,
            span: node.span.clone(),
            path: path.to_string(),
            allowed,
            used: vec![false; entries.len()],
        })
    }

    pub fn span(&self) -> &Span {
        &self.span
    }

    /// The dotted path of `key` inside this table.
    pub fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    fn take(&mut self, key: &str) -> Option<&'a Entry> {
        let index = self.entries.iter().position(|entry| entry.key == key)?;
        self.used[index] = true;
        Some(&self.entries[index])
    }

    pub fn optional(&mut self, key: &str) -> Option<&'a Entry> {
        self.take(key)
    }

    pub fn required(&mut self, diagnostics: &mut Diagnostics, key: &str) -> Option<&'a Entry> {
        let entry = self.take(key);
        if entry.is_none() {
            let location = if self.path.is_empty() {
                "the file".to_string()
            } else {
                format!("[{}]", self.path)
            };
            diagnostics.push_at(
                &self.span,
                Code::MissingKey,
                &self.path_of(key),
                format!("missing required key `{}` in {location}", self.path_of(key)),
            );
        }
        entry
    }

    pub fn string(&mut self, diagnostics: &mut Diagnostics, key: &str, required: bool) -> Option<(&'a str, &'a Entry)> {
        let entry = if required {
            self.required(diagnostics, key)?
        } else {
            self.optional(key)?
        };
        let text = expect_string(diagnostics, &entry.value, &self.path_of(key))?;
        Some((text, entry))
    }

    pub fn boolean(&mut self, diagnostics: &mut Diagnostics, key: &str, required: bool) -> Option<bool> {
        let entry = if required {
            self.required(diagnostics, key)?
        } else {
            self.optional(key)?
        };
        expect_bool(diagnostics, &entry.value, &self.path_of(key))
    }

    /// Reports every key that no accessor asked for.
    pub fn finish(self, diagnostics: &mut Diagnostics) {
        for (entry, used) in self.entries.iter().zip(&self.used) {
            if !used {
                let table = if self.path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in [{}]", self.path)
                };
                let hint = closest(&entry.key, self.allowed)
                    .map(|suggestion| format!(" (did you mean `{suggestion}`?)"))
                    .unwrap_or_default();
                diagnostics.push_at(
                    &entry.key_span,
                    Code::UnknownKey,
                    &self.path_of(&entry.key),
                    format!(
                        "unknown key `{}` {table}{hint}; allowed keys: {}",
                        entry.key,
                        self.allowed.join(", ")
                    ),
                );
            }
        }
    }
}

pub fn join_path(parent: &str, key: &str) -> String {
    let key = if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn type_error(diagnostics: &mut Diagnostics, node: &Node, path: &str, expected: &str) {
    diagnostics.push_at(
        &node.span,
        Code::Type,
        path,
        format!("{path} must be {expected}, found {}", node.value.type_name()),
    );
}

pub fn expect_table<'a>(diagnostics: &mut Diagnostics, node: &'a Node, path: &str) -> Option<&'a [Entry]> {
    match &node.value {
        NodeValue::Table(entries) => Some(entries),
        _ => {
            type_error(
                diagnostics,
                node,
                if path.is_empty() { "the file" } else { path },
                "a table",
            );
            None
        }
    }
}

pub fn expect_array<'a>(diagnostics: &mut Diagnostics, node: &'a Node, path: &str) -> Option<&'a [Node]> {
    match &node.value {
        NodeValue::Array(items) => Some(items),
        _ => {
            type_error(diagnostics, node, path, "an array");
            None
        }
    }
}

pub fn expect_string<'a>(diagnostics: &mut Diagnostics, node: &'a Node, path: &str) -> Option<&'a str> {
    match &node.value {
        NodeValue::String(text) => Some(text),
        _ => {
            type_error(diagnostics, node, path, "a string");
            None
        }
    }
}

pub fn expect_bool(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<bool> {
    match &node.value {
        NodeValue::Boolean(flag) => Some(*flag),
        _ => {
            type_error(diagnostics, node, path, "a boolean (true or false)");
            None
        }
    }
}

pub fn expect_integer(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<i64> {
    match &node.value {
        NodeValue::Integer(number) => Some(*number),
        _ => {
            type_error(diagnostics, node, path, "an integer");
            None
        }
    }
}

/// A number in `0.0..=1.0`; whole numbers are accepted and widened.
pub fn expect_unit_interval(diagnostics: &mut Diagnostics, node: &Node, path: &str) -> Option<f64> {
    let number = match &node.value {
        NodeValue::Float(number) => *number,
        NodeValue::Integer(number) => *number as f64,
        _ => {
            type_error(diagnostics, node, path, "a number in 0.0..=1.0");
            return None;
        }
    };
    if number.is_nan() || !(0.0..=1.0).contains(&number) {
        diagnostics.push_at(
            &node.span,
            Code::Range,
            path,
            format!("{path} = {number} is outside 0.0..=1.0"),
        );
        return None;
    }
    Some(number)
}

/// A string of `1..=max` characters that is not only white space.
pub fn expect_text<'a>(diagnostics: &mut Diagnostics, node: &'a Node, path: &str, max: usize) -> Option<&'a str> {
    let text = expect_string(diagnostics, node, path)?;
    let length = text.chars().count();
    if text.trim().is_empty() {
        diagnostics.push_at(&node.span, Code::Text, path, format!("{path} must not be empty"));
        None
    } else if length > max {
        diagnostics.push_at(
            &node.span,
            Code::Text,
            path,
            format!("{path} is {length} characters long; at most {max} are allowed"),
        );
        None
    } else {
        Some(text)
    }
}

/// One of a fixed set of spellings.
pub fn expect_choice<T: Copy>(
    diagnostics: &mut Diagnostics,
    node: &Node,
    path: &str,
    choices: &[(&str, T)],
) -> Option<T> {
    let text = expect_string(diagnostics, node, path)?;
    let found = choices.iter().find(|(name, _)| *name == text).map(|(_, value)| *value);
    if found.is_none() {
        let names: Vec<String> = choices.iter().map(|(name, _)| format!("{name:?}")).collect();
        diagnostics.push_at(
            &node.span,
            Code::Enum,
            path,
            format!("{path} = {text:?} is not one of {}", names.join(", ")),
        );
    }
    found
}

/// The allowed key nearest to a misspelt one, if it is plausibly a typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2.max(candidate.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("opennes", &["openness", "neuroticism"]), Some("openness"));
        assert_eq!(closest("xyz", &["openness"]), None);
    }

    #[test]
    fn odd_keys_are_quoted_in_paths() {
        assert_eq!(join_path("modes", "Educator"), "modes.Educator");
        assert_eq!(join_path("modes", "Has space"), "modes.\"Has space\"");
        assert_eq!(join_path("", "name"), "name");
    }
}

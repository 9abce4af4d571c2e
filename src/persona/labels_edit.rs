//! Edits `registry/labels.toml` as text, with toml_edit, so a label moved
//! through the API changes one line of the file and keeps its comments,
//! its order and the way each persona is named.

use toml_edit::{DocumentMut, Item, Table, Value};

use super::labels::LabelTarget;

/// What to do to one label's entry for one persona.
pub enum LabelEdit<'a> {
    /// Point the entry at `target`: the entry written as `key` if there is
    /// one, else a new `new_key = target` line (a new `[label]` table at the
    /// end of the file when the label is new).
    Point {
        existing_key: Option<&'a str>,
        new_key: &'a str,
        target: &'a LabelTarget,
    },
    /// Drop the entry written as `key`; the label's table stays (it may be empty).
    Remove { key: &'a str },
}

/// The file's new text, or why it cannot be edited (a shape the parser
/// would have refused already).
pub fn edit_labels(text: &str, label: &str, edit: LabelEdit<'_>) -> Result<String, String> {
    let mut document: DocumentMut = text
        .parse()
        .map_err(|error| format!("the labels file does not parse: {error}"))?;
    if document.get(label).is_none() {
        if matches!(edit, LabelEdit::Remove { .. }) {
            return Err(format!("the labels file has no [{label}] table"));
        }
        let mut table = Table::new();
        // A blank line before a table appended to a non-empty file, as people write them.
        if !document.as_table().is_empty() {
            table.decor_mut().set_prefix("\n");
        }
        document.insert(label, Item::Table(table));
    }
    // `[production]` or `production = { … }`: both are tables to the parser.
    let table = document[label]
        .as_table_like_mut()
        .ok_or_else(|| format!("`{label}` in the labels file is not a table"))?;
    match edit {
        LabelEdit::Point {
            existing_key,
            new_key,
            target,
        } => {
            let new_value = match target {
                LabelTarget::Version(number) => Value::from(i64::from(*number)),
                LabelTarget::Content(hash) => Value::from(hash.to_string()),
            };
            match existing_key
                .and_then(|key| table.get_mut(key))
                .and_then(Item::as_value_mut)
            {
                Some(value) => {
                    // Keep the spacing and any comment at the end of the line.
                    let decor = value.decor().clone();
                    *value = new_value;
                    *value.decor_mut() = decor;
                }
                None => {
                    table.insert(new_key, Item::Value(new_value));
                }
            }
        }
        LabelEdit::Remove { key } => {
            table
                .remove(key)
                .ok_or_else(|| format!("[{label}] has no entry {key:?}"))?;
        }
    }
    Ok(document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persona::labels::parse_labels;
    use crate::persona::model::ContentHash;

    const FILE: &str = "# who is live\n\n[production]\n# the physicist\nalbert-einstein = 1 # pinned at launch\nada-lovelace = 2\n\n[candidate]\nada-lovelace = 3\n";

    #[test]
    fn moving_an_entry_changes_its_value_only() {
        let moved = edit_labels(
            FILE,
            "production",
            LabelEdit::Point {
                existing_key: Some("albert-einstein"),
                new_key: "albert-einstein",
                target: &LabelTarget::Version(4),
            },
        )
        .unwrap();
        assert_eq!(moved, FILE.replace("albert-einstein = 1 #", "albert-einstein = 4 #"));
    }

    #[test]
    fn new_entries_and_new_labels_are_appended_and_parse_back() {
        let hash = ContentHash([7; 32]);
        let added = edit_labels(
            FILE,
            "candidate",
            LabelEdit::Point {
                existing_key: None,
                new_key: "socrates",
                target: &LabelTarget::Content(hash),
            },
        )
        .unwrap();
        assert!(
            added.ends_with(&format!("ada-lovelace = 3\nsocrates = \"{hash}\"\n")),
            "{added}"
        );
        let labelled = edit_labels(
            &added,
            "staging",
            LabelEdit::Point {
                existing_key: None,
                new_key: "socrates",
                target: &LabelTarget::Version(1),
            },
        )
        .unwrap();
        assert!(labelled.ends_with("\n\n[staging]\nsocrates = 1\n"), "{labelled}");
        let (parsed, problems) = parse_labels("registry/labels.toml", labelled.as_bytes());
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<_> = parsed.unwrap().labels.iter().map(|label| label.name.clone()).collect();
        assert_eq!(names, ["production", "candidate", "staging"]);
        let first = edit_labels(
            "",
            "production",
            LabelEdit::Point {
                existing_key: None,
                new_key: "socrates",
                target: &LabelTarget::Version(2),
            },
        )
        .unwrap();
        assert_eq!(first, "[production]\nsocrates = 2\n");
    }

    #[test]
    fn inline_tables_are_edited_in_place() {
        let text = "production = { alice = 1, bob = 2 }\n";
        let moved = edit_labels(
            text,
            "production",
            LabelEdit::Point {
                existing_key: Some("alice"),
                new_key: "alice",
                target: &LabelTarget::Version(3),
            },
        )
        .unwrap();
        assert_eq!(moved, "production = { alice = 3, bob = 2 }\n");
        let (parsed, problems) = parse_labels("registry/labels.toml", moved.as_bytes());
        assert!(problems.is_empty() && parsed.is_some(), "{problems:?}");
    }

    #[test]
    fn removing_an_entry_keeps_the_rest() {
        let removed = edit_labels(FILE, "production", LabelEdit::Remove { key: "ada-lovelace" }).unwrap();
        assert_eq!(removed, FILE.replace("ada-lovelace = 2\n", ""));
        assert!(edit_labels(FILE, "staging", LabelEdit::Remove { key: "ada-lovelace" }).is_err());
        assert!(edit_labels(FILE, "production", LabelEdit::Remove { key: "socrates" }).is_err());
    }
}

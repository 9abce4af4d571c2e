//! Pins: the ways to name one version of a persona, as A/B testers write
//! them after `@` or in `?version=`.
//!
//! The grammar, tried in this order (README, "Pins"):
//! 1. one to six digits: a version number (`3`);
//! 2. `sha256:` and 64 hex digits: a content hash;
//! 3. 7 to 40 hex digits: a commit prefix;
//! 4. `label:NAME` / `tag:NAME`: a label or a git tag, explicitly;
//! 5. any other ref-safe name: a label when the registry defines one of that
//!    name, otherwise a git tag.
//!
//! Labels win over tags for bare names because labels are reviewed registry
//! files while anyone who can push may create a tag; `personas check` and the
//! sync refuse a label that shares its name with a tag, so a bare tag pin
//! cannot change meaning through a reviewed change. A label name starts with
//! a letter and is not all hex digits, so it can never read as a version
//! number or a commit.

use std::fmt;
use std::str::FromStr;

use super::model::ContentHash;

/// Commit prefixes shorter than this are refused: in a large history they
/// are ambiguous, and a pin is meant to stay unambiguous forever.
pub const MIN_COMMIT_PREFIX: usize = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// `3`: the persona's third version.
    Number(i32),
    /// `4c1d2e9…`: the version current at that commit (a prefix of at least 7 hex digits).
    Commit(String),
    /// `sha256:…`: the version with that canonical content.
    Content(ContentHash),
    /// `tag:v1.2`: the version current at the tagged commit.
    Tag(String),
    /// `label:production`: the version the label points at now.
    Label(String),
    /// `production`, `v1.2`: a label if the registry has one of that name, else a tag.
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pin {pin:?}: {reason}")]
pub struct InvalidPin {
    pub pin: String,
    pub reason: String,
}

impl FromStr for Pin {
    type Err = InvalidPin;

    /// See the module documentation for the grammar.
    fn from_str(text: &str) -> Result<Pin, InvalidPin> {
        let invalid = |reason: &str| InvalidPin {
            pin: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid(
                "empty; write a version number, a commit, sha256:<hash>, a label or a tag",
            ));
        }
        // Seven or more digits read as a commit prefix: a commit id can be all
        // digits, and no persona has a millionth version.
        if text.bytes().all(|byte| byte.is_ascii_digit()) && text.len() < MIN_COMMIT_PREFIX {
            return match text.parse::<i32>() {
                Ok(number) if number > 0 => Ok(Pin::Number(number)),
                _ => Err(invalid("version numbers start at 1")),
            };
        }
        if let Some(hex) = text.strip_prefix("sha256:") {
            return text.parse::<ContentHash>().map(Pin::Content).map_err(|_| {
                invalid(&format!(
                    "a content hash is sha256: and 64 hex digits, got {} characters",
                    hex.len()
                ))
            });
        }
        let is_hex = text.bytes().all(|byte| byte.is_ascii_hexdigit());
        if is_hex && (MIN_COMMIT_PREFIX..=40).contains(&text.len()) {
            return Ok(Pin::Commit(text.to_ascii_lowercase()));
        }
        if let Some(name) = text.strip_prefix("label:") {
            return check_label_name(name)
                .map(|()| Pin::Label(name.to_string()))
                .map_err(|reason| invalid(&reason));
        }
        if let Some(name) = text.strip_prefix("tag:") {
            return if is_tag_name(name) {
                Ok(Pin::Tag(name.to_string()))
            } else {
                Err(invalid("not a valid git tag name"))
            };
        }
        if is_tag_name(text) {
            return Ok(Pin::Name(text.to_string()));
        }
        Err(invalid(
            "not a version number, commit, sha256:<hash>, label or tag name",
        ))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Number(number) => write!(formatter, "{number}"),
            Pin::Commit(prefix) => formatter.write_str(prefix),
            Pin::Content(hash) => write!(formatter, "{hash}"),
            Pin::Tag(tag) => write!(formatter, "tag:{tag}"),
            Pin::Label(label) => write!(formatter, "label:{label}"),
            Pin::Name(name) => formatter.write_str(name),
        }
    }
}

impl Pin {
    /// Whether the answer for this pin can never change: a version number, a
    /// content hash or a full commit id. Labels move, tags can be re-pointed,
    /// and a commit prefix may become ambiguous.
    pub fn is_immutable(&self) -> bool {
        match self {
            Pin::Number(_) | Pin::Content(_) => true,
            Pin::Commit(prefix) => prefix.len() == 40,
            Pin::Tag(_) | Pin::Label(_) | Pin::Name(_) => false,
        }
    }
}

/// The longest label name; labels are short words like `production`.
pub const MAX_LABEL_NAME: usize = 40;

/// A label name is a lowercase letter followed by lowercase letters, digits
/// and `-`, at most 40 characters, and not made of hex digits alone: so it
/// can never be read as a version number, a commit prefix or a content hash.
pub fn check_label_name(name: &str) -> Result<(), String> {
    let mut characters = name.chars();
    let valid_start = characters.next().is_some_and(|first| first.is_ascii_lowercase());
    if !valid_start
        || name.len() > MAX_LABEL_NAME
        || !characters.all(|character| character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-')
    {
        return Err(format!(
            "a label name is a lowercase letter followed by lowercase letters, digits or '-', at most \
             {MAX_LABEL_NAME} characters; got {name:?}"
        ));
    }
    if name.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(format!(
            "label {name:?} is made of hex digits only, so it would read as a commit prefix; add a letter past 'f'"
        ));
    }
    Ok(())
}

/// Git's rules for a ref name component chain (`git check-ref-format`),
/// bounded to a sensible length.
fn is_tag_name(text: &str) -> bool {
    text.len() <= 200
        && !text.starts_with(['-', '.', '/'])
        && !text.ends_with(['.', '/'])
        && !text.ends_with(".lock")
        && !text.contains("..")
        && !text.contains("//")
        && !text.contains("@{")
        && text != "@"
        && !text.split('/').any(|part| part.starts_with('.'))
        && text
            .chars()
            .all(|character| !character.is_control() && !" ~^:?*[\\".contains(character))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_can_never_read_as_numbers_or_commits() {
        for good in ["production", "staging", "candidate-2", "g", "x1"] {
            assert_eq!(check_label_name(good), Ok(()), "{good}");
            assert_eq!(good.parse(), Ok(Pin::Name(good.into())));
        }
        for bad in ["1", "42", "abc", "deadbeef", "Prod", "-x", "x_y", &"a".repeat(41)] {
            assert!(check_label_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_fixed_pins_are_immutable() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        for (pin, immutable) in [
            ("3", true),
            (hash.as_str(), true),
            ("abcdef0", false),
            ("tag:v1", false),
            ("label:production", false),
            ("production", false),
        ] {
            assert_eq!(pin.parse::<Pin>().unwrap().is_immutable(), immutable, "{pin}");
        }
        let full = "a".repeat(40);
        assert!(full.parse::<Pin>().unwrap().is_immutable());
    }

    #[test]
    fn each_kind_of_pin_parses() {
        assert_eq!("3".parse(), Ok(Pin::Number(3)));
        assert_eq!("4C1D2E9".parse(), Ok(Pin::Commit("4c1d2e9".into())));
        assert_eq!("1234567".parse(), Ok(Pin::Commit("1234567".into())));
        assert_eq!("123456".parse(), Ok(Pin::Number(123456)));
        let hash = format!("sha256:{}", "ab".repeat(32));
        assert!(matches!(hash.parse::<Pin>(), Ok(Pin::Content(_))));
        assert_eq!("v1.2".parse(), Ok(Pin::Name("v1.2".into())));
        assert_eq!("release/2026-11".parse(), Ok(Pin::Name("release/2026-11".into())));
        assert_eq!("tag:v1.2".parse(), Ok(Pin::Tag("v1.2".into())));
        assert_eq!("label:production".parse(), Ok(Pin::Label("production".into())));
        assert_eq!("production".parse(), Ok(Pin::Name("production".into())));
        // Hex-looking names shorter than a commit prefix are names, never commits.
        assert_eq!("cafe".parse(), Ok(Pin::Name("cafe".into())));
    }

    #[test]
    fn malformed_pins_say_why() {
        for (pin, reason) in [
            ("0", "start at 1"),
            ("sha256:abc", "64 hex digits"),
            ("", "empty"),
            ("a..b", "not a version"),
            ("-x", "not a version"),
            ("x y", "not a version"),
            ("tag.lock", "not a version"),
            ("label:Production", "lowercase letter"),
            ("label:3", "lowercase letter"),
            ("label:deadbeef", "hex digits only"),
            ("label:", "lowercase letter"),
            ("tag:a..b", "git tag"),
        ] {
            let error = pin.parse::<Pin>().unwrap_err();
            assert!(error.to_string().contains(reason), "{pin:?}: {error}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["7", "abcdef0", "v2", "tag:v2", "label:production"] {
            assert_eq!(text.parse::<Pin>().unwrap().to_string(), text);
        }
    }
}

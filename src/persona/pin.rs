//! Pins: the four ways to name one version of a persona, as A/B testers
//! write them after `@` or in `?version=`.

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
    /// `v1.2`: the version current at the tagged commit.
    Tag(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pin {pin:?}: {reason}")]
pub struct InvalidPin {
    pub pin: String,
    pub reason: String,
}

impl FromStr for Pin {
    type Err = InvalidPin;

    /// Up to 6 digits: a version number. `sha256:` and 64 hex digits: a content
    /// hash. 7 to 40 hex digits: a commit. Anything else that is a valid git
    /// tag name (a short hex string included): a tag.
    fn from_str(text: &str) -> Result<Pin, InvalidPin> {
        let invalid = |reason: &str| InvalidPin {
            pin: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid(
                "empty; write a version number, a commit, sha256:<hash> or a tag",
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
        if is_tag_name(text) {
            return Ok(Pin::Tag(text.to_string()));
        }
        Err(invalid("not a version number, commit, sha256:<hash> or tag name"))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Number(number) => write!(formatter, "{number}"),
            Pin::Commit(prefix) => formatter.write_str(prefix),
            Pin::Content(hash) => write!(formatter, "{hash}"),
            Pin::Tag(tag) => formatter.write_str(tag),
        }
    }
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
    fn each_kind_of_pin_parses() {
        assert_eq!("3".parse(), Ok(Pin::Number(3)));
        assert_eq!("4C1D2E9".parse(), Ok(Pin::Commit("4c1d2e9".into())));
        assert_eq!("1234567".parse(), Ok(Pin::Commit("1234567".into())));
        assert_eq!("123456".parse(), Ok(Pin::Number(123456)));
        let hash = format!("sha256:{}", "ab".repeat(32));
        assert!(matches!(hash.parse::<Pin>(), Ok(Pin::Content(_))));
        assert_eq!("v1.2".parse(), Ok(Pin::Tag("v1.2".into())));
        assert_eq!("release/2026-11".parse(), Ok(Pin::Tag("release/2026-11".into())));
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
        ] {
            let error = pin.parse::<Pin>().unwrap_err();
            assert!(error.to_string().contains(reason), "{pin:?}: {error}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["7", "abcdef0", "v2"] {
            assert_eq!(text.parse::<Pin>().unwrap().to_string(), text);
        }
    }
}

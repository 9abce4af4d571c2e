//! What a search may be narrowed to: domain, enabled mode, real or
//! fictional, and ranges over trait values. Shared by the full-text search
//! in PostgreSQL, both vector indexes and the search front ends, so it lives
//! here, below all of them: it speaks only of persona attributes.

/// An inclusive range over one trait, e.g. `ocean.openness` in 0.6..=1.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitRange {
    /// `type.name`, as in `ocean.openness`.
    pub path: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl std::str::FromStr for TraitRange {
    type Err = String;

    /// `ocean.openness=0.6..0.9`, `ocean.openness=0.6..` or `humor.wit=..0.3`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (path, range) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected TYPE.NAME=MIN..MAX, e.g. ocean.openness=0.6..1"))?;
        let valid_path = path
            .split_once('.')
            .is_some_and(|(kind, name)| is_trait_word(kind) && is_trait_word(name));
        if !valid_path {
            return Err(format!("{path:?}: a trait is written TYPE.NAME, e.g. ocean.openness"));
        }
        let (low, high) = range
            .split_once("..")
            .ok_or_else(|| format!("{range:?}: expected MIN..MAX (either side may be empty)"))?;
        let bound = |side: &str| -> Result<Option<f64>, String> {
            if side.is_empty() {
                return Ok(None);
            }
            match side.parse::<f64>() {
                Ok(value) if (0.0..=1.0).contains(&value) => Ok(Some(value)),
                _ => Err(format!("{side:?}: trait bounds are numbers from 0 to 1")),
            }
        };
        // A minimum above the maximum is an empty range, as in SQL's
        // BETWEEN: it matches nobody rather than failing the request.
        let (min, max) = (bound(low)?, bound(high)?);
        Ok(TraitRange {
            path: path.to_string(),
            min,
            max,
        })
    }
}

fn is_trait_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
}

/// Conditions every result must meet; all are optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchFilter {
    pub domain: Option<String>,
    /// An enabled mode.
    pub mode: Option<String>,
    pub is_real: Option<bool>,
    pub traits: Vec<TraitRange>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trait_ranges_parse_and_reject_nonsense() {
        let range: TraitRange = "ocean.openness=0.6..0.9".parse().unwrap();
        assert_eq!(
            range,
            TraitRange {
                path: "ocean.openness".into(),
                min: Some(0.6),
                max: Some(0.9)
            }
        );
        let open: TraitRange = "humor.wit=..0.3".parse().unwrap();
        assert_eq!((open.min, open.max), (None, Some(0.3)));
        // Reversed bounds are an empty range: it parses, and admits no value.
        let reversed: TraitRange = "ocean.openness=0.9..0.1".parse().unwrap();
        assert_eq!((reversed.min, reversed.max), (Some(0.9), Some(0.1)));
        for bad in [
            "ocean.openness",
            "openness=0.1..0.2",
            "ocean.openness=1.5..",
            "ocean.openness=a..b",
            "Ocean.x=0..1",
            "ocean.openness=0.5",
        ] {
            assert!(bad.parse::<TraitRange>().is_err(), "{bad}");
        }
    }
}

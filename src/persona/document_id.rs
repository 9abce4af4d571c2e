//! Document ids as citation sources (`isbn:…`, `doi:…`), checked offline as
//! far as each scheme allows: check digits where the scheme has them, the
//! published syntax elsewhere. A scheme not listed here is refused: a source
//! nobody can look up is no source.

/// The schemes a source may use besides http(s) URLs, with an example each.
pub const SCHEMES: &[(&str, &str)] = &[
    ("isbn", "isbn:0-306-40615-2"),
    ("issn", "issn:0317-8471"),
    ("doi", "doi:10.1000/182"),
    ("arxiv", "arxiv:1706.03762"),
    ("pmid", "pmid:31452104"),
    ("oclc", "oclc:70850"),
    ("wikidata", "wikidata:Q937"),
    ("urn", "urn:nbn:de:101-2008111417"),
];

/// Why `id` (already known not to be a URL) is not a usable document id, if it is not.
pub fn document_id_problem(id: &str) -> Option<String> {
    let Some((scheme, rest)) = id.split_once(':') else {
        return Some(format!(
            "{id:?} is neither an http(s) URL nor a document id such as {}",
            examples()
        ));
    };
    if rest.is_empty() || rest.chars().any(char::is_whitespace) {
        return Some(format!(
            "{id:?}: a document id has no spaces and something after the `{scheme}:`"
        ));
    }
    let verdict = match scheme {
        "isbn" => isbn(rest),
        "issn" => issn(rest),
        "doi" => doi(rest),
        "arxiv" => arxiv(rest),
        "pmid" | "oclc" => digits(rest, 1, 12),
        "wikidata" => wikidata(rest),
        "urn" => urn(rest),
        _ => Err(format!(
            "`{scheme}:` is not a document id scheme this registry can check; use an http(s) URL or one of {}",
            examples()
        )),
    };
    verdict.err().map(|reason| format!("{id:?}: {reason}"))
}

fn examples() -> String {
    SCHEMES
        .iter()
        .map(|(_, example)| *example)
        .collect::<Vec<_>>()
        .join(", ")
}

/// ISBN-10 (mod 11, `X` for ten) or ISBN-13 (978/979, mod 10); hyphens allowed.
fn isbn(rest: &str) -> Result<(), String> {
    let compact: Vec<char> = rest.chars().filter(|c| *c != '-').collect();
    if rest.starts_with('-') || rest.ends_with('-') || rest.contains("--") {
        return Err("hyphens only between the groups of digits".to_string());
    }
    match compact.len() {
        10 => {
            let mut sum = 0;
            for (position, character) in compact.iter().enumerate() {
                let value = match character {
                    '0'..='9' => character.to_digit(10).unwrap_or(0),
                    'X' | 'x' if position == 9 => 10,
                    _ => return Err("an ISBN-10 is nine digits and a check digit (0-9 or X)".to_string()),
                };
                sum += value * (10 - position as u32);
            }
            if sum.is_multiple_of(11) {
                Ok(())
            } else {
                Err("the ISBN-10 check digit does not match (a typo in the number?)".to_string())
            }
        }
        13 => {
            if !compact.iter().all(char::is_ascii_digit) {
                return Err("an ISBN-13 is 13 digits".to_string());
            }
            let prefix: String = compact[..3].iter().collect();
            if prefix != "978" && prefix != "979" {
                return Err("an ISBN-13 starts with 978 or 979".to_string());
            }
            let sum: u32 = compact
                .iter()
                .enumerate()
                .map(|(position, digit)| digit.to_digit(10).unwrap_or(0) * if position % 2 == 0 { 1 } else { 3 })
                .sum();
            if sum.is_multiple_of(10) {
                Ok(())
            } else {
                Err("the ISBN-13 check digit does not match (a typo in the number?)".to_string())
            }
        }
        count => Err(format!("an ISBN has 10 or 13 digits, this one {count}")),
    }
}

/// NNNN-NNNC, C the mod-11 check digit (`X` for ten).
fn issn(rest: &str) -> Result<(), String> {
    let characters: Vec<char> = rest.chars().collect();
    let shaped = characters.len() == 9
        && characters[4] == '-'
        && characters[..4]
            .iter()
            .chain(&characters[5..8])
            .all(char::is_ascii_digit)
        && (characters[8].is_ascii_digit() || matches!(characters[8], 'X' | 'x'));
    if !shaped {
        return Err("an ISSN is written NNNN-NNNC".to_string());
    }
    let digits: Vec<u32> = characters
        .iter()
        .filter(|c| **c != '-')
        .map(|c| c.to_digit(10).unwrap_or(10))
        .collect();
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(position, digit)| digit * (8 - position as u32))
        .sum();
    if sum.is_multiple_of(11) {
        Ok(())
    } else {
        Err("the ISSN check digit does not match (a typo in the number?)".to_string())
    }
}

/// `10.` a registrant code of digits (dot-separated parts allowed), `/`, a suffix.
fn doi(rest: &str) -> Result<(), String> {
    let shape = "a DOI is 10.<registrant>/<suffix>, e.g. 10.1000/182";
    let (prefix, suffix) = rest.split_once('/').ok_or_else(|| shape.to_string())?;
    let registrant = prefix.strip_prefix("10.").ok_or_else(|| shape.to_string())?;
    let registrant_ok = !registrant.is_empty()
        && registrant
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
        && registrant.split('.').next().is_some_and(|first| first.len() >= 4);
    if !registrant_ok || suffix.is_empty() {
        return Err(shape.to_string());
    }
    Ok(())
}

/// New identifiers (`YYMM.NNNNN`, since 2007) or old ones (`archive/YYMMNNN`), each with an optional version.
fn arxiv(rest: &str) -> Result<(), String> {
    let unversioned = match rest.rsplit_once('v') {
        Some((head, version)) if !version.is_empty() && version.chars().all(|c| c.is_ascii_digit()) => head,
        _ => rest,
    };
    let new_style = unversioned.split_once('.').is_some_and(|(month, number)| {
        month.len() == 4
            && month.chars().all(|c| c.is_ascii_digit())
            && (4..=5).contains(&number.len())
            && number.chars().all(|c| c.is_ascii_digit())
    });
    let old_style = unversioned.split_once('/').is_some_and(|(archive, number)| {
        !archive.is_empty()
            && archive
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c == '.' || c.is_ascii_uppercase())
            && number.len() == 7
            && number.chars().all(|c| c.is_ascii_digit())
    });
    if new_style || old_style {
        Ok(())
    } else {
        Err("an arXiv id is YYMM.NNNNN (or archive/YYMMNNN for papers before 2007)".to_string())
    }
}

fn digits(rest: &str, shortest: usize, longest: usize) -> Result<(), String> {
    if (shortest..=longest).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("this id is {shortest} to {longest} digits"))
    }
}

fn wikidata(rest: &str) -> Result<(), String> {
    match rest.strip_prefix('Q') {
        Some(number)
            if !number.is_empty() && !number.starts_with('0') && number.chars().all(|c| c.is_ascii_digit()) =>
        {
            Ok(())
        }
        _ => Err("a Wikidata item is Q and a number, e.g. Q937".to_string()),
    }
}

/// RFC 8141: `urn:<NID>:<NSS>`, the NID 2 to 32 letters, digits or hyphens.
fn urn(rest: &str) -> Result<(), String> {
    let shape = "a URN is urn:<namespace>:<name>, e.g. urn:nbn:de:101-2008111417";
    let (namespace, name) = rest.split_once(':').ok_or_else(|| shape.to_string())?;
    let namespace_ok = (2..=32).contains(&namespace.len())
        && namespace.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if namespace_ok && !name.is_empty() {
        Ok(())
    } else {
        Err(shape.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_passes() {
        for (_, example) in SCHEMES {
            assert_eq!(document_id_problem(example), None, "{example}");
        }
    }

    #[test]
    fn well_formed_ids_pass() {
        for id in [
            "isbn:0-201-83595-9",
            "isbn:080442957X",
            "isbn:978-0-306-40615-7",
            "isbn:9780306406157",
            "issn:2049-3630",
            "doi:10.1038/nphys1170",
            "doi:10.1002/(SICI)1097-4571(199806)49:8<693::AID-ASI4>3.0.CO;2-O",
            "doi:10.5555.12/abc",
            "arxiv:1706.03762v7",
            "arxiv:hep-th/9901001",
            "arxiv:math.GT/0309136",
            "pmid:1",
            "wikidata:Q42",
        ] {
            assert_eq!(document_id_problem(id), None, "{id}");
        }
    }

    #[test]
    fn junk_and_typos_are_refused_with_a_reason() {
        for (id, reason) in [
            ("isbn:0-19-502149-1", "check digit"),
            ("isbn:978-0-306-40615-8", "check digit"),
            ("isbn:123-0-306-40615-7", "978 or 979"),
            ("isbn:12345", "10 or 13 digits"),
            ("isbn:-0306406152", "hyphens"),
            ("issn:0317-8472", "check digit"),
            ("issn:03178471", "NNNN-NNNC"),
            ("doi:11.1000/182", "10.<registrant>"),
            ("doi:10.12/abc", "10.<registrant>"),
            ("doi:10.1000/", "10.<registrant>"),
            ("arxiv:17060.3762", "YYMM"),
            ("pmid:12ab", "digits"),
            ("wikidata:Q0", "Q and a number"),
            ("wikidata:P31", "Q and a number"),
            ("urn:x:y", "urn:<namespace>"),
            ("foo:bar", "not a document id scheme"),
            ("javascript:alert(1)", "not a document id scheme"),
            ("notes", "neither an http(s) URL"),
            ("isbn:", "something after"),
        ] {
            let problem = document_id_problem(id).unwrap_or_else(|| panic!("{id} passed"));
            assert!(problem.contains(reason), "{id}: {problem}");
        }
    }
}

//! Whether a page supports a belief. Text is compared as normalized words:
//! lowercase, split at anything that is not a letter or a digit, so markup,
//! punctuation, curly quotes and line breaks do not matter.
//!
//! - `verbatim`: the belief's words appear on the page in order, contiguously;
//! - `words`: a paraphrase; at least 80% of the belief's distinct words of
//!   four letters or more appear on the page (and there are at least three);
//! - otherwise the belief is not found.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    Verbatim,
    Words,
    NotFound,
}

/// The share of a paraphrase's content words the page must contain.
pub const PARAPHRASE_SHARE: f64 = 0.8;
const CONTENT_WORD_LETTERS: usize = 4;

pub fn words(text: &str) -> Vec<String> {
    text.split(|character: char| !character.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

pub fn find(belief: &str, page: &[String]) -> Found {
    let wanted = words(belief);
    if wanted.is_empty() {
        return Found::NotFound;
    }
    if page.windows(wanted.len()).any(|window| window == wanted.as_slice()) {
        return Found::Verbatim;
    }
    let on_page: HashSet<&str> = page.iter().map(String::as_str).collect();
    let content: HashSet<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|word| word.chars().count() >= CONTENT_WORD_LETTERS)
        .collect();
    if content.len() < 3 {
        return Found::NotFound;
    }
    let present = content.iter().filter(|word| on_page.contains(*word)).count();
    if present as f64 >= PARAPHRASE_SHARE * content.len() as f64 {
        Found::Words
    } else {
        Found::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_found_through_markup_and_punctuation_and_paraphrases_by_their_words() {
        let page = words("<p>He said: “Imagination is MORE important than\nknowledge.”</p> And more.");
        assert_eq!(
            find("Imagination is more important than knowledge", &page),
            Found::Verbatim
        );
        assert_eq!(
            find("More important than knowledge is imagination", &page),
            Found::Words
        );
        assert_eq!(find("Knowledge is power", &page), Found::NotFound);
        assert_eq!(find("", &page), Found::NotFound);
    }
}

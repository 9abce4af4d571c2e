//! The text a persona is embedded as. It reads like a short profile, so the
//! sentence model sees the persona's subject matter and manner together.

use std::fmt::Write as _;

use crate::persona::Persona;

/// Names the layout [`embedding_text`] produces. Stored beside every vector
/// and in the embedding cache key: change it whenever the text changes, so
/// stale vectors are re-embedded rather than mixed with new ones.
pub const TEXT_FORMAT: &str = "profile-v1";

/// Name, kind, domains, description, beliefs, signature phrases, enabled
/// modes, strongest traits and manner, in that order. Leading with subject
/// matter matters: the model reads at most its first 256 tokens.
pub fn embedding_text(persona: &Persona) -> String {
    let mut text = String::with_capacity(1024);
    let kind = if persona.is_real {
        "a real person"
    } else {
        "a fictional character"
    };
    let _ = write!(text, "{}, {kind}", persona.name);
    if !persona.domains.is_empty() {
        let _ = write!(text, ", known for {}", persona.domains.join(", "));
    }
    text.push_str(". ");
    text.push_str(persona.description.trim());
    for belief in &persona.beliefs {
        let _ = write!(text, " Believes: {}", belief.text.trim());
        if !belief.text.trim_end().ends_with(['.', '!', '?']) {
            text.push('.');
        }
    }
    if !persona.signature_phrases.is_empty() {
        let _ = write!(text, " Says: \"{}\".", persona.signature_phrases.join("\", \""));
    }
    let modes: Vec<&str> = persona.enabled_modes().collect();
    if !modes.is_empty() {
        let _ = write!(text, " Acts as {}.", modes.join(", "));
    }
    // Only the pronounced traits say something about the persona.
    let mut strong: Vec<(String, f64)> = persona
        .traits
        .iter()
        .flat_map(|(group, traits)| {
            traits
                .iter()
                .map(move |(name, value)| (format!("{group} {name}"), *value))
        })
        .filter(|(_, value)| *value >= 0.75 || *value <= 0.25)
        .collect();
    strong.sort_by(|a, b| {
        (b.1 - 0.5)
            .abs()
            .total_cmp(&(a.1 - 0.5).abs())
            .then_with(|| a.0.cmp(&b.0))
    });
    if !strong.is_empty() {
        let described: Vec<String> = strong
            .iter()
            .take(6)
            .map(|(name, value)| {
                format!(
                    "{} {}",
                    if *value >= 0.5 { "high" } else { "low" },
                    name.replace('_', " ")
                )
            })
            .collect();
        let _ = write!(text, " Traits: {}.", described.join(", "));
    }
    let config = &persona.config;
    let _ = write!(
        text,
        " Style: {} humor, {} emotions, {} language.",
        config.humor_usage, config.emotional_style, config.language_style
    );
    text
}

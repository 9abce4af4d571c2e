//! The card JSON inside a PNG character card. Cards travel as pictures of
//! the character whose text chunks hold the card: `chara` holds a V2 (or V1)
//! card and `ccv3` a V3 card, each as base64 of the UTF-8 JSON. The V3 spec
//! says to prefer `ccv3` when both are present (writers keep `chara` as a
//! backfill for older readers). The chunks are read with the `png` crate;
//! tools usually write them after the image data, so the whole file is read
//! (without decoding the pixels into a buffer).

use std::io::Cursor;

use base64::Engine as _;

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Memory the decoder may use for its own buffers; card images are small.
const DECODER_MEMORY_LIMIT: usize = 64 * 1024 * 1024;

/// Compressed text chunks are inflated at most this far.
const MAX_TEXT_BYTES: usize = 8 * 1024 * 1024;

pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&PNG_SIGNATURE)
}

/// Which chunk held the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardChunk {
    /// `chara`: a V2 or V1 card.
    Chara,
    /// `ccv3`: a V3 card.
    Ccv3,
}

impl CardChunk {
    pub fn keyword(self) -> &'static str {
        match self {
            CardChunk::Chara => "chara",
            CardChunk::Ccv3 => "ccv3",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddedCard {
    pub chunk: CardChunk,
    /// The card's JSON text, decoded from base64.
    pub json: String,
    /// Both chunks were present and `chara` was passed over for `ccv3`.
    pub chara_ignored: bool,
}

/// The card a PNG carries; the error says what is missing or broken.
pub fn embedded_card(bytes: &[u8]) -> Result<EmbeddedCard, String> {
    let texts = text_chunks(bytes)?;
    let find = |chunk: CardChunk| {
        texts
            .iter()
            .find(|(keyword, _)| keyword.eq_ignore_ascii_case(chunk.keyword()))
            .map(|(_, text)| text.as_str())
    };
    let (chunk, text, chara_ignored) = match (find(CardChunk::Ccv3), find(CardChunk::Chara)) {
        (Some(text), chara) => (CardChunk::Ccv3, text, chara.is_some()),
        (None, Some(text)) => (CardChunk::Chara, text, false),
        (None, None) => {
            let found: Vec<&str> = texts.iter().map(|(keyword, _)| keyword.as_str()).collect();
            let found = if found.is_empty() {
                "it has no text chunks".to_string()
            } else {
                format!("its text chunks are {}", found.join(", "))
            };
            return Err(format!(
                "is a PNG without a character card: expected a `chara` or `ccv3` text chunk, but {found}"
            ));
        }
    };
    let json = decode_payload(text).map_err(|problem| format!("the `{}` chunk {problem}", chunk.keyword()))?;
    Ok(EmbeddedCard {
        chunk,
        json,
        chara_ignored,
    })
}

/// Every tEXt, zTXt and iTXt chunk as (keyword, text).
fn text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let limits = png::Limits {
        bytes: DECODER_MEMORY_LIMIT,
    };
    let decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    let mut reader = decoder
        .read_info()
        .map_err(|error| format!("is not a readable PNG ({error})"))?;
    // Reads on to IEND, collecting the chunks that follow the image data.
    reader
        .finish()
        .map_err(|error| format!("is not a readable PNG ({error})"))?;
    let info = reader.info();
    let mut texts: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|chunk| (chunk.keyword.clone(), chunk.text.clone()))
        .collect();
    for chunk in &info.compressed_latin1_text {
        let mut chunk = chunk.clone();
        chunk
            .decompress_text_with_limit(MAX_TEXT_BYTES)
            .and_then(|()| chunk.get_text())
            .map(|text| texts.push((chunk.keyword.clone(), text)))
            .map_err(|error| format!("has a zTXt chunk `{}` that cannot be read ({error})", chunk.keyword))?;
    }
    for chunk in &info.utf8_text {
        let mut chunk = chunk.clone();
        chunk
            .decompress_text_with_limit(MAX_TEXT_BYTES)
            .and_then(|()| chunk.get_text())
            .map(|text| texts.push((chunk.keyword.clone(), text)))
            .map_err(|error| format!("has an iTXt chunk `{}` that cannot be read ({error})", chunk.keyword))?;
    }
    Ok(texts)
}

/// Base64 of UTF-8 JSON, as the specs say. A chunk that holds the JSON
/// itself is accepted too: some tools write it that way.
fn decode_payload(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        return Ok(trimmed.to_string());
    }
    let compact: String = trimmed.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
        .map_err(|error| format!("is not valid base64 ({error})"))?;
    String::from_utf8(bytes).map_err(|_| "does not decode to UTF-8 text".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_with_text(chunks: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, 1, 1);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_depth(png::BitDepth::Eight);
            for (keyword, text) in chunks {
                encoder.add_text_chunk(keyword.to_string(), text.to_string()).unwrap();
            }
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0]).unwrap();
        }
        out
    }

    #[test]
    fn ccv3_wins_over_chara() {
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let png = png_with_text(&[("chara", &b64("{\"v\":2}")), ("ccv3", &b64("{\"v\":3}"))]);
        let card = embedded_card(&png).unwrap();
        assert_eq!(card.chunk, CardChunk::Ccv3);
        assert_eq!(card.json, "{\"v\":3}");
        assert!(card.chara_ignored);
    }

    #[test]
    fn missing_chunk_and_bad_base64_are_explained() {
        let error = embedded_card(&png_with_text(&[("Software", "paint")])).unwrap_err();
        assert!(
            error.contains("without a character card") && error.contains("Software"),
            "{error}"
        );
        let error = embedded_card(&png_with_text(&[("chara", "not base64 !!")])).unwrap_err();
        assert!(error.contains("not valid base64"), "{error}");
        let error = embedded_card(&PNG_SIGNATURE).unwrap_err();
        assert!(error.contains("not a readable PNG"), "{error}");
    }
}

//! The signature a receiver checks before trusting a delivery: HMAC-SHA256
//! of the exact body bytes under the webhook's secret, sent as
//! `X-Personas-Signature-256: sha256=<hex>` (the scheme of GitHub's
//! `X-Hub-Signature-256`, so existing verification code carries over).

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "X-Personas-Signature-256";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (long keys are hashed first), so this cannot fail.
    HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length")
}

/// `sha256=<lowercase hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + digest.len() * 2);
    text.push_str("sha256=");
    for byte in digest {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Whether `header` is the signature of `body` under `secret`, compared in
/// constant time (a receiver's check; the tests and the bench use it).
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let mut mac = mac(secret);
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| text.get(at..at + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_hmac_sha256_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn github_s_documented_example_verifies() {
        // docs.github.com, "Validating webhook deliveries": secret "It's a Secret to Everybody".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify(b"It's a Secret to Everybody", b"Hello, World!", header));
        assert_eq!(sign(b"It's a Secret to Everybody", b"Hello, World!"), header);
    }

    #[test]
    fn anything_else_is_refused() {
        let good = sign(b"secret", b"{}");
        assert!(verify(b"secret", b"{}", &good));
        assert!(!verify(b"other", b"{}", &good));
        assert!(!verify(b"secret", b"{ }", &good));
        assert!(!verify(b"secret", b"{}", good.trim_start_matches("sha256=")));
        assert!(!verify(b"secret", b"{}", "sha256=zz"));
        assert!(!verify(b"secret", b"{}", "sha256=abc"));
        assert!(!verify(b"secret", b"{}", "sha256=é"));
    }
}

//! Shared-secret HMAC-SHA256 of the raw body: the original guide's scheme, and what a Deluge
//! function or a proxy can send.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Reason;
use crate::config::Secret;
use crate::crd::SignatureEncoding;

type HmacSha256 = Hmac<Sha256>;

/// Longest signature header read: a hex SHA-256 is 64 characters, room is left for prefixes.
const MAX_SIGNATURE_LEN: usize = 256;

/// The raw HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &Secret, body: &[u8]) -> [u8; 32] {
    let mut mac =
        HmacSha256::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The signature of `body` under `key`, encoded as the header carries it.
pub fn sign_encoded(key: &Secret, body: &[u8], encoding: SignatureEncoding) -> String {
    let raw = sign(key, body);
    match encoding {
        SignatureEncoding::Hex => hex::encode(raw),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(raw),
    }
}

/// Checks `header` against every key; returns the index of the key that matched.
///
/// The comparison is constant-time (`Mac::verify_slice`), and every key is tried so the time
/// taken does not say which one matched.
pub fn verify(
    keys: &[Secret],
    header: &[u8],
    encoding: SignatureEncoding,
    body: &[u8],
) -> Result<usize, Reason> {
    let expected = decode(header, encoding)?;
    let mut matched = None;
    for (index, key) in keys.iter().enumerate() {
        let mut mac =
            HmacSha256::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length");
        mac.update(body);
        if mac.verify_slice(&expected).is_ok() && matched.is_none() {
            matched = Some(index);
        }
    }
    matched.ok_or(Reason::Mismatch)
}

fn decode(header: &[u8], encoding: SignatureEncoding) -> Result<Vec<u8>, Reason> {
    if header.len() > MAX_SIGNATURE_LEN {
        return Err(Reason::BadEncoding);
    }
    let text = std::str::from_utf8(header)
        .map_err(|_| Reason::BadEncoding)?
        .trim();
    let text = text
        .strip_prefix("sha256=")
        .or_else(|| text.strip_prefix("SHA256="))
        .unwrap_or(text);
    let decoded = match encoding {
        SignatureEncoding::Hex => hex::decode(text.to_ascii_lowercase()).ok(),
        SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).ok(),
    };
    match decoded {
        Some(bytes) if bytes.len() == 32 => Ok(bytes),
        _ => Err(Reason::BadEncoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| Secret::new(*v)).collect()
    }

    #[test]
    fn matches_openssl_output() {
        // printf '%s' '{"a":1}' | openssl dgst -sha256 -hmac dev
        let expected = "bf725efc83027e4a859fac4dc817057ae61baa8c9415468e4a7d3a44bb7f582f";
        let ours = sign_encoded(&Secret::new("dev"), br#"{"a":1}"#, SignatureEncoding::Hex);
        assert_eq!(ours, expected);
        assert_eq!(
            verify(
                &keys(&["dev"]),
                expected.as_bytes(),
                SignatureEncoding::Hex,
                br#"{"a":1}"#
            ),
            Ok(0)
        );
    }

    #[test]
    fn upper_case_hex_and_prefix_are_accepted() {
        let sig = sign_encoded(&Secret::new("k"), b"body", SignatureEncoding::Hex).to_uppercase();
        let prefixed = format!("sha256={sig}");
        assert_eq!(
            verify(
                &keys(&["k"]),
                prefixed.as_bytes(),
                SignatureEncoding::Hex,
                b"body"
            ),
            Ok(0)
        );
    }

    #[test]
    fn rotated_keys_report_which_one_matched() {
        let sig = sign_encoded(&Secret::new("new"), b"body", SignatureEncoding::Base64);
        assert_eq!(
            verify(
                &keys(&["old", "new"]),
                sig.as_bytes(),
                SignatureEncoding::Base64,
                b"body"
            ),
            Ok(1)
        );
    }

    #[test]
    fn wrong_key_and_garbage_are_told_apart() {
        let sig = sign_encoded(&Secret::new("other"), b"body", SignatureEncoding::Hex);
        assert_eq!(
            verify(
                &keys(&["k"]),
                sig.as_bytes(),
                SignatureEncoding::Hex,
                b"body"
            ),
            Err(Reason::Mismatch)
        );
        assert_eq!(
            verify(&keys(&["k"]), b"zz", SignatureEncoding::Hex, b"body"),
            Err(Reason::BadEncoding)
        );
        assert_eq!(
            verify(
                &keys(&["k"]),
                &[0xff, 0xfe],
                SignatureEncoding::Hex,
                b"body"
            ),
            Err(Reason::BadEncoding)
        );
    }
}

//! Standard Webhooks (v1, symmetric): `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! headers, HMAC-SHA256 over `{id}.{timestamp}.{body}`, secrets written `whsec_<base64>`.
//!
//! For senders that can add a timestamp (a proxy, a Deluge function, any Standard Webhooks
//! library): unlike the plain body HMAC, a captured delivery is only good for
//! [`TOLERANCE_SECONDS`], and within that its `webhook-id` is refused a second time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Reason;
use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// [`SIGNATURE_HEADER`] parsed once, for lookups on every delivery.
pub const SIGNATURE_HEADER_NAME: axum::http::HeaderName =
    axum::http::HeaderName::from_static(SIGNATURE_HEADER);
/// Largest difference between the sender's timestamp and our clock, either way.
pub const TOLERANCE_SECONDS: i64 = 300;
/// Longest `webhook-id` read.
const MAX_ID_LEN: usize = 256;
/// Longest `webhook-signature` read, and signatures read from it at most.
const MAX_SIGNATURE_HEADER: usize = 4096;
const MAX_SIGNATURES: usize = 16;

/// What a verified delivery says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// Index of the secret that matched.
    pub key: usize,
    pub id: String,
    pub timestamp: i64,
}

/// The raw key of a `whsec_<base64>` secret (the prefix is optional); `None` when it is not
/// base64.
pub fn decode_secret(secret: &Secret) -> Option<Vec<u8>> {
    let text = secret.expose().trim();
    let text = text.strip_prefix("whsec_").unwrap_or(text);
    STANDARD.decode(text).ok().filter(|key| !key.is_empty())
}

/// The `webhook-signature` value for a delivery: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = mac(key, id, timestamp, body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies one delivery against every secret. The signature is checked before the
/// timestamp, so a genuine but late delivery reads `expired` and a forged one `mismatch`.
pub fn verify(
    secrets: &[Secret],
    id: &[u8],
    timestamp: &[u8],
    signature: &[u8],
    body: &[u8],
    now: i64,
) -> Result<Passed, Reason> {
    let id = read_id(id)?;
    let timestamp = read_timestamp(timestamp)?;
    let signatures = read_signatures(signature)?;
    let keys: Vec<Vec<u8>> = secrets.iter().filter_map(decode_secret).collect();
    if keys.is_empty() {
        return Err(Reason::NotConfigured);
    }
    let mut matched = None;
    // Every key and every signature is tried, so the time taken says nothing about which. The
    // body is hashed once per key: each candidate is checked on a copy of that key's state, so
    // a header listing many signatures costs one finalisation each, not one pass over the body.
    for (index, key) in secrets.iter().enumerate() {
        let Some(key) = decode_secret(key) else {
            continue;
        };
        let keyed = mac(&key, &id, timestamp, body);
        for candidate in &signatures {
            let ok = keyed.clone().verify_slice(candidate).is_ok();
            if ok && matched.is_none() {
                matched = Some(index);
            }
        }
    }
    let key = matched.ok_or(Reason::Mismatch)?;
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(Reason::Expired);
    }
    Ok(Passed { key, id, timestamp })
}

fn read_id(raw: &[u8]) -> Result<String, Reason> {
    if raw.is_empty() || raw.len() > MAX_ID_LEN {
        return Err(Reason::Malformed);
    }
    let text = std::str::from_utf8(raw).map_err(|_| Reason::BadEncoding)?;
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Reason::BadEncoding);
    }
    Ok(text.to_owned())
}

fn read_timestamp(raw: &[u8]) -> Result<i64, Reason> {
    if raw.is_empty() || raw.len() > 12 || !raw.iter().all(u8::is_ascii_digit) {
        return Err(Reason::BadEncoding);
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(Reason::BadEncoding)
}

/// The `v1` signatures of a space-separated list; other versions are skipped.
fn read_signatures(raw: &[u8]) -> Result<Vec<Vec<u8>>, Reason> {
    if raw.len() > MAX_SIGNATURE_HEADER {
        return Err(Reason::BadEncoding);
    }
    let text = std::str::from_utf8(raw).map_err(|_| Reason::BadEncoding)?;
    let signatures: Vec<Vec<u8>> = text
        .split_ascii_whitespace()
        .take(MAX_SIGNATURES)
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .filter(|raw| raw.len() == 32)
        .collect();
    if signatures.is_empty() {
        return Err(Reason::BadEncoding);
    }
    Ok(signatures)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of the Standard Webhooks specification and its reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn secrets() -> Vec<Secret> {
        vec![Secret::new("whsec_b2xk"), Secret::new(SECRET)]
    }

    #[test]
    fn the_reference_example_verifies() {
        let key = decode_secret(&Secret::new(SECRET)).unwrap();
        assert_eq!(sign(&key, ID, TIMESTAMP, BODY), SIGNATURE);
        let header = format!("v1a,AAAA v1,bm9wZQ== {SIGNATURE}");
        let passed = verify(
            &secrets(),
            ID.as_bytes(),
            TIMESTAMP.to_string().as_bytes(),
            header.as_bytes(),
            BODY,
            TIMESTAMP + 10,
        );
        assert_eq!(
            passed,
            Ok(Passed {
                key: 1,
                id: ID.into(),
                timestamp: TIMESTAMP
            })
        );
    }

    #[test]
    fn late_forged_and_garbled_deliveries_are_told_apart() {
        let ts = TIMESTAMP.to_string();
        let check = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
            verify(
                &secrets(),
                id.as_bytes(),
                ts.as_bytes(),
                sig.as_bytes(),
                body,
                now,
            )
        };
        assert_eq!(
            check(ID, &ts, SIGNATURE, BODY, TIMESTAMP + 301),
            Err(Reason::Expired)
        );
        assert_eq!(
            check(ID, &ts, SIGNATURE, BODY, TIMESTAMP - 301),
            Err(Reason::Expired)
        );
        assert_eq!(
            check(ID, &ts, SIGNATURE, b"{}", TIMESTAMP),
            Err(Reason::Mismatch)
        );
        assert_eq!(
            check(ID, "-1", SIGNATURE, BODY, TIMESTAMP),
            Err(Reason::BadEncoding)
        );
        assert_eq!(
            check(ID, &ts, "v2,abc", BODY, TIMESTAMP),
            Err(Reason::BadEncoding)
        );
        assert_eq!(
            check("", &ts, SIGNATURE, BODY, TIMESTAMP),
            Err(Reason::Malformed)
        );
    }
}

//! Zoho Desk's native scheme: an RS256 JWT in `X-ZDesk-JWT`, signed with a key from the
//! portal's JWKS.
//!
//! Keys are cached by `kid`; an unknown `kid` triggers a refetch, at most once per
//! [`MIN_REFETCH`], so a flood of forged tokens cannot turn into a flood of JWKS requests.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value;

use super::Reason;
use super::replay::ReplayKey;
use crate::crd::ZohoJwtSpec;
use crate::outbound::read_capped;

/// Longest token read.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp` and `iat`.
const SKEW_SECONDS: i64 = 60;
/// Age after which a token without `exp` is refused.
const MAX_AGE_WITHOUT_EXP: i64 = 600;
/// Minimum time between two JWKS fetches for one URL.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// Budget for one JWKS fetch: the whole delivery must be answered within Zoho's 5 seconds.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest JWKS read: a handful of RSA keys is a few kilobytes.
const MAX_JWKS_BYTES: usize = 64 * 1024;

#[derive(Default)]
struct UrlKeys {
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched_at: Option<Instant>,
    /// The last fetch failed: until the next one, an unknown `kid` is the keys' fault, not the
    /// sender's (and is not charged to the sender's failure budget).
    unavailable: bool,
}

/// A cache of JWKS keys, per JWKS URL.
pub struct JwksCache {
    client: reqwest::Client,
    urls: RwLock<HashMap<String, UrlKeys>>,
    /// Serialises fetches so concurrent requests with a new `kid` cause one fetch.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            urls: RwLock::default(),
            fetch_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, url: &str, kid: &str) -> Option<Arc<DecodingKey>> {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        urls.get(url)?.keys.get(kid).cloned()
    }

    fn fetched_ever(&self, url: &str) -> bool {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        urls.get(url).is_some_and(|u| u.fetched_at.is_some())
    }

    /// Why a `kid` cannot be had without a fetch: the keys could not be read last time, or the
    /// portal does not publish it.
    fn missing(&self, url: &str) -> Reason {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        if urls.get(url).is_some_and(|u| u.unavailable) {
            Reason::KeysUnavailable
        } else {
            Reason::UnknownKey
        }
    }

    fn fetched_recently(&self, url: &str) -> bool {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        urls.get(url)
            .and_then(|u| u.fetched_at)
            .is_some_and(|at| at.elapsed() < MIN_REFETCH)
    }

    /// The key for `kid`, fetching the JWKS when it is unknown, not fetched recently, and
    /// `may_fetch` (a client over its failure budget never makes deskhook fetch).
    async fn key(&self, url: &str, kid: &str, may_fetch: bool) -> Result<Arc<DecodingKey>, Reason> {
        if let Some(key) = self.cached(url, kid) {
            return Ok(key);
        }
        // A client over its failure budget never makes deskhook fetch, except the very first
        // fetch of a URL (the keys of a cold cache), which every genuine delivery needs too.
        if !may_fetch && self.fetched_ever(url) {
            return Err(self.missing(url));
        }
        let _guard = self.fetch_lock.lock().await;
        if let Some(key) = self.cached(url, kid) {
            return Ok(key);
        }
        if self.fetched_recently(url) {
            return Err(self.missing(url));
        }
        let fetched = self.fetch(url).await;
        let mut urls = self.urls.write().unwrap_or_else(|p| p.into_inner());
        let entry = urls.entry(url.to_owned()).or_default();
        entry.fetched_at = Some(Instant::now());
        entry.unavailable = fetched.is_err();
        match fetched {
            Ok(keys) => entry.keys = keys,
            Err(error) => {
                tracing::warn!(error = %error, "failed to fetch the Zoho Desk JWKS");
                return Err(Reason::KeysUnavailable);
            }
        }
        entry.keys.get(kid).cloned().ok_or(Reason::UnknownKey)
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
        let response = self
            .client
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?
            .error_for_status()
            .map_err(|e| e.without_url().to_string())?;
        let body = read_capped(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, Arc::new(key)))
            })
            .collect::<HashMap<_, _>>();
        tracing::info!(keys = keys.len(), "fetched the Zoho Desk JWKS");
        Ok(keys)
    }
}

/// A token that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    /// The `kid` of the key that signed it.
    pub kid: String,
    /// What identifies it for replay protection: its `jti`, else the token itself.
    pub replay_key: ReplayKey,
    /// Unix seconds after which the token is refused anyway (`exp`, or `iat` plus the
    /// largest age, plus the tolerated skew).
    pub valid_until: i64,
}

/// Verifies a token against the JWKS at `jwks_url` and the claims `spec` requires.
/// Returns the `kid` of the key that signed it.
pub async fn verify(
    cache: &JwksCache,
    jwks_url: &str,
    spec: &ZohoJwtSpec,
    token: &[u8],
) -> Result<String, Reason> {
    verify_token(cache, jwks_url, spec, token, true)
        .await
        .map(|passed| passed.kid)
}

/// [`verify`], also telling what replay protection needs.
pub async fn verify_token(
    cache: &JwksCache,
    jwks_url: &str,
    spec: &ZohoJwtSpec,
    token: &[u8],
    may_fetch_keys: bool,
) -> Result<Passed, Reason> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reason::Malformed);
    }
    let token = std::str::from_utf8(token)
        .map_err(|_| Reason::BadEncoding)?
        .trim();
    let header = jsonwebtoken::decode_header(token).map_err(|_| Reason::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(Reason::BadAlgorithm);
    }
    let kid = header.kid.ok_or(Reason::UnknownKey)?;
    let key = cache.key(jwks_url, &kid, may_fetch_keys).await?;

    // Times may be in seconds or milliseconds, so they are checked here, not by the library.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|_| Reason::Mismatch)?;
    check_claims(&data.claims, spec, now_seconds())?;
    let replay_key = match data.claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() => ReplayKey::of("jti", jti.as_bytes()),
        _ => ReplayKey::of("jwt", token.as_bytes()),
    };
    Ok(Passed {
        kid,
        replay_key,
        valid_until: valid_until(&data.claims),
    })
}

/// When a token that passed [`check_claims`] stops being accepted, in Unix seconds.
fn valid_until(claims: &Value) -> i64 {
    let exp = claims.get("exp").and_then(seconds);
    let iat = claims.get("iat").and_then(seconds);
    let end = exp.or(iat.map(|iat| iat.saturating_add(MAX_AGE_WITHOUT_EXP)));
    end.unwrap_or(0).saturating_add(SKEW_SECONDS)
}

/// Unix seconds now.
pub fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks `iss`, `aud`, `exp` and `iat`.
pub fn check_claims(claims: &Value, spec: &ZohoJwtSpec, now: i64) -> Result<(), Reason> {
    let expected_issuer = format!("orgId:{}", spec.org_id.trim());
    if claims.get("iss").and_then(Value::as_str) != Some(expected_issuer.as_str()) {
        return Err(Reason::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let accepted = audiences.iter().any(|aud| {
        aud.strip_prefix("webhookId:")
            .is_some_and(|id| spec.webhook_ids.iter().any(|w| w.trim() == id))
    });
    if !accepted {
        return Err(Reason::WrongAudience);
    }
    let exp = claims.get("exp").and_then(seconds);
    let iat = claims.get("iat").and_then(seconds);
    match (exp, iat) {
        (None, None) => return Err(Reason::Expired),
        (Some(exp), _) if now > exp + SKEW_SECONDS => return Err(Reason::Expired),
        (None, Some(iat)) if now > iat + MAX_AGE_WITHOUT_EXP => return Err(Reason::Expired),
        _ => {}
    }
    if iat.is_some_and(|iat| iat > now + SKEW_SECONDS) {
        return Err(Reason::Expired);
    }
    Ok(())
}

/// A time claim in seconds; values above 10¹¹ are milliseconds.
fn seconds(value: &Value) -> Option<i64> {
    let raw = value
        .as_i64()
        .or_else(|| value.as_f64().map(|f| f as i64))?;
    Some(if raw > 100_000_000_000 {
        raw / 1000
    } else {
        raw
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ZohoJwtSpec {
        ZohoJwtSpec {
            org_id: "700000001".into(),
            webhook_ids: vec!["42".into(), "43".into()],
            jwks_url: None,
        }
    }

    const NOW: i64 = 1_714_560_000;

    #[test]
    fn good_claims_pass_in_seconds_and_milliseconds() {
        let seconds =
            json!({"iss":"orgId:700000001","aud":"webhookId:43","exp":NOW + 300,"iat":NOW});
        let millis =
            json!({"iss":"orgId:700000001","aud":["x","webhookId:42"],"exp":(NOW + 300) * 1000});
        assert_eq!(check_claims(&seconds, &spec(), NOW), Ok(()));
        assert_eq!(check_claims(&millis, &spec(), NOW), Ok(()));
    }

    #[test]
    fn wrong_issuer_audience_and_times_are_refused() {
        let base = |patch: Value| {
            let mut claims = json!({"iss":"orgId:700000001","aud":"webhookId:42","exp":NOW + 300});
            for (k, v) in patch.as_object().unwrap() {
                claims[k] = v.clone();
            }
            check_claims(&claims, &spec(), NOW)
        };
        assert_eq!(base(json!({"iss":"orgId:1"})), Err(Reason::WrongIssuer));
        assert_eq!(
            base(json!({"aud":"webhookId:99"})),
            Err(Reason::WrongAudience)
        );
        assert_eq!(base(json!({"exp":NOW - 3600})), Err(Reason::Expired));
        assert_eq!(base(json!({"iat":NOW + 3600})), Err(Reason::Expired));
        let no_times = json!({"iss":"orgId:700000001","aud":"webhookId:42"});
        assert_eq!(check_claims(&no_times, &spec(), NOW), Err(Reason::Expired));
    }
}

//! Who may see the console.
//!
//! A browser cannot send the admin API's bearer header by itself, so the console takes the admin
//! token once through a login form and answers with a session cookie. The cookie never holds
//! the token: it holds an expiry and an HMAC of that expiry keyed by the token, so it is useless
//! once it expires or the token is rotated, and reading it reveals nothing about the token.
//! The token is never accepted in a URL, where it would end up in browser history and logs.
//!
//! With no admin token configured the console is off, unless deskhook was started with
//! `--console-open`, which it accepts only on a loopback admin listener: an open console is for
//! a laptop, never for a pod that other pods can reach.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{Secret, SecretList};

/// The session cookie's name.
pub const COOKIE: &str = "deskhook_console";
/// How long a login lasts: one working day.
pub const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Separates the MAC's purpose from anything else the token might ever key.
const CONTEXT: &[u8] = b"deskhook console session v1:";

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Started with `--console-open` on a loopback listener, with no admin token.
    Open,
    /// A valid session cookie was presented.
    SignedIn,
    /// A token is configured and no valid session was presented.
    Denied,
}

impl Access {
    pub fn allowed(self) -> bool {
        self != Self::Denied
    }
}

fn mac(token: &Secret, expiry: u64) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(token.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(CONTEXT);
    mac.update(expiry.to_string().as_bytes());
    mac
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cookie value of a session keyed by `token`, valid until `now + SESSION`.
pub fn session_value(token: &Secret, now: SystemTime) -> String {
    let expiry = unix(now) + SESSION.as_secs();
    let tag = mac(token, expiry).finalize().into_bytes();
    format!("{expiry}.{}", hex::encode(tag))
}

/// Whether `value` is an unexpired session made with one of `tokens`. The MAC comparison is
/// constant-time.
pub fn session_valid(tokens: &[Secret], value: &str, now: SystemTime) -> bool {
    let Some((expiry, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expiry), Ok(tag)) = (expiry.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    if expiry <= unix(now) || expiry > unix(now) + SESSION.as_secs() {
        return false;
    }
    tokens.iter().fold(false, |ok, t| {
        ok | mac(t, expiry).verify_slice(&tag).is_ok()
    })
}

/// The configured token that `presented` equals, compared through MACs so the time taken says
/// nothing about the tokens.
pub fn matching_token(tokens: &SecretList, presented: &str) -> Option<Secret> {
    let presented = presented.trim();
    if presented.is_empty() {
        return None;
    }
    let digest = |s: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(CONTEXT)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(s.as_bytes());
        mac.finalize().into_bytes()
    };
    let wanted = digest(presented);
    let mut found = None;
    for token in tokens.iter() {
        if digest(token.expose()) == wanted {
            found = Some(token.clone());
        }
    }
    found
}

/// The request's access, from its cookie; `open` is `--console-open`, honoured only while no
/// token is configured.
pub fn access(tokens: &SecretList, headers: &HeaderMap, open: bool) -> Access {
    if tokens.is_empty() {
        return if open { Access::Open } else { Access::Denied };
    }
    let now = SystemTime::now();
    let signed_in = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && session_valid(tokens, value, now));
    if signed_in {
        Access::SignedIn
    } else {
        Access::Denied
    }
}

/// `Set-Cookie` for a new session. Not `Secure`: the console is reached over plain HTTP through
/// a port-forward; `HttpOnly` keeps it from scripts, `SameSite=Strict` from other sites.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{COOKIE}={value}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict",
        SESSION.as_secs()
    )
}

/// `Set-Cookie` that ends the session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// A key of this process only, for form tokens: a page rendered before a restart needs a
/// reload, which is a small price for a key that is never stored.
fn form_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        if let Err(error) = getrandom::fill(&mut key) {
            // Without system randomness the key still differs per process and is unknown
            // to other sites; it is only weaker against someone who can read this process.
            tracing::warn!(%error, "no system randomness for the console's form key");
            let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
            key.copy_from_slice(&Sha256::digest(seed.as_bytes()));
        }
        key
    })
}

/// The token a console form carries to prove it was rendered by this console for this
/// session: a MAC of the session cookie (of `open` without a token), which another site can
/// neither read nor compute, so a forged cross-site POST is refused.
pub fn form_token(headers: &HeaderMap) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(form_key())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"deskhook console form v1:");
    mac.update(session_cookie(headers).unwrap_or("open").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `presented` is this session's form token (compared in constant time).
pub fn form_token_valid(headers: &HeaderMap, presented: &str) -> bool {
    let Ok(presented) = hex::decode(presented.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(form_key())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"deskhook console form v1:");
    mac.update(session_cookie(headers).unwrap_or("open").as_bytes());
    mac.verify_slice(&presented).is_ok()
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_for_its_token_until_it_expires() {
        let token = Secret::new("console-token");
        let now = SystemTime::now();
        let value = session_value(&token, now);
        assert!(!value.contains("console-token"));
        assert!(session_valid(std::slice::from_ref(&token), &value, now));
        let later = now + SESSION + Duration::from_secs(1);
        assert!(!session_valid(std::slice::from_ref(&token), &value, later));
        let rotated = Secret::new("another-token");
        assert!(!session_valid(&[rotated], &value, now));
    }

    #[test]
    fn a_form_token_holds_only_for_its_own_session() {
        let session = |value: &str| {
            let mut headers = HeaderMap::new();
            let cookie = format!("other=1; {COOKIE}={value}");
            headers.insert(header::COOKIE, cookie.parse().unwrap());
            headers
        };
        let mine = session("100.aa");
        let token = form_token(&mine);
        assert!(form_token_valid(&mine, &token));
        assert!(!form_token_valid(&session("100.bb"), &token));
        assert!(!form_token_valid(&HeaderMap::new(), &token));
        assert!(!form_token_valid(&mine, ""));
        assert!(!form_token_valid(&mine, "not hex"));
        let open = HeaderMap::new();
        assert!(form_token_valid(&open, &form_token(&open)));
    }

    #[test]
    fn forged_or_malformed_sessions_are_refused() {
        let token = Secret::new("console-token");
        let now = SystemTime::now();
        let far = unix(now) + 10 * SESSION.as_secs();
        let forged = format!(
            "{far}.{}",
            hex::encode(mac(&token, far).finalize().into_bytes())
        );
        let tokens = [token];
        assert!(!session_valid(&tokens, &forged, now), "beyond one session");
        for bad in ["", ".", "abc", "1.zz", "99999999999.00", "-1.00"] {
            assert!(!session_valid(&tokens, bad, now), "{bad}");
        }
    }
}

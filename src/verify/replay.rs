//! Tokens already accepted, so a captured one cannot be sent again while still valid.
//!
//! Only tokens that verified are remembered (a forger cannot fill the memory), each until the
//! end of its validity; the key is a SHA-256 digest, so the memory never holds a token.
//! Per process: a replay sent to another replica is not caught (see SECURITY.md).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Tokens remembered at most. Only authentic tokens enter, so this is reached only by a
/// genuine volume of several hundred deliveries a second.
pub const MAX_REMEMBERED: usize = 100_000;

/// The digest a token is remembered by. `Debug` does not print it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    /// The key of `value` in the namespace `kind` (`jti`, `jwt`, `webhook-id`), so a JWT id
    /// and a Standard Webhooks id never collide.
    pub fn of(kind: &str, value: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(kind.as_bytes());
        digest.update([0]);
        digest.update(value);
        Self(digest.finalize().into())
    }
}

impl std::fmt::Debug for ReplayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplayKey(..)")
    }
}

/// Keys of accepted tokens and when each stops mattering (Unix seconds).
#[derive(Debug)]
pub struct SeenTokens {
    until: Mutex<HashMap<ReplayKey, i64>>,
    capacity: usize,
}

impl Default for SeenTokens {
    fn default() -> Self {
        Self::with_capacity(MAX_REMEMBERED)
    }
}

impl SeenTokens {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            until: Mutex::default(),
            capacity,
        }
    }

    /// Remembers `key` until `valid_until`; `false` when it is already remembered (a replay).
    ///
    /// When the memory is full of tokens still valid, the token is let through unremembered:
    /// it did verify, and refusing genuine deliveries would be worse than a missed replay.
    pub fn claim(&self, key: ReplayKey, valid_until: i64, now: i64) -> bool {
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.get(&key).is_some_and(|&end| end >= now) {
            return false;
        }
        if until.len() >= self.capacity {
            until.retain(|_, end| *end >= now);
            if until.len() >= self.capacity {
                tracing::warn!("replay memory full: a verified token was accepted unremembered");
                return true;
            }
        }
        until.insert(key, valid_until);
        true
    }

    /// Forgets `key`: its delivery was not accepted, so the sender may retry with it.
    pub fn release(&self, key: ReplayKey) {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_once_within_its_validity() {
        let seen = SeenTokens::default();
        let key = ReplayKey::of("jwt", b"token");
        assert!(seen.claim(key, 100, 0));
        assert!(!seen.claim(key, 100, 50));
        assert!(seen.claim(key, 300, 101), "an expired entry is no replay");
        assert!(seen.claim(ReplayKey::of("jti", b"token"), 100, 0));
    }

    #[test]
    fn a_released_token_may_be_retried() {
        let seen = SeenTokens::default();
        let key = ReplayKey::of("jwt", b"token");
        assert!(seen.claim(key, 100, 0));
        seen.release(key);
        assert!(seen.claim(key, 100, 1));
    }

    #[test]
    fn memory_stays_bounded() {
        let seen = SeenTokens::with_capacity(2);
        assert!(seen.claim(ReplayKey::of("jwt", b"a"), 10, 0));
        assert!(seen.claim(ReplayKey::of("jwt", b"b"), 10, 0));
        assert!(seen.claim(ReplayKey::of("jwt", b"c"), 10, 0));
        assert!(seen.claim(ReplayKey::of("jwt", b"d"), 30, 20));
        assert!(!seen.claim(ReplayKey::of("jwt", b"d"), 30, 21));
        assert!(format!("{:?}", ReplayKey::of("jwt", b"a")) == "ReplayKey(..)");
    }
}

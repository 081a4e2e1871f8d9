//! The Zoho access token shared through Redis: one refresh serves every pod.
//!
//! Zoho lets one refresh token mint 10 access tokens per 10 minutes; with every pod
//! refreshing on its own, a scale-up or a rolling restart could exhaust that and block the
//! whole deployment for the rest of the window. Keys are per credential (a fingerprint of
//! the client id and refresh token), so two deployments with different credentials sharing
//! one Redis never mix tokens. The access token sits in Redis for its lifetime: the Redis
//! that holds it must be protected like the credentials (password, TLS, network policy).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::store::{Context, Redis, now_ms, unique_token};
use crate::zoho::{OAuthCredentials, SharedStoreError, SharedToken, SharedTokenStore};

/// Longest lifetime a token read back from Redis is trusted with.
const MAX_SHARED_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    api_domain: Option<String>,
    refresh_at_ms: u64,
    expires_at_ms: u64,
}

const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

const DISCARD: &str = r#"
local stored = redis.call('GET', KEYS[1])
if stored and cjson.decode(stored).access_token == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Sliding window of refresh times; returns 0 when a place was taken, else the wait in ms.
const BUDGET: &str = r#"
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + period - now)
"#;

/// The shared token store in Redis.
pub struct RedisTokenStore {
    redis: Redis,
    token: String,
    lock: String,
    budget: String,
}

impl RedisTokenStore {
    pub fn new(redis: Redis, credentials: &OAuthCredentials) -> Self {
        let mut digest = Sha256::new();
        digest.update(credentials.client_id.as_bytes());
        digest.update([0]);
        digest.update(credentials.refresh_token.expose().as_bytes());
        let fingerprint = hex::encode(&digest.finalize()[..8]);
        Self {
            token: redis.key(&format!("zoho-token:{fingerprint}")),
            lock: redis.key(&format!("zoho-token-lock:{fingerprint}")),
            budget: redis.key(&format!("zoho-refreshes:{fingerprint}")),
            redis,
        }
    }
}

fn failed(error: crate::store::RedisError) -> SharedStoreError {
    SharedStoreError(error.to_string())
}

#[async_trait]
impl SharedTokenStore for RedisTokenStore {
    async fn load(&self) -> Result<Option<SharedToken>, SharedStoreError> {
        let stored: Option<String> = redis::cmd("GET")
            .arg(&self.token)
            .query_async(&mut self.redis.connection())
            .await
            .doing("read the shared Zoho token")
            .map_err(failed)?;
        let Some(stored) = stored.and_then(|s| serde_json::from_str::<Stored>(&s).ok()) else {
            return Ok(None);
        };
        let now = now_ms();
        if now >= stored.refresh_at_ms {
            return Ok(None);
        }
        Ok(Some(SharedToken {
            secret: Secret::new(stored.access_token),
            // Read back from Redis, checked like an answer from the network: whoever can write
            // to Redis must not choose where the token goes.
            api_domain: stored
                .api_domain
                .as_deref()
                .and_then(crate::region::trusted_api_domain),
            // Bounded as well: Zoho's tokens live an hour, and an absurd time read back would
            // overflow the clock arithmetic that uses it.
            refresh_in: Duration::from_millis(stored.refresh_at_ms - now).min(MAX_SHARED_LIFETIME),
            expires_in: Duration::from_millis(stored.expires_at_ms.saturating_sub(now))
                .min(MAX_SHARED_LIFETIME),
        }))
    }

    async fn lock(&self, ttl: Duration) -> Result<Option<String>, SharedStoreError> {
        let owner = unique_token();
        let taken: Option<String> = redis::cmd("SET")
            .arg(&self.lock)
            .arg(&owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.redis.connection())
            .await
            .doing("take the Zoho token refresh lock")
            .map_err(failed)?;
        Ok(taken.map(|_| owner))
    }

    async fn unlock(&self, owner: &str) {
        let released: Result<i64, _> = redis::Script::new(UNLOCK)
            .key(&self.lock)
            .arg(owner)
            .invoke_async(&mut self.redis.connection())
            .await
            .doing("release the Zoho token refresh lock");
        if let Err(error) = released {
            // The lock expires on its own.
            tracing::warn!(error = %error, "refresh lock left to expire");
        }
    }

    async fn publish(&self, token: &SharedToken) {
        let now = now_ms();
        let stored = Stored {
            access_token: token.secret.expose().to_owned(),
            api_domain: token.api_domain.clone(),
            refresh_at_ms: now + token.refresh_in.as_millis() as u64,
            expires_at_ms: now + token.expires_in.as_millis() as u64,
        };
        let text = serde_json::to_string(&stored).expect("a token serialises");
        let written: Result<(), _> = redis::cmd("SET")
            .arg(&self.token)
            .arg(text)
            .arg("PX")
            .arg(token.expires_in.as_millis().max(1) as u64)
            .query_async(&mut self.redis.connection())
            .await
            .doing("publish the Zoho token");
        if let Err(error) = written {
            tracing::warn!(error = %error, "the fresh Zoho token was not shared");
        }
    }

    async fn discard(&self, secret: &Secret) {
        let _: Result<i64, _> = redis::Script::new(DISCARD)
            .key(&self.token)
            .arg(secret.expose())
            .invoke_async(&mut self.redis.connection())
            .await
            .doing("discard the shared Zoho token");
    }

    async fn try_acquire_refresh(
        &self,
        limit: usize,
        period: Duration,
    ) -> Result<Result<(), Duration>, SharedStoreError> {
        let wait: u64 = redis::Script::new(BUDGET)
            .key(&self.budget)
            .arg(now_ms())
            .arg(period.as_millis() as u64)
            .arg(limit)
            .arg(unique_token())
            .invoke_async(&mut self.redis.connection())
            .await
            .doing("take a place in the Zoho token refresh budget")
            .map_err(failed)?;
        Ok(if wait == 0 {
            Ok(())
        } else {
            Err(Duration::from_millis(wait))
        })
    }
}

//! Zoho calls in flight counted across pods: a sorted set of leases per portal and API,
//! scored by when each lease expires, so a slot held by a pod that died frees itself.

use std::time::Duration;

use async_trait::async_trait;

use crate::store::{Context, Redis, now_ms, unique_token};
use crate::zoho::{Api, SharedSlots};

/// Longest wait for a slot; past it the call runs under the pod's own limit (and a 429 from
/// Zoho is retried with backoff like any other).
const MAX_WAIT: Duration = Duration::from_secs(30);

const ACQUIRE: &str = r#"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"#;

/// The portal's concurrency limit shared through Redis.
pub struct RedisSlots {
    redis: Redis,
    portal: String,
    acquire: redis::Script,
}

impl RedisSlots {
    /// Slots of the portal `org_id`.
    pub fn new(redis: Redis, org_id: &str) -> Self {
        Self {
            redis,
            portal: org_id.to_owned(),
            acquire: redis::Script::new(ACQUIRE),
        }
    }

    fn key(&self, api: Api) -> String {
        self.redis
            .key(&format!("zoho-slots:{}:{}", self.portal, api.as_str()))
    }
}

#[async_trait]
impl SharedSlots for RedisSlots {
    async fn acquire(&self, api: Api, limit: usize, hold: Duration) -> Option<String> {
        let lease = unique_token();
        let key = self.key(api);
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let taken: Result<i64, _> = self
                .acquire
                .key(&key)
                .arg(now_ms())
                .arg(hold.as_millis() as u64)
                .arg(limit)
                .arg(&lease)
                .invoke_async(&mut self.redis.connection())
                .await
                .doing("take a Zoho call slot");
            match taken {
                Ok(1) => return Some(lease),
                Ok(_) if started.elapsed() < MAX_WAIT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Ok(_) => {
                    tracing::warn!(api = api.as_str(), "no shared Zoho call slot in time");
                    return None;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "Zoho call slots not shared for this call");
                    return None;
                }
            }
        }
    }

    async fn release(&self, api: Api, lease: &str) {
        let _: Result<i64, _> = redis::cmd("ZREM")
            .arg(self.key(api))
            .arg(lease)
            .query_async(&mut self.redis.connection())
            .await
            .doing("free a Zoho call slot");
    }
}

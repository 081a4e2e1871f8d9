//! The step ledger in Redis, so a job taken over by another pod repeats no write its first
//! pod already made (DESIGN invariant 3).
//!
//! One hash per job (`ledger:<job key>`: step → detail), kept a week: longer than any retry
//! schedule, and long enough for a dead letter replayed days later to skip what was done.

use std::time::Duration;

use async_trait::async_trait;

use super::{LedgerError, StepLedger};
use crate::store::{Context, Redis, RedisError};

/// How long a job's completed steps are remembered.
const RETENTION_SECONDS: u64 = 7 * 24 * 3600;
/// Tries of one ledger command before giving up.
const TRIES: u32 = 4;

/// Step completion per job, shared by every pod.
pub struct RedisLedger {
    redis: Redis,
}

impl RedisLedger {
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, job: &str) -> String {
        self.redis.key(&format!("ledger:{job}"))
    }

    async fn read(&self, job: &str, step: &str) -> Result<Option<String>, RedisError> {
        redis::cmd("HGET")
            .arg(self.key(job))
            .arg(step)
            .query_async(&mut self.redis.connection())
            .await
            .doing("read the step ledger")
    }

    async fn write(&self, job: &str, step: &str, detail: &str) -> Result<(), RedisError> {
        let key = self.key(job);
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(step)
            .arg(detail)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(RETENTION_SECONDS)
            .ignore()
            .query_async::<()>(&mut self.redis.connection())
            .await
            .doing("record a completed step")
    }
}

/// Waits a little longer after each failed try.
async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
}

#[async_trait]
impl StepLedger for RedisLedger {
    async fn completed(&self, job: &str, step: &str) -> Result<Option<String>, LedgerError> {
        let mut attempt = 1;
        loop {
            match self.read(job, step).await {
                Ok(detail) => return Ok(detail),
                Err(error) if attempt >= TRIES => return Err(LedgerError(error.to_string())),
                Err(_) => pause(attempt).await,
            }
            attempt += 1;
        }
    }

    async fn record(&self, job: &str, step: &str, detail: &str) {
        // The write succeeded in Zoho; not recording it would let a later attempt repeat it,
        // so this tries harder than a read, and says so loudly when it cannot.
        for attempt in 1..=TRIES * 2 {
            match self.write(job, step, detail).await {
                Ok(()) => return,
                Err(error) if attempt == TRIES * 2 => {
                    tracing::error!(step, error = %error, "a completed step could not be recorded");
                }
                Err(_) => pause(attempt).await,
            }
        }
    }
}

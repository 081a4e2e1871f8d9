//! Zoho's concurrency limit is per portal, not per process: with several pods, each pod's own
//! semaphore is not enough. A [`SharedSlots`] (Redis) counts the calls in flight across every
//! process; each process's semaphore still bounds its own share first, so the shared store is
//! asked only by calls that would run anyway.

mod redis;

use std::time::Duration;

use async_trait::async_trait;

use super::error::Api;

pub use self::redis::RedisSlots;

/// Slots for calls in flight shared by every process of a deployment.
#[async_trait]
pub trait SharedSlots: Send + Sync {
    /// Waits for one of `limit` slots of `api`; the slot frees itself after `hold` if it is
    /// never released (its process died). `None` when the store cannot be used: the call then
    /// runs under the process's own limit only.
    async fn acquire(&self, api: Api, limit: usize, hold: Duration) -> Option<String>;
    /// Frees the slot `lease` of `api`.
    async fn release(&self, api: Api, lease: &str);
}

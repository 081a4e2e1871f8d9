//! The Redis connection every shared store is built on: connecting, key prefixes, timeouts and
//! errors that name the failed action. The bottom layer of the Redis backend; it knows none of
//! the stores.
//!
//! With several replicas behind a Service (and an autoscaler adding and removing them), what
//! one pod knows alone is not enough: a job must survive its pod, a duplicate must be seen
//! whichever pod it reaches, and the Zoho token budget and API concurrency are per portal,
//! not per pod. Each concern keeps its Redis implementation beside its memory one:
//!
//! - `queue::redis` (beside the memory queue) keeps the jobs;
//! - `workflow::ledger::RedisLedger` remembers which writes of a job succeeded, so a reclaimed
//!   job repeats none;
//! - `zoho::token::RedisTokenStore` shares one Zoho access token between pods, refreshed by one
//!   of them at a time;
//! - `zoho::slots::RedisSlots` limits Zoho calls in flight across pods;
//! - `decisions::RedisDecisions` keeps recent decision reports for every pod's review console;
//! - `reconcile` finds ticket changes whose webhook never arrived.
//!
//! The Redis URL may carry a password, so it is a [`Secret`] and never appears in a log line
//! or an error; errors name the action that failed and Redis's error kind only.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Secret;

/// The environment variable holding the Redis URL (`redis://` or `rediss://` for TLS).
pub const REDIS_URL_VAR: &str = "DESKHOOK_REDIS_URL";
/// Longest wait for one ordinary command; a slower Redis counts as unavailable (503).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A Redis command that failed. Carries Redis's error category and code only: the full
/// message may quote the command (keys, ticket ids) and the URL may carry a password.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}: Redis error ({kind})")]
pub struct RedisError {
    pub action: &'static str,
    pub kind: String,
}

impl RedisError {
    pub fn new(action: &'static str, error: &redis::RedisError) -> Self {
        let kind = match error.code() {
            Some(code) => code.to_owned(),
            None if error.is_timeout() => "timeout".to_owned(),
            None if error.is_io_error() || error.is_connection_dropped() => "connection".to_owned(),
            None => format!("{:?}", error.kind()),
        };
        Self { action, kind }
    }
}

/// Extension to name the failed action of a Redis result.
pub trait Context<T> {
    fn doing(self, action: &'static str) -> Result<T, RedisError>;
}

impl<T> Context<T> for redis::RedisResult<T> {
    fn doing(self, action: &'static str) -> Result<T, RedisError> {
        self.map_err(|e| RedisError::new(action, &e))
    }
}

/// Why a connection to Redis could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("{REDIS_URL_VAR} is not set: spec.queue.backend redis needs it")]
    MissingUrl,
    #[error("{REDIS_URL_VAR} is not a valid redis:// or rediss:// URL")]
    InvalidUrl,
    #[error("failed to set up the Redis connection")]
    Connection,
}

/// A connection to Redis and the prefix of every key deskhook uses. Cheap to clone: clones
/// share one multiplexed connection, re-established in the background after a failure.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    connection: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A lazy connection: nothing is sent until the first command, so a pod starts (not
    /// ready, answering 503) while Redis is down, and recovers when it comes back.
    pub fn connect(url: &Secret, prefix: &str) -> Result<Self, RedisSetupError> {
        let client = redis::Client::open(url.expose()).map_err(|_| RedisSetupError::InvalidUrl)?;
        let connection = manager(&client, COMMAND_TIMEOUT)?;
        Ok(Self {
            client,
            connection,
            prefix: prefix.to_owned(),
        })
    }

    /// The shared connection for ordinary commands.
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// A connection of its own, for commands that block (`XREADGROUP … BLOCK`): on the
    /// shared, pipelined connection they would hold up every other command behind them.
    pub fn dedicated(&self, timeout: Duration) -> Result<ConnectionManager, RedisSetupError> {
        manager(&self.client, timeout)
    }

    /// `{prefix}:{name}`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
}

fn manager(
    client: &redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, RedisSetupError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(timeout))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|_| RedisSetupError::Connection)
}

/// Milliseconds since the Unix epoch: the time every pod agrees on (roughly).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A value unique to this call, for lock owners and lease ids.
pub fn unique_token() -> String {
    use std::hash::{BuildHasher, Hasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u64(now_ms());
    format!("{:x}-{:016x}", std::process::id(), hasher.finish())
}

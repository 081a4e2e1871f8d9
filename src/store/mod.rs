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
//! Every key of one deployment shares one hash tag, `{prefix}:name`, so every script's keys
//! are in one slot: a Redis Cluster (or a managed Redis in cluster mode) runs them like a
//! single Redis would. The price is that one deployment's keys live on one shard; several
//! deployments (prefixes) spread over the shards.
//!
//! The Redis URL may carry a password, so it is a [`Secret`] and never appears in a log line
//! or an error; errors name the action that failed and Redis's error kind only.

pub(crate) mod batch;

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::Secret;

/// The environment variable holding the Redis URL (`redis://` or `rediss://` for TLS).
pub const REDIS_URL_VAR: &str = "DESKHOOK_REDIS_URL";
/// Longest wait for one ordinary command; a slower Redis counts as unavailable (503).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// URL schemes that name a Redis Cluster (a seed node of it), plain or over TLS.
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis+cluster://", "redis://"),
    ("rediss+cluster://", "rediss://"),
];

/// A Redis command that failed. Carries Redis's error category and code only: the full
/// message may quote the command (keys, ticket ids) and the URL may carry a password.
#[derive(Clone, Debug, thiserror::Error)]
#[error("failed to {action}: Redis error ({kind})")]
pub struct RedisError {
    pub action: &'static str,
    pub kind: String,
}

impl RedisError {
    /// What the failure says about the deployment, for the one log line a pod writes when
    /// Redis stops answering: a cluster's redirection or slot refusal is a setting to fix,
    /// not an outage to wait out.
    pub fn diagnosis(&self) -> &'static str {
        match self.kind.as_str() {
            "MOVED" | "ASK" => {
                "Redis answered MOVED: it is a Redis Cluster; connect cluster-aware \
                 (DESKHOOK_REDIS_CLUSTER=true or a redis+cluster:// URL)"
            }
            // deskhook's own keys share one slot: only a cluster reached as a single server
            // sees them spread (the upgrade's rename of the old key names).
            "CROSSSLOT" => {
                "Redis refused keys of different slots (CROSSSLOT): it is a Redis Cluster; \
                 connect cluster-aware (DESKHOOK_REDIS_CLUSTER=true or a redis+cluster:// URL)"
            }
            "CLUSTERDOWN" => "the Redis Cluster is down (CLUSTERDOWN): not every slot is served",
            "OOM" => "Redis is full (OOM: used memory is past its maxmemory)",
            _ => "Redis is unreachable",
        }
    }

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
    #[error("{REDIS_URL_VAR} is not a valid redis://, rediss:// or redis+cluster:// URL")]
    InvalidUrl,
    #[error("failed to set up the Redis connection")]
    Connection,
}

/// Whether the URL names one Redis (or a primary behind a proxy or Sentinel-managed address)
/// or a Redis Cluster, whose nodes answer `MOVED` for keys of other slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Cluster,
}

impl Topology {
    /// `Cluster` when a `--redis-cluster` flag (`DESKHOOK_REDIS_CLUSTER`) is set.
    pub fn from_flag(cluster: bool) -> Self {
        if cluster {
            Self::Cluster
        } else {
            Self::Standalone
        }
    }
}

/// A connection to Redis and the prefix of every key deskhook uses. Cheap to clone: clones
/// share one multiplexed connection, re-established in the background after a failure.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    connection: Connection,
    prefix: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("topology", &self.topology())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A lazy connection: nothing is sent until the first command, so a pod starts (not
    /// ready, answering 503) while Redis is down, and recovers when it comes back. A
    /// `redis+cluster://` (or `rediss+cluster://`) URL connects to a Redis Cluster.
    pub fn connect(url: &Secret, prefix: &str) -> Result<Self, RedisSetupError> {
        let topology = if cluster_url(url.expose()).is_some() {
            Topology::Cluster
        } else {
            Topology::Standalone
        };
        Self::connect_to(url, prefix, topology)
    }

    /// [`Redis::connect`], with the topology given (`DESKHOOK_REDIS_CLUSTER`) rather than read
    /// from the URL's scheme; a cluster scheme still means a cluster.
    pub fn connect_to(
        url: &Secret,
        prefix: &str,
        topology: Topology,
    ) -> Result<Self, RedisSetupError> {
        let text = url.expose();
        let client = match (cluster_url(text), topology) {
            (Some(plain), _) => Client::cluster(&plain)?,
            (None, Topology::Cluster) => Client::cluster(text)?,
            (None, Topology::Standalone) => Client::Single(Box::new(
                redis::Client::open(text).map_err(|_| RedisSetupError::InvalidUrl)?,
            )),
        };
        let connection = client.connect(COMMAND_TIMEOUT)?;
        Ok(Self {
            client,
            connection,
            prefix: prefix.to_owned(),
        })
    }

    pub fn topology(&self) -> Topology {
        match self.client {
            Client::Single(_) => Topology::Standalone,
            Client::Cluster(_) => Topology::Cluster,
        }
    }

    /// The shared connection for ordinary commands.
    pub fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// A connection of its own, for commands that block (`XREADGROUP … BLOCK`): on the
    /// shared, pipelined connection they would hold up every other command behind them.
    pub fn dedicated(&self, timeout: Duration) -> Result<Connection, RedisSetupError> {
        self.client.connect(timeout)
    }

    /// `{prefix}:{name}`: the braces make the prefix the hash tag, one slot for every key.
    pub fn key(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.prefix)
    }

    /// `prefix:name`, the name versions before the hash tag gave the same key.
    pub fn legacy_key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }
}

/// The plain URL of a `redis+cluster://` (or `rediss+cluster://`) one.
fn cluster_url(url: &str) -> Option<String> {
    CLUSTER_SCHEMES.iter().find_map(|(cluster, plain)| {
        let rest = url.get(..cluster.len())?;
        rest.eq_ignore_ascii_case(cluster)
            .then(|| format!("{plain}{}", &url[cluster.len()..]))
    })
}

/// What connections are made from.
#[derive(Clone)]
enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl Client {
    fn cluster(url: &str) -> Result<Self, RedisSetupError> {
        ClusterClient::builder([url])
            .retries(2)
            .max_retry_wait(1000)
            .build()
            .map(|client| Self::Cluster(Box::new(client)))
            .map_err(|_| RedisSetupError::InvalidUrl)
    }

    /// A lazy connection whose commands wait at most `timeout` for an answer.
    fn connect(&self, timeout: Duration) -> Result<Connection, RedisSetupError> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(1));
                ConnectionManager::new_lazy_with_config(client.as_ref().clone(), config)
                    .map(Connection::Single)
                    .map_err(|_| RedisSetupError::Connection)
            }
            Self::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_response_timeout(timeout)
                    .set_connection_timeout(CONNECT_TIMEOUT);
                Ok(Connection::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }
}

/// A multiplexed connection to one Redis or to a Redis Cluster (which routes each command to
/// the node serving its key's slot and follows `MOVED` after a resharding).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cluster_scheme_names_a_cluster_and_its_plain_url() {
        assert_eq!(
            cluster_url("redis+cluster://:pw@10.0.0.1:7000/").as_deref(),
            Some("redis://:pw@10.0.0.1:7000/")
        );
        assert_eq!(
            cluster_url("REDISS+CLUSTER://redis.example:6380").as_deref(),
            Some("rediss://redis.example:6380")
        );
        assert_eq!(cluster_url("redis://10.0.0.1:6379/0"), None);
        let url = |text: &str| Secret::new(text.to_owned());
        let single = Redis::connect(&url("redis://127.0.0.1:1/"), "p").unwrap();
        assert_eq!(single.topology(), Topology::Standalone);
        let cluster = Redis::connect(&url("redis+cluster://127.0.0.1:1/"), "p").unwrap();
        assert_eq!(cluster.topology(), Topology::Cluster);
        let forced = Redis::connect_to(&url("redis://127.0.0.1:1/"), "p", Topology::Cluster);
        assert_eq!(forced.unwrap().topology(), Topology::Cluster);
        assert!(matches!(
            Redis::connect(&url("http://127.0.0.1:1/"), "p"),
            Err(RedisSetupError::InvalidUrl)
        ));
    }

    #[tokio::test]
    async fn every_key_shares_the_prefix_as_its_hash_tag() {
        let redis =
            Redis::connect(&Secret::new("redis://127.0.0.1:1/".to_owned()), "team.a").unwrap();
        assert_eq!(redis.key("seen:ab"), "{team.a}:seen:ab");
        assert_eq!(redis.legacy_key("pending"), "team.a:pending");
    }

    #[test]
    fn a_clusters_answers_are_told_apart_from_an_outage() {
        let error = |kind: &str| RedisError {
            action: "store events",
            kind: kind.to_owned(),
        };
        assert!(
            error("MOVED")
                .diagnosis()
                .contains("DESKHOOK_REDIS_CLUSTER")
        );
        assert!(error("CROSSSLOT").diagnosis().contains("CROSSSLOT"));
        assert!(error("OOM").diagnosis().contains("maxmemory"));
        assert_eq!(error("connection").diagnosis(), "Redis is unreachable");
    }
}

//! The Redis queue: one stream shared by every pod, each pod a consumer of one group.
//!
//! Keys (all named `{prefix}:…`: the prefix is their hash tag, so every script's keys share
//! one slot, as Redis Cluster requires):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `stream` | stream | one entry per ticket with work to do ("ticket T is ready"); acknowledged entries until the upkeep trims them |
//! | `pending` | hash | ticket → the job waiting for it (a newer event replaces it: coalescing) |
//! | `running` | hash | stream entry id → the job being run for it, and its attempt count |
//! | `queued` | set | tickets that have a live stream entry |
//! | `dead` | stream | jobs that failed for good, with their last error |
//! | `seen:<hash>` | string with TTL | deliveries accepted within the deduplication window |
//! | `holds` | hash | ticket → lease expiry (epoch ms) of a manual run holding it |
//! | `job-seq` | counter | the last job id given |
//! | `ticket:<id>` | string with TTL | when a run of the ticket last finished, for reconciliation |
//!
//! Per-ticket exclusion across pods: a ticket has at most one live stream entry (the `queued`
//! set says which), and that entry stays in the group's pending-entries list, owned by the
//! pod running it, until the run is acknowledged. Events arriving meanwhile wait in `pending`
//! (the newest replaces older ones) and are put back on the stream by the acknowledgement:
//! exactly one coalesced re-run. The ownership is a lease: the owner renews it (`XCLAIM …
//! JUSTID`) while it works; when a pod dies, its entries go idle and another pod takes them
//! over with `XAUTOCLAIM` after `claimIdleSeconds`, with the job it was running (stored in
//! `running`, so step completion recorded in the ledger under the same job id is found).
//!
//! A manual run takes its ticket the same way, without a stream entry: it joins `queued` (so
//! events wait in `pending`) and records a lease in `holds`, renewed like an entry's. Its end
//! puts a waiting event on the stream; when its pod dies, any pod's upkeep ends the expired
//! hold the same way, so a ticket is never left taken.
//!
//! Every state change is one Lua script, so Redis applies it atomically: a pod dying between
//! two commands never leaves a ticket half-moved. `accept` returns only after Redis has
//! answered the script; whether that write survives a Redis crash depends on Redis's own
//! persistence (`appendonly yes`, `appendfsync always` for no loss at all).
//!
//! Under load the round trips are shared: the accepts that arrive together are stored by one
//! script call (`accept`, a group commit), the runs that end together are ended by one
//! (`finish`), and one read takes as many entries as the pod has workers, bound by one call.
//! A queued job keeps only the payload members the workflow reads (`job`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus::{IntCounter, IntGauge};
use redis::Value;
use serde::Serialize;
use tokio::sync::Notify;

mod accept;
mod finish;
mod job;
mod legacy;

use self::accept::{Accepts, Entry, Outcome};
use self::finish::{Done, Finishes};
use self::job::StoredJob;
use self::legacy::Legacy;
use super::{AcceptPolicy, Accepted, Job, Queue, QueueError};
use crate::event::{DedupeKey, TicketEvent};
use crate::metrics::Metrics;
use crate::store::{Connection, Context, Redis, RedisError, RedisSetupError, Topology, now_ms};

/// [`RedisQueue::health`]: no command ran yet, the last one succeeded, the last one failed.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// The consumer group every pod belongs to.
const GROUP: &str = "workers";
/// Longest wait of one blocking read; claims re-check local work and shutdown this often.
const BLOCK: Duration = Duration::from_millis(1000);
/// Most stream entries one read takes ([`RedisQueueOptions::read_batch`]).
pub const MAX_READ_BATCH: usize = 64;
/// Entries taken over per `XAUTOCLAIM`.
const RECLAIM_BATCH: usize = 20;
/// How long the time of a ticket's last event or run is remembered for reconciliation.
const TOUCH_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// How the Redis queue behaves (from `spec.queue.redis`, read at start).
#[derive(Clone, Debug)]
pub struct RedisQueueOptions {
    /// This pod's consumer name (`POD_NAME`): unique per live pod.
    pub consumer: String,
    /// Idle time after which another pod takes a job over.
    pub claim_idle: Duration,
    /// Runs of a job at most, the first included.
    pub max_attempts: u32,
    /// Dead letters kept at most; the oldest are trimmed (and counted) to make room.
    pub dead_letter_max: usize,
    /// The payload members the workflow reads ([`crate::workflow::payload_fields`]): a
    /// stored job keeps only these (all of it when `None`).
    pub payload_fields: Option<&'static [&'static str]>,
    /// Stream entries read at once: about the pod's workers, so one read feeds them all.
    pub read_batch: usize,
}

/// Default of [`RedisQueueOptions::dead_letter_max`] (`DESKHOOK_DEAD_LETTER_MAX`).
pub const DEFAULT_DEAD_LETTER_MAX: usize = 10_000;

/// A job this pod holds: which stream entry it came from.
#[derive(Clone, Debug)]
struct Held {
    entry: String,
    ticket: String,
}

/// The keys of one queue.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub stream: String,
    pub pending: String,
    pub running: String,
    pub queued: String,
    pub dead: String,
    pub sequence: String,
    pub holds: String,
    redis: Redis,
}

impl Keys {
    pub fn new(redis: &Redis) -> Self {
        Self {
            stream: redis.key("stream"),
            pending: redis.key("pending"),
            running: redis.key("running"),
            queued: redis.key("queued"),
            dead: redis.key("dead"),
            sequence: redis.key("job-seq"),
            holds: redis.key("holds"),
            redis: redis.clone(),
        }
    }

    fn seen(&self, dedupe_key: &DedupeKey) -> String {
        let mut key = self.redis.key("seen:");
        key.push_str(&job::key_hex(dedupe_key));
        key
    }

    /// When a run of the ticket last finished (epoch ms), for reconciliation.
    pub fn touched(&self, ticket: &str) -> String {
        self.redis.key(&format!("ticket:{ticket}"))
    }
}

/// Binds the jobs of delivered stream entries to them: for each entry (pairs of entry and
/// ticket from `ARGV[2]` on), the job already bound (when `ARGV[1]` is 1: a takeover, whose
/// attempt is counted) or the ticket's waiting job, which gets its id here. Returns per entry
/// {job, attempt, id}, or 0 when there is no job. The id is stored beside the job, not in
/// it: a job is kilobytes, and splicing it in Lua cost more than the rest of an accept.
const TAKE_BATCH: &str = r#"
local bound = {}
local takeover = ARGV[1] == '1'
for i = 2, #ARGV, 2 do
  local entry, ticket = ARGV[i], ARGV[i + 1]
  local attempts, id = entry .. ':attempts', entry .. ':id'
  -- Only an entry taken over can have a job bound already.
  local job = takeover and redis.call('HGET', KEYS[2], entry)
  if job then
    local attempt = redis.call('HINCRBY', KEYS[2], attempts, tonumber(ARGV[1]))
    table.insert(bound, {job, attempt, redis.call('HGET', KEYS[2], id) or 0})
  else
    job = redis.call('HGET', KEYS[1], ticket)
    if job then
      local number = redis.call('INCR', KEYS[3])
      redis.call('HDEL', KEYS[1], ticket)
      redis.call('HSET', KEYS[2], entry, job, attempts, 1, id, number)
      table.insert(bound, {job, 1, number})
    else
      table.insert(bound, 0)
    end
  end
end
return bound
"#;

/// Trims the stream's head that every consumer is done with: the entries before the oldest
/// still pending (delivered, not acknowledged) or, with none pending, before the last one
/// delivered. Entries after it were never read. Returns the entries removed.
const TRIM: &str = r#"
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local delivered
for _, group in ipairs(groups) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  if name == ARGV[1] then delivered = last end
end
if not delivered then return 0 end
local oldest = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
return redis.call('XTRIM', KEYS[1], 'MINID', '~', oldest or delivered)
"#;

/// Renews this pod's ownership of its entries; returns the ones another pod took over.
const RENEW: &str = r#"
local lost = {}
for i = 3, #ARGV do
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #owned == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"#;

/// Sets a retried job's attempt count, if this pod still owns its entry.
const RETRY: &str = r#"
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #owned == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[3] .. ':attempts', ARGV[4])
return 1
"#;

/// Puts a dead-lettered job back: as the ticket's waiting job (keeping its id, so steps
/// already done are not repeated), unless a newer event waits, which covers it.
const REPLAY: &str = r#"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 'missing' end
local fields = found[1][2]
local ticket, job, id
for i = 1, #fields, 2 do
  if fields[i] == 'ticket' then ticket = fields[i + 1] end
  if fields[i] == 'job' then job = fields[i + 1] end
  if fields[i] == 'job_id' then id = fields[i + 1] end
end
redis.call('XDEL', KEYS[1], ARGV[1])
if not ticket or not job or job == '' then return 'unreadable' end
-- The job keeps its id, so the steps it already did are not repeated.
if id and id ~= '0' and string.sub(job, 1, 6) ~= '{"id":' then
  job = '{"id":' .. id .. ',' .. string.sub(job, 2)
end
if redis.call('HEXISTS', KEYS[2], ticket) == 1 then return 'coalesced' end
redis.call('HSET', KEYS[2], ticket, job)
if redis.call('SADD', KEYS[3], ticket) == 1 then
  redis.call('XADD', KEYS[4], '*', 'ticket', ticket)
end
return 'queued'
"#;

/// Takes a ticket for a manual run unless a job of it is waiting or running. `ARGV[2]` is
/// the lease's expiry.
const HOLD: &str = r#"
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"#;

/// Ends a manual run's hold: by its pod (`ARGV[4]` = '0'), or by any pod once its lease
/// expired (`ARGV[4]` = '1'). A waiting event goes on the stream, else the ticket is freed.
/// Returns 0 when there was no such hold (already ended), 2 for a re-run, 1 otherwise.
const RELEASE: &str = r#"
local expiry = redis.call('HGET', KEYS[2], ARGV[1])
if not expiry then return 0 end
if ARGV[4] == '1' and tonumber(expiry) > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SET', KEYS[5], ARGV[2], 'EX', ARGV[3])
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[4], '*', 'ticket', ARGV[1])
  return 2
end
redis.call('SREM', KEYS[1], ARGV[1])
return 1
"#;

/// Extends the leases of this pod's holds that still exist. `ARGV[1]` is the new expiry.
const RENEW_HOLDS: &str = r#"
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
  end
end
return 0
"#;

struct Scripts {
    hold: redis::Script,
    release: redis::Script,
    renew_holds: redis::Script,
    take: redis::Script,
    trim: redis::Script,
    renew: redis::Script,
    retry: redis::Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            hold: redis::Script::new(HOLD),
            release: redis::Script::new(RELEASE),
            renew_holds: redis::Script::new(RENEW_HOLDS),
            take: redis::Script::new(TAKE_BATCH),
            trim: redis::Script::new(TRIM),
            renew: redis::Script::new(RENEW),
            retry: redis::Script::new(RETRY),
        }
    }
}

/// Metrics of the Redis backend.
struct QueueMetrics {
    dead_letters: IntGauge,
    dead_letters_trimmed: IntCounter,
    redis_up: IntGauge,
    reclaimed: IntCounter,
    lost: IntCounter,
}

impl QueueMetrics {
    fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let registry = metrics.registry();
        let dead_letters = IntGauge::new(
            "queue_dead_letters",
            "Jobs in the Redis dead-letter stream (deskhook queue dead-letters).",
        )?;
        let redis_up = IntGauge::new(
            "queue_redis_up",
            "1 when the last Redis command of this pod succeeded, else 0.",
        )?;
        let reclaimed = IntCounter::new(
            "queue_reclaimed_total",
            "Jobs this pod took over from a pod that stopped renewing them.",
        )?;
        let lost = IntCounter::new(
            "queue_lost_leases_total",
            "Jobs another pod took over while this pod still held them (renewal came too late).",
        )?;
        for metric in [&dead_letters, &redis_up] {
            registry.register(Box::new(metric.clone()))?;
        }
        let dead_letters_trimmed = IntCounter::new(
            "queue_dead_letters_trimmed_total",
            "Dead letters dropped, oldest first, because the stream reached its cap.",
        )?;
        for metric in [&reclaimed, &lost, &dead_letters_trimmed] {
            registry.register(Box::new(metric.clone()))?;
        }
        Ok(Self {
            dead_letters,
            dead_letters_trimmed,
            redis_up,
            reclaimed,
            lost,
        })
    }
}

/// The shared queue. Build it with [`RedisQueue::start`], which also starts its upkeep.
pub struct RedisQueue {
    connection: Connection,
    /// Accepts share script calls through it.
    accepts: Accepts,
    /// So do the ends of runs.
    finishes: Finishes,
    /// Blocking reads only; one at a time, so workers take turns waiting on the stream.
    reader: tokio::sync::Mutex<Connection>,
    keys: Keys,
    options: RedisQueueOptions,
    scripts: Scripts,
    metrics: QueueMetrics,
    /// Jobs this pod holds, by job id.
    held: Mutex<HashMap<u64, Held>>,
    /// Tickets this pod's manual runs hold, by job id.
    holds: Mutex<HashMap<u64, String>>,
    /// Jobs due to run here: retries whose delay passed, and jobs taken over.
    local: Mutex<VecDeque<Job>>,
    wake: Notify,
    closed: AtomicBool,
    /// Whether the last Redis command succeeded ([`UP`]), failed ([`DOWN`]), or none ran yet.
    health: AtomicU8,
    depth: AtomicUsize,
    group_ready: AtomicBool,
    /// The previous version's keys, on a single Redis (a cluster never held them).
    legacy: Option<Legacy>,
}

impl RedisQueue {
    /// Connects (lazily) and starts the upkeep task: lease renewal, takeover of abandoned
    /// jobs, and the depth gauges.
    pub fn start(
        redis: &Redis,
        options: RedisQueueOptions,
        metrics: &Metrics,
    ) -> Result<Arc<Self>, RedisSetupError> {
        let reader = redis.dedicated(BLOCK + crate::store::COMMAND_TIMEOUT)?;
        let queue_metrics =
            QueueMetrics::register(metrics).map_err(|_| RedisSetupError::Connection)?;
        let keys = Keys::new(redis);
        let queue = Arc::new(Self {
            accepts: accept::start(redis.connection(), keys.clone()),
            finishes: finish::start(
                redis.connection(),
                keys.clone(),
                options.consumer.clone(),
                options.dead_letter_max,
                TOUCH_TTL_SECONDS,
            ),
            connection: redis.connection(),
            reader: tokio::sync::Mutex::new(reader),
            keys,
            options,
            scripts: Scripts::new(),
            metrics: queue_metrics,
            held: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            local: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            health: AtomicU8::new(UNKNOWN),
            depth: AtomicUsize::new(0),
            group_ready: AtomicBool::new(false),
            legacy: (redis.topology() == Topology::Standalone).then(|| Legacy::new(redis)),
        });
        tokio::spawn(upkeep(Arc::downgrade(&queue)));
        Ok(queue)
    }

    fn conn(&self) -> Connection {
        self.connection.clone()
    }

    /// Records whether Redis answered, for readiness and the `queue_redis_up` gauge.
    fn observe<T>(&self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        let up = result.is_ok();
        let previous = self
            .health
            .swap(if up { UP } else { DOWN }, Ordering::AcqRel);
        if previous != if up { UP } else { DOWN } {
            if up {
                if previous == DOWN {
                    tracing::info!("Redis is reachable again");
                }
            } else if let Err(error) = &result {
                tracing::error!(
                    error = %error,
                    "{}: deliveries get 503",
                    error.diagnosis()
                );
            }
        }
        self.metrics.redis_up.set(i64::from(up));
        result
    }

    async fn ensure_group(&self) -> Result<(), RedisError> {
        if self.group_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(RedisError::new("create the consumer group", &e)),
        }
        self.group_ready.store(true, Ordering::Release);
        Ok(())
    }

    fn hold(&self, job: &Job, entry: &str) {
        self.lock_held().insert(
            job.id,
            Held {
                entry: entry.to_owned(),
                ticket: job.event.ticket_id.clone(),
            },
        );
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_holds(&self) -> std::sync::MutexGuard<'_, HashMap<u64, String>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn next_job_id(&self) -> Result<u64, RedisError> {
        redis::cmd("INCR")
            .arg(&self.keys.sequence)
            .query_async(&mut self.conn())
            .await
            .doing("allocate a job id")
    }

    /// Ends the hold on `ticket`: this pod's (`expired_only` false) or anyone's whose lease
    /// ran out.
    async fn release_hold(&self, ticket: &str, expired_only: bool) -> Result<i64, RedisError> {
        self.scripts
            .release
            .key(&self.keys.queued)
            .key(&self.keys.holds)
            .key(&self.keys.pending)
            .key(&self.keys.stream)
            .key(self.keys.touched(ticket))
            .arg(ticket)
            .arg(now_ms())
            .arg(TOUCH_TTL_SECONDS)
            .arg(if expired_only { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .doing("end a manual run's hold")
    }

    /// Extends the leases of this pod's holds, and ends the holds of pods that stopped
    /// renewing theirs.
    async fn upkeep_holds(&self) -> Result<(), RedisError> {
        let tickets: Vec<String> = self.lock_holds().values().cloned().collect();
        if !tickets.is_empty() {
            let mut invocation = self.scripts.renew_holds.key(&self.keys.holds);
            invocation.arg(self.hold_expiry());
            for ticket in &tickets {
                invocation.arg(ticket);
            }
            invocation
                .invoke_async::<i64>(&mut self.conn())
                .await
                .doing("renew manual run holds")?;
        }
        let all: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(&self.keys.holds)
            .query_async(&mut self.conn())
            .await
            .doing("read manual run holds")?;
        let now = now_ms();
        for (ticket, expiry) in all {
            if expiry <= now && self.release_hold(&ticket, true).await? != 0 {
                tracing::warn!(ticket_id = %ticket, "ended a manual run its pod stopped renewing");
            }
        }
        Ok(())
    }

    fn hold_expiry(&self) -> u64 {
        now_ms() + self.options.claim_idle.as_millis() as u64
    }

    fn lock_local(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads new entries for this pod (up to [`RedisQueueOptions::read_batch`], waiting up to
    /// [`BLOCK`] for the first) and binds their jobs: the first is returned, the others wait
    /// in `local` for this pod's other workers. `None` when a worker should look again: the
    /// read timed out, or another worker's read left work in `local` meanwhile.
    async fn read_new(&self) -> Result<Option<Job>, RedisError> {
        self.ensure_group().await?;
        let reply: redis::RedisResult<Value> = {
            // Workers take turns reading; one waiting for its turn also wakes for the work
            // another worker's read leaves in `local`.
            let mut reader = tokio::select! {
                reader = self.reader.lock() => reader,
                () = self.wake.notified() => return Ok(None),
            };
            // One that waited while the queue closed stops here, or a pod would take a second
            // per worker to stop; one that finds local work takes it instead of reading.
            if self.closed.load(Ordering::Acquire) || !self.lock_local().is_empty() {
                return Ok(None);
            }
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.options.consumer)
                .arg("COUNT")
                .arg(self.options.read_batch.max(1))
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.keys.stream)
                .arg(">")
                .query_async(&mut *reader)
                .await
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost its data (no persistence) or the stream was deleted.
                self.group_ready.store(false, Ordering::Release);
                return Err(RedisError::new("read the stream", &e));
            }
            Err(e) => return Err(RedisError::new("read the stream", &e)),
        };
        let entries = stream_entries(&reply);
        if entries.is_empty() {
            return Ok(None);
        }
        let bound = self.bind_all(&entries, false).await;
        self.depth
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(entries.len()))
            })
            .ok();
        // Entries whose binding failed stay in the group's pending list, unbound: after
        // `claimIdleSeconds` a pod (this one too) takes them over.
        let jobs: Vec<Job> = bound?.into_iter().flatten().collect();
        let mut jobs = jobs.into_iter();
        let first = jobs.next();
        let more = jobs.len();
        if more > 0 {
            self.lock_local().extend(jobs);
            self.wake.notify_waiters();
        }
        Ok(first)
    }

    /// Binds the jobs of `entries` (entry, ticket) with one script call; an entry without a
    /// job (or with an unreadable one) is finished at once. One result per entry.
    async fn bind_all(
        &self,
        entries: &[(String, String)],
        taken_over: bool,
    ) -> Result<Vec<Option<Job>>, RedisError> {
        let mut invocation = self.scripts.take.key(&self.keys.pending);
        invocation
            .key(&self.keys.running)
            .key(&self.keys.sequence)
            .arg(u32::from(taken_over));
        for (entry, ticket) in entries {
            invocation.arg(entry).arg(ticket);
        }
        let bound: Vec<Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .doing("bind jobs to their stream entries")?;
        let mut jobs = Vec::with_capacity(entries.len());
        for ((entry, ticket), bound) in entries.iter().zip(bound) {
            jobs.push(self.bound(entry, ticket, bound, taken_over).await);
        }
        Ok(jobs)
    }

    /// The job `TAKE_BATCH` bound to `entry`, if any. An entry left unfinished (Redis
    /// failed meanwhile) stays in the group's pending list and is taken over later.
    async fn bound(
        &self,
        entry: &str,
        ticket: &str,
        bound: Value,
        taken_over: bool,
    ) -> Option<Job> {
        let bound: Option<(String, u32, u64)> = redis::from_redis_value(bound).ok();
        let Some((stored, attempt, id)) = bound else {
            tracing::warn!(entry, "stream entry without a job; releasing its ticket");
            let finished = self.finish_entry(entry, ticket, None).await;
            let _ = self.observe(finished);
            return None;
        };
        let mut stored: StoredJob = match serde_json::from_str(&stored) {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(entry, error = %error, "unreadable job; dead-lettering it");
                let why = format!("unreadable job: {error}");
                let finished = self.finish_entry(entry, ticket, Some(why)).await;
                let _ = self.observe(finished);
                return None;
            }
        };
        // A job that carries its id (replayed, or queued by the previous version) keeps it.
        if stored.id == 0 {
            stored.id = id;
        }
        let job = stored.into_job(attempt);
        self.hold(&job, entry);
        if taken_over && attempt > self.options.max_attempts {
            // A job whose runs keep killing their pod must not take the whole deployment down.
            let why = format!("abandoned by its pod {} times", attempt - 1);
            self.dead_letter(&job, &why).await;
            return None;
        }
        Some(job)
    }

    /// Ends the run of an entry, with the others ending now; `dead` carries the error when
    /// dead-lettering.
    async fn finish_entry(
        &self,
        entry: &str,
        ticket: &str,
        dead: Option<String>,
    ) -> Result<finish::Finished, RedisError> {
        self.finishes
            .submit(Done {
                entry: entry.to_owned(),
                ticket: ticket.to_owned(),
                touched: self.keys.touched(ticket),
                dead,
            })
            .await
    }

    /// Finishes a held job, retrying briefly: a lost acknowledgement only means the job is
    /// taken over and run again later, which the ledger makes harmless, but it costs a delay.
    async fn finish(&self, job: &Job, dead: Option<&str>) {
        let Some(held) = self.lock_held().remove(&job.id) else {
            return;
        };
        for attempt in 1..=5u32 {
            let dead = dead.map(str::to_owned);
            let result = self.finish_entry(&held.entry, &held.ticket, dead).await;
            let result = result.map(|finish::Finished { code, trimmed }| {
                if trimmed > 0 {
                    self.metrics.dead_letters_trimmed.inc_by(trimmed);
                    tracing::warn!(
                        trimmed,
                        cap = self.options.dead_letter_max,
                        "the dead-letter stream is full; its oldest entries were dropped"
                    );
                }
                code
            });
            match self.observe(result) {
                Ok(-1) => {
                    self.metrics.lost.inc();
                    tracing::warn!(
                        ticket_id = %held.ticket,
                        "another pod took this job over before it finished"
                    );
                    return;
                }
                Ok(_) => {
                    self.wake.notify_one();
                    return;
                }
                Err(error) if attempt == 5 => {
                    tracing::error!(
                        ticket_id = %held.ticket,
                        error = %error,
                        "failed to acknowledge a job; another pod will take it over"
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await,
            }
        }
    }

    /// Renews the leases of held jobs; forgets the ones another pod took over.
    async fn renew(&self) -> Result<(), RedisError> {
        let entries: Vec<String> = self.lock_held().values().map(|h| h.entry.clone()).collect();
        if entries.is_empty() {
            return Ok(());
        }
        let mut invocation = self.scripts.renew.key(&self.keys.stream);
        invocation.arg(GROUP).arg(&self.options.consumer);
        for entry in &entries {
            invocation.arg(entry);
        }
        let lost: Vec<String> = invocation
            .invoke_async(&mut self.conn())
            .await
            .doing("renew job leases")?;
        if !lost.is_empty() {
            self.metrics.lost.inc_by(lost.len() as u64);
            tracing::warn!(jobs = lost.len(), "jobs were taken over by another pod");
        }
        Ok(())
    }

    /// Takes over jobs of pods that stopped renewing them.
    async fn reclaim(&self) -> Result<(), RedisError> {
        self.ensure_group().await?;
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(&self.options.consumer)
            .arg(self.options.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(RECLAIM_BATCH)
            .query_async(&mut self.conn())
            .await
            .doing("take over abandoned jobs")?;
        let claimed = match &reply {
            Value::Array(parts) if parts.len() >= 2 => entry_list(&parts[1]),
            _ => Vec::new(),
        };
        // Ours already (a renewal that came too late): nothing to take over.
        let claimed: Vec<(String, String)> = {
            let held = self.lock_held();
            claimed
                .into_iter()
                .filter(|(entry, _)| !held.values().any(|h| &h.entry == entry))
                .collect()
        };
        if claimed.is_empty() {
            return Ok(());
        }
        for job in self.bind_all(&claimed, true).await?.into_iter().flatten() {
            self.metrics.reclaimed.inc();
            tracing::warn!(
                ticket_id = %job.event.ticket_id,
                attempt = job.attempt,
                "took over a job its pod stopped renewing"
            );
            self.lock_local().push_back(job);
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Drops the acknowledged head of the stream.
    async fn trim(&self) -> Result<(), RedisError> {
        self.scripts
            .trim
            .key(&self.keys.stream)
            .arg(GROUP)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .doing("trim the stream")?;
        Ok(())
    }

    async fn refresh_gauges(&self) -> Result<(), RedisError> {
        let (depth, dead): (usize, i64) = redis::pipe()
            .cmd("HLEN")
            .arg(&self.keys.pending)
            .cmd("XLEN")
            .arg(&self.keys.dead)
            .query_async(&mut self.conn())
            .await
            .doing("read the queue depth")?;
        self.depth.store(depth, Ordering::Relaxed);
        self.metrics.dead_letters.set(dead);
        Ok(())
    }
}

/// Renews leases a few times per idle timeout, takes over abandoned jobs and refreshes the
/// gauges, until the queue is dropped.
async fn upkeep(queue: Weak<RedisQueue>) {
    let period = match queue.upgrade() {
        Some(q) => {
            (q.options.claim_idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(5))
        }
        None => return,
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renamed = false;
    loop {
        ticker.tick().await;
        let Some(queue) = queue.upgrade() else { return };
        if queue.legacy.is_some() && !renamed {
            match queue.observe(legacy::rename(&queue.keys.redis).await) {
                Ok(0) => renamed = true,
                Ok(count) => {
                    renamed = true;
                    tracing::info!(
                        keys = count,
                        "moved the Redis keys under the prefix's hash tag"
                    );
                }
                Err(_) => continue,
            }
        }
        if let Some(legacy) = &queue.legacy {
            let claim_idle_ms = queue.options.claim_idle.as_millis() as u64;
            let moved = legacy
                .pass(&mut queue.conn(), &queue.keys, claim_idle_ms)
                .await;
            match queue.observe(moved) {
                Ok(0) => {}
                Ok(jobs) => tracing::info!(jobs, "took over jobs queued by the previous version"),
                Err(error) => {
                    tracing::warn!(error = %error, "failed to move the previous version's jobs")
                }
            }
        }
        let renewed = match queue.renew().await {
            Ok(()) => queue.upkeep_holds().await,
            Err(error) => Err(error),
        };
        let renewed = queue.observe(renewed);
        if renewed.is_err() {
            continue;
        }
        // A closing pod takes nothing new over: the remaining pods will.
        if !queue.closed.load(Ordering::Acquire) {
            let reclaimed = queue.reclaim().await;
            if let Err(error) = queue.observe(reclaimed) {
                tracing::warn!(error = %error, "failed to take over abandoned jobs");
            }
        }
        let trimmed = queue.trim().await;
        let _ = queue.observe(trimmed);
        let gauges = queue.refresh_gauges().await;
        let _ = queue.observe(gauges);
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn accept(
        &self,
        event: TicketEvent,
        policy: AcceptPolicy,
    ) -> Result<Accepted, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let entry = Entry {
            seen: self.keys.seen(&event.dedupe_key),
            job: StoredJob::unnumbered(&event, self.options.payload_fields),
            ticket: event.ticket_id,
            window_seconds: policy.dedupe_window.as_secs(),
            capacity: policy.capacity,
        };
        let stored = self.accepts.submit(entry).await;
        let outcome = self.observe(stored).map_err(|error| {
            tracing::error!(error = %error, "event not stored in Redis");
            QueueError::Unavailable
        })?;
        match outcome {
            Outcome::Duplicate => Ok(Accepted::Duplicate),
            Outcome::Full => Err(QueueError::Full),
            Outcome::Coalesced => Ok(Accepted::Coalesced),
            Outcome::Queued => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(Accepted::Queued)
            }
        }
    }

    async fn claim(&self) -> Option<Job> {
        loop {
            if let Some(job) = self.lock_local().pop_front() {
                return Some(job);
            }
            if self.closed.load(Ordering::Acquire) {
                self.wake.notify_waiters();
                return None;
            }
            let read = self.read_new().await;
            match self.observe(read) {
                Ok(Some(job)) => return Some(job),
                Ok(None) => {}
                Err(_) => {
                    // Wait a little (or for local work) before asking Redis again.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                }
            }
        }
    }

    async fn take_ticket(&self, event: TicketEvent) -> Result<Option<Job>, QueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(QueueError::Closed);
        }
        let result = async {
            let id = self.next_job_id().await?;
            let taken: i64 = self
                .scripts
                .hold
                .key(&self.keys.queued)
                .key(&self.keys.holds)
                .arg(&event.ticket_id)
                .arg(self.hold_expiry())
                .invoke_async(&mut self.conn())
                .await
                .doing("take a ticket for a manual run")?;
            Ok::<_, RedisError>((id, taken == 1))
        }
        .await;
        let (id, taken) = self.observe(result).map_err(|error| {
            tracing::error!(error = %error, "manual run not started");
            QueueError::Unavailable
        })?;
        if !taken {
            return Ok(None);
        }
        self.lock_holds().insert(id, event.ticket_id.clone());
        Ok(Some(Job {
            id,
            event,
            attempt: 1,
            enqueued_at: Instant::now(),
        }))
    }

    async fn ack(&self, job: &Job) {
        let hold = self.lock_holds().remove(&job.id);
        match hold {
            Some(ticket) => {
                let released = self.release_hold(&ticket, false).await;
                if let Err(error) = self.observe(released) {
                    tracing::warn!(
                        ticket_id = %ticket,
                        error = %error,
                        "failed to end a manual run's hold; it ends when its lease runs out"
                    );
                }
                self.wake.notify_one();
            }
            None => self.finish(job, None).await,
        }
    }

    async fn retry(&self, job: Job, delay: Duration) {
        let mut job = job;
        job.attempt += 1;
        let held = self.lock_held().get(&job.id).cloned();
        if let Some(held) = held {
            // The attempt count is stored first, so a pod that takes the job over after this
            // pod died counts the failed run.
            let stored = self
                .scripts
                .retry
                .key(&self.keys.stream)
                .key(&self.keys.running)
                .arg(GROUP)
                .arg(&self.options.consumer)
                .arg(&held.entry)
                .arg(job.attempt)
                .invoke_async::<i64>(&mut self.conn())
                .await
                .doing("count a failed attempt");
            if let Err(error) = self.observe(stored) {
                tracing::warn!(error = %error, "attempt count not stored; retrying anyway");
            }
        }
        // The entry stays owned (and renewed) during the delay, so the ticket stays locked.
        tokio::time::sleep(delay).await;
        if self.lock_held().contains_key(&job.id) {
            self.lock_local().push_back(job);
            self.wake.notify_one();
        }
    }

    async fn dead_letter(&self, job: &Job, error: &str) {
        tracing::error!(
            ticket_id = %job.event.ticket_id,
            attempt = job.attempt,
            "job failed for good; moved to the dead-letter stream"
        );
        self.finish(job, Some(error)).await;
    }

    fn max_attempts(&self) -> u32 {
        self.options.max_attempts
    }

    fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn is_accepting(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.health.load(Ordering::Acquire) == UP
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_waiters();
    }

    fn unfinished(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .lock_held()
            .values()
            .map(|h| h.ticket.clone())
            .collect();
        ids.extend(self.lock_holds().values().cloned());
        ids.sort();
        ids.dedup();
        ids
    }
}

/// `[[stream, [[id, [field, value, …]], …]]]` (an `XREADGROUP` reply) as (id, ticket) pairs.
fn stream_entries(reply: &Value) -> Vec<(String, String)> {
    match reply {
        Value::Array(streams) => streams
            .iter()
            .flat_map(|stream| match stream {
                Value::Array(parts) if parts.len() == 2 => entry_list(&parts[1]),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.iter().flat_map(|(_, v)| entry_list(v)).collect(),
        _ => Vec::new(),
    }
}

/// `[[id, [field, value, …]], …]` as (id, ticket) pairs; deleted entries (nil) are skipped.
fn entry_list(value: &Value) -> Vec<(String, String)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let (id, fields) = entry_fields(entry)?;
            let ticket = fields.get("ticket")?.clone();
            Some((id, ticket))
        })
        .collect()
}

/// `[id, [field, value, …]]`, one stream entry, as its id and fields; `None` for a deleted one.
fn entry_fields(entry: &Value) -> Option<(String, HashMap<String, String>)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    Some((text(parts.first()?)?, field_pairs(parts.get(1)?)))
}

fn field_pairs(value: &Value) -> HashMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| Some((text(pair.first()?)?, text(pair.get(1)?)?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => HashMap::new(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What the queue holds, for `deskhook queue stats`.
#[derive(Clone, Debug, Serialize)]
pub struct QueueStats {
    /// Events waiting to run.
    pub waiting: u64,
    /// Jobs being run (or waiting for a retry) by some pod.
    pub running: u64,
    pub dead_letters: u64,
    /// Consumers (pods) of the group with how many jobs each holds and their idle time.
    pub consumers: Vec<ConsumerStats>,
}

/// One consumer of the group.
#[derive(Clone, Debug, Serialize)]
pub struct ConsumerStats {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
}

/// One job of the dead-letter stream.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    /// The dead-letter stream entry id, for `deskhook queue replay`.
    pub id: String,
    pub ticket_id: String,
    pub event_type: Option<String>,
    pub job_id: Option<u64>,
    pub attempts: u64,
    pub error: String,
    pub failed_at_ms: u64,
    pub consumer: String,
}

/// The result of replaying one dead letter.
#[derive(Clone, Debug, Serialize)]
pub struct Replayed {
    pub id: String,
    /// `queued`, `coalesced` (a newer event for the ticket waits and covers it), `missing`
    /// or `unreadable`.
    pub outcome: String,
}

/// Inspection and repair of a Redis queue from the command line, without running workers.
pub struct QueueAdmin {
    connection: Connection,
    keys: Keys,
}

impl QueueAdmin {
    pub fn new(redis: &Redis) -> Self {
        Self {
            connection: redis.connection(),
            keys: Keys::new(redis),
        }
    }

    pub async fn stats(&self) -> Result<QueueStats, RedisError> {
        let mut conn = self.connection.clone();
        let (waiting, dead): (u64, u64) = redis::pipe()
            .cmd("HLEN")
            .arg(&self.keys.pending)
            .cmd("XLEN")
            .arg(&self.keys.dead)
            .query_async(&mut conn)
            .await
            .doing("read the queue sizes")?;
        let consumers: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .query_async(&mut conn)
            .await;
        let consumers = match consumers {
            Ok(Value::Array(list)) => list
                .iter()
                .filter_map(|c| {
                    let fields = field_pairs(c);
                    Some(ConsumerStats {
                        name: fields.get("name")?.clone(),
                        pending: fields.get("pending")?.parse().ok()?,
                        idle_ms: fields.get("idle")?.parse().ok()?,
                    })
                })
                .collect(),
            // No stream or group yet: nothing has been queued.
            Ok(_) => Vec::new(),
            Err(e) if e.code() == Some("NOGROUP") || e.code() == Some("ERR") => Vec::new(),
            Err(e) => return Err(RedisError::new("list the consumers", &e)),
        };
        // Every entry a consumer holds is a job being run or waiting for its retry.
        let running = consumers.iter().map(|c| c.pending).sum();
        Ok(QueueStats {
            waiting,
            running,
            dead_letters: dead,
            consumers,
        })
    }

    /// The oldest `limit` dead letters.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, RedisError> {
        let reply: Value = redis::cmd("XRANGE")
            .arg(&self.keys.dead)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut self.connection.clone())
            .await
            .doing("read the dead-letter stream")?;
        let Value::Array(entries) = reply else {
            return Ok(Vec::new());
        };
        Ok(entries
            .iter()
            .filter_map(|entry| {
                let (id, fields) = entry_fields(entry)?;
                let job: Option<StoredJob> =
                    fields.get("job").and_then(|j| serde_json::from_str(j).ok());
                let number = |name: &str| fields.get(name).and_then(|v| v.parse().ok());
                Some(DeadLetter {
                    id,
                    ticket_id: fields.get("ticket").cloned().unwrap_or_default(),
                    event_type: job.as_ref().map(|j| j.event_type.clone()),
                    // Numbered beside the job since it is stored without its id.
                    job_id: job
                        .as_ref()
                        .map(|j| j.id)
                        .filter(|id| *id != 0)
                        .or_else(|| number("job_id")),
                    attempts: number("attempts").unwrap_or(0),
                    error: fields.get("error").cloned().unwrap_or_default(),
                    failed_at_ms: number("failed_at").unwrap_or(0),
                    consumer: fields.get("consumer").cloned().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// Puts one dead letter back on the queue.
    pub async fn replay(&self, id: &str) -> Result<Replayed, RedisError> {
        let outcome: String = redis::Script::new(REPLAY)
            .key(&self.keys.dead)
            .key(&self.keys.pending)
            .key(&self.keys.queued)
            .key(&self.keys.stream)
            .arg(id)
            .invoke_async(&mut self.connection.clone())
            .await
            .doing("replay a dead letter")?;
        Ok(Replayed {
            id: id.to_owned(),
            outcome,
        })
    }

    /// Puts every dead letter back on the queue, oldest first.
    pub async fn replay_all(&self) -> Result<Vec<Replayed>, RedisError> {
        let mut replayed = Vec::new();
        loop {
            let batch = self.dead_letters(100).await?;
            if batch.is_empty() {
                return Ok(replayed);
            }
            for letter in batch {
                replayed.push(self.replay(&letter.id).await?);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_from_both_protocol_shapes() {
        let entry = |id: &str, ticket: &str| {
            Value::Array(vec![
                Value::BulkString(id.into()),
                Value::Array(vec![
                    Value::BulkString(b"ticket".to_vec()),
                    Value::BulkString(ticket.into()),
                ]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"deskhook:stream".to_vec()),
            Value::Array(vec![entry("1-0", "7"), Value::Nil, entry("2-0", "8")]),
        ])]);
        assert_eq!(
            stream_entries(&reply),
            [
                ("1-0".to_owned(), "7".to_owned()),
                ("2-0".to_owned(), "8".to_owned())
            ]
        );
        assert!(stream_entries(&Value::Nil).is_empty());
    }
}

//! Keys named before every key moved under the prefix's hash tag (`deskhook:pending`, now
//! `{deskhook}:pending`), carried over so that an upgrade loses no waiting job.
//!
//! On a single Redis (a Redis Cluster never held them: it refused the old scripts) a pod's
//! start renames the keys that exist only under their old names. During a rolling upgrade the
//! previous version's pods keep writing the old keys, so the upkeep also moves their waiting
//! jobs over, except those of tickets an old pod is running (their pod puts them back on the
//! old stream, and the next pass moves them), and takes the jobs of old pods that stopped.
//! Until the last old pod is gone, a ticket may run on a pod of each version at once.

use redis::Value;

use super::{GROUP, Keys};
use crate::store::{Connection, Context, Redis, RedisError};

/// The keys that refer to each other (stream entries, the jobs bound to them, the tickets
/// they hold): renamed together or not at all.
const QUEUE: [&str; 5] = ["stream", "pending", "running", "queued", "holds"];
/// Keys that stand alone; per-job ledger keys are moved one by one.
const OTHERS: [&str; 4] = ["dead", "job-seq", "decisions", "decisions:seq"];

/// Renames old keys (odd `KEYS`) to their new names (the next key): the first `ARGV[1]`
/// pairs only if none of their new names is taken, the others each where its new name is free.
/// Returns {renamed, old keys found}.
const RENAME: &str = r#"
local together = tonumber(ARGV[1]) * 2
local free = true
for i = 2, together, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then free = false end
end
local renamed, found = 0, 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    found = found + 1
    if (i > together or free) and redis.call('EXISTS', KEYS[i + 1]) == 0 then
      redis.call('RENAME', KEYS[i], KEYS[i + 1])
      renamed = renamed + 1
    end
  end
end
return {renamed, found}
"#;

/// Ends the old stream's entries idle for `ARGV[2]` ms (their pod stopped) and puts their
/// jobs in the new `pending`; deletes the old stream once nothing is left in it. Returns the
/// jobs moved.
const ADOPT: &str = r#"
local moved = 0
local ok, idle = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[2], '-', '+', 100)
if ok then
  for _, entry in ipairs(idle) do
    local id = entry[1]
    local job = redis.call('HGET', KEYS[2], id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id, id .. ':attempts')
    local decoded, stored = pcall(cjson.decode, job or '')
    if decoded and type(stored) == 'table' and type(stored.ticket_id) == 'string' then
      local ticket = stored.ticket_id
      redis.call('SREM', KEYS[3], ticket)
      if redis.call('HSETNX', KEYS[4], ticket, job) == 1 and redis.call('SADD', KEYS[5], ticket) == 1 then
        redis.call('XADD', KEYS[6], '*', 'ticket', ticket)
      end
      moved = moved + 1
    end
  end
end
if redis.call('HLEN', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[7]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
end
return moved
"#;

/// Moves one `HSCAN` page (cursor `ARGV[1]`) of the old `pending` to the new one, skipping
/// tickets an old pod is running. A job already waiting in the new `pending` is newer and
/// covers the old one. Returns {next cursor, jobs moved}.
const MOVE_WAITING: &str = r#"
local running = {}
for _, value in ipairs(redis.call('HVALS', KEYS[3])) do
  local decoded, job = pcall(cjson.decode, value)
  if decoded and type(job) == 'table' and job.ticket_id then running[job.ticket_id] = true end
end
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 500)
local fields = page[2]
local moved = 0
for i = 1, #fields, 2 do
  local ticket, job = fields[i], fields[i + 1]
  if not running[ticket] then
    redis.call('HDEL', KEYS[1], ticket)
    redis.call('SREM', KEYS[2], ticket)
    if redis.call('HSETNX', KEYS[4], ticket, job) == 1 and redis.call('SADD', KEYS[5], ticket) == 1 then
      redis.call('XADD', KEYS[6], '*', 'ticket', ticket)
    end
    moved = moved + 1
  end
end
return {page[1], moved}
"#;

/// Renames the keys that exist only under their old names, the per-job ledgers included.
/// Returns how many were renamed.
pub(super) async fn rename(redis: &Redis) -> Result<usize, RedisError> {
    let mut connection = redis.connection();
    let script = redis::Script::new(RENAME);
    let mut invocation = script.prepare_invoke();
    invocation.arg(QUEUE.len());
    for name in QUEUE.into_iter().chain(OTHERS) {
        invocation.key(redis.legacy_key(name)).key(redis.key(name));
    }
    let (mut renamed, found): (usize, usize) = invocation
        .invoke_async(&mut connection)
        .await
        .doing("rename the queue's keys")?;
    // Step ledgers are found by a scan of the whole keyspace: only worth it where the
    // previous version left keys, not at every start of every pod.
    if found == 0 {
        return Ok(renamed);
    }
    let pattern = format!("{}*", redis.legacy_key("ledger:"));
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await
            .doing("list the step ledgers")?;
        for old in found {
            let Some(name) = old.strip_prefix(&redis.legacy_key("")) else {
                continue;
            };
            let moved: Value = redis::cmd("RENAMENX")
                .arg(&old)
                .arg(redis.key(name))
                .query_async(&mut connection)
                .await
                .doing("rename a step ledger")?;
            renamed += usize::from(moved == Value::Int(1));
        }
        if next == 0 {
            return Ok(renamed);
        }
        cursor = next;
    }
}

/// Old and new names of the queue's keys, for the upkeep's pass.
pub(super) struct Legacy {
    stream: String,
    pending: String,
    running: String,
    queued: String,
    adopt: redis::Script,
    move_waiting: redis::Script,
}

impl Legacy {
    pub fn new(redis: &Redis) -> Self {
        Self {
            stream: redis.legacy_key("stream"),
            pending: redis.legacy_key("pending"),
            running: redis.legacy_key("running"),
            queued: redis.legacy_key("queued"),
            adopt: redis::Script::new(ADOPT),
            move_waiting: redis::Script::new(MOVE_WAITING),
        }
    }

    /// Moves what the previous version's pods left or keep writing; returns the jobs moved.
    pub async fn pass(
        &self,
        connection: &mut Connection,
        keys: &Keys,
        claim_idle_ms: u64,
    ) -> Result<usize, RedisError> {
        let present: usize = redis::cmd("EXISTS")
            .arg(&self.stream)
            .arg(&self.pending)
            .query_async(connection)
            .await
            .doing("look for the previous version's keys")?;
        if present == 0 {
            return Ok(0);
        }
        let mut moved: usize = self
            .adopt
            .key(&self.stream)
            .key(&self.running)
            .key(&self.queued)
            .key(&keys.pending)
            .key(&keys.queued)
            .key(&keys.stream)
            .key(&self.pending)
            .arg(GROUP)
            .arg(claim_idle_ms)
            .invoke_async(connection)
            .await
            .doing("take over the previous version's abandoned jobs")?;
        let mut cursor = "0".to_owned();
        loop {
            let (next, count): (String, usize) = self
                .move_waiting
                .key(&self.pending)
                .key(&self.queued)
                .key(&self.running)
                .key(&keys.pending)
                .key(&keys.queued)
                .key(&keys.stream)
                .arg(&cursor)
                .invoke_async(connection)
                .await
                .doing("move the previous version's waiting jobs")?;
            moved += count;
            if next == "0" {
                return Ok(moved);
            }
            cursor = next;
        }
    }
}

//! Storing accepted events, in groups ([`super::batch`]): one script call stores every event
//! that arrived together and numbers each job itself, so an event costs no round trip of its
//! own.

use std::sync::Arc;

use super::Keys;
use super::batch::{Batcher, Commit};
use crate::store::{Connection, Context, RedisError, now_ms};

/// Stores a batch of events. Per event, from `ARGV[3]` on, four arguments: ticket, job (its
/// JSON without the id, which the script writes first), deduplication window (s) and
/// capacity; and two keys from `KEYS[5]` on: its delivery's `seen` key and its ticket's
/// `touched` key. Returns one code per event: 0 queued, 1 coalesced, 2 duplicate, 3 full.
const ACCEPT_BATCH: &str = r#"
local codes = {}
local count = (#ARGV - 2) / 4
for i = 1, count do
  local at = 2 + (i - 1) * 4
  local ticket, job = ARGV[at + 1], ARGV[at + 2]
  local window, capacity = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local seen, touched = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local code
  if window > 0 and redis.call('EXISTS', seen) == 1 then
    code = 2
  else
    local waiting = redis.call('HEXISTS', KEYS[1], ticket) == 1
    if not waiting and redis.call('HLEN', KEYS[1]) >= capacity then
      code = 3
    else
      if window > 0 then redis.call('SET', seen, '1', 'EX', window) end
      local id = redis.call('INCR', KEYS[4])
      redis.call('HSET', KEYS[1], ticket, '{"id":' .. id .. ',' .. string.sub(job, 2))
      redis.call('SET', touched, ARGV[1], 'EX', ARGV[2])
      if waiting then
        code = 1
      else
        if redis.call('SADD', KEYS[2], ticket) == 1 then
          redis.call('XADD', KEYS[3], '*', 'ticket', ticket)
        end
        code = 0
      end
    end
  end
  codes[i] = code
end
return codes
"#;

/// One event to store.
pub(super) struct Entry {
    pub ticket: String,
    /// Its delivery's deduplication key.
    pub seen: String,
    /// Its ticket's last-change key, for reconciliation.
    pub touched: String,
    /// The job's JSON, without its id.
    pub job: String,
    pub window_seconds: u64,
    pub capacity: usize,
}

/// What became of one stored event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Queued,
    Coalesced,
    Duplicate,
    Full,
}

/// Accepts share script calls through it.
pub(super) type Accepts = Batcher<Entry, Outcome>;

/// Starts the task storing accepted events.
pub(super) fn start(connection: Connection, keys: Keys, touch_ttl_seconds: u64) -> Accepts {
    let script = Arc::new(redis::Script::new(ACCEPT_BATCH));
    let keys = Arc::new(keys);
    let commit: Commit<Entry, Outcome> = Arc::new(move |entries| {
        let (script, keys, mut connection) = (script.clone(), keys.clone(), connection.clone());
        Box::pin(async move {
            store(&script, &mut connection, &keys, touch_ttl_seconds, &entries).await
        })
    });
    Batcher::start("store events", commit)
}

async fn store(
    script: &redis::Script,
    connection: &mut Connection,
    keys: &Keys,
    touch_ttl_seconds: u64,
    entries: &[Entry],
) -> Result<Vec<Outcome>, RedisError> {
    let mut invocation = script.key(&keys.pending);
    invocation
        .key(&keys.queued)
        .key(&keys.stream)
        .key(&keys.sequence)
        .arg(now_ms())
        .arg(touch_ttl_seconds);
    for entry in entries {
        invocation
            .key(&entry.seen)
            .key(&entry.touched)
            .arg(&entry.ticket)
            .arg(&entry.job)
            .arg(entry.window_seconds)
            .arg(entry.capacity);
    }
    let codes: Vec<u8> = invocation
        .invoke_async(connection)
        .await
        .doing("store events")?;
    Ok(codes
        .into_iter()
        .map(|code| match code {
            0 => Outcome::Queued,
            1 => Outcome::Coalesced,
            2 => Outcome::Duplicate,
            _ => Outcome::Full,
        })
        .collect())
}

//! Storing accepted events, in groups ([`crate::store::batch`]): one script call stores every event
//! that arrived together and numbers each job itself, so an event costs no round trip of its
//! own.

use std::sync::Arc;

use super::Keys;
use crate::store::batch::{Batcher, Commit};
use crate::store::{Connection, Context, RedisError};

/// Stores a batch of events. Per event, four arguments: ticket, job (its
/// JSON, without an id: it gets one when a worker takes it), deduplication window (s) and
/// capacity; and its delivery's `seen` key from `KEYS[4]` on. Returns one code per event:
/// 0 queued, 1 coalesced, 2 duplicate, 3 full.
///
/// Every Redis command in a script costs about as much as the script's whole per-event
/// overhead, so the common path runs four: `SET NX` both checks and records a delivery,
/// `HSET` says whether its ticket already had a job waiting, `SADD` and `XADD` queue the
/// ticket; the waiting count is read once per batch. The job passes through untouched: a
/// string built in Lua is copied and collected there, which for a job of kilobytes cost
/// more than the four commands.
const ACCEPT_BATCH: &str = r#"
local codes = {}
local count = #ARGV / 4
local waiting = redis.call('HLEN', KEYS[1])
for i = 1, count do
  local at = (i - 1) * 4
  local ticket, job = ARGV[at + 1], ARGV[at + 2]
  local window, capacity = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  local seen = KEYS[3 + i]
  local code
  if window > 0 and not redis.call('SET', seen, '1', 'EX', window, 'NX') then
    code = 2
  elseif waiting >= capacity and redis.call('HEXISTS', KEYS[1], ticket) == 0 then
    if window > 0 then redis.call('DEL', seen) end
    code = 3
  elseif redis.call('HSET', KEYS[1], ticket, job) == 0 then
    code = 1
  else
    waiting = waiting + 1
    if redis.call('SADD', KEYS[2], ticket) == 1 then
      redis.call('XADD', KEYS[3], '*', 'ticket', ticket)
    end
    code = 0
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
pub(super) fn start(connection: Connection, keys: Keys) -> Accepts {
    let script = Arc::new(redis::Script::new(ACCEPT_BATCH));
    let keys = Arc::new(keys);
    let commit: Commit<Entry, Outcome> = Arc::new(move |entries| {
        let (script, keys, mut connection) = (script.clone(), keys.clone(), connection.clone());
        Box::pin(async move { store(&script, &mut connection, &keys, &entries).await })
    });
    Batcher::start("store events", commit)
}

async fn store(
    script: &redis::Script,
    connection: &mut Connection,
    keys: &Keys,
    entries: &[Entry],
) -> Result<Vec<Outcome>, RedisError> {
    let mut invocation = script.key(&keys.pending);
    invocation.key(&keys.queued).key(&keys.stream);
    for entry in entries {
        invocation
            .key(&entry.seen)
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

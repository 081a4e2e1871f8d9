//! Ending runs, in groups ([`crate::store::batch`]): the acknowledgements of jobs that finish
//! together share one script call. An acknowledged entry stays in the stream until the upkeep
//! trims the stream's acknowledged head (`XDEL` of one entry walks its whole node: it was the
//! costliest command of a job).

use std::sync::Arc;

use super::{GROUP, Keys};
use crate::store::batch::{Batcher, Commit};
use crate::store::{Connection, Context, RedisError, now_ms};

/// Ends runs, each only by its entry's owner: optionally dead-letters the job first; puts
/// the ticket back on the stream when an event waits for it, else frees it. The dead-letter
/// stream keeps at most `ARGV[5]` entries, the oldest trimmed. Per run, from `ARGV[6]` on:
/// entry, ticket, '1' to dead-letter, error; and its ticket's `touched` key from `KEYS[6]`.
/// Returns two numbers per run: -1 when this pod no longer owns the entry, 2 for a re-run,
/// 1 otherwise; then the dead letters dropped to make room.
const FINISH_BATCH: &str = r#"
local results = {}
local count = (#ARGV - 5) / 4
for i = 1, count do
  local at = 5 + (i - 1) * 4
  local entry, ticket, dead, error = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local code, trimmed = 1, 0
  local owned = redis.call('XPENDING', KEYS[1], ARGV[1], entry, entry, 1, ARGV[2])
  if #owned == 0 then
    code = -1
  else
    if dead == '1' then
      local job = redis.call('HGET', KEYS[3], entry) or ''
      local attempts = redis.call('HGET', KEYS[3], entry .. ':attempts') or '0'
      local id = redis.call('HGET', KEYS[3], entry .. ':id') or '0'
      local before = redis.call('XLEN', KEYS[5])
      redis.call('XADD', KEYS[5], 'MAXLEN', ARGV[5], '*', 'ticket', ticket, 'job', job,
        'job_id', id, 'attempts', attempts, 'error', error, 'failed_at', ARGV[3],
        'consumer', ARGV[2])
      trimmed = before + 1 - redis.call('XLEN', KEYS[5])
    end
    redis.call('XACK', KEYS[1], ARGV[1], entry)
    redis.call('HDEL', KEYS[3], entry, entry .. ':attempts', entry .. ':id')
    redis.call('SET', KEYS[5 + i], ARGV[3], 'EX', ARGV[4])
    if redis.call('HEXISTS', KEYS[2], ticket) == 1 then
      redis.call('XADD', KEYS[1], '*', 'ticket', ticket)
      code = 2
    else
      redis.call('SREM', KEYS[4], ticket)
    end
  end
  results[2 * i - 1] = code
  results[2 * i] = trimmed
end
return results
"#;

/// One run to end.
pub(super) struct Done {
    pub entry: String,
    pub ticket: String,
    /// Its ticket's last-change key, for reconciliation.
    pub touched: String,
    /// The error to dead-letter the job with.
    pub dead: Option<String>,
}

/// What became of one run's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Finished {
    /// -1 when another pod had taken the job over, 2 when its ticket runs again, else 1.
    pub code: i64,
    /// Dead letters dropped to make room.
    pub trimmed: u64,
}

/// Runs' ends share script calls through it.
pub(super) type Finishes = Batcher<Done, Finished>;

/// What every batch of one pod's queue shares.
struct Shared {
    script: redis::Script,
    keys: Keys,
    consumer: String,
    dead_letter_max: usize,
    touch_ttl_seconds: u64,
}

/// Starts the task ending runs for consumer `consumer`.
pub(super) fn start(
    connection: Connection,
    keys: Keys,
    consumer: String,
    dead_letter_max: usize,
    touch_ttl_seconds: u64,
) -> Finishes {
    let shared = Arc::new(Shared {
        script: redis::Script::new(FINISH_BATCH),
        keys,
        consumer,
        dead_letter_max: dead_letter_max.max(1),
        touch_ttl_seconds,
    });
    let commit: Commit<Done, Finished> = Arc::new(move |runs| {
        let (shared, mut connection) = (shared.clone(), connection.clone());
        Box::pin(async move { finish(&shared, &mut connection, &runs).await })
    });
    Batcher::start("finish jobs", commit)
}

async fn finish(
    shared: &Shared,
    connection: &mut Connection,
    runs: &[Done],
) -> Result<Vec<Finished>, RedisError> {
    let keys = &shared.keys;
    let mut invocation = shared.script.key(&keys.stream);
    invocation
        .key(&keys.pending)
        .key(&keys.running)
        .key(&keys.queued)
        .key(&keys.dead)
        .arg(GROUP)
        .arg(&shared.consumer)
        .arg(now_ms())
        .arg(shared.touch_ttl_seconds)
        .arg(shared.dead_letter_max);
    for run in runs {
        invocation
            .key(&run.touched)
            .arg(&run.entry)
            .arg(&run.ticket)
            .arg(if run.dead.is_some() { "1" } else { "0" })
            .arg(run.dead.as_deref().unwrap_or(""));
    }
    let results: Vec<i64> = invocation
        .invoke_async(connection)
        .await
        .doing("finish jobs")?;
    Ok(results
        .chunks_exact(2)
        .map(|pair| Finished {
            code: pair[0],
            trimmed: pair[1].max(0) as u64,
        })
        .collect())
}

//! Group commit: deliveries that arrive together are stored by one script call.
//!
//! Every accept hands its event to one task, which takes whatever else is waiting (up to
//! [`MAX_BATCH`] events) and stores the lot with one `EVALSHA`; the script numbers each job
//! itself, so an event costs no round trip of its own. Each delivery is answered with its own
//! event's outcome once Redis has answered for the batch, so a 200 still means "stored". A
//! lone delivery is sent at once: batches form only while earlier ones are in flight, which
//! is when there is load to share a round trip.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Keys;
use crate::store::{Connection, Context, RedisError, now_ms};

/// Events stored by one script call at most.
pub(super) const MAX_BATCH: usize = 64;
/// Batches sent before the first is answered: one being stored while the next one fills.
const IN_FLIGHT: usize = 2;
/// Events handed over and not yet taken into a batch; past it an accept waits its turn.
const WAITING: usize = 4096;

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

type Answer = oneshot::Sender<Result<Outcome, RedisError>>;

/// The handle accepts store their events through.
pub(super) struct GroupCommit {
    sender: mpsc::Sender<(Entry, Answer)>,
}

impl GroupCommit {
    /// Starts the committing task; it ends when the handle is dropped.
    pub fn start(connection: Connection, keys: Keys, touch_ttl_seconds: u64) -> Self {
        let (sender, receiver) = mpsc::channel(WAITING);
        let committer = Committer {
            script: Arc::new(redis::Script::new(ACCEPT_BATCH)),
            connection,
            keys: Arc::new(keys),
            touch_ttl_seconds,
        };
        tokio::spawn(committer.run(receiver));
        Self { sender }
    }

    /// Stores `entry` with whatever else is waiting; answers once Redis has.
    pub async fn store(&self, entry: Entry) -> Result<Outcome, RedisError> {
        let stopped = || RedisError {
            action: "store an event",
            kind: "stopped".to_owned(),
        };
        let (answer, outcome) = oneshot::channel();
        self.sender
            .send((entry, answer))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

#[derive(Clone)]
struct Committer {
    script: Arc<redis::Script>,
    connection: Connection,
    keys: Arc<Keys>,
    touch_ttl_seconds: u64,
}

impl Committer {
    async fn run(self, mut receiver: mpsc::Receiver<(Entry, Answer)>) {
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            // Waiting for a free slot first lets the next batch fill meanwhile.
            let Ok(slot) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let committer = self.clone();
            tokio::spawn(async move {
                let (entries, answers): (Vec<Entry>, Vec<Answer>) = batch.into_iter().unzip();
                match committer.commit(&entries).await {
                    Ok(outcomes) => {
                        for (answer, outcome) in answers.into_iter().zip(outcomes) {
                            let _ = answer.send(Ok(outcome));
                        }
                    }
                    Err(error) => {
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                }
                drop(slot);
            });
        }
    }

    async fn commit(&self, entries: &[Entry]) -> Result<Vec<Outcome>, RedisError> {
        let mut invocation = self.script.key(&self.keys.pending);
        invocation
            .key(&self.keys.queued)
            .key(&self.keys.stream)
            .key(&self.keys.sequence)
            .arg(now_ms())
            .arg(self.touch_ttl_seconds);
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
            .invoke_async(&mut self.connection.clone())
            .await
            .doing("store events")?;
        if codes.len() != entries.len() {
            return Err(RedisError {
                action: "store events",
                kind: "unexpected reply".to_owned(),
            });
        }
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
}

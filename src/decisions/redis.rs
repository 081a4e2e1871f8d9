//! Decision reports in Redis, so the review console of any pod shows every pod's decisions.
//!
//! One list (`decisions`), newest first, trimmed to the retention on every push; ids come from
//! one counter (`decisions:seq`) so they are unique across pods.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::batch::{Batcher, Commit};
use crate::store::{Context, Redis, RedisError};
use crate::workflow::DecisionReport;

/// Stores reports (`ARGV[2]` on, each an entry's JSON without its id), newest last: numbers
/// each, pushes it and trims the list to `ARGV[1]` + 1 entries. Returns the ids.
const PUSH: &str = r#"
local ids = {}
for i = 2, #ARGV do
  local id = redis.call('INCR', KEYS[2])
  redis.call('LPUSH', KEYS[1], '{"id":"' .. id .. '",' .. string.sub(ARGV[i], 2))
  ids[i - 1] = id
end
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]))
return ids
"#;

/// A report as stored in Redis, with its id.
#[derive(Deserialize)]
struct Entry {
    id: String,
    report: DecisionReport,
}

/// A report on its way to Redis, which numbers it.
#[derive(Serialize)]
struct Unnumbered<'a> {
    report: &'a DecisionReport,
}

/// The shared store of recent decision reports. Reports finished together are stored by one
/// script call (a group commit), so a busy deployment pays one round trip per batch.
pub struct RedisDecisions {
    redis: Redis,
    capacity: usize,
    pushes: Batcher<String, u64>,
}

impl RedisDecisions {
    pub fn new(redis: Redis, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let script = Arc::new(redis::Script::new(PUSH));
        let (list, sequence) = (redis.key("decisions"), redis.key("decisions:seq"));
        let connection = redis.connection();
        let commit: Commit<String, u64> = Arc::new(move |reports| {
            let (script, mut connection) = (script.clone(), connection.clone());
            let (list, sequence) = (list.clone(), sequence.clone());
            Box::pin(async move {
                let mut invocation = script.key(list);
                invocation.key(sequence).arg(capacity - 1);
                for report in &reports {
                    invocation.arg(report);
                }
                invocation
                    .invoke_async(&mut connection)
                    .await
                    .doing("store decision reports")
            })
        });
        Self {
            redis,
            capacity,
            pushes: Batcher::start("store decision reports", commit),
        }
    }

    /// Stores a report and returns its id.
    pub async fn push(&self, report: &DecisionReport) -> Result<String, RedisError> {
        let json = serde_json::to_string(&Unnumbered { report }).unwrap_or_default();
        Ok(self.pushes.submit(json).await?.to_string())
    }

    /// Every retained report with its id, newest first. Entries that no longer parse (written
    /// by another version) are skipped.
    pub async fn list(&self) -> Result<Vec<(String, DecisionReport)>, RedisError> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(self.redis.key("decisions"))
            .arg(0)
            .arg(self.capacity as i64 - 1)
            .query_async(&mut self.redis.connection())
            .await
            .doing("read the decision reports")?;
        Ok(raw
            .iter()
            .filter_map(|json| serde_json::from_str::<Entry>(json).ok())
            .map(|entry| (entry.id, entry.report))
            .collect())
    }
}

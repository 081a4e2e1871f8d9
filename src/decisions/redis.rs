//! Decision reports in Redis, so the review console of any pod shows every pod's decisions.
//!
//! One list (`decisions`), newest first, trimmed to the retention on every push; ids come from
//! one counter (`decisions:seq`) so they are unique across pods.

use serde::{Deserialize, Serialize};

use crate::store::{Context, Redis, RedisError};
use crate::workflow::DecisionReport;

/// A report as stored in Redis, with its id.
#[derive(Serialize, Deserialize)]
struct Entry {
    id: String,
    report: DecisionReport,
}

/// The shared store of recent decision reports.
pub struct RedisDecisions {
    redis: Redis,
    capacity: usize,
}

impl RedisDecisions {
    pub fn new(redis: Redis, capacity: usize) -> Self {
        Self {
            redis,
            capacity: capacity.max(1),
        }
    }

    /// Stores a report and returns its id.
    pub async fn push(&self, report: &DecisionReport) -> Result<String, RedisError> {
        let mut connection = self.redis.connection();
        let id: u64 = redis::cmd("INCR")
            .arg(self.redis.key("decisions:seq"))
            .query_async(&mut connection)
            .await
            .doing("number a decision report")?;
        let entry = Entry {
            id: id.to_string(),
            report: report.clone(),
        };
        let json = serde_json::to_string(&entry).unwrap_or_default();
        let key = self.redis.key("decisions");
        redis::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg(&key)
            .arg(json)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(self.capacity as i64 - 1)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .doing("store a decision report")?;
        Ok(entry.id)
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

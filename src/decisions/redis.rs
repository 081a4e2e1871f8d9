//! Decision reports in Redis, so the review console of any pod shows every pod's decisions.
//!
//! One list (`decisions`), newest first, trimmed to the retention on every push; ids come from
//! one counter (`decisions:seq`) so they are unique across pods.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::batch::{Batcher, Commit};
use crate::store::{Context, Redis, RedisError};
use crate::workflow::DecisionReport;

/// A report as stored in Redis, with its id.
#[derive(Deserialize)]
struct Entry {
    id: String,
    report: DecisionReport,
}

/// A report on its way to Redis, once numbered.
#[derive(Serialize)]
struct Numbered<'a> {
    id: &'a str,
    report: &'a DecisionReport,
}

/// The shared store of recent decision reports. Reports finished together are stored together
/// (a group commit): one `INCRBY` numbers the batch, one pipeline pushes it and trims the
/// list. Not a script: a report is kilobytes, and every string passed through a script's Lua
/// is copied and collected there, which cost Redis more than everything else a job does.
pub struct RedisDecisions {
    redis: Redis,
    capacity: usize,
    pushes: Batcher<DecisionReport, u64>,
}

impl RedisDecisions {
    pub fn new(redis: Redis, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (list, sequence) = (redis.key("decisions"), redis.key("decisions:seq"));
        let connection = redis.connection();
        let commit: Commit<DecisionReport, u64> = Arc::new(move |reports| {
            let mut connection = connection.clone();
            let (list, sequence) = (list.clone(), sequence.clone());
            Box::pin(async move {
                let count = reports.len() as u64;
                let last: u64 = redis::cmd("INCRBY")
                    .arg(&sequence)
                    .arg(count)
                    .query_async(&mut connection)
                    .await
                    .doing("number decision reports")?;
                let ids: Vec<u64> = (last + 1 - count..=last).collect();
                let mut pipe = redis::pipe();
                for (id, report) in ids.iter().zip(&reports) {
                    let id = id.to_string();
                    let json =
                        serde_json::to_string(&Numbered { id: &id, report }).unwrap_or_default();
                    pipe.cmd("LPUSH").arg(&list).arg(json).ignore();
                }
                pipe.cmd("LTRIM")
                    .arg(&list)
                    .arg(0)
                    .arg(capacity as i64 - 1)
                    .ignore();
                pipe.query_async::<()>(&mut connection)
                    .await
                    .doing("store decision reports")?;
                Ok(ids)
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
        Ok(self.pushes.submit(report.clone()).await?.to_string())
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

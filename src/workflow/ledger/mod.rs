//! Which writes of a job already succeeded, so a retried or reclaimed job repeats none.

mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

pub use self::redis::RedisLedger;

/// How long a completed step is remembered: longer than any retry schedule.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Entries kept at most; the oldest are dropped first.
const MAX_ENTRIES: usize = 100_000;

/// The ledger could not be read. A run must then stop (and be retried): going on without
/// knowing whether a write was done could repeat it.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the step ledger: {0}")]
pub struct LedgerError(pub String);

/// Step completion per job.
#[async_trait]
pub trait StepLedger: Send + Sync {
    /// The detail recorded when `step` of `job` succeeded, if it did.
    async fn completed(&self, job: &str, step: &str) -> Result<Option<String>, LedgerError>;
    /// Records that `step` of `job` succeeded.
    async fn record(&self, job: &str, step: &str, detail: &str);
}

/// The in-process ledger.
#[derive(Default)]
pub struct MemoryLedger {
    entries: Mutex<Entries>,
}

/// A completed step: its detail, when it was recorded, and which record it was.
type Completed = (String, Instant, u64);

/// The steps and the order they were recorded in, oldest first, so that making room takes
/// the oldest at once instead of scanning every entry under the lock. A step recorded again
/// leaves its earlier record in `order`; that record's number no longer matches the entry's,
/// so dropping it later leaves the newer entry alone.
#[derive(Default)]
struct Entries {
    steps: HashMap<(String, String), Completed>,
    order: VecDeque<((String, String), Instant, u64)>,
    records: u64,
}

impl Entries {
    /// Forgets the records out of retention, and the oldest beyond room for one more.
    fn make_room(&mut self, now: Instant) {
        while let Some((_, at, _)) = self.order.front() {
            let expired = now.duration_since(*at) >= RETENTION;
            if !expired && self.order.len() < MAX_ENTRIES {
                break;
            }
            if let Some((key, _, record)) = self.order.pop_front()
                && self.steps.get(&key).is_some_and(|entry| entry.2 == record)
            {
                self.steps.remove(&key);
            }
        }
    }
}

#[async_trait]
impl StepLedger for MemoryLedger {
    async fn completed(&self, job: &str, step: &str) -> Result<Option<String>, LedgerError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries
            .steps
            .get(&(job.to_owned(), step.to_owned()))
            .filter(|(_, at, _)| at.elapsed() < RETENTION)
            .map(|(detail, _, _)| detail.clone()))
    }

    async fn record(&self, job: &str, step: &str, detail: &str) {
        let now = Instant::now();
        let key = (job.to_owned(), step.to_owned());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.make_room(now);
        entries.records += 1;
        let record = entries.records;
        entries.order.push_back((key.clone(), now, record));
        entries.steps.insert(key, (detail.to_owned(), now, record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_ledger_forgets_its_oldest_step_first() {
        let ledger = MemoryLedger::default();
        ledger.record("job-0", "dispatch", "old").await;
        ledger.record("job-0", "dispatch", "again").await;
        for n in 1..MAX_ENTRIES {
            ledger
                .record(&format!("job-{n}"), "dispatch", "moved")
                .await;
        }
        assert_eq!(
            ledger
                .completed("job-0", "dispatch")
                .await
                .unwrap()
                .as_deref(),
            Some("again"),
            "a step recorded again outlives its first record"
        );
        ledger.record("job-new", "dispatch", "moved").await;
        assert_eq!(ledger.completed("job-0", "dispatch").await.unwrap(), None);
        assert!(
            ledger
                .completed("job-1", "dispatch")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            ledger
                .completed("job-new", "dispatch")
                .await
                .unwrap()
                .is_some()
        );
        let entries = ledger.entries.lock().unwrap();
        assert!(entries.order.len() <= MAX_ENTRIES && entries.steps.len() <= MAX_ENTRIES);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recording_into_a_full_ledger_does_not_scan_it() {
        let ledger = std::sync::Arc::new(MemoryLedger::default());
        let filling = ledger.clone();
        // Scanning 100,000 entries per record made these 20,000 records take minutes; taking
        // the oldest at once makes them take milliseconds. The bound is the suite's generous
        // wait, not a measurement.
        let work = tokio::spawn(async move {
            for n in 0..MAX_ENTRIES + 20_000 {
                filling.record(&format!("job-{n}"), "link", "linked").await;
            }
        });
        tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .expect("records into a full ledger take constant time")
            .unwrap();
        assert!(
            ledger
                .completed("job-19999", "link")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            ledger
                .completed("job-20000", "link")
                .await
                .unwrap()
                .is_some()
        );
    }
}

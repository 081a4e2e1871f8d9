//! Which writes of a job already succeeded, so a retried or reclaimed job repeats none.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

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
    entries: Mutex<HashMap<(String, String), (String, Instant)>>,
}

#[async_trait]
impl StepLedger for MemoryLedger {
    async fn completed(&self, job: &str, step: &str) -> Result<Option<String>, LedgerError> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries
            .get(&(job.to_owned(), step.to_owned()))
            .filter(|(_, at)| at.elapsed() < RETENTION)
            .map(|(detail, _)| detail.clone()))
    }

    async fn record(&self, job: &str, step: &str, detail: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < RETENTION);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            (job.to_owned(), step.to_owned()),
            (detail.to_owned(), Instant::now()),
        );
    }
}

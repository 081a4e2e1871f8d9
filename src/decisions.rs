//! The most recent decision reports, bounded, newest first.
//!
//! Every stored report gets an id of its own: `job_id` cannot serve, since manual runs all
//! use 0 and a retried job produces one report per attempt. The review console links to a
//! decision by this id.
//!
//! With the Redis backend, reports are also stored in Redis and the console's readers
//! ([`DecisionLog::list`], [`DecisionLog::get`], used by the console and the JSON API) read
//! every pod's from there; `push` stays synchronous for the worker, and the local log is the
//! fallback while Redis cannot be read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::archive::DecisionArchive;
use crate::shared::decisions::RedisDecisions;
use crate::workflow::DecisionReport;

/// Reports kept by default.
pub const DEFAULT_RETAINED: usize = 500;

/// One stored report and the id it is known by.
#[derive(Clone, Debug)]
pub struct StoredDecision {
    /// Unique within the store; only ASCII digits.
    pub id: String,
    pub report: Arc<DecisionReport>,
}

/// A bounded log of recent reports.
pub struct DecisionLog {
    capacity: usize,
    next_id: AtomicU64,
    reports: Mutex<VecDeque<StoredDecision>>,
    shared: Option<Arc<RedisDecisions>>,
    archive: Option<DecisionArchive>,
}

impl DecisionLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
            reports: Mutex::new(VecDeque::new()),
            shared: None,
            archive: None,
        }
    }

    /// Also stores every report in Redis, and reads every pod's reports from there.
    pub fn with_shared(mut self, shared: RedisDecisions) -> Self {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// Also appends every report that has facts to an archive.
    pub fn with_archive(mut self, archive: DecisionArchive) -> Self {
        self.archive = Some(archive);
        self
    }

    /// How many reports are kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn push(&self, report: DecisionReport) {
        if let Some(archive) = &self.archive {
            archive.append(&report);
        }
        if let Some(shared) = self.shared.clone() {
            let copy = report.clone();
            tokio::spawn(async move {
                if let Err(error) = shared.push(&copy).await {
                    tracing::warn!(error = %error, "decision report kept in this pod only");
                }
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let stored = StoredDecision {
            id,
            report: Arc::new(report),
        };
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let evicted = if reports.len() == self.capacity {
            reports.pop_back()
        } else {
            None
        };
        reports.push_front(stored);
        drop(reports);
        // The oldest report is freed after the lock is released: other workers need it.
        drop(evicted);
    }

    /// Every retained decision with its id, newest first: every pod's with Redis.
    pub async fn list(&self) -> Vec<StoredDecision> {
        if let Some(shared) = &self.shared {
            match shared.list().await {
                Ok(entries) => {
                    return entries
                        .into_iter()
                        .map(|(id, report)| StoredDecision {
                            id,
                            report: Arc::new(report),
                        })
                        .collect();
                }
                Err(error) => {
                    tracing::warn!(error = %error, "showing this pod's decisions only");
                }
            }
        }
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.iter().cloned().collect()
    }

    /// The decision stored under `id`, while it is retained.
    pub async fn get(&self, id: &str) -> Option<StoredDecision> {
        if self.shared.is_some() {
            return self.list().await.into_iter().find(|d| d.id == id);
        }
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.iter().find(|d| d.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, SettingsSource};
    use crate::event::TicketEvent;
    use crate::queue::Job;

    fn report(ticket: &str) -> DecisionReport {
        let settings =
            Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
        let job = Job {
            id: 0,
            event: TicketEvent::manual(ticket.to_owned()),
            attempt: 1,
            enqueued_at: std::time::Instant::now(),
        };
        DecisionReport::start(&job, &settings).finish()
    }

    #[tokio::test]
    async fn every_report_gets_its_own_id_and_the_oldest_go_first() {
        let log = DecisionLog::new(2);
        for ticket in ["1", "2", "3"] {
            log.push(report(ticket));
        }
        let kept = log.list().await;
        let ids: Vec<&str> = kept.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["3", "2"], "newest first, the first one dropped");
        assert_eq!(log.get("2").await.unwrap().report.ticket_id, "2");
        assert!(log.get("1").await.is_none(), "no longer retained");
    }
}

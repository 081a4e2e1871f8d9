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
//!
//! One namespace of ids, whichever store answers: with Redis, a report is kept locally under
//! the id Redis gave it, so a link read from either store opens the same report. A report
//! Redis did not take is kept here only, under an id no counter can produce (`l`, a tag of
//! this process, a sequence number), so it can never be mistaken for another pod's report
//! either.

mod redis;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::archive::DecisionArchive;
use crate::workflow::DecisionReport;

pub use self::redis::RedisDecisions;

/// Reports kept by default.
pub const DEFAULT_RETAINED: usize = 500;

/// One stored report and the id it is known by.
#[derive(Clone, Debug)]
pub struct StoredDecision {
    /// Unique within the deployment; see [`is_decision_id`] for its shape.
    pub id: String,
    pub report: Arc<DecisionReport>,
}

/// Longest decision id: 20 digits, or a local id (`l`, 16 hex digits, `-`, 20 digits).
const MAX_ID_LEN: usize = 38;

/// Whether `id` has the shape of a decision id, so that a path segment that cannot name one
/// is refused before any store is asked.
pub fn is_decision_id(id: &str) -> bool {
    let local = id.strip_prefix('l').and_then(|rest| rest.split_once('-'));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    id.len() <= MAX_ID_LEN
        && match local {
            Some((tag, n)) => {
                tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit()) && digits(n)
            }
            None => digits(id),
        }
}

/// A bounded log of recent reports.
pub struct DecisionLog {
    capacity: usize,
    next_id: AtomicU64,
    /// This process's tag in the ids of reports only it holds.
    local_tag: String,
    reports: Arc<Mutex<VecDeque<StoredDecision>>>,
    shared: Option<Arc<RedisDecisions>>,
    archive: Option<DecisionArchive>,
}

impl DecisionLog {
    pub fn new(capacity: usize) -> Self {
        use std::hash::{BuildHasher, RandomState};
        Self {
            capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
            local_tag: format!("{:016x}", RandomState::new().hash_one(std::process::id())),
            reports: Arc::new(Mutex::new(VecDeque::new())),
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
        let Some(shared) = self.shared.clone() else {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
            keep(&self.reports, self.capacity, id, Arc::new(report));
            return;
        };
        // The local copy waits for Redis's id: kept under a local id of its own, it could
        // share a number with another report in Redis.
        let report = Arc::new(report);
        let reports = self.reports.clone();
        let capacity = self.capacity;
        let local_id = format!(
            "l{}-{}",
            self.local_tag,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        tokio::spawn(async move {
            let id = match shared.push(&report).await {
                Ok(id) => id,
                Err(error) => {
                    tracing::warn!(error = %error, "decision report kept in this pod only");
                    local_id
                }
            };
            keep(&reports, capacity, id, report);
        });
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

    /// The decision stored under `id`, while it is retained. Either store answers for any id:
    /// an id names the same report in both.
    pub async fn get(&self, id: &str) -> Option<StoredDecision> {
        if self.shared.is_some() {
            return self.list().await.into_iter().find(|d| d.id == id);
        }
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports.iter().find(|d| d.id == id).cloned()
    }
}

/// Stores a report under `id`, newest first, dropping the oldest beyond `capacity`.
fn keep(
    reports: &Mutex<VecDeque<StoredDecision>>,
    capacity: usize,
    id: String,
    report: Arc<DecisionReport>,
) {
    let stored = StoredDecision { id, report };
    let mut reports = reports.lock().unwrap_or_else(|p| p.into_inner());
    let evicted = if reports.len() == capacity {
        reports.pop_back()
    } else {
        None
    };
    reports.push_front(stored);
    drop(reports);
    // The oldest report is freed after the lock is released: other workers need it.
    drop(evicted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, SettingsSource};
    use crate::event::TicketEvent;
    use crate::workflow::Run;

    fn report(ticket: &str) -> DecisionReport {
        let settings =
            Settings::from_spec(Default::default(), SettingsSource::Environment, 1).unwrap();
        let job = Run {
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

    #[test]
    fn decision_ids_are_counters_or_tagged_local_ids() {
        assert!(is_decision_id("1"));
        assert!(is_decision_id("18446744073709551615"));
        assert!(is_decision_id("l0123456789abcdef-7"));
        for bad in [
            "",
            "l",
            "l-1",
            "l0123-1",
            "l0123456789abcdef-",
            "1a",
            "../1",
            "lg123456789abcdef-1",
        ] {
            assert!(!is_decision_id(bad), "{bad}");
        }
    }
}

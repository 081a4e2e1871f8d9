//! The most recent decision reports, bounded, newest first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::workflow::DecisionReport;

/// Reports kept by default.
pub const DEFAULT_RETAINED: usize = 500;

/// A bounded log of recent reports.
pub struct DecisionLog {
    capacity: usize,
    reports: Mutex<VecDeque<Arc<DecisionReport>>>,
}

impl DecisionLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            reports: Mutex::new(VecDeque::new()),
        }
    }

    pub fn push(&self, report: DecisionReport) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if reports.len() == self.capacity {
            reports.pop_back();
        }
        reports.push_front(Arc::new(report));
    }

    /// Up to `limit` reports, newest first, optionally for one ticket.
    pub fn recent(&self, ticket_id: Option<&str>, limit: usize) -> Vec<Arc<DecisionReport>> {
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        reports
            .iter()
            .filter(|r| ticket_id.is_none_or(|id| r.ticket_id == id))
            .take(limit)
            .cloned()
            .collect()
    }
}

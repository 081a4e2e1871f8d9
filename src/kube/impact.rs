//! The impact of an edit: when a generation changes what decides (departments, linking,
//! routing, replies), the status writer replays the retained decisions' facts under it and
//! records how many would come out differently in `status.lastChange` and an Event, so
//! `kubectl get wha` right after `kubectl edit` shows what the edit does.
//!
//! Each decision is compared with the intent recorded when it was made, so no earlier spec is
//! needed: a new status writer after a failover computes the same answer. Only decisions made
//! under earlier generations are replayed.

use std::sync::{Arc, OnceLock};

use super::events::Record;
use crate::backtest::{self, Kind};
use crate::config::Settings;
use crate::crd::LastChange;
use crate::decisions::DecisionLog;

/// The decision log, handed over once the server has built it (after the first list of the
/// resource, which the Kubernetes tasks wait for).
#[derive(Clone, Default)]
pub struct DecisionSlot(Arc<OnceLock<Arc<DecisionLog>>>);

impl DecisionSlot {
    pub fn attach(&self, log: Arc<DecisionLog>) {
        let _ = self.0.set(log);
    }

    pub fn get(&self) -> Option<&Arc<DecisionLog>> {
        self.0.get()
    }
}

/// Backtests `settings` (generation `generation`) on the decisions `log` retains.
pub async fn last_change(log: &DecisionLog, settings: &Settings, generation: i64) -> LastChange {
    let stored = log.list().await;
    let settings = settings.clone();
    let digest = backtest::decision_digest(&settings);
    // Templates are rendered for every decision: kept off the async workers.
    let comparison = tokio::task::spawn_blocking(move || {
        let earlier = stored
            .iter()
            .map(|d| d.report.as_ref())
            .filter(|report| report.settings_generation < generation);
        backtest::compare(earlier, &settings, None)
    })
    .await
    .unwrap_or_default();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    LastChange {
        generation,
        compared: count(comparison.compared),
        changed: count(comparison.changed),
        by_kind: comparison
            .by_kind
            .iter()
            .map(|(kind, n)| (kind.as_str().to_owned(), count(*n)))
            .collect(),
        settings_digest: digest,
    }
}

/// The Event of a change that decides some recent ticket differently.
pub fn record(change: &LastChange) -> Option<Record> {
    if change.changed == 0 {
        return None;
    }
    let of = |kind: Kind| change.by_kind.get(kind.as_str()).copied().unwrap_or(0);
    let others: Vec<String> = change
        .by_kind
        .iter()
        .filter(|(kind, _)| kind.as_str() != Kind::Department.as_str())
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let mut note = format!(
        "{} of {} recent tickets would route differently",
        of(Kind::Department),
        change.compared
    );
    if !others.is_empty() {
        note.push_str(&format!(" ({})", others.join(", ")));
    }
    Some(Record {
        subject: "routing".to_owned(),
        reason: "RoutingChanged",
        warning: false,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(changed: i32, by_kind: &[(&str, i32)]) -> LastChange {
        LastChange {
            generation: 4,
            compared: 500,
            changed,
            by_kind: by_kind.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            settings_digest: String::new(),
        }
    }

    #[test]
    fn an_edit_that_changes_nothing_records_no_event() {
        assert!(record(&change(0, &[])).is_none());
    }

    #[test]
    fn the_event_says_how_many_tickets_would_route_differently() {
        let moved = record(&change(37, &[("department", 37), ("rule", 37)])).unwrap();
        assert_eq!(moved.reason, "RoutingChanged");
        assert_eq!(
            moved.note,
            "37 of 500 recent tickets would route differently (rule 37)"
        );
        let replies = record(&change(12, &[("reply", 12)])).unwrap();
        assert_eq!(
            replies.note,
            "0 of 500 recent tickets would route differently (reply 12)"
        );
    }
}

//! Whether this pod's data plane is healthy, judged from its own counters over a window.
//!
//! Counters only grow, so the count of failures in the window is the difference between now
//! and the oldest sample still inside it. Each pod judges itself; the status writer only adds
//! the pods' verdicts up, so no pod needs another pod's metrics.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{Metrics, total};

/// When a pod calls its data plane degraded.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// The window failures are counted over.
    pub window: Duration,
    /// Deliveries refused for their signature within the window, at most, while healthy.
    pub signature_failures: u64,
    /// Failed workflow steps within the window, at most, while healthy.
    pub workflow_errors: u64,
}

impl Default for Thresholds {
    /// A few refused deliveries are normal (scanners, a rotated secret); dozens in five minutes
    /// mean Zoho's deliveries are being refused.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            signature_failures: 20,
            workflow_errors: 10,
        }
    }
}

/// A sliding window over the failure counters.
#[derive(Debug)]
pub struct DataPlaneHealth {
    thresholds: Thresholds,
    samples: VecDeque<(Instant, u64, u64)>,
}

impl DataPlaneHealth {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            samples: VecDeque::new(),
        }
    }

    /// Samples the metrics; `None` when healthy, else why not.
    pub fn check(&mut self, metrics: &Metrics) -> Option<String> {
        self.record(
            Instant::now(),
            total(&metrics.signature_failures),
            total(&metrics.workflow_errors),
        )
    }

    /// Records the counters' totals at `now` and judges the window.
    pub fn record(&mut self, now: Instant, signature: u64, workflow: u64) -> Option<String> {
        while self
            .samples
            .get(1)
            .is_some_and(|(at, _, _)| now.duration_since(*at) >= self.thresholds.window)
        {
            self.samples.pop_front();
        }
        self.samples.push_back((now, signature, workflow));
        let (_, first_signature, first_workflow) = self.samples[0];
        let signature = signature.saturating_sub(first_signature);
        let workflow = workflow.saturating_sub(first_workflow);
        let window = self.thresholds.window.as_secs();
        let mut problems = Vec::new();
        if signature > self.thresholds.signature_failures {
            problems.push(format!(
                "{signature} signature failures in {window} s (threshold {})",
                self.thresholds.signature_failures
            ));
        }
        if workflow > self.thresholds.workflow_errors {
            problems.push(format!(
                "{workflow} workflow errors in {window} s (threshold {})",
                self.thresholds.workflow_errors
            ));
        }
        (!problems.is_empty()).then(|| problems.join(", "))
    }
}

/// The sum of a counter over all its label values.
#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> DataPlaneHealth {
        DataPlaneHealth::new(Thresholds {
            window: Duration::from_secs(60),
            signature_failures: 5,
            workflow_errors: 2,
        })
    }

    #[test]
    fn failures_above_the_threshold_within_the_window_are_degraded() {
        let mut health = health();
        let start = Instant::now();
        assert_eq!(
            health.record(start, 100, 0),
            None,
            "old totals do not count"
        );
        assert_eq!(health.record(start + Duration::from_secs(10), 105, 2), None);
        let why = health
            .record(start + Duration::from_secs(20), 106, 3)
            .unwrap();
        assert_eq!(
            why,
            "6 signature failures in 60 s (threshold 5), 3 workflow errors in 60 s (threshold 2)"
        );
    }

    #[test]
    fn failures_age_out_of_the_window() {
        let mut health = health();
        let start = Instant::now();
        health.record(start, 0, 0);
        assert!(
            health
                .record(start + Duration::from_secs(5), 10, 0)
                .is_some()
        );
        assert_eq!(health.record(start + Duration::from_secs(70), 10, 0), None);
    }

    #[test]
    fn the_counters_are_read_across_labels() {
        let metrics = Metrics::new();
        metrics
            .signature_failures
            .with_label_values(&["hmac"])
            .inc_by(4);
        metrics
            .signature_failures
            .with_label_values(&["zoho_jwt"])
            .inc_by(3);
        assert_eq!(total(&metrics.signature_failures), 7);
    }
}

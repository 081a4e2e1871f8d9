//! Prometheus metrics, registered once per process in one registry with the `deskhook_` prefix.
//!
//! Every label has a bounded set of values (outcomes, schemes, reasons, step names): nothing
//! from a request ends up in a label.
//!
//! The label values an alert reads are created at 0 when the process starts. A counter series
//! that appears only with its first increment is born at 1, and `increase()` over a series'
//! first sample is 0: the first bad signature or failing step after a restart would never be
//! alerted on.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Outcomes of `webhook_requests_total`.
pub const REQUEST_OUTCOMES: &[&str] = &[
    "accepted",
    "validation",
    "unauthorized",
    "bad_request",
    "too_large",
    "unavailable",
    "rate_limited",
    "forbidden",
    "timeout",
];

/// Schemes of `signature_failures_total`: the verification schemes, and `none` when a delivery
/// carried no signature any configured scheme reads.
pub const SIGNATURE_SCHEMES: &[&str] = &["zoho_jwt", "hmac", "standard_webhooks", "none"];

/// Statuses of `events_total`.
pub const EVENT_STATUSES: &[&str] = &["queued", "duplicate", "ignored"];

/// Results of `workflow_runs_total`.
pub const RUN_RESULTS: &[&str] = &["success", "failed", "retried"];

/// The workflow's steps, in the order a run takes them (the `step` label of
/// `workflow_errors_total` and `workflow_steps_total`).
pub const WORKFLOW_STEPS: &[&str] = &[
    "fetch",
    "find_deal",
    "dispatch",
    "link",
    "reply",
    "update_ticket",
    "update_deal",
    "add_note",
];

/// All of deskhook's metrics.
pub struct Metrics {
    registry: Registry,
    pub webhook_requests: IntCounterVec,
    pub request_duration: Histogram,
    pub signature_failures: IntCounterVec,
    pub signature_verified: IntCounterVec,
    pub rejections: IntCounterVec,
    pub payload_parse_errors: IntCounter,
    pub missing_ticket_id: IntCounter,
    pub events: IntCounterVec,
    pub workflow_runs: IntCounterVec,
    pub workflow_errors: IntCounterVec,
    pub workflow_steps: IntCounterVec,
    pub queue_depth: IntGauge,
    pub queue_capacity: IntGauge,
    pub automation_enabled: IntGaugeVec,
    pub config_generation: IntGauge,
    pub config_reload_errors: IntCounter,
    pub verification_disabled: IntGauge,
    pub connections_open: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("deskhook".into()), None)
            .expect("a constant prefix is a valid registry");
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(metric.clone()))
                .expect("registered once");
            metric
        };
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "webhook_request_duration_seconds",
                "Time to answer a webhook delivery, from the first byte read to the answer.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(request_duration.clone()))
            .expect("registered once");
        let automation_enabled = IntGaugeVec::new(
            Opts::new(
                "automation_enabled",
                "1 when the automation flag is on in the settings in force, else 0.",
            ),
            &["flag"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(automation_enabled.clone()))
            .expect("registered once");

        Self {
            webhook_requests: counter_vec(
                "webhook_requests_total",
                "Webhook deliveries by outcome (accepted, validation, unauthorized, bad_request, too_large, unavailable, rate_limited, forbidden, timeout).",
                &["outcome"],
            ),
            request_duration,
            signature_failures: counter_vec(
                "signature_failures_total",
                "Deliveries refused because no configured scheme verified them, by scheme tried.",
                &["scheme"],
            ),
            signature_verified: counter_vec(
                "signature_verified_total",
                "Deliveries verified, by scheme and index of the key that matched.",
                &["scheme", "key"],
            ),
            rejections: counter_vec(
                "webhook_rejections_total",
                "Requests refused on the public listener, by bounded reason (verification failures, replays, limits, slow or oversized clients).",
                &["reason"],
            ),
            payload_parse_errors: counter(
                "payload_parse_errors_total",
                "Verified deliveries whose body is not a valid JSON payload.",
            ),
            missing_ticket_id: counter(
                "missing_ticket_id_total",
                "Ticket events that carried no usable ticket id.",
            ),
            events: counter_vec(
                "events_total",
                "Events read from deliveries, by what became of them (queued, duplicate, ignored).",
                &["status"],
            ),
            workflow_runs: counter_vec(
                "workflow_runs_total",
                "Automation runs by result (success, failed, retried).",
                &["result"],
            ),
            workflow_errors: counter_vec(
                "workflow_errors_total",
                "Automation steps that failed, by step.",
                &["step"],
            ),
            workflow_steps: counter_vec(
                "workflow_steps_total",
                "Workflow steps by step and status (done, skipped_flag_off, not_needed, suggested, failed).",
                &["step", "status"],
            ),
            queue_depth: gauge("queue_depth", "Events waiting in the queue."),
            queue_capacity: gauge("queue_capacity", "Events the queue holds at most."),
            automation_enabled,
            config_generation: gauge(
                "config_generation",
                "Generation of the settings in force in this pod.",
            ),
            config_reload_errors: counter(
                "config_reload_errors_total",
                "Settings edits refused because they were invalid; the last good settings stayed.",
            ),
            verification_disabled: gauge(
                "verification_disabled",
                "1 when the server runs with --insecure-no-verification.",
            ),
            connections_open: gauge(
                "connections_open",
                "Connections open on the public webhook listener.",
            ),
            registry,
        }
        .with_known_series()
    }

    /// Creates every series an alert reads, at 0 (see the module comment).
    fn with_known_series(self) -> Self {
        for outcome in REQUEST_OUTCOMES {
            self.webhook_requests.with_label_values(&[outcome]);
        }
        for scheme in SIGNATURE_SCHEMES {
            self.signature_failures.with_label_values(&[scheme]);
        }
        for status in EVENT_STATUSES {
            self.events.with_label_values(&[status]);
        }
        for result in RUN_RESULTS {
            self.workflow_runs.with_label_values(&[result]);
        }
        for step in WORKFLOW_STEPS {
            self.workflow_errors.with_label_values(&[step]);
        }
        self
    }

    /// The registry, for subsystems that register their own metrics (the Zoho clients, the
    /// Kubernetes watcher) under the same prefix.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

/// The sum of a counter over every label value it has seen: a total that cannot miss a
/// label added later (a new verification scheme, a new step).
pub fn total(counter: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    counter
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|metric| metric.get_counter().get_value() as u64)
        .sum()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerted_series_exist_at_zero_from_the_start() {
        let text = Metrics::new().render();
        for step in WORKFLOW_STEPS {
            let series = format!("deskhook_workflow_errors_total{{step=\"{step}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        for scheme in SIGNATURE_SCHEMES {
            let series = format!("deskhook_signature_failures_total{{scheme=\"{scheme}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains("deskhook_webhook_requests_total{outcome=\"unavailable\"} 0"));
        assert!(text.contains("deskhook_workflow_runs_total{result=\"failed\"} 0"));
        assert!(text.contains("deskhook_payload_parse_errors_total 0"));
    }
}

//! The Zoho clients' metrics, registered in the process registry (prefix `deskhook_`).
//!
//! Labels are bounded: the API, a fixed operation name, an HTTP status code or `error`, and
//! a refresh result.
//!
//! The failures the alerts read are also counted by API and kind in a family whose every series
//! exists at 0 from the start: a status series is created by its first request, so a burst of
//! retried 503s can appear already at 3, and `rate()` never sees it rise.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::error::{Api, Call};
use crate::metrics::Metrics;

/// Kinds of `zoho_request_failures_total`.
const FAILURE_KINDS: [&str; 3] = ["server_error", "no_answer", "throttled"];

/// Counters and histograms of Zoho calls. Cheap to clone; register once per process.
#[derive(Clone, Debug)]
pub struct ZohoMetrics {
    requests: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    token_refreshes: IntCounterVec,
}

impl ZohoMetrics {
    /// Registers the metrics in `metrics`' registry. Fails when they are already registered:
    /// build the Zoho clients once per process and clone them.
    pub fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        Self::register_in(metrics.registry())
    }

    fn register_in(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "zoho_requests_total",
                "Zoho API requests by API, operation and HTTP status (or error when no answer came).",
            ),
            &["api", "op", "status"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "zoho_request_failures_total",
                "Zoho API requests that failed, by API and kind (server_error: 5xx, no_answer, throttled: 429).",
            ),
            &["api", "kind"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "zoho_request_duration_seconds",
                "Time of one Zoho API request attempt, by API and operation.",
            )
            .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["api", "op"],
        )?;
        let token_refreshes = IntCounterVec::new(
            Opts::new(
                "zoho_token_refreshes_total",
                "Zoho access token refreshes by result (success, throttled, rejected, error, limited).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        for api in [Api::Desk, Api::Crm, Api::Accounts] {
            for kind in FAILURE_KINDS {
                failures.with_label_values(&[api.as_str(), kind]);
            }
        }
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(token_refreshes.clone()))?;
        // At 0 from the start, so the first rejected refresh after a restart is alerted on.
        for result in RefreshResult::ALL {
            token_refreshes.with_label_values(&[result.as_str()]);
        }
        Ok(Self {
            requests,
            failures,
            duration,
            token_refreshes,
        })
    }

    /// Metrics in a registry of their own, for clients built outside a server.
    pub fn unregistered() -> Self {
        Self::register_in(&Registry::new()).expect("a fresh registry has no conflicts")
    }

    pub(crate) fn observe(&self, call: Call, status: Option<u16>, seconds: f64) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        let (api, op) = (call.api.as_str(), call.op);
        self.requests.with_label_values(&[api, op, &status]).inc();
        let failure = match status.as_str() {
            "error" => Some("no_answer"),
            "429" => Some("throttled"),
            code if code.starts_with('5') => Some("server_error"),
            _ => None,
        };
        if let Some(kind) = failure {
            self.failures.with_label_values(&[api, kind]).inc();
        }
        self.duration.with_label_values(&[api, op]).observe(seconds);
    }

    pub(crate) fn refresh(&self, result: RefreshResult) {
        self.token_refreshes
            .with_label_values(&[result.as_str()])
            .inc();
    }
}

/// How a token refresh ended; a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshResult {
    Success,
    /// Zoho answered `Access Denied`.
    Throttled,
    /// Zoho refused the credentials.
    Rejected,
    /// No usable answer (connection, status, body).
    Error,
    /// deskhook did not ask, to stay within the budget.
    Limited,
}

impl RefreshResult {
    const ALL: [Self; 5] = [
        Self::Success,
        Self::Throttled,
        Self::Rejected,
        Self::Error,
        Self::Limited,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RefreshResult::Success => "success",
            RefreshResult::Throttled => "throttled",
            RefreshResult::Rejected => "rejected",
            RefreshResult::Error => "error",
            RefreshResult::Limited => "limited",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_carry_the_process_prefix() {
        let metrics = Metrics::new();
        let zoho = ZohoMetrics::register(&metrics).unwrap();
        zoho.observe(Call::read(Api::Desk, "get_ticket"), Some(200), 0.1);
        zoho.observe(Call::write(Api::Desk, "send_reply"), None, 0.1);
        zoho.refresh(RefreshResult::Throttled);
        let text = metrics.render();
        assert!(text.contains(
            r#"deskhook_zoho_requests_total{api="desk",op="get_ticket",status="200"} 1"#
        ));
        assert!(text.contains(r#"status="error""#));
        assert!(text.contains(r#"deskhook_zoho_token_refreshes_total{result="throttled"} 1"#));
        assert!(text.contains("deskhook_zoho_request_duration_seconds_bucket"));
        assert!(
            ZohoMetrics::register(&metrics).is_err(),
            "registering twice is refused"
        );
    }

    #[test]
    fn failures_are_counted_by_kind_from_zero() {
        let metrics = Metrics::new();
        let zoho = ZohoMetrics::register(&metrics).unwrap();
        let before = metrics.render();
        for api in ["desk", "crm", "accounts"] {
            for kind in FAILURE_KINDS {
                let series = format!(
                    r#"deskhook_zoho_request_failures_total{{api="{api}",kind="{kind}"}} 0"#
                );
                assert!(before.contains(&series), "missing {series}");
            }
        }
        let ticket = Call::read(Api::Desk, "get_ticket");
        for status in [Some(503), Some(500), None, Some(429), Some(200), Some(404)] {
            zoho.observe(ticket, status, 0.1);
        }
        let after = metrics.render();
        for (kind, count) in [("server_error", 2), ("no_answer", 1), ("throttled", 1)] {
            let series = format!(
                r#"deskhook_zoho_request_failures_total{{api="desk",kind="{kind}"}} {count}"#
            );
            assert!(after.contains(&series), "missing {series}");
        }
    }
}

//! Abuse resistance of the public listener: who the client is, whether it may be served, and
//! how many requests and failed verifications it may send.
//!
//! Two budgets per client, both token buckets configured in `spec.limits`:
//! - every request spends from the request budget, checked first;
//! - a failed verification (any 401) spends from the failure budget, which is only *looked
//!   at* before a request is verified. A client whose deliveries verify never spends it, so a
//!   forger flooding from its own addresses is cut off before its requests cost a signature
//!   check while Zoho's deliveries keep flowing.

pub mod bucket;
pub mod client;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::Settings;

pub use bucket::{Buckets, Verdict};
pub use client::{client_addr, limit_key};

/// Why a client is turned away before its request is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// `spec.limits.allowedSourceRanges` is set and the client is not in it.
    SourceNotAllowed,
    /// Over the request budget.
    RateLimited(Duration),
    /// Over the failed-verification budget.
    TooManyFailures(Duration),
}

/// The per-client budgets of one listener.
#[derive(Debug, Default)]
pub struct Guard {
    requests: Buckets,
    failures: Buckets,
}

impl Guard {
    /// Decides whether `client` may be served now, spending one request token if so.
    pub fn admit(&self, client: IpAddr, settings: &Settings) -> Result<(), Denial> {
        if !settings.networks.is_allowed_source(client) {
            return Err(Denial::SourceNotAllowed);
        }
        let key = limit_key(client);
        let limits = settings.limits();
        let now = Instant::now();
        if let Verdict::Limited(wait) =
            self.failures
                .peek(key, &limits.failed_verification_limit, now)
        {
            return Err(Denial::TooManyFailures(wait));
        }
        match self.requests.take(key, &limits.rate_limit, now) {
            Verdict::Allowed => Ok(()),
            Verdict::Limited(wait) => Err(Denial::RateLimited(wait)),
        }
    }

    /// Charges `client` one failed verification.
    pub fn record_failure(&self, client: IpAddr, settings: &Settings) {
        let limit = &settings.limits().failed_verification_limit;
        let _ = self.failures.take(limit_key(client), limit, Instant::now());
    }
}

/// Whole seconds to put in `Retry-After`, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingsSource;
    use crate::crd::WebhookAutomationSpec;

    fn settings(edit: impl FnOnce(&mut WebhookAutomationSpec)) -> Settings {
        let mut spec = WebhookAutomationSpec::default();
        edit(&mut spec);
        Settings::from_spec(spec, SettingsSource::Environment, 1).unwrap()
    }

    #[test]
    fn failures_close_the_door_only_for_the_client_that_failed() {
        let settings = settings(|spec| {
            spec.limits.failed_verification_limit.burst = 2;
            spec.limits.failed_verification_limit.requests_per_second = 0.01;
        });
        let guard = Guard::default();
        let forger: IpAddr = "198.51.100.7".parse().unwrap();
        let zoho: IpAddr = "203.0.113.10".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(guard.admit(forger, &settings), Ok(()));
            guard.record_failure(forger, &settings);
        }
        assert!(matches!(
            guard.admit(forger, &settings),
            Err(Denial::TooManyFailures(_))
        ));
        for _ in 0..10 {
            assert_eq!(guard.admit(zoho, &settings), Ok(()));
        }
    }

    #[test]
    fn the_allowlist_refuses_other_sources() {
        let settings = settings(|spec| {
            spec.limits.allowed_source_ranges = vec!["203.0.113.0/24".into()];
        });
        let guard = Guard::default();
        assert_eq!(
            guard.admit("203.0.113.10".parse().unwrap(), &settings),
            Ok(())
        );
        assert_eq!(
            guard.admit("198.51.100.7".parse().unwrap(), &settings),
            Err(Denial::SourceNotAllowed)
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}

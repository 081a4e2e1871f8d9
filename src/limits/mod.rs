//! Abuse resistance of the public listener: who the client is, whether it may be served, and
//! how many requests and failed verifications it may send.
//!
//! Two budgets per client, both token buckets configured in `spec.limits`:
//! - every request spends from the request budget, checked first;
//! - a failed verification (a 401) spends from the failure budget. The token is *reserved*
//!   before the request is verified and given back when it verifies (or fails for a reason
//!   that is not the sender's, such as Zoho's keys being unreachable), so a burst of
//!   concurrent forgeries cannot all be verified before the first is charged.
//!
//! The invariant: a delivery that verifies is never refused by the failure budget. A client
//! whose budget is spent is still verified, but only with what costs little (HMACs, keys
//! already cached: no key fetch), and a failure is then answered 429 instead of 401. So a
//! forger sharing an address with Zoho (every client is the ingress when no proxy is trusted)
//! cannot lock Zoho out, and a forger on its own address costs one bounded check per request.

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
}

/// Where a request stands with its client's failure budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureBudget {
    /// No client to charge (a router driven without a socket) or the limit is off.
    Unlimited,
    /// One failure is reserved for this request: kept if it fails verification, given back
    /// otherwise. Verification may do everything, key fetches included.
    Reserved,
    /// The budget is spent: verify only what is cheap, and answer a failure with 429 after
    /// this long.
    Spent(Duration),
}

impl FailureBudget {
    /// Whether verification may fetch keys it does not have (a network call).
    pub fn may_fetch_keys(self) -> bool {
        !matches!(self, Self::Spent(_))
    }
}

/// The per-client budgets of one listener.
#[derive(Debug, Default)]
pub struct Guard {
    requests: Buckets,
    failures: Buckets,
}

impl Guard {
    /// Decides whether `client` may be served now, spending one request token if so, and
    /// reserves one failure against its failure budget.
    pub fn admit(&self, client: IpAddr, settings: &Settings) -> Result<FailureBudget, Denial> {
        if !settings.networks.is_allowed_source(client) {
            return Err(Denial::SourceNotAllowed);
        }
        let key = limit_key(client);
        let limits = settings.limits();
        let now = Instant::now();
        if let Verdict::Limited(wait) = self.requests.take(key, &limits.rate_limit, now) {
            return Err(Denial::RateLimited(wait));
        }
        if !limits.failed_verification_limit.enabled {
            return Ok(FailureBudget::Unlimited);
        }
        Ok(
            match self
                .failures
                .take(key, &limits.failed_verification_limit, now)
            {
                Verdict::Allowed => FailureBudget::Reserved,
                Verdict::Limited(wait) => FailureBudget::Spent(wait),
            },
        )
    }

    /// Settles a reservation once the request is answered: the failure stays charged only if
    /// the request failed verification.
    pub fn settle(&self, client: IpAddr, settings: &Settings, budget: FailureBudget, failed: bool) {
        if budget == FailureBudget::Reserved && !failed {
            self.failures.refund(
                limit_key(client),
                &settings.limits().failed_verification_limit,
            );
        }
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
            let budget = guard.admit(forger, &settings).unwrap();
            assert_eq!(budget, FailureBudget::Reserved);
            guard.settle(forger, &settings, budget, true);
        }
        let spent = guard.admit(forger, &settings).unwrap();
        assert!(matches!(spent, FailureBudget::Spent(_)));
        assert!(!spent.may_fetch_keys());
        for _ in 0..10 {
            let budget = guard.admit(zoho, &settings).unwrap();
            assert_eq!(budget, FailureBudget::Reserved);
            guard.settle(zoho, &settings, budget, false);
        }
    }

    #[test]
    fn concurrent_requests_each_reserve_a_failure_before_any_is_verified() {
        let settings = settings(|spec| {
            spec.limits.failed_verification_limit.burst = 3;
            spec.limits.failed_verification_limit.requests_per_second = 0.01;
        });
        let guard = Guard::default();
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        let in_flight: Vec<FailureBudget> = (0..10)
            .map(|_| guard.admit(client, &settings).unwrap())
            .collect();
        let reserved = in_flight
            .iter()
            .filter(|b| **b == FailureBudget::Reserved)
            .count();
        assert_eq!(
            reserved, 3,
            "only the budget's burst may fetch keys at once"
        );
        // The ones that verified give their reservation back.
        for budget in in_flight {
            guard.settle(client, &settings, budget, false);
        }
        assert_eq!(
            guard.admit(client, &settings).unwrap(),
            FailureBudget::Reserved
        );
    }

    #[test]
    fn the_allowlist_refuses_other_sources() {
        let settings = settings(|spec| {
            spec.limits.allowed_source_ranges = vec!["203.0.113.0/24".into()];
        });
        let guard = Guard::default();
        assert_eq!(
            guard.admit("203.0.113.10".parse().unwrap(), &settings),
            Ok(FailureBudget::Reserved)
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

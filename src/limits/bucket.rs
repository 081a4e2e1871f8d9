//! Token buckets per client, as GCRA: one timestamp per client, so a bucket costs a few bytes
//! and a check is a subtraction.
//!
//! Written here rather than taken from a crate because the failure budget needs a *look*
//! that does not spend a token (a client is checked before verification, charged only when
//! verification fails), and because the number of clients tracked must stay bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crd::RateLimitSpec;

/// Clients tracked at most per limit. Only clients seen within the last `burst / rate`
/// seconds hold an entry that matters, so this is reached only by a flood from that many
/// distinct networks at once.
pub const MAX_CLIENTS: usize = 65_536;

/// The answer of a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; the client may try again after this long.
    Limited(Duration),
}

/// Buckets keyed by client address.
#[derive(Debug)]
pub struct Buckets {
    /// Per client, the theoretical arrival time of its next request (GCRA's TAT).
    arrivals: Mutex<HashMap<IpAddr, Instant>>,
    max_clients: usize,
}

impl Default for Buckets {
    fn default() -> Self {
        Self::with_capacity(MAX_CLIENTS)
    }
}

impl Buckets {
    pub fn with_capacity(max_clients: usize) -> Self {
        Self {
            arrivals: Mutex::default(),
            max_clients,
        }
    }

    /// Spends one token of `client`'s bucket, if it has one.
    pub fn take(&self, client: IpAddr, limit: &RateLimitSpec, now: Instant) -> Verdict {
        self.check(client, limit, now, true)
    }

    /// Whether `client`'s bucket has a token, without spending it.
    pub fn peek(&self, client: IpAddr, limit: &RateLimitSpec, now: Instant) -> Verdict {
        self.check(client, limit, now, false)
    }

    /// Gives back a token spent by [`Buckets::take`]: the request it paid for turned out not to
    /// count against this limit (a reserved failure that did not happen).
    pub fn refund(&self, client: IpAddr, limit: &RateLimitSpec) {
        if !limit.enabled {
            return;
        }
        let interval = interval(limit);
        if let Some(at) = self.lock().get_mut(&client) {
            *at = at.checked_sub(interval).unwrap_or(*at);
        }
    }

    /// Clients with an entry now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, client: IpAddr, limit: &RateLimitSpec, now: Instant, spend: bool) -> Verdict {
        if !limit.enabled {
            return Verdict::Allowed;
        }
        let interval = interval(limit);
        let tolerance = interval.saturating_mul(limit.burst.max(1));
        let mut arrivals = self.lock();
        if !arrivals.contains_key(&client) && arrivals.len() >= self.max_clients {
            make_room(&mut arrivals, self.max_clients, now);
        }
        let tat = arrivals.get(&client).map_or(now, |at| (*at).max(now));
        let next = tat + interval;
        let ahead = next.saturating_duration_since(now);
        if ahead > tolerance {
            return Verdict::Limited(ahead - tolerance);
        }
        if spend {
            arrivals.insert(client, next);
        }
        Verdict::Allowed
    }
}

/// Time between two tokens of `limit`.
fn interval(limit: &RateLimitSpec) -> Duration {
    let rate = limit.requests_per_second.max(0.001);
    Duration::from_secs_f64((1.0 / rate).min(86_400.0))
}

/// Frees entries in a full table so a client never seen before is still judged on its own
/// budget: refusing newcomers would let a flood from many networks lock out everyone else,
/// Zoho included. Entries in the past are full buckets, forgotten at no cost; if that is not
/// enough, the eighth of the table that would recover soonest goes, so the sort is paid once
/// per many newcomers, not once per request.
fn make_room(arrivals: &mut HashMap<IpAddr, Instant>, max_clients: usize, now: Instant) {
    arrivals.retain(|_, at| *at > now);
    if arrivals.len() < max_clients {
        return;
    }
    let mut by_recovery: Vec<(Instant, IpAddr)> =
        arrivals.iter().map(|(ip, at)| (*at, *ip)).collect();
    let evict = (max_clients / 8).max(1);
    by_recovery.select_nth_unstable(evict - 1);
    for (_, ip) in &by_recovery[..evict] {
        arrivals.remove(ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: f64, burst: u32) -> RateLimitSpec {
        RateLimitSpec {
            enabled: true,
            requests_per_second: rate,
            burst,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_burst_passes_then_the_rate_applies_per_client() {
        let buckets = Buckets::default();
        let now = Instant::now();
        let limit = limit(2.0, 3);
        for _ in 0..3 {
            assert_eq!(buckets.take(A, &limit, now), Verdict::Allowed);
        }
        let Verdict::Limited(wait) = buckets.take(A, &limit, now) else {
            panic!("the fourth request at once passed");
        };
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(buckets.take(B, &limit, now), Verdict::Allowed);
        assert_eq!(buckets.take(A, &limit, now + wait), Verdict::Allowed);
    }

    #[test]
    fn peeking_spends_nothing() {
        let buckets = Buckets::default();
        let now = Instant::now();
        let limit = limit(1.0, 1);
        for _ in 0..5 {
            assert_eq!(buckets.peek(A, &limit, now), Verdict::Allowed);
        }
        assert_eq!(buckets.take(A, &limit, now), Verdict::Allowed);
        assert!(matches!(buckets.peek(A, &limit, now), Verdict::Limited(_)));
    }

    #[test]
    fn a_disabled_limit_allows_everything() {
        let buckets = Buckets::default();
        let mut limit = limit(0.001, 1);
        limit.enabled = false;
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(buckets.take(A, &limit, now), Verdict::Allowed);
        }
        assert!(buckets.is_empty());
    }

    #[test]
    fn the_number_of_clients_stays_bounded() {
        let buckets = Buckets::with_capacity(4);
        let limit = limit(1.0, 1);
        let now = Instant::now();
        for i in 0..4u8 {
            let client = IpAddr::from([10, 0, 0, i]);
            assert_eq!(buckets.take(client, &limit, now), Verdict::Allowed);
        }
        // A client never seen is judged on its own budget even when the table is full: the
        // entry that recovers soonest makes room for it.
        let newcomer = IpAddr::from([10, 0, 0, 9]);
        assert_eq!(buckets.take(newcomer, &limit, now), Verdict::Allowed);
        assert_eq!(buckets.len(), 4);
        assert!(matches!(
            buckets.take(newcomer, &limit, now),
            Verdict::Limited(_)
        ));
        // Once the old entries are in the past they are forgotten to make room.
        let later = now + Duration::from_secs(2);
        let another = IpAddr::from([10, 0, 0, 10]);
        assert_eq!(buckets.take(another, &limit, later), Verdict::Allowed);
        assert_eq!(buckets.len(), 1);
    }

    #[test]
    fn a_refund_gives_back_the_token_taken() {
        let buckets = Buckets::default();
        let now = Instant::now();
        let limit = limit(0.01, 1);
        assert_eq!(buckets.take(A, &limit, now), Verdict::Allowed);
        assert!(matches!(buckets.take(A, &limit, now), Verdict::Limited(_)));
        buckets.refund(A, &limit);
        assert_eq!(buckets.take(A, &limit, now), Verdict::Allowed);
    }
}

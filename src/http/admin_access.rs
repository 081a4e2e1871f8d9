//! Who may use the admin listener's console: the `Host` it must be reached by, whether it may
//! run without a token, and how many sign-in attempts it takes.
//!
//! - A browser sends the name it was pointed at as `Host`. Accepting only this listener's own
//!   names (loopback, and those the installer lists) defeats DNS rebinding: a page on another
//!   site cannot make a browser that holds a port-forward read the console under the page's
//!   name.
//! - Sign-in attempts share one allowance per pod (the admin listener is reached through a
//!   port-forward or a Service, so every client may look alike): an attempt is charged before
//!   the token is checked and given back when it was right, so once the allowance is spent a
//!   guess is refused without being checked.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::reply;
use crate::crd::RateLimitSpec;
use crate::limits::{Buckets, Verdict};
use crate::verify::Reason;

/// Shortest admin token accepted: a token is the only thing between a neighbour and customer
/// data, so it must not be guessable.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Wrong sign-ins allowed per minute, per pod.
pub const LOGINS_PER_MINUTE: u32 = 10;

/// The console's access rules, fixed at start.
#[derive(Debug)]
pub struct AdminAccess {
    /// `--console-open`: no token needed, accepted only on a loopback listener.
    pub console_open: bool,
    /// `Host` names accepted besides loopback ones, lower-case, without port.
    pub allowed_hosts: Vec<String>,
    pub logins: LoginLimiter,
}

impl AdminAccess {
    pub fn new(console_open: bool, allowed_hosts: Vec<String>) -> Self {
        Self {
            console_open,
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            logins: LoginLimiter::default(),
        }
    }

    /// Whether a request whose `Host` header is `host` is addressed to this listener.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        is_loopback_name(&name) || self.allowed_hosts.contains(&name)
    }
}

impl Default for AdminAccess {
    fn default() -> Self {
        Self::new(false, Vec::new())
    }
}

/// `Host` without its port: `[::1]:9090` → `::1`, `localhost:9090` → `localhost`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses console requests whose `Host` is not one of this listener's names.
pub async fn check_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if state.admin.host_allowed(host) {
        return next.run(request).await;
    }
    state
        .metrics
        .rejections
        .with_label_values(&[Reason::ForeignHost.as_str()])
        .inc();
    tracing::warn!("console request refused: Host is not one of the admin listener's names");
    reply::error(StatusCode::MISDIRECTED_REQUEST, "Unknown host")
}

/// The pod's allowance of wrong sign-ins.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    buckets: Buckets,
}

/// The one key every sign-in is counted under.
const EVERYONE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

fn allowance() -> RateLimitSpec {
    RateLimitSpec {
        enabled: true,
        requests_per_second: f64::from(LOGINS_PER_MINUTE) / 60.0,
        burst: LOGINS_PER_MINUTE,
    }
}

impl LoginLimiter {
    /// Charges one attempt; `None` when the allowance is spent (refuse without checking).
    pub fn attempt(&self) -> Option<Attempt<'_>> {
        match self.buckets.take(EVERYONE, &allowance(), Instant::now()) {
            Verdict::Allowed => Some(Attempt { limiter: self }),
            Verdict::Limited(_) => None,
        }
    }
}

/// A charged sign-in attempt.
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
}

impl Attempt<'_> {
    /// The token was right: the attempt is given back.
    pub fn succeeded(self) {
        self.limiter.buckets.refund(EVERYONE, &allowance());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_listed_names_are_accepted_as_host() {
        let access = AdminAccess::new(false, vec!["Deskhook-Admin.desk.svc".into()]);
        for ok in [
            "localhost:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "localhost",
            "deskhook-admin.desk.svc:9090",
        ] {
            assert!(access.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:9090",
            "",
            "10.0.0.4:9090",
            "localhost.evil.example",
        ] {
            assert!(!access.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn the_eleventh_wrong_sign_in_in_a_minute_is_refused_unchecked() {
        let limiter = LoginLimiter::default();
        for _ in 0..LOGINS_PER_MINUTE {
            assert!(limiter.attempt().is_some());
        }
        assert!(limiter.attempt().is_none());
    }

    #[test]
    fn a_right_sign_in_costs_nothing() {
        let limiter = LoginLimiter::default();
        for _ in 0..3 * LOGINS_PER_MINUTE {
            limiter.attempt().expect("allowance left").succeeded();
        }
    }
}

//! `spec.limits`: what the public webhook listener lets one client do.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Abuse resistance of the public webhook listener. The defaults are generous enough for any
/// Zoho Desk portal, so they only bite on floods, slow clients and forged deliveries.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsSpec {
    /// Requests one client may send: a token bucket per client address (IPv6 clients are
    /// grouped by /64). Over the limit the answer is 429 with `Retry-After`. Health and
    /// readiness probes are never limited. Off by default: Zoho never redelivers, and a bulk
    /// edit of many tickets sends a burst of genuine deliveries from the same addresses, so a
    /// limit here can lose events; forged floods are stopped by `failedVerificationLimit`.
    #[serde(default = "RateLimitSpec::requests")]
    pub rate_limit: RateLimitSpec,
    /// Failed verifications (bad signature, bad token, replay, bad admin token) one client may
    /// cause. A client over this budget gets 429 before its requests are verified, while
    /// clients whose deliveries verify are never charged, so a flood of forged deliveries
    /// cannot starve Zoho's.
    #[serde(default = "RateLimitSpec::failures")]
    pub failed_verification_limit: RateLimitSpec,
    /// Networks (CIDR) of the proxies in front of deskhook, such as the ingress controller's
    /// pods. Only when the connection comes from one of them is the client address taken from
    /// `X-Forwarded-For` (the right-most address that is not itself a trusted proxy). Empty:
    /// the header is ignored and the connection's address is the client. Behind an ingress,
    /// leave this empty and every request looks as if it came from the ingress. No network
    /// may be wider than a /8 (IPv4) or a /32 (IPv6): a wider one would let clients choose
    /// their own address.
    #[serde(default)]
    #[schemars(
        length(max = 64),
        inner(length(min = 2, max = 64)),
        extend("x-kubernetes-validations" = [{
            "rule": "self.all(n, !n.contains('/') || int(n.split('/')[1]) >= (n.contains(':') ? 32 : 8))",
            "message": "trustedProxies: a network wider than /8 (IPv4) or /32 (IPv6) would let any client choose its address through X-Forwarded-For"
        }])
    )]
    pub trusted_proxies: Vec<String>,
    /// When not empty, only clients in these networks (CIDR) are served; others get 403.
    /// Off by default: Zoho publishes no list of the addresses its webhooks come from.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(min = 2, max = 64)))]
    pub allowed_source_ranges: Vec<String>,
    /// Seconds a client has to send a request's headers (also how long an idle keep-alive
    /// connection is kept). A client that trickles its headers is disconnected after this.
    #[serde(default = "default_header_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub header_read_timeout_seconds: u32,
    /// Seconds a client has to send a request's body; slower is answered 408.
    #[serde(default = "default_body_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub body_read_timeout_seconds: u32,
    /// Largest request line plus headers, in bytes; larger is answered 431.
    #[serde(default = "default_max_header_bytes")]
    #[schemars(range(min = 1024, max = 1048576))]
    pub max_header_bytes: u32,
    /// Connections open at once on the webhook listener; more are closed as soon as they are
    /// accepted.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_connections: u32,
    /// Connections one client address (an IPv6 /64) may hold open at once; more are closed as
    /// soon as they are accepted. Connections from `trustedProxies` are exempt, since every
    /// request relayed by an ingress arrives on one of its connections.
    #[serde(default = "default_max_connections_per_client")]
    #[schemars(range(min = 1, max = 65536))]
    pub max_connections_per_client: u32,
    /// Refuse a Zoho JWT, or a Standard Webhooks `webhook-id`, already accepted within its
    /// validity. Zoho's token does not cover the body, so without this a captured token could
    /// carry another body until it expires. Turn off only if a portal is seen sending one
    /// token for several deliveries (rejections with reason `replayed`).
    #[serde(default = "yes")]
    pub reject_replayed_tokens: bool,
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            rate_limit: RateLimitSpec::requests(),
            failed_verification_limit: RateLimitSpec::failures(),
            trusted_proxies: Vec::new(),
            allowed_source_ranges: Vec::new(),
            header_read_timeout_seconds: default_header_timeout(),
            body_read_timeout_seconds: default_body_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            reject_replayed_tokens: true,
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `requestsPerSecond`.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Whether this limit applies.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sustained rate, per client. May be fractional (0.5 is one request every 2 seconds).
    #[schemars(range(min = 0.001, max = 100000))]
    pub requests_per_second: f64,
    /// Requests a client may send at once before the sustained rate applies.
    #[schemars(range(min = 1, max = 100000))]
    pub burst: u32,
}

impl RateLimitSpec {
    /// Default for all requests: off (see `rateLimit`); when switched on without other
    /// values, 50 a second with bursts of 100 per client.
    pub fn requests() -> Self {
        Self {
            enabled: false,
            requests_per_second: 50.0,
            burst: 100,
        }
    }

    /// Default for failed verifications: a misconfigured sender still gets 401s to debug
    /// with, a forger gets one try a second.
    pub fn failures() -> Self {
        Self {
            enabled: true,
            requests_per_second: 1.0,
            burst: 20,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_header_timeout() -> u32 {
    10
}

fn default_body_timeout() -> u32 {
    10
}

fn default_max_header_bytes() -> u32 {
    16 * 1024
}

fn default_max_connections() -> u32 {
    1024
}

fn default_max_connections_per_client() -> u32 {
    256
}

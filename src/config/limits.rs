//! `spec.limits` checked and turned into the values the listener uses: parsed networks and
//! durations, so no request parses a CIDR.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::InvalidSettings;
use crate::crd::{LimitsSpec, RateLimitSpec};

/// The smallest header limit accepted: below it ordinary requests would not fit.
pub const MIN_HEADER_BYTES: u32 = 1024;

/// Parsed networks of `spec.limits`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks {
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_sources: Vec<IpNet>,
}

impl Networks {
    /// Whether `addr` belongs to a trusted proxy.
    pub fn is_trusted_proxy(&self, addr: IpAddr) -> bool {
        contains(&self.trusted_proxies, addr)
    }

    /// Whether `addr` may be served (always, when no allowlist is set).
    pub fn is_allowed_source(&self, addr: IpAddr) -> bool {
        self.allowed_sources.is_empty() || contains(&self.allowed_sources, addr)
    }
}

fn contains(networks: &[IpNet], addr: IpAddr) -> bool {
    let addr = canonical(addr);
    networks.iter().any(|net| net.contains(&addr))
}

/// An IPv4 address carried in IPv6 (`::ffff:a.b.c.d`, as a dual-stack socket reports it) is
/// compared as IPv4, so `10.0.0.0/8` matches it.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128).
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|net| net.trunc())
}

/// Checks `spec.limits` and parses its networks.
pub fn validate(limits: &LimitsSpec) -> Result<Networks, InvalidSettings> {
    check_bucket("rateLimit", &limits.rate_limit)?;
    check_bucket("failedVerificationLimit", &limits.failed_verification_limit)?;
    let parse_all = |field: &'static str, list: &[String]| {
        list.iter()
            .map(|text| {
                parse_network(text).ok_or_else(|| InvalidSettings::Network {
                    field,
                    value: text.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let networks = Networks {
        trusted_proxies: parse_all("trustedProxies", &limits.trusted_proxies)?,
        allowed_sources: parse_all("allowedSourceRanges", &limits.allowed_source_ranges)?,
    };
    if let Some((text, _)) = limits
        .trusted_proxies
        .iter()
        .zip(&networks.trusted_proxies)
        .find(|(_, net)| too_wide(net))
    {
        return Err(InvalidSettings::TrustedProxyTooWide(text.clone()));
    }
    let in_range = |value: u32, min: u32, max: u32| (min..=max).contains(&value);
    if !in_range(limits.header_read_timeout_seconds, 1, 300)
        || !in_range(limits.body_read_timeout_seconds, 1, 300)
    {
        return Err(InvalidSettings::Limit("timeouts must be 1 to 300 seconds"));
    }
    if !in_range(limits.max_header_bytes, MIN_HEADER_BYTES, 1024 * 1024) {
        return Err(InvalidSettings::Limit(
            "maxHeaderBytes must be 1024 to 1048576",
        ));
    }
    if !in_range(limits.max_connections, 1, 65_536) {
        return Err(InvalidSettings::Limit("maxConnections must be 1 to 65536"));
    }
    if !in_range(limits.max_connections_per_client, 1, 65_536) {
        return Err(InvalidSettings::Limit(
            "maxConnectionsPerClient must be 1 to 65536",
        ));
    }
    Ok(networks)
}

/// Shortest prefix a trusted proxy network may have: a wider network would let a client choose
/// the address every per-client budget is keyed by.
const MIN_PROXY_PREFIX_V4: u8 = 8;
const MIN_PROXY_PREFIX_V6: u8 = 32;

fn too_wide(net: &IpNet) -> bool {
    match net {
        IpNet::V4(v4) => v4.prefix_len() < MIN_PROXY_PREFIX_V4,
        IpNet::V6(v6) => v6.prefix_len() < MIN_PROXY_PREFIX_V6,
    }
}

fn check_bucket(field: &'static str, bucket: &RateLimitSpec) -> Result<(), InvalidSettings> {
    let rate_ok = bucket.requests_per_second.is_finite() && bucket.requests_per_second >= 0.001;
    if !rate_ok || bucket.burst == 0 {
        return Err(InvalidSettings::RateLimit(field));
    }
    Ok(())
}

/// The durations of `spec.limits`.
pub fn header_read_timeout(limits: &LimitsSpec) -> Duration {
    Duration::from_secs(u64::from(limits.header_read_timeout_seconds.max(1)))
}

/// How long a request body may take to arrive.
pub fn body_read_timeout(limits: &LimitsSpec) -> Duration {
    Duration::from_secs(u64::from(limits.body_read_timeout_seconds.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses_parse() {
        let net = parse_network("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("ingress"), None);
    }

    #[test]
    fn mapped_ipv4_matches_ipv4_networks() {
        let networks = Networks {
            trusted_proxies: vec![parse_network("10.0.0.0/8").unwrap()],
            allowed_sources: vec![],
        };
        assert!(networks.is_trusted_proxy("::ffff:10.2.3.4".parse().unwrap()));
        assert!(!networks.is_trusted_proxy("11.0.0.1".parse().unwrap()));
        assert!(networks.is_allowed_source("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn bad_limits_are_refused() {
        let limits = LimitsSpec {
            trusted_proxies: vec!["10.0.0.0/8".into(), "nope".into()],
            ..LimitsSpec::default()
        };
        assert_eq!(
            validate(&limits),
            Err(InvalidSettings::Network {
                field: "trustedProxies",
                value: "nope".into()
            })
        );
        let mut limits = LimitsSpec::default();
        limits.rate_limit.requests_per_second = f64::NAN;
        assert_eq!(
            validate(&limits),
            Err(InvalidSettings::RateLimit("rateLimit"))
        );
        let limits = LimitsSpec {
            max_header_bytes: 10,
            ..LimitsSpec::default()
        };
        assert!(matches!(validate(&limits), Err(InvalidSettings::Limit(_))));
    }

    #[test]
    fn a_trusted_proxy_network_wider_than_a_slash_8_is_refused() {
        for wide in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001:db8::/31"] {
            let limits = LimitsSpec {
                trusted_proxies: vec![wide.into()],
                ..LimitsSpec::default()
            };
            assert_eq!(
                validate(&limits),
                Err(InvalidSettings::TrustedProxyTooWide(wide.into())),
                "{wide}"
            );
        }
        let limits = LimitsSpec {
            trusted_proxies: vec![
                "10.0.0.0/8".into(),
                "2001:db8::/32".into(),
                "10.1.2.3".into(),
            ],
            ..LimitsSpec::default()
        };
        assert!(validate(&limits).is_ok());
    }
}

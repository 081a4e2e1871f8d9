//! Who the client is: the connection's address, or, when that is a trusted proxy, the address
//! the proxies recorded in `X-Forwarded-For`.
//!
//! The header is read from the right: each trusted proxy appends the address it received the
//! request from, so the right-most address that is not a trusted proxy is the first one no
//! trusted party vouches for. Anything to its left was written by the client and is ignored.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderValue;

use crate::config::limits::{Networks, canonical};

/// `X-Forwarded-For` entries read at most (the right-most ones).
const MAX_HOPS: usize = 32;

/// The client address of a request that arrived from `peer`.
pub fn client_addr<'a>(
    peer: IpAddr,
    forwarded_for: impl Iterator<Item = &'a HeaderValue>,
    networks: &Networks,
) -> IpAddr {
    let peer = canonical(peer);
    if !networks.is_trusted_proxy(peer) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in forwarded_for {
        let Ok(text) = value.to_str() else {
            // Not text: nothing in it can be trusted, the proxy itself is the client.
            return peer;
        };
        hops.extend(text.split(','));
        if hops.len() > 4 * MAX_HOPS {
            hops.drain(..hops.len() - MAX_HOPS);
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        let Some(addr) = parse_hop(hop) else {
            return client;
        };
        client = addr;
        if !networks.is_trusted_proxy(addr) {
            return addr;
        }
    }
    client
}

/// `203.0.113.7`, `2001:db8::1`, `[2001:db8::1]:443` or `203.0.113.7:5000`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// The key a client is limited under: its address, or its /64 for IPv6, since one IPv6
/// subscriber usually holds a whole /64 and could otherwise rotate through it.
pub fn limit_key(client: IpAddr) -> IpAddr {
    match canonical(client) {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            IpAddr::V6(Ipv6Addr::new(
                segments[0],
                segments[1],
                segments[2],
                segments[3],
                0,
                0,
                0,
                0,
            ))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limits::parse_network;

    fn networks(trusted: &[&str]) -> Networks {
        Networks {
            trusted_proxies: trusted.iter().map(|t| parse_network(t).unwrap()).collect(),
            allowed_sources: vec![],
        }
    }

    fn resolve(peer: &str, headers: &[&str], trusted: &[&str]) -> String {
        let values: Vec<HeaderValue> = headers
            .iter()
            .map(|h| HeaderValue::from_str(h).unwrap())
            .collect();
        client_addr(peer.parse().unwrap(), values.iter(), &networks(trusted)).to_string()
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        assert_eq!(
            resolve("203.0.113.5", &["198.51.100.1"], &[]),
            "203.0.113.5"
        );
        assert_eq!(
            resolve("203.0.113.5", &["198.51.100.1"], &["10.0.0.0/8"]),
            "203.0.113.5"
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            resolve("10.0.0.2", &["6.6.6.6, 198.51.100.1, 10.0.0.9"], &trusted),
            "198.51.100.1"
        );
        assert_eq!(
            resolve("10.0.0.2", &["6.6.6.6", "198.51.100.1:443"], &trusted),
            "198.51.100.1"
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(
            resolve("10.0.0.2", &["1.2.3.4, junk"], &trusted),
            "10.0.0.2"
        );
        assert_eq!(
            resolve("10.0.0.2", &["junk, 10.0.0.7"], &trusted),
            "10.0.0.7"
        );
        assert_eq!(resolve("10.0.0.2", &[], &trusted), "10.0.0.2");
    }

    #[test]
    fn ipv6_clients_share_a_key_per_64() {
        let a = limit_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = limit_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let other = limit_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(
            limit_key("::ffff:192.0.2.1".parse().unwrap()).to_string(),
            "192.0.2.1"
        );
    }
}

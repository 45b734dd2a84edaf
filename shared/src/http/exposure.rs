//! Whether a request reached Kelp through a private route. The runner API's private-network
//! mode (`KELP_RUNNER_AUTH=private-network`) accepts Alga's tokenless callers only there, and
//! trusts only what it is told to:
//!
//! - In Lambda, a route is private when API Gateway says so: a private REST API's events name
//!   the VPC endpoint they came through (`requestContext.identity.vpceId`), which no client
//!   can set. HTTP API, Function URL, ALB and public REST API events never do.
//! - On a socket (`kelp up`, a container), by the peer address of the connection, which must
//!   be in `KELP_RUNNER_TRUSTED_NETWORKS` (loopback by default). A request that carries
//!   forwarding headers (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`) is refused whatever its
//!   peer: a proxy on a trusted address may be relaying anyone. The bind address and the
//!   `Host` header say nothing about who is calling, so neither is consulted.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap};
use lambda_http::request::RequestContext;

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parse `addr[/prefix]`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (addr, prefix) = raw.split_once('/').map_or((raw, None), |(a, p)| (a, Some(p)));
        let addr: IpAddr = addr.parse().map_err(|_| format!("{raw:?} is not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{raw:?}: bad prefix"))?,
        };
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        // IPv4 sits in the top 32 bits, so the same leading-ones mask serves both families.
        let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
        bits(ip) & mask == bits(self.addr) & mask
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Who may call without a token in the private-network mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateTrust {
    /// Lambda: the VPC endpoints a private API call may come through (empty: any).
    pub vpc_endpoints: Vec<String>,
    /// Sockets: the peer networks trusted (`KELP_RUNNER_TRUSTED_NETWORKS`).
    pub networks: Vec<Network>,
}

/// The default trusted networks: this host only.
pub const DEFAULT_TRUSTED_NETWORKS: &str = "127.0.0.0/8,::1/128";

/// Headers a proxy adds for the client behind it.
const FORWARDING_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip"];

/// How the request came through a private route (for the log), or why it did not.
pub fn private_route(extensions: &Extensions, headers: &HeaderMap, trust: &PrivateTrust) -> Result<String, String> {
    if let Some(context) = extensions.get::<RequestContext>() {
        let RequestContext::ApiGatewayV1(context) = context else {
            return Err("not a private REST API event".into());
        };
        let vpce = context.identity.other.get("vpceId").and_then(|v| v.as_str()).filter(|v| !v.is_empty());
        let Some(vpce) = vpce else { return Err("not through a VPC endpoint".into()) };
        return if trust.vpc_endpoints.is_empty() || trust.vpc_endpoints.iter().any(|e| e == vpce) {
            Ok(format!("private API through {vpce}"))
        } else {
            Err(format!("VPC endpoint {vpce} is not trusted"))
        };
    }
    if let Some(name) = FORWARDING_HEADERS.iter().find(|h| headers.contains_key(**h)) {
        return Err(format!("forwarded by a proxy ({name})"));
    }
    let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() else {
        return Err("no peer address".into());
    };
    match trust.networks.iter().find(|n| n.contains(peer.ip())) {
        Some(network) => Ok(format!("peer {} in {network}", peer.ip())),
        None => Err(format!("peer {} is not in a trusted network", peer.ip())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(networks: &str) -> PrivateTrust {
        PrivateTrust {
            vpc_endpoints: Vec::new(),
            networks: networks.split(',').map(|n| Network::parse(n).unwrap()).collect(),
        }
    }

    fn from(peer: &str) -> Extensions {
        let mut e = Extensions::new();
        e.insert(ConnectInfo::<SocketAddr>(peer.parse().unwrap()));
        e
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_network_text_parses_or_is_refused_without_panicking(raw in "\\PC{0,40}") {
            if let Ok(n) = Network::parse(&raw) {
                proptest::prop_assert!(Network::parse(&n.to_string()).is_ok());
            }
        }

        /// Whatever the peer and however the header is spelled, a forwarded request is never
        /// private; and no header at all makes an untrusted peer private.
        #[test]
        fn forwarded_or_untrusted_is_never_private(
            a in 0u8..=255, b in 0u8..=255, header in "(Forwarded|X-Forwarded-For|x-real-ip|host|via|x-client-ip)",
            value in "[ -~]{0,30}",
        ) {
            let trusted = trust("10.0.0.0/8");
            let peer = format!("10.{a}.{b}.1:4000");
            let mut headers = HeaderMap::new();
            if let (Ok(name), Ok(value)) = (header.parse::<axum::http::HeaderName>(), value.parse()) {
                headers.insert(name, value);
            }
            let forwarded = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
            proptest::prop_assert_eq!(private_route(&from(&peer), &headers, &trusted).is_ok(), !forwarded);
            let outside = format!("11.{a}.{b}.1:4000");
            proptest::prop_assert!(private_route(&from(&outside), &headers, &trusted).is_err());
        }
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let n = Network::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.200.3.4".parse().unwrap()) && !n.contains("11.0.0.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()), "an IPv4-mapped peer");
        let one = Network::parse("192.168.1.7").unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()) && !one.contains("192.168.1.8".parse().unwrap()));
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0").unwrap().contains("203.0.113.7".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "host.example", "10.0.0/8", ""] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_trusted_unforwarded_peer_is_private() {
        let loopback = trust(DEFAULT_TRUSTED_NETWORKS);
        let none = HeaderMap::new();
        assert!(private_route(&from("127.0.0.1:5000"), &none, &loopback).is_ok());
        assert!(private_route(&from("[::1]:5000"), &none, &loopback).is_ok());
        assert!(private_route(&from("10.0.0.5:5000"), &none, &loopback).unwrap_err().contains("not in a trusted"));
        assert!(private_route(&Extensions::new(), &none, &loopback).is_err(), "no peer known: not private");
        for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            let mut forwarded = HeaderMap::new();
            forwarded.insert(header, "203.0.113.7".parse().unwrap());
            let why = private_route(&from("127.0.0.1:5000"), &forwarded, &loopback).unwrap_err();
            assert!(why.contains(header), "{why}");
        }
        let mut host = HeaderMap::new();
        host.insert("host", "attacker.example".parse().unwrap());
        assert!(private_route(&from("10.0.0.5:5000"), &host, &loopback).is_err(), "Host says nothing");
    }
}

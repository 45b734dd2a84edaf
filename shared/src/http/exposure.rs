//! Whether a request reached Kelp through a private route. The runner API's private-network
//! mode (`KELP_RUNNER_AUTH=private-network`) accepts Alga's tokenless caller only there.
//!
//! - In Lambda, a route is private when API Gateway says so: a private REST API's events name
//!   the VPC endpoint they came through (`requestContext.identity.vpceId`). HTTP API, Function
//!   URL, ALB and public REST API events never do, so a call through them needs the token.
//! - On a socket (`kelp up`, a container), the server marks every request with its listener's
//!   [`ListenerExposure`]: private only when the listener binds a loopback or private address.

use std::net::{IpAddr, SocketAddr};

use axum::http::Extensions;
use lambda_http::request::RequestContext;

/// The listener a request came in on (a request extension set by the local server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerExposure {
    /// Loopback, RFC 1918, unique-local or link-local address: reachable only from inside.
    Private,
    /// Any other address, including `0.0.0.0`/`::` (every interface).
    Public,
}

impl ListenerExposure {
    /// The exposure of a listener bound to `addr`.
    pub fn of(addr: SocketAddr) -> Self {
        let private = match addr.ip() {
            IpAddr::V4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
            IpAddr::V6(ip) => {
                ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00 || (ip.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        if private {
            Self::Private
        } else {
            Self::Public
        }
    }
}

/// How the request came through a private route (for the log), or `None` when it did not.
/// `vpc_endpoints`, when not empty, lists the VPC endpoints accepted.
pub fn private_route(extensions: &Extensions, vpc_endpoints: &[String]) -> Option<String> {
    if let Some(context) = extensions.get::<RequestContext>() {
        let RequestContext::ApiGatewayV1(context) = context else { return None };
        let vpce = context.identity.other.get("vpceId").and_then(|v| v.as_str()).filter(|v| !v.is_empty())?;
        return (vpc_endpoints.is_empty() || vpc_endpoints.iter().any(|e| e == vpce))
            .then(|| format!("private API through {vpce}"));
    }
    match extensions.get::<ListenerExposure>() {
        Some(ListenerExposure::Private) => Some("private listener".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_private_addresses_are_private_and_wildcards_are_not() {
        for private in ["127.0.0.1:80", "10.1.2.3:80", "192.168.0.5:80", "172.20.0.1:80", "[::1]:80", "[fd00::1]:80"] {
            assert_eq!(ListenerExposure::of(private.parse().unwrap()), ListenerExposure::Private, "{private}");
        }
        for public in ["0.0.0.0:80", "[::]:80", "8.8.8.8:80", "[2001:db8::1]:80", "172.32.0.1:80"] {
            assert_eq!(ListenerExposure::of(public.parse().unwrap()), ListenerExposure::Public, "{public}");
        }
    }

    #[test]
    fn without_a_lambda_context_or_a_listener_mark_nothing_is_private() {
        assert_eq!(private_route(&Extensions::new(), &[]), None);
        let mut marked = Extensions::new();
        marked.insert(ListenerExposure::Public);
        assert_eq!(private_route(&marked, &[]), None);
        marked.insert(ListenerExposure::Private);
        assert!(private_route(&marked, &[]).is_some());
    }
}

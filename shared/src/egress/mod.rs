//! `cap:http.fetch`: outbound HTTP for guests, deny by default. Each install has an
//! allow-list; every address a host name resolves to is checked (SSRF guard) inside the DNS
//! resolver itself, so the connection can only go to an address that passed the check.

pub mod host;

pub use host::EgressCtx;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// One allow-list entry: `host`, `*.host`, optionally with scheme and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    /// `http` or `https`; `None` = https only.
    pub scheme: Option<String>,
    /// Lower-case host without the `*.` prefix.
    pub host: String,
    /// `*.host`: any subdomain (not the bare host).
    pub wildcard: bool,
    /// Enforced port; `None` = the scheme's default port.
    pub port: Option<u16>,
}

/// An allow-list entry that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress allow-list entry {entry:?}: {reason}")]
pub struct AllowListError {
    /// The entry as given.
    pub entry: String,
    /// Why.
    pub reason: String,
}

impl AllowEntry {
    /// Parse and normalise an entry (case, trailing slashes). A bare `*` is refused.
    pub fn parse(raw: &str) -> Result<Self, AllowListError> {
        let err = |reason: &str| AllowListError { entry: raw.to_string(), reason: reason.to_string() };
        let mut s = raw.trim().trim_end_matches('/').to_lowercase();
        let scheme = if let Some((sch, rest)) = s.split_once("://") {
            if sch != "http" && sch != "https" {
                return Err(err("scheme must be http or https"));
            }
            let sch = sch.to_string();
            s = rest.to_string();
            Some(sch)
        } else {
            None
        };
        if s.contains('/') || s.contains('@') || s.contains('?') || s.contains('#') {
            return Err(err("an entry is a host with optional scheme and port, not a URL path"));
        }
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| err("port must be a number 1-65535"));
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            // Bracketed IPv6 literal, optionally with a port.
            let (h, tail) = rest.split_once(']').ok_or_else(|| err("unterminated IPv6 literal"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(port_of(p)?),
                None if tail.is_empty() => None,
                None => return Err(err("unexpected text after the IPv6 literal")),
            };
            (h.to_string(), port)
        } else if s.matches(':').count() > 1 {
            (s.clone(), None) // bare IPv6 literal
        } else if let Some((h, p)) = s.rsplit_once(':') {
            (h.to_string(), Some(port_of(p)?))
        } else {
            (s.clone(), None)
        };
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            return Err(err("a bare or embedded '*' is not allowed; use *.example.com"));
        }
        if port == Some(0) {
            return Err(err("port must be a number 1-65535"));
        }
        Ok(Self { scheme, host, wildcard, port })
    }

    /// Whether a parsed URL is allowed by this entry.
    pub fn allows(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str().map(|h| h.trim_end_matches('.').to_lowercase()) else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let scheme = url.scheme();
        let scheme_ok = match &self.scheme {
            Some(s) => s == scheme,
            None => scheme == "https",
        };
        let host_ok = if self.wildcard {
            host.len() > self.host.len() + 1 && host.ends_with(&format!(".{}", self.host))
        } else {
            host == self.host
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port_ok = url.port_or_known_default() == Some(self.port.unwrap_or(default_port));
        scheme_ok && host_ok && port_ok
    }
}

/// Parse a whole allow-list.
pub fn parse_allow_list(entries: &[String]) -> Result<Vec<AllowEntry>, AllowListError> {
    entries.iter().map(|e| AllowEntry::parse(e)).collect()
}

/// What one call may fetch. Whatever the list says, the SSRF guard still refuses every
/// private, loopback, link-local and metadata address ([`is_allowed_destination`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressAllow {
    /// Kelp's allow-list (an install's, or `KELP_RUNNER_EGRESS_ALLOW`): exact hosts or `*.`
    /// subdomains, https and the scheme's port unless an entry says otherwise; empty = none.
    List(Vec<AllowEntry>),
    /// Alga's `EXT_EGRESS_ALLOWLIST` as its runner reads it (`KELP_EGRESS_POLICY=alga`): a
    /// host equal to an entry or ending in `.entry`, any scheme (http or https) and port;
    /// an empty list allows every public host.
    AlgaSuffixes(Vec<String>),
}

impl EgressAllow {
    /// Kelp's allow-list from its entries; entries that do not parse allow nothing (they
    /// were refused when the install was written).
    pub fn from_entries(entries: &[String]) -> Self {
        Self::List(entries.iter().filter_map(|e| AllowEntry::parse(e).ok()).collect())
    }

    /// Alga's list: comma-separated, trimmed, lower-cased, empty items dropped.
    pub fn alga(raw: &[String]) -> Self {
        Self::AlgaSuffixes(
            raw.iter().map(|e| e.trim().trim_end_matches('.').to_lowercase()).filter(|e| !e.is_empty()).collect(),
        )
    }

    /// Whether the URL may be fetched (before the address check).
    pub fn allows(&self, url: &url::Url) -> bool {
        match self {
            Self::List(entries) => entries.iter().any(|e| e.allows(url)),
            Self::AlgaSuffixes(suffixes) => {
                let Some(host) = url.host_str().map(|h| h.trim_end_matches('.').to_lowercase()) else { return false };
                suffixes.is_empty()
                    || suffixes
                        .iter()
                        .any(|s| host == *s || host.strip_suffix(s.as_str()).is_some_and(|p| p.ends_with('.')))
            }
        }
    }

    /// Where the rule comes from, for a refusal's message.
    pub fn source(&self) -> &'static str {
        match self {
            Self::List(_) => "the install's allow-list",
            Self::AlgaSuffixes(_) => "EXT_EGRESS_ALLOWLIST",
        }
    }
}

/// Egress limits and the operator's loopback switch.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    /// Per-call timeout (also capped by the execution's remaining time).
    pub timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Largest request body sent, in bytes.
    pub max_request_bytes: usize,
    /// Calls per execution.
    pub max_calls: u32,
    /// Allow loopback destinations (tests and local development only).
    pub allow_loopback: bool,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_response_bytes: 4 << 20,
            max_request_bytes: 1 << 20,
            max_calls: 16,
            allow_loopback: false,
        }
    }
}

/// Whether an address may be connected to: public unicast only (no private, loopback,
/// link-local — which covers the 169.254.169.254 metadata service — CGNAT, multicast,
/// unspecified or documentation ranges), loopback only when the operator allows it.
pub fn is_allowed_destination(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, allow_loopback),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_allowed(v4, allow_loopback);
            }
            if v6.is_loopback() {
                return allow_loopback;
            }
            let seg0 = v6.segments()[0];
            !(v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // site-local (deprecated)
                || seg0 == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
                || seg0 == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 can reach private v4
        }
    }
}

fn v4_allowed(v4: Ipv4Addr, allow_loopback: bool) -> bool {
    if v4.is_loopback() {
        return allow_loopback;
    }
    let o = v4.octets();
    !(v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// The error the resolver returns for a refused address; found again in reqwest's error chain.
#[derive(Debug)]
pub struct BlockedDestination(pub String);

impl std::fmt::Display for BlockedDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination {} resolves to a non-public address", self.0)
    }
}
impl std::error::Error for BlockedDestination {}

/// DNS resolver that only returns addresses passing [`is_allowed_destination`].
struct GuardedResolver {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // Any refused address refuses the name: a name mixing public and private
            // records is a rebinding attempt.
            if addrs.is_empty() || addrs.iter().any(|a| !is_allowed_destination(a.ip(), allow_loopback)) {
                return Err(Box::new(BlockedDestination(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The process's egress client (one connection pool), built once.
pub struct EgressClient {
    /// reqwest client with the guarded resolver and no redirects.
    pub client: reqwest::Client,
    /// Settings.
    pub settings: EgressSettings,
}

impl EgressClient {
    /// Build the client.
    pub fn new(settings: EgressSettings) -> anyhow::Result<Arc<Self>> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback: settings.allow_loopback }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(settings.timeout)
            .build()?;
        Ok(Arc::new(Self { client, settings }))
    }
}

/// Whether a reqwest error came from the SSRF guard.
pub fn is_blocked(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<BlockedDestination>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Literal IPs in URLs never reach the resolver: check them directly.
pub fn literal_ip(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn parses_and_normalises_entries() {
        let e = AllowEntry::parse(" HTTPS://API.Example.com:8443/ ").unwrap();
        assert_eq!(
            e,
            AllowEntry {
                scheme: Some("https".into()),
                host: "api.example.com".into(),
                wildcard: false,
                port: Some(8443)
            }
        );
        assert!(AllowEntry::parse("*").is_err());
        assert!(AllowEntry::parse("*.").is_err());
        assert!(AllowEntry::parse("ftp://x.com").is_err());
        assert!(AllowEntry::parse("x.com/path").is_err());
        assert!(AllowEntry::parse("x.com:99999").is_err());
    }

    #[test]
    fn enforces_scheme_port_and_wildcards() {
        let plain = AllowEntry::parse("api.example.com").unwrap();
        assert!(plain.allows(&url("https://api.example.com/x")));
        assert!(plain.allows(&url("https://API.example.com.:443/x")));
        assert!(!plain.allows(&url("http://api.example.com/x")), "https only unless listed as http");
        assert!(!plain.allows(&url("https://api.example.com:8443/x")), "unlisted port");
        assert!(!plain.allows(&url("https://evil.com/api.example.com")));
        let wild = AllowEntry::parse("*.example.com").unwrap();
        assert!(wild.allows(&url("https://a.b.example.com/")));
        assert!(!wild.allows(&url("https://example.com/")));
        assert!(!wild.allows(&url("https://badexample.com/")));
        let http = AllowEntry::parse("http://localhost:8080").unwrap();
        assert!(http.allows(&url("http://localhost:8080/")));
        assert!(!http.allows(&url("https://localhost:8080/")));
    }

    #[test]
    fn algas_policy_matches_host_suffixes_on_any_scheme_and_port_and_empty_allows_all() {
        let alga = EgressAllow::alga(&[" Example.com ".into(), "".into(), "api.partner.io".into()]);
        for allowed in
            ["https://example.com/", "http://example.com:8080/x", "https://a.b.example.com/", "http://api.partner.io/"]
        {
            assert!(alga.allows(&url(allowed)), "{allowed}");
        }
        for refused in ["https://badexample.com/", "https://partner.io/", "https://example.com.evil.io/"] {
            assert!(!alga.allows(&url(refused)), "{refused}");
        }
        assert!(EgressAllow::alga(&[]).allows(&url("http://anything.test:81/")), "empty: every public host");
        assert!(!EgressAllow::from_entries(&[]).allows(&url("https://anything.test/")), "Kelp's empty list: none");
        assert!(EgressAllow::from_entries(&["example.com".into()]).allows(&url("https://example.com/")));
    }

    #[test]
    fn refuses_private_loopback_and_metadata_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_allowed_destination(ip.parse().unwrap(), false), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(is_allowed_destination(ip.parse().unwrap(), false), "{ip} is public");
        }
        assert!(is_allowed_destination("127.0.0.1".parse().unwrap(), true));
        assert!(!is_allowed_destination("10.0.0.1".parse().unwrap(), true), "the loopback switch allows loopback only");
    }
}

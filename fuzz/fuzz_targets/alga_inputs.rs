//! What Alga's callers and a deployment's edge can send Kelp besides bundles: tenant and
//! extension ids that become store keys and registry scopes, content hashes, trusted-network
//! settings and forwarding headers. Nothing panics; an id either is refused or stays inside its
//! key; a forwarded request is never a private one.
#![no_main]

use axum::http::{Extensions, HeaderMap};
use kelp_runtime::alga_bundles::{content_hex, is_valid_id, scope_extension, scope_name};
use kelp_runtime::http::exposure::{private_route, Network, PrivateTrust};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (tenant, extension, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if is_valid_id(tenant) && is_valid_id(extension) {
        let key = format!("tenants/{tenant}/extensions/{extension}/");
        assert!(key.split('/').filter(|s| !s.is_empty()).all(|s| s != "." && s != ".."));
        assert_eq!(scope_extension(&scope_name(tenant, extension)), Some(extension.to_lowercase().as_str()));
    }
    if let Some(hex) = content_hex(rest) {
        assert_eq!(hex.len(), 64);
    }
    if let Ok(network) = Network::parse(rest) {
        let trust = PrivateTrust { vpc_endpoints: Vec::new(), networks: vec![network] };
        let mut headers = HeaderMap::new();
        if let Ok(value) = tenant.parse() {
            headers.insert("x-forwarded-for", value);
            assert!(private_route(&Extensions::new(), &headers, &trust).is_err());
        }
    }
});

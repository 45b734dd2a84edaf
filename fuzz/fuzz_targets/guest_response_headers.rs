//! Any list of guest response headers: the gateway's filter never panics and never lets more
//! than its caps through (the unit tests in `gateway::headers` check floods of 100,000).
#![no_main]

use std::sync::Arc;

use kelp_runtime::bindings::types::HttpHeader;
use kelp_runtime::debug::memory::MemoryBus;
use kelp_runtime::debug::{DebugSink, EventContext};
use kelp_runtime::gateway::headers::{client_response_headers, MAX_RESPONSE_HEADERS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<HttpHeader> = text
        .split('\n')
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            HttpHeader { name: name.to_string(), value: value.to_string() }
        })
        .collect();
    let sink = DebugSink::new(Arc::new(MemoryBus::new(16)), EventContext::default(), 1024);
    let out = client_response_headers(&headers, &sink);
    assert!(out.len() <= MAX_RESPONSE_HEADERS + 2);
});

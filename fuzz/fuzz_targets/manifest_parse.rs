//! Any bytes as `manifest.json`: parsing and the unknown-key warnings never panic.
#![no_main]

use kelp_runtime::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = Manifest::warnings(&value);
    }
});

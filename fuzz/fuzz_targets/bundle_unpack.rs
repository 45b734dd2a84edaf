//! Any bytes as an uploaded bundle: unpacking never panics, and whatever it accepts has clean,
//! relative paths within the caps (the property test `bundle::tests::hostile` runs the same
//! check, bounded, in CI).
#![no_main]

use kelp_runtime::bundle::{unpack, BundleLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = BundleLimits { max_entries: 64, max_unpacked_bytes: 1 << 20, ..BundleLimits::default() };
    if let Ok(bundle) = unpack(data, &limits) {
        assert!(bundle.files.len() <= limits.max_entries);
        assert!(bundle.files.values().map(|f| f.len() as u64).sum::<u64>() <= limits.max_unpacked_bytes);
        for path in bundle.files.keys() {
            assert!(!path.is_empty() && !path.starts_with('/') && !path.contains('\\') && !path.contains('\0'));
            assert!(path.split('/').all(|p| !p.is_empty() && p != "." && p != ".."), "{path}");
        }
    }
});

//! Extension bundles: `.tar.zst` as Alga ships them (or plain `.tar`), unpacked in memory
//! with caps on entries, sizes and compression ratio; symlinks, hard links, devices and
//! path traversal are refused. Directories are packed into a deterministic `.tar.zst` so
//! the same files always give the same content hash.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

/// Caps applied while unpacking.
#[derive(Debug, Clone, Copy)]
pub struct BundleLimits {
    /// Largest bundle accepted, compressed.
    pub max_bundle_bytes: usize,
    /// Most entries (files and directories).
    pub max_entries: usize,
    /// Most bytes after decompression.
    pub max_unpacked_bytes: u64,
    /// Largest unpacked/compressed ratio (decompression bombs).
    pub max_ratio: u64,
}

impl Default for BundleLimits {
    fn default() -> Self {
        Self { max_bundle_bytes: 200 << 20, max_entries: 10_000, max_unpacked_bytes: 512 << 20, max_ratio: 200 }
    }
}

/// A bundle that cannot be accepted; the message says why (always a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Over a size cap.
    #[error("{0}")]
    TooLarge(String),
    /// Malformed or unsafe content.
    #[error("{0}")]
    Invalid(String),
}

/// An unpacked bundle: file path (relative, `/`-separated) → bytes.
#[derive(Debug, Default)]
pub struct Bundle {
    /// Files.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// `manifest.json` at the root or one directory deep: (the directory prefix, its bytes).
    pub fn manifest(&self) -> Result<(String, &[u8]), BundleError> {
        if let Some(m) = self.files.get("manifest.json") {
            return Ok((String::new(), m));
        }
        let nested: Vec<_> =
            self.files.iter().filter(|(p, _)| p.matches('/').count() == 1 && p.ends_with("/manifest.json")).collect();
        match nested.as_slice() {
            [(path, bytes)] => Ok((path.trim_end_matches("manifest.json").to_string(), bytes.as_slice())),
            [] => Err(BundleError::Invalid("manifest.json not found at the root or one directory deep".into())),
            _ => Err(BundleError::Invalid("several manifest.json files one directory deep".into())),
        }
    }
}

/// Reader that fails once more than `limit` bytes came through.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other("unpacked size cap exceeded"));
        }
        Ok(n)
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Unpack a `.tar.zst` (or `.tar`) bundle.
pub fn unpack(bytes: &[u8], limits: &BundleLimits) -> Result<Bundle, BundleError> {
    if bytes.len() > limits.max_bundle_bytes {
        return Err(BundleError::TooLarge(format!(
            "bundle is {} bytes; the limit is {}",
            bytes.len(),
            limits.max_bundle_bytes
        )));
    }
    let cap = limits.max_unpacked_bytes.min((bytes.len() as u64).saturating_mul(limits.max_ratio).max(1 << 20));
    let reader: Box<dyn Read> = if bytes.starts_with(&ZSTD_MAGIC) {
        Box::new(
            zstd::stream::read::Decoder::new(bytes)
                .map_err(|e| BundleError::Invalid(format!("not a zstd stream: {e}")))?,
        )
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        Box::new(bytes)
    } else {
        return Err(BundleError::Invalid("bundle must be a .tar.zst or .tar archive".into()));
    };
    let mut archive = tar::Archive::new(Capped { inner: reader, read: 0, limit: cap });
    let mut bundle = Bundle::default();
    let too_big =
        || BundleError::TooLarge(format!("bundle unpacks to more than {cap} bytes (size or compression-ratio cap)"));
    let entries = archive.entries().map_err(|e| BundleError::Invalid(format!("unreadable archive: {e}")))?;
    for (count, entry) in entries.enumerate() {
        if count >= limits.max_entries {
            return Err(BundleError::TooLarge(format!("bundle has more than {} entries", limits.max_entries)));
        }
        let mut entry = entry.map_err(|e| {
            if e.to_string().contains("cap exceeded") {
                too_big()
            } else {
                BundleError::Invalid(format!("unreadable archive entry: {e}"))
            }
        })?;
        let path = entry.path().map_err(|e| BundleError::Invalid(format!("bad entry path: {e}")))?.into_owned();
        let name = clean_entry_path(&path)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(BundleError::Invalid(format!("{name}: links are not allowed in bundles")));
            }
            other => return Err(BundleError::Invalid(format!("{name}: entry type {other:?} is not allowed"))),
        }
        let mut data = Vec::with_capacity(entry.size().min(cap) as usize);
        entry.read_to_end(&mut data).map_err(|e| {
            if e.to_string().contains("cap exceeded") {
                too_big()
            } else {
                BundleError::Invalid(format!("{name}: {e}"))
            }
        })?;
        if bundle.files.insert(name.clone(), data).is_some() {
            return Err(BundleError::Invalid(format!("{name} appears twice in the bundle")));
        }
    }
    Ok(bundle)
}

/// A relative, normalised entry path; absolute paths, `..`, backslashes and NUL are refused.
fn clean_entry_path(path: &Path) -> Result<String, BundleError> {
    let raw = path.to_string_lossy();
    if raw.contains('\\') || raw.contains('\0') {
        return Err(BundleError::Invalid(format!("{raw}: backslashes and NUL are not allowed in paths")));
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(BundleError::Invalid(format!("{raw}: absolute paths and '..' are not allowed"))),
        }
    }
    if parts.is_empty() {
        return Err(BundleError::Invalid("empty entry path".into()));
    }
    Ok(parts.join("/"))
}

/// Pack a directory into a deterministic `.tar.zst` (sorted entries, zero mtimes and owners).
/// Symlinks are refused, as in uploaded bundles.
pub fn pack_dir(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut files = BTreeMap::new();
    collect(dir, dir, &mut files)?;
    let mut builder = tar::Builder::new(Vec::new());
    for (name, path) in files {
        let data = std::fs::read(&path)?;
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, &name, data.as_slice())?;
    }
    let tar = builder.into_inner()?;
    Ok(zstd::encode_all(tar.as_slice(), 3)?)
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, std::path::PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        let rel = path.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
        if kind.is_symlink() {
            anyhow::bail!("{rel}: symlinks are not allowed in bundles");
        } else if kind.is_dir() {
            // Top-level sources and dependencies are not part of what runs.
            let skipped = dir == root && matches!(entry.file_name().to_str(), Some("node_modules" | "src" | ".git"));
            if !skipped {
                collect(root, &path, out)?;
            }
        } else if kind.is_file() {
            out.insert(rel, path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_size(0);
                b.append_link(&mut h, name, "/etc/passwd").unwrap();
            } else {
                // Write the raw name so traversal attempts reach the unpacker unchanged.
                let bytes = name.as_bytes();
                h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        zstd::encode_all(b.into_inner().unwrap().as_slice(), 3).unwrap()
    }

    #[test]
    fn unpacks_regular_files() {
        let bytes = tar_with(&[
            ("manifest.json", b"{}", tar::EntryType::Regular),
            ("dist/main.wasm", b"\0asm", tar::EntryType::Regular),
        ]);
        let b = unpack(&bytes, &BundleLimits::default()).unwrap();
        assert_eq!(b.files.keys().collect::<Vec<_>>(), ["dist/main.wasm", "manifest.json"]);
    }

    #[test]
    fn refuses_traversal_links_and_bombs() {
        let l = BundleLimits::default();
        let e = unpack(&tar_with(&[("../evil", b"x", tar::EntryType::Regular)]), &l).unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
        let e = unpack(&tar_with(&[("/abs", b"x", tar::EntryType::Regular)]), &l).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = unpack(&tar_with(&[("link", b"", tar::EntryType::Symlink)]), &l).unwrap_err();
        assert!(e.to_string().contains("links"), "{e}");
        let zeros = vec![0u8; 50 << 20];
        let bomb = tar_with(&[("big", &zeros, tar::EntryType::Regular)]);
        assert!(bomb.len() < 100_000, "the bomb compresses well");
        assert!(matches!(unpack(&bomb, &l), Err(BundleError::TooLarge(_))));
        assert!(matches!(unpack(b"not a bundle at all", &l), Err(BundleError::Invalid(_))));
        let few = BundleLimits { max_entries: 1, ..l };
        let two = tar_with(&[("a", b"1", tar::EntryType::Regular), ("b", b"2", tar::EntryType::Regular)]);
        assert!(matches!(unpack(&two, &few), Err(BundleError::TooLarge(_))));
    }

    #[test]
    fn packing_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dist")).unwrap();
        std::fs::write(dir.path().join("manifest.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("dist/main.wasm"), b"\0asm").unwrap();
        let a = pack_dir(dir.path()).unwrap();
        let b = pack_dir(dir.path()).unwrap();
        assert_eq!(a, b);
        let unpacked = unpack(&a, &BundleLimits::default()).unwrap();
        assert_eq!(unpacked.files["dist/main.wasm"], b"\0asm");
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        /// A `.tar.zst` of raw entries: names, types and sizes exactly as given, so anything an
        /// attacker can put in an archive reaches the unpacker.
        fn raw_tar(entries: &[(String, u8, Vec<u8>)]) -> Vec<u8> {
            let mut b = tar::Builder::new(Vec::new());
            for (name, kind, data) in entries {
                let mut h = tar::Header::new_gnu();
                let bytes = name.as_bytes();
                h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
                h.set_entry_type(tar::EntryType::new(*kind));
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_slice()).unwrap();
            }
            zstd::encode_all(b.into_inner().unwrap().as_slice(), 1).unwrap()
        }

        fn entry() -> impl Strategy<Value = (String, u8, Vec<u8>)> {
            (
                proptest::string::string_regex("[a./\\\\\\x00-]{1,24}").expect("regex"),
                prop_oneof![Just(b'0'), Just(b'5'), Just(b'1'), Just(b'2'), Just(b'3'), Just(b'x')],
                proptest::collection::vec(any::<u8>(), 0..600),
            )
        }

        fn is_clean(path: &str) -> bool {
            !path.is_empty()
                && !path.starts_with('/')
                && !path.contains('\\')
                && !path.contains('\0')
                && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn hostile_archives_never_panic_and_only_yield_clean_paths_within_caps(entries in proptest::collection::vec(entry(), 0..12)) {
                let limits = BundleLimits { max_entries: 8, max_unpacked_bytes: 4096, ..BundleLimits::default() };
                if let Ok(bundle) = unpack(&raw_tar(&entries), &limits) {
                    prop_assert!(bundle.files.len() <= limits.max_entries);
                    let total: u64 = bundle.files.values().map(|d| d.len() as u64).sum();
                    prop_assert!(total <= limits.max_unpacked_bytes, "{} bytes", total);
                    for path in bundle.files.keys() {
                        prop_assert!(is_clean(path), "unclean path {:?}", path);
                    }
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048), zstd in any::<bool>()) {
                if zstd && bytes.len() >= 4 {
                    bytes[..4].copy_from_slice(&ZSTD_MAGIC);
                }
                let _ = unpack(&bytes, &BundleLimits::default());
            }

            #[test]
            fn manifests_never_panic(text in "\\PC{0,300}") {
                let _ = crate::manifest::Manifest::parse(text.as_bytes());
            }

            #[test]
            fn json_manifests_never_panic(value in json_value()) {
                let _ = crate::manifest::Manifest::from_value(value);
            }
        }

        /// Arbitrary JSON, biased towards manifest-shaped objects.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                "[a-z./:* ]{0,12}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(3, 32, 6, |inner| {
                let key = prop_oneof![
                    Just("name".to_string()),
                    Just("version".to_string()),
                    Just("api".to_string()),
                    Just("endpoints".to_string()),
                    Just("path".to_string()),
                    Just("method".to_string()),
                    Just("ui".to_string()),
                    Just("capabilities".to_string()),
                    "[a-z]{1,6}",
                ];
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                    proptest::collection::btree_map(key, inner, 0..5)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }
    }
}

//! The build toolchain an installed `kelp` carries: the WIT worlds and the componentize
//! script with its npm lockfile are compiled into the binary, and written out on first use
//! into the user's cache (`$XDG_CACHE_HOME/kelp`, else `~/.cache/kelp`), where `npm ci`
//! installs componentize-js and esbuild (and pip installs componentize-py into a virtual
//! environment) once per toolchain version. So `kelp build` works
//! from any folder, with exactly the WIT this `kelp` links guests against.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

/// Files of the toolchain, by their path under the toolchain root (the same layout as the
/// repository, so the functions taking a `root` work on either).
const EMBEDDED: &[(&str, &str)] = &[
    ("wit/kelp.wit", include_str!("../../../wit/kelp.wit")),
    ("wit/deps/alga/extension.wit", include_str!("../../../wit/deps/alga/extension.wit")),
    ("tools/componentize/build.mjs", include_str!("../../../tools/componentize/build.mjs")),
    ("tools/componentize/dev-loader.js", include_str!("../../../tools/componentize/dev-loader.js")),
    ("tools/componentize/package.json", include_str!("../../../tools/componentize/package.json")),
    ("tools/componentize/package-lock.json", include_str!("../../../tools/componentize/package-lock.json")),
    ("tools/componentize-py/requirements.txt", include_str!("../../../tools/componentize-py/requirements.txt")),
    (
        "tools/componentize-py/dev_loader/kelp_dev_loader.py",
        include_str!("../../../tools/componentize-py/dev_loader/kelp_dev_loader.py"),
    ),
];

/// Where kelp keeps what it installs for the user: `$XDG_CACHE_HOME/kelp`, else
/// `$HOME/.cache/kelp`.
pub fn cache_dir() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?).join(".cache")
        }
    };
    Ok(base.join("kelp"))
}

/// The toolchain's version: a digest of its files, so a `kelp` with other WIT or other
/// lockfiles gets a directory of its own and two versions of kelp never share one.
pub fn version() -> String {
    let mut h = Sha256::new();
    for (path, text) in EMBEDDED {
        h.update(path.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// The toolchain root in the user's cache, with the embedded files written out (the npm
/// packages are installed later, by [`super::ensure_node_tools`], only when a JavaScript
/// build needs them).
pub fn root() -> Result<PathBuf> {
    let root = cache_dir()?.join(format!("toolchain-{}", version()));
    materialize(&root)?;
    Ok(root)
}

/// Write the embedded files under `root`, leaving files that already hold the same bytes.
pub fn materialize(root: &Path) -> Result<()> {
    for (path, text) in EMBEDDED {
        let target = root.join(path);
        if std::fs::read(&target).ok().as_deref() == Some(text.as_bytes()) {
            continue;
        }
        std::fs::create_dir_all(target.parent().unwrap_or(root))
            .with_context(|| format!("creating {}", root.display()))?;
        crate::fsutil::write_atomic(&target, text.as_bytes())
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// The WIT this kelp links guests against, for `kelp new` to copy into a project (editors
/// and TypeScript tooling read it; the build itself uses the toolchain's copy).
pub fn wit_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    EMBEDDED.iter().copied().filter(|(path, _)| path.starts_with("wit/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_materialized_toolchain_is_a_build_root_and_is_left_alone_when_current() {
        let dir = tempfile::tempdir().unwrap();
        materialize(dir.path()).unwrap();
        assert!(super::super::repo_root(dir.path()).is_some(), "a materialized toolchain is a build root");
        // A current file is not rewritten (concurrent builds may be reading it).
        let wit = dir.path().join("wit/kelp.wit");
        let before = std::fs::metadata(&wit).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        materialize(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&wit).unwrap().modified().unwrap(), before);
        // A damaged one is repaired.
        std::fs::write(&wit, "garbage").unwrap();
        materialize(dir.path()).unwrap();
        assert_ne!(std::fs::read_to_string(&wit).unwrap(), "garbage");
    }
}

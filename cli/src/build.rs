//! `kelp build`: check the manifest, then build the guest with the toolchain this `kelp`
//! carries (see `kelp_runtime::devtools::toolchain`), saying what it does and how long each
//! step took.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use kelp_runtime::devtools::project::{self, Built, Progress};
use kelp_runtime::devtools::toolchain;

/// Progress on stderr, so stdout stays for results.
pub struct Terminal;

impl Progress for Terminal {
    fn step(&self, what: &str) {
        eprintln!("• {what}…");
    }
    fn done(&self, elapsed: Duration) {
        eprintln!("  done in {:.1} s", elapsed.as_secs_f64());
    }
    fn warn(&self, what: &str) {
        eprintln!("warning: {what}");
    }
}

/// Directories that hold no source: build output, dependencies, VCS.
const NOT_SOURCE: &[&str] = &["node_modules", "dist", ".kelp", ".git", "target", "__pycache__"];

/// The project's source files (everything outside [`NOT_SOURCE`] directories), sorted: what
/// `kelp dev` watches and what `kelp publish` digests.
pub fn source_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    use anyhow::Context as _;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                if !NOT_SOURCE.iter().any(|i| entry.file_name() == *i) {
                    pending.push(entry.path());
                }
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Build the project in `dir`, staged under `out/<dir name>/`.
pub fn build(dir: &Path, out: &Path) -> Result<Built> {
    let started = Instant::now();
    let root = toolchain::root()?;
    let built = project::build_project(&root, dir, out, &Terminal)?;
    eprintln!("built {}@{} in {:.1} s", built.manifest.name, built.manifest.version, started.elapsed().as_secs_f64());
    Ok(built)
}

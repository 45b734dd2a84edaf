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

/// What a TypeScript project's type errors do to a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeCheck {
    /// Fail the build (`kelp build`, `kelp publish`): what reaches Kelp type-checks.
    Fail,
    /// Show them and build anyway (`kelp dev`: a half-typed edit may still be worth running).
    Warn,
    /// Do not run the type-checker (`kelp build --no-check`).
    Off,
}

/// Build the project in `dir`, staged under `out/<dir name>/`; a TypeScript project (one
/// with a tsconfig.json) is type-checked first, as `check` says.
pub fn build(dir: &Path, out: &Path, check: TypeCheck) -> Result<Built> {
    let started = Instant::now();
    let root = toolchain::root()?;
    type_check(&root, dir, check)?;
    let built = project::build_project(&root, dir, out, &Terminal)?;
    eprintln!("built {}@{} in {:.1} s", built.manifest.name, built.manifest.version, started.elapsed().as_secs_f64());
    Ok(built)
}

/// Type-check a TypeScript project (one with a tsconfig.json) as `check` says.
fn type_check(root: &Path, dir: &Path, check: TypeCheck) -> Result<()> {
    let is_typescript = matches!(project::find_source(dir), Ok(project::GuestSource::Js(entry)) if entry.extension().is_some_and(|e| e == "ts"));
    if check == TypeCheck::Off || !is_typescript || !dir.join("tsconfig.json").is_file() {
        return Ok(());
    }
    Terminal.step("type-checking with tsc");
    let checked = Instant::now();
    match kelp_runtime::devtools::type_check(root, dir)? {
        None => Terminal.done(checked.elapsed()),
        Some(errors) if check == TypeCheck::Fail => {
            anyhow::bail!("type errors (`kelp build --no-check` builds without checking):\n{errors}")
        }
        Some(errors) => eprintln!("{errors}\nwarning: type errors; building anyway"),
    }
    Ok(())
}

/// `kelp dev`'s build of one round: the fast path for JavaScript and TypeScript (esbuild
/// into the loader, see `project::stage_for_dev`) unless `full`, else what `kelp build` does.
/// Type errors are shown, not fatal.
pub fn build_for_dev(dir: &Path, full: bool) -> Result<Built> {
    if full {
        return build(dir, Path::new(".kelp/build"), TypeCheck::Warn);
    }
    let started = Instant::now();
    let root = toolchain::root()?;
    type_check(&root, dir, TypeCheck::Warn)?;
    match project::stage_for_dev(&root, dir, Path::new(".kelp/dev"), &Terminal)? {
        Some(built) => {
            eprintln!(
                "bundled {}@{} for kelp dev's loader in {:.1} s",
                built.manifest.name,
                built.manifest.version,
                started.elapsed().as_secs_f64()
            );
            Ok(built)
        }
        None => build(dir, Path::new(".kelp/build"), TypeCheck::Warn),
    }
}

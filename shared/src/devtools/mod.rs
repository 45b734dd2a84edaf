//! Developer tooling shared by `kelp up`, `kelp build` and the test suite: building guest
//! components from source (JavaScript through componentize-js, WAT through wit-component),
//! cached by a hash of everything that goes into them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};

/// The repository root (where `wit/` and `tools/componentize/` are), found from `start`
/// upwards.
pub fn repo_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("wit/kelp.wit").is_file() && d.join("tools/componentize/build.mjs").is_file())
        .map(Path::to_path_buf)
}

/// Make sure the componentize-js npm packages are installed (`npm ci`, once). A marker
/// written after `npm ci` succeeds — not the presence of some package file, which appears
/// while npm is still extracting — tells concurrent builders the install is complete.
pub fn ensure_node_tools(root: &Path) -> Result<()> {
    ensure_npm_packages(&root.join("tools/componentize"))
}

/// `npm ci` in `tools` once per package-lock (see [`ensure_node_tools`]).
pub fn ensure_npm_packages(tools: &Path) -> Result<()> {
    let tools = tools.to_path_buf();
    let lockfile = std::fs::read(tools.join("package-lock.json"))
        .with_context(|| format!("reading {}/package-lock.json", tools.display()))?;
    let wanted = hex::encode(Sha256::digest(&lockfile));
    // Beside node_modules, not inside: a user's own `npm ci` (which recreates node_modules
    // from the same lock file) leaves it valid.
    let marker = tools.join(".kelp-installed");
    let ready = || {
        std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) && tools.join("node_modules").is_dir()
    };
    if ready() {
        return Ok(());
    }
    let _lock = lock(&tools.join(".npm.lock"))?;
    if ready() {
        return Ok(());
    }
    tracing::info!(dir = %tools.display(), "installing npm packages (npm ci)");
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&tools)
        .status()
        .context("running npm (Node.js 20+ with npm is needed for JavaScript extensions and browser tests)")?;
    if !status.success() {
        bail!("npm ci failed in {}", tools.display());
    }
    std::fs::write(&marker, &wanted)?;
    Ok(())
}

fn lock(path: &Path) -> Result<File> {
    let f = File::options().create(true).truncate(false).write(true).open(path)?;
    f.lock()?;
    Ok(f)
}

fn hash_inputs(root: &Path, extra: &[&Path]) -> Result<String> {
    let mut h = Sha256::new();
    for p in [
        root.join("wit/kelp.wit"),
        root.join("wit/deps/alga/extension.wit"),
        root.join("tools/componentize/build.mjs"),
        root.join("tools/componentize/package-lock.json"),
    ]
    .iter()
    .chain(extra.iter().map(|p| p.to_path_buf()).collect::<Vec<_>>().iter())
    {
        h.update(p.to_string_lossy().as_bytes());
        h.update(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    Ok(hex::encode(h.finalize()))
}

/// Build a JavaScript guest with componentize-js into `out`, unless `out` is already built
/// from the same inputs. Concurrent builders (test processes) wait for each other.
pub fn build_js(root: &Path, source: &Path, world: &str, out: &Path) -> Result<()> {
    let stamp_path = out.with_extension("wasm.inputs");
    let inputs = hash_inputs(root, &[source])? + world;
    if out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(inputs.as_str()) {
        return Ok(());
    }
    ensure_node_tools(root)?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    let _lock = lock(&out.with_extension("wasm.lock"))?;
    if out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(inputs.as_str()) {
        return Ok(());
    }
    let output = Command::new("node")
        .arg(root.join("tools/componentize/build.mjs"))
        .arg(source)
        .arg(out)
        .arg(world)
        .output()
        .context("running node (Node.js 20+ is needed to build JavaScript extensions)")?;
    if !output.status.success() {
        bail!(
            "componentize-js failed for {}:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(&stamp_path, inputs)?;
    Ok(())
}

/// Build a WAT guest (a core module against `world`) into a component at `out`.
pub fn build_wat(source: &Path, world: &str, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
    let component = crate::components::component_from_wat(&text, world)?;
    write_if_changed(out, &component)
}

/// Write atomically, and only when the content differs: a staged directory that is already
/// up to date is never touched, so concurrent readers (parallel tests packing it) never see
/// a temporary file appear in it.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    crate::fsutil::write_atomic(path, bytes)?;
    Ok(())
}

/// The sources a staged guest is made from.
pub struct GuestSources<'a> {
    /// manifest.json to publish with.
    pub manifest: &'a Path,
    /// The guest's code: a `.wat` core module or a JavaScript entry file.
    pub code: &'a Path,
    /// The WIT world the component is built against.
    pub world: &'a str,
    /// Optional UI directory, copied to `ui/`.
    pub ui: Option<&'a Path>,
}

/// Stage an example for publishing: its manifest and the freshly built component under
/// `staging/<name>/` (sources stay where they are). Returns the staged directory.
pub fn stage_example(root: &Path, example: &Path, staging: &Path) -> Result<PathBuf> {
    let name = example.file_name().context("example directory name")?.to_string_lossy().into_owned();
    let wat = std::fs::read_dir(example)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wat"));
    let (code, world) = match wat {
        Some(wat) => (wat, "alga:extension/runner"),
        None if example.join("src/index.js").is_file() => (example.join("src/index.js"), "kelp:extension/runner"),
        None => bail!("{}: no *.wat or src/index.js", example.display()),
    };
    let ui = example.join("ui");
    let manifest = example.join("manifest.json");
    let sources = GuestSources { manifest: &manifest, code: &code, world, ui: ui.is_dir().then_some(ui.as_path()) };
    stage_guest(root, &name, &sources, staging)
}

/// Stage a guest under `staging/<name>/`: manifest.json, dist/main.wasm and ui/. Concurrent
/// stagers (parallel tests) take turns on a lock, the component is built outside the staged
/// tree, and files are only rewritten when their content changes, so a reader packing the
/// directory never sees a temporary, lock or stamp file in it.
pub fn stage_guest(root: &Path, name: &str, sources: &GuestSources<'_>, staging: &Path) -> Result<PathBuf> {
    let dir = staging.join(name);
    std::fs::create_dir_all(dir.join("dist"))?;
    std::fs::create_dir_all(staging.join(".build"))?;
    let _lock = lock(&staging.join(".build").join(format!("{name}.lock")))?;
    write_if_changed(
        &dir.join("manifest.json"),
        &std::fs::read(sources.manifest).with_context(|| format!("reading {}", sources.manifest.display()))?,
    )?;
    if let Some(ui) = sources.ui {
        copy_tree(ui, &dir.join("ui"))?;
    }
    let built = staging.join(".build").join(format!("{name}.wasm"));
    if sources.code.extension().is_some_and(|x| x == "wat") {
        build_wat(sources.code, sources.world, &built)?;
    } else {
        build_js(root, sources.code, sources.world, &built)?;
    }
    write_if_changed(&dir.join("dist/main.wasm"), &std::fs::read(&built)?)?;
    Ok(dir)
}

/// Copy a directory tree, writing only files whose content differs (see `write_if_changed`).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if entry.file_type()?.is_file() {
            write_if_changed(&target, &std::fs::read(entry.path())?)?;
        }
    }
    Ok(())
}

//! Developer tooling shared by `kelp up`, `kelp build` and the test suite: building guest
//! components from source (JavaScript through componentize-js, WAT through wit-component),
//! cached by a hash of everything that goes into them.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};

pub mod project;
pub mod toolchain;
pub mod typings;

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
    if npm_packages_ready(&tools) {
        return Ok(());
    }
    let _lock = lock(&tools.join(".npm.lock"))?;
    if npm_packages_ready(&tools) {
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
    std::fs::write(tools.join(INSTALLED_MARKER), &wanted)?;
    Ok(())
}

/// Written beside node_modules, not inside, once `npm ci` succeeded: a user's own `npm ci`
/// (which recreates node_modules from the same lock file) leaves it valid.
const INSTALLED_MARKER: &str = ".kelp-installed";

/// Whether `npm ci` already ran in `tools` for its current package-lock.
pub fn npm_packages_ready(tools: &Path) -> bool {
    let Ok(lockfile) = std::fs::read(tools.join("package-lock.json")) else { return false };
    let wanted = hex::encode(Sha256::digest(&lockfile));
    std::fs::read_to_string(tools.join(INSTALLED_MARKER)).ok().as_deref() == Some(wanted.as_str())
        && tools.join("node_modules").is_dir()
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

/// Build a JavaScript or TypeScript guest (esbuild, then componentize-js) into `out`, unless
/// `out` is already built from the same inputs: the toolchain, the world and every source
/// file the last build read (listed by build.mjs in `<out>.sources.json`). Concurrent
/// builders (test processes) wait for each other.
pub fn build_js(root: &Path, source: &Path, world: &str, out: &Path) -> Result<()> {
    let stamp_path = out.with_extension("wasm.inputs");
    let sources_path = PathBuf::from(format!("{}.sources.json", out.display()));
    let up_to_date = || {
        let sources: Vec<PathBuf> = std::fs::read(&sources_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| vec![source.to_path_buf()]);
        let refs: Vec<&Path> = std::iter::once(source).chain(sources.iter().map(PathBuf::as_path)).collect();
        let stamp = hash_inputs(root, &refs).ok().map(|h| h + world);
        out.is_file() && stamp.is_some() && std::fs::read_to_string(&stamp_path).ok() == stamp
    };
    if up_to_date() {
        return Ok(());
    }
    ensure_node_tools(root)?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    let _lock = lock(&out.with_extension("wasm.lock"))?;
    if up_to_date() {
        return Ok(());
    }
    let output = Command::new("node")
        .arg(root.join("tools/componentize/build.mjs"))
        .arg(source)
        .arg(out)
        .arg(world)
        .output()
        .context("running node (Node.js 20+ is needed to build JavaScript extensions)")?;
    check_builder(&output, source)?;
    let sources: Vec<PathBuf> = serde_json::from_slice(&std::fs::read(&sources_path)?)
        .with_context(|| format!("reading {}", sources_path.display()))?;
    let refs: Vec<&Path> = std::iter::once(source).chain(sources.iter().map(PathBuf::as_path)).collect();
    std::fs::write(&stamp_path, hash_inputs(root, &refs)? + world)?;
    Ok(())
}

/// Type-check a TypeScript project with the toolchain's `tsc --noEmit` against the project's
/// `tsconfig.json`. `Ok(None)` when it is clean or has no tsconfig.json (nothing says how to
/// check it); `Ok(Some(errors))` with one `path:line:column: error TSnnnn: message` line per
/// error, paths as `project` (as the author named it) joined with tsc's.
pub fn type_check(root: &Path, project: &Path) -> Result<Option<String>> {
    if !project.join("tsconfig.json").is_file() {
        return Ok(None);
    }
    ensure_node_tools(root)?;
    let tsc = root.join("tools/componentize/node_modules/typescript/bin/tsc");
    let output = Command::new("node")
        .arg(&tsc)
        .args(["--noEmit", "--pretty", "false", "-p", "."])
        .current_dir(project)
        .output()
        .context("running tsc (Node.js 20+ is needed to check TypeScript)")?;
    if output.status.success() {
        return Ok(None);
    }
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let errors: Vec<String> = text.lines().map(|line| tsc_line_as_place(line, project)).collect();
    Ok(Some(errors.join("\n").trim_end().to_string()))
}

/// `src/index.ts(12,5): error TS2322: …` → `<shown>/src/index.ts:12:5: error TS2322: …`, the
/// place format esbuild's errors (and editors' jump-to) use. Other lines are kept as they are.
fn tsc_line_as_place(line: &str, shown: &Path) -> String {
    let place = line.split_once("): ").and_then(|(head, rest)| {
        let (file, position) = head.rsplit_once('(')?;
        let (row, column) = position.split_once(',')?;
        row.parse::<u32>().ok()?;
        column.parse::<u32>().ok()?;
        Some(format!("{}:{row}:{column}: {rest}", shown.join(file).display()))
    });
    place.unwrap_or_else(|| line.to_string())
}

/// Where [`dev_loader`] puts the JavaScript loader, under the toolchain root.
pub const JS_DEV_LOADER: &str = "dev-loader/loader.wasm";
/// Where [`python_dev_loader`] puts the Python loader, under the toolchain root.
pub const PYTHON_DEV_LOADER: &str = "dev-loader/python.wasm";

/// `kelp dev`'s loader component (`tools/componentize/dev-loader.js`), built once per
/// toolchain: every fast-path version runs it with the source it carries.
pub fn dev_loader(root: &Path) -> Result<PathBuf> {
    let out = root.join(JS_DEV_LOADER);
    build_js(root, &root.join("tools/componentize/dev-loader.js"), "kelp:extension/runner", &out)?;
    Ok(out)
}

/// `kelp dev`'s loader component for Python
/// (`tools/componentize-py/dev_loader/kelp_dev_loader.py`), built once per toolchain.
pub fn python_dev_loader(root: &Path) -> Result<PathBuf> {
    let out = root.join(PYTHON_DEV_LOADER);
    build_python(root, &root.join("tools/componentize-py/dev_loader/kelp_dev_loader.py"), &out)?;
    Ok(out)
}

/// Whether the loader at `loader` (one of the paths above) was built before: if not, the
/// first fast-path round of a toolchain builds it, which takes seconds.
pub fn dev_loader_ready(root: &Path, loader: &str) -> bool {
    let out = root.join(loader);
    out.is_file() && out.with_extension("wasm.inputs").is_file()
}

/// What the Python loader evaluates: the entry module's name and the text of every `.py`
/// file beside it (by path relative to it), as JSON.
pub fn python_dev_source(module: &Path) -> Result<String> {
    let dir = module.parent().context("the Python module has no directory")?;
    let entry = module.file_stem().context("the Python module has no name")?.to_string_lossy().into_owned();
    let mut files = serde_json::Map::new();
    for path in python_sources(dir)? {
        let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        files.insert(relative, serde_json::Value::String(text));
    }
    Ok(serde_json::json!({"entry": entry, "files": files}).to_string())
}

/// Bundle a JavaScript or TypeScript entry for the dev loader: esbuild only, into one
/// CommonJS module at `out` (well under a second, against componentize-js's 10–20 s).
pub fn bundle_for_dev(root: &Path, project: &Path, entry: &Path, out: &Path) -> Result<()> {
    ensure_node_tools(root)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let output = Command::new("node")
        .arg(root.join("tools/componentize/build.mjs"))
        .arg(entry)
        .arg(out)
        .arg("dev")
        .arg(project)
        .output()
        .context("running node (Node.js 20+ is needed to build JavaScript extensions)")?;
    check_builder(&output, entry)
}

/// The virtual environment with componentize-py, under the toolchain root.
fn python_venv(root: &Path) -> PathBuf {
    root.join("tools/componentize-py/venv")
}

/// Whether the componentize-py environment is installed for the current requirements.
pub fn python_tools_ready(root: &Path) -> bool {
    let tools = root.join("tools/componentize-py");
    let Ok(requirements) = std::fs::read(tools.join("requirements.txt")) else { return false };
    std::fs::read_to_string(tools.join(INSTALLED_MARKER)).ok().as_deref()
        == Some(hex::encode(Sha256::digest(&requirements)).as_str())
        && python_venv(root).join("bin/componentize-py").is_file()
}

/// Create the virtual environment and pip install componentize-py (once per requirements
/// file; concurrent builders wait for each other).
pub fn ensure_python_tools(root: &Path) -> Result<()> {
    if python_tools_ready(root) {
        return Ok(());
    }
    let tools = root.join("tools/componentize-py");
    let _lock = lock(&tools.join(".pip.lock"))?;
    if python_tools_ready(root) {
        return Ok(());
    }
    let venv = python_venv(root);
    let run = |cmd: &mut Command, what: &str| -> Result<()> {
        let status =
            cmd.status().with_context(|| format!("{what} (python3 with venv is needed for Python extensions)"))?;
        if !status.success() {
            bail!("{what} failed");
        }
        Ok(())
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv), "creating a Python virtual environment")?;
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(tools.join("requirements.txt")),
        "pip install componentize-py",
    )?;
    let requirements = std::fs::read(tools.join("requirements.txt"))?;
    std::fs::write(tools.join(INSTALLED_MARKER), hex::encode(Sha256::digest(&requirements)))?;
    Ok(())
}

/// The `.py` files of a Python guest's directory (what its build depends on), sorted.
fn python_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('.') && name != "__pycache__" && name != "dist" {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "py") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The world of a Python guest: Kelp's when it imports the config interface.
fn python_world(sources: &[PathBuf]) -> &'static str {
    let uses_config = sources.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|text| {
            text.contains("wit_world.imports.config")
                || text.lines().any(|l| l.starts_with("from wit_world.imports import") && l.contains("config"))
        })
    });
    if uses_config {
        "kelp:extension/runner"
    } else {
        "alga:extension/runner"
    }
}

/// Build a Python guest (`module.py` and the files beside it) with componentize-py into
/// `out`, unless it is already built from the same sources and toolchain.
pub fn build_python(root: &Path, module: &Path, out: &Path) -> Result<()> {
    let dir = module.parent().context("the Python module has no directory")?;
    let name = module.file_stem().context("the Python module has no name")?.to_string_lossy().into_owned();
    let sources = python_sources(dir)?;
    let world = python_world(&sources);
    let requirements = root.join("tools/componentize-py/requirements.txt");
    let refs: Vec<&Path> =
        std::iter::once(requirements.as_path()).chain(sources.iter().map(PathBuf::as_path)).collect();
    let stamp = hash_inputs(root, &refs)? + world;
    let stamp_path = out.with_extension("wasm.inputs");
    let fresh = || out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str());
    if fresh() {
        return Ok(());
    }
    ensure_python_tools(root)?;
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    let _lock = lock(&out.with_extension("wasm.lock"))?;
    if fresh() {
        return Ok(());
    }
    // The Alga world is a package of its own; Kelp's world includes it from wit/deps.
    let wit = if world == "alga:extension/runner" { root.join("wit/deps/alga") } else { root.join("wit") };
    // componentize-py writes __pycache__ next to the modules it reads: build from a copy, so
    // the author's folder stays as it was.
    let copy = out.with_extension("py-src");
    let _ = std::fs::remove_dir_all(&copy);
    for source in &sources {
        let target = copy.join(source.strip_prefix(dir).unwrap_or(source));
        std::fs::create_dir_all(target.parent().unwrap_or(&copy))?;
        std::fs::copy(source, &target).with_context(|| format!("copying {}", source.display()))?;
    }
    let output = Command::new(python_venv(root).join("bin/componentize-py"))
        .arg("-d")
        .arg(&wit)
        .args(["-w", world, "componentize", &name, "-p"])
        .arg(&copy)
        .arg("-o")
        .arg(out)
        .output()
        .context("running componentize-py")?;
    if !output.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if let Some(report) = python_failure(&text, dir) {
            bail!("building {} failed:\n{report}", module.display());
        }
    }
    check_builder(&output, module)?;
    std::fs::write(&stamp_path, stamp)?;
    Ok(())
}

/// componentize-py's report of the guest's own Python failing to load (a syntax error, a
/// missing module, an exception at import), as the author should see it: first
/// `<dir>/app.py:41:24: SyntaxError: expected ':'` (the place editors jump to), then Python's
/// own lines with the paths of the author's files, without componentize-py's Rust backtrace.
/// `None` when the output is not such a report.
fn python_failure(text: &str, dir: &Path) -> Option<String> {
    const GUEST_ROOT: &str = "File \"/0/";
    let start = text.find("AssertionError: ")? + "AssertionError: ".len();
    let report = text[start..].split("\n\nCaused by:").next()?.trim_end();
    if !report.contains(GUEST_ROOT) {
        return None;
    }
    let report = report.replace(GUEST_ROOT, &format!("File \"{}/", dir.display()));
    let lines: Vec<&str> = report.lines().collect();
    let (frame, file, row) = lines.iter().enumerate().rev().find_map(|(i, line)| {
        let (file, row) = crate::debug::output::python_frame(line.trim_start().strip_prefix("File \"")?)?;
        Some((i, file.to_string(), row))
    })?;
    let error = lines.last()?.trim();
    // A syntax error points at its column with a caret under the (dedented) source line.
    let column = match (lines.get(frame + 1), lines.get(frame + 2)) {
        (Some(code), Some(caret)) if caret.trim_start().starts_with('^') => {
            let shown_indent = code.len() - code.trim_start().len();
            let original = std::fs::read_to_string(&file).ok().and_then(|t| {
                let line = t.lines().nth(row as usize - 1)?.to_string();
                Some(line.len() - line.trim_start().len())
            });
            let caret_at = caret.find('^')?;
            original.map(|indent| format!(":{}", caret_at.saturating_sub(shown_indent) + indent + 1))
        }
        _ => None,
    }
    .unwrap_or_default();
    Some(format!("{file}:{row}{column}: {error}\n{report}"))
}

/// A build tool's failure as the author should see it: what failed, then the tool's own
/// output (its `file:line:column` lines).
fn check_builder(output: &std::process::Output, source: &Path) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "building {} failed:\n{}{}",
        source.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr).trim_end()
    )
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
    /// The guest's code: a `.wat` core module, a JavaScript/TypeScript entry file or a Python
    /// module.
    pub code: &'a Path,
    /// The WIT world the component is built against.
    pub world: &'a str,
    /// Optional UI directory, copied to `ui/`.
    pub ui: Option<&'a Path>,
}

/// Stage an example for publishing: its manifest and the freshly built component under
/// `staging/<name>/` (sources stay where they are). Returns the staged directory.
pub fn stage_example(root: &Path, example: &Path, staging: &Path) -> Result<PathBuf> {
    Ok(project::build_project(root, example, staging, &project::Quiet)?.dir)
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
    match sources.code.extension().and_then(|x| x.to_str()) {
        Some("wat") => build_wat(sources.code, sources.world, &built)?,
        // The world follows the sources' imports (see `python_world`).
        Some("py") => build_python(root, sources.code, &built)?,
        _ => build_js(root, sources.code, sources.world, &built)?,
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

#[cfg(test)]
mod tests {
    #[test]
    fn python_load_failures_are_written_as_places_without_the_rust_backtrace() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "import x\n\ndef f():\n        if path == 1\n").unwrap();
        let out = "Traceback (most recent call last):\n  File \"/venv/bin/componentize-py\", line 8\n\
                   AssertionError:   File \"/0/app.py\", line 4\n    if path == 1\n                ^\n\
                   SyntaxError: expected ':'\n\n\nCaused by:\n    SyntaxError: expected ':'\n\nStack backtrace:\n   0: anyhow\n";
        let report = super::python_failure(out, dir.path()).unwrap();
        let file = dir.path().join("app.py");
        assert!(report.starts_with(&format!("{}:4:21: SyntaxError: expected ':'\n", file.display())), "{report}");
        assert!(!report.contains("Stack backtrace") && !report.contains("/0/"), "{report}");
        let missing = "AssertionError: Traceback (most recent call last):\n  File \"/0/app.py\", line 1, in <module>\n\
                       \x20   import x\nModuleNotFoundError: No module named 'x'\n\n\nCaused by:\n    x\n";
        let report = super::python_failure(missing, dir.path()).unwrap();
        assert!(report.starts_with(&format!("{}:1: ModuleNotFoundError: No module named 'x'\n", file.display())));
        assert!(super::python_failure("error: something else", dir.path()).is_none());
    }

    #[test]
    fn tsc_errors_are_written_as_places() {
        let shown = std::path::Path::new("hello");
        assert_eq!(
            super::tsc_line_as_place("src/index.ts(12,5): error TS2322: Type 'string' is not assignable.", shown),
            "hello/src/index.ts:12:5: error TS2322: Type 'string' is not assignable."
        );
        assert_eq!(super::tsc_line_as_place("  continued message", shown), "  continued message");
    }
}

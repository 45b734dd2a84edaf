//! An extension project on disk, as `kelp build`, `kelp publish` and `kelp up` see it: its
//! manifest (checked before anything is built) and its guest source, found by layout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::manifest::Manifest;

/// A guest's source and the toolchain that builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestSource {
    /// A core module in WAT, wrapped into a component of the plain Alga world.
    Wat(PathBuf),
    /// A JavaScript or TypeScript entry, bundled by esbuild and built by componentize-js.
    Js(PathBuf),
    /// A Python module (`app.py`), built by componentize-py with the files beside it.
    Python(PathBuf),
}

impl GuestSource {
    /// The entry file.
    pub fn path(&self) -> &Path {
        match self {
            GuestSource::Wat(p) | GuestSource::Js(p) | GuestSource::Python(p) => p,
        }
    }
}

/// Entry files tried in order: Kelp's layout (`src/index.*`), Alga's SDK layout
/// (`src/handler.*`), then an `index.*` at the project root.
const JS_ENTRIES: &[&str] =
    &["src/index.ts", "src/index.js", "src/handler.ts", "src/handler.js", "index.ts", "index.js", "index.mjs"];

/// Python modules tried in order (componentize-py builds the module with the files beside it).
const PY_ENTRIES: &[&str] = &["app.py", "src/app.py"];

/// Find the guest source of the project in `dir`.
pub fn find_source(dir: &Path) -> Result<GuestSource> {
    let wat = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wat"));
    if let Some(wat) = wat {
        return Ok(GuestSource::Wat(wat));
    }
    if let Some(entry) = JS_ENTRIES.iter().map(|e| dir.join(e)).find(|p| p.is_file()) {
        return Ok(GuestSource::Js(entry));
    }
    if let Some(module) = PY_ENTRIES.iter().map(|e| dir.join(e)).find(|p| p.is_file()) {
        return Ok(GuestSource::Python(module));
    }
    bail!(
        "{}: no guest source found (looked for a *.wat file, {} and {}); `kelp new <dir> --lang js|ts|python|wat` makes a project",
        dir.display(),
        JS_ENTRIES.join(", "),
        PY_ENTRIES.join(", ")
    )
}

/// A manifest that passed the checks `kelp build` makes before building.
#[derive(Debug)]
pub struct CheckedManifest {
    /// The validated manifest.
    pub manifest: Manifest,
    /// What is worth saying but does not stop the build.
    pub warnings: Vec<String>,
}

/// Read and check `dir/manifest.json` before anything is built: JSON errors with line and
/// column, schema errors, and unknown keys that look like typos of known ones (with the
/// known key) are errors; other unknown keys and an extension with no endpoints are warnings.
pub fn check_manifest(dir: &Path) -> Result<CheckedManifest> {
    let path = dir.join("manifest.json");
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {} (`kelp new <dir>` makes a project with one)", path.display()))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}:{}:{}: not valid JSON: {e}", path.display(), e.line(), e.column()))?;
    let unknown = Manifest::unknown_keys(&value);
    let typos: Vec<String> = unknown.iter().filter(|k| k.suggestion.is_some()).map(ToString::to_string).collect();
    if !typos.is_empty() {
        bail!("{}: {}", path.display(), typos.join("; "));
    }
    let manifest = Manifest::from_value(value).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.0))?;
    let mut warnings: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    if manifest.endpoints().is_empty() {
        warnings.push("no api.endpoints: every request to this extension will answer 404".into());
    }
    for e in manifest.endpoints().iter().filter(|e| e.handler.is_empty()) {
        warnings.push(format!(
            "endpoint {} {} names no handler (the component's `handler` export serves it)",
            e.method, e.path
        ));
    }
    Ok(CheckedManifest { manifest, warnings })
}

/// What `kelp build` reports as it goes.
pub trait Progress {
    /// A step starts (`what` says what and, for slow steps, about how long it takes).
    fn step(&self, what: &str);
    /// The step finished after `elapsed`.
    fn done(&self, elapsed: std::time::Duration);
    /// A warning about the project.
    fn warn(&self, what: &str);
}

/// Progress nobody watches (`kelp up` seeding its examples, tests).
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn done(&self, _: std::time::Duration) {}
    fn warn(&self, what: &str) {
        tracing::warn!(warning = what, "extension project");
    }
}

/// A built project, staged for publishing.
#[derive(Debug)]
pub struct Built {
    /// The staged directory (manifest.json, dist/main.wasm, ui/).
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// Check the manifest, then build the guest and stage the project under
/// `staging/<directory name>/`, reporting each step to `progress`.
pub fn build_project(root: &Path, project: &Path, staging: &Path, progress: &dyn Progress) -> Result<Built> {
    let Opened { project, name, checked, source } = open(root, project, progress)?;
    let project = project.as_path();
    let world = match source {
        GuestSource::Wat(_) => "alga:extension/runner",
        // kelp:extension/runner when the source imports kelp:extension/config (build.mjs,
        // and `python_world` for Python).
        GuestSource::Js(_) | GuestSource::Python(_) => "auto",
    };
    progress.step(&match source {
        GuestSource::Wat(_) => format!("building {} (WAT → component)", source.path().display()),
        GuestSource::Js(_) => {
            format!("building {} with esbuild and componentize-js (15–40 s)", source.path().display())
        }
        GuestSource::Python(_) => format!("building {} with componentize-py (20–40 s)", source.path().display()),
    });
    let started = Instant::now();
    let ui = project.join("ui");
    let manifest_path = project.join("manifest.json");
    let sources = super::GuestSources {
        manifest: &manifest_path,
        code: source.path(),
        world,
        ui: ui.is_dir().then_some(ui.as_path()),
    };
    let dir = super::stage_guest(root, &name, &sources, staging)?;
    progress.done(started.elapsed());
    Ok(Built { dir, manifest: checked.manifest })
}

/// A project about to be built: its absolute path, directory name, checked manifest and
/// source, with the toolchain that source needs installed.
struct Opened {
    project: PathBuf,
    name: String,
    checked: CheckedManifest,
    source: GuestSource,
}

fn open(root: &Path, project: &Path, progress: &dyn Progress) -> Result<Opened> {
    let project = std::path::absolute(project).with_context(|| format!("resolving {}", project.display()))?;
    let name = project.file_name().context("the project directory has no name")?.to_string_lossy().into_owned();
    let checked = check_manifest(&project)?;
    for warning in &checked.warnings {
        progress.warn(warning);
    }
    let source = find_source(&project)?;
    install_tools(root, &source, progress)?;
    Ok(Opened { project, name, checked, source })
}

/// Install the toolchain a source needs (npm packages, Python venv) the first time, saying so.
fn install_tools(root: &Path, source: &GuestSource, progress: &dyn Progress) -> Result<()> {
    match source {
        GuestSource::Js(_) if !super::npm_packages_ready(&root.join("tools/componentize")) => {
            progress.step(&format!(
                "installing the JavaScript toolchain (componentize-js, esbuild) into {} (once per kelp version)",
                root.display()
            ));
            let started = Instant::now();
            super::ensure_node_tools(root)?;
            progress.done(started.elapsed());
        }
        GuestSource::Python(_) if !super::python_tools_ready(root) => {
            progress.step(&format!(
                "installing the Python toolchain (componentize-py) into {} (once per kelp version)",
                root.display()
            ));
            let started = Instant::now();
            super::ensure_python_tools(root)?;
            progress.done(started.elapsed());
        }
        _ => {}
    }
    Ok(())
}

/// Builds a loader component (or finds it up to date) under a toolchain root: its path.
type BuildLoader = fn(&Path) -> Result<PathBuf>;

/// `kelp dev`'s fast path: instead of componentizing (10–20 s per edit), stage the author's
/// source beside a loader component built once per toolchain, with the manifest's
/// `devSource` naming it: a JavaScript or TypeScript entry bundled by esbuild into one
/// CommonJS module (`dev/source.js`), or a Python project's `.py` files (`dev/source.json`).
/// The loader's bytes are the same every round, so publishing finds it already compiled.
/// `Ok(None)` for WAT: it takes [`build_project`] (already fast).
pub fn stage_for_dev(root: &Path, project: &Path, staging: &Path, progress: &dyn Progress) -> Result<Option<Built>> {
    let Opened { project, name, checked, source } = open(root, project, progress)?;
    let project = project.as_path();
    let (dev_path, loader, build_loader): (&str, &str, BuildLoader) = match &source {
        GuestSource::Js(_) => ("dev/source.js", super::JS_DEV_LOADER, super::dev_loader),
        GuestSource::Python(_) => ("dev/source.json", super::PYTHON_DEV_LOADER, super::python_dev_loader),
        GuestSource::Wat(_) => return Ok(None),
    };
    // Built (or found up to date) every round; only a first build is worth a progress line.
    let first_build = !super::dev_loader_ready(root, loader);
    if first_build {
        progress.step("building kelp dev's loader component (once per kelp version, 15–40 s)");
    }
    let started = Instant::now();
    let loader = build_loader(root)?;
    if first_build {
        progress.done(started.elapsed());
    }
    let dir = staging.join(&name);
    match &source {
        GuestSource::Js(entry) => super::bundle_for_dev(root, project, entry, &dir.join(dev_path))?,
        GuestSource::Python(module) => {
            super::write_if_changed(&dir.join(dev_path), super::python_dev_source(module)?.as_bytes())?
        }
        GuestSource::Wat(_) => unreachable!("WAT returned above"),
    }
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(project.join("manifest.json"))?)?;
    manifest["devSource"] = Value::String(dev_path.into());
    super::write_if_changed(&dir.join("manifest.json"), &serde_json::to_vec_pretty(&manifest)?)?;
    super::write_if_changed(&dir.join("dist/main.wasm"), &std::fs::read(&loader)?)?;
    let ui = project.join("ui");
    if ui.is_dir() {
        super::copy_tree(&ui, &dir.join("ui"))?;
    }
    Ok(Some(Built { dir, manifest: checked.manifest }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(manifest: &str, files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        dir
    }

    const OK: &str = r#"{"name":"com.acme.x","version":"1.0.0","runtime":"wasm-js@1",
        "api":{"endpoints":[{"method":"GET","path":"/hello","handler":"handler"}]}}"#;

    #[test]
    fn typos_are_refused_with_the_known_key_before_anything_is_built() {
        let dir = project(&OK.replace("\"endpoints\"", "\"endpionts\""), &["src/index.js"]);
        let err = format!("{:#}", check_manifest(dir.path()).unwrap_err());
        assert!(err.contains("api.\"endpionts\"") && err.contains("did you mean \"endpoints\""), "{err}");
        let dir = project(&OK.replace("\"handler\":", "\"handelr\":"), &[]);
        let err = format!("{:#}", check_manifest(dir.path()).unwrap_err());
        assert!(err.contains("api.endpoints[0].\"handelr\""), "{err}");
    }

    #[test]
    fn unrelated_unknown_keys_and_no_endpoints_are_warnings() {
        let dir = project(&OK.replace("\"runtime\"", "\"x-internal-notes\":1,\"runtime\""), &[]);
        let checked = check_manifest(dir.path()).unwrap();
        assert_eq!(checked.warnings, vec!["unknown key \"x-internal-notes\" ignored".to_string()]);
        let dir = project(r#"{"name":"com.acme.x","version":"1.0.0","runtime":"wasm-js@1"}"#, &[]);
        let checked = check_manifest(dir.path()).unwrap();
        assert!(checked.warnings[0].contains("no api.endpoints"), "{:?}", checked.warnings);
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let dir = project("{\n  \"name\": \"x\",\n  oops\n}", &[]);
        let err = format!("{:#}", check_manifest(dir.path()).unwrap_err());
        assert!(err.contains("manifest.json:3:3: not valid JSON"), "{err}");
    }

    #[test]
    fn sources_are_found_in_kelp_and_alga_layouts() {
        let dir = project(OK, &["src/handler.ts", "index.js"]);
        assert_eq!(find_source(dir.path()).unwrap(), GuestSource::Js(dir.path().join("src/handler.ts")));
        let dir = project(OK, &["index.js"]);
        assert_eq!(find_source(dir.path()).unwrap(), GuestSource::Js(dir.path().join("index.js")));
        let dir = project(OK, &["hello.wat", "src/index.js"]);
        assert_eq!(find_source(dir.path()).unwrap(), GuestSource::Wat(dir.path().join("hello.wat")));
        let dir = project(OK, &["app.py"]);
        assert_eq!(find_source(dir.path()).unwrap(), GuestSource::Python(dir.path().join("app.py")));
        let dir = project(OK, &["README.md"]);
        assert!(format!("{:#}", find_source(dir.path()).unwrap_err()).contains("kelp new"));
    }
}

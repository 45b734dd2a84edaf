//! `kelp dev`: the inner loop against a running Kelp. Build, publish an automatically bumped
//! prerelease, point the tenant's install at it (installing it the first time, debug stream
//! on, the capabilities its manifest declares granted), follow its debug stream, and do it
//! again whenever a source file changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::admin::{self, Remote};

/// Options of `kelp dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Extension project directory (with manifest.json).
    pub dir: PathBuf,
    #[command(flatten)]
    pub remote: Remote,
    /// Token to follow the debug stream with (kelp up prints it as KELP_TOKEN).
    #[arg(long, env = "KELP_TOKEN", hide_env_values = true)]
    pub viewer_token: Option<String>,
    /// How often to look for changed sources, in milliseconds.
    #[arg(long, default_value_t = 400)]
    pub poll_ms: u64,
    /// Build, publish and upgrade once, then exit.
    #[arg(long)]
    pub once: bool,
    /// Componentize every round as `kelp build` does (10–40 s), instead of the fast path that
    /// runs the JavaScript, TypeScript or Python source in kelp dev's loader component.
    #[arg(long)]
    pub full_build: bool,
}

/// Run `kelp dev` until Ctrl-C (or once).
pub async fn run(args: DevArgs) -> Result<()> {
    let mut seen = fingerprint(&args.dir)?;
    let mut following = false;
    loop {
        match round(&args).await {
            Ok(name) => {
                if !following && !args.once {
                    following = follow(&args, &name);
                }
            }
            // A broken edit is the normal case in a watch loop: say why and wait for the next.
            Err(e) if !args.once => eprintln!("error: {e:#}\n(waiting for the next change)"),
            Err(e) => return Err(e),
        }
        if args.once {
            return Ok(());
        }
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(args.poll_ms)) => {}
            }
            let now = fingerprint(&args.dir)?;
            if now != seen {
                seen = now;
                eprintln!("-- change detected; rebuilding");
                break;
            }
        }
    }
}

/// One build → publish → upgrade; the extension's name.
async fn round(args: &DevArgs) -> Result<String> {
    let started = Instant::now();
    let dir = args.dir.clone();
    let full = args.full_build;
    let built = tokio::task::spawn_blocking(move || crate::build::build_for_dev(&dir, full)).await??;
    let version = dev_version(&built.manifest.version);
    let staged_manifest = built.dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&staged_manifest)?)?;
    manifest["version"] = json!(version);
    std::fs::write(&staged_manifest, serde_json::to_vec_pretty(&manifest)?)?;
    let build_time = started.elapsed();
    let publishing = Instant::now();
    let packed = built.dir.clone();
    let bundle = tokio::task::spawn_blocking(move || kelp_runtime::publish::pack_dir(&packed)).await??;
    let publish = admin::publish_bytes(&args.remote, bundle);
    tokio::pin!(publish);
    // A publish that compiles (the first round, or --full-build) takes seconds: say so once a
    // second has passed, instead of going quiet.
    let slow = tokio::select! {
        done = &mut publish => { done?; false }
        _ = tokio::time::sleep(Duration::from_secs(1)) => true,
    };
    if slow {
        eprintln!("• publishing (Kelp validates and precompiles the component)…");
        publish.await?;
        eprintln!("  done in {:.1} s", publishing.elapsed().as_secs_f64());
    }
    let publish_time = publishing.elapsed();
    let name = built.manifest.name.clone();
    let installing = Instant::now();
    admin::install_or_upgrade_for_dev(&args.remote, &name, &version, &built.manifest.capabilities).await?;
    eprintln!(
        "live: {name}@{version} ({:.1} s after the change: build {:.1} s, publish {:.1} s, install {:.1} s)",
        started.elapsed().as_secs_f64(),
        build_time.as_secs_f64(),
        publish_time.as_secs_f64(),
        installing.elapsed().as_secs_f64()
    );
    if let Some(path) = endpoint_to_call(&built.manifest) {
        eprintln!(
            "   curl -s -H \"Authorization: Bearer $KELP_TOKEN\" {}/api/ext/{name}{path}",
            args.remote.url.trim_end_matches('/')
        );
    }
    Ok(name)
}

/// The endpoint worth calling first: a GET without path parameters, else the first declared.
fn endpoint_to_call(manifest: &kelp_runtime::manifest::Manifest) -> Option<String> {
    let endpoints = &manifest.api.as_ref()?.endpoints;
    endpoints
        .iter()
        .find(|e| e.method == "GET" && !e.path.contains(':') && !e.path.contains('{'))
        .or(endpoints.first())
        .map(|e| e.path.clone())
}

/// A prerelease of the manifest's version that sorts after earlier ones:
/// `1.2.0` → `1.2.0-dev.<ms since the epoch>`, `1.2.0-beta.1` → `1.2.0-beta.1.dev.<ms>`.
fn dev_version(version: &str) -> String {
    let core = version.split('+').next().unwrap_or(version);
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    if core.contains('-') {
        format!("{core}.dev.{ms}")
    } else {
        format!("{core}-dev.{ms}")
    }
}

/// Follow the extension's debug stream in the background, when there is a token for it.
fn follow(args: &DevArgs, name: &str) -> bool {
    let Some(token) = args.viewer_token.clone() else {
        eprintln!("-- set KELP_TOKEN (kelp up prints it) to see the extension's logs here");
        return false;
    };
    let tail = crate::tail::TailArgs {
        extension: name.to_string(),
        install: None,
        level: None,
        stream: None,
        request: None,
        url: args.remote.url.clone(),
        token,
        json: false,
    };
    tokio::spawn(async move {
        if let Err(e) = crate::tail::run(tail).await {
            eprintln!("-- debug stream: {e:#}");
        }
    });
    true
}

/// Paths, sizes and modification times of the project's files, sorted: equal fingerprints
/// mean nothing to rebuild.
fn fingerprint(dir: &Path) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
    crate::build::source_files(dir)?
        .into_iter()
        .map(|path| {
            let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok((path, meta.len(), meta.modified()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_versions_are_prereleases_of_the_manifest_version() {
        assert!(dev_version("1.2.0").starts_with("1.2.0-dev."));
        assert!(dev_version("1.2.0-beta.1+build.7").starts_with("1.2.0-beta.1.dev."));
        assert!(kelp_runtime::manifest::Manifest::parse(
            json!({"name": "com.a.b", "version": dev_version("1.2.0"), "runtime": "wasm-js@1"}).to_string().as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn fingerprints_change_with_sources_but_not_build_output() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("dist")).unwrap();
        std::fs::write(dir.path().join("src/index.js"), "a").unwrap();
        let before = fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("dist/main.wasm"), "built").unwrap();
        assert_eq!(fingerprint(dir.path()).unwrap(), before);
        std::fs::write(dir.path().join("src/index.js"), "ab").unwrap();
        assert_ne!(fingerprint(dir.path()).unwrap(), before);
    }
}

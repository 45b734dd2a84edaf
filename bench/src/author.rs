//! The author loop (issue 27): what an edit costs until the edited code answers its first
//! request, stage by stage, as `kelp dev` does it (`kelp-bench author` runs this section
//! alone). The round is driven in process with the pieces `kelp dev` and `kelp up` use:
//! stage the project for kelp dev's loader (esbuild, or the Python files as they are), pack
//! the bundle, publish it (validate, precompile), point the install at it, and request it. The
//! production path beside it: componentize an edit as `kelp build` does and precompile it,
//! with and without Cranelift's incremental compilation cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use kelp_runtime::bundle::BundleLimits;
use kelp_runtime::compile_cache::CompileCache;
use kelp_runtime::devtools::{project, toolchain};
use kelp_runtime::engine::{EngineSettings, KelpEngine};
use kelp_runtime::gateway::{router, Gateway};
use kelp_runtime::Platform;
use kelp_tests::{token, RW};

use crate::{ms, percentile, request_body, verdict};

/// Edits measured per language.
const EDITS: usize = 5;

/// (language, source file, template source, greeting line in it).
const PROJECTS: &[(&str, &str, &str, &str)] = &[
    ("js", "src/index.js", include_str!("../../cli/templates/js/src/index.js"), "`Hello, ${ctx.tenantId}!`"),
    ("python", "app.py", include_str!("../../cli/templates/python/app.py"), "f\"Hello, {ctx.tenant_id}!\""),
];

const MANIFESTS: &[(&str, &str)] = &[
    ("js", include_str!("../../cli/templates/js/manifest.json")),
    ("python", include_str!("../../cli/templates/python/manifest.json")),
];

/// The stages of one round, in order.
#[derive(Default, Clone, Copy)]
struct Round {
    stage: Duration,
    pack: Duration,
    publish: Duration,
    install: Duration,
    first_request: Duration,
}

impl Round {
    fn total(&self) -> Duration {
        self.stage + self.pack + self.publish + self.install + self.first_request
    }
}

pub async fn author_section(work: &Path) -> Result<()> {
    println!("\n== Author loop: kelp dev's round, an edit until the edited code answers");
    let root = toolchain::root()?;
    let compile_cache = work.join("author-compile-cache").to_string_lossy().into_owned();
    let settings = crate::settings_with(&work.join("author-data"), &work.join("author-artifacts"), &compile_cache)?;
    let platform = Platform::embedded(&settings)?;
    let app = router(Gateway::new(platform.clone(), settings.gateway()));
    let t = token("bench", RW);
    for &(lang, file, template, greeting) in PROJECTS {
        let name = format!("com.example.loop-{lang}");
        let dir = work.join("author").join(format!("loop-{lang}"));
        let manifest = MANIFESTS.iter().find(|(l, _)| *l == lang).context("manifest")?.1;
        write(&dir.join("manifest.json"), &manifest.replace("{{name}}", &name).replace("{{publisher}}", "bench"))?;
        let source = template.replace("{{name}}", &name);
        write(&dir.join(file), &source)?;
        let staging = work.join("author-staging");
        // The first round builds the loader (once per kelp version) and compiles it (once
        // per Kelp): not an edit's cost, reported apart.
        let started = Instant::now();
        let mut install_id = None;
        round(&platform, &app, &t, &root, &dir, &staging, &name, 0, "Hello, bench!", &mut install_id).await?;
        println!(
            "  {lang}: first round (the loader compiled by this Kelp; built too if this kelp had not yet) {}",
            secs(started.elapsed())
        );
        let mut rounds = Vec::new();
        for edit in 1..=EDITS {
            let words = format!("Edit {edit}");
            write(&dir.join(file), &source.replace(greeting, &greeting.replace("Hello", &words)))?;
            let expect = format!("{words}, bench!");
            rounds
                .push(round(&platform, &app, &t, &root, &dir, &staging, &name, edit, &expect, &mut install_id).await?);
        }
        let mut totals: Vec<Duration> = rounds.iter().map(Round::total).collect();
        let (p50, worst) = (percentile(&mut totals, 0.5), *totals.iter().max().context("rounds")?);
        let stage_p50 = |f: fn(&Round) -> Duration| {
            let mut v: Vec<Duration> = rounds.iter().map(f).collect();
            ms(percentile(&mut v, 0.5))
        };
        println!(
            "  {lang}: edit → live p50 {} worst {} of {EDITS} edits   stages (p50): stage {} pack {} publish {} install {} first request {}",
            secs(p50),
            secs(worst),
            stage_p50(|r| r.stage),
            stage_p50(|r| r.pack),
            stage_p50(|r| r.publish),
            stage_p50(|r| r.install),
            stage_p50(|r| r.first_request),
        );
        let (p50_target, worst_target) = if lang == "js" {
            (Duration::from_secs(3), Duration::from_secs(5))
        } else {
            (Duration::from_secs(5), Duration::from_secs(5))
        };
        println!(
            "    targets: p50 ≤ {} ({}), worst ≤ {} ({})",
            secs(p50_target),
            verdict(p50, p50_target),
            secs(worst_target),
            verdict(worst, worst_target)
        );
    }
    production_publish(work, &root).await
}

/// One round: stage, pack, publish `0.1.0-dev.<edit>`, point the install at it, and request it
/// until the answer carries `expect`.
#[allow(clippy::too_many_arguments)]
async fn round(
    platform: &Arc<Platform>,
    app: &axum::Router,
    t: &str,
    root: &Path,
    dir: &Path,
    staging: &Path,
    name: &str,
    edit: usize,
    expect: &str,
    install_id: &mut Option<String>,
) -> Result<Round> {
    let mut r = Round::default();
    let started = Instant::now();
    let built = project::stage_for_dev(root, dir, staging, &project::Quiet)?.context("a fast-path language")?;
    let staged_manifest = built.dir.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&staged_manifest)?)?;
    manifest["version"] = serde_json::json!(format!("0.1.0-dev.{edit}"));
    std::fs::write(&staged_manifest, serde_json::to_vec_pretty(&manifest)?)?;
    r.stage = started.elapsed();
    let started = Instant::now();
    let bytes = kelp_runtime::publish::pack_dir(&built.dir)?;
    r.pack = started.elapsed();
    let started = Instant::now();
    let published = kelp_runtime::publish::publish(platform, bytes, &BundleLimits::default()).await?;
    r.publish = started.elapsed();
    let started = Instant::now();
    let granted = published.version.manifest.capabilities.clone();
    match install_id {
        None => *install_id = Some(crate::install_granting(platform, &published, granted).await?.install_id),
        Some(id) => {
            let version = published.version.id.clone();
            kelp_runtime::installs::update_install(platform, "bench", id, |i| {
                i.version_id = version;
                i.granted = granted;
                Ok(())
            })
            .await?;
        }
    }
    r.install = started.elapsed();
    let started = Instant::now();
    let body = request_body(app, &format!("/api/ext/{name}/hello"), t).await?;
    r.first_request = started.elapsed();
    anyhow::ensure!(body.contains(expect), "{name}: expected {expect:?}, got {body}");
    Ok(r)
}

/// A new version of an already published JS extension, componentized as `kelp publish` does:
/// its precompile without and with the incremental compilation cache (filled by the version
/// before it), on the same engine settings.
async fn production_publish(work: &Path, root: &Path) -> Result<()> {
    let (lang, file, template, greeting) = PROJECTS[0];
    let dir = work.join("author").join("publish-js");
    let manifest = MANIFESTS.iter().find(|(l, _)| *l == lang).context("manifest")?.1;
    write(
        &dir.join("manifest.json"),
        &manifest.replace("{{name}}", "com.example.publish-js").replace("{{publisher}}", "b"),
    )?;
    let source = template.replace("{{name}}", "com.example.publish-js");
    let mut components = Vec::new();
    let mut build_times = Vec::new();
    for text in [source.clone(), source.replace(greeting, &greeting.replace("Hello", "Howdy"))] {
        write(&dir.join(file), &text)?;
        let started = Instant::now();
        let built = project::build_project(root, &dir, &work.join("publish-staging"), &project::Quiet)?;
        build_times.push(started.elapsed());
        components.push(std::fs::read(built.dir.join("dist/main.wasm"))?);
    }
    let engine = |cache: Option<Arc<CompileCache>>| {
        KelpEngine::new(EngineSettings { pooling: false, compile_cache: cache, ..Default::default() })
    };
    let (before, after) = (components[0].clone(), components[1].clone());
    let plain = engine(None)?;
    let started = Instant::now();
    plain.engine.precompile_component(&after).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let without = started.elapsed();
    let cache = Arc::new(CompileCache::open(&work.join("publish-compile-cache"))?);
    let cached = engine(Some(cache.clone()))?;
    cached.engine.precompile_component(&before).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let started = Instant::now();
    cached.engine.precompile_component(&after).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let with = started.elapsed();
    let started = Instant::now();
    cached.engine.precompile_component(&after).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let every_function_cached = started.elapsed();
    println!(
        "  JS, the production path: componentize an edit {} (kelp build; kelp dev --full-build), then precompile at publish",
        secs(build_times[1])
    );
    println!(
        "    precompile of the new version: without the cache {}, with the last version's functions cached {} ({:.1}x; target ≤ 1 s: {}); every function cached {} (the floor: translating and hashing every function)",
        secs(without),
        secs(with),
        without.as_secs_f64() / with.as_secs_f64(),
        verdict(with, Duration::from_secs(1)),
        secs(every_function_cached),
    );
    Ok(())
}

fn write(path: &PathBuf, text: &str) -> Result<()> {
    std::fs::create_dir_all(path.parent().context("a parent")?)?;
    std::fs::write(path, text)?;
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

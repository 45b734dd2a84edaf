//! The module cache through the gateway: precompiled at publish, corrupt artifacts recovered,
//! and guest-contract compatibility of both component kinds.

use std::sync::atomic::Ordering;

use kelp_tests::*;

#[tokio::test]
async fn the_first_request_after_publish_uses_the_precompiled_artifact() {
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&staged_example("js-notes")).await;
    kelp.install(&published, "acme", &[]).await;
    let stats = &kelp.platform.cache().stats;
    let compiles = stats.compiles.load(Ordering::Relaxed);
    assert!(compiles <= 1, "publish compiles at most once (not when the artifact is already built)");
    assert!(
        kelp.platform.cache().has_blob_artifact(&published.version.component_hash).await,
        "publish stored the artifact"
    );
    let r = kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &token("acme", RW)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(stats.compiles.load(Ordering::Relaxed), compiles, "no compile on the request path");
    assert_eq!(stats.disk_hits.load(Ordering::Relaxed) + stats.blob_hits.load(Ordering::Relaxed), 1);
    kelp.get("/api/ext/com.kelp.examples.js-notes/hello", &token("acme", RW)).await;
    assert_eq!(stats.memory_hits.load(Ordering::Relaxed), 1, "then served from memory");
}

/// The WAT example published and installed on a gateway whose local artifact dir is its own
/// (these tests corrupt artifacts; the shared fixture dir must stay intact).
async fn wat_hello_with_own_artifacts() -> (TestKelp, kelp_runtime::publish::Published, tempfile::TempDir) {
    let artifacts = tempfile::tempdir().unwrap();
    let dir = artifacts.path().to_string_lossy().into_owned();
    let kelp = TestKelp::start_with(&[("KELP_ARTIFACT_DIR", &dir)]).await;
    let published = kelp.publish(&staged_example("wat-hello")).await;
    kelp.install(&published, "acme", &[]).await;
    (kelp, published, artifacts)
}

#[tokio::test]
async fn a_corrupt_local_artifact_is_a_miss_that_recovers() {
    let (kelp, published, _artifacts) = wat_hello_with_own_artifacts().await;
    let cache = kelp.platform.cache();
    let path = cache.local_artifact_path(&published.version.component_hash);
    let original = std::fs::read(&path).unwrap();
    let t = token("acme", RW);
    for corruption in ["flip", "truncate", "garbage"] {
        cache.clear_memory();
        let mut bytes = original.clone();
        match corruption {
            "flip" => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
            }
            "truncate" => bytes.truncate(bytes.len() / 3),
            _ => bytes = b"definitely not an ELF artifact".to_vec(),
        }
        std::fs::write(&path, &bytes).unwrap();
        let before = cache.stats.corrupt_artifacts.load(Ordering::Relaxed);
        let r = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &t).await;
        assert_eq!(r.status(), 200, "{corruption}: served anyway");
        assert_eq!(cache.stats.corrupt_artifacts.load(Ordering::Relaxed), before + 1, "{corruption}: detected");
        assert_eq!(std::fs::read(&path).unwrap(), original, "{corruption}: replaced by a good artifact");
    }
    assert_eq!(cache.stats.blob_hits.load(Ordering::Relaxed), 3, "recovered from the blob tier, not by recompiling");
}

#[tokio::test]
async fn a_corrupt_blob_artifact_is_recompiled() {
    let (kelp, published, _artifacts) = wat_hello_with_own_artifacts().await;
    let cache = kelp.platform.cache();
    let compat = cache.engine().compat_hash.clone();
    let key = kelp_runtime::blobs::artifact_key(&compat, &published.version.component_hash);
    kelp.platform.blobs.put(&key, b"tampered").await.unwrap();
    std::fs::remove_file(cache.local_artifact_path(&published.version.component_hash)).unwrap();
    cache.clear_memory();
    let compiles = cache.stats.compiles.load(Ordering::Relaxed);
    let r = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &token("acme", RW)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(cache.stats.compiles.load(Ordering::Relaxed), compiles + 1, "the tampered artifact was not trusted");
    assert_eq!(
        kelp.platform.blobs.get(&key).await.unwrap().unwrap(),
        b"tampered",
        "the request path never writes shared artifacts"
    );
}

#[tokio::test]
async fn a_planted_artifact_with_a_matching_digest_beside_it_is_not_trusted() {
    use sha2::Digest as _;
    let (kelp, published, _artifacts) = wat_hello_with_own_artifacts().await;
    let cache = kelp.platform.cache();
    let compat = cache.engine().compat_hash.clone();
    let hash = &published.version.component_hash;
    // Whoever can write the bucket plants another valid artifact of this engine (here: the
    // artifact of a different component) and a sha256 sidecar that matches it.
    let other = kelp.publish(&staged_wat("test.planted", "unreachable")).await;
    let planted = kelp
        .platform
        .blobs
        .get(&kelp_runtime::blobs::artifact_key(&compat, &other.version.component_hash))
        .await
        .unwrap()
        .unwrap();
    let key = kelp_runtime::blobs::artifact_key(&compat, hash);
    kelp.platform.blobs.put(&key, &planted).await.unwrap();
    kelp.platform
        .blobs
        .put(&format!("{key}.sha256"), hex::encode(sha2::Sha256::digest(&planted)).as_bytes())
        .await
        .unwrap();
    std::fs::remove_file(cache.local_artifact_path(hash)).unwrap();
    cache.clear_memory();
    let (compiles, corrupt) =
        (cache.stats.compiles.load(Ordering::Relaxed), cache.stats.corrupt_artifacts.load(Ordering::Relaxed));
    let r = kelp.get("/api/ext/com.kelp.examples.wat-hello/hello", &token("acme", RW)).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.unwrap().starts_with("hello from wat"),
        "the real component ran, not the planted (trapping) one"
    );
    assert_eq!(
        cache.stats.compiles.load(Ordering::Relaxed),
        compiles + 1,
        "compiled from the verified component bytes"
    );
    assert_eq!(cache.stats.corrupt_artifacts.load(Ordering::Relaxed), corrupt + 1, "the planted artifact was detected");
}

#[tokio::test]
async fn components_of_the_plain_alga_world_run_unchanged() {
    // A componentize-js component built for alga:extension/runner (not Kelp's world): it
    // imports all twelve alga interfaces and WASI 0.2, and must link and run as is.
    let root = repo_root();
    let sources = fixtures_dir().join("alga-world-sources");
    std::fs::create_dir_all(&sources).unwrap();
    let source = sources.join("index.js");
    write_atomic(
        &source,
        r#"import { getContext } from 'alga:extension/context';
import { logInfo } from 'alga:extension/logging';
export function handler(request) {
  const ctx = getContext();
  logInfo('alga-world component ran');
  return { status: 201, headers: [{ name: 'x-ext-world', value: 'alga' }],
           body: new TextEncoder().encode(`${ctx.tenantId} ${request.http.method} ${request.http.url}`) };
}
"#
        .as_bytes(),
    );
    write_atomic(
        &sources.join("manifest.json"),
        serde_json::json!({"name": "test.alga-js", "version": "1.0.0", "runtime": "wasm-js@1",
            "api": {"endpoints": [{"method": "POST", "path": "/items/:id", "handler": "handler"}]}})
        .to_string()
        .as_bytes(),
    );
    let guest = kelp_runtime::devtools::GuestSources {
        manifest: &sources.join("manifest.json"),
        code: &source,
        world: "alga:extension/runner",
        ui: None,
    };
    let dir = kelp_runtime::devtools::stage_guest(&root, "alga-js", &guest, &fixtures_dir().join("staged-alga-world"))
        .unwrap();
    let kelp = TestKelp::start().await;
    let published = kelp.publish(&dir).await;
    kelp.install(&published, "acme", &[]).await;
    let r = kelp
        .client
        .post(format!("{}/api/ext/test.alga-js/items/7?x=1", kelp.base))
        .bearer_auth(token("acme", RW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-ext-world"], "alga");
    assert_eq!(r.text().await.unwrap(), "acme POST /items/7?x=1");
}

/// Two builds of the JS example that differ in one string literal: what an author's edit is.
fn js_notes_before_and_after_an_edit() -> (Vec<u8>, Vec<u8>) {
    let root = repo_root();
    let source = std::fs::read_to_string(root.join("examples/js-notes/src/index.js")).unwrap();
    let edited = source.replace("?? 'Hello'", "?? 'Howdy'");
    assert_ne!(edited, source, "the example has the default greeting");
    let dir = fixtures_dir().join("incremental");
    let mut built = Vec::new();
    for (name, text) in [("before", &source), ("after", &edited)] {
        let src = dir.join(name).join("index.js");
        std::fs::create_dir_all(src.parent().unwrap()).unwrap();
        if std::fs::read_to_string(&src).ok().as_deref() != Some(text.as_str()) {
            write_atomic(&src, text.as_bytes());
        }
        let out = dir.join(format!("{name}.wasm"));
        kelp_runtime::devtools::build_js(&root, &src, "kelp:extension/runner", &out).unwrap();
        built.push(std::fs::read(out).unwrap());
    }
    let after = built.pop().unwrap();
    (built.pop().unwrap(), after)
}

#[test]
fn a_new_version_of_a_js_extension_compiles_from_the_machine_code_of_the_last() {
    use kelp_runtime::compile_cache::CompileCache;
    use kelp_runtime::engine::{EngineSettings, KelpEngine};
    use std::sync::atomic::Ordering::Relaxed;
    let (before, after) = js_notes_before_and_after_an_edit();
    assert_ne!(before, after);
    let dir = tempfile::tempdir().unwrap();
    let cache = std::sync::Arc::new(CompileCache::open(dir.path()).unwrap());
    let engine = |cache: Option<std::sync::Arc<CompileCache>>| {
        KelpEngine::new(EngineSettings { pooling: false, compile_cache: cache, ..Default::default() }).unwrap()
    };
    let cached = engine(Some(cache.clone()));
    let started = std::time::Instant::now();
    cached.engine.precompile_component(&before).unwrap();
    let first = started.elapsed();
    // Identical functions within one component already hit (trampolines, adapters).
    let functions = cache.stats.stored.load(Relaxed) + cache.stats.hits.load(Relaxed);
    assert!(cache.stats.stored.load(Relaxed) > 1000, "the first version's functions are stored");
    let stored_before = cache.stats.stored.load(Relaxed);
    let started = std::time::Instant::now();
    let from_cache = cached.engine.precompile_component(&after).unwrap();
    let second = started.elapsed();
    let compiled = cache.stats.stored.load(Relaxed) - stored_before;
    eprintln!("{functions} functions; first compile {first:?}, after the edit {second:?} ({compiled} compiled)");
    let started = std::time::Instant::now();
    let again = cached.engine.precompile_component(&after).unwrap();
    eprintln!("all from the cache: {:?}", started.elapsed());
    assert!(again == from_cache);
    // Measured: 6 % of the functions (~1,150 of 19,369) compile again after an edit.
    assert!(
        compiled * 100 <= functions * 10,
        "the edit compiles ≤ 10 % of the functions again: {compiled} of {functions}"
    );
    // The same artifact as a compile from scratch, byte for byte: the cache changes the time
    // a compile takes, never what it produces.
    let started = std::time::Instant::now();
    let from_scratch = engine(None).engine.precompile_component(&after).unwrap();
    eprintln!("without the cache: {:?}", started.elapsed());
    assert!(from_cache == from_scratch, "an artifact compiled from the cache differs from one compiled from scratch");
}

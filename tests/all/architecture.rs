//! The dependency rule of kelp-runtime, checked on the sources: modules sit in layers, a
//! module imports only modules of its own layer or below, nothing but the app layer imports a
//! router, and no two top-level modules of any crate import each other. docs/architecture.md
//! draws the same map; change both together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kelp_tests::repo_root;

/// kelp-runtime's layers, bottom first. A new top-level module must be placed here.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "control plane and guest types",
        &[
            "alga_host",
            "artifact_fetch",
            "aws",
            "auth",
            "bindings",
            "blobs",
            "bundle",
            "components",
            "fsutil",
            "ids",
            "limits",
            "manifest",
            "redact",
            "stores",
        ],
    ),
    ("capabilities", &["debug", "context", "install_config", "storage", "secrets", "egress", "business", "usage"]),
    ("runtime", &["engine", "compile_cache", "cache", "host", "executor", "call_limits", "runtime"]),
    (
        "http plumbing and services",
        &[
            "http",
            "alga_bundles",
            "audit_log",
            "idempotency",
            "installs",
            "metrics",
            "plans",
            "platform",
            "publish",
            "ratelimit",
            "ui_assets",
        ],
    ),
    ("routers", &["gateway", "relay", "admin", "ui"]),
    ("app", &["config", "local", "wiring", "telemetry", "devtools"]),
];

/// The layer that holds the routers: only layers above it may import them.
const ROUTERS: usize = 4;

/// Source text with comments removed (doc links are not dependencies).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Top-level module → the top-level modules it names through `crate::`.
fn imports(src: &Path, roots: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if roots.contains(&name.as_str()) || (path.is_file() && path.extension().is_none_or(|e| e != "rs")) {
            continue;
        }
        let files = if path.is_dir() { rust_files(&path) } else { vec![path.clone()] };
        let deps = graph.entry(name.clone()).or_default();
        for file in files {
            let text = code(&file);
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + "crate::".len()..];
                let module: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !module.is_empty() && module != name && module.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                {
                    deps.insert(module);
                }
            }
        }
    }
    graph
}

fn mutual_imports(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (a, deps) in graph {
        for b in deps {
            if a < b && graph.get(b).is_some_and(|d| d.contains(a)) {
                found.push(format!("{a} <-> {b}"));
            }
        }
    }
    found
}

#[test]
fn kelp_runtime_modules_only_depend_downward() {
    let src = repo_root().join("shared/src");
    let graph = imports(&src, &["lib"]);
    let layer_of: BTreeMap<&str, usize> =
        LAYERS.iter().enumerate().flat_map(|(i, (_, mods))| mods.iter().map(move |m| (*m, i))).collect();
    let mut problems = Vec::new();
    for (module, deps) in &graph {
        let Some(&layer) = layer_of.get(module.as_str()) else {
            problems.push(format!("{module} is in no layer: add it to LAYERS and docs/architecture.md"));
            continue;
        };
        for dep in deps {
            let Some(&dep_layer) = layer_of.get(dep.as_str()) else { continue };
            if dep_layer > layer {
                problems.push(format!(
                    "{module} ({}) imports {dep} ({}), a higher layer",
                    LAYERS[layer].0, LAYERS[dep_layer].0
                ));
            } else if dep_layer == ROUTERS && layer == ROUTERS {
                problems.push(format!("router {module} imports router {dep}: shared pieces belong in a lower layer"));
            }
        }
    }
    problems.extend(mutual_imports(&graph).into_iter().map(|m| format!("two modules import each other: {m}")));
    assert!(problems.is_empty(), "dependency rule broken:\n  {}", problems.join("\n  "));
}

#[test]
fn no_two_top_level_modules_of_any_crate_import_each_other() {
    let root = repo_root();
    for src in [
        "cli/src",
        "bench/src",
        "tests/all",
        "tests/support",
        "functions/gateway/src",
        "functions/admin-api/src",
        "functions/debug-relay/src",
    ] {
        let graph = imports(&root.join(src), &["main", "lib"]);
        let cycles = mutual_imports(&graph);
        assert!(cycles.is_empty(), "{src}: {cycles:?}");
    }
}

#[test]
fn the_rule_catches_what_it_should() {
    // A throwaway crate tree: a capability that reaches up into a router, and a cycle.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("storage.rs"),
        "use crate::gateway::Gateway;\n// crate::admin in a comment is fine\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("gateway.rs"), "use crate::storage::KvStore;").unwrap();
    let graph = imports(dir.path(), &["lib"]);
    assert_eq!(graph["storage"], BTreeSet::from(["gateway".to_string()]));
    assert_eq!(mutual_imports(&graph), ["gateway <-> storage"]);
}

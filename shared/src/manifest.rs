//! The Alga extension manifest (v2), validated with the lenient publish-time rules, plus the
//! capability vocabulary and the manifest endpoint policy of the gateway (A4).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every capability Kelp knows. The manifest may omit the `cap:` prefix.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    CAP_CONTEXT_READ,
    CAP_SECRETS_GET,
    CAP_HTTP_FETCH,
    CAP_STORAGE_KV,
    CAP_LOG_EMIT,
    CAP_UI_PROXY,
    CAP_USER_READ,
    CAP_SCHEDULER_MANAGE,
    CAP_INVOICE_MANUAL_CREATE,
    CAP_CLIENT_READ,
    CAP_SERVICE_READ,
    CAP_DEBUG_LOGS,
];
/// `context.get-context`; granted to every install.
pub const CAP_CONTEXT_READ: &str = "cap:context.read";
/// `secrets.*`.
pub const CAP_SECRETS_GET: &str = "cap:secrets.get";
/// `http.fetch` (plus the install's egress allow-list).
pub const CAP_HTTP_FETCH: &str = "cap:http.fetch";
/// `storage.*`.
pub const CAP_STORAGE_KV: &str = "cap:storage.kv";
/// `logging.*`; granted to every install.
pub const CAP_LOG_EMIT: &str = "cap:log.emit";
/// `ui-proxy.call-route`.
pub const CAP_UI_PROXY: &str = "cap:ui.proxy";
/// `user.get-user`, `user-v2.get-user`.
pub const CAP_USER_READ: &str = "cap:user.read";
/// `scheduler.*`.
pub const CAP_SCHEDULER_MANAGE: &str = "cap:scheduler.manage";
/// `invoicing.create-manual-invoice`.
pub const CAP_INVOICE_MANUAL_CREATE: &str = "cap:invoice.manual.create";
/// `clients.*`.
pub const CAP_CLIENT_READ: &str = "cap:client.read";
/// `services.*`.
pub const CAP_SERVICE_READ: &str = "cap:service.read";
/// Debug stream access for the install (B2): an install-level switch, no guest function.
pub const CAP_DEBUG_LOGS: &str = "cap:debug.logs";
/// Capabilities every install has whether or not they were granted.
pub const DEFAULT_CAPABILITIES: &[&str] = &[CAP_CONTEXT_READ, CAP_LOG_EMIT];
/// The capabilities answered by the PSA's host API (the business interfaces).
pub const BUSINESS_CAPABILITIES: &[&str] =
    &[CAP_UI_PROXY, CAP_SCHEDULER_MANAGE, CAP_INVOICE_MANUAL_CREATE, CAP_CLIENT_READ, CAP_SERVICE_READ];

/// Normalise a capability name: trim, lower-case, add the `cap:` prefix.
pub fn normalize_capability(raw: &str) -> String {
    let c = raw.trim().to_lowercase();
    if c.starts_with("cap:") {
        c
    } else {
        format!("cap:{c}")
    }
}

/// Normalise and check a list of capability names; unknown ones are an error.
pub fn normalize_capabilities<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<String>, ManifestError> {
    let mut out = BTreeSet::new();
    for r in raw {
        let c = normalize_capability(r);
        if !KNOWN_CAPABILITIES.contains(&c.as_str()) {
            return Err(ManifestError(format!("unknown capability {r:?}")));
        }
        out.insert(c);
    }
    Ok(out)
}

/// A manifest that failed validation; the message says which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid manifest: {0}")]
pub struct ManifestError(pub String);

fn bad(msg: impl Into<String>) -> ManifestError {
    ManifestError(msg.into())
}

/// A validated manifest. Capability names are normalised, endpoint methods upper-case and
/// paths cleaned, so later code never re-validates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Extension name, lower-cased (e.g. `com.acme.billing`).
    pub name: String,
    /// Publisher, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// `X.Y.Z[-pre][+build]`; in a bundle also Alga's `X.Y.*`, which publishing resolves to
    /// the next patch release of `X.Y` ([`Manifest::wildcard_prefix`]).
    pub version: String,
    /// Runtime tag, e.g. `wasm-js@1`.
    pub runtime: String,
    /// Normalised capabilities (`cap:` prefixed).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// iframe UI, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<UiSpec>,
    /// HTTP endpoints, if any (none = the extension exposes no HTTP endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    /// Asset globs (informational).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<String>,
    /// Component path inside the bundle (default `dist/main.wasm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Alga's per-target precompiled artifacts (`{"x86_64-linux-gnu": "precompiled/….cwasm"}`),
    /// checked as Alga checks them and kept as given. Kelp never loads them: an artifact is
    /// only loadable by the wasmtime build that wrote it, so Kelp precompiles at publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precompiled: Option<Value>,
    /// Kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<Value>,
    /// How instances of the component serve requests (absent: a fresh instance per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstancePolicy>,
    /// `kelp dev`'s fast path: the bundle file (e.g. `dev/source.js`) holding the author's
    /// bundled source, which the component (kelp dev's loader) reads at its first call as the
    /// config key [`DEV_SOURCE_KEY`] instead of carrying it in a snapshot.
    #[serde(default, rename = "devSource", skip_serializing_if = "Option::is_none")]
    pub dev_source: Option<String>,
}

/// The config key under which a version published by `kelp dev`'s fast path reads its source.
pub const DEV_SOURCE_KEY: &str = "kelp.dev/source";

/// `instances` of the manifest: the author's opt-in to warm instance reuse. With `reuse`, an
/// instance serves further requests of the same install (same version, config and secrets),
/// one at a time, so the guest's global state persists between them — the author declares
/// that the code is written for that (no per-user data left in globals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePolicy {
    /// Whether an instance may serve more than one request.
    pub reuse: bool,
    /// Requests one instance serves before it is replaced.
    pub max_requests: u32,
    /// Seconds an instance lives before it is replaced.
    pub max_age_seconds: u32,
}

impl InstancePolicy {
    /// Requests per instance when the manifest does not say.
    pub const DEFAULT_MAX_REQUESTS: u32 = 1000;
    /// Instance lifetime when the manifest does not say.
    pub const DEFAULT_MAX_AGE_SECONDS: u32 = 300;
    /// The largest `maxRequests` accepted.
    pub const MAX_REQUESTS_LIMIT: u32 = 100_000;
    /// The largest `maxAgeSeconds` accepted: an hour, so a leak in the guest's globals is
    /// bounded in time as well as in requests.
    pub const MAX_AGE_LIMIT_SECONDS: u32 = 3600;
}

/// `ui` of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UiSpec {
    /// Always `iframe`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Entry HTML inside the bundle's `ui/` tree, e.g. `ui/index.html`.
    pub entry: String,
    /// Host hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<UiHooks>,
}

/// `ui.hooks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UiHooks {
    /// Menu entry in the MSP app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_menu: Option<MenuHook>,
    /// Menu entry in the client portal; also what admits client-portal users (A3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_portal_menu: Option<MenuHook>,
}

/// A menu hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MenuHook {
    /// Label shown in the menu.
    pub label: String,
}

/// `api` of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ApiSpec {
    /// Declared endpoints.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// One declared endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Upper-case method.
    pub method: String,
    /// Cleaned path template (`/items/:id`).
    pub path: String,
    /// Handler name (informational; the component has one `handler` export).
    #[serde(default)]
    pub handler: String,
    /// Whether a schedule may target this endpoint, when the manifest says so; otherwise
    /// derived (a GET or POST without `:param` segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedulable: Option<bool>,
}

impl Endpoint {
    /// Whether a schedule may target this endpoint: as the manifest says, else a GET or POST
    /// without path parameters (a schedule fires with no caller to fill them).
    pub fn is_schedulable(&self) -> bool {
        self.schedulable.unwrap_or_else(|| matches!(self.method.as_str(), "GET" | "POST") && !self.path.contains(':'))
    }
}

const ALLOWED_KEYS: &[&str] = &[
    "name",
    "publisher",
    "version",
    "runtime",
    "capabilities",
    "ui",
    "api",
    "assets",
    "precompiled",
    "entry",
    "sbom",
    "instances",
    "devSource",
];
const ENDPOINT_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Largest `manifest.json` accepted.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

impl Manifest {
    /// Parse and validate a manifest.json document.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        // The manifest is stored in every version record (DynamoDB items stop at 400 KB).
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!("manifest.json is {} bytes; the limit is {MAX_MANIFEST_BYTES}", bytes.len())));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("manifest.json is not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Validate a manifest given as JSON.
    pub fn from_value(value: Value) -> Result<Self, ManifestError> {
        // Unknown keys are ignored here (Alga's SDK strips them too); publish reports them
        // ([`Manifest::warnings`]).
        let obj = value.as_object().ok_or_else(|| bad("manifest must be a JSON object"))?;
        let string = |key: &str| -> Result<Option<String>, ManifestError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(_) => Err(bad(format!("{key} must be a string"))),
            }
        };
        let name = string("name")?.filter(|s| !s.is_empty()).ok_or_else(|| bad("name is required"))?.to_lowercase();
        if name.contains('/') || name.contains("..") || name.chars().any(char::is_whitespace) {
            return Err(bad("name must not contain '/', '..' or whitespace"));
        }
        let version = string("version")?.ok_or_else(|| bad("version is required"))?;
        if !is_semver(&version) && wildcard_prefix(&version).is_none() {
            return Err(bad(format!(
                "version {version:?} is not X.Y.Z[-pre][+build] (or X.Y.* as Alga's bundles use)"
            )));
        }
        let runtime = string("runtime")?.filter(|s| !s.is_empty()).ok_or_else(|| bad("runtime is required"))?;
        let publisher = string("publisher")?;
        let entry = string("entry")?;
        if let Some(e) = &entry {
            check_relative_path("entry", e)?;
        }
        let dev_source = string("devSource")?;
        if let Some(d) = &dev_source {
            check_relative_path("devSource", d)?;
        }
        let caps: Vec<String> = match obj.get("capabilities") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("capabilities must be strings")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("capabilities must be a list")),
        };
        let capabilities = normalize_capabilities(caps.iter().map(String::as_str))?.into_iter().collect();
        let ui = match obj.get("ui") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_ui(v)?),
        };
        let api = match obj.get("api") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_api(v)?),
        };
        let assets = match obj.get("assets") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("assets must be strings")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("assets must be a list")),
        };
        let instances = match obj.get("instances") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_instances(v)?),
        };
        Ok(Self {
            name,
            publisher,
            version,
            runtime,
            capabilities,
            ui,
            api,
            assets,
            entry,
            precompiled: match obj.get("precompiled") {
                None | Some(Value::Null) => None,
                Some(v) => Some(check_precompiled(v)?),
            },
            sbom: obj.get("sbom").cloned(),
            instances,
            dev_source,
        })
    }

    /// `X.Y` of a wildcard version `X.Y.*` (Alga's: publishing picks the next patch).
    pub fn wildcard_prefix(&self) -> Option<&str> {
        wildcard_prefix(&self.version)
    }

    /// Path of the component inside the bundle.
    pub fn component_path(&self) -> &str {
        self.entry.as_deref().unwrap_or("dist/main.wasm")
    }

    /// Declared endpoints (empty without `api`).
    pub fn endpoints(&self) -> &[Endpoint] {
        self.api.as_ref().map(|a| a.endpoints.as_slice()).unwrap_or(&[])
    }

    /// Whether client-portal users may call this extension (A3).
    pub fn allows_client_portal(&self) -> bool {
        self.ui.as_ref().and_then(|u| u.hooks.as_ref()).is_some_and(|h| h.client_portal_menu.is_some())
    }

    /// Match a request against the declared endpoints (A4, fail closed).
    pub fn match_endpoint(&self, method: &str, path: &str) -> EndpointMatch<'_> {
        match_endpoint(self.endpoints(), method, path)
    }
}

fn parse_instances(v: &Value) -> Result<InstancePolicy, ManifestError> {
    let obj = v.as_object().ok_or_else(|| bad("instances must be an object"))?;
    if let Some(key) = obj.keys().find(|k| !INSTANCE_KEYS.contains(&k.as_str())) {
        return Err(bad(format!("instances.{key} is not one of {}", INSTANCE_KEYS.join(", "))));
    }
    let reuse = match obj.get("reuse") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("instances.reuse must be true or false")),
    };
    let bounded = |key: &str, default: u32, max: u32| -> Result<u32, ManifestError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=u64::from(max)).contains(n))
                .map(|n| n as u32)
                .ok_or_else(|| bad(format!("instances.{key} must be a whole number from 1 to {max}"))),
        }
    };
    Ok(InstancePolicy {
        reuse,
        max_requests: bounded("maxRequests", InstancePolicy::DEFAULT_MAX_REQUESTS, InstancePolicy::MAX_REQUESTS_LIMIT)?,
        max_age_seconds: bounded(
            "maxAgeSeconds",
            InstancePolicy::DEFAULT_MAX_AGE_SECONDS,
            InstancePolicy::MAX_AGE_LIMIT_SECONDS,
        )?,
    })
}

const INSTANCE_KEYS: &[&str] = &["reuse", "maxRequests", "maxAgeSeconds"];

fn parse_ui(v: &Value) -> Result<UiSpec, ManifestError> {
    let ui: UiSpec = serde_json::from_value(v.clone()).map_err(|e| bad(format!("ui: {e}")))?;
    if ui.kind != "iframe" {
        return Err(bad("ui.type must be \"iframe\""));
    }
    check_relative_path("ui.entry", &ui.entry)?;
    Ok(ui)
}

fn parse_api(v: &Value) -> Result<ApiSpec, ManifestError> {
    let endpoints = match v.get("endpoints") {
        None | Some(Value::Null) => return Ok(ApiSpec::default()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("api.endpoints must be a list")),
    };
    let mut out = Vec::with_capacity(endpoints.len());
    for (i, e) in endpoints.iter().enumerate() {
        let method = e
            .get("method")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("api.endpoints[{i}].method is required")))?
            .trim()
            .to_uppercase();
        if !ENDPOINT_METHODS.contains(&method.as_str()) {
            return Err(bad(format!("api.endpoints[{i}].method {method:?} is not one of {ENDPOINT_METHODS:?}")));
        }
        let raw_path =
            e.get("path").and_then(Value::as_str).ok_or_else(|| bad(format!("api.endpoints[{i}].path is required")))?;
        if raw_path.chars().any(char::is_whitespace) || raw_path.contains("..") {
            return Err(bad(format!("api.endpoints[{i}].path must not contain whitespace or '..'")));
        }
        let handler = e.get("handler").and_then(Value::as_str).unwrap_or_default().to_string();
        let schedulable = match e.get("schedulable") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(bad(format!("api.endpoints[{i}].schedulable must be true or false"))),
        };
        out.push(Endpoint { method, path: clean_path(raw_path), handler, schedulable });
    }
    Ok(ApiSpec { endpoints: out })
}

/// Keys of `api`.
const API_KEYS: &[&str] = &["endpoints"];
/// Keys of an endpoint.
const ENDPOINT_KEYS: &[&str] = &["method", "path", "handler", "schedulable"];

/// A manifest key Kelp does not know (and ignores, as Alga's SDK strips it), with the closest
/// known key when it looks like a typo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    /// Where: `"capabilites"`, `api."endpionts"`, `api.endpoints[0]."handelr"`.
    pub at: String,
    /// The known key it is probably a typo of.
    pub suggestion: Option<&'static str>,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown key {} ignored", self.at)?;
        match self.suggestion {
            Some(known) => write!(f, " (did you mean {known:?}?)"),
            None => Ok(()),
        }
    }
}

impl Manifest {
    /// What a manifest says that Kelp ignores: unknown keys at the top, in `api` and in each
    /// endpoint, each with the closest known key as a suggestion. A typo such as
    /// `"endpionts"` would otherwise publish an extension with no endpoints, silently.
    pub fn warnings(value: &Value) -> Vec<String> {
        Self::unknown_keys(value).iter().map(ToString::to_string).collect()
    }

    /// The unknown keys behind [`Manifest::warnings`], for `kelp build` to refuse typos.
    pub fn unknown_keys(value: &Value) -> Vec<UnknownKey> {
        let mut out = Vec::new();
        let mut check = |obj: &serde_json::Map<String, Value>, at: &str, known: &[&'static str]| {
            for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
                out.push(UnknownKey { at: format!("{at}{key:?}"), suggestion: closest(key, known) });
            }
        };
        let Some(obj) = value.as_object() else { return out };
        check(obj, "", ALLOWED_KEYS);
        if let Some(api) = obj.get("api").and_then(Value::as_object) {
            check(api, "api.", API_KEYS);
            for (i, e) in api.get("endpoints").and_then(Value::as_array).into_iter().flatten().enumerate() {
                if let Some(e) = e.as_object() {
                    check(e, &format!("api.endpoints[{i}]."), ENDPOINT_KEYS);
                }
            }
        }
        out
    }
}

/// The known key closest to `key` by edit distance, if it is close enough to be a typo.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|k| (edit_distance(&key.to_lowercase(), k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance (short keys only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Leading `/` forced, `//` collapsed, trailing `/` dropped (except the root).
pub fn clean_path(raw: &str) -> String {
    let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segments.join("/"))
}

fn check_relative_path(what: &str, p: &str) -> Result<(), ManifestError> {
    if p.is_empty() || p.starts_with('/') || p.contains('\\') || p.split('/').any(|s| s == "..") {
        return Err(bad(format!("{what} must be a relative path without '..'")));
    }
    Ok(())
}

/// `X.Y` of `X.Y.*`, the one wildcard Alga's bundle manifests accept
/// (`ee/server/src/lib/extensions/bundles/manifest.ts`).
fn wildcard_prefix(v: &str) -> Option<&str> {
    let prefix = v.strip_suffix(".*")?;
    let (major, minor) = prefix.split_once('.')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (digits(major) && digits(minor)).then_some(prefix)
}

/// `precompiled` as Alga's bundle validator takes it: an object of non-empty target names to
/// non-empty relative paths.
fn check_precompiled(v: &Value) -> Result<Value, ManifestError> {
    let obj = v.as_object().ok_or_else(|| bad("precompiled must be an object of target → path"))?;
    for (target, path) in obj {
        let path = path.as_str().filter(|p| !p.trim().is_empty());
        match path {
            Some(p) if !target.trim().is_empty() => check_relative_path(&format!("precompiled.{target}"), p)?,
            _ => return Err(bad("precompiled maps non-empty target names to non-empty paths")),
        }
    }
    Ok(v.clone())
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let rest = &v[core.len()..];
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b"-+.".contains(&b))
        && !rest.ends_with(['-', '+', '.'])
}

/// The highest of `versions` by semver precedence: releases only, or prereleases too when
/// asked for (a `kelp dev` build is `X.Y.Z-dev.<ms>`, which must never become "latest" for
/// someone else's `kelp upgrade`). Strings that are not semver are ignored.
pub fn highest_version<'a>(versions: impl IntoIterator<Item = &'a str>, prereleases: bool) -> Option<&'a str> {
    versions
        .into_iter()
        .filter_map(|v| semver::Version::parse(v).ok().map(|parsed| (parsed, v)))
        .filter(|(parsed, _)| prereleases || parsed.pre.is_empty())
        .max_by(|(a, _), (b, _)| a.cmp_precedence(b))
        .map(|(_, v)| v)
}

/// Outcome of matching a request against the manifest's endpoints.
#[derive(Debug, PartialEq, Eq)]
pub enum EndpointMatch<'a> {
    /// The request is declared.
    Matched(&'a Endpoint),
    /// The path is declared, but not for this method; the methods it allows.
    MethodNotAllowed(Vec<String>),
    /// No endpoint has this path.
    NotFound,
}

fn match_endpoint<'a>(endpoints: &'a [Endpoint], method: &str, path: &str) -> EndpointMatch<'a> {
    let method = method.to_uppercase();
    let effective = if method == "HEAD" { "GET" } else { method.as_str() };
    let request: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut allowed = Vec::new();
    for e in endpoints {
        let template: Vec<&str> = e.path.split('/').filter(|s| !s.is_empty()).collect();
        let path_matches =
            template.len() == request.len() && template.iter().zip(&request).all(|(t, r)| t.starts_with(':') || t == r);
        if !path_matches {
            continue;
        }
        if e.method == effective || e.method == method {
            return EndpointMatch::Matched(e);
        }
        allowed.push(e.method.clone());
        if e.method == "GET" {
            allowed.push("HEAD".into());
        }
    }
    if allowed.is_empty() {
        EndpointMatch::NotFound
    } else {
        allowed.sort();
        allowed.dedup();
        EndpointMatch::MethodNotAllowed(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn oversized_manifests_are_refused_before_parsing() {
        let padding = " ".repeat(MAX_MANIFEST_BYTES);
        let bytes = format!(r#"{{"name": "a.b", "version": "1.0.0"{padding}}}"#);
        let err = Manifest::parse(bytes.as_bytes()).unwrap_err();
        assert!(err.0.contains("limit"), "{}", err.0);
    }

    fn manifest(extra: Value) -> Result<Manifest, ManifestError> {
        let mut m = json!({"name": "Com.Acme.Hello", "publisher": "Acme", "version": "1.2.3-beta.1+b7", "runtime": "wasm-js@1"});
        m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        Manifest::from_value(m)
    }

    #[test]
    fn normalises_capabilities_and_name() {
        let m = manifest(json!({"capabilities": ["http.fetch", " CAP:Storage.KV "]})).unwrap();
        assert_eq!(m.name, "com.acme.hello");
        assert_eq!(m.capabilities, vec!["cap:http.fetch", "cap:storage.kv"]);
    }

    #[test]
    fn rejects_unknown_capability_key_and_bad_version() {
        assert!(manifest(json!({"capabilities": ["cap:root"]})).unwrap_err().0.contains("unknown capability"));
        // Unknown keys are ignored (as Alga's SDK strips them) and reported by `warnings`.
        assert!(manifest(json!({"extra": 1})).is_ok());
        let value = json!({"name": "a.b", "version": "1.0.0", "runtime": "wasm-js@1", "capabilites": [],
            "api": {"endpionts": [], "endpoints": [{"method": "GET", "path": "/x", "handelr": "h", "schedulable": false}]}});
        let warnings = Manifest::warnings(&value);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("\"capabilites\"") && warnings[0].contains("did you mean \"capabilities\""),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("api.\"endpionts\"") && warnings[1].contains("\"endpoints\""), "{warnings:?}");
        assert!(
            warnings[2].contains("api.endpoints[0].\"handelr\"") && warnings[2].contains("\"handler\""),
            "{warnings:?}"
        );
        let m = Manifest::from_value(value).unwrap();
        assert!(!m.endpoints()[0].is_schedulable(), "schedulable as the manifest says");
        assert!(manifest(json!({"version": "1.2"})).unwrap_err().0.contains("X.Y.Z"));
        assert!(manifest(json!({"ui": {"type": "iframe", "entry": "../x.html"}})).is_err());
        assert!(manifest(json!({"api": {"endpoints": [{"method": "TRACE", "path": "/x"}]}})).is_err());
        assert!(manifest(json!({"api": {"endpoints": [{"method": "GET", "path": "/a/../b"}]}})).is_err());
    }

    #[test]
    fn algas_wildcard_versions_and_precompiled_maps_are_accepted_as_alga_accepts_them() {
        let m = manifest(json!({"version": "0.3.*"})).unwrap();
        assert_eq!(m.wildcard_prefix(), Some("0.3"));
        assert_eq!(manifest(json!({"version": "1.2.3"})).unwrap().wildcard_prefix(), None);
        for refused in ["*", "1.*", "^1.2", "~1.2.3", "1.2.x", "1.*.*", ">=1.0.0"] {
            assert!(manifest(json!({ "version": refused })).is_err(), "{refused} is refused, as by Alga");
        }
        let precompiled = json!({"x86_64-linux-gnu": "precompiled/x86_64-linux-gnu.cwasm"});
        let m = manifest(json!({ "precompiled": precompiled })).unwrap();
        assert_eq!(m.precompiled, Some(precompiled), "kept as given");
        for refused in [json!(["a"]), json!({"x86_64-linux-gnu": ""}), json!({"": "a.cwasm"}), json!({"t": "../x"})] {
            assert!(manifest(json!({ "precompiled": refused })).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_highest_version_is_by_semver_and_releases_only_unless_asked() {
        let published = ["1.0.0", "1.10.0", "1.11.0-dev.1796212800000", "1.2.0", "2.0.0-rc.1", "1.3.0", "junk"];
        assert_eq!(highest_version(published, false), Some("1.10.0"), "not the last published, not a prerelease");
        assert_eq!(highest_version(published, true), Some("2.0.0-rc.1"));
        assert_eq!(highest_version(["1.0.0-dev.1"], false), None);
        assert_eq!(highest_version(["1.0.0+b2", "1.0.0+b1"], false).map(|v| v.starts_with("1.0.0")), Some(true));
    }

    #[test]
    fn matches_endpoints_with_params_head_and_405() {
        let m = manifest(json!({"api": {"endpoints": [
            {"method": "get", "path": "items//:id/", "handler": "h"},
            {"method": "POST", "path": "/items", "handler": "h"}
        ]}}))
        .unwrap();
        assert_eq!(m.endpoints()[0].path, "/items/:id");
        assert!(matches!(m.match_endpoint("GET", "/items/7"), EndpointMatch::Matched(e) if e.path == "/items/:id"));
        assert!(matches!(m.match_endpoint("HEAD", "/items/7/"), EndpointMatch::Matched(_)));
        assert_eq!(
            m.match_endpoint("DELETE", "/items/7"),
            EndpointMatch::MethodNotAllowed(vec!["GET".into(), "HEAD".into()])
        );
        assert_eq!(m.match_endpoint("GET", "/items/7/x"), EndpointMatch::NotFound);
        assert_eq!(m.match_endpoint("GET", "/items"), EndpointMatch::MethodNotAllowed(vec!["POST".into()]));
        let no_api = manifest(json!({})).unwrap();
        assert_eq!(no_api.match_endpoint("GET", "/"), EndpointMatch::NotFound);
    }

    #[test]
    fn instance_reuse_is_an_explicit_bounded_opt_in() {
        assert_eq!(manifest(json!({})).unwrap().instances, None, "absent: a fresh instance per request");
        let m = manifest(json!({"instances": {"reuse": true}})).unwrap();
        assert_eq!(
            m.instances,
            Some(InstancePolicy {
                reuse: true,
                max_requests: InstancePolicy::DEFAULT_MAX_REQUESTS,
                max_age_seconds: InstancePolicy::DEFAULT_MAX_AGE_SECONDS
            })
        );
        let m = manifest(json!({"instances": {"reuse": true, "maxRequests": 4, "maxAgeSeconds": 60}})).unwrap();
        assert_eq!((m.instances.unwrap().max_requests, m.instances.unwrap().max_age_seconds), (4, 60));
        for (bad_policy, says) in [
            (json!({"reuse": "yes"}), "instances.reuse"),
            (json!({"reuse": true, "maxRequests": 0}), "instances.maxRequests"),
            (json!({"reuse": true, "maxAgeSeconds": 86400}), "from 1 to 3600"),
            (json!({"reuse": true, "maxRequest": 5}), "instances.maxRequest is not one of"),
            (json!(true), "instances must be an object"),
        ] {
            let err = manifest(json!({ "instances": bad_policy })).unwrap_err();
            assert!(err.0.contains(says), "{bad_policy}: {}", err.0);
        }
        // A stored version record from before the key existed still reads.
        let old: Manifest =
            serde_json::from_value(json!({"name": "a.b", "version": "1.0.0", "runtime": "wasm-js@1"})).unwrap();
        assert_eq!(old.instances, None);
    }
}

//! `kelp publish`, `kelp install`, `kelp config set`, `kelp secrets set`: the admin API over
//! HTTP, against `kelp up` or a deployed Kelp.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};

/// Where the admin API is and who calls it.
#[derive(Args, Clone)]
pub struct Remote {
    /// Base URL of Kelp (kelp up, or the deployed admin API).
    #[arg(long, env = "KELP_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token (kelp up prints one as KELP_ADMIN_TOKEN).
    #[arg(long, env = "KELP_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Act on another tenant (platform:ops only).
    #[arg(long)]
    pub tenant: Option<String>,
}

impl Remote {
    async fn send(&self, method: reqwest::Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<Value> {
        let mut url = format!("{}{path}", self.url.trim_end_matches('/'));
        if let Some(t) = &self.tenant {
            url.push_str(if url.contains('?') { "&" } else { "?" });
            url.push_str(&format!("tenant={t}"));
        }
        let token = self.token.as_deref().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            anyhow::anyhow!("no admin token: export KELP_ADMIN_TOKEN (kelp up prints it) or pass --token")
        })?;
        let response = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable_kelp(e, &self.url))
            .with_context(|| format!("calling {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            bail!("{status}: {message}");
        }
        Ok(value)
    }

    pub(crate) async fn json(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        self.send(method, path, "application/json", serde_json::to_vec(&body)?).await
    }
}

/// A request that never reached Kelp, in words that say what to check: nothing listening at
/// `base` is almost always a `kelp up` that is not running, or a `KELP_URL` that points
/// elsewhere.
pub fn unreachable_kelp(e: reqwest::Error, base: &str) -> anyhow::Error {
    if e.is_connect() {
        anyhow::anyhow!(
            "cannot connect to Kelp at {base}: is `kelp up` running there? (set KELP_URL or --url to point elsewhere)"
        )
    } else if e.is_timeout() {
        anyhow::anyhow!("Kelp at {base} did not answer in time")
    } else {
        anyhow::Error::new(e)
    }
}

/// What `kelp publish` was given.
enum PublishSource {
    /// A `.tar.zst`/`.tar` bundle file.
    Bundle(PathBuf),
    /// A built directory (manifest.json + the component at its `entry`).
    Built(PathBuf),
    /// An extension project to build first.
    Project(PathBuf),
}

fn classify(source: &Path) -> Result<PublishSource> {
    if source.is_file() {
        return Ok(PublishSource::Bundle(source.to_path_buf()));
    }
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(source.join("manifest.json"))
            .with_context(|| format!("no manifest.json in {}", source.display()))?,
    )
    .with_context(|| format!("{}/manifest.json is not valid JSON", source.display()))?;
    let entry = manifest["entry"].as_str().unwrap_or("dist/main.wasm");
    Ok(if source.join(entry).is_file() {
        PublishSource::Built(source.to_path_buf())
    } else {
        PublishSource::Project(source.to_path_buf())
    })
}

/// `kelp publish`. A project is built first, unless its manifest's version is already
/// published: then nothing is built (a JavaScript build is never byte-identical to the last,
/// so it would only be refused), and the answer depends on whether the source is the one
/// published from this folder. Unchanged, that is done (exit 0); changed or unknown, it is an
/// error, so `kelp publish && curl …` never runs against the old code believing it new.
pub async fn publish(remote: &Remote, source: &Path) -> Result<()> {
    let mut record = None;
    let bytes = match classify(source)? {
        PublishSource::Bundle(file) => std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
        PublishSource::Built(dir) => kelp_runtime::publish::pack_dir(&dir)?,
        PublishSource::Project(dir) => {
            let manifest = kelp_runtime::devtools::project::check_manifest(&dir)?.manifest;
            let digest = source_digest(&dir)?;
            let recorded = published_record(&manifest.name, &manifest.version);
            if let Some(id) = published_version_id(remote, &manifest.name, &manifest.version).await? {
                let what = format!("{}@{} (version id {id})", manifest.name, manifest.version);
                if std::fs::read_to_string(&recorded).is_ok_and(|d| d.trim() == digest) {
                    println!("already published {what}, from this same source");
                    return Ok(());
                }
                bail!(
                    "{what} is already published, and this source is not the one `kelp publish` uploaded from here: \
                     nothing was uploaded, and requests still run the published code. Bump \"version\" in \
                     manifest.json to publish the change (or use `kelp dev`, which publishes prereleases)"
                );
            }
            let built = crate::build::build(&dir, Path::new(".kelp/build"), crate::build::TypeCheck::Fail)?;
            record = Some((recorded, digest));
            kelp_runtime::publish::pack_dir(&built.dir)?
        }
    };
    let out = publish_bytes(remote, bytes).await?;
    if let Some((path, digest)) = record {
        // Best effort: without the record, a later unchanged publish is reported as changed.
        let _ = std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
            .and_then(|_| std::fs::write(&path, digest));
    }
    let verb = if out["created"].as_bool() == Some(true) { "published" } else { "already published" };
    println!(
        "{verb} {}@{} (version id {}, {}, precompiled: {})",
        out["extension"]["name"].as_str().unwrap_or("?"),
        out["version"]["version"].as_str().unwrap_or("?"),
        out["version"]["id"].as_str().unwrap_or("?"),
        out["version"]["content_hash"].as_str().unwrap_or("?"),
        out["version"]["artifact_present"]
    );
    Ok(())
}

/// Publish a bundle; print the manifest warnings the server found.
pub async fn publish_bytes(remote: &Remote, bytes: Vec<u8>) -> Result<Value> {
    let out = remote.send(reqwest::Method::POST, "/admin/extensions", "application/zstd", bytes).await?;
    for warning in out["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: manifest: {}", warning.as_str().unwrap_or_default());
    }
    Ok(out)
}

/// Where a publish records the digest of the source it published: beside the builds, in the
/// working directory's `.kelp/` (the project folder stays as the author left it).
fn published_record(name: &str, version: &str) -> PathBuf {
    Path::new(".kelp/published").join(format!("{name}@{version}.sha256"))
}

/// sha256 over the project's source files (relative paths and contents, in path order).
fn source_digest(project: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for file in crate::build::source_files(project)? {
        if !std::fs::symlink_metadata(&file)?.is_file() {
            continue; // links are not followed
        }
        let relative = file.strip_prefix(project).unwrap_or(&file).to_string_lossy().into_owned();
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hasher.update((relative.len() as u64).to_le_bytes());
        hasher.update(relative.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The id of `name@version` if it is published (None when the extension or the version is
/// unknown).
async fn published_version_id(remote: &Remote, name: &str, version: &str) -> Result<Option<String>> {
    let mut plain = remote.clone();
    plain.tenant = None;
    match plain.json(reqwest::Method::GET, &format!("/admin/extensions/{name}/versions/{version}"), Value::Null).await {
        Ok(v) => Ok(v["id"].as_str().map(str::to_string)),
        Err(e) if e.to_string().starts_with("404") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Options of `kelp install`.
#[derive(Args)]
pub struct InstallArgs {
    /// Extension registry id or manifest name.
    pub extension: String,
    /// Version (semver or version id); the highest published release when left out.
    #[arg(long)]
    pub version: Option<String>,
    /// Without --version, consider prereleases too (`kelp dev` builds are `X.Y.Z-dev.<ms>`).
    #[arg(long)]
    pub prerelease: bool,
    /// Capabilities to grant (default: everything the manifest declares).
    #[arg(long = "capability", value_delimiter = ',')]
    pub capabilities: Option<Vec<String>>,
    /// Egress allow-list entries.
    #[arg(long = "egress", value_delimiter = ',')]
    pub egress: Vec<String>,
    /// Config entries (key=value).
    #[arg(long = "config", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// Switch the debug stream on for this install.
    #[arg(long)]
    pub debug_logs: bool,
}

/// `kelp install`.
pub async fn install(remote: &Remote, args: &InstallArgs) -> Result<()> {
    let version = match &args.version {
        Some(v) => v.clone(),
        None => {
            let latest = latest_version(remote, &args.extension, args.prerelease).await?;
            let what = if args.prerelease { "version, prereleases included" } else { "release" };
            println!("installing {}@{latest} (the highest published {what})", args.extension);
            latest
        }
    };
    let mut body = json!({
        "extension": args.extension, "version": version, "egress": args.egress, "debug_logs": args.debug_logs,
        "config": args.config.iter().cloned().collect::<BTreeMap<_, _>>(),
    });
    if let Some(caps) = &args.capabilities {
        body["capabilities"] = json!(caps);
    }
    let out = remote.json(reqwest::Method::POST, "/admin/installs", body).await.map_err(|e| {
        if e.to_string().starts_with("409") {
            anyhow::anyhow!(
                "{e} (`kelp upgrade {ext} --version {version}` moves the tenant's install of {ext} to this version)",
                ext = args.extension
            )
        } else {
            e
        }
    })?;
    println!(
        "installed: install id {} for tenant {}",
        out["install_id"].as_str().unwrap_or("?"),
        out["tenant_id"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `kelp dev`: point the tenant's install of `name` at `version` with the debug stream on and
/// exactly the capabilities its manifest declares, installing it the first time. Says which
/// grants changed, so a capability added to the manifest is never silently missing.
pub async fn install_or_upgrade_for_dev(remote: &Remote, name: &str, version: &str, declared: &[String]) -> Result<()> {
    match installs_with_names(remote).await?.into_iter().find(|r| r.name == name || r.install["extension_id"] == name) {
        Some(InstallRow { install, .. }) => {
            let id = install["install_id"].as_str().unwrap_or_default();
            let before = granted_of(&install);
            let out = remote
                .json(
                    reqwest::Method::PATCH,
                    &format!("/admin/installs/{id}"),
                    json!({"version": version, "debug_logs": true, "enabled": true, "capabilities": declared}),
                )
                .await?;
            let (added, removed) = grant_changes(&before, &granted_of(&out));
            if !added.is_empty() {
                eprintln!("granted (declared by the manifest): {}", added.join(", "));
            }
            if !removed.is_empty() {
                eprintln!("revoked (no longer declared): {}", removed.join(", "));
            }
        }
        None => {
            let args = InstallArgs {
                extension: name.to_string(),
                version: Some(version.to_string()),
                capabilities: None,
                egress: Vec::new(),
                config: Vec::new(),
                debug_logs: true,
                prerelease: false,
            };
            install(remote, &args).await?;
        }
    }
    Ok(())
}

/// The capabilities an install view grants, without the debug stream switch.
fn granted_of(install: &Value) -> BTreeSet<String> {
    let mut granted = string_set(&install["capabilities"]);
    granted.remove(kelp_runtime::manifest::CAP_DEBUG_LOGS);
    granted
}

/// The strings of a JSON array (none when it is not one).
fn string_set(list: &Value) -> BTreeSet<String> {
    list.as_array().into_iter().flatten().filter_map(|c| c.as_str()).map(str::to_string).collect()
}

/// (granted now and not before, granted before and not now).
fn grant_changes(before: &BTreeSet<String>, after: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    (after.difference(before).cloned().collect(), before.difference(after).cloned().collect())
}

/// `kelp grant` / `kelp revoke`: add or remove capabilities of an install. Granting checks
/// against the installed version's manifest on the server (an undeclared one is a 400).
pub async fn change_grants(remote: &Remote, reference: &str, capabilities: &[String], grant: bool) -> Result<()> {
    let InstallRow { install, name, version, declared } = find_install(remote, reference).await?;
    let id = install["install_id"].as_str().unwrap_or_default();
    let asked = kelp_runtime::manifest::normalize_capabilities(capabilities.iter().map(String::as_str))?;
    let before = granted_of(&install);
    let mut wanted = before.clone();
    // A grant its version no longer declares (kept through an upgrade, inert since) would
    // make the server refuse the whole change: it goes, and the output says so.
    if grant {
        let declared = declared.with_context(|| format!("could not read {name}@{version}'s manifest"))?;
        let stale: Vec<String> = wanted.iter().filter(|c| !declared.contains(*c)).cloned().collect();
        if !stale.is_empty() {
            eprintln!("dropping grants {name}@{version} no longer declares: {}", stale.join(", "));
            wanted.retain(|c| declared.contains(c));
        }
    }
    for cap in &asked {
        if grant {
            wanted.insert(cap.clone());
        } else {
            wanted.remove(cap);
        }
    }
    let out = remote
        .json(reqwest::Method::PATCH, &format!("/admin/installs/{id}"), json!({"capabilities": wanted}))
        .await
        .map_err(|e| {
            if grant && e.to_string().contains("is not declared") {
                anyhow::anyhow!(
                    "{e} (an install may only hold what {name}@{version} declares: add it to manifest.json, \
                     publish a new version and `kelp upgrade {reference}`)"
                )
            } else {
                e
            }
        })?;
    let after = granted_of(&out);
    let (added, removed) = grant_changes(&before, &after);
    let changed = if grant { added } else { removed };
    let verb = if grant { "granted" } else { "revoked" };
    let now = if after.is_empty() { "nothing".to_string() } else { after.into_iter().collect::<Vec<_>>().join(", ") };
    if changed.is_empty() {
        println!("{name}: nothing {verb} (already so); it holds {now} (install id {id})");
    } else {
        println!("{name}: {verb} {}; it holds {now} (install id {id})", changed.join(", "));
    }
    Ok(())
}

/// The highest published version of an extension (registry id or name) by semver: releases
/// only unless `prereleases`.
async fn latest_version(remote: &Remote, extension: &str, prereleases: bool) -> Result<String> {
    let mut cursor: Option<String> = None;
    let mut versions: Vec<String> = Vec::new();
    loop {
        let page = match &cursor {
            Some(c) => format!("/admin/extensions/{extension}/versions?limit=1000&cursor={c}"),
            None => format!("/admin/extensions/{extension}/versions?limit=1000"),
        };
        let mut plain = remote.clone();
        plain.tenant = None;
        let out = plain.json(reqwest::Method::GET, &page, Value::Null).await?;
        let items = out["items"].as_array().into_iter().flatten();
        versions.extend(items.filter_map(|v| v["version"].as_str().map(str::to_string)));
        match out["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
            _ => break,
        }
    }
    let highest = kelp_runtime::manifest::highest_version(versions.iter().map(String::as_str), prereleases);
    match highest {
        Some(v) => Ok(v.to_string()),
        None if versions.is_empty() => bail!("{extension} has no published version"),
        None => bail!("{extension} has only prereleases ({}); pass --prerelease or --version", versions.join(", ")),
    }
}

/// The tenant's installs with their extensions' names and versions' semver.
async fn installs_with_names(remote: &Remote) -> Result<Vec<InstallRow>> {
    let out = remote.json(reqwest::Method::GET, "/admin/installs?limit=1000", Value::Null).await?;
    let mut rows = Vec::new();
    let mut plain = remote.clone();
    plain.tenant = None;
    for install in out["items"].as_array().cloned().unwrap_or_default() {
        let ext = install["extension_id"].as_str().unwrap_or_default().to_string();
        let name = plain
            .json(reqwest::Method::GET, &format!("/admin/extensions/{ext}"), Value::Null)
            .await
            .ok()
            .and_then(|e| e["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| ext.clone());
        let version_id = install["version_id"].as_str().unwrap_or_default().to_string();
        let found = plain
            .json(reqwest::Method::GET, &format!("/admin/extensions/{ext}/versions/{version_id}"), Value::Null)
            .await
            .ok();
        let version = found.as_ref().and_then(|v| v["version"].as_str().map(str::to_string)).unwrap_or(version_id);
        let declared = found.as_ref().map(|v| string_set(&v["manifest"]["capabilities"]));
        rows.push(InstallRow { install, name, version, declared });
    }
    Ok(rows)
}

/// An install with what the commands show and check of it.
pub(crate) struct InstallRow {
    /// The admin API's view of the install.
    pub(crate) install: Value,
    /// Its extension's name (the registry id when it could not be read).
    name: String,
    /// Its version's semver (the version id when it could not be read).
    version: String,
    /// The capabilities its version's manifest declares, when the version could be read.
    declared: Option<BTreeSet<String>>,
}

/// An install by extension name, registry id or install id.
pub(crate) async fn find_install(remote: &Remote, reference: &str) -> Result<InstallRow> {
    installs_with_names(remote)
        .await?
        .into_iter()
        .find(|r| r.name == reference || r.install["extension_id"] == reference || r.install["install_id"] == reference)
        .with_context(|| format!("no install of {reference:?} in this tenant (kelp installs list shows them)"))
}

/// An install id from an extension name, registry id or install id.
async fn resolve_install(remote: &Remote, reference: &str) -> Result<String> {
    let row = find_install(remote, reference).await?;
    row.install["install_id"].as_str().map(str::to_string).context("install without an id")
}

/// `kelp installs list`.
pub async fn list_installs(remote: &Remote) -> Result<()> {
    let rows = installs_with_names(remote).await?;
    if rows.is_empty() {
        println!("no installs");
    }
    for InstallRow { install, name, version, .. } in rows {
        println!(
            "{name}@{version}  {}  {}  debug stream {}  (install id {})",
            install["tenant_id"].as_str().unwrap_or("?"),
            if install["enabled"] == true { "enabled" } else { "disabled" },
            if install["debug_logs"] == true { "on" } else { "off" },
            install["install_id"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// `kelp enable` / `kelp disable`.
pub async fn set_enabled(remote: &Remote, reference: &str, enabled: bool) -> Result<()> {
    let id = resolve_install(remote, reference).await?;
    remote.json(reqwest::Method::PATCH, &format!("/admin/installs/{id}"), json!({"enabled": enabled})).await?;
    println!("{reference}: {} (install id {id})", if enabled { "enabled" } else { "disabled" });
    Ok(())
}

/// `kelp upgrade`.
pub async fn upgrade(remote: &Remote, reference: &str, version: Option<String>, prereleases: bool) -> Result<()> {
    let InstallRow { install, name, version: from, .. } = find_install(remote, reference).await?;
    let to = match version {
        Some(v) => v,
        None => latest_version(remote, install["extension_id"].as_str().unwrap_or(reference), prereleases).await?,
    };
    let id = install["install_id"].as_str().unwrap_or_default();
    remote.json(reqwest::Method::PATCH, &format!("/admin/installs/{id}"), json!({"version": to})).await?;
    println!("{name}: {from} → {to} (install id {id})");
    Ok(())
}

/// `kelp debug on|off`.
pub async fn set_debug(remote: &Remote, reference: &str, on: bool) -> Result<()> {
    let id = resolve_install(remote, reference).await?;
    remote.json(reqwest::Method::PATCH, &format!("/admin/installs/{id}"), json!({"debug_logs": on})).await?;
    println!("{reference}: debug stream {} (install id {id})", if on { "on" } else { "off" });
    Ok(())
}

/// `kelp uninstall`.
pub async fn uninstall(remote: &Remote, reference: &str, purge: bool) -> Result<()> {
    let id = resolve_install(remote, reference).await?;
    let path = if purge { format!("/admin/installs/{id}?purge=true") } else { format!("/admin/installs/{id}") };
    let out = remote.json(reqwest::Method::DELETE, &path, Value::Null).await?;
    if purge {
        let entries = out["purged_entries"].as_u64().unwrap_or(0);
        println!("{reference}: uninstalled (install id {id}), storage purged ({entries} entries)");
    } else {
        println!(
            "{reference}: uninstalled (install id {id}); its storage is kept: installing it again in this tenant \
             finds it (`kelp uninstall --purge` deletes it)"
        );
    }
    Ok(())
}

/// How `kelp config` / `kelp secrets` change a map.
pub enum MapChange<'a> {
    /// Write these pairs and remove these keys; the other keys stay.
    Merge(&'a [(String, String)], &'a [String]),
    /// Replace the whole map with these pairs.
    Replace(&'a [(String, String)]),
}

impl MapChange<'_> {
    /// (HTTP method, body) for `/admin/installs/{id}/{config|secrets}`.
    fn request(&self, field: &str) -> (reqwest::Method, Value) {
        match self {
            MapChange::Merge(set, unset) => (
                reqwest::Method::PATCH,
                json!({"set": set.iter().cloned().collect::<BTreeMap<_, _>>(), "unset": unset}),
            ),
            MapChange::Replace(pairs) => {
                (reqwest::Method::PUT, json!({ field: pairs.iter().cloned().collect::<BTreeMap<_, _>>() }))
            }
        }
    }
}

/// `kelp config set|unset`.
pub async fn change_config(remote: &Remote, reference: &str, change: MapChange<'_>) -> Result<()> {
    let id = resolve_install(remote, reference).await?;
    let (method, body) = change.request("config");
    let out = remote.json(method, &format!("/admin/installs/{id}/config"), body).await?;
    println!("config_version is now {}", out["config_version"]);
    Ok(())
}

/// `kelp secrets set|unset` (values are sent once and never shown again).
pub async fn change_secrets(
    remote: &Remote,
    reference: &str,
    change: MapChange<'_>,
    expires_at: Option<String>,
) -> Result<()> {
    let id = resolve_install(remote, reference).await?;
    let (method, mut body) = change.request("secrets");
    if expires_at.is_some() {
        body["expires_at"] = json!(expires_at);
    }
    let out = remote.json(method, &format!("/admin/installs/{id}/secrets"), body).await?;
    println!("secrets_version is now {} (keys: {})", out["secrets_version"], out["keys"]);
    Ok(())
}

/// `key=value`.
pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not key=value"))
}

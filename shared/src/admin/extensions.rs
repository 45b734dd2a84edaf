//! `/admin/extensions`: publish a version, read extensions and versions.

use super::common::*;
use super::Admin;

#[derive(Deserialize)]
pub(super) struct PublishByReference {
    bundle_key: String,
}

pub(super) async fn publish_version(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, &[PERM_PLATFORM_PUBLISH], "publish").await?;
    let tenant = caller.identity.tenant.clone();
    m.run(&tenant, &body, || async {
        // Large bundles (past Lambda's 6 MB payload) are uploaded to the bucket's
        // uploads/ prefix first and published by reference.
        let is_json = meta.headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with("application/json"));
        let bytes = if is_json {
            let r: PublishByReference = parse_json(&body)?;
            if !r.bundle_key.starts_with("uploads/") {
                return Err(ApiError::bad_request("bundle_key must be under uploads/"));
            }
            platform
                .blobs
                .get(&r.bundle_key)
                .await
                .map_err(|e| ApiError::bad_request(e.to_string()))?
                .ok_or_else(|| ApiError::not_found(format!("{} is not in the bucket", r.bundle_key)))?
        } else {
            body.to_vec()
        };
        let limits = BundleLimits::default();
        let publishing = publish::publish(platform, bytes, &limits);
        let published = match admin.settings.publish_deadline {
            None => publishing.await?,
            Some(deadline) => tokio::time::timeout(deadline, publishing).await.map_err(|_| {
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "publish_timeout",
                    format!(
                        "the publish did not finish within {} s (KELP_PUBLISH_DEADLINE_MS; most of it is precompiling the component). \
                         A version is recorded last, in one write: publish the same bundle again, and it answers with the version if this one got that far. \
                         For larger components give the admin function more memory (CPU).",
                        deadline.as_secs()
                    ),
                )
            })??,
        };
        let view = json!({"extension": extension_view(&published.extension), "version": version_view(platform, &published.version).await, "created": published.created, "warnings": published.warnings});
        if !published.created {
            return Ok(Done::new(StatusCode::OK, view));
        }
        let details = json!({"name": published.extension.name, "version": published.version.version, "content_hash": published.version.content_hash});
        Ok(Done::new(StatusCode::CREATED, view).audited(None, "version.publish", Some(&published.version.id), details))
    })
    .await
}

pub(super) async fn list_extensions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(p): Query<Paging>,
) -> Answer {
    caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
    let page = admin.platform.registry.list_extensions(&p.request()).await?;
    Ok(Json(page_view(page, extension_view)).into_response())
}

/// An extension by registry id or manifest name.
pub(super) async fn find_extension(platform: &Platform, reference: &str) -> Result<ExtensionRecord, ApiError> {
    let found = match platform.registry.get_extension(reference).await? {
        Some(e) => Some(e),
        None => platform.registry.find_extension_by_name(reference).await?,
    };
    found.ok_or_else(|| ApiError::not_found(format!("extension {reference} not found")))
}

pub(super) async fn get_extension(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(reference): Path<String>,
) -> Answer {
    caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
    let ext = find_extension(&admin.platform, &reference).await?;
    Ok(Json(extension_view(&ext)).into_response())
}

pub(super) async fn list_versions(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(reference): Path<String>,
    Query(p): Query<Paging>,
) -> Answer {
    caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
    let platform = &admin.platform;
    let ext = find_extension(platform, &reference).await?;
    let page = platform.registry.list_versions(&ext.id, &p.request()).await?;
    let mut items = Vec::new();
    for v in &page.items {
        items.push(version_view(platform, v).await);
    }
    Ok(Json(json!({"items": items, "next_cursor": page.next_cursor})).into_response())
}

pub(super) async fn get_version(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path((reference, version)): Path<(String, String)>,
) -> Answer {
    caller.require(&admin.platform, REGISTRY_READERS, "read the extension registry").await?;
    let platform = &admin.platform;
    let ext = find_extension(platform, &reference).await?;
    let v = resolve_version(platform, &ext, &version).await?;
    Ok(Json(version_view(platform, &v).await).into_response())
}

/// A version of `ext` by semver string or version id.
pub(super) async fn resolve_version(
    platform: &Platform,
    ext: &ExtensionRecord,
    version: &str,
) -> Result<VersionRecord, ApiError> {
    if let Some(v) = platform.registry.find_version(&ext.id, version).await? {
        return Ok(v);
    }
    match platform.registry.get_version(version).await? {
        Some(v) if v.extension_id == ext.id => Ok(v),
        _ => Err(ApiError::not_found(format!("version {version} of {} not found", ext.name))),
    }
}

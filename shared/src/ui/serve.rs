//! `GET /ext-ui/{extensionId}/{contentHash}/{*path}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::UiRoutes;
use crate::auth::{identify_in_extension, PERM_EXTENSION_READ};
use crate::http::error::ApiError;
use crate::http::RequestId;

/// Serve one UI asset.
pub async fn handle(State(ui): State<Arc<UiRoutes>>, req: Request) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let (parts, _body) = req.into_parts();
    serve(&ui, &parts).await.unwrap_or_else(|e| e.with_request_id(&request_id).into_response())
}

fn not_found() -> ApiError {
    ApiError::not_found("not found")
}

fn bad_path() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", "invalid asset path")
}

/// Split `/ext-ui/{ext}/{hash}/{rest}` and percent-decode `rest`, refusing traversal, absolute
/// paths, NUL and backslashes (checked after decoding, so `%2e%2e` is caught too).
pub(crate) fn split(path: &str) -> Result<(String, String, String), ApiError> {
    let rest = path.strip_prefix("/ext-ui/").ok_or_else(not_found)?;
    let mut parts = rest.splitn(3, '/');
    // Segments are percent-decoded: Alga's `buildExtUiSrc` encodes them, so the hash arrives
    // as `sha256%3A<hex>`.
    let ext = parts.next().and_then(percent_decode).filter(|s| !s.is_empty()).ok_or_else(not_found)?;
    let hash = parts.next().and_then(percent_decode).filter(|s| !s.is_empty()).ok_or_else(not_found)?;
    let raw = parts.next().unwrap_or("");
    let decoded = percent_decode(raw).ok_or_else(bad_path)?;
    let segments: Vec<&str> = decoded.split('/').collect();
    let bad = decoded.starts_with('/')
        || decoded.contains('\0')
        || decoded.contains('\\')
        || segments.iter().any(|s| *s == ".." || *s == ".")
        || segments.iter().rev().skip(1).any(|s| s.is_empty());
    if bad {
        return Err(bad_path());
    }
    Ok((ext, hash.trim_start_matches("sha256:").to_lowercase(), decoded.trim_end_matches('/').to_string()))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The content hash must be the caller's tenant's installed version of that extension; in
/// public mode, any published version of it, named by Kelp's id or name, or by Alga's
/// registry id for a bundle from Alga's store. Anything else is a plain 404.
async fn check_access(ui: &UiRoutes, parts: &Parts, ext: &str, hash_hex: &str) -> Result<(), ApiError> {
    let (platform, settings) = (&ui.platform, &ui.settings);
    let wanted = format!("sha256:{hash_hex}");
    if settings.public {
        if let Some(version) = platform.registry.find_version_by_content_hash(&wanted).await? {
            let ext_id = if uuid::Uuid::parse_str(ext).is_ok() {
                Some(ext.to_string())
            } else {
                platform.extension_id_by_name(ext).await?
            };
            if ext_id.as_deref() == Some(version.extension_id.as_str()) {
                return Ok(());
            }
            // Alga's iframe URLs name its registry id: a bundle fetched from its store is
            // kept under that id (and the page's later requests carry no tenant).
            let name = platform.extension_name(&version.extension_id).await?.unwrap_or_default();
            if crate::alga_bundles::scope_extension(&name) == Some(ext.to_lowercase().as_str()) {
                return Ok(());
            }
        }
        // Not known yet: Alga's `buildExtUiSrc` adds `?tenant=`, which says where in Alga's
        // store the bundle is. Fetching checks it against its hash and publishes it.
        return match query_param(parts, "tenant") {
            Some(tenant) if platform.alga_bundles.is_some() => {
                match ui.alga.fetch(platform, &tenant, ext, hash_hex).await? {
                    Ok(_) => Ok(()),
                    Err(refusal) => {
                        tracing::info!(%tenant, extension = %ext, error = %refusal.error, "UI bundle not fetched");
                        Err(not_found())
                    }
                }
            }
            _ => Err(not_found()),
        };
    }
    let identity = identify_in_extension(parts, &platform.jwt, &platform.ui_tokens)
        .map_err(|e| ApiError::unauthenticated(e.to_string()))?;
    if !identity.has(PERM_EXTENSION_READ) {
        return Err(not_found());
    }
    match crate::installs::resolve_install(platform, &identity.tenant, ext).await? {
        Some((install, version))
            if version.content_hash == wanted
                && identity.ui_scope.as_ref().is_none_or(|s| *s == install.extension_id) =>
        {
            Ok(())
        }
        _ => Err(not_found()),
    }
}

fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "xml" | "xsl" | "xslt" => "application/xml",
        "xhtml" => "application/xhtml+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A query parameter, percent-decoded.
fn query_param(parts: &Parts, name: &str) -> Option<String> {
    url::form_urlencoded::parse(parts.uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

async fn serve(ui: &UiRoutes, req: &Parts) -> Result<Response, ApiError> {
    let (platform, settings) = (&ui.platform, &ui.settings);
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "UI assets are read-only")
            .with_header(header::ALLOW, "GET, HEAD"));
    }
    let (ext, hash, path) = split(req.uri.path())?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    check_access(ui, req, &ext, &hash).await?;
    let index = platform
        .ui
        .index(&hash)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "UI assets unavailable");
            ApiError::unavailable("the extension's UI is temporarily unavailable")
        })?
        .ok_or_else(not_found)?;
    // A missing file or a directory falls back to the entry (single-page apps route in JS).
    let name = if index.files.contains_key(&path) { path } else { index.entry.clone() };
    let meta = &index.files[&name];
    if meta.size > settings.max_file_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("asset over {} bytes", settings.max_file_bytes),
        ));
    }
    let etag = format!("\"{}\"", meta.sha256);
    let matches = req
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let ctype = content_type(&name);
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else if req.method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        let bytes = tokio::fs::read(platform.ui.file(&hash, &name)).await.map_err(ApiError::internal)?;
        Response::new(Body::from(bytes))
    };
    let h = response.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).expect("valid header value");
    h.insert(header::ETAG, value(&etag));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if !matches {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    }
    // Every UI response carries the CSP, whatever its type: an SVG, XML or XSL file opened
    // directly is a document too, and would otherwise run its script as the gateway's origin
    // (which serves every tenant's API and the debug console). Only HTML may leave the
    // sandbox, when the operator turns it off for same-origin UIs (`KELP_UI_SANDBOX=false`).
    let sandbox = if settings.sandbox || !ctype.starts_with("text/html") {
        format!("; {}", super::UI_SANDBOX)
    } else {
        String::new()
    };
    let csp = format!("{}; frame-ancestors {}{sandbox}", settings.csp.trim_end_matches(';'), settings.frame_ancestors);
    h.insert(header::CONTENT_SECURITY_POLICY, value(&csp));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_refuses_traversal_in_every_form() {
        let hash = "a".repeat(64);
        assert_eq!(
            split(&format!("/ext-ui/ext/{hash}/js/app.js")).unwrap(),
            ("ext".into(), hash.clone(), "js/app.js".into())
        );
        assert_eq!(split(&format!("/ext-ui/ext/{hash}")).unwrap().2, "");
        assert_eq!(split(&format!("/ext-ui/ext/{hash}/dir/")).unwrap().2, "dir");
        assert_eq!(split(&format!("/ext-ui/ext/{hash}/a%20b.txt")).unwrap().2, "a b.txt");
        // As Alga's buildExtUiSrc builds it: every segment percent-encoded.
        assert_eq!(
            split(&format!("/ext-ui/com.acme%2Eext/sha256%3A{hash}/index.html")).unwrap(),
            ("com.acme.ext".into(), hash.clone(), "index.html".into())
        );
        for bad in [
            "../secret",
            "a/../../b",
            "%2e%2e/x",
            "%2E%2E%2Fx",
            "/etc/passwd",
            "%2fetc",
            "a%00b",
            "a\\b",
            "a%5cb",
            "./x",
            "a//b",
            "%zz",
        ] {
            assert!(split(&format!("/ext-ui/ext/{hash}/{bad}")).is_err(), "{bad:?} must be refused");
        }
    }
}

//! `POST /api/ext-ui-token/{extensionId}`: exchange a user's token for a UI token that reaches
//! only that extension (see [`crate::auth::UiTokens`]). The host page calls this and hands the
//! result to the extension's iframe, never the user's own token.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::UiRoutes;
use crate::auth::{identify, PERM_EXTENSION_READ};
use crate::http::error::ApiError;
use crate::http::RequestId;

/// Issue a UI token for the caller's tenant's install of `extension_id`.
pub async fn issue(State(ui): State<Arc<UiRoutes>>, Path(extension_id): Path<String>, req: Request) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let answer = async {
        if req.method() != Method::POST {
            return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST"));
        }
        let (parts, _) = req.into_parts();
        let platform = &ui.platform;
        // A user's own token only: a UI token cannot mint another (or widen itself).
        let identity = identify(&parts, &platform.jwt).map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        if !identity.has(PERM_EXTENSION_READ) {
            return Err(ApiError::forbidden(format!("{PERM_EXTENSION_READ} is required")));
        }
        let (install, _) =
            crate::installs::resolve_install(platform, &identity.tenant, &extension_id).await?.ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, "extension_not_available", "extension not available")
            })?;
        let token = platform.ui_tokens.mint(&identity, &install.extension_id);
        Ok(Json(json!({
            "token": token,
            "token_type": "Bearer",
            "expires_in": platform.ui_tokens.ttl().as_secs(),
            "extension_id": install.extension_id,
        }))
        .into_response())
    }
    .await;
    answer.unwrap_or_else(|e| e.with_request_id(&request_id).into_response())
}

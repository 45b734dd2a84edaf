//! The UI router: `GET /ext-ui/{extensionId}/{contentHash}/{*path}` serves a version's UI
//! files with integrity (strong ETag), immutable caching and a Content-Security-Policy on
//! HTML; `POST /api/ext-ui-token/{extensionId}` mints the token a UI calls its extension with.

mod domains;
mod serve;
mod token;

use std::sync::Arc;

use axum::routing::{any, get};
use axum::Router;

use crate::http::request_id_layer;
use crate::platform::Platform;

/// State of the UI router.
pub struct UiRoutes {
    /// Backends (the UI asset cache, UI tokens, installs).
    pub platform: Arc<Platform>,
    /// Serving settings.
    pub settings: UiSettings,
    /// UIs of bundles in Alga's store, addressed by Alga's registry ids.
    pub(crate) alga: crate::alga_bundles::AlgaBundles,
    /// Asks Alga which install a UI domain belongs to (per-install UI domains).
    pub(crate) lookups: Option<domains::HostLookup>,
}

impl UiRoutes {
    /// UI routes over a platform.
    pub fn new(platform: Arc<Platform>, settings: UiSettings) -> Arc<Self> {
        let lookups = settings.alga_domains.clone().map(domains::HostLookup::new);
        Arc::new(Self { platform, settings, alga: Default::default(), lookups })
    }
}

/// The UI router.
pub fn router(ui: Arc<UiRoutes>) -> Router {
    Router::new()
        .route("/ext-ui/{extension_id}/{content_hash}", get(serve::handle))
        .route("/ext-ui/{extension_id}/{content_hash}/", get(serve::handle))
        .route("/ext-ui/{extension_id}/{content_hash}/{*path}", get(serve::handle))
        .route("/api/ext-ui-token/{extension_id}", any(token::issue))
        .route("/", get(domains::root))
        .route("/warmup", axum::routing::post(domains::warmup))
        .with_state(ui)
        .layer(axum::middleware::from_fn(request_id_layer))
}

/// UI settings.
#[derive(Clone)]
pub struct UiSettings {
    /// Serve assets without a caller identity (the content-hash URL is the only key).
    pub public: bool,
    /// Largest file served.
    pub max_file_bytes: u64,
    /// CSP for HTML (without frame-ancestors).
    pub csp: String,
    /// `frame-ancestors` sources (the host app's origins).
    pub frame_ancestors: String,
    /// Serve UI HTML with a CSP `sandbox` (no `allow-same-origin`): each UI document runs in
    /// its own opaque origin, so it cannot read the gateway origin's storage or a sibling UI's
    /// page, and calls the gateway with CORS (`Origin: null`).
    pub sandbox: bool,
    /// Key of UI tokens (local use; AWS reads it from `token_secret_arn`).
    pub token_secret: Option<String>,
    /// Secrets Manager secret holding the UI token key (`{"password": ...}` or the string).
    pub token_secret_arn: Option<String>,
    /// Lifetime of a UI token.
    pub token_ttl: std::time::Duration,
    /// Per-install UI domains as Alga's knative mode serves them, when configured.
    pub alga_domains: Option<AlgaUiDomains>,
}

/// Alga's per-install UI domains (`{tenant}-{extension}.{EXT_DOMAIN_ROOT}`, one per install):
/// `GET /` on such a host asks Alga's `lookup-by-host` which install it is and redirects to
/// that install's UI, as Alga's runner does.
#[derive(Clone)]
pub struct AlgaUiDomains {
    /// `KELP_UI_DOMAIN_ROOT`: Alga's `EXT_DOMAIN_ROOT`. Only hosts under it are looked up.
    pub root: String,
    /// `KELP_ALGA_REGISTRY_URL`: Alga's origin (its runner's `REGISTRY_BASE_URL`).
    pub registry_url: String,
    /// `KELP_ALGA_AUTH_KEY`: sent as `x-api-key` (Alga's `ALGA_AUTH_KEY`).
    pub api_key: String,
}

impl std::fmt::Debug for AlgaUiDomains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlgaUiDomains")
            .field("root", &self.root)
            .field("registry_url", &self.registry_url)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token key never reaches a log line.
        f.debug_struct("UiSettings")
            .field("public", &self.public)
            .field("max_file_bytes", &self.max_file_bytes)
            .field("csp", &self.csp)
            .field("frame_ancestors", &self.frame_ancestors)
            .field("sandbox", &self.sandbox)
            .field("token_secret_arn", &self.token_secret_arn)
            .field("token_ttl", &self.token_ttl)
            .field("alga_domains", &self.alga_domains)
            .finish_non_exhaustive()
    }
}

/// The CSP `sandbox` directive of UI HTML: scripts, forms, pop-ups and downloads, but never
/// `allow-same-origin` (that would hand the document the gateway's origin back).
pub const UI_SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// The default CSP of extension UI HTML.
pub const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'";

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            public: false,
            max_file_bytes: 10 << 20,
            csp: DEFAULT_CSP.into(),
            frame_ancestors: "'self'".into(),
            sandbox: true,
            token_secret: None,
            token_secret_arn: None,
            token_ttl: std::time::Duration::from_secs(900),
            alga_domains: None,
        }
    }
}

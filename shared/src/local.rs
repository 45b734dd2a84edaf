//! How Kelp's routers are put together: each Lambda function's app, and all of them in one
//! app as `kelp up` (and the end-to-end tests) serve them on localhost. The only place that
//! knows every router; each router gets its own settings from here.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::Router;

use crate::admin::{self, Admin};
use crate::config::Settings;
use crate::gateway::{self, Gateway, RunnerAuth};
use crate::http::exposure::ListenerExposure;
use crate::platform::Platform;
use crate::relay::{self, Relay};
use crate::ui::{self, UiRoutes};

/// Longest a Lambda invocation waits for its debug events to reach Redis.
pub const LAMBDA_FLUSH_BOUND: std::time::Duration = std::time::Duration::from_millis(50);

/// The gateway function's routes: tenant traffic, `/v1/execute`, health, and the extension
/// UIs (assets and UI tokens).
pub fn gateway_app(platform: Arc<Platform>, settings: &Settings) -> Router {
    gateway::router(Gateway::new(platform.clone(), settings.gateway()))
        .merge(ui::router(UiRoutes::new(platform, settings.ui.clone())))
}

/// The gateway function's app in Lambda: after every response, the invocation's pending
/// debug events are flushed (bounded by [`LAMBDA_FLUSH_BOUND`]) before the environment is
/// frozen.
pub fn lambda_gateway_app(platform: Arc<Platform>, settings: &Settings) -> Router {
    let debug = platform.debug.clone();
    gateway_app(platform, settings).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let debug = debug.clone();
        async move {
            let response = next.run(req).await;
            debug.flush(LAMBDA_FLUSH_BOUND).await;
            response
        }
    }))
}

/// The admin API function's app.
pub fn admin_app(platform: Arc<Platform>, settings: &Settings) -> Router {
    admin::router(Admin::new(platform, settings.admin()))
}

/// The debug relay function's app (its platform needs no execution runtime).
pub fn relay_app(platform: Arc<Platform>, settings: &Settings) -> Router {
    relay::router(Relay::new(platform, settings.relay.clone()))
}

/// The merged router of every function over one platform.
pub fn app(platform: Arc<Platform>, settings: &Settings) -> Router {
    gateway_app(platform.clone(), settings)
        .merge(admin_app(platform.clone(), settings))
        .merge(relay_app(platform, settings))
}

/// [`app`] served on a socket bound to `addr`: every request is marked with the listener's
/// exposure. The runner's private-network mode is refused on a public listener (a wildcard or
/// public address), where "private route" would mean anyone.
pub fn app_on(platform: Arc<Platform>, settings: &Settings, addr: std::net::SocketAddr) -> anyhow::Result<Router> {
    let exposure = ListenerExposure::of(addr);
    if matches!(settings.runner_auth, RunnerAuth::PrivateNetwork { .. }) && exposure == ListenerExposure::Public {
        anyhow::bail!(
            "KELP_RUNNER_AUTH=private-network is refused on {addr}: that listener is public; bind a loopback or private address"
        );
    }
    Ok(app(platform, settings).layer(axum::Extension(exposure)))
}

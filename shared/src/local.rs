//! How Kelp's routers are put together: each Lambda function's app, and all of them in one
//! app as `kelp up` (and the end-to-end tests) serve them on localhost. The only place that
//! knows every router; each router gets its own settings from here.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::Router;

use crate::admin::{self, Admin};
use crate::config::Settings;
use crate::gateway::{self, Gateway};
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
        .merge(relay_app(platform.clone(), settings))
        .merge(metrics_route(platform))
}

/// `/metrics`: the process's tenant-request totals in the Prometheus text format (`kelp up`;
/// in Lambda the same figures go to CloudWatch as EMF). No credentials: it names extensions
/// and error codes, never tenants, installs or users.
fn metrics_route(platform: Arc<Platform>) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let platform = platform.clone();
            async move {
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], platform.metrics.prometheus())
            }
        }),
    )
}

/// Serve [`app`] on a listener, with each connection's peer address (what the runner's
/// private-network mode trusts, `KELP_RUNNER_TRUSTED_NETWORKS`).
pub fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
) -> axum::serve::Serve<
    tokio::net::TcpListener,
    axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, std::net::SocketAddr>,
    axum::middleware::AddExtension<Router, axum::extract::ConnectInfo<std::net::SocketAddr>>,
> {
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
}

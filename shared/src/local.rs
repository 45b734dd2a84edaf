//! All of Kelp's routers in one app, as `kelp up` (and the end-to-end tests) serve them on
//! localhost: the gateway, the admin API and the debug relay.

use std::sync::Arc;

use axum::Router;

use crate::admin::{self, Admin};
use crate::gateway::{self, Gateway};
use crate::platform::Platform;
use crate::relay::{self, Relay};

/// The merged router of every function over one platform.
pub fn app(platform: Arc<Platform>) -> Router {
    gateway::router(Gateway::new(platform.clone()))
        .merge(admin::router(Admin::new(platform.clone())))
        .merge(relay::router(Relay::new(platform)))
}

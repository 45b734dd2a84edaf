//! The gateway Lambda function: tenant traffic from API Gateway to extension handlers.
//! A thin shell: settings from the environment, backends, the router, lambda_http.

use kelp_runtime::gateway::{lambda_router, Gateway};
use kelp_runtime::{Platform, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    kelp_runtime::telemetry::init();
    let settings = Settings::from_env()?;
    let platform = Platform::from_settings(settings).await?;
    kelp_runtime::lambda::run("gateway", lambda_router(Gateway::new(platform))).await
}

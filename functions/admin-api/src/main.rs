//! The admin API Lambda function: publish, installs, config, secrets, grants, audit.
//! A thin shell: settings from the environment, backends, the router, lambda_http.

use kelp_runtime::admin::{router, Admin};
use kelp_runtime::{Platform, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    kelp_runtime::telemetry::init();
    let settings = Settings::from_env()?;
    let platform = Platform::from_settings(settings).await?;
    kelp_runtime::lambda::run("admin-api", router(Admin::new(platform))).await
}

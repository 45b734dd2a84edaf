//! The admin API Lambda function: publish, installs, config, secrets, grants, audit.
//! A thin shell: settings from the environment, backends, the app, lambda_http.

use kelp_runtime::local::admin_app;
use kelp_runtime::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    kelp_runtime::telemetry::init();
    let settings = kelp_runtime::wiring::settings_from_env().await?;
    // Publishing precompiles, so the admin API builds the execution runtime too.
    let platform = Platform::from_settings(&settings).await?;
    kelp_runtime::http::lambda::run("admin-api", admin_app(platform, &settings)).await
}

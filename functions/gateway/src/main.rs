//! The gateway Lambda function: tenant traffic from API Gateway to extension handlers, and
//! the extension UIs. A thin shell: settings from the environment, backends, the app,
//! lambda_http.

use kelp_runtime::local::lambda_gateway_app;
use kelp_runtime::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    kelp_runtime::telemetry::init();
    let settings = kelp_runtime::wiring::settings_from_env().await?;
    let platform = Platform::from_settings(&settings).await?;
    kelp_runtime::http::lambda::run("gateway", lambda_gateway_app(platform, &settings)).await
}

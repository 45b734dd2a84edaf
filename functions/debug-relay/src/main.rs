//! The debug relay Lambda function: SSE of extension debug events through Lambda response
//! streaming (Function URL with InvokeMode RESPONSE_STREAM). A thin shell.

use kelp_runtime::local::relay_app;
use kelp_runtime::Platform;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    kelp_runtime::telemetry::init();
    let settings = kelp_runtime::wiring::settings_from_env().await?;
    // The relay never runs a guest: no engine, no instance pool, no epoch ticker.
    let platform = Platform::without_runtime(&settings).await?;
    kelp_runtime::http::lambda::run_streaming("debug-relay", relay_app(platform, &settings)).await
}

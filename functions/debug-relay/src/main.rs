//! The debug relay Lambda function: SSE of extension debug events through Lambda response
//! streaming (Function URL with InvokeMode RESPONSE_STREAM). A thin shell.

use kelp_runtime::relay::{router, Relay};
use kelp_runtime::{Platform, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    kelp_runtime::telemetry::init();
    let settings = Settings::from_env()?;
    let platform = Platform::from_settings(settings).await?;
    kelp_runtime::lambda::run_streaming("debug-relay", router(Relay::new(platform))).await
}

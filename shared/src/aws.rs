//! Shared AWS SDK set-up: one `SdkConfig` with short timeouts and bounded retries (an outage
//! must turn into a quick 503, not a hung request), and error classification helpers.
//! `AWS_ENDPOINT_URL` (read by aws-config) points every client at moto in tests.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::client::result::SdkError;

/// Load the SDK configuration from the environment (region, credentials, endpoint).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(1_000))
                .operation_attempt_timeout(Duration::from_millis(2_000))
                .operation_timeout(Duration::from_millis(5_000))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

/// Whether an SDK error means "the service could not be reached" (timeouts, connection
/// failures, 5xx, throttling) rather than "the service answered no".
pub fn is_unavailable<E, R>(err: &SdkError<E, R>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(_) => false,
        _ => true,
    }
}

/// A short description of an SDK error for logs (never request contents).
pub fn describe<E: std::fmt::Debug, R>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(e) => format!("{:?}", e.err()),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(e) => format!("dispatch failure: {e:?}"),
        other => format!("{other:?}").chars().take(300).collect(),
    }
}

//! Shared AWS SDK set-up: one `SdkConfig` with short timeouts and bounded retries (an outage
//! must turn into a quick 503, not a hung request), and error classification helpers.
//! `AWS_ENDPOINT_URL` (read by aws-config) points every client at moto in tests.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_smithy_runtime_api::client::result::SdkError;

/// AWS settings Kelp reads itself (everything else comes from the SDK's default chain).
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// `AWS_ENDPOINT_URL`: one endpoint for every service (moto).
    pub endpoint: Option<String>,
    /// `AWS_ENDPOINT_URL_DYNAMODB`.
    pub endpoint_dynamodb: Option<String>,
    /// `AWS_ENDPOINT_URL_S3`.
    pub endpoint_s3: Option<String>,
    /// `AWS_ENDPOINT_URL_SECRETS_MANAGER`.
    pub endpoint_secretsmanager: Option<String>,
    /// `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Static credentials (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`)
    /// when given in the settings map; the default provider chain otherwise.
    pub static_credentials: Option<(String, crate::redact::Secret, Option<crate::redact::Secret>)>,
}

impl AwsSettings {
    /// Read from a settings map.
    pub fn from_map(env: &std::collections::HashMap<String, String>) -> Self {
        let get = |k: &str| env.get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        Self {
            endpoint: get("AWS_ENDPOINT_URL"),
            endpoint_dynamodb: get("AWS_ENDPOINT_URL_DYNAMODB"),
            endpoint_s3: get("AWS_ENDPOINT_URL_S3"),
            endpoint_secretsmanager: get("AWS_ENDPOINT_URL_SECRETS_MANAGER"),
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            static_credentials: get("AWS_ACCESS_KEY_ID")
                .zip(get("AWS_SECRET_ACCESS_KEY"))
                .map(|(id, secret)| (id, secret.into(), get("AWS_SESSION_TOKEN").map(Into::into))),
        }
    }
}

/// Load the SDK configuration: region, credentials and endpoint from `settings` when given,
/// else from the SDK's default chain.
pub async fn sdk_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some((id, secret, token)) = &settings.static_credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            id,
            secret.to_string(),
            token.as_ref().map(|t| t.to_string()),
            None,
            "kelp-settings",
        ));
    }
    loader
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

/// Whether a DynamoDB write was refused by its condition expression (the service answered
/// "no", as asked), not failed.
pub fn conditional_check_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException")
}

/// A short description of an SDK error for logs (never request contents).
pub fn describe<E: std::fmt::Debug, R>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(e) => format!("{:?}", e.err()),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(e) => format!("dispatch failure: {e:?}"),
        SdkError::ResponseError(_) => "unparsable response".into(),
        _ => "request could not be constructed".into(),
    }
}

/// The service clients Kelp uses, with per-service endpoint overrides applied.
#[derive(Clone)]
pub struct AwsClients {
    /// DynamoDB.
    pub dynamo: aws_sdk_dynamodb::Client,
    /// S3 (path-style addressing: works with moto, VPC endpoints and AWS alike).
    pub s3: aws_sdk_s3::Client,
    /// Secrets Manager.
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// Build the clients.
    pub async fn new(settings: &AwsSettings) -> Self {
        let config = sdk_config(settings).await;
        let mut dynamo = aws_sdk_dynamodb::config::Builder::from(&config);
        if let Some(e) = &settings.endpoint_dynamodb {
            dynamo = dynamo.endpoint_url(e);
        }
        let mut s3 = aws_sdk_s3::config::Builder::from(&config).force_path_style(true);
        if let Some(e) = &settings.endpoint_s3 {
            s3 = s3.endpoint_url(e);
        }
        let mut secrets = aws_sdk_secretsmanager::config::Builder::from(&config);
        if let Some(e) = &settings.endpoint_secretsmanager {
            secrets = secrets.endpoint_url(e);
        }
        Self {
            dynamo: aws_sdk_dynamodb::Client::from_conf(dynamo.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            secrets: aws_sdk_secretsmanager::Client::from_conf(secrets.build()),
        }
    }
}

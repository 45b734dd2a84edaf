//! Secret envelopes in AWS Secrets Manager, one secret per install under the Kelp prefix
//! (`{prefix}{reference}`), the envelope JSON as the secret string. The function's IAM policy
//! is limited to that prefix.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use super::{SecretEnvelope, SecretSource, SecretsError};
use crate::aws::{describe, is_unavailable};

/// Envelopes in Secrets Manager.
pub struct SecretsManagerSource {
    client: Client,
    prefix: String,
}

impl SecretsManagerSource {
    /// Secrets named `{prefix}{reference}`.
    pub fn new(client: Client, prefix: String) -> Self {
        Self { client, prefix }
    }

    fn name(&self, secret_ref: &str) -> String {
        format!("{}{secret_ref}", self.prefix)
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn fetch(&self, secret_ref: &str) -> Result<SecretEnvelope, SecretsError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(self.name(secret_ref))
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) {
                    SecretsError::NotFound
                } else if is_unavailable(&e) {
                    SecretsError::Unavailable(describe(&e))
                } else {
                    // Access denied, KMS failure: the service answered, but we cannot read.
                    SecretsError::Unavailable(format!("Secrets Manager refused: {}", describe(&e)))
                }
            })?;
        let text = out.secret_string().ok_or_else(|| SecretsError::Invalid("secret has no string value".into()))?;
        serde_json::from_str(text).map_err(|_| SecretsError::Invalid("secret string is not an envelope".into()))
    }

    async fn store(&self, secret_ref: &str, envelope: &SecretEnvelope) -> Result<(), SecretsError> {
        let body = serde_json::to_string(envelope).expect("serialising an envelope");
        let name = self.name(secret_ref);
        let put = self.client.put_secret_value().secret_id(&name).secret_string(&body).send().await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => self
                .client
                .create_secret()
                .name(&name)
                .secret_string(&body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| SecretsError::Unavailable(describe(&e))),
            Err(e) => Err(SecretsError::Unavailable(describe(&e))),
        }
    }

    async fn delete(&self, secret_ref: &str) -> Result<(), SecretsError> {
        let deleted = self
            .client
            .delete_secret()
            .secret_id(self.name(secret_ref))
            .force_delete_without_recovery(true)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(SecretsError::Unavailable(describe(&e))),
        }
    }
}

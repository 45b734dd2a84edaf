//! `secrets` host functions. Secrets were resolved before the call; an expired envelope is
//! refused at every `get`, even mid-call.

use crate::bindings::alga::extension::secrets;
use crate::bindings::types::SecretError;
use crate::host::{HostState, SecretsState};
use crate::manifest::CAP_SECRETS_GET;

impl secrets::Host for HostState {
    async fn get(&mut self, key: String) -> Result<String, SecretError> {
        if !self.inv.can(CAP_SECRETS_GET) {
            return Err(SecretError::Denied);
        }
        let resolved = match &self.inv.secrets {
            SecretsState::None => return Err(SecretError::Missing),
            SecretsState::Broken => return Err(SecretError::Internal),
            SecretsState::Ready(r) => r,
        };
        if resolved.expired() {
            self.inv.debug.host_warning("secrets.get: the secret envelope has expired");
            return Err(SecretError::Expired);
        }
        resolved.values.0.get(&key).cloned().ok_or(SecretError::Missing)
    }

    async fn list_keys(&mut self) -> Vec<String> {
        match &self.inv.secrets {
            SecretsState::Ready(r) if self.inv.can(CAP_SECRETS_GET) && !r.expired() => {
                r.values.0.keys().cloned().collect()
            }
            _ => Vec::new(),
        }
    }
}

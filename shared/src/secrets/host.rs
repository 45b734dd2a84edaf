//! `secrets` host functions. Secrets were resolved before the call; an expired envelope is
//! refused at every `get`, even mid-call.

use super::SecretsState;
use crate::bindings::alga::extension::secrets;
use crate::bindings::types::SecretError;
use crate::debug::DebugSink;

/// The per-call state of the secrets capability.
pub struct SecretsCtx {
    /// Whether the call may read secrets (`cap:secrets.get`), decided when it was planned.
    pub granted: bool,
    /// The install's secrets, resolved before the call.
    pub state: SecretsState,
    /// Host warnings of this call.
    pub debug: DebugSink,
}

impl secrets::Host for SecretsCtx {
    async fn get(&mut self, key: String) -> Result<String, SecretError> {
        if !self.granted {
            self.debug.capability_denied("secrets.get", crate::manifest::CAP_SECRETS_GET);
            return Err(SecretError::Denied);
        }
        let resolved = match &self.state {
            SecretsState::None => return Err(SecretError::Missing),
            SecretsState::Broken => return Err(SecretError::Internal),
            SecretsState::Ready(r) => r,
        };
        if resolved.expired() {
            self.debug.host_warning("secrets.get: the secret envelope has expired");
            return Err(SecretError::Expired);
        }
        resolved.values.0.get(&key).cloned().ok_or(SecretError::Missing)
    }

    async fn list_keys(&mut self) -> Vec<String> {
        match &self.state {
            SecretsState::Ready(r) if self.granted && !r.expired() => r.values.0.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

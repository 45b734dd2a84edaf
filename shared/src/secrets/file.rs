//! Local secret envelopes: one JSON file mapping a secret reference to its envelope (the
//! embedded default). Written atomically (temp file + rename).

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{SecretEnvelope, SecretSource, SecretsError};

/// Envelopes in a JSON file (or only in memory, for tests).
pub struct FileSecrets {
    path: Option<PathBuf>,
    // Serialises writers within the process and caches the file for readers.
    state: Mutex<BTreeMap<String, SecretEnvelope>>,
}

impl FileSecrets {
    /// Envelopes in `path` (created on first write).
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("secrets file {} is not valid JSON: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(Self { path: Some(path), state: Mutex::new(state) })
    }

    /// Envelopes held in memory only.
    pub fn in_memory() -> Self {
        Self { path: None, state: Mutex::new(BTreeMap::new()) }
    }
}

#[async_trait]
impl SecretSource for FileSecrets {
    async fn fetch(&self, secret_ref: &str) -> Result<SecretEnvelope, SecretsError> {
        self.state.lock().get(secret_ref).cloned().ok_or(SecretsError::NotFound)
    }

    async fn store(&self, secret_ref: &str, envelope: &SecretEnvelope) -> Result<(), SecretsError> {
        self.change(|next| {
            next.insert(secret_ref.to_string(), envelope.clone());
        })
    }

    async fn delete(&self, secret_ref: &str) -> Result<(), SecretsError> {
        self.change(|next| {
            next.remove(secret_ref);
        })
    }
}

impl FileSecrets {
    /// Apply `edit` to a copy, write the file, then publish the copy: a failed write changes
    /// nothing.
    fn change(&self, edit: impl FnOnce(&mut BTreeMap<String, SecretEnvelope>)) -> Result<(), SecretsError> {
        let mut state = self.state.lock();
        let mut next = state.clone();
        edit(&mut next);
        if let Some(path) = &self.path {
            let json = serde_json::to_vec_pretty(&next).expect("serialising envelopes");
            crate::fsutil::write_atomic(path, &json)
                .map_err(|e| SecretsError::Unavailable(format!("writing the secrets file: {e}")))?;
        }
        *state = next;
        Ok(())
    }
}

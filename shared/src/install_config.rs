//! `kelp:extension/config`: an install's own config map and its version label (A2). No
//! capability is needed: the config is the install's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bindings::kelp::extension::config;

/// The per-call state of the config capability.
pub struct InstallConfigCtx {
    /// The config map.
    pub values: Arc<BTreeMap<String, String>>,
    /// Its version label.
    pub version: String,
}

impl config::Host for InstallConfigCtx {
    async fn get(&mut self, key: String) -> Option<String> {
        self.values.get(&key).cloned()
    }
    async fn entries(&mut self) -> Vec<(String, String)> {
        self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    async fn version(&mut self) -> String {
        self.version.clone()
    }
}

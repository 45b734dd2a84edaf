//! `kelp:extension/config`: an install's own config map and its version label (A2). No
//! capability is needed: the config is the install's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bindings::kelp::extension::config;
use crate::manifest::DEV_SOURCE_KEY;

/// The per-call state of the config capability.
pub struct InstallConfigCtx {
    /// The config map.
    pub values: Arc<BTreeMap<String, String>>,
    /// Its version label.
    pub version: String,
    /// The source of a `kelp dev` version, answered as [`DEV_SOURCE_KEY`] to the loader that
    /// runs it (not listed by `entries`: it is not the install's config).
    pub dev_source: Option<Arc<str>>,
}

impl config::Host for InstallConfigCtx {
    async fn get(&mut self, key: String) -> Option<String> {
        match &self.dev_source {
            Some(source) if key == DEV_SOURCE_KEY => Some(source.to_string()),
            _ => self.values.get(&key).cloned(),
        }
    }
    async fn entries(&mut self) -> Vec<(String, String)> {
        self.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    async fn version(&mut self) -> String {
        self.version.clone()
    }
}

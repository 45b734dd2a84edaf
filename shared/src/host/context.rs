//! `context`, `logging`, `user`, `user-v2` and `kelp:extension/config`.

use crate::bindings::alga::extension::{context, logging, user, user_v2};
use crate::bindings::kelp::extension::config;
use crate::bindings::types::{self, ContextData, UserData, UserDataV2, UserError};
use crate::host::HostState;
use crate::manifest::{CAP_LOG_EMIT, CAP_USER_READ};

impl types::Host for HostState {}

impl context::Host for HostState {
    /// A1: `install-id` is always set by Kelp (Alga's runner sometimes left it empty).
    async fn get_context(&mut self) -> ContextData {
        let ids = &self.inv.ids;
        ContextData {
            request_id: Some(ids.request_id.clone()),
            tenant_id: ids.tenant_id.clone(),
            extension_id: ids.extension_id.clone(),
            install_id: Some(ids.install_id.clone()),
            version_id: Some(ids.version_id.clone()),
        }
    }
}

impl HostState {
    fn log(&mut self, level: &str, message: String) {
        if self.inv.can(CAP_LOG_EMIT) {
            self.stdio.log(level, message);
        }
    }
}

impl logging::Host for HostState {
    async fn log_info(&mut self, message: String) {
        self.log("info", message);
    }
    async fn log_warn(&mut self, message: String) {
        self.log("warn", message);
    }
    async fn log_error(&mut self, message: String) {
        self.log("error", message);
    }
}

impl HostState {
    /// The caller, if `cap:user.read` is granted and the execution has one.
    fn user_info(&self) -> Result<&crate::host::UserInfo, UserError> {
        if !self.inv.can(CAP_USER_READ) {
            return Err(UserError::NotAllowed);
        }
        self.inv.user.as_ref().ok_or(UserError::NotAvailable)
    }
}

impl user::Host for HostState {
    async fn get_user(&mut self) -> Result<UserData, UserError> {
        let u = self.user_info()?;
        Ok(UserData {
            tenant_id: self.inv.ids.tenant_id.clone(),
            client_name: u.client_name.clone(),
            user_id: u.user_id.clone(),
            user_email: u.user_email.clone(),
            user_name: u.user_name.clone(),
            user_type: u.user_type.clone(),
        })
    }
}

impl user_v2::Host for HostState {
    async fn get_user(&mut self) -> Result<UserDataV2, UserError> {
        let u = self.user_info()?;
        Ok(UserDataV2 {
            tenant_id: self.inv.ids.tenant_id.clone(),
            client_name: u.client_name.clone(),
            user_id: u.user_id.clone(),
            user_email: u.user_email.clone(),
            user_name: u.user_name.clone(),
            user_type: u.user_type.clone(),
            client_id: u.client_id.clone(),
            additional_fields: u.additional_fields.clone(),
        })
    }
}

/// An install's config is its own: no capability needed.
impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        self.inv.config.get(&key).cloned()
    }
    async fn entries(&mut self) -> Vec<(String, String)> {
        self.inv.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
    async fn version(&mut self) -> String {
        self.inv.config_version.clone()
    }
}

//! The context capabilities: `context` (always), `user` and `user-v2` (with `cap:user.read`),
//! and the `types` interface they share.

use crate::bindings::alga::extension::{context, user, user_v2};
use crate::bindings::types::{self, ContextData, UserData, UserDataV2, UserError};
use crate::ids::{ExecIds, UserInfo};

/// The per-call state of the context capabilities.
pub struct ContextCtx {
    /// Ids of the call.
    pub ids: ExecIds,
    /// The caller, if the call has one.
    pub user: Option<UserInfo>,
    /// Whether the call may read the caller (`cap:user.read`), decided when it was planned.
    pub user_granted: bool,
    /// Host warnings of this call.
    pub debug: crate::debug::DebugSink,
}

impl types::Host for ContextCtx {}

impl context::Host for ContextCtx {
    /// A1: `install-id` is always set by Kelp (Alga's runner sometimes left it empty).
    async fn get_context(&mut self) -> ContextData {
        let ids = &self.ids;
        ContextData {
            request_id: Some(ids.request_id.clone()),
            tenant_id: ids.tenant_id.clone(),
            extension_id: ids.extension_id.clone(),
            install_id: Some(ids.install_id.clone()),
            version_id: Some(ids.version_id.clone()),
        }
    }
}

impl ContextCtx {
    /// The caller, if `cap:user.read` is granted and the execution has one.
    fn user_info(&self) -> Result<&UserInfo, UserError> {
        if !self.user_granted {
            self.debug.capability_denied("user.get-user", crate::manifest::CAP_USER_READ);
            return Err(UserError::NotAllowed);
        }
        self.user.as_ref().ok_or(UserError::NotAvailable)
    }
}

impl user::Host for ContextCtx {
    async fn get_user(&mut self) -> Result<UserData, UserError> {
        let u = self.user_info()?;
        Ok(UserData {
            tenant_id: self.ids.tenant_id.clone(),
            client_name: u.client_name.clone(),
            user_id: u.user_id.clone(),
            user_email: u.user_email.clone(),
            user_name: u.user_name.clone(),
            user_type: u.user_type.clone(),
        })
    }
}

impl user_v2::Host for ContextCtx {
    async fn get_user(&mut self) -> Result<UserDataV2, UserError> {
        let u = self.user_info()?;
        Ok(UserDataV2 {
            tenant_id: self.ids.tenant_id.clone(),
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

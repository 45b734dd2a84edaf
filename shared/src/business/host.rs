//! Host trait impls of the business interfaces.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::{Caller, HostApi, HostApiError};
use crate::bindings::alga::extension::{clients, invoicing, scheduler, services, ui_proxy};
use crate::bindings::types::*;
use crate::debug::DebugSink;
use crate::ids::{ExecIds, UserInfo};
use crate::manifest::Endpoint;
use crate::manifest::{
    CAP_CLIENT_READ, CAP_INVOICE_MANUAL_CREATE, CAP_SCHEDULER_MANAGE, CAP_SERVICE_READ, CAP_UI_PROXY,
};

/// Host API calls one execution may make.
pub const MAX_HOST_API_CALLS: u32 = 32;

/// Why a business call did not reach or satisfy the host API.
enum Refusal {
    /// Capability not granted, or no host API configured.
    NotAllowed,
    /// The host API answered with an error.
    Api(HostApiError),
}

/// The per-call state of the business capabilities (ui-proxy, scheduler, invoicing, clients,
/// services).
pub struct BusinessCtx {
    /// The business capabilities granted to the call (decided when it was planned).
    pub granted: BTreeSet<String>,
    /// The PSA's host API, if configured.
    pub host_api: Option<Arc<dyn HostApi>>,
    /// Ids of the call, sent with every host API call.
    pub ids: ExecIds,
    /// The caller, sent with every host API call.
    pub user: Option<UserInfo>,
    /// The install's `api_key` secret, when ui-proxy is granted (Alga's ui-proxy sends it).
    pub api_key: Option<String>,
    /// The version's declared endpoints (`scheduler.get-endpoints`).
    pub endpoints: Arc<[Endpoint]>,
    /// Host API calls made so far in this call.
    pub calls: u32,
    /// Wall-clock deadline of the call.
    pub deadline: Instant,
    /// Host warnings of this call.
    pub debug: DebugSink,
}

impl BusinessCtx {
    fn can(&self, cap: &str) -> bool {
        self.granted.contains(cap)
    }

    fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Call the host API if `cap` is granted and an API is configured, and decode the answer.
    async fn business<T: DeserializeOwned>(
        &mut self,
        cap: &str,
        operation: &str,
        payload: Value,
    ) -> Result<T, Refusal> {
        if !self.can(cap) {
            self.debug.capability_denied(operation, cap);
            return Err(Refusal::NotAllowed);
        }
        let Some(api) = self.host_api.clone() else {
            self.debug.host_warning(format!("{operation}: denied (no host API is configured)"));
            return Err(Refusal::NotAllowed);
        };
        // Each call is a network round trip on the PSA's side: a guest gets a bounded number.
        if self.calls >= MAX_HOST_API_CALLS {
            self.debug.host_warning(format!(
                "{operation}: refused, more than {MAX_HOST_API_CALLS} host API calls in one request"
            ));
            return Err(Refusal::Api(HostApiError::Failed("too many host API calls".into())));
        }
        self.calls += 1;
        let caller = Caller { ids: &self.ids, user: self.user.as_ref(), api_key: self.api_key.as_deref() };
        let answer = api.call(&caller, operation, payload, self.remaining()).await.map_err(|e| {
            self.debug.host_warning(format!("{operation}: {e}"));
            Refusal::Api(e)
        })?;
        serde_json::from_value(answer).map_err(|e| {
            self.debug.host_warning(format!("{operation}: malformed host API answer: {e}"));
            Refusal::Api(HostApiError::Failed("malformed answer".into()))
        })
    }
}

fn text(e: &Refusal) -> String {
    match e {
        Refusal::NotAllowed => "not allowed".into(),
        Refusal::Api(e) => e.to_string(),
    }
}

impl ui_proxy::Host for BusinessCtx {
    async fn call_route(&mut self, route: String, payload: Option<Vec<u8>>) -> Result<Vec<u8>, ProxyError> {
        use base64::Engine as _;
        let body = payload.map(|p| base64::engine::general_purpose::STANDARD.encode(p));
        #[derive(serde::Deserialize)]
        struct Answer {
            body_b64: String,
        }
        match self
            .business::<Answer>(CAP_UI_PROXY, "ui-proxy.call-route", json!({"route": route, "body_b64": body}))
            .await
        {
            Ok(a) => base64::engine::general_purpose::STANDARD.decode(a.body_b64).map_err(|_| ProxyError::Internal),
            Err(Refusal::NotAllowed)
            | Err(Refusal::Api(HostApiError::Denied))
            | Err(Refusal::Api(HostApiError::QuotaExceeded)) => Err(ProxyError::Denied),
            Err(Refusal::Api(HostApiError::NotFound)) => Err(ProxyError::RouteNotFound),
            Err(Refusal::Api(HostApiError::BadRequest(_))) => Err(ProxyError::BadRequest),
            Err(Refusal::Api(HostApiError::Failed(_))) => Err(ProxyError::Internal),
        }
    }
}

fn scheduler_error(e: Refusal) -> SchedulerError {
    match e {
        Refusal::NotAllowed | Refusal::Api(HostApiError::Denied) => SchedulerError::Denied,
        Refusal::Api(HostApiError::NotFound) => SchedulerError::NotFound,
        Refusal::Api(HostApiError::BadRequest(_)) => SchedulerError::ValidationFailed,
        Refusal::Api(HostApiError::QuotaExceeded) => SchedulerError::QuotaExceeded,
        Refusal::Api(HostApiError::Failed(_)) => SchedulerError::Internal,
    }
}

impl scheduler::Host for BusinessCtx {
    async fn list_schedules(&mut self) -> Result<Vec<ScheduleInfo>, SchedulerError> {
        self.business(CAP_SCHEDULER_MANAGE, "scheduler.list", json!({})).await.map_err(scheduler_error)
    }

    async fn get_schedule(&mut self, schedule_id: String) -> Result<Option<ScheduleInfo>, SchedulerError> {
        match self.business(CAP_SCHEDULER_MANAGE, "scheduler.get", json!({"schedule_id": schedule_id})).await {
            Ok(s) => Ok(Some(s)),
            Err(Refusal::Api(HostApiError::NotFound)) => Ok(None),
            Err(e) => Err(scheduler_error(e)),
        }
    }

    async fn create_schedule(&mut self, input: CreateScheduleInput) -> CreateScheduleResult {
        let payload = serde_json::to_value(&input).unwrap_or(Value::Null);
        self.business(CAP_SCHEDULER_MANAGE, "scheduler.create", payload).await.unwrap_or_else(|e| {
            CreateScheduleResult { success: false, schedule_id: None, error: Some(text(&e)), field_errors: None }
        })
    }

    async fn update_schedule(&mut self, schedule_id: String, input: UpdateScheduleInput) -> UpdateScheduleResult {
        let payload = json!({"schedule_id": schedule_id, "input": input});
        self.business(CAP_SCHEDULER_MANAGE, "scheduler.update", payload)
            .await
            .unwrap_or_else(|e| UpdateScheduleResult { success: false, error: Some(text(&e)), field_errors: None })
    }

    async fn delete_schedule(&mut self, schedule_id: String) -> DeleteScheduleResult {
        self.business(CAP_SCHEDULER_MANAGE, "scheduler.delete", json!({"schedule_id": schedule_id}))
            .await
            .unwrap_or_else(|e| DeleteScheduleResult { success: false, error: Some(text(&e)) })
    }

    /// Answered from the manifest: the version's declared endpoints.
    async fn get_endpoints(&mut self) -> Result<Vec<EndpointInfo>, SchedulerError> {
        if !self.can(CAP_SCHEDULER_MANAGE) {
            self.debug.capability_denied("scheduler.get-endpoints", CAP_SCHEDULER_MANAGE);
            return Err(SchedulerError::Denied);
        }
        Ok(self
            .endpoints
            .iter()
            .map(|e| EndpointInfo {
                id: format!("{} {}", e.method, e.path),
                method: e.method.clone(),
                path: e.path.clone(),
                handler: e.handler.clone(),
                schedulable: e.is_schedulable(),
            })
            .collect())
    }
}

impl invoicing::Host for BusinessCtx {
    async fn create_manual_invoice(&mut self, input: CreateManualInvoiceInput) -> CreateManualInvoiceResult {
        let payload = serde_json::to_value(&input).unwrap_or(Value::Null);
        self.business(CAP_INVOICE_MANUAL_CREATE, "invoicing.create-manual-invoice", payload).await.unwrap_or_else(|e| {
            CreateManualInvoiceResult {
                success: false,
                invoice_id: None,
                invoice_number: None,
                status: None,
                subtotal: None,
                tax: None,
                total: None,
                error: Some(text(&e)),
                field_errors: None,
            }
        })
    }
}

impl clients::Host for BusinessCtx {
    async fn list_clients(&mut self, input: ClientsListInput) -> Result<ClientsListResult, ClientReadError> {
        let payload = serde_json::to_value(&input).unwrap_or(Value::Null);
        self.business(CAP_CLIENT_READ, "clients.list", payload).await.map_err(client_error)
    }

    async fn get_client(&mut self, client_id: String) -> Result<Option<ClientSummary>, ClientReadError> {
        match self.business(CAP_CLIENT_READ, "clients.get", json!({"client_id": client_id})).await {
            Ok(c) => Ok(Some(c)),
            Err(Refusal::Api(HostApiError::NotFound)) => Ok(None),
            Err(e) => Err(client_error(e)),
        }
    }
}

fn client_error(e: Refusal) -> ClientReadError {
    match e {
        Refusal::NotAllowed | Refusal::Api(HostApiError::Denied) => ClientReadError::NotAllowed,
        Refusal::Api(HostApiError::BadRequest(_)) => ClientReadError::InvalidInput,
        Refusal::Api(_) => ClientReadError::Internal,
    }
}

impl services::Host for BusinessCtx {
    async fn list_services(&mut self, input: ServicesListInput) -> Result<ServicesListResult, ServiceReadError> {
        let payload = serde_json::to_value(&input).unwrap_or(Value::Null);
        self.business(CAP_SERVICE_READ, "services.list", payload).await.map_err(service_error)
    }

    async fn get_service(&mut self, service_id: String) -> Result<Option<ServiceSummary>, ServiceReadError> {
        match self.business(CAP_SERVICE_READ, "services.get", json!({"service_id": service_id})).await {
            Ok(s) => Ok(Some(s)),
            Err(Refusal::Api(HostApiError::NotFound)) => Ok(None),
            Err(e) => Err(service_error(e)),
        }
    }
}

fn service_error(e: Refusal) -> ServiceReadError {
    match e {
        Refusal::NotAllowed | Refusal::Api(HostApiError::Denied) => ServiceReadError::NotAllowed,
        Refusal::Api(HostApiError::BadRequest(_)) => ServiceReadError::InvalidInput,
        Refusal::Api(_) => ServiceReadError::Internal,
    }
}

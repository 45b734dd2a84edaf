//! `/admin/plans`, `/admin/tenants/{tenant}/plan` and `/admin/usage`: the operator's plans,
//! which tenant is on which, and what each install used.

use super::common::*;
use super::Admin;
use crate::limits::{LimitSet, DEFAULT_PLAN};
use crate::plans::{self, PlanRecord};
use crate::usage::{self, UsageQuery};

fn plan_view(platform: &Platform, plan: &PlanRecord) -> Value {
    json!({
        "name": plan.name,
        "limits": plan.limits,
        "effective": plans::limits_of(platform, Some(plan)).view(),
        "revision": plan.revision,
        "updated_at": plan.updated_at,
    })
}

fn default_plan_view(platform: &Platform) -> Value {
    json!({
        "name": DEFAULT_PLAN,
        "limits": {},
        "effective": platform.plan_defaults.view(),
        "builtin": true,
        "description": "the deployment's settings: the plan of every tenant not assigned another",
    })
}

pub(super) async fn list_plans(State(admin): State<Arc<Admin>>, caller: Caller) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, &[PERM_PLATFORM_OPS], "read plans").await?;
    let mut items = vec![default_plan_view(platform)];
    items.extend(plans::list_plans(platform).await?.iter().map(|p| plan_view(platform, p)));
    Ok(Json(json!({"items": items})).into_response())
}

pub(super) async fn get_plan(State(admin): State<Arc<Admin>>, caller: Caller, Path(name): Path<String>) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, &[PERM_PLATFORM_OPS], "read plans").await?;
    if name == DEFAULT_PLAN {
        return Ok(Json(default_plan_view(platform)).into_response());
    }
    let plan =
        plans::get_plan(platform, &name).await?.ok_or_else(|| ApiError::not_found(format!("plan {name} not found")))?;
    Ok(Json(plan_view(platform, &plan)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanBody {
    limits: LimitSet,
}

pub(super) async fn put_plan(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(name): Path<String>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, &[PERM_PLATFORM_OPS], "manage plans").await?;
    let req: PlanBody = parse_json(&body)?;
    let tenant = m.tenant(None).await?;
    m.run(&tenant, &body, || async {
        let (plan, updated) = plans::put_plan(platform, &name, req.limits).await?;
        let mut view = plan_view(platform, &plan);
        view["installs_updated"] = json!(updated);
        let status = if plan.revision == 1 { StatusCode::CREATED } else { StatusCode::OK };
        let details = json!({"limits": plan.limits, "revision": plan.revision, "installs_updated": updated});
        Ok(Done::new(status, view).audited(None, "plan.put", Some(&name), details))
    })
    .await
}

pub(super) async fn delete_plan(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(name): Path<String>,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, &[PERM_PLATFORM_OPS], "manage plans").await?;
    let tenant = m.tenant(None).await?;
    m.run(&tenant, &[], || async {
        plans::delete_plan(platform, &name).await?;
        Ok(Done::new(StatusCode::OK, json!({"deleted": name})).audited(None, "plan.delete", Some(&name), json!({})))
    })
    .await
}

/// A tenant's plan and the limits it gives (a tenant admin may read its own).
pub(super) async fn get_tenant_plan(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, &[PERM_PLATFORM_OPS, PERM_EXTENSION_MANAGE], "read the tenant's plan").await?;
    let tenant = caller.tenant(platform, Some(&tenant)).await?;
    let limits = plans::limits_of(platform, plans::tenant_plan(platform, &tenant).await?.as_ref());
    Ok(Json(json!({"tenant": tenant, "plan": limits.plan, "effective": limits.view()})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    plan: String,
}

pub(super) async fn put_tenant_plan(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    meta: Meta,
    Path(tenant): Path<String>,
    LimitedBytes(body): LimitedBytes,
) -> Answer {
    let platform = &admin.platform;
    let m = Mutation::begin(&admin, &caller, &meta, &[PERM_PLATFORM_OPS], "assign plans").await?;
    let req: AssignBody = parse_json(&body)?;
    let tenant = m.tenant(Some(&tenant)).await?;
    m.run(&tenant, &body, || async {
        let updated = plans::assign(platform, &tenant, Some(&req.plan)).await?;
        let answer = json!({"tenant": tenant, "plan": req.plan, "installs_updated": updated});
        let details = json!({"plan": req.plan, "installs_updated": updated});
        Ok(Done::new(StatusCode::OK, answer).audited(Some(&tenant), "tenant.plan", Some(&tenant), details))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct UsageParams {
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    install: Option<String>,
    #[serde(default)]
    extension: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

/// An hour label (`YYYY-MM-DDTHH`) from `YYYY-MM-DD`, `YYYY-MM-DDTHH` or an RFC 3339 time.
fn hour_of(text: &str, name: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("{name} must be YYYY-MM-DD, YYYY-MM-DDTHH or an RFC 3339 time (UTC)"));
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H").to_string());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.format("%Y-%m-%dT00").to_string());
    }
    chrono::NaiveDateTime::parse_from_str(&format!("{text}:00"), "%Y-%m-%dT%H:%M").map_err(|_| bad())?;
    Ok(text.to_string())
}

/// Usage per install and hour, with totals. Operators see any tenant (every tenant when none
/// is named, at most 31 days at a time); a tenant's admin sees its own.
pub(super) async fn query_usage(
    State(admin): State<Arc<Admin>>,
    caller: Caller,
    Query(q): Query<UsageParams>,
) -> Answer {
    let platform = &admin.platform;
    caller.require(platform, &[PERM_PLATFORM_OPS, PERM_EXTENSION_MANAGE], "read usage").await?;
    let tenant = match (&q.tenant, caller.identity.has(PERM_PLATFORM_OPS)) {
        (None, true) => None,
        (requested, _) => Some(caller.tenant(platform, requested.as_deref()).await?),
    };
    let now = chrono::Utc::now();
    let from = match &q.from {
        Some(f) => hour_of(f, "from")?,
        None => now.format("%Y-%m-01T00").to_string(),
    };
    let to = match &q.to {
        Some(t) => hour_of(t, "to")?,
        None => (now + chrono::Duration::hours(1)).format("%Y-%m-%dT%H").to_string(),
    };
    if from >= to {
        return Err(ApiError::bad_request(format!("from ({from}) must be before to ({to})")));
    }
    let query = UsageQuery { tenant, install: q.install, extension: q.extension, from, to };
    let rows = platform.usage_store.query(&query).await.map_err(|e| match e {
        crate::stores::StoreError::Internal(m) if m.starts_with("more than") => ApiError::bad_request(format!(
            "without a tenant, usage is read at most {} days at a time ({m})",
            usage::dynamodb::MAX_HOURS_ALL_TENANTS / 24
        )),
        other => other.into(),
    })?;
    if q.format.as_deref() == Some("csv") {
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8")], usage_csv(&rows)).into_response());
    }
    Ok(Json(json!({
        "from": query.from,
        "to": query.to,
        "rows": rows,
        "totals": usage::totals(&rows),
    }))
    .into_response())
}

/// One line per install and hour, the counters as columns (error and refusal codes as
/// `errors.<code>` / `refusals.<code>`, only those that occur).
fn usage_csv(rows: &[usage::UsageRow]) -> String {
    let mut codes = std::collections::BTreeSet::new();
    for row in rows {
        codes.extend(row.counters.errors.keys().map(|c| ("errors", c.as_str())));
        codes.extend(row.counters.refusals.keys().map(|c| ("refusals", c.as_str())));
    }
    let csv_field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = String::from("tenant_id,install_id,extension_id,hour");
    for (name, _) in usage::Counters::default().fields() {
        out.push_str(&format!(",{name}"));
    }
    for (kind, code) in &codes {
        out.push_str(&format!(",{kind}.{code}"));
    }
    out.push('\n');
    for r in rows {
        let c = &r.counters;
        out.push_str(&[&r.tenant_id, &r.install_id, &r.extension_id, &r.hour].map(|s| csv_field(s)).join(","));
        for (_, n) in c.fields() {
            out.push_str(&format!(",{n}"));
        }
        for (kind, code) in &codes {
            let by_code = if *kind == "errors" { &c.errors } else { &c.refusals };
            out.push_str(&format!(",{}", by_code.get(*code).copied().unwrap_or(0)));
        }
        out.push('\n');
    }
    out
}

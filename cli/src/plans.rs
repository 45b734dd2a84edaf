//! `kelp plans …`, `kelp limits` and `kelp usage`: tenant plans, an install's own limits and
//! metered usage, over the admin API.

use anyhow::{Context as _, Result};
use serde_json::{json, Map, Value};

use crate::admin::Remote;

/// Limit pairs (`timeout_ms=200`, `warm_reuse=false`, `egress_calls=` to remove) applied to
/// a JSON object of limits.
fn apply_pairs(limits: &mut Map<String, Value>, pairs: &[(String, String)]) -> Result<()> {
    for (key, value) in pairs {
        let value = value.trim();
        if value.is_empty() {
            limits.remove(key);
            continue;
        }
        let parsed = match value {
            "true" | "false" => Value::Bool(value == "true"),
            n => Value::from(
                n.parse::<u64>().with_context(|| format!("{key}={n}: expected a whole number, true or false"))?,
            ),
        };
        limits.insert(key.clone(), parsed);
    }
    Ok(())
}

/// One line per limit, `name  value`.
fn print_limits(limits: &Value) {
    if let Some(map) = limits.as_object() {
        for (name, value) in map {
            let shown = if value.is_null() { "no limit".to_string() } else { value.to_string() };
            println!("  {name:<28} {shown}");
        }
    }
}

/// `kelp plans list`.
pub async fn list(remote: &Remote) -> Result<()> {
    let plans = remote.json(reqwest::Method::GET, "/admin/plans", Value::Null).await?;
    for plan in plans["items"].as_array().into_iter().flatten() {
        let set = plan["limits"].as_object().map(|m| m.len()).unwrap_or(0);
        let what = if plan["builtin"] == true {
            "the deployment's settings".to_string()
        } else {
            format!("{set} limit(s) set, revision {}", plan["revision"])
        };
        println!("{}  ({what})", plan["name"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `kelp plans show`.
pub async fn show(remote: &Remote, name: &str) -> Result<()> {
    let plan = remote.json(reqwest::Method::GET, &format!("/admin/plans/{name}"), Value::Null).await?;
    println!("plan {name} (effective limits; unset ones are the default plan's):");
    print_limits(&plan["effective"]);
    Ok(())
}

/// `kelp plans set`: the plan's limits with `pairs` applied (the plan is created if new).
pub async fn set(remote: &Remote, name: &str, pairs: &[(String, String)]) -> Result<()> {
    let current = remote.json(reqwest::Method::GET, &format!("/admin/plans/{name}"), Value::Null).await;
    let mut limits = match current {
        Ok(plan) => plan["limits"].as_object().cloned().unwrap_or_default(),
        Err(e) if e.to_string().starts_with("404") => Map::new(),
        Err(e) => return Err(e),
    };
    apply_pairs(&mut limits, pairs)?;
    let plan = remote.json(reqwest::Method::PUT, &format!("/admin/plans/{name}"), json!({"limits": limits})).await?;
    println!(
        "plan {name}: revision {}, applied to {} install(s)",
        plan["revision"],
        plan["installs_updated"].as_u64().unwrap_or(0)
    );
    print_limits(&plan["effective"]);
    Ok(())
}

/// `kelp plans delete`.
pub async fn delete(remote: &Remote, name: &str) -> Result<()> {
    remote.json(reqwest::Method::DELETE, &format!("/admin/plans/{name}"), Value::Null).await?;
    println!("plan {name} deleted");
    Ok(())
}

/// `kelp plans assign`.
pub async fn assign(remote: &Remote, tenant: &str, plan: &str) -> Result<()> {
    let answer =
        remote.json(reqwest::Method::PUT, &format!("/admin/tenants/{tenant}/plan"), json!({"plan": plan})).await?;
    println!(
        "tenant {tenant} is on plan {plan} (applied to {} install(s); their next request uses it)",
        answer["installs_updated"].as_u64().unwrap_or(0)
    );
    Ok(())
}

/// `kelp limits`: show an install's effective limits, or change its own (narrower) ones.
pub async fn install_limits(remote: &Remote, reference: &str, pairs: &[(String, String)]) -> Result<()> {
    let row = crate::admin::find_install(remote, reference).await?;
    let id = row.install["install_id"].as_str().context("install without an id")?.to_string();
    let install = if pairs.is_empty() {
        row.install
    } else {
        let mut overrides = row.install["limits"]["overrides"].as_object().cloned().unwrap_or_default();
        apply_pairs(&mut overrides, pairs)?;
        remote.json(reqwest::Method::PATCH, &format!("/admin/installs/{id}"), json!({"limits": overrides})).await?
    };
    let overrides = install["limits"]["overrides"].as_object().map(|m| m.len()).unwrap_or(0);
    println!(
        "{reference}: plan {}, {overrides} limit(s) of its own (install id {id}); effective limits:",
        install["plan"].as_str().unwrap_or("default")
    );
    print_limits(&install["limits"]["effective"]);
    Ok(())
}

/// What `kelp usage` asks for.
pub struct UsageFilter<'a> {
    /// First day or hour (`YYYY-MM-DD`, `YYYY-MM-DDTHH`, RFC 3339).
    pub from: Option<&'a str>,
    /// Day or hour after the last.
    pub to: Option<&'a str>,
    /// One extension (name, registry id or install id).
    pub install: Option<&'a str>,
    /// CSV, one line per install and hour (for billing export).
    pub csv: bool,
}

/// `kelp usage`: totals per install over a range (this month by default), or the CSV export.
pub async fn usage(remote: &Remote, filter: &UsageFilter<'_>) -> Result<()> {
    let mut query = Vec::new();
    if let Some(from) = filter.from {
        query.push(format!("from={from}"));
    }
    if let Some(to) = filter.to {
        query.push(format!("to={to}"));
    }
    if let Some(reference) = filter.install {
        let row = crate::admin::find_install(remote, reference).await?;
        query.push(format!("install={}", row.install["install_id"].as_str().unwrap_or_default()));
    }
    if filter.csv {
        query.push("format=csv".into());
    }
    let path = format!("/admin/usage?{}", query.join("&"));
    let answer = remote.json(reqwest::Method::GET, &path, Value::Null).await?;
    if let Value::String(csv) = answer {
        print!("{csv}");
        return Ok(());
    }
    let rows = answer["rows"].as_array().cloned().unwrap_or_default();
    println!(
        "usage {} … {} (UTC hours, end excluded)",
        answer["from"].as_str().unwrap_or("?"),
        answer["to"].as_str().unwrap_or("?")
    );
    if rows.is_empty() {
        println!("no usage recorded");
        return Ok(());
    }
    // Per install over the whole range.
    let mut per_install: std::collections::BTreeMap<(String, String), kelp_runtime::usage::Counters> =
        Default::default();
    for row in &rows {
        let row: kelp_runtime::usage::UsageRow = serde_json::from_value(row.clone())?;
        per_install.entry((row.tenant_id.clone(), row.install_id.clone())).or_default().add(&row.counters);
    }
    for ((tenant, install), c) in per_install {
        let failures: u64 = c.errors.values().sum();
        let refused: u64 = c.refusals.values().sum();
        println!(
            "{tenant}  install {install}: {} requests ({failures} failed, {refused} refused), {:.1} s wall, {} ms guest CPU, \
             peak {} MiB, {} fetches ({} bytes), {} storage ops, {} debug events, {} warm",
            c.requests,
            c.wall_us as f64 / 1e6,
            c.cpu_ms,
            c.peak_memory_bytes >> 20,
            c.egress_calls,
            c.egress_bytes,
            c.storage_ops,
            c.debug_events,
            c.warm_hits
        );
        for (code, n) in c.errors.iter().chain(c.refusals.iter()) {
            println!("    {code}: {n}");
        }
    }
    Ok(())
}

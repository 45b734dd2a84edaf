//! Operator metrics of tenant requests (issue 29): requests, errors, duration, module cache
//! tiers, warm-instance reuse and refusals by code, per extension. In Lambda each request
//! writes one CloudWatch Embedded Metric Format document to stdout (CloudWatch turns the log
//! line into metrics: no agent, no extra call); `kelp up` serves the running totals at
//! `/metrics` in the Prometheus text format. Dimensions are the function, the extension's
//! manifest name and the refusal code, all bounded sets; tenants and installs are not
//! dimensions (an unbounded set would be one metric each): per-tenant figures come from the
//! execution log lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

/// The CloudWatch namespace of Kelp's metrics.
pub const NAMESPACE: &str = "Kelp";

/// Upper bounds of the duration histogram, in milliseconds.
const BUCKETS_MS: [f64; 12] = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

/// One tenant request, as the gateway saw it.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// The extension's manifest name (`-` before it is known, e.g. a 401).
    pub extension: &'a str,
    /// `ok`, `error`, `timeout` or `policy_denied`.
    pub outcome: &'a str,
    /// The HTTP status answered.
    pub http_status: u16,
    /// Time from the request to the answer.
    pub duration: Duration,
    /// The module cache tier that had the component (`memory`, `disk`, `blob`, `compiled`),
    /// when the guest ran.
    pub tier: Option<&'a str>,
    /// Whether a warm instance served it.
    pub reused: bool,
    /// The error code of a refusal (4xx) or failure (5xx).
    pub code: Option<&'a str>,
}

impl Observation<'_> {
    fn is_error(&self) -> bool {
        self.http_status >= 500
    }

    fn is_refusal(&self) -> bool {
        (400..500).contains(&self.http_status)
    }

    /// A load that did not come from memory: the costly first requests.
    fn is_cold_load(&self) -> bool {
        matches!(self.tier, Some(t) if t != "memory")
    }
}

#[derive(Default)]
struct Series {
    requests: u64,
    errors: u64,
    duration_ms_sum: f64,
    /// Counts per bucket of [`BUCKETS_MS`] (not cumulative), then the overflow.
    buckets: [u64; BUCKETS_MS.len() + 1],
}

#[derive(Default)]
struct Totals {
    /// By extension, then outcome.
    by_extension: BTreeMap<String, BTreeMap<String, Series>>,
    refusals: BTreeMap<String, u64>,
    tiers: BTreeMap<String, u64>,
    reused: u64,
}

/// The entry of `key`, allocating its key only the first time: a request of a known
/// extension allocates nothing.
fn entry<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The running totals of a process.
#[derive(Default)]
pub struct Metrics {
    totals: Mutex<Totals>,
}

impl Metrics {
    /// Count one request.
    pub fn observe(&self, o: &Observation<'_>) {
        let ms = o.duration.as_secs_f64() * 1000.0;
        let bucket = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
        let mut t = self.totals.lock();
        let series = entry(entry(&mut t.by_extension, o.extension), o.outcome);
        series.requests += 1;
        series.errors += u64::from(o.is_error());
        series.duration_ms_sum += ms;
        series.buckets[bucket] += 1;
        if let (Some(code), true) = (o.code, o.is_refusal() || o.is_error()) {
            *entry(&mut t.refusals, code) += 1;
        }
        if let Some(tier) = o.tier {
            *entry(&mut t.tiers, tier) += 1;
        }
        t.reused += u64::from(o.reused);
    }

    /// The totals in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let t = self.totals.lock();
        let mut out = String::new();
        let label = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        header(&mut out, "kelp_requests_total", "counter", "Tenant requests answered, by extension and outcome.");
        for (ext, outcomes) in &t.by_extension {
            for (outcome, s) in outcomes {
                let (ext, outcome) = (label(ext), label(outcome));
                let _ =
                    writeln!(out, "kelp_requests_total{{extension=\"{ext}\",outcome=\"{outcome}\"}} {}", s.requests);
            }
        }
        header(&mut out, "kelp_errors_total", "counter", "Tenant requests answered 5xx, by extension.");
        for (ext, outcomes) in &t.by_extension {
            let errors: u64 = outcomes.values().map(|s| s.errors).sum();
            let _ = writeln!(out, "kelp_errors_total{{extension=\"{}\"}} {errors}", label(ext));
        }
        let duration = "kelp_request_duration_milliseconds";
        header(&mut out, duration, "histogram", "Time to answer a tenant request.");
        for (ext, outcomes) in &t.by_extension {
            let ext = label(ext);
            let mut buckets = [0u64; BUCKETS_MS.len() + 1];
            let (mut count, mut sum) = (0u64, 0f64);
            for s in outcomes.values() {
                count += s.requests;
                sum += s.duration_ms_sum;
                for (a, b) in buckets.iter_mut().zip(&s.buckets) {
                    *a += b;
                }
            }
            let mut cumulative = 0;
            for (bound, n) in BUCKETS_MS.iter().zip(&buckets) {
                cumulative += n;
                let _ = writeln!(out, "{duration}_bucket{{extension=\"{ext}\",le=\"{bound}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{duration}_bucket{{extension=\"{ext}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{duration}_sum{{extension=\"{ext}\"}} {sum}");
            let _ = writeln!(out, "{duration}_count{{extension=\"{ext}\"}} {count}");
        }
        header(&mut out, "kelp_refusals_total", "counter", "Requests refused (4xx) or failed (5xx), by error code.");
        for (code, n) in &t.refusals {
            let _ = writeln!(out, "kelp_refusals_total{{code=\"{}\"}} {n}", label(code));
        }
        let loads = "Components loaded for a request, by the cache tier that had them.";
        header(&mut out, "kelp_module_cache_loads_total", "counter", loads);
        for (tier, n) in &t.tiers {
            let _ = writeln!(out, "kelp_module_cache_loads_total{{tier=\"{}\"}} {n}", label(tier));
        }
        header(&mut out, "kelp_warm_instance_reuse_total", "counter", "Requests served by a warm instance.");
        let _ = writeln!(out, "kelp_warm_instance_reuse_total {}", t.reused);
        out
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One request as a CloudWatch Embedded Metric Format document, for a log line of `function`.
/// The metrics are aggregated by (Function, Extension) and by Function; refusals also by
/// (Function, Code).
pub fn emf(function: &str, o: &Observation<'_>, timestamp_ms: u128) -> Value {
    let metric = |name: &str, unit: &str| json!({"Name": name, "Unit": unit});
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Function", "Extension"], ["Function"]],
                    "Metrics": [
                        metric("Requests", "Count"),
                        metric("Errors", "Count"),
                        metric("Duration", "Milliseconds"),
                        metric("ColdLoads", "Count"),
                        metric("WarmReuse", "Count"),
                    ],
                },
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Function", "Code"]],
                    "Metrics": [metric("Refusals", "Count")],
                },
            ],
        },
        "Function": function,
        "Extension": o.extension,
        "Code": o.code.unwrap_or("none"),
        "Requests": 1,
        "Errors": u64::from(o.is_error()),
        "Duration": o.duration.as_secs_f64() * 1000.0,
        "ColdLoads": u64::from(o.is_cold_load()),
        "WarmReuse": u64::from(o.reused),
        "Refusals": u64::from(o.code.is_some() && (o.is_refusal() || o.is_error())),
        "Outcome": o.outcome,
        "HttpStatus": o.http_status,
        "Tier": o.tier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(extension: &str, ms: u64) -> Observation<'_> {
        Observation {
            extension,
            outcome: "ok",
            http_status: 200,
            duration: Duration::from_millis(ms),
            tier: Some("memory"),
            reused: false,
            code: None,
        }
    }

    /// What CloudWatch requires of an EMF document: `_aws` with a millisecond timestamp and
    /// metric directives whose every dimension key and metric name is a top-level member,
    /// metric values numbers, dimension values strings.
    fn assert_valid_emf(doc: &Value) {
        assert!(doc["_aws"]["Timestamp"].as_u64().is_some());
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert!(!directives.is_empty());
        for d in directives {
            assert_eq!(d["Namespace"], NAMESPACE);
            for set in d["Dimensions"].as_array().unwrap() {
                for key in set.as_array().unwrap() {
                    assert!(doc[key.as_str().unwrap()].is_string(), "dimension {key} is a string member");
                }
            }
            for m in d["Metrics"].as_array().unwrap() {
                let name = m["Name"].as_str().unwrap();
                assert!(doc[name].is_number(), "metric {name} is a number member");
                assert!(["Count", "Milliseconds"].contains(&m["Unit"].as_str().unwrap()));
            }
        }
    }

    #[test]
    fn a_request_is_one_emf_document_with_bounded_dimensions() {
        let refused = Observation {
            extension: "com.acme.billing",
            outcome: "policy_denied",
            http_status: 429,
            duration: Duration::from_micros(300),
            tier: None,
            reused: false,
            code: Some("rate_limited"),
        };
        let doc = emf("gateway", &refused, 1_796_000_000_000);
        assert_valid_emf(&doc);
        assert_eq!(
            (doc["Refusals"].as_u64(), doc["Errors"].as_u64(), doc["Code"].as_str()),
            (Some(1), Some(0), Some("rate_limited"))
        );
        let cold = Observation { tier: Some("disk"), ..ok("com.acme.billing", 7) };
        let doc = emf("gateway", &cold, 1);
        assert_valid_emf(&doc);
        assert_eq!((doc["ColdLoads"].as_u64(), doc["Code"].as_str()), (Some(1), Some("none")));
        let text = serde_json::to_string(&doc).unwrap();
        assert!(!text.contains('\n'), "one log line");
    }

    #[test]
    fn totals_render_as_prometheus_text() {
        let m = Metrics::default();
        m.observe(&ok("com.a.b", 3));
        m.observe(&ok("com.a.b", 30));
        m.observe(&Observation {
            outcome: "error",
            http_status: 500,
            code: Some("extension_error"),
            ..ok("com.a.b", 2)
        });
        m.observe(&Observation { reused: true, tier: Some("memory"), ..ok("com.c\"d", 1) });
        let text = m.prometheus();
        for line in [
            "kelp_requests_total{extension=\"com.a.b\",outcome=\"ok\"} 2",
            "kelp_requests_total{extension=\"com.a.b\",outcome=\"error\"} 1",
            "kelp_errors_total{extension=\"com.a.b\"} 1",
            "kelp_request_duration_milliseconds_bucket{extension=\"com.a.b\",le=\"5\"} 2",
            "kelp_request_duration_milliseconds_bucket{extension=\"com.a.b\",le=\"+Inf\"} 3",
            "kelp_request_duration_milliseconds_count{extension=\"com.a.b\"} 3",
            "kelp_refusals_total{code=\"extension_error\"} 1",
            "kelp_module_cache_loads_total{tier=\"memory\"} 4",
            "kelp_warm_instance_reuse_total 1",
            "kelp_requests_total{extension=\"com.c\\\"d\",outcome=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from:\n{text}");
        }
    }
}

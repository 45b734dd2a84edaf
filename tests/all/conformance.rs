//! One behavioural suite per backend trait, run against every implementation: SQLite /
//! directory / secrets file / in-process ring, and DynamoDB / S3 / Secrets Manager (moto on
//! loopback) / Redis Streams (real redis-server).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kelp_runtime::blobs::BlobStore;
use kelp_runtime::debug::{DebugBus, DebugEvent};
use kelp_runtime::manifest::Manifest;
use kelp_runtime::secrets::{SecretEnvelope, SecretSource, SecretsError};
use kelp_runtime::storage::{KvError, KvLimits, KvStore, Scope};
use kelp_runtime::stores::*;
use kelp_tests::aws::{aws_backends, embedded_backends};
use serde_json::json;

fn uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn manifest(name: &str, version: &str) -> Manifest {
    Manifest::from_value(
        json!({"name": name, "version": version, "runtime": "wasm-js@1", "capabilities": ["storage.kv"]}),
    )
    .unwrap()
}

fn version(ext: &str, v: &str, hash: &str) -> VersionRecord {
    VersionRecord {
        id: uid(),
        extension_id: ext.into(),
        version: v.into(),
        manifest: manifest("conf.ext", v),
        content_hash: hash.into(),
        component_hash: "c".into(),
        component_key: "components/c.wasm".into(),
        bundle_key: "bundles/b.tar.zst".into(),
        published_at: now_rfc3339(),
    }
}

// ---------------------------------------------------------------- registry

async fn registry_conformance(r: Arc<dyn Registry>) {
    let name = format!("conf.{}", uid());
    let ext = ExtensionRecord {
        id: uid(),
        name: name.clone(),
        publisher: Some("ü Publisher".into()),
        created_at: now_rfc3339(),
    };
    let stored = r.ensure_extension(&ext).await.unwrap();
    assert_eq!(stored, ext);
    // A second publisher of the same name gets the existing record, not a new id.
    let again = r.ensure_extension(&ExtensionRecord { id: uid(), ..ext.clone() }).await.unwrap();
    assert_eq!(again.id, ext.id);
    assert_eq!(r.get_extension(&ext.id).await.unwrap(), Some(ext.clone()));
    assert_eq!(r.find_extension_by_name(&name.to_uppercase()).await.unwrap().map(|e| e.id), Some(ext.id.clone()));
    assert_eq!(r.get_extension("missing").await.unwrap(), None);

    // Versions are immutable: the second put of 1.0.0 returns the first.
    let hash = format!("sha256:{}", uid());
    let v1 = version(&ext.id, "1.0.0", &hash);
    assert_eq!(r.put_version(&v1).await.unwrap(), PutVersion::Created);
    match r.put_version(&version(&ext.id, "1.0.0", "sha256:other")).await.unwrap() {
        PutVersion::Existing(e) => assert_eq!(e.content_hash, hash),
        PutVersion::Created => panic!("a version was overwritten"),
    }
    assert_eq!(r.get_version(&v1.id).await.unwrap().unwrap(), v1);
    assert_eq!(r.find_version(&ext.id, "1.0.0").await.unwrap().unwrap().id, v1.id);
    assert_eq!(r.find_version_by_content_hash(&hash).await.unwrap().unwrap().id, v1.id);
    assert_eq!(r.find_version_by_content_hash("sha256:none").await.unwrap(), None);

    // Two concurrent publishes of one name@version: exactly one is created.
    // Publish order is by timestamp (milliseconds): keep the versions apart in time.
    tokio::time::sleep(Duration::from_millis(3)).await;
    let (va, vb) = (version(&ext.id, "2.0.0", "sha256:a"), version(&ext.id, "2.0.0", "sha256:b"));
    let (a, b) = tokio::join!(r.put_version(&va), r.put_version(&vb));
    let created = [a.unwrap(), b.unwrap()].iter().filter(|p| **p == PutVersion::Created).count();
    assert_eq!(created, 1, "exactly one of two racing publishes wins");

    // Paging across page boundaries, in publish order.
    for i in 3..8 {
        tokio::time::sleep(Duration::from_millis(3)).await;
        r.put_version(&version(&ext.id, &format!("{i}.0.0"), &format!("sha256:{i}"))).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = r.list_versions(&ext.id, &PageRequest { limit: 3, cursor: cursor.clone() }).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|v| v.version.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.iter().collect::<std::collections::BTreeSet<_>>().len(), 7, "no duplicates across pages");
    assert_eq!(&seen[2..], ["3.0.0", "4.0.0", "5.0.0", "6.0.0", "7.0.0"]);

    let listed = r.list_extensions(&PageRequest { limit: 1000, cursor: None }).await.unwrap();
    assert!(listed.items.iter().any(|e| e.id == ext.id));
}

#[tokio::test]
async fn registry_sqlite() {
    registry_conformance(embedded_backends().registry).await;
}

#[tokio::test]
async fn registry_dynamodb() {
    registry_conformance(aws_backends().await.registry).await;
}

// ---------------------------------------------------------------- installs

fn install(tenant: &str, ext: &str) -> InstallRecord {
    InstallRecord {
        install_id: uid(),
        tenant_id: tenant.into(),
        extension_id: ext.into(),
        version_id: uid(),
        config: BTreeMap::from([("ключ".to_string(), "значение 🌊".to_string())]),
        config_version: 1,
        secrets_ref: None,
        secrets_version: 0,
        granted: vec!["cap:storage.kv".into()],
        egress: vec!["api.example.com".into()],
        enabled: true,
        created_at: now_rfc3339(),
        updated_at: now_rfc3339(),
        revision: 1,
        // A plan snapshot and overrides: both backends keep them as written.
        limits: kelp_runtime::limits::InstallLimits {
            plan: Some(kelp_runtime::limits::AppliedPlan {
                name: "gold".into(),
                revision: 3,
                limits: kelp_runtime::limits::LimitSet { timeout_ms: Some(900), ..Default::default() },
            }),
            overrides: kelp_runtime::limits::LimitSet { warm_reuse: Some(false), ..Default::default() },
        },
    }
}

async fn installs_conformance(s: Arc<dyn Installs>) {
    let (ta, tb) = (format!("tenant-a-{}", uid()), format!("tenant-b-{}", uid()));
    let ext = uid();
    let a = install(&ta, &ext);
    s.create_install(&a).await.unwrap();
    assert!(
        matches!(s.create_install(&install(&ta, &ext)).await, Err(StoreError::Conflict(_))),
        "one install per tenant and extension"
    );
    assert_eq!(s.get_install(&ta, &a.install_id).await.unwrap(), Some(a.clone()));
    assert_eq!(s.find_install(&ta, &ext).await.unwrap().map(|i| i.install_id), Some(a.install_id.clone()));
    // Tenant isolation through every method.
    assert_eq!(s.get_install(&tb, &a.install_id).await.unwrap(), None);
    assert_eq!(s.find_install(&tb, &ext).await.unwrap(), None);
    assert!(s.list_installs(Some(&tb), &PageRequest::default()).await.unwrap().items.is_empty());
    let mut forged = a.clone();
    forged.tenant_id = tb.clone();
    forged.revision = 2;
    assert!(s.update_install(&forged).await.is_err(), "an update cannot reach another tenant's install");
    assert!(!s.delete_install(&tb, &a.install_id).await.unwrap());

    // Optimistic concurrency: two updates from the same revision, exactly one wins.
    let mut one = a.clone();
    one.revision = 2;
    one.config_version = 2;
    let mut two = a.clone();
    two.revision = 2;
    two.enabled = false;
    let (r1, r2) = tokio::join!(s.update_install(&one), s.update_install(&two));
    assert_eq!([r1.is_ok(), r2.is_ok()].iter().filter(|ok| **ok).count(), 1, "exactly one concurrent update wins");
    let now = s.get_install(&ta, &a.install_id).await.unwrap().unwrap();
    assert_eq!(now.revision, 2);
    assert_eq!(s.find_install(&ta, &ext).await.unwrap().unwrap(), now, "both lookups see the same record");

    // Paging across page boundaries.
    for _ in 0..4 {
        s.create_install(&install(&ta, &uid())).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.list_installs(Some(&ta), &PageRequest { limit: 2, cursor }).await.unwrap();
        seen.extend(page.items.into_iter().map(|i| i.install_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<std::collections::BTreeSet<_>>().len(), 5);
    let all = s.list_installs(None, &PageRequest { limit: 1000, cursor: None }).await.unwrap();
    assert!(all.items.iter().any(|i| i.install_id == a.install_id), "operators list every tenant");

    assert!(s.delete_install(&ta, &a.install_id).await.unwrap());
    assert_eq!(s.get_install(&ta, &a.install_id).await.unwrap(), None);
    assert_eq!(s.find_install(&ta, &ext).await.unwrap(), None);
    s.create_install(&install(&ta, &ext)).await.unwrap();
}

#[tokio::test]
async fn installs_sqlite() {
    installs_conformance(embedded_backends().installs).await;
}

#[tokio::test]
async fn installs_dynamodb() {
    installs_conformance(aws_backends().await.installs).await;
}

// ---------------------------------------------------------------- audit

async fn audit_conformance(a: Arc<dyn AuditLog>) {
    let tenant = format!("audit-{}", uid());
    let actor = format!("actor-{}", uid());
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = AuditRecord {
            id: uid(),
            ts: now_rfc3339(),
            tenant_id: Some(tenant.clone()),
            actor: if i % 2 == 0 { actor.clone() } else { "someone".into() },
            action: if i < 5 { "install.create".into() } else { "config.set".into() },
            target: Some(format!("t{i}")),
            outcome: "ok".into(),
            details: json!({"i": i, "ünïcode": "✓"}),
        };
        a.append(&r).await.unwrap();
        ids.push(r.id);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    let filter = AuditFilter { tenant_id: Some(tenant.clone()), ..Default::default() };
    loop {
        let page = a.query(&filter, &PageRequest { limit: 3, cursor }).await.unwrap();
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "newest first, every row once across pages");
    let by_actor = a
        .query(&AuditFilter { actor: Some(actor.clone()), ..Default::default() }, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(by_actor.items.len(), 4);
    let by_action = a
        .query(
            &AuditFilter { tenant_id: Some(tenant.clone()), action: Some("config.set".into()), ..Default::default() },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_action.items.len(), 2);
    let other = a
        .query(
            &AuditFilter { tenant_id: Some(format!("other-{}", uid())), ..Default::default() },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(other.items.is_empty(), "tenant isolation");
    let future = a
        .query(
            &AuditFilter {
                tenant_id: Some(tenant.clone()),
                since: Some("2999-01-01T00:00:00Z".into()),
                ..Default::default()
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
    assert!(future.items.is_empty(), "time filter");
    let everything = a.query(&AuditFilter::default(), &PageRequest { limit: 1000, cursor: None }).await.unwrap();
    assert!(everything.items.iter().any(|r| r.id == ids[0]), "operators query across tenants");
}

#[tokio::test]
async fn audit_sqlite() {
    audit_conformance(embedded_backends().audit).await;
}

#[tokio::test]
async fn audit_dynamodb() {
    audit_conformance(aws_backends().await.audit).await;
}

// ---------------------------------------------------------------- storage KV

fn small_limits() -> KvLimits {
    KvLimits { max_namespaces: 2, max_keys_per_namespace: 3, ..KvLimits::default() }
}

async fn kv_conformance(kv: Arc<dyn KvStore>) {
    let a = Scope { tenant_id: format!("kv-a-{}", uid()), install_id: uid() };
    let b = Scope { tenant_id: format!("kv-b-{}", uid()), install_id: a.install_id.clone() };
    let limits = KvLimits::default();
    let key = "ключ/🌊".replace('/', "-");
    let e = kv.put(&a, "ns", &key, b"v1", None, &limits).await.unwrap();
    assert_eq!((e.revision, e.value.as_slice()), (1, b"v1".as_slice()));
    assert_eq!(kv.put(&a, "ns", &key, b"v2", None, &limits).await.unwrap().revision, 2);
    assert_eq!(kv.get(&a, "ns", &key).await.unwrap().unwrap().value, b"v2");
    assert_eq!(kv.put(&a, "ns", &key, b"v3", Some(2), &limits).await.unwrap().revision, 3);
    assert_eq!(kv.put(&a, "ns", &key, b"stale", Some(2), &limits).await, Err(KvError::Conflict));
    assert_eq!(kv.put(&a, "ns", "absent", b"x", Some(1), &limits).await, Err(KvError::Conflict));
    assert_eq!(kv.get(&a, "ns", "absent").await.unwrap(), None);

    // Tenant isolation through every method (same install id, other tenant).
    assert_eq!(kv.get(&b, "ns", &key).await.unwrap(), None);
    assert!(kv.list(&b, "ns", None, 100).await.unwrap().is_empty());
    assert_eq!(kv.put(&b, "ns", &key, b"b", Some(3), &limits).await, Err(KvError::Conflict));
    assert_eq!(kv.delete(&b, "ns", &key).await, Err(KvError::Missing));
    assert_eq!(kv.purge(&b).await.unwrap(), 0);
    assert_eq!(kv.get(&a, "ns", &key).await.unwrap().unwrap().revision, 3, "tenant b touched nothing of a");

    // Ids built from separators, escapes and case variants never share a scope, namespace or
    // key: each write is read back alone (the same on every backend).
    let run = uid();
    let tricky = ["x#I#y", "x", "X", "x%23I%23y", "x:y", "x/y", "x%", "x#N#y"];
    let mut written = Vec::new();
    for (i, t) in tricky.iter().enumerate() {
        for (j, part) in tricky.iter().enumerate() {
            let scope = Scope { tenant_id: format!("{run}{t}"), install_id: format!("{run}{part}") };
            let value = format!("{i}-{j}");
            kv.put(&scope, part, t, value.as_bytes(), None, &limits).await.unwrap();
            written.push((scope, part.to_string(), t.to_string(), value));
        }
    }
    for (scope, ns, key, value) in &written {
        let got = kv.get(scope, ns, key).await.unwrap().expect("written");
        assert_eq!((got.value.as_slice(), got.revision), (value.as_bytes(), 1), "{scope:?} {ns:?} {key:?}");
        let listed = kv.list(scope, ns, None, 100).await.unwrap();
        assert_eq!(listed.len(), 1, "{scope:?} {ns:?}: {listed:?}");
    }

    // Concurrent compare-and-set from the same revision: exactly one wins.
    let (w1, w2) =
        tokio::join!(kv.put(&a, "ns", &key, b"w1", Some(3), &limits), kv.put(&a, "ns", &key, b"w2", Some(3), &limits));
    assert_eq!([w1.is_ok(), w2.is_ok()].iter().filter(|ok| **ok).count(), 1, "{w1:?} {w2:?}");
    assert_eq!(kv.get(&a, "ns", &key).await.unwrap().unwrap().revision, 4);

    // Large values at the limit (the size check itself is in storage::validate).
    let big = vec![7u8; limits.max_value_bytes];
    assert_eq!(kv.put(&a, "big", "k", &big, None, &limits).await.unwrap().value.len(), big.len());
    assert!(
        kelp_runtime::storage::validate("big", Some("k"), Some(&vec![0; limits.max_value_bytes + 1]), &limits).is_err()
    );

    // Paging in key order across page boundaries (byte order of UTF-8 keys).
    let keys: Vec<String> = ["b", "a", "é", "z", "Z", "0", "ä", "m"].iter().map(|s| s.to_string()).collect();
    for k in &keys {
        kv.put(&a, "page", k, k.as_bytes(), None, &limits).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = kv.list(&a, "page", after.as_deref(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|e| e.key.clone());
        seen.extend(page.into_iter().map(|e| e.key));
    }
    let mut expected = keys.clone();
    expected.sort();
    assert_eq!(seen, expected);

    // Count limits, exactly at and over.
    let c = Scope { tenant_id: format!("kv-c-{}", uid()), install_id: uid() };
    let small = small_limits();
    for k in ["1", "2", "3"] {
        kv.put(&c, "one", k, b"x", None, &small).await.unwrap();
    }
    assert!(
        matches!(kv.put(&c, "one", "4", b"x", None, &small).await, Err(KvError::Limit(_))),
        "4th key over a 3-key limit"
    );
    kv.put(&c, "one", "3", b"update", None, &small).await.expect("updating an existing key is not a new key");
    kv.put(&c, "two", "k", b"x", None, &small).await.unwrap();
    assert!(
        matches!(kv.put(&c, "three", "k", b"x", None, &small).await, Err(KvError::Limit(_))),
        "3rd namespace over a 2-namespace limit"
    );
    kv.delete(&c, "two", "k").await.unwrap();
    kv.put(&c, "three", "k", b"x", None, &small).await.expect("an emptied namespace no longer counts");
    kv.delete(&c, "one", "1").await.unwrap();
    kv.put(&c, "one", "4", b"x", None, &small).await.expect("a deleted key frees its slot");
    assert_eq!(kv.delete(&c, "one", "1").await, Err(KvError::Missing));

    // Purge removes everything of the scope and nothing else.
    assert_eq!(kv.purge(&c).await.unwrap(), 4);
    assert!(kv.list(&c, "one", None, 100).await.unwrap().is_empty());
    assert!(kv.get(&a, "ns", &key).await.unwrap().is_some());
    kv.put(&c, "one", "again", b"x", None, &small).await.expect("counters were reset by the purge");
}

#[tokio::test]
async fn storage_sqlite() {
    kv_conformance(embedded_backends().kv).await;
}

#[tokio::test]
async fn storage_dynamodb() {
    kv_conformance(aws_backends().await.kv).await;
}

// ---------------------------------------------------------------- secrets

async fn secrets_conformance(s: Arc<dyn SecretSource>) {
    let r = format!("conf/{}", uid());
    assert_eq!(s.fetch(&r).await, Err(SecretsError::NotFound));
    let values = BTreeMap::from([("api_key".to_string(), "🔑 s3cret".to_string())]);
    s.store(&r, &SecretEnvelope::inline(&values, None)).await.unwrap();
    assert_eq!(s.fetch(&r).await.unwrap().decode().unwrap().0, values);
    let v2 = BTreeMap::from([("api_key".to_string(), "rotated".to_string())]);
    s.store(&r, &SecretEnvelope::inline(&v2, Some("2999-01-01T00:00:00Z".into()))).await.unwrap();
    let env = s.fetch(&r).await.unwrap();
    assert_eq!(env.decode().unwrap().0, v2);
    assert_eq!(env.expires_at.as_deref(), Some("2999-01-01T00:00:00Z"));
    assert_eq!(s.fetch(&format!("conf/{}", uid())).await, Err(SecretsError::NotFound), "isolation by reference");
    let other = format!("conf/{}", uid());
    s.store(&other, &SecretEnvelope::inline(&values, None)).await.unwrap();
    s.delete(&r).await.unwrap();
    assert_eq!(s.fetch(&r).await, Err(SecretsError::NotFound), "deleted");
    s.delete(&r).await.expect("deleting a missing envelope succeeds");
    assert_eq!(s.fetch(&other).await.unwrap().decode().unwrap().0, values, "deleting one leaves the others");
    // Stored again after a delete (no recovery window blocks the name).
    s.store(&r, &SecretEnvelope::inline(&v2, None)).await.unwrap();
    assert_eq!(s.fetch(&r).await.unwrap().decode().unwrap().0, v2);
}

#[tokio::test]
async fn secrets_file() {
    secrets_conformance(embedded_backends().secrets).await;
}

#[tokio::test]
async fn secrets_secrets_manager() {
    secrets_conformance(aws_backends().await.secrets).await;
}

// ---------------------------------------------------------------- blobs

async fn blobs_conformance(b: Arc<dyn BlobStore>) {
    let key = format!("conf/{}/ü/file.bin", uid());
    assert_eq!(b.get(&key).await.unwrap(), None);
    assert!(!b.exists(&key).await.unwrap());
    let big = vec![42u8; 3 << 20];
    b.put(&key, &big).await.unwrap();
    assert!(b.exists(&key).await.unwrap());
    assert_eq!(b.get(&key).await.unwrap().unwrap(), big);
    b.put(&key, b"replaced").await.unwrap();
    assert_eq!(b.get(&key).await.unwrap().unwrap(), b"replaced");
    b.delete(&key).await.unwrap();
    b.delete(&key).await.unwrap();
    assert_eq!(b.get(&key).await.unwrap(), None);
    for bad in ["../x", "/abs", "a//b", "a/./b", "a\\b", ""] {
        assert!(b.put(bad, b"x").await.is_err(), "{bad:?} must be refused");
    }
}

#[tokio::test]
async fn blobs_directory() {
    blobs_conformance(embedded_backends().blobs).await;
}

#[tokio::test]
async fn blobs_s3() {
    blobs_conformance(aws_backends().await.blobs).await;
}

// ---------------------------------------------------------------- debug bus

fn event(tenant: &str, ext: &str, msg: &str) -> DebugEvent {
    DebugEvent {
        ts: now_rfc3339(),
        level: "info".into(),
        stream: "log".into(),
        tenant_id: tenant.into(),
        extension_id: ext.into(),
        install_id: "i".into(),
        request_id: "r".into(),
        version_id: "v".into(),
        version: "1.0.0".into(),
        content_hash: "sha256:0".into(),
        message: msg.into(),
        truncated: false,
    }
}

async fn debug_bus_conformance(bus: Arc<dyn DebugBus>) {
    let (tenant, other, ext) = (format!("Dbg-{}", uid()), format!("dbg-{}", uid()), uid());
    for i in 0..5 {
        bus.publish(event(&tenant, &ext, &format!("m{i} ✓")));
    }
    bus.publish(event(&other, &ext, "not yours"));
    bus.flush(Duration::from_secs(2)).await;
    let backlog = bus.backlog(&tenant, &ext, 3).await.unwrap();
    let msgs: Vec<_> = backlog.iter().map(|e| e.event.message.as_str()).collect();
    assert_eq!(msgs, ["m2 ✓", "m3 ✓", "m4 ✓"], "the last N, oldest first");
    assert_eq!(backlog[0].event.tenant_id, tenant, "fields survive the round trip");
    assert_eq!((backlog[0].event.version_id.as_str(), backlog[0].event.version.as_str()), ("v", "1.0.0"));
    let after = bus.read_after(&tenant, &ext, &backlog[0].id, 100, Duration::from_millis(10)).await.unwrap();
    assert_eq!(
        after.iter().map(|e| e.event.message.as_str()).collect::<Vec<_>>(),
        ["m3 ✓", "m4 ✓"],
        "resume after an id: no gap, no duplicate"
    );
    let reader = {
        let bus = bus.clone();
        let (t, e, last) = (tenant.clone(), ext.clone(), backlog[2].id.clone());
        tokio::spawn(async move { bus.read_after(&t, &e, &last, 100, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.publish(event(&tenant, &ext, "live"));
    let live = reader.await.unwrap().unwrap();
    assert_eq!(live.iter().map(|e| e.event.message.as_str()).collect::<Vec<_>>(), ["live"]);
    let theirs = bus.backlog(&other, &ext, 100).await.unwrap();
    assert!(theirs.iter().all(|e| e.event.tenant_id == other), "tenant isolation");
}

#[tokio::test]
async fn debug_bus_in_process() {
    debug_bus_conformance(embedded_backends().debug).await;
}

#[tokio::test]
async fn debug_bus_redis() {
    let bus = kelp_tests::aws::redis_bus(&kelp_tests::services::shared_redis());
    debug_bus_conformance(bus).await;
}

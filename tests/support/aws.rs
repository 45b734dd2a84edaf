//! Backends for the conformance suite and the AWS-backed gateway tests: the embedded ones in
//! a temp dir, the AWS ones against moto with fresh table and bucket names per call.

use std::collections::HashMap;
use std::sync::Arc;

use kelp_runtime::debug::redis::{RedisBus, RedisSettings};
use kelp_runtime::debug::DebugBus;
use kelp_runtime::platform::Backends;
use kelp_runtime::{Platform, Settings};

use crate::services::moto;

/// Settings map entries pointing every AWS client at `endpoint` with fresh resource names.
pub fn aws_env(endpoint: &str) -> HashMap<String, String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    [
        ("KELP_BACKEND", "aws".to_string()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("KELP_TABLE_REGISTRY", format!("registry-{id}")),
        ("KELP_TABLE_INSTALLS", format!("installs-{id}")),
        ("KELP_TABLE_STORAGE", format!("storage-{id}")),
        ("KELP_TABLE_AUDIT", format!("audit-{id}")),
        ("KELP_BUCKET", format!("kelp-{id}")),
        ("KELP_SECRET_PREFIX", format!("kelp-{id}/")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The moto endpoint of this test process.
pub fn moto_url() -> String {
    format!("http://127.0.0.1:{}", moto().port)
}

/// Embedded backends over a temp dir (kept for the life of the process).
pub fn embedded_backends() -> Backends {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let env: HashMap<String, String> =
        [("KELP_DATA_DIR".to_string(), dir.to_string_lossy().into_owned())].into_iter().collect();
    Backends::embedded(&Settings::from_map(&env).unwrap()).unwrap()
}

/// AWS backends on moto, with their tables and bucket created.
pub async fn aws_backends() -> Backends {
    let settings = Settings::from_map(&aws_env(&moto_url())).unwrap();
    Platform::bootstrap_aws(&settings).await.expect("creating tables and bucket in moto");
    Backends::aws(&settings).await.unwrap()
}

/// A Redis debug bus with a fresh key prefix (tests share one redis-server).
pub fn redis_bus(url: &str) -> Arc<dyn DebugBus> {
    RedisBus::start(redis_settings(url)).unwrap()
}

/// Redis settings with a fresh key prefix.
pub fn redis_settings(url: &str) -> RedisSettings {
    RedisSettings {
        url: url.into(),
        username: None,
        password: None,
        password_secret_arn: None,
        prefix: format!("test-{}:", uuid::Uuid::new_v4().simple()),
        maxlen: 2000,
        queue: 10_000,
    }
}

/// A fresh bucket in moto holding bundles under Alga's bundle-store keys
/// (`tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst`); the bucket and
/// each bundle's hex hash.
pub async fn alga_bundle_bucket(bundles: &[(&str, &str, &[u8])]) -> (String, Vec<String>) {
    use kelp_runtime::blobs::BlobStore as _;
    let bucket = format!("alga-bundles-{}", uuid::Uuid::new_v4().simple());
    let settings = Settings::from_map(&aws_env(&moto_url())).unwrap();
    let s3 = kelp_runtime::aws::AwsClients::new(&settings.aws).await.s3;
    kelp_runtime::blobs::s3::ensure_bucket(&s3, &bucket).await.unwrap();
    let store = kelp_runtime::blobs::s3::S3BlobStore::new(s3, bucket.clone(), String::new());
    let mut hashes = Vec::new();
    for (tenant, extension, bytes) in bundles {
        let hex = kelp_runtime::publish::content_hash(bytes).trim_start_matches("sha256:").to_string();
        store
            .put(&format!("tenants/{tenant}/extensions/{extension}/sha256/{hex}/bundle.tar.zst"), bytes)
            .await
            .unwrap();
        hashes.push(hex);
    }
    (bucket, hashes)
}

/// Settings entries that point a Kelp at moto for Alga's bundle store only (its own
/// backends stay embedded).
pub fn alga_bucket_env(bucket: &str) -> Vec<(String, String)> {
    vec![
        ("KELP_ALGA_BUNDLE_BUCKET".into(), bucket.into()),
        ("AWS_ENDPOINT_URL".into(), moto_url()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
    ]
}

//! Blobs in S3: bundles, component bytes, precompiled artifacts (keyed by component hash and
//! engine compatibility hash) and extracted UI files, under an optional key prefix.

use async_trait::async_trait;
use aws_sdk_s3::Client;

use super::{check_key, BlobError, BlobStore};
use crate::aws::{describe, is_unavailable};

/// An S3 bucket (and prefix) as a blob store.
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3BlobStore {
    /// Objects `{prefix}{key}` in `bucket`.
    pub fn new(client: Client, bucket: String, prefix: String) -> Self {
        Self { client, bucket, prefix }
    }

    fn key(&self, key: &str) -> Result<String, BlobError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }
}

fn map<E: std::fmt::Debug, R>(e: aws_sdk_s3::error::SdkError<E, R>) -> BlobError {
    if is_unavailable(&e) {
        BlobError::Unavailable(describe(&e))
    } else {
        BlobError::Internal(describe(&e))
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BlobError> {
        match self.client.get_object().bucket(&self.bucket).key(self.key(key)?).send().await {
            Ok(out) => {
                let body = out.body.collect().await.map_err(|e| BlobError::Unavailable(e.to_string()))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<(Vec<u8>, u64)>, BlobError> {
        let range = format!("bytes={start}-{}", start + len.max(1) - 1);
        match self.client.get_object().bucket(&self.bucket).key(self.key(key)?).range(range).send().await {
            Ok(out) => {
                // `Content-Range: bytes 0-262143/10400000`: the whole length is after the slash.
                let total = out
                    .content_range()
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|t| t.parse::<u64>().ok())
                    .or(out.content_length().map(|l| l as u64 + start))
                    .ok_or_else(|| BlobError::Internal("ranged GET without a length".into()))?;
                let body = out.body.collect().await.map_err(|e| BlobError::Unavailable(e.to_string()))?;
                Ok(Some((body.into_bytes().to_vec(), total)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(map(e)),
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key)?)
            .body(bytes.to_vec().into())
            .send()
            .await
            .map(|_| ())
            .map_err(map)
    }

    async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        match self.client.head_object().bucket(&self.bucket).key(self.key(key)?).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => Err(map(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client.delete_object().bucket(&self.bucket).key(self.key(key)?).send().await.map(|_| ()).map_err(map)
    }
}

/// Create the bucket if it does not exist (moto in tests, `kelp up --aws`).
pub async fn ensure_bucket(client: &Client, bucket: &str) -> anyhow::Result<()> {
    match client.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()) =>
        {
            Ok(())
        }
        Err(e) => anyhow::bail!("creating bucket {bucket}: {}", describe(&e)),
    }
}

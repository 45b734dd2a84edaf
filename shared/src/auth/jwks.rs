//! The identity provider's signing keys, read from where the IdP (or the operator) keeps them
//! rather than from the function's environment: its `jwks_uri` over HTTPS, or an S3 object
//! (for functions in a VPC without a NAT gateway, through the S3 endpoint). A JWKS with
//! certificate chains outgrows Lambda's 4 KB of environment, and keys in the environment
//! need a redeploy to rotate.
//!
//! Read at start. Refreshed in the background when a token names a key the set does not hold
//! (IdPs publish a new key before they sign with it, so the token that first names it fails
//! at most while the refresh runs) and when the set is an hour old; at most one fetch runs at
//! a time, and refreshes start at most every [`MIN_REFRESH_INTERVAL`] (the read at start
//! aside), so forged `kid`s cannot turn into a flood of fetches. A failed fetch keeps the keys
//! held.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use parking_lot::{Mutex, RwLock};

/// Keys by `kid` (a key without one matches any token).
pub type KeyList = Vec<(Option<String>, DecodingKey)>;

/// Unknown key ids trigger a refresh at most this often.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// A key set older than this is refreshed in the background.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS_BYTES: usize = 256 << 10;

/// Where the key set is read from.
#[derive(Clone)]
pub enum JwksSource {
    /// The IdP's `jwks_uri` (HTTPS; HTTP only on loopback, for tests).
    Url(reqwest::Client, String),
    /// An S3 object.
    S3 {
        /// Client.
        client: aws_sdk_s3::Client,
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
}

impl JwksSource {
    /// `KELP_JWT_JWKS_URL`: `https://…` or `s3://bucket/key`.
    pub fn parse(location: &str, s3: Option<aws_sdk_s3::Client>) -> anyhow::Result<Self> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                .ok_or_else(|| anyhow::anyhow!("KELP_JWT_JWKS_URL={location:?}: an S3 location is s3://bucket/key"))?;
            let client =
                s3.ok_or_else(|| anyhow::anyhow!("KELP_JWT_JWKS_URL names S3 but no S3 client is configured"))?;
            return Ok(Self::S3 { client, bucket: bucket.into(), key: key.into() });
        }
        let url = url::Url::parse(location).map_err(|e| anyhow::anyhow!("KELP_JWT_JWKS_URL={location:?}: {e}"))?;
        let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        anyhow::ensure!(
            url.scheme() == "https" || (url.scheme() == "http" && loopback),
            "KELP_JWT_JWKS_URL must be https:// (or s3://bucket/key)"
        );
        let client = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        Ok(Self::Url(client, location.to_string()))
    }

    fn describe(&self) -> String {
        match self {
            Self::Url(_, url) => url.clone(),
            Self::S3 { bucket, key, .. } => format!("s3://{bucket}/{key}"),
        }
    }

    async fn fetch(&self) -> anyhow::Result<KeyList> {
        let body = match self {
            Self::Url(client, url) => {
                let response = client.get(url).send().await?;
                anyhow::ensure!(response.status().is_success(), "status {}", response.status());
                let body = response.bytes().await?;
                body.to_vec()
            }
            Self::S3 { client, bucket, key } => {
                let out = tokio::time::timeout(FETCH_TIMEOUT, client.get_object().bucket(bucket).key(key).send())
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))?
                    .map_err(|e| anyhow::anyhow!("{}", crate::aws::describe(&e)))?;
                out.body.collect().await?.into_bytes().to_vec()
            }
        };
        anyhow::ensure!(body.len() <= MAX_JWKS_BYTES, "the key set is over {MAX_JWKS_BYTES} bytes");
        parse_jwks(std::str::from_utf8(&body)?)
    }
}

/// The keys of a JWKS document.
pub fn parse_jwks(jwks: &str) -> anyhow::Result<KeyList> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(jwks)?;
    set.keys.iter().map(|jwk| Ok((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)?))).collect()
}

/// A key set read from its source and kept fresh (cheap to clone: one shared state).
#[derive(Clone)]
pub struct RemoteJwks(Arc<Held>);

struct Held {
    source: JwksSource,
    keys: RwLock<Arc<KeyList>>,
    /// When the keys were last fetched successfully.
    fetched_at: Mutex<Option<Instant>>,
    /// When a fetch last started.
    attempted_at: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
}

impl RemoteJwks {
    /// Read the key set. A source that does not answer is logged and retried on use, not
    /// fatal: an IdP outage at a cold start must not take the function down with it.
    pub async fn load(source: JwksSource) -> Self {
        let jwks = Self(Arc::new(Held {
            source,
            keys: RwLock::new(Arc::new(Vec::new())),
            fetched_at: Mutex::new(None),
            // The read at start does not count against the refresh interval: a key the IdP
            // rotated in just after this sandbox started is picked up at its first use.
            attempted_at: Mutex::new(None),
            refreshing: AtomicBool::new(true),
        }));
        jwks.0.refresh().await;
        jwks
    }

    /// The keys held now (an hour-old set is refreshed in the background meanwhile).
    pub fn keys(&self) -> Arc<KeyList> {
        if self.0.fetched_at.lock().is_none_or(|at| at.elapsed() > MAX_AGE) {
            self.refresh_in_background();
        }
        self.0.keys.read().clone()
    }

    /// A token named a key the set does not hold: fetch the set again (rate-limited).
    pub fn unknown_key(&self) {
        self.refresh_in_background();
    }

    /// Whether a fetch has ever succeeded.
    pub fn is_loaded(&self) -> bool {
        self.0.fetched_at.lock().is_some()
    }

    fn refresh_in_background(&self) {
        {
            let mut attempted = self.0.attempted_at.lock();
            if attempted.is_some_and(|at| at.elapsed() < MIN_REFRESH_INTERVAL) {
                return;
            }
            if self.0.refreshing.swap(true, Ordering::AcqRel) {
                return;
            }
            *attempted = Some(Instant::now());
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let held = self.0.clone();
                runtime.spawn(async move { held.refresh().await });
            }
            Err(_) => self.0.refreshing.store(false, Ordering::Release),
        }
    }
}

impl Held {
    /// Fetch and swap in the new set; the caller has set `refreshing`.
    async fn refresh(&self) {
        match self.source.fetch().await {
            Ok(keys) => {
                tracing::info!(source = %self.source.describe(), keys = keys.len(), "JWKS loaded");
                *self.keys.write() = Arc::new(keys);
                *self.fetched_at.lock() = Some(Instant::now());
            }
            Err(e) => {
                tracing::error!(source = %self.source.describe(), error = %format!("{e:#}"), "cannot read the JWKS; keeping the keys held")
            }
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

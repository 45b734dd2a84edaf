//! Token buckets per (tenant, extension) and per tenant, shaped by the tenant's plan
//! ([`crate::limits::Rate`]; the default plan: burst 100, refill 50/s; burst 0 disables). Per
//! instance here; the Redis-backed limiter shares buckets across Lambda instances.

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::limits::Rate;

/// A rate limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Over the limit; retry after this many seconds (≥ 1).
    Limited {
        /// Seconds until a token is available.
        retry_after_secs: u64,
    },
}

/// A rate limiter.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Take one token from the (tenant, extension) bucket shaped by `rate`. An empty
    /// `extension` is the tenant's own bucket (no extension id is empty).
    async fn check(&self, tenant: &str, extension: &str, rate: Rate) -> RateDecision;
}

struct Bucket {
    tokens: f64,
    at: Instant,
    rate: Rate,
}

/// The Redis key of a (tenant, extension) bucket: ids are kept as they are (no case folding)
/// and `%`/`:` are escaped, so two different pairs never share a bucket.
pub fn rate_key(tenant: &str, extension: &str) -> String {
    let escape = |s: &str| s.replace('%', "%25").replace(':', "%3A");
    format!("kelp-rate:{}:{}", escape(tenant), escape(extension))
}

/// In-memory token buckets of this instance.
pub struct LocalRateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

/// Buckets kept before idle (full) ones are swept, so the map stays bounded.
const MAX_BUCKETS: usize = 100_000;

impl LocalRateLimiter {
    /// Buckets of `burst` tokens refilled at `per_sec` (for [`LocalRateLimiter::take`]).
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self { rate: Rate { burst, per_sec: per_sec.max(0.0) }, buckets: Mutex::new(HashMap::new()) }
    }

    /// Take a token from a bucket of the limiter's own shape.
    pub fn take(&self, tenant: &str, extension: &str) -> RateDecision {
        self.take_at(tenant, extension, self.rate)
    }

    /// Take a token from a bucket shaped by `rate` (synchronous; the Redis limiter falls back
    /// to this). A bucket whose shape changed (a new plan) starts full under the new shape.
    pub fn take_at(&self, tenant: &str, extension: &str, rate: Rate) -> RateDecision {
        if rate.burst == 0 {
            return RateDecision::Allowed;
        }
        let (burst, per_sec) = (rate.burst as f64, rate.per_sec.max(0.0));
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * b.rate.per_sec < b.rate.burst as f64
            });
        }
        let bucket = buckets.entry((tenant.to_string(), extension.to_string())).or_insert(Bucket {
            tokens: burst,
            at: now,
            rate,
        });
        if bucket.rate != rate {
            *bucket = Bucket { tokens: burst, at: now, rate };
        }
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * per_sec).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            RateDecision::Allowed
        } else if per_sec > 0.0 {
            RateDecision::Limited { retry_after_secs: ((1.0 - bucket.tokens) / per_sec).ceil().max(1.0) as u64 }
        } else {
            RateDecision::Limited { retry_after_secs: 60 }
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, tenant: &str, extension: &str, rate: Rate) -> RateDecision {
        self.take_at(tenant, extension, rate)
    }
}

/// Token buckets shared by every instance through Redis (one atomic script per check). When
/// Redis is unreachable the per-instance buckets take over — logged and counted, never a
/// silent fail-open — and Redis is retried after a short pause, so an outage costs requests
/// no connection attempts.
pub struct RedisRateLimiter {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    script: redis::Script,
    local: LocalRateLimiter,
    retry_after: Mutex<Option<Instant>>,
    /// Checks answered by the per-instance fallback.
    pub fallbacks: std::sync::atomic::AtomicU64,
}

/// Token bucket in Redis, on the server's clock. KEYS[1] = bucket; ARGV = burst, tokens/s.
/// Returns {allowed (0/1), retry_after_secs}.
const BUCKET_SCRIPT: &str = r#"
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed, retry = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
elseif rate > 0 then
  retry = math.ceil((1 - tokens) / rate / 1000)
else
  retry = 60
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
if rate > 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
end
return {allowed, retry}
"#;

/// How long the limiter stays on the per-instance buckets after a Redis failure.
const REDIS_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl RedisRateLimiter {
    /// A limiter over `client` (each check says its bucket's shape).
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            conn: tokio::sync::Mutex::new(None),
            script: redis::Script::new(BUCKET_SCRIPT),
            local: LocalRateLimiter::new(0, 0.0),
            retry_after: Mutex::new(None),
            fallbacks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    async fn shared_check(&self, tenant: &str, extension: &str, rate: Rate) -> redis::RedisResult<RateDecision> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(
                self.client
                    .get_multiplexed_async_connection_with_config(&crate::debug::redis::connection_config())
                    .await?,
            );
        }
        let conn = guard.as_mut().expect("connected above");
        let key = rate_key(tenant, extension);
        let result: redis::RedisResult<(i64, i64)> =
            self.script.key(key).arg(rate.burst).arg(rate.per_sec).invoke_async(conn).await;
        match result {
            Ok((1, _)) => Ok(RateDecision::Allowed),
            Ok((_, retry)) => Ok(RateDecision::Limited { retry_after_secs: retry.max(1) as u64 }),
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, tenant: &str, extension: &str, rate: Rate) -> RateDecision {
        if rate.burst == 0 {
            return RateDecision::Allowed;
        }
        let paused = self.retry_after.lock().is_some_and(|t| Instant::now() < t);
        if !paused {
            match self.shared_check(tenant, extension, rate).await {
                Ok(d) => {
                    *self.retry_after.lock() = None;
                    return d;
                }
                Err(e) => {
                    let first = self.retry_after.lock().replace(Instant::now() + REDIS_RETRY_PAUSE).is_none();
                    if first {
                        tracing::warn!(error = %e, "rate limiter: Redis unreachable; using per-instance buckets");
                    }
                }
            }
        }
        self.fallbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.local.take_at(tenant, extension, rate)
    }
}

#[cfg(test)]
mod key_tests {
    use super::rate_key;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn different_tenant_extension_pairs_never_share_a_bucket(
            a in ("[aA:%3B]{0,6}", "[aA:%3B]{0,6}"),
            b in ("[aA:%3B]{0,6}", "[aA:%3B]{0,6}"),
        ) {
            prop_assert_eq!(rate_key(&a.0, &a.1) == rate_key(&b.0, &b.1), a == b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_limits_per_key() {
        let l = LocalRateLimiter::new(3, 1.0);
        for _ in 0..3 {
            assert_eq!(l.take("t", "e"), RateDecision::Allowed);
        }
        assert_eq!(l.take("t", "e"), RateDecision::Limited { retry_after_secs: 1 });
        assert_eq!(l.take("t", "other"), RateDecision::Allowed, "buckets are per (tenant, extension)");
        assert_eq!(l.take("t2", "e"), RateDecision::Allowed);
        let off = LocalRateLimiter::new(0, 0.0);
        for _ in 0..1000 {
            assert_eq!(off.take("t", "e"), RateDecision::Allowed);
        }
    }

    #[test]
    fn a_bucket_takes_the_shape_of_each_check() {
        let l = LocalRateLimiter::new(0, 0.0);
        let small = Rate::per_minute(2);
        assert_eq!(l.take_at("t", "e", small), RateDecision::Allowed);
        assert!(matches!(l.take_at("t", "e", small), RateDecision::Limited { retry_after_secs: 30 }));
        // A larger plan applies at once, not after the small bucket refills.
        assert_eq!(l.take_at("t", "e", Rate::per_minute(600)), RateDecision::Allowed);
    }
}

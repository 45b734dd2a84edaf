//! Per-(tenant, extension) token buckets (default burst 100, refill 50/s; burst 0 disables).
//! Per instance here; the Redis-backed limiter shares buckets across Lambda instances.

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use parking_lot::Mutex;

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
    /// Take one token for (tenant, extension).
    async fn check(&self, tenant: &str, extension: &str) -> RateDecision;
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// In-memory token buckets of this instance.
pub struct LocalRateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

/// Buckets kept before idle (full) ones are swept, so the map stays bounded.
const MAX_BUCKETS: usize = 100_000;

impl LocalRateLimiter {
    /// Buckets of `burst` tokens refilled at `per_sec`.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self { burst: burst as f64, per_sec: per_sec.max(0.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Take a token (synchronous; the Redis limiter falls back to this).
    pub fn take(&self, tenant: &str, extension: &str) -> RateDecision {
        if self.burst <= 0.0 {
            return RateDecision::Allowed;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS {
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < burst);
        }
        let bucket = buckets
            .entry((tenant.to_string(), extension.to_string()))
            .or_insert(Bucket { tokens: self.burst, at: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.per_sec).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            RateDecision::Allowed
        } else if self.per_sec > 0.0 {
            RateDecision::Limited { retry_after_secs: ((1.0 - bucket.tokens) / self.per_sec).ceil().max(1.0) as u64 }
        } else {
            RateDecision::Limited { retry_after_secs: 60 }
        }
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, tenant: &str, extension: &str) -> RateDecision {
        self.take(tenant, extension)
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
}

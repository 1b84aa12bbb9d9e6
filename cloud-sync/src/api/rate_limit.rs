//! Per-gateway rate limit of `POST /v1/batches`: a token bucket per gateway
//! id, refilled at `rate` batches per second up to `burst`. A batch that
//! finds its bucket empty is answered 429 with the whole seconds until the
//! next token as `Retry-After`, which the uplink honours.
//!
//! Hand-written rather than `governor`: a dozen lines of arithmetic, no
//! new dependency, and the wait for `Retry-After` falls out directly. The
//! buckets live in this collector's memory: behind a load balancer each
//! instance limits on its own (N instances allow up to N × rate).
//!
//! Memory is bounded: when the map passes [`PRUNE_AT`] gateways, buckets
//! that have refilled completely (idle gateways) are dropped, since a full
//! bucket is the same as no bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Gateways tracked before idle buckets are pruned.
const PRUNE_AT: usize = 10_000;

/// Token buckets keyed by gateway id.
#[derive(Debug)]
pub struct RateLimiter {
    /// Batches per second a gateway may post on average.
    rate: f64,
    /// Batches a gateway may post at once after being idle.
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// `rate` batches/s (must be positive), `burst` at least 1.
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one batch from `gateway_id`'s bucket, or says how long to wait.
    pub fn check(&self, gateway_id: &str) -> Result<(), Duration> {
        self.check_at(gateway_id, Instant::now())
    }

    fn check_at(&self, gateway_id: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(gateway_id) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refilled(b, now, rate, burst) < burst);
        }
        let bucket = buckets.entry(gateway_id.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(bucket, now, self.rate, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * rate).min(burst)
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (the header
/// has no fractions; 0 would invite an immediate retry).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_per_gateway() {
        let limiter = RateLimiter::new(2.0, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("gw-a", start).is_ok());
        }
        let wait = limiter.check_at("gw-a", start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another gateway has its own bucket.
        assert!(limiter.check_at("gw-b", start).is_ok());
        // Half a second later one more batch is allowed, not two.
        let later = start + Duration::from_millis(500);
        assert!(limiter.check_at("gw-a", later).is_ok());
        assert!(limiter.check_at("gw-a", later).is_err());
        // Idle for long, the bucket holds `burst`, no more.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check_at("gw-a", much_later).is_ok());
        }
        assert!(limiter.check_at("gw-a", much_later).is_err());
    }

    #[test]
    fn slow_rates_ask_for_long_waits() {
        let limiter = RateLimiter::new(0.1, 1);
        let start = Instant::now();
        assert!(limiter.check_at("gw", start).is_ok());
        let wait = limiter.check_at("gw", start).unwrap_err();
        assert_eq!(retry_after_secs(wait), 10);
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let limiter = RateLimiter::new(1000.0, 1);
        let start = Instant::now();
        for i in 0..PRUNE_AT {
            limiter.check_at(&format!("gw-{i}"), start).unwrap();
        }
        let later = start + Duration::from_secs(1);
        limiter.check_at("gw-new", later).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}

//! `put_log_events_rate`: a token bucket for `PutLogEvents` calls, shared by every
//! cloudwatch_logs output of the process that talks to the same region and endpoint.
//!
//! CloudWatch Logs throttles per account and region, not per stream, so the aggregators of a
//! fleet share one quota: each process can be capped at `quota / instances` requests per
//! second so throttling stays the exception. The bucket holds one second of requests (at least
//! one); a caller takes a token at once, or reserves the next one and sleeps until it is due,
//! so waiting callers are served in order. Uses tokio's clock (paused in tests).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// A token bucket refilled at `rate` tokens per second.
#[derive(Debug)]
pub struct TokenBucket {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    rate: f64,
    burst: f64,
    /// May go negative: reservations not yet due.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` requests per second (must be > 0), with a burst of one second's worth.
    pub fn new(rate: f64) -> Self {
        let burst = rate.max(1.0);
        TokenBucket {
            state: Mutex::new(State {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            }),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> f64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).rate
    }

    fn lower_rate(&self, rate: f64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if rate < s.rate {
            s.rate = rate;
            s.burst = rate.max(1.0);
            s.tokens = s.tokens.min(s.burst);
        }
    }

    /// Takes one token; returns how long the caller must wait before using it.
    pub fn reserve(&self) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
        s.last = now;
        s.tokens = (s.tokens + elapsed * s.rate).min(s.burst);
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.tokens / s.rate)
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let wait = self.reserve();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The process-wide bucket for `key` (region and endpoint). When outputs configure different
/// rates for the same key, the lowest wins.
pub fn shared(key: &str, rate: f64) -> Arc<TokenBucket> {
    static BUCKETS: OnceLock<Mutex<HashMap<String, Arc<TokenBucket>>>> = OnceLock::new();
    let mut m = BUCKETS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let b = m
        .entry(key.to_string())
        .or_insert_with(|| Arc::new(TokenBucket::new(rate)))
        .clone();
    b.lower_rate(rate);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_is_enforced_after_the_burst() {
        let b = TokenBucket::new(5.0);
        let start = Instant::now();
        for _ in 0..15 {
            b.acquire().await;
        }
        // 5 at once, then 10 more at 5/s = 2 s.
        let el = start.elapsed();
        assert!(
            el >= Duration::from_millis(1990) && el <= Duration::from_millis(2010),
            "{el:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_work() {
        let b = TokenBucket::new(0.5);
        let start = Instant::now();
        b.acquire().await;
        b.acquire().await;
        let el = start.elapsed();
        assert!(
            el >= Duration::from_millis(1990) && el <= Duration::from_millis(2010),
            "{el:?}"
        );
    }

    #[test]
    fn shared_buckets_take_the_lowest_rate() {
        let a = shared("test-region|http://x", 10.0);
        let b = shared("test-region|http://x", 4.0);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.rate(), 4.0);
        let c = shared("test-region|http://x", 8.0);
        assert_eq!(c.rate(), 4.0);
    }
}

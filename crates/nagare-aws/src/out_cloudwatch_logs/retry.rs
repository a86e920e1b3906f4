//! Retrying one `PutLogEvents` request inside a write.
//!
//! Two layers, so a burst of throttling never discards anything:
//!
//! 1. **here, per request**: a throttled / unavailable / failed request is sent again after
//!    a jittered exponential wait (`put_log_events_retry_wait` x 2^n, capped at
//!    [`MAX_RETRY_WAIT`], each wait drawn from its upper half), at most
//!    `put_log_events_retry_limit` times (`put_log_events_disable_retry_limit` lifts the
//!    limit). Only that request is repeated; the batches of the chunk already accepted are not.
//! 2. **the buffer, per chunk**: when the limit is reached the write returns
//!    `WriteError::Retryable`; the chunk stays in the buffer and the buffer's retry policy
//!    (`retry_wait`, `retry_max_interval`, `retry_timeout`, `retry_forever`, secondary) takes
//!    over. The retried write skips every batch already accepted.
//!
//! Fluentd's plugin instead discards the events after 17 throttled attempts.

use super::errors::{ApiError, ErrorKind};
use std::time::Duration;

/// Default `put_log_events_retry_wait` (Fluentd's plugin: 1 s).
pub const DEFAULT_RETRY_WAIT: Duration = Duration::from_secs(1);
/// Default `put_log_events_retry_limit`: retries inside one write before the chunk goes back
/// to the buffer (Fluentd's plugin: 17, after which it discards the events).
pub const DEFAULT_RETRY_LIMIT: u32 = 2;
/// Longest single wait inside a write.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x9e37_79b9_7f4a_7c15);
        Backoff {
            base,
            max,
            attempt: 0,
            rng: h.finish() | 1,
        }
    }

    /// Retries so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    fn rand01(&mut self) -> f64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The wait before the next retry: `base * 2^n` capped at `max`, drawn from
    /// [half, full] so parallel writers spread out.
    pub fn next_wait(&mut self) -> Duration {
        let exp = self.base.as_secs_f64() * 2f64.powi(self.attempt.min(30) as i32);
        self.attempt += 1;
        let full = exp.min(self.max.as_secs_f64());
        Duration::from_secs_f64(full * (0.5 + 0.5 * self.rand01()))
    }
}

/// The in-write retry settings.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub retry_wait: Duration,
    /// `None`: no limit (`put_log_events_disable_retry_limit`).
    pub retry_limit: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_wait: DEFAULT_RETRY_WAIT,
            retry_limit: Some(DEFAULT_RETRY_LIMIT),
        }
    }
}

/// What to do after a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send it again after this wait.
    RetryAfter(Duration),
    /// Give the chunk back to the buffer (retryable).
    Yield,
    /// Give up on this request (unrecoverable).
    Fail,
}

impl RetryPolicy {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.retry_wait, MAX_RETRY_WAIT)
    }

    /// Decides after `err`, given the backoff so far.
    pub fn next(&self, err: &ApiError, backoff: &mut Backoff) -> Next {
        if !err.kind.is_retryable() {
            return Next::Fail;
        }
        if let Some(limit) = self.retry_limit {
            if backoff.attempts() >= limit {
                return Next::Yield;
            }
        }
        // An unknown error is retried by the buffer's slower schedule, not in a tight loop.
        if err.kind == ErrorKind::Other && backoff.attempts() >= 1 {
            return Next::Yield;
        }
        Next::RetryAfter(backoff.next_wait())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_and_are_capped() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let waits: Vec<f64> = (0..6).map(|_| b.next_wait().as_secs_f64()).collect();
        let full = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0];
        for (w, f) in waits.iter().zip(full) {
            assert!(*w >= f / 2.0 - 1e-9 && *w <= f + 1e-9, "{waits:?}");
        }
        // Two backoffs do not draw the same jitter.
        let mut a = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut c = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let xs: Vec<Duration> = (0..4).map(|_| a.next_wait()).collect();
        let ys: Vec<Duration> = (0..4).map(|_| c.next_wait()).collect();
        assert_ne!(xs, ys);
    }

    #[test]
    fn policy_retries_then_yields_and_fails_fast_on_auth() {
        let p = RetryPolicy {
            retry_wait: Duration::from_millis(10),
            retry_limit: Some(2),
        };
        let mut b = p.backoff();
        let throttled = ApiError::new("PutLogEvents", ErrorKind::Throttled, "x");
        assert!(matches!(p.next(&throttled, &mut b), Next::RetryAfter(_)));
        assert!(matches!(p.next(&throttled, &mut b), Next::RetryAfter(_)));
        assert_eq!(p.next(&throttled, &mut b), Next::Yield);
        let auth = ApiError::new("PutLogEvents", ErrorKind::Auth, "x");
        assert_eq!(p.next(&auth, &mut p.backoff()), Next::Fail);
        let unlimited = RetryPolicy {
            retry_limit: None,
            ..p
        };
        let mut b = unlimited.backoff();
        for _ in 0..50 {
            assert!(matches!(
                unlimited.next(&throttled, &mut b),
                Next::RetryAfter(_)
            ));
        }
    }
}

//! Retry schedule: exponential backoff (`retry_wait * base^(n-1)`, capped by
//! `retry_max_interval`, jittered 0.875x-1.125x when `retry_randomize`) or periodic
//! (`retry_wait` every time). Limits: `retry_max_times` retries, or `retry_timeout` since the
//! first failure (with a `<secondary>`: `retry_secondary_threshold` of it), unless
//! `retry_forever`. Times use tokio's clock, so tests pause and advance it.

use crate::config::{BufferConfig, RetryType};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RetryState {
    /// Retries scheduled so far in this failure streak.
    pub steps: u32,
    /// When the streak began (the first failure).
    pub started: Instant,
    /// When the next attempt may start.
    pub next_at: Option<Instant>,
}

impl RetryState {
    pub fn new() -> Self {
        RetryState {
            steps: 0,
            started: Instant::now(),
            next_at: None,
        }
    }

    /// The wait before the next attempt (call after a failure); counts one retry.
    pub fn next_wait(&mut self, cfg: &BufferConfig) -> Duration {
        self.steps += 1;
        let base = match cfg.retry_type {
            RetryType::Periodic => cfg.retry_wait.as_secs_f64(),
            RetryType::ExponentialBackoff => {
                cfg.retry_wait.as_secs_f64()
                    * cfg
                        .retry_exponential_backoff_base
                        .powi(self.steps.saturating_sub(1).min(64) as i32)
            }
        };
        let mut wait = base;
        if let Some(max) = cfg.retry_max_interval {
            wait = wait.min(max.as_secs_f64());
        }
        if cfg.retry_randomize {
            wait *= 0.875 + rand::random::<f64>() * 0.25;
        }
        let wait = Duration::from_secs_f64(wait.clamp(0.0, 24.0 * 3600.0));
        self.next_at = Some(Instant::now() + wait);
        wait
    }

    /// Whether the primary output is given up on: `retry_max_times` retries done, or
    /// `retry_timeout` (times `retry_secondary_threshold` when there is a secondary) elapsed.
    /// `retry_forever` never is.
    pub fn exhausted(&self, cfg: &BufferConfig, has_secondary: bool) -> bool {
        if cfg.retry_forever {
            return false;
        }
        if let Some(max) = cfg.retry_max_times {
            if self.steps >= max {
                return true;
            }
        }
        let limit = if has_secondary {
            cfg.retry_timeout.mul_f64(cfg.retry_secondary_threshold)
        } else {
            cfg.retry_timeout
        };
        self.started.elapsed() >= limit
    }
}

impl Default for RetryState {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_schedule_without_jitter() {
        let cfg = BufferConfig {
            retry_randomize: false,
            retry_max_interval: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        let mut r = RetryState::new();
        let waits: Vec<u64> = (0..5).map(|_| r.next_wait(&cfg).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn periodic_and_jitter_bounds() {
        let cfg = BufferConfig {
            retry_type: RetryType::Periodic,
            retry_wait: Duration::from_secs(8),
            ..Default::default()
        };
        let mut r = RetryState::new();
        for _ in 0..50 {
            let w = r.next_wait(&cfg).as_secs_f64();
            assert!((7.0..=9.0).contains(&w), "{w}");
        }
    }

    #[test]
    fn max_times_exhausts() {
        let cfg = BufferConfig {
            retry_max_times: Some(2),
            ..Default::default()
        };
        let mut r = RetryState::new();
        r.next_wait(&cfg);
        assert!(!r.exhausted(&cfg, false));
        r.next_wait(&cfg);
        assert!(r.exhausted(&cfg, false));
        let forever = BufferConfig {
            retry_forever: true,
            ..cfg
        };
        assert!(!r.exhausted(&forever, false));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_and_secondary_threshold() {
        let cfg = BufferConfig {
            retry_timeout: Duration::from_secs(100),
            ..Default::default()
        };
        let r = RetryState::new();
        tokio::time::advance(Duration::from_secs(81)).await;
        assert!(!r.exhausted(&cfg, false));
        assert!(r.exhausted(&cfg, true));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(r.exhausted(&cfg, false));
    }
}

//! Retry schedule: exponential backoff (`retry_wait * base^(n-1)`, capped by
//! `retry_max_interval`, jittered when `retry_randomize`) or periodic.

use crate::config::{BufferConfig, RetryType};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RetryState {
    pub steps: u32,
    pub started: Instant,
}

impl RetryState {
    pub fn new() -> Self {
        RetryState {
            steps: 0,
            started: Instant::now(),
        }
    }

    /// The wait before the next attempt (call after a failure).
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
        Duration::from_secs_f64(wait.clamp(0.0, 24.0 * 3600.0))
    }

    /// Whether retries are exhausted (`retry_forever` never is).
    pub fn exhausted(&self, cfg: &BufferConfig) -> bool {
        if cfg.retry_forever {
            return false;
        }
        if let Some(max) = cfg.retry_max_times {
            if self.steps >= max {
                return true;
            }
        }
        self.started.elapsed() >= cfg.retry_timeout
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
    fn max_times_exhausts() {
        let cfg = BufferConfig {
            retry_max_times: Some(2),
            ..Default::default()
        };
        let mut r = RetryState::new();
        r.next_wait(&cfg);
        assert!(!r.exhausted(&cfg));
        r.next_wait(&cfg);
        assert!(r.exhausted(&cfg));
        let forever = BufferConfig {
            retry_forever: true,
            ..cfg
        };
        assert!(!r.exhausted(&forever));
    }
}

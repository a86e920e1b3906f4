//! Health facts for `/health`: outputs report when their writes start and stop failing, and
//! buffers report their fill level. `/health` is unhealthy while a buffer is over its threshold
//! or an output has been failing longer than its threshold, so an NLB target-group health
//! check takes an aggregator that cannot deliver out of rotation.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
struct OutputHealth {
    failing_since: Option<Instant>,
    last_error: String,
    buffer_used: u64,
    buffer_limit: u64,
}

fn registry() -> &'static Mutex<BTreeMap<String, OutputHealth>> {
    static R: OnceLock<Mutex<BTreeMap<String, OutputHealth>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn with<R>(id: &str, f: impl FnOnce(&mut OutputHealth) -> R) -> R {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    f(r.entry(id.to_string()).or_default())
}

/// A write failed (the failure period starts now unless it already started).
pub fn output_failed(id: &str, error: &str) {
    with(id, |h| {
        h.failing_since.get_or_insert_with(Instant::now);
        h.last_error = error.chars().take(300).collect();
    })
}

/// A write succeeded: the output is healthy again.
pub fn output_succeeded(id: &str) {
    with(id, |h| h.failing_since = None)
}

/// The buffer of output `id` holds `used` of `limit` bytes.
pub fn buffer_usage(id: &str, used: u64, limit: u64) {
    with(id, |h| {
        h.buffer_used = used;
        h.buffer_limit = limit;
    })
}

/// Forgets output `id` (a configuration reload stopped it): a removed output that was failing
/// or full must not keep `/health` unhealthy.
pub fn forget(id: &str) {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
}

/// Thresholds for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Unhealthy once an output has failed for this long.
    pub max_failing: Duration,
    /// Unhealthy once a buffer is this full (0.0-1.0).
    pub max_buffer_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_failing: Duration::from_secs(60),
            max_buffer_ratio: 0.8,
        }
    }
}

/// `Ok(())` when healthy, else the reasons.
pub fn check(t: &Thresholds) -> Result<(), Vec<String>> {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut reasons = Vec::new();
    for (id, h) in r.iter() {
        if let Some(since) = h.failing_since {
            let d = since.elapsed();
            if d >= t.max_failing {
                reasons.push(format!(
                    "output {id} failing for {}s: {}",
                    d.as_secs(),
                    h.last_error
                ));
            }
        }
        if h.buffer_limit > 0 && h.buffer_used as f64 >= t.max_buffer_ratio * h.buffer_limit as f64
        {
            reasons.push(format!(
                "output {id} buffer {}% full ({} of {} bytes)",
                h.buffer_used * 100 / h.buffer_limit,
                h.buffer_used,
                h.buffer_limit
            ));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_long_enough_or_full_buffer_is_unhealthy() {
        let t = Thresholds {
            max_failing: Duration::ZERO,
            max_buffer_ratio: 0.5,
        };
        output_failed("h-test-1", "boom");
        assert!(check(&t)
            .unwrap_err()
            .iter()
            .any(|r| r.contains("h-test-1")));
        output_succeeded("h-test-1");
        buffer_usage("h-test-1", 60, 100);
        assert!(check(&t).unwrap_err().iter().any(|r| r.contains("60%")));
        forget("h-test-1");
        assert!(check(&t).is_ok(), "a forgotten output is not reported");
        buffer_usage("h-test-1", 10, 100);
        assert!(check(&t).is_ok());
    }
}

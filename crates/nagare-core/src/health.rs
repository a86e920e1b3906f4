//! Health facts for `/health`: outputs report when their writes start and stop failing, and
//! buffers report their fill level. `/health` is unhealthy while a buffer is over its threshold
//! or an output has been failing longer than its threshold, so an NLB target-group health
//! check takes an aggregator that cannot deliver out of rotation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Default)]
struct OutputHealth {
    failing_since: Option<Instant>,
    /// The latest failure: a failure period whose last failure is older than the quiet window
    /// is over (an output whose failed chunk went to its secondary or quarantine may well write
    /// nothing for a while: no success would ever clear it).
    last_failure: Option<Instant>,
    /// When the output's next retry is due: a period stays open until then (backoff waits
    /// grow past any quiet window: 1, 2, 4 ... 128 s and on without `retry_max_interval`).
    retry_due: Option<Instant>,
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

/// The shortest quiet window: a failure period ends after this long without a failure, or
/// after `max_failing` when that is longer.
pub const MIN_QUIET: Duration = Duration::from_secs(60);

/// The quiet window of the thresholds last checked, in milliseconds.
static QUIET_MS: AtomicU64 = AtomicU64::new(MIN_QUIET.as_millis() as u64);

fn quiet_window(t: &Thresholds) -> Duration {
    t.max_failing.max(MIN_QUIET)
}

impl OutputHealth {
    /// The failure period is over: no failure for the quiet window, and no retry due within
    /// it (a retry still to come keeps the period open).
    fn quiet_since_long(&self, now: Instant, quiet: Duration) -> bool {
        self.last_failure
            .is_some_and(|l| now.saturating_duration_since(l) >= quiet)
            && self
                .retry_due
                .is_none_or(|d| now.saturating_duration_since(d) >= quiet)
    }
}

/// A write failed (the failure period starts now unless it already started and its last
/// failure is within the quiet window).
pub fn output_failed(id: &str, error: &str) {
    let quiet = Duration::from_millis(QUIET_MS.load(Ordering::Relaxed));
    with(id, |h| {
        let now = Instant::now();
        if h.quiet_since_long(now, quiet) {
            h.failing_since = None;
        }
        h.failing_since.get_or_insert(now);
        h.last_failure = Some(now);
        h.last_error = error.chars().take(300).collect();
    })
}

/// The output will retry in `wait`: its failure period lasts at least until then.
pub fn retry_scheduled(id: &str, wait: Duration) {
    with(id, |h| h.retry_due = Some(Instant::now() + wait))
}

/// A write succeeded: the output is healthy again.
pub fn output_succeeded(id: &str) {
    with(id, |h| {
        h.failing_since = None;
        h.retry_due = None;
    })
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

/// `Ok(())` when healthy, else the reasons. An output is failing from its first failed write
/// until a write succeeds, or until no write has failed and no retry has been due for the
/// quiet window (`max_failing`, at least [`MIN_QUIET`]); it makes `/health` unhealthy once
/// that has lasted `max_failing`.
pub fn check(t: &Thresholds) -> Result<(), Vec<String>> {
    let quiet = quiet_window(t);
    QUIET_MS.store(quiet.as_millis() as u64, Ordering::Relaxed);
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut reasons = Vec::new();
    let now = Instant::now();
    for (id, h) in r.iter_mut() {
        if h.quiet_since_long(now, quiet) {
            h.failing_since = None;
        }
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

    /// One failed chunk handed to the secondary, then nothing to write: no success will come,
    /// so the failure period ends once the quiet window has passed without another failure.
    #[test]
    fn a_failure_period_ends_after_a_quiet_window() {
        let t = Thresholds {
            max_failing: Duration::ZERO,
            max_buffer_ratio: 1.0,
        };
        let id = "h-test-quiet";
        output_failed(id, "AccessDenied");
        let unhealthy = |t: &Thresholds| check(t).is_err_and(|r| r.iter().any(|r| r.contains(id)));
        assert!(unhealthy(&t));
        // The last failure is older than the window: over.
        let ago = |d: Duration| {
            Instant::now()
                .checked_sub(d)
                .expect("uptime above 5 minutes")
        };
        with(id, |h| {
            let past = ago(MIN_QUIET + Duration::from_secs(1));
            h.last_failure = Some(past);
            h.failing_since = Some(past);
        });
        assert!(!unhealthy(&t));
        // A new failure starts a new period, not the old one's.
        output_failed(id, "AccessDenied");
        let t5 = Thresholds {
            max_failing: Duration::from_secs(300),
            max_buffer_ratio: 1.0,
        };
        assert!(!unhealthy(&t5), "a fresh period is not 5 minutes old");
        // Failures that keep coming keep it failing.
        with(id, |h| {
            h.failing_since = Some(ago(Duration::from_secs(301)))
        });
        output_failed(id, "AccessDenied");
        assert!(unhealthy(&t5));
        forget(id);
    }

    /// A destination that stays down, with backoff waits longer than the quiet window (1, 2,
    /// 4 ... 128 s without retry_max_interval): the retry still to come keeps the output
    /// failing between attempts.
    #[test]
    fn a_retry_still_to_come_keeps_the_period_open() {
        let t = Thresholds {
            max_failing: Duration::from_secs(60),
            max_buffer_ratio: 1.0,
        };
        let id = "h-test-retry-due";
        let ago = |d: Duration| {
            Instant::now()
                .checked_sub(d)
                .expect("uptime above 5 minutes")
        };
        let unhealthy = |t: &Thresholds| check(t).is_err_and(|r| r.iter().any(|r| r.contains(id)));
        output_failed(id, "ServiceUnavailable");
        retry_scheduled(id, Duration::from_secs(128));
        // The last failure is 100 s old (past the 60 s window), the next retry 28 s away.
        with(id, |h| {
            h.failing_since = Some(ago(Duration::from_secs(200)));
            h.last_failure = Some(ago(Duration::from_secs(100)));
            h.retry_due = Some(Instant::now() + Duration::from_secs(28));
        });
        assert!(unhealthy(&t));
        // The retry came and went a window ago and nothing failed since: over.
        with(id, |h| h.retry_due = Some(ago(Duration::from_secs(61))));
        assert!(!unhealthy(&t));
        // A success clears it all.
        output_failed(id, "ServiceUnavailable");
        output_succeeded(id);
        assert!(!unhealthy(&Thresholds {
            max_failing: Duration::ZERO,
            max_buffer_ratio: 1.0,
        }));
        forget(id);
    }
}

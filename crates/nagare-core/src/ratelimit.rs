//! Keeps a repeated warning from flooding the log: at most `burst` lines per key per window;
//! the number suppressed is reported with the next line that gets through.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    burst: u32,
    state: Mutex<HashMap<String, (Instant, u32, u64)>>,
}

/// Upper bound on distinct keys remembered (keys include peer addresses).
const MAX_KEYS: usize = 4096;

impl LogLimiter {
    pub fn new(window: Duration, burst: u32) -> Self {
        LogLimiter {
            window,
            burst,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be logged now (with how many were
    /// suppressed since the last one), `None` when it should be skipped.
    pub fn check(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.len() >= MAX_KEYS && !st.contains_key(key) {
            st.retain(|_, (start, _, _)| now.duration_since(*start) < self.window);
            if st.len() >= MAX_KEYS {
                return None;
            }
        }
        let e = st.entry(key.to_string()).or_insert((now, 0, 0));
        if now.duration_since(e.0) >= self.window {
            let suppressed = e.2;
            *e = (now, 1, 0);
            return Some(suppressed);
        }
        if e.1 < self.burst {
            e.1 += 1;
            Some(0)
        } else {
            e.2 += 1;
            None
        }
    }
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(Duration::from_secs(10), 5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_bursts_per_key() {
        let l = LogLimiter::new(Duration::from_secs(3600), 2);
        assert_eq!(l.check("a"), Some(0));
        assert_eq!(l.check("a"), Some(0));
        assert_eq!(l.check("a"), None);
        assert_eq!(l.check("b"), Some(0));
    }
}

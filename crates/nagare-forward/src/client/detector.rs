//! Phi accrual failure detection, as fluentd's `failure_detector.rb`: a window of up to 1000
//! inter-heartbeat gaps with a linearly weighted mean (newer gaps weigh more), and
//! `phi = (1/ln 10) * (now - last - hb + 1) / (mean - hb + 1)` in seconds. With a 1 s
//! interval and threshold 16 a node is detached after about 37 s of silence.

use std::collections::VecDeque;

const WINDOW: usize = 1000;

#[derive(Debug, Clone)]
pub struct Detector {
    heartbeat_interval: f64,
    last: f64,
    gaps: VecDeque<f64>,
}

impl Detector {
    pub fn new(heartbeat_interval: f64, now: f64) -> Self {
        Detector {
            heartbeat_interval,
            last: now,
            gaps: VecDeque::new(),
        }
    }

    pub fn add(&mut self, now: f64) {
        if self.gaps.len() >= WINDOW {
            self.gaps.pop_front();
        }
        self.gaps.push_back((now - self.last).max(0.0));
        self.last = now;
    }

    pub fn sample_size(&self) -> usize {
        self.gaps.len()
    }

    pub fn clear(&mut self, now: f64) {
        self.gaps.clear();
        self.last = now;
    }

    pub fn since_last(&self, now: f64) -> f64 {
        now - self.last
    }

    pub fn phi(&self, now: f64) -> f64 {
        if self.gaps.is_empty() {
            return 0.0;
        }
        let (mut sum, mut fact) = (0.0, 0.0);
        for (i, g) in self.gaps.iter().enumerate() {
            sum += g * (1 + i) as f64;
            fact += (1 + i) as f64;
        }
        let mean = sum / fact - self.heartbeat_interval + 1.0;
        let t = now - self.last - self.heartbeat_interval + 1.0;
        (1.0 / std::f64::consts::LN_10) * t / mean.max(1e-6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_heartbeats_keep_phi_low_and_silence_raises_it() {
        let mut d = Detector::new(1.0, 0.0);
        for i in 1..=20 {
            d.add(i as f64);
        }
        assert!(d.phi(21.0) < 1.0);
        assert!(d.phi(50.0) < 16.0);
        assert!(d.phi(60.0) > 16.0, "{}", d.phi(60.0));
    }
}

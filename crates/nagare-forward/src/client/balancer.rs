//! Weighted selection as fluentd's `load_balancer.rb`: weights divided by their GCD, each
//! node repeated weight/gcd times, the list repeated to a useful length and shuffled with a
//! per-process seed, then walked round-robin skipping unavailable nodes. Standby nodes are
//! promoted (healthy ones, in order) until they cover the weight of unavailable regular nodes.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Balancer {
    order: Vec<usize>,
    next: AtomicUsize,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Balancer {
    /// `weights[i]` of node i (standby nodes included).
    pub fn new(weights: &[u32]) -> Self {
        let g = weights
            .iter()
            .copied()
            .filter(|&w| w > 0)
            .fold(0, gcd)
            .max(1);
        let mut order = Vec::new();
        for (i, &w) in weights.iter().enumerate() {
            for _ in 0..(w / g) {
                order.push(i);
            }
        }
        let base = order.clone();
        while !base.is_empty() && order.len() < 6 * weights.len().max(1) {
            order.extend_from_slice(&base);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
        order.shuffle(&mut rng);
        Balancer {
            order,
            next: AtomicUsize::new(0),
        }
    }

    /// Nodes to try for one chunk, in order, each at most once: the eligible node the
    /// round-robin lands on first, then the others (failover within one flush).
    pub fn candidates(&self, eligible: &[bool]) -> Vec<usize> {
        let n = self.order.len();
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = self.order[(start + k) % n];
            if eligible.get(i).copied().unwrap_or(false) && !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

/// Which nodes may take traffic: available regular nodes, plus available standby nodes
/// promoted in order until they cover the weight lost to unavailable regular nodes.
pub fn eligible(weights: &[u32], standby: &[bool], available: &[bool]) -> Vec<bool> {
    let mut lost: i64 = 0;
    for i in 0..weights.len() {
        if !standby[i] && !available[i] {
            lost += weights[i] as i64;
        }
    }
    let mut out: Vec<bool> = (0..weights.len())
        .map(|i| !standby[i] && available[i] && weights[i] > 0)
        .collect();
    for i in 0..weights.len() {
        if lost <= 0 {
            break;
        }
        if standby[i] && available[i] && weights[i] > 0 {
            out[i] = true;
            lost -= weights[i] as i64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_shape_the_distribution() {
        let b = Balancer::new(&[60, 20, 0]);
        let mut counts = [0usize; 3];
        for _ in 0..4000 {
            counts[b.candidates(&[true, true, true])[0]] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!(counts[0] > 2 * counts[1], "{counts:?}");
    }

    #[test]
    fn candidates_fail_over_to_every_other_node_once() {
        let b = Balancer::new(&[1, 1, 1]);
        let c = b.candidates(&[true, false, true]);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&1));
    }

    #[test]
    fn standby_is_promoted_only_when_regulars_are_down() {
        let w = [60, 60, 60];
        let s = [false, false, true];
        assert_eq!(
            eligible(&w, &s, &[true, true, true]),
            vec![true, true, false]
        );
        assert_eq!(
            eligible(&w, &s, &[false, true, true]),
            vec![false, true, true]
        );
    }
}

//! Counters and gauges, registered by name and labels, rendered in Prometheus text format.
//!
//! Every plugin registers its counters under its `@id` (label `plugin_id`); drops and
//! rejections carry a `reason` label, so each path that loses or refuses data is visible.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A monotonically increasing counter.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A counter not in the registry (tests, scratch use).
    pub fn detached() -> Self {
        Counter::default()
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn detached() -> Self {
        Gauge::default()
    }
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    counters: BTreeMap<(&'static str, Labels), Counter>,
    gauges: BTreeMap<(&'static str, Labels), Gauge>,
    help: BTreeMap<&'static str, &'static str>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The counter `name{labels}`, created on first use and shared afterwards.
pub fn counter(name: &'static str, help: &'static str, l: &[(&'static str, &str)]) -> Counter {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.help.entry(name).or_insert(help);
    r.counters.entry((name, labels(l))).or_default().clone()
}

/// The gauge `name{labels}`, created on first use and shared afterwards.
pub fn gauge(name: &'static str, help: &'static str, l: &[(&'static str, &str)]) -> Gauge {
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.help.entry(name).or_insert(help);
    r.gauges.entry((name, labels(l))).or_default().clone()
}

/// A family of counters that differ only in their `reason` label.
#[derive(Clone, Debug)]
pub struct ReasonCounters {
    name: &'static str,
    help: &'static str,
    base: Vec<(&'static str, String)>,
}

impl ReasonCounters {
    pub fn new(name: &'static str, help: &'static str, base: &[(&'static str, &str)]) -> Self {
        ReasonCounters {
            name,
            help,
            base: labels(base),
        }
    }
    pub fn get(&self, reason: &str) -> Counter {
        let mut l: Vec<(&'static str, &str)> =
            self.base.iter().map(|(k, v)| (*k, v.as_str())).collect();
        l.push(("reason", reason));
        counter(self.name, self.help, &l)
    }
    pub fn inc(&self, reason: &str) {
        self.get(reason).inc();
    }
    pub fn add(&self, reason: &str, n: u64) {
        self.get(reason).add(n);
    }
    /// Sum over every reason.
    pub fn total(&self) -> u64 {
        let r = registry().lock().unwrap_or_else(|e| e.into_inner());
        r.counters
            .iter()
            .filter(|((n, l), _)| {
                *n == self.name && l.len() == self.base.len() + 1 && l.starts_with(&self.base)
            })
            .map(|(_, c)| c.get())
            .sum()
    }
}

/// The current value of a counter or gauge, if it was ever registered.
pub fn value(name: &str, l: &[(&'static str, &str)]) -> Option<f64> {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let key = |n: &&'static str, ls: &Labels| {
        *n == name
            && ls.len() == l.len()
            && ls.iter().zip(l).all(|((a, b), (c, d))| a == c && b == d)
    };
    if let Some((_, c)) = r.counters.iter().find(|((n, ls), _)| key(n, ls)) {
        return Some(c.get() as f64);
    }
    r.gauges
        .iter()
        .find(|((n, ls), _)| key(n, ls))
        .map(|(_, g)| g.get() as f64)
}

/// Sets to 0 every gauge with label `key` = `value` (a plugin a reload stopped: its buffer
/// bytes, queued chunks, retry steps... must not keep their last values). Counters are kept:
/// they only go up, and a plugin coming back under the same `@id` continues them.
pub fn reset_gauges(key: &str, value: &str) {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    for ((_, ls), g) in r.gauges.iter() {
        if ls.iter().any(|(k, v)| *k == key && v == value) {
            g.set(0);
        }
    }
}

/// Sum of every counter `name` whose labels include all of `l` (e.g. every reason).
pub fn sum(name: &str, l: &[(&'static str, &str)]) -> f64 {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.counters
        .iter()
        .filter(|((n, ls), _)| {
            *n == name
                && l.iter()
                    .all(|(k, v)| ls.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|(_, c)| c.get() as f64)
        .sum()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_labels(out: &mut String, l: &Labels) {
    if l.is_empty() {
        return;
    }
    out.push('{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    out.push('}');
}

/// Everything registered, in Prometheus text exposition format.
pub fn render_prometheus() -> String {
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    let mut last = "";
    for ((name, l), c) in &r.counters {
        if *name != last {
            let help = r.help.get(name).copied().unwrap_or("");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            last = name;
        }
        out.push_str(name);
        write_labels(&mut out, l);
        let _ = writeln!(out, " {}", c.get());
    }
    last = "";
    for ((name, l), g) in &r.gauges {
        if *name != last {
            let help = r.help.get(name).copied().unwrap_or("");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            last = name;
        }
        out.push_str(name);
        write_labels(&mut out, l);
        let _ = writeln!(out, " {}", g.get());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_gauges_zeroes_one_plugins_gauges_and_keeps_counters() {
        let g1 = gauge("nagare_test_bytes", "g", &[("plugin_id", "gone")]);
        let g2 = gauge("nagare_test_bytes", "g", &[("plugin_id", "kept")]);
        let c = counter("nagare_test_reset_total", "c", &[("plugin_id", "gone")]);
        g1.set(42);
        g2.set(7);
        c.add(3);
        reset_gauges("plugin_id", "gone");
        assert_eq!((g1.get(), g2.get(), c.get()), (0, 7, 3));
    }

    #[test]
    fn counters_are_shared_by_name_and_labels_and_rendered() {
        let a = counter("nagare_test_total", "a test", &[("plugin_id", "t1")]);
        let b = counter("nagare_test_total", "a test", &[("plugin_id", "t1")]);
        a.inc();
        b.add(2);
        assert_eq!(a.get(), 3);
        let text = render_prometheus();
        assert!(
            text.contains("nagare_test_total{plugin_id=\"t1\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE nagare_test_total counter"));
    }

    #[test]
    fn reason_counters_sum() {
        let r = ReasonCounters::new("nagare_test_drops_total", "drops", &[("plugin_id", "t2")]);
        r.inc("a");
        r.add("b", 4);
        assert_eq!(r.total(), 5);
    }
}

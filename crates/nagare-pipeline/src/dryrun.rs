//! Trap warnings for `--dry-run`: configurations that load but lose or loop data.
//!
//! [`check`] runs at the end of `Pipeline::build_with` on the already validated tree and adds
//! human-readable warnings to `ctx.warnings`:
//!
//! * **rewrite loops**: a `rewrite_tag_filter` rule whose new tag the same `<match>` takes
//!   again (Fluentd re-emits forever; Nagare sends those records to the next `<match>`);
//! * **rewrite rule sets without a catch-all**: records no rule matches are dropped (counted);
//! * **shadowed `<match>`es**: an earlier `<match>` takes every tag a later one would (e.g. an
//!   earlier `**`), so the later one is never reached;
//! * **retry settings that discard data**: `retry_max_times` / `retry_timeout` without
//!   `retry_forever` and without `<secondary>`: chunks are dropped once retries run out;
//! * **sources whose tag no `<match>` takes**: a `<source>` with a fixed `tag` (or
//!   `add_tag_prefix`) whose events reach no `<match>` in their label.
//!
//! Tag patterns are reasoned about with sample tags: each glob is instantiated with `*` -> `x`
//! and `**` -> `x`, `x.y`, nothing (regex patterns give no samples, so they are skipped). This
//! is an approximation: it can miss traps, and it reports a shadowed `<match>` only when the
//! earlier pattern takes every sample of the later one.

use crate::pattern::Pattern;
use crate::plugins::out_rewrite_tag_filter::RewriteConfig;
use crate::BuildCtx;
use nagare_config::Section;

/// One `<match>` of a label, in order.
struct MatchInfo<'a> {
    pattern: Pattern,
    sec: &'a Section,
}

struct LabelInfo<'a> {
    name: String,
    matches: Vec<MatchInfo<'a>>,
}

/// Sample tags a glob pattern matches (none for `/regex/` alternatives).
pub fn sample_tags(pattern: &str) -> Vec<String> {
    let mut out = Vec::new();
    for alt in pattern.split_whitespace() {
        if alt.starts_with('/') {
            continue;
        }
        for expanded in expand_braces(alt) {
            for s in instantiate(&expanded) {
                let ok = Pattern::new(alt).is_ok_and(|p| p.matches(s.as_bytes()));
                if ok && !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

/// `a.{b,c}.d` -> `a.b.d`, `a.c.d` (nested groups too; at most 16 results).
fn expand_braces(p: &str) -> Vec<String> {
    let Some(open) = p.find('{') else {
        return vec![p.to_string()];
    };
    let mut depth = 0;
    let mut close = None;
    for (i, c) in p[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![p.to_string()];
    };
    let inner = &p[open + 1..close];
    let mut parts = Vec::new();
    let (mut d, mut last) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => d += 1,
            '}' => d -= 1,
            ',' if d == 0 => {
                parts.push(&inner[last..i]);
                last = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[last..]);
    let mut out = Vec::new();
    for part in parts {
        for rest in expand_braces(&format!("{}{}{}", &p[..open], part, &p[close + 1..])) {
            if out.len() < 16 {
                out.push(rest);
            }
        }
    }
    out
}

/// Instantiates `*` and `**` with sample parts.
fn instantiate(glob: &str) -> Vec<String> {
    let mut acc = vec![String::new()];
    let b = glob.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'*' && b.get(i + 1) == Some(&b'*') {
            let mut next = Vec::new();
            for a in &acc {
                for fill in ["x", "x.y", ""] {
                    if next.len() < 24 {
                        next.push(format!("{a}{fill}"));
                    }
                }
            }
            acc = next;
            i += 2;
        } else if b[i] == b'*' {
            for a in &mut acc {
                a.push('x');
            }
            i += 1;
        } else if b[i] == b'\\' && i + 1 < b.len() {
            for a in &mut acc {
                a.push(b[i + 1] as char);
            }
            i += 2;
        } else {
            for a in &mut acc {
                a.push(b[i] as char);
            }
            i += 1;
        }
    }
    acc.into_iter()
        .map(|s| {
            let parts: Vec<&str> = s.split('.').filter(|p| !p.is_empty()).collect();
            parts.join(".")
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn labels(root: &Section) -> Vec<LabelInfo<'_>> {
    let mut out = vec![label_info("ROOT", &root.children)];
    for l in root.children_named("label") {
        out.push(label_info(l.arg.trim(), &l.children));
    }
    out
}

fn label_info<'a>(name: &str, children: &'a [Section]) -> LabelInfo<'a> {
    let matches = children
        .iter()
        .filter(|c| c.name == "match")
        .filter_map(|c| {
            Pattern::new(&c.arg)
                .ok()
                .map(|pattern| MatchInfo { pattern, sec: c })
        })
        .collect();
    LabelInfo {
        name: name.to_string(),
        matches,
    }
}

impl LabelInfo<'_> {
    fn route(&self, tag: &str) -> Option<usize> {
        self.matches
            .iter()
            .position(|m| m.pattern.matches(tag.as_bytes()))
    }

    fn route_from(&self, tag: &str, first: usize) -> Option<usize> {
        self.matches
            .iter()
            .enumerate()
            .skip(first)
            .find(|(_, m)| m.pattern.matches(tag.as_bytes()))
            .map(|(i, _)| i)
    }

    fn describe(&self, i: usize) -> String {
        let s = self.matches[i].sec;
        format!("{} at {}", s.describe(), s.span)
    }
}

/// Adds the trap warnings for `root` to `ctx.warnings` (deduplicated, in config order).
pub fn check(root: &Section, ctx: &mut BuildCtx) {
    let mut w = Vec::new();
    let labels = labels(root);
    for label in &labels {
        rewrite_traps(label, &labels, &ctx.hostname, &mut w);
        shadowed(label, &mut w);
    }
    for c in &root.children {
        match c.name.as_str() {
            "match" => retry_traps(c, &mut w),
            "label" => {
                for m in c.children_named("match") {
                    retry_traps(m, &mut w);
                }
            }
            "source" => source_traps(c, &labels, &mut w),
            _ => {}
        }
    }
    for x in w {
        if !ctx.warnings.contains(&x) {
            ctx.warnings.push(x);
        }
    }
}

fn rewrite_traps(
    label: &LabelInfo<'_>,
    all: &[LabelInfo<'_>],
    hostname: &str,
    w: &mut Vec<String>,
) {
    for (i, m) in label.matches.iter().enumerate() {
        if m.sec.type_name() != Some("rewrite_tag_filter") {
            continue;
        }
        let Ok(cfg) = RewriteConfig::parse(m.sec, hostname) else {
            continue;
        };
        let here = label.describe(i);
        if !cfg.has_catch_all() {
            w.push(format!(
                "{here}: rewrite_tag_filter has no catch-all rule: records no <rule> matches are dropped (counted as no_rule_matched); add a last rule such as `key {} pattern {} invert true` to route the rest",
                cfg.rules[0].key_src, cfg.rules[0].pattern_src
            ));
        }
        let target = match &cfg.label {
            Some(l) => all.iter().find(|x| &x.name == l),
            None => Some(label),
        };
        let same = cfg.label.as_deref().is_none_or(|l| l == label.name);
        if !same {
            continue;
        }
        let Some(target) = target else { continue };
        let mut reported = false;
        for sample in sample_tags(m.pattern.as_str()) {
            if reported {
                break;
            }
            for (ri, new_tag) in cfg.sample_tags(&sample).iter().enumerate() {
                if target.route(new_tag) == Some(i) {
                    let next = match target.route_from(new_tag, i + 1) {
                        Some(n) => format!("to {}", target.describe(n)),
                        None => "nowhere: no later <match> takes it, so they are dropped (counted as no_match)".to_string(),
                    };
                    w.push(format!(
                        "{here}: rewrite loop: rule {} (tag {}) turns `{sample}` into `{new_tag}`, which this same <match> takes again; Fluentd would re-emit it forever (fluent-plugin-rewrite-tag-filter#83), Nagare sends such records {next} (counted as rewrite_loop_avoided). Narrow the pattern or re-emit into another label with @label",
                        ri + 1,
                        cfg.rules[ri].tag_src
                    ));
                    reported = true;
                    break;
                }
            }
        }
    }
}

fn shadowed(label: &LabelInfo<'_>, w: &mut Vec<String>) {
    for (j, later) in label.matches.iter().enumerate() {
        let samples = sample_tags(later.pattern.as_str());
        if samples.is_empty() {
            continue;
        }
        let Some(i) = (0..j).find(|&i| {
            samples
                .iter()
                .all(|s| label.matches[i].pattern.matches(s.as_bytes()))
        }) else {
            continue;
        };
        let earlier = &label.matches[i];
        let via_guard = earlier.sec.type_name() == Some("rewrite_tag_filter");
        w.push(if via_guard {
            format!(
                "{}: never reached by tags from inputs: {} takes every tag it matches first. It is reached only by records that rewrite_tag_filter re-emits with a tag it would take again (Nagare's loop guard); in Fluentd it is never reached",
                label.describe(j),
                label.describe(i)
            )
        } else {
            format!(
                "{}: never reached: {} before it takes every tag it matches (the first matching <match> wins)",
                label.describe(j),
                label.describe(i)
            )
        });
    }
}

/// Outputs (a `<match>`, or `<store>`s of a copy) whose retry settings discard data.
fn retry_traps(sec: &Section, w: &mut Vec<String>) {
    for store in sec.children_named("store") {
        retry_traps(store, w);
    }
    let Some(buffer) = sec.children_named("buffer").next() else {
        return;
    };
    let forever = buffer
        .param("retry_forever")
        .and_then(|p| nagare_config::value::parse_bool(&p.value))
        .unwrap_or(false);
    if forever || sec.children_named("secondary").next().is_some() {
        return;
    }
    let limits: Vec<String> = ["retry_max_times", "retry_timeout"]
        .iter()
        .filter_map(|k| buffer.param(k).map(|p| format!("{k} {}", p.value)))
        .collect();
    if limits.is_empty() {
        return;
    }
    w.push(format!(
        "{} at {}: {} without retry_forever or a <secondary>: once retries run out, chunks are discarded (counted, but lost); set retry_forever true or add a <secondary>",
        sec.describe(),
        buffer.span,
        limits.join(" and ")
    ));
}

fn source_traps(src: &Section, labels: &[LabelInfo<'_>], w: &mut Vec<String>) {
    let label_name = src
        .param("@label")
        .map(|p| p.value.trim().to_string())
        .unwrap_or_else(|| "ROOT".to_string());
    let Some(label) = labels.iter().find(|l| l.name == label_name) else {
        return;
    };
    let sample = match (src.param("tag"), src.param("add_tag_prefix")) {
        (Some(t), _) => t.value.clone(),
        (None, Some(p)) => format!("{}.x", p.value),
        _ => return,
    };
    if label.route(&sample).is_none() {
        w.push(format!(
            "<source> at {}: its events (tag `{sample}`) reach no <match> in {}: they are dropped (counted as no_match)",
            src.span,
            if label_name == "ROOT" {
                "the top level".to_string()
            } else {
                format!("<label {label_name}>")
            }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn warnings(text: &str) -> Vec<String> {
        let root = nagare_config::parse_str(text, Path::new("w.conf")).unwrap();
        let mut ctx = BuildCtx::default();
        check(&root, &mut ctx);
        ctx.warnings
    }

    #[test]
    fn samples() {
        assert_eq!(
            sample_tags("docker.**"),
            ["docker.x", "docker.x.y", "docker"]
        );
        assert_eq!(sample_tags("a.* b.{c,d}"), ["a.x", "b.c", "b.d"]);
        assert!(sample_tags("/^a/").is_empty());
        assert_eq!(sample_tags("**"), ["x", "x.y"]);
    }

    const SEED: &str = "<filter docker.**>\n  @type parser\n  format json\n  key_name log\n</filter>\n<match docker.**>\n  @type rewrite_tag_filter\n  <rule>\n    key marker\n    pattern AUDIT\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key message\n    pattern .+\n    tag ${tag}.app\n  </rule>\n</match>\n<match **>\n  @type stdout\n</match>\n";

    #[test]
    fn seed_config_warns_about_the_loop_the_missing_catch_all_and_the_guarded_match() {
        let w = warnings(SEED);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("no catch-all") && w[0].starts_with("<match docker.**> at w.conf:6:1"),
            "{}",
            w[0]
        );
        assert!(
            w[1].contains("rewrite loop")
                && w[1].contains("`docker.x.audit`")
                && w[1].contains("<match **> at w.conf:19:1"),
            "{}",
            w[1]
        );
        // The same shape with a second <match docker.**>: reachable only through the guard.
        let w = warnings(&SEED.replace("<match **>", "<match docker.**>"));
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[2].contains("loop guard") && w[2].starts_with("<match docker.**> at w.conf:19:1"),
            "{}",
            w[2]
        );
    }

    /// TLS settings Nagare accepts for compatibility but does not apply are named in the
    /// warnings (printed by `--dry-run`, logged at start).
    #[test]
    fn ignored_tls_settings_are_warned_about() {
        let text = "<source>\n  @type forward\n  port 0\n  <transport tcp>\n    version TLSv1_2\n  </transport>\n</source>\n<match **>\n  @type forward\n  transport tls\n  tls_insecure_mode true\n  tls_ciphers ALL\n  <server>\n    host 127.0.0.1\n  </server>\n</match>\n";
        let root = nagare_config::parse_str(text, Path::new("w.conf")).unwrap();
        let p = crate::Pipeline::validate(&root).unwrap();
        let w = p.warnings();
        assert!(
            w.iter()
                .any(|w| w.contains("w.conf:4") && w.contains("version")),
            "{w:#?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("w.conf:8") && w.contains("tls_ciphers")),
            "{w:#?}"
        );
    }

    #[test]
    fn an_admin_port_past_65535_is_refused_not_wrapped() {
        let root = nagare_config::parse_str(
            "<system>\n  admin_port 70000\n</system>\n<match **>\n  @type null\n</match>\n",
            Path::new("w.conf"),
        )
        .unwrap();
        let e = crate::Pipeline::validate(&root).err().unwrap().to_string();
        assert!(
            e.contains("w.conf:1") && e.contains("admin_port 70000"),
            "{e}"
        );
    }

    #[test]
    fn clean_configs_have_no_warnings() {
        let w = warnings("<source>\n  @type forward\n</source>\n<match docker.**>\n  @type rewrite_tag_filter\n  @label @OUT\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    tag ${tag}.audit\n  </rule>\n  <rule>\n    key marker\n    pattern /^AUDIT$/\n    invert true\n    tag ${tag}.app\n  </rule>\n</match>\n<label @OUT>\n  <match **>\n    @type copy\n    <store>\n      @type stdout\n    </store>\n    <store>\n      @type forward\n      <server>\n        host 127.0.0.1\n      </server>\n      <buffer>\n        retry_forever true\n        retry_timeout 1h\n      </buffer>\n    </store>\n  </match>\n</label>\n");
        assert!(w.is_empty(), "{w:#?}");
    }

    #[test]
    fn shadowed_matches_retry_traps_and_unrouted_sources() {
        let w = warnings("<source>\n  @type forward\n  tag app.x\n</source>\n<source>\n  @type forward\n  add_tag_prefix in\n</source>\n<match **>\n  @type null\n</match>\n<match app.**>\n  @type copy\n  <store>\n    @type forward\n    <server>\n      host h\n    </server>\n    <buffer>\n      retry_max_times 5\n    </buffer>\n  </store>\n</match>\n<label @L>\n  <match a.*>\n    @type null\n  </match>\n</label>\n<source>\n  @type forward\n  @label @L\n  tag b\n</source>\n");
        assert_eq!(w.len(), 3, "{w:#?}");
        assert!(
            w[0].starts_with(
                "<match app.**> at w.conf:12:1: never reached: <match **> at w.conf:9:1"
            ),
            "{}",
            w[0]
        );
        assert!(
            w[1].contains("retry_max_times 5") && w[1].contains("w.conf:19:5"),
            "{}",
            w[1]
        );
        assert!(
            w[2].contains("tag `b`") && w[2].contains("<label @L>"),
            "{}",
            w[2]
        );
    }
}

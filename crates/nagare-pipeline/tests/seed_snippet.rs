//! The production snippet quoted in issue 3, verbatim: it must load, and behave as in Fluentd
//! except where Fluentd loops (fluent-plugin-rewrite-tag-filter#83).
//!
//! `<match docker.**>` rewrites to `${tag}.audit` / `${tag}.app`, tags the same `<match>`
//! takes again. Fluentd re-emits those forever and nothing reaches CloudWatch; Nagare sends
//! them on to the next `<match>` (`<match **>`), counted as `rewrite_loop_avoided`, and
//! `--dry-run` warns.

use bytes::BytesMut;
use nagare_core::{EventTime, Record};
use nagare_pipeline::Pipeline;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Issue 3's snippet, byte for byte.
const SNIPPET: &str = r##"<filter docker.**>
  @type parser
  format json
  key_name log
</filter>
<match docker.**>
  @type rewrite_tag_filter
  <rule>
    key marker
    pattern AUDIT
    tag ${tag}.audit
  </rule>
  <rule>
    key message
    pattern .+
    tag ${tag}.app
  </rule>
</match>
<match **>
  @type cloudwatch_logs
  region "#{ENV['AWS_REGION']}"
  log_group_name_key service
  log_stream_name "#{Socket.gethostname}"
  auto_create_stream true
</match>
"##;

const CLOUDWATCH_BLOCK: &str = r##"<match **>
  @type cloudwatch_logs
  region "#{ENV['AWS_REGION']}"
  log_group_name_key service
  log_stream_name "#{Socket.gethostname}"
  auto_create_stream true
</match>
"##;

fn opts() -> nagare_config::ParseOptions {
    nagare_config::ParseOptions::fixed([("AWS_REGION", "eu-west-1")], "agg-1")
}

/// Needs the cloudwatch_logs output (issue 6); validation opens no connection.
#[test]
fn production_snippet_loads_verbatim() {
    let root = nagare_config::parse_str_with(SNIPPET, Path::new("production.conf"), &opts())
        .expect("parses");
    Pipeline::validate(&root).expect("loads");
}

/// The snippet with its CloudWatch `<match **>` swapped for a file (everything else verbatim)
/// and an in_forward source in front.
fn runnable(out: &Path) -> String {
    assert!(SNIPPET.ends_with(CLOUDWATCH_BLOCK));
    format!(
        "<source>\n  @type forward\n  bind 127.0.0.1\n  port 0\n</source>\n{}<match **>\n  @type file\n  path {}\n  <format>\n    @type json\n  </format>\n  <inject>\n    tag_key tag\n  </inject>\n</match>\n",
        SNIPPET.strip_suffix(CLOUDWATCH_BLOCK).unwrap(),
        out.display()
    )
}

#[test]
fn the_snippet_parses_verbatim_and_dry_run_names_its_traps() {
    // The classic syntax, the embedded Ruby and the filter/rewrite part load as written.
    let root = nagare_config::parse_str_with(SNIPPET, Path::new("production.conf"), &opts())
        .expect("parses");
    let cw = &root.children[2];
    assert_eq!(cw.param("region").unwrap().value, "eu-west-1");
    assert_eq!(cw.param("log_stream_name").unwrap().value, "agg-1");
    let text = runnable(Path::new("/tmp/unused.jsonl"));
    let root = nagare_config::parse_str_with(&text, Path::new("production.conf"), &opts()).unwrap();
    let p = Pipeline::validate(&root).expect("the filter and rewrite parts load verbatim");
    let w = p.warnings();
    assert!(
        w.iter()
            .any(|x| x.contains("rewrite loop") && x.contains("`docker.x.audit`")),
        "{w:#?}"
    );
    assert!(w.iter().any(|x| x.contains("no catch-all")), "{w:#?}");
}

fn message(tag: &str, log: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let r = Record::from_pairs(&[
        ("container_id", "c0ffee"),
        ("container_name", "/web"),
        ("source", "stdout"),
        ("log", log),
    ]);
    nagare_forward::codec::encode::write_message(
        &mut out,
        tag.as_bytes(),
        EventTime::from_secs(1_700_000_000),
        &r,
        None,
        true,
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snippet_routes_rewritten_records_to_the_next_match_instead_of_looping() {
    let dir = std::env::temp_dir().join(format!("nagare-seed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("cloudwatch.jsonl");
    let text = runnable(&out);
    let root = nagare_config::parse_str_with(&text, Path::new("production.conf"), &opts()).unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let running = Pipeline::build(&root).unwrap().start(sd).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(running.inputs[0].addr)
        .await
        .unwrap();
    for (tag, log) in [
        (
            "docker.web.1",
            r#"{"marker":"AUDIT","message":"mdc","service":"web"}"#,
        ),
        (
            "docker.web.1",
            r#"{"level":"error","message":"boom","service":"web"}"#,
        ),
        // No `message` key (the corpus's app lines use `msg`): no rule matches.
        (
            "docker.web.1",
            r#"{"level":"info","msg":"request","service":"web"}"#,
        ),
        // Not JSON: filter_parser (no reserve_data) rejects it; no @ERROR label.
        ("docker.web.1", "plain text"),
    ] {
        s.write_all(&message(tag, log)).await.unwrap();
    }
    s.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.lines().count() >= 2 || tokio::time::Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            break std::fs::read_to_string(&out).unwrap_or_default();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let got: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tags: Vec<&str> = got.iter().map(|r| r["tag"].as_str().unwrap()).collect();
    assert_eq!(tags, ["docker.web.1.audit", "docker.web.1.app"], "{lines}");
    // Parsed once (the loop guard does not run the filters again): the JSON fields only.
    assert_eq!(got[0]["marker"], "AUDIT");
    assert!(got[0].get("log").is_none());
    let value = |metrics: &str, needle: &str| -> Option<u64> {
        metrics
            .lines()
            .find(|l| l.contains(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    const LOOP: &str = "reason=\"rewrite_loop_avoided\"";
    const NO_RULE: &str = "reason=\"no_rule_matched\"";
    const PARSE_FAILED: &str =
        "nagare_filter_parser_failures_total{plugin_id=\"filter_parser.1\",reason=\"parse_failed\"}";
    // The last two messages (no rule, not JSON) write no line: their counters may still be
    // catching up when the two lines are there. Poll (bounded) rather than trust a sleep.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = nagare_core::metrics::render_prometheus();
        let settled = value(&m, LOOP) >= Some(2)
            && value(&m, NO_RULE) >= Some(1)
            && value(&m, PARSE_FAILED) >= Some(1);
        if settled || tokio::time::Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let value = |needle: &str| -> u64 {
        value(&metrics, needle).unwrap_or_else(|| panic!("{needle} not in metrics:\n{metrics}"))
    };
    assert_eq!(value(LOOP), 2);
    assert_eq!(value(NO_RULE), 1);
    assert_eq!(value(PARSE_FAILED), 1);
    trigger.fire();
    running.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! The classic syntax end to end: the production config, every value form, and errors with
//! exact `file:line:col`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fixture, kv, opts};
use nagare_config::{parse_file, parse_file_with, parse_str, parse_str_with, ConfigError};

fn err(text: &str) -> String {
    parse_str_with(text, Path::new("app.conf"), &opts())
        .unwrap_err()
        .to_string()
}

#[test]
fn production_snippet_parses() {
    let root = parse_file_with(&fixture("production.conf"), &opts()).unwrap();
    assert_eq!(root.name, "ROOT");
    assert_eq!(root.children.len(), 3);

    let filter = &root.children[0];
    assert_eq!(
        (filter.name.as_str(), filter.arg.as_str()),
        ("filter", "docker.**")
    );
    assert_eq!(
        kv(filter),
        [("@type", "parser"), ("format", "json"), ("key_name", "log")]
    );

    let rewrite = &root.children[1];
    assert_eq!(rewrite.type_name(), Some("rewrite_tag_filter"));
    let rules: Vec<_> = rewrite.children.iter().map(kv).collect();
    assert_eq!(
        rules,
        [
            [
                ("key", "marker"),
                ("pattern", "AUDIT"),
                ("tag", "${tag}.audit")
            ],
            [("key", "message"), ("pattern", ".+"), ("tag", "${tag}.app")],
        ]
    );
    assert_eq!(
        rewrite.children[1].span.to_string(),
        format!("{}:13:3", fixture("production.conf").display())
    );

    let cw = &root.children[2];
    assert_eq!(cw.arg, "**");
    assert_eq!(
        kv(cw),
        [
            ("@type", "cloudwatch_logs"),
            ("region", "eu-west-1"),
            ("log_group_name_key", "service"),
            ("log_stream_name", "ip-10-0-0-1.ec2.internal"),
            ("auto_create_stream", "true"),
        ]
    );
    let mut p = cw.params();
    assert_eq!(p.required_str("region").unwrap(), "eu-west-1");
    assert!(p.bool("auto_create_stream", false).unwrap());
    p.ignore("log_group_name_key");
    p.ignore("log_stream_name");
    p.finish().unwrap();

    // With the real process environment and hostname it parses too.
    parse_file(&fixture("production.conf")).unwrap();
}

#[test]
fn every_value_form() {
    let text = concat!(
        "<source>\n",
        "  unquoted   some value with  spaces   # and a comment\n",
        "  hash_in_word a#b\n",
        "  starts_hash #not_comment\n",
        "  dq \"tab\\there \\\"q\\\" back\\\\slash nl\\n cr\\r #{ENV['AWS_REGION']} \\#{literal} # kept\"\n",
        "  dq_multi \"line1\n",
        "line2\"\n",
        "  dq_join \"a\\\n",
        "b\"\n",
        "  sq 'no \\n escapes #{ENV[\"X\"]} it\\'s \\\\'\n",
        "  json_array [\"a\",   # first\n",
        "     \"b\"]\n",
        "  json_hash {\"b\": 1,\n",
        "     \"a\": {\"x\": [true, null]}}\n",
        "  bare\n",
        "  placeholder ${tag}.${tag_parts[0]}\n",
        "  host \"#{Socket.gethostname.split('.')[0]}\"\n",
        "  fetch \"#{ENV.fetch('UNSET', 'dflt')}:#{ENV.fetch(\"ENVIRONMENT\")}\"\n",
        "  or \"#{ENV['UNSET'] || 'fb'}\"\n",
        "  \"quoted key\" v\n",
        "  regexp /^(?<time>[^ ]+) \\[(?<level>\\w+)\\]/\n",
        "</source>\n",
    );
    let root = parse_str_with(text, Path::new("app.conf"), &opts()).unwrap();
    assert_eq!(
        kv(&root.children[0]),
        [
            ("unquoted", "some value with  spaces"),
            ("hash_in_word", "a#b"),
            ("starts_hash", "#not_comment"),
            (
                "dq",
                "tab\there \"q\" back\\slash nl\n cr\r eu-west-1 #{literal} # kept"
            ),
            ("dq_multi", "line1\nline2"),
            ("dq_join", "ab"),
            ("sq", "no \\n escapes #{ENV[\"X\"]} it's \\"),
            ("json_array", r#"["a","b"]"#),
            ("json_hash", r#"{"b":1,"a":{"x":[true,null]}}"#),
            ("bare", ""),
            ("placeholder", "${tag}.${tag_parts[0]}"),
            ("host", "ip-10-0-0-1"),
            ("fetch", "dflt:prod"),
            ("or", "fb"),
            ("quoted key", "v"),
            ("regexp", r"/^(?<time>[^ ]+) \[(?<level>\w+)\]/"),
        ]
    );
    let spans: Vec<String> = root.children[0]
        .params
        .iter()
        .map(|p| p.span.to_string())
        .collect();
    assert_eq!(spans[5], "app.conf:8:3"); // after the two-line string
    assert_eq!(spans[9], "app.conf:15:3"); // after two multi-line JSON values
}

#[test]
fn typed_access_through_the_tree() {
    let root = parse_str(
        concat!(
            "<match **>\n",
            "  @type s3\n",
            "  @id out_s3\n",
            "  @log_level debug\n",
            "  <buffer tag,time>\n",
            "    chunk_limit_size 1.5m\n",
            "    flush_interval 30s\n",
            "    retry_timeout 1h\n",
            "    retry_max_times 10\n",
            "    flush_at_shutdown\n",
            "    overflow_action drop_oldest_chunk\n",
            "  </buffer>\n",
            "  keys a, b ,c\n",
            "  map k1:v1,k2:v2\n",
            "</match>\n",
        ),
        Path::new("app.conf"),
    )
    .unwrap();
    let m = &root.children[0];
    let mut p = m.params();
    let buffer = p.section("buffer").unwrap().unwrap();
    assert_eq!(p.array("keys").unwrap().unwrap(), ["a", "b", "c"]);
    assert_eq!(
        p.hash("map").unwrap().unwrap(),
        [
            ("k1".to_string(), "v1".to_string()),
            ("k2".to_string(), "v2".to_string())
        ]
    );
    p.finish().unwrap();

    assert_eq!(buffer.arg, "tag,time");
    let mut b = buffer.params();
    assert_eq!(b.size("chunk_limit_size", 0).unwrap(), 1_572_864);
    assert_eq!(
        b.duration("flush_interval", Duration::ZERO).unwrap(),
        Duration::from_secs(30)
    );
    assert_eq!(
        b.opt_duration("retry_timeout").unwrap(),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(b.int::<u32>("retry_max_times", 0).unwrap(), 10);
    assert!(b.bool("flush_at_shutdown", false).unwrap());
    assert_eq!(
        b.enumeration(
            "overflow_action",
            &["throw_exception", "block", "drop_oldest_chunk"],
            "throw_exception"
        )
        .unwrap(),
        "drop_oldest_chunk"
    );
    b.finish().unwrap();
}

/// Errors, each with the exact position a user would need to fix.
#[test]
fn structural_errors_point_at_the_problem() {
    assert_eq!(
        err("<source>\n  @type forward\n</source>\n<match **>\n  @type null\n"),
        "app.conf:4:1: unclosed section <match **>: reached the end of app.conf without </match>"
    );
    assert_eq!(
        err("<match **>\n  <buffer>\n  </buffer>\n</source>\n"),
        "app.conf:4:1: mismatched close tag </source>: expected </match> to close <match **> opened at app.conf:1:1"
    );
}

fn typed_err(
    body: &str,
    f: impl FnOnce(&mut nagare_config::Params<'_>) -> Result<(), ConfigError>,
) -> String {
    let text = format!("<match app.**>\n  @type s3\n{body}</match>\n");
    let root = parse_str(&text, Path::new("app.conf")).unwrap();
    let mut p = root.children[0].params();
    match f(&mut p) {
        Err(e) => e.to_string(),
        Ok(()) => p.finish().unwrap_err().to_string(),
    }
}

#[test]
fn value_errors_point_at_the_param() {
    assert_eq!(
        typed_err("  s3_bucket b\n  flush_intervall 5s\n", |p| {
            p.str("s3_bucket")?;
            p.duration("flush_interval", Duration::from_secs(60))?;
            p.str("path")?;
            Ok(())
        }),
        "app.conf:4:3: unknown parameter 'flush_intervall' in <match app.**>: did you mean 'flush_interval'? (expected one of: s3_bucket, flush_interval, path)"
    );
    assert_eq!(
        typed_err("  chunk_limit_size abc\n", |p| p.size("chunk_limit_size", 0).map(drop)),
        "app.conf:3:3: invalid value for 'chunk_limit_size' in <match app.**>: expected a size like 8m or 1g (a number with an optional k, m, g or t suffix), got 'abc'"
    );
    assert_eq!(
        typed_err("  flush_interval 5 minutes\n", |p| p.duration("flush_interval", Duration::ZERO).map(drop)),
        "app.conf:3:3: invalid value for 'flush_interval' in <match app.**>: expected a duration like 30s, 5m, 1h, 1d or a number of seconds, got '5 minutes'"
    );
    assert_eq!(
        typed_err("  auto_create_stream ture\n", |p| p.bool("auto_create_stream", false).map(drop)),
        "app.conf:3:3: invalid value for 'auto_create_stream' in <match app.**>: expected true or false (also yes/no, on/off), got 'ture'"
    );
    assert_eq!(
        typed_err("  bucket x\n", |p| p.required_str("s3_bucket").map(drop)),
        "app.conf:1:1: missing required parameter 's3_bucket' in <match app.**>"
    );
    assert_eq!(
        typed_err("  <bufer>\n  </bufer>\n", |p| p.section("buffer").map(drop)),
        "app.conf:3:3: unknown section <bufer> in <match app.**>: did you mean 'buffer'? (expected one of: <buffer>)"
    );
}

#[test]
fn unsupported_ruby_is_rejected_with_its_position() {
    assert_eq!(
        err("<match **>\n  path \"/logs/#{Time.now.year}/x\"\n</match>\n"),
        "app.conf:2:15: embedded Ruby is not supported: #{Time.now.year}; supported forms: ENV['NAME'], ENV[\"NAME\"], ENV.fetch('NAME'), ENV.fetch('NAME', 'default'), Socket.gethostname, Socket.gethostname.split('.')[0], hostname, worker_id, and `a || b` of these"
    );
    assert_eq!(
        err("k \"#{ENV.fetch('MISSING')}\"\n"),
        "app.conf:1:4: environment variable 'MISSING' is not set (ENV.fetch('MISSING') without a default requires it)"
    );
    assert_eq!(
        err("k \"#{ENV['A']\"\n"),
        "app.conf:1:4: unterminated embedded Ruby: expected '}' to close '#{'"
    );
}

#[test]
fn unreadable_root_file_has_no_span() {
    let e = parse_file(Path::new("/nonexistent/nagare.conf")).unwrap_err();
    assert!(e.span.is_none());
    assert!(
        e.to_string()
            .starts_with("cannot read config file '/nonexistent/nagare.conf'"),
        "{e}"
    );
}

#[test]
fn byte_order_mark_is_ignored() {
    let root = parse_str("\u{feff}k v\n", Path::new("app.conf")).unwrap();
    assert_eq!(kv(&root), [("k", "v")]);
}

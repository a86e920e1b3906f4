//! Property tests: quoting round-trips, and no input makes the parsers panic.

use std::path::Path;

use nagare_config::{parse_str_with, parse_yaml_str_with, ParseOptions};
use proptest::prelude::*;

fn opts() -> ParseOptions {
    ParseOptions::fixed([("A", "1")], "h")
}

/// Writes `s` as a classic double-quoted value.
fn dq(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '#' => out.push_str("\\#"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #[test]
    fn double_quoted_round_trips(s in any::<String>()) {
        let text = format!("<source>\n  key {}\n</source>\n", dq(&s));
        let root = parse_str_with(&text, Path::new("p.conf"), &opts()).unwrap();
        prop_assert_eq!(&root.children[0].params[0].value, &s);
    }

    #[test]
    fn single_quoted_round_trips(s in "[^'\\\\]*") {
        let text = format!("key '{s}'\n");
        let root = parse_str_with(&text, Path::new("p.conf"), &opts()).unwrap();
        prop_assert_eq!(&root.params[0].value, &s);
    }

    #[test]
    fn classic_never_panics(s in "[<>/#@\"'{}\\[\\]\\\\a-z \\n\\t$.*:,=]{0,80}") {
        let _ = parse_str_with(&s, Path::new("p.conf"), &opts());
    }

    #[test]
    fn yaml_never_panics(s in "[-:{}\\[\\]#!\"'$a-z \\n]{0,80}") {
        let _ = parse_yaml_str_with(&s, Path::new("p.yaml"), &opts());
    }

    #[test]
    fn sizes_scale(n in 0u64..1_000_000, unit in prop::sample::select(vec![("", 1u64), ("k", 1 << 10), ("M", 1 << 20), ("g", 1 << 30)])) {
        prop_assert_eq!(nagare_config::value::parse_size(&format!("{n}{}", unit.0)), Some(n * unit.1));
    }
}

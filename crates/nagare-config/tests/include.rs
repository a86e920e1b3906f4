//! `@include` and `!include`: relative paths, globs (sorted), nesting, cycles.

mod common;

use common::{fixture, kv, opts};
use nagare_config::parse_file_with;

#[test]
fn classic_include_relative_glob_nested_and_in_sections() {
    let root = parse_file_with(&fixture("include/main.conf"), &opts()).unwrap();
    // Top-level params in order: main, sub/one (which includes ../shared/common), then the
    // glob conf.d/*.conf sorted (10-a, whose legacy `include` pulls in shared/legacy; 20-b).
    assert_eq!(
        kv(&root),
        [
            ("k_root", "main"),
            ("k_one", "one"),
            ("k_common", "common"),
            ("k_a", "a"),
            ("k_legacy", "legacy"),
        ]
    );
    let names: Vec<&str> = root.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["source", "match"]);

    // Spans name the included file.
    let common = &root.params[2];
    assert_eq!(
        common.span.to_string(),
        format!(
            "{}:1:1",
            fixture("include/sub/../shared/common.conf").display()
        )
    );
    let source = &root.children[0];
    assert_eq!(
        source.span.to_string(),
        format!("{}:1:1", fixture("include/conf.d/20-b.conf").display())
    );

    // Includes inside a section land in that section.
    let m = &root.children[1];
    let stores: Vec<_> = m.children.iter().map(|s| s.type_name().unwrap()).collect();
    assert_eq!(stores, ["stdout", "null"]);
}

#[test]
fn include_cycle_is_an_error() {
    let e = parse_file_with(&fixture("cycle/a.conf"), &opts()).unwrap_err();
    let a = std::fs::canonicalize(fixture("cycle/a.conf")).unwrap();
    let b = std::fs::canonicalize(fixture("cycle/b.conf")).unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:1: include cycle: {} -> {} -> {}",
            fixture("cycle/b.conf").display(),
            a.display(),
            b.display(),
            a.display()
        )
    );
}

#[test]
fn yaml_include_splices_sorted_files() {
    let root = parse_file_with(&fixture("yaml_include/main.yaml"), &opts()).unwrap();
    let got: Vec<(&str, &str, Option<&str>)> = root
        .children
        .iter()
        .map(|c| (c.name.as_str(), c.arg.as_str(), c.type_name()))
        .collect();
    assert_eq!(
        got,
        [
            ("source", "", Some("forward")),
            ("filter", "app.**", Some("grep")),
            ("match", "app.**", Some("null")),
            ("match", "**", Some("stdout")),
        ]
    );
    assert_eq!(
        root.children[2].span.to_string(),
        format!(
            "{}:2:3",
            fixture("yaml_include/conf.d/20-match.yaml").display()
        )
    );
}

#[test]
fn missing_plain_include_is_an_error_but_empty_glob_is_not() {
    let dir = fixture("include");
    let root = nagare_config::parse_str_with(
        "@include nothing-here/*.conf\n",
        &dir.join("virtual.conf"),
        &opts(),
    )
    .unwrap();
    assert!(root.params.is_empty() && root.children.is_empty());
    let e = nagare_config::parse_str_with(
        "\n  @include missing.conf\n",
        &dir.join("virtual.conf"),
        &opts(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:3: include of '{}': no such file",
            dir.join("virtual.conf").display(),
            dir.join("missing.conf").display()
        )
    );
}

//! A classic file and a YAML file describing the same config build the same tree.

mod common;

use common::{fixture, opts, shape};
use nagare_config::parse_file_with;

#[test]
fn classic_and_yaml_give_equal_trees() {
    let classic = parse_file_with(&fixture("equal/app.conf"), &opts()).unwrap();
    let yaml = parse_file_with(&fixture("equal/app.yaml"), &opts()).unwrap();
    assert_eq!(shape(&classic), shape(&yaml));
    // Sanity: the tree is not trivially empty, and embedded Ruby was evaluated in both.
    assert_eq!(classic.children.len(), 7);
    let s3 = &classic.children[4].children[0];
    assert_eq!(s3.params[2].value, "logs/prod/");
}

#[test]
fn yaml_spans_point_at_keys() {
    let yaml = parse_file_with(&fixture("equal/app.yaml"), &opts()).unwrap();
    let file = fixture("equal/app.yaml");
    let at = |line: u32, col: u32| format!("{}:{line}:{col}", file.display());
    let source = &yaml.children[1];
    assert_eq!(source.span.to_string(), at(6, 5));
    assert_eq!(source.params[2].span.to_string(), at(9, 7)); // port
    let rewrite = &yaml.children[3];
    assert_eq!(rewrite.children[1].span.to_string(), at(25, 11)); // second `- key: message`
    let buffer = &yaml.children[4].children[0].children[0];
    assert_eq!(buffer.name, "buffer");
    assert_eq!(buffer.span.to_string(), at(35, 11));
    assert_eq!(buffer.params[3].span.to_string(), at(40, 13)); // chunk_limit_size
}

#[test]
fn yaml_finish_reports_the_yaml_line() {
    let yaml = parse_file_with(&fixture("equal/app.yaml"), &opts()).unwrap();
    let source = &yaml.children[1];
    let mut p = source.params();
    p.str("port").unwrap();
    let e = p.finish().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:10:7: unknown parameter 'bind' in <source> (expected one of: port)",
            fixture("equal/app.yaml").display()
        )
    );
}

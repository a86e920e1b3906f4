//! Every configuration under `examples/` loads and validates.

use std::path::{Path, PathBuf};

fn example_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("examples dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("conf" | "yaml" | "yml")
            ) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_validates() {
    let files = example_files();
    assert!(!files.is_empty());
    for f in files {
        let root = nagare_config::parse_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        nagare_pipeline::Pipeline::validate(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}

#[test]
fn built_in_defaults_validate() {
    for role in [
        nagare_pipeline::cli::Role::Forwarder,
        nagare_pipeline::cli::Role::Aggregator,
    ] {
        let root = nagare_config::parse_str(role.default_config(), Path::new("default")).unwrap();
        nagare_pipeline::Pipeline::validate(&root).unwrap();
    }
}

#[test]
fn unknown_parameter_is_an_error_with_file_and_line() {
    let text = "<source>\n  @type forward\n  port 0\n  prot 5\n</source>\n";
    let root = nagare_config::parse_str(text, Path::new("bad.conf")).unwrap();
    let err = nagare_pipeline::Pipeline::validate(&root)
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.starts_with("bad.conf:4:"), "{err}");
    assert!(err.contains("prot"), "{err}");
}

//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

use nagare_config::{ParseOptions, Section};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A fixed environment, so tests never depend on (or mutate) the process environment.
pub fn opts() -> ParseOptions {
    ParseOptions::fixed(
        [("AWS_REGION", "eu-west-1"), ("ENVIRONMENT", "prod")],
        "ip-10-0-0-1.ec2.internal",
    )
}

/// The tree without spans: (name, arg, [(key, value)], children).
#[derive(Debug, PartialEq)]
pub struct Shape {
    pub name: String,
    pub arg: String,
    pub params: Vec<(String, String)>,
    pub children: Vec<Shape>,
}

pub fn shape(s: &Section) -> Shape {
    Shape {
        name: s.name.clone(),
        arg: s.arg.clone(),
        params: s
            .params
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect(),
        children: s.children.iter().map(shape).collect(),
    }
}

pub fn kv(s: &Section) -> Vec<(&str, &str)> {
    s.params
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect()
}

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
        // Rendered with this process's environment (NAGARE_FORWARD_TARGETS etc. unset in
        // tests; crates/nagare-pipeline/src/defaults.rs tests the overrides).
        let text = role.default_config().unwrap();
        let root = nagare_config::parse_str(&text, Path::new("default")).unwrap();
        let p = nagare_pipeline::Pipeline::validate(&root).unwrap();
        assert!(p.warnings().is_empty(), "{role:?}: {:#?}", p.warnings());
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

// ---- the seed deployment's examples: classic and YAML twins, broken copies ----------------

/// The classic/YAML pairs under `examples/`.
const TWINS: &[(&str, &str)] = &[
    ("forwarder.conf", "forwarder.yaml"),
    ("aggregator.conf", "aggregator.yaml"),
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// A fixed environment and host name, so embedded Ruby gives the same values in both files.
fn fixed_opts() -> nagare_config::ParseOptions {
    nagare_config::ParseOptions::fixed(
        [
            ("NAGARE_DATA_DIR", "/data"),
            ("NAGARE_AGGREGATOR_HOST", "agg.example"),
            ("AWS_REGION", "eu-west-1"),
        ],
        "host-1.example",
    )
}

/// The tree without spans.
#[derive(Debug, PartialEq)]
struct Shape {
    name: String,
    arg: String,
    params: Vec<(String, String)>,
    children: Vec<Shape>,
}

fn shape(s: &nagare_config::Section) -> Shape {
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

#[test]
fn classic_and_yaml_examples_give_the_same_tree() {
    for (classic, yaml) in TWINS {
        let a = nagare_config::parse_file_with(&examples_dir().join(classic), &fixed_opts())
            .unwrap_or_else(|e| panic!("{classic}: {e}"));
        let b = nagare_config::parse_file_with(&examples_dir().join(yaml), &fixed_opts())
            .unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(shape(&a), shape(&b), "{classic} and {yaml} differ");
        // Not trivially equal: the trees have content and the Ruby was evaluated.
        assert!(a.children.len() >= 4, "{classic}");
        let text = format!("{:?}", shape(&a));
        assert!(
            text.contains("/data/"),
            "{classic}: NAGARE_DATA_DIR not applied"
        );
        // Both validate (and the seed examples raise no --dry-run warning).
        let p =
            nagare_pipeline::Pipeline::validate(&a).unwrap_or_else(|e| panic!("{classic}: {e}"));
        assert!(p.warnings().is_empty(), "{classic}: {:#?}", p.warnings());
    }
}

/// Writes `lines` with `insert` put after line `after` (1-based) to a temp file named `name`.
fn broken_copy(name: &str, lines: &[&str], after: usize, insert: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nagare-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out.insert(after, insert.to_string());
    let p = dir.join(name);
    std::fs::write(&p, out.join("\n") + "\n").unwrap();
    p
}

fn load_error(p: &Path) -> String {
    match nagare_config::parse_file_with(p, &fixed_opts()) {
        Err(e) => e.to_string(),
        Ok(root) => match nagare_pipeline::Pipeline::validate(&root) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{}: a broken copy loaded", p.display()),
        },
    }
}

#[test]
fn broken_copies_of_the_examples_fail_at_the_right_line() {
    for path in example_files() {
        // e.g. `forward-chain_aggregator.conf` for the broken copy's name.
        let name = path
            .strip_prefix(examples_dir())
            .unwrap()
            .to_string_lossy()
            .replace('/', "_");
        let file = name.as_str();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let is_yaml = file.ends_with(".yaml");
        // Every `@id` line gets a typo'd parameter after it, one copy at a time: each
        // plugin must reject it, at the inserted line and its column.
        let ids: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.trim_start()
                    .starts_with(if is_yaml { "$id:" } else { "@id " })
            })
            .map(|(i, _)| i)
            .collect();
        assert!(ids.len() >= 2, "{file}");
        for i in ids {
            let indent = lines[i].len() - lines[i].trim_start().len();
            let indent = if is_yaml && lines[i].trim_start().starts_with("- ") {
                indent + 2
            } else {
                indent
            };
            let bad = if is_yaml {
                format!("{}flush_intervl: 5s", " ".repeat(indent))
            } else {
                format!("{}flush_intervl 5s", " ".repeat(indent))
            };
            let p = broken_copy(file, &lines, i + 1, &bad);
            let err = load_error(&p);
            let want = format!("{}:{}:{}:", p.display(), i + 2, indent + 1);
            assert!(
                err.starts_with(&want),
                "{file} (after line {}): want {want}, got {err}",
                i + 1
            );
            assert!(err.contains("unknown parameter 'flush_intervl'"), "{err}");
        }
    }
    // A broken regular expression in the rewrite rules, reported at its line.
    for file in ["forwarder.conf", "forwarder.yaml"] {
        let text = std::fs::read_to_string(examples_dir().join(file)).unwrap();
        let n = text
            .lines()
            .position(|l| l.contains("/^AUDIT$/"))
            .expect("a rule pattern")
            + 1;
        let broken = text.replacen("/^AUDIT$/", "/^(AUDIT$/", 1);
        let dir = std::env::temp_dir().join(format!("nagare-broken-re-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(file);
        std::fs::write(&p, broken).unwrap();
        let err = load_error(&p);
        assert!(
            err.starts_with(&format!("{}:{n}:", p.display())),
            "{file}: {err}"
        );
        assert!(err.contains("regexp"), "{err}");
    }
}

/// Fluentd's order: a `<filter>` placed after the `<match>` that takes an event does not run
/// on it.
#[tokio::test]
async fn filters_after_the_taking_match_do_not_apply() {
    let dir = std::env::temp_dir().join(format!("nagare-filter-order-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "<source>\n @type forward\n bind 127.0.0.1\n port 0\n</source>\n\
         <filter **>\n @type grep\n <exclude>\n key drop\n pattern /before/\n </exclude>\n</filter>\n\
         <match a.**>\n @type file\n path {d}/a.jsonl\n append true\n <format>\n @type json\n </format>\n</match>\n\
         <filter **>\n @type grep\n <exclude>\n key drop\n pattern /after/\n </exclude>\n</filter>\n\
         <match **>\n @type file\n path {d}/b.jsonl\n append true\n <format>\n @type json\n </format>\n</match>\n",
        d = dir.display()
    );
    let root = nagare_config::parse_str(&text, Path::new("order.conf")).unwrap();
    let (trigger, sd) = nagare_core::shutdown::channel();
    let running = nagare_pipeline::Pipeline::build(&root)
        .unwrap()
        .start(sd)
        .await
        .unwrap();
    let router = running.inputs[0].addr;
    let mut out = bytes::BytesMut::new();
    for (tag, drop) in [
        ("a.x", "after"),
        ("a.x", "before"),
        ("b.x", "after"),
        ("b.x", "keep"),
    ] {
        nagare_forward::codec::encode::write_message(
            &mut out,
            tag.as_bytes(),
            nagare_core::EventTime::from_secs(1),
            &nagare_core::Record::from_pairs(&[("drop", drop)]),
            Some(&nagare_forward::codec::Options {
                chunk: Some(format!("{tag}{drop}").as_bytes()),
                ..Default::default()
            }),
            false,
        );
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(router).await.unwrap();
    s.write_all(&out).await.unwrap();
    let mut acks = vec![0u8; 4096];
    let mut got = 0;
    while got < 4 {
        let n = s.read(&mut acks).await.unwrap();
        assert!(n > 0);
        got += acks[..n].windows(4).filter(|w| w == b"\xa3ack").count();
    }
    trigger.fire();
    running.wait().await;
    let a = std::fs::read_to_string(dir.join("a.jsonl")).unwrap_or_default();
    let b = std::fs::read_to_string(dir.join("b.jsonl")).unwrap_or_default();
    assert_eq!(
        a.trim(),
        r#"{"drop":"after"}"#,
        "the filter after <match a.**> must not run on a.*"
    );
    assert_eq!(b.trim(), r#"{"drop":"keep"}"#);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The plugin reference in docs/plugins/*.md cannot drift from the code: for every plugin, the
//! parameters its config parser accepts (as listed by the "unknown parameter" error, which
//! names every known one) must each appear in its doc table, and every parameter the table
//! documents must be accepted.

use std::collections::BTreeSet;
use std::path::Path;

/// (doc file, minimal config with the placeholder `ZZ` where a bogus parameter goes). A doc
/// may have several probes (parameters that only exist in some modes); their union counts.
const PLUGINS: &[(&str, &str)] = &[
    ("in_forward.md", "<source>\n @type forward\n port 0\n ZZ\n</source>\n"),
    (
        "out_forward.md",
        "<match **>\n @type forward\n <server>\n host 127.0.0.1\n </server>\n ZZ\n</match>\n",
    ),
    (
        "out_forward.md",
        "<match **>\n @type forward\n transport tls\n tls_insecure_mode true\n <server>\n host 127.0.0.1\n </server>\n ZZ\n</match>\n",
    ),
];

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Parameter names a plugin accepts, read from the error that lists them.
fn accepted(template: &str) -> BTreeSet<String> {
    let text = template.replace("ZZ", "zz_not_a_parameter 1");
    let cfg = nagare_config::parse_str(&text, Path::new("probe.conf")).expect("parses");
    let err = match nagare_pipeline::Pipeline::validate(&cfg) {
        Ok(_) => panic!("a bogus parameter was accepted:\n{text}"),
        Err(e) => e.to_string(),
    };
    let list = err
        .split("expected one of: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no parameter list in: {err}"));
    let list = list.trim_end_matches(')');
    list.split(", ")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.starts_with('@') && !s.starts_with('<'))
        .collect()
}

/// Backticked names in the first column of the doc's tables.
fn documented(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in doc.lines() {
        let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
            continue;
        };
        for part in first.split('`').skip(1).step_by(2) {
            for name in part.split([',', '/', ' ']) {
                let name = name.trim();
                if !name.is_empty() && !name.contains(['<', '>']) && !name.starts_with('@') {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_accepted_parameter_is_documented_and_every_documented_one_is_accepted() {
    let mut problems = Vec::new();
    let files: BTreeSet<&str> = PLUGINS.iter().map(|(f, _)| *f).collect();
    for file in files {
        let path = root().join("docs/plugins").join(file);
        let doc =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let docs = documented(&doc);
        let code: BTreeSet<String> = PLUGINS
            .iter()
            .filter(|(f, _)| *f == file)
            .flat_map(|(_, t)| accepted(t))
            .collect();
        for p in code.difference(&docs) {
            problems.push(format!("{file}: `{p}` is accepted but not documented"));
        }
        for p in docs.difference(&code) {
            problems.push(format!("{file}: `{p}` is documented but not accepted"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

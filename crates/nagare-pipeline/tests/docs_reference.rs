//! The plugin reference in docs/plugins/*.md cannot drift from the code: for every plugin, the
//! parameters its config parser accepts (as listed by the "unknown parameter" error, which
//! names every known one) must each appear in its doc table, and every parameter the table
//! documents must be accepted.

use std::collections::BTreeSet;
use std::path::Path;

/// (doc file, minimal config with the placeholder `ZZ` where a bogus parameter goes). A doc
/// may have several probes (parameters that only exist in some modes, and the parameters of
/// the plugin's own subsections); their union must be exactly what its parameter tables list.
/// Sections shared by many plugins (`<buffer>`, `<format>`, `<inject>`, `<system>`) are
/// documented once, in docs/buffers.md and docs/configuration.md.
const PLUGINS: &[(&str, &str)] = &[
    ("plugins/in_forward.md", "<source>\n @type forward\n port 0\n ZZ\n</source>\n"),
    (
        "plugins/in_forward.md",
        "<source>\n @type forward\n port 0\n <security>\n self_hostname a\n shared_key b\n ZZ\n </security>\n</source>\n",
    ),
    (
        "plugins/out_forward.md",
        "<match **>\n @type forward\n <server>\n host 127.0.0.1\n </server>\n ZZ\n</match>\n",
    ),
    (
        "plugins/out_forward.md",
        "<match **>\n @type forward\n transport tls\n tls_insecure_mode true\n <server>\n host 127.0.0.1\n </server>\n ZZ\n</match>\n",
    ),
    (
        "plugins/out_forward.md",
        "<match **>\n @type forward\n <server>\n host 127.0.0.1\n ZZ\n </server>\n</match>\n",
    ),
    ("plugins/out_s3.md", "<match **>\n @type s3\n s3_bucket bkt\n ZZ\n</match>\n"),
    (
        "plugins/out_cloudwatch_logs.md",
        "<match **>\n @type cloudwatch_logs\n log_group_name g\n log_stream_name s\n ZZ\n</match>\n",
    ),
    ("plugins/out_file.md", "<match **>\n @type file\n path /tmp/x\n ZZ\n</match>\n"),
    ("plugins/copy.md", "<match **>\n @type copy\n ZZ\n <store>\n @type null\n </store>\n</match>\n"),
    ("plugins/stdout.md", "<match **>\n @type stdout\n ZZ\n</match>\n"),
    ("plugins/stdout.md", "<filter **>\n @type stdout\n ZZ\n</filter>\n"),
    ("plugins/null.md", "<match **>\n @type null\n ZZ\n</match>\n"),
    ("plugins/filter_grep.md", "<filter **>\n @type grep\n ZZ\n</filter>\n"),
    (
        "plugins/filter_grep.md",
        "<filter **>\n @type grep\n <regexp>\n key a\n pattern /b/\n ZZ\n </regexp>\n</filter>\n",
    ),
    (
        "plugins/filter_parser.md",
        "<filter **>\n @type parser\n key_name log\n format json\n ZZ\n</filter>\n",
    ),
    (
        "plugins/filter_parser.md",
        "<filter **>\n @type parser\n key_name log\n <parse>\n @type json\n ZZ\n </parse>\n</filter>\n",
    ),
    (
        "plugins/filter_parser.md",
        "<filter **>\n @type parser\n key_name log\n <parse>\n @type regexp\n expression /(?<a>.*)/\n ZZ\n </parse>\n</filter>\n",
    ),
    (
        "plugins/filter_parser.md",
        "<filter **>\n @type parser\n key_name log\n <parse>\n @type ltsv\n ZZ\n </parse>\n</filter>\n",
    ),
    (
        "plugins/filter_parser.md",
        "<filter **>\n @type parser\n key_name log\n <parse>\n @type logfmt\n ZZ\n </parse>\n</filter>\n",
    ),
    (
        "plugins/filter_parser.md",
        "<filter **>\n @type parser\n key_name log\n <parse>\n @type none\n ZZ\n </parse>\n</filter>\n",
    ),
    (
        "plugins/filter_record_transformer.md",
        "<filter **>\n @type record_transformer\n ZZ\n</filter>\n",
    ),
    (
        "plugins/concat.md",
        "<filter **>\n @type concat\n key log\n use_partial_metadata true\n ZZ\n</filter>\n",
    ),
    (
        "plugins/rewrite_tag_filter.md",
        "<match **>\n @type rewrite_tag_filter\n ZZ\n <rule>\n key a\n pattern /b/\n tag x\n </rule>\n</match>\n",
    ),
    (
        "plugins/rewrite_tag_filter.md",
        "<match **>\n @type rewrite_tag_filter\n <rule>\n key a\n pattern /b/\n tag x\n ZZ\n </rule>\n</match>\n",
    ),
    (
        "buffers.md",
        "<match **>\n @type s3\n s3_bucket bkt\n <buffer>\n ZZ\n </buffer>\n</match>\n",
    ),
    (
        "buffers.md",
        "<match **>\n @type null\n <buffer>\n @type file\n path /tmp/b\n ZZ\n </buffer>\n</match>\n",
    ),
    (
        "configuration.md",
        "<system>\n ZZ\n</system>\n<match **>\n @type null\n</match>\n",
    ),
    (
        "configuration.md",
        "<match **>\n @type file\n path /tmp/x\n <format>\n @type json\n ZZ\n </format>\n</match>\n",
    ),
    (
        "configuration.md",
        "<match **>\n @type file\n path /tmp/x\n <format>\n @type out_file\n ZZ\n </format>\n</match>\n",
    ),
    (
        "configuration.md",
        "<match **>\n @type file\n path /tmp/x\n <format>\n @type single_value\n ZZ\n </format>\n</match>\n",
    ),
    (
        "configuration.md",
        "<match **>\n @type file\n path /tmp/x\n <format>\n @type ltsv\n ZZ\n </format>\n</match>\n",
    ),
    (
        "configuration.md",
        "<match **>\n @type file\n path /tmp/x\n <inject>\n ZZ\n </inject>\n</match>\n",
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
    if err.contains("takes no parameters") {
        return BTreeSet::new();
    }
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

/// Backticked names in the first column of the doc's parameter tables (tables whose header's
/// first cell says "parameter"). `a1`..`a20` stands for the whole numbered range.
fn documented(doc: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let lines: Vec<&str> = doc.lines().collect();
    let first_cell = |line: &str| -> Option<String> {
        line.trim_start()
            .strip_prefix('|')
            .and_then(|l| l.split('|').next())
            .map(str::to_string)
    };
    let mut in_params = false;
    for (i, line) in lines.iter().enumerate() {
        let Some(first) = first_cell(line) else {
            in_params = false;
            continue;
        };
        if first.trim_start().starts_with("---") {
            continue;
        }
        let is_header = lines
            .get(i + 1)
            .and_then(|next| first_cell(next))
            .is_some_and(|c| c.trim_start().starts_with("---"));
        if is_header {
            in_params = first.to_ascii_lowercase().contains("parameter");
            continue;
        }
        if !in_params {
            continue;
        }
        let names: Vec<&str> = first.split('`').skip(1).step_by(2).collect();
        let gaps: Vec<&str> = first.split('`').skip(2).step_by(2).collect();
        for (k, part) in names.iter().enumerate() {
            // `regexp1`..`regexp20`
            if gaps.get(k).map(|g| g.trim()) == Some("..") {
                if let (Some(a), Some(b)) =
                    (split_num(part), names.get(k + 1).and_then(|n| split_num(n)))
                {
                    if a.0 == b.0 {
                        for n in a.1..=b.1 {
                            out.insert(format!("{}{n}", a.0));
                        }
                        continue;
                    }
                }
            }
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

/// `regexp20` -> ("regexp", 20).
fn split_num(name: &str) -> Option<(&str, u32)> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (stem, num) = name.split_at(name.len() - digits);
    Some((stem, num.parse().ok()?))
}

#[test]
fn every_accepted_parameter_is_documented_and_every_documented_one_is_accepted() {
    let mut problems = Vec::new();
    let files: BTreeSet<&str> = PLUGINS.iter().map(|(f, _)| *f).collect();
    for file in files {
        let path = root().join("docs").join(file);
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

//! filter_parser and filter_grep on the real Docker-driver corpus (`../shared/corpus`,
//! `NAGARE_CORPUS` overrides): records built as the Docker driver sends them (all values
//! strings, raw msgpack as in_forward hands them on), counts checked against the manifest.
//!
//! Split lines (partials) are left out here: rejoining them is concat's job, tested with the
//! whole forwarder config elsewhere. Their pieces are used once, rejoined by hand, to show the
//! parser takes the large audit lines whole.

use nagare_config::parse_str;
use nagare_core::{Event, EventStream, EventTime, Record, Tag, Value};
use nagare_pipeline::plugin::{ErrorEvent, Filter};
use nagare_pipeline::plugins::filter_grep::GrepFilter;
use nagare_pipeline::plugins::filter_parser::{ParserFilter, REASON_PARSE_FAILED};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

struct Line {
    tag: String,
    time: u32,
    pairs: Vec<(String, String)>,
}

fn corpus() -> Option<(Vec<Line>, serde_json::Value)> {
    let path = std::env::var_os("NAGARE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl")
        });
    let Ok(text) = std::fs::read_to_string(&path) else {
        // A missing corpus fails CI (as in nagare-aws's cloudwatch_corpus.rs): never a silent pass.
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
            panic!("CI=true but the corpus {} is missing", path.display());
        }
        eprintln!(
            "SKIPPED: corpus {} not found (set NAGARE_CORPUS)",
            path.display()
        );
        return None;
    };
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path.with_file_name(format!("{stem}.manifest.json")))
            .expect("manifest beside the corpus"),
    )
    .unwrap();
    let lines = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Line {
                tag: v["tag"].as_str().unwrap().to_string(),
                time: v["time"].as_u64().unwrap() as u32,
                pairs: v["record"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
            }
        })
        .collect();
    Some((lines, manifest))
}

fn section(conf: &str) -> nagare_config::Section {
    parse_str(conf, Path::new("test.conf"))
        .unwrap()
        .children
        .remove(0)
}

fn is_partial(l: &Line) -> bool {
    l.pairs.iter().any(|(k, _)| k == "partial_message")
}

/// One stream per record, as the Docker driver's Message mode gives them.
fn streams(lines: &[&Line]) -> Vec<EventStream> {
    lines
        .iter()
        .map(|l| {
            EventStream::new(
                Tag::from(l.tag.as_str()),
                vec![Event {
                    time: EventTime::from_secs(l.time),
                    record: Record::from_pairs(&l.pairs),
                }],
            )
        })
        .collect()
}

fn run(filters: &[&dyn Filter], streams: &mut [EventStream]) -> Vec<ErrorEvent> {
    let mut errors = Vec::new();
    for s in streams.iter_mut() {
        for f in filters {
            f.filter(s, &mut errors);
            if s.is_empty() {
                break;
            }
        }
    }
    errors
}

/// The record's map, whether a filter left it decoded or as bytes.
fn map_of(r: &Record) -> nagare_core::Map {
    match r.decoded() {
        Some(m) => m.clone(),
        None => match Value::decode(r.bytes(), 0).unwrap().0 {
            Value::Map(m) => m,
            _ => panic!("record is not a map"),
        },
    }
}

fn kind(m: &nagare_core::Map) -> &'static str {
    let s = |k: &[u8]| m.get(k).and_then(Value::as_bytes).unwrap_or(b"");
    if s(b"marker") == b"AUDIT" {
        "audit"
    } else if s(b"level") == b"error" || s(b"level") == b"fatal" {
        "error"
    } else {
        "app"
    }
}

#[test]
fn docker_config_parses_every_json_line_and_grep_drops_exactly_the_health_checks() {
    let Some((lines, manifest)) = corpus() else {
        return;
    };
    let whole: Vec<&Line> = lines.iter().filter(|l| !is_partial(l)).collect();
    let kinds = &manifest["kinds"];
    let n = |k: &str| kinds[k].as_u64().unwrap() as usize;
    let split = manifest["split_lines"].as_u64().unwrap() as usize;
    assert_eq!(
        whole.len(),
        manifest["records"].as_u64().unwrap() as usize - split
    );

    let parser = ParserFilter::from_section(
        &section(
            "<filter docker.**>\n@type parser\nkey_name log\nreserve_data true\nremove_key_name_field true\nreserve_time true\n<parse>\n@type json\n</parse>\n</filter>\n",
        ),
        "corpus_parser",
    )
    .unwrap();
    let grep = GrepFilter::from_section(
        &section(
            "<filter docker.**>\n@type grep\n<exclude>\nkey $.msg\npattern /healthcheck\\.Check|grpc\\.health/\n</exclude>\n</filter>\n",
        ),
        "corpus_grep",
    )
    .unwrap();
    let mut ss = streams(&whole);
    let errors = run(&[&parser, &grep], &mut ss);

    // Every plain-text line, and nothing else, failed to parse (and was kept: reserve_data).
    assert_eq!(errors.len(), n("text"));
    assert!(errors.iter().all(|e| e.reason == REASON_PARSE_FAILED));
    assert!(errors
        .iter()
        .all(|e| !e.event.record.get_str(b"log").unwrap().starts_with(b"{")));

    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (s, line) in ss.iter().zip(&whole) {
        for e in &s.events {
            let m = map_of(&e.record);
            let k = if m.contains_key(b"level") {
                kind(&m)
            } else {
                "text"
            };
            *by_kind.entry(k).or_default() += 1;
            assert_eq!(e.time, EventTime::from_secs(line.time), "reserve_time");
        }
    }
    // All split lines are audit lines; the whole ones are all here except the health checks.
    let want: BTreeMap<&str, usize> = [
        ("app", n("app")),
        ("audit", n("audit") - split),
        ("error", n("error")),
        ("text", n("text")),
    ]
    .into_iter()
    .collect();
    assert_eq!(by_kind, want);
    assert_eq!(
        ss.iter().map(EventStream::len).sum::<usize>(),
        whole.len() - n("health")
    );
}

#[test]
fn the_parsed_log_object_wins_over_dockers_log_string() {
    let Some((lines, _)) = corpus() else { return };
    let app = lines
        .iter()
        .find(|l| {
            l.pairs
                .iter()
                .any(|(k, v)| k == "log" && v.contains("\"log\":{"))
        })
        .expect("an app line with a nested log object");
    let parser = ParserFilter::from_section(
        &section("<filter **>\n@type parser\nkey_name log\nreserve_data true\nremove_key_name_field true\n<parse>\n@type json\n</parse>\n</filter>\n"),
        "corpus_parser_log",
    )
    .unwrap();
    let mut ss = streams(&[app]);
    let errors = run(&[&parser], &mut ss);
    assert!(errors.is_empty());
    let m = map_of(&ss[0].events[0].record);
    let keys: Vec<String> = m.iter().map(|(k, _)| k.to_text().into_owned()).collect();
    assert_eq!(
        keys,
        [
            "container_id",
            "container_name",
            "source",
            "level",
            "ts",
            "service",
            "msg",
            "out",
            "log"
        ]
    );
    let log = m
        .get(b"log")
        .and_then(Value::as_map)
        .expect("log is the parsed object");
    assert!(log.contains_key(b"request") && log.contains_key(b"duration"));
    assert_eq!(m.get(b"source"), Some(&Value::str("stdout")));
    // The record re-encodes as msgpack the buffer can take.
    let bytes = ss[0].events[0].record.bytes().clone();
    assert!(Record::from_msgpack(bytes).is_ok());
}

#[test]
fn seed_flat_form_sends_text_lines_to_errors_and_keeps_only_parsed_fields() {
    let Some((lines, manifest)) = corpus() else {
        return;
    };
    let whole: Vec<&Line> = lines.iter().filter(|l| !is_partial(l)).collect();
    let parser = ParserFilter::from_section(
        &section("<filter docker.**>\n  @type parser\n  format json\n  key_name log\n</filter>\n"),
        "corpus_seed",
    )
    .unwrap();
    let mut ss = streams(&whole);
    let errors = run(&[&parser], &mut ss);
    assert_eq!(
        errors.len(),
        manifest["kinds"]["text"].as_u64().unwrap() as usize
    );
    for s in &ss {
        for e in &s.events {
            let m = map_of(&e.record);
            assert!(!m.contains_key(b"container_id"), "reserve_data is off");
            assert!(m.contains_key(b"level") && m.contains_key(b"service"));
        }
    }
}

#[test]
fn rejoined_partials_parse_whole() {
    let Some((lines, _)) = corpus() else { return };
    let mut joined: BTreeMap<String, (String, String)> = BTreeMap::new();
    for l in lines.iter().filter(|l| is_partial(l)) {
        let get = |k: &str| l.pairs.iter().find(|(x, _)| x == k).unwrap().1.clone();
        let e = joined
            .entry(get("partial_id"))
            .or_insert_with(|| (l.tag.clone(), String::new()));
        e.1.push_str(&get("log"));
    }
    assert!(!joined.is_empty());
    let parser = ParserFilter::from_section(
        &section(
            "<filter **>\n@type parser\nkey_name log\n<parse>\n@type json\n</parse>\n</filter>\n",
        ),
        "corpus_partials",
    )
    .unwrap();
    for (tag, log) in joined.values() {
        let mut s = EventStream::new(
            Tag::from(tag.as_str()),
            vec![Event {
                time: EventTime::from_secs(1),
                record: Record::from_pairs(&[("log", log.as_str())]),
            }],
        );
        let mut errors = Vec::new();
        parser.filter(&mut s, &mut errors);
        assert!(errors.is_empty(), "{} bytes did not parse", log.len());
        let m = map_of(&s.events[0].record);
        assert_eq!(m.get(b"marker"), Some(&Value::str("AUDIT")));
    }
}

/// filter_parser's fast path (records still in wire bytes, JSON transcoded straight to
/// msgpack) and its decoded path (a filter decoded the record first) give the same bytes.
#[test]
fn raw_and_decoded_paths_give_identical_records() {
    let Some((lines, _)) = corpus() else { return };
    let whole: Vec<&Line> = lines.iter().filter(|l| !is_partial(l)).collect();
    for (i, (body, parse)) in [
        (
            "reserve_time true\nreserve_data true\nremove_key_name_field true",
            "",
        ),
        ("reserve_time true\nreserve_data true", ""),
        ("reserve_time true", ""),
        // The services' `ts` as the event time, kept in the record, and taken out.
        (
            "reserve_data true",
            "time_key ts\nkeep_time_key true\ntime_format %Y-%m-%dT%H:%M:%S.%L%z",
        ),
        ("", "time_key ts\ntime_format %iso8601"),
    ]
    .iter()
    .enumerate()
    {
        let parser = ParserFilter::from_section(
            &section(&format!("<filter **>\n@type parser\nkey_name log\n{body}\n<parse>\n@type json\n{parse}\n</parse>\n</filter>\n")),
            &format!("corpus_paths_{i}"),
        )
        .unwrap();
        let mut raw = streams(&whole);
        let mut decoded = streams(&whole);
        for s in decoded.iter_mut() {
            for e in s.events.iter_mut() {
                e.record.map_mut();
            }
        }
        let e1 = run(&[&parser], &mut raw);
        let e2 = run(&[&parser], &mut decoded);
        assert_eq!(e1.len(), e2.len());
        for (a, b) in raw.iter().zip(&decoded) {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.events.iter().zip(&b.events) {
                assert_eq!(x.time, y.time);
                assert_eq!(x.record.bytes(), y.record.bytes(), "{body}");
            }
        }
    }
}

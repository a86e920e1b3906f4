//! `@type s3`: parameters with fluent-plugin-s3's names, mapped onto `nagare_aws::out_s3`
//! (formatting, keys, create-only uploads: see that module), behind a buffer chunked by
//! `time` (1-hour `timekey`) unless `<buffer>` says otherwise.
//!
//! * `s3_endpoint file:///var/lib/nagare/s3` writes the same keys as files (no AWS needed).
//! * Placeholders are checked against the chunk keys at load: `${service}` needs
//!   `<buffer time,service>`; `${tag}` without `tag` and strftime without `time` are warnings
//!   (the chunk's first tag / first event time is used).
//! * Without a `<secondary>`, access errors (bad credentials, missing bucket, AccessDenied)
//!   keep the chunk in the buffer and retry; with one, they hand it over at once.
//! * `check_object` and `check_apikey_on_start` are accepted and ignored: keys never need a
//!   HEAD probe (the upload itself is conditional).

use crate::buffer::{self, BufferPlan};
use crate::plugin::{OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_aws::out_s3::key::TimeFormat;
use nagare_aws::out_s3::{
    DiskStore, Endpoint, Inject, LineFormat, S3Config, S3Output, StoreAs, TimeType, Zone,
};
use nagare_aws::{AssumeRole, Secret};
use nagare_config::{ConfigError, Params, Section};
use std::sync::Arc;
use std::time::Duration;

/// out_s3's buffer defaults: one chunk per hour of event time.
pub fn buffer_defaults() -> buffer::Defaults {
    buffer::Defaults {
        chunk_keys: "time",
        timekey: Some(Duration::from_secs(3600)),
        ..Default::default()
    }
}

pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "out_s3");
    let err = |m: String| ConfigError::new(sec.span.clone(), m);
    let mut p = sec.params();
    for k in [
        "@type",
        "@id",
        "@log_level",
        "check_object",
        "check_apikey_on_start",
        "warn_for_delay",
    ] {
        p.ignore(k);
    }
    let mut c = S3Config::new(&id, &p.required_str("s3_bucket")?);
    c.hostname = ctx.hostname.clone();
    // Empty means AWS (so a config can take the endpoint from an environment variable).
    if let Some(e) = p.str("s3_endpoint")?.filter(|e| !e.trim().is_empty()) {
        c.endpoint = Endpoint::parse(e.trim()).map_err(err)?;
    }
    c.region = p.str("s3_region")?;
    c.force_path_style = p.bool("force_path_style", false)?;
    // Empty keys mean the default credential chain (environment, ECS task role, IMDS).
    c.access_key_id = p.str("aws_key_id")?.filter(|k| !k.is_empty());
    c.secret_access_key = p.str("aws_sec_key")?.filter(|k| !k.is_empty()).map(Secret);
    if let Some(ar) = p.section("assume_role_credentials")? {
        let mut ap = ar.params();
        c.assume_role = Some(AssumeRole {
            role_arn: ap.required_str("role_arn")?,
            role_session_name: ap.str_or("role_session_name", "nagare")?,
            external_id: ap.str("external_id")?,
        });
        ap.ignore("duration_seconds");
        ap.ignore("policy");
        ap.finish()?;
    }
    c.path = p.str_or("path", "")?;
    c.object_key_format = p.str_or(
        "s3_object_key_format",
        nagare_aws::out_s3::config::DEFAULT_OBJECT_KEY_FORMAT,
    )?;
    c.time_slice_format = p.str("time_slice_format")?;
    c.index_format = p.str_or(
        "index_format",
        nagare_aws::out_s3::config::DEFAULT_INDEX_FORMAT,
    )?;
    c.hex_random_length = p.int(
        "hex_random_length",
        nagare_aws::out_s3::config::DEFAULT_HEX_RANDOM_LENGTH,
    )?;
    let store_as = p.enumeration("store_as", &["gzip", "zstd", "json", "text", "txt"], "gzip")?;
    c.store_as = StoreAs::parse(&store_as).unwrap_or(StoreAs::Gzip);
    c.compression_level = match p.opt_size("compression_level")? {
        Some(v) => {
            Some(i32::try_from(v).map_err(|_| err("compression_level is too large".into()))?)
        }
        None => None,
    };
    c.content_type = p.str("content_type")?;
    c.content_encoding = p.str("content_encoding")?;
    c.storage_class = p.str("storage_class")?;
    if p.bool("reduced_redundancy", false)? {
        c.storage_class = Some("REDUCED_REDUNDANCY".into());
    }
    c.sse = match (p.str("use_server_side_encryption")?, p.str("sse")?) {
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    c.ssekms_key_id = p.str("ssekms_key_id")?;
    c.acl = p.str("acl")?;
    c.tagging = p.str("tagging")?;
    c.check_bucket = p.bool("check_bucket", false)?;
    c.auto_create_bucket = p.bool("auto_create_bucket", false)?;
    c.multipart_threshold = p.size("multipart_threshold", c.multipart_threshold as u64)? as usize;
    c.multipart_chunk_size =
        p.size("multipart_chunk_size", c.multipart_chunk_size as u64)? as usize;
    c.multipart_concurrency = p.int("multipart_concurrency", c.multipart_concurrency)?;
    c.sdk_max_attempts = p.int("sdk_max_attempts", c.sdk_max_attempts)?;
    c.request_timeout = p.duration("request_timeout", c.request_timeout)?;
    let (line, inject) = parse_format(&mut p).map_err(err)?;
    c.line = line;
    c.inject = inject;

    let has_secondary = sec.children.iter().any(|s| s.name == "secondary");
    let plan = BufferPlan::parse(&mut p, &buffer_defaults(), ctx, &id)?;
    p.finish()?;
    c.access_errors_retryable = !has_secondary;
    let keys = &plan.config.chunk_keys;
    if let Some(t) = &keys.time {
        c.timekey = Some(t.unit.max(1) as u64);
        c.zone = Zone {
            offset_secs: t.utc_offset as i32,
        };
    }
    let compiled = c.compile().map_err(err)?;
    for v in compiled.key.vars() {
        if !keys.records.iter().any(|r| &r.name == v) {
            return Err(err(format!(
                "s3_object_key_format/path use ${{{v}}}, but '{v}' is not a chunk key: write <buffer time,{v}>"
            )));
        }
    }
    if compiled.key.uses_tag() && !keys.tag {
        ctx.warnings.push(format!(
            "{id}: the key uses ${{tag}} but tag is not a chunk key: a chunk mixing tags is named after its first event's tag (write <buffer tag,...>)"
        ));
    }
    if compiled.key.uses_time() && keys.time.is_none() {
        ctx.warnings.push(format!(
            "{id}: the key has time placeholders but time is not a chunk key: they render the chunk's first event time (write <buffer time,...>)"
        ));
    }
    let out: Arc<dyn nagare_core::Output> = if ctx.dry_run {
        // Validate only: nothing is opened or contacted.
        Arc::new(
            S3Output::with_store(&c, Arc::new(DiskStore::new("/nonexistent", &c.bucket)))
                .map_err(|e| err(e.to_string()))?,
        )
    } else {
        Arc::new(S3Output::start_blocking(&c).map_err(|e| err(format!("{id}: {e}")))?)
    };
    if matches!(c.endpoint, Endpoint::Disk(_)) {
        tracing::info!(plugin_id = %id, endpoint = ?c.endpoint, "out_s3 writes to the on-disk store");
    }
    let buffered = plan.start(out, &id, ctx, tasks)?;
    Ok(buffered)
}

/// `<format>` (or v0.12 `format`) and the injected fields (`include_time_key`, `<inject>`).
fn parse_format(p: &mut Params<'_>) -> Result<(LineFormat, Inject), String> {
    let mut inject = Inject::default();
    let mut ty = p.str("format").map_err(|e| e.to_string())?;
    let mut message_key = "message".to_string();
    let mut add_newline = true;
    let mut delimiter = "\t".to_string();
    let mut label_delimiter = ":".to_string();
    if let Some(f) = p.section("format").map_err(|e| e.to_string())? {
        let mut fp = f.params();
        ty = Some(fp.str_or("@type", "json").map_err(|e| e.to_string())?);
        message_key = fp
            .str_or("message_key", &message_key)
            .map_err(|e| e.to_string())?;
        add_newline = fp.bool("add_newline", true).map_err(|e| e.to_string())?;
        delimiter = fp
            .str_or("delimiter", &delimiter)
            .map_err(|e| e.to_string())?;
        label_delimiter = fp
            .str_or("label_delimiter", &label_delimiter)
            .map_err(|e| e.to_string())?;
        fp.finish().map_err(|e| e.to_string())?;
    }
    let line = match ty.as_deref().unwrap_or("json") {
        "json" => LineFormat::Json,
        "single_value" => LineFormat::SingleValue {
            message_key,
            add_newline,
        },
        "ltsv" => LineFormat::Ltsv {
            delimiter: unescape(&delimiter),
            label_delimiter,
            add_newline,
        },
        other => {
            return Err(format!(
                "<format> @type '{other}' is not supported by out_s3 (json, single_value, ltsv)"
            ))
        }
    };
    // v0.12 top-level parameters.
    let s = |p: &mut Params<'_>, k: &str| p.str(k).map_err(|e| e.to_string());
    let include_time = p
        .bool("include_time_key", false)
        .map_err(|e| e.to_string())?;
    let time_key = s(p, "time_key")?;
    let time_format = s(p, "time_format")?;
    let include_tag = p
        .bool("include_tag_key", false)
        .map_err(|e| e.to_string())?;
    let tag_key = s(p, "tag_key")?;
    let zone = zone_of(p)?;
    if include_time {
        inject.time_key = Some(time_key.unwrap_or_else(|| "time".into()));
        inject.time_type = Some(TimeType::String(TimeFormat::parse(
            time_format.as_deref().unwrap_or("%Y-%m-%dT%H:%M:%S%z"),
        )?));
    }
    if include_tag {
        inject.tag_key = Some(tag_key.unwrap_or_else(|| "tag".into()));
    }
    inject.zone = zone;
    if let Some(sec) = p.section("inject").map_err(|e| e.to_string())? {
        let mut ip = sec.params();
        if let Some(k) = ip.str("time_key").map_err(|e| e.to_string())? {
            inject.time_key = Some(k);
            let tf = ip.str("time_format").map_err(|e| e.to_string())?;
            let tt = ip
                .enumeration("time_type", &["float", "unixtime", "string"], "float")
                .map_err(|e| e.to_string())?;
            inject.time_type = Some(match tt.as_str() {
                "unixtime" => TimeType::Unixtime,
                "string" => TimeType::String(TimeFormat::parse(
                    tf.as_deref().unwrap_or("%Y-%m-%dT%H:%M:%S%z"),
                )?),
                // Fluentd: a time_format turns the default float into a string.
                _ if tf.is_some() => {
                    TimeType::String(TimeFormat::parse(tf.as_deref().unwrap_or(""))?)
                }
                _ => TimeType::Float,
            });
        } else {
            ip.ignore("time_type");
            ip.ignore("time_format");
        }
        if let Some(k) = ip.str("tag_key").map_err(|e| e.to_string())? {
            inject.tag_key = Some(k);
        }
        inject.zone = zone_of(&mut ip)?;
        ip.finish().map_err(|e| e.to_string())?;
    }
    Ok((line, inject))
}

fn zone_of(p: &mut Params<'_>) -> Result<Zone, String> {
    let utc = p.bool("utc", false).map_err(|e| e.to_string())?;
    let local = p.bool("localtime", false).map_err(|e| e.to_string())?;
    let tz = p.str("timezone").map_err(|e| e.to_string())?;
    if local && !utc && tz.is_none() {
        return Err("localtime true is not supported: times are UTC, or set timezone to a fixed offset such as +09:00".into());
    }
    match tz {
        Some(z) => Zone::parse(&z),
        None => Ok(Zone::UTC),
    }
}

/// `\t` written literally in a config means a tab.
fn unescape(s: &str) -> String {
    s.replace("\\t", "\t")
}

/// The moto helper shared with nagare-aws's tests (spawns `.ci/venv/bin/moto_server`).
#[cfg(test)]
#[path = "../../../nagare-aws/tests/common/moto.rs"]
mod moto;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn build_conf(text: &str) -> Result<BuildCtx, ConfigError> {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        let sec = root.children[0].clone();
        let mut ctx = BuildCtx {
            dry_run: true,
            hostname: "host-a".into(),
            ..BuildCtx::default()
        };
        let mut tasks = Tasks::default();
        build(&sec, &mut ctx, &mut tasks).map(|_| ctx)
    }

    fn build_err(text: &str) -> String {
        match build_conf(text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("loaded: {text}"),
        }
    }

    #[test]
    fn the_seed_layout_config_loads() {
        let ctx = build_conf(
            "<match app.**>\n @type s3\n s3_bucket my-logs\n s3_region ap-northeast-1\n path applications/${service}/app/%Y/%m/%d/%H/\n s3_object_key_format %{path}%M_%{hostname}_%{index}.%{file_extension}\n <buffer time,service>\n  timekey 5m\n  timekey_wait 30s\n </buffer>\n</match>\n",
        )
        .unwrap();
        assert!(ctx.warnings.is_empty(), "{:?}", ctx.warnings);
    }

    #[test]
    fn placeholders_must_be_chunk_keys_and_errors_name_the_parameter() {
        let e =
            build_err("<match **>\n @type s3\n s3_bucket my-logs\n path ${service}/\n</match>\n");
        assert!(e.contains("<buffer time,service>"), "{e}");
        let e = build_err("<match **>\n @type s3\n s3_bucket my-logs\n store_as lzo\n</match>\n");
        assert!(e.contains("store_as"), "{e}");
        let e = build_err("<match **>\n @type s3\n</match>\n");
        assert!(e.contains("s3_bucket"), "{e}");
        let e = build_err(
            "<match **>\n @type s3\n s3_bucket my-logs\n s3_object_key_format %{path}%{time_slice}.gz\n</match>\n",
        );
        assert!(e.contains("same key"), "{e}");
        let ctx =
            build_conf("<match **>\n @type s3\n s3_bucket my-logs\n path ${tag}/\n</match>\n")
                .unwrap();
        assert!(
            ctx.warnings.iter().any(|w| w.contains("${tag}")),
            "{:?}",
            ctx.warnings
        );
    }

    #[test]
    fn formats_inject_and_object_options() {
        build_conf(
            "<match **>\n @type s3\n s3_bucket my-logs\n store_as zstd\n compression_level 9\n include_time_key true\n time_key ts\n storage_class STANDARD_IA\n use_server_side_encryption aws:kms\n ssekms_key_id arn:aws:kms:us-east-1:1:key/x\n acl bucket-owner-full-control\n tagging a=1&b=2\n <format>\n  @type ltsv\n </format>\n</match>\n",
        )
        .unwrap();
        let e = build_err(
            "<match **>\n @type s3\n s3_bucket my-logs\n <format>\n  @type msgpack\n </format>\n</match>\n",
        );
        assert!(e.contains("msgpack"), "{e}");
        let e = build_err(
            "<match **>\n @type s3\n s3_bucket my-logs\n s3_endpoint file://x\n</match>\n",
        );
        assert!(e.contains("s3_endpoint"), "{e}");
    }

    // ---- the corpus through examples/forwarder.conf --------------------------------------------

    use super::moto;

    use bytes::BytesMut;
    use nagare_config::ParseOptions;
    use nagare_core::{EventTime, Record};
    use serde_json::Value as J;
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Read;
    use tokio::io::AsyncWriteExt;

    struct Wire {
        tag: String,
        time: u32,
        container: String,
        record: Vec<(String, String)>,
    }

    /// What the forwarder should store for one corpus line (partials rejoined): Docker's
    /// fields plus the parsed JSON of `log` (which wins), as canonical JSON; its service, kind
    /// and slice; and whether the forwarder drops it (health checks).
    struct Expect {
        json: String,
        service: String,
        kind: &'static str,
        slice: u32,
        dropped: bool,
    }

    fn load_corpus() -> (Vec<Wire>, Vec<Expect>) {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl");
        let text = std::fs::read_to_string(&path).expect("the corpus");
        let mut wires = Vec::new();
        #[allow(clippy::type_complexity)]
        let mut lines: Vec<(String, u32, Vec<(String, String)>)> = Vec::new();
        let mut open: BTreeMap<String, usize> = BTreeMap::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: J = serde_json::from_str(l).unwrap();
            let tag = v["tag"].as_str().unwrap().to_string();
            let time = v["time"].as_u64().unwrap() as u32;
            let rec: Vec<(String, String)> = v["record"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_string()))
                .collect();
            let get = |k: &str| {
                rec.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            wires.push(Wire {
                tag: tag.clone(),
                time,
                container: get("container_id"),
                record: rec.clone(),
            });
            if get("partial_message") == "true" {
                let pid = get("partial_id");
                match open.get(&pid) {
                    Some(&i) => lines[i]
                        .2
                        .iter_mut()
                        .find(|(k, _)| k == "log")
                        .unwrap()
                        .1
                        .push_str(&get("log")),
                    None => {
                        let f = rec
                            .iter()
                            .filter(|(k, _)| !k.starts_with("partial_"))
                            .cloned()
                            .collect();
                        lines.push((tag, time, f));
                        open.insert(pid.clone(), lines.len() - 1);
                    }
                }
                if get("partial_last") == "true" {
                    open.remove(&pid);
                }
            } else {
                lines.push((tag, time, rec));
            }
        }
        let expects = lines
            .into_iter()
            .map(|(tag, time, fields)| {
                let mut m: serde_json::Map<String, J> = fields
                    .iter()
                    .map(|(k, v)| (k.clone(), J::String(v.clone())))
                    .collect();
                let log = m["log"].as_str().unwrap_or("").to_string();
                let mut dropped = false;
                let mut audit = false;
                if let Ok(J::Object(parsed)) = serde_json::from_str::<J>(&log) {
                    let msg = parsed.get("msg").and_then(J::as_str).unwrap_or("");
                    dropped = msg.contains("healthcheck.Check") || msg.contains("grpc.health");
                    audit = parsed.get("marker").and_then(J::as_str) == Some("AUDIT");
                    m.extend(parsed);
                }
                Expect {
                    json: J::Object(m).to_string(),
                    service: tag.split('.').nth(1).unwrap().to_string(),
                    kind: if audit { "audit" } else { "app" },
                    slice: time - time % 300,
                    dropped,
                }
            })
            .collect();
        (wires, expects)
    }

    fn docker_message(out: &mut BytesMut, w: &Wire) {
        let record = Record::from_pairs(&w.record);
        let start = out.len();
        let opts = nagare_forward::codec::encode::Options::default();
        nagare_forward::codec::encode::write_message(
            out,
            w.tag.as_bytes(),
            EventTime::from_secs(w.time),
            &record,
            Some(&opts),
            true,
        );
        // Docker's Go client writes int32 time (0xd2) where write_message writes uint32.
        let at = start + 1 + if w.tag.len() < 32 { 1 } else { 2 } + w.tag.len();
        assert_eq!(out[at], 0xce);
        out[at] = 0xd2;
    }

    fn slice_of(k: &str) -> Option<(String, String, u32, String, u64)> {
        // applications/<service>/<kind>/YYYY/MM/DD/HH/MM_<host>_<n>.gz
        let p: Vec<&str> = k.split('/').collect();
        if p.len() != 8 || p[0] != "applications" {
            return None;
        }
        let (file, _) = p[7].rsplit_once(".gz").filter(|(_, r)| r.is_empty())?;
        let mut f = file.splitn(3, '_');
        let (min, host, n) = (f.next()?, f.next()?, f.next()?);
        let y: i64 = p[3].parse().ok()?;
        let days =
            nagare_aws::out_s3::key::days_from_civil(y, p[4].parse().ok()?, p[5].parse().ok()?);
        let secs = days * 86_400 + p[6].parse::<i64>().ok()? * 3600 + min.parse::<i64>().ok()? * 60;
        Some((
            p[1].to_string(),
            p[2].to_string(),
            secs as u32,
            host.to_string(),
            n.parse().ok()?,
        ))
    }

    async fn corpus_through_forwarder_s3_example(endpoint: String, path_style: bool) {
        let (wires, expects) = load_corpus();
        assert_eq!((wires.len(), expects.len()), (2077, 2000));
        let kept: Vec<&Expect> = expects.iter().filter(|e| !e.dropped).collect();
        assert_eq!(kept.len(), 2000 - 304, "the manifest's health checks");
        let tmp = tempfile::tempdir().unwrap();
        let bucket = format!(
            "fwd-s3-{}-{}",
            std::process::id(),
            if path_style { "moto" } else { "disk" }
        );
        let endpoint = if endpoint.is_empty() {
            format!("file://{}", tmp.path().join("s3").display())
        } else {
            endpoint
        };
        // A stand-in aggregator that acks everything.
        let agg_root = nagare_config::parse_str(
            "<source>\n @type forward\n bind 127.0.0.1\n port 0\n</source>\n<match **>\n @type null\n</match>\n",
            Path::new("agg.conf"),
        )
        .unwrap();
        let (agg_trigger, agg_sd) = nagare_core::shutdown::channel();
        let agg = crate::Pipeline::build(&agg_root)
            .unwrap()
            .start(agg_sd)
            .await
            .unwrap();
        let agg_port = agg.inputs[0].addr.port().to_string();
        let data = tmp.path().join("data");
        let opts = ParseOptions::fixed(
            [
                ("NAGARE_BIND", "127.0.0.1"),
                ("NAGARE_PORT", "0"),
                ("NAGARE_DATA_DIR", data.to_str().unwrap()),
                ("NAGARE_AGGREGATOR_HOST", "127.0.0.1"),
                ("NAGARE_AGGREGATOR_PORT", agg_port.as_str()),
                ("NAGARE_S3_BUCKET", bucket.as_str()),
                ("NAGARE_S3_ENDPOINT", endpoint.as_str()),
                (
                    "NAGARE_S3_PATH_STYLE",
                    if path_style { "true" } else { "false" },
                ),
                ("NAGARE_S3_AUTO_CREATE", "true"),
                ("NAGARE_S3_KEY_ID", "testing"),
                ("NAGARE_S3_SECRET_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ],
            "fwd-test",
        );
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/forwarder.conf");
        let root = nagare_config::parse_file_with(&example, &opts).unwrap();
        let mut ctx = BuildCtx {
            hostname: "ip-10-0-1-23".into(),
            ..BuildCtx::default()
        };
        ctx.drain_timeout = Duration::from_secs(10);
        let (fwd_trigger, fwd_sd) = nagare_core::shutdown::channel();
        let fwd = crate::Pipeline::build_with(&root, ctx)
            .unwrap()
            .start(fwd_sd)
            .await
            .unwrap();
        let addr = fwd.inputs[0].addr;
        // Docker: one connection per container, records in file order.
        let mut per: Vec<(String, BytesMut)> = Vec::new();
        for w in &wires {
            let i = match per.iter().position(|(c, _)| *c == w.container) {
                Some(i) => i,
                None => {
                    per.push((w.container.clone(), BytesMut::new()));
                    per.len() - 1
                }
            };
            docker_message(&mut per[i].1, w);
        }
        let mut senders = Vec::new();
        for (_, bytes) in per {
            senders.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(&bytes).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        // Read back through the same store.
        let mut rc = nagare_aws::out_s3::S3Config::new("fwd-s3-reader", &bucket);
        rc.endpoint = Endpoint::parse(&endpoint).unwrap();
        rc.force_path_style = path_style;
        rc.region = Some("us-east-1".into());
        rc.access_key_id = Some("testing".into());
        rc.secret_access_key = Some(Secret("testing".into()));
        let reader = S3Output::start(&rc).await.unwrap().store();
        let read = || async {
            let mut out = BTreeMap::new();
            for k in reader.list("").await.unwrap() {
                let body = reader.get(&k).await.unwrap().unwrap();
                let mut text = String::new();
                flate2::read::MultiGzDecoder::new(&body[..])
                    .read_to_string(&mut text)
                    .unwrap_or_else(|e| panic!("{k} does not gunzip: {e}"));
                out.insert(k, text.lines().map(str::to_string).collect::<Vec<_>>());
            }
            out
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let objects = loop {
            let o = read().await;
            let n: usize = o.values().map(Vec::len).sum();
            if n >= kept.len() || tokio::time::Instant::now() > deadline {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        fwd_trigger.fire();
        fwd.wait().await;
        agg_trigger.fire();
        agg.wait().await;
        // Every line parses, sits under its service/kind/slice, and the union is exactly the
        // corpus without the health checks, each line once.
        let mut place: BTreeMap<&str, BTreeSet<(&str, &str, u32)>> = BTreeMap::new();
        let mut want: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &kept {
            place
                .entry(&e.json)
                .or_default()
                .insert((&e.service, e.kind, e.slice));
            *want.entry(&e.json).or_default() += 1;
        }
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        let mut families: BTreeMap<(String, String, u32), BTreeSet<u64>> = BTreeMap::new();
        for (k, lines) in &objects {
            let (svc, kind, slice, host, n) =
                slice_of(k).unwrap_or_else(|| panic!("{k} is not the seed layout"));
            assert_eq!(host, "ip-10-0-1-23");
            families
                .entry((svc.clone(), kind.clone(), slice))
                .or_default()
                .insert(n);
            for l in lines {
                let v: J =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{k}: not JSON ({e})"));
                let c = v.to_string();
                assert!(
                    place.get(c.as_str()).is_some_and(|s| s.contains(&(
                        svc.as_str(),
                        kind.as_str(),
                        slice
                    ))),
                    "{k}: a line of another service, kind or slice: {c:.200}"
                );
                *got.entry(c).or_default() += 1;
            }
        }
        let total: usize = got.values().sum();
        assert_eq!(total, kept.len(), "lines in S3");
        for (j, n) in &want {
            assert_eq!(got.get(*j), Some(n), "line count for {j:.200}");
        }
        for (f, idx) in &families {
            assert_eq!(
                idx,
                &(0..idx.len() as u64).collect::<BTreeSet<_>>(),
                "{f:?}"
            );
        }
        assert!(families.keys().any(|(_, k, _)| k == "audit"));
        eprintln!(
            "{} lines in {} objects under {endpoint}",
            total,
            objects.len()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corpus_through_forwarder_s3_example_on_disk() {
        corpus_through_forwarder_s3_example(String::new(), false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corpus_through_forwarder_s3_example_on_moto() {
        let Some(m) = moto::moto() else { return };
        corpus_through_forwarder_s3_example(m.endpoint.clone(), true).await;
    }
}

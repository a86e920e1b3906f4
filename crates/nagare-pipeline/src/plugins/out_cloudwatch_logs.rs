//! `@type cloudwatch_logs`: parameters with fluent-plugin-cloudwatch-logs' names, mapped onto
//! `nagare_aws::out_cloudwatch_logs` (batching, retries, names: see that module), behind a
//! buffer. `log_stream_name` defaults to this host's name (`NAGARE_HOSTNAME` overrides it), so
//! every aggregator of a fleet writes its own stream.
//!
//! `<secondary>` serves twice: the buffer hands it whole chunks when retries run out or a
//! write is unrecoverable, and the output sends it single events it will not deliver to
//! CloudWatch (invalid record-derived names without `fallback_log_group_name`, events dropped
//! by `oversize_action drop`, rejected events with `rejected_events_to_secondary`). For the
//! second use the output gets its own instance of the secondary: `secondary_file` writes one
//! file per call; another output type (say `@type file`) is built a second time with the same
//! parameters.

use crate::buffer;
use crate::plugin::{OutputPlugin, Tasks};
use crate::BuildCtx;
use nagare_aws::out_cloudwatch_logs::config::{CloudWatchLogsConfig, NameSource};
use nagare_aws::out_cloudwatch_logs::retry::{DEFAULT_RETRY_LIMIT, DEFAULT_RETRY_WAIT};
use nagare_aws::out_cloudwatch_logs::{CloudWatchLogs, OversizeAction};
use nagare_aws::{AssumeRole, Secret};
use nagare_buffer::secondary::{SecondaryFile, SecondaryFileConfig};
use nagare_buffer::Compress;
use nagare_config::{ConfigError, Params, Section};
use nagare_core::ack::Committed;
use nagare_core::{Chunk, ChunkId, ChunkKey, EmitError, EventSink, EventStream, Output};
use std::sync::Arc;

pub fn build(
    sec: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn OutputPlugin>, ConfigError> {
    let id = super::plugin_id(sec, ctx, "out_cloudwatch_logs");
    let err = |m: String| ConfigError::new(sec.span.clone(), m);
    let mut p = sec.params();
    p.ignore("@type");
    p.ignore("@id");
    p.ignore("@log_level");
    p.ignore("json_handler"); // JSON is always written by Nagare's encoder
    p.ignore("localtime"); // include_time_key times are UTC

    let group = name_source(
        &mut p,
        ("log_group_name", "log_group_name_key", "use_tag_as_group"),
        None,
    )
    .map_err(err)?;
    let stream = name_source(
        &mut p,
        (
            "log_stream_name",
            "log_stream_name_key",
            "use_tag_as_stream",
        ),
        Some(&ctx.hostname),
    )
    .map_err(err)?;
    let mut cfg = CloudWatchLogsConfig::new(&id, group, stream);

    // Connection and credentials (as for out_s3). Empty values mean unset (AWS, the SDK's
    // region chain, the default credential chain), so a config can take them from the
    // environment with `"#{ENV.fetch('X', '')}"`.
    let set = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    cfg.aws.region = set(p.str("region")?);
    cfg.aws.endpoint = set(p.str("endpoint")?).map(|e| e.trim().to_string());
    cfg.aws.access_key_id = set(p.str("aws_key_id")?);
    cfg.aws.secret_access_key = set(p.str("aws_sec_key")?).map(Secret);
    if let Some(ar) = p.section("assume_role_credentials")? {
        let mut ap = ar.params();
        cfg.aws.assume_role = Some(AssumeRole {
            role_arn: ap.required_str("role_arn")?,
            role_session_name: ap.str_or("role_session_name", "nagare")?,
            external_id: ap.str("external_id")?,
        });
        ap.ignore("duration_seconds");
        ap.ignore("policy");
        ap.finish()?;
    }
    // fluent-plugin-cloudwatch-logs' own spelling of the same thing.
    if p.bool("aws_use_sts", false)? {
        cfg.aws.assume_role = Some(AssumeRole {
            role_arn: p.required_str("aws_sts_role_arn")?,
            role_session_name: p.str_or("aws_sts_session_name", "nagare")?,
            external_id: p.str("aws_sts_external_id")?,
        });
    }
    if !p.bool("ssl_verify_peer", true)? {
        return Err(err(
            "ssl_verify_peer false is not supported: use an http:// endpoint for local tests"
                .into(),
        ));
    }

    cfg.remove_log_group_name_key = p.bool("remove_log_group_name_key", false)?;
    cfg.remove_log_stream_name_key = p.bool("remove_log_stream_name_key", false)?;
    cfg.log_group_name_prefix = p.str_or("log_group_name_prefix", "")?;
    cfg.fallback_log_group_name = p.str("fallback_log_group_name")?;
    cfg.fallback_log_stream_name = Some(p.str_or("fallback_log_stream_name", &ctx.hostname)?);
    cfg.auto_create_stream = p.bool("auto_create_stream", false)?;
    cfg.retention_in_days = match p.int::<i64>("retention_in_days", -1)? {
        -1 => None,
        d => Some(u32::try_from(d).map_err(|_| err(format!("retention_in_days {d}")))?),
    };
    cfg.retention_in_days_key = p.str("retention_in_days_key")?;
    cfg.remove_retention_in_days_key = p.bool("remove_retention_in_days_key", false)?;
    cfg.log_group_aws_tags = p.hash("log_group_aws_tags")?.unwrap_or_default();
    cfg.message_keys = p.array("message_keys")?.unwrap_or_default();
    cfg.max_message_length = p.opt_size("max_message_length")?.map(|v| v as usize);
    cfg.max_events_per_batch = p.int("max_events_per_batch", cfg.max_events_per_batch)?;
    cfg.max_event_size = p.size("max_event_size", cfg.max_event_size as u64)? as usize;
    cfg.oversize_action = OversizeAction::parse(&p.enumeration(
        "oversize_action",
        &["truncate", "split", "drop"],
        "truncate",
    )?)
    .unwrap_or(OversizeAction::Truncate);
    cfg.truncate_marker = p.str_or("truncate_marker", &cfg.truncate_marker.clone())?;
    cfg.include_time_key = p.bool("include_time_key", false)?;
    cfg.time_key = p.str_or("time_key", &cfg.time_key.clone())?;
    cfg.concurrency = p.int("concurrency", cfg.concurrency)?;
    // 0 (the default) means no limit.
    cfg.put_log_events_rate = Some(p.float("put_log_events_rate", 0.0)?).filter(|r| *r != 0.0);
    cfg.retry.retry_wait = p.duration("put_log_events_retry_wait", DEFAULT_RETRY_WAIT)?;
    let limit: u32 = p.int("put_log_events_retry_limit", DEFAULT_RETRY_LIMIT)?;
    cfg.retry.retry_limit = if p.bool("put_log_events_disable_retry_limit", false)? {
        None
    } else {
        Some(limit)
    };
    cfg.log_rejected_request = p.bool("log_rejected_request", false)?;
    cfg.rejected_events_to_secondary = p.bool("rejected_events_to_secondary", false)?;

    // The output's own instance of the secondary, for single events (see the module docs).
    let dead_letter = match sec.children_named("secondary").next() {
        None => None,
        Some(s) => Some(dead_letter(s, ctx, tasks)?),
    };
    let plan = buffer::BufferPlan::parse(&mut p, &buffer::Defaults::default(), ctx, &id)?;
    p.finish()?;
    cfg.validate().map_err(|e| err(e.to_string()))?;
    if matches!(cfg.group, NameSource::Tag) || matches!(cfg.stream, NameSource::Tag) {
        // Names from the tag need one tag per chunk.
        if !plan.config.chunk_keys.tag {
            return Err(err(
                "use_tag_as_group / use_tag_as_stream need `tag` among the buffer's chunk keys"
                    .into(),
            ));
        }
    }
    let out = Arc::new(CloudWatchLogs::new_lazy(cfg, dead_letter).map_err(|e| err(e.to_string()))?);
    plan.start(out, &id, ctx, tasks)
        .map(|b| b as Arc<dyn OutputPlugin>)
}

/// Exactly one of the three ways to name a group (or stream); `default` when none is given.
fn name_source(
    p: &mut Params<'_>,
    (name, key, tag): (&str, &str, &str),
    default: Option<&str>,
) -> Result<NameSource, String> {
    let n = p.str(name).map_err(|e| e.to_string())?;
    let k = p.str(key).map_err(|e| e.to_string())?;
    let t = p.bool(tag, false).map_err(|e| e.to_string())?;
    let set = n.is_some() as u8 + k.is_some() as u8 + t as u8;
    if set > 1 {
        return Err(format!("set only one of {name}, {key} and {tag}"));
    }
    Ok(match (n, k, t) {
        (Some(n), _, _) => NameSource::Static(n),
        (_, Some(k), _) => NameSource::Key(k),
        (_, _, true) => NameSource::Tag,
        _ => match default {
            Some(d) => NameSource::Static(d.to_string()),
            None => return Err(format!("one of {name}, {key} or {tag} is required")),
        },
    })
}

/// Where the output sends single events it will not deliver.
fn dead_letter(
    s: &Section,
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
) -> Result<Arc<dyn EventSink>, ConfigError> {
    // The section is validated in full by the buffer's own parse; read only what we need.
    if s.type_name() == Some("secondary_file") {
        let dir = s
            .param("directory")
            .map(|p| p.value.clone())
            .ok_or_else(|| ConfigError::new(s.span.clone(), "secondary_file needs directory"))?;
        let mut c = SecondaryFileConfig::new(dir);
        if let Some(b) = s.param("basename") {
            c.basename = b.value.clone();
        }
        if s.param("compress").is_some_and(|p| p.value == "gzip") {
            c.compress = Compress::Gzip;
        }
        return Ok(Arc::new(FileDeadLetter(SecondaryFile::new(c))));
    }
    let mut sec = s.clone();
    if !sec.children.iter().any(|c| c.name == "buffer") {
        sec.children
            .push(Section::new("buffer", "tag", s.span.clone()));
    }
    let plugin = super::build_output(&sec, ctx, tasks)?;
    Ok(Arc::new(PluginDeadLetter(plugin)))
}

/// Single events to `secondary_file`: one file per call.
struct FileDeadLetter(SecondaryFile);

#[async_trait::async_trait]
impl EventSink for FileDeadLetter {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        let mut bytes = bytes::BytesMut::new();
        for e in &stream.events {
            e.write_entry(&mut bytes, false);
        }
        let chunk = Chunk {
            id: ChunkId::random(),
            tag: stream.tag.clone(),
            key: ChunkKey {
                tag: Some(stream.tag.clone()),
                ..Default::default()
            },
            bytes: bytes.freeze(),
            records: stream.events.len(),
        };
        self.0
            .write(&chunk)
            .await
            .map(|_| Committed::new())
            .map_err(|_| EmitError::new("secondary_failed"))
    }
}

/// Single events to another output (its emit appends to its own buffer).
struct PluginDeadLetter(Arc<dyn OutputPlugin>);

#[async_trait::async_trait]
impl EventSink for PluginDeadLetter {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        self.0.emit(stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn build_conf(text: &str) -> Result<(), ConfigError> {
        let root = nagare_config::parse_str(text, Path::new("t.conf")).unwrap();
        let mut ctx = BuildCtx {
            hostname: "agg-7".into(),
            dry_run: true,
            ..Default::default()
        };
        let mut tasks = Tasks::default();
        build(&root.children[0], &mut ctx, &mut tasks).map(|_| ())
    }

    #[test]
    fn fluentd_parameters_load() {
        build_conf(
            r#"<match **>
  @type cloudwatch_logs
  @id cw
  region eu-west-1
  endpoint http://127.0.0.1:1
  aws_key_id k
  aws_sec_key s
  log_group_name_key service
  remove_log_group_name_key true
  auto_create_stream true
  retention_in_days 30
  log_group_aws_tags {"team":"platform"}
  message_keys level,msg
  max_message_length 10000
  max_events_per_batch 5000
  include_time_key true
  time_key ts
  concurrency 4
  put_log_events_rate 20
  put_log_events_retry_wait 2s
  put_log_events_retry_limit 5
  log_rejected_request true
  json_handler yajl
  <buffer>
    flush_interval 5s
    retry_forever true
  </buffer>
</match>"#,
        )
        .unwrap();
    }

    #[test]
    fn invalid_settings_are_refused_at_load() {
        let base = |extra: &str| {
            format!("<match **>\n  @type cloudwatch_logs\n  log_group_name_key service\n{extra}\n</match>")
        };
        for (extra, want) in [
            ("retention_in_days 10", "retention_in_days 10"),
            ("log_stream_name a:b", "log_stream_name"),
            ("log_group_name x", "set only one of"),
            ("max_events_per_batch 10001", "max_events_per_batch"),
            ("max_event_size 2m", "max_event_size"),
            ("oversize_action cut", "oversize_action"),
            (
                "use_tag_as_stream true\n  <buffer service>\n  </buffer>",
                "chunk keys",
            ),
            ("bogus 1", "bogus"),
        ] {
            let e = build_conf(&base(extra)).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
        }
        let e = build_conf("<match **>\n  @type cloudwatch_logs\n</match>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log_group_name"), "{e}");
    }

    /// docs/plugins/out_cloudwatch_logs.md documents exactly the parameters accepted (the
    /// same check as tests/docs_reference.rs does for other plugins).
    #[test]
    fn the_reference_page_matches_the_parser() {
        let e = build_conf(
            "<match **>\n  @type cloudwatch_logs\n  log_group_name g\n  zz_not_a_parameter 1\n</match>",
        )
        .unwrap_err()
        .to_string();
        let list = e
            .split("expected one of: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{e}"));
        let accepted: std::collections::BTreeSet<String> = list
            .trim_end_matches(')')
            .split(", ")
            .map(|s| s.trim().to_string())
            .filter(|s| !s.starts_with('@') && !s.starts_with('<'))
            .collect();
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/plugins/out_cloudwatch_logs.md"
        ))
        .unwrap();
        let doc = doc
            .split("## Parameters")
            .nth(1)
            .unwrap()
            .split("\n## ")
            .next()
            .unwrap();
        let mut documented = std::collections::BTreeSet::new();
        for line in doc.lines() {
            let Some(first) = line.strip_prefix('|').and_then(|l| l.split('|').next()) else {
                continue;
            };
            for part in first.split('`').skip(1).step_by(2) {
                for name in part.split([',', '/', ' ']) {
                    let name = name.trim();
                    if !name.is_empty() && !name.contains(['<', '>']) && !name.starts_with('@') {
                        documented.insert(name.to_string());
                    }
                }
            }
        }
        let missing: Vec<_> = accepted.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&accepted).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "undocumented {missing:?}, not accepted {extra:?}"
        );
    }

    #[test]
    fn stream_defaults_to_the_host_name() {
        let root = nagare_config::parse_str(
            "<match **>\n  @type cloudwatch_logs\n  log_group_name g\n</match>",
            Path::new("t.conf"),
        )
        .unwrap();
        let mut p = root.children[0].params();
        let s = name_source(
            &mut p,
            (
                "log_stream_name",
                "log_stream_name_key",
                "use_tag_as_stream",
            ),
            Some("agg-7"),
        )
        .unwrap();
        assert_eq!(s, NameSource::Static("agg-7".into()));
        build_conf("<match **>\n  @type cloudwatch_logs\n  log_group_name g\n</match>").unwrap();
    }
}

/// The moto helper shared with nagare-aws's tests (out_s3's tests load it too; each copy
/// starts its own server only when a test of that plugin needs one).
#[cfg(test)]
#[allow(clippy::duplicate_mod)]
#[path = "../../../nagare-aws/tests/common/moto.rs"]
mod test_moto;

/// The corpus through in_forward -> grep -> cloudwatch_logs into moto, as the aggregator
/// runs it (the records as the forwarder sends them: Docker fields plus the parsed `log`).
#[cfg(test)]
mod moto_e2e {
    use super::test_moto as moto;

    use bytes::{Bytes, BytesMut};
    use nagare_aws::out_cloudwatch_logs::sdk;
    use nagare_core::value::Map;
    use nagare_core::{EventTime, Record, Value};
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    const CONF: &str = r##"
<source>
  @type forward
  bind 127.0.0.1
  port 0
</source>
<filter docker.**>
  @type grep
  <regexp>
    key level
    pattern /^(error|fatal)$/
  </regexp>
</filter>
<match docker.**>
  @type cloudwatch_logs
  @id to_cloudwatch
  region us-east-1
  endpoint "#{ENV['MOTO']}"
  aws_key_id testing
  aws_sec_key testing
  log_group_name_key service
  log_stream_name "#{Socket.gethostname}"
  auto_create_stream true
  <buffer>
    flush_interval 1s
    retry_forever true
  </buffer>
</match>
"##;

    /// (tag, record) per corpus line, as the forwarder hands them on; times shifted to now.
    fn corpus() -> Option<Vec<(String, EventTime, Record)>> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/sample.jsonl");
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let last = lines.iter().map(|l| l["time"].as_u64().unwrap()).max()?;
        let now = EventTime::now().secs() as u64;
        Some(
            lines
                .iter()
                .filter(|l| l["record"].get("partial_message").is_none())
                .map(|l| {
                    let r = &l["record"];
                    let mut m = Map::new();
                    for (k, v) in r.as_object().unwrap() {
                        m.insert(k.as_bytes().to_vec(), Value::str(v.as_str().unwrap()));
                    }
                    let log = Bytes::copy_from_slice(r["log"].as_str().unwrap().as_bytes());
                    if let Ok(Value::Map(parsed)) = Value::from_json(&log) {
                        m.remove(b"log");
                        for (k, v) in parsed.iter() {
                            m.insert(k.as_bytes().unwrap().to_vec(), v.clone());
                        }
                    }
                    let t = (now - 60 - (last - l["time"].as_u64().unwrap())) as u32;
                    (
                        l["tag"].as_str().unwrap().to_string(),
                        EventTime::from_secs(t),
                        Record::from_map(m),
                    )
                })
                .collect(),
        )
    }

    async fn count(c: &sdk::Client, group: &str, stream: &str) -> usize {
        let mut n = 0;
        let mut token: Option<String> = None;
        loop {
            let Ok(r) = c
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await
            else {
                return n;
            };
            n += r.events().len();
            let next = r.next_forward_token().map(str::to_string);
            if r.events().is_empty() || next.is_none() || next == token {
                return n;
            }
            token = next;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_aggregators_write_the_corpus_errors_to_one_stream_each() {
        let Some(m) = moto::moto() else { return };
        let Some(lines) = corpus() else {
            eprintln!("SKIPPED: corpus not found");
            return;
        };
        let hosts = [moto::unique("agg-a"), moto::unique("agg-b")];
        let (trigger, sd) = nagare_core::shutdown::channel();
        let mut running = Vec::new();
        for h in &hosts {
            let opts = nagare_config::ParseOptions::fixed([("MOTO", m.endpoint.as_str())], h);
            let root =
                nagare_config::parse_str_with(CONF, Path::new("aggregator.conf"), &opts).unwrap();
            let ctx = crate::BuildCtx {
                hostname: h.clone(),
                ..Default::default()
            };
            let p = crate::Pipeline::build_with(&root, ctx).unwrap();
            running.push(p.start(sd.clone()).await.unwrap());
        }
        // The NLB spreads connections: alternate lines between the two aggregators.
        let mut conns = Vec::new();
        for r in &running {
            conns.push(
                tokio::net::TcpStream::connect(r.inputs[0].addr)
                    .await
                    .unwrap(),
            );
        }
        for (i, (tag, t, rec)) in lines.iter().enumerate() {
            let mut buf = BytesMut::new();
            nagare_forward::codec::encode::write_message(
                &mut buf,
                tag.as_bytes(),
                *t,
                rec,
                None,
                false,
            );
            conns[i % 2].write_all(&buf).await.unwrap();
        }
        for c in &mut conns {
            c.flush().await.unwrap();
        }
        let mut want: BTreeMap<String, usize> = BTreeMap::new();
        for (_, _, r) in &lines {
            let lvl = r.get_str(b"level").unwrap_or(b"");
            if lvl == b"error" || lvl == b"fatal" {
                let svc = String::from_utf8(r.get_str(b"service").unwrap().to_vec()).unwrap();
                *want.entry(svc).or_default() += 1;
            }
        }
        assert_eq!(want.values().sum::<usize>(), 99);
        let cfg = sdk::config::Builder::from(
            &nagare_aws::client::sdk_config(&nagare_aws::AwsSettings {
                region: Some("us-east-1".into()),
                endpoint: Some(m.endpoint.clone()),
                access_key_id: Some("testing".into()),
                secret_access_key: Some(nagare_aws::Secret("testing".into())),
                sdk_max_attempts: 1,
                ..Default::default()
            })
            .await,
        )
        .build();
        let client = sdk::Client::from_conf(cfg);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
        loop {
            got.clear();
            for svc in want.keys() {
                for h in &hosts {
                    got.insert((svc.clone(), h.clone()), count(&client, svc, h).await);
                }
            }
            if got.values().sum::<usize>() >= 99 || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        trigger.fire();
        for r in running {
            r.wait().await;
        }
        for (svc, n) in &want {
            let per: Vec<usize> = hosts
                .iter()
                .map(|h| got[&(svc.clone(), h.clone())])
                .collect();
            assert!(
                per.iter().all(|x| *x > 0),
                "{svc}: both streams written: {per:?}"
            );
            assert_eq!(
                per.iter().sum::<usize>(),
                *n,
                "{svc}: every error line, once"
            );
        }
    }
}

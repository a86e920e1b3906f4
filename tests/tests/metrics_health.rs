//! The admin endpoint of a real `nagare-aggregator` (examples/aggregator.conf as written, its
//! CloudWatch Logs endpoint pointed at `../shared/tools/faultproxy.py` in front of moto):
//!
//! * `/metrics` parses with the reference Prometheus text-format parser (PyPI
//!   `prometheus_client`, `text_string_to_metric_families`), before and after traffic, and has
//!   the families an operator alerts on;
//! * `/health` is 200 while CloudWatch accepts, flips to 503 (naming the output) when the fault
//!   proxy answers every `PutLogEvents` with `ServiceUnavailableException` for longer than
//!   `health_max_failing`, and back to 200 once the faults stop; every event is then delivered
//!   (nothing lost while the output was held down).
//!
//! Needs moto (`NAGARE_MOTO_ENDPOINT` or `.ci/venv`), `prometheus_client` in `.ci/venv` and
//! `../shared/tools/faultproxy.py`: missing ones fail under `CI=true`.

use bytes::BytesMut;
use nagare_core::msgpack::{write_array_len, write_map_len, write_str, write_uint};
use nagare_e2e::*;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TEST: &str = "metrics_health";
/// `<system> health_max_failing` for the test: how long the output must fail before 503.
const MAX_FAILING: &str = "2s";
/// Bounds on each wait (a hang becomes a failure).
const WAIT: Duration = Duration::from_secs(60);

/// `faultproxy.py` in front of moto; killed on drop.
struct FaultProxy {
    child: Child,
    port: u16,
}

impl FaultProxy {
    fn start(moto: &str) -> Option<FaultProxy> {
        let script = workspace_root().join("../shared/tools/faultproxy.py");
        if !script.is_file() {
            missing(
                TEST,
                &format!("{} not found", script.display()),
                "check out shared/ beside the repository",
            );
            return None;
        }
        let moto_port = moto.rsplit(':').next().expect("moto endpoint has a port");
        let port = free_port();
        let child = Command::new("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(moto_port)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faultproxy.py");
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "faultproxy did not listen on {port}"
        );
        Some(FaultProxy { child, port })
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn control(&self, method: &str, body: &str) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let mut s = std::net::TcpStream::connect(addr).expect("connect to faultproxy");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "{method} /__fault__ HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut reply = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "faultproxy: {reply}");
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python if it has `prometheus_client`.
fn prometheus_python() -> Option<PathBuf> {
    let py = venv_python().filter(|py| {
        Command::new(py)
            .args(["-c", "import prometheus_client.parser"])
            .status()
            .is_ok_and(|s| s.success())
    });
    if py.is_none() {
        missing(
            TEST,
            "prometheus_client not installed in .ci/venv",
            "run `.ci/install-deps.sh` (it pins prometheus_client)",
        );
    }
    py
}

/// Parses `text` with `prometheus_client`'s text parser; returns the family names (with
/// their sample counts) or the parser's error.
fn parse_prometheus(py: &PathBuf, text: &str) -> Result<Vec<(String, usize)>, String> {
    let code = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print(f.name, f.type, len(f.samples))
"#;
    let mut child = Command::new(py)
        .args(["-c", code])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap_or_default().to_string();
            let n = it.nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            (name, n)
        })
        .collect())
}

/// One Message-mode message as Docker's driver sends it, with a chunk id:
/// `[tag, time, {level, service, msg, seq}, {"chunk": id}]`.
fn error_message(service: &str, seq: u64, chunk: &str) -> BytesMut {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut b = BytesMut::new();
    write_array_len(&mut b, 4);
    write_str(&mut b, format!("docker.{service}.0123456789ab").as_bytes());
    write_uint(&mut b, now);
    write_map_len(&mut b, 4);
    write_str(&mut b, b"level");
    write_str(&mut b, b"error");
    write_str(&mut b, b"service");
    write_str(&mut b, service.as_bytes());
    write_str(&mut b, b"msg");
    write_str(&mut b, format!("failure number {seq}").as_bytes());
    write_str(&mut b, b"seq");
    write_uint(&mut b, seq);
    write_map_len(&mut b, 1);
    write_str(&mut b, b"chunk");
    write_str(&mut b, chunk.as_bytes());
    b
}

fn send_errors(sender: &mut ForwardSender, service: &str, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let chunk = format!("mh-{service}-{seq:08}");
        sender.send_acked(&error_message(service, seq, &chunk), chunk.as_bytes());
    }
}

fn health(admin: SocketAddr) -> (u16, String) {
    http_get(admin, "/health").unwrap_or_else(|e| (0, e))
}

#[test]
fn metrics_parse_and_health_follows_cloudwatch() {
    let Some(moto) = moto(TEST) else { return };
    let Some(py) = prometheus_python() else {
        return;
    };
    let Some(proxy) = FaultProxy::start(&moto) else {
        return;
    };
    let dir = TempDir::new(TEST);
    let example = workspace_root().join("examples/aggregator.conf");
    let example = std::fs::read_to_string(&example).expect("examples/aggregator.conf");
    let config = format!(
        "<system>\n  admin_bind 127.0.0.1\n  admin_port 0\n  health_max_failing {MAX_FAILING}\n</system>\n{example}"
    );
    let data = dir.join("data").display().to_string();
    let endpoint = proxy.endpoint();
    let service = format!("mh{}", std::process::id());
    let agg = Proc::start_with_env(
        Role::Aggregator,
        "aggregator",
        dir.path(),
        &config,
        &[
            ("NAGARE_BIND", "127.0.0.1"),
            ("NAGARE_PORT", "0"),
            ("NAGARE_DATA_DIR", &data),
            ("NAGARE_HOSTNAME", "metrics-health-1"),
            ("NAGARE_CLOUDWATCH_ENDPOINT", &endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let admin = agg.admin_addr().expect("admin endpoint in the ready file");

    // Before any traffic: healthy, and the exposition parses.
    assert_eq!(health(admin).0, 200, "{:?}", health(admin));
    let families = parse_prometheus(&py, &agg.metrics_text().unwrap())
        .unwrap_or_else(|e| panic!("/metrics does not parse before traffic: {e}"));
    assert!(!families.is_empty());

    // Traffic while CloudWatch accepts.
    let mut sender = ForwardSender::new(agg.addr());
    send_errors(&mut sender, &service, 0..20);
    let delivered = |agg: &Proc| {
        let text = agg.metrics_text().unwrap_or_default();
        metric(
            &text,
            "nagare_cloudwatch_events_total",
            &[("plugin_id", "to_cloudwatch")],
        )
        .unwrap_or(0.0) as u64
    };
    wait_until("20 events in CloudWatch", WAIT, || match delivered(&agg) {
        n if n >= 20 => Ok(()),
        n => Err(format!("{n} delivered")),
    });
    assert_eq!(health(admin).0, 200, "{:?}", health(admin));

    // CloudWatch held down: every PutLogEvents answers 500 ServiceUnavailableException.
    proxy.control(
        "POST",
        r#"{"match": "PutLogEvents", "count": 1000000, "kind": "unavailable"}"#,
    );
    send_errors(&mut sender, &service, 20..40);
    wait_until(
        "/health 503 while CloudWatch fails",
        WAIT,
        || match health(admin) {
            (503, body) if body.contains("to_cloudwatch") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (_, body) = health(admin);
    eprintln!("{TEST}: /health while held down: 503 {}", body.trim());
    let held = agg.metrics_text().unwrap();
    let families = parse_prometheus(&py, &held)
        .unwrap_or_else(|e| panic!("/metrics does not parse while failing: {e}"));
    let errors = metric(
        &held,
        "nagare_cloudwatch_request_errors_total",
        &[("plugin_id", "to_cloudwatch"), ("reason", "unavailable")],
    )
    .unwrap_or(0.0);
    assert!(
        errors >= 1.0,
        "no `unavailable` request errors counted:\n{held}"
    );

    // The faults stop: healthy again, and the held-back events arrive.
    proxy.control("DELETE", "");
    wait_until("/health 200 after the faults stop", WAIT, || {
        match health(admin) {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    wait_until("all 40 events in CloudWatch", WAIT, || {
        match delivered(&agg) {
            n if n >= 40 => Ok(()),
            n => Err(format!("{n} delivered")),
        }
    });

    // The families an operator alerts on are there, with samples.
    let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "nagare_input_events",
        "nagare_buffer_bytes",
        "nagare_output_retries",
        "nagare_output_write_errors",
        "nagare_cloudwatch_events",
        "nagare_cloudwatch_request_errors",
        "nagare_config_reloads",
    ] {
        assert!(
            families
                .iter()
                .any(|(n, samples)| n.starts_with(want) && *samples > 0),
            "no metric family {want}* with samples in /metrics; families: {names:?}"
        );
    }
    eprintln!(
        "{TEST}: {} metric families parsed by prometheus_client, {} samples; {} request errors while held down",
        families.len(),
        families.iter().map(|(_, n)| n).sum::<usize>(),
        errors
    );
}

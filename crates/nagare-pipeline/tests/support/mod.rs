//! Shared by the buffer/delivery tests: an in-process forward receiver that counts sequence
//! numbers, a forward sender that resends unacknowledged messages, and control of a
//! `nagare-forwarder` process (start with a config and `--ready-file`, SIGKILL, SIGTERM, RSS,
//! metrics from the admin endpoint).
#![allow(dead_code)]

use bytes::BytesMut;
use nagare_core::ack::Committed;
use nagare_core::msgpack::{write_map_len, write_str, write_uint};
use nagare_core::shutdown::{self, Trigger};
use nagare_core::{EmitError, Event, EventSink, EventStream, EventTime, Record, Value};
use nagare_forward::codec::encode::{parse_ack, write_packed_forward, Options};
use nagare_forward::codec::Framer;
use nagare_forward::server::{InForward, InForwardConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---- temp dirs ---------------------------------------------------------------------------------

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nagare-pl-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("NAGARE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---- events ------------------------------------------------------------------------------------

/// `{"seq": seq, "msg": "event <seq>", "pad": "xxx..."}` (pad only when `pad > 0`).
pub fn seq_record(seq: u64, pad: usize) -> Record {
    let mut b = BytesMut::with_capacity(40 + pad);
    write_map_len(&mut b, if pad > 0 { 3 } else { 2 });
    write_str(&mut b, b"seq");
    write_uint(&mut b, seq);
    write_str(&mut b, b"msg");
    write_str(&mut b, format!("event {seq}").as_bytes());
    if pad > 0 {
        write_str(&mut b, b"pad");
        write_str(&mut b, &vec![b'x'; pad]);
    }
    Record::from_msgpack_unchecked(b.freeze())
}

/// A PackedForward message with events `seqs` and a fresh `chunk` id (returned).
pub fn packed(tag: &str, seqs: std::ops::Range<u64>, pad: usize) -> (Vec<u8>, Vec<u8>) {
    let mut entries = BytesMut::new();
    for s in seqs.clone() {
        Event {
            time: EventTime::new(1_700_000_000 + (s / 1000) as u32, 0),
            record: seq_record(s, pad),
        }
        .write_entry(&mut entries, false);
    }
    let id: [u8; 16] = rand::random();
    let chunk: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut msg = BytesMut::with_capacity(entries.len() + 64);
    let opts = Options {
        chunk: Some(chunk.as_bytes()),
        size: Some(seqs.end - seqs.start),
        compressed: None,
    };
    write_packed_forward(&mut msg, tag.as_bytes(), &entries, Some(&opts), false);
    (msg.to_vec(), chunk.into_bytes())
}

fn seq_of(e: &Event) -> Option<u64> {
    match e.record.get(b"seq")? {
        Value::UInt(n) => Some(n),
        Value::Int(n) => Some(n as u64),
        _ => None,
    }
}

// ---- receiver ----------------------------------------------------------------------------------

/// Counts per sequence number, plus arrival times.
pub struct SeqCounts {
    counts: Mutex<Vec<u32>>,
    pub total: AtomicU64,
    pub distinct: AtomicU64,
    first_arrival: Mutex<Vec<Option<Instant>>>,
    notify: tokio::sync::Notify,
}

impl SeqCounts {
    pub fn new(n: usize) -> Arc<Self> {
        Arc::new(SeqCounts {
            counts: Mutex::new(vec![0; n]),
            total: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            first_arrival: Mutex::new(vec![None; n]),
            notify: tokio::sync::Notify::new(),
        })
    }
    pub fn add(&self, seq: u64) {
        let mut c = self.counts.lock().unwrap();
        let i = seq as usize;
        if i >= c.len() {
            c.resize(i + 1, 0);
            self.first_arrival.lock().unwrap().resize(i + 1, None);
        }
        c[i] += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        if c[i] == 1 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
            self.first_arrival.lock().unwrap()[i] = Some(Instant::now());
        }
    }
    pub fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
    pub fn duplicates(&self) -> u64 {
        self.total() - self.distinct()
    }
    pub fn count(&self, seq: u64) -> u32 {
        self.counts
            .lock()
            .unwrap()
            .get(seq as usize)
            .copied()
            .unwrap_or(0)
    }
    pub fn arrival(&self, seq: u64) -> Option<Instant> {
        self.first_arrival
            .lock()
            .unwrap()
            .get(seq as usize)
            .copied()
            .flatten()
    }
    /// Sequence numbers in `range` never received (at most `max`).
    pub fn missing(&self, range: std::ops::Range<u64>, max: usize) -> Vec<u64> {
        let c = self.counts.lock().unwrap();
        range
            .filter(|s| c.get(*s as usize).copied().unwrap_or(0) == 0)
            .take(max)
            .collect()
    }
    /// Waits until `n` distinct sequence numbers arrived; false on timeout.
    pub async fn wait_distinct(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let w = self.notify.notified();
            if self.distinct() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                return self.distinct() >= n;
            }
        }
    }
}

struct SeqSink(Arc<SeqCounts>);

#[async_trait::async_trait]
impl EventSink for SeqSink {
    async fn emit(&self, stream: EventStream) -> Result<Committed, EmitError> {
        for e in &stream.events {
            if let Some(s) = seq_of(e) {
                self.0.add(s);
            }
        }
        self.0.notify.notify_waiters();
        Ok(Committed::new())
    }
}

/// An in-process in_forward that acks and counts (resend dedupe off, so duplicates show).
pub struct Receiver {
    pub addr: SocketAddr,
    pub counts: Arc<SeqCounts>,
    trigger: Trigger,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(counts: Arc<SeqCounts>) -> Receiver {
        Self::start_on(counts, 0).await
    }
    pub async fn start_on(counts: Arc<SeqCounts>, port: u16) -> Receiver {
        let cfg = InForwardConfig {
            id: "test_receiver".into(),
            bind: "127.0.0.1".into(),
            port,
            dedupe_resends: false,
            ..Default::default()
        };
        let srv = InForward::bind(cfg).await.expect("receiver binds");
        let addr = srv.local_addr().unwrap();
        let (trigger, sd) = shutdown::channel();
        let sink: Arc<dyn EventSink> = Arc::new(SeqSink(counts.clone()));
        let task = tokio::spawn(srv.run(sink, sd));
        Receiver {
            addr,
            counts,
            trigger,
            task,
        }
    }
    pub async fn stop(self) {
        self.trigger.fire();
        let _ = self.task.await;
    }
}

/// A port where connections are refused, reserved until the test binary exits: a socket bound
/// to it that never listens. (A listener bound and dropped freed the port, which a receiver or
/// pipeline of a test running in parallel could bind with port 0 and then accept on.)
pub fn dead_port() -> u16 {
    static RESERVED: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    RESERVED.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    port
}

// ---- sender ------------------------------------------------------------------------------------

/// A forward client: one PackedForward message per batch with a `chunk` id; waits for the ack
/// and resends the same message on any failure (as fluent-logger and Fluent Bit do).
pub struct Sender {
    pub addr: Arc<Mutex<SocketAddr>>,
    conn: Option<TcpStream>,
    rbuf: BytesMut,
    framer: Framer,
    pub ack_timeout: Duration,
    pub resends: u64,
}

impl Sender {
    pub fn new(addr: Arc<Mutex<SocketAddr>>) -> Self {
        Sender {
            addr,
            conn: None,
            rbuf: BytesMut::new(),
            framer: Framer::new(),
            ack_timeout: Duration::from_secs(10),
            resends: 0,
        }
    }

    /// Sends until acknowledged or `deadline`.
    pub async fn send_acked(
        &mut self,
        msg: &[u8],
        chunk: &[u8],
        deadline: Instant,
    ) -> Result<(), String> {
        let mut attempt = 0u64;
        loop {
            match self.try_once(msg, chunk).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.conn = None;
                    if Instant::now() > deadline {
                        return Err(format!("gave up after {attempt} attempts: {e}"));
                    }
                    attempt += 1;
                    self.resends += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt.min(10))).await;
                }
            }
        }
    }

    /// One attempt (a failure drops the connection).
    pub async fn try_once(&mut self, msg: &[u8], chunk: &[u8]) -> Result<(), String> {
        let r = self.attempt(msg, chunk).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn attempt(&mut self, msg: &[u8], chunk: &[u8]) -> Result<(), String> {
        if self.conn.is_none() {
            let addr = *self.addr.lock().unwrap();
            let s = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr))
                .await
                .map_err(|_| "connect timeout".to_string())?
                .map_err(|e| format!("connect: {e}"))?;
            let _ = s.set_nodelay(true);
            self.rbuf.clear();
            self.framer = Framer::new();
            self.conn = Some(s);
        }
        let s = self.conn.as_mut().unwrap();
        s.write_all(msg).await.map_err(|e| format!("write: {e}"))?;
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        loop {
            if let Some(frame) = self
                .framer
                .next_frame(&mut self.rbuf, 1 << 16)
                .map_err(|e| e.to_string())?
            {
                return match parse_ack(&frame) {
                    Some(a) if a == chunk => Ok(()),
                    other => Err(format!(
                        "unexpected reply {:?}",
                        other.map(String::from_utf8_lossy)
                    )),
                };
            }
            let mut tmp = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, s.read(&mut tmp))
                .await
                .map_err(|_| "ack timeout".to_string())?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the ack".into());
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
        }
    }
}

// ---- the forwarder process -----------------------------------------------------------------------

/// `target/<profile>/nagare-forwarder` (build it first: `cargo build -p nagare-forwarder`).
pub fn forwarder_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let p = dir.join("nagare-forwarder");
    assert!(
        p.is_file(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`, as .ci/run does)",
        p.display()
    );
    p
}

pub struct Fwd {
    pub name: String,
    child: Child,
    pub pid: u32,
    pub input: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub log: PathBuf,
}

impl Fwd {
    /// Writes `config` to `dir/<name>.conf` and starts the forwarder; waits for its ready file.
    pub fn start(name: &str, dir: &Path, config: &str) -> Fwd {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, config).unwrap();
        let ready = dir.join(format!("{name}.ready.json"));
        let _ = std::fs::remove_file(&ready);
        let log = dir.join(format!("{name}.log"));
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(forwarder_bin())
            .arg("-c")
            .arg(&conf)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--log-format", "json", "--log-level", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn nagare-forwarder");
        let mut f = Fwd {
            name: name.into(),
            pid: child.id(),
            child,
            input: "127.0.0.1:0".parse().unwrap(),
            admin: None,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                f.input = v["inputs"][0]["addr"].as_str().unwrap().parse().unwrap();
                f.admin = v["admin"].as_str().and_then(|a| a.parse().ok());
                return f;
            }
            if let Ok(Some(st)) = f.child.try_wait() {
                panic!(
                    "{name} exited with {st} before it was ready:\n{}",
                    f.log_tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "{name} not ready in 30 s:\n{}",
                f.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot SIGTERM {}", self.pid);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// VmRSS in bytes.
    pub fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }

    /// GET /metrics from the admin endpoint.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let addr = self
            .admin
            .expect("admin endpoint (set <system> admin_port 0)");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default()
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics(), name, labels).unwrap_or(0.0)
    }
}

impl Drop for Fwd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A sample `name{labels} value` from Prometheus text.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut key = name.to_string();
    if !labels.is_empty() {
        key.push('{');
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        key.push_str(&l.join(","));
        key.push('}');
    }
    text.lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

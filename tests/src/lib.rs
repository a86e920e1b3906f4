//! End-to-end test support for Nagare: everything the files in `tests/tests/` share.
//!
//! * [`Proc`]: runs `nagare-forwarder` / `nagare-aggregator` with a config written to a
//!   [`TempDir`], waits (bounded) for its `--ready-file`, and stops it with SIGTERM or SIGKILL.
//!   Its stderr goes to a log file whose tail is printed when something goes wrong.
//! * Client discovery: [`python_client`] (the `.ci/venv` interpreter with PyPI fluent-logger)
//!   and [`dockerlike_client`] (fluent-logger-golang). A missing client fails the test when
//!   `CI=true` and is a loud SKIP otherwise ([`missing`]).
//! * Output readers: [`JsonLinesTail`] follows a file written by `@type file` with
//!   `<format> @type json` and `<inject> tag_key tag time_key time`; [`OutLine`] is one line,
//!   decoded; [`fast_seq`] pulls `"seq":N` out of a line without a JSON parser (1M-line files).
//! * [`ForwardSender`]: a small blocking forward-protocol client that sends PackedForward
//!   messages with a `chunk` id and waits for each ack, resending on a broken connection.
//! * [`Pki`]: a CA, a server certificate for `localhost`/`127.0.0.1`, and an unrelated CA.
//! * [`Proc::admin_addr`], [`Proc::metrics_text`], [`http_get`]: the admin endpoint (`/metrics`).
//! * [`wait_until`] / [`wait_until_async`]: polling with a deadline. Deadlines only turn a
//!   hang into a failure with a message; nothing here asserts on speed.

use bytes::BytesMut;
use nagare_core::msgpack::{write_map_len, write_str, write_uint};
use nagare_core::{Event, EventTime, Record};
use nagare_forward::codec::encode::{parse_ack, write_packed_forward, Options};
use nagare_forward::codec::Framer;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---- locations ----------------------------------------------------------------------------

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding the workspace binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// A workspace binary (`nagare-forwarder`, `nagare-aggregator`), which must be built already.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.is_file(),
        "binary {name} not found at {}: build the binaries first with `cargo build --workspace --bins` \
         (the CI runs `cargo build --workspace --bins && cargo test --workspace`)",
        p.display()
    );
    p
}

/// Whether this is a CI run (`CI=true`), where a missing client is a failure, not a skip.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Handles a missing prerequisite: panics under `CI=true`, otherwise prints a loud SKIP line
/// (the caller then returns early).
pub fn missing(test: &str, what: &str, fix: &str) {
    if is_ci() {
        panic!("{test}: {what}; CI=true, so this is a failure, not a skip. Fix: {fix}");
    }
    // One write, so the line is not interleaved with the harness's output.
    eprintln!("\n!!!!!!!! SKIP {test}: {what}. Fix: {fix} !!!!!!!!\n");
}

const INSTALL_HINT: &str = "run `sudo .ci/install-deps.sh` from the workspace root";

/// The python interpreter with PyPI fluent-logger (`NAGARE_PYTHON` overrides
/// `.ci/venv/bin/python`) and the path of `tests/clients/fluent_sender.py`. `None` after
/// reporting through [`missing`].
pub fn python_client(test: &str) -> Option<(PathBuf, PathBuf)> {
    let py = std::env::var_os("NAGARE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".ci/venv/bin/python"));
    let script = workspace_root().join("tests/clients/fluent_sender.py");
    if !py.exists() {
        missing(
            test,
            &format!("python client interpreter {} not found", py.display()),
            INSTALL_HINT,
        );
        return None;
    }
    let ok = Command::new(&py)
        .args(["-c", "import fluent.sender, fluent.asyncsender, msgpack"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing(
            test,
            &format!("{} cannot import fluent-logger", py.display()),
            INSTALL_HINT,
        );
        return None;
    }
    assert!(
        script.is_file(),
        "{} is missing from the repository",
        script.display()
    );
    Some((py, script))
}

/// The fluent-logger-golang client (`NAGARE_DOCKERLIKE` overrides `target/interop/dockerlike`).
pub fn dockerlike_client(test: &str) -> Option<PathBuf> {
    let p = std::env::var_os("NAGARE_DOCKERLIKE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/interop/dockerlike"));
    if !p.is_file() {
        missing(
            test,
            &format!("Go client {} not found", p.display()),
            INSTALL_HINT,
        );
        return None;
    }
    Some(p)
}

/// The Docker-driver corpus (`NAGARE_CORPUS` overrides `../shared/corpus/sample.jsonl`) and
/// its manifest (`<name>.manifest.json` beside it).
pub fn corpus(test: &str) -> Option<(PathBuf, PathBuf)> {
    let c = std::env::var_os("NAGARE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus/sample.jsonl"));
    let stem = c
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let m = c.with_file_name(format!("{stem}.manifest.json"));
    if !c.is_file() || !m.is_file() {
        missing(
            test,
            &format!(
                "corpus {} or its manifest {} not found",
                c.display(),
                m.display()
            ),
            "set NAGARE_CORPUS to a corpus .jsonl that has its .manifest.json beside it",
        );
        return None;
    }
    Some((c, m))
}

// ---- temp dirs ----------------------------------------------------------------------------

/// A fresh directory, removed on drop unless the thread is panicking or `NAGARE_E2E_KEEP` is
/// set (then it is kept, and its path printed, for the logs and outputs inside).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "nagare-e2e-{name}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping {} for inspection", self.0.display());
        } else if std::env::var_os("NAGARE_E2E_KEEP").is_some() {
            eprintln!("NAGARE_E2E_KEEP: keeping {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ---- processes ----------------------------------------------------------------------------

/// Which binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Forwarder,
    Aggregator,
}

impl Role {
    pub fn binary_name(self) -> &'static str {
        match self {
            Role::Forwarder => "nagare-forwarder",
            Role::Aggregator => "nagare-aggregator",
        }
    }
}

/// How long a binary gets to bind and write its ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a binary gets to exit after SIGTERM (drains included).
pub const TERM_TIMEOUT: Duration = Duration::from_secs(40);

/// One input from the ready file.
#[derive(Debug, Clone)]
pub struct ReadyInput {
    pub id: String,
    pub addr: SocketAddr,
}

/// A running binary. Killed (SIGKILL) on drop if still running.
pub struct Proc {
    pub name: String,
    pub role: Role,
    child: Child,
    pub pid: u32,
    pub inputs: Vec<ReadyInput>,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Proc {
    /// Writes `config` to `<dir>/<name>.conf` and starts `role` with it; returns once the
    /// ready file names the bound inputs. Panics (with the log tail) if the process exits or
    /// does not become ready within [`READY_TIMEOUT`].
    pub fn start(role: Role, name: &str, dir: &Path, config: &str) -> Proc {
        Proc::try_start(role, name, dir, config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Proc::start`], returning an error (with the log tail) instead of panicking when the
    /// process exits or never becomes ready (a restart on a port that is not free yet).
    pub fn try_start(role: Role, name: &str, dir: &Path, config: &str) -> Result<Proc, String> {
        Proc::try_start_with_env(role, name, dir, config, &[])
    }

    /// [`Proc::start`] with extra environment variables for the process (the examples take
    /// their ports, directories and endpoints from `ENV`).
    pub fn start_with_env(
        role: Role,
        name: &str,
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Proc {
        Proc::try_start_with_env(role, name, dir, config, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Proc::try_start`] with extra environment variables for the process.
    pub fn try_start_with_env(
        role: Role,
        name: &str,
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let conf = dir.join(format!("{name}.conf"));
        // Tests stop processes with SIGTERM; unless a test is about the accept period, don't
        // make every stop wait for it.
        let config = if config.contains("shutdown_accept_period") {
            config.to_string()
        } else {
            format!("<system>\n  shutdown_accept_period 0s\n</system>\n{config}")
        };
        let config = config.as_str();
        std::fs::write(&conf, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
        let ready = dir.join(format!("{name}.ready.json"));
        let _ = std::fs::remove_file(&ready);
        let log = dir.join(format!("{name}.log"));
        let stdout = dir.join(format!("{name}.stdout"));
        let err_file = File::create(&log).expect("create log file");
        let out_file = File::create(&stdout).expect("create stdout file");
        let bin = binary(role.binary_name());
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--log-format", "text", "--log-level", "info"])
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out_file)
            .stderr(err_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pid = child.id();
        let mut p = Proc {
            name: name.to_string(),
            role,
            child,
            pid,
            inputs: Vec::new(),
            log,
            config: conf,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let got_pid = v["pid"].as_u64();
                    assert_eq!(
                        got_pid,
                        Some(pid as u64),
                        "{name}: ready file pid mismatch: {text}"
                    );
                    p.inputs = v["inputs"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{name}: ready file without inputs: {text}"))
                        .iter()
                        .map(|i| ReadyInput {
                            id: i["id"].as_str().unwrap_or_default().to_string(),
                            addr: i["addr"]
                                .as_str()
                                .and_then(|a| a.parse().ok())
                                .unwrap_or_else(|| {
                                    panic!("{name}: bad addr in ready file: {text}")
                                }),
                        })
                        .collect();
                    return Ok(p);
                }
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!(
                    "{name} ({}) exited with {st} before becoming ready; config:\n{config}\n--- log tail ---\n{}",
                    role.binary_name(),
                    p.log_tail(60)
                ));
            }
            if Instant::now() > deadline {
                p.kill();
                return Err(format!(
                    "{name} did not write its ready file within {READY_TIMEOUT:?}\n--- log tail ---\n{}",
                    p.log_tail(60)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address of the only (or first) input.
    pub fn addr(&self) -> SocketAddr {
        self.inputs
            .first()
            .unwrap_or_else(|| panic!("{} has no inputs", self.name))
            .addr
    }
    pub fn port(&self) -> u16 {
        self.addr().port()
    }
    /// The input with this `@id`.
    pub fn input(&self, id: &str) -> SocketAddr {
        self.inputs
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("{} has no input {id}: {:?}", self.name, self.inputs))
            .addr
    }

    /// The last `n` lines of the process's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to [`TERM_TIMEOUT`] for the exit (SIGKILL and panic after that).
    pub fn terminate(&mut self) -> ExitStatus {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st;
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            sent,
            "cannot send SIGTERM to {} (pid {})",
            self.name, self.pid
        );
        let deadline = Instant::now() + TERM_TIMEOUT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "{} did not exit within {TERM_TIMEOUT:?} of SIGTERM\n--- log tail ---\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and asserts a clean exit (status 0).
    pub fn stop_ok(&mut self) {
        let st = self.terminate();
        assert!(
            st.success(),
            "{} exited with {st} after SIGTERM (expected 0)\n--- log tail ---\n{}",
            self.name,
            self.log_tail(60)
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} log tail ({}) ---\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
    }
}

/// Runs a client program to completion, bounded by `timeout` (killed and panicking after it).
/// Returns (status, stdout, stderr).
pub fn run_client(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (
                t_out.join().unwrap_or_default(),
                t_err.join().unwrap_or_default(),
            );
            panic!("client did not finish within {timeout:?}: {desc}\nstdout: {o}\nstderr: {e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        t_out.join().unwrap_or_default(),
        t_err.join().unwrap_or_default(),
    )
}

// ---- waiting ------------------------------------------------------------------------------

/// Polls `cond` every 25 ms until it holds; panics with `what` (and the last `detail`) after
/// `timeout`. A liveness bound, not a performance assertion.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match cond() {
            Ok(()) => return,
            Err(detail) => {
                if Instant::now() > deadline {
                    panic!("timed out after {timeout:?} waiting for {what}: {detail}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// [`wait_until`] for async tests.
pub async fn wait_until_async(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match cond() {
            Ok(()) => return,
            Err(detail) => {
                if Instant::now() > deadline {
                    panic!("timed out after {timeout:?} waiting for {what}: {detail}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- configs ------------------------------------------------------------------------------

/// `<match **>` writing JSON lines with `tag` and `time` injected, to `path`.
pub fn file_match(path: &Path) -> String {
    format!(
        r#"<match **>
  @type file
  path {}
  <format>
    @type json
  </format>
  <inject>
    tag_key tag
    time_key time
  </inject>
</match>
"#,
        path.display()
    )
}

/// A plain `<source>` in_forward on 127.0.0.1, port 0 (or `port`).
pub fn forward_source(id: &str, port: u16) -> String {
    format!(
        r#"<source>
  @type forward
  @id {id}
  bind 127.0.0.1
  port {port}
</source>
"#
    )
}

// ---- output files -------------------------------------------------------------------------

/// Follows a JSON-lines file as it grows: each call to [`JsonLinesTail::poll`] returns the
/// lines completed since the last call (a final line without its newline waits).
pub struct JsonLinesTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl JsonLinesTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesTail {
            path: path.into(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Calls `f` with every newly completed line (without its newline).
    pub fn poll(&mut self, mut f: impl FnMut(&[u8])) {
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if file.read_to_end(&mut buf).is_err() {
            return;
        }
        self.offset += buf.len() as u64;
        let mut start = 0;
        if !self.partial.is_empty() {
            match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&buf[..nl]);
                    f(&line);
                    start = nl + 1;
                }
                None => {
                    self.partial.extend_from_slice(&buf);
                    return;
                }
            }
        }
        let rest = &buf[start..];
        let mut s = 0;
        for (i, &b) in rest.iter().enumerate() {
            if b == b'\n' {
                f(&rest[s..i]);
                s = i + 1;
            }
        }
        self.partial.extend_from_slice(&rest[s..]);
    }

    /// Every newly completed line, decoded.
    pub fn poll_lines(&mut self) -> Vec<OutLine> {
        let mut v = Vec::new();
        let path = self.path.clone();
        self.poll(|l| v.push(OutLine::parse(l, &path)));
        v
    }
}

/// Every complete line of a JSON-lines output file, decoded.
pub fn read_out_lines(path: &Path) -> Vec<OutLine> {
    JsonLinesTail::new(path).poll_lines()
}

/// One line of `@type file` + `<format> @type json` + `<inject> tag_key tag time_key time`.
#[derive(Debug, Clone)]
pub struct OutLine {
    pub tag: String,
    pub secs: u32,
    pub nanos: u32,
    /// The record without the injected `tag` and `time`.
    pub record: serde_json::Map<String, serde_json::Value>,
}

impl OutLine {
    pub fn parse(line: &[u8], file: &Path) -> OutLine {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "{}: not a JSON line ({e}): {}",
                file.display(),
                String::from_utf8_lossy(&line[..line.len().min(400)])
            )
        });
        let serde_json::Value::Object(mut record) = v else {
            panic!(
                "{}: line is not a JSON object: {}",
                file.display(),
                String::from_utf8_lossy(line)
            );
        };
        let tag = match record.remove("tag") {
            Some(serde_json::Value::String(s)) => s,
            other => panic!(
                "{}: injected tag missing or not a string: {other:?}",
                file.display()
            ),
        };
        let time = record.remove("time");
        let (secs, nanos) = match &time {
            Some(serde_json::Value::String(s)) => parse_time(s),
            Some(serde_json::Value::Number(n)) if n.is_u64() => {
                Some((n.as_u64().unwrap_or(0) as u32, 0))
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            panic!(
                "{}: injected time {time:?} is not \"SECS.NANOS\" (9 digits) or an integer",
                file.display()
            )
        });
        OutLine {
            tag,
            secs,
            nanos,
            record,
        }
    }

    /// The record's `seq` as an integer (or a decimal string).
    pub fn seq(&self) -> Option<u64> {
        match self.record.get("seq")? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// A string field of the record.
    pub fn str_field(&self, k: &str) -> Option<&str> {
        self.record.get(k).and_then(|v| v.as_str())
    }
}

/// `"SECS.NNNNNNNNN"` (or `"SECS"`) -> (secs, nanos).
pub fn parse_time(s: &str) -> Option<(u32, u32)> {
    match s.split_once('.') {
        Some((a, b)) if b.len() == 9 && b.bytes().all(|c| c.is_ascii_digit()) => {
            Some((a.parse().ok()?, b.parse().ok()?))
        }
        Some(_) => None,
        None => Some((s.parse().ok()?, 0)),
    }
}

/// The integer after the first `"seq":` in a JSON line, without a JSON parser (fast enough for
/// million-line files in debug builds). `None` if absent.
pub fn fast_seq(line: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"seq\":";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let mut n: u64 = 0;
    let mut any = false;
    for &b in line[at..].iter().skip_while(|b| **b == b' ') {
        if b.is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(n)
}

/// Counts how many times each `seq` in `0..n` was seen (over several files).
pub struct SeqTally {
    counts: Vec<u16>,
    pub lines: u64,
    /// Lines whose `seq` was absent or out of range (first few kept for the report).
    pub strays: u64,
    pub stray_examples: Vec<String>,
}

impl SeqTally {
    pub fn new(n: usize) -> Self {
        SeqTally {
            counts: vec![0; n],
            lines: 0,
            strays: 0,
            stray_examples: Vec::new(),
        }
    }
    pub fn add_line(&mut self, line: &[u8]) {
        self.lines += 1;
        match fast_seq(line) {
            Some(s) if (s as usize) < self.counts.len() => {
                let c = &mut self.counts[s as usize];
                *c = c.saturating_add(1);
            }
            _ => {
                self.strays += 1;
                if self.stray_examples.len() < 5 {
                    self.stray_examples
                        .push(String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned());
                }
            }
        }
    }
    /// Grows the range of expected seqs.
    pub fn extend_to(&mut self, n: usize) {
        if n > self.counts.len() {
            self.counts.resize(n, 0);
        }
    }
    pub fn expected(&self) -> usize {
        self.counts.len()
    }
    /// Seqs seen at least once.
    pub fn distinct(&self) -> usize {
        self.counts.iter().filter(|&&c| c > 0).count()
    }
    /// Extra copies beyond the first.
    pub fn duplicates(&self) -> u64 {
        self.counts
            .iter()
            .map(|&c| c.saturating_sub(1) as u64)
            .sum()
    }
    /// The first few seqs never seen.
    pub fn missing(&self, max: usize) -> Vec<usize> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c == 0)
            .map(|(i, _)| i)
            .take(max)
            .collect()
    }
    pub fn missing_count(&self) -> usize {
        self.counts.len() - self.distinct()
    }
}

// ---- a forward-protocol sender ------------------------------------------------------------

/// The record `{"seq": seq, "msg": "event <seq>"}` as msgpack.
pub fn seq_record(seq: u64) -> Record {
    let mut b = BytesMut::with_capacity(32);
    write_map_len(&mut b, 2);
    write_str(&mut b, b"seq");
    write_uint(&mut b, seq);
    write_str(&mut b, b"msg");
    write_str(&mut b, format!("event {seq}").as_bytes());
    Record::from_msgpack_unchecked(b.freeze())
}

/// The time [`ForwardSender::send_seqs`] gives event `seq`: distinct nanoseconds, so a test
/// can check times survive exactly.
pub fn seq_time(seq: u64) -> EventTime {
    EventTime::new(
        1_700_000_000 + (seq / 1000) as u32,
        (seq % 1000) as u32 * 1_000_000 + 7,
    )
}

/// A PackedForward message carrying events `seqs` ([`seq_record`], [`seq_time`]) with a fresh
/// random `chunk` id (returned, for matching the ack) and `size`.
pub fn packed_message(tag: &str, seqs: std::ops::Range<u64>) -> (BytesMut, String) {
    let mut entries = BytesMut::with_capacity((seqs.end - seqs.start) as usize * 40);
    for s in seqs.clone() {
        Event {
            time: seq_time(s),
            record: seq_record(s),
        }
        .write_entry(&mut entries, false);
    }
    let id: [u8; 16] = rand::random();
    let chunk = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, id);
    let mut msg = BytesMut::with_capacity(entries.len() + 128);
    let opts = Options {
        chunk: Some(chunk.as_bytes()),
        size: Some(seqs.end - seqs.start),
        compressed: None,
    };
    write_packed_forward(&mut msg, tag.as_bytes(), &entries, Some(&opts), false);
    (msg, chunk)
}

/// A blocking forward client: one PackedForward message per batch with a fresh `chunk` id,
/// waiting for its ack. A broken connection or a missing ack makes it reconnect and resend the
/// same message (at-least-once, as a real client does).
pub struct ForwardSender {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    rbuf: BytesMut,
    framer: Framer,
    /// How long one ack may take before the message is resent.
    pub ack_timeout: Duration,
    /// Give up (panic) after this many consecutive failed attempts.
    pub max_attempts: u32,
    pub resends: u64,
}

impl ForwardSender {
    pub fn new(addr: SocketAddr) -> Self {
        ForwardSender {
            addr,
            conn: None,
            rbuf: BytesMut::new(),
            framer: Framer::new(),
            ack_timeout: Duration::from_secs(30),
            max_attempts: 20,
            resends: 0,
        }
    }

    /// Sends events `seqs` under `tag` in one message and waits for its ack.
    pub fn send_seqs(&mut self, tag: &str, seqs: std::ops::Range<u64>) {
        let (msg, chunk) = packed_message(tag, seqs);
        self.send_acked(&msg, chunk.as_bytes());
    }

    /// Writes one message (which must carry `chunk`) and waits for `{"ack": chunk}`.
    pub fn send_acked(&mut self, msg: &[u8], chunk: &[u8]) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_once(msg, chunk) {
                Ok(()) => return,
                Err(e) => {
                    self.conn = None;
                    assert!(
                        attempt < self.max_attempts,
                        "forward sender: {attempt} attempts to {} failed, last: {e}",
                        self.addr
                    );
                    self.resends += 1;
                    std::thread::sleep(Duration::from_millis(100 * attempt.min(10) as u64));
                }
            }
        }
    }

    fn try_once(&mut self, msg: &[u8], chunk: &[u8]) -> Result<(), String> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            let _ = s.set_nodelay(true);
            self.rbuf.clear();
            self.framer = Framer::new();
            self.conn = Some(s);
        }
        let s = self.conn.as_mut().expect("connected");
        s.write_all(msg).map_err(|e| format!("write: {e}"))?;
        s.set_read_timeout(Some(self.ack_timeout))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + self.ack_timeout;
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
            if Instant::now() > deadline {
                return Err("ack timeout".into());
            }
            let mut tmp = [0u8; 4096];
            let n = s.read(&mut tmp).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed before the ack".into());
            }
            self.rbuf.extend_from_slice(&tmp[..n]);
        }
    }
}

// ---- certificates -------------------------------------------------------------------------

/// Test PKI written to a directory: `ca.pem`, `server.pem` + `server-key.pem` (signed by the
/// CA, for `localhost` and `127.0.0.1`), and `other-ca.pem` (an unrelated CA).
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().expect("ca key");
            let cert = p.self_signed(&key).expect("self-signed ca");
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("nagare e2e CA");
        let (other, _) = ca("nagare e2e unrelated CA");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("server cert");
        let w = |name: &str, s: String| {
            let p = dir.join(name);
            std::fs::write(&p, s).expect("write pem");
            p
        };
        Pki {
            ca: w("ca.pem", ca_cert.pem()),
            server_cert: w("server.pem", cert.pem()),
            server_key: w("server-key.pem", key.serialize_pem()),
            other_ca: w("other-ca.pem", other.pem()),
        }
    }
}

// ---- metrics ------------------------------------------------------------------------------

/// The value of `name{labels}` in Prometheus text (labels in the order rendered).
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

/// Counts of each distinct value (duplicate reports).
pub fn histogram<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut m = HashMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

// ---- admin endpoint ------------------------------------------------------------------------

impl Proc {
    /// The admin endpoint's address from the ready file (`"admin"`), present when the config
    /// enables it (`<system> admin_bind 127.0.0.1 admin_port 0`).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let ready = self
            .config
            .with_file_name(format!("{}.ready.json", self.name));
        let text = std::fs::read_to_string(ready).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["admin"].as_str()?.parse().ok()
    }

    /// `GET /metrics` from the admin endpoint (which must be enabled).
    pub fn metrics_text(&self) -> Result<String, String> {
        let admin = self
            .admin_addr()
            .ok_or_else(|| format!("{}: no admin address in the ready file", self.name))?;
        let (status, body) = http_get(admin, "/metrics")?;
        if status != 200 {
            return Err(format!(
                "{}: GET /metrics answered {status}: {body}",
                self.name
            ));
        }
        Ok(body)
    }
}

/// A bounded (5 s) HTTP/1.1 GET on a fresh connection: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(5);
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head from {addr}: {text}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line from {addr}: {head}"))?;
    Ok((status, body.to_string()))
}

// ---- moto and HAProxy ----------------------------------------------------------------------

/// A free port on 127.0.0.1 (bound and released: for configs that need a port before the
/// process starts, e.g. HAProxy's targets).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Waits (bounded) until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The `.ci/venv` interpreter when moto (and so boto3) is installed there.
pub fn venv_python() -> Option<PathBuf> {
    let bin = workspace_root().join(".ci/venv/bin");
    (bin.join("moto_server").exists() && bin.join("python").exists()).then(|| bin.join("python"))
}

/// Python that runs the code after it and exits when its parent (the test binary) is gone.
const WATCHDOG: &str = r#"import os, sys, threading, time
ppid = os.getppid()
def watch():
    while os.getppid() == ppid:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
"#;

/// The moto endpoint (`http://127.0.0.1:PORT`) shared by this test binary: `NAGARE_MOTO_ENDPOINT`
/// when set (`.ci/run` exports it), else a `moto_server` spawned once from `.ci/venv` under a
/// watchdog (it exits with the test process). `None` after reporting through [`missing`].
/// Tests share it: use unique bucket, group and stream names.
pub fn moto(test: &str) -> Option<String> {
    static MOTO: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let m = MOTO.get_or_init(|| {
        if let Ok(ep) = std::env::var("NAGARE_MOTO_ENDPOINT") {
            return Ok(ep.trim_end_matches('/').to_string());
        }
        let py = venv_python().ok_or_else(|| {
            "moto not installed (.ci/venv/bin/moto_server) and NAGARE_MOTO_ENDPOINT not set"
                .to_string()
        })?;
        let port = free_port();
        let code = format!(
            "{WATCHDOG}from moto.server import main\nmain(['-H', '127.0.0.1', '-p', '{port}'])\n"
        );
        let quiet = std::env::var_os("NAGARE_TEST_VERBOSE").is_none();
        let mut cmd = Command::new(&py);
        cmd.arg("-c").arg(code).stdin(Stdio::null());
        if quiet {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn moto_server: {e}"))?;
        if !wait_for_port(port, Duration::from_secs(60)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("moto_server did not start on 127.0.0.1:{port}"));
        }
        // The watchdog ends it with this process; dropping the handle neither kills nor waits.
        drop(child);
        Ok(format!("http://127.0.0.1:{port}"))
    });
    match m {
        Ok(ep) => Some(ep.clone()),
        Err(e) => {
            missing(test, e, INSTALL_HINT);
            None
        }
    }
}

/// HAProxy (`NAGARE_HAPROXY` overrides the `haproxy` on PATH or in /usr/sbin). `None` after
/// reporting through [`missing`].
pub fn haproxy_binary(test: &str) -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("NAGARE_HAPROXY") {
        Some(p) => vec![PathBuf::from(p)],
        None => std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("haproxy"))
            .collect(),
    };
    match candidates.into_iter().find(|p| p.is_file()) {
        Some(p) => Some(p),
        None => {
            missing(
                test,
                "haproxy not found (Debian package `haproxy`)",
                INSTALL_HINT,
            );
            None
        }
    }
}

/// One HAProxy backend server: its forward port and its admin port (HTTP `/health` check).
#[derive(Debug, Clone, Copy)]
pub struct NlbTarget {
    pub port: u16,
    pub admin_port: u16,
}

/// HAProxy in TCP mode standing in for an NLB (`../shared/tools/README.md`): round robin over
/// `targets`, each checked with `GET /health` on its admin port (out after 2 failures, back
/// after 2 successes, every 500 ms), on 127.0.0.1:`port`. Killed (SIGKILL) on drop.
pub struct Nlb {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Nlb {
    pub fn start(haproxy: &Path, dir: &Path, targets: &[NlbTarget]) -> Nlb {
        // HAProxy needs its port in the config: a free one is picked, and picked again if
        // something else took it before HAProxy bound it (HAProxy then exits at once).
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let port = free_port();
            let mut cfg = format!(
                "global\n    maxconn 256\n\
                 defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    \
                 timeout server 60s\n    retries 3\n    option redispatch\n\
                 frontend nlb\n    bind 127.0.0.1:{port}\n    default_backend aggregators\n\
                 backend aggregators\n    balance roundrobin\n    option httpchk GET /health\n"
            );
            for (i, t) in targets.iter().enumerate() {
                cfg.push_str(&format!(
                    "    server a{} 127.0.0.1:{} check port {} inter 500ms fall 2 rise 2\n",
                    i + 1,
                    t.port,
                    t.admin_port
                ));
            }
            let conf = dir.join("nlb.cfg");
            std::fs::write(&conf, &cfg).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
            let log = dir.join(format!("haproxy-{attempt}.log"));
            let out = File::create(&log).expect("create haproxy log");
            let err = out.try_clone().expect("clone haproxy log");
            let child = Command::new(haproxy)
                .arg("-f")
                .arg(&conf)
                .arg("-db")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", haproxy.display()));
            let mut nlb = Nlb { child, port, log };
            // Listening, and by HAProxy: it is still running a moment after the port answers
            // (if another process holds the port, HAProxy fails to bind and exits at once).
            let up = wait_for_port(port, Duration::from_secs(15));
            if up {
                std::thread::sleep(Duration::from_millis(200));
            }
            let running = matches!(nlb.child.try_wait(), Ok(None));
            if up && running {
                return nlb;
            }
            let text = std::fs::read_to_string(&nlb.log).unwrap_or_default();
            nlb.kill();
            if running || attempt == ATTEMPTS {
                panic!(
                    "haproxy did not listen on 127.0.0.1:{port} (attempt {attempt}); \
                     config:\n{cfg}\nlog:\n{text}"
                );
            }
            eprintln!("haproxy exited at start (port {port} taken?), picking another:\n{text}");
        }
        unreachable!("the last attempt returns or panics")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nlb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- haproxy log ({}) ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_seq_reads_the_integer() {
        assert_eq!(fast_seq(br#"{"seq":12345,"msg":"x"}"#), Some(12345));
        assert_eq!(fast_seq(br#"{"msg":"x","seq": 7}"#), Some(7));
        assert_eq!(fast_seq(br#"{"msg":"x"}"#), None);
    }

    #[test]
    fn parse_time_needs_nine_digits() {
        assert_eq!(parse_time("1700000000.000000007"), Some((1_700_000_000, 7)));
        assert_eq!(parse_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_time("1700000000.5"), None);
    }

    #[test]
    fn tail_returns_complete_lines_only() {
        let d = TempDir::new("tail");
        let p = d.join("x.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"a\":").unwrap();
        let mut t = JsonLinesTail::new(&p);
        let mut got = Vec::new();
        t.poll(|l| got.push(String::from_utf8_lossy(l).into_owned()));
        assert_eq!(got, vec!["{\"a\":1}"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"2}\n")
            .unwrap();
        got.clear();
        t.poll(|l| got.push(String::from_utf8_lossy(l).into_owned()));
        assert_eq!(got, vec!["{\"a\":2}"]);
    }

    #[test]
    fn metric_finds_labelled_values() {
        let t = "# TYPE x counter\nx{plugin_id=\"a\",reason=\"b\"} 3\nx{plugin_id=\"a\"} 1\n";
        assert_eq!(
            metric(t, "x", &[("plugin_id", "a"), ("reason", "b")]),
            Some(3.0)
        );
        assert_eq!(metric(t, "x", &[("plugin_id", "a")]), Some(1.0));
        assert_eq!(metric(t, "x", &[("plugin_id", "z")]), None);
    }
}

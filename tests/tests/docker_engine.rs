//! The real Docker engine's `fluentd` log driver as the forwarder's client (issue 10).
//!
//! A private dockerd (`../shared/tools/dockerd-local.sh`, Docker 20.10, no bridge, the
//! FROM-scratch image `nagare-test/busybox`) runs containers with `--network none`; the driver
//! lives in dockerd, so `--log-opt fluentd-address=127.0.0.1:PORT` reaches a `nagare-forwarder`
//! on loopback. The forwarder runs `examples/forwarder.conf` as written except for text
//! substitutions: its `ENV` knobs (127.0.0.1, the port, a temp `NAGARE_DATA_DIR`, so the S3
//! stand-in `@type file` store writes under the test's dir), the aggregator store replaced by
//! `@type null`, and `<system> admin_bind 127.0.0.1 admin_port 0` for `/metrics`.
//!
//! * Corpus runs: the 2,000 lines of `../shared/corpus/sample.jsonl` (partial pieces rejoined),
//!   one container per corpus container, each line on the stream its `source` says (stdout and
//!   stderr written at once), `--log-opt tag=docker.<service>.{{.ID}}`:
//!   without ack, and with `fluentd-async` + `fluentd-request-ack` (the container sleeps 5 s
//!   after printing): every line exactly once (the health checks dropped by the example's grep,
//!   counted from the corpus), lines over 16 KiB byte-identical, tags and per-service files as
//!   the example routes them. With `fluentd-request-ack` in sync mode (bounded: containers
//!   killed after 90 s): no line stored twice; prints the resends the forwarder dropped and the
//!   lines the driver never sent. This mode can crash dockerd (a nil-pointer panic in the
//!   driver's ack read, measured): it gets an engine of its own, and a crash is reported, not
//!   failed.
//! * `tag_templates_name_and_image`: `tag=docker.{{.Name}}.{{.ImageName}}.{{.ID}}` as the
//!   forwarder sees it (and its `${tag[1]}` routing).
//! * `forwarder_restart_async_ack`: SIGTERM and restart on the same port while a container
//!   logs numbered lines with `fluentd-async` + `fluentd-request-ack`: every line once, and the
//!   lines dockerd read while the forwarder was down arrive after the restart.
//!
//! The engine: `.ci/run` starts one and exports `DOCKER_HOST` (and stops it in an EXIT trap).
//! Without `DOCKER_HOST` the first test here starts one under the temp dir and the last test
//! using it stops it (a lazily restarted, reference-counted guard; the sync-with-ack run always
//! starts and stops its own, also under `.ci/run`). If an engine cannot start, the test
//! fails with the engine's log; only without `CI=true` and without docker (or root) is it a
//! loud SKIP. Every container is removed by its test (`docker rm -f`, also on failure).

use nagare_e2e::*;
use serde_json::Value as J;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "nagare-test/busybox";
/// Bound on one docker CLI call.
const DOCKER_CALL: Duration = Duration::from_secs(60);
/// Bound on the corpus containers of the exact runs (they take a few seconds).
const EXACT_RUN: Duration = Duration::from_secs(120);
/// Bound on the sync + ack run: the containers are killed after this.
const SYNC_ACK_RUN: Duration = Duration::from_secs(90);

// ---- bounded commands ----------------------------------------------------------------------

struct Output {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion, killed after `timeout` (then `Err` with what it printed).
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
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
            return Err(format!(
                "{desc} did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                t_out.join().unwrap_or_default(),
                t_err.join().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        success: status.success(),
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// ---- the engine ----------------------------------------------------------------------------

struct EngineState {
    /// `DOCKER_HOST` of the shared engine in use.
    host: Option<String>,
    /// The state dir of a shared engine this process started (stopped when `users` drops to 0).
    started: Option<PathBuf>,
    users: usize,
}

static ENGINE: Mutex<EngineState> = Mutex::new(EngineState {
    host: None,
    started: None,
    users: 0,
});

fn engine_state() -> std::sync::MutexGuard<'static, EngineState> {
    ENGINE.lock().unwrap_or_else(|e| e.into_inner())
}

fn engine_script() -> PathBuf {
    workspace_root().join("../shared/tools/dockerd-local.sh")
}

/// The tails of the engine's logs under its state dir.
fn engine_logs(dir: &Path) -> String {
    let mut s = String::new();
    for f in ["dockerd.log", "build.log", "apt.log"] {
        let p = dir.join(f);
        if let Ok(text) = std::fs::read_to_string(&p) {
            let lines: Vec<&str> = text.lines().collect();
            s.push_str(&format!(
                "--- {} (last 40 lines) ---\n{}\n",
                p.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
    }
    if s.is_empty() {
        s = format!("(no logs under {})", dir.display());
    }
    s
}

/// Whether this machine can start an engine; `false` after a loud SKIP (never under `CI=true`).
fn can_start_engine(test: &str) -> bool {
    let script = engine_script();
    let have = on_path("docker") && on_path("dockerd") && script.is_file();
    if !is_ci() && (!have || !is_root()) {
        missing(
            test,
            "no Docker engine (DOCKER_HOST unset, and docker/dockerd, root or \
             ../shared/tools/dockerd-local.sh missing)",
            "run as root on a machine with docker.io (the script installs it), or \
             `eval \"$(../shared/tools/dockerd-local.sh start DIR)\"` first",
        );
        return false;
    }
    assert!(
        script.is_file(),
        "{test}: {} is missing (CI=true: this is a failure)",
        script.display()
    );
    true
}

/// `dockerd-local.sh start dir`: the engine's `DOCKER_HOST`; panics with its log on failure.
fn start_engine(test: &str, dir: &Path) -> String {
    let script = engine_script();
    let t0 = Instant::now();
    let res = run_bounded(
        Command::new("bash").arg(&script).arg("start").arg(dir),
        Duration::from_secs(600),
    );
    let host = match &res {
        Ok(o) if o.success => o
            .stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("export DOCKER_HOST="))
            .map(|h| h.trim().to_string()),
        _ => None,
    };
    let Some(host) = host else {
        let detail = match res {
            Ok(o) => format!(
                "exit {:?}\nstdout: {}\nstderr: {}",
                o.code, o.stdout, o.stderr
            ),
            Err(e) => e,
        };
        let logs = engine_logs(dir);
        // Leave nothing running behind a failed start.
        stop_engine(dir);
        panic!(
            "{test}: the Docker engine did not start ({} start {}): {detail}\n{logs}",
            script.display(),
            dir.display(),
        );
    };
    eprintln!(
        "[docker] started a private engine at {host} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    if let Err(err) = docker_at(&host, &["image", "inspect", "--format", "{{.Id}}", IMAGE]) {
        let logs = engine_logs(dir);
        stop_engine(dir);
        panic!("{test}: image {IMAGE} missing from the new engine: {err}\n{logs}");
    }
    host
}

/// `dockerd-local.sh stop dir` (by its pid file), then removes the dir.
fn stop_engine(dir: &Path) {
    let res = run_bounded(
        Command::new("bash")
            .arg(engine_script())
            .arg("stop")
            .arg(dir),
        Duration::from_secs(120),
    );
    match res {
        Ok(o) if o.success => {
            let _ = std::fs::remove_dir_all(dir);
            eprintln!("[docker] stopped the private engine ({})", dir.display());
        }
        Ok(o) => eprintln!(
            "[docker] stopping the engine in {} failed: {} {}",
            dir.display(),
            o.stdout,
            o.stderr
        ),
        Err(e) => eprintln!("[docker] stopping the engine failed: {e}"),
    }
}

/// A test's hold on an engine.
struct Engine {
    host: String,
    /// The state dir of an engine of this test alone (stopped on drop); `None`: the shared one.
    own: Option<PathBuf>,
}

impl Engine {
    /// The shared engine: `DOCKER_HOST`'s, or one started here for all tests of this binary.
    /// `None` (after a loud SKIP) only without `CI=true` on a machine without docker or root;
    /// a failure to start panics with the engine's log.
    fn acquire(test: &str) -> Option<Engine> {
        let mut st = engine_state();
        if let Some(h) = st.host.clone() {
            st.users += 1;
            return Some(Engine { host: h, own: None });
        }
        let host = match std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()) {
            Some(h) => {
                if let Err(err) = docker_at(&h, &["version", "--format", "{{.Server.Version}}"]) {
                    // dockerd-local.sh keeps its log beside the socket.
                    let logs = h
                        .strip_prefix("unix://")
                        .and_then(|sock| Path::new(sock).parent())
                        .map(engine_logs)
                        .unwrap_or_default();
                    panic!(
                        "{test}: DOCKER_HOST={h} is set but the engine does not answer: {err}\n{logs}"
                    );
                }
                if let Err(err) = docker_at(&h, &["image", "inspect", "--format", "{{.Id}}", IMAGE])
                {
                    panic!("{test}: image {IMAGE} missing (dockerd-local.sh builds it): {err}");
                }
                h
            }
            None => {
                if !can_start_engine(test) {
                    return None;
                }
                let dir =
                    std::env::temp_dir().join(format!("nagare-e2e-docker-{}", std::process::id()));
                let h = start_engine(test, &dir);
                st.started = Some(dir);
                h
            }
        };
        st.host = Some(host.clone());
        st.users += 1;
        Some(Engine { host, own: None })
    }

    /// An engine of this test alone, always started here (also when `DOCKER_HOST` is set), for
    /// runs that can crash dockerd (sync mode with `fluentd-request-ack`). Stopped on drop.
    fn isolated(test: &str) -> Option<Engine> {
        if !can_start_engine(test) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "nagare-e2e-docker-{}-{}",
            std::process::id(),
            test.replace('_', "-")
        ));
        let host = start_engine(test, &dir);
        Some(Engine {
            host,
            own: Some(dir),
        })
    }

    /// One docker CLI call (bounded): its stdout, or an error with its stderr.
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker_at(&self.host, args)
    }

    /// The Go panic in the log of an engine of this test's own, if dockerd crashed.
    fn crash(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.own.as_ref()?.join("dockerd.log")).ok()?;
        let at = log.find("panic: ")?;
        let excerpt: Vec<&str> = log[at..].lines().take(12).collect();
        Some(excerpt.join("\n"))
    }
}

fn docker_at(host: &str, args: &[&str]) -> Result<String, String> {
    let o = run_bounded(
        Command::new("docker").env("DOCKER_HOST", host).args(args),
        DOCKER_CALL,
    )?;
    if o.success {
        Ok(o.stdout.trim().to_string())
    } else {
        Err(format!(
            "docker {} exited {:?}: {}{}",
            args.join(" "),
            o.code,
            o.stderr,
            o.stdout
        ))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(dir) = self.own.take() {
            if std::thread::panicking() {
                eprintln!("{}", engine_logs(&dir));
            }
            stop_engine(&dir);
            return;
        }
        let mut st = engine_state();
        st.users = st.users.saturating_sub(1);
        if st.users > 0 {
            return;
        }
        if let Some(dir) = st.started.take() {
            st.host = None;
            stop_engine(&dir);
        }
    }
}

/// The containers of one test, removed (`docker rm -f`) on drop, also when the test fails.
struct Containers<'e> {
    engine: &'e Engine,
    ids: Vec<String>,
}

/// One `docker run -d`.
struct RunSpec<'a> {
    name: &'a str,
    port: u16,
    tag: &'a str,
    log_opts: &'a [&'a str],
    lines_dir: Option<&'a Path>,
    script: &'a str,
}

impl<'e> Containers<'e> {
    fn new(engine: &'e Engine) -> Self {
        Containers {
            engine,
            ids: Vec::new(),
        }
    }

    /// Starts a container with the fluentd driver; returns its full id.
    fn run(&mut self, spec: &RunSpec) -> String {
        self.try_run(spec)
            .unwrap_or_else(|e| panic!("cannot start container {}: {e}", spec.name))
    }

    fn try_run(&mut self, spec: &RunSpec) -> Result<String, String> {
        let addr = format!("fluentd-address=127.0.0.1:{}", spec.port);
        let tag = format!("tag={}", spec.tag);
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            spec.name,
            "--label",
            "nagare-e2e=1",
            "--log-driver",
            "fluentd",
            "--log-opt",
            &addr,
            "--log-opt",
            &tag,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for o in spec.log_opts {
            args.push("--log-opt".into());
            args.push(o.to_string());
        }
        if let Some(d) = spec.lines_dir {
            args.push("-v".into());
            args.push(format!("{}:/lines:ro", d.display()));
        }
        args.extend([
            IMAGE.to_string(),
            "sh".into(),
            "-c".into(),
            spec.script.into(),
        ]);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.engine.docker(&argv)?;
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("docker run -d printed {id:?}, not a container id"));
        }
        self.ids.push(id.clone());
        Ok(id)
    }

    /// `(status, exit code)` of each container.
    fn states(&self) -> Result<Vec<(String, i64)>, String> {
        let mut args = vec![
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
        ];
        args.extend(self.ids.iter().map(String::as_str));
        let out = self.engine.docker(&args)?;
        Ok(out
            .lines()
            .map(|l| {
                let (s, c) = l.split_once(' ').unwrap_or((l, "-1"));
                (s.to_string(), c.trim().parse().unwrap_or(-1))
            })
            .collect())
    }

    /// Waits until every container has exited (dockerd has closed its log driver by then),
    /// bounded by `timeout`.
    fn wait_exited(&self, timeout: Duration) -> Exit {
        let deadline = Instant::now() + timeout;
        loop {
            let st = match self.states() {
                Ok(st) => st,
                Err(e) => return Exit::EngineGone(e),
            };
            if st.iter().all(|(s, _)| s == "exited" || s == "dead") {
                return Exit::Exited(st.into_iter().map(|(_, c)| c).collect());
            }
            if Instant::now() > deadline {
                return Exit::Running(st);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill_all(&self) {
        let mut args = vec!["kill"];
        args.extend(self.ids.iter().map(String::as_str));
        // Containers that exited already make `docker kill` fail: fine.
        let _ = self.engine.docker(&args);
    }

    fn remove_all(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(self.ids.iter().map(String::as_str));
        if let Err(e) = self.engine.docker(&args) {
            eprintln!("[docker] removing containers failed: {e}");
        }
        self.ids.clear();
    }
}

enum Exit {
    /// Exit codes.
    Exited(Vec<i64>),
    /// Still running at the bound: (status, exit code) of each.
    Running(Vec<(String, i64)>),
    /// The engine no longer answers.
    EngineGone(String),
}

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        self.remove_all();
    }
}

// ---- the corpus ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    App,
    Audit,
    Error,
    Health,
    Text,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Audit => "audit",
            Kind::Error => "error",
            Kind::Health => "health",
            Kind::Text => "text",
        }
    }
}

/// As the corpus generator (and `crates/nagare-pipeline/tests/corpus_examples.rs`) classify.
fn classify(log: &str) -> Kind {
    match serde_json::from_str::<J>(log) {
        Err(_) => Kind::Text,
        Ok(j) => {
            if j.get("marker").and_then(J::as_str) == Some("AUDIT") {
                Kind::Audit
            } else if j
                .get("msg")
                .and_then(J::as_str)
                .is_some_and(|m| m.contains("healthcheck.Check") || m.contains("grpc.health"))
            {
                Kind::Health
            } else if matches!(j.get("level").and_then(J::as_str), Some("error" | "fatal")) {
                Kind::Error
            } else {
                Kind::App
            }
        }
    }
}

struct CorpusLine {
    source: String,
    log: String,
    kind: Kind,
}

/// One container of the corpus (its lines in file order, pieces rejoined).
struct CorpusContainer {
    service: String,
    lines: Vec<CorpusLine>,
}

impl CorpusContainer {
    fn file(&self, source: &str) -> String {
        let mut s = String::new();
        for l in self.lines.iter().filter(|l| l.source == source) {
            s.push_str(&l.log);
            s.push('\n');
        }
        s
    }
}

struct Corpus {
    containers: Vec<CorpusContainer>,
    wire_records: usize,
}

fn load_corpus(path: &Path, manifest: &Path) -> Corpus {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let m: J =
        serde_json::from_slice(&std::fs::read(manifest).expect("manifest")).expect("manifest JSON");
    let mut order: Vec<String> = Vec::new();
    let mut by_cid: HashMap<String, CorpusContainer> = HashMap::new();
    let mut pending: HashMap<(String, String), Vec<(u64, String)>> = HashMap::new();
    let mut wire = 0usize;
    for l in text.lines() {
        wire += 1;
        let j: J = serde_json::from_str(l).expect("corpus line");
        let tag = j["tag"].as_str().expect("tag");
        let rec = j["record"].as_object().expect("record");
        let get = |k: &str| rec.get(k).and_then(J::as_str).unwrap_or("").to_string();
        let cid = get("container_id");
        let c = by_cid.entry(cid.clone()).or_insert_with(|| {
            order.push(cid.clone());
            CorpusContainer {
                service: tag
                    .split('.')
                    .nth(1)
                    .expect("docker.<service>.<id>")
                    .to_string(),
                lines: Vec::new(),
            }
        });
        let source = get("source");
        let log = if rec.contains_key("partial_message") {
            let key = (cid.clone(), get("partial_id"));
            let pieces = pending.entry(key.clone()).or_default();
            pieces.push((get("partial_ordinal").parse().expect("ordinal"), get("log")));
            if get("partial_last") != "true" {
                continue;
            }
            let mut pieces = pending.remove(&key).expect("pieces");
            pieces.sort_by_key(|p| p.0);
            pieces.into_iter().map(|p| p.1).collect()
        } else {
            get("log")
        };
        assert!(
            !log.contains('\n') && !log.contains('\0'),
            "a corpus line with a newline or NUL cannot be written by a container"
        );
        assert!(
            source == "stdout" || source == "stderr",
            "source {source:?}"
        );
        c.lines.push(CorpusLine {
            source,
            kind: classify(&log),
            log,
        });
    }
    assert!(
        pending.is_empty(),
        "unterminated partial lines in the corpus"
    );
    let containers: Vec<CorpusContainer> = order
        .iter()
        .map(|c| by_cid.remove(c).expect("container"))
        .collect();
    let total: usize = containers.iter().map(|c| c.lines.len()).sum();
    assert_eq!(
        Some(total as u64),
        m["records"].as_u64(),
        "lines vs manifest records"
    );
    assert_eq!(
        Some(wire as u64),
        m["wire_records"].as_u64(),
        "wire records vs manifest"
    );
    for k in [
        Kind::App,
        Kind::Audit,
        Kind::Error,
        Kind::Health,
        Kind::Text,
    ] {
        let n = containers
            .iter()
            .flat_map(|c| &c.lines)
            .filter(|l| l.kind == k)
            .count();
        assert_eq!(
            Some(n as u64),
            m["kinds"][k.name()].as_u64(),
            "kind {} vs manifest",
            k.name()
        );
    }
    Corpus {
        containers,
        wire_records: wire,
    }
}

// ---- the forwarder -------------------------------------------------------------------------

fn replace_once(s: &mut String, from: &str, to: &str) {
    assert_eq!(
        s.matches(from).count(),
        1,
        "examples/forwarder.conf changed: expected {from:?} exactly once"
    );
    *s = s.replacen(from, to, 1);
}

/// `examples/forwarder.conf` with its ENV knobs set, the S3 store swapped for JSON-lines files
/// under `<data>/s3/<service>/` (tag and time injected, so every line can be matched to its
/// container; tests/tests/full_chain.rs runs the real S3 output), the aggregator store
/// `@type null`, and the admin endpoint on 127.0.0.1, port 0.
fn forwarder_config(data_dir: &Path, port: u16) -> String {
    let path = workspace_root().join("examples/forwarder.conf");
    let mut s =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    replace_once(
        &mut s,
        "\"#{ENV.fetch('NAGARE_BIND', '0.0.0.0')}\"",
        "127.0.0.1",
    );
    replace_once(
        &mut s,
        "\"#{ENV.fetch('NAGARE_PORT', '24224')}\"",
        &port.to_string(),
    );
    replace_once(
        &mut s,
        "<system>\n",
        "<system>\n  admin_bind 127.0.0.1\n  admin_port 0\n",
    );
    let s3_standin = format!(
        "<store>\n      @type file\n      @id s3_archive\n      \
         path {}/s3/${{tag[1]}}/%Y/%m/%d/%H.jsonl\n      append true\n      \
         <format>\n        @type json\n      </format>\n      \
         <inject>\n        tag_key tag\n        time_key time\n      </inject>\n      \
         <buffer tag,time>\n        timekey 1h\n      </buffer>\n    </store>",
        data_dir.display()
    );
    replace_store(&mut s, "@id s3_archive", &s3_standin);
    replace_store(
        &mut s,
        "@id to_aggregators",
        "<store>\n      @type null\n      @id to_aggregators\n    </store>",
    );
    s
}

/// Replaces the `<store>` ... `</store>` that contains `id_line` with `with`.
fn replace_store(s: &mut String, id_line: &str, with: &str) {
    let at = s
        .find(id_line)
        .unwrap_or_else(|| panic!("examples/forwarder.conf changed: no {id_line:?}"));
    let a = s[..at]
        .rfind("<store>")
        .unwrap_or_else(|| panic!("<store> before {id_line:?}"));
    let b = at
        + s[at..]
            .find("</store>")
            .unwrap_or_else(|| panic!("</store> after {id_line:?}"))
        + "</store>".len();
    s.replace_range(a..b, with);
}

/// Sum of `name{plugin_id="id",...}` over its other labels.
fn metric_sum(text: &str, name: &str, plugin_id: &str) -> u64 {
    let prefix = format!("{name}{{plugin_id=\"{plugin_id}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        })
        .sum::<f64>() as u64
}

fn input_events(fwd: &Proc) -> u64 {
    fwd.metrics_text()
        .map(|t| metric_sum(&t, "nagare_input_events_total", "in_docker"))
        .unwrap_or(0)
}

/// Waits until the forwarder's in_forward has committed `target` events, or (without a
/// target, or when it is not reached) until the count has not moved for `quiet`. Bounded by
/// `timeout`; returns the count.
fn settle(fwd: &Proc, target: Option<u64>, quiet: Duration, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = input_events(fwd);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let n = input_events(fwd);
        if target.is_some_and(|t| n >= t) {
            // Anything after the target would be a duplicate: give it a moment to show.
            std::thread::sleep(Duration::from_millis(500));
            return input_events(fwd);
        }
        if n != last {
            last = n;
            since = Instant::now();
        } else if since.elapsed() >= quiet && target.is_none() {
            return n;
        }
        if Instant::now() > deadline {
            return n;
        }
    }
}

/// Every line under `<data>/s3/<service>/...`: (service dir, line).
fn read_s3(data: &Path) -> Vec<(String, OutLine)> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, files);
            } else {
                files.push(p);
            }
        }
    }
    let root = data.join("s3");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let service = f
            .strip_prefix(&root)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        for l in read_out_lines(&f) {
            out.push((service.clone(), l));
        }
    }
    out
}

// ---- comparing lines -----------------------------------------------------------------------

/// JSON with object keys sorted (a stable text for comparing parsed records).
fn canonical(v: &J) -> String {
    fn sort(v: &J) -> J {
        match v {
            J::Object(m) => {
                let b: BTreeMap<&String, J> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                let mut o = serde_json::Map::new();
                for (k, v) in b {
                    o.insert(k.clone(), v);
                }
                J::Object(o)
            }
            J::Array(a) => J::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).expect("JSON")
}

/// What identifies a line in the output. The example parses `log` as JSON into the record,
/// keeping Docker's `log` string unless the app's JSON has its own `log` (which replaces it):
/// lines that keep the string are compared byte for byte (`S:`), the others by their parsed
/// JSON (`J:`). The stream (`source`) is part of the key.
fn expected_key(source: &str, log: &str) -> String {
    match serde_json::from_str::<J>(log) {
        Ok(J::Object(m)) if m.contains_key("log") => {
            format!("{source}|J:{}", canonical(&J::Object(m)))
        }
        _ => format!("{source}|S:{log}"),
    }
}

const DOCKER_FIELDS: [&str; 3] = ["container_id", "container_name", "source"];

fn stored_key(rec: &serde_json::Map<String, J>) -> Result<String, String> {
    let source = rec
        .get("source")
        .and_then(J::as_str)
        .ok_or("no source field")?
        .to_string();
    let mut m = rec.clone();
    for k in DOCKER_FIELDS {
        m.remove(k);
    }
    match m.get("log") {
        Some(J::String(s)) => {
            let mut rest = m.clone();
            rest.remove("log");
            match serde_json::from_str::<J>(s) {
                Ok(J::Object(p)) => {
                    if J::Object(rest) != J::Object(p) {
                        return Err("the parsed fields differ from the JSON in `log`".into());
                    }
                }
                _ => {
                    if !rest.is_empty() {
                        return Err(format!(
                            "a text line with extra fields {:?}",
                            rest.keys().collect::<Vec<_>>()
                        ));
                    }
                }
            }
            Ok(format!("{source}|S:{s}"))
        }
        Some(J::Object(_)) => Ok(format!("{source}|J:{}", canonical(&J::Object(m)))),
        other => Err(format!("log is {other:?}")),
    }
}

fn short(s: &str) -> String {
    if s.len() > 160 {
        let mut end = 160;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    } else {
        s.to_string()
    }
}

/// One container as run: its corpus lines, what the forwarder should see.
struct Ran<'c> {
    id: String,
    name: String,
    /// The tag Docker renders (before the example appends `.app` / `.audit`).
    tag: String,
    /// `${tag[1]}`, the S3 stand-in's directory.
    service_dir: String,
    lines: &'c [CorpusLine],
}

#[derive(Default, Debug)]
struct Tally {
    expected: usize,
    stored: usize,
    /// Expected lines never stored (count of copies missing).
    missing: usize,
    /// Extra copies of expected lines.
    duplicates: usize,
    /// Stored lines that are no corpus line (a partial line flushed by concat's timeout, ...).
    unknown: usize,
    problems: Vec<String>,
}

impl Tally {
    fn note(&mut self, p: String) {
        if self.problems.len() < 12 {
            self.problems.push(p);
        }
    }
}

/// Compares the S3 stand-in's lines with the containers' corpus lines (health checks
/// excluded: the example drops them), checking tags, per-service files and Docker's fields.
fn tally(ran: &[Ran], stored: &[(String, OutLine)]) -> Tally {
    let mut t = Tally::default();
    // (container, key) -> (expected copies, kind)
    let mut want: HashMap<(usize, String), (usize, Kind)> = HashMap::new();
    for (i, r) in ran.iter().enumerate() {
        for l in r.lines.iter().filter(|l| l.kind != Kind::Health) {
            want.entry((i, expected_key(&l.source, &l.log)))
                .or_insert((0, l.kind))
                .0 += 1;
            t.expected += 1;
        }
    }
    let by_id: HashMap<&str, usize> = ran
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut got: HashMap<(usize, String), usize> = HashMap::new();
    for (dir, l) in stored {
        t.stored += 1;
        let cid = l.str_field("container_id").unwrap_or("");
        let Some(&i) = by_id.get(cid) else {
            t.unknown += 1;
            t.note(format!(
                "a line from an unknown container {cid:?}: {}",
                short(&format!("{:?}", l.record))
            ));
            continue;
        };
        let r = &ran[i];
        let key = match stored_key(&l.record) {
            Ok(k) => k,
            Err(e) => {
                t.unknown += 1;
                t.note(format!("{e}: {}", short(&format!("{:?}", l.record))));
                continue;
            }
        };
        let expect_name = format!("/{}", r.name);
        if l.str_field("container_name") != Some(expect_name.as_str()) {
            t.note(format!(
                "container_name {:?}, expected {expect_name}",
                l.str_field("container_name")
            ));
        }
        if dir != &r.service_dir {
            t.note(format!(
                "stored under s3/{dir}/, expected s3/{}/ (tag {})",
                r.service_dir, l.tag
            ));
        }
        match want.get(&(i, key.clone())) {
            Some(&(_, kind)) => {
                let suffix = if kind == Kind::Audit { "audit" } else { "app" };
                let expect_tag = format!("{}.{suffix}", r.tag);
                if l.tag != expect_tag {
                    t.note(format!("tag {:?}, expected {expect_tag:?}", l.tag));
                }
            }
            None => {
                t.unknown += 1;
                t.note(format!(
                    "not a line of container {}: {}",
                    r.name,
                    short(&key)
                ));
            }
        }
        *got.entry((i, key)).or_insert(0) += 1;
    }
    for (k, &(n, _)) in &want {
        let g = got.get(k).copied().unwrap_or(0);
        if g < n {
            t.missing += n - g;
            if t.missing <= 3 {
                t.note(format!("missing from {}: {}", ran[k.0].name, short(&k.1)));
            }
        } else if g > n {
            t.duplicates += g - n;
            t.note(format!(
                "{g} copies (expected {n}) from {}: {}",
                ran[k.0].name,
                short(&k.1)
            ));
        }
    }
    t
}

// ---- the corpus runs -----------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Docker's defaults: sync, no ack.
    Defaults,
    /// `fluentd-async=true` + `fluentd-request-ack=true`, the container alive 5 s after printing.
    AsyncAck,
    /// `fluentd-request-ack=true` in sync mode.
    SyncAck,
}

fn test_tag(test: &str) -> String {
    format!("e2e-{}-{}", std::process::id(), test.replace('_', "-"))
}

fn corpus_run(test: &str, mode: Mode) {
    // Sync mode with ack can crash dockerd (measured: a nil-pointer panic in the driver's ack
    // read): that run gets an engine of its own.
    let engine = if mode == Mode::SyncAck {
        Engine::isolated(test)
    } else {
        Engine::acquire(test)
    };
    let Some(engine) = engine else {
        return;
    };
    let Some((corpus_path, manifest)) = corpus(test) else {
        return;
    };
    let corpus = load_corpus(&corpus_path, &manifest);
    let dir = TempDir::new(test);
    let lines_dir = dir.join("lines");
    std::fs::create_dir_all(&lines_dir).expect("lines dir");
    for (i, c) in corpus.containers.iter().enumerate() {
        std::fs::write(lines_dir.join(format!("c{i}.out")), c.file("stdout")).expect("write lines");
        std::fs::write(lines_dir.join(format!("c{i}.err")), c.file("stderr")).expect("write lines");
    }
    let data = dir.join("data");
    let mut fwd = Proc::start(
        Role::Forwarder,
        "forwarder",
        dir.path(),
        &forwarder_config(&data, 0),
    );
    let port = fwd.port();
    let (opts, sleep_after): (&[&str], u32) = match mode {
        Mode::Defaults => (&[], 0),
        Mode::AsyncAck => (&["fluentd-async=true", "fluentd-request-ack=true"], 5),
        Mode::SyncAck => (&["fluentd-request-ack=true"], 0),
    };
    let mut containers = Containers::new(&engine);
    let mut ran = Vec::new();
    let t0 = Instant::now();
    for (i, c) in corpus.containers.iter().enumerate() {
        let name = format!("{}-{i}", test_tag(test));
        // stdout and stderr written at once, as a service does.
        let script =
            format!("cat /lines/c{i}.out & cat /lines/c{i}.err >&2; wait; sleep {sleep_after}");
        let tag = format!("docker.{}.{{{{.ID}}}}", c.service);
        let spec = RunSpec {
            name: &name,
            port,
            tag: &tag,
            log_opts: opts,
            lines_dir: Some(&lines_dir),
            script: &script,
        };
        let id = match containers.try_run(&spec) {
            Ok(id) => id,
            // The containers started first can crash dockerd while the next one starts.
            Err(e) if mode == Mode::SyncAck && engine.crash().is_some() => {
                eprintln!("[{test}] cannot start container {name}, dockerd crashed: {e}");
                break;
            }
            Err(e) => panic!("{test}: cannot start container {name}: {e}"),
        };
        ran.push(Ran {
            tag: format!("docker.{}.{}", c.service, &id[..12]),
            id,
            name,
            service_dir: c.service.clone(),
            lines: &c.lines,
        });
    }
    let bound = if mode == Mode::SyncAck {
        SYNC_ACK_RUN
    } else {
        EXACT_RUN
    };
    let exited = containers.wait_exited(bound);
    let run_secs = t0.elapsed().as_secs_f64();
    let mut outcome = "";
    match (exited, mode) {
        (Exit::Exited(codes), _) => assert!(
            codes.iter().all(|&c| c == 0),
            "{test}: containers exited with {codes:?}"
        ),
        (Exit::Running(states), Mode::SyncAck) => {
            eprintln!("[{test}] containers still running after {bound:?}: {states:?}; docker kill");
            containers.kill_all();
            outcome = " (killed at the bound)";
        }
        (Exit::EngineGone(e), Mode::SyncAck) => {
            eprintln!("[{test}] the engine stopped answering: {e}");
            outcome = " (dockerd crashed)";
        }
        (Exit::Running(states), _) => {
            panic!("{test}: containers did not exit within {bound:?}: {states:?}")
        }
        (Exit::EngineGone(e), _) => panic!("{test}: the engine stopped answering: {e}"),
    }
    // Exited means dockerd has closed the drivers; let the last messages land.
    let target = (mode != Mode::SyncAck).then_some(corpus.wire_records as u64);
    let events = settle(
        &fwd,
        target,
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    let metrics = fwd.metrics_text().unwrap_or_else(|e| panic!("{test}: {e}"));
    containers.remove_all();
    fwd.stop_ok();
    if let Some(panic) = engine.crash() {
        eprintln!(
            "\n!!!!!!!! [{test}] dockerd CRASHED during the run (Docker's bug, not the \
             forwarder's: the sync driver's stdout and stderr writers share one connection and \
             its ack reader):\n{panic}\n!!!!!!!!\n"
        );
        outcome = " (dockerd crashed)";
    }

    let stored = read_s3(&data);
    let t = tally(&ran, &stored);
    let dedup = metric_sum(
        &metrics,
        "nagare_input_resends_deduplicated_total",
        "in_docker",
    );
    let skipped = metric_sum(
        &metrics,
        "nagare_input_resent_events_skipped_total",
        "in_docker",
    );
    let health_dropped = metric_sum(
        &metrics,
        "nagare_filter_dropped_events_total",
        "drop_health_checks",
    );
    let health_total = ran
        .iter()
        .flat_map(|r| r.lines)
        .filter(|l| l.kind == Kind::Health)
        .count();
    let corpus_lines: usize = ran.iter().map(|r| r.lines.len()).sum();
    let never_sent = t.missing + health_total.saturating_sub(health_dropped as usize);
    eprintln!(
        "[{test}] {mode:?}: {} containers started, {corpus_lines} lines ({health_total} health checks), \
         containers done in {run_secs:.1} s{}; forwarder committed {events} events; stored \
         {} lines of {} expected (missing {}, duplicates {}, not corpus lines {}); health checks \
         dropped by the grep {health_dropped}; resends deduplicated {dedup} ({skipped} events); \
         lines the driver never sent {never_sent}",
        ran.len(),
        outcome,
        t.stored,
        t.expected,
        t.missing,
        t.duplicates,
        t.unknown,
    );
    assert_eq!(
        t.duplicates, 0,
        "{test}: lines stored more than once: {:#?}",
        t.problems
    );
    if mode == Mode::SyncAck {
        // What the driver did send must be sound: right tags, files and fields. A line
        // whose last pieces never came is flushed by concat as it is, so it can be no corpus
        // line: counted, not failed.
        // When dockerd crashed while starting a container, that container may have run and
        // logged without the test learning its id: its lines are not ours to judge.
        let crashed = outcome.contains("crashed");
        let bad: Vec<&String> = t
            .problems
            .iter()
            .filter(|p| !p.starts_with("missing from") && !p.starts_with("not a line of"))
            .filter(|p| !(crashed && p.starts_with("a line from an unknown container")))
            .collect();
        assert!(bad.is_empty(), "{test}: {bad:#?}");
        return;
    }
    assert!(
        t.problems.is_empty() && t.missing == 0 && t.unknown == 0 && t.stored == t.expected,
        "{test}: stored {} lines, expected {}: {:#?}",
        t.stored,
        t.expected,
        t.problems
    );
    assert_eq!(
        health_dropped as usize, health_total,
        "{test}: health checks dropped by the grep"
    );
    assert_eq!(dedup, 0, "{test}: no resends expected in this mode");
}

#[test]
fn corpus_no_ack_every_line_once() {
    corpus_run("corpus_no_ack_every_line_once", Mode::Defaults);
}

#[test]
fn corpus_async_ack_every_line_once() {
    corpus_run("corpus_async_ack_every_line_once", Mode::AsyncAck);
}

#[test]
fn corpus_sync_ack_no_line_twice() {
    corpus_run("corpus_sync_ack_no_line_twice", Mode::SyncAck);
}

// ---- tag templates -------------------------------------------------------------------------

/// `{{.Name}}` and `{{.ImageName}}` (and `{{.ID}}`) as Docker renders them, seen by the
/// forwarder: the example routes on `${tag[1]}`, here the container's name.
#[test]
fn tag_templates_name_and_image() {
    let test = "tag_templates_name_and_image";
    let Some(engine) = Engine::acquire(test) else {
        return;
    };
    let Some((corpus_path, manifest)) = corpus(test) else {
        return;
    };
    let corpus = load_corpus(&corpus_path, &manifest);
    // The corpus container with the most split lines, so rejoining is covered too.
    let c = corpus
        .containers
        .iter()
        .max_by_key(|c| c.lines.iter().filter(|l| l.log.len() > 16 * 1024).count())
        .expect("a container");
    let dir = TempDir::new(test);
    let lines_dir = dir.join("lines");
    std::fs::create_dir_all(&lines_dir).expect("lines dir");
    std::fs::write(lines_dir.join("c.out"), c.file("stdout")).expect("write lines");
    std::fs::write(lines_dir.join("c.err"), c.file("stderr")).expect("write lines");
    let data = dir.join("data");
    let mut fwd = Proc::start(
        Role::Forwarder,
        "forwarder",
        dir.path(),
        &forwarder_config(&data, 0),
    );
    let mut containers = Containers::new(&engine);
    let name = test_tag(test);
    let id = containers.run(&RunSpec {
        name: &name,
        port: fwd.port(),
        tag: "docker.{{.Name}}.{{.ImageName}}.{{.ID}}",
        log_opts: &[],
        lines_dir: Some(&lines_dir),
        script: "cat /lines/c.out & cat /lines/c.err >&2; wait",
    });
    match containers.wait_exited(EXACT_RUN) {
        Exit::Exited(codes) => assert_eq!(codes, vec![0], "{test}: exit code"),
        Exit::Running(st) => panic!("{test}: container did not exit: {st:?}"),
        Exit::EngineGone(e) => panic!("{test}: the engine stopped answering: {e}"),
    }
    let wire: usize = c
        .lines
        .iter()
        .map(|l| l.log.len().div_ceil(16 * 1024).max(1))
        .sum();
    settle(
        &fwd,
        Some(wire as u64),
        Duration::from_secs(3),
        Duration::from_secs(30),
    );
    containers.remove_all();
    fwd.stop_ok();
    let tag = format!("docker.{name}.{IMAGE}.{}", &id[..12]);
    let ran = [Ran {
        id,
        name: name.clone(),
        tag: tag.clone(),
        service_dir: name,
        lines: &c.lines,
    }];
    let stored = read_s3(&data);
    let t = tally(&ran, &stored);
    let tags: HashSet<&str> = stored.iter().map(|(_, l)| l.tag.as_str()).collect();
    eprintln!(
        "[{test}] tags seen: {tags:?}; stored {} of {} lines",
        t.stored, t.expected
    );
    assert!(
        t.problems.is_empty() && t.stored == t.expected && t.duplicates == 0 && t.unknown == 0,
        "{test}: expected tag {tag}.app/.audit under s3/{}/: {:#?}",
        ran[0].service_dir,
        t.problems
    );
}

// ---- the forwarder restarted ---------------------------------------------------------------

fn secs_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `line-N` -> N.
fn line_seq(l: &OutLine) -> Option<usize> {
    l.str_field("log")?.strip_prefix("line-")?.parse().ok()
}

/// SIGTERM, then a new forwarder on the same port, while a container logs with
/// `fluentd-async` + `fluentd-request-ack`: every line once; the lines dockerd read while no
/// forwarder listened arrive after the restart.
#[test]
fn forwarder_restart_async_ack() {
    let test = "forwarder_restart_async_ack";
    const N: usize = 3000;
    let Some(engine) = Engine::acquire(test) else {
        return;
    };
    let dir = TempDir::new(test);
    let data = dir.join("data");
    let mut fwd1 = Proc::start(
        Role::Forwarder,
        "forwarder1",
        dir.path(),
        &forwarder_config(&data, 0),
    );
    let port = fwd1.port();
    let mut containers = Containers::new(&engine);
    let name = test_tag(test);
    // About 2.5 ms a line: 3,000 lines take 7-10 s. Then it stays up so the driver's queue can
    // drain (the test removes it once every line is in).
    let script = format!(
        "i=0; while [ $i -lt {N} ]; do echo line-$i; i=$((i+1)); usleep 2000; done; sleep 120"
    );
    let id = containers.run(&RunSpec {
        name: &name,
        port,
        tag: "docker.restart.{{.ID}}",
        log_opts: &[
            "fluentd-async=true",
            "fluentd-request-ack=true",
            // EventTime: tells exactly when dockerd read each line.
            "fluentd-sub-second-precision=true",
        ],
        lines_dir: None,
        script: &script,
    });
    let t_start = Instant::now();
    wait_until(
        "the first forwarder to take in 300 lines",
        Duration::from_secs(60),
        || {
            let n = input_events(&fwd1);
            if n >= 300 {
                Ok(())
            } else {
                Err(format!("{n} events"))
            }
        },
    );
    let stop_at = SystemTime::now();
    fwd1.stop_ok();
    let down_at = SystemTime::now();
    let before: Vec<usize> = read_s3(&data)
        .iter()
        .filter_map(|(_, l)| line_seq(l))
        .collect();
    let before_set: HashSet<usize> = before.iter().copied().collect();
    assert_eq!(
        before.len(),
        before_set.len(),
        "{test}: duplicates before the restart"
    );
    std::thread::sleep(Duration::from_secs(2));
    let up_at = SystemTime::now();
    // The same port: the driver knows no other. Retry briefly if it is not free yet.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut fwd2 = loop {
        match Proc::try_start(
            Role::Forwarder,
            "forwarder2",
            dir.path(),
            &forwarder_config(&data, port),
        ) {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => {
                eprintln!(
                    "[{test}] restart on port {port} failed, retrying: {}",
                    short(&e)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{test}: cannot restart on port {port}: {e}"),
        }
    };
    let ready_at = SystemTime::now();
    assert_eq!(fwd2.port(), port);
    let t_up = Instant::now();
    let need = (N - before_set.len()) as u64;
    let got = settle(
        &fwd2,
        Some(need),
        Duration::from_secs(5),
        Duration::from_secs(120),
    );
    let catch_up = t_up.elapsed().as_secs_f64();
    let total_secs = t_start.elapsed().as_secs_f64();
    let metrics = fwd2.metrics_text().unwrap_or_default();
    containers.remove_all();
    fwd2.stop_ok();

    let stored = read_s3(&data);
    let mut count = vec![0u32; N];
    let mut strays = Vec::new();
    let mut held = 0usize;
    let mut held_early = Vec::new();
    let mut after_max_delay = 0f64;
    for (dir_name, l) in &stored {
        let Some(s) = line_seq(l).filter(|&s| s < N) else {
            strays.push(short(&format!("{:?}", l.record)));
            continue;
        };
        count[s] += 1;
        assert_eq!(dir_name, "restart", "{test}: stored under s3/{dir_name}/");
        assert_eq!(
            l.tag,
            format!("docker.restart.{}.app", &id[..12]),
            "{test}: tag"
        );
        let t = l.secs as f64 + l.nanos as f64 / 1e9;
        // Read by dockerd while no forwarder was listening: must be in the second part.
        if t > secs_f64(down_at) && t < secs_f64(up_at) {
            held += 1;
            if before_set.contains(&s) {
                held_early.push(s);
            }
        }
        if !before_set.contains(&s) {
            after_max_delay = f64::max(after_max_delay, secs_f64(ready_at) - t);
        }
    }
    let missing: Vec<usize> = (0..N).filter(|&s| count[s] == 0).collect();
    let dups: Vec<usize> = (0..N).filter(|&s| count[s] > 1).collect();
    let after = stored.len() - before.len();
    eprintln!(
        "[{test}] {N} lines; before the SIGTERM {} stored; forwarder down {:.2} s (SIGTERM to \
         exit {:.2} s, then 2 s, restart ready after {:.2} s); {held} lines read by dockerd \
         while down; after the restart {after} stored (the oldest read {after_max_delay:.1} s \
         before the new forwarder was ready), caught up {catch_up:.1} s after it was ready; \
         second forwarder committed {got}, resends deduplicated {}; missing {}, duplicates {}; \
         {total_secs:.1} s in all",
        before.len(),
        secs_f64(ready_at) - secs_f64(stop_at),
        secs_f64(down_at) - secs_f64(stop_at),
        secs_f64(ready_at) - secs_f64(up_at),
        metric_sum(
            &metrics,
            "nagare_input_resends_deduplicated_total",
            "in_docker"
        ),
        missing.len(),
        dups.len(),
    );
    assert!(
        strays.is_empty(),
        "{test}: lines that are not line-N: {strays:?}"
    );
    assert!(
        dups.is_empty(),
        "{test}: stored more than once: {:?}",
        &dups[..dups.len().min(20)]
    );
    assert!(
        missing.is_empty(),
        "{test}: {} lines never arrived, first {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        !before.is_empty() && after > 0,
        "{test}: lines on both sides of the restart"
    );
    assert!(
        held > 0,
        "{test}: no line was read by dockerd while the forwarder was down"
    );
    assert!(
        held_early.is_empty(),
        "{test}: lines read while down but stored before the restart: {held_early:?}"
    );
}

//! A moto endpoint for the AWS tests.
//!
//! `NAGARE_MOTO_ENDPOINT` (e.g. `http://127.0.0.1:5000`, as `.ci/run` may export) is used when
//! set. Otherwise the first call spawns moto from `.ci/venv` once per test binary, on a
//! 127.0.0.1 port it binds itself (port 0) and reports, through a small Python watchdog that
//! exits when the test process does (no server outlives its tests). When moto is missing,
//! [`moto`] returns `None` and the caller skips, except under `CI=true`, where it panics: a
//! missing component fails CI.
//!
//! Tests share one server: use unique bucket / log group names.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    child: Mutex<Option<Child>>,
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether this is a CI run (`CI=true` or `CI=1`, as `nagare_e2e::is_ci`): a missing
/// component (moto, faultproxy.py, the corpus) fails the test instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The venv's Python, when moto is installed there.
pub fn venv_python() -> Option<PathBuf> {
    let bin = workspace_root().join(".ci/venv/bin");
    (bin.join("moto_server").exists() && bin.join("python").exists()).then(|| bin.join("python"))
}

/// Waits until something accepts connections on `port`.
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

/// Python that runs `main` and exits when the parent (the test binary) is gone.
pub const WATCHDOG: &str = r#"import os, sys, threading, time
ppid = os.getppid()
def watch():
    while os.getppid() == ppid:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
"#;

/// The port a child spawned with a piped stdout prints on its first line (a server that bound
/// port 0); its later output is drained so it never meets a closed pipe.
fn reported_port(child: &mut Child, timeout: Duration) -> Option<u16> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line.trim().parse::<u16>().ok());
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    rx.recv_timeout(timeout).ok().flatten()
}

/// Python that serves moto as `moto_server` does, on a port the kernel picks (port 0), and
/// prints that port on its first line of output. A port picked by the test and bound later by
/// moto (whose imports take seconds) could be taken meanwhile by a server another test starts
/// in parallel, which `wait_for_port` would then happily find.
const MOTO_ON_PORT_0: &str = r#"from werkzeug.serving import make_server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
app.debug = True
srv = make_server('127.0.0.1', 0, app, threaded=True, request_handler=MotoRequestHandler)
os.environ['MOTO_PORT'] = str(srv.port)
print(srv.port, flush=True)
srv.serve_forever()
"#;

/// Spawns moto under the watchdog with `env` set before moto is imported; returns it once it
/// accepts connections, with its port.
pub fn spawn_moto(python: &Path, env: &[(&str, &str)]) -> Result<(Child, u16), String> {
    let mut code = String::new();
    for (k, v) in env {
        code.push_str(&format!("os.environ[{k:?}] = {v:?}\n"));
    }
    code.push_str(MOTO_ON_PORT_0);
    // NAGARE_TEST_VERBOSE=1 shows moto's own log.
    let quiet = std::env::var_os("NAGARE_TEST_VERBOSE").is_none();
    let mut cmd = Command::new(python);
    cmd.arg("-c")
        .arg(format!("{WATCHDOG}{code}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    if quiet {
        cmd.stderr(Stdio::null());
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn moto: {e}"))?;
    let port = match reported_port(&mut child, Duration::from_secs(60)) {
        Some(port) => port,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("moto did not report its port within 60 s".into());
        }
    };
    if !wait_for_port(port, Duration::from_secs(30)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "moto reported 127.0.0.1:{port} but does not accept there"
        ));
    }
    Ok((child, port))
}

/// The shared moto endpoint, or `None` (skip) when moto is not available outside CI.
pub fn moto() -> Option<&'static Moto> {
    static MOTO: OnceLock<Result<Option<Moto>, String>> = OnceLock::new();
    let m = MOTO.get_or_init(|| {
        if let Ok(ep) = std::env::var("NAGARE_MOTO_ENDPOINT") {
            let port = ep
                .rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .unwrap_or(0);
            return Ok(Some(Moto {
                endpoint: ep.trim_end_matches('/').to_string(),
                port,
                child: Mutex::new(None),
            }));
        }
        let Some(py) = venv_python() else {
            if ci() {
                return Err(
                    "CI=true but .ci/venv/bin/moto_server is missing (run .ci/install-deps.sh)"
                        .into(),
                );
            }
            eprintln!("SKIPPED: moto not installed (.ci/venv/bin/moto_server); set NAGARE_MOTO_ENDPOINT or run .ci/install-deps.sh");
            return Ok(None);
        };
        let (child, port) = spawn_moto(&py, &[])?;
        Ok(Some(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child: Mutex::new(Some(child)),
        }))
    });
    match m {
        Ok(m) => m.as_ref(),
        Err(e) => panic!("{e}"),
    }
}

/// A name unique to this test process and call (for buckets, groups).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// faultproxy.py in front of moto; stopped when dropped (and when the test process exits).
pub struct FaultProxy {
    pub endpoint: String,
    pub port: u16,
    child: Child,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FaultProxy {
    /// Starts `../shared/tools/faultproxy.py` (`NAGARE_FAULTPROXY` overrides the path).
    pub fn start(upstream_port: u16) -> Option<FaultProxy> {
        let script = std::env::var_os("NAGARE_FAULTPROXY")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("../shared/tools/faultproxy.py"));
        if !script.exists() {
            if ci() {
                panic!("CI=true but {} is missing", script.display());
            }
            eprintln!("SKIPPED: {} not found", script.display());
            return None;
        }
        let python = venv_python().unwrap_or_else(|| "python3".into());
        // The proxy binds port 0 itself and prints the port it got: a port picked here and
        // bound later could be taken meanwhile by a proxy another test starts in parallel
        // (which `wait_for_port` would then happily find). The listen backlog goes from
        // Python's default 5 to 128 so a burst of SDK connections is never refused.
        let code = format!(
            "import runpy, http.server\n\
             _bind = http.server.ThreadingHTTPServer.server_bind\n\
             def _report(self):\n    _bind(self)\n    print(self.server_address[1], flush=True)\n\
             http.server.ThreadingHTTPServer.server_bind = _report\n\
             http.server.ThreadingHTTPServer.request_queue_size = 128\n\
             sys.argv = [{s:?}, '0', '{upstream_port}']\n\
             runpy.run_path({s:?}, run_name='__main__')\n",
            s = script.display().to_string()
        );
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(format!("{WATCHDOG}{code}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faultproxy");
        let port = reported_port(&mut child, Duration::from_secs(15))
            .expect("faultproxy did not report its port");
        assert!(
            wait_for_port(port, Duration::from_secs(15)),
            "faultproxy did not start"
        );
        Some(FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            child,
        })
    }

    fn control(&self, method: &str, body: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "{method} /__fault__ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// Fails the next `count` requests matching `target` (faultproxy.py matches it against the
    /// X-Amz-Target header and the request line, e.g. `PUT /bucket/`) with `kind`.
    pub fn inject(&self, target: &str, count: u64, kind: &str) {
        self.control(
            "POST",
            &format!(r#"{{"match":"{target}","count":{count},"kind":"{kind}"}}"#),
        );
    }

    /// Clears every rule; returns the hit counters.
    pub fn clear(&self) -> serde_json::Value {
        let out = self.control("DELETE", "");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("{}");
        serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["hits"].clone()
    }

    pub fn hits(&self) -> serde_json::Value {
        let out = self.control("GET", "");
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("{}");
        serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["hits"].clone()
    }
}

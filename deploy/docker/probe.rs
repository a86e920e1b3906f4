//! `nagare-probe`: the container health check for images that have no shell, no curl and no
//! wget (`FROM scratch`). ECS and Docker run it in exec form:
//!
//! ```text
//! ["CMD", "/usr/local/bin/nagare-probe", "http://127.0.0.1:24220/health"]
//! ```
//!
//! It sends one `GET` over HTTP/1.0 and exits 0 when the status is 200, 1 otherwise (503,
//! connection refused, timeout, anything unexpected), printing the status line or the error
//! (Docker keeps the last outputs in `docker inspect`). Standard library only, no `unsafe`;
//! built with plain `rustc` in the image's build stage (no Cargo, no dependencies), so it does
//! not touch the workspace.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const DEFAULT_URL: &str = "http://127.0.0.1:24220/health";
const TIMEOUT: Duration = Duration::from_secs(3);

fn probe(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, got {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to nothing"))?;
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    s.take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status_line = text.lines().next().unwrap_or("").trim().to_string();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if code == "200" {
        Ok(status_line)
    } else if body.is_empty() {
        Err(status_line)
    } else {
        Err(format!("{status_line}: {}", body.replace('\n', "; ")))
    }
}

fn main() -> ExitCode {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    match probe(&url) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The HTTP admin endpoint: `/metrics` (Prometheus text), `/health` (200/503 for an NLB
//! target-group health check), `/api/plugins.json` (Fluentd monitor_agent's shape, for
//! existing dashboards), and `POST /api/config.reload`.
//!
//! Enabled by `<system> admin_port` (and `admin_bind`) or by a `<source> @type monitor_agent`
//! (`bind`, `port`, as in Fluentd). A deliberately small HTTP/1.1 server: one request per
//! connection, bounded request size and time.

use nagare_core::health::{self, Thresholds};
use nagare_core::metrics;
use nagare_core::shutdown::Shutdown;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time a client gets to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One plugin, as `/api/plugins.json` lists it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub id: String,
    /// `input`, `filter` or `output`.
    pub category: &'static str,
    pub type_name: String,
    pub config: Vec<(String, String)>,
}

/// What the admin server serves.
pub struct AdminState {
    pub plugins: Vec<PluginInfo>,
    pub thresholds: Thresholds,
    /// Asks the process to reload its configuration (SIGHUP does the same).
    pub reload: Option<tokio::sync::mpsc::Sender<()>>,
}

fn plugins_json(st: &AdminState) -> String {
    let list: Vec<serde_json::Value> = st
        .plugins
        .iter()
        .map(|p| {
            let l = [("plugin_id", p.id.as_str())];
            let config: serde_json::Map<String, serde_json::Value> = p
                .config
                .iter()
                .filter(|(k, _)| {
                    !k.contains("key") && !k.contains("password") && !k.contains("secret")
                })
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            let mut o = json!({
                "plugin_id": p.id,
                "plugin_category": p.category,
                "type": p.type_name,
                "config": config,
                "output_plugin": p.category == "output",
            });
            let m = o.as_object_mut().expect("object");
            match p.category {
                "input" => {
                    m.insert(
                        "emit_records".into(),
                        json!(
                            metrics::value("nagare_input_events_total", &l).unwrap_or(0.0) as u64
                        ),
                    );
                    m.insert(
                        "emit_count".into(),
                        json!(
                            metrics::value("nagare_input_messages_total", &l).unwrap_or(0.0) as u64
                        ),
                    );
                }
                "output" => {
                    let g = |n: &str| {
                        metrics::value(n, &l)
                            .map(|v| json!(v as u64))
                            .unwrap_or(json!(null))
                    };
                    m.insert(
                        "buffer_queue_length".into(),
                        g("nagare_buffer_queued_chunks"),
                    );
                    m.insert("buffer_total_queued_size".into(), g("nagare_buffer_bytes"));
                    m.insert("retry_count".into(), g("nagare_output_retries_total"));
                    m.insert(
                        "write_count".into(),
                        g("nagare_output_chunks_written_total"),
                    );
                    m.insert(
                        "emit_records".into(),
                        g("nagare_buffer_appended_records_total"),
                    );
                    m.insert(
                        "dropped_records".into(),
                        json!(metrics::sum("nagare_output_dropped_records_total", &l) as u64),
                    );
                }
                _ => {}
            }
            o
        })
        .collect();
    json!({ "plugins": list }).to_string()
}

fn response(status: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn handle(mut s: TcpStream, st: Arc<AdminState>) {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > MAX_REQUEST {
                return Some(());
            }
        }
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        return;
    }
    let head = String::from_utf8_lossy(&buf);
    let mut first = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let resp = match (method, path) {
        ("GET", "/metrics") => response(
            "200 OK",
            "text/plain; version=0.0.4",
            &metrics::render_prometheus(),
        ),
        ("GET", "/health") | ("GET", "/api/health") => match health::check(&st.thresholds) {
            Ok(()) => response("200 OK", "text/plain", "ok\n"),
            Err(reasons) => response(
                "503 Service Unavailable",
                "text/plain",
                &(reasons.join("\n") + "\n"),
            ),
        },
        ("GET", "/api/plugins.json") => response("200 OK", "application/json", &plugins_json(&st)),
        ("POST", "/api/config.reload") | ("GET", "/api/config.reload") => match &st.reload {
            Some(tx) if tx.try_send(()).is_ok() => {
                response("200 OK", "application/json", "{\"ok\":true}\n")
            }
            Some(_) => response(
                "503 Service Unavailable",
                "application/json",
                "{\"ok\":false,\"error\":\"reload already pending\"}\n",
            ),
            None => response(
                "501 Not Implemented",
                "application/json",
                "{\"ok\":false,\"error\":\"reload not available\"}\n",
            ),
        },
        _ => response("404 Not Found", "text/plain", "not found\n"),
    };
    let _ = s.write_all(&resp).await;
    let _ = s.shutdown().await;
}

/// Serves until `shutdown` fires.
pub async fn serve(listener: TcpListener, st: Arc<AdminState>, mut shutdown: Shutdown) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait() => return,
        };
        if let Ok((s, _)) = accepted {
            tokio::spawn(handle(s, st.clone()));
        }
    }
}

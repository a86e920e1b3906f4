//! The HTTP admin endpoint: `/metrics` (Prometheus text), `/health` (200/503 for an NLB
//! target-group health check), `/api/plugins.json` (Fluentd monitor_agent's shape, for
//! existing dashboards), and `POST /api/config.reload`.
//!
//! Enabled by `<system> admin_port` (and `admin_bind`) or by a `<source> @type monitor_agent`
//! (`bind`, `port`, as in Fluentd). A deliberately small HTTP/1.1 server: one request per
//! connection, bounded request size and time.
//!
//! The server outlives configuration reloads (see [`crate::reload`]): its listener and the
//! process-wide metrics registry stay; the plugin list and health thresholds are replaced
//! after each successful reload. `POST /api/config.reload` answers once the reload is done:
//! `200 {"ok":true,...}`, `422` (the new configuration is invalid; the old one keeps
//! running), `409` (nothing to re-read: the configuration came from stdin), `500` (the new
//! configuration could not be started; the old one was restored), `503` (a reload is already
//! pending), `501` (reload not wired, e.g. a pipeline started by a test).

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

/// Longest `POST /api/config.reload` waits for the reload's outcome before answering `202`
/// (the reload goes on; its result is logged and counted).
const RELOAD_REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the admin server serves.
pub struct AdminState {
    /// The running pipeline's plugins (replaced by a reload).
    pub plugins: std::sync::RwLock<Vec<PluginInfo>>,
    /// `/health` thresholds (replaced by a reload).
    pub thresholds: std::sync::RwLock<Thresholds>,
    /// Asks the process to reload its configuration (SIGHUP does the same); `None`: reload
    /// is not available (`501`).
    pub reload: Option<tokio::sync::mpsc::Sender<crate::reload::Request>>,
}

impl AdminState {
    pub fn new(
        plugins: Vec<PluginInfo>,
        thresholds: Thresholds,
        reload: Option<tokio::sync::mpsc::Sender<crate::reload::Request>>,
    ) -> Self {
        AdminState {
            plugins: std::sync::RwLock::new(plugins),
            thresholds: std::sync::RwLock::new(thresholds),
            reload,
        }
    }

    /// Installs a reloaded pipeline's plugin list and thresholds.
    pub fn update(&self, plugins: Vec<PluginInfo>, thresholds: Thresholds) {
        *self.plugins.write().unwrap_or_else(|e| e.into_inner()) = plugins;
        *self.thresholds.write().unwrap_or_else(|e| e.into_inner()) = thresholds;
    }
}

/// `%XX` and `+` decoding of one query-string component.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(s.get(i + 1..i + 3).unwrap_or(""), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filters of monitor_agent's query string that Nagare applies: `@id` (or `id`), `@type`
/// (or `type`), `with_config`. `tag` (outputs by match pattern) is refused, not ignored.
#[derive(Debug, Default, PartialEq)]
struct PluginQuery {
    id: Option<String>,
    type_name: Option<String>,
    with_config: bool,
}

fn plugin_query(query: &str) -> Result<PluginQuery, String> {
    let mut q = PluginQuery {
        with_config: true,
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (url_decode(k), url_decode(v));
        match k.as_str() {
            "@id" | "id" => q.id = q.id.or(Some(v)),
            "@type" | "type" => q.type_name = q.type_name.or(Some(v)),
            "with_config" => q.with_config = v != "false",
            "tag" => {
                return Err(
                    "?tag= (outputs by match pattern) is not supported; use ?@id= or ?@type="
                        .into(),
                )
            }
            _ => {} // with_retry, with_ivars, debug: Nagare has no such fields
        }
    }
    Ok(q)
}

fn plugins_json(st: &AdminState, q: &PluginQuery) -> String {
    let plugins = st.plugins.read().unwrap_or_else(|e| e.into_inner());
    let list: Vec<serde_json::Value> = plugins
        .iter()
        .filter(|p| q.id.as_ref().is_none_or(|id| *id == p.id))
        .filter(|p| q.type_name.as_ref().is_none_or(|t| *t == p.type_name))
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
            if !q.with_config {
                m.remove("config");
            }
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
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let resp = match (method, path) {
        ("GET", "/metrics") => response(
            "200 OK",
            "text/plain; version=0.0.4",
            &metrics::render_prometheus(),
        ),
        ("GET", "/health") | ("GET", "/api/health") => {
            match health::check(&st.thresholds.read().unwrap_or_else(|e| e.into_inner())) {
                Ok(()) => response("200 OK", "text/plain", "ok\n"),
                Err(reasons) => response(
                    "503 Service Unavailable",
                    "text/plain",
                    &(reasons.join("\n") + "\n"),
                ),
            }
        }
        ("GET", "/api/plugins.json") => match plugin_query(query) {
            Ok(q) => response("200 OK", "application/json", &plugins_json(&st, &q)),
            Err(e) => response("400 Bad Request", "text/plain", &(e + "\n")),
        },
        ("POST", "/api/config.reload") | ("GET", "/api/config.reload") => reload(&st).await,
        _ => response("404 Not Found", "text/plain", "not found\n"),
    };
    let _ = s.write_all(&resp).await;
    let _ = s.shutdown().await;
}

/// Asks for a reload and answers with its outcome.
async fn reload(st: &AdminState) -> Vec<u8> {
    use crate::reload::ReloadError;
    let j = "application/json";
    let Some(tx) = &st.reload else {
        return response(
            "501 Not Implemented",
            j,
            "{\"ok\":false,\"error\":\"reload not available\"}\n",
        );
    };
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let req = crate::reload::Request {
        reply: Some(reply),
        origin: "admin",
    };
    if tx.try_send(req).is_err() {
        return response(
            "503 Service Unavailable",
            j,
            "{\"ok\":false,\"error\":\"reload already pending\"}\n",
        );
    }
    match tokio::time::timeout(RELOAD_REPLY_TIMEOUT, outcome).await {
        Ok(Ok(Ok(report))) => response("200 OK", j, &(report.to_json().to_string() + "\n")),
        Ok(Ok(Err(e))) => {
            let status = match &e {
                ReloadError::Invalid(_) => "422 Unprocessable Entity",
                ReloadError::Refused(_) => "409 Conflict",
                ReloadError::Failed(_) => "500 Internal Server Error",
            };
            let body = json!({"ok": false, "result": e.kind(), "error": e.to_string()});
            response(status, j, &(body.to_string() + "\n"))
        }
        Ok(Err(_)) => response(
            "503 Service Unavailable",
            j,
            "{\"ok\":false,\"error\":\"the process is shutting down\"}\n",
        ),
        Err(_) => response(
            "202 Accepted",
            j,
            "{\"ok\":null,\"error\":\"reload still in progress; see the log and nagare_config_reloads_total\"}\n",
        ),
    }
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

//! The runtime: builds a pipeline from a configuration tree and runs it.
//!
//! ```text
//! <source> in_forward --emit--> Router(label) --filters--> first <match> --> OutputPlugin
//!                                                            buffered: append = commit point
//! ```
//!
//! Shutdown happens in three phases (timeline in docs/buffers.md): when the caller's signal
//! fires, inputs keep accepting for `<system> shutdown_accept_period` (5 s: app containers are
//! stopping and their last lines matter); then inputs stop (each connection finishes the batch
//! it is processing); then outputs get their own signal and drain within
//! `shutdown_drain_timeout` (20 s), so the whole shutdown fits ECS's 30 s stopTimeout. File
//! buffers keep what is left for the next start.

pub mod accessor;
pub mod admin;
pub mod buffer;
pub mod cli;
pub mod dryrun;
pub mod parse;
pub mod pattern;
pub mod placeholder;
pub mod plugin;
pub mod plugins;
pub mod router;

use nagare_config::{ConfigError, Section};
use nagare_core::shutdown::{self, Shutdown};
use nagare_core::EventSink;
use nagare_forward::server::{InForward, InForwardConfig, InForwardStats};
use pattern::Pattern;
use plugin::Tasks;
use router::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default time outputs get to flush after inputs stopped (`<system> shutdown_drain_timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default time inputs keep accepting after a shutdown signal (`<system>
/// shutdown_accept_period`, Nagare-only).
pub const DEFAULT_ACCEPT_PERIOD: Duration = Duration::from_secs(5);

/// State shared while building plugins.
pub struct BuildCtx {
    /// This host's name (`NAGARE_HOSTNAME` overrides it, for tests).
    pub hostname: String,
    /// `<system> shutdown_drain_timeout`.
    pub drain_timeout: Duration,
    /// `<system> shutdown_accept_period`.
    pub accept_period: Duration,
    /// `<system> root_dir`: file buffers without `path` go to `<root_dir>/buffer/<@id>`.
    pub root_dir: Option<std::path::PathBuf>,
    /// Counter for ids of plugins without `@id`.
    pub auto_ids: usize,
    /// Validate only: open no files, bind nothing.
    pub dry_run: bool,
    /// The label whose directives are being built (re-emitting plugins bind to it).
    pub current_label: Arc<router::LabelHandle>,
    /// Index of the `<match>` being built within its label.
    pub current_match: usize,
    /// Pattern of the `<match>` being built.
    pub current_pattern: Option<Pattern>,
    /// Handles of every label (created before any directive is built, so forward references
    /// such as `timeout_label @X` resolve).
    pub labels: HashMap<String, Arc<router::LabelHandle>>,
    /// Warnings for `--dry-run` (traps found while building).
    pub warnings: Vec<String>,
    /// Every plugin built, for `/api/plugins.json`.
    pub inventory: Vec<admin::PluginInfo>,
    /// Where the admin endpoint listens (`<system> admin_bind/admin_port` or a
    /// `<source> @type monitor_agent`).
    pub admin_addr: Option<(String, u16)>,
}

impl Default for BuildCtx {
    fn default() -> Self {
        BuildCtx {
            hostname: std::env::var("NAGARE_HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    hostname::get()
                        .ok()
                        .map(|h| h.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "localhost".into()),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            accept_period: DEFAULT_ACCEPT_PERIOD,
            root_dir: None,
            auto_ids: 0,
            dry_run: false,
            current_label: router::LabelHandle::new("ROOT"),
            current_match: 0,
            current_pattern: None,
            labels: HashMap::new(),
            warnings: Vec::new(),
            inventory: Vec::new(),
            admin_addr: None,
        }
    }
}

struct Source {
    cfg: InForwardConfig,
    sink: Arc<dyn EventSink>,
}

/// A built, not yet running pipeline.
pub struct Pipeline {
    sources: Vec<Source>,
    tasks: Tasks,
    routes: Vec<String>,
    warnings: Vec<String>,
    /// Keeps every label's router alive (handles hold weak references).
    routers: Vec<Arc<Router>>,
    inventory: Vec<admin::PluginInfo>,
    admin_addr: Option<(String, u16)>,
    health: nagare_core::health::Thresholds,
    accept_period: Duration,
}

/// An input's bound address, for `--ready-file` and tests.
#[derive(Debug, Clone)]
pub struct BoundInput {
    pub id: String,
    pub addr: SocketAddr,
    pub stats: InForwardStats,
}

/// A running pipeline.
pub struct Running {
    pub inputs: Vec<BoundInput>,
    /// The admin endpoint's address, when enabled.
    pub admin: Option<SocketAddr>,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Resolves once inputs stopped and outputs drained.
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

/// `<system>` parameters Nagare accepts from Fluentd configs and does not act on.
const SYSTEM_IGNORED: &[&str] = &[
    "log_level",
    "suppress_repeated_stacktrace",
    "emit_error_log_interval",
    "suppress_config_dump",
    "without_source",
    "process_name",
    "workers",
    "rpc_endpoint",
    "enable_get_dump",
    "log_event_verbose",
    "ignore_repeated_log_interval",
    "ignore_same_log_interval",
    "enable_msgpack_time_support",
    "file_permission",
    "dir_permission",
    "strict_config_value",
    "disable_shared_socket",
    "enable_input_metrics",
    "enable_size_metrics",
    "enable_jit",
];

impl Pipeline {
    /// Builds every plugin and route. Errors carry file:line:col.
    pub fn build(root: &Section) -> Result<Pipeline, ConfigError> {
        Self::build_with(root, BuildCtx::default())
    }

    /// Validates a configuration without opening files or binding ports.
    pub fn validate(root: &Section) -> Result<Pipeline, ConfigError> {
        Self::build_with(
            root,
            BuildCtx {
                dry_run: true,
                ..BuildCtx::default()
            },
        )
    }

    /// Builds with an explicit context.
    pub fn build_with(root: &Section, mut ctx: BuildCtx) -> Result<Pipeline, ConfigError> {
        let mut tasks = Tasks::default();
        let mut routes = Vec::new();
        let mut health = nagare_core::health::Thresholds::default();
        for sys in root.children_named("system") {
            let mut p = sys.params();
            ctx.drain_timeout = p.duration("shutdown_drain_timeout", ctx.drain_timeout)?;
            ctx.accept_period = p.duration("shutdown_accept_period", ctx.accept_period)?;
            if let Some(d) = p.str("root_dir")? {
                ctx.root_dir = Some(d.into());
            }
            if let Some(port) = p.opt_size("admin_port")? {
                let bind = p.str_or("admin_bind", "0.0.0.0")?;
                ctx.admin_addr = Some((bind, port as u16));
            } else {
                p.ignore("admin_bind");
            }
            health.max_failing = p.duration("health_max_failing", health.max_failing)?;
            health.max_buffer_ratio =
                p.float("health_max_buffer_ratio", health.max_buffer_ratio)?;
            for k in SYSTEM_IGNORED {
                p.ignore(k);
            }
            let _ = p.section("log")?;
            p.finish()?;
        }
        // Handles first, so plugins can refer to any label (forward references included).
        for l in root.children_named("label") {
            let name = l.arg.trim().to_string();
            if !name.starts_with('@') {
                return Err(ConfigError::new(
                    l.span.clone(),
                    format!("label name must start with '@', got '{name}'"),
                ));
            }
            if ctx.labels.contains_key(&name) {
                return Err(ConfigError::new(
                    l.span.clone(),
                    format!("label {name} is defined twice"),
                ));
            }
            ctx.labels
                .insert(name.clone(), router::LabelHandle::new(&name));
        }
        let error_label = ctx.labels.get("@ERROR").cloned();
        let mut routers = Vec::new();
        let mut labels: HashMap<String, Arc<Router>> = HashMap::new();
        for l in root.children_named("label") {
            let name = l.arg.trim().to_string();
            let handle = ctx.labels[&name].clone();
            let r = Arc::new(build_router(
                &name,
                &l.children,
                &mut ctx,
                &mut tasks,
                &mut routes,
                handle.clone(),
                error_label.clone(),
            )?);
            handle.bind(&r);
            routers.push(r.clone());
            labels.insert(name, r);
        }
        let top: Vec<Section> = root
            .children
            .iter()
            .filter(|c| c.name == "filter" || c.name == "match")
            .cloned()
            .collect();
        let root_handle = router::LabelHandle::new("ROOT");
        let root_router: Arc<Router> = Arc::new(build_router(
            "ROOT",
            &top,
            &mut ctx,
            &mut tasks,
            &mut routes,
            root_handle.clone(),
            error_label,
        )?);
        root_handle.bind(&root_router);
        routers.push(root_router.clone());
        let mut sources = Vec::new();
        for c in &root.children {
            match c.name.as_str() {
                "source" => {
                    let sink: Arc<dyn EventSink> = match c.param("@label") {
                        Some(l) => match labels.get(l.value.trim()) {
                            Some(r) => r.clone(),
                            None => return Err(ConfigError::new(l.span.clone(), format!("unknown label '{}'", l.value))),
                        },
                        None => root_router.clone(),
                    };
                    let ty = c.type_name().unwrap_or("");
                    match ty {
                        "forward" => sources.push(Source {
                            cfg: plugins::in_forward::parse(c, &mut ctx)?,
                            sink,
                        }),
                        "monitor_agent" => {
                            let mut p = c.params();
                            let bind = p.str_or("bind", "0.0.0.0")?;
                            let port: u16 = p.int("port", 24220)?;
                            p.ignore("tag");
                            p.ignore("emit_interval");
                            p.ignore("include_config");
                            p.ignore("include_retry");
                            p.finish()?;
                            ctx.admin_addr = Some((bind, port));
                        }
                        other => {
                            return Err(ConfigError::new(
                                c.span.clone(),
                                format!("unknown input @type '{other}' (available: forward, monitor_agent)"),
                            ))
                        }
                    }
                }
                "filter" | "match" | "label" | "system" => {}
                other => {
                    return Err(ConfigError::new(
                        c.span.clone(),
                        format!("unknown directive <{other}> (expected source, filter, match, label or system)"),
                    ))
                }
            }
        }
        dryrun::check(root, &mut ctx);
        Ok(Pipeline {
            sources,
            tasks,
            routes,
            warnings: ctx.warnings,
            routers,
            inventory: ctx.inventory,
            admin_addr: ctx.admin_addr,
            health,
            accept_period: ctx.accept_period,
        })
    }

    /// A human-readable routing table (for `--dry-run`).
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    /// Traps found while building (for `--dry-run`).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `<system> shutdown_accept_period`: how long the binary keeps inputs accepting after
    /// SIGTERM before it fires the `shutdown` given to [`Pipeline::start`].
    pub fn accept_period(&self) -> Duration {
        self.accept_period
    }

    /// Binds inputs, starts outputs and inputs. Inputs stop when `shutdown` fires (the
    /// binary fires it `shutdown_accept_period` after SIGTERM);
    /// `shutdown` fires; outputs drain after all inputs stopped.
    pub async fn start(self, shutdown: Shutdown) -> std::io::Result<Running> {
        let mut bound = Vec::new();
        let mut servers = Vec::new();
        for s in self.sources {
            let srv = InForward::bind(s.cfg.clone()).await?;
            if let Some(addr) = srv.local_addr() {
                tracing::info!(plugin_id = %s.cfg.id, %addr, "in_forward listening");
                bound.push(BoundInput {
                    id: s.cfg.id.clone(),
                    addr,
                    stats: srv.stats().clone(),
                });
            }
            servers.push((srv, s.sink));
        }
        let admin = match &self.admin_addr {
            Some((bind, port)) => {
                let l = tokio::net::TcpListener::bind((bind.as_str(), *port))
                    .await
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("admin endpoint cannot bind {bind}:{port}: {e}"),
                        )
                    })?;
                let addr = l.local_addr()?;
                tracing::info!(%addr, "admin endpoint listening (/metrics, /health, /api/plugins.json)");
                let st = Arc::new(admin::AdminState {
                    plugins: self.inventory.clone(),
                    thresholds: self.health,
                    reload: None,
                });
                // The admin endpoint stays up until the outputs drained (health checks keep
                // answering during shutdown).
                Some((l, st, addr))
            }
            None => None,
        };
        let (out_trigger, out_shutdown) = shutdown::channel();
        let admin_addr = admin.as_ref().map(|(_, _, a)| *a);
        let (admin_trigger, admin_shutdown) = shutdown::channel();
        if let Some((l, st, _)) = admin {
            tokio::spawn(admin::serve(l, st, admin_shutdown));
        }
        let mut outputs = tokio::task::JoinSet::new();
        for t in self.tasks.0 {
            outputs.spawn(t(out_shutdown.clone()));
        }
        let mut inputs = tokio::task::JoinSet::new();
        for (srv, sink) in servers {
            inputs.spawn(srv.run(sink, shutdown.clone()));
        }
        let routers = self.routers;
        let handle = tokio::spawn(async move {
            let _keep = routers;
            while inputs.join_next().await.is_some() {}
            tracing::info!("inputs stopped; draining outputs");
            out_trigger.fire();
            while outputs.join_next().await.is_some() {}
            tracing::info!("outputs drained");
            admin_trigger.fire();
        });
        Ok(Running {
            inputs: bound,
            admin: admin_addr,
            handle,
        })
    }
}

fn build_router(
    label: &str,
    sections: &[Section],
    ctx: &mut BuildCtx,
    tasks: &mut Tasks,
    routes: &mut Vec<String>,
    handle: Arc<router::LabelHandle>,
    error_label: Option<Arc<router::LabelHandle>>,
) -> Result<Router, ConfigError> {
    let mut r = Router::new(label);
    if label != "@ERROR" {
        r.error_label = error_label;
    }
    ctx.current_label = handle;
    for s in sections {
        let pat =
            Pattern::new(&s.arg).map_err(|e| ConfigError::new(s.span.clone(), e.to_string()))?;
        match s.name.as_str() {
            "match" => {
                ctx.current_match = r.matches.len();
                ctx.current_pattern = Some(pat.clone());
                let out = plugins::build_output(s, ctx, tasks)?;
                routes.push(format!(
                    "{label}: <match {}> -> @type {} ({})",
                    pat.as_str(),
                    s.type_name().unwrap_or("?"),
                    s.span
                ));
                r.matches.push((pat, out));
            }
            "filter" => {
                let f = plugins::build_filter(s, ctx, tasks)?;
                routes.push(format!(
                    "{label}: <filter {}> @type {} ({})",
                    pat.as_str(),
                    s.type_name().unwrap_or("?"),
                    s.span
                ));
                r.add_filter(pat, f);
            }
            other => {
                return Err(ConfigError::new(
                    s.span.clone(),
                    format!(
                        "unknown directive <{other}> inside {label} (expected filter or match)"
                    ),
                ))
            }
        }
    }
    ctx.current_pattern = None;
    Ok(r)
}

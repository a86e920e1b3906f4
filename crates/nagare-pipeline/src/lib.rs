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
//!
//! A running pipeline can be replaced by another one built from a new configuration without
//! closing its in_forward listeners or connections: see [`reload`] (SIGHUP, `POST
//! /api/config.reload`).

pub mod accessor;
pub mod admin;
pub mod buffer;
pub mod cli;
pub mod defaults;
pub mod dryrun;
pub mod malloc;
pub mod parse;
pub mod pattern;
pub mod placeholder;
pub mod plugin;
pub mod plugins;
pub mod reload;
pub mod router;

use nagare_config::{ConfigError, Section};
use nagare_core::shutdown::Shutdown;
use nagare_core::EventSink;
use nagare_forward::server::{InForwardConfig, InForwardStats};
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
    /// The source's `@label`, if any (a reload routes a removed input's last events there).
    label: Option<String>,
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
    /// The top-level router (`ROOT`).
    root_router: Arc<Router>,
    /// Every `<label>`'s router, by name.
    labels: HashMap<String, Arc<Router>>,
    inventory: Vec<admin::PluginInfo>,
    admin_addr: Option<(String, u16)>,
    health: nagare_core::health::Thresholds,
    accept_period: Duration,
    drain_timeout: Duration,
    /// The configuration this was built from (a failed reload rebuilds it).
    config: Section,
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
    /// The inputs bound at start (a reload may change them: see [`Running::current_inputs`]).
    pub inputs: Vec<BoundInput>,
    /// The admin endpoint's address, when enabled.
    pub admin: Option<SocketAddr>,
    handle: tokio::task::JoinHandle<()>,
    reload: reload::ReloadHandle,
}

impl Running {
    /// Resolves once inputs stopped and outputs drained.
    pub async fn wait(self) {
        let _ = self.finish().await;
    }

    /// As [`Running::wait`]; `Err` if the runtime task panicked, so the drain did not run to
    /// its end (the binaries then exit 1, not 0).
    pub async fn finish(self) -> Result<(), String> {
        self.handle.await.map_err(|e| e.to_string())
    }

    /// Replaces the running configuration by `root` (see [`reload`]): on error a pipeline
    /// keeps running (the old one, or the previous configuration rebuilt).
    pub async fn reload(&self, root: Section) -> reload::Outcome {
        self.reload.reload(root).await
    }

    /// A handle for reloads that outlives [`Running::wait`].
    pub fn reload_handle(&self) -> reload::ReloadHandle {
        self.reload.clone()
    }

    /// The inputs bound now (after reloads).
    pub fn current_inputs(&self) -> Vec<BoundInput> {
        self.reload.current_inputs()
    }

    /// The current `<system> shutdown_accept_period` (a reload may change it).
    pub fn accept_period(&self) -> Duration {
        self.reload.accept_period()
    }
}

/// Options of [`Pipeline::start_with`].
#[derive(Default)]
pub struct StartOptions {
    /// Where `POST /api/config.reload` sends its requests (the binary's reload loop); `None`
    /// answers `501`.
    pub reload_requests: Option<tokio::sync::mpsc::Sender<reload::Request>>,
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
                let port = u16::try_from(port).map_err(|_| {
                    ConfigError::new(
                        sys.span.clone(),
                        format!("admin_port {port} is not a TCP port (0-65535)"),
                    )
                })?;
                ctx.admin_addr = Some((bind, port));
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
                    let label = c.param("@label").map(|l| l.value.trim().to_string());
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
                            label,
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
            root_router,
            labels,
            inventory: ctx.inventory,
            admin_addr: ctx.admin_addr,
            health,
            accept_period: ctx.accept_period,
            drain_timeout: ctx.drain_timeout,
            config: root.clone(),
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
    /// binary fires it `shutdown_accept_period` after SIGTERM); outputs drain after all
    /// inputs stopped.
    pub async fn start(self, shutdown: Shutdown) -> std::io::Result<Running> {
        self.start_with(shutdown, StartOptions::default()).await
    }

    /// [`Pipeline::start`] with options (the binaries wire the admin endpoint's reload).
    pub async fn start_with(
        self,
        shutdown: Shutdown,
        opts: StartOptions,
    ) -> std::io::Result<Running> {
        reload::start(self, shutdown, opts).await
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

//! The command line shared by `nagare-forwarder` and `nagare-aggregator`.
//!
//! Signals: SIGTERM/SIGINT start the shutdown (accept period, then inputs stop, then outputs
//! drain; a second one exits at once). SIGHUP reloads the configuration file (see
//! [`crate::reload`]); so does `POST /api/config.reload` on the admin endpoint. A SIGHUP that
//! arrives while a reload is pending is merged into it (the pending one reads the file
//! anyway). After a successful reload the `--ready-file` is rewritten (inputs may change).

use crate::reload::ConfigSource;
use crate::Pipeline;
use clap::{Parser, Subcommand, ValueEnum};
use nagare_config::{parse_file, parse_str, parse_yaml_str, Section};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Which binary is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Forwarder,
    Aggregator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Forwarder => "nagare-forwarder",
            Role::Aggregator => "nagare-aggregator",
        }
    }
    /// The configuration used when no `-c` is given, rendered with this process's environment
    /// (see [`crate::defaults`]); an error names the environment variable to fix.
    pub fn default_config(self) -> Result<String, String> {
        crate::defaults::render_from_env(self)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Parser)]
#[command(version, about = "A Fluentd-compatible log forwarder and aggregator")]
struct Args {
    /// Configuration file: classic Fluentd syntax, or Fluentd YAML for .yaml/.yml; `-` reads
    /// classic syntax from stdin. Without it the role's built-in default is used.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Load and validate the configuration, print the routing, and exit.
    #[arg(long)]
    dry_run: bool,
    /// Print the built-in default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log level (error, warn, info, debug, trace; Fluentd's fatal and warning too) or a
    /// tracing filter with `=` (`info,nagare_buffer=debug`).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log format; JSON by default when stderr is not a terminal.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// After binding, write `{"pid":..,"inputs":[{"id":..,"addr":..}]}` to this file (tests
    /// and supervisors use it to find ports chosen with `port 0`).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tools for a file buffer's directory: list chunks, inspect quarantined ones frame by
    /// frame, reinject their valid frames (see docs/buffers.md).
    Buffer {
        #[command(subcommand)]
        action: BufferAction,
    },
}

#[derive(Debug, Subcommand)]
enum BufferAction {
    /// List the chunk files of a buffer directory: live, incoming and quarantined.
    List {
        /// The buffer's `path`.
        #[arg(long)]
        path: PathBuf,
        /// Check every chunk's frames (quarantined ones are always checked).
        #[arg(long)]
        verify: bool,
    },
    /// Show a chunk's header and frames (checking every checksum) and its first records.
    Inspect {
        /// The buffer's `path`.
        #[arg(long)]
        path: PathBuf,
        /// A file path, a chunk file name, or a prefix of the chunk id.
        chunk: String,
        /// Records to print as JSON lines.
        #[arg(long, default_value_t = 5)]
        records: usize,
    },
    /// Write the valid frames of quarantined chunks back into the buffer (through
    /// `incoming/`: a running process adopts them within 5 s, a stopped one at its next start).
    Reinject {
        /// The buffer's `path`.
        #[arg(long)]
        path: PathBuf,
        /// Chunks (file paths, names or id prefixes); with `--all`, every quarantined chunk.
        chunks: Vec<String>,
        /// Every chunk under `quarantine/` (except `torn_tail` fragments and already reinjected ones).
        #[arg(long)]
        all: bool,
        /// Tag for the reinjected events (default: the chunk's own tag).
        #[arg(long)]
        tag: Option<String>,
    },
}

fn load(path: Option<&Path>, role: Role) -> Result<Section, String> {
    match path {
        None => parse_str(&role.default_config()?, Path::new("<built-in default>"))
            .map_err(|e| e.to_string()),
        Some(p) if p == Path::new("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| e.to_string())?;
            parse_str(&s, Path::new("<stdin>")).map_err(|e| e.to_string())
        }
        Some(p) => parse_file(p).map_err(|e| e.to_string()),
    }
}

/// Parses the YAML form of a configuration (used by tests comparing the two syntaxes).
pub fn load_yaml(text: &str, file: &Path) -> Result<Section, String> {
    parse_yaml_str(text, file).map_err(|e| e.to_string())
}

/// The filter for `--log-level`: a level name (Fluentd's `fatal` and `warning` mapped to
/// `error` and `warn`), `off`, or a tracing filter with a `target=level` directive. A bare
/// word tracing would read as a target name (`fatal`, a typo) would silently turn every log
/// line off: refused.
fn log_filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let l = level.trim().to_ascii_lowercase();
    let spec = match l.as_str() {
        "fatal" => "error",
        "warning" => "warn",
        "error" | "warn" | "info" | "debug" | "trace" | "off" => l.as_str(),
        _ if l.contains('=') => level.trim(),
        _ => {
            return Err(format!(
                "--log-level {level}: expected error, warn, info, debug, trace (or fatal, \
                 warning, off), or a filter like info,nagare_buffer=debug"
            ))
        }
    };
    tracing_subscriber::EnvFilter::try_new(spec).map_err(|e| format!("--log-level {level}: {e}"))
}

fn init_tracing(args: &Args, filter: tracing_subscriber::EnvFilter) {
    let json = match args.log_format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// Runs a role's binary; returns the process exit code.
/// The command line, with the binary's own name (`--version` printed the library's).
fn parse_args(role: Role) -> Args {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Args::command().name(role.name()).get_matches();
    Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

pub fn main(role: Role) -> ExitCode {
    // Before anything else, while this is the only thread (it may execute the process again).
    crate::malloc::cap_arenas();
    let args = parse_args(role);
    if let Some(Command::Buffer { action }) = args.command {
        return buffer_tool(action);
    }
    if args.print_default_config {
        return match role.default_config() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", role.name());
                ExitCode::from(2)
            }
        };
    }
    let filter = match log_filter(&args.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", role.name());
            return ExitCode::from(2);
        }
    };
    init_tracing(&args, filter);
    let root = match load(args.config.as_deref(), role) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: configuration error: {e}", role.name());
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", role.name());
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let built = if args.dry_run {
            Pipeline::validate(&root)
        } else {
            Pipeline::build(&root)
        };
        let pipeline = match built {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{}: configuration error: {e}", role.name());
                return ExitCode::from(2);
            }
        };
        if !args.dry_run {
            // The traps `--dry-run` prints, in the log of a normal start too.
            for w in pipeline.warnings() {
                tracing::warn!("configuration: {w}");
            }
        }
        if args.dry_run {
            println!("configuration OK; routes:");
            for r in pipeline.routes() {
                println!("  {r}");
            }
            for w in pipeline.warnings() {
                println!("warning: {w}");
            }
            return ExitCode::SUCCESS;
        }
        let (trigger, shutdown) = nagare_core::shutdown::channel();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        // Installed before the ready file exists, so a SIGHUP sent once it does never hits the
        // default action (terminate).
        #[cfg(unix)]
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let running = match pipeline
            .start_with(
                shutdown,
                crate::StartOptions {
                    reload_requests: Some(reload_tx.clone()),
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", role.name());
                return ExitCode::FAILURE;
            }
        };
        let admin = running.admin;
        if let Some(path) = &args.ready_file {
            write_ready(role, path, &running.inputs, admin);
        }
        let source = match args.config.as_deref() {
            None => ConfigSource::BuiltIn(role.default_config().unwrap_or_default()),
            Some(p) if p == Path::new("-") => ConfigSource::Stdin,
            Some(p) => ConfigSource::File(p.to_path_buf()),
        };
        let ready_file = args.ready_file.clone();
        tokio::spawn(crate::reload::serve_requests(
            running.reload_handle(),
            source,
            reload_rx,
            move |report| {
                if let Some(path) = &ready_file {
                    write_ready(role, path, &report.inputs, admin);
                }
            },
        ));
        #[cfg(unix)]
        match hup {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let req = crate::reload::Request {
                            reply: None,
                            origin: "SIGHUP",
                        };
                        if reload_tx.try_send(req).is_err() {
                            tracing::info!("SIGHUP: a reload is already pending; merged into it");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; configuration reload only through POST /api/config.reload");
            }
        }
        #[cfg(not(unix))]
        drop(reload_tx);
        let reload_handle = running.reload_handle();
        tracing::info!(
            role = role.name(),
            version = env!("CARGO_PKG_VERSION"),
            "started"
        );
        tokio::spawn(async move {
            wait_for_signal().await;
            let accept_period = reload_handle.accept_period();
            tracing::info!(
                accept_period_ms = accept_period.as_millis() as u64,
                "shutdown requested: inputs keep accepting for shutdown_accept_period, then stop; then outputs drain within shutdown_drain_timeout (a second signal exits at once)"
            );
            tokio::select! {
                _ = tokio::time::sleep(accept_period) => {}
                _ = wait_for_signal() => {
                    tracing::warn!("second signal: exiting at once");
                    std::process::exit(130);
                }
            }
            tracing::info!("accept period over: stopping inputs");
            trigger.fire();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
        if let Err(e) = running.finish().await {
            tracing::error!(error = %e, "the pipeline's runtime failed; buffers may not have been drained");
            return ExitCode::FAILURE;
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Writes `{"pid", "inputs", "admin"}` to `path` atomically (temp file + rename).
fn write_ready(
    role: Role,
    path: &Path,
    inputs: &[crate::BoundInput],
    admin: Option<std::net::SocketAddr>,
) {
    let inputs: Vec<serde_json::Value> = inputs
        .iter()
        .map(|i| serde_json::json!({"id": i.id, "addr": i.addr.to_string()}))
        .collect();
    let admin = admin.map(|a| a.to_string());
    let doc = serde_json::json!({"pid": std::process::id(), "inputs": inputs, "admin": admin});
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, doc.to_string())
        .and_then(|_| std::fs::rename(&tmp, path))
        .is_err()
    {
        eprintln!(
            "{}: cannot write ready file {}",
            role.name(),
            path.display()
        );
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

// ---- `buffer` subcommand ----------------------------------------------------------------------

fn buffer_tool(action: BufferAction) -> ExitCode {
    match run_buffer_tool(action, &mut std::io::stdout().lock()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("buffer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn describe_key(h: &nagare_buffer::file::format::Header) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &h.key.tag {
        parts.push(format!("tag={t}"));
    }
    if let Some(tk) = h.key.timekey {
        parts.push(format!("timekey={tk}"));
    }
    for (k, v) in &h.key.vars {
        parts.push(format!("{k}={}", String::from_utf8_lossy(v)));
    }
    if parts.is_empty() {
        "(no chunk keys)".into()
    } else {
        parts.join(" ")
    }
}

/// Runs a `buffer` action, writing its report to `out` (tests call it directly).
pub fn run_buffer_tool_for_test(
    args: &[&str],
    out: &mut impl std::io::Write,
) -> Result<ExitCode, String> {
    let mut full = vec!["nagare", "buffer"];
    full.extend_from_slice(args);
    let parsed = Args::try_parse_from(full).map_err(|e| e.to_string())?;
    match parsed.command {
        Some(Command::Buffer { action }) => run_buffer_tool(action, out),
        None => Err("not a buffer command".into()),
    }
}

fn run_buffer_tool(
    action: BufferAction,
    out: &mut impl std::io::Write,
) -> Result<ExitCode, String> {
    use nagare_buffer::file::tools;
    let w =
        |out: &mut dyn std::io::Write, s: String| writeln!(out, "{s}").map_err(|e| e.to_string());
    match action {
        BufferAction::List { path, verify } => {
            let entries = tools::list(&path).map_err(|e| e.to_string())?;
            if entries.is_empty() {
                w(out, format!("{}: no chunk files", path.display()))?;
            }
            for e in entries {
                let (id, records) = match &e.name {
                    Some(n) => (
                        n.id.hex(),
                        match n.state {
                            nagare_buffer::file::store::FileState::Queued { records, .. } => {
                                records.to_string()
                            }
                            _ => "?".into(),
                        },
                    ),
                    None => ("-".into(), "?".into()),
                };
                let mut line = format!(
                    "{:<28} {id:<32} records={records:<8} bytes={:<10} {}",
                    e.location,
                    e.file_len,
                    e.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
                if (verify || e.location.starts_with("quarantine/"))
                    && !e.location.ends_with("torn_tail")
                {
                    match tools::inspect(&e.path) {
                        Ok((r, _)) => line.push_str(&format!(
                            "  [{} good records, {} bad frames{}]",
                            r.good_records(),
                            r.bad_frames(),
                            if r.header_error.is_some() {
                                ", bad header"
                            } else {
                                ""
                            }
                        )),
                        Err(err) => line.push_str(&format!("  [unreadable: {err}]")),
                    }
                }
                w(out, line)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BufferAction::Inspect {
            path,
            chunk,
            records,
        } => {
            let found = tools::find(&path, &chunk).map_err(|e| e.to_string())?;
            let file = match found.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(format!(
                        "no chunk matches '{chunk}' under {}",
                        path.display()
                    ))
                }
                many => {
                    return Err(format!(
                        "'{chunk}' matches {} chunks; give more of the id",
                        many.len()
                    ))
                }
            };
            let (r, good) = tools::inspect(&file).map_err(|e| e.to_string())?;
            w(
                out,
                format!("file: {}  ({} bytes)", file.display(), r.file_len),
            )?;
            match (&r.header, &r.header_error) {
                (Some(h), _) => w(
                    out,
                    format!(
                        "header: id={} tag={} created_ms={} compress={} key: {}",
                        h.id.hex(),
                        h.tag,
                        h.created_ms,
                        if h.gzip { "gzip" } else { "text" },
                        describe_key(h)
                    ),
                )?,
                (None, Some(e)) => w(out, format!("header: DAMAGED ({e})"))?,
                (None, None) => {}
            }
            for f in &r.frames {
                w(
                    out,
                    format!(
                        "frame @{:<10} len={:<10} records={:<8} {:?}",
                        f.offset, f.len, f.records, f.status
                    ),
                )?;
            }
            w(
                out,
                format!(
                    "good records: {}, bad frames: {} (declaring {} records)",
                    r.good_records(),
                    r.bad_frames(),
                    r.bad_records()
                ),
            )?;
            let mut stats = nagare_core::json::JsonStats::default();
            for e in nagare_buffer::entries::Entries::new(bytes::Bytes::from(good)).take(records) {
                match e {
                    Ok(ev) => {
                        let mut line = Vec::new();
                        nagare_core::json::write_record(
                            &mut line,
                            ev.record.as_bytes(),
                            &mut stats,
                        );
                        w(
                            out,
                            format!("{:?}\t{}", ev.time, String::from_utf8_lossy(&line)),
                        )?;
                    }
                    Err(e) => {
                        w(out, format!("(entries stop: {e})"))?;
                        break;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BufferAction::Reinject {
            path,
            chunks,
            all,
            tag,
        } => {
            let mut files = Vec::new();
            if all {
                for e in tools::list(&path).map_err(|e| e.to_string())? {
                    if e.location.starts_with("quarantine/")
                        && e.location != "quarantine/torn_tail"
                        && e.location != "quarantine/reinjected"
                    {
                        files.push(e.path);
                    }
                }
            }
            for c in &chunks {
                let found = tools::find(&path, c).map_err(|e| e.to_string())?;
                match found.as_slice() {
                    [one] => files.push(one.clone()),
                    [] => return Err(format!("no chunk matches '{c}'")),
                    _ => return Err(format!("'{c}' matches several chunks; give more of the id")),
                }
            }
            if files.is_empty() {
                w(out, "nothing to reinject".into())?;
                return Ok(ExitCode::SUCCESS);
            }
            let quarantine = path.join(nagare_buffer::file::store::QUARANTINE_DIR);
            let mut failed = false;
            for f in files {
                if !f.starts_with(&quarantine) {
                    w(out, format!("{}: not a quarantined chunk (live chunks are written by the running buffer); skipped", f.display()))?;
                    failed = true;
                    continue;
                }
                match tools::reinject(&path, &f, tag.as_deref()) {
                    Ok(r) => w(out, format!(
                        "reinjected {} records from {} as chunk {} ({} bad frames declaring {} records left out); original moved to {}",
                        r.records, f.display(), r.new_id.hex(), r.bad_frames, r.bad_records, r.original_moved_to.display()
                    ))?,
                    Err(e) => {
                        w(out, format!("{}: {e}", f.display()))?;
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn log_levels_are_names_or_filters_never_silent_typos() {
        for ok in [
            "info",
            "WARN",
            "warning",
            "fatal",
            "off",
            "trace",
            "info,nagare_buffer=debug",
        ] {
            assert!(log_filter(ok).is_ok(), "{ok}");
        }
        // Read as a target name, these would turn every log line off.
        for bad in ["infoo", "verbose", "info,nagare_buffer"] {
            let e = log_filter(bad).unwrap_err();
            assert!(e.contains("--log-level") && e.contains(bad), "{e}");
        }
        assert_eq!(log_filter("fatal").unwrap().to_string(), "error");
        assert_eq!(log_filter("warning").unwrap().to_string(), "warn");
    }
}

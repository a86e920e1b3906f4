//! The command line shared by `nagare-forwarder` and `nagare-aggregator`.

use crate::Pipeline;
use clap::{Parser, ValueEnum};
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
    /// The configuration used when no `-c` is given.
    pub fn default_config(self) -> &'static str {
        match self {
            Role::Forwarder => include_str!("../defaults/forwarder.conf"),
            Role::Aggregator => include_str!("../defaults/aggregator.conf"),
        }
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
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log format; JSON by default when stderr is not a terminal.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// After binding, write `{"pid":..,"inputs":[{"id":..,"addr":..}]}` to this file (tests
    /// and supervisors use it to find ports chosen with `port 0`).
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn load(path: Option<&Path>, role: Role) -> Result<Section, String> {
    match path {
        None => parse_str(role.default_config(), Path::new("<built-in default>"))
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

fn init_tracing(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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
pub fn main(role: Role) -> ExitCode {
    let args = Args::parse();
    if args.print_default_config {
        print!("{}", role.default_config());
        return ExitCode::SUCCESS;
    }
    init_tracing(&args);
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
        let running = match pipeline.start(shutdown).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", role.name());
                return ExitCode::FAILURE;
            }
        };
        if let Some(path) = &args.ready_file {
            let inputs: Vec<serde_json::Value> = running
                .inputs
                .iter()
                .map(|i| serde_json::json!({"id": i.id, "addr": i.addr.to_string()}))
                .collect();
            let doc = serde_json::json!({"pid": std::process::id(), "inputs": inputs});
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
        tracing::info!(
            role = role.name(),
            version = env!("CARGO_PKG_VERSION"),
            "started"
        );
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested: stopping inputs, then draining outputs");
            trigger.fire();
            wait_for_signal().await;
            tracing::warn!("second signal: exiting at once");
            std::process::exit(130);
        });
        running.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
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

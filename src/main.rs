//! `outpost`: CLI entry point. Parses flags, loads the layered config, sets up logging and runs the
//! server until SIGINT/SIGTERM.

#![allow(clippy::print_stdout)] // a CLI prints its answers

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use outpost::config::{Config, FlagOverrides, LogFormat, RawConfig};
use outpost::server;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's built-in options (`malloc_conf`; `_RJEM_MALLOC_CONF` in the environment still
/// overrides them): a background thread purges freed pages, dirty pages go back to the OS after
/// about three seconds and are not kept as "muzzy". Without this, the memory a checkpoint's block
/// writing or a large query frees stays in the process' RSS for ten seconds or more (measured
/// at 100k series: 147–211 MiB right after ingest with the defaults, 88 MiB with purging). Three
/// seconds rather than one: under span ingest the traces head (128 MiB) is flushed and freed about
/// every second, and with a one-second decay its pages were handed back and faulted in again for
/// the next head (`madvise`, TLB shootdowns, page faults: 12 % more CPU per span); remote-write
/// CPU and RSS measured the same with both, the logs benchmark's peak RSS about 25 MiB higher.
#[cfg(feature = "jemalloc")]
// SAFETY: a NUL-terminated, immutable byte string under the symbol jemalloc reads its options
// from (tikv-jemalloc-sys prefixes jemalloc's symbols with `_rjem_`); `&[u8; N]` is one pointer,
// the layout of the `const char *` jemalloc declares.
#[allow(unsafe_code, non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] = b"background_thread:true,dirty_decay_ms:3000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "outpost",
    version,
    about = "One binary observability box: OTLP in; Prometheus, Loki, Tempo and Pyroscope APIs out"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "OUTPOST_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Folder for all stores [default: ./outpost-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Main HTTP listener [default: 127.0.0.1:7070].
    #[arg(long, global = true)]
    listen: Option<String>,
    /// OTLP/gRPC listener; "" disables [default: 127.0.0.1:4317].
    #[arg(long, global = true)]
    otlp_grpc_listen: Option<String>,
    /// OTLP/HTTP listener; "" disables [default: 127.0.0.1:4318].
    #[arg(long, global = true)]
    otlp_http_listen: Option<String>,
    /// Log format [default: human].
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Validate a config file (with the environment and flags layered on top) and exit.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Version) => {
            println!("outpost {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some(Command::CheckConfig { file }) => check_config(&file, &cli.serve),
        Some(Command::Serve) | None => serve(&cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outpost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(file: Option<&std::path::Path>, args: &ServeArgs) -> anyhow::Result<Config> {
    let flags = FlagOverrides {
        data_dir: args.data_dir.clone(),
        listen: args.listen.clone(),
        otlp_grpc_listen: args.otlp_grpc_listen.clone(),
        otlp_http_listen: args.otlp_http_listen.clone(),
        log_format: args.log_format,
    };
    Ok(RawConfig::load(file, std::env::vars(), &flags)?.resolve()?)
}

fn check_config(file: &std::path::Path, args: &ServeArgs) -> anyhow::Result<()> {
    let c = load(Some(file), args)?;
    println!(
        "{}: ok (data_dir {}, listen {}, otlp_grpc_listen {}, otlp_http_listen {})",
        file.display(),
        c.data_dir.display(),
        c.listen,
        c.otlp_grpc_listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        c.otlp_http_listen.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
    );
    Ok(())
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = load(args.config.as_deref(), args)?;
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("outpost").build()?;
    rt.block_on(async move {
        let listeners = server::Listeners::bind(&config).await?;
        let running = server::start(config, listeners).await?;
        let stop = running.stop_token();
        tokio::spawn(async move {
            wait_for_signal().await;
            stop.cancel();
        });
        running.run_until_stopped().await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "Signal received"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "Signal received"),
    }
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("OUTPOST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.log_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let r = match config.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = r {
        eprintln!("outpost: logging setup failed: {e}");
    }
}

//! `ingest_bench`: OTLP ingest throughput of the real `outpost` binary, next to a decode-only
//! sink measured the same way on the same machine. See `benches/README.md`.
//!
//! For each (target ∈ {outpost, sink}, signal, transport) it starts a fresh server as a child
//! process (fresh data folder), lets `--clients` senders, each on its own connection, send
//! pre-generated export requests as fast as it answers for `--warmup` + `--seconds`, and reports
//! the requests and items acknowledged in the measured window, items/s, MB/s (uncompressed
//! protobuf request bytes), and the server's CPU seconds (utime + stime from `/proc/<pid>/stat`)
//! per million items. Any failed request or partial rejection aborts the benchmark.

#![allow(clippy::print_stdout, reason = "the report is the program's output")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use benches::child::{Addrs, Fsync, ServerProcess, TempDir, find_outpost, outpost_version};
use benches::otlp_load::{ExportRequest, Load, Signal};
use benches::procfs::{self, Machine};
use benches::report::{command_line, fmt_int, utc_now};
use benches::sink::{self, SinkArgs};
use clap::{Parser, Subcommand, ValueEnum};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug)]
#[command(name = "ingest_bench", about = "OTLP ingest benchmark: Outpost next to a decode-only sink")]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the decode-and-drop OTLP receiver (the benchmark starts it itself).
    Sink(SinkArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct BenchArgs {
    /// The `outpost` binary (built with `cargo build --release --workspace`). When the default is
    /// missing, the `outpost` next to this harness' own executable is used.
    #[arg(long, default_value = "target/release/outpost")]
    outpost: PathBuf,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before measuring (connections, series creation, allocator warm-up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent senders, each on its own connection.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Also run every transport with gzip-compressed requests.
    #[arg(long)]
    gzip: bool,
    /// Signals to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [SignalArg::Metrics, SignalArg::Logs, SignalArg::Traces])]
    signals: Vec<SignalArg>,
    /// Transports to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Proto::Grpc, Proto::Http])]
    transports: Vec<Proto>,
    /// Servers to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Outpost, Target::Sink])]
    targets: Vec<Target>,
    /// Distinct pre-generated requests per signal.
    #[arg(long, default_value_t = 40)]
    distinct_requests: usize,
    /// Outpost's WAL fsync policy (`OUTPOST_WAL__FSYNC`).
    #[arg(long, value_enum, default_value_t = Fsync::Batch)]
    fsync: Fsync,
    /// Parent folder of the servers' fresh data folders (the system temp folder by default).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SignalArg {
    Metrics,
    Logs,
    Traces,
}

impl SignalArg {
    fn signal(self) -> Signal {
        match self {
            SignalArg::Metrics => Signal::Metrics,
            SignalArg::Logs => Signal::Logs,
            SignalArg::Traces => Signal::Traces,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    Grpc,
    Http,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Outpost,
    Sink,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Outpost => "outpost",
            Target::Sink => "sink",
        }
    }
}

/// A transport with or without gzip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Transport {
    proto: Proto,
    gzip: bool,
}

impl Transport {
    fn label(self) -> &'static str {
        match (self.proto, self.gzip) {
            (Proto::Grpc, false) => "grpc",
            (Proto::Grpc, true) => "grpc+gzip",
            (Proto::Http, false) => "http",
            (Proto::Http, true) => "http+gzip",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Sink(args)) => run_sink(args),
        None => bench(cli.bench),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ingest_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_sink(args: SinkArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sink").build()?;
    rt.block_on(sink::run(args))
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

/// One measured run.
struct RunResult {
    target: Target,
    signal: Signal,
    transport: Transport,
    /// Requests and items acknowledged within the measured window, and their protobuf bytes.
    requests: u64,
    items: u64,
    bytes: u64,
    /// Length of the measured window (between the two CPU readings).
    window: Duration,
    server_cpu_s: f64,
    client_cpu_s: f64,
    /// CPU seconds used by everything else on the machine during the window (noise).
    other_cpu_s: f64,
    peak_rss_kib: Option<u64>,
    /// Items acknowledged over the whole run, warm-up included.
    items_total: u64,
    /// Client-side request latency over the window, ms.
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    /// `partial_success` messages with nothing rejected (count, first one).
    partial_messages: (u64, Option<String>),
    /// Outpost's own `/metrics` after the run.
    stats: Option<ServerStats>,
    /// WARN/ERROR lines the server logged (count, first few).
    problems: (u64, Vec<String>),
}

impl RunResult {
    fn items_per_s(&self) -> f64 {
        self.items as f64 / self.window.as_secs_f64()
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.window.as_secs_f64()
    }

    fn cpu_per_million(&self) -> f64 {
        if self.items == 0 { f64::NAN } else { self.server_cpu_s / (self.items as f64 / 1e6) }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if args.clients == 0 || args.seconds <= 0.0 || args.warmup < 0.0 {
        bail!("--clients must be at least 1, --seconds positive and --warmup not negative");
    }
    let outpost = if args.targets.contains(&Target::Outpost) { Some(find_outpost(&args.outpost)?) } else { None };
    let tmp_root = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine = Machine::current();
    let mut transports = Vec::new();
    for gzip in if args.gzip { vec![false, true] } else { vec![false] } {
        for &proto in &args.transports {
            transports.push(Transport { proto, gzip });
        }
    }

    // Header.
    let mut header = String::new();
    let _ = writeln!(header, "# Outpost ingest benchmark\n");
    let _ = writeln!(header, "- date: {}", utc_now());
    let _ = writeln!(
        header,
        "- machine: {} CPUs (nproc), {}, {} MiB RAM, Linux {}",
        machine.nproc, machine.cpu_model, machine.mem_total_mib, machine.kernel
    );
    let _ = writeln!(header, "- command: `{}`", command_line());
    let _ = writeln!(header, "- load average at start: {}", procfs::load_average());
    if let Some(o) = &outpost {
        let _ = writeln!(
            header,
            "- outpost: `{}` ({}), wal.fsync = {}",
            o.display(),
            outpost_version(o),
            args.fsync.as_str()
        );
    }
    let _ = writeln!(
        header,
        "- load: {} clients, each on its own connection; {} s warm-up + {} s measured per run; fresh server and data folder per run",
        args.clients, args.warmup, args.seconds
    );
    print!("{header}");

    let loads: Vec<Arc<Load>> =
        args.signals.iter().map(|s| Arc::new(Load::generate(s.signal(), args.distinct_requests, 2026))).collect();
    for load in &loads {
        println!(
            "- {}: {} distinct requests, {:.0} {} and {:.1} KB of protobuf per request",
            load.signal.as_str(),
            load.requests.len(),
            load.mean_items(),
            load.signal.item_noun(),
            load.mean_bytes() / 1e3
        );
    }
    println!();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(machine.nproc.clamp(1, args.clients))
        .enable_all()
        .thread_name("bench-client")
        .build()?;

    let mut results = Vec::new();
    let mut failure = None;
    'runs: for load in &loads {
        for &transport in &transports {
            for &target in &args.targets {
                eprintln!("[ingest_bench] {} / {} / {} ...", target.as_str(), load.signal.as_str(), transport.label());
                match run_one(&rt, &args, target, outpost.as_deref(), &tmp_root, Arc::clone(load), transport) {
                    Ok(r) => {
                        eprintln!(
                            "[ingest_bench]   {} items/s, {:.2} server CPU-s per million items",
                            fmt_int(r.items_per_s()),
                            r.cpu_per_million()
                        );
                        results.push(r);
                    }
                    Err(e) => {
                        failure = Some(e.context(format!(
                            "run {} / {} / {} failed",
                            target.as_str(),
                            load.signal.as_str(),
                            transport.label()
                        )));
                        break 'runs;
                    }
                }
            }
        }
    }
    print!("{}", report(&results));
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn start_server(
    target: Target,
    outpost: Option<&Path>,
    tmp_root: &Path,
    fsync: Fsync,
) -> anyhow::Result<ServerProcess> {
    let ports = ["--listen", "127.0.0.1:0", "--otlp-grpc-listen", "127.0.0.1:0", "--otlp-http-listen", "127.0.0.1:0"];
    match target {
        Target::Outpost => {
            let bin = outpost.context("no outpost binary")?;
            let dir = TempDir::new(tmp_root, "outpost-ingest-bench")?;
            let mut cmd = benches::child::outpost_command(bin, dir.path());
            // The heads keep everything in memory until the per-signal engines land; a run can pass
            // the default memory limit (a quarter of RAM, at most 2 GiB), which would turn ingest
            // into 503s. The benchmark measures the write path, so it lifts the guard.
            cmd.env("OUTPOST_LOG", "info")
                .env("OUTPOST_WAL__FSYNC", fsync.as_str())
                .env("OUTPOST_MEMORY_LIMIT_BYTES", (16u64 << 30).to_string());
            ServerProcess::spawn(cmd, Some(dir), Duration::from_secs(60))
        }
        Target::Sink => {
            let mut cmd = Command::new(std::env::current_exe().context("cannot find the harness' own executable")?);
            cmd.arg("sink").args(ports).args(["--log-format", "json"]);
            ServerProcess::spawn(cmd, None, Duration::from_secs(60))
        }
    }
}

fn run_one(
    rt: &tokio::runtime::Runtime,
    args: &BenchArgs,
    target: Target,
    outpost: Option<&Path>,
    tmp_root: &Path,
    load: Arc<Load>,
    transport: Transport,
) -> anyhow::Result<RunResult> {
    let mut server = start_server(target, outpost, tmp_root, args.fsync)?;
    let pid = server.pid();
    let signal = load.signal;
    let drove = rt.block_on(drive(
        server.addrs,
        pid,
        load,
        transport,
        args.clients,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.seconds),
    ));
    let alive = server.is_running();
    let peak_rss_kib = procfs::status_kib(pid, "VmHWM").ok().flatten();
    let m = match drove {
        Ok(m) => m,
        Err(e) => {
            let state = if alive { "still running" } else { "exited" };
            let (n, problems) = server.problems();
            return Err(e.context(format!(
                "server {state}; {n} WARN/ERROR log lines (first: {problems:#?}); its last log lines:\n{}",
                server.log_tail()
            )));
        }
    };
    if !alive {
        bail!("the server exited during the run; its last log lines:\n{}", server.log_tail());
    }
    let stats = match target {
        Target::Outpost => Some(rt.block_on(scrape(server.addrs, signal))?),
        Target::Sink => None,
    };
    let problems = server.problems();
    server.kill();
    Ok(RunResult {
        target,
        signal,
        transport,
        requests: m.requests,
        items: m.items,
        bytes: m.bytes,
        window: m.window,
        server_cpu_s: m.server_cpu_s,
        client_cpu_s: m.client_cpu_s,
        other_cpu_s: m.other_cpu_s,
        peak_rss_kib,
        items_total: m.items_total,
        latency_p50_ms: m.latency_p50_ms,
        latency_p99_ms: m.latency_p99_ms,
        partial_messages: m.partial_messages,
        stats,
        problems,
    })
}

/// What `drive` measured.
struct Measured {
    requests: u64,
    items: u64,
    bytes: u64,
    window: Duration,
    server_cpu_s: f64,
    client_cpu_s: f64,
    other_cpu_s: f64,
    items_total: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    partial_messages: (u64, Option<String>),
}

/// One acknowledged request.
struct Done {
    sent: Instant,
    acked: Instant,
    items: u64,
    bytes: u64,
}

#[derive(Default)]
struct ClientLog {
    done: Vec<Done>,
    partial_messages: u64,
    first_partial_message: Option<String>,
}

async fn drive(
    addrs: Addrs,
    pid: u32,
    load: Arc<Load>,
    transport: Transport,
    clients: usize,
    warmup: Duration,
    seconds: Duration,
) -> anyhow::Result<Measured> {
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        senders.push(Sender::connect(transport, load.signal, addrs).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + warmup + seconds;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, sender) in senders.into_iter().enumerate() {
        let first = c * load.requests.len() / clients;
        tasks.spawn(client_loop(sender, Arc::clone(&load), first, end, Arc::clone(&stop), Arc::clone(&seq)));
    }
    let me = std::process::id();

    sleep_checking(started + warmup, &stop).await;
    let (t1, cpu1, own1, all1) =
        (Instant::now(), procfs::cpu_seconds(pid)?, procfs::cpu_seconds(me)?, procfs::machine_busy_seconds()?);
    sleep_checking(end, &stop).await;
    let (t2, cpu2, own2, all2) =
        (Instant::now(), procfs::cpu_seconds(pid)?, procfs::cpu_seconds(me)?, procfs::machine_busy_seconds()?);
    stop.store(true, Ordering::Relaxed);

    let mut logs = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(log)) => logs.push(log),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(anyhow!("client task panicked: {e}")),
        }
    }
    if let Some(first) = errors.into_iter().next() {
        return Err(first);
    }

    let mut m = Measured {
        requests: 0,
        items: 0,
        bytes: 0,
        window: t2 - t1,
        server_cpu_s: cpu2 - cpu1,
        client_cpu_s: own2 - own1,
        other_cpu_s: ((all2 - all1) - (cpu2 - cpu1) - (own2 - own1)).max(0.0),
        items_total: 0,
        latency_p50_ms: f64::NAN,
        latency_p99_ms: f64::NAN,
        partial_messages: (0, None),
    };
    let mut latencies = Vec::new();
    for log in logs {
        m.partial_messages.0 += log.partial_messages;
        if m.partial_messages.1.is_none() {
            m.partial_messages.1 = log.first_partial_message;
        }
        for d in log.done {
            m.items_total += d.items;
            if d.acked >= t1 && d.acked <= t2 {
                m.requests += 1;
                m.items += d.items;
                m.bytes += d.bytes;
                latencies.push((d.acked - d.sent).as_secs_f64() * 1e3);
            }
        }
    }
    if m.requests == 0 {
        bail!("no request was acknowledged within the measured window");
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    m.latency_p50_ms = q(0.50);
    m.latency_p99_ms = q(0.99);
    Ok(m)
}

/// Sleeps until `until`, waking early if a client reported a failure.
async fn sleep_checking(until: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= until || stop.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(50))).await;
    }
}

async fn client_loop(
    mut sender: Sender,
    load: Arc<Load>,
    first: usize,
    end: Instant,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
) -> anyhow::Result<ClientLog> {
    let mut log = ClientLog::default();
    let mut k = first;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let (items, bytes) = load.size(k);
        let req = load.stamped(k, n);
        k += 1;
        let sent = Instant::now();
        match sender.send(req).await {
            Ok(message) => {
                let acked = Instant::now();
                log.done.push(Done { sent, acked, items, bytes: bytes as u64 });
                if let Some(msg) = message {
                    log.partial_messages += 1;
                    log.first_partial_message.get_or_insert(msg);
                }
            }
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(e.context(format!("request #{n} ({} items) failed", items)));
            }
        }
    }
    Ok(log)
}

/// One sender on its own connection.
enum Sender {
    Traces(TraceServiceClient<Channel>),
    Logs(LogsServiceClient<Channel>),
    Metrics(MetricsServiceClient<Channel>),
    Http { client: reqwest::Client, url: String, gzip: bool, signal: Signal },
}

impl Sender {
    async fn connect(t: Transport, signal: Signal, addrs: Addrs) -> anyhow::Result<Sender> {
        match t.proto {
            Proto::Grpc => {
                // One Endpoint::connect is one HTTP/2 connection.
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.otlp_grpc))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to OTLP/gRPC at {}", addrs.otlp_grpc))?;
                let enc = CompressionEncoding::Gzip;
                Ok(match signal {
                    Signal::Traces => {
                        let c = TraceServiceClient::new(channel).accept_compressed(enc);
                        Sender::Traces(if t.gzip { c.send_compressed(enc) } else { c })
                    }
                    Signal::Logs => {
                        let c = LogsServiceClient::new(channel).accept_compressed(enc);
                        Sender::Logs(if t.gzip { c.send_compressed(enc) } else { c })
                    }
                    Signal::Metrics => {
                        let c = MetricsServiceClient::new(channel).accept_compressed(enc);
                        Sender::Metrics(if t.gzip { c.send_compressed(enc) } else { c })
                    }
                })
            }
            Proto::Http => {
                // A client of its own per sender: its own pool, so its own (HTTP/1.1 keep-alive)
                // connection.
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(1)
                    .timeout(Duration::from_secs(60))
                    .build()?;
                let url = format!("http://{}/v1/{}", addrs.otlp_http, signal.as_str());
                Ok(Sender::Http { client, url, gzip: t.gzip, signal })
            }
        }
    }

    /// Sends one request; `Ok(Some(message))` for a `partial_success` that rejected nothing but
    /// says something. Any error, non-200 answer or rejected item is an error.
    async fn send(&mut self, req: ExportRequest) -> anyhow::Result<Option<String>> {
        let grpc_err = |s: tonic::Status| anyhow!("gRPC status {:?}: {}", s.code(), s.message());
        match (self, req) {
            (Sender::Traces(c), ExportRequest::Traces(r)) => {
                let resp = c.export(r).await.map_err(grpc_err)?.into_inner();
                check_partial(resp.partial_success.map(|p| (p.rejected_spans, p.error_message)))
            }
            (Sender::Logs(c), ExportRequest::Logs(r)) => {
                let resp = c.export(r).await.map_err(grpc_err)?.into_inner();
                check_partial(resp.partial_success.map(|p| (p.rejected_log_records, p.error_message)))
            }
            (Sender::Metrics(c), ExportRequest::Metrics(r)) => {
                let resp = c.export(r).await.map_err(grpc_err)?.into_inner();
                check_partial(resp.partial_success.map(|p| (p.rejected_data_points, p.error_message)))
            }
            (Sender::Http { client, url, gzip, signal }, req) => {
                let mut body = req.encode_to_vec();
                let mut rb = client.post(url.as_str()).header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                if *gzip {
                    body = gzip_bytes(&body)?;
                    rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
                }
                let resp = rb.body(body).send().await.context("OTLP/HTTP request failed")?;
                let status = resp.status();
                let retry_after =
                    resp.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let bytes = resp.bytes().await.context("cannot read the OTLP/HTTP response")?;
                if status != reqwest::StatusCode::OK {
                    let retry = retry_after.map(|r| format!(" (Retry-After: {r})")).unwrap_or_default();
                    bail!("HTTP {status}{retry}: {}", describe_error_body(&bytes));
                }
                let partial = match signal {
                    Signal::Traces => ExportTraceServiceResponse::decode(bytes)?
                        .partial_success
                        .map(|p| (p.rejected_spans, p.error_message)),
                    Signal::Logs => ExportLogsServiceResponse::decode(bytes)?
                        .partial_success
                        .map(|p| (p.rejected_log_records, p.error_message)),
                    Signal::Metrics => ExportMetricsServiceResponse::decode(bytes)?
                        .partial_success
                        .map(|p| (p.rejected_data_points, p.error_message)),
                };
                check_partial(partial)
            }
            _ => bail!("request of the wrong signal for this sender"),
        }
    }
}

fn check_partial(p: Option<(i64, String)>) -> anyhow::Result<Option<String>> {
    match p {
        Some((rejected, message)) if rejected != 0 => bail!("partial success: {rejected} items rejected: {message}"),
        Some((_, message)) if !message.is_empty() => Ok(Some(message)),
        _ => Ok(None),
    }
}

/// `google.rpc.Status`, OTLP/HTTP's error body.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn describe_error_body(b: &[u8]) -> String {
    match RpcStatus::decode(b) {
        Ok(s) if !s.message.is_empty() => format!("google.rpc.Status code {}: {}", s.code, s.message),
        _ => String::from_utf8_lossy(&b[..b.len().min(500)]).into_owned(),
    }
}

fn gzip_bytes(b: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(b.len() / 4), flate2::Compression::default());
    enc.write_all(b)?;
    Ok(enc.finish()?)
}

// ---------------------------------------------------------------------------------------------
// Outpost's /metrics
// ---------------------------------------------------------------------------------------------

/// Figures from Outpost's `/metrics` after a run (whole run, warm-up included).
#[derive(Clone, Debug, Default)]
struct ServerStats {
    received_items: f64,
    rejected_items: f64,
    rejected_requests: f64,
    fsyncs: f64,
    fsync_seconds: f64,
    requests: f64,
    request_seconds: f64,
}

async fn scrape(addrs: Addrs, signal: Signal) -> anyhow::Result<ServerStats> {
    let url = format!("http://{}/metrics", addrs.http);
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(&url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("GET {url}"))?
        .text()
        .await?;
    let mut s = ServerStats::default();
    let sig = format!("signal=\"{}\"", signal.as_str());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let name = series.split('{').next().unwrap_or(series);
        let ours = series.contains(&sig);
        match name {
            "outpost_received_items_total" if ours => s.received_items += v,
            "outpost_rejected_items_total" if ours => s.rejected_items += v,
            "outpost_rejected_requests_total" if ours => s.rejected_requests += v,
            "outpost_wal_fsync_duration_seconds_count" => s.fsyncs += v,
            "outpost_wal_fsync_duration_seconds_sum" => s.fsync_seconds += v,
            "outpost_ingest_request_duration_seconds_count" if ours => s.requests += v,
            "outpost_ingest_request_duration_seconds_sum" if ours => s.request_seconds += v,
            _ => {}
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn report(results: &[RunResult]) -> String {
    let mut out = String::new();
    if results.is_empty() {
        return out;
    }
    let sink_cpu = |r: &RunResult| {
        results
            .iter()
            .find(|s| s.target == Target::Sink && s.signal == r.signal && s.transport == r.transport)
            .map(RunResult::cpu_per_million)
    };
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(
        out,
        "| target | signal | transport | requests | items | items/s | MB/s | server CPU-s | CPU-s per M items | × sink | peak RSS MiB |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let ratio = match (r.target, sink_cpu(r)) {
            (Target::Outpost, Some(s)) if s > 0.0 => format!("{:.2}", r.cpu_per_million() / s),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {} | {} |",
            r.target.as_str(),
            r.signal.as_str(),
            r.transport.label(),
            fmt_int(r.requests as f64),
            fmt_int(r.items as f64),
            fmt_int(r.items_per_s()),
            r.mb_per_s(),
            r.server_cpu_s,
            r.cpu_per_million(),
            ratio,
            r.peak_rss_kib.map(|k| format!("{:.0}", k as f64 / 1024.0)).unwrap_or_default(),
        );
    }
    let _ = writeln!(out, "\n### Details\n");
    let _ = writeln!(
        out,
        "| target | signal | transport | window s | server cores busy | client CPU-s | other CPU-s | latency p50 / p99 ms | \
         items acked (whole run) | items stored (/metrics) | WAL fsyncs | items per fsync | mean fsync ms | \
         mean server request ms | WARN/ERROR lines |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (stored, fsyncs, per_fsync, fsync_ms, req_ms) = match &r.stats {
            Some(s) => (
                fmt_int(s.received_items),
                fmt_int(s.fsyncs),
                if s.fsyncs > 0.0 { fmt_int(s.received_items / s.fsyncs) } else { String::new() },
                if s.fsyncs > 0.0 { format!("{:.2}", s.fsync_seconds / s.fsyncs * 1e3) } else { String::new() },
                if s.requests > 0.0 { format!("{:.2}", s.request_seconds / s.requests * 1e3) } else { String::new() },
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            r.target.as_str(),
            r.signal.as_str(),
            r.transport.label(),
            r.window.as_secs_f64(),
            r.server_cpu_s / r.window.as_secs_f64(),
            r.client_cpu_s,
            r.other_cpu_s,
            r.latency_p50_ms,
            r.latency_p99_ms,
            fmt_int(r.items_total as f64),
            stored,
            fsyncs,
            per_fsync,
            fsync_ms,
            req_ms,
            r.problems.0,
        );
    }
    // Anything odd, spelled out.
    let mut notes = Vec::new();
    for r in results {
        let what = format!("{} / {} / {}", r.target.as_str(), r.signal.as_str(), r.transport.label());
        if let Some(s) = &r.stats {
            if (s.received_items - r.items_total as f64).abs() > 0.5 {
                notes.push(format!(
                    "{what}: Outpost's /metrics counts {} items stored, the clients had {} acknowledged",
                    fmt_int(s.received_items),
                    fmt_int(r.items_total as f64)
                ));
            }
            if s.rejected_items > 0.0 || s.rejected_requests > 0.0 {
                notes.push(format!(
                    "{what}: /metrics shows {} rejected items and {} refused requests",
                    s.rejected_items, s.rejected_requests
                ));
            }
        }
        if r.partial_messages.0 > 0 {
            notes.push(format!(
                "{what}: {} responses carried a partial_success message with nothing rejected, e.g. {:?}",
                r.partial_messages.0,
                r.partial_messages.1.as_deref().unwrap_or("")
            ));
        }
        if r.problems.0 > 0 {
            notes.push(format!(
                "{what}: the server logged {} WARN/ERROR lines, first: {:?}",
                r.problems.0, r.problems.1
            ));
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n### Notes\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_success_rules() {
        assert!(check_partial(None).unwrap().is_none());
        assert!(check_partial(Some((0, String::new()))).unwrap().is_none());
        assert_eq!(check_partial(Some((0, "note".into()))).unwrap().as_deref(), Some("note"));
        assert!(check_partial(Some((3, "bad".into()))).is_err());
    }

    #[test]
    fn cli_parses() {
        let cli =
            Cli::try_parse_from(["ingest_bench", "--seconds", "3", "--signals", "logs,traces", "--gzip"]).unwrap();
        assert!(cli.cmd.is_none());
        assert_eq!(cli.bench.signals, vec![SignalArg::Logs, SignalArg::Traces]);
        assert_eq!(cli.bench.transports, vec![Proto::Grpc, Proto::Http]);
        let cli = Cli::try_parse_from(["ingest_bench", "sink", "--listen", "127.0.0.1:0", "--data-dir", "/x"]).unwrap();
        assert!(matches!(cli.cmd, Some(Cmd::Sink(_))));
    }
}

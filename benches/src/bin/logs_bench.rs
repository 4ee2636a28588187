//! `logs_bench`: Loki push ingest and LogQL queries of the real `outpost` binary, with ripgrep
//! scanning the same lines as plain text beside every filter query (the floor a full scan can
//! reach) and Grafana Loki 2.8's figures from issue 4 beside ours. See `benches/README.md`.
//!
//! Steps: generate `--lines` log lines (deterministic seed, before any timing) for 100 streams
//! over `--minutes` of simulated time ending now, as snappy-compressed protobuf push requests
//! of `--batch-lines` lines each (Promtail's encoding), and the same lines as plain text, one
//! file per namespace; start Outpost with a fresh data folder on port 0; push every request from
//! `--senders` senders (one connection each); read the server's CPU seconds and RSS from
//! `/proc`; wait for the checkpoint that commits the head into the partition indexes and measure
//! the bytes on disk; then run the query set over `GET /loki/api/v1/query_range` (as Grafana's
//! Loki datasource sends it) and `GET /outpost/api/v1/traces/<id>/related`, one untimed run and
//! `--runs` timed runs each, and `rg` over the matching text files as many times.

#![allow(clippy::print_stdout, reason = "the report is the program's output")]

use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use benches::child::{ServerProcess, TempDir};
use benches::procfs::{self, Machine};
use benches::report::{civil, fmt_int, percentile, utc_now};
use clap::Parser;
use ingest::loki_push::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug, Clone)]
#[command(name = "logs_bench", about = "Loki push + LogQL: Outpost next to ripgrep and Loki 2.8's figures")]
struct Args {
    /// The `outpost` binary (built with `cargo build --release --workspace`).
    #[arg(long, default_value = "target/release/outpost")]
    outpost: PathBuf,
    /// Log lines to generate and push.
    #[arg(long, default_value_t = 5_000_000)]
    lines: usize,
    /// Simulated minutes the lines span, ending now.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Concurrent push senders, one connection each.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Lines per push request (Promtail's 1 MiB batch is about 4,000 lines of this size).
    #[arg(long, default_value_t = 2000)]
    batch_lines: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Timed runs of each query (after one untimed run).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Step of the metric queries, seconds.
    #[arg(long, default_value_t = 15)]
    step: u64,
    /// Parent folder of the fresh data folder and the text files (the system temp folder by default).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// The ripgrep binary.
    #[arg(long, default_value = "rg")]
    rg: PathBuf,
    /// Skip the queries (ingest and disk only).
    #[arg(long)]
    no_queries: bool,
    /// Run only the queries whose label contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Keep the server running after the report until Enter is pressed (for `perf record -p`).
    #[arg(long)]
    hold: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logs_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

/// SplitMix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const NAMESPACES: [(&str, [&str; 4]); 5] = [
    ("shop", ["frontend", "cart", "checkout", "catalog"]),
    ("payments", ["payment-api", "ledger", "fraud", "billing"]),
    ("auth", ["auth-api", "session", "users", "tokens"]),
    ("search", ["search-api", "indexer", "ranker", "suggest"]),
    ("infra", ["gateway", "scheduler", "mailer", "cache-proxy"]),
];

/// One of the 100 streams.
struct StreamDef {
    namespace: &'static str,
    service: &'static str,
    /// Selector text, as Promtail sends it.
    labels: String,
    json: bool,
    /// Relative share of the lines.
    weight: u64,
}

fn streams() -> Vec<StreamDef> {
    let mut out = Vec::new();
    let mut rng = Rng(7);
    for (ni, (ns, services)) in NAMESPACES.iter().enumerate() {
        for (si, svc) in services.iter().enumerate() {
            // `shop` logs logfmt, `payments` JSON, the others two services of each.
            let json = match ni {
                0 => false,
                1 => true,
                _ => si % 2 == 1,
            };
            let rs = format!("{:x}", 0x5d4f_8c00u64 + rng.below(0xff_ff));
            for _ in 0..5 {
                let pod = format!("{svc}-{rs}-{}", pod_suffix(&mut rng));
                let labels = format!(
                    "{{container=\"{svc}\", namespace=\"{ns}\", pod=\"{pod}\", service=\"{svc}\", service_name=\"{svc}\"}}"
                );
                let weight = 1 + rng.below(4) + if si == 0 { 3 } else { 0 };
                out.push(StreamDef { namespace: ns, service: svc, labels, json, weight });
            }
        }
    }
    out
}

fn pod_suffix(rng: &mut Rng) -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5).map(|_| A[rng.below(A.len() as u64) as usize] as char).collect()
}

fn hex(rng: &mut Rng, bytes: usize) -> String {
    let mut s = String::with_capacity(bytes * 2);
    for _ in 0..bytes.div_ceil(8) {
        let _ = write!(s, "{:016x}", rng.next());
    }
    s.truncate(bytes * 2);
    s
}

/// RFC 3339 with microseconds, UTC.
fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (y, m, d) = civil(secs);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ns.rem_euclid(1_000_000_000) / 1000
    )
}

/// One generated line and where it goes.
struct Line {
    stream: usize,
    ts_ns: i64,
    body: String,
    trace_id: Option<String>,
    /// True when this line starts a new trace.
    new_trace: bool,
}

/// The line generator: a request mix of levels, methods, paths, statuses and durations, with
/// trace ids shared by a few lines of nearby services (a request crossing services).
struct Gen {
    rng: Rng,
    defs: Vec<StreamDef>,
    cumulative: Vec<u64>,
    recent_traces: Vec<String>,
}

const PATHS: [&str; 10] = [
    "/api/v1/cart/items",
    "/api/v1/orders",
    "/api/v1/products",
    "/api/v1/payments",
    "/api/v1/users/me",
    "/api/v1/search",
    "/api/v1/sessions",
    "/healthz",
    "/api/v2/checkout",
    "/api/v1/recommendations",
];
const ERRORS: [&str; 3] = ["connection reset by peer", "context deadline exceeded", "upstream returned 503"];

impl Gen {
    fn new(seed: u64) -> Gen {
        let defs = streams();
        let mut acc = 0;
        let cumulative = defs
            .iter()
            .map(|d| {
                acc += d.weight;
                acc
            })
            .collect();
        Gen { rng: Rng(seed), defs, cumulative, recent_traces: Vec::new() }
    }

    fn line(&mut self, ts_ns: i64) -> Line {
        let total = *self.cumulative.last().unwrap_or(&1);
        let x = self.rng.below(total);
        let stream = self.cumulative.partition_point(|&c| c <= x);
        let r = &mut self.rng;
        // Levels: 70 % info, 15 % debug, 10 % warn, 5 % error.
        let roll = r.below(1000);
        let level = match roll {
            0..700 => "info",
            700..850 => "debug",
            850..950 => "warn",
            _ => "error",
        };
        // A trace id on 60 % of the lines; a trace spans about four lines.
        let mut new_trace = false;
        let trace_id = if r.chance(0.6) {
            if !self.recent_traces.is_empty() && r.chance(0.75) {
                let k = r.below(self.recent_traces.len() as u64) as usize;
                Some(self.recent_traces[k].clone())
            } else {
                new_trace = true;
                let t = hex(r, 16);
                if self.recent_traces.len() < 16 {
                    self.recent_traces.push(t.clone());
                } else {
                    let k = r.below(16) as usize;
                    self.recent_traces[k] = t.clone();
                }
                Some(t)
            }
        } else {
            None
        };
        let method = r.pick(&["GET", "GET", "GET", "POST", "PUT", "DELETE"]);
        let path = format!("{}/{}", PATHS[r.below(PATHS.len() as u64) as usize], r.below(100_000));
        let user = format!("u-{}", 10_000 + r.below(90_000));
        let caller = format!(
            "{}/{}.go:{}",
            self.defs[stream].service,
            r.pick(&["handler", "server", "client", "store"]),
            20 + r.below(400)
        );
        let (msg, status, duration_ms, extra): (&str, u64, f64, String) = match level {
            "error" => {
                let e = if r.chance(0.004) {
                    "panic: runtime error: invalid memory address or nil pointer dereference"
                } else {
                    ERRORS[r.below(ERRORS.len() as u64) as usize]
                };
                let st = [500, 502, 503][r.below(3) as usize];
                ("request failed", st, 1.0 + r.below(5_000_000) as f64 / 1000.0, e.to_string())
            }
            "warn" => {
                if r.chance(0.01) {
                    let ms = 5_000 + r.below(25_000);
                    ("upstream slow", 200, ms as f64, format!("upstream timeout after {ms}ms, retrying"))
                } else {
                    ("slow request", 200, 500.0 + r.below(2_000_000) as f64 / 1000.0, "retrying".into())
                }
            }
            "debug" => ("cache lookup", 200, r.below(5_000) as f64 / 1000.0, format!("key=sess:{}", r.below(1 << 20))),
            _ => {
                let st = [200, 200, 200, 200, 201, 204, 304, 404][r.below(8) as usize];
                ("request completed", st, 1.0 + r.below(300_000) as f64 / 1000.0, String::new())
            }
        };
        let bytes = r.below(64_000);
        let ts = rfc3339(ts_ns);
        let span = hex(r, 8);
        let mut body = String::with_capacity(300);
        let d = &self.defs[stream];
        if d.json {
            let _ = write!(
                body,
                "{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"caller\":\"{caller}\",\"msg\":\"{msg}\",\"method\":\"{method}\",\"path\":\"{path}\",\"status\":{status},\"duration_ms\":{duration_ms:.3},\"bytes\":{bytes},\"user_id\":\"{user}\""
            );
            if !extra.is_empty() {
                let _ = write!(body, ",\"error\":\"{extra}\"");
            }
            if let Some(t) = &trace_id {
                let _ = write!(body, ",\"trace_id\":\"{t}\",\"span_id\":\"{span}\"");
            }
            body.push('}');
        } else {
            let _ = write!(
                body,
                "ts={ts} level={level} caller={caller} msg=\"{msg}\" method={method} path={path} status={status} duration={duration_ms:.3}ms bytes={bytes} user_id={user}"
            );
            if !extra.is_empty() {
                let _ = write!(body, " error=\"{extra}\"");
            }
            if let Some(t) = &trace_id {
                let _ = write!(body, " trace_id={t} span_id={span}");
            }
        }
        Line { stream, ts_ns, body, trace_id, new_trace }
    }
}

/// The generated load: encoded push requests and facts about the lines.
struct Load {
    /// Snappy-compressed protobuf push requests, in time order.
    requests: Vec<Vec<u8>>,
    lines: u64,
    /// Sum of the lines' lengths.
    line_bytes: u64,
    /// Uncompressed protobuf bytes.
    proto_bytes: u64,
    wire_bytes: u64,
    first_ns: i64,
    last_ns: i64,
    /// Text files, one per namespace, holding the lines of its streams.
    text_files: Vec<(String, PathBuf)>,
    /// A trace id first used in the middle of the data, and how many lines carry it.
    needle: (String, u64),
    /// Lines per namespace.
    per_namespace: Vec<(String, u64)>,
}

fn generate(args: &Args, dir: &Path) -> anyhow::Result<Load> {
    let mut g = Gen::new(args.seed);
    let defs_ns: Vec<&'static str> = g.defs.iter().map(|d| d.namespace).collect();
    let mut files = Vec::new();
    let mut writers = Vec::new();
    for (ns, _) in NAMESPACES {
        let p = dir.join(format!("{ns}.log"));
        writers.push(BufWriter::with_capacity(1 << 20, fs::File::create(&p)?));
        files.push((ns.to_string(), p));
    }
    let ns_index = |ns: &str| NAMESPACES.iter().position(|(n, _)| *n == ns).unwrap_or(0);
    let now_ns = unix_now_ns();
    // The newest line is a few seconds old; lines are evenly spread over the window.
    let last_ns = now_ns - 5_000_000_000;
    let span_ns = (args.minutes * 60) as i64 * 1_000_000_000;
    let first_ns = last_ns - span_ns;
    let n = args.lines as i64;
    let mut requests = Vec::new();
    let (mut line_bytes, mut proto_bytes, mut wire_bytes) = (0u64, 0u64, 0u64);
    // The needle: the first trace started after the middle of the data (so every line carrying
    // it is counted here).
    let needle_at = args.lines / 2;
    let mut needle: Option<String> = None;
    let mut needle_lines = 0u64;
    let mut per_ns = vec![0u64; NAMESPACES.len()];
    let mut encoder = snap::raw::Encoder::new();
    let mut i = 0usize;
    while i < args.lines {
        let k = args.batch_lines.min(args.lines - i);
        let mut by_stream: Vec<Vec<EntryAdapter>> = (0..g.defs.len()).map(|_| Vec::new()).collect();
        for j in 0..k {
            let idx = (i + j) as i64;
            // i128: span_ns * idx overflows i64 beyond ~2.5 M lines an hour.
            let ts = first_ns + if n > 1 { (span_ns as i128 * idx as i128 / (n as i128 - 1)) as i64 } else { 0 };
            let line = g.line(ts);
            let w = ns_index(defs_ns[line.stream]);
            per_ns[w] += 1;
            writers[w].write_all(line.body.as_bytes())?;
            writers[w].write_all(b"\n")?;
            line_bytes += line.body.len() as u64;
            if needle.is_none() && i + j >= needle_at && line.new_trace {
                needle = line.trace_id.clone();
            }
            if let (Some(nd), Some(t)) = (&needle, &line.trace_id)
                && nd == t
            {
                needle_lines += 1;
            }
            let structured_metadata = match &line.trace_id {
                Some(t) => vec![LabelPairAdapter { name: "trace_id".into(), value: t.clone() }],
                None => Vec::new(),
            };
            by_stream[line.stream].push(EntryAdapter {
                timestamp: Some(Timestamp::from_ns(line.ts_ns)),
                line: line.body,
                structured_metadata,
            });
        }
        let req = PushRequest {
            streams: by_stream
                .into_iter()
                .enumerate()
                .filter(|(_, e)| !e.is_empty())
                .map(|(s, entries)| StreamAdapter { labels: g.defs[s].labels.clone(), entries, hash: 0 })
                .collect(),
        };
        let raw = req.encode_to_vec();
        proto_bytes += raw.len() as u64;
        let wire = encoder.compress_vec(&raw)?;
        wire_bytes += wire.len() as u64;
        requests.push(wire);
        i += k;
    }
    for w in &mut writers {
        w.flush()?;
    }
    let needle = needle.context("no line carries a trace id")?;
    Ok(Load {
        requests,
        lines: args.lines as u64,
        line_bytes,
        proto_bytes,
        wire_bytes,
        first_ns,
        last_ns,
        text_files: files,
        needle: (needle, needle_lines),
        per_namespace: NAMESPACES.iter().zip(per_ns).map(|((ns, _), c)| (ns.to_string(), c)).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

fn http_client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(600)).build()?)
}

fn start(args: &Args, dir: &Path) -> anyhow::Result<ServerProcess> {
    let mut cmd = benches::child::outpost_command(&args.outpost, dir);
    // As the other harnesses: the memory guard is lifted so that it cannot turn ingest into 503s
    // (RSS is reported); everything else is the default configuration (wal.fsync = batch).
    cmd.env("OUTPOST_LOG", "info").env("OUTPOST_MEMORY_LIMIT_BYTES", (16u64 << 30).to_string());
    ServerProcess::spawn(cmd, None, Duration::from_secs(60))
}

struct IngestResult {
    window: Duration,
    requests: u64,
    retries: u64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    client_cpu_s: f64,
}

fn ingest(base: &str, load: &Arc<Load>, senders: usize) -> anyhow::Result<IngestResult> {
    let url = format!("{base}/loki/api/v1/push");
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicU64::new(0));
    let client_cpu0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..senders {
        let (load, next, stop, retries, url) =
            (Arc::clone(load), Arc::clone(&next), Arc::clone(&stop), Arc::clone(&retries), url.clone());
        handles.push(std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
            let client = http_client()?;
            let mut lat = Vec::new();
            let mut run = || -> anyhow::Result<()> {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = load.requests.get(k) else { return Ok(()) };
                    let mut backoff = Duration::from_millis(100);
                    loop {
                        let t = Instant::now();
                        let r = client
                            .post(&url)
                            .header("Content-Type", "application/x-protobuf")
                            .header("User-Agent", "promtail/2.9.13")
                            .body(body.clone())
                            .send()
                            .with_context(|| format!("POST {url}"))?;
                        let status = r.status();
                        if status.as_u16() == 429 || status.as_u16() == 503 {
                            // Promtail backs off and resends the same batch.
                            retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        if !status.is_success() {
                            let text = r.text().unwrap_or_default();
                            bail!("POST {url}: {status}: {}", &text[..text.len().min(500)]);
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                }
            };
            let res = run();
            if res.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            res.map(|()| lat)
        }));
    }
    let mut lat = Vec::new();
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => err = err.or(Some(e)),
            Err(_) => err = err.or(Some(anyhow::anyhow!("a sender panicked"))),
        }
    }
    let window = started.elapsed();
    if let Some(e) = err {
        return Err(e);
    }
    lat.sort_by(f64::total_cmp);
    Ok(IngestResult {
        window,
        requests: lat.len() as u64,
        retries: retries.load(Ordering::Relaxed),
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        client_cpu_s: procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - client_cpu0,
    })
}

/// `(apparent bytes, allocated bytes)` of the files under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(rd) = fs::read_dir(dir) else { return total };
    for e in rd.flatten() {
        let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
        if m.is_dir() {
            let (a, b) = dir_size(&e.path());
            total.0 += a;
            total.1 += b;
        } else if m.is_file() {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

/// Newest modification time of a partition's `meta.json` (written by each commit).
fn newest_commit(logs: &Path) -> Option<SystemTime> {
    fs::read_dir(logs)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        // Format 1 kept the partition index at the top of the folder, format 2 under `index/`.
        .filter_map(|e| {
            let p = e.path();
            fs::metadata(p.join("index/meta.json"))
                .or_else(|_| fs::metadata(p.join("meta.json")))
                .and_then(|m| m.modified())
                .ok()
        })
        .max()
}

struct Flushed {
    wall: Duration,
    logs_bytes: (u64, u64),
    data_dir_bytes: u64,
    wal_bytes: u64,
}

/// Waits for a commit of the logs partitions that started after the last acknowledged push (the
/// 30-s checkpoint, or an earlier flush of a large head), then for the folder to settle.
fn wait_flushed(dir: &Path, ingest_end: SystemTime) -> anyhow::Result<Flushed> {
    let t = Instant::now();
    let logs = dir.join("logs");
    let deadline = Instant::now() + Duration::from_secs(240);
    // A commit within 50 ms of the end of ingest may have taken every record, and then no later
    // one comes: a checkpoint trimming the WAL also shows that everything is in the partitions.
    let wal_at_start = dir_size(&dir.join("wal")).0;
    let trimmed = || wal_at_start > 16 << 20 && dir_size(&dir.join("wal")).0 <= 16 << 20;
    loop {
        if newest_commit(&logs).is_some_and(|m| m > ingest_end + Duration::from_millis(50)) || trimmed() {
            break;
        }
        if Instant::now() > deadline {
            bail!("outpost did not commit the logs partitions within 240 s of the end of ingest");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // The rest of the head may still be indexing into another partition, and merges may run:
    // wait until nothing changes for 10 s (at most two minutes).
    let settle = Instant::now() + Duration::from_secs(120);
    let mut last = dir_size(dir);
    let mut since = Instant::now();
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(500));
        let now = dir_size(dir);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= Duration::from_secs(10) {
            break;
        }
    }
    // A flush by size right after ingest satisfies the wait above while the rest of the head is
    // still only in memory and the WAL: the server's next checkpoint (every 30 s) writes it and
    // trims the WAL. Wait for that, so the WAL and RSS figures are after it (at most 90 s).
    let checkpoint = Instant::now() + Duration::from_secs(90);
    while dir_size(&dir.join("wal")).0 > 16 << 20 && Instant::now() < checkpoint {
        std::thread::sleep(Duration::from_millis(500));
    }
    let last = dir_size(dir);
    Ok(Flushed {
        wall: t.elapsed(),
        logs_bytes: dir_size(&logs),
        data_dir_bytes: last.0,
        wal_bytes: dir_size(&dir.join("wal")).0,
    })
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `query_range` returning streams (limit 1000, backward), as Grafana's Explore sends it.
    Log,
    /// `query_range` returning a matrix, with `step`.
    Metric,
    /// `GET /outpost/api/v1/traces/<id>/related`.
    Related,
}

struct QueryDef {
    label: &'static str,
    kind: Kind,
    query: String,
    /// Namespaces whose text files `rg` scans, and `rg`'s arguments; `None`: no rg column.
    rg: Option<(Vec<&'static str>, Vec<String>)>,
    /// Loki 2.8's figure from issue 4, and our target.
    loki: &'static str,
    target: &'static str,
}

fn queries(needle: &str, only: Option<&str>) -> Vec<QueryDef> {
    let mut qs = all_queries(needle);
    if let Some(o) = only {
        qs.retain(|q| q.label.contains(o));
    }
    qs
}

fn all_queries(needle: &str) -> Vec<QueryDef> {
    let all = vec!["shop", "payments", "auth", "search", "infra"];
    let fixed = |s: &str| vec!["-c".to_string(), "-F".to_string(), s.to_string()];
    let regex = |s: &str| vec!["-c".to_string(), s.to_string()];
    vec![
        QueryDef {
            label: "line filter",
            kind: Kind::Log,
            query: r#"{namespace="shop"} |= "nil pointer dereference""#.into(),
            rg: Some((vec!["shop"], fixed("nil pointer dereference"))),
            loki: "",
            target: "≤ 2× rg",
        },
        QueryDef {
            label: "regex",
            kind: Kind::Log,
            query: r#"{namespace="shop"} |~ "timeout after [0-9]{5}ms""#.into(),
            rg: Some((vec!["shop"], regex("timeout after [0-9]{5}ms"))),
            loki: "",
            target: "≤ 2× rg",
        },
        QueryDef {
            label: "json + label filter",
            kind: Kind::Log,
            query: r#"{namespace="payments"} | json | status >= 500 and duration_ms > 4950"#.into(),
            rg: Some((vec!["payments"], regex(r#""status":5[0-9][0-9],"duration_ms":49[5-9][0-9]\."#))),
            loki: "",
            target: "≤ 2× rg",
        },
        QueryDef {
            label: "sum by (level) count_over_time | logfmt",
            kind: Kind::Metric,
            query: r#"sum by (level) (count_over_time({namespace="shop"} | logfmt [5m]))"#.into(),
            rg: None,
            loki: "",
            target: "",
        },
        QueryDef {
            label: "sum by (service) count_over_time (Loki's)",
            kind: Kind::Metric,
            query: r#"sum by (service) (count_over_time({namespace="shop"}[5m]))"#.into(),
            rg: None,
            loki: "9.1 s",
            target: "≤ 910 ms (10× Loki)",
        },
        QueryDef {
            label: "… with |= \"error\" (Loki's)",
            kind: Kind::Metric,
            query: r#"sum by (service) (count_over_time({namespace="shop"} |= "error" [5m]))"#.into(),
            rg: Some((vec!["shop"], fixed("error"))),
            loki: "3.8 s",
            target: "≤ 380 ms (10× Loki), ≤ 2× rg",
        },
        QueryDef {
            label: "sum by (namespace) count_over_time, all 100 streams",
            kind: Kind::Metric,
            query: r#"sum by (namespace) (count_over_time({namespace=~".+"}[5m]))"#.into(),
            rg: None,
            loki: "",
            target: "",
        },
        QueryDef {
            label: "trace_id needle, all streams",
            kind: Kind::Log,
            query: format!(r#"{{namespace=~".+"}} |= "{needle}""#),
            rg: Some((all, fixed(needle))),
            loki: "1.8–5.4 s",
            target: "≤ 2× rg",
        },
        QueryDef {
            label: "trace_id look-up (/related)",
            kind: Kind::Related,
            query: needle.to_string(),
            rg: None,
            loki: "1.8–5.4 s",
            target: "< 50 ms",
        },
    ]
}

/// What an answer held: entries (log queries), series and the sum of all values (metric
/// queries), logs (related).
#[derive(Clone, Copy, Default)]
struct Answer {
    entries: u64,
    series: u64,
    total: f64,
}

impl Answer {
    fn describe(&self, kind: Kind) -> String {
        match kind {
            Kind::Log => format!("{} entries", self.entries),
            Kind::Metric => format!("{} series, Σ {}", self.series, fmt_int(self.total)),
            Kind::Related => format!("{} logs", self.entries),
        }
    }
}

fn run_query(
    client: &reqwest::blocking::Client,
    base: &str,
    q: &QueryDef,
    start_ns: i64,
    end_ns: i64,
    step: u64,
) -> anyhow::Result<Answer> {
    let url = match q.kind {
        Kind::Related => format!("{base}/outpost/api/v1/traces/{}/related", q.query),
        Kind::Log | Kind::Metric => {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.append_pair("query", &q.query)
                .append_pair("start", &start_ns.to_string())
                .append_pair("end", &end_ns.to_string())
                .append_pair("step", &format!("{step}s"));
            if q.kind == Kind::Log {
                s.append_pair("limit", "1000").append_pair("direction", "backward");
            }
            format!("{base}/loki/api/v1/query_range?{}", s.finish())
        }
    };
    let r = client.get(&url).send().with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let text = r.text()?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", &text[..text.len().min(500)]);
    }
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))?;
    let mut a = Answer::default();
    match q.kind {
        Kind::Related => a.entries = v["logs"].as_array().map_or(0, |l| l.len() as u64),
        Kind::Log | Kind::Metric => {
            let result = v["data"]["result"].as_array().with_context(|| format!("GET {url}: no data.result"))?;
            a.series = result.len() as u64;
            for s in result {
                a.entries += s["values"].as_array().map_or(0, |e| e.len() as u64);
                if q.kind == Kind::Metric {
                    for p in s["values"].as_array().into_iter().flatten() {
                        if let Some(x) = p[1].as_str().and_then(|x| x.parse::<f64>().ok()) {
                            a.total += x;
                        }
                    }
                }
            }
        }
    }
    Ok(a)
}

struct QueryResult {
    p50_ms: f64,
    p99_ms: f64,
    answer: Answer,
    /// rg's p50 / p99 (ms) and its count of matching lines.
    rg: Option<(f64, f64, u64)>,
}

fn run_rg(args: &Args, load: &Load, namespaces: &[&str], rg_args: &[String]) -> anyhow::Result<(f64, u64)> {
    let files: Vec<&PathBuf> =
        load.text_files.iter().filter(|(ns, _)| namespaces.contains(&ns.as_str())).map(|(_, p)| p).collect();
    let t = Instant::now();
    let out = Command::new(&args.rg)
        .args(rg_args)
        .arg("--no-filename")
        .args(&files)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", args.rg.display()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    // rg exits 1 when nothing matched.
    if !out.status.success() && out.status.code() != Some(1) {
        bail!("rg {rg_args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let count = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse::<u64>().ok()).sum();
    Ok((ms, count))
}

fn rg_version(args: &Args) -> Option<String> {
    let out = Command::new(&args.rg).arg("--version").output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string())
}

fn run_queries(args: &Args, base: &str, load: &Load, have_rg: bool) -> anyhow::Result<Vec<QueryResult>> {
    let client = http_client()?;
    let step_ns = args.step as i64 * 1_000_000_000;
    // The range Grafana would send for "the last N minutes" once the data is in: the data's span,
    // aligned to the step.
    let end_ns = (load.last_ns / step_ns + 1) * step_ns;
    let start_ns = (load.first_ns / step_ns) * step_ns;
    let mut out = Vec::new();
    for q in queries(&load.needle.0, args.only.as_deref()) {
        eprintln!("[logs_bench]   {} ...", q.label);
        let answer = run_query(&client, base, &q, start_ns, end_ns, args.step)?;
        let mut lat = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            run_query(&client, base, &q, start_ns, end_ns, args.step)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        let rg = match (&q.rg, have_rg) {
            (Some((ns, rg_args)), true) => {
                let (_, count) = run_rg(args, load, ns, rg_args)?;
                let mut l = Vec::new();
                for _ in 0..args.runs {
                    l.push(run_rg(args, load, ns, rg_args)?.0);
                }
                l.sort_by(f64::total_cmp);
                Some((percentile(&l, 0.5), percentile(&l, 0.99), count))
            }
            _ => None,
        };
        out.push(QueryResult { p50_ms: percentile(&lat, 0.5), p99_ms: percentile(&lat, 0.99), answer, rg });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

fn bench(args: &Args) -> anyhow::Result<()> {
    if args.lines == 0 || args.senders == 0 || args.batch_lines == 0 || args.minutes == 0 || args.step == 0 {
        bail!("--lines, --senders, --batch-lines, --minutes and --step must be positive");
    }
    let tmp_root = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine = Machine::current();
    let have_rg = rg_version(args);
    if have_rg.is_none() {
        eprintln!(
            "[logs_bench] ripgrep ({}) cannot be run: the rg column is skipped. Install it with `apt-get install -y ripgrep`.",
            args.rg.display()
        );
    }
    let text_dir = TempDir::new(&tmp_root, "logs-bench-text")?;
    eprintln!("[logs_bench] generating {} lines ...", args.lines);
    let t = Instant::now();
    let load = Arc::new(generate(args, text_dir.path())?);
    eprintln!(
        "[logs_bench] generated {} requests ({:.0} MB of lines, {:.0} MB protobuf, {:.0} MB snappy) in {:.1} s",
        load.requests.len(),
        load.line_bytes as f64 / 1e6,
        load.proto_bytes as f64 / 1e6,
        load.wire_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let data = TempDir::new(&tmp_root, "logs-bench-outpost")?;
    let mut server = start(args, data.path())?;
    let pid = server.pid();
    let base = format!("http://{}", server.addrs.http);
    let fail = |e: anyhow::Error, server: &ServerProcess| {
        e.context(format!("outpost failed; its last log lines:\n{}", server.log_tail()))
    };
    let other0 = procfs::machine_busy_seconds().unwrap_or(0.0);
    let self0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let cpu0 = procfs::cpu_seconds(pid)?;
    eprintln!("[logs_bench] outpost pid {pid} at {base}; pushing ...");
    let ing = match ingest(&base, &load, args.senders) {
        Ok(r) => r,
        Err(e) => return Err(fail(e, &server)),
    };
    let ingest_end = SystemTime::now();
    let cpu1 = procfs::cpu_seconds(pid)?;
    let other1 = procfs::machine_busy_seconds().unwrap_or(0.0);
    let self1 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let rss_after_ingest = procfs::status_kib(pid, "VmRSS")?.unwrap_or(0);
    let hwm_ingest = procfs::status_kib(pid, "VmHWM")?.unwrap_or(0);
    let other_cpu = (other1 - other0) - (cpu1 - cpu0) - (self1 - self0);
    eprintln!(
        "[logs_bench] {} lines in {:.1} s ({:.0}/s), {:.2} CPU-s per M lines, RSS {:.0} MiB; waiting for the checkpoint ...",
        load.lines,
        ing.window.as_secs_f64(),
        load.lines as f64 / ing.window.as_secs_f64(),
        (cpu1 - cpu0) / (load.lines as f64 / 1e6),
        rss_after_ingest as f64 / 1024.0
    );
    let flushed = match wait_flushed(data.path(), ingest_end) {
        Ok(f) => f,
        Err(e) => return Err(fail(e, &server)),
    };
    let cpu2 = procfs::cpu_seconds(pid)?;
    let hwm_flush = procfs::status_kib(pid, "VmHWM")?.unwrap_or(0);
    let rss_after_flush = procfs::status_kib(pid, "VmRSS")?.unwrap_or(0);
    eprintln!(
        "[logs_bench] logs/ holds {} bytes ({:.1} per line); querying ...",
        flushed.logs_bytes.0,
        flushed.logs_bytes.0 as f64 / load.lines as f64
    );
    let qs = queries(&load.needle.0, args.only.as_deref());
    let results = if args.no_queries {
        Vec::new()
    } else {
        match run_queries(args, &base, &load, have_rg.is_some()) {
            Ok(r) => r,
            Err(e) => return Err(fail(e, &server)),
        }
    };
    let rss_after_queries = procfs::status_kib(pid, "VmRSS")?.unwrap_or(0);
    let hwm_end = procfs::status_kib(pid, "VmHWM")?.unwrap_or(0);
    let problems = server.problems();

    // ---- report ----
    let mib = |k: u64| k as f64 / 1024.0;
    let lines = load.lines as f64;
    let cpu_ingest = cpu1 - cpu0;
    let cpu_per_m = cpu_ingest / (lines / 1e6);
    let bytes_per_line = flushed.logs_bytes.0 as f64 / lines;
    let mut out = String::new();
    let _ = writeln!(out, "# Outpost logs benchmark (Loki push + LogQL)\n");
    let _ = writeln!(out, "- date: {}", utc_now());
    let _ = writeln!(
        out,
        "- machine: {} CPUs (nproc), {}, {} MiB RAM, Linux {}",
        machine.nproc, machine.cpu_model, machine.mem_total_mib, machine.kernel
    );
    let _ = writeln!(out, "- command: `{}`", std::env::args().collect::<Vec<_>>().join(" "));
    let _ = writeln!(out, "- outpost: {}", outpost_version(&args.outpost));
    let _ = writeln!(out, "- ripgrep: {}", have_rg.as_deref().unwrap_or("not available (rg column skipped)"));
    let _ = writeln!(out, "- load average at start: {}", procfs::load_average());
    let _ = writeln!(
        out,
        "- load: {} lines ({:.0} B mean) over {} min ending now, 100 streams (5 namespaces × 4 services × 5 pods; \
         logfmt and JSON bodies), {} requests of {} lines ({:.1} MB protobuf, {:.1} MB snappy on the wire), {} senders; \
         lines per namespace: {}",
        fmt_int(lines),
        load.line_bytes as f64 / lines,
        args.minutes,
        load.requests.len(),
        args.batch_lines,
        load.proto_bytes as f64 / 1e6,
        load.wire_bytes as f64 / 1e6,
        args.senders,
        load.per_namespace.iter().map(|(n, c)| format!("{n} {}", fmt_int(*c as f64))).collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        out,
        "- queries: `query_range` over the data's {} min, step {} s (metric queries), limit 1000 backward (log \
         queries); 1 untimed + {} timed runs each; rg: `rg -c` over the namespaces' text files, as many runs\n",
        args.minutes, args.step, args.runs
    );
    let _ = writeln!(out, "## Ingest and storage\n");
    let _ = writeln!(
        out,
        "| lines | wall s | lines/s | MB/s (lines) | server CPU-s | CPU-s per M lines | logs/ bytes | bytes per line | RSS after ingest MiB | peak RSS MiB (ingest + flush) |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {:.1} | {} | {:.1} | {:.2} | {:.2} | {} | {:.1} | {:.0} | {:.0} |",
        fmt_int(lines),
        ing.window.as_secs_f64(),
        fmt_int(lines / ing.window.as_secs_f64()),
        load.line_bytes as f64 / 1e6 / ing.window.as_secs_f64(),
        cpu_ingest,
        cpu_per_m,
        fmt_int(flushed.logs_bytes.0 as f64),
        bytes_per_line,
        mib(rss_after_ingest),
        mib(hwm_flush.max(hwm_ingest)),
    );
    let _ = writeln!(out, "\nDetails:\n");
    let _ = writeln!(
        out,
        "| requests | retries (429/503) | push p50 / p99 ms | client CPU-s | other CPU-s | flush wait s | flush CPU-s | CPU-s per M incl. flush | logs/ allocated bytes | WAL bytes after checkpoint | whole data folder bytes | raw text bytes | RSS after flush MiB | RSS after queries MiB | peak RSS at end MiB | WARN/ERROR lines |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {} | {:.1} / {:.1} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |",
        fmt_int(ing.requests as f64),
        ing.retries,
        ing.latency_p50_ms,
        ing.latency_p99_ms,
        ing.client_cpu_s,
        other_cpu.max(0.0),
        flushed.wall.as_secs_f64(),
        cpu2 - cpu1,
        (cpu2 - cpu0) / (lines / 1e6),
        fmt_int(flushed.logs_bytes.1 as f64),
        fmt_int(flushed.wal_bytes as f64),
        fmt_int(flushed.data_dir_bytes as f64),
        fmt_int(load.line_bytes as f64 + lines),
        mib(rss_after_flush),
        mib(rss_after_queries),
        mib(hwm_end),
        problems.0,
    );
    if !results.is_empty() {
        let _ = writeln!(out, "\n## Queries (p50 / p99 ms)\n");
        let _ = writeln!(
            out,
            "| query | outpost | rg (same lines, plain text) | outpost ÷ rg (p50) | Loki 2.8 | target | outpost's answer | rg's count |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---|---:|");
        for (q, r) in qs.iter().zip(&results) {
            let (rg, ratio, count) = match r.rg {
                Some((p50, p99, c)) => {
                    (format!("{p50:.1} / {p99:.1}"), format!("{:.2}×", r.p50_ms / p50), fmt_int(c as f64))
                }
                None => (String::new(), String::new(), String::new()),
            };
            let _ = writeln!(
                out,
                "| {} | {:.1} / {:.1} | {rg} | {ratio} | {} | {} | {} | {count} |",
                q.label,
                r.p50_ms,
                r.p99_ms,
                q.loki,
                q.target,
                r.answer.describe(q.kind)
            );
        }
        let _ = writeln!(out, "\nQueries:\n");
        for q in &qs {
            let rg = match &q.rg {
                Some((ns, a)) => format!(
                    " — rg `{}` over {}",
                    a.join(" "),
                    ns.iter().map(|n| format!("{n}.log")).collect::<Vec<_>>().join(", ")
                ),
                None => String::new(),
            };
            let what = match q.kind {
                Kind::Related => format!("`GET /outpost/api/v1/traces/{}/related`", q.query),
                _ => format!("`{}`", q.query),
            };
            let _ = writeln!(out, "- {}: {what}{rg}", q.label);
        }
        let _ = writeln!(out, "\nThe needle trace id is carried by {} lines.", load.needle.1);
    }
    let _ = writeln!(out, "\n## Against issue 4's targets\n");
    let _ = writeln!(out, "| figure | outpost | Loki 2.8 | target | met |");
    let _ = writeln!(out, "|---|---:|---:|---|---|");
    let met = |ok: bool| if ok { "yes" } else { "no" };
    let _ = writeln!(out, "| CPU-s per M lines ingested | {cpu_per_m:.2} | 3.2 | ≤ 1.0 | {} |", met(cpu_per_m <= 1.0));
    let _ = writeln!(out, "| lines/s (wall) | {} | ~315,000 | | |", fmt_int(lines / ing.window.as_secs_f64()));
    let _ = writeln!(
        out,
        "| bytes per line on disk | {bytes_per_line:.1} | 106 | ≤ 50 | {} |",
        met(bytes_per_line <= 50.0)
    );
    let peak = mib(hwm_end);
    let _ = writeln!(
        out,
        "| peak RSS MiB | {peak:.0} | ~1,620 (1.7 GB) | < 286 (300 MB) | {} |",
        met(peak * 1_048_576.0 < 300e6)
    );
    for (q, r) in qs.iter().zip(&results) {
        let ms = r.p50_ms;
        let (loki, target, ok) = match q.label {
            l if l.starts_with("trace_id look-up") => ("1.8–5.4 s", "< 50 ms", Some(ms < 50.0)),
            l if l.starts_with("sum by (service) count_over_time") => ("9.1 s", "≤ 910 ms", Some(ms <= 910.0)),
            l if l.starts_with("… with") => ("3.8 s", "≤ 380 ms", Some(ms <= 380.0)),
            _ => ("", "", None),
        };
        if let Some(ok) = ok {
            let _ = writeln!(out, "| {} p50 ms | {ms:.1} | {loki} | {target} | {} |", q.label, met(ok));
        }
        if let Some((rg50, _, _)) = r.rg {
            let ratio = ms / rg50;
            let _ = writeln!(out, "| {} ÷ rg (p50) | {ratio:.2}× | | ≤ 2× | {} |", q.label, met(ratio <= 2.0));
        }
    }
    print!("{out}");
    if args.hold {
        eprintln!("[logs_bench] holding: outpost pid {pid} at {base}; press Enter to stop");
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    }
    server.kill();
    Ok(())
}

fn outpost_version(bin: &Path) -> String {
    format!("`{}` ({})", bin.display(), benches::child::outpost_version(bin))
}

fn unix_now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_realistic() {
        let mut a = Gen::new(1);
        let mut b = Gen::new(1);
        let mut total = 0;
        for k in 0..2000 {
            let (x, y) = (a.line(k * 1000), b.line(k * 1000));
            assert_eq!(x.body, y.body);
            assert_eq!(x.stream, y.stream);
            total += x.body.len();
            if a.defs[x.stream].json {
                let v: serde_json::Value = serde_json::from_str(&x.body).expect("JSON body");
                assert!(v["level"].is_string() && v["status"].is_u64(), "{}", x.body);
            } else {
                assert!(x.body.contains(" level="), "{}", x.body);
            }
        }
        let mean = total / 2000;
        assert!((200..=300).contains(&mean), "mean line length {mean}");
        assert_eq!(a.defs.len(), 100);
    }

    #[test]
    fn five_million_lines_an_hour_stay_in_range() {
        let args = Args::parse_from(["logs_bench", "--lines", "5000000", "--minutes", "60"]);
        let (n, span) = (args.lines as i64, (args.minutes * 60) as i64 * 1_000_000_000);
        let at = |idx: i64| (span as i128 * idx as i128 / (n as i128 - 1)) as i64;
        assert_eq!(at(n - 1), span);
        assert!(at(n / 2) > 0 && at(n / 2) < span);
    }

    #[test]
    fn timestamps_format() {
        assert_eq!(rfc3339(1_763_683_200_123_456_789), "2025-11-21T00:00:00.123456Z");
    }
}

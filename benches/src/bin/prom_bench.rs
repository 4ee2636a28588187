//! `prom_bench`: Prometheus remote write and PromQL range queries, Outpost next to Prometheus and
//! VictoriaMetrics on the same machine with the same load. See `benches/README.md`.
//!
//! For each server in turn (never two ingesting at once): start it with a fresh data folder on
//! loopback; send `--hours` of simulated samples for `--series` active series (one sample every
//! `--interval` s, timestamps ending now) over remote write from `--senders` senders (series
//! sharded by index, as Prometheus' queue manager shards them; batches of `--batch` samples);
//! read the server's CPU seconds and RSS from `/proc`; flush (Outpost: wait for a checkpoint;
//! Prometheus: a snapshot of the head as a block; VictoriaMetrics: `/internal/force_flush` and
//! `/internal/force_merge`) and measure the bytes on disk; keep it running, idle. Once all are
//! loaded, run the range-query set `--query-runs` times, the servers taking turns run by run (so a
//! shared host's drift moves every server's latency alike), and report p50/p99 latency; then each
//! server's live phase, one at a time. Any non-2xx answer aborts the run.

#![allow(clippy::print_stdout, reason = "the report is the program's output")]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use benches::child::{ServerProcess, TempDir};
use benches::procfs::{self, Machine};
use benches::prom_load::{HISTOGRAM, PromLoad, REQUESTS};
use benches::report::{civil, fmt_int, percentile, utc_now};
use clap::{Parser, ValueEnum};

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug, Clone)]
#[command(name = "prom_bench", about = "Remote write + PromQL: Outpost next to Prometheus and VictoriaMetrics")]
struct Args {
    /// The `outpost` binary (built with `cargo build --release --workspace`).
    #[arg(long, default_value = "target/release/outpost")]
    outpost: PathBuf,
    /// The Prometheus binary (Debian's `prometheus` package: 2.42).
    #[arg(long, default_value = "/usr/bin/prometheus")]
    prometheus: PathBuf,
    /// The VictoriaMetrics single-node binary (Debian's `victoria-metrics` package: 1.79).
    #[arg(long, default_value = "/usr/bin/victoria-metrics")]
    victoria_metrics: PathBuf,
    /// Active series (rounded up to whole targets of 100 series).
    #[arg(long, default_value_t = 10_000)]
    series: usize,
    /// Simulated hours of data, ending now.
    #[arg(long, default_value_t = 2.0)]
    hours: f64,
    /// Simulated scrape interval, seconds.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Concurrent remote-write senders, one connection each.
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// Samples per remote-write request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Servers to measure, in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Target::Outpost, Target::Prometheus, Target::VictoriaMetrics])]
    targets: Vec<Target>,
    /// Timed runs of each query (after one untimed warm-up run).
    #[arg(long, default_value_t = 10)]
    query_runs: usize,
    /// Range of the range queries, minutes (ending at the last sample).
    #[arg(long, default_value_t = 60)]
    query_minutes: u64,
    /// Step of the range queries, seconds.
    #[arg(long, default_value_t = 30)]
    query_step: u64,
    /// Parent folder of the servers' fresh data folders (the system temp folder by default).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Skip the queries.
    #[arg(long)]
    no_queries: bool,
    /// Minutes of live load after the queries: every `--interval` seconds, one sample of every
    /// series stamped with the wall clock, as scrapes of the active series arrive. RSS is read at
    /// the end (the steady-state memory of the active series); 0 skips it.
    #[arg(long, default_value_t = 3.0)]
    live_minutes: f64,
    /// Keep each server running after its queries until Enter is pressed (for `perf record -p`).
    #[arg(long)]
    hold: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Outpost,
    Prometheus,
    VictoriaMetrics,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Outpost => "outpost",
            Target::Prometheus => "prometheus",
            Target::VictoriaMetrics => "victoria-metrics",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prom_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A peer server (Prometheus, VictoriaMetrics): output to a log file, killed on drop.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Peer {
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Proc {
    Outpost(ServerProcess),
    Peer(Peer),
}

/// A running server under test.
struct Server {
    target: Target,
    proc: Proc,
    /// `http://127.0.0.1:port`.
    base: String,
    /// Its fresh data folder.
    dir: TempDir,
}

impl Server {
    fn pid(&self) -> u32 {
        match &self.proc {
            Proc::Outpost(p) => p.pid(),
            Proc::Peer(p) => p.child.id(),
        }
    }

    fn log_tail(&self) -> String {
        match &self.proc {
            Proc::Outpost(p) => p.log_tail(),
            Proc::Peer(p) => p.log_tail(),
        }
    }

    fn problems(&self) -> u64 {
        match &self.proc {
            Proc::Outpost(p) => p.problems().0,
            Proc::Peer(_) => 0,
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn http_client() -> anyhow::Result<reqwest::blocking::Client> {
    Ok(reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(300)).build()?)
}

/// Sends the encoded `WriteRequest` in `buf` as Prometheus does (snappy, remote write 0.1.0),
/// `compressed` as scratch; fails unless the answer is 2xx. Returns the bytes on the wire and the
/// request's latency (from sending to the answer, compression excluded).
fn post_write(
    client: &reqwest::blocking::Client,
    url: &str,
    buf: &[u8],
    compressed: &mut Vec<u8>,
) -> anyhow::Result<(usize, Duration)> {
    compressed.resize(snap::raw::max_compress_len(buf.len()), 0);
    let len = snap::raw::Encoder::new().compress(buf, compressed)?;
    let t = Instant::now();
    let r = client
        .post(url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(compressed[..len].to_vec())
        .send()
        .with_context(|| format!("POST {url}"))?;
    let status = r.status();
    if !status.is_success() {
        let body = r.text().unwrap_or_default();
        bail!("POST {url}: {status}: {}", &body[..body.len().min(500)]);
    }
    Ok((len, t.elapsed()))
}

fn start(target: Target, args: &Args, tmp_root: &Path) -> anyhow::Result<Server> {
    let dir = TempDir::new(tmp_root, &format!("prom-bench-{}", target.as_str()))?;
    match target {
        Target::Outpost => {
            let mut cmd = benches::child::outpost_command(&args.outpost, dir.path());
            // As ingest_bench: the memory guard is lifted so that it cannot turn ingest into 503s;
            // and, like the peers (configured with no scrape target), Outpost does not scrape
            // itself: its own samples at the current time would move the newest sample ahead of
            // the back-dated load by more than the out-of-order window. Everything else is the
            // default configuration (wal.fsync = batch).
            cmd.env("OUTPOST_LOG", "info")
                .env("OUTPOST_MEMORY_LIMIT_BYTES", (16u64 << 30).to_string())
                .env("OUTPOST_SCRAPE__SELF_SCRAPE", "false");
            let p = ServerProcess::spawn(cmd, None, Duration::from_secs(60))?;
            let base = format!("http://{}", p.addrs.http);
            Ok(Server { target, proc: Proc::Outpost(p), base, dir })
        }
        Target::Prometheus | Target::VictoriaMetrics => {
            let port = free_port()?;
            let listen = format!("127.0.0.1:{port}");
            let data = dir.path().join("data");
            fs::create_dir_all(&data)?;
            let log = dir.path().join("server.log");
            let mut cmd;
            let ready_path;
            if target == Target::Prometheus {
                let config = dir.path().join("prometheus.yml");
                fs::write(&config, "global:\n  scrape_interval: 15s\nscrape_configs: []\n")?;
                cmd = Command::new(&args.prometheus);
                cmd.arg(format!("--config.file={}", config.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address={listen}"))
                    .arg("--web.enable-remote-write-receiver")
                    // For the snapshot that writes the head as a block (the size measurement).
                    .arg("--web.enable-admin-api");
                ready_path = "/-/ready";
            } else {
                cmd = Command::new(&args.victoria_metrics);
                cmd.arg(format!("-storageDataPath={}", data.display()))
                    .arg(format!("-httpListenAddr={listen}"))
                    // No response cache: every timed query is computed from the data, as in the
                    // other two servers.
                    .arg("-search.disableCache");
                ready_path = "/health";
            }
            let logf = fs::File::create(&log)?;
            cmd.stdin(Stdio::null()).stdout(logf.try_clone()?).stderr(logf);
            let child = cmd.spawn().with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
            let peer = Peer { child, log };
            let base = format!("http://{listen}");
            let client = http_client()?;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(r) = client.get(format!("{base}{ready_path}")).send()
                    && r.status().is_success()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} not ready within 60 s; its log:\n{}", target.as_str(), peer.log_tail());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(Server { target, proc: Proc::Peer(peer), base, dir })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------------

struct IngestResult {
    samples: u64,
    requests: u64,
    wire_bytes: u64,
    window: Duration,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    client_cpu_s: f64,
}

/// How far (in steps) a sender may run ahead of the slowest one: keeps every series' samples in
/// time order and all senders within Outpost's out-of-order window (10 min) and Prometheus' head
/// append window (1 h).
const MAX_LEAD_STEPS: usize = 4;

fn ingest(
    server: &Server,
    load: &Arc<PromLoad>,
    args: &Args,
    first_ms: i64,
    steps: usize,
) -> anyhow::Result<IngestResult> {
    let url = format!("{}/api/v1/write", server.base);
    let progress: Arc<Vec<AtomicUsize>> = Arc::new((0..args.senders).map(|_| AtomicUsize::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let client_cpu0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let mut handles = Vec::new();
    for k in 0..args.senders {
        let (load, progress, stop, samples, url) =
            (Arc::clone(load), Arc::clone(&progress), Arc::clone(&stop), Arc::clone(&samples), url.clone());
        let (senders, batch, interval_ms) = (args.senders, args.batch, args.interval as i64 * 1000);
        handles.push(std::thread::spawn(move || -> anyhow::Result<(u64, u64, Vec<f64>)> {
            let client = http_client()?;
            let mine: Vec<usize> = (k..load.series.len()).step_by(senders).collect();
            let mut values = vec![f64::NAN; mine.len()];
            let mut buf = Vec::with_capacity(batch * 300);
            let mut compressed = Vec::new();
            let mut in_batch = 0;
            let (mut requests, mut wire, mut lat) = (0u64, 0u64, Vec::new());
            let mut send = |buf: &mut Vec<u8>, n: usize| -> anyhow::Result<()> {
                let (len, took) = post_write(&client, &url, buf, &mut compressed)?;
                lat.push(took.as_secs_f64() * 1e3);
                requests += 1;
                wire += len as u64;
                samples.fetch_add(n as u64, Ordering::Relaxed);
                buf.clear();
                Ok(())
            };
            let result = (|| -> anyhow::Result<()> {
                for step in 0..steps {
                    // Lockstep (loosely): wait for the slowest sender.
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        let min = progress.iter().map(|p| p.load(Ordering::Acquire)).min().unwrap_or(0);
                        if step <= min + MAX_LEAD_STEPS {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    let ts = first_ms + step as i64 * interval_ms;
                    for (j, &i) in mine.iter().enumerate() {
                        let s = &load.series[i];
                        values[j] = s.next_value(step as u64, values[j]);
                        // Each target scrapes at its own offset within the interval.
                        let offset = (i / 100) as i64 * 7919 % interval_ms;
                        s.encode_sample(values[j], ts + offset, &mut buf);
                        in_batch += 1;
                        if in_batch == batch {
                            send(&mut buf, in_batch)?;
                            in_batch = 0;
                        }
                    }
                    progress[k].store(step + 1, Ordering::Release);
                }
                if in_batch > 0 {
                    send(&mut buf, in_batch)?;
                }
                progress[k].store(usize::MAX / 2, Ordering::Release);
                Ok(())
            })();
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result.map(|()| (requests, wire, lat))
        }));
    }
    let mut requests = 0;
    let mut wire = 0;
    let mut lat = Vec::new();
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((r, w, l))) => {
                requests += r;
                wire += w;
                lat.extend(l);
            }
            Ok(Err(e)) => err = err.or(Some(e)),
            Err(_) => err = err.or(Some(anyhow::anyhow!("a sender panicked"))),
        }
    }
    let window = started.elapsed();
    if let Some(e) = err {
        return Err(e);
    }
    let client_cpu_s = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - client_cpu0;
    lat.sort_by(f64::total_cmp);
    Ok(IngestResult {
        samples: samples.load(Ordering::Relaxed),
        requests,
        wire_bytes: wire,
        window,
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        client_cpu_s,
    })
}

// ---------------------------------------------------------------------------------------------
// Flush and size
// ---------------------------------------------------------------------------------------------

/// `(apparent bytes, allocated bytes)` of the files under `dir`, skipping `skip` (a sub-folder).
fn dir_size(dir: &Path, skip: Option<&Path>) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    if let Ok(m) = fs::symlink_metadata(dir)
        && m.is_file()
    {
        return (m.len(), m.blocks() * 512);
    }
    let Ok(rd) = fs::read_dir(dir) else { return total };
    for e in rd.flatten() {
        let p = e.path();
        if Some(p.as_path()) == skip {
            continue;
        }
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            let (a, b) = dir_size(&p, skip);
            total.0 += a;
            total.1 += b;
        } else if m.is_file() {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

/// Polls `dir`'s size until it stays the same for `quiet` (at most `max`).
fn wait_size_stable(dir: &Path, quiet: Duration, max: Duration) -> (u64, u64) {
    let deadline = Instant::now() + max;
    let mut last = dir_size(dir, None);
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = dir_size(dir, None);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

struct FlushResult {
    /// What the size measures.
    what: &'static str,
    /// The measured bytes (apparent, allocated).
    bytes: (u64, u64),
    /// The whole data folder after the flush (apparent), for the details.
    data_dir_bytes: u64,
    flush_wall: Duration,
}

fn flush(server: &Server, ingest_end: SystemTime) -> anyhow::Result<FlushResult> {
    let client = http_client()?;
    let t = Instant::now();
    match server.target {
        Target::Outpost => {
            // The 30 s maintenance tick checkpoints (the metrics engine writes its head into
            // blocks, the WAL before it is removed) and then compacts. Wait for a checkpoint that
            // started after the last acknowledged write, then for the folder to settle.
            let persisted = server.dir.path().join("metrics").join("persisted.json");
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let m = fs::metadata(&persisted).and_then(|m| m.modified()).ok();
                if m.is_some_and(|m| m > ingest_end) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("outpost did not checkpoint within 180 s of the end of ingest");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            // A checkpoint that began before the last write ended leaves the rest of the head in
            // the WAL (queries would read part of the data from the head): wait for the one after
            // it, which writes the rest and trims the WAL.
            let wal = server.dir.path().join("wal");
            while dir_size(&wal, None).0 > 1 << 20 {
                if Instant::now() > deadline {
                    bail!("outpost did not trim its WAL within 180 s of the end of ingest");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            let all = wait_size_stable(server.dir.path(), Duration::from_secs(3), Duration::from_secs(60));
            let metrics = dir_size(&server.dir.path().join("metrics"), None);
            if let Ok(rd) = fs::read_dir(server.dir.path()) {
                let mut parts: Vec<String> = rd
                    .flatten()
                    .map(|e| format!("{} {}", e.file_name().to_string_lossy(), dir_size(&e.path(), None).0))
                    .collect();
                parts.sort();
                eprintln!("[prom_bench]   outpost data folder after the checkpoint (bytes): {}", parts.join(", "));
            }
            Ok(FlushResult {
                what: "metrics/ (blocks) after a checkpoint",
                bytes: metrics,
                data_dir_bytes: all.0,
                flush_wall: t.elapsed(),
            })
        }
        Target::Prometheus => {
            // The head holds everything (Prometheus compacts a head once it spans 3 h); a snapshot
            // writes the head as one block, which is what compaction would write.
            let url = format!("{}/api/v1/admin/tsdb/snapshot", server.base);
            let r = client.post(&url).send()?;
            let status = r.status();
            let v: serde_json::Value = r.json().with_context(|| format!("POST {url}: {status}"))?;
            let name = v["data"]["name"].as_str().with_context(|| format!("POST {url}: {v}"))?.to_string();
            let data = server.dir.path().join("data");
            let snapshots = data.join("snapshots");
            let block = dir_size(&snapshots.join(name), None);
            let rest = dir_size(&data, Some(&snapshots));
            Ok(FlushResult {
                what: "the head written as a block (snapshot)",
                bytes: block,
                data_dir_bytes: rest.0,
                flush_wall: t.elapsed(),
            })
        }
        Target::VictoriaMetrics => {
            let r = client.get(format!("{}/internal/force_flush", server.base)).send()?;
            if !r.status().is_success() {
                bail!("force_flush: {}", r.status());
            }
            let d = civil(unix_now_s());
            let r = client
                .get(format!("{}/internal/force_merge?partition_prefix={:04}_{:02}", server.base, d.0, d.1))
                .send()?;
            if !r.status().is_success() {
                bail!("force_merge: {}", r.status());
            }
            let all = wait_size_stable(server.dir.path(), Duration::from_secs(5), Duration::from_secs(120));
            let data = dir_size(&server.dir.path().join("data"), None);
            Ok(FlushResult {
                what: "-storageDataPath after force_flush + force_merge",
                bytes: data,
                data_dir_bytes: all.0,
                flush_wall: t.elapsed(),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

struct QueryResult {
    p50_ms: f64,
    p99_ms: f64,
    /// Series in the answer, and the sum of the values at the last step (a cross-check).
    series: usize,
    last_sum: f64,
}

fn queries(load: &PromLoad) -> Vec<(String, String)> {
    let rq = load.request_series;
    let bk = load.bucket_series;
    vec![
        (format!("sum by (job) rate, {rq} series"), format!("sum by (job) (rate({REQUESTS}[5m]))")),
        (
            format!("histogram_quantile, {bk} series"),
            format!("histogram_quantile(0.9, sum by (le) (rate({HISTOGRAM}_bucket[5m])))"),
        ),
        ("selector, 1 job × status 500".to_string(), format!("{REQUESTS}{{job=\"checkout\",status=\"500\"}}")),
        (format!("topk 5 by pod, {rq} series"), format!("topk(5, sum by (pod) (rate({REQUESTS}[5m])))")),
        (format!("count by (namespace, method), {rq} series"), format!("count by (namespace, method) ({REQUESTS})")),
    ]
}

fn run_query(
    client: &reqwest::blocking::Client,
    base: &str,
    q: &str,
    start: i64,
    end: i64,
    step: u64,
) -> anyhow::Result<(usize, f64)> {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", q)
        .append_pair("start", &start.to_string())
        .append_pair("end", &end.to_string())
        .append_pair("step", &step.to_string())
        .finish();
    let url = format!("{base}/api/v1/query_range?{body}");
    let r = client.get(&url).send().with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let text = r.text()?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", &text[..text.len().min(500)]);
    }
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON"))?;
    let result = v["data"]["result"].as_array().with_context(|| format!("GET {url}: no data.result"))?;
    let mut sum = 0.0;
    for s in result {
        if let Some(last) = s["values"].as_array().and_then(|a| a.last())
            && let Some(x) = last[1].as_str().and_then(|x| x.parse::<f64>().ok())
            && x.is_finite()
        {
            sum += x;
        }
    }
    Ok((result.len(), sum))
}

// ---------------------------------------------------------------------------------------------
// One server, the whole benchmark
// ---------------------------------------------------------------------------------------------

/// The live phase: every `--interval` seconds for `--live-minutes`, one sample of every series
/// at the wall clock (one sender, `--batch` samples per request). Returns the server's RSS at the
/// end (KiB) and the largest RSS read at the end of each round.
fn live(server: &Server, pid: u32, load: &PromLoad, args: &Args) -> anyhow::Result<(u64, u64)> {
    let url = format!("{}/api/v1/write", server.base);
    let client = http_client()?;
    let rounds = ((args.live_minutes * 60.0) / args.interval as f64).round().max(1.0) as u64;
    // Values restart from each series' first value: a counter reset for the counters, which
    // the servers take in their stride; the memory does not depend on the values.
    let mut values = vec![f64::NAN; load.series.len()];
    let (mut buf, mut compressed) = (Vec::with_capacity(args.batch * 300), Vec::new());
    let mut max_rss = 0;
    let started = Instant::now();
    for round in 0..rounds {
        let due = started + Duration::from_secs(round * args.interval);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
        for (chunk_no, chunk) in load.series.chunks(args.batch).enumerate() {
            buf.clear();
            for (j, s) in chunk.iter().enumerate() {
                let i = chunk_no * args.batch + j;
                values[i] = s.next_value(round, values[i]);
                s.encode_sample(values[i], ts, &mut buf);
            }
            post_write(&client, &url, &buf, &mut compressed).context("live load")?;
        }
        max_rss = max_rss.max(procfs::status_kib(pid, "VmRSS")?.unwrap_or(0));
    }
    // The end: one interval after the last round, as a scrape-driven server sits between scrapes.
    std::thread::sleep(Duration::from_secs(args.interval));
    let rss = procfs::status_kib(pid, "VmRSS")?.unwrap_or(0);
    Ok((rss, max_rss.max(rss)))
}

struct ServerResult {
    target: Target,
    ingest: IngestResult,
    cpu_ingest_s: f64,
    cpu_flush_s: f64,
    rss_after_ingest_kib: u64,
    rss_after_queries_kib: u64,
    /// RSS at the end of the live phase, and the most read during it (KiB); 0 when skipped.
    rss_live_kib: (u64, u64),
    peak_rss_kib: u64,
    flush: FlushResult,
    queries: Vec<QueryResult>,
    problems: u64,
}

impl ServerResult {
    fn cpu_per_million(&self) -> f64 {
        self.cpu_ingest_s / (self.ingest.samples as f64 / 1e6)
    }
    fn bytes_per_sample(&self) -> f64 {
        self.flush.bytes.0 as f64 / self.ingest.samples as f64
    }
    fn rss_mib(&self) -> f64 {
        self.rss_after_ingest_kib as f64 / 1024.0
    }
}

/// A server after its ingest and flush, kept running for the queries and the live phase.
struct Loaded {
    target: Target,
    server: Server,
    pid: u32,
    ingest: IngestResult,
    cpu_ingest_s: f64,
    cpu_flush_s: f64,
    rss_after_ingest_kib: u64,
    flush: FlushResult,
    /// The newest sample's time (s).
    last_s: i64,
}

/// Starts `target`, sends it the whole load and waits for its flush.
fn load_server(
    target: Target,
    args: &Args,
    load: &Arc<PromLoad>,
    tmp_root: &Path,
    first_ms: i64,
) -> anyhow::Result<Loaded> {
    let steps = ((args.hours * 3600.0) / args.interval as f64).round().max(1.0) as usize;
    let interval_ms = args.interval as i64 * 1000;
    let last_s = (first_ms + (steps as i64 - 1) * interval_ms) / 1000;
    let server = start(target, args, tmp_root)?;
    let pid = server.pid();
    let fail = |e: anyhow::Error, server: &Server| {
        e.context(format!("{} failed; its last log lines:\n{}", target.as_str(), server.log_tail()))
    };
    let cpu0 = procfs::cpu_seconds(pid)?;
    let ingest = match ingest(&server, load, args, first_ms, steps) {
        Ok(r) => r,
        Err(e) => return Err(fail(e, &server)),
    };
    let ingest_end = SystemTime::now();
    let cpu1 = procfs::cpu_seconds(pid)?;
    let rss_after_ingest_kib = procfs::status_kib(pid, "VmRSS")?.unwrap_or(0);
    eprintln!(
        "[prom_bench]   {}: {} samples in {:.1} s ({:.0}/s), {:.2} CPU-s per M samples, RSS {:.0} MiB; flushing ...",
        target.as_str(),
        ingest.samples,
        ingest.window.as_secs_f64(),
        ingest.samples as f64 / ingest.window.as_secs_f64(),
        (cpu1 - cpu0) / (ingest.samples as f64 / 1e6),
        rss_after_ingest_kib as f64 / 1024.0
    );
    let flushed = match flush(&server, ingest_end) {
        Ok(f) => f,
        Err(e) => return Err(fail(e, &server)),
    };
    let cpu2 = procfs::cpu_seconds(pid)?;
    eprintln!(
        "[prom_bench]   {}: {} bytes ({:.2} per sample) in {}",
        target.as_str(),
        flushed.bytes.0,
        flushed.bytes.0 as f64 / ingest.samples as f64,
        flushed.what
    );
    Ok(Loaded {
        target,
        server,
        pid,
        ingest,
        cpu_ingest_s: cpu1 - cpu0,
        cpu_flush_s: cpu2 - cpu1,
        rss_after_ingest_kib,
        flush: flushed,
        last_s,
    })
}

/// Runs the query set against every loaded server, interleaved: for each query, one warm-up run
/// on each server, then each timed run on one server after the other. A host that speeds up or
/// slows down during the benchmark (a shared machine) then moves every server's figures alike,
/// and the ratios compare like with like. Results per server, in `servers` order.
fn run_queries_interleaved(servers: &[Loaded], load: &PromLoad, args: &Args) -> anyhow::Result<Vec<Vec<QueryResult>>> {
    let client = http_client()?;
    let Some(last_s) = servers.iter().map(|s| s.last_s).min() else { return Ok(Vec::new()) };
    let end_s = last_s / args.query_step as i64 * args.query_step as i64;
    let start_s = end_s - (args.query_minutes * 60) as i64;
    let mut out: Vec<Vec<QueryResult>> = servers.iter().map(|_| Vec::new()).collect();
    for (label, q) in queries(load) {
        eprintln!("[prom_bench]   {label} ...");
        let mut answers = Vec::new();
        for s in servers {
            let a = run_query(&client, &s.server.base, &q, start_s, end_s, args.query_step)
                .with_context(|| format!("{}: {q}", s.target.as_str()))?;
            answers.push(a);
        }
        let mut lat: Vec<Vec<f64>> = servers.iter().map(|_| Vec::new()).collect();
        for _ in 0..args.query_runs {
            for (s, l) in servers.iter().zip(&mut lat) {
                let t = Instant::now();
                run_query(&client, &s.server.base, &q, start_s, end_s, args.query_step)
                    .with_context(|| format!("{}: {q}", s.target.as_str()))?;
                l.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        for ((o, mut l), (series, last_sum)) in out.iter_mut().zip(lat).zip(answers) {
            l.sort_by(f64::total_cmp);
            o.push(QueryResult { p50_ms: percentile(&l, 0.5), p99_ms: percentile(&l, 0.99), series, last_sum });
        }
    }
    Ok(out)
}

/// The rest of one server's benchmark after the queries: the live phase, then its figures.
fn finish_server(l: Loaded, queries: Vec<QueryResult>, load: &PromLoad, args: &Args) -> anyhow::Result<ServerResult> {
    let Loaded { target, server, pid, ingest, cpu_ingest_s, cpu_flush_s, rss_after_ingest_kib, flush, .. } = l;
    let rss_after_queries_kib = procfs::status_kib(pid, "VmRSS")?.unwrap_or(0);
    let rss_live_kib = if args.live_minutes > 0.0 {
        eprintln!("[prom_bench]   {}: {} min of live load ...", target.as_str(), args.live_minutes);
        live(&server, pid, load, args)
            .map_err(|e| e.context(format!("{} failed; its last log lines:\n{}", target.as_str(), server.log_tail())))?
    } else {
        (0, 0)
    };
    let peak_rss_kib = procfs::status_kib(pid, "VmHWM")?.unwrap_or(0);
    if args.hold {
        eprintln!("[prom_bench] holding: {} pid {pid} at {}; press Enter to go on", target.as_str(), server.base);
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    }
    Ok(ServerResult {
        target,
        ingest,
        cpu_ingest_s,
        cpu_flush_s,
        rss_after_ingest_kib,
        rss_after_queries_kib,
        rss_live_kib,
        peak_rss_kib,
        flush,
        queries,
        problems: server.problems(),
    })
}

fn bench(args: Args) -> anyhow::Result<()> {
    if args.senders == 0 || args.batch == 0 || args.interval == 0 || args.hours <= 0.0 || args.query_step == 0 {
        bail!("--senders, --batch, --interval, --hours and --query-step must be positive");
    }
    let tmp_root = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine = Machine::current();
    let load = Arc::new(PromLoad::generate(args.series));
    let steps = ((args.hours * 3600.0) / args.interval as f64).round().max(1.0) as usize;
    // One time base for every server (the data ends at the benchmark's start), so that their
    // answers can be compared sample for sample.
    let interval_ms = args.interval as i64 * 1000;
    let first_ms = (unix_now_s() * 1000 - steps as i64 * interval_ms) / interval_ms * interval_ms;
    let mut header = String::new();
    let _ = writeln!(header, "# Outpost metrics benchmark (remote write + PromQL)\n");
    let _ = writeln!(header, "- date: {}", utc_now());
    let _ = writeln!(
        header,
        "- machine: {} CPUs (nproc), {}, {} MiB RAM, Linux {}",
        machine.nproc, machine.cpu_model, machine.mem_total_mib, machine.kernel
    );
    let _ = writeln!(header, "- command: `{}`", std::env::args().collect::<Vec<_>>().join(" "));
    let _ = writeln!(header, "- load average at start: {}", procfs::load_average());
    for t in &args.targets {
        let _ = writeln!(header, "- {}: {}", t.as_str(), version(*t, &args));
    }
    let _ = writeln!(
        header,
        "- load: {} active series ({} targets × 100), {} steps of {} s ({} h) ending now = {} samples; \
         {} senders (series sharded by index), {} samples per request",
        load.series.len(),
        load.targets,
        steps,
        args.interval,
        args.hours,
        steps * load.series.len(),
        args.senders,
        args.batch
    );
    let _ = writeln!(
        header,
        "- queries: range {} min ending at the last sample, step {} s; 1 warm-up + {} timed runs each\n",
        args.query_minutes, args.query_step, args.query_runs
    );
    print!("{header}");
    // Ingest (and flush) one server after the other: the CPU figures are each server's own. The
    // loaded servers stay up, idle, for the interleaved queries; then each gets its live phase
    // alone.
    let mut loaded = Vec::new();
    let mut failure = None;
    for &t in &args.targets {
        eprintln!("[prom_bench] {} ...", t.as_str());
        match load_server(t, &args, &load, &tmp_root, first_ms) {
            Ok(l) => loaded.push(l),
            Err(e) => {
                eprintln!("[prom_bench] {}: {e:#}", t.as_str());
                failure = Some(e);
            }
        }
    }
    let mut per_server = if args.no_queries || loaded.is_empty() {
        Vec::new()
    } else {
        eprintln!("[prom_bench] queries, the servers in turn ...");
        run_queries_interleaved(&loaded, &load, &args)?
    };
    per_server.resize_with(loaded.len(), Vec::new);
    let mut results = Vec::new();
    for (l, q) in loaded.into_iter().zip(per_server) {
        let t = l.target;
        match finish_server(l, q, &load, &args) {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("[prom_bench] {}: {e:#}", t.as_str());
                failure = Some(e);
            }
        }
    }
    print!("{}", report(&results, &load));
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn version(t: Target, args: &Args) -> String {
    let (bin, arg) = match t {
        Target::Outpost => (&args.outpost, "version"),
        Target::Prometheus => (&args.prometheus, "--version"),
        Target::VictoriaMetrics => (&args.victoria_metrics, "-version"),
    };
    Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|s| !s.is_empty())
        .map(|s| format!("`{}` ({s})", bin.display()))
        .unwrap_or_else(|| format!("`{}`", bin.display()))
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() { format!("{:.2}×", a / b) } else { String::new() }
}

fn report(results: &[ServerResult], load: &PromLoad) -> String {
    let mut out = String::new();
    if results.is_empty() {
        return out;
    }
    let _ = writeln!(out, "## Ingest and storage\n");
    let _ = writeln!(
        out,
        "| server | samples | wall s | samples/s | server CPU-s | CPU-s per M samples | RSS after ingest MiB | RSS bytes per series | peak RSS MiB | bytes on disk | bytes per sample |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let n_series = load.series.len() as f64;
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {} | {:.2} |",
            r.target.as_str(),
            fmt_int(r.ingest.samples as f64),
            r.ingest.window.as_secs_f64(),
            fmt_int(r.ingest.samples as f64 / r.ingest.window.as_secs_f64()),
            r.cpu_ingest_s,
            r.cpu_per_million(),
            r.rss_mib(),
            r.rss_after_ingest_kib as f64 * 1024.0 / n_series,
            r.peak_rss_kib as f64 / 1024.0,
            fmt_int(r.flush.bytes.0 as f64),
            r.bytes_per_sample(),
        );
    }
    let _ = writeln!(out, "\n### Details\n");
    let _ = writeln!(
        out,
        "| server | requests | wire MB (snappy) | write p50 / p99 ms | client CPU-s | flush s | flush CPU-s | CPU-s per M incl. flush | size measured | allocated bytes | whole data folder bytes | RSS after queries MiB | RSS live, end / max MiB | WARN/ERROR lines |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} / {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} | {} | {:.0} | {:.0} / {:.0} | {} |",
            r.target.as_str(),
            fmt_int(r.ingest.requests as f64),
            r.ingest.wire_bytes as f64 / 1e6,
            r.ingest.latency_p50_ms,
            r.ingest.latency_p99_ms,
            r.ingest.client_cpu_s,
            r.flush.flush_wall.as_secs_f64(),
            r.cpu_flush_s,
            (r.cpu_ingest_s + r.cpu_flush_s) / (r.ingest.samples as f64 / 1e6),
            r.flush.what,
            fmt_int(r.flush.bytes.1 as f64),
            fmt_int(r.flush.data_dir_bytes as f64),
            r.rss_after_queries_kib as f64 / 1024.0,
            r.rss_live_kib.0 as f64 / 1024.0,
            r.rss_live_kib.1 as f64 / 1024.0,
            r.problems,
        );
    }
    let qs = queries(load);
    if results.iter().any(|r| !r.queries.is_empty()) {
        let _ = writeln!(out, "\n## Range queries (p50 / p99 ms)\n");
        let _ = write!(out, "| query |");
        for r in results {
            let _ = write!(out, " {} |", r.target.as_str());
        }
        let _ = writeln!(out, " outpost ÷ prometheus (p50) | outpost ÷ victoria-metrics (p50) |");
        let _ = write!(out, "|---|");
        for _ in results {
            let _ = write!(out, "---:|");
        }
        let _ = writeln!(out, "---:|---:|");
        let find = |t: Target| results.iter().find(|r| r.target == t && !r.queries.is_empty());
        for (k, (label, _)) in qs.iter().enumerate() {
            let _ = write!(out, "| {label} |");
            for r in results {
                match r.queries.get(k) {
                    Some(q) => {
                        let _ = write!(out, " {:.1} / {:.1} |", q.p50_ms, q.p99_ms);
                    }
                    None => {
                        let _ = write!(out, " |");
                    }
                }
            }
            let o = find(Target::Outpost).and_then(|r| r.queries.get(k)).map(|q| q.p50_ms);
            let p = find(Target::Prometheus).and_then(|r| r.queries.get(k)).map(|q| q.p50_ms);
            let v = find(Target::VictoriaMetrics).and_then(|r| r.queries.get(k)).map(|q| q.p50_ms);
            let cell = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => String::new(),
            };
            let _ = writeln!(out, " {} | {} |", cell(o, p), cell(o, v));
        }
        let _ = writeln!(out, "\nQueries (answer series / sum of the values at the last step, per server):\n");
        for (k, (label, q)) in qs.iter().enumerate() {
            let answers: Vec<String> = results
                .iter()
                .filter_map(|r| {
                    r.queries.get(k).map(|a| format!("{} {} / {:.4}", r.target.as_str(), a.series, a.last_sum))
                })
                .collect();
            let _ = writeln!(out, "- {label}: `{q}` — {}", answers.join("; "));
        }
    }
    // Ratios and targets.
    let find = |t: Target| results.iter().find(|r| r.target == t);
    if let Some(o) = find(Target::Outpost) {
        let _ = writeln!(out, "\n## Outpost's ratios\n");
        let _ = writeln!(out, "| figure | outpost | ÷ prometheus | ÷ victoria-metrics | target |");
        let _ = writeln!(out, "|---|---:|---:|---:|---|");
        let p = find(Target::Prometheus);
        let v = find(Target::VictoriaMetrics);
        let row = |out: &mut String,
                   name: &str,
                   f: &dyn Fn(&ServerResult) -> f64,
                   fmt: &dyn Fn(f64) -> String,
                   target: &str| {
            let ov = f(o);
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {target} |",
                fmt(ov),
                p.map(|p| ratio(ov, f(p))).unwrap_or_default(),
                v.map(|v| ratio(ov, f(v))).unwrap_or_default()
            );
        };
        row(&mut out, "CPU-s per M samples (ingest)", &|r| r.cpu_per_million(), &|x| format!("{x:.2}"), "≤ 0.6× VM");
        row(&mut out, "bytes per sample on disk", &|r| r.bytes_per_sample(), &|x| format!("{x:.2}"), "≤ 0.5× VM");
        row(&mut out, "RSS after ingest, MiB", &|r| r.rss_mib(), &|x| format!("{x:.0}"), "< 100 MiB at 100k series");
        if o.rss_live_kib.0 > 0 {
            row(
                &mut out,
                "RSS under live load (end), MiB",
                &|r| r.rss_live_kib.0 as f64 / 1024.0,
                &|x| format!("{x:.0}"),
                "< 100 MiB at 100k series",
            );
        }
        row(
            &mut out,
            "samples/s (wall)",
            &|r| r.ingest.samples as f64 / r.ingest.window.as_secs_f64(),
            &|x| fmt_int(x),
            "",
        );
        for (k, (label, _)) in qs.iter().enumerate() {
            if o.queries.get(k).is_none() {
                continue;
            }
            row(
                &mut out,
                &format!("{label}, p50 ms"),
                &|r| r.queries.get(k).map(|q| q.p50_ms).unwrap_or(f64::NAN),
                &|x| format!("{x:.1}"),
                if k == 0 || k == 1 { "≤ 0.7× VM" } else { "" },
            );
        }
    }
    out
}

fn unix_now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64
}

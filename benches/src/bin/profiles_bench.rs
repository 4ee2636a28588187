//! `profiles_bench`: profiles ingested per second and flame-graph merge latency of the profiles
//! engine, in process, through the same code the server runs for `Push`: pprof decode and
//! mapping (`ingest::pprof::push`), the durable write (`storage::Storage::write`: WAL + engine),
//! then `merge_stacks` + `query::profiles::flamegraph` as `SelectMergeStacktraces` runs them.
//!
//! Load: `--services` services, each sending one gzipped 10 s CPU profile per 10 s of simulated
//! time for `--minutes` (default 60: one hour), each profile with `--samples` distinct stacks over
//! a `--functions`-function program (a realistic Go service: ~1000 stacks drawn from a stable pool of
//! 3000 per service, a few thousand functions, 20–40 frames deep). Profiles are generated before
//! timing starts.
//!
//! Reports (in process): profiles/s and samples/s of ingest (one writer thread, as one client
//! would push) with this process' CPU-seconds and the rest of the machine's ("other CPU"), RSS
//! after ingest, the latency of merging the whole range into a flame graph for one service and
//! for all services (median of `--repeat` runs) while the profiles are in the in-memory head, the
//! time and size of a checkpoint (Parquet part + symbols + manifest), the same merges once the
//! sample rows are read back from the Parquet part, and after a reopen. A merge over the whole
//! hour adds the part's per-series sums; two more, all services from minute 1 and over the second
//! half, cover the part only partly: they add the sums minus the rows outside the range, or read
//! the rows inside, whichever reads fewer rows. The target for one hour of 20 services is < 200 ms.
//!
//! `--http`: the same profiles pushed to the release `outpost` binary (a child process, fresh data
//! folder) over connect `push.v1.PusherService/Push` (`application/proto`, gzipped pprof, one
//! profile per request) by `--clients` threads; reports profiles/s, the server's CPU-seconds per
//! 1000 profiles and its RSS, then `SelectMergeStacktraces` latency (protobuf, client side) for one
//! service and for all, before and after the server's first checkpoint (every 30 s).

#![allow(clippy::print_stdout, reason = "the report is the program's output")]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use benches::procfs;
use clap::Parser;
use ingest::pprof::proto as pp;
use prost::Message;
use storage::model::WriteBatch;
use storage::{Matcher, ProfileSelect, Reader};

#[derive(Parser, Debug)]
#[command(name = "profiles_bench", about = "Profiles ingest throughput and flame-graph merge latency")]
struct Args {
    /// Services sending profiles.
    #[arg(long, default_value_t = 20)]
    services: usize,
    /// Simulated minutes of profiles (one profile per service per 10 s).
    #[arg(long, default_value_t = 60)]
    minutes: usize,
    /// Distinct stacks per profile.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Functions in each service's program.
    #[arg(long, default_value_t = 3000)]
    functions: usize,
    /// Merge runs per query (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Push to the release binary over HTTP instead of running the engine in process.
    #[arg(long)]
    http: bool,
    /// `--http`: the outpost binary (default: `outpost` next to this executable).
    #[arg(long)]
    outpost: Option<std::path::PathBuf>,
    /// `--http`: concurrent push clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One service's 10 s CPU profile at `time_ns`, gzipped, as the Go SDK pushes it.
fn profile(service: usize, time_ns: i64, args: &Args, rng: &mut Rng) -> Vec<u8> {
    let mut strings = vec![String::new(), "samples".into(), "count".into(), "cpu".into(), "nanoseconds".into()];
    let f0 = strings.len() as i64;
    for f in 0..args.functions {
        strings.push(format!("github.com/acme/svc{service}/pkg{}.(*T{}).Method{f}", f % 37, f % 11));
    }
    let function: Vec<pp::Function> = (0..args.functions)
        .map(|f| pp::Function {
            id: f as u64 + 1,
            name: f0 + f as i64,
            system_name: f0 + f as i64,
            ..Default::default()
        })
        .collect();
    let location: Vec<pp::Location> = (0..args.functions)
        .map(|f| pp::Location {
            id: f as u64 + 1,
            address: 0x40_0000 + 16 * f as u64,
            line: vec![pp::Line { function_id: f as u64 + 1, line: 10 + (f % 200) as i64, column: 0 }],
            ..Default::default()
        })
        .collect();
    // A service runs a stable set of code paths: each profile draws its stacks from the service's
    // pool of `3 × samples` stacks (generated from a per-service seed), with fresh counts.
    let mut pool_rng = Rng(0x5EED_0000 + service as u64);
    let pool: Vec<Vec<u64>> = (0..args.samples * 3)
        .map(|_| {
            let depth = 20 + pool_rng.below(20);
            // Stacks share prefixes as real call trees do: few roots, deeper frames spread out.
            let mut stack: Vec<u64> = (0..depth)
                .map(|d| {
                    let width = (d * d + 4).min(args.functions);
                    (pool_rng.below(width) + 1) as u64
                })
                .collect();
            stack.reverse(); // leaf first
            stack
        })
        .collect();
    let sample = (0..args.samples)
        .map(|_| {
            let n = 1 + rng.below(20) as i64;
            pp::Sample {
                location_id: pool[rng.below(pool.len())].clone(),
                value: vec![n, n * 10_000_000],
                label: Vec::new(),
            }
        })
        .collect();
    let p = pp::Profile {
        sample_type: vec![pp::ValueType { r#type: 1, unit: 2 }, pp::ValueType { r#type: 3, unit: 4 }],
        sample,
        location,
        function,
        string_table: strings,
        time_nanos: time_ns,
        duration_nanos: 10_000_000_000,
        period_type: Some(pp::ValueType { r#type: 3, unit: 4 }),
        period: 10_000_000,
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&p.encode_to_vec()).expect("in-memory write");
    gz.finish().expect("in-memory write")
}

fn push_request(service: usize, raw: Vec<u8>) -> pp::PushRequest {
    pp::PushRequest {
        series: vec![pp::RawProfileSeries {
            labels: vec![
                pp::LabelPair { name: "__name__".into(), value: "process_cpu".into() },
                pp::LabelPair { name: "service_name".into(), value: format!("svc-{service}") },
            ],
            samples: vec![pp::RawSample { raw_profile: raw, id: String::new() }],
        }],
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

const CPU: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
/// Start of the simulated range in process: a fixed date, so runs are comparable.
const START_NS: i64 = 1_700_000_000_000_000_000;

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// `(own CPU-s, machine busy CPU-s)` now.
fn cpu_now(pid: u32) -> (f64, f64) {
    (procfs::cpu_seconds(pid).unwrap_or(0.0), procfs::machine_busy_seconds().unwrap_or(0.0))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profiles_per_service = (args.minutes * 6).max(1);
    let machine = procfs::Machine::current();
    println!(
        "profiles_bench: {} services × {} profiles (10 s each), {} stacks per profile, {} functions; {} CPUs ({}), {} MiB, Linux {}, load {}",
        args.services,
        profiles_per_service,
        args.samples,
        args.functions,
        machine.nproc,
        machine.cpu_model,
        machine.mem_total_mib,
        machine.kernel,
        procfs::load_average()
    );
    // Over HTTP the server's retention (7 days) applies: the range ends a minute before now.
    let start_ns = if args.http {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as i64;
        now - profiles_per_service as i64 * 10_000_000_000 - 60_000_000_000
    } else {
        START_NS
    };
    let t = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut payloads = Vec::with_capacity(args.services * profiles_per_service);
    for i in 0..profiles_per_service {
        for s in 0..args.services {
            let time = start_ns + i as i64 * 10_000_000_000;
            payloads.push((s, profile(s, time, &args, &mut rng)));
        }
    }
    let wire: usize = payloads.iter().map(|p| p.1.len()).sum();
    println!(
        "generated {} profiles, {:.1} MiB gzipped ({:.1} KiB each), in {:.1?}",
        payloads.len(),
        wire as f64 / (1 << 20) as f64,
        wire as f64 / 1024.0 / payloads.len().max(1) as f64,
        t.elapsed()
    );
    let end_ns = start_ns + profiles_per_service as i64 * 10_000_000_000;
    if args.http { http(&args, payloads, start_ns, end_ns) } else { in_process(&args, payloads, end_ns) }
}

fn in_process(args: &Args, payloads: Vec<(usize, Vec<u8>)>, end_ns: i64) -> anyhow::Result<()> {
    let pid = std::process::id();
    let dir = tempfile::tempdir().context("temporary data folder")?;
    let open = || {
        storage::Storage::open(storage::StorageOptions::new(dir.path()), Arc::new(storage::NoEvents))
            .map(|s| s.0)
            .context("opening the store")
    };
    let store = open()?;
    let limits = ingest::pprof::PprofLimits::default();
    let n = payloads.len();
    let rss_before = procfs::status_kib(pid, "VmRSS").ok().flatten();
    let (cpu0, busy0) = cpu_now(pid);
    let t = Instant::now();
    let mut samples = 0usize;
    for (s, raw) in payloads {
        let batch = ingest::pprof::push(push_request(s, raw), &limits, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
        samples += batch.item_count();
        store.write(WriteBatch::Profiles(batch)).context("write")?;
    }
    let ingest = t.elapsed();
    let (cpu1, busy1) = cpu_now(pid);
    let own = cpu1 - cpu0;
    println!(
        "ingest: {:.0} profiles/s, {:.0} samples/s ({} pprof profiles → {} stored profiles of 2 types, {} samples) in {:.2?}; \
         CPU {:.2} s ({:.2} CPU-s per 1000 profiles), other CPU on the machine {:.2} s",
        n as f64 / ingest.as_secs_f64(),
        samples as f64 / ingest.as_secs_f64(),
        n,
        2 * n,
        samples,
        ingest,
        own,
        own * 1000.0 / n as f64,
        (busy1 - busy0 - own).max(0.0)
    );
    println!(
        "RSS: {} MiB before ingest, {} MiB after (whole bench process, generated payloads freed)",
        mib(rss_before),
        mib(procfs::status_kib(pid, "VmRSS").ok().flatten())
    );
    merges(args, &store, end_ns, "in-memory head")?;
    let t = Instant::now();
    store.checkpoint().context("checkpoint")?;
    let took = t.elapsed();
    let bytes: u64 =
        std::fs::read_dir(dir.path().join("profiles"))?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!(
        "checkpoint (Parquet part + symbols + manifest): {:.2?}, {:.1} MiB on disk ({:.2} bytes per sample); RSS after {} MiB, peak {} MiB",
        took,
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / samples.max(1) as f64,
        mib(procfs::status_kib(pid, "VmRSS").ok().flatten()),
        mib(procfs::status_kib(pid, "VmHWM").ok().flatten())
    );
    merges(args, &store, end_ns, "Parquet part")?;
    store.close().context("close")?;
    drop(store);
    let t = Instant::now();
    let store = open()?;
    println!("reopen (manifest, symbols, profile rows and span index; no WAL to replay): {:.2?}", t.elapsed());
    merges(args, &store, end_ns, "Parquet part after reopen")?;
    store.close().context("close")?;
    Ok(())
}

fn merges(args: &Args, store: &storage::Storage, end_ns: i64, what: &str) -> anyhow::Result<()> {
    // The last cases start a minute in and half way: a part holding the whole range is then only
    // partly inside it, so a merge adds its per-series sums minus the rows outside the range
    // (a minute's, then half the part's: the most it reads), or reads the rows inside.
    let half_ns = args.minutes as i64 / 2 * 60_000_000_000;
    let cases = [
        ("one service", Some("svc-0"), 0),
        ("all services", None, 0),
        ("all services, from minute 1 (sums minus a minute of rows)", None, 60_000_000_000),
        ("all services, second half (half the rows)", None, half_ns),
    ];
    for (who, extra, skip_ns) in cases {
        let mut matchers = vec![Matcher::eq("__profile_type__", CPU)];
        if let Some(s) = extra {
            matchers.push(Matcher::eq("service_name", s));
        }
        let start_ns = START_NS + skip_ns;
        let sel = ProfileSelect { matchers: &matchers, start_ns, end_ns, span_ids: None, max_samples: u64::MAX };
        let mut times = Vec::new();
        let (mut total, mut nodes, mut first) = (0, 0, Duration::ZERO);
        // CPU of this process over the runs (the merge runs on this thread; /proc counts in ticks,
        // so the mean over the runs is the robust figure on a busy machine).
        let cpu0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
        for i in 0..args.repeat.max(1) {
            let t = Instant::now();
            let merged = store.profile_store().merge_stacks(&sel).map_err(|e| anyhow::anyhow!("{e}"))?;
            let fg = query::profiles::flamegraph(&merged, 8192);
            let took = t.elapsed();
            if i == 0 {
                first = took;
            }
            times.push(took);
            total = fg.total;
            nodes = fg.levels.iter().map(|l| l.len() / 4).sum::<usize>();
        }
        let cpu_ms =
            (procfs::cpu_seconds(std::process::id()).unwrap_or(0.0) - cpu0) * 1000.0 / args.repeat.max(1) as f64;
        let m = median(times);
        println!(
            "flame graph over {} min, {who}, {what}: median {:.1?}, first {:.1?}, CPU {cpu_ms:.0} ms per merge (target < 200 ms: {}), {nodes} nodes, total {total}",
            args.minutes.saturating_sub((skip_ns / 60_000_000_000) as usize),
            m,
            first,
            if m < Duration::from_millis(200) { "met" } else { "missed" }
        );
    }
    Ok(())
}

/// Just the fields of Pyroscope's query messages the bench needs.
mod qp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeStacktracesRequest {
        #[prost(string, tag = "1")]
        pub profile_type_id: String,
        #[prost(string, tag = "2")]
        pub label_selector: String,
        #[prost(int64, tag = "3")]
        pub start: i64,
        #[prost(int64, tag = "4")]
        pub end: i64,
        #[prost(int64, optional, tag = "5")]
        pub max_nodes: Option<i64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SelectMergeStacktracesResponse {
        #[prost(message, optional, tag = "1")]
        pub flamegraph: Option<FlameGraph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FlameGraph {
        #[prost(int64, tag = "3")]
        pub total: i64,
    }
}

fn http(args: &Args, payloads: Vec<(usize, Vec<u8>)>, start_ns: i64, end_ns: i64) -> anyhow::Result<()> {
    use benches::child::{ServerProcess, TempDir};
    let bin = match &args.outpost {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("outpost"),
    };
    let tmp = std::env::temp_dir();
    let dir = TempDir::new(&tmp, "outpost-profiles-bench")?;
    let mut cmd = benches::child::outpost_command(&bin, dir.path());
    // The profiles are an hour old by the wall clock of the server: no age limit applies to Push,
    // but lift the memory guard as ingest_bench does, so that it measures the write path.
    cmd.env("OUTPOST_LOG", "info").env("OUTPOST_MEMORY_LIMIT_BYTES", (16u64 << 30).to_string());
    let server = ServerProcess::spawn(cmd, Some(dir), Duration::from_secs(60))?;
    let pid = server.pid();
    let base = format!("http://{}", server.addrs.http);
    println!("server: {} (pid {pid}) at {base}", bin.display());
    let n = payloads.len();
    let queue =
        Arc::new(std::sync::Mutex::new(payloads.into_iter().map(|(s, raw)| push_request(s, raw).encode_to_vec())));
    let (cpu0, busy0) = cpu_now(pid);
    let (me0, _) = cpu_now(std::process::id());
    let t = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..args.clients.max(1) {
        let queue = Arc::clone(&queue);
        let url = format!("{base}/push.v1.PusherService/Push");
        threads.push(std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let client = reqwest::blocking::Client::new();
            let mut lat = Vec::new();
            loop {
                let Some(body) = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.next() else { break };
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/proto")
                    .header("Connect-Protocol-Version", "1")
                    .body(body)
                    .send()?;
                let status = resp.status();
                let text = resp.text()?;
                anyhow::ensure!(status.is_success(), "Push answered {status}: {text}");
                lat.push(t.elapsed());
            }
            Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for th in threads {
        lat.extend(th.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??);
    }
    let wall = t.elapsed();
    let (cpu1, busy1) = cpu_now(pid);
    let (me1, _) = cpu_now(std::process::id());
    lat.sort();
    let server_cpu = cpu1 - cpu0;
    println!(
        "ingest over HTTP (connect Push, {} clients): {:.0} profiles/s in {:.2?}; Push latency p50 {:.1?} p99 {:.1?}; \
         server CPU {:.2} s ({:.2} CPU-s per 1000 profiles), client CPU {:.2} s, other CPU on the machine {:.2} s; \
         server RSS {} MiB",
        args.clients,
        n as f64 / wall.as_secs_f64(),
        wall,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        server_cpu,
        server_cpu * 1000.0 / n as f64,
        me1 - me0,
        (busy1 - busy0 - server_cpu - (me1 - me0)).max(0.0),
        mib(procfs::status_kib(pid, "VmRSS").ok().flatten())
    );
    let query = |what: &str| -> anyhow::Result<()> {
        let client = reqwest::blocking::Client::new();
        for (who, sel) in [("one service", r#"{service_name="svc-0"}"#), ("all services", "{}")] {
            let req = qp::SelectMergeStacktracesRequest {
                profile_type_id: CPU.into(),
                label_selector: sel.into(),
                start: start_ns / 1_000_000,
                end: end_ns / 1_000_000,
                max_nodes: Some(8192),
            };
            let mut times = Vec::new();
            let mut total = 0;
            for _ in 0..args.repeat.max(1) {
                let t = Instant::now();
                let resp = client
                    .post(format!("{base}/querier.v1.QuerierService/SelectMergeStacktraces"))
                    .header("Content-Type", "application/proto")
                    .header("Connect-Protocol-Version", "1")
                    .body(req.encode_to_vec())
                    .send()?;
                anyhow::ensure!(resp.status().is_success(), "SelectMergeStacktraces answered {}", resp.status());
                let body = resp.bytes()?;
                times.push(t.elapsed());
                total = qp::SelectMergeStacktracesResponse::decode(body.as_ref())?.flamegraph.map_or(0, |f| f.total);
            }
            let m = median(times);
            println!(
                "SelectMergeStacktraces over {} min, {who}, {what}: median {:.1?} (target < 200 ms: {}), total {total}",
                args.minutes,
                m,
                if m < Duration::from_millis(200) { "met" } else { "missed" }
            );
        }
        Ok(())
    };
    query("before the first checkpoint")?;
    // The shell checkpoints every 30 s: after it the rows are read from the Parquet part.
    let manifest = server_data_manifest(&server);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !manifest.as_ref().is_some_and(|m| m.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(2));
    println!("server RSS after its checkpoint: {} MiB", mib(procfs::status_kib(pid, "VmRSS").ok().flatten()));
    query("after the checkpoint (Parquet part)")?;
    let (problems, first) = server.problems();
    if problems > 0 {
        println!("server WARN/ERROR lines: {problems}; first: {first:?}");
    }
    Ok(())
}

/// `<data dir>/profiles/MANIFEST.json` of the child server, from its command line.
fn server_data_manifest(server: &benches::child::ServerProcess) -> Option<std::path::PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).ok()?;
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let i = args.iter().position(|a| a == "--data-dir")?;
    Some(std::path::PathBuf::from(args.get(i + 1)?).join("profiles/MANIFEST.json"))
}

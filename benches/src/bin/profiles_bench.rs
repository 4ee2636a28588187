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
//! Reports: profiles/s and samples/s of ingest (one writer thread, as one client would push),
//! the time of a checkpoint (Parquet parts + manifest), then the latency of merging the whole
//! range into a flame graph for one service and for all services (median of `--repeat` runs);
//! the target for one hour of 20 services is < 200 ms.

#![allow(clippy::print_stdout, reason = "the report is the program's output")]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profiles_per_service = (args.minutes * 6).max(1);
    let start_ns: i64 = 1_700_000_000_000_000_000;
    println!(
        "profiles_bench: {} services × {} profiles (10 s each), {} stacks per profile, {} functions",
        args.services, profiles_per_service, args.samples, args.functions
    );
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
        "generated {} profiles, {:.1} MiB gzipped, in {:.1?}",
        payloads.len(),
        wire as f64 / (1 << 20) as f64,
        t.elapsed()
    );

    let dir = tempfile::tempdir().context("temporary data folder")?;
    let (store, _) = storage::Storage::open(storage::StorageOptions::new(dir.path()), Arc::new(storage::NoEvents))
        .context("opening the store")?;
    let limits = ingest::pprof::PprofLimits::default();
    let n = payloads.len();
    let t = Instant::now();
    let mut samples = 0usize;
    for (s, raw) in payloads {
        let batch = ingest::pprof::push(push_request(s, raw), &limits, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
        samples += batch.item_count();
        store.write(WriteBatch::Profiles(batch)).context("write")?;
    }
    let ingest = t.elapsed();
    println!(
        "ingest: {:.0} profiles/s ({:.0} samples/s; {} pprof profiles → {} stored profiles of 2 types) in {:.2?}",
        n as f64 / ingest.as_secs_f64(),
        samples as f64 / ingest.as_secs_f64(),
        n,
        2 * n,
        ingest
    );
    let t = Instant::now();
    store.checkpoint().context("checkpoint")?;
    let bytes: u64 =
        std::fs::read_dir(dir.path().join("profiles"))?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
    println!(
        "checkpoint (Parquet part + symbols + manifest): {:.2?}, {:.1} MiB on disk",
        t.elapsed(),
        bytes as f64 / (1 << 20) as f64
    );

    let end_ns = start_ns + profiles_per_service as i64 * 10_000_000_000;
    let cpu = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
    for (what, extra) in [("one service", Some("svc-0")), ("all services", None)] {
        let mut matchers = vec![Matcher::eq("__profile_type__", cpu)];
        if let Some(s) = extra {
            matchers.push(Matcher::eq("service_name", s));
        }
        let sel = ProfileSelect { matchers: &matchers, start_ns, end_ns, span_ids: None, max_samples: u64::MAX };
        let mut times = Vec::new();
        let mut total = 0;
        let mut nodes = 0;
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            let merged = store.profile_store().merge_stacks(&sel).map_err(|e| anyhow::anyhow!("{e}"))?;
            let fg = query::profiles::flamegraph(&merged, 8192);
            times.push(t.elapsed());
            total = fg.total;
            nodes = fg.levels.iter().map(|l| l.len() / 4).sum::<usize>();
        }
        let m = median(times);
        println!(
            "flame graph over {} min, {what}: median {:.1?} (target < 200 ms: {}), {nodes} nodes, total {total}",
            args.minutes,
            m,
            if m < Duration::from_millis(200) { "met" } else { "missed" }
        );
    }
    store.close().context("close")?;
    Ok(())
}

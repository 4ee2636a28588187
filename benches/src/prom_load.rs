//! A Prometheus-like metrics load for remote write: `targets` scrape targets, each exposing the
//! same ~100 series (50 metric names: counters, gauges, one classic histogram with 12 buckets per
//! `method`, request counters by `method` and `status`), sampled every `interval` of simulated
//! time. Values follow their kind (integer counter increments, slowly moving gauges, constant
//! `up`/`build_info`, cumulative bucket counts that stay monotone across `le`), and are a pure
//! function of (series, step) plus the running counter state, so every server gets byte-identical
//! requests.
//!
//! Requests are encoded by hand (the label part of each series is encoded once): a
//! `prometheus.WriteRequest` with one `TimeSeries` per sample, as Prometheus' queue manager sends
//! them, snappy block-compressed. The unit test decodes them with `ingest::remote_write`.

use prost::encoding::{encode_varint, encoded_len_varint};

/// Metric name of the request counter (`method` × `status`, 10 series per target).
pub const REQUESTS: &str = "http_requests_total";
/// Metric name of the histogram (12 `le` buckets × 2 methods per target).
pub const HISTOGRAM: &str = "http_request_duration_seconds";

const JOBS: [&str; 10] = [
    "api-gateway",
    "checkout",
    "payments",
    "catalog",
    "search",
    "auth",
    "orders",
    "inventory",
    "notifications",
    "frontend",
];
const NAMESPACES: [&str; 5] = ["shop", "payments", "platform", "search", "edge"];
const LES: [&str; 12] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
/// Share of observations at or under each bound of [`LES`] (monotone, ends at 1).
const CDF: [f64; 12] = [0.02, 0.06, 0.18, 0.37, 0.61, 0.83, 0.93, 0.97, 0.99, 0.995, 0.999, 1.0];

/// How a series' value moves.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Integer increments in `0..max_inc`.
    Counter {
        max_inc: u64,
    },
    /// Increments of `k * 0.01` with `k` in `0..max_inc` (CPU seconds).
    FloatCounter {
        max_inc: u64,
    },
    /// A counter that rarely moves (restarts).
    RareCounter,
    /// A constant.
    Const(f64),
    /// `base + k * quantum`, `k` a slow random walk step.
    Walk {
        base: f64,
        quantum: f64,
    },
    /// A float that changes every sample (load average, temperature): 3 decimals.
    Noisy {
        base: f64,
        spread: f64,
    },
    /// A histogram bucket: cumulative count of `floor(n * CDF[le])`.
    Bucket {
        hist: u32,
        le: u8,
    },
    /// The histogram's `_count` (`n` per step) and `_sum`.
    HistCount {
        hist: u32,
    },
    HistSum {
        hist: u32,
    },
}

/// One series: its encoded labels and how its value moves.
#[derive(Clone, Debug)]
pub struct Series {
    /// The `labels` fields of a `prometheus.TimeSeries`, encoded, names sorted.
    label_bytes: Vec<u8>,
    kind: Kind,
    seed: u64,
}

/// The generated series set.
#[derive(Debug)]
pub struct PromLoad {
    /// All series, in target order.
    pub series: Vec<Series>,
    /// Scrape targets.
    pub targets: usize,
    /// Series with `__name__ = http_requests_total`.
    pub request_series: usize,
    /// Series with `__name__ = http_request_duration_seconds_bucket`.
    pub bucket_series: usize,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn encode_labels(labels: &mut [(String, String)]) -> Vec<u8> {
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (n, v) in labels.iter() {
        let body = 1 + encoded_len_varint(n.len() as u64) + n.len() + 1 + encoded_len_varint(v.len() as u64) + v.len();
        out.push(0x0A); // TimeSeries.labels, LEN
        encode_varint(body as u64, &mut out);
        out.push(0x0A); // Label.name
        encode_varint(n.len() as u64, &mut out);
        out.extend_from_slice(n.as_bytes());
        out.push(0x12); // Label.value
        encode_varint(v.len() as u64, &mut out);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

impl PromLoad {
    /// About `series` series (a whole number of targets of 100 series each, at least one).
    pub fn generate(series: usize) -> PromLoad {
        let targets = series.div_ceil(100).max(1);
        let mut out = Vec::with_capacity(targets * 100);
        let (mut request_series, mut bucket_series) = (0, 0);
        // (name, extra label, its values, kind)
        let single: [(&str, Kind); 30] = [
            ("up", Kind::Const(1.0)),
            ("build_info", Kind::Const(1.0)),
            ("process_start_time_seconds", Kind::Const(1.7637e9)),
            ("process_cpu_seconds_total", Kind::FloatCounter { max_inc: 40 }),
            ("process_resident_memory_bytes", Kind::Walk { base: 180e6, quantum: 4096.0 }),
            ("process_virtual_memory_bytes", Kind::Walk { base: 1.2e9, quantum: 65536.0 }),
            ("process_open_fds", Kind::Walk { base: 40.0, quantum: 1.0 }),
            ("go_goroutines", Kind::Walk { base: 120.0, quantum: 1.0 }),
            ("go_threads", Kind::Walk { base: 14.0, quantum: 1.0 }),
            ("go_memstats_heap_alloc_bytes", Kind::Walk { base: 60e6, quantum: 8192.0 }),
            ("go_memstats_heap_inuse_bytes", Kind::Walk { base: 70e6, quantum: 8192.0 }),
            ("go_gc_duration_seconds_count", Kind::Counter { max_inc: 3 }),
            ("node_memory_MemAvailable_bytes", Kind::Walk { base: 6e9, quantum: 4096.0 }),
            ("node_load1", Kind::Noisy { base: 1.5, spread: 1.0 }),
            ("node_disk_read_bytes_total", Kind::Counter { max_inc: 2_000_000 }),
            ("node_disk_written_bytes_total", Kind::Counter { max_inc: 5_000_000 }),
            ("container_cpu_usage_seconds_total", Kind::FloatCounter { max_inc: 60 }),
            ("container_memory_working_set_bytes", Kind::Walk { base: 250e6, quantum: 4096.0 }),
            ("container_network_receive_packets_total", Kind::Counter { max_inc: 3000 }),
            ("kube_pod_container_status_restarts_total", Kind::RareCounter),
            ("cache_hits_total", Kind::Counter { max_inc: 500 }),
            ("cache_misses_total", Kind::Counter { max_inc: 40 }),
            ("cache_size_bytes", Kind::Walk { base: 30e6, quantum: 1024.0 }),
            ("messages_published_total", Kind::Counter { max_inc: 200 }),
            ("kafka_consumer_records_consumed_total", Kind::Counter { max_inc: 800 }),
            ("kafka_consumer_lag", Kind::Walk { base: 50.0, quantum: 3.0 }),
            ("thread_pool_active_threads", Kind::Walk { base: 8.0, quantum: 1.0 }),
            ("temperature_celsius", Kind::Noisy { base: 45.0, spread: 5.0 }),
            ("jvm_gc_collection_seconds_count", Kind::Counter { max_inc: 2 }),
            ("last_success_timestamp_seconds", Kind::Const(1.7637e9)),
        ];
        let double: [(&str, &str, [&str; 2], Kind); 16] = [
            ("node_network_receive_bytes_total", "device", ["eth0", "lo"], Kind::Counter { max_inc: 3_000_000 }),
            ("node_network_transmit_bytes_total", "device", ["eth0", "lo"], Kind::Counter { max_inc: 2_000_000 }),
            ("node_cpu_seconds_total", "mode", ["user", "system"], Kind::FloatCounter { max_inc: 900 }),
            ("node_filesystem_avail_bytes", "mountpoint", ["/", "/data"], Kind::Walk { base: 40e9, quantum: 4096.0 }),
            ("grpc_server_handled_total", "grpc_code", ["OK", "Unavailable"], Kind::Counter { max_inc: 300 }),
            ("http_client_requests_total", "code", ["200", "500"], Kind::Counter { max_inc: 150 }),
            ("db_queries_total", "operation", ["select", "insert"], Kind::Counter { max_inc: 400 }),
            ("db_connections", "state", ["idle", "active"], Kind::Walk { base: 10.0, quantum: 1.0 }),
            ("errors_total", "type", ["timeout", "io"], Kind::Counter { max_inc: 3 }),
            ("log_messages_total", "level", ["info", "error"], Kind::Counter { max_inc: 250 }),
            ("queue_length", "queue", ["default", "priority"], Kind::Walk { base: 20.0, quantum: 1.0 }),
            ("tasks_completed_total", "queue", ["default", "priority"], Kind::Counter { max_inc: 60 }),
            ("rpc_latency_seconds_sum", "service", ["users", "billing"], Kind::FloatCounter { max_inc: 300 }),
            ("rpc_latency_seconds_count", "service", ["users", "billing"], Kind::Counter { max_inc: 100 }),
            ("circuit_breaker_state", "service", ["users", "billing"], Kind::Const(0.0)),
            ("memory_pool_used_bytes", "pool", ["heap", "nonheap"], Kind::Walk { base: 90e6, quantum: 8192.0 }),
        ];
        for t in 0..targets {
            let h = splitmix(t as u64 ^ 0xA5A5);
            let job = JOBS[t % JOBS.len()];
            let namespace = NAMESPACES[t % NAMESPACES.len()];
            let instance = format!("10.{}.{}.{}:8080", (t >> 16) & 255, (t >> 8) & 255, t & 255);
            let pod = format!("{job}-{:08x}-{:05x}", h as u32, (h >> 40) & 0xFFFFF);
            let base = |name: &str| -> Vec<(String, String)> {
                vec![
                    ("__name__".into(), name.into()),
                    ("job".into(), job.into()),
                    ("namespace".into(), namespace.into()),
                    ("instance".into(), instance.clone()),
                    ("pod".into(), pod.clone()),
                ]
            };
            let mut push = |mut labels: Vec<(String, String)>, kind: Kind| {
                let seed = splitmix(out.len() as u64 ^ 0x5EED);
                out.push(Series { label_bytes: encode_labels(&mut labels), kind, seed });
            };
            for (method, statuses) in [("GET", &["200", "404", "500"][..]), ("POST", &["200", "201", "500"][..])]
                .into_iter()
                .chain([("PUT", &["200", "409"][..]), ("DELETE", &["204", "404"][..])])
            {
                for &status in statuses {
                    let mut l = base(REQUESTS);
                    l.push(("method".into(), method.into()));
                    l.push(("status".into(), status.into()));
                    let max_inc = match status {
                        "200" => 2000,
                        "201" | "204" => 200,
                        _ => 20,
                    };
                    push(l, Kind::Counter { max_inc });
                    request_series += 1;
                }
            }
            for (m, method) in ["GET", "POST"].into_iter().enumerate() {
                let hist = (t * 2 + m) as u32;
                for (k, le) in LES.iter().enumerate() {
                    let mut l = base(&format!("{HISTOGRAM}_bucket"));
                    l.push(("method".into(), method.into()));
                    l.push(("le".into(), (*le).into()));
                    push(l, Kind::Bucket { hist, le: k as u8 });
                    bucket_series += 1;
                }
                let mut l = base(&format!("{HISTOGRAM}_count"));
                l.push(("method".into(), method.into()));
                push(l, Kind::HistCount { hist });
                let mut l = base(&format!("{HISTOGRAM}_sum"));
                l.push(("method".into(), method.into()));
                push(l, Kind::HistSum { hist });
            }
            for (name, kind) in single {
                push(base(name), kind);
            }
            for (name, label, values, kind) in double {
                for v in values {
                    let mut l = base(name);
                    l.push((label.into(), v.into()));
                    push(l, kind);
                }
            }
        }
        PromLoad { series: out, targets, request_series, bucket_series }
    }
}

/// Observations of histogram `hist` in step `step`.
fn observations(hist: u32, step: u64) -> u64 {
    splitmix((u64::from(hist) << 32) ^ step ^ 0x0B5E) % 40
}

impl Series {
    /// The value at `step`, given the value at the step before (`prev`, NaN before the first).
    pub fn next_value(&self, step: u64, prev: f64) -> f64 {
        let r = splitmix(self.seed ^ step.wrapping_mul(0x9E37_79B9));
        let prev0 = if prev.is_nan() { 0.0 } else { prev };
        match self.kind {
            Kind::Counter { max_inc } => prev0 + (r % max_inc.max(1)) as f64,
            Kind::FloatCounter { max_inc } => {
                // Keep two decimals, as a sum of exact hundredths would drift in binary.
                let hundredths = (prev0 * 100.0).round() + (r % max_inc.max(1)) as f64;
                hundredths / 100.0
            }
            Kind::RareCounter => prev0 + if r.is_multiple_of(500) { 1.0 } else { 0.0 },
            Kind::Const(v) => v,
            Kind::Walk { base, quantum } => {
                if prev.is_nan() {
                    base + ((r % 1000) as f64) * quantum
                } else {
                    let delta = (r % 21) as f64 - 10.0;
                    (prev + delta * quantum).max(0.0)
                }
            }
            Kind::Noisy { base, spread } => {
                let x = base + spread * (((r % 2001) as f64) / 1000.0 - 1.0);
                (x * 1000.0).round() / 1000.0
            }
            Kind::Bucket { hist, le } => {
                let n = observations(hist, step) as f64;
                prev0 + (n * CDF[le as usize]).floor()
            }
            Kind::HistCount { hist } => prev0 + observations(hist, step) as f64,
            Kind::HistSum { hist } => {
                let n = observations(hist, step);
                let ms = (r % 200) as f64 + 20.0; // mean latency this step, ms
                let s = prev0 + n as f64 * ms / 1000.0;
                (s * 1e6).round() / 1e6
            }
        }
    }

    /// Appends this series with one sample to `out` as a `WriteRequest.timeseries` field.
    pub fn encode_sample(&self, value: f64, ts_ms: i64, out: &mut Vec<u8>) {
        let sample_len = 9 + 1 + encoded_len_varint(ts_ms as u64);
        let body = self.label_bytes.len() + 1 + encoded_len_varint(sample_len as u64) + sample_len;
        out.push(0x0A); // WriteRequest.timeseries
        encode_varint(body as u64, out);
        out.extend_from_slice(&self.label_bytes);
        out.push(0x12); // TimeSeries.samples
        encode_varint(sample_len as u64, out);
        out.push(0x09); // Sample.value, fixed64
        out.extend_from_slice(&value.to_le_bytes());
        out.push(0x10); // Sample.timestamp, varint
        encode_varint(ts_ms as u64, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn requests_decode_as_remote_write() {
        let load = PromLoad::generate(1000);
        assert_eq!(load.targets, 10);
        assert_eq!(load.series.len(), 1000);
        assert_eq!(load.request_series, 100);
        assert_eq!(load.bucket_series, 240);
        let mut buf = Vec::new();
        let mut values = vec![f64::NAN; load.series.len()];
        for step in 0..3u64 {
            for (k, s) in load.series.iter().enumerate() {
                values[k] = s.next_value(step, values[k]);
                s.encode_sample(values[k], 1_763_700_000_000 + step as i64 * 15_000, &mut buf);
            }
        }
        let req = ingest::remote_write::WriteRequest::decode(buf.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 3000);
        let ts = &req.timeseries[2000 + 10]; // step 2, first target, GET le=0.005 bucket
        let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(ts.labels[0].value, "http_request_duration_seconds_bucket");
        assert_eq!(ts.samples[0].timestamp, 1_763_700_030_000);
        // Buckets are monotone in le within a step.
        let b: Vec<f64> = (0..12).map(|k| req.timeseries[2000 + 10 + k].samples[0].value).collect();
        assert!(b.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
        assert_eq!(b[11], req.timeseries[2000 + 22].samples[0].value); // +Inf == _count
    }
}

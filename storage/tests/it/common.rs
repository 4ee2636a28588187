//! Shared fixtures: batches with every model field set, WAL file surgery, an event counter.

use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use storage::model::*;
use storage::{FsyncPolicy, ReplayReport, Storage, StorageEvents, StorageOptions, WalOptions};

/// Counts fsyncs and records corruption reports.
#[derive(Default)]
pub struct Counting {
    pub fsyncs: AtomicU64,
    pub corruptions: Mutex<Vec<(PathBuf, u64, String)>>,
}

impl StorageEvents for Counting {
    fn wal_fsync(&self, _d: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
    }

    fn wal_corruption(&self, path: &Path, offset: u64, detail: &str) {
        self.corruptions.lock().push((path.to_path_buf(), offset, detail.to_string()));
    }
}

pub fn options(dir: &Path, fsync: FsyncPolicy) -> StorageOptions {
    StorageOptions { wal: WalOptions { fsync, ..WalOptions::default() }, ..StorageOptions::new(dir) }
}

pub fn open(dir: &Path) -> (Storage, ReplayReport) {
    Storage::open(options(dir, FsyncPolicy::Batch), Arc::new(storage::NoEvents)).expect("open")
}

pub fn open_with(opts: StorageOptions) -> (Storage, ReplayReport, Arc<Counting>) {
    let events = Arc::new(Counting::default());
    let (s, r) = Storage::open(opts, events.clone()).expect("open");
    (s, r, events)
}

/// Compares through the encoded bytes, so NaNs (and the stale marker's exact bits) compare equal
/// exactly when they are the same value.
#[track_caller]
pub fn assert_same<T: Serialize + Debug>(got: &T, want: &T) {
    let g = postcard::to_stdvec(got).unwrap();
    let w = postcard::to_stdvec(want).unwrap();
    assert!(g == w, "values differ\n got: {got:#?}\nwant: {want:#?}");
}

/// Segment files of `<data_dir>/wal`, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// Start offsets of the records of a well-formed segment file.
pub fn record_offsets(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let mut offsets = Vec::new();
    let mut pos = storage::wal::SEGMENT_HEADER_LEN as usize;
    while pos < bytes.len() {
        offsets.push(pos as u64);
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += storage::wal::RECORD_HEADER_LEN + len;
    }
    assert_eq!(pos, bytes.len(), "segment {} does not end on a record boundary", path.display());
    offsets
}

/// A one-sample metrics batch: series `{__name__="m", k=key}` gets `value` at `ts`.
pub fn sample(key: &str, ts: i64, value: f64) -> WriteBatch {
    WriteBatch::Metrics(MetricsBatch {
        series: vec![TimeSeries {
            labels: Labels::from_pairs([("__name__", "m"), ("k", key)]),
            samples: vec![FloatSample { timestamp_ms: ts, value }],
            ..TimeSeries::default()
        }],
        metadata: vec![],
    })
}

/// `(timestamp, value)` of every sample of series `k=key`.
pub fn samples_of(s: &dyn storage::Reader, key: &str) -> Vec<(i64, f64)> {
    s.metric_store()
        .select(&[("k".to_string(), key.to_string())], i64::MIN, i64::MAX)
        .into_iter()
        .flat_map(|ts| ts.samples)
        .map(|s| (s.timestamp_ms, s.value))
        .collect()
}

pub fn trace_id(n: u8) -> TraceId {
    TraceId([n; 16])
}

pub fn span_id(n: u8) -> SpanId {
    SpanId([n; 8])
}

/// One attribute of every `AnyValue` variant, nested composites and awkward doubles included.
pub fn every_value() -> Vec<KeyValue> {
    vec![
        KeyValue::new("empty", AnyValue::Empty),
        KeyValue::new("string", AnyValue::String("héllo \"wörld\"\n\t".into())),
        KeyValue::new("bool", AnyValue::Bool(true)),
        KeyValue::new("int", AnyValue::Int(i64::MIN)),
        KeyValue::new("double", AnyValue::Double(-0.0)),
        KeyValue::new("nan", AnyValue::Double(f64::NAN)),
        KeyValue::new("inf", AnyValue::Double(f64::INFINITY)),
        KeyValue::new("bytes", AnyValue::Bytes(vec![0, 1, 0x7f, 0xff])),
        KeyValue::new(
            "array",
            AnyValue::Array(vec![AnyValue::Int(1), AnyValue::String("two".into()), AnyValue::Array(vec![])]),
        ),
        KeyValue::new(
            "kvlist",
            AnyValue::KvList(vec![
                KeyValue::new("dup", AnyValue::Bool(false)),
                KeyValue::new("dup", AnyValue::KvList(vec![KeyValue::new("deep", AnyValue::Bytes(vec![]))])),
            ]),
        ),
    ]
}

pub fn resource(service: &str) -> Resource {
    let mut attributes = vec![KeyValue::new("service.name", AnyValue::String(service.into()))];
    attributes.extend(every_value());
    Resource { attributes, dropped_attributes_count: 3, schema_url: "https://opentelemetry.io/schemas/1.26.0".into() }
}

pub fn scope(name: &str) -> Scope {
    Scope {
        name: name.into(),
        version: "1.2.3".into(),
        attributes: every_value(),
        dropped_attributes_count: 1,
        schema_url: "https://example.com/scope".into(),
    }
}

fn histogram(is_gauge: bool) -> NativeHistogram {
    NativeHistogram {
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: 2.0,
        count: 17.0,
        sum: -3.5,
        positive_spans: vec![BucketSpan { offset: 0, length: 2 }, BucketSpan { offset: 5, length: 1 }],
        positive_counts: vec![1.0, 4.0, 7.0],
        negative_spans: vec![BucketSpan { offset: -2, length: 1 }],
        negative_counts: vec![3.0],
        is_gauge,
    }
}

pub fn metrics_batch() -> MetricsBatch {
    let exemplar = |ts, v| Exemplar {
        labels: Labels::from_pairs([("trace_id", trace_id(1).to_hex()), ("span_id", span_id(1).to_hex())]),
        value: v,
        timestamp_ms: ts,
    };
    MetricsBatch {
        series: vec![
            TimeSeries {
                labels: Labels::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("job", "shop/api"),
                    ("instance", "i-1"),
                ]),
                samples: vec![
                    FloatSample { timestamp_ms: 1_000, value: 1.5 },
                    FloatSample { timestamp_ms: 2_000, value: f64::NAN },
                    FloatSample { timestamp_ms: 3_000, value: f64::from_bits(STALE_NAN_BITS) },
                    FloatSample { timestamp_ms: 4_000, value: f64::NEG_INFINITY },
                    FloatSample { timestamp_ms: 5_000, value: -0.0 },
                ],
                histograms: vec![],
                exemplars: vec![exemplar(1_000, 1.5), exemplar(4_000, 9.0)],
            },
            TimeSeries {
                labels: Labels::from_pairs([("__name__", "rpc_latency_seconds"), ("job", "shop/api")]),
                samples: vec![],
                histograms: vec![
                    HistogramSample { timestamp_ms: -5, histogram: histogram(false) },
                    HistogramSample { timestamp_ms: 2_500, histogram: histogram(true) },
                ],
                exemplars: vec![exemplar(2_500, 0.25)],
            },
        ],
        metadata: vec![
            MetricMetadata {
                metric_family: "rpc_latency_seconds".into(),
                metric_type: MetricType::Histogram,
                help: "RPC latency.".into(),
                unit: "seconds".into(),
            },
            MetricMetadata {
                metric_family: "http_requests_total".into(),
                metric_type: MetricType::Counter,
                help: "Requests \"served\".".into(),
                unit: String::new(),
            },
        ],
    }
}

pub fn logs_batch() -> LogsBatch {
    let record = |ts: i64, body: &str, trace: Option<TraceId>| LogRecord {
        timestamp_ns: ts,
        observed_timestamp_ns: ts + 7,
        severity_number: 17,
        severity_text: "ERROR".into(),
        body: body.into(),
        attributes: every_value(),
        dropped_attributes_count: 2,
        trace_id: trace,
        span_id: trace.map(|_| span_id(2)),
        flags: 1,
        event_name: "checkout.failed".into(),
    };
    LogsBatch {
        groups: vec![
            LogGroup {
                resource: resource("checkout"),
                scope: scope("logger"),
                stream: Labels::from_pairs([("service_name", "checkout")]),
                records: vec![
                    record(300, "third", Some(trace_id(1))),
                    record(100, "first", None),
                    record(300, "third-tie", None),
                ],
            },
            LogGroup {
                resource: resource("cart"),
                scope: Scope::default(),
                stream: Labels::from_pairs([("service_name", "cart")]),
                records: vec![record(200, "{\"structured\":true}", Some(trace_id(1)))],
            },
        ],
    }
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: span_id(id),
        parent_span_id: parent.map(span_id),
        trace_state: "vendor=1".into(),
        flags: 0x301,
        name: name.into(),
        kind: SpanKind::Server,
        start_time_ns: 1_000 + id as i64,
        end_time_ns: 2_000 + id as i64,
        attributes: every_value(),
        dropped_attributes_count: 4,
        events: vec![SpanEvent {
            time_ns: 1_500,
            name: "exception".into(),
            attributes: every_value(),
            dropped_attributes_count: 5,
        }],
        dropped_events_count: 6,
        links: vec![SpanLink {
            trace_id: trace_id(9),
            span_id: span_id(9),
            trace_state: "other=2".into(),
            attributes: every_value(),
            dropped_attributes_count: 7,
            flags: 1,
        }],
        dropped_links_count: 8,
        status_code: StatusCode::Error,
        status_message: "boom".into(),
    }
}

/// Two writes: trace 1's root and trace 2 in the first, trace 1's child in the second.
pub fn spans_batches() -> [SpansBatch; 2] {
    [
        SpansBatch {
            groups: vec![
                SpanGroup {
                    resource: resource("frontend"),
                    scope: scope("tracer"),
                    spans: vec![span(1, 1, None, "GET /")],
                },
                SpanGroup { resource: resource("cart"), scope: scope("tracer"), spans: vec![span(2, 3, None, "cron")] },
            ],
        },
        SpansBatch {
            groups: vec![SpanGroup {
                resource: resource("cart"),
                scope: Scope { name: "other".into(), ..Scope::default() },
                spans: vec![Span { kind: SpanKind::Client, status_code: StatusCode::Ok, ..span(1, 2, Some(1), "add") }],
            }],
        },
    ]
}

pub fn profiles_batch() -> ProfilesBatch {
    let profile = |t: i64, service: &str| Profile {
        labels: Labels::from_pairs([("service_name", service), ("__name__", "process_cpu")]),
        profile_type: ProfileType {
            name: "process_cpu".into(),
            sample_type: "cpu".into(),
            sample_unit: "nanoseconds".into(),
            period_type: "cpu".into(),
            period_unit: "nanoseconds".into(),
        },
        time_ns: t,
        duration_ns: 10_000_000_000,
        period: 10_000_000,
        functions: vec![
            Function { name: "main".into(), system_name: "_main".into(), filename: "main.rs".into(), start_line: 1 },
            Function { name: "work".into(), system_name: "_work".into(), filename: "lib.rs".into(), start_line: 40 },
        ],
        locations: vec![
            Location { address: 0x1000, lines: vec![(0, 3)], mapping: 1 },
            Location { address: 0x2000, lines: vec![(1, 42), (0, 5)], mapping: 0 },
        ],
        samples: vec![
            ProfileSample {
                locations: vec![1, 0],
                value: 30_000_000,
                span_id: Some(span_id(1)),
                labels: vec![Label { name: "thread".into(), value: "worker-1".into() }],
            },
            ProfileSample { locations: vec![0], value: 10_000_000, span_id: None, labels: vec![] },
        ],
        mappings: vec![Mapping {
            memory_start: 0x1000,
            memory_limit: 0x8000,
            file_offset: 0,
            filename: "/srv/app".into(),
            build_id: "4f1c".into(),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: false,
        }],
    };
    ProfilesBatch { profiles: vec![profile(9_000, "checkout"), profile(5_000, "cart")] }
}

/// Every batch of the fixtures, in write order.
pub fn all_batches() -> Vec<WriteBatch> {
    let [spans_a, spans_b] = spans_batches();
    vec![
        WriteBatch::Metrics(metrics_batch()),
        WriteBatch::Logs(logs_batch()),
        WriteBatch::Spans(spans_a),
        WriteBatch::Spans(spans_b),
        WriteBatch::Profiles(profiles_batch()),
    ]
}

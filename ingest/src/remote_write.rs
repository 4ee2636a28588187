//! Prometheus remote write v1 (snappy block-compressed protobuf `prometheus.WriteRequest`) mapped
//! to the metrics model.
//!
//! The message types are written here with `prost` derives from the field numbers of Prometheus'
//! `prompb/types.proto` and `prompb/remote.proto` (the upstream files import gogoproto, so they
//! are not compiled). Native histograms (integer with delta-encoded buckets, and float) are
//! supported.
//!
//! Validation follows Prometheus' receiver: a request is accepted whole or refused whole (a
//! refusal is a client error, so the sender drops the batch instead of retrying it forever).
//! Refused: undecodable snappy or protobuf; a series with no labels, an empty or repeated label
//! name, labels not sorted by name, no `__name__`; a series over the label count/length limits
//! ([`Limits`]); a sample outside the accepted time window; more series than the per-request
//! limit. NaN, ±Inf and the staleness marker are ordinary values and stored bit for bit.

use prost::Message;
use storage::model::{
    BucketSpan, Exemplar, FloatSample, HistogramSample, Labels, MetricMetadata, MetricType, MetricsBatch,
    NativeHistogram, TimeSeries,
};

use crate::otlp::Limits;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// Series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<PbTimeSeries>,
    /// Metric family metadata.
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<PbMetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct PbTimeSeries {
    /// Labels, sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<PbLabel>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<PbSample>,
    /// Exemplars.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<PbExemplar>,
    /// Native histogram samples.
    #[prost(message, repeated, tag = "4")]
    pub histograms: Vec<PbHistogram>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct PbLabel {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct PbSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct PbExemplar {
    /// Labels (`trace_id`, ...).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<PbLabel>,
    /// Value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.Histogram.count` / `zero_count`: integer or float.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum PbCount {
    /// Integer histogram.
    #[prost(uint64, tag = "1")]
    Int(u64),
    /// Float histogram.
    #[prost(double, tag = "2")]
    Float(f64),
}

/// `prometheus.Histogram.zero_count`.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum PbZeroCount {
    /// Integer histogram.
    #[prost(uint64, tag = "6")]
    Int(u64),
    /// Float histogram.
    #[prost(double, tag = "7")]
    Float(f64),
}

/// `prometheus.Histogram` (a native histogram sample).
#[derive(Clone, PartialEq, Message)]
pub struct PbHistogram {
    /// Observation count.
    #[prost(oneof = "PbCount", tags = "1, 2")]
    pub count: Option<PbCount>,
    /// Sum of observations.
    #[prost(double, tag = "3")]
    pub sum: f64,
    /// Bucket schema, -4..=8.
    #[prost(sint32, tag = "4")]
    pub schema: i32,
    /// Width of the zero bucket.
    #[prost(double, tag = "5")]
    pub zero_threshold: f64,
    /// Zero bucket count.
    #[prost(oneof = "PbZeroCount", tags = "6, 7")]
    pub zero_count: Option<PbZeroCount>,
    /// Negative bucket spans.
    #[prost(message, repeated, tag = "8")]
    pub negative_spans: Vec<PbBucketSpan>,
    /// Negative bucket count deltas (integer histograms).
    #[prost(sint64, repeated, tag = "9")]
    pub negative_deltas: Vec<i64>,
    /// Negative bucket counts (float histograms).
    #[prost(double, repeated, tag = "10")]
    pub negative_counts: Vec<f64>,
    /// Positive bucket spans.
    #[prost(message, repeated, tag = "11")]
    pub positive_spans: Vec<PbBucketSpan>,
    /// Positive bucket count deltas (integer histograms).
    #[prost(sint64, repeated, tag = "12")]
    pub positive_deltas: Vec<i64>,
    /// Positive bucket counts (float histograms).
    #[prost(double, repeated, tag = "13")]
    pub positive_counts: Vec<f64>,
    /// 0 unknown, 1 reset, 2 no reset, 3 gauge histogram.
    #[prost(int32, tag = "14")]
    pub reset_hint: i32,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "15")]
    pub timestamp: i64,
}

/// `prometheus.BucketSpan`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct PbBucketSpan {
    /// Gap to the previous span.
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    /// Buckets in the span.
    #[prost(uint32, tag = "2")]
    pub length: u32,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct PbMetricMetadata {
    /// 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gauge histogram, 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Reset hint value marking a gauge histogram.
const RESET_HINT_GAUGE: i32 = 3;

/// Why a remote-write request was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteWriteError {
    /// The body is not snappy block format.
    Snappy(String),
    /// The decompressed body would exceed the size limit.
    TooLarge {
        /// Claimed decompressed size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not a `WriteRequest`.
    Protobuf(String),
    /// More series than allowed in one request.
    TooManySeries {
        /// Series in the request.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A series or sample is invalid; the message names it.
    Invalid(String),
}

impl std::fmt::Display for RemoteWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteWriteError::Snappy(e) => write!(f, "snappy decode error: {e}"),
            RemoteWriteError::TooLarge { size, limit } => {
                write!(f, "decompressed body of {size} bytes is larger than limits.max_request_bytes = {limit}")
            }
            RemoteWriteError::Protobuf(e) => write!(f, "invalid remote write request: {e}"),
            RemoteWriteError::TooManySeries { count, limit } => write!(
                f,
                "remote write request has {count} series, more than limits.max_series_per_request = {limit}; send \
                 smaller batches"
            ),
            RemoteWriteError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for RemoteWriteError {}

/// Decompresses (snappy block format) and decodes a remote-write body, refusing bodies whose
/// decompressed size exceeds `max_bytes` before allocating for them.
pub fn decode(body: &[u8], max_bytes: usize) -> Result<WriteRequest, RemoteWriteError> {
    let size = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if size > max_bytes {
        return Err(RemoteWriteError::TooLarge { size, limit: max_bytes });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    WriteRequest::decode(raw.as_slice()).map_err(|e| RemoteWriteError::Protobuf(e.to_string()))
}

/// A mapped request.
#[derive(Debug, Default)]
pub struct Mapped {
    /// What to write.
    pub batch: MetricsBatch,
    /// Float samples.
    pub samples: u64,
    /// Histogram samples.
    pub histograms: u64,
    /// Exemplars.
    pub exemplars: u64,
}

/// Validates and maps a request. `now_ns` is the wall clock, for the accepted time window
/// (`limits.max_future_ns`, `limits.max_age_ns`).
pub fn map(req: WriteRequest, limits: &Limits, max_series: usize, now_ns: i64) -> Result<Mapped, RemoteWriteError> {
    if req.timeseries.len() > max_series {
        return Err(RemoteWriteError::TooManySeries { count: req.timeseries.len(), limit: max_series });
    }
    let now_ms = now_ns / 1_000_000;
    let max_ms = now_ms.saturating_add(limits.max_future_ns / 1_000_000);
    let min_ms = if limits.max_age_ns > 0 { now_ms.saturating_sub(limits.max_age_ns / 1_000_000) } else { i64::MIN };
    let check_time = |t: i64, labels: &Labels| {
        if t > max_ms {
            Err(RemoteWriteError::Invalid(format!(
                "out of bounds: sample at {t} ms for series {labels} is more than limits.max_future ahead of now"
            )))
        } else if t < min_ms {
            Err(RemoteWriteError::Invalid(format!(
                "out of bounds: sample at {t} ms for series {labels} is older than limits.max_age"
            )))
        } else {
            Ok(())
        }
    };
    let mut out = Mapped::default();
    out.batch.series.reserve(req.timeseries.len());
    for ts in req.timeseries {
        let labels = series_labels(ts.labels, limits)?;
        let mut samples = Vec::with_capacity(ts.samples.len());
        for s in ts.samples {
            check_time(s.timestamp, &labels)?;
            samples.push(FloatSample { timestamp_ms: s.timestamp, value: s.value });
        }
        let mut histograms = Vec::with_capacity(ts.histograms.len());
        for h in ts.histograms {
            check_time(h.timestamp, &labels)?;
            let timestamp_ms = h.timestamp;
            let histogram =
                native_histogram(h).map_err(|e| RemoteWriteError::Invalid(format!("series {labels}: {e}")))?;
            histograms.push(HistogramSample { timestamp_ms, histogram });
        }
        let mut exemplars = Vec::with_capacity(ts.exemplars.len());
        for e in ts.exemplars {
            // Prometheus drops invalid exemplars without failing the request; so do we.
            let pairs = e.labels.into_iter().map(|l| (l.name, l.value));
            let elabels = Labels::from_pairs(pairs);
            if elabels.byte_size() > 128 || e.timestamp > max_ms {
                continue;
            }
            exemplars.push(Exemplar { labels: elabels, value: e.value, timestamp_ms: e.timestamp });
        }
        out.samples += samples.len() as u64;
        out.histograms += histograms.len() as u64;
        out.exemplars += exemplars.len() as u64;
        out.batch.series.push(TimeSeries { labels, samples, histograms, exemplars });
    }
    for m in req.metadata {
        if m.metric_family_name.is_empty() {
            continue;
        }
        let metric_type = match m.r#type {
            1 => MetricType::Counter,
            2 => MetricType::Gauge,
            3 => MetricType::Histogram,
            4 => MetricType::GaugeHistogram,
            5 => MetricType::Summary,
            6 => MetricType::Info,
            7 => MetricType::StateSet,
            _ => MetricType::Unknown,
        };
        out.batch.metadata.push(MetricMetadata {
            metric_family: m.metric_family_name,
            metric_type,
            help: m.help,
            unit: m.unit,
        });
    }
    Ok(out)
}

/// A series' labels, validated as Prometheus does and against our limits.
fn series_labels(labels: Vec<PbLabel>, limits: &Limits) -> Result<Labels, RemoteWriteError> {
    let show = |labels: &[PbLabel]| {
        let mut s = String::from("{");
        for (i, l) in labels.iter().take(8).enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let v: String = l.value.chars().take(64).collect();
            s.push_str(&format!("{}={v:?}", l.name.chars().take(64).collect::<String>()));
        }
        if labels.len() > 8 {
            s.push_str(", ...");
        }
        s.push('}');
        s
    };
    let invalid = |msg: String| Err(RemoteWriteError::Invalid(msg));
    if labels.is_empty() {
        return invalid("series with no labels".into());
    }
    if labels.len() > limits.max_labels_per_series {
        return invalid(format!(
            "series {} has {} labels, more than limits.max_labels_per_series = {}",
            show(&labels),
            labels.len(),
            limits.max_labels_per_series
        ));
    }
    let mut has_name = false;
    for (i, l) in labels.iter().enumerate() {
        if l.name.is_empty() {
            return invalid(format!("series {} has a label with an empty name", show(&labels)));
        }
        if i > 0 {
            let prev = &labels[i - 1].name;
            if *prev == l.name {
                return invalid(format!("label name {:?} is not unique in series {}", l.name, show(&labels)));
            }
            if *prev > l.name {
                return invalid(format!("labels are not sorted by name in series {}", show(&labels)));
            }
        }
        if l.name.len() > limits.max_label_name_bytes {
            return invalid(format!(
                "label name of {} bytes in series {} is longer than limits.max_label_name_bytes = {}",
                l.name.len(),
                show(&labels),
                limits.max_label_name_bytes
            ));
        }
        if l.value.len() > limits.max_label_value_bytes {
            return invalid(format!(
                "value of label {:?} ({} bytes) in series {} is longer than limits.max_label_value_bytes = {}",
                l.name,
                l.value.len(),
                show(&labels),
                limits.max_label_value_bytes
            ));
        }
        if l.name == "__name__" && !l.value.is_empty() {
            has_name = true;
        }
    }
    if !has_name {
        return invalid(format!("series {} has no metric name (__name__)", show(&labels)));
    }
    Ok(Labels::from_pairs(labels.into_iter().map(|l| (l.name, l.value))))
}

fn spans(s: &[PbBucketSpan]) -> Vec<BucketSpan> {
    s.iter().map(|s| BucketSpan { offset: s.offset, length: s.length }).collect()
}

/// Absolute bucket counts from either deltas (integer histograms) or counts (float histograms),
/// checked against the spans' total length.
fn bucket_counts(spans: &[PbBucketSpan], deltas: &[i64], counts: &[f64], side: &str) -> Result<Vec<f64>, String> {
    let want: u64 = spans.iter().map(|s| u64::from(s.length)).sum();
    let out: Vec<f64> = if !deltas.is_empty() {
        let mut acc: i64 = 0;
        let mut v = Vec::with_capacity(deltas.len());
        for d in deltas {
            acc = acc.checked_add(*d).ok_or_else(|| format!("{side} bucket count overflows"))?;
            if acc < 0 {
                return Err(format!("negative {side} bucket count"));
            }
            v.push(acc as f64);
        }
        v
    } else {
        counts.to_vec()
    };
    if out.len() as u64 != want {
        return Err(format!("{side} spans describe {want} buckets but {} counts were sent", out.len()));
    }
    Ok(out)
}

fn native_histogram(h: PbHistogram) -> Result<NativeHistogram, String> {
    if !(-4..=8).contains(&h.schema) {
        return Err(format!("histogram schema {} is outside -4..=8", h.schema));
    }
    let count = match h.count {
        Some(PbCount::Int(c)) => c as f64,
        Some(PbCount::Float(c)) => c,
        None => 0.0,
    };
    let zero_count = match h.zero_count {
        Some(PbZeroCount::Int(c)) => c as f64,
        Some(PbZeroCount::Float(c)) => c,
        None => 0.0,
    };
    let positive_counts = bucket_counts(&h.positive_spans, &h.positive_deltas, &h.positive_counts, "positive")?;
    let negative_counts = bucket_counts(&h.negative_spans, &h.negative_deltas, &h.negative_counts, "negative")?;
    Ok(NativeHistogram {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count,
        count,
        sum: h.sum,
        positive_spans: spans(&h.positive_spans),
        positive_counts,
        negative_spans: spans(&h.negative_spans),
        negative_counts,
        is_gauge: h.reset_hint == RESET_HINT_GAUGE,
    })
}

/// Encodes a request as a remote-write body (protobuf, then snappy block format): what a sender
/// does; used by Outpost's tests and forwarding.
pub fn encode(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(n: &str, v: &str) -> PbLabel {
        PbLabel { name: n.into(), value: v.into() }
    }

    fn series(labels: Vec<PbLabel>, t: i64, v: f64) -> PbTimeSeries {
        PbTimeSeries {
            labels,
            samples: vec![PbSample { value: v, timestamp: t }],
            exemplars: vec![],
            histograms: vec![],
        }
    }

    const NOW_NS: i64 = 1_700_000_000_000 * 1_000_000;
    const T: i64 = 1_700_000_000_000;

    fn req(ts: Vec<PbTimeSeries>) -> WriteRequest {
        WriteRequest { timeseries: ts, metadata: vec![] }
    }

    #[test]
    fn round_trip_and_special_values() {
        let r = req(vec![
            series(vec![label("__name__", "up"), label("job", "a")], T, f64::NAN),
            series(vec![label("__name__", "up"), label("job", "b")], T, f64::INFINITY),
            series(vec![label("__name__", "up"), label("job", "c")], T, f64::from_bits(storage::model::STALE_NAN_BITS)),
        ]);
        let body = encode(&r);
        let back = decode(&body, 1 << 20).unwrap();
        let m = map(back, &Limits::default(), 10, NOW_NS).unwrap();
        assert_eq!(m.samples, 3);
        assert!(m.batch.series[0].samples[0].value.is_nan());
        assert_eq!(m.batch.series[1].samples[0].value, f64::INFINITY);
        assert!(storage::model::is_stale_nan(m.batch.series[2].samples[0].value));
        assert_eq!(m.batch.series[0].labels.get("job"), Some("a"));
    }

    #[test]
    fn refusals() {
        let bad = |ts: Vec<PbLabel>| map(req(vec![series(ts, T, 1.0)]), &Limits::default(), 10, NOW_NS).unwrap_err();
        assert!(bad(vec![label("__name__", "a"), label("x", "1"), label("x", "2")]).to_string().contains("not unique"));
        assert!(bad(vec![label("", "1"), label("__name__", "a")]).to_string().contains("empty name"));
        assert!(bad(vec![label("b", "1"), label("a", "2"), label("__name__", "a")]).to_string().contains("sorted"));
        assert!(bad(vec![label("job", "1")]).to_string().contains("no metric name"));
        assert!(bad(vec![]).to_string().contains("no labels"));
        let many: Vec<PbLabel> = std::iter::once(label("__name__", "m"))
            .chain((0..10_000).map(|i| label(&format!("l{i:05}"), "v")))
            .collect();
        assert!(bad(many).to_string().contains("max_labels_per_series"));
        let e = map(req(vec![series(vec![label("__name__", "a")], T, 1.0); 11]), &Limits::default(), 10, NOW_NS)
            .unwrap_err();
        assert!(matches!(e, RemoteWriteError::TooManySeries { count: 11, limit: 10 }));
        let e =
            map(req(vec![series(vec![label("__name__", "a")], T + 3_600_000, 1.0)]), &Limits::default(), 10, NOW_NS)
                .unwrap_err();
        assert!(e.to_string().contains("out of bounds"));
        assert!(matches!(decode(b"\xff\xff\xff\xff\xff\xff", 100), Err(RemoteWriteError::Snappy(_))));
        let junk = snap::raw::Encoder::new().compress_vec(b"\x0a\xff\xff\xff").unwrap();
        assert!(matches!(decode(&junk, 100), Err(RemoteWriteError::Protobuf(_))));
        let big = encode(&req(vec![series(vec![label("__name__", "a")], T, 1.0); 100]));
        assert!(matches!(decode(&big, 100), Err(RemoteWriteError::TooLarge { .. })));
    }

    #[test]
    fn integer_native_histogram() {
        let h = PbHistogram {
            count: Some(PbCount::Int(6)),
            sum: 10.0,
            schema: 0,
            zero_threshold: 1e-128,
            zero_count: Some(PbZeroCount::Int(1)),
            positive_spans: vec![PbBucketSpan { offset: 0, length: 2 }, PbBucketSpan { offset: 1, length: 1 }],
            positive_deltas: vec![1, 1, -1],
            timestamp: T,
            ..Default::default()
        };
        let mut ts = series(vec![label("__name__", "h")], T, 0.0);
        ts.samples.clear();
        ts.histograms.push(h);
        let m = map(req(vec![ts]), &Limits::default(), 10, NOW_NS).unwrap();
        let got = &m.batch.series[0].histograms[0].histogram;
        assert_eq!(got.positive_counts, vec![1.0, 2.0, 1.0]);
        assert_eq!(got.count, 6.0);
        assert_eq!(got.zero_count, 1.0);
        assert!(!got.is_gauge);
    }

    /// Random and mutated bodies never panic.
    #[test]
    fn mutations_never_panic() {
        let mut ts = series(vec![label("__name__", "a"), label("b", "c")], T, 1.0);
        ts.histograms.push(PbHistogram {
            count: Some(PbCount::Int(3)),
            positive_spans: vec![PbBucketSpan { offset: 0, length: 2 }],
            positive_deltas: vec![1, 1],
            timestamp: T,
            ..Default::default()
        });
        let raw = req(vec![ts]).encode_to_vec();
        let mut seed: u64 = 11;
        let mut rnd = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as usize) % n.max(1)
        };
        for _ in 0..20_000 {
            let mut b = raw.clone();
            for _ in 0..1 + rnd(3) {
                let i = rnd(b.len());
                b[i] = rnd(256) as u8;
            }
            let body = snap::raw::Encoder::new().compress_vec(&b).unwrap();
            if let Ok(r) = decode(&body, 1 << 20) {
                let _ = map(r, &Limits::default(), 10, NOW_NS);
            }
            let _ = decode(&b, 1 << 20);
        }
    }
}

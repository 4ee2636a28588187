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

use std::cell::RefCell;

use prost::Message;
use storage::model::{
    BucketSpan, Exemplar, FloatSample, HistogramSample, Labels, MetricMetadata, MetricType, MetricsBatch,
    NativeHistogram, PackedSamples, TimeSeries,
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

/// A decoded and validated request: packed float samples (the fast path) or the full model.
#[derive(Debug)]
pub enum Decoded {
    /// Float samples only (and metadata), label sets packed without an allocation per label.
    Packed {
        /// What to write.
        batch: PackedSamples,
        /// Float samples.
        samples: u64,
    },
    /// Anything else (native histograms, exemplars).
    Full(Mapped),
}

/// Decompressed bodies up to this size reuse a per-thread buffer.
const REUSED_BUFFER_BYTES: usize = 4 << 20;

thread_local! {
    static RAW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decompresses, decodes, validates and maps a remote-write body, as [`decode`] then [`map`]
/// would, with the same answers for every input. Requests of float samples (what Prometheus sends
/// almost always) take a fast path: the protobuf is read in place and the label sets are packed
/// straight from the decompressed bytes ([`PackedSamples`]), with no allocation per series or
/// label. Anything the fast path does not take (native histograms, exemplars, any invalid or
/// unusual encoding) goes through [`decode`] and [`map`], which also word the refusals.
pub fn decode_and_map(
    body: &[u8],
    max_bytes: usize,
    limits: &Limits,
    max_series: usize,
    now_ns: i64,
) -> Result<Decoded, RemoteWriteError> {
    let size = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if size > max_bytes {
        return Err(RemoteWriteError::TooLarge { size, limit: max_bytes });
    }
    let run = |buf: &mut Vec<u8>| {
        buf.clear();
        buf.resize(size, 0);
        let n = snap::raw::Decoder::new().decompress(body, buf).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
        let raw = &buf[..n];
        if let Some((batch, samples)) = fast::packed(raw, limits, max_series, now_ns) {
            return Ok(Decoded::Packed { batch, samples });
        }
        let req = WriteRequest::decode(raw).map_err(|e| RemoteWriteError::Protobuf(e.to_string()))?;
        map(req, limits, max_series, now_ns).map(Decoded::Full)
    };
    if size > REUSED_BUFFER_BYTES {
        return run(&mut Vec::new());
    }
    RAW.with(|b| match b.try_borrow_mut() {
        Ok(mut b) => run(&mut b),
        Err(_) => run(&mut Vec::new()),
    })
}

/// The fast path of [`decode_and_map`]: a protobuf reader over the decompressed bytes.
mod fast {
    use prost::Message;
    use storage::model::{FloatSample, MetricMetadata, PackedSamples};

    use super::{Limits, PbMetricMetadata, map_metadata};

    fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *b.get(*pos)?;
            *pos += 1;
            if shift == 63 && byte > 1 {
                return None;
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// A field key: (field number, wire type).
    fn key(b: &[u8], pos: &mut usize) -> Option<(u64, u8)> {
        let k = varint(b, pos)?;
        let field = k >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return None;
        }
        Some((field, (k & 7) as u8))
    }

    fn len_slice<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
        let len = usize::try_from(varint(b, pos)?).ok()?;
        let end = pos.checked_add(len).filter(|&e| e <= b.len())?;
        let s = &b[*pos..end];
        *pos = end;
        Some(s)
    }

    fn fixed64(b: &[u8], pos: &mut usize) -> Option<u64> {
        let end = pos.checked_add(8).filter(|&e| e <= b.len())?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[*pos..end]);
        *pos = end;
        Some(u64::from_le_bytes(a))
    }

    /// Skips a field of an unknown number (as prost does); groups are left to prost.
    fn skip(b: &[u8], pos: &mut usize, wire: u8) -> Option<()> {
        match wire {
            0 => varint(b, pos).map(drop),
            1 => fixed64(b, pos).map(drop),
            2 => len_slice(b, pos).map(drop),
            5 => {
                let end = pos.checked_add(4).filter(|&e| e <= b.len())?;
                *pos = end;
                Some(())
            }
            _ => None,
        }
    }

    /// A byte range of a series message.
    type Span = (usize, usize);

    /// The name and value of the `Label` message at `b[at..end]`, as ranges of `b` (not yet
    /// checked as UTF-8).
    fn label(b: &[u8], at: usize, end: usize) -> Option<(Span, Span)> {
        let m = &b[at..end];
        let (mut name, mut value) = ((at, at), (at, at));
        let mut pos = 0;
        while pos < m.len() {
            match key(m, &mut pos)? {
                (f @ (1 | 2), 2) => {
                    let len = len_slice(m, &mut pos)?.len();
                    let span = (at + pos - len, at + pos);
                    if f == 1 { name = span } else { value = span }
                }
                (1 | 2, _) => return None,
                (_, w) => skip(m, &mut pos, w)?,
            }
        }
        Some((name, value))
    }

    /// The label strings of series message `b` at `spans`, checked as UTF-8. All of them usually
    /// lie in one run of label fields whose bytes are valid UTF-8 as a whole: then that run is
    /// checked once and each string is a slice of it at char boundaries (`str::get` refuses any
    /// other), instead of checking each short string apart (a call per string was 9 % of
    /// remote-write ingest). Otherwise each string is checked alone.
    fn label_strs<'a>(b: &'a [u8], spans: &[(Span, Span)], out: &mut Vec<(&'a str, &'a str)>) -> Option<()> {
        out.clear();
        let lo = spans.iter().map(|(n, v)| n.0.min(v.0)).min().unwrap_or(0);
        let hi = spans.iter().map(|(n, v)| n.1.max(v.1)).max().unwrap_or(0);
        if let Ok(run) = std::str::from_utf8(&b[lo..hi]) {
            let at = |(a, e): Span| run.get(a - lo..e - lo);
            for &(n, v) in spans {
                match (at(n), at(v)) {
                    (Some(n), Some(v)) => out.push((n, v)),
                    _ => break,
                }
            }
            if out.len() == spans.len() {
                return Some(());
            }
            out.clear();
        }
        for &((na, ne), (va, ve)) in spans {
            out.push((std::str::from_utf8(&b[na..ne]).ok()?, std::str::from_utf8(&b[va..ve]).ok()?));
        }
        Some(())
    }

    fn sample(b: &[u8]) -> Option<FloatSample> {
        let mut s = FloatSample { timestamp_ms: 0, value: 0.0 };
        let mut pos = 0;
        while pos < b.len() {
            match key(b, &mut pos)? {
                (1, 1) => s.value = f64::from_bits(fixed64(b, &mut pos)?),
                (2, 0) => s.timestamp_ms = varint(b, &mut pos)? as i64,
                (1 | 2, _) => return None,
                (_, w) => skip(b, &mut pos, w)?,
            }
        }
        Some(s)
    }

    struct Scratch<'a> {
        spans: Vec<(Span, Span)>,
        labels: Vec<(&'a str, &'a str)>,
        samples: Vec<FloatSample>,
    }

    /// One `TimeSeries`, validated like `series_labels` and `map`; `None` to fall back.
    fn series<'a>(
        b: &'a [u8],
        sc: &mut Scratch<'a>,
        limits: &Limits,
        (min_ms, max_ms): (i64, i64),
        out: &mut PackedSamples,
    ) -> Option<u64> {
        sc.spans.clear();
        sc.samples.clear();
        let mut pos = 0;
        while pos < b.len() {
            match key(b, &mut pos)? {
                (1, 2) => {
                    let len = len_slice(b, &mut pos)?.len();
                    sc.spans.push(label(b, pos - len, pos)?);
                }
                (2, 2) => {
                    let s = sample(len_slice(b, &mut pos)?)?;
                    if s.timestamp_ms > max_ms || s.timestamp_ms < min_ms {
                        return None;
                    }
                    sc.samples.push(s);
                }
                // Exemplars and native histograms take the full path.
                (1..=4, _) => return None,
                (_, w) => skip(b, &mut pos, w)?,
            }
        }
        label_strs(b, &sc.spans, &mut sc.labels)?;
        let labels = &mut sc.labels;
        if labels.is_empty() || labels.len() > limits.max_labels_per_series {
            return None;
        }
        let mut has_name = false;
        for (i, &(n, v)) in labels.iter().enumerate() {
            if n.is_empty() || (i > 0 && labels[i - 1].0 >= n) {
                return None;
            }
            if n.len() > limits.max_label_name_bytes || v.len() > limits.max_label_value_bytes {
                return None;
            }
            has_name |= n == "__name__" && !v.is_empty();
        }
        if !has_name {
            return None;
        }
        // An empty value is an absent label (`Labels::from_pairs`).
        labels.retain(|(_, v)| !v.is_empty());
        out.push(labels, &sc.samples);
        Some(sc.samples.len() as u64)
    }

    /// The whole request; `None` to fall back.
    pub(super) fn packed(raw: &[u8], limits: &Limits, max_series: usize, now_ns: i64) -> Option<(PackedSamples, u64)> {
        let now_ms = now_ns / 1_000_000;
        let max_ms = now_ms.saturating_add(limits.max_future_ns / 1_000_000);
        let min_ms =
            if limits.max_age_ns > 0 { now_ms.saturating_sub(limits.max_age_ns / 1_000_000) } else { i64::MIN };
        // Packed series take about as many bytes as their protobuf form.
        let mut out = PackedSamples::with_capacity(raw.len() + raw.len() / 8);
        let mut metadata: Vec<MetricMetadata> = Vec::new();
        let mut sc =
            Scratch { spans: Vec::with_capacity(16), labels: Vec::with_capacity(16), samples: Vec::with_capacity(4) };
        let (mut count, mut samples) = (0usize, 0u64);
        let mut pos = 0;
        while pos < raw.len() {
            match key(raw, &mut pos)? {
                (1, 2) => {
                    count += 1;
                    if count > max_series {
                        return None;
                    }
                    samples += series(len_slice(raw, &mut pos)?, &mut sc, limits, (min_ms, max_ms), &mut out)?;
                }
                (3, 2) => {
                    let m = PbMetricMetadata::decode(len_slice(raw, &mut pos)?).ok()?;
                    metadata.extend(map_metadata(m));
                }
                (1 | 3, _) => return None,
                (_, w) => skip(raw, &mut pos, w)?,
            }
        }
        out.metadata = metadata;
        Some((out, samples))
    }
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
    out.batch.metadata.extend(req.metadata.into_iter().filter_map(map_metadata));
    Ok(out)
}

fn map_metadata(m: PbMetricMetadata) -> Option<MetricMetadata> {
    if m.metric_family_name.is_empty() {
        return None;
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
    Some(MetricMetadata { metric_family: m.metric_family_name, metric_type, help: m.help, unit: m.unit })
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

    /// The fast path answers exactly as `decode` + `map`: same batch (series without samples
    /// aside, which neither stores), same refusals.
    fn same_as_slow_path(body: &[u8], limits: &Limits, max_series: usize) -> bool {
        let slow = decode(body, 1 << 20).and_then(|r| map(r, limits, max_series, NOW_NS));
        let fast = decode_and_map(body, 1 << 20, limits, max_series, NOW_NS);
        match (slow, fast) {
            (Err(a), Err(b)) => assert_eq!(a, b),
            // Compared as text: NaN values are equal there.
            (Ok(a), Ok(Decoded::Full(b))) => assert_eq!(format!("{:?}", a.batch), format!("{:?}", b.batch)),
            (Ok(mut a), Ok(Decoded::Packed { batch, samples })) => {
                a.batch.series.retain(|s| !s.samples.is_empty());
                assert_eq!(a.samples, samples);
                assert_eq!(format!("{:?}", a.batch), format!("{:?}", batch.to_metrics_batch()));
                return true;
            }
            (a, b) => panic!("slow {a:?} but fast {b:?}"),
        }
        false
    }

    #[test]
    fn fast_path_matches_the_full_decoder() {
        let mut r = req(vec![
            series(vec![label("__name__", "up"), label("instance", "a:1"), label("job", "x")], T, 1.5),
            series(vec![label("__name__", "up"), label("empty", ""), label("job", "y")], T - 1, f64::NAN),
            PbTimeSeries { samples: vec![], ..series(vec![label("__name__", "nothing")], T, 0.0) },
        ]);
        r.timeseries[0].samples.push(PbSample { value: 2.5, timestamp: T + 15_000 });
        r.metadata.push(PbMetricMetadata {
            r#type: 1,
            metric_family_name: "up".into(),
            help: "h".into(),
            unit: String::new(),
        });
        let limits = Limits::default();
        assert!(same_as_slow_path(&encode(&r), &limits, 10), "float samples take the fast path");
        let mut with_exemplar = r.clone();
        with_exemplar.timeseries[0].exemplars.push(PbExemplar {
            labels: vec![label("trace_id", "ab")],
            value: 1.0,
            timestamp: T,
        });
        assert!(!same_as_slow_path(&encode(&with_exemplar), &limits, 10), "exemplars take the full path");
        // Refusals are worded by the full path.
        let bad = |ts: Vec<PbLabel>| encode(&req(vec![series(ts, T, 1.0)]));
        assert!(!same_as_slow_path(&bad(vec![label("b", "1"), label("__name__", "a")]), &limits, 10));
        assert!(!same_as_slow_path(&bad(vec![label("job", "1")]), &limits, 10));
        assert!(!same_as_slow_path(&bad(vec![label("__name__", "")]), &limits, 10));
        assert!(!same_as_slow_path(&encode(&r), &limits, 2), "too many series");
        let small = Limits { max_label_value_bytes: 2, ..Limits::default() };
        assert!(!same_as_slow_path(&encode(&r), &small, 10));
        let late = req(vec![series(vec![label("__name__", "a")], T + 3_600_000, 1.0)]);
        assert!(!same_as_slow_path(&encode(&late), &limits, 10));
        // Non-ASCII strings, and a value long enough for a two-byte length (whose varint bytes
        // make the label run invalid UTF-8 as a whole, so each string is checked alone).
        let long = "é".repeat(150);
        for labels in [
            vec![label("__name__", "café"), label("b", "ü"), label("c", "日本")],
            vec![label("__name__", "a"), label("b", &long), label("c", "ü")],
        ] {
            let r = req(vec![series(labels, T, 1.0)]);
            assert!(same_as_slow_path(&encode(&r), &limits, 10), "fast path for {r:?}");
        }
        // Invalid UTF-8 in a label value: refused by both.
        let mut raw = req(vec![series(vec![label("__name__", "a"), label("b", "zz")], T, 1.0)]).encode_to_vec();
        let at = raw.windows(2).position(|w| w == b"zz").unwrap();
        raw[at] = 0xff;
        assert!(!same_as_slow_path(&snap::raw::Encoder::new().compress_vec(&raw).unwrap(), &limits, 10));
    }

    /// Random and mutated bodies never panic, and the fast path always agrees with the full one.
    #[test]
    fn mutations_agree_with_the_full_decoder() {
        let mut r = req(vec![
            series(vec![label("__name__", "a"), label("b", "c")], T, 1.0),
            series(vec![label("__name__", "a"), label("b", "d"), label("e", "f")], T + 1, 2.0),
        ]);
        r.metadata.push(PbMetricMetadata { r#type: 2, metric_family_name: "a".into(), ..Default::default() });
        let raw = r.encode_to_vec();
        let mut seed: u64 = 7;
        let mut rnd = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) as usize) % n.max(1)
        };
        let mut fast = 0;
        for _ in 0..20_000 {
            let mut b = raw.clone();
            for _ in 0..1 + rnd(2) {
                let i = rnd(b.len());
                b[i] = rnd(256) as u8;
            }
            let body = snap::raw::Encoder::new().compress_vec(&b).unwrap();
            fast += usize::from(same_as_slow_path(&body, &Limits::default(), 10));
        }
        assert!(fast > 1000, "only {fast} mutated bodies took the fast path");
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

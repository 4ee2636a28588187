use serde::{Deserialize, Serialize};

use super::Labels;

/// Bit pattern of Prometheus' staleness marker, a signalling NaN distinct from ordinary NaN.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is the staleness marker (compare bits: NaN != NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A batch of metric data: what one OTLP metrics request or remote-write request becomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct MetricsBatch {
    /// Series with their new samples.
    pub series: Vec<TimeSeries>,
    /// Metric family metadata seen in this batch.
    pub metadata: Vec<MetricMetadata>,
}

impl MetricsBatch {
    /// Float samples plus histogram samples.
    pub fn item_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len() + s.histograms.len()).sum()
    }
}

/// One series (its full label set, `__name__` included) and samples for it, in the shape of
/// Prometheus remote write's `TimeSeries`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct TimeSeries {
    /// Canonical labels, including `__name__`.
    pub labels: Labels,
    /// Float samples.
    pub samples: Vec<FloatSample>,
    /// Native histogram samples.
    pub histograms: Vec<HistogramSample>,
    /// Exemplars attached to this series.
    pub exemplars: Vec<Exemplar>,
}

/// A float sample.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloatSample {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The value; `STALE_NAN_BITS` marks staleness.
    pub value: f64,
}

/// A native histogram sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistogramSample {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The histogram.
    pub histogram: NativeHistogram,
}

/// A Prometheus native (sparse, exponential) histogram with float counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct NativeHistogram {
    /// Bucket resolution: boundaries are powers of `2^(2^-schema)`; -4..=8.
    pub schema: i32,
    /// Width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Total observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
    /// Spans of populated positive buckets.
    pub positive_spans: Vec<BucketSpan>,
    /// Absolute counts of the positive buckets, in span order.
    pub positive_counts: Vec<f64>,
    /// Spans of populated negative buckets.
    pub negative_spans: Vec<BucketSpan>,
    /// Absolute counts of the negative buckets, in span order.
    pub negative_counts: Vec<f64>,
    /// True for a gauge histogram (counts may go down without a reset).
    pub is_gauge: bool,
}

/// A run of consecutive buckets: `offset` from the end of the previous span (or from index 0 for the
/// first), `length` buckets long.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSpan {
    /// Gap to the previous span.
    pub offset: i32,
    /// Buckets in this span.
    pub length: u32,
}

/// An exemplar: a sample of one traced observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    /// Exemplar labels (`trace_id`, `span_id`, filtered attributes).
    pub labels: Labels,
    /// The observed value.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Metric family metadata, as `/api/v1/metadata` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricMetadata {
    /// The family name (for histograms, without `_bucket`/`_sum`/`_count`).
    pub metric_family: String,
    /// The family type.
    pub metric_type: MetricType,
    /// Help text.
    pub help: String,
    /// Unit (Prometheus form, e.g. `seconds`).
    pub unit: String,
}

/// Prometheus metric types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricType {
    /// Unknown.
    Unknown,
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (classic or native).
    Histogram,
    /// Gauge histogram.
    GaugeHistogram,
    /// Summary.
    Summary,
    /// Info.
    Info,
    /// State set.
    StateSet,
}

impl MetricType {
    /// The name used by the Prometheus HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Unknown => "unknown",
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }
}

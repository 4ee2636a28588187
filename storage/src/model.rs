//! The shared vocabulary of Outpost: what every signal looks like once it is past the protocol edge.
//!
//! Invariant: nothing here knows OTLP, protobuf, HTTP or any query language. `ingest` maps wire
//! payloads into these types; the WAL persists them (see `docs/format/wal.md`); the stores index
//! them; `query` reads them back through `crate::read`.
//!
//! Timestamps: metrics use Prometheus milliseconds (`i64`); logs, spans and profiles keep OTLP's
//! nanoseconds since the Unix epoch (`i64`, so that arithmetic on differences cannot wrap).

mod common;
mod logs;
mod metrics;
mod packed;
mod profiles;
mod traces;

pub use common::{AnyValue, KeyValue, Label, Labels, Resource, Scope, SpanId, TraceId, write_json_string};
pub use logs::{LogGroup, LogRecord, LogsBatch};
pub use metrics::{
    BucketSpan, Exemplar, FloatSample, HistogramSample, MetricMetadata, MetricType, MetricsBatch, NativeHistogram,
    STALE_NAN_BITS, TimeSeries, is_stale_nan,
};
pub use packed::{PackedSamples, PackedSeries, pack_labels};
pub use profiles::{Function, Location, Mapping, Profile, ProfileSample, ProfileType, ProfilesBatch};
pub use traces::{Span, SpanEvent, SpanGroup, SpanKind, SpanLink, SpansBatch, StatusCode};

use serde::{Deserialize, Serialize};

/// One unit of durable writing: what a single ingest request becomes. It is written to the WAL as one
/// record and applied to its signal's store only once durable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WriteBatch {
    /// Metric samples, exemplars, histograms and metadata.
    Metrics(MetricsBatch),
    /// Log records grouped by resource and scope.
    Logs(LogsBatch),
    /// Spans grouped by resource and scope.
    Spans(SpansBatch),
    /// Profiles.
    Profiles(ProfilesBatch),
    /// Float samples with packed label sets (remote write's fast path); a metrics batch like
    /// [`WriteBatch::Metrics`]. Last, so that the other variants keep their WAL encoding.
    Samples(PackedSamples),
}

impl WriteBatch {
    /// The signal this batch belongs to.
    pub fn signal(&self) -> Signal {
        match self {
            WriteBatch::Metrics(_) => Signal::Metrics,
            WriteBatch::Logs(_) => Signal::Logs,
            WriteBatch::Spans(_) => Signal::Traces,
            WriteBatch::Profiles(_) => Signal::Profiles,
            WriteBatch::Samples(_) => Signal::Metrics,
        }
    }

    /// Number of items (samples + histogram samples, log records, spans, profile samples).
    pub fn item_count(&self) -> usize {
        match self {
            WriteBatch::Metrics(b) => b.item_count(),
            WriteBatch::Logs(b) => b.item_count(),
            WriteBatch::Spans(b) => b.item_count(),
            WriteBatch::Profiles(b) => b.item_count(),
            WriteBatch::Samples(b) => b.sample_count(),
        }
    }

    /// True when the batch carries nothing worth writing.
    pub fn is_empty(&self) -> bool {
        match self {
            WriteBatch::Metrics(b) => b.series.is_empty() && b.metadata.is_empty(),
            WriteBatch::Samples(b) => b.is_empty(),
            _ => self.item_count() == 0,
        }
    }
}

/// The four signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Signal {
    /// Metrics (samples).
    Metrics,
    /// Logs.
    Logs,
    /// Traces (spans).
    Traces,
    /// Profiles.
    Profiles,
}

impl Signal {
    /// Lower-case name used in self-metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Profiles => "profiles",
        }
    }
}

//! The read traits: the only way query code sees stored data.
//!
//! Boundary: `query` depends on these traits, never on the engines behind them. Two types implement
//! them today: [`crate::Storage`] (the durable store) and [`crate::MemStore`] (the same in-memory
//! stores without a WAL, for tests of query code).
//!
//! Conventions shared by every method:
//! - Time ranges are closed: `start..=end`, in the signal's unit (ms for metrics, ns otherwise).
//! - A matcher `(name, value)` is an equality matcher; as in Prometheus and Loki, an empty value
//!   matches a set that lacks the label. No matchers match everything.
//! - Results are owned copies; resources, scopes and stream labels are shared `Arc`s.

use std::sync::Arc;

use crate::model::{Labels, LogRecord, MetricMetadata, Profile, Resource, Scope, Signal, Span, TimeSeries, TraceId};

/// Read access to metrics.
pub trait MetricsReader: Send + Sync {
    /// Label sets of every series, sorted.
    fn series(&self) -> Vec<Labels>;

    /// Series matching every matcher, sorted by labels, each with its float samples, histogram
    /// samples and exemplars whose timestamps fall in `start_ms..=end_ms`, in time order. A series
    /// with nothing in the range is left out.
    ///
    /// Duplicate timestamps: a series holds at most one float sample and one histogram sample per
    /// timestamp; a later write (in WAL order; within one write, later in the batch) replaces an
    /// earlier one. Exemplars are kept per timestamp and label set under the same rule.
    fn select(&self, matchers: &[(String, String)], start_ms: i64, end_ms: i64) -> Vec<TimeSeries>;

    /// The latest metadata written for each metric family, sorted by family name.
    fn metadata(&self) -> Vec<MetricMetadata>;
}

/// A stored log record with the context it was written with.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredLog {
    /// The producing resource.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
    /// The stream labels.
    pub stream: Arc<Labels>,
    /// The record.
    pub record: LogRecord,
}

/// Read access to logs.
pub trait LogsReader: Send + Sync {
    /// Records of the streams matching every matcher with `timestamp_ns` in `start_ns..=end_ns`,
    /// in timestamp order; records with equal timestamps keep their arrival (WAL) order.
    fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog>;

    /// Every record carrying `trace_id`, in the same order as [`LogsReader::logs`].
    fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog>;
}

/// A stored span with the context it was written with.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSpan {
    /// The producing resource.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
    /// The span.
    pub span: Span,
}

/// Read access to traces.
pub trait TracesReader: Send + Sync {
    /// Every span of the trace, whichever writes they arrived in, in arrival (WAL) order. A span
    /// written twice is returned twice: the store does not deduplicate.
    fn trace(&self, trace_id: TraceId) -> Vec<StoredSpan>;

    /// Ids of every stored trace, sorted.
    fn trace_ids(&self) -> Vec<TraceId>;

    /// Number of stored spans.
    fn span_count(&self) -> u64;
}

/// Read access to profiles.
pub trait ProfilesReader: Send + Sync {
    /// Profiles with `time_ns` in `start_ns..=end_ns`, in time order (ties in arrival order).
    fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile>;
}

/// Items held per signal, counted as [`crate::model::WriteBatch::item_count`] counts them (float
/// and histogram samples, log records, spans, profile samples), after duplicate replacement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemCounts {
    /// Float plus histogram samples.
    pub metrics: u64,
    /// Log records.
    pub logs: u64,
    /// Spans.
    pub traces: u64,
    /// Profile samples.
    pub profiles: u64,
}

impl ItemCounts {
    /// The count for one signal.
    pub fn get(&self, signal: Signal) -> u64 {
        match signal {
            Signal::Metrics => self.metrics,
            Signal::Logs => self.logs,
            Signal::Traces => self.traces,
            Signal::Profiles => self.profiles,
        }
    }
}

/// Everything a query engine reads: all four signals plus counters.
pub trait Reader: MetricsReader + LogsReader + TracesReader + ProfilesReader {
    /// Items currently stored per signal.
    fn item_counts(&self) -> ItemCounts;
}

/// True when `labels` satisfies every equality matcher (an empty value requires absence).
pub(crate) fn matches(labels: &Labels, matchers: &[(String, String)]) -> bool {
    matchers.iter().all(|(name, value)| labels.get(name).unwrap_or("") == value)
}

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

mod logs;
mod metrics;
mod profiles;
mod traces;

pub use logs::{Direction, Dropped, LineFilter, LineScan, LogLine, LogScan, LogsReader, StoredLog};
pub use metrics::{MatchOp, Matcher, MetricsReader, Samples, SeriesSet, TsdbStats, matches_all};
pub use profiles::{
    LimitExceeded, MergedStacks, ProfileSelect, ProfileSeries, ProfileTotals, ProfilesReader, SpanSamples,
};
pub use traces::{StoredSpan, TraceScan, TracesReader};

use crate::model::Signal;

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

/// Everything a query engine reads: one read trait per signal, plus counters.
pub trait Reader: Send + Sync {
    /// The metrics store.
    fn metric_store(&self) -> &dyn MetricsReader;
    /// The logs store.
    fn log_store(&self) -> &dyn LogsReader;
    /// The traces store.
    fn trace_store(&self) -> &dyn TracesReader;
    /// The profiles store.
    fn profile_store(&self) -> &dyn ProfilesReader;
    /// Items currently stored per signal.
    fn item_counts(&self) -> ItemCounts;
}

//! [`MemStore`]: the four in-memory stores ("heads") behind one handle.

use std::fmt;

use crate::logs::LogsHead;
use crate::metrics::MetricsHead;
use crate::model::{Labels, MetricMetadata, Profile, TimeSeries, TraceId, WriteBatch};
use crate::profiles::ProfilesHead;
use crate::read::{ItemCounts, LogsReader, MetricsReader, ProfilesReader, Reader, StoredLog, StoredSpan, TracesReader};
use crate::traces::TracesHead;
use crate::wal::Apply;

/// The in-memory stores of all four signals, without durability.
///
/// [`crate::Storage`] feeds one from its WAL; on its own it is the in-memory implementation of the
/// read traits for tests of query code: build batches, [`MemStore::apply`] them, query.
#[derive(Default)]
pub struct MemStore {
    metrics: MetricsHead,
    logs: LogsHead,
    traces: TracesHead,
    profiles: ProfilesHead,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        MemStore::default()
    }

    /// Makes `batch` visible to readers. Batches applied from several threads at once are each
    /// applied atomically per signal, in an unspecified order.
    pub fn apply(&self, batch: WriteBatch) {
        match batch {
            WriteBatch::Metrics(b) => self.metrics.apply(b),
            WriteBatch::Logs(b) => self.logs.apply(b),
            WriteBatch::Spans(b) => self.traces.apply(b),
            WriteBatch::Profiles(b) => self.profiles.apply(b),
        }
    }
}

impl Apply for MemStore {
    fn apply(&self, batch: WriteBatch) {
        MemStore::apply(self, batch);
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore").field("items", &self.item_counts()).finish()
    }
}

impl MetricsReader for MemStore {
    fn series(&self) -> Vec<Labels> {
        self.metrics.series()
    }

    fn select(&self, matchers: &[(String, String)], start_ms: i64, end_ms: i64) -> Vec<TimeSeries> {
        self.metrics.select(matchers, start_ms, end_ms)
    }

    fn metadata(&self) -> Vec<MetricMetadata> {
        self.metrics.metadata()
    }
}

impl LogsReader for MemStore {
    fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog> {
        self.logs.logs(stream_matchers, start_ns, end_ns)
    }

    fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog> {
        self.logs.logs_by_trace(trace_id)
    }
}

impl TracesReader for MemStore {
    fn trace(&self, trace_id: TraceId) -> Vec<StoredSpan> {
        self.traces.trace(trace_id)
    }

    fn trace_ids(&self) -> Vec<TraceId> {
        self.traces.trace_ids()
    }

    fn span_count(&self) -> u64 {
        self.traces.span_count()
    }
}

impl ProfilesReader for MemStore {
    fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile> {
        self.profiles.profiles(start_ns, end_ns)
    }
}

impl Reader for MemStore {
    fn item_counts(&self) -> ItemCounts {
        ItemCounts {
            metrics: self.metrics.items(),
            logs: self.logs.items(),
            traces: self.traces.span_count(),
            profiles: self.profiles.items(),
        }
    }
}

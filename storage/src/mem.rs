//! [`MemStore`]: the four per-signal engines behind one handle, and their shared lifecycle.
//!
//! Every engine has the same life, driven from here:
//! - `open(dir, opts)`: `dir` is `Some(<data_dir>/<signal>)` under [`crate::Storage`] and `None` for a
//!   memory-only store (tests of query code). An engine loads what it persisted earlier.
//! - `apply(pos, batch)`: a durable batch, in WAL order, at WAL position `pos`
//!   ([`crate::wal::WalPos::ZERO`] when memory-only). On replay an engine skips batches at or before
//!   the position it persisted last, so nothing is applied twice across a checkpoint.
//! - `persist()`: make everything applied so far durable in the engine's own files, recording the
//!   last applied position with it; `Ok(false)` if the engine keeps its data only through the WAL.
//!   When every engine answers `Ok(true)`, [`crate::Storage::checkpoint`] deletes the WAL segments
//!   before the checkpoint.
//! - `maintain(now_ms)`: background work (compaction, retention). Called from the shell's timer.

use std::fmt;
use std::path::Path;

use crate::EngineOptions;
use crate::error::OpenError;
use crate::logs::LogsHead;
use crate::metrics::MetricsHead;
use crate::model::WriteBatch;
use crate::profiles::ProfilesHead;
use crate::read::{ItemCounts, LogsReader, MetricsReader, ProfilesReader, Reader, TracesReader};
use crate::traces::TracesHead;
use crate::wal::{Apply, WalPos};

/// The stores of all four signals, without a WAL of their own.
///
/// [`crate::Storage`] feeds one from its WAL; on its own ([`MemStore::new`]) it is the in-memory
/// implementation of the read traits for tests of query code: build batches, [`MemStore::apply`]
/// them, query.
pub struct MemStore {
    metrics: MetricsHead,
    logs: LogsHead,
    traces: TracesHead,
    profiles: ProfilesHead,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    /// An empty memory-only store with default options.
    pub fn new() -> Self {
        Self::with_options(&EngineOptions::default())
    }

    /// An empty memory-only store.
    pub fn with_options(opts: &EngineOptions) -> Self {
        Self::open(None, opts).expect("memory-only engines open without I/O")
    }

    /// Opens the engines under `dir` (memory-only with `None`).
    pub(crate) fn open(dir: Option<&Path>, opts: &EngineOptions) -> Result<Self, OpenError> {
        let sub = |name: &str| dir.map(|d| d.join(name));
        Ok(MemStore {
            metrics: MetricsHead::open(sub("metrics").as_deref(), &opts.metrics)?,
            logs: LogsHead::open(sub("logs").as_deref(), &opts.logs)?,
            traces: TracesHead::open(sub("traces").as_deref(), &opts.traces)?,
            profiles: ProfilesHead::open(sub("profiles").as_deref(), &opts.profiles)?,
        })
    }

    /// Where the engines report what goes wrong outside the WAL (damaged log chunks).
    pub(crate) fn set_events(&self, events: &std::sync::Arc<dyn crate::StorageEvents>) {
        self.logs.set_events(std::sync::Arc::clone(events));
    }

    /// Makes `batch` visible to readers. Batches applied from several threads at once are each
    /// applied atomically per signal, in an unspecified order.
    pub fn apply(&self, batch: WriteBatch) {
        self.apply_at(WalPos::ZERO, batch);
    }

    pub(crate) fn apply_at(&self, pos: WalPos, batch: WriteBatch) {
        match batch {
            WriteBatch::Metrics(b) => self.metrics.apply(pos, b),
            WriteBatch::Logs(b) => self.logs.apply(pos, b),
            WriteBatch::Spans(b) => self.traces.apply(pos, b),
            WriteBatch::Profiles(b) => self.profiles.apply(pos, b),
            WriteBatch::Samples(b) => self.metrics.apply_packed(pos, b),
        }
    }

    /// Applies the metrics engine's out-of-order window to `batch` before it is written (see
    /// `MetricsOptions::ooo_window`): removes what the store would refuse and returns how many
    /// samples (floats plus histograms) were removed.
    pub fn admit_metrics(&self, batch: &mut crate::model::MetricsBatch) -> u64 {
        self.metrics.admit(batch)
    }

    /// What the logs head's size asks of the writer that just grew it.
    pub(crate) fn logs_head_pressure(&self) -> crate::flusher::HeadPressure {
        self.logs.head_pressure()
    }

    /// What the traces head's size asks of the writer that just grew it.
    pub(crate) fn traces_head_pressure(&self) -> crate::flusher::HeadPressure {
        self.traces.head_pressure()
    }

    /// Commits the logs head to its partition indexes when it has grown past the engine's
    /// `head_flush_bytes` and no other flush runs; true when it flushed.
    pub(crate) fn flush_large_logs_head(&self) -> std::io::Result<bool> {
        self.logs.flush_if_large()
    }

    /// Writes the traces head to a span file when it has grown past the engine's
    /// `head_flush_bytes` and no other flush runs; true when it flushed.
    pub(crate) fn flush_large_traces_head(&self) -> std::io::Result<bool> {
        self.traces.flush_if_large()
    }

    /// [`MemStore::admit_metrics`] for packed samples.
    pub fn admit_packed(&self, batch: &mut crate::model::PackedSamples) -> u64 {
        self.metrics.admit_packed(batch)
    }

    /// Persists every engine; true when all of them hold everything applied in their own files.
    pub(crate) fn persist(&self) -> std::io::Result<bool> {
        // Every engine persists even if an earlier one cannot: each checkpoint shrinks their WAL debt.
        let m = self.metrics.persist()?;
        let l = self.logs.persist()?;
        let t = self.traces.persist()?;
        let p = self.profiles.persist()?;
        Ok(m && l && t && p)
    }

    /// Background work of every engine (compaction, retention).
    pub(crate) fn maintain(&self, now_ms: i64) -> std::io::Result<()> {
        self.metrics.maintain(now_ms)?;
        self.logs.maintain(now_ms)?;
        self.traces.maintain(now_ms)?;
        self.profiles.maintain(now_ms)
    }
}

impl Apply for MemStore {
    fn apply(&self, pos: WalPos, batch: WriteBatch) {
        self.apply_at(pos, batch);
    }
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemStore").field("items", &self.item_counts()).finish()
    }
}

impl Reader for MemStore {
    fn metric_store(&self) -> &dyn MetricsReader {
        &self.metrics
    }

    fn log_store(&self) -> &dyn LogsReader {
        &self.logs
    }

    fn trace_store(&self) -> &dyn TracesReader {
        &self.traces
    }

    fn profile_store(&self) -> &dyn ProfilesReader {
        &self.profiles
    }

    fn item_counts(&self) -> ItemCounts {
        ItemCounts {
            metrics: self.metrics.items(),
            logs: self.logs.items(),
            traces: self.traces.span_count(),
            profiles: self.profiles.items(),
        }
    }
}

//! Outpost's storage: the data model, the write-ahead log and one store per signal.
//!
//! A [`Storage`] owns a data directory. [`Storage::write`] appends a [`model::WriteBatch`] to the
//! WAL (group commit, see [`wal`]) and, once it is durable under the [`FsyncPolicy`], applies it to
//! the signal's in-memory store; [`Storage::open`] rebuilds those stores by replaying the WAL.
//! Query code reads through the traits of [`read`], which `Storage` implements.
//!
//! Layout of a data directory:
//! - `LOCK`: held (`flock`, exclusive) for the lifetime of the `Storage`; holds the owner's pid.
//! - `wal/NNNNNNNNNNNNNNNN.wal`: WAL segments, specified in `docs/format/wal.md`.
//! - `metrics/`: the metrics engine's blocks and `persisted.json`, specified in
//!   `docs/format/metrics-block.md` (and `metrics-index.md`, `metrics-chunks.md`).
//!
//! Architecture invariants:
//! - Synchronous and local: no async runtime, no network, no other Outpost crate; one thread of
//!   its own (`flusher`, writing heads past their size while writers go on). Every call may
//!   block on disk I/O; async callers use `spawn_blocking` or a thread of their own.
//! - A write is acknowledged only once durable under the policy, and is visible to every reader
//!   from the moment it is acknowledged. A write that fails is neither visible nor replayed.
//! - Batches reach the stores in WAL order, live and on replay alike, so what a reader sees before
//!   a restart is what it sees after.
//! - Damaged WAL bytes never stop a start: they are reported in the [`ReplayReport`].

#![warn(missing_docs)]

mod error;
mod events;
mod flusher;
mod intern;
mod logs;
mod mem;
mod metrics;
mod mmap;
pub mod model;
mod parquet_rows;
mod postcard_append;
mod profiles;
pub mod read;
mod traces;
mod varint;
pub mod wal;

/// Hash maps of the heads: foldhash is several times faster than SipHash on label sets and ids,
/// and its per-process random seed keeps crafted collisions impractical.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set counterpart of [`FastMap`].
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, OpenError, ReadError, WriteError};
pub use events::{NoEvents, StorageEvents};
pub use logs::LogsOptions;
pub use mem::MemStore;
pub use metrics::MetricsOptions;
pub use profiles::ProfilesOptions;
pub use read::{
    Direction, Dropped, ItemCounts, LimitExceeded, LineScan, LogLine, LogScan, LogsReader, MatchOp, Matcher,
    MergedStacks, MetricsReader, ProfileSelect, ProfileSeries, ProfileTotals, ProfilesReader, Reader, SpanSamples,
    StoredLog, StoredSpan, TraceScan, TracesReader, TsdbStats,
};
pub use traces::TracesOptions;
pub use wal::{CorruptSegment, FsyncPolicy, ReplayReport, WalOptions, WalPos};

use flusher::{HeadFlusher, HeadPressure};
use model::WriteBatch;
use wal::Wal;

/// Where and how to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// The data directory; created if missing.
    pub data_dir: PathBuf,
    /// WAL settings.
    pub wal: WalOptions,
    /// Per-signal engine settings.
    pub engines: EngineOptions,
}

impl StorageOptions {
    /// Options for `data_dir` with default WAL and engine settings.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageOptions { data_dir: data_dir.into(), wal: WalOptions::default(), engines: EngineOptions::default() }
    }
}

/// Settings of the four engines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// The metrics engine.
    pub metrics: MetricsOptions,
    /// The logs engine.
    pub logs: LogsOptions,
    /// The traces engine.
    pub traces: TracesOptions,
    /// The profiles engine.
    pub profiles: ProfilesOptions,
}

/// What a [`Storage::checkpoint`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Every engine held everything in its own files, so the WAL before the checkpoint went.
    pub durable: bool,
    /// WAL segments deleted.
    pub segments_removed: usize,
}

/// The durable store of one data directory. `Send + Sync`: share it as `Arc<Storage>`; any number
/// of threads may write and read at once.
///
/// Reads: `Storage` implements [`Reader`] (and so every signal's read trait) directly, so an
/// `Arc<Storage>` coerces to `Arc<dyn Reader>`; [`Storage::reader`] gives the same as a borrow.
pub struct Storage {
    mem: Arc<MemStore>,
    wal: Wal,
    data_dir: PathBuf,
    /// Writes heads grown past their flush size while writers go on; stopped (joined) on drop,
    /// before the lock is released.
    flusher: HeadFlusher,
    /// Declared last so that it is dropped last: the directory stays locked until the WAL is
    /// closed.
    _lock: File,
}

impl Storage {
    /// Opens (creating if needed) the data directory, locks it, replays the WAL into the stores
    /// and starts a new WAL segment for writing.
    ///
    /// Fails with [`OpenError::Locked`] if another `Storage` (in any process) holds the directory,
    /// with [`OpenError::Io`] if a file cannot be created, read or written. Damaged WAL bytes do not
    /// fail the open; they are listed in the returned [`ReplayReport`].
    pub fn open(opts: StorageOptions, events: Arc<dyn StorageEvents>) -> Result<(Storage, ReplayReport), OpenError> {
        let data_dir = opts.data_dir;
        fs::create_dir_all(&data_dir).map_err(|source| OpenError::Io { path: data_dir.clone(), source })?;
        let lock = lock_data_dir(&data_dir)?;
        let mem = MemStore::open(Some(&data_dir), &opts.engines)?;
        mem.set_events(&events);
        let (wal, report) = Wal::open(&data_dir.join("wal"), opts.wal, events, &mem)?;
        let mem = Arc::new(mem);
        let flusher =
            HeadFlusher::start(Arc::clone(&mem)).map_err(|source| OpenError::Io { path: data_dir.clone(), source })?;
        Ok((Storage { mem, wal, data_dir, flusher, _lock: lock }, report))
    }

    /// Appends `batch` to the WAL and applies it to its signal's store; returns once the batch is
    /// durable under the fsync policy and visible to readers. Blocks for the duration of a
    /// `write(2)` and, under [`FsyncPolicy::Batch`], an fsync shared with concurrent writers.
    ///
    /// An empty batch ([`WriteBatch::is_empty`]) is accepted without touching the WAL. Errors:
    /// [`WriteError::TooLarge`] (split the batch), [`WriteError::Io`] (disk full or failing:
    /// retry later), [`WriteError::Closed`], [`WriteError::Poisoned`].
    pub fn write(&self, batch: WriteBatch) -> Result<(), WriteError> {
        if batch.is_empty() {
            return if self.wal.is_closed() { Err(WriteError::Closed) } else { Ok(()) };
        }
        let logs = matches!(batch, WriteBatch::Logs(_));
        let spans = matches!(batch, WriteBatch::Spans(_));
        self.wal.append(batch, &*self.mem)?;
        // Keeps the traces and logs heads bounded between checkpoints: a head past its
        // `head_flush_bytes` goes to the flusher thread and this write returns; past the
        // back-pressure mark the writer flushes it itself. The batch is already durable in the
        // WAL, so a failed flush fails nothing here: the next checkpoint retries it and reports
        // the error.
        if spans {
            match self.mem.traces_head_pressure() {
                HeadPressure::Below => {}
                HeadPressure::Over => self.flusher.want(flusher::Head::Traces),
                HeadPressure::Backpressure => {
                    let _ = self.mem.flush_large_traces_head();
                }
            }
        }
        if logs {
            match self.mem.logs_head_pressure() {
                HeadPressure::Below => {}
                HeadPressure::Over => self.flusher.want(flusher::Head::Logs),
                HeadPressure::Backpressure => {
                    let _ = self.mem.flush_large_logs_head();
                }
            }
        }
        Ok(())
    }

    /// Syncs the WAL now. Under [`FsyncPolicy::Interval`] the owner calls this on a timer; it is
    /// also what a graceful shutdown calls before [`Storage::close`]. A no-op once closed.
    pub fn sync(&self) -> Result<(), WriteError> {
        self.wal.sync()
    }

    /// Checkpoint: starts a new WAL segment, asks every engine to persist what it has applied and,
    /// when all of them did, deletes the WAL segments before the new one, so that start-up replays
    /// only what came after. Safe to call at any time from one thread (the shell's timer); writes
    /// go on meanwhile.
    pub fn checkpoint(&self) -> Result<CheckpointReport, WriteError> {
        let seq = self.wal.rotate_for_checkpoint()?;
        let io = |source| WriteError::Io { path: self.data_dir.clone(), source };
        let durable = self.mem.persist().map_err(io)?;
        let segments_removed = if durable { self.wal.remove_segments_before(seq).map_err(io)? } else { 0 };
        Ok(CheckpointReport { durable, segments_removed })
    }

    /// Background work of every engine: compaction and retention. Call from a timer.
    pub fn maintain(&self, now_ms: i64) -> Result<(), WriteError> {
        self.mem.maintain(now_ms).map_err(|source| WriteError::Io { path: self.data_dir.clone(), source })
    }

    /// Waits for in-flight writes, syncs and closes the WAL. Later writes fail with
    /// [`WriteError::Closed`]; reads keep working. The directory stays locked until the `Storage`
    /// is dropped. Idempotent. Dropping a `Storage` closes it too, ignoring errors.
    pub fn close(&self) -> Result<(), WriteError> {
        self.wal.close()
    }

    /// The stores as a read-trait object.
    pub fn reader(&self) -> &dyn Reader {
        &*self.mem
    }

    /// The stores.
    pub fn stores(&self) -> &MemStore {
        &self.mem
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").field("data_dir", &self.data_dir).field("mem", &self.mem).finish()
    }
}

/// Takes the exclusive lock on `<data_dir>/LOCK` and records our pid in it.
fn lock_data_dir(data_dir: &Path) -> Result<File, OpenError> {
    let path = data_dir.join("LOCK");
    let io_err = |source| OpenError::Io { path: path.clone(), source };
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder_pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(OpenError::Locked { path, holder_pid });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id())).map_err(io_err)?;
    Ok(file)
}

impl Reader for Storage {
    fn metric_store(&self) -> &dyn MetricsReader {
        self.mem.metric_store()
    }

    fn log_store(&self) -> &dyn LogsReader {
        self.mem.log_store()
    }

    fn trace_store(&self) -> &dyn TracesReader {
        self.mem.trace_store()
    }

    fn profile_store(&self) -> &dyn ProfilesReader {
        self.mem.profile_store()
    }

    fn item_counts(&self) -> ItemCounts {
        self.mem.item_counts()
    }
}

//! The observability hook: storage reports what it does through [`StorageEvents`], so the binary
//! can turn it into self-metrics and logs without storage knowing either.

use std::path::Path;
use std::time::Duration;

/// Receives storage's internal events. Every method has a no-op default, so an implementation
/// overrides only what it records. Methods are called on the thread doing the work, sometimes
/// while the WAL holds its leader role: they must be quick and must not call back into `Storage`.
pub trait StorageEvents: Send + Sync {
    /// An fsync of a WAL segment or of the WAL directory finished (successfully or not) after `d`.
    fn wal_fsync(&self, d: Duration) {
        let _ = d;
    }

    /// Replay found a damaged record or header at `offset` in the WAL segment `path` and skipped
    /// the rest of that segment. A torn tail of the last segment is not reported here (it is the
    /// normal result of a crash) but in `ReplayReport::torn_tail_bytes`.
    fn wal_corruption(&self, path: &Path, offset: u64, detail: &str) {
        let _ = (path, offset, detail);
    }

    /// A scan found log chunk `chunk` of the partition folder `path` damaged (its frame is out of
    /// its file's bounds, or fails its CRC or its decoding) and skipped it: the chunk's lines are
    /// missing from every answer. Reported once per chunk per process, on a query's thread.
    fn log_chunk_damaged(&self, path: &Path, chunk: usize, detail: &str) {
        let _ = (path, chunk, detail);
    }
}

/// A [`StorageEvents`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl StorageEvents for NoEvents {}

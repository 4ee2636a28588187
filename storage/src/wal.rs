//! The write-ahead log: every [`WriteBatch`] becomes one CRC-checked record in a segment file
//! under `<data_dir>/wal/` before it is applied to a store. The byte layout, replay rules and fsync
//! policies are specified in `storage/docs/format/wal.md`.
//!
//! Group commit: writers encode their record on their own thread and queue it; the first writer to
//! find no commit in progress becomes the *leader*, takes the whole queue, writes it with one
//! `write(2)`, syncs once (under [`FsyncPolicy::Batch`]), applies the batches to the stores in
//! queue order and wakes everyone. The others (*followers*) wait for their group's outcome.
//!
//! Invariants:
//! - At most one leader exists at a time, and it applies its group before giving up the role, so
//!   batches reach the stores in WAL order and a write is visible when `append` returns.
//! - A record is acknowledged only after its bytes were written (and, under `Batch`, synced).
//! - A failed group write is cut back to the last good offset before anyone else writes; if that
//!   cut fails too, the WAL is poisoned: every later append fails with
//!   [`WriteError::Poisoned`] and the next start's replay drops the unacknowledged bytes.
//! - Replayed segments are never appended to: after replay, writing starts in a new segment.

mod replay;
mod segment;
pub(crate) mod v1;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{OpenError, WriteError};
use crate::events::StorageEvents;
use crate::model::WriteBatch;

pub use segment::{RECORD_HEADER_LEN, RECORD_VERSION, SEGMENT_HEADER, SEGMENT_HEADER_LEN, SEGMENT_VERSION};

/// When the WAL calls `fdatasync`. Under every policy a record is handed to the kernel with
/// `write(2)` before its write is acknowledged, so acknowledged data survives a killed process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FsyncPolicy {
    /// Sync before acknowledging; one sync covers every write of a commit group. Acknowledged
    /// data survives power loss.
    #[default]
    Batch,
    /// Acknowledge after `write(2)`; the owner calls [`crate::Storage::sync`] on a timer (say every
    /// second), which bounds what a power loss can take. Segments are also synced when rotated.
    Interval,
    /// Never sync except on close. A power loss can take anything not yet written back by the OS.
    None,
}

/// WAL settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// When to sync; default [`FsyncPolicy::Batch`].
    pub fsync: FsyncPolicy,
    /// A segment that has reached this size (header included) is closed before the next commit
    /// group is written, so a segment exceeds it by at most one group. Default 64 MiB.
    pub segment_bytes: u64,
    /// Largest accepted record payload (version byte plus encoded batch); larger writes fail with
    /// [`WriteError::TooLarge`]. Capped by the format at `u32::MAX`. Default 64 MiB.
    pub max_record_bytes: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { fsync: FsyncPolicy::Batch, segment_bytes: 64 << 20, max_record_bytes: 64 << 20 }
    }
}

impl WalOptions {
    fn validate(&self) -> Result<(), OpenError> {
        let invalid = |detail: &str| Err(OpenError::InvalidOptions { detail: detail.to_string() });
        if self.segment_bytes == 0 {
            return invalid("wal.segment_bytes must be at least 1");
        }
        if self.max_record_bytes == 0 {
            return invalid("wal.max_record_bytes must be at least 1");
        }
        if self.max_record_bytes as u64 > u32::MAX as u64 {
            return invalid("wal.max_record_bytes must fit the record's 32-bit length field");
        }
        Ok(())
    }
}

/// What replaying the WAL on open found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayReport {
    /// Segment files examined.
    pub segments: usize,
    /// Records applied to the stores.
    pub records: u64,
    /// Items in those records (see [`WriteBatch::item_count`]).
    pub items: u64,
    /// Bytes of segment files read (their lengths as found).
    pub bytes: u64,
    /// Time replay took.
    pub duration: Duration,
    /// Bytes cut from the end of the last segment: the incomplete or damaged tail a crash leaves
    /// behind. Nonzero after a crash; never acknowledged data under `Batch`.
    pub torn_tail_bytes: u64,
    /// Segments (other than the last one's tail) found damaged; each was replayed up to the
    /// damage and skipped from there.
    pub corrupt: Vec<CorruptSegment>,
}

/// A damaged WAL segment found by replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptSegment {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of the damaged record (0 for a bad header); bytes from here on were not replayed.
    pub offset: u64,
    /// What is wrong.
    pub detail: String,
}

/// The position of a record in the WAL: its segment and the offset just past its end. Positions
/// grow strictly in WAL order, so an engine that persisted everything up to `p` skips records at
/// positions `<= p` on replay (see `Storage::checkpoint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct WalPos {
    /// Segment sequence number.
    pub segment: u64,
    /// Byte offset just past the record, within the segment.
    pub offset: u64,
}

impl WalPos {
    /// Before every record: what a memory-only store applies with.
    pub const ZERO: WalPos = WalPos { segment: 0, offset: 0 };
}

/// Where the WAL's leader delivers durable batches, in WAL order.
pub(crate) trait Apply: Sync {
    /// Makes `batch`, written at `pos`, visible to readers.
    fn apply(&self, pos: WalPos, batch: WriteBatch);
}

/// The write-ahead log of one data directory.
pub(crate) struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    events: Arc<dyn StorageEvents>,
    /// Records waiting for a leader. parking_lot's mutex because followers block on `wake` with
    /// it; it is never held across I/O.
    queue: Mutex<Queue>,
    /// Signalled when a group's outcome is published or the leader role is released.
    wake: Condvar,
    /// The segment being written. Held by the leader for its write and sync, by `sync` and by
    /// `close`. It is never held together with `queue`, so the two cannot deadlock.
    writer: Mutex<Writer>,
    #[cfg(test)]
    faults: Mutex<Faults>,
}

struct Queue {
    /// Framed records in arrival order.
    bytes: Vec<u8>,
    /// Their batches, same order.
    batches: Vec<WriteBatch>,
    /// Their framed lengths, same order.
    lens: Vec<u64>,
    /// The group the queued records will be committed in.
    group: Arc<Group>,
    /// A leader is committing; nobody else may start.
    leading: bool,
    /// `close` was called: no new record is accepted.
    closed: bool,
    /// A buffer returned by the last leader, reused for the next group.
    spare: Vec<u8>,
}

#[derive(Default)]
struct Group {
    /// Set once, by the group's leader, under the queue lock.
    outcome: OnceLock<Outcome>,
}

/// The shared result of one commit group.
#[derive(Clone, Debug)]
enum Outcome {
    Committed,
    Io { path: PathBuf, os: Option<i32>, kind: io::ErrorKind, message: String },
    Poisoned(String),
    Closed,
}

impl Outcome {
    fn io(path: &Path, e: &io::Error) -> Self {
        Outcome::Io { path: path.to_path_buf(), os: e.raw_os_error(), kind: e.kind(), message: e.to_string() }
    }

    fn to_result(&self) -> Result<(), WriteError> {
        match self {
            Outcome::Committed => Ok(()),
            Outcome::Io { path, os, kind, message } => {
                // Each writer gets its own `io::Error`; the OS code survives so that callers can
                // still recognise ENOSPC.
                let source = match os {
                    Some(code) => io::Error::from_raw_os_error(*code),
                    None => io::Error::new(*kind, message.clone()),
                };
                Err(WriteError::Io { path: path.clone(), source })
            }
            Outcome::Poisoned(detail) => Err(WriteError::Poisoned { detail: detail.clone() }),
            Outcome::Closed => Err(WriteError::Closed),
        }
    }
}

enum Writer {
    Open(Segment),
    Poisoned(String),
    Closed,
}

/// The active segment.
struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Bytes of valid data (header included); the file position is always here.
    len: u64,
}

#[cfg(test)]
#[derive(Default)]
struct Faults {
    /// Group writes to let through before `short_write` applies.
    skip_writes: usize,
    /// A group write stores only this many bytes, then fails with ENOSPC.
    short_write: Option<usize>,
    /// Cutting back after a failed write fails with EIO.
    fail_cut: bool,
}

impl Wal {
    /// Replays `<dir>` into `apply`, then starts a new segment for writing.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        events: Arc<dyn StorageEvents>,
        apply: &dyn Apply,
    ) -> Result<(Wal, ReplayReport), OpenError> {
        opts.validate()?;
        let started = Instant::now();
        fs::create_dir_all(dir).map_err(|source| OpenError::Io { path: dir.to_path_buf(), source })?;
        let (mut report, next_seq) = replay::replay(dir, events.as_ref(), apply)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            events,
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                batches: Vec::new(),
                lens: Vec::new(),
                group: Arc::new(Group::default()),
                leading: false,
                closed: false,
                spare: Vec::new(),
            }),
            wake: Condvar::new(),
            writer: Mutex::new(Writer::Closed),
            #[cfg(test)]
            faults: Mutex::new(Faults::default()),
        };
        let segment = wal.create_segment(next_seq).map_err(|(path, source)| OpenError::Io { path, source })?;
        *wal.writer.lock() = Writer::Open(segment);
        report.duration = started.elapsed();
        Ok((wal, report))
    }

    /// Appends `batch`, returning once it is durable under the fsync policy and applied.
    pub fn append(&self, batch: WriteBatch, apply: &dyn Apply) -> Result<(), WriteError> {
        if self.queue.lock().closed {
            return Err(WriteError::Closed);
        }
        thread_local! {
            /// This thread's encoding buffer (capacity kept between records).
            static RECORD_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let record = segment::encode_record_into(&batch, self.opts.max_record_bytes, RECORD_BUF.take())?;
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(WriteError::Closed);
        }
        queue.bytes.extend_from_slice(&record);
        queue.lens.push(record.len() as u64);
        // Keep the buffer unless one huge record would pin its capacity.
        if record.capacity() <= 4 << 20 {
            RECORD_BUF.set(record);
        }
        queue.batches.push(batch);
        let group = Arc::clone(&queue.group);
        loop {
            if let Some(outcome) = group.outcome.get() {
                return outcome.to_result();
            }
            // With no outcome and no leader, our group has not been taken yet (a leader publishes
            // its group's outcome before releasing the role), so leading it commits our record.
            if !queue.leading {
                queue = self.lead(queue, apply);
                continue;
            }
            self.wake.wait(&mut queue);
        }
    }

    /// True once `close` was called.
    pub fn is_closed(&self) -> bool {
        self.queue.lock().closed
    }

    /// Syncs the active segment now. Earlier segments were synced when rotated (except under
    /// [`FsyncPolicy::None`]). A no-op after `close`.
    pub fn sync(&self) -> Result<(), WriteError> {
        let mut writer = self.writer.lock();
        match &mut *writer {
            Writer::Open(seg) => {
                self.fsync(&seg.file).map_err(|source| WriteError::Io { path: seg.path.clone(), source })
            }
            Writer::Poisoned(detail) => Err(WriteError::Poisoned { detail: detail.clone() }),
            Writer::Closed => Ok(()),
        }
    }

    /// Stops accepting records, waits for queued ones to commit, syncs and closes the segment.
    /// Idempotent.
    pub fn close(&self) -> Result<(), WriteError> {
        let mut queue = self.queue.lock();
        queue.closed = true;
        while queue.leading || !queue.batches.is_empty() {
            self.wake.wait(&mut queue);
        }
        drop(queue);
        let mut writer = self.writer.lock();
        match mem::replace(&mut *writer, Writer::Closed) {
            Writer::Open(seg) => {
                let t = Instant::now();
                let r = seg.file.sync_all();
                self.events.wal_fsync(t.elapsed());
                r.map_err(|source| WriteError::Io { path: seg.path, source })
            }
            Writer::Poisoned(detail) => Err(WriteError::Poisoned { detail }),
            Writer::Closed => Ok(()),
        }
    }

    /// Starts a new segment now and returns its sequence number: every record in a segment
    /// before it has been applied when this returns. The first step of a checkpoint.
    pub fn rotate_for_checkpoint(&self) -> Result<u64, WriteError> {
        let mut writer = self.writer.lock();
        match &mut *writer {
            Writer::Open(seg) => {
                if seg.len > SEGMENT_HEADER_LEN
                    && let Err(outcome) = self.rotate(seg)
                {
                    return outcome.to_result().map(|()| seg.seq);
                }
                Ok(seg.seq)
            }
            Writer::Poisoned(detail) => Err(WriteError::Poisoned { detail: detail.clone() }),
            Writer::Closed => Err(WriteError::Closed),
        }
    }

    /// Deletes every segment before `seq`: the last step of a checkpoint, once every store has
    /// persisted what those segments hold. Returns the number of segments removed.
    pub fn remove_segments_before(&self, seq: u64) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(s) = entry.file_name().to_str().and_then(segment::parse_segment_file_name) else {
                continue;
            };
            if s < seq {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 && self.opts.fsync != FsyncPolicy::None {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }

    /// Takes the leader role for the queued group, commits it and publishes the outcome. Returns
    /// with the queue locked again.
    fn lead<'a>(&'a self, mut queue: MutexGuard<'a, Queue>, apply: &dyn Apply) -> MutexGuard<'a, Queue> {
        queue.leading = true;
        let group = mem::take(&mut queue.group);
        let spare = mem::take(&mut queue.spare);
        let bytes = mem::replace(&mut queue.bytes, spare);
        let batches = mem::take(&mut queue.batches);
        let lens = mem::take(&mut queue.lens);
        drop(queue);
        let mut publish = Publish { wal: self, group, bytes, outcome: None };
        let outcome = self.commit(&publish.bytes, batches, &lens, apply);
        publish.outcome = Some(outcome);
        drop(publish);
        self.queue.lock()
    }

    fn commit(&self, bytes: &[u8], batches: Vec<WriteBatch>, lens: &[u64], apply: &dyn Apply) -> Outcome {
        let mut writer = self.writer.lock();
        let seg = match &mut *writer {
            Writer::Open(seg) => seg,
            Writer::Poisoned(detail) => return Outcome::Poisoned(detail.clone()),
            Writer::Closed => return Outcome::Closed,
        };
        if seg.len >= self.opts.segment_bytes
            && seg.len > SEGMENT_HEADER_LEN
            && let Err(outcome) = self.rotate(seg)
        {
            return outcome;
        }
        let start = seg.len;
        let written = self.write_bytes(&mut seg.file, bytes).and_then(|()| match self.opts.fsync {
            FsyncPolicy::Batch => self.fsync(&seg.file),
            FsyncPolicy::Interval | FsyncPolicy::None => Ok(()),
        });
        if let Err(e) = written {
            let outcome = Outcome::io(&seg.path, &e);
            if let Err(cut_err) = self.cut_back(seg, start) {
                *writer = Writer::Poisoned(format!(
                    "writing {} failed ({e}) and cutting it back to offset {start} failed ({cut_err})",
                    seg.path.display()
                ));
            }
            return outcome;
        }
        seg.len = start + bytes.len() as u64;
        // Applied with the writer held, so that once `rotate_for_checkpoint` has the writer,
        // every record of the earlier segments has reached the stores.
        let mut end = start;
        for (batch, len) in batches.into_iter().zip(lens) {
            end += len;
            apply.apply(WalPos { segment: seg.seq, offset: end }, batch);
        }
        drop(writer);
        Outcome::Committed
    }

    /// Truncates `seg` to `len` (dropping a failed group's partial bytes) and moves the write
    /// position there; synced so that the cut survives a crash unless the policy is `None`.
    fn cut_back(&self, seg: &mut Segment, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.lock().fail_cut {
            return Err(io::Error::from_raw_os_error(5));
        }
        seg.file.set_len(len)?;
        seg.file.seek(SeekFrom::Start(len))?;
        match self.opts.fsync {
            FsyncPolicy::None => Ok(()),
            FsyncPolicy::Batch | FsyncPolicy::Interval => self.fsync(&seg.file),
        }
    }

    /// Closes the full segment `seg` (synced unless the policy is `None`) and replaces it with the
    /// next one. On failure `seg` stays active and the next group retries.
    fn rotate(&self, seg: &mut Segment) -> Result<(), Outcome> {
        if self.opts.fsync != FsyncPolicy::None {
            self.fsync(&seg.file).map_err(|e| Outcome::io(&seg.path, &e))?;
        }
        *seg = self.create_segment(seg.seq + 1).map_err(|(path, e)| Outcome::io(&path, &e))?;
        Ok(())
    }

    /// Creates segment `seq` with its header. A file already there can only be an unfinished
    /// earlier attempt (replay saw no segment at or beyond `seq`), so it is overwritten.
    fn create_segment(&self, seq: u64) -> Result<Segment, (PathBuf, io::Error)> {
        let path = self.dir.join(segment::segment_file_name(seq));
        let created = (|| {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
            file.write_all(&SEGMENT_HEADER)?;
            if self.opts.fsync != FsyncPolicy::None {
                // The header and the directory entry must be durable before any record is
                // acknowledged from this segment.
                self.fsync(&file)?;
                let t = Instant::now();
                let r = File::open(&self.dir).and_then(|d| d.sync_all());
                self.events.wal_fsync(t.elapsed());
                r?;
            }
            Ok(file)
        })();
        match created {
            Ok(file) => Ok(Segment { seq, path, file, len: SEGMENT_HEADER_LEN }),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err((path, e))
            }
        }
    }

    fn fsync(&self, file: &File) -> io::Result<()> {
        let t = Instant::now();
        let r = file.sync_data();
        self.events.wal_fsync(t.elapsed());
        r
    }

    fn write_bytes(&self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        {
            let mut faults = self.faults.lock();
            if faults.short_write.is_some() {
                if faults.skip_writes > 0 {
                    faults.skip_writes -= 1;
                } else if let Some(n) = faults.short_write.take() {
                    file.write_all(&bytes[..n.min(bytes.len())])?;
                    return Err(io::Error::from_raw_os_error(28));
                }
            }
        }
        file.write_all(bytes)
    }

    #[cfg(test)]
    fn active_segment(&self) -> Option<(PathBuf, u64)> {
        match &*self.writer.lock() {
            Writer::Open(seg) => Some((seg.path.clone(), seg.len)),
            _ => None,
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Dropping without `close` still hands everything to the disk; errors have nobody to go to.
        let _ = self.close();
    }
}

/// Publishes a leader's outcome when dropped, so that followers are released even if committing
/// panicked (the WAL is then poisoned: a partly applied group cannot be acknowledged or retried).
struct Publish<'a> {
    wal: &'a Wal,
    group: Arc<Group>,
    bytes: Vec<u8>,
    outcome: Option<Outcome>,
}

impl Drop for Publish<'_> {
    fn drop(&mut self) {
        let outcome = match self.outcome.take() {
            Some(outcome) => outcome,
            None => {
                let detail = "a writer panicked while committing a group".to_string();
                *self.wal.writer.lock() = Writer::Poisoned(detail.clone());
                Outcome::Poisoned(detail)
            }
        };
        let mut bytes = mem::take(&mut self.bytes);
        bytes.clear();
        let mut queue = self.wal.queue.lock();
        let _ = self.group.outcome.set(outcome);
        queue.leading = false;
        // Keep modest buffers for the next group; give a huge one back to the allocator.
        if bytes.capacity() <= 4 << 20 {
            queue.spare = bytes;
        }
        drop(queue);
        self.wal.wake.notify_all();
    }
}

#[cfg(test)]
mod tests;

//! Error types, one enum per operation family, plus the umbrella [`Error`].
//!
//! Every family keeps corruption (`Corrupted`) apart from I/O failure (`Io`): an I/O error is
//! usually transient (disk full, EIO) and worth retrying, corrupted bytes never are.

use std::io;
use std::path::PathBuf;

/// Why [`crate::Storage::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another `Storage` in this process) holds the data directory's lock.
    #[error("data directory is in use: {path} is locked by another Outpost{}", holder_text(*.holder_pid))]
    Locked {
        /// The lock file, `<data_dir>/LOCK`.
        path: PathBuf,
        /// Process id recorded in the lock file by its holder, when readable.
        holder_pid: Option<u32>,
    },
    /// A file or directory of the store could not be created, read or written.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes are damaged badly enough that the store refuses to open. The WAL never returns
    /// this: a damaged WAL segment is reported in [`crate::ReplayReport::corrupt`] and skipped.
    #[error("{path} is corrupted: {detail}")]
    Corrupted {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The options cannot work (for example a zero `max_record_bytes`).
    #[error("invalid storage options: {detail}")]
    InvalidOptions {
        /// Which option and why.
        detail: String,
    },
}

fn holder_text(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!(" process (pid {pid})"),
        None => " process".to_string(),
    }
}

/// Why a write (or [`crate::Storage::sync`] / [`crate::Storage::close`]) failed. No variant means
/// the data was acknowledged: a failed write is not visible to readers and not replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The encoded batch is larger than `WalOptions::max_record_bytes`; split it and retry.
    #[error("write batch of {size} bytes exceeds the {max}-byte record limit")]
    TooLarge {
        /// Encoded payload size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Writing or syncing the WAL failed (ENOSPC, EIO, …). The WAL was cut back to its last good
    /// record, so the same write may be retried later.
    #[error("WAL write to {path} failed: {source}")]
    Io {
        /// The WAL segment (or directory) concerned.
        path: PathBuf,
        /// The underlying error; followers of a failed group commit get a copy with the same kind
        /// and message.
        #[source]
        source: io::Error,
    },
    /// An earlier failure left the WAL in a state it could not repair (the cut back to the last
    /// good record failed too); every later write fails with this until the process restarts,
    /// whose replay drops the unacknowledged bytes.
    #[error("WAL is unusable after an unrecoverable I/O failure ({detail}); restart to recover")]
    Poisoned {
        /// The failure that poisoned the WAL.
        detail: String,
    },
    /// The batch could not be encoded.
    #[error("cannot encode write batch: {detail}")]
    Encode {
        /// The encoder's message.
        detail: String,
    },
    /// [`crate::Storage::close`] was called; nothing more is accepted.
    #[error("storage is closed")]
    Closed,
}

impl WriteError {
    /// True when retrying the same write later may succeed (disk full, transient I/O error).
    pub fn is_retryable(&self) -> bool {
        matches!(self, WriteError::Io { .. })
    }
}

/// Why reading stored bytes failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The bytes do not follow their format (bad magic, CRC mismatch, truncated record, …).
    #[error("{path} is corrupted: {detail}")]
    Corrupted {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong, with the byte offset where it was found.
        detail: String,
    },
}

/// Any storage error, for callers that do not care which operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Reading failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl Error {
    /// True when the error reports damaged data rather than a failed operation.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Open(OpenError::Corrupted { .. }) | Error::Read(ReadError::Corrupted { .. }))
    }
}

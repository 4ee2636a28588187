//! Replay on open: every segment in sequence order, every record checked before it is applied.
//!
//! Damage never stops the start. In the last segment it is a torn tail, the normal trace of a
//! crash: the file is cut at the first bad record. In an earlier segment it is corruption: the
//! segment is reported and skipped from the bad record on, and replay continues with the next one.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::segment::{self, Header, SEGMENT_HEADER, SEGMENT_HEADER_LEN, SegmentReader};
use super::{Apply, CorruptSegment, ReplayReport};
use crate::error::{OpenError, ReadError};
use crate::events::StorageEvents;

/// Replays every segment of `dir` into `apply`. Returns the report and the sequence number the
/// next segment must take (one past every segment seen, so no replayed file is ever reused).
pub(super) fn replay(
    dir: &Path,
    events: &dyn StorageEvents,
    apply: &dyn Apply,
) -> Result<(ReplayReport, u64), OpenError> {
    let mut report = ReplayReport::default();
    let mut segments = list_segments(dir)?;
    let next_seq = segments.last().map_or(1, |(seq, _)| seq + 1);

    // A last segment shorter than its header is one whose creation a crash interrupted: it holds
    // no record, so it goes, and the segment before it is the real last one.
    while let Some((_, path)) = segments.last() {
        let Some(len) = torn_header_len(path)? else {
            break;
        };
        report.segments += 1;
        report.bytes += len;
        report.torn_tail_bytes += len;
        fs::remove_file(path).map_err(|source| OpenError::Io { path: path.clone(), source })?;
        segments.pop();
    }

    let count = segments.len();
    for (i, (seq, path)) in segments.iter().enumerate() {
        replay_segment(*seq, path, i + 1 == count, events, apply, &mut report)?;
    }
    Ok((report, next_seq))
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    let io_err = |source| OpenError::Io { path: dir.to_path_buf(), source };
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(segment::parse_segment_file_name) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// `Some(len)` when `path` is shorter than a header and holds a prefix of it.
fn torn_header_len(path: &Path) -> Result<Option<u64>, OpenError> {
    let io_err = |source| OpenError::Io { path: path.to_path_buf(), source };
    let len = fs::metadata(path).map_err(io_err)?.len();
    if len >= SEGMENT_HEADER_LEN {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_err)?;
    Ok(SEGMENT_HEADER.starts_with(&bytes).then_some(len))
}

fn replay_segment(
    seq: u64,
    path: &Path,
    last: bool,
    events: &dyn StorageEvents,
    apply: &dyn Apply,
    report: &mut ReplayReport,
) -> Result<(), OpenError> {
    report.segments += 1;
    let corrupt = |report: &mut ReplayReport, offset: u64, detail: String| {
        events.wal_corruption(path, offset, &detail);
        report.corrupt.push(CorruptSegment { path: path.to_path_buf(), offset, detail });
    };
    // Only the last segment may need cutting, so only it is opened for writing.
    let opened = OpenOptions::new().read(true).write(last).open(path).and_then(|f| {
        let len = f.metadata()?.len();
        Ok((f, len))
    });
    let (file, len) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            corrupt(report, 0, format!("cannot open: {e}"));
            return Ok(());
        }
    };
    report.bytes += len;
    let cut_file = file.try_clone();
    let mut reader = SegmentReader::new(path, file, len);

    match reader.read_header() {
        Ok(Header::Valid) => {}
        Ok(Header::Torn) => {
            corrupt(report, 0, format!("segment is {len} bytes, shorter than its header"));
            return Ok(());
        }
        Err(bad) => {
            corrupt(report, bad.offset, bad.detail());
            return Ok(());
        }
    }

    let mut records = 0u64;
    let mut end = SEGMENT_HEADER_LEN;
    let bad = loop {
        match reader.next_record() {
            Ok(Some((framed, batch))) => {
                records += 1;
                end += framed;
                report.records += 1;
                report.items += batch.item_count() as u64;
                apply.apply(super::WalPos { segment: seq, offset: end }, batch);
            }
            Ok(None) => break None,
            Err(bad) => break Some(bad),
        }
    };
    drop(reader);

    match bad {
        None => {}
        Some(bad) if last && matches!(bad.error, ReadError::Corrupted { .. }) => {
            // Cutting makes the segment end cleanly, so it replays without complaint even once a
            // newer segment has made it an earlier one.
            let io_err = |source| OpenError::Io { path: path.to_path_buf(), source };
            let file = cut_file.map_err(io_err)?;
            file.set_len(bad.offset).and_then(|()| file.sync_all()).map_err(io_err)?;
            report.torn_tail_bytes += len - bad.offset;
        }
        Some(bad) => {
            corrupt(report, bad.offset, bad.detail());
            return Ok(());
        }
    }

    if records == 0 && end == SEGMENT_HEADER_LEN {
        // A header-only segment carries nothing; removing it keeps restarts without writes from
        // piling up empty files. Failing to remove it is harmless.
        let _ = fs::remove_file(path);
    }
    Ok(())
}

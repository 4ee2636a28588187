//! Read access to logs. Implemented by the logs engine (`crate::logs`).

use std::sync::Arc;

use crate::model::{Labels, LogRecord, Resource, Scope, TraceId};

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

    /// Label sets of the streams matching every matcher with records in `start_ns..=end_ns`,
    /// sorted. The default implementation scans; engines override it.
    fn streams(&self, matchers: &[crate::read::Matcher], start_ns: i64, end_ns: i64) -> Vec<Arc<Labels>> {
        let mut out: Vec<Arc<Labels>> = self
            .logs(&[], start_ns, end_ns)
            .into_iter()
            .filter(|l| crate::read::matches_all(&l.stream, matchers))
            .map(|l| l.stream)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Hands the records `scan` selects to `visit`, in `scan.direction` order, until `visit`
    /// returns false. The default implementation reads everything in range; engines override it
    /// to use their indexes (and must never drop a record the hints do not rule out).
    fn scan(&self, scan: &LogScan, visit: &mut dyn FnMut(&StoredLog) -> bool) {
        default_scan(self, scan, visit)
    }

    /// The lean scan: hands [`LogLine`]s of the records `scan.scan` selects that pass
    /// `scan.body_filter` and `scan.line_filter` to `visit` until it returns false, without building a [`StoredLog`]
    /// unless the visitor asks for one. In `scan.scan.direction` order when `scan.ordered`, else in
    /// any order. The default implementation goes through [`LogsReader::scan`].
    fn scan_lines(&self, scan: &LineScan<'_>, visit: &mut dyn FnMut(&dyn LogLine) -> bool) {
        self.scan(scan.scan, &mut |log| {
            if scan.stop.is_some_and(|f| f()) {
                return false;
            }
            if scan.body_filter.is_some_and(|f| !f(&log.record.body)) || scan.line_filter.is_some_and(|f| !f(log)) {
                if let Some(c) = scan.dropped {
                    c.add(1, log.record.body.len());
                }
                return true;
            }
            visit(log)
        })
    }
}

/// What [`LogsReader::scan_lines`] reads.
#[derive(Clone, Copy)]
pub struct LineScan<'a> {
    /// Streams, range, order and hints.
    pub scan: &'a LogScan,
    /// When false the lines may come in any order.
    pub ordered: bool,
    /// When false [`LogLine::body`] may be empty (the visitor needs only timestamps and labels).
    pub bodies: bool,
    /// True when the visitor reads the metadata ([`LogLine::meta`]) of the lines it is handed:
    /// the store then decodes it on its reading threads, ahead of the visitor.
    pub meta: bool,
    /// Only lines whose body passes this are visited (the store may run it on several threads).
    pub body_filter: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
    /// Only lines that pass this (after `body_filter`) are visited; it sees the whole line (stream
    /// labels, metadata), and the store may run it on several threads too.
    pub line_filter: Option<&'a LineFilter<'a>>,
    /// Where the store counts the lines it read and dropped through `scan.line_contains`,
    /// `body_filter` or `line_filter` (lines read but never handed to the visitor), for the
    /// query's statistics. Not counted: lines of a `trace_id` scan, chunks the index ruled out.
    pub dropped: Option<&'a Dropped>,
    /// Asked before each chunk the store reads: once it answers true the scan reads nothing more
    /// (so that a deadline or a limit holds even when the filters drop every line and the visitor
    /// never runs). The caller tells a stopped scan from a finished one.
    pub stop: Option<&'a (dyn Fn() -> bool + Sync)>,
}

/// A filter on whole lines; see [`LineScan::line_filter`].
pub type LineFilter<'a> = dyn Fn(&dyn LogLine) -> bool + Sync + 'a;

/// Lines (and their body bytes) a scan read and its filters dropped; see [`LineScan::dropped`].
#[derive(Debug, Default)]
pub struct Dropped {
    lines: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Dropped {
    /// Counts `lines` more lines of `bytes` body bytes.
    pub fn add(&self, lines: u64, bytes: usize) {
        self.lines.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// (lines, body bytes) counted so far.
    pub fn get(&self) -> (u64, u64) {
        (self.lines.load(std::sync::atomic::Ordering::Relaxed), self.bytes.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// One record as [`LogsReader::scan_lines`] hands it out.
pub trait LogLine {
    /// The stream labels.
    fn stream(&self) -> &Arc<Labels>;
    /// The record's timestamp (ns).
    fn timestamp_ns(&self) -> i64;
    /// The line (empty when the scan asked for no bodies).
    fn body(&self) -> &str;
    /// The record's other fields (its body may be empty here: use [`LogLine::body`]).
    fn meta(&self) -> &LogRecord;
    /// A superset of the attribute keys this record has, plus `trace_id`, `span_id`,
    /// `severity_text`, `severity_number` when it may carry them; `None` when unknown (look at
    /// [`LogLine::meta`]). Lets a reader skip the metadata of lines that cannot matter.
    fn meta_keys(&self) -> Option<&[String]>;
    /// The whole record with its context.
    fn stored(&self) -> StoredLog;
}

impl LogLine for StoredLog {
    fn stream(&self) -> &Arc<Labels> {
        &self.stream
    }
    fn timestamp_ns(&self) -> i64 {
        self.record.timestamp_ns
    }
    fn body(&self) -> &str {
        &self.record.body
    }
    fn meta(&self) -> &LogRecord {
        &self.record
    }
    fn meta_keys(&self) -> Option<&[String]> {
        None
    }
    fn stored(&self) -> StoredLog {
        self.clone()
    }
}

/// [`LogsReader::scan`]'s default: reads everything in range through [`LogsReader::logs`].
fn default_scan<R: LogsReader + ?Sized>(r: &R, scan: &LogScan, visit: &mut dyn FnMut(&StoredLog) -> bool) {
    {
        let mut logs: Vec<StoredLog> = r
            .logs(&[], scan.start_ns, scan.end_ns)
            .into_iter()
            .filter(|l| crate::read::matches_all(&l.stream, &scan.matchers))
            .filter(|l| scan.trace_id.is_none_or(|t| l.record.trace_id == Some(t)))
            .filter(|l| scan.line_contains.iter().all(|s| l.record.body.contains(s.as_str())))
            .collect();
        if scan.direction == Direction::Backward {
            logs.reverse();
        }
        for l in &logs {
            if !visit(l) {
                return;
            }
        }
    }
}

/// Scan order of [`LogsReader::scan`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first (Loki's default).
    Backward,
}

/// What [`LogsReader::scan`] reads: the streams matching every matcher, records in
/// `start_ns..=end_ns`. The hints only let the store skip records that cannot match; a store may
/// ignore them, and callers must still verify every record they are given.
#[derive(Clone, Debug, Default)]
pub struct LogScan {
    /// Stream selector matchers (at least one in LogQL use).
    pub matchers: Vec<crate::read::Matcher>,
    /// Inclusive start (ns).
    pub start_ns: i64,
    /// Inclusive end (ns).
    pub end_ns: i64,
    /// Order of the records handed to the visitor (by timestamp; ties in arrival order).
    pub direction: Direction,
    /// Hint: only lines containing every one of these substrings (case-sensitive) are wanted.
    pub line_contains: Vec<String>,
    /// Hint: only records carrying this trace id are wanted.
    pub trace_id: Option<TraceId>,
}

impl dyn LogsReader + '_ {
    /// Convenience: every record of `scan`, collected.
    pub fn scan_all(&self, scan: &LogScan) -> Vec<StoredLog> {
        let mut out = Vec::new();
        self.scan(scan, &mut |log| {
            out.push(log.clone());
            true
        });
        out
    }
}

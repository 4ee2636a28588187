//! Read access to traces. Implemented by the traces engine (`crate::traces`).

use std::sync::Arc;

use crate::model::{Resource, Scope, Span, TraceId};

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

    /// Hands each trace `scan` selects (all its spans, as [`TracesReader::trace`] returns them)
    /// to `visit`, once each, until `visit` returns false; roughly newest first: the default
    /// implementation (which reads every trace) orders by latest span end, the traces engine
    /// visits its in-memory head newest first and then its span files newest file first, a file's
    /// traces in the file's order (as Tempo searches block by block).
    fn scan_traces(&self, scan: &TraceScan, visit: &mut dyn FnMut(&[StoredSpan]) -> bool) {
        let mut traces: Vec<(i64, Vec<StoredSpan>)> = Vec::new();
        for id in self.trace_ids() {
            let spans = self.trace(id);
            let overlaps =
                spans.iter().any(|s| s.span.start_time_ns <= scan.end_ns && s.span.end_time_ns >= scan.start_ns);
            if !overlaps {
                continue;
            }
            let last = spans.iter().map(|s| s.span.end_time_ns).max().unwrap_or(0);
            traces.push((last, spans));
        }
        traces.sort_by_key(|t| std::cmp::Reverse(t.0));
        for (_, spans) in &traces {
            if !visit(spans) {
                return;
            }
        }
    }
}

/// What [`TracesReader::scan_traces`] reads: traces with at least one span overlapping
/// `start_ns..=end_ns` (0 and `i64::MAX` for all time). Hints only let the store skip traces that
/// cannot match; callers verify.
#[derive(Clone, Debug, Default)]
pub struct TraceScan {
    /// Inclusive start (ns).
    pub start_ns: i64,
    /// Inclusive end (ns).
    pub end_ns: i64,
    /// Hint: only traces with a span whose resource has `service.name` equal to this.
    pub service_name: Option<String>,
    /// Hint: only traces with a span of this name.
    pub span_name: Option<String>,
    /// Hint: only traces with a span lasting at least this long (ns, end − start). A store may
    /// check it on a duration column before decoding any span.
    pub min_span_duration_ns: Option<i64>,
}

impl dyn TracesReader + '_ {
    /// Every span of every trace of `scan`, trace by trace.
    pub fn scan_all(&self, scan: &TraceScan) -> Vec<Vec<StoredSpan>> {
        let mut out = Vec::new();
        self.scan_traces(scan, &mut |spans| {
            out.push(spans.to_vec());
            true
        });
        out
    }
}

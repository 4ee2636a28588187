//! The traces engine: a head of recent spans grouped by trace id, fed from the WAL, and immutable
//! Parquet span files it is flushed to at every checkpoint. Formats:
//! `storage/docs/format/traces.md`.
//!
//! Layout of `<data_dir>/traces/`: `MANIFEST` (JSON, replaced atomically: the files in data order,
//! their summaries, and the last WAL position they hold), `<seq>.parquet` + `<seq>.tid` per file.
//! Files not named by the manifest are leftovers of an interrupted flush or compaction and are
//! deleted at open.
//!
//! Invariants:
//! - Every applied span is in exactly one of: the head, the frozen head being flushed, or one file.
//! - `files` is in data order: a span in an earlier file arrived before a span of the same trace in
//!   a later one, and the head comes last; so a trace reads back in arrival order across files.
//! - The manifest's `persisted` position covers every span in its files and nothing in the head;
//!   on replay, batches at or before it are skipped (never for [`WalPos::ZERO`]).
//! - A reader never waits for I/O under the state lock: it clones the `Arc`s it needs and reads
//!   files outside it.

mod file;
mod json;
mod nested;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::flusher::HeadPressure;
use serde::{Deserialize, Serialize};

use crate::FastMap;
use crate::intern::Interner;
use crate::model::{Resource, Scope, SpansBatch, TraceId};
use crate::read::{StoredSpan, TraceScan};
use crate::wal::WalPos;

use file::{FileSummary, SpanFile};

/// Options of the traces engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracesOptions {
    /// Span files whose newest span ended longer ago than this are deleted (ms; 0 = keep forever).
    pub retention_ms: i64,
    /// When the span files take more bytes than this, the oldest go first (0 = no limit).
    pub max_bytes: u64,
    /// Rows per Parquet row group: smaller groups make a trace lookup decode less.
    pub row_group_rows: usize,
    /// Rows per Parquet data page: a trace lookup decodes only the pages that hold its rows
    /// (through the page index), so smaller pages make it decode less.
    pub page_rows: usize,
    /// Target size of merged span files (bytes; 0 = never merge): `maintain` merges adjacent
    /// files under half of this, together at most this (see `compaction_run`).
    pub compact_below_bytes: u64,
    /// Head size (bytes, approximate) above which the storage's flusher thread writes it to a span
    /// file before the next checkpoint, so that memory stays bounded whatever the ingest rate
    /// (0 = only at checkpoints).
    pub head_flush_bytes: usize,
}

impl Default for TracesOptions {
    fn default() -> Self {
        TracesOptions {
            retention_ms: 14 * 24 * 3600 * 1000,
            max_bytes: 0,
            row_group_rows: 16384,
            page_rows: 512,
            compact_below_bytes: 64 << 20,
            head_flush_bytes: 128 << 20,
        }
    }
}

/// Spans not yet in a file, grouped by trace: one map entry per trace and a `next` link per span
/// (no per-trace allocation).
struct Head {
    spans: Chunked<StoredSpan>,
    /// Per span: the index of the trace's next span, `u32::MAX` for the last.
    next: Vec<u32>,
    by_trace: FastMap<TraceId, HeadTrace>,
    last_pos: WalPos,
    /// Approximate memory held by the spans (see [`span_bytes`]).
    bytes: usize,
    /// The distinct span names, for the span file's summary; `None` once past
    /// [`file::SUMMARY_CAP`]. Gathered as spans arrive (their names are in cache then), not
    /// when the head is written.
    span_names: Option<crate::FastSet<Box<str>>>,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            spans: Chunked::default(),
            next: Vec::new(),
            by_trace: FastMap::default(),
            last_pos: WalPos::ZERO,
            bytes: 0,
            span_names: Some(Default::default()),
        }
    }
}

/// Spans per chunk of [`Chunked`].
const CHUNK: usize = 4096;

/// An append-only vector in fixed-size chunks: growing it never moves (copies and faults in
/// again) what it already holds, which a single `Vec` of a few million spans does at every
/// doubling.
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    fn push(&mut self, v: T) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(v),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(v);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK))
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

/// Approximate heap and inline bytes of one span in the head (strings, attributes, events,
/// links); the resource and scope are shared and not counted.
fn span_bytes(s: &crate::model::Span) -> usize {
    fn kvs(kvs: &[crate::model::KeyValue]) -> usize {
        kvs.iter().map(|kv| std::mem::size_of::<crate::model::KeyValue>() + kv.key.len() + any(&kv.value)).sum()
    }
    fn any(v: &crate::model::AnyValue) -> usize {
        use crate::model::AnyValue;
        match v {
            AnyValue::String(s) => s.len(),
            AnyValue::Bytes(b) => b.len(),
            AnyValue::Array(items) => items.iter().map(|i| std::mem::size_of::<AnyValue>() + any(i)).sum(),
            AnyValue::KvList(l) => kvs(l),
            _ => 0,
        }
    }
    std::mem::size_of::<StoredSpan>()
        + 8
        + s.name.len()
        + s.trace_state.len()
        + s.status_message.len()
        + kvs(&s.attributes)
        + s.events
            .iter()
            .map(|e| std::mem::size_of::<crate::model::SpanEvent>() + e.name.len() + kvs(&e.attributes))
            .sum::<usize>()
        + s.links
            .iter()
            .map(|l| std::mem::size_of::<crate::model::SpanLink>() + l.trace_state.len() + kvs(&l.attributes))
            .sum::<usize>()
}

/// One trace in the head.
#[derive(Clone, Copy)]
struct HeadTrace {
    first: u32,
    last: u32,
    /// Earliest start and latest end, for scans.
    min_start_ns: i64,
    max_end_ns: i64,
}

const NO_SPAN: u32 = u32::MAX;

impl Head {
    fn push(&mut self, span: StoredSpan) {
        let id = span.span.trace_id;
        let (s, e) = (span.span.start_time_ns, span.span.end_time_ns);
        let ix = self.spans.len() as u32;
        self.bytes += span_bytes(&span.span);
        if let Some(names) = &mut self.span_names
            && !names.contains(span.span.name.as_str())
        {
            names.insert(span.span.name.as_str().into());
            if names.len() > file::SUMMARY_CAP {
                self.span_names = None;
            }
        }
        self.spans.push(span);
        self.next.push(NO_SPAN);
        match self.by_trace.entry(id) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                let t = o.get_mut();
                if let Some(n) = self.next.get_mut(t.last as usize) {
                    *n = ix;
                }
                t.last = ix;
                t.min_start_ns = t.min_start_ns.min(s);
                t.max_end_ns = t.max_end_ns.max(e);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(HeadTrace { first: ix, last: ix, min_start_ns: s, max_end_ns: e });
            }
        }
    }

    fn trace(&self, id: &TraceId, out: &mut Vec<StoredSpan>) {
        if let Some(t) = self.by_trace.get(id) {
            let mut i = t.first;
            while let Some(span) = self.spans.get(i as usize) {
                out.push(span.clone());
                i = self.next[i as usize];
            }
        }
    }

    /// Every span, sorted by trace id and in arrival order within a trace (the span files' row
    /// order): the trace ids are sorted, not the spans.
    fn sorted_spans(&self) -> Vec<&StoredSpan> {
        let mut traces: Vec<(&TraceId, u32)> = self.by_trace.iter().map(|(id, t)| (id, t.first)).collect();
        traces.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(self.spans.len());
        for (_, first) in traces {
            let mut i = first;
            while let Some(span) = self.spans.get(i as usize) {
                out.push(span);
                i = self.next[i as usize];
            }
        }
        out
    }
}

#[derive(Default)]
struct State {
    head: Head,
    /// The head being written to a file by `persist`; still readable.
    frozen: Option<Arc<Head>>,
    files: Vec<Arc<SpanFile>>,
    persisted: WalPos,
    /// Bumped whenever `files` changes.
    generation: u64,
    /// Shares resources and scopes between the head's spans.
    resources: Interner<Resource>,
    scopes: Interner<Scope>,
}

/// The manifest file's content.
#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    version: u32,
    persisted: WalPos,
    next_seq: u64,
    files: Vec<FileSummary>,
}

/// The traces store.
pub(crate) struct TracesHead {
    dir: Option<PathBuf>,
    opts: TracesOptions,
    state: RwLock<State>,
    /// Serialises `persist` and `maintain` (the only writers of files and the manifest); the next
    /// file number.
    flush: Mutex<u64>,
}

impl TracesHead {
    pub fn open(dir: Option<&Path>, opts: &TracesOptions) -> Result<Self, crate::error::OpenError> {
        let mut state = State::default();
        let mut next_seq = 1;
        if let Some(dir) = dir {
            let io_err = |source| crate::error::OpenError::Io { path: dir.to_path_buf(), source };
            fs::create_dir_all(dir).map_err(io_err)?;
            let manifest = read_manifest(dir).map_err(io_err)?;
            next_seq = manifest.next_seq.max(1);
            state.persisted = manifest.persisted;
            let mut named = BTreeSet::new();
            for summary in manifest.files {
                named.insert(summary.seq);
                let seq = summary.seq;
                let f = SpanFile::open(dir, summary)
                    .map_err(|source| crate::error::OpenError::Io { path: file::parquet_path(dir, seq), source })?;
                state.files.push(Arc::new(f));
            }
            remove_strays(dir, &named).map_err(io_err)?;
        }
        Ok(TracesHead {
            dir: dir.map(Path::to_path_buf),
            opts: opts.clone(),
            state: RwLock::new(state),
            flush: Mutex::new(next_seq),
        })
    }

    pub fn apply(&self, pos: WalPos, batch: SpansBatch) {
        let mut state = self.state.write();
        if pos != WalPos::ZERO && pos <= state.persisted {
            return;
        }
        let state = &mut *state;
        for group in batch.groups {
            if group.spans.is_empty() {
                continue;
            }
            let resource = state.resources.intern(group.resource);
            let scope = state.scopes.intern(group.scope);
            for span in group.spans {
                state.head.push(StoredSpan { resource: Arc::clone(&resource), scope: Arc::clone(&scope), span });
            }
        }
        state.head.last_pos = state.head.last_pos.max(pos);
    }

    /// Writes the head to a new span file and records it in the manifest; `Ok(false)` when
    /// memory-only.
    pub fn persist(&self) -> io::Result<bool> {
        if self.dir.is_none() {
            return Ok(false);
        }
        self.persist_locked(self.flush.lock())
    }

    /// What the head's size asks of the writer that just grew it (see [`crate::flusher`]).
    pub(crate) fn head_pressure(&self) -> HeadPressure {
        if self.dir.is_none() {
            return HeadPressure::Below;
        }
        HeadPressure::of(self.state.read().head.bytes, self.opts.head_flush_bytes, crate::flusher::TRACES_BACKPRESSURE)
    }

    /// Persists the head when it holds more than `head_flush_bytes` and no flush, checkpoint or
    /// maintenance pass runs already (that one takes it); true when it flushed.
    ///
    /// Back-pressure: when writes outpace flushing and the head passes
    /// [`crate::flusher::TRACES_BACKPRESSURE`] × `head_flush_bytes` anyway, the caller waits for the
    /// running flush and then flushes itself, so memory stays bounded and ingest runs at flushing
    /// speed.
    pub fn flush_if_large(&self) -> io::Result<bool> {
        match self.head_pressure() {
            HeadPressure::Below => Ok(false),
            HeadPressure::Backpressure => {
                let guard = self.flush.lock();
                if self.state.read().head.bytes <= self.opts.head_flush_bytes {
                    return Ok(false);
                }
                self.persist_locked(guard)
            }
            HeadPressure::Over => match self.flush.try_lock() {
                Some(guard) => self.persist_locked(guard),
                None => Ok(false),
            },
        }
    }

    /// [`TracesHead::persist`] with the flush lock (the next file number) held.
    fn persist_locked(&self, mut next_seq: parking_lot::MutexGuard<'_, u64>) -> io::Result<bool> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let frozen = {
            let mut state = self.state.write();
            if state.head.spans.is_empty() {
                return Ok(true);
            }
            let frozen = Arc::new(std::mem::take(&mut state.head));
            state.head.last_pos = frozen.last_pos;
            state.frozen = Some(Arc::clone(&frozen));
            // A new interner per head keeps the dictionary from growing forever.
            state.resources = Interner::default();
            state.scopes = Interner::default();
            frozen
        };
        let seq = *next_seq;
        let result = (|| {
            let spans = frozen.sorted_spans();
            let names = frozen.span_names.as_ref().map(|n| n.iter().map(|n| n.to_string()).collect());
            let f = Arc::new(file::write(dir, seq, &spans, names, &self.file_layout())?);
            let files = {
                let state = self.state.read();
                let mut v: Vec<FileSummary> = state.files.iter().map(|f| f.summary.clone()).collect();
                v.push(f.summary.clone());
                v
            };
            write_manifest(dir, &Manifest { version: 1, persisted: frozen.last_pos, next_seq: seq + 1, files })?;
            Ok::<_, io::Error>(f)
        })();
        let mut state = self.state.write();
        state.frozen = None;
        match result {
            Ok(f) => {
                *next_seq = seq + 1;
                state.files.push(f);
                state.generation += 1;
                state.persisted = frozen.last_pos;
                Ok(true)
            }
            Err(e) => {
                // Put the spans back in front of what arrived meanwhile.
                let newer = std::mem::take(&mut state.head);
                let mut head = Head::default();
                for s in frozen.spans.iter().chain(newer.spans.iter()) {
                    head.push(s.clone());
                }
                head.last_pos = newer.last_pos.max(frozen.last_pos);
                state.head = head;
                let _ = std::fs::remove_file(file::parquet_path(dir, seq));
                let _ = std::fs::remove_file(file::tid_path(dir, seq));
                *next_seq = seq + 1;
                Err(e)
            }
        }
    }

    /// Retention (age, then bytes) and compaction of small files.
    pub fn maintain(&self, now_ms: i64) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut next_seq = self.flush.lock();
        let (files, persisted) = {
            let s = self.state.read();
            (s.files.clone(), s.persisted)
        };
        // Retention.
        let cutoff_ns = now_ms.saturating_sub(self.opts.retention_ms).saturating_mul(1_000_000);
        let mut keep: Vec<Arc<SpanFile>> = files
            .iter()
            .filter(|f| self.opts.retention_ms <= 0 || f.summary.max_end_ns >= cutoff_ns)
            .cloned()
            .collect();
        if self.opts.max_bytes > 0 {
            let mut total: u64 = keep.iter().map(|f| f.summary.bytes).sum();
            while total > self.opts.max_bytes && !keep.is_empty() {
                // Oldest by data: the file whose newest span is oldest.
                let (i, _) =
                    keep.iter().enumerate().min_by_key(|(_, f)| f.summary.max_end_ns).expect("keep is not empty");
                total -= keep.remove(i).summary.bytes;
            }
        }
        let mut new_file: Option<(usize, usize, Arc<SpanFile>)> = None;
        let sizes: Vec<u64> = keep.iter().map(|f| f.summary.bytes).collect();
        if let Some((i, j)) = compaction_run(&sizes, self.opts.compact_below_bytes) {
            let seq = *next_seq;
            *next_seq += 1;
            let f = Arc::new(file::merge(dir, seq, &keep[i..j], &self.file_layout())?);
            new_file = Some((i, j, f));
        }
        let mut result = keep.clone();
        if let Some((i, j, f)) = &new_file {
            result.splice(*i..*j, [Arc::clone(f)]);
        }
        if result.len() == files.len() && result.iter().zip(&files).all(|(a, b)| Arc::ptr_eq(a, b)) {
            return Ok(());
        }
        let summaries = result.iter().map(|f| f.summary.clone()).collect();
        write_manifest(dir, &Manifest { version: 1, persisted, next_seq: *next_seq, files: summaries })?;
        {
            let mut state = self.state.write();
            // `persist` cannot have run meanwhile (it takes `flush`), so `files` is unchanged.
            state.files = result.clone();
            state.generation += 1;
        }
        for f in &files {
            if !result.iter().any(|r| Arc::ptr_eq(r, f)) {
                f.delete()?;
            }
        }
        Ok(())
    }

    fn file_layout(&self) -> file::Layout {
        file::Layout { row_group_rows: self.opts.row_group_rows, page_rows: self.opts.page_rows }
    }

    pub fn span_count(&self) -> u64 {
        let s = self.state.read();
        s.head.spans.len() as u64
            + s.frozen.as_ref().map_or(0, |f| f.spans.len() as u64)
            + s.files.iter().map(|f| f.summary.spans).sum::<u64>()
    }

    fn snapshot(&self) -> (Vec<Arc<SpanFile>>, u64) {
        let s = self.state.read();
        (s.files.clone(), s.generation)
    }

    /// Every span of the trace in arrival order. A file that cannot be read is skipped (and its
    /// spans are missing from the answer) rather than failing the whole read.
    pub fn trace(&self, id: TraceId) -> Vec<StoredSpan> {
        loop {
            let (files, generation) = self.snapshot();
            if let Some(mut found) = self.read_chunk(&files, &[id], generation) {
                return found.remove(&id).unwrap_or_default();
            }
        }
    }

    pub fn trace_ids(&self) -> Vec<TraceId> {
        let s = self.state.read();
        let mut ids: Vec<TraceId> = s.head.by_trace.keys().copied().collect();
        if let Some(f) = &s.frozen {
            ids.extend(f.by_trace.keys().copied());
        }
        for f in &s.files {
            ids.extend(f.traces.iter().map(|t| t.trace_id));
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Traces overlapping the scan: first those with spans in the heads, newest (latest span end)
    /// first; then the span files, newest file first, each read front to back in row (trace id)
    /// order so that every row group is decoded once per scan rather than once per trace. A trace
    /// with spans in several places is read whole, once.
    pub fn scan(&self, scan: &TraceScan, visit: &mut dyn FnMut(&[StoredSpan]) -> bool) {
        let (start, end) = (scan.start_ns, if scan.end_ns == 0 { i64::MAX } else { scan.end_ns });
        let service = scan.service_name.as_deref();
        let name = scan.span_name.as_deref();
        let min_duration = scan.min_span_duration_ns;
        let long_enough =
            |s: &StoredSpan| min_duration.is_none_or(|m| s.span.end_time_ns.saturating_sub(s.span.start_time_ns) >= m);
        let wanted = |spans: &[StoredSpan]| {
            !spans.is_empty()
                && spans.iter().any(long_enough)
                && spans.iter().any(|s| s.span.start_time_ns <= end && s.span.end_time_ns >= start)
                && service.is_none_or(|svc| spans.iter().any(|s| s.resource.attr_str("service.name") == Some(svc)))
                && name.is_none_or(|n| spans.iter().any(|s| s.span.name == n))
        };
        let state = self.state.read();
        let (mut files, mut generation) = (state.files.clone(), state.generation);
        // 1. Traces with spans in the heads, newest first.
        let mut in_heads: FastMap<TraceId, (i64, i64)> = FastMap::default();
        for h in state.frozen.iter().map(|f| &**f).chain(std::iter::once(&state.head)) {
            for (id, t) in &h.by_trace {
                let b = in_heads.entry(*id).or_insert((t.max_end_ns, t.min_start_ns));
                b.0 = b.0.max(t.max_end_ns);
                b.1 = b.1.min(t.min_start_ns);
            }
        }
        drop(state);
        // Head traces whose own spans miss the window may still overlap it through a file's
        // spans: widen their bounds with the files' entries.
        for f in &files {
            for (id, b) in in_heads.iter_mut() {
                if let Some(e) = f.find(id) {
                    b.0 = b.0.max(e.max_end_ns);
                    b.1 = b.1.min(e.min_start_ns);
                }
            }
        }
        let mut order: Vec<(i64, TraceId)> =
            in_heads.iter().filter(|(_, b)| b.1 <= end && b.0 >= start).map(|(id, b)| (b.0, *id)).collect();
        order.sort_unstable_by(|a, b| b.cmp(a));
        for chunk in order.chunks(256) {
            let ids: Vec<TraceId> = chunk.iter().map(|c| c.1).collect();
            let found = loop {
                match self.read_chunk(&files, &ids, generation) {
                    Some(found) => break found,
                    None => (files, generation) = self.snapshot(),
                }
            };
            for id in &ids {
                if let Some(spans) = found.get(id)
                    && wanted(spans)
                    && !visit(spans)
                {
                    return;
                }
            }
        }
        // 2. The span files, newest data first. Traces seen in step 1 (anything in the heads) are
        // skipped; a trace split over several files is read whole where it is first met.
        let mut by_age: Vec<Arc<SpanFile>> =
            files.iter().filter(|f| f.summary.may_contain(start, end, service, name)).cloned().collect();
        by_age.sort_by_key(|f| std::cmp::Reverse(f.summary.max_end_ns));
        let mut visited_split: crate::FastSet<TraceId> = Default::default();
        for f in &by_age {
            let candidates: Vec<&file::TraceEntry> = f
                .traces
                .iter()
                .filter(|t| t.min_start_ns <= end && t.max_end_ns >= start && !in_heads.contains_key(&t.trace_id))
                .collect();
            for chunk in chunks_by_rows(&candidates, SCAN_CHUNK_ROWS) {
                // A duration filter is checked on the duration column first: only traces with a
                // long enough span here are decoded. (A split trace whose long span lies in
                // another file is met, and read whole, from that file.)
                let filtered: Vec<&file::TraceEntry>;
                let chunk = match min_duration {
                    None => chunk,
                    Some(m) => {
                        let ranges: Vec<(u64, u64)> = chunk
                            .iter()
                            .map(|e| (u64::from(e.first_row), u64::from(e.first_row) + u64::from(e.rows)))
                            .collect();
                        let Ok(durations) = f.read_durations(&ranges) else { break };
                        let mut at = 0usize;
                        filtered = chunk
                            .iter()
                            .filter(|e| {
                                let n = (e.rows as usize).min(durations.len().saturating_sub(at));
                                let own = &durations[at..at + n];
                                at += n;
                                own.iter().any(|&d| d >= m)
                            })
                            .copied()
                            .collect();
                        if filtered.is_empty() {
                            continue;
                        }
                        &filtered[..]
                    }
                };
                let ranges: Vec<(u64, u64)> = chunk
                    .iter()
                    .map(|e| (u64::from(e.first_row), u64::from(e.first_row) + u64::from(e.rows)))
                    .collect();
                let Ok(spans) = f.read_rows(&ranges) else { break };
                let mut at = 0usize;
                for e in chunk {
                    let n = (e.rows as usize).min(spans.len() - at);
                    let own = &spans[at..at + n];
                    at += n;
                    let split = files.iter().any(|o| o.summary.seq != f.summary.seq && o.find(&e.trace_id).is_some());
                    if !split {
                        if wanted(own) && !visit(own) {
                            return;
                        }
                        continue;
                    }
                    if !visited_split.insert(e.trace_id) {
                        continue;
                    }
                    let found = loop {
                        match self.read_chunk(&files, &[e.trace_id], generation) {
                            Some(found) => break found,
                            None => (files, generation) = self.snapshot(),
                        }
                    };
                    if let Some(spans) = found.get(&e.trace_id)
                        && wanted(spans)
                        && !visit(spans)
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// Rows a file scan decodes at a time (a few row groups).
const SCAN_CHUNK_ROWS: u64 = 8192;

/// Consecutive runs of `entries` (in row order) of about `rows` rows each.
fn chunks_by_rows<'a>(
    entries: &'a [&'a file::TraceEntry],
    rows: u64,
) -> impl Iterator<Item = &'a [&'a file::TraceEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let first = u64::from(rest[0].first_row);
        let n = rest.iter().take_while(|e| u64::from(e.first_row) < first + rows).count().max(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

impl TracesHead {
    /// The spans of `ids` from `files` and the heads; `None` if the files changed since
    /// `generation` (the caller retries with a new snapshot).
    fn read_chunk(
        &self,
        files: &[Arc<SpanFile>],
        ids: &[TraceId],
        generation: u64,
    ) -> Option<FastMap<TraceId, Vec<StoredSpan>>> {
        let mut found: FastMap<TraceId, Vec<StoredSpan>> = FastMap::default();
        for f in files {
            let mut ranges: Vec<(u64, u64)> = ids
                .iter()
                .filter_map(|id| f.find(id))
                .map(|e| (u64::from(e.first_row), u64::from(e.first_row) + u64::from(e.rows)))
                .collect();
            if ranges.is_empty() {
                continue;
            }
            ranges.sort_unstable();
            if let Ok(spans) = f.read_rows(&ranges) {
                for s in spans {
                    found.entry(s.span.trace_id).or_default().push(s);
                }
            }
        }
        let state = self.state.read();
        if state.generation != generation {
            return None;
        }
        for id in ids {
            let v = found.entry(*id).or_default();
            if let Some(f) = &state.frozen {
                f.trace(id, v);
            }
            state.head.trace(id, v);
        }
        Some(found)
    }
}

/// The files (`start..end` of `sizes`, the files' bytes in data order) the next compaction merges:
/// the first run of at least two adjacent files that are each under half of `target` and together
/// at most `target`, without its leading files that are bigger than the rest of the run together.
/// `None`: nothing to merge (or `target` is 0).
///
/// So a file is rewritten a bounded number of times: one that reached half the target is final
/// (a merge of fresh files usually gets there at once), and a file is merged again only with at
/// least as many bytes as it holds — never a large file rewritten to absorb one small file, which
/// would cost its whole size for every small file that arrives.
fn compaction_run(sizes: &[u64], target: u64) -> Option<(usize, usize)> {
    if target == 0 {
        return None;
    }
    let small = |b: u64| b < target / 2;
    let mut i = 0;
    while i < sizes.len() {
        if !small(sizes[i]) {
            i += 1;
            continue;
        }
        let (mut j, mut bytes) = (i, 0u64);
        while j < sizes.len() && small(sizes[j]) && bytes + sizes[j] <= target {
            bytes += sizes[j];
            j += 1;
        }
        let mut start = i;
        while j - start >= 2 && sizes[start] > bytes - sizes[start] {
            bytes -= sizes[start];
            start += 1;
        }
        if j - start >= 2 {
            return Some((start, j));
        }
        i = j.max(i + 1);
    }
    None
}

fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("MANIFEST")
}

fn read_manifest(dir: &Path) -> io::Result<Manifest> {
    match fs::read(manifest_path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("traces MANIFEST: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Ok(Manifest { version: 1, next_seq: 1, ..Manifest::default() })
        }
        Err(e) => Err(e),
    }
}

/// Replaces the manifest atomically: write a temporary file, fsync, rename over, fsync the folder.
fn write_manifest(dir: &Path, m: &Manifest) -> io::Result<()> {
    let tmp = dir.join("MANIFEST.tmp");
    let bytes = serde_json::to_vec_pretty(m).map_err(io::Error::other)?;
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, manifest_path(dir))?;
    fs::File::open(dir)?.sync_all()
}

/// Deletes span files the manifest does not name (an interrupted flush or compaction).
fn remove_strays(dir: &Path, named: &BTreeSet<u64>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str());
        if !matches!(ext, Some("parquet" | "tid" | "tmp")) {
            continue;
        }
        let seq = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        if ext == Some("tmp") || seq.is_some_and(|s| !named.contains(&s)) {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl crate::read::TracesReader for TracesHead {
    fn trace(&self, trace_id: TraceId) -> Vec<StoredSpan> {
        TracesHead::trace(self, trace_id)
    }

    fn trace_ids(&self) -> Vec<TraceId> {
        TracesHead::trace_ids(self)
    }

    fn span_count(&self) -> u64 {
        TracesHead::span_count(self)
    }

    fn scan_traces(&self, scan: &TraceScan, visit: &mut dyn FnMut(&[StoredSpan]) -> bool) {
        self.scan(scan, visit)
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! The logs engine: time-partitioned chunk stores on disk, fed from an in-memory head.
//!
//! - [`head`]: records applied but not yet flushed, queryable as soon as they are applied.
//! - [`partition`]: one folder per time partition (`partition_ns`, an hour by default) under
//!   `<data_dir>/logs/part-<start seconds>`: per stream, the records cut into [`chunk`]s stored
//!   column by column (zstd) in append-only data files, and a tantivy index with one document per
//!   chunk (stream id, time bounds, location, the chunk's distinct body tokens).
//! - [`chunk`]: the chunk encoding, with a bloom filter of its trace/span ids and long body runs.
//! - [`registry`]: stream label sets, resources and scopes under dense ids (`registry.log`).
//! - [`tokens`]: the body tokens and n-grams, and which of them a substring hint requires.
//! - [`v1`]: the reader of format-1 partitions, which [`LogsHead::open`] migrates to format 2.
//!
//! The layout is specified in `storage/docs/format/logs.md`.
//!
//! Invariants:
//! - Every record has a `seq`, its arrival (WAL) order; results sort by `(timestamp, seq)`.
//! - A record is in exactly one place a reader can see: the head, or a committed partition whose
//!   snapshot is installed together with the head's drain (under the state lock). A head record
//!   whose partition already committed its WAL position (after a failed flush) is hidden.
//! - Each partition commit records the WAL position of its newest batch; on replay a record is
//!   skipped when its partition committed that position or a later one. `WalPos::ZERO` (memory
//!   only) is never skipped.
//! - The chunk index and bloom filters only narrow: a chunk holding a record a scan wants is always
//!   read, and every record is checked against the scan's filters before it is handed out.

mod chunk;
mod head;
mod partition;
mod registry;
mod tokens;
mod v1;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::OpenError;
use crate::flusher::HeadPressure;
use crate::model::{Labels, LogRecord, LogsBatch, Resource, Scope, TraceId};
use crate::read::{Direction, LineScan, LogLine, LogScan, Matcher, StoredLog};
use crate::wal::WalPos;
use chunk::{Bloom, Decoded, Row};
use head::{Head, HeadRecord};
use partition::{ChunkMeta, Fields, Filter, NewChunk, Partition, Payload};
use registry::Registry;

/// Options of the logs engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsOptions {
    /// Width of a time partition (ns). Each partition is one folder; retention drops whole
    /// partitions.
    pub partition_ns: i64,
    /// Partitions whose newest possible record is older than this (ns) are dropped; 0 keeps
    /// everything.
    pub retention_ns: i64,
    /// When the partitions together exceed this many bytes, the oldest go; 0 = no limit.
    pub max_bytes: u64,
    /// Head size (bytes, approximate) above which the storage's flusher thread commits it to the
    /// partitions before the next checkpoint (0 = only at checkpoints).
    pub head_flush_bytes: usize,
}

impl Default for LogsOptions {
    fn default() -> Self {
        LogsOptions {
            partition_ns: 3600 * 1_000_000_000,
            retention_ns: 7 * 24 * 3600 * 1_000_000_000,
            max_bytes: 0,
            head_flush_bytes: 32 << 20,
        }
    }
}

/// Most rows in one chunk.
const CHUNK_ROWS: usize = 8192;
/// Most body bytes in one chunk (before compression).
const CHUNK_BODY_BYTES: usize = 1 << 20;

/// The logs engine (the name is historical: it is the head plus the partitions).
pub(crate) struct LogsHead {
    dir: Option<PathBuf>,
    opts: LogsOptions,
    fields: Fields,
    state: RwLock<State>,
    /// Held for a whole flush or maintenance pass, so at most one runs at a time; readers never
    /// take it.
    writers: Mutex<()>,
    /// True while a write's size-triggered flush runs ([`LogsHead::flush_if_large`]).
    flushing: std::sync::atomic::AtomicBool,
    /// Where damaged chunks are reported (none until [`LogsHead::set_events`]).
    events: std::sync::OnceLock<Arc<dyn crate::StorageEvents>>,
    /// Damaged chunks already reported, by partition start and chunk number.
    damaged: Mutex<std::collections::HashSet<(i64, usize)>>,
}

struct State {
    registry: Registry,
    head: Head,
    partitions: BTreeMap<i64, Arc<Partition>>,
}

/// Tables of the registry, cloned for the duration of a read.
struct Tables {
    streams: Vec<Arc<Labels>>,
    resources: Vec<Arc<Resource>>,
    scopes: Vec<Arc<Scope>>,
    none: Arc<Labels>,
}

impl Tables {
    fn stored(&self, stream: u32, resource: u32, scope: u32, record: LogRecord) -> StoredLog {
        StoredLog {
            resource: self.resources.get(resource as usize).cloned().unwrap_or_default(),
            scope: self.scopes.get(scope as usize).cloned().unwrap_or_default(),
            stream: self.streams.get(stream as usize).cloned().unwrap_or_default(),
            record,
        }
    }

    fn stream(&self, id: u32) -> &Arc<Labels> {
        self.streams.get(id as usize).unwrap_or(&self.none)
    }
}

fn io_open(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

const VERSION_FILE: &str = "VERSION";
const VERSION_TEXT: &str = "outpost-logs 2\n";
const VERSION_1_TEXT: &str = "outpost-logs 1\n";
const REGISTRY_FILE: &str = "registry.log";
/// Suffix of a partition being rewritten from format 1 (deleted at open: the rewrite restarts).
const MIGRATING: &str = ".migrating";
/// Suffix of a format-1 partition set aside once its rewrite is complete.
const OLD_V1: &str = ".v1";

/// A chunk row: its seq, registry ids and record.
type RowRef<'a> = (u64, u32, u32, &'a LogRecord);

/// Encodes the rows of one stream (sorted by `(timestamp, seq)`) as chunks appended to `data`.
fn encode_stream(
    stream: u32,
    rows: &[RowRef<'_>],
    data: &mut Vec<u8>,
    out: &mut Vec<NewChunk>,
    scratch: &mut chunk::Scratch,
) -> std::io::Result<()> {
    let mut at = 0;
    while at < rows.len() {
        let mut end = at;
        let mut bytes = 0;
        while end < rows.len() && end - at < CHUNK_ROWS && (bytes < CHUNK_BODY_BYTES || end == at) {
            bytes += rows[end].3.body.len();
            end += 1;
        }
        let chunk_rows: Vec<Row<'_>> =
            rows[at..end].iter().map(|&(seq, resource, scope, record)| Row { seq, resource, scope, record }).collect();
        let offset = data.len();
        let sum = chunk::encode(stream, &chunk_rows, data, scratch)?;
        out.push(NewChunk {
            meta: ChunkMeta {
                stream,
                min_ts: sum.min_ts,
                max_ts: sum.max_ts,
                rows: sum.rows,
                file: 0,
                offset: offset as u64,
                len: (data.len() - offset) as u64,
            },
            tokens: sum.tokens,
        });
        at = end;
    }
    Ok(())
}

/// Rewrites the format-1 partition `path` (start `start`) as format 2 in place.
fn migrate_v1(path: &Path, start: i64, partition_ns: i64, fields: Fields) -> std::io::Result<()> {
    let contents = v1::read(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let tmp = path.with_file_name(format!("{name}{MIGRATING}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let part = Partition::open(&tmp, start, partition_ns, fields)?;
    let mut by_stream: BTreeMap<u32, Vec<RowRef<'_>>> = BTreeMap::new();
    for (seq, r) in &contents.records {
        by_stream.entry(r.stream).or_default().push((*seq, r.resource, r.scope, &r.record));
    }
    let mut data = Vec::new();
    let mut chunks = Vec::new();
    let mut scratch = chunk::Scratch::default();
    for (stream, mut rows) in by_stream {
        rows.sort_by_key(|r| (r.3.timestamp_ns, r.0));
        encode_stream(stream, &rows, &mut data, &mut chunks, &mut scratch)?;
    }
    let payload = Payload {
        version: partition::FORMAT_VERSION,
        fgen: 0,
        wal_segment: contents.committed.segment,
        wal_offset: contents.committed.offset,
        max_seq: contents.max_seq,
    };
    part.append(&data, chunks, payload, fields)?;
    drop(part);
    let old = path.with_file_name(format!("{name}{OLD_V1}"));
    std::fs::rename(path, &old)?;
    std::fs::rename(&tmp, path)?;
    std::fs::remove_dir_all(&old)
}

impl LogsHead {
    pub fn open(dir: Option<&Path>, opts: &LogsOptions) -> Result<Self, OpenError> {
        if opts.partition_ns <= 0 {
            return Err(OpenError::InvalidOptions { detail: "logs partition width must be positive".into() });
        }
        let (_, fields) = partition::schema();
        let mut registry = Registry::default();
        let mut partitions = BTreeMap::new();
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(io_open(dir))?;
            let vpath = dir.join(VERSION_FILE);
            let migrate = match std::fs::read_to_string(&vpath) {
                Ok(v) if v == VERSION_TEXT => false,
                Ok(v) if v == VERSION_1_TEXT => true,
                Ok(v) => {
                    return Err(OpenError::Corrupted {
                        path: vpath,
                        detail: format!(
                            "unknown logs store version {:?} (expected {:?})",
                            v.trim(),
                            VERSION_TEXT.trim()
                        ),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::write(&vpath, VERSION_TEXT).map_err(io_open(&vpath))?;
                    false
                }
                Err(e) => return Err(io_open(&vpath)(e)),
            };
            let rpath = dir.join(REGISTRY_FILE);
            registry = Registry::load(&rpath).map_err(io_open(&rpath))?;
            // Leftovers of an interrupted migration first: a half-written rewrite restarts, and a
            // set-aside format-1 partition goes once its rewrite is in place (else it comes back).
            let names: Vec<String> = std::fs::read_dir(dir)
                .map_err(io_open(dir))?
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            for name in &names {
                let path = dir.join(name);
                if name.starts_with("part-") && name.ends_with(MIGRATING) {
                    std::fs::remove_dir_all(&path).map_err(io_open(&path))?;
                } else if let Some(base) = name.strip_suffix(OLD_V1) {
                    let done = dir.join(base);
                    if done.exists() {
                        std::fs::remove_dir_all(&path).map_err(io_open(&path))?;
                    } else {
                        std::fs::rename(&path, &done).map_err(io_open(&path))?;
                    }
                }
            }
            for entry in std::fs::read_dir(dir).map_err(io_open(dir))? {
                let entry = entry.map_err(io_open(dir))?;
                let name = entry.file_name();
                let Some(start) = name.to_str().and_then(partition::parse_dir_name) else { continue };
                let path = entry.path();
                let corrupted = |e: std::io::Error| OpenError::Corrupted { path: path.clone(), detail: e.to_string() };
                if v1::is_v1(&path) {
                    migrate_v1(&path, start, opts.partition_ns, fields).map_err(corrupted)?;
                }
                let p = Partition::open(&path, start, opts.partition_ns, fields).map_err(corrupted)?;
                partitions.insert(start, Arc::new(p));
            }
            if migrate {
                let tmp = dir.join("VERSION.tmp");
                std::fs::write(&tmp, VERSION_TEXT).map_err(io_open(&tmp))?;
                std::fs::rename(&tmp, &vpath).map_err(io_open(&vpath))?;
            }
        }
        let next_seq = partitions.values().map(|p| p.max_seq + 1).max().unwrap_or(0);
        Ok(LogsHead {
            dir: dir.map(Path::to_path_buf),
            opts: opts.clone(),
            fields,
            state: RwLock::new(State { registry, head: Head::new(next_seq), partitions }),
            writers: Mutex::new(()),
            flushing: std::sync::atomic::AtomicBool::new(false),
            events: std::sync::OnceLock::new(),
            damaged: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// Where damaged chunks found by scans are reported from now on (the first call wins).
    pub(crate) fn set_events(&self, events: Arc<dyn crate::StorageEvents>) {
        let _ = self.events.set(events);
    }

    /// Reports damaged chunk `i` of `p`, the first time a scan finds it.
    fn report_damaged(&self, p: &Partition, i: usize, detail: &str) {
        if self.damaged.lock().insert((p.start_ns, i))
            && let Some(events) = self.events.get()
        {
            events.log_chunk_damaged(&p.dir, i, detail);
        }
    }

    fn part_key(&self, ts: i64) -> i64 {
        ts.div_euclid(self.opts.partition_ns).saturating_mul(self.opts.partition_ns)
    }

    /// Makes everything in the head durable in the partitions; see the module doc.
    pub fn persist(&self) -> std::io::Result<bool> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let _writers = self.writers.lock();
        // Records per partition and stream, with the newest WAL position and seq per partition.
        // Only reference counts are taken under the state lock (which writers wait for).
        type Group = (BTreeMap<u32, Vec<Arc<HeadRecord>>>, WalPos, u64);
        let mut groups: BTreeMap<i64, Group> = BTreeMap::new();
        let (upto, entries) = {
            let st = self.state.read();
            if st.head.len() == 0 {
                return Ok(true);
            }
            for r in st.head.iter() {
                let key = self.part_key(r.record.timestamp_ns);
                if st.partitions.get(&key).is_some_and(|p| r.pos <= p.committed && r.pos != WalPos::ZERO) {
                    continue;
                }
                let g = groups.entry(key).or_insert_with(|| (BTreeMap::new(), WalPos::ZERO, 0));
                g.0.entry(r.stream).or_default().push(Arc::clone(r));
                g.1 = g.1.max(r.pos);
                g.2 = g.2.max(r.seq);
            }
            (st.head.next_seq(), st.registry.unpersisted())
        };
        registry::append(&dir.join(REGISTRY_FILE), &entries)?;
        self.state.write().registry.mark_persisted(&entries);
        let mut scratch = chunk::Scratch::default();
        for (key, (streams, pos, max_seq)) in groups {
            // Compressed chunks are about a fifth of the bodies: room for that up front instead
            // of growing by doubling.
            let body_bytes: usize = streams.values().flatten().map(|r| r.record.body.len()).sum();
            let mut data = Vec::with_capacity(body_bytes / 4);
            let mut chunks = Vec::new();
            for (stream, mut recs) in streams {
                recs.sort_by_key(|r| (r.record.timestamp_ns, r.seq));
                let rows: Vec<RowRef<'_>> = recs.iter().map(|r| (r.seq, r.resource, r.scope, &r.record)).collect();
                encode_stream(stream, &rows, &mut data, &mut chunks, &mut scratch)?;
            }
            let existing = self.state.read().partitions.get(&key).cloned();
            let part = match existing {
                Some(p) => p,
                None => Arc::new(Partition::open(
                    &dir.join(partition::dir_name(key)),
                    key,
                    self.opts.partition_ns,
                    self.fields,
                )?),
            };
            let payload = Payload {
                version: partition::FORMAT_VERSION,
                fgen: 0,
                wal_segment: pos.segment,
                wal_offset: pos.offset,
                max_seq: max_seq.max(part.max_seq),
            };
            let p = part.append(&data, chunks, payload, self.fields)?;
            // Installed at once: its head records are hidden by the position check until the
            // drain below, so nothing is seen twice even if a later partition fails.
            self.state.write().partitions.insert(key, Arc::new(p));
        }
        self.state.write().head.drain_before(upto);
        Ok(true)
    }

    /// What the head's size asks of the writer that just grew it (see [`crate::flusher`]).
    pub(crate) fn head_pressure(&self) -> HeadPressure {
        if self.dir.is_none() {
            return HeadPressure::Below;
        }
        HeadPressure::of(self.state.read().head.bytes(), self.opts.head_flush_bytes, crate::flusher::LOGS_BACKPRESSURE)
    }

    /// Persists the head when it holds more than `head_flush_bytes` and no flush or maintenance
    /// pass runs already (that one takes it); true when it flushed.
    ///
    /// Back-pressure: when writes outpace flushing and the head passes
    /// [`crate::flusher::LOGS_BACKPRESSURE`] × `head_flush_bytes` anyway, the caller waits for the
    /// running flush and then flushes itself, so memory stays bounded.
    pub fn flush_if_large(&self) -> std::io::Result<bool> {
        match self.head_pressure() {
            HeadPressure::Below => Ok(false),
            HeadPressure::Backpressure => {
                // Waits for the flush (or checkpoint) in progress, which holds `writers`.
                drop(self.writers.lock());
                if self.state.read().head.bytes() > self.opts.head_flush_bytes { self.persist() } else { Ok(false) }
            }
            HeadPressure::Over => {
                // Another flush running (or a checkpoint holding `writers`): that one takes it.
                if self.flushing.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    return Ok(false);
                }
                let r = match self.writers.try_lock() {
                    None => Ok(false),
                    Some(w) => {
                        drop(w);
                        self.persist()
                    }
                };
                self.flushing.store(false, std::sync::atomic::Ordering::Release);
                r
            }
        }
    }

    /// Flushes a large head early, and applies retention by age and total size.
    pub fn maintain(&self, now_ms: i64) -> std::io::Result<()> {
        let now_ns = now_ms.saturating_mul(1_000_000);
        let cutoff =
            if self.opts.retention_ns > 0 { Some(now_ns.saturating_sub(self.opts.retention_ns)) } else { None };
        if self.dir.is_none() {
            if let Some(cutoff) = cutoff {
                self.state.write().head.retain_newer(cutoff);
            }
            return Ok(());
        }
        if self.state.read().head.bytes() > self.opts.head_flush_bytes {
            self.persist()?;
        }
        let _writers = self.writers.lock();
        let mut drop_keys = Vec::new();
        {
            let st = self.state.read();
            let mut total: u64 = st.partitions.values().map(|p| p.bytes).sum();
            let mut left = st.partitions.len();
            for (k, p) in &st.partitions {
                let too_old = cutoff.is_some_and(|c| p.end_ns <= c);
                let too_big = self.opts.max_bytes > 0 && total > self.opts.max_bytes && left > 1;
                if !(too_old || too_big) {
                    break;
                }
                drop_keys.push(*k);
                total = total.saturating_sub(p.bytes);
                left -= 1;
            }
        }
        for key in drop_keys {
            let removed = self.state.write().partitions.remove(&key);
            if let Some(p) = removed {
                // Readers holding the old snapshot keep their mapped files until they finish.
                std::fs::remove_dir_all(&p.dir)?;
            }
        }
        Ok(())
    }

    pub fn apply(&self, pos: WalPos, batch: LogsBatch) {
        let mut st = self.state.write();
        let st = &mut *st;
        for group in batch.groups {
            if group.records.is_empty() {
                continue;
            }
            let mut ids: Option<(u32, u32, u32)> = None;
            let (mut resource, mut scope, mut stream) = (Some(group.resource), Some(group.scope), Some(group.stream));
            for record in group.records {
                if pos != WalPos::ZERO {
                    let key = self.part_key(record.timestamp_ns);
                    if st.partitions.get(&key).is_some_and(|p| pos <= p.committed) {
                        continue;
                    }
                }
                let (s, r, c) = *ids.get_or_insert_with(|| {
                    (
                        st.registry.streams.intern(stream.take().unwrap_or_default()),
                        st.registry.resources.intern(resource.take().unwrap_or_default()),
                        st.registry.scopes.intern(scope.take().unwrap_or_default()),
                    )
                });
                let seq = st.head.next_seq();
                st.head.push(HeadRecord { seq, pos, stream: s, resource: r, scope: c, record });
            }
        }
    }

    pub fn items(&self) -> u64 {
        let st = self.state.read();
        st.head.len() as u64 + st.partitions.values().map(|p| p.docs).sum::<u64>()
    }

    /// Sorted ids of the streams matching every matcher; `None` when there are no matchers.
    fn stream_ids(reg: &Registry, matchers: &[Matcher]) -> Option<Vec<u32>> {
        if matchers.is_empty() {
            return None;
        }
        Some(
            reg.streams
                .values
                .iter()
                .enumerate()
                .filter(|(_, l)| crate::read::matches_all(l, matchers))
                .map(|(i, _)| i as u32)
                .collect(),
        )
    }

    fn tables(reg: &Registry) -> Tables {
        Tables {
            streams: reg.streams.values.clone(),
            resources: reg.resources.values.clone(),
            scopes: reg.scopes.values.clone(),
            none: Arc::default(),
        }
    }

    /// True when a head record is hidden because its partition already holds it.
    fn hidden(&self, st: &State, r: &HeadRecord) -> bool {
        r.pos != WalPos::ZERO
            && st.partitions.get(&self.part_key(r.record.timestamp_ns)).is_some_and(|p| r.pos <= p.committed)
    }

    /// The scan behind [`crate::read::LogsReader::scan`] and `scan_lines`: head records and
    /// chunk rows the scan selects, passing `body_filter`.
    fn scan_core(&self, ls: &LineScan<'_>, visit: &mut dyn FnMut(&dyn LogLine) -> bool) {
        let scan = ls.scan;
        if scan.start_ns > scan.end_ns {
            return;
        }
        let finders: Vec<memchr::memmem::Finder<'static>> =
            scan.line_contains.iter().map(|s| memchr::memmem::Finder::new(s.as_bytes()).into_owned()).collect();
        let mut block_tokens: Vec<u128> = scan
            .line_contains
            .iter()
            .flat_map(|h| tokens::required_tokens(h))
            .filter(|t| tokens::block_indexed(t))
            .filter_map(tokens::pack)
            .collect();
        block_tokens.sort_unstable();
        block_tokens.dedup();
        let wanted = |body: &str| {
            finders.iter().all(|f| f.find(body.as_bytes()).is_some()) && ls.body_filter.is_none_or(|f| f(body))
        };
        // Head hits per partition key, and the partitions to search, taken under one lock.
        let mut head_hits: BTreeMap<i64, Vec<(i64, u64, StoredLog)>> = BTreeMap::new();
        let (ids, tables, parts) = {
            let st = self.state.read();
            let ids = Self::stream_ids(&st.registry, &scan.matchers);
            if ids.as_ref().is_some_and(|v| v.is_empty()) {
                return;
            }
            let tables = Self::tables(&st.registry);
            let in_streams = |s: u32| ids.as_ref().is_none_or(|v| v.binary_search(&s).is_ok());
            let dropped = |r: &HeadRecord| {
                if let Some(c) = ls.dropped
                    && scan.trace_id.is_none()
                {
                    c.add(1, r.record.body.len());
                }
            };
            let mut take = |r: &HeadRecord| {
                let t = r.record.timestamp_ns;
                if t < scan.start_ns
                    || t > scan.end_ns
                    || !in_streams(r.stream)
                    || scan.trace_id.is_some_and(|id| r.record.trace_id != Some(id))
                    || self.hidden(&st, r)
                {
                    return;
                }
                if !wanted(&r.record.body) {
                    dropped(r);
                    return;
                }
                if ls.line_filter.is_some_and(|f| !f(&HeadLine { r, tables: &tables })) {
                    dropped(r);
                    return;
                }
                let log = tables.stored(r.stream, r.resource, r.scope, r.record.clone());
                head_hits.entry(self.part_key(t)).or_default().push((t, r.seq, log));
            };
            if let Some(t) = scan.trace_id {
                st.head.by_trace(&t).iter().filter_map(|&s| st.head.get(s)).for_each(&mut take);
            } else {
                let all: Vec<u32>;
                let streams = match &ids {
                    Some(v) => v.as_slice(),
                    None => {
                        all = (0..tables.streams.len() as u32).collect();
                        all.as_slice()
                    }
                };
                for &s in streams {
                    for &(_, seq) in st.head.stream_range(s, scan.start_ns, scan.end_ns) {
                        if let Some(r) = st.head.get(seq) {
                            take(r);
                        }
                    }
                }
            }
            let lo = self.part_key(scan.start_ns);
            let parts: Vec<Arc<Partition>> = st
                .partitions
                .range(lo..=scan.end_ns)
                .map(|(_, p)| Arc::clone(p))
                .filter(|p| p.docs > 0 && p.max_ts >= scan.start_ns && p.min_ts <= scan.end_ns)
                .collect();
            (ids, tables, parts)
        };
        let filter = Filter {
            streams: ids.as_deref(),
            start: scan.start_ns,
            end: scan.end_ns,
            trace_id: scan.trace_id,
            line_contains: &scan.line_contains,
        };
        let damaged = |p: &Partition, i: usize, detail: &str| self.report_damaged(p, i, detail);
        let job = Job {
            damaged: &damaged,
            start: scan.start_ns,
            end: scan.end_ns,
            trace_id: scan.trace_id,
            finders: &finders,
            block_tokens: &block_tokens,
            body_filter: ls.body_filter,
            line_filter: ls.line_filter.map(|f| (f, &tables)),
            dropped: if scan.trace_id.is_none() { ls.dropped } else { None },
            stop: ls.stop,
            bodies: ls.bodies || !finders.is_empty() || ls.body_filter.is_some() || ls.line_filter.is_some(),
            seqs: ls.ordered,
            meta: ls.meta,
        };
        let backward = scan.direction == Direction::Backward;
        let mut keys: BTreeSet<i64> = head_hits.keys().copied().collect();
        let by_key: BTreeMap<i64, Arc<Partition>> = parts.into_iter().map(|p| (p.start_ns, p)).collect();
        keys.extend(by_key.keys().copied());
        let ordered: Vec<i64> = if backward { keys.into_iter().rev().collect() } else { keys.into_iter().collect() };
        for key in ordered {
            let mut head = head_hits.remove(&key).unwrap_or_default();
            let part = by_key.get(&key);
            let cands = part.map(|p| p.candidates(self.fields, &filter)).unwrap_or_default();
            // Whatever the scan maps of this partition goes once it is done with it.
            let _sweep = part.filter(|_| !cands.is_empty()).map(|p| SweepOnDrop(p, cands.clone()));
            let go = if ls.ordered {
                head.sort_unstable_by_key(|(t, s, _)| (*t, *s));
                if backward {
                    head.reverse();
                }
                merge_scan(part.map(Arc::as_ref), cands, head, backward, &job, &tables, visit)
            } else {
                head.iter().all(|(_, _, l)| visit(l))
                    && part.is_none_or(|p| unordered_scan(p, &cands, &job, &tables, visit))
            };
            if !go {
                return;
            }
        }
    }

    fn streams_impl(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Arc<Labels>> {
        let (candidates, mut found, parts, tables) = {
            let st = self.state.read();
            let tables = Self::tables(&st.registry);
            let candidates: Vec<u32> =
                Self::stream_ids(&st.registry, matchers).unwrap_or_else(|| (0..tables.streams.len() as u32).collect());
            let mut found = BTreeSet::new();
            for &s in &candidates {
                if st
                    .head
                    .stream_range(s, start_ns, end_ns)
                    .iter()
                    .any(|&(_, seq)| st.head.get(seq).is_some_and(|r| !self.hidden(&st, r)))
                {
                    found.insert(s);
                }
            }
            let lo = self.part_key(start_ns);
            let parts: Vec<Arc<Partition>> = if start_ns > end_ns {
                Vec::new()
            } else {
                st.partitions
                    .range(lo..=end_ns)
                    .map(|(_, p)| Arc::clone(p))
                    .filter(|p| p.docs > 0 && p.max_ts >= start_ns && p.min_ts <= end_ns)
                    .collect()
            };
            (candidates, found, parts, tables)
        };
        let wanted: BTreeSet<u32> = candidates.into_iter().collect();
        for p in parts {
            for (i, c) in p.chunks.iter().enumerate() {
                if found.contains(&c.stream) || !wanted.contains(&c.stream) || c.max_ts < start_ns || c.min_ts > end_ns
                {
                    continue;
                }
                let inside = c.min_ts >= start_ns && c.max_ts <= end_ns;
                // A chunk straddling the range edge: look at its timestamps (a damaged one counts).
                let hit = inside
                    || p.frame(i).and_then(|f| chunk::Chunk::parse(f, true).ok()).is_none_or(|ch| {
                        ch.timestamps().map_or(true, |ts| ts.iter().any(|&t| t >= start_ns && t <= end_ns))
                    });
                if !inside {
                    p.release(i);
                }
                if hit {
                    found.insert(c.stream);
                }
            }
        }
        let mut out: Vec<Arc<Labels>> =
            found.into_iter().filter_map(|s| tables.streams.get(s as usize).cloned()).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Unmaps the pages around a scan's chunks of one partition when dropped
/// ([`Partition::release_span`]), however the scan of the partition ends.
struct SweepOnDrop<'a>(&'a Partition, Vec<usize>);

impl Drop for SweepOnDrop<'_> {
    fn drop(&mut self) {
        self.0.release_span(&self.1);
    }
}

/// What the chunk readers check row by row.
struct Job<'a> {
    /// Told about a chunk that cannot be read (partition, chunk number, what is wrong).
    damaged: &'a (dyn Fn(&Partition, usize, &str) + Sync),
    start: i64,
    end: i64,
    trace_id: Option<TraceId>,
    finders: &'a [memchr::memmem::Finder<'static>],
    /// Tokens (packed) every line the substrings want holds: a chunk's body blocks whose bloom
    /// keys lack one are not decompressed.
    block_tokens: &'a [u128],
    body_filter: Option<&'a (dyn Fn(&str) -> bool + Sync)>,
    /// The scan's line filter, with the tables that give a chunk row its stream labels.
    line_filter: Option<(&'a crate::read::LineFilter<'a>, &'a Tables)>,
    /// Where rows read in range but dropped by the filters are counted (not for trace-id scans).
    dropped: Option<&'a crate::read::Dropped>,
    /// Once true, no more chunks are read.
    stop: Option<&'a (dyn Fn() -> bool + Sync)>,
    bodies: bool,
    seqs: bool,
    /// Decode the metadata of the rows that pass (on the reading thread, for the visitor).
    meta: bool,
}

/// Decodes chunk `i` of `p` and returns it with its rows that pass `job`, ascending; `None` when
/// none does or the chunk is damaged (damage is not fatal to a scan: the chunk is skipped). The
/// chunk's mapped pages are released when the answer is dropped, or at once when there is none.
fn read_chunk<'p>(p: &'p Partition, i: usize, job: &Job<'_>) -> ReadChunk<'p> {
    if job.stop.is_some_and(|f| f()) {
        return None;
    }
    match filter_chunk(p, i, job) {
        Some((d, rows)) => Some((Held { d, p, i, released: false }, rows)),
        None => {
            p.release(i);
            None
        }
    }
}

/// A chunk decoded for a scan; its mapped pages are released ([`Partition::release`]) when it is
/// dropped, after the scan has taken what it needs (the `meta` column is decoded on demand, so a
/// release right after reading would only see its pages faulted back in).
struct Held<'p> {
    d: Decoded<'p>,
    p: &'p Partition,
    i: usize,
    released: bool,
}

impl Held<'_> {
    /// Frees the decoded columns and releases the pages now (a merge done with this chunk).
    fn done(&mut self) {
        self.d.release();
        self.p.release(self.i);
        self.released = true;
    }
}

impl<'p> std::ops::Deref for Held<'p> {
    type Target = Decoded<'p>;
    fn deref(&self) -> &Decoded<'p> {
        &self.d
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.p.release(self.i);
        }
    }
}

/// [`read_chunk`]'s work: the decoded chunk and its rows that pass `job`.
fn filter_chunk<'p>(p: &'p Partition, i: usize, job: &Job<'_>) -> Option<(Decoded<'p>, Vec<u32>)> {
    let Some(frame) = p.frame(i) else {
        (job.damaged)(p, i, "chunk frame out of its file's bounds");
        return None;
    };
    let decoded = chunk::Chunk::parse(frame, true).and_then(|c| {
        if job.block_tokens.is_empty() || job.finders.is_empty() {
            return Decoded::new(c, job.seqs, job.bodies);
        }
        // Only the body blocks that may hold every required token: a line with the substrings
        // holds them, so a block without one has no such line.
        let bloom = c.bloom();
        let keep = |b: usize| job.block_tokens.iter().all(|&k| Bloom::may_contain(bloom, tokens::block_key(k, b)));
        Decoded::with_blocks(c, job.seqs, &keep)
    });
    let d = match decoded {
        Ok(d) => d,
        Err(e) => {
            (job.damaged)(p, i, &e.to_string());
            return None;
        }
    };
    let lo = d.ts.partition_point(|&t| t < job.start);
    let hi = d.ts.partition_point(|&t| t <= job.end);
    let mut rows: Vec<u32> = Vec::new();
    if let Some((first, rest)) = job.finders.split_first() {
        // Search the body blob for the first substring (ripgrep-style), then check the rows it
        // lands in: the rows in range, or those of them whose bodies were decoded.
        let ranges = match &d.body_rows {
            Some(kept) => kept.iter().map(|&(a, b)| (a.max(lo), b.min(hi))).filter(|(a, b)| a < b).collect(),
            None => vec![(lo, hi)],
        };
        for (lo, hi) in ranges {
            find_rows(&d, first, lo, hi, &mut rows);
        }
        rows.retain(|&r| rest.iter().all(|f| f.find(d.body(r as usize).as_bytes()).is_some()));
    } else {
        rows.extend(lo as u32..hi as u32);
    }
    if let Some(f) = job.body_filter {
        rows.retain(|&r| f(d.body(r as usize)));
    }
    if let Some(t) = job.trace_id {
        rows.retain(|&r| d.meta(r as usize).record.trace_id == Some(t));
    }
    if let Some((f, tables)) = job.line_filter {
        rows.retain(|&r| f(&RowLine { d: &d, row: r as usize, tables }));
    }
    if let Some(c) = job.dropped
        && hi > lo
    {
        let kept_bytes: usize = if job.bodies { rows.iter().map(|&r| d.body(r as usize).len()).sum() } else { 0 };
        let range_bytes =
            if job.bodies { d.ends[hi - 1] as usize - if lo == 0 { 0 } else { d.ends[lo - 1] as usize } } else { 0 };
        c.add((hi - lo - rows.len()) as u64, range_bytes.saturating_sub(kept_bytes));
    }
    if rows.is_empty() {
        return None;
    }
    if job.meta {
        for &r in &rows {
            d.meta(r as usize);
        }
    }
    Some((d, rows))
}

/// Appends to `rows` the rows in `lo..hi` of `d` whose body holds `finder`'s needle, searching
/// the rows' bytes as one blob and checking where each match lands.
fn find_rows(d: &Decoded<'_>, finder: &memchr::memmem::Finder<'_>, lo: usize, hi: usize, rows: &mut Vec<u32>) {
    // Offsets in `d.bodies` of the rows `lo..hi` (all decoded, consecutive there).
    let Some(shift) = d.shift_of(lo) else { return };
    let blob = d.bodies.as_bytes();
    let row_start = |r: usize| if r == 0 { 0 } else { d.ends[r - 1] as usize - shift };
    let end_of = |r: usize| d.ends[r] as usize - shift;
    // The search stops at the end of the last row (the bytes after it are another block's).
    let end = if hi == 0 { 0 } else { end_of(hi - 1) };
    let mut row = lo;
    let mut from = row_start(lo);
    while row < hi {
        let Some(off) = finder.find(&blob[from..end]) else { break };
        let at = from + off;
        while row < hi && end_of(row) < at + finder.needle().len() {
            row += 1;
        }
        if row >= hi {
            break;
        }
        let start = row_start(row);
        if at >= start {
            rows.push(row as u32);
            row += 1;
            from = row_start(row);
        } else {
            // The match crosses into this row from the one before: look again inside it.
            from = start;
        }
    }
}

/// Threads a scan reads chunks on. Asked once: `available_parallelism` reads the cgroup's CPU
/// quota files on every call, and scans ask per batch of chunks.
fn threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4))
}

/// A chunk read for a scan: its decoded columns and the rows that pass, ascending.
type ReadChunk<'p> = Option<(Held<'p>, Vec<u32>)>;

/// Reads `idx` (chunk numbers of `p`) on up to [`threads`] threads; results in `idx` order.
fn read_chunks<'p>(p: &'p Partition, idx: &[usize], job: &Job<'_>) -> Vec<ReadChunk<'p>> {
    let n = threads().min(idx.len());
    if n <= 1 {
        return idx.iter().map(|&i| read_chunk(p, i, job)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut parts: Vec<Vec<(usize, ReadChunk<'p>)>> = std::thread::scope(|s| {
        let work = || {
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = idx.get(k) else { break };
                out.push((k, read_chunk(p, i, job)));
            }
            out
        };
        let handles: Vec<_> = (1..n).map(|_| s.spawn(work)).collect();
        let mut all = vec![work()];
        for h in handles {
            all.push(h.join().unwrap_or_default());
        }
        all
    });
    let mut out: Vec<ReadChunk<'p>> = (0..idx.len()).map(|_| None).collect();
    for v in parts.drain(..) {
        for (k, r) in v {
            out[k] = r;
        }
    }
    out
}

/// A head record seen by a scan's line filter, without copying it into a [`StoredLog`].
struct HeadLine<'a> {
    r: &'a HeadRecord,
    tables: &'a Tables,
}

impl LogLine for HeadLine<'_> {
    fn stream(&self) -> &Arc<Labels> {
        self.tables.stream(self.r.stream)
    }
    fn timestamp_ns(&self) -> i64 {
        self.r.record.timestamp_ns
    }
    fn body(&self) -> &str {
        &self.r.record.body
    }
    fn meta(&self) -> &LogRecord {
        &self.r.record
    }
    fn meta_keys(&self) -> Option<&[String]> {
        None
    }
    fn stored(&self) -> StoredLog {
        self.tables.stored(self.r.stream, self.r.resource, self.r.scope, self.r.record.clone())
    }
}

/// A chunk row handed to a visitor.
struct RowLine<'a> {
    d: &'a Decoded<'a>,
    row: usize,
    tables: &'a Tables,
}

impl LogLine for RowLine<'_> {
    fn stream(&self) -> &Arc<Labels> {
        self.tables.stream(self.d.chunk.stream)
    }
    fn timestamp_ns(&self) -> i64 {
        self.d.ts[self.row]
    }
    fn body(&self) -> &str {
        self.d.body(self.row)
    }
    fn meta(&self) -> &LogRecord {
        &self.d.meta(self.row).record
    }
    fn meta_keys(&self) -> Option<&[String]> {
        Some(&self.d.keys)
    }
    fn stored(&self) -> StoredLog {
        let m = self.d.meta(self.row);
        self.tables.stored(self.d.chunk.stream, m.resource, m.scope, self.d.record(self.row))
    }
}

/// Visits the rows of `cands` (any order) on several threads' reads; false when the visitor
/// stopped.
fn unordered_scan(
    p: &Partition,
    cands: &[usize],
    job: &Job<'_>,
    tables: &Tables,
    visit: &mut dyn FnMut(&dyn LogLine) -> bool,
) -> bool {
    for batch in cands.chunks(threads() * 4) {
        for (d, rows) in read_chunks(p, batch, job).into_iter().flatten() {
            for &r in &rows {
                if !visit(&RowLine { d: &d, row: r as usize, tables }) {
                    return false;
                }
            }
        }
    }
    true
}

/// Sort key of a row in scan order (ascending `(ts, seq)`, or descending for backward scans).
fn order_key(ts: i64, seq: u64, backward: bool) -> i128 {
    let k = (i128::from(ts) << 64) | i128::from(seq);
    if backward { -k } else { k }
}

/// Visits the rows of `cands` and the head records `head` (already in scan order) merged in scan
/// order, reading chunks only when the merge reaches their time range; false when the visitor
/// stopped.
fn merge_scan(
    p: Option<&Partition>,
    mut cands: Vec<usize>,
    head: Vec<(i64, u64, StoredLog)>,
    backward: bool,
    job: &Job<'_>,
    tables: &Tables,
    visit: &mut dyn FnMut(&dyn LogLine) -> bool,
) -> bool {
    // The smallest key a chunk can hold, in scan order.
    let bound = |c: &ChunkMeta| {
        if backward { order_key(c.max_ts, u64::MAX, true) } else { order_key(c.min_ts, 0, false) }
    };
    let metas = p.map(|p| p.chunks.clone()).unwrap_or_default();
    cands.sort_by_key(|&i| bound(&metas[i]));
    let mut next = 0usize;
    let mut hp = 0usize;
    struct Cursor<'p> {
        d: Held<'p>,
        rows: Vec<u32>,
        at: usize,
    }
    let mut cursors: Vec<Cursor<'_>> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(i128, usize)>> = BinaryHeap::new();
    let row_key = |c: &Cursor<'_>| {
        let r = c.rows[if backward { c.rows.len() - 1 - c.at } else { c.at }] as usize;
        (order_key(c.d.ts[r], c.d.seq.get(r).copied().unwrap_or(0), backward), r)
    };
    loop {
        let top = heap.peek().map(|Reverse((k, _))| *k);
        let hkey = head.get(hp).map(|(t, s, _)| order_key(*t, *s, backward));
        let least = match (top, hkey) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(p) = p
            && next < cands.len()
            && least.is_none_or(|l| bound(&metas[cands[next]]) <= l)
        {
            // Open every chunk that may hold a row before `least` (at least a few, for the threads).
            let limit = least.unwrap_or_else(|| bound(&metas[cands[next]]));
            let mut end = next;
            while end < cands.len() && (bound(&metas[cands[end]]) <= limit || end - next < threads()) {
                end += 1;
            }
            for (d, rows) in read_chunks(p, &cands[next..end], job).into_iter().flatten() {
                let c = Cursor { d, rows, at: 0 };
                let (k, _) = row_key(&c);
                heap.push(Reverse((k, cursors.len())));
                cursors.push(c);
            }
            next = end;
            continue;
        }
        let Some(least) = least else { return true };
        if hkey == Some(least) {
            if !visit(&head[hp].2) {
                return false;
            }
            hp += 1;
            continue;
        }
        let Some(Reverse((_, ci))) = heap.pop() else { return true };
        let c = &mut cursors[ci];
        let (_, r) = row_key(c);
        if !visit(&RowLine { d: &c.d, row: r, tables }) {
            return false;
        }
        c.at += 1;
        if c.at < c.rows.len() {
            let (k, _) = row_key(c);
            heap.push(Reverse((k, ci)));
        } else {
            // Done: free its columns (the slot stays so the other indexes hold).
            c.rows = Vec::new();
            c.d.done();
        }
    }
}

impl crate::read::LogsReader for LogsHead {
    fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog> {
        let scan = LogScan {
            matchers: stream_matchers.iter().map(|(n, v)| Matcher::eq(n.clone(), v.clone())).collect(),
            start_ns,
            end_ns,
            ..LogScan::default()
        };
        let mut out = Vec::new();
        self.scan(&scan, &mut |l| {
            out.push(l.clone());
            true
        });
        out
    }

    fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog> {
        let scan = LogScan { start_ns: i64::MIN, end_ns: i64::MAX, trace_id: Some(trace_id), ..LogScan::default() };
        let mut out = Vec::new();
        self.scan(&scan, &mut |l| {
            out.push(l.clone());
            true
        });
        out
    }

    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Arc<Labels>> {
        self.streams_impl(matchers, start_ns, end_ns)
    }

    fn scan(&self, scan: &LogScan, visit: &mut dyn FnMut(&StoredLog) -> bool) {
        let ls = LineScan {
            scan,
            ordered: true,
            bodies: true,
            meta: true,
            body_filter: None,
            line_filter: None,
            dropped: None,
            stop: None,
        };
        self.scan_core(&ls, &mut |line| visit(&line.stored()))
    }

    fn scan_lines(&self, scan: &LineScan<'_>, visit: &mut dyn FnMut(&dyn LogLine) -> bool) {
        self.scan_core(scan, visit)
    }
}

#[cfg(test)]
mod tests;

//! The logs engine: time-partitioned tantivy indexes on disk, fed from an in-memory head.
//!
//! - [`head`]: records applied but not yet committed, queryable as soon as they are applied.
//! - [`partition`]: one tantivy index per time partition (`partition_ns`, an hour by default)
//!   under `<data_dir>/logs/part-<start seconds>`: stream id and trace/span ids as raw terms, the
//!   body tokenised for pre-filtering, timestamp and arrival sequence as fast fields, the whole
//!   record stored (zstd doc store).
//! - [`registry`]: stream label sets, resources and scopes under dense ids (`registry.log`).
//! - [`tokens`]: the body tokenizer and which hint terms are safe to require.
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

mod head;
mod partition;
mod registry;
mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tantivy::IndexWriter;

use crate::error::OpenError;
use crate::model::{Labels, LogsBatch, Resource, Scope, TraceId};
use crate::read::{Direction, LogScan, Matcher, StoredLog};
use crate::wal::WalPos;
use head::{Head, HeadRecord};
use partition::{Fields, Filter, Partition, Payload, StoredRec};
use registry::Registry;

/// Options of the logs engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsOptions {
    /// Width of a time partition (ns). Each partition is one index directory; retention drops
    /// whole partitions.
    pub partition_ns: i64,
    /// Partitions whose newest possible record is older than this (ns) are dropped; 0 keeps
    /// everything.
    pub retention_ns: i64,
    /// When the partitions together exceed this many bytes, the oldest go; 0 = no limit.
    pub max_bytes: u64,
    /// Indexing memory of a partition writer (bytes; tantivy needs at least 15 MB).
    pub writer_memory_bytes: usize,
    /// Head size (bytes, approximate) above which `maintain` flushes it to the indexes before
    /// the next checkpoint.
    pub head_flush_bytes: usize,
}

impl Default for LogsOptions {
    fn default() -> Self {
        LogsOptions {
            partition_ns: 3600 * 1_000_000_000,
            retention_ns: 7 * 24 * 3600 * 1_000_000_000,
            max_bytes: 0,
            writer_memory_bytes: 32 << 20,
            head_flush_bytes: 64 << 20,
        }
    }
}

/// The logs engine (the name is historical: it is the head plus the partitions).
pub(crate) struct LogsHead {
    dir: Option<PathBuf>,
    opts: LogsOptions,
    fields: Fields,
    state: RwLock<State>,
    /// Open partition writers. Held for a whole flush or maintenance pass, so at most one runs at
    /// a time; readers never take it.
    writers: Mutex<BTreeMap<i64, IndexWriter>>,
    /// True while a write's size-triggered flush runs ([`LogsHead::flush_if_large`]).
    flushing: std::sync::atomic::AtomicBool,
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
}

impl Tables {
    fn stored(&self, stream: u32, resource: u32, scope: u32, record: crate::model::LogRecord) -> StoredLog {
        StoredLog {
            resource: self.resources.get(resource as usize).cloned().unwrap_or_default(),
            scope: self.scopes.get(scope as usize).cloned().unwrap_or_default(),
            stream: self.streams.get(stream as usize).cloned().unwrap_or_default(),
            record,
        }
    }
}

fn io_open(path: &Path) -> impl Fn(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// What one partition takes in a flush: its items, the newest WAL position and seq among them.
type Flush<T> = (Vec<T>, WalPos, u64);

/// How many times `head_flush_bytes` the head may hold before writers wait for its flush.
const HEAD_BACKPRESSURE: usize = 3;

const VERSION_FILE: &str = "VERSION";
const VERSION_TEXT: &str = "outpost-logs 1\n";
const REGISTRY_FILE: &str = "registry.log";

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
            match std::fs::read_to_string(&vpath) {
                Ok(v) if v == VERSION_TEXT => {}
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
                }
                Err(e) => return Err(io_open(&vpath)(e)),
            }
            let rpath = dir.join(REGISTRY_FILE);
            registry = Registry::load(&rpath).map_err(io_open(&rpath))?;
            for entry in std::fs::read_dir(dir).map_err(io_open(dir))? {
                let entry = entry.map_err(io_open(dir))?;
                let name = entry.file_name();
                let Some(start) = name.to_str().and_then(partition::parse_dir_name) else { continue };
                let path = entry.path();
                let p = Partition::open(&path, start, opts.partition_ns, fields)
                    .map_err(|e| OpenError::Corrupted { path: path.clone(), detail: e.to_string() })?;
                partitions.insert(start, Arc::new(p));
            }
        }
        let next_seq = partitions.values().map(|p| p.max_seq + 1).max().unwrap_or(0);
        Ok(LogsHead {
            dir: dir.map(Path::to_path_buf),
            opts: opts.clone(),
            fields,
            state: RwLock::new(State { registry, head: Head::new(next_seq), partitions }),
            writers: Mutex::new(BTreeMap::new()),
            flushing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn part_key(&self, ts: i64) -> i64 {
        ts.div_euclid(self.opts.partition_ns).saturating_mul(self.opts.partition_ns)
    }

    /// Makes everything in the head durable in the partition indexes; see the module doc.
    pub fn persist(&self) -> std::io::Result<bool> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let mut writers = self.writers.lock();
        // Records per partition, with the newest WAL position and seq they hold. Only copying
        // happens under the state lock (which writers wait for); documents are built after.
        let mut recs: BTreeMap<i64, Flush<(u64, StoredRec)>> = BTreeMap::new();
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
                let rec =
                    StoredRec { stream: r.stream, resource: r.resource, scope: r.scope, record: r.record.clone() };
                let g = recs.entry(key).or_insert_with(|| (Vec::new(), WalPos::ZERO, 0));
                g.0.push((r.seq, rec));
                g.1 = g.1.max(r.pos);
                g.2 = g.2.max(r.seq);
            }
            (st.head.next_seq(), st.registry.unpersisted())
        };
        let mut groups: BTreeMap<i64, Flush<tantivy::TantivyDocument>> = BTreeMap::new();
        for (key, (records, pos, max_seq)) in recs {
            let docs = records
                .into_iter()
                .map(|(seq, rec)| partition::document(self.fields, seq, rec))
                .collect::<std::io::Result<Vec<_>>>()?;
            groups.insert(key, (docs, pos, max_seq));
        }
        registry::append(&dir.join(REGISTRY_FILE), &entries)?;
        self.state.write().registry.mark_persisted(&entries);
        let touched: BTreeSet<i64> = groups.keys().copied().collect();
        for (key, (docs, pos, max_seq)) in groups {
            let existing = self.state.read().partitions.get(&key).cloned();
            let part = match existing {
                Some(p) => p,
                None => {
                    let p =
                        Partition::open(&dir.join(partition::dir_name(key)), key, self.opts.partition_ns, self.fields)?;
                    Arc::new(p)
                }
            };
            let writer = match writers.entry(key) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(part.writer(self.opts.writer_memory_bytes)?),
            };
            let payload = Payload {
                version: partition::FORMAT_VERSION,
                wal_segment: pos.segment,
                wal_offset: pos.offset,
                max_seq: max_seq.max(part.max_seq),
            };
            let committed = docs
                .into_iter()
                .try_for_each(|d| writer.add_document(d).map(drop))
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|()| part.commit(writer, payload, self.fields));
            match committed {
                Ok(p) => {
                    // Installed at once: its head records are hidden by the position check until
                    // the drain below, so nothing is seen twice even if a later partition fails.
                    self.state.write().partitions.insert(key, Arc::new(p));
                }
                Err(e) => {
                    writers.remove(&key);
                    return Err(e);
                }
            }
        }
        self.state.write().head.drain_before(upto);
        // Writers of partitions that took nothing this time are done: let their merges finish.
        let idle: Vec<i64> = writers.keys().filter(|k| !touched.contains(k)).copied().collect();
        for key in idle {
            if let Some(w) = writers.remove(&key) {
                w.wait_merging_threads().map_err(|e| std::io::Error::other(e.to_string()))?;
                self.reload(key)?;
            }
        }
        Ok(true)
    }

    fn reload(&self, key: i64) -> std::io::Result<()> {
        let Some(p) = self.state.read().partitions.get(&key).cloned() else { return Ok(()) };
        let p = p.reloaded(self.fields)?;
        self.state.write().partitions.insert(key, Arc::new(p));
        Ok(())
    }

    /// Persists the head when it holds more than `head_flush_bytes` and no flush or maintenance
    /// pass runs already (that one takes it); true when it flushed.
    ///
    /// Back-pressure: when writes outpace indexing and the head passes
    /// [`HEAD_BACKPRESSURE`] × `head_flush_bytes` anyway, the writer waits for the running flush
    /// and then flushes itself, so memory stays bounded and ingest runs at indexing speed.
    pub fn flush_if_large(&self) -> std::io::Result<bool> {
        let bytes = self.state.read().head.bytes();
        if self.dir.is_none() || bytes <= self.opts.head_flush_bytes {
            return Ok(false);
        }
        if bytes > self.opts.head_flush_bytes.saturating_mul(HEAD_BACKPRESSURE) {
            // Waits for the flush (or checkpoint) in progress, which holds `writers`.
            drop(self.writers.lock());
            return if self.state.read().head.bytes() > self.opts.head_flush_bytes {
                self.persist()
            } else {
                Ok(false)
            };
        }
        // Another writer flushing (or a checkpoint holding `writers`): this write goes on.
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
        let mut writers = self.writers.lock();
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
            writers.remove(&key);
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
        }
    }

    /// True when a head record is hidden because its partition already holds it.
    fn hidden(&self, st: &State, r: &HeadRecord) -> bool {
        r.pos != WalPos::ZERO
            && st.partitions.get(&self.part_key(r.record.timestamp_ns)).is_some_and(|p| r.pos <= p.committed)
    }

    fn scan_impl(&self, scan: &LogScan, visit: &mut dyn FnMut(&StoredLog) -> bool) {
        if scan.start_ns > scan.end_ns {
            return;
        }
        let wanted = |body: &str| scan.line_contains.iter().all(|s| body.contains(s.as_str()));
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
            let mut take = |r: &HeadRecord| {
                let t = r.record.timestamp_ns;
                if t < scan.start_ns
                    || t > scan.end_ns
                    || !in_streams(r.stream)
                    || scan.trace_id.is_some_and(|id| r.record.trace_id != Some(id))
                    || !wanted(&r.record.body)
                    || self.hidden(&st, r)
                {
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
        let mut keys: BTreeSet<i64> = head_hits.keys().copied().collect();
        let by_key: BTreeMap<i64, Arc<Partition>> = parts.into_iter().map(|p| (p.start_ns, p)).collect();
        keys.extend(by_key.keys().copied());
        let ordered: Vec<i64> = if scan.direction == Direction::Backward {
            keys.into_iter().rev().collect()
        } else {
            keys.into_iter().collect()
        };
        enum Item {
            Head(StoredLog),
            Doc(i64, tantivy::DocAddress),
        }
        for key in ordered {
            let mut items: Vec<(i64, u64, Item)> =
                head_hits.remove(&key).unwrap_or_default().into_iter().map(|(t, s, l)| (t, s, Item::Head(l))).collect();
            let part = by_key.get(&key);
            if let Some(p) = part
                && let Ok(c) = p.candidates(self.fields, &filter)
            {
                items.extend(c.into_iter().map(|(t, s, a)| (t, s, Item::Doc(t, a))));
            }
            items.sort_unstable_by_key(|(t, s, _)| (*t, *s));
            if scan.direction == Direction::Backward {
                items.reverse();
            }
            for (_, _, item) in items {
                let log = match item {
                    Item::Head(l) => l,
                    Item::Doc(ts, addr) => {
                        let Some(Ok(rec)) = part.map(|p| p.fetch(self.fields, addr, ts)) else { continue };
                        if !wanted(&rec.record.body) || scan.trace_id.is_some_and(|t| rec.record.trace_id != Some(t)) {
                            continue;
                        }
                        tables.stored(rec.stream, rec.resource, rec.scope, rec.record)
                    }
                };
                if !visit(&log) {
                    return;
                }
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
        for p in parts {
            let whole = p.within(start_ns, end_ns);
            for &s in &candidates {
                if found.contains(&s) || !p.streams.contains(&s) {
                    continue;
                }
                if whole || p.has_stream_in(self.fields, s, start_ns, end_ns).unwrap_or(true) {
                    found.insert(s);
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

impl crate::read::LogsReader for LogsHead {
    fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog> {
        let scan = LogScan {
            matchers: stream_matchers.iter().map(|(n, v)| Matcher::eq(n.clone(), v.clone())).collect(),
            start_ns,
            end_ns,
            ..LogScan::default()
        };
        let mut out = Vec::new();
        self.scan_impl(&scan, &mut |l| {
            out.push(l.clone());
            true
        });
        out
    }

    fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog> {
        let scan = LogScan { start_ns: i64::MIN, end_ns: i64::MAX, trace_id: Some(trace_id), ..LogScan::default() };
        let mut out = Vec::new();
        self.scan_impl(&scan, &mut |l| {
            out.push(l.clone());
            true
        });
        out
    }

    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Arc<Labels>> {
        self.streams_impl(matchers, start_ns, end_ns)
    }

    fn scan(&self, scan: &LogScan, visit: &mut dyn FnMut(&StoredLog) -> bool) {
        self.scan_impl(scan, visit)
    }
}

#[cfg(test)]
mod tests;

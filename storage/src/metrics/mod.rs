//! The metrics engine: a time-series database of Prometheus series.
//!
//! - [`head`]: the series registry (interned symbols, label-set hash → stable series id, postings)
//!   and the samples applied since the last persist, in Gorilla chunks ([`gorilla`]).
//! - [`block`]: immutable blocks on disk under `<data_dir>/metrics/<name>/` (`meta.json`,
//!   `chunks`, `index` with roaring-bitmap postings), read through memory maps (`crate::mmap`).
//! - [`compact`]: compaction of small blocks into larger ones, and retention.
//!
//! Life cycle (see `crate::mem`): `apply` adds a WAL batch to the head; `persist` writes what the
//! head holds into new level-0 blocks (one per `block_range` window the data touches), records
//! the last applied [`WalPos`] in them and in `persisted.json` (with the metric metadata), then
//! drops those samples from memory (the registry stays, so ids are stable); `open` maps the
//! blocks without decoding them and skips replayed batches at or before the persisted position;
//! `maintain` applies retention, compacts, and drops from the registry series that hold nothing in
//! memory and received no sample for a `block_range` (their data stays in blocks).
//!
//! Memory: labels are `u32` symbol pairs over one interned copy of each string; a label set is
//! found by two independent seeded hashes of its canonical bytes (`model::PackedSamples`' label
//! bytes) without allocating or reading the strings; postings of a unique label value cost no allocation;
//! what few series have (out-of-order overlay, native histograms, exemplars) is boxed apart.
//! Measured (`head_memory_at_100k_series`, debug build, glibc malloc): 100k series with 40
//! samples each add about 63 MiB of RSS.
//!
//! Reads merge blocks (in WAL order) and the head: on equal timestamps the later write wins,
//! which is the trait's duplicate rule. Out-of-order samples are accepted into the head and
//! returned sorted; [`MetricsHead::admit`] applies the out-of-order window before the WAL write.
//!
//! Native histograms are stored as postcard-encoded lists (at most 120 per chunk) rather than a
//! bit-packed codec: they are rare next to float samples and postcard keeps every field exact.
//! Exemplars are kept per series in a bounded list (`exemplars_per_series`) in the head and in
//! each block (compaction thins them evenly in time).
//!
//! Invariants:
//! - A block holds only data applied at WAL positions `wal_min..=wal_max`; blocks compacted
//!   together are contiguous in WAL order among the blocks of their time window, so ordering
//!   blocks by `wal_max` orders overlapping data by write time.
//! - A crash at any point leaves either the old blocks, or the new block next to (some of) its
//!   sources: both hold the same data, which merges identically; `open` deletes the leftovers.
//! - Damaged block files never panic: a block that fails to open is skipped, and read errors
//!   leave the block's data out; both are listed in [`crate::MetricsReader::storage_problems`].

mod block;
mod compact;
mod decimal;
mod gorilla;
mod head;
mod select;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};

use self::block::{Block, BlockWriter, SeriesSamples};
use self::head::{Head, Series, SeriesData, in_range, merge_exemplars, merge_newer_wins, trace_key};
use crate::error::OpenError;
use crate::model::{Exemplar, Labels, MetricMetadata, MetricsBatch, PackedSamples, TimeSeries};
use crate::read::{Matcher, SeriesSet, TsdbStats};
use crate::wal::WalPos;

/// Options of the metrics engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Blocks whose newest sample is older than this (relative to `maintain`'s clock) are deleted;
    /// zero keeps blocks regardless of age. Default 15 days (Prometheus' default).
    pub retention: Duration,
    /// When nonzero, the oldest blocks are deleted while all blocks together exceed this many
    /// bytes. Default 0: unlimited.
    pub retention_bytes: u64,
    /// Samples older than the newest sample in the store minus this are refused by
    /// [`MetricsHead::admit`]. Zero: a series only accepts samples at or after its newest one.
    /// Default 10 minutes.
    pub ooo_window: Duration,
    /// Exemplars kept per series in memory and per block. Default 16.
    pub exemplars_per_series: usize,
    /// Time range of the smallest compacted block; larger levels are 3×, 9×, … of it, up to a
    /// tenth of the retention (at most 31 days). Default 2 hours.
    pub block_range: Duration,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            retention: Duration::from_secs(15 * 24 * 3600),
            retention_bytes: 0,
            ooo_window: Duration::from_secs(600),
            exemplars_per_series: 16,
            block_range: Duration::from_secs(2 * 3600),
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `persisted.json`: the last WAL position persisted, and the metadata at that time.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    version: u32,
    wal_pos: WalPos,
    metadata: Vec<MetricMetadata>,
}

type BlockList = Arc<Vec<Arc<Block>>>;

/// The blocks a read works on; once it is done with them their mapped pages are released
/// ([`Block::release_pages`]), so what queries read does not stay in the process' RSS.
struct ReadBlocks(BlockList);

impl std::ops::Deref for ReadBlocks {
    type Target = Vec<Arc<Block>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for ReadBlocks {
    fn drop(&mut self) {
        for b in self.0.iter() {
            b.release_pages();
        }
    }
}

/// The metrics engine.
pub(crate) struct MetricsHead {
    dir: Option<PathBuf>,
    opts: MetricsOptions,
    /// Readers share the lock; `apply` (the WAL leader) holds it per batch.
    head: RwLock<Head>,
    /// Sorted by WAL position; replaced as a whole (copy on write). Changed together with the
    /// head only while holding the head's write lock, so a reader that takes the head's read lock
    /// first sees both sides of a persist or neither.
    blocks: RwLock<BlockList>,
    /// Batches at or before this position are already in blocks (replay skips them).
    skip_upto: WalPos,
    /// The last persisted position. The mutex also serialises `persist` and `maintain`.
    persisted: Mutex<WalPos>,
    /// Newest sample timestamp ever applied or found in blocks.
    max_t: AtomicI64,
    /// Damage found in block files (most recent last, bounded).
    problems: Mutex<Vec<String>>,
    seq: AtomicU64,
}

impl MetricsHead {
    pub fn open(dir: Option<&Path>, opts: &MetricsOptions) -> Result<Self, OpenError> {
        let mut engine = MetricsHead {
            dir: dir.map(Path::to_path_buf),
            opts: opts.clone(),
            head: RwLock::new(Head::default()),
            blocks: RwLock::new(Arc::new(Vec::new())),
            skip_upto: WalPos::ZERO,
            persisted: Mutex::new(WalPos::ZERO),
            max_t: AtomicI64::new(i64::MIN),
            problems: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        };
        if opts.block_range.is_zero() {
            return Err(OpenError::InvalidOptions { detail: "metrics block_range must be positive".into() });
        }
        let Some(dir) = dir else { return Ok(engine) };
        let io_err = |source| OpenError::Io { path: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(io_err)?;
        let mut blocks = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type().map_err(io_err)?.is_dir() {
                continue;
            }
            if name.ends_with(".tmp") || name.ends_with(".deleting") {
                // An unfinished write or deletion: never part of the store.
                fs::remove_dir_all(&path).map_err(|source| OpenError::Io { path: path.clone(), source })?;
                continue;
            }
            match Block::open(&path) {
                Ok(b) => blocks.push(Arc::new(b)),
                Err(e) => engine.problem(format!("block {}: {e}; skipped", path.display())),
            }
        }
        // Sources of a compaction that finished writing but crashed before deleting them.
        let replaced: BTreeSet<String> = blocks.iter().flat_map(|b| b.meta.sources.iter().cloned()).collect();
        let (gone, kept): (Vec<_>, Vec<_>) = blocks.into_iter().partition(|b| replaced.contains(&b.name));
        for b in gone {
            delete_block_dir(&b.dir).map_err(|source| OpenError::Io { path: b.dir.clone(), source })?;
        }
        let mut blocks = kept;
        sort_blocks(&mut blocks);
        let mut persisted = blocks.iter().map(|b| b.meta.wal_max).max().unwrap_or(WalPos::ZERO);
        let state_path = dir.join("persisted.json");
        match fs::read(&state_path) {
            Ok(bytes) => match serde_json::from_slice::<Persisted>(&bytes) {
                Ok(p) => {
                    persisted = persisted.max(p.wal_pos);
                    let mut h = engine.head.write();
                    for m in p.metadata {
                        h.metadata.insert(m.metric_family.clone(), m);
                    }
                }
                Err(e) => engine.problem(format!("{}: {e}; ignored", state_path.display())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(OpenError::Io { path: state_path, source }),
        }
        let max_t = blocks.iter().map(|b| b.meta.max_time).max().unwrap_or(i64::MIN);
        engine.max_t = AtomicI64::new(max_t);
        engine.skip_upto = persisted;
        engine.persisted = Mutex::new(persisted);
        engine.blocks = RwLock::new(Arc::new(blocks));
        Ok(engine)
    }

    fn problem(&self, msg: String) {
        let mut p = self.problems.lock();
        if p.len() >= 100 {
            p.remove(0);
        }
        p.push(msg);
    }

    /// Applies the out-of-order window to `batch` before it is written: removes float samples,
    /// histogram samples and exemplars that the store refuses, and returns how many samples
    /// (floats plus histograms) were removed.
    ///
    /// As in Prometheus with `out_of_order_time_window` set, a sample is refused when it is older
    /// than the newest sample the store holds (over all series) minus the window. With a zero
    /// window, as in Prometheus without one, a series refuses samples older than its newest
    /// sample (the same timestamp is accepted: the later write replaces the earlier one).
    pub fn admit(&self, batch: &mut MetricsBatch) -> u64 {
        let window = ms(self.opts.ooo_window);
        let head_max = self.max_t.load(Ordering::Relaxed);
        let mut dropped = 0u64;
        if window > 0 {
            let min_valid = head_max.saturating_sub(window);
            for ts in &mut batch.series {
                let before = ts.samples.len() + ts.histograms.len();
                ts.samples.retain(|s| s.timestamp_ms >= min_valid);
                ts.histograms.retain(|s| s.timestamp_ms >= min_valid);
                ts.exemplars.retain(|s| s.timestamp_ms >= min_valid);
                dropped += (before - ts.samples.len() - ts.histograms.len()) as u64;
            }
        } else {
            let h = self.head.read();
            for ts in &mut batch.series {
                let newest =
                    h.lookup(&ts.labels).and_then(|id| h.series[id as usize].as_ref()).map_or(i64::MIN, |s| s.max_t);
                let before = ts.samples.len() + ts.histograms.len();
                let mut last = newest;
                ts.samples.retain(|s| {
                    let ok = s.timestamp_ms >= last;
                    last = last.max(s.timestamp_ms);
                    ok
                });
                let mut last = newest;
                ts.histograms.retain(|s| {
                    let ok = s.timestamp_ms >= last;
                    last = last.max(s.timestamp_ms);
                    ok
                });
                dropped += (before - ts.samples.len() - ts.histograms.len()) as u64;
            }
        }
        batch.series.retain(|ts| !(ts.samples.is_empty() && ts.histograms.is_empty() && ts.exemplars.is_empty()));
        dropped
    }

    pub fn apply(&self, pos: WalPos, batch: MetricsBatch) {
        if pos != WalPos::ZERO && pos <= self.skip_upto {
            // The samples are in blocks. Metadata is cheap and idempotent: replaying it in WAL
            // order restores the latest even if a crash came between a block and `persisted.json`.
            let mut h = self.head.write();
            for m in batch.metadata {
                h.metadata.insert(m.metric_family.clone(), m);
            }
            return;
        }
        let cap = self.opts.exemplars_per_series.max(1);
        let mut h = self.head.write();
        let mut added = 0u64;
        let mut newest = i64::MIN;
        for ts in batch.series {
            if ts.samples.is_empty() && ts.histograms.is_empty() && ts.exemplars.is_empty() {
                continue;
            }
            let Some(id) = h.get_or_create(&ts.labels) else { continue };
            let Some(s) = h.series[id as usize].as_mut() else { continue };
            for x in ts.samples {
                added += u64::from(s.live.append(x.timestamp_ms, x.value));
                s.max_t = s.max_t.max(x.timestamp_ms);
            }
            for x in ts.histograms {
                s.max_t = s.max_t.max(x.timestamp_ms);
                added += u64::from(s.live.upsert_histogram(x));
            }
            newest = newest.max(s.max_t);
            let traces: Vec<u128> =
                ts.exemplars.iter().filter_map(|e| e.labels.get("trace_id").and_then(trace_key)).collect();
            for e in ts.exemplars {
                s.live.add_exemplar(e, cap);
            }
            for key in traces {
                h.index_exemplar(id, key);
            }
        }
        h.items += added;
        for m in batch.metadata {
            match h.metadata.get_mut(&m.metric_family) {
                Some(slot) => *slot = m,
                None => {
                    h.metadata.insert(m.metric_family.clone(), m);
                }
            }
        }
        h.last_applied = h.last_applied.max(pos);
        self.max_t.fetch_max(newest, Ordering::Relaxed);
    }

    /// [`MetricsHead::admit`] for packed samples.
    pub fn admit_packed(&self, batch: &mut PackedSamples) -> u64 {
        let window = ms(self.opts.ooo_window);
        if window > 0 {
            let min_valid = self.max_t.load(Ordering::Relaxed).saturating_sub(window);
            return batch.retain(|_, t| t >= min_valid) as u64;
        }
        let h = self.head.read();
        // Samples of a series are contiguous: track the newest accepted per series as we go.
        let mut current: Option<(*const u8, i64)> = None;
        batch.retain(|s, t| {
            let key = s.label_bytes().as_ptr();
            let last = match current {
                Some((k, last)) if k == key => last,
                _ => h.lookup_packed(s).and_then(|id| h.series[id as usize].as_ref()).map_or(i64::MIN, |s| s.max_t),
            };
            let ok = t >= last;
            current = Some((key, last.max(t)));
            ok
        }) as u64
    }

    /// [`MetricsHead::apply`] for packed samples: series are found by the hash of their label
    /// bytes, without decoding a label unless the series is new.
    pub fn apply_packed(&self, pos: WalPos, batch: PackedSamples) {
        let metadata = batch.metadata.clone();
        if pos != WalPos::ZERO && pos <= self.skip_upto {
            let mut h = self.head.write();
            for m in metadata {
                h.metadata.insert(m.metric_family.clone(), m);
            }
            return;
        }
        let mut h = self.head.write();
        let mut added = 0u64;
        let mut newest = i64::MIN;
        let series: Vec<_> = batch.iter().collect();
        let ids = h.lookup_packed_many(&series);
        for (ps, id) in series.iter().zip(ids) {
            // A series new to the head (or new earlier in this batch) is registered here.
            let Some(id) = id.or_else(|| h.get_or_create_packed(ps)) else { continue };
            let Some(s) = h.series[id as usize].as_mut() else { continue };
            for x in ps.samples() {
                added += u64::from(s.live.append(x.timestamp_ms, x.value));
                s.max_t = s.max_t.max(x.timestamp_ms);
            }
            newest = newest.max(s.max_t);
        }
        h.items += added;
        for m in metadata {
            match h.metadata.get_mut(&m.metric_family) {
                Some(slot) => *slot = m,
                None => {
                    h.metadata.insert(m.metric_family.clone(), m);
                }
            }
        }
        h.last_applied = h.last_applied.max(pos);
        self.max_t.fetch_max(newest, Ordering::Relaxed);
    }

    /// Float plus histogram samples stored (head and blocks; a timestamp rewritten after it was
    /// persisted counts twice until compaction merges it).
    pub fn items(&self) -> u64 {
        let h = self.head.read();
        let blocks = self.blocks.read().clone();
        h.items + blocks.iter().map(|b| b.meta.stats.samples + b.meta.stats.histograms).sum::<u64>()
    }

    /// Writes everything applied so far into new blocks. `Ok(false)` when memory-only.
    pub fn persist(&self) -> io::Result<bool> {
        let Some(dir) = self.dir.clone() else { return Ok(false) };
        let mut persisted = self.persisted.lock();
        // Freeze: move the live data aside (readers still see it), so writes go on meanwhile.
        let (frozen, pos, metadata) = {
            let mut h = self.head.write();
            let pos = h.last_applied;
            if pos <= *persisted {
                return Ok(true);
            }
            let mut frozen: Vec<(Labels, Arc<SeriesData>)> = Vec::new();
            for i in 0..h.series.len() {
                let Some(s) = h.series[i].as_mut() else { continue };
                if s.live.has_anything() {
                    let live = std::mem::take(&mut s.live);
                    s.frozen = Some(Arc::new(match s.frozen.take() {
                        None => live,
                        Some(old) => combine(&old, live),
                    }));
                }
                if let Some(f) = &s.frozen {
                    let f = Arc::clone(f);
                    let labels = h.series[i].as_ref().map(|s| h.labels_of(s)).unwrap_or_default();
                    frozen.push((labels, f));
                }
            }
            h.frozen_items = h.items;
            let mut metadata: Vec<MetricMetadata> = h.metadata.values().cloned().collect();
            metadata.sort_by(|a, b| a.metric_family.cmp(&b.metric_family));
            (frozen, pos, metadata)
        };
        let mut frozen = frozen;
        frozen.sort_by(|a, b| a.0.cmp(&b.0));
        let range = ms(self.opts.block_range).max(1);
        let mut writers: BTreeMap<i64, BlockWriter> = BTreeMap::new();
        let mut new_blocks: Vec<Arc<Block>> = Vec::new();
        let written = (|| -> io::Result<()> {
            for (labels, data) in &frozen {
                let floats = data.floats(i64::MIN, i64::MAX);
                let mut windows: BTreeSet<i64> = BTreeSet::new();
                let w = |t: i64| t.div_euclid(range) * range;
                windows.extend(floats.iter().map(|s| w(s.timestamp_ms)));
                windows.extend(data.histograms().iter().map(|s| w(s.timestamp_ms)));
                windows.extend(data.exemplars().iter().map(|s| w(s.timestamp_ms)));
                for win in windows {
                    let end = win.saturating_add(range - 1);
                    let writer = match writers.entry(win) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let name = self.block_name(&dir, pos, 0, win);
                            e.insert(BlockWriter::create(&dir, &name)?)
                        }
                    };
                    writer.add(
                        labels.clone(),
                        in_range(&floats, win, end, |s| s.timestamp_ms),
                        in_range(data.histograms(), win, end, |s| s.timestamp_ms),
                        in_range(data.exemplars(), win, end, |s| s.timestamp_ms),
                    )?;
                }
            }
            while let Some((_, w)) = writers.pop_first() {
                let path = w.final_dir().to_path_buf();
                w.finish(0, next_after(*persisted), pos, Vec::new())?;
                new_blocks.push(Arc::new(Block::open(&path).map_err(io::Error::other)?));
            }
            Ok(())
        })();
        if let Err(e) = written {
            // The frozen data stays in memory and is written by the next persist.
            for (_, w) in writers {
                w.abandon();
            }
            for b in &new_blocks {
                let _ = delete_block_dir(&b.dir);
            }
            return Err(e);
        }
        write_persisted(&dir, pos, metadata)?;
        {
            let mut h = self.head.write();
            let mut blocks = self.blocks.write();
            let mut list: Vec<Arc<Block>> = blocks.iter().cloned().collect();
            list.extend(new_blocks);
            sort_blocks(&mut list);
            *blocks = Arc::new(list);
            for s in h.series.iter_mut().flatten() {
                s.frozen = None;
            }
            h.items -= h.frozen_items.min(h.items);
            h.frozen_items = 0;
            h.rebuild_exemplar_index();
        }
        *persisted = pos;
        Ok(true)
    }

    /// A fresh block directory name.
    fn block_name(&self, dir: &Path, pos: WalPos, level: u32, window: i64) -> String {
        loop {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let name = format!("{:016x}-{:016x}-l{level}-{:016x}-{n}", pos.segment, pos.offset, window as u64);
            if !dir.join(&name).exists() && !dir.join(format!("{name}.tmp")).exists() {
                return name;
            }
        }
    }

    /// Retention, compaction and garbage collection of idle series.
    pub fn maintain(&self, now_ms: i64) -> io::Result<()> {
        let _io = self.persisted.lock();
        {
            // Series idle for a block range leave the head (their data is in blocks).
            let newest = self.max_t.load(Ordering::Relaxed);
            let mut h = self.head.write();
            h.gc(newest.saturating_sub(ms(self.opts.block_range)));
            h.rebuild_exemplar_index();
        }
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        compact::retention(self, now_ms)?;
        for _ in 0..64 {
            if !compact::compact_once(self, &dir)? {
                break;
            }
        }
        Ok(())
    }

    /// The head's read lock, then the blocks list (see `blocks`).
    fn snapshot(&self) -> (RwLockReadGuard<'_, Head>, ReadBlocks) {
        let h = self.head.read();
        let b = self.blocks.read().clone();
        (h, ReadBlocks(b))
    }

    fn head_samples(s: &Series, start: i64, end: i64) -> SeriesSamples {
        let mut out = SeriesSamples {
            floats: s.live.floats(start, end),
            histograms: in_range(s.live.histograms(), start, end, |h| h.timestamp_ms).to_vec(),
            exemplars: in_range(s.live.exemplars(), start, end, |e| e.timestamp_ms).to_vec(),
        };
        if let Some(f) = &s.frozen {
            out.floats = merge_newer_wins(f.floats(start, end), out.floats, |s| s.timestamp_ms);
            out.histograms = merge_newer_wins(
                in_range(f.histograms(), start, end, |h| h.timestamp_ms).to_vec(),
                out.histograms,
                |h| h.timestamp_ms,
            );
            out.exemplars =
                merge_exemplars(in_range(f.exemplars(), start, end, |e| e.timestamp_ms).to_vec(), out.exemplars);
        }
        out
    }

    fn head_has_data(s: &Series, start: i64, end: i64) -> bool {
        let has = |d: &SeriesData| {
            d.has_data_in(start, end) || !in_range(d.exemplars(), start, end, |e| e.timestamp_ms).is_empty()
        };
        has(&s.live) || s.frozen.as_deref().is_some_and(has)
    }

    /// Series of every source matching `matchers` with their data in the range, sorted.
    fn select_all(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<TimeSeries> {
        let (h, blocks) = self.snapshot();
        let mut head_part = Vec::new();
        for id in h.select_ids(matchers) {
            let Some(s) = h.series[id as usize].as_deref() else { continue };
            let data = Self::head_samples(s, start, end);
            if !(data.floats.is_empty() && data.histograms.is_empty() && data.exemplars.is_empty()) {
                head_part.push((h.labels_of(s), data));
            }
        }
        drop(h);
        let mut acc: BTreeMap<Labels, SeriesSamples> = BTreeMap::new();
        for b in blocks.iter().filter(|b| overlaps(b, start, end)) {
            if let Err(e) = self.block_select(b, matchers, start, end, &mut acc) {
                self.problem(e);
            }
        }
        for (labels, data) in head_part {
            merge_into(&mut acc, labels, data);
        }
        acc.into_iter()
            .filter(|(_, d)| !(d.floats.is_empty() && d.histograms.is_empty() && d.exemplars.is_empty()))
            .map(|(labels, d)| TimeSeries {
                labels,
                samples: d.floats,
                histograms: d.histograms,
                exemplars: d.exemplars,
            })
            .collect()
    }

    fn block_select(
        &self,
        b: &Block,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        acc: &mut BTreeMap<Labels, SeriesSamples>,
    ) -> Result<(), String> {
        // Collected first so that a damaged block contributes nothing rather than a part.
        let mut part = Vec::new();
        for r in b.select_refs(matchers)? {
            let s = b.series(r)?;
            let data = b.read(&s, start, end)?;
            if !(data.floats.is_empty() && data.histograms.is_empty() && data.exemplars.is_empty()) {
                part.push((s.labels, data));
            }
        }
        for (labels, data) in part {
            merge_into(acc, labels, data);
        }
        Ok(())
    }

    /// Label sets of matching series with data in the range (blocks: a chunk overlapping it).
    fn series_in_range(&self, matchers: &[Matcher], start: i64, end: i64) -> BTreeSet<Labels> {
        let (h, blocks) = self.snapshot();
        let mut out = BTreeSet::new();
        for id in h.select_ids(matchers) {
            let Some(s) = h.series[id as usize].as_deref() else { continue };
            if Self::head_has_data(s, start, end) {
                out.insert(h.labels_of(s));
            }
        }
        drop(h);
        for b in blocks.iter().filter(|b| overlaps(b, start, end)) {
            let r = (|| -> Result<Vec<Labels>, String> {
                let mut part = Vec::new();
                for r in b.select_refs(matchers)? {
                    let s = b.series(r)?;
                    if s.chunks.iter().any(|c| c.max_t >= start && c.min_t <= end) {
                        part.push(s.labels);
                    }
                }
                Ok(part)
            })();
            match r {
                Ok(part) => out.extend(part),
                Err(e) => self.problem(e),
            }
        }
        out
    }
}

fn overlaps(b: &Block, start: i64, end: i64) -> bool {
    b.meta.max_time >= start && b.meta.min_time <= end
}

fn merge_into(acc: &mut BTreeMap<Labels, SeriesSamples>, labels: Labels, newer: SeriesSamples) {
    match acc.get_mut(&labels) {
        None => {
            acc.insert(labels, newer);
        }
        Some(old) => {
            let o = std::mem::take(old);
            *old = SeriesSamples {
                floats: merge_newer_wins(o.floats, newer.floats, |s| s.timestamp_ms),
                histograms: merge_newer_wins(o.histograms, newer.histograms, |h| h.timestamp_ms),
                exemplars: merge_exemplars(o.exemplars, newer.exemplars),
            };
        }
    }
}

/// Frozen data of a failed persist plus the live data since: one period's worth.
fn combine(old: &SeriesData, live: SeriesData) -> SeriesData {
    let floats = merge_newer_wins(old.floats(i64::MIN, i64::MAX), live.floats(i64::MIN, i64::MAX), |s| s.timestamp_ms);
    let mut out = SeriesData::default();
    for s in floats {
        out.append(s.timestamp_ms, s.value);
    }
    out.set_histograms(merge_newer_wins(old.histograms().to_vec(), live.histograms().to_vec(), |h| h.timestamp_ms));
    out.set_exemplars(merge_exemplars(old.exemplars().to_vec(), live.exemplars().to_vec()));
    out
}

fn sort_blocks(blocks: &mut [Arc<Block>]) {
    blocks.sort_by(|a, b| {
        (a.meta.wal_max, a.meta.wal_min, a.meta.level, &a.name).cmp(&(
            b.meta.wal_max,
            b.meta.wal_min,
            b.meta.level,
            &b.name,
        ))
    });
}

/// Deletes a block directory so that a crash midway never leaves a half block behind: it is
/// renamed away first (open deletes `*.deleting` leftovers).
fn delete_block_dir(dir: &Path) -> io::Result<()> {
    let mut doomed = dir.as_os_str().to_owned();
    doomed.push(".deleting");
    let doomed = PathBuf::from(doomed);
    fs::rename(dir, &doomed)?;
    if let Some(parent) = dir.parent() {
        block::sync_dir(parent)?;
    }
    fs::remove_dir_all(&doomed)
}

fn write_persisted(dir: &Path, pos: WalPos, metadata: Vec<MetricMetadata>) -> io::Result<()> {
    let state = Persisted { version: 1, wal_pos: pos, metadata };
    let bytes = serde_json::to_vec(&state).map_err(io::Error::other)?;
    let tmp = dir.join("persisted.json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join("persisted.json"))?;
    block::sync_dir(dir)
}

/// The smallest position after `p` (the first a later record can have).
fn next_after(p: WalPos) -> WalPos {
    WalPos { segment: p.segment, offset: p.offset.saturating_add(1) }
}

impl crate::read::MetricsReader for MetricsHead {
    fn series(&self) -> Vec<Labels> {
        self.series_in_range(&[], i64::MIN, i64::MAX).into_iter().collect()
    }

    fn select(&self, matchers: &[(String, String)], start_ms: i64, end_ms: i64) -> Vec<TimeSeries> {
        let m: Vec<Matcher> = matchers.iter().map(|(n, v)| Matcher::eq(n.as_str(), v.as_str())).collect();
        self.select_all(&m, start_ms, end_ms)
    }

    fn metadata(&self) -> Vec<MetricMetadata> {
        let h = self.head.read();
        let mut out: Vec<MetricMetadata> = h.metadata.values().cloned().collect();
        out.sort_unstable_by(|a, b| a.metric_family.cmp(&b.metric_family));
        out
    }

    fn select_matching(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<TimeSeries> {
        self.select_all(matchers, start_ms, end_ms)
    }

    fn select_series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Box<dyn SeriesSet + '_> {
        Box::new(self.select_lazy(matchers, start_ms, end_ms))
    }

    fn series_matching(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        self.series_in_range(matchers, start_ms, end_ms).into_iter().collect()
    }

    fn label_names(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        if matchers.is_empty() {
            let (h, blocks) = self.snapshot();
            for s in h.series.iter().flatten() {
                if Self::head_has_data(s, start_ms, end_ms) {
                    for &(n, _) in s.labels.iter() {
                        if !names.contains(h.syms.str(n)) {
                            names.insert(h.syms.str(n).to_string());
                        }
                    }
                }
            }
            drop(h);
            for b in blocks.iter().filter(|b| overlaps(b, start_ms, end_ms)) {
                match b.label_names() {
                    Ok(v) => names.extend(v),
                    Err(e) => self.problem(e),
                }
            }
        } else {
            for l in self.series_in_range(matchers, start_ms, end_ms) {
                names.extend(l.iter().map(|l| l.name.to_string()));
            }
        }
        names.into_iter().collect()
    }

    fn label_values(&self, name: &str, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        let mut values: BTreeSet<String> = BTreeSet::new();
        if matchers.is_empty() {
            let (h, blocks) = self.snapshot();
            if let Some(by_value) = h.syms.get(name).and_then(|n| h.postings.get(&n)) {
                for &v in by_value.keys() {
                    let m = [Matcher::eq(name, h.syms.str(v))];
                    let any = h.select_ids(&m).iter().any(|id| {
                        h.series[id as usize].as_deref().is_some_and(|s| Self::head_has_data(s, start_ms, end_ms))
                    });
                    if any {
                        values.insert(h.syms.str(v).to_string());
                    }
                }
            }
            drop(h);
            for b in blocks.iter().filter(|b| overlaps(b, start_ms, end_ms)) {
                match b.label_values(name) {
                    Ok(v) => values.extend(v),
                    Err(e) => self.problem(e),
                }
            }
        } else {
            for l in self.series_in_range(matchers, start_ms, end_ms) {
                if let Some(v) = l.get(name) {
                    values.insert(v.to_string());
                }
            }
        }
        values.into_iter().collect()
    }

    fn exemplars_by_trace(&self, trace_id: &str) -> Vec<(Labels, Exemplar)> {
        let Some(key) = trace_key(trace_id) else { return Vec::new() };
        let is_it = |e: &Exemplar| e.labels.get("trace_id").and_then(trace_key) == Some(key);
        let (h, blocks) = self.snapshot();
        let mut acc: BTreeMap<Labels, SeriesSamples> = BTreeMap::new();
        let mut head_part = Vec::new();
        for &id in h.exemplar_index.get(&key).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(s) = h.series[id as usize].as_deref() else { continue };
            let data = Self::head_samples(s, i64::MIN, i64::MAX);
            let exemplars: Vec<Exemplar> = data.exemplars.into_iter().filter(|e| is_it(e)).collect();
            if !exemplars.is_empty() {
                head_part.push((h.labels_of(s), SeriesSamples { exemplars, ..SeriesSamples::default() }));
            }
        }
        drop(h);
        for b in blocks.iter() {
            let r = (|| -> Result<(), String> {
                let mut part = Vec::new();
                for r in b.trace_refs(key)? {
                    let s = b.series(r)?;
                    let data = b.read(&s, i64::MIN, i64::MAX)?;
                    let exemplars: Vec<Exemplar> = data.exemplars.into_iter().filter(|e| is_it(e)).collect();
                    part.push((s.labels, SeriesSamples { exemplars, ..SeriesSamples::default() }));
                }
                for (l, d) in part {
                    merge_into(&mut acc, l, d);
                }
                Ok(())
            })();
            if let Err(e) = r {
                self.problem(e);
            }
        }
        for (l, d) in head_part {
            merge_into(&mut acc, l, d);
        }
        let mut out: Vec<(Labels, Exemplar)> =
            acc.into_iter().flat_map(|(l, d)| d.exemplars.into_iter().map(move |e| (l.clone(), e))).collect();
        out.sort_by(|a, b| a.1.timestamp_ms.cmp(&b.1.timestamp_ms).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn stats(&self, limit: usize) -> TsdbStats {
        let h = self.head.read();
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        for s in h.series.iter().flatten() {
            for d in std::iter::once(&s.live).chain(s.frozen.as_deref()) {
                if let Some((a, b)) = d.time_range() {
                    lo = lo.min(a);
                    hi = hi.max(b);
                }
            }
        }
        let top = |mut v: Vec<(String, u64)>| {
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(limit);
            v
        };
        let name_sym = h.syms.get("__name__");
        let by_metric = name_sym
            .and_then(|n| h.postings.get(&n))
            .map(|values| values.iter().map(|(&v, list)| (h.syms.str(v).to_string(), list.len())).collect())
            .unwrap_or_default();
        let by_label = h.postings.iter().map(|(&n, values)| (h.syms.str(n).to_string(), values.len() as u64)).collect();
        // Only the heaviest pairs are named: rank by count first, then build the strings.
        let mut pairs: Vec<(u64, u32, u32)> = h
            .postings
            .iter()
            .flat_map(|(&n, values)| values.iter().map(move |(&v, list)| (list.len(), n, v)))
            .collect();
        pairs.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then_with(|| h.syms.str(a.1).cmp(h.syms.str(b.1)))
                .then_with(|| h.syms.str(a.2).cmp(h.syms.str(b.2)))
        });
        pairs.truncate(limit);
        let by_pair = pairs.into_iter().map(|(c, n, v)| (format!("{}={}", h.syms.str(n), h.syms.str(v)), c)).collect();
        TsdbStats {
            head_series: h.all.len(),
            head_samples: h.items,
            head_min_time_ms: (lo <= hi).then_some(lo),
            head_max_time_ms: (lo <= hi).then_some(hi),
            series_count_by_metric_name: top(by_metric),
            label_value_count_by_label_name: top(by_label),
            series_count_by_label_value_pair: top(by_pair),
        }
    }

    fn storage_problems(&self) -> Vec<String> {
        self.problems.lock().clone()
    }
}

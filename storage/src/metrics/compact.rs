//! Compaction and retention of blocks.
//!
//! Time is cut into aligned windows of `block_range × 3^i` (2 h, 6 h, 18 h, … by default, up to a
//! tenth of the retention, at most 31 days); windows nest, so every block lies in exactly one
//! window of each range at least as large as its own. Persist writes level-0 blocks that each lie
//! in one `block_range` window. Then, per window:
//! - while the window is still being written (the newest sample, minus the out-of-order window,
//!   is before its end), four consecutive blocks of one level in the smallest range merge into one
//!   of the next level — tiered merging, so a 2 h window of 30 s persists costs each sample about
//!   log4(240) ≈ 4 rewrites rather than one per persist;
//! - once the window is closed, all its blocks merge into one.
//!
//! Blocks merged together are consecutive in WAL order among their window's blocks, and a block's
//! data never overlaps another window's, so the merged block can take its sources' place in the
//! WAL order without reordering any two writes of one timestamp.
//!
//! Crash safety: the new block is complete on disk (see `block`) before its sources are removed
//! from the list and deleted; its `meta.json` names its sources, and `open` deletes sources left
//! behind by a crash. Until then both hold the same data, which merges to the same answers.
//!
//! Retention: blocks whose newest sample is older than `now - retention` go; then, while all
//! blocks together exceed `retention_bytes`, the block with the oldest data goes. (The head and
//! the WAL are not counted: unlike Prometheus' size retention this bounds the blocks only.)

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::block::{Block, BlockSeries, BlockWriter, SeriesSamples};
use super::{MetricsHead, delete_block_dir, merge_into, ms, sort_blocks};
use crate::model::Labels;

/// Consecutive same-level blocks merged while a window is open.
const TIER: usize = 4;

/// The window ranges in milliseconds, smallest first.
pub(crate) fn ranges(engine: &MetricsHead) -> Vec<i64> {
    let base = ms(engine.opts.block_range).max(1);
    let month = 31 * 24 * 3600 * 1000;
    let max = if engine.opts.retention.is_zero() { month } else { (ms(engine.opts.retention) / 10).min(month) };
    let max = max.max(base);
    let mut out = vec![base];
    while let Some(next) = out.last().and_then(|r| r.checked_mul(3)).filter(|&r| r <= max) {
        out.push(next);
    }
    out
}

/// Applies retention by age and by size.
pub(crate) fn retention(engine: &MetricsHead, now_ms: i64) -> io::Result<()> {
    let cutoff =
        if engine.opts.retention.is_zero() { i64::MIN } else { now_ms.saturating_sub(ms(engine.opts.retention)) };
    let list: Vec<Arc<Block>> = engine.blocks.read().iter().cloned().collect();
    let mut doomed: Vec<Arc<Block>> = list.iter().filter(|b| b.meta.max_time < cutoff).cloned().collect();
    if engine.opts.retention_bytes > 0 {
        let mut by_age: Vec<&Arc<Block>> = list.iter().filter(|b| b.meta.max_time >= cutoff).collect();
        by_age.sort_by_key(|b| (b.meta.max_time, b.meta.min_time));
        let mut total: u64 = by_age.iter().map(|b| size(b)).sum();
        for b in by_age {
            if total <= engine.opts.retention_bytes {
                break;
            }
            total -= size(b);
            doomed.push(Arc::clone(b));
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    replace(engine, &doomed, None);
    for b in doomed {
        delete_block_dir(&b.dir)?;
    }
    Ok(())
}

fn size(b: &Block) -> u64 {
    b.meta.index_bytes + b.meta.chunks_bytes
}

/// Swaps `old` for `new` in the block list in one step.
fn replace(engine: &MetricsHead, old: &[Arc<Block>], new: Option<Arc<Block>>) {
    let mut blocks = engine.blocks.write();
    let mut list: Vec<Arc<Block>> = blocks.iter().filter(|b| !old.iter().any(|o| Arc::ptr_eq(o, b))).cloned().collect();
    list.extend(new);
    sort_blocks(&mut list);
    *blocks = Arc::new(list);
}

/// Picks blocks to merge, if any: indexes into `list` (sorted in WAL order).
pub(crate) fn plan(list: &[Arc<Block>], ranges: &[i64], newest: i64, ooo: i64) -> Option<Vec<usize>> {
    for (level, &range) in ranges.iter().enumerate() {
        let mut windows: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, b) in list.iter().enumerate() {
            let w = b.meta.min_time.div_euclid(range) * range;
            if b.meta.max_time < w.saturating_add(range) {
                windows.entry(w).or_default().push(i);
            }
        }
        for (w, members) in windows {
            if members.len() < 2 {
                continue;
            }
            let closed = newest.saturating_sub(ooo) >= w.saturating_add(range);
            if closed {
                return Some(members);
            }
            if level == 0 {
                for run in members.windows(TIER) {
                    let l = list[run[0]].meta.level;
                    if run.iter().all(|&i| list[i].meta.level == l) {
                        return Some(run.to_vec());
                    }
                }
            }
        }
    }
    None
}

/// Runs one compaction if one is due; true if it did.
pub(crate) fn compact_once(engine: &MetricsHead, dir: &Path) -> io::Result<bool> {
    let list: Vec<Arc<Block>> = engine.blocks.read().iter().cloned().collect();
    let newest = engine.max_t.load(std::sync::atomic::Ordering::Relaxed);
    let Some(pick) = plan(&list, &ranges(engine), newest, ms(engine.opts.ooo_window)) else { return Ok(false) };
    let sources: Vec<Arc<Block>> = pick.iter().map(|&i| Arc::clone(&list[i])).collect();
    match merge(engine, dir, &sources) {
        Ok(new) => {
            replace(engine, &sources, Some(new));
            for b in &sources {
                delete_block_dir(&b.dir)?;
            }
            Ok(true)
        }
        Err(MergeError::Io(e)) => Err(e),
        Err(MergeError::Corrupt(e)) => {
            // A damaged source is left alone (its readable data stays queryable); stop compacting
            // rather than retry it on every call.
            engine.problem(format!("compaction skipped: {e}"));
            Ok(false)
        }
    }
}

enum MergeError {
    Io(io::Error),
    Corrupt(String),
}

impl From<io::Error> for MergeError {
    fn from(e: io::Error) -> Self {
        MergeError::Io(e)
    }
}

/// Writes the merge of `sources` (in WAL order) as a new block; returns it opened.
fn merge(engine: &MetricsHead, dir: &Path, sources: &[Arc<Block>]) -> Result<Arc<Block>, MergeError> {
    let level = sources.iter().map(|b| b.meta.level).max().unwrap_or(0) + 1;
    let wal_min = sources.iter().map(|b| b.meta.wal_min).min().unwrap_or_default();
    let wal_max = sources.iter().map(|b| b.meta.wal_max).max().unwrap_or_default();
    let min_time = sources.iter().map(|b| b.meta.min_time).min().unwrap_or(0);
    let name = engine.block_name(dir, wal_max, level, min_time);
    let mut writer = BlockWriter::create(dir, &name)?;
    let r = write_merged(engine, sources, &mut writer);
    if let Err(e) = r {
        writer.abandon();
        return Err(e);
    }
    let path = writer.final_dir().to_path_buf();
    let names = sources.iter().map(|b| b.name.clone()).collect();
    writer.finish(level, wal_min, wal_max, names)?;
    Block::open(&path).map(Arc::new).map_err(MergeError::Corrupt)
}

/// Streams the series of every source in label order, merging equal label sets (a later source
/// wins on equal timestamps).
fn write_merged(engine: &MetricsHead, sources: &[Arc<Block>], writer: &mut BlockWriter) -> Result<(), MergeError> {
    let corrupt = MergeError::Corrupt;
    let counts: Vec<u32> = sources.iter().map(|b| b.series_count()).collect::<Result<_, _>>().map_err(corrupt)?;
    let mut next = vec![0u32; sources.len()];
    let mut current: Vec<Option<BlockSeries>> = Vec::with_capacity(sources.len());
    for (i, b) in sources.iter().enumerate() {
        current.push(if counts[i] > 0 { Some(b.series(0).map_err(MergeError::Corrupt)?) } else { None });
        next[i] = 1;
    }
    let cap = engine.opts.exemplars_per_series.max(1);
    while let Some(min) = current.iter().flatten().map(|s| &s.labels).min().cloned() {
        let mut acc: BTreeMap<Labels, SeriesSamples> = BTreeMap::new();
        for i in 0..sources.len() {
            if current[i].as_ref().is_some_and(|s| s.labels == min) {
                let Some(s) = current[i].take() else { continue };
                let data = sources[i].read(&s, i64::MIN, i64::MAX).map_err(MergeError::Corrupt)?;
                merge_into(&mut acc, s.labels, data);
                if next[i] < counts[i] {
                    let s = sources[i].series(next[i]).map_err(MergeError::Corrupt)?;
                    if s.labels <= min {
                        return Err(MergeError::Corrupt(format!("block {}: series out of order", sources[i].name)));
                    }
                    current[i] = Some(s);
                    next[i] += 1;
                }
            }
        }
        for (labels, mut d) in acc {
            thin(&mut d.exemplars, cap);
            writer.add(labels, &d.floats, &d.histograms, &d.exemplars)?;
        }
    }
    Ok(())
}

/// Keeps at most `cap` items, evenly spread over the list (which is sorted by time).
fn thin<T>(v: &mut Vec<T>, cap: usize) {
    let n = v.len();
    if n <= cap {
        return;
    }
    let keep: Vec<usize> = (0..cap).map(|k| k * (n - 1) / (cap - 1).max(1)).collect();
    let mut i = 0;
    v.retain(|_| {
        let k = keep.binary_search(&i).is_ok();
        i += 1;
        k
    });
}

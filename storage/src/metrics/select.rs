//! Lazy selection for PromQL ([`crate::MetricsReader::select_series`]): the matching series'
//! label sets are found up front, their samples are decoded one series at a time when asked for.
//!
//! Building the set takes the same snapshot as a full read (the head's read lock, then the block
//! list): the head's part of every matching series is copied out under the lock (the head holds
//! only what came since the last persist), and for each block overlapping the range the series'
//! chunk lists are kept, not their samples. Reading series `i` decodes its chunks from the
//! (memory-mapped, immutable) blocks in WAL order and merges them with its head part, the later
//! write winning on equal timestamps, exactly as [`MetricsHead::select_matching`] does.
//!
//! Invariants:
//! - Entries are sorted by labels, one per label set; a series' block parts are in block (WAL)
//!   order, so merging them in turn gives the duplicate rule of the read trait.
//! - Exemplar chunks are never read.
//! - A block that fails to read is reported once per failure in `storage_problems` and left out of
//!   every later read of the set (series read before the failure keep its data).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::block::{Block, BlockSeries, KIND_DECIMAL, KIND_EXEMPLARS, KIND_HISTOGRAMS, KIND_XOR, SeriesSamples};
use super::head::merge_newer_wins;
use super::{MetricsHead, overlaps};
use crate::model::Labels;
use crate::read::{Matcher, Samples, SeriesSet};

/// One selected series: where its samples are.
struct Entry {
    labels: Labels,
    /// `(block index, the series' chunks there that overlap the range)`, in block order.
    parts: Vec<(u32, BlockSeries)>,
    /// Its samples in the head.
    head: Option<Samples>,
}

/// One block's matching series (labels, block index, chunks), or why the block failed.
type BlockPart = Result<Vec<(Labels, u32, BlockSeries)>, String>;

/// The [`SeriesSet`] of the metrics engine.
pub(super) struct LazySeries<'a> {
    engine: &'a MetricsHead,
    blocks: Vec<Arc<Block>>,
    failed: Vec<AtomicBool>,
    start: i64,
    end: i64,
    entries: Vec<Entry>,
}

impl MetricsHead {
    /// The series matching `matchers` with float or histogram data (blocks: a chunk) in
    /// `start..=end`, read lazily.
    pub(super) fn select_lazy(&self, matchers: &[Matcher], start: i64, end: i64) -> LazySeries<'_> {
        let (h, blocks) = self.snapshot();
        let mut head_part: Vec<(Labels, Samples)> = Vec::new();
        for id in h.select_ids(matchers) {
            let Some(s) = h.series[id as usize].as_deref() else { continue };
            let d = Self::head_samples(s, start, end);
            if !(d.floats.is_empty() && d.histograms.is_empty()) {
                head_part.push((h.labels_of(s), Samples { floats: d.floats, histograms: d.histograms }));
            }
        }
        drop(h);
        head_part.sort_by(|a, b| a.0.cmp(&b.0));
        let blocks: Vec<Arc<Block>> = blocks.iter().filter(|b| overlaps(b, start, end)).cloned().collect();
        let one_block = |bi: usize, b: &Block| -> BlockPart {
            let mut part = Vec::new();
            for r in b.select_refs(matchers)? {
                let mut s = b.series(r)?;
                s.chunks.retain(|c| c.kind != KIND_EXEMPLARS && c.max_t >= start && c.min_t <= end);
                if !s.chunks.is_empty() {
                    let labels = std::mem::take(&mut s.labels);
                    part.push((labels, bi as u32, s));
                }
            }
            Ok(part)
        };
        // The blocks' series lists are independent: read them on a few threads when there are
        // several blocks (results are taken in block order, so the outcome is the same).
        let threads = select_threads().min(blocks.len()).max(1);
        let results: Vec<BlockPart> = if threads <= 1 {
            blocks.iter().enumerate().map(|(bi, b)| one_block(bi, b)).collect()
        } else {
            let one_block = &one_block;
            let blocks = &blocks;
            std::thread::scope(|sc| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        sc.spawn(move || {
                            (t..blocks.len())
                                .step_by(threads)
                                .map(|bi| (bi, one_block(bi, &blocks[bi])))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let mut all: Vec<Option<BlockPart>> = (0..blocks.len()).map(|_| None).collect();
                for h in handles {
                    // A panicked thread leaves its blocks `None`: reported as failed below.
                    if let Ok(v) = h.join() {
                        for (bi, r) in v {
                            all[bi] = Some(r);
                        }
                    }
                }
                all.into_iter().map(|r| r.unwrap_or_else(|| Err("block listing thread failed".to_string()))).collect()
            })
        };
        let mut parts: Vec<(Labels, u32, BlockSeries)> = Vec::new();
        for r in results {
            match r {
                Ok(p) => parts.extend(p),
                Err(e) => self.problem(e),
            }
        }
        // Each block lists its series in label order: a stable sort merges the runs.
        parts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut entries = Vec::new();
        let mut hp = head_part.into_iter().peekable();
        let mut bp = parts.into_iter().peekable();
        loop {
            let from_blocks = match (bp.peek(), hp.peek()) {
                (None, None) => break,
                (Some(b), Some(h)) => b.0 <= h.0,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if from_blocks {
                let Some((labels, bi, s)) = bp.next() else { break };
                let mut e = Entry { labels, parts: vec![(bi, s)], head: None };
                while let Some((_, bi, s)) = bp.next_if(|x| x.0 == e.labels) {
                    e.parts.push((bi, s));
                }
                e.head = hp.next_if(|x| x.0 == e.labels).map(|x| x.1);
                entries.push(e);
            } else {
                let Some((labels, s)) = hp.next() else { break };
                entries.push(Entry { labels, parts: Vec::new(), head: Some(s) });
            }
        }
        let failed = blocks.iter().map(|_| AtomicBool::new(false)).collect();
        LazySeries { engine: self, blocks, failed, start, end, entries }
    }
}

impl Drop for LazySeries<'_> {
    /// The query is done with its blocks: their mapped pages leave the process' RSS (they stay in
    /// the page cache for the next query).
    fn drop(&mut self) {
        for b in &self.blocks {
            b.release_pages();
        }
    }
}

/// Threads that list blocks' series for one selection (the machine's cores, at most 4).
fn select_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(4))
}

impl SeriesSet for LazySeries<'_> {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn labels(&self, i: usize) -> &Labels {
        &self.entries[i].labels
    }

    fn read(&self, i: usize) -> Samples {
        let mut out = Samples::default();
        let Some(e) = self.entries.get(i) else { return out };
        // Block parts usually follow each other in time (consecutive blocks): those are decoded
        // straight onto the end of one list, sized once; overlapping ones are merged.
        let (start, end) = (self.start, self.end);
        let floats: usize = e
            .parts
            .iter()
            .flat_map(|(_, s)| &s.chunks)
            .filter(|m| matches!(m.kind, KIND_XOR | KIND_DECIMAL) && m.max_t >= start && m.min_t <= end)
            .map(|m| m.count as usize)
            .sum();
        let head = e.head.as_ref().map_or(0, |h| h.floats.len());
        let mut acc = SeriesSamples::default();
        acc.floats.reserve((floats + head).min(1 << 20));
        for (bi, s) in &e.parts {
            let bi = *bi as usize;
            let (Some(b), Some(failed)) = (self.blocks.get(bi), self.failed.get(bi)) else { continue };
            if failed.load(Ordering::Relaxed) {
                continue;
            }
            let after = |kinds: &[u8], last: Option<i64>| {
                let first = s.chunks.iter().filter(|m| kinds.contains(&m.kind) && m.max_t >= start && m.min_t <= end);
                last.is_none_or(|last| first.map(|m| m.min_t).min().is_none_or(|t| t > last))
            };
            let r = if after(&[KIND_XOR, KIND_DECIMAL], acc.floats.last().map(|f| f.timestamp_ms))
                && after(&[KIND_HISTOGRAMS], acc.histograms.last().map(|h| h.timestamp_ms))
            {
                b.read_into(s, start, end, &mut acc)
            } else {
                b.read(s, start, end).map(|d| {
                    acc.floats = merge_newer_wins(std::mem::take(&mut acc.floats), d.floats, |s| s.timestamp_ms);
                    acc.histograms =
                        merge_newer_wins(std::mem::take(&mut acc.histograms), d.histograms, |h| h.timestamp_ms);
                })
            };
            acc.exemplars.clear();
            if let Err(err) = r {
                failed.store(true, Ordering::Relaxed);
                self.engine.problem(err);
            }
        }
        out.floats = acc.floats;
        out.histograms = acc.histograms;
        if let Some(h) = &e.head {
            out.floats = merge_newer_wins(std::mem::take(&mut out.floats), h.floats.clone(), |s| s.timestamp_ms);
            out.histograms =
                merge_newer_wins(std::mem::take(&mut out.histograms), h.histograms.clone(), |h| h.timestamp_ms);
        }
        out
    }
}

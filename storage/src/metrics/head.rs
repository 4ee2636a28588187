//! The head: the series registry (interned label symbols, label-set hash → series id, postings)
//! and, per series, the samples applied since the last persist in compressed chunks.
//!
//! Invariants:
//! - A label set has one series id for the life of the process; ids only grow and are never
//!   reused, so postings (sorted id lists) are appended to in order.
//! - A series' labels are symbol pairs in label-name order (the canonical `Labels` order).
//! - A label set's identity is the pair of 64-bit hashes of its canonical label bytes under two
//!   independent random seeds (`Head::hashes`): the strings are never compared. Two different
//!   sets would have to collide on both 64-bit hashes of this process' secret seeds to be taken
//!   for one series (odds about 2^-64 per look-up even among sets sharing the first hash).
//! - Float samples live in Gorilla chunks whose timestamps strictly increase; a sample at or
//!   before the end of the chunks (out of order, or a rewrite of a timestamp) goes to the
//!   series' `overlay`, sorted and unique by timestamp, which wins over the chunks on reads. A
//!   large overlay is folded back into fresh chunks.
//! - `frozen` data (being written to a block by `persist`) is older than `live` data: on equal
//!   timestamps live wins.

use std::hash::BuildHasher;
use std::sync::Arc;

use roaring::RoaringBitmap;

use super::gorilla::{SAMPLES_PER_CHUNK, XorAppender, XorIter};
use crate::FastMap;
use crate::model::{Exemplar, FloatSample, HistogramSample, Label, Labels, MetricMetadata, PackedSeries, pack_labels};
use crate::read::{MatchOp, Matcher};

/// Overlay entries that trigger re-encoding a series' chunks.
const MAX_OVERLAY: usize = 2 * SAMPLES_PER_CHUNK as usize;

/// Interned strings: label names and values are stored once and referred to by `u32`.
#[derive(Default)]
pub(crate) struct Symbols {
    strings: Vec<Arc<str>>,
    ids: FastMap<Arc<str>, u32>,
}

impl Symbols {
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.strings.push(Arc::clone(&a));
        self.ids.insert(a, id);
        id
    }

    pub fn str(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }
}

/// A sorted list of series ids: a plain vector while short, a roaring bitmap when long.
pub(crate) enum PostingList {
    /// A single id, without a heap allocation (most values of a unique label, e.g. `instance`).
    One(u32),
    Small(Vec<u32>),
    Big(RoaringBitmap),
}

const SMALL_POSTINGS: usize = 32;

impl PostingList {
    fn push(&mut self, id: u32) {
        match self {
            PostingList::One(first) => *self = PostingList::Small(vec![*first, id]),
            PostingList::Small(v) if v.len() < SMALL_POSTINGS => v.push(id),
            PostingList::Small(v) => {
                let mut b: RoaringBitmap = v.iter().copied().collect();
                b.insert(id);
                *self = PostingList::Big(b);
            }
            PostingList::Big(b) => {
                b.insert(id);
            }
        }
    }

    fn remove(&mut self, id: u32) {
        match self {
            PostingList::One(x) if *x == id => *self = PostingList::Small(Vec::new()),
            PostingList::One(_) => {}
            PostingList::Small(v) => v.retain(|&x| x != id),
            PostingList::Big(b) => {
                b.remove(id);
            }
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            PostingList::One(_) => 1,
            PostingList::Small(v) => v.len() as u64,
            PostingList::Big(b) => b.len(),
        }
    }

    fn or_into(&self, out: &mut RoaringBitmap) {
        match self {
            PostingList::One(id) => {
                out.insert(*id);
            }
            PostingList::Small(v) => v.iter().for_each(|&id| {
                out.insert(id);
            }),
            PostingList::Big(b) => *out |= b,
        }
    }
}

/// A finished chunk of float samples.
pub(crate) struct ClosedChunk {
    pub data: Box<[u8]>,
    pub count: u16,
    pub min_t: i64,
    pub max_t: i64,
}

/// The samples of one series applied in one period (live, or frozen for a persist).
#[derive(Default)]
pub(crate) struct SeriesData {
    chunks: Vec<ClosedChunk>,
    open: XorAppender,
    /// What most series never have, boxed to keep the common case small.
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    overlay: Vec<FloatSample>,
    histograms: Vec<HistogramSample>,
    exemplars: Vec<Exemplar>,
}

impl SeriesData {
    fn overlay(&self) -> &[FloatSample] {
        self.extra.as_ref().map_or(&[], |x| &x.overlay)
    }

    pub fn histograms(&self) -> &[HistogramSample] {
        self.extra.as_ref().map_or(&[], |x| &x.histograms)
    }

    pub fn exemplars(&self) -> &[Exemplar] {
        self.extra.as_ref().map_or(&[], |x| &x.exemplars)
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub fn set_histograms(&mut self, v: Vec<HistogramSample>) {
        if !v.is_empty() || self.extra.is_some() {
            self.extra_mut().histograms = v;
        }
    }

    pub fn set_exemplars(&mut self, v: Vec<Exemplar>) {
        if !v.is_empty() || self.extra.is_some() {
            self.extra_mut().exemplars = v;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.open.count() == 0 && self.overlay().is_empty() && self.histograms().is_empty()
    }

    pub fn has_anything(&self) -> bool {
        !self.is_empty() || !self.exemplars().is_empty()
    }

    fn chunks_max_t(&self) -> Option<i64> {
        if self.open.count() > 0 { Some(self.open.max_t()) } else { self.chunks.last().map(|c| c.max_t) }
    }

    /// Time range of samples and histograms held.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        let mut upd = |a: i64, b: i64| {
            lo = lo.min(a);
            hi = hi.max(b);
        };
        if let Some(c) = self.chunks.first() {
            upd(c.min_t, c.min_t);
        }
        if self.chunks.is_empty() && self.open.count() > 0 {
            upd(self.open.min_t(), self.open.min_t());
        }
        if let Some(t) = self.chunks_max_t() {
            upd(t, t);
        }
        if let (Some(a), Some(b)) = (self.overlay().first(), self.overlay().last()) {
            upd(a.timestamp_ms, b.timestamp_ms);
        }
        if let (Some(a), Some(b)) = (self.histograms().first(), self.histograms().last()) {
            upd(a.timestamp_ms, b.timestamp_ms);
        }
        (lo <= hi).then_some((lo, hi))
    }

    /// True when a sample or histogram lies in `start..=end`.
    pub fn has_data_in(&self, start: i64, end: i64) -> bool {
        match self.time_range() {
            None => false,
            Some((lo, hi)) if hi < start || lo > end => false,
            // Ranges overlap: look closer only when the range falls in a gap.
            _ => {
                !self.floats(start, end).is_empty()
                    || !in_range(self.histograms(), start, end, |h| h.timestamp_ms).is_empty()
            }
        }
    }

    /// Appends a float sample; true when the series holds one more sample (false for a rewrite).
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        match self.chunks_max_t() {
            Some(max) if t <= max => {}
            _ => {
                if self.open.count() >= SAMPLES_PER_CHUNK {
                    let open = std::mem::take(&mut self.open);
                    let (count, min_t, max_t) = (open.count(), open.min_t(), open.max_t());
                    self.chunks.push(ClosedChunk { data: open.finish(), count, min_t, max_t });
                }
                self.open.append(t, v);
                return true;
            }
        }
        let s = FloatSample { timestamp_ms: t, value: v };
        let in_chunks = !self.chunk_floats(t, t).is_empty();
        let overlay = &mut self.extra_mut().overlay;
        let grew = match overlay.binary_search_by_key(&t, |s| s.timestamp_ms) {
            Ok(i) => {
                overlay[i] = s;
                false
            }
            Err(i) => {
                overlay.insert(i, s);
                !in_chunks
            }
        };
        if overlay.len() > MAX_OVERLAY {
            self.reencode();
        }
        grew
    }

    /// Folds the overlay into freshly encoded chunks.
    fn reencode(&mut self) {
        let all = self.floats(i64::MIN, i64::MAX);
        self.chunks.clear();
        self.open = XorAppender::default();
        if let Some(x) = self.extra.as_mut() {
            x.overlay = Vec::new();
        }
        for s in all {
            self.append(s.timestamp_ms, s.value);
        }
        self.chunks.shrink_to_fit();
    }

    fn chunk_floats(&self, start: i64, end: i64) -> Vec<FloatSample> {
        let mut out = Vec::new();
        let open = (self.open.count() > 0)
            .then(|| (self.open.bytes(), self.open.count(), self.open.min_t(), self.open.max_t()));
        let closed = self.chunks.iter().map(|c| (&c.data[..], c.count, c.min_t, c.max_t));
        for (bytes, count, lo, hi) in closed.chain(open) {
            if hi < start || lo > end {
                continue;
            }
            for (t, v) in XorIter::new(bytes, count).map_while(Result::ok) {
                if t >= start && t <= end {
                    out.push(FloatSample { timestamp_ms: t, value: v });
                }
            }
        }
        out
    }

    /// Float samples in `start..=end`, sorted, the overlay winning on equal timestamps.
    pub fn floats(&self, start: i64, end: i64) -> Vec<FloatSample> {
        let chunks = self.chunk_floats(start, end);
        let overlay = in_range(self.overlay(), start, end, |s| s.timestamp_ms);
        if overlay.is_empty() {
            return chunks;
        }
        merge_newer_wins(chunks, overlay.to_vec(), |s| s.timestamp_ms)
    }

    pub fn upsert_histogram(&mut self, h: HistogramSample) -> bool {
        upsert(&mut self.extra_mut().histograms, h, |h| h.timestamp_ms)
    }

    /// Adds an exemplar (replacing one with the same timestamp and labels), keeping at most `cap`:
    /// the oldest go first.
    pub fn add_exemplar(&mut self, e: Exemplar, cap: usize) {
        let v = &mut self.extra_mut().exemplars;
        let first = v.partition_point(|x| x.timestamp_ms < e.timestamp_ms);
        let end = first + v[first..].partition_point(|x| x.timestamp_ms == e.timestamp_ms);
        match v[first..end].iter().position(|x| x.labels == e.labels) {
            Some(i) => v[first + i] = e,
            None => v.insert(end, e),
        }
        if v.len() > cap {
            let excess = v.len() - cap;
            v.drain(..excess);
        }
    }
}

/// One series of the registry.
pub(crate) struct Series {
    /// `(name, value)` symbol pairs in name order.
    pub labels: Box<[(u32, u32)]>,
    hash: u64,
    /// The second hash of the label set (see `Head::hashes`).
    hash2: u64,
    pub live: SeriesData,
    pub frozen: Option<Arc<SeriesData>>,
    /// Newest float or histogram timestamp applied (for the in-order check of `admit`).
    pub max_t: i64,
}

/// The registry and the in-memory samples.
pub(crate) struct Head {
    pub syms: Symbols,
    hasher: foldhash::fast::RandomState,
    /// Seeds the second, independent hash of a label set.
    hasher2: foldhash::fast::RandomState,
    /// Label-set hash → the first series id with it, and that series' second hash.
    by_hash: FastMap<u64, (u32, u64)>,
    /// Further ids of a hash shared by several label sets (practically never used).
    collisions: FastMap<u64, Vec<u32>>,
    /// Indexed by series id; `None` once garbage collected.
    pub series: Vec<Option<Box<Series>>>,
    /// name symbol → value symbol → series ids.
    pub postings: FastMap<u32, FastMap<u32, PostingList>>,
    /// Every registered series id.
    pub all: RoaringBitmap,
    pub metadata: FastMap<String, MetricMetadata>,
    /// trace id → series that held an exemplar with it (verified on lookup; rebuilt on persist).
    pub exemplar_index: FastMap<u128, Vec<u32>>,
    /// Float plus histogram samples held (live and frozen).
    pub items: u64,
    /// Items of the frozen data.
    pub frozen_items: u64,
    pub last_applied: crate::wal::WalPos,
    /// Tests force every label set onto one hash to exercise the collision path.
    #[cfg(test)]
    pub force_hash: Option<u64>,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            syms: Symbols::default(),
            hasher: foldhash::fast::RandomState::default(),
            hasher2: foldhash::fast::RandomState::default(),
            by_hash: FastMap::default(),
            collisions: FastMap::default(),
            series: Vec::new(),
            postings: FastMap::default(),
            all: RoaringBitmap::new(),
            metadata: FastMap::default(),
            exemplar_index: FastMap::default(),
            items: 0,
            frozen_items: 0,
            last_applied: crate::wal::WalPos::ZERO,
            #[cfg(test)]
            force_hash: None,
        }
    }
}

impl Head {
    /// The two hashes identifying a label set, over its canonical label bytes (see
    /// `model::packed`). The pair is the series' identity: two independent, randomly seeded
    /// 64-bit hashes, so a look-up needs neither the strings nor an allocation.
    fn hashes(&self, label_bytes: &[u8]) -> (u64, u64) {
        let h2 = self.hasher2.hash_one(label_bytes);
        #[cfg(test)]
        if let Some(h) = self.force_hash {
            return (h, h2);
        }
        (self.hasher.hash_one(label_bytes), h2)
    }

    fn hashes_of(&self, labels: &Labels) -> (u64, u64) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|b| {
            let mut b = b.borrow_mut();
            b.clear();
            pack_labels(labels.len(), labels.iter().map(|l| (l.name.as_str(), l.value.as_str())), &mut b);
            self.hashes(&b)
        })
    }

    fn lookup_hashed(&self, (h1, h2): (u64, u64)) -> Option<u32> {
        // The common case needs only the map entry, not the series.
        let &(first, first_h2) = self.by_hash.get(&h1)?;
        if first_h2 == h2 {
            return Some(first);
        }
        let found = |id: &u32| self.series[*id as usize].as_ref().is_some_and(|s| s.hash2 == h2);
        self.collisions.get(&h1)?.iter().copied().find(found)
    }

    /// The id of `labels`, if registered. Allocates nothing.
    pub fn lookup(&self, labels: &Labels) -> Option<u32> {
        self.lookup_hashed(self.hashes_of(labels))
    }

    /// The id of the series with these canonical label bytes, if registered.
    pub fn lookup_packed(&self, series: &PackedSeries<'_>) -> Option<u32> {
        self.lookup_hashed(self.hashes(series.label_bytes()))
    }

    /// [`Head::lookup_packed`] of many series at once. Hashing every label set first and then
    /// probing the map in a tight loop lets the CPU overlap the probes' cache misses (the map of
    /// 100k series does not stay in the caches), where one look-up between two series' appends
    /// waits for its misses alone; the series' records are touched the same way.
    pub fn lookup_packed_many(&self, series: &[PackedSeries<'_>]) -> Vec<Option<u32>> {
        let hashes: Vec<(u64, u64)> = series.iter().map(|s| self.hashes(s.label_bytes())).collect();
        let ids: Vec<Option<u32>> = hashes.into_iter().map(|h| self.lookup_hashed(h)).collect();
        let mut touch = 0i64;
        for id in ids.iter().flatten() {
            if let Some(Some(s)) = self.series.get(*id as usize) {
                touch = touch.wrapping_add(s.max_t);
            }
        }
        std::hint::black_box(touch);
        ids
    }

    /// The id of `labels`, registering it on first sight; `None` when ids are exhausted.
    pub fn get_or_create(&mut self, labels: &Labels) -> Option<u32> {
        let hashes = self.hashes_of(labels);
        if let Some(id) = self.lookup_hashed(hashes) {
            return Some(id);
        }
        self.create(hashes, labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
    }

    /// [`Head::get_or_create`] for a packed series: the label strings are only read when the
    /// series is new.
    pub fn get_or_create_packed(&mut self, series: &PackedSeries<'_>) -> Option<u32> {
        let hashes = self.hashes(series.label_bytes());
        if let Some(id) = self.lookup_hashed(hashes) {
            return Some(id);
        }
        self.create(hashes, series.label_pairs())
    }

    fn create<'a>(
        &mut self,
        (hash, hash2): (u64, u64),
        labels: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Option<u32> {
        let id = u32::try_from(self.series.len()).ok().filter(|&id| id < u32::MAX)?;
        let pairs: Box<[(u32, u32)]> = labels.map(|(n, v)| (self.syms.intern(n), self.syms.intern(v))).collect();
        for &(n, v) in pairs.iter() {
            self.postings.entry(n).or_default().entry(v).and_modify(|l| l.push(id)).or_insert(PostingList::One(id));
        }
        self.all.insert(id);
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Occupied(_) => self.collisions.entry(hash).or_default().push(id),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((id, hash2));
            }
        }
        self.series.push(Some(Box::new(Series {
            labels: pairs,
            hash,
            hash2,
            live: SeriesData::default(),
            frozen: None,
            max_t: i64::MIN,
        })));
        Some(id)
    }

    /// Removes series that hold no data in memory and whose newest sample is older than
    /// `idle_before` (Prometheus drops such series from its head at head compaction). Their data
    /// lives in blocks; a later write registers them again under a new id.
    pub fn gc(&mut self, idle_before: i64) -> usize {
        let mut removed = 0;
        for id in 0..self.series.len() {
            let idle = self.series[id]
                .as_ref()
                .is_some_and(|s| !s.live.has_anything() && s.frozen.is_none() && s.max_t < idle_before);
            if !idle {
                continue;
            }
            let Some(s) = self.series[id].take() else { continue };
            let id = id as u32;
            self.all.remove(id);
            for &(n, v) in s.labels.iter() {
                if let Some(values) = self.postings.get_mut(&n) {
                    if let Some(list) = values.get_mut(&v) {
                        list.remove(id);
                        if list.len() == 0 {
                            values.remove(&v);
                        }
                    }
                    if values.is_empty() {
                        self.postings.remove(&n);
                    }
                }
            }
            if self.by_hash.get(&s.hash).map(|e| e.0) == Some(id) {
                self.by_hash.remove(&s.hash);
                if let Some(others) = self.collisions.get_mut(&s.hash) {
                    if let Some(next) = others.pop() {
                        let next_h2 = self.series[next as usize].as_ref().map_or(0, |n| n.hash2);
                        self.by_hash.insert(s.hash, (next, next_h2));
                    }
                    if others.is_empty() {
                        self.collisions.remove(&s.hash);
                    }
                }
            } else if let Some(others) = self.collisions.get_mut(&s.hash) {
                others.retain(|&x| x != id);
                if others.is_empty() {
                    self.collisions.remove(&s.hash);
                }
            }
            removed += 1;
        }
        removed
    }

    pub fn labels_of(&self, s: &Series) -> Labels {
        Labels::from_sorted(
            s.labels
                .iter()
                .map(|&(n, v)| Label { name: self.syms.str(n).to_string(), value: self.syms.str(v).to_string() }),
        )
    }

    /// Series ids matching every matcher (Prometheus semantics: a matcher that matches `""` also
    /// matches series without the label).
    pub fn select_ids(&self, matchers: &[Matcher]) -> RoaringBitmap {
        let mut result: Option<RoaringBitmap> = None;
        let mut subtract = Vec::new();
        for m in matchers {
            if m.matches_empty() {
                subtract.push(m);
                continue;
            }
            let ids = self.ids_where(m, true);
            result = Some(match result {
                None => ids,
                Some(r) => r & ids,
            });
            if result.as_ref().is_some_and(RoaringBitmap::is_empty) {
                return RoaringBitmap::new();
            }
        }
        let mut result = result.unwrap_or_else(|| self.all.clone());
        for m in subtract {
            // Series that have the label with a value the matcher rejects.
            result -= self.ids_where(m, false);
        }
        result
    }

    /// Ids of series having label `m.name` with a value for which `m.matches` equals `want`.
    fn ids_where(&self, m: &Matcher, want: bool) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        let Some(values) = self.syms.get(&m.name).and_then(|n| self.postings.get(&n)) else { return out };
        if m.op == MatchOp::Equal && want {
            if let Some(list) = self.syms.get(&m.value).and_then(|v| values.get(&v)) {
                list.or_into(&mut out);
            }
            return out;
        }
        if m.op == MatchOp::NotEqual && !want {
            if let Some(list) = self.syms.get(&m.value).and_then(|v| values.get(&v)) {
                list.or_into(&mut out);
            }
            return out;
        }
        for (&v, list) in values {
            if m.matches(self.syms.str(v)) == want {
                list.or_into(&mut out);
            }
        }
        out
    }

    /// Records that series `id` holds an exemplar of trace `key`.
    pub fn index_exemplar(&mut self, id: u32, key: u128) {
        let ids = self.exemplar_index.entry(key).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Rebuilds the exemplar index from the exemplars held.
    pub fn rebuild_exemplar_index(&mut self) {
        let mut index: FastMap<u128, Vec<u32>> = FastMap::default();
        for (id, s) in self.series.iter().enumerate() {
            let Some(s) = s else { continue };
            let frozen = s.frozen.iter().flat_map(|f| f.exemplars().iter());
            for e in s.live.exemplars().iter().chain(frozen) {
                if let Some(key) = e.labels.get("trace_id").and_then(trace_key) {
                    let ids = index.entry(key).or_default();
                    if ids.last() != Some(&(id as u32)) {
                        ids.push(id as u32);
                    }
                }
            }
        }
        self.exemplar_index = index;
    }
}

/// A trace id in hex (either case) as a number; `None` if it is not 32 hex digits.
pub(crate) fn trace_key(s: &str) -> Option<u128> {
    if s.len() != 32 {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// Inserts `item` into `v`, kept sorted by `key`; an item with an equal key is replaced. True when
/// `v` grew. Appending in time order, the common case, costs no search.
pub(crate) fn upsert<T>(v: &mut Vec<T>, item: T, key: impl Fn(&T) -> i64) -> bool {
    let k = key(&item);
    match v.last() {
        Some(last) if key(last) >= k => match v.binary_search_by_key(&k, &key) {
            Ok(i) => {
                v[i] = item;
                false
            }
            Err(i) => {
                v.insert(i, item);
                true
            }
        },
        _ => {
            v.push(item);
            true
        }
    }
}

pub(crate) fn in_range<T>(v: &[T], start: i64, end: i64, key: impl Fn(&T) -> i64) -> &[T] {
    let lo = v.partition_point(|x| key(x) < start);
    let hi = v.partition_point(|x| key(x) <= end);
    &v[lo..hi.max(lo)]
}

/// Merges two lists sorted and unique by `key`; on equal keys the item of `newer` is kept.
pub(crate) fn merge_newer_wins<T>(older: Vec<T>, newer: Vec<T>, key: impl Fn(&T) -> i64) -> Vec<T> {
    if older.is_empty() {
        return newer;
    }
    if newer.is_empty() {
        return older;
    }
    // Disjoint in time (consecutive blocks, or a block then the head): one append.
    if let (Some(a), Some(b)) = (older.last(), newer.first())
        && key(a) < key(b)
    {
        let mut older = older;
        older.extend(newer);
        return older;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut a = older.into_iter().peekable();
    let mut b = newer.into_iter().peekable();
    loop {
        let ka = a.peek().map(&key);
        let kb = b.peek().map(&key);
        match (ka, kb) {
            (Some(kx), Some(ky)) => {
                if kx < ky {
                    out.extend(a.next());
                } else {
                    if kx == ky {
                        a.next();
                    }
                    out.extend(b.next());
                }
            }
            (Some(_), None) => out.extend(a.by_ref()),
            (None, Some(_)) => out.extend(b.by_ref()),
            (None, None) => break,
        }
    }
    out
}

/// Merges exemplar lists (each sorted by timestamp); an exemplar of `newer` replaces one of
/// `older` with the same timestamp and labels.
pub(crate) fn merge_exemplars(older: Vec<Exemplar>, newer: Vec<Exemplar>) -> Vec<Exemplar> {
    if older.is_empty() {
        return newer;
    }
    let mut all: Vec<(usize, Exemplar)> =
        older.into_iter().map(|e| (0, e)).chain(newer.into_iter().map(|e| (1, e))).collect();
    all.sort_by(|a, b| a.1.timestamp_ms.cmp(&b.1.timestamp_ms).then(a.0.cmp(&b.0)));
    let mut out: Vec<Exemplar> = Vec::with_capacity(all.len());
    for (_, e) in all {
        let first = out.partition_point(|x| x.timestamp_ms < e.timestamp_ms);
        match out[first..].iter().position(|x| x.labels == e.labels) {
            Some(i) => out[first + i] = e,
            None => out.push(e),
        }
    }
    out
}

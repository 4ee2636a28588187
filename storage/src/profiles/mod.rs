//! The profiles engine: deduplicated symbol tables, per-profile sample rows in columns, Parquet
//! parts on disk. Format: `docs/format/profiles.md`.
//!
//! Data layout (all in memory; the files are its durable image):
//! - [`Symbols`]: tables of functions, locations (lines point at function ids) and
//!   stacks (location ids, leaf first; a stack table keyed by a hash of its location ids), plus
//!   the series table (labels + profile type) and the table of per-sample label sets. Ids are
//!   indexes and never change, so a part written once stays valid.
//! - [`Part`]s: columns of sample rows (stack id, value, span id, sample label set) grouped per
//!   profile ([`ProfileRow`]: series, time, duration, period, the profile's total, row range).
//!   The last part is the head, which receives `apply`; `persist` seals it, writes it as
//!   `part-<seq>.parquet` plus the symbols added since the previous persist as
//!   `symbols-<seq>.bin`, then the manifest. Each part also keeps sums of its values per (series,
//!   stack) ([`PartSums`]) that answer merges covering a series' profiles in the part, or most
//!   of them (the sums minus the rows outside the range).
//! - `maintain` applies retention, then merges one run of small persisted parts into one
//!   (compaction: same profiles, same order, a new file listed where the run stood).
//!
//! Invariants:
//! - `MANIFEST.json` is written atomically (temporary file, fsync, rename, directory fsync) after
//!   every file it names, so a crash leaves either the old or the new manifest, both complete.
//! - The manifest's `wal_pos` is the last WAL position whose batch is inside the listed parts;
//!   `apply` skips positions at or before it (never [`WalPos::ZERO`], the memory-only position).
//! - Retention deletes parts. Symbol ids never change: once retention dropped enough rows, a
//!   `persist` collects the symbols no part uses any more (they become empty placeholders whose ids
//!   are never reused), writes a symbols snapshot and deletes the older symbols files.
//! - A part's `sums` (per series and stack) equal the sums of its rows, so a merge may read either.

mod persist;

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::FastMap;
use crate::error::OpenError;
use crate::model::{
    Function, Label, Labels, Location, Mapping, Profile, ProfileSample, ProfileType, ProfilesBatch, SpanId, TraceId,
};
use crate::read::{
    LimitExceeded, Matcher, MergedStacks, ProfileSelect, ProfileSeries, ProfileTotals, SpanSamples, matches_all,
};
use crate::wal::WalPos;

/// Symbols are collected once the rows dropped by retention since the last collection are at
/// least this fraction (numerator, denominator) of the rows left: a collection walks every symbol
/// and rewrites the symbols file, so it waits until there is enough to gain.
pub(crate) const GC_FRACTION: (u64, u64) = (1, 8);

/// Options of the profiles engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfilesOptions {
    /// Profiles older than this are deleted by `maintain` (whole parts); zero keeps everything.
    pub retention: Duration,
    /// Parts are deleted oldest first while the files exceed this many bytes; zero: no limit.
    pub max_bytes: u64,
}

impl Default for ProfilesOptions {
    fn default() -> Self {
        ProfilesOptions { retention: Duration::from_secs(7 * 24 * 3600), max_bytes: 0 }
    }
}

/// Append-only symbol and series tables.
#[derive(Default)]
pub(crate) struct Symbols {
    /// Mappings; a location's `mapping` is an id here plus one (0: none).
    pub mappings: Vec<Mapping>,
    mapping_ids: FastMap<Mapping, u32>,
    pub functions: Vec<Function>,
    function_ids: FastMap<Function, u32>,
    pub locations: Vec<Location>,
    location_ids: FastMap<Location, u32>,
    /// Stack `i` is `stack_locations[stack_offsets[i]..stack_offsets[i + 1]]`.
    pub stack_offsets: Vec<u32>,
    pub stack_locations: Vec<u32>,
    /// Hash of a stack's location ids → stack ids with that hash.
    stack_ids: FastMap<u64, Vec<u32>>,
    pub series: Vec<ProfileSeries>,
    series_ids: FastMap<(Labels, ProfileType), u32>,
    /// Per-sample label sets; id 0 is the empty set.
    pub label_sets: Vec<Vec<Label>>,
    label_set_ids: FastMap<Vec<Label>, u32>,
    hasher: foldhash::fast::RandomState,
}

/// Lengths of the symbol tables: what a symbols file covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SymbolCounts {
    pub functions: u32,
    pub locations: u32,
    pub stacks: u32,
    pub series: u32,
    pub label_sets: u32,
    pub mappings: u32,
}

impl Symbols {
    fn new() -> Self {
        let mut s = Symbols { stack_offsets: vec![0], ..Symbols::default() };
        s.label_sets.push(Vec::new());
        s.label_set_ids.insert(Vec::new(), 0);
        s
    }

    pub(crate) fn counts(&self) -> SymbolCounts {
        SymbolCounts {
            functions: self.functions.len() as u32,
            locations: self.locations.len() as u32,
            stacks: (self.stack_offsets.len() - 1) as u32,
            series: self.series.len() as u32,
            label_sets: self.label_sets.len() as u32,
            mappings: self.mappings.len() as u32,
        }
    }

    pub(crate) fn mapping(&mut self, m: &Mapping) -> u32 {
        if let Some(id) = self.mapping_ids.get(m) {
            return *id;
        }
        let id = self.mappings.len() as u32;
        self.mappings.push(m.clone());
        self.mapping_ids.insert(m.clone(), id);
        id
    }

    pub(crate) fn function(&mut self, f: &Function) -> u32 {
        if let Some(id) = self.function_ids.get(f) {
            return *id;
        }
        let id = self.functions.len() as u32;
        self.functions.push(f.clone());
        self.function_ids.insert(f.clone(), id);
        id
    }

    pub(crate) fn location(&mut self, l: Location) -> u32 {
        if let Some(id) = self.location_ids.get(&l) {
            return *id;
        }
        let id = self.locations.len() as u32;
        self.locations.push(l.clone());
        self.location_ids.insert(l, id);
        id
    }

    pub(crate) fn stack(&mut self, locs: &[u32]) -> u32 {
        let hash = self.hasher.hash_one(locs);
        if let Some(ids) = self.stack_ids.get(&hash) {
            for &id in ids {
                if self.stack_of(id) == locs {
                    return id;
                }
            }
        }
        let id = (self.stack_offsets.len() - 1) as u32;
        self.stack_locations.extend_from_slice(locs);
        self.stack_offsets.push(self.stack_locations.len() as u32);
        self.stack_ids.entry(hash).or_default().push(id);
        id
    }

    pub(crate) fn stack_of(&self, id: u32) -> &[u32] {
        let (a, b) = (self.stack_offsets[id as usize] as usize, self.stack_offsets[id as usize + 1] as usize);
        &self.stack_locations[a..b]
    }

    pub(crate) fn series_id(&mut self, labels: &Labels, ty: &ProfileType) -> u32 {
        let key = (labels.clone(), ty.clone());
        if let Some(id) = self.series_ids.get(&key) {
            return *id;
        }
        let id = self.series.len() as u32;
        self.series.push(ProfileSeries { labels: full_labels(labels, ty), profile_type: ty.clone() });
        self.series_ids.insert(key, id);
        id
    }

    pub(crate) fn label_set(&mut self, labels: &[Label]) -> u32 {
        if let Some(id) = self.label_set_ids.get(labels) {
            return *id;
        }
        let id = self.label_sets.len() as u32;
        self.label_sets.push(labels.to_vec());
        self.label_set_ids.insert(labels.to_vec(), id);
        id
    }

    /// Drops every stack and label set outside `live`, then every location, function and mapping
    /// no live stack reaches. Ids stay what they are: a dropped entry leaves an empty placeholder
    /// (its strings and frames freed, its id never handed out again), so the parts that remain
    /// keep reading the same symbols. Returns how many entries were dropped.
    pub(crate) fn collect(&mut self, live: &UsedSymbols) -> usize {
        let n_stacks = self.stack_offsets.len() - 1;
        let live_stack = |i: usize| live.stacks.contains(i as u32);
        // Stacks: keep the frames of live ones only.
        let mut offsets = Vec::with_capacity(self.stack_offsets.len());
        let mut locs = Vec::new();
        offsets.push(0u32);
        let mut loc_live = vec![false; self.locations.len()];
        let mut dropped = 0;
        for i in 0..n_stacks {
            let frames = self.stack_of(i as u32);
            if live_stack(i) {
                for &l in frames {
                    loc_live[l as usize] = true;
                }
                locs.extend_from_slice(frames);
            }
            offsets.push(locs.len() as u32);
        }
        self.stack_offsets = offsets;
        self.stack_locations = locs;
        self.stack_ids.retain(|_, ids| {
            let before = ids.len();
            ids.retain(|id| live_stack(*id as usize));
            dropped += before - ids.len();
            !ids.is_empty()
        });
        // Locations, then the functions and mappings they name.
        let mut fn_live = vec![false; self.functions.len()];
        let mut map_live = vec![false; self.mappings.len()];
        for (i, l) in self.locations.iter_mut().enumerate() {
            if loc_live[i] {
                for (f, _) in &l.lines {
                    fn_live[*f as usize] = true;
                }
                if l.mapping != 0 {
                    map_live[l.mapping as usize - 1] = true;
                }
            } else if *l != Location::default() {
                *l = Location::default();
                dropped += 1;
            }
        }
        self.location_ids.retain(|_, id| loc_live[*id as usize]);
        for (i, f) in self.functions.iter_mut().enumerate() {
            if !fn_live[i] && *f != Function::default() {
                *f = Function::default();
                dropped += 1;
            }
        }
        self.function_ids.retain(|_, id| fn_live[*id as usize]);
        for (i, m) in self.mappings.iter_mut().enumerate() {
            if !map_live[i] && *m != Mapping::default() {
                *m = Mapping::default();
                dropped += 1;
            }
        }
        self.mapping_ids.retain(|_, id| map_live[*id as usize]);
        // Label sets (0, the empty set, always stays).
        for (i, set) in self.label_sets.iter_mut().enumerate().skip(1) {
            if !live.label_sets.contains(i as u32) && !set.is_empty() {
                *set = Vec::new();
                dropped += 1;
            }
        }
        self.label_set_ids.retain(|_, id| *id == 0 || live.label_sets.contains(*id));
        self.stack_ids.shrink_to_fit();
        self.location_ids.shrink_to_fit();
        self.function_ids.shrink_to_fit();
        self.mapping_ids.shrink_to_fit();
        self.label_set_ids.shrink_to_fit();
        dropped
    }

    /// Entries in the tables that are not placeholders of collected ones (mappings, functions,
    /// locations, stacks, label sets).
    #[cfg_attr(not(test), allow(dead_code, reason = "checked by tests"))]
    pub(crate) fn live_counts(&self) -> [usize; 5] {
        let stacks: usize = self.stack_ids.values().map(Vec::len).sum();
        [self.mapping_ids.len(), self.function_ids.len(), self.location_ids.len(), stacks, self.label_set_ids.len()]
    }

    /// The series labels without the synthetic ones (what a `Profile` carries).
    fn plain_labels(&self, series: u32) -> Labels {
        self.series[series as usize].plain_labels()
    }
}

/// A series' labels with the synthetic profile-type labels added.
fn full_labels(labels: &Labels, ty: &ProfileType) -> Labels {
    let mut l = labels.clone();
    l.set("__profile_type__", ty.id());
    l.set("__type__", ty.sample_type.as_str());
    l.set("__unit__", ty.sample_unit.as_str());
    l.set("__period_type__", ty.period_type.as_str());
    l.set("__period_unit__", ty.period_unit.as_str());
    if l.get("__name__").is_none() {
        l.set("__name__", ty.name.as_str());
    }
    l
}

/// One stored profile: its series, times and where its sample rows are in the part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProfileRow {
    pub series: u32,
    pub time_ns: i64,
    pub duration_ns: i64,
    pub period: i64,
    /// Sum of the sample values.
    pub total: i64,
    /// First sample row.
    pub first: u32,
    /// Sample rows.
    pub len: u32,
}

/// Sample-row columns (one entry per row).
#[derive(Default)]
pub(crate) struct Columns {
    pub stacks: Vec<u32>,
    pub values: Vec<i64>,
    /// Span id as a big-endian u64, 0 for none.
    pub spans: Vec<u64>,
    pub label_sets: Vec<u32>,
}

impl Columns {
    /// Calls `f(stack, value)` for every row in `ranges` (`[start, end)`, clamped to the rows).
    fn each_row(&self, ranges: &[(u32, u32)], mut f: impl FnMut(u32, i64)) {
        for &(a, b) in ranges {
            let (a, b) = (a as usize, (b as usize).min(self.stacks.len()));
            for (stack, value) in self.stacks[a.min(b)..b].iter().zip(&self.values[a.min(b)..b]) {
                f(*stack, *value);
            }
        }
    }
}

/// A group of profiles in sample rows. Rows of a profile are contiguous.
///
/// Until the part is persisted its rows are in `cols`; once its file is listed by the manifest
/// `cols` is emptied and rows are read from the Parquet file (`file`), so memory holds only the
/// per-profile rows and the span index, not the samples.
#[derive(Default)]
pub(crate) struct Part {
    pub seq: u64,
    pub profiles: Vec<ProfileRow>,
    /// Sample rows in the part.
    pub rows: u32,
    /// The rows, while not persisted.
    pub cols: Columns,
    /// The Parquet file, once persisted.
    pub file: Option<persist::PartFile>,
    /// Span id → sample rows.
    pub span_index: FastMap<u64, Vec<u32>>,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    /// Size of the part's file once written.
    pub file_bytes: u64,
    /// No more appends: `persist` is writing it (or has).
    pub sealed: bool,
    /// In a file listed by the manifest.
    pub persisted: bool,
    /// Sums of the part's sample values per (series, stack): a merge over a series whose
    /// profiles in this part all fall inside the query's range reads these instead of the rows
    /// (most inside: these minus the rows outside). `None` when they would not be much smaller
    /// than the rows (see [`PartSums::worth_keeping`]).
    pub sums: Option<PartSums>,
    /// Stack ids and label set ids the part's rows use, once its rows are only in the file
    /// (symbol collection needs them without reading every part).
    pub used: Option<UsedSymbols>,
}

/// Stack and label set ids used by a part's rows.
#[derive(Default)]
pub(crate) struct UsedSymbols {
    pub stacks: roaring::RoaringBitmap,
    pub label_sets: roaring::RoaringBitmap,
}

/// The set of `ids`, cheap for long runs of one id (label set ids are mostly 0).
pub(crate) fn id_set(ids: impl Iterator<Item = u32>) -> roaring::RoaringBitmap {
    let mut set = roaring::RoaringBitmap::new();
    let mut last = None;
    for id in ids {
        if last != Some(id) {
            set.insert(id);
            last = Some(id);
        }
    }
    set
}

/// Sums of sample values by (series, stack) over the rows of a part, with the time span of each
/// series' profiles in the part. Built while profiles are appended (and when a persisted part is
/// loaded), packed into sorted vectors once the part is sealed. Values add with wrapping
/// arithmetic, like the merge, so a sum equals the rows' sum in any order.
#[derive(Default)]
pub(crate) struct PartSums {
    series: FastMap<u32, SeriesSums>,
    /// (series, stack) entries over all series.
    entries: usize,
}

/// One series' sums in a part.
pub(crate) struct SeriesSums {
    /// Time span of the series' profiles in the part.
    pub min_ns: i64,
    pub max_ns: i64,
    /// While appending: stack → sum.
    open: FastMap<u32, i64>,
    /// Once packed: `(stack, sum)` by stack id.
    packed: Vec<(u32, i64)>,
}

impl PartSums {
    /// Parts whose sums have more than this fraction of the rows' count drop them: reading the
    /// rows costs about the same, and the sums would use memory for nothing.
    const MAX_FRACTION: (usize, usize) = (1, 4);

    /// The sums of `series`, widened to a profile at `time_ns`.
    fn series_at(&mut self, series: u32, time_ns: i64) -> &mut SeriesSums {
        let s = self.series.entry(series).or_insert_with(|| SeriesSums {
            min_ns: time_ns,
            max_ns: time_ns,
            open: FastMap::default(),
            packed: Vec::new(),
        });
        s.min_ns = s.min_ns.min(time_ns);
        s.max_ns = s.max_ns.max(time_ns);
        s
    }

    /// Whether sums over `rows` sample rows are small enough to keep.
    pub(crate) fn worth_keeping(&self, rows: u32) -> bool {
        let (num, den) = Self::MAX_FRACTION;
        self.entries * den <= rows as usize * num
    }

    /// Moves the sums into sorted vectors (no more appends).
    pub(crate) fn pack(&mut self) {
        for s in self.series.values_mut() {
            let mut v: Vec<(u32, i64)> = std::mem::take(&mut s.open).into_iter().collect();
            v.sort_unstable();
            s.packed.extend(v);
            s.packed.shrink_to_fit();
        }
    }
}

impl SeriesSums {
    /// Adds a sample; returns whether its stack is new to the series.
    fn add(&mut self, stack: u32, value: i64) -> bool {
        let mut new = false;
        let e = self.open.entry(stack).or_insert_with(|| {
            new = true;
            0
        });
        *e = e.wrapping_add(value);
        new
    }

    fn iter(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.open.iter().map(|(k, v)| (*k, *v)).chain(self.packed.iter().copied())
    }
}

/// Which optional columns a row visit needs (stack and value are always read).
#[derive(Clone, Copy, Default)]
pub(crate) struct Need {
    pub spans: bool,
    pub label_sets: bool,
}

/// One sample row as visited: `(row, stack, value, span, label set)`; unread columns are 0.
pub(crate) type RowVisit = (u32, u32, i64, u64, u32);

impl Part {
    fn new(seq: u64) -> Part {
        Part { seq, min_time_ns: i64::MAX, max_time_ns: i64::MIN, sums: Some(PartSums::default()), ..Part::default() }
    }

    /// Once the part is sealed and its rows go to the file: records the symbols it uses (stacks
    /// from the sums' keys, which name every stack of the part; `label_sets` as given), then packs
    /// the sums or drops them when they would not pay (see [`PartSums`]).
    pub(crate) fn finish_sums(&mut self, label_sets: roaring::RoaringBitmap) {
        let mut stacks: Vec<u32> = self
            .sums
            .iter()
            .flat_map(|s| s.series.values())
            .flat_map(|s| s.open.keys().copied().chain(s.packed.iter().map(|e| e.0)))
            .collect();
        stacks.sort_unstable();
        stacks.dedup();
        let stacks = roaring::RoaringBitmap::from_sorted_iter(stacks).unwrap_or_default();
        self.used = self.sums.is_some().then_some(UsedSymbols { stacks, label_sets });
        match &mut self.sums {
            Some(s) if s.worth_keeping(self.rows) => s.pack(),
            _ => self.sums = None,
        }
    }

    /// Appends a profile; `samples` are `(stack, value, span, label set)`. With `keep` false only
    /// the profile row, the span index and the sums are built (a persisted part loaded from its
    /// file).
    pub(crate) fn push_profile(
        &mut self,
        mut row: ProfileRow,
        samples: impl Iterator<Item = (u32, i64, u64, u32)>,
        keep: bool,
    ) {
        row.first = self.rows;
        let mut total = 0i64;
        let mut new_sums = 0;
        let mut sums = self.sums.as_mut().map(|s| s.series_at(row.series, row.time_ns));
        for (stack, value, span, labels) in samples {
            if let Some(s) = &mut sums {
                new_sums += usize::from(s.add(stack, value));
            }
            if span != 0 {
                self.span_index.entry(span).or_default().push(self.rows);
            }
            if keep {
                self.cols.stacks.push(stack);
                self.cols.values.push(value);
                self.cols.spans.push(span);
                self.cols.label_sets.push(labels);
            }
            self.rows += 1;
            total = total.saturating_add(value);
        }
        if let Some(s) = &mut self.sums {
            s.entries += new_sums;
        }
        row.len = self.rows - row.first;
        row.total = total;
        self.min_time_ns = self.min_time_ns.min(row.time_ns);
        self.max_time_ns = self.max_time_ns.max(row.time_ns);
        self.profiles.push(row);
    }

    fn overlaps(&self, start_ns: i64, end_ns: i64) -> bool {
        !self.profiles.is_empty() && self.min_time_ns <= end_ns && self.max_time_ns >= start_ns
    }

    /// The profile holding sample row `row`.
    fn profile_of(&self, row: u32) -> &ProfileRow {
        let i = self.profiles.partition_point(|p| p.first + p.len <= row);
        &self.profiles[i]
    }

    /// Calls `f` for every row in `ranges` (sorted, disjoint, `[start, end)`), in row order, from
    /// memory or from the part's file. Rows whose ids fall outside `sym` make the part unreadable
    /// (an error, nothing visited after it).
    pub(crate) fn visit(
        &self,
        sym: &Symbols,
        ranges: &[(u32, u32)],
        need: Need,
        f: &mut dyn FnMut(RowVisit),
    ) -> std::io::Result<()> {
        let (n_stacks, n_sets) = ((sym.stack_offsets.len() - 1) as u32, sym.label_sets.len() as u32);
        match &self.file {
            None => {
                let c = &self.cols;
                for &(a, b) in ranges {
                    for r in a..b.min(c.stacks.len() as u32) {
                        let i = r as usize;
                        f((r, c.stacks[i], c.values[i], c.spans[i], c.label_sets[i]));
                    }
                }
                Ok(())
            }
            Some(file) => file.read_rows(ranges, need, &mut |v: RowVisit| {
                if v.1 >= n_stacks || v.4 >= n_sets {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("part {}: row {} refers to an unknown stack or label set", self.seq, v.0),
                    ));
                }
                f(v);
                Ok(())
            }),
        }
    }
}

/// Sums of sample values by stack id: dense (a vector indexed by stack id) while the stack table
/// is small enough for one allocation per query, a hash map beyond.
enum StackSums {
    Dense { sums: Vec<i64>, touched: Vec<u32> },
    Sparse(FastMap<u32, i64>),
}

impl StackSums {
    const DENSE_MAX: usize = 1 << 22;

    fn new(stacks: usize) -> StackSums {
        if stacks <= Self::DENSE_MAX {
            StackSums::Dense { sums: vec![0; stacks], touched: Vec::new() }
        } else {
            StackSums::Sparse(FastMap::default())
        }
    }

    fn add(&mut self, stack: u32, value: i64) {
        match self {
            StackSums::Dense { sums, touched } => {
                let i = stack as usize;
                if i >= sums.len() {
                    sums.resize(i + 1, 0);
                }
                if sums[i] == 0 {
                    // A sum back at zero that moves again is pushed twice: deduplicated at the end.
                    touched.push(stack);
                }
                sums[i] = sums[i].wrapping_add(value);
            }
            StackSums::Sparse(map) => {
                let v = map.entry(stack).or_default();
                *v = v.wrapping_add(value);
            }
        }
    }

    /// `(stack, sum)` with a non-zero sum, by stack id.
    fn into_sorted(self) -> Vec<(u32, i64)> {
        let mut out: Vec<(u32, i64)> = match self {
            StackSums::Dense { sums, mut touched } => {
                touched.sort_unstable();
                touched.dedup();
                touched.into_iter().map(|s| (s, sums[s as usize])).collect()
            }
            StackSums::Sparse(map) => {
                let mut v: Vec<(u32, i64)> = map.into_iter().collect();
                v.sort_unstable();
                v
            }
        };
        out.retain(|(_, v)| *v != 0);
        out
    }
}

/// How a merge reads one series from one part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SeriesRead {
    /// The sample rows inside the range.
    Rows,
    /// The part's sums: every profile of the series in the part is inside the range.
    Sums,
    /// The part's sums minus the rows outside the range (fewer than those inside).
    SumsMinusOutside,
}

/// Adds `[a, b)` to sorted ranges, joining it to the last one when adjacent.
fn push_range(ranges: &mut Vec<(u32, u32)>, a: u32, b: u32) {
    match ranges.last_mut() {
        Some(last) if last.1 == a => last.1 = b,
        _ => ranges.push((a, b)),
    }
}

pub(crate) struct Inner {
    pub symbols: Symbols,
    /// Sealed parts in seq order, then the head (last).
    pub parts: Vec<Part>,
    pub next_seq: u64,
    /// Last position applied.
    pub applied: WalPos,
    /// Last position inside persisted parts.
    pub persisted: WalPos,
    /// Symbol counts covered by the symbols files written so far.
    pub symbols_persisted: SymbolCounts,
    /// Symbols files written, by seq.
    pub symbol_files: Vec<u64>,
    /// trace id → span ids seen with it in sample labels.
    pub trace_spans: FastMap<TraceId, Vec<SpanId>>,
    pub samples: u64,
    /// Sample rows retention dropped since the last symbol collection; once they reach
    /// [`GC_FRACTION`] of the rows left, the next `persist` collects unreferenced symbols.
    pub dropped_rows: u64,
    /// Symbols were collected: the next `persist` writes a full symbols snapshot (a delta cannot
    /// express removed entries) and then drops the older symbols files.
    pub snapshot_needed: bool,
}

impl Inner {
    fn head(&mut self) -> &mut Part {
        if self.parts.last().is_none_or(|p| p.sealed) {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.parts.push(Part::new(seq));
        }
        self.parts.last_mut().expect("just pushed")
    }

    /// Whether retention dropped enough rows for a symbol collection to pay.
    pub(crate) fn gc_due(&self) -> bool {
        let (num, den) = GC_FRACTION;
        self.dropped_rows > 0 && self.dropped_rows * den >= self.samples * num
    }

    /// Symbols used by the parts (from their columns while not persisted); `None` when a part's
    /// are unknown.
    pub(crate) fn used_symbols(&self) -> Option<UsedSymbols> {
        let mut live = UsedSymbols::default();
        for p in &self.parts {
            match (&p.used, &p.file) {
                (Some(u), _) => {
                    live.stacks |= &u.stacks;
                    live.label_sets |= &u.label_sets;
                }
                (None, None) => {
                    live.stacks.extend(p.cols.stacks.iter().copied());
                    live.label_sets.extend(p.cols.label_sets.iter().copied());
                }
                (None, Some(_)) => return None,
            }
        }
        Some(live)
    }

    fn matching_series(&self, matchers: &[Matcher]) -> Vec<bool> {
        self.symbols.series.iter().map(|s| matches_all(&s.labels, matchers)).collect()
    }
}

/// The profiles store.
pub(crate) struct ProfilesHead {
    dir: Option<PathBuf>,
    opts: ProfilesOptions,
    /// Readers share the lock; `apply` (the WAL leader) and `persist` take it for writing briefly.
    inner: RwLock<Inner>,
    /// Serialises `persist` and `maintain` (file writers).
    files: Mutex<()>,
    /// Parts that could not be read during a query (skipped; see [`ProfilesHead::read_errors`]).
    read_errors: AtomicU64,
    /// Merges read a part's sums where they cover the query (tests turn it off to compare).
    use_sums: std::sync::atomic::AtomicBool,
    /// Sample rows merges have read (added or subtracted), since open.
    rows_read: AtomicU64,
}

impl ProfilesHead {
    pub fn open(dir: Option<&Path>, opts: &ProfilesOptions) -> Result<Self, OpenError> {
        let mut inner = Inner {
            symbols: Symbols::new(),
            parts: Vec::new(),
            next_seq: 1,
            applied: WalPos::ZERO,
            persisted: WalPos::ZERO,
            symbols_persisted: SymbolCounts { label_sets: 1, ..SymbolCounts::default() },
            symbol_files: Vec::new(),
            trace_spans: FastMap::default(),
            samples: 0,
            dropped_rows: 0,
            snapshot_needed: false,
        };
        if let Some(dir) = dir {
            persist::load(dir, &mut inner)?;
        }
        Ok(ProfilesHead {
            dir: dir.map(Path::to_path_buf),
            opts: opts.clone(),
            inner: RwLock::new(inner),
            files: Mutex::new(()),
            read_errors: AtomicU64::new(0),
            use_sums: std::sync::atomic::AtomicBool::new(true),
            rows_read: AtomicU64::new(0),
        })
    }

    /// Seals the head and writes what is not on disk yet; `Ok(false)` when memory-only.
    pub fn persist(&self) -> std::io::Result<bool> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let _files = self.files.lock();
        persist::persist(dir, &self.inner)?;
        Ok(true)
    }

    pub fn maintain(&self, now_ms: i64) -> std::io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let _files = self.files.lock();
        let cutoff = if self.opts.retention.is_zero() {
            i64::MIN
        } else {
            now_ms.saturating_mul(1_000_000).saturating_sub(self.opts.retention.as_nanos() as i64)
        };
        persist::retain(dir, &self.inner, cutoff, self.opts.max_bytes)?;
        // One merge of small parts per call: the shell calls every 30 s.
        persist::compact(dir, &self.inner)?;
        Ok(())
    }

    pub fn apply(&self, pos: WalPos, batch: ProfilesBatch) {
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        if pos != WalPos::ZERO && pos <= inner.persisted {
            return;
        }
        inner.applied = inner.applied.max(pos);
        let mut last = LastTables::default();
        for profile in batch.profiles {
            ingest_profile(inner, profile, &mut last);
        }
    }

    pub fn items(&self) -> u64 {
        self.inner.read().samples
    }

    /// Persisted parts a query could not read (an I/O error or a corrupted file), since open.
    /// Queries skip such a part and answer from the others.
    #[cfg_attr(not(test), allow(dead_code, reason = "checked by tests; not yet exported as a metric"))]
    pub fn read_errors(&self) -> u64 {
        self.read_errors.load(Ordering::Relaxed)
    }

    /// Sample rows merges have read since open (tests check which way a merge went).
    #[cfg_attr(not(test), allow(dead_code, reason = "checked by tests"))]
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(Ordering::Relaxed)
    }

    /// Subtracts the values of the rows in `ranges` from `sums`; false (and `sums` untouched)
    /// when the part's file cannot be read.
    fn subtract(&self, sym: &Symbols, part: &Part, ranges: &[(u32, u32)], sums: &mut StackSums) -> bool {
        self.rows_read.fetch_add(ranges.iter().map(|(a, b)| u64::from(b - a)).sum(), Ordering::Relaxed);
        if part.file.is_none() {
            part.cols.each_row(ranges, |stack, value| sums.add(stack, value.wrapping_neg()));
            return true;
        }
        // From the file: all or nothing, so a read that fails halfway leaves no partial subtraction.
        let mut got: Vec<(u32, i64)> = Vec::new();
        if part.visit(sym, ranges, Need::default(), &mut |(_, stack, value, _, _)| got.push((stack, value))).is_err() {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        for (stack, value) in got {
            sums.add(stack, value.wrapping_neg());
        }
        true
    }

    /// Visits rows of `part`; a part that cannot be read is counted and skipped.
    fn visit(&self, sym: &Symbols, part: &Part, ranges: &[(u32, u32)], need: Need, f: &mut dyn FnMut(RowVisit)) {
        if ranges.is_empty() {
            return;
        }
        if part.visit(sym, ranges, need, f).is_err() {
            self.read_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The symbol tables of the previous profile of a batch and the ids they resolved to: the
/// profiles one pprof becomes (one per sample type) carry the same tables and usually the same
/// stacks, so the next profile reuses the ids after comparing the tables (cheaper than looking
/// every entry up again).
#[derive(Default)]
struct LastTables {
    functions: Vec<Function>,
    locations: Vec<crate::model::Location>,
    mappings: Vec<Mapping>,
    /// Symbol-table location ids of `locations`.
    loc_ids: Vec<u32>,
    /// Per sample of the previous profile: its location indexes and its stack id.
    stacks: Vec<(Vec<u32>, u32)>,
}

fn ingest_profile(inner: &mut Inner, mut p: Profile, last: &mut LastTables) {
    if p.samples.is_empty() {
        return; // nothing to query; not representable in sample rows
    }
    let sym = &mut inner.symbols;
    let same_tables = p.functions == last.functions && p.mappings == last.mappings && p.locations == last.locations;
    if !same_tables {
        let fn_ids: Vec<u32> = p.functions.iter().map(|f| sym.function(f)).collect();
        let map_ids: Vec<u32> = p.mappings.iter().map(|m| sym.mapping(m) + 1).collect();
        let mut loc_ids = Vec::with_capacity(p.locations.len());
        for l in &p.locations {
            let lines = l.lines.iter().map(|(f, line)| (fn_ids.get(*f as usize).copied().unwrap_or(u32::MAX), *line));
            let lines: Vec<(u32, i64)> = lines.filter(|(f, _)| *f != u32::MAX).collect();
            let mapping = l.mapping.checked_sub(1).and_then(|m| map_ids.get(m as usize).copied()).unwrap_or(0);
            loc_ids.push(sym.location(Location { address: l.address, lines, mapping }));
        }
        *last = LastTables {
            functions: std::mem::take(&mut p.functions),
            locations: std::mem::take(&mut p.locations),
            mappings: std::mem::take(&mut p.mappings),
            loc_ids,
            stacks: Vec::new(),
        };
    }
    let loc_ids = &last.loc_ids;
    let series = sym.series_id(&p.labels, &p.profile_type);
    let mut rows = Vec::with_capacity(p.samples.len());
    let mut stack = Vec::new();
    let mut stacks = Vec::with_capacity(p.samples.len());
    for (i, s) in p.samples.iter_mut().enumerate() {
        let stack_id = match last.stacks.get(i) {
            Some((locs, id)) if same_tables && *locs == s.locations => *id,
            _ => {
                stack.clear();
                stack.extend(s.locations.iter().filter_map(|l| loc_ids.get(*l as usize).copied()));
                sym.stack(&stack)
            }
        };
        stacks.push((std::mem::take(&mut s.locations), stack_id));
        let span = s.span_id.map_or(0, |s| u64::from_be_bytes(s.0));
        let label_set = if s.labels.is_empty() { 0 } else { sym.label_set(&s.labels) };
        if let (Some(span_id), Some(trace)) =
            (s.span_id, s.labels.iter().find(|l| l.name == "trace_id").and_then(|l| TraceId::from_hex(&l.value)))
        {
            let spans = inner.trace_spans.entry(trace).or_default();
            if !spans.contains(&span_id) {
                spans.push(span_id);
            }
        }
        rows.push((stack_id, s.value, span, label_set));
    }
    last.stacks = stacks;
    inner.samples += rows.len() as u64;
    let row = ProfileRow {
        series,
        time_ns: p.time_ns,
        duration_ns: p.duration_ns,
        period: p.period,
        total: 0,
        first: 0,
        len: 0,
    };
    inner.head().push_profile(row, rows.into_iter(), true);
}

/// Every selected profile row with its part, in part order.
fn for_each_profile<'a>(
    inner: &'a Inner,
    matchers: &[Matcher],
    start_ns: i64,
    end_ns: i64,
    mut f: impl FnMut(&'a Part, &'a ProfileRow),
) {
    let wanted = inner.matching_series(matchers);
    for part in inner.parts.iter().filter(|p| p.overlaps(start_ns, end_ns)) {
        for row in &part.profiles {
            if row.time_ns >= start_ns && row.time_ns <= end_ns && wanted[row.series as usize] {
                f(part, row);
            }
        }
    }
}

fn span_key(s: &SpanId) -> u64 {
    u64::from_be_bytes(s.0)
}

impl crate::read::ProfilesReader for ProfilesHead {
    fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile> {
        let inner = self.inner.read();
        let mut out: Vec<Profile> = Vec::new();
        let need = Need { spans: true, label_sets: true };
        for part in inner.parts.iter().filter(|p| p.overlaps(start_ns, end_ns)) {
            let rows: Vec<&ProfileRow> =
                part.profiles.iter().filter(|r| r.time_ns >= start_ns && r.time_ns <= end_ns).collect();
            let mut ranges = Vec::new();
            for r in &rows {
                push_range(&mut ranges, r.first, r.first + r.len);
            }
            let mut got: Vec<RowVisit> = Vec::new();
            self.visit(&inner.symbols, part, &ranges, need, &mut |v| got.push(v));
            for row in rows {
                let a = got.partition_point(|v| v.0 < row.first);
                let b = got.partition_point(|v| v.0 < row.first + row.len);
                if b - a == row.len as usize {
                    out.push(rebuild_profile(&inner.symbols, row, &got[a..b]));
                }
            }
        }
        // Stable: ties keep part (arrival) order.
        out.sort_by_key(|p| p.time_ns);
        out
    }

    fn profile_types(&self, start_ns: i64, end_ns: i64) -> Vec<ProfileType> {
        let inner = self.inner.read();
        let mut seen = vec![false; inner.symbols.series.len()];
        for_each_profile(&inner, &[], start_ns, end_ns, |_, row| seen[row.series as usize] = true);
        let mut types: Vec<ProfileType> =
            inner.symbols.series.iter().zip(seen).filter(|(_, s)| *s).map(|(s, _)| s.profile_type.clone()).collect();
        types.sort_by_key(|t| t.id());
        types.dedup();
        types
    }

    fn profile_series(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<ProfileSeries> {
        let inner = self.inner.read();
        let mut seen = vec![false; inner.symbols.series.len()];
        for_each_profile(&inner, matchers, start_ns, end_ns, |_, row| seen[row.series as usize] = true);
        let mut out: Vec<ProfileSeries> =
            inner.symbols.series.iter().zip(seen).filter(|(_, s)| *s).map(|(s, _)| s.clone()).collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    fn merge_stacks(&self, select: &ProfileSelect<'_>) -> Result<MergedStacks, LimitExceeded> {
        let inner = self.inner.read();
        let sym = &inner.symbols;
        let mut sums = StackSums::new(sym.stack_offsets.len() - 1);
        let mut profiles = 0u64;
        let mut samples = 0u64;
        let limit = LimitExceeded { limit: "max_samples", max: select.max_samples };
        let wanted = inner.matching_series(select.matchers);
        let in_range = |row: &ProfileRow| {
            row.time_ns >= select.start_ns && row.time_ns <= select.end_ns && wanted[row.series as usize]
        };
        let mut ranges = Vec::new();
        // Rows of series read as "sums minus the rows outside the range", to subtract.
        let mut outside = Vec::new();
        // How each series is read from the current part (indexed by series id), and its rows
        // inside and outside the range there.
        let mut how = vec![SeriesRead::Rows; sym.series.len()];
        let mut counts: Vec<(u64, u64)> = vec![(0, 0); sym.series.len()];
        let mut touched: Vec<u32> = Vec::new();
        let use_sums = self.use_sums.load(Ordering::Relaxed);
        for part in inner.parts.iter().filter(|p| p.overlaps(select.start_ns, select.end_ns)) {
            ranges.clear();
            outside.clear();
            match select.span_ids {
                None => {
                    // A series whose profiles in the part lie all in the range adds the part's
                    // sums; one with fewer rows outside the range than inside adds the sums and
                    // subtracts the rows outside (at most half the rows are read); others read
                    // the rows inside.
                    let part_sums = part.sums.as_ref().filter(|_| use_sums);
                    if part_sums.is_some() {
                        for row in part.profiles.iter().filter(|r| wanted[r.series as usize]) {
                            let c = &mut counts[row.series as usize];
                            if *c == (0, 0) {
                                touched.push(row.series);
                            }
                            let inside = row.time_ns >= select.start_ns && row.time_ns <= select.end_ns;
                            if inside { c.0 += u64::from(row.len) } else { c.1 += u64::from(row.len) }
                        }
                        for &series in &touched {
                            let (inside, out) = counts[series as usize];
                            how[series as usize] = match (inside, out) {
                                (0, _) => SeriesRead::Rows,
                                (_, 0) => SeriesRead::Sums,
                                (i, o) if o < i => SeriesRead::SumsMinusOutside,
                                _ => SeriesRead::Rows,
                            };
                        }
                    }
                    for row in part.profiles.iter().filter(|r| wanted[r.series as usize]) {
                        let inside = row.time_ns >= select.start_ns && row.time_ns <= select.end_ns;
                        match (how[row.series as usize], inside) {
                            (SeriesRead::Rows, true) => push_range(&mut ranges, row.first, row.first + row.len),
                            (SeriesRead::SumsMinusOutside, false) => {
                                push_range(&mut outside, row.first, row.first + row.len)
                            }
                            _ => {}
                        }
                        if inside {
                            profiles += 1;
                            samples += u64::from(row.len);
                            if samples > select.max_samples {
                                return Err(limit);
                            }
                        }
                    }
                    // Subtract first: a file that cannot be read leaves those series out.
                    let subtracted = outside.is_empty() || self.subtract(sym, part, &outside, &mut sums);
                    for &series in &touched {
                        let read = std::mem::replace(&mut how[series as usize], SeriesRead::Rows);
                        counts[series as usize] = (0, 0);
                        let add_sums = match read {
                            SeriesRead::Sums => true,
                            SeriesRead::SumsMinusOutside => subtracted,
                            SeriesRead::Rows => false,
                        };
                        if let (true, Some(s)) = (add_sums, part_sums.and_then(|p| p.series.get(&series))) {
                            for (stack, value) in s.iter() {
                                sums.add(stack, value);
                            }
                        }
                    }
                    touched.clear();
                }
                Some(spans) => {
                    let mut rows: Vec<u32> = Vec::new();
                    for span in spans {
                        let Some(found) = part.span_index.get(&span_key(span)) else { continue };
                        rows.extend(found.iter().copied().filter(|r| in_range(part.profile_of(*r))));
                    }
                    rows.sort_unstable();
                    rows.dedup();
                    samples += rows.len() as u64;
                    if samples > select.max_samples {
                        return Err(limit);
                    }
                    let mut last_profile = None;
                    for r in rows {
                        let first = part.profile_of(r).first;
                        if last_profile != Some(first) {
                            profiles += 1;
                            last_profile = Some(first);
                        }
                        push_range(&mut ranges, r, r + 1);
                    }
                }
            }
            self.rows_read.fetch_add(ranges.iter().map(|(a, b)| u64::from(b - a)).sum(), Ordering::Relaxed);
            if part.file.is_none() {
                // Rows in memory: straight off the columns.
                part.cols.each_row(&ranges, |stack, value| sums.add(stack, value));
            } else {
                self.visit(sym, part, &ranges, Need::default(), &mut |(_, stack, value, _, _)| sums.add(stack, value));
            }
        }
        let mut out = MergedStacks { profiles, samples, ..MergedStacks::default() };
        // Symbol-table id → id in `out` (u32::MAX: not yet), dense: one slot per table entry.
        const NONE: u32 = u32::MAX;
        let mut loc_map: Vec<u32> = vec![NONE; sym.locations.len()];
        let mut fn_map: Vec<u32> = vec![NONE; sym.functions.len()];
        let mut map_map: Vec<u32> = vec![NONE; sym.mappings.len() + 1];
        for (stack_id, value) in sums.into_sorted() {
            let mut locs = Vec::with_capacity(sym.stack_of(stack_id).len());
            for &l in sym.stack_of(stack_id) {
                if loc_map[l as usize] == NONE {
                    let loc = &sym.locations[l as usize];
                    let mut lines = Vec::with_capacity(loc.lines.len());
                    for &(f, line) in &loc.lines {
                        if fn_map[f as usize] == NONE {
                            fn_map[f as usize] = out.functions.len() as u32;
                            out.functions.push(sym.functions[f as usize].clone());
                        }
                        lines.push((fn_map[f as usize], line));
                    }
                    let m = loc.mapping as usize;
                    if m != 0 && map_map[m] == NONE {
                        map_map[m] = out.mappings.len() as u32 + 1;
                        out.mappings.push(sym.mappings[m - 1].clone());
                    }
                    let mapping = if m == 0 { 0 } else { map_map[m] };
                    loc_map[l as usize] = out.locations.len() as u32;
                    out.locations.push(Location { address: loc.address, lines, mapping });
                }
                locs.push(loc_map[l as usize]);
            }
            out.stacks.push((locs, value));
        }
        Ok(out)
    }

    fn profile_totals(&self, select: &ProfileSelect<'_>) -> ProfileTotals {
        let inner = self.inner.read();
        let mut index: FastMap<u32, u32> = FastMap::default();
        let mut out = ProfileTotals::default();
        for_each_profile(&inner, select.matchers, select.start_ns, select.end_ns, |_, row| {
            let next = out.series.len() as u32;
            let i = *index.entry(row.series).or_insert_with(|| {
                out.series.push(inner.symbols.series[row.series as usize].clone());
                next
            });
            out.points.push((i, row.time_ns, row.total, u64::from(row.len)));
        });
        out.points.sort_by_key(|(s, t, _, _)| (*s, *t));
        out
    }

    fn span_samples(
        &self,
        trace_id: Option<TraceId>,
        span_ids: &[SpanId],
        start_ns: i64,
        end_ns: i64,
    ) -> Vec<SpanSamples> {
        let inner = self.inner.read();
        let mut spans: Vec<SpanId> = span_ids.to_vec();
        if let Some(t) = trace_id
            && let Some(more) = inner.trace_spans.get(&t)
        {
            spans.extend(more.iter().copied());
        }
        spans.sort();
        spans.dedup();
        let mut out: Vec<SpanSamples> = Vec::new();
        for part in inner.parts.iter().filter(|p| p.overlaps(start_ns, end_ns)) {
            // Rows of the wanted spans in range, read once for the whole part.
            let mut rows: Vec<u32> = Vec::new();
            for span in &spans {
                let Some(found) = part.span_index.get(&span_key(span)) else { continue };
                rows.extend(found.iter().copied().filter(|r| {
                    let t = part.profile_of(*r).time_ns;
                    t >= start_ns && t <= end_ns
                }));
            }
            rows.sort_unstable();
            rows.dedup();
            let mut ranges = Vec::new();
            for &r in &rows {
                push_range(&mut ranges, r, r + 1);
            }
            let mut got: Vec<RowVisit> = Vec::new();
            self.visit(&inner.symbols, part, &ranges, Need { spans: true, label_sets: true }, &mut |v| got.push(v));
            // Group by (span, profile).
            let mut groups: Vec<(u64, u32, u64, i64, Option<TraceId>)> = Vec::new();
            for (row, _, value, span, set) in got {
                let trace = inner.symbols.label_sets[set as usize]
                    .iter()
                    .find(|l| l.name == "trace_id")
                    .and_then(|l| TraceId::from_hex(&l.value));
                groups.push((span, part.profile_of(row).first, 1, value, trace));
            }
            groups.sort_by_key(|g| (g.0, g.1));
            let mut merged: Vec<(u64, u32, u64, i64, Option<TraceId>)> = Vec::new();
            for g in groups {
                match merged.last_mut() {
                    Some(last) if last.0 == g.0 && last.1 == g.1 => {
                        last.2 += 1;
                        last.3 += g.3;
                        last.4 = last.4.or(g.4);
                    }
                    _ => merged.push(g),
                }
            }
            for (span, first, n, value, trace) in merged {
                let row = part.profile_of(first);
                out.push(SpanSamples {
                    span_id: SpanId(span.to_be_bytes()),
                    trace_id: trace.or(trace_id),
                    series: inner.symbols.series[row.series as usize].clone(),
                    time_ns: row.time_ns,
                    samples: n,
                    value,
                });
            }
        }
        out.sort_by_key(|s| (s.time_ns, s.span_id));
        out
    }
}

/// A stored profile as the model's `Profile`, with its own compact symbol tables: the functions
/// and locations its samples use, in the order they were first stored (so a profile comes back
/// with the tables it was written with, minus unused entries). `rows` are the profile's rows.
fn rebuild_profile(sym: &Symbols, row: &ProfileRow, rows: &[RowVisit]) -> Profile {
    let mut loc_ids: Vec<u32> = rows.iter().flat_map(|v| sym.stack_of(v.1).iter().copied()).collect();
    loc_ids.sort_unstable();
    loc_ids.dedup();
    let mut fn_ids: Vec<u32> =
        loc_ids.iter().flat_map(|l| sym.locations[*l as usize].lines.iter().map(|(f, _)| *f)).collect();
    fn_ids.sort_unstable();
    fn_ids.dedup();
    let mut map_ids: Vec<u32> =
        loc_ids.iter().map(|l| sym.locations[*l as usize].mapping).filter(|m| *m != 0).collect();
    map_ids.sort_unstable();
    map_ids.dedup();
    let fn_index = |f: u32| fn_ids.binary_search(&f).unwrap_or(0) as u32;
    let loc_index = |l: u32| loc_ids.binary_search(&l).unwrap_or(0) as u32;
    let map_index = |m: u32| if m == 0 { 0 } else { map_ids.binary_search(&m).map_or(0, |i| i as u32 + 1) };
    let functions = fn_ids.iter().map(|f| sym.functions[*f as usize].clone()).collect();
    let mappings = map_ids.iter().map(|m| sym.mappings[*m as usize - 1].clone()).collect();
    let locations = loc_ids
        .iter()
        .map(|l| {
            let loc = &sym.locations[*l as usize];
            Location {
                address: loc.address,
                lines: loc.lines.iter().map(|(f, line)| (fn_index(*f), *line)).collect(),
                mapping: map_index(loc.mapping),
            }
        })
        .collect();
    let samples = rows
        .iter()
        .map(|&(_, stack, value, span, set)| ProfileSample {
            locations: sym.stack_of(stack).iter().map(|l| loc_index(*l)).collect(),
            value,
            span_id: (span != 0).then(|| SpanId(span.to_be_bytes())),
            labels: sym.label_sets[set as usize].clone(),
        })
        .collect();
    Profile {
        labels: sym.plain_labels(row.series),
        profile_type: sym.series[row.series as usize].profile_type.clone(),
        time_ns: row.time_ns,
        duration_ns: row.duration_ns,
        period: row.period,
        functions,
        locations,
        samples,
        mappings,
    }
}

#[cfg(test)]
mod tests;

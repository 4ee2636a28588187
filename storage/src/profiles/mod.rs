//! The profiles engine: deduplicated symbol tables, per-profile sample rows in columns, Parquet
//! parts on disk. Format: `docs/format/profiles.md`.
//!
//! Data layout (all in memory; the files are its durable image):
//! - [`Symbols`]: append-only tables of functions, locations (lines point at function ids) and
//!   stacks (location ids, leaf first; a stack table keyed by a hash of its location ids), plus
//!   the series table (labels + profile type) and the table of per-sample label sets. Ids are
//!   indexes and never change, so a part written once stays valid.
//! - [`Part`]s: columns of sample rows (stack id, value, span id, sample label set) grouped per
//!   profile ([`ProfileRow`]: series, time, duration, period, the profile's total, row range).
//!   The last part is the head, which receives `apply`; `persist` seals it, writes it as
//!   `part-<seq>.parquet` plus the symbols added since the previous persist as
//!   `symbols-<seq>.bin`, then the manifest.
//!
//! Invariants:
//! - `MANIFEST.json` is written atomically (temporary file, fsync, rename, directory fsync) after
//!   every file it names, so a crash leaves either the old or the new manifest, both complete.
//! - The manifest's `wal_pos` is the last WAL position whose batch is inside the listed parts;
//!   `apply` skips positions at or before it (never [`WalPos::ZERO`], the memory-only position).
//! - Symbol files are never deleted (later parts may use earlier symbols); retention deletes parts.

mod persist;

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::FastMap;
use crate::error::OpenError;
use crate::model::{
    Function, Label, Labels, Location, Profile, ProfileSample, ProfileType, ProfilesBatch, SpanId, TraceId,
};
use crate::read::{
    LimitExceeded, Matcher, MergedStacks, ProfileSelect, ProfileSeries, ProfileTotals, SpanSamples, matches_all,
};
use crate::wal::WalPos;

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
        }
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

    /// The series labels without the synthetic ones (what a `Profile` carries).
    fn plain_labels(&self, series: u32) -> Labels {
        let s = &self.series[series as usize];
        Labels::from_pairs(
            s.labels
                .iter()
                .filter(|l| !SYNTHETIC.contains(&l.name.as_str()))
                .map(|l| (l.name.clone(), l.value.clone())),
        )
    }
}

const SYNTHETIC: [&str; 5] = ["__profile_type__", "__type__", "__unit__", "__period_type__", "__period_unit__"];

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

/// A group of profiles in sample-row columns. Rows of a profile are contiguous.
#[derive(Default)]
pub(crate) struct Part {
    pub seq: u64,
    pub profiles: Vec<ProfileRow>,
    pub stacks: Vec<u32>,
    pub values: Vec<i64>,
    /// Span id as a big-endian u64, 0 for none.
    pub spans: Vec<u64>,
    pub label_sets: Vec<u32>,
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
}

impl Part {
    fn new(seq: u64) -> Part {
        Part { seq, min_time_ns: i64::MAX, max_time_ns: i64::MIN, ..Part::default() }
    }

    pub(crate) fn push_profile(&mut self, mut row: ProfileRow, samples: impl Iterator<Item = (u32, i64, u64, u32)>) {
        row.first = self.stacks.len() as u32;
        let mut total = 0i64;
        for (stack, value, span, labels) in samples {
            if span != 0 {
                self.span_index.entry(span).or_default().push(self.stacks.len() as u32);
            }
            self.stacks.push(stack);
            self.values.push(value);
            self.spans.push(span);
            self.label_sets.push(labels);
            total = total.saturating_add(value);
        }
        row.len = self.stacks.len() as u32 - row.first;
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
        };
        if let Some(dir) = dir {
            persist::load(dir, &mut inner)?;
        }
        Ok(ProfilesHead {
            dir: dir.map(Path::to_path_buf),
            opts: opts.clone(),
            inner: RwLock::new(inner),
            files: Mutex::new(()),
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
        persist::retain(dir, &self.inner, cutoff, self.opts.max_bytes)
    }

    pub fn apply(&self, pos: WalPos, batch: ProfilesBatch) {
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        if pos != WalPos::ZERO && pos <= inner.persisted {
            return;
        }
        inner.applied = inner.applied.max(pos);
        for profile in batch.profiles {
            ingest_profile(inner, profile);
        }
    }

    pub fn items(&self) -> u64 {
        self.inner.read().samples
    }
}

fn ingest_profile(inner: &mut Inner, p: Profile) {
    if p.samples.is_empty() {
        return; // nothing to query; not representable in sample rows
    }
    let sym = &mut inner.symbols;
    let fn_ids: Vec<u32> = p.functions.iter().map(|f| sym.function(f)).collect();
    let mut loc_ids = Vec::with_capacity(p.locations.len());
    for l in &p.locations {
        let lines = l.lines.iter().map(|(f, line)| (fn_ids.get(*f as usize).copied().unwrap_or(u32::MAX), *line));
        let lines: Vec<(u32, i64)> = lines.filter(|(f, _)| *f != u32::MAX).collect();
        loc_ids.push(sym.location(Location { address: l.address, lines }));
    }
    let series = sym.series_id(&p.labels, &p.profile_type);
    let mut rows = Vec::with_capacity(p.samples.len());
    let mut stack = Vec::new();
    for s in &p.samples {
        stack.clear();
        stack.extend(s.locations.iter().filter_map(|l| loc_ids.get(*l as usize).copied()));
        let stack_id = sym.stack(&stack);
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
    inner.head().push_profile(row, rows.into_iter());
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
        for_each_profile(&inner, &[], start_ns, end_ns, |part, row| {
            out.push(rebuild_profile(&inner.symbols, part, row));
        });
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
        let mut by_stack: FastMap<u32, i64> = FastMap::default();
        let mut profiles = 0u64;
        let mut samples = 0u64;
        let limit = LimitExceeded { limit: "max_samples", max: select.max_samples };
        match select.span_ids {
            None => {
                let mut over = false;
                for_each_profile(&inner, select.matchers, select.start_ns, select.end_ns, |part, row| {
                    if over {
                        return;
                    }
                    profiles += 1;
                    samples += u64::from(row.len);
                    if samples > select.max_samples {
                        over = true;
                        return;
                    }
                    let (a, b) = (row.first as usize, (row.first + row.len) as usize);
                    for (stack, value) in part.stacks[a..b].iter().zip(&part.values[a..b]) {
                        *by_stack.entry(*stack).or_default() += *value;
                    }
                });
                if over {
                    return Err(limit);
                }
            }
            Some(spans) => {
                let wanted = inner.matching_series(select.matchers);
                let mut seen_profiles = std::collections::HashSet::new();
                for part in inner.parts.iter().filter(|p| p.overlaps(select.start_ns, select.end_ns)) {
                    for span in spans {
                        let Some(rows) = part.span_index.get(&span_key(span)) else { continue };
                        for &r in rows {
                            let row = part.profile_of(r);
                            if row.time_ns < select.start_ns
                                || row.time_ns > select.end_ns
                                || !wanted[row.series as usize]
                            {
                                continue;
                            }
                            seen_profiles.insert((part.seq, row.first));
                            samples += 1;
                            if samples > select.max_samples {
                                return Err(limit);
                            }
                            *by_stack.entry(part.stacks[r as usize]).or_default() += part.values[r as usize];
                        }
                    }
                }
                profiles = seen_profiles.len() as u64;
            }
        }
        let sym = &inner.symbols;
        let mut out = MergedStacks { profiles, samples, ..MergedStacks::default() };
        let mut loc_map: FastMap<u32, u32> = FastMap::default();
        let mut fn_map: FastMap<u32, u32> = FastMap::default();
        let mut stacks: Vec<(u32, i64)> = by_stack.into_iter().filter(|(_, v)| *v != 0).collect();
        stacks.sort_unstable();
        for (stack_id, value) in stacks {
            let mut locs = Vec::with_capacity(sym.stack_of(stack_id).len());
            for &l in sym.stack_of(stack_id) {
                let next = out.locations.len() as u32;
                let id = *loc_map.entry(l).or_insert_with(|| {
                    let loc = &sym.locations[l as usize];
                    let lines = loc
                        .lines
                        .iter()
                        .map(|(f, line)| {
                            let next_f = out.functions.len() as u32;
                            let fid = *fn_map.entry(*f).or_insert_with(|| {
                                out.functions.push(sym.functions[*f as usize].clone());
                                next_f
                            });
                            (fid, *line)
                        })
                        .collect();
                    out.locations.push(Location { address: loc.address, lines });
                    next
                });
                locs.push(id);
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
            out.points.push((i, row.time_ns, row.total));
        });
        out.points.sort_by_key(|(s, t, _)| (*s, *t));
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
            for span in &spans {
                let Some(rows) = part.span_index.get(&span_key(span)) else { continue };
                let mut per_profile: Vec<(u32, u64, i64, Option<TraceId>)> = Vec::new();
                for &r in rows {
                    let row = part.profile_of(r);
                    if row.time_ns < start_ns || row.time_ns > end_ns {
                        continue;
                    }
                    let trace = inner.symbols.label_sets[part.label_sets[r as usize] as usize]
                        .iter()
                        .find(|l| l.name == "trace_id")
                        .and_then(|l| TraceId::from_hex(&l.value));
                    match per_profile.last_mut() {
                        Some(last) if last.0 == row.first => {
                            last.1 += 1;
                            last.2 += part.values[r as usize];
                        }
                        _ => per_profile.push((row.first, 1, part.values[r as usize], trace)),
                    }
                }
                for (first, n, value, trace) in per_profile {
                    let row = part.profile_of(first);
                    out.push(SpanSamples {
                        span_id: *span,
                        trace_id: trace.or(trace_id),
                        series: inner.symbols.series[row.series as usize].clone(),
                        time_ns: row.time_ns,
                        samples: n,
                        value,
                    });
                }
            }
        }
        out.sort_by_key(|s| (s.time_ns, s.span_id));
        out
    }
}

/// A stored profile as the model's `Profile`, with its own compact symbol tables: the functions
/// and locations its samples use, in the order they were first stored (so a profile comes back
/// with the tables it was written with, minus unused entries).
fn rebuild_profile(sym: &Symbols, part: &Part, row: &ProfileRow) -> Profile {
    let rows = row.first as usize..(row.first + row.len) as usize;
    let mut loc_ids: Vec<u32> = rows.clone().flat_map(|r| sym.stack_of(part.stacks[r]).iter().copied()).collect();
    loc_ids.sort_unstable();
    loc_ids.dedup();
    let mut fn_ids: Vec<u32> =
        loc_ids.iter().flat_map(|l| sym.locations[*l as usize].lines.iter().map(|(f, _)| *f)).collect();
    fn_ids.sort_unstable();
    fn_ids.dedup();
    let fn_index = |f: u32| fn_ids.binary_search(&f).unwrap_or(0) as u32;
    let loc_index = |l: u32| loc_ids.binary_search(&l).unwrap_or(0) as u32;
    let functions = fn_ids.iter().map(|f| sym.functions[*f as usize].clone()).collect();
    let locations = loc_ids
        .iter()
        .map(|l| {
            let loc = &sym.locations[*l as usize];
            Location { address: loc.address, lines: loc.lines.iter().map(|(f, line)| (fn_index(*f), *line)).collect() }
        })
        .collect();
    let samples = rows
        .map(|r| {
            let span = part.spans[r];
            ProfileSample {
                locations: sym.stack_of(part.stacks[r]).iter().map(|l| loc_index(*l)).collect(),
                value: part.values[r],
                span_id: (span != 0).then(|| SpanId(span.to_be_bytes())),
                labels: sym.label_sets[part.label_sets[r] as usize].clone(),
            }
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
    }
}

#[cfg(test)]
mod tests;

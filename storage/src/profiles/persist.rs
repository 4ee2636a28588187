//! Files of the profiles engine: `part-<seq>.parquet` (sample rows), `symbols-<seq>.bin`
//! (symbols added since the previous persist) and `MANIFEST.json`. Spec:
//! `docs/format/profiles.md`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use parking_lot::RwLock;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::{Inner, Need, Part, ProfileRow, RowVisit, SymbolCounts, Symbols};
use crate::error::OpenError;
use crate::model::{Function, Label, Labels, Location, Mapping, ProfileType, TraceId};
use crate::wal::WalPos;

const MANIFEST: &str = "MANIFEST.json";
const MANIFEST_VERSION: u32 = 1;
const SYMBOLS_MAGIC: &[u8; 4] = b"OPSY";
/// Symbols file version of a delta; version 1 (no mappings) is still read.
const SYMBOLS_VERSION: u32 = 2;
/// Symbols file version of a snapshot (every live entry with its id, written after symbols were
/// collected).
const SYMBOLS_SNAPSHOT_VERSION: u32 = 3;
/// Compaction merges a run of at least [`COMPACT_MIN_PARTS`] consecutive persisted parts of fewer
/// than [`COMPACT_SMALL_ROWS`] rows each into one part of at most [`COMPACT_MAX_ROWS`] rows (the
/// rows of the run are held in memory while it is rewritten: about 100 bytes per row).
const COMPACT_MIN_PARTS: usize = 4;
const COMPACT_SMALL_ROWS: u32 = 512 * 1024;
const COMPACT_MAX_ROWS: u32 = 2 * 1024 * 1024;
/// Rows per Parquet row group: queries read only the row groups (and, through the offset index,
/// the pages) holding the rows they select.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Column indexes of the part schema.
const COL_STACK: usize = 5;
const COL_VALUE: usize = 6;
const COL_SPAN: usize = 7;
const COL_LABELS: usize = 8;
/// Columns written with `DELTA_BINARY_PACKED` (the others: dictionary, the writer's default).
const DELTA_COLUMNS: [&str; 6] = ["profile", "series", "time_ns", "duration_ns", "period", "stack"];

/// A persisted part's Parquet file: its path and footer (with the offset index), kept open for
/// row reads.
pub(crate) struct PartFile {
    pub(super) path: PathBuf,
    meta: ArrowReaderMetadata,
    /// First row of each row group, then the total.
    row_group_starts: Vec<u32>,
}

impl PartFile {
    pub(crate) fn open(path: PathBuf) -> io::Result<PartFile> {
        let file = File::open(&path)?;
        let opts = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
        let meta = ArrowReaderMetadata::load(&file, opts).map_err(io::Error::other)?;
        let mut row_group_starts = vec![0u32];
        let mut total = 0u64;
        for rg in meta.metadata().row_groups() {
            total += rg.num_rows().max(0) as u64;
            row_group_starts.push(u32::try_from(total).map_err(|_| invalid(&path, "more than 2^32 rows"))?);
        }
        Ok(PartFile { path, meta, row_group_starts })
    }

    /// Reads the rows `ranges` (sorted, disjoint, `[start, end)`), stack and value plus what
    /// `need` asks for, and calls `f` for each in row order.
    pub(crate) fn read_rows(
        &self,
        ranges: &[(u32, u32)],
        need: Need,
        f: &mut dyn FnMut(RowVisit) -> io::Result<()>,
    ) -> io::Result<()> {
        // Row groups touched, and a selection over their concatenated rows.
        let crate::parquet_rows::RowPlan { groups, selectors, selected } =
            crate::parquet_rows::plan(&self.row_group_starts, ranges);
        if groups.is_empty() {
            return Ok(());
        }
        let mut cols = vec![COL_STACK, COL_VALUE];
        if need.spans {
            cols.push(COL_SPAN);
        }
        if need.label_sets {
            cols.push(COL_LABELS);
        }
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), cols.iter().copied());
        let file = File::open(&self.path)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(groups)
            .with_projection(mask)
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(64 * 1024)
            .build()
            .map_err(io::Error::other)?;
        // Row ids of the selected rows, in order.
        let mut rows = selected.iter().flat_map(|&(a, b)| a as u32..b as u32);
        for batch in reader {
            let batch = batch.map_err(io::Error::other)?;
            let bad = || invalid(&self.path, "unexpected column layout");
            let col = |name: &str| batch.column_by_name(name).ok_or_else(bad);
            let stack = col("stack")?.as_any().downcast_ref::<UInt32Array>().ok_or_else(bad)?;
            let value = col("value")?.as_any().downcast_ref::<Int64Array>().ok_or_else(bad)?;
            let span = if need.spans {
                Some(col("span_id")?.as_any().downcast_ref::<UInt64Array>().ok_or_else(bad)?)
            } else {
                None
            };
            let labels = if need.label_sets {
                Some(col("labels")?.as_any().downcast_ref::<UInt32Array>().ok_or_else(bad)?)
            } else {
                None
            };
            let (stacks, values) = (stack.values(), value.values());
            for i in 0..batch.num_rows() {
                let row = rows.next().ok_or_else(|| invalid(&self.path, "more rows than selected"))?;
                let sp = span.map_or(0, |s| if s.is_null(i) { 0 } else { s.value(i) });
                let ls = labels.map_or(0, |l| l.value(i));
                f((row, stacks[i], values[i], sp, ls))?;
            }
        }
        Ok(())
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

#[derive(Serialize, Deserialize, Default)]
struct Manifest {
    version: u32,
    wal_pos: WalPos,
    next_seq: u64,
    /// Symbols files in the order they must be loaded.
    symbols: Vec<u64>,
    parts: Vec<PartMeta>,
}

#[derive(Serialize, Deserialize, Clone)]
struct PartMeta {
    seq: u64,
    min_time_ns: i64,
    max_time_ns: i64,
    profiles: u64,
    rows: u64,
    bytes: u64,
}

#[derive(Serialize, Deserialize, Default)]
struct SymbolsDelta {
    start: SymbolCounts,
    functions: Vec<Function>,
    locations: Vec<Location>,
    stacks: Vec<Vec<u32>>,
    series: Vec<(Labels, ProfileType)>,
    label_sets: Vec<Vec<Label>>,
    mappings: Vec<Mapping>,
}

/// A symbols snapshot (version 3): the table sizes, then every entry not collected, with its
/// id, ascending. Ids missing below a size are collected entries (placeholders in memory).
#[derive(Serialize, Deserialize, Default)]
struct SymbolsSnapshot {
    counts: SymbolCounts,
    mappings: Vec<(u32, Mapping)>,
    functions: Vec<(u32, Function)>,
    locations: Vec<(u32, Location)>,
    stacks: Vec<(u32, Vec<u32>)>,
    series: Vec<(Labels, ProfileType)>,
    label_sets: Vec<(u32, Vec<Label>)>,
}

/// What a symbols file holds.
enum SymbolsFile {
    Delta(SymbolsDelta),
    Snapshot(SymbolsSnapshot),
}

/// Symbols file version 1: no mappings (frozen).
#[derive(Deserialize)]
struct SymbolsDeltaV1 {
    start: SymbolCountsV1,
    functions: Vec<Function>,
    locations: Vec<crate::wal::v1::LocationV1>,
    stacks: Vec<Vec<u32>>,
    series: Vec<(Labels, ProfileType)>,
    label_sets: Vec<Vec<Label>>,
}

#[derive(Deserialize)]
struct SymbolCountsV1 {
    functions: u32,
    locations: u32,
    stacks: u32,
    series: u32,
    label_sets: u32,
}

impl From<SymbolsDeltaV1> for SymbolsDelta {
    fn from(d: SymbolsDeltaV1) -> Self {
        let c = d.start;
        SymbolsDelta {
            start: SymbolCounts {
                functions: c.functions,
                locations: c.locations,
                stacks: c.stacks,
                series: c.series,
                label_sets: c.label_sets,
                mappings: 0,
            },
            functions: d.functions,
            locations: d.locations.into_iter().map(Into::into).collect(),
            stacks: d.stacks,
            series: d.series,
            label_sets: d.label_sets,
            mappings: Vec::new(),
        }
    }
}

fn part_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("part-{seq:016}.parquet"))
}

fn symbols_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("symbols-{seq:016}.bin"))
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("profile", DataType::UInt32, false),
        Field::new("series", DataType::UInt32, false),
        Field::new("time_ns", DataType::Int64, false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("period", DataType::Int64, false),
        Field::new("stack", DataType::UInt32, false),
        Field::new("value", DataType::Int64, false),
        Field::new("span_id", DataType::UInt64, true),
        Field::new("labels", DataType::UInt32, false),
    ]))
}

/// A part's rows as an Arrow batch (built under the read lock, written without it).
fn part_batch(part: &Part) -> io::Result<RecordBatch> {
    let n = part.rows as usize;
    let (mut profile, mut series, mut time, mut dur, mut period) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, row) in part.profiles.iter().enumerate() {
        for _ in 0..row.len {
            profile.push(i as u32);
            series.push(row.series);
            time.push(row.time_ns);
            dur.push(row.duration_ns);
            period.push(row.period);
        }
    }
    let c = &part.cols;
    let spans: UInt64Array = c.spans.iter().map(|s| (*s != 0).then_some(*s)).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(profile)),
        Arc::new(UInt32Array::from(series)),
        Arc::new(Int64Array::from(time)),
        Arc::new(Int64Array::from(dur)),
        Arc::new(Int64Array::from(period)),
        Arc::new(UInt32Array::from(c.stacks.clone())),
        Arc::new(Int64Array::from(c.values.clone())),
        Arc::new(spans),
        Arc::new(UInt32Array::from(c.label_sets.clone())),
    ];
    RecordBatch::try_new(schema(), cols).map_err(io::Error::other)
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> io::Result<u64> {
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp)?;
    let level = ZstdLevel::try_new(3).map_err(io::Error::other)?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    // Per-profile columns (long runs of one value) and stack ids (many distinct values) are
    // delta-encoded rather than dictionary-encoded: as small on disk, without hashing every value.
    for col in DELTA_COLUMNS {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(col), false)
            .set_column_encoding(ColumnPath::from(col), Encoding::DELTA_BINARY_PACKED);
    }
    let props = props.build();
    let mut w = ArrowWriter::try_new(file, schema(), Some(props)).map_err(io::Error::other)?;
    w.write(batch).map_err(io::Error::other)?;
    let file = w.into_inner().map_err(io::Error::other)?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    fs::rename(&tmp, path)?;
    Ok(bytes)
}

fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn encode_symbols(file: &SymbolsFile) -> io::Result<Vec<u8>> {
    let (body, version) = match file {
        SymbolsFile::Delta(d) => (postcard::to_stdvec(d), SYMBOLS_VERSION),
        SymbolsFile::Snapshot(s) => (postcard::to_stdvec(s), SYMBOLS_SNAPSHOT_VERSION),
    };
    let body = body.map_err(io::Error::other)?;
    let compressed = zstd::encode_all(body.as_slice(), 3)?;
    let mut out = Vec::with_capacity(compressed.len() + 16);
    out.extend_from_slice(SYMBOLS_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
    out.extend_from_slice(&compressed);
    out.extend_from_slice(&crc32c::crc32c(&compressed).to_le_bytes());
    Ok(out)
}

fn decode_symbols(path: &Path, data: &[u8]) -> Result<SymbolsFile, OpenError> {
    let bad = |detail: &str| OpenError::Corrupted { path: path.to_path_buf(), detail: detail.to_string() };
    if data.len() < 20 || &data[..4] != SYMBOLS_MAGIC {
        return Err(bad("bad magic"));
    }
    let version = u32::from_le_bytes(data[4..8].try_into().map_err(|_| bad("short"))?);
    if !(1..=SYMBOLS_SNAPSHOT_VERSION).contains(&version) {
        return Err(bad(&format!("unknown version {version}")));
    }
    let len = u64::from_le_bytes(data[8..16].try_into().map_err(|_| bad("short"))?) as usize;
    if data.len() != 16 + len + 4 {
        return Err(bad("length mismatch"));
    }
    let body = &data[16..16 + len];
    let crc = u32::from_le_bytes(data[16 + len..].try_into().map_err(|_| bad("short"))?);
    if crc32c::crc32c(body) != crc {
        return Err(bad("CRC mismatch"));
    }
    let raw = zstd::decode_all(body).map_err(|e| bad(&format!("zstd: {e}")))?;
    let decoded = match version {
        1 => postcard::from_bytes::<SymbolsDeltaV1>(&raw).map(|d| SymbolsFile::Delta(d.into())),
        SYMBOLS_VERSION => postcard::from_bytes(&raw).map(SymbolsFile::Delta),
        _ => postcard::from_bytes(&raw).map(SymbolsFile::Snapshot),
    };
    decoded.map_err(|e| bad(&format!("decode: {e}")))
}

/// A snapshot of the symbols below `counts`: every entry not collected, with its id.
fn snapshot_of(sym: &Symbols, counts: SymbolCounts) -> SymbolsSnapshot {
    fn sorted<T: Clone>(ids: impl Iterator<Item = u32>, below: u32, entry: impl Fn(u32) -> T) -> Vec<(u32, T)> {
        let mut ids: Vec<u32> = ids.filter(|id| *id < below).collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| (id, entry(id))).collect()
    }
    SymbolsSnapshot {
        counts,
        mappings: sorted(sym.mapping_ids.values().copied(), counts.mappings, |i| sym.mappings[i as usize].clone()),
        functions: sorted(sym.function_ids.values().copied(), counts.functions, |i| sym.functions[i as usize].clone()),
        locations: sorted(sym.location_ids.values().copied(), counts.locations, |i| sym.locations[i as usize].clone()),
        stacks: sorted(sym.stack_ids.values().flatten().copied(), counts.stacks, |i| sym.stack_of(i).to_vec()),
        series: (0..counts.series)
            .map(|i| (sym.plain_labels(i), sym.series[i as usize].profile_type.clone()))
            .collect(),
        label_sets: sorted(sym.label_set_ids.values().copied().filter(|id| *id != 0), counts.label_sets, |i| {
            sym.label_sets[i as usize].clone()
        }),
    }
}

/// Loads a snapshot into empty tables, checking that ids ascend below the sizes and that every
/// reference names an entry of the snapshot.
fn load_snapshot(path: &Path, sym: &mut Symbols, snap: SymbolsSnapshot) -> Result<(), OpenError> {
    let bad = |detail: &str| OpenError::Corrupted { path: path.to_path_buf(), detail: detail.to_string() };
    if sym.counts() != (SymbolCounts { label_sets: 1, ..SymbolCounts::default() }) {
        return Err(bad("a symbols snapshot after other symbols files"));
    }
    fn ascending<T>(entries: &[(u32, T)], below: u32) -> bool {
        entries.windows(2).all(|w| w[0].0 < w[1].0) && entries.last().is_none_or(|e| e.0 < below)
    }
    let c = snap.counts;
    if !(ascending(&snap.mappings, c.mappings)
        && ascending(&snap.functions, c.functions)
        && ascending(&snap.locations, c.locations)
        && ascending(&snap.stacks, c.stacks)
        && ascending(&snap.label_sets, c.label_sets)
        && snap.label_sets.first().is_none_or(|e| e.0 > 0)
        && c.label_sets >= 1
        && snap.series.len() == c.series as usize)
    {
        return Err(bad("snapshot ids out of order or beyond the table sizes"));
    }
    let dup = || bad("a snapshot entry appears twice");
    sym.mappings = vec![Mapping::default(); c.mappings as usize];
    for (id, m) in snap.mappings {
        if sym.mapping_ids.insert(m.clone(), id).is_some() {
            return Err(dup());
        }
        sym.mappings[id as usize] = m;
    }
    sym.functions = vec![Function::default(); c.functions as usize];
    for (id, f) in snap.functions {
        if sym.function_ids.insert(f.clone(), id).is_some() {
            return Err(dup());
        }
        sym.functions[id as usize] = f;
    }
    let mut fn_live = vec![false; c.functions as usize];
    sym.function_ids.values().for_each(|i| fn_live[*i as usize] = true);
    let mut map_live = vec![false; c.mappings as usize];
    sym.mapping_ids.values().for_each(|i| map_live[*i as usize] = true);
    sym.locations = vec![Location::default(); c.locations as usize];
    let mut loc_live = vec![false; c.locations as usize];
    for (id, l) in snap.locations {
        let mapping_ok = l.mapping == 0 || map_live.get(l.mapping as usize - 1).copied().unwrap_or(false);
        if !mapping_ok || l.lines.iter().any(|(f, _)| !fn_live.get(*f as usize).copied().unwrap_or(false)) {
            return Err(bad("a location refers to an unknown symbol"));
        }
        if sym.location_ids.insert(l.clone(), id).is_some() {
            return Err(dup());
        }
        sym.locations[id as usize] = l;
        loc_live[id as usize] = true;
    }
    let mut next = 0u32;
    for (id, locs) in snap.stacks {
        while next < id {
            sym.stack_offsets.push(sym.stack_locations.len() as u32);
            next += 1;
        }
        if locs.iter().any(|l| !loc_live.get(*l as usize).copied().unwrap_or(false)) {
            return Err(bad("a stack refers to an unknown location"));
        }
        if sym.stack(&locs) != id {
            return Err(dup());
        }
        next += 1;
    }
    while next < c.stacks {
        sym.stack_offsets.push(sym.stack_locations.len() as u32);
        next += 1;
    }
    for (i, (labels, ty)) in snap.series.iter().enumerate() {
        if sym.series_id(labels, ty) != i as u32 {
            return Err(dup());
        }
    }
    sym.label_sets.resize(c.label_sets as usize, Vec::new());
    for (id, set) in snap.label_sets {
        if sym.label_set_ids.insert(set.clone(), id).is_some() {
            return Err(dup());
        }
        sym.label_sets[id as usize] = set;
    }
    debug_assert_eq!(sym.counts(), c);
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// Loads the manifest's symbols and parts into `inner`.
pub(super) fn load(dir: &Path, inner: &mut Inner) -> Result<(), OpenError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mpath = dir.join(MANIFEST);
    let manifest: Manifest = match fs::read(&mpath) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| OpenError::Corrupted { path: mpath.clone(), detail: e.to_string() })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OpenError::Io { path: mpath, source: e }),
    };
    if manifest.version != MANIFEST_VERSION {
        return Err(OpenError::Corrupted { path: mpath, detail: format!("unknown version {}", manifest.version) });
    }
    for seq in &manifest.symbols {
        let path = symbols_path(dir, *seq);
        let data = fs::read(&path).map_err(io_err(&path))?;
        let delta = match decode_symbols(&path, &data)? {
            SymbolsFile::Delta(d) => d,
            SymbolsFile::Snapshot(snap) => {
                load_snapshot(&path, &mut inner.symbols, snap)?;
                continue;
            }
        };
        let sym = &mut inner.symbols;
        let mismatch = || OpenError::Corrupted { path: path.clone(), detail: "symbol ids out of sequence".into() };
        if delta.start != sym.counts() {
            return Err(mismatch());
        }
        for m in &delta.mappings {
            let expect = sym.mappings.len() as u32;
            if sym.mapping(m) != expect {
                return Err(mismatch());
            }
        }
        for f in &delta.functions {
            let expect = sym.functions.len() as u32;
            if sym.function(f) != expect {
                return Err(mismatch());
            }
        }
        for l in delta.locations {
            let expect = sym.locations.len() as u32;
            if l.mapping as usize > sym.mappings.len()
                || l.lines.iter().any(|(f, _)| *f as usize >= sym.functions.len())
            {
                return Err(OpenError::Corrupted {
                    path: path.clone(),
                    detail: "a location refers to an unknown symbol".into(),
                });
            }
            if sym.location(l) != expect {
                return Err(mismatch());
            }
        }
        for s in &delta.stacks {
            let expect = (sym.stack_offsets.len() - 1) as u32;
            if s.iter().any(|l| *l as usize >= sym.locations.len()) {
                return Err(OpenError::Corrupted {
                    path: path.clone(),
                    detail: "a stack refers to an unknown location".into(),
                });
            }
            if sym.stack(s) != expect {
                return Err(mismatch());
            }
        }
        for (labels, ty) in &delta.series {
            let expect = sym.series.len() as u32;
            if sym.series_id(labels, ty) != expect {
                return Err(mismatch());
            }
        }
        for ls in &delta.label_sets {
            let expect = sym.label_sets.len() as u32;
            if sym.label_set(ls) != expect {
                return Err(mismatch());
            }
        }
    }
    inner.symbol_files = manifest.symbols.clone();
    inner.symbols_persisted = inner.symbols.counts();
    for meta in &manifest.parts {
        let path = part_path(dir, meta.seq);
        let (part, traced) = read_part(&path, meta, inner)?;
        inner.samples += u64::from(part.rows);
        index_traces(inner, &traced);
        inner.parts.push(part);
    }
    inner.next_seq = manifest.next_seq.max(inner.parts.last().map_or(1, |p| p.seq + 1));
    inner.persisted = manifest.wal_pos;
    inner.applied = manifest.wal_pos;
    Ok(())
}

/// Adds `(span, label set)` pairs whose label set has a `trace_id` to the trace → spans map.
fn index_traces(inner: &mut Inner, pairs: &[(u64, u32)]) {
    for &(span, set) in pairs {
        let set = &inner.symbols.label_sets[set as usize];
        if let Some(t) = set.iter().find(|l| l.name == "trace_id").and_then(|l| TraceId::from_hex(&l.value)) {
            let spans = inner.trace_spans.entry(t).or_default();
            let s = crate::model::SpanId(span.to_be_bytes());
            if !spans.contains(&s) {
                spans.push(s);
            }
        }
    }
}

/// Loads a persisted part's profile rows and span index (not its samples: those stay in the file).
fn read_part(path: &Path, meta: &PartMeta, inner: &Inner) -> Result<(Part, Vec<(u64, u32)>), OpenError> {
    let corrupt = |detail: String| OpenError::Corrupted { path: path.to_path_buf(), detail };
    let pfile = PartFile::open(path.to_path_buf()).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            OpenError::Io { path: path.to_path_buf(), source: e }
        }
        _ => corrupt(e.to_string()),
    })?;
    let file = File::open(path).map_err(io_err(path))?;
    // Every column: the stack column feeds the part's sums.
    let mask = ProjectionMask::roots(pfile.meta.parquet_schema(), 0..=COL_LABELS);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, pfile.meta.clone())
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| corrupt(e.to_string()))?;
    let mut part = Part::new(meta.seq);
    part.file_bytes = meta.bytes;
    part.sealed = true;
    part.persisted = true;
    let mut current: Option<(u32, ProfileRow)> = None;
    let mut rows: Vec<(u32, i64, u64, u32)> = Vec::new();
    let mut traced: Vec<(u64, u32)> = Vec::new();
    let n_series = inner.symbols.series.len() as u32;
    let n_sets = inner.symbols.label_sets.len() as u32;
    let n_stacks = inner.symbols.counts().stacks;
    let mut label_sets = roaring::RoaringBitmap::new();
    let mut last_set = 0u32;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        macro_rules! col {
            ($name:expr, $t:ty) => {
                batch
                    .column_by_name($name)
                    .and_then(|c| c.as_any().downcast_ref::<$t>())
                    .ok_or_else(|| corrupt(format!("column {} is missing or has the wrong type", $name)))?
            };
        }
        let (profile, series, time, dur, period) = (
            col!("profile", UInt32Array),
            col!("series", UInt32Array),
            col!("time_ns", Int64Array),
            col!("duration_ns", Int64Array),
            col!("period", Int64Array),
        );
        let (stack, value, span, labels) = (
            col!("stack", UInt32Array),
            col!("value", Int64Array),
            col!("span_id", UInt64Array),
            col!("labels", UInt32Array),
        );
        for i in 0..batch.num_rows() {
            let p = profile.value(i);
            if series.value(i) >= n_series || labels.value(i) >= n_sets || stack.value(i) >= n_stacks {
                return Err(corrupt(format!("row refers to an unknown series, stack or label set (profile {p})")));
            }
            if current.as_ref().is_none_or(|(cur, _)| *cur != p) {
                if let Some((_, row)) = current.take() {
                    part.push_profile(row, rows.drain(..), false);
                }
                let row = ProfileRow {
                    series: series.value(i),
                    time_ns: time.value(i),
                    duration_ns: dur.value(i),
                    period: period.value(i),
                    total: 0,
                    first: 0,
                    len: 0,
                };
                current = Some((p, row));
            }
            let s = if span.is_null(i) { 0 } else { span.value(i) };
            if s != 0 && labels.value(i) != 0 {
                traced.push((s, labels.value(i)));
            }
            if labels.value(i) != last_set {
                last_set = labels.value(i);
                label_sets.insert(last_set);
            }
            rows.push((stack.value(i), value.value(i), s, labels.value(i)));
        }
    }
    if let Some((_, row)) = current.take() {
        part.push_profile(row, rows.drain(..), false);
    }
    if u64::from(part.rows) != meta.rows {
        return Err(corrupt(format!("{} rows, the manifest says {}", part.rows, meta.rows)));
    }
    part.file = Some(pfile);
    label_sets.insert(0);
    part.finish_sums(label_sets);
    traced.sort_unstable();
    traced.dedup();
    Ok((part, traced))
}

fn meta_of(p: &Part) -> PartMeta {
    PartMeta {
        seq: p.seq,
        min_time_ns: p.min_time_ns,
        max_time_ns: p.max_time_ns,
        profiles: p.profiles.len() as u64,
        rows: u64::from(p.rows),
        bytes: p.file_bytes,
    }
}

/// Seals the head, writes unpersisted parts and new symbols, then the manifest.
pub(super) fn persist(dir: &Path, lock: &RwLock<Inner>) -> io::Result<()> {
    // 1. Seal: no more appends to the current head; capture the position and symbol counts.
    let (pos, counts, symbols_seq) = {
        let mut inner = lock.write();
        if let Some(head) = inner.parts.last_mut() {
            head.sealed = true;
        }
        // Symbols no part uses any more are collected once retention dropped enough rows.
        if inner.gc_due()
            && let Some(live) = inner.used_symbols()
        {
            inner.symbols.collect(&live);
            inner.dropped_rows = 0;
            inner.snapshot_needed = true;
            // The trace → spans map forgets spans no part holds any more.
            let mut spans: crate::FastMap<u64, ()> = crate::FastMap::default();
            for p in &inner.parts {
                spans.extend(p.span_index.keys().map(|k| (*k, ())));
            }
            inner.trace_spans.retain(|_, ids| {
                ids.retain(|s| spans.contains_key(&u64::from_be_bytes(s.0)));
                !ids.is_empty()
            });
            inner.trace_spans.shrink_to_fit();
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        (inner.applied, inner.symbols.counts(), seq)
    };
    // 2. Copy what must be written, under the read lock only.
    let (delta, batches) = {
        let inner = lock.read();
        let from = inner.symbols_persisted;
        let sym = &inner.symbols;
        let delta = if inner.snapshot_needed {
            Some(SymbolsFile::Snapshot(snapshot_of(sym, counts)))
        } else {
            (from != counts).then(|| {
                SymbolsFile::Delta(SymbolsDelta {
                    start: from,
                    functions: sym.functions[from.functions as usize..counts.functions as usize].to_vec(),
                    locations: sym.locations[from.locations as usize..counts.locations as usize].to_vec(),
                    stacks: (from.stacks..counts.stacks).map(|s| sym.stack_of(s).to_vec()).collect(),
                    series: sym.series[from.series as usize..counts.series as usize]
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (sym.plain_labels(from.series + i as u32), s.profile_type.clone()))
                        .collect(),
                    label_sets: sym.label_sets[from.label_sets as usize..counts.label_sets as usize].to_vec(),
                    mappings: sym.mappings[from.mappings as usize..counts.mappings as usize].to_vec(),
                })
            })
        };
        let mut batches = Vec::new();
        for p in inner.parts.iter().filter(|p| p.sealed && !p.persisted) {
            if p.rows == 0 {
                batches.push((p.seq, None));
            } else {
                batches.push((p.seq, Some(part_batch(p)?)));
            }
        }
        (delta, batches)
    };
    // 3. Write files (no lock held).
    let symbols_seq = match &delta {
        Some(d) => {
            let path = symbols_path(dir, symbols_seq);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            write_atomic(dir, &name, &encode_symbols(d)?)?;
            Some(symbols_seq)
        }
        None => None,
    };
    let mut sizes = Vec::new();
    let mut files = Vec::new();
    for (seq, batch) in &batches {
        let bytes = match batch {
            Some(b) => {
                let path = part_path(dir, *seq);
                let bytes = write_parquet(&path, b)?;
                files.push((*seq, PartFile::open(path)?));
                bytes
            }
            None => 0,
        };
        sizes.push((*seq, bytes));
    }
    // 4. Manifest, then publish in memory.
    let mut inner = lock.write();
    for (seq, bytes) in &sizes {
        if let Some(p) = inner.parts.iter_mut().find(|p| p.seq == *seq) {
            p.file_bytes = *bytes;
        }
    }
    let snapshot = matches!(delta, Some(SymbolsFile::Snapshot(_)));
    let (mut symbols, replaced) =
        if snapshot { (Vec::new(), inner.symbol_files.clone()) } else { (inner.symbol_files.clone(), Vec::new()) };
    symbols.extend(symbols_seq);
    let written: Vec<u64> = sizes.iter().filter(|(_, b)| *b > 0).map(|(s, _)| *s).collect();
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        wal_pos: pos,
        next_seq: inner.next_seq,
        symbols: symbols.clone(),
        parts: inner.parts.iter().filter(|p| p.persisted || written.contains(&p.seq)).map(meta_of).collect(),
    };
    write_atomic(dir, MANIFEST, &serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?)?;
    for (seq, _) in &sizes {
        if let Some(p) = inner.parts.iter_mut().find(|p| p.seq == *seq) {
            p.persisted = true;
        }
    }
    // From now on the rows of written parts are read from their files.
    for (seq, file) in files {
        if let Some(p) = inner.parts.iter_mut().find(|p| p.seq == seq) {
            let label_sets = super::id_set(p.cols.label_sets.iter().copied());
            p.file = Some(file);
            p.cols = super::Columns::default();
            p.finish_sums(label_sets);
        }
    }
    // Empty sealed parts hold nothing: drop them.
    inner.parts.retain(|p| !(p.persisted && p.rows == 0));
    inner.symbol_files = symbols;
    inner.symbols_persisted = counts;
    inner.persisted = inner.persisted.max(pos);
    if snapshot {
        inner.snapshot_needed = false;
    }
    drop(inner);
    // The snapshot replaced the older symbols files.
    for seq in replaced {
        match fs::remove_file(symbols_path(dir, seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes persisted parts older than `cutoff_ns`, then oldest first while over `max_bytes`.
pub(super) fn retain(dir: &Path, lock: &RwLock<Inner>, cutoff_ns: i64, max_bytes: u64) -> io::Result<()> {
    let mut inner = lock.write();
    let mut total: u64 = inner.parts.iter().filter(|p| p.persisted).map(|p| p.file_bytes).sum();
    let mut doomed = Vec::new();
    for p in inner.parts.iter().filter(|p| p.persisted) {
        let over = max_bytes > 0 && total > max_bytes;
        if p.max_time_ns < cutoff_ns || over {
            doomed.push(p.seq);
            total -= p.file_bytes;
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    let removed: u64 = inner.parts.iter().filter(|p| doomed.contains(&p.seq)).map(|p| u64::from(p.rows)).sum();
    inner.parts.retain(|p| !doomed.contains(&p.seq));
    inner.samples -= removed;
    inner.dropped_rows += removed;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        wal_pos: inner.persisted,
        next_seq: inner.next_seq,
        symbols: inner.symbol_files.clone(),
        parts: inner.parts.iter().filter(|p| p.persisted).map(meta_of).collect(),
    };
    write_atomic(dir, MANIFEST, &serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?)?;
    drop(inner);
    for seq in doomed {
        match fs::remove_file(part_path(dir, seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The parts (by seq) one compaction would merge: the oldest run of at least
/// [`COMPACT_MIN_PARTS`] consecutive persisted small parts, cut at [`COMPACT_MAX_ROWS`] rows.
pub(super) fn compaction_run(parts: &[Part]) -> Option<Vec<u64>> {
    let mut run: Vec<u64> = Vec::new();
    let mut rows = 0u32;
    for p in parts {
        let small = p.persisted && p.file.is_some() && p.rows < COMPACT_SMALL_ROWS;
        if small && rows + p.rows <= COMPACT_MAX_ROWS {
            run.push(p.seq);
            rows += p.rows;
            continue;
        }
        if run.len() >= COMPACT_MIN_PARTS {
            return Some(run);
        }
        run.clear();
        rows = 0;
        if small {
            run.push(p.seq);
            rows = p.rows;
        }
    }
    (run.len() >= COMPACT_MIN_PARTS).then_some(run)
}

/// Merges one run of small persisted parts (see [`compaction_run`]) into a new part: the same
/// profiles in the same order, its sums, span index and used symbols rebuilt. The new file is written first, then a manifest listing it where the run stood, then
/// the old files are deleted; queries see the old parts until the swap, the new one after.
pub(super) fn compact(dir: &Path, lock: &RwLock<Inner>) -> io::Result<()> {
    // 1. Pick the run and copy what reading it needs.
    let (run, sources, seq) = {
        let mut inner = lock.write();
        let Some(run) = compaction_run(&inner.parts) else { return Ok(()) };
        let mut sources = Vec::new();
        for p in inner.parts.iter().filter(|p| run.contains(&p.seq)) {
            let file = p.file.as_ref().ok_or_else(|| io::Error::other("compacting a part without a file"))?;
            sources.push((
                file.path.clone(),
                file.meta.clone(),
                file.row_group_starts.clone(),
                p.profiles.clone(),
                p.rows,
            ));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        (run, sources, seq)
    };
    // 2. Read every row of the run (no lock: only `persist`, `retain` and `compact` change
    // persisted parts, and they hold the files mutex).
    let mut profiles: Vec<(ProfileRow, usize)> = Vec::new();
    let mut rows: Vec<Vec<RowVisit>> = Vec::new();
    for (k, (path, meta, row_group_starts, part_profiles, n)) in sources.into_iter().enumerate() {
        let file = PartFile { path, meta, row_group_starts };
        let mut got: Vec<RowVisit> = Vec::with_capacity(n as usize);
        file.read_rows(&[(0, n)], Need { spans: true, label_sets: true }, &mut |v| {
            got.push(v);
            Ok(())
        })?;
        if got.len() != n as usize {
            return Err(invalid(&file.path, "fewer rows than the part holds"));
        }
        profiles.extend(part_profiles.into_iter().map(|p| (p, k)));
        rows.push(got);
    }
    let mut part = Part::new(seq);
    {
        let inner = lock.read();
        let (n_stacks, n_sets) = (inner.symbols.counts().stacks, inner.symbols.label_sets.len() as u32);
        if rows.iter().flatten().any(|v| v.1 >= n_stacks || v.4 >= n_sets) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a part to compact names unknown symbols"));
        }
    }
    for (p, k) in &profiles {
        let src = &rows[*k][p.first as usize..(p.first + p.len) as usize];
        part.push_profile(*p, src.iter().map(|v| (v.1, v.2, v.3, v.4)), true);
    }
    drop(rows);
    // 3. Write it.
    let path = part_path(dir, seq);
    let bytes = write_parquet(&path, &part_batch(&part)?)?;
    let file = PartFile::open(path)?;
    part.file_bytes = bytes;
    part.sealed = true;
    part.persisted = true;
    let label_sets = super::id_set(part.cols.label_sets.iter().copied());
    part.file = Some(file);
    part.cols = super::Columns::default();
    part.finish_sums(label_sets);
    // 4. The manifest listing it where the run stood, then the swap in memory.
    let mut inner = lock.write();
    let mut metas = Vec::new();
    for p in inner.parts.iter().filter(|p| p.persisted) {
        if p.seq == run[0] {
            metas.push(meta_of(&part));
        } else if !run.contains(&p.seq) {
            metas.push(meta_of(p));
        }
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        wal_pos: inner.persisted,
        next_seq: inner.next_seq,
        symbols: inner.symbol_files.clone(),
        parts: metas,
    };
    write_atomic(dir, MANIFEST, &serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?)?;
    let mut parts = Vec::with_capacity(inner.parts.len());
    let mut part = Some(part);
    for p in std::mem::take(&mut inner.parts) {
        if p.seq == run[0] {
            parts.extend(part.take());
        } else if !run.contains(&p.seq) {
            parts.push(p);
        }
    }
    inner.parts = parts;
    drop(inner);
    for seq in run {
        match fs::remove_file(part_path(dir, seq)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> SymbolsSnapshot {
        SymbolsSnapshot {
            counts: SymbolCounts { functions: 2, locations: 2, stacks: 3, series: 0, label_sets: 2, mappings: 1 },
            mappings: vec![(0, Mapping { filename: "/bin/app".into(), ..Mapping::default() })],
            functions: vec![(1, Function { name: "f".into(), ..Function::default() })],
            locations: vec![(1, Location { address: 1, lines: vec![(1, 3)], mapping: 1 })],
            stacks: vec![(1, vec![1])],
            series: vec![],
            label_sets: vec![(1, vec![Label { name: "span_name".into(), value: "GET".into() }])],
        }
    }

    #[test]
    fn snapshots_load_with_placeholders_and_reject_bad_ones() {
        let path = Path::new("symbols-0000000000000001.bin");
        let bytes = encode_symbols(&SymbolsFile::Snapshot(snap())).unwrap();
        let SymbolsFile::Snapshot(back) = decode_symbols(path, &bytes).unwrap() else { panic!("not a snapshot") };
        let mut sym = Symbols::new();
        load_snapshot(path, &mut sym, back).unwrap();
        assert_eq!(sym.counts(), snap().counts);
        assert_eq!((sym.stack_of(0), sym.stack_of(1), sym.stack_of(2)), (&[][..], &[1][..], &[][..]));
        assert_eq!(sym.functions[1].name, "f");
        assert_eq!(sym.functions[0], Function::default());
        assert_eq!(sym.live_counts(), [1, 1, 1, 1, 2]);
        // New symbols get ids after the placeholders; a collected one comes back as new.
        assert_eq!(sym.function(&Function::default()), 2);
        assert_eq!(sym.stack(&[1]), 1);
        assert_eq!(sym.stack(&[]), 3);

        let rejects = |change: fn(&mut SymbolsSnapshot)| {
            let mut s = snap();
            change(&mut s);
            load_snapshot(path, &mut Symbols::new(), s).is_err()
        };
        assert!(rejects(|s| s.locations[0].1.lines[0].0 = 0), "a location naming a collected function");
        assert!(rejects(|s| s.locations[0].1.mapping = 2), "an unknown mapping");
        assert!(rejects(|s| s.stacks[0].1 = vec![0]), "a stack naming a collected location");
        assert!(rejects(|s| s.stacks.push((2, vec![1]))), "the same stack twice");
        assert!(rejects(|s| s.functions.insert(0, (1, Function::default()))), "ids not ascending");
        assert!(rejects(|s| s.counts.stacks = 1), "an id beyond the table size");
        assert!(rejects(|s| s.label_sets[0].0 = 0), "label set 0 is the empty set");
        let mut after_delta = Symbols::new();
        after_delta.function(&Function::default());
        assert!(load_snapshot(path, &mut after_delta, snap()).is_err(), "a snapshot must come first");
    }
}

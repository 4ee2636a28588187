//! One span file: a Parquet file of spans sorted by trace id, and its trace-id table (`.tid`).
//! Byte layouts: `storage/docs/format/traces.md`.
//!
//! Invariants: rows are sorted by trace id, and within one trace keep arrival order; the `.tid`
//! table lists every trace of the file once, sorted, with the rows it occupies; both files are
//! immutable once the manifest names them.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, FixedSizeBinaryBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue as PqKeyValue, PageIndexPolicy};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::{json, nested};
use crate::intern::Interner;
use crate::model::{KeyValue, Resource, Scope, Span, SpanEvent, SpanId, SpanKind, SpanLink, StatusCode, TraceId};
use crate::read::StoredSpan;
use crate::{FastMap, FastSet};

/// Version of the span file layout, in the Parquet key-value metadata `outpost.version`. Version 2
/// stores attributes, events and links as postcard bytes ([`nested`]); version 1 stored them as
/// OTLP/JSON text ([`json`]) and is still read (and upgraded when compaction rewrites it).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Version of the `.tid` layout (unchanged since format 1).
const TID_VERSION: u32 = 1;
const TID_MAGIC: &[u8; 4] = b"OTID";
const TID_ENTRY: usize = 40;
/// Span names and services kept per file summary; beyond it the summary says "any".
pub(crate) const SUMMARY_CAP: usize = 2000;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn pq(e: parquet::errors::ParquetError) -> io::Error {
    io::Error::other(e)
}

fn arrow_err(e: arrow_schema::ArrowError) -> io::Error {
    io::Error::other(e)
}

/// What the manifest records of a file: enough to prune it without opening it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct FileSummary {
    /// File number; the files are `<seq>.parquet` and `<seq>.tid`.
    pub seq: u64,
    /// Bytes of both files.
    pub bytes: u64,
    pub spans: u64,
    pub traces: u64,
    pub min_start_ns: i64,
    pub max_end_ns: i64,
    /// Distinct `service.name`s, sorted; `None` when over the cap (any service may be inside).
    pub services: Option<Vec<String>>,
    /// Distinct span names, sorted; `None` when over the cap.
    pub span_names: Option<Vec<String>>,
}

impl FileSummary {
    pub fn may_contain(&self, start_ns: i64, end_ns: i64, service: Option<&str>, name: Option<&str>) -> bool {
        let in_time = self.min_start_ns <= end_ns && self.max_end_ns >= start_ns;
        let has = |set: &Option<Vec<String>>, v: Option<&str>| match (set, v) {
            (Some(set), Some(v)) => set.binary_search_by(|s| s.as_str().cmp(v)).is_ok(),
            _ => true,
        };
        in_time && has(&self.services, service) && has(&self.span_names, name)
    }
}

/// One trace's place in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceEntry {
    pub trace_id: TraceId,
    pub first_row: u32,
    pub rows: u32,
    pub min_start_ns: i64,
    pub max_end_ns: i64,
}

/// An open span file: its summary, its trace table and its cached Parquet footer.
pub(crate) struct SpanFile {
    pub summary: FileSummary,
    pub parquet_path: PathBuf,
    pub tid_path: PathBuf,
    /// Sorted by trace id.
    pub traces: Vec<TraceEntry>,
    /// Cumulative first row of each row group, plus the total at the end.
    row_group_starts: Vec<u64>,
    meta: ArrowReaderMetadata,
    /// The file's format version (`outpost.version`): 1 or 2.
    pub(super) version: u32,
    pub(super) resources: Vec<Arc<Resource>>,
    pub(super) scopes: Vec<Arc<Scope>>,
}

pub(crate) fn parquet_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.parquet"))
}

pub(crate) fn tid_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016}.tid"))
}

/// The schema of format-2 files (what this version writes).
fn schema() -> SchemaRef {
    schema_of(FORMAT_VERSION)
}

/// The column names of the current format, in order.
#[cfg(test)]
pub(crate) fn schema_fields() -> Vec<String> {
    schema().fields().iter().map(|f| f.name().clone()).collect()
}

/// The schema of span files of format `version`: the same columns, with the nested fields as
/// postcard bytes (2) or JSON text (1).
fn schema_of(version: u32) -> SchemaRef {
    let f = |name: &str, dt: DataType, nullable: bool| Field::new(name, dt, nullable);
    let nested = if version == 1 { DataType::Utf8 } else { DataType::Binary };
    Arc::new(Schema::new(vec![
        f("trace_id", DataType::FixedSizeBinary(16), false),
        f("span_id", DataType::FixedSizeBinary(8), false),
        f("parent_span_id", DataType::FixedSizeBinary(8), true),
        f("trace_state", DataType::Utf8, false),
        f("flags", DataType::UInt32, false),
        f("name", DataType::Utf8, false),
        f("kind", DataType::Int32, false),
        f("start_time_unix_nano", DataType::Int64, false),
        f("end_time_unix_nano", DataType::Int64, false),
        f("duration_nano", DataType::Int64, false),
        f("status_code", DataType::Int32, false),
        f("status_message", DataType::Utf8, false),
        f("attributes", nested.clone(), false),
        f("dropped_attributes_count", DataType::UInt32, false),
        f("events", nested.clone(), false),
        f("dropped_events_count", DataType::UInt32, false),
        f("links", nested.clone(), false),
        f("dropped_links_count", DataType::UInt32, false),
        f("resource_index", DataType::UInt32, false),
        f("scope_index", DataType::UInt32, false),
        f("service_name", DataType::Utf8, false),
    ]))
}

/// How a span file is cut into row groups and pages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Rows per data page (at most; the writer's byte limit may cut pages smaller).
    pub page_rows: usize,
}

/// Columns that keep Parquet dictionary encoding: few distinct values per row group. The others
/// (ids, times, the JSON of attributes, events and links) are nearly all distinct, where a
/// dictionary costs hashing at write time and, at read time, a dictionary page to decode before
/// the one data page a lookup needs.
const DICTIONARY_COLUMNS: &[&str] = &[
    "trace_state",
    "flags",
    "name",
    "kind",
    "status_code",
    "status_message",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
    "resource_index",
    "scope_index",
    "service_name",
];

/// Columns stored with zstd; the others are not compressed. The dictionary columns above are
/// run-length coded indexes that zstd hardly shrinks, and `span_id` is random bytes; but Parquet
/// makes a zstd compression and decompression context for every column chunk it opens (about
/// 40 µs with their page faults), which was a third of a trace lookup's CPU when every column
/// had them.
const ZSTD_COLUMNS: &[&str] = &[
    "trace_id",
    "parent_span_id",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "duration_nano",
    "attributes",
    "events",
    "links",
];

/// The Parquet writer settings of a span file.
fn writer_props(layout: &Layout) -> io::Result<WriterProperties> {
    let row_group_rows = layout.row_group_rows.max(1);
    let page_rows = layout.page_rows.clamp(1, row_group_rows);
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).map_err(pq)?);
    let mut props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_max_row_group_row_count(Some(row_group_rows))
        // The page row limit is checked once per write batch.
        .set_data_page_row_count_limit(page_rows)
        .set_write_batch_size(page_rows)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page);
    for c in DICTIONARY_COLUMNS {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*c), true);
    }
    for c in ZSTD_COLUMNS {
        props = props.set_column_compression(ColumnPath::from(*c), zstd);
    }
    for c in NO_STATISTICS_COLUMNS {
        props = props.set_column_statistics_enabled(ColumnPath::from(*c), EnabledStatistics::None);
    }
    Ok(props
        .set_key_value_metadata(Some(vec![PqKeyValue::new("outpost.version".into(), FORMAT_VERSION.to_string())]))
        .build())
}

/// Writes `spans`, which must be sorted by trace id (a trace's spans in arrival order), as file
/// `seq` under `dir`, both files fsynced. Returns the opened file. `span_names` are the spans'
/// distinct names (any order), `None` when more than [`SUMMARY_CAP`]: the head gathers them.
pub(crate) fn write(
    dir: &Path,
    seq: u64,
    spans: &[&StoredSpan],
    span_names: Option<Vec<String>>,
    layout: &Layout,
) -> io::Result<SpanFile> {
    debug_assert!(spans.windows(2).all(|w| w[0].span.trace_id <= w[1].span.trace_id));
    let row_group_rows = layout.row_group_rows.max(1);

    // Per-file dictionaries of resources and scopes, by pointer first (the head shares them).
    let mut res_ix: FastMap<*const Resource, (u32, &str)> = FastMap::default();
    let mut scope_ix: FastMap<*const Scope, u32> = FastMap::default();
    let mut resources: Vec<serde_json::Value> = Vec::new();
    let mut scopes: Vec<serde_json::Value> = Vec::new();
    let mut res_dedup: Interner<Resource> = Interner::default();
    let mut res_by_shared: FastMap<*const Resource, u32> = FastMap::default();
    let mut scope_dedup: Interner<Scope> = Interner::default();
    let mut scope_by_shared: FastMap<*const Scope, u32> = FastMap::default();

    // Hash sets of borrowed names while writing (sorted at the end): cheaper per span than
    // ordered sets' string comparisons.
    let mut services: FastSet<&str> = FastSet::default();
    let mut services_over = false;
    let mut traces: Vec<TraceEntry> = Vec::new();
    let (mut min_start, mut max_end) = (i64::MAX, i64::MIN);

    let n = spans.len();
    let props = writer_props(layout)?;
    let ppath = parquet_path(dir, seq);
    let tpath = tid_path(dir, seq);
    let mut writer = ArrowWriter::try_new(File::create(&ppath)?, schema(), Some(props)).map_err(pq)?;
    // Rows go to the writer a few thousand at a time: building one batch of the whole head would
    // grow (and fault in) column buffers as large as the head.
    let batch_rows = WRITE_BATCH_ROWS.max(row_group_rows);
    let mut c = Columns::new(batch_rows.min(n));

    let mut nested = NestedSegment::default();
    for (row, &st) in spans.iter().enumerate() {
        let s = &st.span;
        if row % NESTED_SEGMENT_ROWS == 0 {
            nested.encode(&spans[row..(row + NESTED_SEGMENT_ROWS).min(n)]);
        }
        let [attributes, events, links] = nested.get(row % NESTED_SEGMENT_ROWS);
        // The resource's number and `service.name`, looked up once per distinct resource.
        let rp = Arc::as_ptr(&st.resource);
        let (ri, service) = match res_ix.get(&rp) {
            Some(&found) => found,
            None => {
                let shared = res_dedup.intern((*st.resource).clone());
                let ix = *res_by_shared.entry(Arc::as_ptr(&shared)).or_insert_with(|| {
                    resources.push(json::resource_to_json(&shared));
                    (resources.len() - 1) as u32
                });
                let service = st.resource.attr_str("service.name").unwrap_or("");
                if !services_over && services.insert(service) {
                    services_over = services.len() > SUMMARY_CAP;
                }
                res_ix.insert(rp, (ix, service));
                (ix, service)
            }
        };
        let sp = Arc::as_ptr(&st.scope);
        let si = match scope_ix.get(&sp) {
            Some(&ix) => ix,
            None => {
                let shared = scope_dedup.intern((*st.scope).clone());
                let ix = *scope_by_shared.entry(Arc::as_ptr(&shared)).or_insert_with(|| {
                    scopes.push(json::scope_to_json(&shared));
                    (scopes.len() - 1) as u32
                });
                scope_ix.insert(sp, ix);
                ix
            }
        };
        min_start = min_start.min(s.start_time_ns);
        max_end = max_end.max(s.end_time_ns);
        match traces.last_mut() {
            Some(t) if t.trace_id == s.trace_id => {
                t.rows += 1;
                t.min_start_ns = t.min_start_ns.min(s.start_time_ns);
                t.max_end_ns = t.max_end_ns.max(s.end_time_ns);
            }
            _ => traces.push(TraceEntry {
                trace_id: s.trace_id,
                first_row: row as u32,
                rows: 1,
                min_start_ns: s.start_time_ns,
                max_end_ns: s.end_time_ns,
            }),
        }

        c.trace_id.append_value(s.trace_id.0).map_err(arrow_err)?;
        c.span_id.append_value(s.span_id.0).map_err(arrow_err)?;
        match s.parent_span_id {
            Some(p) => c.parent.append_value(p.0).map_err(arrow_err)?,
            None => c.parent.append_null(),
        }
        c.trace_state.append_value(&s.trace_state);
        c.flags.push(s.flags);
        c.name.append_value(&s.name);
        c.kind.push(s.kind.as_i32());
        c.start.push(s.start_time_ns);
        c.end.push(s.end_time_ns);
        c.duration.push(s.end_time_ns.saturating_sub(s.start_time_ns));
        c.status_code.push(s.status_code.as_i32());
        c.status_message.append_value(&s.status_message);
        c.attributes.append_value(attributes);
        c.dropped_attrs.push(s.dropped_attributes_count);
        c.events.append_value(events);
        c.dropped_events.push(s.dropped_events_count);
        c.links.append_value(links);
        c.dropped_links.push(s.dropped_links_count);
        c.resource_index.push(ri);
        c.scope_index.push(si);
        c.service_name.append_value(service);
        if c.len() >= batch_rows {
            writer.write(&c.finish()?).map_err(pq)?;
        }
    }

    if c.len() > 0 {
        writer.write(&c.finish()?).map_err(pq)?;
    }
    finish(writer, resources, scopes, &tpath, &traces)?;

    let bytes = fs::metadata(&ppath)?.len() + fs::metadata(&tpath)?.len();
    let summary = FileSummary {
        seq,
        bytes,
        spans: n as u64,
        traces: traces.len() as u64,
        min_start_ns: if n == 0 { 0 } else { min_start },
        max_end_ns: if n == 0 { 0 } else { max_end },
        services: (!services_over).then(|| sorted(services)),
        span_names: span_names.map(|mut v| {
            v.sort_unstable();
            v
        }),
    };
    SpanFile::open(dir, summary)
}

/// Rows whose nested columns [`NestedSegment`] encodes at a time (a few in tests, so that they
/// cross segments).
const NESTED_SEGMENT_ROWS: usize = if cfg!(test) { 5 } else { 65536 };

/// The postcard attributes, events and links of a run of rows, encoded visiting the spans in
/// memory order rather than row order. The rows (trace id order) jump all over the head, and the
/// nested fields are many small allocations; in memory (about arrival) order, neighbouring spans'
/// strings are neighbours too, so encoding costs far fewer cache misses, and the row-order pass
/// then copies one contiguous blob per span. Memory: the run's encoded bytes.
#[derive(Default)]
struct NestedSegment {
    bytes: Vec<u8>,
    /// Per row of the run: where its three cells start and end in `bytes`.
    at: Vec<[usize; 4]>,
    order: Vec<u32>,
}

impl NestedSegment {
    fn encode(&mut self, rows: &[&StoredSpan]) {
        self.bytes.clear();
        self.order.clear();
        self.order.extend(0..rows.len() as u32);
        self.order.sort_unstable_by_key(|&i| rows[i as usize] as *const StoredSpan as usize);
        self.at.clear();
        self.at.resize(rows.len(), [0; 4]);
        for &i in &self.order {
            let s = &rows[i as usize].span;
            let a = self.bytes.len();
            nested::write_attributes(&s.attributes, &mut self.bytes);
            let e = self.bytes.len();
            nested::write_events(&s.events, &mut self.bytes);
            let l = self.bytes.len();
            nested::write_links(&s.links, &mut self.bytes);
            self.at[i as usize] = [a, e, l, self.bytes.len()];
        }
    }

    /// Row `i` of the run: its attributes, events and links cells.
    fn get(&self, i: usize) -> [&[u8]; 3] {
        let [a, e, l, end] = self.at.get(i).copied().unwrap_or_default();
        [&self.bytes[a..e], &self.bytes[e..l], &self.bytes[l..end]]
    }
}

/// Ends a span file: the resource and scope tables as key-value metadata, the Parquet file
/// closed and fsynced, then its trace-id table written next to it.
fn finish(
    mut writer: ArrowWriter<File>,
    resources: Vec<serde_json::Value>,
    scopes: Vec<serde_json::Value>,
    tpath: &Path,
    traces: &[TraceEntry],
) -> io::Result<()> {
    writer.append_key_value_metadata(PqKeyValue::new(
        "outpost.resources".into(),
        serde_json::Value::Array(resources).to_string(),
    ));
    writer.append_key_value_metadata(PqKeyValue::new(
        "outpost.scopes".into(),
        serde_json::Value::Array(scopes).to_string(),
    ));
    let file = writer.into_inner().map_err(pq)?;
    file.sync_all()?;
    write_tid(tpath, traces)
}

fn sorted(set: FastSet<&str>) -> Vec<String> {
    let mut v: Vec<String> = set.into_iter().map(str::to_owned).collect();
    v.sort_unstable();
    v
}

/// Columns without statistics: nearly every value distinct and long (JSON), where min/max would
/// cost a string comparison per row and prune nothing.
const NO_STATISTICS_COLUMNS: &[&str] =
    &["attributes", "events", "links", "span_id", "parent_span_id", "trace_state", "status_message"];

/// Index of `duration_nano` in [`schema`].
const DURATION_COLUMN: usize = 9;

/// Index of `service_name`, the last column of [`schema`].
pub(crate) const SERVICE_NAME_COLUMN: usize = 20;

/// Merges `inputs` (span files in data order) into file `seq` under `dir`, both files fsynced, and
/// returns it opened. Streaming and without decoding spans: the inputs' trace tables give the
/// merged row order (by trace id, then by input, so a trace keeps its arrival order), and rows
/// are copied as Arrow data about a row group at a time (a trace is never
/// split between windows); resources and scopes are deduplicated across the inputs and their
/// row indexes renumbered. Memory: the merged trace table and one window.
pub(crate) fn merge(dir: &Path, seq: u64, inputs: &[Arc<SpanFile>], layout: &Layout) -> io::Result<SpanFile> {
    // Resources and scopes: one list for the output, and per input the new number of each.
    let mut res_dedup: Interner<Resource> = Interner::default();
    let mut res_ix: FastMap<*const Resource, u32> = FastMap::default();
    let mut resources: Vec<serde_json::Value> = Vec::new();
    let mut scope_dedup: Interner<Scope> = Interner::default();
    let mut scope_ix: FastMap<*const Scope, u32> = FastMap::default();
    let mut scopes: Vec<serde_json::Value> = Vec::new();
    let mut res_maps: Vec<Vec<u32>> = Vec::with_capacity(inputs.len());
    let mut scope_maps: Vec<Vec<u32>> = Vec::with_capacity(inputs.len());
    for f in inputs {
        let mut m = Vec::with_capacity(f.resources.len());
        for r in &f.resources {
            let shared = res_dedup.intern((**r).clone());
            m.push(*res_ix.entry(Arc::as_ptr(&shared)).or_insert_with(|| {
                resources.push(json::resource_to_json(&shared));
                (resources.len() - 1) as u32
            }));
        }
        res_maps.push(m);
        let mut m = Vec::with_capacity(f.scopes.len());
        for sc in &f.scopes {
            let shared = scope_dedup.intern((**sc).clone());
            m.push(*scope_ix.entry(Arc::as_ptr(&shared)).or_insert_with(|| {
                scopes.push(json::scope_to_json(&shared));
                (scopes.len() - 1) as u32
            }));
        }
        scope_maps.push(m);
    }

    // The merged order, trace by trace.
    let mut order: Vec<(TraceId, u32, TraceEntry)> = Vec::new();
    for (fi, f) in inputs.iter().enumerate() {
        order.extend(f.traces.iter().map(|e| (e.trace_id, fi as u32, *e)));
    }
    order.sort_unstable_by_key(|a| (a.0, a.1));

    let ppath = parquet_path(dir, seq);
    let tpath = tid_path(dir, seq);
    let mut writer = ArrowWriter::try_new(File::create(&ppath)?, schema(), Some(writer_props(layout)?)).map_err(pq)?;
    let window_rows = layout.row_group_rows.max(1) as u64;
    let mut traces: Vec<TraceEntry> = Vec::new();
    let mut out_row: u64 = 0;
    let mut i = 0;
    while i < order.len() {
        let start = i;
        let mut rows = 0u64;
        while i < order.len() && (rows < window_rows || order[i].0 == order[i - 1].0) {
            rows += u64::from(order[i].2.rows);
            i += 1;
        }
        let window = &order[start..i];
        // Each input's rows in the window are contiguous (its rows are sorted by trace id).
        let mut ranges: Vec<Option<(u64, u64)>> = vec![None; inputs.len()];
        for (_, fi, e) in window {
            let (a, b) = (u64::from(e.first_row), u64::from(e.first_row) + u64::from(e.rows));
            let r = &mut ranges[*fi as usize];
            *r = Some(r.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
        // The batches the reader returns are sources as they are (no concatenation): per input,
        // its first source and the first row (relative to its range) of each of its batches.
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut source_of: Vec<(usize, Vec<u64>)> = vec![(usize::MAX, Vec::new()); inputs.len()];
        for (fi, r) in ranges.iter().enumerate() {
            let Some((a, b)) = *r else { continue };
            let path = &inputs[fi].parquet_path;
            let first = sources.len();
            let mut starts = Vec::new();
            let mut got = 0u64;
            for batch in inputs[fi].read_raw(a, b)? {
                if batch.num_rows() == 0 {
                    continue;
                }
                starts.push(got);
                got += batch.num_rows() as u64;
                let batch = match inputs[fi].version {
                    1 => upgrade_v1(&batch, path)?,
                    _ => batch,
                };
                sources.push(renumber(&batch, &res_maps[fi], &scope_maps[fi], path)?);
            }
            if got != b - a {
                return Err(invalid(format!("{}: rows missing", path.display())));
            }
            source_of[fi] = (first, starts);
        }
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(rows as usize);
        for (id, fi, e) in window {
            let (a, _) = ranges[*fi as usize].unwrap_or((0, 0));
            let (first, starts) = &source_of[*fi as usize];
            for r in u64::from(e.first_row)..u64::from(e.first_row) + u64::from(e.rows) {
                let rel = r - a;
                // `starts[0]` is 0 and `rel` is below the rows read (checked above).
                let k = starts.partition_point(|&s| s <= rel).saturating_sub(1);
                let start = starts.get(k).copied().unwrap_or(0);
                picks.push((first + k, (rel - start) as usize));
            }
            let rows = e.rows;
            let first_row = u32::try_from(out_row).map_err(|_| invalid("merged span file over 4G rows"))?;
            match traces.last_mut() {
                Some(t) if t.trace_id == *id => {
                    t.rows += rows;
                    t.min_start_ns = t.min_start_ns.min(e.min_start_ns);
                    t.max_end_ns = t.max_end_ns.max(e.max_end_ns);
                }
                _ => traces.push(TraceEntry { trace_id: *id, first_row, rows, ..*e }),
            }
            out_row += u64::from(rows);
        }
        let columns = (0..schema().fields().len())
            .map(|c| {
                let arrays: Vec<&dyn Array> = sources.iter().map(|b| b.column(c).as_ref()).collect();
                arrow_select::interleave::interleave(&arrays, &picks)
            })
            .collect::<Result<Vec<ArrayRef>, _>>()
            .map_err(arrow_err)?;
        writer.write(&RecordBatch::try_new(schema(), columns).map_err(arrow_err)?).map_err(pq)?;
    }
    finish(writer, resources, scopes, &tpath, &traces)?;

    // The summary from the inputs' summaries.
    let union = |get: fn(&FileSummary) -> &Option<Vec<String>>| -> Option<Vec<String>> {
        let mut all: Vec<String> = Vec::new();
        for f in inputs {
            all.extend(get(&f.summary).as_ref()?.iter().cloned());
        }
        all.sort_unstable();
        all.dedup();
        (all.len() <= SUMMARY_CAP).then_some(all)
    };
    let spans: u64 = inputs.iter().map(|f| f.summary.spans).sum();
    let nonempty = || inputs.iter().filter(|f| f.summary.spans > 0);
    let summary = FileSummary {
        seq,
        bytes: fs::metadata(&ppath)?.len() + fs::metadata(&tpath)?.len(),
        spans,
        traces: traces.len() as u64,
        min_start_ns: nonempty().map(|f| f.summary.min_start_ns).min().unwrap_or(0),
        max_end_ns: nonempty().map(|f| f.summary.max_end_ns).max().unwrap_or(0),
        services: union(|s| &s.services),
        span_names: union(|s| &s.span_names),
    };
    SpanFile::open(dir, summary)
}

/// `batch` (rows of one input) in the output schema, its resource and scope numbers mapped
/// through `res` and `scopes`.
fn renumber(batch: &RecordBatch, res: &[u32], scopes: &[u32], path: &Path) -> io::Result<RecordBatch> {
    let bad = || invalid(format!("{}: unexpected column layout", path.display()));
    let map = |col: usize, to: &[u32]| -> io::Result<ArrayRef> {
        let a = batch.column(col).as_any().downcast_ref::<UInt32Array>().ok_or_else(bad)?;
        let v = a
            .values()
            .iter()
            .map(|&i| to.get(i as usize).copied().ok_or_else(bad))
            .collect::<io::Result<Vec<u32>>>()?;
        Ok(Arc::new(UInt32Array::from(v)))
    };
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    if columns.len() != schema().fields().len() {
        return Err(bad());
    }
    columns[RESOURCE_INDEX_COLUMN] = map(RESOURCE_INDEX_COLUMN, res)?;
    columns[SCOPE_INDEX_COLUMN] = map(SCOPE_INDEX_COLUMN, scopes)?;
    RecordBatch::try_new(schema(), columns).map_err(arrow_err)
}

/// The attributes, events and links columns of a batch, in either format.
enum Nested<'a> {
    /// Format 2: postcard bytes.
    Proto(&'a BinaryArray, &'a BinaryArray, &'a BinaryArray),
    /// Format 1: OTLP/JSON text.
    Json(&'a StringArray, &'a StringArray, &'a StringArray),
}

type NestedRow = (Vec<KeyValue>, Vec<SpanEvent>, Vec<SpanLink>);

impl<'a> Nested<'a> {
    fn of(batch: &'a RecordBatch) -> Option<Nested<'a>> {
        let col = |i: usize| batch.columns().get(i).map(|c| c.as_any());
        let (a, e, l) = (col(ATTRIBUTES_COLUMN)?, col(EVENTS_COLUMN)?, col(LINKS_COLUMN)?);
        if let (Some(a), Some(e), Some(l)) = (a.downcast_ref(), e.downcast_ref(), l.downcast_ref()) {
            return Some(Nested::Proto(a, e, l));
        }
        Some(Nested::Json(a.downcast_ref()?, e.downcast_ref()?, l.downcast_ref()?))
    }

    /// Row `r` decoded; on corruption, which column and why.
    fn row(&self, r: usize) -> Result<NestedRow, (&'static str, String)> {
        match self {
            Nested::Proto(a, e, l) => Ok((
                nested::read_attributes(a.value(r)).map_err(|e| ("attributes", e))?,
                nested::read_events(e.value(r)).map_err(|e| ("events", e))?,
                nested::read_links(l.value(r)).map_err(|e| ("links", e))?,
            )),
            Nested::Json(a, e, l) => {
                let attrs: serde_json::Value =
                    serde_json::from_str(a.value(r)).map_err(|e| ("attributes", e.to_string()))?;
                Ok((
                    json::kvs_from_json(&attrs).map_err(|e| ("attributes", e))?,
                    json::events_from_json(e.value(r)).map_err(|e| ("events", e))?,
                    json::links_from_json(l.value(r)).map_err(|e| ("links", e))?,
                ))
            }
        }
    }
}

/// `batch` (rows of a format-1 file) with its JSON attributes, events and links re-encoded as
/// format 2's postcard bytes.
fn upgrade_v1(batch: &RecordBatch, path: &Path) -> io::Result<RecordBatch> {
    let bad = || invalid(format!("{}: unexpected column layout", path.display()));
    let corrupt = |what: &str, e: String| invalid(format!("{}: {what}: {e}", path.display()));
    let text = |col: usize| -> io::Result<&StringArray> { batch.column(col).as_any().downcast_ref().ok_or_else(bad) };
    let nested = Nested::Json(text(ATTRIBUTES_COLUMN)?, text(EVENTS_COLUMN)?, text(LINKS_COLUMN)?);
    let mut out = [BinaryBuilder::new(), BinaryBuilder::new(), BinaryBuilder::new()];
    let mut buf = Vec::new();
    for r in 0..batch.num_rows() {
        let (attributes, events, links) = nested.row(r).map_err(|(what, e)| corrupt(what, e))?;
        buf.clear();
        nested::write_attributes(&attributes, &mut buf);
        out[0].append_value(&buf);
        buf.clear();
        nested::write_events(&events, &mut buf);
        out[1].append_value(&buf);
        buf.clear();
        nested::write_links(&links, &mut buf);
        out[2].append_value(&buf);
    }
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    if columns.len() != schema().fields().len() {
        return Err(bad());
    }
    for (col, b) in [ATTRIBUTES_COLUMN, EVENTS_COLUMN, LINKS_COLUMN].into_iter().zip(out.iter_mut()) {
        columns[col] = Arc::new(b.finish());
    }
    RecordBatch::try_new(schema(), columns).map_err(arrow_err)
}

/// Indexes of `attributes`, `events` and `links` in [`schema`].
const ATTRIBUTES_COLUMN: usize = 12;
const EVENTS_COLUMN: usize = 14;
const LINKS_COLUMN: usize = 16;

/// Indexes of `resource_index` and `scope_index` in [`schema`].
const RESOURCE_INDEX_COLUMN: usize = 18;
const SCOPE_INDEX_COLUMN: usize = 19;

/// Rows handed to the Parquet writer at a time.
const WRITE_BATCH_ROWS: usize = 8192;

/// The column builders of one batch of rows, in [`schema`] order.
struct Columns {
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    parent: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    flags: Vec<u32>,
    name: StringBuilder,
    kind: Vec<i32>,
    start: Vec<i64>,
    end: Vec<i64>,
    duration: Vec<i64>,
    status_code: Vec<i32>,
    status_message: StringBuilder,
    attributes: BinaryBuilder,
    dropped_attrs: Vec<u32>,
    events: BinaryBuilder,
    dropped_events: Vec<u32>,
    links: BinaryBuilder,
    dropped_links: Vec<u32>,
    resource_index: Vec<u32>,
    scope_index: Vec<u32>,
    service_name: StringBuilder,
}

impl Columns {
    fn new(n: usize) -> Columns {
        Columns {
            trace_id: FixedSizeBinaryBuilder::with_capacity(n, 16),
            span_id: FixedSizeBinaryBuilder::with_capacity(n, 8),
            parent: FixedSizeBinaryBuilder::with_capacity(n, 8),
            trace_state: StringBuilder::new(),
            flags: Vec::with_capacity(n),
            name: StringBuilder::new(),
            kind: Vec::with_capacity(n),
            start: Vec::with_capacity(n),
            end: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            status_code: Vec::with_capacity(n),
            status_message: StringBuilder::new(),
            attributes: BinaryBuilder::new(),
            dropped_attrs: Vec::with_capacity(n),
            events: BinaryBuilder::new(),
            dropped_events: Vec::with_capacity(n),
            links: BinaryBuilder::new(),
            dropped_links: Vec::with_capacity(n),
            resource_index: Vec::with_capacity(n),
            scope_index: Vec::with_capacity(n),
            service_name: StringBuilder::new(),
        }
    }

    fn len(&self) -> usize {
        self.flags.len()
    }

    /// The rows so far as a batch; the builders start over (keeping their capacity where arrow
    /// does).
    fn finish(&mut self) -> io::Result<RecordBatch> {
        use std::mem::take;
        // The nested columns' builders restart with the bytes of this batch reserved, instead of
        // growing (and copying) from nothing again for every batch.
        let rows = self.len();
        let reserve = |b: &mut BinaryBuilder| {
            let bytes = b.values_slice().len();
            std::mem::replace(b, BinaryBuilder::with_capacity(rows, bytes)).finish()
        };
        let (attributes, events, links) =
            (reserve(&mut self.attributes), reserve(&mut self.events), reserve(&mut self.links));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(UInt32Array::from(take(&mut self.flags))),
            Arc::new(self.name.finish()),
            Arc::new(Int32Array::from(take(&mut self.kind))),
            Arc::new(Int64Array::from(take(&mut self.start))),
            Arc::new(Int64Array::from(take(&mut self.end))),
            Arc::new(Int64Array::from(take(&mut self.duration))),
            Arc::new(Int32Array::from(take(&mut self.status_code))),
            Arc::new(self.status_message.finish()),
            Arc::new(attributes),
            Arc::new(UInt32Array::from(take(&mut self.dropped_attrs))),
            Arc::new(events),
            Arc::new(UInt32Array::from(take(&mut self.dropped_events))),
            Arc::new(links),
            Arc::new(UInt32Array::from(take(&mut self.dropped_links))),
            Arc::new(UInt32Array::from(take(&mut self.resource_index))),
            Arc::new(UInt32Array::from(take(&mut self.scope_index))),
            Arc::new(self.service_name.finish()),
        ];
        RecordBatch::try_new(schema(), columns).map_err(arrow_err)
    }
}

fn write_tid(path: &Path, traces: &[TraceEntry]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(16 + traces.len() * TID_ENTRY + 4);
    buf.extend_from_slice(TID_MAGIC);
    buf.extend_from_slice(&TID_VERSION.to_le_bytes());
    buf.extend_from_slice(&(traces.len() as u64).to_le_bytes());
    for t in traces {
        buf.extend_from_slice(&t.trace_id.0);
        buf.extend_from_slice(&t.first_row.to_le_bytes());
        buf.extend_from_slice(&t.rows.to_le_bytes());
        buf.extend_from_slice(&t.min_start_ns.to_le_bytes());
        buf.extend_from_slice(&t.max_end_ns.to_le_bytes());
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let mut f = File::create(path)?;
    f.write_all(&buf)?;
    f.sync_all()
}

fn read_tid(path: &Path) -> io::Result<Vec<TraceEntry>> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    if buf.len() < 20 || &buf[..4] != TID_MAGIC {
        return Err(invalid(format!("{}: not a trace id table", path.display())));
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(invalid(format!("{}: checksum mismatch", path.display())));
    }
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(a)
    };
    let version = u32_at(body, 4);
    if version != TID_VERSION {
        return Err(invalid(format!("{}: unsupported version {version}", path.display())));
    }
    let count = u64_at(body, 8) as usize;
    if body.len() != 16 + count * TID_ENTRY {
        return Err(invalid(format!("{}: truncated", path.display())));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let e = &body[16 + i * TID_ENTRY..16 + (i + 1) * TID_ENTRY];
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[..16]);
        out.push(TraceEntry {
            trace_id: TraceId(id),
            first_row: u32_at(e, 16),
            rows: u32_at(e, 20),
            min_start_ns: u64_at(e, 24) as i64,
            max_end_ns: u64_at(e, 32) as i64,
        });
    }
    Ok(out)
}

impl SpanFile {
    /// Opens file `summary.seq` under `dir`: reads its trace table and its Parquet footer.
    pub fn open(dir: &Path, summary: FileSummary) -> io::Result<SpanFile> {
        let parquet_path = parquet_path(dir, summary.seq);
        let tid_path = tid_path(dir, summary.seq);
        let traces = read_tid(&tid_path)?;
        let file = File::open(&parquet_path)?;
        // With the offset index (page locations; the column index is not needed and not loaded),
        // a lookup reads and decodes only the pages holding its rows without touching the others;
        // files written without one are skipped through page by page, reading each header.
        let meta = ArrowReaderMetadata::load(
            &file,
            ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional),
        )
        .map_err(pq)?;
        let pmeta = meta.metadata();
        let mut row_group_starts = Vec::with_capacity(pmeta.num_row_groups() + 1);
        let mut total = 0u64;
        for rg in pmeta.row_groups() {
            row_group_starts.push(total);
            total += rg.num_rows() as u64;
        }
        row_group_starts.push(total);
        let kv_text = |key: &str| -> io::Result<&str> {
            pmeta
                .file_metadata()
                .key_value_metadata()
                .and_then(|kvs| kvs.iter().find(|kv| kv.key == key))
                .and_then(|kv| kv.value.as_deref())
                .ok_or_else(|| invalid(format!("{}: missing {key}", parquet_path.display())))
        };
        let kv = |key: &str| -> io::Result<serde_json::Value> {
            serde_json::from_str(kv_text(key)?).map_err(|e| invalid(format!("{}: {key}: {e}", parquet_path.display())))
        };
        let version = match kv_text("outpost.version")?.trim().parse::<u32>() {
            Ok(v @ 1..=FORMAT_VERSION) => v,
            _ => {
                return Err(invalid(format!(
                    "{}: unsupported span file version {:?}",
                    parquet_path.display(),
                    kv_text("outpost.version")?
                )));
            }
        };
        if meta.schema().fields() != schema_of(version).fields() {
            return Err(invalid(format!("{}: unexpected columns for version {version}", parquet_path.display())));
        }
        let list = |v: serde_json::Value| v.as_array().cloned().unwrap_or_default();
        let resources = list(kv("outpost.resources")?)
            .iter()
            .map(|v| json::resource_from_json(v).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let scopes = list(kv("outpost.scopes")?)
            .iter()
            .map(|v| json::scope_from_json(v).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Ok(SpanFile { summary, parquet_path, tid_path, traces, row_group_starts, meta, version, resources, scopes })
    }

    /// Where `id` lies in this file.
    pub fn find(&self, id: &TraceId) -> Option<&TraceEntry> {
        self.traces.binary_search_by(|t| t.trace_id.cmp(id)).ok().map(|i| &self.traces[i])
    }

    /// Reads the rows `ranges` (sorted, disjoint, row numbers of the file) and returns their spans
    /// in row order.
    pub fn read_rows(&self, ranges: &[(u64, u64)]) -> io::Result<Vec<StoredSpan>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        // Row groups touched, and a selection over their concatenated rows.
        let crate::parquet_rows::RowPlan { groups, selectors, .. } =
            crate::parquet_rows::plan(&self.row_group_starts, ranges);
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        // Every column but the last, `service_name` (a copy of a resource attribute, for search):
        // one column reader fewer per lookup; the indexes of the others are unchanged.
        let mask = ProjectionMask::roots(self.meta.metadata().file_metadata().schema_descr(), 0..SERVICE_NAME_COLUMN);
        let file = File::open(&self.parquet_path)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(groups)
            .with_row_selection(RowSelection::from(selectors))
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(pq)?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(arrow_err)?;
            self.decode(&batch, &mut out)?;
        }
        Ok(out)
    }

    /// The `duration_nano` column alone for the rows `ranges` (sorted, disjoint), in row order:
    /// what a duration filter needs to pick traces before any span is decoded.
    pub fn read_durations(&self, ranges: &[(u64, u64)]) -> io::Result<Vec<i64>> {
        let crate::parquet_rows::RowPlan { groups, selectors, .. } =
            crate::parquet_rows::plan(&self.row_group_starts, ranges);
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mask = ProjectionMask::roots(self.meta.metadata().file_metadata().schema_descr(), [DURATION_COLUMN]);
        let file = File::open(&self.parquet_path)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(groups)
            .with_row_selection(RowSelection::from(selectors))
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(pq)?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(arrow_err)?;
            let col = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| invalid(format!("{}: unexpected duration column", self.parquet_path.display())))?;
            out.extend_from_slice(col.values());
        }
        Ok(out)
    }

    /// The rows `start..end` as Arrow data, every column, nothing decoded into spans, in row order
    /// (the reader's batches, not concatenated; none when the range is empty).
    fn read_raw(&self, start: u64, end: u64) -> io::Result<Vec<RecordBatch>> {
        let crate::parquet_rows::RowPlan { groups, selectors, .. } =
            crate::parquet_rows::plan(&self.row_group_starts, &[(start, end)]);
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let file = File::open(&self.parquet_path)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(groups)
            .with_row_selection(RowSelection::from(selectors))
            .with_batch_size(8192)
            .build()
            .map_err(pq)?;
        reader.collect::<Result<Vec<_>, _>>().map_err(arrow_err)
    }

    fn decode(&self, batch: &RecordBatch, out: &mut Vec<StoredSpan>) -> io::Result<()> {
        let bad = || invalid(format!("{}: unexpected column layout", self.parquet_path.display()));
        macro_rules! col {
            ($i:expr, $t:ty) => {
                batch.column($i).as_any().downcast_ref::<$t>().ok_or_else(bad)?
            };
        }
        let trace_id = col!(0, FixedSizeBinaryArray);
        let span_id = col!(1, FixedSizeBinaryArray);
        let parent = col!(2, FixedSizeBinaryArray);
        let trace_state = col!(3, StringArray);
        let flags = col!(4, UInt32Array);
        let name = col!(5, StringArray);
        let kind = col!(6, Int32Array);
        let start = col!(7, Int64Array);
        let end = col!(8, Int64Array);
        let status_code = col!(10, Int32Array);
        let status_message = col!(11, StringArray);
        let nested = Nested::of(batch).ok_or_else(bad)?;
        let dropped_attrs = col!(13, UInt32Array);
        let dropped_events = col!(15, UInt32Array);
        let dropped_links = col!(17, UInt32Array);
        let resource_index = col!(18, UInt32Array);
        let scope_index = col!(19, UInt32Array);
        let corrupt = |what: &str, e: String| invalid(format!("{}: {what}: {e}", self.parquet_path.display()));
        for r in 0..batch.num_rows() {
            let (attributes, events, links) = nested.row(r).map_err(|(what, e)| corrupt(what, e))?;
            let span = Span {
                trace_id: TraceId::from_slice(trace_id.value(r)).ok_or_else(bad)?,
                span_id: SpanId::from_slice(span_id.value(r)).ok_or_else(bad)?,
                parent_span_id: if parent.is_null(r) { None } else { SpanId::from_slice(parent.value(r)) },
                trace_state: trace_state.value(r).to_owned(),
                flags: flags.value(r),
                name: name.value(r).to_owned(),
                kind: SpanKind::from_i32(kind.value(r)),
                start_time_ns: start.value(r),
                end_time_ns: end.value(r),
                attributes,
                dropped_attributes_count: dropped_attrs.value(r),
                events,
                dropped_events_count: dropped_events.value(r),
                links,
                dropped_links_count: dropped_links.value(r),
                status_code: StatusCode::from_i32(status_code.value(r)),
                status_message: status_message.value(r).to_owned(),
            };
            let resource = self.resources.get(resource_index.value(r) as usize).ok_or_else(bad)?;
            let scope = self.scopes.get(scope_index.value(r) as usize).ok_or_else(bad)?;
            out.push(StoredSpan { resource: Arc::clone(resource), scope: Arc::clone(scope), span });
        }
        Ok(())
    }

    /// Removes both files.
    pub fn delete(&self) -> io::Result<()> {
        for p in [&self.parquet_path, &self.tid_path] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

//! One time partition (format version 2): the chunks of the records whose timestamps fall in
//! `[start_ns, start_ns + partition_ns)`, in `<dir>/part-<start seconds>`:
//!
//! - `chunks-<gen>.dat`: one data file per flush, a sequence of chunk frames ([`super::chunk`]);
//! - `index/`: a tantivy index with one document per chunk: stream id, time bounds, location,
//!   row count as fast fields, and the chunk's distinct body tokens ([`super::tokens`]).
//!
//! Invariants: files and documents are only ever added. A data file is written and fsynced before
//! the index commit that refers to it; every commit carries the payload
//! `{"version":2,"gen":G,"wal_segment":S,"wal_offset":O,"max_seq":N}`, `G` the newest data file
//! it refers to, so a data file with a larger number is a torn flush and is deleted at open. A
//! [`Partition`] value is an immutable snapshot; the engine swaps in a new one after each commit.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use tantivy::collector::DocSetCollector;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions};
use tantivy::{Index, IndexReader, ReloadPolicy, Searcher, TantivyDocument, Term};

use super::chunk::{self, Bloom};
use super::tokens;
use crate::model::TraceId;
use crate::wal::WalPos;

/// Version of the partition layout.
pub(super) const FORMAT_VERSION: u32 = 2;

const INDEX_DIR: &str = "index";

/// Index segments of a partition before a commit lets tantivy merge them.
const MERGE_AT_SEGMENTS: usize = 32;

/// The schema's fields.
#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub stream: Field,
    pub min_ts: Field,
    pub max_ts: Field,
    pub rows: Field,
    pub file: Field,
    pub offset: Field,
    pub len: Field,
    pub tokens: Field,
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fast = || NumericOptions::default().set_fast();
    let stream = b.add_u64_field("stream", NumericOptions::default().set_indexed().set_fast());
    let min_ts = b.add_i64_field("min_ts", fast());
    let max_ts = b.add_i64_field("max_ts", fast());
    let rows = b.add_u64_field("rows", fast());
    let file = b.add_u64_field("file", fast());
    let offset = b.add_u64_field("offset", fast());
    let len = b.add_u64_field("len", fast());
    let tokens = b.add_text_field(
        "tokens",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokens::TOKENIZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        ),
    );
    (b.build(), Fields { stream, min_ts, max_ts, rows, file, offset, len, tokens })
}

/// The commit payload.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
pub(super) struct Payload {
    pub version: u32,
    #[serde(rename = "gen")]
    pub fgen: u64,
    pub wal_segment: u64,
    pub wal_offset: u64,
    pub max_seq: u64,
}

/// Where a chunk is and what it covers.
#[derive(Clone, Copy, Debug)]
pub(super) struct ChunkMeta {
    pub stream: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub rows: u32,
    pub file: u64,
    pub offset: u64,
    pub len: u64,
}

/// A chunk ready for [`Partition::append`]: its frame in the new data file and its tokens.
pub(super) struct NewChunk {
    pub meta: ChunkMeta,
    pub tokens: String,
}

/// A snapshot of one partition.
#[derive(Clone)]
pub(super) struct Partition {
    pub start_ns: i64,
    pub end_ns: i64,
    pub dir: PathBuf,
    index: Index,
    reader: IndexReader,
    searcher: Searcher,
    pub committed: WalPos,
    pub max_seq: u64,
    pub fgen: u64,
    /// Every chunk, in index order (segment by segment).
    pub chunks: Arc<Vec<ChunkMeta>>,
    /// First chunk number of each index segment.
    seg_base: Arc<Vec<usize>>,
    files: Arc<BTreeMap<u64, Arc<DataFile>>>,
    /// Stream ids with at least one record here.
    pub streams: Arc<BTreeSet<u32>>,
    pub min_ts: i64,
    pub max_ts: i64,
    pub bytes: u64,
    /// Records.
    pub docs: u64,
}

fn tantivy_err(e: tantivy::TantivyError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

pub(super) fn dir_name(start_ns: i64) -> String {
    format!("part-{}", start_ns.div_euclid(1_000_000_000))
}

/// `part-<seconds>` → start in ns.
pub(super) fn parse_dir_name(name: &str) -> Option<i64> {
    name.strip_prefix("part-")?.parse::<i64>().ok()?.checked_mul(1_000_000_000)
}

fn file_name(fgen: u64) -> String {
    format!("chunks-{fgen}.dat")
}

fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("chunks-")?.strip_suffix(".dat")?.parse().ok()
}

/// Linux's default `fault_around_bytes`: a read fault on a file map maps the page-cache pages of
/// the aligned window of this size around the faulting page.
const FAULT_AROUND: usize = 64 << 10;

/// The largest page-cache folio the kernel may map at once (a PMD, 2 MiB on x86-64).
const FOLIO_MAX: usize = 2 << 20;

/// A data file: mapped for reading chunks, and open for reading parts of one (bloom filters)
/// without mapping it.
struct DataFile {
    map: Mmap,
    file: std::fs::File,
}

fn map_file(path: &Path) -> std::io::Result<DataFile> {
    let file = std::fs::File::open(path)?;
    Ok(DataFile { map: crate::mmap::map_immutable(&file)?, file })
}

/// What a scan wants from a partition.
pub(super) struct Filter<'a> {
    /// Wanted stream ids, sorted; `None` = all.
    pub streams: Option<&'a [u32]>,
    pub start: i64,
    pub end: i64,
    pub trace_id: Option<TraceId>,
    pub line_contains: &'a [String],
}

impl Partition {
    /// Opens (or creates) the partition in `dir`, dropping data files no commit refers to.
    pub fn open(dir: &Path, start_ns: i64, partition_ns: i64, fields: Fields) -> std::io::Result<Partition> {
        let idir = dir.join(INDEX_DIR);
        let index = if idir.join("meta.json").exists() {
            Index::open_in_dir(&idir).map_err(tantivy_err)?
        } else {
            std::fs::create_dir_all(&idir)?;
            Index::builder().schema(schema().0).create_in_dir(&idir).map_err(tantivy_err)?
        };
        index.tokenizers().register(tokens::TOKENIZER, tokens::analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(tantivy_err)?;
        let payload: Payload = index
            .load_metas()
            .map_err(tantivy_err)?
            .payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default();
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let Some(fgen) = e.file_name().to_str().and_then(parse_file_name) else { continue };
            if fgen > payload.fgen {
                // Written by a flush whose commit never happened.
                std::fs::remove_file(e.path())?;
            } else {
                files.insert(fgen, Arc::new(map_file(&e.path())?));
            }
        }
        let mut p = Partition {
            start_ns,
            end_ns: start_ns.saturating_add(partition_ns),
            dir: dir.to_path_buf(),
            searcher: reader.searcher(),
            index,
            reader,
            committed: WalPos { segment: payload.wal_segment, offset: payload.wal_offset },
            max_seq: payload.max_seq,
            fgen: payload.fgen,
            chunks: Arc::default(),
            seg_base: Arc::default(),
            files: Arc::new(files),
            streams: Arc::default(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            bytes: 0,
            docs: 0,
        };
        p.refresh(fields)?;
        Ok(p)
    }

    /// Rebuilds the chunk table and statistics from the current searcher.
    fn refresh(&mut self, fields: Fields) -> std::io::Result<()> {
        let _ = fields;
        let mut chunks = Vec::new();
        let mut seg_base = Vec::new();
        for seg in self.searcher.segment_readers() {
            seg_base.push(chunks.len());
            let ff = seg.fast_fields();
            let u = |n: &str| ff.u64(n).map_err(tantivy_err);
            let (stream, rows, file, offset, len) = (u("stream")?, u("rows")?, u("file")?, u("offset")?, u("len")?);
            let (min_ts, max_ts) = (ff.i64("min_ts").map_err(tantivy_err)?, ff.i64("max_ts").map_err(tantivy_err)?);
            // Documents are never deleted, so doc ids are dense.
            for d in 0..seg.max_doc() {
                chunks.push(ChunkMeta {
                    stream: stream.first(d).unwrap_or(0) as u32,
                    min_ts: min_ts.first(d).unwrap_or(0),
                    max_ts: max_ts.first(d).unwrap_or(0),
                    rows: rows.first(d).unwrap_or(0) as u32,
                    file: file.first(d).unwrap_or(0),
                    offset: offset.first(d).unwrap_or(0),
                    len: len.first(d).unwrap_or(0),
                });
            }
        }
        self.streams = Arc::new(chunks.iter().map(|c| c.stream).collect());
        self.min_ts = chunks.iter().map(|c| c.min_ts).min().unwrap_or(i64::MAX);
        self.max_ts = chunks.iter().map(|c| c.max_ts).max().unwrap_or(i64::MIN);
        self.docs = chunks.iter().map(|c| u64::from(c.rows)).sum();
        self.chunks = Arc::new(chunks);
        self.seg_base = Arc::new(seg_base);
        self.bytes = dir_size(&self.dir);
        Ok(())
    }

    /// Writes `data` (the frames of `chunks`, whose offsets are into it) as the next data file,
    /// indexes the chunks and commits with `payload` (its `fgen` is set here); returns the new
    /// snapshot.
    pub fn append(
        &self,
        data: &[u8],
        chunks: Vec<NewChunk>,
        mut payload: Payload,
        fields: Fields,
    ) -> std::io::Result<Partition> {
        let fgen = self.fgen + 1;
        payload.fgen = fgen;
        let path = self.dir.join(file_name(fgen));
        {
            let mut f = std::fs::File::create(&path)?;
            f.write_all(data)?;
            f.sync_all()?;
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        // A small writer for this commit only: no indexing memory is held between flushes.
        let mut writer: tantivy::IndexWriter<TantivyDocument> =
            self.index.writer_with_num_threads(1, 15_000_000).map_err(tantivy_err)?;
        // Each commit adds a small segment; merging them all the time cost more CPU than the
        // rest of the flush, so segments are merged (tantivy's default policy) only once there
        // are many.
        if self.searcher.segment_readers().len() < MERGE_AT_SEGMENTS {
            writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        }
        for c in chunks {
            let mut doc = TantivyDocument::default();
            doc.add_u64(fields.stream, u64::from(c.meta.stream));
            doc.add_i64(fields.min_ts, c.meta.min_ts);
            doc.add_i64(fields.max_ts, c.meta.max_ts);
            doc.add_u64(fields.rows, u64::from(c.meta.rows));
            doc.add_u64(fields.file, fgen);
            doc.add_u64(fields.offset, c.meta.offset);
            doc.add_u64(fields.len, c.meta.len);
            doc.add_text(fields.tokens, &c.tokens);
            writer.add_document(doc).map_err(tantivy_err)?;
        }
        let mut prepared = writer.prepare_commit().map_err(tantivy_err)?;
        prepared.set_payload(&serde_json::to_string(&payload).map_err(std::io::Error::other)?);
        prepared.commit().map_err(tantivy_err)?;
        writer.wait_merging_threads().map_err(tantivy_err)?;
        self.reader.reload().map_err(tantivy_err)?;
        let mut p = self.clone();
        p.searcher = self.reader.searcher();
        p.committed = WalPos { segment: payload.wal_segment, offset: payload.wal_offset };
        p.max_seq = payload.max_seq;
        p.fgen = fgen;
        let mut files = (*self.files).clone();
        files.insert(fgen, Arc::new(map_file(&path)?));
        p.files = Arc::new(files);
        p.refresh(fields)?;
        Ok(p)
    }

    /// The frame of chunk `i`.
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
        let c = self.chunks.get(i)?;
        let f = self.files.get(&c.file)?;
        f.map.get(c.offset as usize..(c.offset as usize).checked_add(c.len as usize)?)
    }

    /// Unmaps chunk `i`'s pages from the process once a reader is done with them (they stay in
    /// the page cache; see [`crate::mmap::drop_pages`]). Reading a chunk checks its CRC, which
    /// touches every page of it: without this, the pages of every chunk a query ever read stayed
    /// in the process' RSS (296 MiB of 300 after the benchmark's queries).
    ///
    /// The range is widened to whole [`FAULT_AROUND`] windows: reading a page of the map also
    /// maps the pages around it (the kernel's fault-around), which may belong to chunks the
    /// query never reads and so never releases.
    pub fn release(&self, i: usize) {
        let Some(c) = self.chunks.get(i) else { return };
        if let Some(f) = self.files.get(&c.file) {
            // The windows are aligned in the address space, not in the file.
            let base = f.map.as_ptr() as usize;
            let (a, b) = (base + c.offset as usize, base + (c.offset + c.len) as usize);
            let start = (a / FAULT_AROUND * FAULT_AROUND).max(base) - base;
            let end = (b.next_multiple_of(FAULT_AROUND) - base).min(f.map.len());
            crate::mmap::drop_pages(&f.map, start..end);
        }
    }

    /// Unmaps every page of the data files around chunks `idx` (a scan done with this
    /// partition): from the first chunk's start to the last one's end of each file, widened by
    /// [`FOLIO_MAX`] each side. Reading a chunk through the map can map pages of chunks the scan
    /// never reads, beyond [`Partition::release`]'s windows: the kernel maps whole page-cache
    /// folios, which on ext4 may be large and aligned in the file.
    pub fn release_span(&self, idx: &[usize]) {
        let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for c in idx.iter().filter_map(|&i| self.chunks.get(i)) {
            let e = spans.entry(c.file).or_insert((c.offset, c.offset + c.len));
            *e = (e.0.min(c.offset), e.1.max(c.offset + c.len));
        }
        for (file, (a, b)) in spans {
            let Some(f) = self.files.get(&file) else { continue };
            let start = (a as usize).saturating_sub(FOLIO_MAX) / FOLIO_MAX * FOLIO_MAX;
            let end = (b as usize).saturating_add(FOLIO_MAX).min(f.map.len());
            crate::mmap::drop_pages(&f.map, start..end);
        }
    }

    /// Numbers of the chunks that may hold records `filter` wants (the index and bloom filters
    /// only narrow: every chunk with such a record is in the answer).
    pub fn candidates(&self, fields: Fields, filter: &Filter<'_>) -> Vec<usize> {
        let mut out: Vec<usize> = (0..self.chunks.len())
            .filter(|&i| {
                let c = &self.chunks[i];
                c.max_ts >= filter.start
                    && c.min_ts <= filter.end
                    && filter.streams.is_none_or(|s| s.binary_search(&c.stream).is_ok())
            })
            .collect();
        if out.is_empty() {
            return out;
        }
        let toks: Vec<&str> = filter.line_contains.iter().flat_map(|h| tokens::required_tokens(h)).collect();
        if !toks.is_empty()
            && let Ok(hits) = self.token_hits(fields, &toks)
        {
            out.retain(|i| hits.contains(i));
        }
        let mut hashes: Vec<u64> = filter.line_contains.iter().flat_map(|h| tokens::required_grams(h)).collect();
        if let Some(t) = filter.trace_id {
            hashes.push(tokens::id_hash(&t.0));
        }
        if !hashes.is_empty() {
            // The bloom filters are read with pread, not through the map: touching a page of the
            // map maps the pages around it too (the kernel's fault-around), so probing every
            // chunk's filter put most of the data files into the process' RSS. Unmapping them
            // afterwards made the next query fault them in again.
            let mut bloom = Vec::new();
            out.retain(|&i| match self.read_bloom(i, &mut bloom) {
                Ok(()) => hashes.iter().all(|&h| Bloom::may_contain(&bloom, h)),
                // Damaged or unreadable: let the reader report it.
                Err(_) => true,
            });
        }
        out
    }

    /// Reads chunk `i`'s bloom filter column into `out` (two preads: the frame's header and
    /// directory, then the column).
    pub(super) fn read_bloom(&self, i: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let invalid = |e: super::chunk::ChunkError| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        let c = self.chunks.get(i).ok_or_else(|| std::io::Error::other("no such chunk"))?;
        let f = self.files.get(&c.file).ok_or_else(|| std::io::Error::other("no such data file"))?;
        // The frame's bounds in its file, as the readers check them (slicing the map touches no
        // page): a damaged index cannot make the column read below allocate past the file.
        let frame_len = self
            .frame(i)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "chunk frame out of its file's bounds")
            })?
            .len();
        let mut head = [0u8; chunk::HEAD_BYTES];
        let n = head.len().min(frame_len);
        f.file.read_exact_at(&mut head[..n], c.offset)?;
        let range = chunk::bloom_range(&head[..n], frame_len).map_err(invalid)?;
        out.resize(range.len(), 0);
        f.file.read_exact_at(out, c.offset + range.start as u64)
    }

    fn token_hits(&self, fields: Fields, toks: &[&str]) -> std::io::Result<BTreeSet<usize>> {
        let clauses: Vec<(Occur, Box<dyn Query>)> = toks
            .iter()
            .map(|t| {
                (
                    Occur::Must,
                    Box::new(TermQuery::new(Term::from_field_text(fields.tokens, t), IndexRecordOption::Basic))
                        as Box<dyn Query>,
                )
            })
            .collect();
        let docs = self.searcher.search(&BooleanQuery::new(clauses), &DocSetCollector).map_err(tantivy_err)?;
        Ok(docs
            .into_iter()
            .filter_map(|a| Some(self.seg_base.get(a.segment_ord as usize)? + a.doc_id as usize))
            .collect())
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

//! Immutable on-disk blocks: a directory holding `meta.json`, `chunks` and `index`, specified in
//! `storage/docs/format/metrics-{block,chunks,index}.md`.
//!
//! Invariants:
//! - A block directory is complete or absent: it is written under `<name>.tmp`, every file and
//!   the directory are fsynced, then it is renamed into place and the parent is fsynced.
//! - Its files never change afterwards; they are read through read-only memory maps
//!   ([`super::mmap`]).
//! - Series in the index are sorted by label set; a series reference is its position.
//! - Reading never panics on damaged bytes: every offset and length is bounds-checked and the
//!   sections and chunk records carry CRC-32C checksums, checked before their bytes are used.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::gorilla::{SAMPLES_PER_CHUNK, XorAppender, XorIter};
use super::head::trace_key;
use crate::model::{Exemplar, FloatSample, HistogramSample, Label, Labels};
use crate::read::{MatchOp, Matcher};
use crate::wal::WalPos;

/// Format version of `meta.json`.
pub const BLOCK_VERSION: u32 = 1;
/// Version of the index file this writer produces; readers take 1 (fixed-width series entries)
/// and 2 (varint series entries, `metrics-index.md`).
const INDEX_VERSION: u8 = 2;
const INDEX_MAGIC: &[u8; 6] = b"OPMIDX";
const CHUNKS_MAGIC: &[u8; 6] = b"OPMCHK";
const HEADER_LEN: usize = 8;
const SECTIONS: usize = 6;
const TOC_LEN: usize = SECTIONS * 20 + 4;

/// Chunk kinds in the chunks file.
pub const KIND_XOR: u8 = 1;
/// Native histogram samples, postcard-encoded.
pub const KIND_HISTOGRAMS: u8 = 2;
/// Exemplars, postcard-encoded.
pub const KIND_EXEMPLARS: u8 = 3;
/// Float samples as decimal mantissas, delta coded and bit-packed (`decimal.rs`); chunks file
/// version 2.
pub const KIND_DECIMAL: u8 = 4;
/// Version of the chunks file this writer produces; readers take 1 (no kind 4) and 2.
const CHUNKS_VERSION: u8 = 2;
/// Float samples per kind-4 chunk at most: one chunk per series and block for 15 s scrapes of
/// a 2 h block.
const DECIMAL_PART: usize = 1024;

/// Counts kept in `meta.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStats {
    pub series: u64,
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
    pub chunks: u64,
}

/// The content of `meta.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub version: u32,
    /// Lowest and highest sample, histogram or exemplar timestamp (ms), inclusive.
    pub min_time: i64,
    pub max_time: i64,
    /// 0 for a block written by persist; compaction outputs one more than its highest input.
    pub level: u32,
    /// The WAL positions covered: the first and last record whose data may be in the block.
    pub wal_min: WalPos,
    pub wal_max: WalPos,
    pub stats: BlockStats,
    pub index_bytes: u64,
    pub chunks_bytes: u64,
    /// Blocks this one was compacted from (deleted once it is in place).
    pub sources: Vec<String>,
}

/// A chunk's entry in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkMeta {
    pub kind: u8,
    pub min_t: i64,
    pub max_t: i64,
    pub offset: u64,
    pub count: u32,
}

/// One series of a block.
pub struct BlockSeries {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// What a series holds in a time range.
#[derive(Default)]
pub struct SeriesSamples {
    pub floats: Vec<FloatSample>,
    pub histograms: Vec<HistogramSample>,
    pub exemplars: Vec<Exemplar>,
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Writes one block, series by series in label order.
pub struct BlockWriter {
    tmp: PathBuf,
    final_dir: PathBuf,
    chunks: BufWriter<File>,
    chunks_len: u64,
    series: Vec<(Labels, Vec<ChunkMeta>)>,
    traces: Vec<(u128, u32)>,
    stats: BlockStats,
    min_t: i64,
    max_t: i64,
    index_version: u8,
}

fn io_other(msg: String) -> io::Error {
    io::Error::other(msg)
}

impl BlockWriter {
    /// Starts block `name` under `parent`.
    pub fn create(parent: &Path, name: &str) -> io::Result<BlockWriter> {
        let tmp = parent.join(format!("{name}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let mut chunks = BufWriter::with_capacity(1 << 16, File::create(tmp.join("chunks"))?);
        chunks.write_all(CHUNKS_MAGIC)?;
        chunks.write_all(&[0, CHUNKS_VERSION])?;
        Ok(BlockWriter {
            tmp,
            final_dir: parent.join(name),
            chunks,
            chunks_len: HEADER_LEN as u64,
            series: Vec::new(),
            traces: Vec::new(),
            stats: BlockStats::default(),
            min_t: i64::MAX,
            max_t: i64::MIN,
            index_version: INDEX_VERSION,
        })
    }

    /// Writes the index in an older format version (tests of old blocks' readability).
    #[cfg(test)]
    pub(crate) fn set_index_version(&mut self, v: u8) {
        self.index_version = v;
    }

    /// Where the block will be once finished.
    pub fn final_dir(&self) -> &Path {
        &self.final_dir
    }

    fn record(&mut self, kind: u8, data: &[u8]) -> io::Result<u64> {
        let offset = self.chunks_len;
        let len = u32::try_from(data.len()).map_err(|_| io_other("chunk larger than 4 GiB".into()))?;
        let mut crc = crc32c::crc32c(&[kind]);
        crc = crc32c::crc32c_append(crc, data);
        self.chunks.write_all(&[kind])?;
        self.chunks.write_all(&len.to_le_bytes())?;
        self.chunks.write_all(data)?;
        self.chunks.write_all(&crc.to_le_bytes())?;
        self.chunks_len += 1 + 4 + data.len() as u64 + 4;
        Ok(offset)
    }

    /// Adds a series; calls come in strictly increasing label order. Every list is sorted by
    /// timestamp and unique per timestamp (exemplars per timestamp and labels).
    pub fn add(
        &mut self,
        labels: Labels,
        floats: &[FloatSample],
        histograms: &[HistogramSample],
        exemplars: &[Exemplar],
    ) -> io::Result<()> {
        if floats.is_empty() && histograms.is_empty() && exemplars.is_empty() {
            return Ok(());
        }
        let sref = self.series.len() as u32;
        let mut metas = Vec::new();
        let mut ts = Vec::new();
        let mut vs = Vec::new();
        // In time order: a part of short decimals becomes one kind-4 chunk, any other part
        // Gorilla chunks of at most 120 samples.
        for part in floats.chunks(DECIMAL_PART) {
            ts.clear();
            vs.clear();
            ts.extend(part.iter().map(|s| s.timestamp_ms));
            vs.extend(part.iter().map(|s| s.value));
            if let Some(data) = super::decimal::encode(&ts, &vs) {
                let offset = self.record(KIND_DECIMAL, &data)?;
                let (min_t, max_t) = (part[0].timestamp_ms, part[part.len() - 1].timestamp_ms);
                metas.push(ChunkMeta { kind: KIND_DECIMAL, min_t, max_t, offset, count: part.len() as u32 });
                continue;
            }
            for part in part.chunks(SAMPLES_PER_CHUNK as usize) {
                let mut a = XorAppender::default();
                for s in part {
                    a.append(s.timestamp_ms, s.value);
                }
                let mut data = Vec::with_capacity(2 + a.bytes().len());
                data.extend_from_slice(&(part.len() as u16).to_le_bytes());
                data.extend_from_slice(a.bytes());
                let offset = self.record(KIND_XOR, &data)?;
                let (min_t, max_t) = (part[0].timestamp_ms, part[part.len() - 1].timestamp_ms);
                metas.push(ChunkMeta { kind: KIND_XOR, min_t, max_t, offset, count: part.len() as u32 });
            }
        }
        for part in histograms.chunks(SAMPLES_PER_CHUNK as usize) {
            let data = postcard::to_stdvec(part).map_err(|e| io_other(e.to_string()))?;
            let offset = self.record(KIND_HISTOGRAMS, &data)?;
            let (min_t, max_t) = (part[0].timestamp_ms, part[part.len() - 1].timestamp_ms);
            metas.push(ChunkMeta { kind: KIND_HISTOGRAMS, min_t, max_t, offset, count: part.len() as u32 });
        }
        if !exemplars.is_empty() {
            let data = postcard::to_stdvec(exemplars).map_err(|e| io_other(e.to_string()))?;
            let offset = self.record(KIND_EXEMPLARS, &data)?;
            let (min_t, max_t) = (exemplars[0].timestamp_ms, exemplars[exemplars.len() - 1].timestamp_ms);
            metas.push(ChunkMeta { kind: KIND_EXEMPLARS, min_t, max_t, offset, count: exemplars.len() as u32 });
            for e in exemplars {
                if let Some(k) = e.labels.get("trace_id").and_then(trace_key) {
                    self.traces.push((k, sref));
                }
            }
        }
        for m in &metas {
            self.min_t = self.min_t.min(m.min_t);
            self.max_t = self.max_t.max(m.max_t);
        }
        self.stats.series += 1;
        self.stats.samples += floats.len() as u64;
        self.stats.histograms += histograms.len() as u64;
        self.stats.exemplars += exemplars.len() as u64;
        self.stats.chunks += metas.len() as u64;
        self.series.push((labels, metas));
        Ok(())
    }

    /// Writes the index and meta, syncs and renames the block into place; returns its meta.
    pub fn finish(
        mut self,
        level: u32,
        wal_min: WalPos,
        wal_max: WalPos,
        sources: Vec<String>,
    ) -> io::Result<BlockMeta> {
        self.chunks.flush()?;
        let chunks_file = self.chunks.into_inner().map_err(|e| e.into_error())?;
        chunks_file.sync_all()?;
        drop(chunks_file);

        let index = encode_index(&self.series, &mut self.traces, self.index_version)?;
        let mut f = File::create(self.tmp.join("index"))?;
        f.write_all(&index)?;
        f.sync_all()?;
        drop(f);

        let meta = BlockMeta {
            version: BLOCK_VERSION,
            min_time: self.min_t,
            max_time: self.max_t,
            level,
            wal_min,
            wal_max,
            stats: self.stats,
            index_bytes: index.len() as u64,
            chunks_bytes: self.chunks_len,
            sources,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| io_other(e.to_string()))?;
        let mut f = File::create(self.tmp.join("meta.json"))?;
        f.write_all(&json)?;
        f.sync_all()?;
        drop(f);
        sync_dir(&self.tmp)?;
        fs::rename(&self.tmp, &self.final_dir)?;
        if let Some(parent) = self.final_dir.parent() {
            sync_dir(parent)?;
        }
        Ok(meta)
    }

    /// Abandons the block, removing its temporary directory.
    pub fn abandon(self) {
        let tmp = self.tmp.clone();
        drop(self);
        let _ = fs::remove_dir_all(tmp);
    }
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn encode_index(
    series: &[(Labels, Vec<ChunkMeta>)],
    traces: &mut Vec<(u128, u32)>,
    version: u8,
) -> io::Result<Vec<u8>> {
    let mut symset: BTreeSet<&str> = BTreeSet::new();
    for (labels, _) in series {
        for l in labels.iter() {
            symset.insert(&l.name);
            symset.insert(&l.value);
        }
    }
    let syms: Vec<&str> = symset.into_iter().collect();
    let sym = |s: &str| syms.binary_search(&s).map(|i| i as u32).unwrap_or(0);

    let mut out = Vec::new();
    out.extend_from_slice(INDEX_MAGIC);
    out.extend_from_slice(&[0, version]);
    let mut toc: Vec<(u64, u64)> = Vec::new();

    // 1. symbols
    let start = out.len();
    out.extend_from_slice(&(syms.len() as u32).to_le_bytes());
    let mut end = 0u32;
    out.extend_from_slice(&end.to_le_bytes());
    for s in &syms {
        end = end.checked_add(s.len() as u32).ok_or_else(|| io_other("symbols of one block exceed 4 GiB".into()))?;
        out.extend_from_slice(&end.to_le_bytes());
    }
    for s in &syms {
        out.extend_from_slice(s.as_bytes());
    }
    toc.push((start as u64, (out.len() - start) as u64));

    // 2. series
    let start = out.len();
    let mut offsets = Vec::with_capacity(series.len());
    let mut postings: BTreeMap<(u32, u32), RoaringBitmap> = BTreeMap::new();
    // Version 2: the base time the series' first chunk times are relative to.
    let base = series.iter().flat_map(|s| s.1.first()).map(|c| c.min_t).min().unwrap_or(0);
    if version >= 2 {
        out.extend_from_slice(&base.to_le_bytes());
    }
    for (sref, (labels, chunks)) in series.iter().enumerate() {
        offsets.push(out.len() as u64);
        if version >= 2 {
            crate::varint::put(&mut out, labels.len() as u64);
            for l in labels.iter() {
                let (n, v) = (sym(&l.name), sym(&l.value));
                crate::varint::put(&mut out, n.into());
                crate::varint::put(&mut out, v.into());
                postings.entry((n, v)).or_default().insert(sref as u32);
            }
            crate::varint::put(&mut out, chunks.len() as u64);
            let (mut prev_t, mut prev_off) = (base, 0u64);
            for c in chunks {
                out.push(c.kind);
                crate::varint::put(&mut out, crate::varint::zigzag(c.min_t.wrapping_sub(prev_t)));
                crate::varint::put(&mut out, c.max_t.wrapping_sub(c.min_t) as u64);
                crate::varint::put(&mut out, c.offset.wrapping_sub(prev_off));
                crate::varint::put(&mut out, c.count.into());
                (prev_t, prev_off) = (c.max_t, c.offset);
            }
            continue;
        }
        out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
        for l in labels.iter() {
            let (n, v) = (sym(&l.name), sym(&l.value));
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
            postings.entry((n, v)).or_default().insert(sref as u32);
        }
        out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for c in chunks {
            out.push(c.kind);
            out.extend_from_slice(&c.min_t.to_le_bytes());
            out.extend_from_slice(&c.max_t.to_le_bytes());
            out.extend_from_slice(&c.offset.to_le_bytes());
            out.extend_from_slice(&c.count.to_le_bytes());
        }
    }
    toc.push((start as u64, (out.len() - start) as u64));

    // 3. series offsets
    let start = out.len();
    out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for o in &offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    toc.push((start as u64, (out.len() - start) as u64));

    // 4. postings
    let start = out.len();
    let mut refs: Vec<((u32, u32), u64, u32)> = Vec::with_capacity(postings.len());
    for (key, bitmap) in &postings {
        let off = out.len() as u64;
        bitmap.serialize_into(&mut out)?;
        refs.push((*key, off, (out.len() as u64 - off) as u32));
    }
    toc.push((start as u64, (out.len() - start) as u64));

    // 5. label index
    let start = out.len();
    let mut names: BTreeMap<u32, Vec<ValueRef>> = BTreeMap::new();
    for ((n, v), off, len) in refs {
        names.entry(n).or_default().push((v, off, len));
    }
    out.extend_from_slice(&(names.len() as u32).to_le_bytes());
    let mut first = 0u32;
    for (n, values) in &names {
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&(values.len() as u32).to_le_bytes());
        first += values.len() as u32;
    }
    out.extend_from_slice(&first.to_le_bytes());
    for (v, off, len) in names.values().flatten() {
        out.extend_from_slice(&v.to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    toc.push((start as u64, (out.len() - start) as u64));

    // 6. exemplar trace ids
    let start = out.len();
    traces.sort_unstable();
    traces.dedup();
    out.extend_from_slice(&(traces.len() as u32).to_le_bytes());
    for (k, sref) in traces.iter() {
        out.extend_from_slice(&k.to_be_bytes());
        out.extend_from_slice(&sref.to_le_bytes());
    }
    toc.push((start as u64, (out.len() - start) as u64));

    let mut toc_bytes = Vec::with_capacity(TOC_LEN);
    for (off, len) in toc {
        let crc = crc32c::crc32c(&out[off as usize..(off + len) as usize]);
        toc_bytes.extend_from_slice(&off.to_le_bytes());
        toc_bytes.extend_from_slice(&len.to_le_bytes());
        toc_bytes.extend_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c::crc32c(&toc_bytes);
    toc_bytes.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&toc_bytes);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reading

/// A bounds-checked little-endian reader over a byte slice.
struct Cur<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn at(b: &'a [u8], pos: usize) -> Self {
        Cur { b, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short read")?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "short read")?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(self.u64()? as i64)
    }

    /// An unsigned LEB128 varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, String> {
        let at = self.pos;
        crate::varint::get(self.b, &mut self.pos).ok_or_else(|| format!("truncated or overlong varint at byte {at}"))
    }

    fn varint_u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.varint()?).map_err(|_| format!("value out of range at byte {}", self.pos))
    }
}

struct Section {
    off: usize,
    len: usize,
}

/// A label value in the label index: value symbol, postings offset, postings length.
type ValueRef = (u32, u64, u32);

/// Where the fixed-size tables of the index start, found once a block is first read. Nothing is
/// copied out of the map: lookups binary-search the file's bytes, so an open block costs no
/// memory beyond its (reclaimable) page cache.
struct Parsed {
    /// Symbol end offsets (`count + 1` u32 entries, relative to `strings_at`).
    sym_count: u32,
    sym_ends_at: usize,
    strings_at: usize,
    /// Start of the series offset table's entries and the series count.
    offsets_at: usize,
    series_count: u32,
    /// Label index: names table (12-byte entries) and values table (16-byte entries).
    names_at: usize,
    name_count: u32,
    values_at: usize,
    traces: Section,
}

/// An open block.
pub struct Block {
    pub name: String,
    pub dir: PathBuf,
    pub meta: BlockMeta,
    index: Mmap,
    /// The index file's format version (1 or 2).
    index_version: u8,
    chunks: Mmap,
    sections: Vec<Section>,
    parsed: OnceLock<Result<Parsed, String>>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("name", &self.name).field("meta", &self.meta).finish()
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Block {
    /// Opens the block in `dir`: reads `meta.json`, maps the files and checks their headers and
    /// the index's table of contents. Cheap: the index is checked on first use.
    pub fn open(dir: &Path) -> Result<Block, String> {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let meta_bytes = fs::read(dir.join("meta.json")).map_err(|e| format!("meta.json: {e}"))?;
        let meta: BlockMeta = serde_json::from_slice(&meta_bytes).map_err(|e| format!("meta.json: {e}"))?;
        if meta.version != BLOCK_VERSION {
            return Err(format!("meta.json: unsupported version {}", meta.version));
        }
        let map = |file: &str, magic: &[u8; 6], want: u64| -> Result<Mmap, String> {
            let f = File::open(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
            let m = crate::mmap::map_immutable(&f).map_err(|e| format!("{file}: {e}"))?;
            if m.len() as u64 != want {
                return Err(format!("{file}: {} bytes, meta.json says {want}", m.len()));
            }
            let version_ok = if file == "chunks" {
                (1..=CHUNKS_VERSION).contains(&m.get(7).copied().unwrap_or(0))
            } else {
                (1..=INDEX_VERSION).contains(&m.get(7).copied().unwrap_or(0))
            };
            if m.len() < HEADER_LEN || &m[..6] != magic || m[6] != 0 || !version_ok {
                return Err(format!("{file}: bad header"));
            }
            Ok(m)
        };
        let index = map("index", INDEX_MAGIC, meta.index_bytes)?;
        let index_version = index[7];
        let chunks = map("chunks", CHUNKS_MAGIC, meta.chunks_bytes)?;
        if index.len() < HEADER_LEN + TOC_LEN {
            return Err("index: too short for its table of contents".into());
        }
        let toc = &index[index.len() - TOC_LEN..];
        if crc32c::crc32c(&toc[..TOC_LEN - 4]) != le32(toc, TOC_LEN - 4) {
            return Err("index: table of contents checksum mismatch".into());
        }
        let mut c = Cur::at(toc, 0);
        let mut sections = Vec::with_capacity(SECTIONS);
        for _ in 0..SECTIONS {
            let (off, len, _crc) = (c.u64()?, c.u64()?, c.u32()?);
            let end = off.checked_add(len).filter(|&e| e <= (index.len() - TOC_LEN) as u64);
            if off < HEADER_LEN as u64 || end.is_none() {
                return Err("index: section out of bounds".into());
            }
            sections.push(Section { off: off as usize, len: len as usize });
        }
        Ok(Block {
            name,
            dir: dir.to_path_buf(),
            meta,
            index,
            index_version,
            chunks,
            sections,
            parsed: OnceLock::new(),
        })
    }

    /// Unmaps the block's pages from this process (see [`crate::mmap::drop_pages`]): mapped file
    /// pages count in the RSS for as long as they stay mapped, and the first use's checksum pass
    /// touches the whole index. Readers holding slices of the maps stay valid.
    pub fn release_pages(&self) {
        crate::mmap::drop_pages(&self.index, 0..self.index.len());
        crate::mmap::drop_pages(&self.chunks, 0..self.chunks.len());
    }

    fn section_crc_ok(&self, i: usize) -> bool {
        let toc = &self.index[self.index.len() - TOC_LEN..];
        let s = &self.sections[i];
        crc32c::crc32c(&self.index[s.off..s.off + s.len]) == le32(toc, i * 20 + 16)
    }

    fn parsed(&self) -> Result<&Parsed, String> {
        self.parsed.get_or_init(|| self.parse()).as_ref().map_err(|e| format!("block {}: index: {e}", self.name))
    }

    /// Checks the sections' checksums and that every table fits its section.
    fn parse(&self) -> Result<Parsed, String> {
        for i in 0..SECTIONS {
            if !self.section_crc_ok(i) {
                return Err(format!("section {} checksum mismatch", i + 1));
            }
        }
        let b = &self.index[..];
        let within = |i: usize| {
            let s = &self.sections[i];
            &b[..s.off + s.len]
        };
        // 1. symbols
        let s = &self.sections[0];
        let mut c = Cur::at(within(0), s.off);
        let sym_count = c.u32()?;
        let sym_ends_at = c.pos;
        c.take((sym_count as usize + 1) * 4)?;
        let strings_at = c.pos;
        let strings_len = s.off + s.len - strings_at;
        let mut prev = 0u32;
        for i in 0..=sym_count as usize {
            let end = le32(b, sym_ends_at + i * 4);
            if (i == 0 && end != 0) || end < prev || end as usize > strings_len {
                return Err("symbol offsets out of order".into());
            }
            prev = end;
        }
        // 3. series offsets
        let s = &self.sections[2];
        let mut c = Cur::at(within(2), s.off);
        let series_count = c.u32()?;
        let offsets_at = c.pos;
        c.take(series_count as usize * 8)?;
        // 5. label index
        let s = &self.sections[4];
        let mut c = Cur::at(within(4), s.off);
        let name_count = c.u32()?;
        let names_at = c.pos;
        c.take(name_count as usize * 12)?;
        let value_count = c.u32()?;
        let values_at = c.pos;
        c.take(value_count as usize * 16)?;
        for i in 0..name_count as usize {
            let at = names_at + i * 12;
            let (first, n) = (le32(b, at + 4) as u64, le32(b, at + 8) as u64);
            if first + n > u64::from(value_count) || le32(b, at) >= sym_count {
                return Err("label index entry out of range".into());
            }
        }
        for i in 0..value_count as usize {
            if le32(b, values_at + i * 16) >= sym_count {
                return Err("label index refers to a missing symbol".into());
            }
        }
        let t = &self.sections[5];
        Ok(Parsed {
            sym_count,
            sym_ends_at,
            strings_at,
            offsets_at,
            series_count,
            names_at,
            name_count,
            values_at,
            traces: Section { off: t.off, len: t.len },
        })
    }

    fn sym<'a>(&'a self, p: &Parsed, id: u32) -> Result<&'a str, String> {
        if id >= p.sym_count {
            return Err("symbol out of range".into());
        }
        let (start, end) = (
            le32(&self.index, p.sym_ends_at + id as usize * 4),
            le32(&self.index, p.sym_ends_at + id as usize * 4 + 4),
        );
        let bytes = &self.index[p.strings_at + start as usize..p.strings_at + end as usize];
        std::str::from_utf8(bytes).map_err(|_| "symbol is not UTF-8".into())
    }

    fn sym_id(&self, p: &Parsed, s: &str) -> Option<u32> {
        let mut lo = 0u32;
        let mut hi = p.sym_count;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.sym(p, mid).ok()?.cmp(s) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Label name `i` of the label index: its symbol, first value index and value count.
    fn name_entry(&self, p: &Parsed, i: u32) -> (u32, u32, u32) {
        let at = p.names_at + i as usize * 12;
        (le32(&self.index, at), le32(&self.index, at + 4), le32(&self.index, at + 8))
    }

    fn value_entry(&self, p: &Parsed, i: u32) -> ValueRef {
        let at = p.values_at + i as usize * 16;
        (le32(&self.index, at), le64(&self.index, at + 4), le32(&self.index, at + 12))
    }

    /// Number of series.
    pub fn series_count(&self) -> Result<u32, String> {
        Ok(self.parsed()?.series_count)
    }

    fn postings(&self, off: u64, len: u32) -> Result<RoaringBitmap, String> {
        let s = &self.sections[3];
        let end = off.checked_add(u64::from(len)).ok_or("postings out of bounds")?;
        if off < s.off as u64 || end > (s.off + s.len) as u64 {
            return Err("postings out of bounds".into());
        }
        RoaringBitmap::deserialize_from(&self.index[off as usize..end as usize]).map_err(|e| format!("postings: {e}"))
    }

    /// The values of label `name`: `(first, count)` in the values table.
    fn values_of(&self, p: &Parsed, name: &str) -> Option<(u32, u32)> {
        let n = self.sym_id(p, name)?;
        let i = partition_point(p.name_count as usize, |i| self.name_entry(p, i as u32).0 < n) as u32;
        let (sym, first, count) = (i < p.name_count).then(|| self.name_entry(p, i))?;
        (sym == n).then_some((first, count))
    }

    /// Series references matching every matcher.
    pub fn select_refs(&self, matchers: &[Matcher]) -> Result<RoaringBitmap, String> {
        let p = self.parsed()?;
        let ids_where = |m: &Matcher, want: bool| -> Result<RoaringBitmap, String> {
            let mut out = RoaringBitmap::new();
            let Some((first, count)) = self.values_of(p, &m.name) else { return Ok(out) };
            let exact = (m.op == MatchOp::Equal && want) || (m.op == MatchOp::NotEqual && !want);
            if exact {
                let Some(v) = self.sym_id(p, &m.value) else { return Ok(out) };
                let i = first + partition_point(count as usize, |i| self.value_entry(p, first + i as u32).0 < v) as u32;
                if i < first + count {
                    let (sym, off, len) = self.value_entry(p, i);
                    if sym == v {
                        out |= self.postings(off, len)?;
                    }
                }
                return Ok(out);
            }
            for i in first..first + count {
                let (v, off, len) = self.value_entry(p, i);
                if m.matches(self.sym(p, v)?) == want {
                    out |= self.postings(off, len)?;
                }
            }
            Ok(out)
        };
        let mut result: Option<RoaringBitmap> = None;
        for m in matchers.iter().filter(|m| !m.matches_empty()) {
            let ids = ids_where(m, true)?;
            let r = match result {
                None => ids,
                Some(r) => r & ids,
            };
            if r.is_empty() {
                return Ok(r);
            }
            result = Some(r);
        }
        let mut result = match result {
            Some(r) => r,
            None => (0..p.series_count).collect(),
        };
        for m in matchers.iter().filter(|m| m.matches_empty()) {
            result -= ids_where(m, false)?;
        }
        Ok(result)
    }

    /// The labels and chunk list of series `sref`.
    pub fn series(&self, sref: u32) -> Result<BlockSeries, String> {
        let p = self.parsed()?;
        if sref >= p.series_count {
            return Err(format!("series {sref} out of range"));
        }
        let at = p.offsets_at + sref as usize * 8;
        let off = Cur::at(&self.index, at).u64()? as usize;
        let s = &self.sections[1];
        if off < s.off || off >= s.off + s.len {
            return Err(format!("series {sref}: offset out of bounds"));
        }
        let mut c = Cur::at(&self.index[..s.off + s.len], off);
        if self.index_version >= 2 {
            return self.series_v2(p, sref, &mut c);
        }
        let n = c.u32()?;
        let labels = self.series_labels(p, sref, u64::from(n), || Ok((c.u32()?, c.u32()?)))?;
        let nc = c.u32()?;
        let mut chunks = Vec::with_capacity((nc as usize).min(4096));
        for _ in 0..nc {
            chunks.push(ChunkMeta {
                kind: c.u8()?,
                min_t: c.i64()?,
                max_t: c.i64()?,
                offset: c.u64()?,
                count: c.u32()?,
            });
        }
        Ok(BlockSeries { labels: Labels::from_sorted(labels), chunks })
    }

    /// The label set of series `sref` from its `n` (name, value) symbol pairs, read by `next`;
    /// an error unless sorted by name with unique names and non-empty values.
    fn series_labels(
        &self,
        p: &Parsed,
        sref: u32,
        n: u64,
        mut next: impl FnMut() -> Result<(u32, u32), String>,
    ) -> Result<Vec<Label>, String> {
        let mut labels = Vec::with_capacity((n as usize).min(64));
        for _ in 0..n {
            let (name, value) = next()?;
            labels.push(Label { name: self.sym(p, name)?.to_string(), value: self.sym(p, value)?.to_string() });
        }
        if labels.windows(2).any(|w| w[0].name >= w[1].name) || labels.iter().any(|l| l.value.is_empty()) {
            return Err(format!("series {sref}: labels not canonical"));
        }
        Ok(labels)
    }

    /// A version-2 series entry at `c` (see `metrics-index.md`).
    fn series_v2(&self, p: &Parsed, sref: u32, c: &mut Cur<'_>) -> Result<BlockSeries, String> {
        let s = &self.sections[1];
        let base = Cur::at(&self.index[..s.off + s.len], s.off).i64()?;
        let n = c.varint()?;
        let labels = self.series_labels(p, sref, n, || Ok((c.varint_u32()?, c.varint_u32()?)))?;
        let nc = c.varint()?;
        let mut chunks = Vec::with_capacity((nc as usize).min(4096));
        let (mut prev_t, mut prev_off) = (base, 0u64);
        for _ in 0..nc {
            let kind = c.u8()?;
            let min_t = prev_t.wrapping_add(crate::varint::unzigzag(c.varint()?));
            let max_t = min_t.wrapping_add(c.varint()? as i64);
            let offset = prev_off.wrapping_add(c.varint()?);
            let count = c.varint_u32()?;
            chunks.push(ChunkMeta { kind, min_t, max_t, offset, count });
            (prev_t, prev_off) = (max_t, offset);
        }
        Ok(BlockSeries { labels: Labels::from_sorted(labels), chunks })
    }

    fn chunk_bytes(&self, m: &ChunkMeta) -> Result<&[u8], String> {
        let mut c = Cur::at(&self.chunks, m.offset as usize);
        let kind = c.u8()?;
        let len = c.u32()?;
        let data = c.take(len as usize)?;
        let crc = c.u32()?;
        if kind != m.kind {
            return Err(format!("chunk at {}: kind {kind}, index says {}", m.offset, m.kind));
        }
        if crc32c::crc32c_append(crc32c::crc32c(&[kind]), data) != crc {
            return Err(format!("chunk at {}: checksum mismatch", m.offset));
        }
        Ok(data)
    }

    /// Everything series `s` holds in `start..=end`.
    pub fn read(&self, s: &BlockSeries, start: i64, end: i64) -> Result<SeriesSamples, String> {
        let mut out = SeriesSamples::default();
        self.read_into(s, start, end, &mut out)?;
        Ok(out)
    }

    /// [`Block::read`], appending to `out` (which the caller keeps in time order: each list's
    /// appended samples must come after what it holds). On an error `out` is left as it was.
    pub fn read_into(&self, s: &BlockSeries, start: i64, end: i64, out: &mut SeriesSamples) -> Result<(), String> {
        let lens = (out.floats.len(), out.histograms.len(), out.exemplars.len());
        let r = self.append(s, start, end, out);
        let (f, h) = (lens.0.saturating_sub(1), lens.1.saturating_sub(1));
        let r = r.and_then(|()| {
            if out.floats[f..].windows(2).any(|w| w[0].timestamp_ms >= w[1].timestamp_ms)
                || out.histograms[h..].windows(2).any(|w| w[0].timestamp_ms >= w[1].timestamp_ms)
            {
                return Err(format!("block {}: samples out of order", self.name));
            }
            Ok(())
        });
        if r.is_err() {
            out.floats.truncate(lens.0);
            out.histograms.truncate(lens.1);
            out.exemplars.truncate(lens.2);
        }
        r
    }

    fn append(&self, s: &BlockSeries, start: i64, end: i64, out: &mut SeriesSamples) -> Result<(), String> {
        let floats: usize = s
            .chunks
            .iter()
            .filter(|m| matches!(m.kind, KIND_XOR | KIND_DECIMAL) && m.max_t >= start && m.min_t <= end)
            .map(|m| m.count as usize)
            .sum();
        out.floats.reserve(floats.min(1 << 20));
        for m in s.chunks.iter().filter(|m| m.max_t >= start && m.min_t <= end) {
            let data = self.chunk_bytes(m).map_err(|e| format!("block {}: chunks: {e}", self.name))?;
            match m.kind {
                KIND_XOR => {
                    let count =
                        u16::from_le_bytes(data.get(..2).ok_or("short chunk")?.try_into().map_err(|_| "short")?);
                    for r in XorIter::new(&data[2..], count) {
                        let (t, v) = r.map_err(|e| format!("block {}: chunk at {}: {e}", self.name, m.offset))?;
                        if t >= start && t <= end {
                            out.floats.push(FloatSample { timestamp_ms: t, value: v });
                        }
                    }
                }
                KIND_DECIMAL => {
                    let floats = &mut out.floats;
                    super::decimal::decode_each(data, |t, v| {
                        if t >= start && t <= end {
                            floats.push(FloatSample { timestamp_ms: t, value: v });
                        }
                    })
                    .map_err(|e| format!("block {}: chunk at {}: {e}", self.name, m.offset))?;
                }
                KIND_HISTOGRAMS => {
                    let hs: Vec<HistogramSample> =
                        postcard::from_bytes(data).map_err(|e| format!("block {}: {e}", self.name))?;
                    out.histograms.extend(hs.into_iter().filter(|h| h.timestamp_ms >= start && h.timestamp_ms <= end));
                }
                KIND_EXEMPLARS => {
                    let es: Vec<Exemplar> =
                        postcard::from_bytes(data).map_err(|e| format!("block {}: {e}", self.name))?;
                    out.exemplars.extend(es.into_iter().filter(|e| e.timestamp_ms >= start && e.timestamp_ms <= end));
                }
                k => return Err(format!("block {}: unknown chunk kind {k}", self.name)),
            }
        }
        Ok(())
    }

    /// Sorted values of label `name` (all series).
    pub fn label_values(&self, name: &str) -> Result<Vec<String>, String> {
        let p = self.parsed()?;
        let Some((first, count)) = self.values_of(p, name) else { return Ok(Vec::new()) };
        (first..first + count).map(|i| self.sym(p, self.value_entry(p, i).0).map(str::to_string)).collect()
    }

    /// Sorted label names (all series).
    pub fn label_names(&self) -> Result<Vec<String>, String> {
        let p = self.parsed()?;
        (0..p.name_count).map(|i| self.sym(p, self.name_entry(p, i).0).map(str::to_string)).collect()
    }

    /// Series references holding an exemplar with this trace id.
    pub fn trace_refs(&self, key: u128) -> Result<Vec<u32>, String> {
        let p = self.parsed()?;
        let mut c = Cur::at(&self.index[..p.traces.off + p.traces.len], p.traces.off);
        let n = c.u32()? as usize;
        let base = c.pos;
        c.take(n.checked_mul(20).ok_or("too many traces")?)?;
        let entry = |i: usize| -> (u128, u32) {
            let at = base + i * 20;
            let k = u128::from_be_bytes(self.index[at..at + 16].try_into().unwrap_or([0; 16]));
            let r = u32::from_le_bytes(self.index[at + 16..at + 20].try_into().unwrap_or([0; 4]));
            (k, r)
        };
        let first = partition_point(n, |i| entry(i).0 < key);
        Ok((first..n).map(entry).take_while(|e| e.0 == key).map(|e| e.1).collect())
    }
}

fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if pred(mid) { lo = mid + 1 } else { hi = mid }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, version: u8) -> Block {
        let mut w = BlockWriter::create(dir, name).unwrap();
        w.set_index_version(version);
        for s in 0..300u32 {
            let labels = Labels::from_pairs([
                ("__name__", if s % 3 == 0 { "a_total" } else { "b" }.to_string()),
                ("job", format!("j{}", s % 7)),
                ("pod", format!("p{s:04}")),
            ]);
            // Several chunks (more than one decimal part for some series, Gorilla for others),
            // negative and large timestamps, histograms and exemplars.
            let n = 10 + (s as i64 % 5) * 700;
            let t0 = if s % 11 == 0 { -50_000 } else { 1_763_700_000_000 };
            let floats: Vec<FloatSample> = (0..n)
                .map(|i| FloatSample {
                    timestamp_ms: t0 + i * 15_000,
                    value: if s % 2 == 0 { i as f64 } else { (i as f64).sqrt() },
                })
                .collect();
            w.add(labels, &floats, &[], &[]).unwrap();
        }
        w.finish(0, WalPos::ZERO, WalPos::ZERO, Vec::new()).unwrap();
        Block::open(&dir.join(name)).unwrap()
    }

    /// Blocks written with index version 1 stay readable, and version 2 reads the same.
    #[test]
    fn index_versions_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = write(dir.path(), "v1", 1);
        let v2 = write(dir.path(), "v2", 2);
        assert_eq!(v1.index[7], 1);
        assert_eq!(v2.index[7], 2);
        assert!(
            v2.meta.index_bytes < v1.meta.index_bytes * 3 / 4,
            "{} vs {}",
            v2.meta.index_bytes,
            v1.meta.index_bytes
        );
        assert_eq!(v1.series_count().unwrap(), 300);
        assert_eq!(v2.series_count().unwrap(), 300);
        let mut chunks = 0;
        for r in 0..300 {
            let (a, b) = (v1.series(r).unwrap(), v2.series(r).unwrap());
            assert_eq!(a.labels, b.labels);
            assert_eq!(a.chunks, b.chunks);
            chunks += a.chunks.len();
            let (da, db) = (v1.read(&a, i64::MIN, i64::MAX).unwrap(), v2.read(&b, i64::MIN, i64::MAX).unwrap());
            assert_eq!(da.floats, db.floats);
            assert!(!da.floats.is_empty());
        }
        assert!(chunks > 400, "{chunks}");
        let m = [Matcher::eq("job", "j3")];
        assert_eq!(v1.select_refs(&m).unwrap(), v2.select_refs(&m).unwrap());
        assert_eq!(v1.label_values("pod").unwrap(), v2.label_values("pod").unwrap());
        assert_eq!(v1.label_names().unwrap(), v2.label_names().unwrap());
    }

    /// A damaged version-2 entry is an error, not a panic.
    #[test]
    fn damaged_v2_entries_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let b = write(dir.path(), "v2", 2);
        let s = &b.sections[1];
        let bytes = b.index[s.off..s.off + s.len].to_vec();
        // Every truncation of an entry's bytes fails cleanly or decodes something.
        for cut in 0..bytes.len().min(200) {
            let mut c = Cur::at(&bytes[..cut], 8);
            let p = b.parsed().unwrap();
            let _ = b.series_v2(p, 0, &mut c);
        }
    }
}

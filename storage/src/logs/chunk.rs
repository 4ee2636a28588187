//! Chunks: the records of one stream in one partition, stored column by column.
//!
//! A chunk is one frame of a partition data file (`part-<S>/chunks-<gen>.dat`):
//! `u32 length | u32 CRC-32C | payload`, the payload a small header and then the columns, each
//! compressed on its own so that a reader decompresses only what it needs (timestamps for a count,
//! bodies for a line filter, the rest only for full results). See `docs/format/logs.md`.
//!
//! Invariants: rows are sorted by `(timestamp, seq)`; every column holds exactly `rows` values; the
//! bloom filter holds every trace id, span id and sampled n-gram of long body runs
//! ([`super::tokens`]) of the chunk, so a negative answer rules the chunk out. Decoding checks the
//! CRC and every length and returns an error, never panics, on a damaged frame.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::tokens;
use crate::model::{KeyValue, LogRecord, SpanId, TraceId};

/// Version byte at the start of every chunk payload written now. Version 2 stores a row's
/// observed timestamp relative to the chunk's oldest timestamp ([`observed_to_stored`]); version
/// 1 (still read) stored it relative to the row's own timestamp.
const CHUNK_VERSION: u8 = 2;
/// The oldest chunk version still read.
const CHUNK_VERSION_1: u8 = 1;

const COL_TS: u8 = 0;
const COL_SEQ: u8 = 1;
const COL_LENS: u8 = 2;
const COL_BODIES: u8 = 3;
const COL_META: u8 = 4;
const COL_BLOOM: u8 = 5;
const COL_KEYS: u8 = 6;
const COL_IDS: u8 = 7;
const NCOLS: usize = 8;

/// `ids` column flags.
const ID_TRACE: u8 = 1;
const ID_SPAN: u8 = 2;
const ID_TRACE_IN_BODY: u8 = 4;
const ID_SPAN_IN_BODY: u8 = 8;

const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// zstd frames of consecutive row blocks (the `bodies` column of chunks with more than
/// [`BODY_BLOCK_BYTES`] of bodies): a line filter decompresses only the blocks whose tokens, in the
/// chunk's bloom filter, it needs.
const CODEC_ZSTD_BLOCKS: u8 = 2;

/// Bodies per block of the `bodies` column (a block ends with the row that reaches this). Smaller
/// in unit tests, so that their small chunks have several blocks.
const BODY_BLOCK_BYTES: usize = if cfg!(test) { 300 } else { 64 << 10 };

/// zstd level of the compressed columns (on log bodies level 1 is both faster and a few percent
/// smaller than 3; see `docs/format/logs.md`).
const ZSTD_LEVEL: i32 = 1;

/// Frame header bytes (length + CRC).
pub(super) const FRAME_HEADER: usize = 8;

/// The per-row fields besides timestamp, seq and body (postcard, column `meta`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub(super) struct RowMeta {
    pub resource: u32,
    pub scope: u32,
    /// The record with an empty body and timestamp 0 (those live in their own columns).
    pub record: LogRecord,
}

/// Serialises exactly as [`RowMeta`] (postcard is positional, and `&str`/`String` and
/// `&[T]`/`Vec<T>` encode alike) without copying the record's strings.
#[derive(Serialize)]
struct RowMetaRef<'a> {
    resource: u32,
    scope: u32,
    record: RecordRef<'a>,
}

/// [`LogRecord`]'s fields, in its order, borrowed.
#[derive(Serialize)]
struct RecordRef<'a> {
    timestamp_ns: i64,
    observed_timestamp_ns: i64,
    severity_number: i32,
    severity_text: &'a str,
    body: &'a str,
    attributes: &'a [KeyValue],
    dropped_attributes_count: u32,
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
    flags: u32,
    event_name: &'a str,
}

/// One row handed to [`encode`].
pub(super) struct Row<'a> {
    pub seq: u64,
    pub resource: u32,
    pub scope: u32,
    pub record: &'a LogRecord,
}

/// What the index needs to know about an encoded chunk.
pub(super) struct Summary {
    pub min_ts: i64,
    pub max_ts: i64,
    pub rows: u32,
    /// Distinct indexable body tokens ([`tokens::for_each_token`]), space-separated.
    pub tokens: String,
}

#[derive(Debug)]
pub(super) struct ChunkError(pub String);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "damaged log chunk: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

impl From<ChunkError> for std::io::Error {
    fn from(e: ChunkError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64, ChunkError> {
    crate::varint::get(b, at).ok_or_else(|| bad("truncated or overlong varint"))
}

fn bad(s: impl Into<String>) -> ChunkError {
    ChunkError(s.into())
}

/// A bloom filter over 64-bit hashes: `k` probes by double hashing into `m = 8 * bytes.len()` bits.
pub(super) struct Bloom {
    k: u8,
    bits: Vec<u8>,
}

/// Bits per inserted key (about 1 % false positives with 7 probes).
const BLOOM_BITS_PER_KEY: usize = 10;
const BLOOM_PROBES: u8 = 7;

impl Bloom {
    fn with_keys(n: usize) -> Bloom {
        let bytes = (n * BLOOM_BITS_PER_KEY).div_ceil(8).max(8);
        Bloom { k: BLOOM_PROBES, bits: vec![0; bytes] }
    }

    fn insert(&mut self, h: u64) {
        let m = (self.bits.len() * 8) as u64;
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        for i in 0..u64::from(self.k) {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            self.bits[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.bits.len());
        out.push(self.k);
        out.extend_from_slice(&self.bits);
        out
    }

    /// True when `h` may be in the filter whose column bytes are `col` (empty = matches all).
    pub fn may_contain(col: &[u8], h: u64) -> bool {
        let Some((&k, bits)) = col.split_first() else { return true };
        if bits.is_empty() {
            return true;
        }
        let m = (bits.len() * 8) as u64;
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        (0..u64::from(k)).all(|i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            bits[(bit / 8) as usize] & (1 << (bit % 8)) != 0
        })
    }
}

/// Buffers and the compression context of [`encode`], kept from one chunk to the next of a flush:
/// a flush encodes hundreds of chunks, and fresh buffers (page faults on first touch) and a fresh
/// zstd context per column cost more than reusing them.
#[derive(Default)]
pub(super) struct Scratch {
    ts: Vec<u8>,
    seq: Vec<u8>,
    lens: Vec<u8>,
    bodies: Vec<u8>,
    meta: Vec<u8>,
    one: Vec<u8>,
    ids: Vec<u8>,
    hashes: Vec<u64>,
    tokens: tokens::TokenSet,
    /// The current body block's tokens, and each closed block's rows and bodies' bytes.
    block_tokens: tokens::TokenSet,
    blocks: Vec<(u32, u32)>,
    /// The `bodies` column as stored when it is cut into blocks, and one block's frame.
    zblocks: Vec<u8>,
    zone: Vec<u8>,
    /// Offsets of the body's runs of 32 and 16 characters (where a printed trace or span id is).
    runs32: Vec<usize>,
    runs16: Vec<usize>,
    zbuf: Vec<u8>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Scratch {
    /// Compresses `raw` into `self.zbuf` at [`ZSTD_LEVEL`].
    fn compress(
        zstd_ctx: &mut Option<zstd::bulk::Compressor<'static>>,
        zbuf: &mut Vec<u8>,
        raw: &[u8],
    ) -> std::io::Result<()> {
        let ctx = match zstd_ctx {
            Some(c) => c,
            None => zstd_ctx.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        zbuf.clear();
        zbuf.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        ctx.compress_to_buffer(raw, zbuf)?;
        Ok(())
    }
}

/// Where the hex form `hex` of an id is in `body`: first among the body's runs of that length
/// (`runs`, offsets), else anywhere.
fn find_hex(body: &[u8], runs: &[usize], hex: &[u8]) -> Option<usize> {
    runs.iter()
        .copied()
        .find(|&at| body.get(at..at + hex.len()) == Some(hex))
        .or_else(|| memchr::memmem::find(body, hex))
}

/// Observed timestamps are stored relative to the chunk's oldest timestamp: one push gives all
/// its lines the same observed time, so their metadata rows are identical and compress to almost
/// nothing. 0 stays 0 (no observed time); other values are shifted off 0.
fn observed_to_stored(observed: i64, min_ts: i64) -> i64 {
    if observed == 0 {
        return 0;
    }
    let d = observed.wrapping_sub(min_ts);
    if d >= 0 { d.wrapping_add(1) } else { d }
}

/// The inverse of [`observed_to_stored`].
fn stored_to_observed(stored: i64, min_ts: i64) -> i64 {
    match stored {
        0 => 0,
        s if s > 0 => min_ts.wrapping_add(s - 1),
        s => min_ts.wrapping_add(s),
    }
}

/// Encodes `rows` (sorted by `(timestamp, seq)`, at least one) of stream `stream` as one frame
/// appended to `out`; returns its summary.
pub(super) fn encode(stream: u32, rows: &[Row<'_>], out: &mut Vec<u8>, sc: &mut Scratch) -> std::io::Result<Summary> {
    let n = rows.len();
    let min_ts = rows.iter().map(|r| r.record.timestamp_ns).min().unwrap_or(0);
    let max_ts = rows.iter().map(|r| r.record.timestamp_ns).max().unwrap_or(0);
    let Scratch {
        ts,
        seq,
        lens,
        bodies,
        meta,
        one,
        ids,
        hashes,
        tokens: token_set,
        block_tokens,
        blocks,
        zblocks,
        zone,
        runs32,
        runs16,
        zbuf,
        zstd,
    } = sc;
    for v in [&mut *ts, &mut *seq, &mut *lens, &mut *bodies, &mut *meta, &mut *ids, &mut *zblocks] {
        v.clear();
    }
    hashes.clear();
    token_set.clear();
    block_tokens.clear();
    blocks.clear();
    let body_bytes: usize = rows.iter().map(|r| r.record.body.len()).sum();
    bodies.reserve(body_bytes);
    // Bodies are cut into blocks, each compressed alone, with its tokens in the bloom filter.
    let blocked = body_bytes > BODY_BLOCK_BYTES;
    let (mut block_start, mut block_rows) = (0usize, 0u32);
    let mut keys: Vec<String> = Vec::new();
    // Which of the record fields `keys` already lists (bits as below).
    let mut field_keys = 0u8;
    let mut hex_buf = [0u8; 32];
    let (mut prev_ts, mut prev_seq) = (min_ts, rows.first().map_or(0, |r| r.seq));
    crate::varint::put(seq, prev_seq);
    for (i, r) in rows.iter().enumerate() {
        let rec = r.record;
        crate::varint::put(ts, crate::varint::zigzag(rec.timestamp_ns.wrapping_sub(prev_ts)));
        prev_ts = rec.timestamp_ns;
        if i > 0 {
            crate::varint::put(seq, crate::varint::zigzag(r.seq.wrapping_sub(prev_seq) as i64));
            prev_seq = r.seq;
        }
        crate::varint::put(lens, rec.body.len() as u64);
        bodies.extend_from_slice(rec.body.as_bytes());
        runs32.clear();
        runs16.clear();
        let base = rec.body.as_ptr() as usize;
        tokens::for_each_run(&rec.body, |t| {
            let len = t.len();
            if len >= tokens::LONG_RUN {
                if len == 32 {
                    runs32.push(t.as_ptr() as usize - base);
                }
                tokens::winnow(t.as_bytes(), |h| hashes.push(h));
            } else if len == 16 {
                runs16.push(t.as_ptr() as usize - base);
            } else if tokens::indexed(t) {
                token_set.insert(t);
                if blocked && tokens::block_indexed(t) {
                    block_tokens.insert(t);
                }
            }
        });
        if blocked {
            block_rows += 1;
            if bodies.len() - block_start >= BODY_BLOCK_BYTES || i + 1 == n {
                let b = blocks.len();
                hashes.extend(block_tokens.packed().map(|k| tokens::block_key(k, b)));
                blocks.push((block_rows, (bodies.len() - block_start) as u32));
                block_tokens.clear();
                (block_start, block_rows) = (bodies.len(), 0);
            }
        }
        // Trace and span ids: most lines that carry them print them in the body too; then only
        // their offset there is kept.
        if let Some(t) = rec.trace_id {
            hashes.push(tokens::id_hash(&t.0));
        }
        if let Some(s) = rec.span_id {
            hashes.push(tokens::id_hash(&s.0));
        }
        let trace = rec.trace_id.as_ref().map(|t| (&t.0[..], &runs32[..]));
        let span = rec.span_id.as_ref().map(|s| (&s.0[..], &runs16[..]));
        let flag_at = ids.len();
        ids.push(0);
        for (id, present, in_body) in [(trace, ID_TRACE, ID_TRACE_IN_BODY), (span, ID_SPAN, ID_SPAN_IN_BODY)] {
            let Some((id, runs)) = id else { continue };
            let hex = &mut hex_buf[..id.len() * 2];
            for (i, b) in id.iter().enumerate() {
                hex[2 * i] = b"0123456789abcdef"[(b >> 4) as usize];
                hex[2 * i + 1] = b"0123456789abcdef"[(b & 15) as usize];
            }
            let mut f = present;
            match find_hex(rec.body.as_bytes(), runs, hex) {
                Some(at) => {
                    f |= in_body;
                    crate::varint::put(ids, at as u64);
                }
                None => ids.extend_from_slice(id),
            }
            ids[flag_at] |= f;
        }
        let mut key = |k: &str| {
            if !keys.iter().any(|x| x == k) {
                keys.push(k.to_string());
            }
        };
        // The four record fields are listed once each, on first sight, without comparing.
        for (present, name, bit) in [
            (rec.trace_id.is_some(), "trace_id", 1u8),
            (rec.span_id.is_some(), "span_id", 2),
            (!rec.severity_text.is_empty(), "severity_text", 4),
            (rec.severity_number != 0, "severity_number", 8),
        ] {
            if present && field_keys & bit == 0 {
                field_keys |= bit;
                key(name);
            }
        }
        for kv in &rec.attributes {
            key(&kv.key);
        }
        let m = RowMetaRef {
            resource: r.resource,
            scope: r.scope,
            record: RecordRef {
                timestamp_ns: 0,
                observed_timestamp_ns: observed_to_stored(rec.observed_timestamp_ns, min_ts),
                severity_number: rec.severity_number,
                severity_text: &rec.severity_text,
                body: "",
                attributes: &rec.attributes,
                dropped_attributes_count: rec.dropped_attributes_count,
                // In the `ids` column.
                trace_id: None,
                span_id: None,
                flags: rec.flags,
                event_name: &rec.event_name,
            },
        };
        // Each row's metadata with its length first, so a reader can decode one row alone.
        one.clear();
        let one_row = postcard::to_extend(&m, std::mem::take(one)).map_err(std::io::Error::other)?;
        crate::varint::put(meta, one_row.len() as u64);
        meta.extend_from_slice(&one_row);
        *one = one_row;
    }
    hashes.sort_unstable();
    hashes.dedup();
    let mut bloom = Bloom::with_keys(hashes.len());
    for h in hashes.iter() {
        bloom.insert(*h);
    }
    let tokens = token_set.joined();
    let keys_col = postcard::to_allocvec(&keys).map_err(std::io::Error::other)?;
    let bloom_col = bloom.to_bytes();
    if blocked {
        // The block table (count; per block rows, bodies' bytes, stored bytes), then the frames.
        crate::varint::put(zblocks, blocks.len() as u64);
        let mut at = 0usize;
        let mut frames = std::mem::take(zone);
        frames.clear();
        for &(rows_in, raw) in blocks.iter() {
            Scratch::compress(zstd, zbuf, &bodies[at..at + raw as usize])?;
            at += raw as usize;
            crate::varint::put(zblocks, u64::from(rows_in));
            crate::varint::put(zblocks, u64::from(raw));
            crate::varint::put(zblocks, zbuf.len() as u64);
            frames.extend_from_slice(zbuf);
        }
        zblocks.extend_from_slice(&frames);
        *zone = frames;
    }
    // Per column: id, raw bytes, how they are stored (raw; zstd when longer than 64 bytes;
    // already stored as blocks in `zblocks`).
    const KEEP: u8 = 0;
    const ZSTD: u8 = 1;
    const BLOCKS: u8 = 2;
    let body_mode = if blocked { BLOCKS } else { ZSTD };
    let cols: [(u8, &[u8], u8); NCOLS] = [
        (COL_TS, ts.as_slice(), ZSTD),
        (COL_SEQ, seq.as_slice(), ZSTD),
        (COL_LENS, lens.as_slice(), ZSTD),
        (COL_BODIES, bodies.as_slice(), body_mode),
        (COL_META, meta.as_slice(), ZSTD),
        (COL_BLOOM, &bloom_col, KEEP),
        (COL_KEYS, &keys_col, KEEP),
        (COL_IDS, ids.as_slice(), ZSTD),
    ];
    // The frame is built in place: header, column directory, then the columns; the length, CRC
    // and directory are filled in as the columns are written.
    let frame_at = out.len();
    out.reserve(FRAME_HEADER + 26 + NCOLS * 10 + body_bytes / 4);
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out.push(CHUNK_VERSION);
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&min_ts.to_le_bytes());
    out.extend_from_slice(&max_ts.to_le_bytes());
    out.push(NCOLS as u8);
    let mut dir_at = out.len();
    out.resize(dir_at + NCOLS * 10, 0);
    for (id, raw, mode) in cols {
        let (codec, data): (u8, &[u8]) = if mode == BLOCKS {
            (CODEC_ZSTD_BLOCKS, zblocks)
        } else if mode == ZSTD && raw.len() > 64 {
            Scratch::compress(zstd, zbuf, raw)?;
            (CODEC_ZSTD, zbuf)
        } else {
            (CODEC_RAW, raw)
        };
        let dir = &mut out[dir_at..dir_at + 10];
        dir[0] = id;
        dir[1] = codec;
        dir[2..6].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        dir[6..10].copy_from_slice(&(data.len() as u32).to_le_bytes());
        dir_at += 10;
        out.extend_from_slice(data);
    }
    let payload_len = out.len() - frame_at - FRAME_HEADER;
    let crc = crc32c::crc32c(&out[frame_at + FRAME_HEADER..]);
    out[frame_at..frame_at + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[frame_at + 4..frame_at + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(Summary { min_ts, max_ts, rows: n as u32, tokens })
}

/// Bytes at the start of a frame that hold its length, CRC, header and column directory: all
/// [`bloom_range`] needs.
pub(super) const HEAD_BYTES: usize = FRAME_HEADER + HEADER_FIXED + NCOLS * 10;

/// Fixed header of a payload: version, stream, rows, min and max timestamps, column count.
const HEADER_FIXED: usize = 1 + 4 + 4 + 8 + 8 + 1;

/// The payload length and CRC at the start of a frame.
fn frame_len_crc(frame: &[u8]) -> Result<(usize, u32), ChunkError> {
    if frame.len() < FRAME_HEADER {
        return Err(bad("frame shorter than its header"));
    }
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((len, crc))
}

/// A payload's header and column directory, with each column's place in the payload.
struct Directory {
    version: u8,
    stream: u32,
    rows: usize,
    min_ts: i64,
    max_ts: i64,
    /// Per column: codec, raw length, offset in the payload, stored length.
    cols: [(u8, u32, usize, usize); NCOLS],
}

impl Directory {
    /// Reads the directory from `p`, the start of a payload of `payload_len` bytes (at least
    /// its header and directory); every column must lie within `payload_len`.
    fn read(p: &[u8], payload_len: usize) -> Result<Directory, ChunkError> {
        const _: () = assert!(NCOLS * 10 + 26 < 1 << 10);
        if p.len() < HEADER_FIXED || payload_len < HEADER_FIXED {
            return Err(bad("short header"));
        }
        let version = p[0];
        if version != CHUNK_VERSION && version != CHUNK_VERSION_1 {
            return Err(bad(format!("unknown chunk version {version}")));
        }
        let u32_at = |i: usize| u32::from_le_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let i64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&p[i..i + 8]);
            i64::from_le_bytes(b)
        };
        let ncols = p[25] as usize;
        if ncols != NCOLS {
            return Err(bad(format!("{ncols} columns, expected {NCOLS}")));
        }
        let mut at = HEADER_FIXED;
        let dir_end = at + ncols * 10;
        if p.len() < dir_end || payload_len < dir_end {
            return Err(bad("short column directory"));
        }
        let mut data_at = dir_end;
        let mut cols = [(0, 0, 0, 0); NCOLS];
        for (i, col) in cols.iter_mut().enumerate() {
            let (id, codec, raw, stored) = (p[at], p[at + 1], u32_at(at + 2), u32_at(at + 6) as usize);
            at += 10;
            if id as usize != i {
                return Err(bad(format!("column {i} has id {id}")));
            }
            if data_at.checked_add(stored).is_none_or(|end| end > payload_len) {
                return Err(bad("column past the end of the frame"));
            }
            if codec != CODEC_RAW && codec != CODEC_ZSTD && codec != CODEC_ZSTD_BLOCKS {
                return Err(bad(format!("unknown codec {codec}")));
            }
            *col = (codec, raw, data_at, stored);
            data_at += stored;
        }
        Ok(Directory {
            version,
            stream: u32_at(1),
            rows: u32_at(5) as usize,
            min_ts: i64_at(9),
            max_ts: i64_at(17),
            cols,
        })
    }
}

/// Where a chunk's bloom filter column ([`Chunk::bloom`]) lies in its frame, read from the frame's
/// first [`HEAD_BYTES`] (`head`; the frame is `frame_len` bytes): so a query can read the filter
/// alone, without mapping the chunk.
pub(super) fn bloom_range(head: &[u8], frame_len: usize) -> Result<std::ops::Range<usize>, ChunkError> {
    let (len, _) = frame_len_crc(head)?;
    if FRAME_HEADER.checked_add(len).is_none_or(|end| end > frame_len) {
        return Err(bad("torn frame (short payload)"));
    }
    let d = Directory::read(&head[FRAME_HEADER..], len)?;
    let (_, _, at, stored) = d.cols[COL_BLOOM as usize];
    Ok(FRAME_HEADER + at..FRAME_HEADER + at + stored)
}

/// One block of a [`CODEC_ZSTD_BLOCKS`] column: its rows, its bytes decompressed, and where its
/// zstd frame is in the column's stored bytes.
struct Block {
    rows: usize,
    raw: usize,
    frame: std::ops::Range<usize>,
}

/// The block table of a [`CODEC_ZSTD_BLOCKS`] column (`data`, the stored bytes; `raw`, the
/// column's length decompressed): every frame inside `data`, the frames filling it to its end,
/// and the blocks' bytes adding up to `raw`.
fn block_table(data: &[u8], raw: u32) -> Result<Vec<Block>, ChunkError> {
    let mut at = 0usize;
    let n = get_varint(data, &mut at)?;
    // Each block takes at least three bytes of the table.
    if n == 0 || n > data.len() as u64 / 3 {
        return Err(bad(format!("implausible block count {n}")));
    }
    let mut sizes = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let rows = get_varint(data, &mut at)?;
        let raw = get_varint(data, &mut at)?;
        let stored = get_varint(data, &mut at)?;
        sizes.push((rows, raw, stored));
    }
    let (mut total, mut out) = (0u64, Vec::with_capacity(sizes.len()));
    for (rows, raw, stored) in sizes {
        let end = (at as u64)
            .checked_add(stored)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| bad("block past the column"))?;
        total = total.saturating_add(raw);
        if total > u64::from(u32::MAX) || rows > u64::from(u32::MAX) {
            return Err(bad("implausible block"));
        }
        out.push(Block { rows: rows as usize, raw: raw as usize, frame: at..end as usize });
        at = end as usize;
    }
    if at != data.len() || total != u64::from(raw) {
        return Err(bad("blocks do not fill the column"));
    }
    Ok(out)
}

/// Runs `f` with this thread's zstd decompression context (created on first use and reused:
/// creating one costs more than decompressing a small column).
fn with_dctx<T>(f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>) -> std::io::Result<T> {
    thread_local! {
        static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => f(d),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// Decompresses one zstd frame into `out`, which it must fill exactly.
fn unzstd(frame: &[u8], out: &mut [u8]) -> std::io::Result<()> {
    let want = out.len();
    let n = with_dctx(|d| d.decompress_to_buffer(frame, out))?;
    if n != want {
        return Err(std::io::Error::other(format!("{n} bytes, expected {want}")));
    }
    Ok(())
}

/// A parsed chunk frame: the header and the column slices, nothing decompressed yet.
pub(super) struct Chunk<'a> {
    /// The payload's version byte.
    version: u8,
    pub stream: u32,
    pub rows: usize,
    pub min_ts: i64,
    /// Newest timestamp (the index holds it too; kept for tools and checks).
    #[allow(dead_code)]
    pub max_ts: i64,
    cols: [(u8, u32, &'a [u8]); NCOLS],
}

impl<'a> Chunk<'a> {
    /// Parses the frame at the start of `frame` (length, CRC, header). With `verify`, checks the
    /// CRC of the whole payload.
    pub fn parse(frame: &'a [u8], verify: bool) -> Result<Chunk<'a>, ChunkError> {
        let (len, crc) = frame_len_crc(frame)?;
        let payload = frame.get(FRAME_HEADER..FRAME_HEADER + len).ok_or_else(|| bad("torn frame (short payload)"))?;
        if verify && crc32c::crc32c(payload) != crc {
            return Err(bad("CRC mismatch"));
        }
        let d = Directory::read(payload, payload.len())?;
        let mut cols: [(u8, u32, &[u8]); NCOLS] = [(0, 0, &[]); NCOLS];
        for (col, &(codec, raw, at, stored)) in cols.iter_mut().zip(&d.cols) {
            *col = (codec, raw, &payload[at..at + stored]);
        }
        Ok(Chunk { version: d.version, stream: d.stream, rows: d.rows, min_ts: d.min_ts, max_ts: d.max_ts, cols })
    }

    fn column(&self, id: u8) -> Result<std::borrow::Cow<'a, [u8]>, ChunkError> {
        let (codec, raw, data) = self.cols[id as usize];
        if codec == CODEC_RAW {
            return Ok(std::borrow::Cow::Borrowed(data));
        }
        // The raw length bounds the allocation; a lying header gives an error, not a huge buffer.
        if raw as usize > data.len().saturating_mul(64).max(1 << 16) {
            return Err(bad("implausible column size"));
        }
        if codec == CODEC_ZSTD_BLOCKS {
            let table = block_table(data, raw)?;
            let mut out = vec![0u8; raw as usize];
            let mut at = 0usize;
            for b in &table {
                unzstd(&data[b.frame.clone()], &mut out[at..at + b.raw])
                    .map_err(|e| bad(format!("column {id}: {e}")))?;
                at += b.raw;
            }
            return Ok(std::borrow::Cow::Owned(out));
        }
        let out = with_dctx(|d| d.decompress(data, raw as usize)).map_err(|e| bad(format!("column {id}: {e}")))?;
        if out.len() != raw as usize {
            return Err(bad(format!("column {id}: {} bytes, expected {raw}", out.len())));
        }
        Ok(std::borrow::Cow::Owned(out))
    }

    /// The bloom filter column (raw); queries that do not read the chunk read it with
    /// [`bloom_range`].
    pub fn bloom(&self) -> &'a [u8] {
        self.cols[COL_BLOOM as usize].2
    }

    /// The bodies of the body blocks `keep` accepts (by block number), one after the other,
    /// with the row ranges `(first, end)` they hold and, per range, the bytes of the bodies
    /// before it that were left out; `None` when the chunk's bodies are not stored in blocks.
    #[allow(clippy::type_complexity)]
    pub fn bodies_of_blocks(
        &self,
        ends: &[u32],
        keep: &dyn Fn(usize) -> bool,
    ) -> Result<Option<(String, Vec<(usize, usize)>, Vec<usize>)>, ChunkError> {
        let (codec, raw, data) = self.cols[COL_BODIES as usize];
        if codec != CODEC_ZSTD_BLOCKS {
            return Ok(None);
        }
        if raw as usize > data.len().saturating_mul(64).max(1 << 16) {
            return Err(bad("implausible column size"));
        }
        if ends.len() != self.rows || ends.last().copied().unwrap_or(0) != raw {
            return Err(bad("body lengths do not add up"));
        }
        let table = block_table(data, raw)?;
        let mut out: Vec<u8> = Vec::new();
        let (mut kept, mut shift) = (Vec::new(), Vec::new());
        let (mut row, mut at) = (0usize, 0usize);
        for (b, blk) in table.iter().enumerate() {
            let end_row = row + blk.rows;
            let end_at = at + blk.raw;
            // A block's bytes must be exactly its rows' bodies.
            if end_row > ends.len() || end_row == row || ends[end_row - 1] as usize != end_at {
                return Err(bad("body blocks do not match the body lengths"));
            }
            if keep(b) {
                let from = out.len();
                out.resize(from + blk.raw, 0);
                unzstd(&data[blk.frame.clone()], &mut out[from..]).map_err(|e| bad(format!("bodies: {e}")))?;
                kept.push((row, end_row));
                shift.push(at - from);
            }
            (row, at) = (end_row, end_at);
        }
        if row != ends.len() {
            return Err(bad("body blocks do not match the body lengths"));
        }
        // The kept rows must start on characters.
        let s = String::from_utf8(out).map_err(|_| bad("bodies are not UTF-8"))?;
        for (&(a, b), &sh) in kept.iter().zip(&shift) {
            for r in a..b {
                if !s.is_char_boundary(ends[r] as usize - sh) || (r > a && ends[r] < ends[r - 1]) {
                    return Err(bad("body boundary inside a character"));
                }
            }
        }
        Ok(Some((s, kept, shift)))
    }

    /// Timestamps of every row.
    pub fn timestamps(&self) -> Result<Vec<i64>, ChunkError> {
        let b = self.column(COL_TS)?;
        let mut out = Vec::with_capacity(self.rows);
        let (mut at, mut prev) = (0, self.min_ts);
        for _ in 0..self.rows {
            prev = prev.wrapping_add(crate::varint::unzigzag(get_varint(&b, &mut at)?));
            out.push(prev);
        }
        Ok(out)
    }

    /// Arrival sequence numbers of every row.
    pub fn seqs(&self) -> Result<Vec<u64>, ChunkError> {
        let b = self.column(COL_SEQ)?;
        let mut out = Vec::with_capacity(self.rows);
        let mut at = 0;
        if self.rows == 0 {
            return Ok(out);
        }
        let mut prev = get_varint(&b, &mut at)?;
        out.push(prev);
        for _ in 1..self.rows {
            prev = prev.wrapping_add(crate::varint::unzigzag(get_varint(&b, &mut at)?) as u64);
            out.push(prev);
        }
        Ok(out)
    }

    /// Body end offsets (`rows` values; row `i` is `ends[i-1]..ends[i]`).
    pub fn body_ends(&self) -> Result<Vec<u32>, ChunkError> {
        let b = self.column(COL_LENS)?;
        let mut out = Vec::with_capacity(self.rows);
        let (mut at, mut end) = (0, 0u64);
        for _ in 0..self.rows {
            end += get_varint(&b, &mut at)?;
            if end > u64::from(u32::MAX) {
                return Err(bad("bodies too long"));
            }
            out.push(end as u32);
        }
        Ok(out)
    }

    /// All bodies, concatenated (UTF-8 checked); cut with [`Chunk::body_ends`].
    pub fn bodies(&self, ends: &[u32]) -> Result<String, ChunkError> {
        let b = self.column(COL_BODIES)?.into_owned();
        if ends.last().copied().unwrap_or(0) as usize != b.len() {
            return Err(bad("body lengths do not add up"));
        }
        let s = String::from_utf8(b).map_err(|_| bad("bodies are not UTF-8"))?;
        let mut prev = 0usize;
        for &e in ends {
            if !s.is_char_boundary(e as usize) || (e as usize) < prev {
                return Err(bad("body boundary inside a character"));
            }
            prev = e as usize;
        }
        Ok(s)
    }

    /// The `meta` column and where each row's record starts and ends in it.
    fn meta_rows(&self) -> Result<(Vec<u8>, Vec<RowSpan>), ChunkError> {
        let b = self.column(COL_META)?.into_owned();
        let mut rows = Vec::with_capacity(self.rows);
        let mut at = 0usize;
        for _ in 0..self.rows {
            let len = get_varint(&b, &mut at)? as usize;
            let end = at.checked_add(len).filter(|&e| e <= b.len()).ok_or_else(|| bad("metadata past the column"))?;
            rows.push((at as u32, end as u32));
            at = end;
        }
        Ok((b, rows))
    }

    /// The `ids` column and where each row's entry starts in it.
    fn id_rows(&self) -> Result<(Vec<u8>, Vec<u32>), ChunkError> {
        let b = self.column(COL_IDS)?.into_owned();
        let mut rows = Vec::with_capacity(self.rows);
        let mut at = 0usize;
        for _ in 0..self.rows {
            rows.push(at as u32);
            let Some(&flags) = b.get(at) else { return Err(bad("ids column too short")) };
            at += 1;
            for (present, in_body, len) in [(ID_TRACE, ID_TRACE_IN_BODY, 16usize), (ID_SPAN, ID_SPAN_IN_BODY, 8)] {
                if flags & present == 0 {
                    continue;
                }
                if flags & in_body != 0 {
                    get_varint(&b, &mut at)?;
                } else {
                    at += len;
                }
            }
            if at > b.len() {
                return Err(bad("ids column too short"));
            }
        }
        Ok((b, rows))
    }

    /// Attribute keys, plus `trace_id`, `span_id`, `severity_text`, `severity_number` when some row
    /// carries them.
    pub fn keys(&self) -> Result<Vec<String>, ChunkError> {
        let b = self.column(COL_KEYS)?;
        postcard::from_bytes(&b).map_err(|e| bad(format!("keys: {e}")))
    }
}

/// A chunk with the columns a reader asked for decompressed, and the metadata on demand.
pub(super) struct Decoded<'a> {
    pub chunk: Chunk<'a>,
    pub ts: Vec<i64>,
    pub seq: Vec<u64>,
    /// Empty unless bodies were asked for.
    pub ends: Vec<u32>,
    pub bodies: String,
    /// The row ranges `(first, end)` whose bodies are decoded, when only some are
    /// ([`Decoded::with_blocks`]); `None` when all are (or none was asked for).
    pub body_rows: Option<Vec<(usize, usize)>>,
    /// With `body_rows`: per range, the bytes of the bodies before it left out of `bodies`.
    body_shift: Vec<usize>,
    pub keys: Vec<String>,
    /// The `meta` and `ids` columns with their row offsets, the bodies when the reader did not
    /// decode them (ids may point into them), and each row's decoded metadata: all on demand.
    meta_cols: OnceLock<MetaCols>,
    rows_meta: OnceLock<Vec<OnceLock<RowMeta>>>,
}

/// Start and end of one row's record in the `meta` column.
type RowSpan = (u32, u32);

/// What [`Decoded::meta`] decodes once per chunk.
struct MetaCols {
    meta: Vec<u8>,
    meta_rows: Vec<RowSpan>,
    ids: Vec<u8>,
    id_rows: Vec<u32>,
    /// The bodies and their ends, when the reader had not decoded them.
    bodies: Option<(String, Vec<u32>)>,
}

impl<'a> Decoded<'a> {
    /// Decodes `chunk`: timestamps and keys always, seqs and bodies when asked.
    pub fn new(chunk: Chunk<'a>, seqs: bool, bodies: bool) -> Result<Decoded<'a>, ChunkError> {
        let ends = if bodies { chunk.body_ends()? } else { Vec::new() };
        let text = if bodies { chunk.bodies(&ends)? } else { String::new() };
        Decoded::assemble(chunk, seqs, ends, text, None, Vec::new())
    }

    /// Decodes `chunk` with bodies, of only the body blocks `keep` accepts when the bodies are
    /// stored in blocks ([`Decoded::body_rows`] says which rows those are; the other rows'
    /// bodies must not be read).
    pub fn with_blocks(chunk: Chunk<'a>, seqs: bool, keep: &dyn Fn(usize) -> bool) -> Result<Decoded<'a>, ChunkError> {
        let ends = chunk.body_ends()?;
        match chunk.bodies_of_blocks(&ends, keep)? {
            Some((text, rows, shift)) => Decoded::assemble(chunk, seqs, ends, text, Some(rows), shift),
            None => Decoded::new(chunk, seqs, true),
        }
    }

    /// The decoded chunk around bodies already decoded: timestamps, keys, and seqs when asked.
    fn assemble(
        chunk: Chunk<'a>,
        seqs: bool,
        ends: Vec<u32>,
        bodies: String,
        body_rows: Option<Vec<(usize, usize)>>,
        body_shift: Vec<usize>,
    ) -> Result<Decoded<'a>, ChunkError> {
        let ts = chunk.timestamps()?;
        let seq = if seqs { chunk.seqs()? } else { Vec::new() };
        let keys = chunk.keys()?;
        Ok(Decoded {
            chunk,
            ts,
            seq,
            ends,
            bodies,
            body_rows,
            body_shift,
            keys,
            meta_cols: OnceLock::new(),
            rows_meta: OnceLock::new(),
        })
    }

    /// Frees the decoded columns (the value must not be read after).
    pub fn release(&mut self) {
        self.ts = Vec::new();
        self.seq = Vec::new();
        self.ends = Vec::new();
        self.bodies = String::new();
        self.body_rows = None;
        self.body_shift = Vec::new();
        self.meta_cols = OnceLock::new();
        self.rows_meta = OnceLock::new();
    }

    /// Body of row `i` (empty when bodies were not decoded, or not that row's).
    pub fn body(&self, i: usize) -> &str {
        if self.ends.is_empty() {
            return "";
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let shift = self.shift_of(i).unwrap_or(usize::MAX);
        let (Some(a), Some(b)) = (start.checked_sub(shift), (self.ends[i] as usize).checked_sub(shift)) else {
            return "";
        };
        self.bodies.get(a..b).unwrap_or("")
    }

    /// The bytes of the bodies before row `i` left out of `bodies`: 0 when all are decoded,
    /// `None` when row `i`'s is not.
    pub fn shift_of(&self, i: usize) -> Option<usize> {
        let Some(kept) = &self.body_rows else { return Some(0) };
        let k = kept.partition_point(|&(_, end)| end <= i);
        kept.get(k).filter(|&&(a, _)| a <= i).map(|_| self.body_shift[k])
    }

    /// Metadata of row `i` (decoded on first use, that row alone; a damaged column gives
    /// defaults).
    pub fn meta(&self, i: usize) -> &RowMeta {
        static EMPTY: OnceLock<RowMeta> = OnceLock::new();
        let rows = self.rows_meta.get_or_init(|| (0..self.ts.len()).map(|_| OnceLock::new()).collect());
        let Some(slot) = rows.get(i) else { return EMPTY.get_or_init(RowMeta::default) };
        slot.get_or_init(|| self.decode_meta(i).unwrap_or_default())
    }

    fn decode_meta(&self, i: usize) -> Result<RowMeta, ChunkError> {
        let cols = self.meta_cols.get_or_init(|| {
            let (meta, meta_rows) = self.chunk.meta_rows().unwrap_or_default();
            let (ids, id_rows) = self.chunk.id_rows().unwrap_or_default();
            let bodies = if self.ends.is_empty() && self.chunk.rows > 0 {
                self.chunk.body_ends().ok().and_then(|e| Some((self.chunk.bodies(&e).ok()?, e)))
            } else {
                None
            };
            MetaCols { meta, meta_rows, ids, id_rows, bodies }
        });
        let &(a, b) = cols.meta_rows.get(i).ok_or_else(|| bad("metadata row missing"))?;
        let mut m: RowMeta =
            postcard::from_bytes(&cols.meta[a as usize..b as usize]).map_err(|e| bad(format!("metadata: {e}")))?;
        let t = self.ts.get(i).copied().unwrap_or(0);
        let stored = m.record.observed_timestamp_ns;
        m.record.observed_timestamp_ns = if self.chunk.version == CHUNK_VERSION_1 {
            if stored != 0 { stored.wrapping_add(t) } else { 0 }
        } else {
            stored_to_observed(stored, self.chunk.min_ts)
        };
        m.record.timestamp_ns = t;
        // Trace and span ids.
        let body = match &cols.bodies {
            Some((text, ends)) => {
                let start = if i == 0 { 0 } else { ends.get(i - 1).copied().unwrap_or(0) as usize };
                text.get(start..ends.get(i).copied().unwrap_or(0) as usize).unwrap_or("")
            }
            None => self.body(i),
        };
        let ids = &cols.ids;
        let mut at = *cols.id_rows.get(i).ok_or_else(|| bad("ids row missing"))? as usize;
        let flags = *ids.get(at).ok_or_else(|| bad("ids column too short"))?;
        at += 1;
        for (present, in_body, len) in [(ID_TRACE, ID_TRACE_IN_BODY, 16usize), (ID_SPAN, ID_SPAN_IN_BODY, 8)] {
            if flags & present == 0 {
                continue;
            }
            let mut raw = [0u8; 16];
            if flags & in_body != 0 {
                let off = get_varint(ids, &mut at)? as usize;
                let hex = body.as_bytes().get(off..off + 2 * len).ok_or_else(|| bad("id offset past the body"))?;
                hex::decode_to_slice(hex, &mut raw[..len]).map_err(|_| bad("id in body is not hex"))?;
            } else {
                let b = ids.get(at..at + len).ok_or_else(|| bad("ids column too short"))?;
                raw[..len].copy_from_slice(b);
                at += len;
            }
            if len == 16 {
                m.record.trace_id = Some(TraceId(raw));
            } else {
                let mut s = [0u8; 8];
                s.copy_from_slice(&raw[..8]);
                m.record.span_id = Some(SpanId(s));
            }
        }
        Ok(m)
    }

    /// The whole record of row `i`.
    pub fn record(&self, i: usize) -> LogRecord {
        let mut r = self.meta(i).record.clone();
        r.body = self.body(i).to_string();
        r.timestamp_ns = self.ts[i];
        r
    }
}

/// Every chunk frame of a data file, in order, as `(offset, length)`; stops at the first torn or
/// damaged frame (a torn tail is possible only past the committed length).
#[cfg(test)]
pub(super) fn frames(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Ok(c) = Chunk::parse(&data[at..], true) else { break };
        let _ = c;
        let len = u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        out.push((at, FRAME_HEADER + len));
        at += FRAME_HEADER + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AnyValue;

    fn sample() -> Vec<(u64, LogRecord)> {
        (0..50)
            .map(|i| {
                let mut r = LogRecord {
                    timestamp_ns: 1_700_000_000_000_000_000 + i * 1000 - (i % 3) * 7,
                    body: format!("level=info msg=\"hello {i}\" ünï path=/api/v1/{i}"),
                    ..LogRecord::default()
                };
                if i % 4 == 0 {
                    // Ids printed in the body are stored as offsets into it.
                    r.body.push_str(&format!(" trace_id={:032x} span_id={:016x}", 0xabc0 + i, 0x77 + i));
                }
                if i % 2 == 0 {
                    r.trace_id = TraceId::from_hex(&format!("{:032x}", 0xabc0 + i));
                    r.span_id = SpanId::from_hex(&format!("{:016x}", 0x77 + i));
                    r.attributes = vec![KeyValue::new("http.method", AnyValue::String("GET".into()))];
                    r.observed_timestamp_ns = r.timestamp_ns + 55;
                    r.severity_number = 9;
                    r.severity_text = "INFO".into();
                }
                (100 + i as u64 * 3, r)
            })
            .collect()
    }

    fn encoded(recs: &[(u64, LogRecord)]) -> (Vec<u8>, Summary) {
        let mut sorted: Vec<&(u64, LogRecord)> = recs.iter().collect();
        sorted.sort_by_key(|(s, r)| (r.timestamp_ns, *s));
        let rows: Vec<Row<'_>> =
            sorted.iter().map(|(s, r)| Row { seq: *s, resource: 1, scope: 2, record: r }).collect();
        let mut out = Vec::new();
        let sum = encode(7, &rows, &mut out, &mut Scratch::default()).unwrap();
        (out, sum)
    }

    #[test]
    fn round_trip() {
        let recs = sample();
        let (bytes, sum) = encoded(&recs);
        assert_eq!(sum.rows, 50);
        assert!(sum.tokens.split(' ').any(|t| t == "hello"));
        assert!(!sum.tokens.split(' ').any(|t| t.len() >= tokens::MAX_TOKEN_BYTES));
        let c = Chunk::parse(&bytes, true).unwrap();
        assert_eq!((c.stream, c.rows), (7, 50));
        assert_eq!((c.min_ts, c.max_ts), (sum.min_ts, sum.max_ts));
        let d = Decoded::new(c, true, true).unwrap();
        let mut want: Vec<&(u64, LogRecord)> = recs.iter().collect();
        want.sort_by_key(|(s, r)| (r.timestamp_ns, *s));
        for (i, (s, r)) in want.iter().enumerate() {
            assert_eq!(d.seq[i], *s);
            assert_eq!(&d.record(i), r);
            assert_eq!(d.meta(i).resource, 1);
            assert_eq!(d.meta(i).scope, 2);
        }
        for (_, r) in &recs {
            if let Some(t) = r.trace_id {
                assert!(Bloom::may_contain(d.chunk.bloom(), tokens::id_hash(&t.0)));
            }
        }
        assert!(d.keys.contains(&"http.method".to_string()) && d.keys.contains(&"trace_id".to_string()));
        assert_eq!(frames(&bytes), vec![(0, bytes.len())]);
    }

    /// Bodies past [`BODY_BLOCK_BYTES`] are stored in blocks: every block's tokens are in the
    /// bloom filter under its number, and decoding some blocks gives exactly their rows' bodies
    /// (the records of those rows whole); all blocks give all bodies.
    #[test]
    fn body_blocks_decode_only_what_is_kept() {
        let recs = sample();
        let (bytes, _) = encoded(&recs);
        let c = Chunk::parse(&bytes, true).unwrap();
        assert_eq!(c.cols[COL_BODIES as usize].0, CODEC_ZSTD_BLOCKS);
        let all = Decoded::new(Chunk::parse(&bytes, true).unwrap(), true, true).unwrap();
        let table = block_table(c.cols[COL_BODIES as usize].2, c.cols[COL_BODIES as usize].1).unwrap();
        assert!(table.len() >= 4, "{} blocks", table.len());
        let mut row = 0;
        for (b, blk) in table.iter().enumerate() {
            for r in row..row + blk.rows {
                tokens::for_each_token(all.body(r), |t| {
                    if !tokens::block_indexed(t) {
                        return;
                    }
                    let k = tokens::pack(t).unwrap();
                    assert!(Bloom::may_contain(c.bloom(), tokens::block_key(k, b)), "{t} in block {b}");
                });
            }
            row += blk.rows;
        }
        assert_eq!(row, all.ts.len());
        for pick in [vec![1usize], vec![0, 2], vec![], (0..table.len()).collect()] {
            let keep = |b: usize| pick.contains(&b);
            let d = Decoded::with_blocks(Chunk::parse(&bytes, true).unwrap(), true, &keep).unwrap();
            let kept = d.body_rows.clone().unwrap();
            assert_eq!(kept.len(), pick.len());
            for r in 0..all.ts.len() {
                if kept.iter().any(|&(a, b)| (a..b).contains(&r)) {
                    assert_eq!(d.body(r), all.body(r));
                    assert_eq!(d.record(r), all.record(r));
                } else {
                    assert_eq!(d.body(r), "", "row {r} of a block left out");
                }
            }
        }
        // Damaged block tables and frames (CRC not checked) are errors, never panics.
        let (_, _, at, stored) =
            Directory::read(&bytes[FRAME_HEADER..], bytes.len() - FRAME_HEADER).unwrap().cols[COL_BODIES as usize];
        for k in [0, 1, 2, 3, 5, stored / 2, stored - 1] {
            for flip in [0x01, 0x40, 0x80] {
                let mut b = bytes.clone();
                b[FRAME_HEADER + at + k] ^= flip;
                let c = Chunk::parse(&b, false).unwrap();
                let _ =
                    Decoded::with_blocks(c, true, &|_| true).map(|d| (0..d.ts.len()).for_each(|i| drop(d.record(i))));
                let c = Chunk::parse(&b, false).unwrap();
                let _ = Decoded::new(c, true, true).map(|d| (0..d.ts.len()).for_each(|i| drop(d.record(i))));
            }
        }
    }

    /// `sample()` with some observed timestamps before the chunk's oldest timestamp, as the
    /// frozen version-1 chunk holds it.
    fn v1_sample() -> Vec<(u64, LogRecord)> {
        let mut recs = sample();
        for (i, (_, r)) in recs.iter_mut().enumerate() {
            if i % 5 == 1 {
                r.observed_timestamp_ns = 1_700_000_000_000_000_000 - 3;
            }
        }
        recs
    }

    fn check_decodes_to(bytes: &[u8], recs: &[(u64, LogRecord)]) {
        let c = Chunk::parse(bytes, true).unwrap();
        let d = Decoded::new(c, true, true).unwrap();
        let mut want: Vec<&(u64, LogRecord)> = recs.iter().collect();
        want.sort_by_key(|(s, r)| (r.timestamp_ns, *s));
        assert_eq!(d.ts.len(), want.len());
        for (i, (s, r)) in want.iter().enumerate() {
            assert_eq!(d.seq[i], *s);
            assert_eq!(&d.record(i), r, "row {i}");
        }
    }

    #[test]
    fn the_frozen_version_1_chunk_still_decodes() {
        // Written by the version-1 encoder (observed timestamps relative to each row's own
        // timestamp) from `v1_sample()`; see `storage/testdata/compat/README.md`.
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/compat/logs-chunk-v1.dat")).unwrap();
        assert_eq!(bytes[FRAME_HEADER], CHUNK_VERSION_1);
        check_decodes_to(&bytes, &v1_sample());
        // The same rows written now (version 2) read back alike.
        let (now, _) = encoded(&v1_sample());
        assert_eq!(now[FRAME_HEADER], CHUNK_VERSION);
        check_decodes_to(&now, &v1_sample());
    }

    #[test]
    fn observed_timestamps_round_trip_around_the_chunk_start() {
        let min = 1_700_000_000_000_000_000i64;
        for obs in [0, 1, -1, min, min - 1, min + 1, min - 2, i64::MAX - 5, i64::MIN + 5, 42] {
            assert_eq!(stored_to_observed(observed_to_stored(obs, min), min), obs, "{obs}");
        }
        // Rows of one push share their observed time: their metadata rows are the same bytes.
        let mut recs = sample();
        for (_, r) in &mut recs {
            r.observed_timestamp_ns = min + 10_000_000;
            r.attributes.clear();
            r.severity_number = 0;
            r.severity_text.clear();
        }
        let (bytes, _) = encoded(&recs);
        check_decodes_to(&bytes, &recs);
        let c = Chunk::parse(&bytes, true).unwrap();
        let (meta, spans) = c.meta_rows().unwrap();
        let first = &meta[spans[0].0 as usize..spans[0].1 as usize];
        assert!(spans.iter().all(|&(a, b)| &meta[a as usize..b as usize] == first));
    }

    #[test]
    fn ids_are_found_in_runs_and_elsewhere() {
        let hex = b"0af7651916cd43dd8448eb211c80319c";
        // In a run of its own length, inside a longer run, or absent.
        let body = b"x=0af7651916cd43dd8448eb211c80319c y";
        assert_eq!(find_hex(body, &[2], hex), Some(2));
        assert_eq!(find_hex(body, &[], hex), Some(2));
        let body = b"x=zz0af7651916cd43dd8448eb211c80319c";
        assert_eq!(find_hex(body, &[], hex), Some(4));
        assert_eq!(find_hex(b"nothing here", &[0], hex), None);
        // A run offset that does not hold the id is passed over.
        let body = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 0af7651916cd43dd8448eb211c80319c";
        assert_eq!(find_hex(body, &[0, 33], hex), Some(33));
    }

    #[test]
    fn torn_and_damaged_frames_are_errors() {
        let (bytes, _) = encoded(&sample());
        for cut in [0, 3, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            let e = Chunk::parse(&bytes[..cut], true).err().expect("torn frame must fail");
            assert!(e.to_string().contains("damaged log chunk"), "{e}");
        }
        for at in [9, 30, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] ^= 0x40;
            let e = Chunk::parse(&b, true).err().expect("flipped bit must fail");
            assert_eq!(e.to_string(), "damaged log chunk: CRC mismatch");
            // Without the CRC check, decoding a damaged payload still never panics.
            if let Ok(c) = Chunk::parse(&b, false) {
                let _ = Decoded::new(c, true, true).map(|d| (0..d.ts.len()).for_each(|i| drop(d.record(i))));
            }
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes[..bytes.len() - 5]);
        assert_eq!(frames(&two).len(), 1, "the torn second frame is not read");
    }

    /// The bloom filter read from the frame's head alone is the parsed chunk's; a torn or lying
    /// head is an error, never a range past the frame or a panic.
    #[test]
    fn bloom_range_from_the_head_is_the_chunks_bloom() {
        let (bytes, _) = encoded(&sample());
        let r = bloom_range(&bytes[..HEAD_BYTES], bytes.len()).unwrap();
        let bloom = Chunk::parse(&bytes, true).unwrap().bloom();
        assert!(!bloom.is_empty());
        assert_eq!(&bytes[r], bloom);
        for cut in [0, 3, 8, 20, HEAD_BYTES - 1] {
            assert!(bloom_range(&bytes[..cut], bytes.len()).is_err(), "head cut at {cut}");
        }
        assert!(bloom_range(&bytes[..HEAD_BYTES], bytes.len() - 1).is_err(), "frame shorter than its length says");
        for at in 0..HEAD_BYTES {
            for flip in [0x01, 0x80] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                if let Ok(r) = bloom_range(&b[..HEAD_BYTES], b.len()) {
                    assert!(r.end <= b.len(), "byte {at}: {r:?}");
                }
            }
        }
    }
}

//! Segment files and record framing, byte for byte as `docs/format/wal.md` specifies.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{ReadError, WriteError};
use crate::model::WriteBatch;

/// The 8 bytes every segment starts with: magic `OPWAL`, two reserved zero bytes, format version 1.
pub const SEGMENT_HEADER: [u8; 8] = [b'O', b'P', b'W', b'A', b'L', 0, 0, SEGMENT_VERSION];
/// Length of [`SEGMENT_HEADER`]; the first record starts at this offset.
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_HEADER.len() as u64;
/// Segment format version (byte 7 of the header).
pub const SEGMENT_VERSION: u8 = 1;
/// Bytes before each payload: `u32` LE payload length, then `u32` LE CRC32C of the payload.
pub const RECORD_HEADER_LEN: usize = 8;
/// First byte of every payload: the record format version; version 2 is a postcard-encoded
/// [`WriteBatch`] (with profile mappings and the packed-samples variant), version 3 the same bytes
/// in one zstd frame. Version 1 (before both) is still read (`super::v1`).
pub const RECORD_VERSION: u8 = 3;
/// The version of a record stored without compression: the postcard encoding itself.
pub const RECORD_VERSION_PLAIN: u8 = 2;
/// Encodings at least this long are compressed (record version 3); shorter ones, and any that
/// zstd does not shrink, are written as version 2.
pub const COMPRESS_MIN_BYTES: usize = 256;
/// zstd level of compressed records: level 1 halves a batch of spans (random ids limit it) at
/// several hundred MB/s per core, and every byte saved is a byte the commit's `write(2)` does not
/// copy into the page cache and its `fdatasync` does not write back.
const ZSTD_LEVEL: i32 = 1;

/// File name of segment `seq`: 16 zero-padded decimal digits and `.wal`.
pub(crate) fn segment_file_name(seq: u64) -> String {
    format!("{seq:016}.wal")
}

/// Inverse of [`segment_file_name`]; `None` for any other name (other files in the directory are
/// ignored, never replayed).
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Frames `batch` as one record: header, version byte, postcard bytes. `max_payload` bounds the
/// payload (version byte included); the `u32` length field bounds it too.
#[cfg(test)]
pub(crate) fn encode_record(batch: &WriteBatch, max_payload: usize) -> Result<Vec<u8>, WriteError> {
    encode_record_into(batch, max_payload, Vec::new())
}

/// Frames `batch` as one record into `buf` (cleared first): a caller that hands the same buffer back every
/// time keeps its capacity, so large records do not grow a new vector by doubling each time.
pub(crate) fn encode_record_into(
    batch: &WriteBatch,
    max_payload: usize,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, WriteError> {
    buf.clear();
    if let WriteBatch::Samples(p) = batch {
        buf.reserve(RECORD_HEADER_LEN + 16 + p.as_bytes().len());
    }
    buf.resize(RECORD_HEADER_LEN, 0);
    buf.push(RECORD_VERSION_PLAIN);
    crate::postcard_append::append(batch, &mut buf).map_err(|e| WriteError::Encode { detail: e.to_string() })?;
    // The limit applies to the uncompressed payload, so that it means the same whatever zstd makes
    // of a batch.
    let payload_len = buf.len() - RECORD_HEADER_LEN;
    let max = max_payload.min(u32::MAX as usize);
    if payload_len > max {
        return Err(WriteError::TooLarge { size: payload_len, max });
    }
    if payload_len > COMPRESS_MIN_BYTES {
        compress_payload(&mut buf).map_err(|e| WriteError::Encode { detail: format!("zstd: {e}") })?;
    }
    let payload_len = buf.len() - RECORD_HEADER_LEN;
    let crc = crc32c::crc32c(&buf[RECORD_HEADER_LEN..]);
    buf[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// Replaces the version-2 payload after `buf`'s record header with version 3 (the encoding in one
/// zstd frame) when that is shorter. The compressor is the calling thread's, kept between records.
fn compress_payload(buf: &mut Vec<u8>) -> std::io::Result<()> {
    thread_local! {
        static ZSTD: std::cell::RefCell<(Option<zstd::bulk::Compressor<'static>>, Vec<u8>)> =
            const { std::cell::RefCell::new((None, Vec::new())) };
    }
    ZSTD.with(|z| {
        let (ctx, out) = &mut *z.borrow_mut();
        let ctx = match ctx {
            Some(c) => c,
            None => ctx.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
        };
        let encoding = &buf[RECORD_HEADER_LEN + 1..];
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(encoding.len()));
        ctx.compress_to_buffer(encoding, out)?;
        if out.len() < encoding.len() {
            buf.truncate(RECORD_HEADER_LEN);
            buf.push(RECORD_VERSION);
            buf.extend_from_slice(out);
        }
        // A huge record's scratch capacity is not kept.
        if out.capacity() > 4 << 20 {
            *out = Vec::new();
        }
        Ok(())
    })
}

/// Decompresses version-3 payloads for [`decode_payload`]; one per reader, reused.
#[derive(Default)]
pub(crate) struct Inflater {
    ctx: Option<zstd::bulk::Decompressor<'static>>,
    out: Vec<u8>,
}

impl Inflater {
    /// The content of the single zstd frame `frame`. Its declared content size bounds the
    /// allocation and must be exact; it is at most `u32::MAX`, the bound a plain payload has.
    fn inflate(&mut self, frame: &[u8]) -> Result<&[u8], String> {
        let size = match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n <= u32::MAX as u64 => n as usize,
            Ok(Some(n)) => return Err(format!("compressed record declares {n} bytes")),
            Ok(None) => return Err("compressed record without a content size".to_string()),
            Err(_) => return Err("compressed record is not a zstd frame".to_string()),
        };
        let ctx = match &mut self.ctx {
            Some(c) => c,
            None => self.ctx.insert(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?),
        };
        self.out.clear();
        self.out.reserve(size);
        let n = ctx.decompress_to_buffer(frame, &mut self.out).map_err(|e| format!("zstd: {e}"))?;
        if n != size {
            return Err(format!("compressed record holds {n} bytes, its frame declares {size}"));
        }
        Ok(&self.out)
    }
}

/// Decodes a payload whose CRC already matched.
#[cfg(test)]
fn decode_payload(payload: &[u8]) -> Result<WriteBatch, String> {
    decode_payload_with(payload, &mut Inflater::default())
}

/// Decodes a payload whose CRC already matched, inflating version 3 with `inflater`.
fn decode_payload_with(payload: &[u8], inflater: &mut Inflater) -> Result<WriteBatch, String> {
    let (&version, body) = payload.split_first().ok_or("empty payload")?;
    if version == 1 {
        return super::v1::decode(body);
    }
    let body = match version {
        RECORD_VERSION_PLAIN => body,
        RECORD_VERSION => inflater.inflate(body)?,
        _ => return Err(format!("unsupported record version {version}")),
    };
    let (batch, rest) =
        postcard::take_from_bytes::<WriteBatch>(body).map_err(|e| format!("undecodable payload: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the encoded batch", rest.len()));
    }
    Ok(batch)
}

/// What a segment's first bytes say.
#[derive(Debug)]
pub(crate) enum Header {
    /// A valid version-1 header.
    Valid,
    /// Fewer than 8 bytes, all a prefix of the header: a segment whose creation a crash cut short.
    Torn,
}

/// A damaged or unreadable record: where it starts and what is wrong.
#[derive(Debug)]
pub(crate) struct BadRecord {
    /// Offset of the record's first byte (the segment offset where valid data ends).
    pub offset: u64,
    /// `Corrupted` for bytes that break the format, `Io` when reading itself failed.
    pub error: ReadError,
}

impl BadRecord {
    /// The problem without the path (the report carries the path separately).
    pub fn detail(&self) -> String {
        match &self.error {
            ReadError::Corrupted { detail, .. } => detail.clone(),
            ReadError::Io { source, .. } => format!("read error: {source}"),
        }
    }
}

/// Reads one segment front to back. It trusts nothing: every length is checked against the bytes
/// left in the file before anything is allocated, and every payload against its CRC.
pub(crate) struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    pos: u64,
    len: u64,
    payload: Vec<u8>,
    inflater: Inflater,
}

impl SegmentReader {
    /// `len` is the file's length when replay started.
    pub fn new(path: &Path, file: File, len: u64) -> Self {
        SegmentReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            len,
            payload: Vec::new(),
            inflater: Inflater::default(),
        }
    }

    /// Reads and checks the segment header; must be called once, first.
    pub fn read_header(&mut self) -> Result<Header, BadRecord> {
        let mut header = [0u8; SEGMENT_HEADER.len()];
        let n = (self.len as usize).min(header.len());
        self.reader.read_exact(&mut header[..n]).map_err(|e| self.io(e))?;
        self.pos = n as u64;
        if n < header.len() {
            return if SEGMENT_HEADER.starts_with(&header[..n]) {
                Ok(Header::Torn)
            } else {
                Err(self.corrupted(0, format!("segment is {n} bytes, shorter than its header")))
            };
        }
        if header[..5] != SEGMENT_HEADER[..5] {
            return Err(self.corrupted(0, format!("bad magic {}", hex::encode(&header[..5]))));
        }
        if header[5..7] != [0, 0] {
            return Err(self.corrupted(0, format!("reserved header bytes {} are not zero", hex::encode(&header[5..7]))));
        }
        if header[7] != SEGMENT_VERSION {
            return Err(self.corrupted(0, format!("unsupported segment version {}", header[7])));
        }
        Ok(Header::Valid)
    }

    /// The next record as `(framed length, batch)`, `None` at a clean end of the segment.
    pub fn next_record(&mut self) -> Result<Option<(u64, WriteBatch)>, BadRecord> {
        let start = self.pos;
        let left = self.len - start;
        if left == 0 {
            return Ok(None);
        }
        if left < RECORD_HEADER_LEN as u64 {
            return Err(self.corrupted(start, format!("truncated record header: {left} of {RECORD_HEADER_LEN} bytes")));
        }
        let mut head = [0u8; RECORD_HEADER_LEN];
        self.reader.read_exact(&mut head).map_err(|e| self.io_at(start, e))?;
        let payload_len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
        let stored_crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let left = left - RECORD_HEADER_LEN as u64;
        if payload_len == 0 {
            // A zero length is what a zero-filled tail (a crash after the file grew but before
            // its data reached the disk) looks like; real payloads carry at least a version byte.
            return Err(self.corrupted(start, "zero-length record".to_string()));
        }
        if payload_len > left {
            return Err(self.corrupted(
                start,
                format!("record length {payload_len} runs past the end of the segment ({left} bytes left)"),
            ));
        }
        self.payload.clear();
        self.payload.resize(payload_len as usize, 0);
        let mut payload = std::mem::take(&mut self.payload);
        let read = self.reader.read_exact(&mut payload);
        self.payload = payload;
        read.map_err(|e| self.io_at(start, e))?;
        let crc = crc32c::crc32c(&self.payload);
        if crc != stored_crc {
            return Err(self.corrupted(start, format!("CRC mismatch: stored {stored_crc:08x}, computed {crc:08x}")));
        }
        let batch = decode_payload_with(&self.payload, &mut self.inflater).map_err(|d| self.corrupted(start, d))?;
        let framed = RECORD_HEADER_LEN as u64 + payload_len;
        self.pos = start + framed;
        Ok(Some((framed, batch)))
    }

    fn corrupted(&self, offset: u64, detail: String) -> BadRecord {
        BadRecord {
            offset,
            error: ReadError::Corrupted { path: self.path.clone(), detail: format!("at offset {offset}: {detail}") },
        }
    }

    fn io(&self, source: io::Error) -> BadRecord {
        self.io_at(self.pos, source)
    }

    fn io_at(&self, offset: u64, source: io::Error) -> BadRecord {
        BadRecord { offset, error: ReadError::Io { path: self.path.clone(), source } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ProfilesBatch, WriteBatch};

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(1), "0000000000000001.wal");
        assert_eq!(parse_segment_file_name("0000000000000042.wal"), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("000000000000004x.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000042.wal.tmp"), None);
    }

    /// The worked example of `docs/format/wal.md`; a change here is a format change.
    #[test]
    fn record_bytes_match_the_spec() {
        let rec = encode_record(&WriteBatch::Profiles(ProfilesBatch::default()), 64).unwrap();
        assert_eq!(hex::encode(&rec), "03000000ee59ec1b020300");
        assert_eq!(decode_payload(&rec[8..]).unwrap(), WriteBatch::Profiles(ProfilesBatch::default()));
        // The same batch as record version 1 still decodes.
        assert_eq!(decode_payload(&[1, 3, 0]).unwrap(), WriteBatch::Profiles(ProfilesBatch::default()));
    }

    /// Packed samples use record version 2 (spec: `docs/format/wal.md`, record version 2).
    #[test]
    fn packed_samples_record_bytes_match_the_spec() {
        let mut p = crate::model::PackedSamples::new();
        p.push(&[("__name__", "up")], &[crate::model::FloatSample { timestamp_ms: 1, value: 2.0 }]);
        let batch = WriteBatch::Samples(p);
        let rec = encode_record(&batch, 1 << 20).unwrap();
        assert_eq!(
            hex::encode(&rec[8..]),
            concat!(
                "02",
                "04",
                "1e",
                "01",
                "08",
                "5f5f6e616d655f5f",
                "02",
                "7570",
                "01",
                "0100000000000000",
                "0000000000000040",
                "00"
            )
        );
        assert_eq!(decode_payload(&rec[8..]).unwrap(), batch);
    }

    /// A batch of log lines as long as a real push.
    fn logs_batch(lines: usize) -> WriteBatch {
        let records = (0..lines)
            .map(|i| crate::model::LogRecord {
                timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
                body: format!("GET /api/orders/{i} 200 in {}ms", i % 97),
                ..Default::default()
            })
            .collect();
        WriteBatch::Logs(crate::model::LogsBatch {
            groups: vec![crate::model::LogGroup { records, ..Default::default() }],
        })
    }

    /// A payload past [`COMPRESS_MIN_BYTES`] is written as version 3 when zstd shrinks it, and
    /// reads back as the same batch; the limit applies to the uncompressed encoding.
    #[test]
    fn long_records_are_compressed() {
        let batch = logs_batch(200);
        let plain = postcard::to_allocvec(&batch).unwrap();
        let rec = encode_record(&batch, 1 << 20).unwrap();
        assert_eq!(rec[8], RECORD_VERSION);
        let payload = &rec[8..];
        assert_eq!(u32::from_le_bytes(rec[0..4].try_into().unwrap()) as usize, payload.len());
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), crc32c::crc32c(payload));
        assert!(payload.len() * 3 < plain.len(), "{} of {}", payload.len(), plain.len());
        assert_eq!(zstd::decode_all(&payload[1..]).unwrap(), plain);
        assert_eq!(decode_payload(payload).unwrap(), batch);

        // The limit is on the encoding zstd was given: one byte short of it fails.
        let err = encode_record(&batch, plain.len()).unwrap_err();
        assert!(matches!(err, WriteError::TooLarge { .. }), "{err}");
        assert!(encode_record(&batch, plain.len() + 1).is_ok());
    }

    /// What zstd cannot shrink stays version 2.
    #[test]
    fn incompressible_records_stay_plain() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let batch = WriteBatch::Logs(crate::model::LogsBatch {
            groups: vec![crate::model::LogGroup {
                records: vec![crate::model::LogRecord {
                    attributes: vec![crate::model::KeyValue {
                        key: "noise".into(),
                        value: crate::model::AnyValue::Bytes(noise),
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        });
        let rec = encode_record(&batch, 1 << 20).unwrap();
        assert_eq!(rec[8], RECORD_VERSION_PLAIN);
        assert_eq!(decode_payload(&rec[8..]).unwrap(), batch);
    }

    /// A version-3 payload must be one zstd frame with an exact content size holding one batch.
    #[test]
    fn bad_compressed_payloads_are_rejected() {
        let plain = postcard::to_allocvec(&logs_batch(50)).unwrap();
        let with = |frame: Vec<u8>| [vec![RECORD_VERSION], frame].concat();
        assert!(decode_payload(&with(b"not zstd".to_vec())).unwrap_err().contains("not a zstd frame"));
        // A streamed frame declares no content size.
        let mut streamed = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut streamed, &plain).unwrap();
        let streamed = streamed.finish().unwrap();
        assert!(decode_payload(&with(streamed)).unwrap_err().contains("without a content size"));
        // Cut short, or followed by a second frame.
        let frame = zstd::bulk::compress(&plain, 1).unwrap();
        assert!(decode_payload(&with(frame[..frame.len() - 4].to_vec())).is_err());
        assert!(decode_payload(&with([frame.clone(), frame.clone()].concat())).is_err());
        // A frame whose content is not one whole batch.
        let trailing = zstd::bulk::compress(&[plain.as_slice(), &[0]].concat(), 1).unwrap();
        assert!(decode_payload(&with(trailing)).unwrap_err().contains("trailing"));
        assert_eq!(decode_payload(&with(frame)).unwrap(), logs_batch(50));
    }

    #[test]
    fn payload_limit_is_enforced() {
        let err = encode_record(&WriteBatch::Profiles(ProfilesBatch::default()), 2).unwrap_err();
        assert!(matches!(err, WriteError::TooLarge { size: 3, max: 2 }), "{err}");
    }

    #[test]
    fn bad_payloads_are_rejected() {
        assert!(decode_payload(&[]).is_err());
        assert!(decode_payload(&[4, 3, 0]).unwrap_err().contains("version 4"));
        for v in [1, 2] {
            assert!(decode_payload(&[v, 9]).unwrap_err().contains("undecodable"));
            assert!(decode_payload(&[v, 3, 0, 0]).unwrap_err().contains("trailing"));
        }
        // Version 1 had no packed-samples variant (variant 4).
        assert!(decode_payload(&[1, 4, 0, 0]).unwrap_err().contains("undecodable"));
    }
}

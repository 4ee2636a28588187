//! Reader of version-1 partitions (one tantivy document per record), kept only to migrate them to
//! version 2 at open (`docs/format/logs.md`, "Version 1"). Nothing writes this format any more.

use serde::{Deserialize, Serialize};
use tantivy::schema::document::{DeserializeError, DocumentDeserialize, DocumentDeserializer};
use tantivy::{DocAddress, Index};

use crate::model::LogRecord;
use crate::wal::WalPos;

/// What a v1 document's stored `rec` field holds (postcard); the timestamp is in the `ts` fast
/// field.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredRec {
    pub stream: u32,
    pub resource: u32,
    pub scope: u32,
    pub record: LogRecord,
}

/// A v1 commit payload.
#[derive(Deserialize, Debug, Default, Clone, Copy)]
pub(super) struct Payload {
    pub wal_segment: u64,
    pub wal_offset: u64,
    pub max_seq: u64,
}

/// True when `dir` holds a v1 partition (a tantivy index at the top of the partition folder).
pub(super) fn is_v1(dir: &std::path::Path) -> bool {
    dir.join("meta.json").exists()
}

/// Everything a v1 partition holds: its committed WAL position, max seq, and `(seq, record)`
/// with the records' timestamps restored.
pub(super) struct Contents {
    pub committed: WalPos,
    pub max_seq: u64,
    pub records: Vec<(u64, StoredRec)>,
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("logs v1 partition: {e}"))
}

/// Reads a whole v1 partition.
pub(super) fn read(dir: &std::path::Path) -> std::io::Result<Contents> {
    let index = Index::open_in_dir(dir).map_err(err)?;
    let payload: Payload =
        index.load_metas().map_err(err)?.payload.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or_default();
    let reader = index.reader().map_err(err)?;
    let searcher = reader.searcher();
    let mut records = Vec::new();
    for (ord, seg) in searcher.segment_readers().iter().enumerate() {
        let ts = seg.fast_fields().i64("ts").map_err(err)?;
        let seq = seg.fast_fields().u64("seq").map_err(err)?;
        for d in seg.doc_ids_alive() {
            let RecBytes(bytes) = searcher.doc(DocAddress::new(ord as u32, d)).map_err(err)?;
            let mut rec: StoredRec = postcard::from_bytes(&bytes).map_err(err)?;
            rec.record.timestamp_ns = ts.first(d).unwrap_or(0);
            records.push((seq.first(d).unwrap_or(0), rec));
        }
    }
    Ok(Contents {
        committed: WalPos { segment: payload.wal_segment, offset: payload.wal_offset },
        max_seq: payload.max_seq,
        records,
    })
}

/// A stored document read as just its `rec` bytes (the only stored field).
struct RecBytes(Vec<u8>);

impl DocumentDeserialize for RecBytes {
    fn deserialize<'de, D: DocumentDeserializer<'de>>(mut d: D) -> Result<Self, DeserializeError> {
        let mut out = Vec::new();
        while let Some((_, v)) = d.next_field::<Vec<u8>>()? {
            out = v;
        }
        Ok(RecBytes(out))
    }
}

//! One time partition: a tantivy index of the records whose timestamps fall in
//! `[start_ns, start_ns + partition_ns)`, in `<dir>/part-<start seconds>`.
//!
//! Invariants: documents are only ever added (never deleted or updated); every commit carries the
//! payload `{"version":1,"wal_segment":S,"wal_offset":O,"max_seq":N}`: the position of the last
//! WAL batch with a record in this partition that the commit holds. A [`Partition`] value is an
//! immutable snapshot (its `searcher`); the engine swaps in a new one after each commit.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::collector::Count;
use tantivy::query::{AllQuery, BooleanQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::document::{DeserializeError, DocumentDeserialize, DocumentDeserializer};
use tantivy::schema::{BytesOptions, Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{
    DocAddress, Index, IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
};

use super::tokens;
use crate::model::{LogRecord, TraceId};
use crate::wal::WalPos;

/// Version of the partition layout (schema and stored record encoding).
pub(super) const FORMAT_VERSION: u32 = 1;

/// The schema's fields.
#[derive(Clone, Copy)]
pub(super) struct Fields {
    pub stream: Field,
    pub ts: Field,
    pub seq: Field,
    pub trace_id: Field,
    pub span_id: Field,
    pub body: Field,
    pub rec: Field,
}

pub(super) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stream = b.add_u64_field("stream", NumericOptions::default().set_indexed().set_fast());
    let ts = b.add_i64_field("ts", NumericOptions::default().set_fast());
    let seq = b.add_u64_field("seq", NumericOptions::default().set_fast());
    // No field norms anywhere: nothing is scored, and they would cost a byte per document each.
    let raw = || {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        )
    };
    let trace_id = b.add_text_field("trace_id", raw());
    let span_id = b.add_text_field("span_id", raw());
    let body = b.add_text_field(
        "body",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokens::TOKENIZER)
                .set_index_option(IndexRecordOption::Basic)
                .set_fieldnorms(false),
        ),
    );
    let rec = b.add_bytes_field("rec", BytesOptions::default().set_stored());
    (b.build(), Fields { stream, ts, seq, trace_id, span_id, body, rec })
}

/// What a document's stored `rec` field holds (postcard). `record.timestamp_ns` is stored as 0:
/// the `ts` fast field holds it (unique timestamps would not compress in the doc store).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredRec {
    pub stream: u32,
    pub resource: u32,
    pub scope: u32,
    pub record: LogRecord,
}

/// The commit payload.
#[derive(Serialize, Deserialize, Debug, Default, Clone, Copy)]
pub(super) struct Payload {
    pub version: u32,
    pub wal_segment: u64,
    pub wal_offset: u64,
    pub max_seq: u64,
}

/// A snapshot of one partition.
#[derive(Clone)]
pub(super) struct Partition {
    pub start_ns: i64,
    pub end_ns: i64,
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    pub searcher: Searcher,
    pub committed: WalPos,
    pub max_seq: u64,
    /// Stream ids with at least one record here.
    pub streams: Arc<BTreeSet<u32>>,
    pub min_ts: i64,
    pub max_ts: i64,
    pub bytes: u64,
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

impl Partition {
    /// Opens (or creates) the partition in `dir`.
    pub fn open(dir: &Path, start_ns: i64, partition_ns: i64, fields: Fields) -> std::io::Result<Partition> {
        let index = if dir.join("meta.json").exists() {
            Index::open_in_dir(dir).map_err(tantivy_err)?
        } else {
            std::fs::create_dir_all(dir)?;
            let settings = IndexSettings {
                docstore_compression: Compressor::Zstd(ZstdCompressor { compression_level: Some(3) }),
                docstore_blocksize: 128 * 1024,
                ..IndexSettings::default()
            };
            Index::builder().schema(schema().0).settings(settings).create_in_dir(dir).map_err(tantivy_err)?
        };
        index.tokenizers().register(tokens::TOKENIZER, tokens::analyzer());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(tantivy_err)?;
        let payload: Payload = index
            .load_metas()
            .map_err(tantivy_err)?
            .payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default();
        let mut p = Partition {
            start_ns,
            end_ns: start_ns.saturating_add(partition_ns),
            dir: dir.to_path_buf(),
            searcher: reader.searcher(),
            index,
            reader,
            committed: WalPos { segment: payload.wal_segment, offset: payload.wal_offset },
            max_seq: payload.max_seq,
            streams: Arc::default(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            bytes: 0,
            docs: 0,
        };
        p.refresh_stats(fields)?;
        Ok(p)
    }

    /// Recomputes the stream set, time bounds, size and count from the current searcher.
    fn refresh_stats(&mut self, fields: Fields) -> std::io::Result<()> {
        let mut streams = BTreeSet::new();
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        for seg in self.searcher.segment_readers() {
            let inv = seg.inverted_index(fields.stream).map_err(tantivy_err)?;
            let mut terms = inv.terms().stream().map_err(std::io::Error::other)?;
            while terms.advance() {
                if let Ok(b) = <[u8; 8]>::try_from(terms.key()) {
                    streams.insert(u64::from_be_bytes(b) as u32);
                }
            }
            let ts = seg.fast_fields().i64("ts").map_err(tantivy_err)?;
            if seg.num_docs() > 0 {
                min_ts = min_ts.min(ts.min_value());
                max_ts = max_ts.max(ts.max_value());
            }
        }
        self.streams = Arc::new(streams);
        self.min_ts = min_ts;
        self.max_ts = max_ts;
        self.docs = self.searcher.num_docs();
        self.bytes = dir_size(&self.dir);
        Ok(())
    }

    /// A writer for this partition (`budget` bytes of indexing memory, one thread).
    pub fn writer(&self, budget: usize) -> std::io::Result<IndexWriter> {
        self.index.writer_with_num_threads(1, budget.max(15_000_000)).map_err(tantivy_err)
    }

    /// Commits what `writer` holds with `payload` and returns the new snapshot.
    pub fn commit(&self, writer: &mut IndexWriter, payload: Payload, fields: Fields) -> std::io::Result<Partition> {
        let mut prepared = writer.prepare_commit().map_err(tantivy_err)?;
        prepared.set_payload(&serde_json::to_string(&payload).map_err(std::io::Error::other)?);
        prepared.commit().map_err(tantivy_err)?;
        self.reader.reload().map_err(tantivy_err)?;
        let mut p = self.clone();
        p.searcher = self.reader.searcher();
        p.committed = WalPos { segment: payload.wal_segment, offset: payload.wal_offset };
        p.max_seq = payload.max_seq;
        p.refresh_stats(fields)?;
        Ok(p)
    }

    /// Reloads the searcher after background merges (which do not change the contents).
    pub fn reloaded(&self, fields: Fields) -> std::io::Result<Partition> {
        self.reader.reload().map_err(tantivy_err)?;
        let mut p = self.clone();
        p.searcher = self.reader.searcher();
        p.refresh_stats(fields)?;
        Ok(p)
    }

    /// True when every record of this partition lies in `start..=end`.
    pub fn within(&self, start: i64, end: i64) -> bool {
        self.min_ts >= start && self.max_ts <= end
    }

    /// `(ts, seq, address)` of the documents matching the filters, unsorted.
    pub fn candidates(&self, fields: Fields, filter: &Filter<'_>) -> std::io::Result<Vec<(i64, u64, DocAddress)>> {
        let Some(query) = self.query(fields, filter) else { return Ok(Vec::new()) };
        let weight = query.weight(EnableScoring::disabled_from_searcher(&self.searcher)).map_err(tantivy_err)?;
        let mut out = Vec::new();
        for (ord, seg) in self.searcher.segment_readers().iter().enumerate() {
            let ts = seg.fast_fields().i64("ts").map_err(tantivy_err)?;
            let seq = seg.fast_fields().u64("seq").map_err(tantivy_err)?;
            weight
                .for_each_no_score(seg, &mut |docs| {
                    for &d in docs {
                        let t = ts.first(d).unwrap_or(0);
                        if t >= filter.start && t <= filter.end {
                            out.push((t, seq.first(d).unwrap_or(0), DocAddress::new(ord as u32, d)));
                        }
                    }
                })
                .map_err(tantivy_err)?;
        }
        Ok(out)
    }

    /// True when stream `stream` has a record in `start..=end` here.
    pub fn has_stream_in(&self, fields: Fields, stream: u32, start: i64, end: i64) -> std::io::Result<bool> {
        let q = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_u64(fields.stream, stream as u64), IndexRecordOption::Basic))
                    as Box<dyn Query>,
            ),
            (
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_i64(fields.ts, start)),
                    Bound::Included(Term::from_field_i64(fields.ts, end)),
                )),
            ),
        ]);
        Ok(self.searcher.search(&q, &Count).map_err(tantivy_err)? > 0)
    }

    fn query(&self, fields: Fields, f: &Filter<'_>) -> Option<Box<dyn Query>> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(streams) = f.streams {
            let terms: Vec<Term> = streams
                .iter()
                .filter(|s| self.streams.contains(s))
                .map(|&s| Term::from_field_u64(fields.stream, s as u64))
                .collect();
            if terms.is_empty() {
                return None;
            }
            if terms.len() < self.streams.len() {
                clauses.push((Occur::Must, Box::new(TermSetQuery::new(terms))));
            }
        }
        if !self.within(f.start, f.end) {
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_i64(fields.ts, f.start)),
                    Bound::Included(Term::from_field_i64(fields.ts, f.end)),
                )),
            ));
        }
        if let Some(t) = f.trace_id {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_text(fields.trace_id, &t.to_hex()), IndexRecordOption::Basic)),
            ));
        }
        for hint in f.line_contains {
            for tok in tokens::required_tokens(hint) {
                clauses.push((
                    Occur::Must,
                    Box::new(TermQuery::new(Term::from_field_text(fields.body, tok), IndexRecordOption::Basic)),
                ));
            }
        }
        Some(if clauses.is_empty() { Box::new(AllQuery) } else { Box::new(BooleanQuery::new(clauses)) })
    }

    /// The stored record of `addr`, whose timestamp is `ts` (from [`Partition::candidates`]).
    pub fn fetch(&self, fields: Fields, addr: DocAddress, ts: i64) -> std::io::Result<StoredRec> {
        let _ = fields;
        let RecBytes(bytes) = self.searcher.doc(addr).map_err(tantivy_err)?;
        let mut rec: StoredRec =
            postcard::from_bytes(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        rec.record.timestamp_ns = ts;
        Ok(rec)
    }
}

/// A stored document read as just its `rec` bytes (the only stored field), without building a
/// `TantivyDocument`.
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

/// What a scan wants from a partition.
pub(super) struct Filter<'a> {
    /// Wanted stream ids, sorted; `None` = all.
    pub streams: Option<&'a [u32]>,
    pub start: i64,
    pub end: i64,
    pub trace_id: Option<TraceId>,
    pub line_contains: &'a [String],
}

/// The document for one record.
pub(super) fn document(fields: Fields, seq: u64, mut rec: StoredRec) -> std::io::Result<TantivyDocument> {
    let mut doc = TantivyDocument::default();
    doc.add_u64(fields.stream, rec.stream as u64);
    doc.add_i64(fields.ts, rec.record.timestamp_ns);
    doc.add_u64(fields.seq, seq);
    if let Some(t) = rec.record.trace_id {
        doc.add_text(fields.trace_id, t.to_hex());
    }
    if let Some(s) = rec.record.span_id {
        doc.add_text(fields.span_id, s.to_hex());
    }
    doc.add_text(fields.body, &rec.record.body);
    // The timestamp lives in the fast field only; `fetch` puts it back.
    rec.record.timestamp_ns = 0;
    doc.add_bytes(fields.rec, &postcard::to_allocvec(&rec).map_err(std::io::Error::other)?);
    Ok(doc)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

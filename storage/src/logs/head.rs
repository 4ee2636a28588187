//! The head: records applied but not yet committed to a partition index, queryable at once.
//!
//! Invariant: records are held in arrival order (ascending `seq`), so a flush drains a prefix;
//! the per-stream indexes sort by `(timestamp, seq)`.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::FastMap;
use crate::model::{LogRecord, TraceId};
use crate::wal::WalPos;

/// A record with its references into the registry.
#[derive(Clone)]
pub(super) struct HeadRecord {
    pub seq: u64,
    pub pos: WalPos,
    pub stream: u32,
    pub resource: u32,
    pub scope: u32,
    pub record: LogRecord,
}

impl HeadRecord {
    /// Rough heap bytes, for the flush threshold.
    pub fn size(&self) -> usize {
        let r = &self.record;
        96 + r.body.len()
            + r.severity_text.len()
            + r.event_name.len()
            + r.attributes.iter().map(|kv| 32 + kv.key.len() + kv.value.heap_size()).sum::<usize>()
    }
}

#[derive(Default)]
pub(super) struct Head {
    /// Arrival order; `records[i].seq == first_seq + i`.
    records: VecDeque<Arc<HeadRecord>>,
    first_seq: u64,
    /// Per stream: `(timestamp_ns, seq)`, sorted.
    by_stream: FastMap<u32, Vec<(i64, u64)>>,
    by_trace: FastMap<TraceId, Vec<u64>>,
    bytes: usize,
}

impl Head {
    pub fn new(first_seq: u64) -> Head {
        Head { first_seq, ..Head::default() }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The seq the next record must carry.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.records.len() as u64
    }

    pub fn push(&mut self, r: HeadRecord) {
        debug_assert_eq!(r.seq, self.next_seq());
        let key = (r.record.timestamp_ns, r.seq);
        let index = self.by_stream.entry(r.stream).or_default();
        match index.last() {
            Some(last) if *last > key => {
                let at = index.partition_point(|k| *k < key);
                index.insert(at, key);
            }
            _ => index.push(key),
        }
        if let Some(t) = r.record.trace_id {
            self.by_trace.entry(t).or_default().push(r.seq);
        }
        self.bytes += r.size();
        self.records.push_back(Arc::new(r));
    }

    pub fn get(&self, seq: u64) -> Option<&HeadRecord> {
        seq.checked_sub(self.first_seq).and_then(|i| self.records.get(i as usize)).map(|r| &**r)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<HeadRecord>> {
        self.records.iter()
    }

    /// `(timestamp, seq)` of stream `stream` within `start..=end`, ascending.
    pub fn stream_range(&self, stream: u32, start: i64, end: i64) -> &[(i64, u64)] {
        let Some(index) = self.by_stream.get(&stream) else { return &[] };
        let lo = index.partition_point(|(t, _)| *t < start);
        let hi = index.partition_point(|(t, _)| *t <= end);
        &index[lo..hi.max(lo)]
    }

    pub fn by_trace(&self, t: &TraceId) -> &[u64] {
        self.by_trace.get(t).map_or(&[], |v| v.as_slice())
    }

    /// Drops every record with `seq < upto`.
    pub fn drain_before(&mut self, upto: u64) {
        if upto <= self.first_seq {
            return;
        }
        let n = ((upto - self.first_seq) as usize).min(self.records.len());
        for r in self.records.drain(..n) {
            self.bytes -= r.size();
        }
        self.first_seq += n as u64;
        let first = self.first_seq;
        self.by_stream.retain(|_, v| {
            v.retain(|(_, s)| *s >= first);
            !v.is_empty()
        });
        self.by_trace.retain(|_, v| {
            v.retain(|s| *s >= first);
            !v.is_empty()
        });
    }

    /// Drops records older than `cutoff_ns` (retention of a memory-only store). Seqs of the
    /// survivors are kept, so the head is rebuilt.
    pub fn retain_newer(&mut self, cutoff_ns: i64) {
        if !self.records.iter().any(|r| r.record.timestamp_ns < cutoff_ns) {
            return;
        }
        let old = std::mem::take(&mut self.records);
        let first = self.first_seq;
        let mut rebuilt = Head::new(first);
        // Seqs must stay dense: survivors are renumbered from the same first seq.
        for r in old.into_iter().filter(|r| r.record.timestamp_ns >= cutoff_ns) {
            let mut r = Arc::unwrap_or_clone(r);
            r.seq = rebuilt.next_seq();
            rebuilt.push(r);
        }
        *self = rebuilt;
    }
}

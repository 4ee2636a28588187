//! The logs head: records in arrival order, a per-stream time index and a trace_id index.
//!
//! Invariant: a record's id is its arrival position, which is its WAL order; every index sorts
//! by `(timestamp, id)`, so equal timestamps keep arrival order.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::FastMap;
use crate::chunked::ChunkedVec;

use crate::intern::Interner;
use crate::model::{Labels, LogRecord, LogsBatch, Resource, Scope, TraceId};
use crate::read::{StoredLog, matches};

/// In-memory logs store.
#[derive(Default)]
pub(crate) struct LogsHead {
    /// Readers share the lock; a writer (under `Storage`, only the WAL leader) holds it per batch.
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every record; the index is the record id.
    records: ChunkedVec<Entry>,
    stream_ids: FastMap<Arc<Labels>, usize>,
    streams: Vec<Stream>,
    /// Record ids per trace, ascending.
    by_trace: FastMap<TraceId, Vec<usize>>,
    resources: Interner<Resource>,
    scopes: Interner<Scope>,
}

struct Entry {
    stream: usize,
    resource: Arc<Resource>,
    scope: Arc<Scope>,
    record: LogRecord,
}

struct Stream {
    labels: Arc<Labels>,
    /// `(timestamp_ns, record id)`, sorted.
    index: Vec<(i64, usize)>,
}

impl LogsHead {
    pub fn open(dir: Option<&std::path::Path>, opts: &LogsOptions) -> Result<Self, crate::error::OpenError> {
        let _ = (dir, opts);
        Ok(Self::default())
    }

    /// This head lives in memory only: the WAL is its durability.
    pub fn persist(&self) -> std::io::Result<bool> {
        Ok(false)
    }

    pub fn maintain(&self, now_ms: i64) -> std::io::Result<()> {
        let _ = now_ms;
        Ok(())
    }

    pub fn apply(&self, _pos: crate::wal::WalPos, batch: LogsBatch) {
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        for group in batch.groups {
            if group.records.is_empty() {
                continue;
            }
            let resource = inner.resources.intern(group.resource);
            let scope = inner.scopes.intern(group.scope);
            let stream = inner.stream_id(group.stream);
            for record in group.records {
                let id = inner.records.len();
                let key = (record.timestamp_ns, id);
                let index = &mut inner.streams[stream].index;
                match index.last() {
                    Some(last) if *last > key => {
                        let at = index.partition_point(|k| *k < key);
                        index.insert(at, key);
                    }
                    _ => index.push(key),
                }
                if let Some(trace_id) = record.trace_id {
                    inner.by_trace.entry(trace_id).or_default().push(id);
                }
                inner.records.push(Entry {
                    stream,
                    resource: Arc::clone(&resource),
                    scope: Arc::clone(&scope),
                    record,
                });
            }
        }
    }

    pub fn items(&self) -> u64 {
        self.inner.read().records.len() as u64
    }

    pub fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog> {
        let inner = self.inner.read();
        let mut keys: Vec<(i64, usize)> = Vec::new();
        for stream in inner.streams.iter().filter(|s| matches(&s.labels, stream_matchers)) {
            let lo = stream.index.partition_point(|(t, _)| *t < start_ns);
            let hi = stream.index.partition_point(|(t, _)| *t <= end_ns);
            keys.extend_from_slice(&stream.index[lo..hi.max(lo)]);
        }
        keys.sort_unstable();
        keys.into_iter().map(|(_, id)| inner.stored(id)).collect()
    }

    pub fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog> {
        let inner = self.inner.read();
        let Some(ids) = inner.by_trace.get(&trace_id) else {
            return Vec::new();
        };
        let mut keys: Vec<(i64, usize)> = ids.iter().map(|&id| (inner.records[id].record.timestamp_ns, id)).collect();
        keys.sort_unstable();
        keys.into_iter().map(|(_, id)| inner.stored(id)).collect()
    }
}

impl Inner {
    fn stream_id(&mut self, labels: Labels) -> usize {
        if let Some(&id) = self.stream_ids.get(&labels) {
            return id;
        }
        let id = self.streams.len();
        let labels = Arc::new(labels);
        self.stream_ids.insert(Arc::clone(&labels), id);
        self.streams.push(Stream { labels, index: Vec::new() });
        id
    }

    fn stored(&self, id: usize) -> StoredLog {
        let e = &self.records[id];
        StoredLog {
            resource: Arc::clone(&e.resource),
            scope: Arc::clone(&e.scope),
            stream: Arc::clone(&self.streams[e.stream].labels),
            record: e.record.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LogGroup;

    fn rec(t: i64, body: &str) -> LogRecord {
        LogRecord { timestamp_ns: t, body: body.to_string(), ..LogRecord::default() }
    }

    #[test]
    fn timestamp_order_with_ties_in_arrival_order() {
        let head = LogsHead::default();
        let group = |svc: &str, records| LogGroup {
            stream: Labels::from_pairs([("service_name", svc)]),
            records,
            ..LogGroup::default()
        };
        head.apply(
            crate::wal::WalPos::ZERO,
            LogsBatch { groups: vec![group("a", vec![rec(20, "a1"), rec(10, "a2")])] },
        );
        head.apply(
            crate::wal::WalPos::ZERO,
            LogsBatch { groups: vec![group("b", vec![rec(20, "b1")]), group("a", vec![rec(20, "a3")])] },
        );
        let bodies =
            |m: &[(String, String)], s, e| head.logs(m, s, e).into_iter().map(|l| l.record.body).collect::<Vec<_>>();
        assert_eq!(bodies(&[], 0, 100), vec!["a2", "a1", "b1", "a3"]);
        assert_eq!(bodies(&[("service_name".into(), "a".into())], 0, 100), vec!["a2", "a1", "a3"]);
        assert_eq!(bodies(&[], 11, 20), vec!["a1", "b1", "a3"]);
        assert_eq!(head.items(), 4);
    }
}

/// Options of this engine (none yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogsOptions {}

impl crate::read::LogsReader for LogsHead {
    fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog> {
        LogsHead::logs(self, stream_matchers, start_ns, end_ns)
    }

    fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog> {
        LogsHead::logs_by_trace(self, trace_id)
    }
}

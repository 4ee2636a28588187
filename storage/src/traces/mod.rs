//! The traces head: spans in arrival order and a trace_id index.
//!
//! Invariant: a span's id is its arrival position, which is its WAL order; the per-trace lists
//! are ascending, so a trace reads back in arrival order however many writes it spanned.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::FastMap;
use crate::chunked::ChunkedVec;

use crate::intern::Interner;
use crate::model::{Resource, Scope, SpansBatch, TraceId};
use crate::read::StoredSpan;

/// In-memory traces store.
#[derive(Default)]
pub(crate) struct TracesHead {
    /// Readers share the lock; a writer (under `Storage`, only the WAL leader) holds it per batch.
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every span; the index is the span id.
    spans: ChunkedVec<StoredSpan>,
    by_trace: FastMap<TraceId, Vec<usize>>,
    resources: Interner<Resource>,
    scopes: Interner<Scope>,
}

impl TracesHead {
    pub fn open(dir: Option<&std::path::Path>, opts: &TracesOptions) -> Result<Self, crate::error::OpenError> {
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

    pub fn apply(&self, _pos: crate::wal::WalPos, batch: SpansBatch) {
        let mut inner = self.inner.write();
        let inner = &mut *inner;
        for group in batch.groups {
            if group.spans.is_empty() {
                continue;
            }
            let resource = inner.resources.intern(group.resource);
            let scope = inner.scopes.intern(group.scope);
            for span in group.spans {
                inner.by_trace.entry(span.trace_id).or_default().push(inner.spans.len());
                inner.spans.push(StoredSpan { resource: Arc::clone(&resource), scope: Arc::clone(&scope), span });
            }
        }
    }

    pub fn span_count(&self) -> u64 {
        self.inner.read().spans.len() as u64
    }

    pub fn trace(&self, trace_id: TraceId) -> Vec<StoredSpan> {
        let inner = self.inner.read();
        match inner.by_trace.get(&trace_id) {
            Some(ids) => ids.iter().map(|&id| inner.spans[id].clone()).collect(),
            None => Vec::new(),
        }
    }

    pub fn trace_ids(&self) -> Vec<TraceId> {
        let mut ids: Vec<TraceId> = self.inner.read().by_trace.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

/// Options of this engine (none yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TracesOptions {}

impl crate::read::TracesReader for TracesHead {
    fn trace(&self, trace_id: TraceId) -> Vec<StoredSpan> {
        TracesHead::trace(self, trace_id)
    }

    fn trace_ids(&self) -> Vec<TraceId> {
        TracesHead::trace_ids(self)
    }

    fn span_count(&self) -> u64 {
        TracesHead::span_count(self)
    }
}

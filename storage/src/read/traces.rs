//! Read access to traces. Implemented by the traces engine (`crate::traces`).

use std::sync::Arc;

use crate::model::{Resource, Scope, Span, TraceId};

/// A stored span with the context it was written with.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSpan {
    /// The producing resource.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
    /// The span.
    pub span: Span,
}

/// Read access to traces.
pub trait TracesReader: Send + Sync {
    /// Every span of the trace, whichever writes they arrived in, in arrival (WAL) order. A span
    /// written twice is returned twice: the store does not deduplicate.
    fn trace(&self, trace_id: TraceId) -> Vec<StoredSpan>;

    /// Ids of every stored trace, sorted.
    fn trace_ids(&self) -> Vec<TraceId>;

    /// Number of stored spans.
    fn span_count(&self) -> u64;
}


//! Read access to logs. Implemented by the logs engine (`crate::logs`).

use std::sync::Arc;

use crate::model::{Labels, LogRecord, Resource, Scope, TraceId};

/// A stored log record with the context it was written with.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredLog {
    /// The producing resource.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
    /// The stream labels.
    pub stream: Arc<Labels>,
    /// The record.
    pub record: LogRecord,
}

/// Read access to logs.
pub trait LogsReader: Send + Sync {
    /// Records of the streams matching every matcher with `timestamp_ns` in `start_ns..=end_ns`,
    /// in timestamp order; records with equal timestamps keep their arrival (WAL) order.
    fn logs(&self, stream_matchers: &[(String, String)], start_ns: i64, end_ns: i64) -> Vec<StoredLog>;

    /// Every record carrying `trace_id`, in the same order as [`LogsReader::logs`].
    fn logs_by_trace(&self, trace_id: TraceId) -> Vec<StoredLog>;
}


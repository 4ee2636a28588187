use serde::{Deserialize, Serialize};

use super::{KeyValue, Labels, Resource, Scope, SpanId, TraceId};

/// A batch of log records: what one OTLP logs or Loki push request becomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct LogsBatch {
    /// Records grouped by the resource, scope and stream they share.
    pub groups: Vec<LogGroup>,
}

impl LogsBatch {
    /// Number of log records.
    pub fn item_count(&self) -> usize {
        self.groups.iter().map(|g| g.records.len()).sum()
    }
}

/// Records sharing a resource, an instrumentation scope and a stream label set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct LogGroup {
    /// The producing resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: Scope,
    /// Stream labels (a small, low-cardinality set derived from the resource, e.g. `service_name`).
    pub stream: Labels,
    /// The records.
    pub records: Vec<LogRecord>,
}

/// One log record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct LogRecord {
    /// Event time, ns since the epoch (the observed time when the sender gave none).
    pub timestamp_ns: i64,
    /// When the pipeline first saw the record, ns since the epoch (0 if unknown).
    pub observed_timestamp_ns: i64,
    /// OTLP severity number (0 = unspecified, 1–24).
    pub severity_number: i32,
    /// Severity text as sent.
    pub severity_text: String,
    /// The log line: a string body verbatim, a structured body as JSON.
    pub body: String,
    /// Record attributes (Loki's structured metadata).
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender.
    pub dropped_attributes_count: u32,
    /// Trace context.
    pub trace_id: Option<TraceId>,
    /// Span context.
    pub span_id: Option<SpanId>,
    /// W3C trace flags.
    pub flags: u32,
    /// OTLP event name (empty for ordinary logs).
    pub event_name: String,
}

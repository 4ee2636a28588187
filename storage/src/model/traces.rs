use serde::{Deserialize, Serialize};

use super::{KeyValue, Resource, Scope, SpanId, TraceId};

/// A batch of spans: what one OTLP traces request becomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct SpansBatch {
    /// Spans grouped by resource and scope.
    pub groups: Vec<SpanGroup>,
}

impl SpansBatch {
    /// Number of spans.
    pub fn item_count(&self) -> usize {
        self.groups.iter().map(|g| g.spans.len()).sum()
    }
}

/// Spans sharing a resource and an instrumentation scope.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanGroup {
    /// The producing resource.
    pub resource: Resource,
    /// The instrumentation scope.
    pub scope: Scope,
    /// The spans.
    pub spans: Vec<Span>,
}

/// A span with every OTLP field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Span {
    /// Trace id.
    pub trace_id: TraceId,
    /// Span id.
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// W3C trace state.
    pub trace_state: String,
    /// W3C trace flags (plus OTLP's has-remote-parent bits).
    pub flags: u32,
    /// Operation name.
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, ns since the epoch.
    pub start_time_ns: i64,
    /// End, ns since the epoch.
    pub end_time_ns: i64,
    /// Span attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender.
    pub dropped_attributes_count: u32,
    /// Events.
    pub events: Vec<SpanEvent>,
    /// Events dropped by the sender.
    pub dropped_events_count: u32,
    /// Links.
    pub links: Vec<SpanLink>,
    /// Links dropped by the sender.
    pub dropped_links_count: u32,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message (only meaningful with `StatusCode::Error`).
    pub status_message: String,
}

/// A span event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanEvent {
    /// ns since the epoch.
    pub time_ns: i64,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender.
    pub dropped_attributes_count: u32,
}

/// A link to another span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct SpanLink {
    /// Linked trace.
    pub trace_id: TraceId,
    /// Linked span.
    pub span_id: SpanId,
    /// W3C trace state of the link.
    pub trace_state: String,
    /// Link attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender.
    pub dropped_attributes_count: u32,
    /// W3C trace flags.
    pub flags: u32,
}

/// OTLP span kind (numeric values match OTLP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum SpanKind {
    /// 0
    #[default]
    Unspecified,
    /// 1
    Internal,
    /// 2
    Server,
    /// 3
    Client,
    /// 4
    Producer,
    /// 5
    Consumer,
}

impl SpanKind {
    /// From OTLP's number; unknown numbers map to `Unspecified`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// OTLP's number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// OTLP status code (numeric values match OTLP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum StatusCode {
    /// 0
    #[default]
    Unset,
    /// 1
    Ok,
    /// 2
    Error,
}

impl StatusCode {
    /// From OTLP's number; unknown numbers map to `Unset`.
    pub fn from_i32(v: i32) -> Self {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }

    /// OTLP's number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

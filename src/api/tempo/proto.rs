//! Stored spans → OTLP protobuf messages, and Tempo's wrappers around them.
//!
//! Tempo's `tempopb.Trace` is wire-identical to OTLP `TracesData` (field 1: repeated
//! `ResourceSpans`), so the OTLP types from `opentelemetry-proto` serve for the spans and only the
//! two Tempo messages are declared here, with Tempo's field numbers.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1 as pc;
use opentelemetry_proto::tonic::resource::v1 as pr;
use opentelemetry_proto::tonic::trace::v1 as pt;
use storage::StoredSpan;
use storage::model::{AnyValue, KeyValue, Resource, Scope, Span};

/// `tempopb.Trace`: the `/api/traces/{id}` protobuf body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Trace {
    /// The spans grouped by resource and scope (`resourceSpans`, formerly `batches`).
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<pt::ResourceSpans>,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceByIdMetrics {
    /// Bytes read to answer.
    #[prost(uint64, tag = "1")]
    pub inspected_bytes: u64,
}

/// `tempopb.TraceByIDResponse`: the `/api/v2/traces/{id}` protobuf body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceByIdResponse {
    /// The trace.
    #[prost(message, optional, tag = "1")]
    pub trace: Option<Trace>,
    /// Query metrics.
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
    /// `PartialStatus`: 0 = COMPLETE, 1 = PARTIAL.
    #[prost(int32, tag = "3")]
    pub status: i32,
    /// Why the trace is partial, if it is.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// An attribute value in OTLP form.
pub fn any_value(v: &AnyValue) -> pc::AnyValue {
    use pc::any_value::Value as V;
    let value = match v {
        AnyValue::Empty => None,
        AnyValue::String(s) => Some(V::StringValue(s.clone())),
        AnyValue::Bool(b) => Some(V::BoolValue(*b)),
        AnyValue::Int(i) => Some(V::IntValue(*i)),
        AnyValue::Double(d) => Some(V::DoubleValue(*d)),
        AnyValue::Bytes(b) => Some(V::BytesValue(b.clone())),
        AnyValue::Array(items) => Some(V::ArrayValue(pc::ArrayValue { values: items.iter().map(any_value).collect() })),
        AnyValue::KvList(kvs) => Some(V::KvlistValue(pc::KeyValueList { values: key_values(kvs) })),
    };
    pc::AnyValue { value }
}

/// Attributes in OTLP form.
pub fn key_values(kvs: &[KeyValue]) -> Vec<pc::KeyValue> {
    kvs.iter()
        .map(|kv| pc::KeyValue { key: kv.key.clone(), value: Some(any_value(&kv.value)), ..Default::default() })
        .collect()
}

fn resource(r: &Resource) -> pr::Resource {
    pr::Resource {
        attributes: key_values(&r.attributes),
        dropped_attributes_count: r.dropped_attributes_count,
        ..Default::default()
    }
}

fn scope(s: &Scope) -> pc::InstrumentationScope {
    pc::InstrumentationScope {
        name: s.name.clone(),
        version: s.version.clone(),
        attributes: key_values(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
    }
}

/// A span in OTLP form.
pub fn span(s: &Span) -> pt::Span {
    pt::Span {
        trace_id: s.trace_id.0.to_vec(),
        span_id: s.span_id.0.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.0.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.name.clone(),
        kind: s.kind.as_i32(),
        start_time_unix_nano: u64::try_from(s.start_time_ns).unwrap_or(0),
        end_time_unix_nano: u64::try_from(s.end_time_ns).unwrap_or(0),
        attributes: key_values(&s.attributes),
        dropped_attributes_count: s.dropped_attributes_count,
        events: s
            .events
            .iter()
            .map(|e| pt::span::Event {
                time_unix_nano: u64::try_from(e.time_ns).unwrap_or(0),
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: s.dropped_events_count,
        links: s
            .links
            .iter()
            .map(|l| pt::span::Link {
                trace_id: l.trace_id.0.to_vec(),
                span_id: l.span_id.0.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: key_values(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: s.dropped_links_count,
        status: Some(pt::Status { message: s.status_message.clone(), code: s.status_code.as_i32() }),
    }
}

/// Groups spans by resource, then scope, in order of first appearance (spans keep their order).
pub fn resource_spans(spans: &[StoredSpan]) -> Vec<pt::ResourceSpans> {
    type ScopeGroup = (Arc<Scope>, Vec<pt::Span>);
    let mut out: Vec<(Arc<Resource>, Vec<ScopeGroup>)> = Vec::new();
    for s in spans {
        let ri = match out.iter().position(|(r, _)| Arc::ptr_eq(r, &s.resource) || **r == *s.resource) {
            Some(i) => i,
            None => {
                out.push((Arc::clone(&s.resource), Vec::new()));
                out.len() - 1
            }
        };
        let scopes = &mut out[ri].1;
        let si = match scopes.iter().position(|(sc, _)| Arc::ptr_eq(sc, &s.scope) || **sc == *s.scope) {
            Some(i) => i,
            None => {
                scopes.push((Arc::clone(&s.scope), Vec::new()));
                scopes.len() - 1
            }
        };
        scopes[si].1.push(span(&s.span));
    }
    out.into_iter()
        .map(|(r, scopes)| pt::ResourceSpans {
            resource: Some(resource(&r)),
            schema_url: r.schema_url.clone(),
            scope_spans: scopes
                .into_iter()
                .map(|(sc, spans)| pt::ScopeSpans { scope: Some(scope(&sc)), schema_url: sc.schema_url.clone(), spans })
                .collect(),
        })
        .collect()
}

//! OTLP traces → `SpansBatch`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span as PSpan, span};
use storage::model::{Span, SpanEvent, SpanGroup, SpanId, SpanKind, SpanLink, SpansBatch, StatusCode, TraceId};

use super::attrs::{attributes, resource, scope};
use super::{Limits, Mapped, Reject, RejectReason, Tally, check_time, ns_i64};

/// Maps an OTLP traces request. Spans are grouped per resource × scope as sent; groups left empty
/// by rejections are dropped.
///
/// Validation, per span: trace_id 16 and span_id 8 non-zero bytes; parent_span_id empty or 8
/// bytes (all zero counts as absent); every link's ids valid; start time present and inside the
/// `[now - max_age, now + max_future]` window; end not before start; attribute limits on the
/// span, its events and its links. A resource or scope breaking the attribute limits rejects all
/// of its spans.
pub fn traces(req: ExportTraceServiceRequest, limits: &Limits, now_ns: i64) -> Mapped<SpansBatch> {
    let mut tally = Tally::new(("span", "spans"));
    let mut batch = SpansBatch::default();
    for rs in req.resource_spans {
        let mut res = match resource(rs.resource, rs.schema_url, limits) {
            Ok(r) => r,
            Err(e) => {
                let n = rs.scope_spans.iter().map(|s| s.spans.len() as u64).sum();
                tally.reject(e, n);
                continue;
            }
        };
        let last = rs.scope_spans.len().saturating_sub(1);
        for (i, ss) in rs.scope_spans.into_iter().enumerate() {
            let sc = match scope(ss.scope, ss.schema_url, limits) {
                Ok(s) => s,
                Err(e) => {
                    tally.reject(e, ss.spans.len() as u64);
                    continue;
                }
            };
            let mut spans = Vec::with_capacity(ss.spans.len());
            for s in ss.spans {
                match map_span(s, limits, now_ns) {
                    Ok(s) => spans.push(s),
                    Err(e) => tally.reject(e, 1),
                }
            }
            if spans.is_empty() {
                continue;
            }
            tally.accept(spans.len() as u64);
            // The resource is cloned once per extra scope group, never per span.
            let resource = if i == last { std::mem::take(&mut res) } else { res.clone() };
            batch.groups.push(SpanGroup { resource, scope: sc, spans });
        }
    }
    tally.finish(batch, limits)
}

fn map_span(s: PSpan, limits: &Limits, now_ns: i64) -> Result<Span, Reject> {
    let trace_id = TraceId::from_slice(&s.trace_id).ok_or(Reject::new(RejectReason::InvalidTraceId))?;
    let span_id = SpanId::from_slice(&s.span_id).ok_or(Reject::new(RejectReason::InvalidSpanId))?;
    let parent_span_id = match s.parent_span_id.len() {
        0 => None,
        // All zero is how some senders spell "no parent".
        8 => SpanId::from_slice(&s.parent_span_id),
        _ => return Err(Reject::new(RejectReason::InvalidParentSpanId)),
    };
    let start_time_ns = ns_i64(s.start_time_unix_nano);
    let end_time_ns = ns_i64(s.end_time_unix_nano);
    if s.start_time_unix_nano == 0 {
        return Err(Reject::with(RejectReason::TimestampTooOld, "start time missing".into()));
    }
    check_time(start_time_ns, limits, now_ns).map_err(Reject::new)?;
    if end_time_ns < start_time_ns {
        return Err(Reject::new(RejectReason::EndBeforeStart));
    }
    let attributes = attributes(s.attributes, limits, "key")?;
    let events = s.events.into_iter().map(|e| map_event(e, limits)).collect::<Result<Vec<_>, _>>()?;
    let links = s.links.into_iter().map(|l| map_link(l, limits)).collect::<Result<Vec<_>, _>>()?;
    let status = s.status.unwrap_or_default();
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: s.trace_state,
        flags: s.flags,
        name: s.name,
        kind: SpanKind::from_i32(s.kind),
        start_time_ns,
        end_time_ns,
        attributes,
        dropped_attributes_count: s.dropped_attributes_count,
        events,
        dropped_events_count: s.dropped_events_count,
        links,
        dropped_links_count: s.dropped_links_count,
        status_code: StatusCode::from_i32(status.code),
        status_message: status.message,
    })
}

fn map_event(e: span::Event, limits: &Limits) -> Result<SpanEvent, Reject> {
    Ok(SpanEvent {
        time_ns: ns_i64(e.time_unix_nano),
        attributes: attributes(e.attributes, limits, "event key")?,
        name: e.name,
        dropped_attributes_count: e.dropped_attributes_count,
    })
}

fn map_link(l: span::Link, limits: &Limits) -> Result<SpanLink, Reject> {
    let ids = TraceId::from_slice(&l.trace_id).zip(SpanId::from_slice(&l.span_id));
    let Some((trace_id, span_id)) = ids else {
        return Err(Reject::new(RejectReason::InvalidLinkId));
    };
    Ok(SpanLink {
        trace_id,
        span_id,
        trace_state: l.trace_state,
        attributes: attributes(l.attributes, limits, "link key")?,
        dropped_attributes_count: l.dropped_attributes_count,
        flags: l.flags,
    })
}

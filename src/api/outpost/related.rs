//! `GET /outpost/api/v1/traces/{id}/related`: everything that carries one trace id, across the
//! four signals (the trace_id cross-index of `design.md` §3).
//!
//! The id is hex, at most 32 digits, left-padded like Tempo's. Answer (200, JSON):
//! ```json
//! {
//!   "traceId": "<32 hex>",
//!   "spans": [{"spanId": "..", "parentSpanId": "..", "name": "..", "kind": "SPAN_KIND_SERVER",
//!              "service": "..", "startTimeUnixNano": "..", "endTimeUnixNano": "..",
//!              "durationNanos": "..", "status": {"code": "STATUS_CODE_ERROR", "message": ".."},
//!              "attributes": {"k": "v"}}],
//!   "logs": [{"timeUnixNano": "..", "service": "..", "stream": {"label": "v"}, "severityText": "..",
//!             "severityNumber": 9, "body": "..", "spanId": "..", "attributes": {"k": "v"}}],
//!   "exemplars": [{"series": {"__name__": "..", ..}, "labels": {"trace_id": "..", ..},
//!                  "value": 0.25, "timestampMs": 1700000000000}],
//!   "profiles": [{"profileType": "process_cpu:cpu:nanoseconds:cpu:nanoseconds", "labels": {..},
//!                 "timeUnixNano": "..", "spanIds": [".."], "samples": 12, "value": 12000000}],
//!   "counts": {"spans": 1, "logs": 1, "exemplars": 1, "profiles": 1}
//! }
//! ```
//! Timestamps in ns are strings (they exceed JSON's safe integers). Attribute values are shown as
//! label strings (composites as JSON). Profiles are those whose labels carry the `trace_id`, or
//! with samples whose span id (or `span_id` / `trace_id` sample label) belongs to the trace,
//! looked up in the trace's time range widened by a minute each side (the profile store is read
//! by time). 404 when nothing at all refers to the trace; 400 for a malformed id.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use storage::Reader;
use storage::model::{KeyValue, Labels, SpanKind, StatusCode as SpanStatus};

use crate::api::tempo::parse_trace_id;
use crate::http::AppState;

const PROFILE_MARGIN_NS: i64 = 60_000_000_000;

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(json!({ "status": "error", "error": msg }))).into_response()
}

fn attrs(kvs: &[KeyValue]) -> Value {
    Value::Object(kvs.iter().map(|kv| (kv.key.clone(), Value::String(kv.value.to_label_string()))).collect())
}

fn labels(l: &Labels) -> Value {
    Value::Object(l.iter().map(|l| (l.name.clone(), Value::String(l.value.clone()))).collect::<Map<_, _>>())
}

fn kind(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "SPAN_KIND_UNSPECIFIED",
        SpanKind::Internal => "SPAN_KIND_INTERNAL",
        SpanKind::Server => "SPAN_KIND_SERVER",
        SpanKind::Client => "SPAN_KIND_CLIENT",
        SpanKind::Producer => "SPAN_KIND_PRODUCER",
        SpanKind::Consumer => "SPAN_KIND_CONSUMER",
    }
}

fn status(s: SpanStatus) -> &'static str {
    match s {
        SpanStatus::Unset => "STATUS_CODE_UNSET",
        SpanStatus::Ok => "STATUS_CODE_OK",
        SpanStatus::Error => "STATUS_CODE_ERROR",
    }
}

/// The handler.
pub(super) async fn related(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(trace_id) = parse_trace_id(&id) else {
        return error(StatusCode::BAD_REQUEST, format!("invalid trace id: {id:?}"));
    };
    let Some(store) = state.pipeline.storage().cloned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "storage is not open yet (replaying the WAL)".into());
    };
    let hex = trace_id.to_hex();
    let done = tokio::task::spawn_blocking(move || {
        let spans = store.trace_store().trace(trace_id);
        let logs = store.log_store().logs_by_trace(trace_id);
        let exemplars = store.metric_store().exemplars_by_trace(&hex);
        let span_ids: BTreeSet<String> = spans.iter().map(|s| s.span.span_id.to_hex()).collect();
        let (lo, hi) = spans.iter().fold((i64::MAX, i64::MIN), |(lo, hi), s| {
            (lo.min(s.span.start_time_ns), hi.max(s.span.end_time_ns))
        });
        let (lo, hi) = if spans.is_empty() {
            // No spans: look wherever logs and exemplars place the trace.
            let times = logs.iter().map(|l| l.record.timestamp_ns).chain(exemplars.iter().map(|e| e.1.timestamp_ms * 1_000_000));
            times.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)))
        } else {
            (lo, hi)
        };
        let profiles = if lo <= hi {
            store.profile_store().profiles(lo.saturating_sub(PROFILE_MARGIN_NS), hi.saturating_add(PROFILE_MARGIN_NS))
        } else {
            Vec::new()
        };
        let mut prof_out = Vec::new();
        for p in &profiles {
            let whole = p.labels.get("trace_id") == Some(hex.as_str());
            let mut ids = BTreeSet::new();
            let (mut samples, mut value) = (0u64, 0i64);
            for s in &p.samples {
                let sid = s.span_id.map(|i| i.to_hex()).or_else(|| {
                    s.labels.iter().find(|l| l.name == "span_id").map(|l| l.value.clone())
                });
                let by_trace = s.labels.iter().any(|l| l.name == "trace_id" && l.value == hex);
                let by_span = sid.as_ref().is_some_and(|id| span_ids.contains(id));
                if whole || by_trace || by_span {
                    samples += 1;
                    value = value.saturating_add(s.value);
                    if let Some(id) = sid {
                        ids.insert(id);
                    }
                }
            }
            if samples > 0 {
                prof_out.push(json!({
                    "profileType": p.profile_type.id(),
                    "labels": labels(&p.labels),
                    "timeUnixNano": p.time_ns.to_string(),
                    "spanIds": ids.into_iter().collect::<Vec<_>>(),
                    "samples": samples,
                    "value": value,
                }));
            }
        }
        let span_out: Vec<Value> = spans
            .iter()
            .map(|s| {
                let sp = &s.span;
                json!({
                    "spanId": sp.span_id.to_hex(),
                    "parentSpanId": sp.parent_span_id.map(|p| p.to_hex()).unwrap_or_default(),
                    "name": sp.name,
                    "kind": kind(sp.kind),
                    "service": s.resource.attr_str("service.name").unwrap_or(""),
                    "startTimeUnixNano": sp.start_time_ns.to_string(),
                    "endTimeUnixNano": sp.end_time_ns.to_string(),
                    "durationNanos": sp.end_time_ns.saturating_sub(sp.start_time_ns).to_string(),
                    "status": { "code": status(sp.status_code), "message": sp.status_message },
                    "attributes": attrs(&sp.attributes),
                })
            })
            .collect();
        let log_out: Vec<Value> = logs
            .iter()
            .map(|l| {
                let r = &l.record;
                json!({
                    "timeUnixNano": r.timestamp_ns.to_string(),
                    "service": l.resource.attr_str("service.name").unwrap_or(""),
                    "stream": labels(&l.stream),
                    "severityText": r.severity_text,
                    "severityNumber": r.severity_number,
                    "body": r.body,
                    "spanId": r.span_id.map(|s| s.to_hex()).unwrap_or_default(),
                    "attributes": attrs(&r.attributes),
                })
            })
            .collect();
        let ex_out: Vec<Value> = exemplars
            .iter()
            .map(|(series, e)| {
                json!({ "series": labels(series), "labels": labels(&e.labels), "value": e.value, "timestampMs": e.timestamp_ms })
            })
            .collect();
        let counts = json!({
            "spans": span_out.len(), "logs": log_out.len(), "exemplars": ex_out.len(), "profiles": prof_out.len(),
        });
        let empty = span_out.is_empty() && log_out.is_empty() && ex_out.is_empty() && prof_out.is_empty();
        (empty, json!({
            "traceId": hex,
            "spans": span_out,
            "logs": log_out,
            "exemplars": ex_out,
            "profiles": prof_out,
            "counts": counts,
        }))
    })
    .await;
    match done {
        Ok((true, _)) => error(StatusCode::NOT_FOUND, format!("nothing refers to trace {}", trace_id.to_hex())),
        Ok((false, body)) => Json(body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")),
    }
}

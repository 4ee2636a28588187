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
//! label strings (composites as JSON). Profiles are those whose labels carry the `trace_id` (all
//! their samples), or with samples whose span id belongs to the trace (one of its spans, or a
//! span seen with its `trace_id` sample label), found through the profile store's span index in
//! the trace's time range widened by a minute each side (all time when no span, log or exemplar
//! places the trace); one entry per profile, in time order. 404 when nothing at all refers to the trace; 400 for a malformed id.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use storage::Reader;
use storage::model::{KeyValue, Labels, SpanId, SpanKind, StatusCode as SpanStatus, TraceId};
use storage::read::{MatchOp, Matcher, ProfileSelect, ProfilesReader};

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

/// The profiles of a trace in `start_ns..=end_ns`, one entry per profile, from the profile
/// store's indexes (no profile is read whole): samples of the trace's spans or carrying its
/// `trace_id` sample label (the span index), and profiles whose series carry the `trace_id` label
/// (all their samples).
fn related_profiles(
    store: &dyn ProfilesReader,
    trace_id: TraceId,
    hex: &str,
    spans: &[SpanId],
    start_ns: i64,
    end_ns: i64,
) -> Vec<Value> {
    // (profile type, plain labels, time) → (span ids, samples, value); whole profiles first, so a
    // profile found both ways counts its samples once.
    type Key = (String, Labels, i64);
    let mut found: BTreeMap<Key, (BTreeSet<String>, u64, i64, bool)> = BTreeMap::new();
    let by_label = [Matcher::new("trace_id", MatchOp::Equal, hex).expect("an equality matcher")];
    let select = ProfileSelect { matchers: &by_label, start_ns, end_ns, span_ids: None, max_samples: u64::MAX };
    let totals = store.profile_totals(&select);
    for &(series, time_ns, total, samples) in &totals.points {
        let Some(s) = totals.series.get(series as usize) else { continue };
        found.insert((s.profile_type.id(), s.plain_labels(), time_ns), (BTreeSet::new(), samples, total, true));
    }
    for hit in store.span_samples(Some(trace_id), spans, start_ns, end_ns) {
        let key = (hit.series.profile_type.id(), hit.series.plain_labels(), hit.time_ns);
        let e = found.entry(key).or_default();
        e.0.insert(hit.span_id.to_hex());
        if !e.3 {
            e.1 += hit.samples;
            e.2 = e.2.saturating_add(hit.value);
        }
    }
    let mut out: Vec<(i64, Value)> = found
        .into_iter()
        .map(|((ty, labels_of, time_ns), (ids, samples, value, _))| {
            let entry = json!({
                "profileType": ty,
                "labels": labels(&labels_of),
                "timeUnixNano": time_ns.to_string(),
                "spanIds": ids.into_iter().collect::<Vec<_>>(),
                "samples": samples,
                "value": value,
            });
            (time_ns, entry)
        })
        .collect();
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, v)| v).collect()
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
        // Nothing else places the trace in time: the profile indexes are searched over all time.
        let (lo, hi) = if lo <= hi {
            (lo.saturating_sub(PROFILE_MARGIN_NS), hi.saturating_add(PROFILE_MARGIN_NS))
        } else {
            (i64::MIN, i64::MAX)
        };
        let span_list: Vec<SpanId> = spans.iter().map(|s| s.span.span_id).collect();
        let prof_out = related_profiles(store.profile_store(), trace_id, &hex, &span_list, lo, hi);
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

//! The Tempo HTTP API (what Grafana's Tempo datasource calls; `grafana-contracts.md` §3):
//! - `GET /api/echo` (Save & test) and `GET /api/status/buildinfo`;
//! - `GET /api/v2/traces/{id}` (`tempopb.TraceByIDResponse`) and `GET /api/traces/{id}` (bare
//!   `tempopb.Trace`): protobuf when the client accepts `application/protobuf`, OTLP JSON otherwise;
//!   404 on both paths for an unknown trace; short ids are left-padded to 32 hex digits;
//! - `GET /api/search`, `/api/v2/search` (TraceQL `q`, or the legacy `tags`/`minDuration`/
//!   `maxDuration`), with Tempo's protojson response shape;
//! - the tag browsers `GET /api/search/tags`, `/api/v2/search/tags` (by scope),
//!   `/api/search/tag/{name}/values`, `/api/v2/search/tag/{name}/values` (typed values);
//! - TraceQL metrics: `GET /api/metrics/query_range` and `/api/metrics/query`.
//!
//! Errors follow Tempo: plain-text bodies (`invalid TraceQL query: ...` with a 400), 404 for a
//! missing trace, 503 while the store is not open yet.

mod proto;
mod search;
mod tags;

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message;
use storage::model::TraceId;
use storage::{Reader, StoredSpan};

use crate::http::AppState;

pub use proto::{Trace, TraceByIdMetrics, TraceByIdResponse};

/// The Tempo version we answer as: the newest API whose features Grafana gates on that we serve.
pub const TEMPO_VERSION: &str = "2.7.0";

/// Default largest trace served, in protobuf bytes.
pub const DEFAULT_MAX_TRACE_BYTES: usize = 50 << 20;

/// Time allowed to a search or tag query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/echo", get(echo))
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search::search))
        .route("/api/v2/search", get(search::search))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{name}/values", get(tags::values_v1))
        .route("/api/v2/search/tag/{name}/values", get(tags::values_v2))
        .route("/api/metrics/query_range", get(search::metrics_query_range))
        .route("/api/metrics/query", get(search::metrics_query_instant))
}

/// A Tempo-style error: status and plain text.
#[derive(Debug)]
pub(crate) struct TempoError(pub StatusCode, pub String);

impl IntoResponse for TempoError {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

impl TempoError {
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        TempoError(StatusCode::BAD_REQUEST, msg.into())
    }
}

/// The store, or 503 while the WAL is replayed.
pub(crate) fn store(s: &AppState) -> Result<std::sync::Arc<storage::Storage>, TempoError> {
    s.pipeline.storage().cloned().ok_or_else(|| {
        TempoError(StatusCode::SERVICE_UNAVAILABLE, "storage is not open yet (replaying the WAL)".into())
    })
}

/// Runs `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TempoError> + Send + 'static,
) -> Result<T, TempoError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(TempoError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}"))))
}

/// Query-string parameters in order (repeated keys kept).
pub(crate) fn params(raw: Option<String>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or_default().as_bytes()).into_owned().collect()
}

pub(crate) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

/// A `start`/`end` parameter: unix seconds (Tempo's unit), as ns.
pub(crate) fn time_param(params: &[(String, String)], key: &str) -> Result<Option<i64>, TempoError> {
    match param(params, key) {
        None => Ok(None),
        Some(v) => {
            let secs: f64 =
                v.parse().map_err(|_| TempoError::bad(format!("invalid {key}: {v:?} is not unix seconds")))?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(TempoError::bad(format!("invalid {key}: {v:?}")));
            }
            Ok(Some((secs * 1e9).min(i64::MAX as f64) as i64))
        }
    }
}

/// Parses a trace id as Tempo does: hex, at most 32 digits, left-padded with zeros.
pub fn parse_trace_id(s: &str) -> Option<TraceId> {
    let s = s.trim();
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(&format!("{s:0>32}"))
}

async fn echo() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "echo")
}

async fn buildinfo() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "version": TEMPO_VERSION,
        "revision": format!("outpost-{}", env!("CARGO_PKG_VERSION")),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }))
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

/// The spans of one trace, optionally only if it overlaps `start..=end`.
async fn fetch_trace(
    state: &AppState,
    id: &str,
    raw: Option<String>,
) -> Result<(TraceId, Vec<StoredSpan>), TempoError> {
    let trace_id = parse_trace_id(id).ok_or_else(|| TempoError::bad(format!("invalid trace id: {id:?}")))?;
    let params = params(raw);
    let start = time_param(&params, "start")?;
    let end = time_param(&params, "end")?;
    let store = store(state)?;
    let spans = blocking(move || Ok(store.trace_store().trace(trace_id))).await?;
    let (lo, hi) = (start.unwrap_or(0), end.filter(|&e| e > 0).unwrap_or(i64::MAX));
    if spans.is_empty() || !spans.iter().any(|s| s.span.start_time_ns <= hi && s.span.end_time_ns >= lo) {
        return Err(TempoError(StatusCode::NOT_FOUND, format!("trace not found: {}", trace_id.to_hex())));
    }
    Ok((trace_id, spans))
}

/// The trace, cut to `max_bytes` of protobuf; the flag says whether it was cut.
fn build_trace(spans: &[StoredSpan], max_bytes: usize) -> (Trace, bool) {
    let trace = Trace { resource_spans: proto::resource_spans(spans) };
    if trace.encoded_len() <= max_bytes {
        return (trace, false);
    }
    // Keep the first spans (arrival order: usually the root and its early children) that fit.
    let mut kept = 0usize;
    let mut bytes = 0usize;
    for s in spans {
        bytes += proto::span(&s.span).encoded_len() + 16;
        if bytes > max_bytes.saturating_sub(64 << 10) {
            break;
        }
        kept += 1;
    }
    (Trace { resource_spans: proto::resource_spans(&spans[..kept]) }, true)
}

fn max_trace_bytes(state: &AppState) -> usize {
    state.limits.max_trace_bytes
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], body).into_response()
}

/// `GET /api/traces/{id}`: a bare `tempopb.Trace`. A trace over the size limit is refused (use
/// the v2 path for a partial trace).
async fn trace_v1(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    let (trace_id, spans) = fetch_trace(&state, &id, raw).await?;
    let max = max_trace_bytes(&state);
    let (trace, cut) = build_trace(&spans, max);
    if cut {
        return Err(TempoError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "trace {} exceeds the max size of {max} bytes (limits.max_trace_bytes); /api/v2/traces/{} returns it partially",
                trace_id.to_hex(),
                trace_id.to_hex()
            ),
        ));
    }
    if wants_protobuf(&headers) {
        return Ok(protobuf(trace.encode_to_vec()));
    }
    Ok(axum::Json(serde_json::json!({ "batches": trace.resource_spans })).into_response())
}

/// `GET /api/v2/traces/{id}`: `tempopb.TraceByIDResponse`; a trace over the size limit comes back
/// cut, with status PARTIAL and a message.
async fn trace_v2(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, TempoError> {
    let (trace_id, spans) = fetch_trace(&state, &id, raw).await?;
    let max = max_trace_bytes(&state);
    let (trace, cut) = build_trace(&spans, max);
    let message = if cut {
        format!(
            "trace {} exceeds the max size of {max} bytes (limits.max_trace_bytes); it is partial",
            trace_id.to_hex()
        )
    } else {
        String::new()
    };
    let inspected = trace.encoded_len() as u64;
    if wants_protobuf(&headers) {
        let resp = TraceByIdResponse {
            trace: Some(trace),
            metrics: Some(TraceByIdMetrics { inspected_bytes: inspected }),
            status: i32::from(cut),
            message,
        };
        return Ok(protobuf(resp.encode_to_vec()));
    }
    let mut body = serde_json::json!({
        "trace": { "resourceSpans": trace.resource_spans },
        "metrics": { "inspectedBytes": inspected.to_string() },
    });
    if cut {
        body["status"] = "PARTIAL".into();
        body["message"] = message.into();
    }
    Ok(axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_trace_ids_are_left_padded() {
        assert_eq!(parse_trace_id("abc").unwrap().to_hex(), format!("{:0>32}", "abc"));
        assert!(parse_trace_id("").is_none());
        assert!(parse_trace_id("xyz").is_none());
        assert!(parse_trace_id(&"1".repeat(33)).is_none());
        assert!(parse_trace_id(&"0".repeat(32)).is_none());
    }
}

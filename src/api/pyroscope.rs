//! Pyroscope ingest and the connect querier API (`grafana-contracts.md` §4):
//! - `POST /ingest`: the legacy ingest (`pprof` raw or multipart, `folded`, `lines`), text errors;
//! - `POST /push.v1.PusherService/Push`: connect unary, what Alloy and the SDKs send;
//! - `POST /querier.v1.QuerierService/<Method>`: connect unary for Grafana's datasource;
//! - `GET /pyroscope/render`: the legacy flamebearer JSON.
//!
//! Connect unary (connectrpc.com/docs/protocol): the body is one message, `application/proto`
//! or `application/json` (protojson: lowerCamelCase names, 64-bit integers as strings), optional
//! `Content-Encoding: gzip`; success is 200 with the same content type; errors are JSON
//! `{"code","message"}` with the status of the code. Errors are mapped here and only here.

pub mod proto;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use ingest::pprof::{IngestParams, PprofLimits};
use prost::Message;
use serde_json::{Value, json};
use storage::model::{ProfileType, Signal, SpanId, WriteBatch};
use storage::{Matcher, MergedStacks, ProfileSelect, Reader, Storage};

use crate::http::AppState;
use crate::pipeline::{ErrorClass, Outcome, PipelineError};
use crate::telemetry::Protocol;

/// Most samples one query may merge.
pub const MAX_QUERY_SAMPLES: u64 = 200_000_000;
/// Flame graph nodes when the request does not say (Pyroscope's default).
pub const DEFAULT_MAX_NODES: usize = 8192;

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ingest", post(ingest_handler))
        .route("/pyroscope/ingest", post(ingest_handler))
        .route("/push.v1.PusherService/Push", post(push_handler))
        .route("/querier.v1.QuerierService/{method}", post(querier_handler))
        .route("/pyroscope/render", get(render_handler))
}

fn pprof_limits(s: &AppState) -> PprofLimits {
    PprofLimits {
        max_decompressed_bytes: s.limits.max_request_bytes,
        max_samples_per_profile: s.limits.max_profile_samples,
        ..PprofLimits::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Connect errors

/// A connect error: code (as in the Connect protocol) and message.
#[derive(Debug)]
pub struct ConnectError {
    code: &'static str,
    message: String,
}

impl ConnectError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        ConnectError { code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new("invalid_argument", message)
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "invalid_argument" | "failed_precondition" | "out_of_range" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" => StatusCode::NOT_FOUND,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn from_pipeline(e: &PipelineError) -> Self {
        let code = match e.class() {
            ErrorClass::BadRequest => "invalid_argument",
            ErrorClass::TooLarge | ErrorClass::Saturated => "resource_exhausted",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Internal => "internal",
        };
        Self::new(code, e.to_string())
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.code, "message": self.message}).to_string();
        (self.status(), [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Connect unary framing

#[derive(Clone, Copy, PartialEq, Eq)]
enum Codec {
    Proto,
    Json,
}

fn connect_codec(headers: &HeaderMap) -> Result<Codec, ConnectError> {
    if let Some(v) = headers.get("connect-protocol-version")
        && v.as_bytes() != b"1"
    {
        return Err(ConnectError::invalid("unsupported Connect-Protocol-Version (expected 1)"));
    }
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/proto");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/proto" | "application/protobuf" | "application/x-protobuf" => Ok(Codec::Proto),
        "application/json" => Ok(Codec::Json),
        other => Err(ConnectError::new(
            "unimplemented",
            format!("unsupported content type {other:?}: use application/proto or application/json"),
        )),
    }
}

async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Vec<u8>, (StatusCode, String)> {
    let limited = http_body_util::Limited::new(body, max);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {max} bytes (max_request_bytes)"),
            ));
        }
        Err(e) => return Err((StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .or_else(|| headers.get("connect-content-encoding"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(bytes.to_vec()),
        "gzip" => match ingest::pprof::maybe_gunzip(&bytes, max) {
            Ok(b) => Ok(b.into_owned()),
            Err(ingest::pprof::PprofError::TooLarge { .. }) => Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed request body exceeds {max} bytes (max_request_bytes)"),
            )),
            Err(e) => Err((StatusCode::BAD_REQUEST, e.to_string())),
        },
        other => Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported Content-Encoding {other:?}"))),
    }
}

fn connect_ok<M: Message>(codec: Codec, msg: &M, json: impl FnOnce(&M) -> Value) -> Response {
    match codec {
        Codec::Proto => ([(header::CONTENT_TYPE, "application/proto")], msg.encode_to_vec()).into_response(),
        Codec::Json => ([(header::CONTENT_TYPE, "application/json")], json(msg).to_string()).into_response(),
    }
}

fn decode_msg<M: Message + Default>(
    codec: Codec,
    body: &[u8],
    from_json: impl FnOnce(&Value) -> Result<M, ConnectError>,
) -> Result<M, ConnectError> {
    match codec {
        Codec::Proto => M::decode(body).map_err(|e| ConnectError::invalid(format!("invalid protobuf request: {e}"))),
        Codec::Json => {
            let v: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body).map_err(|e| ConnectError::invalid(format!("invalid JSON request: {e}")))?
            };
            from_json(&v)
        }
    }
}

// protojson field access: lowerCamelCase or the proto name; 64-bit integers as numbers or strings.
fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| v.get(*n)).filter(|v| !v.is_null())
}

fn j_i64(v: &Value, names: &[&str]) -> Result<Option<i64>, ConnectError> {
    match field(v, names) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| ConnectError::invalid(format!("{} must be an integer", names[0])))
        }
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| ConnectError::invalid(format!("{} must be an integer", names[0])))
        }
        Some(_) => Err(ConnectError::invalid(format!("{} must be an integer", names[0]))),
    }
}

fn j_f64(v: &Value, names: &[&str]) -> Result<f64, ConnectError> {
    match field(v, names) {
        None => Ok(0.0),
        Some(Value::Number(n)) => Ok(n.as_f64().unwrap_or(0.0)),
        Some(Value::String(s)) => {
            s.parse().map_err(|_| ConnectError::invalid(format!("{} must be a number", names[0])))
        }
        Some(_) => Err(ConnectError::invalid(format!("{} must be a number", names[0]))),
    }
}

fn j_str(v: &Value, names: &[&str]) -> Result<String, ConnectError> {
    match field(v, names) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ConnectError::invalid(format!("{} must be a string", names[0]))),
    }
}

fn j_strs(v: &Value, names: &[&str]) -> Result<Vec<String>, ConnectError> {
    match field(v, names) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ConnectError::invalid(format!("{} must hold strings", names[0])))
            })
            .collect(),
        Some(_) => Err(ConnectError::invalid(format!("{} must be an array of strings", names[0]))),
    }
}

fn stacks_request_from_json(v: &Value) -> Result<proto::SelectMergeStacktracesRequest, ConnectError> {
    Ok(proto::SelectMergeStacktracesRequest {
        profile_type_id: j_str(v, &["profileTypeID", "profile_typeID"])?,
        label_selector: j_str(v, &["labelSelector", "label_selector"])?,
        start: j_i64(v, &["start"])?.unwrap_or(0),
        end: j_i64(v, &["end"])?.unwrap_or(0),
        max_nodes: j_i64(v, &["maxNodes", "max_nodes"])?,
        format: format_from_json(v)?,
        stack_trace_selector: None,
    })
}

fn format_from_json(v: &Value) -> Result<i32, ConnectError> {
    Ok(match field(v, &["format"]) {
        None => 0,
        Some(Value::String(s)) => match s.as_str() {
            "PROFILE_FORMAT_UNSPECIFIED" => 0,
            "PROFILE_FORMAT_FLAMEGRAPH" => 1,
            "PROFILE_FORMAT_TREE" => 2,
            _ => return Err(ConnectError::invalid(format!("unknown format {s:?}"))),
        },
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) as i32,
        Some(_) => return Err(ConnectError::invalid("format must be a string or number")),
    })
}

fn flamegraph_json(fg: &proto::FlameGraph) -> Value {
    json!({
        "names": fg.names,
        "levels": fg.levels.iter().map(|l| json!({"values": l.values.iter().map(|v| v.to_string()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "total": fg.total.to_string(),
        "maxSelf": fg.max_self.to_string(),
    })
}

fn labels_json(ls: &[proto::LabelPair]) -> Value {
    Value::Array(ls.iter().map(|l| json!({"name": l.name, "value": l.value})).collect())
}

// ---------------------------------------------------------------------------------------------
// Querier

fn storage_of(s: &AppState) -> Result<Arc<Storage>, ConnectError> {
    s.pipeline
        .storage()
        .cloned()
        .ok_or_else(|| ConnectError::new("unavailable", "not ready: replaying the write-ahead log"))
}

/// A closed ns range from the request's ms range (`end == 0`: no upper bound).
fn range_ns(start_ms: i64, end_ms: i64) -> Result<(i64, i64), ConnectError> {
    let end = if end_ms == 0 { i64::MAX } else { end_ms.saturating_mul(1_000_000).saturating_add(999_999) };
    let start = start_ms.saturating_mul(1_000_000);
    if start > end {
        return Err(ConnectError::invalid(format!("start ({start_ms}) is after end ({end_ms})")));
    }
    Ok((start, end))
}

fn selector_matchers(profile_type: &str, selector: &str) -> Result<Vec<Matcher>, ConnectError> {
    query::profiles::check_profile_type(profile_type).map_err(|e| ConnectError::invalid(e.0))?;
    let mut m = query::profiles::parse_selector(selector).map_err(|e| ConnectError::invalid(e.0))?;
    m.push(Matcher::eq("__profile_type__", profile_type));
    Ok(m)
}

/// Union of the series matching any of `selectors` (none: all).
fn series_for(
    store: &Storage,
    selectors: &[String],
    start: i64,
    end: i64,
) -> Result<Vec<storage::ProfileSeries>, ConnectError> {
    let reader = store.profile_store();
    if selectors.is_empty() {
        return Ok(reader.profile_series(&[], start, end));
    }
    let mut out = Vec::new();
    for sel in selectors {
        let m = query::profiles::parse_selector(sel).map_err(|e| ConnectError::invalid(e.0))?;
        out.extend(reader.profile_series(&m, start, end));
    }
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out.dedup();
    Ok(out)
}

fn max_nodes(n: Option<i64>) -> usize {
    match n {
        None | Some(0) => DEFAULT_MAX_NODES,
        Some(n) if n < 0 => 0,
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

fn merge(store: &Storage, sel: &ProfileSelect<'_>) -> Result<MergedStacks, ConnectError> {
    store.profile_store().merge_stacks(sel).map_err(|e| ConnectError::new("resource_exhausted", e.to_string()))
}

fn to_proto_flamegraph(fg: query::profiles::FlameGraph) -> proto::FlameGraph {
    proto::FlameGraph {
        names: fg.names,
        levels: fg.levels.into_iter().map(|values| proto::Level { values }).collect(),
        total: fg.total,
        max_self: fg.max_self,
    }
}

fn stacks_flamegraph(
    store: &Storage,
    r: &proto::SelectMergeStacktracesRequest,
) -> Result<proto::FlameGraph, ConnectError> {
    if r.format == 2 {
        return Err(ConnectError::new("unimplemented", "the tree format is not supported; use the flame graph format"));
    }
    let matchers = selector_matchers(&r.profile_type_id, &r.label_selector)?;
    let (start_ns, end_ns) = range_ns(r.start, r.end)?;
    let sel = ProfileSelect { matchers: &matchers, start_ns, end_ns, span_ids: None, max_samples: MAX_QUERY_SAMPLES };
    let merged = merge(store, &sel)?;
    Ok(to_proto_flamegraph(query::profiles::flamegraph(&merged, max_nodes(r.max_nodes))))
}

async fn querier_handler(
    State(s): State<AppState>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let codec = match connect_codec(&headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let body = match read_body(&headers, body, s.limits.max_request_bytes).await {
        Ok(b) => b,
        Err((status, msg)) => {
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "resource_exhausted" } else { "invalid_argument" };
            return ConnectError::new(code, msg).into_response();
        }
    };
    let store = match storage_of(&s) {
        Ok(st) => st,
        Err(e) => return e.into_response(),
    };
    let result = tokio::task::spawn_blocking(move || querier_call(&store, &method, codec, &body))
        .await
        .unwrap_or_else(|e| Err(ConnectError::new("internal", format!("query task failed: {e}"))));
    result.unwrap_or_else(IntoResponse::into_response)
}

fn profile_type_proto(t: &ProfileType) -> proto::ProfileType {
    proto::ProfileType {
        id: t.id(),
        name: t.name.clone(),
        sample_type: t.sample_type.clone(),
        sample_unit: t.sample_unit.clone(),
        period_type: t.period_type.clone(),
        period_unit: t.period_unit.clone(),
    }
}

fn querier_call(store: &Storage, method: &str, codec: Codec, body: &[u8]) -> Result<Response, ConnectError> {
    let reader = store.profile_store();
    match method {
        "ProfileTypes" => {
            let r = decode_msg(codec, body, |v| {
                Ok(proto::ProfileTypesRequest {
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                })
            })?;
            let (start, end) = range_ns(r.start, r.end)?;
            let resp = proto::ProfileTypesResponse {
                profile_types: reader.profile_types(start, end).iter().map(profile_type_proto).collect(),
            };
            Ok(connect_ok(codec, &resp, |m| {
                json!({"profileTypes": m.profile_types.iter().map(|t| json!({
                    "ID": t.id, "name": t.name, "sampleType": t.sample_type, "sampleUnit": t.sample_unit,
                    "periodType": t.period_type, "periodUnit": t.period_unit,
                })).collect::<Vec<_>>()})
            }))
        }
        "LabelNames" => {
            let r = decode_msg(codec, body, |v| {
                Ok(proto::LabelNamesRequest {
                    matchers: j_strs(v, &["matchers"])?,
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                })
            })?;
            let (start, end) = range_ns(r.start, r.end)?;
            let series = series_for(store, &r.matchers, start, end)?;
            let resp = proto::LabelNamesResponse { names: query::profiles::label_names(&series) };
            Ok(connect_ok(codec, &resp, |m| json!({"names": m.names})))
        }
        "LabelValues" => {
            let r = decode_msg(codec, body, |v| {
                Ok(proto::LabelValuesRequest {
                    name: j_str(v, &["name"])?,
                    matchers: j_strs(v, &["matchers"])?,
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                })
            })?;
            if r.name.is_empty() {
                return Err(ConnectError::invalid("name is required"));
            }
            let (start, end) = range_ns(r.start, r.end)?;
            let series = series_for(store, &r.matchers, start, end)?;
            let resp = proto::LabelValuesResponse { names: query::profiles::label_values(&series, &r.name) };
            Ok(connect_ok(codec, &resp, |m| json!({"names": m.names})))
        }
        "Series" => {
            let r = decode_msg(codec, body, |v| {
                Ok(proto::SeriesRequest {
                    matchers: j_strs(v, &["matchers"])?,
                    label_names: j_strs(v, &["labelNames", "label_names"])?,
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                })
            })?;
            let (start, end) = range_ns(r.start, r.end)?;
            let series = series_for(store, &r.matchers, start, end)?;
            let resp = proto::SeriesResponse {
                labels_set: query::profiles::series_labels(&series, &r.label_names)
                    .into_iter()
                    .map(|ls| proto::Labels {
                        labels: ls
                            .iter()
                            .map(|l| proto::LabelPair { name: l.name.clone(), value: l.value.clone() })
                            .collect(),
                    })
                    .collect(),
            };
            Ok(connect_ok(
                codec,
                &resp,
                |m| json!({"labelsSet": m.labels_set.iter().map(|l| json!({"labels": labels_json(&l.labels)})).collect::<Vec<_>>()}),
            ))
        }
        "SelectMergeStacktraces" => {
            let r = decode_msg(codec, body, stacks_request_from_json)?;
            let fg = stacks_flamegraph(store, &r)?;
            let resp = proto::SelectMergeStacktracesResponse { flamegraph: Some(fg), tree: Vec::new() };
            Ok(connect_ok(codec, &resp, |m| json!({"flamegraph": m.flamegraph.as_ref().map(flamegraph_json)})))
        }
        "SelectMergeSpanProfile" => {
            let r = decode_msg(codec, body, |v| {
                Ok(proto::SelectMergeSpanProfileRequest {
                    profile_type_id: j_str(v, &["profileTypeID", "profile_typeID"])?,
                    label_selector: j_str(v, &["labelSelector", "label_selector"])?,
                    span_selector: j_strs(v, &["spanSelector", "span_selector"])?,
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                    max_nodes: j_i64(v, &["maxNodes", "max_nodes"])?,
                    format: format_from_json(v)?,
                })
            })?;
            if r.format == 2 {
                return Err(ConnectError::new(
                    "unimplemented",
                    "the tree format is not supported; use the flame graph format",
                ));
            }
            let spans = r
                .span_selector
                .iter()
                .map(|s| {
                    SpanId::from_hex(s)
                        .ok_or_else(|| ConnectError::invalid(format!("invalid span id {s:?}: expected 16 hex digits")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let matchers = selector_matchers(&r.profile_type_id, &r.label_selector)?;
            let (start_ns, end_ns) = range_ns(r.start, r.end)?;
            let sel = ProfileSelect {
                matchers: &matchers,
                start_ns,
                end_ns,
                span_ids: Some(&spans),
                max_samples: MAX_QUERY_SAMPLES,
            };
            let merged = merge(store, &sel)?;
            let fg = to_proto_flamegraph(query::profiles::flamegraph(&merged, max_nodes(r.max_nodes)));
            let resp = proto::SelectMergeSpanProfileResponse { flamegraph: Some(fg), tree: Vec::new() };
            Ok(connect_ok(codec, &resp, |m| json!({"flamegraph": m.flamegraph.as_ref().map(flamegraph_json)})))
        }
        "SelectMergeProfile" => {
            let r = decode_msg(codec, body, |v| {
                Ok(proto::SelectMergeProfileRequest {
                    profile_type_id: j_str(v, &["profileTypeID", "profile_typeID"])?,
                    label_selector: j_str(v, &["labelSelector", "label_selector"])?,
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                    max_nodes: j_i64(v, &["maxNodes", "max_nodes"])?,
                    stack_trace_selector: None,
                })
            })?;
            if codec == Codec::Json {
                return Err(ConnectError::new(
                    "unimplemented",
                    "SelectMergeProfile answers pprof: use application/proto",
                ));
            }
            let matchers = selector_matchers(&r.profile_type_id, &r.label_selector)?;
            let (start_ns, end_ns) = range_ns(r.start, r.end)?;
            let sel =
                ProfileSelect { matchers: &matchers, start_ns, end_ns, span_ids: None, max_samples: MAX_QUERY_SAMPLES };
            let merged = merge(store, &sel)?;
            let profile = merged_to_pprof(&merged, &r.profile_type_id, r.start, r.end);
            Ok(connect_ok(codec, &profile, |_| Value::Null))
        }
        "SelectSeries" => {
            let r = decode_msg(codec, body, |v| {
                let aggregation = match field(v, &["aggregation"]) {
                    None => None,
                    Some(Value::String(s)) if s == "TIME_SERIES_AGGREGATION_TYPE_SUM" => Some(0),
                    Some(Value::String(s)) if s == "TIME_SERIES_AGGREGATION_TYPE_AVERAGE" => Some(1),
                    Some(Value::Number(n)) => Some(n.as_i64().unwrap_or(0) as i32),
                    Some(other) => return Err(ConnectError::invalid(format!("unknown aggregation {other}"))),
                };
                Ok(proto::SelectSeriesRequest {
                    profile_type_id: j_str(v, &["profileTypeID", "profile_typeID"])?,
                    label_selector: j_str(v, &["labelSelector", "label_selector"])?,
                    start: j_i64(v, &["start"])?.unwrap_or(0),
                    end: j_i64(v, &["end"])?.unwrap_or(0),
                    group_by: j_strs(v, &["groupBy", "group_by"])?,
                    step: j_f64(v, &["step"])?,
                    aggregation,
                    stack_trace_selector: None,
                    limit: j_i64(v, &["limit"])?,
                    exemplar_type: 0,
                })
            })?;
            let matchers = selector_matchers(&r.profile_type_id, &r.label_selector)?;
            if r.end == 0 {
                return Err(ConnectError::invalid("end is required"));
            }
            let (start_ns, end_ns) = range_ns(r.start, r.end)?;
            let sel =
                ProfileSelect { matchers: &matchers, start_ns, end_ns, span_ids: None, max_samples: MAX_QUERY_SAMPLES };
            let totals = reader.profile_totals(&sel);
            let agg = match r.aggregation {
                Some(1) => query::profiles::Aggregation::Average,
                _ => query::profiles::Aggregation::Sum,
            };
            let limit = r.limit.and_then(|l| usize::try_from(l).ok());
            let series = query::profiles::select_series(&totals, r.start, r.end, r.step, &r.group_by, agg, limit)
                .map_err(|e| ConnectError::invalid(e.0))?;
            let resp = proto::SelectSeriesResponse {
                series: series
                    .into_iter()
                    .map(|s| proto::Series {
                        labels: s.labels.into_iter().map(|(name, value)| proto::LabelPair { name, value }).collect(),
                        points: s
                            .points
                            .into_iter()
                            .map(|(timestamp, value)| proto::Point { value, timestamp })
                            .collect(),
                    })
                    .collect(),
            };
            Ok(connect_ok(codec, &resp, |m| {
                json!({"series": m.series.iter().map(|s| json!({
                    "labels": labels_json(&s.labels),
                    "points": s.points.iter().map(|p| json!({"value": p.value, "timestamp": p.timestamp.to_string()})).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()})
            }))
        }
        "Diff" => {
            let r = decode_msg(codec, body, |v| {
                let side = |n: &str| field(v, &[n]).map(stacks_request_from_json).transpose();
                Ok(proto::DiffRequest { left: side("left")?, right: side("right")? })
            })?;
            let (Some(left), Some(right)) = (r.left, r.right) else {
                return Err(ConnectError::invalid("left and right are required"));
            };
            let mut merged = Vec::new();
            for side in [&left, &right] {
                let matchers = selector_matchers(&side.profile_type_id, &side.label_selector)?;
                let (start_ns, end_ns) = range_ns(side.start, side.end)?;
                let sel = ProfileSelect {
                    matchers: &matchers,
                    start_ns,
                    end_ns,
                    span_ids: None,
                    max_samples: MAX_QUERY_SAMPLES,
                };
                merged.push(merge(store, &sel)?);
            }
            let d = query::profiles::diff(&merged[0], &merged[1], max_nodes(left.max_nodes.or(right.max_nodes)));
            let resp = proto::DiffResponse {
                flamegraph: Some(proto::FlameGraphDiff {
                    names: d.names,
                    levels: d.levels.into_iter().map(|values| proto::Level { values }).collect(),
                    total: d.total,
                    max_self: d.max_self,
                    left_ticks: d.left_ticks,
                    right_ticks: d.right_ticks,
                }),
            };
            Ok(connect_ok(codec, &resp, |m| {
                json!({"flamegraph": m.flamegraph.as_ref().map(|f| json!({
                    "names": f.names,
                    "levels": f.levels.iter().map(|l| json!({"values": l.values.iter().map(|v| v.to_string()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                    "total": f.total.to_string(), "maxSelf": f.max_self.to_string(),
                    "leftTicks": f.left_ticks.to_string(), "rightTicks": f.right_ticks.to_string(),
                }))})
            }))
        }
        other => {
            Err(ConnectError::new("unimplemented", format!("querier.v1.QuerierService/{other} is not implemented")))
        }
    }
}

/// Merged stacks as a pprof profile of one sample type.
fn merged_to_pprof(m: &MergedStacks, profile_type: &str, start_ms: i64, end_ms: i64) -> ingest::pprof::proto::Profile {
    use ingest::pprof::proto as pp;
    let mut strings: Vec<String> = vec![String::new()];
    let mut ids: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut s = |v: &str| -> i64 {
        if v.is_empty() {
            return 0;
        }
        if let Some(i) = ids.get(v) {
            return *i;
        }
        let i = strings.len() as i64;
        strings.push(v.to_string());
        ids.insert(v.to_string(), i);
        i
    };
    let parts: Vec<&str> = profile_type.split(':').collect();
    let part = |i: usize| parts.get(i).copied().unwrap_or("");
    let sample_type = pp::ValueType { r#type: s(part(1)), unit: s(part(2)) };
    let period_type = pp::ValueType { r#type: s(part(3)), unit: s(part(4)) };
    let function = m
        .functions
        .iter()
        .enumerate()
        .map(|(i, f)| pp::Function {
            id: i as u64 + 1,
            name: s(&f.name),
            system_name: s(&f.system_name),
            filename: s(&f.filename),
            start_line: f.start_line,
        })
        .collect();
    let location = m
        .locations
        .iter()
        .enumerate()
        .map(|(i, l)| pp::Location {
            id: i as u64 + 1,
            mapping_id: u64::from(l.mapping),
            address: l.address,
            line: l
                .lines
                .iter()
                .map(|(f, line)| pp::Line { function_id: u64::from(*f) + 1, line: *line, column: 0 })
                .collect(),
            is_folded: false,
        })
        .collect();
    let mapping = m
        .mappings
        .iter()
        .enumerate()
        .map(|(i, mp)| pp::Mapping {
            id: i as u64 + 1,
            memory_start: mp.memory_start,
            memory_limit: mp.memory_limit,
            file_offset: mp.file_offset,
            filename: s(&mp.filename),
            build_id: s(&mp.build_id),
            has_functions: mp.has_functions,
            has_filenames: mp.has_filenames,
            has_line_numbers: mp.has_line_numbers,
            has_inline_frames: mp.has_inline_frames,
        })
        .collect();
    let sample = m
        .stacks
        .iter()
        .map(|(stack, v)| pp::Sample {
            location_id: stack.iter().map(|l| u64::from(*l) + 1).collect(),
            value: vec![*v],
            label: Vec::new(),
        })
        .collect();
    pp::Profile {
        sample_type: vec![sample_type],
        sample,
        mapping,
        location,
        function,
        string_table: strings,
        time_nanos: start_ms.saturating_mul(1_000_000),
        duration_nanos: end_ms.saturating_sub(start_ms).saturating_mul(1_000_000).max(0),
        period_type: Some(period_type),
        period: 1,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Ingest

fn text_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into() + "\n").into_response()
}

fn pipeline_status(e: &PipelineError) -> StatusCode {
    match e.class() {
        ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
        ErrorClass::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorClass::Saturated => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn outcome(batch: &storage::model::ProfilesBatch) -> Outcome {
    Outcome { accepted: batch.item_count() as u64, ..Outcome::default() }
}

fn mapped_error(e: ingest::pprof::PprofError) -> PipelineError {
    PipelineError::Malformed(e.to_string())
}

async fn ingest_handler(State(s): State<AppState>, RawQuery(q): RawQuery, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let params = match IngestParams::from_query(q.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return text_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let permit = match s.pipeline.admit() {
        Ok(p) => p,
        Err(e) => return text_error(pipeline_status(&e), e.to_string()),
    };
    let body = match read_body(&headers, body, s.limits.max_request_bytes).await {
        Ok(b) => b,
        Err((status, msg)) => return text_error(status, msg),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let limits = pprof_limits(&s);
    let wire = body.len();
    let result = s
        .pipeline
        .write_mapped(Signal::Profiles, Protocol::Pyroscope, wire, started, permit, move |now| {
            let batch =
                ingest::pprof::ingest(&params, content_type.as_deref(), &body, &limits, now).map_err(mapped_error)?;
            let o = outcome(&batch);
            Ok((WriteBatch::Profiles(batch), o))
        })
        .await;
    match result {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => text_error(pipeline_status(&e), e.to_string()),
    }
}

async fn push_handler(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let codec = match connect_codec(&headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let permit = match s.pipeline.admit() {
        Ok(p) => p,
        Err(e) => return ConnectError::from_pipeline(&e).into_response(),
    };
    let body = match read_body(&headers, body, s.limits.max_request_bytes).await {
        Ok(b) => b,
        Err((status, msg)) => {
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "resource_exhausted" } else { "invalid_argument" };
            return ConnectError::new(code, msg).into_response();
        }
    };
    let limits = pprof_limits(&s);
    let wire = body.len();
    let result = s
        .pipeline
        .write_mapped(Signal::Profiles, Protocol::Pyroscope, wire, started, permit, move |now| {
            let req = decode_msg(codec, &body, push_from_json).map_err(|e| PipelineError::Malformed(e.message))?;
            let batch = ingest::pprof::push(req, &limits, now).map_err(mapped_error)?;
            let o = outcome(&batch);
            Ok((WriteBatch::Profiles(batch), o))
        })
        .await;
    match result {
        Ok(_) => connect_ok(codec, &ingest::pprof::proto::PushResponse {}, |_| json!({})),
        Err(e) => ConnectError::from_pipeline(&e).into_response(),
    }
}

fn push_from_json(v: &Value) -> Result<ingest::pprof::proto::PushRequest, ConnectError> {
    use ingest::pprof::proto as pp;
    let mut req = pp::PushRequest::default();
    let series = field(v, &["series"]).and_then(Value::as_array).cloned().unwrap_or_default();
    for s in &series {
        let mut out = pp::RawProfileSeries::default();
        for l in field(s, &["labels"]).and_then(Value::as_array).cloned().unwrap_or_default() {
            out.labels.push(pp::LabelPair { name: j_str(&l, &["name"])?, value: j_str(&l, &["value"])? });
        }
        for sample in field(s, &["samples"]).and_then(Value::as_array).cloned().unwrap_or_default() {
            let raw = j_str(&sample, &["rawProfile", "raw_profile"])?;
            let raw_profile = ingest::pprof::base64_decode(&raw)
                .ok_or_else(|| ConnectError::invalid("rawProfile is not valid base64"))?;
            out.samples.push(pp::RawSample { raw_profile, id: j_str(&sample, &["ID", "id"])? });
        }
        req.series.push(out);
    }
    Ok(req)
}

// ---------------------------------------------------------------------------------------------
// Legacy render

/// Parses `now`, `now-1h`, unix s/ms/µs/ns (by digit count) or `YYYYMMDD`, to ms.
fn parse_render_time(v: &str, now_ms: i64) -> Option<i64> {
    let v = v.trim();
    if v == "now" {
        return Some(now_ms);
    }
    if let Some(d) = v.strip_prefix("now-") {
        return humantime::parse_duration(d).ok().map(|d| now_ms - d.as_millis() as i64);
    }
    if v.len() == 8 && v.chars().all(|c| c.is_ascii_digit()) && v.starts_with(['1', '2']) && v[4..6] <= *"12" {
        let (y, m, d) = (v[..4].parse::<i64>().ok()?, v[4..6].parse::<i64>().ok()?, v[6..].parse::<i64>().ok()?);
        return Some(days_from_civil(y, m, d) * 86_400_000);
    }
    let n: i64 = v.parse().ok()?;
    Some(match v.trim_start_matches('-').len() {
        0..=10 => n * 1000,
        11..=13 => n,
        14..=16 => n / 1000,
        _ => n / 1_000_000,
    })
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

async fn render_handler(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let store = match storage_of(&s) {
        Ok(st) => st,
        Err(e) => return text_error(StatusCode::SERVICE_UNAVAILABLE, e.message),
    };
    let q = q.unwrap_or_default();
    let result = tokio::task::spawn_blocking(move || render(&store, &q))
        .await
        .unwrap_or_else(|e| Err(format!("query task failed: {e}")));
    match result {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(msg) => text_error(StatusCode::BAD_REQUEST, msg),
    }
}

fn render(store: &Storage, q: &str) -> Result<Value, String> {
    let params: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let query = get("query").ok_or("the query parameter is required")?;
    let format = get("format").unwrap_or("json");
    if format != "json" {
        return Err(format!("format {format:?} is not supported (json)"));
    }
    let (ty, selector) = match query.find('{') {
        Some(i) => (&query[..i], &query[i..]),
        None => (query, "{}"),
    };
    let now_ms = crate::pipeline::now_ns() / 1_000_000;
    let from = parse_render_time(get("from").unwrap_or("now-1h"), now_ms).ok_or("invalid from")?;
    let until = parse_render_time(get("until").unwrap_or("now"), now_ms).ok_or("invalid until")?;
    let matchers = selector_matchers(ty.trim(), selector).map_err(|e| e.message)?;
    let (start_ns, end_ns) = range_ns(from, until).map_err(|e| e.message)?;
    let sel = ProfileSelect { matchers: &matchers, start_ns, end_ns, span_ids: None, max_samples: MAX_QUERY_SAMPLES };
    let merged = merge(store, &sel).map_err(|e| e.message)?;
    let max_nodes = get("maxNodes").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_NODES);
    let fg = query::profiles::flamegraph(&merged, max_nodes);
    // Timeline: 10 s buckets of totals.
    let totals = store.profile_store().profile_totals(&sel);
    let start_s = from.div_euclid(10_000) * 10;
    let buckets = ((until / 1000 - start_s) / 10 + 1).clamp(1, 100_000) as usize;
    let mut samples = vec![0i64; buckets];
    for (_, t, v, _) in &totals.points {
        let i = ((t / 1_000_000_000 - start_s) / 10).clamp(0, buckets as i64 - 1) as usize;
        samples[i] += v;
    }
    let parts: Vec<&str> = ty.split(':').collect();
    let units = match parts.get(2).copied().unwrap_or("") {
        "nanoseconds" => "samples",
        "bytes" => "bytes",
        "count" => "objects",
        other => other,
    };
    Ok(json!({
        "flamebearer": {"names": fg.names, "levels": fg.levels, "numTicks": fg.total, "maxSelf": fg.max_self},
        "metadata": {"format": "single", "spyName": "", "sampleRate": 1_000_000_000, "units": units, "name": ty},
        "timeline": {"startTime": start_s, "samples": samples, "durationDelta": 10},
        "groups": Value::Null,
    }))
}

//! The Loki HTTP API (`/loki/api/v1/*`) and Loki push, as Grafana's Loki datasource and Loki
//! clients (Promtail, Alloy, the reference pack's runner) speak them; see `grafana-contracts.md` §2.
//!
//! Wire rules kept here, in one place:
//! - Times in requests: integer ns, integer seconds (10 digits or fewer), float seconds, or
//!   RFC 3339 (Loki's `parseTimestamp`). Log entry times in answers are strings of ns; sample times
//!   are float seconds with millisecond precision, values strings (as Prometheus).
//! - Errors are plain text with Loki's status codes: 400 for bad parameters, parse errors (with
//!   line and column) and limits; 500 for evaluation failures; 503 while the store is not open;
//!   504 when a query runs out of time.
//! - The engines are synchronous: every query runs on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use query::logql::{self, Data, Engine, EngineOptions, Request};
use serde_json::{Map, Value, json};
use storage::model::{Labels, Signal, WriteBatch};
use storage::{Direction, LogScan, Matcher, Reader, Storage};

use crate::http::AppState;
use crate::http::otlp::{BodyError, GunzipError, drain_cap, gunzip, read_body};
use crate::pipeline::{ErrorClass, Outcome, PipelineError, now_ns};
use crate::telemetry::{Protocol, RequestReject};

const NS: i64 = 1_000_000_000;

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        // The handler enforces `limits.max_request_bytes`, compressed and decompressed.
        .route("/loki/api/v1/push", post(push).layer(DefaultBodyLimit::disable()))
        .route("/loki/api/v1/query", get(instant_query).post(instant_query))
        .route("/loki/api/v1/query_range", get(range_query).post(range_query))
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route("/loki/api/v1/label", get(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values).post(label_values))
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/loki/api/v1/index/stats", get(index_stats).post(index_stats))
        .route("/loki/api/v1/index/volume", get(volume).post(volume))
        .route("/loki/api/v1/index/volume_range", get(volume_range).post(volume_range))
        .route("/loki/api/v1/tail", get(tail))
        .route("/loki/api/v1/status/buildinfo", get(buildinfo))
        // Logs Drilldown only; Grafana's probes fall back to labels/series on a 404.
        .route("/loki/api/v1/detected_labels", get(not_implemented))
        .route("/loki/api/v1/detected_fields", get(not_implemented))
        .route("/loki/api/v1/detected_field/{name}/values", get(not_implemented))
        .route("/loki/api/v1/patterns", get(not_implemented))
}

async fn not_implemented() -> Response {
    ApiError(StatusCode::NOT_FOUND, "not implemented by Outpost".into()).into_response()
}

// ---------------------------------------------------------------------------------------------
// errors and parameters

/// A plain-text error answer, Loki style.
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.1;
        body.push('\n');
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
    }
}

impl From<logql::Error> for ApiError {
    fn from(e: logql::Error) -> ApiError {
        let status = match &e {
            logql::Error::Parse(_) | logql::Error::Limit(_) => StatusCode::BAD_REQUEST,
            logql::Error::Timeout => StatusCode::GATEWAY_TIMEOUT,
            logql::Error::Execution(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

/// Query-string and form parameters (a name may repeat, as `match[]` does).
struct Params(Vec<(String, String)>);

impl Params {
    fn new(raw: Option<String>, headers: &HeaderMap, body: &[u8]) -> Params {
        let mut v: Vec<(String, String)> =
            raw.as_deref().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn time(&self, name: &str, default: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time(v).ok_or_else(|| {
                ApiError::bad(format!("invalid {name} parameter {v:?}: not a timestamp (ns, s or RFC 3339)"))
            }),
        }
    }

    fn limit(&self, default: u32) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => v.parse::<u32>().map_err(|_| ApiError::bad(format!("invalid limit parameter {v:?}"))),
        }
    }

    fn direction(&self) -> Result<Direction, ApiError> {
        match self.get("direction").map(|d| d.to_ascii_lowercase()) {
            None => Ok(Direction::Backward),
            Some(d) if d == "backward" => Ok(Direction::Backward),
            Some(d) if d == "forward" => Ok(Direction::Forward),
            Some(d) => Err(ApiError::bad(format!("invalid direction {d:?}: use forward or backward"))),
        }
    }

    /// `start`/`end` for metadata endpoints (Loki's default window: the last 6 hours).
    fn range(&self) -> Result<(i64, i64), ApiError> {
        let end = self.time("end", now_ns())?;
        let start = self.time("start", end - 6 * 3600 * NS)?;
        if end < start {
            return Err(ApiError::bad("end timestamp must not be before start time"));
        }
        Ok((start, end))
    }
}

/// Loki's `parseTimestamp`: float seconds if it has a dot, integer seconds up to 10 digits,
/// integer ns beyond, else RFC 3339.
fn parse_time(v: &str) -> Option<i64> {
    if v.contains('.')
        && let Ok(f) = v.parse::<f64>()
    {
        let secs = f.trunc();
        let frac = ((f - secs) * 1000.0).round() / 1000.0;
        return Some((secs as i64).saturating_mul(NS).saturating_add((frac * NS as f64) as i64));
    }
    match v.parse::<i64>() {
        Ok(n) if v.trim_start_matches('-').len() <= 10 => Some(n.saturating_mul(NS)),
        Ok(n) => Some(n),
        Err(_) => ingest::loki_push::rfc3339_ns(v),
    }
}

/// Float seconds or a Prometheus duration (`15000ms`, `1m30s`) → ns.
fn parse_duration(v: &str) -> Option<i64> {
    if let Ok(f) = v.parse::<f64>() {
        return f.is_finite().then_some((f * NS as f64) as i64);
    }
    let mut total: i64 = 0;
    let mut rest = v;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = match &rest[..unit_len] {
            "ms" => 1_000_000,
            "s" => NS,
            "m" => 60 * NS,
            "h" => 3600 * NS,
            "d" => 86_400 * NS,
            "w" => 7 * 86_400 * NS,
            "y" => 365 * 86_400 * NS,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    Some(total)
}

fn storage_of(s: &AppState) -> Result<Arc<Storage>, ApiError> {
    s.pipeline.storage().cloned().ok_or_else(|| {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "Outpost is starting: replaying the write-ahead log".into())
    })
}

fn engine(s: &AppState) -> Engine {
    Engine::new(EngineOptions {
        max_entries_limit: s.loki.max_entries_limit,
        max_series: s.loki.max_query_series,
        timeout: s.loki.query_timeout,
        ..EngineOptions::default()
    })
}

/// Runs `f` over the store on the blocking pool.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Storage) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = storage_of(s)?;
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}")))?
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

fn labels_json(l: &Labels) -> Value {
    Value::Object(l.iter().map(|x| (x.name.clone(), Value::String(x.value.clone()))).collect())
}

fn pairs_json(p: &[(String, String)]) -> Value {
    Value::Object(p.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// A sample time (ns) as Prometheus writes it: float seconds, millisecond precision.
fn sample_time(t_ns: i64) -> Value {
    let ms = t_ns.div_euclid(1_000_000);
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    if frac == 0 {
        Value::from(secs)
    } else {
        serde_json::Number::from_f64(ms as f64 / 1000.0).map_or(Value::Null, Value::Number)
    }
}

/// A sample value as Prometheus writes it.
fn sample_value(v: f64) -> Value {
    Value::String(if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    })
}

// ---------------------------------------------------------------------------------------------
// queries

async fn instant_query(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    run_query(s, &headers, p, true).await.unwrap_or_else(IntoResponse::into_response)
}

async fn range_query(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    run_query(s, &headers, p, false).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run_query(s: AppState, headers: &HeaderMap, p: Params, instant: bool) -> ApiResult {
    let query = p.get("query").unwrap_or_default().to_string();
    let limit = p.limit(100)?;
    let direction = p.direction()?;
    let req = if instant {
        let t = p.time("time", now_ns())?;
        Request { query, start_ns: t, end_ns: t, step_ns: 0, instant: true, limit, direction, interval_ns: 0 }
    } else {
        let end = p.time("end", now_ns())?;
        let start = p.time("start", end - 3600 * NS)?;
        if end < start {
            return Err(ApiError::bad("end timestamp must not be before or equal to start time"));
        }
        let step = match p.get("step") {
            Some(v) => parse_duration(v).ok_or_else(|| {
                ApiError::bad(format!("invalid step parameter {v:?}: use a duration (15s) or float seconds"))
            })?,
            None => ((end - start) / NS / 250).max(1) * NS,
        };
        if step <= 0 {
            return Err(ApiError::bad(
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            ));
        }
        if (end - start) / step > 11_000 {
            return Err(ApiError::bad(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        let interval = match p.get("interval") {
            Some(v) => parse_duration(v).ok_or_else(|| ApiError::bad(format!("invalid interval parameter {v:?}")))?,
            None => 0,
        };
        Request {
            query,
            start_ns: start,
            end_ns: end,
            step_ns: step,
            instant: false,
            limit,
            direction,
            interval_ns: interval,
        }
    };
    let categorize = headers
        .get_all("X-Loki-Response-Encoding-Flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "categorize-labels"));
    let eng = engine(&s);
    let resp = blocking(&s, move |st| eng.execute(st.log_store(), &req).map_err(ApiError::from)).await?;
    let (result_type, result) = encode_data(&resp.data, categorize);
    let mut data = Map::new();
    data.insert("resultType".into(), Value::String(result_type.into()));
    data.insert("result".into(), result);
    data.insert("stats".into(), stats_json(&resp.stats, entries_returned(&resp.data)));
    if categorize && result_type == "streams" {
        data.insert("encodingFlags".into(), json!(["categorize-labels"]));
    }
    let mut body = json!({"status": "success", "data": Value::Object(data)});
    if !resp.warnings.is_empty() {
        body["warnings"] = json!(resp.warnings);
    }
    Ok(axum::Json(body).into_response())
}

fn entries_returned(d: &Data) -> u64 {
    match d {
        Data::Streams(s) => s.iter().map(|s| s.entries.len() as u64).sum(),
        _ => 0,
    }
}

fn encode_data(d: &Data, categorize: bool) -> (&'static str, Value) {
    match d {
        Data::Streams(streams) => ("streams", encode_streams(streams, categorize)),
        Data::Vector(v) => (
            "vector",
            Value::Array(
                v.iter()
                    .map(|s| json!({"metric": labels_json(&s.labels), "value": [sample_time(s.t_ns), sample_value(s.v)]}))
                    .collect(),
            ),
        ),
        Data::Matrix(m) => (
            "matrix",
            Value::Array(
                m.iter()
                    .map(|s| {
                        let values: Vec<Value> =
                            s.samples.iter().map(|&(t, v)| json!([sample_time(t), sample_value(v)])).collect();
                        json!({"metric": labels_json(&s.labels), "values": values})
                    })
                    .collect(),
            ),
        ),
        Data::Scalar { t_ns, v } => ("scalar", json!([sample_time(*t_ns), sample_value(*v)])),
    }
}

/// Streams as Loki 2.9 encodes them. Without categorization each stream carries its full label
/// set and 2-tuples; with it, a stream carries only the labels that are neither structured
/// metadata nor parsed, and every entry a third element with those two groups.
fn encode_streams(streams: &[logql::Stream], categorize: bool) -> Value {
    if !categorize {
        return Value::Array(
            streams
                .iter()
                .map(|s| {
                    let values: Vec<Value> = s.entries.iter().map(|e| json!([e.ts_ns.to_string(), e.line])).collect();
                    json!({"stream": labels_json(&s.labels), "values": values})
                })
                .collect(),
        );
    }
    let mut out: Vec<(Labels, Vec<Value>)> = Vec::new();
    for s in streams {
        for e in &s.entries {
            let base = Labels::from_pairs(
                s.labels
                    .iter()
                    .filter(|l| {
                        !e.structured_metadata.iter().any(|(k, _)| *k == l.name)
                            && !e.parsed.iter().any(|(k, _)| *k == l.name)
                    })
                    .map(|l| (l.name.clone(), l.value.clone())),
            );
            let mut extra = Map::new();
            if !e.structured_metadata.is_empty() {
                extra.insert("structuredMetadata".into(), pairs_json(&e.structured_metadata));
            }
            if !e.parsed.is_empty() {
                extra.insert("parsed".into(), pairs_json(&e.parsed));
            }
            let v = json!([e.ts_ns.to_string(), e.line, Value::Object(extra)]);
            match out.iter_mut().find(|(l, _)| *l == base) {
                Some((_, vals)) => vals.push(v),
                None => out.push((base, vec![v])),
            }
        }
    }
    Value::Array(out.into_iter().map(|(l, values)| json!({"stream": labels_json(&l), "values": values})).collect())
}

/// Loki's `stats` object (the fields Grafana reads, with our figures where we have them).
fn stats_json(st: &logql::Stats, returned: u64) -> Value {
    let secs = st.exec_time.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 };
    let chunk = json!({
        "headChunkBytes": 0, "headChunkLines": 0, "headChunkStructuredMetadataBytes": 0,
        "decompressedBytes": st.bytes_scanned, "decompressedLines": st.lines_scanned,
        "decompressedStructuredMetadataBytes": 0, "compressedBytes": 0, "totalDuplicates": 0,
        "postFilterLines": returned
    });
    let store = json!({
        "totalChunksRef": 0, "totalChunksDownloaded": 0, "chunksDownloadTime": 0,
        "queryReferencedStructuredMetadata": false, "chunk": chunk
    });
    let cache = json!({
        "entriesFound": 0, "entriesRequested": 0, "entriesStored": 0, "bytesReceived": 0,
        "bytesSent": 0, "requests": 0, "downloadTime": 0
    });
    json!({
        "summary": {
            "bytesProcessedPerSecond": per_sec(st.bytes_scanned),
            "linesProcessedPerSecond": per_sec(st.lines_scanned),
            "totalBytesProcessed": st.bytes_scanned,
            "totalLinesProcessed": st.lines_scanned,
            "totalStructuredMetadataBytesProcessed": 0,
            "totalPostFilterLines": returned,
            "execTime": secs,
            "queueTime": 0,
            "subqueries": 0,
            "totalEntriesReturned": returned,
            "splits": 0,
            "shards": 0
        },
        "querier": {"store": store},
        "ingester": {"totalReached": 0, "totalChunksMatched": 0, "totalBatches": 0, "totalLinesSent": 0,
                     "store": store},
        "cache": {"chunk": cache, "index": cache, "result": cache, "statsResult": cache, "volumeResult": cache}
    })
}

// ---------------------------------------------------------------------------------------------
// metadata

/// Matchers of a selector; for a full query, of its leading selector (index endpoints accept
/// `{...} |= "x"` and use only the stream part, as Loki does).
fn selector(q: &str) -> Result<Vec<Matcher>, ApiError> {
    match logql::parse_selector(q) {
        Ok(m) => Ok(m),
        Err(e) => {
            let lead = leading_selector(q).ok_or_else(|| ApiError::bad(e.to_string()))?;
            logql::parse_selector(lead).map_err(|e| ApiError::bad(e.to_string()))
        }
    }
}

/// The text up to the `}` closing the first `{`, skipping quoted strings.
fn leading_selector(q: &str) -> Option<&str> {
    let start = q.find('{')?;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in q[start..].char_indices() {
        match quote {
            Some(qc) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && qc == '"' {
                    escaped = true;
                } else if c == qc {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '}' => return Some(&q[start..=start + i]),
            None => {}
        }
    }
    None
}

async fn labels(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    let r: ApiResult = async {
        let (start, end) = p.range()?;
        let matchers = match p.get("query") {
            Some(q) => selector(q)?,
            None => Vec::new(),
        };
        let names = blocking(&s, move |st| {
            let mut names = BTreeSet::new();
            for l in st.log_store().streams(&matchers, start, end) {
                names.extend(l.iter().map(|x| x.name.clone()));
            }
            Ok(names)
        })
        .await?;
        Ok(success(json!(names)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn label_values(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let p = Params::new(q, &headers, &body);
    let r: ApiResult = async {
        let (start, end) = p.range()?;
        let matchers = match p.get("query") {
            Some(q) => selector(q)?,
            None => Vec::new(),
        };
        let values = blocking(&s, move |st| {
            let mut values = BTreeSet::new();
            for l in st.log_store().streams(&matchers, start, end) {
                if let Some(v) = l.get(&name) {
                    values.insert(v.to_string());
                }
            }
            Ok(values)
        })
        .await?;
        Ok(success(json!(values)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn series(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    let r: ApiResult = async {
        let (start, end) = p.range()?;
        let mut sets = Vec::new();
        for m in p.all("match[]").into_iter().chain(p.all("match")) {
            sets.push(selector(m)?);
        }
        if sets.is_empty() {
            sets.push(Vec::new());
        }
        let out = blocking(&s, move |st| {
            let mut all: BTreeSet<Arc<Labels>> = BTreeSet::new();
            for m in &sets {
                all.extend(st.log_store().streams(m, start, end));
            }
            Ok(all.iter().map(|l| labels_json(l)).collect::<Vec<_>>())
        })
        .await?;
        Ok(success(Value::Array(out)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Visits every record of the selector's streams in `start..=end`.
fn each_record(st: &Storage, matchers: Vec<Matcher>, start: i64, end: i64, mut f: impl FnMut(&storage::StoredLog)) {
    let scan = LogScan { matchers, start_ns: start, end_ns: end, ..LogScan::default() };
    st.log_store().scan(&scan, &mut |l| {
        f(l);
        true
    });
}

async fn index_stats(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    let r: ApiResult = async {
        let (start, end) = p.range()?;
        let matchers = selector(p.get("query").unwrap_or("{}"))?;
        let v = blocking(&s, move |st| {
            let (mut entries, mut bytes) = (0u64, 0u64);
            let mut streams = BTreeSet::new();
            // A "chunk" here is a stream's records within one hour.
            let mut chunks = BTreeSet::new();
            each_record(st, matchers, start, end, |l| {
                entries += 1;
                bytes += l.record.body.len() as u64;
                let key = Arc::as_ptr(&l.stream) as usize;
                streams.insert(key);
                chunks.insert((key, l.record.timestamp_ns.div_euclid(3600 * NS)));
            });
            Ok(json!({"streams": streams.len(), "chunks": chunks.len(), "bytes": bytes, "entries": entries}))
        })
        .await?;
        Ok(axum::Json(v).into_response())
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn volume(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    volume_impl(s, p, false).await.unwrap_or_else(IntoResponse::into_response)
}

async fn volume_range(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let p = Params::new(q, &headers, &body);
    volume_impl(s, p, true).await.unwrap_or_else(IntoResponse::into_response)
}

/// `index/volume` and `index/volume_range`: bytes of log lines per group of streams, grouped by
/// `targetLabels` when given, else by the selector's label names (`aggregateBy=labels`: one series
/// per label name instead), the largest `limit` groups.
async fn volume_impl(s: AppState, p: Params, range: bool) -> ApiResult {
    let end = p.time("end", now_ns())?;
    let start = p.time("start", end - 3600 * NS)?;
    let query = p.get("query").ok_or_else(|| ApiError::bad("query parameter is required"))?;
    let matchers = selector(query)?;
    let limit = p.limit(100)? as usize;
    let by_labels = p.get("aggregateBy") == Some("labels");
    let targets: Vec<String> = match p.get("targetLabels") {
        Some(t) => t.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        None => {
            let mut names: Vec<String> = matchers.iter().map(|m| m.name.clone()).collect();
            names.dedup();
            names
        }
    };
    let step = if range {
        match p.get("step") {
            Some(v) => parse_duration(v).filter(|s| *s > 0).ok_or_else(|| ApiError::bad("invalid step parameter"))?,
            None => ((end - start) / NS / 250).max(1) * NS,
        }
    } else {
        0
    };
    let groups = blocking(&s, move |st| {
        // group labels → bucket end (ns) → bytes
        let mut groups: BTreeMap<Labels, BTreeMap<i64, u64>> = BTreeMap::new();
        each_record(st, matchers, start, end, |l| {
            let bucket = if step > 0 {
                let k = (l.record.timestamp_ns - start + step - 1).div_euclid(step);
                start + k * step
            } else {
                end
            };
            let bytes = l.record.body.len() as u64;
            let keys: Vec<Labels> = if by_labels {
                l.stream.iter().map(|x| Labels::from_pairs([(x.name.clone(), x.value.clone())])).collect()
            } else {
                vec![Labels::from_pairs(
                    targets.iter().filter_map(|t| l.stream.get(t).map(|v| (t.clone(), v.to_string()))),
                )]
            };
            for k in keys {
                *groups.entry(k).or_default().entry(bucket).or_default() += bytes;
            }
        });
        Ok(groups)
    })
    .await?;
    let mut ranked: Vec<(Labels, BTreeMap<i64, u64>, u64)> =
        groups.into_iter().map(|(l, b)| (l.clone(), b.clone(), b.values().sum())).collect();
    ranked.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(limit);
    let result: Vec<Value> = ranked
        .into_iter()
        .map(|(l, buckets, total)| {
            if range {
                let values: Vec<Value> = buckets.iter().map(|(t, b)| json!([sample_time(*t), b.to_string()])).collect();
                json!({"metric": labels_json(&l), "values": values})
            } else {
                json!({"metric": labels_json(&l), "value": [sample_time(end), total.to_string()]})
            }
        })
        .collect();
    let rt = if range { "matrix" } else { "vector" };
    Ok(success(json!({"resultType": rt, "result": result})))
}

async fn buildinfo() -> Response {
    axum::Json(json!({
        "version": "2.9.13",
        "revision": env!("CARGO_PKG_VERSION"),
        "branch": "outpost",
        "buildUser": "outpost",
        "buildDate": "",
        "goVersion": ""
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// tail

/// `GET /loki/api/v1/tail` (websocket): the query's new entries, polled from the store every
/// second, as `{"streams":[...],"dropped_entries":null}` messages.
async fn tail(State(s): State<AppState>, RawQuery(q): RawQuery, ws: WebSocketUpgrade) -> Response {
    let p = Params::new(q, &HeaderMap::new(), &[]);
    let query = p.get("query").unwrap_or_default().to_string();
    if let Err(e) = logql::parse(&query) {
        return ApiError::bad(e.to_string()).into_response();
    }
    let limit = match p.limit(100) {
        Ok(l) => l,
        Err(e) => return e.into_response(),
    };
    let delay = p.get("delay_for").and_then(|d| d.parse::<i64>().ok()).unwrap_or(0).clamp(0, 5) * NS;
    let start = match p.time("start", now_ns() - 3600 * NS) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    ws.on_upgrade(move |socket| tail_loop(s, socket, query, limit, start, delay))
}

async fn tail_loop(s: AppState, mut socket: WebSocket, query: String, limit: u32, mut from: i64, delay: i64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let end = now_ns() - delay;
        if end < from {
            continue;
        }
        let req = Request {
            query: query.clone(),
            start_ns: from,
            end_ns: end + 1,
            step_ns: NS,
            instant: false,
            limit,
            direction: Direction::Forward,
            interval_ns: 0,
        };
        let eng = engine(&s);
        let r = blocking(&s, move |st| eng.execute(st.log_store(), &req).map_err(ApiError::from)).await;
        let streams = match r {
            Ok(resp) => match resp.data {
                Data::Streams(st) => st,
                _ => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            Err(e) => {
                let _ = socket.send(Message::Text(e.1.into())).await;
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        };
        let newest = streams.iter().flat_map(|s| s.entries.iter().map(|e| e.ts_ns)).max();
        if let Some(t) = newest {
            from = t + 1;
            let msg = json!({"streams": encode_streams(&streams, false), "dropped_entries": null});
            if socket.send(Message::Text(msg.to_string().into())).await.is_err() {
                return;
            }
        } else {
            from = from.max(end.saturating_sub(60 * NS));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// push

/// `POST /loki/api/v1/push`: snappy protobuf or JSON (gzip allowed); 204 on success.
async fn push(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let refuse = |status: StatusCode, reason: RequestReject, msg: String| {
        s.pipeline.telemetry.request_rejected(Signal::Logs, Protocol::LokiPush, reason, &msg);
        ApiError(status, msg).into_response()
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("application/json"));
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" => true,
        Some(e) => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                RequestReject::UnsupportedMediaType,
                format!("unsupported Content-Encoding {e:?}"),
            );
        }
    };
    let max = s.limits.max_request_bytes;
    let too_large = format!("request body larger than limits.max_request_bytes = {max}");
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > drain_cap(max)) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, RequestReject::TooLarge, too_large);
    }
    let permit = match s.pipeline.admit() {
        Ok(p) => p,
        Err(e) => {
            let (status, reason) = (pipeline_status(&e), e.reason());
            return refuse(status, reason, e.to_string());
        }
    };
    let wire = match tokio::time::timeout(s.limits.body_timeout, read_body(body, max)).await {
        Err(_) => {
            return refuse(StatusCode::REQUEST_TIMEOUT, RequestReject::BodyTimeout, "request body timed out".into());
        }
        Ok(Err(BodyError::TooLarge)) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, RequestReject::TooLarge, too_large);
        }
        Ok(Err(BodyError::Read(e))) => {
            return refuse(StatusCode::BAD_REQUEST, RequestReject::Malformed, format!("error reading body: {e}"));
        }
        Ok(Ok(b)) => b,
    };
    let wire_bytes = wire.len();
    let body = if gzip {
        match gunzip(&wire, max) {
            Ok(b) => b,
            Err(GunzipError::TooLarge) => {
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, RequestReject::TooLarge, too_large);
            }
            Err(GunzipError::Invalid(e)) => {
                return refuse(StatusCode::BAD_REQUEST, RequestReject::Malformed, format!("invalid gzip body: {e}"));
            }
        }
    } else {
        wire
    };
    let limits = s.loki.push.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let req =
            if json { ingest::loki_push::decode_json(&body)? } else { ingest::loki_push::decode_protobuf(&body, max)? };
        ingest::loki_push::map(req, &limits, now_ns())
    })
    .await;
    let pushed = match decoded {
        Ok(Ok(p)) => p,
        Ok(Err(ingest::loki_push::PushError::Malformed(m))) => {
            return refuse(StatusCode::BAD_REQUEST, RequestReject::Malformed, m);
        }
        Ok(Err(ingest::loki_push::PushError::TooManyStreams(m))) => {
            return refuse(StatusCode::TOO_MANY_REQUESTS, RequestReject::Saturated, m);
        }
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                RequestReject::StorageError,
                format!("push task failed: {e}"),
            );
        }
    };
    let validation = pushed.error.clone();
    let outcome = Outcome {
        accepted: pushed.accepted,
        rejected: pushed.rejected,
        reasons: Vec::new(),
        message: pushed.error.clone().unwrap_or_default(),
    };
    let batch = pushed.batch;
    let r = s
        .pipeline
        .write_mapped(Signal::Logs, Protocol::LokiPush, wire_bytes, started, permit, move |_now| {
            Ok((WriteBatch::Logs(batch), outcome))
        })
        .await;
    match r {
        Ok(_) => match validation {
            Some(m) => ApiError::bad(m).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Err(e) => {
            let mut resp = ApiError(pipeline_status(&e), e.to_string()).into_response();
            if matches!(e.class(), ErrorClass::Saturated | ErrorClass::Unavailable) {
                resp.headers_mut().insert(header::RETRY_AFTER, crate::pipeline::RETRY_AFTER_SECS.into());
            }
            resp
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_loki() {
        // Up to 10 digits is seconds (Loki), so Grafana's health-check time=4000000000 is 4e9 s.
        assert_eq!(parse_time("4000000000"), Some(4_000_000_000 * NS));
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000 * NS));
        assert_eq!(parse_time("1700000000123456789"), Some(1_700_000_000_123_456_789));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000 * NS));
        assert_eq!(parse_time("x"), None);
        assert_eq!(parse_duration("15000ms"), Some(15 * NS));
        assert_eq!(parse_duration("1m30s"), Some(90 * NS));
        assert_eq!(parse_duration("2.5"), Some(2_500_000_000));
        assert_eq!(parse_duration("1x"), None);
    }

    #[test]
    fn sample_encoding() {
        assert_eq!(sample_time(4 * NS).to_string(), "4");
        assert_eq!(sample_time(1_700_000_000_123_456_789).to_string(), "1700000000.123");
        assert_eq!(sample_value(2.0), json!("2"));
        assert_eq!(sample_value(0.1), json!("0.1"));
        assert_eq!(sample_value(f64::NEG_INFINITY), json!("-Inf"));
    }

    #[test]
    fn leading_selector_skips_strings() {
        assert_eq!(leading_selector(r#"{a="}"} |= "x""#), Some(r#"{a="}"}"#));
        assert_eq!(leading_selector("sum(count_over_time({a=`b`}[1m]))"), Some("{a=`b`}"));
    }
}

//! The Prometheus HTTP API (`/api/v1/*`) and remote write (`/api/v1/write`), as Grafana's
//! Prometheus datasource and Prometheus' own clients use them (`grafana-contracts.md` §1).
//!
//! Invariants:
//! - Every endpoint answers GET and form-encoded POST, reading parameters from the body and the URL
//!   query alike ([`params::Params`]).
//! - Every answer is the Prometheus JSON envelope; errors map to `errorType` and status in one
//!   place ([`ApiError`]): 400 `bad_data`, 422 `execution`, 503 `timeout`/`unavailable`,
//!   499 `canceled`, 500 `internal`.
//! - Queries run on the blocking pool, at most `query.max_concurrency` at once, under a deadline.

mod json;
pub mod params;
mod write;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use query::promql::{Engine, EngineOptions, QueryError};
use storage::Matcher;
use storage::Reader;
use storage::Storage;
use tokio::sync::Semaphore;

use crate::config::QueryConfig;
use crate::http::AppState;
use params::{MAX_TIME_MS, MIN_TIME_MS, Params};

/// The version reported by `/api/v1/status/buildinfo`: the Prometheus API level Outpost speaks,
/// which Grafana uses to pick features.
pub const PROMETHEUS_VERSION: &str = "2.53.0";

/// Largest accepted query-API request body (a long query in a form body).
const MAX_FORM_BYTES: usize = 4 << 20;

/// State shared by the Prometheus API handlers.
pub struct PromState {
    /// Engine options and limits.
    pub config: QueryConfig,
    /// Bounds concurrent query evaluations.
    gate: Arc<Semaphore>,
    /// Process start, for `status/runtimeinfo`.
    started: SystemTime,
    /// Scrape targets, for `/api/v1/targets`.
    targets: Arc<crate::scrape::Targets>,
}

impl PromState {
    /// State for `config`.
    pub fn new(config: QueryConfig, targets: Arc<crate::scrape::Targets>) -> PromState {
        let gate = Arc::new(Semaphore::new(config.max_concurrency));
        PromState { config, gate, started: SystemTime::now(), targets }
    }

    fn engine(&self) -> Engine {
        Engine::new(EngineOptions {
            lookback_delta_ms: i64::try_from(self.config.lookback_delta.as_millis()).unwrap_or(i64::MAX),
            max_samples: self.config.max_samples,
            timeout: self.config.timeout,
        })
    }
}

/// This family's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/query", get(instant_query).post(instant_query))
        .route("/api/v1/query_range", get(range_query).post(range_query))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values).post(label_values))
        .route("/api/v1/metadata", get(metadata).post(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo).post(buildinfo))
        .route("/api/v1/status/tsdb", get(tsdb_status).post(tsdb_status))
        .route("/api/v1/status/flags", get(flags).post(flags))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo).post(runtimeinfo))
        .route("/api/v1/status/config", get(config_status).post(config_status))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/targets", get(targets).post(targets))
        .route("/api/v1/rules", get(rules).post(rules))
        .route("/api/v1/alerts", get(alerts).post(alerts))
        .route("/api/v1/write", post(write::remote_write))
}

/// A Prometheus API error: `errorType`, HTTP status and message.
#[derive(Debug)]
pub struct ApiError {
    kind: &'static str,
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(kind: &'static str, message: impl Into<String>) -> ApiError {
        let status = match kind {
            "bad_data" => StatusCode::BAD_REQUEST,
            "execution" => StatusCode::UNPROCESSABLE_ENTITY,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "timeout" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "not_found" => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { kind, status, message: message.into() }
    }

    fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError::new("bad_data", message)
    }

    fn param(name: &str, e: String) -> ApiError {
        ApiError::bad_data(format!("invalid parameter {name:?}: {e}"))
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new("internal", message)
    }

    fn unavailable() -> ApiError {
        ApiError::new("unavailable", "the metrics store is not ready yet (replaying the write-ahead log)")
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        let kind = match e.error_type() {
            "bad_data" => "bad_data",
            "execution" => "execution",
            "timeout" => "timeout",
            "canceled" => "canceled",
            "unavailable" => "unavailable",
            "not_found" => "not_found",
            _ => "internal",
        };
        ApiError::new(kind, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = String::from("{\"status\":\"error\",\"errorType\":");
        json::string(&mut body, self.kind);
        body.push_str(",\"error\":");
        json::string(&mut body, &self.message);
        body.push('}');
        (self.status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// A success answer around encoded `data`.
fn ok(data: &str, warnings: &[String]) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json::success(data, warnings)).into_response()
}

type ApiResult = Result<Response, ApiError>;

/// Reads parameters from the URL and, for a form-encoded (or untyped) body, from the body.
async fn read_params(req: Request) -> Result<Params, ApiError> {
    let (parts, body) = req.into_parts();
    let form = is_form(&parts.headers);
    let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|e| ApiError::bad_data(format!("error reading the request body: {e}")))?;
    let body = (form && !body.is_empty()).then_some(&body[..]);
    Ok(Params::parse(parts.uri.query(), body))
}

fn is_form(h: &HeaderMap) -> bool {
    match h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(ct) => ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"),
    }
}

fn store(s: &AppState) -> Result<Arc<Storage>, ApiError> {
    s.pipeline.storage().cloned().ok_or_else(ApiError::unavailable)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, ApiError> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => params::parse_time(v).map_err(|e| ApiError::param(name, e)),
    }
}

/// The query deadline: the configured timeout, shortened by a `timeout` parameter.
fn timeout_param(p: &Params, config: &QueryConfig) -> Result<Duration, ApiError> {
    match p.get("timeout") {
        None => Ok(config.timeout),
        Some(v) => {
            let ms = params::parse_duration_ms(v).map_err(|e| ApiError::param("timeout", e))?;
            if ms <= 0 {
                return Ok(config.timeout);
            }
            Ok(Duration::from_millis(ms as u64).min(config.timeout))
        }
    }
}

fn limit_param(p: &Params) -> Result<Option<usize>, ApiError> {
    match p.get("limit") {
        None => Ok(None),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n < 0 => Err(ApiError::param("limit", "limit must be non-negative".into())),
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(n as usize)),
            Err(_) => Err(ApiError::param("limit", format!("cannot parse {v:?} to a valid limit"))),
        },
    }
}

/// Runs `f` on the blocking pool once a query slot is free.
async fn run_blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit =
        Arc::clone(&s.prom.gate).acquire_owned().await.map_err(|_| ApiError::new("unavailable", "shutting down"))?;
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| Err(ApiError::internal(format!("query task failed: {e}"))))
}

fn encode_result(r: query::promql::QueryResult) -> (String, Vec<String>) {
    let mut data = String::new();
    json::value(&mut data, &r.value);
    (data, r.warnings)
}

/// `/api/v1/query`
async fn instant_query(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let t = time_param(&p, "time", now_ms())?;
    let timeout = timeout_param(&p, &s.prom.config)?;
    let q = p.get("query").unwrap_or("").to_string();
    let store = store(&s)?;
    let prom = Arc::clone(&s.prom);
    let (data, warnings) = run_blocking(&s, move || {
        // A query that does not parse is an invalid parameter here (not on `query_range`), as in
        // Prometheus 2.42.
        let r = prom.engine().instant_query(store.metric_store(), &q, t, Some(timeout)).map_err(|e| match e {
            QueryError::Parse(m) => ApiError::param("query", m),
            e => ApiError::from(e),
        })?;
        Ok(encode_result(r))
    })
    .await?;
    Ok(ok(&data, &warnings))
}

/// `/api/v1/query_range`
async fn range_query(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let start = params::parse_time(p.get("start").unwrap_or("")).map_err(|e| ApiError::param("start", e))?;
    let end = params::parse_time(p.get("end").unwrap_or("")).map_err(|e| ApiError::param("end", e))?;
    if end < start {
        return Err(ApiError::param("end", "end timestamp must not be before start time".into()));
    }
    let step = params::parse_duration_ms(p.get("step").unwrap_or("")).map_err(|e| ApiError::param("step", e))?;
    if step <= 0 {
        return Err(ApiError::param(
            "step",
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    let max_points = s.prom.config.max_points_per_series;
    if ((end - start) / step) as u128 > max_points as u128 {
        return Err(ApiError::bad_data(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            thousands(max_points)
        )));
    }
    let timeout = timeout_param(&p, &s.prom.config)?;
    let q = p.get("query").unwrap_or("").to_string();
    let store = store(&s)?;
    let prom = Arc::clone(&s.prom);
    let (data, warnings) = run_blocking(&s, move || {
        let r = prom.engine().range_query(store.metric_store(), &q, start, end, step, Some(timeout))?;
        Ok(encode_result(r))
    })
    .await?;
    Ok(ok(&data, &warnings))
}

/// `11000` → `11,000`, as Go's message prints it.
fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The matcher sets of the `match[]` parameters. `named`: a selector that does not parse is
/// refused as `invalid parameter "match[]": …` (`/api/v1/series`), otherwise with the parse error
/// alone (`/labels`, `/label/<name>/values`), as Prometheus 2.42 words them.
fn match_params(p: &Params, named: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    p.all("match[]")
        .into_iter()
        .filter(|m| !m.is_empty())
        .map(|m| {
            query::promql::parse_selector(m).map_err(|e| match e {
                QueryError::Parse(m) if named => ApiError::param("match[]", m),
                e => ApiError::from(e),
            })
        })
        .collect()
}

/// `/api/v1/series`
async fn series(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let sets = match_params(&p, true)?;
    if sets.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = time_param(&p, "start", MIN_TIME_MS)?;
    let end = time_param(&p, "end", MAX_TIME_MS)?;
    let limit = limit_param(&p)?;
    let store = store(&s)?;
    let (data, warnings) = run_blocking(&s, move || {
        let reader = store.metric_store();
        let mut all = Vec::new();
        for set in &sets {
            all.extend(reader.series_matching(set, start, end));
        }
        let warnings = sorted_unique_limited(&mut all, limit);
        let mut data = String::from("[");
        for (i, l) in all.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            json::labels(&mut data, l);
        }
        data.push(']');
        Ok((data, warnings))
    })
    .await?;
    Ok(ok(&data, &warnings))
}

/// Sorts and deduplicates `v` and cuts it to `limit`, returning Prometheus' truncation warning
/// when it had to cut.
fn sorted_unique_limited<T: Ord>(v: &mut Vec<T>, limit: Option<usize>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    match limit {
        Some(l) if v.len() > l => {
            v.truncate(l);
            vec!["results truncated due to limit".to_string()]
        }
        _ => Vec::new(),
    }
}

/// Sorted, deduplicated, limited strings as a data array with the truncation warning.
fn string_list(mut v: Vec<String>, limit: Option<usize>) -> (String, Vec<String>) {
    let warnings = sorted_unique_limited(&mut v, limit);
    (json::string_array(v.iter().map(String::as_str)), warnings)
}

/// `/api/v1/labels`
async fn labels(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let sets = match_params(&p, false)?;
    let start = time_param(&p, "start", MIN_TIME_MS)?;
    let end = time_param(&p, "end", MAX_TIME_MS)?;
    let limit = limit_param(&p)?;
    let store = store(&s)?;
    let (data, warnings) = run_blocking(&s, move || {
        let reader = store.metric_store();
        let names = if sets.is_empty() {
            reader.label_names(&[], start, end)
        } else {
            sets.iter().flat_map(|set| reader.label_names(set, start, end)).collect()
        };
        Ok(string_list(names, limit))
    })
    .await?;
    Ok(ok(&data, &warnings))
}

/// `/api/v1/label/{name}/values`
async fn label_values(State(s): State<AppState>, Path(name): Path<String>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let name = unescape_label_name(&name);
    if name.is_empty() {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let sets = match_params(&p, false)?;
    let start = time_param(&p, "start", MIN_TIME_MS)?;
    let end = time_param(&p, "end", MAX_TIME_MS)?;
    let limit = limit_param(&p)?;
    let store = store(&s)?;
    let (data, warnings) = run_blocking(&s, move || {
        let reader = store.metric_store();
        let values = if sets.is_empty() {
            reader.label_values(&name, &[], start, end)
        } else {
            sets.iter().flat_map(|set| reader.label_values(&name, set, start, end)).collect()
        };
        Ok(string_list(values, limit))
    })
    .await?;
    Ok(ok(&data, &warnings))
}

/// Grafana escapes label names that are not legacy identifiers as `U__` followed by the name with
/// `_xx_` hex escapes (Prometheus 3's value-encoding escaping); legacy names pass unchanged.
fn unescape_label_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("U__") else { return name.to_string() };
    let mut out = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let hex: String = chars.by_ref().take_while(|c| *c != '_').collect();
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(ch) => out.push(ch),
            None => return name.to_string(),
        }
    }
    out
}

/// `/api/v1/metadata`
async fn metadata(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let limit = limit_param(&p)?;
    let per_metric = match p.get("limit_per_metric") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return Err(ApiError::param("limit_per_metric", format!("cannot parse {v:?}"))),
        },
    };
    let metric = p.get("metric").map(str::to_string);
    let store = store(&s)?;
    let data = run_blocking(&s, move || {
        let mut out = String::from("{");
        let mut n = 0;
        for m in store.metric_store().metadata() {
            if metric.as_deref().is_some_and(|want| want != m.metric_family) {
                continue;
            }
            if limit.is_some_and(|l| n >= l) {
                break;
            }
            if n > 0 {
                out.push(',');
            }
            n += 1;
            json::string(&mut out, &m.metric_family);
            out.push_str(":[{\"type\":");
            json::string(&mut out, m.metric_type.as_str());
            out.push_str(",\"help\":");
            json::string(&mut out, &m.help);
            out.push_str(",\"unit\":");
            json::string(&mut out, &m.unit);
            out.push_str("}]");
            let _ = per_metric; // One entry per family is stored, so any per-metric limit ≥ 1 holds.
        }
        out.push('}');
        Ok(out)
    })
    .await?;
    Ok(ok(&data, &[]))
}

/// `/api/v1/query_exemplars`
async fn query_exemplars(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let start = match p.get("start") {
        None => MIN_TIME_MS,
        Some(v) => params::parse_time_lenient(v).map_err(|e| ApiError::param("start", e))?,
    };
    let end = match p.get("end") {
        None => now_ms(),
        Some(v) => params::parse_time_lenient(v).map_err(|e| ApiError::param("end", e))?,
    };
    if end < start {
        return Err(ApiError::param("end", "end timestamp must not be before start time".into()));
    }
    let q = p.get("query").unwrap_or("").to_string();
    let sets = selectors_of(&q)?;
    let store = store(&s)?;
    let data = run_blocking(&s, move || {
        let reader = store.metric_store();
        let mut found: Vec<(storage::model::Labels, Vec<storage::model::Exemplar>)> = Vec::new();
        for set in &sets {
            for ts in reader.select_matching(set, start, end) {
                if !ts.exemplars.is_empty() {
                    found.push((ts.labels, ts.exemplars));
                }
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        let mut out = String::from("[");
        for (i, (labels, exemplars)) in found.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"seriesLabels\":");
            json::labels(&mut out, labels);
            out.push_str(",\"exemplars\":[");
            for (j, e) in exemplars.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str("{\"labels\":");
                json::labels(&mut out, &e.labels);
                out.push_str(",\"value\":");
                json::float(&mut out, e.value);
                out.push_str(",\"timestamp\":");
                json::timestamp(&mut out, e.timestamp_ms);
                out.push('}');
            }
            out.push_str("]}");
        }
        out.push(']');
        Ok(out)
    })
    .await?;
    Ok(ok(&data, &[]))
}

/// The matcher sets of every vector selector in a PromQL expression (what `query_exemplars`
/// looks at, as in Prometheus).
fn selectors_of(q: &str) -> Result<Vec<Vec<Matcher>>, ApiError> {
    use promql_parser::label::MatchOp as PMatchOp;
    use promql_parser::parser::{Expr, VectorSelector};
    use promql_parser::util::{ExprVisitor, walk_expr};
    use storage::MatchOp;

    struct Collect(Vec<VectorSelector>);
    impl ExprVisitor for Collect {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
            match e {
                Expr::VectorSelector(vs) => self.0.push(vs.clone()),
                Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
                _ => {}
            }
            Ok(true)
        }
    }
    let expr = query::promql::parse(q).map_err(ApiError::from)?;
    let mut c = Collect(Vec::new());
    let _ = walk_expr(&mut c, &expr);
    let convert = |m: &promql_parser::label::Matcher| -> Result<Matcher, ApiError> {
        let (op, value) = match &m.op {
            PMatchOp::Equal => (MatchOp::Equal, m.value.clone()),
            PMatchOp::NotEqual => (MatchOp::NotEqual, m.value.clone()),
            PMatchOp::Re(_) => (MatchOp::Regex, m.value.clone()),
            PMatchOp::NotRe(_) => (MatchOp::NotRegex, m.value.clone()),
        };
        Matcher::new(m.name.clone(), op, value).map_err(|e| ApiError::bad_data(e.to_string()))
    };
    let mut sets = Vec::new();
    for vs in c.0 {
        let mut base = Vec::new();
        if let Some(name) = &vs.name {
            base.push(Matcher::eq("__name__", name.clone()));
        }
        let groups: Vec<&Vec<promql_parser::label::Matcher>> = if vs.matchers.or_matchers.is_empty() {
            vec![&vs.matchers.matchers]
        } else {
            vs.matchers.or_matchers.iter().collect()
        };
        for g in groups {
            let mut set = base.clone();
            for m in g {
                set.push(convert(m)?);
            }
            sets.push(set);
        }
    }
    Ok(sets)
}

/// `/api/v1/status/buildinfo`. No `features` key: Grafana would take us for Mimir.
async fn buildinfo() -> Response {
    let data = format!(
        "{{\"version\":\"{PROMETHEUS_VERSION}\",\"revision\":\"outpost-{}\",\"branch\":\"\",\"buildUser\":\"\",\
         \"buildDate\":\"\",\"goVersion\":\"\"}}",
        env!("CARGO_PKG_VERSION")
    );
    ok(&data, &[])
}

/// `/api/v1/status/tsdb`
async fn tsdb_status(State(s): State<AppState>, req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let limit = match p.get("limit") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err(ApiError::param("limit", "limit must be a positive number".into())),
        },
    };
    let store = store(&s)?;
    let data = run_blocking(&s, move || {
        let st = store.metric_store().stats(limit);
        let list = |out: &mut String, v: &[(String, u64)]| {
            out.push('[');
            for (i, (name, n)) in v.iter().take(limit).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"name\":");
                json::string(out, name);
                out.push_str(&format!(",\"value\":{n}}}"));
            }
            out.push(']');
        };
        let mut out = format!(
            "{{\"headStats\":{{\"numSeries\":{},\"numLabelPairs\":{},\"chunkCount\":0,\"minTime\":{},\"maxTime\":{}}}",
            st.head_series,
            st.series_count_by_label_value_pair.len(),
            st.head_min_time_ms.unwrap_or(i64::MAX),
            st.head_max_time_ms.unwrap_or(i64::MIN),
        );
        out.push_str(",\"seriesCountByMetricName\":");
        list(&mut out, &st.series_count_by_metric_name);
        out.push_str(",\"labelValueCountByLabelName\":");
        list(&mut out, &st.label_value_count_by_label_name);
        out.push_str(",\"memoryInBytesByLabelName\":[]");
        out.push_str(",\"seriesCountByLabelValuePair\":");
        list(&mut out, &st.series_count_by_label_value_pair);
        out.push('}');
        Ok(out)
    })
    .await?;
    Ok(ok(&data, &[]))
}

/// `/api/v1/status/flags`: Outpost's query settings under the Prometheus flag names.
async fn flags(State(s): State<AppState>) -> Response {
    let c = &s.prom.config;
    let pairs = [
        ("query.lookback-delta", humantime::format_duration(c.lookback_delta).to_string()),
        ("query.timeout", humantime::format_duration(c.timeout).to_string()),
        ("query.max-samples", c.max_samples.to_string()),
        ("query.max-concurrency", c.max_concurrency.to_string()),
        ("web.enable-remote-write-receiver", "true".to_string()),
    ];
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::string(&mut out, k);
        out.push(':');
        json::string(&mut out, v);
    }
    out.push('}');
    ok(&out, &[])
}

/// `/api/v1/status/runtimeinfo`
async fn runtimeinfo(State(s): State<AppState>) -> Response {
    let started = s.prom.started.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
    let mut out = String::from("{\"startTime\":");
    json::string(&mut out, &humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(started)).to_string());
    out.push_str(",\"CWD\":");
    json::string(&mut out, &cwd);
    out.push_str(&format!(
        ",\"reloadConfigSuccess\":true,\"lastConfigTime\":\"{}\",\"corruptionCount\":0,\"goroutineCount\":0,\
         \"GOMAXPROCS\":{},\"GOMEMLIMIT\":0,\"GOGC\":\"\",\"GODEBUG\":\"\",\"storageRetention\":\"\"}}",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(started)),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    ok(&out, &[])
}

/// `/api/v1/status/config`: the query settings in the shape of a Prometheus YAML config.
async fn config_status(State(s): State<AppState>) -> Response {
    let mut yaml = String::from("global:\n");
    yaml.push_str(&format!(
        "  evaluation_interval: 1m\n  query_lookback_delta: {}\n",
        humantime::format_duration(s.prom.config.lookback_delta)
    ));
    let mut out = String::from("{\"yaml\":");
    json::string(&mut out, &yaml);
    out.push('}');
    ok(&out, &[])
}

/// `/api/v1/format_query`: the query pretty-printed (Grafana's "format query" button).
async fn format_query(req: Request) -> ApiResult {
    let p = read_params(req).await?;
    let q = p.get("query").unwrap_or("");
    let expr = query::promql::parse(q).map_err(|e| ApiError::param("query", e.to_string()))?;
    let mut data = String::new();
    json::string(&mut data, &expr.prettify());
    Ok(ok(&data, &[]))
}

/// `/api/v1/targets`: the scrape targets with their last scrape, in Prometheus' shape.
async fn targets(State(s): State<AppState>) -> Response {
    let mut out = String::from("{\"activeTargets\":[");
    for (i, t) in s.prom.targets.list().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let uri: Option<http::Uri> = t.url.parse().ok();
        let path = uri.as_ref().map(|u| u.path().to_string()).unwrap_or_default();
        let instance = t.labels.get("instance").unwrap_or("").to_string();
        let discovered = storage::model::Labels::from_pairs([
            ("__address__", instance.as_str()),
            ("__metrics_path__", path.as_str()),
            ("__scheme__", "http"),
            ("job", t.job.as_str()),
        ]);
        out.push_str("{\"discoveredLabels\":");
        json::labels(&mut out, &discovered);
        out.push_str(",\"labels\":");
        json::labels(&mut out, &t.labels);
        out.push_str(",\"scrapePool\":");
        json::string(&mut out, &t.job);
        out.push_str(",\"scrapeUrl\":");
        json::string(&mut out, &t.url);
        out.push_str(",\"globalUrl\":");
        json::string(&mut out, &t.url);
        let last = t.last();
        let (health, error, at, duration) = match &last {
            None => ("unknown", String::new(), UNIX_EPOCH, 0.0),
            Some(l) if l.error.is_empty() => ("up", String::new(), l.at, l.duration_s),
            Some(l) => ("down", l.error.clone(), l.at, l.duration_s),
        };
        out.push_str(",\"lastError\":");
        json::string(&mut out, &error);
        out.push_str(",\"lastScrape\":");
        json::string(&mut out, &humantime::format_rfc3339_millis(at).to_string());
        out.push_str(&format!(",\"lastScrapeDuration\":{duration}"));
        out.push_str(",\"health\":");
        json::string(&mut out, health);
        out.push_str(",\"scrapeInterval\":");
        json::string(&mut out, &humantime::format_duration(t.interval).to_string());
        out.push_str(",\"scrapeTimeout\":");
        json::string(&mut out, &humantime::format_duration(t.timeout).to_string());
        out.push('}');
    }
    out.push_str("],\"droppedTargets\":[]}");
    ok(&out, &[])
}

/// `/api/v1/rules`: no rules are configured yet.
async fn rules() -> Response {
    ok("{\"groups\":[]}", &[])
}

/// `/api/v1/alerts`: no alerting rules are configured yet.
async fn alerts() -> Response {
    ok("{\"alerts\":[]}", &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_and_escapes() {
        assert_eq!(thousands(11000), "11,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(unescape_label_name("job"), "job");
        assert_eq!(unescape_label_name("U__service_2e_name"), "service.name");
        assert_eq!(unescape_label_name("U__a__b"), "a_b");
    }

    #[test]
    fn exemplar_selectors() {
        let sets = selectors_of("histogram_quantile(0.9, sum(rate(x_bucket{a=\"1\"}[5m])) by (le)) / y").unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].len(), 2);
        assert!(selectors_of("test").is_ok());
        assert!(selectors_of("1+").is_err());
    }
}

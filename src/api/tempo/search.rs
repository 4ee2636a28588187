//! TraceQL search (`/api/search`, `/api/v2/search`) and TraceQL metrics
//! (`/api/metrics/query_range`, `/api/metrics/query`), answered in Tempo's protojson shapes:
//! uint64 fields as strings, uint32 fields as numbers, empty fields left out.

use std::time::Instant;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use query::traceql::{self, MetricsSeries, SearchRequest, SearchResponse, SpanSet};
use serde_json::{Map, Value, json};
use storage::Reader;
use storage::model::AnyValue;

use super::{QUERY_TIMEOUT, TempoError, blocking, param, params, store, time_param};
use crate::http::AppState;

/// Tempo's defaults.
const DEFAULT_LIMIT: usize = 20;
const DEFAULT_SPSS: usize = 3;
const MAX_LIMIT: usize = 10_000;

fn map_error(e: traceql::Error) -> TempoError {
    match e {
        traceql::Error::Parse(p) => TempoError::bad(format!("invalid TraceQL query: {p}")),
        traceql::Error::Limit(m) => TempoError::bad(format!("query limit exceeded: {m}")),
        traceql::Error::Timeout => TempoError(StatusCode::GATEWAY_TIMEOUT, "query timed out".into()),
        traceql::Error::Execution(m) => TempoError(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// A Go-style duration: `100ms`, `1.5s`, `2m`, `1h30m`, `250us`, `10ns`; a bare number is seconds.
pub(crate) fn parse_go_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some((secs * 1e9) as i64);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total <= i64::MAX as f64).then_some(total as i64)
}

fn quote(v: &str) -> String {
    let mut out = String::from("\"");
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The legacy `tags` parameter (logfmt `k=v k2="v 2"`) as a TraceQL spanset filter.
pub(crate) fn tags_to_traceql(tags: &str) -> Result<String, TempoError> {
    let mut conds = Vec::new();
    let mut rest = tags.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| TempoError::bad(format!("invalid tags: {tags:?}")))?;
        let key = rest[..eq].trim();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').ok_or_else(|| TempoError::bad(format!("invalid tags: {tags:?}")))?;
            value = r[..end].to_owned();
            rest = r[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = rest[end..].trim_start();
        }
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == '"') {
            return Err(TempoError::bad(format!("invalid tags: {tags:?}")));
        }
        conds.push(match key {
            "name" => format!("name = {}", quote(&value)),
            "status.code" => format!("status = {}", value.trim_start_matches("STATUS_CODE_").to_ascii_lowercase()),
            "service.name" => format!("resource.service.name = {}", quote(&value)),
            k => format!(".{k} = {}", quote(&value)),
        });
    }
    Ok(if conds.is_empty() { "{}".into() } else { format!("{{ {} }}", conds.join(" && ")) })
}

pub(crate) fn any_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::Empty => json!({}),
        AnyValue::String(s) => json!({ "stringValue": s }),
        AnyValue::Bool(b) => json!({ "boolValue": b }),
        AnyValue::Int(i) => json!({ "intValue": i.to_string() }),
        AnyValue::Double(d) if d.is_finite() => json!({ "doubleValue": d }),
        AnyValue::Double(d) => json!({ "doubleValue": d.to_string() }),
        AnyValue::Bytes(b) => json!({ "bytesValue": hex::encode(b) }),
        AnyValue::Array(items) => json!({ "arrayValue": { "values": items.iter().map(any_json).collect::<Vec<_>>() } }),
        AnyValue::KvList(kvs) => {
            json!({ "kvlistValue": { "values": kvs.iter().map(|kv| attr_json(&kv.key, &kv.value)).collect::<Vec<_>>() } })
        }
    }
}

fn attr_json(key: &str, v: &AnyValue) -> Value {
    json!({ "key": key, "value": any_json(v) })
}

fn attrs_json(attrs: &[(String, AnyValue)]) -> Vec<Value> {
    attrs.iter().map(|(k, v)| attr_json(k, v)).collect()
}

fn spanset_json(ss: &SpanSet) -> Value {
    let spans: Vec<Value> = ss
        .spans
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("spanID".into(), json!(s.span_id.to_hex()));
            if !s.name.is_empty() {
                m.insert("name".into(), json!(s.name));
            }
            m.insert("startTimeUnixNano".into(), json!(s.start_time_ns.to_string()));
            m.insert("durationNanos".into(), json!(s.duration_ns.to_string()));
            if !s.attributes.is_empty() {
                m.insert("attributes".into(), Value::Array(attrs_json(&s.attributes)));
            }
            Value::Object(m)
        })
        .collect();
    let mut m = Map::new();
    m.insert("spans".into(), Value::Array(spans));
    m.insert("matched".into(), json!(ss.matched));
    if !ss.attributes.is_empty() {
        m.insert("attributes".into(), Value::Array(attrs_json(&ss.attributes)));
    }
    Value::Object(m)
}

/// The Tempo `SearchResponse` JSON of a result, keeping traces whose duration is within bounds.
pub(crate) fn search_json(r: &SearchResponse, min_ms: Option<u64>, max_ms: Option<u64>) -> Value {
    let traces: Vec<Value> = r
        .traces
        .iter()
        .filter(|t| min_ms.is_none_or(|m| t.duration_ms >= m) && max_ms.is_none_or(|m| t.duration_ms <= m))
        .map(|t| {
            let mut m = Map::new();
            m.insert("traceID".into(), json!(t.trace_id.to_hex()));
            if !t.root_service_name.is_empty() {
                m.insert("rootServiceName".into(), json!(t.root_service_name));
            }
            if !t.root_trace_name.is_empty() {
                m.insert("rootTraceName".into(), json!(t.root_trace_name));
            }
            m.insert("startTimeUnixNano".into(), json!(t.start_time_ns.to_string()));
            m.insert("durationMs".into(), json!(u32::try_from(t.duration_ms).unwrap_or(u32::MAX)));
            let sets: Vec<Value> = t.span_sets.iter().map(spanset_json).collect();
            if let Some(first) = sets.first() {
                m.insert("spanSet".into(), first.clone());
            }
            m.insert("spanSets".into(), Value::Array(sets));
            Value::Object(m)
        })
        .collect();
    json!({
        "traces": traces,
        "metrics": {
            "inspectedTraces": u32::try_from(r.inspected_traces).unwrap_or(u32::MAX),
            "inspectedSpans": r.inspected_spans.to_string(),
            "inspectedBytes": "0",
            "totalBlocks": 0,
        }
    })
}

fn usize_param(p: &[(String, String)], key: &str, default: usize) -> Result<usize, TempoError> {
    match param(p, key) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(default),
            Ok(n) => Ok(n),
            Err(_) => Err(TempoError::bad(format!("invalid {key}: {v:?}"))),
        },
    }
}

fn duration_ms_param(p: &[(String, String)], key: &str) -> Result<Option<u64>, TempoError> {
    param(p, key)
        .map(|v| {
            parse_go_duration(v)
                .map(|ns| (ns / 1_000_000) as u64)
                .ok_or_else(|| TempoError::bad(format!("invalid {key}: {v:?}")))
        })
        .transpose()
}

/// `GET /api/search` and `/api/v2/search`.
pub(super) async fn search(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, TempoError> {
    let p = params(raw);
    let query = match (param(&p, "q"), param(&p, "tags")) {
        (Some(q), _) => q.to_owned(),
        (None, Some(tags)) => tags_to_traceql(tags)?,
        (None, None) => "{}".to_owned(),
    };
    let limit = usize_param(&p, "limit", DEFAULT_LIMIT)?.min(MAX_LIMIT);
    let spss = usize_param(&p, "spss", DEFAULT_SPSS)?;
    let start_ns = time_param(&p, "start")?.unwrap_or(0);
    let end_ns = time_param(&p, "end")?.filter(|&e| e > 0).unwrap_or(i64::MAX);
    if start_ns > end_ns {
        return Err(TempoError::bad("invalid time range: start is after end"));
    }
    let min_ms = duration_ms_param(&p, "minDuration")?;
    let max_ms = duration_ms_param(&p, "maxDuration")?;
    // Fail fast on a bad query, before waiting for the store.
    traceql::parse(&query).map_err(|e| map_error(traceql::Error::Parse(e)))?;
    let store = store(&state)?;
    blocking(move || {
        let req = SearchRequest { query, start_ns, end_ns, limit, spans_per_spanset: spss };
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let r = traceql::search(store.trace_store(), &req, deadline).map_err(map_error)?;
        Ok(Json(search_json(&r, min_ms, max_ms)))
    })
    .await
}

fn series_labels(s: &MetricsSeries) -> (Vec<Value>, String) {
    let labels = s.labels.iter().map(|(k, v)| attr_json(k, v)).collect();
    let prom = s.labels.iter().map(|(k, v)| format!("{k}={:?}", v.to_label_string())).collect::<Vec<_>>().join(", ");
    (labels, format!("{{{prom}}}"))
}

struct MetricsParams {
    query: String,
    start_ns: i64,
    end_ns: i64,
    step_ns: Option<i64>,
}

fn metrics_params(raw: Option<String>) -> Result<MetricsParams, TempoError> {
    let p = params(raw);
    let query = param(&p, "q").or_else(|| param(&p, "query")).ok_or_else(|| TempoError::bad("missing q"))?.to_owned();
    let now = crate::pipeline::now_ns();
    let end_ns = time_param(&p, "end")?.filter(|&e| e > 0).unwrap_or(now);
    let start_ns = time_param(&p, "start")?.filter(|&s| s > 0).unwrap_or(end_ns.saturating_sub(3600 * 1_000_000_000));
    if start_ns > end_ns {
        return Err(TempoError::bad("invalid time range: start is after end"));
    }
    let step_ns = param(&p, "step")
        .map(|v| parse_go_duration(v).filter(|&n| n > 0).ok_or_else(|| TempoError::bad(format!("invalid step: {v:?}"))))
        .transpose()?;
    traceql::parse(&query).map_err(|e| map_error(traceql::Error::Parse(e)))?;
    Ok(MetricsParams { query, start_ns, end_ns, step_ns })
}

/// `GET /api/metrics/query_range`: `tempopb.QueryRangeResponse`.
pub(super) async fn metrics_query_range(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, TempoError> {
    let mp = metrics_params(raw)?;
    // Tempo's default: about 100 points over the range, at least a second.
    let step = mp.step_ns.unwrap_or(((mp.end_ns - mp.start_ns) / 100).max(1_000_000_000));
    let store = store(&state)?;
    blocking(move || {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let series =
            traceql::metrics_query_range(store.trace_store(), &mp.query, mp.start_ns, mp.end_ns, step, deadline)
                .map_err(map_error)?;
        let out: Vec<Value> = series
            .iter()
            .map(|s| {
                let (labels, prom) = series_labels(s);
                let samples: Vec<Value> =
                    s.samples.iter().map(|(t, v)| json!({ "timestampMs": t.to_string(), "value": v })).collect();
                json!({ "labels": labels, "promLabels": prom, "samples": samples, "exemplars": [] })
            })
            .collect();
        Ok(Json(json!({ "series": out, "metrics": {} })))
    })
    .await
}

/// `GET /api/metrics/query`: `tempopb.QueryInstantResponse`, one value per series over the whole
/// range.
pub(super) async fn metrics_query_instant(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, TempoError> {
    let mp = metrics_params(raw)?;
    let store = store(&state)?;
    blocking(move || {
        let deadline = Instant::now() + QUERY_TIMEOUT;
        let series = traceql::metrics_query_instant(store.trace_store(), &mp.query, mp.start_ns, mp.end_ns, deadline)
            .map_err(map_error)?;
        let out: Vec<Value> = series
            .iter()
            .filter_map(|s| {
                let (labels, prom) = series_labels(s);
                s.samples.last().map(|(_, v)| json!({ "labels": labels, "promLabels": prom, "value": v }))
            })
            .collect();
        Ok(Json(json!({ "series": out, "metrics": {} })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("2"), Some(2_000_000_000));
        assert_eq!(parse_go_duration("5x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    #[test]
    fn legacy_tags_become_traceql() {
        assert_eq!(
            tags_to_traceql(r#"service.name=shop http.status_code="500" name=GET"#).unwrap(),
            r#"{ resource.service.name = "shop" && .http.status_code = "500" && name = "GET" }"#
        );
        assert_eq!(tags_to_traceql("").unwrap(), "{}");
        assert!(tags_to_traceql("novalue").is_err());
    }

    #[test]
    fn kv_helpers_are_protojson() {
        let v = attr_json("k", &AnyValue::Int(5));
        assert_eq!(v, json!({"key":"k","value":{"intValue":"5"}}));
    }
}

//! The tag browsers: attribute names by scope, and the values of one attribute, typed.
//!
//! Both read the traces of the requested window (default: the last 24 hours) newest first, as
//! Tempo's own tag search only looks at recent data, and only the spans the `q` filter matches (a
//! half-typed `q` filters nothing, as in Tempo): names from `query::traceql::tag_names`, which stops
//! after `MAX_SPANS_INSPECTED` spans or the query timeout, values from
//! `query::traceql::tag_values`; `limit` caps the answer (default 5000
//! names, 1000 values). v1 names are unscoped attributes (`service.name` → `.service.name`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};
use storage::Reader;

use super::{QUERY_TIMEOUT, TempoError, blocking, param, params, store, time_param};
use crate::http::AppState;

const MAX_SPANS_INSPECTED: usize = 500_000;
const DEFAULT_WINDOW_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Intrinsics as Tempo lists them in the `intrinsic` scope.
const INTRINSICS: &[&str] = &[
    "duration",
    "event:name",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "name",
    "rootName",
    "rootServiceName",
    "span:id",
    "span:parentID",
    "status",
    "statusMessage",
    "trace:id",
    "traceDuration",
];

fn window(p: &[(String, String)]) -> Result<(i64, i64), TempoError> {
    let now = crate::pipeline::now_ns();
    let end = time_param(p, "end")?.filter(|&e| e > 0).unwrap_or(now);
    let start = time_param(p, "start")?.filter(|&s| s > 0).unwrap_or(end.saturating_sub(DEFAULT_WINDOW_NS));
    if start > end {
        return Err(TempoError::bad("invalid time range: start is after end"));
    }
    Ok((start, end))
}

fn limit(p: &[(String, String)], default: usize) -> Result<usize, TempoError> {
    match param(p, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map(|n| if n == 0 { default } else { n })
            .map_err(|_| TempoError::bad(format!("invalid limit: {v:?}"))),
    }
}

/// Attribute names per scope on the spans `q` matches (all spans for an empty `q`).
fn collect_names(
    store: &dyn Reader,
    q: &str,
    start: i64,
    end: i64,
) -> Result<BTreeMap<&'static str, BTreeSet<String>>, TempoError> {
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let sets = query::traceql::tag_names(store.trace_store(), q, start, end, MAX_SPANS_INSPECTED, deadline)
        .map_err(query_error)?;
    Ok(query::traceql::NAME_SCOPES.into_iter().zip(sets).collect())
}

/// A query failure as Tempo reports it.
fn query_error(e: query::traceql::Error) -> TempoError {
    match e {
        query::traceql::Error::Parse(p) => TempoError::bad(p.to_string()),
        query::traceql::Error::Timeout => TempoError(axum::http::StatusCode::GATEWAY_TIMEOUT, "query timed out".into()),
        query::traceql::Error::Limit(m) => TempoError::bad(format!("query limit exceeded: {m}")),
        query::traceql::Error::Execution(m) => TempoError(axum::http::StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// `GET /api/search/tags`: `{"tagNames":[...]}` — resource and span attribute names.
pub(super) async fn tags_v1(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, TempoError> {
    let p = params(raw);
    let (start, end) = window(&p)?;
    let lim = limit(&p, 5000)?;
    let scope = param(&p, "scope").map(str::to_owned);
    let q = param(&p, "q").unwrap_or("").to_owned();
    let store = store(&state)?;
    blocking(move || {
        let names = collect_names(&*store, &q, start, end)?;
        let mut all: BTreeSet<String> = BTreeSet::new();
        for (sc, set) in &names {
            let wanted = match scope.as_deref() {
                None | Some("all") | Some("none") | Some("") => matches!(*sc, "resource" | "span"),
                Some(w) => w == *sc,
            };
            if wanted {
                all.extend(set.iter().cloned());
            }
        }
        Ok(Json(json!({ "tagNames": all.into_iter().take(lim).collect::<Vec<_>>() })))
    })
    .await
}

/// `GET /api/v2/search/tags`: `{"scopes":[{"name":..,"tags":[..]}]}`.
pub(super) async fn tags_v2(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, TempoError> {
    let p = params(raw);
    let (start, end) = window(&p)?;
    let lim = limit(&p, 5000)?;
    let scope = param(&p, "scope").map(str::to_owned);
    if let Some(s) = scope.as_deref()
        && !matches!(s, "all" | "none" | "intrinsic")
        && !query::traceql::NAME_SCOPES.contains(&s)
    {
        return Err(TempoError::bad(format!("invalid scope: {s:?}")));
    }
    let q = param(&p, "q").unwrap_or("").to_owned();
    let store = store(&state)?;
    blocking(move || {
        let wanted = |name: &str| match scope.as_deref() {
            None | Some("all") | Some("none") => true,
            Some(w) => w == name,
        };
        let mut scopes = Vec::new();
        if query::traceql::NAME_SCOPES.iter().any(|s| wanted(s)) {
            for (name, set) in collect_names(&*store, &q, start, end)? {
                if wanted(name) && !set.is_empty() {
                    scopes.push(json!({ "name": name, "tags": set.into_iter().take(lim).collect::<Vec<_>>() }));
                }
            }
        }
        if wanted("intrinsic") {
            scopes.push(json!({ "name": "intrinsic", "tags": INTRINSICS }));
        }
        Ok(Json(json!({ "scopes": scopes, "metrics": {} })))
    })
    .await
}

/// Distinct values of `tag` (a TraceQL attribute or intrinsic) on the spans `q` matches.
fn values(
    store: &dyn Reader,
    tag: &str,
    q: &str,
    start: i64,
    end: i64,
    limit: usize,
) -> Result<Vec<query::traceql::TagValue>, TempoError> {
    let deadline = Instant::now() + QUERY_TIMEOUT;
    query::traceql::tag_values(store.trace_store(), tag, q, start, end, limit, deadline).map_err(|e| match e {
        query::traceql::Error::Parse(p) => TempoError::bad(format!("invalid tag {tag:?}: {p}")),
        e => query_error(e),
    })
}

/// Intrinsics a v1 name may be; anything else is an unscoped attribute.
const V1_INTRINSICS: &[&str] = &["name", "status", "kind", "statusMessage", "rootName", "rootServiceName", "duration"];

/// `GET /api/search/tag/{name}/values`: `{"tagValues":["a","b"]}`.
pub(super) async fn values_v1(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, TempoError> {
    let p = params(raw);
    let (start, end) = window(&p)?;
    let lim = limit(&p, 1000)?;
    let store = store(&state)?;
    blocking(move || {
        let tag = if V1_INTRINSICS.contains(&name.as_str()) { name } else { format!(".{name}") };
        let values = values(&*store, &tag, "", start, end, lim)?;
        let mut strings: Vec<String> = values.into_iter().map(|t| t.value).collect();
        strings.sort();
        strings.dedup();
        Ok(Json(json!({ "tagValues": strings })))
    })
    .await
}

/// `GET /api/v2/search/tag/{scope.name}/values`: `{"tagValues":[{"type":..,"value":..}]}`.
pub(super) async fn values_v2(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, TempoError> {
    let p = params(raw);
    let (start, end) = window(&p)?;
    let lim = limit(&p, 1000)?;
    let q = param(&p, "q").unwrap_or("").to_owned();
    let store = store(&state)?;
    blocking(move || {
        let values = values(&*store, &name, &q, start, end, lim)?;
        let list: Vec<Value> = values.into_iter().map(|t| json!({ "type": t.type_name, "value": t.value })).collect();
        Ok(Json(json!({ "tagValues": list, "metrics": {} })))
    })
    .await
}

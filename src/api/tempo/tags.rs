//! The tag browsers: attribute names by scope, and the values of one attribute, typed.
//!
//! Both read the traces of the requested window (default: the last 24 hours) newest first and
//! stop after `MAX_SPANS_INSPECTED` spans or the query timeout, as Tempo's own tag search only
//! looks at recent data; `limit` caps the answer (default 5000 names, 1000 values).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};
use storage::model::{AnyValue, KeyValue, SpanKind, StatusCode};
use storage::{Reader, StoredSpan, TraceScan};

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

const SCOPES: &[&str] = &["resource", "span", "event", "link", "instrumentation"];

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

/// Visits every span of the window (bounded).
fn each_span(store: &dyn Reader, start: i64, end: i64, mut f: impl FnMut(&[StoredSpan], &StoredSpan)) {
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut seen = 0usize;
    let scan = TraceScan { start_ns: start, end_ns: end, ..TraceScan::default() };
    store.trace_store().scan_traces(&scan, &mut |spans| {
        for s in spans {
            f(spans, s);
        }
        seen += spans.len();
        seen < MAX_SPANS_INSPECTED && Instant::now() < deadline
    });
}

/// Attribute names per scope.
fn collect_names(store: &dyn Reader, start: i64, end: i64) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out: BTreeMap<&'static str, BTreeSet<String>> = SCOPES.iter().map(|s| (*s, BTreeSet::new())).collect();
    let mut last_resource: Option<*const storage::model::Resource> = None;
    each_span(store, start, end, |_, s| {
        let rp = std::sync::Arc::as_ptr(&s.resource);
        if last_resource != Some(rp) {
            last_resource = Some(rp);
            if let Some(set) = out.get_mut("resource") {
                set.extend(s.resource.attributes.iter().map(|kv| kv.key.clone()));
            }
            if let Some(set) = out.get_mut("instrumentation") {
                set.extend(s.scope.attributes.iter().map(|kv| kv.key.clone()));
            }
        }
        if let Some(set) = out.get_mut("span") {
            set.extend(s.span.attributes.iter().map(|kv| kv.key.clone()));
        }
        if let Some(set) = out.get_mut("event") {
            set.extend(s.span.events.iter().flat_map(|e| e.attributes.iter().map(|kv| kv.key.clone())));
        }
        if let Some(set) = out.get_mut("link") {
            set.extend(s.span.links.iter().flat_map(|l| l.attributes.iter().map(|kv| kv.key.clone())));
        }
    });
    out
}

/// `GET /api/search/tags`: `{"tagNames":[...]}` — resource and span attribute names.
pub(super) async fn tags_v1(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Result<Json<Value>, TempoError> {
    let p = params(raw);
    let (start, end) = window(&p)?;
    let lim = limit(&p, 5000)?;
    let scope = param(&p, "scope").map(str::to_owned);
    let store = store(&state)?;
    blocking(move || {
        let names = collect_names(&*store, start, end);
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
        && !SCOPES.contains(&s)
    {
        return Err(TempoError::bad(format!("invalid scope: {s:?}")));
    }
    let store = store(&state)?;
    blocking(move || {
        let wanted = |name: &str| match scope.as_deref() {
            None | Some("all") | Some("none") => true,
            Some(w) => w == name,
        };
        let mut scopes = Vec::new();
        if SCOPES.iter().any(|s| wanted(s)) {
            for (name, set) in collect_names(&*store, start, end) {
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

/// A typed value as the v2 values endpoint reports it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Typed {
    kind: &'static str,
    value: String,
}

fn typed(v: &AnyValue) -> Option<Typed> {
    let (kind, value) = match v {
        AnyValue::String(s) => ("string", s.clone()),
        AnyValue::Int(i) => ("int", i.to_string()),
        AnyValue::Double(d) => ("float", d.to_string()),
        AnyValue::Bool(b) => ("bool", b.to_string()),
        _ => return None,
    };
    Some(Typed { kind, value })
}

fn status_keyword(s: StatusCode) -> &'static str {
    match s {
        StatusCode::Unset => "unset",
        StatusCode::Ok => "ok",
        StatusCode::Error => "error",
    }
}

fn kind_keyword(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// Where a tag name points.
enum Target {
    Attr { scopes: &'static [&'static str], key: String },
    Intrinsic(String),
}

fn target(name: &str) -> Target {
    for (prefix, scopes) in [
        ("resource.", &["resource"][..]),
        ("span.", &["span"][..]),
        ("event.", &["event"][..]),
        ("link.", &["link"][..]),
        ("instrumentation.", &["instrumentation"][..]),
    ] {
        if let Some(key) = name.strip_prefix(prefix) {
            return Target::Attr { scopes, key: key.to_owned() };
        }
    }
    if let Some(key) = name.strip_prefix('.') {
        return Target::Attr { scopes: &["resource", "span"], key: key.to_owned() };
    }
    match name {
        "name"
        | "status"
        | "kind"
        | "statusMessage"
        | "rootName"
        | "rootServiceName"
        | "event:name"
        | "instrumentation:name"
        | "instrumentation:version" => Target::Intrinsic(name.to_owned()),
        // v1 names are unscoped attribute names.
        _ => Target::Attr { scopes: &["resource", "span"], key: name.to_owned() },
    }
}

fn find<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    kvs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn collect_values(store: &dyn Reader, start: i64, end: i64, t: &Target, cap: usize) -> BTreeSet<Typed> {
    let mut out = BTreeSet::new();
    let push = |out: &mut BTreeSet<Typed>, v: Option<Typed>| {
        if let Some(v) = v
            && out.len() < cap
        {
            out.insert(v);
        }
    };
    let kw = |s: &str| Some(Typed { kind: "keyword", value: s.to_owned() });
    let st = |s: &str| Some(Typed { kind: "string", value: s.to_owned() });
    each_span(store, start, end, |_, s| match t {
        Target::Attr { scopes, key } => {
            for sc in *scopes {
                match *sc {
                    "resource" => push(&mut out, find(&s.resource.attributes, key).and_then(typed)),
                    "span" => push(&mut out, find(&s.span.attributes, key).and_then(typed)),
                    "instrumentation" => push(&mut out, find(&s.scope.attributes, key).and_then(typed)),
                    "event" => {
                        for e in &s.span.events {
                            push(&mut out, find(&e.attributes, key).and_then(typed));
                        }
                    }
                    "link" => {
                        for l in &s.span.links {
                            push(&mut out, find(&l.attributes, key).and_then(typed));
                        }
                    }
                    _ => {}
                }
            }
        }
        Target::Intrinsic(name) => match name.as_str() {
            "name" => push(&mut out, st(&s.span.name)),
            "status" => push(&mut out, kw(status_keyword(s.span.status_code))),
            "kind" => push(&mut out, kw(kind_keyword(s.span.kind))),
            "statusMessage" if !s.span.status_message.is_empty() => push(&mut out, st(&s.span.status_message)),
            "event:name" => {
                for e in &s.span.events {
                    push(&mut out, st(&e.name));
                }
            }
            "instrumentation:name" => push(&mut out, st(&s.scope.name)),
            "instrumentation:version" => push(&mut out, st(&s.scope.version)),
            "rootName" | "rootServiceName" if s.span.parent_span_id.is_none() => {
                if name == "rootName" {
                    push(&mut out, st(&s.span.name));
                } else if let Some(svc) = s.resource.attr_str("service.name") {
                    push(&mut out, st(svc));
                }
            }
            _ => {}
        },
    });
    out
}

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
        let values = collect_values(&*store, start, end, &target(&name), lim);
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
    let store = store(&state)?;
    blocking(move || {
        let values = collect_values(&*store, start, end, &target(&name), lim);
        let list: Vec<Value> = values.into_iter().map(|t| json!({ "type": t.kind, "value": t.value })).collect();
        Ok(Json(json!({ "tagValues": list, "metrics": {} })))
    })
    .await
}

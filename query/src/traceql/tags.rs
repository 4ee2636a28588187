//! Attribute values for Tempo's tag-value browser (`/api/v2/search/tag/<tag>/values?q=`): the
//! distinct values of one attribute on the spans a TraceQL query matches (on every span without a
//! query). A query that does not parse (Grafana sends half-typed ones while the user edits) filters
//! nothing, as Tempo's lenient condition extraction falls back to no conditions. The tag-name
//! browser (`/api/v2/search/tags?q=`) lists attribute names the same way.

use std::collections::BTreeSet;
use std::time::Instant;

use storage::read::{TraceScan, TracesReader};

use super::ast::Static;
use super::eval::{Evaluator, TraceCtx, attribute_values};
use super::search::{pipeline_hints, time_range};
use super::{Error, parse, parser};

/// One value, typed as Tempo types tag values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagValue {
    /// `string`, `int`, `float`, `bool`, `duration` or `keyword` (status and kind).
    pub type_name: &'static str,
    /// The value as text (durations in Go's form, e.g. `1.5ms`).
    pub value: String,
}

/// Distinct values of `tag` (`resource.service.name`, `span.http.method`, `name`, `status`, ...)
/// on spans of traces overlapping `start_ns..=end_ns` (0 and 0 for all time) that `query` (may be
/// empty or `{}`) matches; at most `limit` values (0 = no limit), sorted by type and value.
pub fn tag_values(
    reader: &dyn TracesReader,
    tag: &str,
    query: &str,
    start_ns: i64,
    end_ns: i64,
    limit: usize,
    deadline: Instant,
) -> Result<Vec<TagValue>, Error> {
    let attr = parser::parse_attribute(tag)?;
    let mut values: BTreeSet<TagValue> = BTreeSet::new();
    let finished = each_match(reader, query, start_ns, end_ns, deadline, &mut |ctx, s| {
        attribute_values(ctx, &attr, s, &mut |v| {
            if let Some(tv) = tag_value(&v) {
                values.insert(tv);
            }
        });
        limit == 0 || values.len() < limit
    })?;
    if !finished {
        return Err(Error::Timeout);
    }
    let mut out: Vec<TagValue> = values.into_iter().collect();
    if limit > 0 {
        out.truncate(limit);
    }
    Ok(out)
}

/// Attribute scopes of [`tag_names`], in Tempo's order.
pub const NAME_SCOPES: [&str; 5] = ["resource", "span", "event", "link", "instrumentation"];

/// Attribute names per scope ([`NAME_SCOPES`]) on the spans of traces overlapping
/// `start_ns..=end_ns` that `query` matches (every span for an empty, `{}` or half-typed query),
/// as Tempo's `/api/v2/search/tags?q=` lists them. Tag search answers from what it could read:
/// it stops quietly after `max_spans` matched spans or at `deadline`.
pub fn tag_names(
    reader: &dyn TracesReader,
    query: &str,
    start_ns: i64,
    end_ns: i64,
    max_spans: usize,
    deadline: Instant,
) -> Result<[BTreeSet<String>; 5], Error> {
    let mut out: [BTreeSet<String>; 5] = Default::default();
    let [resource, span, event, link, instrumentation] = &mut out;
    let mut last_resource: Option<*const storage::model::Resource> = None;
    let mut last_scope: Option<*const storage::model::Scope> = None;
    let mut seen = 0usize;
    let names = |set: &mut BTreeSet<String>, attrs: &[storage::model::KeyValue]| {
        for kv in attrs {
            if !set.contains(&kv.key) {
                set.insert(kv.key.clone());
            }
        }
    };
    each_match(reader, query, start_ns, end_ns, deadline, &mut |ctx, s| {
        let sp = ctx.spans[s];
        let rp = std::sync::Arc::as_ptr(&sp.resource);
        if last_resource != Some(rp) {
            last_resource = Some(rp);
            names(resource, &sp.resource.attributes);
        }
        let cp = std::sync::Arc::as_ptr(&sp.scope);
        if last_scope != Some(cp) {
            last_scope = Some(cp);
            names(instrumentation, &sp.scope.attributes);
        }
        names(span, &sp.span.attributes);
        for e in &sp.span.events {
            names(event, &e.attributes);
        }
        for l in &sp.span.links {
            names(link, &l.attributes);
        }
        seen += 1;
        seen < max_spans
    })?;
    Ok(out)
}

/// Hands every span `query` selects (each once, trace by trace) to `visit` until it returns
/// false. `Ok(false)` when the deadline stopped the scan, `Ok(true)` otherwise.
fn each_match(
    reader: &dyn TracesReader,
    query: &str,
    start_ns: i64,
    end_ns: i64,
    deadline: Instant,
    visit: &mut dyn FnMut(&TraceCtx<'_>, usize) -> bool,
) -> Result<bool, Error> {
    let pipeline = match parse(query) {
        Ok(q) if !q.is_metrics() && !query.trim().is_empty() => Some(q.pipeline),
        _ => None,
    };
    let (start_ns, end_ns) = time_range(start_ns, end_ns);
    let mut scan = TraceScan { start_ns, end_ns, service_name: None, span_name: None, min_span_duration_ns: None };
    if let Some(p) = &pipeline {
        pipeline_hints(p, &mut scan);
    }
    let eval = Evaluator::default();
    let mut failure = None;
    let mut timed_out = false;
    reader.scan_traces(&scan, &mut |spans| {
        if Instant::now() >= deadline {
            timed_out = true;
            return false;
        }
        let ctx = TraceCtx::new(spans);
        let matched: Vec<usize> = match &pipeline {
            None => (0..ctx.spans.len()).collect(),
            Some(p) => match eval.run(&ctx, p) {
                Ok(sets) => {
                    let mut seen = vec![false; ctx.spans.len()];
                    sets.iter()
                        .flat_map(|ss| ss.spans.iter().copied())
                        .filter(|&s| !std::mem::replace(&mut seen[s], true))
                        .collect()
                }
                Err(e) => {
                    failure = Some(Error::Execution(e));
                    return false;
                }
            },
        };
        matched.into_iter().all(|s| visit(&ctx, s))
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(!timed_out),
    }
}

fn tag_value(v: &Static) -> Option<TagValue> {
    let type_name = match v {
        Static::Str(_) => "string",
        Static::Int(_) => "int",
        Static::Float(_) => "float",
        Static::Bool(_) => "bool",
        Static::Duration(_) => "duration",
        Static::Status(_) | Static::Kind(_) => "keyword",
        _ => return None,
    };
    Some(TagValue { type_name, value: v.encode() })
}

//! Attribute values for Tempo's tag-value browser (`/api/v2/search/tag/<tag>/values?q=`): the
//! distinct values of one attribute on the spans a TraceQL query matches (on every span without a
//! query). A query that does not parse (Grafana sends half-typed ones while the user edits) filters
//! nothing, as Tempo's lenient condition extraction falls back to no conditions.

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
    let mut values: BTreeSet<TagValue> = BTreeSet::new();
    let mut failure = None;
    reader.scan_traces(&scan, &mut |spans| {
        if Instant::now() >= deadline {
            failure = Some(Error::Timeout);
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
        for s in matched {
            attribute_values(&ctx, &attr, s, &mut |v| {
                if let Some(tv) = tag_value(&v) {
                    values.insert(tv);
                }
            });
            if limit > 0 && values.len() >= limit {
                return false;
            }
        }
        true
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let mut out: Vec<TagValue> = values.into_iter().collect();
    if limit > 0 {
        out.truncate(limit);
    }
    Ok(out)
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

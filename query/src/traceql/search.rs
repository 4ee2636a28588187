//! `/api/search`: runs a spanset pipeline over the traces of a time range and shapes the matches
//! as Tempo's `TraceSearchMetadata`.
//!
//! Traces are read newest first through `TracesReader::scan_traces` until `limit` of them match;
//! the result is ordered by trace start, newest first. When the first pipeline stage requires
//! `resource.service.name = "x"` or `name = "x"` of some span (an `&&` conjunct of a filter that
//! must match), the scan is given that as a hint.

use std::time::Instant;

use storage::read::{TraceScan, TracesReader};

use super::ast::*;
use super::eval::{Evaluator, TraceCtx, span_attribute, to_any};
use super::{Error, MatchedSpan, ParseError, SearchRequest, SearchResponse, SpanSet, TraceMatch, parse};

/// Tempo's default number of traces.
pub const DEFAULT_LIMIT: usize = 20;
/// Tempo's default number of spans per spanset.
pub const DEFAULT_SPANS_PER_SPANSET: usize = 3;
/// What Tempo shows for a trace whose root span has not arrived.
pub const ROOT_SPAN_NOT_YET_RECEIVED: &str = "<root span not yet received>";

/// Runs a TraceQL search.
pub fn search(reader: &dyn TracesReader, req: &SearchRequest, deadline: Instant) -> Result<SearchResponse, Error> {
    let query = parse(&req.query)?;
    if query.is_metrics() {
        return Err(Error::Parse(ParseError::without_position(
            "metrics queries are not supported on the search endpoint; use /api/metrics/query_range",
        )));
    }
    let limit = if req.limit == 0 { DEFAULT_LIMIT } else { req.limit };
    let spss = if req.spans_per_spanset == 0 { DEFAULT_SPANS_PER_SPANSET } else { req.spans_per_spanset };
    let (start_ns, end_ns) = time_range(req.start_ns, req.end_ns);
    let mut scan = TraceScan { start_ns, end_ns, service_name: None, span_name: None, min_span_duration_ns: None };
    pipeline_hints(&query.pipeline, &mut scan);
    let returned = returned_attributes(&query);

    let eval = Evaluator::default();
    let mut resp = SearchResponse::default();
    let mut failure: Option<Error> = None;
    reader.scan_traces(&scan, &mut |spans| {
        if Instant::now() >= deadline {
            failure = Some(Error::Timeout);
            return false;
        }
        resp.inspected_traces += 1;
        resp.inspected_spans += spans.len() as u64;
        let ctx = TraceCtx::new(spans);
        if ctx.spans.is_empty() {
            return true;
        }
        let sets = match eval.run(&ctx, &query.pipeline) {
            Ok(s) => s,
            Err(e) => {
                failure = Some(Error::Execution(e));
                return false;
            }
        };
        let sets: Vec<_> = sets.into_iter().filter(|s| !s.spans.is_empty()).collect();
        if sets.is_empty() {
            return true;
        }
        resp.traces.push(trace_match(&ctx, sets, spss, &returned));
        resp.traces.len() < limit
    });
    if let Some(e) = failure {
        return Err(e);
    }
    resp.traces.sort_by(|a, b| b.start_time_ns.cmp(&a.start_time_ns).then(a.trace_id.cmp(&b.trace_id)));
    Ok(resp)
}

/// `0..0` (or an end before the start) means all time.
pub(crate) fn time_range(start_ns: i64, end_ns: i64) -> (i64, i64) {
    if end_ns <= 0 || end_ns < start_ns { (start_ns.max(0), i64::MAX) } else { (start_ns.max(0), end_ns) }
}

fn trace_match(ctx: &TraceCtx<'_>, sets: Vec<super::eval::Spanset>, spss: usize, returned: &[Attribute]) -> TraceMatch {
    let root = ctx.root.map(|r| ctx.spans[r]);
    let root_service_name = root
        .and_then(|r| r.resource.attr_str("service.name"))
        .filter(|s| !s.is_empty())
        .unwrap_or(ROOT_SPAN_NOT_YET_RECEIVED)
        .to_string();
    let root_trace_name = root.map(|r| r.span.name.clone()).unwrap_or_default();
    let span_sets = sets
        .into_iter()
        .map(|ss| SpanSet {
            matched: ss.spans.len() as u32,
            spans: ss
                .spans
                .iter()
                .take(spss)
                .map(|&i| {
                    let span = &ctx.spans[i].span;
                    let attributes = returned
                        .iter()
                        .filter_map(|a| {
                            let v = span_attribute(ctx, a, i);
                            if v == Static::Nil { None } else { Some((a.name.clone(), to_any(&v))) }
                        })
                        .collect();
                    MatchedSpan {
                        span_id: span.span_id,
                        name: span.name.clone(),
                        start_time_ns: span.start_time_ns,
                        duration_ns: span.end_time_ns.saturating_sub(span.start_time_ns),
                        attributes,
                    }
                })
                .collect(),
            attributes: ss.attrs.iter().map(|(k, v)| (k.clone(), to_any(v))).collect(),
        })
        .collect();
    TraceMatch {
        trace_id: ctx.trace_id,
        root_service_name,
        root_trace_name,
        start_time_ns: ctx.start_ns,
        duration_ms: ((ctx.end_ns.saturating_sub(ctx.start_ns)).max(0) / 1_000_000) as u64,
        span_sets,
    }
}

/// The span's own `duration` intrinsic (not the parent's, not the trace's).
fn is_span_duration(a: &Attribute) -> bool {
    a.intrinsic == Some(Intrinsic::Duration) && !a.parent
}

/// Sets the scan hints every trace the pipeline can match satisfies.
pub(crate) fn pipeline_hints(p: &Pipeline, scan: &mut TraceScan) {
    if let Some(Stage::Spanset(first)) = p.stages.first() {
        required_hints(first, scan);
    }
}

/// Hints every matching trace satisfies: conjuncts of filters the first stage needs to match.
fn required_hints(e: &SpansetExpr, scan: &mut TraceScan) {
    match e {
        SpansetExpr::Filter(f) => conjunct_hints(f, scan),
        SpansetExpr::Op(op, l, r) => match op {
            SpansetOp::Union => {}
            SpansetOp::NotChild
            | SpansetOp::NotParent
            | SpansetOp::NotDescendant
            | SpansetOp::NotAncestor
            | SpansetOp::NotSibling => required_hints(r, scan),
            _ => {
                required_hints(l, scan);
                required_hints(r, scan);
            }
        },
        SpansetExpr::Pipeline(p) => {
            if let Some(Stage::Spanset(first)) = p.stages.first() {
                required_hints(first, scan);
            }
        }
    }
}

fn conjunct_hints(f: &FieldExpr, scan: &mut TraceScan) {
    match f {
        FieldExpr::Binary(BinOp::And, l, r) => {
            conjunct_hints(l, scan);
            conjunct_hints(r, scan);
        }
        FieldExpr::Binary(op @ (BinOp::Gt | BinOp::Gte | BinOp::Lt | BinOp::Lte), l, r) => {
            // `duration > d` (or `>=`, or the mirrored `d < duration`): some span lasts at least d.
            let min = match (l.as_ref(), r.as_ref(), op) {
                (FieldExpr::Attr(a), FieldExpr::Static(Static::Duration(d)), BinOp::Gt)
                | (FieldExpr::Static(Static::Duration(d)), FieldExpr::Attr(a), BinOp::Lt)
                    if is_span_duration(a) =>
                {
                    d.saturating_add(1)
                }
                (FieldExpr::Attr(a), FieldExpr::Static(Static::Duration(d)), BinOp::Gte)
                | (FieldExpr::Static(Static::Duration(d)), FieldExpr::Attr(a), BinOp::Lte)
                    if is_span_duration(a) =>
                {
                    *d
                }
                _ => return,
            };
            scan.min_span_duration_ns = Some(scan.min_span_duration_ns.map_or(min, |m| m.max(min)));
        }
        FieldExpr::Binary(BinOp::Eq, l, r) => {
            let (attr, value) = match (l.as_ref(), r.as_ref()) {
                (FieldExpr::Attr(a), FieldExpr::Static(Static::Str(v)))
                | (FieldExpr::Static(Static::Str(v)), FieldExpr::Attr(a)) => (a, v),
                _ => return,
            };
            if attr.parent {
                return;
            }
            if attr.intrinsic == Some(Intrinsic::Name) && scan.span_name.is_none() {
                scan.span_name = Some(value.clone());
            } else if attr.intrinsic.is_none()
                && attr.scope == AttrScope::Resource
                && attr.name == "service.name"
                && scan.service_name.is_none()
            {
                scan.service_name = Some(value.clone());
            }
        }
        _ => {}
    }
}

/// The attributes Tempo returns on matched spans: those the query's filters, `by()`, aggregates
/// and `select()` reference, except the ones that have their own fields (name, duration, ids,
/// trace-level intrinsics) and event/link scoped ones.
pub(crate) fn returned_attributes(q: &Query) -> Vec<Attribute> {
    let mut out: Vec<Attribute> = Vec::new();
    collect_pipeline(&q.pipeline, &mut out);
    out.retain(|a| {
        !matches!(
            a.intrinsic,
            Some(
                Intrinsic::Name
                    | Intrinsic::Duration
                    | Intrinsic::TraceDuration
                    | Intrinsic::RootServiceName
                    | Intrinsic::RootName
                    | Intrinsic::TraceId
                    | Intrinsic::SpanId
                    | Intrinsic::EventName
                    | Intrinsic::EventTimeSinceStart
                    | Intrinsic::LinkSpanId
                    | Intrinsic::LinkTraceId
                    | Intrinsic::Parent
            )
        ) && !matches!(a.scope, AttrScope::Event | AttrScope::Link)
            && !a.parent
    });
    out
}

fn push(out: &mut Vec<Attribute>, a: &Attribute) {
    if !out.contains(a) {
        out.push(a.clone());
    }
}

fn collect_pipeline(p: &Pipeline, out: &mut Vec<Attribute>) {
    for s in &p.stages {
        match s {
            Stage::Spanset(e) => collect_spanset(e, out),
            Stage::ScalarFilter { lhs, rhs, .. } => {
                collect_scalar(lhs, out);
                collect_scalar(rhs, out);
            }
            Stage::GroupBy(f) => collect_field(f, out),
            Stage::Coalesce => {}
            Stage::Select(attrs) => attrs.iter().for_each(|a| push(out, a)),
        }
    }
}

fn collect_spanset(e: &SpansetExpr, out: &mut Vec<Attribute>) {
    match e {
        SpansetExpr::Filter(f) => collect_field(f, out),
        SpansetExpr::Op(_, l, r) => {
            collect_spanset(l, out);
            collect_spanset(r, out);
        }
        SpansetExpr::Pipeline(p) => collect_pipeline(p, out),
    }
}

fn collect_scalar(e: &ScalarExpr, out: &mut Vec<Attribute>) {
    match e {
        ScalarExpr::Static(_) | ScalarExpr::Aggregate(_, None) => {}
        ScalarExpr::Aggregate(_, Some(f)) => collect_field(f, out),
        ScalarExpr::Binary(_, l, r) => {
            collect_scalar(l, out);
            collect_scalar(r, out);
        }
    }
}

fn collect_field(f: &FieldExpr, out: &mut Vec<Attribute>) {
    match f {
        FieldExpr::Static(_) => {}
        FieldExpr::Attr(a) => push(out, a),
        FieldExpr::Unary(_, e) => collect_field(e, out),
        FieldExpr::Binary(_, l, r) => {
            collect_field(l, out);
            collect_field(r, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemStore;
    use storage::model::{Span, SpanGroup, SpanId, SpansBatch, TraceId, WriteBatch};
    use storage::read::Reader;

    #[test]
    fn a_passed_deadline_is_a_timeout_and_metrics_queries_are_refused() {
        let store = MemStore::new();
        let span = Span {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([1; 8]),
            name: "x".into(),
            start_time_ns: 1,
            end_time_ns: 2,
            ..Default::default()
        };
        store.apply(WriteBatch::Spans(SpansBatch {
            groups: vec![SpanGroup { spans: vec![span], ..Default::default() }],
        }));
        let req = SearchRequest { query: "{}".into(), ..Default::default() };
        let past = Instant::now() - std::time::Duration::from_millis(1);
        assert_eq!(search(store.trace_store(), &req, past), Err(Error::Timeout));
        let later = Instant::now() + std::time::Duration::from_secs(60);
        let found = search(store.trace_store(), &req, later).unwrap();
        assert_eq!(found.traces.len(), 1);
        assert_eq!((found.inspected_traces, found.inspected_spans), (1, 1));
        let req = SearchRequest { query: "{} | rate()".into(), ..Default::default() };
        assert!(matches!(search(store.trace_store(), &req, later), Err(Error::Parse(_))));
    }

    fn hint(q: &str) -> Option<i64> {
        let mut scan = TraceScan::default();
        pipeline_hints(&parse(q).unwrap().pipeline, &mut scan);
        scan.min_span_duration_ns
    }

    #[test]
    fn span_duration_filters_that_every_match_needs_become_a_scan_hint() {
        assert_eq!(hint("{ duration > 500ms }"), Some(500_000_001));
        assert_eq!(hint("{ duration >= 500ms }"), Some(500_000_000));
        assert_eq!(hint("{ 1s < duration }"), Some(1_000_000_001));
        assert_eq!(hint("{ 1s <= span:duration && name = \"x\" }"), Some(1_000_000_000));
        assert_eq!(hint("{ duration > 1s && duration > 2s }"), Some(2_000_000_001));
        assert_eq!(hint("{ span.a = 1 } >> { duration > 1s }"), Some(1_000_000_001));
        // Not required of every match, or not the span's own duration: no hint.
        for q in [
            "{ duration > 1s || name = \"x\" }",
            "{ duration > 1s } || { name = \"x\" }",
            "{ duration < 1s }",
            "{ traceDuration > 1s }",
            "{ duration > 1 }",
            "{ !(duration > 1s) }",
        ] {
            assert_eq!(hint(q), None, "{q}");
        }
    }
}

//! `/api/metrics/query_range`: TraceQL metrics (`rate()`, `count_over_time()`, `min/max/avg/
//! sum_over_time()`, `quantile_over_time()`, `histogram_over_time()`, with `by(...)`).
//!
//! Time is bucketed as Tempo does (`AlignRequest` + `IntervalMapperQueryRange`): start is rounded
//! down and end up to a multiple of `step`, one extra step is prepended, and interval `i` is the
//! right-closed range `(start + i*step, start + (i+1)*step]`, reported at its end. A span counts
//! in the interval holding its start time. Rates divide by the step in seconds; `duration` values
//! are seconds; quantiles come from power-of-two buckets with Tempo's exponential interpolation
//! (`Log2Bucketize`, `Log2Quantile`); NaN samples are left out, and count-like series report 0 for
//! intervals without spans.

use std::collections::HashMap;
use std::time::Instant;

use storage::model::AnyValue;
use storage::read::{TraceScan, TracesReader};

use super::ast::*;
use super::eval::{Evaluator, TraceCtx, compare_attributes, span_attribute, to_any};
use super::{Error, MetricsSeries, ParseError, parse};

/// Series labels while evaluating.
type Labels = Vec<(String, Static)>;
/// Per-interval histograms: `(bucket, count)` sorted by bucket.
type Histograms = Vec<Vec<(f64, u64)>>;

/// Most series a query may produce.
pub const MAX_SERIES: usize = 10_000;
/// Most intervals a query may span.
pub const MAX_INTERVALS: i64 = 11_000;

/// Runs a TraceQL metrics query over `start_ns..end_ns` in steps of `step_ns`.
pub fn metrics_query_range(
    reader: &dyn TracesReader,
    query: &str,
    start_ns: i64,
    end_ns: i64,
    step_ns: i64,
    deadline: Instant,
) -> Result<Vec<MetricsSeries>, Error> {
    let q = parse(query)?;
    if step_ns <= 0 {
        return Err(Error::Execution("step must be positive".to_string()));
    }
    if end_ns < start_ns {
        return Err(Error::Execution("end must not be before start".to_string()));
    }
    let mapper = Intervals::range(start_ns, end_ns, step_ns);
    if mapper.count > MAX_INTERVALS {
        return Err(Error::Limit(format!(
            "query would produce {} intervals, more than the limit of {MAX_INTERVALS}; use a larger step",
            mapper.count
        )));
    }
    run(reader, &q, &mapper, deadline)
}

/// Runs a TraceQL metrics query as one interval `[start_ns, end_ns]` (`/api/metrics/query`): every
/// series has one sample, at `end_ns`; `rate()` divides by the whole range.
pub fn metrics_query_instant(
    reader: &dyn TracesReader,
    query: &str,
    start_ns: i64,
    end_ns: i64,
    deadline: Instant,
) -> Result<Vec<MetricsSeries>, Error> {
    let q = parse(query)?;
    if end_ns <= start_ns {
        return Err(Error::Execution("end must be after start".to_string()));
    }
    run(reader, &q, &Intervals::instant(start_ns, end_ns), deadline)
}

fn run(
    reader: &dyn TracesReader,
    q: &Query,
    mapper: &Intervals,
    deadline: Instant,
) -> Result<Vec<MetricsSeries>, Error> {
    let Some(m) = q.metrics.clone() else {
        return Err(Error::Parse(ParseError::without_position(
            "not a metrics query: add a metrics function such as | rate() or | count_over_time()",
        )));
    };
    if let Some(c) = &m.compare {
        return run_compare(reader, q, c, mapper, deadline);
    }
    let step_ns = mapper.step;
    let n = mapper.count as usize;

    let eval = Evaluator::default();
    // Series key → (labels, per-interval accumulators).
    let mut series: HashMap<String, (Labels, Vec<Acc>)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut scan = TraceScan {
        start_ns: mapper.start,
        end_ns: mapper.end,
        service_name: None,
        span_name: None,
        min_span_duration_ns: None,
    };
    super::search::pipeline_hints(&q.pipeline, &mut scan);
    for_each_matched_span(reader, &scan, q, mapper, deadline, &eval, &mut |ctx, s, i| {
        let mut labels: Labels = Vec::new();
        let mut all_nil = true;
        for a in &m.by {
            let v = group_value(ctx, a, s);
            if v != Static::Nil {
                all_nil = false;
                labels.push((a.to_string(), v));
            }
        }
        if !m.by.is_empty() && all_nil {
            labels.push((m.by[0].to_string(), Static::Nil));
        }
        let value = observed_value(ctx, &m, s);
        if matches!(m.op, MetricsOp::HistogramOverTime | MetricsOp::QuantileOverTime) {
            // Spans without a bucket (values below 2) are not counted.
            let Some(bucket) = bucket_of(ctx, &m, s) else { return Ok(()) };
            labels.push(("__bucket".to_string(), Static::Float(bucket)));
        }
        if m.by.is_empty() && !matches!(m.op, MetricsOp::HistogramOverTime | MetricsOp::QuantileOverTime) {
            labels.push(("__name__".to_string(), Static::Str(m.op.as_str().to_string())));
        }
        let key = labels
            .iter()
            .map(|(k, v)| format!("{k}\u{1}{}\u{1}{}", type_tag(v), v.encode()))
            .collect::<Vec<_>>()
            .join("\u{2}");
        if !series.contains_key(&key) {
            if series.len() >= MAX_SERIES {
                return Err(Error::Limit(format!("query produces more than {MAX_SERIES} series")));
            }
            order.push(key.clone());
            series.insert(key.clone(), (labels, vec![Acc::default(); n]));
        }
        if let Some((_, accs)) = series.get_mut(&key) {
            accs[i].observe(value);
        }
        Ok(())
    })?;

    let step_s = step_ns as f64 / 1e9;
    let mut out: Vec<(Labels, Vec<f64>)> = Vec::new();
    match m.op {
        MetricsOp::QuantileOverTime => {
            // Group the bucket series back into their `by()` series.
            let mut groups: Vec<(Labels, Histograms)> = Vec::new();
            for key in &order {
                let Some((labels, accs)) = series.get(key) else { continue };
                let (base, bucket) = split_bucket(labels);
                let gi = match groups.iter().position(|(l, _)| *l == base) {
                    Some(i) => i,
                    None => {
                        groups.push((base, vec![Vec::new(); n]));
                        groups.len() - 1
                    }
                };
                for (i, acc) in accs.iter().enumerate() {
                    if acc.count > 0 {
                        groups[gi].1[i].push((bucket, acc.count));
                    }
                }
            }
            for (base, mut hists) in groups {
                for h in hists.iter_mut() {
                    h.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
                for &p in &m.quantiles {
                    let mut labels = base.clone();
                    labels.push(("p".to_string(), Static::Float(p)));
                    let values = hists.iter().map(|h| if h.is_empty() { 0.0 } else { log2_quantile(p, h) }).collect();
                    out.push((labels, values));
                }
            }
        }
        _ => {
            for key in &order {
                let Some((labels, accs)) = series.get(key) else { continue };
                let values = accs
                    .iter()
                    .map(|a| match m.op {
                        MetricsOp::Rate => a.count as f64 / step_s,
                        MetricsOp::CountOverTime | MetricsOp::HistogramOverTime => a.count as f64,
                        MetricsOp::MinOverTime => a.min,
                        MetricsOp::MaxOverTime => a.max,
                        MetricsOp::SumOverTime => a.sum,
                        MetricsOp::AvgOverTime => {
                            if a.n == 0 {
                                f64::NAN
                            } else {
                                a.total / a.n as f64
                            }
                        }
                        MetricsOp::QuantileOverTime | MetricsOp::Compare => f64::NAN,
                    })
                    .collect();
                out.push((labels.clone(), values));
            }
        }
    }

    for stage in &m.second {
        match stage {
            SecondStage::Filter(op, v) => {
                for (_, values) in out.iter_mut() {
                    for x in values.iter_mut() {
                        let keep = match op {
                            BinOp::Eq => *x == *v,
                            BinOp::Neq => *x != *v,
                            BinOp::Lt => *x < *v,
                            BinOp::Lte => *x <= *v,
                            BinOp::Gt => *x > *v,
                            BinOp::Gte => *x >= *v,
                            _ => true,
                        };
                        if !keep {
                            *x = f64::NAN;
                        }
                    }
                }
            }
            SecondStage::TopK(k) | SecondStage::BottomK(k) => {
                let top = matches!(stage, SecondStage::TopK(_));
                for i in 0..n {
                    let mut idx: Vec<usize> = (0..out.len()).filter(|&s| !out[s].1[i].is_nan()).collect();
                    idx.sort_by(|&a, &b| {
                        let o = out[a].1[i].total_cmp(&out[b].1[i]);
                        if top { o.reverse() } else { o }
                    });
                    for &s in idx.iter().skip(*k) {
                        out[s].1[i] = f64::NAN;
                    }
                }
            }
        }
    }

    let mut result: Vec<MetricsSeries> = out
        .into_iter()
        .filter_map(|(labels, values)| {
            let samples: Vec<(i64, f64)> = values
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, v)| (mapper.timestamp_ms(i), *v))
                .collect();
            if samples.is_empty() {
                return None;
            }
            Some(MetricsSeries { labels: labels.iter().map(|(k, v)| (k.clone(), to_any(v))).collect(), samples })
        })
        .collect();
    result.sort_by_key(|a| label_key(&a.labels));
    Ok(result)
}

/// `compare()`: for every attribute of the spans the pipeline yields, counts per value and per
/// interval, split into `selection` (the filter holds, within the optional window) and `baseline`
/// (the rest), keeping the `top_n` values of each attribute by total count, plus per-attribute
/// totals (`baseline_total`, `selection_total`, labelled with the attribute and `nil`).
/// Runs the query's spanset pipeline over every trace `scan` selects and hands each matched span
/// (once, however many spansets hold it) that falls in one of `mapper`'s intervals to `visit`, as
/// (trace, span index, interval index). Stops at the deadline, at an evaluation error, or at the
/// first error `visit` returns.
fn for_each_matched_span(
    reader: &dyn TracesReader,
    scan: &TraceScan,
    q: &Query,
    mapper: &Intervals,
    deadline: Instant,
    eval: &Evaluator,
    visit: &mut dyn FnMut(&TraceCtx<'_>, usize, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut failure = None;
    reader.scan_traces(scan, &mut |spans| {
        if Instant::now() >= deadline {
            failure = Some(Error::Timeout);
            return false;
        }
        let ctx = TraceCtx::new(spans);
        let sets = match eval.run(&ctx, &q.pipeline) {
            Ok(s) => s,
            Err(e) => {
                failure = Some(Error::Execution(e));
                return false;
            }
        };
        let mut seen = vec![false; ctx.spans.len()];
        for ss in &sets {
            for &s in &ss.spans {
                if std::mem::replace(&mut seen[s], true) {
                    continue;
                }
                let Some(i) = mapper.interval(ctx.spans[s].span.start_time_ns) else { continue };
                if let Err(e) = visit(&ctx, s, i) {
                    failure = Some(e);
                    return false;
                }
            }
        }
        true
    });
    failure.map_or(Ok(()), Err)
}

fn run_compare(
    reader: &dyn TracesReader,
    q: &Query,
    c: &CompareArgs,
    mapper: &Intervals,
    deadline: Instant,
) -> Result<Vec<MetricsSeries>, Error> {
    /// The values of one attribute, and their index by type and text.
    type Values = (Vec<(Static, Vec<f64>)>, HashMap<(u8, String), usize>);
    let n = mapper.count as usize;
    // [baseline, selection]: attribute → values; and attribute → totals.
    let mut counts: [Vec<(String, Values)>; 2] = [Vec::new(), Vec::new()];
    let mut totals: [Vec<(String, Vec<f64>)>; 2] = [Vec::new(), Vec::new()];
    let eval = Evaluator::default();
    let mut scan = TraceScan {
        start_ns: mapper.start,
        end_ns: mapper.end,
        service_name: None,
        span_name: None,
        min_span_duration_ns: None,
    };
    super::search::pipeline_hints(&q.pipeline, &mut scan);
    let mut distinct = 0usize;
    for_each_matched_span(reader, &scan, q, mapper, deadline, &eval, &mut |ctx, s, i| {
        let start = ctx.spans[s].span.start_time_ns;
        let in_window = (c.start == 0 && c.end == 0) || (start > c.start && start <= c.end);
        let selected = match in_window.then(|| eval.matches(ctx, &c.filter, s)) {
            Some(Ok(b)) => b,
            Some(Err(e)) => {
                return Err(Error::Execution(e));
            }
            None => false,
        };
        let k = usize::from(selected);
        for (name, v) in compare_attributes(ctx, s) {
            let ai = match counts[k].iter().position(|(a, _)| *a == name) {
                Some(ai) => ai,
                None => {
                    counts[k].push((name.clone(), (Vec::new(), HashMap::new())));
                    counts[k].len() - 1
                }
            };
            let (values, index) = &mut counts[k][ai].1;
            let key = (type_tag(&v), v.encode());
            match index.get(&key) {
                Some(&vi) => values[vi].1[i] += 1.0,
                None => {
                    distinct += 1;
                    if distinct > MAX_SERIES * 10 {
                        return Err(Error::Limit(format!(
                            "compare() sees more than {} distinct attribute values",
                            MAX_SERIES * 10
                        )));
                    }
                    let mut cs = vec![0.0; n];
                    cs[i] = 1.0;
                    index.insert(key, values.len());
                    values.push((v, cs));
                }
            }
            match totals[k].iter_mut().find(|(a, _)| *a == name) {
                Some((_, t)) => t[i] += 1.0,
                None => {
                    let mut t = vec![0.0; n];
                    t[i] = 1.0;
                    totals[k].push((name, t));
                }
            }
        }
        Ok(())
    })?;
    let mut out: Vec<(Labels, Vec<f64>)> = Vec::new();
    for (k, kind) in ["baseline", "selection"].into_iter().enumerate() {
        for (name, (mut values, _)) in std::mem::take(&mut counts[k]) {
            if values.len() > c.top_n {
                values.sort_by(|a, b| b.1.iter().sum::<f64>().total_cmp(&a.1.iter().sum::<f64>()));
                values.truncate(c.top_n);
            }
            for (v, cs) in values {
                out.push((vec![("__meta_type".to_string(), Static::Str(kind.to_string())), (name.clone(), v)], cs));
            }
        }
        for (name, t) in std::mem::take(&mut totals[k]) {
            out.push((vec![("__meta_type".to_string(), Static::Str(format!("{kind}_total"))), (name, Static::Nil)], t));
        }
    }
    let mut result: Vec<MetricsSeries> = out
        .into_iter()
        .map(|(labels, values)| MetricsSeries {
            labels: labels.iter().map(|(k, v)| (k.clone(), to_any(v))).collect(),
            samples: values.iter().enumerate().map(|(i, v)| (mapper.timestamp_ms(i), *v)).collect(),
        })
        .collect();
    result.sort_by_key(|s| label_key(&s.labels));
    Ok(result)
}

fn label_key(labels: &[(String, AnyValue)]) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| (k.clone(), v.to_label_string())).collect()
}

fn type_tag(s: &Static) -> u8 {
    match s {
        Static::Nil => 0,
        Static::Int(_) => 1,
        Static::Float(_) => 2,
        Static::Str(_) => 3,
        Static::Bool(_) => 4,
        Static::Duration(_) => 5,
        Static::Status(_) => 6,
        Static::Kind(_) => 7,
        _ => 8,
    }
}

fn split_bucket(labels: &[(String, Static)]) -> (Labels, f64) {
    let mut base = Vec::new();
    let mut bucket = f64::NAN;
    for (k, v) in labels {
        if k == "__bucket" {
            if let Static::Float(b) = v {
                bucket = *b;
            }
        } else {
            base.push((k.clone(), v.clone()));
        }
    }
    (base, bucket)
}

/// `by()` lookup: an unscoped attribute is read from the span, then the resource.
fn group_value(ctx: &TraceCtx<'_>, a: &Attribute, s: usize) -> Static {
    span_attribute(ctx, a, s)
}

/// The number a `*_over_time(attr)` function observes: `duration` in seconds, other numbers as
/// they are, NaN when missing or not numeric.
fn observed_value(ctx: &TraceCtx<'_>, m: &MetricsAggregate, s: usize) -> f64 {
    let Some(a) = &m.attr else { return f64::NAN };
    if a.intrinsic == Some(Intrinsic::Duration) {
        let span = &ctx.spans[s].span;
        return (span.end_time_ns.saturating_sub(span.start_time_ns)) as f64 / 1e9;
    }
    match span_attribute(ctx, a, s) {
        Static::Int(i) => i as f64,
        Static::Float(f) => f,
        Static::Duration(d) => d as f64,
        _ => f64::NAN,
    }
}

/// The power-of-two bucket of a span for histograms: durations in seconds, ints as they are.
fn bucket_of(ctx: &TraceCtx<'_>, m: &MetricsAggregate, s: usize) -> Option<f64> {
    let a = m.attr.as_ref()?;
    if a.intrinsic == Some(Intrinsic::Duration) {
        let span = &ctx.spans[s].span;
        let d = span.end_time_ns.saturating_sub(span.start_time_ns);
        return if d < 2 { None } else { Some(log2_bucketize(d as u64) / 1e9) };
    }
    match span_attribute(ctx, a, s) {
        Static::Int(i) if i >= 2 => Some(log2_bucketize(i as u64)),
        Static::Duration(d) if d >= 2 => Some(log2_bucketize(d as u64) / 1e9),
        _ => None,
    }
}

/// The next power of two at or above `v` (Tempo's `Log2Bucketize`).
fn log2_bucketize(v: u64) -> f64 {
    if v < 2 {
        return -1.0;
    }
    let bits = 64 - (v - 1).leading_zeros();
    if bits >= 64 { 2f64.powi(64) } else { (1u64 << bits) as f64 }
}

/// Tempo's `Log2Quantile` over `(bucket max, count)` sorted by bucket.
fn log2_quantile(p: f64, buckets: &[(f64, u64)]) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) || buckets.is_empty() {
        return 0.0;
    }
    let total_count: u64 = buckets.iter().map(|b| b.1).sum();
    if total_count == 0 {
        return 0.0;
    }
    let mut max_samples = (p * total_count as f64).ceil() as u64;
    if max_samples == 0 {
        max_samples = 1;
    }
    let mut total = 0u64;
    let mut bucket = 0usize;
    for (i, b) in buckets.iter().enumerate() {
        bucket = i;
        if total + b.1 > max_samples {
            break;
        }
        total += b.1;
        if total == max_samples {
            return b.0;
        }
    }
    let interp = (max_samples - total) as f64 / buckets[bucket].1 as f64;
    let max_v = buckets[bucket].0.log2();
    let min_v = if bucket > 0 { buckets[bucket - 1].0.log2() } else { max_v - 1.0 };
    2f64.powf(min_v + (max_v - min_v) * interp)
}

/// Per-interval accumulator.
#[derive(Clone, Copy, Debug)]
struct Acc {
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    total: f64,
    n: u64,
}

impl Default for Acc {
    fn default() -> Self {
        Acc { count: 0, min: f64::NAN, max: f64::NAN, sum: f64::NAN, total: 0.0, n: 0 }
    }
}

impl Acc {
    fn observe(&mut self, v: f64) {
        self.count += 1;
        if v.is_nan() {
            return;
        }
        if self.min.is_nan() || v < self.min {
            self.min = v;
        }
        if self.max.is_nan() || v > self.max {
            self.max = v;
        }
        self.sum = if self.sum.is_nan() { v } else { self.sum + v };
        self.total += v;
        self.n += 1;
    }
}

/// Tempo's intervals: aligned query-range steps, or the one interval of an instant query.
struct Intervals {
    start: i64,
    end: i64,
    step: i64,
    count: i64,
    instant: bool,
}

impl Intervals {
    fn range(start: i64, end: i64, step: i64) -> Self {
        let mut s = start.saturating_sub(start.rem_euclid(step));
        let m = end.rem_euclid(step);
        let e = if m == 0 { end } else { end.saturating_add(step - m) };
        if s > step {
            s -= step;
        }
        Intervals { start: s, end: e, step, count: e.saturating_sub(s) / step, instant: false }
    }

    fn instant(start: i64, end: i64) -> Self {
        Intervals { start, end, step: end.saturating_sub(start), count: 1, instant: true }
    }

    fn interval(&self, ts: i64) -> Option<usize> {
        if self.instant {
            return (ts >= self.start && ts <= self.end && self.end != self.start).then_some(0);
        }
        if !(ts > self.start && ts <= self.end) || self.end == self.start {
            return None;
        }
        let off = ts.saturating_sub(self.start);
        let mut i = off / self.step;
        if i * self.step == off {
            i -= 1;
        }
        if i < 0 || i >= self.count {
            return None;
        }
        Some(i as usize)
    }

    fn timestamp_ms(&self, i: usize) -> i64 {
        if self.instant {
            return self.end.div_euclid(1_000_000);
        }
        self.start.saturating_add((i as i64 + 1).saturating_mul(self.step)).div_euclid(1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemStore;
    use storage::read::Reader;

    #[test]
    fn extreme_ranges_are_errors_not_panics() {
        let store = MemStore::new();
        let r = store.trace_store();
        let far = Instant::now() + std::time::Duration::from_secs(60);
        for (s, e, step) in [(i64::MIN, i64::MAX, 1), (0, i64::MAX, i64::MAX), (i64::MIN, 0, i64::MAX), (-5, 5, 3)] {
            let _ = metrics_query_range(r, "{} | rate()", s, e, step, far);
            let _ = metrics_query_instant(r, "{} | rate()", s, e, far);
        }
        assert!(matches!(metrics_query_range(r, "{} | rate()", i64::MIN, i64::MAX, 1, far), Err(Error::Limit(_))));
        assert!(matches!(
            metrics_query_range(r, "{} | rate()", 0, 10, 1, Instant::now() - std::time::Duration::from_secs(1)),
            Ok(_) | Err(Error::Timeout)
        ));
    }
}

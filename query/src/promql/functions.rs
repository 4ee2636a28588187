//! PromQL functions (Prometheus 2.x functions.go semantics).
//!
//! Functions over a range vector run per input series and step over the series' window; every
//! other function runs per step over its evaluated arguments. Functions drop `__name__` except
//! `last_over_time`, `sort*`, `label_replace` and `label_join`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr};
use storage::model::Labels;

use super::aggr::{quantile, valid_label_name};
use super::eval::{
    Evaluator, Loaded, NameCache, RangeInput, S, SeriesOut, Val, Vector, Window, WindowCursor, check_unique, drop_name,
    unwrap_parens,
};
use super::histogram::{bucket_quantile, native_fraction, native_quantile};
use super::value::Point;
use super::{FastSet, QueryError};

pub(crate) fn eval_call(ev: &Evaluator<'_>, c: &Call) -> Result<Val, QueryError> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let n = ev.steps.len();
    match name {
        "time" => Ok(Val::Scalar((0..n).map(|i| ev.steps.ts(i) as f64 / 1000.0).collect())),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; n])),
        "vector" => {
            let s = ev.eval_scalar(args[0])?;
            let empty = Arc::new(Labels::new());
            Ok(Val::Vector(s.into_iter().map(|v| vec![S { labels: empty.clone(), point: Point::Float(v) }]).collect()))
        }
        "scalar" => {
            let v = ev.eval_vector(args[0])?;
            Ok(Val::Scalar(
                v.into_iter()
                    .map(|vec| if vec.len() == 1 { vec[0].f().unwrap_or(f64::NAN) } else { f64::NAN })
                    .collect(),
            ))
        }
        "timestamp" => {
            if let Expr::VectorSelector(vs) = unwrap_parens(args[0]) {
                return ev.eval_selector_with(vs, true);
            }
            let v = ev.eval_vector(args[0])?;
            let out = v
                .into_iter()
                .enumerate()
                .map(|(i, vec)| {
                    let t = ev.steps.ts(i) as f64 / 1000.0;
                    vec.into_iter().map(|s| S { labels: drop_name(&s.labels), point: Point::Float(t) }).collect()
                })
                .collect::<Vec<Vector>>();
            for v in &out {
                check_unique(v)?;
            }
            Ok(Val::Vector(out))
        }
        "absent" => {
            let v = ev.eval_vector(args[0])?;
            let labels = Arc::new(absent_labels(args[0]));
            Ok(Val::Vector(
                v.into_iter()
                    .map(|vec| if vec.is_empty() { vec![S::float(labels.clone(), 1.0)] } else { Vec::new() })
                    .collect(),
            ))
        }
        "absent_over_time" => {
            let input = range_input(ev, args[0])?;
            let labels = Arc::new(absent_labels(args[0]));
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let ts = ev.steps.ts(i);
                let any = input.series.iter().any(|s| {
                    let w = input.window(s, ts);
                    !w.floats.is_empty() || !w.hists.is_empty()
                });
                out.push(if any { Vec::new() } else { vec![S::float(labels.clone(), 1.0)] });
            }
            Ok(Val::Vector(out))
        }
        _ if is_range_function(name) => range_function(ev, name, &args),
        "label_replace" => label_replace(ev, &args),
        "label_join" => label_join(ev, &args),
        "sort" | "sort_desc" => {
            let v = ev.eval_vector(args[0])?;
            let desc = name == "sort_desc";
            Ok(Val::Vector(
                v.into_iter()
                    .map(|vec| {
                        let mut fl: Vector = vec.into_iter().filter(|s| s.f().is_some()).collect();
                        fl.sort_by(|a, b| nan_last(a, b, desc));
                        fl
                    })
                    .collect(),
            ))
        }
        "histogram_quantile" => {
            let q = ev.eval_scalar(args[0])?;
            let v = ev.eval_vector(args[1])?;
            let mut out = Vec::with_capacity(n);
            for (vec, q) in v.into_iter().zip(q) {
                let r = histogram_quantile(q, vec);
                check_unique(&r)?;
                out.push(r);
            }
            Ok(Val::Vector(out))
        }
        "histogram_fraction" => {
            let lo = ev.eval_scalar(args[0])?;
            let hi = ev.eval_scalar(args[1])?;
            let v = ev.eval_vector(args[2])?;
            let mut out = Vec::with_capacity(n);
            for (i, vec) in v.into_iter().enumerate() {
                let r: Vector = vec
                    .iter()
                    .filter_map(|s| s.h().map(|h| S::float(drop_name(&s.labels), native_fraction(lo[i], hi[i], h))))
                    .collect();
                check_unique(&r)?;
                out.push(r);
            }
            Ok(Val::Vector(out))
        }
        "histogram_count" | "histogram_sum" => {
            let count = name == "histogram_count";
            simple(ev, args[0], |s| s.h().map(|h| if count { h.count } else { h.sum }))
        }
        "days_in_month" | "day_of_month" | "day_of_week" | "day_of_year" | "hour" | "minute" | "month" | "year" => {
            if args.is_empty() {
                let empty = Arc::new(Labels::new());
                return Ok(Val::Vector(
                    (0..n)
                        .map(|i| {
                            let t = ev.steps.ts(i) as f64 / 1000.0;
                            vec![S::float(empty.clone(), date_part(name, t))]
                        })
                        .collect(),
                ));
            }
            simple(ev, args[0], |s| s.f().map(|v| date_part(name, v)))
        }
        "round" => {
            let to = if args.len() > 1 { Some(ev.eval_scalar(args[1])?) } else { None };
            let v = ev.eval_vector(args[0])?;
            per_step(v, |i, s| {
                let nearest = to.as_ref().map(|t| t[i]).unwrap_or(1.0);
                let inv = 1.0 / nearest;
                s.f().map(|x| (x * inv + 0.5).floor() / inv)
            })
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let a = ev.eval_scalar(args[1])?;
            let b = if name == "clamp" { Some(ev.eval_scalar(args[2])?) } else { None };
            let v = ev.eval_vector(args[0])?;
            let mut out = Vec::with_capacity(n);
            for (i, vec) in v.into_iter().enumerate() {
                if let Some(b) = &b
                    && b[i] < a[i]
                {
                    out.push(Vec::new());
                    continue;
                }
                let r: Vector = vec
                    .iter()
                    .filter_map(|s| {
                        let x = s.f()?;
                        let y = match name {
                            "clamp_min" => go_max(x, a[i]),
                            "clamp_max" => go_min(x, a[i]),
                            _ => go_max(a[i], go_min(b.as_ref().map(|b| b[i]).unwrap_or(f64::NAN), x)),
                        };
                        Some(S::float(drop_name(&s.labels), y))
                    })
                    .collect();
                check_unique(&r)?;
                out.push(r);
            }
            Ok(Val::Vector(out))
        }
        _ => match math_fn(name) {
            Some(f) => simple(ev, args[0], |s| s.f().map(f)),
            None => Err(QueryError::BadData(format!("parse error: unknown function with name {name:?}"))),
        },
    }
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sqrt" => f64::sqrt,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

/// Go's `math.Max`: NaN wins, +0 beats -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { b } else { a }
    } else if a > b {
        a
    } else {
        b
    }
}

/// Go's `math.Min`: NaN wins, -0 beats +0.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else if a < b {
        a
    } else {
        b
    }
}

/// Applies `f` to every element (dropping the metric name); `None` drops the element.
fn simple(ev: &Evaluator<'_>, arg: &Expr, f: impl Fn(&S) -> Option<f64>) -> Result<Val, QueryError> {
    let v = ev.eval_vector(arg)?;
    per_step(v, |_, s| f(s))
}

fn per_step(v: Vec<Vector>, f: impl Fn(usize, &S) -> Option<f64>) -> Result<Val, QueryError> {
    let mut out = Vec::with_capacity(v.len());
    let mut names = NameCache::default();
    for (i, vec) in v.into_iter().enumerate() {
        let r: Vector = vec.iter().filter_map(|s| f(i, s).map(|x| S::float(names.drop_name(&s.labels), x))).collect();
        check_unique(&r)?;
        out.push(r);
    }
    Ok(Val::Vector(out))
}

fn range_input(ev: &Evaluator<'_>, e: &Expr) -> Result<RangeInput, QueryError> {
    ev.range_arg(e)?.ok_or_else(|| QueryError::Execution("expected a range vector argument".into()))
}

/// Labels `absent()` gives its result: the selector's equality matchers, except names that
/// appear in more than one matcher or in a non-equality matcher.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let mut set: Vec<(String, String)> = Vec::new();
    let mut drop: HashSet<String> = HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == "__name__" {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && !set.iter().any(|(n, _)| *n == m.name) {
            set.push((m.name.clone(), m.value.clone()));
        } else {
            drop.insert(m.name.clone());
        }
    }
    Labels::from_pairs(set.into_iter().filter(|(n, _)| !drop.contains(n)))
}

fn range_function(ev: &Evaluator<'_>, name: &str, args: &[&Expr]) -> Result<Val, QueryError> {
    let n = ev.steps.len();
    let mut out: Vec<Vector> = vec![Vec::new(); n];
    range_function_each(ev, name, args, &mut |so| {
        so.append_to(&mut out);
        Ok(())
    })?;
    Ok(Val::Vector(out))
}

/// The order of two samples by float value, descending when `desc`, NaN (or a histogram) last in
/// both directions: `sort`, `sort_desc`, `topk` and `bottomk`.
pub(crate) fn nan_last(a: &S, b: &S, desc: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let (x, y) = (a.f().unwrap_or(f64::NAN), b.f().unwrap_or(f64::NAN));
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Equal,
        (true, false) => Greater,
        (false, true) => Less,
        _ if desc => y.partial_cmp(&x).unwrap_or(Equal),
        _ => x.partial_cmp(&y).unwrap_or(Equal),
    }
}

/// True for the functions [`range_function_each`] evaluates.
pub(crate) fn is_range_function(name: &str) -> bool {
    matches!(
        name,
        "rate"
            | "increase"
            | "delta"
            | "irate"
            | "idelta"
            | "resets"
            | "changes"
            | "deriv"
            | "predict_linear"
            | "holt_winters"
            | "avg_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "min_over_time"
            | "max_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "last_over_time"
            | "present_over_time"
            | "quantile_over_time"
    )
}

/// Evaluates a function over a range vector series by series, handing each series' output
/// points to `sink` in series order; fails on two outputs with the same labels, counts samples
/// and applies the sample limit (one window plus the outputs so far, as Prometheus holds them).
pub(crate) fn range_function_each(
    ev: &Evaluator<'_>,
    name: &str,
    args: &[&Expr],
    sink: &mut dyn FnMut(SeriesOut) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    let n = ev.steps.len();
    let (mi, scalar_args): (usize, Vec<usize>) = match name {
        "quantile_over_time" => (1, vec![0]),
        "predict_linear" => (0, vec![1]),
        "holt_winters" => (0, vec![1, 2]),
        _ => (0, vec![]),
    };
    let mut scalars: Vec<Vec<f64>> = Vec::new();
    for i in scalar_args {
        scalars.push(ev.eval_scalar(args[i])?);
    }
    let (src, input) =
        ev.range_source(args[mi])?.ok_or_else(|| QueryError::Execution("expected a range vector argument".into()))?;
    let keep_name = name == "last_over_time";
    let src = if keep_name { src } else { src.without_names() };
    let is_rate = name == "rate";
    let steps = ev.steps;
    let input = &input;
    let scalars = &scalars;
    let op = |s: &Loaded| -> Result<SeriesOut, QueryError> {
        let labels = if keep_name { s.labels.clone() } else { drop_name(&s.labels) };
        if s.floats.is_empty() && s.hists.is_empty() {
            return Ok(SeriesOut::new(labels, 0));
        }
        let counter_rate = matches!(name, "rate" | "increase") && s.hists.is_empty();
        let mut so = SeriesOut::new(labels, n);
        let (mut touched, mut peak) = (0usize, 0usize);
        let mut sc = vec![0.0; scalars.len()];
        let mut cur = WindowCursor::default();
        // `rate`/`increase` over floats: the counter resets of the whole series are found once,
        // each window adds only the ones inside it (in the same order as a scan would).
        let resets: Option<Vec<u32>> = counter_rate.then(|| counter_resets(&s.floats));
        let mut memo = RateMemo::default();
        for i in 0..n {
            let ts = steps.ts(i);
            let w = input.window_at(s, ts, &mut cur);
            if w.floats.is_empty() && w.hists.is_empty() {
                continue;
            }
            let held = w.floats.len() + w.hists.len();
            touched += held;
            peak = peak.max(so.len() + held);
            if let Some(resets) = &resets {
                if let Some(v) = indexed_rate(s, resets, &w, cur.fl, is_rate, input.range, &mut memo) {
                    so.floats.push((i as u32, v));
                }
                continue;
            }
            for (x, v) in sc.iter_mut().zip(scalars) {
                *x = v[i];
            }
            if let Some(p) = range_fn(name, &w, &sc, ts, input.range)? {
                so.push(i, p);
            }
        }
        so.touched = touched;
        so.peak = peak;
        Ok(so)
    };
    // Series read from storage are distinct label sets; when the selector fixes the metric name,
    // dropping it keeps them distinct, so only other inputs need the duplicate check.
    let distinct = match unwrap_parens(args[mi]) {
        Expr::MatrixSelector(ms) => single_name(&ms.vs),
        _ => false,
    };
    let mut seen: FastSet<Arc<Labels>> = FastSet::default();
    let mut total = 0usize;
    ev.per_series(src, op, &mut |so| {
        ev.ctx.touch(so.touched);
        ev.ctx.limit(total + so.peak)?;
        total += so.len();
        if !distinct && !so.is_empty() && !seen.insert(so.labels.clone()) {
            return Err(QueryError::Execution("vector cannot contain metrics with the same labelset".into()));
        }
        sink(so)
    })
}

/// True when every series a selector reads has the same metric name: a single matcher set with
/// a metric name or a `__name__=` matcher.
fn single_name(vs: &promql_parser::parser::VectorSelector) -> bool {
    vs.matchers.or_matchers.is_empty()
        && (vs.name.is_some()
            || vs.matchers.matchers.iter().any(|m| m.name == "__name__" && matches!(m.op, PMatchOp::Equal)))
}

/// Neumaier-compensated increment: returns the new sum and compensation.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn linear_regression(points: &[(i64, f64)], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut cx, mut sum_y, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sum_xy, mut cxy, mut sum_x2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let init_y = points[0].1;
    let mut const_y = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if const_y && i > 0 && v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (t - intercept_time) as f64 / 1e3;
        (sum_x, cx) = kahan_inc(x, sum_x, cx);
        (sum_y, cy) = kahan_inc(v, sum_y, cy);
        (sum_xy, cxy) = kahan_inc(x * v, sum_xy, cxy);
        (sum_x2, cx2) = kahan_inc(x * x, sum_x2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let (sum_x, sum_y, sum_xy, sum_x2) = (sum_x + cx, sum_y + cy, sum_xy + cxy, sum_x2 + cx2);
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    let intercept = sum_y / n - slope * sum_x / n;
    (slope, intercept)
}

fn f(v: f64) -> Option<Point> {
    Some(Point::Float(v))
}

fn range_fn(name: &str, w: &Window<'_>, sc: &[f64], ts: i64, range: i64) -> Result<Option<Point>, QueryError> {
    let fl = w.floats;
    match name {
        "rate" | "increase" | "delta" => Ok(extrapolated_rate(w, name != "delta", name == "rate", range)),
        "irate" | "idelta" => {
            if fl.len() < 2 {
                return Ok(None);
            }
            let (last, prev) = (fl[fl.len() - 1], fl[fl.len() - 2]);
            let is_rate = name == "irate";
            let mut v = if is_rate && last.1 < prev.1 { last.1 } else { last.1 - prev.1 };
            let interval = last.0 - prev.0;
            if interval == 0 {
                return Ok(None);
            }
            if is_rate {
                v /= interval as f64 / 1000.0;
            }
            Ok(f(v))
        }
        "resets" | "changes" => {
            if fl.is_empty() {
                return Ok(None);
            }
            let mut count = 0.0;
            let mut prev = fl[0].1;
            for &(_, cur) in &fl[1..] {
                let hit = if name == "resets" { cur < prev } else { cur != prev && !(cur.is_nan() && prev.is_nan()) };
                if hit {
                    count += 1.0;
                }
                prev = cur;
            }
            Ok(f(count))
        }
        "deriv" => {
            if fl.len() < 2 {
                return Ok(None);
            }
            Ok(f(linear_regression(fl, fl[0].0).0))
        }
        "predict_linear" => {
            if fl.len() < 2 {
                return Ok(None);
            }
            let (slope, intercept) = linear_regression(fl, ts);
            Ok(f(slope * sc[0] + intercept))
        }
        "holt_winters" => {
            if fl.is_empty() {
                return Ok(None);
            }
            let (sf, tf) = (sc[0], sc[1]);
            if sf <= 0.0 || sf >= 1.0 {
                return Err(QueryError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(QueryError::Execution(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}")));
            }
            if fl.len() < 2 {
                return Ok(None);
            }
            let (mut s0, mut s1) = (0.0, fl[0].1);
            let mut b = fl[1].1 - fl[0].1;
            for (i, &(_, v)) in fl.iter().enumerate().skip(1) {
                let x = sf * v;
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let y = (1.0 - sf) * (s1 + b);
                s0 = s1;
                s1 = x + y;
            }
            Ok(f(s1))
        }
        "count_over_time" => Ok(f((fl.len() + w.hists.len()) as f64)),
        "present_over_time" => Ok(f(1.0)),
        "last_over_time" => {
            let lf = fl.last();
            let lh = w.hists.last();
            Ok(match (lf, lh) {
                (Some(a), Some(b)) if b.0 > a.0 => Some(Point::Histogram(b.1.clone())),
                (Some(a), _) => f(a.1),
                (None, Some(b)) => Some(Point::Histogram(b.1.clone())),
                (None, None) => None,
            })
        }
        _ => {
            if fl.is_empty() {
                return Ok(None);
            }
            let vals = fl.iter().map(|p| p.1);
            let v = match name {
                "sum_over_time" => {
                    let (mut s, mut c) = (0.0, 0.0);
                    for v in vals {
                        (s, c) = kahan_inc(v, s, c);
                    }
                    s + c
                }
                "avg_over_time" => {
                    let (mut mean, mut count, mut c) = (0.0f64, 0.0f64, 0.0f64);
                    for v in vals {
                        count += 1.0;
                        if mean.is_infinite() {
                            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                                continue;
                            }
                            if !v.is_infinite() && !v.is_nan() {
                                continue;
                            }
                        }
                        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
                    }
                    if mean.is_infinite() { mean } else { mean + c }
                }
                "min_over_time" | "max_over_time" => {
                    let mut acc = fl[0].1;
                    for v in vals {
                        let better = if name == "min_over_time" { v < acc } else { v > acc };
                        if better || acc.is_nan() {
                            acc = v;
                        }
                    }
                    acc
                }
                "stddev_over_time" | "stdvar_over_time" => {
                    let (mut count, mut mean, mut cm, mut aux, mut ca) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for v in vals {
                        count += 1.0;
                        let delta = v - (mean + cm);
                        (mean, cm) = kahan_inc(delta / count, mean, cm);
                        (aux, ca) = kahan_inc(delta * (v - (mean + cm)), aux, ca);
                    }
                    let var = (aux + ca) / count;
                    if name == "stddev_over_time" { var.sqrt() } else { var }
                }
                "quantile_over_time" => quantile(sc[0], vals.collect()),
                _ => return Err(QueryError::Execution(format!("unknown range function {name}"))),
            };
            Ok(f(v))
        }
    }
}

/// Indices `k` of a series' floats where a counter resets (`v[k] < v[k-1]`), in order.
fn counter_resets(fl: &[(i64, f64)]) -> Vec<u32> {
    let mut out = Vec::new();
    for k in 1..fl.len() {
        if fl[k].1 < fl[k - 1].1 {
            out.push(k as u32);
        }
    }
    out
}

/// `rate` (or `increase`) of window `w` of the float-only series `s`, whose first float is
/// `s.floats[lo]`, with the resets of the whole series given by [`counter_resets`]: the same
/// result, bit for bit, as [`extrapolated_rate`] over `w`.
fn indexed_rate(
    s: &Loaded,
    resets: &[u32],
    w: &Window<'_>,
    lo: usize,
    is_rate: bool,
    range: i64,
    memo: &mut RateMemo,
) -> Option<f64> {
    let fl = w.floats;
    if fl.len() < 2 {
        return None;
    }
    let hi = lo + fl.len();
    let mut r = fl[fl.len() - 1].1 - fl[0].1;
    let first = resets.partition_point(|&k| (k as usize) <= lo);
    for &k in resets[first..].iter().take_while(|&&k| (k as usize) < hi) {
        r += s.floats[k as usize - 1].1;
    }
    let (first_t, last_t, first_v) = (fl[0].0, fl[fl.len() - 1].0, fl[0].1);
    let key = (first_t - w.start, w.end - last_t, last_t - first_t, fl.len());
    if memo.key != Some(key) {
        let sampled = (last_t - first_t) as f64 / 1000.0;
        memo.ratio = ((first_t - w.start) as f64 / 1000.0) / sampled;
        memo.factor = extrapolation_factor(first_t, last_t, fl.len(), w.start, w.end, None, is_rate, range);
        memo.key = Some(key);
    }
    // The start is capped where the counter would have been zero only when that point
    // (`sampled × first_v / r` before the first sample) is nearer than the window's start, i.e.
    // when `first_v` is at most about `r × to_start / sampled`; the margin (1e-9, against a few
    // ulps of rounding) sends every case near the edge through the exact computation.
    let capped = r > 0.0 && first_v >= 0.0 && !(r.is_finite() && first_v > r * memo.ratio * (1.0 + 1e-9));
    let factor = if capped { float_factor(fl, r, w.start, w.end, true, is_rate, range) } else { memo.factor };
    Some(r * factor)
}

/// The extrapolation factor of the last window of one series (for one `is_rate`) without the
/// counter's zero cap, keyed by everything it depends on: the gaps from the window's start to
/// its first sample and from its last sample to its end, the sampled span and the sample count.
/// Scrapes at a fixed interval give the same key window after window, so the divisions are done
/// once per series; the result is bit for bit what [`extrapolation_factor`] computes.
#[derive(Default)]
struct RateMemo {
    key: Option<(i64, i64, i64, usize)>,
    /// The uncapped factor.
    factor: f64,
    /// Gap to the window's start over the sampled span, both in seconds.
    ratio: f64,
}

/// Adds the value before every counter reset inside `fl` to `r`, in order.
fn scan_resets(fl: &[(i64, f64)], r: &mut f64) {
    let mut prev = fl[0].1;
    for &(_, cur) in &fl[1..] {
        if cur < prev {
            *r += prev;
        }
        prev = cur;
    }
}

/// `rate`, `increase` and `delta` with Prometheus' extrapolation to the window edges.
fn extrapolated_rate(w: &Window<'_>, is_counter: bool, is_rate: bool, range: i64) -> Option<Point> {
    if w.hists.is_empty() {
        let fl = w.floats;
        if fl.len() < 2 {
            return None;
        }
        let mut r = fl[fl.len() - 1].1 - fl[0].1;
        if is_counter {
            scan_resets(fl, &mut r);
        }
        return Some(Point::Float(r * float_factor(fl, r, w.start, w.end, is_counter, is_rate, range)));
    }
    if !w.floats.is_empty() || w.hists.len() < 2 {
        return None;
    }
    let hs = w.hists;
    let min_schema = hs.iter().map(|h| h.1.schema).min().unwrap_or(0);
    let mut h = hs[hs.len() - 1].1.to_schema(min_schema).sub(&hs[0].1);
    if is_counter {
        let mut prev = &hs[0].1;
        for cur in &hs[1..] {
            if cur.1.detect_reset(prev) {
                h = h.add(prev);
            }
            prev = &cur.1;
        }
    }
    let factor = extrapolation_factor(hs[0].0, hs[hs.len() - 1].0, hs.len(), w.start, w.end, None, is_rate, range);
    Some(Point::Histogram(h.mul(factor)))
}

/// The extrapolation factor of a float window `fl` (at least two samples) whose raw increase
/// (reset-corrected for counters) is `result`: a counter is not extrapolated below zero.
fn float_factor(
    fl: &[(i64, f64)],
    result: f64,
    start: i64,
    end: i64,
    is_counter: bool,
    is_rate: bool,
    range: i64,
) -> f64 {
    let (first_t, last_t, first_v) = (fl[0].0, fl[fl.len() - 1].0, fl[0].1);
    let to_zero =
        (is_counter && result > 0.0 && first_v >= 0.0).then(|| (last_t - first_t) as f64 / 1000.0 * (first_v / result));
    extrapolation_factor(first_t, last_t, fl.len(), start, end, to_zero, is_rate, range)
}

/// Prometheus' extrapolation of an increase seen between `first_t` and `last_t` (`count`
/// samples) to the window `start..end`: each edge is extended by the gap to it, or by half the
/// average sample interval when the gap is over 1.1 intervals (the series started or ended
/// inside the window); `to_zero`, for counters, caps the extension at the start to where the
/// counter would have been zero. Divided by the range in seconds for `rate`.
#[allow(clippy::too_many_arguments)]
fn extrapolation_factor(
    first_t: i64,
    last_t: i64,
    count: usize,
    start: i64,
    end: i64,
    to_zero: Option<f64>,
    is_rate: bool,
    range: i64,
) -> f64 {
    let mut to_start = (first_t - start) as f64 / 1000.0;
    let to_end = (end - last_t) as f64 / 1000.0;
    let sampled = (last_t - first_t) as f64 / 1000.0;
    let avg = sampled / (count - 1) as f64;
    if let Some(z) = to_zero
        && z < to_start
    {
        to_start = z;
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { avg / 2.0 };
    interval += if to_end < threshold { to_end } else { avg / 2.0 };
    let mut factor = interval / sampled;
    if is_rate {
        factor /= range as f64 / 1000.0;
    }
    factor
}

fn histogram_quantile(q: f64, vec: Vector) -> Vector {
    let mut order: Vec<Labels> = Vec::new();
    // Per group (labels without `le`): output labels and `(upper_bound, count)` buckets.
    type Buckets = (Arc<Labels>, Vec<(f64, f64)>);
    let mut groups: HashMap<Labels, Buckets> = HashMap::new();
    let mut natives: Vec<&S> = Vec::new();
    for s in &vec {
        if s.h().is_some() {
            natives.push(s);
            continue;
        }
        let Some(le) = s.labels.get("le").and_then(parse_go_float) else { continue };
        let mut sig = (*s.labels).clone();
        sig.set("le", "");
        let v = s.f().unwrap_or(f64::NAN);
        match groups.get_mut(&sig) {
            Some(g) => g.1.push((le, v)),
            None => {
                let mut out_labels = sig.clone();
                out_labels.set("__name__", "");
                order.push(sig.clone());
                groups.insert(sig, (Arc::new(out_labels), vec![(le, v)]));
            }
        }
    }
    let mut out = Vec::new();
    for s in natives {
        if let Some(g) = groups.get_mut(&*s.labels) {
            // Classic buckets and a native histogram with the same labels: neither is evaluated.
            g.1.clear();
            continue;
        }
        if let Some(h) = s.h() {
            out.push(S::float(drop_name(&s.labels), native_quantile(q, h)));
        }
    }
    for sig in order {
        if let Some((labels, buckets)) = groups.remove(&sig)
            && !buckets.is_empty()
        {
            out.push(S::float(labels, bucket_quantile(q, buckets)));
        }
    }
    out
}

/// Go's `strconv.ParseFloat` for the forms label values use.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    let t = s.trim_start_matches('+');
    match t.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => return Some(if s.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY }),
        "-inf" | "-infinity" => return Some(f64::NEG_INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if s.is_empty() || s.contains('_') {
        return None;
    }
    s.parse::<f64>().ok()
}

fn label_replace(ev: &Evaluator<'_>, args: &[&Expr]) -> Result<Val, QueryError> {
    let strs: Vec<String> = args[1..5].iter().map(|a| string_arg(a)).collect::<Result<_, _>>()?;
    let (dst, repl, src, re) = (&strs[0], &strs[1], &strs[2], &strs[3]);
    let regex = regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|_| QueryError::Execution(format!("invalid regular expression in label_replace(): {re}")))?;
    if !valid_label_name(dst) {
        return Err(QueryError::Execution(format!("invalid destination label name in label_replace(): {dst}")));
    }
    let v = ev.eval_vector(args[0])?;
    let mut out = Vec::with_capacity(v.len());
    for vec in v {
        let r: Vector = vec
            .into_iter()
            .map(|s| {
                let val = s.labels.get(src).unwrap_or("");
                match regex.captures(val) {
                    Some(caps) => {
                        let mut res = String::new();
                        caps.expand(repl, &mut res);
                        let mut l = (*s.labels).clone();
                        l.set(dst.clone(), res);
                        S { labels: Arc::new(l), point: s.point }
                    }
                    None => s,
                }
            })
            .collect();
        check_unique(&r)?;
        out.push(r);
    }
    Ok(Val::Vector(out))
}

fn label_join(ev: &Evaluator<'_>, args: &[&Expr]) -> Result<Val, QueryError> {
    let dst = string_arg(args[1])?;
    let sep = string_arg(args[2])?;
    let srcs: Vec<String> = args[3..].iter().map(|a| string_arg(a)).collect::<Result<_, _>>()?;
    if !valid_label_name(&dst) {
        return Err(QueryError::Execution(format!("invalid destination label name in label_join(): {dst}")));
    }
    for s in &srcs {
        if !valid_label_name(s) {
            return Err(QueryError::Execution(format!("invalid source label name in label_join(): {s}")));
        }
    }
    let v = ev.eval_vector(args[0])?;
    let mut out = Vec::with_capacity(v.len());
    for vec in v {
        let r: Vector = vec
            .into_iter()
            .map(|s| {
                let joined: Vec<&str> = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect();
                let mut l = (*s.labels).clone();
                l.set(dst.clone(), joined.join(&sep));
                S { labels: Arc::new(l), point: s.point }
            })
            .collect();
        check_unique(&r)?;
        out.push(r);
    }
    Ok(Val::Vector(out))
}

fn string_arg(e: &Expr) -> Result<String, QueryError> {
    match unwrap_parens(e) {
        Expr::StringLiteral(s) => Ok(s.val.clone()),
        _ => Err(QueryError::Execution("expected a string literal argument".into())),
    }
}

/// Civil date parts of a Unix time in seconds (UTC), as Go's `time.Unix(int64(v), 0).UTC()`.
fn date_part(name: &str, v: f64) -> f64 {
    if !v.is_finite() {
        return f64::NAN;
    }
    let secs = v.trunc() as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    match name {
        "year" => y as f64,
        "month" => m as f64,
        "day_of_month" => d as f64,
        "day_of_week" => ((days + 4).rem_euclid(7)) as f64,
        "day_of_year" => (dim[..(m - 1) as usize].iter().sum::<i64>() + d) as f64,
        "days_in_month" => dim[(m - 1) as usize] as f64,
        "hour" => (sod / 3600) as f64,
        "minute" => (sod % 3600 / 60) as f64,
        _ => f64::NAN,
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter with resets, gaps and repeated values.
    fn series(seed: u64, len: usize) -> Loaded {
        let mut x = seed | 1;
        let mut v = 0.0f64;
        let mut t = 0i64;
        let mut floats = Vec::new();
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += 5_000 + (x % 4) as i64 * 5_000;
            match x % 11 {
                0 => v = (x % 50) as f64 / 3.0,
                1 => {}
                _ => v += (x % 1000) as f64 / 7.0,
            }
            floats.push((t, v));
        }
        Loaded { labels: Arc::new(Labels::new()), floats, hists: Vec::new() }
    }

    /// The reset index and the moving window cursor give the same windows and bit-identical
    /// rates as a binary search plus a scan of every window.
    #[test]
    fn incremental_rate_matches_the_window_scan() {
        for seed in 1..80u64 {
            let mut s = series(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 300);
            if seed >= 40 {
                // Regular scrapes (the memo's case): every 15 s, with counters that restart
                // near zero (the zero cap) and values on both sides of the cap's edge.
                for (k, p) in s.floats.iter_mut().enumerate() {
                    p.0 = 3_000 + k as i64 * 15_000;
                }
            }
            let resets = counter_resets(&s.floats);
            for (range, step) in [(60_000, 15_000), (300_000, 30_000), (20_000, 60_000), (0, 10_000), (45_000, 15_000)]
            {
                let input = RangeInput { series: Vec::new(), range, offset: 7_000, at: None };
                let mut cur = WindowCursor::default();
                let mut memos = [RateMemo::default(), RateMemo::default()];
                for i in 0..250i64 {
                    let ts = i * step;
                    let w = input.window(&s, ts);
                    let wc = input.window_at(&s, ts, &mut cur);
                    assert_eq!(w.floats, wc.floats, "seed {seed} range {range} step {i}");
                    for (is_rate, memo) in [false, true].into_iter().zip(memos.iter_mut()) {
                        let want = extrapolated_rate(&w, true, is_rate, range);
                        let got = indexed_rate(&s, &resets, &wc, cur.fl, is_rate, range, memo);
                        let bits = |p: Option<Point>| match p {
                            Some(Point::Float(v)) => Some(v.to_bits()),
                            Some(Point::Histogram(_)) => panic!("float expected"),
                            None => None,
                        };
                        assert_eq!(bits(want), bits(got.map(Point::Float)), "seed {seed} range {range} step {i}");
                    }
                }
            }
        }
    }
}

//! Aggregation operators (`sum`, `avg`, ..., `topk`, `quantile`, `count_values`) with `by`/`without`.
//!
//! Groups come out in the order their first member appears in the input; `without` always drops
//! `__name__`, `by` keeps only the listed labels.

use std::collections::HashMap;
use std::sync::Arc;

use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_MAX, T_MIN, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier};
use storage::model::Labels;

use super::eval::{Evaluator, S, SeriesOut, Val, Vector, unwrap_parens};
use super::value::{FloatHistogram, Point};
use super::{FastMap, QueryError};

enum Param {
    None,
    Scalar(Vec<f64>),
    Str(String),
}

pub(crate) fn eval_aggregate(ev: &Evaluator<'_>, a: &AggregateExpr) -> Result<Val, QueryError> {
    let op = a.op.id();
    let param = match &a.param {
        None => Param::None,
        Some(p) => match ev.eval(p)? {
            Val::Scalar(v) => Param::Scalar(v),
            Val::String(s) => Param::Str(s),
            _ => return Err(QueryError::Execution("invalid aggregation parameter".into())),
        },
    };
    if op == T_COUNT_VALUES {
        let Param::Str(l) = &param else {
            return Err(QueryError::Execution("count_values needs a string parameter".into()));
        };
        if !valid_label_name(l) {
            return Err(QueryError::Execution(format!("invalid label name {l:?}")));
        }
    }
    if !matches!(
        op,
        T_SUM
            | T_AVG
            | T_COUNT
            | T_MIN
            | T_MAX
            | T_GROUP
            | T_STDDEV
            | T_STDVAR
            | T_TOPK
            | T_BOTTOMK
            | T_QUANTILE
            | T_COUNT_VALUES
    ) {
        return Err(QueryError::BadData(format!("parse error: unknown aggregation operator {}", a.op)));
    }
    if matches!(param, Param::None)
        && let Some(v) = streamed(ev, op, &a.expr, &a.modifier)?
    {
        return Ok(Val::Vector(v));
    }
    let input = ev.eval_vector(&a.expr)?;
    let mut out = Vec::with_capacity(input.len());
    let mut cache = GroupCache::default();
    for (i, vec) in input.into_iter().enumerate() {
        ev.ctx.check()?;
        let p = match &param {
            Param::Scalar(v) => Some(v.get(i).copied().unwrap_or(f64::NAN)),
            _ => None,
        };
        let label = match &param {
            Param::Str(s) => s.as_str(),
            _ => "",
        };
        out.push(aggregate(op, vec, p, label, &a.modifier, &mut cache)?);
    }
    Ok(Val::Vector(out))
}

/// Aggregates without building the input vectors when the input is evaluated series by series
/// (an instant selector, or a function over a range vector): each series' group is found once and
/// its points are folded into per-step accumulators in series order, which is the order the
/// per-step vectors would list them in, so every sum is computed in the same order. `None` when
/// the shape or operator does not allow it.
fn streamed(
    ev: &Evaluator<'_>,
    op: u16,
    e: &Expr,
    m: &Option<LabelModifier>,
) -> Result<Option<Vec<Vector>>, QueryError> {
    if !matches!(op, T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR) {
        return Ok(None);
    }
    let n = ev.steps.len();
    let mut agg =
        Streamed { op, n, m, series: 0, index: FastMap::default(), hasher: Default::default(), groups: Vec::new() };
    match unwrap_parens(e) {
        Expr::VectorSelector(vs) => ev.selector_each(vs, false, &mut |so| agg.add(so))?,
        Expr::Call(c) if super::functions::is_range_function(c.func.name) => {
            let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
            super::functions::range_function_each(ev, c.func.name, &args, &mut |so| agg.add(so))?
        }
        _ => return Ok(None),
    }
    Ok(Some(agg.finish()))
}

/// One group's state at one step.
#[derive(Clone, Default)]
struct Acc {
    /// Members, and float / histogram members.
    n: u32,
    nf: u32,
    nh: u32,
    /// The series (ordinal) of the first member: groups are listed in first-member order.
    first: u32,
    /// Sum, mean, min or max; and stddev's running `value`.
    f: f64,
    g: f64,
    h: Option<Box<FloatHistogram>>,
}

struct StreamGroup {
    labels: Arc<Labels>,
    steps: Vec<Acc>,
}

struct Streamed<'m> {
    op: u16,
    n: usize,
    m: &'m Option<LabelModifier>,
    /// Series seen so far.
    series: u32,
    /// Groups by the hash of their labels (see [`Streamed::group_of`]); colliding groups share
    /// an entry.
    index: FastMap<u64, Vec<usize>>,
    hasher: foldhash::fast::RandomState,
    groups: Vec<StreamGroup>,
}

impl Streamed<'_> {
    fn add(&mut self, so: SeriesOut) -> Result<(), QueryError> {
        let k = self.series;
        self.series += 1;
        if so.is_empty() {
            return Ok(());
        }
        let gi = self.group_of(&so.labels);
        let op = self.op;
        let steps = &mut self.groups[gi].steps;
        // A series has at most one point per step, so floats and histograms can go in turn.
        for (i, v) in so.floats {
            let Some(a) = steps.get_mut(i as usize) else { continue };
            if a.n == 0 {
                a.first = k;
            }
            a.n += 1;
            fold_float(op, a, v);
            a.nf += 1;
        }
        for (i, h) in so.hists {
            let Some(a) = steps.get_mut(i as usize) else { continue };
            if a.n == 0 {
                a.first = k;
            }
            a.n += 1;
            if matches!(op, T_SUM | T_AVG) {
                a.h = Some(match a.h.take() {
                    None => Box::new(h),
                    Some(acc) => Box::new(acc.add(&h)),
                });
            }
            a.nh += 1;
        }
        Ok(())
    }

    /// The group of a series with labels `l`, created if new. The group's labels are hashed and
    /// compared straight from `l` (no copy for a group seen before).
    fn group_of(&mut self, l: &Labels) -> usize {
        use std::hash::{BuildHasher, Hash, Hasher};
        let m = self.m;
        let mut h = self.hasher.build_hasher();
        for x in l.iter().filter(|x| in_group(x, m)) {
            x.hash(&mut h);
        }
        let key = h.finish();
        let entry = self.index.entry(key).or_default();
        for &gi in entry.iter() {
            if self.groups[gi].labels.iter().eq(l.iter().filter(|x| in_group(x, m))) {
                return gi;
            }
        }
        let gi = self.groups.len();
        entry.push(gi);
        self.groups.push(StreamGroup { labels: Arc::new(group_labels(l, m)), steps: vec![Acc::default(); self.n] });
        gi
    }

    fn finish(self) -> Vec<Vector> {
        let op = self.op;
        let mut out: Vec<Vec<(u32, S)>> = vec![Vec::new(); self.n];
        for g in self.groups {
            for (i, a) in g.steps.into_iter().enumerate() {
                if a.n == 0 {
                    continue;
                }
                let first = a.first;
                if let Some(p) = result(op, a) {
                    out[i].push((first, S { labels: g.labels.clone(), point: p }));
                }
            }
        }
        out.into_iter()
            .map(|mut v| {
                v.sort_unstable_by_key(|x| x.0);
                v.into_iter().map(|x| x.1).collect()
            })
            .collect()
    }
}

/// Folds a float member into an accumulator as [`reduce`] does over the members in order.
fn fold_float(op: u16, a: &mut Acc, v: f64) {
    if a.nf == 0 {
        a.f = v;
        a.g = 0.0;
        return;
    }
    let n = f64::from(a.nf) + 1.0;
    match op {
        T_SUM => a.f += v,
        T_AVG => {
            let mean = a.f;
            if mean.is_infinite() {
                if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                    return;
                }
                if !v.is_infinite() && !v.is_nan() {
                    return;
                }
            }
            a.f = mean + (v / n - mean / n);
        }
        T_MIN | T_MAX => {
            let replace = if op == T_MIN { a.f > v } else { a.f < v };
            if replace || a.f.is_nan() {
                a.f = v;
            }
        }
        T_STDDEV | T_STDVAR => {
            let delta = v - a.f;
            a.f += delta / n;
            a.g += delta * (v - a.f);
        }
        _ => {}
    }
}

/// The aggregate of one group at one step, as [`reduce`] gives it.
fn result(op: u16, a: Acc) -> Option<Point> {
    match op {
        T_COUNT => Some(Point::Float(f64::from(a.n))),
        T_GROUP => Some(Point::Float(1.0)),
        T_SUM | T_AVG => {
            if a.nh > 0 {
                if a.nh != a.n {
                    return None;
                }
                let h = *a.h?;
                return Some(Point::Histogram(if op == T_AVG { h.div(f64::from(a.nh)) } else { h }));
            }
            (a.nf > 0).then_some(Point::Float(a.f))
        }
        T_MIN | T_MAX => (a.nf > 0).then_some(Point::Float(a.f)),
        T_STDDEV | T_STDVAR => {
            if a.nf == 0 {
                return None;
            }
            let var = a.g / f64::from(a.nf);
            Some(Point::Float(if op == T_STDDEV { var.sqrt() } else { var }))
        }
        _ => None,
    }
}

pub(crate) fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether label `x` is one of the grouping labels of `m` (as [`group_labels`] keeps them).
fn in_group(x: &storage::model::Label, m: &Option<LabelModifier>) -> bool {
    match m {
        None => false,
        Some(LabelModifier::Include(names)) => names.labels.contains(&x.name) && !x.value.is_empty(),
        Some(LabelModifier::Exclude(names)) => {
            x.name != "__name__" && !names.labels.contains(&x.name) && !x.value.is_empty()
        }
    }
}

fn group_labels(l: &Labels, m: &Option<LabelModifier>) -> Labels {
    match m {
        None => Labels::new(),
        Some(LabelModifier::Include(names)) => Labels::from_pairs(
            l.iter().filter(|x| names.labels.contains(&x.name)).map(|x| (x.name.clone(), x.value.clone())),
        ),
        Some(LabelModifier::Exclude(names)) => Labels::from_pairs(
            l.iter()
                .filter(|x| x.name != "__name__" && !names.labels.contains(&x.name))
                .map(|x| (x.name.clone(), x.value.clone())),
        ),
    }
}

struct Group<'v> {
    labels: Arc<Labels>,
    members: Vec<&'v S>,
}

/// Go's `math.Max`/`math.Min`-free comparisons used by min/max: NaN is replaced by any value.
/// Group labels per input label set, cached across steps; entries keep the input set alive so its
/// address is not reused meanwhile.
#[derive(Default)]
struct GroupCache(HashMap<usize, (Arc<Labels>, Arc<Labels>)>);

impl GroupCache {
    fn get(&mut self, l: &Arc<Labels>, m: &Option<LabelModifier>) -> Arc<Labels> {
        let key = Arc::as_ptr(l) as usize;
        if let Some((_, g)) = self.0.get(&key) {
            return g.clone();
        }
        let g = Arc::new(group_labels(l, m));
        self.0.insert(key, (l.clone(), g.clone()));
        g
    }
}

fn aggregate(
    op: u16,
    vec: Vector,
    param: Option<f64>,
    label: &str,
    m: &Option<LabelModifier>,
    cache: &mut GroupCache,
) -> Result<Vector, QueryError> {
    let mut k = 0usize;
    if op == T_TOPK || op == T_BOTTOMK {
        let f = param.unwrap_or(f64::NAN);
        if f.is_nan() || !(-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
            return Err(QueryError::Execution(format!("Scalar value {} overflows int64", go_float(f))));
        }
        if f < 1.0 {
            return Ok(Vec::new());
        }
        k = f.trunc() as usize;
    }
    // Groups in order of first appearance.
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for s in &vec {
        let mut gl = cache.get(&s.labels, m);
        if op == T_COUNT_VALUES {
            let v = match &s.point {
                Point::Float(f) => go_float(*f),
                Point::Histogram(_) => continue,
            };
            let mut l = (*gl).clone();
            l.set(label, v);
            gl = Arc::new(l);
        }
        let gi = match index.get(&gl) {
            Some(i) => *i,
            None => {
                index.insert(gl.clone(), groups.len());
                groups.push(Group { labels: gl, members: Vec::new() });
                groups.len() - 1
            }
        };
        groups[gi].members.push(s);
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        match op {
            T_TOPK | T_BOTTOMK => out.extend(
                first_k(g.members.into_iter().filter(|s| s.f().is_some()), k, op == T_TOPK).into_iter().cloned(),
            ),
            _ => {
                if let Some(p) = reduce(op, &g.members, param) {
                    out.push(S { labels: g.labels, point: p });
                }
            }
        }
    }
    Ok(out)
}

/// The first `k` float samples of `members` in a stable sort by value, descending for `top`
/// (ascending otherwise), NaN last either way: what sorting them all and keeping `k` gives, kept
/// in a list of at most `k` (a sample enters only when it sorts before the last kept one, after
/// the kept ones that sort equal to it).
fn first_k<'v>(members: impl Iterator<Item = &'v S>, k: usize, top: bool) -> Vec<&'v S> {
    let order = |a: &&S, b: &&S| super::functions::nan_last(a, b, top);
    if k > 32 {
        // Insertion into a long list costs more than one sort.
        let mut all: Vec<&S> = members.collect();
        all.sort_by(order);
        all.truncate(k);
        return all;
    }
    let mut kept: Vec<&S> = Vec::with_capacity(k + 1);
    if k == 0 {
        return kept;
    }
    for s in members {
        if kept.len() == k && kept.last().is_some_and(|w| order(&s, w) != std::cmp::Ordering::Less) {
            continue;
        }
        let at = kept.partition_point(|b| order(b, &s) != std::cmp::Ordering::Greater);
        kept.insert(at, s);
        if kept.len() > k {
            kept.pop();
        }
    }
    kept
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

fn reduce(op: u16, members: &[&S], param: Option<f64>) -> Option<Point> {
    let floats = || members.iter().filter_map(|s| s.f());
    match op {
        T_COUNT | T_COUNT_VALUES => Some(Point::Float(members.len() as f64)),
        T_GROUP => Some(Point::Float(1.0)),
        T_SUM | T_AVG => {
            let hists: Vec<&FloatHistogram> = members.iter().filter_map(|s| s.h()).collect();
            if !hists.is_empty() {
                if hists.len() != members.len() {
                    return None;
                }
                let mut acc = hists[0].clone();
                for h in &hists[1..] {
                    acc = acc.add(h);
                }
                if op == T_AVG {
                    acc = acc.div(hists.len() as f64);
                }
                return Some(Point::Histogram(acc));
            }
            let mut it = floats();
            let first = it.next()?;
            if op == T_SUM {
                Some(Point::Float(it.fold(first, |a, v| a + v)))
            } else {
                let (mut mean, mut n) = (first, 1.0f64);
                for v in it {
                    n += 1.0;
                    if mean.is_infinite() {
                        if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                            continue;
                        }
                        if !v.is_infinite() && !v.is_nan() {
                            continue;
                        }
                    }
                    mean += v / n - mean / n;
                }
                Some(Point::Float(mean))
            }
        }
        T_MIN | T_MAX => {
            let mut it = floats();
            let mut acc = it.next()?;
            for v in it {
                let replace = if op == T_MIN { acc > v } else { acc < v };
                if replace || acc.is_nan() {
                    acc = v;
                }
            }
            Some(Point::Float(acc))
        }
        T_STDDEV | T_STDVAR => {
            let mut it = floats();
            let first = it.next()?;
            let (mut mean, mut value, mut n) = (first, 0.0f64, 1.0f64);
            for v in it {
                n += 1.0;
                let delta = v - mean;
                mean += delta / n;
                value += delta * (v - mean);
            }
            let var = value / n;
            Some(Point::Float(if op == T_STDDEV { var.sqrt() } else { var }))
        }
        T_QUANTILE => {
            let vals: Vec<f64> = floats().collect();
            if vals.is_empty() {
                return None;
            }
            Some(Point::Float(quantile(param.unwrap_or(f64::NAN), vals)))
        }
        _ => None,
    }
}

/// Prometheus' `quantile`: linear interpolation between the closest ranks; NaN sorts first.
pub(crate) fn quantile(q: f64, mut values: Vec<f64>) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `first_k` keeps what a stable sort of every sample and a cut at `k` keep, in that order,
    /// ties and NaN included.
    #[test]
    fn first_k_is_a_stable_sort_cut_at_k() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for round in 0..300 {
            let n = (round % 40) as usize;
            let members: Vec<S> = (0..n)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let v = match x % 7 {
                        0 => f64::NAN,
                        1 => 0.0,
                        2 => -0.0,
                        _ => (x % 5) as f64,
                    };
                    S::float(Arc::new(Labels::from_pairs([("i", i.to_string())])), v)
                })
                .collect();
            for k in [0usize, 1, 2, 5, 33, 50] {
                for top in [true, false] {
                    let mut want = members.clone();
                    want.sort_by(|a, b| {
                        let (x, y) = (a.f().unwrap(), b.f().unwrap());
                        match (x.is_nan(), y.is_nan()) {
                            (true, true) => std::cmp::Ordering::Equal,
                            (true, false) => std::cmp::Ordering::Greater,
                            (false, true) => std::cmp::Ordering::Less,
                            _ if top => y.partial_cmp(&x).unwrap(),
                            _ => x.partial_cmp(&y).unwrap(),
                        }
                    });
                    want.truncate(k);
                    let got: Vec<S> = first_k(members.iter(), k, top).into_iter().cloned().collect();
                    let ids = |v: &[S]| v.iter().map(|s| s.labels.get("i").unwrap().to_string()).collect::<Vec<_>>();
                    assert_eq!(ids(&got), ids(&want), "round {round} k {k} top {top}");
                }
            }
        }
    }
}

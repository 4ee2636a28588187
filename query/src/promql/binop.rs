//! Binary operators: arithmetic, comparison (with `bool`), `atan2`, and the set operators, with
//! Prometheus' vector matching (`on`/`ignoring`, `group_left`/`group_right`).
//!
//! Matching signatures: with `on(l...)` only the listed labels count; otherwise every label except
//! the listed ones and `__name__`.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_DIV, T_EQLC, T_GTE, T_GTR, T_LAND, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MOD, T_MUL, T_NEQ, T_POW,
    T_SUB, TokenId,
};
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};
use storage::model::Labels;

use super::QueryError;
use super::eval::{Evaluator, NameCache, S, Val, Vector, check_unique, drop_name};
use super::value::Point;

fn is_comparison(op: TokenId) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

/// Arithmetic operators drop the metric name; comparisons and `atan2` keep the left-hand side's
/// (as Prometheus 2.x does).
fn drops_name(op: TokenId) -> bool {
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW)
}

/// Scalar operation: `(value, keep)`; for comparisons `value` is the left operand.
pub(crate) fn float_op(op: TokenId, l: f64, r: f64) -> (f64, bool) {
    match op {
        T_ADD => (l + r, true),
        T_SUB => (l - r, true),
        T_MUL => (l * r, true),
        T_DIV => (l / r, true),
        T_MOD => (l % r, true),
        T_POW => (l.powf(r), true),
        T_ATAN2 => (l.atan2(r), true),
        T_EQLC => (l, l == r),
        T_NEQ => (l, l != r),
        T_GTR => (l, l > r),
        T_LSS => (l, l < r),
        T_GTE => (l, l >= r),
        T_LTE => (l, l <= r),
        _ => (f64::NAN, false),
    }
}

/// Element operation over floats and histograms; `None` drops the element.
fn elem_op(op: TokenId, l: &Point, r: &Point) -> Option<(Point, bool)> {
    match (l, r) {
        (Point::Float(a), Point::Float(b)) => {
            let (v, keep) = float_op(op, *a, *b);
            Some((Point::Float(v), keep))
        }
        (Point::Histogram(a), Point::Histogram(b)) => match op {
            T_ADD => Some((Point::Histogram(a.add(b)), true)),
            T_SUB => Some((Point::Histogram(a.sub(b)), true)),
            _ => None,
        },
        (Point::Histogram(a), Point::Float(b)) => match op {
            T_MUL => Some((Point::Histogram(a.mul(*b)), true)),
            T_DIV => Some((Point::Histogram(a.div(*b)), true)),
            _ => None,
        },
        (Point::Float(a), Point::Histogram(b)) => match op {
            T_MUL => Some((Point::Histogram(b.mul(*a)), true)),
            _ => None,
        },
    }
}

pub(crate) fn eval_binary(ev: &Evaluator<'_>, b: &BinaryExpr) -> Result<Val, QueryError> {
    let op = b.op.id();
    let return_bool = b.return_bool();
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(r.iter())
                .map(|(a, b)| {
                    let (v, keep) = float_op(op, *a, *b);
                    if is_comparison(op) { if keep { 1.0 } else { 0.0 } } else { v }
                })
                .collect(),
        )),
        (Val::Vector(l), Val::Scalar(r)) => {
            let mut names = NameCache::default();
            let out: Vec<Vector> =
                l.into_iter().zip(r).map(|(v, s)| vector_scalar(op, v, s, false, return_bool, &mut names)).collect();
            out.iter().try_for_each(|v| check_unique(v))?;
            Ok(Val::Vector(out))
        }
        (Val::Scalar(l), Val::Vector(r)) => {
            let mut names = NameCache::default();
            let out: Vec<Vector> =
                r.into_iter().zip(l).map(|(v, s)| vector_scalar(op, v, s, true, return_bool, &mut names)).collect();
            out.iter().try_for_each(|v| check_unique(v))?;
            Ok(Val::Vector(out))
        }
        (Val::Vector(l), Val::Vector(r)) => {
            let matching = b.modifier.as_ref().and_then(|m| m.matching.clone());
            let card = b.modifier.as_ref().map(|m| m.card.clone()).unwrap_or(VectorMatchCardinality::OneToOne);
            let mut out = Vec::with_capacity(l.len());
            let mut total = 0usize;
            let mut sigs = Sigs::new(&matching);
            let mut metrics = HashMap::new();
            for (lv, rv) in l.into_iter().zip(r) {
                ev.ctx.check()?;
                let v = match op {
                    T_LAND => set_and(lv, &rv, &mut sigs),
                    T_LOR => set_or(lv, rv, &mut sigs),
                    T_LUNLESS => set_unless(lv, &rv, &mut sigs),
                    _ => vector_binop(op, lv, rv, &mut sigs, &card, return_bool, &mut metrics)?,
                };
                check_unique(&v)?;
                total += v.len();
                ev.ctx.limit(total)?;
                out.push(v);
            }
            Ok(Val::Vector(out))
        }
        _ => Err(QueryError::Execution("binary expression must contain only scalar and instant vector types".into())),
    }
}

fn vector_scalar(op: TokenId, v: Vector, s: f64, swap: bool, return_bool: bool, names: &mut NameCache) -> Vector {
    let mut out = Vec::with_capacity(v.len());
    for e in v {
        let sp = Point::Float(s);
        let res = if swap { elem_op(op, &sp, &e.point) } else { elem_op(op, &e.point, &sp) };
        let Some((mut value, mut keep)) = res else { continue };
        if is_comparison(op) && swap {
            // A comparison keeps the vector element's value even when the scalar is on the left.
            value = e.point.clone();
        }
        if return_bool {
            value = Point::Float(if keep { 1.0 } else { 0.0 });
            keep = true;
        }
        if keep {
            let labels = if drops_name(op) || return_bool { names.drop_name(&e.labels) } else { e.labels.clone() };
            out.push(S { labels, point: value });
        }
    }
    out
}

/// The matching signature of a label set.
fn signature(l: &Labels, matching: &Option<LabelModifier>) -> Vec<(String, String)> {
    match matching {
        Some(LabelModifier::Include(names)) => {
            let mut out: Vec<(String, String)> = Vec::with_capacity(names.labels.len());
            for n in &names.labels {
                if let Some(v) = l.get(n) {
                    out.push((n.clone(), v.to_string()));
                }
            }
            out.sort();
            out.dedup();
            out
        }
        Some(LabelModifier::Exclude(names)) => l
            .iter()
            .filter(|x| x.name != "__name__" && !names.labels.contains(&x.name))
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect(),
        None => l.iter().filter(|x| x.name != "__name__").map(|x| (x.name.clone(), x.value.clone())).collect(),
    }
}

/// Signatures (hashed, as Prometheus does) cached per label set across the steps of one operation.
/// The cache keeps each label set alive, so a pointer is never reused for another set meanwhile.
struct Sigs<'m> {
    matching: &'m Option<LabelModifier>,
    cache: HashMap<usize, (Arc<Labels>, u64)>,
}

impl<'m> Sigs<'m> {
    fn new(matching: &'m Option<LabelModifier>) -> Self {
        Sigs { matching, cache: HashMap::new() }
    }

    fn get(&mut self, l: &Arc<Labels>) -> u64 {
        let key = Arc::as_ptr(l) as usize;
        if let Some((_, h)) = self.cache.get(&key) {
            return *h;
        }
        let mut hasher = std::hash::DefaultHasher::new();
        for (n, v) in signature(l, self.matching) {
            n.hash(&mut hasher);
            v.hash(&mut hasher);
        }
        let h = hasher.finish();
        self.cache.insert(key, (l.clone(), h));
        h
    }
}

fn set_and(l: Vector, r: &Vector, sigs: &mut Sigs<'_>) -> Vector {
    let rs: HashSet<u64> = r.iter().map(|s| sigs.get(&s.labels)).collect();
    l.into_iter().filter(|s| rs.contains(&sigs.get(&s.labels))).collect()
}

fn set_or(l: Vector, r: Vector, sigs: &mut Sigs<'_>) -> Vector {
    let ls: HashSet<u64> = l.iter().map(|s| sigs.get(&s.labels)).collect();
    let mut out = l;
    out.extend(r.into_iter().filter(|s| !ls.contains(&sigs.get(&s.labels))));
    out
}

fn set_unless(l: Vector, r: &Vector, sigs: &mut Sigs<'_>) -> Vector {
    let rs: HashSet<u64> = r.iter().map(|s| sigs.get(&s.labels)).collect();
    l.into_iter().filter(|s| !rs.contains(&sigs.get(&s.labels))).collect()
}

fn labels_text(sig: &[(String, String)]) -> String {
    Labels::from_pairs(sig.iter().cloned()).to_string()
}

/// Result labels per (left, right) label set, cached across steps (entries keep both sets alive).
type MetricCache = HashMap<(usize, usize), (Arc<Labels>, Arc<Labels>, Arc<Labels>)>;

fn vector_binop(
    op: TokenId,
    lhs: Vector,
    rhs: Vector,
    sigs: &mut Sigs<'_>,
    card: &VectorMatchCardinality,
    return_bool: bool,
    metrics: &mut MetricCache,
) -> Result<Vector, QueryError> {
    let matching = sigs.matching;
    let one_to_many = matches!(card, VectorMatchCardinality::OneToMany(_));
    let (lhs, rhs) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let include: Option<&Vec<String>> = match card {
        VectorMatchCardinality::ManyToOne(l) | VectorMatchCardinality::OneToMany(l) => Some(&l.labels),
        _ => None,
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    let mut right: HashMap<u64, &S> = HashMap::with_capacity(rhs.len());
    for rs in &rhs {
        let sig = sigs.get(&rs.labels);
        if let Some(dup) = right.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(QueryError::Execution(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                labels_text(&signature(&rs.labels, matching)),
                rs.labels,
                dup.labels
            )));
        }
        right.insert(sig, rs);
    }
    let mut matched: HashMap<u64, HashSet<Arc<Labels>>> = HashMap::new();
    let mut out = Vec::new();
    for ls in &lhs {
        let sig = sigs.get(&ls.labels);
        let Some(rs) = right.get(&sig) else { continue };
        let (lp, rp) = if one_to_many { (&rs.point, &ls.point) } else { (&ls.point, &rs.point) };
        let Some((mut value, keep)) = elem_op(op, lp, rp) else { continue };
        if return_bool {
            value = Point::Float(if keep { 1.0 } else { 0.0 });
        } else if !keep {
            continue;
        }
        let key = (Arc::as_ptr(&ls.labels) as usize, Arc::as_ptr(&rs.labels) as usize);
        let metric = match metrics.get(&key) {
            Some((_, _, m)) => m.clone(),
            None => {
                let mut m = result_metric(&ls.labels, &rs.labels, op, matching, one_to_one, include);
                if return_bool {
                    m = drop_name(&m);
                }
                metrics.insert(key, (ls.labels.clone(), rs.labels.clone(), m.clone()));
                m
            }
        };
        let set = matched.entry(sig).or_default();
        if one_to_one {
            if !set.is_empty() {
                return Err(QueryError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                        .into(),
                ));
            }
        } else if set.contains(&metric) {
            return Err(QueryError::Execution(
                "multiple matches for labels: grouping labels must ensure unique matches".into(),
            ));
        }
        set.insert(metric.clone());
        out.push(S { labels: metric, point: value });
    }
    Ok(out)
}

fn result_metric(
    l: &Arc<Labels>,
    r: &Labels,
    op: TokenId,
    matching: &Option<LabelModifier>,
    one_to_one: bool,
    include: Option<&Vec<String>>,
) -> Arc<Labels> {
    let mut out = (**l).clone();
    if drops_name(op) {
        out.set("__name__", "");
    }
    if one_to_one {
        match matching {
            Some(LabelModifier::Include(names)) => {
                out = Labels::from_pairs(
                    out.iter()
                        .filter(|x| names.labels.contains(&x.name))
                        .map(|x| (x.name.clone(), x.value.clone()))
                        .collect::<Vec<_>>(),
                );
            }
            Some(LabelModifier::Exclude(names)) => {
                for n in &names.labels {
                    out.set(n.clone(), "");
                }
            }
            None => {}
        }
    }
    if let Some(inc) = include {
        for n in inc {
            out.set(n.clone(), r.get(n).unwrap_or(""));
        }
    }
    Arc::new(out)
}

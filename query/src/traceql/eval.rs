//! Evaluation of pipelines over one trace.
//!
//! A trace is indexed once ([`TraceCtx`]: parent links, child counts, root, time bounds); spans are
//! then referred to by their index in it. A [`Spanset`] is a list of span indexes plus the
//! attributes the pipeline attached (`by(...)` values, aggregate results). The first pipeline
//! stage sees one spanset holding every span of the trace, as Tempo's engine does.
//!
//! Value semantics follow Tempo's `BinaryOperation.execute` and `Static.Equals`: operands of
//! mismatched types compare false, a missing attribute is `nil` and every comparison with `nil`
//! (including `!=`) is false, ints and floats and durations compare as numbers, regexes are fully
//! anchored (Prometheus' `FastRegexMatcher`), `&&` and `||` want booleans on both sides.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;
use storage::model::{AnyValue, KeyValue, StatusCode, TraceId};
use storage::read::StoredSpan;

use super::ast::*;

/// One trace, indexed for evaluation.
pub(crate) struct TraceCtx<'a> {
    /// The spans, duplicates (same span id) removed.
    pub spans: Vec<&'a StoredSpan>,
    /// Index of each span's parent.
    pub parent: Vec<Option<usize>>,
    /// Number of children of each span.
    pub children: Vec<i64>,
    /// The root span (first span without a parent).
    pub root: Option<usize>,
    /// Earliest span start (ns).
    pub start_ns: i64,
    /// Latest span end (ns).
    pub end_ns: i64,
    /// The trace id.
    pub trace_id: TraceId,
    /// Nested-set numbering `(left, right, parent's left)` from a depth-first walk of each root's
    /// tree (a root's parent is -1); spans not reachable from a root keep zeros, as in Tempo.
    pub nested: Vec<(i64, i64, i64)>,
}

impl<'a> TraceCtx<'a> {
    pub(crate) fn new(all: &'a [StoredSpan]) -> Self {
        let mut spans: Vec<&StoredSpan> = Vec::with_capacity(all.len());
        let mut by_id: HashMap<[u8; 8], usize> = HashMap::with_capacity(all.len());
        for s in all {
            if by_id.contains_key(&s.span.span_id.0) {
                continue;
            }
            by_id.insert(s.span.span_id.0, spans.len());
            spans.push(s);
        }
        let parent: Vec<Option<usize>> =
            spans.iter().map(|s| s.span.parent_span_id.and_then(|p| by_id.get(&p.0).copied())).collect();
        let mut children = vec![0i64; spans.len()];
        for p in parent.iter().flatten() {
            children[*p] += 1;
        }
        let root = spans.iter().position(|s| s.span.parent_span_id.is_none());
        let start_ns = spans.iter().map(|s| s.span.start_time_ns).min().unwrap_or(0);
        let end_ns = spans.iter().map(|s| s.span.end_time_ns).max().unwrap_or(0);
        let trace_id = spans.first().map(|s| s.span.trace_id).unwrap_or_default();
        let nested = nested_sets(&spans, &parent);
        TraceCtx { spans, parent, children, root, start_ns, end_ns, trace_id, nested }
    }

    fn has_ancestor_in(&self, s: usize, set: &[bool]) -> bool {
        let mut cur = self.parent[s];
        let mut steps = 0;
        while let Some(p) = cur {
            if set[p] {
                return true;
            }
            steps += 1;
            if steps > self.spans.len() {
                return false;
            }
            cur = self.parent[p];
        }
        false
    }
}

fn nested_sets(spans: &[&StoredSpan], parent: &[Option<usize>]) -> Vec<(i64, i64, i64)> {
    let n = spans.len();
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in parent.iter().enumerate() {
        if let Some(p) = p {
            kids[*p].push(i);
        }
    }
    let mut out = vec![(0i64, 0i64, 0i64); n];
    let mut counter = 1i64;
    // (span, next child to visit); a span is entered when pushed.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in (0..n).filter(|&i| spans[i].span.parent_span_id.is_none()) {
        out[root] = (counter, 0, -1);
        counter += 1;
        stack.push((root, 0));
        while let Some(top) = stack.last_mut() {
            let (s, next) = *top;
            if let Some(&c) = kids[s].get(next) {
                top.1 += 1;
                if out[c].0 != 0 {
                    continue; // already numbered: a cycle in bad data
                }
                out[c] = (counter, 0, out[s].0);
                counter += 1;
                stack.push((c, 0));
            } else {
                out[s].1 = counter;
                counter += 1;
                stack.pop();
            }
        }
    }
    out
}

/// A set of spans of one trace, with the attributes the pipeline attached.
#[derive(Clone, Debug, Default)]
pub(crate) struct Spanset {
    pub spans: Vec<usize>,
    pub attrs: Vec<(String, Static)>,
}

/// Compiles a TraceQL regex: fully anchored, `.` matches newlines (Prometheus' matcher).
pub(crate) fn compile_regex(re: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?s:{re})$"))
}

/// The value of a scalar expression made of literals only (`2 * 2`, `-1s`).
pub(crate) fn fold_constant(e: &ScalarExpr) -> Result<Static, String> {
    match e {
        ScalarExpr::Static(s) => Ok(s.clone()),
        ScalarExpr::Aggregate(..) => Err("aggregates are not constant".to_string()),
        ScalarExpr::Binary(op, l, r) => Evaluator::default().binary(*op, fold_constant(l)?, fold_constant(r)?),
    }
}

/// Evaluation state shared across traces (the regex cache).
#[derive(Default)]
pub(crate) struct Evaluator {
    regexes: RefCell<HashMap<String, Regex>>,
}

type EvalResult<T> = Result<T, String>;

/// The event and link a span-level expression is evaluated against.
#[derive(Clone, Copy)]
struct At {
    span: usize,
    event: Option<usize>,
    link: Option<usize>,
}

impl Evaluator {
    /// Runs `pipeline` over the whole trace.
    pub(crate) fn run(&self, ctx: &TraceCtx<'_>, pipeline: &Pipeline) -> EvalResult<Vec<Spanset>> {
        let all = Spanset { spans: (0..ctx.spans.len()).collect(), attrs: Vec::new() };
        self.pipeline(ctx, pipeline, vec![all])
    }

    fn pipeline(&self, ctx: &TraceCtx<'_>, p: &Pipeline, mut input: Vec<Spanset>) -> EvalResult<Vec<Spanset>> {
        for stage in &p.stages {
            if input.is_empty() {
                break;
            }
            input = self.stage(ctx, stage, input)?;
        }
        Ok(input)
    }

    fn stage(&self, ctx: &TraceCtx<'_>, stage: &Stage, input: Vec<Spanset>) -> EvalResult<Vec<Spanset>> {
        match stage {
            Stage::Spanset(e) => {
                let mut out = Vec::new();
                for ss in &input {
                    out.extend(self.spanset(ctx, e, ss)?);
                }
                Ok(out)
            }
            Stage::ScalarFilter { op, lhs, rhs } => {
                let mut out = Vec::new();
                for mut ss in input {
                    let mut attrs = Vec::new();
                    let (Some(l), Some(r)) =
                        (self.scalar(ctx, lhs, &ss, &mut attrs)?, self.scalar(ctx, rhs, &ss, &mut attrs)?)
                    else {
                        continue;
                    };
                    if compare_scalars(*op, &l, &r) {
                        ss.attrs.extend(attrs);
                        out.push(ss);
                    }
                }
                Ok(out)
            }
            Stage::GroupBy(e) => {
                let name = format!("by({})", super::parser::field_string(e));
                let mut out = Vec::new();
                for ss in input {
                    let mut groups: Vec<(Static, Vec<usize>)> = Vec::new();
                    for &s in &ss.spans {
                        let v = self.field(ctx, e, At { span: s, event: None, link: None })?;
                        match groups.iter_mut().find(|(k, _)| strict_equals(k, &v)) {
                            Some((_, spans)) => spans.push(s),
                            None => groups.push((v, vec![s])),
                        }
                    }
                    for (v, spans) in groups {
                        let mut attrs = ss.attrs.clone();
                        attrs.push((name.clone(), v));
                        out.push(Spanset { spans, attrs });
                    }
                }
                Ok(out)
            }
            Stage::Coalesce => {
                let mut spans: Vec<usize> = input.into_iter().flat_map(|ss| ss.spans).collect();
                let mut seen = vec![false; ctx.spans.len()];
                spans.retain(|s| !std::mem::replace(&mut seen[*s], true));
                if spans.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![Spanset { spans, attrs: Vec::new() }])
            }
            Stage::Select(_) => Ok(input),
        }
    }

    fn spanset(&self, ctx: &TraceCtx<'_>, e: &SpansetExpr, input: &Spanset) -> EvalResult<Vec<Spanset>> {
        match e {
            SpansetExpr::Filter(f) => {
                let mut spans = Vec::new();
                for &s in &input.spans {
                    if self.matches(ctx, f, s)? {
                        spans.push(s);
                    }
                }
                if spans.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![Spanset { spans, attrs: input.attrs.clone() }])
            }
            SpansetExpr::Pipeline(p) => self.pipeline(ctx, p, vec![input.clone()]),
            SpansetExpr::Op(op, l, r) => {
                let lhs = self.spanset(ctx, l, input)?;
                let rhs = self.spanset(ctx, r, input)?;
                let matching = match op {
                    SpansetOp::And => {
                        if lhs.is_empty() || rhs.is_empty() {
                            return Ok(Vec::new());
                        }
                        union(ctx, &lhs, &rhs)
                    }
                    SpansetOp::Union => {
                        if lhs.is_empty() && rhs.is_empty() {
                            return Ok(Vec::new());
                        }
                        union(ctx, &lhs, &rhs)
                    }
                    _ => {
                        if rhs.is_empty() {
                            return Ok(Vec::new());
                        }
                        if lhs.len() > 1 || rhs.len() > 1 {
                            return Err("spanset operators are not supported for multiple spansets per trace. consider using coalesce()".to_string());
                        }
                        let l: &[usize] = lhs.first().map(|s| s.spans.as_slice()).unwrap_or(&[]);
                        structural(ctx, *op, l, &rhs[0].spans)
                    }
                };
                if matching.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(vec![Spanset { spans: matching, attrs: input.attrs.clone() }])
            }
        }
    }

    /// True when the filter holds for span `s`: for expressions on events or links, for at least
    /// one of the span's events/links (or with none when it has none).
    pub(crate) fn matches(&self, ctx: &TraceCtx<'_>, f: &FieldExpr, s: usize) -> EvalResult<bool> {
        let (uses_event, uses_link) = scopes_used(f);
        let span = &ctx.spans[s].span;
        let events: Vec<Option<usize>> =
            if uses_event && !span.events.is_empty() { (0..span.events.len()).map(Some).collect() } else { vec![None] };
        let links: Vec<Option<usize>> =
            if uses_link && !span.links.is_empty() { (0..span.links.len()).map(Some).collect() } else { vec![None] };
        for &event in &events {
            for &link in &links {
                if self.field(ctx, f, At { span: s, event, link })? == Static::Bool(true) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn scalar(
        &self,
        ctx: &TraceCtx<'_>,
        e: &ScalarExpr,
        ss: &Spanset,
        attrs: &mut Vec<(String, Static)>,
    ) -> EvalResult<Option<Static>> {
        match e {
            ScalarExpr::Static(s) => Ok(Some(s.clone())),
            ScalarExpr::Aggregate(op, f) => {
                let v = self.aggregate(ctx, *op, f.as_ref(), ss)?;
                if let Some(v) = &v {
                    let name = match f {
                        Some(f) => format!("{}({})", op.as_str(), super::parser::field_string(f)),
                        None => format!("{}()", op.as_str()),
                    };
                    attrs.push((name, v.clone()));
                }
                Ok(v)
            }
            ScalarExpr::Binary(op, l, r) => {
                let (Some(l), Some(r)) = (self.scalar(ctx, l, ss, attrs)?, self.scalar(ctx, r, ss, attrs)?) else {
                    return Ok(None);
                };
                Ok(Some(self.binary(*op, l, r)?))
            }
        }
    }

    fn aggregate(
        &self,
        ctx: &TraceCtx<'_>,
        op: AggregateOp,
        f: Option<&FieldExpr>,
        ss: &Spanset,
    ) -> EvalResult<Option<Static>> {
        let Some(f) = f else {
            return Ok(Some(Static::Int(ss.spans.len() as i64)));
        };
        let mut acc: Option<Static> = None;
        let mut count = 0usize;
        for &s in &ss.spans {
            let v = self.field(ctx, f, At { span: s, event: None, link: None })?;
            if v == Static::Nil {
                continue;
            }
            count += 1;
            acc = Some(match (acc, op) {
                (None, _) => v,
                (Some(a), AggregateOp::Max) => {
                    if compare_static(&v, &a) == std::cmp::Ordering::Greater {
                        v
                    } else {
                        a
                    }
                }
                (Some(a), AggregateOp::Min) => {
                    if compare_static(&v, &a) == std::cmp::Ordering::Less {
                        v
                    } else {
                        a
                    }
                }
                (Some(a), _) => sum_into(a, &v),
            });
        }
        let Some(acc) = acc else { return Ok(None) };
        if op == AggregateOp::Avg {
            let n = count as f64;
            return Ok(Some(match acc {
                Static::Int(i) => Static::Float(i as f64 / n),
                Static::Duration(d) => Static::Duration(d / count as i64),
                Static::Float(x) => Static::Float(x / n),
                other => other,
            }));
        }
        Ok(Some(acc))
    }

    fn field(&self, ctx: &TraceCtx<'_>, e: &FieldExpr, at: At) -> EvalResult<Static> {
        match e {
            FieldExpr::Static(s) => Ok(s.clone()),
            FieldExpr::Attr(a) => Ok(attribute(ctx, a, at)),
            FieldExpr::Unary(op, inner) => {
                let v = self.field(ctx, inner, at)?;
                match op {
                    UnaryOp::Exists => Ok(Static::Bool(v != Static::Nil)),
                    UnaryOp::NotExists => Ok(Static::Bool(v == Static::Nil)),
                    UnaryOp::Not => match v {
                        Static::Bool(b) => Ok(Static::Bool(!b)),
                        Static::Nil => Ok(Static::Nil),
                        other => Err(format!(
                            "expression ({}) expected a boolean, but got {}",
                            super::parser::field_string(e),
                            type_name(&other)
                        )),
                    },
                    UnaryOp::Neg => match v {
                        Static::Int(i) => Ok(Static::Int(i.wrapping_neg())),
                        Static::Float(f) => Ok(Static::Float(-f)),
                        Static::Duration(d) => Ok(Static::Duration(d.wrapping_neg())),
                        Static::Nil => Ok(Static::Nil),
                        other => Err(format!(
                            "expression ({}) expected a numeric, but got {}",
                            super::parser::field_string(e),
                            type_name(&other)
                        )),
                    },
                }
            }
            FieldExpr::Binary(op, l, r) => {
                let lv = self.field(ctx, l, at)?;
                if let Static::Bool(b) = lv {
                    if *op == BinOp::And && !b {
                        return Ok(Static::Bool(false));
                    }
                    if *op == BinOp::Or && b {
                        return Ok(Static::Bool(true));
                    }
                }
                let rv = self.field(ctx, r, at)?;
                self.binary(*op, lv, rv)
            }
        }
    }

    fn regex_match(&self, re: &str, s: &str) -> EvalResult<bool> {
        let mut cache = self.regexes.borrow_mut();
        if let Some(r) = cache.get(re) {
            return Ok(r.is_match(s));
        }
        let r = compile_regex(re).map_err(|e| format!("invalid regex {re:?}: {e}"))?;
        let m = r.is_match(s);
        cache.insert(re.to_string(), r);
        Ok(m)
    }

    /// Tempo's `BinaryOperation.execute` on two values.
    fn binary(&self, op: BinOp, l: Static, r: Static) -> EvalResult<Static> {
        use BinOp::*;
        let (lt, rt) = (ty(&l), ty(&r));
        if !matching_operand(lt, rt) || !op_valid(op, lt) || !op_valid(op, rt) {
            return Ok(Static::Bool(false));
        }
        match (&l, &r) {
            (Static::Str(a), Static::Str(b)) => match op {
                Gt => return Ok(Static::Bool(a > b)),
                Gte => return Ok(Static::Bool(a >= b)),
                Lt => return Ok(Static::Bool(a < b)),
                Lte => return Ok(Static::Bool(a <= b)),
                Re => return Ok(Static::Bool(self.regex_match(b, a)?)),
                Nre => return Ok(Static::Bool(!self.regex_match(b, a)?)),
                _ => {}
            },
            (Static::Int(a), Static::Int(b)) => {
                let (a, b) = (*a, *b);
                match op {
                    Add => return Ok(Static::Int(a.wrapping_add(b))),
                    Sub => return Ok(Static::Int(a.wrapping_sub(b))),
                    Mul => return Ok(Static::Int(a.wrapping_mul(b))),
                    Div if b == 0 => return Err("division by zero".to_string()),
                    Div => return Ok(Static::Int(a.wrapping_div(b))),
                    Mod if b == 0 => return Err("modulo by zero".to_string()),
                    Mod => return Ok(Static::Int(a.wrapping_rem(b))),
                    Gt => return Ok(Static::Bool(a > b)),
                    Gte => return Ok(Static::Bool(a >= b)),
                    Lt => return Ok(Static::Bool(a < b)),
                    Lte => return Ok(Static::Bool(a <= b)),
                    Pow => return Ok(Static::Int((a as f64).powf(b as f64) as i64)),
                    _ => {}
                }
            }
            (Static::Bool(a), Static::Bool(b)) => match op {
                And => return Ok(Static::Bool(*a && *b)),
                Or => return Ok(Static::Bool(*a || *b)),
                _ => {}
            },
            _ => {}
        }
        if is_array(&l) || is_array(&r) {
            return self.array_op(op, l, r);
        }
        let (a, b) = (as_float(&l), as_float(&r));
        Ok(match op {
            Add => Static::Float(a + b),
            Sub => Static::Float(a - b),
            Mul => Static::Float(a * b),
            Div => Static::Float(a / b),
            Mod => Static::Float(a % b),
            Pow => Static::Float(a.powf(b)),
            Gt => Static::Bool(a > b),
            Gte => Static::Bool(a >= b),
            Lt => Static::Bool(a < b),
            Lte => Static::Bool(a <= b),
            Eq => Static::Bool(equals(&l, &r)),
            Neq => Static::Bool(l != Static::Nil && r != Static::Nil && !equals(&l, &r)),
            _ => return Err(format!("unexpected operator {}", op.as_str())),
        })
    }

    /// An array attribute against a scalar: any element matches (all for `!=` and `!~`).
    fn array_op(&self, op: BinOp, l: Static, r: Static) -> EvalResult<Static> {
        if is_array(&l) && is_array(&r) {
            return Err("array operators must consist of a scalar and an array operand".to_string());
        }
        let (array, scalar, flipped) = if is_array(&l) { (l, r, true) } else { (r, l, false) };
        let elem_op = if flipped && !matches!(op, BinOp::Re | BinOp::Nre) { flip(op) } else { op };
        let match_all = matches!(elem_op, BinOp::Neq | BinOp::Nre);
        let elems = elements(&array);
        let mut matched = 0;
        for e in &elems {
            // Regexes keep the pattern on the right whichever side the array is on.
            let res = if matches!(op, BinOp::Re | BinOp::Nre) && flipped {
                self.binary(elem_op, e.clone(), scalar.clone())?
            } else {
                self.binary(elem_op, scalar.clone(), e.clone())?
            };
            if res == Static::Bool(true) {
                matched += 1;
                if !match_all {
                    break;
                }
            }
        }
        Ok(Static::Bool(if match_all { matched == elems.len() } else { matched > 0 }))
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Gt => BinOp::Lt,
        BinOp::Gte => BinOp::Lte,
        BinOp::Lt => BinOp::Gt,
        BinOp::Lte => BinOp::Gte,
        o => o,
    }
}

fn elements(s: &Static) -> Vec<Static> {
    match s {
        Static::IntArray(v) => v.iter().map(|x| Static::Int(*x)).collect(),
        Static::FloatArray(v) => v.iter().map(|x| Static::Float(*x)).collect(),
        Static::StrArray(v) => v.iter().map(|x| Static::Str(x.clone())).collect(),
        Static::BoolArray(v) => v.iter().map(|x| Static::Bool(*x)).collect(),
        other => vec![other.clone()],
    }
}

fn is_array(s: &Static) -> bool {
    matches!(s, Static::IntArray(_) | Static::FloatArray(_) | Static::StrArray(_) | Static::BoolArray(_))
}

/// Runtime types, as Tempo's `StaticType`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum T {
    Nil,
    Int,
    Float,
    Str,
    Bool,
    Duration,
    Status,
    Kind,
    IntArr,
    FloatArr,
    StrArr,
    BoolArr,
}

fn ty(s: &Static) -> T {
    match s {
        Static::Nil => T::Nil,
        Static::Int(_) => T::Int,
        Static::Float(_) => T::Float,
        Static::Str(_) => T::Str,
        Static::Bool(_) => T::Bool,
        Static::Duration(_) => T::Duration,
        Static::Status(_) => T::Status,
        Static::Kind(_) => T::Kind,
        Static::IntArray(_) => T::IntArr,
        Static::FloatArray(_) => T::FloatArr,
        Static::StrArray(_) => T::StrArr,
        Static::BoolArray(_) => T::BoolArr,
    }
}

fn type_name(s: &Static) -> &'static str {
    match ty(s) {
        T::Nil => "TypeNil",
        T::Int => "TypeInt",
        T::Float => "TypeFloat",
        T::Str => "TypeString",
        T::Bool => "TypeBoolean",
        T::Duration => "TypeDuration",
        T::Status => "TypeStatus",
        T::Kind => "TypeKind",
        T::IntArr => "TypeIntArray",
        T::FloatArr => "TypeFloatArray",
        T::StrArr => "TypeStringArray",
        T::BoolArr => "TypeBooleanArray",
    }
}

fn numeric(t: T) -> bool {
    matches!(t, T::Int | T::Float | T::Duration)
}

fn element_of(t: T) -> Option<T> {
    Some(match t {
        T::IntArr => T::Int,
        T::FloatArr => T::Float,
        T::StrArr => T::Str,
        T::BoolArr => T::Bool,
        _ => return None,
    })
}

fn scalar_matching(a: T, b: T) -> bool {
    a == b || (numeric(a) && numeric(b)) || a == T::Nil || b == T::Nil
}

fn matching_operand(a: T, b: T) -> bool {
    if scalar_matching(a, b) {
        return true;
    }
    if let Some(e) = element_of(a) {
        return scalar_matching(e, b);
    }
    if let Some(e) = element_of(b) {
        return scalar_matching(e, a);
    }
    false
}

fn op_valid(op: BinOp, t: T) -> bool {
    use BinOp::*;
    match t {
        T::Bool | T::BoolArr => matches!(op, And | Or | Eq | Neq),
        T::Int | T::Float | T::Duration | T::IntArr | T::FloatArr => {
            matches!(op, Add | Sub | Mul | Div | Mod | Pow | Eq | Neq | Gt | Gte | Lt | Lte)
        }
        T::Str | T::StrArr => matches!(op, Eq | Neq | Re | Nre | Gt | Gte | Lt | Lte),
        T::Nil | T::Status | T::Kind => matches!(op, Eq | Neq),
    }
}

fn as_float(s: &Static) -> f64 {
    match s {
        Static::Int(i) => *i as f64,
        Static::Float(f) => *f,
        Static::Duration(d) => *d as f64,
        _ => f64::NAN,
    }
}

/// Tempo's status numbering (`error`=0, `ok`=1, `unset`=2), used when an int meets a status.
fn status_num(s: StatusCode) -> i64 {
    match s {
        StatusCode::Error => 0,
        StatusCode::Ok => 1,
        StatusCode::Unset => 2,
    }
}

/// Tempo's `Static.Equals`.
pub(crate) fn equals(a: &Static, b: &Static) -> bool {
    match (a, b) {
        (Static::Nil, _) | (_, Static::Nil) => false,
        (Static::Int(x) | Static::Duration(x), Static::Int(y) | Static::Duration(y)) => x == y,
        (Static::Int(x), Static::Status(s)) | (Static::Status(s), Static::Int(x)) => *x == status_num(*s),
        (Static::Int(_) | Static::Duration(_), Static::Float(y)) => as_float(a) == *y,
        (Static::Float(x), _) => *x == as_float(b),
        (Static::Status(x), Static::Status(y)) => x == y,
        (Static::Kind(x), Static::Kind(y)) => x == y,
        (Static::Bool(x), Static::Bool(y)) => x == y,
        (Static::Str(x), Static::Str(y)) => x == y,
        (Static::IntArray(x), Static::IntArray(y)) => x == y,
        (Static::FloatArray(x), Static::FloatArray(y)) => x == y,
        (Static::StrArray(x), Static::StrArray(y)) => x == y,
        (Static::BoolArray(x), Static::BoolArray(y)) => x == y,
        _ => false,
    }
}

/// Same type and same value (grouping keys).
fn strict_equals(a: &Static, b: &Static) -> bool {
    match (a, b) {
        (Static::Float(x), Static::Float(y)) => x.to_bits() == y.to_bits() || x == y,
        _ => a == b,
    }
}

fn type_rank(s: &Static) -> u8 {
    ty(s) as u8
}

/// Tempo's `Static.compare` (used by `min()`/`max()`).
fn compare_static(a: &Static, b: &Static) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (ta, tb) = (ty(a), ty(b));
    if ta != tb {
        if numeric(ta) && numeric(tb) {
            return as_float(a).partial_cmp(&as_float(b)).unwrap_or(Ordering::Equal);
        }
        return type_rank(a).cmp(&type_rank(b));
    }
    match (a, b) {
        (Static::Float(x), Static::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Static::Int(x), Static::Int(y)) | (Static::Duration(x), Static::Duration(y)) => x.cmp(y),
        (Static::Str(x), Static::Str(y)) => x.cmp(y),
        (Static::Bool(x), Static::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Tempo's `sumInto`: values of another type than the first are ignored.
fn sum_into(a: Static, b: &Static) -> Static {
    match (a, b) {
        (Static::Int(x), Static::Int(y)) => Static::Int(x.wrapping_add(*y)),
        (Static::Duration(x), Static::Duration(y)) => Static::Duration(x.wrapping_add(*y)),
        (Static::Float(x), Static::Float(y)) => Static::Float(x + y),
        (a, _) => a,
    }
}

/// Tempo's scalar-filter comparison (`binOp`).
fn compare_scalars(op: BinOp, l: &Static, r: &Static) -> bool {
    let (lt, rt) = (ty(l), ty(r));
    if !matching_operand(lt, rt) || !op_valid(op, lt) || !op_valid(op, rt) {
        return false;
    }
    let (a, b) = (as_float(l), as_float(r));
    match op {
        BinOp::Gt => a > b,
        BinOp::Gte => a >= b,
        BinOp::Lt => a < b,
        BinOp::Lte => a <= b,
        BinOp::Eq => equals(l, r),
        BinOp::Neq => *l != Static::Nil && *r != Static::Nil && !equals(l, r),
        _ => false,
    }
}

fn union(ctx: &TraceCtx<'_>, l: &[Spanset], r: &[Spanset]) -> Vec<usize> {
    let mut seen = vec![false; ctx.spans.len()];
    let mut out = Vec::new();
    for ss in l.iter().chain(r) {
        for &s in &ss.spans {
            if !std::mem::replace(&mut seen[s], true) {
                out.push(s);
            }
        }
    }
    out
}

/// A test on a span index.
type Pred<'a> = Box<dyn Fn(usize) -> bool + 'a>;

/// Structural operators: which right-hand spans (and, for the union forms, left-hand spans) of
/// `l op r` match. Linear in the trace size apart from walks up the tree.
fn structural(ctx: &TraceCtx<'_>, op: SpansetOp, l: &[usize], r: &[usize]) -> Vec<usize> {
    use SpansetOp::*;
    let n = ctx.spans.len();
    let member = |set: &[usize]| {
        let mut m = vec![false; n];
        for &s in set {
            m[s] = true;
        }
        m
    };
    // Spans that are the parent of a member.
    let parents_of = |set: &[usize]| {
        let mut m = vec![false; n];
        for &s in set {
            if let Some(p) = ctx.parent[s] {
                m[p] = true;
            }
        }
        m
    };
    // Spans that are a proper ancestor of a member.
    let ancestors_of = |set: &[usize]| {
        let mut m = vec![false; n];
        for &s in set {
            let mut cur = ctx.parent[s];
            while let Some(p) = cur {
                if m[p] {
                    break;
                }
                m[p] = true;
                cur = ctx.parent[p];
            }
        }
        m
    };
    // Members per parent span.
    let per_parent = |set: &[usize]| {
        let mut c = vec![0usize; n];
        for &s in set {
            if let Some(p) = ctx.parent[s] {
                c[p] += 1;
            }
        }
        c
    };
    let (in_l, in_r) = (member(l), member(r));
    let negated = matches!(op, NotChild | NotParent | NotDescendant | NotAncestor | NotSibling);
    let (hit, extra): (Pred<'_>, Option<Pred<'_>>) = match op {
        Child | NotChild | UnionChild => {
            let pr = parents_of(r);
            let in_l = in_l.clone();
            (
                Box::new(move |s| ctx.parent[s].is_some_and(|p| in_l[p])),
                (op == UnionChild).then(|| Box::new(move |a: usize| pr[a]) as Pred<'_>),
            )
        }
        Parent | NotParent | UnionParent => {
            let pl = parents_of(l);
            let in_r = in_r.clone();
            (
                Box::new(move |s| pl[s]),
                (op == UnionParent)
                    .then(|| Box::new(move |a: usize| ctx.parent[a].is_some_and(|p| in_r[p])) as Pred<'_>),
            )
        }
        Descendant | NotDescendant | UnionDescendant => {
            let ar = ancestors_of(r);
            let in_l = in_l.clone();
            (
                Box::new(move |s| ctx.has_ancestor_in(s, &in_l)),
                (op == UnionDescendant).then(|| Box::new(move |a: usize| ar[a]) as Pred<'_>),
            )
        }
        Ancestor | NotAncestor | UnionAncestor => {
            let al = ancestors_of(l);
            let in_r = in_r.clone();
            (
                Box::new(move |s| al[s]),
                (op == UnionAncestor).then(|| Box::new(move |a: usize| ctx.has_ancestor_in(a, &in_r)) as Pred<'_>),
            )
        }
        Sibling | NotSibling | UnionSibling => {
            let (cl, cr) = (per_parent(l), per_parent(r));
            let (in_l, in_r) = (in_l.clone(), in_r.clone());
            (
                Box::new(move |s| ctx.parent[s].is_some_and(|p| cl[p] > usize::from(in_l[s]))),
                (op == UnionSibling).then(|| {
                    Box::new(move |a: usize| ctx.parent[a].is_some_and(|p| cr[p] > usize::from(in_r[a]))) as Pred<'_>
                }),
            )
        }
        And | Union => return Vec::new(),
    };
    let mut out: Vec<usize> = r.iter().copied().filter(|&s| hit(s) != negated).collect();
    if let Some(extra) = extra {
        let mut seen = vec![false; n];
        let mut merged = Vec::new();
        for s in l.iter().copied().filter(|&a| extra(a)).chain(out) {
            if !std::mem::replace(&mut seen[s], true) {
                merged.push(s);
            }
        }
        merged.sort_unstable();
        out = merged;
    }
    out
}

fn scopes_used(e: &FieldExpr) -> (bool, bool) {
    match e {
        FieldExpr::Static(_) => (false, false),
        FieldExpr::Attr(a) => {
            let ev = a.scope == AttrScope::Event
                || matches!(a.intrinsic, Some(Intrinsic::EventName | Intrinsic::EventTimeSinceStart));
            let ln = a.scope == AttrScope::Link
                || matches!(a.intrinsic, Some(Intrinsic::LinkSpanId | Intrinsic::LinkTraceId));
            (ev, ln)
        }
        FieldExpr::Unary(_, e) => scopes_used(e),
        FieldExpr::Binary(_, l, r) => {
            let (a, b) = scopes_used(l);
            let (c, d) = scopes_used(r);
            (a || c, b || d)
        }
    }
}

/// An OTLP value as a TraceQL value (composites other than homogeneous arrays are `nil`).
pub(crate) fn from_any(v: &AnyValue) -> Static {
    match v {
        AnyValue::String(s) => Static::Str(s.clone()),
        AnyValue::Int(i) => Static::Int(*i),
        AnyValue::Double(d) => Static::Float(*d),
        AnyValue::Bool(b) => Static::Bool(*b),
        AnyValue::Array(items) if !items.is_empty() => {
            if let Some(v) =
                items.iter().map(|i| if let AnyValue::String(s) = i { Some(s.clone()) } else { None }).collect()
            {
                Static::StrArray(v)
            } else if let Some(v) =
                items.iter().map(|i| if let AnyValue::Int(x) = i { Some(*x) } else { None }).collect()
            {
                Static::IntArray(v)
            } else if let Some(v) =
                items.iter().map(|i| if let AnyValue::Double(x) = i { Some(*x) } else { None }).collect()
            {
                Static::FloatArray(v)
            } else if let Some(v) =
                items.iter().map(|i| if let AnyValue::Bool(x) = i { Some(*x) } else { None }).collect()
            {
                Static::BoolArray(v)
            } else {
                Static::Nil
            }
        }
        _ => Static::Nil,
    }
}

/// A TraceQL value as Tempo returns it in responses (`Static.AsAnyValue`).
pub(crate) fn to_any(s: &Static) -> AnyValue {
    match s {
        Static::Int(i) => AnyValue::Int(*i),
        Static::Float(f) => AnyValue::Double(*f),
        Static::Bool(b) => AnyValue::Bool(*b),
        Static::IntArray(v) => AnyValue::Array(v.iter().map(|x| AnyValue::Int(*x)).collect()),
        Static::FloatArray(v) => AnyValue::Array(v.iter().map(|x| AnyValue::Double(*x)).collect()),
        Static::StrArray(v) => AnyValue::Array(v.iter().map(|x| AnyValue::String(x.clone())).collect()),
        Static::BoolArray(v) => AnyValue::Array(v.iter().map(|x| AnyValue::Bool(*x)).collect()),
        other => AnyValue::String(other.encode()),
    }
}

fn find(attrs: &[KeyValue], name: &str) -> Option<Static> {
    attrs.iter().find(|kv| kv.key == name).map(|kv| from_any(&kv.value))
}

fn non_empty(s: &str) -> Static {
    if s.is_empty() { Static::Nil } else { Static::Str(s.to_string()) }
}

/// The value of an attribute or intrinsic for a span (and event/link), `Nil` when absent.
fn attribute(ctx: &TraceCtx<'_>, a: &Attribute, at: At) -> Static {
    let s = if a.parent {
        match ctx.parent[at.span] {
            Some(p) => p,
            None => return Static::Nil,
        }
    } else {
        at.span
    };
    let stored = ctx.spans[s];
    let span = &stored.span;
    if let Some(i) = a.intrinsic {
        return match i {
            Intrinsic::Duration => Static::Duration(span.end_time_ns.saturating_sub(span.start_time_ns)),
            Intrinsic::Name => Static::Str(span.name.clone()),
            Intrinsic::Status => Static::Status(span.status_code),
            Intrinsic::StatusMessage => Static::Str(span.status_message.clone()),
            Intrinsic::Kind => Static::Kind(span.kind),
            Intrinsic::ChildCount => Static::Int(ctx.children[s]),
            Intrinsic::SpanId => Static::Str(span.span_id.to_hex()),
            Intrinsic::ParentId => span.parent_span_id.map(|p| Static::Str(p.to_hex())).unwrap_or(Static::Nil),
            Intrinsic::RootName => ctx.root.map(|r| Static::Str(ctx.spans[r].span.name.clone())).unwrap_or(Static::Nil),
            Intrinsic::RootServiceName => ctx
                .root
                .and_then(|r| ctx.spans[r].resource.attr_str("service.name").map(|n| Static::Str(n.to_string())))
                .unwrap_or(Static::Nil),
            Intrinsic::TraceDuration => Static::Duration(ctx.end_ns.saturating_sub(ctx.start_ns)),
            Intrinsic::TraceId => Static::Str(ctx.trace_id.to_hex()),
            Intrinsic::EventName => {
                at.event.and_then(|e| span.events.get(e)).map(|e| Static::Str(e.name.clone())).unwrap_or(Static::Nil)
            }
            Intrinsic::EventTimeSinceStart => at
                .event
                .and_then(|e| span.events.get(e))
                .map(|e| Static::Duration(e.time_ns.saturating_sub(span.start_time_ns)))
                .unwrap_or(Static::Nil),
            Intrinsic::LinkTraceId => {
                at.link.and_then(|l| span.links.get(l)).map(|l| Static::Str(l.trace_id.to_hex())).unwrap_or(Static::Nil)
            }
            Intrinsic::LinkSpanId => {
                at.link.and_then(|l| span.links.get(l)).map(|l| Static::Str(l.span_id.to_hex())).unwrap_or(Static::Nil)
            }
            Intrinsic::InstrumentationName => non_empty(&stored.scope.name),
            Intrinsic::InstrumentationVersion => non_empty(&stored.scope.version),
            Intrinsic::NestedSetLeft => Static::Int(ctx.nested[s].0),
            Intrinsic::NestedSetRight => Static::Int(ctx.nested[s].1),
            Intrinsic::NestedSetParent => Static::Int(ctx.nested[s].2),
            Intrinsic::Parent => Static::Nil,
        };
    }
    let found = match a.scope {
        AttrScope::Span => find(&span.attributes, &a.name),
        AttrScope::Resource => find(&stored.resource.attributes, &a.name),
        AttrScope::None => find(&span.attributes, &a.name).or_else(|| find(&stored.resource.attributes, &a.name)),
        AttrScope::Event => at.event.and_then(|e| span.events.get(e)).and_then(|e| find(&e.attributes, &a.name)),
        AttrScope::Link => at.link.and_then(|l| span.links.get(l)).and_then(|l| find(&l.attributes, &a.name)),
        AttrScope::Instrumentation => find(&stored.scope.attributes, &a.name),
    };
    found.unwrap_or(Static::Nil)
}

/// The value of `a` for span `s` (span-level: no event or link).
pub(crate) fn span_attribute(ctx: &TraceCtx<'_>, a: &Attribute, s: usize) -> Static {
    attribute(ctx, a, At { span: s, event: None, link: None })
}

/// Every value of `a` on span `s`: one per event or link for event and link scoped attributes.
pub(crate) fn attribute_values(ctx: &TraceCtx<'_>, a: &Attribute, s: usize, out: &mut dyn FnMut(Static)) {
    let (uses_event, uses_link) = scopes_used(&FieldExpr::Attr(a.clone()));
    let span = &ctx.spans[s].span;
    let mut emit = |at: At| {
        let v = attribute(ctx, a, at);
        if v != Static::Nil {
            out(v);
        }
    };
    if uses_event {
        for e in 0..span.events.len() {
            emit(At { span: s, event: Some(e), link: None });
        }
    } else if uses_link {
        for l in 0..span.links.len() {
            emit(At { span: s, event: None, link: Some(l) });
        }
    } else {
        emit(At { span: s, event: None, link: None });
    }
}

/// What `compare()` breaks spans down by (Tempo's "select all"): span intrinsics and attributes,
/// resource and instrumentation attributes, root name and service; not durations, ids or
/// nested-set numbers. Names are Tempo's attribute texts (`span.http.method`, `name`).
pub(crate) fn compare_attributes(ctx: &TraceCtx<'_>, s: usize) -> Vec<(String, Static)> {
    let stored = ctx.spans[s];
    let span = &stored.span;
    let mut out: Vec<(String, Static)> = vec![
        ("name".to_string(), Static::Str(span.name.clone())),
        ("status".to_string(), Static::Status(span.status_code)),
        ("kind".to_string(), Static::Kind(span.kind)),
    ];
    if !span.status_message.is_empty() {
        out.push(("statusMessage".to_string(), Static::Str(span.status_message.clone())));
    }
    let mut push_attrs = |scope: AttrScope, attrs: &[KeyValue]| {
        for kv in attrs {
            let v = from_any(&kv.value);
            if v != Static::Nil {
                out.push((Attribute::named(scope, false, kv.key.clone()).to_string(), v));
            }
        }
    };
    push_attrs(AttrScope::Span, &span.attributes);
    push_attrs(AttrScope::Resource, &stored.resource.attributes);
    push_attrs(AttrScope::Instrumentation, &stored.scope.attributes);
    for (name, i) in [("rootName", Intrinsic::RootName), ("rootServiceName", Intrinsic::RootServiceName)] {
        let v = attribute(ctx, &Attribute::intrinsic(i), At { span: s, event: None, link: None });
        if v != Static::Nil {
            out.push((name.to_string(), v));
        }
    }
    if !stored.scope.name.is_empty() {
        out.push(("instrumentation:name".to_string(), Static::Str(stored.scope.name.clone())));
    }
    if !stored.scope.version.is_empty() {
        out.push(("instrumentation:version".to_string(), Static::Str(stored.scope.version.clone())));
    }
    out
}

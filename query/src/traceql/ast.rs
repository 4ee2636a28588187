//! The TraceQL syntax tree, shaped after Tempo's grammar (`pkg/traceql/expr.y`): a root is a spanset
//! pipeline, optionally followed by one metrics aggregation; pipelines are stages joined by `|`;
//! spanset expressions combine `{ ... }` filters with logical and structural operators; field
//! expressions are evaluated per span and yield a [`Static`].

use std::fmt;

use storage::model::{SpanKind, StatusCode};

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The spanset pipeline.
    pub pipeline: Pipeline,
    /// The metrics stage (`| rate() by (...)`), if any.
    pub metrics: Option<MetricsAggregate>,
    /// `with(key = value, ...)` hints (accepted, not acted upon).
    pub hints: Vec<(String, Static)>,
}

impl Query {
    /// True for a metrics query (`... | rate()` and friends).
    pub fn is_metrics(&self) -> bool {
        self.metrics.is_some()
    }
}

/// Stages joined by `|`; each maps a list of spansets to a list of spansets.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// One pipeline stage.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// A spanset expression: filters and spanset operators.
    Spanset(SpansetExpr),
    /// `count() > 2`, `avg(duration) < 1s`: keeps spansets whose aggregate compares true.
    ScalarFilter {
        /// Comparison.
        op: BinOp,
        /// Left operand.
        lhs: ScalarExpr,
        /// Right operand.
        rhs: ScalarExpr,
    },
    /// `by(expr)`: splits each spanset by the value of `expr`.
    GroupBy(FieldExpr),
    /// `coalesce()`: merges all spansets of a trace into one.
    Coalesce,
    /// `select(attrs...)`: adds attributes to the returned spans.
    Select(Vec<Attribute>),
}

/// A spanset expression.
#[derive(Clone, Debug, PartialEq)]
pub enum SpansetExpr {
    /// `{ expr }` (`{}` is `{ true }`).
    Filter(FieldExpr),
    /// `lhs op rhs`.
    Op(SpansetOp, Box<SpansetExpr>, Box<SpansetExpr>),
    /// A parenthesised pipeline used as an operand: `({ a } | count() > 1) && { b }`.
    Pipeline(Box<Pipeline>),
}

/// Operators between spansets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpansetOp {
    /// `&&`: both sides match; the union of their spans.
    And,
    /// `||`: either side matches; the union of their spans.
    Union,
    /// `>`: right spans whose parent is a left span.
    Child,
    /// `<`: right spans that are the parent of a left span.
    Parent,
    /// `>>`: right spans that descend from a left span.
    Descendant,
    /// `<<`: right spans that are an ancestor of a left span.
    Ancestor,
    /// `~`: right spans that have a left span as sibling.
    Sibling,
    /// `!>`
    NotChild,
    /// `!<`
    NotParent,
    /// `!>>`
    NotDescendant,
    /// `!<<`
    NotAncestor,
    /// `!~`
    NotSibling,
    /// `&>`: both sides of every child relation.
    UnionChild,
    /// `&<`
    UnionParent,
    /// `&>>`
    UnionDescendant,
    /// `&<<`
    UnionAncestor,
    /// `&~`
    UnionSibling,
}

impl SpansetOp {
    /// The operator's text.
    pub fn as_str(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Union => "||",
            SpansetOp::Child => ">",
            SpansetOp::Parent => "<",
            SpansetOp::Descendant => ">>",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        }
    }
}

/// A scalar expression of a scalar filter: aggregates, literals and arithmetic.
#[derive(Clone, Debug, PartialEq)]
pub enum ScalarExpr {
    /// A literal.
    Static(Static),
    /// An aggregate over the spans of a spanset.
    Aggregate(AggregateOp, Option<FieldExpr>),
    /// Arithmetic.
    Binary(BinOp, Box<ScalarExpr>, Box<ScalarExpr>),
}

/// Spanset aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateOp {
    /// `count()`
    Count,
    /// `avg(x)`
    Avg,
    /// `max(x)`
    Max,
    /// `min(x)`
    Min,
    /// `sum(x)`
    Sum,
}

impl AggregateOp {
    /// The function name.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateOp::Count => "count",
            AggregateOp::Avg => "avg",
            AggregateOp::Max => "max",
            AggregateOp::Min => "min",
            AggregateOp::Sum => "sum",
        }
    }
}

/// A per-span expression.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldExpr {
    /// A literal.
    Static(Static),
    /// An attribute or intrinsic.
    Attr(Attribute),
    /// `lhs op rhs`.
    Binary(BinOp, Box<FieldExpr>, Box<FieldExpr>),
    /// `-x`, `!x`, `x != nil`, `x = nil`.
    Unary(UnaryOp, Box<FieldExpr>),
}

/// Binary operators of field and scalar expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinOp {
    /// The operator's text.
    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Eq => "=",
            BinOp::Neq => "!=",
            BinOp::Lt => "<",
            BinOp::Lte => "<=",
            BinOp::Gt => ">",
            BinOp::Gte => ">=",
            BinOp::Re => "=~",
            BinOp::Nre => "!~",
            BinOp::And => "&&",
            BinOp::Or => "||",
        }
    }

    /// True for the comparison operators.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Neq | BinOp::Lt | BinOp::Lte | BinOp::Gt | BinOp::Gte | BinOp::Re | BinOp::Nre
        )
    }
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `!x`
    Not,
    /// `x != nil`
    Exists,
    /// `x = nil`
    NotExists,
}

/// A typed value: literals and what attributes evaluate to.
#[derive(Clone, Debug, PartialEq)]
pub enum Static {
    /// Missing value.
    Nil,
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// String.
    Str(String),
    /// Boolean.
    Bool(bool),
    /// Duration in ns.
    Duration(i64),
    /// Span status.
    Status(StatusCode),
    /// Span kind.
    Kind(SpanKind),
    /// Array of ints (from array attributes).
    IntArray(Vec<i64>),
    /// Array of floats.
    FloatArray(Vec<f64>),
    /// Array of strings.
    StrArray(Vec<String>),
    /// Array of booleans.
    BoolArray(Vec<bool>),
}

/// Where an attribute is looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrScope {
    /// `.x`: span first, then resource.
    None,
    /// `span.x`
    Span,
    /// `resource.x`
    Resource,
    /// `event.x`
    Event,
    /// `link.x`
    Link,
    /// `instrumentation.x`
    Instrumentation,
}

/// Intrinsic fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Intrinsic {
    /// `duration`, `span:duration`
    Duration,
    /// `name`, `span:name`
    Name,
    /// `status`, `span:status`
    Status,
    /// `statusMessage`, `span:statusMessage`
    StatusMessage,
    /// `kind`, `span:kind`
    Kind,
    /// `span:childCount`
    ChildCount,
    /// `span:id`
    SpanId,
    /// `span:parentID`
    ParentId,
    /// `rootName`, `trace:rootName`
    RootName,
    /// `rootServiceName`, `trace:rootService`
    RootServiceName,
    /// `traceDuration`, `trace:duration`
    TraceDuration,
    /// `trace:id`
    TraceId,
    /// `event:name`
    EventName,
    /// `event:timeSinceStart`
    EventTimeSinceStart,
    /// `link:traceID`
    LinkTraceId,
    /// `link:spanID`
    LinkSpanId,
    /// `instrumentation:name`
    InstrumentationName,
    /// `instrumentation:version`
    InstrumentationVersion,
    /// `parent` (parsed; Tempo refuses to run it)
    Parent,
    /// `nestedSetLeft`
    NestedSetLeft,
    /// `nestedSetRight`
    NestedSetRight,
    /// `nestedSetParent`
    NestedSetParent,
}

impl Intrinsic {
    /// Tempo's name of the intrinsic (`Intrinsic.String()`).
    pub fn as_str(self) -> &'static str {
        match self {
            Intrinsic::Duration => "duration",
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::RootName => "rootName",
            Intrinsic::RootServiceName => "rootServiceName",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
            Intrinsic::Parent => "parent",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
        }
    }
}

/// An attribute reference or an intrinsic.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// Scope of a named attribute (`None` for intrinsics).
    pub scope: AttrScope,
    /// `parent.`: read from the parent span.
    pub parent: bool,
    /// Attribute name (empty for intrinsics).
    pub name: String,
    /// The intrinsic, if this is one.
    pub intrinsic: Option<Intrinsic>,
}

impl Attribute {
    /// A named attribute.
    pub fn named(scope: AttrScope, parent: bool, name: impl Into<String>) -> Self {
        Attribute { scope, parent, name: name.into(), intrinsic: None }
    }

    /// An intrinsic.
    pub fn intrinsic(i: Intrinsic) -> Self {
        Attribute { scope: AttrScope::None, parent: false, name: i.as_str().to_string(), intrinsic: Some(i) }
    }
}

impl fmt::Display for Attribute {
    /// Tempo's `Attribute.String()`: `.a`, `span.a`, `resource."a b"`, `parent.span.a`, `duration`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.intrinsic {
            return f.write_str(i.as_str());
        }
        let mut scope = String::new();
        if self.parent {
            scope.push_str("parent.");
        }
        match self.scope {
            AttrScope::None => {}
            AttrScope::Span => scope.push_str("span."),
            AttrScope::Resource => scope.push_str("resource."),
            AttrScope::Event => scope.push_str("event."),
            AttrScope::Link => scope.push_str("link."),
            AttrScope::Instrumentation => scope.push_str("instrumentation."),
        }
        if scope.is_empty() {
            scope.push('.');
        }
        f.write_str(&scope)?;
        let needs_quotes = self.name.chars().any(|c| !super::lexer::is_attribute_char(c) || c == '"');
        if needs_quotes {
            f.write_str("\"")?;
            for c in self.name.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")
        } else {
            f.write_str(&self.name)
        }
    }
}

impl fmt::Display for Static {
    /// Tempo's `Static.String()` (strings in backquotes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Static::Str(s) => write!(f, "`{s}`"),
            other => f.write_str(&other.encode()),
        }
    }
}

impl Static {
    /// Tempo's `EncodeToString(false)`: the value as text, strings unquoted, durations in Go's form.
    pub fn encode(&self) -> String {
        match self {
            Static::Nil => "nil".to_string(),
            Static::Int(i) => i.to_string(),
            Static::Float(x) => format_float(*x),
            Static::Str(s) => s.clone(),
            Static::Bool(b) => b.to_string(),
            Static::Duration(d) => go_duration(*d),
            Static::Status(s) => status_str(*s).to_string(),
            Static::Kind(k) => kind_str(*k).to_string(),
            Static::IntArray(v) => format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
            Static::FloatArray(v) => format!("[{}]", v.iter().map(|x| format_float(*x)).collect::<Vec<_>>().join(", ")),
            Static::StrArray(v) => format!("[{}]", v.iter().map(|x| format!("`{x}`")).collect::<Vec<_>>().join(", ")),
            Static::BoolArray(v) => format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// Tempo's text for a status.
pub fn status_str(s: StatusCode) -> &'static str {
    match s {
        StatusCode::Error => "error",
        StatusCode::Ok => "ok",
        StatusCode::Unset => "unset",
    }
}

/// Tempo's text for a kind.
pub fn kind_str(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "unspecified",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)` with Tempo's `.0` suffix for integral values.
pub fn format_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf".to_string() } else { "-Inf".to_string() };
    }
    let exp = if x == 0.0 { 0 } else { x.abs().log10().floor() as i32 };
    let s = if !(-4..21).contains(&exp) {
        let s = format!("{x:e}");
        // Go writes e+06 / e-07: sign always, at least two exponent digits.
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = if let Some(d) = e.strip_prefix('-') { ('-', d) } else { ('+', e) };
                format!("{m}e{sign}{digits:0>2}")
            }
            None => s,
        }
    } else {
        format!("{x}")
    };
    if s.contains('e') || s.contains('.') || s.contains("Inf") { s } else { s + ".0" }
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1u64)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&frac(u, div));
        out.push_str(unit);
    } else {
        let h = u / 3_600_000_000_000;
        let rem = u % 3_600_000_000_000;
        let m = rem / 60_000_000_000;
        let s = rem % 60_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&frac(s, 1_000_000_000));
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

fn frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let rest = v % div;
    if rest == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// The metrics stage of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsAggregate {
    /// The function.
    pub op: MetricsOp,
    /// Its attribute argument (`quantile_over_time(duration, ...)`).
    pub attr: Option<Attribute>,
    /// Quantiles of `quantile_over_time`.
    pub quantiles: Vec<f64>,
    /// `by(...)` attributes.
    pub by: Vec<Attribute>,
    /// Second stage: `| topk(n)`, `| bottomk(n)` and `> x` filters.
    pub second: Vec<SecondStage>,
    /// Arguments of `compare()`.
    pub compare: Option<CompareArgs>,
}

/// `compare({selection}, topN, start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareArgs {
    /// The selection filter's expression.
    pub filter: FieldExpr,
    /// Values kept per attribute (default 10).
    pub top_n: usize,
    /// Selection window start (unix ns; 0 with `end` 0 for the whole range).
    pub start: i64,
    /// Selection window end (unix ns).
    pub end: i64,
}

/// Metrics functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsOp {
    /// `rate()`
    Rate,
    /// `count_over_time()`
    CountOverTime,
    /// `min_over_time(x)`
    MinOverTime,
    /// `max_over_time(x)`
    MaxOverTime,
    /// `avg_over_time(x)`
    AvgOverTime,
    /// `sum_over_time(x)`
    SumOverTime,
    /// `quantile_over_time(x, q...)`
    QuantileOverTime,
    /// `histogram_over_time(x)`
    HistogramOverTime,
    /// `compare({filter}, ...)`
    Compare,
}

impl MetricsOp {
    /// The function name.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsOp::Rate => "rate",
            MetricsOp::CountOverTime => "count_over_time",
            MetricsOp::MinOverTime => "min_over_time",
            MetricsOp::MaxOverTime => "max_over_time",
            MetricsOp::AvgOverTime => "avg_over_time",
            MetricsOp::SumOverTime => "sum_over_time",
            MetricsOp::QuantileOverTime => "quantile_over_time",
            MetricsOp::HistogramOverTime => "histogram_over_time",
            MetricsOp::Compare => "compare",
        }
    }
}

/// Second-stage operations on metrics series.
#[derive(Clone, Debug, PartialEq)]
pub enum SecondStage {
    /// `| topk(n)`
    TopK(usize),
    /// `| bottomk(n)`
    BottomK(usize),
    /// `> 10`: keeps samples that compare true.
    Filter(BinOp, f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1), "1ns");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(767_500_000), "767.5ms");
        assert_eq!(go_duration(1_150_000_000), "1.15s");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(120_000_000_000), "2m0s");
        assert_eq!(go_duration(-2_000_000), "-2ms");
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(1e21), "1e+21");
        assert_eq!(format_float(1e-7), "1e-07");
        assert_eq!(Attribute::named(AttrScope::Resource, false, "a b").to_string(), "resource.\"a b\"");
        assert_eq!(Attribute::named(AttrScope::None, true, "x").to_string(), "parent.x");
        assert_eq!(Attribute::intrinsic(Intrinsic::ChildCount).to_string(), "span:childCount");
    }
}

//! The LogQL syntax tree [`parse`](super::parse) produces.

use std::fmt;

use storage::Matcher;

use super::template::Template;

/// A parsed query: a log query or a metric query.
#[derive(Clone, Debug)]
pub enum Expr {
    /// A log selector with its pipeline.
    Log(LogExpr),
    /// A metric expression.
    Metric(MetricExpr),
}

/// `{selector} | stage | stage ...`
#[derive(Clone, Debug)]
pub struct LogExpr {
    /// Stream matchers.
    pub matchers: Vec<Matcher>,
    /// Pipeline stages in order.
    pub stages: Vec<Stage>,
}

impl LogExpr {
    /// True when the pipeline has no stage that changes labels or lines (only line filters).
    pub fn is_filter_only(&self) -> bool {
        self.stages.iter().all(|s| matches!(s, Stage::LineFilter(_)))
    }
}

/// Line filter operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFilterOp {
    /// `|=`
    Contains,
    /// `!=`
    NotContains,
    /// `|~`
    Match,
    /// `!~`
    NotMatch,
}

/// What a line filter tests.
#[derive(Clone, Debug)]
pub enum LineFilterValue {
    /// A literal substring.
    Text(String),
    /// A regular expression (unanchored).
    Regex(String, regex::Regex),
    /// `ip("...")`: the line holds an address in the given set.
    Ip(super::pipeline::IpMatcher),
}

/// One line filter.
#[derive(Clone, Debug)]
pub struct LineFilter {
    /// The operator.
    pub op: LineFilterOp,
    /// The operand.
    pub value: LineFilterValue,
}

/// A pipeline stage.
#[derive(Clone, Debug)]
pub enum Stage {
    /// `|= "x"` and friends.
    LineFilter(LineFilter),
    /// `| json` (optionally with `name="expr"` parameters).
    Json(Vec<(String, String)>),
    /// `| logfmt` with flags and parameters.
    Logfmt {
        /// `--strict`
        strict: bool,
        /// `--keep-empty`
        keep_empty: bool,
        /// `name="key"` parameters.
        params: Vec<(String, String)>,
    },
    /// `| regexp "..."` (named groups become labels).
    Regexp(regex::Regex),
    /// `| pattern "..."`.
    Pattern(super::pipeline::Pattern),
    /// `| unpack`.
    Unpack,
    /// `| label filter expression`.
    LabelFilter(LabelFilter),
    /// `| line_format "template"`.
    LineFormat(Template),
    /// `| label_format a=b, c="{{template}}"`.
    LabelFormat(Vec<LabelFmt>),
    /// `| drop a, b="v"`.
    Drop(Vec<NamedMatcher>),
    /// `| keep a, b="v"`.
    Keep(Vec<NamedMatcher>),
    /// `| decolorize`.
    Decolorize,
}

/// A `drop`/`keep` operand: a bare name or a matcher.
#[derive(Clone, Debug)]
pub enum NamedMatcher {
    /// A label name.
    Name(String),
    /// A label matcher.
    Matcher(Matcher),
}

/// One `label_format` assignment.
#[derive(Clone, Debug)]
pub enum LabelFmt {
    /// `dst=src`: rename.
    Rename {
        /// New name.
        dst: String,
        /// Old name.
        src: String,
    },
    /// `dst="template"`.
    Template {
        /// Label to set.
        dst: String,
        /// The template.
        tmpl: Template,
    },
}

/// Comparison operators of label filters and binary expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` (or `=` in numeric label filters)
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl CmpOp {
    /// Applies the comparison.
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
        }
    }
}

/// A label filter expression.
#[derive(Clone, Debug)]
pub enum LabelFilter {
    /// A string matcher (`=`, `!=`, `=~`, `!~`).
    Matcher(Matcher),
    /// A number comparison.
    Number(String, CmpOp, f64),
    /// A duration comparison (seconds).
    Duration(String, CmpOp, f64),
    /// A bytes comparison.
    Bytes(String, CmpOp, f64),
    /// `a and b` (also `a, b` and `a | b` juxtaposition).
    And(Box<LabelFilter>, Box<LabelFilter>),
    /// `a or b`.
    Or(Box<LabelFilter>, Box<LabelFilter>),
    /// `ip("...")` on a label.
    Ip(String, bool, super::pipeline::IpMatcher),
}

/// Range aggregation operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    /// `count_over_time`
    Count,
    /// `rate`
    Rate,
    /// `rate_counter`
    RateCounter,
    /// `bytes_over_time`
    Bytes,
    /// `bytes_rate`
    BytesRate,
    /// `absent_over_time`
    Absent,
    /// `sum_over_time`
    Sum,
    /// `avg_over_time`
    Avg,
    /// `min_over_time`
    Min,
    /// `max_over_time`
    Max,
    /// `stdvar_over_time`
    Stdvar,
    /// `stddev_over_time`
    Stddev,
    /// `quantile_over_time`
    Quantile,
    /// `first_over_time`
    First,
    /// `last_over_time`
    Last,
}

impl RangeOp {
    /// The function name.
    pub fn name(self) -> &'static str {
        match self {
            RangeOp::Count => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::Bytes => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::Absent => "absent_over_time",
            RangeOp::Sum => "sum_over_time",
            RangeOp::Avg => "avg_over_time",
            RangeOp::Min => "min_over_time",
            RangeOp::Max => "max_over_time",
            RangeOp::Stdvar => "stdvar_over_time",
            RangeOp::Stddev => "stddev_over_time",
            RangeOp::Quantile => "quantile_over_time",
            RangeOp::First => "first_over_time",
            RangeOp::Last => "last_over_time",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<RangeOp> {
        Some(match s {
            "count_over_time" => RangeOp::Count,
            "rate" => RangeOp::Rate,
            "rate_counter" => RangeOp::RateCounter,
            "bytes_over_time" => RangeOp::Bytes,
            "bytes_rate" => RangeOp::BytesRate,
            "absent_over_time" => RangeOp::Absent,
            "sum_over_time" => RangeOp::Sum,
            "avg_over_time" => RangeOp::Avg,
            "min_over_time" => RangeOp::Min,
            "max_over_time" => RangeOp::Max,
            "stdvar_over_time" => RangeOp::Stdvar,
            "stddev_over_time" => RangeOp::Stddev,
            "quantile_over_time" => RangeOp::Quantile,
            "first_over_time" => RangeOp::First,
            "last_over_time" => RangeOp::Last,
            _ => return None,
        })
    }

    /// True for the aggregations that need `unwrap`.
    pub fn needs_unwrap(self) -> bool {
        !matches!(self, RangeOp::Count | RangeOp::Rate | RangeOp::Bytes | RangeOp::BytesRate | RangeOp::Absent)
    }
}

/// How `unwrap` turns a label into a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwrapConv {
    /// Plain float.
    None,
    /// `duration()` / `duration_seconds()`: a Go duration, in seconds.
    Duration,
    /// `bytes()`: a humanized byte size.
    Bytes,
}

/// `| unwrap [conv(]label[)] | post filters`.
#[derive(Clone, Debug)]
pub struct Unwrap {
    /// The label.
    pub label: String,
    /// The conversion.
    pub conv: UnwrapConv,
    /// Label filters after the unwrap.
    pub post_filters: Vec<LabelFilter>,
}

/// `by (...)` / `without (...)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grouping {
    /// `without` instead of `by`.
    pub without: bool,
    /// The label names.
    pub labels: Vec<String>,
}

/// Vector aggregation operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VecOp {
    /// `sum`
    Sum,
    /// `avg`
    Avg,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `count`
    Count,
    /// `stddev`
    Stddev,
    /// `stdvar`
    Stdvar,
    /// `topk`
    Topk,
    /// `bottomk`
    Bottomk,
    /// `sort`
    Sort,
    /// `sort_desc`
    SortDesc,
}

impl VecOp {
    pub(crate) fn from_name(s: &str) -> Option<VecOp> {
        Some(match s {
            "sum" => VecOp::Sum,
            "avg" => VecOp::Avg,
            "min" => VecOp::Min,
            "max" => VecOp::Max,
            "count" => VecOp::Count,
            "stddev" => VecOp::Stddev,
            "stdvar" => VecOp::Stdvar,
            "topk" => VecOp::Topk,
            "bottomk" => VecOp::Bottomk,
            "sort" => VecOp::Sort,
            "sort_desc" => VecOp::SortDesc,
            _ => return None,
        })
    }
}

/// Binary operators.
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
    /// A comparison.
    Cmp(CmpOp),
    /// `and`
    And,
    /// `or`
    Or,
    /// `unless`
    Unless,
}

impl BinOp {
    /// Precedence (higher binds tighter), as in Loki's grammar.
    pub(crate) fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And | BinOp::Unless => 2,
            BinOp::Cmp(_) => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Mod => 5,
            BinOp::Pow => 6,
        }
    }

    pub(crate) fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// Vector matching of a binary operation.
#[derive(Clone, Debug, Default)]
pub struct BinModifier {
    /// `bool`
    pub return_bool: bool,
    /// `on (...)` (`Some(true, ..)`) or `ignoring (...)` (`Some(false, ..)`).
    pub matching: Option<(bool, Vec<String>)>,
    /// `group_left (...)` (`Some(true, ..)`) or `group_right (...)` (`Some(false, ..)`).
    pub group: Option<(bool, Vec<String>)>,
}

/// A metric expression.
#[derive(Clone, Debug)]
pub enum MetricExpr {
    /// `op([param,] {sel} | pipeline [| unwrap] [range] [offset]) [by/without]`.
    Range {
        /// The aggregation.
        op: RangeOp,
        /// `quantile_over_time`'s φ.
        param: Option<f64>,
        /// The log expression.
        log: LogExpr,
        /// `unwrap` stage.
        unwrap: Option<Unwrap>,
        /// Range (ns).
        range_ns: i64,
        /// Offset (ns).
        offset_ns: i64,
        /// Grouping.
        grouping: Option<Grouping>,
    },
    /// `op [by/without] ([param,] expr)`.
    Vector {
        /// The aggregation.
        op: VecOp,
        /// `topk`/`bottomk`'s k.
        param: Option<i64>,
        /// Operand.
        inner: Box<MetricExpr>,
        /// Grouping.
        grouping: Option<Grouping>,
    },
    /// `lhs op rhs`.
    Binary {
        /// The operator.
        op: BinOp,
        /// Matching modifiers.
        modifier: BinModifier,
        /// Left side.
        lhs: Box<MetricExpr>,
        /// Right side.
        rhs: Box<MetricExpr>,
    },
    /// A number.
    Literal(f64),
    /// `vector(x)`.
    VectorLit(f64),
    /// `label_replace(expr, dst, replacement, src, regex)`.
    LabelReplace {
        /// Operand.
        inner: Box<MetricExpr>,
        /// Destination label.
        dst: String,
        /// Replacement with `$1` references.
        replacement: String,
        /// Source label.
        src: String,
        /// Anchored regex.
        regex: regex::Regex,
    },
}

impl fmt::Display for LineFilterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineFilterOp::Contains => "|=",
            LineFilterOp::NotContains => "!=",
            LineFilterOp::Match => "|~",
            LineFilterOp::NotMatch => "!~",
        })
    }
}

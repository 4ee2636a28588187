//! TraceQL: Grafana Tempo's trace query language, parsed and evaluated over
//! [`storage::read::TracesReader`].
//!
//! The parser is our own: there is no maintained Rust crate for TraceQL (Tempo's grammar lives in
//! Go, as a goyacc grammar inside `grafana/tempo`), so `lexer` and `parser` implement the language
//! as Tempo 2.x documents and accepts it, with Tempo's operator precedence and error positions.
//!
//! Entry points:
//! - [`parse`]: text → [`Query`] (the AST in [`ast`]), or a [`ParseError`] with its byte position.
//! - [`search`]: the `/api/search` semantics — spanset pipelines over whole traces, newest first.
//! - [`metrics_query_range`]: the `/api/metrics/query_range` semantics — `rate()`,
//!   `count_over_time()`, `quantile_over_time()`, ... aligned to `step`;
//!   [`metrics_query_instant`] the `/api/metrics/query` one (one interval).
//! - [`tag_values`]: values of one attribute on the spans a query matches (tag-value browser).
//!
//! Invariants: evaluation reads storage only through the `TracesReader` trait, one whole trace at
//! a time, and checks the caller's deadline between traces; the scan hints it passes
//! (`service_name`, `span_name`) only ever prune traces that cannot match (the test runner
//! re-runs every script through a reader that prunes by them); a query's nesting and operator
//! count are bounded at parse time (`parser::MAX_DEPTH`, `parser::MAX_NODES`) so no walk of the
//! tree can exhaust the stack.
//!
//! Not implemented (Tempo has them): arithmetic between metrics queries
//! (`({a} | rate()) / ({b} | rate())`), exemplars, and evaluating `parent.` attributes (which
//! Tempo also refuses as "not yet supported"). `compare()` breaks spans down by their span
//! intrinsics and span, resource and instrumentation attributes plus root name and service —
//! close to, but not exactly, the columns Tempo's "select all" reads.

pub mod ast;
mod eval;
mod lexer;
mod metrics;
mod parser;
mod search;
mod tags;

use std::fmt;

use storage::model::{AnyValue, SpanId, TraceId};

pub use ast::Query;
pub use metrics::{metrics_query_instant, metrics_query_range};
pub use search::search;
pub use tags::{NAME_SCOPES, TagValue, tag_names, tag_values};

/// Parses a TraceQL query.
pub fn parse(q: &str) -> Result<Query, ParseError> {
    parser::parse(q)
}

/// A query that does not parse: Tempo's message and the byte offset into the query it refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong (without the position prefix).
    pub message: String,
    /// Byte offset into the query text.
    pub pos: usize,
    /// 1-based line of `pos`.
    pub line: usize,
    /// 1-based column (in characters) of `pos`.
    pub col: usize,
}

impl ParseError {
    /// An error found after parsing, about the query as a whole (no position).
    pub fn without_position(message: impl Into<String>) -> Self {
        ParseError { message: message.into(), pos: 0, line: 0, col: 0 }
    }

    /// An error at byte `pos` of `query`.
    pub fn new(query: &str, pos: usize, message: impl Into<String>) -> Self {
        let pos = pos.min(query.len());
        if query.is_empty() {
            // Go's scanner reports no position at all for an empty query.
            return ParseError { message: message.into(), pos, line: 0, col: 0 };
        }
        let before = query.get(..pos).unwrap_or(query);
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|s| s.chars().count()).unwrap_or(0) + 1;
        ParseError { message: message.into(), pos, line, col }
    }
}

impl fmt::Display for ParseError {
    /// Tempo's form: `parse error at line 1, col 7: syntax error: unexpected IDENTIFIER`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 && self.col == 0 {
            // Tempo's errors without a position: the empty query, and the checks made on the
            // parsed tree (which Tempo reports without the parse-error prefix).
            if self.message.starts_with("syntax error") {
                return write!(f, "parse error : {}", self.message);
            }
            return f.write_str(&self.message);
        }
        write!(f, "parse error at line {}, col {}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A search over traces (`/api/search?q=&start=&end=&limit=&spss=`).
#[derive(Clone, Debug, Default)]
pub struct SearchRequest {
    /// TraceQL text.
    pub query: String,
    /// Inclusive start of the time range (ns since the epoch).
    pub start_ns: i64,
    /// Inclusive end of the time range (ns since the epoch).
    pub end_ns: i64,
    /// Most traces to return (0 = Tempo's default of 20).
    pub limit: usize,
    /// Most spans per spanset to return (0 = Tempo's default of 3).
    pub spans_per_spanset: usize,
}

/// What a search found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchResponse {
    /// Matching traces, newest first, at most `limit`.
    pub traces: Vec<TraceMatch>,
    /// Traces read.
    pub inspected_traces: u64,
    /// Spans read.
    pub inspected_spans: u64,
}

/// One matching trace (Tempo's `TraceSearchMetadata`).
#[derive(Clone, Debug, PartialEq)]
pub struct TraceMatch {
    /// The trace.
    pub trace_id: TraceId,
    /// `service.name` of the root span, or `<root span not yet received>`.
    pub root_service_name: String,
    /// Name of the root span (empty when the root is missing).
    pub root_trace_name: String,
    /// Earliest span start (ns).
    pub start_time_ns: i64,
    /// Latest span end minus earliest span start, in ms.
    pub duration_ms: u64,
    /// The spansets that matched.
    pub span_sets: Vec<SpanSet>,
}

/// A spanset that came out of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanSet {
    /// At most `spans_per_spanset` of its spans.
    pub spans: Vec<MatchedSpan>,
    /// Number of spans in the spanset.
    pub matched: u32,
    /// Aggregate results of the pipeline (`count()`, `avg(duration)`, ...), as Tempo names them.
    pub attributes: Vec<(String, AnyValue)>,
}

/// One span of a spanset.
#[derive(Clone, Debug, PartialEq)]
pub struct MatchedSpan {
    /// The span.
    pub span_id: SpanId,
    /// Span name.
    pub name: String,
    /// Start (ns).
    pub start_time_ns: i64,
    /// Duration (ns).
    pub duration_ns: i64,
    /// Attributes the query referenced or `select()`ed, with Tempo's names (`status`,
    /// `span.http.method`, `resource.service.name`, ...).
    pub attributes: Vec<(String, AnyValue)>,
}

/// One series of a metrics query.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSeries {
    /// Series labels (`by()` values, `p` for quantiles, `__bucket` for histograms).
    pub labels: Vec<(String, AnyValue)>,
    /// `(timestamp ms, value)` samples, one per step that has data.
    pub samples: Vec<(i64, f64)>,
}

/// Why a query failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// The query does not parse, is not valid TraceQL, or is the wrong kind for the endpoint (a
    /// metrics query sent to search, a search query sent to metrics). A client error (400).
    Parse(ParseError),
    /// A configured limit was exceeded.
    Limit(String),
    /// The deadline passed.
    Timeout,
    /// The request cannot be run as asked (a non-positive step, an end before the start) or
    /// evaluation failed (division by zero, spanset operators over several spansets).
    Execution(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(e) => write!(f, "invalid TraceQL query: {e}"),
            Error::Limit(m) => f.write_str(m),
            Error::Timeout => f.write_str("query timed out"),
            Error::Execution(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Parse(e)
    }
}

//! LogQL: a parser and an evaluator over [`storage::LogsReader`], with Grafana Loki 2.9's
//! semantics.
//!
//! No published crate parses LogQL, so the parser is our own ([`parse`], hand-written recursive
//! descent over a small lexer, reporting errors in Loki's words and positions). Evaluation
//! ([`Engine::execute`]) covers log queries (selector, line filters, parsers, label filters,
//! formatting stages, `drop`/`keep`/`decolorize`) and metric queries (range aggregations incl.
//! `unwrap`, vector aggregations, binary operators, `vector()`, `label_replace`, `offset`).
//!
//! Layout: `lexer` (tokens with Loki's positions) → `parser` (recursive descent, Loki's
//! precedence and validation) → `ast`; `pipeline` runs the per-entry stages over a label builder
//! (stream labels, structured metadata, parsed labels, `__error__`); `template` is the Go
//! `text/template` subset with Loki's function map; `eval` scans storage and evaluates;
//! `units` parses Go durations and humanized byte sizes.
//!
//! Deliberate differences from Loki 2.9.13 (each a Loki bug): `|~ "(?i)literal"` matches
//! case-insensitively everywhere (Loki's rewrite to a lower-case substring search misses matches
//! that start right after a partial match), and `bytes <= 1KiB` means 1024 bytes.
//!
//! Invariants:
//! - Storage hints (`LogScan::line_contains`) only let the store skip records; every line handed
//!   back is verified against every filter here.
//! - Range windows are left-open, `(t - range, t]`, as in Loki; log query ranges are
//!   `[start, end)`.
//! - Every evaluation is bounded by [`EngineOptions`] (entries, series, samples, lines scanned,
//!   time); exceeding one is an [`Error`] naming it, never a partial answer.

mod ast;
mod eval;
mod lexer;
mod parser;
mod pipeline;
mod template;
mod units;

use std::fmt;
use std::time::Duration;

pub use ast::*;
pub use parser::{parse, parse_selector};
use storage::model::Labels;

/// A LogQL syntax or validation error, displayed as Loki words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong (e.g. `syntax error: unexpected IDENTIFIER`).
    pub message: String,
    /// 1-based line of the offending token (0 when the error has no position).
    pub line: usize,
    /// 1-based column of the offending token (0 when the error has no position).
    pub col: usize,
}

impl ParseError {
    pub(crate) fn at(line: usize, col: usize, message: impl Into<String>) -> ParseError {
        ParseError { message: message.into(), line, col }
    }

    pub(crate) fn plain(message: impl Into<String>) -> ParseError {
        ParseError { message: message.into(), line: 0, col: 0 }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 && self.col == 0 {
            write!(f, "parse error : {}", self.message)
        } else {
            write!(f, "parse error at line {}, col {}: {}", self.line, self.col, self.message)
        }
    }
}

impl std::error::Error for ParseError {}

/// Limits of one evaluation.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Largest `limit` a log query may ask for (Loki's `max_entries_limit_per_query`).
    pub max_entries_limit: u32,
    /// Most series a metric query may return (Loki's `max_query_series`).
    pub max_series: usize,
    /// Most samples a metric query may hold in memory at once.
    pub max_samples: usize,
    /// Deadline of one evaluation.
    pub timeout: Duration,
    /// Most log lines one evaluation may read from storage.
    pub max_lines_scanned: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_entries_limit: 5000,
            max_series: 500,
            max_samples: 5_000_000,
            timeout: Duration::from_secs(60),
            max_lines_scanned: 50_000_000,
        }
    }
}

/// The LogQL engine: stateless apart from its limits.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub(crate) opts: EngineOptions,
}

impl Engine {
    /// An engine with these limits.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    /// The engine's limits.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Parses and evaluates `req` over `reader`.
    pub fn execute(&self, reader: &dyn storage::LogsReader, req: &Request) -> Result<Response, Error> {
        eval::execute(self, reader, req)
    }
}

/// One query: Loki's `query` (instant) or `query_range` parameters, times in ns.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The LogQL text.
    pub query: String,
    /// Range start (ns, inclusive).
    pub start_ns: i64,
    /// Range end (ns); for instant queries the evaluation time.
    pub end_ns: i64,
    /// Step of a metric range query (ns); 0 for instant queries.
    pub step_ns: i64,
    /// Instant query: evaluate at `end_ns` only.
    pub instant: bool,
    /// Most entries a log query returns.
    pub limit: u32,
    /// Order of the entries of a log query.
    pub direction: storage::Direction,
    /// Loki's `interval` for log range queries (ns, 0 = none): at most one entry per interval.
    pub interval_ns: i64,
}

/// The result of a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// Log query result.
    Streams(Vec<Stream>),
    /// Instant metric result.
    Vector(Vec<VecSample>),
    /// Range metric result.
    Matrix(Vec<MatrixSeries>),
    /// A scalar (a literal-only instant query).
    Scalar {
        /// Evaluation time (ns).
        t_ns: i64,
        /// The value.
        v: f64,
    },
}

/// Entries sharing one label set (stream labels plus labels the pipeline extracted).
#[derive(Clone, Debug, PartialEq)]
pub struct Stream {
    /// The full label set of the entries.
    pub labels: Labels,
    /// The entries, in the requested direction.
    pub entries: Vec<Entry>,
}

/// One log entry of a result.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Timestamp (ns).
    pub ts_ns: i64,
    /// The (possibly rewritten) line.
    pub line: String,
    /// Structured metadata of the entry (the record's attributes still present after the pipeline).
    pub structured_metadata: Vec<(String, String)>,
    /// Labels the pipeline extracted or added (for the categorize-labels encoding).
    pub parsed: Vec<(String, String)>,
}

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct VecSample {
    /// Series labels.
    pub labels: Labels,
    /// Sample time (ns).
    pub t_ns: i64,
    /// Value.
    pub v: f64,
}

/// One series of a range result.
#[derive(Clone, Debug, PartialEq)]
pub struct MatrixSeries {
    /// Series labels.
    pub labels: Labels,
    /// `(time ns, value)` in time order.
    pub samples: Vec<(i64, f64)>,
}

/// An answer with its statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// The result.
    pub data: Data,
    /// What the evaluation read.
    pub stats: Stats,
    /// Warnings to show beside the data.
    pub warnings: Vec<String>,
}

/// Execution statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Log lines read from storage.
    pub lines_scanned: u64,
    /// Bytes of those lines.
    pub bytes_scanned: u64,
    /// Wall time of the evaluation.
    pub exec_time: Duration,
}

/// Why a query failed.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// The query does not parse or is invalid (HTTP 400).
    Parse(ParseError),
    /// A limit was exceeded (HTTP 400); the message names it.
    Limit(String),
    /// The deadline passed (HTTP 503/504).
    Timeout,
    /// Evaluation failed (HTTP 500), e.g. a template that fails at run time.
    Execution(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse(e) => e.fmt(f),
            Error::Limit(m) | Error::Execution(m) => f.write_str(m),
            Error::Timeout => f.write_str("context deadline exceeded"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error::Parse(e)
    }
}

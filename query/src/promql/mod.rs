//! PromQL: evaluation of promql-parser's AST over [`storage::MetricsReader`], following
//! Prometheus 2.x semantics (engine.go, functions.go, quantile.go).
//!
//! Entry point: [`Engine`] with [`Engine::instant_query`] and [`Engine::range_query`]. Queries are
//! evaluated step by step: every node yields one value per evaluation step (a scalar, or a vector
//! of samples), and selectors are loaded from storage once for the whole query range.
//!
//! Invariants:
//! - Range selectors and the lookback window are closed intervals `[t - range, t]` (Prometheus 2.x).
//! - A staleness marker ends a series: it is never returned and hides older samples from lookback.
//! - Range query results are matrices sorted by labels; instant vectors keep evaluation order.
//!
//! Known differences from Prometheus 2.42 (the reference the tests were checked against):
//! - Parse errors carry promql-parser's wording and no `line:col` position.
//! - Native histograms follow later 2.x releases where 2.42's experimental support had gaps
//!   (histogram arithmetic with `-`, `*`, `/`, `avg`, `last_over_time`).
//! - A range selector with `@` under `predict_linear` keeps its window at the `@` time in range
//!   queries (2.42 moves it with each step).
//! - Subqueries without a step use 1m, Prometheus' default evaluation interval.

mod aggr;
mod binop;
mod eval;
mod functions;
mod histogram;
mod value;

use std::fmt;
use std::time::Duration;

/// Hash map for the evaluator's hot paths (group keys, label sets): foldhash instead of SipHash.
/// Lookups only; nothing iterates one of these in hash order into an answer.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// Hash set counterpart of [`FastMap`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub use value::{FloatHistogram, Point, Sample, Series, Value};

/// Engine limits and defaults.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant vector selector looks for a sample (Prometheus: 5 minutes).
    pub lookback_delta_ms: i64,
    /// Most samples a query may hold in memory at once.
    pub max_samples: usize,
    /// Default query deadline when the request gives none.
    pub timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { lookback_delta_ms: 300_000, max_samples: 50_000_000, timeout: Duration::from_secs(120) }
    }
}

/// The PromQL engine: stateless apart from its options, shareable between threads.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// What a query returns.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// The result value.
    pub value: Value,
    /// Annotations (e.g. "PromQL info: metric might not be a counter").
    pub warnings: Vec<String>,
    /// Samples read from storage while evaluating (counted per evaluation step).
    pub samples_touched: u64,
}

/// Why a query failed, classified as the Prometheus HTTP API does.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryError {
    /// The query does not parse: `parse error: ...`.
    Parse(String),
    /// Another input problem (bad parameter, wrong expression type for a range query).
    BadData(String),
    /// Evaluation failed (duplicate series, many-to-many matching, bad function argument).
    Execution(String),
    /// The deadline passed.
    Timeout,
    /// The query was canceled.
    Canceled,
    /// The query would hold more than `max_samples` samples.
    TooManySamples,
}

impl QueryError {
    /// The Prometheus API `errorType`.
    pub fn error_type(&self) -> &'static str {
        match self {
            QueryError::Parse(_) | QueryError::BadData(_) => "bad_data",
            QueryError::Execution(_) | QueryError::TooManySamples => "execution",
            QueryError::Timeout => "timeout",
            QueryError::Canceled => "canceled",
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Parse(s) | QueryError::BadData(s) | QueryError::Execution(s) => f.write_str(s),
            QueryError::Timeout => f.write_str("query timed out in expression evaluation"),
            QueryError::Canceled => f.write_str("query was canceled in expression evaluation"),
            QueryError::TooManySamples => {
                f.write_str("query processing would load too many samples into memory in query execution")
            }
        }
    }
}

impl std::error::Error for QueryError {}

impl Engine {
    /// An engine with these options.
    pub fn new(opts: EngineOptions) -> Engine {
        Engine { opts }
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `query` at `time_ms`.
    pub fn instant_query(
        &self,
        reader: &dyn storage::MetricsReader,
        query: &str,
        time_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<QueryResult, QueryError> {
        let expr = parse(query)?;
        eval::run(reader, &self.opts, &expr, time_ms, time_ms, 0, timeout.unwrap_or(self.opts.timeout))
    }

    /// Evaluates `query` at every `step_ms` from `start_ms` to `end_ms`; the result is a matrix.
    pub fn range_query(
        &self,
        reader: &dyn storage::MetricsReader,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<QueryResult, QueryError> {
        if step_ms <= 0 {
            return Err(QueryError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(QueryError::BadData("end timestamp must not be before start time".into()));
        }
        let expr = parse(query)?;
        use promql_parser::parser::value::ValueType;
        let ty = expr.value_type();
        if ty != ValueType::Vector && ty != ValueType::Scalar {
            return Err(QueryError::BadData(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                documented_type(ty)
            )));
        }
        eval::run(reader, &self.opts, &expr, start_ms, end_ms, step_ms, timeout.unwrap_or(self.opts.timeout))
    }
}

fn documented_type(t: promql_parser::parser::value::ValueType) -> &'static str {
    use promql_parser::parser::value::ValueType;
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
    }
}

/// Registers the Prometheus 2.x functions promql-parser 0.11 no longer knows (`holt_winters`).
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::function::{Function, register_extra_functions};
        use promql_parser::parser::value::ValueType;
        // Fails only on a clash with a built-in, which holt_winters is not in 0.11.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Parses a PromQL expression, mapping errors to Prometheus' `parse error:` text.
pub(crate) fn parse(query: &str) -> Result<promql_parser::parser::Expr, QueryError> {
    register_functions();
    if query.trim().is_empty() {
        return Err(QueryError::Parse("parse error: no expression found in input".into()));
    }
    promql_parser::parser::parse(query).map_err(|e| QueryError::Parse(format!("parse error: {e}")))
}

/// Parses a series selector (`match[]` of `/api/v1/series`, `/labels`, ...) into matchers.
pub fn parse_selector(s: &str) -> Result<Vec<storage::Matcher>, QueryError> {
    use promql_parser::parser::Expr;
    match parse(s)? {
        Expr::VectorSelector(vs) => {
            let m = eval::selector_matchers(&vs)?;
            if m.iter().all(|m| m.matches_empty()) {
                return Err(QueryError::BadData("match[] must contain at least one non-empty matcher".into()));
            }
            Ok(m)
        }
        other => Err(QueryError::Parse(format!(
            "parse error: expected type vector selector, got {}",
            documented_type(other.value_type())
        ))),
    }
}

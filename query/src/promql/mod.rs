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

/// Parses a PromQL expression, mapping errors to Prometheus' `<line>:<col>: parse error: …` text.
pub fn parse(query: &str) -> Result<promql_parser::parser::Expr, QueryError> {
    register_functions();
    if query.trim().is_empty() {
        return Err(QueryError::Parse("1:1: parse error: no expression found in input".into()));
    }
    promql_parser::parser::parse(query).map_err(|e| QueryError::Parse(prometheus_parse_error(query, &e)))
}

/// Prometheus' text for a parse error of `query` that promql-parser words as `msg`:
/// `<line>:<col>: parse error: <message>`, the position 1-based with the column in bytes, as
/// Prometheus reports it. promql-parser's errors carry no position, so it is found here for the
/// kinds whose place follows from the text: errors at the end of the input (an unclosed
/// parenthesis, bracket or brace, a trailing operator or grouping keyword: the position just past
/// the last byte), a trailing grouping keyword where none may stand (the keyword), an unexpected
/// character (its first place outside quotes), an unterminated string (its opening quote), an
/// unknown function or a wrong argument count (the function's name), and an argument of the wrong
/// type (the argument). Other errors keep promql-parser's wording without a position.
fn prometheus_parse_error(query: &str, msg: &str) -> String {
    let at = |offset: usize| {
        let before = &query[..offset.min(query.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{line}:{col}")
    };
    let end = query.len();
    let (text, offset): (String, Option<usize>) = if msg == "unexpected end of input inside brackets" {
        ("unclosed left bracket".into(), Some(end))
    } else if msg.contains("end of input") || msg == "unclosed left parenthesis" {
        (msg.into(), Some(end))
    } else if msg == "invalid promql query" {
        // promql-parser's answer for every grammar error (its private `INVALID_QUERY_INFO`).
        match trailing_word(query) {
            Some(w @ ("by" | "without" | "on" | "ignoring")) => {
                let at = query.trim_end().len() - w.len();
                if grouping_may_follow(&query[..at], w) {
                    ("unexpected end of input in grouping opts, expected \"(\"".into(), Some(end))
                } else {
                    (format!("unexpected <{w}>"), Some(at))
                }
            }
            Some(w) if ENDLESS.contains(&w) => ("unexpected end of input".into(), Some(end)),
            _ => (msg.into(), None),
        }
    } else if let Some(c) = msg.strip_prefix("unexpected character: '").and_then(|r| r.strip_suffix('\'')) {
        let mut chars = c.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => (msg.into(), unquoted(query).find(|&(_, ch)| ch == c).map(|(i, _)| i)),
            _ => (msg.into(), None),
        }
    } else if msg.starts_with("unterminated quoted string") {
        ("unterminated quoted string".into(), open_quote(query))
    } else if let Some(name) = msg.strip_prefix("unknown function with name '").and_then(|r| r.strip_suffix('\'')) {
        (format!("unknown function with name {name:?}"), call_at(query, name).map(|(at, _)| at))
    } else if let Some((name, got)) = msg
        .strip_prefix("expected ")
        .and_then(|r| r.split_once(" argument(s) in call to '"))
        .and_then(|(n, r)| Some((n, r.split_once("', got ")?)))
        .map(|(n, (f, g))| (f, format!("expected {n} argument(s) in call to {f:?}, got {g}")))
    {
        (got, call_at(query, name).map(|(at, _)| at))
    } else if let Some((want, name, got)) = msg
        .strip_prefix("expected type ")
        .and_then(|r| r.split_once(" in call to function '"))
        .and_then(|(w, r)| r.split_once("', got ").map(|(f, g)| (w, f, g)))
    {
        let text = format!("expected type {} in call to function {name:?}, got {}", type_words(want), type_words(got));
        let arg = call_at(query, name).and_then(|(_, open)| {
            call_args(query, open).into_iter().find(|&(_, a)| apparent_type(a) == got).map(|(at, _)| at)
        });
        (text, arg)
    } else {
        (msg.into(), None)
    };
    match offset {
        Some(o) => format!("{}: parse error: {text}", at(o)),
        None => format!("parse error: {text}"),
    }
}

/// Prometheus' words for promql-parser's value type names.
fn type_words(t: &str) -> &str {
    match t {
        "matrix" => "range vector",
        "vector" => "instant vector",
        other => other,
    }
}

/// The type an argument's text plainly has (promql-parser's names): a quoted string, a number, a
/// range (text ending in `]`: a range selector or a subquery), else an instant vector. Used only
/// to place an error; an argument of another shape just finds no match.
fn apparent_type(arg: &str) -> &'static str {
    let a = arg.trim();
    if a.starts_with(['"', '\'', '`']) {
        "string"
    } else if a.parse::<f64>().is_ok() {
        "scalar"
    } else if a.ends_with(']') {
        "matrix"
    } else {
        "vector"
    }
}

/// The first call of function `name` outside quotes: the byte offsets of its name and of its `(`.
fn call_at(query: &str, name: &str) -> Option<(usize, usize)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<(usize, char)> = unquoted(query).collect();
    for (k, &(i, _)) in chars.iter().enumerate() {
        if !query[i..].starts_with(name) || (k > 0 && ident(chars[k - 1].1) && chars[k - 1].0 + 1 == i) {
            continue;
        }
        let rest = &query[i + name.len()..];
        let paren = rest.len() - rest.trim_start().len();
        if rest.trim_start().starts_with('(') {
            return Some((i, i + name.len() + paren));
        }
    }
    None
}

/// The arguments of the call whose `(` is at byte `open`: each one's first non-blank byte offset
/// and its text, split at the commas outside brackets and quotes.
fn call_args(query: &str, open: usize) -> Vec<(usize, &str)> {
    let mut ranges = Vec::new();
    let mut depth = 0usize;
    let mut start = open + 1;
    for (i, c) in unquoted(&query[open..]).map(|(i, c)| (open + i, c)) {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    ranges.push((start, i));
                    break;
                }
            }
            ',' if depth == 1 => {
                ranges.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    ranges
        .into_iter()
        .filter_map(|(a, e)| {
            let text = &query[a..e];
            let blank = text.len() - text.trim_start().len();
            (!text.trim().is_empty()).then(|| (a + blank, text.trim_start()))
        })
        .collect()
}

/// The aggregation operators of Prometheus 2.42.
const AGGREGATORS: &[&str] =
    &["sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"];

/// Whether keyword `w` (`by`/`without` or `on`/`ignoring`) may stand after `before`: `by` and
/// `without` after an aggregation operator, or after an aggregation's `(…)` that has no grouping
/// yet (`sum(x) by (…)`); `on` and `ignoring` after a binary operator or `bool`.
fn grouping_may_follow(before: &str, w: &str) -> bool {
    let b = before.trim_end();
    if matches!(w, "on" | "ignoring") {
        return trailing_word(b).is_some_and(|p| ENDLESS.contains(&p));
    }
    if trailing_word(b).is_some_and(|p| AGGREGATORS.contains(&p)) {
        return true;
    }
    // `agg(…)` just before: find the `(` matching the final `)`.
    if !b.ends_with(')') {
        return false;
    }
    let mut depth = 0usize;
    let mut open = None;
    for (i, c) in unquoted(b).collect::<Vec<_>>().into_iter().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    open = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    open.and_then(|i| trailing_word(&b[..i])).is_some_and(|p| AGGREGATORS.contains(&p))
}

/// Tokens after which an expression cannot end: binary operators and `bool`.
const ENDLESS: &[&str] =
    &["+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">=", "and", "or", "unless", "atan2", "bool"];

/// The last token of `query` when it is an operator symbol or a word (outside quotes).
fn trailing_word(query: &str) -> Option<&str> {
    let t = query.trim_end();
    if open_quote(query).is_some() {
        return None;
    }
    let word = t.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("");
    if !word.is_empty() {
        return Some(word);
    }
    let sym = t.rsplit(|c: char| !"+-*/%^=!<>".contains(c)).next().unwrap_or("");
    (!sym.is_empty()).then_some(sym)
}

/// Follows PromQL's quoted strings (`"…"`, `'…'` with backslash escapes, raw `` `…` ``) one
/// character at a time.
#[derive(Default)]
struct Quotes {
    /// The open string's quote and the byte offset where it opened.
    open: Option<(usize, char)>,
    escaped: bool,
}

impl Quotes {
    /// Takes the character at byte `i`; true when it is outside quotes (quote marks included
    /// in the string they delimit).
    fn outside(&mut self, i: usize, c: char) -> bool {
        match self.open {
            Some((_, q)) => {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' && q != '`' {
                    self.escaped = true;
                } else if c == q {
                    self.open = None;
                }
                false
            }
            None if matches!(c, '"' | '\'' | '`') => {
                self.open = Some((i, c));
                false
            }
            None => true,
        }
    }
}

/// The characters of `query` outside quoted strings, with their byte offsets.
fn unquoted(query: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut quotes = Quotes::default();
    query.char_indices().filter(move |&(i, c)| quotes.outside(i, c))
}

/// The byte offset of the opening quote of a string `query` leaves unterminated, if any.
fn open_quote(query: &str) -> Option<usize> {
    let mut quotes = Quotes::default();
    for (i, c) in query.char_indices() {
        quotes.outside(i, c);
    }
    quotes.open.map(|(i, _)| i)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse errors worded and placed as Prometheus 2.42 answered these queries (recorded from
    /// a live `prometheus`; `tests/it/prom_diff.rs` compares with one directly when installed).
    #[test]
    fn parse_errors_carry_prometheus_positions_and_words() {
        let cases = [
            ("", "1:1: parse error: no expression found in input"),
            ("sum(", "1:5: parse error: unclosed left parenthesis"),
            ("foo\n + (", "2:5: parse error: unclosed left parenthesis"),
            ("x[5m", "1:5: parse error: unclosed left bracket"),
            ("x{a=", "1:5: parse error: unexpected end of input inside braces"),
            ("1 + ", "1:5: parse error: unexpected end of input"),
            ("x +\n", "2:1: parse error: unexpected end of input"),
            ("x{a=\"é\"}+", "1:11: parse error: unexpected end of input"),
            ("x == bool", "1:10: parse error: unexpected end of input"),
            ("sum without", "1:12: parse error: unexpected end of input in grouping opts, expected \"(\""),
            ("sum(x) without", "1:15: parse error: unexpected end of input in grouping opts, expected \"(\""),
            ("x == bool on", "1:13: parse error: unexpected end of input in grouping opts, expected \"(\""),
            ("rate(x[5m]) by", "1:13: parse error: unexpected <by>"),
            ("sum by (a) (x) by", "1:16: parse error: unexpected <by>"),
            ("x on", "1:3: parse error: unexpected <on>"),
            ("x{a=\"b\"} é", "1:10: parse error: unexpected character: 'é'"),
            ("x{a=\"b\"} + y{c=\"d", "1:16: parse error: unterminated quoted string"),
            ("x + foo(y)", "1:5: parse error: unknown function with name \"foo\""),
            ("time(1)", "1:1: parse error: expected 0 argument(s) in call to \"time\", got 1"),
            (
                "rate(x{a=\"rate(\"})",
                "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector",
            ),
            (
                "histogram_quantile(0.9, x[5m])",
                "1:25: parse error: expected type instant vector in call to function \"histogram_quantile\", got range vector",
            ),
        ];
        for (q, want) in cases {
            match parse(q) {
                Err(QueryError::Parse(got)) => assert_eq!(got, want, "{q:?}"),
                other => panic!("{q:?}: {other:?}"),
            }
        }
    }

    /// Cut and spliced queries (multi-byte characters, quotes, brackets at every place) never
    /// make the error placement panic, and every position it gives lies within the query.
    #[test]
    fn parse_errors_of_mangled_queries_never_panic() {
        let base = "histogram_quantile(0.9, sum by (le) (rate(x{a=\"é'\\\"\", b=~`(`}[5m] offset 1m)))\n + on(a) é";
        let pieces = ["(", ")", "[", "]", "{", "}", "\"", "'", "`", ",", "é", "rate(", "+", " by", "\n"];
        let chars: Vec<(usize, char)> = base.char_indices().collect();
        let mut seed: u64 = 3;
        for _ in 0..5_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let cut = chars[(seed >> 33) as usize % chars.len()].0;
            let piece = pieces[(seed >> 20) as usize % pieces.len()];
            let q = format!("{}{piece}", &base[..cut]);
            let Err(QueryError::Parse(msg)) = parse(&q) else { continue };
            if let Some((line, rest)) = msg.split_once(':').filter(|(l, _)| l.parse::<usize>().is_ok()) {
                let col: usize = rest.split(':').next().unwrap().parse().unwrap();
                let line: usize = line.parse().unwrap();
                let last = q.split('\n').nth(line - 1).unwrap_or_else(|| panic!("{q:?}: {msg}"));
                assert!(col <= last.len() + 1, "{q:?}: {msg}");
            }
        }
    }
}

//! A recursive-descent (precedence-climbing) parser with Tempo's grammar and precedences.
//!
//! Precedence, lowest first, as `expr.y` declares it: `|`; `&&` `||` (one level, left
//! associative, so `a || b && c` is `(a || b) && c`); comparisons and structural operators;
//! `+ -`; `!`; `* / %`; `^` (right associative); unary minus. Prefix `-` and `!` therefore take
//! operands that extend over `* / % ^` only. `x = nil` / `x != nil` are (not-)exists tests; `nil`
//! appears nowhere else.
//!
//! After parsing, [`validate`] applies Tempo's static checks (a filter must be boolean, operands
//! must have matching types, regexes must compile).

use storage::model::{SpanKind, StatusCode};

use super::ParseError;
use super::ast::*;
use super::lexer::{Tok, Token, lex};

/// Parses and validates a query.
pub(crate) fn parse(q: &str) -> Result<Query, ParseError> {
    let toks = lex(q)?;
    let mut p = Parser { q, toks, i: 0, depth: 0, nodes: 0 };
    let query = p.root()?;
    if tree_depth(&query) > MAX_DEPTH {
        return Err(ParseError::without_position(format!("query is nested more than {MAX_DEPTH} levels deep")));
    }
    validate(q, &query)?;
    Ok(query)
}

/// Parses one attribute or intrinsic (`resource.service.name`, `span."a b"`, `name`, `span:id`).
pub(crate) fn parse_attribute(text: &str) -> Result<Attribute, ParseError> {
    let toks = lex(text)?;
    let mut p = Parser { q: text, toks, i: 0, depth: 0, nodes: 0 };
    let a = p.attribute()?;
    if !matches!(p.peek(), Tok::Eof) {
        return Err(p.unexpected(&[]));
    }
    validate_attr(&a).map_err(ParseError::without_position)?;
    Ok(a)
}

struct Parser<'a> {
    q: &'a str,
    toks: Vec<Token>,
    i: usize,
    /// Current recursion depth of the parser.
    depth: usize,
    /// Operator nodes built so far.
    nodes: usize,
}

/// Most operator nodes a query may have. Together with [`MAX_DEPTH`] this keeps every walk of
/// the tree (including dropping it) far from the stack's limits.
pub const MAX_NODES: usize = 2_000;

/// Deepest nesting a query may have: bounds the recursion of parsing, checking and evaluation.
pub const MAX_DEPTH: usize = 128;

const STRUCTURAL: &[(&str, SpansetOp)] = &[
    (">", SpansetOp::Child),
    ("<", SpansetOp::Parent),
    (">>", SpansetOp::Descendant),
    ("<<", SpansetOp::Ancestor),
    ("~", SpansetOp::Sibling),
    ("!>", SpansetOp::NotChild),
    ("!<", SpansetOp::NotParent),
    ("!>>", SpansetOp::NotDescendant),
    ("!<<", SpansetOp::NotAncestor),
    ("!~", SpansetOp::NotSibling),
    ("&>", SpansetOp::UnionChild),
    ("&<", SpansetOp::UnionParent),
    ("&>>", SpansetOp::UnionDescendant),
    ("&<<", SpansetOp::UnionAncestor),
    ("&~", SpansetOp::UnionSibling),
];

const CMP_OPS: &[(&str, BinOp)] =
    &[("=", BinOp::Eq), ("!=", BinOp::Neq), ("<", BinOp::Lt), ("<=", BinOp::Lte), (">", BinOp::Gt), (">=", BinOp::Gte)];

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].tok
    }

    fn peek_n(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].pos
    }

    fn advance(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn is(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Sym(x) if *x == s)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.is(s) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn err_at(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.q, pos, msg)
    }

    fn unexpected(&self, expecting: &[&str]) -> ParseError {
        let mut msg = format!("syntax error: unexpected {}", self.peek().describe());
        for (i, e) in expecting.iter().enumerate() {
            msg.push_str(if i == 0 { ", expecting " } else { " or " });
            msg.push_str(e);
        }
        self.err_at(self.pos(), msg)
    }

    /// Counts one more operator node.
    fn node(&mut self) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err_at(self.pos(), format!("query has more than {MAX_NODES} operators")));
        }
        Ok(())
    }

    fn expect(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat(s) { Ok(()) } else { Err(self.unexpected(&[s])) }
    }

    fn root(&mut self) -> Result<Query, ParseError> {
        if matches!(self.peek(), Tok::Eof) {
            return Err(self.unexpected(&[]));
        }
        let (pipeline, metrics) = self.pipeline(true)?;
        let mut hints = Vec::new();
        if self.eat("with") {
            self.expect("(")?;
            loop {
                let name = match self.peek().clone() {
                    Tok::Ident(n) => n,
                    _ => return Err(self.unexpected(&["IDENTIFIER"])),
                };
                self.advance();
                self.expect("=")?;
                let v = self.static_literal()?;
                hints.push((name, v));
                if !self.eat(",") {
                    break;
                }
            }
            self.expect(")")?;
        }
        if !matches!(self.peek(), Tok::Eof) {
            return Err(self.unexpected(if hints.is_empty() { &["with"] } else { &[] }));
        }
        Ok(Query { pipeline, metrics, hints })
    }

    fn pipeline(&mut self, allow_metrics: bool) -> Result<(Pipeline, Option<MetricsAggregate>), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(self.pos(), format!("query is nested more than {MAX_DEPTH} levels deep")));
        }
        let r = self.pipeline_inner(allow_metrics);
        self.depth -= 1;
        r
    }

    fn pipeline_inner(&mut self, allow_metrics: bool) -> Result<(Pipeline, Option<MetricsAggregate>), ParseError> {
        if self.is("coalesce") {
            return Err(self.unexpected(&[]));
        }
        let mut stages = vec![self.stage()?];
        while self.is("|") {
            self.advance();
            if allow_metrics && self.is_metrics_fn() {
                let m = self.metrics()?;
                return Ok((Pipeline { stages }, Some(m)));
            }
            stages.push(self.stage()?);
        }
        Ok((Pipeline { stages }, None))
    }

    fn is_metrics_fn(&self) -> bool {
        matches!(
            self.peek(),
            Tok::Sym(
                "rate"
                    | "count_over_time"
                    | "min_over_time"
                    | "max_over_time"
                    | "avg_over_time"
                    | "sum_over_time"
                    | "quantile_over_time"
                    | "histogram_over_time"
                    | "compare"
            )
        )
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        match self.peek() {
            Tok::Sym("by") => {
                self.advance();
                self.expect("(")?;
                let e = self.field(0)?;
                self.expect(")")?;
                Ok(Stage::GroupBy(e))
            }
            Tok::Sym("coalesce") => {
                self.advance();
                self.expect("(")?;
                self.expect(")")?;
                Ok(Stage::Coalesce)
            }
            Tok::Sym("select") => {
                self.advance();
                self.expect("(")?;
                let attrs = self.attribute_list()?;
                self.expect(")")?;
                Ok(Stage::Select(attrs))
            }
            _ if self.looks_scalar() => self.scalar_filter(),
            _ => Ok(Stage::Spanset(self.spanset(0, false)?)),
        }
    }

    /// A stage is a scalar filter when, past any `(`, it starts with an aggregate or a number.
    fn looks_scalar(&self) -> bool {
        let mut n = 0;
        while matches!(self.peek_n(n), Tok::Sym("(")) {
            n += 1;
        }
        matches!(
            self.peek_n(n),
            Tok::Sym("count" | "avg" | "max" | "min" | "sum" | "-") | Tok::Int(_) | Tok::Float(_) | Tok::Duration(_)
        )
    }

    fn scalar_filter(&mut self) -> Result<Stage, ParseError> {
        let start = self.pos();
        let lhs = self.scalar(0)?;
        let op = match self.peek() {
            Tok::Sym(s) => CMP_OPS.iter().find(|(t, _)| t == s).map(|(_, o)| *o),
            _ => None,
        };
        let Some(op) = op else {
            return Err(self.unexpected(&[]));
        };
        self.advance();
        let rhs_pos = self.pos();
        let rhs = self.scalar(0)?;
        if !has_aggregate(&lhs) && !has_aggregate(&rhs) {
            return Err(self.err_at(rhs_pos, "syntax error: scalar filters need an aggregate"));
        }
        // Constant arithmetic is folded, as Tempo's grammar does.
        let fold = |e: ScalarExpr, p: &Self| -> Result<ScalarExpr, ParseError> {
            if has_aggregate(&e) {
                return Ok(e);
            }
            super::eval::fold_constant(&e).map(ScalarExpr::Static).map_err(|m| p.err_at(start, m))
        };
        let lhs = fold(lhs, self)?;
        let rhs = fold(rhs, self)?;
        Ok(Stage::ScalarFilter { op, lhs, rhs })
    }

    fn scalar(&mut self, min: u8) -> Result<ScalarExpr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(self.pos(), format!("query is nested more than {MAX_DEPTH} levels deep")));
        }
        let r = self.scalar_inner(min);
        self.depth -= 1;
        r
    }

    fn scalar_inner(&mut self, min: u8) -> Result<ScalarExpr, ParseError> {
        let mut lhs = self.scalar_primary()?;
        while let Some((op, lp, right)) = self.peek_arith() {
            if lp < min {
                break;
            }
            self.advance();
            let rhs = self.scalar(if right { lp } else { lp + 1 })?;
            self.node()?;
            lhs = ScalarExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn peek_arith(&self) -> Option<(BinOp, u8, bool)> {
        Some(match self.peek() {
            Tok::Sym("+") => (BinOp::Add, 3, false),
            Tok::Sym("-") => (BinOp::Sub, 3, false),
            Tok::Sym("*") => (BinOp::Mul, 5, false),
            Tok::Sym("/") => (BinOp::Div, 5, false),
            Tok::Sym("%") => (BinOp::Mod, 5, false),
            Tok::Sym("^") => (BinOp::Pow, 6, true),
            _ => return None,
        })
    }

    fn scalar_primary(&mut self) -> Result<ScalarExpr, ParseError> {
        match self.peek().clone() {
            Tok::Sym("(") => {
                self.advance();
                let e = self.scalar(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("-") => {
                self.advance();
                match self.scalar(5)? {
                    ScalarExpr::Static(Static::Int(i)) => Ok(ScalarExpr::Static(Static::Int(-i))),
                    ScalarExpr::Static(Static::Float(f)) => Ok(ScalarExpr::Static(Static::Float(-f))),
                    ScalarExpr::Static(Static::Duration(d)) => Ok(ScalarExpr::Static(Static::Duration(-d))),
                    e => Ok(ScalarExpr::Binary(BinOp::Sub, Box::new(ScalarExpr::Static(Static::Int(0))), Box::new(e))),
                }
            }
            Tok::Int(i) => {
                self.advance();
                Ok(ScalarExpr::Static(Static::Int(i)))
            }
            Tok::Float(f) => {
                self.advance();
                Ok(ScalarExpr::Static(Static::Float(f)))
            }
            Tok::Duration(d) => {
                self.advance();
                Ok(ScalarExpr::Static(Static::Duration(d)))
            }
            Tok::Sym("count") => {
                self.advance();
                self.expect("(")?;
                self.expect(")")?;
                Ok(ScalarExpr::Aggregate(AggregateOp::Count, None))
            }
            Tok::Sym(s @ ("avg" | "max" | "min" | "sum")) => {
                self.advance();
                let op = match s {
                    "avg" => AggregateOp::Avg,
                    "max" => AggregateOp::Max,
                    "min" => AggregateOp::Min,
                    _ => AggregateOp::Sum,
                };
                self.expect("(")?;
                let e = self.field(0)?;
                self.expect(")")?;
                Ok(ScalarExpr::Aggregate(op, Some(e)))
            }
            _ => Err(self.unexpected(&[])),
        }
    }

    fn spanset(&mut self, min: u8, after_op: bool) -> Result<SpansetExpr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(self.pos(), format!("query is nested more than {MAX_DEPTH} levels deep")));
        }
        let r = self.spanset_inner(min, after_op);
        self.depth -= 1;
        r
    }

    fn spanset_inner(&mut self, min: u8, after_op: bool) -> Result<SpansetExpr, ParseError> {
        let mut lhs = self.spanset_primary(after_op)?;
        loop {
            let (op, prec) = match self.peek() {
                Tok::Sym("&&") => (SpansetOp::And, 1),
                Tok::Sym("||") => (SpansetOp::Union, 1),
                Tok::Sym(s) => match STRUCTURAL.iter().find(|(t, _)| t == s) {
                    Some((_, op)) => (*op, 2),
                    None => break,
                },
                _ => break,
            };
            if prec < min {
                break;
            }
            self.advance();
            let rhs = self.spanset(prec + 1, true)?;
            self.node()?;
            lhs = SpansetExpr::Op(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn spanset_primary(&mut self, after_op: bool) -> Result<SpansetExpr, ParseError> {
        match self.peek() {
            Tok::Sym("{") => {
                self.advance();
                if self.eat("}") {
                    return Ok(SpansetExpr::Filter(FieldExpr::Static(Static::Bool(true))));
                }
                let e = self.field(0)?;
                if !self.eat("}") {
                    return Err(self.unexpected(&[]));
                }
                Ok(SpansetExpr::Filter(e))
            }
            Tok::Sym("(") => {
                self.advance();
                let (mut inner, _) = self.pipeline(false)?;
                if !self.eat(")") {
                    return Err(self.unexpected(&[")", "|"]));
                }
                if inner.stages.len() == 1
                    && let Some(Stage::Spanset(_)) = inner.stages.first()
                    && let Some(Stage::Spanset(e)) = inner.stages.pop()
                {
                    return Ok(e);
                }
                Ok(SpansetExpr::Pipeline(Box::new(inner)))
            }
            _ => Err(self.unexpected(if after_op { &["{", "("] } else { &[] })),
        }
    }

    fn peek_field_op(&self) -> Option<(BinOp, u8, bool)> {
        Some(match self.peek() {
            Tok::Sym("&&") => (BinOp::And, 1, false),
            Tok::Sym("||") => (BinOp::Or, 1, false),
            Tok::Sym("=") => (BinOp::Eq, 2, false),
            Tok::Sym("!=") => (BinOp::Neq, 2, false),
            Tok::Sym("<") => (BinOp::Lt, 2, false),
            Tok::Sym("<=") => (BinOp::Lte, 2, false),
            Tok::Sym(">") => (BinOp::Gt, 2, false),
            Tok::Sym(">=") => (BinOp::Gte, 2, false),
            Tok::Sym("=~") => (BinOp::Re, 2, false),
            Tok::Sym("!~") => (BinOp::Nre, 2, false),
            _ => return self.peek_arith(),
        })
    }

    fn field(&mut self, min: u8) -> Result<FieldExpr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err_at(self.pos(), format!("query is nested more than {MAX_DEPTH} levels deep")));
        }
        let r = self.field_inner(min);
        self.depth -= 1;
        r
    }

    fn field_inner(&mut self, min: u8) -> Result<FieldExpr, ParseError> {
        let mut lhs = self.field_primary()?;
        while let Some((op, lp, right)) = self.peek_field_op() {
            if lp < min {
                break;
            }
            self.advance();
            if !matches!(op, BinOp::Eq | BinOp::Neq) && self.is("nil") {
                return Err(self.unexpected(&[]));
            }
            if matches!(op, BinOp::Eq | BinOp::Neq) && self.is("nil") {
                self.advance();
                let u = if op == BinOp::Eq { UnaryOp::NotExists } else { UnaryOp::Exists };
                self.node()?;
                lhs = FieldExpr::Unary(u, Box::new(lhs));
                continue;
            }
            let rhs = self.field(if right { lp } else { lp + 1 })?;
            self.node()?;
            lhs = FieldExpr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn field_primary(&mut self) -> Result<FieldExpr, ParseError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Sym("(") => {
                self.advance();
                let e = self.field(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Sym("-") => {
                self.advance();
                self.node()?;
                Ok(FieldExpr::Unary(UnaryOp::Neg, Box::new(self.field(5)?)))
            }
            Tok::Sym("!") => {
                self.advance();
                self.node()?;
                Ok(FieldExpr::Unary(UnaryOp::Not, Box::new(self.field(5)?)))
            }
            Tok::Sym("nil") => {
                self.advance();
                let op = if self.eat("=") {
                    UnaryOp::NotExists
                } else if self.eat("!=") {
                    UnaryOp::Exists
                } else {
                    return Err(self.unexpected(&["!=", "="]));
                };
                if self.eat("nil") {
                    return Ok(FieldExpr::Static(Static::Bool(false)));
                }
                Ok(FieldExpr::Unary(op, Box::new(self.field(3)?)))
            }
            Tok::Sym(s) if is_attribute_start(s) => Ok(FieldExpr::Attr(self.attribute()?)),
            Tok::Ident(name) if name != "minInt" && name != "maxInt" => {
                Err(self.err_at(pos, format!("unknown identifier: {name}")))
            }
            _ => Ok(FieldExpr::Static(self.static_literal()?)),
        }
    }

    fn static_literal(&mut self) -> Result<Static, ParseError> {
        let v = match self.peek().clone() {
            Tok::Str(s) => Static::Str(s),
            Tok::Int(i) => Static::Int(i),
            Tok::Float(f) => Static::Float(f),
            Tok::Duration(d) => Static::Duration(d),
            Tok::Sym("true") => Static::Bool(true),
            Tok::Sym("false") => Static::Bool(false),
            Tok::Sym("ok") => Static::Status(StatusCode::Ok),
            Tok::Sym("error") => Static::Status(StatusCode::Error),
            Tok::Sym("unset") => Static::Status(StatusCode::Unset),
            Tok::Sym("unspecified") => Static::Kind(SpanKind::Unspecified),
            Tok::Sym("internal") => Static::Kind(SpanKind::Internal),
            Tok::Sym("server") => Static::Kind(SpanKind::Server),
            Tok::Sym("client") => Static::Kind(SpanKind::Client),
            Tok::Sym("producer") => Static::Kind(SpanKind::Producer),
            Tok::Sym("consumer") => Static::Kind(SpanKind::Consumer),
            Tok::Ident(n) if n == "minInt" => Static::Int(i64::MIN),
            Tok::Ident(n) if n == "maxInt" => Static::Int(i64::MAX),
            Tok::Ident(n) => return Err(self.err_at(self.pos(), format!("unknown identifier: {n}"))),
            _ => return Err(self.unexpected(&[])),
        };
        self.advance();
        Ok(v)
    }

    fn attribute_list(&mut self) -> Result<Vec<Attribute>, ParseError> {
        let mut out = vec![self.attribute()?];
        while self.eat(",") {
            out.push(self.attribute()?);
        }
        Ok(out)
    }

    /// An intrinsic, a scoped intrinsic (`span:id`) or an attribute (`.a`, `resource.a`).
    fn attribute(&mut self) -> Result<Attribute, ParseError> {
        let Tok::Sym(s) = self.peek().clone() else {
            return Err(self.unexpected(&[]));
        };
        if let Some(i) = bare_intrinsic(s) {
            self.advance();
            return Ok(Attribute::intrinsic(i));
        }
        if s.ends_with(':') {
            self.advance();
            let Tok::Sym(name) = self.peek().clone() else {
                return Err(self.unexpected(&[]));
            };
            let i = match (s, name) {
                ("trace:", "duration") => Intrinsic::TraceDuration,
                ("trace:", "rootName") => Intrinsic::RootName,
                ("trace:", "rootService") => Intrinsic::RootServiceName,
                ("trace:", "id") => Intrinsic::TraceId,
                ("span:", "duration") => Intrinsic::Duration,
                ("span:", "name") => Intrinsic::Name,
                ("span:", "kind") => Intrinsic::Kind,
                ("span:", "status") => Intrinsic::Status,
                ("span:", "statusMessage") => Intrinsic::StatusMessage,
                ("span:", "id") => Intrinsic::SpanId,
                ("span:", "parentID") => Intrinsic::ParentId,
                ("span:", "childCount") => Intrinsic::ChildCount,
                ("event:", "name") => Intrinsic::EventName,
                ("event:", "timeSinceStart") => Intrinsic::EventTimeSinceStart,
                ("link:", "traceID") => Intrinsic::LinkTraceId,
                ("link:", "spanID") => Intrinsic::LinkSpanId,
                ("instrumentation:", "name") => Intrinsic::InstrumentationName,
                ("instrumentation:", "version") => Intrinsic::InstrumentationVersion,
                _ => return Err(self.unexpected(&[])),
            };
            self.advance();
            return Ok(Attribute::intrinsic(i));
        }
        if !is_attribute_start(s) {
            return Err(self.unexpected(&[]));
        }
        let scope_pos = self.pos();
        self.advance();
        let mut parent = false;
        let mut scope_tok = s;
        if s == "parent." {
            parent = true;
            scope_tok = match self.peek() {
                Tok::Sym("span.") => {
                    self.advance();
                    "span."
                }
                Tok::Sym("resource.") => {
                    self.advance();
                    "resource."
                }
                _ => ".",
            };
        }
        let scope = match scope_tok {
            "span." => AttrScope::Span,
            "resource." => AttrScope::Resource,
            "event." => AttrScope::Event,
            "link." => AttrScope::Link,
            "instrumentation." => AttrScope::Instrumentation,
            _ => AttrScope::None,
        };
        match self.peek().clone() {
            Tok::AttrName(name) => {
                self.advance();
                Ok(Attribute::named(scope, parent, name))
            }
            _ => Err(self.err_at(
                scope_pos,
                if parent && scope_tok == "." {
                    "syntax error: unexpected END_ATTRIBUTE, expecting IDENTIFIER or resource. or span."
                } else {
                    "syntax error: unexpected END_ATTRIBUTE, expecting IDENTIFIER"
                },
            )),
        }
    }

    /// `compare(` already read: `{filter} [, topN [, start, end]] )`.
    fn compare_args(&mut self, pos: usize) -> Result<MetricsAggregate, ParseError> {
        if !self.is("{") {
            return Err(self.unexpected(&["{"]));
        }
        self.advance();
        let filter = if self.eat("}") {
            FieldExpr::Static(Static::Bool(true))
        } else {
            self.field(0).and_then(|f| self.expect("}").map(|_| f))?
        };
        let mut ints = Vec::new();
        while self.eat(",") {
            match self.peek() {
                Tok::Int(i) => ints.push(*i),
                _ => return Err(self.unexpected(&["INTEGER"])),
            }
            self.advance();
        }
        if ints.len() == 2 || ints.len() > 3 {
            return Err(self.unexpected(&[]));
        }
        self.expect(")")?;
        let top_n = ints.first().copied().unwrap_or(10);
        let (start, end) = if ints.len() == 3 { (ints[1], ints[2]) } else { (0, 0) };
        if top_n <= 0 || top_n > 1000 {
            return Err(ParseError::without_position(
                "compare() top number of values must be an integer between 1 and 1000",
            ));
        }
        if !(start == 0 && end == 0) {
            if start <= 0 || end <= 0 {
                return Err(ParseError::without_position(
                    "compare() timestamps must be positive integer unix nanoseconds",
                ));
            }
            if end <= start {
                return Err(ParseError::without_position(
                    "compare() end timestamp must be greater than start timestamp",
                ));
            }
        }
        let _ = pos;
        let mut second = Vec::new();
        if self.is("|") && matches!(self.peek_n(1), Tok::Sym("topk" | "bottomk")) {
            return Err(ParseError::without_position("`compare()` cannot be used with second stage functions"));
        }
        if let Tok::Sym("=" | "!=" | "<" | "<=" | ">" | ">=") = self.peek() {
            second.clear();
            return Err(ParseError::without_position("`compare()` cannot be used with second stage functions"));
        }
        Ok(MetricsAggregate {
            op: MetricsOp::Compare,
            attr: None,
            quantiles: Vec::new(),
            by: Vec::new(),
            second,
            compare: Some(CompareArgs { filter, top_n: top_n as usize, start, end }),
        })
    }

    fn metrics(&mut self) -> Result<MetricsAggregate, ParseError> {
        let pos = self.pos();
        let Tok::Sym(name) = self.advance() else {
            return Err(self.unexpected(&[]));
        };
        let op = match name {
            "rate" => MetricsOp::Rate,
            "count_over_time" => MetricsOp::CountOverTime,
            "min_over_time" => MetricsOp::MinOverTime,
            "max_over_time" => MetricsOp::MaxOverTime,
            "avg_over_time" => MetricsOp::AvgOverTime,
            "sum_over_time" => MetricsOp::SumOverTime,
            "quantile_over_time" => MetricsOp::QuantileOverTime,
            "histogram_over_time" => MetricsOp::HistogramOverTime,
            "compare" => MetricsOp::Compare,
            _ => return Err(self.err_at(pos, format!("{name}() is not supported"))),
        };
        self.expect("(")?;
        if op == MetricsOp::Compare {
            return self.compare_args(pos);
        }
        let mut attr = None;
        let mut quantiles = Vec::new();
        if !matches!(op, MetricsOp::Rate | MetricsOp::CountOverTime) {
            attr = Some(self.attribute()?);
            if op == MetricsOp::QuantileOverTime {
                self.expect(",")?;
                loop {
                    match self.peek() {
                        Tok::Float(f) => quantiles.push(*f),
                        Tok::Int(i) => quantiles.push(*i as f64),
                        _ => return Err(self.unexpected(&["FLOAT", "INTEGER"])),
                    }
                    self.advance();
                    if !self.eat(",") {
                        break;
                    }
                }
            }
        }
        self.expect(")")?;
        let mut by = Vec::new();
        if self.eat("by") {
            self.expect("(")?;
            by = self.attribute_list()?;
            self.expect(")")?;
        }
        let mut second = Vec::new();
        loop {
            if self.is("|") && matches!(self.peek_n(1), Tok::Sym("topk" | "bottomk")) {
                self.advance();
                let top = matches!(self.advance(), Tok::Sym("topk"));
                self.expect("(")?;
                let n = match self.peek() {
                    Tok::Int(n) if *n > 0 => *n as usize,
                    _ => return Err(self.unexpected(&["INTEGER"])),
                };
                self.advance();
                self.expect(")")?;
                second.push(if top { SecondStage::TopK(n) } else { SecondStage::BottomK(n) });
                continue;
            }
            let op = match self.peek() {
                Tok::Sym(s) => CMP_OPS.iter().find(|(t, _)| t == s).map(|(_, o)| *o),
                _ => None,
            };
            let Some(op) = op else { break };
            self.advance();
            let v = match self.scalar(0)? {
                ScalarExpr::Static(s) => match s {
                    Static::Int(i) => i as f64,
                    Static::Float(f) => f,
                    Static::Duration(d) => d as f64 / 1e9,
                    _ => return Err(self.unexpected(&[])),
                },
                _ => return Err(self.err_at(pos, "metrics filters compare with a number")),
            };
            second.push(SecondStage::Filter(op, v));
        }
        Ok(MetricsAggregate { op, attr, quantiles, by, second, compare: None })
    }
}

fn is_attribute_start(s: &str) -> bool {
    matches!(
        s,
        "." | "span."
            | "resource."
            | "parent."
            | "event."
            | "link."
            | "instrumentation."
            | "trace:"
            | "span:"
            | "event:"
            | "link:"
            | "instrumentation:"
    ) || bare_intrinsic(s).is_some()
}

fn bare_intrinsic(s: &str) -> Option<Intrinsic> {
    Some(match s {
        "duration" => Intrinsic::Duration,
        "name" => Intrinsic::Name,
        "status" => Intrinsic::Status,
        "statusMessage" => Intrinsic::StatusMessage,
        "kind" => Intrinsic::Kind,
        "parent" => Intrinsic::Parent,
        "rootName" => Intrinsic::RootName,
        "rootServiceName" => Intrinsic::RootServiceName,
        "traceDuration" => Intrinsic::TraceDuration,
        "nestedSetLeft" => Intrinsic::NestedSetLeft,
        "nestedSetRight" => Intrinsic::NestedSetRight,
        "nestedSetParent" => Intrinsic::NestedSetParent,
        _ => return None,
    })
}

fn has_aggregate(e: &ScalarExpr) -> bool {
    match e {
        ScalarExpr::Static(_) => false,
        ScalarExpr::Aggregate(..) => true,
        ScalarExpr::Binary(_, l, r) => has_aggregate(l) || has_aggregate(r),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation (Tempo's `validate()` on the tree).

/// The type an expression is known to have before evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    /// Decided per span (a named attribute).
    Attr,
    Nil,
    Int,
    Float,
    Str,
    Bool,
    Duration,
    Status,
    Kind,
}

impl Ty {
    fn numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Duration)
    }

    fn matches(self, o: Ty) -> bool {
        self == Ty::Attr || o == Ty::Attr || self == o || (self.numeric() && o.numeric()) || self == Ty::Nil || o == Ty::Nil
            // Tempo compares ints with statuses.
            || matches!((self, o), (Ty::Int, Ty::Status) | (Ty::Status, Ty::Int))
    }

    fn op_valid(self, op: BinOp) -> bool {
        use BinOp::*;
        match self {
            Ty::Attr => true,
            Ty::Bool => matches!(op, And | Or | Eq | Neq),
            Ty::Int | Ty::Float | Ty::Duration => {
                matches!(op, Add | Sub | Mul | Div | Mod | Pow | Eq | Neq | Gt | Gte | Lt | Lte)
            }
            Ty::Str => matches!(op, Eq | Neq | Re | Nre | Gt | Gte | Lt | Lte),
            Ty::Nil | Ty::Status | Ty::Kind => matches!(op, Eq | Neq),
        }
    }
}

fn static_ty(s: &Static) -> Ty {
    match s {
        Static::Nil => Ty::Nil,
        Static::Int(_) | Static::IntArray(_) => Ty::Int,
        Static::Float(_) | Static::FloatArray(_) => Ty::Float,
        Static::Str(_) | Static::StrArray(_) => Ty::Str,
        Static::Bool(_) | Static::BoolArray(_) => Ty::Bool,
        Static::Duration(_) => Ty::Duration,
        Static::Status(_) => Ty::Status,
        Static::Kind(_) => Ty::Kind,
    }
}

fn attr_ty(a: &Attribute) -> Ty {
    match a.intrinsic {
        None => Ty::Attr,
        Some(i) => match i {
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => Ty::Duration,
            Intrinsic::ChildCount
            | Intrinsic::NestedSetLeft
            | Intrinsic::NestedSetRight
            | Intrinsic::NestedSetParent => Ty::Int,
            Intrinsic::Status => Ty::Status,
            Intrinsic::Kind => Ty::Kind,
            Intrinsic::Parent => Ty::Attr,
            _ => Ty::Str,
        },
    }
}

fn field_ty(e: &FieldExpr) -> Ty {
    match e {
        FieldExpr::Static(s) => static_ty(s),
        FieldExpr::Attr(a) => attr_ty(a),
        FieldExpr::Binary(op, l, r) => {
            if op.is_comparison() || matches!(op, BinOp::And | BinOp::Or) {
                Ty::Bool
            } else {
                match field_ty(l) {
                    Ty::Attr => field_ty(r),
                    t => t,
                }
            }
        }
        FieldExpr::Unary(UnaryOp::Neg, e) => field_ty(e),
        FieldExpr::Unary(..) => Ty::Bool,
    }
}

/// Tempo's text for a field expression (`FieldExpression.String()`): operands other than
/// literals and attributes are parenthesised.
pub(crate) fn field_string(e: &FieldExpr) -> String {
    fn wrap(e: &FieldExpr) -> String {
        match e {
            FieldExpr::Static(_) | FieldExpr::Attr(_) => field_string(e),
            _ => format!("({})", field_string(e)),
        }
    }
    match e {
        FieldExpr::Static(s) => s.to_string(),
        FieldExpr::Attr(a) => a.to_string(),
        FieldExpr::Binary(op, l, r) => format!("{} {} {}", wrap(l), op.as_str(), wrap(r)),
        FieldExpr::Unary(UnaryOp::Neg, e) => format!("-{}", wrap(e)),
        FieldExpr::Unary(UnaryOp::Not, e) => format!("!{}", wrap(e)),
        FieldExpr::Unary(UnaryOp::Exists, e) => format!("{} != nil", wrap(e)),
        FieldExpr::Unary(UnaryOp::NotExists, e) => format!("{} = nil", wrap(e)),
    }
}

fn validate(q: &str, query: &Query) -> Result<(), ParseError> {
    let _ = q;
    let err = ParseError::without_position;
    validate_pipeline(&query.pipeline).map_err(err)?;
    if let Some(c) = query.metrics.as_ref().and_then(|m| m.compare.as_ref()) {
        validate_spanset(&SpansetExpr::Filter(c.filter.clone())).map_err(err)?;
    }
    if let Some(m) = &query.metrics {
        for q in &m.quantiles {
            if !(0.0..=1.0).contains(q) {
                return Err(err(format!("quantile must be between 0 and 1: {q}")));
            }
        }
    }
    Ok(())
}

fn validate_pipeline(p: &Pipeline) -> Result<(), String> {
    for s in &p.stages {
        match s {
            Stage::Spanset(e) => validate_spanset(e)?,
            Stage::GroupBy(e) => {
                validate_field(e)?;
                if !references_span(e) {
                    return Err(format!("grouping field expressions must reference the span: by({})", field_string(e)));
                }
            }
            Stage::ScalarFilter { op, lhs, rhs } => {
                validate_scalar(lhs)?;
                validate_scalar(rhs)?;
                let (lt, rt) = (scalar_ty(lhs), scalar_ty(rhs));
                if !lt.matches(rt) {
                    return Err(format!(
                        "binary operations must operate on the same type: {} {} {}",
                        scalar_string(lhs),
                        op.as_str(),
                        scalar_string(rhs)
                    ));
                }
                // Tempo runs only `aggregate op literal` (the message keeps Tempo's unfilled verb).
                if !matches!(lhs, ScalarExpr::Aggregate(..)) {
                    return Err("scalar filter lhs of type (%v) not yet supported".to_string());
                }
                if !matches!(rhs, ScalarExpr::Static(_)) {
                    return Err("scalar filter rhs of type (%v) not yet supported".to_string());
                }
            }
            Stage::Select(attrs) => attrs.iter().try_for_each(validate_attr)?,
            Stage::Coalesce => {}
        }
    }
    Ok(())
}

fn validate_scalar(e: &ScalarExpr) -> Result<(), String> {
    match e {
        ScalarExpr::Static(_) => Ok(()),
        ScalarExpr::Aggregate(op, Some(f)) => {
            validate_field(f)?;
            if !references_span(f) {
                return Err(format!(
                    "aggregate field expressions must reference the span: {}({})",
                    op.as_str(),
                    field_string(f)
                ));
            }
            let t = field_ty(f);
            if t != Ty::Attr && !t.numeric() {
                return Err(format!(
                    "aggregate field expressions must resolve to a number type: {}({})",
                    op.as_str(),
                    field_string(f)
                ));
            }
            Ok(())
        }
        ScalarExpr::Aggregate(_, None) => Ok(()),
        ScalarExpr::Binary(_, l, r) => {
            validate_scalar(l)?;
            validate_scalar(r)
        }
    }
}

fn validate_spanset(e: &SpansetExpr) -> Result<(), String> {
    match e {
        SpansetExpr::Filter(f) => {
            validate_field(f)?;
            let t = field_ty(f);
            if t != Ty::Attr && t != Ty::Bool {
                return Err(format!(
                    "span filter field expressions must resolve to a boolean: {{ {} }}",
                    field_string(f)
                ));
            }
            Ok(())
        }
        SpansetExpr::Op(_, l, r) => {
            validate_spanset(l)?;
            validate_spanset(r)
        }
        SpansetExpr::Pipeline(p) => validate_pipeline(p),
    }
}

fn scalar_ty(e: &ScalarExpr) -> Ty {
    match e {
        ScalarExpr::Static(s) => static_ty(s),
        ScalarExpr::Aggregate(AggregateOp::Count, _) => Ty::Int,
        ScalarExpr::Aggregate(_, Some(f)) => field_ty(f),
        ScalarExpr::Aggregate(_, None) => Ty::Attr,
        ScalarExpr::Binary(_, l, r) => match scalar_ty(l) {
            Ty::Attr => scalar_ty(r),
            t => t,
        },
    }
}

/// Tempo's text for a scalar expression.
fn scalar_string(e: &ScalarExpr) -> String {
    match e {
        ScalarExpr::Static(s) => s.to_string(),
        ScalarExpr::Aggregate(op, None) => format!("{}()", op.as_str()),
        ScalarExpr::Aggregate(op, Some(f)) => format!("{}({})", op.as_str(), field_string(f)),
        ScalarExpr::Binary(op, l, r) => format!("({} {} {})", scalar_string(l), op.as_str(), scalar_string(r)),
    }
}

/// True when the expression reads anything from the span (an attribute or intrinsic).
fn references_span(e: &FieldExpr) -> bool {
    match e {
        FieldExpr::Static(_) => false,
        FieldExpr::Attr(_) => true,
        FieldExpr::Unary(_, e) => references_span(e),
        FieldExpr::Binary(_, l, r) => references_span(l) || references_span(r),
    }
}

fn validate_attr(a: &Attribute) -> Result<(), String> {
    if a.parent {
        return Err("parent not yet supported".to_string());
    }
    if a.intrinsic == Some(Intrinsic::Parent) {
        return Err("intrinsic (parent) not yet supported".to_string());
    }
    Ok(())
}

fn validate_field(e: &FieldExpr) -> Result<(), String> {
    match e {
        FieldExpr::Static(_) => Ok(()),
        FieldExpr::Attr(a) => validate_attr(a),
        FieldExpr::Unary(op, inner) => {
            validate_field(inner)?;
            if *op == UnaryOp::NotExists
                && let FieldExpr::Attr(a) = inner.as_ref()
            {
                if a.intrinsic.is_some() {
                    return Err(format!("{a}=nil is not valid because intrinsics cannot be nil"));
                }
                if a.scope == AttrScope::Resource && !a.parent && a.name == "service.name" {
                    return Err(format!("{a}=nil is not valid because resource.service.name cannot be nil"));
                }
            }
            let t = field_ty(inner);
            let ok = match op {
                UnaryOp::Neg => t == Ty::Attr || t.numeric(),
                UnaryOp::Not => t == Ty::Attr || t == Ty::Bool,
                UnaryOp::Exists | UnaryOp::NotExists => true,
            };
            if !ok {
                return Err(format!("illegal operation for the given type: {}", field_string(e)));
            }
            Ok(())
        }
        FieldExpr::Binary(op, l, r) => {
            validate_field(l)?;
            validate_field(r)?;
            let (lt, rt) = (field_ty(l), field_ty(r));
            if !lt.matches(rt) {
                return Err(format!("binary operations must operate on the same type: {}", field_string(e)));
            }
            if !lt.op_valid(*op) || !rt.op_valid(*op) {
                return Err(format!("illegal operation for the given types: {}", field_string(e)));
            }
            if matches!(op, BinOp::Re | BinOp::Nre) {
                match r.as_ref() {
                    FieldExpr::Static(Static::Str(re)) => {
                        if super::eval::compile_regex(re).is_err() {
                            return Err(format!("invalid regex: {}", field_string(r)));
                        }
                    }
                    FieldExpr::Attr(_) => {}
                    other => {
                        return Err(format!("invalid type for =~ or !~: {}", field_string(other)));
                    }
                }
            }
            Ok(())
        }
    }
}

/// Depth of the tree, computed without recursion (the tree may be deeper than the stack allows:
/// left-associative chains are built by loops).
fn tree_depth(q: &Query) -> usize {
    enum Node<'a> {
        Pipe(&'a Pipeline),
        Set(&'a SpansetExpr),
        Field(&'a FieldExpr),
        Scalar(&'a ScalarExpr),
    }
    let mut stack = vec![(Node::Pipe(&q.pipeline), 1usize)];
    if let Some(c) = q.metrics.as_ref().and_then(|m| m.compare.as_ref()) {
        stack.push((Node::Field(&c.filter), 1));
    }
    let mut max = 0;
    while let Some((node, d)) = stack.pop() {
        max = max.max(d);
        if max > MAX_DEPTH {
            break;
        }
        match node {
            Node::Pipe(p) => {
                for s in &p.stages {
                    match s {
                        Stage::Spanset(e) => stack.push((Node::Set(e), d + 1)),
                        Stage::ScalarFilter { lhs, rhs, .. } => {
                            stack.push((Node::Scalar(lhs), d + 1));
                            stack.push((Node::Scalar(rhs), d + 1));
                        }
                        Stage::GroupBy(f) => stack.push((Node::Field(f), d + 1)),
                        Stage::Coalesce | Stage::Select(_) => {}
                    }
                }
            }
            Node::Set(e) => match e {
                SpansetExpr::Filter(f) => stack.push((Node::Field(f), d + 1)),
                SpansetExpr::Op(_, l, r) => {
                    stack.push((Node::Set(l), d + 1));
                    stack.push((Node::Set(r), d + 1));
                }
                SpansetExpr::Pipeline(p) => stack.push((Node::Pipe(p), d + 1)),
            },
            Node::Field(f) => match f {
                FieldExpr::Static(_) | FieldExpr::Attr(_) => {}
                FieldExpr::Unary(_, e) => stack.push((Node::Field(e), d + 1)),
                FieldExpr::Binary(_, l, r) => {
                    stack.push((Node::Field(l), d + 1));
                    stack.push((Node::Field(r), d + 1));
                }
            },
            Node::Scalar(e) => match e {
                ScalarExpr::Static(_) | ScalarExpr::Aggregate(_, None) => {}
                ScalarExpr::Aggregate(_, Some(f)) => stack.push((Node::Field(f), d + 1)),
                ScalarExpr::Binary(_, l, r) => {
                    stack.push((Node::Scalar(l), d + 1));
                    stack.push((Node::Scalar(r), d + 1));
                }
            },
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_and_long_queries_are_refused_not_overflowed() {
        let long = format!("{{ {} }}", vec![".a = 1"; 3000].join(" && "));
        let e = parse(&long).unwrap_err();
        assert!(e.message.contains("operators"), "{e}");
        let nested = format!("{{ {}.a = 1{} }}", "(".repeat(10_000), ")".repeat(10_000));
        let e = parse(&nested).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
        let pow = format!("{{ {} > 1 }}", vec!["2"; 1000].join(" ^ "));
        assert!(parse(&pow).is_err());
        let chain = format!("{{ {} }}", vec![".a = 1"; 200].join(" && "));
        let e = parse(&chain).unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
        let ok = format!("{{ {} }}", vec![".a = 1"; 50].join(" && "));
        assert!(parse(&ok).is_ok());
        let spansets = vec!["{}"; 5000].join(" >> ");
        assert!(parse(&spansets).is_err());
    }

    #[test]
    fn precedence_follows_tempo() {
        // `!` binds tighter than `=`, so this compares a boolean with an int, as in Tempo.
        let e = parse("{ !.a = 1 }").unwrap_err();
        assert_eq!(e.to_string(), "binary operations must operate on the same type: (!.a) = 1");
        let q = parse("{ !.a && .b }").unwrap();
        let Stage::Spanset(SpansetExpr::Filter(f)) = &q.pipeline.stages[0] else { panic!() };
        assert_eq!(field_string(f), "(!.a) && .b");
        let q = parse("{ -.a * 2 + 1 > 0 || .b && .c }").unwrap();
        let Stage::Spanset(SpansetExpr::Filter(f)) = &q.pipeline.stages[0] else { panic!() };
        assert_eq!(field_string(f), "((((-(.a * 2)) + 1) > 0) || .b) && .c");
        let q = parse("{ 2 ^ 3 ^ 2 = .x }").unwrap();
        let Stage::Spanset(SpansetExpr::Filter(f)) = &q.pipeline.stages[0] else { panic!() };
        assert_eq!(field_string(f), "(2 ^ (3 ^ 2)) = .x");
    }
}

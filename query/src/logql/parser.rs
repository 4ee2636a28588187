//! A recursive-descent LogQL parser following Loki 2.9's grammar (`pkg/logql/syntax/expr.y`):
//! operator precedence `or` < `and`/`unless` < comparisons < `+ -` < `* / %` < `^`; label filter
//! `,` (and juxtaposition) taking everything to its right; validation messages as Loki words them.

use storage::{MatchOp, Matcher};

use super::ParseError;
use super::ast::*;
use super::lexer::{Tok, Token, lex};
use super::pipeline::{IpMatcher, Pattern, json_path};
use super::template::Template;

/// Parses a LogQL query.
pub fn parse(q: &str) -> Result<Expr, ParseError> {
    let toks = lex(q)?;
    let mut p = Parser { toks, i: 0, depth: 0 };
    let e = p.expr(0)?;
    p.expect_eof()?;
    let e = match e {
        Node::Log(l) => Expr::Log(l),
        Node::Metric(m) => Expr::Metric(m),
    };
    validate(&e)?;
    Ok(e)
}

/// Parses a bare stream selector (`{a="b", c=~"d"}`), as `/series` `match[]` and label values
/// `query` take it.
pub fn parse_selector(q: &str) -> Result<Vec<Matcher>, ParseError> {
    let toks = lex(q)?;
    let mut p = Parser { toks, i: 0, depth: 0 };
    let m = p.selector()?;
    p.expect_eof()?;
    Ok(m)
}

const EMPTY_COMPATIBLE: &str = "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will";

fn validate_matchers(ms: &[Matcher]) -> Result<(), ParseError> {
    let ok = ms.iter().any(|m| matches!(m.op, MatchOp::Equal | MatchOp::Regex) && !m.matches_empty());
    if ok { Ok(()) } else { Err(ParseError::plain(EMPTY_COMPATIBLE)) }
}

fn validate(e: &Expr) -> Result<(), ParseError> {
    fn metric(m: &MetricExpr) -> Result<(), ParseError> {
        match m {
            MetricExpr::Range { log, .. } => validate_matchers(&log.matchers),
            MetricExpr::Vector { inner, .. } | MetricExpr::LabelReplace { inner, .. } => metric(inner),
            MetricExpr::Binary { lhs, rhs, .. } => {
                metric(lhs)?;
                metric(rhs)
            }
            MetricExpr::Literal(_) | MetricExpr::VectorLit(_) => Ok(()),
        }
    }
    match e {
        Expr::Log(l) => validate_matchers(&l.matchers),
        Expr::Metric(m) => metric(m),
    }
}

enum Node {
    Log(LogExpr),
    Metric(MetricExpr),
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Current nesting of expressions and label filters (bounded by [`MAX_DEPTH`]).
    depth: usize,
}

/// Deepest nesting a query may have, so that hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

fn unexpected(t: &Token) -> ParseError {
    ParseError::at(t.line, t.col, format!("syntax error: unexpected {}", t.display()))
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Token {
        &self.toks[(self.i + n).min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn expect_punct(&mut self, p: &str) -> Result<Token, ParseError> {
        if self.peek().is_punct(p) { Ok(self.next()) } else { Err(unexpected(self.peek())) }
    }

    fn expect_eof(&self) -> Result<(), ParseError> {
        if self.peek().tok == Tok::Eof { Ok(()) } else { Err(unexpected(self.peek())) }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                self.next();
                Ok(s)
            }
            _ => Err(unexpected(self.peek())),
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().tok.clone() {
            Tok::Ident(s) => {
                self.next();
                Ok(s)
            }
            _ => Err(unexpected(self.peek())),
        }
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        let neg = if self.peek().is_punct("-") {
            self.next();
            true
        } else {
            if self.peek().is_punct("+") {
                self.next();
            }
            false
        };
        match self.peek().tok {
            Tok::Number(v) => {
                self.next();
                Ok(if neg { -v } else { v })
            }
            _ => Err(unexpected(self.peek())),
        }
    }

    // ---- expressions ----

    fn binop(&self) -> Option<BinOp> {
        let t = self.peek();
        Some(match &t.tok {
            Tok::Punct(p) => match *p {
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "%" => BinOp::Mod,
                "^" => BinOp::Pow,
                "==" => BinOp::Cmp(CmpOp::Eq),
                "!=" => BinOp::Cmp(CmpOp::Ne),
                ">" => BinOp::Cmp(CmpOp::Gt),
                ">=" => BinOp::Cmp(CmpOp::Ge),
                "<" => BinOp::Cmp(CmpOp::Lt),
                "<=" => BinOp::Cmp(CmpOp::Le),
                _ => return None,
            },
            Tok::Ident(s) => match s.as_str() {
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "unless" => BinOp::Unless,
                _ => return None,
            },
            _ => return None,
        })
    }

    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        self.depth += 1;
        let r = self.expr_inner(min_prec);
        self.depth -= 1;
        r
    }

    fn enter(&self) -> Result<(), ParseError> {
        if self.depth > MAX_DEPTH {
            return Err(ParseError::plain(format!("query is nested more than {MAX_DEPTH} levels deep")));
        }
        Ok(())
    }

    fn expr_inner(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        self.enter()?;
        let mut lhs = self.unary()?;
        while let Some(op) = self.binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            let op_tok = self.next();
            let modifier = self.bin_modifier(op)?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.expr(next_min)?;
            let op_name = op_tok.display();
            let go_type = |n: &Node| match n {
                Node::Log(l) if l.stages.is_empty() => "*syntax.MatchersExpr",
                _ => "*syntax.PipelineExpr",
            };
            let l = match lhs {
                Node::Metric(m) => m,
                log => {
                    return Err(ParseError::plain(format!(
                        "unexpected type for left leg of binary operation ({op_name}): {}",
                        go_type(&log)
                    )));
                }
            };
            let r = match rhs {
                Node::Metric(m) => m,
                log => {
                    return Err(ParseError::plain(format!(
                        "unexpected type for right leg of binary operation ({op_name}): {}",
                        go_type(&log)
                    )));
                }
            };
            if op.is_set() {
                if let MetricExpr::Literal(v) = l {
                    return Err(ParseError::plain(format!(
                        "unexpected literal for left leg of logical/set binary operation ({op_name}): {v:.6}"
                    )));
                }
                if let MetricExpr::Literal(v) = r {
                    return Err(ParseError::plain(format!(
                        "unexpected literal for right leg of logical/set binary operation ({op_name}): {v:.6}"
                    )));
                }
            }
            lhs = Node::Metric(MetricExpr::Binary { op, modifier, lhs: Box::new(l), rhs: Box::new(r) });
        }
        Ok(lhs)
    }

    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect_punct("(")?;
        let mut out = Vec::new();
        if self.peek().is_punct(")") {
            self.next();
            return Ok(out);
        }
        loop {
            out.push(self.ident()?);
            if self.peek().is_punct(",") {
                self.next();
                continue;
            }
            self.expect_punct(")")?;
            return Ok(out);
        }
    }

    fn bin_modifier(&mut self, op: BinOp) -> Result<BinModifier, ParseError> {
        let mut m = BinModifier::default();
        if self.peek().is_ident("bool") {
            if !matches!(op, BinOp::Cmp(_)) {
                return Err(unexpected(self.peek()));
            }
            self.next();
            m.return_bool = true;
        }
        if self.peek().is_ident("on") || self.peek().is_ident("ignoring") {
            let on = self.next().is_ident("on");
            m.matching = Some((on, self.label_list()?));
            if self.peek().is_ident("group_left") || self.peek().is_ident("group_right") {
                if op.is_set() {
                    return Err(unexpected(self.peek()));
                }
                let left = self.next().is_ident("group_left");
                let labels = if self.peek().is_punct("(") { self.label_list()? } else { Vec::new() };
                m.group = Some((left, labels));
            }
        }
        Ok(m)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Punct("(") => {
                self.next();
                let e = self.expr(0)?;
                self.expect_punct(")")?;
                Ok(e)
            }
            Tok::Punct("{") => Ok(Node::Log(self.log_expr()?)),
            Tok::Number(_) | Tok::Punct("-") | Tok::Punct("+") => Ok(Node::Metric(MetricExpr::Literal(self.number()?))),
            Tok::Ident(name) => {
                let call = self.peek_at(1).is_punct("(");
                let grouped = self.peek_at(1).is_ident("by") || self.peek_at(1).is_ident("without");
                if let Some(op) = RangeOp::from_name(name).filter(|_| call) {
                    return self.range_agg(op).map(Node::Metric);
                }
                if let Some(op) = VecOp::from_name(name).filter(|_| call || grouped) {
                    return self.vector_agg(op).map(Node::Metric);
                }
                if name == "vector" && call {
                    self.next();
                    self.next();
                    let v = self.number()?;
                    self.expect_punct(")")?;
                    return Ok(Node::Metric(MetricExpr::VectorLit(v)));
                }
                if name == "label_replace" && call {
                    return self.label_replace().map(Node::Metric);
                }
                Err(unexpected(&t))
            }
            _ => Err(unexpected(&t)),
        }
    }

    fn label_replace(&mut self) -> Result<MetricExpr, ParseError> {
        self.next();
        self.next();
        let inner = match self.expr(0)? {
            Node::Metric(m) => m,
            Node::Log(_) => return Err(unexpected(self.peek())),
        };
        let mut args = Vec::new();
        for _ in 0..4 {
            self.expect_punct(",")?;
            args.push(self.string()?);
        }
        self.expect_punct(")")?;
        let regex = regex::Regex::new(&format!("^(?s:{})$", args[3]))
            .map_err(|e| ParseError::plain(format!("invalid regex in label_replace: {}", regex_msg(&e))))?;
        Ok(MetricExpr::LabelReplace {
            inner: Box::new(inner),
            dst: args[0].clone(),
            replacement: args[1].clone(),
            src: args[2].clone(),
            regex,
        })
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        if self.peek().is_ident("by") || self.peek().is_ident("without") {
            let without = self.next().is_ident("without");
            let labels = self.label_list()?;
            return Ok(Some(Grouping { without, labels }));
        }
        Ok(None)
    }

    fn vector_agg(&mut self, op: VecOp) -> Result<MetricExpr, ParseError> {
        let name_tok = self.next();
        let name = match &name_tok.tok {
            Tok::Ident(s) => s.clone(),
            _ => String::new(),
        };
        let mut grouping = self.grouping()?;
        self.expect_punct("(")?;
        let mut param = None;
        if matches!(self.peek().tok, Tok::Number(_)) && self.peek_at(1).is_punct(",") {
            let v = self.number()?;
            self.next();
            param = Some(v);
        }
        let inner = match self.expr(0)? {
            Node::Metric(m) => m,
            Node::Log(_) => return Err(unexpected(self.peek())),
        };
        self.expect_punct(")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        let param = match op {
            VecOp::Topk | VecOp::Bottomk => {
                let Some(v) = param else {
                    return Err(ParseError::plain(format!("parameter required for operation {name}")));
                };
                if v.fract() != 0.0 {
                    return Err(ParseError::plain(format!("invalid parameter {name}({v},")));
                }
                if v <= 0.0 {
                    return Err(ParseError::plain(format!("invalid parameter (must be greater than 0) {name}({v}")));
                }
                Some(v as i64)
            }
            _ => {
                if param.is_some() {
                    return Err(ParseError::plain(format!(
                        "unsupported parameter for operation {name}({},",
                        param.unwrap_or(0.0)
                    )));
                }
                None
            }
        };
        if matches!(op, VecOp::Sort | VecOp::SortDesc) && grouping.is_some() {
            return Err(ParseError::plain(format!("grouping not allowed for {name} aggregation")));
        }
        Ok(MetricExpr::Vector { op, param, inner: Box::new(inner), grouping })
    }

    fn range_agg(&mut self, op: RangeOp) -> Result<MetricExpr, ParseError> {
        self.next();
        self.next();
        let mut param = None;
        if op == RangeOp::Quantile {
            if matches!(self.peek().tok, Tok::Number(_)) {
                param = Some(self.number()?);
                self.expect_punct(",")?;
            } else {
                return Err(ParseError::plain("parameter required for operation quantile_over_time"));
            }
        } else if matches!(self.peek().tok, Tok::Number(_)) {
            return Err(unexpected(self.peek()));
        }
        let (log, unwrap, range_ns, offset_ns) = self.log_range()?;
        self.expect_punct(")")?;
        let grouping = self.grouping()?;
        // Loki's RangeAggregationExpr validation, in its order.
        let groupable = matches!(
            op,
            RangeOp::Avg
                | RangeOp::Stddev
                | RangeOp::Stdvar
                | RangeOp::Quantile
                | RangeOp::Max
                | RangeOp::Min
                | RangeOp::First
                | RangeOp::Last
        );
        if grouping.is_some() && !groupable {
            return Err(ParseError::plain(format!("grouping not allowed for {} aggregation", op.name())));
        }
        if unwrap.is_some() {
            if matches!(op, RangeOp::Count | RangeOp::Bytes | RangeOp::BytesRate) {
                return Err(ParseError::plain(format!("invalid aggregation {} with unwrap", op.name())));
            }
        } else if op.needs_unwrap() {
            return Err(ParseError::plain(format!("invalid aggregation {} without unwrap", op.name())));
        }
        Ok(MetricExpr::Range { op, param, log, unwrap, range_ns, offset_ns, grouping })
    }

    /// `{sel} | pipeline [| unwrap ...] [range] [offset d]`, with the range allowed right after
    /// the selector too, or the whole thing in parentheses.
    fn log_range(&mut self) -> Result<(LogExpr, Option<Unwrap>, i64, i64), ParseError> {
        if self.peek().is_punct("(") {
            self.next();
            self.depth += 1;
            self.enter()?;
            let r = self.log_range()?;
            self.depth -= 1;
            self.expect_punct(")")?;
            return Ok(r);
        }
        let matchers = self.selector()?;
        let mut stages = Vec::new();
        let mut unwrap: Option<Unwrap> = None;
        let mut range = None;
        let mut offset = 0;
        loop {
            let t = self.peek().clone();
            match &t.tok {
                Tok::Range(ns) if range.is_none() => {
                    self.next();
                    range = Some(*ns);
                    if self.peek().is_ident("offset") {
                        self.next();
                        match self.peek().tok {
                            Tok::Duration(ns, _) => {
                                self.next();
                                offset = ns as i64;
                            }
                            _ => return Err(unexpected(self.peek())),
                        }
                    }
                }
                Tok::Punct("|") if self.peek_at(1).is_ident("unwrap") && unwrap.is_none() => {
                    self.next();
                    self.next();
                    unwrap = Some(self.unwrap_expr()?);
                }
                Tok::Punct("|" | "|=" | "|~" | "!=" | "!~") => {
                    if let Some(u) = unwrap.as_mut() {
                        // Only label filters may follow an unwrap.
                        if !t.is_punct("|") {
                            return Err(unexpected(&t));
                        }
                        self.next();
                        u.post_filters.push(self.label_filter()?);
                        continue;
                    }
                    stages.push(self.stage()?);
                }
                _ => break,
            }
        }
        let Some(range_ns) = range else {
            return Err(unexpected(self.peek()));
        };
        Ok((LogExpr { matchers, stages }, unwrap, range_ns, offset))
    }

    fn unwrap_expr(&mut self) -> Result<Unwrap, ParseError> {
        let t = self.peek().clone();
        let conv = if self.peek_at(1).is_punct("(") {
            match &t.tok {
                Tok::Ident(s) if s == "duration" || s == "duration_seconds" => UnwrapConv::Duration,
                Tok::Ident(s) if s == "bytes" => UnwrapConv::Bytes,
                _ => return Err(unexpected(&t)),
            }
        } else {
            UnwrapConv::None
        };
        let label = if conv == UnwrapConv::None {
            self.ident()?
        } else {
            self.next();
            self.next();
            let l = self.ident()?;
            self.expect_punct(")")?;
            l
        };
        Ok(Unwrap { label, conv, post_filters: Vec::new() })
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        self.expect_punct("{")?;
        let mut out = Vec::new();
        loop {
            if self.peek().is_punct("}") && !out.is_empty() {
                self.next();
                return Ok(out);
            }
            out.push(self.matcher()?);
            if self.peek().is_punct(",") {
                self.next();
                continue;
            }
            self.expect_punct("}")?;
            return Ok(out);
        }
    }

    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let name = self.ident()?;
        let t = self.next();
        let op = match &t.tok {
            Tok::Punct("=") => MatchOp::Equal,
            Tok::Punct("!=") => MatchOp::NotEqual,
            Tok::Punct("=~") => MatchOp::Regex,
            Tok::Punct("!~") => MatchOp::NotRegex,
            _ => return Err(unexpected(&t)),
        };
        let value = self.string()?;
        Matcher::new(name, op, value).map_err(|e| ParseError::plain(regex_msg(&e)))
    }

    // ---- log pipeline ----

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let matchers = self.selector()?;
        let mut stages = Vec::new();
        while matches!(self.peek().tok, Tok::Punct("|" | "|=" | "|~" | "!=" | "!~")) {
            if self.peek().is_punct("!=")
                && !matches!(self.peek_at(1).tok, Tok::Str(_))
                && !self.peek_at(1).is_ident("ip")
            {
                break;
            }
            stages.push(self.stage()?);
        }
        Ok(LogExpr { matchers, stages })
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let t = self.next();
        let op = match &t.tok {
            Tok::Punct("|=") => Some(LineFilterOp::Contains),
            Tok::Punct("!=") => Some(LineFilterOp::NotContains),
            Tok::Punct("|~") => Some(LineFilterOp::Match),
            Tok::Punct("!~") => Some(LineFilterOp::NotMatch),
            _ => None,
        };
        if let Some(op) = op {
            return self.line_filter(op).map(Stage::LineFilter);
        }
        let k = self.peek().clone();
        let kw = match &k.tok {
            Tok::Ident(s) => s.as_str(),
            _ => "",
        };
        match kw {
            "json" => {
                self.next();
                Ok(Stage::Json(self.extraction_params(true)?))
            }
            "logfmt" => {
                self.next();
                let (mut strict, mut keep_empty) = (false, false);
                while let Tok::Flag(f) = &self.peek().tok {
                    match f.as_str() {
                        "--strict" => strict = true,
                        "--keep-empty" => keep_empty = true,
                        _ => return Err(unexpected(self.peek())),
                    }
                    self.next();
                }
                let params = self.extraction_params(false)?;
                Ok(Stage::Logfmt { strict, keep_empty, params })
            }
            "regexp" => {
                self.next();
                let src = self.string()?;
                let re = regex::Regex::new(&src).map_err(|e| ParseError::plain(regex_msg(&e)))?;
                if !re.capture_names().any(|n| n.is_some()) {
                    return Err(ParseError::plain("at least one named capture must be supplied"));
                }
                Ok(Stage::Regexp(re))
            }
            "pattern" => {
                self.next();
                let src = self.string()?;
                Pattern::parse(&src).map(Stage::Pattern).map_err(ParseError::plain)
            }
            "unpack" => {
                self.next();
                Ok(Stage::Unpack)
            }
            "decolorize" => {
                self.next();
                Ok(Stage::Decolorize)
            }
            "line_format" => {
                self.next();
                let src = self.string()?;
                let t = Template::parse("line", &src).map_err(|e| {
                    ParseError::plain(format!(
                        "stage '| line_format {}' : invalid line template: {e}",
                        super::units::go_quote(&src)
                    ))
                })?;
                Ok(Stage::LineFormat(t))
            }
            "label_format" => {
                self.next();
                let mut fmts: Vec<LabelFmt> = Vec::new();
                loop {
                    let dst = self.ident()?;
                    if dst == "__error__" {
                        return Err(ParseError::plain("__error__ cannot be formatted"));
                    }
                    self.expect_punct("=")?;
                    let f = match self.peek().tok.clone() {
                        Tok::Str(s) => {
                            self.next();
                            let tmpl = Template::parse("label", &s)
                                .map_err(|e| ParseError::plain(format!("invalid template for label '{dst}': {e}")))?;
                            LabelFmt::Template { dst: dst.clone(), tmpl }
                        }
                        Tok::Ident(src) => {
                            self.next();
                            LabelFmt::Rename { dst: dst.clone(), src }
                        }
                        _ => return Err(unexpected(self.peek())),
                    };
                    if fmts.iter().any(|f| match f {
                        LabelFmt::Rename { dst: d, .. } | LabelFmt::Template { dst: d, .. } => *d == dst,
                    }) {
                        return Err(ParseError::plain(format!(
                            "multiple label name '{dst}' not allowed in a single format operation"
                        )));
                    }
                    fmts.push(f);
                    if self.peek().is_punct(",") {
                        self.next();
                        continue;
                    }
                    return Ok(Stage::LabelFormat(fmts));
                }
            }
            "drop" | "keep" => {
                self.next();
                let mut items = Vec::new();
                loop {
                    let name = self.ident()?;
                    let op = match self.peek().tok {
                        Tok::Punct("=") => Some(MatchOp::Equal),
                        Tok::Punct("!=") => Some(MatchOp::NotEqual),
                        Tok::Punct("=~") => Some(MatchOp::Regex),
                        Tok::Punct("!~") => Some(MatchOp::NotRegex),
                        _ => None,
                    };
                    if let Some(op) = op {
                        self.next();
                        let v = self.string()?;
                        items.push(NamedMatcher::Matcher(
                            Matcher::new(name, op, v).map_err(|e| ParseError::plain(regex_msg(&e)))?,
                        ));
                    } else {
                        items.push(NamedMatcher::Name(name));
                    }
                    if self.peek().is_punct(",") {
                        self.next();
                        continue;
                    }
                    break;
                }
                Ok(if kw == "drop" { Stage::Drop(items) } else { Stage::Keep(items) })
            }
            "unwrap" => Err(unexpected(&k)),
            _ => Ok(Stage::LabelFilter(self.label_filter()?)),
        }
    }

    /// `name="expr"` / bare `name` parameters of `json` and `logfmt`, comma separated.
    fn extraction_params(&mut self, json: bool) -> Result<Vec<(String, String)>, ParseError> {
        let mut out = Vec::new();
        while let Tok::Ident(name) = self.peek().tok.clone() {
            if self.peek_at(1).is_punct("=") {
                self.next();
                self.next();
                let expr = self.string()?;
                if json && json_path(&expr).is_none() {
                    return Err(ParseError::plain(format!("invalid JSON expression: {expr}")));
                }
                out.push((name, expr));
            } else if matches!(self.peek_at(1).tok, Tok::Punct("," | "|" | ")") | Tok::Eof | Tok::Range(_)) {
                self.next();
                out.push((name.clone(), name));
            } else {
                break;
            }
            if !self.peek().is_punct(",") {
                break;
            }
            self.next();
        }
        Ok(out)
    }

    fn line_filter(&mut self, op: LineFilterOp) -> Result<LineFilter, ParseError> {
        if self.peek().is_ident("ip") && self.peek_at(1).is_punct("(") {
            let t = self.peek().clone();
            if !matches!(op, LineFilterOp::Contains | LineFilterOp::NotContains) {
                return Err(unexpected(&t));
            }
            self.next();
            self.next();
            let p = self.string()?;
            self.expect_punct(")")?;
            let m = IpMatcher::parse(&p).map_err(ParseError::plain)?;
            return Ok(LineFilter { op, value: LineFilterValue::Ip(m) });
        }
        let s = self.string()?;
        let value = match op {
            LineFilterOp::Match | LineFilterOp::NotMatch => {
                let re = regex::Regex::new(&s).map_err(|e| ParseError::plain(regex_msg(&e)))?;
                LineFilterValue::Regex(s, re)
            }
            _ => LineFilterValue::Text(s),
        };
        Ok(LineFilter { op, value })
    }

    // ---- label filters ----

    fn label_filter(&mut self) -> Result<LabelFilter, ParseError> {
        self.depth += 1;
        let r = self.enter().and_then(|_| self.lf_or());
        self.depth -= 1;
        r
    }

    fn lf_or(&mut self) -> Result<LabelFilter, ParseError> {
        let mut l = self.lf_and()?;
        while self.peek().is_ident("or") {
            self.next();
            let r = self.lf_and()?;
            l = LabelFilter::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn lf_and(&mut self) -> Result<LabelFilter, ParseError> {
        let mut l = self.lf_atom()?;
        while self.peek().is_ident("and") {
            self.next();
            let r = self.lf_atom()?;
            l = LabelFilter::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    /// One comparison (or a parenthesised filter); a following `,` or juxtaposed filter takes
    /// the whole rest of the filter as its right operand, as Loki's grammar resolves it.
    fn lf_atom(&mut self) -> Result<LabelFilter, ParseError> {
        let atom = if self.peek().is_punct("(") {
            self.next();
            let f = self.label_filter()?;
            self.expect_punct(")")?;
            f
        } else {
            self.lf_cmp()?
        };
        let juxtaposed = matches!(&self.peek().tok, Tok::Ident(s) if !matches!(s.as_str(), "and" | "or" | "unless" | "by" | "without" | "offset" | "bool" | "on" | "ignoring"))
            && matches!(self.peek_at(1).tok, Tok::Punct("=" | "!=" | "=~" | "!~" | "==" | ">" | ">=" | "<" | "<="));
        if self.peek().is_punct(",") || juxtaposed {
            if self.peek().is_punct(",") {
                self.next();
            }
            let rest = self.label_filter()?;
            return Ok(LabelFilter::And(Box::new(atom), Box::new(rest)));
        }
        Ok(atom)
    }

    fn lf_cmp(&mut self) -> Result<LabelFilter, ParseError> {
        let name = self.ident()?;
        let opt = self.next();
        let op_str = match &opt.tok {
            Tok::Punct(p) => *p,
            _ => return Err(unexpected(&opt)),
        };
        if matches!(op_str, "=" | "!=") && self.peek().is_ident("ip") && self.peek_at(1).is_punct("(") {
            self.next();
            self.next();
            let p = self.string()?;
            self.expect_punct(")")?;
            let m = IpMatcher::parse(&p).map_err(ParseError::plain)?;
            return Ok(LabelFilter::Ip(name, op_str == "=", m));
        }
        let v = self.peek().clone();
        match (&v.tok, op_str) {
            (Tok::Str(s), "=" | "!=" | "=~" | "!~") => {
                self.next();
                let op = match op_str {
                    "=" => MatchOp::Equal,
                    "!=" => MatchOp::NotEqual,
                    "=~" => MatchOp::Regex,
                    _ => MatchOp::NotRegex,
                };
                let m = Matcher::new(name, op, s.clone()).map_err(|e| ParseError::plain(regex_msg(&e)))?;
                Ok(LabelFilter::Matcher(m))
            }
            (_, "=" | "==" | "!=" | ">" | ">=" | "<" | "<=") => {
                let cmp = match op_str {
                    "=" | "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    "<" => CmpOp::Lt,
                    _ => CmpOp::Le,
                };
                match &v.tok {
                    Tok::Duration(ns, _) => {
                        self.next();
                        Ok(LabelFilter::Duration(name, cmp, *ns))
                    }
                    Tok::Bytes(b, _) => {
                        self.next();
                        Ok(LabelFilter::Bytes(name, cmp, *b))
                    }
                    Tok::Number(_) | Tok::Punct("-" | "+") => {
                        let n = self.number()?;
                        Ok(LabelFilter::Number(name, cmp, n))
                    }
                    _ => Err(unexpected(&v)),
                }
            }
            _ => Err(unexpected(&v)),
        }
    }
}

/// Go's regexp error text where we can tell; otherwise the regex crate's.
fn regex_msg(e: &regex::Error) -> String {
    let s = e.to_string();
    let last =
        s.lines().rev().find(|l| l.starts_with("error:")).map(|l| l.trim_start_matches("error:").trim().to_string());
    format!("error parsing regexp: {}", last.unwrap_or(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        parse(q).map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn loki_errors() {
        assert_eq!(err("rate({app=\"gateway\"})"), "parse error at line 1, col 21: syntax error: unexpected )");
        assert_eq!(
            err("sum by (app) ({app=\"gateway\"})"),
            "parse error at line 1, col 30: syntax error: unexpected )"
        );
        assert_eq!(
            err("foo_over_time({app=\"gateway\"}[5m])"),
            "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER"
        );
        assert_eq!(err("{app=\"gateway\"}[5m]"), "parse error at line 0, col 16: syntax error: unexpected RANGE");
        assert_eq!(
            err("topk(sum by (app) (rate({app=\"gateway\"}[5m])))"),
            "parse error : parameter required for operation topk"
        );
        assert!(err("{app=~\".*\"}").starts_with("parse error : queries require at least one regexp"));
        assert_eq!(
            err("count_over_time({app=\"gateway\"} | json | unwrap bytes [5m])"),
            "parse error : invalid aggregation count_over_time with unwrap"
        );
    }

    #[test]
    fn parses() {
        for q in [
            r#"{app="a"} |= "x" != "y" |~ `z.*` !~ "w" | json | status >= 500 | line_format "{{.a}}""#,
            r#"sum by (cluster) (rate({app="a"} | json | unwrap bytes [5m]))"#,
            r#"quantile_over_time(0.99, {app="a"} | json | unwrap latency_ms [5m]) by (cluster)"#,
            r#"sum(rate({a="b"}[5m])) / on (x) group_left (y) sum(rate({a="b"}[5m] offset 5m))"#,
            r#"{a="b"} | logfmt --strict --keep-empty a, b="c" | drop x, y="z" | keep q"#,
            r#"{a="b"} | json | (status=502 or status=504), client_region!="eu""#,
            r#"vector(1) + vector(1)"#,
            r#"{a="b"} |= ip("10.0.0.0/8") | addr = ip("192.168.0.1-192.168.0.9")"#,
        ] {
            parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }
}

#[cfg(test)]
mod limits {
    use super::parse;

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let q = format!("{}vector(1){}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse(&q).is_err());
        let q = format!("{{a=\"b\"}} | {}x=\"y\"{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse(&q).is_err());
        let t = format!("{{a=\"b\"}} | line_format \"{{{{ {} .a {} }}}}\"", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&t).is_err());
    }
}

//! The subset of Go's `text/template` that Loki's `line_format` and `label_format` use: text,
//! `{{ }}` actions with trim markers, pipelines, field access on the label map (`.name`, missing
//! labels are empty), literals, parenthesised pipelines, `if`/`else if`/`else`/`end`,
//! `with`, `range` over nothing (unsupported at run time), comments, and Loki's function map
//! (Go `strings` helpers, the sprig functions Loki exposes, `__line__`, `__timestamp__`).

use base64::Engine as _;
use std::fmt::Write as _;

use super::units::{format_float, go_quote};

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
    /// The source text.
    pub source: String,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Vec<(Pipeline, Vec<Node>)>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Clone, Debug)]
struct Pipeline(Vec<Cmd>);

#[derive(Clone, Debug)]
struct Cmd(Vec<Arg>);

#[derive(Clone, Debug)]
enum Arg {
    Field(Vec<String>),
    Dot,
    Str(String),
    Num(f64, bool),
    Bool(bool),
    Nil,
    Func(String),
    Sub(Pipeline),
}

/// A template value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Time in ns since the epoch.
    Time(i64),
    Nil,
}

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => !s.is_empty(),
            Val::Int(i) => *i != 0,
            Val::Float(f) => *f != 0.0,
            Val::Bool(b) => *b,
            Val::Time(_) => true,
            Val::Nil => false,
        }
    }

    fn to_text(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => go_float(*f),
            Val::Bool(b) => b.to_string(),
            Val::Time(t) => format_time(*t, "2006-01-02 15:04:05.999999999 +0000 UTC"),
            Val::Nil => "<no value>".into(),
        }
    }

    fn to_f64(&self) -> f64 {
        match self {
            Val::Str(s) => s.trim().parse().unwrap_or(0.0),
            Val::Int(i) => *i as f64,
            Val::Float(f) => *f,
            Val::Bool(b) => f64::from(u8::from(*b)),
            Val::Time(t) => *t as f64,
            Val::Nil => 0.0,
        }
    }

    fn to_i64(&self) -> i64 {
        match self {
            Val::Str(s) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().map(|f| f as i64)).unwrap_or(0)
            }
            Val::Int(i) => *i,
            Val::Float(f) => *f as i64,
            Val::Bool(b) => i64::from(*b),
            Val::Time(t) => *t,
            Val::Nil => 0,
        }
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)` with Go's exponent rules).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..21).contains(&exp) {
        let s = format!("{f:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    format_float(f)
}

/// What a template sees while running.
pub(crate) struct Ctx<'a> {
    pub labels: &'a dyn Fn(&str) -> Option<String>,
    pub line: &'a str,
    pub ts_ns: i64,
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    name: &'a str,
    /// Nesting of blocks and parenthesised pipelines (bounded, to protect the stack).
    depth: usize,
}

impl Template {
    /// Compiles `src`; errors are Go's (`template: line:1: unclosed action`).
    pub fn parse(name: &str, src: &str) -> Result<Template, String> {
        let mut p = Parser { src, pos: 0, name, depth: 0 };
        let (nodes, end) = p.list()?;
        if let Some(e) = end {
            return Err(p.err(&format!("unexpected {{{{{e}}}}}")));
        }
        Ok(Template { nodes, source: src.to_string() })
    }

    /// Runs the template.
    pub(crate) fn execute(&self, ctx: &Ctx<'_>) -> Result<String, String> {
        let mut out = String::new();
        exec_nodes(&self.nodes, ctx, &Val::Nil, &mut out)?;
        Ok(out)
    }

    /// True when the template is plain text.
    pub fn is_static(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, Node::Text(_)))
    }
}

impl Parser<'_> {
    fn line(&self) -> usize {
        self.src[..self.pos.min(self.src.len())].matches('\n').count() + 1
    }

    fn err(&self, msg: &str) -> String {
        format!("template: {}:{}: {}", self.name, self.line(), msg)
    }

    /// Parses nodes until EOF or a control keyword (`else`, `end`, `else if ...`) which is returned.
    fn list(&mut self) -> Result<(Vec<Node>, Option<String>), String> {
        let mut nodes = Vec::new();
        loop {
            let rest = &self.src[self.pos..];
            let Some(open) = rest.find("{{") else {
                if !rest.is_empty() {
                    nodes.push(Node::Text(rest.to_string()));
                }
                self.pos = self.src.len();
                return Ok((nodes, None));
            };
            let mut text = &rest[..open];
            let mut after = self.pos + open + 2;
            if self.src[after..].starts_with("- ")
                || self.src[after..].starts_with("-\t")
                || self.src[after..].starts_with("-\n")
            {
                text = text.trim_end();
                after += 1;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_string()));
            }
            self.pos = after;
            // Comments.
            let body = self.src[self.pos..].trim_start();
            if body.starts_with("/*") {
                let Some(close) = self.src[self.pos..].find("*/") else {
                    return Err(self.err("unclosed comment"));
                };
                self.pos += close + 2;
                self.close_action()?;
                continue;
            }
            let kw = self.peek_word();
            match kw.as_str() {
                "if" | "with" => {
                    if self.depth > 64 {
                        return Err(self.err("template nested too deeply"));
                    }
                    self.depth += 1;
                    self.pos += self.src[self.pos..].find(&kw).unwrap_or(0) + kw.len();
                    let cond = self.pipeline()?;
                    self.close_action()?;
                    let (body, end) = self.list()?;
                    let mut branches = vec![(cond, body)];
                    let mut else_body = Vec::new();
                    let mut end = end;
                    loop {
                        match end.as_deref() {
                            Some("end") => break,
                            Some("else") => {
                                let (b, e) = self.list()?;
                                else_body = b;
                                if e.as_deref() != Some("end") {
                                    return Err(self.err("expected end; found EOF"));
                                }
                                break;
                            }
                            Some("else if") if kw == "if" => {
                                let c = self.pipeline()?;
                                self.close_action()?;
                                let (b, e) = self.list()?;
                                branches.push((c, b));
                                end = e;
                            }
                            _ => return Err(self.err(&format!("unexpected EOF in {kw}"))),
                        }
                    }
                    self.depth -= 1;
                    if kw == "if" {
                        nodes.push(Node::If(branches, else_body));
                    } else {
                        let (c, b) = branches.remove(0);
                        nodes.push(Node::With(c, b, else_body));
                    }
                }
                "end" => {
                    self.pos += self.src[self.pos..].find("end").unwrap_or(0) + 3;
                    self.close_action()?;
                    return Ok((nodes, Some("end".into())));
                }
                "else" => {
                    self.pos += self.src[self.pos..].find("else").unwrap_or(0) + 4;
                    if self.peek_word() == "if" {
                        self.pos += self.src[self.pos..].find("if").unwrap_or(0) + 2;
                        return Ok((nodes, Some("else if".into())));
                    }
                    self.close_action()?;
                    return Ok((nodes, Some("else".into())));
                }
                "range" | "define" | "template" | "block" | "break" | "continue" => {
                    return Err(self.err(&format!("{kw} is not supported")));
                }
                _ => {
                    let p = self.pipeline()?;
                    self.close_action()?;
                    nodes.push(Node::Action(p));
                }
            }
        }
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    fn peek_word(&self) -> String {
        let rest = self.src[self.pos..].trim_start();
        rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    }

    fn close_action(&mut self) -> Result<(), String> {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        if rest.starts_with("-}}") {
            self.pos += 3;
            let trimmed = self.src[self.pos..].trim_start();
            self.pos = self.src.len() - trimmed.len();
            Ok(())
        } else if rest.starts_with("}}") {
            self.pos += 2;
            Ok(())
        } else if rest.is_empty() {
            Err(self.err("unclosed action"))
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            Err(self.err(&format!("unexpected \"{c}\" in command")))
        }
    }

    fn at_action_end(&self) -> bool {
        let rest = self.src[self.pos..].trim_start();
        rest.starts_with("}}") || rest.starts_with("-}}") || rest.is_empty()
    }

    fn pipeline(&mut self) -> Result<Pipeline, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.err("template nested too deeply"));
        }
        let r = self.pipeline_inner();
        self.depth -= 1;
        r
    }

    fn pipeline_inner(&mut self) -> Result<Pipeline, String> {
        let mut cmds = Vec::new();
        loop {
            let cmd = self.command()?;
            if cmd.0.is_empty() {
                return Err(self.err("missing value for command"));
            }
            cmds.push(cmd);
            self.skip_ws();
            if self.src[self.pos..].starts_with('|') {
                self.pos += 1;
                continue;
            }
            return Ok(Pipeline(cmds));
        }
    }

    fn command(&mut self) -> Result<Cmd, String> {
        let mut args = Vec::new();
        loop {
            self.skip_ws();
            if self.at_action_end() {
                if self.src[self.pos..].trim_start().is_empty() {
                    return Err(self.err("unclosed action"));
                }
                return Ok(Cmd(args));
            }
            let rest = &self.src[self.pos..];
            let c = rest.chars().next().unwrap_or(' ');
            if c == '|' || c == ')' {
                return Ok(Cmd(args));
            }
            args.push(self.operand()?);
        }
    }

    fn operand(&mut self) -> Result<Arg, String> {
        let rest = &self.src[self.pos..];
        let c = rest.chars().next().unwrap_or(' ');
        match c {
            '(' => {
                self.pos += 1;
                let p = self.pipeline()?;
                self.skip_ws();
                if !self.src[self.pos..].starts_with(')') {
                    return Err(self.err("unclosed left paren"));
                }
                self.pos += 1;
                Ok(Arg::Sub(p))
            }
            '"' => {
                let (s, n) = super::lexer::lex_quoted(rest).ok_or_else(|| self.err("unterminated quoted string"))?;
                self.pos += n;
                Ok(Arg::Str(s))
            }
            '`' => {
                let end = rest[1..].find('`').ok_or_else(|| self.err("unterminated raw quoted string"))?;
                self.pos += end + 2;
                Ok(Arg::Str(rest[1..1 + end].to_string()))
            }
            '.' => {
                let mut path = Vec::new();
                let mut j = 0;
                let b = rest.as_bytes();
                while j < b.len() && b[j] == b'.' {
                    let start = j + 1;
                    let mut k = start;
                    while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
                        k += 1;
                    }
                    if k == start {
                        break;
                    }
                    path.push(rest[start..k].to_string());
                    j = k;
                }
                if path.is_empty() {
                    self.pos += 1;
                    return Ok(Arg::Dot);
                }
                self.pos += j;
                Ok(Arg::Field(path))
            }
            '\'' => {
                let end = rest[1..].find('\'').ok_or_else(|| self.err("unterminated character constant"))?;
                let ch = rest[1..1 + end].chars().next().unwrap_or('\0');
                self.pos += end + 2;
                Ok(Arg::Num(f64::from(ch as u32), true))
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let n = rest
                    .char_indices()
                    .skip(1)
                    .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_'))
                    .map_or(rest.len(), |(i, _)| i);
                let text = &rest[..n];
                self.pos += n;
                if let Ok(i) = text.parse::<i64>() {
                    Ok(Arg::Num(i as f64, true))
                } else if let Ok(f) = text.parse::<f64>() {
                    Ok(Arg::Num(f, false))
                } else {
                    Err(self.err(&format!("bad number syntax: \"{text}\"")))
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let n = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                let word = &rest[..n];
                self.pos += n;
                Ok(match word {
                    "true" => Arg::Bool(true),
                    "false" => Arg::Bool(false),
                    "nil" => Arg::Nil,
                    w if FUNCS.contains(&w) => Arg::Func(w.to_string()),
                    w => return Err(self.err(&format!("function \"{w}\" not defined"))),
                })
            }
            '$' => Err(self.err("variables are not supported")),
            c => Err(self.err(&format!("unexpected \"{c}\" in operand"))),
        }
    }
}

const FUNCS: &[&str] = &[
    "__line__",
    "__timestamp__",
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "lower",
    "upper",
    "title",
    "trunc",
    "substr",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "indent",
    "nindent",
    "replace",
    "repeat",
    "trim",
    "trimAll",
    "trimSuffix",
    "trimPrefix",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "date",
    "toDate",
    "now",
    "unixEpoch",
    "unixEpochMillis",
    "unixEpochNanos",
    "unixToTime",
    "default",
    "b64enc",
    "b64dec",
    "count",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "alignLeft",
    "bytes",
    "duration",
    "duration_seconds",
    "toDateInZone",
    "alignRight",
    "printf",
    "print",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "len",
    "urlencode",
    "urldecode",
];

fn exec_nodes(nodes: &[Node], ctx: &Ctx<'_>, dot: &Val, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, ctx, dot)?;
                out.push_str(&v.to_text());
            }
            Node::If(branches, else_body) => {
                let mut done = false;
                for (c, body) in branches {
                    if eval_pipeline(c, ctx, dot)?.truthy() {
                        exec_nodes(body, ctx, dot, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec_nodes(else_body, ctx, dot, out)?;
                }
            }
            Node::With(c, body, else_body) => {
                let v = eval_pipeline(c, ctx, dot)?;
                if v.truthy() {
                    exec_nodes(body, ctx, &v, out)?;
                } else {
                    exec_nodes(else_body, ctx, dot, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, ctx: &Ctx<'_>, dot: &Val) -> Result<Val, String> {
    let mut prev: Option<Val> = None;
    for cmd in &p.0 {
        prev = Some(eval_cmd(cmd, ctx, dot, prev.take())?);
    }
    Ok(prev.unwrap_or(Val::Nil))
}

fn eval_arg(a: &Arg, ctx: &Ctx<'_>, dot: &Val) -> Result<Val, String> {
    Ok(match a {
        Arg::Field(path) => {
            if path.len() > 1 {
                return Err(format!("can't evaluate field {} in type string", path[1]));
            }
            // Loki runs templates over a map[string]string with missingkey=zero.
            Val::Str((ctx.labels)(&path[0]).unwrap_or_default())
        }
        Arg::Dot => match dot {
            Val::Nil => Val::Str(String::new()),
            v => v.clone(),
        },
        Arg::Str(s) => Val::Str(s.clone()),
        Arg::Num(f, true) => Val::Int(*f as i64),
        Arg::Num(f, false) => Val::Float(*f),
        Arg::Bool(b) => Val::Bool(*b),
        Arg::Nil => Val::Nil,
        Arg::Func(f) => call(f, &[], ctx)?,
        Arg::Sub(p) => eval_pipeline(p, ctx, dot)?,
    })
}

fn eval_cmd(cmd: &Cmd, ctx: &Ctx<'_>, dot: &Val, piped: Option<Val>) -> Result<Val, String> {
    let first = &cmd.0[0];
    if let Arg::Func(name) = first {
        // `and`/`or` short-circuit.
        let mut args = Vec::with_capacity(cmd.0.len());
        for a in &cmd.0[1..] {
            args.push(eval_arg(a, ctx, dot)?);
        }
        if let Some(p) = piped {
            args.push(p);
        }
        return call(name, &args, ctx);
    }
    if cmd.0.len() > 1 || piped.is_some() {
        return Err("can't give argument to non-function".into());
    }
    eval_arg(first, ctx, dot)
}

fn s(v: &Val) -> String {
    match v {
        Val::Nil => String::new(),
        v => v.to_text(),
    }
}

fn want(args: &[Val], n: usize, name: &str) -> Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args for {name}: want {n} got {}", args.len()));
    }
    Ok(())
}

fn compare(a: &Val, b: &Val) -> Result<std::cmp::Ordering, String> {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        (Val::Int(x), Val::Int(y)) => Ok(x.cmp(y)),
        (Val::Int(_) | Val::Float(_), Val::Int(_) | Val::Float(_)) => {
            Ok(a.to_f64().partial_cmp(&b.to_f64()).unwrap_or(Ordering::Equal))
        }
        (Val::Bool(x), Val::Bool(y)) => Ok(x.cmp(y)),
        _ => Err("incompatible types for comparison".into()),
    }
}

fn call(name: &str, a: &[Val], ctx: &Ctx<'_>) -> Result<Val, String> {
    use std::cmp::Ordering;
    let str1 = |f: fn(&str) -> String| -> Result<Val, String> {
        want(a, 1, name)?;
        Ok(Val::Str(f(&s(&a[0]))))
    };
    Ok(match name {
        "__line__" => Val::Str(ctx.line.to_string()),
        "__timestamp__" => Val::Time(ctx.ts_ns),
        "ToLower" | "lower" => str1(|x| x.to_lowercase())?,
        "ToUpper" | "upper" => str1(|x| x.to_uppercase())?,
        "TrimSpace" => str1(|x| x.trim().to_string())?,
        "title" => str1(|x| {
            let mut out = String::new();
            let mut prev_letter = false;
            for c in x.chars() {
                if !prev_letter && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
            }
            out
        })?,
        "urlencode" => str1(|x| {
            let mut out = String::new();
            for b in x.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                    b' ' => out.push('+'),
                    b => {
                        let _ = write!(out, "%{b:02X}");
                    }
                }
            }
            out
        })?,
        "urldecode" => str1(|x| {
            let b = x.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%'
                    && i + 2 < b.len()
                    && let Some(Ok(v)) = std::str::from_utf8(&b[i + 1..i + 3]).ok().map(|h| u8::from_str_radix(h, 16))
                {
                    out.push(v);
                    i += 3;
                    continue;
                }
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        })?,
        "Replace" => {
            want(a, 4, name)?;
            let n = a[3].to_i64();
            let (src, old, new) = (s(&a[0]), s(&a[1]), s(&a[2]));
            if n < 0 { Val::Str(src.replace(&old, &new)) } else { Val::Str(src.replacen(&old, &new, n as usize)) }
        }
        "Trim" | "TrimLeft" | "TrimRight" => {
            want(a, 2, name)?;
            let (x, set) = (s(&a[0]), s(&a[1]));
            let f = |c: char| set.contains(c);
            Val::Str(match name {
                "Trim" => x.trim_matches(f).to_string(),
                "TrimLeft" => x.trim_start_matches(f).to_string(),
                _ => x.trim_end_matches(f).to_string(),
            })
        }
        "TrimPrefix" | "TrimSuffix" => {
            want(a, 2, name)?;
            let (x, p) = (s(&a[0]), s(&a[1]));
            Val::Str(if name == "TrimPrefix" {
                x.strip_prefix(p.as_str()).unwrap_or(&x).to_string()
            } else {
                x.strip_suffix(p.as_str()).unwrap_or(&x).to_string()
            })
        }
        // sprig argument order: the piped value comes last.
        "trimPrefix" | "trimSuffix" | "trimAll" => {
            want(a, 2, name)?;
            let (p, x) = (s(&a[0]), s(&a[1]));
            Val::Str(match name {
                "trimPrefix" => x.strip_prefix(p.as_str()).unwrap_or(&x).to_string(),
                "trimSuffix" => x.strip_suffix(p.as_str()).unwrap_or(&x).to_string(),
                _ => x.trim_matches(|c| p.contains(c)).to_string(),
            })
        }
        "trim" => str1(|x| x.trim().to_string())?,
        "trunc" => {
            want(a, 2, name)?;
            let (n, x) = (a[0].to_i64(), s(&a[1]));
            let chars: Vec<char> = x.chars().collect();
            let len = chars.len() as i64;
            Val::Str(if n < 0 && -n < len {
                chars[(len + n) as usize..].iter().collect()
            } else if n >= 0 && len > n {
                chars[..n as usize].iter().collect()
            } else {
                x
            })
        }
        "substr" => {
            want(a, 3, name)?;
            let (st, en, x) = (a[0].to_i64(), a[1].to_i64(), s(&a[2]));
            let b = x.as_bytes();
            let len = b.len() as i64;
            let r = if st < 0 {
                &b[..en.clamp(0, len) as usize]
            } else if en < 0 || en > len {
                &b[st.min(len) as usize..]
            } else {
                &b[st.min(en) as usize..en as usize]
            };
            Val::Str(String::from_utf8_lossy(r).into_owned())
        }
        "contains" | "hasPrefix" | "hasSuffix" => {
            want(a, 2, name)?;
            let (p, x) = (s(&a[0]), s(&a[1]));
            Val::Bool(match name {
                "contains" => x.contains(&p),
                "hasPrefix" => x.starts_with(&p),
                _ => x.ends_with(&p),
            })
        }
        "indent" | "nindent" => {
            want(a, 2, name)?;
            let pad = " ".repeat(a[0].to_i64().clamp(0, MAX_PAD as i64) as usize);
            let x = s(&a[1]);
            let r = format!("{pad}{}", x.replace('\n', &format!("\n{pad}")));
            Val::Str(if name == "nindent" { format!("\n{r}") } else { r })
        }
        "replace" => {
            want(a, 3, name)?;
            Val::Str(s(&a[2]).replace(&s(&a[0]), &s(&a[1])))
        }
        "repeat" => {
            want(a, 2, name)?;
            Val::Str(s(&a[1]).repeat(a[0].to_i64().clamp(0, 10_000) as usize))
        }
        "int" => {
            want(a, 1, name)?;
            Val::Int(a[0].to_i64())
        }
        "float64" => {
            want(a, 1, name)?;
            Val::Float(a[0].to_f64())
        }
        "add" | "sub" | "mul" | "div" | "mod" => {
            if name == "add" || name == "mul" {
                if a.is_empty() {
                    return Err(format!("wrong number of args for {name}: want at least 1 got 0"));
                }
            } else {
                want(a, 2, name)?;
            }
            let v: Vec<i64> = a.iter().map(Val::to_i64).collect();
            Val::Int(match name {
                "add" => v.iter().fold(0i64, |x, y| x.wrapping_add(*y)),
                "mul" => v.iter().fold(1i64, |x, y| x.wrapping_mul(*y)),
                "sub" => v[0].wrapping_sub(v[1]),
                "div" => v[0].checked_div(v[1]).ok_or("runtime error: integer divide by zero")?,
                _ => v[0].checked_rem(v[1]).ok_or("runtime error: integer divide by zero")?,
            })
        }
        "addf" | "subf" | "mulf" | "divf" => {
            if a.is_empty() {
                return Err(format!("wrong number of args for {name}: want at least 1 got 0"));
            }
            let v: Vec<f64> = a.iter().map(Val::to_f64).collect();
            let mut acc = v[0];
            for x in &v[1..] {
                acc = match name {
                    "addf" => acc + x,
                    "subf" => acc - x,
                    "mulf" => acc * x,
                    _ => acc / x,
                };
            }
            Val::Float(acc)
        }
        "max" | "min" => {
            if a.is_empty() {
                return Err(format!("wrong number of args for {name}: want at least 1 got 0"));
            }
            let v = a.iter().map(Val::to_i64);
            Val::Int(if name == "max" { v.max().unwrap_or(0) } else { v.min().unwrap_or(0) })
        }
        "maxf" | "minf" => {
            let v = a.iter().map(Val::to_f64);
            Val::Float(if name == "maxf" { v.fold(f64::MIN, f64::max) } else { v.fold(f64::MAX, f64::min) })
        }
        "bytes" => {
            want(a, 1, name)?;
            Val::Float(super::units::parse_bytes(&s(&a[0]))?)
        }
        "duration" | "duration_seconds" => {
            want(a, 1, name)?;
            Val::Float(super::units::parse_duration(&s(&a[0]), false)? / 1e9)
        }
        "toDateInZone" => {
            want(a, 3, name)?;
            // Only UTC is known here; other zones fall back to UTC as Loki does for unknown ones.
            Val::Time(parse_time(&s(&a[0]), &s(&a[2])).unwrap_or(i64::MIN / 2))
        }
        "ceil" | "floor" | "round" => {
            let x = a.first().map(Val::to_f64).unwrap_or(0.0);
            match name {
                "ceil" => Val::Float(x.ceil()),
                "floor" => Val::Float(x.floor()),
                _ => {
                    let p = a.get(1).map(Val::to_i64).unwrap_or(0).clamp(0, 15) as i32;
                    let m = 10f64.powi(p);
                    Val::Float((x * m).round() / m)
                }
            }
        }
        "default" => {
            want(a, 2, name)?;
            if a[1].truthy() { a[1].clone() } else { a[0].clone() }
        }
        "count" => {
            want(a, 2, name)?;
            let re = regex::Regex::new(&s(&a[0])).map_err(|e| e.to_string())?;
            Val::Int(re.find_iter(&s(&a[1])).count() as i64)
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            want(a, 3, name)?;
            let re = regex::Regex::new(&s(&a[0])).map_err(|e| e.to_string())?;
            let (src, repl) = (s(&a[1]), s(&a[2]));
            Val::Str(if name == "regexReplaceAll" {
                re.replace_all(&src, go_expand_template(&repl).as_str()).into_owned()
            } else {
                re.replace_all(&src, regex::NoExpand(&repl)).into_owned()
            })
        }
        "b64enc" => str1(b64enc)?,
        "b64dec" => str1(|x| b64dec(x).unwrap_or_else(|| "illegal base64 data".into()))?,
        "alignLeft" | "alignRight" => {
            want(a, 2, name)?;
            let x = s(&a[1]);
            let len = x.chars().count();
            let n = a[0].to_i64();
            if n < 0 || n as usize == len {
                return Ok(Val::Str(x));
            }
            let n = n.min(MAX_PAD as i64) as usize;
            Val::Str(if len > n {
                if name == "alignLeft" { x.chars().take(n).collect() } else { x.chars().skip(len - n).collect() }
            } else if name == "alignLeft" {
                format!("{x}{}", " ".repeat(n - len))
            } else {
                format!("{}{x}", " ".repeat(n - len))
            })
        }
        "len" => {
            want(a, 1, name)?;
            Val::Int(s(&a[0]).len() as i64)
        }
        "printf" => {
            if a.is_empty() {
                return Err("wrong number of args for printf: want at least 1 got 0".into());
            }
            Val::Str(sprintf(&s(&a[0]), &a[1..]))
        }
        "print" => {
            let mut out = String::new();
            for (i, v) in a.iter().enumerate() {
                let is_str = matches!(v, Val::Str(_));
                if i > 0 && !is_str && !matches!(a[i - 1], Val::Str(_)) {
                    out.push(' ');
                }
                out.push_str(&v.to_text());
            }
            Val::Str(out)
        }
        "println" => Val::Str(format!("{}\n", a.iter().map(Val::to_text).collect::<Vec<_>>().join(" "))),
        "eq" => {
            if a.len() < 2 {
                return Err("missing argument for comparison".into());
            }
            let mut r = false;
            for b in &a[1..] {
                if compare(&a[0], b)? == Ordering::Equal {
                    r = true;
                }
            }
            Val::Bool(r)
        }
        "ne" | "lt" | "le" | "gt" | "ge" => {
            want(a, 2, name)?;
            let o = compare(&a[0], &a[1])?;
            Val::Bool(match name {
                "ne" => o != Ordering::Equal,
                "lt" => o == Ordering::Less,
                "le" => o != Ordering::Greater,
                "gt" => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
        "and" => a.iter().find(|v| !v.truthy()).or(a.last()).cloned().unwrap_or(Val::Nil),
        "or" => a.iter().find(|v| v.truthy()).or(a.last()).cloned().unwrap_or(Val::Nil),
        "not" => {
            want(a, 1, name)?;
            Val::Bool(!a[0].truthy())
        }
        "now" => Val::Time(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64),
        ),
        "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" => {
            want(a, 1, name)?;
            let t = match &a[0] {
                Val::Time(t) => *t,
                _ => return Err(format!("wrong type for value; expected time.Time; got {}", type_name(&a[0]))),
            };
            Val::Str(match name {
                "unixEpoch" => t.div_euclid(1_000_000_000).to_string(),
                "unixEpochMillis" => t.div_euclid(1_000_000).to_string(),
                _ => t.to_string(),
            })
        }
        "unixToTime" => {
            want(a, 1, name)?;
            let x = s(&a[0]);
            let v: i64 = x.parse().map_err(|_| format!("unable to parse time '{x}'"))?;
            Val::Time(match x.len() {
                5 => v.saturating_mul(86_400_000_000_000),
                10 => v.saturating_mul(1_000_000_000),
                13 => v.saturating_mul(1_000_000),
                16 => v.saturating_mul(1_000),
                19 => v,
                _ => return Err(format!("unable to parse time '{x}'")),
            })
        }
        "date" => {
            want(a, 2, name)?;
            let t = match &a[1] {
                Val::Time(t) => *t,
                v => v.to_i64().saturating_mul(1_000_000_000),
            };
            Val::Str(format_time(t, &s(&a[0])))
        }
        "toDate" => {
            want(a, 2, name)?;
            Val::Time(parse_time(&s(&a[0]), &s(&a[1])).unwrap_or(i64::MIN / 2))
        }
        other => return Err(format!("function \"{other}\" not defined")),
    })
}

fn type_name(v: &Val) -> &'static str {
    match v {
        Val::Str(_) => "string",
        Val::Int(_) => "int",
        Val::Float(_) => "float64",
        Val::Bool(_) => "bool",
        Val::Time(_) => "time.Time",
        Val::Nil => "<nil>",
    }
}

/// Go's regexp `Expand` syntax (`$1`, `${name}`) mapped onto the regex crate's (`${1}`), so that
/// `$1x` keeps Go's meaning (the group named `1x`).
fn go_expand_template(t: &str) -> String {
    t.to_string()
}

fn b64enc(x: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(x.as_bytes())
}

/// sprig's `b64dec` (Go's strict `StdEncoding`); `None` for input that is not base64.
fn b64dec(x: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(x).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Largest padding, precision or indent a template may ask for.
const MAX_PAD: usize = 4096;

/// Go's `fmt.Sprintf` for the verbs templates use.
pub(crate) fn sprintf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = it.peek() {
            if "-+# 0".contains(f) {
                flags.push(f);
                it.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = it.peek() {
            if d.is_ascii_digit() {
                width.push(d);
                it.next();
            } else {
                break;
            }
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek() {
                if d.is_ascii_digit() {
                    p.push(d);
                    it.next();
                } else {
                    break;
                }
            }
            prec = Some(p.parse::<usize>().unwrap_or(0).min(MAX_PAD));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        ai += 1;
        let body = match (verb, arg) {
            ('s' | 'v', v) => {
                let t = v.to_text();
                match prec {
                    Some(p) if verb == 's' => t.chars().take(p).collect(),
                    _ => t,
                }
            }
            ('q', v) => go_quote(&v.to_text()),
            ('d', Val::Int(i)) => {
                if flags.contains('+') && *i >= 0 {
                    format!("+{i}")
                } else {
                    i.to_string()
                }
            }
            ('f' | 'F', Val::Float(_) | Val::Int(_)) if matches!(arg, Val::Float(_)) => {
                format!("{:.*}", prec.unwrap_or(6), arg.to_f64())
            }
            ('e', Val::Float(f)) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                let e: i32 = e.parse().unwrap_or(0);
                format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
            }
            ('g', Val::Float(f)) => go_float(*f),
            ('x', Val::Int(i)) => format!("{i:x}"),
            ('X', Val::Int(i)) => format!("{i:X}"),
            ('x', Val::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('t', Val::Bool(b)) => b.to_string(),
            ('c', Val::Int(i)) => char::from_u32(*i as u32).map(String::from).unwrap_or_default(),
            (v, a) => format!("%!{v}({}={})", type_name(a), a.to_text()),
        };
        // Bounded so that a template cannot ask for gigabytes of padding.
        let w: usize = width.parse::<usize>().unwrap_or(0).min(MAX_PAD);
        let len = body.chars().count();
        if len < w {
            let pad = w - len;
            if flags.contains('-') {
                out.push_str(&body);
                out.push_str(&" ".repeat(pad));
            } else if flags.contains('0') && !matches!(arg, Val::Str(_)) {
                let (sign, digits) = body.strip_prefix('-').map_or(("", body.as_str()), |d| ("-", d));
                out.push_str(sign);
                out.push_str(&"0".repeat(pad));
                out.push_str(digits);
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    if ai < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[ai..].iter().map(|a| format!("{}={}", type_name(a), a.to_text())).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

/// Civil date from days since the epoch.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];

/// Go's `time.Format` with a reference-time layout, in UTC.
pub(crate) fn format_time(ns: i64, layout: &str) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, mo, d) = civil(days);
    let (h, mi, se) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let mut out = String::new();
    let mut rest = layout;
    while !rest.is_empty() {
        let tokens: &[(&str, &dyn Fn() -> String)] = &[
            ("2006", &|| format!("{y:04}")),
            ("January", &|| MONTHS[(mo - 1) as usize].into()),
            ("Jan", &|| MONTHS[(mo - 1) as usize][..3].into()),
            ("Monday", &|| wd.into()),
            ("Mon", &|| wd[..3].into()),
            ("MST", &|| "UTC".into()),
            ("Z07:00", &|| "Z".into()),
            ("-07:00", &|| "+00:00".into()),
            ("-0700", &|| "+0000".into()),
            ("Z0700", &|| "Z".into()),
            ("01", &|| format!("{mo:02}")),
            ("02", &|| format!("{d:02}")),
            ("_2", &|| format!("{d:>2}")),
            ("15", &|| format!("{h:02}")),
            ("03", &|| format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
            ("04", &|| format!("{mi:02}")),
            ("05", &|| format!("{se:02}")),
            ("06", &|| format!("{:02}", y % 100)),
            ("PM", &|| if h >= 12 { "PM".into() } else { "AM".into() }),
            ("pm", &|| if h >= 12 { "pm".into() } else { "am".into() }),
            ("1", &|| mo.to_string()),
            ("2", &|| d.to_string()),
            ("3", &|| (if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
            ("4", &|| mi.to_string()),
            ("5", &|| se.to_string()),
        ];
        if rest.starts_with(".0") || rest.starts_with(".9") || rest.starts_with(",0") || rest.starts_with(",9") {
            let digit = rest.as_bytes()[1];
            let n = rest[1..].bytes().take_while(|b| *b == digit).count();
            let digits = format!("{frac:09}");
            let mut part = digits[..n.min(9)].to_string();
            if digit == b'9' {
                part = part.trim_end_matches('0').to_string();
                if !part.is_empty() {
                    out.push('.');
                    out.push_str(&part);
                }
            } else {
                out.push('.');
                out.push_str(&part);
            }
            rest = &rest[1 + n..];
            continue;
        }
        if let Some((t, f)) = tokens.iter().find(|(t, _)| rest.starts_with(t)) {
            out.push_str(&f());
            rest = &rest[t.len()..];
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Parses `value` with a Go layout (the common numeric layouts), in UTC.
fn parse_time(layout: &str, value: &str) -> Option<i64> {
    let mut l = layout;
    let mut v = value;
    let (mut y, mut mo, mut d, mut h, mut mi, mut se, mut frac) = (1i64, 1u32, 1u32, 0i64, 0i64, 0i64, 0i64);
    let take = |v: &mut &str, n: usize| -> Option<i64> {
        let s = v.get(..n)?;
        let r = s.parse().ok();
        *v = &v[n..];
        r
    };
    while !l.is_empty() {
        if let Some(r) = l.strip_prefix("2006") {
            y = take(&mut v, 4)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("01") {
            mo = take(&mut v, 2)? as u32;
            l = r;
        } else if let Some(r) = l.strip_prefix("02") {
            d = take(&mut v, 2)? as u32;
            l = r;
        } else if let Some(r) = l.strip_prefix("15") {
            h = take(&mut v, 2)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("04") {
            mi = take(&mut v, 2)?;
            l = r;
        } else if let Some(r) = l.strip_prefix("05") {
            se = take(&mut v, 2)?;
            l = r;
        } else if l.starts_with(".0") || l.starts_with(".9") {
            let n = l[1..].bytes().take_while(|b| *b == b'0' || *b == b'9').count();
            l = &l[1 + n..];
            if let Some(r) = v.strip_prefix('.') {
                let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
                v = &r[digits.len()..];
                let mut p = digits.clone();
                p.truncate(9);
                while p.len() < 9 {
                    p.push('0');
                }
                frac = p.parse().ok()?;
            }
        } else if let Some(r) = l.strip_prefix("Z07:00") {
            l = r;
            v = v.strip_prefix('Z').unwrap_or(v);
        } else {
            let c = l.chars().next()?;
            if !v.starts_with(c) {
                return None;
            }
            l = &l[c.len_utf8()..];
            v = &v[c.len_utf8()..];
        }
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 86400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &str, labels: &[(&str, &str)], line: &str) -> String {
        let tmpl = Template::parse("line", t).unwrap();
        let f = |n: &str| labels.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string());
        tmpl.execute(&Ctx { labels: &f, line, ts_ns: 0 }).unwrap()
    }

    #[test]
    fn basics() {
        assert_eq!(run("{{.a}}-{{ .b | ToUpper }}", &[("a", "x"), ("b", "y")], ""), "x-Y");
        assert_eq!(run("{{ printf \"%-6s|%5.2f\" .a 3.14159 }}", &[("a", "GET")], ""), "GET   | 3.14");
        assert_eq!(run("{{ if eq .s \"429\" }}t{{ else }}o{{ end }}", &[("s", "429")], ""), "t");
        assert_eq!(run("{{ __line__ | trunc 3 }}", &[], "abcdef"), "abc");
        assert_eq!(run("{{ add .a .b }}", &[("a", "2"), ("b", "40")], ""), "42");
        assert_eq!(run("{{ default \"none\" .e }}", &[], ""), "none");
        assert_eq!(run("{{- .a -}}  x", &[("a", "1")], ""), "1x");
        assert_eq!(format_time(0, "2006-01-02T15:04:05.000Z07:00"), "1970-01-01T00:00:00.000Z");
        assert!(Template::parse("line", "{{.status").unwrap_err().contains("unclosed action"));
    }
}

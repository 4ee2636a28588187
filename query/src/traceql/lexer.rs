//! TraceQL tokens, split the way Tempo's lexer splits them (`pkg/traceql/lexer.go`):
//! - words and symbols are extended greedily while the longer text is still a token (`!` → `!>`
//!   → `!>>`, `span` → `span.`), so `span.foo` starts with the scope token `span.`;
//! - after a scope token (`.`, `span.`, `resource.`, `parent.`, `event.`, `link.`,
//!   `instrumentation.`) everything up to a space or one of `{}()=~!<>&|^,` is the attribute name,
//!   with `"..."` parts unquoted (`."a b"`); `parent.` may be followed by `span.` or `resource.`;
//! - a number directly followed by duration units is a duration (`1ms`, `1.5s`, `1h30m`), parsed
//!   as Prometheus then Go durations;
//! - `//` and `/* */` comments are skipped, as Go's `text/scanner` does.
//!
//! Every token carries the byte offset it starts at; errors point there.

use super::ParseError;

/// A token.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A symbol or keyword from Tempo's token map (`{`, `&&`, `name`, `span.`, `trace:`, `rate`...).
    Sym(&'static str),
    /// A word that is not a keyword.
    Ident(String),
    /// An attribute name following a scope token.
    AttrName(String),
    /// A string literal.
    Str(String),
    /// An integer literal.
    Int(i64),
    /// A float literal.
    Float(f64),
    /// A duration literal (ns).
    Duration(i64),
    /// End of input.
    Eof,
}

impl Tok {
    /// How Tempo's parser names the token in `unexpected X` messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Sym(s) => (*s).to_string(),
            Tok::Ident(_) | Tok::AttrName(_) => "IDENTIFIER".to_string(),
            Tok::Str(_) => "STRING".to_string(),
            Tok::Int(_) => "INTEGER".to_string(),
            Tok::Float(_) => "FLOAT".to_string(),
            Tok::Duration(_) => "DURATION".to_string(),
            Tok::Eof => "$end".to_string(),
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// Tempo's token map: every symbol and keyword.
const TOKENS: &[&str] = &[
    ",",
    ".",
    "{",
    "}",
    "(",
    ")",
    "=",
    "!=",
    "=~",
    "!~",
    ">",
    ">=",
    "<",
    "<=",
    "+",
    "-",
    "/",
    "%",
    "*",
    "^",
    "true",
    "false",
    "nil",
    "ok",
    "error",
    "unset",
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
    "&&",
    "||",
    "!",
    "|",
    ">>",
    "<<",
    "~",
    "!>",
    "!<",
    "!>>",
    "!<<",
    "&~",
    "&>",
    "&<",
    "&>>",
    "&<<",
    "duration",
    "childCount",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootName",
    "rootServiceName",
    "rootService",
    "traceDuration",
    "nestedSetLeft",
    "nestedSetRight",
    "nestedSetParent",
    "id",
    "traceID",
    "spanID",
    "parentID",
    "timeSinceStart",
    "version",
    "parent",
    "parent.",
    "resource.",
    "span.",
    "trace:",
    "span:",
    "event:",
    "link:",
    "instrumentation:",
    "event.",
    "link.",
    "instrumentation.",
    "count",
    "avg",
    "max",
    "min",
    "sum",
    "by",
    "coalesce",
    "select",
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
    "with",
];

fn lookup(s: &str) -> Option<&'static str> {
    TOKENS.iter().find(|t| **t == s).copied()
}

fn starts_attribute(s: &str) -> bool {
    matches!(s, "." | "resource." | "span." | "parent." | "event." | "link." | "instrumentation.")
}

/// Characters that continue an unquoted attribute name (Tempo's `isAttributeRune`).
pub(crate) fn is_attribute_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',')
}

fn is_duration_char(c: char) -> bool {
    matches!(c, 'n' | 's' | 'u' | 'm' | 'h' | 'µ' | 'd' | 'w' | 'y')
}

/// Splits `q` into tokens, ending with [`Tok::Eof`].
pub(crate) fn lex(q: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer { q, i: 0, out: Vec::new() };
    lx.run()?;
    Ok(lx.out)
}

struct Lexer<'a> {
    q: &'a str,
    i: usize,
    out: Vec<Token>,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.q[self.i..].chars().next()
    }

    fn peek_at(&self, off: usize) -> Option<char> {
        self.q.get(self.i + off..).and_then(|s| s.chars().next())
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn err(&self, pos: usize, msg: impl Into<String>) -> ParseError {
        ParseError::new(self.q, pos, msg)
    }

    fn push(&mut self, tok: Tok, pos: usize) {
        self.out.push(Token { tok, pos });
    }

    fn skip_space_and_comments(&mut self) -> Result<(), ParseError> {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.peek_at(1) == Some('/') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some('/') if self.peek_at(1) == Some('*') => {
                    let start = self.i;
                    self.i += 2;
                    match self.q[self.i..].find("*/") {
                        Some(end) => self.i += end + 2,
                        None => return Err(self.err(start, "comment not terminated")),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn run(&mut self) -> Result<(), ParseError> {
        loop {
            self.skip_space_and_comments()?;
            let start = self.i;
            let Some(c) = self.peek() else {
                self.push(Tok::Eof, start);
                return Ok(());
            };
            if c.is_ascii_digit() || (c == '.' && self.peek_at(1).is_some_and(|d| d.is_ascii_digit())) {
                self.number(start)?;
                continue;
            }
            if c == '"' || c == '`' {
                let s = self.string(start)?;
                self.push(Tok::Str(s), start);
                continue;
            }
            let mut text = String::new();
            if c.is_alphabetic() || c == '_' {
                while let Some(c) = self.peek() {
                    if c.is_alphanumeric() || c == '_' {
                        text.push(c);
                        self.bump();
                    } else {
                        break;
                    }
                }
            } else {
                text.push(c);
                self.bump();
            }
            // Extend while the longer text is still a token.
            let mut sym = None;
            while let Some(next) = self.peek() {
                let mut longer = text.clone();
                longer.push(next);
                match lookup(&longer) {
                    Some(t) => {
                        sym = Some(t);
                        text = longer;
                        self.bump();
                    }
                    None => break,
                }
            }
            let sym = sym.or_else(|| lookup(&text));
            match sym {
                Some(s) => {
                    self.push(Tok::Sym(s), start);
                    if starts_attribute(s) {
                        self.attribute(s, start)?;
                    }
                }
                None => self.push(Tok::Ident(text), start),
            }
        }
    }

    /// After a scope token: optional nested scope (`parent.span.`), then the name.
    fn attribute(&mut self, scope: &'static str, scope_pos: usize) -> Result<(), ParseError> {
        if scope == "parent." {
            for nested in ["span.", "resource."] {
                if self.q[self.i..].starts_with(nested) {
                    let pos = self.i;
                    self.i += nested.len();
                    self.push(Tok::Sym(if nested == "span." { "span." } else { "resource." }), pos);
                    break;
                }
            }
        }
        let pos = self.i;
        let mut name = String::new();
        loop {
            match self.peek() {
                Some('"') => {
                    let qpos = scope_pos;
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(self.err(qpos, "unexpected EOF, expecting \"")),
                            Some('"') => break,
                            Some('\\') => match self.peek() {
                                Some(c @ ('"' | '\\')) => {
                                    name.push(c);
                                    self.bump();
                                }
                                _ => return Err(self.err(qpos, "invalid escape sequence")),
                            },
                            Some(c) => name.push(c),
                        }
                    }
                }
                Some(c) if is_attribute_char(c) => {
                    name.push(c);
                    self.bump();
                }
                _ => break,
            }
        }
        if !name.is_empty() || self.i > pos {
            self.push(Tok::AttrName(name), pos);
        }
        Ok(())
    }

    fn number(&mut self, start: usize) -> Result<(), ParseError> {
        let bytes = self.q.as_bytes();
        let mut j = self.i;
        let mut is_float = false;
        if self.q[j..].starts_with("0x") || self.q[j..].starts_with("0X") {
            j += 2;
            while j < bytes.len() && (bytes[j].is_ascii_hexdigit() || bytes[j] == b'_') {
                j += 1;
            }
            let text = self.q[start + 2..j].replace('_', "");
            self.i = j;
            let v = i64::from_str_radix(&text, 16).map_err(|_| {
                self.err(start, format!("strconv.Atoi: parsing \"{}\": value out of range", &self.q[start..j]))
            })?;
            self.push(Tok::Int(v), start);
            return Ok(());
        }
        while j < bytes.len() && (bytes[j].is_ascii_digit() || bytes[j] == b'_') {
            j += 1;
        }
        if j < bytes.len() && bytes[j] == b'.' {
            is_float = true;
            j += 1;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
        }
        if j < bytes.len() && (bytes[j] == b'e' || bytes[j] == b'E') {
            let mut k = j + 1;
            if k < bytes.len() && (bytes[k] == b'+' || bytes[k] == b'-') {
                k += 1;
            }
            if k < bytes.len() && bytes[k].is_ascii_digit() {
                while k < bytes.len() && bytes[k].is_ascii_digit() {
                    k += 1;
                }
                is_float = true;
                j = k;
            }
        }
        let text = &self.q[start..j];
        self.i = j;
        // A duration: the number followed (without space) by digits, units and dots.
        let mut k = j;
        for c in self.q[j..].chars() {
            if c.is_whitespace() || !(c.is_ascii_digit() || is_duration_char(c) || c == '.') {
                break;
            }
            k += c.len_utf8();
        }
        if k > j
            && let Some(d) = parse_duration(&self.q[start..k])
        {
            self.i = k;
            self.push(Tok::Duration(d), start);
            return Ok(());
        }
        if is_float {
            let v: f64 = text
                .replace('_', "")
                .parse()
                .map_err(|_| self.err(start, format!("strconv.ParseFloat: parsing \"{text}\": invalid syntax")))?;
            self.push(Tok::Float(v), start);
        } else {
            let v: i64 = text
                .replace('_', "")
                .parse()
                .map_err(|_| self.err(start, format!("strconv.Atoi: parsing \"{text}\": value out of range")))?;
            self.push(Tok::Int(v), start);
        }
        Ok(())
    }

    fn string(&mut self, start: usize) -> Result<String, ParseError> {
        let quote = self.bump().unwrap_or('"');
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(self.err(start, "literal not terminated"));
            };
            if c == quote {
                return Ok(out);
            }
            if quote == '`' {
                if c != '\r' {
                    out.push(c);
                }
                continue;
            }
            if c == '\n' {
                return Err(self.err(start, "literal not terminated"));
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let esc_pos = self.i - 1;
            let bad = |lx: &Self| lx.err(esc_pos, "invalid syntax");
            match self.bump() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('a') => out.push('\x07'),
                Some('b') => out.push('\x08'),
                Some('f') => out.push('\x0c'),
                Some('v') => out.push('\x0b'),
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some(h @ ('x' | 'u' | 'U')) => {
                    let n = match h {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let digits = self.q.get(self.i..self.i + n).ok_or_else(|| bad(self))?;
                    let v = u32::from_str_radix(digits, 16).map_err(|_| bad(self))?;
                    self.i += n;
                    out.push(char::from_u32(v).ok_or_else(|| bad(self))?);
                }
                Some(d @ '0'..='7') => {
                    let digits = self.q.get(self.i - 1..self.i + 2).ok_or_else(|| bad(self))?;
                    let v = u32::from_str_radix(digits, 8).map_err(|_| bad(self))?;
                    let _ = d;
                    self.i += 2;
                    out.push(char::from_u32(v).ok_or_else(|| bad(self))?);
                }
                _ => return Err(bad(self)),
            }
        }
    }
}

/// Prometheus durations (`1h30m`, `2d`, `1w`, `1y`) and then Go's (`1.5s`, `300us`, `1h2m3.5s`), in ns.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    prom_duration(s).or_else(|| go_duration(s))
}

fn prom_duration(s: &str) -> Option<i64> {
    const UNITS: &[(&str, i64)] = &[
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut last_unit = -1i64;
    let mut total_ms: i64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = if rest.starts_with("ms") {
            "ms"
        } else {
            rest.get(..1).filter(|u| matches!(*u, "y" | "w" | "d" | "h" | "m" | "s"))?
        };
        let idx = UNITS.iter().position(|(u, _)| *u == unit)? as i64;
        if idx <= last_unit {
            return None;
        }
        last_unit = idx;
        total_ms = total_ms.checked_add(n.checked_mul(UNITS[idx as usize].1)?)?;
        rest = &rest[unit.len()..];
    }
    total_ms.checked_mul(1_000_000)
}

fn go_duration(s: &str) -> Option<i64> {
    let mut rest = s;
    let mut total: f64 = 0.0;
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if num_len == 0 {
            return None;
        }
        let num = &rest[..num_len];
        if num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let v: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let mult: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += v * mult;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return None;
    }
    Some(total.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(q: &str) -> Vec<Tok> {
        lex(q).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn splits_like_tempo() {
        assert_eq!(
            toks("{ span.http.status_code >= 500 && .\"a b\".c !>> 1.5s }"),
            vec![
                Tok::Sym("{"),
                Tok::Sym("span."),
                Tok::AttrName("http.status_code".into()),
                Tok::Sym(">="),
                Tok::Int(500),
                Tok::Sym("&&"),
                Tok::Sym("."),
                Tok::AttrName("a b.c".into()),
                Tok::Sym("!>>"),
                Tok::Duration(1_500_000_000),
                Tok::Sym("}"),
                Tok::Eof
            ]
        );
        assert_eq!(
            toks("parent.resource.x"),
            vec![Tok::Sym("parent."), Tok::Sym("resource."), Tok::AttrName("x".into()), Tok::Eof]
        );
        assert_eq!(
            toks("span:id trace:rootService"),
            vec![Tok::Sym("span:"), Tok::Sym("id"), Tok::Sym("trace:"), Tok::Sym("rootService"), Tok::Eof]
        );
        assert_eq!(
            toks("1h30m 5x .5"),
            vec![Tok::Duration(5_400_000_000_000), Tok::Int(5), Tok::Ident("x".into()), Tok::Float(0.5), Tok::Eof]
        );
    }
}

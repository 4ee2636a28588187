//! The LogQL lexer: text → tokens with 1-based line/column positions (Loki reports the
//! position of the token a syntax error is found at).

use super::ParseError;
use super::units::{parse_bytes, parse_duration};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Str(String),
    Number(f64),
    /// nanoseconds, source text
    Duration(f64, String),
    /// bytes, source text
    Bytes(f64, String),
    /// `[5m]` in nanoseconds
    Range(i64),
    /// `--strict`, `--keep-empty`
    Flag(String),
    Punct(&'static str),
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

/// Keywords everywhere (Loki's lexer `tokens` map).
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "bool",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "json",
    "logfmt",
    "regexp",
    "pattern",
    "unpack",
    "line_format",
    "label_format",
    "unwrap",
    "drop",
    "keep",
    "decolorize",
];

impl Token {
    /// The token as Loki's yacc error messages name it.
    pub fn display(&self) -> String {
        match &self.tok {
            Tok::Ident(s) if KEYWORDS.contains(&s.as_str()) => s.clone(),
            Tok::Ident(_) => "IDENTIFIER".into(),
            Tok::Str(_) => "STRING".into(),
            Tok::Number(_) => "NUMBER".into(),
            Tok::Duration(..) => "DURATION".into(),
            Tok::Bytes(..) => "BYTES".into(),
            Tok::Range(_) => "RANGE".into(),
            Tok::Flag(f) => f.clone(),
            Tok::Punct(p) => (*p).into(),
            Tok::Eof => "$end".into(),
        }
    }

    pub fn is_ident(&self, s: &str) -> bool {
        matches!(&self.tok, Tok::Ident(i) if i == s)
    }

    pub fn is_punct(&self, s: &str) -> bool {
        matches!(&self.tok, Tok::Punct(p) if *p == s)
    }
}

const PUNCTS: &[&str] = &[
    "|=", "|~", "!=", "!~", "=~", "==", ">=", "<=", "{", "}", "(", ")", "[", "]", ",", "=", "|", ">", "<", "+", "-",
    "*", "/", "%", "^",
];

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    // Column bookkeeping, incremental so that long queries lex in linear time.
    let (mut col_at, mut col_pos) = (1usize, 0usize);
    while i < b.len() {
        let c = b[i];
        if col_pos < line_start {
            (col_at, col_pos) = (1, line_start);
        }
        col_at += src[col_pos..i].chars().count();
        col_pos = i;
        let col = col_at;
        if c == b'\n' {
            i += 1;
            line += 1;
            line_start = i;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let push = |out: &mut Vec<Token>, tok: Tok| out.push(Token { tok, line, col });
        if c == b'"' {
            let (s, n) = lex_quoted(&src[i..]).ok_or_else(|| ParseError::at(line, col, "literal not terminated"))?;
            push(&mut out, Tok::Str(s));
            i += n;
            continue;
        }
        if c == b'`' {
            let end = src[i + 1..].find('`').ok_or_else(|| ParseError::at(line, col, "literal not terminated"))?;
            let s = &src[i + 1..i + 1 + end];
            push(&mut out, Tok::Str(s.to_string()));
            for (k, ch) in s.char_indices() {
                if ch == '\n' {
                    line += 1;
                    line_start = i + 1 + k + 1;
                }
            }
            i += end + 2;
            continue;
        }
        if c == b'[' {
            let end = src[i..].find(']').ok_or_else(|| ParseError::at(0, col, "missing closing ']' in duration"))?;
            let inner = src[i + 1..i + end].trim();
            let ns = parse_duration(inner, true)
                .map_err(|_| ParseError::at(0, col, format!("not a valid duration string: \"{inner}\"")))?;
            // Loki's lexer reports RANGE tokens on line 0.
            out.push(Token { tok: Tok::Range(ns as i64), line: 0, col });
            i += end + 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_some_and(|x| x.is_ascii_alphabetic()) {
            let mut j = i + 2;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-' || b[j] == b'_') {
                j += 1;
            }
            push(&mut out, Tok::Flag(src[i..j].to_string()));
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            push(&mut out, Tok::Ident(src[i..j].to_string()));
            i = j;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(|x| x.is_ascii_digit())) {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                j += 1;
            }
            // µ is multi-byte: extend over any non-ASCII letters too.
            while j < b.len() && !b[j].is_ascii() {
                j += 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || !b[j].is_ascii()) {
                    j += 1;
                }
            }
            let text = &src[i..j];
            let tok = if let Ok(v) = text.parse::<f64>() {
                Tok::Number(v)
            } else if let Some(v) = parse_hex(text) {
                Tok::Number(v)
            } else if let Ok(ns) = parse_duration(text, true) {
                Tok::Duration(ns, text.to_string())
            } else if let Ok(v) = parse_bytes(text) {
                Tok::Bytes(v, text.to_string())
            } else {
                return Err(ParseError::at(line, col, format!("syntax error: unexpected {text}")));
            };
            push(&mut out, tok);
            i = j;
            continue;
        }
        if let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            push(&mut out, Tok::Punct(p));
            i += p.len();
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('?');
        return Err(ParseError::at(line, col, format!("syntax error: unexpected {ch}")));
    }
    let col = src[line_start..].chars().count() + 1;
    out.push(Token { tok: Tok::Eof, line, col });
    Ok(out)
}

fn parse_hex(t: &str) -> Option<f64> {
    let h = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
    u64::from_str_radix(h, 16).ok().map(|v| v as f64)
}

/// A Go double-quoted string literal at the start of `s`: (value, bytes consumed).
pub(crate) fn lex_quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\n' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'x' => {
                        let h: String = (0..2).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        out.push(char::from(u8::from_str_radix(&h, 16).ok()?));
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let h: String = (0..n).filter_map(|_| chars.next().map(|x| x.1)).collect();
                        out.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                    }
                    '0'..='7' => {
                        let mut o = String::from(e);
                        for _ in 0..2 {
                            o.push(chars.next()?.1);
                        }
                        out.push(char::from(u8::from_str_radix(&o, 8).ok()?));
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

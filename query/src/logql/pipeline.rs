//! Running a log pipeline over one entry: line filters, parsers, label filters, formatting,
//! `drop`/`keep`, with Loki's label builder rules:
//! - a parsed label whose name is a stream label gets the suffix `_extracted`;
//! - errors go to `__error__` / `__error_details__`; after an error, only string label filters
//!   can still drop the entry (numeric ones let it through);
//! - labels may hold empty values (a parameter that found nothing), which are returned as such.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use storage::model::Labels;

use super::ast::{CmpOp, LabelFilter, LabelFmt, LineFilter, LineFilterOp, LineFilterValue, NamedMatcher, Stage};
use super::template::Ctx;
use super::units::{parse_bytes, parse_duration, parse_float};

pub(crate) const ERROR: &str = "__error__";
pub(crate) const ERROR_DETAILS: &str = "__error_details__";

/// Where a label came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cat {
    Stream,
    Meta,
    Parsed,
}

/// The labels of one entry while the pipeline runs.
#[derive(Clone, Debug)]
pub(crate) struct Builder<'a> {
    base: &'a Labels,
    pub labels: BTreeMap<String, (String, Cat)>,
    pub err: Option<String>,
    pub err_details: Option<String>,
}

impl<'a> Builder<'a> {
    pub fn new(base: &'a Labels, meta: &[(String, String)]) -> Self {
        let mut labels = BTreeMap::new();
        for l in base.iter() {
            labels.insert(l.name.clone(), (l.value.clone(), Cat::Stream));
        }
        for (k, v) in meta {
            labels.insert(k.clone(), (v.clone(), Cat::Meta));
        }
        Builder { base, labels, err: None, err_details: None }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            ERROR => self.err.as_deref(),
            ERROR_DETAILS => self.err_details.as_deref(),
            _ => self.labels.get(name).map(|(v, _)| v.as_str()),
        }
    }

    /// Sets a parsed label, renaming it `<name>_extracted` when it collides with a stream label.
    fn set_parsed(&mut self, name: String, value: String) {
        let name = if self.base.get(&name).is_some() { format!("{name}_extracted") } else { name };
        self.labels.insert(name, (value, Cat::Parsed));
    }

    fn set(&mut self, name: &str, value: String) {
        match name {
            ERROR => self.err = Some(value),
            ERROR_DETAILS => self.err_details = Some(value),
            _ => {
                let cat = self
                    .labels
                    .get(name)
                    .map_or(Cat::Parsed, |(_, c)| if *c == Cat::Stream { Cat::Parsed } else { *c });
                self.labels.insert(name.to_string(), (value, cat));
            }
        }
    }

    fn del(&mut self, name: &str) {
        match name {
            ERROR => self.err = None,
            ERROR_DETAILS => self.err_details = None,
            _ => {
                self.labels.remove(name);
            }
        }
    }

    fn set_err(&mut self, err: &str, details: Option<String>) {
        if self.err.is_none() {
            self.err = Some(err.to_string());
            if let Some(d) = details {
                self.err_details = Some(d);
            }
        }
    }

    /// The final label set (including `__error__`/`__error_details__`).
    pub fn result(&self) -> Labels {
        let mut pairs: Vec<(String, String)> = self.labels.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        if let Some(e) = &self.err {
            pairs.push((ERROR.into(), e.clone()));
            if let Some(d) = &self.err_details {
                pairs.push((ERROR_DETAILS.into(), d.clone()));
            }
        }
        Labels::from_pairs_keep_empty(pairs)
    }

    /// Labels of one category (for the categorize-labels encoding).
    pub fn of(&self, cat: Cat) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.labels.iter().filter(|(_, (_, c))| *c == cat).map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        if cat == Cat::Parsed
            && let Some(e) = &self.err
        {
            out.push((ERROR.into(), e.clone()));
            if let Some(d) = &self.err_details {
                out.push((ERROR_DETAILS.into(), d.clone()));
            }
        }
        out
    }

    fn map_fn(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |n: &str| self.get(n).map(str::to_string)
    }
}

/// Runs `stages` over one entry; `None` when the entry is filtered out.
pub(crate) fn run(stages: &[Stage], ts_ns: i64, line: &str, b: &mut Builder<'_>) -> Option<String> {
    let mut line = std::borrow::Cow::Borrowed(line);
    for st in stages {
        match st {
            Stage::LineFilter(f) => {
                if !line_filter(f, &line) {
                    return None;
                }
            }
            Stage::Json(params) if params.is_empty() => json_all(&line, b),
            Stage::Json(params) => json_params(&line, params, b),
            Stage::Logfmt { strict, keep_empty, params } => logfmt(&line, *strict, *keep_empty, params, b),
            Stage::Regexp(re) => {
                if let Some(caps) = re.captures(&line) {
                    for (i, name) in re.capture_names().enumerate() {
                        if let Some(name) = name {
                            let v = caps.get(i).map_or("", |m| m.as_str()).to_string();
                            b.set_parsed(name.to_string(), v);
                        }
                    }
                }
            }
            Stage::Pattern(p) => {
                if let Some(caps) = p.matches(&line) {
                    for (name, v) in caps {
                        b.set_parsed(name.to_string(), v.to_string());
                    }
                }
            }
            Stage::Unpack => {
                if let Some(entry) = unpack(&line, b) {
                    line = std::borrow::Cow::Owned(entry);
                }
            }
            Stage::LabelFilter(f) => {
                if !label_filter(f, b) {
                    return None;
                }
            }
            Stage::LineFormat(t) => {
                let r = {
                    let f = b.map_fn();
                    t.execute(&Ctx { labels: &f, line: &line, ts_ns })
                };
                match r {
                    Ok(s) => line = std::borrow::Cow::Owned(s),
                    Err(e) => b.set_err("TemplateFormatErr", Some(e)),
                }
            }
            Stage::LabelFormat(fmts) => {
                let mut snapshot: Option<BTreeMap<String, String>> = None;
                for f in fmts {
                    match f {
                        LabelFmt::Rename { dst, src } => {
                            // A renamed label keeps its category (stream, metadata or parsed).
                            if let Some((v, cat)) = b.labels.remove(src) {
                                b.labels.insert(dst.clone(), (v, cat));
                            } else if let Some(v) = b.get(src).map(str::to_string) {
                                b.del(src);
                                b.set(dst, v);
                            }
                        }
                        LabelFmt::Template { dst, tmpl } => {
                            let snap = snapshot.get_or_insert_with(|| {
                                let mut m: BTreeMap<String, String> =
                                    b.labels.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
                                if let Some(e) = &b.err {
                                    m.insert(ERROR.into(), e.clone());
                                }
                                if let Some(e) = &b.err_details {
                                    m.insert(ERROR_DETAILS.into(), e.clone());
                                }
                                m
                            });
                            let get = |n: &str| snap.get(n).cloned();
                            match tmpl.execute(&Ctx { labels: &get, line: &line, ts_ns }) {
                                Ok(v) => b.set(dst, v),
                                Err(e) => b.set_err("TemplateFormatErr", Some(e)),
                            }
                        }
                    }
                }
            }
            Stage::Drop(items) => {
                for it in items {
                    match it {
                        NamedMatcher::Name(n) => b.del(n),
                        NamedMatcher::Matcher(m) => {
                            if b.get(&m.name).is_some_and(|v| m.matches(v)) {
                                b.del(&m.name);
                            }
                        }
                    }
                }
            }
            Stage::Keep(items) => {
                let names: Vec<String> = b.labels.keys().cloned().collect();
                for n in names {
                    let keep = items.iter().any(|it| match it {
                        NamedMatcher::Name(k) => *k == n,
                        NamedMatcher::Matcher(m) => m.name == n && b.get(&n).is_some_and(|v| m.matches(v)),
                    });
                    if !keep {
                        b.del(&n);
                    }
                }
            }
            Stage::Decolorize => {
                if let std::borrow::Cow::Owned(s) = ANSI.replace_all(&line, "") {
                    line = std::borrow::Cow::Owned(s);
                }
            }
        }
    }
    Some(line.into_owned())
}

static ANSI: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(
        "[\u{001B}\u{009B}][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z\\d]*(?:;[a-zA-Z\\d]*)*)?\u{0007})|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PRZcf-ntqry=><~]))",
    )
    .expect("static regex")
});

pub(crate) fn line_filter(f: &LineFilter, line: &str) -> bool {
    let hit = match &f.value {
        LineFilterValue::Text(t) => line.contains(t.as_str()),
        LineFilterValue::Regex(_, re) => re.is_match(line),
        LineFilterValue::Ip(m) => m.line_has(line),
    };
    match f.op {
        LineFilterOp::Contains | LineFilterOp::Match => hit,
        LineFilterOp::NotContains | LineFilterOp::NotMatch => !hit,
    }
}

pub(crate) fn label_filter(f: &LabelFilter, b: &mut Builder<'_>) -> bool {
    match f {
        LabelFilter::Matcher(m) => m.matches(b.get(&m.name).unwrap_or("")),
        LabelFilter::Number(name, op, want) => numeric(b, name, *op, *want, parse_float),
        LabelFilter::Duration(name, op, want) => numeric(b, name, *op, *want, |s| parse_duration(s, false)),
        LabelFilter::Bytes(name, op, want) => numeric(b, name, *op, *want, parse_bytes),
        LabelFilter::And(l, r) => {
            let lok = label_filter(l, b);
            let rok = label_filter(r, b);
            lok && rok
        }
        LabelFilter::Or(l, r) => label_filter(l, b) || label_filter(r, b),
        LabelFilter::Ip(name, eq, m) => {
            let hit = b.get(name).is_some_and(|v| m.value_is(v));
            hit == *eq
        }
    }
}

fn numeric(b: &mut Builder<'_>, name: &str, op: CmpOp, want: f64, conv: impl Fn(&str) -> Result<f64, String>) -> bool {
    if b.err.is_some() {
        return true;
    }
    let Some(v) = b.get(name) else {
        return false;
    };
    match conv(v) {
        Ok(x) => op.apply(x, want),
        Err(e) => {
            b.set_err("LabelFilterErr", Some(e));
            true
        }
    }
}

/// Loki's label-name sanitizer for parsed keys.
pub(crate) fn sanitize_key(key: &str) -> String {
    let key = key.trim();
    let mut out = String::with_capacity(key.len() + 1);
    if key.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    out
}

// ---- JSON ----------------------------------------------------------------------------------

const JSON_ERR: &str = "JSONParserErr";

/// A raw JSON value as jsonparser sees it.
enum Raw<'a> {
    Str(&'a str),
    Other(&'a str),
    Object(&'a str),
    Array(&'a str),
}

struct Json<'a> {
    s: &'a str,
    i: usize,
}

const E_OBJECT: &str = "Value looks like object, but can't find closing '}' symbol";
const E_STRING: &str = "Value is string, but can't find closing '\"' symbol";
const E_ARRAY: &str = "Value is array, but can't find closing ']' symbol";
const E_VALUE: &str = "Value looks like Number/Boolean/None, but can't find its end: ',' or '}' symbol";
const E_UNKNOWN: &str = "Unknown value type";

impl<'a> Json<'a> {
    fn ws(&mut self) {
        let b = self.s.as_bytes();
        while self.i < b.len() && matches!(b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn string_end(&self, from: usize) -> Option<usize> {
        let b = self.s.as_bytes();
        let mut j = from + 1;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'"' => return Some(j),
                _ => j += 1,
            }
        }
        None
    }

    fn value(&mut self) -> Result<Raw<'a>, &'static str> {
        self.ws();
        let b = self.s.as_bytes();
        let start = self.i;
        match b.get(start) {
            Some(b'"') => {
                let end = self.string_end(start).ok_or(E_STRING)?;
                self.i = end + 1;
                Ok(Raw::Str(&self.s[start + 1..end]))
            }
            Some(b'{') | Some(b'[') => {
                let (open, close) = if b[start] == b'{' { (b'{', b'}') } else { (b'[', b']') };
                let mut depth = 0;
                let mut j = start;
                while j < b.len() {
                    match b[j] {
                        b'"' => {
                            j = self.string_end(j).ok_or(E_STRING)?;
                        }
                        c if c == open => depth += 1,
                        c if c == close => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= b.len() {
                    return Err(if open == b'{' { E_OBJECT } else { E_ARRAY });
                }
                self.i = j + 1;
                let raw = &self.s[start..=j];
                Ok(if open == b'{' { Raw::Object(raw) } else { Raw::Array(raw) })
            }
            Some(c) if c.is_ascii_digit() || matches!(c, b'-' | b't' | b'f' | b'n') => {
                let mut j = start;
                while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\n' | b'\t' | b'\r') {
                    j += 1;
                }
                if j >= b.len() {
                    return Err(E_VALUE);
                }
                self.i = j;
                Ok(Raw::Other(&self.s[start..j]))
            }
            _ => Err(E_UNKNOWN),
        }
    }

    /// Iterates the members of the object at the cursor.
    fn each(&mut self, f: &mut dyn FnMut(&str, Raw<'a>)) -> Result<(), &'static str> {
        self.ws();
        let b = self.s.as_bytes();
        if b.get(self.i) != Some(&b'{') {
            return Err(E_OBJECT);
        }
        self.i += 1;
        loop {
            self.ws();
            match b.get(self.i) {
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'"') => {}
                _ => return Err(E_OBJECT),
            }
            let end = self.string_end(self.i).ok_or(E_OBJECT)?;
            let key = unescape(&self.s[self.i + 1..end]);
            self.i = end + 1;
            self.ws();
            if b.get(self.i) != Some(&b':') {
                return Err(E_OBJECT);
            }
            self.i += 1;
            let v = self.value()?;
            f(&key, v);
            self.ws();
            match b.get(self.i) {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(E_OBJECT),
            }
        }
    }
}

/// A JSON string's value; like Loki, an undecodable string or one holding U+FFFD is empty.
fn unescape(s: &str) -> String {
    let v = if s.contains('\\') {
        serde_json::from_str::<String>(&format!("\"{s}\"")).unwrap_or_default()
    } else {
        s.to_string()
    };
    if v.contains('\u{FFFD}') { String::new() } else { v }
}

fn json_all(line: &str, b: &mut Builder<'_>) {
    let mut found: Vec<(String, String)> = Vec::new();
    let r = walk(line, "", &mut found);
    for (k, v) in found {
        b.set_parsed(k, v);
    }
    if let Err(e) = r {
        b.set_err(JSON_ERR, Some(e.to_string()));
    }
}

/// Nesting depth up to which `json` flattens objects (deeper ones are skipped), so that a hostile
/// line cannot exhaust the stack.
const MAX_JSON_DEPTH: usize = 64;

fn walk(obj: &str, prefix: &str, out: &mut Vec<(String, String)>) -> Result<(), &'static str> {
    walk_depth(obj, prefix, out, 0)
}

fn walk_depth(obj: &str, prefix: &str, out: &mut Vec<(String, String)>, depth: usize) -> Result<(), &'static str> {
    let mut p = Json { s: obj, i: 0 };
    let mut nested: Vec<(String, &str)> = Vec::new();
    let mut err = None;
    p.each(&mut |k, v| {
        let key = if prefix.is_empty() { sanitize_key(k) } else { format!("{prefix}_{}", sanitize_key_inner(k)) };
        match v {
            Raw::Str(s) => out.push((key, unescape(s))),
            // Loki's json parser skips nulls and arrays.
            Raw::Other("null") => {}
            Raw::Other(s) => out.push((key, s.to_string())),
            Raw::Object(o) => nested.push((key, o)),
            Raw::Array(_) => {}
        }
    })?;
    if depth >= MAX_JSON_DEPTH {
        return Ok(());
    }
    for (k, o) in nested {
        if let Err(e) = walk_depth(o, &k, out, depth + 1) {
            err = Some(e);
        }
    }
    err.map_or(Ok(()), Err)
}

fn sanitize_key_inner(key: &str) -> String {
    key.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

/// Splits a json parameter expression (`a.b`, `a["b"]`, `a[0]`) into path parts.
pub(crate) fn json_path(expr: &str) -> Option<Vec<PathPart>> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    let mut cur = String::new();
    while i < b.len() {
        match b[i] {
            b'.' => {
                if !cur.is_empty() {
                    out.push(PathPart::Key(std::mem::take(&mut cur)));
                }
                i += 1;
            }
            b'[' => {
                if !cur.is_empty() {
                    out.push(PathPart::Key(std::mem::take(&mut cur)));
                }
                let end = expr[i..].find(']')? + i;
                let inner = expr[i + 1..end].trim();
                if let Some(q) = inner.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
                    out.push(PathPart::Key(q.to_string()));
                } else {
                    out.push(PathPart::Index(inner.parse().ok()?));
                }
                i = end + 1;
            }
            _ => {
                let c = expr[i..].chars().next()?;
                cur.push(c);
                i += c.len_utf8();
            }
        }
    }
    if !cur.is_empty() {
        out.push(PathPart::Key(cur));
    }
    if out.is_empty() { None } else { Some(out) }
}

#[derive(Clone, Debug)]
pub(crate) enum PathPart {
    Key(String),
    Index(usize),
}

fn json_get(doc: &str, path: &[PathPart]) -> Option<String> {
    let mut cur = doc.to_string();
    for (n, part) in path.iter().enumerate() {
        let last = n + 1 == path.len();
        let mut found: Option<String> = None;
        match part {
            PathPart::Key(k) => {
                let mut p = Json { s: &cur, i: 0 };
                let mut hit = None;
                p.each(&mut |key, v| {
                    if key == k {
                        hit = Some(match v {
                            Raw::Str(s) if last => unescape(s),
                            Raw::Str(s) => format!("\"{s}\""),
                            Raw::Other(s) if last && s == "null" => String::new(),
                            Raw::Other(s) | Raw::Object(s) | Raw::Array(s) => s.to_string(),
                        });
                    }
                })
                .ok()?;
                found = hit;
            }
            PathPart::Index(idx) => {
                let t = cur.trim();
                let inner = t.strip_prefix('[')?.strip_suffix(']')?;
                let mut p = Json { s: inner, i: 0 };
                let mut k = 0;
                loop {
                    p.ws();
                    if p.i >= inner.len() {
                        break;
                    }
                    let v = p.value().ok()?;
                    if k == *idx {
                        found = Some(match v {
                            Raw::Str(s) if last => unescape(s),
                            Raw::Str(s) => format!("\"{s}\""),
                            Raw::Other(s) | Raw::Object(s) | Raw::Array(s) => s.to_string(),
                        });
                        break;
                    }
                    k += 1;
                    p.ws();
                    if inner.as_bytes().get(p.i) == Some(&b',') {
                        p.i += 1;
                    } else {
                        break;
                    }
                }
            }
        }
        cur = found?;
    }
    Some(cur)
}

fn json_params(line: &str, params: &[(String, String)], b: &mut Builder<'_>) {
    if line.is_empty() {
        return;
    }
    if !matches!(line.as_bytes()[0], b'{' | b'[' | b'"') {
        b.set_err(JSON_ERR, None);
        return;
    }
    for (name, expr) in params {
        match json_path(expr).and_then(|p| json_get(line, &p)) {
            Some(v) => b.set_parsed(name.clone(), v),
            // A missing value is an empty label, unless a stream label has that name.
            None if b.get(name).is_none() => {
                b.labels.insert(name.clone(), (String::new(), Cat::Parsed));
            }
            None => {}
        }
    }
}

/// `unpack`: string members become labels and `_entry` the line — only when the object holds an
/// `_entry` (a packed entry), as Loki does.
fn unpack(line: &str, b: &mut Builder<'_>) -> Option<String> {
    if line.is_empty() {
        return None;
    }
    if !line.starts_with('{') {
        b.set_err(JSON_ERR, Some("expecting json object(6), but it is not".into()));
        return None;
    }
    let mut entry = None;
    let mut found = Vec::new();
    let r = Json { s: line, i: 0 }.each(&mut |k, v| {
        if let Raw::Str(s) = v {
            if k == "_entry" {
                entry = Some(unescape(s));
            } else {
                let name = if b.base.get(k).is_some() { format!("{k}_extracted") } else { k.to_string() };
                found.push((sanitize_key(&name), unescape(s)));
            }
        }
    });
    if let Err(e) = r {
        b.set_err(JSON_ERR, Some(e.to_string()));
        return None;
    }
    if entry.is_some() {
        for (k, v) in found {
            b.labels.insert(k, (v, Cat::Parsed));
        }
    }
    entry
}

// ---- logfmt --------------------------------------------------------------------------------

/// Key/value pairs of a logfmt line, leniently: bare words are keys without values, garbage
/// (e.g. a quoted string where a key should be) is skipped. `Err` carries what strict mode
/// reports.
fn logfmt_pairs(line: &str) -> (Vec<(String, String)>, Option<String>) {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut err = None;
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] <= b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if b[i] == b'"' || b[i] == b'=' {
            if err.is_none() {
                err = Some(format!("logfmt syntax error at pos {} : unexpected '{}'", i + 1, b[i] as char));
            }
            // Skip the garbage token.
            if b[i] == b'"' {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                i = j + 1;
            } else {
                while i < b.len() && b[i] > b' ' {
                    i += 1;
                }
            }
            continue;
        }
        let ks = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        let key = &line[ks..i];
        if i < b.len() && b[i] == b'"' {
            if err.is_none() {
                err = Some(format!("logfmt syntax error at pos {} : unexpected '\"'", i + 1));
            }
            while i < b.len() && b[i] > b' ' {
                i += 1;
            }
            continue;
        }
        if i >= b.len() || b[i] != b'=' {
            out.push((key.to_string(), String::new()));
            continue;
        }
        i += 1;
        if i < b.len() && b[i] == b'"' {
            let vs = i;
            let mut j = i + 1;
            let mut closed = false;
            while j < b.len() {
                if b[j] == b'\\' {
                    j += 2;
                    continue;
                }
                if b[j] == b'"' {
                    closed = true;
                    break;
                }
                j += 1;
            }
            if !closed {
                if err.is_none() {
                    err = Some(format!("logfmt syntax error at pos {} : unterminated quoted value", b.len() + 1));
                }
                break;
            }
            let raw = &line[vs..=j];
            let v = super::lexer::lex_quoted(raw).map(|(s, _)| s).unwrap_or_else(|| line[vs + 1..j].to_string());
            out.push((key.to_string(), v));
            i = j + 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] > b' ' {
                if (b[i] == b'"' || b[i] == b'=') && err.is_none() {
                    err = Some(format!("logfmt syntax error at pos {} : unexpected '{}'", i + 1, b[i] as char));
                }
                i += 1;
            }
            out.push((key.to_string(), line[vs..i].to_string()));
        }
    }
    (out, err)
}

fn logfmt(line: &str, strict: bool, keep_empty: bool, params: &[(String, String)], b: &mut Builder<'_>) {
    let (pairs, err) = logfmt_pairs(line);
    if strict && let Some(e) = err {
        b.set_err("LogfmtParserErr", Some(e));
        return;
    }
    if !params.is_empty() {
        for (name, key) in params {
            match pairs.iter().rev().find(|(k, _)| k == key) {
                Some((_, v)) => b.set_parsed(name.clone(), v.clone()),
                // A missing key is an empty label, unless a stream label has that name.
                None if b.base.get(name).is_none() => {
                    b.labels.insert(name.clone(), (String::new(), Cat::Parsed));
                }
                None => {}
            }
        }
        return;
    }
    for (k, v) in pairs {
        let key = sanitize_key(&k);
        if key.is_empty() || (v.is_empty() && !keep_empty) {
            continue;
        }
        b.set_parsed(key, v);
    }
}

// ---- pattern -------------------------------------------------------------------------------

/// A compiled `pattern` expression: literals and `<name>` captures (`<_>` unnamed).
#[derive(Clone, Debug)]
pub struct Pattern {
    parts: Vec<PatPart>,
}

#[derive(Clone, Debug)]
enum PatPart {
    Lit(String),
    Cap(Option<String>),
}

impl Pattern {
    /// Parses a pattern; errors in Loki's words.
    pub fn parse(src: &str) -> Result<Pattern, String> {
        let mut parts: Vec<PatPart> = Vec::new();
        let mut rest = src;
        let mut lit = String::new();
        while !rest.is_empty() {
            if rest.starts_with('<')
                && let Some(end) = rest.find('>')
            {
                let name = &rest[1..end];
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.as_bytes()[0].is_ascii_digit();
                if valid {
                    if !lit.is_empty() {
                        parts.push(PatPart::Lit(std::mem::take(&mut lit)));
                    }
                    if matches!(parts.last(), Some(PatPart::Cap(_))) {
                        return Err("found consecutive capture: syntax error".into());
                    }
                    parts.push(PatPart::Cap(if name == "_" { None } else { Some(name.to_string()) }));
                    rest = &rest[end + 1..];
                    continue;
                }
            }
            let c = rest.chars().next().unwrap_or(' ');
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            parts.push(PatPart::Lit(lit));
        }
        let named: Vec<&String> =
            parts.iter().filter_map(|p| if let PatPart::Cap(Some(n)) = p { Some(n) } else { None }).collect();
        if named.is_empty() {
            return Err("at least one capture is required".into());
        }
        for (i, n) in named.iter().enumerate() {
            if named[..i].contains(n) {
                return Err(format!("duplicate capture name ({n}) found"));
            }
        }
        Ok(Pattern { parts })
    }

    /// The named captures of `line`, or `None` when it does not match.
    pub(crate) fn matches<'a>(&'a self, line: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
        if line.is_empty() {
            return None;
        }
        let mut parts = &self.parts[..];
        let mut rest = line;
        let mut out = Vec::new();
        if let Some(PatPart::Lit(l)) = parts.first() {
            rest = rest.strip_prefix(l.as_str())?;
            parts = &parts[1..];
        }
        if parts.is_empty() {
            return None;
        }
        while !parts.is_empty() {
            let PatPart::Cap(name) = &parts[0] else {
                return Some(out);
            };
            if parts.len() == 1 {
                if let Some(n) = name {
                    out.push((n.as_str(), rest));
                }
                return Some(out);
            }
            let PatPart::Lit(l) = &parts[1] else {
                return Some(out);
            };
            parts = &parts[2..];
            match rest.find(l.as_str()) {
                None => {
                    if let Some(n) = name {
                        out.push((n.as_str(), rest));
                    }
                    return Some(out);
                }
                Some(i) => {
                    if let Some(n) = name {
                        out.push((n.as_str(), &rest[..i]));
                    }
                    rest = &rest[i + l.len()..];
                }
            }
        }
        Some(out)
    }
}

// ---- ip ------------------------------------------------------------------------------------

/// The address set of `ip("...")`: one address, a CIDR or a range `a-b`.
#[derive(Clone, Debug)]
pub struct IpMatcher {
    lo: IpAddr,
    hi: IpAddr,
}

fn ip_key(ip: IpAddr) -> (u8, u128) {
    match ip {
        IpAddr::V4(v) => (4, u128::from(u32::from(v))),
        IpAddr::V6(v) => (6, u128::from(v)),
    }
}

impl IpMatcher {
    /// Parses the pattern; errors in Loki's words.
    pub fn parse(p: &str) -> Result<IpMatcher, String> {
        let p = p.trim();
        let bad = || format!("ip: invalid pattern: {p}");
        if let Some((a, bits)) = p.split_once('/') {
            let ip: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let bits: u32 = bits.trim().parse().map_err(|_| bad())?;
            let (kind, v) = ip_key(ip);
            let width = if kind == 4 { 32 } else { 128 };
            if bits > width {
                return Err(bad());
            }
            let host = if bits == width { 0 } else { (1u128 << (width - bits)) - 1 };
            let lo = v & !host;
            let hi = lo | host;
            let mk =
                |x: u128| -> IpAddr { if kind == 4 { IpAddr::V4((x as u32).into()) } else { IpAddr::V6(x.into()) } };
            return Ok(IpMatcher { lo: mk(lo), hi: mk(hi) });
        }
        if let Some((a, b)) = p.split_once('-') {
            let lo: IpAddr = a.trim().parse().map_err(|_| bad())?;
            let hi: IpAddr = b.trim().parse().map_err(|_| bad())?;
            if lo.is_ipv4() != hi.is_ipv4() {
                return Err(bad());
            }
            return Ok(IpMatcher { lo, hi });
        }
        let ip: IpAddr = p.parse().map_err(|_| bad())?;
        Ok(IpMatcher { lo: ip, hi: ip })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (k, v) = ip_key(ip);
        let (kl, lo) = ip_key(self.lo);
        let (_, hi) = ip_key(self.hi);
        k == kl && lo <= v && v <= hi
    }

    /// True when the label value is an address in the set.
    pub(crate) fn value_is(&self, v: &str) -> bool {
        v.trim().parse::<IpAddr>().is_ok_and(|ip| self.contains(ip))
    }

    /// True when the line holds an address in the set.
    pub(crate) fn line_has(&self, line: &str) -> bool {
        let b = line.as_bytes();
        let is_ip_char = |c: u8| c.is_ascii_hexdigit() || c == b'.' || c == b':';
        let mut i = 0;
        while i < b.len() {
            if !is_ip_char(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && is_ip_char(b[i]) {
                i += 1;
            }
            let tok = line[start..i].trim_matches('.').trim_end_matches(':');
            if let Ok(ip) = tok.parse::<IpAddr>()
                && self.contains(ip)
            {
                return true;
            }
        }
        false
    }
}

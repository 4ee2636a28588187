//! Running a log pipeline over one entry: line filters, parsers, label filters, formatting,
//! `drop`/`keep`, with Loki's label builder rules:
//! - a parsed label whose name is a stream label gets the suffix `_extracted`;
//! - errors go to `__error__` / `__error_details__`; after an error, only string label filters
//!   can still drop the entry (numeric ones let it through);
//! - labels may hold empty values (a parameter that found nothing), which are returned as such.

use std::borrow::Cow;
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

/// What a look at an entry without its label set tells about [`run`]'s verdict.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Unknown,
}

/// The outcome of [`light_run`].
#[derive(Debug, PartialEq)]
pub(crate) enum Light {
    /// [`run`] filters the entry out.
    Drop,
    /// [`run`] keeps the entry unchanged (the line as it was, no error) and its labels hold these
    /// values for the wanted names (`None`: no such label).
    Keep(Vec<Option<String>>),
    /// Only [`run`] can tell.
    Unknown,
}

/// False only when [`run`] would certainly filter the entry out; see [`light_run`].
pub(crate) fn may_pass(stages: &[Stage], line: &str, stream: &Labels, meta: &dyn Fn(&str) -> Option<String>) -> bool {
    light_run(stages, line, stream, meta, &[]) != Light::Drop
}

/// [`run`]'s verdict where it can be reached without building the entry's label set: pipelines of
/// line filters, label filters and at most one `json` or `logfmt` stage without parameters, the
/// parser reading (in one pass over the line, allocating nothing else) only the labels that later
/// filters and `wanted` name. Anything it cannot settle (a parse or conversion error, a stage that
/// rewrites the line or the labels) is `Unknown`, for `run` to decide. `meta` gives a
/// structured-metadata label by name as the entry's label builder would hold it.
pub(crate) fn light_run(
    stages: &[Stage],
    line: &str,
    stream: &Labels,
    meta: &dyn Fn(&str) -> Option<String>,
    wanted: &[&str],
) -> Light {
    // Parsed values of the names the label filters and the caller ask for.
    let mut names: Vec<&str> = Vec::new();
    let mut vals: Vec<Option<String>> = Vec::new();
    let mut parsed = false;
    for (i, st) in stages.iter().enumerate() {
        match st {
            Stage::LineFilter(f) => {
                if !line_filter(f, line) {
                    return Light::Drop;
                }
            }
            Stage::LabelFilter(f) => {
                let view = View { names: &names, vals: &vals, stream, meta };
                match light_filter(f, &view) {
                    Verdict::Pass => {}
                    Verdict::Drop => return Light::Drop,
                    Verdict::Unknown => return Light::Unknown,
                }
            }
            Stage::Json(params) if params.is_empty() && !parsed => {
                parsed = true;
                let Some(slots) = parser_slots(&stages[i + 1..], wanted) else { return Light::Unknown };
                (names, vals) = slots;
                if walk(line, &mut |k, v| record(&names, &mut vals, stream, k, v)).is_err() {
                    return Light::Unknown;
                }
            }
            Stage::Logfmt { strict, keep_empty, params } if params.is_empty() && !parsed => {
                parsed = true;
                let Some(slots) = parser_slots(&stages[i + 1..], wanted) else { return Light::Unknown };
                (names, vals) = slots;
                let mut key = String::new();
                let err = logfmt_each(line, &mut |k, v| {
                    key.clear();
                    push_sanitized(&mut key, k, true);
                    if !key.is_empty() && (*keep_empty || !v.is_empty()) {
                        record(&names, &mut vals, stream, &key, v);
                    }
                });
                if *strict && err.is_some() {
                    return Light::Unknown;
                }
            }
            _ => return Light::Unknown,
        }
    }
    let view = View { names: &names, vals: &vals, stream, meta };
    Light::Keep(wanted.iter().map(|n| view.get(n).map(Cow::into_owned)).collect())
}

/// The names a parser stage followed by `rest` must read (those of the later label filters, then
/// `wanted`) with an empty value slot each; `None` when there are none (nothing to settle).
fn parser_slots<'a>(rest: &'a [Stage], wanted: &[&'a str]) -> Option<(Vec<&'a str>, Vec<Option<String>>)> {
    let mut names = later_filter_names(rest);
    names.extend_from_slice(wanted);
    (!names.is_empty()).then(|| {
        let vals = vec![None; names.len()];
        (names, vals)
    })
}

/// Names read by the label filters that follow a parser stage (up to the first stage that is
/// neither a label nor a line filter).
fn later_filter_names(stages: &[Stage]) -> Vec<&str> {
    let mut names = Vec::new();
    for st in stages {
        match st {
            Stage::LabelFilter(f) => filter_names(f, &mut names),
            Stage::LineFilter(_) => {}
            _ => break,
        }
    }
    names
}

/// Notes a parsed label `k` = `v` for the wanted `names`; a name that is a stream label is set as
/// `<name>_extracted`, and a later value replaces an earlier one, as in the label builder.
fn record(names: &[&str], vals: &mut [Option<String>], stream: &Labels, k: &str, v: Cow<'_, str>) {
    // Only a name that begins with `k` can take its value: `k` itself, or `k_extracted` when a
    // stream label is called `k`. The stream labels are looked at only then (most keys of a line
    // are no name at all).
    let mut renamed = None;
    for (j, n) in names.iter().enumerate() {
        let Some(rest) = n.strip_prefix(k) else { continue };
        let hit = if *renamed.get_or_insert_with(|| stream.get(k).is_some()) {
            rest == "_extracted"
        } else {
            rest.is_empty()
        };
        if hit {
            vals[j] = Some(v.to_string());
        }
    }
}

/// An entry's labels as [`light_run`] sees them: the `json` values of the names filters read, then
/// metadata, then stream labels (the order in which a label builder would override them).
struct View<'a> {
    names: &'a [&'a str],
    vals: &'a [Option<String>],
    stream: &'a Labels,
    meta: &'a dyn Fn(&str) -> Option<String>,
}

impl View<'_> {
    fn get(&self, n: &str) -> Option<Cow<'_, str>> {
        if n == ERROR || n == ERROR_DETAILS {
            return None;
        }
        if let Some(Some(v)) = self.names.iter().position(|x| *x == n).map(|j| &self.vals[j]) {
            return Some(Cow::Borrowed(v.as_str()));
        }
        if let Some(v) = (self.meta)(n) {
            return Some(Cow::Owned(v));
        }
        self.stream.get(n).map(Cow::Borrowed)
    }
}

/// The label names `f` reads.
fn filter_names<'a>(f: &'a LabelFilter, out: &mut Vec<&'a str>) {
    match f {
        LabelFilter::Matcher(m) => out.push(&m.name),
        LabelFilter::Number(n, ..)
        | LabelFilter::Duration(n, ..)
        | LabelFilter::Bytes(n, ..)
        | LabelFilter::Ip(n, ..) => out.push(n),
        LabelFilter::And(l, r) | LabelFilter::Or(l, r) => {
            filter_names(l, out);
            filter_names(r, out);
        }
    }
}

/// [`label_filter`] on an entry without errors whose labels `view` holds; `Unknown` where the
/// filter would set an error (its verdict then depends on what follows).
fn light_filter(f: &LabelFilter, view: &View<'_>) -> Verdict {
    let get = |n: &str| view.get(n);
    let verdict = |ok: bool| if ok { Verdict::Pass } else { Verdict::Drop };
    let numeric = |name: &str, op: CmpOp, want: f64, conv: &dyn Fn(&str) -> Result<f64, String>| match get(name) {
        None => Verdict::Drop,
        Some(v) => match conv(&v) {
            Ok(x) => verdict(op.apply(x, want)),
            Err(_) => Verdict::Unknown,
        },
    };
    match f {
        LabelFilter::Matcher(m) => verdict(m.matches(get(&m.name).as_deref().unwrap_or(""))),
        LabelFilter::Number(name, op, want) => numeric(name, *op, *want, &parse_float),
        LabelFilter::Duration(name, op, want) => numeric(name, *op, *want, &|s| parse_duration(s, false)),
        LabelFilter::Bytes(name, op, want) => numeric(name, *op, *want, &parse_bytes),
        LabelFilter::And(l, r) => match (light_filter(l, view), light_filter(r, view)) {
            (Verdict::Unknown, _) | (_, Verdict::Unknown) => Verdict::Unknown,
            (a, b) => verdict(a == Verdict::Pass && b == Verdict::Pass),
        },
        LabelFilter::Or(l, r) => match light_filter(l, view) {
            Verdict::Drop => light_filter(r, view),
            v => v,
        },
        LabelFilter::Ip(name, eq, m) => verdict(get(name).is_some_and(|v| m.value_is(&v)) == *eq),
    }
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
    let mut out = String::with_capacity(key.len() + 1);
    push_sanitized(&mut out, key, true);
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
            let key = unescape_cow(&self.s[self.i + 1..end]);
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
    unescape_cow(s).into_owned()
}

/// [`unescape`], borrowing `s` when it holds no escape.
fn unescape_cow(s: &str) -> Cow<'_, str> {
    let v = if s.contains('\\') {
        Cow::Owned(serde_json::from_str::<String>(&format!("\"{s}\"")).unwrap_or_default())
    } else {
        Cow::Borrowed(s)
    };
    // U+FFFD is EF BF BD in UTF-8: most values have no 0xEF byte, which one `memchr` tells
    // (a multi-byte `contains` sets up a substring searcher for every value).
    if v.as_bytes().contains(&0xEF) && v.contains('\u{FFFD}') { Cow::Borrowed("") } else { v }
}

fn json_all(line: &str, b: &mut Builder<'_>) {
    let mut found: Vec<(String, String)> = Vec::new();
    let r = walk(line, &mut |k, v| found.push((k.to_string(), v.into_owned())));
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

/// Hands every label `json` (without parameters) extracts from `obj` to `sink`, as (sanitized
/// flattened name, value), in the order the labels are set: each object's scalar members, then
/// its nested objects one after the other. Nulls and arrays give nothing, as in Loki. The
/// members found before a syntax error are still handed over.
fn walk(obj: &str, sink: &mut dyn FnMut(&str, Cow<'_, str>)) -> Result<(), &'static str> {
    let mut key = String::new();
    walk_depth(obj, &mut key, sink, 0)
}

fn walk_depth(
    obj: &str,
    key: &mut String,
    sink: &mut dyn FnMut(&str, Cow<'_, str>),
    depth: usize,
) -> Result<(), &'static str> {
    let prefix_len = key.len();
    let mut p = Json { s: obj, i: 0 };
    let mut nested: Vec<(String, &str)> = Vec::new();
    let mut err = None;
    p.each(&mut |k, v| {
        key.truncate(prefix_len);
        if prefix_len == 0 {
            push_sanitized(key, k, true);
        } else {
            key.push('_');
            push_sanitized(key, k, false);
        }
        match v {
            Raw::Str(s) => sink(key, unescape_cow(s)),
            // Loki's json parser skips nulls and arrays.
            Raw::Other("null") => {}
            Raw::Other(s) => sink(key, Cow::Borrowed(s)),
            Raw::Object(o) => nested.push((key.clone(), o)),
            Raw::Array(_) => {}
        }
    })?;
    key.truncate(prefix_len);
    if depth >= MAX_JSON_DEPTH {
        return Ok(());
    }
    for (k, o) in nested {
        let mut sub = k;
        if let Err(e) = walk_depth(o, &mut sub, sink, depth + 1) {
            err = Some(e);
        }
    }
    err.map_or(Ok(()), Err)
}

/// Appends Loki's sanitized form of a parsed key: trimmed, every character but ASCII
/// alphanumerics and `_` replaced by `_`, and (for a top-level name) `_` before a leading digit.
fn push_sanitized(out: &mut String, key: &str, top: bool) {
    let key = key.trim();
    if top && key.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
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
    let mut out = Vec::new();
    let err = logfmt_each(line, &mut |k, v| out.push((k.to_string(), v.into_owned())));
    (out, err)
}

/// [`logfmt_pairs`] as a visitor: each pair in order, values borrowed where they hold no escape;
/// returns what strict mode reports.
fn logfmt_each(line: &str, out: &mut dyn FnMut(&str, Cow<'_, str>)) -> Option<String> {
    let b = line.as_bytes();
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
            out(key, Cow::Borrowed(""));
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
            let inner = &line[vs + 1..j];
            let v = if inner.contains('\\') {
                Cow::Owned(super::lexer::lex_quoted(raw).map(|(s, _)| s).unwrap_or_else(|| inner.to_string()))
            } else {
                Cow::Borrowed(inner)
            };
            out(key, v);
            i = j + 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] > b' ' {
                if (b[i] == b'"' || b[i] == b'=') && err.is_none() {
                    err = Some(format!("logfmt syntax error at pos {} : unexpected '{}'", i + 1, b[i] as char));
                }
                i += 1;
            }
            out(key, Cow::Borrowed(&line[vs..i]));
        }
    }
    err
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::ast::Expr;

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[self.below(xs.len() as u64) as usize]
        }
    }

    const KEYS: &[&str] = &["status", "app", "dur", "level", "1st", "a.b", " sp ", "status_extracted", "x", "trace_id"];
    const VALUES: &[&str] = &[
        "200",
        "503",
        "\"500\"",
        "\"5xx\"",
        "4.5",
        "\"12ms\"",
        "\"1KB\"",
        "null",
        "true",
        "[1,2]",
        "\"a\\\"b\"",
        "\"\\u00e9\"",
        "\"10.0.0.1\"",
        "-3",
        "\"\"",
    ];

    fn json_value(r: &mut Rng, depth: u32) -> String {
        if depth < 2 && r.below(5) == 0 { json_object(r, depth + 1) } else { r.pick(VALUES).to_string() }
    }

    fn json_object(r: &mut Rng, depth: u32) -> String {
        let n = r.below(5);
        let members: Vec<String> = (0..n).map(|_| format!("\"{}\":{}", r.pick(KEYS), json_value(r, depth))).collect();
        format!("{{{}}}", members.join(","))
    }

    fn logfmt_line(r: &mut Rng) -> String {
        let n = r.below(6);
        let pairs: Vec<String> = (0..n)
            .map(|_| {
                let k = r.pick(&[
                    "status",
                    "app",
                    "dur",
                    "level",
                    "1st",
                    "a.b",
                    "status_extracted",
                    "x",
                    "trace_id",
                    "=",
                    "\"q\"",
                ]);
                let v =
                    r.pick(&["503", "200", "\"5xx\"", "12ms", "1KB", "", "\"a\\\"b\"", "10.0.0.1", "\"open", "x=y"]);
                if r.below(6) == 0 { k.to_string() } else { format!("{k}={v}") }
            })
            .collect();
        pairs.join(" ")
    }

    fn line(r: &mut Rng) -> String {
        match r.below(10) {
            0 => "not json at all status=503".into(),
            2..=4 => logfmt_line(r),
            1 => {
                let mut s = json_object(r, 0);
                s.truncate(s.len() / 2);
                s
            }
            _ => json_object(r, 0),
        }
    }

    fn filter(r: &mut Rng) -> String {
        let name = r.pick(&[
            "status",
            "app",
            "dur",
            "level",
            "_1st",
            "a_b",
            "sp",
            "status_extracted",
            "x",
            "trace_id",
            "__error__",
            "a_b_status",
            "missing",
        ]);
        let f = match r.below(7) {
            0 => format!("{name} >= 500"),
            1 => format!("{name} = \"503\""),
            2 => format!("{name} != \"\""),
            3 => format!("{name} =~ \"5.*\""),
            4 => format!("{name} > 10ms"),
            5 => format!("{name} < 2KB"),
            _ => format!("{name} = ip(\"10.0.0.0/8\")"),
        };
        match r.below(4) {
            0 => format!("{f} or {}", filter(r)),
            1 => format!("{f} and {}", filter(r)),
            _ => f,
        }
    }

    fn query(r: &mut Rng) -> String {
        let mut q = String::from("{app=\"a\"}");
        for _ in 0..1 + r.below(4) {
            match r.below(6) {
                0 => q.push_str(" |= \"5\""),
                1 => q.push_str(" != \"null\""),
                2 | 3 => q.push_str(" | json"),
                4 => q.push_str(r.pick(&[" | logfmt", " | logfmt --strict", " | logfmt --keep-empty"])),
                _ => {}
            }
            q.push_str(&format!(" | {}", filter(r)));
        }
        q
    }

    /// `light_run` never turns away an entry that `run` keeps, and what it keeps `run` keeps with
    /// the same labels, over random JSON and logfmt lines (nested, broken, escaped, keys colliding
    /// with stream labels) and random filter chains.
    #[test]
    fn light_run_agrees_with_run() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let stream = Labels::from_pairs([("app", "a"), ("status", "s")]);
        let meta_pairs: Vec<(String, String)> = vec![("trace_id".into(), "abc".into()), ("x".into(), "503".into())];
        let meta = |n: &str| meta_pairs.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (mut dropped, mut kept) = (0, 0);
        for _ in 0..20_000 {
            let q = query(&mut r);
            let Ok(Expr::Log(l)) = crate::logql::parser::parse(&q) else { panic!("{q}") };
            let line = line(&mut r);
            let mut b = Builder::new(&stream, &meta_pairs);
            let full = run(&l.stages, 0, &line, &mut b);
            let wanted = ["status", "app", "x", "level", "__error__", "missing", "status_extracted"];
            match light_run(&l.stages, &line, &stream, &meta, &wanted) {
                Light::Drop => {
                    assert!(full.is_none(), "light_run dropped an entry run keeps: {q} on {line}");
                    dropped += 1;
                }
                Light::Keep(vals) => {
                    assert_eq!(
                        full.as_deref(),
                        Some(line.as_str()),
                        "light_run kept what run drops or rewrites: {q} on {line}"
                    );
                    let labels = b.result();
                    let got: Vec<Option<&str>> = vals.iter().map(|v| v.as_deref()).collect();
                    let want: Vec<Option<&str>> = wanted.iter().map(|n| labels.get(n)).collect();
                    assert_eq!(got, want, "labels differ: {q} on {line}");
                    kept += 1;
                }
                Light::Unknown => {}
            }
            assert_eq!(
                may_pass(&l.stages, &line, &stream, &meta),
                light_run(&l.stages, &line, &stream, &meta, &[]) != Light::Drop
            );
        }
        // The generator exercises both outcomes.
        assert!(dropped > 1000 && kept > 100, "dropped {dropped}, kept {kept}");
    }
}

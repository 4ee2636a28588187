//! Runs the promqltest-format scripts in `testdata/promql/*.test` against the PromQL engine over a
//! `MemStore`.
//!
//! Script commands: `load <interval>` (series lines with expanding notation: `1+2x10`, `_`, `_x3`,
//! `stale`, `{{schema:0 sum:1 count:1 buckets:[1]}}`), `clear`, `eval instant at <t> <expr>`,
//! `eval range from <t> to <t> step <d> <expr>`, `eval_ordered ...`, `eval_fail ...` (optionally
//! followed by `expected_fail_message <text>` or `expected_fail_regexp <re>`). Expected results follow
//! an eval, one per line: `<series> <value...>` or a bare scalar. Floats compare with a relative
//! tolerance of 1e-9; NaN equals NaN.

use std::path::Path;

use query::promql::{Engine, EngineOptions, FloatHistogram, Point, QueryError, Value};
use storage::MemStore;
use storage::model::{
    BucketSpan, FloatSample, HistogramSample, Labels, MetricsBatch, NativeHistogram, STALE_NAN_BITS, TimeSeries,
    WriteBatch,
};

#[derive(Clone, Debug)]
enum Val {
    F(f64),
    H(FloatHistogram),
}

fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut chars = body.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            unit = "ms".into();
        }
        let mult = match unit.as_str() {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return Err(format!("bad duration {s:?}")),
        };
        let n: i64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
        total += n * mult;
        num.clear();
        any = true;
    }
    if !num.is_empty() {
        // A bare number is seconds.
        total += num.parse::<i64>().map_err(|_| format!("bad duration {s:?}"))? * 1000;
        any = true;
    }
    if !any {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(if neg { -total } else { total })
}

fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Ok(f64::INFINITY),
        "-Inf" | "-inf" => Ok(f64::NEG_INFINITY),
        "NaN" | "nan" => Ok(f64::NAN),
        "stale" => Ok(f64::from_bits(STALE_NAN_BITS)),
        _ => s.parse::<f64>().map_err(|_| format!("bad number {s:?}")),
    }
}

/// Splits `metric{a="b"} rest` into labels and the rest of the line.
fn parse_series(line: &str) -> Result<(Labels, &str), String> {
    let line = line.trim();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).unwrap_or(line.len());
    let name = &line[..name_end];
    if !name.is_empty() {
        pairs.push(("__name__".into(), name.into()));
    }
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let bytes: Vec<char> = rest.chars().collect();
        let mut i = 1;
        let mut consumed_bytes = 1;
        loop {
            while i < bytes.len() && (bytes[i].is_whitespace() || bytes[i] == ',') {
                consumed_bytes += bytes[i].len_utf8();
                i += 1;
            }
            if i >= bytes.len() {
                return Err(format!("unterminated labels in {line:?}"));
            }
            if bytes[i] == '}' {
                consumed_bytes += 1;
                break;
            }
            let mut lname = String::new();
            while i < bytes.len() && bytes[i] != '=' {
                lname.push(bytes[i]);
                consumed_bytes += bytes[i].len_utf8();
                i += 1;
            }
            i += 1;
            consumed_bytes += 1;
            if bytes.get(i) != Some(&'"') {
                return Err(format!("expected quote in {line:?}"));
            }
            i += 1;
            consumed_bytes += 1;
            let mut val = String::new();
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' && i + 1 < bytes.len() {
                    consumed_bytes += 1;
                    i += 1;
                    val.push(match bytes[i] {
                        'n' => '\n',
                        c => c,
                    });
                } else {
                    val.push(bytes[i]);
                }
                consumed_bytes += bytes[i].len_utf8();
                i += 1;
            }
            i += 1;
            consumed_bytes += 1;
            pairs.push((lname.trim().to_string(), val));
        }
        rest = &rest[consumed_bytes..];
    }
    Ok((Labels::from_pairs(pairs), rest.trim()))
}

/// Parses `{{schema:0 sum:5 count:4 z_bucket:1 z_bucket_w:0.001 buckets:[1 2] offset:0 n_buckets:[1] n_offset:0}}`.
fn parse_hist(s: &str) -> Result<FloatHistogram, String> {
    let inner = s.trim().trim_start_matches("{{").trim_end_matches("}}");
    let mut h = FloatHistogram::default();
    let (mut pos, mut neg, mut poff, mut noff) = (Vec::new(), Vec::new(), 0i32, 0i32);
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or_else(|| format!("bad histogram {s:?}"))?;
        let key = rest[..colon].trim();
        rest = rest[colon + 1..].trim_start();
        let (val, next) = if rest.starts_with('[') {
            let end = rest.find(']').ok_or_else(|| format!("bad histogram {s:?}"))?;
            (&rest[1..end], &rest[end + 1..])
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = next.trim_start();
        let list = || val.split_whitespace().map(parse_float).collect::<Result<Vec<f64>, String>>();
        match key {
            "schema" => h.schema = val.parse().map_err(|_| "bad schema")?,
            "sum" => h.sum = parse_float(val)?,
            "count" => h.count = parse_float(val)?,
            "z_bucket" => h.zero_count = parse_float(val)?,
            "z_bucket_w" => h.zero_threshold = parse_float(val)?,
            "buckets" => pos = list()?,
            "n_buckets" => neg = list()?,
            "offset" => poff = val.parse().map_err(|_| "bad offset")?,
            "n_offset" => noff = val.parse().map_err(|_| "bad offset")?,
            "counter_reset_hint" => {}
            _ => return Err(format!("unknown histogram field {key:?}")),
        }
    }
    if !pos.is_empty() {
        h.positive_spans = vec![BucketSpan { offset: poff, length: pos.len() as u32 }];
        h.positive_buckets = pos;
    }
    if !neg.is_empty() {
        h.negative_spans = vec![BucketSpan { offset: noff, length: neg.len() as u32 }];
        h.negative_buckets = neg;
    }
    Ok(h)
}

fn hist_add(a: &FloatHistogram, b: &FloatHistogram, sign: f64) -> FloatHistogram {
    let mut h = a.clone();
    h.count += sign * b.count;
    h.sum += sign * b.sum;
    h.zero_count += sign * b.zero_count;
    for (x, y) in h.positive_buckets.iter_mut().zip(&b.positive_buckets) {
        *x += sign * y;
    }
    for (x, y) in h.negative_buckets.iter_mut().zip(&b.negative_buckets) {
        *x += sign * y;
    }
    h
}

/// Splits a values string into tokens, keeping `{{...}}` groups whole.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            cur.push_str("{{");
            i += 2;
            continue;
        }
        if c == '}' && chars.get(i + 1) == Some(&'}') {
            depth -= 1;
            cur.push_str("}}");
            i += 2;
            continue;
        }
        if c.is_whitespace() && depth == 0 {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
        i += 1;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Expands a values string into one optional value per step.
fn expand(s: &str) -> Result<Vec<Option<Val>>, String> {
    let mut out = Vec::new();
    for tok in tokens(s) {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            let n: usize = n.parse().map_err(|_| format!("bad token {tok:?}"))?;
            out.extend(std::iter::repeat_n(None, n));
            continue;
        }
        if tok.starts_with("{{") {
            // {{a}}, {{a}}x3, {{a}}+{{b}}x3, {{a}}-{{b}}x3
            let close = tok.find("}}").ok_or("bad histogram")? + 2;
            let first = parse_hist(&tok[..close])?;
            let rest = &tok[close..];
            if rest.is_empty() {
                out.push(Some(Val::H(first)));
            } else if let Some(times) = rest.strip_prefix('x') {
                let n: usize = times.parse().map_err(|_| format!("bad token {tok:?}"))?;
                for _ in 0..=n {
                    out.push(Some(Val::H(first.clone())));
                }
            } else {
                let sign = if rest.starts_with('-') { -1.0 } else { 1.0 };
                let r = &rest[1..];
                let close2 = r.find("}}").ok_or("bad histogram")? + 2;
                let inc = parse_hist(&r[..close2])?;
                let n: usize = r[close2..].trim_start_matches('x').parse().map_err(|_| format!("bad token {tok:?}"))?;
                let mut cur = first;
                for _ in 0..=n {
                    out.push(Some(Val::H(cur.clone())));
                    cur = hist_add(&cur, &inc, sign);
                }
            }
            continue;
        }
        if let Some(xi) = tok.find('x') {
            let (head, times) = (&tok[..xi], &tok[xi + 1..]);
            let n: usize = times.parse().map_err(|_| format!("bad token {tok:?}"))?;
            // head is `a`, `a+b` or `a-b` (a may be negative).
            let split = head[1..].find(['+', '-']).map(|p| p + 1);
            let (a, b) = match split {
                Some(p) => {
                    let a = parse_float(&head[..p])?;
                    let b = parse_float(&head[p + 1..])?;
                    (a, if &head[p..p + 1] == "-" { -b } else { b })
                }
                None => (parse_float(head)?, 0.0),
            };
            for i in 0..=n {
                out.push(Some(Val::F(a + b * i as f64)));
            }
            continue;
        }
        out.push(Some(Val::F(parse_float(&tok)?)));
    }
    Ok(out)
}

fn to_native(h: &FloatHistogram) -> NativeHistogram {
    NativeHistogram {
        schema: h.schema,
        zero_threshold: h.zero_threshold,
        zero_count: h.zero_count,
        count: h.count,
        sum: h.sum,
        positive_spans: h.positive_spans.clone(),
        positive_counts: h.positive_buckets.clone(),
        negative_spans: h.negative_spans.clone(),
        negative_counts: h.negative_buckets.clone(),
        is_gauge: false,
    }
}

fn float_eq(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn val_eq(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::F(x), Val::F(y)) => float_eq(*x, *y),
        (Val::H(x), Val::H(y)) => {
            let (bx, by) = (x.api_buckets(), y.api_buckets());
            float_eq(x.count, y.count)
                && float_eq(x.sum, y.sum)
                && bx.len() == by.len()
                && bx
                    .iter()
                    .zip(&by)
                    .all(|(p, q)| p.0 == q.0 && float_eq(p.1, q.1) && float_eq(p.2, q.2) && float_eq(p.3, q.3))
        }
        _ => false,
    }
}

fn fmt_val(v: &Val) -> String {
    match v {
        Val::F(f) => fmt_f(*f),
        Val::H(h) => {
            let mut s = format!("{{{{schema:{} count:{} sum:{}", h.schema, fmt_f(h.count), fmt_f(h.sum));
            if h.zero_count != 0.0 {
                s += &format!(" z_bucket:{} z_bucket_w:{}", fmt_f(h.zero_count), fmt_f(h.zero_threshold));
            }
            s += &format!(" api_buckets:{:?}}}}}", h.api_buckets());
            s
        }
    }
}

fn fmt_f(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

fn fmt_labels(l: &Labels) -> String {
    let name = l.get("__name__").unwrap_or("");
    let rest: Vec<String> =
        l.iter().filter(|x| x.name != "__name__").map(|x| format!("{}={:?}", x.name, x.value)).collect();
    format!("{name}{{{}}}", rest.join(", "))
}

struct Eval {
    line: usize,
    expr: String,
    range: Option<(i64, i64, i64)>,
    at: i64,
    fail: bool,
    fail_msg: Option<String>,
    fail_re: Option<String>,
    ordered: bool,
    expected: Vec<(Option<Labels>, Vec<Option<Val>>)>,
}

fn actual_text(v: &Value, range: bool) -> String {
    let mut out = String::new();
    match v {
        Value::Scalar { v, .. } => out += &format!("    {}\n", fmt_f(*v)),
        Value::String { s, .. } => out += &format!("    string {s:?}\n"),
        Value::Vector(samples) => {
            for s in samples {
                let val = match &s.point {
                    Point::Float(f) => Val::F(*f),
                    Point::Histogram(h) => Val::H(h.clone()),
                };
                out += &format!("    {} {}\n", fmt_labels(&s.labels), fmt_val(&val));
            }
        }
        Value::Matrix(series) => {
            for s in series {
                let mut pts: Vec<(i64, Val)> = s.floats.iter().map(|(t, f)| (*t, Val::F(*f))).collect();
                pts.extend(s.histograms.iter().map(|(t, h)| (*t, Val::H(h.clone()))));
                pts.sort_by_key(|p| p.0);
                let vals: Vec<String> =
                    pts.iter().map(|(t, v)| if range { fmt_val(v) } else { format!("{}@{}", fmt_val(v), t) }).collect();
                out += &format!("    {} {}\n", fmt_labels(&s.labels), vals.join(" "));
            }
        }
    }
    out
}

fn check_eval(engine: &Engine, store: &MemStore, e: &Eval) -> Result<(), String> {
    use storage::read::Reader;
    let reader = store.metric_store();
    let res = match e.range {
        Some((s, en, st)) => engine.range_query(reader, &e.expr, s, en, st, None),
        None => engine.instant_query(reader, &e.expr, e.at, None),
    };
    let res = match (res, e.fail) {
        (Err(err), true) => {
            let msg = err.to_string();
            if let Some(m) = &e.fail_msg
                && &msg != m
            {
                return Err(format!("expected error {m:?}, got {msg:?}"));
            }
            if let Some(r) = &e.fail_re
                && !regex::Regex::new(r).map_err(|x| x.to_string())?.is_match(&msg)
            {
                return Err(format!("expected error matching {r:?}, got {msg:?}"));
            }
            return Ok(());
        }
        (Ok(r), true) => return Err(format!("expected an error, got:\n{}", actual_text(&r.value, e.range.is_some()))),
        (Err(err), false) => return Err(format!("unexpected error: {err} ({})", error_kind(&err))),
        (Ok(r), false) => r,
    };
    let fail = |why: String| Err(format!("{why}\nactual:\n{}", actual_text(&res.value, e.range.is_some())));
    match &res.value {
        Value::Scalar { v, .. } => {
            if e.expected.len() != 1 || e.expected[0].0.is_some() || e.expected[0].1.len() != 1 {
                return fail("expected a vector, got a scalar".into());
            }
            match &e.expected[0].1[0] {
                Some(x) if val_eq(x, &Val::F(*v)) => Ok(()),
                _ => fail("scalar mismatch".into()),
            }
        }
        Value::String { .. } => fail("strings are not compared".into()),
        Value::Vector(samples) => {
            if samples.len() != e.expected.len() {
                return fail(format!("expected {} samples, got {}", e.expected.len(), samples.len()));
            }
            for (i, (labels, vals)) in e.expected.iter().enumerate() {
                let Some(labels) = labels else { return fail("expected a scalar, got a vector".into()) };
                let want = vals.first().cloned().flatten();
                let pos = if e.ordered {
                    (samples[i].labels == *labels).then_some(i)
                } else {
                    samples.iter().position(|s| s.labels == *labels)
                };
                let Some(pos) = pos else { return fail(format!("missing series {}", fmt_labels(labels))) };
                let got = match &samples[pos].point {
                    Point::Float(f) => Val::F(*f),
                    Point::Histogram(h) => Val::H(h.clone()),
                };
                match want {
                    Some(w) if val_eq(&w, &got) => {}
                    _ => return fail(format!("value mismatch for {}", fmt_labels(labels))),
                }
            }
            Ok(())
        }
        Value::Matrix(series) => {
            let Some((start, _, step)) = e.range else {
                // A range vector at an instant: expected values are the series' points in time order.
                if series.len() != e.expected.len() {
                    return fail(format!("expected {} series, got {}", e.expected.len(), series.len()));
                }
                for (labels, vals) in &e.expected {
                    let Some(s) = series.iter().find(|s| Some(&s.labels) == labels.as_ref()) else {
                        return fail("missing series".into());
                    };
                    let mut got: Vec<(i64, Val)> = s.floats.iter().map(|(t, f)| (*t, Val::F(*f))).collect();
                    got.extend(s.histograms.iter().map(|(t, h)| (*t, Val::H(h.clone()))));
                    got.sort_by_key(|p| p.0);
                    let want: Vec<&Val> = vals.iter().flatten().collect();
                    if want.len() != got.len() || want.iter().zip(&got).any(|(a, b)| !val_eq(a, &b.1)) {
                        return fail(format!("points mismatch for {}", fmt_labels(&s.labels)));
                    }
                }
                return Ok(());
            };
            let scalar_expected = e.expected.len() == 1 && e.expected[0].0.is_none();
            if series.len() != e.expected.len() {
                return fail(format!("expected {} series, got {}", e.expected.len(), series.len()));
            }
            for (labels, vals) in &e.expected {
                let s = match labels {
                    Some(l) => series.iter().find(|s| s.labels == *l),
                    None if scalar_expected => series.first(),
                    None => None,
                };
                let Some(s) = s else {
                    return fail(format!("missing series {}", labels.as_ref().map(fmt_labels).unwrap_or_default()));
                };
                let mut want: Vec<(i64, Val)> = Vec::new();
                for (i, v) in vals.iter().enumerate() {
                    if let Some(v) = v {
                        want.push((start + step * i as i64, v.clone()));
                    }
                }
                let mut got: Vec<(i64, Val)> = s.floats.iter().map(|(t, f)| (*t, Val::F(*f))).collect();
                got.extend(s.histograms.iter().map(|(t, h)| (*t, Val::H(h.clone()))));
                got.sort_by_key(|p| p.0);
                if want.len() != got.len() || want.iter().zip(&got).any(|(a, b)| a.0 != b.0 || !val_eq(&a.1, &b.1)) {
                    return fail(format!("points mismatch for {}", fmt_labels(&s.labels)));
                }
            }
            Ok(())
        }
    }
}

fn error_kind(e: &QueryError) -> &'static str {
    e.error_type()
}

fn run_script(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("test script readable");
    let lines: Vec<&str> = text.lines().collect();
    let engine = Engine::new(EngineOptions::default());
    let mut store = MemStore::new();
    let mut failures = Vec::new();
    let mut evals = 0;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut i = 0;
    let err = |line: usize, msg: String| format!("{name}:{}: {msg}", line + 1);
    while i < lines.len() {
        let line = lines[i].trim();
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        if line == "clear" {
            store = MemStore::new();
            i += 1;
            continue;
        }
        if let Some(rest) = line.strip_prefix("load ") {
            let interval = match parse_duration(rest) {
                Ok(d) => d,
                Err(e) => {
                    failures.push(err(i, e));
                    return (evals, failures);
                }
            };
            i += 1;
            let mut batch = MetricsBatch::default();
            while i < lines.len() && lines[i].starts_with(char::is_whitespace) && !lines[i].trim().is_empty() {
                let parsed = parse_series(lines[i]).and_then(|(l, rest)| expand(rest).map(|v| (l, v)));
                match parsed {
                    Ok((labels, vals)) => {
                        let mut ts = TimeSeries { labels, ..Default::default() };
                        for (k, v) in vals.into_iter().enumerate() {
                            let t = interval * k as i64;
                            match v {
                                Some(Val::F(f)) => ts.samples.push(FloatSample { timestamp_ms: t, value: f }),
                                Some(Val::H(h)) => {
                                    ts.histograms.push(HistogramSample { timestamp_ms: t, histogram: to_native(&h) })
                                }
                                None => {}
                            }
                        }
                        batch.series.push(ts);
                    }
                    Err(e) => failures.push(err(i, e)),
                }
                i += 1;
            }
            store.apply(WriteBatch::Metrics(batch));
            continue;
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        if !matches!(cmd, "eval" | "eval_fail" | "eval_ordered") {
            failures.push(err(i, format!("unknown command {cmd:?}")));
            i += 1;
            continue;
        }
        let start_line = i;
        let parsed = (|| -> Result<Eval, String> {
            let mut e = Eval {
                line: i,
                expr: String::new(),
                range: None,
                at: 0,
                fail: cmd == "eval_fail",
                fail_msg: None,
                fail_re: None,
                ordered: cmd == "eval_ordered",
                expected: Vec::new(),
            };
            if let Some(r) = rest.strip_prefix("instant at ") {
                let (t, expr) = r.split_once(' ').ok_or("missing expression")?;
                e.at = parse_duration(t)?;
                e.expr = expr.trim().to_string();
            } else if let Some(r) = rest.strip_prefix("range from ") {
                let (s, r) = r.split_once(" to ").ok_or("missing to")?;
                let (en, r) = r.split_once(" step ").ok_or("missing step")?;
                let (st, expr) = r.split_once(' ').ok_or("missing expression")?;
                e.range = Some((parse_duration(s)?, parse_duration(en)?, parse_duration(st)?));
                e.expr = expr.trim().to_string();
            } else {
                return Err(format!("bad eval {rest:?}"));
            }
            Ok(e)
        })();
        i += 1;
        let mut e = match parsed {
            Ok(e) => e,
            Err(m) => {
                failures.push(err(start_line, m));
                continue;
            }
        };
        while i < lines.len() && lines[i].starts_with(char::is_whitespace) && !lines[i].trim().is_empty() {
            let l = lines[i].trim();
            i += 1;
            if let Some(m) = l.strip_prefix("expected_fail_message ") {
                e.fail_msg = Some(m.to_string());
                continue;
            }
            if let Some(m) = l.strip_prefix("expected_fail_regexp ") {
                e.fail_re = Some(m.to_string());
                continue;
            }
            if l.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.')
                || l == "NaN"
                || l == "Inf"
            {
                match expand(l) {
                    Ok(v) => e.expected.push((None, v)),
                    Err(m) => failures.push(err(i - 1, m)),
                }
                continue;
            }
            match parse_series(l).and_then(|(lb, rest)| expand(rest).map(|v| (lb, v))) {
                Ok((lb, v)) => e.expected.push((Some(lb), v)),
                Err(m) => failures.push(err(i - 1, m)),
            }
        }
        evals += 1;
        if let Err(m) = check_eval(&engine, &store, &e) {
            failures.push(err(e.line, format!("{}\n  {m}", e.expr)));
        }
    }
    (evals, failures)
}

#[test]
fn promql_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/promql");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/promql exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    paths.sort();
    let filter = std::env::var("PROMQL_TEST").ok();
    let mut total = 0;
    let mut failures = Vec::new();
    for p in &paths {
        if let Some(f) = &filter
            && !p.to_string_lossy().contains(f.as_str())
        {
            continue;
        }
        let (n, f) = run_script(p);
        total += n;
        failures.extend(f);
    }
    eprintln!("promql scripts: {total} eval cases in {} files", paths.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n\n"));
}

//! Data-driven LogQL tests: every `query/testdata/logql/*.test` script.
//!
//! Script format (blank lines and `#` comments between blocks are ignored):
//!
//! ```text
//! load                                   # replaces the store's content
//! {app="a", level="info"}                # a stream (its labels), then its entries:
//!   1s first line                        #   <time> <line>  (time: Go/Prometheus duration
//!   2.5s "a \"quoted\" line\twith escapes" #   or `123ns`; a line in "..." is unescaped)
//! {app="b"} meta {user="bob"}            # every entry of this stream carries this metadata
//!   3s ...
//!
//! log [start=0s] [end=far future] [limit=100] [forward|backward] [interval=1s] <query>
//!   <time> {labels} <line>               # expected entries, in answer order (flattened)
//! instant <time> <query>
//!   {labels} <value>                     # expected samples (any order; in order for sort*)
//! range <start> <end> <step> <query>
//!   {labels} <v1> <v2> ... (`_` = no sample at that step)
//! scalar <time> <query>
//!   <value>
//! error [log|instant|range ...] <query>
//!   [exact error text]                   # optional
//! ```
//!
//! A case ends at the next line that does not start with whitespace.

use std::fmt::Write as _;
use std::path::Path;

use query::logql::{Data, Engine, EngineOptions, Request, parse_selector};
use storage::model::{AnyValue, KeyValue, Labels, LogGroup, LogRecord, LogsBatch, WriteBatch};
use storage::{Direction, MatchOp, MemStore, Reader};

fn dur(s: &str) -> i64 {
    if let Some(n) = s.strip_suffix("ns")
        && let Ok(v) = n.parse::<i64>()
    {
        return v;
    }
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let v = parse_go_duration(body).unwrap_or_else(|| panic!("bad time {s:?}"));
    if neg { -v } else { v }
}

fn parse_go_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let v: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += v * mult;
    }
    Some(total.round() as i64)
}

fn labels_of(s: &str) -> Labels {
    if s == "{}" {
        return Labels::new();
    }
    let ms = parse_selector(s).unwrap_or_else(|e| panic!("bad labels {s}: {e}"));
    Labels::from_pairs_keep_empty(ms.into_iter().map(|m| {
        assert_eq!(m.op, MatchOp::Equal, "labels use =");
        (m.name, m.value)
    }))
}

/// Splits `{...} rest` at the closing brace (quotes respected).
fn split_labels(s: &str) -> (&str, &str) {
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '}' if !in_str => return (&s[..=i], s[i + 1..].trim_start()),
            _ => {}
        }
    }
    panic!("unclosed labels: {s}")
}

fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        serde_json::from_str::<String>(s).unwrap_or_else(|e| panic!("bad quoted line {s}: {e}"))
    } else {
        s.to_string()
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

fn same(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn parse_value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s}")),
    }
}

struct Case {
    line_no: usize,
    header: String,
    body: Vec<String>,
}

fn run_file(path: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).expect("read test file");
    let lines: Vec<&str> = text.lines().collect();
    let mut store = MemStore::new();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut i = 0;
    let engine = Engine::new(EngineOptions::default());
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        if t == "load" {
            store = MemStore::new();
            i += 1;
            let mut groups = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let t = l.trim();
                if t.is_empty() || t.starts_with('#') {
                    i += 1;
                    continue;
                }
                if !t.starts_with('{') {
                    break;
                }
                let (lbl, rest) = split_labels(t);
                let meta: Vec<KeyValue> = match rest.strip_prefix("meta") {
                    Some(m) => labels_of(m.trim())
                        .iter()
                        .map(|l| KeyValue::new(l.name.clone(), AnyValue::String(l.value.clone())))
                        .collect(),
                    None => Vec::new(),
                };
                i += 1;
                let mut records = Vec::new();
                while i < lines.len() && (lines[i].starts_with(' ') || lines[i].starts_with('\t')) {
                    let e = lines[i].trim_start();
                    i += 1;
                    if e.is_empty() || e.starts_with('#') {
                        continue;
                    }
                    let (ts, line) = e.split_once(' ').unwrap_or((e, ""));
                    records.push(LogRecord {
                        timestamp_ns: dur(ts),
                        body: unquote(line),
                        attributes: meta.clone(),
                        ..Default::default()
                    });
                }
                groups.push(LogGroup { stream: labels_of(lbl), records, ..Default::default() });
            }
            store.apply(WriteBatch::Logs(LogsBatch { groups }));
            continue;
        }
        let mut case = Case { line_no: i + 1, header: t.to_string(), body: Vec::new() };
        i += 1;
        while i < lines.len() && (lines[i].starts_with(' ') || lines[i].starts_with('\t')) {
            let b = lines[i].trim();
            if !b.is_empty() && !b.starts_with('#') {
                case.body.push(b.to_string());
            }
            i += 1;
        }
        cases += 1;
        if let Err(e) = run_case(&engine, &store, &case) {
            failures.push(format!("{}:{}: {}\n{}", path.display(), case.line_no, case.header, e));
        }
    }
    (cases, failures)
}

fn request(kind: &str, rest: &str) -> (Request, String) {
    let mut req =
        Request { limit: 1000, direction: Direction::Backward, start_ns: 0, end_ns: 1 << 62, ..Default::default() };
    let mut rest = rest.trim();
    match kind {
        "log" => loop {
            let (w, r) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some(v) = w.strip_prefix("start=") {
                req.start_ns = dur(v);
            } else if let Some(v) = w.strip_prefix("end=") {
                req.end_ns = dur(v);
            } else if let Some(v) = w.strip_prefix("limit=") {
                req.limit = v.parse().expect("limit");
            } else if let Some(v) = w.strip_prefix("interval=") {
                req.interval_ns = dur(v);
            } else if w == "forward" {
                req.direction = Direction::Forward;
            } else if w == "backward" {
                req.direction = Direction::Backward;
            } else {
                break;
            }
            rest = r.trim_start();
        },
        "instant" | "scalar" => {
            let (t, r) = rest.split_once(' ').expect("instant <time> <query>");
            req.instant = true;
            req.end_ns = dur(t);
            req.start_ns = req.end_ns;
            rest = r;
        }
        "range" => {
            let mut it = rest.splitn(4, ' ');
            req.start_ns = dur(it.next().expect("start"));
            req.end_ns = dur(it.next().expect("end"));
            req.step_ns = dur(it.next().expect("step"));
            rest = it.next().expect("query");
        }
        _ => panic!("unknown case kind {kind}"),
    }
    req.query = rest.to_string();
    (req, rest.to_string())
}

fn run_case(engine: &Engine, store: &MemStore, case: &Case) -> Result<(), String> {
    let (kind, rest) = case.header.split_once(' ').unwrap_or((&case.header, ""));
    let reader = store.log_store();
    if kind == "error" {
        let (k2, r2) = rest.split_once(' ').unwrap_or((rest, ""));
        let (req, _) = if matches!(k2, "log" | "instant" | "range") { request(k2, r2) } else { request("log", rest) };
        return match engine.execute(reader, &req) {
            Ok(r) => Err(format!("expected an error, got {:?}", r.data)),
            Err(e) => match case.body.first() {
                Some(want) if *want != e.to_string() => Err(format!("error text\n  want: {want}\n  got:  {e}")),
                _ => Ok(()),
            },
        };
    }
    let (req, _) = request(kind, rest);
    let resp = engine.execute(reader, &req).map_err(|e| format!("error: {e}"))?;
    match (kind, resp.data) {
        ("log", Data::Streams(streams)) => {
            let mut got: Vec<(i64, String, String)> = Vec::new();
            for s in &streams {
                for e in &s.entries {
                    got.push((e.ts_ns, s.labels.to_string(), e.line.clone()));
                }
                let ts: Vec<i64> = s.entries.iter().map(|e| e.ts_ns).collect();
                let mut sorted = ts.clone();
                sorted.sort();
                if req.direction == Direction::Backward {
                    sorted.reverse();
                }
                if ts != sorted {
                    return Err(format!("stream {} not in direction order", s.labels));
                }
            }
            got.sort_by(|a, b| if req.direction == Direction::Backward { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
            let mut want = Vec::new();
            for b in &case.body {
                let (t, r) = b.split_once(' ').unwrap_or((b, ""));
                let (lbl, line) = split_labels(r);
                want.push((dur(t), labels_of(lbl).to_string(), unquote(line)));
            }
            if got != want {
                let mut msg = String::from("entries differ\n  want:\n");
                for w in &want {
                    let _ = writeln!(msg, "    {} {} {:?}", w.0, w.1, w.2);
                }
                msg.push_str("  got:\n");
                for g in &got {
                    let _ = writeln!(msg, "    {} {} {:?}", g.0, g.1, g.2);
                }
                return Err(msg);
            }
            Ok(())
        }
        ("scalar", Data::Scalar { v, .. }) => {
            let want = parse_value(case.body.first().ok_or("missing expected value")?);
            if same(v, want) { Ok(()) } else { Err(format!("scalar {v} instead of {want}")) }
        }
        ("instant", Data::Vector(vec)) => {
            let got: Vec<(String, f64)> = vec.iter().map(|s| (s.labels.to_string(), s.v)).collect();
            let want: Vec<(String, f64)> = case
                .body
                .iter()
                .map(|b| {
                    let (l, v) = split_labels(b);
                    (labels_of(l).to_string(), parse_value(v))
                })
                .collect();
            compare_samples(
                &req.query,
                got.into_iter().map(|(l, v)| (l, vec![Some(v)])).collect(),
                want.into_iter().map(|(l, v)| (l, vec![Some(v)])).collect(),
                req.query.trim_start().starts_with("sort"),
            )
        }
        ("range", Data::Matrix(m)) => {
            let steps: Vec<i64> = {
                let mut v = Vec::new();
                let mut t = req.start_ns;
                while t <= req.end_ns {
                    v.push(t.div_euclid(1_000_000) * 1_000_000);
                    t += req.step_ns;
                }
                v
            };
            let got: Vec<(String, Vec<Option<f64>>)> = m
                .iter()
                .map(|s| {
                    let vals =
                        steps.iter().map(|t| s.samples.iter().find(|(st, _)| st == t).map(|(_, v)| *v)).collect();
                    (s.labels.to_string(), vals)
                })
                .collect();
            let want = case
                .body
                .iter()
                .map(|b| {
                    let (l, vs) = split_labels(b);
                    let vals =
                        vs.split_whitespace().map(|v| if v == "_" { None } else { Some(parse_value(v)) }).collect();
                    (labels_of(l).to_string(), vals)
                })
                .collect();
            compare_samples(&req.query, got, want, false)
        }
        (k, d) => Err(format!("{k}: unexpected result type {d:?}")),
    }
}

type Series = Vec<(String, Vec<Option<f64>>)>;

fn compare_samples(_q: &str, mut got: Series, mut want: Series, ordered: bool) -> Result<(), String> {
    if !ordered {
        got.sort_by(|a, b| a.0.cmp(&b.0));
        want.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let eq = got.len() == want.len()
        && got.iter().zip(&want).all(|(g, w)| {
            g.0 == w.0
                && g.1.len() == w.1.len()
                && g.1.iter().zip(&w.1).all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => same(*a, *b),
                    (None, None) => true,
                    _ => false,
                })
        });
    if eq {
        return Ok(());
    }
    let show = |s: &Series| {
        s.iter()
            .map(|(l, v)| {
                let vals: Vec<String> = v.iter().map(|x| x.map_or("_".into(), fmt_value)).collect();
                format!("    {l} {}", vals.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Err(format!("samples differ\n  want:\n{}\n  got:\n{}", show(&want), show(&got)))
}

#[test]
fn logql_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/logql");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).expect("testdata/logql").filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "test"));
    files.sort();
    let mut total = 0;
    let mut failures = Vec::new();
    for f in &files {
        let (n, fails) = run_file(f);
        total += n;
        failures.extend(fails);
    }
    eprintln!("logql scripts: {total} cases, {} failed", failures.len());
    assert!(failures.is_empty(), "{} of {total} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
    assert!(total > 0);
}

fn small_store() -> MemStore {
    let store = MemStore::new();
    let rec =
        |t: i64, body: &str| LogRecord { timestamp_ns: t * 1_000_000_000, body: body.into(), ..Default::default() };
    store.apply(WriteBatch::Logs(LogsBatch {
        groups: vec![
            LogGroup {
                stream: Labels::from_pairs([("app", "a"), ("env", "prod")]),
                records: vec![rec(1, "GET /x"), rec(2, "POST /y"), rec(3, "GET /z")],
                ..Default::default()
            },
            LogGroup {
                stream: Labels::from_pairs([("app", "a"), ("env", "dev")]),
                records: vec![rec(2, "GET /d")],
                ..Default::default()
            },
        ],
    }));
    store
}

fn metric(query: &str) -> Request {
    Request {
        query: query.into(),
        instant: true,
        end_ns: 10_000_000_000,
        start_ns: 10_000_000_000,
        ..Default::default()
    }
}

#[test]
fn limits_are_clean_errors() {
    use query::logql::Error;
    let store = small_store();
    let reader = store.log_store();
    let e = Engine::new(EngineOptions { max_series: 1, ..Default::default() });
    let err = e.execute(reader, &metric(r#"count_over_time({app="a"}[1m])"#)).unwrap_err();
    assert_eq!(err, Error::Limit("maximum of series (1) reached for a single query".into()));
    assert!(e.execute(reader, &metric(r#"max(count_over_time({app="a"}[1m]))"#)).is_err(), "inner series count");
    assert!(e.execute(reader, &metric(r#"sum(count_over_time({app="a"}[1m]))"#)).is_ok(), "sum is pushed down");
    let e = Engine::new(EngineOptions { max_lines_scanned: 2, ..Default::default() });
    let req = Request { query: r#"{app="a"}"#.into(), end_ns: 10_000_000_000, limit: 100, ..Default::default() };
    assert!(matches!(e.execute(reader, &req), Err(Error::Limit(m)) if m.contains("max_lines_scanned")));
    let e = Engine::new(EngineOptions { timeout: std::time::Duration::ZERO, ..Default::default() });
    let req = Request {
        query: r#"count_over_time({app="a"}[1m])"#.into(),
        start_ns: 0,
        end_ns: 10_000_000_000,
        step_ns: 1_000_000_000,
        ..Default::default()
    };
    assert_eq!(e.execute(reader, &req).unwrap_err(), Error::Timeout);
    let e = Engine::new(EngineOptions { max_samples: 2, ..Default::default() });
    assert!(matches!(e.execute(reader, &metric(r#"count_over_time({app="a"}[1m])"#)), Err(Error::Limit(_))));
    // The limits hold when the filters drop every line, so that the visitor never runs: the
    // lines dropped count, and the deadline is checked at the end of the scan too.
    let none = |q: &str| Request { query: q.into(), end_ns: 10_000_000_000, limit: 100, ..Default::default() };
    let e = Engine::new(EngineOptions { max_lines_scanned: 2, ..Default::default() });
    for q in [r#"{app="a"} |= "nothing""#, r#"{app="a"} | logfmt | x="y""#] {
        assert!(matches!(e.execute(reader, &none(q)), Err(Error::Limit(m)) if m.contains("max_lines_scanned")), "{q}");
    }
    let e = Engine::new(EngineOptions { timeout: std::time::Duration::ZERO, ..Default::default() });
    for q in [r#"{app="a"} |= "nothing""#, r#"{app="a"} | logfmt | x="y""#] {
        assert_eq!(e.execute(reader, &none(q)).unwrap_err(), Error::Timeout, "{q}");
    }
    let e = Engine::new(EngineOptions { max_lines_scanned: 4, ..Default::default() });
    assert!(e.execute(reader, &none(r#"{app="a"} | logfmt | x="y""#)).is_ok(), "4 lines read, within the limit");
}

#[test]
fn stats_count_what_was_read() {
    let store = small_store();
    let req = Request {
        query: r#"{app="a", env="prod"} |= "GET""#.into(),
        end_ns: 10_000_000_000,
        limit: 100,
        ..Default::default()
    };
    let resp = Engine::default().execute(store.log_store(), &req).expect("query");
    // The prod stream's three lines are read; the store's line filter drops `POST /y`, and read
    // is read: all three count, as in Loki's `totalLinesProcessed`.
    assert_eq!(resp.stats.lines_scanned, 3, "lines the store's filters dropped count too");
    assert_eq!(resp.stats.bytes_scanned, 6 + 7 + 6);
}

/// A store that ignores the hints and hands back every record: the engine must still filter.
struct IgnoresHints<'a>(&'a dyn storage::LogsReader, std::sync::Mutex<Vec<Vec<String>>>);

impl storage::LogsReader for IgnoresHints<'_> {
    fn logs(&self, m: &[(String, String)], start: i64, end: i64) -> Vec<storage::StoredLog> {
        self.0.logs(m, start, end)
    }
    fn logs_by_trace(&self, t: storage::model::TraceId) -> Vec<storage::StoredLog> {
        self.0.logs_by_trace(t)
    }
    fn scan(&self, scan: &storage::LogScan, visit: &mut dyn FnMut(&storage::StoredLog) -> bool) {
        self.1.lock().expect("lock").push(scan.line_contains.clone());
        let mut all = scan.clone();
        all.line_contains.clear();
        self.0.scan(&all, visit);
    }
}

#[test]
fn line_hints_are_passed_and_lines_still_verified() {
    let store = small_store();
    let reader = IgnoresHints(store.log_store(), Default::default());
    let req = Request {
        query: r#"{app="a"} |= "GET" != "/z" | line_format "{{.env}}" |= "prod""#.into(),
        end_ns: 10_000_000_000,
        limit: 100,
        ..Default::default()
    };
    let resp = Engine::default().execute(&reader, &req).expect("query");
    let Data::Streams(streams) = resp.data else { panic!("streams") };
    let lines: Vec<&str> = streams.iter().flat_map(|s| s.entries.iter().map(|e| e.line.as_str())).collect();
    assert_eq!(lines, ["prod"]);
    // Only literal |= filters before the line is rewritten are hints.
    assert_eq!(*reader.1.lock().expect("lock"), vec![vec!["GET".to_string()]]);
}

#[test]
fn entries_carry_parsed_and_metadata_labels_apart() {
    let store = MemStore::new();
    store.apply(WriteBatch::Logs(LogsBatch {
        groups: vec![LogGroup {
            stream: Labels::from_pairs([("app", "a")]),
            records: vec![LogRecord {
                timestamp_ns: 1_000_000_000,
                body: "level=warn x=1".into(),
                attributes: vec![KeyValue::new("user", AnyValue::String("bob".into()))],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }));
    let req =
        Request { query: r#"{app="a"} | logfmt"#.into(), end_ns: 10_000_000_000, limit: 10, ..Default::default() };
    let Data::Streams(s) = Engine::default().execute(store.log_store(), &req).expect("query").data else { panic!() };
    assert_eq!(s[0].labels.to_string(), r#"{app="a", level="warn", user="bob", x="1"}"#);
    let e = &s[0].entries[0];
    assert_eq!(e.structured_metadata, vec![("user".to_string(), "bob".to_string())]);
    assert_eq!(e.parsed, vec![("level".to_string(), "warn".to_string()), ("x".to_string(), "1".to_string())]);
}

/// Loki 2.9 answers an instant log query with the 30 s before the time ([t - 30s, t)).
#[test]
fn instant_log_query_looks_back_30s_as_in_loki_2_9() {
    let store = small_store();
    let run = |end_ns: i64| {
        let req = Request { query: r#"{app="a"}"#.into(), instant: true, end_ns, limit: 10, ..Default::default() };
        let Data::Streams(s) = Engine::default().execute(store.log_store(), &req).expect("query").data else {
            panic!("streams")
        };
        let mut ts: Vec<i64> = s.iter().flat_map(|s| s.entries.iter().map(|e| e.ts_ns / 1_000_000_000)).collect();
        ts.sort();
        ts
    };
    assert_eq!(run(2_000_000_000), vec![1]);
    assert_eq!(run(3_000_000_000), vec![1, 2, 2]);
    assert_eq!(run(32_000_000_000), vec![2, 2, 3]);
    assert_eq!(run(40_000_000_000), Vec::<i64>::new());
}

/// Every prefix of every query in the scripts and the reference pack parses or fails cleanly (no
/// panic), and so does every query with one character removed.
#[test]
fn truncated_and_mangled_queries_never_panic() {
    let mut queries: Vec<String> = Vec::new();
    let ref_queries = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/logql-reference/queries.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ref_queries).expect("queries.json")).expect("json");
    for q in doc["queries"].as_array().expect("queries") {
        queries.push(q["query"].as_str().expect("query").to_string());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/logql");
    for f in std::fs::read_dir(dir).expect("dir").filter_map(|e| e.ok()) {
        let text = std::fs::read_to_string(f.path()).expect("read");
        for l in text.lines() {
            for kind in ["log ", "instant ", "range ", "error ", "scalar "] {
                if let Some(rest) = l.strip_prefix(kind) {
                    queries.push(rest.to_string());
                }
            }
        }
    }
    let store = small_store();
    let engine = Engine::default();
    let mut checked = 0usize;
    let mut run = |q: &str| {
        checked += 1;
        if query::logql::parse(q).is_ok() {
            // Whatever parses also evaluates without panicking, as a range and an instant query.
            let req = Request {
                query: q.to_string(),
                start_ns: 0,
                end_ns: 10_000_000_000,
                step_ns: 5_000_000_000,
                limit: 10,
                ..Default::default()
            };
            let _ = engine.execute(store.log_store(), &req);
            let _ = engine.execute(store.log_store(), &Request { instant: true, step_ns: 0, ..req });
        }
    };
    for q in &queries {
        let chars: Vec<(usize, char)> = q.char_indices().collect();
        for (i, _) in &chars {
            run(&q[..*i]);
        }
        for (i, c) in &chars {
            run(&format!("{}{}", &q[..*i], &q[i + c.len_utf8()..]));
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn label_format_keeps_categories_on_rename() {
    let store = MemStore::new();
    store.apply(WriteBatch::Logs(LogsBatch {
        groups: vec![LogGroup {
            stream: Labels::from_pairs([("app", "a")]),
            records: vec![LogRecord {
                timestamp_ns: 1_000_000_000,
                body: "x=1".into(),
                attributes: vec![KeyValue::new("user", AnyValue::String("bob".into()))],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }));
    let req = Request {
        query: r#"{app="a"} | logfmt | label_format who=user, y=x, t="{{.app}}""#.into(),
        end_ns: 10_000_000_000,
        limit: 10,
        ..Default::default()
    };
    let Data::Streams(s) = Engine::default().execute(store.log_store(), &req).expect("query").data else { panic!() };
    let e = &s[0].entries[0];
    assert_eq!(s[0].labels.to_string(), r#"{app="a", t="a", who="bob", y="1"}"#);
    assert_eq!(e.structured_metadata, vec![("who".to_string(), "bob".to_string())]);
    assert_eq!(e.parsed, vec![("t".to_string(), "a".to_string()), ("y".to_string(), "1".to_string())]);
}

/// `count_over_time`, `rate`, `bytes_over_time` and `bytes_rate` over streams with far more lines
/// than steps (the engine keeps per-cell sums then, not samples) answer exactly what counting the
/// lines of each window gives, with ranges that are and are not multiples of the step, offsets,
/// line filters, groupings, and lines on window edges.
#[test]
fn counting_aggregations_over_many_lines_count_every_window_exactly() {
    const S: i64 = 1_000_000_000;
    let store = MemStore::new();
    // (env, timestamp ns, body) of every line.
    let mut lines: Vec<(&str, i64, String)> = Vec::new();
    let mut x: u64 = 7;
    for env in ["prod", "dev", "test"] {
        let mut records = Vec::new();
        for k in 0..4000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            // Every tenth line sits exactly on a 5-s edge; the others anywhere in 0..600 s.
            let t = if k % 10 == 0 { (x % 120) as i64 * 5 * S } else { (x % (600 * S as u64)) as i64 };
            let body =
                if x.is_multiple_of(3) { format!("x {}", "y".repeat((x % 40) as usize)) } else { "GET /".to_string() };
            lines.push((env, t, body.clone()));
            records.push(LogRecord { timestamp_ns: t, body, ..Default::default() });
        }
        store.apply(WriteBatch::Logs(LogsBatch {
            groups: vec![LogGroup {
                stream: Labels::from_pairs([("app", "a"), ("env", env)]),
                records,
                ..Default::default()
            }],
        }));
    }
    let engine = Engine::new(EngineOptions::default());
    // (query, env filter → per-window value from (count, bytes, range s), grouped by env?)
    type Want = fn(u64, u64, f64) -> f64;
    let cases: [(&str, i64, i64, bool, Want); 6] = [
        (r#"count_over_time({app="a"}[50s])"#, 50, 0, false, |n, _, _| n as f64),
        (r#"rate({app="a"}[45s])"#, 45, 0, false, |n, _, r| n as f64 / r),
        (r#"bytes_over_time({app="a"}[30s] offset 20s)"#, 30, 20, false, |_, b, _| b as f64),
        (r#"bytes_rate({app="a"}[1m])"#, 60, 0, false, |_, b, r| b as f64 / r),
        (r#"sum by (env) (count_over_time({app="a"} |= "x" [50s]))"#, 50, 0, true, |n, _, _| n as f64),
        (r#"count_over_time({app="a"} |= "x" [7s])"#, 7, 0, true, |n, _, _| n as f64),
    ];
    for (query, range_s, offset_s, only_x, want) in cases {
        for (start, end, step, instant) in [(100 * S, 590 * S, 15 * S, false), (300 * S, 300 * S, 0, true)] {
            let req = Request {
                query: query.into(),
                start_ns: start,
                end_ns: end,
                step_ns: step,
                instant,
                ..Default::default()
            };
            let got: Vec<(String, Vec<(i64, f64)>)> = match engine.execute(store.log_store(), &req).unwrap().data {
                Data::Matrix(m) => {
                    m.into_iter().map(|s| (s.labels.get("env").unwrap().to_string(), s.samples)).collect()
                }
                Data::Vector(v) => {
                    v.into_iter().map(|s| (s.labels.get("env").unwrap().to_string(), vec![(s.t_ns, s.v)])).collect()
                }
                other => panic!("{query}: {other:?}"),
            };
            assert_eq!(got.len(), 3, "{query}");
            for (env, samples) in got {
                let mut expect = Vec::new();
                let mut t = start;
                while t <= end {
                    let (hi, lo) = (t - offset_s * S, t - offset_s * S - range_s * S);
                    let (mut n, mut b) = (0u64, 0u64);
                    for (e, ts, body) in &lines {
                        if *e == env && *ts > lo && *ts <= hi && (!only_x || body.contains('x')) {
                            n += 1;
                            b += body.len() as u64;
                        }
                    }
                    if n > 0 {
                        expect.push((t, want(n, b, range_s as f64)));
                    }
                    if step == 0 {
                        break;
                    }
                    t += step;
                }
                assert_eq!(samples, expect, "{query} {env} instant={instant}");
            }
        }
    }
}

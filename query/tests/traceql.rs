//! Data-driven TraceQL tests: every `testdata/traceql/*.test` script is loaded into a
//! `storage::MemStore` and its queries are checked.
//!
//! Script format (lines; `#` starts a comment line; blank lines end a block):
//!
//! ```text
//! trace t1 at=10                      # a trace starting 10 s after the base time
//!   span a name="GET /" svc=shop kind=server status=ok start=0 dur=100ms span.http.status_code=200
//!   span b parent=a name=db svc=db kind=client status=error msg="boom" start=10ms dur=20ms
//!     resource.host="h1" scope.name="lib" scope.version="1.0" instr.k=v
//!     event=exception@5ms event.exception.type="IOError" link=t2.a link.kind="follows"
//!
//! search [limit=N] [spss=N] [start=S] [end=E] [meta] [attrs] <query>
//!   t1: a b | c [count()=2]           # one line per trace (result order); spansets split by |
//!
//! error <query>                    # `\n` in the query is a line break
//!   parse error at line 1, col 8: syntax error: unexpected }
//!
//! metrics start=S end=E step=S <query>
//!   {__name__="rate"} 15:0.2 30:0     # one line per series, timestamps in s after the base time
//! ```
//!
//! Span ids and trace ids are derived from the names (`t1`, `t1.a`); values are `"strings"`,
//! integers, floats, `true`/`false` and arrays `[1,2]`. A span line may continue on following
//! lines indented deeper than `span`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use query::traceql::{self, SearchRequest};
use storage::MemStore;
use storage::model::{
    AnyValue, KeyValue, Resource, Scope, Span, SpanEvent, SpanGroup, SpanId, SpanKind, SpanLink, SpansBatch,
    StatusCode, TraceId, WriteBatch,
};
use storage::read::Reader;

/// Base time of every script: 2023-11-14T22:13:20Z.
const BASE_NS: i64 = 1_700_000_000 * 1_000_000_000;

struct Names {
    traces: Vec<String>,
    spans: Vec<(String, String)>,
}

impl Names {
    fn trace_id(&mut self, t: &str) -> TraceId {
        let i = match self.traces.iter().position(|x| x == t) {
            Some(i) => i,
            None => {
                self.traces.push(t.to_string());
                self.traces.len() - 1
            }
        };
        let mut b = [0u8; 16];
        b[0] = 0xab;
        b[8..].copy_from_slice(&((i as u64) + 1).to_be_bytes());
        TraceId(b)
    }

    fn span_id(&mut self, t: &str, s: &str) -> SpanId {
        let key = (t.to_string(), s.to_string());
        let i = match self.spans.iter().position(|x| *x == key) {
            Some(i) => i,
            None => {
                self.spans.push(key);
                self.spans.len() - 1
            }
        };
        SpanId(((i as u64) + 1).to_be_bytes())
    }

    fn trace_name(&self, id: TraceId) -> String {
        let i = u64::from_be_bytes(id.0[8..].try_into().unwrap()) as usize - 1;
        self.traces[i].clone()
    }

    fn span_name(&self, id: SpanId) -> String {
        let i = u64::from_be_bytes(id.0) as usize - 1;
        self.spans[i].1.clone()
    }
}

/// Splits on spaces outside quotes and brackets.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = false;
    let mut depth = 0;
    let mut escape = false;
    for c in line.chars() {
        if quote {
            cur.push(c);
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
            } else if c == '"' {
                quote = false;
            }
            continue;
        }
        match c {
            '"' => {
                quote = true;
                cur.push(c);
            }
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                cur.push(c);
            }
            ' ' | '\t' if depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn value(s: &str) -> AnyValue {
    if let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        return AnyValue::String(inner.replace("\\\"", "\"").replace("\\\\", "\\"));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return AnyValue::Array(inner.split(',').map(|x| value(x.trim())).collect());
    }
    match s {
        "true" => return AnyValue::Bool(true),
        "false" => return AnyValue::Bool(false),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return AnyValue::Int(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        return AnyValue::Double(f);
    }
    AnyValue::String(s.to_string())
}

fn unquote(s: &str) -> String {
    match value(s) {
        AnyValue::String(s) => s,
        other => other.to_label_string(),
    }
}

/// `100ms`, `1.5s`, `2m`, `0`, `250ns`, `3us` → ns.
fn dur(s: &str) -> i64 {
    if s == "0" {
        return 0;
    }
    let (num, mult) = if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e9)
    } else {
        panic!("bad duration {s}")
    };
    (num.parse::<f64>().unwrap_or_else(|_| panic!("bad duration {s}")) * mult).round() as i64
}

fn secs(s: &str) -> i64 {
    (s.parse::<f64>().unwrap_or_else(|_| panic!("bad seconds {s}")) * 1e9).round() as i64
}

struct PendingSpan {
    trace: String,
    span: Span,
    resource: Resource,
    scope: Scope,
}

fn build_span(
    names: &mut Names,
    trace: &str,
    trace_start: i64,
    ws: &[String],
    pending_links: &mut Vec<(usize, usize, String)>,
    idx: usize,
) -> PendingSpan {
    let sname = &ws[1];
    let mut span = Span {
        trace_id: names.trace_id(trace),
        span_id: names.span_id(trace, sname),
        name: sname.clone(),
        ..Default::default()
    };
    let mut resource = Resource::default();
    let mut scope = Scope::default();
    let mut start = 0;
    let mut d = 1_000_000;
    for w in &ws[2..] {
        let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("bad span field {w}"));
        match k {
            "parent" => span.parent_span_id = Some(names.span_id(trace, v)),
            "name" => span.name = unquote(v),
            "svc" => resource.attributes.push(KeyValue::new("service.name", AnyValue::String(unquote(v)))),
            "kind" => {
                span.kind = match v {
                    "server" => SpanKind::Server,
                    "client" => SpanKind::Client,
                    "producer" => SpanKind::Producer,
                    "consumer" => SpanKind::Consumer,
                    "internal" => SpanKind::Internal,
                    _ => SpanKind::Unspecified,
                }
            }
            "status" => {
                span.status_code = match v {
                    "ok" => StatusCode::Ok,
                    "error" => StatusCode::Error,
                    _ => StatusCode::Unset,
                }
            }
            "msg" => span.status_message = unquote(v),
            "start" => start = dur(v),
            "dur" => d = dur(v),
            "event" => {
                let (n, at) = v.split_once('@').unwrap_or((v, "0"));
                span.events.push(SpanEvent {
                    name: unquote(n),
                    time_ns: trace_start + start + dur(at),
                    ..Default::default()
                });
            }
            "link" => {
                span.links.push(SpanLink::default());
                pending_links.push((idx, span.links.len() - 1, v.to_string()));
            }
            "scope.name" => scope.name = unquote(v),
            "scope.version" => scope.version = unquote(v),
            _ => {
                let kv = |name: &str| KeyValue::new(name, value(v));
                if let Some(n) = k.strip_prefix("span.") {
                    span.attributes.push(kv(n));
                } else if let Some(n) = k.strip_prefix("resource.") {
                    resource.attributes.push(kv(n));
                } else if let Some(n) = k.strip_prefix("event.") {
                    span.events.last_mut().expect("event attribute before event=").attributes.push(kv(n));
                } else if let Some(n) = k.strip_prefix("link.") {
                    span.links.last_mut().expect("link attribute before link=").attributes.push(kv(n));
                } else if let Some(n) = k.strip_prefix("instr.") {
                    scope.attributes.push(kv(n));
                } else {
                    panic!("unknown span field {k}");
                }
            }
        }
    }
    span.start_time_ns = trace_start + start;
    span.end_time_ns = span.start_time_ns + d;
    PendingSpan { trace: trace.to_string(), span, resource, scope }
}

fn render_value(v: &AnyValue) -> String {
    match v {
        AnyValue::String(s) => format!("{s:?}"),
        AnyValue::Double(f) => fmt_f64(*f),
        other => other.to_label_string(),
    }
}

fn fmt_f64(f: f64) -> String {
    if f.is_nan() || f.is_infinite() {
        return f.to_string();
    }
    let s = format!("{f:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

struct Case {
    line: usize,
    cmd: String,
    expected: Vec<String>,
}

fn run_file(path: &std::path::Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = Names { traces: Vec::new(), spans: Vec::new() };
    let mut spans: Vec<PendingSpan> = Vec::new();
    let mut links: Vec<(usize, usize, String)> = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut cur_trace: Option<(String, i64)> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line = raw.trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("trace ") {
            let ws = words(rest);
            let at = ws.iter().find_map(|w| w.strip_prefix("at=")).map(secs).unwrap_or(0);
            names.trace_id(&ws[0]);
            cur_trace = Some((ws[0].clone(), BASE_NS + at));
            continue;
        }
        if line.starts_with("span ") {
            let indent = raw.len() - raw.trim_start().len();
            let mut full = line.to_string();
            while i < lines.len() {
                let next = lines[i];
                let ni = next.len() - next.trim_start().len();
                if next.trim().is_empty() || ni <= indent || next.trim().starts_with("span ") {
                    break;
                }
                full.push(' ');
                full.push_str(next.trim());
                i += 1;
            }
            let (t, start) = cur_trace.clone().expect("span outside a trace");
            let ws = words(&full);
            let idx = spans.len();
            spans.push(build_span(&mut names, &t, start, &ws, &mut links, idx));
            continue;
        }
        if line.starts_with("search ") || line.starts_with("error ") || line == "error" || line.starts_with("metrics ")
        {
            let mut expected = Vec::new();
            while i < lines.len() && lines[i].starts_with(' ') && !lines[i].trim().is_empty() {
                if !lines[i].trim().starts_with('#') {
                    expected.push(lines[i].trim().to_string());
                }
                i += 1;
            }
            cases.push(Case { line: i, cmd: line.to_string(), expected });
            continue;
        }
        panic!("{}:{i}: cannot read {line:?}", path.display());
    }
    for (idx, l, target) in links {
        let (t, s) = target.split_once('.').expect("link=trace.span");
        let tid = names.trace_id(t);
        let sid = names.span_id(t, s);
        let link = &mut spans[idx].span.links[l];
        link.trace_id = tid;
        link.span_id = sid;
    }
    let store = MemStore::new();
    let groups = spans
        .into_iter()
        .map(|p| {
            let _ = &p.trace;
            SpanGroup { resource: p.resource, scope: p.scope, spans: vec![p.span] }
        })
        .collect();
    store.apply(WriteBatch::Spans(SpansBatch { groups }));
    let reader = store.trace_store();

    let mut failures = Vec::new();
    let n = cases.len();
    for c in cases {
        let got = run_case(reader, &names, &c.cmd);
        if got != c.expected {
            failures.push(format!(
                "{}:{}: {}\n  expected:\n    {}\n  got:\n    {}",
                path.display(),
                c.line,
                c.cmd,
                c.expected.join("\n    "),
                got.join("\n    ")
            ));
        }
    }
    (n, failures)
}

fn run_case(reader: &dyn storage::read::TracesReader, names: &Names, cmd: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (kind, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let mut rest = rest.trim_start();
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    loop {
        let word = rest.split(' ').next().unwrap_or("");
        if let Some((k, v)) = word.split_once('=')
            && ["limit", "spss", "start", "end", "step"].contains(&k)
        {
            opts.push((k.to_string(), v.to_string()));
            rest = rest[word.len()..].trim_start();
            continue;
        }
        if word == "meta" || word == "attrs" {
            flags.push(word.to_string());
            rest = rest[word.len()..].trim_start();
            continue;
        }
        break;
    }
    let opt = |k: &str| opts.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    let query = rest.replace("\\n", "\n");
    match kind {
        "error" => {
            let req = SearchRequest { query, start_ns: 0, end_ns: 0, limit: 100, spans_per_spanset: 100 };
            match traceql::search(reader, &req, deadline) {
                Ok(r) => vec![format!("unexpected success: {} traces", r.traces.len())],
                Err(e) => vec![e.to_string()],
            }
        }
        "search" => {
            let req = SearchRequest {
                query,
                start_ns: opt("start").map(|s| BASE_NS + secs(&s)).unwrap_or(0),
                end_ns: opt("end").map(|s| BASE_NS + secs(&s)).unwrap_or(0),
                limit: opt("limit").map(|s| s.parse().unwrap()).unwrap_or(100),
                spans_per_spanset: opt("spss").map(|s| s.parse().unwrap()).unwrap_or(100),
            };
            let resp = match traceql::search(reader, &req, deadline) {
                Ok(r) => r,
                Err(e) => return vec![format!("error: {e}")],
            };
            let mut out = Vec::new();
            for t in &resp.traces {
                let mut line = names.trace_name(t.trace_id);
                if flags.iter().any(|f| f == "meta") {
                    let _ = write!(
                        line,
                        " root={:?}/{:?} start={} dur={}ms",
                        t.root_service_name,
                        t.root_trace_name,
                        fmt_f64((t.start_time_ns - BASE_NS) as f64 / 1e9),
                        t.duration_ms
                    );
                }
                line.push(':');
                for (k, ss) in t.span_sets.iter().enumerate() {
                    if k > 0 {
                        line.push_str(" |");
                    }
                    for s in &ss.spans {
                        line.push(' ');
                        line.push_str(&names.span_name(s.span_id));
                        if flags.iter().any(|f| f == "attrs") && !s.attributes.is_empty() {
                            let a: Vec<String> =
                                s.attributes.iter().map(|(k, v)| format!("{k}={}", render_value(v))).collect();
                            let _ = write!(line, "{{{}}}", a.join(","));
                        }
                    }
                    if ss.matched as usize != ss.spans.len() {
                        let _ = write!(line, " (matched={})", ss.matched);
                    }
                    if !ss.attributes.is_empty() {
                        let a: Vec<String> =
                            ss.attributes.iter().map(|(k, v)| format!("{k}={}", render_value(v))).collect();
                        let _ = write!(line, " [{}]", a.join(" "));
                    }
                }
                out.push(line);
            }
            out
        }
        "metrics" => {
            let start = BASE_NS + secs(&opt("start").expect("metrics needs start="));
            let end = BASE_NS + secs(&opt("end").expect("metrics needs end="));
            let step = secs(&opt("step").expect("metrics needs step="));
            match traceql::metrics_query_range(reader, &query, start, end, step, deadline) {
                Err(e) => vec![format!("error: {e}")],
                Ok(series) => series
                    .iter()
                    .map(|s| {
                        let labels: Vec<String> =
                            s.labels.iter().map(|(k, v)| format!("{k}={}", render_value(v))).collect();
                        let samples: Vec<String> = s
                            .samples
                            .iter()
                            .map(|(t, v)| {
                                format!("{}:{}", fmt_f64((t * 1_000_000 - BASE_NS) as f64 / 1e9), fmt_f64(*v))
                            })
                            .collect();
                        format!("{{{}}} {}", labels.join(", "), samples.join(" "))
                    })
                    .collect(),
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn traceql_scripts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/traceql");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "test"));
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    let mut total = 0;
    let mut failures = Vec::new();
    for f in &files {
        let (n, fails) = run_file(f);
        total += n;
        failures.extend(fails);
    }
    assert!(failures.is_empty(), "{} of {total} TraceQL cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
    assert!(total >= 150, "only {total} TraceQL cases");
}

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
//!
//! instant start=S end=E <query>       # /api/metrics/query: one sample per series, at E
//!
//! values tag=<attribute> [limit=N] [start=S] [end=E] [<query>]
//!   string shop                       # one line per distinct value: type and value
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
use storage::read::{Reader, StoredSpan, TraceScan, TracesReader};

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
                let kv = |name: &str| KeyValue::new(name.trim_matches('"'), value(v));
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

/// A reader that prunes by the scan hints as strictly as an indexed engine may: every search runs
/// through it too and must give the same answer, which checks that hints never drop a match.
struct HintedReader<'a>(&'a dyn TracesReader);

impl TracesReader for HintedReader<'_> {
    fn trace(&self, id: TraceId) -> Vec<StoredSpan> {
        self.0.trace(id)
    }

    fn trace_ids(&self) -> Vec<TraceId> {
        self.0.trace_ids()
    }

    fn span_count(&self) -> u64 {
        self.0.span_count()
    }

    fn scan_traces(&self, scan: &TraceScan, visit: &mut dyn FnMut(&[StoredSpan]) -> bool) {
        self.0.scan_traces(scan, &mut |spans| {
            let svc_ok = scan
                .service_name
                .as_ref()
                .is_none_or(|n| spans.iter().any(|s| s.resource.attr_str("service.name") == Some(n.as_str())));
            let name_ok = scan.span_name.as_ref().is_none_or(|n| spans.iter().any(|s| &s.span.name == n));
            if svc_ok && name_ok { visit(spans) } else { true }
        })
    }
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
        let command = ["search ", "error ", "metrics ", "instant ", "values "].iter().any(|c| line.starts_with(c));
        if command || line == "error" {
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
    let hinted = HintedReader(reader);
    for c in cases {
        let got = run_case(reader, &names, &c.cmd);
        if !c.cmd.starts_with("error") {
            let pruned = run_case(&hinted, &names, &c.cmd);
            if pruned != got {
                failures.push(format!(
                    "{}:{}: {}\n  pruning by the scan hints changed the answer:\n    {}",
                    path.display(),
                    c.line,
                    c.cmd,
                    pruned.join("\n    ")
                ));
            }
        }
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

fn run_case(reader: &dyn TracesReader, names: &Names, cmd: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (kind, rest) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let mut rest = rest.trim_start();
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    loop {
        let word = rest.split(' ').next().unwrap_or("");
        if let Some((k, v)) = word.split_once('=')
            && ["limit", "spss", "start", "end", "step", "tag"].contains(&k)
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
        "values" => {
            let tag = opt("tag").expect("values needs tag=");
            let start = opt("start").map(|s| BASE_NS + secs(&s)).unwrap_or(0);
            let end = opt("end").map(|s| BASE_NS + secs(&s)).unwrap_or(0);
            let limit = opt("limit").map(|s| s.parse().unwrap()).unwrap_or(0);
            match traceql::tag_values(reader, &tag, &query, start, end, limit, deadline) {
                Err(e) => vec![format!("error: {e}")],
                Ok(values) => values.iter().map(|v| format!("{} {}", v.type_name, v.value)).collect(),
            }
        }
        "metrics" | "instant" => {
            let start = BASE_NS + secs(&opt("start").expect("metrics needs start="));
            let end = BASE_NS + secs(&opt("end").expect("metrics needs end="));
            let result = if kind == "instant" {
                traceql::metrics_query_instant(reader, &query, start, end, deadline)
            } else {
                let step = secs(&opt("step").expect("metrics needs step="));
                traceql::metrics_query_range(reader, &query, start, end, step, deadline)
            };
            match result {
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

/// Prints rough timings over a generated store (`cargo test -p query --test traceql -- --ignored
/// --nocapture`); asserts nothing about time.
#[test]
#[ignore]
fn measure_generated_store() {
    let store = MemStore::new();
    let mut groups = Vec::new();
    let (traces, per_trace) = (20_000u64, 10u64);
    for t in 0..traces {
        for s in 0..per_trace {
            let mut tid = [0u8; 16];
            tid[8..].copy_from_slice(&(t + 1).to_be_bytes());
            let span = Span {
                trace_id: TraceId(tid),
                span_id: SpanId((t * 100 + s + 1).to_be_bytes()),
                parent_span_id: (s > 0).then(|| SpanId((t * 100 + s).to_be_bytes())),
                name: format!("op{}", s % 4),
                kind: if s == 0 { SpanKind::Server } else { SpanKind::Client },
                status_code: if (t + s) % 17 == 0 { StatusCode::Error } else { StatusCode::Unset },
                start_time_ns: BASE_NS + (t as i64) * 1_000_000_000 + (s as i64) * 1_000_000,
                end_time_ns: BASE_NS + (t as i64) * 1_000_000_000 + (s as i64 + 5) * 1_000_000,
                attributes: vec![KeyValue::new("http.status_code", AnyValue::Int(200 + (s as i64 % 3) * 100))],
                ..Default::default()
            };
            let resource = Resource {
                attributes: vec![KeyValue::new("service.name", AnyValue::String(format!("svc{}", (t + s) % 8)))],
                ..Default::default()
            };
            groups.push(SpanGroup { resource, scope: Scope::default(), spans: vec![span] });
        }
    }
    store.apply(WriteBatch::Spans(SpansBatch { groups }));
    let r = store.trace_store();
    let deadline = Instant::now() + Duration::from_secs(600);
    for q in [
        "{ resource.service.name = \"svc3\" && status = error }",
        "{ kind = server } >> { span.http.status_code = 400 }",
        "{} | by(resource.service.name) | count() > 3",
    ] {
        let t0 = Instant::now();
        let req =
            SearchRequest { query: q.to_string(), start_ns: 0, end_ns: 0, limit: 1_000_000, spans_per_spanset: 3 };
        let res = traceql::search(r, &req, deadline).unwrap();
        eprintln!(
            "search {q}: {} traces of {} inspected in {:?}",
            res.traces.len(),
            res.inspected_traces,
            t0.elapsed()
        );
    }
    let t0 = Instant::now();
    let series = traceql::metrics_query_range(
        r,
        "{} | quantile_over_time(duration, .5, .99) by (resource.service.name)",
        BASE_NS,
        BASE_NS + (traces as i64) * 1_000_000_000,
        60_000_000_000,
        deadline,
    )
    .unwrap();
    eprintln!("metrics quantile by service: {} series in {:?}", series.len(), t0.elapsed());
}

/// Random token soup through the parser, search and metrics: errors are fine, panics are not.
#[test]
fn random_queries_never_panic() {
    const PIECES: &[&str] = &[
        "{",
        "}",
        "(",
        ")",
        " ",
        ".",
        "span.",
        "resource.",
        "parent.",
        "event.",
        "link.",
        "span:",
        "trace:",
        "event:",
        "link:",
        "instrumentation:",
        "name",
        "id",
        "duration",
        "status",
        "kind",
        "error",
        "server",
        "nil",
        "true",
        "=",
        "!=",
        "=~",
        "!~",
        ">",
        ">=",
        "<",
        "<=",
        ">>",
        "<<",
        "~",
        "!>>",
        "&>",
        "&&",
        "||",
        "!",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "|",
        "count()",
        "avg(",
        "max(",
        "by(",
        "select(",
        "coalesce()",
        "rate()",
        "quantile_over_time(",
        "histogram_over_time(",
        "topk(",
        ",",
        "0",
        "1",
        "-9",
        "0.5",
        "1ms",
        "2h",
        "\"a\"",
        "\".*\"",
        "\"(\"",
        "a",
        "http.status_code",
        "with(",
        "x=1",
        "\"",
        "`",
        "/*",
        "µ",
        "9223372036854775807",
    ];
    let store = MemStore::new();
    let mut names = Names { traces: Vec::new(), spans: Vec::new() };
    let mut links = Vec::new();
    let words = |s: &str| words(s);
    let spans = vec![
        build_span(
            &mut names,
            "r1",
            BASE_NS,
            &words("span a name=a svc=s kind=server status=error dur=2ms span.http.status_code=500 span.v=[1,2]"),
            &mut links,
            0,
        ),
        build_span(
            &mut names,
            "r1",
            BASE_NS,
            &words("span b parent=a name=b svc=t dur=1ms event=e@0 event.x=1 span.a=-9"),
            &mut links,
            1,
        ),
    ];
    let groups =
        spans.into_iter().map(|p| SpanGroup { resource: p.resource, scope: p.scope, spans: vec![p.span] }).collect();
    store.apply(WriteBatch::Spans(SpansBatch { groups }));
    let r = store.trace_store();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut parsed = 0;
    for _ in 0..8_000 {
        let mut q = String::new();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 1 + (seed >> 59) as usize;
        for _ in 0..len {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            q.push_str(PIECES[(seed >> 33) as usize % PIECES.len()]);
        }
        // Every other query is built from a small grammar so that many of them parse and run.
        if seed & 1 == 0 {
            q = structured(&mut seed);
        }
        if traceql::parse(&q).is_ok() {
            parsed += 1;
        }
        let req = SearchRequest { query: q.clone(), start_ns: 0, end_ns: 0, limit: 10, spans_per_spanset: 3 };
        let _ = traceql::search(r, &req, deadline);
        let _ = traceql::metrics_query_range(
            r,
            &q,
            BASE_NS - 10_000_000_000,
            BASE_NS + 10_000_000_000,
            5_000_000_000,
            deadline,
        );
        let _ = traceql::tag_values(r, "span.a", &q, 0, 0, 10, deadline);
    }
    assert!(parsed > 150, "only {parsed} random queries parsed");
}

fn structured(seed: &mut u64) -> String {
    const FIELDS: &[&str] = &[
        "name",
        "duration",
        "status",
        "kind",
        "span.http.status_code",
        ".a",
        "span.v",
        "event.x",
        "event:name",
        "span:childCount",
        "nestedSetParent",
        "traceDuration",
        "rootName",
        ".missing",
        "span:id",
    ];
    const OPS: &[&str] = &["=", "!=", ">", ">=", "<", "<=", "=~", "!~", "+", "-", "*", "/", "%", "^", "&&", "||"];
    const LITS: &[&str] = &[
        "0",
        "1",
        "-9",
        "500",
        "0.5",
        "1ms",
        "\"a\"",
        "\".*\"",
        "error",
        "server",
        "true",
        "nil",
        "9223372036854775807",
    ];
    const SETOPS: &[&str] = &["&&", "||", ">", "<", ">>", "<<", "~", "!>", "!<<", "&>>", "&~", "!~"];
    const TAILS: &[&str] = &[
        "",
        " | count() > 0",
        " | avg(duration) > 1ms",
        " | max(span.http.status_code) >= 1",
        " | by(name)",
        " | by(kind) | coalesce()",
        " | select(span.a)",
        " | rate()",
        " | count_over_time() by (name)",
        " | quantile_over_time(duration, .5)",
        " | histogram_over_time(span.a)",
        " | sum_over_time(span.http.status_code) | topk(1)",
        " | compare({status = error}, 2)",
        " | min_over_time(duration) by (resource.service.name) > 0",
    ];
    let mut next = |n: usize| {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as usize % n
    };
    let filter = |next: &mut dyn FnMut(usize) -> usize| {
        let mut e = format!("{} {} {}", FIELDS[next(FIELDS.len())], OPS[next(OPS.len())], LITS[next(LITS.len())]);
        if next(2) == 0 {
            e = format!(
                "({e}) {} ({} {} {})",
                OPS[next(OPS.len())],
                FIELDS[next(FIELDS.len())],
                OPS[next(OPS.len())],
                LITS[next(LITS.len())]
            );
        }
        format!("{{ {e} }}")
    };
    let mut q = filter(&mut next);
    if next(2) == 0 {
        q = format!("{q} {} {}", SETOPS[next(SETOPS.len())], filter(&mut next));
    }
    format!("{q}{}", TAILS[next(TAILS.len())])
}

//! `traces_bench`: the traces path of the real `outpost` binary at scale. See `benches/README.md`.
//!
//! 1. Starts the release `outpost` as a child process (port 0, fresh data folder).
//! 2. Ingest: `--clients` OTLP/gRPC senders, each on its own connection, send pre-generated,
//!    re-stamped and id-salted requests of realistic traces (several services per trace, 5–30
//!    spans, attributes, events) as fast as the server answers, until `--spans` spans are
//!    acknowledged. Reports spans/s, the server's CPU-seconds per million spans, peak RSS.
//! 3. Flush: waits for the checkpoint that writes every acknowledged span into Parquet span files
//!    (the traces `MANIFEST` lists them all), then measures `traces/` on disk: bytes per span.
//! 4. Head: sends a small tranche more, which stays in the in-memory head until the next checkpoint.
//! 5. Trace by id: `/api/v2/traces/<id>` (protobuf, as Grafana asks) and `/api/traces/<id>` for
//!    random trace ids in the head, in the span files, and absent (404): p50/p99 latency, each
//!    answer checked (status, span count).
//! 6. TraceQL search over the last hour (`/api/search?q=...&limit=20&spss=3`): an attribute
//!    filter, a resource-attribute filter and a duration filter, p50/p99 latency.
//!
//! Everything is printed as a markdown report on stdout (progress on stderr).

#![allow(clippy::print_stdout, reason = "the report is the program's output")]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use benches::child::{Addrs, Fsync, ServerProcess, TempDir, find_outpost, outpost_version};
use benches::otlp_load::{b, i, s, salt_span_id, salt_trace_id};
use benches::procfs::{self, Machine};
use benches::report::{command_line, fmt_int, utc_now};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tonic::transport::Channel;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "traces_bench",
    about = "Outpost traces benchmark: OTLP/gRPC span ingest, trace by id, TraceQL search"
)]
struct Args {
    /// The `outpost` binary (built with `cargo build --release --workspace`). When the default is
    /// missing, the `outpost` next to this harness' own executable is used.
    #[arg(long, default_value = "target/release/outpost")]
    outpost: PathBuf,
    /// Spans to ingest before the queries.
    #[arg(long, default_value_t = 10_000_000)]
    spans: u64,
    /// Concurrent OTLP/gRPC senders, each on its own connection.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Spans per export request (whole traces are added until a request holds at least this many;
    /// the OpenTelemetry SDKs' batch span processor exports 512 at most).
    #[arg(long, default_value_t = 500)]
    request_spans: usize,
    /// Distinct pre-generated requests (each send re-stamps one and salts its ids).
    #[arg(long, default_value_t = 64)]
    distinct_requests: usize,
    /// Requests sent after the flush, that stay in the in-memory head for the head lookups.
    #[arg(long, default_value_t = 40)]
    head_requests: usize,
    /// Timed lookups per (trace class, endpoint).
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Timed runs per search query (after one untimed run).
    #[arg(long, default_value_t = 20)]
    search_runs: usize,
    /// Most seconds to wait for the checkpoint that flushes every span into span files.
    #[arg(long, default_value_t = 240)]
    flush_timeout: u64,
    /// Outpost's WAL fsync policy (`OUTPOST_WAL__FSYNC`).
    #[arg(long, value_enum, default_value_t = Fsync::Batch)]
    fsync: Fsync,
    /// Parent folder of the server's fresh data folder (the system temp folder by default).
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Seed of the generated load.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Skip the queries (ingest and flush only).
    #[arg(long)]
    no_queries: bool,
}

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("traces_bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

macro_rules! progress {
    ($($t:tt)*) => { eprintln!("[traces_bench] {}", format!($($t)*)) };
}

// ---------------------------------------------------------------------------------------------
// The load
// ---------------------------------------------------------------------------------------------

const MS: u64 = 1_000_000;

/// A small deterministic generator (splitmix64).
struct Rng(u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        if out.iter().all(|&b| b == 0) {
            out[0] = 1;
        }
        out
    }

    fn hex(&mut self, chars: usize) -> String {
        let mut s = String::with_capacity(chars + 16);
        while s.len() < chars {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(chars);
        s
    }
}

/// The services and whom each calls over HTTP (a small shop: the service graph has 20 edges).
const SERVICES: [(&str, &[usize]); 14] = [
    ("gateway", &[1, 8]),               // 0
    ("frontend", &[2, 3, 9, 10, 11]),   // 1
    ("checkout", &[4, 5, 6, 3, 7, 12]), // 2
    ("cart", &[7]),                     // 3
    ("payment", &[6, 13]),              // 4
    ("shipping", &[6]),                 // 5
    ("currency", &[]),                  // 6
    ("inventory", &[]),                 // 7
    ("auth", &[]),                      // 8
    ("search", &[]),                    // 9
    ("recommendation", &[7]),           // 10
    ("user-profile", &[8]),             // 11
    ("email", &[]),                     // 12
    ("fraud-detection", &[]),           // 13
];
const LANGUAGES: [&str; 5] = ["java", "go", "python", "nodejs", "rust"];
const REGIONS: [&str; 3] = ["eu-west-1", "us-east-1", "ap-south-1"];

fn resource(svc: usize, instance: usize) -> Resource {
    let name = SERVICES[svc].0;
    Resource {
        attributes: vec![
            s("service.name", name),
            s("service.namespace", "shop"),
            s("service.version", format!("2.{}.{}", svc % 5, instance)),
            s(
                "service.instance.id",
                format!("{name}-{instance}-{:08x}", splitmix((svc * 31 + instance) as u64) as u32),
            ),
            s("deployment.environment", if instance == 2 { "canary" } else { "production" }),
            s("host.name", format!("node-{}", (svc * 3 + instance) % 8)),
            s("k8s.pod.name", format!("{name}-7d9f8b-{:05x}", splitmix((svc * 7 + instance) as u64) as u32 & 0xfffff)),
            s("cloud.region", REGIONS[instance % REGIONS.len()]),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", LANGUAGES[svc % LANGUAGES.len()]),
            s("telemetry.sdk.version", "1.44.0"),
        ],
        ..Default::default()
    }
}

/// One trace of a template, as sent before salting.
#[derive(Clone, Copy, Debug)]
struct TemplateTrace {
    trace_id: [u8; 16],
    spans: u32,
}

/// A pre-generated export request.
struct Template {
    /// The request (the tests compare the patched bytes with it).
    #[cfg_attr(not(test), allow(dead_code))]
    request: ExportTraceServiceRequest,
    /// The request's protobuf bytes and where to patch them per send.
    encoded: Encoded,
    spans: u64,
    bytes: usize,
    traces: Vec<TemplateTrace>,
}

/// Builds traces: a root server span in `gateway` or `frontend`, HTTP calls down the service
/// graph (a CLIENT span in the caller, a SERVER span in the callee), database calls and internal
/// steps, 5–30 spans in all. About 3 % of the server spans fail (HTTP 500, an exception event);
/// about 0.5 % of the traces have a slow database call (0.6–2.5 s).
struct TraceGen {
    rng: Rng,
    t0: u64,
}

struct Building {
    trace_id: [u8; 16],
    budget: usize,
    /// (service, span)
    spans: Vec<(usize, Span)>,
    slow: bool,
}

impl TraceGen {
    fn template(&mut self, k: usize, request_spans: usize) -> Template {
        let instance = k % 3;
        let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
        let mut traces = Vec::new();
        let mut total = 0usize;
        while total < request_spans {
            let (trace_id, spans) = self.trace();
            traces.push(TemplateTrace { trace_id, spans: spans.len() as u32 });
            total += spans.len();
            for (svc, span) in spans {
                per_service[svc].push(span);
            }
        }
        let resource_spans = per_service
            .into_iter()
            .enumerate()
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(svc, spans)| ResourceSpans {
                resource: Some(resource(svc, instance)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        version: "2.10.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest { resource_spans };
        let encoded = Encoded::new(request.encode_to_vec());
        Template { spans: total as u64, bytes: request.encoded_len(), request, encoded, traces }
    }

    fn trace(&mut self) -> ([u8; 16], Vec<(usize, Span)>) {
        let n = self.rng.range(5, 30) as usize;
        let mut t = Building {
            trace_id: self.rng.id::<16>(),
            budget: n,
            spans: Vec::with_capacity(n),
            slow: self.rng.chance(5),
        };
        let root = if self.rng.chance(700) { 1 } else { 0 };
        let start = self.t0 - self.rng.range(100, 3000) * MS;
        let dur = if t.slow { self.rng.range(800, 3000) * MS } else { self.rng.range(5, 400) * MS };
        self.server(&mut t, root, None, start, dur, true);
        (t.trace_id, t.spans)
    }

    /// A server span of `svc` and its children; returns whether it failed.
    fn server(
        &mut self,
        t: &mut Building,
        svc: usize,
        parent: Option<[u8; 8]>,
        start: u64,
        dur: u64,
        root: bool,
    ) -> bool {
        if t.budget == 0 {
            return false;
        }
        t.budget -= 1;
        let id = self.rng.id::<8>();
        let at = t.spans.len();
        let r = &mut self.rng;
        let method = *r.pick(&["GET", "GET", "GET", "POST", "PUT"]);
        let route = match SERVICES[svc].0 {
            "gateway" | "frontend" => {
                *r.pick(&["/api/orders/{id}", "/api/cart", "/api/products", "/api/checkout", "/"])
            }
            "checkout" => "/checkout/place-order",
            "payment" => "/payment/charge",
            "shipping" => "/shipping/quote",
            "currency" => "/currency/convert",
            _ => *r.pick(&["/v1/items/{id}", "/v1/items", "/v1/health"]),
        };
        let target = route.replace("{id}", &r.below(100_000).to_string());
        t.spans.push((svc, Span { trace_id: t.trace_id.to_vec(), ..Default::default() }));
        // Children: the root keeps adding until the trace has its spans; others 1–4.
        let mut children = if root { usize::MAX } else { r.range(1, 4) as usize };
        let mut failed = false;
        let mut at_ns = start + dur / 20;
        let end = start + dur;
        while children > 0 && t.budget > 0 {
            children -= 1;
            let left = end.saturating_sub(at_ns).max(MS);
            let r = &mut self.rng;
            let callees = SERVICES[svc].1;
            let d = (left / 3).max(MS / 2);
            if !callees.is_empty() && t.budget >= 2 && r.chance(550) {
                let callee = *r.pick(callees);
                failed |= self.client(t, svc, callee, id, at_ns, d);
            } else if r.chance(500) {
                let slow = std::mem::take(&mut t.slow);
                let d = if slow { (dur * 8 / 10).max(600 * MS) } else { d.min(60 * MS) };
                self.db(t, svc, id, at_ns, d);
            } else {
                self.internal(t, svc, id, at_ns, d.min(20 * MS));
            }
            at_ns += d / 2 + MS / 4;
        }
        let r = &mut self.rng;
        failed |= r.chance(30);
        let status = if failed { 500 } else { *r.pick(&[200, 200, 200, 200, 201, 304]) };
        let mut events = Vec::new();
        if failed {
            events.push(Event {
                time_unix_nano: end - MS / 2,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "java.lang.IllegalStateException"),
                    s("exception.message", format!("upstream {} failed: {}", SERVICES[svc].0, r.hex(12))),
                    s(
                        "exception.stacktrace",
                        format!(
                            "java.lang.IllegalStateException: upstream failed\n\tat com.shop.{0}.Handler.handle(Handler.java:{1})\n\tat com.shop.web.Dispatcher.dispatch(Dispatcher.java:88)\n\tat io.netty.channel.AbstractChannelHandlerContext.invokeChannelRead(AbstractChannelHandlerContext.java:444)",
                            SERVICES[svc].0.replace('-', "_"),
                            40 + r.below(300)
                        ),
                    ),
                    b("exception.escaped", false),
                ],
                ..Default::default()
            });
        }
        let attrs = vec![
            s("http.method", method),
            s("http.route", route),
            s("http.target", target),
            s("http.scheme", "http"),
            i("http.status_code", status),
            s("net.host.name", format!("{}.shop.svc", SERVICES[svc].0)),
            i("net.host.port", 8080),
            s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"),
            i("http.response_content_length", r.below(20_000) as i64),
        ];
        t.spans[at].1 = Span {
            trace_id: t.trace_id.to_vec(),
            span_id: id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("{method} {route}"),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: attrs,
            events,
            status: Some(Status {
                code: if failed { StatusCode::Error as i32 } else { StatusCode::Unset as i32 },
                message: if failed { "HTTP 500".into() } else { String::new() },
            }),
            ..Default::default()
        };
        failed
    }

    /// An HTTP client span of `svc` calling `callee`, and the callee's server span under it.
    fn client(&mut self, t: &mut Building, svc: usize, callee: usize, parent: [u8; 8], start: u64, dur: u64) -> bool {
        t.budget -= 1;
        let id = self.rng.id::<8>();
        let at = t.spans.len();
        t.spans.push((svc, Span::default()));
        let failed = self.server(t, callee, Some(id), start + MS / 10, dur.saturating_sub(MS / 5).max(MS / 4), false);
        let r = &mut self.rng;
        let peer = SERVICES[callee].0;
        let method = *r.pick(&["GET", "POST"]);
        let status = if failed { 500 } else { 200 };
        let mut events = Vec::new();
        if r.chance(100) {
            events.push(Event {
                time_unix_nano: start + MS / 20,
                name: "http.request.sent".into(),
                attributes: vec![i("http.request_content_length", r.below(4096) as i64)],
                ..Default::default()
            });
        }
        t.spans[at] = (
            svc,
            Span {
                trace_id: t.trace_id.to_vec(),
                span_id: id.to_vec(),
                parent_span_id: parent.to_vec(),
                name: format!("{method} {peer}"),
                kind: SpanKind::Client as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![
                    s("http.method", method),
                    s("http.url", format!("http://{peer}.shop.svc:8080/internal/{}", r.hex(8))),
                    i("http.status_code", status),
                    s("net.peer.name", format!("{peer}.shop.svc")),
                    i("net.peer.port", 8080),
                    s("peer.service", peer),
                    s("http.flavor", "1.1"),
                ],
                events,
                status: Some(Status {
                    code: if failed { StatusCode::Error as i32 } else { StatusCode::Unset as i32 },
                    message: String::new(),
                }),
                ..Default::default()
            },
        );
        failed
    }

    fn db(&mut self, t: &mut Building, svc: usize, parent: [u8; 8], start: u64, dur: u64) {
        t.budget -= 1;
        let r = &mut self.rng;
        let (system, statement, name) = if r.chance(300) {
            let key = format!("{}:{}", SERVICES[svc].0, r.below(10_000));
            ("redis", format!("GET {key}"), "GET".to_string())
        } else {
            let table = *r.pick(&["orders", "carts", "products", "users", "payments", "stock"]);
            (
                "postgresql",
                format!(
                    "SELECT id, status, total, updated_at FROM {table} WHERE customer_id = $1 ORDER BY updated_at DESC LIMIT 50"
                ),
                format!("SELECT shop.{table}"),
            )
        };
        t.spans.push((
            svc,
            Span {
                trace_id: t.trace_id.to_vec(),
                span_id: r.id::<8>().to_vec(),
                parent_span_id: parent.to_vec(),
                name,
                kind: SpanKind::Client as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![
                    s("db.system", system),
                    s("db.name", "shop"),
                    s("db.operation", if system == "redis" { "GET" } else { "SELECT" }),
                    s("db.statement", statement),
                    s("net.peer.name", format!("{system}.shop.svc")),
                    i("net.peer.port", if system == "redis" { 6379 } else { 5432 }),
                ],
                ..Default::default()
            },
        ));
    }

    fn internal(&mut self, t: &mut Building, svc: usize, parent: [u8; 8], start: u64, dur: u64) {
        t.budget -= 1;
        let r = &mut self.rng;
        let hit = r.chance(700);
        let events = if r.chance(250) {
            vec![Event {
                time_unix_nano: start + dur / 2,
                name: if hit { "cache.hit" } else { "cache.miss" }.into(),
                attributes: vec![s("cache.key", format!("item:{}", r.below(100_000)))],
                ..Default::default()
            }]
        } else {
            Vec::new()
        };
        let pkg = SERVICES[svc].0.replace('-', "_");
        t.spans.push((
            svc,
            Span {
                trace_id: t.trace_id.to_vec(),
                span_id: r.id::<8>().to_vec(),
                parent_span_id: parent.to_vec(),
                name: r.pick(&["render response", "validate request", "load profile", "compute price"]).to_string(),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![
                    s("code.function", "handle"),
                    s("code.namespace", format!("com.shop.{pkg}.web.Handler")),
                    s("thread.name", format!("http-nio-8080-exec-{}", r.below(32))),
                    i("app.items", r.below(50) as i64),
                    b("app.cache.hit", hit),
                ],
                events,
                ..Default::default()
            },
        ));
    }
}

/// The pre-generated requests.
struct Load {
    templates: Vec<Template>,
    t0_ns: u64,
}

impl Load {
    fn generate(n: usize, request_spans: usize, seed: u64) -> Load {
        let t0_ns = now_ns();
        let mut g = TraceGen { rng: Rng(seed), t0: t0_ns };
        let templates = (0..n.max(1)).map(|k| g.template(k, request_spans.max(1))).collect();
        Load { templates, t0_ns }
    }

    fn template(&self, seq: u64) -> &Template {
        &self.templates[(seq % self.templates.len() as u64) as usize]
    }

    /// Send number `seq`: its template, re-stamped to now and salted with `seq`.
    #[cfg(test)]
    fn stamped(&self, seq: u64) -> ExportTraceServiceRequest {
        let mut r = self.template(seq).request.clone();
        let shift = now_ns().saturating_sub(self.t0_ns);
        let salt = salt_of(seq);
        let sh = |t: &mut u64| *t = t.wrapping_add(shift);
        for span in r.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            sh(&mut span.start_time_unix_nano);
            sh(&mut span.end_time_unix_nano);
            for e in &mut span.events {
                sh(&mut e.time_unix_nano);
            }
            salt_trace_id(&mut span.trace_id, salt);
            salt_span_id(&mut span.span_id, salt);
            salt_span_id(&mut span.parent_span_id, salt);
        }
        r
    }

    /// [`Load::stamped`] as protobuf bytes, patched in place from the template's bytes (the load
    /// generator shares the machine: cloning and encoding 500 spans per send would cost it about as
    /// much CPU as the server spends).
    fn stamped_bytes(&self, seq: u64) -> Vec<u8> {
        let shift = now_ns().saturating_sub(self.t0_ns);
        self.template(seq).encoded.stamped(shift, salt_of(seq))
    }

    /// The trace ids send `seq` carried, with their span counts.
    fn sent_traces(&self, seq: u64) -> impl Iterator<Item = ([u8; 16], u32)> + '_ {
        let salt = salt_of(seq);
        self.template(seq).traces.iter().map(move |t| {
            let mut id = t.trace_id;
            salt_trace_id(&mut id, salt);
            (id, t.spans)
        })
    }

    fn mean_spans(&self) -> f64 {
        self.templates.iter().map(|t| t.spans).sum::<u64>() as f64 / self.templates.len() as f64
    }

    fn mean_bytes(&self) -> f64 {
        self.templates.iter().map(|t| t.bytes).sum::<usize>() as f64 / self.templates.len() as f64
    }

    fn mean_trace_spans(&self) -> f64 {
        let (n, spans) = self
            .templates
            .iter()
            .flat_map(|t| &t.traces)
            .fold((0u64, 0u64), |(n, s), t| (n + 1, s + u64::from(t.spans)));
        spans as f64 / n.max(1) as f64
    }
}

/// An encoded `ExportTraceServiceRequest` and the offsets of what each send changes: `fixed64`
/// span and event times, trace ids (16 bytes) and span / parent span ids (8 bytes).
struct Encoded {
    bytes: Vec<u8>,
    times: Vec<usize>,
    trace_ids: Vec<usize>,
    span_ids: Vec<usize>,
}

/// Which message a protobuf walk is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Request,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
}

impl Encoded {
    fn new(bytes: Vec<u8>) -> Encoded {
        let mut e = Encoded { bytes, times: Vec::new(), trace_ids: Vec::new(), span_ids: Vec::new() };
        let b = std::mem::take(&mut e.bytes);
        e.walk(&b, 0, b.len(), Level::Request);
        e.bytes = b;
        e
    }

    fn walk(&mut self, b: &[u8], mut at: usize, end: usize, level: Level) {
        while at < end {
            let key = varint(b, &mut at);
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    varint(b, &mut at);
                }
                1 => {
                    if (level == Level::Span && (field == 7 || field == 8)) || (level == Level::Event && field == 1) {
                        self.times.push(at);
                    }
                    at += 8;
                }
                2 => {
                    let len = varint(b, &mut at) as usize;
                    let (s, e) = (at, at + len);
                    match (level, field) {
                        (Level::Request, 1) => self.walk(b, s, e, Level::ResourceSpans),
                        (Level::ResourceSpans, 2) => self.walk(b, s, e, Level::ScopeSpans),
                        (Level::ScopeSpans, 2) => self.walk(b, s, e, Level::Span),
                        (Level::Span, 11) => self.walk(b, s, e, Level::Event),
                        (Level::Span, 1) if len == 16 => self.trace_ids.push(s),
                        (Level::Span, 2 | 4) if len == 8 => self.span_ids.push(s),
                        _ => {}
                    }
                    at = e;
                }
                5 => at += 4,
                _ => panic!("unexpected wire type {wire} in a generated request"),
            }
        }
    }

    /// A copy with times shifted by `shift` and ids salted as [`Load::stamped`] does.
    fn stamped(&self, shift: u64, salt: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        for &o in &self.times {
            let mut t = [0u8; 8];
            t.copy_from_slice(&out[o..o + 8]);
            out[o..o + 8].copy_from_slice(&u64::from_le_bytes(t).wrapping_add(shift).to_le_bytes());
        }
        for &o in &self.trace_ids {
            salt_trace_id(&mut out[o..o + 16], salt);
        }
        for &o in &self.span_ids {
            salt_span_id(&mut out[o..o + 8], salt);
        }
        out
    }
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    v
}

/// A gRPC codec that sends protobuf bytes as they are and decodes the OTLP answer.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

fn salt_of(seq: u64) -> u64 {
    splitmix(seq.wrapping_add(1).wrapping_mul(0x2545_F491_4F6C_DD1D))
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------------------------

/// What the ingest phase measured.
struct Ingest {
    requests: u64,
    spans: u64,
    bytes: u64,
    wall: Duration,
    server_cpu_s: f64,
    client_cpu_s: f64,
    other_cpu_s: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    /// Send numbers acknowledged.
    sent: Vec<u64>,
    rss_after_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
}

/// What the flush phase measured.
struct Flush {
    wait: Duration,
    server_cpu_s: f64,
    files: usize,
    traces_bytes: u64,
    traces_allocated: u64,
    data_dir_bytes: u64,
    parquet_bytes: u64,
    tid_bytes: u64,
}

/// One latency series.
struct Latency {
    what: String,
    target: &'static str,
    samples: Vec<f64>,
    note: String,
}

impl Latency {
    fn q(&self, p: f64) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }

    fn max(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NAN, f64::max)
    }
}

fn bench(args: Args) -> anyhow::Result<()> {
    if args.clients == 0 || args.spans == 0 || args.lookups == 0 || args.search_runs == 0 {
        bail!("--clients, --spans, --lookups and --search-runs must be at least 1");
    }
    let outpost = find_outpost(&args.outpost)?;
    let tmp_root = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let machine = Machine::current();

    progress!("generating {} requests of ~{} spans ...", args.distinct_requests, args.request_spans);
    let load = Arc::new(Load::generate(args.distinct_requests, args.request_spans, args.seed));

    let mut out = String::new();
    let _ = writeln!(out, "# Outpost traces benchmark\n");
    let _ = writeln!(out, "- date: {}", utc_now());
    let _ = writeln!(
        out,
        "- machine: {} CPUs (nproc), {}, {} MiB RAM, Linux {}",
        machine.nproc, machine.cpu_model, machine.mem_total_mib, machine.kernel
    );
    let _ = writeln!(out, "- command: `{}`", command_line());
    let _ = writeln!(out, "- load average at start: {}", procfs::load_average());
    let _ = writeln!(
        out,
        "- outpost: `{}` ({}), wal.fsync = {}",
        outpost.display(),
        outpost_version(&outpost),
        args.fsync.as_str()
    );
    let _ = writeln!(
        out,
        "- load: {} OTLP/gRPC clients, each on its own connection; {} distinct requests of {:.0} spans ({:.1} KB of protobuf) on average, {:.1} spans per trace, {} services",
        args.clients,
        load.templates.len(),
        load.mean_spans(),
        load.mean_bytes() / 1e3,
        load.mean_trace_spans(),
        SERVICES.len()
    );
    print!("{out}");
    out.clear();

    let data = TempDir::new(&tmp_root, "outpost-traces-bench")?;
    let data_path = data.path().to_path_buf();
    let mut server = start_server(&outpost, data, args.fsync)?;
    let pid = server.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(machine.nproc.clamp(1, args.clients))
        .enable_all()
        .thread_name("bench-client")
        .build()?;

    let result = (|| -> anyhow::Result<String> {
        // Ingest.
        progress!("ingesting {} spans with {} clients ...", args.spans, args.clients);
        let seq = Arc::new(AtomicU64::new(0));
        let ingest =
            rt.block_on(ingest(server.addrs, pid, Arc::clone(&load), args.clients, args.spans, Arc::clone(&seq)))?;
        progress!(
            "  {} spans in {:.1} s: {} spans/s, {:.2} server CPU-s per million spans",
            fmt_int(ingest.spans as f64),
            ingest.wall.as_secs_f64(),
            fmt_int(ingest.spans as f64 / ingest.wall.as_secs_f64()),
            ingest.server_cpu_s / (ingest.spans as f64 / 1e6)
        );
        if !server.is_running() {
            bail!("the server exited during ingest");
        }

        // Flush.
        progress!("waiting for the checkpoint that writes every span into span files ...");
        let flush = wait_flush(&data_path, pid, ingest.spans, Duration::from_secs(args.flush_timeout))?;
        progress!(
            "  flushed after {:.1} s: {} files, {:.1} bytes per span",
            flush.wait.as_secs_f64(),
            flush.files,
            flush.traces_bytes as f64 / ingest.spans as f64
        );

        let mut lat = Vec::new();
        let mut notes = Vec::new();
        if !args.no_queries {
            rt.block_on(queries(&args, server.addrs, &data_path, &load, &ingest, &seq, &mut lat, &mut notes))?;
        }
        let peak_rss_end = procfs::status_kib(pid, "VmHWM").ok().flatten();
        let (problems, first) = server.problems();
        if problems > 0 {
            notes.push(format!("the server logged {problems} WARN/ERROR lines; first: {first:#?}"));
        }
        Ok(report(&args, &ingest, &flush, &lat, &notes, peak_rss_end))
    })();
    let alive = server.is_running();
    match result {
        Ok(r) => {
            print!("{r}");
            if !alive {
                bail!("the server exited before the end; its last log lines:\n{}", server.log_tail());
            }
            Ok(())
        }
        Err(e) => Err(e.context(format!(
            "server {}; its last log lines:\n{}",
            if alive { "still running" } else { "exited" },
            server.log_tail()
        ))),
    }
}

fn start_server(bin: &Path, dir: TempDir, fsync: Fsync) -> anyhow::Result<ServerProcess> {
    let mut cmd = benches::child::outpost_command(bin, dir.path());
    // Up to 30 s of spans sit in the head between checkpoints; the benchmark measures how much
    // memory that takes (peak RSS) rather than letting the memory guard turn ingest into 503s.
    cmd.env("OUTPOST_LOG", "info")
        .env("OUTPOST_WAL__FSYNC", fsync.as_str())
        .env("OUTPOST_MEMORY_LIMIT_BYTES", (16u64 << 30).to_string());
    ServerProcess::spawn(cmd, Some(dir), Duration::from_secs(60))
}

/// One OTLP/gRPC connection sending pre-encoded `TraceService/Export` requests.
type Client = tonic::client::Grpc<Channel>;

async fn connect(addrs: Addrs) -> anyhow::Result<Client> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", addrs.otlp_grpc))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to OTLP/gRPC at {}", addrs.otlp_grpc))?;
    Ok(tonic::client::Grpc::new(channel))
}

/// Sends one encoded `ExportTraceServiceRequest`; any error, or any rejected span, is an error.
async fn send(client: &mut Client, req: Vec<u8>) -> anyhow::Result<()> {
    let grpc_err = |s: tonic::Status| anyhow!("gRPC status {:?}: {}", s.code(), s.message());
    client.ready().await.map_err(|e| anyhow!("gRPC connection not ready: {e}"))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let resp = client.unary(tonic::Request::new(req), path, RawCodec).await.map_err(grpc_err)?.into_inner();
    if let Some(p) = resp.partial_success
        && p.rejected_spans != 0
    {
        bail!("{} spans rejected: {}", p.rejected_spans, p.error_message);
    }
    Ok(())
}

async fn ingest(
    addrs: Addrs,
    pid: u32,
    load: Arc<Load>,
    clients: usize,
    target_spans: u64,
    seq: Arc<AtomicU64>,
) -> anyhow::Result<Ingest> {
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(connect(addrs).await?);
    }
    let claimed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let me = std::process::id();
    let (t1, cpu1, own1, all1) =
        (Instant::now(), procfs::cpu_seconds(pid)?, procfs::cpu_seconds(me)?, procfs::machine_busy_seconds()?);
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        let (load, claimed, stop, seq) = (Arc::clone(&load), Arc::clone(&claimed), Arc::clone(&stop), Arc::clone(&seq));
        tasks.spawn(async move {
            let mut done: Vec<(u64, u64, usize, f64)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let t = load.template(n);
                if claimed.fetch_add(t.spans, Ordering::Relaxed) >= target_spans {
                    // The sequence number stays unused: nothing was sent with it.
                    break;
                }
                let req = load.stamped_bytes(n);
                let sent = Instant::now();
                if let Err(e) = send(&mut c, req).await {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e.context(format!("request #{n} ({} spans) failed", t.spans)));
                }
                done.push((n, t.spans, t.bytes, sent.elapsed().as_secs_f64() * 1e3));
            }
            Ok(done)
        });
    }
    let ticker = {
        let claimed = Arc::clone(&claimed);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let n = claimed.load(Ordering::Relaxed).min(target_spans);
                progress!("  ... {} spans sent, {:.0} s", fmt_int(n as f64), t1.elapsed().as_secs_f64());
            }
        })
    };
    let mut all = Vec::new();
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(d)) => all.extend(d),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(anyhow!("client task panicked: {e}")),
        }
    }
    ticker.abort();
    let (t2, cpu2, own2, all2) =
        (Instant::now(), procfs::cpu_seconds(pid)?, procfs::cpu_seconds(me)?, procfs::machine_busy_seconds()?);
    let rss_after_kib = procfs::status_kib(pid, "VmRSS").ok().flatten();
    let peak_rss_kib = procfs::status_kib(pid, "VmHWM").ok().flatten();
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let mut latencies: Vec<f64> = all.iter().map(|d| d.3).collect();
    latencies.sort_by(f64::total_cmp);
    let q =
        |p: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
    let mut sent: Vec<u64> = all.iter().map(|d| d.0).collect();
    sent.sort_unstable();
    Ok(Ingest {
        requests: all.len() as u64,
        spans: all.iter().map(|d| d.1).sum(),
        bytes: all.iter().map(|d| d.2 as u64).sum(),
        wall: t2 - t1,
        server_cpu_s: cpu2 - cpu1,
        client_cpu_s: own2 - own1,
        other_cpu_s: ((all2 - all1) - (cpu2 - cpu1) - (own2 - own1)).max(0.0),
        latency_p50_ms: q(0.5),
        latency_p99_ms: q(0.99),
        sent,
        rss_after_kib,
        peak_rss_kib,
    })
}

/// The traces `MANIFEST`: (files, spans in them).
fn read_manifest(data: &Path) -> anyhow::Result<(usize, u64)> {
    let path = data.join("traces").join("MANIFEST");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))?;
    let files = v["files"].as_array().context("MANIFEST without files")?;
    Ok((files.len(), files.iter().map(|f| f["spans"].as_u64().unwrap_or(0)).sum()))
}

/// (apparent bytes, allocated bytes) under `dir`, optionally only files with extension `ext`.
fn dir_bytes(dir: &Path, ext: Option<&str>) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else { return total };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            let (a, b) = dir_bytes(&e.path(), ext);
            total.0 += a;
            total.1 += b;
        } else if ext.is_none_or(|x| e.path().extension().and_then(|e| e.to_str()) == Some(x)) {
            total.0 += meta.len();
            total.1 += meta.blocks() * 512;
        }
    }
    total
}

fn wait_flush(data: &Path, pid: u32, spans: u64, timeout: Duration) -> anyhow::Result<Flush> {
    let started = Instant::now();
    let cpu0 = procfs::cpu_seconds(pid)?;
    loop {
        let (files, stored) = read_manifest(data)?;
        if stored >= spans {
            let server_cpu_s = procfs::cpu_seconds(pid)? - cpu0;
            let traces = data.join("traces");
            let (traces_bytes, traces_allocated) = dir_bytes(&traces, None);
            return Ok(Flush {
                wait: started.elapsed(),
                server_cpu_s,
                files,
                traces_bytes,
                traces_allocated,
                data_dir_bytes: dir_bytes(data, None).0,
                parquet_bytes: dir_bytes(&traces, Some("parquet")).0,
                tid_bytes: dir_bytes(&traces, Some("tid")).0,
            });
        }
        if started.elapsed() > timeout {
            bail!("after {timeout:?} the span files hold {stored} of the {spans} spans acknowledged");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lookups and searches.
#[allow(clippy::too_many_arguments)]
async fn queries(
    args: &Args,
    addrs: Addrs,
    data: &Path,
    load: &Load,
    ingest: &Ingest,
    seq: &AtomicU64,
    lat: &mut Vec<Latency>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().tcp_nodelay(true).timeout(Duration::from_secs(120)).build()?;
    let base = format!("http://{}", addrs.http);
    let mut rng = Rng(args.seed ^ 0x5EED);

    // The head tranche: sent now, read before the next checkpoint moves it into a file.
    let (files_before, _) = read_manifest(data)?;
    let mut client = connect(addrs).await?;
    let mut head_sends = Vec::new();
    let head_t = Instant::now();
    for _ in 0..args.head_requests {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        send(&mut client, load.stamped_bytes(n)).await?;
        head_sends.push(n);
    }
    progress!("sent {} head requests in {:.1} s", head_sends.len(), head_t.elapsed().as_secs_f64());
    let pick = |rng: &mut Rng, sends: &[u64]| -> ([u8; 16], u32) {
        let n = *rng.pick(sends);
        let traces: Vec<_> = load.sent_traces(n).collect();
        *rng.pick(&traces)
    };

    // Warm the connection (and the server's first request on a path).
    let _ = get_trace(&http, &base, "v2", &hex(&[1u8; 16]), Some(0)).await;
    let mut head_ok = true;
    for (class, sends) in [("head", &head_sends), ("span files", &ingest.sent)] {
        if sends.is_empty() {
            continue;
        }
        for path in ["v2", "v1"] {
            progress!("trace by id: {class}, /api/{}traces ...", if path == "v2" { "v2/" } else { "" });
            let mut l = Latency {
                what: format!("`/api/{}traces/<id>`, {class}", if path == "v2" { "v2/" } else { "" }),
                target: "< 10 ms p99",
                samples: Vec::with_capacity(args.lookups),
                note: String::new(),
            };
            let mut spans_total = 0u64;
            for _ in 0..args.lookups {
                let (id, spans) = pick(&mut rng, sends);
                let t = Instant::now();
                let got = get_trace(&http, &base, path, &hex(&id), Some(spans)).await?;
                l.samples.push(t.elapsed().as_secs_f64() * 1e3);
                spans_total += u64::from(got);
            }
            l.note = format!("{:.1} spans per trace", spans_total as f64 / args.lookups as f64);
            lat.push(l);
        }
        if class == "head" {
            let (files_after, _) = read_manifest(data)?;
            head_ok = files_after == files_before;
        }
    }
    if !head_ok {
        notes.push(
            "a checkpoint flushed the head tranche while its lookups ran: some \"head\" lookups read a span file"
                .into(),
        );
    }
    progress!("trace by id: absent ids ...");
    let mut l = Latency {
        what: "`/api/v2/traces/<id>`, absent (404)".into(),
        target: "",
        samples: Vec::new(),
        note: String::new(),
    };
    for _ in 0..args.lookups {
        let id = rng.id::<16>();
        let t = Instant::now();
        get_trace(&http, &base, "v2", &hex(&id), None).await?;
        l.samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.push(l);

    // Searches over the last hour.
    let queries = [
        ("span attribute", "{ span.http.status_code = 500 }"),
        ("resource attribute", "{ resource.service.name = \"payment\" }"),
        ("duration", "{ duration > 500ms }"),
        (
            "span attribute, rare",
            "{ span.http.status_code = 500 && resource.deployment.environment = \"canary\" && span.http.route = \"/payment/charge\" }",
        ),
    ];
    for (label, q) in queries {
        progress!("search: {q} ...");
        let mut l =
            Latency { what: format!("search, {label}: `{q}`"), target: "", samples: Vec::new(), note: String::new() };
        let mut found = (0, 0);
        let mut failed = None;
        for run in 0..=args.search_runs {
            let end = now_ns() / 1_000_000_000 + 1;
            let url = format!("{base}/api/search?q={}&start={}&end={end}&limit=20&spss=3", encode_query(q), end - 3600);
            let t = Instant::now();
            let resp = http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let body = resp.bytes().await?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if status != reqwest::StatusCode::OK {
                // A refused search (the 30-s query timeout) is a result too: report it and go on.
                let text = String::from_utf8_lossy(&body);
                failed = Some(format!("HTTP {status} after {ms:.0} ms: {}", text.trim()));
                break;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).context("search answer is not JSON")?;
            let traces = v["traces"].as_array().map_or(0, Vec::len);
            let inspected = v["metrics"]["inspectedTraces"].as_u64().unwrap_or(0);
            found = (traces, inspected);
            if run > 0 {
                l.samples.push(ms);
            }
        }
        l.note = match failed {
            Some(f) => {
                notes.push(format!("search `{q}` failed: {f}"));
                format!("**failed**: {f}")
            }
            None => format!("{} traces returned, {} inspected", found.0, fmt_int(found.1 as f64)),
        };
        lat.push(l);
    }
    Ok(())
}

/// Percent-encodes a query-string value.
fn encode_query(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// `prost` messages of Tempo's trace-by-id answers (`tempopb`), with the OTLP span types.
#[derive(Clone, PartialEq, prost::Message)]
struct TempoTrace {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TempoTraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TempoTrace>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

fn count_spans(rs: &[ResourceSpans]) -> u32 {
    rs.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u32).sum()
}

/// One trace by id as Grafana asks for it (protobuf); `expect` = the span count it must have, or
/// `None` for a 404. Returns the spans received.
async fn get_trace(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    id: &str,
    expect: Option<u32>,
) -> anyhow::Result<u32> {
    let url = if path == "v2" { format!("{base}/api/v2/traces/{id}") } else { format!("{base}/api/traces/{id}") };
    let resp = http
        .get(&url)
        .header(reqwest::header::ACCEPT, "application/protobuf")
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    match expect {
        None | Some(0) => {
            if status != reqwest::StatusCode::NOT_FOUND && expect.is_none() {
                bail!("GET {url}: expected 404, got {status}");
            }
            Ok(0)
        }
        Some(n) => {
            if status != reqwest::StatusCode::OK {
                bail!("GET {url}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            let got = if path == "v2" {
                let r = TempoTraceByIdResponse::decode(&*body).context("not a tempopb.TraceByIDResponse")?;
                if r.status != 0 {
                    bail!("GET {url}: partial trace: {}", r.message);
                }
                r.trace.map_or(0, |t| count_spans(&t.resource_spans))
            } else {
                count_spans(&TempoTrace::decode(&*body).context("not a tempopb.Trace")?.resource_spans)
            };
            if got != n {
                bail!("GET {url}: {got} spans, expected {n}");
            }
            Ok(got)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn report(args: &Args, ing: &Ingest, fl: &Flush, lat: &[Latency], notes: &[String], peak_end: Option<u64>) -> String {
    let mut o = String::new();
    let mib = |k: Option<u64>| k.map_or("-".into(), |k| format!("{}", k / 1024));
    let per_m = ing.server_cpu_s / (ing.spans as f64 / 1e6);
    let rate = ing.spans as f64 / ing.wall.as_secs_f64();
    let _ = writeln!(o, "\n## Ingest (OTLP/gRPC)\n");
    let _ = writeln!(
        o,
        "| spans | requests | wall s | spans/s | MB/s | server CPU-s | CPU-s per M spans | server cores busy | client CPU-s | other CPU-s | request p50 / p99 ms | RSS after ingest MiB | peak RSS MiB |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| {} | {} | {:.1} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} / {:.1} | {} | {} |",
        fmt_int(ing.spans as f64),
        fmt_int(ing.requests as f64),
        ing.wall.as_secs_f64(),
        fmt_int(rate),
        ing.bytes as f64 / 1e6 / ing.wall.as_secs_f64(),
        ing.server_cpu_s,
        per_m,
        ing.server_cpu_s / ing.wall.as_secs_f64(),
        ing.client_cpu_s,
        ing.other_cpu_s,
        ing.latency_p50_ms,
        ing.latency_p99_ms,
        mib(ing.rss_after_kib),
        mib(ing.peak_rss_kib),
    );
    let _ = writeln!(o, "\n## Storage (after the checkpoint that flushed every span)\n");
    let _ = writeln!(
        o,
        "| flush wait s | flush CPU-s | span files | traces/ bytes | bytes per span | parquet bytes | .tid bytes | allocated bytes | whole data folder bytes (WAL included) |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| {:.1} | {:.2} | {} | {} | {:.1} | {} | {} | {} | {} |",
        fl.wait.as_secs_f64(),
        fl.server_cpu_s,
        fl.files,
        fmt_int(fl.traces_bytes as f64),
        fl.traces_bytes as f64 / ing.spans as f64,
        fmt_int(fl.parquet_bytes as f64),
        fmt_int(fl.tid_bytes as f64),
        fmt_int(fl.traces_allocated as f64),
        fmt_int(fl.data_dir_bytes as f64),
    );
    if !lat.is_empty() {
        let _ = writeln!(o, "\n## Queries (client-side latency, one at a time)\n");
        let _ = writeln!(o, "| query | runs | p50 ms | p99 ms | max ms | target | |");
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---|---|");
        for l in lat {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} | {:.2} | {:.2} | {} | {} |",
                l.what,
                l.samples.len(),
                l.q(0.5),
                l.q(0.99),
                l.max(),
                l.target,
                l.note
            );
        }
    }
    let _ = writeln!(o, "\n## Targets\n");
    let _ = writeln!(o, "| figure | measured | target | |");
    let _ = writeln!(o, "|---|---:|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let _ =
        writeln!(o, "| span ingest, spans/s (wall) | {} | ≥ 200,000 | {} |", fmt_int(rate), verdict(rate >= 200_000.0));
    let worst = lat.iter().filter(|l| l.target == "< 10 ms p99").map(|l| l.q(0.99)).fold(f64::NAN, f64::max);
    if worst.is_finite() {
        let _ = writeln!(o, "| trace by id p99, worst class, ms | {worst:.2} | < 10 | {} |", verdict(worst < 10.0));
    }
    let _ = writeln!(o, "| server CPU-s per M spans | {per_m:.2} | | |");
    let _ = writeln!(o, "| bytes per span on disk | {:.1} | | |", fl.traces_bytes as f64 / ing.spans as f64);
    let _ = writeln!(o, "| peak RSS, MiB (whole run) | {} | | |", mib(peak_end));
    if !notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in notes {
            let _ = writeln!(o, "- {n}");
        }
    }
    let _ = args;
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_have_5_to_30_spans_over_several_services_with_valid_parents() {
        let load = Load::generate(8, 500, 7);
        let mut services_per_trace = Vec::new();
        for t in &load.templates {
            assert!(t.spans >= 500, "{}", t.spans);
            let mut by_trace: std::collections::HashMap<Vec<u8>, Vec<(String, &Span)>> = Default::default();
            for rs in &t.request.resource_spans {
                let svc = format!("{:?}", rs.resource.as_ref().unwrap().attributes[0].value);
                for sp in &rs.scope_spans[0].spans {
                    by_trace.entry(sp.trace_id.clone()).or_default().push((svc.clone(), sp));
                }
            }
            assert_eq!(by_trace.len(), t.traces.len());
            for tt in &t.traces {
                let spans = &by_trace[&tt.trace_id.to_vec()];
                assert_eq!(spans.len(), tt.spans as usize);
                assert!((5..=30).contains(&spans.len()), "{}", spans.len());
                let ids: std::collections::HashSet<&[u8]> = spans.iter().map(|(_, s)| &s.span_id[..]).collect();
                assert_eq!(ids.len(), spans.len(), "span ids are unique");
                let roots = spans.iter().filter(|(_, s)| s.parent_span_id.is_empty()).count();
                assert_eq!(roots, 1);
                for (_, s) in spans {
                    assert!(s.parent_span_id.is_empty() || ids.contains(&s.parent_span_id[..]));
                    assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
                    assert_eq!(s.span_id.len(), 8);
                }
                let svcs: std::collections::HashSet<&String> = spans.iter().map(|(s, _)| s).collect();
                services_per_trace.push(svcs.len());
            }
        }
        let multi = services_per_trace.iter().filter(|&&n| n >= 2).count();
        assert!(
            multi * 2 > services_per_trace.len(),
            "most traces cross services: {multi}/{}",
            services_per_trace.len()
        );
    }

    #[test]
    fn salted_sends_carry_the_ids_sent_traces_names() {
        let load = Load::generate(3, 100, 7);
        let r = load.stamped(5);
        let sent: std::collections::HashMap<[u8; 16], u32> = load.sent_traces(5).collect();
        let mut seen: std::collections::HashMap<[u8; 16], u32> = Default::default();
        for sp in r.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            *seen.entry(sp.trace_id.clone().try_into().unwrap()).or_default() += 1;
        }
        assert_eq!(seen, sent);
        let other: std::collections::HashMap<[u8; 16], u32> = load.sent_traces(5 + 3).collect();
        assert!(other.keys().all(|k| !sent.contains_key(k)), "another send of the same template has new ids");
    }

    #[test]
    fn some_server_spans_fail_and_some_spans_are_slow() {
        let load = Load::generate(40, 500, 7);
        let spans: Vec<&Span> = load
            .templates
            .iter()
            .flat_map(|t| &t.request.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let failed =
            spans.iter().filter(|s| s.status.as_ref().is_some_and(|st| st.code == StatusCode::Error as i32)).count();
        let slow = spans.iter().filter(|s| s.end_time_unix_nano - s.start_time_unix_nano > 500 * MS).count();
        assert!(failed * 100 > spans.len() && failed * 10 < spans.len(), "{failed} of {}", spans.len());
        assert!(slow > 0 && slow * 50 < spans.len(), "{slow} of {}", spans.len());
    }

    #[test]
    fn patched_bytes_equal_the_stamped_request() {
        let load = Load::generate(3, 200, 7);
        for seq in [0u64, 4, 11] {
            // Same shift for both: stamp by hand with a fixed shift.
            let t = load.template(seq);
            let shift = 123_456_789u64;
            let bytes = t.encoded.stamped(shift, salt_of(seq));
            let got = ExportTraceServiceRequest::decode(&*bytes).unwrap();
            let mut want = t.request.clone();
            for span in want.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
                span.start_time_unix_nano += shift;
                span.end_time_unix_nano += shift;
                span.events.iter_mut().for_each(|e| e.time_unix_nano += shift);
                salt_trace_id(&mut span.trace_id, salt_of(seq));
                salt_span_id(&mut span.span_id, salt_of(seq));
                salt_span_id(&mut span.parent_span_id, salt_of(seq));
            }
            assert_eq!(got, want);
            let events: usize = want
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| s.events.len())
                .sum();
            assert_eq!(t.encoded.times.len(), 2 * t.spans as usize + events);
        }
    }

    #[test]
    fn cli_parses() {
        let a = Args::try_parse_from(["traces_bench", "--spans", "1000", "--clients", "2"]).unwrap();
        assert_eq!((a.spans, a.clients, a.request_spans), (1000, 2, 500));
    }
}

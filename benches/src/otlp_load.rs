//! Realistic OTLP export requests, generated once before timing and re-stamped per send.
//!
//! - Spans: 100 per request, from 4 of 20 services (25 each: 5 traces of a server span with
//!   two HTTP client calls, a database call and an internal step), 8 attributes each, exception
//!   events on failed requests and a few other events, parent links, a few span links.
//! - Log records: 100 per request from 4 services, ~200-byte bodies, a severity mix, 3 attributes,
//!   trace context on half of them.
//! - Metric data points: 100 per request, one service (one resource) per request as an SDK
//!   exports them: 40 cumulative monotonic sums, 40 gauges, 20 explicit-bucket histograms, 3–4
//!   attributes each. 20 services × 100 series = 2,000 series, so series repeat across requests.
//!
//! A template is stamped at generation time `t0`; [`Load::stamped`] clones it and shifts every
//! timestamp by `now - t0` (start times of cumulative points excepted), and XORs a per-send salt
//! into trace and span ids so that every send carries new traces.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// An OTLP signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Metric data points.
    Metrics,
    /// Log records.
    Logs,
    /// Spans.
    Traces,
}

impl Signal {
    /// Every signal, in report order.
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    /// `metrics`, `logs`, `traces` (also the OTLP/HTTP path).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// What one item is.
    pub fn item_noun(self) -> &'static str {
        match self {
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
            Signal::Traces => "spans",
        }
    }
}

/// One export request of any signal.
#[derive(Clone, Debug, PartialEq)]
pub enum ExportRequest {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Log records.
    Logs(ExportLogsServiceRequest),
    /// Metric data points.
    Metrics(ExportMetricsServiceRequest),
}

impl ExportRequest {
    /// Items as OTLP's partial success counts them (a histogram data point is one item).
    pub fn items(&self) -> u64 {
        let n: usize = match self {
            ExportRequest::Traces(r) => {
                r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
            }
            ExportRequest::Logs(r) => {
                r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum()
            }
            ExportRequest::Metrics(r) => r
                .resource_metrics
                .iter()
                .flat_map(|r| &r.scope_metrics)
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.len(),
                    Some(metric::Data::Sum(s)) => s.data_points.len(),
                    Some(metric::Data::Histogram(h)) => h.data_points.len(),
                    Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(metric::Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                })
                .sum(),
        };
        n as u64
    }

    /// Protobuf size.
    pub fn encoded_len(&self) -> usize {
        match self {
            ExportRequest::Traces(r) => r.encoded_len(),
            ExportRequest::Logs(r) => r.encoded_len(),
            ExportRequest::Metrics(r) => r.encoded_len(),
        }
    }

    /// Protobuf bytes.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            ExportRequest::Traces(r) => r.encode_to_vec(),
            ExportRequest::Logs(r) => r.encode_to_vec(),
            ExportRequest::Metrics(r) => r.encode_to_vec(),
        }
    }

    /// Shifts timestamps by `shift_ns` and salts ids (see the module docs).
    fn restamp(&mut self, shift_ns: u64, salt: u64) {
        let sh = |t: &mut u64| {
            if *t != 0 {
                *t = t.wrapping_add(shift_ns);
            }
        };
        match self {
            ExportRequest::Traces(r) => {
                for span in r.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
                    sh(&mut span.start_time_unix_nano);
                    sh(&mut span.end_time_unix_nano);
                    for e in &mut span.events {
                        sh(&mut e.time_unix_nano);
                    }
                    salt_trace_id(&mut span.trace_id, salt);
                    salt_span_id(&mut span.span_id, salt);
                    salt_span_id(&mut span.parent_span_id, salt);
                    for l in &mut span.links {
                        salt_trace_id(&mut l.trace_id, salt);
                        salt_span_id(&mut l.span_id, salt);
                    }
                }
            }
            ExportRequest::Logs(r) => {
                for rec in r.resource_logs.iter_mut().flat_map(|r| &mut r.scope_logs).flat_map(|s| &mut s.log_records) {
                    sh(&mut rec.time_unix_nano);
                    sh(&mut rec.observed_time_unix_nano);
                    salt_trace_id(&mut rec.trace_id, salt);
                    salt_span_id(&mut rec.span_id, salt);
                }
            }
            ExportRequest::Metrics(r) => {
                // Counters keep growing: about 5 per second per series.
                let growth = shift_ns as f64 * 5e-9;
                for m in r.resource_metrics.iter_mut().flat_map(|r| &mut r.scope_metrics).flat_map(|s| &mut s.metrics) {
                    match &mut m.data {
                        Some(metric::Data::Gauge(g)) => {
                            g.data_points.iter_mut().for_each(|p| sh(&mut p.time_unix_nano))
                        }
                        Some(metric::Data::Sum(s)) => {
                            for p in &mut s.data_points {
                                sh(&mut p.time_unix_nano);
                                if let Some(number_data_point::Value::AsDouble(v)) = &mut p.value {
                                    *v += growth.floor();
                                }
                            }
                        }
                        Some(metric::Data::Histogram(h)) => {
                            h.data_points.iter_mut().for_each(|p| sh(&mut p.time_unix_nano));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// XORs `salt` into the low 8 bytes of a 16-byte trace id (other lengths are left alone).
pub fn salt_trace_id(id: &mut [u8], salt: u64) {
    if id.len() == 16 {
        xor8(&mut id[8..], salt);
    }
}

/// XORs a rotation of `salt` into an 8-byte span id (other lengths are left alone).
pub fn salt_span_id(id: &mut [u8], salt: u64) {
    if id.len() == 8 {
        xor8(id, salt.rotate_left(29));
    }
}

fn xor8(b: &mut [u8], salt: u64) {
    for (x, s) in b.iter_mut().zip(salt.to_le_bytes()) {
        *x ^= s;
    }
    if b.iter().all(|&x| x == 0) {
        b[0] = 1; // ids must not be all zero
    }
}

/// The pre-generated requests of one signal.
#[derive(Clone, Debug)]
pub struct Load {
    /// Which signal.
    pub signal: Signal,
    /// The templates.
    pub requests: Vec<ExportRequest>,
    /// `(items, protobuf bytes)` of each template; stamping changes neither (timestamps are
    /// `fixed64`, values `double`, ids keep their length).
    pub sizes: Vec<(u64, usize)>,
    /// When the templates were stamped, ns since the epoch.
    pub t0_ns: u64,
}

impl Load {
    /// `n` distinct requests of `signal`, stamped now; deterministic for a given `seed`.
    pub fn generate(signal: Signal, n: usize, seed: u64) -> Load {
        let t0_ns = now_ns();
        let mut g = Gen { rng: Rng(seed ^ (signal as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)), t0: t0_ns };
        let requests: Vec<ExportRequest> = (0..n.max(1))
            .map(|k| match signal {
                Signal::Traces => ExportRequest::Traces(g.traces(k)),
                Signal::Logs => ExportRequest::Logs(g.logs(k)),
                Signal::Metrics => ExportRequest::Metrics(g.metrics(k)),
            })
            .collect();
        let sizes = requests.iter().map(|r| (r.items(), r.encoded_len())).collect();
        Load { signal, requests, sizes, t0_ns }
    }

    /// Template `i` (modulo), re-stamped to the current time and salted with `seq` (the global
    /// send number).
    pub fn stamped(&self, i: usize, seq: u64) -> ExportRequest {
        let mut r = self.requests[i % self.requests.len()].clone();
        let shift = now_ns().saturating_sub(self.t0_ns);
        r.restamp(shift, splitmix(seq.wrapping_add(1)));
        r
    }

    /// `(items, protobuf bytes)` of template `i` (modulo), stamped or not.
    pub fn size(&self, i: usize) -> (u64, usize) {
        self.sizes[i % self.sizes.len()]
    }

    /// Items per request, on average.
    pub fn mean_items(&self) -> f64 {
        self.sizes.iter().map(|s| s.0).sum::<u64>() as f64 / self.sizes.len() as f64
    }

    /// Protobuf bytes per request, on average.
    pub fn mean_bytes(&self) -> f64 {
        self.sizes.iter().map(|s| s.1).sum::<usize>() as f64 / self.sizes.len() as f64
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn id<const N: usize>(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(N);
        while out.len() < N {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(N);
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

const SERVICES: [&str; 20] = [
    "frontend",
    "checkout",
    "cart",
    "payment",
    "shipping",
    "currency",
    "email",
    "ad",
    "recommendation",
    "quote",
    "product-catalog",
    "fraud-detection",
    "accounting",
    "inventory",
    "auth",
    "search",
    "notification",
    "pricing",
    "user-profile",
    "gateway",
];
const LANGUAGES: [&str; 5] = ["java", "go", "python", "nodejs", "rust"];
const METHODS: [&str; 2] = ["GET", "POST"];
const ROUTES: [&str; 5] =
    ["/api/orders/{id}", "/api/cart", "/api/products", "/api/checkout", "/api/users/{id}/profile"];
const REGIONS: [&str; 4] = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"];
const HIST_BOUNDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
const MS: u64 = 1_000_000;

/// A string attribute.
pub fn s(k: &str, v: impl Into<String>) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(v)) }),
        ..Default::default()
    }
}

/// A boolean attribute.
pub fn b(k: &str, v: bool) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::BoolValue(v)) }),
        ..Default::default()
    }
}

fn resource(svc: usize, instance: usize) -> Resource {
    let name = SERVICES[svc % SERVICES.len()];
    Resource {
        attributes: vec![
            s("service.name", name),
            s("service.namespace", "shop"),
            s("service.version", format!("1.{}.{}", svc % 7, instance)),
            s(
                "service.instance.id",
                format!("{name}-{instance}-{:08x}", splitmix(svc as u64 * 31 + instance as u64) as u32),
            ),
            s("deployment.environment", "bench"),
            s("host.name", format!("node-{}", (svc * 3 + instance) % 8)),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", LANGUAGES[svc % LANGUAGES.len()]),
            s("telemetry.sdk.version", "1.44.0"),
        ],
        ..Default::default()
    }
}

fn scope(name: &str) -> InstrumentationScope {
    InstrumentationScope { name: name.into(), version: "2.10.0".into(), ..Default::default() }
}

struct Gen {
    rng: Rng,
    t0: u64,
}

impl Gen {
    // ---- traces ----

    fn traces(&mut self, req: usize) -> ExportTraceServiceRequest {
        let resource_spans = (0..4)
            .map(|k| {
                let svc = (req * 4 + k) % SERVICES.len();
                let spans = (0..5).flat_map(|_| self.trace(svc)).collect();
                ResourceSpans {
                    resource: Some(resource(svc, req % 3)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope("io.opentelemetry.http")),
                        spans,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportTraceServiceRequest { resource_spans }
    }

    /// Five spans of one trace as one service sees it.
    fn trace(&mut self, svc: usize) -> Vec<Span> {
        let r = &mut self.rng;
        let trace_id = r.id::<16>();
        let root_id = r.id::<8>();
        let method = *r.pick(&METHODS);
        let route = *r.pick(&ROUTES);
        let status: i64 = *r.pick(&[200, 200, 200, 200, 200, 200, 201, 404, 500, 503]);
        let dur = (5 + r.below(200)) * MS;
        let start = self.t0 - (500 + r.below(1000)) * MS - dur;
        let target = route.replace("{id}", &r.below(100_000).to_string());
        let failed = status >= 500;
        let mut events = Vec::new();
        if failed {
            events.push(Event {
                time_unix_nano: start + dur - MS,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "java.net.SocketTimeoutException"),
                    s(
                        "exception.message",
                        format!("Read timed out after 3000 ms calling {}", SERVICES[(svc + 1) % 20]),
                    ),
                    b("exception.escaped", false),
                ],
                ..Default::default()
            });
        }
        let mut links = Vec::new();
        if r.chance(10) {
            links.push(Link { trace_id: r.id::<16>(), span_id: r.id::<8>(), ..Default::default() });
        }
        let root = Span {
            trace_id: trace_id.clone(),
            span_id: root_id.clone(),
            name: format!("{method} {route}"),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes: vec![
                s("http.method", method),
                s("http.route", route),
                s("http.target", target),
                s("http.scheme", "http"),
                i("http.status_code", status),
                s("net.host.name", format!("{}.shop.svc", SERVICES[svc])),
                i("net.host.port", 8080),
                s(
                    "http.user_agent",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
                ),
            ],
            events,
            links,
            status: Some(Status {
                code: if failed { StatusCode::Error } else { StatusCode::Unset } as i32,
                message: if failed { "upstream timed out".into() } else { String::new() },
            }),
            flags: 0x100 | 1,
            ..Default::default()
        };
        let step = dur / 5;
        let child =
            |r: &mut Rng, n: u64, name: String, kind: SpanKind, attributes: Vec<KeyValue>, events: Vec<Event>| Span {
                trace_id: trace_id.clone(),
                span_id: r.id::<8>(),
                parent_span_id: root_id.clone(),
                name,
                kind: kind as i32,
                start_time_unix_nano: start + n * step,
                end_time_unix_nano: start + n * step + step * 9 / 10,
                attributes,
                events,
                status: Some(Status::default()),
                flags: 0x100 | 1,
                ..Default::default()
            };
        let mut spans = vec![root];
        for n in 0..2u64 {
            let peer = SERVICES[(svc + 1 + n as usize * 3 + r.below(5) as usize) % 20];
            let m = *r.pick(&METHODS);
            let peer_status: i64 = if failed && n == 1 { 504 } else { 200 };
            let attrs = vec![
                s("http.method", m),
                s("http.url", format!("http://{peer}.shop.svc:8080/internal/{}", r.hex(8))),
                i("http.status_code", peer_status),
                s("net.peer.name", format!("{peer}.shop.svc")),
                i("net.peer.port", 8080),
                s("http.flavor", "1.1"),
                i("http.request_content_length", r.below(4096) as i64),
                s("thread.name", format!("http-client-{}", r.below(16))),
            ];
            spans.push(child(r, n + 1, m.to_string(), SpanKind::Client, attrs, Vec::new()));
        }
        let table = *r.pick(&["orders", "carts", "products", "users", "payments"]);
        let db_attrs = vec![
            s("db.system", "postgresql"),
            s("db.name", "shop"),
            s("db.operation", "SELECT"),
            s("db.sql.table", table),
            s(
                "db.statement",
                format!(
                    "SELECT id, status, total, updated_at FROM {table} WHERE customer_id = $1 ORDER BY updated_at DESC LIMIT 50"
                ),
            ),
            s("net.peer.name", "postgres.shop.svc"),
            i("net.peer.port", 5432),
            s("db.user", "app"),
        ];
        spans.push(child(r, 3, format!("SELECT shop.{table}"), SpanKind::Client, db_attrs, Vec::new()));
        let hit = r.chance(70);
        let internal_events = if r.chance(25) {
            vec![Event {
                time_unix_nano: start + 4 * step + MS / 2,
                name: if hit { "cache.hit" } else { "cache.miss" }.into(),
                attributes: vec![s("cache.key", format!("{table}:{}", r.below(10_000)))],
                ..Default::default()
            }]
        } else {
            Vec::new()
        };
        let internal_attrs = vec![
            s("code.function", "renderResponse"),
            s("code.namespace", format!("com.shop.{}.web.ResponseRenderer", SERVICES[svc].replace('-', "_"))),
            s("code.filepath", "src/main/java/com/shop/web/ResponseRenderer.java"),
            i("code.lineno", 40 + r.below(200) as i64),
            s("thread.name", format!("http-nio-8080-exec-{}", r.below(32))),
            i("thread.id", 30 + r.below(64) as i64),
            i("app.items", r.below(50) as i64),
            b("app.cache.hit", hit),
        ];
        spans.push(child(r, 4, "render response".into(), SpanKind::Internal, internal_attrs, internal_events));
        spans
    }

    // ---- logs ----

    fn logs(&mut self, req: usize) -> ExportLogsServiceRequest {
        let resource_logs = (0..4)
            .map(|k| {
                let svc = (req * 4 + k) % SERVICES.len();
                let log_records = (0..25).map(|_| self.log_record(svc)).collect();
                ResourceLogs {
                    resource: Some(resource(svc, req % 3)),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope(&format!("com.shop.{}", SERVICES[svc].replace('-', "_")))),
                        log_records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            })
            .collect();
        ExportLogsServiceRequest { resource_logs }
    }

    fn log_record(&mut self, svc: usize) -> LogRecord {
        let r = &mut self.rng;
        let time = self.t0 - (100 + r.below(2000)) * MS;
        let (severity, text) = *r.pick(&[
            (9, "INFO"),
            (9, "INFO"),
            (9, "INFO"),
            (9, "INFO"),
            (9, "INFO"),
            (9, "INFO"),
            (9, "INFO"),
            (5, "DEBUG"),
            (13, "WARN"),
            (17, "ERROR"),
        ]);
        let route = *r.pick(&ROUTES);
        let mut body = match r.below(4) {
            0 => format!(
                "Order {} for customer {} placed: {} items, total {}.{:02} EUR, payment {} authorised in {} ms",
                r.hex(12),
                r.below(1_000_000),
                1 + r.below(9),
                r.below(500),
                r.below(100),
                r.pick(&["card", "paypal", "sepa", "voucher"]),
                r.below(900)
            ),
            1 => format!(
                "{} {} -> {} in {} ms, bytes={}, client={}.{}.{}.{}",
                r.pick(&METHODS),
                route.replace("{id}", &r.below(100_000).to_string()),
                r.pick(&[200, 200, 200, 201, 404, 500]),
                r.below(2000),
                r.below(100_000),
                10,
                r.below(255),
                r.below(255),
                r.below(255)
            ),
            2 => format!(
                "Retrying call to {}.shop.svc after error: connection reset by peer (attempt {}/5, backoff {} ms)",
                SERVICES[(svc + 1 + r.below(19) as usize) % 20],
                1 + r.below(5),
                100 * (1 + r.below(30))
            ),
            _ => format!(
                "Slow query on table {} took {} ms (threshold 250 ms), rows={}, plan=IndexScan using {}_pkey",
                r.pick(&["orders", "carts", "products"]),
                250 + r.below(5000),
                r.below(10_000),
                r.pick(&["orders", "carts", "products"])
            ),
        };
        // Pad to about 200 bytes with the context a real logger appends.
        body.push_str(&format!(" region={} request_id={}", r.pick(&REGIONS), r.hex(32)));
        while body.len() < 190 {
            body.push_str(&format!(" k{}={}", r.below(10), r.hex(6)));
        }
        let (trace_id, span_id, flags) =
            if r.chance(50) { (r.id::<16>(), r.id::<8>(), 1) } else { (Vec::new(), Vec::new(), 0) };
        LogRecord {
            time_unix_nano: time,
            observed_time_unix_nano: time + MS,
            severity_number: severity,
            severity_text: text.into(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
            attributes: vec![
                s("code.namespace", format!("com.shop.{}.OrderService", SERVICES[svc].replace('-', "_"))),
                s("thread.name", format!("http-nio-8080-exec-{}", r.below(32))),
                s("http.route", route),
            ],
            flags,
            trace_id,
            span_id,
            ..Default::default()
        }
    }

    // ---- metrics ----

    /// Request `req` carries all 100 series of service `req % 20`; `req / 20` varies the values.
    fn metrics(&mut self, req: usize) -> ExportMetricsServiceRequest {
        let svc = req % SERVICES.len();
        let t = self.t0 - 500 * MS;
        let start = self.t0 - 3600 * 1_000 * MS;
        let r = &mut self.rng;
        let cumulative = AggregationTemporality::Cumulative as i32;
        let number = |attributes: Vec<KeyValue>, start: u64, v: f64| NumberDataPoint {
            attributes,
            start_time_unix_nano: start,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        };

        let mut requests = Vec::new();
        let mut durations = Vec::new();
        for m in METHODS {
            for route in ROUTES {
                for status in [200i64, 500] {
                    let attrs = || {
                        vec![
                            s("http.request.method", m),
                            s("http.route", route),
                            i("http.response.status_code", status),
                            s("network.protocol.version", "1.1"),
                        ]
                    };
                    let base = if status == 200 { 100_000.0 } else { 300.0 };
                    requests.push(number(attrs(), start, (base * (1.0 + r.f64())).floor()));
                    let mut bucket_counts: Vec<u64> =
                        (0..=HIST_BOUNDS.len()).map(|k| r.below(200 / (k as u64 + 1) + 1)).collect();
                    bucket_counts[0] += 1;
                    let count = bucket_counts.iter().sum();
                    durations.push(HistogramDataPoint {
                        attributes: attrs()[..3].to_vec(),
                        start_time_unix_nano: start,
                        time_unix_nano: t,
                        count,
                        sum: Some(count as f64 * 0.08 * (1.0 + r.f64())),
                        bucket_counts,
                        explicit_bounds: HIST_BOUNDS.to_vec(),
                        min: Some(0.001),
                        max: Some(9.0),
                        ..Default::default()
                    });
                }
            }
        }
        let mut jobs = Vec::new();
        for job in ["email", "invoice", "reindex", "cleanup", "export"] {
            for outcome in ["ok", "retry", "failed", "skipped"] {
                let attrs = vec![s("job.type", job), s("job.outcome", outcome), s("queue", "default")];
                jobs.push(number(attrs, start, (1000.0 * (1.0 + r.f64())).floor()));
            }
        }
        let mut depth = Vec::new();
        for q in 0..10 {
            for partition in 0..2 {
                let attrs = vec![
                    s("messaging.destination.name", format!("orders.events.{q}")),
                    i("messaging.destination.partition.id", partition),
                    s("messaging.system", "kafka"),
                ];
                depth.push(number(attrs, 0, r.below(5000) as f64));
            }
        }
        let mut memory = Vec::new();
        for kind in ["heap", "non_heap", "stack", "code", "mapped"] {
            for pool in ["eden", "survivor", "old", "metaspace"] {
                let attrs = vec![
                    s("process.runtime.memory.type", kind),
                    s("process.runtime.memory.pool", pool),
                    s("process.runtime.name", "jvm"),
                ];
                memory.push(number(attrs, 0, (r.below(512) << 20) as f64));
            }
        }
        let sum = |data_points| {
            metric::Data::Sum(Sum { data_points, aggregation_temporality: cumulative, is_monotonic: true })
        };
        let gauge = |data_points| metric::Data::Gauge(Gauge { data_points });
        let family = |name: &str, unit: &str, description: &str, data| Metric {
            name: name.into(),
            unit: unit.into(),
            description: description.into(),
            data: Some(data),
            ..Default::default()
        };
        let metrics = vec![
            family("http.server.requests", "{request}", "HTTP requests served", sum(requests)),
            family("app.jobs.completed", "{job}", "Background jobs completed", sum(jobs)),
            family("messaging.queue.depth", "{message}", "Messages waiting per partition", gauge(depth)),
            family("process.runtime.memory.usage", "By", "Memory in use per pool", gauge(memory)),
            family(
                "http.server.request.duration",
                "s",
                "Duration of HTTP server requests",
                metric::Data::Histogram(Histogram { data_points: durations, aggregation_temporality: cumulative }),
            ),
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource(svc, 0)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope("io.opentelemetry.runtime")),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        for signal in Signal::ALL {
            let load = Load::generate(signal, 40, 7);
            assert_eq!(load.requests.len(), 40);
            for r in &load.requests {
                assert_eq!(r.items(), 100, "{signal:?}");
            }
            assert!(load.mean_bytes() > 5_000.0, "{signal:?}: {}", load.mean_bytes());
        }
    }

    #[test]
    fn metrics_cover_2000_series() {
        let load = Load::generate(Signal::Metrics, 40, 7);
        let mut series = std::collections::HashSet::new();
        for r in &load.requests {
            let ExportRequest::Metrics(m) = r else { unreachable!() };
            let rm = &m.resource_metrics[0];
            let svc = format!("{:?}", rm.resource.as_ref().unwrap().attributes[0]);
            for metric in &rm.scope_metrics[0].metrics {
                let attrs: Vec<String> = match metric.data.as_ref().unwrap() {
                    metric::Data::Sum(s) => s.data_points.iter().map(|p| format!("{:?}", p.attributes)).collect(),
                    metric::Data::Gauge(g) => g.data_points.iter().map(|p| format!("{:?}", p.attributes)).collect(),
                    metric::Data::Histogram(h) => h.data_points.iter().map(|p| format!("{:?}", p.attributes)).collect(),
                    _ => unreachable!(),
                };
                for a in attrs {
                    series.insert((svc.clone(), metric.name.clone(), a));
                }
            }
        }
        assert_eq!(series.len(), 2000);
    }

    #[test]
    fn log_bodies_are_about_200_bytes() {
        let load = Load::generate(Signal::Logs, 4, 7);
        let ExportRequest::Logs(r) = &load.requests[0] else { unreachable!() };
        for rec in &r.resource_logs[0].scope_logs[0].log_records {
            let Some(any_value::Value::StringValue(body)) = &rec.body.as_ref().unwrap().value else { unreachable!() };
            assert!((190..=300).contains(&body.len()), "{} bytes: {body}", body.len());
        }
    }

    #[test]
    fn stamping_keeps_sizes() {
        for signal in Signal::ALL {
            let load = Load::generate(signal, 3, 7);
            for k in 0..3 {
                let r = load.stamped(k, 99);
                assert_eq!((r.items(), r.encoded_len()), load.size(k), "{signal:?}");
            }
        }
    }

    #[test]
    fn stamping_moves_times_and_keeps_parent_links() {
        let mut load = Load::generate(Signal::Traces, 2, 7);
        load.t0_ns -= 60_000 * MS; // generated a minute ago
        let ExportRequest::Traces(before) = &load.requests[0] else { unreachable!() };
        let ExportRequest::Traces(after) = load.stamped(0, 5) else { unreachable!() };
        let (b, a) = (&before.resource_spans[0].scope_spans[0].spans, &after.resource_spans[0].scope_spans[0].spans);
        let moved = a[0].start_time_unix_nano - b[0].start_time_unix_nano;
        assert!(moved >= 60_000 * MS, "{moved}");
        assert_ne!(a[0].trace_id, b[0].trace_id);
        assert_eq!(a[1].trace_id, a[0].trace_id);
        assert_eq!(a[1].parent_span_id, a[0].span_id);
        assert_eq!(a[0].trace_id.len(), 16);
        assert_eq!(a[1].span_id.len(), 8);
        assert!(a[0].parent_span_id.is_empty());
    }
}

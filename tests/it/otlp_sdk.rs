//! The OpenTelemetry Rust SDK's own OTLP exporters (gRPC with gzip, HTTP protobuf, HTTP JSON)
//! send traces, logs and metrics; every item is read back through the storage read API, field by
//! field.

use opentelemetry::logs::{AnyValue as OtelAny, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanKind as OtelKind, Status, TraceContextExt as _, TraceFlags, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue as OtelKv, StringValue, Value};
use opentelemetry_otlp::{
    Compression, LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource as SdkResource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use storage::Reader as _;
use storage::model::{AnyValue, KeyValue, SpanKind, StatusCode, TraceId};

use crate::support::TestServer;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl Transport {
    fn service(self) -> &'static str {
        match self {
            Transport::Grpc => "sdk-grpc",
            Transport::HttpProtobuf => "sdk-http-protobuf",
            Transport::HttpJson => "sdk-http-json",
        }
    }
}

struct Sent {
    trace_id: TraceId,
    parent_span_id: storage::model::SpanId,
    link_trace: TraceId,
}

fn resource(t: Transport) -> SdkResource {
    SdkResource::builder_empty()
        .with_service_name(t.service())
        .with_attributes([
            OtelKv::new("service.namespace", "it"),
            OtelKv::new("service.instance.id", "i-1"),
            OtelKv::new("deployment.environment", "test"),
            OtelKv::new("host.cores", 2i64),
        ])
        .build()
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("it-scope").with_version("1.2.3").build()
}

/// Emits one trace (two spans), one log record and three instruments through `t`.
fn export_everything(srv: &TestServer, t: Transport) -> Sent {
    let (span_exp, log_exp, metric_exp) = match t {
        Transport::Grpc => {
            // tonic channels must be created inside a Tokio runtime.
            let _g = srv.rt.enter();
            let ep = srv.otlp_grpc();
            (
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&ep)
                    .with_compression(Compression::Gzip)
                    .build()
                    .unwrap(),
                LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(&ep)
                    .with_compression(Compression::Gzip)
                    .build()
                    .unwrap(),
                MetricExporter::builder().with_tonic().with_endpoint(&ep).build().unwrap(),
            )
        }
        Transport::HttpProtobuf | Transport::HttpJson => {
            let proto = if matches!(t, Transport::HttpJson) { Protocol::HttpJson } else { Protocol::HttpBinary };
            // The JSON variant goes to the main port's /v1/*, the protobuf one to the OTLP port.
            let base = if matches!(t, Transport::HttpJson) { srv.http() } else { srv.otlp_http() };
            (
                // Spans over HTTP are gzip-compressed; logs and metrics are not.
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(proto)
                    .with_compression(Compression::Gzip)
                    .with_endpoint(format!("{base}/v1/traces"))
                    .build()
                    .unwrap(),
                LogExporter::builder()
                    .with_http()
                    .with_protocol(proto)
                    .with_endpoint(format!("{base}/v1/logs"))
                    .build()
                    .unwrap(),
                MetricExporter::builder()
                    .with_http()
                    .with_protocol(proto)
                    .with_endpoint(format!("{base}/v1/metrics"))
                    .build()
                    .unwrap(),
            )
        }
    };
    let tracer_provider =
        SdkTracerProvider::builder().with_resource(resource(t)).with_simple_exporter(span_exp).build();
    let logger_provider = SdkLoggerProvider::builder().with_resource(resource(t)).with_simple_exporter(log_exp).build();
    let meter_provider =
        SdkMeterProvider::builder().with_resource(resource(t)).with_periodic_exporter(metric_exp).build();

    let tracer = tracer_provider.tracer_with_scope(scope());
    let link_ctx = SpanContext::new(
        opentelemetry::trace::TraceId::from_hex("5b8efff798038103d269b633813fc60c").unwrap(),
        opentelemetry::trace::SpanId::from_hex("eee19b7ec3c1b174").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "x")]).unwrap(),
    );
    let mut parent = tracer
        .span_builder("GET /checkout")
        .with_kind(OtelKind::Server)
        .with_attributes([
            OtelKv::new("http.route", "/checkout"),
            OtelKv::new("retry", true),
            OtelKv::new("http.status_code", 500i64),
            OtelKv::new("ratio", 0.25f64),
            OtelKv::new("tags", Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("b")]))),
        ])
        .with_links(vec![Link::with_context(link_ctx.clone())])
        .start(&tracer);
    parent.add_event("cache miss", vec![OtelKv::new("key", "cart:42")]);
    let parent_ctx = parent.span_context().clone();
    {
        let cx = opentelemetry::Context::current().with_remote_span_context(parent_ctx.clone());
        let mut child =
            tracer.span_builder("SELECT carts").with_kind(OtelKind::Client).start_with_context(&tracer, &cx);
        child.set_attribute(OtelKv::new("db.system", "postgresql"));
        child.end();
    }
    parent.set_status(Status::error("payment failed"));
    parent.end();

    let logger = logger_provider.logger_with_scope(scope());
    let mut rec = logger.create_log_record();
    rec.set_body(OtelAny::from("payment failed for cart 42"));
    rec.set_severity_number(Severity::Error);
    rec.set_severity_text("ERROR");
    rec.add_attribute("cart.id", 42i64);
    rec.add_attribute("user", "alice");
    rec.set_trace_context(parent_ctx.trace_id(), parent_ctx.span_id(), Some(TraceFlags::SAMPLED));
    logger.emit(rec);

    let meter = meter_provider.meter_with_scope(scope());
    let counter = meter.u64_counter("it.requests").with_unit("{request}").with_description("Requests served").build();
    counter.add(3, &[OtelKv::new("route", "/a")]);
    let hist = meter.f64_histogram("it.latency").with_unit("ms").with_boundaries(vec![10.0, 100.0]).build();
    hist.record(5.0, &[]);
    hist.record(50.0, &[]);
    let gauge = meter.f64_gauge("it.temperature").with_unit("Cel").build();
    gauge.record(21.5, &[]);

    tracer_provider.force_flush().unwrap();
    logger_provider.force_flush().unwrap();
    meter_provider.force_flush().unwrap();
    {
        let _g = srv.rt.enter();
        tracer_provider.shutdown().unwrap();
        logger_provider.shutdown().unwrap();
        meter_provider.shutdown().unwrap();
    }
    Sent {
        trace_id: TraceId(parent_ctx.trace_id().to_bytes()),
        parent_span_id: storage::model::SpanId(parent_ctx.span_id().to_bytes()),
        link_trace: TraceId(link_ctx.trace_id().to_bytes()),
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> &'a AnyValue {
    &attrs.iter().find(|kv| kv.key == key).unwrap_or_else(|| panic!("attribute {key} missing in {attrs:?}")).value
}

#[test]
fn sdk_exporters_round_trip_every_signal() {
    let srv = TestServer::start(|_| {});
    for t in [Transport::Grpc, Transport::HttpProtobuf, Transport::HttpJson] {
        let sent = export_everything(&srv, t);
        let store = srv.storage();
        check_trace(&store, t, &sent);
        check_logs(&store, t, &sent);
        check_metrics(&store, t);
        check_tempo(&srv, t, &sent);
    }
}

/// Tempo's `TraceByIDResponse` as Grafana decodes it: field 1 is `Trace`, whose field 1 is
/// repeated OTLP `ResourceSpans`.
#[derive(Clone, PartialEq, prost::Message)]
struct TempoTraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<opentelemetry_proto::tonic::trace::v1::TracesData>,
}

/// The same trace through `/api/v2/traces/<id>` (protobuf), decoded and checked field by field
/// against what the SDK sent.
fn check_tempo(srv: &TestServer, t: Transport, sent: &Sent) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use prost::Message as _;
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/api/v2/traces/{}", srv.http(), sent.trace_id.to_hex()))
        .header("accept", "application/protobuf")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{t:?}");
    let body = resp.bytes().unwrap();
    let trace = TempoTraceByIdResponse::decode(&*body).unwrap().trace.expect("trace");
    assert_eq!(trace.resource_spans.len(), 1, "{t:?}");
    let rs = &trace.resource_spans[0];
    let res_attr = |k: &str| {
        rs.resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(res_attr("service.name"), Some(V::StringValue(t.service().into())));
    assert_eq!(res_attr("host.cores"), Some(V::IntValue(2)));
    let ss = &rs.scope_spans[0];
    assert_eq!(ss.scope.as_ref().unwrap().name, "it-scope");
    assert_eq!(ss.scope.as_ref().unwrap().version, "1.2.3");
    assert_eq!(ss.spans.len(), 2);
    let p = ss.spans.iter().find(|s| s.parent_span_id.is_empty()).expect("root");
    let c = ss.spans.iter().find(|s| !s.parent_span_id.is_empty()).expect("child");
    assert_eq!(p.trace_id, sent.trace_id.0.to_vec());
    assert_eq!(p.span_id, sent.parent_span_id.0.to_vec());
    assert_eq!(p.name, "GET /checkout");
    assert_eq!(p.kind, 2);
    let status = p.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "payment failed"));
    let attr =
        |k: &str| p.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value);
    assert_eq!(attr("http.route"), Some(V::StringValue("/checkout".into())));
    assert_eq!(attr("retry"), Some(V::BoolValue(true)));
    assert_eq!(attr("http.status_code"), Some(V::IntValue(500)));
    assert_eq!(attr("ratio"), Some(V::DoubleValue(0.25)));
    match attr("tags") {
        Some(V::ArrayValue(a)) => assert_eq!(a.values.len(), 2),
        other => panic!("tags: {other:?}"),
    }
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].name, "cache miss");
    assert_eq!(p.links.len(), 1);
    assert_eq!(p.links[0].trace_id, sent.link_trace.0.to_vec());
    assert_eq!(p.links[0].trace_state, "vendor=x");
    assert!(p.end_time_unix_nano >= p.start_time_unix_nano && p.start_time_unix_nano > 0);
    assert_eq!(c.parent_span_id, sent.parent_span_id.0.to_vec());
    assert_eq!(c.name, "SELECT carts");
    assert_eq!(c.kind, 3);
    // Stored spans and served spans agree exactly.
    let stored = srv.storage().trace_store().trace(sent.trace_id);
    let served: Vec<_> = ss.spans.iter().map(|s| s.span_id.clone()).collect();
    let expected: Vec<_> = stored.iter().map(|s| s.span.span_id.0.to_vec()).collect();
    assert_eq!(served, expected);
}

fn check_trace(store: &storage::Storage, t: Transport, sent: &Sent) {
    let spans = store.trace_store().trace(sent.trace_id);
    assert_eq!(spans.len(), 2, "{t:?}: {spans:#?}");
    let parent = spans.iter().find(|s| s.span.parent_span_id.is_none()).expect("root span");
    let child = spans.iter().find(|s| s.span.parent_span_id.is_some()).expect("child span");
    assert_eq!(parent.resource.attr_str("service.name"), Some(t.service()));
    assert_eq!(parent.resource.attr_str("deployment.environment"), Some("test"));
    assert_eq!(attr(&parent.resource.attributes, "host.cores"), &AnyValue::Int(2));
    assert_eq!(parent.scope.name, "it-scope");
    assert_eq!(parent.scope.version, "1.2.3");
    let p = &parent.span;
    assert_eq!(p.span_id, sent.parent_span_id);
    assert_eq!(p.name, "GET /checkout");
    assert_eq!(p.kind, SpanKind::Server);
    assert_eq!(p.status_code, StatusCode::Error);
    assert_eq!(p.status_message, "payment failed");
    assert!(p.end_time_ns >= p.start_time_ns && p.start_time_ns > 0);
    assert_eq!(attr(&p.attributes, "http.route"), &AnyValue::String("/checkout".into()));
    assert_eq!(attr(&p.attributes, "retry"), &AnyValue::Bool(true));
    assert_eq!(attr(&p.attributes, "http.status_code"), &AnyValue::Int(500));
    assert_eq!(attr(&p.attributes, "ratio"), &AnyValue::Double(0.25));
    assert_eq!(
        attr(&p.attributes, "tags"),
        &AnyValue::Array(vec![AnyValue::String("a".into()), AnyValue::String("b".into())])
    );
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].name, "cache miss");
    assert_eq!(attr(&p.events[0].attributes, "key"), &AnyValue::String("cart:42".into()));
    assert_eq!(p.links.len(), 1);
    assert_eq!(p.links[0].trace_id, sent.link_trace);
    assert_eq!(p.links[0].span_id.to_hex(), "eee19b7ec3c1b174");
    assert_eq!(p.links[0].trace_state, "vendor=x");
    let c = &child.span;
    assert_eq!(c.parent_span_id, Some(sent.parent_span_id));
    assert_eq!(c.name, "SELECT carts");
    assert_eq!(c.kind, SpanKind::Client);
    assert_eq!(attr(&c.attributes, "db.system"), &AnyValue::String("postgresql".into()));
}

fn check_logs(store: &storage::Storage, t: Transport, sent: &Sent) {
    let logs = store.log_store().logs_by_trace(sent.trace_id);
    assert_eq!(logs.len(), 1, "{t:?}: {logs:#?}");
    let l = &logs[0];
    assert_eq!(l.stream.get("service_name"), Some(t.service()));
    assert_eq!(l.stream.get("service_namespace"), Some("it"));
    assert_eq!(l.stream.get("deployment_environment"), Some("test"));
    assert_eq!(l.scope.name, "it-scope");
    let r = &l.record;
    assert_eq!(r.body, "payment failed for cart 42");
    assert_eq!(r.severity_number, 17);
    assert_eq!(r.severity_text, "ERROR");
    assert_eq!(attr(&r.attributes, "cart.id"), &AnyValue::Int(42));
    assert_eq!(attr(&r.attributes, "user"), &AnyValue::String("alice".into()));
    assert_eq!(r.trace_id, Some(sent.trace_id));
    assert_eq!(r.span_id, Some(sent.parent_span_id));
    assert!(r.timestamp_ns > 0);
    // The same record through the stream selector.
    let by_stream = store.log_store().logs(&[("service_name".into(), t.service().into())], 0, i64::MAX);
    assert_eq!(by_stream.len(), 1);
}

fn check_metrics(store: &storage::Storage, t: Transport) {
    let job = format!("it/{}", t.service());
    let one = |name: &str, extra: &[(&str, &str)]| {
        let mut m: Vec<(String, String)> = vec![("__name__".into(), name.into()), ("job".into(), job.clone())];
        m.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        let series = store.metric_store().select(&m, 0, i64::MAX);
        assert_eq!(series.len(), 1, "{t:?} {m:?}: {series:#?}");
        let s = series.into_iter().next().unwrap();
        assert_eq!(s.labels.get("instance"), Some("i-1"), "{:?}", s.labels);
        s.samples.last().expect("a sample").value
    };
    assert_eq!(one("it_requests_total", &[("route", "/a")]), 3.0);
    assert_eq!(one("it_temperature_celsius", &[]), 21.5);
    assert_eq!(one("it_latency_milliseconds_count", &[]), 2.0);
    assert_eq!(one("it_latency_milliseconds_sum", &[]), 55.0);
    assert_eq!(one("it_latency_milliseconds_bucket", &[("le", "10")]), 1.0);
    assert_eq!(one("it_latency_milliseconds_bucket", &[("le", "100")]), 2.0);
    assert_eq!(one("it_latency_milliseconds_bucket", &[("le", "+Inf")]), 2.0);
    let target = store.metric_store().select(
        &[("__name__".into(), "target_info".into()), ("job".into(), job.clone())],
        0,
        i64::MAX,
    );
    assert_eq!(target.len(), 1);
    assert_eq!(target[0].labels.get("deployment_environment"), Some("test"));
    assert_eq!(target[0].labels.get("host_cores"), Some("2"));
    let meta = store.metric_store().metadata();
    let m = meta.iter().find(|m| m.metric_family == "it_requests_total").expect("counter metadata");
    assert_eq!(m.metric_type, storage::model::MetricType::Counter);
    assert_eq!(m.help, "Requests served");
}

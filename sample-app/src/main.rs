//! A small instrumented "shop" that sends traces, metrics and logs to Outpost over OTLP/gRPC with
//! the OpenTelemetry Rust SDK: a `frontend` server span per request with a `checkout` client span,
//! a request counter and latency histogram, and a log record per request carrying the trace
//! context. A share of requests fail (`--error-rate`), so error paths have data too.

use std::time::{Duration, Instant};

use clap::Parser;
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Compression, LogExporter, MetricExporter, SpanExporter, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

#[derive(Parser)]
#[command(about = "Send demo traces, metrics and logs to Outpost over OTLP/gRPC")]
struct Args {
    /// OTLP/gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Requests to simulate (0 = until interrupted).
    #[arg(long, default_value_t = 100)]
    requests: u64,
    /// Requests per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Share of requests that fail.
    #[arg(long, default_value_t = 0.05)]
    error_rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let resource = Resource::builder()
        .with_service_name("frontend")
        .with_attributes([KeyValue::new("service.namespace", "shop"), KeyValue::new("deployment.environment", "demo")])
        .build();
    let spans = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&args.endpoint)
        .with_compression(Compression::Gzip)
        .build()?;
    let logs = LogExporter::builder().with_tonic().with_endpoint(&args.endpoint).build()?;
    let metrics = MetricExporter::builder().with_tonic().with_endpoint(&args.endpoint).build()?;
    let tracer_provider =
        SdkTracerProvider::builder().with_resource(resource.clone()).with_batch_exporter(spans).build();
    let logger_provider =
        SdkLoggerProvider::builder().with_resource(resource.clone()).with_batch_exporter(logs).build();
    let meter_provider = SdkMeterProvider::builder().with_resource(resource).with_periodic_exporter(metrics).build();

    let tracer = tracer_provider.tracer("sample-app");
    let logger = logger_provider.logger("sample-app");
    let meter = meter_provider.meter("sample-app");
    let requests = meter.u64_counter("http.server.requests").with_unit("{request}").build();
    let latency = meter.f64_histogram("http.server.request.duration").with_unit("s").build();

    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let mut n = 0u64;
    while args.requests == 0 || n < args.requests {
        n += 1;
        let started = Instant::now();
        let failed = rand::random::<f64>() < args.error_rate;
        let route = ["/", "/cart", "/checkout"][(n % 3) as usize];
        let mut server = tracer.span_builder(format!("GET {route}")).with_kind(SpanKind::Server).start(&tracer);
        server.set_attribute(KeyValue::new("http.route", route));
        let cx = opentelemetry::Context::current().with_remote_span_context(server.span_context().clone());
        let mut client =
            tracer.span_builder("checkout.Reserve").with_kind(SpanKind::Client).start_with_context(&tracer, &cx);
        tokio::time::sleep(Duration::from_millis(rand::random_range(1..20))).await;
        if failed {
            client.set_status(Status::error("inventory unavailable"));
            server.set_status(Status::error("upstream failure"));
        }
        client.end();
        let status = if failed { "500" } else { "200" };
        server.set_attribute(KeyValue::new("http.response.status_code", status));
        let ctx = server.span_context().clone();
        server.end();

        let mut rec = logger.create_log_record();
        rec.set_severity_number(if failed { Severity::Error } else { Severity::Info });
        rec.set_severity_text(if failed { "ERROR" } else { "INFO" });
        rec.set_body(AnyValue::from(format!("GET {route} {status} in {:?}", started.elapsed())));
        rec.add_attribute("http.route", route);
        rec.set_trace_context(ctx.trace_id(), ctx.span_id(), Some(ctx.trace_flags()));
        logger.emit(rec);

        let attrs = [KeyValue::new("http.route", route), KeyValue::new("http.response.status_code", status)];
        requests.add(1, &attrs);
        latency.record(started.elapsed().as_secs_f64(), &attrs);
        tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
    }
    tracer_provider.shutdown()?;
    logger_provider.shutdown()?;
    meter_provider.shutdown()?;
    Ok(())
}

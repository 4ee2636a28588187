//! OTLP logs exported by the OpenTelemetry SDK, read back through the Loki API: the trace context
//! arrives as structured metadata, the severity as the `level` stream label, and a LogQL filter on
//! the trace_id finds the record.

use opentelemetry::logs::{AnyValue as OtelAny, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
use opentelemetry_otlp::{LogExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource as SdkResource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use serde_json::{Value, json};

use crate::support::{TestServer, now_ns, with_query};

#[test]
fn sdk_log_with_trace_context_is_found_by_trace_id() {
    let srv = TestServer::start(|_| {});
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = "00f067aa0ba902b7";
    let exporter = {
        let _g = srv.rt.enter();
        LogExporter::builder().with_tonic().with_endpoint(srv.otlp_grpc()).build().unwrap()
    };
    let provider = SdkLoggerProvider::builder()
        .with_resource(SdkResource::builder_empty().with_service_name("checkout").build())
        .with_simple_exporter(exporter)
        .build();
    let logger = provider.logger("it");
    let ctx = SpanContext::new(
        opentelemetry::trace::TraceId::from_hex(trace).unwrap(),
        opentelemetry::trace::SpanId::from_hex(span).unwrap(),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    for (body, sev, with_trace) in [("charge declined", Severity::Error, true), ("cart loaded", Severity::Info, false)]
    {
        let mut rec = logger.create_log_record();
        rec.set_body(OtelAny::from(body));
        rec.set_severity_number(sev);
        rec.add_attribute("payment.provider", "acme");
        if with_trace {
            rec.set_trace_context(ctx.trace_id(), ctx.span_id(), Some(TraceFlags::SAMPLED));
        }
        logger.emit(rec);
    }
    provider.force_flush().unwrap();
    {
        let _g = srv.rt.enter();
        provider.shutdown().unwrap();
    }

    let now = now_ns();
    let query = |q: &str| -> Value {
        reqwest::blocking::Client::new()
            .get(with_query(
                &format!("{}/loki/api/v1/query_range", srv.http()),
                &[
                    ("query", q.to_string()),
                    ("start", (now - 600_000_000_000).to_string()),
                    ("end", (now + 60_000_000_000).to_string()),
                ],
            ))
            .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let v = query(&format!(r#"{{service_name="checkout"}} | trace_id="{trace}""#));
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{v}");
    assert_eq!(result[0]["stream"], json!({"level": "error", "service_name": "checkout"}));
    let entry = &result[0]["values"][0];
    assert_eq!(entry[1], "charge declined");
    let meta = &entry[2]["structuredMetadata"];
    assert_eq!(meta["trace_id"], trace);
    assert_eq!(meta["span_id"], span);
    assert_eq!(meta["payment_provider"], "acme");
    // Both records by stream, each with its level.
    let v = query(r#"sum by (level) (count_over_time({service_name="checkout"}[10m]))"#);
    let levels: Vec<&str> =
        v["data"]["result"].as_array().unwrap().iter().map(|s| s["metric"]["level"].as_str().unwrap()).collect();
    assert_eq!(levels.len(), 2, "{v}");
    assert!(levels.contains(&"error") && levels.contains(&"info"));
    // And straight from the store by trace id.
    let store = srv.storage();
    let t = storage::model::TraceId::from_hex(trace).unwrap();
    assert_eq!(storage::Reader::log_store(&*store).logs_by_trace(t).len(), 1);
}

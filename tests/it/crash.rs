//! Crash safety: Outpost runs as a child process while clients stream OTLP at it (logs and metrics
//! over HTTP, spans over gRPC); it is `kill -9`ed at random points, 20 times, and restarted. Every
//! acknowledged item must be present afterwards, and no item twice.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use storage::Reader as _;

use crate::support::{ChildServer, now_ns, open_store};

const KILLS: usize = 20;
const BATCH: usize = 5;

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("crash".into())) }),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn logs_request(ids: &[String]) -> Vec<u8> {
    let now = now_ns() as u64;
    let records = ids
        .iter()
        .map(|id| LogRecord {
            time_unix_nano: now,
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(id.clone())) }),
            ..Default::default()
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn metrics_request(ids: &[String]) -> Vec<u8> {
    let now = now_ns() as u64;
    let points = ids
        .iter()
        .map(|id| NumberDataPoint {
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(1.0)),
            attributes: vec![KeyValue {
                key: "item".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(id.clone())) }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "crash_items".into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points: points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn traces_request(ids: &[(String, [u8; 16])]) -> ExportTraceServiceRequest {
    let now = now_ns() as u64;
    let spans = ids
        .iter()
        .map(|(id, tid)| Span {
            trace_id: tid.to_vec(),
            span_id: tid[..8].to_vec(),
            name: id.clone(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1000,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

#[derive(Default)]
struct Acked {
    logs: Vec<String>,
    metrics: Vec<String>,
    spans: Vec<String>,
}

/// Streams batches of uniquely named items until the server dies; records what was acknowledged.
fn stream_until_dead(server: &ChildServer, round: usize, acked: &Arc<Mutex<Acked>>) -> std::thread::JoinHandle<()> {
    let addrs = server.addrs;
    let acked = Arc::clone(acked);
    std::thread::spawn(move || {
        let dead = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for kind in ["logs", "metrics"] {
            let acked = Arc::clone(&acked);
            let dead = Arc::clone(&dead);
            handles.push(std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
                let url = format!("http://{}/v1/{kind}", addrs.otlp_http);
                for seq in 0.. {
                    if dead.load(Ordering::Relaxed) {
                        return;
                    }
                    let ids: Vec<String> = (0..BATCH).map(|i| format!("{kind}-{round}-{seq}-{i}")).collect();
                    let body = if kind == "logs" { logs_request(&ids) } else { metrics_request(&ids) };
                    match client.post(&url).header("content-type", "application/x-protobuf").body(body).send() {
                        Ok(r) if r.status() == 200 => {
                            let mut a = acked.lock().unwrap();
                            if kind == "logs" { a.logs.extend(ids) } else { a.metrics.extend(ids) }
                        }
                        Ok(r) => panic!("unexpected status {} for {kind}", r.status()),
                        Err(_) => return, // killed: this batch is unacknowledged
                    }
                }
            }));
        }
        let acked2 = Arc::clone(&acked);
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let Ok(mut client) = TraceServiceClient::connect(format!("http://{}", addrs.otlp_grpc)).await else {
                    return;
                };
                for seq in 0u64.. {
                    let ids: Vec<(String, [u8; 16])> = (0..BATCH)
                        .map(|i| {
                            let mut tid = [0u8; 16];
                            tid[..8].copy_from_slice(&(round as u64 + 1).to_be_bytes());
                            tid[8..].copy_from_slice(&(seq * BATCH as u64 + i as u64 + 1).to_be_bytes());
                            (format!("span-{round}-{seq}-{i}"), tid)
                        })
                        .collect();
                    match client.export(traces_request(&ids)).await {
                        Ok(r) => {
                            assert!(r.into_inner().partial_success.is_none());
                            acked2.lock().unwrap().spans.extend(ids.into_iter().map(|(n, _)| n));
                        }
                        Err(_) => return,
                    }
                }
            });
        }));
        for h in handles {
            h.join().unwrap();
        }
        dead.store(true, Ordering::Relaxed);
    })
}

#[test]
fn acknowledged_items_survive_kill_9_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let acked = Arc::new(Mutex::new(Acked::default()));
    for round in 0..KILLS {
        // Alternate the fsync policies: every one of them must survive a process kill.
        let fsync = ["batch", "interval", "none"][round % 3];
        let server =
            ChildServer::start(dir.path(), &[("OUTPOST_WAL__FSYNC", fsync), ("OUTPOST_WAL__SEGMENT_BYTES", "65536")]);
        let streamer = stream_until_dead(&server, round, &acked);
        std::thread::sleep(Duration::from_millis(rand::random_range(50..400)));
        server.kill9();
        streamer.join().unwrap();
    }
    let acked = Arc::try_unwrap(acked).ok().unwrap().into_inner().unwrap();
    // Not vacuous: some of every signal was acknowledged (a loaded machine may ack little per round).
    for (what, n) in [("logs", acked.logs.len()), ("metrics", acked.metrics.len()), ("spans", acked.spans.len())] {
        assert!(n >= KILLS, "too little traffic to test anything: {n} {what} acknowledged");
    }

    let (store, report) = open_store(dir.path());
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);

    let mut logs: HashMap<String, usize> = HashMap::new();
    for l in store.log_store().logs(&[], 0, i64::MAX) {
        *logs.entry(l.record.body.clone()).or_default() += 1;
    }
    let mut spans: HashMap<String, usize> = HashMap::new();
    for id in store.trace_store().trace_ids() {
        for s in store.trace_store().trace(id) {
            *spans.entry(s.span.name.clone()).or_default() += 1;
        }
    }
    let mut metrics: HashMap<String, usize> = HashMap::new();
    for s in store.metric_store().select(&[("__name__".into(), "crash_items".into())], 0, i64::MAX) {
        *metrics.entry(s.labels.get("item").unwrap().to_string()).or_default() += s.samples.len();
    }
    for (what, acked, stored) in
        [("log", &acked.logs, &logs), ("metric", &acked.metrics, &metrics), ("span", &acked.spans, &spans)]
    {
        let missing: Vec<_> = acked.iter().filter(|id| !stored.contains_key(*id)).take(5).collect();
        assert!(missing.is_empty(), "acknowledged {what}s lost, e.g. {missing:?}");
        let dup: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).take(5).collect();
        assert!(dup.is_empty(), "{what}s stored twice: {dup:?}");
        let unique: HashSet<_> = acked.iter().collect();
        assert_eq!(unique.len(), acked.len(), "test bug: {what} ids reused");
    }
}

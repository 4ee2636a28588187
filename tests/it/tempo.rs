//! The Tempo API as Grafana's Tempo datasource uses it (`grafana-contracts.md` §3): Save & test,
//! trace by id decoded with Tempo's protobuf schema, tag browsers, 404s; traces that arrive in
//! several requests and across checkpoints and restarts; span metrics and the service graph
//! derived from a three-service workload; the trace_id cross-index.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue as PAny, InstrumentationScope, KeyValue as PKv, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as PSpan, Status, span};
use prost::Message;
use storage::Reader as _;
use storage::read::Matcher;

use crate::support::{TestServer, now_ns};

/// Tempo's `tempopb.Trace`, as Grafana decodes it (field 1: repeated OTLP `ResourceSpans`).
#[derive(Clone, PartialEq, prost::Message)]
struct GrafanaTrace {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

/// Tempo's `tempopb.TraceByIDResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct GrafanaTraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<GrafanaTrace>,
    #[prost(message, optional, tag = "2")]
    metrics: Option<GrafanaMetrics>,
    #[prost(int32, tag = "3")]
    status: i32,
    #[prost(string, tag = "4")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GrafanaMetrics {
    #[prost(uint64, tag = "1")]
    inspected_bytes: u64,
}

fn s(v: &str) -> Option<PAny> {
    Some(PAny { value: Some(any_value::Value::StringValue(v.into())) })
}

fn kv(k: &str, v: Option<PAny>) -> PKv {
    PKv { key: k.into(), value: v, ..Default::default() }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn pspan(
    trace: [u8; 16],
    id: u8,
    parent: Option<u8>,
    name: &str,
    kind: i32,
    start: i64,
    ms: i64,
    error: bool,
) -> PSpan {
    PSpan {
        trace_id: trace.to_vec(),
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind,
        start_time_unix_nano: start as u64,
        end_time_unix_nano: (start + ms * 1_000_000) as u64,
        attributes: vec![
            kv("http.method", s("GET")),
            kv("retries", Some(PAny { value: Some(any_value::Value::IntValue(2)) })),
        ],
        status: Some(Status {
            code: if error { 2 } else { 0 },
            message: if error { "boom".into() } else { String::new() },
        }),
        events: vec![span::Event {
            time_unix_nano: start as u64 + 10,
            name: "ev".into(),
            attributes: vec![kv("e", s("1"))],
            dropped_attributes_count: 1,
        }],
        ..Default::default()
    }
}

pub(crate) fn request(service: &str, spans: Vec<PSpan>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(PResource { attributes: vec![kv("service.name", s(service))], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "lib".into(), version: "1".into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

pub(crate) fn send(srv: &TestServer, req: &ExportTraceServiceRequest) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/traces", srv.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
}

fn get(url: &str, protobuf: bool) -> reqwest::blocking::Response {
    let mut r = reqwest::blocking::Client::new().get(url);
    if protobuf {
        r = r.header("accept", "application/protobuf");
    }
    r.send().unwrap()
}

fn fetch_v2(srv: &TestServer, id: &str) -> Option<GrafanaTrace> {
    let resp = get(&format!("{}/api/v2/traces/{id}", srv.http()), true);
    if resp.status() == 404 {
        return None;
    }
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/protobuf");
    let body = resp.bytes().unwrap();
    let r = GrafanaTraceByIdResponse::decode(&*body).unwrap();
    assert_eq!(r.status, 0);
    r.trace
}

fn all_spans(t: &GrafanaTrace) -> Vec<&PSpan> {
    t.resource_spans.iter().flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter())).collect()
}

const TRACE: [u8; 16] = [0x0a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

#[test]
fn a_trace_round_trips_field_for_field_through_both_paths() {
    let srv = TestServer::start(|_| {});
    let now = now_ns();
    let mut root = pspan(TRACE, 1, None, "GET /cart", 2, now, 30, true);
    root.trace_state = "k=v".into();
    root.flags = 0x101;
    root.dropped_attributes_count = 3;
    root.dropped_events_count = 4;
    root.dropped_links_count = 5;
    root.attributes.push(kv("bytes", Some(PAny { value: Some(any_value::Value::BytesValue(vec![1, 2, 255])) })));
    root.attributes.push(kv("ratio", Some(PAny { value: Some(any_value::Value::DoubleValue(0.5)) })));
    root.links.push(span::Link {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        trace_state: "l=1".into(),
        attributes: vec![kv("why", s("retry"))],
        dropped_attributes_count: 2,
        flags: 1,
    });
    let child = pspan(TRACE, 2, Some(1), "SELECT", 3, now + 1_000, 10, false);
    let req = request("shop", vec![root.clone(), child.clone()]);
    send(&srv, &req);

    let hex = hex::encode(TRACE);
    let trace = fetch_v2(&srv, &hex).expect("trace");
    assert_eq!(trace.resource_spans.len(), 1);
    let rs = &trace.resource_spans[0];
    assert_eq!(rs.resource, req.resource_spans[0].resource);
    assert_eq!(rs.scope_spans[0].scope, req.resource_spans[0].scope_spans[0].scope);
    assert_eq!(rs.scope_spans[0].spans, vec![root.clone(), child.clone()], "every span field survives");

    // Tempo v1: a bare Trace, the same content.
    let resp = get(&format!("{}/api/traces/{hex}", srv.http()), true);
    assert_eq!(resp.status(), 200);
    let v1 = GrafanaTrace::decode(&*resp.bytes().unwrap()).unwrap();
    assert_eq!(v1, trace);

    // Without the protobuf Accept header: OTLP JSON.
    let json: serde_json::Value = get(&format!("{}/api/v2/traces/{hex}", srv.http()), false).json().unwrap();
    let spans = &json["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"];
    assert_eq!(spans[0]["name"], "GET /cart");
    assert_eq!(spans[0]["traceId"], hex);

    // Persisted to a span file: the same answer.
    srv.storage().checkpoint().unwrap();
    assert_eq!(fetch_v2(&srv, &hex).unwrap(), trace);

    // Short ids are left-padded; 0a.. → a..
    let short = hex.trim_start_matches('0');
    assert_eq!(fetch_v2(&srv, short).unwrap(), trace);
}

#[test]
fn a_missing_trace_is_404_on_both_paths_and_a_bad_id_is_400() {
    let srv = TestServer::start(|_| {});
    for path in ["api/v2/traces", "api/traces"] {
        let r = get(&format!("{}/{path}/0123456789abcdef0123456789abcdef", srv.http()), true);
        assert_eq!(r.status(), 404, "{path}");
        let r = get(&format!("{}/{path}/not-hex", srv.http()), true);
        assert_eq!(r.status(), 400, "{path}");
    }
    // Out of the requested time range: absent too.
    let now = now_ns();
    send(&srv, &request("shop", vec![pspan(TRACE, 1, None, "op", 1, now, 1, false)]));
    let hex = hex::encode(TRACE);
    let r = get(&format!("{}/api/v2/traces/{hex}?start=1&end=2", srv.http()), true);
    assert_eq!(r.status(), 404);
    let (a, b) = (now / 1_000_000_000 - 60, now / 1_000_000_000 + 60);
    let r = get(&format!("{}/api/v2/traces/{hex}?start={a}&end={b}", srv.http()), true);
    assert_eq!(r.status(), 200);
}

#[test]
fn spans_arriving_in_three_requests_across_checkpoints_and_a_restart_form_one_trace() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let hex = hex::encode(TRACE);
    const MINUTE: i64 = 60_000_000_000;
    // Three batches a minute apart (a long root span, a child a minute in, a leaf two minutes in),
    // each persisted into its own span file before the next arrives.
    let t0 = now_ns() - 3 * MINUTE;
    {
        let p = path.clone();
        let srv = TestServer::start(move |raw| raw.data_dir = p);
        send(&srv, &request("web", vec![pspan(TRACE, 1, None, "root", 2, t0, 150_000, false)]));
        srv.storage().checkpoint().unwrap();
        send(&srv, &request("api", vec![pspan(TRACE, 2, Some(1), "mid", 2, t0 + MINUTE, 50, false)]));
        srv.storage().checkpoint().unwrap();
        send(&srv, &request("db", vec![pspan(TRACE, 3, Some(2), "leaf", 3, t0 + 2 * MINUTE, 5, false)]));
        let t = fetch_v2(&srv, &hex).unwrap();
        let names: Vec<&str> = all_spans(&t).iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["root", "mid", "leaf"]);
        assert_eq!(t.resource_spans.len(), 3, "one ResourceSpans per service");
        // Search sees one trace: the root's service and name, all three spans matched.
        let (a, b) = (t0 / 1_000_000_000 - 60, t0 / 1_000_000_000 + 240);
        let url = format!("{}/api/search?q=%7B%7D&spss=10&start={a}&end={b}", srv.http());
        let r: serde_json::Value = get(&url, false).json().unwrap();
        let traces = r["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 1, "{r}");
        assert_eq!(traces[0]["traceID"], hex);
        assert_eq!(traces[0]["rootServiceName"], "web");
        assert_eq!(traces[0]["rootTraceName"], "root");
        assert_eq!(traces[0]["durationMs"], 150_000);
        assert_eq!(traces[0]["spanSets"][0]["matched"], 3, "{r}");
    }
    // Reopened: two spans come from span files, the third from the WAL.
    let p = path.clone();
    let srv = TestServer::start(move |raw| raw.data_dir = p);
    let t = fetch_v2(&srv, &hex).unwrap();
    let names: Vec<&str> = all_spans(&t).iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["root", "mid", "leaf"]);
    assert_eq!(srv.storage().trace_store().span_count(), 3);
    assert!(path.join("traces/MANIFEST").exists());
}

#[test]
fn grafana_save_and_test_and_tag_browsers() {
    let srv = TestServer::start(|_| {});
    let r = get(&format!("{}/api/echo", srv.http()), false);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "echo");
    let info: serde_json::Value = get(&format!("{}/api/status/buildinfo", srv.http()), false).json().unwrap();
    assert!(info["version"].as_str().unwrap().starts_with("2."), "{info}");

    let now = now_ns();
    send(&srv, &request("shop", vec![pspan(TRACE, 1, None, "GET /cart", 2, now, 3, true)]));
    let base = srv.http();
    let tags: serde_json::Value = get(&format!("{base}/api/v2/search/tags"), false).json().unwrap();
    let scope = |name: &str| -> Vec<String> {
        tags["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(scope("resource"), ["service.name"]);
    assert_eq!(scope("span"), ["http.method", "retries"]);
    assert!(scope("intrinsic").contains(&"rootServiceName".to_owned()));
    let only_span: serde_json::Value = get(&format!("{base}/api/v2/search/tags?scope=span"), false).json().unwrap();
    assert_eq!(only_span["scopes"].as_array().unwrap().len(), 1);

    let v1: serde_json::Value = get(&format!("{base}/api/search/tags"), false).json().unwrap();
    assert_eq!(v1["tagNames"], serde_json::json!(["http.method", "retries", "service.name"]));

    let vals: serde_json::Value =
        get(&format!("{base}/api/v2/search/tag/resource.service.name/values"), false).json().unwrap();
    assert_eq!(vals["tagValues"], serde_json::json!([{"type": "string", "value": "shop"}]));
    let vals: serde_json::Value = get(&format!("{base}/api/v2/search/tag/span.retries/values"), false).json().unwrap();
    assert_eq!(vals["tagValues"], serde_json::json!([{"type": "int", "value": "2"}]));
    let vals: serde_json::Value = get(&format!("{base}/api/v2/search/tag/status/values"), false).json().unwrap();
    assert_eq!(vals["tagValues"], serde_json::json!([{"type": "keyword", "value": "error"}]));
    let vals: serde_json::Value = get(&format!("{base}/api/v2/search/tag/name/values"), false).json().unwrap();
    assert_eq!(vals["tagValues"], serde_json::json!([{"type": "string", "value": "GET /cart"}]));
    let vals: serde_json::Value = get(&format!("{base}/api/search/tag/service.name/values"), false).json().unwrap();
    assert_eq!(vals["tagValues"], serde_json::json!(["shop"]));
    // Percent-encoded names.
    let vals: serde_json::Value =
        get(&format!("{base}/api/v2/search/tag/resource%2Eservice%2Ename/values"), false).json().unwrap();
    assert_eq!(vals["tagValues"][0]["value"], "shop");
    let bad = get(&format!("{base}/api/v2/search/tags?scope=nope"), false);
    assert_eq!(bad.status(), 400);
}

/// web → api → auth, over several requests: calls, latency histograms and service-graph edges.
#[test]
fn a_three_service_workload_yields_span_metrics_and_service_graph_series() {
    let srv = TestServer::start(|_| {});
    let now = now_ns();
    for i in 0..5u8 {
        let mut t = TRACE;
        t[15] = i;
        let fail = i == 0;
        // Each service's spans in its own request; the client half of an edge comes first.
        send(
            &srv,
            &request(
                "web",
                vec![pspan(t, 1, None, "GET /", 2, now, 40, fail), pspan(t, 2, Some(1), "call api", 3, now, 30, fail)],
            ),
        );
        send(
            &srv,
            &request(
                "api",
                vec![
                    pspan(t, 3, Some(2), "handle", 2, now, 25, fail),
                    pspan(t, 4, Some(3), "call auth", 3, now, 10, false),
                ],
            ),
        );
        send(&srv, &request("auth", vec![pspan(t, 5, Some(4), "check", 2, now, 5, false)]));
    }
    let store = srv.storage();
    let m = store.metric_store();
    // Span metrics go out at most once a second: wait for the emission that holds the last
    // request's edge (api → auth, the fifth), which carries every total before it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let matchers = [
            Matcher::eq("__name__", "traces_service_graph_request_total"),
            Matcher::eq("client", "api"),
            Matcher::eq("server", "auth"),
        ];
        let series = m.select_matching(&matchers, 0, i64::MAX);
        if series.first().and_then(|s| s.samples.last()).is_some_and(|s| s.value == 5.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "span metrics not emitted within 20 s: {series:#?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let last = |name: &str, extra: &[(&str, &str)]| -> f64 {
        let mut matchers = vec![Matcher::eq("__name__", name)];
        matchers.extend(extra.iter().map(|(k, v)| Matcher::eq(*k, *v)));
        let series = m.select_matching(&matchers, 0, i64::MAX);
        assert_eq!(series.len(), 1, "{name} {extra:?}: {series:#?}");
        series[0].samples.last().unwrap().value
    };
    let server = [("service", "api"), ("span_name", "handle"), ("span_kind", "SPAN_KIND_SERVER")];
    assert_eq!(
        last("traces_spanmetrics_calls_total", &[&server[..], &[("status_code", "STATUS_CODE_UNSET")]].concat()),
        4.0
    );
    assert_eq!(
        last("traces_spanmetrics_calls_total", &[&server[..], &[("status_code", "STATUS_CODE_ERROR")]].concat()),
        1.0
    );
    assert_eq!(
        last(
            "traces_spanmetrics_latency_bucket",
            &[&server[..], &[("status_code", "STATUS_CODE_UNSET"), ("le", "0.032")]].concat()
        ),
        4.0
    );
    assert_eq!(
        last(
            "traces_spanmetrics_latency_bucket",
            &[&server[..], &[("status_code", "STATUS_CODE_UNSET"), ("le", "0.016")]].concat()
        ),
        0.0
    );
    fn edge<'a>(c: &'a str, s: &'a str) -> [(&'static str, &'a str); 2] {
        [("client", c), ("server", s)]
    }
    assert_eq!(last("traces_service_graph_request_total", &edge("web", "api")), 5.0);
    assert_eq!(last("traces_service_graph_request_total", &edge("api", "auth")), 5.0);
    assert_eq!(last("traces_service_graph_request_failed_total", &edge("web", "api")), 1.0);
    assert_eq!(last("traces_service_graph_request_server_seconds_count", &edge("web", "api")), 5.0);
    assert_eq!(last("traces_service_graph_request_client_seconds_count", &edge("api", "auth")), 5.0);
    assert_eq!(
        last(
            "traces_service_graph_request_server_seconds_bucket",
            &[&edge("api", "auth")[..], &[("le", "0.008")]].concat()
        ),
        5.0
    );
    // The PromQL Grafana sends for the service map and the RED table (`grafana-contracts.md` §6).
    let engine = query::promql::Engine::default();
    // After every emission (they trail the spans by up to a second or two).
    let at = now / 1_000_000 + 60_000;
    let eval = |q: &str| -> Vec<(storage::model::Labels, f64)> {
        match engine.instant_query(m, q, at, None).unwrap_or_else(|e| panic!("{q}: {e:?}")).value {
            query::promql::Value::Vector(v) => v
                .into_iter()
                .map(|s| match s.point {
                    query::promql::Point::Float(f) => (s.labels, f),
                    other => panic!("{q}: {other:?}"),
                })
                .collect(),
            other => panic!("{q}: {other:?}"),
        }
    };
    let edges = eval("sum by (client, server) (rate(traces_service_graph_request_total[5m]))");
    assert_eq!(edges.len(), 2, "{edges:?}");
    assert!(edges.iter().all(|(_, v)| *v > 0.0));
    let groups =
        eval("group by (client, connection_type, server) (traces_service_graph_request_server_seconds_bucket)");
    assert_eq!(groups.len(), 2, "{groups:?}");
    let red =
        eval(r#"topk(5, sum(rate(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"}[5m])) by (span_name))"#);
    let mut names: Vec<&str> = red.iter().map(|(l, _)| l.get("span_name").unwrap()).collect();
    names.sort();
    assert_eq!(names, ["GET /", "check", "handle"]);
    let errors = eval(
        r#"topk(5, sum(rate(traces_spanmetrics_calls_total{status_code="STATUS_CODE_ERROR",span_name=~"GET /|handle"}[5m])) by (span_name))"#,
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    let p90 = eval(
        r#"histogram_quantile(.9, sum(rate(traces_spanmetrics_latency_bucket{span_name=~"handle"}[5m])) by (le))"#,
    );
    assert_eq!(p90.len(), 1);
    assert!(p90[0].1 > 0.016 && p90[0].1 <= 0.032, "{p90:?}");
    // Exemplars point back at the traces.
    let mut t0 = TRACE;
    t0[15] = 0;
    let ex = m.exemplars_by_trace(&hex::encode(t0));
    assert!(ex.iter().any(|(l, _)| l.get("__name__") == Some("traces_spanmetrics_calls_total")), "{ex:#?}");
}

#[test]
fn related_gathers_spans_logs_and_exemplars_of_a_trace() {
    let srv = TestServer::start(|_| {});
    let now = now_ns();
    send(&srv, &request("shop", vec![pspan(TRACE, 1, None, "GET /", 2, now, 3, false)]));
    // A log line carrying the trace id.
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(PResource { attributes: vec![kv("service.name", s("shop"))], ..Default::default() }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: now as u64,
                    body: s("hello"),
                    trace_id: TRACE.to_vec(),
                    span_id: vec![1; 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    };
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/v1/logs", srv.otlp_http()))
        .header("content-type", "application/x-protobuf")
        .body(logs.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let hex = hex::encode(TRACE);
    let r: serde_json::Value =
        get(&format!("{}/outpost/api/v1/traces/{hex}/related", srv.http()), false).json().unwrap();
    assert_eq!(r["traceId"], hex);
    assert_eq!(r["counts"]["spans"], 1);
    assert_eq!(r["counts"]["logs"], 1);
    assert_eq!(r["logs"][0]["body"], "hello");
    assert_eq!(r["spans"][0]["service"], "shop");
    // The span metrics exemplars carry this trace id.
    assert!(r["counts"]["exemplars"].as_u64().unwrap() >= 1, "{r}");
    let missing = get(&format!("{}/outpost/api/v1/traces/{}/related", srv.http(), "f".repeat(32)), false);
    assert_eq!(missing.status(), 404);
    let bad = get(&format!("{}/outpost/api/v1/traces/xyz/related", srv.http()), false);
    assert_eq!(bad.status(), 400);
}

#[test]
fn traceql_search_answers_in_tempos_shape_and_rejects_bad_queries_with_a_position() {
    let srv = TestServer::start(|_| {});
    let now = now_ns();
    send(
        &srv,
        &request(
            "shop",
            vec![
                pspan(TRACE, 1, None, "GET /cart", 2, now, 30, true),
                pspan(TRACE, 2, Some(1), "SELECT", 3, now, 10, false),
            ],
        ),
    );
    let mut other = TRACE;
    other[0] = 0x0b;
    send(&srv, &request("cart", vec![pspan(other, 1, None, "POST /pay", 2, now, 5, false)]));
    let base = srv.http();
    let (a, b) = (now / 1_000_000_000 - 60, now / 1_000_000_000 + 60);
    for path in ["api/search", "api/v2/search"] {
        let url = format!(
            "{base}/{path}?q=%7Bresource.service.name%3D%22shop%22%20%26%26%20status%3Derror%7D&limit=20&spss=3&start={a}&end={b}"
        );
        let r: serde_json::Value = get(&url, false).json().unwrap();
        let traces = r["traces"].as_array().unwrap();
        assert_eq!(traces.len(), 1, "{r}");
        let t = &traces[0];
        assert_eq!(t["traceID"], hex::encode(TRACE));
        assert_eq!(t["rootServiceName"], "shop");
        assert_eq!(t["rootTraceName"], "GET /cart");
        assert!(t["startTimeUnixNano"].is_string());
        assert_eq!(t["durationMs"], 30);
        assert_eq!(t["spanSets"][0]["matched"], 1);
        assert_eq!(t["spanSets"][0]["spans"][0]["spanID"], hex::encode([1u8; 8]));
        assert!(t["spanSets"][0]["spans"][0]["durationNanos"].is_string());
        assert!(r["metrics"]["inspectedTraces"].as_u64().unwrap() >= 1);
    }
    // Everything, newest first, limited.
    let r: serde_json::Value = get(&format!("{base}/api/search?q=%7B%7D&limit=1"), false).json().unwrap();
    assert_eq!(r["traces"].as_array().unwrap().len(), 1);
    // Legacy tags and durations.
    let r: serde_json::Value =
        get(&format!("{base}/api/search?tags=service.name%3Dcart&minDuration=1ms"), false).json().unwrap();
    assert_eq!(r["traces"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["traces"][0]["rootServiceName"], "cart");
    let r: serde_json::Value =
        get(&format!("{base}/api/search?tags=service.name%3Dcart&minDuration=1s"), false).json().unwrap();
    assert_eq!(r["traces"].as_array().unwrap().len(), 0);

    // Malformed TraceQL: 400, Tempo's message with the position.
    let resp = get(&format!("{base}/api/search?q=%7B%20.a%20%3D%20%7D"), false);
    assert_eq!(resp.status(), 400);
    let text = resp.text().unwrap();
    assert!(text.starts_with("invalid TraceQL query: parse error at line 1, col "), "{text}");

    // TraceQL metrics.
    let url = format!(
        "{base}/api/metrics/query_range?q=%7B%7D%20%7C%20count_over_time()%20by%20(resource.service.name)&start={a}&end={b}&step=60s"
    );
    let resp = get(&url, false);
    assert_eq!(resp.status(), 200);
    let r: serde_json::Value = resp.json().unwrap();
    let series = r["series"].as_array().unwrap();
    assert_eq!(series.len(), 2, "{r}");
    let total: f64 =
        series.iter().flat_map(|s| s["samples"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap())).sum();
    assert_eq!(total, 3.0);
    assert!(series[0]["samples"][0]["timestampMs"].is_string());
    let resp = get(&format!("{base}/api/metrics/query_range?q=%7B%7D%20%7C%20nope()"), false);
    assert_eq!(resp.status(), 400);
}

#[test]
fn tag_values_follow_the_q_filter_and_instant_metrics_answer() {
    let srv = TestServer::start(|_| {});
    let now = now_ns();
    send(&srv, &request("shop", vec![pspan(TRACE, 1, None, "GET /cart", 2, now, 30, true)]));
    let mut other = TRACE;
    other[0] = 0x0b;
    let mut pay = pspan(other, 1, None, "POST /pay", 2, now, 5, false);
    pay.attributes.push(kv("card.brand", s("visa")));
    send(&srv, &request("cart", vec![pay]));
    let base = srv.http();
    let all: serde_json::Value = get(&format!("{base}/api/v2/search/tag/name/values"), false).json().unwrap();
    assert_eq!(all["tagValues"].as_array().unwrap().len(), 2, "{all}");
    let q = "%7Bresource.service.name%3D%22cart%22%7D";
    let some: serde_json::Value = get(&format!("{base}/api/v2/search/tag/name/values?q={q}"), false).json().unwrap();
    assert_eq!(some["tagValues"], serde_json::json!([{"type": "string", "value": "POST /pay"}]));
    // Tag names follow `q` too: `card.brand` is only on the cart service's span.
    let span_tags = |q: &str| -> serde_json::Value {
        let r: serde_json::Value = get(&format!("{base}/api/v2/search/tags?scope=span&q={q}"), false).json().unwrap();
        r["scopes"][0]["tags"].clone()
    };
    assert_eq!(span_tags(""), serde_json::json!(["card.brand", "http.method", "retries"]));
    assert_eq!(span_tags("%7Bresource.service.name%3D%22shop%22%7D"), serde_json::json!(["http.method", "retries"]));
    assert_eq!(span_tags(q), serde_json::json!(["card.brand", "http.method", "retries"]));
    // A half-typed query filters nothing, as in Tempo.
    assert_eq!(span_tags("%7Bresource.service.name%3D"), serde_json::json!(["card.brand", "http.method", "retries"]));
    let (a, b) = (now / 1_000_000_000 - 60, now / 1_000_000_000 + 60);
    let r: serde_json::Value =
        get(&format!("{base}/api/metrics/query?q=%7B%7D%20%7C%20count_over_time()&start={a}&end={b}"), false)
            .json()
            .unwrap();
    assert_eq!(r["series"][0]["value"], 2.0, "{r}");
}

#[test]
fn a_trace_over_max_trace_bytes_is_partial_on_v2_and_refused_on_v1() {
    let srv = TestServer::start(|raw| raw.limits.max_trace_bytes = 100_000);
    let now = now_ns();
    // 2000 spans of ~200 bytes each: about 400 kB of protobuf, in four requests.
    for part in 0..4u16 {
        let spans = (0..500u16)
            .map(|i| {
                let n = part * 500 + i;
                let mut s = pspan(
                    TRACE,
                    1,
                    if n == 0 { None } else { Some(1) },
                    &format!("op-{n}"),
                    1,
                    now + i64::from(n),
                    1,
                    false,
                );
                s.span_id = [[0u8; 6].as_slice(), &(n + 1).to_be_bytes()].concat();
                s
            })
            .collect();
        send(&srv, &request("big", spans));
    }
    let hex = hex::encode(TRACE);
    let resp = get(&format!("{}/api/v2/traces/{hex}", srv.http()), true);
    assert_eq!(resp.status(), 200);
    let r = GrafanaTraceByIdResponse::decode(&*resp.bytes().unwrap()).unwrap();
    assert_eq!(r.status, 1, "PARTIAL");
    assert!(r.message.contains("limits.max_trace_bytes"), "{}", r.message);
    let t = r.trace.unwrap();
    let n = all_spans(&t).len();
    assert!(n > 0 && n < 2000, "{n}");
    assert!(t.encoded_len() <= 100_000);
    let resp = get(&format!("{}/api/traces/{hex}", srv.http()), true);
    assert_eq!(resp.status(), 422);
    assert!(resp.text().unwrap().contains("exceeds the max size"));
}

/// Sends one trace of `n` spans (a root and `n - 1` children) in requests of 5,000 spans.
fn send_big_trace(srv: &TestServer, trace: [u8; 16], n: u32) {
    let now = now_ns();
    for part in 0..n.div_ceil(5_000) {
        let spans = (part * 5_000..((part + 1) * 5_000).min(n))
            .map(|k| {
                let mut s = pspan(trace, 1, Some(1), &format!("op-{}", k % 100), 1, now + i64::from(k), 1, false);
                s.span_id = u64::from(k + 1).to_be_bytes().to_vec();
                s.parent_span_id = if k == 0 { Vec::new() } else { 1u64.to_be_bytes().to_vec() };
                s
            })
            .collect();
        send(srv, &request("big", spans));
    }
}

/// Issue 5: a trace of 100,000 spans is served whole within the default limits (from the head and
/// from a span file), and over a lower `limits.max_trace_bytes` it comes back partial on v2 and is
/// refused on v1, both saying which limit.
#[test]
fn a_trace_of_100k_spans_is_served_whole_within_the_limits_or_refused_with_a_clear_error() {
    const N: u32 = 100_000;
    let hex = hex::encode(TRACE);
    let srv = TestServer::start(|_| {});
    send_big_trace(&srv, TRACE, N);
    let check_whole = |srv: &TestServer| {
        let t = fetch_v2(srv, &hex).expect("the trace is found");
        let spans = all_spans(&t);
        assert_eq!(spans.len(), N as usize);
        assert_eq!(spans.iter().filter(|s| s.parent_span_id.is_empty()).count(), 1);
        let v1 = get(&format!("{}/api/traces/{hex}", srv.http()), true);
        assert_eq!(v1.status(), 200);
        assert_eq!(all_spans(&GrafanaTrace::decode(&*v1.bytes().unwrap()).unwrap()).len(), N as usize);
    };
    check_whole(&srv);
    // Again from a span file.
    srv.storage().checkpoint().unwrap();
    assert_eq!(srv.storage().trace_store().span_count(), u64::from(N));
    check_whole(&srv);

    let limit = 2_000_000;
    let small = TestServer::start(|raw| raw.limits.max_trace_bytes = limit);
    send_big_trace(&small, TRACE, N);
    let resp = get(&format!("{}/api/v2/traces/{hex}", small.http()), true);
    assert_eq!(resp.status(), 200);
    let r = GrafanaTraceByIdResponse::decode(&*resp.bytes().unwrap()).unwrap();
    assert_eq!(r.status, 1, "PARTIAL");
    assert!(r.message.contains("limits.max_trace_bytes"), "{}", r.message);
    let t = r.trace.unwrap();
    let kept = all_spans(&t).len();
    assert!(kept > 1_000 && kept < N as usize, "{kept}");
    assert!(t.encoded_len() <= limit);
    let resp = get(&format!("{}/api/traces/{hex}", small.http()), true);
    assert_eq!(resp.status(), 422);
    let text = resp.text().unwrap();
    assert!(text.contains("exceeds the max size") && text.contains("limits.max_trace_bytes"), "{text}");
}

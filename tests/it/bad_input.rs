//! Bad input: each case gets its documented answer, the server keeps serving, and nothing
//! already stored changes. The cases are a table: request → expected status and message.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use outpost::http::RpcStatus;
use prost::Message;
use storage::Reader as _;

use crate::support::{TestServer, now_ns};

fn span(i: u8, start: i64, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![i; 16],
        span_id: vec![i; 8],
        name: format!("span-{i}"),
        start_time_unix_nano: start as u64,
        end_time_unix_nano: start as u64 + 1_000,
        attributes: attrs,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "bad-input")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

struct Case {
    name: &'static str,
    content_type: &'static str,
    encoding: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    /// Expected in the error message (google.rpc.Status) or in partial_success.error_message.
    message: &'static str,
    /// For 200: spans rejected.
    rejected: i64,
}

fn cases() -> Vec<Case> {
    let now = now_ns();
    let good = request(vec![span(9, now, vec![])]).encode_to_vec();
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    // Invalid UTF-8 inside an attribute string: encode a marker, then overwrite its bytes.
    let mut bad_utf8 = request(vec![span(8, now, vec![kv("k", "MARKER")])]).encode_to_vec();
    let at = bad_utf8.windows(6).position(|w| w == b"MARKER").unwrap();
    bad_utf8[at..at + 6].copy_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]);
    let bomb = gzip(&vec![0u8; 20 << 20]);
    let ten_mb = "x".repeat(10 << 20);
    vec![
        Case {
            name: "truncated protobuf",
            content_type: "application/x-protobuf",
            encoding: None,
            body: truncated,
            status: 400,
            message: "invalid protobuf",
            rejected: 0,
        },
        Case {
            name: "wrong content type",
            content_type: "text/plain",
            encoding: None,
            body: good.clone(),
            status: 415,
            message: "unsupported Content-Type",
            rejected: 0,
        },
        Case {
            name: "unknown content encoding",
            content_type: "application/x-protobuf",
            encoding: Some("br"),
            body: good.clone(),
            status: 415,
            message: "Content-Encoding",
            rejected: 0,
        },
        Case {
            name: "invalid gzip",
            content_type: "application/x-protobuf",
            encoding: Some("gzip"),
            body: b"\x1f\x8b\x08\x00garbage-not-deflate".to_vec(),
            status: 400,
            message: "invalid gzip",
            rejected: 0,
        },
        Case {
            name: "oversized body",
            content_type: "application/x-protobuf",
            encoding: None,
            body: vec![0u8; (16 << 20) + 1],
            status: 413,
            message: "max_request_bytes",
            rejected: 0,
        },
        Case {
            name: "gzip bomb",
            content_type: "application/x-protobuf",
            encoding: Some("gzip"),
            body: bomb,
            status: 413,
            message: "decompressed",
            rejected: 0,
        },
        Case {
            name: "invalid UTF-8 in an attribute",
            content_type: "application/x-protobuf",
            encoding: None,
            body: bad_utf8,
            status: 400,
            message: "invalid protobuf",
            rejected: 0,
        },
        Case {
            name: "malformed JSON",
            content_type: "application/json",
            encoding: None,
            body: b"{\"resourceSpans\": [".to_vec(),
            status: 400,
            message: "invalid OTLP/JSON",
            rejected: 0,
        },
        Case {
            name: "absurd timestamps",
            content_type: "application/x-protobuf",
            encoding: None,
            body: request(vec![
                span(1, 1, vec![]),
                span(2, now + 400 * 86_400 * 1_000_000_000, vec![]),
                span(3, now, vec![]),
            ])
            .encode_to_vec(),
            status: 200,
            message: "timestamp",
            rejected: 2,
        },
        Case {
            name: "10 MB attribute value",
            content_type: "application/x-protobuf",
            encoding: None,
            body: request(vec![span(4, now, vec![kv("payload", &ten_mb)]), span(5, now, vec![])]).encode_to_vec(),
            status: 200,
            message: "65536",
            rejected: 1,
        },
    ]
}

#[test]
fn bad_http_input_gets_documented_errors_and_changes_nothing() {
    let srv = TestServer::start(|_| {});
    let client = reqwest::blocking::Client::new();
    let url = format!("{}/v1/traces", srv.otlp_http());
    // Something stored before the bad requests, to check it stays as it was.
    let resp = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(request(vec![span(7, now_ns(), vec![kv("k", "v")])]).encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let store = srv.storage();
    let before = store.trace_store().trace(storage::model::TraceId([7; 16]));
    assert_eq!(before.len(), 1);
    let mut spans_expected = 1;

    for c in cases() {
        let mut req = client.post(&url).header("content-type", c.content_type).body(c.body);
        if let Some(e) = c.encoding {
            req = req.header("content-encoding", e);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let status = resp.status().as_u16();
        let json = resp.headers()["content-type"].to_str().unwrap().contains("json");
        let body = resp.bytes().unwrap();
        assert_eq!(status, c.status, "{}: body {:?}", c.name, String::from_utf8_lossy(&body));
        if status == 200 {
            let r = ExportTraceServiceResponse::decode(body).unwrap();
            let p = r.partial_success.unwrap_or_else(|| panic!("{}: partial_success expected", c.name));
            assert_eq!(p.rejected_spans, c.rejected, "{}: {}", c.name, p.error_message);
            assert!(p.error_message.contains(c.message), "{}: {:?}", c.name, p.error_message);
            spans_expected += 1; // each partial case carries exactly one valid span
        } else {
            let st: RpcStatus = if json {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                RpcStatus { code: v["code"].as_i64().unwrap() as i32, message: v["message"].as_str().unwrap().into() }
            } else {
                RpcStatus::decode(body).unwrap_or_else(|e| panic!("{}: Status body: {e}", c.name))
            };
            assert!(st.message.contains(c.message), "{}: {:?}", c.name, st.message);
            assert_ne!(st.code, 0);
        }
        // Still serving, and what was stored is unchanged.
        let health = client.get(format!("{}/healthz", srv.http())).send().unwrap();
        assert_eq!(health.status(), 200, "after {}", c.name);
        assert_eq!(store.trace_store().trace(storage::model::TraceId([7; 16])), before, "after {}", c.name);
        assert_eq!(store.trace_store().span_count(), spans_expected, "after {}", c.name);
    }
    // The rejected spans are nowhere.
    for id in [1u8, 2, 4, 8] {
        assert!(store.trace_store().trace(storage::model::TraceId([id; 16])).is_empty(), "span {id} stored");
    }
    for id in [3u8, 5] {
        assert_eq!(store.trace_store().trace(storage::model::TraceId([id; 16])).len(), 1, "span {id} missing");
    }
    // The refusals are counted in /metrics.
    let metrics = client.get(format!("{}/metrics", srv.http())).send().unwrap().text().unwrap();
    for reason in ["malformed", "unsupported_media_type", "too_large"] {
        assert!(metrics.contains(&format!("reason=\"{reason}\"")), "no {reason} in /metrics:\n{metrics}");
    }
    assert!(
        metrics.contains("outpost_rejected_items_total{signal=\"traces\",reason=\"timestamp_too_old\"}"),
        "{metrics}"
    );
}

#[test]
fn bad_grpc_input_gets_status_codes() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let srv = TestServer::start(|c| c.limits.max_request_bytes = 1 << 20);
    let ep = srv.otlp_grpc();
    srv.rt.block_on(async {
        let mut client = TraceServiceClient::connect(ep).await.unwrap().max_encoding_message_size(64 << 20);
        // Over the message limit: tonic refuses it before decoding, with OUT_OF_RANGE (gRPC's
        // own convention would be RESOURCE_EXHAUSTED; both are non-retryable for OTLP clients).
        let big = request(vec![span(1, now_ns(), vec![kv("payload", &"x".repeat(2 << 20))])]);
        let e = client.export(big).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
        assert!(e.message().contains("too large"), "{e:?}");
        // Partial success over gRPC.
        let mixed = request(vec![span(2, 5, vec![]), span(3, now_ns(), vec![])]);
        let r = client.export(mixed).await.unwrap().into_inner();
        let p = r.partial_success.unwrap();
        assert_eq!(p.rejected_spans, 1);
        assert!(p.error_message.contains("timestamp"), "{}", p.error_message);
        // The connection still works.
        let ok = client.export(request(vec![span(4, now_ns(), vec![])])).await.unwrap().into_inner();
        assert!(ok.partial_success.is_none());
    });
    assert_eq!(srv.storage().trace_store().span_count(), 2);
}

//! The server shell: CLI subcommands, health and readiness, self-metrics, saturation answers,
//! graceful shutdown on SIGTERM, and the JSON log format.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use storage::Reader as _;

use crate::support::{ChildServer, TestServer, open_store, outpost_bin};

#[test]
fn version_and_check_config() {
    let out = Command::new(outpost_bin()).arg("version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("outpost "));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/outpost.example.toml");
    let out = Command::new(outpost_bin()).args(["check-config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let bad = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/config/unknown_key.bad.toml");
    let out = Command::new(outpost_bin()).args(["check-config", bad]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`wal.fsnyc`"), "{}", String::from_utf8_lossy(&out.stderr));

    // The environment layer is checked too, and blamed by name.
    let out = Command::new(outpost_bin())
        .args(["check-config", example])
        .env("OUTPOST_WAL__FSYNC", "often")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("environment") && err.contains("wal.fsync"), "{err}");
}

#[test]
fn health_ready_and_self_metrics() {
    let srv = TestServer::start(|_| {});
    let c = reqwest::blocking::Client::new();
    assert_eq!(c.get(format!("{}/healthz", srv.http())).send().unwrap().status(), 200);
    assert_eq!(c.get(format!("{}/readyz", srv.http())).send().unwrap().status(), 200);
    // Unknown paths are a plain 404 on the main port, although gRPC is served there too.
    for path in ["/no/such/path", "/api/v1/no_such_endpoint", "/opentelemetry.proto.collector.nope.v1.X/Export"] {
        assert_eq!(c.get(format!("{}{path}", srv.http())).send().unwrap().status(), 404, "{path}");
    }
    let body = ExportTraceServiceRequest::default().encode_to_vec();
    let r = c
        .post(format!("{}/v1/traces", srv.http()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    // gRPC counts the request body's bytes: the 5-byte frame header and the message (uncompressed here).
    let req = one_span_request();
    let grpc_bytes = 5 + req.encoded_len();
    srv.rt.block_on(async {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let mut client = TraceServiceClient::connect(srv.otlp_grpc()).await.unwrap();
        client.export(req).await.unwrap();
    });
    let m = c.get(format!("{}/metrics", srv.http())).send().unwrap().text().unwrap();
    let grpc_needle = format!("outpost_received_bytes_total{{signal=\"traces\",protocol=\"grpc\"}} {grpc_bytes}\n");
    assert!(m.contains(&grpc_needle), "missing {grpc_needle} in:\n{m}");
    for needle in [
        "outpost_received_bytes_total{signal=\"traces\",protocol=\"http_protobuf\"}",
        "outpost_wal_replay_duration_seconds",
        "outpost_wal_fsync_duration_seconds_bucket",
        "outpost_ingest_request_duration_seconds_count{signal=\"traces\",protocol=\"http_protobuf\"} 1",
        "outpost_ready 1",
        "outpost_log_chunks_damaged_total 0",
    ] {
        assert!(m.contains(needle), "missing {needle} in:\n{m}");
    }
}

/// With one request slot taken by a client that is slow to send its body, the next request is
/// told to retry later: 429 + Retry-After over HTTP, UNAVAILABLE over gRPC.
#[test]
fn saturated_write_path_answers_retry_later() {
    // No self-scrape: it takes the one slot for a moment every interval, which could answer a 429
    // before the slow client holds the slot and leave the gRPC check below a free slot.
    let srv = TestServer::start(|c| {
        c.limits.max_inflight_requests = 1;
        c.scrape.self_scrape = false;
    });
    let mut slow = TcpStream::connect(srv.addrs.otlp_http.unwrap()).unwrap();
    write!(
        slow,
        "POST /v1/logs HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100\r\n\r\n"
    )
    .unwrap();
    slow.flush().unwrap();
    let c = reqwest::blocking::Client::new();
    let post = || {
        c.post(format!("{}/v1/logs", srv.http())).header("content-type", "application/json").body("{}").send().unwrap()
    };
    // Until the server has admitted the slow request, ours go through; then they are refused.
    let r = poll_until(&post, |r| r.status() != 200);
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["message"].as_str().unwrap().contains("max_inflight_requests"), "{v}");

    assert_eq!(grpc_export_error(&srv), tonic::Code::Unavailable);

    // Once the slow client goes away, its slot is free again.
    drop(slow);
    let r = poll_until(&post, |r| r.status() == 200);
    assert_eq!(r.status(), 200);
}

/// An export request holding one span that starts now.
fn one_span_request() -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let span = Span {
        trace_id: vec![7; 16],
        span_id: vec![9; 8],
        name: "GET /".into(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// The status code of an (empty) OTLP/gRPC trace export that the server refuses.
fn grpc_export_error(srv: &TestServer) -> tonic::Code {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let ep = srv.otlp_grpc();
    srv.rt.block_on(async {
        let mut client = TraceServiceClient::connect(ep).await.unwrap();
        client.export(ExportTraceServiceRequest::default()).await.expect_err("export should be refused").code()
    })
}

/// Repeats `f` until `done` holds for its result or 10 s pass; returns the last result.
fn poll_until<T>(mut f: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = f();
        if done(&r) || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM: in-flight work finishes, the WAL is flushed and closed, the process exits 0, and the
/// data is there on the next start.
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[("OUTPOST_WAL__FSYNC", "none")]);
    let c = reqwest::blocking::Client::new();
    let body = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"term"}}]},"scopeLogs":[{"logRecords":[{"body":{"stringValue":"before sigterm"}}]}]}]}"#;
    let r = c
        .post(format!("http://{}/v1/logs", server.addrs.http))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let mut server = server;
    let child = &mut server.child;
    let pid = child.id();
    // kill(1) sends the signal, which keeps unsafe code out of the tests.
    let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(st.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let (store, report) = open_store(dir.path());
    assert!(report.corrupt.is_empty() && report.torn_tail_bytes == 0, "{report:?}");
    let logs = store.log_store().logs(&[("service_name".into(), "term".into())], 0, i64::MAX);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].record.body, "before sigterm");
}

/// Over `memory_limit_bytes`, ingest is told to retry later (503 + Retry-After; gRPC UNAVAILABLE)
/// instead of the process growing further.
#[test]
fn memory_limit_answers_retry_later() {
    // 1 MiB is below any process' baseline, so the first measurement is over the limit.
    let srv = TestServer::start(|c| c.memory_limit_bytes = Some(1 << 20));
    let c = reqwest::blocking::Client::new();
    let r = poll_until(
        || {
            c.post(format!("{}/v1/logs", srv.otlp_http()))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .unwrap()
        },
        |r| r.status() != 200,
    );
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().unwrap();
    assert!(v["message"].as_str().unwrap().contains("memory_limit_bytes"), "{v}");
    assert_eq!(grpc_export_error(&srv), tonic::Code::Unavailable);
    let m = c.get(format!("{}/metrics", srv.http())).send().unwrap().text().unwrap();
    assert!(m.contains("outpost_memory_limit_bytes 1048576"), "{m}");
    assert!(m.contains("reason=\"memory_limit\""), "{m}");
}

/// Compaction and retention run on their own thread at nice 10 (Linux keeps the nice value per
/// thread), so that queries and ingest get the CPU first on a small machine; the rest of the
/// process keeps its priority.
#[cfg(target_os = "linux")]
#[test]
fn background_maintenance_runs_at_a_lower_priority() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path(), &[]);
    let pid = server.child.id();
    // `(name, nice)` of every thread, from /proc/<pid>/task/<tid>/stat (field 19 is the nice value).
    let threads = || -> Vec<(String, i64)> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .filter_map(|stat| {
                let (head, tail) = stat.rsplit_once(')')?;
                let name = head.split_once('(')?.1.to_string();
                let nice = tail.split_whitespace().nth(16)?.parse().ok()?;
                Some((name, nice))
            })
            .collect()
    };
    let all = poll_until(threads, |ts| ts.iter().any(|(n, _)| n == "outpost-backgro"));
    let background: Vec<i64> = all.iter().filter(|(n, _)| n == "outpost-backgro").map(|t| t.1).collect();
    assert_eq!(background, [10], "{all:?}");
    assert!(all.iter().filter(|(n, _)| n == "outpost").all(|t| t.1 == 0), "{all:?}");
}

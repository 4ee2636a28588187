//! The Loki API end to end: pushes in every encoding, then the requests Grafana's Loki
//! datasource sends (health check, label browser, series, logs volume, index volume/stats), the
//! error shapes, the push limits, and OTLP logs with trace context read back through LogQL.

use std::io::Write as _;

use ingest::loki_push::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use prost::Message as _;
use serde_json::{Value, json};

use crate::support::{TestServer, now_ns, with_query};

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn get(srv: &TestServer, path: &str, params: &[(&str, String)]) -> (u16, String) {
    let r = client().get(with_query(&format!("{}{path}", srv.http()), params)).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn get_json(srv: &TestServer, path: &str, params: &[(&str, String)]) -> Value {
    let (status, text) = get(srv, path, params);
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

fn push_json(srv: &TestServer, body: &Value) -> (u16, String) {
    let r = client()
        .post(format!("{}/loki/api/v1/push", srv.http()))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn push_proto(srv: &TestServer, req: &PushRequest) -> (u16, String) {
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
    let r = client()
        .post(format!("{}/loki/api/v1/push", srv.http()))
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Pushes the fixture: `{app="api",env="prod"}` (JSON, with structured metadata),
/// `{app="db",env="prod",level="warn"}` (protobuf) and `{app="web",env="dev"}` (gzip JSON).
fn seed(srv: &TestServer, t0: i64) {
    let (s, text) = push_json(
        srv,
        &json!({"streams": [{"stream": {"app": "api", "env": "prod", "level": "error"}, "values": [
            [t0.to_string(), "GET /users 500", {"trace_id": "0af7651916cd43dd8448eb211c80319c"}],
            [(t0 + 1_000_000_000).to_string(), "GET /users 200"]
        ]}]}),
    );
    assert_eq!(s, 204, "{text}");
    let req = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{app="db", env="prod", level="warn"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: Some(Timestamp::from_ns(t0 + 2_000_000_000)),
                line: "slow query took 1.5s".into(),
                structured_metadata: vec![LabelPairAdapter { name: "query_id".into(), value: "q-7".into() }],
            }],
            hash: 0,
        }],
    };
    let (s, text) = push_proto(srv, &req);
    assert_eq!(s, 204, "{text}");
    let body = json!({"streams": [{"stream": {"app": "web", "env": "dev"}, "values": [[(t0 + 3_000_000_000i64).to_string(), "hello web"]]}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.to_string().as_bytes()).unwrap();
    let r = client()
        .post(format!("{}/loki/api/v1/push", srv.http()))
        .header("Content-Type", "application/json")
        .header("Content-Encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
}

fn range(t0: i64) -> Vec<(&'static str, String)> {
    vec![("start", (t0 - 60_000_000_000).to_string()), ("end", (t0 + 60_000_000_000).to_string())]
}

fn entries(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().unwrap() {
        for e in s["values"].as_array().unwrap() {
            out.push((e[0].as_str().unwrap().to_string(), e[1].as_str().unwrap().to_string()));
        }
    }
    out
}

#[test]
fn pushes_round_trip_through_query_range() {
    let srv = TestServer::start(|_| {});
    let t0 = now_ns() - 120_000_000_000;
    seed(&srv, t0);
    let mut p = range(t0);
    p.extend([("query", r#"{env=~"prod|dev"}"#.to_string()), ("direction", "forward".into()), ("limit", "10".into())]);
    let v = get_json(&srv, "/loki/api/v1/query_range", &p);
    assert_eq!(v["data"]["resultType"], "streams");
    let mut all = entries(&v);
    all.sort();
    assert_eq!(
        all,
        vec![
            (t0.to_string(), "GET /users 500".to_string()),
            ((t0 + 1_000_000_000).to_string(), "GET /users 200".to_string()),
            ((t0 + 2_000_000_000).to_string(), "slow query took 1.5s".to_string()),
            ((t0 + 3_000_000_000).to_string(), "hello web".to_string()),
        ]
    );
    assert!(v["data"]["stats"]["summary"]["totalLinesProcessed"].as_u64().unwrap() >= 4);

    // Backward with a limit: the newest entries.
    let mut p = range(t0);
    p.extend([("query", r#"{env="prod"}"#.to_string()), ("limit", "2".into())]);
    let v = get_json(&srv, "/loki/api/v1/query_range", &p);
    let got: Vec<String> = entries(&v).into_iter().map(|e| e.1).collect();
    assert_eq!(got.len(), 2);
    assert!(got.contains(&"slow query took 1.5s".to_string()) && got.contains(&"GET /users 200".to_string()));

    // Structured metadata, categorised as Grafana asks for it.
    let mut p = range(t0);
    p.extend([("query", r#"{app="api"} | trace_id="0af7651916cd43dd8448eb211c80319c""#.to_string())]);
    let r = client()
        .get(with_query(&format!("{}/loki/api/v1/query_range", srv.http()), &p))
        .header("X-Loki-Response-Encoding-Flags", "categorize-labels")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["data"]["encodingFlags"], json!(["categorize-labels"]));
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{v}");
    assert_eq!(result[0]["stream"], json!({"app": "api", "env": "prod", "level": "error"}));
    assert_eq!(
        result[0]["values"][0],
        json!([t0.to_string(), "GET /users 500", {"structuredMetadata": {"trace_id": "0af7651916cd43dd8448eb211c80319c"}}])
    );

    // The same answers once the head went to the index (a checkpoint).
    let before = get_json(&srv, "/loki/api/v1/query_range", &p);
    let st = srv.storage();
    srv.rt.block_on(async move { tokio::task::spawn_blocking(move || st.checkpoint().unwrap()).await.unwrap() });
    let after = get_json(&srv, "/loki/api/v1/query_range", &p);
    assert_eq!(before["data"]["result"], after["data"]["result"]);
}

#[test]
fn grafana_requests() {
    let srv = TestServer::start(|_| {});
    let t0 = now_ns() - 120_000_000_000;
    seed(&srv, t0);
    // Save & test.
    let v = get_json(
        &srv,
        "/loki/api/v1/query",
        &[("query", "vector(1)+vector(1)".into()), ("time", "4000000000".into()), ("direction", "backward".into())],
    );
    assert_eq!(v["data"]["resultType"], "vector");
    // Loki reads a 10-digit time as seconds, so the sample sits at 4e9 s; Grafana checks the value.
    assert_eq!(v["data"]["result"], json!([{"metric": {}, "value": [4_000_000_000u64, "2"]}]));
    // Label browser.
    let v = get_json(&srv, "/loki/api/v1/labels", &range(t0));
    assert_eq!(v["data"], json!(["app", "env", "level"]));
    let mut p = range(t0);
    p.push(("query", r#"{env="prod"}"#.into()));
    let v = get_json(&srv, "/loki/api/v1/label/app/values", &p);
    assert_eq!(v["data"], json!(["api", "db"]));
    // Labels outside the window are not offered.
    let v = get_json(
        &srv,
        "/loki/api/v1/label/app/values",
        &[("start", (t0 + 2_500_000_000).to_string()), ("end", (t0 + 60_000_000_000).to_string())],
    );
    assert_eq!(v["data"], json!(["web"]));
    let mut p = range(t0);
    p.push(("match[]", r#"{app=~"a.*|w.*"}"#.into()));
    let v = get_json(&srv, "/loki/api/v1/series", &p);
    assert_eq!(v["data"], json!([{"app": "api", "env": "prod", "level": "error"}, {"app": "web", "env": "dev"}]));
    // Logs volume histogram.
    let mut p = range(t0);
    p.extend([("query", r#"sum by (level) (count_over_time({env=~".+"}[1m]))"#.into()), ("step", "60000ms".into())]);
    let v = get_json(&srv, "/loki/api/v1/query_range", &p);
    assert_eq!(v["data"]["resultType"], "matrix");
    let mut totals: Vec<(String, f64)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let level = s["metric"]["level"].as_str().unwrap_or("").to_string();
            // Step = range: the windows do not overlap, so the sum counts each entry once.
            let max = s["values"].as_array().unwrap().iter().map(|x| x[1].as_str().unwrap().parse::<f64>().unwrap());
            (level, max.sum::<f64>())
        })
        .collect();
    totals.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(totals, vec![("".to_string(), 1.0), ("error".to_string(), 2.0), ("warn".to_string(), 1.0)]);
    // Index volume and stats.
    let mut p = range(t0);
    p.push(("query", r#"{app=~".+"}"#.into()));
    let v = get_json(&srv, "/loki/api/v1/index/volume", &p);
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 3);
    assert_eq!(result[0]["metric"], json!({"app": "api"}));
    assert_eq!(result[0]["value"][1], "28");
    let v = get_json(&srv, "/loki/api/v1/index/stats", &p);
    assert_eq!(v, json!({"streams": 3, "chunks": 3, "bytes": 57, "entries": 4}));
    let mut p = range(t0);
    p.extend([("query", r#"{app="db"}"#.into()), ("step", "60s".into())]);
    let v = get_json(&srv, "/loki/api/v1/index/volume_range", &p);
    assert_eq!(v["data"]["resultType"], "matrix");
    let v = get_json(&srv, "/loki/api/v1/status/buildinfo", &[]);
    assert!(v["version"].as_str().unwrap().starts_with("2.9"));
    // Not implemented: Grafana falls back on 404.
    assert_eq!(get(&srv, "/loki/api/v1/detected_labels", &range(t0)).0, 404);
    assert_eq!(get(&srv, "/loki/api/v1/patterns", &range(t0)).0, 404);
}

#[test]
fn errors_are_loki_shaped() {
    let srv = TestServer::start(|raw| {
        raw.limits.max_request_bytes = 4096;
        raw.limits.max_attribute_value_bytes = 1024;
        raw.logs.max_line_bytes = 16;
        raw.logs.max_streams_per_push = 2;
    });
    let t0 = now_ns();
    let mut p = range(t0);
    p.push(("query", r#"{app="x"} |= "a" | json |"#.into()));
    let (status, text) = get(&srv, "/loki/api/v1/query_range", &p);
    assert_eq!(status, 400);
    assert!(text.starts_with("parse error at line 1, col "), "{text}");
    let (status, text) = get(&srv, "/loki/api/v1/labels", &[("query", "{app=".into())]);
    assert_eq!(status, 400, "{text}");
    let (status, _) = get(&srv, "/loki/api/v1/query_range", &[("query", "{a=\"b\"}".into()), ("step", "0".into())]);
    assert_eq!(status, 400);

    // Over the request size: 413, nothing stored.
    let big = "x".repeat(8192);
    let (status, _) =
        push_json(&srv, &json!({"streams": [{"stream": {"app": "big"}, "values": [[t0.to_string(), big]]}]}));
    assert_eq!(status, 413);
    // A line over the limit: 400 naming it; the valid entry of the same push is kept.
    let (status, text) = push_json(
        &srv,
        &json!({"streams": [{"stream": {"app": "lim"}, "values": [[t0.to_string(), "ok"], [(t0 + 1).to_string(), "this line is too long"]]}]}),
    );
    assert_eq!(status, 400);
    assert!(text.contains("max entry size"), "{text}");
    // Too many streams: 429.
    let s = |a: &str| json!({"stream": {"app": a}, "values": [[t0.to_string(), "x"]]});
    let (status, _) = push_json(&srv, &json!({"streams": [s("a"), s("b"), s("c")]}));
    assert_eq!(status, 429);
    // Not a push request at all: 400.
    let (status, _) = push_json(&srv, &json!({"nope": 1}));
    assert_eq!(status, 400);
    let r = client()
        .post(format!("{}/loki/api/v1/push", srv.http()))
        .header("Content-Type", "application/x-protobuf")
        .body(vec![1u8, 2, 3])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Invalid labels: 400.
    let (status, text) = push_json(
        &srv,
        &json!({"streams": [{"labels": "{app=~\"x\"}", "entries": [{"ts": t0.to_string(), "line": "x"}]}]}),
    );
    assert_eq!(status, 400, "{text}");

    let mut p = range(t0);
    p.push(("query", r#"{app=~".+"}"#.into()));
    let v = get_json(&srv, "/loki/api/v1/query_range", &p);
    let got: Vec<String> = entries(&v).into_iter().map(|e| e.1).collect();
    assert_eq!(got, vec!["ok"]);
}

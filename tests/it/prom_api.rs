//! The Prometheus HTTP API as Grafana's Prometheus datasource calls it (grafana-contracts.md §1):
//! the exact requests Grafana sends, asserting the exact JSON it must get back.

use ingest::remote_write::{PbMetricMetadata, WriteRequest};

use crate::prom_util::{exemplar, get, now_ms, post_form, remote_write, series};
use crate::support::TestServer;

fn server() -> TestServer {
    TestServer::start(|c| c.scrape.self_scrape = false)
}

/// Writes a small data set ending at `t` (ms): two `up` series, a counter with an exemplar,
/// a NaN gauge, and metadata.
fn load(s: &TestServer, t: i64) {
    let mut rq =
        series(&[("__name__", "http_dur_bucket"), ("le", "0.5"), ("job", "api")], &[(t - 15_000, 1.0), (t, 3.0)]);
    rq.exemplars.push(exemplar("4bf92f3577b34da6a3ce929d0e0e4736", 0.27, t - 1000));
    let req = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "api"), ("instance", "a:1")], &[(t - 15_000, 1.0), (t, 1.0)]),
            series(&[("__name__", "up"), ("job", "db"), ("instance", "b:2")], &[(t, 0.0)]),
            rq,
            series(&[("__name__", "odd"), ("job", "api")], &[(t, f64::NAN)]),
        ],
        metadata: vec![PbMetricMetadata {
            r#type: 2,
            metric_family_name: "up".into(),
            help: "Target is up.".into(),
            unit: String::new(),
        }],
    };
    let (status, body) = remote_write(&s.http(), &req);
    assert_eq!(status, 204, "{body}");
}

#[test]
fn grafana_health_check_post_body_url_and_get() {
    let s = server();
    let want = r#"{"status":"success","data":{"resultType":"scalar","result":[4,"2"]}}"#;
    // Default httpMethod POST: params in a form body.
    assert_eq!(post_form(&s.http(), "/api/v1/query", "", &[("query", "1+1"), ("time", "4")]), (200, want.into()));
    // POST with the params on the URL only.
    assert_eq!(post_form(&s.http(), "/api/v1/query", "query=1%2B1&time=4", &[]), (200, want.into()));
    // GET.
    assert_eq!(get(&s.http(), "/api/v1/query", &[("query", "1+1"), ("time", "4")]), (200, want.into()));
    // Body values take precedence over URL values (Go's r.Form order).
    assert_eq!(post_form(&s.http(), "/api/v1/query", "query=1%2B2&time=4", &[("query", "1+1")]), (200, want.into()));
}

#[test]
fn buildinfo_post_then_get_without_features() {
    let s = server();
    for (status, body) in
        [post_form(&s.http(), "/api/v1/status/buildinfo", "", &[]), get(&s.http(), "/api/v1/status/buildinfo", &[])]
    {
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success");
        assert_eq!(v["data"]["version"], "2.53.0");
        for k in ["revision", "branch", "buildUser", "buildDate", "goVersion"] {
            assert!(v["data"][k].is_string(), "{k}");
        }
        assert!(v["data"].get("features").is_none());
    }
}

#[test]
fn label_browser_calls() {
    let s = server();
    let t = now_ms();
    load(&s, t);
    let (start, end) = (((t / 1000) - 3600).to_string(), ((t / 1000) + 60).to_string());
    // Metric list: label/__name__/values with integer-second start/end (GET, as Grafana proxies it).
    let (st, body) =
        get(&s.http(), "/api/v1/label/__name__/values", &[("start", &start), ("end", &end), ("limit", "40000")]);
    assert_eq!(st, 200);
    assert_eq!(body, r#"{"status":"success","data":["http_dur_bucket","odd","up"]}"#);
    // labels with match[] as a POST (URL query kept, form body) — what the metric browser sends.
    let (st, body) = post_form(
        &s.http(),
        "/api/v1/labels",
        &format!("start={start}&end={end}"),
        &[("match[]", "{__name__=\"up\"}")],
    );
    assert_eq!(st, 200);
    assert_eq!(body, r#"{"status":"success","data":["__name__","instance","job"]}"#);
    // Repeated match[]: union.
    let (_, body) = get(
        &s.http(),
        "/api/v1/labels",
        &[("match[]", "up{job=\"db\"}"), ("match[]", "http_dur_bucket"), ("start", &start), ("end", &end)],
    );
    assert_eq!(body, r#"{"status":"success","data":["__name__","instance","job","le"]}"#);
    // Label values with a match[].
    let (_, body) = get(&s.http(), "/api/v1/label/job/values", &[("match[]", "up"), ("start", &start), ("end", &end)]);
    assert_eq!(body, r#"{"status":"success","data":["api","db"]}"#);
    // A time range without data.
    let (_, body) = get(&s.http(), "/api/v1/label/job/values", &[("start", "1"), ("end", "2")]);
    assert_eq!(body, r#"{"status":"success","data":[]}"#);
    // series with the "all" matcher and a limit (truncation warning).
    let (st, body) = post_form(
        &s.http(),
        "/api/v1/series",
        "",
        &[("match[]", "{__name__!=\"\"}"), ("start", &start), ("end", &end)],
    );
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 4);
    assert_eq!(v["data"][3], serde_json::json!({"__name__":"up","instance":"b:2","job":"db"}));
    let (_, body) = get(&s.http(), "/api/v1/series", &[("match[]", "up"), ("limit", "1")]);
    assert_eq!(
        body,
        r#"{"status":"success","data":[{"__name__":"up","instance":"a:1","job":"api"}],"warnings":["results truncated due to limit"]}"#
    );
    // series without match[] is an error, in the Prometheus envelope.
    let (st, body) = get(&s.http(), "/api/v1/series", &[]);
    assert_eq!(st, 400);
    assert_eq!(body, r#"{"status":"error","errorType":"bad_data","error":"no match[] parameter provided"}"#);
    // metadata.
    let (st, body) = get(&s.http(), "/api/v1/metadata", &[]);
    assert_eq!(st, 200);
    assert_eq!(body, r#"{"status":"success","data":{"up":[{"type":"gauge","help":"Target is up.","unit":""}]}}"#);
}

#[test]
fn exemplars_with_millisecond_times() {
    let s = server();
    let t = now_ms();
    load(&s, t);
    // Grafana's availability probe: query=test, start/end in ms.
    let (st, body) = post_form(
        &s.http(),
        "/api/v1/query_exemplars",
        "",
        &[("query", "test"), ("start", &(t - 3_600_000).to_string()), ("end", &t.to_string())],
    );
    assert_eq!((st, body.as_str()), (200, r#"{"status":"success","data":[]}"#));
    // A real exemplar query, float seconds.
    let (st, body) = post_form(
        &s.http(),
        "/api/v1/query_exemplars",
        "",
        &[
            ("query", "histogram_quantile(0.9, sum(rate(http_dur_bucket[5m])) by (le))"),
            ("start", &format!("{}", (t - 60_000) as f64 / 1000.0)),
            ("end", &format!("{}", t as f64 / 1000.0)),
        ],
    );
    assert_eq!(st, 200, "{body}");
    let ts = t - 1000;
    let want = format!(
        r#"{{"status":"success","data":[{{"seriesLabels":{{"__name__":"http_dur_bucket","job":"api","le":"0.5"}},"exemplars":[{{"labels":{{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}},"value":"0.27","timestamp":{}.{:03}}}]}}]}}"#,
        ts / 1000,
        ts % 1000
    );
    let want = want.replace(".000}", "}");
    assert_eq!(body, want);
}

#[test]
fn query_results_shapes_and_errors() {
    let s = server();
    let t = now_ms();
    load(&s, t);
    let secs = |ms: i64| format!("{}", ms as f64 / 1000.0);
    // Instant vector: timestamp a number, value a string, NaN spelled as Prometheus.
    let (st, body) = post_form(&s.http(), "/api/v1/query", "", &[("query", "odd"), ("time", &secs(t))]);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["resultType"], "vector");
    assert_eq!(v["data"]["result"][0]["metric"], serde_json::json!({"__name__":"odd","job":"api"}));
    assert!(v["data"]["result"][0]["value"][0].is_number());
    assert_eq!(v["data"]["result"][0]["value"][1], "NaN");
    // Range query: matrix with [t, "v"] pairs.
    let (st, body) = post_form(
        &s.http(),
        "/api/v1/query_range",
        "",
        &[("query", "up{job=\"api\"}"), ("start", &secs(t - 15_000)), ("end", &secs(t)), ("step", "15")],
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["resultType"], "matrix");
    let values = v["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(values[1][1], "1");
    // A duration step and an RFC 3339 time parse too.
    let (st, _) = get(
        &s.http(),
        "/api/v1/query_range",
        &[("query", "up"), ("start", "2023-11-14T22:13:20Z"), ("end", "2023-11-14T23:13:20.5Z"), ("step", "1m")],
    );
    assert_eq!(st, 200);
    // Errors: status codes and the envelope.
    let (st, body) = post_form(&s.http(), "/api/v1/query", "", &[("query", "1+")]);
    assert_eq!(st, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "error");
    assert_eq!(v["errorType"], "bad_data");
    assert!(v["error"].as_str().unwrap().contains("parse error"), "{body}");
    let (st, body) =
        get(&s.http(), "/api/v1/query_range", &[("query", "up"), ("start", "0"), ("end", "11001"), ("step", "1")]);
    assert_eq!(st, 400);
    assert_eq!(
        body,
        r#"{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}"#
    );
    let (st, body) =
        get(&s.http(), "/api/v1/query_range", &[("query", "up"), ("start", "0"), ("end", "10"), ("step", "0")]);
    assert_eq!(st, 400);
    assert!(
        body.contains(r#"invalid parameter \"step\": zero or negative query resolution step widths are not accepted"#),
        "{body}"
    );
    let (st, body) = get(&s.http(), "/api/v1/query", &[("query", "up"), ("time", "yesterday")]);
    assert_eq!(st, 400);
    assert_eq!(
        body,
        r#"{"status":"error","errorType":"bad_data","error":"invalid parameter \"time\": cannot parse \"yesterday\" to a valid timestamp"}"#
    );
    let (st, body) =
        get(&s.http(), "/api/v1/query_range", &[("query", "up"), ("start", "10"), ("end", "0"), ("step", "1")]);
    assert_eq!(st, 400);
    assert!(body.contains("end timestamp must not be before start time"), "{body}");
    // Execution errors are 422.
    let (st, body) = get(&s.http(), "/api/v1/query", &[("query", "up + on() up"), ("time", &secs(t))]);
    assert_eq!(st, 422, "{body}");
    assert!(body.contains(r#""errorType":"execution""#));
    // A range query over a range vector is bad_data.
    let (st, _) =
        get(&s.http(), "/api/v1/query_range", &[("query", "up[5m]"), ("start", "0"), ("end", "10"), ("step", "1")]);
    assert_eq!(st, 400);
    // The timeout parameter is accepted.
    let (st, _) = get(&s.http(), "/api/v1/query", &[("query", "up"), ("timeout", "30s")]);
    assert_eq!(st, 200);
    let (st, _) = get(&s.http(), "/api/v1/query", &[("query", "up"), ("timeout", "soon")]);
    assert_eq!(st, 400);
}

#[test]
fn status_rules_and_alerts() {
    let s = server();
    let t = now_ms();
    load(&s, t);
    assert_eq!(get(&s.http(), "/api/v1/rules", &[]), (200, r#"{"status":"success","data":{"groups":[]}}"#.into()));
    assert_eq!(post_form(&s.http(), "/api/v1/rules", "", &[]).0, 200);
    assert_eq!(get(&s.http(), "/api/v1/alerts", &[]), (200, r#"{"status":"success","data":{"alerts":[]}}"#.into()));
    let (st, body) = get(&s.http(), "/api/v1/status/tsdb", &[]);
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["headStats"]["numSeries"], 4);
    assert!(v["data"]["seriesCountByMetricName"].is_array());
    for p in ["/api/v1/status/flags", "/api/v1/status/runtimeinfo", "/api/v1/status/config"] {
        let (st, body) = get(&s.http(), p, &[]);
        assert_eq!(st, 200, "{p}");
        assert!(body.starts_with(r#"{"status":"success","data":{"#), "{p}: {body}");
    }
}

#[test]
fn format_query_and_remote_write_2_is_refused() {
    let s = server();
    let (st, body) = post_form(&s.http(), "/api/v1/format_query", "", &[("query", "sum(rate(x[5m]))by(job)")]);
    assert_eq!((st, body.as_str()), (200, r#"{"status":"success","data":"sum by (job) (rate(x[5m]))"}"#));
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/write", s.http()))
        .header("Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
}

//! The Pyroscope querier as Grafana's datasource calls it (`grafana-contracts.md` §4): connect
//! unary, binary protobuf (decoded here with the querier schema) and JSON; Save & test, the label
//! browser, flame graphs, span profiles, series, diff, pprof out, render and connect errors.

use prost::Message;

use crate::pyroscope_ingest::{CPU, connect, flamegraph, post_ingest, self_by_name, small_profile};
use crate::support::{TestServer, now_ns};
use ingest::pprof::proto as pp;
use outpost::api::pyroscope::proto as q;

/// Pushes `stacks` for `service` (with an optional span id on every sample).
fn push(base: &str, service: &str, stacks: &[(&[&str], i64)], span: Option<&str>) {
    push_labelled(base, service, &[], stacks, span)
}

/// [`push`] with `extra` series labels.
fn push_labelled(base: &str, service: &str, extra: &[(&str, &str)], stacks: &[(&[&str], i64)], span: Option<&str>) {
    let mut labels = vec![
        pp::LabelPair { name: "__name__".into(), value: "process_cpu".into() },
        pp::LabelPair { name: "service_name".into(), value: service.into() },
        pp::LabelPair { name: "pod".into(), value: format!("{service}-0") },
    ];
    labels.extend(extra.iter().map(|(k, v)| pp::LabelPair { name: k.to_string(), value: v.to_string() }));
    let req = pp::PushRequest {
        series: vec![pp::RawProfileSeries {
            labels,
            samples: vec![pp::RawSample {
                raw_profile: small_profile(stacks, span).encode_to_vec(),
                id: String::new(),
            }],
        }],
    };
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/push.v1.PusherService/Push"))
        .header("Content-Type", "application/proto")
        .body(req.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

fn end_ms() -> i64 {
    now_ns() / 1_000_000 + 60_000
}

fn seeded() -> TestServer {
    let server = TestServer::start(|_| {});
    let base = server.http();
    push(&base, "api", &[(&["main", "handle", "query"], 30), (&["main", "handle"], 10)], None);
    push(&base, "api", &[(&["main", "handle", "query"], 5)], Some("1111111111111111"));
    push(&base, "worker", &[(&["main", "loop", "crunch"], 50)], Some("2222222222222222"));
    server
}

/// A `SelectMergeSpanProfile` request for CPU samples of the 16-hex-digit `span` in `selector`.
fn span_profile_request(selector: &str, span: &str) -> q::SelectMergeSpanProfileRequest {
    q::SelectMergeSpanProfileRequest {
        profile_type_id: CPU.into(),
        label_selector: selector.into(),
        span_selector: vec![span.into()],
        start: 0,
        end: end_ms(),
        max_nodes: None,
        format: 1,
    }
}

/// The flame graph `SelectMergeSpanProfile` answers `req` with (status 200).
fn span_profile(base: &str, req: &q::SelectMergeSpanProfileRequest) -> q::FlameGraph {
    let (status, body) = connect(base, "SelectMergeSpanProfile", req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    q::SelectMergeSpanProfileResponse::decode(body.as_slice()).unwrap().flamegraph.unwrap()
}

/// A profile whose samples carry a span's `span_id` label is that span's span profile, and the
/// trace's `/related` lists it (one entry per profile, with the span's samples only); a profile
/// whose series carries a `trace_id` label is listed whole for that trace.
#[test]
fn a_span_profile_is_served_for_its_span_and_listed_by_the_traces_related() {
    let server = seeded();
    let base = server.http();
    let trace = [0x5a; 16];
    let span = crate::tempo::pspan(trace, 0x11, None, "GET /", 2, now_ns() - 6_000_000_000, 5_000, false);
    crate::tempo::send(&server, &crate::tempo::request("api", vec![span]));
    let fg = span_profile(&base, &span_profile_request(r#"{service_name="api"}"#, "1111111111111111"));
    assert_eq!(fg.total, 5, "only the span's samples");

    let related = |trace_hex: &str| -> serde_json::Value {
        let resp = reqwest::blocking::get(format!("{base}/outpost/api/v1/traces/{trace_hex}/related")).unwrap();
        assert_eq!(resp.status(), 200, "{trace_hex}");
        resp.json().unwrap()
    };
    let r = related(&"5a".repeat(16));
    assert_eq!(r["counts"]["spans"], 1, "{r}");
    assert_eq!(r["counts"]["profiles"], 1, "{r}");
    let p = &r["profiles"][0];
    assert_eq!(p["profileType"], CPU);
    assert_eq!(p["labels"]["service_name"], "api");
    assert_eq!(p["labels"]["pod"], "api-0");
    assert!(p["labels"].get("__profile_type__").is_none(), "synthetic labels stay out: {p}");
    assert_eq!(p["spanIds"], serde_json::json!(["1111111111111111"]));
    assert_eq!((p["samples"].as_u64(), p["value"].as_i64()), (Some(1), Some(5)));
    assert!(p["timeUnixNano"].as_str().unwrap().parse::<i64>().unwrap() > 0);

    // A profile labelled with a trace id (no span of that trace stored): all of its samples.
    let other = "7b".repeat(16);
    push_labelled(&base, "batch", &[("trace_id", &other)], &[(&["main", "a"], 3), (&["main", "b"], 4)], None);
    let r = related(&other);
    assert_eq!((r["counts"]["spans"].as_u64(), r["counts"]["profiles"].as_u64()), (Some(0), Some(1)), "{r}");
    let p = &r["profiles"][0];
    assert_eq!(p["labels"]["trace_id"], other);
    assert_eq!((p["samples"].as_u64(), p["value"].as_i64()), (Some(2), Some(7)));
    // The worker's span profile belongs to no stored trace.
    let none = reqwest::blocking::get(format!("{base}/outpost/api/v1/traces/{}/related", "22".repeat(16))).unwrap();
    assert_eq!(none.status(), 404);
}

#[test]
fn save_and_test_and_label_browser() {
    let server = seeded();
    let base = server.http();
    // Save & test: start=1000 end=4000 ms; an empty list is a pass.
    let (status, body) = connect(&base, "ProfileTypes", &q::ProfileTypesRequest { start: 1000, end: 4000 });
    assert_eq!(status, 200);
    assert!(q::ProfileTypesResponse::decode(body.as_slice()).unwrap().profile_types.is_empty());
    let (status, body) = connect(&base, "ProfileTypes", &q::ProfileTypesRequest { start: 0, end: end_ms() });
    assert_eq!(status, 200);
    let types = q::ProfileTypesResponse::decode(body.as_slice()).unwrap().profile_types;
    assert_eq!(types.len(), 1);
    assert_eq!(
        types[0],
        q::ProfileType {
            id: CPU.into(),
            name: "process_cpu".into(),
            sample_type: "cpu".into(),
            sample_unit: "nanoseconds".into(),
            period_type: "cpu".into(),
            period_unit: "nanoseconds".into(),
        }
    );
    // Label browser.
    let (status, body) =
        connect(&base, "LabelNames", &q::LabelNamesRequest { matchers: vec!["{}".into()], start: 0, end: end_ms() });
    assert_eq!(status, 200);
    let names = q::LabelNamesResponse::decode(body.as_slice()).unwrap().names;
    for n in ["__name__", "__profile_type__", "pod", "service_name"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let (status, body) = connect(
        &base,
        "LabelValues",
        &q::LabelValuesRequest {
            name: "service_name".into(),
            matchers: vec![format!("{{__profile_type__=\"{CPU}\"}}")],
            start: 0,
            end: end_ms(),
        },
    );
    assert_eq!(status, 200);
    assert_eq!(q::LabelValuesResponse::decode(body.as_slice()).unwrap().names, ["api", "worker"]);
    let (_, body) = connect(
        &base,
        "LabelValues",
        &q::LabelValuesRequest {
            name: "pod".into(),
            matchers: vec![r#"{service_name="worker"}"#.into()],
            start: 0,
            end: end_ms(),
        },
    );
    assert_eq!(q::LabelValuesResponse::decode(body.as_slice()).unwrap().names, ["worker-0"]);
    let (_, body) = connect(
        &base,
        "Series",
        &q::SeriesRequest { matchers: vec![], label_names: vec!["service_name".into()], start: 0, end: end_ms() },
    );
    let sets = q::SeriesResponse::decode(body.as_slice()).unwrap().labels_set;
    assert_eq!(sets.len(), 2);
    // The same in JSON (protojson names, int64 as strings accepted).
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/querier.v1.QuerierService/ProfileTypes"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"start":"0","end":"{}"}}"#, end_ms()))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["profileTypes"][0]["ID"], CPU);
    // Connect over h2c (HTTP/2 with prior knowledge), as Go clients with an h2c transport call it.
    let h2 = reqwest::blocking::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2
        .post(format!("{base}/querier.v1.QuerierService/ProfileTypes"))
        .header("Content-Type", "application/proto")
        .header("Connect-Protocol-Version", "1")
        .body(q::ProfileTypesRequest { start: 0, end: end_ms() }.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 200);
    let types = q::ProfileTypesResponse::decode(resp.bytes().unwrap().as_ref()).unwrap().profile_types;
    assert_eq!(types[0].id, CPU);
}

/// Decodes levels into `(depth, absolute start, total, self, name)`.
fn nodes(fg: &q::FlameGraph) -> Vec<(usize, i64, i64, i64, String)> {
    let mut out = Vec::new();
    for (d, l) in fg.levels.iter().enumerate() {
        let mut prev = 0;
        for c in l.values.chunks(4) {
            let start = prev + c[0];
            out.push((d, start, c[1], c[2], fg.names[c[3] as usize].clone()));
            prev = start + c[1];
        }
    }
    out
}

#[test]
fn flame_graphs_span_profiles_series_and_diff() {
    let server = seeded();
    let base = server.http();
    let fg = flamegraph(&base, CPU, r#"{service_name="api"}"#, None);
    assert_eq!(fg.total, 45);
    assert_eq!(
        nodes(&fg),
        vec![
            (0, 0, 45, 0, "total".into()),
            (1, 0, 45, 0, "main".into()),
            (2, 0, 45, 10, "handle".into()),
            (3, 0, 35, 35, "query".into()),
        ]
    );
    assert_eq!(fg.max_self, 35);
    let all = flamegraph(&base, CPU, "{}", None);
    assert_eq!(all.total, 95);
    assert_eq!(self_by_name(&all).get("crunch"), Some(&50));
    // max_nodes: the smallest subtrees fold into "other".
    let small = flamegraph(&base, CPU, "{}", Some(3));
    assert!(nodes(&small).iter().any(|n| n.4 == "other"), "{:?}", nodes(&small));
    assert_eq!(small.total, 95);

    // Span profile: only the samples of span 1111111111111111.
    let req = span_profile_request("{}", "1111111111111111");
    let fg = span_profile(&base, &req);
    assert_eq!(fg.total, 5);
    assert_eq!(nodes(&fg).last().unwrap().4, "query");
    let bad = q::SelectMergeSpanProfileRequest { span_selector: vec!["xyz".into()], ..req };
    let (status, body) = connect(&base, "SelectMergeSpanProfile", &bad);
    assert_eq!(status, 400);
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["code"], "invalid_argument");

    // SelectSeries grouped by service.
    let req = q::SelectSeriesRequest {
        profile_type_id: CPU.into(),
        label_selector: "{}".into(),
        start: 0,
        end: end_ms(),
        group_by: vec!["service_name".into()],
        step: 3600.0 * 24.0 * 365.0 * 100.0,
        aggregation: None,
        stack_trace_selector: None,
        limit: None,
        exemplar_type: 0,
    };
    let (status, body) = connect(&base, "SelectSeries", &req);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let series = q::SelectSeriesResponse::decode(body.as_slice()).unwrap().series;
    let totals: Vec<(String, f64)> =
        series.iter().map(|s| (s.labels[0].value.clone(), s.points.iter().map(|p| p.value).sum())).collect();
    assert_eq!(totals, vec![("api".to_string(), 45.0), ("worker".to_string(), 50.0)]);

    // Diff: api on the left, worker on the right.
    let side = |sel: &str| q::SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: sel.into(),
        start: 0,
        end: end_ms(),
        max_nodes: None,
        format: 0,
        stack_trace_selector: None,
    };
    let (status, body) = connect(
        &base,
        "Diff",
        &q::DiffRequest {
            left: Some(side(r#"{service_name="api"}"#)),
            right: Some(side(r#"{service_name="worker"}"#)),
        },
    );
    assert_eq!(status, 200);
    let d = q::DiffResponse::decode(body.as_slice()).unwrap().flamegraph.unwrap();
    assert_eq!((d.left_ticks, d.right_ticks, d.total), (45, 50, 95));
    assert_eq!(d.levels[0].values, vec![0, 45, 0, 0, 50, 0, 0]);

    // SelectMergeProfile: pprof out, decodable with the pprof schema.
    let (status, body) = connect(
        &base,
        "SelectMergeProfile",
        &q::SelectMergeProfileRequest {
            profile_type_id: CPU.into(),
            label_selector: r#"{service_name="worker"}"#.into(),
            start: 0,
            end: end_ms(),
            max_nodes: None,
            stack_trace_selector: None,
        },
    );
    assert_eq!(status, 200);
    let p = pp::Profile::decode(body.as_slice()).unwrap();
    assert_eq!(p.sample.iter().map(|s| s.value[0]).sum::<i64>(), 50);
    assert_eq!(p.string_table[p.sample_type[0].r#type as usize], "cpu");

    // JSON flame graph.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/querier.v1.QuerierService/SelectMergeStacktraces"))
        .header("Content-Type", "application/json")
        .header("Connect-Protocol-Version", "1")
        .body(serde_json::json!({"profileTypeID": CPU, "labelSelector": "{service_name=\"worker\"}", "start": "0", "end": end_ms().to_string()}).to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["flamegraph"]["total"], "50");
    assert_eq!(v["flamegraph"]["names"][0], "total");

    // Legacy render.
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "{base}/pyroscope/render?query={CPU}%7Bservice_name%3D%22worker%22%7D&from=0&until=now%2B0s&format=json"
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400); // `now+0s` is not a time
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "{base}/pyroscope/render?query={CPU}%7Bservice_name%3D%22worker%22%7D&from=now-1h&until=now&format=json"
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().unwrap();
    assert_eq!(v["flamebearer"]["numTicks"], 50);
    assert_eq!(v["timeline"]["samples"].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).sum::<i64>(), 50);
}

#[test]
fn connect_errors_have_codes_and_statuses() {
    let server = seeded();
    let base = server.http();
    let req = q::SelectMergeStacktracesRequest {
        profile_type_id: "cpu".into(),
        label_selector: "{}".into(),
        start: 0,
        end: end_ms(),
        max_nodes: None,
        format: 0,
        stack_trace_selector: None,
    };
    let (status, body) = connect(&base, "SelectMergeStacktraces", &req);
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "invalid_argument");
    assert!(v["message"].as_str().unwrap().contains("invalid profile type"));
    let bad_sel = q::SelectMergeStacktracesRequest {
        profile_type_id: CPU.into(),
        label_selector: "{service_name=}".into(),
        ..req
    };
    let (status, body) = connect(&base, "SelectMergeStacktraces", &bad_sel);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, body) = connect(&base, "NoSuchMethod", &q::ProfileTypesRequest { start: 0, end: 0 });
    assert_eq!(status, 501);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "unimplemented");
    // Garbage protobuf.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/querier.v1.QuerierService/ProfileTypes"))
        .header("Content-Type", "application/proto")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Wrong protocol version.
    let resp = reqwest::blocking::Client::new()
        .post(format!("{base}/querier.v1.QuerierService/ProfileTypes"))
        .header("Content-Type", "application/proto")
        .header("Connect-Protocol-Version", "2")
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // Folded ingest shows up too (the health of the non-pprof path).
    let (status, _) = post_ingest(&base, "name=folded.cpu&from=1&until=2&sampleRate=100", b"main;x 1\n".to_vec(), None);
    assert_eq!(status, 200);
}

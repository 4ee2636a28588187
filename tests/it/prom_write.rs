//! Prometheus remote write: round trip through the query API, and garbage that must get a clean
//! error (never a panic, never a partial write).

use ingest::remote_write::{PbLabel, PbSample, PbTimeSeries, WriteRequest};

use crate::prom_util::{get, now_ms, post_raw, remote_write, series};
use crate::support::TestServer;

fn server() -> TestServer {
    TestServer::start(|c| c.scrape.self_scrape = false)
}

fn query(s: &TestServer, q: &str, t: i64) -> serde_json::Value {
    let (st, body) = get(&s.http(), "/api/v1/query", &[("query", q), ("time", &format!("{}", t as f64 / 1000.0))]);
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn round_trip_with_special_values() {
    let s = server();
    let t = now_ms();
    let stale = f64::from_bits(storage::model::STALE_NAN_BITS);
    let req = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "rw_gauge"), ("k", "a")], &[(t - 2000, 1.5), (t - 1000, 2.5)]),
            series(&[("__name__", "rw_gauge"), ("k", "inf")], &[(t - 1000, f64::INFINITY)]),
            series(&[("__name__", "rw_gauge"), ("k", "ninf")], &[(t - 1000, f64::NEG_INFINITY)]),
            series(&[("__name__", "rw_gauge"), ("k", "nan")], &[(t - 1000, f64::NAN)]),
            series(&[("__name__", "rw_gauge"), ("k", "stale")], &[(t - 2000, 1.0), (t - 1000, stale)]),
        ],
        metadata: vec![],
    };
    let (st, body) = remote_write(&s.http(), &req);
    assert_eq!((st, body.as_str()), (204, ""));
    let v = query(&s, "rw_gauge", t);
    let got: Vec<(String, String)> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"]["k"].as_str().unwrap().to_string(), r["value"][1].as_str().unwrap().to_string()))
        .collect();
    // The stale series is gone from instant queries after its marker.
    let want = [("a", "2.5"), ("inf", "+Inf"), ("nan", "NaN"), ("ninf", "-Inf")];
    assert_eq!(got, want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>());
    // Stored bit for bit: the staleness marker is in the store as such.
    let store = s.storage();
    use storage::Reader;
    let m = storage::Matcher::eq("k", "stale");
    let ts = store.metric_store().select_matching(&[m], 0, i64::MAX);
    assert!(storage::model::is_stale_nan(ts[0].samples[1].value));
}

#[test]
fn garbage_gets_clean_errors() {
    let s = server();
    let t = now_ms();
    // Not snappy.
    let (st, body) = post_raw(&s.http(), b"\xff\xff\xff\xff\xff\xff\xff\xffhello".to_vec());
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");
    // Snappy, but not a WriteRequest.
    let (st, body) = post_raw(&s.http(), snap::raw::Encoder::new().compress_vec(b"\x0a\x05\xff\xff").unwrap());
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("invalid remote write request"), "{body}");
    // A label value that is not UTF-8 (the fast path reads labels in place): refused whole.
    let mut raw = prost::Message::encode_to_vec(&WriteRequest {
        timeseries: vec![series(&[("__name__", "good_one")], &[(t, 1.0)]), series(&[("__name__", "zz")], &[(t, 1.0)])],
        metadata: vec![],
    });
    let at = raw.windows(2).position(|w| w == b"zz").unwrap();
    raw[at] = 0xff;
    let (st, body) = post_raw(&s.http(), snap::raw::Encoder::new().compress_vec(&raw).unwrap());
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("invalid remote write request"), "{body}");
    // Empty body: an empty request is valid.
    let (st, _) = post_raw(&s.http(), Vec::new());
    assert!(st == 204 || st == 400, "{st}");
    let bad = |labels: Vec<PbLabel>| {
        let req = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "good_one")], &[(t, 1.0)]),
                PbTimeSeries { labels, samples: vec![PbSample { value: 1.0, timestamp: t }], ..Default::default() },
            ],
            metadata: vec![],
        };
        remote_write(&s.http(), &req)
    };
    let l = |n: &str, v: &str| PbLabel { name: n.into(), value: v.into() };
    for (labels, want) in [
        (vec![l("__name__", "x"), l("a", "1"), l("a", "2")], "not unique"),
        (vec![l("", "v"), l("__name__", "x")], "empty name"),
        (vec![l("__name__", "x"), l("b", "1"), l("a", "1")], "not sorted"),
        (vec![l("job", "x")], "no metric name"),
        (
            std::iter::once(l("__name__", "x")).chain((0..10_000).map(|i| l(&format!("l{i:05}"), "v"))).collect(),
            "max_labels_per_series",
        ),
        (vec![l("__name__", "x"), l("a", &"v".repeat(5000))], "max_label_value_bytes"),
    ] {
        let (st, body) = bad(labels);
        assert_eq!(st, 400, "{want}: {body}");
        assert!(body.contains(want), "{want}: {body}");
    }
    // Nothing of a refused request was stored.
    let v = query(&s, "good_one", t);
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 0);
    // Samples far in the future are out of bounds.
    let (st, body) = remote_write(
        &s.http(),
        &WriteRequest { timeseries: vec![series(&[("__name__", "x")], &[(t + 86_400_000, 1.0)])], metadata: vec![] },
    );
    assert_eq!(st, 400);
    assert!(body.contains("out of bounds"), "{body}");
    // The server is still fine.
    let (st, _) = remote_write(
        &s.http(),
        &WriteRequest { timeseries: vec![series(&[("__name__", "good_one")], &[(t, 1.0)])], metadata: vec![] },
    );
    assert_eq!(st, 204);
}

#[test]
fn series_limits() {
    let s = TestServer::start(|c| {
        c.scrape.self_scrape = false;
        c.limits.max_series_per_request = 1000;
    });
    let t = now_ms();
    let names: Vec<String> = (0..1001).map(|i| format!("{i}")).collect();
    let req = WriteRequest {
        timeseries: names.iter().map(|i| series(&[("__name__", "many"), ("i", i)], &[(t, 1.0)])).collect(),
        metadata: vec![],
    };
    let (st, body) = remote_write(&s.http(), &req);
    assert_eq!(st, 413, "{body}");
    assert!(body.contains("limits.max_series_per_request = 1000"), "{body}");
    let mut ok = req.clone();
    ok.timeseries.truncate(1000);
    assert_eq!(remote_write(&s.http(), &ok).0, 204);

    // A million series in one request: refused by a limit, with a clear message.
    let s = server();
    let one = series(&[("__name__", "m"), ("i", "0")], &[(t, 1.0)]);
    let req = WriteRequest { timeseries: vec![one; 1_000_000], metadata: vec![] };
    let (st, body) = remote_write(&s.http(), &req);
    assert_eq!(st, 413, "{body}");
    assert!(body.contains("limits.max_"), "{body}");
}

/// The metrics store's out-of-order window is applied before the WAL write: samples the store would
/// drop are refused (400, as Prometheus answers "out of bounds"), the rest of the request is stored.
#[test]
fn samples_older_than_the_out_of_order_window_are_refused_not_lost() {
    let s = server();
    let t = now_ms();
    let (st, body) = remote_write(
        &s.http(),
        &WriteRequest { timeseries: vec![series(&[("__name__", "ooo"), ("k", "new")], &[(t, 1.0)])], metadata: vec![] },
    );
    assert_eq!((st, body.as_str()), (204, ""));
    // 30 minutes back is outside the default 10-minute window; 5 minutes back is inside it.
    let (st, body) = remote_write(
        &s.http(),
        &WriteRequest {
            timeseries: vec![
                series(&[("__name__", "ooo"), ("k", "old")], &[(t - 30 * 60_000, 2.0)]),
                series(&[("__name__", "ooo"), ("k", "recent")], &[(t - 5 * 60_000, 3.0)]),
            ],
            metadata: vec![],
        },
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("1 samples out of bounds"), "{body}");
    let store = s.storage();
    use storage::Reader;
    let stored = |k: &str| store.metric_store().select_matching(&[storage::Matcher::eq("k", k)], 0, i64::MAX).len();
    assert_eq!((stored("new"), stored("old"), stored("recent")), (1, 0, 1));
}

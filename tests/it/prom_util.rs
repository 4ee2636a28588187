//! Helpers for the Prometheus API tests: remote-write bodies and form/GET calls.

use ingest::remote_write::{PbExemplar, PbLabel, PbSample, PbTimeSeries, WriteRequest};

/// A series with float samples `(t_ms, v)`; labels are sorted here, `__name__` first in `pairs`.
pub fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> PbTimeSeries {
    let mut labels: Vec<PbLabel> =
        pairs.iter().map(|(n, v)| PbLabel { name: n.to_string(), value: v.to_string() }).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    PbTimeSeries {
        labels,
        samples: samples.iter().map(|(t, v)| PbSample { value: *v, timestamp: *t }).collect(),
        exemplars: vec![],
        histograms: vec![],
    }
}

/// An exemplar with a `trace_id`.
pub fn exemplar(trace_id: &str, value: f64, t_ms: i64) -> PbExemplar {
    PbExemplar { labels: vec![PbLabel { name: "trace_id".into(), value: trace_id.into() }], value, timestamp: t_ms }
}

/// POSTs a remote-write request; returns status and body.
pub fn remote_write(base: &str, req: &WriteRequest) -> (u16, String) {
    post_raw(base, ingest::remote_write::encode(req))
}

/// POSTs a raw body to `/api/v1/write`.
pub fn post_raw(base: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().unwrap())
}

/// A form-encoded POST with `body` params and an optional URL query string.
pub fn post_form(base: &str, path: &str, url_query: &str, body: &[(&str, &str)]) -> (u16, String) {
    let enc: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(body).finish();
    let url = if url_query.is_empty() { format!("{base}{path}") } else { format!("{base}{path}?{url_query}") };
    let r = reqwest::blocking::Client::new()
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(enc)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().unwrap())
}

/// A GET with params in the URL.
pub fn get(base: &str, path: &str, params: &[(&str, &str)]) -> (u16, String) {
    let enc: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    let r = reqwest::blocking::get(format!("{base}{path}?{enc}")).unwrap();
    let status = r.status().as_u16();
    (status, r.text().unwrap())
}

/// Now in ms.
pub fn now_ms() -> i64 {
    crate::support::now_ns() / 1_000_000
}

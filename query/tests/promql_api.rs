//! The PromQL engine's public API: result shapes, error classification, limits and selectors.

use std::time::Duration;

use query::promql::{Engine, EngineOptions, FloatHistogram, Point, QueryError, Value, parse_selector};
use storage::MemStore;
use storage::model::{BucketSpan, FloatSample, Labels, MetricsBatch, TimeSeries, WriteBatch};
use storage::read::Reader;

fn store() -> MemStore {
    let store = MemStore::new();
    let mut batch = MetricsBatch::default();
    for (inst, step) in [("b", 2.0), ("a", 1.0)] {
        batch.series.push(TimeSeries {
            labels: Labels::from_pairs([("__name__", "m"), ("inst", inst)]),
            samples: (0..100).map(|i| FloatSample { timestamp_ms: i * 15_000, value: step * i as f64 }).collect(),
            ..Default::default()
        });
    }
    store.apply(WriteBatch::Metrics(batch));
    store
}

#[test]
fn range_results_are_sorted_matrices() {
    let s = store();
    let r = Engine::default().range_query(s.metric_store(), "m", 0, 60_000, 30_000, None).unwrap();
    let Value::Matrix(series) = r.value else { panic!("matrix expected") };
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].labels.get("inst"), Some("a"));
    assert_eq!(series[0].floats, vec![(0, 0.0), (30_000, 2.0), (60_000, 4.0)]);
    assert!(r.samples_touched >= 6);
}

#[test]
fn instant_results_carry_the_evaluation_time() {
    let s = store();
    let r = Engine::default().instant_query(s.metric_store(), "m{inst=\"a\"}", 61_000, None).unwrap();
    let Value::Vector(v) = r.value else { panic!("vector expected") };
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].t_ms, 61_000);
    assert_eq!(v[0].point, Point::Float(4.0));
    let r = Engine::default().instant_query(s.metric_store(), "1 + 1", 4_000, None).unwrap();
    assert_eq!(r.value, Value::Scalar { t_ms: 4_000, v: 2.0 });
    let r = Engine::default().instant_query(s.metric_store(), "\"hi\"", 4_000, None).unwrap();
    assert_eq!(r.value, Value::String { t_ms: 4_000, s: "hi".into() });
    let r = Engine::default().instant_query(s.metric_store(), "m[30s]", 60_000, None).unwrap();
    let Value::Matrix(m) = r.value else { panic!("matrix expected") };
    assert_eq!(m[0].floats, vec![(30_000, 2.0), (45_000, 3.0), (60_000, 4.0)]);
    assert_eq!(m[0].labels.get("__name__"), Some("m"));
}

#[test]
fn errors_are_classified() {
    let s = store();
    let e = Engine::default();
    let err = e.instant_query(s.metric_store(), "1 +", 0, None).unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
    assert_eq!(err.to_string(), "1:4: parse error: unexpected end of input");
    let err = e.range_query(s.metric_store(), "m[5m]", 0, 10, 1, None).unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
    assert_eq!(
        err.to_string(),
        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
    );
    let err = e.range_query(s.metric_store(), "m", 0, 10, 0, None).unwrap_err();
    assert_eq!(err.error_type(), "bad_data");
    let err = e.instant_query(s.metric_store(), "m / ignoring(inst) m", 60_000, None).unwrap_err();
    assert_eq!(err.error_type(), "execution");
    assert!(err.to_string().ends_with("many-to-many matching not allowed: matching labels must be unique on one side"));
    assert_eq!(QueryError::Timeout.error_type(), "timeout");
    assert_eq!(QueryError::Timeout.to_string(), "query timed out in expression evaluation");
    assert_eq!(QueryError::Canceled.error_type(), "canceled");
    assert_eq!(
        QueryError::TooManySamples.to_string(),
        "query processing would load too many samples into memory in query execution"
    );
}

#[test]
fn limits_apply() {
    let s = store();
    let e = Engine::new(EngineOptions { max_samples: 10, ..EngineOptions::default() });
    let err = e.range_query(s.metric_store(), "m", 0, 1_000_000, 15_000, None).unwrap_err();
    assert_eq!(err, QueryError::TooManySamples);
    assert_eq!(err.error_type(), "execution");
    let e = Engine::default();
    let err = e
        .range_query(s.metric_store(), "sum_over_time(m[1h:1s])", 0, 10_000_000, 1_000, Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(err, QueryError::Timeout);
}

#[test]
fn selectors_parse_for_the_api() {
    let m = parse_selector("up{job=\"a\", instance=~\"x.*\"}").unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0].name, "__name__");
    assert!(parse_selector("{job=~\".*\"}").is_err());
    assert!(parse_selector("sum(up)").is_err());
    assert!(parse_selector("up{").is_err());
}

#[test]
fn histogram_buckets_print_as_the_api_does() {
    let h = FloatHistogram {
        schema: 0,
        zero_threshold: 0.001,
        zero_count: 2.0,
        count: 7.0,
        sum: 1.5,
        positive_spans: vec![BucketSpan { offset: 0, length: 2 }, BucketSpan { offset: 1, length: 1 }],
        positive_buckets: vec![1.0, 0.0, 2.0],
        negative_spans: vec![BucketSpan { offset: 1, length: 1 }],
        negative_buckets: vec![2.0],
    };
    assert_eq!(h.count(), 7.0);
    assert_eq!(h.sum(), 1.5);
    assert_eq!(
        h.api_buckets(),
        vec![(1, -2.0, -1.0, 2.0), (3, -0.001, 0.001, 2.0), (0, 0.5, 1.0, 1.0), (0, 4.0, 8.0, 2.0)]
    );
    let fine = FloatHistogram {
        schema: 2,
        count: 1.0,
        positive_spans: vec![BucketSpan { offset: -3, length: 1 }],
        positive_buckets: vec![1.0],
        ..FloatHistogram::default()
    };
    let b = fine.api_buckets();
    assert_eq!(b.len(), 1);
    assert!((b[0].1 - 2f64.powf(-1.0)).abs() < 1e-12 && (b[0].2 - 2f64.powf(-0.75)).abs() < 1e-12, "{b:?}");
}

#[test]
fn extreme_times_do_not_overflow() {
    let s = store();
    let e = Engine::default();
    for q in ["m", "rate(m[5m])", "m offset 1000y", "m @ -100000000000", "sum_over_time(m[1y:1d] offset -1000y)"] {
        let _ = e.instant_query(s.metric_store(), q, i64::MAX, None);
        let _ = e.instant_query(s.metric_store(), q, i64::MIN, None);
    }
    let err = e.range_query(s.metric_store(), "m", i64::MIN, i64::MAX, 1, None).unwrap_err();
    assert_eq!(err, QueryError::TooManySamples);
    let err = e.instant_query(s.metric_store(), "m[100y:1ms]", 0, None).unwrap_err();
    assert_eq!(err, QueryError::TooManySamples);
}

#[test]
fn odd_histograms_do_not_panic() {
    let h = FloatHistogram {
        schema: 100,
        count: 1.0,
        positive_spans: vec![BucketSpan { offset: i32::MIN, length: 2 }, BucketSpan { offset: i32::MAX, length: 2 }],
        positive_buckets: vec![1.0, 2.0, 3.0, 4.0],
        negative_spans: vec![BucketSpan { offset: i32::MAX, length: 3 }],
        negative_buckets: vec![1.0],
        ..FloatHistogram::default()
    };
    let _ = h.api_buckets();
    let store = MemStore::new();
    let mut batch = MetricsBatch::default();
    let native = storage::model::NativeHistogram {
        schema: -100,
        count: 2.0,
        positive_spans: vec![BucketSpan { offset: i32::MAX, length: 1 }],
        positive_counts: vec![2.0],
        ..Default::default()
    };
    batch.series.push(TimeSeries {
        labels: Labels::from_pairs([("__name__", "h")]),
        histograms: (0..3)
            .map(|i| storage::model::HistogramSample { timestamp_ms: i * 60_000, histogram: native.clone() })
            .collect(),
        ..Default::default()
    });
    store.apply(WriteBatch::Metrics(batch));
    let e = Engine::default();
    for q in ["h", "rate(h[5m])", "sum(h) + h", "histogram_quantile(0.5, h)", "histogram_fraction(0, 1, h)"] {
        let _ = e.instant_query(store.metric_store(), q, 120_000, None);
    }
}

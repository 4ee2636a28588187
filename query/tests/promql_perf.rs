//! A larger range query, to keep evaluation cost in check (no timing asserts; prints figures).

use std::time::Instant;

use query::promql::{Engine, Value};
use storage::MemStore;
use storage::model::{FloatSample, Labels, MetricsBatch, TimeSeries, WriteBatch};
use storage::read::Reader;

#[test]
fn range_query_over_many_series() {
    let store = MemStore::new();
    let mut batch = MetricsBatch::default();
    for s in 0..200 {
        batch.series.push(TimeSeries {
            labels: Labels::from_pairs([
                ("__name__", "req_total".to_string()),
                ("pod", format!("p{s}")),
                ("le", ["0.1", "1", "+Inf"][s % 3].to_string()),
            ]),
            samples: (0..2880)
                .map(|i| FloatSample { timestamp_ms: i * 15_000, value: (i * (s as i64 % 7 + 1)) as f64 })
                .collect(),
            ..Default::default()
        });
    }
    store.apply(WriteBatch::Metrics(batch));
    let engine = Engine::default();
    let t = Instant::now();
    let r = engine
        .range_query(store.metric_store(), "sum by (le) (rate(req_total[5m]))", 0, 43_200_000, 60_000, None)
        .unwrap();
    let Value::Matrix(m) = &r.value else { panic!("matrix expected") };
    assert_eq!(m.len(), 3);
    // No rate at t=0: a window needs two samples.
    assert_eq!(m[0].floats.len(), 720);
    eprintln!("sum(rate) over 200 series x 721 steps: {:?}, {} samples touched", t.elapsed(), r.samples_touched);
    let t = Instant::now();
    let r = engine
        .range_query(
            store.metric_store(),
            "histogram_quantile(0.9, sum by (le) (rate(req_total[5m])))",
            0,
            43_200_000,
            60_000,
            None,
        )
        .unwrap();
    let Value::Matrix(m) = &r.value else { panic!("matrix expected") };
    assert_eq!(m.len(), 1);
    eprintln!("histogram_quantile: {:?}", t.elapsed());
    let t = Instant::now();
    let r = engine
        .range_query(store.metric_store(), "req_total * on(pod) group_left req_total", 0, 43_200_000, 60_000, None)
        .unwrap();
    let Value::Matrix(m) = &r.value else { panic!("matrix expected") };
    assert_eq!(m.len(), 200);
    eprintln!("vector matching: {:?}", t.elapsed());
}

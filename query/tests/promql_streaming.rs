//! The series-by-series paths (lazy reads, several threads, aggregation into accumulators) give
//! bit-identical answers to the sequential path. An `or` selector is read up front and
//! evaluated on one thread, so `{__name__="x" or __name__="absent"}` is the reference for `x`.

use query::promql::{Engine, Series, Value};
use storage::MemStore;
use storage::model::{FloatSample, Labels, MetricsBatch, TimeSeries, WriteBatch};
use storage::read::Reader;

fn store() -> MemStore {
    let store = MemStore::new();
    let mut batch = MetricsBatch::default();
    // Enough series for several batches of several threads; values whose sums depend on order.
    for s in 0..600u64 {
        let mut v = 0.0f64;
        let mut x = s.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let samples = (0..200)
            .filter_map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v += (x % 1000) as f64 / 7.0 + 1e-3 * (s as f64);
                // Resets, gaps and a late start.
                if x % 97 == 0 {
                    v = 0.0;
                }
                (x % 31 != 0 && i as u64 >= s % 5).then_some(FloatSample { timestamp_ms: i * 15_000, value: v })
            })
            .collect();
        batch.series.push(TimeSeries {
            labels: Labels::from_pairs([
                ("__name__", "req_total".to_string()),
                ("pod", format!("p{s}")),
                ("job", format!("j{}", s % 7)),
                ("le", ["0.1", "1", "+Inf"][(s % 3) as usize].to_string()),
            ]),
            samples,
            ..Default::default()
        });
    }
    store.apply(WriteBatch::Metrics(batch));
    store
}

fn dump(v: &Value) -> Vec<String> {
    let Value::Matrix(m) = v else { panic!("matrix expected, got {v:?}") };
    m.iter()
        .map(|s: &Series| {
            let pts: Vec<String> = s.floats.iter().map(|(t, v)| format!("{t}:{:x}", v.to_bits())).collect();
            format!("{} {}", s.labels, pts.join(" "))
        })
        .collect()
}

#[test]
fn streamed_evaluation_matches_the_sequential_path() {
    let store = store();
    let engine = Engine::default();
    let reference_sel = r#"{__name__="req_total" or __name__="nothing_here"}"#;
    for q in [
        "sum by (le) (rate(SEL[5m]))",
        "sum(rate(SEL[5m]))",
        "avg by (job) (increase(SEL[3m]))",
        "stddev by (job) (deriv(SEL[5m]))",
        "stdvar without (pod) (irate(SEL[1m]))",
        "min by (le) (SEL)",
        "max by (job) (SEL)",
        "count by (job, le) (SEL)",
        "group by (job) (resets(SEL[10m]))",
        "sum by (job) (SEL)",
        "avg(SEL)",
        "rate(SEL[5m])",
        "SEL",
        "histogram_quantile(0.9, sum by (le, job) (rate(SEL[5m])))",
        "topk(3, sum by (pod) (rate(SEL[5m])))",
        "sum by (job) (quantile_over_time(0.5, SEL[10m]))",
    ] {
        let fast = q.replace("SEL", "req_total");
        let slow = q.replace("SEL", reference_sel);
        let a = engine.range_query(store.metric_store(), &fast, 0, 3_000_000, 60_000, None).unwrap();
        let b = engine.range_query(store.metric_store(), &slow, 0, 3_000_000, 60_000, None).unwrap();
        let (a, b) = (dump(&a.value), dump(&b.value));
        assert!(!a.is_empty(), "{q}: empty");
        assert_eq!(a, b, "{q}");
        for t in [60_000, 1_234_567] {
            let a = engine.instant_query(store.metric_store(), &fast, t, None).unwrap();
            let b = engine.instant_query(store.metric_store(), &slow, t, None).unwrap();
            assert_eq!(a.value, b.value, "{q} at {t}");
        }
    }
}

//! Unit tests of the metrics engine: the head, matchers, persist and reopen, compaction, retention.

use super::*;
#[allow(unused_imports)]
use crate::model::STALE_NAN_BITS;
use crate::model::{FloatSample, MetricsBatch, TimeSeries};
use crate::read::{MatchOp, MetricsReader};

fn fs(t: i64, v: f64) -> FloatSample {
    FloatSample { timestamp_ms: t, value: v }
}

fn mem() -> MetricsHead {
    MetricsHead::open(None, &MetricsOptions::default()).unwrap()
}

#[test]
fn later_write_of_a_timestamp_wins() {
    let head = mem();
    let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
    let batch = |samples| MetricsBatch {
        series: vec![TimeSeries { labels: labels.clone(), samples, ..TimeSeries::default() }],
        metadata: vec![],
    };
    head.apply(WalPos::ZERO, batch(vec![fs(20, 1.0), fs(10, 2.0), fs(20, 3.0)]));
    head.apply(WalPos::ZERO, batch(vec![fs(10, 4.0), fs(30, 5.0), fs(5, 6.0)]));
    let got = head.select(&[("job".into(), "a".into())], i64::MIN, i64::MAX);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples, vec![fs(5, 6.0), fs(10, 4.0), fs(20, 3.0), fs(30, 5.0)]);
    assert_eq!(head.items(), 4);
    let got = head.select(&[("job".into(), "a".into())], 10, 20);
    assert_eq!(got[0].samples, vec![fs(10, 4.0), fs(20, 3.0)]);
    assert!(head.select(&[("job".into(), "a".into())], 31, 40).is_empty());
}

#[test]
fn matchers_intersect_and_empty_means_absent() {
    let head = mem();
    let mk = |pairs: &[(&str, &str)]| TimeSeries {
        labels: Labels::from_pairs(pairs.iter().copied()),
        samples: vec![fs(1, 1.0)],
        ..TimeSeries::default()
    };
    head.apply(
        WalPos::ZERO,
        MetricsBatch {
            series: vec![
                mk(&[("__name__", "m"), ("a", "1")]),
                mk(&[("__name__", "m"), ("a", "1"), ("b", "2")]),
                mk(&[("__name__", "n"), ("a", "1")]),
            ],
            metadata: vec![],
        },
    );
    let names = |m: &[(&str, &str)]| {
        let m: Vec<(String, String)> = m.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        head.select(&m, 0, 10).into_iter().map(|s| s.labels.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names(&[("__name__", "m")]).len(), 2);
    assert_eq!(names(&[("__name__", "m"), ("b", "")]), vec![r#"{__name__="m", a="1"}"#]);
    assert_eq!(names(&[("a", "1"), ("b", "2")]), vec![r#"{__name__="m", a="1", b="2"}"#]);
    assert!(names(&[("a", "9")]).is_empty());
    assert_eq!(names(&[]).len(), 3);
    assert_eq!(head.series().len(), 3);
}

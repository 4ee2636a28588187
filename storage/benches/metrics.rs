//! Micro benchmarks of the metrics engine through its public API: appending a scrape of 10k
//! series to a warm head, and selecting with a regex matcher. `cargo bench -p storage --bench metrics`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use storage::model::{FloatSample, Labels, MetricsBatch, TimeSeries, WriteBatch};
use storage::{MatchOp, Matcher, MemStore, Reader};

const SERIES: usize = 10_000;

fn labels() -> Vec<Labels> {
    (0..SERIES)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", format!("metric_{}", i % 50)),
                ("job", format!("job-{}", i % 10)),
                ("instance", format!("10.0.{}.{}:9100", i / 250, i % 250)),
                ("status", ["200", "404", "500"][i % 3].to_string()),
            ])
        })
        .collect()
}

fn scrape(labels: &[Labels], t: i64) -> WriteBatch {
    WriteBatch::Metrics(MetricsBatch {
        series: labels
            .iter()
            .enumerate()
            .map(|(i, l)| TimeSeries {
                labels: l.clone(),
                samples: vec![FloatSample { timestamp_ms: t, value: (t / 1000) as f64 * i as f64 }],
                ..TimeSeries::default()
            })
            .collect(),
        metadata: vec![],
    })
}

fn bench(c: &mut Criterion) {
    let labels = labels();
    let store = MemStore::new();
    let mut t = 0i64;
    for _ in 0..10 {
        t += 15_000;
        store.apply(scrape(&labels, t));
    }
    c.bench_function("append 10k-series scrape", |b| {
        b.iter_batched(
            || {
                t += 15_000;
                scrape(&labels, t)
            },
            |batch| store.apply(batch),
            criterion::BatchSize::LargeInput,
        )
    });
    let matchers = [Matcher::eq("job", "job-3"), Matcher::new("status", MatchOp::Regex, "5..").expect("regex")];
    c.bench_function("select job=job-3 status=~5.. (333 series)", |b| {
        b.iter(|| black_box(store.metric_store().select_matching(&matchers, 0, i64::MAX)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Unit tests of the metrics engine: the head, matchers, persist and reopen, compaction, retention.

use super::*;
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

// ---------------------------------------------------------------------------------------------
// Fixtures

/// xorshift64*: deterministic pseudo-random data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn batch(series: Vec<TimeSeries>) -> MetricsBatch {
    MetricsBatch { series, metadata: vec![] }
}

fn floats(l: &Labels, samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries { labels: l.clone(), samples: samples.iter().map(|&(t, v)| fs(t, v)).collect(), ..TimeSeries::default() }
}

fn pos(n: u64) -> WalPos {
    WalPos { segment: 1, offset: n }
}

fn opts() -> MetricsOptions {
    // Exemplar bounds apply per head and per block, so the equivalence tests keep them all.
    MetricsOptions {
        block_range: Duration::from_secs(3600),
        exemplars_per_series: 100_000,
        ..MetricsOptions::default()
    }
}

fn disk(dir: &Path, o: &MetricsOptions) -> MetricsHead {
    MetricsHead::open(Some(dir), o).unwrap()
}

fn m(name: &str, op: MatchOp, value: &str) -> Matcher {
    Matcher::new(name, op, value).unwrap()
}

/// Everything the reader answers, one line per item, floats as bit patterns so NaN payloads count.
fn snapshot(r: &dyn MetricsReader) -> Vec<String> {
    let mut out = Vec::new();
    let dump = |out: &mut Vec<String>, what: &str, series: Vec<TimeSeries>| {
        for ts in series {
            out.push(format!("{what} {}", ts.labels));
            out.extend(ts.samples.iter().map(|s| format!("  f {} {:x}", s.timestamp_ms, s.value.to_bits())));
            out.extend(ts.histograms.iter().map(|h| format!("  h {} {:?}", h.timestamp_ms, h.histogram)));
            out.extend(
                ts.exemplars.iter().map(|e| format!("  e {} {} {:x}", e.timestamp_ms, e.labels, e.value.to_bits())),
            );
        }
    };
    dump(&mut out, "all", r.select_matching(&[], i64::MIN, i64::MAX));
    for t in [0i64, 1_000, 59_999, 60_000, 3_600_000] {
        dump(&mut out, &format!("at {t}"), r.select_matching(&[m("__name__", MatchOp::Regex, ".+")], t, t + 30_000));
    }
    out.extend(r.series().iter().map(|l| format!("series {l}")));
    out.extend(r.metadata().iter().map(|m| format!("meta {m:?}")));
    out.push(format!("names {:?}", r.label_names(&[], i64::MIN, i64::MAX)));
    out.push(format!("jobs {:?}", r.label_values("job", &[], i64::MIN, i64::MAX)));
    for k in 1..=5u8 {
        let found = r.exemplars_by_trace(&format!("{k:032x}"));
        out.extend(found.iter().map(|(l, e)| format!("trace {k} {l} {} {:x}", e.timestamp_ms, e.value.to_bits())));
    }
    out
}

#[track_caller]
/// `select_series` read series by series equals `select_matching` without exemplars.
fn assert_lazy_matches(r: &dyn MetricsReader, what: &str) {
    let ranges = [(i64::MIN, i64::MAX), (0, 30_000), (59_999, 90_000), (1_000, 1_000), (3_600_000, 3_700_000)];
    let matcher_sets = [vec![], vec![m("__name__", MatchOp::Regex, ".+")], vec![m("job", MatchOp::NotEqual, "a")]];
    for (start, end) in ranges {
        for ms in &matcher_sets {
            let mut want = Vec::new();
            for ts in r.select_matching(ms, start, end) {
                if !(ts.samples.is_empty() && ts.histograms.is_empty()) {
                    want.push(format!("{} {:?} {:?}", ts.labels, bits(&ts.samples), ts.histograms));
                }
            }
            let set = r.select_series(ms, start, end);
            let mut got = Vec::new();
            for i in 0..set.len() {
                let d = set.read(i);
                if !(d.floats.is_empty() && d.histograms.is_empty()) {
                    got.push(format!("{} {:?} {:?}", set.labels(i), bits(&d.floats), d.histograms));
                }
            }
            assert_same(&got, &want, &format!("{what}: lazy {ms:?} {start}..={end}"));
        }
    }
}

fn bits(s: &[FloatSample]) -> Vec<(i64, u64)> {
    s.iter().map(|s| (s.timestamp_ms, s.value.to_bits())).collect()
}

fn assert_same(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        let ctx = |v: &[String]| v[i.saturating_sub(3)..(i + 3).min(v.len())].join("\n");
        panic!("{what}: line {i} differs\n--- got:\n{}\n--- want:\n{}", ctx(got), ctx(want));
    }
}

fn histogram(n: f64) -> crate::model::NativeHistogram {
    crate::model::NativeHistogram {
        schema: 3,
        zero_threshold: 1e-128,
        zero_count: n,
        count: n * 3.0,
        sum: -n,
        positive_spans: vec![crate::model::BucketSpan { offset: 0, length: 2 }],
        positive_counts: vec![n, n],
        negative_spans: vec![],
        negative_counts: vec![],
        is_gauge: false,
    }
}

fn exemplar(t: i64, trace: u8, v: f64) -> Exemplar {
    Exemplar {
        labels: Labels::from_pairs([
            ("trace_id", format!("{:032x}", trace)),
            ("span_id", "00f067aa0ba902b7".to_string()),
        ]),
        value: v,
        timestamp_ms: t,
    }
}

/// A varied workload: regular scrapes, out-of-order writes, rewrites, stale markers, histograms,
/// exemplars and metadata, spread over `n` batches at WAL positions `first..`.
fn workload(seed: u64, n: u64, first: u64) -> Vec<(WalPos, MetricsBatch)> {
    let mut rng = Rng(seed);
    let jobs = ["api", "db", "web"];
    let mut out = Vec::new();
    for i in 0..n {
        let mut series = Vec::new();
        for s in 0..6u64 {
            let l = labels(&[
                ("__name__", if s % 2 == 0 { "http_requests_total" } else { "cpu_seconds" }),
                ("job", jobs[(s % 3) as usize]),
                ("instance", &format!("i-{s}")),
            ]);
            let mut ts = floats(&l, &[]);
            for k in 0..(1 + rng.below(4)) {
                let t = match rng.below(10) {
                    0 => rng.below(7_200_000) as i64,                 // anywhere: out of order
                    1 => ((i * 15_000) as i64 / 2) / 15_000 * 15_000, // rewrite an earlier step
                    _ => (i * 15_000 + k * 1_000) as i64,
                };
                let v = match rng.below(8) {
                    0 => f64::from_bits(STALE_NAN_BITS),
                    1 => f64::NAN,
                    2 => f64::INFINITY,
                    _ => rng.below(1000) as f64 / 8.0,
                };
                ts.samples.push(fs(t, v));
            }
            if s == 5 {
                ts.histograms.push(crate::model::HistogramSample {
                    timestamp_ms: (i * 15_000) as i64,
                    histogram: histogram(i as f64),
                });
            }
            if rng.below(3) == 0 {
                ts.exemplars.push(exemplar((i * 15_000) as i64, (rng.below(5) + 1) as u8, i as f64));
            }
            series.push(ts);
        }
        let metadata = vec![crate::model::MetricMetadata {
            metric_family: "http_requests_total".into(),
            metric_type: crate::model::MetricType::Counter,
            help: format!("requests v{i}"),
            unit: String::new(),
        }];
        out.push((pos(first + i), MetricsBatch { series, metadata }));
    }
    out
}

fn apply_all(e: &MetricsHead, batches: &[(WalPos, MetricsBatch)]) {
    for (p, b) in batches {
        e.apply(*p, b.clone());
    }
}

fn block_count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir()).count()
}

// ---------------------------------------------------------------------------------------------
// Head

#[test]
fn out_of_order_and_rewrites_match_a_model() {
    let head = mem();
    let l = labels(&[("__name__", "x")]);
    let mut model: BTreeMap<i64, u64> = BTreeMap::new();
    let mut rng = Rng(42);
    for round in 0..40 {
        let mut samples = Vec::new();
        for _ in 0..50 {
            let t = if rng.below(3) == 0 { rng.below(5_000) as i64 } else { round * 200 + rng.below(200) as i64 };
            let v = f64::from_bits(rng.next() >> rng.below(64));
            samples.push(fs(t, v));
            model.insert(t, v.to_bits());
        }
        head.apply(WalPos::ZERO, batch(vec![TimeSeries { labels: l.clone(), samples, ..TimeSeries::default() }]));
    }
    let got = head.select_matching(&[], i64::MIN, i64::MAX);
    let got: Vec<(i64, u64)> = got[0].samples.iter().map(|s| (s.timestamp_ms, s.value.to_bits())).collect();
    let want: Vec<(i64, u64)> = model.into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(head.items(), want.len() as u64);
    assert_lazy_matches(&head, "out of order");
    let part = head.select_matching(&[], 1_000, 1_999);
    assert!(part[0].samples.iter().all(|s| (1_000..=1_999).contains(&s.timestamp_ms)));
    assert_eq!(part[0].samples.len(), want.iter().filter(|(t, _)| (1_000..=1_999).contains(t)).count());
}

#[test]
fn label_sets_sharing_a_hash_stay_apart() {
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &opts());
    e.head.write().force_hash = Some(7);
    let ls: Vec<Labels> = (0..4).map(|i| labels(&[("__name__", "c"), ("i", &i.to_string())])).collect();
    for (i, l) in ls.iter().enumerate() {
        e.apply(pos(i as u64 + 1), batch(vec![floats(l, &[(i as i64, i as f64)])]));
        e.apply(pos(i as u64 + 10), batch(vec![floats(l, &[(100 + i as i64, 1.0)])]));
    }
    assert_eq!(e.stats(1).head_series, 4);
    let got = e.select_matching(&[m("i", MatchOp::Equal, "2")], 0, 1000);
    assert_eq!(got[0].samples, vec![fs(2, 2.0), fs(102, 1.0)]);
    // Collect some of them, then register them again.
    e.persist().unwrap();
    e.apply(pos(30), batch(vec![floats(&ls[3], &[(10_000_000, 1.0)])]));
    e.maintain(0).unwrap();
    assert_eq!(e.stats(1).head_series, 1);
    for (i, l) in ls.iter().enumerate() {
        e.apply(pos(40 + i as u64), batch(vec![floats(l, &[(10_000_001, i as f64)])]));
    }
    assert_eq!(e.stats(1).head_series, 4);
    for (i, l) in ls.iter().enumerate() {
        let got = e.select_matching(&[m("i", MatchOp::Equal, &i.to_string())], 0, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].labels, l);
        assert_eq!(got[0].samples.last(), Some(&fs(10_000_001, i as f64)));
    }
}

#[test]
fn matcher_semantics_follow_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &opts());
    let mk = |pairs: &[(&str, &str)]| floats(&labels(pairs), &[(1, 1.0)]);
    e.apply(
        pos(1),
        batch(vec![
            mk(&[("__name__", "m"), ("a", "1")]),
            mk(&[("__name__", "m"), ("a", "2"), ("b", "x")]),
            mk(&[("__name__", "m"), ("b", "y")]),
            mk(&[("__name__", "n"), ("a", "10")]),
        ]),
    );
    let check = |e: &MetricsHead| {
        let q = |ms: &[Matcher]| -> Vec<String> {
            let got: Vec<String> = e.select_matching(ms, 0, 10).into_iter().map(|s| s.labels.to_string()).collect();
            let series: Vec<String> = e.series_matching(ms, 0, 10).iter().map(|l| l.to_string()).collect();
            assert_eq!(got, series, "{ms:?}");
            got
        };
        assert_eq!(q(&[m("__name__", MatchOp::Equal, "m")]).len(), 3);
        assert_eq!(q(&[m("a", MatchOp::Regex, "1|2")]).len(), 2);
        assert_eq!(q(&[m("a", MatchOp::Regex, "1")]), vec![r#"{__name__="m", a="1"}"#]); // anchored
        assert_eq!(q(&[m("a", MatchOp::Regex, ".*")]).len(), 4);
        assert_eq!(q(&[m("a", MatchOp::Regex, ".+")]).len(), 3);
        assert_eq!(
            q(&[m("__name__", MatchOp::Equal, "m"), m("a", MatchOp::Equal, "")]),
            vec![r#"{__name__="m", b="y"}"#]
        );
        // `!=` keeps series without the label.
        assert_eq!(q(&[m("__name__", MatchOp::Equal, "m"), m("a", MatchOp::NotEqual, "1")]).len(), 2);
        assert_eq!(q(&[m("a", MatchOp::NotRegex, "1.*")]).len(), 2);
        assert_eq!(q(&[m("b", MatchOp::NotEqual, "")]).len(), 2);
        assert_eq!(q(&[m("b", MatchOp::Regex, "")]).len(), 2);
        assert!(q(&[m("a", MatchOp::Equal, "9")]).is_empty());
        assert!(q(&[m("zzz", MatchOp::Equal, "1")]).is_empty());
        assert_eq!(q(&[m("zzz", MatchOp::Equal, "")]).len(), 4);
        assert_eq!(q(&[]).len(), 4);
        assert!(q(&[m("__name__", MatchOp::Equal, "m")]).iter().all(|s| s.contains("\"m\"")));
        assert_eq!(e.label_names(&[m("__name__", MatchOp::Equal, "n")], 0, 10), vec!["__name__", "a"]);
        assert_eq!(e.label_names(&[], 0, 10), vec!["__name__", "a", "b"]);
        assert_eq!(e.label_values("a", &[], 0, 10), vec!["1", "10", "2"]);
        assert_eq!(e.label_values("a", &[m("__name__", MatchOp::Equal, "m")], 0, 10), vec!["1", "2"]);
        assert!(e.label_values("a", &[], 5, 10).is_empty());
        assert!(e.label_names(&[], 5, 10).is_empty());
    };
    check(&e);
    assert!(e.persist().unwrap());
    check(&e);
    drop(e);
    check(&disk(dir.path(), &opts()));
}

#[test]
fn exemplars_are_bounded_and_found_by_trace() {
    let o = MetricsOptions { exemplars_per_series: 3, ..opts() };
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &o);
    let l = labels(&[("__name__", "h")]);
    for i in 0..5 {
        let mut ts = floats(&l, &[(i * 10, 1.0)]);
        ts.exemplars.push(exemplar(i * 10, (i + 1) as u8, i as f64));
        e.apply(pos(i as u64 + 1), batch(vec![ts]));
    }
    let all = e.select_matching(&[], i64::MIN, i64::MAX);
    let ts: Vec<i64> = all[0].exemplars.iter().map(|e| e.timestamp_ms).collect();
    assert_eq!(ts, vec![20, 30, 40]);
    assert!(e.exemplars_by_trace(&format!("{:032x}", 1)).is_empty(), "evicted");
    let found = e.exemplars_by_trace(&format!("{:032x}", 4));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, l);
    assert_eq!(found[0].1.timestamp_ms, 30);
    assert!(e.persist().unwrap());
    assert_eq!(e.exemplars_by_trace(&format!("{:032X}", 4)).len(), 1);
    drop(e);
    let e = disk(dir.path(), &o);
    assert_eq!(e.exemplars_by_trace(&format!("{:032x}", 5))[0].1.timestamp_ms, 40);
    assert!(e.exemplars_by_trace("not-hex").is_empty());
}

#[test]
fn stats_count_the_head() {
    let e = mem();
    let mut series = Vec::new();
    for i in 0..5 {
        series.push(floats(&labels(&[("__name__", "a"), ("i", &i.to_string())]), &[(i, 1.0), (i + 100, 2.0)]));
    }
    series.push(floats(&labels(&[("__name__", "b"), ("i", "0")]), &[(7, 1.0)]));
    e.apply(WalPos::ZERO, batch(series));
    let s = e.stats(2);
    assert_eq!(s.head_series, 6);
    assert_eq!(s.head_samples, 11);
    assert_eq!((s.head_min_time_ms, s.head_max_time_ms), (Some(0), Some(104)));
    assert_eq!(s.series_count_by_metric_name, vec![("a".to_string(), 5), ("b".to_string(), 1)]);
    assert_eq!(s.label_value_count_by_label_name, vec![("i".to_string(), 5), ("__name__".to_string(), 2)]);
    assert_eq!(s.series_count_by_label_value_pair, vec![("__name__=a".to_string(), 5), ("i=0".to_string(), 2)]);
}

#[test]
fn admit_applies_the_out_of_order_window() {
    let o = MetricsOptions { ooo_window: Duration::from_secs(60), ..opts() };
    let e = MetricsHead::open(None, &o).unwrap();
    let l = labels(&[("__name__", "x")]);
    let mut b = batch(vec![floats(&l, &[(1_000_000, 1.0), (5, 2.0)])]);
    assert_eq!(e.admit(&mut b), 0, "an empty store accepts anything");
    e.apply(WalPos::ZERO, b);
    let mut b = batch(vec![
        floats(&l, &[(1_000_000 - 60_000, 1.0), (1_000_000 - 60_001, 2.0), (2_000_000, 3.0)]),
        floats(&labels(&[("__name__", "y")]), &[(10, 1.0)]),
    ]);
    assert_eq!(e.admit(&mut b), 2);
    assert_eq!(b.series.len(), 1);
    assert_eq!(b.series[0].samples, vec![fs(1_000_000 - 60_000, 1.0), fs(2_000_000, 3.0)]);

    // Without a window a series only takes samples at or after its newest one.
    let o = MetricsOptions { ooo_window: Duration::ZERO, ..opts() };
    let e = MetricsHead::open(None, &o).unwrap();
    e.apply(WalPos::ZERO, batch(vec![floats(&l, &[(100, 1.0)])]));
    let mut b = batch(vec![floats(&l, &[(99, 1.0), (100, 2.0), (150, 3.0), (120, 4.0)])]);
    assert_eq!(e.admit(&mut b), 2);
    assert_eq!(b.series[0].samples, vec![fs(100, 2.0), fs(150, 3.0)]);
}

#[test]
fn memory_only_never_persists_nor_skips() {
    let e = mem();
    assert!(!e.persist().unwrap());
    e.apply(WalPos::ZERO, batch(vec![floats(&labels(&[("a", "b")]), &[(1, 1.0)])]));
    e.apply(WalPos::ZERO, batch(vec![floats(&labels(&[("a", "b")]), &[(2, 1.0)])]));
    assert_eq!(e.items(), 2);
    e.maintain(i64::MAX).unwrap();
    assert_eq!(e.items(), 2);
}

// ---------------------------------------------------------------------------------------------
// Persist, reopen, replay

/// A query over blocks leaves none of their pages mapped (they stay in the page cache): the first
/// use's checksum pass over the index and the chunks a query reads would otherwise stay in the
/// process' RSS for as long as the block lives.
#[test]
fn queries_leave_no_block_page_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &opts());
    apply_all(&e, &workload(3, 200, 1));
    assert!(e.persist().unwrap());
    drop(e);
    let e = disk(dir.path(), &opts());
    assert!(block_count(dir.path()) >= 1);
    let mapped = || crate::mmap::mapped_rss_kib(&[dir.path().to_str().unwrap()]);
    let first = snapshot(&e);
    assert!(!first.is_empty());
    assert_lazy_matches(&e, "reopened");
    assert_eq!(mapped(), 0, "block pages left mapped");
    assert_same(&snapshot(&e), &first, "read again");
    assert_eq!(mapped(), 0);
}

#[test]
fn persist_and_reopen_keep_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let batches = workload(1, 300, 1);
    let reference = MetricsHead::open(None, &opts()).unwrap();
    apply_all(&reference, &batches);
    let want = snapshot(&reference);

    let e = disk(dir.path(), &opts());
    let (a, b) = batches.split_at(120);
    apply_all(&e, a);
    assert!(e.persist().unwrap());
    assert!(block_count(dir.path()) >= 1);
    apply_all(&e, b);
    assert_same(&snapshot(&e), &want, "head + blocks");
    assert_lazy_matches(&e, "head + blocks");
    assert!(e.persist().unwrap());
    assert!(e.persist().unwrap(), "nothing new: still durable");
    assert_same(&snapshot(&e), &want, "blocks only");
    assert_lazy_matches(&e, "blocks only");
    assert_eq!(e.head.read().items, 0);
    drop(e);

    let e = disk(dir.path(), &opts());
    assert_eq!(e.skip_upto, pos(300));
    assert_same(&snapshot(&e), &want, "reopened");
    // Replay of the same WAL: every batch is at or before the persisted position.
    apply_all(&e, &batches);
    assert_same(&snapshot(&e), &want, "replay skipped");
    assert_eq!(e.head.read().items, 0);
    // New data after the persisted position is applied.
    let more = workload(2, 10, 301);
    apply_all(&e, &more);
    apply_all(&reference, &more);
    assert_same(&snapshot(&e), &snapshot(&reference), "more");
    assert_lazy_matches(&e, "more");
    assert_lazy_matches(&reference, "memory only");
}

#[test]
fn replay_after_a_partial_persist_applies_only_newer_batches() {
    let dir = tempfile::tempdir().unwrap();
    let batches = workload(3, 40, 1);
    let e = disk(dir.path(), &opts());
    apply_all(&e, &batches[..25]);
    assert!(e.persist().unwrap());
    apply_all(&e, &batches[25..]);
    let want = snapshot(&e);
    let items = e.items();
    drop(e); // crash: batches 26.. only in the WAL
    let e = disk(dir.path(), &opts());
    apply_all(&e, &batches);
    assert_same(&snapshot(&e), &want, "");
    assert_eq!(e.items(), items, "no double counts");
    // A crash after the block but before `persisted.json`: the WAL still restores the metadata.
    fs::remove_file(dir.path().join("persisted.json")).unwrap();
    drop(e);
    let e = disk(dir.path(), &opts());
    assert!(e.metadata().is_empty());
    apply_all(&e, &batches);
    assert_same(&snapshot(&e), &want, "without persisted.json");
}

#[test]
fn stale_markers_histograms_and_metadata_survive_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &opts());
    let l = labels(&[("__name__", "x")]);
    let mut ts = floats(&l, &[(1, f64::from_bits(STALE_NAN_BITS)), (2, f64::NAN), (3, -0.0), (4, f64::NEG_INFINITY)]);
    ts.histograms.push(crate::model::HistogramSample { timestamp_ms: 2, histogram: histogram(2.5) });
    e.apply(pos(1), MetricsBatch { series: vec![ts.clone()], metadata: workload(1, 1, 1)[0].1.metadata.clone() });
    e.persist().unwrap();
    drop(e);
    let e = disk(dir.path(), &opts());
    let got = e.select_matching(&[], i64::MIN, i64::MAX);
    assert_eq!(postcard::to_stdvec(&got).unwrap(), postcard::to_stdvec(&vec![ts]).unwrap());
    assert_eq!(e.metadata()[0].help, "requests v0");
}

// ---------------------------------------------------------------------------------------------
// Compaction and retention

#[test]
fn compaction_keeps_answers_and_shrinks_the_block_count() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts();
    let batches = workload(4, 400, 1);
    let e = disk(dir.path(), &o);
    for chunk in batches.chunks(10) {
        apply_all(&e, chunk);
        e.persist().unwrap();
    }
    let before = block_count(dir.path());
    let want = snapshot(&e);
    assert_lazy_matches(&e, "many blocks");
    // The clock is irrelevant to compaction (windows close by data time); retention keeps all.
    e.maintain(7_200_000).unwrap();
    let after = block_count(dir.path());
    assert!(after < before / 2, "{before} -> {after}");
    assert_same(&snapshot(&e), &want, "");
    let levels: Vec<u32> = e.blocks.read().iter().map(|b| b.meta.level).collect();
    assert!(levels.iter().any(|&l| l > 0), "{levels:?}");
    assert_lazy_matches(&e, "compacted");
    drop(e);
    let e = disk(dir.path(), &o);
    assert_same(&snapshot(&e), &want, "");
    // More data pushes time past the first windows: they close and merge to one block each.
    let late = workload(5, 5, 1000)
        .into_iter()
        .map(|(p, mut b)| {
            for ts in &mut b.series {
                for s in &mut ts.samples {
                    s.timestamp_ms += 5 * 3_600_000;
                }
                ts.histograms.clear();
                ts.exemplars.clear();
            }
            (p, b)
        })
        .collect::<Vec<_>>();
    apply_all(&e, &late);
    e.persist().unwrap();
    let want = snapshot(&e);
    e.maintain(7_200_000).unwrap();
    assert_same(&snapshot(&e), &want, "");
    let blocks = e.blocks.read().clone();
    for w in 0..2i64 {
        let n = blocks.iter().filter(|b| b.meta.min_time.div_euclid(3_600_000) == w).count();
        assert!(n <= 1, "window {w} holds {n} blocks");
    }
}

#[test]
fn a_crash_between_compaction_and_deletion_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let o = opts();
    let e = disk(dir.path(), &o);
    for chunk in workload(6, 80, 1).chunks(10) {
        apply_all(&e, chunk);
        e.persist().unwrap();
    }
    let want = snapshot(&e);
    let names: Vec<String> = e.blocks.read().iter().map(|b| b.name.clone()).collect();
    for n in &names {
        copy_dir(&dir.path().join(n), &backup.path().join(n));
    }
    e.maintain(0).unwrap();
    drop(e);
    // Put the sources back, as if the process died before deleting them.
    for n in &names {
        if !dir.path().join(n).exists() {
            copy_dir(&backup.path().join(n), &dir.path().join(n));
        }
    }
    fs::create_dir(dir.path().join("zz.tmp")).unwrap();
    let e = disk(dir.path(), &o);
    assert_same(&snapshot(&e), &want, "");
    assert!(!dir.path().join("zz.tmp").exists());
    let sources: BTreeSet<String> = e.blocks.read().iter().flat_map(|b| b.meta.sources.clone()).collect();
    assert!(!sources.is_empty());
    assert!(sources.iter().all(|s| !dir.path().join(s).exists()));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn retention_drops_old_blocks_by_age_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let o = MetricsOptions { retention: Duration::from_secs(3 * 3600), ..opts() };
    let e = disk(dir.path(), &o);
    let l = labels(&[("__name__", "x")]);
    for h in 0..6i64 {
        e.apply(pos(h as u64 + 1), batch(vec![floats(&l, &[(h * 3_600_000, h as f64), (h * 3_600_000 + 1, 0.5)])]));
        e.persist().unwrap();
    }
    assert_eq!(e.items(), 12);
    // now = 6h: blocks whose newest sample is before 3h go.
    e.maintain(6 * 3_600_000).unwrap();
    let got = e.select_matching(&[], i64::MIN, i64::MAX);
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.timestamp_ms / 3_600_000).collect();
    assert_eq!(ts, vec![3, 3, 4, 4, 5, 5]);
    assert_eq!(e.items(), 6);

    let total: u64 = e.blocks.read().iter().map(|b| b.meta.index_bytes + b.meta.chunks_bytes).sum();
    let newest =
        e.blocks.read().iter().max_by_key(|b| b.meta.max_time).map(|b| b.meta.index_bytes + b.meta.chunks_bytes);
    drop(e);
    let o = MetricsOptions { retention_bytes: newest.unwrap(), ..o };
    let e = disk(dir.path(), &o);
    e.maintain(6 * 3_600_000).unwrap();
    let got = e.select_matching(&[], i64::MIN, i64::MAX);
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.timestamp_ms / 3_600_000).collect();
    assert_eq!(ts, vec![5, 5], "total was {total} bytes");
}

#[test]
fn idle_series_are_collected_but_stay_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &opts());
    let a = labels(&[("__name__", "a")]);
    let b = labels(&[("__name__", "b")]);
    let hour = 3_600_000;
    e.apply(pos(1), batch(vec![floats(&a, &[(1, 1.0)]), floats(&b, &[(1, 1.0)])]));
    e.persist().unwrap();
    e.apply(pos(2), batch(vec![floats(&b, &[(hour, 1.0)])]));
    e.maintain(0).unwrap();
    assert_eq!(e.stats(10).head_series, 2, "b's sample is in memory; a is idle for less than a block range");
    e.apply(pos(3), batch(vec![floats(&b, &[(hour + 2, 1.0)])]));
    e.persist().unwrap();
    e.maintain(0).unwrap();
    assert_eq!(e.stats(10).head_series, 1);
    assert_eq!(e.series(), vec![a.clone(), b.clone()]);
    e.apply(pos(9), batch(vec![floats(&a, &[(9, 2.0)])]));
    assert_eq!(e.stats(10).head_series, 2);
    assert_eq!(
        e.select_matching(&[m("__name__", MatchOp::Equal, "a")], 0, 100)[0].samples,
        vec![fs(1, 1.0), fs(9, 2.0)]
    );
}

// ---------------------------------------------------------------------------------------------
// Damage

#[test]
fn damaged_blocks_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let e = disk(dir.path(), &opts());
    apply_all(&e, &workload(7, 30, 1));
    e.persist().unwrap();
    let full = e.items();
    drop(e);
    let block = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let pristine: Vec<(String, Vec<u8>)> =
        ["index", "chunks", "meta.json"].iter().map(|f| (f.to_string(), fs::read(block.join(f)).unwrap())).collect();
    let mut rng = Rng(99);
    for round in 0..60 {
        let (file, bytes) = &pristine[round % 3];
        let mut b = bytes.clone();
        match rng.below(3) {
            0 => {
                let i = rng.below(b.len() as u64) as usize;
                b[i] ^= 1 << rng.below(8);
            }
            1 => b.truncate(rng.below(b.len() as u64) as usize),
            _ => {
                for _ in 0..8 {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] = rng.next() as u8;
                }
            }
        }
        fs::write(block.join(file), &b).unwrap();
        let e = disk(dir.path(), &opts());
        let _ = snapshot(&e);
        let _ = e.exemplars_by_trace(&format!("{:032x}", 1));
        let _ = e.stats(5);
        if b != *bytes {
            // Either the damage is caught, or it hit bytes no answer depends on (padding, JSON
            // whitespace); never a panic.
            let _ = e.storage_problems();
        }
        fs::write(block.join(file), bytes).unwrap();
    }
    // A chunk's checksum catches a flipped bit in sample data.
    let mut chunks = pristine[1].1.clone();
    let n = chunks.len();
    chunks[n / 2] ^= 0x10;
    fs::write(block.join("chunks"), &chunks).unwrap();
    let e = disk(dir.path(), &opts());
    let _ = e.select_matching(&[], i64::MIN, i64::MAX);
    assert!(e.storage_problems().iter().any(|p| p.contains("checksum")), "{:?}", e.storage_problems());
    // A broken meta.json makes the block skipped at open.
    fs::write(block.join("meta.json"), b"{").unwrap();
    let e = disk(dir.path(), &opts());
    assert!(e.items() < full);
    assert_eq!(e.skip_upto, pos(30), "persisted.json still records the position");
    assert!(!e.storage_problems().is_empty());
}

fn rss_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Memory of the head at 100k active series with realistic labels: the registry alone (one
/// sample each, what stays after a persist) and with 10 minutes of 15 s scrapes.
/// Run by hand: `cargo test -p storage --lib head_memory -- --ignored --nocapture`.
#[test]
#[ignore]
#[allow(clippy::print_stdout)]
fn head_memory_at_100k_series() {
    let e = mem();
    let n = 100_000u64;
    let series: Vec<Labels> = (0..n)
        .map(|i| {
            labels(&[
                ("__name__", &format!("metric_{}", i % 200)),
                ("job", &format!("job-{}", i % 20)),
                ("instance", &format!("10.0.{}.{}:9100", i / 250 % 256, i % 250)),
                ("method", ["GET", "POST", "PUT"][(i % 3) as usize]),
                ("status", ["200", "404", "500"][(i / 3 % 3) as usize]),
                ("le", &format!("{}", i % 11)),
            ])
        })
        .collect();
    let step_batch = |step: i64| {
        batch(
            series
                .iter()
                .enumerate()
                .map(|(i, l)| floats(l, &[(1_700_000_000_000 + step * 15_000, (step * (i as i64 % 7)) as f64)]))
                .collect(),
        )
    };
    // The first batch is built before measuring: its label copies are not the head's.
    let first = step_batch(0);
    let before = rss_kib();
    let start = std::time::Instant::now();
    e.apply(WalPos::ZERO, first);
    let after = rss_kib();
    println!("registry: RSS +{} MiB ({} bytes/series)", (after - before) / 1024, (after - before) * 1024 / n);
    let steps = 40i64;
    for step in 1..steps {
        e.apply(WalPos::ZERO, step_batch(step));
    }
    let took = start.elapsed();
    let after = rss_kib();
    let stats = e.stats(1);
    println!(
        "{} series, {} samples: RSS +{} MiB ({} bytes/series), {:?} ({:.0} samples/s, debug build)",
        stats.head_series,
        stats.head_samples,
        (after - before) / 1024,
        (after - before) * 1024 / n,
        took,
        stats.head_samples as f64 / took.as_secs_f64()
    );
    let sel = std::time::Instant::now();
    let got = e.select_matching(&[m("job", MatchOp::Equal, "job-3"), m("status", MatchOp::Regex, "5..")], 0, i64::MAX);
    println!("select of {} series in {:?}", got.len(), sel.elapsed());
}

#[test]
fn readers_never_miss_data_while_persist_and_compaction_run() {
    let dir = tempfile::tempdir().unwrap();
    let o = MetricsOptions { block_range: Duration::from_secs(60), ..opts() };
    let e = Arc::new(disk(dir.path(), &o));
    let l = labels(&[("__name__", "c")]);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (e, l, done) = (Arc::clone(&e), l.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            for i in 0..2000u64 {
                e.apply(pos(i + 1), batch(vec![floats(&l, &[(i as i64 * 100, i as f64)])]));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let persister = {
        let (e, done) = (Arc::clone(&e), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                e.persist().unwrap();
                e.maintain(0).unwrap();
            }
        })
    };
    let mut seen = 0;
    while !done.load(Ordering::SeqCst) {
        let got = e.select_matching(&[], i64::MIN, i64::MAX);
        let n = got.first().map_or(0, |s| s.samples.len());
        assert!(n >= seen, "saw {seen} samples, then {n}");
        if let Some(s) = got.first() {
            assert!(s.samples.iter().enumerate().all(|(i, x)| x.timestamp_ms == i as i64 * 100), "a gap");
        }
        seen = n;
    }
    writer.join().unwrap();
    persister.join().unwrap();
    e.persist().unwrap();
    assert_eq!(e.select_matching(&[], i64::MIN, i64::MAX)[0].samples.len(), 2000);
    assert!(e.storage_problems().is_empty(), "{:?}", e.storage_problems());
}

/// Packed batches: admission and application agree with the model path, series by series.
#[test]
fn packed_batches_admit_and_apply_like_model_batches() {
    use crate::model::PackedSamples;
    let e = mem();
    let model = mem();
    let base = 1_700_000_000_000i64;
    for step in 0..50i64 {
        let mut p = PackedSamples::new();
        let mut b = MetricsBatch::default();
        for k in 0..100 {
            let key = format!("s{k:03}");
            let t = base + step * 15_000 + k;
            p.push(&[("__name__", "m"), ("k", key.as_str())], &[fs(t, (step * k) as f64)]);
            b.series.push(floats(&labels(&[("__name__", "m"), ("k", key.as_str())]), &[(t, (step * k) as f64)]));
        }
        assert_eq!(e.admit_packed(&mut p), 0, "step {step}");
        assert_eq!(model.admit(&mut b), 0);
        e.apply_packed(WalPos::ZERO, p);
        model.apply(WalPos::ZERO, b);
    }
    assert_eq!(snapshot(&e), snapshot(&model));
    // An old sample is refused by both.
    let mut p = PackedSamples::new();
    p.push(&[("__name__", "m"), ("k", "s000")], &[fs(base, 1.0), fs(base + 49 * 15_000 + 1, 2.0)]);
    assert_eq!(e.admit_packed(&mut p), 1);
    assert_eq!(p.sample_count(), 1);
}

//! Every signal, every field: write, read, close, replay, read again.

use std::sync::Arc;

use serde::Serialize;
use storage::Reader;
use storage::model::*;

use crate::common::*;

type Log = (Arc<Resource>, Arc<Scope>, Arc<Labels>, LogRecord);
type Trace = (TraceId, Vec<(Arc<Resource>, Arc<Scope>, Span)>);

/// Everything the read traits return, in a form `assert_same` can compare.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    series: Vec<Labels>,
    selected: Vec<TimeSeries>,
    metadata: Vec<MetricMetadata>,
    logs: Vec<Log>,
    trace_1_logs: Vec<Log>,
    traces: Vec<Trace>,
    span_count: u64,
    profiles: Vec<Profile>,
    counts: [u64; 4],
}

pub(crate) fn snapshot(r: &dyn Reader) -> Snapshot {
    let log = |l: storage::StoredLog| (l.resource, l.scope, l.stream, l.record);
    let c = r.item_counts();
    Snapshot {
        series: r.metric_store().series(),
        selected: r.metric_store().select(&[], i64::MIN, i64::MAX),
        metadata: r.metric_store().metadata(),
        logs: r.log_store().logs(&[], i64::MIN, i64::MAX).into_iter().map(log).collect(),
        trace_1_logs: r.log_store().logs_by_trace(trace_id(1)).into_iter().map(log).collect(),
        traces: r
            .trace_store()
            .trace_ids()
            .into_iter()
            .map(|id| (id, r.trace_store().trace(id).into_iter().map(|s| (s.resource, s.scope, s.span)).collect()))
            .collect(),
        span_count: r.trace_store().span_count(),
        profiles: r.profile_store().profiles(i64::MIN, i64::MAX),
        counts: [c.metrics, c.logs, c.traces, c.profiles],
    }
}

/// What the fixtures must read back as, derived from them by the documented rules.
pub(crate) fn expected() -> Snapshot {
    let metrics = metrics_batch();
    let mut selected = metrics.series.clone();
    selected.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut metadata = metrics.metadata.clone();
    metadata.sort_by(|a, b| a.metric_family.cmp(&b.metric_family));

    let mut logs = Vec::new();
    for g in logs_batch().groups {
        let (res, scope, stream) = (Arc::new(g.resource), Arc::new(g.scope), Arc::new(g.stream));
        for r in g.records {
            logs.push((res.clone(), scope.clone(), stream.clone(), r));
        }
    }
    // Stable: equal timestamps keep arrival order.
    logs.sort_by_key(|l| l.3.timestamp_ns);
    let trace_1_logs = logs.iter().filter(|l| l.3.trace_id == Some(trace_id(1))).cloned().collect();

    let mut spans = Vec::new();
    for batch in spans_batches() {
        for g in batch.groups {
            let (res, scope) = (Arc::new(g.resource), Arc::new(g.scope));
            spans.extend(g.spans.into_iter().map(|s| (res.clone(), scope.clone(), s)));
        }
    }
    let traces = [trace_id(1), trace_id(2)]
        .into_iter()
        .map(|id| (id, spans.iter().filter(|s| s.2.trace_id == id).cloned().collect()))
        .collect();

    let mut profiles = profiles_batch().profiles;
    profiles.sort_by_key(|p| p.time_ns);

    Snapshot {
        series: selected.iter().map(|s| s.labels.clone()).collect(),
        selected,
        metadata,
        logs,
        trace_1_logs,
        traces,
        span_count: 3,
        profiles,
        counts: [7, 4, 3, 4],
    }
}

#[test]
fn every_signal_survives_close_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, report) = open(tmp.path());
    assert_eq!((report.records, report.items, report.segments), (0, 0, 0));
    for batch in all_batches() {
        s.write(batch).unwrap();
    }
    let want = expected();
    assert_same(&snapshot(&s), &want);
    s.close().unwrap();
    drop(s);

    let (s, report) = open(tmp.path());
    assert_eq!(report.records, 5);
    assert_eq!(report.items, 7 + 4 + 3 + 4);
    assert_eq!(report.segments, 1);
    assert_eq!(report.torn_tail_bytes, 0);
    assert!(report.corrupt.is_empty());
    assert!(report.bytes > 0);
    assert_same(&snapshot(s.reader()), &want);

    let stale = &s.metric_store().select(&[("__name__".into(), "http_requests_total".into())], 3_000, 3_000)[0];
    assert!(is_stale_nan(stale.samples[0].value), "the stale marker's bits must survive");
}

#[test]
fn storage_is_a_shareable_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    let s = Arc::new(s);
    s.write(sample("a", 1, 1.0)).unwrap();
    let reader: Arc<dyn Reader> = s.clone();
    let seen = std::thread::spawn(move || samples_of(reader.as_ref(), "a")).join().unwrap();
    assert_eq!(seen, vec![(1, 1.0)]);
}

#[test]
fn repeated_resources_and_scopes_are_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    s.write(WriteBatch::Logs(logs_batch())).unwrap();
    s.write(WriteBatch::Logs(logs_batch())).unwrap();
    let logs = s.log_store().logs(&[("service_name".into(), "checkout".into())], i64::MIN, i64::MAX);
    assert_eq!(logs.len(), 6);
    for l in &logs[1..] {
        assert!(Arc::ptr_eq(&l.resource, &logs[0].resource));
        assert!(Arc::ptr_eq(&l.scope, &logs[0].scope));
        assert!(Arc::ptr_eq(&l.stream, &logs[0].stream));
    }
}

#[test]
fn the_last_write_of_a_timestamp_wins_before_and_after_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    s.write(sample("d", 10, 1.0)).unwrap();
    s.write(sample("d", 20, 2.0)).unwrap();
    s.write(sample("d", 10, 3.0)).unwrap();
    assert_eq!(samples_of(&s, "d"), vec![(10, 3.0), (20, 2.0)]);
    assert_eq!(s.item_counts().metrics, 2);
    drop(s);
    let (s, _) = open(tmp.path());
    assert_eq!(samples_of(&s, "d"), vec![(10, 3.0), (20, 2.0)]);
    assert_eq!(s.item_counts().metrics, 2);
}

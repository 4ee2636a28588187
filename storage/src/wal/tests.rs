//! WAL tests that need its internals: injected write and cut failures, a panicking apply.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::thread;
use std::time::Duration;

use super::*;
use crate::events::NoEvents;
use crate::model::{FloatSample, Labels, MetricsBatch, TimeSeries};

/// Collects applied batches, optionally panicking on a marked one.
#[derive(Default)]
struct Collect {
    batches: Mutex<Vec<WriteBatch>>,
    positions: Mutex<Vec<WalPos>>,
}

impl Apply for Collect {
    fn apply(&self, pos: WalPos, batch: WriteBatch) {
        if value_of(&batch) < 0.0 {
            panic!("apply refused a negative sample");
        }
        self.batches.lock().push(batch);
        self.positions.lock().push(pos);
    }
}

fn batch(v: f64) -> WriteBatch {
    WriteBatch::Metrics(MetricsBatch {
        series: vec![TimeSeries {
            labels: Labels::from_pairs([("__name__", "m")]),
            samples: vec![FloatSample { timestamp_ms: 1, value: v }],
            ..TimeSeries::default()
        }],
        metadata: vec![],
    })
}

fn value_of(b: &WriteBatch) -> f64 {
    match b {
        WriteBatch::Metrics(m) => m.series[0].samples[0].value,
        _ => f64::NAN,
    }
}

fn values(c: &Collect) -> Vec<f64> {
    c.batches.lock().iter().map(value_of).collect()
}

fn open(dir: &Path, fsync: FsyncPolicy) -> (Wal, ReplayReport, Collect) {
    let collect = Collect::default();
    let opts = WalOptions { fsync, ..WalOptions::default() };
    let (wal, report) = Wal::open(dir, opts, Arc::new(NoEvents), &collect).unwrap();
    (wal, report, collect)
}

#[test]
fn failed_write_is_cut_back_and_the_wal_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::Batch);
    wal.append(batch(1.0), &applied).unwrap();
    let (path, good_len) = wal.active_segment().unwrap();

    wal.faults.lock().short_write = Some(5);
    let err = wal.append(batch(2.0), &applied).unwrap_err();
    match &err {
        WriteError::Io { source, .. } => assert_eq!(source.kind(), io::ErrorKind::StorageFull),
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len, "partial record must be cut off");

    wal.append(batch(3.0), &applied).unwrap();
    assert_eq!(values(&applied), vec![1.0, 3.0], "a failed write is never applied");
    wal.close().unwrap();
    drop(wal);

    let (_wal, report, replayed) = open(tmp.path(), FsyncPolicy::Batch);
    assert_eq!(values(&replayed), vec![1.0, 3.0]);
    assert_eq!(report.torn_tail_bytes, 0);
    assert!(report.corrupt.is_empty());
}

#[test]
fn a_failed_group_fails_every_writer_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::Batch);
    // Hold the segment so the first leader stalls after taking its one-record group; the next
    // three writers then queue up behind it as one group, which the injected fault hits.
    let held = wal.writer.lock();
    {
        let mut faults = wal.faults.lock();
        faults.skip_writes = 1;
        faults.short_write = Some(3);
    }
    let results = thread::scope(|s| {
        let first = s.spawn(|| wal.append(batch(1.0), &applied));
        while !wal.queue.lock().leading {
            thread::sleep(Duration::from_millis(1));
        }
        let rest: Vec<_> = (2..5)
            .map(|v| {
                let (wal, applied) = (&wal, &applied);
                s.spawn(move || wal.append(batch(v as f64), applied))
            })
            .collect();
        while wal.queue.lock().batches.len() < 3 {
            thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        let first = first.join().unwrap();
        let rest: Vec<_> = rest.into_iter().map(|h| h.join().unwrap()).collect();
        (first, rest)
    });
    assert!(results.0.is_ok());
    for r in &results.1 {
        assert!(matches!(r, Err(WriteError::Io { .. })), "{r:?}");
    }
    assert_eq!(values(&applied), vec![1.0]);
    drop(wal);
    let (_wal, _, replayed) = open(tmp.path(), FsyncPolicy::Batch);
    assert_eq!(values(&replayed), vec![1.0]);
}

#[test]
fn a_failed_cut_poisons_the_wal() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::Interval);
    wal.append(batch(1.0), &applied).unwrap();
    {
        let mut faults = wal.faults.lock();
        faults.short_write = Some(4);
        faults.fail_cut = true;
    }
    assert!(matches!(wal.append(batch(2.0), &applied), Err(WriteError::Io { .. })));
    assert!(matches!(wal.append(batch(3.0), &applied), Err(WriteError::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(WriteError::Poisoned { .. })));
    assert!(matches!(wal.close(), Err(WriteError::Poisoned { .. })));
    drop(wal);

    // The 4 stray bytes are a torn tail to the next start.
    let (_wal, report, replayed) = open(tmp.path(), FsyncPolicy::Batch);
    assert_eq!(values(&replayed), vec![1.0]);
    assert_eq!(report.torn_tail_bytes, 4);
}

#[test]
fn a_panicking_apply_releases_followers_and_poisons() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::None);
    // As above: stall a first leader so that the next two writers form one group. Whichever of
    // them leads it panics applying -1; the other must be released with `Poisoned`.
    let held = wal.writer.lock();
    let results = thread::scope(|s| {
        let first = s.spawn(|| wal.append(batch(1.0), &applied));
        while !wal.queue.lock().leading {
            thread::sleep(Duration::from_millis(1));
        }
        let pair: Vec<_> = [-1.0, 5.0]
            .into_iter()
            .map(|v| {
                let (wal, applied) = (&wal, &applied);
                s.spawn(move || catch_unwind(AssertUnwindSafe(|| wal.append(batch(v), applied))))
            })
            .collect();
        while wal.queue.lock().batches.len() < 2 {
            thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        assert!(first.join().unwrap().is_ok());
        pair.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let panicked = results.iter().filter(|r| r.is_err()).count();
    let poisoned = results.iter().filter(|r| matches!(r, Ok(Err(WriteError::Poisoned { .. })))).count();
    assert_eq!((panicked, poisoned), (1, 1), "{results:?}");
    assert!(matches!(wal.append(batch(6.0), &applied), Err(WriteError::Poisoned { .. })));
}

#[test]
fn writes_after_close_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::Batch);
    wal.append(batch(1.0), &applied).unwrap();
    wal.close().unwrap();
    wal.close().unwrap();
    assert!(matches!(wal.append(batch(2.0), &applied), Err(WriteError::Closed)));
    wal.sync().unwrap();
}

#[test]
fn positions_grow_and_match_between_live_apply_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::Batch);
    for v in 1..=3 {
        wal.append(batch(f64::from(v)), &applied).unwrap();
    }
    let seq = wal.rotate_for_checkpoint().unwrap();
    wal.append(batch(4.0), &applied).unwrap();
    let live = applied.positions.lock().clone();
    assert!(live.windows(2).all(|w| w[0] < w[1]), "{live:?}");
    assert_eq!(live[3].segment, seq, "a record after the checkpoint lands in the new segment");
    assert!(live[2].segment < seq);
    wal.close().unwrap();
    drop(wal);

    let (_wal, _, replayed) = open(tmp.path(), FsyncPolicy::Batch);
    assert_eq!(*replayed.positions.lock(), live, "replay hands out the positions the live path did");
}

#[test]
fn checkpoint_removes_only_the_segments_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _, applied) = open(tmp.path(), FsyncPolicy::Batch);
    wal.append(batch(1.0), &applied).unwrap();
    let seq = wal.rotate_for_checkpoint().unwrap();
    // Rotating an empty segment does not make another one.
    assert_eq!(wal.rotate_for_checkpoint().unwrap(), seq);
    wal.append(batch(2.0), &applied).unwrap();
    assert_eq!(wal.remove_segments_before(seq).unwrap(), 1);
    wal.close().unwrap();
    drop(wal);
    let (_wal, _, replayed) = open(tmp.path(), FsyncPolicy::Batch);
    assert_eq!(values(&replayed), vec![2.0]);
}

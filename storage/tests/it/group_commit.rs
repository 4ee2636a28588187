//! Concurrent writers share syncs and all get their data stored.

use std::sync::atomic::Ordering;
use std::thread;

use storage::{FsyncPolicy, Reader};

use crate::common::*;

const THREADS: usize = 8;
const WRITES: i64 = 500;

#[test]
fn concurrent_writers_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, events) = open_with(options(dir.path(), FsyncPolicy::Batch));
    let before = events.fsyncs.load(Ordering::Relaxed);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let s = &s;
            scope.spawn(move || {
                let key = format!("w{t}");
                for i in 0..WRITES {
                    s.write(sample(&key, i, (t as i64 * WRITES + i) as f64)).unwrap();
                    // Visible as soon as acknowledged.
                    let got = s.metric_store().select(&[("k".into(), key.clone())], i, i);
                    assert_eq!(got.len(), 1, "write {i} of {key} not visible");
                }
            });
        }
    });
    let fsyncs = events.fsyncs.load(Ordering::Relaxed) - before;
    let writes = THREADS as u64 * WRITES as u64;
    assert!(fsyncs > 0);
    assert!(fsyncs < writes, "{fsyncs} fsyncs for {writes} writes: no group commit");
    s.close().unwrap();
    drop(s);

    let (s, report) = open(dir.path());
    assert_eq!(report.records, writes);
    assert_eq!(s.item_counts().metrics, writes);
    for t in 0..THREADS {
        let want: Vec<(i64, f64)> = (0..WRITES).map(|i| (i, (t as i64 * WRITES + i) as f64)).collect();
        assert_eq!(samples_of(&s, &format!("w{t}")), want);
    }
}

#[test]
fn interval_and_none_do_not_sync_per_write() {
    for policy in [FsyncPolicy::Interval, FsyncPolicy::None] {
        let dir = tempfile::tempdir().unwrap();
        let (s, _, events) = open_with(options(dir.path(), policy));
        let before = events.fsyncs.load(Ordering::Relaxed);
        for i in 0..20 {
            s.write(sample("x", i, 1.0)).unwrap();
        }
        assert_eq!(events.fsyncs.load(Ordering::Relaxed), before, "{policy:?}");
        s.sync().unwrap();
        assert_eq!(events.fsyncs.load(Ordering::Relaxed), before + 1, "{policy:?}");
        drop(s);
        let (s, _) = open(dir.path());
        assert_eq!(samples_of(&s, "x").len(), 20, "{policy:?}");
    }
}

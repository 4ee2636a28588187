//! The write API's edges: limits, empty batches, closing, options.

use std::sync::Arc;

use storage::model::{MetricsBatch, WriteBatch};
use storage::{FsyncPolicy, OpenError, Reader, Storage, StorageOptions, WalOptions, WriteError};

use crate::common::*;

#[test]
fn oversized_batches_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        data_dir: dir.path().to_path_buf(),
        wal: WalOptions { max_record_bytes: 200, ..WalOptions::default() },
        engines: Default::default(),
    };
    let (s, _, _) = open_with(opts);
    s.write(sample("ok", 1, 1.0)).unwrap();
    let err = s.write(WriteBatch::Logs(logs_batch())).unwrap_err();
    assert!(matches!(err, WriteError::TooLarge { max: 200, .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(s.item_counts().logs, 0);
    drop(s);
    let (s, report) = open(dir.path());
    assert_eq!(report.records, 1);
    assert_eq!(samples_of(&s, "ok"), vec![(1, 1.0)]);
}

#[test]
fn empty_batches_are_accepted_without_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.write(WriteBatch::Metrics(MetricsBatch::default())).unwrap();
    drop(s);
    let (_s, report) = open(dir.path());
    assert_eq!(report.records, 0);
}

#[test]
fn close_refuses_writes_and_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.write(sample("c", 1, 1.0)).unwrap();
    s.close().unwrap();
    assert!(matches!(s.write(sample("c", 2, 2.0)), Err(WriteError::Closed)));
    assert!(matches!(s.write(WriteBatch::Metrics(MetricsBatch::default())), Err(WriteError::Closed)));
    s.sync().unwrap();
    s.close().unwrap();
    assert_eq!(samples_of(&s, "c"), vec![(1, 1.0)]);
}

#[test]
fn impossible_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for wal in [
        WalOptions { segment_bytes: 0, ..WalOptions::default() },
        WalOptions { max_record_bytes: 0, ..WalOptions::default() },
    ] {
        let opts = StorageOptions { wal, ..StorageOptions::new(dir.path()) };
        let err = Storage::open(opts, Arc::new(storage::NoEvents)).unwrap_err();
        assert!(matches!(err, OpenError::InvalidOptions { .. }), "{err}");
    }
}

#[test]
fn reads_run_while_writers_write() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _, _) = open_with(options(dir.path(), FsyncPolicy::None));
    std::thread::scope(|scope| {
        let s = &s;
        let writer = scope.spawn(move || {
            for i in 0..300 {
                s.write(sample("live", i, i as f64)).unwrap();
            }
        });
        let mut last = 0;
        while !writer.is_finished() {
            let n = samples_of(s, "live").len();
            assert!(n >= last, "acknowledged samples never disappear");
            last = n;
        }
    });
    assert_eq!(s.item_counts().metrics, 300);
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Storage>();
    check::<storage::MemStore>();
    check::<std::sync::Arc<dyn Reader>>();
}

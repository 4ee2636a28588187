//! The metrics engine's blocks under a real `Storage`: checkpoint, replay, maintenance.

use std::fs;
use std::path::Path;

use storage::Reader;

use crate::common::*;
use crate::round_trip::{expected, snapshot};

fn blocks(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("metrics"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn every_signal_survives_a_checkpoint_and_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    for batch in all_batches() {
        s.write(batch).unwrap();
    }
    s.checkpoint().unwrap();
    assert!(!blocks(tmp.path()).is_empty(), "persist wrote a metrics block");
    assert!(tmp.path().join("metrics/persisted.json").exists());
    let want = expected();
    assert_same(&snapshot(&s), &want);
    s.close().unwrap();
    drop(s);

    let (s, _) = open(tmp.path());
    assert_same(&snapshot(s.reader()), &want);
    // A second checkpoint with nothing new changes nothing.
    s.checkpoint().unwrap();
    drop(s);
    let (s, _) = open(tmp.path());
    assert_same(&snapshot(s.reader()), &want);
}

#[test]
fn replay_skips_what_a_checkpoint_persisted() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    for t in 0..50 {
        s.write(sample("a", t * 1000, t as f64)).unwrap();
    }
    s.checkpoint().unwrap();
    for t in 50..80 {
        s.write(sample("a", t * 1000, t as f64)).unwrap();
    }
    // A rewrite of a persisted timestamp after the checkpoint wins.
    s.write(sample("a", 10_000, -1.0)).unwrap();
    let want: Vec<(i64, f64)> = (0..80).map(|t| (t * 1000, if t == 10 { -1.0 } else { t as f64 })).collect();
    assert_eq!(samples_of(&s, "a"), want);
    drop(s);

    let (s, report) = open(tmp.path());
    assert!(report.records >= 31, "records after the checkpoint are replayed");
    assert_eq!(samples_of(&s, "a"), want);
    // 80 samples, plus the rewritten one counted in both the block and the head.
    assert_eq!(s.item_counts().metrics, 81);
    s.checkpoint().unwrap();
    s.maintain(0).unwrap();
    drop(s);
    let (s, _) = open(tmp.path());
    assert_eq!(samples_of(&s, "a"), want);
}

#[test]
fn maintenance_compacts_and_expires_through_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    let hour = 3_600_000;
    for round in 0..12 {
        for k in 0..5 {
            s.write(sample(&format!("k{k}"), round * 1000, round as f64)).unwrap();
        }
        s.checkpoint().unwrap();
    }
    // Newer data closes the first 2 h window.
    s.write(sample("k0", 3 * hour, 1.0)).unwrap();
    s.checkpoint().unwrap();
    assert_eq!(blocks(tmp.path()).len(), 13);
    let before: Vec<_> = (0..5).map(|k| samples_of(&s, &format!("k{k}"))).collect();
    s.maintain(3 * hour).unwrap();
    assert_eq!(blocks(tmp.path()).len(), 2, "{:?}", blocks(tmp.path()));
    let after: Vec<_> = (0..5).map(|k| samples_of(&s, &format!("k{k}"))).collect();
    assert_eq!(before, after);
    // Fifteen days later the old block expires; the newest sample's block is kept.
    s.maintain(3 * hour + 15 * 24 * hour).unwrap();
    assert_eq!(blocks(tmp.path()).len(), 1);
    assert_eq!(samples_of(&s, "k0"), vec![(3 * hour, 1.0)]);
    assert!(samples_of(&s, "k1").is_empty());
}

/// Frozen metrics blocks: `storage/testdata/compat/metrics-v1/` holds `<data_dir>/metrics` as block
/// format version 1 wrote it from `common::all_batches()` and a checkpoint. Like the WAL image it
/// is never regenerated for an existing version (`OUTPOST_REGENERATE_COMPAT=1` writes a new one).
#[test]
fn the_v1_metrics_block_image_still_reads() {
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/compat/metrics-v1");
    if std::env::var_os("OUTPOST_REGENERATE_COMPAT").is_some() {
        let tmp = tempfile::tempdir().unwrap();
        let (s, _) = open(tmp.path());
        for b in all_batches() {
            s.write(b).unwrap();
        }
        s.checkpoint().unwrap();
        drop(s);
        let _ = fs::remove_dir_all(&image);
        copy_tree(&tmp.path().join("metrics"), &image);
    }
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&image, &dir.path().join("metrics"));
    let (s, report) = open(dir.path());
    assert_eq!(report.records, 0, "no WAL: everything comes from the blocks");
    assert!(s.metric_store().storage_problems().is_empty(), "{:?}", s.metric_store().storage_problems());

    let fresh = storage::MemStore::new();
    for b in all_batches() {
        fresh.apply(b);
    }
    let (got, want) = (s.metric_store(), fresh.metric_store());
    assert_same(&got.select(&[], i64::MIN, i64::MAX), &want.select(&[], i64::MIN, i64::MAX));
    assert_same(&got.series(), &want.series());
    assert_same(&got.metadata(), &want.metadata());
    assert_same(&got.exemplars_by_trace(&trace_id(1).to_hex()), &want.exemplars_by_trace(&trace_id(1).to_hex()));
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).expect("missing frozen image; see the test's doc comment") {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// With all four engines persisting, a checkpoint deletes the WAL before it: the data directory
/// stops growing with the WAL and start-up replays only what came after.
#[test]
fn a_checkpoint_trims_the_wal_once_every_engine_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    for batch in all_batches() {
        s.write(batch).unwrap();
    }
    let c = s.checkpoint().unwrap();
    assert!(c.durable, "every engine persisted");
    assert!(c.segments_removed >= 1, "{c:?}");
    s.close().unwrap();
    drop(s);
    let (s, report) = open(tmp.path());
    assert_eq!(report.records, 0, "nothing before the checkpoint is replayed");
    assert_same(&snapshot(s.reader()), &expected());
}

/// A one-sample packed batch for series `{__name__="m", k=key}`.
fn packed(key: &str, ts: i64, value: f64) -> storage::model::WriteBatch {
    let mut p = storage::model::PackedSamples::new();
    p.push(&[("__name__", "m"), ("k", key)], &[storage::model::FloatSample { timestamp_ms: ts, value }]);
    storage::model::WriteBatch::Samples(p)
}

/// Packed samples (remote write's fast path) and model batches reach the same series, live, after
/// a checkpoint and after replay (record version 2 next to version 1 in one segment).
#[test]
fn packed_samples_and_model_batches_are_one_series() {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    for t in 0..40 {
        let batch = if t % 2 == 0 { packed("a", t * 1000, t as f64) } else { sample("a", t * 1000, t as f64) };
        s.write(batch).unwrap();
    }
    s.checkpoint().unwrap();
    for t in 40..60 {
        s.write(packed("a", t * 1000, t as f64)).unwrap();
    }
    // A packed rewrite of a persisted timestamp wins, as a model one does.
    s.write(packed("a", 10_000, -1.0)).unwrap();
    s.write(sample("b", 5, 5.0)).unwrap();
    s.write(packed("b", 6, 6.0)).unwrap();
    let want: Vec<(i64, f64)> = (0..60).map(|t| (t * 1000, if t == 10 { -1.0 } else { t as f64 })).collect();
    assert_eq!(samples_of(&s, "a"), want);
    assert_eq!(samples_of(&s, "b"), vec![(5, 5.0), (6, 6.0)]);
    assert_eq!(s.metric_store().series().len(), 2);
    s.close().unwrap();
    drop(s);
    let (s, report) = open(tmp.path());
    assert!(report.corrupt.is_empty() && report.torn_tail_bytes == 0, "{report:?}");
    assert_eq!(samples_of(s.reader(), "a"), want);
    assert_eq!(samples_of(s.reader(), "b"), vec![(5, 5.0), (6, 6.0)]);
    assert_eq!(s.metric_store().series().len(), 2);
}

//! Damage before the last segment is reported and skipped; the store always opens.

use std::fs;
use std::path::{Path, PathBuf};

use storage::FsyncPolicy;

use crate::common::*;

/// Two closed sessions: segment 1 holds `a` = 0..3, segment 2 holds `b` = 0..3.
fn two_segments() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for key in ["a", "b"] {
        let (s, _) = open(dir.path());
        for i in 0..3 {
            s.write(sample(key, i, i as f64)).unwrap();
        }
        s.close().unwrap();
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 2);
    (dir, segs[0].clone())
}

fn all(n: i64) -> Vec<(i64, f64)> {
    (0..n).map(|i| (i, i as f64)).collect()
}

fn patch(path: &Path, at: usize, bytes: &[u8]) {
    let mut data = fs::read(path).unwrap();
    data[at..at + bytes.len()].copy_from_slice(bytes);
    fs::write(path, data).unwrap();
}

#[test]
fn a_flipped_byte_in_an_earlier_segment_skips_the_rest_of_it() {
    let (dir, seg1) = two_segments();
    let second = record_offsets(&seg1)[1];
    let mut data = fs::read(&seg1).unwrap();
    data[second as usize + storage::wal::RECORD_HEADER_LEN + 2] ^= 0x01;
    fs::write(&seg1, data).unwrap();

    for _ in 0..2 {
        // The report is stable across restarts: the damaged segment is left as found.
        let (s, report, events) = open_with(options(dir.path(), FsyncPolicy::Batch));
        assert_eq!(report.corrupt.len(), 1, "{:?}", report.corrupt);
        let c = &report.corrupt[0];
        assert_eq!(c.path, seg1);
        assert_eq!(c.offset, second);
        assert!(c.detail.contains("CRC mismatch"), "{}", c.detail);
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(samples_of(&s, "a"), all(1), "records before the damage are kept");
        assert_eq!(samples_of(&s, "b"), all(3), "later segments are replayed");
        assert_eq!(events.corruptions.lock().len(), 1);
        assert_eq!(events.corruptions.lock()[0].1, second);
        s.write(sample("c", 1, 1.0)).unwrap();
    }
    let (s, _) = open(dir.path());
    assert_eq!(samples_of(&s, "c"), vec![(1, 1.0)]);
}

#[test]
fn a_garbage_header_skips_the_segment() {
    let (dir, seg1) = two_segments();
    patch(&seg1, 0, b"GARBAGE!");
    let (s, report) = open(dir.path());
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!((report.corrupt[0].path.clone(), report.corrupt[0].offset), (seg1, 0));
    assert!(report.corrupt[0].detail.contains("bad magic"), "{}", report.corrupt[0].detail);
    assert!(samples_of(&s, "a").is_empty());
    assert_eq!(samples_of(&s, "b"), all(3));
}

#[test]
fn an_unknown_segment_version_is_reported() {
    let (dir, seg1) = two_segments();
    patch(&seg1, 7, &[9]);
    let (_s, report) = open(dir.path());
    assert!(report.corrupt[0].detail.contains("unsupported segment version 9"), "{:?}", report.corrupt);
}

#[test]
fn an_oversized_length_in_an_earlier_segment_is_reported() {
    let (dir, seg1) = two_segments();
    let third = record_offsets(&seg1)[2] as usize;
    patch(&seg1, third, &u32::MAX.to_le_bytes());
    let (s, report) = open(dir.path());
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].offset, third as u64);
    assert!(report.corrupt[0].detail.contains("runs past the end"), "{}", report.corrupt[0].detail);
    assert_eq!(samples_of(&s, "a"), all(2));
    assert_eq!(samples_of(&s, "b"), all(3));
}

/// Random damage anywhere never panics, never fails the open, and never breaks later writes.
#[test]
fn random_damage_never_prevents_opening() {
    let (src, _) = two_segments();
    let originals: Vec<(PathBuf, Vec<u8>)> = segments(src.path())
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("wal")).unwrap();
        for (path, bytes) in &originals {
            let mut bytes = bytes.clone();
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() as usize) % bytes.len();
                        bytes[at] = next() as u8;
                    }
                }
                1 => bytes.truncate((next() as usize) % (bytes.len() + 1)),
                _ => {}
            }
            fs::write(dir.path().join("wal").join(path.file_name().unwrap()), bytes).unwrap();
        }
        let (s, report, _) = open_with(options(dir.path(), FsyncPolicy::None));
        assert!(samples_of(&s, "a").len() <= 3 && samples_of(&s, "b").len() <= 3, "round {round}");
        s.write(sample("z", 1, 1.0)).unwrap();
        drop(s);
        let (s, again) = open(dir.path());
        assert_eq!(samples_of(&s, "z"), vec![(1, 1.0)], "round {round}: {report:?}");
        assert_eq!(again.torn_tail_bytes, 0, "round {round}");
    }
}

//! A crash leaves the last segment with a partial record; replay cuts it and loses nothing else.

use std::fs;
use std::path::Path;

use storage::FsyncPolicy;

use crate::common::*;

const N: i64 = 4;

/// A closed data dir holding N one-sample records `t` = 0..N in one segment.
fn source() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    for i in 0..N {
        s.write(sample("t", i, i as f64)).unwrap();
    }
    s.close().unwrap();
    dir
}

fn expect(n: i64) -> Vec<(i64, f64)> {
    (0..n).map(|i| (i, i as f64)).collect()
}

fn install(dir: &Path, name: &Path, bytes: &[u8]) {
    fs::create_dir_all(dir.join("wal")).unwrap();
    fs::write(dir.join("wal").join(name.file_name().unwrap()), bytes).unwrap();
}

#[test]
fn a_cut_anywhere_in_the_last_record_loses_only_that_record() {
    let src = source();
    let seg = segments(src.path()).remove(0);
    let bytes = fs::read(&seg).unwrap();
    let offsets = record_offsets(&seg);
    assert_eq!(offsets.len(), N as usize);
    let last = offsets[N as usize - 1] as usize;

    for cut in last..bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), &seg, &bytes[..cut]);

        let (s, report, _) = open_with(options(dir.path(), FsyncPolicy::None));
        assert_eq!(report.torn_tail_bytes, (cut - last) as u64, "cut at {cut}");
        assert!(report.corrupt.is_empty(), "cut at {cut}: {:?}", report.corrupt);
        assert_eq!(report.records, N as u64 - 1);
        assert_eq!(samples_of(&s, "t"), expect(N - 1), "cut at {cut}");
        s.write(sample("t", 100, 100.0)).unwrap();
        s.close().unwrap();
        drop(s);

        let (s, report, _) = open_with(options(dir.path(), FsyncPolicy::None));
        assert_eq!(report.torn_tail_bytes, 0, "cut at {cut}");
        assert!(report.corrupt.is_empty(), "cut at {cut}: {:?}", report.corrupt);
        let mut want = expect(N - 1);
        want.push((100, 100.0));
        assert_eq!(samples_of(&s, "t"), want, "cut at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_torn_not_corrupt() {
    let src = source();
    let seg = segments(src.path()).remove(0);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &seg, &bytes);
    let (s, report) = open(dir.path());
    assert_eq!(report.torn_tail_bytes, 100);
    assert!(report.corrupt.is_empty());
    assert_eq!(samples_of(&s, "t"), expect(N));
}

#[test]
fn a_damaged_last_record_is_torn_not_corrupt() {
    let src = source();
    let seg = segments(src.path()).remove(0);
    let mut bytes = fs::read(&seg).unwrap();
    let last = *record_offsets(&seg).last().unwrap() as usize;
    let end = bytes.len();
    bytes[end - 1] ^= 0x40;
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &seg, &bytes);
    let (s, report) = open(dir.path());
    assert_eq!(report.torn_tail_bytes, (end - last) as u64);
    assert!(report.corrupt.is_empty());
    assert_eq!(samples_of(&s, "t"), expect(N - 1));
}

#[test]
fn a_segment_cut_inside_its_header_is_dropped() {
    let src = source();
    // Session two starts segment 2; simulate a crash that left only 3 bytes of its header.
    let seg = segments(src.path()).remove(0);
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), &seg, &fs::read(&seg).unwrap());
    fs::write(dir.path().join("wal/0000000000000002.wal"), b"OPW").unwrap();

    let (s, report) = open(dir.path());
    assert_eq!(report.torn_tail_bytes, 3);
    assert!(report.corrupt.is_empty());
    assert_eq!(samples_of(&s, "t"), expect(N));
    assert!(!dir.path().join("wal/0000000000000002.wal").exists());
    s.write(sample("t", 100, 100.0)).unwrap();
    drop(s);
    let (s, report) = open(dir.path());
    assert!(report.corrupt.is_empty());
    assert_eq!(samples_of(&s, "t").len(), N as usize + 1);
}

#[test]
fn restarts_without_writes_leave_no_empty_segments() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let (s, report) = open(dir.path());
        assert!(report.corrupt.is_empty());
        drop(s);
    }
    assert!(segments(dir.path()).len() <= 1);
}

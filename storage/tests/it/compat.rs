//! Frozen format images: a WAL written by format version 1 must open, unchanged, forever.
//!
//! `storage/testdata/compat/v1/wal/` holds segments written from `common::all_batches()`. A model
//! or codec change that breaks this test needs a new format version with a decoder for the old
//! one, not a regenerated image. Regenerate only when adding a version:
//! `OUTPOST_REGENERATE_COMPAT=1 cargo test -p storage compat` writes the image for the current one.

use std::fs;
use std::path::Path;

use storage::MemStore;

use crate::common::*;
use crate::round_trip::snapshot;

fn image_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/compat/v1")
}

fn regenerate(image: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let (s, _) = open(tmp.path());
    for b in all_batches() {
        s.write(b).unwrap();
    }
    s.close().unwrap();
    drop(s);
    let wal = image.join("wal");
    let _ = fs::remove_dir_all(&wal);
    fs::create_dir_all(&wal).unwrap();
    for seg in segments(tmp.path()) {
        fs::copy(&seg, wal.join(seg.file_name().unwrap())).unwrap();
    }
}

#[test]
fn the_v1_wal_image_still_replays() {
    let image = image_dir();
    if std::env::var_os("OUTPOST_REGENERATE_COMPAT").is_some() {
        regenerate(&image);
    }
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("wal")).unwrap();
    let frozen = fs::read_dir(image.join("wal")).expect("missing frozen image; see this file's header");
    for entry in frozen {
        let path = entry.unwrap().path();
        fs::copy(&path, dir.path().join("wal").join(path.file_name().unwrap())).unwrap();
    }

    let (s, report) = open(dir.path());
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(report.records, all_batches().len() as u64);

    let fresh = MemStore::new();
    for b in all_batches() {
        fresh.apply(b);
    }
    assert_same(&snapshot(&s), &snapshot(&fresh));
}

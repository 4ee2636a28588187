//! Frozen format images: a WAL written by any record version must open, unchanged, forever.
//!
//! `storage/testdata/compat/v<N>/wal/` holds segments written from `common::all_batches()` by
//! record version N (v1: before profile mappings, so it replays as the fixtures without them). A
//! model or codec change that breaks these tests needs a new format version with a decoder for the
//! old one, not a regenerated image. Regenerate only when adding a version:
//! `OUTPOST_REGENERATE_COMPAT=1 cargo test -p storage compat` writes the image for the current one
//! (`CURRENT`).

use std::fs;
use std::path::Path;

use storage::MemStore;
use storage::model::WriteBatch;

use crate::common::*;
use crate::round_trip::snapshot;

/// The record version this build writes.
const CURRENT: u8 = 3;

fn image_dir(version: u8) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/compat/v{version}"))
}

/// The fixtures as record version 1 could carry them: no mappings.
fn without_mappings(batches: Vec<WriteBatch>) -> Vec<WriteBatch> {
    batches
        .into_iter()
        .map(|b| match b {
            WriteBatch::Profiles(mut p) => {
                for profile in &mut p.profiles {
                    profile.mappings.clear();
                    for l in &mut profile.locations {
                        l.mapping = 0;
                    }
                }
                WriteBatch::Profiles(p)
            }
            other => other,
        })
        .collect()
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
    replays(1, without_mappings(all_batches()));
}

#[test]
fn the_v2_wal_image_still_replays() {
    replays(2, all_batches());
}

/// Version 3: records holding their batch in a zstd frame (every fixture batch is long enough to
/// be compressed; plain records are version 2, whose image is above).
#[test]
fn the_v3_wal_image_still_replays() {
    replays(3, all_batches());
    let versions = record_versions(&image_dir(3));
    assert_eq!(versions, [3; 5]);
}

/// The record version byte of every record in the image's segments.
fn record_versions(image: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut segs: Vec<_> = fs::read_dir(image.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    for seg in segs {
        let bytes = fs::read(seg).unwrap();
        let mut at = storage::wal::SEGMENT_HEADER_LEN as usize;
        while at + storage::wal::RECORD_HEADER_LEN < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            out.push(bytes[at + storage::wal::RECORD_HEADER_LEN]);
            at += storage::wal::RECORD_HEADER_LEN + len;
        }
    }
    out
}

fn replays(version: u8, expected: Vec<WriteBatch>) {
    let image = image_dir(version);
    if version == CURRENT && std::env::var_os("OUTPOST_REGENERATE_COMPAT").is_some() {
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
    assert_eq!(report.records, expected.len() as u64);

    let fresh = MemStore::new();
    for b in expected {
        fresh.apply(b);
    }
    assert_same(&snapshot(&s), &snapshot(&fresh));
}

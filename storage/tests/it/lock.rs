//! One data directory, one owner.

use std::sync::Arc;

use storage::{OpenError, Storage};

use crate::common::*;

#[test]
fn a_second_open_of_the_same_dir_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (first, _) = open(dir.path());
    let err = Storage::open(options(dir.path(), storage::FsyncPolicy::Batch), Arc::new(storage::NoEvents)).unwrap_err();
    match &err {
        OpenError::Locked { path, holder_pid } => {
            assert_eq!(path, &dir.path().join("LOCK"));
            assert_eq!(*holder_pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("LOCK") && message.contains("in use"), "{message}");

    // Closing keeps the lock; dropping releases it.
    first.close().unwrap();
    assert!(Storage::open(options(dir.path(), storage::FsyncPolicy::Batch), Arc::new(storage::NoEvents)).is_err());
    drop(first);
    let (_second, _) = open(dir.path());
}

#[test]
fn an_unusable_data_dir_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Storage::open(options(&file, storage::FsyncPolicy::Batch), Arc::new(storage::NoEvents)).unwrap_err();
    assert!(matches!(&err, OpenError::Io { path, .. } if path == &file), "{err:?}");
}

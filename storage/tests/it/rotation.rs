//! Segments roll over at `segment_bytes`, and replay reads them all in order.

use std::fs;

use storage::{FsyncPolicy, StorageOptions, WalOptions};

use crate::common::*;

#[test]
fn many_small_segments_replay_in_order() {
    for fsync in [FsyncPolicy::Batch, FsyncPolicy::Interval, FsyncPolicy::None] {
        let dir = tempfile::tempdir().unwrap();
        let opts = StorageOptions {
            data_dir: dir.path().to_path_buf(),
            wal: WalOptions { fsync, segment_bytes: 200, ..WalOptions::default() },
            engines: Default::default(),
        };
        let (s, _, _) = open_with(opts.clone());
        for i in 0..60 {
            s.write(sample("r", i, i as f64)).unwrap();
        }
        s.close().unwrap();
        drop(s);

        let segs = segments(dir.path());
        assert!(segs.len() >= 10, "{fsync:?}: only {} segments", segs.len());
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(seg.file_name().unwrap().to_str().unwrap(), format!("{:016}.wal", i + 1));
            let len = fs::metadata(seg).unwrap().len();
            if i + 1 < segs.len() {
                assert!(len >= 200, "{fsync:?}: segment {i} rotated early at {len} bytes");
            }
        }

        let (s, report, _) = open_with(opts);
        assert_eq!(report.segments, segs.len());
        assert_eq!(report.records, 60);
        assert!(report.corrupt.is_empty());
        let want: Vec<(i64, f64)> = (0..60).map(|i| (i, i as f64)).collect();
        assert_eq!(samples_of(&s, "r"), want, "{fsync:?}");
    }
}

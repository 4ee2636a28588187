//! Integration tests of `storage` against real files in temporary directories; one test binary.

mod api;
mod common;
mod compat;
mod corruption;
mod group_commit;
mod lock;
mod metrics_blocks;
mod rotation;
mod round_trip;
mod torn_tail;

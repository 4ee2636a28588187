//! The profiles head: profiles in arrival order and a time index.
//!
//! Invariant: `order` holds `(time_ns, profile id)` for every profile, sorted, so equal times
//! keep arrival (WAL) order.

use parking_lot::RwLock;

use crate::model::{Profile, ProfilesBatch};

/// In-memory profiles store.
#[derive(Default)]
pub(crate) struct ProfilesHead {
    /// Readers share the lock; a writer (under `Storage`, only the WAL leader) holds it per batch.
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    profiles: Vec<Profile>,
    order: Vec<(i64, usize)>,
    /// Samples over all profiles.
    samples: u64,
}

impl ProfilesHead {
    pub fn open(dir: Option<&std::path::Path>, opts: &ProfilesOptions) -> Result<Self, crate::error::OpenError> {
        let _ = (dir, opts);
        Ok(Self::default())
    }

    /// This head lives in memory only: the WAL is its durability.
    pub fn persist(&self) -> std::io::Result<bool> {
        Ok(false)
    }

    pub fn maintain(&self, now_ms: i64) -> std::io::Result<()> {
        let _ = now_ms;
        Ok(())
    }

    pub fn apply(&self, _pos: crate::wal::WalPos, batch: ProfilesBatch) {
        let mut inner = self.inner.write();
        for profile in batch.profiles {
            let key = (profile.time_ns, inner.profiles.len());
            match inner.order.last() {
                Some(last) if *last > key => {
                    let at = inner.order.partition_point(|k| *k < key);
                    inner.order.insert(at, key);
                }
                _ => inner.order.push(key),
            }
            inner.samples += profile.samples.len() as u64;
            inner.profiles.push(profile);
        }
    }

    pub fn items(&self) -> u64 {
        self.inner.read().samples
    }

    pub fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile> {
        let inner = self.inner.read();
        let lo = inner.order.partition_point(|(t, _)| *t < start_ns);
        let hi = inner.order.partition_point(|(t, _)| *t <= end_ns);
        inner.order[lo..hi.max(lo)].iter().map(|&(_, id)| inner.profiles[id].clone()).collect()
    }
}

/// Options of this engine (none yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfilesOptions {}

impl crate::read::ProfilesReader for ProfilesHead {
    fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile> {
        ProfilesHead::profiles(self, start_ns, end_ns)
    }
}

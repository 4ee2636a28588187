//! Read access to profiles. Implemented by the profiles engine (`crate::profiles`).

use crate::model::Profile;

/// Read access to profiles.
pub trait ProfilesReader: Send + Sync {
    /// Profiles with `time_ns` in `start_ns..=end_ns`, in time order (ties in arrival order).
    fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile>;
}

//! Delta → cumulative running totals for OTLP metrics.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use storage::model::Labels;

use super::RejectReason;
use super::hash::BatchedState;
use super::metrics_histogram::ExpHist;

/// Running totals that turn OTLP delta points into cumulative series, keyed by the generated
/// series' labels. Shared by every metrics request (`Send + Sync`).
///
/// The first delta seen for a series starts it at its own value. A delta with the same timestamp
/// as the last one accumulated is taken as a retry of that point and answers the current total
/// without adding again, so a client retrying after a failed write does not double count; an
/// older delta is rejected (`DeltaOutOfOrder`). A staleness marker forgets the series.
///
/// The state only grows: call [`MetricsState::evict_idle`] periodically to drop series that
/// stopped reporting.
#[derive(Debug, Default)]
pub struct MetricsState {
    // A std Mutex: it is held only inside synchronous mapping, never across an `.await`; one
    // request holds it from its first delta point to its end.
    inner: Mutex<StateInner>,
}

impl MetricsState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of series with a running total.
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.sums.len() + s.histograms.len() + s.exp_histograms.len()
    }

    /// True when no series has a running total.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the totals of series not updated since `now_ns - max_idle_ns`; returns how many. A
    /// series that reports again after eviction restarts from its own value (a counter reset).
    pub fn evict_idle(&self, now_ns: i64, max_idle_ns: i64) -> usize {
        let cutoff = now_ns.saturating_sub(max_idle_ns);
        let mut s = self.lock();
        let before = s.sums.len() + s.histograms.len() + s.exp_histograms.len();
        s.sums.retain(|_, slot| slot.touched_ns >= cutoff);
        s.histograms.retain(|_, slot| slot.touched_ns >= cutoff);
        s.exp_histograms.retain(|_, slot| slot.touched_ns >= cutoff);
        before - (s.sums.len() + s.histograms.len() + s.exp_histograms.len())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, StateInner> {
        // The totals are plain numbers; a panic elsewhere cannot leave them unusable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
pub(crate) struct StateInner {
    sums: HashMap<Labels, Slot<f64>, BatchedState>,
    /// Keyed by the family's labels (`__name__` = family name, no `le`).
    histograms: HashMap<Labels, Slot<ClassicHist>, BatchedState>,
    exp_histograms: HashMap<Labels, Slot<ExpHist>, BatchedState>,
}

#[derive(Debug)]
struct Slot<T> {
    /// Time of the last delta added, ns.
    last_time_ns: i64,
    /// `now` when it was last touched, for eviction.
    touched_ns: i64,
    total: T,
}

/// A classic histogram point with per-bucket (not cumulative) counts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ClassicHist {
    pub(crate) bounds: Vec<f64>,
    pub(crate) buckets: Vec<f64>,
    pub(crate) count: f64,
    pub(crate) sum: Option<f64>,
}

impl ClassicHist {
    /// Adds a later delta; a change of bucket layout restarts the total from the new point.
    fn add(&mut self, d: ClassicHist) {
        if d.bounds != self.bounds || d.buckets.len() != self.buckets.len() {
            *self = d;
            return;
        }
        for (t, x) in self.buckets.iter_mut().zip(&d.buckets) {
            *t += x;
        }
        self.count += d.count;
        self.sum = self.sum.zip(d.sum).map(|(a, b)| a + b);
    }
}

fn accumulate<T: Clone>(
    map: &mut HashMap<Labels, Slot<T>, BatchedState>,
    key: &Labels,
    time_ns: i64,
    now_ns: i64,
    delta: T,
    add: impl FnOnce(&mut T, T),
) -> Result<T, RejectReason> {
    match map.get_mut(key) {
        Some(slot) => {
            if time_ns < slot.last_time_ns {
                return Err(RejectReason::DeltaOutOfOrder);
            }
            if time_ns > slot.last_time_ns {
                add(&mut slot.total, delta);
                slot.last_time_ns = time_ns;
            }
            slot.touched_ns = now_ns;
            Ok(slot.total.clone())
        }
        None => {
            let slot = Slot { last_time_ns: time_ns, touched_ns: now_ns, total: delta.clone() };
            map.insert(key.clone(), slot);
            Ok(delta)
        }
    }
}

impl StateInner {
    pub(crate) fn add_sum(&mut self, key: &Labels, time_ns: i64, now_ns: i64, delta: f64) -> Result<f64, RejectReason> {
        accumulate(&mut self.sums, key, time_ns, now_ns, delta, |t, d| *t += d)
    }

    pub(crate) fn add_histogram(
        &mut self,
        key: &Labels,
        time_ns: i64,
        now_ns: i64,
        delta: ClassicHist,
    ) -> Result<ClassicHist, RejectReason> {
        accumulate(&mut self.histograms, key, time_ns, now_ns, delta, ClassicHist::add)
    }

    pub(crate) fn add_exp_histogram(
        &mut self,
        key: &Labels,
        time_ns: i64,
        now_ns: i64,
        delta: ExpHist,
    ) -> Result<ExpHist, RejectReason> {
        accumulate(&mut self.exp_histograms, key, time_ns, now_ns, delta, ExpHist::add)
    }

    pub(crate) fn forget_sum(&mut self, key: &Labels) {
        self.sums.remove(key);
    }

    pub(crate) fn forget_histogram(&mut self, key: &Labels) {
        self.histograms.remove(key);
    }

    pub(crate) fn forget_exp_histogram(&mut self, key: &Labels) {
        self.exp_histograms.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_accumulate_retry_and_reject_out_of_order() {
        let state = MetricsState::new();
        let key = Labels::from_pairs([("__name__", "x_total")]);
        let mut s = state.lock();
        assert_eq!(s.add_sum(&key, 10, 100, 2.0), Ok(2.0));
        assert_eq!(s.add_sum(&key, 20, 100, 3.0), Ok(5.0));
        assert_eq!(s.add_sum(&key, 20, 100, 3.0), Ok(5.0), "a retry is not added twice");
        assert_eq!(s.add_sum(&key, 15, 100, 1.0), Err(RejectReason::DeltaOutOfOrder));
        s.forget_sum(&key);
        assert_eq!(s.add_sum(&key, 30, 100, 1.0), Ok(1.0));
        drop(s);
        assert_eq!(state.len(), 1);
        assert_eq!(state.evict_idle(200, 150), 0);
        assert_eq!(state.evict_idle(300, 150), 1);
        assert!(state.is_empty());
    }

    #[test]
    fn histogram_layout_change_restarts() {
        let h = |bounds: &[f64], buckets: &[f64]| ClassicHist {
            bounds: bounds.to_vec(),
            buckets: buckets.to_vec(),
            count: buckets.iter().sum(),
            sum: Some(1.0),
        };
        let mut a = h(&[1.0], &[1.0, 2.0]);
        a.add(h(&[1.0], &[3.0, 4.0]));
        assert_eq!(a, ClassicHist { sum: Some(2.0), ..h(&[1.0], &[4.0, 6.0]) });
        a.add(h(&[2.0], &[1.0, 1.0]));
        assert_eq!(a, h(&[2.0], &[1.0, 1.0]));
    }

    #[test]
    fn state_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<MetricsState>();
    }
}

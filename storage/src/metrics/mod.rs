//! The metrics head: every series in memory with its samples sorted by time, plus label postings
//! for selection and the latest metadata per family.
//!
//! Invariant: each series' samples and histograms are sorted by timestamp with no duplicate
//! timestamp (a later write replaces); exemplars are sorted by timestamp with no duplicate
//! `(timestamp, labels)`.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::FastMap;

use crate::model::{Exemplar, FloatSample, HistogramSample, Label, Labels, MetricMetadata, MetricsBatch, TimeSeries};
use crate::read::matches;

/// In-memory metrics store.
#[derive(Default)]
pub(crate) struct MetricsHead {
    /// Readers share the lock; a writer (under `Storage`, only the WAL leader) holds it per batch.
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    ids: FastMap<Arc<Labels>, u32>,
    /// Indexed by series id.
    series: Vec<MemSeries>,
    /// Series ids per label, ascending (ids are handed out in increasing order).
    postings: FastMap<Label, Vec<u32>>,
    /// Latest metadata per family name.
    metadata: FastMap<String, MetricMetadata>,
    /// Float plus histogram samples held.
    items: u64,
}

struct MemSeries {
    labels: Arc<Labels>,
    samples: Vec<FloatSample>,
    histograms: Vec<HistogramSample>,
    exemplars: Vec<Exemplar>,
}

impl MetricsHead {
    pub fn open(dir: Option<&std::path::Path>, opts: &MetricsOptions) -> Result<Self, crate::error::OpenError> {
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

    pub fn apply(&self, _pos: crate::wal::WalPos, batch: MetricsBatch) {
        let mut inner = self.inner.write();
        for ts in batch.series {
            if ts.samples.is_empty() && ts.histograms.is_empty() && ts.exemplars.is_empty() {
                continue;
            }
            let id = inner.series_id(ts.labels);
            let series = &mut inner.series[id as usize];
            let mut added = 0u64;
            for s in ts.samples {
                added += u64::from(upsert(&mut series.samples, s, |s| s.timestamp_ms));
            }
            for h in ts.histograms {
                added += u64::from(upsert(&mut series.histograms, h, |h| h.timestamp_ms));
            }
            for e in ts.exemplars {
                upsert_exemplar(&mut series.exemplars, e);
            }
            inner.items += added;
        }
        for m in batch.metadata {
            match inner.metadata.get_mut(&m.metric_family) {
                Some(slot) => *slot = m,
                None => {
                    inner.metadata.insert(m.metric_family.clone(), m);
                }
            }
        }
    }

    pub fn items(&self) -> u64 {
        self.inner.read().items
    }

    pub fn series(&self) -> Vec<Labels> {
        let inner = self.inner.read();
        let mut out: Vec<Labels> = inner.series.iter().map(|s| Labels::clone(&s.labels)).collect();
        out.sort_unstable();
        out
    }

    pub fn select(&self, matchers: &[(String, String)], start_ms: i64, end_ms: i64) -> Vec<TimeSeries> {
        let inner = self.inner.read();
        let mut out = Vec::new();
        for id in inner.candidates(matchers) {
            let s = &inner.series[id as usize];
            if !matches(&s.labels, matchers) {
                continue;
            }
            let samples = in_range(&s.samples, start_ms, end_ms, |s| s.timestamp_ms);
            let histograms = in_range(&s.histograms, start_ms, end_ms, |h| h.timestamp_ms);
            let exemplars = in_range(&s.exemplars, start_ms, end_ms, |e| e.timestamp_ms);
            if samples.is_empty() && histograms.is_empty() && exemplars.is_empty() {
                continue;
            }
            out.push(TimeSeries {
                labels: Labels::clone(&s.labels),
                samples: samples.to_vec(),
                histograms: histograms.to_vec(),
                exemplars: exemplars.to_vec(),
            });
        }
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    pub fn metadata(&self) -> Vec<MetricMetadata> {
        let inner = self.inner.read();
        let mut out: Vec<MetricMetadata> = inner.metadata.values().cloned().collect();
        out.sort_unstable_by(|a, b| a.metric_family.cmp(&b.metric_family));
        out
    }
}

impl Inner {
    fn series_id(&mut self, labels: Labels) -> u32 {
        if let Some(&id) = self.ids.get(&labels) {
            return id;
        }
        // A head holding 2^32 series would need far more memory than any machine has.
        let id = u32::try_from(self.series.len()).expect("fewer than 2^32 series");
        for l in labels.iter() {
            self.postings.entry(l.clone()).or_default().push(id);
        }
        let labels = Arc::new(labels);
        self.ids.insert(Arc::clone(&labels), id);
        self.series.push(MemSeries { labels, samples: Vec::new(), histograms: Vec::new(), exemplars: Vec::new() });
        id
    }

    /// Series ids that can match: the intersection of the postings of the non-empty matchers, or
    /// every series when there is none. Empty-value matchers are checked by the caller.
    fn candidates(&self, matchers: &[(String, String)]) -> Vec<u32> {
        let mut lists: Vec<&[u32]> = Vec::new();
        for (name, value) in matchers.iter().filter(|(_, v)| !v.is_empty()) {
            let key = Label { name: name.clone(), value: value.clone() };
            match self.postings.get(&key) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        }
        if lists.is_empty() {
            return (0..self.series.len() as u32).collect();
        }
        lists.sort_unstable_by_key(|l| l.len());
        let mut ids = lists[0].to_vec();
        for list in &lists[1..] {
            ids.retain(|id| list.binary_search(id).is_ok());
        }
        ids
    }
}

/// Inserts `item` into `v`, kept sorted by `key`; an item with an equal key is replaced. True when
/// `v` grew. Appending in time order, the common case, costs no search.
fn upsert<T>(v: &mut Vec<T>, item: T, key: impl Fn(&T) -> i64) -> bool {
    let k = key(&item);
    match v.last() {
        Some(last) if key(last) >= k => match v.binary_search_by_key(&k, &key) {
            Ok(i) => {
                v[i] = item;
                false
            }
            Err(i) => {
                v.insert(i, item);
                true
            }
        },
        _ => {
            v.push(item);
            true
        }
    }
}

fn upsert_exemplar(v: &mut Vec<Exemplar>, e: Exemplar) {
    let first = v.partition_point(|x| x.timestamp_ms < e.timestamp_ms);
    let end = first + v[first..].partition_point(|x| x.timestamp_ms == e.timestamp_ms);
    match v[first..end].iter().position(|x| x.labels == e.labels) {
        Some(i) => v[first + i] = e,
        None => v.insert(end, e),
    }
}

fn in_range<T>(v: &[T], start: i64, end: i64, key: impl Fn(&T) -> i64) -> &[T] {
    let lo = v.partition_point(|x| key(x) < start);
    let hi = v.partition_point(|x| key(x) <= end);
    &v[lo..hi.max(lo)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(t: i64, v: f64) -> FloatSample {
        FloatSample { timestamp_ms: t, value: v }
    }

    #[test]
    fn later_write_of_a_timestamp_wins() {
        let head = MetricsHead::default();
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let batch = |samples| MetricsBatch {
            series: vec![TimeSeries { labels: labels.clone(), samples, ..TimeSeries::default() }],
            metadata: vec![],
        };
        head.apply(crate::wal::WalPos::ZERO, batch(vec![fs(20, 1.0), fs(10, 2.0), fs(20, 3.0)]));
        head.apply(crate::wal::WalPos::ZERO, batch(vec![fs(10, 4.0), fs(30, 5.0), fs(5, 6.0)]));
        let got = head.select(&[("job".into(), "a".into())], i64::MIN, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].samples, vec![fs(5, 6.0), fs(10, 4.0), fs(20, 3.0), fs(30, 5.0)]);
        assert_eq!(head.items(), 4);
        let got = head.select(&[("job".into(), "a".into())], 10, 20);
        assert_eq!(got[0].samples, vec![fs(10, 4.0), fs(20, 3.0)]);
        assert!(head.select(&[("job".into(), "a".into())], 31, 40).is_empty());
    }

    #[test]
    fn matchers_intersect_and_empty_means_absent() {
        let head = MetricsHead::default();
        let mk = |pairs: &[(&str, &str)]| TimeSeries {
            labels: Labels::from_pairs(pairs.iter().copied()),
            samples: vec![fs(1, 1.0)],
            ..TimeSeries::default()
        };
        head.apply(
            crate::wal::WalPos::ZERO,
            MetricsBatch {
                series: vec![
                    mk(&[("__name__", "m"), ("a", "1")]),
                    mk(&[("__name__", "m"), ("a", "1"), ("b", "2")]),
                    mk(&[("__name__", "n"), ("a", "1")]),
                ],
                metadata: vec![],
            },
        );
        let names = |m: &[(&str, &str)]| {
            let m: Vec<(String, String)> = m.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
            head.select(&m, 0, 10).into_iter().map(|s| s.labels.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(&[("__name__", "m")]).len(), 2);
        assert_eq!(names(&[("__name__", "m"), ("b", "")]), vec![r#"{__name__="m", a="1"}"#]);
        assert_eq!(names(&[("a", "1"), ("b", "2")]), vec![r#"{__name__="m", a="1", b="2"}"#]);
        assert!(names(&[("a", "9")]).is_empty());
        assert_eq!(names(&[]).len(), 3);
        assert_eq!(head.series().len(), 3);
    }
}

/// Options of this engine (none yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsOptions {}

impl crate::read::MetricsReader for MetricsHead {
    fn series(&self) -> Vec<Labels> {
        MetricsHead::series(self)
    }

    fn select(&self, matchers: &[(String, String)], start_ms: i64, end_ms: i64) -> Vec<TimeSeries> {
        MetricsHead::select(self, matchers, start_ms, end_ms)
    }

    fn metadata(&self) -> Vec<MetricMetadata> {
        MetricsHead::metadata(self)
    }
}

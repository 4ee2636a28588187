//! [`PackedSamples`]: float samples of many series with their label sets packed into one byte
//! buffer, so that a remote-write request becomes a batch without one allocation per label and the
//! WAL writes it with one copy.
//!
//! Layout of the buffer (the same bytes go into the WAL, see `docs/format/wal.md`), series after
//! series, to the end of the buffer:
//!
//! ```text
//! series  = varint label_count, label_count × label, varint sample_count, sample_count × sample
//! label   = varint name_len, name (UTF-8), varint value_len, value (UTF-8)
//! sample  = i64 LE timestamp (ms), u64 LE value bits (IEEE-754)
//! ```
//!
//! Invariants (checked when a batch is built or decoded, so readers may rely on them):
//! - every series has at least one label and one sample; labels are sorted by name, names are
//!   unique and non-empty, values non-empty, all valid UTF-8;
//! - the buffer ends exactly after the last series.
//!
//! The *label bytes* of a series (from its label count to the end of its last value) are a
//! canonical encoding of its label set: two series have equal label bytes exactly when their label
//! sets are equal. The metrics store hashes them to find a series without decoding the labels
//! ([`pack_labels`] produces the same bytes from a [`Labels`]).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{FloatSample, Label, Labels, MetricMetadata, MetricsBatch, TimeSeries};

/// Float samples of many series, label sets packed (see the module documentation).
#[derive(Clone, Default, PartialEq)]
pub struct PackedSamples {
    bytes: Vec<u8>,
    series: usize,
    samples: usize,
    /// Metric family metadata sent with the samples.
    pub metadata: Vec<MetricMetadata>,
}

impl fmt::Debug for PackedSamples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedSamples")
            .field("series", &self.series)
            .field("samples", &self.samples)
            .field("bytes", &self.bytes.len())
            .field("metadata", &self.metadata.len())
            .finish()
    }
}

/// One series of a [`PackedSamples`].
#[derive(Clone, Copy, Debug)]
pub struct PackedSeries<'a> {
    label_bytes: &'a [u8],
    sample_bytes: &'a [u8],
}

fn get_slice<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(crate::varint::get(b, pos)?).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= b.len())?;
    let s = &b[*pos..end];
    *pos = end;
    Some(s)
}

/// Appends the label bytes of `labels` (already canonical: sorted, unique, non-empty; `count` of
/// them) to `out`.
pub fn pack_labels<'a>(count: usize, labels: impl Iterator<Item = (&'a str, &'a str)>, out: &mut Vec<u8>) {
    crate::varint::put(out, count as u64);
    for (n, v) in labels.take(count) {
        crate::varint::put(out, n.len() as u64);
        out.extend_from_slice(n.as_bytes());
        crate::varint::put(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
}

/// Checks one series at `*pos`; returns its parts and moves past it. With `check` false (bytes
/// already checked on construction) only the framing is followed: label order and UTF-8 are not
/// verified again.
fn parse_series<'a>(b: &'a [u8], pos: &mut usize, check: bool) -> Result<PackedSeries<'a>, String> {
    let start = *pos;
    let n = crate::varint::get(b, pos).ok_or("truncated label count")?;
    if n == 0 {
        return Err("series without labels".into());
    }
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n {
        let name = get_slice(b, pos).ok_or("truncated label name")?;
        let value = get_slice(b, pos).ok_or("truncated label value")?;
        if !check {
            continue;
        }
        if name.is_empty() || value.is_empty() {
            return Err("empty label name or value".into());
        }
        if prev.is_some_and(|p| p >= name) {
            return Err("labels not sorted by name or not unique".into());
        }
        if std::str::from_utf8(name).is_err() || std::str::from_utf8(value).is_err() {
            return Err("label is not UTF-8".into());
        }
        prev = Some(name);
    }
    let label_end = *pos;
    let count = crate::varint::get(b, pos).ok_or("truncated sample count")?;
    if count == 0 {
        return Err("series without samples".into());
    }
    let len = usize::try_from(count).ok().and_then(|c| c.checked_mul(16)).ok_or("sample count overflows")?;
    let end = pos.checked_add(len).filter(|&e| e <= b.len()).ok_or("truncated samples")?;
    let s = PackedSeries { label_bytes: &b[start..label_end], sample_bytes: &b[*pos..end] };
    *pos = end;
    Ok(s)
}

impl PackedSamples {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` bytes of packed series.
    pub fn with_capacity(bytes: usize) -> Self {
        PackedSamples { bytes: Vec::with_capacity(bytes), ..Self::default() }
    }

    /// Adds a series. `labels` must be canonical (sorted by name, unique non-empty names, no empty
    /// value; checked in debug builds). Nothing is added when `samples` is empty.
    pub fn push(&mut self, labels: &[(&str, &str)], samples: &[FloatSample]) {
        debug_assert!(!labels.is_empty());
        debug_assert!(labels.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(labels.iter().all(|(n, v)| !n.is_empty() && !v.is_empty()));
        if samples.is_empty() {
            return;
        }
        pack_labels(labels.len(), labels.iter().copied(), &mut self.bytes);
        self.push_samples(samples);
    }

    fn push_samples(&mut self, samples: &[FloatSample]) {
        crate::varint::put(&mut self.bytes, samples.len() as u64);
        self.bytes.reserve(samples.len() * 16);
        for s in samples {
            self.bytes.extend_from_slice(&s.timestamp_ms.to_le_bytes());
            self.bytes.extend_from_slice(&s.value.to_bits().to_le_bytes());
        }
        self.series += 1;
        self.samples += samples.len();
    }

    /// Builds a batch from the packed bytes, checking every invariant.
    pub fn from_bytes(bytes: Vec<u8>, metadata: Vec<MetricMetadata>) -> Result<Self, String> {
        let (mut series, mut samples, mut pos) = (0usize, 0usize, 0usize);
        while pos < bytes.len() {
            let s = parse_series(&bytes, &mut pos, true).map_err(|e| format!("packed series {series}: {e}"))?;
            series += 1;
            samples += s.sample_bytes.len() / 16;
        }
        Ok(PackedSamples { bytes, series, samples, metadata })
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.samples
    }

    /// True when there is neither a sample nor metadata.
    pub fn is_empty(&self) -> bool {
        self.series == 0 && self.metadata.is_empty()
    }

    /// The series in order.
    pub fn iter(&self) -> impl Iterator<Item = PackedSeries<'_>> {
        let b = &self.bytes[..];
        let mut pos = 0;
        // The invariants were checked on construction; a parse error cannot happen and would end
        // the iteration.
        std::iter::from_fn(move || if pos < b.len() { parse_series(b, &mut pos, false).ok() } else { None })
    }

    /// Keeps the samples for which `keep(series, timestamp)` is true (series left without samples
    /// go); returns how many samples were removed. Rewrites the buffer only when something goes.
    pub fn retain(&mut self, mut keep: impl FnMut(&PackedSeries<'_>, i64) -> bool) -> usize {
        let mut verdicts = Vec::new();
        let mut dropped = 0;
        for s in self.iter() {
            for x in s.samples() {
                let k = keep(&s, x.timestamp_ms);
                dropped += usize::from(!k);
                verdicts.push(k);
            }
        }
        if dropped == 0 {
            return 0;
        }
        let old = std::mem::take(self);
        let mut out = PackedSamples { metadata: old.metadata.clone(), ..Self::default() };
        out.bytes.reserve(old.bytes.len());
        let mut i = 0;
        let mut kept = Vec::new();
        for s in old.iter() {
            kept.clear();
            for x in s.samples() {
                if verdicts[i] {
                    kept.push(x);
                }
                i += 1;
            }
            if !kept.is_empty() {
                out.bytes.extend_from_slice(s.label_bytes);
                out.push_samples(&kept);
            }
        }
        *self = out;
        dropped
    }

    /// The same data as a [`MetricsBatch`] (owned labels).
    pub fn to_metrics_batch(&self) -> MetricsBatch {
        MetricsBatch {
            series: self
                .iter()
                .map(|s| TimeSeries { labels: s.labels(), samples: s.samples().collect(), ..TimeSeries::default() })
                .collect(),
            metadata: self.metadata.clone(),
        }
    }
}

impl<'a> PackedSeries<'a> {
    /// The canonical label bytes (see the module documentation): equal exactly for equal sets.
    pub fn label_bytes(&self) -> &'a [u8] {
        self.label_bytes
    }

    /// The labels as `(name, value)` pairs, in name order.
    pub fn label_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let b = self.label_bytes;
        let mut pos = 0;
        let n = crate::varint::get(b, &mut pos).unwrap_or(0);
        (0..n).map_while(move |_| {
            let name = std::str::from_utf8(get_slice(b, &mut pos)?).ok()?;
            let value = std::str::from_utf8(get_slice(b, &mut pos)?).ok()?;
            Some((name, value))
        })
    }

    /// The labels as an owned set.
    pub fn labels(&self) -> Labels {
        Labels::from_sorted(self.label_pairs().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }))
    }

    /// Number of samples.
    pub fn sample_count(&self) -> usize {
        self.sample_bytes.len() / 16
    }

    /// The samples in the order they were sent.
    pub fn samples(&self) -> impl Iterator<Item = FloatSample> + 'a {
        self.sample_bytes.chunks_exact(16).map(|c| {
            let mut t = [0u8; 8];
            let mut v = [0u8; 8];
            t.copy_from_slice(&c[..8]);
            v.copy_from_slice(&c[8..]);
            FloatSample { timestamp_ms: i64::from_le_bytes(t), value: f64::from_bits(u64::from_le_bytes(v)) }
        })
    }
}

/// The WAL form: the packed bytes (a byte string: length, then the bytes), then the metadata.
impl Serialize for PackedSamples {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let mut t = serializer.serialize_tuple(2)?;
        t.serialize_element(&Bytes(&self.bytes))?;
        t.serialize_element(&self.metadata)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for PackedSamples {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteBuf(Vec<u8>);
        impl<'de> Deserialize<'de> for ByteBuf {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = ByteBuf;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a byte string")
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v.to_vec()))
                    }
                    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                        Ok(ByteBuf(v))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                        let mut out = Vec::new();
                        while let Some(b) = seq.next_element::<u8>()? {
                            out.push(b);
                        }
                        Ok(ByteBuf(out))
                    }
                }
                deserializer.deserialize_byte_buf(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PackedSamples;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("packed samples")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PackedSamples, A::Error> {
                let bytes: ByteBuf = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let metadata: Vec<MetricMetadata> =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                PackedSamples::from_bytes(bytes.0, metadata).map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_tuple(2, V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(t: i64, v: f64) -> FloatSample {
        FloatSample { timestamp_ms: t, value: v }
    }

    #[test]
    fn round_trip_through_postcard_and_retain() {
        let mut p = PackedSamples::new();
        p.push(&[("__name__", "up"), ("job", "a")], &[fs(1, 1.0), fs(2, f64::from_bits(crate::model::STALE_NAN_BITS))]);
        p.push(&[("__name__", "up"), ("job", "b")], &[fs(3, 3.0)]);
        p.push(&[("__name__", "up")], &[]);
        assert_eq!((p.series_count(), p.sample_count()), (2, 3));
        let bytes = postcard::to_stdvec(&p).unwrap();
        let back: PackedSamples = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        let b = back.to_metrics_batch();
        assert_eq!(b.series[0].labels, Labels::from_pairs([("__name__", "up"), ("job", "a")]));
        assert!(crate::model::is_stale_nan(b.series[0].samples[1].value));
        let mut packed = Vec::new();
        pack_labels(
            b.series[1].labels.len(),
            b.series[1].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            &mut packed,
        );
        assert_eq!(back.iter().nth(1).unwrap().label_bytes(), &packed[..]);

        let mut r = back.clone();
        assert_eq!(r.retain(|_, t| t != 3), 1);
        assert_eq!((r.series_count(), r.sample_count()), (1, 2));
        assert_eq!(r.retain(|_, _| true), 0);
    }

    #[test]
    fn damaged_bytes_are_refused() {
        let mut p = PackedSamples::new();
        p.push(&[("__name__", "up"), ("job", "a")], &[fs(1, 1.0)]);
        let good = p.as_bytes().to_vec();
        for cut in 0..good.len() {
            assert!(PackedSamples::from_bytes(good[..cut].to_vec(), vec![]).is_err() || cut == 0);
        }
        let mut unsorted = Vec::new();
        pack_labels(2, [("job", "a"), ("__name__", "up")].into_iter(), &mut unsorted);
        unsorted.extend([1]);
        unsorted.extend([0u8; 16]);
        assert!(PackedSamples::from_bytes(unsorted, vec![]).unwrap_err().contains("sorted"));
        let mut bad_utf8 = good.clone();
        bad_utf8[2] = 0xff;
        assert!(PackedSamples::from_bytes(bad_utf8, vec![]).is_err());
        // Every single-byte mutation is either refused or still well-formed: never a panic.
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                if let Ok(p) = PackedSamples::from_bytes(m, vec![]) {
                    for s in p.iter() {
                        let _ = (s.labels(), s.samples().count());
                    }
                }
            }
        }
    }
}

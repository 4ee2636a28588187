//! OTLP exponential histograms as Prometheus native histograms, and their delta accumulation.
//!
//! Upstream followed: Prometheus `prometheusremotewrite/histograms.go`
//! (`exponentialToNativeHistogram`, `convertBucketsLayout`). OTLP bucket `i` covers
//! `(base^i, base^(i+1)]`, Prometheus bucket `j` covers `(base^(j-1), base^j]`, so `j = i + 1`;
//! scales above 8 are merged down to schema 8 (`2^(scale-8)` buckets become one); scales below -4
//! are refused. Buckets are kept sparse (index, count) so that accumulating far-apart deltas
//! cannot allocate ranges.

use opentelemetry_proto::tonic::metrics::v1::ExponentialHistogramDataPoint;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use storage::model::{BucketSpan, NativeHistogram, STALE_NAN_BITS};

/// Finest schema Prometheus stores.
const MAX_SCHEMA: i32 = 8;
/// Coarsest schema Prometheus stores.
const MIN_SCHEMA: i32 = -4;
/// Prometheus' OTLP receiver uses this zero threshold; we use it when OTLP gives none (0).
const DEFAULT_ZERO_THRESHOLD: f64 = 1e-128;
/// Zero-count gaps up to this long stay inside a span (client_golang's rule, kept upstream).
const MAX_GAP_IN_SPAN: i32 = 2;
/// Largest bucket index magnitude accepted. Every finite float lies within about ±2^18 buckets at
/// schema 8, so larger indexes are garbage; the bound also keeps index arithmetic and span
/// offsets far from `i32` overflow, even after deltas from opposite extremes are merged.
const MAX_INDEX: i64 = 1 << 24;

/// An exponential histogram at a Prometheus schema with sparse bucket counts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExpHist {
    schema: i32,
    zero_threshold: f64,
    zero_count: f64,
    count: f64,
    sum: f64,
    /// Populated positive buckets as (Prometheus index, count), ascending by index.
    positive: Vec<(i32, f64)>,
    /// Same for negative buckets (indexes of absolute values).
    negative: Vec<(i32, f64)>,
}

impl ExpHist {
    /// Converts an OTLP point; the error is a detail for the rejection message.
    pub(crate) fn from_otlp(p: &ExponentialHistogramDataPoint) -> Result<ExpHist, String> {
        if p.scale < MIN_SCHEMA {
            return Err(format!("exponential histogram scale {} below {MIN_SCHEMA}", p.scale));
        }
        let scale_down = (p.scale - MAX_SCHEMA).max(0) as u32;
        let out_of_range = || "exponential histogram bucket index out of range".to_string();
        Ok(ExpHist {
            schema: p.scale.min(MAX_SCHEMA),
            zero_threshold: if p.zero_threshold > 0.0 { p.zero_threshold } else { DEFAULT_ZERO_THRESHOLD },
            zero_count: p.zero_count as f64,
            count: p.count as f64,
            sum: p.sum.unwrap_or(f64::NAN),
            positive: sparse(p.positive.as_ref(), scale_down).ok_or_else(out_of_range)?,
            negative: sparse(p.negative.as_ref(), scale_down).ok_or_else(out_of_range)?,
        })
    }

    /// The native histogram; `stale` sets count and sum to the staleness marker (buckets kept, as
    /// upstream does).
    pub(crate) fn to_native(&self, stale: bool) -> NativeHistogram {
        let (positive_spans, positive_counts) = spans(&self.positive);
        let (negative_spans, negative_counts) = spans(&self.negative);
        let stale_nan = f64::from_bits(STALE_NAN_BITS);
        NativeHistogram {
            schema: self.schema,
            zero_threshold: self.zero_threshold,
            zero_count: self.zero_count,
            count: if stale { stale_nan } else { self.count },
            sum: if stale { stale_nan } else { self.sum },
            positive_spans,
            positive_counts,
            negative_spans,
            negative_counts,
            is_gauge: false,
        }
    }

    /// Adds a later delta: both sides are brought to the coarser schema and the wider zero bucket
    /// first. A missing sum on either side makes the running sum NaN.
    pub(crate) fn add(&mut self, mut other: ExpHist) {
        if other.schema > self.schema {
            other.downscale((other.schema - self.schema) as u32);
        } else if self.schema > other.schema {
            self.downscale((self.schema - other.schema) as u32);
        }
        if other.zero_threshold > self.zero_threshold {
            self.widen_zero_bucket(other.zero_threshold);
        } else if self.zero_threshold > other.zero_threshold {
            other.widen_zero_bucket(self.zero_threshold);
        }
        self.zero_count += other.zero_count;
        self.count += other.count;
        self.sum += other.sum;
        self.positive = merge(&self.positive, &other.positive);
        self.negative = merge(&self.negative, &other.negative);
    }

    fn downscale(&mut self, by: u32) {
        self.schema -= by as i32;
        for buckets in [&mut self.positive, &mut self.negative] {
            let mut out: Vec<(i32, f64)> = Vec::with_capacity(buckets.len());
            for &(j, c) in buckets.iter() {
                let k = (((i64::from(j) - 1) >> by.min(63)) + 1) as i32;
                match out.last_mut() {
                    Some(last) if last.0 == k => last.1 += c,
                    _ => out.push((k, c)),
                }
            }
            *buckets = out;
        }
    }

    /// Moves every bucket lying entirely inside `[-threshold, threshold]` into the zero bucket.
    fn widen_zero_bucket(&mut self, threshold: f64) {
        let width = (-f64::from(self.schema)).exp2();
        let inside = |j: i32| (f64::from(j) * width).exp2() <= threshold;
        for buckets in [&mut self.positive, &mut self.negative] {
            let n = buckets.iter().take_while(|(j, _)| inside(*j)).count();
            self.zero_count += buckets.drain(..n).map(|(_, c)| c).sum::<f64>();
        }
        self.zero_threshold = threshold;
    }
}

/// OTLP dense buckets as sparse Prometheus buckets, merging `2^scale_down` neighbours; `None` when
/// an index is beyond [`MAX_INDEX`].
fn sparse(b: Option<&Buckets>, scale_down: u32) -> Option<Vec<(i32, f64)>> {
    let Some(b) = b else { return Some(Vec::new()) };
    let mut out: Vec<(i32, f64)> = Vec::new();
    for (i, &c) in b.bucket_counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let otlp_index = i64::from(b.offset) + i as i64;
        let j = (otlp_index >> scale_down.min(63)) + 1;
        if j.abs() > MAX_INDEX {
            return None;
        }
        let j = j as i32;
        match out.last_mut() {
            Some(last) if last.0 == j => last.1 += c as f64,
            _ => out.push((j, c as f64)),
        }
    }
    Some(out)
}

/// Sum of two sparse bucket lists.
fn merge(a: &[(i32, f64)], b: &[(i32, f64)]) -> Vec<(i32, f64)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut k) = (0, 0);
    while i < a.len() || k < b.len() {
        let next = match (a.get(i), b.get(k)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                i += 1;
                k += 1;
                (x.0, x.1 + y.1)
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                i += 1;
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                k += 1;
                *y
            }
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

/// Spans and absolute counts: a gap of up to two empty buckets is filled with zeros inside the
/// span, a longer one starts a new span. The first span's offset is the absolute index.
fn spans(buckets: &[(i32, f64)]) -> (Vec<BucketSpan>, Vec<f64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut counts = Vec::with_capacity(buckets.len());
    let mut prev: Option<i32> = None;
    for &(j, c) in buckets {
        match prev {
            None => spans.push(BucketSpan { offset: j, length: 1 }),
            Some(p) => {
                let gap = j - p - 1;
                match spans.last_mut() {
                    Some(span) if gap <= MAX_GAP_IN_SPAN => {
                        counts.extend(std::iter::repeat_n(0.0, gap as usize));
                        span.length += gap as u32 + 1;
                    }
                    _ => spans.push(BucketSpan { offset: gap, length: 1 }),
                }
            }
        }
        counts.push(c);
        prev = Some(j);
    }
    (spans, counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(scale: i32, offset: i32, counts: &[u64]) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            scale,
            count: counts.iter().sum(),
            sum: Some(10.0),
            positive: Some(Buckets { offset, bucket_counts: counts.to_vec() }),
            ..Default::default()
        }
    }

    #[test]
    fn index_shift_and_spans() {
        let h = ExpHist::from_otlp(&point(0, -1, &[1, 2, 0, 0, 3, 0, 0, 0, 4])).unwrap();
        let n = h.to_native(false);
        assert_eq!(n.schema, 0);
        // OTLP -1..=7 → Prometheus 0..=8; the gap of 2 stays in the span, the gap of 3 splits.
        assert_eq!(n.positive_spans, vec![BucketSpan { offset: 0, length: 5 }, BucketSpan { offset: 3, length: 1 }]);
        assert_eq!(n.positive_counts, vec![1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
        assert_eq!(n.zero_threshold, DEFAULT_ZERO_THRESHOLD);
        assert!(n.negative_spans.is_empty());
    }

    #[test]
    fn scale_above_eight_is_merged() {
        // Scale 10 → schema 8: groups of 4 OTLP buckets.
        let h = ExpHist::from_otlp(&point(10, 3, &[1, 1, 1, 1, 1, 1])).unwrap();
        let n = h.to_native(false);
        assert_eq!(n.schema, 8);
        // OTLP 3 → 0; 4..=7 → 1; 8 → 2; Prometheus adds one.
        assert_eq!(n.positive_spans, vec![BucketSpan { offset: 1, length: 3 }]);
        assert_eq!(n.positive_counts, vec![1.0, 4.0, 1.0]);
        // Negative offsets floor: OTLP -5..=-1 at scale 9 → -3,-2,-2,-1,-1 → Prometheus -2,-1,0.
        let h = ExpHist::from_otlp(&point(9, -5, &[1, 1, 1, 1, 1])).unwrap();
        let n = h.to_native(false);
        assert_eq!(n.positive_spans, vec![BucketSpan { offset: -2, length: 3 }]);
        assert_eq!(n.positive_counts, vec![1.0, 2.0, 2.0]);
    }

    #[test]
    fn refuses_coarse_scales_and_absurd_indexes() {
        assert!(ExpHist::from_otlp(&point(-5, 0, &[1])).is_err());
        assert!(ExpHist::from_otlp(&point(-4, 0, &[1])).is_ok());
        assert!(ExpHist::from_otlp(&point(0, i32::MIN, &[1])).is_err());
        assert!(ExpHist::from_otlp(&point(0, i32::MAX, &[1])).is_err());
        // Zero buckets at absurd indexes are not looked at.
        assert!(ExpHist::from_otlp(&point(0, i32::MAX - 1, &[0, 0])).is_ok());
    }

    #[test]
    fn deltas_add_at_the_coarser_schema() {
        let mut a = ExpHist::from_otlp(&point(1, 0, &[1, 1])).unwrap(); // Prometheus 1, 2 at schema 1
        let b = ExpHist::from_otlp(&point(0, 0, &[5])).unwrap(); // Prometheus 1 at schema 0
        a.add(b);
        let n = a.to_native(false);
        assert_eq!(n.schema, 0);
        // Schema 1 buckets 1 and 2 both fall into schema 0 bucket 1.
        assert_eq!(n.positive_spans, vec![BucketSpan { offset: 1, length: 1 }]);
        assert_eq!(n.positive_counts, vec![7.0]);
        assert_eq!(n.count, 7.0);
        assert_eq!(n.sum, 20.0);
    }

    #[test]
    fn wider_zero_bucket_absorbs_small_buckets() {
        let mut a = ExpHist::from_otlp(&point(0, -3, &[1, 1, 1, 1])).unwrap(); // upper bounds 1/4, 1/2, 1, 2
        let mut b = ExpHist::from_otlp(&point(0, 0, &[1])).unwrap();
        b.zero_threshold = 0.5;
        a.add(b);
        let n = a.to_native(false);
        assert_eq!(n.zero_threshold, 0.5);
        assert_eq!(n.zero_count, 2.0);
        assert_eq!(n.positive_spans, vec![BucketSpan { offset: 0, length: 2 }]);
        assert_eq!(n.positive_counts, vec![1.0, 2.0]);
    }

    #[test]
    fn stale_marks_count_and_sum() {
        let n = ExpHist::from_otlp(&point(0, 0, &[1])).unwrap().to_native(true);
        assert_eq!(n.count.to_bits(), STALE_NAN_BITS);
        assert_eq!(n.sum.to_bits(), STALE_NAN_BITS);
    }
}

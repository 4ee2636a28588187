//! Result values of PromQL queries and the float native histogram they carry.
//!
//! Invariant: a [`FloatHistogram`]'s buckets are absolute counts (not deltas), listed in span order;
//! bucket `i` of schema `s` covers `(2^((i-1)·2^-s), 2^(i·2^-s)]` (mirrored for negative buckets).

use std::collections::BTreeMap;

use storage::model::{BucketSpan, Labels, NativeHistogram};

/// A query result.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A single number.
    Scalar {
        /// Evaluation time (ms).
        t_ms: i64,
        /// The value.
        v: f64,
    },
    /// A string literal.
    String {
        /// Evaluation time (ms).
        t_ms: i64,
        /// The string.
        s: String,
    },
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector (or the result of a range query), sorted by labels for range queries.
    Matrix(Vec<Series>),
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Series labels.
    pub labels: Labels,
    /// Timestamp (ms): the evaluation time.
    pub t_ms: i64,
    /// The value.
    pub point: Point,
}

/// A float or a native histogram value.
#[derive(Clone, Debug, PartialEq)]
pub enum Point {
    /// A float.
    Float(f64),
    /// A native histogram.
    Histogram(FloatHistogram),
}

/// One series of a matrix: float points and histogram points, each in time order.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Series {
    /// Series labels.
    pub labels: Labels,
    /// Float points `(t_ms, value)`.
    pub floats: Vec<(i64, f64)>,
    /// Histogram points `(t_ms, histogram)`.
    pub histograms: Vec<(i64, FloatHistogram)>,
}

/// A native histogram with float counts, as PromQL computes with them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FloatHistogram {
    /// Resolution: bucket boundaries are powers of `2^(2^-schema)`.
    pub schema: i32,
    /// Half-width of the zero bucket.
    pub zero_threshold: f64,
    /// Observations in the zero bucket.
    pub zero_count: f64,
    /// Total observations.
    pub count: f64,
    /// Sum of observations.
    pub sum: f64,
    /// Spans of positive buckets.
    pub positive_spans: Vec<BucketSpan>,
    /// Absolute counts of positive buckets.
    pub positive_buckets: Vec<f64>,
    /// Spans of negative buckets.
    pub negative_spans: Vec<BucketSpan>,
    /// Absolute counts of negative buckets.
    pub negative_buckets: Vec<f64>,
}

/// One bucket of a histogram, with its bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub count: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
}

/// Upper boundary of positive bucket `idx` of `schema`.
pub(crate) fn bucket_bound(schema: i32, idx: i32) -> f64 {
    // Valid schemas are -4..=8; clamping keeps corrupt input from overflowing the shifts.
    let schema = schema.clamp(-30, 30);
    if schema <= 0 {
        let shift = (-schema) as u32;
        let exp = (i64::from(idx)) << shift.min(32);
        return ldexp(1.0, exp);
    }
    let per = 1i64 << schema;
    let idx = i64::from(idx);
    let frac = idx.rem_euclid(per);
    let whole = idx.div_euclid(per);
    let base = (frac as f64 / per as f64).exp2();
    ldexp(base, whole)
}

fn ldexp(x: f64, exp: i64) -> f64 {
    let exp = exp.clamp(-2000, 2000) as i32;
    // Split to stay inside powi's exact range for subnormal/huge results.
    if exp > 1000 {
        return x * 2f64.powi(1000) * 2f64.powi(exp - 1000);
    }
    if exp < -1000 {
        return x * 2f64.powi(-1000) * 2f64.powi(exp + 1000);
    }
    x * 2f64.powi(exp)
}

fn to_map(spans: &[BucketSpan], buckets: &[f64]) -> BTreeMap<i32, f64> {
    let mut out = BTreeMap::new();
    let mut idx = 0i32;
    let mut bi = 0usize;
    for (si, s) in spans.iter().enumerate() {
        idx = if si == 0 { s.offset } else { idx.saturating_add(s.offset) };
        for _ in 0..s.length {
            // Spans longer than the bucket list (corrupt input) end with the list.
            let Some(c) = buckets.get(bi) else { return out };
            *out.entry(idx).or_insert(0.0) += *c;
            bi += 1;
            idx = idx.saturating_add(1);
        }
    }
    out
}

fn from_map(m: &BTreeMap<i32, f64>) -> (Vec<BucketSpan>, Vec<f64>) {
    let mut spans: Vec<BucketSpan> = Vec::new();
    let mut buckets = Vec::new();
    let mut next: Option<i32> = None;
    for (&idx, &c) in m {
        if c == 0.0 {
            continue;
        }
        match next {
            Some(n) if n == idx => {
                if let Some(last) = spans.last_mut() {
                    last.length += 1;
                }
            }
            Some(n) => spans.push(BucketSpan { offset: idx.wrapping_sub(n), length: 1 }),
            None => spans.push(BucketSpan { offset: idx, length: 1 }),
        }
        buckets.push(c);
        next = idx.checked_add(1);
    }
    (spans, buckets)
}

impl FloatHistogram {
    /// Converts a stored native histogram.
    pub fn from_native(h: &NativeHistogram) -> FloatHistogram {
        FloatHistogram {
            schema: h.schema,
            zero_threshold: h.zero_threshold,
            zero_count: h.zero_count,
            count: h.count,
            sum: h.sum,
            positive_spans: h.positive_spans.clone(),
            positive_buckets: h.positive_counts.clone(),
            negative_spans: h.negative_spans.clone(),
            negative_buckets: h.negative_counts.clone(),
        }
    }

    /// Total observations.
    pub fn count(&self) -> f64 {
        self.count
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub(crate) fn positive(&self) -> BTreeMap<i32, f64> {
        to_map(&self.positive_spans, &self.positive_buckets)
    }

    pub(crate) fn negative(&self) -> BTreeMap<i32, f64> {
        to_map(&self.negative_spans, &self.negative_buckets)
    }

    fn set(&mut self, pos: &BTreeMap<i32, f64>, neg: &BTreeMap<i32, f64>) {
        (self.positive_spans, self.positive_buckets) = from_map(pos);
        (self.negative_spans, self.negative_buckets) = from_map(neg);
    }

    /// Every bucket with a count, lowest first: negative buckets, the zero bucket, positive buckets.
    pub(crate) fn all_buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::new();
        for (&idx, &c) in self.negative().iter().rev() {
            out.push(Bucket {
                lower: -bucket_bound(self.schema, idx),
                upper: -bucket_bound(self.schema, idx.saturating_sub(1)),
                count: c,
                lower_inclusive: true,
                upper_inclusive: false,
            });
        }
        if self.zero_count != 0.0 || self.zero_threshold != 0.0 {
            out.push(Bucket {
                lower: -self.zero_threshold,
                upper: self.zero_threshold,
                count: self.zero_count,
                lower_inclusive: true,
                upper_inclusive: true,
            });
        }
        for (&idx, &c) in self.positive().iter() {
            out.push(Bucket {
                lower: bucket_bound(self.schema, idx.saturating_sub(1)),
                upper: bucket_bound(self.schema, idx),
                count: c,
                lower_inclusive: false,
                upper_inclusive: true,
            });
        }
        out
    }

    /// Buckets as the Prometheus API prints them: `(boundary_rule, lower, upper, count)` with rule
    /// 0 = open left, 1 = open right, 2 = open both, 3 = closed both; empty buckets are left out.
    pub fn api_buckets(&self) -> Vec<(u8, f64, f64, f64)> {
        self.all_buckets()
            .into_iter()
            .filter(|b| b.count != 0.0)
            .map(|b| {
                let rule = match (b.lower_inclusive, b.upper_inclusive) {
                    (false, true) => 0,
                    (true, false) => 1,
                    (false, false) => 2,
                    (true, true) => 3,
                };
                (rule, b.lower, b.upper, b.count)
            })
            .collect()
    }

    /// The same histogram at a lower (coarser) or equal schema.
    pub(crate) fn to_schema(&self, schema: i32) -> FloatHistogram {
        if schema >= self.schema {
            return self.clone();
        }
        let delta = self.schema.saturating_sub(schema).clamp(0, 31) as u32;
        let merge = |m: BTreeMap<i32, f64>| {
            let mut out = BTreeMap::new();
            for (idx, c) in m {
                let t = (idx.saturating_sub(1) >> delta).saturating_add(1);
                *out.entry(t).or_insert(0.0) += c;
            }
            out
        };
        let mut h = self.clone();
        h.schema = schema;
        let (p, n) = (merge(self.positive()), merge(self.negative()));
        h.set(&p, &n);
        h
    }

    /// Widens the zero bucket to at least `threshold`, folding the buckets it now covers.
    fn widen_zero(&mut self, threshold: f64) {
        if threshold <= self.zero_threshold {
            return;
        }
        let mut t = threshold;
        let mut pos = self.positive();
        let mut neg = self.negative();
        loop {
            let mut changed = false;
            for m in [&mut pos, &mut neg] {
                let keys: Vec<i32> = m.keys().copied().collect();
                for idx in keys {
                    let lower = bucket_bound(self.schema, idx.saturating_sub(1));
                    let upper = bucket_bound(self.schema, idx);
                    if upper <= t {
                        self.zero_count += m.remove(&idx).unwrap_or(0.0);
                    } else if lower < t {
                        t = upper;
                        self.zero_count += m.remove(&idx).unwrap_or(0.0);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.zero_threshold = t;
        self.set(&pos, &neg);
    }

    /// Brings both histograms to a common schema and zero threshold.
    fn aligned(&self, other: &FloatHistogram) -> (FloatHistogram, FloatHistogram) {
        let schema = self.schema.min(other.schema);
        let mut a = self.to_schema(schema);
        let mut b = other.to_schema(schema);
        let zt = a.zero_threshold.max(b.zero_threshold);
        a.widen_zero(zt);
        b.widen_zero(a.zero_threshold.max(zt));
        a.widen_zero(b.zero_threshold);
        (a, b)
    }

    fn combine(&self, other: &FloatHistogram, sign: f64) -> FloatHistogram {
        let (mut a, b) = self.aligned(other);
        let mut pos = a.positive();
        for (k, v) in b.positive() {
            *pos.entry(k).or_insert(0.0) += sign * v;
        }
        let mut neg = a.negative();
        for (k, v) in b.negative() {
            *neg.entry(k).or_insert(0.0) += sign * v;
        }
        a.zero_count += sign * b.zero_count;
        a.count += sign * b.count;
        a.sum += sign * b.sum;
        a.set(&pos, &neg);
        a
    }

    /// `self + other`.
    pub(crate) fn add(&self, other: &FloatHistogram) -> FloatHistogram {
        self.combine(other, 1.0)
    }

    /// `self - other`.
    pub(crate) fn sub(&self, other: &FloatHistogram) -> FloatHistogram {
        self.combine(other, -1.0)
    }

    /// Every count and the sum multiplied by `f`.
    pub(crate) fn mul(&self, f: f64) -> FloatHistogram {
        let mut h = self.clone();
        h.zero_count *= f;
        h.count *= f;
        h.sum *= f;
        h.positive_buckets.iter_mut().for_each(|c| *c *= f);
        h.negative_buckets.iter_mut().for_each(|c| *c *= f);
        h
    }

    /// Every count and the sum divided by `f`.
    pub(crate) fn div(&self, f: f64) -> FloatHistogram {
        let mut h = self.clone();
        h.zero_count /= f;
        h.count /= f;
        h.sum /= f;
        h.positive_buckets.iter_mut().for_each(|c| *c /= f);
        h.negative_buckets.iter_mut().for_each(|c| *c /= f);
        h
    }

    /// True when going from `prev` to `self` implies a counter reset.
    pub(crate) fn detect_reset(&self, prev: &FloatHistogram) -> bool {
        if self.count < prev.count || self.schema > prev.schema || self.zero_threshold < prev.zero_threshold {
            return true;
        }
        let mut p = prev.to_schema(self.schema);
        p.widen_zero(self.zero_threshold);
        if p.zero_threshold != self.zero_threshold || self.zero_count < p.zero_count {
            return true;
        }
        let (cp, cn) = (self.positive(), self.negative());
        let dec = |old: BTreeMap<i32, f64>, new: &BTreeMap<i32, f64>| {
            old.into_iter().any(|(k, v)| v > 0.0 && new.get(&k).copied().unwrap_or(0.0) < v)
        };
        dec(p.positive(), &cp) || dec(p.negative(), &cn)
    }
}

//! Histogram math: `histogram_quantile` over classic `le` buckets (with Prometheus' coalescing and
//! monotonicity fixes) and over native histograms, and `histogram_fraction`.

use super::value::FloatHistogram;

/// Quantile `q` of classic buckets `(upper_bound, cumulative_count)`.
pub(crate) fn bucket_quantile(q: f64, mut buckets: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.0 == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    // Coalesce buckets with the same upper bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for b in buckets {
        match merged.last_mut() {
            Some(last) if last.0 == b.0 => last.1 += b.1,
            _ => merged.push(b),
        }
    }
    // Cumulative counts must not decrease.
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    let n = merged.len();
    if n < 2 {
        return f64::NAN;
    }
    let observations = merged[n - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = merged[..n - 1].partition_point(|x| x.1 < rank);
    if b == n - 1 {
        return merged[n - 2].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let bucket_end = merged[b].0;
    let mut count = merged[b].1;
    let mut bucket_start = 0.0;
    if b > 0 {
        bucket_start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Adjusts the zero bucket's bounds when the histogram has buckets on one side only.
fn zero_bucket_bounds(h: &FloatHistogram, lower: &mut f64, upper: &mut f64) {
    if *lower < 0.0 && *upper > 0.0 {
        let (neg, pos) = (h.negative_buckets.is_empty(), h.positive_buckets.is_empty());
        if neg && !pos {
            *lower = 0.0;
        } else if pos && !neg {
            *upper = 0.0;
        }
    }
}

/// Quantile `q` of a native histogram (linear interpolation inside the bucket, as Prometheus 2.x).
pub(crate) fn native_quantile(q: f64, h: &FloatHistogram) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    if h.count == 0.0 || q.is_nan() {
        return f64::NAN;
    }
    let buckets = h.all_buckets();
    let rank_total = q * h.count;
    let mut count = 0.0;
    let mut chosen = None;
    for b in &buckets {
        count += b.count;
        chosen = Some(*b);
        if count >= rank_total {
            break;
        }
    }
    let Some(mut b) = chosen else { return f64::NAN };
    zero_bucket_bounds(h, &mut b.lower, &mut b.upper);
    if count > h.count {
        count = h.count;
    }
    if count < rank_total {
        return b.upper;
    }
    let rank = rank_total - (count - b.count);
    b.lower + (b.upper - b.lower) * (rank / b.count)
}

/// Estimated fraction of observations between `lower` and `upper`.
pub(crate) fn native_fraction(lower: f64, upper: f64, h: &FloatHistogram) -> f64 {
    if h.count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    for mut b in h.all_buckets() {
        zero_bucket_bounds(h, &mut b.lower, &mut b.upper);
        if !lower_set && b.lower >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && b.lower >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && b.lower < lower && b.upper > lower {
            lower_rank = rank + b.count * (lower - b.lower) / (b.upper - b.lower);
            lower_set = true;
        }
        if !upper_set && b.lower < upper && b.upper > upper {
            upper_rank = rank + b.count * (upper - b.lower) / (b.upper - b.lower);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank += b.count;
    }
    if !lower_set || lower_rank > h.count {
        lower_rank = h.count;
    }
    if !upper_set || upper_rank > h.count {
        upper_rank = h.count;
    }
    (upper_rank - lower_rank) / h.count
}

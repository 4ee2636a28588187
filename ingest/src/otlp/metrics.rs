//! OTLP metrics → `MetricsBatch`, following Prometheus' OTLP receiver.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::MutexGuard;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue as PKeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, Exemplar as PExemplar, ExponentialHistogramDataPoint, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, SummaryDataPoint, exemplar, metric::Data, number_data_point,
};
use storage::model::{
    Exemplar, FloatSample, HistogramSample, Labels, MetricMetadata, MetricType, MetricsBatch, STALE_NAN_BITS, SpanId,
    TimeSeries, TraceId,
};

use super::attrs::check_attributes;
use super::hash::BatchedState;
use super::metrics_histogram::ExpHist;
use super::metrics_state::{ClassicHist, MetricsState, StateInner};
use super::naming::{NameType, format_float, label_name, label_value, metric_name, unit_name};
use super::{Limits, Mapped, Reject, RejectReason, Tally, check_time, ns_i64, quoted};

const SERVICE_NAME: &str = "service.name";
const SERVICE_NAMESPACE: &str = "service.namespace";
const SERVICE_INSTANCE_ID: &str = "service.instance.id";
const TARGET_INFO: &str = "target_info";
/// Upstream keeps exemplar filtered attributes only while all exemplar labels stay within this
/// many characters (OpenMetrics' exemplar limit).
const MAX_EXEMPLAR_RUNES: usize = 128;

/// Maps an OTLP metrics request the way Prometheus' OTLP receiver does with its default settings
/// (`UnderscoreEscapingWithSuffixes`, target_info on, no promoted resource or scope attributes),
/// converting delta temporality to cumulative through `state`.
///
/// - Names: see `naming::metric_name` (unit suffixes, `_total` on monotonic sums, `_ratio` on
///   gauges with unit `1`). Labels: data point attributes sanitised (`http.method` →
///   `http_method`, `1x` → `key_1x`, `_x` → `key_x`); attributes colliding after sanitising are
///   joined with `;` in the order of their original keys. `job` = `service.namespace/service.name`
///   (or `service.name`), `instance` = `service.instance.id`; these override attributes of the
///   same name.
/// - target_info: one gauge sample, value 1, per resource that has attributes other than the three
///   above and a job or instance, at the latest accepted data point time of that resource.
/// - Gauge → gauge; monotonic sum → counter; non-monotonic sum → gauge; histogram → `_bucket`
///   (cumulative, `le`), `_sum` (when present), `_count`; summary → `{quantile}`, `_sum`,
///   `_count`; exponential histogram → one native histogram series.
/// - Delta sums (monotonic or not), delta histograms and delta exponential histograms become
///   cumulative through [`MetricsState`]; their metadata type is therefore counter/gauge/histogram.
/// - Flag NO_RECORDED_VALUE → staleness markers. Timestamps: ns → ms (integer division).
/// - Exemplars: `trace_id`/`span_id` (lower hex, when valid) plus sanitised filtered attributes
///   (dropped when all labels would exceed 128 characters); on the series for sums, gauges and
///   exponential histograms, on the `_bucket` series with the smallest `le` ≥ the value for
///   histograms. An exemplar without a time takes its data point's.
/// - Identical series from several points are merged, samples sorted by time (the last sample
///   wins on equal times).
///
/// Deliberate differences from upstream: exemplars are kept on gauges (upstream drops them);
/// target_info gets one sample per resource and request, not one per 2.5 minutes between the
/// earliest and latest point; a data point without a value, time or usable label is rejected
/// instead of stored as 0 or failing the rest of its metric; an exponential histogram without a
/// sum gets NaN (upstream 0) and keeps the sender's zero threshold when it has one (upstream
/// always 1e-128); deltas are accumulated (upstream stores them as they come, typed unknown).
pub fn metrics(
    req: ExportMetricsServiceRequest,
    state: &MetricsState,
    limits: &Limits,
    now_ns: i64,
) -> Mapped<MetricsBatch> {
    // Most points make one series: size the series table once instead of growing it.
    let points: u64 =
        req.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).map(point_count).sum();
    // Capped: points of one series merge, and a huge guess would be memory held for nothing.
    let capacity = usize::try_from(points).unwrap_or(usize::MAX).min(1 << 16);
    let mut cx = Cx {
        limits,
        now_ns,
        state,
        guard: None,
        tally: Tally::new(("data point", "data points")),
        series: Vec::with_capacity(capacity),
        index: HashMap::with_capacity(capacity),
        overflow: Vec::new(),
        hasher: BatchedState::default(),
        metadata: Vec::new(),
        families: HashSet::new(),
        latest_ms: None,
    };
    for rm in req.resource_metrics {
        cx.resource(rm);
    }
    cx.finish()
}

/// `job` and `instance` derived from one resource.
struct ResourceLabels {
    job: String,
    instance: String,
}

impl ResourceLabels {
    fn new(attrs: &[PKeyValue]) -> Self {
        let get = |key: &str| attrs.iter().find(|kv| kv.key == key).map(|kv| label_value(kv.value.clone()));
        let job = match (get(SERVICE_NAME), get(SERVICE_NAMESPACE)) {
            (Some(name), Some(ns)) => format!("{ns}/{name}"),
            (Some(name), None) => name,
            (None, _) => String::new(),
        };
        ResourceLabels { job, instance: get(SERVICE_INSTANCE_ID).unwrap_or_default() }
    }
}

/// One metric family being translated.
struct Family {
    name: String,
    /// Taken (and recorded) when the first data point is accepted.
    metadata: Option<MetricMetadata>,
    delta: bool,
    /// `_sum`, `_count` and `_bucket` names, for histograms and summaries (empty otherwise).
    sum_name: String,
    count_name: String,
    bucket_name: String,
    /// The `le` values of the last bucket layout seen in this metric: points of one metric
    /// nearly always share it, and formatting floats is costly.
    le_cache: (Vec<f64>, Vec<String>),
}

impl Family {
    /// Makes `le_cache.1` hold the `le` values of these bounds.
    fn cache_le_values(&mut self, bounds: &[f64]) {
        if self.le_cache.0 != bounds {
            self.le_cache = (bounds.to_vec(), bounds.iter().map(|b| format_float(*b)).collect());
        }
    }
}

enum NumberKind {
    Gauge,
    Sum,
}

struct Cx<'a> {
    limits: &'a Limits,
    now_ns: i64,
    state: &'a MetricsState,
    /// Taken at the first delta point and held to the end of the request.
    guard: Option<MutexGuard<'a, StateInner>>,
    tally: Tally,
    series: Vec<TimeSeries>,
    /// Series by label hash; series whose hash collides with another label set go to `overflow`.
    index: HashMap<u64, usize>,
    overflow: Vec<usize>,
    hasher: BatchedState,
    metadata: Vec<MetricMetadata>,
    families: HashSet<String>,
    /// Latest accepted data point time of the current resource, ms.
    latest_ms: Option<i64>,
}

fn point_count(m: &Metric) -> u64 {
    (match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(e)) => e.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}

fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

fn is_stale(flags: u32) -> bool {
    flags & DataPointFlags::NoRecordedValueMask as u32 != 0
}

/// A point's labels without `__name__`: sorted by name, unique, no empty values.
type BaseLabels = Vec<(String, String)>;

fn has_label(base: &BaseLabels, name: &str) -> bool {
    base.binary_search_by(|(n, _)| n.as_str().cmp(name)).is_ok()
}

/// Inserts or replaces a label, keeping `labels` sorted so that `Labels::from_pairs` has nothing
/// to reorder.
fn put_label(labels: &mut BaseLabels, name: &str, value: String) {
    match labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => labels[i].1 = value,
        Err(i) => labels.insert(i, (name.to_owned(), value)),
    }
}

/// The only series of a point: the base labels are moved, not copied.
fn single_series(mut base: BaseLabels, name: &str) -> Labels {
    put_label(&mut base, "__name__", name.to_owned());
    Labels::from_pairs(base)
}

/// One of several series of a point (`_sum`, `_bucket{le}`, `{quantile}`, …). `extra` replaces an
/// attribute of the same name, as upstream.
fn series_labels(base: &BaseLabels, name: &str, extra: Option<(&str, String)>) -> Labels {
    let mut labels = Vec::with_capacity(base.len() + 2);
    labels.extend_from_slice(base);
    put_label(&mut labels, "__name__", name.to_owned());
    if let Some((k, v)) = extra {
        put_label(&mut labels, k, v);
    }
    Labels::from_pairs(labels)
}

impl<'a> Cx<'a> {
    fn resource(&mut self, rm: ResourceMetrics) {
        let attrs = rm.resource.map(|r| r.attributes).unwrap_or_default();
        if let Err(e) = check_attributes(&attrs, self.limits, "resource key") {
            let n = rm.scope_metrics.iter().flat_map(|s| &s.metrics).map(point_count).sum();
            self.tally.reject(e, n);
            return;
        }
        let res = ResourceLabels::new(&attrs);
        self.latest_ms = None;
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                self.metric(m, &res);
            }
        }
        if let Some(ts) = self.latest_ms {
            self.target_info(attrs, &res, ts);
        }
    }

    fn metric(&mut self, m: Metric, res: &ResourceLabels) {
        let n = point_count(&m);
        let Some(data) = m.data else { return };
        if n == 0 {
            return;
        }
        let (ty, temporality) = match &data {
            Data::Gauge(_) => (NameType::Gauge, None),
            Data::Sum(s) if s.is_monotonic => (NameType::MonotonicCounter, Some(s.aggregation_temporality)),
            Data::Sum(s) => (NameType::NonMonotonicCounter, Some(s.aggregation_temporality)),
            Data::Histogram(h) => (NameType::Histogram, Some(h.aggregation_temporality)),
            Data::ExponentialHistogram(e) => (NameType::ExponentialHistogram, Some(e.aggregation_temporality)),
            Data::Summary(_) => (NameType::Summary, None),
        };
        let name = metric_name(&m.name, &m.unit, ty);
        if name.is_empty() {
            let detail = format!("{}: no usable name", quoted("metric", &m.name));
            self.tally.reject(Reject::with(RejectReason::InvalidMetric, detail), n);
            return;
        }
        let delta = match temporality {
            None => false,
            Some(t) if t == AggregationTemporality::Cumulative as i32 => false,
            Some(t) if t == AggregationTemporality::Delta as i32 => true,
            Some(t) => {
                let detail = format!("{}: aggregation temporality {t}", quoted("metric", &m.name));
                self.tally.reject(Reject::with(RejectReason::InvalidMetric, detail), n);
                return;
            }
        };
        let metric_type = match ty {
            NameType::Gauge | NameType::NonMonotonicCounter => MetricType::Gauge,
            NameType::MonotonicCounter => MetricType::Counter,
            NameType::Histogram | NameType::ExponentialHistogram => MetricType::Histogram,
            NameType::Summary => MetricType::Summary,
        };
        let mut fam = Family {
            metadata: Some(MetricMetadata {
                metric_family: name.clone(),
                metric_type,
                help: m.description,
                unit: unit_name(&m.unit),
            }),
            sum_name: String::new(),
            count_name: String::new(),
            bucket_name: String::new(),
            le_cache: (Vec::new(), Vec::new()),
            name,
            delta,
        };
        if matches!(ty, NameType::Histogram | NameType::Summary) {
            fam.sum_name = format!("{}_sum", fam.name);
            fam.count_name = format!("{}_count", fam.name);
            fam.bucket_name = format!("{}_bucket", fam.name);
        }
        match data {
            Data::Gauge(g) => {
                for p in g.data_points {
                    self.number(p, &mut fam, res, NumberKind::Gauge);
                }
            }
            Data::Sum(s) => {
                for p in s.data_points {
                    self.number(p, &mut fam, res, NumberKind::Sum);
                }
            }
            Data::Histogram(h) => {
                for p in h.data_points {
                    self.histogram(p, &mut fam, res);
                }
            }
            Data::ExponentialHistogram(e) => {
                for p in e.data_points {
                    self.exp_histogram(p, &mut fam, res);
                }
            }
            Data::Summary(s) => {
                for p in s.data_points {
                    self.summary(p, &mut fam, res);
                }
            }
        }
    }

    /// Validates what every data point shares and builds its labels (without `__name__`):
    /// returns the time in ns. `longest_name` is the longest series name the point generates and
    /// `extra` the label it adds (`le`, `quantile`).
    fn prelude(
        &self,
        fam: &Family,
        time_unix_nano: u64,
        attrs: Vec<PKeyValue>,
        res: &ResourceLabels,
        longest_name: usize,
        extra: Option<&str>,
    ) -> Result<(i64, BaseLabels), Reject> {
        if time_unix_nano == 0 {
            let detail = format!("{}: data point without a time", quoted("metric", &fam.name));
            return Err(Reject::with(RejectReason::InvalidMetric, detail));
        }
        let ts = ns_i64(time_unix_nano);
        check_time(ts, self.limits, self.now_ns).map_err(Reject::new)?;
        check_attributes(&attrs, self.limits, "key")?;
        let labels = build_labels(attrs, res)?;
        self.check_labels(&labels, longest_name, extra)?;
        Ok((ts, labels))
    }

    fn check_labels(&self, labels: &BaseLabels, longest_name: usize, extra: Option<&str>) -> Result<(), Reject> {
        let l = self.limits;
        let n = labels.len() + 1 + usize::from(extra.is_some_and(|e| !has_label(labels, e)));
        if n > l.max_labels_per_series {
            return Err(Reject::with(RejectReason::TooManyLabels, format!("{n} labels")));
        }
        if longest_name > l.max_label_value_bytes {
            return Err(Reject::with(RejectReason::LabelTooLong, quoted("label", "__name__")));
        }
        for (name, value) in labels {
            if name.len() > l.max_label_name_bytes || value.len() > l.max_label_value_bytes {
                return Err(Reject::with(RejectReason::LabelTooLong, quoted("label", name)));
            }
        }
        Ok(())
    }

    fn state(&mut self) -> &mut StateInner {
        self.guard.get_or_insert_with(|| self.state.lock())
    }

    /// Counts an accepted data point; records its family's metadata on the first one.
    fn accept(&mut self, fam: &mut Family, ts_ms: i64) {
        self.tally.accept(1);
        self.latest_ms = Some(self.latest_ms.map_or(ts_ms, |t| t.max(ts_ms)));
        if let Some(m) = fam.metadata.take()
            && self.families.insert(m.metric_family.clone())
        {
            self.metadata.push(m);
        }
    }

    fn number(&mut self, p: NumberDataPoint, fam: &mut Family, res: &ResourceLabels, kind: NumberKind) {
        let stale = is_stale(p.flags);
        let value = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            // A point flagged "no recorded value" usually carries none.
            None if stale => stale_nan(),
            None => {
                let detail = format!("{}: data point without a value", quoted("metric", &fam.name));
                self.tally.reject(Reject::with(RejectReason::InvalidMetric, detail), 1);
                return;
            }
        };
        let (ts, base) = match self.prelude(fam, p.time_unix_nano, p.attributes, res, fam.name.len(), None) {
            Ok(x) => x,
            Err(e) => return self.tally.reject(e, 1),
        };
        let labels = single_series(base, &fam.name);
        let value = match kind {
            NumberKind::Sum if fam.delta && stale => {
                self.state().forget_sum(&labels);
                stale_nan()
            }
            NumberKind::Sum if fam.delta => {
                let now = self.now_ns;
                match self.state().add_sum(&labels, ts, now, value) {
                    Ok(total) => total,
                    Err(r) => return self.tally.reject(Reject::new(r), 1),
                }
            }
            _ if stale => stale_nan(),
            _ => value,
        };
        let ts_ms = ts / 1_000_000;
        self.accept(fam, ts_ms);
        let exemplars = exemplars(p.exemplars, ts_ms);
        let s = self.series_mut(labels);
        s.samples.push(FloatSample { timestamp_ms: ts_ms, value });
        s.exemplars.extend(exemplars);
    }

    fn histogram(&mut self, p: HistogramDataPoint, fam: &mut Family, res: &ResourceLabels) {
        let longest = fam.name.len() + "_bucket".len();
        let (ts, base) = match self.prelude(fam, p.time_unix_nano, p.attributes, res, longest, Some("le")) {
            Ok(x) => x,
            Err(e) => return self.tally.reject(e, 1),
        };
        let stale = is_stale(p.flags);
        let mut h = ClassicHist {
            buckets: p.bucket_counts.iter().map(|&c| c as f64).collect(),
            bounds: p.explicit_bounds,
            count: p.count as f64,
            sum: p.sum,
        };
        if fam.delta {
            let key = series_labels(&base, &fam.name, None);
            if stale {
                self.state().forget_histogram(&key);
            } else {
                let now = self.now_ns;
                match self.state().add_histogram(&key, ts, now, h) {
                    Ok(total) => h = total,
                    Err(r) => return self.tally.reject(Reject::new(r), 1),
                }
            }
        }
        let ts_ms = ts / 1_000_000;
        self.accept(fam, ts_ms);
        let or_stale = |v: f64| if stale { stale_nan() } else { v };
        if let Some(sum) = h.sum {
            self.push(series_labels(&base, &fam.sum_name, None), ts_ms, or_stale(sum));
        }
        self.push(series_labels(&base, &fam.count_name, None), ts_ms, or_stale(h.count));

        let mut exemplars = exemplars(p.exemplars, ts_ms).into_iter().peekable();
        let mut cumulative = 0.0;
        let n = h.bounds.len().min(h.buckets.len());
        fam.cache_le_values(&h.bounds[..n]);
        for (i, (bound, count)) in h.bounds.iter().zip(&h.buckets).enumerate() {
            cumulative += count;
            let le = Some(("le", fam.le_cache.1[i].clone()));
            let labels = series_labels(&base, &fam.bucket_name, le);
            let s = self.series_mut(labels);
            s.samples.push(FloatSample { timestamp_ms: ts_ms, value: or_stale(cumulative) });
            // Exemplars are sorted by value, so each goes to the first bucket whose bound holds it.
            // Written as "not above" on purpose: a NaN exemplar lands in the first bucket.
            #[allow(clippy::neg_cmp_op_on_partial_ord)]
            while let Some(e) = exemplars.next_if(|e| !(e.value > *bound)) {
                s.exemplars.push(e);
            }
        }
        let labels = series_labels(&base, &fam.bucket_name, Some(("le", "+Inf".into())));
        let s = self.series_mut(labels);
        s.samples.push(FloatSample { timestamp_ms: ts_ms, value: or_stale(h.count) });
        s.exemplars.extend(exemplars);
    }

    fn summary(&mut self, p: SummaryDataPoint, fam: &mut Family, res: &ResourceLabels) {
        let longest = fam.name.len() + "_count".len();
        let (ts, base) = match self.prelude(fam, p.time_unix_nano, p.attributes, res, longest, Some("quantile")) {
            Ok(x) => x,
            Err(e) => return self.tally.reject(e, 1),
        };
        let ts_ms = ts / 1_000_000;
        self.accept(fam, ts_ms);
        let stale = is_stale(p.flags);
        let or_stale = |v: f64| if stale { stale_nan() } else { v };
        let name = &fam.name;
        self.push(series_labels(&base, &fam.sum_name, None), ts_ms, or_stale(p.sum));
        self.push(series_labels(&base, &fam.count_name, None), ts_ms, or_stale(p.count as f64));
        for q in p.quantile_values {
            let quantile = Some(("quantile", format_float(q.quantile)));
            let labels = series_labels(&base, name, quantile);
            self.push(labels, ts_ms, or_stale(q.value));
        }
    }

    fn exp_histogram(&mut self, p: ExponentialHistogramDataPoint, fam: &mut Family, res: &ResourceLabels) {
        let mut h = match ExpHist::from_otlp(&p) {
            Ok(h) => h,
            Err(detail) => {
                let detail = format!("{}: {detail}", quoted("metric", &fam.name));
                return self.tally.reject(Reject::with(RejectReason::InvalidMetric, detail), 1);
            }
        };
        let (ts, base) = match self.prelude(fam, p.time_unix_nano, p.attributes, res, fam.name.len(), None) {
            Ok(x) => x,
            Err(e) => return self.tally.reject(e, 1),
        };
        let labels = single_series(base, &fam.name);
        let stale = is_stale(p.flags);
        if fam.delta {
            if stale {
                self.state().forget_exp_histogram(&labels);
            } else {
                let now = self.now_ns;
                match self.state().add_exp_histogram(&labels, ts, now, h) {
                    Ok(total) => h = total,
                    Err(r) => return self.tally.reject(Reject::new(r), 1),
                }
            }
        }
        let ts_ms = ts / 1_000_000;
        self.accept(fam, ts_ms);
        let exemplars = exemplars(p.exemplars, ts_ms);
        let s = self.series_mut(labels);
        s.histograms.push(HistogramSample { timestamp_ms: ts_ms, histogram: h.to_native(stale) });
        s.exemplars.extend(exemplars);
    }

    /// The target_info series of a resource, skipped (silently: it is not a data point) when its
    /// labels cannot be built within the limits.
    fn target_info(&mut self, attrs: Vec<PKeyValue>, res: &ResourceLabels, ts_ms: i64) {
        let identifying = [SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID];
        let attrs: Vec<PKeyValue> = attrs.into_iter().filter(|kv| !identifying.contains(&kv.key.as_str())).collect();
        if attrs.is_empty() {
            return;
        }
        let Ok(labels) = build_labels(attrs, res) else {
            return;
        };
        if !has_label(&labels, "job") && !has_label(&labels, "instance") {
            return;
        }
        if self.check_labels(&labels, TARGET_INFO.len(), None).is_err() {
            return;
        }
        if self.families.insert(TARGET_INFO.to_string()) {
            self.metadata.push(MetricMetadata {
                metric_family: TARGET_INFO.into(),
                metric_type: MetricType::Gauge,
                help: "Target metadata".into(),
                unit: String::new(),
            });
        }
        self.push(single_series(labels, TARGET_INFO), ts_ms, 1.0);
    }

    fn push(&mut self, labels: Labels, ts_ms: i64, value: f64) {
        self.series_mut(labels).samples.push(FloatSample { timestamp_ms: ts_ms, value });
    }

    /// The series with these labels, created on first use (in order of appearance).
    fn series_mut(&mut self, labels: Labels) -> &mut TimeSeries {
        let h = self.hasher.hash_one(&labels);
        let found = match self.index.get(&h) {
            Some(&i) if self.series[i].labels == labels => Some(i),
            Some(_) => self.overflow.iter().copied().find(|&i| self.series[i].labels == labels),
            None => None,
        };
        let i = match found {
            Some(i) => i,
            None => {
                let i = self.series.len();
                if let std::collections::hash_map::Entry::Vacant(slot) = self.index.entry(h) {
                    slot.insert(i);
                } else {
                    self.overflow.push(i);
                }
                self.series.push(TimeSeries { labels, ..TimeSeries::default() });
                i
            }
        };
        &mut self.series[i]
    }

    fn finish(self) -> Mapped<MetricsBatch> {
        let mut series = self.series;
        for s in &mut series {
            sort_dedup_last(&mut s.samples, |x| x.timestamp_ms);
            sort_dedup_last(&mut s.histograms, |x| x.timestamp_ms);
            if !s.exemplars.is_sorted_by_key(|e| e.timestamp_ms) {
                s.exemplars.sort_by_key(|e| e.timestamp_ms);
            }
        }
        let batch = MetricsBatch { series, metadata: self.metadata };
        self.tally.finish(batch, self.limits)
    }
}

/// Sorts by time (stably) and keeps the last of several values at the same time.
fn sort_dedup_last<T>(v: &mut Vec<T>, key: impl Fn(&T) -> i64) {
    if v.windows(2).all(|w| key(&w[0]) < key(&w[1])) {
        return;
    }
    v.sort_by_key(&key);
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        match out.last_mut() {
            Some(last) if key(last) == key(&x) => *last = x,
            _ => out.push(x),
        }
    }
    *v = out;
}

/// Data point (or resource) attributes → base labels, plus `job` and `instance`.
///
/// Upstream (`createAttributes`): attributes sorted by original key, names sanitised, a name
/// already taken gets `existing;new` (an empty existing value is simply replaced), then job and
/// instance are set over whatever is there. `__name__` attributes are ignored; empty values are
/// dropped (an empty label is an absent one).
fn build_labels(attrs: Vec<PKeyValue>, res: &ResourceLabels) -> Result<BaseLabels, Reject> {
    let mut pairs: BaseLabels = Vec::with_capacity(attrs.len() + 3);
    for kv in attrs {
        if kv.key != "__name__" {
            pairs.push((kv.key, label_value(kv.value)));
        }
    }
    if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    for p in &mut pairs {
        p.0 = label_name(std::mem::take(&mut p.0))
            .map_err(|key| Reject::with(RejectReason::InvalidLabelName, quoted("key", &key)))?;
    }
    // Sanitising can reorder names and make them collide; a stable sort keeps colliding values in
    // original-key order for the join.
    if !pairs.is_sorted_by(|a, b| a.0 <= b.0) {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
    }
    pairs.dedup_by(|next, kept| {
        if next.0 != kept.0 {
            return false;
        }
        if kept.1.is_empty() {
            kept.1 = std::mem::take(&mut next.1);
        } else {
            kept.1.push(';');
            kept.1.push_str(&next.1);
        }
        true
    });
    for (name, value) in [("job", &res.job), ("instance", &res.instance)] {
        if !value.is_empty() {
            put_label(&mut pairs, name, value.clone());
        }
    }
    pairs.retain(|(_, v)| !v.is_empty());
    Ok(pairs)
}

fn exemplars(exs: Vec<PExemplar>, point_ts_ms: i64) -> Vec<Exemplar> {
    let mut out: Vec<Exemplar> = Vec::with_capacity(exs.len());
    for ex in exs {
        let value = match ex.value {
            Some(exemplar::Value::AsDouble(d)) => d,
            Some(exemplar::Value::AsInt(i)) => i as f64,
            None => continue,
        };
        let timestamp_ms = match ex.time_unix_nano {
            0 => point_ts_ms,
            t => ns_i64(t) / 1_000_000,
        };
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(2 + ex.filtered_attributes.len());
        let mut runes = 0;
        if let Some(t) = TraceId::from_slice(&ex.trace_id) {
            runes += "trace_id".len() + 32;
            pairs.push(("trace_id".into(), t.to_hex()));
        }
        if let Some(s) = SpanId::from_slice(&ex.span_id) {
            runes += "span_id".len() + 16;
            pairs.push(("span_id".into(), s.to_hex()));
        }
        let attrs: Vec<(String, String)> =
            ex.filtered_attributes.into_iter().map(|kv| (kv.key, label_value(kv.value))).collect();
        runes += attrs.iter().map(|(k, v)| k.chars().count() + v.chars().count()).sum::<usize>();
        if runes <= MAX_EXEMPLAR_RUNES {
            pairs.extend(attrs.into_iter().filter_map(|(k, v)| Some((label_name(k).ok()?, v))));
        }
        out.push(Exemplar { labels: Labels::from_pairs(pairs), value, timestamp_ms });
    }
    // Histogram buckets take exemplars in value order.
    if !out.is_sorted_by(|a, b| a.value <= b.value) {
        out.sort_by(|a, b| a.value.total_cmp(&b.value));
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};

    use super::*;

    fn kv(k: &str, v: &str) -> PKeyValue {
        PKeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            key_strindex: 0,
        }
    }

    fn exemplar(attrs: Vec<PKeyValue>, value: f64) -> PExemplar {
        PExemplar {
            filtered_attributes: attrs,
            time_unix_nano: 0,
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            value: Some(exemplar::Value::AsDouble(value)),
        }
    }

    #[test]
    fn exemplar_attributes_are_dropped_past_128_characters() {
        // The ids take 8 + 32 + 7 + 16 = 63 characters; 65 more still fit.
        let fits = exemplars(vec![exemplar(vec![kv("k", &"v".repeat(64))], 1.0)], 7);
        assert_eq!(fits[0].labels.get("k").map(str::len), Some(64));
        assert_eq!(fits[0].labels.get("span_id"), Some("0101010101010101"));
        assert_eq!(fits[0].timestamp_ms, 7, "no exemplar time: the point's");
        let over = exemplars(vec![exemplar(vec![kv("k", &"v".repeat(65))], 1.0)], 7);
        assert_eq!(over[0].labels.get("k"), None);
        assert_eq!(over[0].labels.get("trace_id"), Some("02020202020202020202020202020202"));
    }

    #[test]
    fn exemplars_come_sorted_by_value_and_keys_sanitised() {
        let out = exemplars(vec![exemplar(vec![kv("http.route", "/a")], 5.0), exemplar(vec![], 1.0)], 0);
        assert_eq!(out.iter().map(|e| e.value).collect::<Vec<_>>(), vec![1.0, 5.0]);
        assert_eq!(out[1].labels.get("http_route"), Some("/a"));
    }

    #[test]
    fn colliding_attributes_join_in_key_order_and_job_wins() {
        let res = ResourceLabels { job: "ns/svc".into(), instance: String::new() };
        let labels = build_labels(vec![kv("a_b", "2"), kv("job", "mine"), kv("a.b", "1"), kv("a-b", "0")], &res)
            .unwrap_or_else(|e| panic!("{}", e.detail));
        assert_eq!(labels, vec![("a_b".to_string(), "0;1;2".to_string()), ("job".into(), "ns/svc".into())]);
        let err = build_labels(vec![kv("..", "x")], &res).err().map(|e| e.reason);
        assert_eq!(err, Some(RejectReason::InvalidLabelName));
    }
}

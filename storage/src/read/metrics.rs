//! Read access to metrics. Implemented by the metrics engine (`crate::metrics`).

use std::fmt;

use crate::model::{FloatSample, HistogramSample, Labels, MetricMetadata, TimeSeries};

/// How a [`Matcher`] compares a label's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (fully anchored, as in Prometheus)
    Regex,
    /// `!~` (fully anchored)
    NotRegex,
}

/// A label matcher as PromQL and the Prometheus API use it. A missing label has the value `""`,
/// so `{a=""}` matches series without `a` and `{a=~".*"}` matches every series.
#[derive(Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
    /// The value or the regular expression's source.
    pub value: String,
    /// The anchored regex for `Regex`/`NotRegex`.
    re: Option<regex::Regex>,
}

impl Matcher {
    /// A matcher; fails only for a regex that does not compile.
    pub fn new(name: impl Into<String>, op: MatchOp, value: impl Into<String>) -> Result<Matcher, regex::Error> {
        let value = value.into();
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(regex::Regex::new(&format!("^(?s:{value})$"))?),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher { name: name.into(), op, value, re })
    }

    /// An equality matcher.
    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Matcher {
        Matcher { name: name.into(), op: MatchOp::Equal, value: value.into(), re: None }
    }

    /// True when a label value (`""` if absent) satisfies the matcher.
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Equal => self.value == value,
            MatchOp::NotEqual => self.value != value,
            MatchOp::Regex => self.re.as_ref().is_some_and(|re| re.is_match(value)),
            MatchOp::NotRegex => !self.re.as_ref().is_some_and(|re| re.is_match(value)),
        }
    }

    /// True when the matcher matches the empty string (and so series lacking the label).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    /// True when `labels` satisfies this matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{op}{:?}", self.name, self.value)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.op == other.op && self.value == other.value
    }
}

/// True when `labels` satisfies every matcher.
pub fn matches_all(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

/// Cardinality figures for `/api/v1/status/tsdb`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TsdbStats {
    /// Series in the head (active).
    pub head_series: u64,
    /// Samples held in memory.
    pub head_samples: u64,
    /// Lowest and highest sample timestamps in the head (ms), if any.
    pub head_min_time_ms: Option<i64>,
    /// See `head_min_time_ms`.
    pub head_max_time_ms: Option<i64>,
    /// Series count per metric name, highest first.
    pub series_count_by_metric_name: Vec<(String, u64)>,
    /// Distinct values per label name, highest first.
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    /// Series count per `name=value` pair, highest first.
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

/// The float and histogram samples of one series in a time range, in time order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// Float samples.
    pub floats: Vec<FloatSample>,
    /// Native histogram samples.
    pub histograms: Vec<HistogramSample>,
}

/// Series chosen by [`MetricsReader::select_series`]: their label sets are known up front,
/// sorted; their samples are read one series at a time on demand, so that a caller (PromQL)
/// never needs to hold every selected sample at once. `Sync`, so that several threads can read
/// different series of one set.
pub trait SeriesSet: Send + Sync {
    /// Number of series.
    fn len(&self) -> usize;

    /// True when no series matched.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Labels of series `i` (`i < len()`); series are sorted by labels.
    fn labels(&self, i: usize) -> &Labels;

    /// Samples of series `i` in the selected range (empty for an index out of range). Exemplars
    /// are not read. Same duplicate rule as [`MetricsReader::select`].
    fn read(&self, i: usize) -> Samples;
}

/// A [`SeriesSet`] over series already read in full (the default of
/// [`MetricsReader::select_series`]).
struct ReadSeries(Vec<TimeSeries>);

impl SeriesSet for ReadSeries {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn labels(&self, i: usize) -> &Labels {
        &self.0[i].labels
    }

    fn read(&self, i: usize) -> Samples {
        self.0
            .get(i)
            .map(|ts| Samples { floats: ts.samples.clone(), histograms: ts.histograms.clone() })
            .unwrap_or_default()
    }
}

/// Read access to metrics.
pub trait MetricsReader: Send + Sync {
    /// Label sets of every series, sorted.
    fn series(&self) -> Vec<Labels>;

    /// Series matching every matcher, sorted by labels, each with its float samples, histogram
    /// samples and exemplars whose timestamps fall in `start_ms..=end_ms`, in time order. A series
    /// with nothing in the range is left out.
    ///
    /// Duplicate timestamps: a series holds at most one float sample and one histogram sample per
    /// timestamp; a later write (in WAL order; within one write, later in the batch) replaces an
    /// earlier one. Exemplars are kept per timestamp and label set under the same rule.
    fn select(&self, matchers: &[(String, String)], start_ms: i64, end_ms: i64) -> Vec<TimeSeries>;

    /// The latest metadata written for each metric family, sorted by family name.
    fn metadata(&self) -> Vec<MetricMetadata>;

    /// Series matching every matcher (`matchers` is never empty in PromQL use) with their samples,
    /// histograms and exemplars in `start_ms..=end_ms`, sorted by labels; series with nothing in
    /// the range are left out. The default implementation scans; engines override it.
    fn select_matching(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<TimeSeries> {
        let mut out = Vec::new();
        for labels in self.series() {
            if !matches_all(&labels, matchers) {
                continue;
            }
            let eq: Vec<(String, String)> = labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
            out.extend(self.select(&eq, start_ms, end_ms).into_iter().filter(|ts| ts.labels == labels));
        }
        out
    }

    /// The series of [`MetricsReader::select_matching`] that have float or histogram samples in
    /// `start_ms..=end_ms`, as a [`SeriesSet`] whose samples are read series by series. The
    /// default implementation reads everything up front; engines override it to read lazily.
    fn select_series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Box<dyn SeriesSet + '_> {
        let mut all = self.select_matching(matchers, start_ms, end_ms);
        all.retain(|ts| !(ts.samples.is_empty() && ts.histograms.is_empty()));
        Box::new(ReadSeries(all))
    }

    /// Label sets of the series matching every matcher that have data in `start_ms..=end_ms`,
    /// sorted. No matchers: every series.
    fn series_matching(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        self.select_matching(matchers, start_ms, end_ms).into_iter().map(|ts| ts.labels).collect()
    }

    /// Sorted distinct label names of [`MetricsReader::series_matching`].
    fn label_names(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        let mut names: Vec<String> = self
            .series_matching(matchers, start_ms, end_ms)
            .iter()
            .flat_map(|l| l.iter().map(|l| l.name.to_string()).collect::<Vec<_>>())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Sorted distinct values of label `name` in [`MetricsReader::series_matching`].
    fn label_values(&self, name: &str, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        let mut values: Vec<String> = self
            .series_matching(matchers, start_ms, end_ms)
            .iter()
            .filter_map(|l| l.get(name).map(str::to_string))
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    }

    /// Exemplars whose `trace_id` label equals `trace_id` (lowercase hex), with their series'
    /// labels. The default implementation scans every series; engines override it with an index.
    fn exemplars_by_trace(&self, trace_id: &str) -> Vec<(Labels, crate::model::Exemplar)> {
        let mut out = Vec::new();
        for ts in self.select_matching(&[], i64::MIN, i64::MAX) {
            for e in &ts.exemplars {
                if e.labels.get("trace_id") == Some(trace_id) {
                    out.push((ts.labels.clone(), e.clone()));
                }
            }
        }
        out
    }

    /// Cardinality statistics; `limit` entries per list.
    fn stats(&self, limit: usize) -> TsdbStats {
        let _ = limit;
        TsdbStats { head_series: self.series().len() as u64, ..TsdbStats::default() }
    }

    /// Damage the store found in its files (a block that failed to open or to read), most recent
    /// last, for the operator; the damaged data is left out of answers. Empty by default.
    fn storage_problems(&self) -> Vec<String> {
        Vec::new()
    }
}

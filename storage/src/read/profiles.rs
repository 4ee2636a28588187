//! Read access to profiles. Implemented by the profiles engine (`crate::profiles`).
//!
//! Series are matched on their labels plus five synthetic ones, as Pyroscope exposes them:
//! `__profile_type__` (the full id), `__type__`, `__unit__`, `__period_type__`, `__period_unit__`.
//! So a query for one profile type is a matcher `__profile_type__="process_cpu:cpu:..."`.

use crate::model::{Function, Labels, Location, Mapping, Profile, ProfileType, SpanId, TraceId};
use crate::read::Matcher;

/// What to select: series matchers, a closed time range (ns), optionally only samples of spans.
#[derive(Clone, Copy)]
pub struct ProfileSelect<'a> {
    /// Series matchers (ANDed), over the labels plus the synthetic `__profile_type__` & co.
    pub matchers: &'a [Matcher],
    /// Start, ns (inclusive).
    pub start_ns: i64,
    /// End, ns (inclusive).
    pub end_ns: i64,
    /// Only samples taken in one of these spans.
    pub span_ids: Option<&'a [SpanId]>,
    /// Most samples a merge may touch before it fails with [`LimitExceeded`].
    pub max_samples: u64,
}

/// A series of profiles: its labels (with the synthetic ones) and profile type.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileSeries {
    /// Series labels including `__profile_type__`, `__type__`, `__unit__`, `__period_type__`,
    /// `__period_unit__`.
    pub labels: Labels,
    /// The profile type.
    pub profile_type: ProfileType,
}

/// The synthetic labels a [`ProfileSeries`] adds to the labels its profiles carry.
pub const SYNTHETIC_LABELS: [&str; 5] =
    ["__profile_type__", "__type__", "__unit__", "__period_type__", "__period_unit__"];

impl ProfileSeries {
    /// The labels without the synthetic ones (what the series' profiles carry).
    pub fn plain_labels(&self) -> Labels {
        Labels::from_pairs(
            self.labels
                .iter()
                .filter(|l| !SYNTHETIC_LABELS.contains(&l.name.as_str()))
                .map(|l| (l.name.clone(), l.value.clone())),
        )
    }
}

/// Stacks of the selected samples, summed per distinct stack, with the symbols they use.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergedStacks {
    /// Functions referenced by `locations`.
    pub functions: Vec<Function>,
    /// Locations referenced by `stacks` (their `lines` index `functions`, their `mapping` is an
    /// index into `mappings` plus one, 0 for none).
    pub locations: Vec<Location>,
    /// Mappings referenced by `locations`.
    pub mappings: Vec<Mapping>,
    /// `(stack, value)`: a stack is location indexes, leaf first; stacks are distinct.
    pub stacks: Vec<(Vec<u32>, i64)>,
    /// Profiles that contributed.
    pub profiles: u64,
    /// Samples touched.
    pub samples: u64,
}

/// Per-profile totals of the selected series (for `SelectSeries`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileTotals {
    /// The series that have profiles in range; `points` index into it.
    pub series: Vec<ProfileSeries>,
    /// `(series index, profile time ns, sum of the profile's sample values, its samples)`, time
    /// ordered per series.
    pub points: Vec<(u32, i64, i64, u64)>,
}

/// A query touched more than it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The limit's name.
    pub limit: &'static str,
    /// Its value.
    pub max: u64,
}

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "query touches more than {} samples ({}); narrow the selector or the time range",
            self.max, self.limit
        )
    }
}

/// Samples of one trace or span found through the span index.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanSamples {
    /// The span.
    pub span_id: SpanId,
    /// Its trace, when the samples carried a `trace_id` label.
    pub trace_id: Option<TraceId>,
    /// The series.
    pub series: ProfileSeries,
    /// Profile time, ns.
    pub time_ns: i64,
    /// Samples of the span in that profile.
    pub samples: u64,
    /// Their summed value.
    pub value: i64,
}

/// Read access to profiles.
pub trait ProfilesReader: Send + Sync {
    /// Profiles with `time_ns` in `start_ns..=end_ns`, in time order (ties in arrival order).
    fn profiles(&self, start_ns: i64, end_ns: i64) -> Vec<Profile>;
    /// Distinct profile types with profiles in range.
    fn profile_types(&self, start_ns: i64, end_ns: i64) -> Vec<ProfileType>;
    /// Series matching `matchers` with profiles in range, sorted by labels.
    fn profile_series(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<ProfileSeries>;
    /// The selected samples merged by stack.
    fn merge_stacks(&self, select: &ProfileSelect<'_>) -> Result<MergedStacks, LimitExceeded>;
    /// Per-profile totals of the selected series (span selection is ignored).
    fn profile_totals(&self, select: &ProfileSelect<'_>) -> ProfileTotals;
    /// Samples tagged with one of `span_ids` or with `trace_id` (the trace cross-index).
    fn span_samples(
        &self,
        trace_id: Option<TraceId>,
        span_ids: &[SpanId],
        start_ns: i64,
        end_ns: i64,
    ) -> Vec<SpanSamples>;
}

use serde::{Deserialize, Serialize};

use super::{Label, Labels, SpanId};

/// A batch of profiles: what one pprof ingest or push request becomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ProfilesBatch {
    /// The profiles.
    pub profiles: Vec<Profile>,
}

impl ProfilesBatch {
    /// Number of samples over all profiles.
    pub fn item_count(&self) -> usize {
        self.profiles.iter().map(|p| p.samples.len()).sum()
    }
}

/// One profile of one type for one series (a pprof `Profile` reduced to one sample type).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Profile {
    /// Series labels (`service_name`, `__name__`, …).
    pub labels: Labels,
    /// The profile type.
    pub profile_type: ProfileType,
    /// Start, ns since the epoch.
    pub time_ns: i64,
    /// Duration in ns.
    pub duration_ns: i64,
    /// Sampling period, in `profile_type.period_unit`.
    pub period: i64,
    /// Function table; `Location::lines` index into it.
    pub functions: Vec<Function>,
    /// Location table; `ProfileSample::locations` index into it.
    pub locations: Vec<Location>,
    /// The samples.
    pub samples: Vec<ProfileSample>,
    /// Mapping table (binaries and libraries); `Location::mapping` points into it.
    pub mappings: Vec<Mapping>,
}

/// Pyroscope's profile type identity: `name:sample_type:sample_unit:period_type:period_unit`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct ProfileType {
    /// e.g. `process_cpu`.
    pub name: String,
    /// e.g. `cpu`.
    pub sample_type: String,
    /// e.g. `nanoseconds`.
    pub sample_unit: String,
    /// e.g. `cpu`.
    pub period_type: String,
    /// e.g. `nanoseconds`.
    pub period_unit: String,
}

impl ProfileType {
    /// The profile type id string Pyroscope uses.
    pub fn id(&self) -> String {
        format!("{}:{}:{}:{}:{}", self.name, self.sample_type, self.sample_unit, self.period_type, self.period_unit)
    }
}

/// A function.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Function {
    /// Human-readable name.
    pub name: String,
    /// Name as the system sees it (mangled).
    pub system_name: String,
    /// Source file.
    pub filename: String,
    /// First line of the function.
    pub start_line: i64,
}

/// A code location: one address, possibly with inlined frames (innermost first).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Location {
    /// Instruction address.
    pub address: u64,
    /// `(function index, line)` pairs, innermost first.
    pub lines: Vec<(u32, i64)>,
    /// The mapping holding `address`: an index into `Profile::mappings` plus one; 0 for none.
    pub mapping: u32,
}

/// A mapped binary or library (pprof `Mapping`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Mapping {
    /// First address of the mapping.
    pub memory_start: u64,
    /// One past its last address.
    pub memory_limit: u64,
    /// Offset in the file of `memory_start`.
    pub file_offset: u64,
    /// The binary's path.
    pub filename: String,
    /// The binary's build id.
    pub build_id: String,
    /// The locations of this mapping have function names.
    pub has_functions: bool,
    /// ... file names.
    pub has_filenames: bool,
    /// ... line numbers.
    pub has_line_numbers: bool,
    /// ... inlined frames.
    pub has_inline_frames: bool,
}

/// One sample: a stack and its value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ProfileSample {
    /// Stack as indexes into `Profile::locations`, leaf first.
    pub locations: Vec<u32>,
    /// The sample's value in `profile_type.sample_unit`.
    pub value: i64,
    /// The span this sample was taken in, if the profiler tagged it.
    pub span_id: Option<SpanId>,
    /// Other pprof labels of the sample.
    pub labels: Vec<Label>,
}

//! The pprof wire messages (`perftools.profiles`, `profile.proto`) and the Pyroscope push
//! messages (`push.v1`, `types.v1.LabelPair`), as prost derives. Field numbers are those of the
//! upstream `.proto` files; nothing here is hand-decoded.

/// pprof `Profile`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// One per value of every sample.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Mapped binaries.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Locations, referenced by `Sample::location_id`.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions, referenced by `Line::function_id`.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// Every string of the profile; `string_table[0]` is `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regex of frames to drop (string index).
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regex of frames to keep (string index).
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Collection time, ns since the epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Collection duration in ns.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What one period measures.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Events between samples.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Comments (string indexes).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Index into `sample_type` of the default (string index of its type).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// pprof `ValueType`: string-table indexes of a type and its unit.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// e.g. `cpu`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// e.g. `nanoseconds`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// pprof `Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Stack, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per `Profile::sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Labels.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// pprof `Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Key (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String value (string index), or 0.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// Unit of `num` (string index).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// pprof `Mapping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Start address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// Binary path (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Build id (string index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Symbolization flags.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Symbolization flags.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Symbolization flags.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Symbolization flags.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// pprof `Location`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Mapping id, or 0.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// Instruction address.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Frames at this address, innermost (inlined callee) first.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Part of a folded stack.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// pprof `Line`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    /// Function id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Line number.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Column number.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// pprof `Function`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Unique nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Name (string index).
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// System (mangled) name (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Source file (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First line.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// Profiles by series.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.PushResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushResponse {}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    /// The series labels (`__name__`, `service_name`, ...).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// pprof payloads (gzip or not).
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// A pprof `Profile`, possibly gzipped.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// Profile id (a UUID); not stored.
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LabelPair {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

//! pprof profiles (and Pyroscope's other ingest formats) mapped to the profiles model.
//!
//! Entry points, one per wire shape, each returning a [`ProfilesBatch`] or a [`PprofError`] that
//! the API maps to a 4xx:
//! - [`ingest`]: the legacy `POST /ingest` (`name=app{k=v}`, `from`, `until`, `format`, ...),
//!   with `pprof` (raw or `multipart/form-data`), `folded` and `lines` bodies;
//! - [`push`]: the connect `push.v1.PusherService/Push` request Alloy and the SDKs send.
//!
//! Mapping rules (Pyroscope's):
//! - every sample type of a pprof profile becomes its own profile, of type
//!   `__name__:sample_type:sample_unit:period_type:period_unit`; with `/ingest` the `__name__`
//!   comes from the sample types (`cpu` → `process_cpu`, `alloc_*`/`inuse_*` → `memory`, ...),
//!   with `Push` from the series' `__name__` label;
//! - string sample labels become series labels (so a profile splits into one profile per label
//!   set), except `span_id`, `span_name` and `trace_id`, which stay on the samples for span
//!   profiles and the trace cross-index;
//! - samples whose value is 0 are dropped.
//!
//! Limits ([`PprofLimits`]): decompressed size (a gzip bomb stops there), samples per profile,
//! locations and functions per profile, series labels. Corrupt protobuf, dangling ids and unknown
//! profile types are errors naming what is wrong.

pub mod proto;

use std::collections::HashMap;
use std::io::Read;

use prost::Message;
use storage::model::{
    Function, Label, Labels, Location, Mapping, Profile, ProfileSample, ProfileType, ProfilesBatch, SpanId,
};

/// Limits applied to every ingested profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PprofLimits {
    /// Largest decompressed pprof payload (and `/ingest` body), bytes.
    pub max_decompressed_bytes: usize,
    /// Most samples in one pprof profile.
    pub max_samples_per_profile: usize,
    /// Most locations plus functions in one pprof profile.
    pub max_symbols_per_profile: usize,
    /// Most series labels (after splitting by sample labels).
    pub max_label_names: usize,
}

impl Default for PprofLimits {
    fn default() -> Self {
        PprofLimits {
            max_decompressed_bytes: 64 << 20,
            max_samples_per_profile: 500_000,
            max_symbols_per_profile: 1_000_000,
            max_label_names: 64,
        }
    }
}

/// Why a profile was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PprofError {
    /// A request parameter is missing or invalid.
    BadParam(String),
    /// Decompressed payload over `limits.max_decompressed_bytes`.
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Too many samples.
    TooManySamples {
        /// Samples in the profile.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Too many locations and functions.
    TooManySymbols {
        /// Locations plus functions in the profile.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid payload.
    Corrupt(String),
    /// The sample types map to no profile type Pyroscope knows.
    UnknownProfileType(String),
}

impl std::fmt::Display for PprofError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PprofError::BadParam(m) => write!(f, "{m}"),
            PprofError::TooLarge { max } => {
                write!(f, "profile exceeds the maximum decompressed size of {max} bytes (max_decompressed_bytes)")
            }
            PprofError::TooManySamples { count, max } => {
                write!(f, "profile has {count} samples, more than the limit of {max} (limits.max_profile_samples)")
            }
            PprofError::TooManySymbols { count, max } => write!(
                f,
                "profile has {count} locations and functions, more than the limit of {max} (max_symbols_per_profile)"
            ),
            PprofError::Corrupt(m) => write!(f, "invalid profile: {m}"),
            PprofError::UnknownProfileType(m) => write!(f, "unknown profile type: {m}"),
        }
    }
}

impl std::error::Error for PprofError {}

/// Query parameters of `POST /ingest`.
#[derive(Clone, Debug, Default)]
pub struct IngestParams {
    /// `name`: `app.name{k=v,...}`.
    pub name: String,
    /// `from`, unix seconds (0: `now`).
    pub from: i64,
    /// `until`, unix seconds (0: `now`).
    pub until: i64,
    /// `format`: `folded` (default), `lines`, `pprof` (`jfr` is refused).
    pub format: String,
    /// `sampleRate` (default 100).
    pub sample_rate: u32,
    /// `spyName`.
    pub spy_name: String,
    /// `units` (default `samples`); informative for folded input.
    pub units: String,
    /// `aggregationType` (default `sum`); informative for folded input.
    pub aggregation_type: String,
}

impl IngestParams {
    /// Parses the query string of an `/ingest` request.
    pub fn from_query(query: &str) -> Result<IngestParams, PprofError> {
        let mut p = IngestParams { sample_rate: 100, ..IngestParams::default() };
        for (k, v) in form_pairs(query) {
            match k.as_str() {
                "name" => p.name = v,
                "from" => p.from = parse_int("from", &v)?,
                "until" => p.until = parse_int("until", &v)?,
                "format" => p.format = v,
                "sampleRate" => {
                    p.sample_rate = v.parse().map_err(|_| PprofError::BadParam(format!("invalid sampleRate {v:?}")))?
                }
                "spyName" => p.spy_name = v,
                "units" => p.units = v,
                "aggregationType" => p.aggregation_type = v,
                _ => {}
            }
        }
        if p.name.is_empty() {
            return Err(PprofError::BadParam("the name parameter is required".into()));
        }
        Ok(p)
    }
}

fn parse_int(key: &str, v: &str) -> Result<i64, PprofError> {
    if v.is_empty() {
        return Ok(0);
    }
    v.parse().map_err(|_| PprofError::BadParam(format!("invalid {key} {v:?}: expected unix seconds")))
}

/// Decodes `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses Pyroscope's `app.name{k=v,k2=v2}` into the application name and its tags.
pub fn parse_app_name(name: &str) -> Result<(String, Vec<(String, String)>), PprofError> {
    let name = name.trim();
    let (app, rest) = match name.find('{') {
        Some(i) => (&name[..i], Some(&name[i + 1..])),
        None => (name, None),
    };
    if app.is_empty() {
        return Err(PprofError::BadParam(format!("invalid name {name:?}: the application name is empty")));
    }
    let mut tags = Vec::new();
    if let Some(rest) = rest {
        let inner = rest
            .strip_suffix('}')
            .ok_or_else(|| PprofError::BadParam(format!("invalid name {name:?}: missing closing brace")))?;
        for kv in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| PprofError::BadParam(format!("invalid name {name:?}: tag {kv:?} has no value")))?;
            let k = k.trim();
            let v = v.trim().trim_matches('"');
            if !valid_label_name(k) {
                return Err(PprofError::BadParam(format!("invalid name {name:?}: bad tag name {k:?}")));
            }
            tags.push((k.to_string(), v.to_string()));
        }
    }
    Ok((app.to_string(), tags))
}

fn valid_label_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `POST /ingest`: `body` is the (already transport-decompressed) request body, `content_type`
/// its `Content-Type`. `now_ns` stands in for missing `from`/`until`.
pub fn ingest(
    params: &IngestParams,
    content_type: Option<&str>,
    body: &[u8],
    limits: &PprofLimits,
    now_ns: i64,
) -> Result<ProfilesBatch, PprofError> {
    let (app, tags) = parse_app_name(&params.name)?;
    let secs = |s: i64| if s == 0 { now_ns } else { s.saturating_mul(1_000_000_000) };
    let (from, until) = (secs(params.from), secs(params.until));
    let duration = until.saturating_sub(from).max(0);
    match params.format.as_str() {
        "pprof" => {
            let (data, config) = match content_type.and_then(multipart_boundary) {
                Some(boundary) => {
                    let parts = parse_multipart(body, &boundary)?;
                    let mut profile = None;
                    let mut config = None;
                    for (name, data) in parts {
                        match name.as_str() {
                            "profile" => profile = Some(data),
                            "prev_profile" if !data.is_empty() => {
                                return Err(PprofError::BadParam(
                                    "prev_profile (cumulative profiles) is not supported: update the client".into(),
                                ));
                            }
                            "sample_type_config" => config = Some(parse_sample_type_config(&data)?),
                            _ => {}
                        }
                    }
                    let p = profile
                        .ok_or_else(|| PprofError::BadParam("multipart body has no \"profile\" field".into()))?;
                    (p, config)
                }
                None => (body.to_vec(), None),
            };
            let profile = decode(&data, limits)?;
            let name = metric_name(&profile, config.as_ref())?;
            let mut labels = Labels::from_pairs([("__name__", name.as_str()), ("service_name", app.as_str())]);
            labels.set("__delta__", "false");
            if !params.spy_name.is_empty() {
                labels.set("pyroscope_spy", params.spy_name.as_str());
            }
            add_tags(&mut labels, &tags, &app);
            let times = Times { time_ns: from, duration_ns: duration, prefer_profile: false };
            let profiles = map_profile(profile, &labels, times, config.as_ref(), limits)?;
            Ok(ProfilesBatch { profiles })
        }
        "" | "folded" | "lines" | "trie" | "tree" => {
            if matches!(params.format.as_str(), "trie" | "tree") {
                return Err(PprofError::BadParam(format!("format {:?} is not supported", params.format)));
            }
            if body.len() > limits.max_decompressed_bytes {
                return Err(PprofError::TooLarge { max: limits.max_decompressed_bytes });
            }
            let text = std::str::from_utf8(body).map_err(|_| PprofError::Corrupt("body is not UTF-8".into()))?;
            let stacks = if params.format == "lines" { parse_lines(text) } else { parse_folded(text)? };
            folded_profile(params, &app, &tags, stacks, from, duration, limits)
        }
        other => Err(PprofError::BadParam(format!("format {other:?} is not supported (pprof, folded, lines)"))),
    }
}

/// Tags of the app name become labels (`__`-prefixed ones are reserved and dropped); a
/// `service_name` tag wins over the app name, which then is kept as `app_name`.
fn add_tags(labels: &mut Labels, tags: &[(String, String)], app: &str) {
    let mut has_service = false;
    for (k, v) in tags {
        if k.starts_with("__") {
            continue;
        }
        has_service |= k == "service_name";
        labels.set(k.as_str(), v.as_str());
    }
    if has_service && labels.get("app_name").is_none() {
        labels.set("app_name", app);
    }
}

/// The connect `Push` request: one or more series, each with pprof payloads.
pub fn push(req: proto::PushRequest, limits: &PprofLimits, now_ns: i64) -> Result<ProfilesBatch, PprofError> {
    let mut profiles = Vec::new();
    for series in req.series {
        let mut labels = Labels::new();
        for l in &series.labels {
            if !valid_label_name(&l.name) {
                return Err(PprofError::BadParam(format!("invalid label name {:?}", l.name)));
            }
            labels.set(l.name.as_str(), l.value.as_str());
        }
        if labels.get("__name__").is_none() {
            return Err(PprofError::BadParam(
                "series has no __name__ label (the profile name, e.g. process_cpu)".into(),
            ));
        }
        if labels.get("service_name").is_none() {
            let service =
                labels.get("service.name").or(labels.get("app_name")).unwrap_or("unknown_service").to_string();
            labels.set("service_name", service);
        }
        if labels.len() > limits.max_label_names {
            return Err(PprofError::BadParam(format!(
                "series has {} labels, more than the limit of {} (max_label_names)",
                labels.len(),
                limits.max_label_names
            )));
        }
        for raw in series.samples {
            let profile = decode(&raw.raw_profile, limits)?;
            let times = Times { time_ns: now_ns, duration_ns: 0, prefer_profile: true };
            profiles.extend(map_profile(profile, &labels, times, None, limits)?);
        }
    }
    Ok(ProfilesBatch { profiles })
}

/// Gunzips `data` if it starts with the gzip magic, reading at most `max` bytes.
pub fn maybe_gunzip(data: &[u8], max: usize) -> Result<std::borrow::Cow<'_, [u8]>, PprofError> {
    if data.len() < 2 || data[0] != 0x1f || data[1] != 0x8b {
        if data.len() > max {
            return Err(PprofError::TooLarge { max });
        }
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut out = Vec::with_capacity((data.len() * 4).min(max));
    flate2::read::MultiGzDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| PprofError::Corrupt(format!("gzip: {e}")))?;
    if out.len() > max {
        return Err(PprofError::TooLarge { max });
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// Decodes a pprof `Profile` (gzipped or not) within the limits.
pub fn decode(data: &[u8], limits: &PprofLimits) -> Result<proto::Profile, PprofError> {
    let raw = maybe_gunzip(data, limits.max_decompressed_bytes)?;
    let profile = proto::Profile::decode(raw.as_ref()).map_err(|e| PprofError::Corrupt(format!("pprof: {e}")))?;
    if profile.sample.len() > limits.max_samples_per_profile {
        return Err(PprofError::TooManySamples { count: profile.sample.len(), max: limits.max_samples_per_profile });
    }
    let symbols = profile.location.len() + profile.function.len();
    if symbols > limits.max_symbols_per_profile {
        return Err(PprofError::TooManySymbols { count: symbols, max: limits.max_symbols_per_profile });
    }
    if profile.sample_type.is_empty() {
        return Err(PprofError::UnknownProfileType("the profile declares no sample types".into()));
    }
    if profile.string_table.first().is_some_and(|s| !s.is_empty()) {
        return Err(PprofError::Corrupt("string_table[0] must be the empty string".into()));
    }
    Ok(profile)
}

/// One entry of the `sample_type_config` form field (`{"alloc_space": {"units": "bytes", ...}}`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct SampleTypeConfig {
    /// Units.
    #[serde(default)]
    pub units: String,
    /// `sum` or `average`.
    #[serde(default)]
    pub aggregation: String,
    /// Name to use instead of the sample type's own.
    #[serde(default, rename = "display-name")]
    pub display_name: String,
    /// Cumulative profiles need a previous profile (refused).
    #[serde(default)]
    pub cumulative: bool,
    /// Sampled.
    #[serde(default)]
    pub sampled: bool,
}

type SampleTypeConfigs = HashMap<String, SampleTypeConfig>;

fn parse_sample_type_config(data: &[u8]) -> Result<SampleTypeConfigs, PprofError> {
    serde_json::from_slice(data).map_err(|e| PprofError::BadParam(format!("invalid sample_type_config: {e}")))
}

fn string_at(p: &proto::Profile, i: i64) -> Result<&str, PprofError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| p.string_table.get(i))
        .map(String::as_str)
        .ok_or_else(|| PprofError::Corrupt(format!("string index {i} is out of the string table")))
}

/// The profile name Pyroscope derives from the sample types of an `/ingest` pprof profile.
fn metric_name(p: &proto::Profile, config: Option<&SampleTypeConfigs>) -> Result<String, PprofError> {
    let mut names = Vec::new();
    for st in &p.sample_type {
        names.push(string_at(p, st.r#type)?.to_string());
    }
    if names.iter().any(|n| n == "wall") {
        return Ok("wall".into());
    }
    for n in &names {
        let st = config.and_then(|c| c.get(n)).filter(|c| !c.display_name.is_empty()).map_or(n, |c| &c.display_name);
        let name = if st.contains("cpu") {
            "process_cpu"
        } else if st.contains("alloc_") || st.contains("inuse_") || st == "space" || st == "objects" {
            "memory"
        } else if st.contains("mutex_") {
            "mutex"
        } else if st.contains("block_") {
            "block"
        } else if st.contains("goroutine") {
            "goroutines"
        } else {
            continue;
        };
        return Ok(name.into());
    }
    Err(PprofError::UnknownProfileType(format!("sample types {names:?} map to no Pyroscope profile name")))
}

/// Maps a pprof profile built in process (OTLP profiles): its own `time_nanos`/`duration_nanos`
/// win over `time_ns`/`duration_ns`; the symbol limit applies as to a decoded upload.
pub(crate) fn map_decoded(
    p: proto::Profile,
    labels: &Labels,
    time_ns: i64,
    duration_ns: i64,
    limits: &PprofLimits,
) -> Result<Vec<Profile>, PprofError> {
    let symbols = p.location.len() + p.function.len();
    if symbols > limits.max_symbols_per_profile {
        return Err(PprofError::TooManySymbols { count: symbols, max: limits.max_symbols_per_profile });
    }
    map_profile(p, labels, Times { time_ns, duration_ns, prefer_profile: true }, None, limits)
}

#[derive(Clone, Copy)]
struct Times {
    time_ns: i64,
    duration_ns: i64,
    /// Use the profile's own `time_nanos`/`duration_nanos` when set (Push).
    prefer_profile: bool,
}

const SAMPLE_LABELS: [&str; 3] = ["span_id", "span_name", "trace_id"];

/// pprof id → table index: a vector when the ids are small (they usually are `1..=n`), a map
/// otherwise.
enum IdIndex {
    Dense(Vec<u32>),
    Sparse(HashMap<u64, u32>),
}

impl IdIndex {
    const NONE: u32 = u32::MAX;

    fn for_ids(ids: impl Iterator<Item = u64>, n: usize) -> IdIndex {
        let max = ids.max().unwrap_or(0);
        if max <= 4 * n as u64 + 16 {
            IdIndex::Dense(vec![Self::NONE; max as usize + 1])
        } else {
            IdIndex::Sparse(HashMap::with_capacity(n))
        }
    }

    /// Records `id → idx`; false if `id` was already there.
    fn insert(&mut self, id: u64, idx: u32) -> bool {
        match self {
            // Sized for the largest id: `get_mut` finds every id.
            IdIndex::Dense(v) => match v.get_mut(id as usize) {
                Some(slot) if *slot == Self::NONE => {
                    *slot = idx;
                    true
                }
                _ => false,
            },
            IdIndex::Sparse(m) => m.insert(id, idx).is_none(),
        }
    }

    fn get(&self, id: u64) -> Option<u32> {
        match self {
            IdIndex::Dense(v) => v.get(usize::try_from(id).ok()?).copied().filter(|i| *i != Self::NONE),
            IdIndex::Sparse(m) => m.get(&id).copied(),
        }
    }
}

/// Maps one decoded pprof profile to one model profile per sample type and series label set.
fn map_profile(
    p: proto::Profile,
    labels: &Labels,
    times: Times,
    config: Option<&SampleTypeConfigs>,
    limits: &PprofLimits,
) -> Result<Vec<Profile>, PprofError> {
    let name = labels.get("__name__").unwrap_or_default().to_string();
    let (period_type, period_unit) = match &p.period_type {
        Some(vt) => (string_at(&p, vt.r#type)?.to_string(), string_at(&p, vt.unit)?.to_string()),
        None => (String::new(), String::new()),
    };
    let (time_ns, duration_ns) = if times.prefer_profile && p.time_nanos > 0 {
        (p.time_nanos, if p.duration_nanos > 0 { p.duration_nanos } else { times.duration_ns })
    } else {
        (times.time_ns, times.duration_ns)
    };

    // Symbol tables with pprof ids resolved to indexes.
    let mut functions = Vec::with_capacity(p.function.len());
    let mut function_index = IdIndex::for_ids(p.function.iter().map(|f| f.id), p.function.len());
    for f in &p.function {
        let idx = u32::try_from(functions.len()).map_err(|_| PprofError::Corrupt("too many functions".into()))?;
        if !function_index.insert(f.id, idx) {
            return Err(PprofError::Corrupt(format!("duplicate function id {}", f.id)));
        }
        functions.push(Function {
            name: string_at(&p, f.name)?.to_string(),
            system_name: string_at(&p, f.system_name)?.to_string(),
            filename: string_at(&p, f.filename)?.to_string(),
            start_line: f.start_line,
        });
    }
    let mut mappings = Vec::with_capacity(p.mapping.len());
    let mut mapping_index = IdIndex::for_ids(p.mapping.iter().map(|m| m.id), p.mapping.len());
    for m in &p.mapping {
        let idx = u32::try_from(mappings.len() + 1).map_err(|_| PprofError::Corrupt("too many mappings".into()))?;
        if m.id == 0 || !mapping_index.insert(m.id, idx) {
            return Err(PprofError::Corrupt(format!("mapping id {} is zero or not unique", m.id)));
        }
        mappings.push(Mapping {
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename: string_at(&p, m.filename)?.to_string(),
            build_id: string_at(&p, m.build_id)?.to_string(),
            has_functions: m.has_functions,
            has_filenames: m.has_filenames,
            has_line_numbers: m.has_line_numbers,
            has_inline_frames: m.has_inline_frames,
        });
    }
    let mut locations = Vec::with_capacity(p.location.len());
    let mut location_index = IdIndex::for_ids(p.location.iter().map(|l| l.id), p.location.len());
    for l in &p.location {
        let idx = u32::try_from(locations.len()).map_err(|_| PprofError::Corrupt("too many locations".into()))?;
        if !location_index.insert(l.id, idx) {
            return Err(PprofError::Corrupt(format!("duplicate location id {}", l.id)));
        }
        let mut lines = Vec::with_capacity(l.line.len());
        for line in &l.line {
            let f = function_index.get(line.function_id).ok_or_else(|| {
                PprofError::Corrupt(format!("location {} refers to unknown function {}", l.id, line.function_id))
            })?;
            lines.push((f, line.line));
        }
        // As Go's pprof reader: an unknown mapping id leaves the location without a mapping.
        let mapping = mapping_index.get(l.mapping_id).unwrap_or(0);
        locations.push(Location { address: l.address, lines, mapping });
    }

    // Sample types to keep: all of them, each its own profile.
    let mut types = Vec::with_capacity(p.sample_type.len());
    for st in &p.sample_type {
        let sample_type = string_at(&p, st.r#type)?;
        let cfg = config.and_then(|c| c.get(sample_type));
        let shown = cfg.filter(|c| !c.display_name.is_empty()).map_or(sample_type, |c| c.display_name.as_str());
        let unit = cfg.filter(|c| !c.units.is_empty()).map_or(string_at(&p, st.unit)?, |c| c.units.as_str());
        types.push(ProfileType {
            name: name.clone(),
            sample_type: shown.to_string(),
            sample_unit: unit.to_string(),
            period_type: period_type.clone(),
            period_unit: period_unit.clone(),
        });
    }

    // Split samples by their series labels; `out[(label set, type)]`.
    let mut groups: HashMap<Vec<Label>, Vec<Vec<ProfileSample>>> = HashMap::new();
    for s in &p.sample {
        if s.value.len() != types.len() {
            return Err(PprofError::Corrupt(format!(
                "a sample has {} values for {} sample types",
                s.value.len(),
                types.len()
            )));
        }
        let mut stack = Vec::with_capacity(s.location_id.len());
        for id in &s.location_id {
            let idx = location_index
                .get(*id)
                .ok_or_else(|| PprofError::Corrupt(format!("a sample refers to unknown location {id}")))?;
            stack.push(idx);
        }
        let mut series_labels = Vec::new();
        let mut sample_labels = Vec::new();
        let mut span_id = None;
        for l in &s.label {
            if l.str == 0 {
                continue; // numeric labels are not series labels
            }
            let (k, v) = (string_at(&p, l.key)?, string_at(&p, l.str)?);
            if k == "span_id" {
                span_id = SpanId::from_hex(v);
                if span_id.is_none() {
                    sample_labels.push(Label { name: k.into(), value: v.into() });
                }
            } else if SAMPLE_LABELS.contains(&k) {
                sample_labels.push(Label { name: k.into(), value: v.into() });
            } else if valid_label_name(k) && !k.starts_with("__") {
                series_labels.push(Label { name: k.into(), value: v.into() });
            }
        }
        series_labels.sort();
        let per_type = groups.entry(series_labels).or_insert_with(|| vec![Vec::new(); types.len()]);
        for (i, v) in s.value.iter().enumerate() {
            if *v != 0 {
                per_type[i].push(ProfileSample {
                    locations: stack.clone(),
                    value: *v,
                    span_id,
                    labels: sample_labels.clone(),
                });
            }
        }
    }

    let mut keys: Vec<_> = groups.keys().cloned().collect();
    keys.sort();
    let mut out = Vec::new();
    let last_key = keys.len().saturating_sub(1);
    for (k, key) in keys.into_iter().enumerate() {
        let Some(per_type) = groups.remove(&key) else { continue };
        let mut series = labels.clone();
        for l in &key {
            if series.get(&l.name).is_none() {
                series.set(l.name.as_str(), l.value.as_str());
            }
        }
        if series.len() > limits.max_label_names {
            return Err(PprofError::BadParam(format!(
                "series has {} labels, more than the limit of {} (max_label_names)",
                series.len(),
                limits.max_label_names
            )));
        }
        // The last profile takes the symbol tables, the others get copies.
        let last_type = per_type.iter().rposition(|s| !s.is_empty());
        for (i, samples) in per_type.into_iter().enumerate() {
            if samples.is_empty() {
                continue;
            }
            let (functions, locations, mappings) = if k == last_key && Some(i) == last_type {
                (std::mem::take(&mut functions), std::mem::take(&mut locations), std::mem::take(&mut mappings))
            } else {
                (functions.clone(), locations.clone(), mappings.clone())
            };
            out.push(Profile {
                labels: series.clone(),
                profile_type: types[i].clone(),
                time_ns,
                duration_ns,
                period: p.period,
                functions,
                locations,
                samples,
                mappings,
            });
        }
    }
    Ok(out)
}

/// `folded`: one `frame;frame;frame value` line per stack, root first.
fn parse_folded(text: &str) -> Result<Vec<(Vec<String>, i64)>, PprofError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (stack, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| PprofError::Corrupt(format!("line {}: expected \"stack value\"", n + 1)))?;
        let value: i64 =
            value.parse().map_err(|_| PprofError::Corrupt(format!("line {}: {value:?} is not an integer", n + 1)))?;
        out.push((stack.split(';').map(str::to_string).collect(), value));
    }
    Ok(out)
}

/// `lines`: one stack per line, each line one sample.
fn parse_lines(text: &str) -> Vec<(Vec<String>, i64)> {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        *counts.entry(line).or_default() += 1;
    }
    let mut out: Vec<_> = counts.into_iter().map(|(s, v)| (s.split(';').map(str::to_string).collect(), v)).collect();
    out.sort();
    out
}

/// The profile type of a folded upload, from the app name's suffix (`app.cpu`, `app.alloc_space`,
/// ...; no suffix means cpu), as Pyroscope's ingest adapter derives it.
fn folded_type(app: &str) -> Result<(String, &'static str, String, &'static str), PprofError> {
    let (app_name, suffix) = match app.rsplit_once('.') {
        Some((a, s)) => (a.to_string(), s),
        None => (app.to_string(), "cpu"),
    };
    let (metric, st, unit): (&str, &str, &str) = match suffix {
        "cpu" | "itimer" => ("process_cpu", "samples", "count"),
        "wall" | "seconds" | "nanoseconds" | "microseconds" | "milliseconds" => ("wall", "samples", "count"),
        "inuse_objects" | "alloc_objects" => ("memory", suffix_static(suffix), "count"),
        "inuse_space" | "alloc_space" => ("memory", suffix_static(suffix), "bytes"),
        "goroutines" => ("goroutine", "goroutines", "count"),
        "mutex_count" => ("mutex", "contentions", "count"),
        "mutex_duration" => ("mutex", "delay", "nanoseconds"),
        "block_count" | "lock_count" => ("block", "contentions", "count"),
        "block_duration" | "lock_duration" => ("block", "delay", "nanoseconds"),
        "exceptions" => ("exceptions", "samples", "count"),
        "bytes" => ("memory", "samples", "bytes"),
        other => return Err(PprofError::UnknownProfileType(other.to_string())),
    };
    Ok((app_name, metric_static(metric), st.to_string(), unit_static(unit)))
}

fn suffix_static(s: &str) -> &'static str {
    match s {
        "inuse_objects" => "inuse_objects",
        "alloc_objects" => "alloc_objects",
        "inuse_space" => "inuse_space",
        _ => "alloc_space",
    }
}

fn metric_static(s: &str) -> &'static str {
    match s {
        "process_cpu" => "process_cpu",
        "wall" => "wall",
        "memory" => "memory",
        "goroutine" => "goroutine",
        "mutex" => "mutex",
        "block" => "block",
        _ => "exceptions",
    }
}

fn unit_static(s: &str) -> &'static str {
    match s {
        "count" => "count",
        "bytes" => "bytes",
        _ => "nanoseconds",
    }
}

fn folded_profile(
    params: &IngestParams,
    app: &str,
    tags: &[(String, String)],
    stacks: Vec<(Vec<String>, i64)>,
    time_ns: i64,
    duration_ns: i64,
    limits: &PprofLimits,
) -> Result<ProfilesBatch, PprofError> {
    if stacks.len() > limits.max_samples_per_profile {
        return Err(PprofError::TooManySamples { count: stacks.len(), max: limits.max_samples_per_profile });
    }
    let (app_name, metric, mut sample_type, mut unit) = folded_type(app)?;
    let (mut period_type, mut period_unit, mut period, mut scale) = ("", "", 0i64, 1i64);
    if params.sample_rate != 0 && matches!(metric, "process_cpu" | "wall") {
        period = 1_000_000_000 / i64::from(params.sample_rate);
        scale = period;
        (period_type, period_unit) = ("cpu", "nanoseconds");
        sample_type = if metric == "wall" { "wall".into() } else { "cpu".into() };
        unit = "nanoseconds";
    }
    let mut labels = Labels::from_pairs([("__name__", metric), ("__delta__", "false")]);
    if !params.spy_name.is_empty() {
        labels.set("pyroscope_spy", params.spy_name.as_str());
    }
    let has_service = tags.iter().any(|(k, _)| k == "service_name");
    add_tags(&mut labels, tags, &app_name);
    if !has_service {
        labels.set("service_name", app_name.as_str());
    }
    let mut functions = Vec::new();
    let mut fn_index: HashMap<String, u32> = HashMap::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for (frames, value) in stacks {
        if value == 0 {
            continue;
        }
        let mut locs = Vec::with_capacity(frames.len());
        for f in frames.iter().rev() {
            let next = fn_index.len() as u32;
            let idx = *fn_index.entry(f.clone()).or_insert_with(|| {
                functions.push(Function { name: f.clone(), ..Function::default() });
                next
            });
            locs.push(idx);
        }
        samples.push(ProfileSample {
            locations: locs,
            value: value.saturating_mul(scale),
            span_id: None,
            labels: Vec::new(),
        });
    }
    // One location per function: folded stacks carry names only.
    let locations =
        (0..functions.len() as u32).map(|i| Location { address: 0, lines: vec![(i, 0)], mapping: 0 }).collect();
    let profile = Profile {
        labels,
        profile_type: ProfileType {
            name: metric.into(),
            sample_type,
            sample_unit: unit.into(),
            period_type: period_type.into(),
            period_unit: period_unit.into(),
        },
        time_ns,
        duration_ns,
        period,
        functions,
        locations,
        samples,
        mappings: Vec::new(),
    };
    Ok(ProfilesBatch { profiles: if profile.samples.is_empty() { vec![] } else { vec![profile] } })
}

/// The boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    let mut parts = content_type.split(';');
    if !parts.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Splits a `multipart/form-data` body into `(field name, data)` parts (RFC 7578).
pub fn parse_multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, Vec<u8>)>, PprofError> {
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let bad = |m: &str| PprofError::Corrupt(format!("multipart body: {m}"));
    let mut pos = find(body, d, 0).ok_or_else(|| bad("no boundary"))? + d.len();
    let mut out = Vec::new();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(out);
        }
        let start = pos + if body[pos..].starts_with(b"\r\n") { 2 } else { 0 };
        let header_end = find(body, b"\r\n\r\n", start).ok_or_else(|| bad("part without headers"))?;
        let headers = String::from_utf8_lossy(&body[start..header_end]);
        let data_start = header_end + 4;
        let next = find(body, d, data_start).ok_or_else(|| bad("unterminated part"))?;
        let data_end = if next >= 2 && &body[next - 2..next] == b"\r\n" { next - 2 } else { next };
        let name = headers
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .flat_map(|l| l.split(';').map(str::trim).collect::<Vec<_>>())
            .find_map(|p| p.strip_prefix("name=").map(|n| n.trim_matches('"').to_string()))
            .unwrap_or_default();
        out.push((name, body[data_start..data_end.max(data_start)].to_vec()));
        pos = next + d.len();
        if pos > body.len() {
            return Err(bad("truncated"));
        }
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() || needle.is_empty() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|i| i + from)
}

/// Decodes standard base64 (with or without padding), as protojson writes `bytes` fields.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn go_cpu_profile() -> proto::Profile {
        proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }, proto::ValueType { r#type: 3, unit: 4 }],
            period_type: Some(proto::ValueType { r#type: 3, unit: 4 }),
            period: 10_000_000,
            string_table: strings(&[
                "",
                "samples",
                "count",
                "cpu",
                "nanoseconds",
                "main",
                "work",
                "span_id",
                "0102030405060708",
                "pod",
                "a",
            ]),
            function: vec![
                proto::Function { id: 1, name: 5, ..Default::default() },
                proto::Function { id: 2, name: 6, ..Default::default() },
            ],
            location: vec![
                proto::Location {
                    id: 10,
                    line: vec![proto::Line { function_id: 1, line: 3, column: 0 }],
                    ..Default::default()
                },
                proto::Location {
                    id: 20,
                    line: vec![proto::Line { function_id: 2, line: 9, column: 0 }],
                    ..Default::default()
                },
            ],
            sample: vec![
                proto::Sample {
                    location_id: vec![20, 10],
                    value: vec![2, 20_000_000],
                    label: vec![proto::Label { key: 7, str: 8, ..Default::default() }],
                },
                proto::Sample {
                    location_id: vec![10],
                    value: vec![1, 10_000_000],
                    label: vec![proto::Label { key: 9, str: 10, ..Default::default() }],
                },
            ],
            time_nanos: 5_000,
            ..Default::default()
        }
    }

    #[test]
    fn ingest_pprof_maps_types_labels_and_spans() {
        let body = go_cpu_profile().encode_to_vec();
        let params =
            IngestParams::from_query("name=shop.api%7Benv%3Dprod%7D&from=10&until=20&format=pprof&spyName=gospy")
                .unwrap();
        let batch = ingest(&params, None, &body, &PprofLimits::default(), 0).unwrap();
        let ids: Vec<String> = batch.profiles.iter().map(|p| format!("{} {}", p.profile_type.id(), p.labels)).collect();
        assert_eq!(
            ids,
            [
                "process_cpu:samples:count:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", env=\"prod\", pyroscope_spy=\"gospy\", service_name=\"shop.api\"}",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", env=\"prod\", pyroscope_spy=\"gospy\", service_name=\"shop.api\"}",
                "process_cpu:samples:count:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", env=\"prod\", pod=\"a\", pyroscope_spy=\"gospy\", service_name=\"shop.api\"}",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", env=\"prod\", pod=\"a\", pyroscope_spy=\"gospy\", service_name=\"shop.api\"}",
            ]
        );
        let cpu = &batch.profiles[1];
        assert_eq!(cpu.time_ns, 10_000_000_000);
        assert_eq!(cpu.duration_ns, 10_000_000_000);
        assert_eq!(cpu.samples[0].span_id.map(|s| s.to_hex()).as_deref(), Some("0102030405060708"));
        assert_eq!(cpu.samples[0].locations, vec![1, 0]);
        assert_eq!(cpu.samples[0].value, 20_000_000);
        assert!(cpu.mappings.is_empty());
    }

    /// pprof ids index a vector when small and a map when not: both map alike and both catch
    /// duplicates.
    #[test]
    fn small_and_large_ids_map_alike() {
        let params = IngestParams::from_query("name=shop&format=pprof").unwrap();
        let small = go_cpu_profile();
        let mut large = small.clone();
        let big = |id: u64| id << 40 | 5;
        for f in &mut large.function {
            f.id = big(f.id);
        }
        for l in &mut large.location {
            l.id = big(l.id);
            for line in &mut l.line {
                line.function_id = big(line.function_id);
            }
        }
        for s in &mut large.sample {
            s.location_id.iter_mut().for_each(|l| *l = big(*l));
        }
        let map = |p: &proto::Profile| ingest(&params, None, &p.encode_to_vec(), &PprofLimits::default(), 0);
        assert_eq!(map(&small).unwrap(), map(&large).unwrap());
        for mut p in [small, large] {
            p.location[1].id = p.location[0].id;
            assert!(matches!(map(&p), Err(PprofError::Corrupt(e)) if e.contains("duplicate location")));
            p.sample[0].location_id[0] += 1000;
            p.location[1].id += 1;
            assert!(matches!(map(&p), Err(PprofError::Corrupt(e)) if e.contains("unknown location")));
        }
    }

    #[test]
    fn mappings_are_kept() {
        let mut p = go_cpu_profile();
        p.string_table.extend(strings(&["/usr/bin/shop", "b1d"]));
        let n = p.string_table.len() as i64;
        p.mapping = vec![
            proto::Mapping { id: 7, memory_start: 0x40_0000, memory_limit: 0x80_0000, ..Default::default() },
            proto::Mapping {
                id: 3,
                memory_start: 0x1000,
                memory_limit: 0x2000,
                file_offset: 0x10,
                filename: n - 2,
                build_id: n - 1,
                has_functions: true,
                has_line_numbers: true,
                ..Default::default()
            },
        ];
        p.location[0].mapping_id = 3;
        p.location[1].mapping_id = 42; // unknown: no mapping, as Go's reader does
        let params = IngestParams::from_query("name=shop&format=pprof").unwrap();
        let batch = ingest(&params, None, &p.encode_to_vec(), &PprofLimits::default(), 0).unwrap();
        let cpu = &batch.profiles[1];
        assert_eq!(cpu.mappings.len(), 2);
        assert_eq!(cpu.locations[0].mapping, 2);
        assert_eq!(cpu.locations[1].mapping, 0);
        let m = &cpu.mappings[1];
        assert_eq!((m.filename.as_str(), m.build_id.as_str(), m.file_offset), ("/usr/bin/shop", "b1d", 0x10));
        assert!(m.has_functions && m.has_line_numbers && !m.has_filenames && !m.has_inline_frames);
        p.mapping[0].id = 3;
        let err = ingest(&params, None, &p.encode_to_vec(), &PprofLimits::default(), 0).unwrap_err();
        assert!(matches!(err, PprofError::Corrupt(_)), "{err}");
    }

    #[test]
    fn corrupt_and_limits() {
        let limits = PprofLimits::default();
        assert!(matches!(decode(b"\xff\xff\xff garbage", &limits), Err(PprofError::Corrupt(_))));
        let mut p = go_cpu_profile();
        p.sample[0].location_id.push(99);
        let params = IngestParams::from_query("name=a&format=pprof").unwrap();
        let err = ingest(&params, None, &p.encode_to_vec(), &limits, 0).unwrap_err();
        assert_eq!(err.to_string(), "invalid profile: a sample refers to unknown location 99");
        let small = PprofLimits { max_samples_per_profile: 1, ..PprofLimits::default() };
        assert!(matches!(
            decode(&go_cpu_profile().encode_to_vec(), &small),
            Err(PprofError::TooManySamples { count: 2, max: 1 })
        ));
        let mut unknown = go_cpu_profile();
        unknown.string_table[1] = "frobs".into();
        unknown.string_table[3] = "widgets".into();
        let err = ingest(&params, None, &unknown.encode_to_vec(), &limits, 0).unwrap_err();
        assert!(matches!(err, PprofError::UnknownProfileType(_)), "{err}");
    }

    #[test]
    fn go_heap_profile_types_and_sample_type_config() {
        let heap = proto::Profile {
            sample_type: ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]
                .iter()
                .enumerate()
                .map(|(i, _)| proto::ValueType { r#type: 1 + i as i64, unit: if i % 2 == 0 { 5 } else { 6 } })
                .collect(),
            period_type: Some(proto::ValueType { r#type: 7, unit: 6 }),
            period: 524288,
            string_table: strings(&[
                "",
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space",
                "count",
                "bytes",
                "space",
                "malloc",
            ]),
            function: vec![proto::Function { id: 1, name: 8, ..Default::default() }],
            location: vec![proto::Location {
                id: 1,
                line: vec![proto::Line { function_id: 1, line: 1, column: 0 }],
                ..Default::default()
            }],
            sample: vec![proto::Sample { location_id: vec![1], value: vec![1, 2, 3, 4], label: vec![] }],
            ..Default::default()
        };
        let params = IngestParams::from_query("name=svc&from=1&until=2&format=pprof").unwrap();
        let batch = ingest(&params, None, &heap.encode_to_vec(), &PprofLimits::default(), 0).unwrap();
        let ids: Vec<String> = batch.profiles.iter().map(|p| p.profile_type.id()).collect();
        assert_eq!(
            ids,
            [
                "memory:alloc_objects:count:space:bytes",
                "memory:alloc_space:bytes:space:bytes",
                "memory:inuse_objects:count:space:bytes",
                "memory:inuse_space:bytes:space:bytes"
            ]
        );
        // sample_type_config renames a sample type (the Go SDK's display names).
        let boundary = "b0";
        let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"\r\n\r\n").into_bytes();
        body.extend_from_slice(&heap.encode_to_vec());
        body.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{{\"inuse_space\":{{\"units\":\"bytes\",\"display-name\":\"inuse_bytes\"}}}}\r\n--{boundary}--\r\n")
                .as_bytes(),
        );
        let ct = format!("multipart/form-data; boundary={boundary}");
        let batch = ingest(&params, Some(&ct), &body, &PprofLimits::default(), 0).unwrap();
        assert_eq!(batch.profiles[3].profile_type.id(), "memory:inuse_bytes:bytes:space:bytes");
    }

    #[test]
    fn folded_cpu_scales_by_sample_rate() {
        let params = IngestParams::from_query("name=app.cpu%7Bregion%3Deu%7D&from=1&until=11&sampleRate=100").unwrap();
        let batch = ingest(&params, None, b"main;work;leaf 3\nmain;idle 1\n", &PprofLimits::default(), 0).unwrap();
        let p = &batch.profiles[0];
        assert_eq!(p.profile_type.id(), "process_cpu:cpu:nanoseconds:cpu:nanoseconds");
        assert_eq!(p.labels.get("service_name"), Some("app"));
        assert_eq!(p.labels.get("region"), Some("eu"));
        assert_eq!(p.samples.iter().map(|s| s.value).sum::<i64>(), 40_000_000);
        let names: Vec<&str> = p.samples[0]
            .locations
            .iter()
            .map(|l| p.functions[p.locations[*l as usize].lines[0].0 as usize].name.as_str())
            .collect();
        assert_eq!(names, ["leaf", "work", "main"]);
        let bad = IngestParams::from_query("name=app.frobnicate&from=1&until=2").unwrap();
        assert!(matches!(
            ingest(&bad, None, b"a 1\n", &PprofLimits::default(), 0),
            Err(PprofError::UnknownProfileType(_))
        ));
    }

    #[test]
    fn multipart_and_base64() {
        let body = b"--XYZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\nABC\r\n--XYZ\r\nContent-Disposition: form-data; name=\"sample_type_config\"\r\n\r\n{}\r\n--XYZ--\r\n";
        let parts = parse_multipart(body, &multipart_boundary("multipart/form-data; boundary=XYZ").unwrap()).unwrap();
        assert_eq!(
            parts,
            vec![("profile".to_string(), b"ABC".to_vec()), ("sample_type_config".to_string(), b"{}".to_vec())]
        );
        assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 8 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        let limits = PprofLimits { max_decompressed_bytes: 1 << 20, ..PprofLimits::default() };
        assert_eq!(decode(&gz, &limits), Err(PprofError::TooLarge { max: 1 << 20 }));
    }
}

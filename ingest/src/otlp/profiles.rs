//! OTLP profiles (`v1development`, the dictionary-based schema of OTLP 1.10) → model, as
//! Pyroscope's OTLP receiver maps them.
//!
//! Each OTLP `Profile` has one sample type. It is rebuilt as a pprof profile over the request's
//! `ProfilesDictionary` (strings, mappings, locations, functions, stacks, attributes, links) and
//! then mapped by the same code as pprof uploads ([`crate::pprof`]), so symbols, limits and span
//! labels behave identically. Pyroscope's rules:
//!
//! - Series labels: `__name__` (`process_cpu`; `off_cpu` for the `events:nanoseconds` type with no
//!   period), `__delta__="false"`, `__otel__="true"`, the string-valued resource attributes, then
//!   the scope's (first key wins), and `service_name`.
//! - `service_name`: a sample's `service.name` attribute (samples are split into one profile per
//!   service), else the resource's `service.name`, else `unknown_service`, with
//!   `:<process.executable.name>` appended when that resource attribute is set.
//! - Sample type `samples`/`count` with period type `cpu`/`nanoseconds` becomes `cpu`/`nanoseconds`
//!   with every value multiplied by the period (profile type
//!   `process_cpu:cpu:nanoseconds:cpu:nanoseconds`).
//! - Sample attributes with string values become pprof labels (so `span_id`, `span_name` and
//!   `trace_id` are sample labels, others split series); a sample's link adds `span_id` and
//!   `trace_id` labels (Pyroscope keeps only the span id; the trace id feeds the trace cross-index).
//! - A sample's values are summed (OTLP 1.10 gives one value per occurrence); with no values its
//!   value is the number of its timestamps.
//! - A mapping's build id is its `process.executable.build_id.gnu` attribute.
//! - Time 0 means now; duration 0 means 10 s.
//!
//! Differences: attribute keys that are not label names (`[A-Za-z_][A-Za-z0-9_.]*`) are skipped
//! rather than failing the request, and an invalid profile is rejected alone (OTLP partial
//! success, counted in profiles) instead of failing the whole request. A request with profiles but
//! no dictionary is malformed as a whole.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as PValue};
use opentelemetry_proto::tonic::profiles::v1development::{self as otlp, ProfilesDictionary};
use storage::model::{Labels, ProfilesBatch};

use super::{Limits, Mapped, Reject, RejectReason, Tally, check_time, ns_i64};
use crate::pprof::{self, PprofError, PprofLimits, proto as pp};

/// Default duration of a profile that gives none, as Pyroscope assumes.
const DEFAULT_DURATION_NS: i64 = 10_000_000_000;

/// Maps an OTLP profiles export request. Items are profiles: each OTLP `Profile` is accepted or
/// rejected whole. `Err` only for a request that is malformed as a whole (profiles but no
/// dictionary).
pub fn profiles(
    req: ExportProfilesServiceRequest,
    pprof_limits: &PprofLimits,
    limits: &Limits,
    now_ns: i64,
) -> Result<Mapped<ProfilesBatch>, String> {
    let mut tally = Tally::new(("profile", "profiles"));
    let mut batch = ProfilesBatch::default();
    let any = req.resource_profiles.iter().flat_map(|r| &r.scope_profiles).any(|s| !s.profiles.is_empty());
    let Some(dict) = req.dictionary else {
        if any {
            return Err("the request has profiles but no dictionary".into());
        }
        return Ok(tally.finish(batch, limits));
    };
    for rp in req.resource_profiles {
        let resource = string_attributes(&dict, rp.resource.map(|r| r.attributes).unwrap_or_default());
        let service = resource_service_name(&resource);
        for sp in rp.scope_profiles {
            let scope = string_attributes(&dict, sp.scope.map(|s| s.attributes).unwrap_or_default());
            let mut base = Labels::new();
            base.set("__delta__", "false");
            base.set("__otel__", "true");
            for (k, v) in resource.iter().chain(&scope) {
                if label_name_ok(k) && base.get(k).is_none() && k != "__name__" {
                    base.set(k.as_str(), v.as_str());
                }
            }
            for p in sp.profiles {
                let time_ns = if p.time_unix_nano == 0 { now_ns } else { ns_i64(p.time_unix_nano) };
                if let Err(reason) = check_time(time_ns, limits, now_ns) {
                    tally.reject(Reject::new(reason), 1);
                    continue;
                }
                match profile(&p, &dict, &base, &service, time_ns, pprof_limits) {
                    Ok(mapped) => {
                        tally.accept(1);
                        batch.profiles.extend(mapped);
                    }
                    Err(e) => tally.reject(Reject::with(RejectReason::InvalidProfile, e.to_string()), 1),
                }
            }
        }
    }
    Ok(tally.finish(batch, limits))
}

/// The non-empty string-valued attributes as `(key, value)`; keys and values may be given as
/// dictionary string indexes (`key_strindex`, `string_value_strindex`), as OTLP profiles allow.
fn string_attributes(dict: &ProfilesDictionary, kvs: Vec<KeyValue>) -> Vec<(String, String)> {
    let lookup = |i: i32| usize::try_from(i).ok().and_then(|i| dict.string_table.get(i)).cloned();
    kvs.into_iter()
        .filter_map(|kv| {
            let key = if kv.key.is_empty() { lookup(kv.key_strindex)? } else { kv.key };
            let value = match kv.value?.value? {
                PValue::StringValue(s) => s,
                PValue::StringValueStrindex(i) => lookup(i)?,
                _ => return None,
            };
            (!value.is_empty()).then_some((key, value))
        })
        .collect()
}

fn label_name_ok(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// `service.name`, else `unknown_service` (`:<process.executable.name>` when known).
fn resource_service_name(attrs: &[(String, String)]) -> String {
    let mut fallback = "unknown_service".to_string();
    for (k, v) in attrs {
        match k.as_str() {
            "service.name" => return v.clone(),
            "process.executable.name" => fallback = format!("unknown_service:{v}"),
            _ => {}
        }
    }
    fallback
}

fn at<'a, T>(table: &'a [T], i: i32, what: &str) -> Result<&'a T, PprofError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| PprofError::Corrupt(format!("{what} index {i} is out of the dictionary")))
}

/// A dictionary attribute as `(key, string value)`; non-string values give `None`.
fn attribute(dict: &ProfilesDictionary, i: i32) -> Result<Option<(&str, &str)>, PprofError> {
    let kv = at(&dict.attribute_table, i, "attribute")?;
    let key = at(&dict.string_table, kv.key_strindex, "string")?;
    let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(PValue::StringValue(s)) => s.as_str(),
        Some(PValue::StringValueStrindex(s)) => at(&dict.string_table, *s, "string")?.as_str(),
        _ => return Ok(None),
    };
    Ok((!value.is_empty()).then_some((key.as_str(), value)))
}

/// Builds the pprof profile(s) of one OTLP profile (one per sample `service.name`) and maps them.
fn profile(
    p: &otlp::Profile,
    dict: &ProfilesDictionary,
    base: &Labels,
    resource_service: &str,
    time_ns: i64,
    limits: &PprofLimits,
) -> Result<Vec<storage::model::Profile>, PprofError> {
    if p.samples.len() > limits.max_samples_per_profile {
        return Err(PprofError::TooManySamples { count: p.samples.len(), max: limits.max_samples_per_profile });
    }
    let st = p.sample_type.as_ref().ok_or_else(|| PprofError::Corrupt("the profile has no sample type".into()))?;
    let (st_type, st_unit) =
        (at(&dict.string_table, st.type_strindex, "string")?, at(&dict.string_table, st.unit_strindex, "string")?);
    let (pt_type, pt_unit) = match &p.period_type {
        Some(pt) if p.period != 0 => (
            at(&dict.string_table, pt.type_strindex, "string")?.as_str(),
            at(&dict.string_table, pt.unit_strindex, "string")?.as_str(),
        ),
        _ => ("", ""),
    };
    let id = format!("{st_type}:{st_unit}:{pt_type}:{pt_unit}");
    let (name, sample_type, scale) = match id.as_str() {
        "samples:count:cpu:nanoseconds" => ("process_cpu", ("cpu", "nanoseconds"), p.period),
        "events:nanoseconds::" => ("off_cpu", (st_type.as_str(), st_unit.as_str()), 1),
        _ => ("process_cpu", (st_type.as_str(), st_unit.as_str()), 1),
    };
    // Samples by service.
    let mut by_service: BTreeMap<&str, Vec<&otlp::Sample>> = BTreeMap::new();
    for s in &p.samples {
        let mut service = resource_service;
        for &a in &s.attribute_indices {
            if let Some(("service.name", v)) = attribute(dict, a)? {
                service = v;
            }
        }
        by_service.entry(service).or_default().push(s);
    }
    let mut out = Vec::new();
    for (service, samples) in by_service {
        let mut b = Builder::new(dict);
        let (t, u) = (b.string(sample_type.0), b.string(sample_type.1));
        let (ptt, ptu) = (b.string(pt_type), b.string(pt_unit));
        for s in samples {
            b.sample(s, scale)?;
        }
        let pprof = pp::Profile {
            sample_type: vec![pp::ValueType { r#type: t, unit: u }],
            sample: b.samples,
            mapping: b.mappings,
            location: b.locations,
            function: b.functions,
            string_table: b.strings,
            time_nanos: time_ns,
            duration_nanos: if p.duration_nano == 0 { DEFAULT_DURATION_NS } else { ns_i64(p.duration_nano) },
            period_type: (!pt_type.is_empty()).then_some(pp::ValueType { r#type: ptt, unit: ptu }),
            period: p.period,
            ..Default::default()
        };
        let mut labels = base.clone();
        labels.set("__name__", name);
        labels.set("service_name", service);
        out.extend(pprof::map_decoded(pprof, &labels, time_ns, DEFAULT_DURATION_NS, limits)?);
    }
    Ok(out)
}

/// A pprof profile under construction from dictionary entries (pprof ids are positions + 1).
struct Builder<'a> {
    dict: &'a ProfilesDictionary,
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    mappings: Vec<pp::Mapping>,
    mapping_ids: HashMap<i32, u64>,
    locations: Vec<pp::Location>,
    location_ids: HashMap<i32, u64>,
    functions: Vec<pp::Function>,
    function_ids: HashMap<i32, u64>,
    samples: Vec<pp::Sample>,
}

impl<'a> Builder<'a> {
    fn new(dict: &'a ProfilesDictionary) -> Self {
        Builder {
            dict,
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            samples: Vec::new(),
        }
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(i) = self.string_ids.get(s) {
            return *i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), i);
        i
    }

    fn dict_string(&mut self, i: i32) -> Result<i64, PprofError> {
        let s = at(&self.dict.string_table, i, "string")?;
        Ok(self.string(s))
    }

    fn mapping(&mut self, i: i32) -> Result<u64, PprofError> {
        if i == 0 {
            return Ok(0); // the zero mapping: none
        }
        if let Some(id) = self.mapping_ids.get(&i) {
            return Ok(*id);
        }
        let m = at(&self.dict.mapping_table, i, "mapping")?;
        let mut build_id = 0;
        for &a in &m.attribute_indices {
            if let Some(("process.executable.build_id.gnu", v)) = attribute(self.dict, a)? {
                build_id = self.string(v);
            }
        }
        let id = self.mappings.len() as u64 + 1;
        let filename = self.dict_string(m.filename_strindex)?;
        self.mappings.push(pp::Mapping {
            id,
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename,
            build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mapping_ids.insert(i, id);
        Ok(id)
    }

    fn function(&mut self, i: i32) -> Result<u64, PprofError> {
        if let Some(id) = self.function_ids.get(&i) {
            return Ok(*id);
        }
        let f = at(&self.dict.function_table, i, "function")?;
        let id = self.functions.len() as u64 + 1;
        let function = pp::Function {
            id,
            name: self.dict_string(f.name_strindex)?,
            system_name: self.dict_string(f.system_name_strindex)?,
            filename: self.dict_string(f.filename_strindex)?,
            start_line: f.start_line,
        };
        self.functions.push(function);
        self.function_ids.insert(i, id);
        Ok(id)
    }

    fn location(&mut self, i: i32) -> Result<u64, PprofError> {
        if let Some(id) = self.location_ids.get(&i) {
            return Ok(*id);
        }
        let l = at(&self.dict.location_table, i, "location")?;
        let mapping_id = self.mapping(l.mapping_index)?;
        let mut line = Vec::with_capacity(l.lines.len());
        for ln in &l.lines {
            line.push(pp::Line { function_id: self.function(ln.function_index)?, line: ln.line, column: ln.column });
        }
        let id = self.locations.len() as u64 + 1;
        self.locations.push(pp::Location { id, mapping_id, address: l.address, line, is_folded: false });
        self.location_ids.insert(i, id);
        Ok(id)
    }

    fn sample(&mut self, s: &otlp::Sample, scale: i64) -> Result<(), PprofError> {
        let value = if s.values.is_empty() {
            if s.timestamps_unix_nano.is_empty() {
                return Err(PprofError::Corrupt("a sample has neither values nor timestamps".into()));
            }
            s.timestamps_unix_nano.len() as i64
        } else {
            s.values.iter().fold(0i64, |a, v| a.saturating_add(*v))
        };
        let stack = at(&self.dict.stack_table, s.stack_index, "stack")?;
        let mut location_id = Vec::with_capacity(stack.location_indices.len());
        for &l in &stack.location_indices {
            location_id.push(self.location(l)?);
        }
        let mut label = Vec::new();
        for &a in &s.attribute_indices {
            if let Some((k, v)) = attribute(self.dict, a)?
                && k != "service.name"
            {
                label.push(pp::Label { key: self.string(k), str: self.string(v), ..Default::default() });
            }
        }
        if s.link_index != 0 {
            let link = at(&self.dict.link_table, s.link_index, "link")?;
            if link.span_id.len() == 8 && link.span_id.iter().any(|b| *b != 0) {
                let (k, v) = (self.string("span_id"), self.string(&hex::encode(&link.span_id)));
                label.push(pp::Label { key: k, str: v, ..Default::default() });
                if link.trace_id.len() == 16 && link.trace_id.iter().any(|b| *b != 0) {
                    let (k, v) = (self.string("trace_id"), self.string(&hex::encode(&link.trace_id)));
                    label.push(pp::Label { key: k, str: v, ..Default::default() });
                }
            }
        }
        self.samples.push(pp::Sample { location_id, value: vec![value.saturating_mul(scale)], label });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::profiles::v1development::{
        Function, KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ResourceProfiles, Sample, ScopeProfiles,
        Stack, ValueType,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use opentelemetry_proto::tonic::common::v1::AnyValue;

    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(PValue::StringValue(v.into())) }),
            key_strindex: 0,
        }
    }

    /// strings: 0 "", 1 samples, 2 count, 3 cpu, 4 nanoseconds, 5 main, 6 work, 7 /bin/app,
    /// 8 service.name, 9 other-svc, 10 thread, 11 worker-1, 12 process.executable.build_id.gnu, 13 b1d
    fn dictionary() -> ProfilesDictionary {
        let s = |v: &str| AnyValue { value: Some(PValue::StringValue(v.into())) };
        ProfilesDictionary {
            string_table: [
                "",
                "samples",
                "count",
                "cpu",
                "nanoseconds",
                "main",
                "work",
                "/bin/app",
                "service.name",
                "other-svc",
                "thread",
                "worker-1",
                "process.executable.build_id.gnu",
                "b1d",
            ]
            .map(String::from)
            .to_vec(),
            mapping_table: vec![
                Mapping::default(),
                Mapping {
                    memory_start: 0x1000,
                    memory_limit: 0x9000,
                    filename_strindex: 7,
                    attribute_indices: vec![3],
                    ..Default::default()
                },
            ],
            function_table: vec![
                Function::default(),
                Function { name_strindex: 5, ..Default::default() },
                Function { name_strindex: 6, ..Default::default() },
            ],
            location_table: vec![
                Location::default(),
                Location {
                    mapping_index: 1,
                    address: 0x1100,
                    lines: vec![Line { function_index: 1, line: 3, column: 0 }],
                    ..Default::default()
                },
                Location {
                    mapping_index: 1,
                    address: 0x1200,
                    lines: vec![Line { function_index: 2, line: 9, column: 0 }],
                    ..Default::default()
                },
            ],
            stack_table: vec![
                Stack::default(),
                Stack { location_indices: vec![2, 1] }, // leaf first: work <- main
                Stack { location_indices: vec![1] },
            ],
            link_table: vec![Link::default(), Link { trace_id: (1..=16).collect(), span_id: vec![0xAA; 8] }],
            attribute_table: vec![
                KeyValueAndUnit::default(),
                KeyValueAndUnit { key_strindex: 8, value: Some(s("other-svc")), unit_strindex: 0 },
                KeyValueAndUnit {
                    key_strindex: 10,
                    value: Some(AnyValue { value: Some(PValue::StringValueStrindex(11)) }),
                    unit_strindex: 0,
                },
                KeyValueAndUnit { key_strindex: 12, value: Some(s("b1d")), unit_strindex: 0 },
            ],
        }
    }

    fn cpu_profile(samples: Vec<Sample>) -> Profile {
        Profile {
            sample_type: Some(ValueType { type_strindex: 1, unit_strindex: 2 }),
            period_type: Some(ValueType { type_strindex: 3, unit_strindex: 4 }),
            period: 10_000_000,
            time_unix_nano: (NOW - 20_000_000_000) as u64,
            duration_nano: 10_000_000_000,
            samples,
            ..Default::default()
        }
    }

    fn request(profiles: Vec<Profile>) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "shop"), kv("host.name", "h1"), kv("bad key", "x")],
                    ..Default::default()
                }),
                scope_profiles: vec![ScopeProfiles {
                    scope: Some(InstrumentationScope {
                        attributes: vec![kv("host.name", "ignored"), kv("profiler", "ebpf")],
                        ..Default::default()
                    }),
                    profiles,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
            dictionary: Some(dictionary()),
        }
    }

    fn map(req: ExportProfilesServiceRequest) -> Mapped<ProfilesBatch> {
        profiles(req, &PprofLimits::default(), &Limits::default(), NOW).unwrap()
    }

    #[test]
    fn cpu_samples_become_nanoseconds_with_labels_links_and_mappings() {
        let samples = vec![
            Sample {
                stack_index: 1,
                values: vec![2, 1],
                link_index: 1,
                attribute_indices: vec![2],
                ..Default::default()
            },
            Sample { stack_index: 2, timestamps_unix_nano: vec![1, 2, 3], ..Default::default() },
            Sample { stack_index: 2, values: vec![5], attribute_indices: vec![1], ..Default::default() },
        ];
        let m = map(request(vec![cpu_profile(samples)]));
        assert_eq!((m.accepted, m.rejected), (1, 0), "{}", m.message);
        let got: Vec<String> =
            m.batch.profiles.iter().map(|p| format!("{} {}", p.profile_type.id(), p.labels)).collect();
        assert_eq!(
            got,
            [
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", __otel__=\"true\", host.name=\"h1\", profiler=\"ebpf\", service.name=\"shop\", service_name=\"other-svc\"}",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", __otel__=\"true\", host.name=\"h1\", profiler=\"ebpf\", service.name=\"shop\", service_name=\"shop\"}",
                "process_cpu:cpu:nanoseconds:cpu:nanoseconds {__delta__=\"false\", __name__=\"process_cpu\", __otel__=\"true\", host.name=\"h1\", profiler=\"ebpf\", service.name=\"shop\", service_name=\"shop\", thread=\"worker-1\"}",
            ]
        );
        let other = &m.batch.profiles[0];
        assert_eq!(other.samples[0].value, 50_000_000);
        let shop = &m.batch.profiles[1];
        assert_eq!(shop.time_ns, NOW - 20_000_000_000);
        assert_eq!(shop.samples[0].value, 30_000_000); // three timestamps × period
        let linked = &m.batch.profiles[2];
        let s = &linked.samples[0];
        assert_eq!(s.value, 30_000_000); // values summed × period
        assert_eq!(s.span_id.map(|x| x.to_hex()).as_deref(), Some("aaaaaaaaaaaaaaaa"));
        assert_eq!(
            s.labels.iter().find(|l| l.name == "trace_id").map(|l| l.value.as_str()),
            Some("0102030405060708090a0b0c0d0e0f10")
        );
        let names: Vec<&str> = s
            .locations
            .iter()
            .map(|l| linked.functions[linked.locations[*l as usize].lines[0].0 as usize].name.as_str())
            .collect();
        assert_eq!(names, ["work", "main"]);
        assert_eq!(linked.mappings.len(), 1);
        assert_eq!((linked.mappings[0].filename.as_str(), linked.mappings[0].build_id.as_str()), ("/bin/app", "b1d"));
        assert!(linked.locations.iter().all(|l| l.mapping == 1));
    }

    #[test]
    fn bad_profiles_are_rejected_alone() {
        let good = cpu_profile(vec![Sample { stack_index: 1, values: vec![1], ..Default::default() }]);
        let bad_stack = cpu_profile(vec![Sample { stack_index: 99, values: vec![1], ..Default::default() }]);
        let no_type = Profile { sample_type: None, ..good.clone() };
        let empty = cpu_profile(vec![Sample { stack_index: 1, ..Default::default() }]);
        let future = Profile { time_unix_nano: (NOW + 3_600_000_000_000) as u64, ..good.clone() };
        let m = map(request(vec![good, bad_stack, no_type, empty, future]));
        assert_eq!((m.accepted, m.rejected), (1, 4));
        assert_eq!(m.reasons, vec![(RejectReason::InvalidProfile, 3), (RejectReason::TimestampTooNew, 1)]);
        assert!(
            m.message.starts_with(
                "4 profiles rejected: 3 invalid profile (invalid profile: stack index 99 is out of the dictionary)"
            ),
            "{}",
            m.message
        );
        // No dictionary: the request as a whole.
        let mut req = request(vec![cpu_profile(vec![])]);
        req.dictionary = None;
        assert!(profiles(req, &PprofLimits::default(), &Limits::default(), NOW).is_err());
        // Over the sample limit.
        let many = cpu_profile(vec![Sample { stack_index: 1, values: vec![1], ..Default::default() }; 3]);
        let small = PprofLimits { max_samples_per_profile: 2, ..PprofLimits::default() };
        let m = profiles(request(vec![many]), &small, &Limits::default(), NOW).unwrap();
        assert_eq!((m.accepted, m.rejected), (0, 1));
        assert!(m.message.contains("limits.max_profile_samples"), "{}", m.message);
    }

    #[test]
    fn off_cpu_and_service_fallback() {
        let mut dict = dictionary();
        dict.string_table.extend(["process.executable.name", "app", "events"].map(String::from));
        let events = dict.string_table.len() as i32 - 1;
        // Keys and values given as dictionary string indexes.
        let exe = KeyValue {
            key: String::new(),
            key_strindex: events - 2,
            value: Some(AnyValue { value: Some(PValue::StringValueStrindex(events - 1)) }),
        };
        let p = Profile {
            sample_type: Some(ValueType { type_strindex: events, unit_strindex: 4 }),
            time_unix_nano: 0,
            samples: vec![Sample { stack_index: 1, values: vec![7, 8], ..Default::default() }],
            ..Default::default()
        };
        let req = ExportProfilesServiceRequest {
            resource_profiles: vec![ResourceProfiles {
                resource: Some(Resource { attributes: vec![exe], ..Default::default() }),
                scope_profiles: vec![ScopeProfiles { profiles: vec![p], ..Default::default() }],
                schema_url: String::new(),
            }],
            dictionary: Some(dict),
        };
        let m = map(req);
        assert_eq!(m.accepted, 1, "{}", m.message);
        let p = &m.batch.profiles[0];
        assert_eq!(p.profile_type.id(), "off_cpu:events:nanoseconds::");
        assert_eq!(p.labels.get("service_name"), Some("unknown_service:app"));
        assert_eq!(p.labels.get("process.executable.name"), Some("app"));
        assert_eq!((p.time_ns, p.duration_ns), (NOW, DEFAULT_DURATION_NS));
        assert_eq!(p.samples[0].value, 15);
    }
}

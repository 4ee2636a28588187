//! The frozen record-version-1 schema, decoded and converted to today's model.
//!
//! Version 2 added `Profile::mappings`, `Location::mapping` and the `WriteBatch::Samples` variant
//! (appended last); everything else is unchanged, so
//! version 1 differs only in its profile types, frozen here as they were. Whenever a model type
//! changes again, its version-2 shape must be frozen the same way (and the types below keep
//! describing version 1).

use serde::Deserialize;

use crate::model::{
    Function, Labels, LogsBatch, MetricsBatch, Profile, ProfileSample, ProfileType, ProfilesBatch, SpansBatch,
    WriteBatch,
};

#[derive(Deserialize)]
enum WriteBatchV1 {
    Metrics(MetricsBatch),
    Logs(LogsBatch),
    Spans(SpansBatch),
    Profiles(ProfilesBatchV1),
}

#[derive(Deserialize)]
struct ProfilesBatchV1 {
    profiles: Vec<ProfileV1>,
}

#[derive(Deserialize)]
struct ProfileV1 {
    labels: Labels,
    profile_type: ProfileType,
    time_ns: i64,
    duration_ns: i64,
    period: i64,
    functions: Vec<Function>,
    locations: Vec<LocationV1>,
    samples: Vec<ProfileSample>,
}

/// `Location` before mappings (also the location shape of profiles symbols files version 1).
#[derive(Deserialize)]
pub(crate) struct LocationV1 {
    pub address: u64,
    pub lines: Vec<(u32, i64)>,
}

impl From<LocationV1> for crate::model::Location {
    fn from(l: LocationV1) -> Self {
        crate::model::Location { address: l.address, lines: l.lines, mapping: 0 }
    }
}

/// Decodes a version-1 record body; `Err` as postcard reports it, or for trailing bytes.
pub(crate) fn decode(body: &[u8]) -> Result<WriteBatch, String> {
    let (batch, rest) =
        postcard::take_from_bytes::<WriteBatchV1>(body).map_err(|e| format!("undecodable payload: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after the encoded batch", rest.len()));
    }
    Ok(match batch {
        WriteBatchV1::Metrics(b) => WriteBatch::Metrics(b),
        WriteBatchV1::Logs(b) => WriteBatch::Logs(b),
        WriteBatchV1::Spans(b) => WriteBatch::Spans(b),
        WriteBatchV1::Profiles(b) => WriteBatch::Profiles(ProfilesBatch {
            profiles: b
                .profiles
                .into_iter()
                .map(|p| Profile {
                    labels: p.labels,
                    profile_type: p.profile_type,
                    time_ns: p.time_ns,
                    duration_ns: p.duration_ns,
                    period: p.period,
                    functions: p.functions,
                    locations: p.locations.into_iter().map(Into::into).collect(),
                    samples: p.samples,
                    mappings: Vec::new(),
                })
                .collect(),
        }),
    })
}

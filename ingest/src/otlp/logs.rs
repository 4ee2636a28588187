//! OTLP logs → `LogsBatch`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord as PLogRecord;
use storage::model::{AnyValue, KeyValue, Labels, LogGroup, LogRecord, LogsBatch, SpanId, TraceId};

use super::attrs::{any_value, attributes, resource, scope, value_size};
use super::{Limits, Mapped, Reject, RejectReason, Tally, check_time, ns_i64};

/// How log streams are formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsOptions {
    /// Resource attributes that become stream labels, when present. Keep this set small: every
    /// distinct combination of values is a stream.
    pub stream_label_attributes: Vec<String>,
}

impl Default for LogsOptions {
    fn default() -> Self {
        LogsOptions {
            stream_label_attributes: ["service.name", "service.namespace", "deployment.environment"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Maps an OTLP logs request. Records are grouped per resource × scope as sent, each group
/// carrying its stream labels; groups left empty by rejections are dropped.
///
/// - Timestamp: `time_unix_nano`, else `observed_time_unix_nano`, else `now_ns`; the result must
///   be inside the `[now - max_age, now + max_future]` window. `observed_timestamp_ns` keeps the
///   sent value (0 stays 0).
/// - Body: a string verbatim; any other value as `AnyValue::to_json` (a string nested in an array
///   or map stays JSON); no body → `""`. At most `max_log_body_bytes`.
/// - trace_id / span_id: empty or all zero → `None` (the OTLP spec says receivers should treat
///   such ids as "no trace"); any other length → the record is rejected.
/// - Stream labels: `level` from the severity ([`level`]; records are grouped by it), and for each configured attribute present on the resource, the key with every
///   character outside `[a-zA-Z0-9_]` replaced by `_` (`service.name` → `service_name`), valued by
///   `AnyValue::to_label_string`; empty values are left out.
pub fn logs(req: ExportLogsServiceRequest, opts: &LogsOptions, limits: &Limits, now_ns: i64) -> Mapped<LogsBatch> {
    let mut tally = Tally::new(("log record", "log records"));
    let mut batch = LogsBatch::default();
    for rl in req.resource_logs {
        let mut res = match resource(rl.resource, rl.schema_url, limits) {
            Ok(r) => r,
            Err(e) => {
                let n = rl.scope_logs.iter().map(|s| s.log_records.len() as u64).sum();
                tally.reject(e, n);
                continue;
            }
        };
        let mut stream = stream_labels(&res.attributes, opts);
        let last = rl.scope_logs.len().saturating_sub(1);
        for (i, sl) in rl.scope_logs.into_iter().enumerate() {
            let sc = match scope(sl.scope, sl.schema_url, limits) {
                Ok(s) => s,
                Err(e) => {
                    tally.reject(e, sl.log_records.len() as u64);
                    continue;
                }
            };
            let mut records = Vec::with_capacity(sl.log_records.len());
            for r in sl.log_records {
                match map_record(r, limits, now_ns) {
                    Ok(r) => records.push(r),
                    Err(e) => tally.reject(e, 1),
                }
            }
            if records.is_empty() {
                continue;
            }
            tally.accept(records.len() as u64);
            // One group per `level`: the level is a stream label (Grafana's logs volume groups by it).
            let mut by_level: Vec<(Option<&'static str>, Vec<LogRecord>)> = Vec::new();
            for r in records {
                let lv = level(&r);
                match by_level.iter_mut().find(|(l, _)| *l == lv) {
                    Some((_, v)) => v.push(r),
                    None => by_level.push((lv, vec![r])),
                }
            }
            let n = by_level.len();
            for (j, (lv, records)) in by_level.into_iter().enumerate() {
                let (resource, mut stream) = if i == last && j + 1 == n {
                    (std::mem::take(&mut res), std::mem::take(&mut stream))
                } else {
                    (res.clone(), stream.clone())
                };
                if let Some(lv) = lv {
                    stream.set("level", lv);
                }
                batch.groups.push(LogGroup { resource, scope: sc.clone(), stream, records });
            }
        }
    }
    tally.finish(batch, limits)
}

/// The `level` stream label of a record: from the severity number (OTLP's ranges), else from
/// the severity text; `None` when the record has neither.
pub fn level(r: &LogRecord) -> Option<&'static str> {
    Some(match r.severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => match r.severity_text.trim().to_ascii_lowercase().as_str() {
            "trace" => "trace",
            "debug" | "dbug" => "debug",
            "info" | "information" | "notice" => "info",
            "warn" | "warning" => "warn",
            "error" | "err" | "eror" => "error",
            "fatal" | "critical" | "crit" | "alert" | "emergency" | "panic" => "fatal",
            _ => return None,
        },
    })
}

fn stream_labels(resource_attrs: &[KeyValue], opts: &LogsOptions) -> Labels {
    let pairs = opts.stream_label_attributes.iter().filter_map(|name| {
        let kv = resource_attrs.iter().find(|kv| &kv.key == name)?;
        let label: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
        Some((label, kv.value.to_label_string()))
    });
    Labels::from_pairs(pairs)
}

fn map_record(r: PLogRecord, limits: &Limits, now_ns: i64) -> Result<LogRecord, Reject> {
    let trace_id = match r.trace_id.len() {
        0 => None,
        16 => TraceId::from_slice(&r.trace_id),
        _ => return Err(Reject::new(RejectReason::InvalidTraceId)),
    };
    let span_id = match r.span_id.len() {
        0 => None,
        8 => SpanId::from_slice(&r.span_id),
        _ => return Err(Reject::new(RejectReason::InvalidSpanId)),
    };
    let timestamp_ns = match (r.time_unix_nano, r.observed_time_unix_nano) {
        (0, 0) => now_ns,
        (0, observed) => ns_i64(observed),
        (t, _) => ns_i64(t),
    };
    check_time(timestamp_ns, limits, now_ns).map_err(Reject::new)?;
    // A rendered body is never shorter than the bytes its value holds: reject before rendering.
    if value_size(&r.body) > limits.max_log_body_bytes {
        return Err(Reject::new(RejectReason::BodyTooLong));
    }
    let body = match any_value(r.body) {
        AnyValue::Empty => String::new(),
        AnyValue::String(s) => s,
        structured => structured.to_json(),
    };
    if body.len() > limits.max_log_body_bytes {
        return Err(Reject::new(RejectReason::BodyTooLong));
    }
    Ok(LogRecord {
        timestamp_ns,
        observed_timestamp_ns: ns_i64(r.observed_time_unix_nano),
        severity_number: r.severity_number,
        severity_text: r.severity_text,
        body,
        attributes: attributes(r.attributes, limits, "key")?,
        dropped_attributes_count: r.dropped_attributes_count,
        trace_id,
        span_id,
        flags: r.flags,
        event_name: r.event_name,
    })
}

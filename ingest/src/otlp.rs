//! OTLP → model: pure, synchronous mapping of decoded OTLP export requests, with validation and
//! limits.
//!
//! Each signal has one entry point ([`traces`], [`logs`], [`metrics`], [`profiles`]) that takes the decoded
//! request by value and returns a [`Mapped`] batch: what survived, how many items were accepted
//! and rejected, the rejection reasons with counts, and a human summary meant for OTLP's
//! `partial_success.error_message`.
//!
//! An *item* is a span, a log record, a metric data point (an OTLP data point, not a generated
//! Prometheus series), or a profile. Rejection never fails the whole request: invalid items are dropped and
//! counted; a resource (or scope) whose own attributes break the limits takes all of its items
//! with it.
//!
//! Metrics follow Prometheus' OTLP receiver (the `otlptranslator` and `prometheusremotewrite`
//! packages, "underscore escaping with suffixes" strategy and Prometheus' default label
//! sanitisation); deliberate differences are listed on [`metrics`].

mod attrs;
mod hash;
mod logs;
mod metrics;
mod metrics_histogram;
mod metrics_state;
mod naming;
mod profiles;
mod traces;

use std::fmt::Write as _;

pub use logs::{LogsOptions, logs};
pub use metrics::metrics;
pub use metrics_state::MetricsState;
pub use profiles::profiles;
pub use traces::traces;

/// Ingest limits applied while mapping. Every field is a hard per-item limit; breaking one rejects
/// the item (or the whole resource/scope group when the offending attribute belongs to it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest string or bytes attribute value (span, event, link, log, resource, scope, data point
    /// attributes), in bytes. Composite values (arrays, key-value lists) count the bytes of all
    /// their strings, bytes and nested keys.
    pub max_attribute_value_bytes: usize,
    /// Longest log body, in bytes, after structured bodies are rendered as JSON.
    pub max_log_body_bytes: usize,
    /// Most attributes per item (and per resource and scope).
    pub max_attributes: usize,
    /// Longest metric label name, in bytes, after translation.
    pub max_label_name_bytes: usize,
    /// Longest metric label value, in bytes, after translation (`__name__` included).
    pub max_label_value_bytes: usize,
    /// Most labels on one generated series, `__name__`, `le` and `quantile` included.
    pub max_labels_per_series: usize,
    /// Timestamps further ahead of `now` than this are rejected, in ns.
    pub max_future_ns: i64,
    /// Timestamps older than `now` minus this are rejected, in ns; 0 means unlimited.
    pub max_age_ns: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_attribute_value_bytes: 65_536,
            max_log_body_bytes: 262_144,
            max_attributes: 128,
            max_label_name_bytes: 1_024,
            max_label_value_bytes: 4_096,
            max_labels_per_series: 64,
            max_future_ns: 10 * 60 * 1_000_000_000,
            max_age_ns: 7 * 24 * 3600 * 1_000_000_000,
        }
    }
}

/// Why an item was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// A span's trace_id is not 16 non-zero bytes, or a log record's is neither empty nor 16 bytes.
    InvalidTraceId,
    /// A span's span_id is not 8 non-zero bytes, or a log record's is neither empty nor 8 bytes.
    InvalidSpanId,
    /// A span's parent_span_id is neither empty nor 8 bytes.
    InvalidParentSpanId,
    /// A span link whose trace_id or span_id is invalid.
    InvalidLinkId,
    /// An attribute value is longer than `max_attribute_value_bytes`.
    AttributeTooLong,
    /// More than `max_attributes` attributes.
    TooManyAttributes,
    /// A log body is longer than `max_log_body_bytes`.
    BodyTooLong,
    /// A timestamp is more than `max_future_ns` ahead of now.
    TimestampTooNew,
    /// A timestamp is missing (spans), or older than `max_age_ns`.
    TimestampTooOld,
    /// A span ends before it starts.
    EndBeforeStart,
    /// A metric or data point that cannot be translated (empty name, unknown temporality, missing
    /// value or time, exponential histogram scale below -4, out-of-range bucket index).
    InvalidMetric,
    /// A translated label name or value is longer than the limits.
    LabelTooLong,
    /// A generated series has more than `max_labels_per_series` labels.
    TooManyLabels,
    /// An attribute key that does not translate to a label name (empty, or only underscores).
    InvalidLabelName,
    /// A delta data point older than one already accumulated for the same series.
    DeltaOutOfOrder,
    /// A profile that cannot be mapped (an index outside the dictionary, no sample type, over the
    /// sample or symbol limits, a series with too many labels).
    InvalidProfile,
}

impl RejectReason {
    /// Every reason, for pre-registering self-metrics label values.
    pub const ALL: &'static [RejectReason] = &[
        RejectReason::InvalidTraceId,
        RejectReason::InvalidSpanId,
        RejectReason::InvalidParentSpanId,
        RejectReason::InvalidLinkId,
        RejectReason::AttributeTooLong,
        RejectReason::TooManyAttributes,
        RejectReason::BodyTooLong,
        RejectReason::TimestampTooNew,
        RejectReason::TimestampTooOld,
        RejectReason::EndBeforeStart,
        RejectReason::InvalidMetric,
        RejectReason::LabelTooLong,
        RejectReason::TooManyLabels,
        RejectReason::InvalidLabelName,
        RejectReason::DeltaOutOfOrder,
        RejectReason::InvalidProfile,
    ];

    /// snake_case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidTraceId => "invalid_trace_id",
            RejectReason::InvalidSpanId => "invalid_span_id",
            RejectReason::InvalidParentSpanId => "invalid_parent_span_id",
            RejectReason::InvalidLinkId => "invalid_link_id",
            RejectReason::AttributeTooLong => "attribute_too_long",
            RejectReason::TooManyAttributes => "too_many_attributes",
            RejectReason::BodyTooLong => "body_too_long",
            RejectReason::TimestampTooNew => "timestamp_too_new",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::EndBeforeStart => "end_before_start",
            RejectReason::InvalidMetric => "invalid_metric",
            RejectReason::LabelTooLong => "label_too_long",
            RejectReason::TooManyLabels => "too_many_labels",
            RejectReason::InvalidLabelName => "invalid_label_name",
            RejectReason::DeltaOutOfOrder => "delta_out_of_order",
            RejectReason::InvalidProfile => "invalid_profile",
        }
    }

    /// The phrase used in [`Mapped::message`], with the limit it refers to.
    fn describe(self, limits: &Limits) -> String {
        match self {
            RejectReason::InvalidTraceId => "invalid trace_id (must be 16 non-zero bytes)".into(),
            RejectReason::InvalidSpanId => "invalid span_id (must be 8 non-zero bytes)".into(),
            RejectReason::InvalidParentSpanId => "invalid parent_span_id (must be empty or 8 bytes)".into(),
            RejectReason::InvalidLinkId => {
                "link with an invalid trace_id or span_id (must be 16 and 8 non-zero bytes)".into()
            }
            RejectReason::AttributeTooLong => {
                format!("attribute value longer than {} bytes", limits.max_attribute_value_bytes)
            }
            RejectReason::TooManyAttributes => {
                format!("more than {} attributes", limits.max_attributes)
            }
            RejectReason::BodyTooLong => {
                format!("body longer than {} bytes", limits.max_log_body_bytes)
            }
            RejectReason::TimestampTooNew => {
                format!("timestamp more than {} in the future", human_ns(limits.max_future_ns))
            }
            RejectReason::TimestampTooOld if limits.max_age_ns == 0 => "timestamp missing".into(),
            RejectReason::TimestampTooOld => {
                format!("timestamp missing or older than {}", human_ns(limits.max_age_ns))
            }
            RejectReason::EndBeforeStart => "end time before start time".into(),
            RejectReason::InvalidMetric => "invalid metric".into(),
            RejectReason::LabelTooLong => format!(
                "label name longer than {} bytes or value longer than {} bytes",
                limits.max_label_name_bytes, limits.max_label_value_bytes
            ),
            RejectReason::TooManyLabels => {
                format!("more than {} labels on a series", limits.max_labels_per_series)
            }
            RejectReason::InvalidLabelName => "attribute key not usable as a label name".into(),
            RejectReason::DeltaOutOfOrder => "delta point older than one already accumulated for its series".into(),
            RejectReason::InvalidProfile => "invalid profile".into(),
        }
    }
}

/// `600000000000` → `10m`; durations that are not whole minutes, hours or days stay in seconds.
fn human_ns(ns: i64) -> String {
    const S: i64 = 1_000_000_000;
    for (unit, n) in [("d", 86_400 * S), ("h", 3_600 * S), ("m", 60 * S)] {
        if ns >= n && ns % n == 0 {
            return format!("{}{unit}", ns / n);
        }
    }
    if ns % S == 0 { format!("{}s", ns / S) } else { format!("{ns}ns") }
}

/// The outcome of mapping one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped<B> {
    /// What survived validation, ready to be written.
    pub batch: B,
    /// Items accepted.
    pub accepted: u64,
    /// Items rejected.
    pub rejected: u64,
    /// Rejections by reason, in order of first occurrence; counts add up to `rejected`.
    pub reasons: Vec<(RejectReason, u64)>,
    /// Human summary for OTLP `partial_success.error_message`; empty when nothing was rejected.
    pub message: String,
}

/// One rejection's context, shown once per reason in the message (the first one seen).
pub(crate) struct Reject {
    pub(crate) reason: RejectReason,
    /// E.g. `key "payload"`; empty for none.
    pub(crate) detail: String,
}

impl Reject {
    pub(crate) fn new(reason: RejectReason) -> Self {
        Reject { reason, detail: String::new() }
    }

    pub(crate) fn with(reason: RejectReason, detail: String) -> Self {
        Reject { reason, detail }
    }
}

/// Longest piece of client input quoted in a message.
const MAX_DETAIL_CHARS: usize = 64;

/// `key "…"`, truncated and escaped so that client input cannot bloat or break the message.
pub(crate) fn quoted(what: &str, s: &str) -> String {
    let mut cut: String = s.chars().take(MAX_DETAIL_CHARS).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{what} {cut:?}")
}

/// Accumulates accepted/rejected counts while a request is mapped.
pub(crate) struct Tally {
    noun: (&'static str, &'static str),
    accepted: u64,
    reasons: Vec<(RejectReason, u64, String)>,
}

impl Tally {
    /// `noun` is the item's (singular, plural) name in the message.
    pub(crate) fn new(noun: (&'static str, &'static str)) -> Self {
        Tally { noun, accepted: 0, reasons: Vec::new() }
    }

    pub(crate) fn accept(&mut self, n: u64) {
        self.accepted += n;
    }

    pub(crate) fn reject(&mut self, r: Reject, n: u64) {
        if n == 0 {
            return;
        }
        match self.reasons.iter_mut().find(|(reason, _, _)| *reason == r.reason) {
            Some(entry) => entry.1 += n,
            None => self.reasons.push((r.reason, n, r.detail)),
        }
    }

    pub(crate) fn finish<B>(self, batch: B, limits: &Limits) -> Mapped<B> {
        let rejected: u64 = self.reasons.iter().map(|r| r.1).sum();
        let mut message = String::new();
        if rejected > 0 {
            let noun = if rejected == 1 { self.noun.0 } else { self.noun.1 };
            let _ = write!(message, "{rejected} {noun} rejected: ");
            for (i, (reason, n, detail)) in self.reasons.iter().enumerate() {
                if i > 0 {
                    message.push_str(", ");
                }
                let _ = write!(message, "{n} {}", reason.describe(limits));
                if !detail.is_empty() {
                    let _ = write!(message, " ({detail})");
                }
            }
        }
        Mapped {
            batch,
            accepted: self.accepted,
            rejected,
            reasons: self.reasons.into_iter().map(|(r, n, _)| (r, n)).collect(),
            message,
        }
    }
}

/// OTLP's `fixed64` nanoseconds as the model's `i64`; values past `i64::MAX` saturate (they are
/// then rejected as too new).
pub(crate) fn ns_i64(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Checks `ts_ns` against the window `[now - max_age, now + max_future]`.
pub(crate) fn check_time(ts_ns: i64, limits: &Limits, now_ns: i64) -> Result<(), RejectReason> {
    if ts_ns > now_ns.saturating_add(limits.max_future_ns) {
        return Err(RejectReason::TimestampTooNew);
    }
    if limits.max_age_ns > 0 && ts_ns < now_ns.saturating_sub(limits.max_age_ns) {
        return Err(RejectReason::TimestampTooOld);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_lists_reasons_in_order_with_first_detail() {
        let limits = Limits::default();
        let mut t = Tally::new(("span", "spans"));
        t.accept(5);
        t.reject(Reject::new(RejectReason::InvalidTraceId), 1);
        t.reject(Reject::with(RejectReason::AttributeTooLong, quoted("key", "payload")), 1);
        t.reject(Reject::new(RejectReason::InvalidTraceId), 1);
        t.reject(Reject::with(RejectReason::AttributeTooLong, quoted("key", "other")), 0);
        let m = t.finish((), &limits);
        assert_eq!((m.accepted, m.rejected), (5, 3));
        assert_eq!(
            m.message,
            "3 spans rejected: 2 invalid trace_id (must be 16 non-zero bytes), \
             1 attribute value longer than 65536 bytes (key \"payload\")"
        );
        assert_eq!(m.reasons, vec![(RejectReason::InvalidTraceId, 2), (RejectReason::AttributeTooLong, 1)]);
    }

    #[test]
    fn empty_message_without_rejections() {
        let m = Tally::new(("span", "spans")).finish((), &Limits::default());
        assert_eq!(m.message, "");
        assert!(m.reasons.is_empty());
    }

    #[test]
    fn time_window() {
        let l = Limits::default();
        let now = 1_700_000_000_000_000_000;
        assert_eq!(check_time(now, &l, now), Ok(()));
        assert_eq!(check_time(now + l.max_future_ns, &l, now), Ok(()));
        assert_eq!(check_time(now + l.max_future_ns + 1, &l, now), Err(RejectReason::TimestampTooNew));
        assert_eq!(check_time(now - l.max_age_ns - 1, &l, now), Err(RejectReason::TimestampTooOld));
        assert_eq!(check_time(0, &Limits { max_age_ns: 0, ..l.clone() }, now), Ok(()));
        assert_eq!(human_ns(l.max_future_ns), "10m");
        assert_eq!(human_ns(l.max_age_ns), "7d");
        assert_eq!(human_ns(90 * 1_000_000_000), "90s");
    }

    #[test]
    fn reason_names_are_unique_snake_case() {
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
    }
}

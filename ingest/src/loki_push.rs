//! Loki push (`POST /loki/api/v1/push`) mapped to the logs model.
//!
//! Two encodings, as Loki accepts them: snappy-compressed protobuf `logproto.PushRequest` (the
//! message types below carry the field numbers of Loki's `pkg/push/push.proto`) and JSON
//! (`{"streams":[{"stream":{..},"values":[["<ns>","line",{metadata}]]}]}`, plus the older
//! `{"labels":"{..}","entries":[{"ts":..,"line":..}]}` form). Both decode into [`PushRequest`]
//! and are mapped by [`map`].
//!
//! Validation follows Loki's distributor: a stream whose label set is invalid, and an entry that is
//! too long, too old or too new, is dropped; the rest of the request is still written and the
//! request answers 400 naming the last problem ([`Pushed::error`]). Request-wide problems (an
//! undecodable body, too many streams) refuse the whole request ([`PushError`]).

use storage::model::{AnyValue, KeyValue, Labels, LogGroup, LogRecord, LogsBatch, SpanId, TraceId};

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The streams.
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream's label set (selector text) and entries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// Label set in selector syntax, `{a="b", c="d"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    /// The entries.
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    /// Hash of the labels as computed by the sender (ignored).
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    /// Entry time.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// The log line.
    #[prost(string, tag = "2")]
    pub line: String,
    /// Structured metadata.
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Nanoseconds since the epoch (saturating).
    pub fn to_ns(self) -> i64 {
        self.seconds.saturating_mul(1_000_000_000).saturating_add(self.nanos as i64)
    }

    /// From nanoseconds since the epoch.
    pub fn from_ns(ns: i64) -> Timestamp {
        Timestamp { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }
}

/// Limits of a push, with Loki's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushLimits {
    /// Longest line (bytes); Loki's `max_line_size`, 256 KiB.
    pub max_line_bytes: usize,
    /// Most labels on a stream; Loki's `max_label_names_per_series`, 15.
    pub max_label_names: usize,
    /// Longest label name; Loki's `max_label_name_length`, 1024.
    pub max_label_name_bytes: usize,
    /// Longest label value; Loki's `max_label_value_length`, 2048.
    pub max_label_value_bytes: usize,
    /// Most streams in one request (over it the request is refused with 429).
    pub max_streams_per_request: usize,
    /// Most bytes of structured metadata on one entry; Loki's
    /// `max_structured_metadata_size`, 64 KiB.
    pub max_structured_metadata_bytes: usize,
    /// Most structured metadata pairs on one entry; Loki's
    /// `max_structured_metadata_entries_count`, 128.
    pub max_structured_metadata_entries: usize,
    /// Entries further ahead of now are rejected (ns); Loki's `creation_grace_period`.
    pub max_future_ns: i64,
    /// Entries older than now minus this are rejected (ns); 0 = no limit. Loki's
    /// `reject_old_samples_max_age`.
    pub max_age_ns: i64,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            max_line_bytes: 256 << 10,
            max_label_names: 15,
            max_label_name_bytes: 1024,
            max_label_value_bytes: 2048,
            max_streams_per_request: 10_000,
            max_structured_metadata_bytes: 64 << 10,
            max_structured_metadata_entries: 128,
            max_future_ns: 10 * 60 * 1_000_000_000,
            max_age_ns: 7 * 24 * 3600 * 1_000_000_000,
        }
    }
}

/// Why a whole push was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The body is not a push request (400).
    Malformed(String),
    /// More streams than `max_streams_per_request` (429, as Loki's stream limits).
    TooManyStreams(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Malformed(m) | PushError::TooManyStreams(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PushError {}

/// The outcome of mapping a push.
#[derive(Debug, Default)]
pub struct Pushed {
    /// What to write.
    pub batch: LogsBatch,
    /// Entries accepted.
    pub accepted: u64,
    /// Entries dropped by validation.
    pub rejected: u64,
    /// The last validation problem, if any: the request answers 400 with it after writing `batch`.
    pub error: Option<String>,
}

/// Decodes a snappy-compressed (block format) protobuf push body.
pub fn decode_protobuf(body: &[u8], max_decoded: usize) -> Result<PushRequest, PushError> {
    let len = snap::raw::decompress_len(body).map_err(|e| PushError::Malformed(format!("snappy: {e}")))?;
    if len > max_decoded {
        return Err(PushError::Malformed(format!(
            "decompressed body of {len} bytes exceeds the {max_decoded}-byte limit"
        )));
    }
    let raw =
        snap::raw::Decoder::new().decompress_vec(body).map_err(|e| PushError::Malformed(format!("snappy: {e}")))?;
    prost::Message::decode(raw.as_slice()).map_err(|e| PushError::Malformed(format!("protobuf: {e}")))
}

/// Decodes a JSON push body.
pub fn decode_json(body: &[u8]) -> Result<PushRequest, PushError> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PushError::Malformed(format!("invalid JSON push request: {e}")))?;
    let bad = |m: &str| PushError::Malformed(m.to_string());
    let streams = v.get("streams").and_then(|s| s.as_array()).ok_or_else(|| bad("missing \"streams\" array"))?;
    let mut out = PushRequest::default();
    for s in streams {
        let labels = if let Some(obj) = s.get("stream").and_then(|x| x.as_object()) {
            let mut text = String::from("{");
            for (i, (k, v)) in obj.iter().enumerate() {
                let v = v.as_str().ok_or_else(|| bad("stream label values must be strings"))?;
                if i > 0 {
                    text.push_str(", ");
                }
                text.push_str(k);
                text.push('=');
                text.push_str(&serde_json::Value::String(v.to_string()).to_string());
            }
            text.push('}');
            text
        } else if let Some(l) = s.get("labels").and_then(|x| x.as_str()) {
            l.to_string()
        } else {
            String::from("{}")
        };
        let mut entries = Vec::new();
        if let Some(values) = s.get("values").and_then(|x| x.as_array()) {
            for v in values {
                let arr = v.as_array().ok_or_else(|| bad("each value must be an array [\"<ns>\", \"<line>\"]"))?;
                let (Some(ts), Some(line)) = (arr.first(), arr.get(1)) else {
                    return Err(bad("each value must be an array [\"<ns>\", \"<line>\"]"));
                };
                let ts = json_ts(ts).ok_or_else(|| bad("timestamps must be strings of integer nanoseconds"))?;
                let line = line.as_str().ok_or_else(|| bad("log lines must be strings"))?.to_string();
                let mut structured_metadata = Vec::new();
                if let Some(meta) = arr.get(2) {
                    let obj = meta.as_object().ok_or_else(|| bad("structured metadata must be an object"))?;
                    for (k, v) in obj {
                        let value = v.as_str().ok_or_else(|| bad("structured metadata values must be strings"))?;
                        structured_metadata.push(LabelPairAdapter { name: k.clone(), value: value.to_string() });
                    }
                }
                entries.push(EntryAdapter { timestamp: Some(Timestamp::from_ns(ts)), line, structured_metadata });
            }
        } else if let Some(es) = s.get("entries").and_then(|x| x.as_array()) {
            for e in es {
                let ts = e.get("ts").or_else(|| e.get("timestamp")).ok_or_else(|| bad("entry without \"ts\""))?;
                let ts = json_ts(ts).ok_or_else(|| bad("invalid entry timestamp"))?;
                let line = e.get("line").and_then(|l| l.as_str()).ok_or_else(|| bad("entry without \"line\""))?;
                entries.push(EntryAdapter {
                    timestamp: Some(Timestamp::from_ns(ts)),
                    line: line.to_string(),
                    structured_metadata: Vec::new(),
                });
            }
        }
        out.streams.push(StreamAdapter { labels, entries, hash: 0 });
    }
    Ok(out)
}

/// A JSON timestamp: a string (or number) of integer ns, or an RFC 3339 string (older clients).
fn json_ts(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::String(s) => s.parse::<i64>().ok().or_else(|| rfc3339_ns(s)),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → ns since the epoch.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        let mut scaled = String::from(digits);
        scaled.truncate(9);
        while scaled.len() < 9 {
            scaled.push('0');
        }
        frac_ns = scaled.parse().ok()?;
    }
    let offset_s = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz[1..3].parse::<i64>().ok()? * 3600 + tz[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Parses a label set in selector syntax (`{a="b", c=\`d\`}`): equality pairs only, as Loki's
/// push accepts. Values are Go-style quoted strings. Duplicate names are an error.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = LabelParser { s: s.as_bytes(), text: s, i: 0 };
    p.ws();
    p.expect(b'{')?;
    let mut out: Vec<(String, String)> = Vec::new();
    loop {
        p.ws();
        if p.peek() == Some(b'}') {
            p.i += 1;
            break;
        }
        let name = p.ident()?;
        p.ws();
        if p.peek() != Some(b'=') || p.s.get(p.i + 1) == Some(&b'~') {
            return Err(format!("parse error at col {}: only `=` label pairs are allowed in a push", p.i + 1));
        }
        p.i += 1;
        p.ws();
        let value = p.string()?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("duplicate label name {name:?}"));
        }
        out.push((name, value));
        p.ws();
        match p.peek() {
            Some(b',') => p.i += 1,
            Some(b'}') => {}
            _ => return Err(format!("parse error at col {}: expected `,` or `}}`", p.i + 1)),
        }
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("parse error at col {}: unexpected text after `}}`", p.i + 1));
    }
    Ok(out)
}

struct LabelParser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
}

impl LabelParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("parse error at col {}: expected `{}`", self.i + 1, c as char))
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            self.i += 1;
        }
        if start == self.i || self.s[start].is_ascii_digit() {
            return Err(format!("parse error at col {}: expected a label name", start + 1));
        }
        Ok(self.text[start..self.i].to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        let col = self.i + 1;
        let quote = match self.peek() {
            Some(q @ (b'"' | b'`')) => q,
            _ => return Err(format!("parse error at col {col}: expected a quoted string")),
        };
        self.i += 1;
        let rest = &self.text[self.i..];
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((at, c)) = chars.next() {
            if c as u32 == quote as u32 {
                self.i += at + 1;
                return Ok(out);
            }
            if c == '\\' && quote == b'"' {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    '\\' | '"' | '\'' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = chars.by_ref().take(n).map(|(_, c)| c).collect();
                        let v = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == n)
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("parse error at col {col}: invalid escape in string"))?;
                        out.push(v);
                    }
                    '0'..='7' => {
                        let mut digits = String::from(e);
                        digits.extend(chars.by_ref().take(2).map(|(_, c)| c));
                        let v = u32::from_str_radix(&digits, 8)
                            .ok()
                            .filter(|v| digits.len() == 3 && *v <= 255)
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("parse error at col {col}: invalid escape in string"))?;
                        out.push(v);
                    }
                    _ => return Err(format!("parse error at col {col}: invalid escape in string")),
                }
            } else {
                out.push(c);
            }
        }
        Err(format!("parse error at col {col}: unterminated string"))
    }
}

fn valid_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Validates a stream's labels as Loki's distributor does.
fn validate_stream(text: &str, limits: &PushLimits) -> Result<Labels, String> {
    let pairs = parse_labels(text).map_err(|e| format!("error parsing labels {text:?}: {e}"))?;
    let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    if pairs.is_empty() {
        return Err("error at least one label pair is required per stream".into());
    }
    if pairs.len() > limits.max_label_names {
        return Err(format!("stream '{text}' has {} label names; limit {}", pairs.len(), limits.max_label_names));
    }
    for (n, v) in &pairs {
        if !valid_label_name(n) {
            return Err(format!("stream '{text}' has invalid label name {n:?}"));
        }
        if n.len() > limits.max_label_name_bytes {
            return Err(format!("stream '{text}' has label name too long: {n:?}"));
        }
        if v.len() > limits.max_label_value_bytes {
            return Err(format!("stream '{text}' has label value too long: {v:?}"));
        }
    }
    Ok(Labels::from_pairs(pairs))
}

/// Maps a decoded push. `now_ns` is the wall clock.
pub fn map(req: PushRequest, limits: &PushLimits, now_ns: i64) -> Result<Pushed, PushError> {
    if req.streams.len() > limits.max_streams_per_request {
        return Err(PushError::TooManyStreams(format!(
            "too many streams in one push: {} (limit {})",
            req.streams.len(),
            limits.max_streams_per_request
        )));
    }
    let mut out = Pushed::default();
    for stream in req.streams {
        if stream.entries.is_empty() {
            continue;
        }
        let labels = match validate_stream(&stream.labels, limits) {
            Ok(l) => l,
            Err(e) => {
                out.rejected += stream.entries.len() as u64;
                out.error = Some(e);
                continue;
            }
        };
        let mut records = Vec::with_capacity(stream.entries.len());
        for e in stream.entries {
            let ts = e.timestamp.map(Timestamp::to_ns).unwrap_or(0);
            let problem = if e.line.len() > limits.max_line_bytes {
                Some(format!(
                    "max entry size '{}' bytes exceeded for stream '{}' while adding an entry with length '{}' bytes",
                    limits.max_line_bytes,
                    stream.labels,
                    e.line.len()
                ))
            } else if ts > now_ns.saturating_add(limits.max_future_ns) {
                Some(format!("entry for stream '{}' has timestamp too new: {ts}", stream.labels))
            } else if limits.max_age_ns > 0 && ts < now_ns.saturating_sub(limits.max_age_ns) {
                Some(format!("entry for stream '{}' has timestamp too old: {ts}", stream.labels))
            } else if e.structured_metadata.len() > limits.max_structured_metadata_entries {
                Some(format!(
                    "structured metadata entries count for stream '{}' is {}, limit {}",
                    stream.labels,
                    e.structured_metadata.len(),
                    limits.max_structured_metadata_entries
                ))
            } else if e.structured_metadata.iter().map(|p| p.name.len() + p.value.len()).sum::<usize>()
                > limits.max_structured_metadata_bytes
            {
                Some(format!("structured metadata size for stream '{}' exceeds the limit", stream.labels))
            } else {
                None
            };
            if let Some(p) = problem {
                out.rejected += 1;
                out.error = Some(p);
                continue;
            }
            // Trace context carried as structured metadata (Loki's own OTLP mapping, Alloy's
            // `structured_metadata` stage) links the record to its trace (the trace_id
            // cross-index). A value in canonical form (lower-case hex of the right length) moves
            // into the record's field, which LogQL shows as the same `trace_id`/`span_id`
            // metadata; any other spelling stays a metadata pair as it came.
            // Allocated on the first pair kept (a trace id alone moves into its field).
            let mut attributes = Vec::new();
            let (mut trace_id, mut span_id) = (None, None);
            for p in e.structured_metadata {
                let canonical =
                    |v: &str, len: usize| v.len() == len && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                match p.name.as_str() {
                    "trace_id" if trace_id.is_none() => {
                        trace_id = TraceId::from_hex(&p.value);
                        if trace_id.is_some() && canonical(&p.value, 32) {
                            continue;
                        }
                    }
                    "span_id" if span_id.is_none() => {
                        span_id = SpanId::from_hex(&p.value);
                        if span_id.is_some() && canonical(&p.value, 16) {
                            continue;
                        }
                    }
                    _ => {}
                }
                attributes.push(KeyValue::new(p.name, AnyValue::String(p.value)));
            }
            records.push(LogRecord {
                timestamp_ns: ts,
                observed_timestamp_ns: now_ns,
                trace_id,
                span_id,
                body: e.line,
                attributes,
                ..LogRecord::default()
            });
        }
        if records.is_empty() {
            continue;
        }
        out.accepted += records.len() as u64;
        out.batch.groups.push(LogGroup { stream: labels, records, ..LogGroup::default() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn labels_parse_like_loki() {
        assert_eq!(
            parse_labels(r#"{app="api", env=`prod`, x="a\"b\n\u00e9"}"#).unwrap(),
            vec![("app".into(), "api".into()), ("env".into(), "prod".into()), ("x".into(), "a\"b\né".into())]
        );
        assert_eq!(parse_labels("{}").unwrap(), vec![]);
        assert!(parse_labels(r#"{app=~"a"}"#).is_err());
        assert!(parse_labels(r#"{app="a", app="b"}"#).is_err());
        assert!(parse_labels(r#"{app="a""#).is_err());
        assert!(parse_labels(r#"{1a="a"}"#).is_err());
        assert!(parse_labels(r#"app="a""#).is_err());
    }

    #[test]
    fn json_and_protobuf_map_alike() {
        let json = format!(
            r#"{{"streams":[{{"stream":{{"app":"api","level":"info"}},"values":[["{}","hello",{{"trace_id":"abc"}}],["{}","world"]]}}]}}"#,
            NOW,
            NOW + 1
        );
        let a = map(decode_json(json.as_bytes()).unwrap(), &PushLimits::default(), NOW).unwrap();
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{level="info", app="api"}"#.into(),
                entries: vec![
                    EntryAdapter {
                        timestamp: Some(Timestamp::from_ns(NOW)),
                        line: "hello".into(),
                        structured_metadata: vec![LabelPairAdapter { name: "trace_id".into(), value: "abc".into() }],
                    },
                    EntryAdapter {
                        timestamp: Some(Timestamp::from_ns(NOW + 1)),
                        line: "world".into(),
                        ..Default::default()
                    },
                ],
                hash: 0,
            }],
        };
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap();
        let b = map(decode_protobuf(&body, 1 << 20).unwrap(), &PushLimits::default(), NOW).unwrap();
        assert_eq!(a.batch, b.batch);
        assert_eq!(a.accepted, 2);
        let g = &a.batch.groups[0];
        assert_eq!(g.stream.to_string(), r#"{app="api", level="info"}"#);
        assert_eq!(g.records[0].attributes, vec![KeyValue::new("trace_id", AnyValue::String("abc".into()))]);
        assert_eq!(g.records[1].timestamp_ns, NOW + 1);
        // Not a trace id: kept as metadata only.
        assert_eq!(g.records[0].trace_id, None);
    }

    #[test]
    fn trace_context_in_metadata_links_the_record() {
        let t = "0af7651916cd43dd8448eb211c80319c";
        let json = format!(
            r#"{{"streams":[{{"stream":{{"app":"api"}},"values":[["{NOW}","hi",{{"trace_id":"{t}","span_id":"B7AD6B7169203331"}}]]}}]}}"#
        );
        let m = map(decode_json(json.as_bytes()).unwrap(), &PushLimits::default(), NOW).unwrap();
        let r = &m.batch.groups[0].records[0];
        assert_eq!(r.trace_id.map(|x| x.to_hex()), Some(t.to_string()));
        assert_eq!(r.span_id.map(|x| x.to_hex()), Some("b7ad6b7169203331".to_string()));
        // The canonical trace id moved into the record; the upper-case span id also stays a pair.
        assert_eq!(r.attributes, vec![KeyValue::new("span_id", AnyValue::String("B7AD6B7169203331".into()))]);
    }

    #[test]
    fn validation_drops_entries_and_names_the_problem() {
        let limits = PushLimits { max_line_bytes: 5, ..PushLimits::default() };
        let req = PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: r#"{app="a"}"#.into(),
                    entries: vec![
                        EntryAdapter {
                            timestamp: Some(Timestamp::from_ns(NOW)),
                            line: "ok".into(),
                            ..Default::default()
                        },
                        EntryAdapter {
                            timestamp: Some(Timestamp::from_ns(NOW)),
                            line: "too long".into(),
                            ..Default::default()
                        },
                    ],
                    hash: 0,
                },
                StreamAdapter {
                    labels: "{}".into(),
                    entries: vec![EntryAdapter {
                        timestamp: Some(Timestamp::from_ns(NOW)),
                        line: "x".into(),
                        ..Default::default()
                    }],
                    hash: 0,
                },
            ],
        };
        let m = map(req, &limits, NOW).unwrap();
        assert_eq!((m.accepted, m.rejected), (1, 2));
        assert!(m.error.unwrap().contains("at least one label pair"));
        let many = PushRequest { streams: vec![StreamAdapter::default(); 3] };
        let limits = PushLimits { max_streams_per_request: 2, ..PushLimits::default() };
        assert!(matches!(map(many, &limits, NOW), Err(PushError::TooManyStreams(_))));
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(rfc3339_ns("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000_000));
        assert_eq!(rfc3339_ns("2023-11-14T23:13:20+01:00"), Some(1_700_000_000_000_000_000));
    }
}

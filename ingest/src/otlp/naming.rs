//! Prometheus names and label values for OTLP metrics, as Prometheus' OTLP receiver builds them.
//!
//! Upstream followed (read, not copied): `prometheus/otlptranslator` `metric_namer.go`,
//! `unit_namer.go`, `label_namer.go`, `strconv.go` with the `UnderscoreEscapingWithSuffixes`
//! strategy, and Prometheus' default OTLP config (`label_name_underscore_sanitization: true`,
//! `label_name_preserve_multiple_underscores: true`); label values as the collector's
//! `pcommon.Value.AsString`.

use std::borrow::Cow;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue as PAnyValue, KeyValue as PKeyValue, any_value::Value as PValue,
};

/// The OTLP metric kind as the name builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameType {
    Gauge,
    MonotonicCounter,
    NonMonotonicCounter,
    Histogram,
    ExponentialHistogram,
    Summary,
}

/// `[a-zA-Z0-9:]`: what survives in a metric name token (`_` is a separator, not a token char).
fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

fn main_unit(u: &str) -> &str {
    match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

fn per_unit(u: &str) -> &str {
    match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

/// The unit split at the first `/` and mapped: (main, `per_<unit>`), each empty when blank or an
/// annotation containing `{` or `}`. Not yet cleaned of invalid characters.
fn unit_suffixes(unit: &str) -> (&str, Cow<'_, str>) {
    let (main_raw, per_raw) = match unit.split_once('/') {
        Some((m, p)) => (m, Some(p)),
        None => (unit, None),
    };
    let annotated = |s: &str| s.contains(['{', '}']);
    let m = main_raw.trim();
    let main = if !m.is_empty() && !annotated(m) { main_unit(m) } else { "" };
    let per = match per_raw {
        Some(p) if !p.is_empty() => {
            let p = p.trim();
            let mapped = if !p.is_empty() && !annotated(p) { per_unit(p) } else { "" };
            if mapped.is_empty() { Cow::Borrowed("") } else { Cow::Owned(format!("per_{mapped}")) }
        }
        _ => Cow::Borrowed(""),
    };
    (main, per)
}

/// Invalid characters → `_`, runs of `_` collapsed, one leading `_` removed.
fn clean_up_unit(unit: &str) -> String {
    let mut out = String::with_capacity(unit.len());
    for c in unit.chars() {
        let c = if is_metric_char(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    match out.strip_prefix('_') {
        Some(rest) => rest.to_owned(),
        None => out,
    }
}

/// The Prometheus metric name for an OTLP metric; empty when nothing usable is left (the metric
/// is then invalid).
///
/// Name tokens are the runs of `[a-zA-Z0-9:]` (so `.`, `-`, `_` and repeated separators all become
/// one `_`); the unit's main and `per_` suffixes are appended unless the name already has them as a
/// token; counters get `total` moved to the end, gauges with unit `1` get `ratio` moved to the
/// end; a leading digit gets a `_` prefix.
pub(crate) fn metric_name(name: &str, unit: &str, ty: NameType) -> String {
    let mut tokens: Vec<&str> = name.split(|c| !is_metric_char(c)).filter(|t| !t.is_empty()).collect();
    let (main, per) = unit_suffixes(unit);
    let (main, per) = (clean_up_unit(main), clean_up_unit(&per));
    let mut main = main.as_str();
    let mut per = per.as_str();
    if tokens.contains(&main) {
        main = "";
    }
    if per == "per_" {
        per = "";
    } else {
        per = per.strip_suffix('_').unwrap_or(per);
        // Upstream compares the whole `per_x` against single tokens, which never matches (tokens
        // hold no `_`), so a per-unit suffix is always appended.
        if tokens.contains(&per) {
            per = "";
        }
    }
    if !per.is_empty() {
        main = main.strip_suffix('_').unwrap_or(main);
    }
    if !main.is_empty() {
        tokens.push(main);
    }
    if !per.is_empty() {
        tokens.push(per);
    }
    if ty == NameType::MonotonicCounter {
        tokens.retain(|t| *t != "total");
        tokens.push("total");
    }
    if unit == "1" && ty == NameType::Gauge {
        tokens.retain(|t| *t != "ratio");
        tokens.push("ratio");
    }
    let mut out = tokens.join("_");
    if out.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        out.insert(0, '_');
    }
    out
}

/// The unit as metadata reports it (`ms` → `milliseconds`, `By/s` → `bytes_per_second`, `1` and
/// annotations → empty).
pub(crate) fn unit_name(unit: &str) -> String {
    let (main, per) = unit_suffixes(unit);
    let (main, per) = (clean_up_unit(main), clean_up_unit(&per));
    let u = match (main.is_empty(), per.is_empty()) {
        (false, false) => format!("{main}_{per}"),
        (false, true) => main,
        _ => per,
    };
    let u = u.strip_prefix('_').unwrap_or(&u);
    u.strip_suffix('_').unwrap_or(u).to_owned()
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A label name from an attribute key; the key itself comes back as the error when it is empty
/// or becomes only underscores. Each character outside `[a-zA-Z0-9_]` becomes `_` (runs are
/// kept); a leading digit gets a `key_` prefix, a single leading `_` a `key` prefix (`__x` is left
/// alone). Valid keys are moved, not copied.
pub(crate) fn label_name(key: String) -> Result<String, String> {
    // Keys are short and usually valid (`zone`) or ASCII with dots (`http.method`).
    let all_valid = key.bytes().all(is_label_char);
    if !key.bytes().any(|b| b.is_ascii_alphanumeric()) {
        // Only underscores would be left, unless a lone character becomes `key_` through the
        // prefix rule below.
        if key.is_empty() || key.chars().nth(1).is_some() {
            return Err(key);
        }
    }
    let mut s = if all_valid {
        key
    } else if key.is_ascii() {
        // `http.method`: rewrite the bytes in place, no new allocation.
        let mut bytes = key.into_bytes();
        for b in &mut bytes {
            if !is_label_char(*b) {
                *b = b'_';
            }
        }
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    } else {
        let ascii_or_underscore = |c: char| {
            if c.is_ascii() && is_label_char(c as u8) { c } else { '_' }
        };
        key.chars().map(ascii_or_underscore).collect()
    };
    let first = s.as_bytes()[0];
    if first.is_ascii_digit() {
        s.insert_str(0, "key_");
    } else if first == b'_' && s.as_bytes().get(1) != Some(&b'_') {
        s.insert_str(0, "key");
    }
    Ok(s)
}

/// A float as Go's `strconv.FormatFloat(f, 'f', -1, 64)` prints it: shortest round-trip digits,
/// never an exponent; `+Inf`, `-Inf`, `NaN`. Used for `le` and `quantile` values.
pub(crate) fn format_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        f.to_string()
    }
}

/// A float as JavaScript (and Go's `encoding/json`) print numbers: plain notation between 1e-6
/// and 1e21, shortest round-trip exponent form (`1e+21`, `1.5e-7`) outside. `None` for NaN and
/// infinities, which JSON cannot hold.
fn es6_float(f: f64) -> Option<String> {
    if !f.is_finite() {
        return None;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        Some(match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        })
    } else {
        Some(f.to_string())
    }
}

/// An attribute value as a label value, as `pcommon.Value.AsString` renders it: strings verbatim,
/// booleans and integers in their usual form, doubles JavaScript-style, bytes as standard base64,
/// arrays and maps as Go-style JSON (map keys sorted, the last duplicate winning, `<>&` escaped;
/// a NaN or infinity inside makes the whole value empty, as a failed `json.Marshal` does upstream).
pub(crate) fn label_value(v: Option<PAnyValue>) -> String {
    match v.and_then(|v| v.value) {
        None | Some(PValue::StringValueStrindex(_)) => String::new(),
        Some(PValue::StringValue(s)) => s,
        Some(PValue::BoolValue(b)) => b.to_string(),
        Some(PValue::IntValue(i)) => i.to_string(),
        Some(PValue::DoubleValue(d)) => {
            es6_float(d).unwrap_or_else(|| format!("json: unsupported value: {}", format_float(d)))
        }
        Some(PValue::BytesValue(b)) => base64(&b),
        Some(v @ (PValue::ArrayValue(_) | PValue::KvlistValue(_))) => {
            let mut out = String::new();
            if write_go_json(&v, &mut out) { out } else { String::new() }
        }
    }
}

/// Go `encoding/json` of `Value.AsRaw()`; false when a float cannot be encoded.
fn write_go_json(v: &PValue, out: &mut String) -> bool {
    match v {
        PValue::StringValue(s) => write_go_json_string(s, out),
        PValue::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        PValue::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        PValue::DoubleValue(d) => match es6_float(*d) {
            Some(s) => out.push_str(&s),
            None => return false,
        },
        PValue::BytesValue(b) => {
            out.push('"');
            out.push_str(&base64(b));
            out.push('"');
        }
        PValue::StringValueStrindex(_) => out.push_str("null"),
        PValue::ArrayValue(a) => {
            out.push('[');
            for (i, item) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !write_go_json_opt(item.value.as_ref(), out) {
                    return false;
                }
            }
            out.push(']');
        }
        PValue::KvlistValue(kv) => {
            // A Go map: keys sorted bytewise, a repeated key keeps its last value.
            let mut entries: Vec<&PKeyValue> = kv.values.iter().collect();
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            out.push('{');
            let mut first = true;
            for (i, e) in entries.iter().enumerate() {
                if entries.get(i + 1).is_some_and(|next| next.key == e.key) {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                write_go_json_string(&e.key, out);
                out.push(':');
                if !write_go_json_opt(e.value.as_ref().and_then(|v| v.value.as_ref()), out) {
                    return false;
                }
            }
            out.push('}');
        }
    }
    true
}

fn write_go_json_opt(v: Option<&PValue>, out: &mut String) -> bool {
    match v {
        Some(v) => write_go_json(v, out),
        None => {
            out.push_str("null");
            true
        }
    }
}

fn write_go_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding.
fn base64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::NameType::*;
    use super::*;

    #[test]
    fn metric_names() {
        let cases: &[(&str, &str, NameType, &str)] = &[
            ("http.server.duration", "ms", Histogram, "http_server_duration_milliseconds"),
            ("http.server.request.duration", "s", Histogram, "http_server_request_duration_seconds"),
            ("system.memory.usage", "By", Gauge, "system_memory_usage_bytes"),
            ("system.cpu.utilization", "1", Gauge, "system_cpu_utilization_ratio"),
            ("queue.fill", "1", NonMonotonicCounter, "queue_fill"),
            ("requests", "1", MonotonicCounter, "requests_total"),
            ("http.server.requests", "{requests}", MonotonicCounter, "http_server_requests_total"),
            ("network.io", "By/s", Gauge, "network_io_bytes_per_second"),
            ("packets", "{packets}/s", Gauge, "packets_per_second"),
            ("speed", "m/s", Gauge, "speed_meters_per_second"),
            ("upload", "KiBy/min", Gauge, "upload_kibibytes_per_min"),
            ("rate", "/s", Gauge, "rate_per_second"),
            ("temp", "Cel", Gauge, "temp_celsius"),
            ("disk", "%", Gauge, "disk_percent"),
            ("odd", "custom unit", Gauge, "odd_custom_unit"),
            ("requests_total", "", MonotonicCounter, "requests_total"),
            ("total.requests", "", MonotonicCounter, "requests_total"),
            ("bytes.sent.total", "By", MonotonicCounter, "bytes_sent_total"),
            ("foo_total", "", Gauge, "foo_total"),
            ("foo_total", "", NonMonotonicCounter, "foo_total"),
            ("duration_seconds", "s", Histogram, "duration_seconds"),
            ("cpu.ratio.used", "1", Gauge, "cpu_used_ratio"),
            ("latency", "ms", Summary, "latency_milliseconds"),
            ("latency", "s", ExponentialHistogram, "latency_seconds"),
            ("2xx.count", "", MonotonicCounter, "_2xx_count_total"),
            ("foo..bar__baz-", "", Gauge, "foo_bar_baz"),
            ("_leading", "", Gauge, "leading"),
            ("ns:sub.metric", "", Gauge, "ns:sub_metric"),
            ("métrica", "", Gauge, "m_trica"),
            // Upstream quirk: the per-unit suffix is compared as one token, so it repeats.
            ("http.bytes_per_second", "By/s", Gauge, "http_bytes_per_second_per_second"),
            ("...", "s", Gauge, "seconds"),
            ("", "", Gauge, ""),
            ("...", "", MonotonicCounter, "total"),
        ];
        for (name, unit, ty, want) in cases {
            assert_eq!(metric_name(name, unit, *ty), *want, "{name:?} {unit:?} {ty:?}");
        }
    }

    #[test]
    fn unit_names() {
        let cases = [
            ("ms", "milliseconds"),
            ("By/s", "bytes_per_second"),
            ("/s", "per_second"),
            ("1", ""),
            ("{requests}", ""),
            ("{req}/s", "per_second"),
            ("%", "percent"),
            ("", ""),
            ("custom unit.", "custom_unit"),
        ];
        for (unit, want) in cases {
            assert_eq!(unit_name(unit), want, "{unit:?}");
        }
    }

    #[test]
    fn label_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("http.method", Some("http_method")),
            ("valid_name", Some("valid_name")),
            ("123abc", Some("key_123abc")),
            ("_private", Some("key_private")),
            ("_", Some("key_")),
            (".", Some("key_")),
            ("__reserved__", Some("__reserved__")),
            ("__x", Some("__x")),
            ("a..b", Some("a__b")),
            ("ünïcode", Some("key_n_code")),
            ("k8s.pod.name", Some("k8s_pod_name")),
            ("", None),
            ("...", None),
            ("__", None),
        ];
        for (key, want) in cases {
            assert_eq!(label_name(key.to_string()).ok().as_deref(), *want, "{key:?}");
        }
    }

    fn v(value: PValue) -> Option<PAnyValue> {
        Some(PAnyValue { value: Some(value) })
    }

    fn kv(k: &str, value: PValue) -> PKeyValue {
        PKeyValue { key: k.into(), value: v(value), key_strindex: 0 }
    }

    #[test]
    fn label_values() {
        let map = PValue::KvlistValue(KeyValueList {
            values: vec![
                kv("b", PValue::IntValue(1)),
                kv("a", PValue::StringValue("x<y".into())),
                kv("b", PValue::DoubleValue(2.5)),
                kv("c", PValue::BytesValue(vec![0xff])),
            ],
        });
        let arr = |d: f64| {
            PValue::ArrayValue(ArrayValue {
                values: vec![
                    PAnyValue { value: Some(PValue::BoolValue(true)) },
                    PAnyValue { value: None },
                    PAnyValue { value: Some(PValue::DoubleValue(d)) },
                ],
            })
        };
        let cases: Vec<(Option<PAnyValue>, &str)> = vec![
            (None, ""),
            (v(PValue::StringValue("GET".into())), "GET"),
            (v(PValue::BoolValue(false)), "false"),
            (v(PValue::IntValue(-42)), "-42"),
            (v(PValue::DoubleValue(1.5)), "1.5"),
            (v(PValue::DoubleValue(123456789.0)), "123456789"),
            (v(PValue::DoubleValue(1e21)), "1e+21"),
            (v(PValue::DoubleValue(1.5e-7)), "1.5e-7"),
            (v(PValue::DoubleValue(0.000001)), "0.000001"),
            (v(PValue::DoubleValue(f64::NAN)), "json: unsupported value: NaN"),
            (v(PValue::DoubleValue(f64::NEG_INFINITY)), "json: unsupported value: -Inf"),
            (v(PValue::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])), "3q2+7w=="),
            (v(PValue::BytesValue(b"hi".to_vec())), "aGk="),
            (v(map), r#"{"a":"x\u003cy","b":2.5,"c":"/w=="}"#),
            (v(arr(0.5)), "[true,null,0.5]"),
            (v(arr(f64::INFINITY)), ""),
        ];
        for (value, want) in cases {
            assert_eq!(label_value(value.clone()), want, "{value:?}");
        }
    }

    #[test]
    fn floats_like_go() {
        let cases = [(0.005, "0.005"), (1.0, "1"), (0.25, "0.25"), (1e-9, "0.000000001"), (-0.0, "-0")];
        for (f, want) in cases {
            assert_eq!(format_float(f), want);
        }
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}

//! The Prometheus API's JSON encodings, byte for byte as Prometheus writes them: timestamps as
//! JSON numbers of seconds with millisecond precision (`1700000000.123`, `4`), sample values as
//! strings in Go's shortest form (`"0.1"`, `"1e-07"`, `"NaN"`, `"+Inf"`), native histograms as
//! `{"count","sum","buckets":[[rule,"lo","hi","n"],...]}`, label sets as objects.

use std::fmt::Write as _;

use query::promql::{FloatHistogram, Point, Sample, Series, Value};
use storage::model::Labels;

/// Appends `s` as a JSON string literal.
pub fn string(out: &mut String, s: &str) {
    storage::model::write_json_string(s, out);
}

/// Appends a millisecond timestamp as Prometheus does: seconds, then `.` and exactly three digits
/// when the milliseconds are not zero.
pub fn timestamp(out: &mut String, t_ms: i64) {
    let t = i128::from(t_ms);
    let (neg, t) = if t < 0 { (true, -t) } else { (false, t) };
    if neg {
        out.push('-');
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A float as Prometheus formats sample values (Go `strconv.FormatFloat` with `'f'`, or `'e'` below
/// 1e-6 and from 1e21 up; `NaN`, `+Inf`, `-Inf`).
pub fn float_str(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = v.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` is the shortest round-trip mantissa ("1.5e-7"); Go writes the exponent
        // with a sign and at least two digits ("1.5e-07").
        let s = format!("{v:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        return format!("{mant}e{sign}{digits:0>2}");
    }
    format!("{v}")
}

/// Appends a float as a quoted value string.
pub fn float(out: &mut String, v: f64) {
    out.push('"');
    out.push_str(&float_str(v));
    out.push('"');
}

/// Appends a label set as a JSON object.
pub fn labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, l) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, &l.name);
        out.push(':');
        string(out, &l.value);
    }
    out.push('}');
}

/// `[t, "v"]`.
pub fn point(out: &mut String, t_ms: i64, v: f64) {
    out.push('[');
    timestamp(out, t_ms);
    out.push(',');
    float(out, v);
    out.push(']');
}

/// `[t, {"count":..,"sum":..,"buckets":[...]}]`.
pub fn histogram_point(out: &mut String, t_ms: i64, h: &FloatHistogram) {
    out.push('[');
    timestamp(out, t_ms);
    out.push_str(",{\"count\":");
    float(out, h.count());
    out.push_str(",\"sum\":");
    float(out, h.sum());
    let buckets = h.api_buckets();
    if !buckets.is_empty() {
        out.push_str(",\"buckets\":[");
        for (i, (rule, lo, hi, n)) in buckets.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{rule},");
            float(out, *lo);
            out.push(',');
            float(out, *hi);
            out.push(',');
            float(out, *n);
            out.push(']');
        }
        out.push(']');
    }
    out.push_str("}]");
}

fn sample(out: &mut String, s: &Sample) {
    out.push_str("{\"metric\":");
    labels(out, &s.labels);
    match &s.point {
        Point::Float(v) => {
            out.push_str(",\"value\":");
            point(out, s.t_ms, *v);
        }
        Point::Histogram(h) => {
            out.push_str(",\"histogram\":");
            histogram_point(out, s.t_ms, h);
        }
    }
    out.push('}');
}

fn series(out: &mut String, s: &Series) {
    out.push_str("{\"metric\":");
    labels(out, &s.labels);
    if !s.floats.is_empty() {
        out.push_str(",\"values\":[");
        for (i, (t, v)) in s.floats.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            point(out, *t, *v);
        }
        out.push(']');
    }
    if !s.histograms.is_empty() {
        out.push_str(",\"histograms\":[");
        for (i, (t, h)) in s.histograms.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            histogram_point(out, *t, h);
        }
        out.push(']');
    }
    out.push('}');
}

/// Appends `{"resultType":..,"result":..}` for a query result.
pub fn value(out: &mut String, v: &Value) {
    match v {
        Value::Scalar { t_ms, v } => {
            out.push_str("{\"resultType\":\"scalar\",\"result\":");
            point(out, *t_ms, *v);
        }
        Value::String { t_ms, s } => {
            out.push_str("{\"resultType\":\"string\",\"result\":[");
            timestamp(out, *t_ms);
            out.push(',');
            string(out, s);
            out.push(']');
        }
        Value::Vector(samples) => {
            out.push_str("{\"resultType\":\"vector\",\"result\":[");
            for (i, s) in samples.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                sample(out, s);
            }
            out.push(']');
        }
        Value::Matrix(ss) => {
            out.push_str("{\"resultType\":\"matrix\",\"result\":[");
            for (i, s) in ss.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                series(out, s);
            }
            out.push(']');
        }
    }
    out.push('}');
}

/// The success envelope around already-encoded `data`, with `warnings` when there are some.
pub fn success(data: &str, warnings: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    if !warnings.is_empty() {
        out.push_str(",\"warnings\":[");
        for (i, w) in warnings.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            string(&mut out, w);
        }
        out.push(']');
    }
    out.push('}');
    out
}

/// A JSON array of strings.
pub fn string_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, s) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, s);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_as_go_writes_them() {
        for (v, s) in [
            (0.0, "0"),
            (2.0, "2"),
            (0.1, "0.1"),
            (-1.5, "-1.5"),
            (1e-7, "1e-07"),
            (1.5e-7, "1.5e-07"),
            (1e21, "1e+21"),
            (123456789012.0, "123456789012"),
            (1e20, "100000000000000000000"),
            (0.000001, "0.000001"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (1e-300, "1e-300"),
        ] {
            assert_eq!(float_str(v), s, "{v}");
        }
    }

    #[test]
    fn timestamps_as_prometheus_writes_them() {
        for (t, s) in
            [(4000, "4"), (1_700_000_000_123, "1700000000.123"), (1500, "1.500"), (5, "0.005"), (-1500, "-1.500")]
        {
            let mut out = String::new();
            timestamp(&mut out, t);
            assert_eq!(out, s);
        }
    }
}

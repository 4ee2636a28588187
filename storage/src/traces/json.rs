//! The OTLP/JSON encoding of the nested span fields (attributes, events, links, resources, scopes)
//! as span files of format 1 stored them (format 2 keeps only resources and scopes in JSON, in the
//! file metadata; the per-span columns are postcard, `nested.rs`; the text writers of those columns
//! remain for the tests of their readers): the protobuf JSON mapping the OTLP specification defines
//! (`{"key":"k","value":{"intValue":"3"}}`), so any JSON-aware reader of the Parquet files gets
//! every value type back. 64-bit integers are strings, bytes are base64, non-finite doubles are the
//! strings `"NaN"`, `"Infinity"`, `"-Infinity"`, as protobuf's JSON mapping prescribes.

use serde_json::{Map, Value, json};

use crate::model::{AnyValue, KeyValue, Resource, Scope, SpanEvent, SpanId, SpanLink, TraceId};

pub(crate) fn any_to_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::Empty => json!({}),
        AnyValue::String(s) => json!({ "stringValue": s }),
        AnyValue::Bool(b) => json!({ "boolValue": b }),
        AnyValue::Int(i) => json!({ "intValue": i.to_string() }),
        AnyValue::Double(d) => {
            let d = if d.is_nan() {
                json!("NaN")
            } else if d.is_infinite() {
                json!(if *d > 0.0 { "Infinity" } else { "-Infinity" })
            } else {
                json!(d)
            };
            json!({ "doubleValue": d })
        }
        AnyValue::Bytes(b) => json!({ "bytesValue": base64_encode(b) }),
        AnyValue::Array(items) => {
            json!({ "arrayValue": { "values": items.iter().map(any_to_json).collect::<Vec<_>>() } })
        }
        AnyValue::KvList(kvs) => json!({ "kvlistValue": { "values": kvs_to_json(kvs) } }),
    }
}

/// Appends `s` as a JSON string: the same text as `storage::model::write_json_string`, copying
/// runs of plain characters whole instead of one `char` at a time.
#[cfg(test)]
pub(crate) fn write_json_string(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Most strings need no escaping: one branch-free pass over the bytes, then a single copy.
    if !s.bytes().fold(false, |any, b| any | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(esc);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Appends the JSON of `v` to `out`: the same text `any_to_json(v).to_string()` gives, written
/// without building a `Value` (the span files' writer calls this for every attribute).
#[cfg(test)]
pub(crate) fn write_any(v: &AnyValue, out: &mut String) {
    match v {
        AnyValue::Empty => out.push_str("{}"),
        AnyValue::String(s) => {
            out.push_str("{\"stringValue\":");
            write_json_string(s, out);
            out.push('}');
        }
        AnyValue::Bool(b) => out.push_str(if *b { "{\"boolValue\":true}" } else { "{\"boolValue\":false}" }),
        AnyValue::Int(i) => {
            use std::fmt::Write;
            out.push_str("{\"intValue\":\"");
            let _ = write!(out, "{i}");
            out.push_str("\"}");
        }
        AnyValue::Double(_) | AnyValue::Bytes(_) => out.push_str(&any_to_json(v).to_string()),
        AnyValue::Array(items) => {
            out.push_str("{\"arrayValue\":{\"values\":[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_any(item, out);
            }
            out.push_str("]}}");
        }
        AnyValue::KvList(kvs) => {
            out.push_str("{\"kvlistValue\":{\"values\":");
            write_kvs(kvs, out);
            out.push_str("}}");
        }
    }
}

/// Appends the JSON array of `kvs` (`kvs_to_json(kvs).to_string()`) to `out`.
#[cfg(test)]
pub(crate) fn write_kvs(kvs: &[KeyValue], out: &mut String) {
    out.push('[');
    for (i, kv) in kvs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"key\":");
        write_json_string(&kv.key, out);
        out.push_str(",\"value\":");
        write_any(&kv.value, out);
        out.push('}');
    }
    out.push(']');
}

pub(crate) fn kvs_to_json(kvs: &[KeyValue]) -> Value {
    Value::Array(kvs.iter().map(|kv| json!({ "key": kv.key, "value": any_to_json(&kv.value) })).collect())
}

pub(crate) fn any_from_json(v: &Value) -> Result<AnyValue, String> {
    let Some(obj) = v.as_object() else { return Err("value is not an object".into()) };
    let Some((k, v)) = obj.iter().next() else { return Ok(AnyValue::Empty) };
    Ok(match k.as_str() {
        "stringValue" => AnyValue::String(v.as_str().ok_or("stringValue")?.to_owned()),
        "boolValue" => AnyValue::Bool(v.as_bool().ok_or("boolValue")?),
        "intValue" => AnyValue::Int(match v {
            Value::String(s) => s.parse().map_err(|_| "intValue")?,
            v => v.as_i64().ok_or("intValue")?,
        }),
        "doubleValue" => AnyValue::Double(match v {
            Value::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                s => s.parse().map_err(|_| "doubleValue")?,
            },
            v => v.as_f64().ok_or("doubleValue")?,
        }),
        "bytesValue" => AnyValue::Bytes(base64_decode(v.as_str().ok_or("bytesValue")?).ok_or("bytesValue")?),
        "arrayValue" => AnyValue::Array(
            v.get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(any_from_json).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default(),
        ),
        "kvlistValue" => AnyValue::KvList(v.get("values").map(kvs_from_json).transpose()?.unwrap_or_default()),
        other => return Err(format!("unknown value kind {other}")),
    })
}

pub(crate) fn kvs_from_json(v: &Value) -> Result<Vec<KeyValue>, String> {
    let Some(items) = v.as_array() else { return Err("attributes are not an array".into()) };
    items
        .iter()
        .map(|item| {
            let key = item.get("key").and_then(Value::as_str).ok_or("attribute without key")?;
            let value = item.get("value").map(any_from_json).transpose()?.unwrap_or_default();
            Ok(KeyValue { key: key.to_owned(), value })
        })
        .collect()
}

fn u32_field(v: &Value, key: &str) -> u32 {
    v.get(key).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn attrs_field(v: &Value) -> Result<Vec<KeyValue>, String> {
    v.get("attributes").map(kvs_from_json).transpose().map(Option::unwrap_or_default)
}

/// The events column's JSON (keys in the order `serde_json` sorts them).
#[cfg(test)]
pub(crate) fn events_to_json(events: &[SpanEvent], out: &mut String) {
    out.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"attributes\":");
        write_kvs(&e.attributes, out);
        out.push_str(",\"droppedAttributesCount\":");
        out.push_str(&e.dropped_attributes_count.to_string());
        out.push_str(",\"name\":");
        write_json_string(&e.name, out);
        out.push_str(",\"timeUnixNano\":\"");
        out.push_str(&e.time_ns.to_string());
        out.push_str("\"}");
    }
    out.push(']');
}

pub(crate) fn events_from_json(s: &str) -> Result<Vec<SpanEvent>, String> {
    let v: Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    let Some(items) = v.as_array() else { return Err("events are not an array".into()) };
    items
        .iter()
        .map(|e| {
            Ok(SpanEvent {
                time_ns: str_field(e, "timeUnixNano").parse().map_err(|_| "event time")?,
                name: str_field(e, "name").to_owned(),
                attributes: attrs_field(e)?,
                dropped_attributes_count: u32_field(e, "droppedAttributesCount"),
            })
        })
        .collect()
}

/// The links column's JSON (keys in the order `serde_json` sorts them).
#[cfg(test)]
pub(crate) fn links_to_json(links: &[SpanLink], out: &mut String) {
    out.push('[');
    for (i, l) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"attributes\":");
        write_kvs(&l.attributes, out);
        out.push_str(",\"droppedAttributesCount\":");
        out.push_str(&l.dropped_attributes_count.to_string());
        out.push_str(",\"flags\":");
        out.push_str(&l.flags.to_string());
        out.push_str(",\"spanId\":\"");
        out.push_str(&l.span_id.to_hex());
        out.push_str("\",\"traceId\":\"");
        out.push_str(&l.trace_id.to_hex());
        out.push_str("\",\"traceState\":");
        write_json_string(&l.trace_state, out);
        out.push('}');
    }
    out.push(']');
}

pub(crate) fn links_from_json(s: &str) -> Result<Vec<SpanLink>, String> {
    let v: Value = serde_json::from_str(s).map_err(|e| e.to_string())?;
    let Some(items) = v.as_array() else { return Err("links are not an array".into()) };
    items
        .iter()
        .map(|l| {
            Ok(SpanLink {
                trace_id: TraceId::from_hex(str_field(l, "traceId")).ok_or("link trace id")?,
                span_id: SpanId::from_hex(str_field(l, "spanId")).ok_or("link span id")?,
                trace_state: str_field(l, "traceState").to_owned(),
                attributes: attrs_field(l)?,
                dropped_attributes_count: u32_field(l, "droppedAttributesCount"),
                flags: u32_field(l, "flags"),
            })
        })
        .collect()
}

pub(crate) fn resource_to_json(r: &Resource) -> Value {
    json!({
        "attributes": kvs_to_json(&r.attributes),
        "droppedAttributesCount": r.dropped_attributes_count,
        "schemaUrl": r.schema_url,
    })
}

pub(crate) fn resource_from_json(v: &Value) -> Result<Resource, String> {
    Ok(Resource {
        attributes: attrs_field(v)?,
        dropped_attributes_count: u32_field(v, "droppedAttributesCount"),
        schema_url: str_field(v, "schemaUrl").to_owned(),
    })
}

pub(crate) fn scope_to_json(s: &Scope) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(s.name));
    m.insert("version".into(), json!(s.version));
    m.insert("attributes".into(), kvs_to_json(&s.attributes));
    m.insert("droppedAttributesCount".into(), json!(s.dropped_attributes_count));
    m.insert("schemaUrl".into(), json!(s.schema_url));
    Value::Object(m)
}

pub(crate) fn scope_from_json(v: &Value) -> Result<Scope, String> {
    Ok(Scope {
        name: str_field(v, "name").to_owned(),
        version: str_field(v, "version").to_owned(),
        attributes: attrs_field(v)?,
        dropped_attributes_count: u32_field(v, "droppedAttributesCount"),
        schema_url: str_field(v, "schemaUrl").to_owned(),
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as protobuf's JSON mapping writes bytes.
pub(crate) fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not; `None` on any other character.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0xff, 0, 0x80]] {
            let e = base64_encode(data);
            assert_eq!(base64_decode(&e).as_deref(), Some(data), "{e}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }

    #[test]
    fn every_value_type_round_trips() {
        let kvs = vec![
            KeyValue::new("s", AnyValue::String("x".into())),
            KeyValue::new("b", AnyValue::Bool(true)),
            KeyValue::new("i", AnyValue::Int(i64::MIN)),
            KeyValue::new("d", AnyValue::Double(1.5)),
            KeyValue::new("nan", AnyValue::Double(f64::INFINITY)),
            KeyValue::new("y", AnyValue::Bytes(vec![1, 2, 3, 250])),
            KeyValue::new("a", AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Empty])),
            KeyValue::new("k", AnyValue::KvList(vec![KeyValue::new("n", AnyValue::Double(-0.25))])),
            KeyValue::new("e", AnyValue::Empty),
        ];
        let text = kvs_to_json(&kvs).to_string();
        let back = kvs_from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, kvs);
        let mut direct = String::new();
        write_kvs(&kvs, &mut direct);
        assert_eq!(direct, text, "the direct writer writes what serde_json writes");
    }

    #[test]
    fn json_strings_match_the_models_escaper() {
        for text in ["", "plain", "q\"uote", "back\\slash", "nl\ncr\rtab\t", "\u{1}\u{1f}\u{7f}", "é ✓ 𝄞 \"end"] {
            let (mut a, mut b) = (String::new(), String::new());
            write_json_string(text, &mut a);
            crate::model::write_json_string(text, &mut b);
            assert_eq!(a, b);
            assert_eq!(serde_json::from_str::<String>(&a).unwrap(), text);
        }
    }

    #[test]
    fn events_and_links_write_what_serde_json_writes() {
        let attrs = vec![
            KeyValue::new("q\"uote\n", AnyValue::String("tab\there \u{1} é".into())),
            KeyValue::new("n", AnyValue::Int(-3)),
        ];
        let events = vec![
            SpanEvent { time_ns: 17, name: "ex\\c".into(), attributes: attrs.clone(), dropped_attributes_count: 2 },
            SpanEvent::default(),
        ];
        let links = vec![SpanLink {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([9; 8]),
            trace_state: "a=b".into(),
            attributes: attrs,
            dropped_attributes_count: 1,
            flags: 257,
        }];
        let ev_value: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "timeUnixNano": e.time_ns.to_string(),
                    "name": e.name,
                    "attributes": kvs_to_json(&e.attributes),
                    "droppedAttributesCount": e.dropped_attributes_count,
                })
            })
            .collect();
        let link_value: Vec<Value> = links
            .iter()
            .map(|l| {
                json!({
                    "traceId": l.trace_id.to_hex(),
                    "spanId": l.span_id.to_hex(),
                    "traceState": l.trace_state,
                    "attributes": kvs_to_json(&l.attributes),
                    "droppedAttributesCount": l.dropped_attributes_count,
                    "flags": l.flags,
                })
            })
            .collect();
        let (mut ev, mut li) = (String::new(), String::new());
        events_to_json(&events, &mut ev);
        links_to_json(&links, &mut li);
        assert_eq!(ev, Value::Array(ev_value).to_string());
        assert_eq!(li, Value::Array(link_value).to_string());
        assert_eq!(events_from_json(&ev).unwrap(), events);
        assert_eq!(links_from_json(&li).unwrap(), links);
    }
}

use std::fmt;

use serde::{Deserialize, Serialize};

/// A typed attribute value, as rich as OTLP's `AnyValue` so that spans survive a round trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub enum AnyValue {
    /// No value (OTLP's unset `AnyValue`).
    #[default]
    Empty,
    /// UTF-8 string.
    String(String),
    /// Boolean.
    Bool(bool),
    /// Signed 64-bit integer.
    Int(i64),
    /// IEEE-754 double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Ordered list of values.
    Array(Vec<AnyValue>),
    /// Ordered key-value list (keys may repeat, as in OTLP).
    KvList(Vec<KeyValue>),
}

impl AnyValue {
    /// The value as Prometheus/Loki would print it in a label: strings verbatim, scalars in their
    /// usual text form, composites as JSON.
    pub fn to_label_string(&self) -> String {
        match self {
            AnyValue::Empty => String::new(),
            AnyValue::String(s) => s.clone(),
            AnyValue::Bool(b) => b.to_string(),
            AnyValue::Int(i) => i.to_string(),
            AnyValue::Double(d) => d.to_string(),
            AnyValue::Bytes(b) => hex::encode(b),
            AnyValue::Array(_) | AnyValue::KvList(_) => self.to_json(),
        }
    }

    /// JSON text of the value (used for structured log bodies and composite attributes).
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        match self {
            AnyValue::Empty => out.push_str("null"),
            AnyValue::String(s) => write_json_string(s, out),
            AnyValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            AnyValue::Int(i) => out.push_str(&i.to_string()),
            AnyValue::Double(d) if d.is_finite() => out.push_str(&d.to_string()),
            AnyValue::Double(d) => write_json_string(&d.to_string(), out),
            AnyValue::Bytes(b) => write_json_string(&hex::encode(b), out),
            AnyValue::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write_json(out);
                }
                out.push(']');
            }
            AnyValue::KvList(kvs) => {
                out.push('{');
                for (i, kv) in kvs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_json_string(&kv.key, out);
                    out.push(':');
                    kv.value.write_json(out);
                }
                out.push('}');
            }
        }
    }

    /// Heap bytes this value holds (for limits and memory accounting).
    pub fn heap_size(&self) -> usize {
        match self {
            AnyValue::String(s) => s.len(),
            AnyValue::Bytes(b) => b.len(),
            AnyValue::Array(items) => items.iter().map(AnyValue::heap_size).sum(),
            AnyValue::KvList(kvs) => kvs.iter().map(|kv| kv.key.len() + kv.value.heap_size()).sum(),
            _ => 0,
        }
    }
}

/// Appends `s` as a JSON string literal (quotes, backslash, control characters escaped; everything
/// else verbatim UTF-8). Shared by the model's JSON rendering and the API encoders.
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A key and its typed value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct KeyValue {
    /// Attribute key.
    pub key: String,
    /// Attribute value.
    pub value: AnyValue,
}

impl KeyValue {
    /// Convenience constructor.
    pub fn new(key: impl Into<String>, value: AnyValue) -> Self {
        KeyValue { key: key.into(), value }
    }
}

/// The entity that produced telemetry (OTLP `Resource`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Resource {
    /// Resource attributes (`service.name`, `host.name`, …).
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender.
    pub dropped_attributes_count: u32,
    /// Schema URL of the resource.
    pub schema_url: String,
}

impl Resource {
    /// The string value of attribute `key`, if present and a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|kv| kv.key == key).and_then(|kv| match &kv.value {
            AnyValue::String(s) => Some(s.as_str()),
            _ => None,
        })
    }
}

/// The instrumentation scope (library) that produced telemetry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Scope {
    /// Scope name.
    pub name: String,
    /// Scope version.
    pub version: String,
    /// Scope attributes.
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped by the sender.
    pub dropped_attributes_count: u32,
    /// Schema URL of the scope.
    pub schema_url: String,
}

/// A 16-byte trace id. The all-zero id is invalid in OTLP and is never stored as a `TraceId`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. The all-zero id is invalid in OTLP and is never stored as a `SpanId`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct SpanId(pub [u8; 8]);

macro_rules! id_impls {
    ($t:ident, $n:expr) => {
        impl $t {
            /// Builds an id from bytes; `None` unless exactly the right length and not all zero.
            pub fn from_slice(b: &[u8]) -> Option<Self> {
                let arr: [u8; $n] = b.try_into().ok()?;
                if arr == [0u8; $n] { None } else { Some($t(arr)) }
            }
            /// Parses lower- or upper-case hex of exactly the right length.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut arr = [0u8; $n];
                hex::decode_to_slice(s, &mut arr).ok()?;
                Self::from_slice(&arr)
            }
            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.to_hex())
            }
        }
    };
}
id_impls!(TraceId, 16);
id_impls!(SpanId, 8);

/// One label: a name and a value, both UTF-8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value.
    pub value: String,
}

/// A label set, kept sorted by name with unique names (Prometheus' canonical form), so equal sets
/// compare and hash equal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Labels(Vec<Label>);

impl Labels {
    /// An empty label set.
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Builds a canonical set from pairs: sorted by name; for a repeated name the last value wins;
    /// empty values are dropped (an empty label equals an absent one in Prometheus and Loki).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut v: Vec<Label> = pairs.into_iter().map(|(k, v)| Label { name: k.into(), value: v.into() }).collect();
        // Stable sort keeps input order among equal names, so "last wins" is the last of each run.
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(prev) if prev.name == l.name => *prev = l,
                _ => out.push(l),
            }
        }
        out.retain(|l| !l.value.is_empty());
        Labels(out)
    }

    /// A set from labels already sorted by name with unique names and no empty value (the
    /// caller's invariant; stores rebuilding a set they validated on the way in).
    pub(crate) fn from_sorted(labels: impl IntoIterator<Item = Label>) -> Self {
        let v: Vec<Label> = labels.into_iter().collect();
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name));
        Labels(v)
    }

    /// Like [`Labels::from_pairs`] but keeps empty values: LogQL results can carry labels with
    /// an empty value (a `logfmt`/`json` parameter that found nothing), which Loki returns as such.
    pub fn from_pairs_keep_empty<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut v: Vec<Label> = pairs.into_iter().map(|(k, v)| Label { name: k.into(), value: v.into() }).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v {
            match out.last_mut() {
                Some(prev) if prev.name == l.name => *prev = l,
                _ => out.push(l),
            }
        }
        Labels(out)
    }

    /// A copy of the set without label `name` (allocated once, at its final size).
    pub fn without(&self, name: &str) -> Labels {
        let mut v = Vec::with_capacity(self.0.len());
        v.extend(self.0.iter().filter(|l| l.name != name).cloned());
        Labels(v)
    }

    /// Value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).ok().map(|i| self.0[i].value.as_str())
    }

    /// Sets (or replaces) a label, keeping the set canonical; an empty value removes it.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let (name, value) = (name.into(), value.into());
        match self.0.binary_search_by(|l| l.name.as_str().cmp(&name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].value = value,
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, Label { name, value }),
        }
    }

    /// The labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of names and values (for limits).
    pub fn byte_size(&self) -> usize {
        self.0.iter().map(|l| l.name.len() + l.value.len()).sum()
    }
}

impl fmt::Display for Labels {
    /// Prometheus' text form: `{a="1", b="2"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_canonical() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="1", b="3"}"#);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        let mut m = l.clone();
        m.set("0", "z");
        m.set("a", "");
        assert_eq!(m.to_string(), r#"{0="z", b="3"}"#);
    }

    #[test]
    fn ids_reject_zero_and_wrong_length() {
        assert!(TraceId::from_slice(&[0; 16]).is_none());
        assert!(TraceId::from_slice(&[1; 15]).is_none());
        let t = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        assert_eq!(t.to_hex(), "0af7651916cd43dd8448eb211c80319c");
        assert!(SpanId::from_hex("00f067aa0ba902b7").is_some());
        assert!(SpanId::from_hex("zz").is_none());
        // Either case; exactly the right length; every character a hex digit; not all zero.
        assert_eq!(TraceId::from_hex("0AF7651916CD43DD8448EB211C80319C"), Some(t));
        assert!(TraceId::from_hex("0af7651916cd43dd8448eb211c80319").is_none());
        assert!(TraceId::from_hex("0af7651916cd43dd8448eb211c80319c0").is_none());
        assert!(TraceId::from_hex("0af7651916cd43dd8448eb211c80319g").is_none());
        assert!(TraceId::from_hex("0af7651916cd43dd8448eb211c8031 c").is_none());
        assert!(SpanId::from_hex("0000000000000000").is_none());
        assert!(SpanId::from_hex("00f067aa0ba902é").is_none());
        assert_eq!(SpanId::from_hex("ff00ff00ff00ff00"), Some(SpanId([0xff, 0, 0xff, 0, 0xff, 0, 0xff, 0])));
    }

    #[test]
    fn any_value_json() {
        let v = AnyValue::KvList(vec![
            KeyValue::new("a", AnyValue::Int(1)),
            KeyValue::new("b\"", AnyValue::Array(vec![AnyValue::Bool(true), AnyValue::Empty])),
            KeyValue::new("c", AnyValue::Double(f64::NAN)),
        ]);
        assert_eq!(v.to_json(), r#"{"a":1,"b\"":[true,null],"c":"NaN"}"#);
    }
}

//! The protobuf encoding of the nested span fields (attributes, events, links) as span files of
//! format 2 store them: each column value is an OTLP `opentelemetry.proto.trace.v1.Span` message
//! holding only that one repeated field (`attributes` = 9, `events` = 11, `links` = 13), in the
//! protobuf wire format. So any protobuf reader with the OTLP schema decodes a cell, the three cells
//! of a row concatenated are one valid `Span`, and every value type survives bit for bit (64-bit
//! integers, NaN payloads, bytes, nested arrays and key-value lists, repeated keys).
//!
//! The writer is canonical proto3 (scalar fields at their default are left out; array items are
//! always written, an empty `AnyValue` as a zero-length message). The reader accepts any valid
//! encoding of those messages: fields in any order, unknown fields skipped, non-minimal varints;
//! a scalar field seen twice keeps the last value, as protobuf prescribes. Invariant: nothing in
//! here panics on arbitrary bytes; corrupt input is an `Err`.

use crate::model::{AnyValue, KeyValue, SpanEvent, SpanId, SpanLink, TraceId};

/// `Span.attributes`.
const SPAN_ATTRIBUTES: u32 = 9;
/// `Span.events`.
const SPAN_EVENTS: u32 = 11;
/// `Span.links`.
const SPAN_LINKS: u32 = 13;

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

/// Nesting deeper than this (values inside values) is refused when reading; OTLP receivers refuse
/// far less deep input (prost's decoder stops at 100 levels).
const MAX_DEPTH: u32 = 200;

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    ((64 - (v | 1).leading_zeros()) as usize).div_ceil(7)
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(field: u32, wire: u8, out: &mut Vec<u8>) {
    put_varint((u64::from(field) << 3) | u64::from(wire), out);
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// Bytes of a length-delimited field holding `n` bytes.
fn len_field(field: u32, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

fn put_bytes(field: u32, data: &[u8], out: &mut Vec<u8>) {
    put_tag(field, LEN, out);
    put_varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// Size of the `AnyValue` message `v`.
fn any_len(v: &AnyValue) -> usize {
    match v {
        AnyValue::Empty => 0,
        AnyValue::String(s) => len_field(1, s.len()),
        AnyValue::Bool(_) => 2,
        AnyValue::Int(i) => 1 + varint_len(*i as u64),
        AnyValue::Double(_) => 9,
        AnyValue::Array(items) => len_field(5, items.iter().map(|it| len_field(1, any_len(it))).sum()),
        AnyValue::KvList(kvs) => len_field(6, kvs_len(1, kvs)),
        AnyValue::Bytes(b) => len_field(7, b.len()),
    }
}

fn put_any(v: &AnyValue, out: &mut Vec<u8>) {
    match v {
        AnyValue::Empty => {}
        AnyValue::String(s) => put_bytes(1, s.as_bytes(), out),
        AnyValue::Bool(b) => {
            put_tag(2, VARINT, out);
            out.push(u8::from(*b));
        }
        AnyValue::Int(i) => {
            put_tag(3, VARINT, out);
            put_varint(*i as u64, out);
        }
        AnyValue::Double(d) => {
            put_tag(4, I64, out);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        AnyValue::Array(items) => {
            put_tag(5, LEN, out);
            put_varint(items.iter().map(|it| len_field(1, any_len(it))).sum::<usize>() as u64, out);
            for it in items {
                put_tag(1, LEN, out);
                put_varint(any_len(it) as u64, out);
                put_any(it, out);
            }
        }
        AnyValue::KvList(kvs) => {
            put_tag(6, LEN, out);
            put_varint(kvs_len(1, kvs) as u64, out);
            put_kvs(1, kvs, out);
        }
        AnyValue::Bytes(b) => put_bytes(7, b, out),
    }
}

/// Size of the `KeyValue` message `kv`.
fn kv_len(kv: &KeyValue) -> usize {
    let key = if kv.key.is_empty() { 0 } else { len_field(1, kv.key.len()) };
    let value = match &kv.value {
        AnyValue::Empty => 0,
        v => len_field(2, any_len(v)),
    };
    key + value
}

/// Bytes of `kvs` as repeated `KeyValue` field `field`.
fn kvs_len(field: u32, kvs: &[KeyValue]) -> usize {
    kvs.iter().map(|kv| len_field(field, kv_len(kv))).sum()
}

fn put_kvs(field: u32, kvs: &[KeyValue], out: &mut Vec<u8>) {
    for kv in kvs {
        put_tag(field, LEN, out);
        put_varint(kv_len(kv) as u64, out);
        if !kv.key.is_empty() {
            put_bytes(1, kv.key.as_bytes(), out);
        }
        if !matches!(kv.value, AnyValue::Empty) {
            put_tag(2, LEN, out);
            put_varint(any_len(&kv.value) as u64, out);
            put_any(&kv.value, out);
        }
    }
}

/// Appends the `attributes` cell: a `Span` with only its attributes.
pub(crate) fn write_attributes(kvs: &[KeyValue], out: &mut Vec<u8>) {
    put_kvs(SPAN_ATTRIBUTES, kvs, out);
}

fn event_len(e: &SpanEvent) -> usize {
    let mut n = 0;
    if e.time_ns != 0 {
        n += 9;
    }
    if !e.name.is_empty() {
        n += len_field(2, e.name.len());
    }
    n += kvs_len(3, &e.attributes);
    if e.dropped_attributes_count != 0 {
        n += 1 + varint_len(u64::from(e.dropped_attributes_count));
    }
    n
}

/// Appends the `events` cell: a `Span` with only its events (`Span.Event`).
pub(crate) fn write_events(events: &[SpanEvent], out: &mut Vec<u8>) {
    for e in events {
        put_tag(SPAN_EVENTS, LEN, out);
        put_varint(event_len(e) as u64, out);
        if e.time_ns != 0 {
            put_tag(1, I64, out);
            out.extend_from_slice(&(e.time_ns as u64).to_le_bytes());
        }
        if !e.name.is_empty() {
            put_bytes(2, e.name.as_bytes(), out);
        }
        put_kvs(3, &e.attributes, out);
        if e.dropped_attributes_count != 0 {
            put_tag(4, VARINT, out);
            put_varint(u64::from(e.dropped_attributes_count), out);
        }
    }
}

fn link_len(l: &SpanLink) -> usize {
    let mut n = len_field(1, 16) + len_field(2, 8);
    if !l.trace_state.is_empty() {
        n += len_field(3, l.trace_state.len());
    }
    n += kvs_len(4, &l.attributes);
    if l.dropped_attributes_count != 0 {
        n += 1 + varint_len(u64::from(l.dropped_attributes_count));
    }
    if l.flags != 0 {
        n += 5;
    }
    n
}

/// Appends the `links` cell: a `Span` with only its links (`Span.Link`).
pub(crate) fn write_links(links: &[SpanLink], out: &mut Vec<u8>) {
    for l in links {
        put_tag(SPAN_LINKS, LEN, out);
        put_varint(link_len(l) as u64, out);
        put_bytes(1, &l.trace_id.0, out);
        put_bytes(2, &l.span_id.0, out);
        if !l.trace_state.is_empty() {
            put_bytes(3, l.trace_state.as_bytes(), out);
        }
        put_kvs(4, &l.attributes, out);
        if l.dropped_attributes_count != 0 {
            put_tag(5, VARINT, out);
            put_varint(u64::from(l.dropped_attributes_count), out);
        }
        if l.flags != 0 {
            put_tag(6, I32, out);
            out.extend_from_slice(&l.flags.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// One field of a message being read.
enum Value<'a> {
    Varint(u64),
    I64(u64),
    Len(&'a [u8]),
    I32(u32),
}

/// Reads the fields of one message.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else { return Err("truncated varint".into()) };
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// The next field, `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            I64 => {
                let b = self.take(8)?;
                Value::I64(u64::from_le_bytes(b.try_into().map_err(|_| "truncated")?))
            }
            LEN => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                Value::Len(self.take(n)?)
            }
            I32 => {
                let b = self.take(4)?;
                Value::I32(u32::from_le_bytes(b.try_into().map_err(|_| "truncated")?))
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok(Some((field, value)))
    }
}

fn string(b: &[u8]) -> Result<String, String> {
    std::str::from_utf8(b).map(str::to_owned).map_err(|_| "invalid UTF-8".into())
}

fn wrong(what: &str) -> String {
    format!("{what}: unexpected wire type")
}

fn read_any(buf: &[u8], depth: u32) -> Result<AnyValue, String> {
    if depth > MAX_DEPTH {
        return Err("values nested too deep".into());
    }
    let mut r = Reader { buf };
    let mut out = AnyValue::Empty;
    while let Some((field, v)) = r.field()? {
        out = match (field, v) {
            (1, Value::Len(b)) => AnyValue::String(string(b)?),
            (2, Value::Varint(x)) => AnyValue::Bool(x != 0),
            (3, Value::Varint(x)) => AnyValue::Int(x as i64),
            (4, Value::I64(x)) => AnyValue::Double(f64::from_bits(x)),
            (5, Value::Len(b)) => {
                let mut items = Vec::new();
                let mut a = Reader { buf: b };
                while let Some((f, v)) = a.field()? {
                    match (f, v) {
                        (1, Value::Len(item)) => items.push(read_any(item, depth + 1)?),
                        (1, _) => return Err(wrong("array value")),
                        _ => {}
                    }
                }
                AnyValue::Array(items)
            }
            (6, Value::Len(b)) => AnyValue::KvList(read_kvs(1, b, depth + 1)?),
            (7, Value::Len(b)) => AnyValue::Bytes(b.to_vec()),
            (1..=7, _) => return Err(wrong("value")),
            _ => continue,
        };
    }
    Ok(out)
}

fn read_kv(buf: &[u8], depth: u32) -> Result<KeyValue, String> {
    let mut r = Reader { buf };
    let mut kv = KeyValue { key: String::new(), value: AnyValue::Empty };
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Len(b)) => kv.key = string(b)?,
            (2, Value::Len(b)) => kv.value = read_any(b, depth + 1)?,
            (1 | 2, _) => return Err(wrong("key-value")),
            _ => {}
        }
    }
    Ok(kv)
}

/// The repeated `KeyValue` field `field` of the message `buf`.
fn read_kvs(field: u32, buf: &[u8], depth: u32) -> Result<Vec<KeyValue>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some((f, v)) = r.field()? {
        match v {
            Value::Len(b) if f == field => out.push(read_kv(b, depth)?),
            _ if f == field => return Err(wrong("attributes")),
            _ => {}
        }
    }
    Ok(out)
}

/// Reads an `attributes` cell.
pub(crate) fn read_attributes(buf: &[u8]) -> Result<Vec<KeyValue>, String> {
    read_kvs(SPAN_ATTRIBUTES, buf, 0)
}

fn u32_of(x: u64, what: &str) -> Result<u32, String> {
    u32::try_from(x).map_err(|_| format!("{what} out of range"))
}

/// Reads an `events` cell.
pub(crate) fn read_events(buf: &[u8]) -> Result<Vec<SpanEvent>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some((f, v)) = r.field()? {
        let b = match (f, v) {
            (SPAN_EVENTS, Value::Len(b)) => b,
            (SPAN_EVENTS, _) => return Err(wrong("events")),
            _ => continue,
        };
        let mut e = SpanEvent::default();
        let mut er = Reader { buf: b };
        while let Some((f, v)) = er.field()? {
            match (f, v) {
                (1, Value::I64(x)) => e.time_ns = x as i64,
                (2, Value::Len(s)) => e.name = string(s)?,
                (3, Value::Len(kv)) => e.attributes.push(read_kv(kv, 0)?),
                (4, Value::Varint(x)) => e.dropped_attributes_count = u32_of(x, "dropped attributes")?,
                (1..=4, _) => return Err(wrong("event")),
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Reads a `links` cell.
pub(crate) fn read_links(buf: &[u8]) -> Result<Vec<SpanLink>, String> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some((f, v)) = r.field()? {
        let b = match (f, v) {
            (SPAN_LINKS, Value::Len(b)) => b,
            (SPAN_LINKS, _) => return Err(wrong("links")),
            _ => continue,
        };
        let mut l = SpanLink::default();
        let mut lr = Reader { buf: b };
        while let Some((f, v)) = lr.field()? {
            match (f, v) {
                // Taken as they are (all-zero ids too): what was ingested reads back.
                (1, Value::Len(id)) => {
                    l.trace_id = TraceId(id.try_into().map_err(|_| "link trace id is not 16 bytes")?)
                }
                (2, Value::Len(id)) => l.span_id = SpanId(id.try_into().map_err(|_| "link span id is not 8 bytes")?),
                (3, Value::Len(s)) => l.trace_state = string(s)?,
                (4, Value::Len(kv)) => l.attributes.push(read_kv(kv, 0)?),
                (5, Value::Varint(x)) => l.dropped_attributes_count = u32_of(x, "dropped attributes")?,
                (6, Value::I32(x)) => l.flags = x,
                (1..=6, _) => return Err(wrong("link")),
                _ => {}
            }
        }
        out.push(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_value() -> Vec<KeyValue> {
        vec![
            KeyValue::new("s", AnyValue::String("x é 𝄞".into())),
            KeyValue::new("", AnyValue::String(String::new())),
            KeyValue::new("b", AnyValue::Bool(true)),
            KeyValue::new("f", AnyValue::Bool(false)),
            KeyValue::new("i", AnyValue::Int(i64::MIN)),
            KeyValue::new("z", AnyValue::Int(0)),
            KeyValue::new("m", AnyValue::Int(i64::MAX)),
            KeyValue::new("d", AnyValue::Double(1.5)),
            KeyValue::new("inf", AnyValue::Double(f64::NEG_INFINITY)),
            KeyValue::new("zero", AnyValue::Double(-0.0)),
            KeyValue::new("y", AnyValue::Bytes(vec![1, 2, 3, 250])),
            KeyValue::new("ey", AnyValue::Bytes(vec![])),
            KeyValue::new("a", AnyValue::Array(vec![AnyValue::Int(1), AnyValue::Empty, AnyValue::Array(vec![])])),
            KeyValue::new("k", AnyValue::KvList(vec![KeyValue::new("n", AnyValue::Double(-0.25))])),
            KeyValue::new("e", AnyValue::Empty),
            KeyValue::new("s", AnyValue::String("repeated key".into())),
        ]
    }

    #[test]
    fn every_value_type_round_trips_bit_for_bit() {
        let kvs = every_value();
        let mut buf = Vec::new();
        write_attributes(&kvs, &mut buf);
        let back = read_attributes(&buf).unwrap();
        assert_eq!(back, kvs);
        // -0.0 == 0.0 and NaN != NaN: compare the bits too.
        let nan = vec![KeyValue::new("nan", AnyValue::Double(f64::from_bits(0x7ff8_0000_dead_beef)))];
        let mut buf = Vec::new();
        write_attributes(&nan, &mut buf);
        match &read_attributes(&buf).unwrap()[0].value {
            AnyValue::Double(d) => assert_eq!(d.to_bits(), 0x7ff8_0000_dead_beef),
            v => panic!("{v:?}"),
        }
        assert!(read_attributes(&[]).unwrap().is_empty());
    }

    #[test]
    fn events_and_links_round_trip() {
        let events = vec![
            SpanEvent { time_ns: -17, name: "ex".into(), attributes: every_value(), dropped_attributes_count: 2 },
            SpanEvent::default(),
        ];
        let links = vec![
            SpanLink {
                trace_id: TraceId([7; 16]),
                span_id: SpanId([9; 8]),
                trace_state: "a=b".into(),
                attributes: every_value(),
                dropped_attributes_count: u32::MAX,
                flags: 0x301,
            },
            SpanLink::default(),
        ];
        let (mut e, mut l) = (Vec::new(), Vec::new());
        write_events(&events, &mut e);
        write_links(&links, &mut l);
        assert_eq!(read_events(&e).unwrap(), events);
        assert_eq!(read_links(&l).unwrap(), links);
        assert!(read_events(&[]).unwrap().is_empty());
        assert!(read_links(&[]).unwrap().is_empty());
    }

    /// Golden bytes, checked by hand against the OTLP `.proto` field numbers and wire types.
    #[test]
    fn the_wire_format_is_otlp_span_fields() {
        let mut buf = Vec::new();
        write_attributes(&[KeyValue::new("k", AnyValue::Int(-1))], &mut buf);
        let mut want = vec![0x4a, 16, 0x0a, 1, b'k', 0x12, 11, 0x18];
        want.extend([0xff; 9]);
        want.push(0x01);
        assert_eq!(buf, want);
        let mut buf = Vec::new();
        write_events(&[SpanEvent { time_ns: 1, name: "e".into(), ..SpanEvent::default() }], &mut buf);
        assert_eq!(buf, [0x5a, 12, 0x09, 1, 0, 0, 0, 0, 0, 0, 0, 0x12, 1, b'e']);
        let mut buf = Vec::new();
        write_links(&[SpanLink { flags: 1, ..SpanLink::default() }], &mut buf);
        let mut want = vec![0x6a, 33, 0x0a, 16];
        want.extend([0; 16]);
        want.extend([0x12, 8]);
        want.extend([0; 8]);
        want.extend([0x35, 1, 0, 0, 0]);
        assert_eq!(buf, want);
        // A reader skips fields it does not know (here a Span name, field 5) and takes fields in
        // any order.
        let mut mixed = vec![0x2a, 2, b'n', b'm'];
        mixed.extend(&buf);
        assert_eq!(read_links(&mixed).unwrap(), vec![SpanLink { flags: 1, ..SpanLink::default() }]);
    }

    /// Random nested values, events and links (a fixed-seed xorshift) read back equal. (Format 1's
    /// JSON did not always: `serde_json`'s default float parsing can change the last digit of a
    /// double, e.g. 3.7126218667486726e-203 read back as 3.712621866748673e-203.)
    #[test]
    fn random_fields_round_trip() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        fn value(next: &mut dyn FnMut() -> u64, depth: u32) -> AnyValue {
            match next() % if depth > 3 { 6 } else { 8 } {
                0 => AnyValue::Empty,
                1 => AnyValue::String(format!("s{}\u{e9}\"\n", next() % 1000)),
                2 => AnyValue::Bool(next().is_multiple_of(2)),
                3 => AnyValue::Int(next() as i64),
                4 => AnyValue::Double(f64::from_bits(next() % (0x7ff0 << 48))),
                5 => AnyValue::Bytes((0..next() % 5).map(|_| next() as u8).collect()),
                6 => AnyValue::Array((0..next() % 4).map(|_| value(next, depth + 1)).collect()),
                _ => AnyValue::KvList(kvs(next, depth + 1)),
            }
        }
        fn kvs(next: &mut dyn FnMut() -> u64, depth: u32) -> Vec<KeyValue> {
            (0..next() % 5).map(|_| KeyValue::new(format!("k{}", next() % 7), value(next, depth))).collect()
        }
        for _ in 0..300 {
            let attrs = kvs(&mut next, 0);
            let events: Vec<SpanEvent> = (0..next() % 3)
                .map(|_| SpanEvent {
                    time_ns: next() as i64,
                    name: format!("e{}", next() % 9),
                    attributes: kvs(&mut next, 1),
                    dropped_attributes_count: (next() % 3) as u32,
                })
                .collect();
            let links: Vec<SpanLink> = (0..next() % 3)
                .map(|_| SpanLink {
                    trace_id: TraceId((next() as u128 | 1).to_le_bytes()),
                    span_id: SpanId((next() | 1).to_le_bytes()),
                    trace_state: format!("t={}", next() % 5),
                    attributes: kvs(&mut next, 1),
                    dropped_attributes_count: (next() % 3) as u32,
                    flags: (next() % 0x400) as u32,
                })
                .collect();
            let (mut a, mut e, mut l) = (Vec::new(), Vec::new(), Vec::new());
            write_attributes(&attrs, &mut a);
            write_events(&events, &mut e);
            write_links(&links, &mut l);
            assert_eq!(read_attributes(&a).unwrap(), attrs);
            assert_eq!(read_events(&e).unwrap(), events);
            assert_eq!(read_links(&l).unwrap(), links);
        }
    }

    #[test]
    fn corrupt_bytes_are_errors_not_panics() {
        let mut good = Vec::new();
        write_attributes(&every_value(), &mut good);
        write_events(&[SpanEvent { time_ns: 5, name: "n".into(), ..SpanEvent::default() }], &mut good);
        for cut in 0..good.len() {
            let _ = read_attributes(&good[..cut]);
            let _ = read_events(&good[..cut]);
            let _ = read_links(&good[..cut]);
        }
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            let mut bad = good.clone();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let i = x as usize % bad.len();
            bad[i] ^= (x >> 8) as u8 | 1;
            let _ = read_attributes(&bad);
            let _ = read_events(&bad);
            let _ = read_links(&bad);
        }
        assert!(read_attributes(&[0x4a, 5, 0x0a]).is_err(), "truncated");
        assert!(read_attributes(&[0x4a, 3, 0x0a, 1, 0xff]).is_err(), "invalid UTF-8");
        assert!(read_attributes(&[0x48, 1]).is_err(), "attributes as a varint");
        // Deep nesting is refused, not a stack overflow.
        let mut deep = Vec::new();
        let mut v = AnyValue::Int(1);
        for _ in 0..(MAX_DEPTH + 5) {
            v = AnyValue::Array(vec![v]);
        }
        write_attributes(&[KeyValue::new("d", v)], &mut deep);
        assert!(read_attributes(&deep).is_err());
    }
}

//! The encoding of the nested span fields (attributes, events, links) in span files of format 2:
//! each cell is the [postcard](https://docs.rs/postcard) encoding of the model's list
//! (`Vec<KeyValue>`, `Vec<SpanEvent>`, `Vec<SpanLink>`, with their serde derives), and an empty
//! list is an empty cell. Postcard is the compact binary serde format the WAL already uses: every
//! value type survives bit for bit (64-bit integers, NaN payloads and `-0.0`, bytes, nested arrays
//! and key-value lists, repeated keys), and encoding writes straight from the model, with no
//! intermediate message types.
//!
//! Invariant: reading never panics on damaged bytes; a cell that does not decode exactly (bad
//! framing, invalid UTF-8, trailing bytes) is an `Err`. Nesting depth is bounded by what ingest
//! accepts (the OTLP decoder stops at 100 levels), as in the WAL.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{KeyValue, SpanEvent, SpanLink};

fn write<T: Serialize>(items: &[T], out: &mut Vec<u8>) {
    if items.is_empty() {
        return;
    }
    // Serializing model values into a vector cannot fail (no maps of unknown length, no I/O).
    let _ = crate::postcard_append::append(items, out);
}

fn read<T: DeserializeOwned>(buf: &[u8], what: &str) -> Result<Vec<T>, String> {
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    match postcard::take_from_bytes::<Vec<T>>(buf) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{what}: {} trailing bytes", rest.len())),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Appends the `attributes` cell.
pub(crate) fn write_attributes(kvs: &[KeyValue], out: &mut Vec<u8>) {
    write(kvs, out);
}

/// Appends the `events` cell.
pub(crate) fn write_events(events: &[SpanEvent], out: &mut Vec<u8>) {
    write(events, out);
}

/// Appends the `links` cell.
pub(crate) fn write_links(links: &[SpanLink], out: &mut Vec<u8>) {
    write(links, out);
}

/// Reads an `attributes` cell.
pub(crate) fn read_attributes(buf: &[u8]) -> Result<Vec<KeyValue>, String> {
    read(buf, "attributes")
}

/// Reads an `events` cell.
pub(crate) fn read_events(buf: &[u8]) -> Result<Vec<SpanEvent>, String> {
    read(buf, "events")
}

/// Reads a `links` cell.
pub(crate) fn read_links(buf: &[u8]) -> Result<Vec<SpanLink>, String> {
    read(buf, "links")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AnyValue, SpanId, TraceId};

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
        assert!(read_attributes(&[5, 1]).is_err(), "truncated");
        assert!(read_attributes(&[1, 1, b'k', 1, 1, 0xff]).is_err(), "invalid UTF-8");
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(read_events(&trailing).is_err() || read_attributes(&trailing).is_err(), "trailing bytes");
    }
}

//! Postcard encoding appended to a caller's vector.
//!
//! `postcard::to_extend` goes through `Extend<u8>`, which pushes each single byte (a tag, a short
//! varint) as a one-element iterator and copies strings element by element; on the hot paths (a
//! WAL record per write, the nested cells of every flushed span) that cost about twice the
//! encoding itself. This flavor appends with `push` and `extend_from_slice`; the bytes are
//! postcard's, unchanged.

use serde::Serialize;

/// Appends to the borrowed vector.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `out`. On error `out` may hold part of it.
pub(crate) fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, Append(out))
}

#[cfg(test)]
mod tests {
    use crate::model::{AnyValue, KeyValue};

    /// The same bytes as postcard's own vector output, after what was already in the vector.
    #[test]
    fn appends_postcard_bytes() {
        let kvs = vec![
            KeyValue::new("http.method", AnyValue::String("GET".into())),
            KeyValue::new("n", AnyValue::Int(-300)),
            KeyValue::new("l", AnyValue::Array(vec![AnyValue::Double(-0.0), AnyValue::Bytes(vec![0, 255])])),
        ];
        let mut out = vec![7, 7];
        super::append(&kvs, &mut out).unwrap();
        assert_eq!(out[..2], [7, 7]);
        assert_eq!(out[2..], postcard::to_allocvec(&kvs).unwrap());
    }
}

//! Sharing of repeated resources and scopes: a service sends the same resource with every batch,
//! and the stores keep one `Arc` of it instead of one copy per batch.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use crate::FastMap;

use crate::model::{AnyValue, KeyValue, Resource, Scope};

/// Structural identity for values holding `f64`s, which have neither `Eq` nor `Hash`: doubles
/// compare and hash by bit pattern, so a NaN attribute still finds its twin.
pub(crate) trait Identity {
    fn hash_into(&self, h: &mut impl Hasher);
    fn same(&self, other: &Self) -> bool;
}

impl Identity for AnyValue {
    fn hash_into(&self, h: &mut impl Hasher) {
        std::mem::discriminant(self).hash(h);
        match self {
            AnyValue::Empty => {}
            AnyValue::String(s) => s.hash(h),
            AnyValue::Bool(b) => b.hash(h),
            AnyValue::Int(i) => i.hash(h),
            AnyValue::Double(d) => d.to_bits().hash(h),
            AnyValue::Bytes(b) => b.hash(h),
            AnyValue::Array(items) => {
                items.len().hash(h);
                items.iter().for_each(|v| v.hash_into(h));
            }
            AnyValue::KvList(kvs) => kvs.hash_into(h),
        }
    }

    fn same(&self, other: &Self) -> bool {
        match (self, other) {
            (AnyValue::Double(a), AnyValue::Double(b)) => a.to_bits() == b.to_bits(),
            (AnyValue::Array(a), AnyValue::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
            (AnyValue::KvList(a), AnyValue::KvList(b)) => a.same(b),
            (a, b) => a == b,
        }
    }
}

impl Identity for Vec<KeyValue> {
    fn hash_into(&self, h: &mut impl Hasher) {
        self.len().hash(h);
        for kv in self {
            kv.key.hash(h);
            kv.value.hash_into(h);
        }
    }

    fn same(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a.key == b.key && a.value.same(&b.value))
    }
}

impl Identity for Resource {
    fn hash_into(&self, h: &mut impl Hasher) {
        self.attributes.hash_into(h);
        self.dropped_attributes_count.hash(h);
        self.schema_url.hash(h);
    }

    fn same(&self, other: &Self) -> bool {
        self.attributes.same(&other.attributes)
            && self.dropped_attributes_count == other.dropped_attributes_count
            && self.schema_url == other.schema_url
    }
}

impl Identity for Scope {
    fn hash_into(&self, h: &mut impl Hasher) {
        self.name.hash(h);
        self.version.hash(h);
        self.attributes.hash_into(h);
        self.dropped_attributes_count.hash(h);
        self.schema_url.hash(h);
    }

    fn same(&self, other: &Self) -> bool {
        self.name == other.name
            && self.version == other.version
            && self.attributes.same(&other.attributes)
            && self.dropped_attributes_count == other.dropped_attributes_count
            && self.schema_url == other.schema_url
    }
}

/// A set of shared values. It only grows: entries stay referenced by the records that use them.
pub(crate) struct Interner<T> {
    by_hash: FastMap<u64, Vec<Arc<T>>>,
    /// Seeded per process, so crafted resources cannot pile into one bucket.
    hasher: foldhash::fast::RandomState,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner { by_hash: FastMap::default(), hasher: foldhash::fast::RandomState::default() }
    }
}

impl<T: Identity> Interner<T> {
    /// The shared copy of `value`, created on first sight.
    pub fn intern(&mut self, value: T) -> Arc<T> {
        let mut h = self.hasher.build_hasher();
        value.hash_into(&mut h);
        let bucket = self.by_hash.entry(h.finish()).or_default();
        if let Some(shared) = bucket.iter().find(|shared| shared.same(&value)) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(value);
        bucket.push(Arc::clone(&shared));
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_arc() {
        let mut interner = Interner::default();
        let r = |v: f64| Resource {
            attributes: vec![KeyValue::new("x", AnyValue::Array(vec![AnyValue::Double(v)]))],
            ..Resource::default()
        };
        let a = interner.intern(r(f64::NAN));
        let b = interner.intern(r(f64::NAN));
        let c = interner.intern(r(1.0));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}

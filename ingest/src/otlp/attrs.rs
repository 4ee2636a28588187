//! OTLP attributes, resources and scopes → model, with the attribute limits.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue as PAnyValue, InstrumentationScope, KeyValue as PKeyValue, any_value::Value as PValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use storage::model::{AnyValue, KeyValue, Resource, Scope};

use super::{Limits, Reject, RejectReason, quoted};

/// Every OTLP value variant; an unset value is `Empty`. `string_value_strindex` only means
/// something inside a profiles dictionary, so outside profiles it is `Empty` too.
pub(crate) fn any_value(v: Option<PAnyValue>) -> AnyValue {
    match v.and_then(|v| v.value) {
        None | Some(PValue::StringValueStrindex(_)) => AnyValue::Empty,
        Some(PValue::StringValue(s)) => AnyValue::String(s),
        Some(PValue::BoolValue(b)) => AnyValue::Bool(b),
        Some(PValue::IntValue(i)) => AnyValue::Int(i),
        Some(PValue::DoubleValue(d)) => AnyValue::Double(d),
        Some(PValue::BytesValue(b)) => AnyValue::Bytes(b),
        Some(PValue::ArrayValue(a)) => AnyValue::Array(a.values.into_iter().map(|v| any_value(Some(v))).collect()),
        Some(PValue::KvlistValue(kv)) => AnyValue::KvList(kv.values.into_iter().map(key_value).collect()),
    }
}

pub(crate) fn key_value(kv: PKeyValue) -> KeyValue {
    KeyValue { key: kv.key, value: any_value(kv.value) }
}

/// Bytes a value holds, measured like `model::AnyValue::heap_size` (strings, bytes, nested keys).
pub(crate) fn value_size(v: &Option<PAnyValue>) -> usize {
    v.as_ref().map_or(0, any_size)
}

fn any_size(v: &PAnyValue) -> usize {
    match &v.value {
        Some(PValue::StringValue(s)) => s.len(),
        Some(PValue::BytesValue(b)) => b.len(),
        Some(PValue::ArrayValue(a)) => a.values.iter().map(any_size).sum(),
        Some(PValue::KvlistValue(kv)) => kv.values.iter().map(|kv| kv.key.len() + value_size(&kv.value)).sum(),
        _ => 0,
    }
}

/// Checks the attribute count and value sizes without converting. `what` names the owner in the
/// rejection detail (`key`, `resource key`, …).
pub(crate) fn check_attributes(kvs: &[PKeyValue], limits: &Limits, what: &str) -> Result<(), Reject> {
    if kvs.len() > limits.max_attributes {
        return Err(Reject::with(RejectReason::TooManyAttributes, format!("{} {what}s", kvs.len())));
    }
    for kv in kvs {
        if value_size(&kv.value) > limits.max_attribute_value_bytes {
            return Err(Reject::with(RejectReason::AttributeTooLong, quoted(what, &kv.key)));
        }
    }
    Ok(())
}

/// Checks, then converts, moving every string.
pub(crate) fn attributes(kvs: Vec<PKeyValue>, limits: &Limits, what: &str) -> Result<Vec<KeyValue>, Reject> {
    check_attributes(&kvs, limits, what)?;
    Ok(kvs.into_iter().map(key_value).collect())
}

/// The resource of a resource group. Entity references have no place in the model and are
/// dropped.
pub(crate) fn resource(r: Option<PResource>, schema_url: String, limits: &Limits) -> Result<Resource, Reject> {
    let r = r.unwrap_or_default();
    Ok(Resource {
        attributes: attributes(r.attributes, limits, "resource key")?,
        dropped_attributes_count: r.dropped_attributes_count,
        schema_url,
    })
}

/// The instrumentation scope of a scope group.
pub(crate) fn scope(s: Option<InstrumentationScope>, schema_url: String, limits: &Limits) -> Result<Scope, Reject> {
    let s = s.unwrap_or_default();
    Ok(Scope {
        name: s.name,
        version: s.version,
        attributes: attributes(s.attributes, limits, "scope key")?,
        dropped_attributes_count: s.dropped_attributes_count,
        schema_url,
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn v(value: PValue) -> Option<PAnyValue> {
        Some(PAnyValue { value: Some(value) })
    }

    #[test]
    fn every_variant_maps() {
        let kvlist = PValue::KvlistValue(KeyValueList {
            values: vec![PKeyValue { key: "k".into(), value: v(PValue::IntValue(1)), key_strindex: 0 }],
        });
        let arr = PValue::ArrayValue(ArrayValue {
            values: vec![PAnyValue { value: Some(PValue::BoolValue(true)) }, PAnyValue { value: None }],
        });
        assert_eq!(any_value(None), AnyValue::Empty);
        assert_eq!(any_value(Some(PAnyValue { value: None })), AnyValue::Empty);
        assert_eq!(any_value(v(PValue::StringValue("s".into()))), AnyValue::String("s".into()));
        assert_eq!(any_value(v(PValue::DoubleValue(1.5))), AnyValue::Double(1.5));
        assert_eq!(any_value(v(PValue::BytesValue(vec![1, 2]))), AnyValue::Bytes(vec![1, 2]));
        assert_eq!(any_value(v(PValue::StringValueStrindex(3))), AnyValue::Empty);
        assert_eq!(any_value(v(arr)), AnyValue::Array(vec![AnyValue::Bool(true), AnyValue::Empty]));
        let kv = any_value(v(kvlist.clone()));
        assert_eq!(kv, AnyValue::KvList(vec![KeyValue::new("k", AnyValue::Int(1))]));
        assert_eq!(value_size(&v(kvlist)), kv.heap_size());
    }

    #[test]
    fn limits_name_the_key() {
        let limits = Limits { max_attribute_value_bytes: 3, max_attributes: 2, ..Limits::default() };
        let kv =
            |k: &str, s: &str| PKeyValue { key: k.into(), value: v(PValue::StringValue(s.into())), key_strindex: 0 };
        let err = attributes(vec![kv("a", "abc"), kv("big", "abcd")], &limits, "key").unwrap_err();
        assert_eq!((err.reason, err.detail.as_str()), (RejectReason::AttributeTooLong, "key \"big\""));
        let err = attributes(vec![kv("a", ""), kv("b", ""), kv("c", "")], &limits, "key").unwrap_err();
        assert_eq!(err.reason, RejectReason::TooManyAttributes);
        assert!(attributes(vec![kv("a", "abc")], &limits, "key").is_ok());
    }
}

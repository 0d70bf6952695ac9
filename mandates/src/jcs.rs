//! Canonical bytes: RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Every signed payload is the JCS serialisation of its JSON value, so a verifier in any
//! language checks the signature over the bytes it received and never re-serialises.
//! The work is done by the `serde_json_canonicalizer` crate; this module only names it.

use serde::Serialize;

/// Why a value could not be canonicalised.
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalise: {0}")]
pub struct JcsError(#[from] serde_json::Error);

/// The RFC 8785 canonical bytes of `value`.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, JcsError> {
    Ok(serde_json_canonicalizer::to_vec(value)?)
}

/// The RFC 8785 canonical text of `value`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, JcsError> {
    Ok(serde_json_canonicalizer::to_string(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    #[test]
    fn rfc8785_awkward_inputs() {
        // Key order by UTF-16 code units, minimal escapes, ES6 number forms.
        let v = json!({"b": 1, "a": [true, null, "\u{20ac}", "\n"], "\u{e9}": -0, "c": 1e21});
        assert_eq!(to_string(&v).unwrap(), "{\"a\":[true,null,\"\u{20ac}\",\"\\n\"],\"b\":1,\"c\":1e+21,\"\u{e9}\":0}");
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((".{0,6}", inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn stable_under_key_reordering(v in arb_json()) {
            fn reversed(v: &Value) -> Value {
                match v {
                    Value::Object(m) => {
                        let mut r = Map::new();
                        for (k, x) in m.iter().rev() { r.insert(k.clone(), reversed(x)); }
                        Value::Object(r)
                    }
                    Value::Array(a) => Value::Array(a.iter().map(reversed).collect()),
                    x => x.clone(),
                }
            }
            let a = to_vec(&v).unwrap();
            prop_assert_eq!(&a, &to_vec(&reversed(&v)).unwrap());
            // Canonical bytes are a fixed point.
            let back: Value = serde_json::from_slice(&a).unwrap();
            prop_assert_eq!(a, to_vec(&back).unwrap());
        }
    }
}

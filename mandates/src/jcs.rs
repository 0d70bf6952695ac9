//! Canonical bytes: RFC 8785 JSON Canonicalization Scheme (JCS).
//!
//! Every signed payload is the JCS serialisation of its JSON value, so a verifier in any
//! language checks the signature over the bytes it received and never re-serialises.
//!
//! The reference implementation is the `serde_json_canonicalizer` crate. Signing is the
//! hot path and that crate costs about as much as an Ed25519 signature, so values made
//! only of strings, booleans, nulls and integers within ±(2^53 − 1) (everything settle
//! signs) take a direct path: keys sorted by UTF-16 code units, strings escaped as
//! serde_json does (which is JCS's escaping), integers in decimal. Anything else (floats,
//! larger integers) goes to the crate. A property test holds the two to the same bytes.

use serde::Serialize;
use serde_json::Value;

/// Largest integer written directly (I-JSON's exact range).
const SAFE: u64 = (1 << 53) - 1;

/// Why a value could not be canonicalised.
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalise: {0}")]
pub struct JcsError(#[from] serde_json::Error);

/// The RFC 8785 canonical bytes of `value`.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, JcsError> {
    // Fastest: serde_json's compact output already is canonical when every object's
    // members come out sorted and every number is a safe integer (settle declares its
    // signed structs' fields in sorted order for this). Checked, never assumed.
    let compact = serde_json::to_vec(value)?;
    if already_canonical(&compact) {
        return Ok(compact);
    }
    // Otherwise the value as a JSON tree (taken from the value itself, not by parsing
    // the compact bytes again), written member by member in canonical order.
    let v = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(512);
    if direct(&v, &mut out)? { Ok(out) } else { Ok(serde_json_canonicalizer::to_vec(&v)?) }
}

/// The RFC 8785 canonical text of `value`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, JcsError> {
    let b = to_vec(value)?;
    // JCS output is UTF-8 by construction.
    Ok(String::from_utf8(b).unwrap_or_else(|e| unreachable!("{e}")))
}

/// True when `b`, compact JSON as serde_json writes it, is already in RFC 8785 form (see
/// below): lets a caller that assembles canonical bytes itself check them cheaply.
#[must_use]
pub fn is_canonical(b: &[u8]) -> bool {
    already_canonical(b)
}

/// True when compact JSON (as serde_json writes it) is already in RFC 8785 form: members
/// of every object in UTF-16 order, no escaped keys, numbers only integers within
/// ±(2^53 − 1). serde_json's string escaping is JCS's, so strings need no change.
fn already_canonical(b: &[u8]) -> bool {
    // Per open container: is it an object, and the last key seen in it.
    let mut stack: Vec<(bool, Option<&[u8]>)> = Vec::new();
    let mut i = 0;
    let mut expect_key = false;
    while i < b.len() {
        match b[i] {
            b'{' => {
                stack.push((true, None));
                expect_key = true;
                i += 1;
            }
            b'[' => {
                stack.push((false, None));
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
                i += 1;
            }
            b',' => {
                expect_key = stack.last().is_some_and(|(obj, _)| *obj);
                i += 1;
            }
            b':' => i += 1,
            b'"' => {
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                // Jump to the next quote or backslash (a signature's base64 is long).
                loop {
                    match memchr::memchr2(b'"', b'\\', &b[j.min(b.len())..]) {
                        None => return false,
                        Some(k) if b[j + k] == b'"' => {
                            j += k;
                            break;
                        }
                        Some(k) => {
                            escaped = true;
                            j += k + 2;
                        }
                    }
                }
                if expect_key {
                    if escaped {
                        return false;
                    }
                    let key = &b[start..j];
                    let Some(top) = stack.last_mut() else { return false };
                    if let Some(prev) = top.1 {
                        let ordered = if prev.is_ascii() && key.is_ascii() {
                            prev < key
                        } else {
                            match (std::str::from_utf8(prev), std::str::from_utf8(key)) {
                                (Ok(p), Ok(k)) => p.encode_utf16().lt(k.encode_utf16()),
                                _ => false,
                            }
                        };
                        if !ordered {
                            return false;
                        }
                    }
                    top.1 = Some(key);
                    expect_key = false;
                }
                i = j + 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                if i < b.len() && matches!(b[i], b'.' | b'e' | b'E') {
                    return false;
                }
                let digits = &b[start..i];
                let n = digits.strip_prefix(b"-").unwrap_or(digits);
                // 2^53 − 1 = 9007199254740991 has 16 digits.
                if n.len() > 16 || (n.len() == 16 && n > b"9007199254740991".as_slice()) {
                    return false;
                }
            }
            b't' | b'f' | b'n' => {
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
    stack.is_empty()
}

/// Writes `v` canonically if it needs no number formatting; false if it does.
fn direct(v: &Value, out: &mut Vec<u8>) -> Result<bool, JcsError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i.unsigned_abs() <= SAFE => out.extend_from_slice(i.to_string().as_bytes()),
            (None, Some(u)) if u <= SAFE => out.extend_from_slice(u.to_string().as_bytes()),
            _ => return Ok(false),
        },
        Value::String(s) => serde_json::to_writer(&mut *out, s)?,
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !direct(x, out)? {
                    return Ok(false);
                }
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            if entries.iter().all(|(k, _)| k.is_ascii()) {
                entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            } else {
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            }
            out.push(b'{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                if !direct(x, out)? {
                    return Ok(false);
                }
            }
            out.push(b'}');
        }
    }
    Ok(true)
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
            (-9_007_199_254_740_991i64..=9_007_199_254_740_991).prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            ".*".prop_map(Value::String),
            "[\\x00-\\x7f\\u{80}-\\u{10ffff}]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("(.{0,6}|[a-z]{1,3}|[\\u{e000}-\\u{10ffff}]{1,2})", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
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
            prop_assert_eq!(&a, &serde_json_canonicalizer::to_vec(&v).unwrap(), "direct path differs from the reference");
            prop_assert_eq!(&a, &to_vec(&reversed(&v)).unwrap());
            // Canonical bytes are a fixed point.
            let back: Value = serde_json::from_slice(&a).unwrap();
            prop_assert_eq!(a, to_vec(&back).unwrap());
        }
    }
}

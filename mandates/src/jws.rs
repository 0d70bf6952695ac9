//! Compact JWS (RFC 7515) with EdDSA (RFC 8037) over JCS payloads.
//!
//! The protected header is the JCS form of `{"alg":"EdDSA","kid":...,"typ":...}`; the
//! payload is the JCS form of the signed object. `typ` is the object's type marker: a
//! verifier states the type it expects, so a token of one type can never be accepted as
//! another. Verification uses `verify_strict` and accepts `alg` `EdDSA` or `Ed25519`
//! (RFC 9864's name).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};

use crate::keys::{Jwk, KeyRing, SigningKey};

/// Why a compact JWS did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not three base64url segments with a JSON header.
    #[error("malformed JWS: {0}")]
    Malformed(&'static str),
    /// `alg` other than EdDSA / Ed25519.
    #[error("unsupported JWS alg '{0}' (expected EdDSA)")]
    UnsupportedAlg(String),
    /// The header's `typ` is not the one expected.
    #[error("JWS typ is '{found}', expected '{expected}'")]
    WrongType {
        /// Expected marker.
        expected: String,
        /// Marker found.
        found: String,
    },
    /// No key with this `kid` in the key set.
    #[error("no key '{0}' in the key set")]
    UnknownKey(String),
    /// The signature does not verify under the key.
    #[error("signature does not verify under key '{0}'")]
    BadSignature(String),
}

/// The protected header. Any other member (`crit` included) is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// `EdDSA`.
    pub alg: String,
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// Type marker of the signed object.
    pub typ: String,
}

/// Signs `payload` (already canonical bytes) as a compact JWS of type `typ`.
#[must_use]
pub fn sign(typ: &str, payload: &[u8], key: &SigningKey) -> String {
    // JCS of {alg, kid, typ}: members already in canonical order, strings escaped as JCS
    // does (serde_json's string escaping is JCS's); a unit test holds it to `jcs::to_vec`.
    let q = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let header = format!(r#"{{"alg":"EdDSA","kid":{},"typ":{}}}"#, q(key.kid()), q(typ)).into_bytes();
    let mut out = String::with_capacity(payload.len() * 4 / 3 + 200);
    B64.encode_string(&header, &mut out);
    out.push('.');
    B64.encode_string(payload, &mut out);
    let sig = key.sign(out.as_bytes());
    out.push('.');
    B64.encode_string(sig, &mut out);
    out
}

/// A token split into its parts, not yet verified.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    /// Decoded header.
    pub header: Header,
    /// Decoded payload bytes.
    pub payload: Vec<u8>,
    /// `header.payload` as sent: the bytes signed.
    pub signing_input: &'a [u8],
    /// The signature.
    pub signature: Signature,
}

/// Splits and decodes a compact JWS, checking `alg` and `typ` but not the signature.
pub fn parse<'a>(token: &'a str, expected_typ: &str) -> Result<Parsed<'a>, JwsError> {
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Malformed("expected three dot-separated segments"));
    };
    let header_bytes = B64.decode(h).map_err(|_| JwsError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| JwsError::Malformed("header is not a JSON object with alg, kid, typ"))?;
    if header.alg != "EdDSA" && header.alg != "Ed25519" {
        return Err(JwsError::UnsupportedAlg(header.alg));
    }
    if header.typ != expected_typ {
        return Err(JwsError::WrongType { expected: expected_typ.to_owned(), found: header.typ });
    }
    let payload = B64.decode(p).map_err(|_| JwsError::Malformed("payload is not base64url"))?;
    let sig: [u8; 64] = B64
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(JwsError::Malformed("signature is not 64 base64url bytes"))?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(Parsed { header, payload, signing_input, signature: Signature::from_bytes(&sig) })
}

/// A verified token: its header, payload bytes and the key that verified it.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The header.
    pub header: Header,
    /// Payload bytes (JCS of the object).
    pub payload: Vec<u8>,
    /// The key that signed it.
    pub key: Jwk,
}

/// Verifies a compact JWS of type `expected_typ` against `ring` with `verify_strict`.
pub fn verify(token: &str, ring: &KeyRing, expected_typ: &str) -> Result<Verified, JwsError> {
    verify_with(token, ring, expected_typ, true)
}

/// As [`verify`]; with `check_signature` false the signature is taken as already
/// verified (by a batch check of the same bytes) and only the rest is checked.
pub fn verify_with(
    token: &str,
    ring: &KeyRing,
    expected_typ: &str,
    check_signature: bool,
) -> Result<Verified, JwsError> {
    let p = parse(token, expected_typ)?;
    if check_signature {
        let (_, key) = ring.get(&p.header.kid).ok_or_else(|| JwsError::UnknownKey(p.header.kid.clone()))?;
        key.verify_strict(p.signing_input, &p.signature).map_err(|_| JwsError::BadSignature(p.header.kid.clone()))?;
    }
    already_verified(p, ring)
}

/// A parsed token whose signature a batch check already verified, with its key from
/// `ring`.
pub fn already_verified(p: Parsed<'_>, ring: &KeyRing) -> Result<Verified, JwsError> {
    let (jwk, _) = ring.get(&p.header.kid).ok_or_else(|| JwsError::UnknownKey(p.header.kid.clone()))?;
    Ok(Verified { header: p.header, payload: p.payload, key: jwk.clone() })
}

/// Verifies many tokens of one type with Ed25519 batch verification (about twice as
/// fast as one by one). On failure, falls back to one-by-one to name the first bad token.
pub fn verify_batch(tokens: &[&str], ring: &KeyRing, expected_typ: &str) -> Result<Vec<Verified>, (usize, JwsError)> {
    let mut parsed = Vec::with_capacity(tokens.len());
    let mut keys = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let p = parse(t, expected_typ).map_err(|e| (i, e))?;
        let (_, k) = ring.get(&p.header.kid).ok_or_else(|| (i, JwsError::UnknownKey(p.header.kid.clone())))?;
        keys.push(*k);
        parsed.push(p);
    }
    let msgs: Vec<&[u8]> = parsed.iter().map(|p| p.signing_input).collect();
    let sigs: Vec<Signature> = parsed.iter().map(|p| p.signature).collect();
    if ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_err() {
        for (i, t) in tokens.iter().enumerate() {
            verify(t, ring, expected_typ).map_err(|e| (i, e))?;
        }
    }
    Ok(parsed
        .into_iter()
        .map(|p| {
            let jwk =
                ring.get(&p.header.kid).map(|(j, _)| j.clone()).unwrap_or_else(|| unreachable!("key looked up above"));
            Verified { header: p.header, payload: p.payload, key: jwk }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Jwks;
    use proptest::prelude::*;

    fn ring(k: &SigningKey) -> KeyRing {
        KeyRing::new(&Jwks { keys: vec![k.to_jwk(None, None)] }).unwrap()
    }

    #[test]
    fn header_is_canonical() {
        let k = SigningKey::from_seed(&[1; 32]);
        for typ in ["settle-payment-mandate+jws", "odd \"typ\"\n\u{1}é"] {
            let t = sign(typ, b"{}", &k);
            let h = B64.decode(t.split('.').next().unwrap()).unwrap();
            let want = Header { alg: "EdDSA".into(), kid: k.kid().into(), typ: typ.into() };
            assert_eq!(h, crate::jcs::to_vec(&want).unwrap());
        }
    }

    #[test]
    fn typ_is_enforced() {
        let k = SigningKey::from_seed(&[1; 32]);
        let t = sign("a+jws", b"{}", &k);
        assert!(verify(&t, &ring(&k), "a+jws").is_ok());
        assert!(matches!(verify(&t, &ring(&k), "b+jws"), Err(JwsError::WrongType { .. })));
    }

    #[test]
    fn unknown_key_and_garbage() {
        let k = SigningKey::from_seed(&[1; 32]);
        let other = SigningKey::from_seed(&[2; 32]);
        let t = sign("a", b"{}", &k);
        assert!(matches!(verify(&t, &ring(&other), "a"), Err(JwsError::UnknownKey(_))));
        assert!(matches!(verify("a.b", &ring(&k), "a"), Err(JwsError::Malformed(_))));
        assert!(matches!(verify("a.b.c.d", &ring(&k), "a"), Err(JwsError::Malformed(_))));
    }

    #[test]
    fn batch_names_the_bad_token() {
        let k = SigningKey::from_seed(&[3; 32]);
        let good: Vec<String> = (0..5).map(|i| sign("t", format!("{i}").as_bytes(), &k)).collect();
        let mut toks: Vec<&str> = good.iter().map(String::as_str).collect();
        assert_eq!(verify_batch(&toks, &ring(&k), "t").unwrap().len(), 5);
        let mut bad = good[3].clone().into_bytes();
        let n = bad.len();
        bad[n - 2] = if bad[n - 2] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        toks[3] = &bad;
        assert_eq!(verify_batch(&toks, &ring(&k), "t").unwrap_err().0, 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_single_byte_change_fails(payload in prop::collection::vec(any::<u8>(), 0..64), pos in any::<prop::sample::Index>(), b in any::<u8>()) {
            let k = SigningKey::from_seed(&[9; 32]);
            let r = ring(&k);
            let t = sign("x", &payload, &k);
            let v = verify(&t, &r, "x").unwrap();
            prop_assert_eq!(&v.payload, &payload);
            let mut bytes = t.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != b);
            bytes[i] = b;
            if let Ok(s) = String::from_utf8(bytes) {
                prop_assert!(verify(&s, &r, "x").is_err(), "changed byte {} accepted", i);
            }
        }
    }
}

//! Webhook signatures, per the Standard Webhooks specification, with two signatures in
//! the one `webhook-signature` header:
//!
//! - `v1,<base64 HMAC-SHA256>` under the subscriber's secret (`whsec_` + base64), what
//!   the stock Standard Webhooks receiver libraries verify;
//! - `v1a,<base64 Ed25519>` under the vendor's signing key, which anyone holding the
//!   vendor's JWKS can verify without a shared secret.
//!
//! Both sign the same bytes: `{webhook-id}.{webhook-timestamp}.{body}`. Receivers that
//! know one scheme ignore the other (the specification says to skip unknown versions).
//!
//! ```
//! use settle_mandates::{keys::{Jwks, KeyRing, SigningKey}, webhook};
//! let key = SigningKey::from_seed(&[42; 32]);
//! let secret = webhook::Secret::from_bytes(&[7; 32]);
//! let header = webhook::sign("evt_12", 1_700_000_000, br#"{"type":"mandate.issued"}"#, &secret, &key);
//! webhook::verify_v1("evt_12", 1_700_000_000, br#"{"type":"mandate.issued"}"#, &header, &secret).unwrap();
//! let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).unwrap();
//! let kid = webhook::verify_v1a("evt_12", 1_700_000_000, br#"{"type":"mandate.issued"}"#, &header, &ring).unwrap();
//! assert_eq!(kid, key.kid());
//! assert!(webhook::verify_v1("evt_12", 1_700_000_001, br#"{"type":"mandate.issued"}"#, &header, &secret).is_err());
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64STD;
use ed25519_dalek::Signature;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::keys::{KeyRing, SigningKey};

/// Prefix of a symmetric secret in its text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Prefix of an Ed25519 public key in the Standard Webhooks text form.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// How far a `webhook-timestamp` may be from the receiver's clock (the specification's
/// suggested tolerance), in seconds.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a webhook does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The secret is not `whsec_` + base64 of 24 to 64 bytes.
    #[error("webhook secret must be 'whsec_' followed by base64 of 24 to 64 bytes")]
    BadSecret,
    /// The header has no signature of this version.
    #[error("the webhook-signature header has no '{0}' signature")]
    Missing(&'static str),
    /// No signature of this version matches.
    #[error("no '{0}' signature matches the message")]
    Mismatch(&'static str),
    /// The timestamp is too far from now.
    #[error("webhook-timestamp {timestamp} is more than {TOLERANCE_SECONDS} s away from now ({now})")]
    Stale {
        /// The header's timestamp.
        timestamp: i64,
        /// The receiver's clock.
        now: i64,
    },
}

/// A subscriber's symmetric secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret made of these bytes (the caller draws them at random).
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Self {
        Self(b.to_vec())
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, WebhookError> {
        let b = B64STD.decode(s.strip_prefix(SECRET_PREFIX).ok_or(WebhookError::BadSecret)?);
        match b {
            Ok(b) if (24..=64).contains(&b.len()) => Ok(Self(b)),
            _ => Err(WebhookError::BadSecret),
        }
    }

    /// `whsec_<base64>`.
    #[must_use]
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64STD.encode(&self.0))
    }
}

/// The vendor's public key in the Standard Webhooks text form, `whpk_<base64>`.
#[must_use]
pub fn public_key_text(key: &SigningKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", B64STD.encode(key.verifying_key().as_bytes()))
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(id.len() + 24 + body.len());
    v.extend_from_slice(id.as_bytes());
    v.push(b'.');
    v.extend_from_slice(timestamp.to_string().as_bytes());
    v.push(b'.');
    v.extend_from_slice(body);
    v
}

fn hmac(secret: &Secret, content: &[u8]) -> Hmac<Sha256> {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(&secret.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(content);
    m
}

/// The `webhook-signature` header value: `v1,<hmac> v1a,<ed25519>`.
#[must_use]
pub fn sign(id: &str, timestamp: i64, body: &[u8], secret: &Secret, key: &SigningKey) -> String {
    let content = signed_content(id, timestamp, body);
    let mac = hmac(secret, &content).finalize().into_bytes();
    let sig = key.sign(&content);
    format!("v1,{} v1a,{}", B64STD.encode(mac), B64STD.encode(sig))
}

fn signatures<'a>(header: &'a str, version: &'static str) -> impl Iterator<Item = Vec<u8>> + 'a {
    header.split(' ').filter_map(move |s| {
        let (v, sig) = s.split_once(',')?;
        if v == version { B64STD.decode(sig).ok() } else { None }
    })
}

/// Checks the `v1` (HMAC) signature in `header`.
pub fn verify_v1(id: &str, timestamp: i64, body: &[u8], header: &str, secret: &Secret) -> Result<(), WebhookError> {
    let content = signed_content(id, timestamp, body);
    let mut any = false;
    for sig in signatures(header, "v1") {
        any = true;
        if hmac(secret, &content).verify_slice(&sig).is_ok() {
            return Ok(());
        }
    }
    Err(if any { WebhookError::Mismatch("v1") } else { WebhookError::Missing("v1") })
}

/// Checks the `v1a` (Ed25519) signature in `header` against the keys of `ring` that were
/// valid at `timestamp`; returns the id of the key that signed.
pub fn verify_v1a(id: &str, timestamp: i64, body: &[u8], header: &str, ring: &KeyRing) -> Result<String, WebhookError> {
    let content = signed_content(id, timestamp, body);
    let mut any = false;
    for sig in signatures(header, "v1a") {
        any = true;
        let Ok(sig) = Signature::from_slice(&sig) else { continue };
        for (jwk, vk) in ring.iter() {
            if jwk.valid_at(timestamp) && vk.verify_strict(&content, &sig).is_ok() {
                return Ok(jwk.kid.clone());
            }
        }
    }
    Err(if any { WebhookError::Mismatch("v1a") } else { WebhookError::Missing("v1a") })
}

/// Refuses a timestamp more than [`TOLERANCE_SECONDS`] from `now` (replay protection).
pub fn check_timestamp(timestamp: i64, now: i64) -> Result<(), WebhookError> {
    if timestamp.abs_diff(now) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(WebhookError::Stale { timestamp, now });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Jwks;

    fn fixture() -> (SigningKey, Secret, KeyRing) {
        let key = SigningKey::from_seed(&[3; 32]);
        let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(Some(100), Some(2_000_000_000))] }).unwrap();
        (key, Secret::from_bytes(&[9; 32]), ring)
    }

    #[test]
    fn both_signatures_verify_and_bind_id_time_and_body() {
        let (key, secret, ring) = fixture();
        let h = sign("evt_1", 1_000, b"{}", &secret, &key);
        verify_v1("evt_1", 1_000, b"{}", &h, &secret).unwrap();
        assert_eq!(verify_v1a("evt_1", 1_000, b"{}", &h, &ring).unwrap(), key.kid());
        for (id, ts, body) in [("evt_2", 1_000, &b"{}"[..]), ("evt_1", 1_001, b"{}"), ("evt_1", 1_000, b"{ }")] {
            assert_eq!(verify_v1(id, ts, body, &h, &secret), Err(WebhookError::Mismatch("v1")));
            assert_eq!(verify_v1a(id, ts, body, &h, &ring), Err(WebhookError::Mismatch("v1a")));
        }
        let other = Secret::from_bytes(&[8; 32]);
        assert_eq!(verify_v1("evt_1", 1_000, b"{}", &h, &other), Err(WebhookError::Mismatch("v1")));
    }

    #[test]
    fn a_key_outside_its_validity_period_does_not_verify() {
        let (key, secret, ring) = fixture();
        let h = sign("evt_1", 50, b"{}", &secret, &key);
        assert_eq!(verify_v1a("evt_1", 50, b"{}", &h, &ring), Err(WebhookError::Mismatch("v1a")));
    }

    #[test]
    fn missing_versions_and_malformed_entries() {
        let (key, secret, ring) = fixture();
        let h = sign("evt_1", 1_000, b"{}", &secret, &key);
        let (v1, v1a) = h.split_once(' ').unwrap();
        assert_eq!(verify_v1a("evt_1", 1_000, b"{}", v1, &ring), Err(WebhookError::Missing("v1a")));
        assert_eq!(verify_v1("evt_1", 1_000, b"{}", v1a, &secret), Err(WebhookError::Missing("v1")));
        verify_v1("evt_1", 1_000, b"{}", &format!("junk v2,abc {v1}"), &secret).unwrap();
    }

    #[test]
    fn secret_text_round_trip_and_refusals() {
        let s = Secret::from_bytes(&[1; 32]);
        assert_eq!(Secret::parse(&s.to_text()).unwrap(), s);
        assert_eq!(Secret::parse("whsec_AAAA"), Err(WebhookError::BadSecret));
        assert_eq!(Secret::parse(&s.to_text()[6..]), Err(WebhookError::BadSecret));
        assert_eq!(Secret::parse("whsec_!!!"), Err(WebhookError::BadSecret));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_refused() {
        check_timestamp(1_000, 1_300).unwrap();
        check_timestamp(1_300, 1_000).unwrap();
        assert_eq!(check_timestamp(1_000, 1_301), Err(WebhookError::Stale { timestamp: 1_000, now: 1_301 }));
    }
}

//! Ed25519 keys, RFC 7638 key ids, and JWKS with validity periods.
//!
//! Keys are made from 32 seed bytes the caller supplies (this crate has no randomness).
//! A key's id (`kid`) is its RFC 7638 JWK thumbprint. A published key carries the period
//! in which it signed (`valid_from`, `valid_until`, Unix seconds): a retired key still
//! verifies what it signed while it was valid, and nothing dated outside that period.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a key or key set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The JWK is not an Ed25519 OKP key.
    #[error("unsupported key type {kty}/{crv} (expected OKP/Ed25519)")]
    Unsupported {
        /// kty member.
        kty: String,
        /// crv member.
        crv: String,
    },
    /// `x` is not a valid Ed25519 public key.
    #[error("invalid Ed25519 public key in JWK {0}")]
    InvalidPublicKey(String),
    /// Two keys of the set share a `kid`.
    #[error("duplicate kid {0} in the key set")]
    DuplicateKid(String),
    /// `kid` does not match the RFC 7638 thumbprint of the key.
    #[error("JWK kid {found} does not match its RFC 7638 thumbprint {expected}")]
    KidMismatch {
        /// The thumbprint.
        expected: String,
        /// The kid given.
        found: String,
    },
}

/// A private Ed25519 key with its RFC 7638 key id.
#[derive(Clone)]
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.kid)
    }
}

impl SigningKey {
    /// The key whose RFC 8032 seed is `seed`.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let inner = ed25519_dalek::SigningKey::from_bytes(seed);
        let kid = thumbprint(&inner.verifying_key());
        Self { inner, kid }
    }

    /// The 32-byte seed (keep it secret).
    #[must_use]
    pub fn seed(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }

    /// RFC 7638 thumbprint of the public key.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half.
    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        self.inner.verifying_key()
    }

    /// The public key as a JWK with the given validity period.
    #[must_use]
    pub fn to_jwk(&self, valid_from: Option<i64>, valid_until: Option<i64>) -> Jwk {
        Jwk::from_verifying_key(&self.verifying_key(), valid_from, valid_until)
    }

    /// Ed25519 signature of `msg` (deterministic, RFC 8032).
    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.inner.sign(msg).to_bytes()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: base64url(SHA-256 of
/// `{"crv":"Ed25519","kty":"OKP","x":"..."}`).
#[must_use]
pub fn thumbprint(key: &VerifyingKey) -> String {
    let x = B64.encode(key.as_bytes());
    let canon = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64.encode(Sha256::digest(canon.as_bytes()))
}

/// A public key as a JSON Web Key (RFC 8037 OKP), with its validity period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Jwk {
    /// Always `OKP`.
    #[cfg_attr(feature = "schemars", schemars(extend("const" = "OKP")))]
    pub kty: String,
    /// Always `Ed25519`.
    #[cfg_attr(feature = "schemars", schemars(extend("const" = "Ed25519")))]
    pub crv: String,
    /// base64url public key bytes.
    #[cfg_attr(feature = "schemars", schemars(regex(pattern = r"^[A-Za-z0-9_-]{43}$")))]
    pub x: String,
    /// RFC 7638 thumbprint.
    #[cfg_attr(feature = "schemars", schemars(regex(pattern = r"^[A-Za-z0-9_-]{43}$")))]
    pub kid: String,
    /// `EdDSA`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// `sig`.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// First second (Unix) this key may have signed at; none = since ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<i64>,
    /// First second (Unix) this key no longer signs at; none = still current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<i64>,
}

impl Jwk {
    /// A JWK for `key`.
    #[must_use]
    pub fn from_verifying_key(key: &VerifyingKey, valid_from: Option<i64>, valid_until: Option<i64>) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: B64.encode(key.as_bytes()),
            kid: thumbprint(key),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
            valid_from,
            valid_until,
        }
    }

    /// The Ed25519 public key, checking type and thumbprint.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(KeyError::Unsupported { kty: self.kty.clone(), crv: self.crv.clone() });
        }
        let bytes: [u8; 32] = B64
            .decode(&self.x)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KeyError::InvalidPublicKey(self.kid.clone()))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPublicKey(self.kid.clone()))?;
        // A small-order key lets anyone forge signatures that batch checks accept.
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey(self.kid.clone()));
        }
        let tp = thumbprint(&key);
        if tp != self.kid {
            return Err(KeyError::KidMismatch { expected: tp, found: self.kid.clone() });
        }
        Ok(key)
    }

    /// Whether the key was valid for signing at Unix second `t`.
    #[must_use]
    pub fn valid_at(&self, t: i64) -> bool {
        self.valid_from.is_none_or(|f| t >= f) && self.valid_until.is_none_or(|u| t < u)
    }
}

/// A JSON Web Key Set, as served at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Jwks {
    /// The keys, current and retired.
    pub keys: Vec<Jwk>,
}

/// A JWKS with every key decoded and checked once, ready to verify many signatures.
#[derive(Debug, Clone)]
pub struct KeyRing {
    keys: Vec<(Jwk, VerifyingKey)>,
}

impl KeyRing {
    /// Decodes and checks every key of `jwks`.
    pub fn new(jwks: &Jwks) -> Result<Self, KeyError> {
        let mut seen = std::collections::BTreeSet::new();
        if let Some(k) = jwks.keys.iter().find(|k| !seen.insert(k.kid.as_str())) {
            return Err(KeyError::DuplicateKid(k.kid.clone()));
        }
        let keys = jwks.keys.iter().map(|k| Ok((k.clone(), k.verifying_key()?))).collect::<Result<_, KeyError>>()?;
        Ok(Self { keys })
    }

    /// The key with id `kid`.
    #[must_use]
    pub fn get(&self, kid: &str) -> Option<(&Jwk, &VerifyingKey)> {
        self.keys.iter().find(|(j, _)| j.kid == kid).map(|(j, k)| (j, k))
    }

    /// Every key.
    pub fn iter(&self) -> impl Iterator<Item = (&Jwk, &VerifyingKey)> {
        self.keys.iter().map(|(j, k)| (j, k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc8037_appendix_a3() {
        // RFC 8037 A.3: the thumbprint of the A.2 public key.
        let x = B64.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(thumbprint(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn jwk_round_trip_and_checks() {
        let k = SigningKey::from_seed(&[7; 32]);
        let jwk = k.to_jwk(Some(100), Some(200));
        assert_eq!(jwk.verifying_key().unwrap(), k.verifying_key());
        assert!(jwk.valid_at(100) && jwk.valid_at(199));
        assert!(!jwk.valid_at(99) && !jwk.valid_at(200));
        let mut bad = jwk.clone();
        bad.kid = "other".into();
        assert!(matches!(bad.verifying_key(), Err(KeyError::KidMismatch { .. })));
        let mut weak = jwk.clone();
        weak.x = B64.encode([1u8; 1].iter().chain([0u8; 31].iter()).copied().collect::<Vec<u8>>()); // the identity point
        weak.kid =
            B64.encode(Sha256::digest(format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, weak.x).as_bytes()));
        assert!(matches!(weak.verifying_key(), Err(KeyError::InvalidPublicKey(_))), "a small-order key is refused");
        let mut bad = jwk;
        bad.crv = "P-256".into();
        assert!(matches!(bad.verifying_key(), Err(KeyError::Unsupported { .. })));
    }
}

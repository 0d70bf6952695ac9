//! # settle-mandates
//!
//! The pure formats of settle, and everything a partner needs to check what it is paid:
//!
//! - [`money`]: exact amounts in ISO 4217 minor units, named rounding.
//! - [`keys`]: Ed25519 keys, RFC 7638 key ids, JWKS with validity periods.
//! - [`jcs`]: RFC 8785 canonical JSON, the bytes every signature covers.
//! - [`jws`]: compact JWS with EdDSA, typed, verified with `verify_strict`.
//! - [`types`]: AP2 v0.2-shaped open mandates, per-hop payment and clawback mandates,
//!   receipt payloads, derived salts.
//! - [`merkle`]: RFC 9162 hashing, proofs over any node store, proof verification.
//! - [`checkpoint`]: C2SP signed-note checkpoints.
//! - [`receipt`]: the receipt document and [`receipt::verify_receipt`], the one call a
//!   partner makes.
//! - [`webhook`]: Standard Webhooks signatures (HMAC `v1` and Ed25519 `v1a`).
//!
//! This crate does no I/O and reads no clock and no randomness: time, ids, secrets and
//! keys are arguments. Same inputs, same bytes.
//!
//! ```
//! use settle_mandates::{keys::{Jwks, KeyRing, SigningKey}, jws};
//! let key = SigningKey::from_seed(&[42; 32]);
//! let token = jws::sign("example+jws", br#"{"a":1}"#, &key);
//! let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).unwrap();
//! assert_eq!(jws::verify(&token, &ring, "example+jws").unwrap().payload, br#"{"a":1}"#);
//! ```

pub mod checkpoint;
pub mod jcs;
pub mod jws;
pub mod keys;
pub mod merkle;
pub mod money;
pub mod receipt;
pub mod types;
pub mod webhook;

//! Signed checkpoints in the C2SP `tlog-checkpoint` form, wrapped in a C2SP `signed-note`.
//!
//! ```text
//! settle.example/log          <- origin
//! 1024                        <- tree size
//! 2r2wGOc...Xc=               <- base64 (standard) root hash
//! time 1767225600             <- extension line: the log time it was signed at (Unix s)
//!                             <- blank line ends the note body
//! — settle.example/log Ab3dXyz...   <- "— name base64(key hash[4] ‖ signature[64])"
//! ```
//!
//! The Ed25519 key hash is the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public
//! key), as the signed-note spec defines. The signature covers the body (up to and
//! including the newline before the blank line). The `time` line lets a verifier check
//! the signing key was valid then, so checkpoints stay verifiable after a key rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64STD;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::keys::{KeyRing, SigningKey};
use crate::merkle::{self, Hash, ProofError};

/// Longest note accepted (a checkpoint is well under 1 KiB).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not a signed note with origin, size, root and time lines.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature line from a key of the key set (by name and key hash).
    #[error("no signature by a known key for origin '{0}'")]
    NoKnownSignature(String),
    /// A matching key's signature did not verify.
    #[error("checkpoint signature by key '{0}' does not verify")]
    BadSignature(String),
    /// The key was not valid at the checkpoint's time.
    #[error("key '{kid}' was not valid at checkpoint time {time}")]
    KeyNotValid {
        /// Key id.
        kid: String,
        /// Checkpoint time.
        time: i64,
    },
    /// The origin is not the one expected.
    #[error("checkpoint origin is '{found}', expected '{expected}'")]
    WrongOrigin {
        /// Expected.
        expected: String,
        /// Found.
        found: String,
    },
}

/// Why one checkpoint does not show the log of another only grew.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsistencyError {
    /// The two are checkpoints of different logs.
    #[error("checkpoints of different logs ('{0}' and '{1}')")]
    OtherLog(String, String),
    /// Same size, different roots: two histories signed.
    #[error("two checkpoints of {size} records with different roots: the log was forked")]
    Fork {
        /// The size both claim.
        size: u64,
    },
    /// Different sizes and no consistency proof between them.
    #[error("no consistency proof from {from} to {to} records")]
    NoProof {
        /// Smaller size.
        from: u64,
        /// Larger size.
        to: u64,
    },
    /// The consistency proof between them does not verify.
    #[error("the consistency proof from {from} to {to} records does not verify ({why}): the log was rewritten")]
    Proof {
        /// Smaller size.
        from: u64,
        /// Larger size.
        to: u64,
        /// What failed.
        why: ProofError,
    },
}

/// A signature line of a note: key name, key hash, Ed25519 signature.
pub type NoteSignature = (String, [u8; 4], [u8; 64]);

/// The body of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log identity, e.g. `settle.example/log`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of the first `size` leaves.
    pub root: Hash,
    /// Log time at signing, Unix seconds.
    pub time: i64,
}

/// The signed-note key hash of an Ed25519 key under `name`.
#[must_use]
pub fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Checkpoint {
    /// The note body: `origin\nsize\nbase64(root)\ntime T\n`.
    #[must_use]
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\ntime {}\n", self.origin, self.size, B64STD.encode(self.root), self.time)
    }

    /// The signed note text, signed by `key` under the name `origin`.
    #[must_use]
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(68);
        blob.extend_from_slice(&key_hash(&self.origin, &key.verifying_key()));
        blob.extend_from_slice(&sig);
        format!("{body}\n\u{2014} {} {}\n", self.origin, B64STD.encode(blob))
    }

    /// Parses a signed note without checking signatures.
    pub fn parse(note: &str) -> Result<(Self, Vec<NoteSignature>), CheckpointError> {
        use CheckpointError::Malformed;
        if note.len() > MAX_NOTE_BYTES {
            return Err(Malformed("note too long"));
        }
        let (body, sigs) = note.split_once("\n\n").ok_or(Malformed("no blank line before signatures"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|s| !s.is_empty()).ok_or(Malformed("no origin"))?;
        let size_s = lines.next().ok_or(Malformed("no size"))?;
        if size_s.is_empty()
            || !size_s.bytes().all(|b| b.is_ascii_digit())
            || (size_s.len() > 1 && size_s.starts_with('0'))
        {
            return Err(Malformed("size is not a decimal number"));
        }
        let size: u64 = size_s.parse().map_err(|_| Malformed("size out of range"))?;
        let root: Hash = B64STD
            .decode(lines.next().ok_or(Malformed("no root"))?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(Malformed("root is not 32 base64 bytes"))?;
        let time_s = lines.next().and_then(|l| l.strip_prefix("time ")).ok_or(Malformed("no time line"))?;
        let time: i64 = time_s.parse().map_err(|_| Malformed("time is not a number"))?;
        if lines.next().is_some() {
            return Err(Malformed("unexpected extension line"));
        }
        let mut out = Vec::new();
        let sigs = sigs.strip_suffix('\n').ok_or(Malformed("note does not end with a newline"))?;
        for line in sigs.split('\n') {
            let rest = line.strip_prefix("\u{2014} ").ok_or(Malformed("signature line must start with an em dash"))?;
            let (name, b64) = rest.split_once(' ').ok_or(Malformed("signature line needs a name and a signature"))?;
            let blob = B64STD.decode(b64).map_err(|_| Malformed("signature is not base64"))?;
            if blob.len() != 68 {
                continue; // Not an Ed25519 signature: ignored, as the spec says of unknown keys.
            }
            let mut kh = [0u8; 4];
            kh.copy_from_slice(&blob[..4]);
            let mut sig = [0u8; 64];
            sig.copy_from_slice(&blob[4..]);
            out.push((name.to_owned(), kh, sig));
        }
        let cp = Self { origin: origin.to_owned(), size, root, time };
        if cp.body() != format!("{body}\n") {
            return Err(Malformed("body is not in canonical form"));
        }
        Ok((cp, out))
    }

    /// Checks that this checkpoint and `other` (both verified) are of one log that only
    /// grew between them: the same origin, and the same root at the same size; at
    /// different sizes `proof`, the RFC 9162 consistency proof from the smaller size to
    /// the larger (as `GET /v1/checkpoints/consistency` serves it), must verify. Either
    /// may be the older.
    pub fn consistent_with(&self, other: &Self, proof: Option<&[Hash]>) -> Result<(), ConsistencyError> {
        if self.origin != other.origin {
            return Err(ConsistencyError::OtherLog(self.origin.clone(), other.origin.clone()));
        }
        let (old, new) = if self.size <= other.size { (self, other) } else { (other, self) };
        if old.size == new.size {
            return if old.root == new.root { Ok(()) } else { Err(ConsistencyError::Fork { size: old.size }) };
        }
        let (from, to) = (old.size, new.size);
        let proof = proof.ok_or(ConsistencyError::NoProof { from, to })?;
        merkle::verify_consistency(from, to, &old.root, &new.root, proof).map_err(|why| ConsistencyError::Proof {
            from,
            to,
            why,
        })
    }

    /// Parses and verifies a signed note: at least one signature by a key of `ring`
    /// named `origin`, and that key valid at the checkpoint's time. Returns the
    /// checkpoint and the key id that verified it.
    pub fn verify(note: &str, ring: &KeyRing, origin: Option<&str>) -> Result<(Self, String), CheckpointError> {
        Self::verify_with(note, ring, origin, true)
    }

    /// The body bytes, signature and key that sign this note for `ring`, if any: what a
    /// batch check needs.
    pub fn signed_by<'r>(note: &str, ring: &'r KeyRing) -> Option<(String, Signature, &'r VerifyingKey)> {
        let (cp, sigs) = Self::parse(note).ok()?;
        sigs.iter().filter(|(n, _, _)| n == &cp.origin).find_map(|(n, kh, sig)| {
            ring.iter().find(|(_, k)| &key_hash(n, k) == kh).map(|(_, k)| (cp.body(), Signature::from_bytes(sig), k))
        })
    }

    /// As [`Checkpoint::verify`]; `check_signature` false when a batch check covered it.
    pub fn verify_with(
        note: &str,
        ring: &KeyRing,
        origin: Option<&str>,
        check_signature: bool,
    ) -> Result<(Self, String), CheckpointError> {
        let (cp, sigs) = Self::parse(note)?;
        if let Some(o) = origin
            && o != cp.origin
        {
            return Err(CheckpointError::WrongOrigin { expected: o.to_owned(), found: cp.origin });
        }
        let body = cp.body();
        for (name, kh, sig) in &sigs {
            if name != &cp.origin {
                continue;
            }
            for (jwk, key) in ring.iter() {
                if &key_hash(name, key) != kh {
                    continue;
                }
                if check_signature {
                    key.verify_strict(body.as_bytes(), &Signature::from_bytes(sig))
                        .map_err(|_| CheckpointError::BadSignature(jwk.kid.clone()))?;
                }
                if !jwk.valid_at(cp.time) {
                    return Err(CheckpointError::KeyNotValid { kid: jwk.kid.clone(), time: cp.time });
                }
                return Ok((cp, jwk.kid.clone()));
            }
        }
        Err(CheckpointError::NoKnownSignature(cp.origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Jwks;
    use proptest::prelude::*;

    fn cp() -> Checkpoint {
        Checkpoint { origin: "settle.test/log".into(), size: 42, root: [5; 32], time: 1_767_225_600 }
    }

    #[test]
    fn sign_verify_and_rotation() {
        let old = SigningKey::from_seed(&[1; 32]);
        let new = SigningKey::from_seed(&[2; 32]);
        let ring = KeyRing::new(&Jwks {
            keys: vec![old.to_jwk(None, Some(1_767_225_601)), new.to_jwk(Some(1_767_225_601), None)],
        })
        .unwrap();
        let note = cp().sign(&old);
        let (c, kid) = Checkpoint::verify(&note, &ring, Some("settle.test/log")).unwrap();
        assert_eq!((c, kid.as_str()), (cp(), old.kid()));
        // The new key signing a checkpoint dated before its validity is refused.
        let early = cp().sign(&new);
        assert!(matches!(Checkpoint::verify(&early, &ring, None), Err(CheckpointError::KeyNotValid { .. })));
        let later = Checkpoint { time: 1_767_300_000, ..cp() };
        assert!(Checkpoint::verify(&later.sign(&new), &ring, None).is_ok());
        assert!(matches!(Checkpoint::verify(&later.sign(&old), &ring, None), Err(CheckpointError::KeyNotValid { .. })));
        assert!(matches!(Checkpoint::verify(&note, &ring, Some("other")), Err(CheckpointError::WrongOrigin { .. })));
    }

    /// Two checkpoints of one log: equal at one size, or joined by a consistency proof;
    /// a fork, a rewrite, another log or a missing proof are refused.
    #[test]
    fn consistency_between_two_checkpoints() {
        let leaves: Vec<Hash> = (0..20u64).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        let at = |n: usize| Checkpoint { size: n as u64, root: merkle::root_of(&leaves[..n]), ..cp() };
        let (old, new) = (at(7), at(20));
        let proof = merkle::consistency_proof(leaves.as_slice(), 7, 20).unwrap().unwrap();
        old.consistent_with(&new, Some(&proof)).unwrap();
        new.consistent_with(&old, Some(&proof)).unwrap();
        old.consistent_with(&old.clone(), None).unwrap();
        at(0).consistent_with(&new, Some(&[])).unwrap();
        assert_eq!(old.consistent_with(&new, None), Err(ConsistencyError::NoProof { from: 7, to: 20 }));
        let forked = Checkpoint { root: [9; 32], ..old.clone() };
        assert_eq!(old.consistent_with(&forked, None), Err(ConsistencyError::Fork { size: 7 }));
        assert!(matches!(forked.consistent_with(&new, Some(&proof)), Err(ConsistencyError::Proof { .. })));
        let other = Checkpoint { origin: "other/log".into(), ..new.clone() };
        assert!(matches!(old.consistent_with(&other, Some(&proof)), Err(ConsistencyError::OtherLog(..))));
        let mut bad = proof.clone();
        bad[0][0] ^= 1;
        assert!(matches!(old.consistent_with(&new, Some(&bad)), Err(ConsistencyError::Proof { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn any_single_byte_change_fails(pos in any::<prop::sample::Index>(), b in 0u8..128) {
            let k = SigningKey::from_seed(&[3; 32]);
            let ring = KeyRing::new(&Jwks { keys: vec![k.to_jwk(None, None)] }).unwrap();
            let note = cp().sign(&k);
            let mut bytes = note.clone().into_bytes();
            let i = pos.index(bytes.len());
            prop_assume!(bytes[i] != b && bytes[i].is_ascii());
            bytes[i] = b;
            if let Ok(s) = String::from_utf8(bytes) {
                prop_assert!(Checkpoint::verify(&s, &ring, None).is_err(), "byte {} changed, still verifies", i);
            }
        }
    }
}

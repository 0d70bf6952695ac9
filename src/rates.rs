//! The raw Ed25519 rates of this machine, measured in the same run as a figure they are
//! compared with (`settle load`, `settle demo`): the ratio is what carries over between
//! machines.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Mandate-sized message.
const MSG_BYTES: usize = 600;
/// Signatures per batch check, as the audit batches them.
const BATCH: usize = 64;

/// `n` events over `elapsed`, per second.
pub fn per_sec(n: u64, elapsed: Duration) -> u64 {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    n.saturating_mul(1_000_000) / us
}

fn message(i: u64) -> [u8; MSG_BYTES] {
    let mut m = [0x5au8; MSG_BYTES];
    m[..8].copy_from_slice(&i.to_le_bytes());
    m
}

/// Raw Ed25519 signatures per second on one core, over mandate-sized messages.
pub fn raw_signing_rate() -> u64 {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let n = 2_000u64;
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(key.sign(&message(i)));
    }
    per_sec(n, t.elapsed())
}

/// Raw Ed25519 batch verification (batches of 64), signatures per second on one core.
pub fn raw_batch_verify_rate() -> u64 {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let msgs: Vec<[u8; MSG_BYTES]> = (0..BATCH as u64).map(message).collect();
    let sigs: Vec<Signature> = msgs.iter().map(|m| key.sign(m)).collect();
    let keys: Vec<VerifyingKey> = vec![key.verifying_key(); BATCH];
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let rounds = 32u64;
    let t = Instant::now();
    for _ in 0..rounds {
        let ok = ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok();
        assert!(ok, "the calibration batch verifies");
    }
    per_sec(rounds * BATCH as u64, t.elapsed())
}

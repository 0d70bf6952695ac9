//! Signing and verification costs of the formats a partner checks.
//! Targets (issue: foundations): mandate signing within 80% of raw Ed25519 signing of the
//! same bytes; receipt verification (30-hash proof) ≥ 15,000/s per core.

#[path = "fixtures.rs"]
mod fixtures;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::Signer;
use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use settle_mandates::merkle::{self, Hash, NodeSource};
use settle_mandates::receipt::{ReceiptDocument, verify_receipt};
use settle_mandates::types::{Mandate, ReceiptKind, ReceiptPayload, Signed, Status, token_reference};
use sha2::{Digest, Sha256};

// The allocator the `settle` binary runs with, so the figures are the shipped ones.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A virtual tree of 2^30 leaves whose nodes are made up on demand: enough for a real
/// 30-hash inclusion proof without storing a billion leaves.
struct Virtual {
    leaf: Hash,
    index: u64,
}

impl NodeSource for Virtual {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        if level == 0 && index == self.index {
            return Ok(self.leaf);
        }
        let mut h = Sha256::new();
        h.update(level.to_be_bytes());
        h.update(index.to_be_bytes());
        Ok(h.finalize().into())
    }
}

/// A virtual tree of 2^30 leaves with a run of real leaves from `base`: the nodes above
/// them are computed, every other node is made up, so all the real leaves' proofs lead to
/// one root.
struct VirtualRun {
    base: u64,
    leaves: Vec<Hash>,
}

impl NodeSource for VirtualRun {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        let (first, last) = (index << level, ((index + 1) << level) - 1);
        let end = self.base + self.leaves.len() as u64;
        if last < self.base || first >= end {
            return Virtual { leaf: [0; 32], index: u64::MAX }.node(level, index);
        }
        if level == 0 {
            return Ok(self.leaves[usize::try_from(index - self.base).expect("a run fits in memory")]);
        }
        Ok(merkle::node_hash(&self.node(level - 1, 2 * index)?, &self.node(level - 1, 2 * index + 1)?))
    }
}

/// The root a proof implies (RFC 9162 §2.1.3.2 fold).
fn fold(mut fnode: u64, mut snode: u64, leaf: Hash, proof: &[Hash]) -> Hash {
    let mut r = leaf;
    for p in proof {
        if fnode & 1 == 1 || fnode == snode {
            r = merkle::node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = merkle::node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    r
}

fn bench(c: &mut Criterion) {
    let key = SigningKey::from_seed(&[42; 32]);
    let dalek = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).unwrap();
    let m = fixtures::mandate(7);
    let payload = settle_mandates::jcs::to_vec(&m).unwrap();
    let mut g = c.benchmark_group("mandates");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_ed25519_sign_same_bytes", |b| b.iter(|| dalek.sign(std::hint::black_box(&payload))));
    g.bench_function("canonicalise_mandate_jcs", |b| {
        b.iter(|| settle_mandates::jcs::to_vec(std::hint::black_box(&m)).unwrap())
    });
    g.bench_function("serde_json_to_vec_mandate", |b| b.iter(|| serde_json::to_vec(std::hint::black_box(&m)).unwrap()));
    g.bench_function("canonicalise_and_sign_mandate", |b| b.iter(|| std::hint::black_box(&m).sign(&key)));
    let token = m.sign(&key);
    let sig = dalek.sign(&payload);
    let vk = dalek.verifying_key();
    g.bench_function("raw_ed25519_verify_strict", |b| {
        b.iter(|| vk.verify_strict(std::hint::black_box(&payload), &sig).unwrap())
    });
    g.bench_function("verify_mandate", |b| b.iter(|| Mandate::verify(std::hint::black_box(&token), &ring).unwrap()));

    // A receipt whose leaf sits in a tree of 2^30 leaves: 30 proof hashes.
    let leaf_bytes = format!(r#"{{"data":{{"mandate":"{token}"}},"type":"mandate_issued","v":1}}"#).into_bytes();
    let size = 1u64 << 30;
    let index = 123_456_789;
    let src = Virtual { leaf: merkle::leaf_hash(&leaf_bytes), index };
    let proof = merkle::inclusion_proof(&src, index, size).unwrap().unwrap();
    assert_eq!(proof.len(), 30);
    let root = fold(index, size - 1, src.leaf, &proof);
    let cp = Checkpoint { origin: "settle.bench/log".into(), size, root, time: 1_767_225_600 };
    let payload = ReceiptPayload {
        vct: "settle.receipt.1".into(),
        status: Status::Success,
        iss: "vendor.bench".into(),
        iat: cp.time,
        reference: token_reference(&token),
        payment_id: m.transaction_id.clone(),
        psp_confirmation_id: None,
        network_confirmation_id: None,
        error: None,
        error_description: None,
        kind: ReceiptKind::MandateRecorded,
        rail: None,
        leaf_index: index,
        tree_size: size,
        root: hex::encode(root),
    };
    let doc = ReceiptDocument {
        receipt: payload.sign(&key),
        mandate: token.clone(),
        leaf: B64.encode(&leaf_bytes),
        inclusion: proof.iter().map(|h| B64STD.encode(h)).collect(),
        checkpoint: cp.sign(&key),
    };
    verify_receipt(&doc, &ring, None).unwrap();
    g.bench_function("verify_receipt_30_hash_proof", |b| {
        b.iter(|| verify_receipt(std::hint::black_box(&doc), &ring, None).unwrap())
    });
    let mut cached = settle_mandates::receipt::ReceiptVerifier::new(&ring, None);
    g.bench_function("verify_receipt_30_hash_proof_checkpoint_known", |b| {
        b.iter(|| cached.verify(std::hint::black_box(&doc)).unwrap())
    });

    // A partner's file of receipts against one checkpoint: 64 distinct receipts (distinct
    // mandates, leaves and 30-hash proofs), verified one by one and as a run.
    let base = 1u64 << 29;
    let tokens: Vec<String> = (0..64).map(|i| fixtures::mandate(1_000 + i).sign(&key)).collect();
    let leaves: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| format!(r#"{{"data":{{"mandate":"{t}"}},"type":"mandate_issued","v":1}}"#).into_bytes())
        .collect();
    let run = VirtualRun { base, leaves: leaves.iter().map(|l| merkle::leaf_hash(l)).collect() };
    let proofs: Vec<Vec<Hash>> =
        (0..64).map(|i| merkle::inclusion_proof(&run, base + i, size).unwrap().unwrap()).collect();
    let root = fold(base, size - 1, run.leaves[0], &proofs[0]);
    let cp = Checkpoint { origin: "settle.bench/log".into(), size, root, time: 1_767_225_600 };
    let note = cp.sign(&key);
    let docs: Vec<ReceiptDocument> = (0..64)
        .map(|i| {
            let m = Mandate::verify(&tokens[i], &ring).unwrap().0;
            let payload = ReceiptPayload {
                reference: token_reference(&tokens[i]),
                payment_id: m.transaction_id,
                leaf_index: base + i as u64,
                root: hex::encode(root),
                ..payload.clone()
            };
            ReceiptDocument {
                receipt: payload.sign(&key),
                mandate: tokens[i].clone(),
                leaf: B64.encode(&leaves[i]),
                inclusion: proofs[i].iter().map(|h| B64STD.encode(h)).collect(),
                checkpoint: note.clone(),
            }
        })
        .collect();
    g.finish();
    let mut g = c.benchmark_group("receipt_files");
    g.throughput(Throughput::Elements(docs.len() as u64));
    g.bench_function("verify_64_receipts_one_by_one_checkpoint_known", |b| {
        let mut v = settle_mandates::receipt::ReceiptVerifier::new(&ring, None);
        b.iter(|| {
            for d in &docs {
                v.verify(std::hint::black_box(d)).unwrap();
            }
        })
    });
    g.bench_function("verify_64_receipts_as_a_run", |b| {
        b.iter(|| {
            // A fresh verifier each time: the checkpoint's signature is in the batch.
            let mut v = settle_mandates::receipt::ReceiptVerifier::new(&ring, None);
            let out = v.verify_all(std::hint::black_box(&docs));
            assert!(out.iter().all(Result::is_ok));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

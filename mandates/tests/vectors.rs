//! Golden test vectors.
//!
//! - `vectors/rfc8032_ed25519.json`: RFC 8032 §7.1 Ed25519 vectors; our keys must derive the
//!   same public keys and produce the same signatures, byte for byte.
//! - `vectors/rfc6962_merkle.json`: the RFC 6962 / RFC 9162 tree of transparency-dev/merkle;
//!   our hashing and proofs must reproduce its roots and proofs, accept them, and refuse
//!   each with one bit flipped.
//! - `vectors/settle_formats.json`: settle's own formats (keys, JCS, mandates, receipts,
//!   salts, checkpoints, a complete receipt document), made by [`generate`] and committed.
//!   By default every vector is recomputed and any drift fails. After a deliberate format
//!   change, rewrite the file with
//!   `SETTLE_BLESS=1 cargo test -p settle-mandates --test vectors` and review the diff.

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

use settle_mandates::checkpoint::{Checkpoint, CheckpointError, key_hash};
use settle_mandates::jcs;
use settle_mandates::jws::JwsError;
use settle_mandates::keys::{Jwk, Jwks, KeyRing, SigningKey};
use settle_mandates::merkle::{self, Hash, ProofError};
use settle_mandates::money::{Amount, Currency};
use settle_mandates::receipt::{ReceiptDocument, ReceiptError, verify_receipt};
use settle_mandates::types::{
    Constraint, Direction, Instrument, LogRef, Mandate, MandateBasis, OpenMandate, Payee, ReceiptKind, ReceiptPayload,
    Signed, SignedError, Status, TYP_ADJUSTMENT_MANDATE, TYP_CLAWBACK_MANDATE, TYP_OPEN_MANDATE, TYP_PAYMENT_MANDATE,
    TYP_RECEIPT, VCT_ADJUSTMENT_MANDATE, VCT_CLAWBACK_MANDATE, VCT_OPEN_MANDATE, VCT_PAYMENT_MANDATE, VCT_RECEIPT,
    derive_salt, token_reference, verify_as,
};
use settle_mandates::webhook;

// ---------------------------------------------------------------------------------------
// Loading helpers
// ---------------------------------------------------------------------------------------

fn vector_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors").join(name)
}

fn load(name: &str) -> Value {
    let path = vector_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("'{key}' is not a string in {v}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("'{key}' is not an unsigned integer in {v}"))
}

fn i(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("'{key}' is not an integer in {v}"))
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap_or_else(|| panic!("'{key}' is not an array in {v}"))
}

fn unhex(h: &str) -> Vec<u8> {
    hex::decode(h).unwrap_or_else(|e| panic!("'{h}' is not hex: {e}"))
}

fn hash32(h: &str) -> Hash {
    unhex(h).try_into().unwrap_or_else(|_| panic!("'{h}' is not 32 bytes"))
}

fn idx(n: u64) -> usize {
    usize::try_from(n).expect("index fits usize")
}

fn len64(n: usize) -> u64 {
    u64::try_from(n).expect("length fits u64")
}

/// Flips bit `bit` (0..256) of a hash.
fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

// ---------------------------------------------------------------------------------------
// RFC 8032 §7.1
// ---------------------------------------------------------------------------------------

#[test]
fn rfc8032_ed25519_vectors() {
    let doc = load("rfc8032_ed25519.json");
    assert!(s(&doc, "source").contains("RFC 8032, Section 7.1"), "source must cite RFC 8032 §7.1");
    let vectors = arr(&doc, "vectors");
    let names: Vec<&str> = vectors.iter().map(|v| s(v, "name")).collect();
    assert_eq!(names, ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]);

    for v in vectors {
        let name = s(v, "name");
        let seed: [u8; 32] = unhex(s(v, "secret_key")).try_into().expect("secret key is 32 bytes");
        let public = unhex(s(v, "public_key"));
        let msg = unhex(s(v, "message"));
        let sig: [u8; 64] = unhex(s(v, "signature")).try_into().expect("signature is 64 bytes");
        assert_eq!(len64(msg.len()), u(v, "message_length"), "{name}: message length");

        let key = SigningKey::from_seed(&seed);
        assert_eq!(key.seed(), seed, "{name}: seed round trip");
        assert_eq!(key.verifying_key().as_bytes().as_slice(), public.as_slice(), "{name}: public key");
        assert_eq!(key.sign(&msg), sig, "{name}: signature");

        // The JWK of the key carries the same public key.
        let jwk = key.to_jwk(None, None);
        assert_eq!(B64.decode(&jwk.x).unwrap(), public, "{name}: JWK x");
        assert_eq!(jwk.verifying_key().unwrap(), key.verifying_key(), "{name}: JWK key");

        let vk = key.verifying_key();
        vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .unwrap_or_else(|e| panic!("{name}: published signature does not verify: {e}"));
        for bit in [0usize, 255, 256, 511] {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&bad)).is_err(),
                "{name}: signature with bit {bit} flipped verifies"
            );
        }
        let mut other = msg.clone();
        match other.first_mut() {
            Some(b) => *b ^= 1,
            None => other.push(0),
        }
        assert!(
            vk.verify_strict(&other, &ed25519_dalek::Signature::from_bytes(&sig)).is_err(),
            "{name}: signature verifies over another message"
        );
    }
    // TEST SHA(abc) signs SHA-512("abc").
    assert_eq!(unhex(s(&vectors[4], "message")), Sha512::digest(b"abc").to_vec());
}

// ---------------------------------------------------------------------------------------
// RFC 6962 / RFC 9162
// ---------------------------------------------------------------------------------------

#[test]
fn rfc6962_merkle_vectors() {
    let doc = load("rfc6962_merkle.json");
    assert!(s(&doc, "source").contains("transparency-dev/merkle"));
    let leaves: Vec<Hash> =
        arr(&doc, "leaves").iter().map(|l| merkle::leaf_hash(&unhex(l.as_str().expect("leaf is hex")))).collect();
    let roots: Vec<Hash> = arr(&doc, "roots").iter().map(|r| hash32(r.as_str().expect("root is hex"))).collect();
    assert_eq!(leaves.len(), 8);
    assert_eq!(roots.len(), 8);

    for n in 1..=8usize {
        assert_eq!(merkle::root_of(&leaves[..n]), roots[n - 1], "root_of, size {n}");
        assert_eq!(merkle::root(&leaves[..n], len64(n)).unwrap(), roots[n - 1], "root, size {n}");
        // Every leaf of every tree has a proof that verifies against the published root.
        for m in 0..n {
            let p = merkle::inclusion_proof(&leaves[..n], len64(m), len64(n)).unwrap().unwrap();
            merkle::verify_inclusion(len64(m), len64(n), &leaves[m], &p, &roots[n - 1])
                .unwrap_or_else(|e| panic!("leaf {m} of {n}: {e}"));
        }
    }
    assert_eq!(merkle::root_of(&[]), merkle::empty_root());

    let inclusion = arr(&doc, "inclusion_proofs");
    assert_eq!(inclusion.len(), 5);
    for v in inclusion {
        let (index, size) = (u(v, "leaf_index"), u(v, "tree_size"));
        let proof: Vec<Hash> = arr(v, "proof").iter().map(|h| hash32(h.as_str().expect("hex"))).collect();
        let tree = &leaves[..idx(size)];
        let leaf = leaves[idx(index)];
        let root = roots[idx(size) - 1];
        let made = merkle::inclusion_proof(tree, index, size).unwrap().unwrap();
        assert_eq!(made, proof, "inclusion proof {index}/{size} differs from the published one");
        merkle::verify_inclusion(index, size, &leaf, &proof, &root)
            .unwrap_or_else(|e| panic!("published inclusion proof {index}/{size} refused: {e}"));
        for (j, h) in proof.iter().enumerate() {
            for bit in [3usize, 0, 255] {
                let mut bad = proof.clone();
                bad[j] = flip(h, bit);
                assert_eq!(
                    merkle::verify_inclusion(index, size, &leaf, &bad, &root),
                    Err(ProofError::RootMismatch),
                    "inclusion {index}/{size}: proof[{j}] bit {bit} flipped"
                );
            }
        }
        assert_eq!(
            merkle::verify_inclusion(index, size, &flip(&leaf, 0), &proof, &root),
            Err(ProofError::RootMismatch),
            "inclusion {index}/{size}: leaf bit flipped"
        );
        assert_eq!(
            merkle::verify_inclusion(index, size, &leaf, &proof, &flip(&root, 100)),
            Err(ProofError::RootMismatch),
            "inclusion {index}/{size}: root bit flipped"
        );
        let mut longer = proof.clone();
        longer.push(root);
        assert!(merkle::verify_inclusion(index, size, &leaf, &longer, &root).is_err());
        if !proof.is_empty() {
            assert!(
                merkle::verify_inclusion(index, size, &leaf, &proof[1..], &root).is_err(),
                "inclusion {index}/{size}: shortened proof accepted"
            );
        }
    }

    let consistency = arr(&doc, "consistency_proofs");
    assert_eq!(consistency.len(), 5);
    for v in consistency {
        let (old, new) = (u(v, "size1"), u(v, "size2"));
        let proof: Vec<Hash> = arr(v, "proof").iter().map(|h| hash32(h.as_str().expect("hex"))).collect();
        let (old_root, new_root) = (roots[idx(old) - 1], roots[idx(new) - 1]);
        let made = merkle::consistency_proof(&leaves[..idx(new)], old, new).unwrap().unwrap();
        assert_eq!(made, proof, "consistency proof {old}->{new} differs from the published one");
        merkle::verify_consistency(old, new, &old_root, &new_root, &proof)
            .unwrap_or_else(|e| panic!("published consistency proof {old}->{new} refused: {e}"));
        for (j, h) in proof.iter().enumerate() {
            for bit in [4usize, 0, 255] {
                let mut bad = proof.clone();
                bad[j] = flip(h, bit);
                assert_eq!(
                    merkle::verify_consistency(old, new, &old_root, &new_root, &bad),
                    Err(ProofError::RootMismatch),
                    "consistency {old}->{new}: proof[{j}] bit {bit} flipped"
                );
            }
        }
        assert_eq!(
            merkle::verify_consistency(old, new, &flip(&old_root, 7), &new_root, &proof),
            Err(ProofError::RootMismatch),
            "consistency {old}->{new}: old root bit flipped"
        );
        assert_eq!(
            merkle::verify_consistency(old, new, &old_root, &flip(&new_root, 7), &proof),
            Err(ProofError::RootMismatch),
            "consistency {old}->{new}: new root bit flipped"
        );
        if !proof.is_empty() {
            assert!(
                merkle::verify_consistency(old, new, &old_root, &new_root, &proof[1..]).is_err(),
                "consistency {old}->{new}: shortened proof accepted"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// settle's own formats: the generator
// ---------------------------------------------------------------------------------------

const FORMATS: &str = "settle_formats.json";
const BLESS: &str = "SETTLE_BLESS=1 cargo test -p settle-mandates --test vectors";

/// The vendor's signing key seed: bytes 0x00, 0x01, …, 0x1f.
fn vendor_seed() -> [u8; 32] {
    std::array::from_fn(|i| u8::try_from(i).expect("i < 32"))
}
/// A key the vendor's JWKS does not hold.
const STRANGER_SEED: [u8; 32] = [0xee; 32];
/// The vendor secret salts are derived from.
const SALT_SECRET: &[u8; 32] = b"settle-golden-vector-salt-secret";
/// 2026-01-01T00:00:00Z: the vendor key's `valid_from`.
const VALID_FROM: i64 = 1_767_225_600;
const ORIGIN: &str = "settle.example/log";
const ISS: &str = "ven_acme";
const PROGRAM: &str = "prg_referral_2026";
const OPEN_MANDATE_ID: &str = "om_prg_referral_2026_0001";
const PAYMENT_ID: &str = "pm_cnv_000042_h1";
const CLAWBACK_ID: &str = "cb_cnv_000042_h1";
const ADJUSTMENT_ID: &str = "aj_cnv_000042_h1";
const RECEIPT_LEAF: u64 = 2;
const RECEIPT_CHECKPOINT_TIME: i64 = 1_767_312_060;
/// The leaf inputs of the RFC 6962 vectors (see rfc6962_merkle.json).
const RFC6962_LEAVES: [&str; 8] =
    ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];

/// JCS inputs, as raw JSON text: numbers as written, escapes as written.
const JCS_CASES: [(&str, &str); 2] = [
    (
        "awkward_values",
        r#"{
  "z": 1e21,
  "neg_zero": -0,
  "numbers": [1E-7, 0.000001, 100.0, 1.5, -0.0, 9007199254740993, 5e-324, -12.50],
  "strings": ["\u0000\u001f\b\t\n\f\r\"\\\/\u007f", "\u00e9", "é", "\ud83d\ude00", "日本"],
  "nested": {"b": {"d": [3, 2, 1], "c": {"f": true, "e": null}}, "a": "first"},
  "": "empty key",
  "€uro": "\u20ac"
}"#,
    ),
    (
        "utf16_key_order",
        r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis", "</script>": "Browser Challenge"}"#,
    ),
];

fn usd(minor: i64) -> Amount {
    let c: Currency = "USD".parse().expect("USD");
    Amount::from_minor(minor, c).expect("in range")
}

fn vendor() -> SigningKey {
    SigningKey::from_seed(&vendor_seed())
}

fn vendor_jwks() -> Jwks {
    Jwks { keys: vec![vendor().to_jwk(Some(VALID_FROM), None)] }
}

fn open_mandate() -> OpenMandate {
    OpenMandate {
        vct: VCT_OPEN_MANDATE.into(),
        mandate_id: OPEN_MANDATE_ID.into(),
        iss: ISS.into(),
        iat: VALID_FROM,
        program: PROGRAM.into(),
        rule_version: 3,
        constraints: vec![
            Constraint::AllowedPayees { payees: vec!["ptn_alice".into(), "ptn_bob".into(), "ptn_carol".into()] },
            Constraint::AmountRange { currency: usd(0).currency(), max: 100_000, min: Some(1) },
            Constraint::Budget { max: 5_000_000, currency: usd(0).currency(), period: "month".into() },
            Constraint::ExecutionDate { not_before: VALID_FROM, not_after: Some(1_798_761_600) },
        ],
        salt: derive_salt(SALT_SECRET, OPEN_MANDATE_ID),
    }
}

fn basis(log: LogRef, caused_by: &str, reverses: Option<String>) -> MandateBasis {
    MandateBasis {
        program: PROGRAM.into(),
        rule_version: 3,
        rounding: "largest_remainder.v1".into(),
        open_mandate: OPEN_MANDATE_ID.into(),
        conversion: "cnv_000042".into(),
        hop: 1,
        hops: 3,
        role: "intermediary".into(),
        pool: usd(12_345),
        log,
        caused_by: caused_by.into(),
        reverses,
        dispute: None,
    }
}

fn payment_mandate(cause: &[u8]) -> Mandate {
    Mandate {
        vct: VCT_PAYMENT_MANDATE.into(),
        transaction_id: PAYMENT_ID.into(),
        payee: Payee { id: "ptn_bob".into() },
        payment_amount: usd(4_115),
        payment_instrument: Instrument { kind: "settle.commission_account".into(), id: "acct_ptn_bob".into() },
        direction: Direction::Payment,
        iss: ISS.into(),
        iat: 1_767_312_000,
        execution_date: 1_769_904_000,
        basis: basis(LogRef { seq: 1, event_hash: hex::encode(Sha256::digest(cause)) }, "usr_ops_alice", None),
        salt: derive_salt(SALT_SECRET, PAYMENT_ID),
    }
}

fn clawback_mandate() -> Mandate {
    let cause = leaf_text("conversion_refunded", &json!({"conversion": "cnv_000042"}));
    Mandate {
        vct: VCT_CLAWBACK_MANDATE.into(),
        transaction_id: CLAWBACK_ID.into(),
        payee: Payee { id: "ptn_bob".into() },
        payment_amount: usd(2_000),
        payment_instrument: Instrument { kind: "settle.commission_account".into(), id: "acct_ptn_bob".into() },
        direction: Direction::Clawback,
        iss: ISS.into(),
        iat: 1_767_398_400,
        execution_date: 1_767_398_400,
        basis: basis(
            LogRef { seq: 7, event_hash: hex::encode(Sha256::digest(cause.as_bytes())) },
            "usr_support_carol",
            Some(PAYMENT_ID.into()),
        ),
        salt: derive_salt(SALT_SECRET, CLAWBACK_ID),
    }
}

/// A dispute's accepted re-split: 5.00 USD taken back from the intermediary (negative).
fn adjustment_mandate() -> Mandate {
    let cause = leaf_text("dispute_resolved", &json!({"dispute": "dsp_7", "outcome": "accepted"}));
    let mut basis =
        basis(LogRef { seq: 9, event_hash: hex::encode(Sha256::digest(cause.as_bytes())) }, "usr_ops_alice", None);
    basis.dispute = Some("dsp_7".into());
    Mandate {
        vct: VCT_ADJUSTMENT_MANDATE.into(),
        transaction_id: ADJUSTMENT_ID.into(),
        payee: Payee { id: "ptn_bob".into() },
        payment_amount: usd(-500),
        payment_instrument: Instrument { kind: "settle.commission_account".into(), id: "acct_ptn_bob".into() },
        direction: Direction::Adjustment,
        iss: ISS.into(),
        iat: 1_767_484_800,
        execution_date: 1_767_484_800,
        basis,
        salt: derive_salt(SALT_SECRET, ADJUSTMENT_ID),
    }
}

/// A log leaf: the JCS text of `{"type":…,"v":1,"data":…}`.
fn leaf_text(kind: &str, data: &Value) -> String {
    jcs::to_string(&json!({"type": kind, "v": 1, "data": data})).expect("canonical")
}

/// The five leaves of the receipt's log; leaf 2 records the payment mandate, leaf 4 its payment.
fn receipt_leaves(payment_jws: &str) -> Vec<String> {
    vec![
        leaf_text(
            "program_published",
            &json!({"program": PROGRAM, "rule_version": 3, "open_mandate": OPEN_MANDATE_ID}),
        ),
        conversion_leaf(),
        leaf_text("mandate_issued", &json!({"mandate": payment_jws})),
        leaf_text("hold_started", &json!({"mandate_ids": [PAYMENT_ID], "until": 1_769_904_000})),
        settled_leaf(),
    ]
}

/// Leaf 4: the record that a settlement paid the mandate (a `payment_settled` receipt's leaf).
const SETTLED_LEAF: u64 = 4;

fn settled_leaf() -> String {
    leaf_text(
        "mandate_paid",
        &json!({"mandate_id": PAYMENT_ID, "settlement": "stl_0007", "partner": "ptn_bob", "rail": "ach", "confirmation_id": "psp_7f3a"}),
    )
}

fn conversion_leaf() -> String {
    leaf_text(
        "conversion_recorded",
        &json!({
            "conversion": "cnv_000042",
            "amount": {"amount": 123_450, "currency": "USD"},
            "chain": ["ptn_alice", "ptn_bob", "ptn_carol"],
            "note": "Prämie für Bob — 日本"
        }),
    )
}

fn signed_entry<T: Signed>(obj: &T, key: &SigningKey) -> Value {
    json!({
        "typ": obj.typ(),
        "payload": jcs::to_string(obj).expect("canonical"),
        "jws": obj.sign(key),
    })
}

fn key_entry(seed: &[u8; 32], valid_from: Option<i64>) -> Value {
    let key = SigningKey::from_seed(seed);
    let jwk = key.to_jwk(valid_from, None);
    json!({
        "seed": hex::encode(seed),
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "x": jwk.x,
        "thumbprint_input": format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, jwk.x),
        "kid": key.kid(),
        "jwk_json": serde_json::to_string(&jwk).expect("JWK serialises"),
    })
}

fn checkpoint_entry(cp: &Checkpoint, key: &SigningKey) -> Value {
    json!({
        "origin": cp.origin,
        "size": cp.size,
        "root": hex::encode(cp.root),
        "time": cp.time,
        "key_hash": hex::encode(key_hash(&cp.origin, &key.verifying_key())),
        "body": cp.body(),
        "note": cp.sign(key),
    })
}

/// Every vector of `settle_formats.json`, from fixed inputs only.
fn generate() -> Value {
    let vendor = vendor();

    let jcs_cases: Vec<Value> = JCS_CASES
        .iter()
        .map(|(name, input)| {
            let v: Value = serde_json::from_str(input).expect("JCS input parses");
            json!({"name": name, "input": input, "canonical": jcs::to_string(&v).expect("JCS")})
        })
        .collect();

    let payment = payment_mandate(conversion_leaf().as_bytes());
    let payment_jws = payment.sign(&vendor);
    let clawback = clawback_mandate();

    // The receipt's tree.
    let leaves = receipt_leaves(&payment_jws);
    let hashes: Vec<Hash> = leaves.iter().map(|l| merkle::leaf_hash(l.as_bytes())).collect();
    let size = len64(hashes.len());
    let root = merkle::root_of(&hashes);
    let cp = Checkpoint { origin: ORIGIN.into(), size, root, time: RECEIPT_CHECKPOINT_TIME };
    let note = cp.sign(&vendor);
    let receipt = ReceiptPayload {
        vct: VCT_RECEIPT.into(),
        status: Status::Success,
        iss: ISS.into(),
        iat: cp.time,
        reference: token_reference(&payment_jws),
        payment_id: PAYMENT_ID.into(),
        psp_confirmation_id: None,
        network_confirmation_id: None,
        error: None,
        error_description: None,
        kind: ReceiptKind::MandateRecorded,
        rail: None,
        leaf_index: RECEIPT_LEAF,
        tree_size: size,
        root: hex::encode(root),
    };
    // A receipt document: the payload signed, its leaf, the leaf's path, the checkpoint.
    let document_of = |r: &ReceiptPayload| {
        let proof = merkle::inclusion_proof(hashes.as_slice(), r.leaf_index, size).unwrap().unwrap();
        ReceiptDocument {
            receipt: r.sign(&vendor),
            mandate: payment_jws.clone(),
            leaf: B64.encode(leaves[idx(r.leaf_index)].as_bytes()),
            inclusion: proof.iter().map(|h| B64STD.encode(h)).collect(),
            checkpoint: note.clone(),
        }
    };
    let document = document_of(&receipt);

    // The receipt of its payment, against the same checkpoint.
    let settled = ReceiptPayload {
        psp_confirmation_id: Some("psp_7f3a".into()),
        kind: ReceiptKind::PaymentSettled,
        rail: Some("ach".into()),
        leaf_index: SETTLED_LEAF,
        ..receipt.clone()
    };
    let settled_document = document_of(&settled);

    // A receipt payload with every optional field set.
    let failed = ReceiptPayload {
        vct: VCT_RECEIPT.into(),
        status: Status::Error,
        iss: ISS.into(),
        iat: 1_767_400_000,
        reference: token_reference(&payment_jws),
        payment_id: PAYMENT_ID.into(),
        psp_confirmation_id: Some("psp_7f3a".into()),
        network_confirmation_id: Some("net_0009".into()),
        error: Some("insufficient_funds".into()),
        error_description: Some("Compte bloqué — payout refused".into()),
        kind: ReceiptKind::PaymentFailed,
        rail: Some("ach".into()),
        leaf_index: 4,
        tree_size: size,
        root: hex::encode(root),
    };

    let rfc_leaves: Vec<Hash> = RFC6962_LEAVES.iter().map(|l| merkle::leaf_hash(&unhex(l))).collect();
    let rfc_cp = Checkpoint {
        origin: ORIGIN.into(),
        size: len64(rfc_leaves.len()),
        root: merkle::root_of(&rfc_leaves),
        time: 1_767_312_000,
    };

    json!({
        "description": "Golden vectors of settle's formats. Generated by mandates/tests/vectors.rs from fixed inputs; the test recomputes every value and fails on drift.",
        "bless": BLESS,
        "keys": [
            {"role": "vendor", "valid_from": VALID_FROM, "key": key_entry(&vendor_seed(), Some(VALID_FROM))},
            {"role": "stranger (not in the JWKS)", "valid_from": null, "key": key_entry(&STRANGER_SEED, None)},
        ],
        "jwks": serde_json::to_value(vendor_jwks()).expect("JWKS serialises"),
        "jcs": jcs_cases,
        "salt": {
            "secret": hex::encode(SALT_SECRET),
            "id": PAYMENT_ID,
            "salt": derive_salt(SALT_SECRET, PAYMENT_ID),
        },
        "open_mandate": signed_entry(&open_mandate(), &vendor),
        "payment_mandate": signed_entry(&payment, &vendor),
        "clawback_mandate": signed_entry(&clawback, &vendor),
        "adjustment_mandate": signed_entry(&adjustment_mandate(), &vendor),
        "receipt_payload": signed_entry(&failed, &vendor),
        "checkpoint": checkpoint_entry(&rfc_cp, &vendor),
        "receipt_document": {
            "leaves": leaves,
            "leaf_index": RECEIPT_LEAF,
            "tree_size": size,
            "root": hex::encode(root),
            "checkpoint": checkpoint_entry(&cp, &vendor),
            "receipt": signed_entry(&receipt, &vendor),
            "document": serde_json::to_value(&document).expect("document serialises"),
        },
        "settled_receipt_document": {
            "leaf_index": SETTLED_LEAF,
            "receipt": signed_entry(&settled, &vendor),
            "document": serde_json::to_value(&settled_document).expect("document serialises"),
        },
        "webhook": webhook_entry(&vendor),
    })
}

const WEBHOOK_ID: &str = "evt_1042";
const WEBHOOK_TIMESTAMP: i64 = 1_767_225_600;
const WEBHOOK_SECRET: [u8; 32] = [0x5a; 32];

fn webhook_body() -> String {
    let payment = payment_mandate(conversion_leaf().as_bytes());
    let body = json!({
        "type": "mandate.issued",
        "timestamp": "2026-01-01T00:00:00Z",
        "data": {"seq": 1042, "mandate_id": PAYMENT_ID, "partner": "acme", "amount": {"amount": 1234, "currency": "USD"}, "conversion": "cnv_000042", "mandate": payment.sign(&vendor())},
    });
    jcs::to_string(&body).expect("JCS")
}

fn webhook_entry(vendor: &SigningKey) -> Value {
    let secret = webhook::Secret::from_bytes(&WEBHOOK_SECRET);
    let body = webhook_body();
    json!({
        "id": WEBHOOK_ID,
        "timestamp": WEBHOOK_TIMESTAMP,
        "secret": secret.to_text(),
        "public_key": webhook::public_key_text(vendor),
        "body": body,
        "signed_content": format!("{WEBHOOK_ID}.{WEBHOOK_TIMESTAMP}.{body}"),
        "signature_header": webhook::sign(WEBHOOK_ID, WEBHOOK_TIMESTAMP, body.as_bytes(), &secret, vendor),
    })
}

/// Paths (and both values) where `committed` and `generated` differ.
fn diff(path: &str, committed: &Value, generated: &Value, out: &mut Vec<String>) {
    match (committed, generated) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => diff(&format!("{path}/{k}"), va, vb, out),
                    None => out.push(format!("{path}/{k}: committed but no longer generated")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                out.push(format!("{path}/{k}: generated but not committed"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (n, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(&format!("{path}/{n}"), va, vb, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => {
            // Show both values around their first difference.
            let (ta, tb) = (a.to_string(), b.to_string());
            let (ca, cb): (Vec<char>, Vec<char>) = (ta.chars().collect(), tb.chars().collect());
            let first = ca.iter().zip(&cb).take_while(|(x, y)| x == y).count();
            let start = first.saturating_sub(40);
            let window = |c: &[char]| {
                let end = c.len().min(first + 80);
                let text: String = c[start.min(end)..end].iter().collect();
                let pre = if start > 0 { "…" } else { "" };
                let post = if end < c.len() { "…" } else { "" };
                format!("{pre}{text}{post}")
            };
            out.push(format!(
                "{path} (first difference at character {first}):\n    committed {}\n    generated {}",
                window(&ca),
                window(&cb)
            ));
        }
    }
}

fn rendered(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("renders") + "\n"
}

#[test]
fn settle_formats_match_committed_vectors() {
    let generated = generate();
    // Generation is deterministic: same inputs, same bytes.
    assert_eq!(rendered(&generated), rendered(&generate()), "generation is not deterministic");
    let path = vector_path(FORMATS);
    if std::env::var("SETTLE_BLESS").as_deref() == Ok("1") {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, rendered(&generated)).expect("write vectors");
        std::fs::rename(&tmp, &path).expect("replace vectors");
        eprintln!("SETTLE_BLESS=1: rewrote {}", path.display());
        assert_eq!(load(FORMATS), generated, "re-read vectors differ from those written");
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; create it with `{BLESS}`", path.display()));
    let committed: Value = serde_json::from_str(&text).expect("committed vectors are JSON");
    let mut diffs = Vec::new();
    diff("", &committed, &generated, &mut diffs);
    assert!(
        diffs.is_empty(),
        "{} drifted from the code in {} place(s):\n{}\n\nIf this format change is deliberate, \
         run `{BLESS}` and review the diff.",
        path.display(),
        diffs.len(),
        diffs.join("\n")
    );
    assert_eq!(
        text,
        rendered(&generated),
        "{} has the same values but not the blessed layout; run `{BLESS}`",
        path.display()
    );
}

// ---------------------------------------------------------------------------------------
// settle's own formats: what is committed verifies, independently of the generator
// ---------------------------------------------------------------------------------------

fn committed_ring(formats: &Value) -> KeyRing {
    let jwks: Jwks = serde_json::from_value(formats["jwks"].clone()).expect("JWKS");
    KeyRing::new(&jwks).expect("JWKS keys are valid")
}

fn vendor_kid(formats: &Value) -> String {
    s(&formats["keys"][0]["key"], "kid").to_owned()
}

fn decoded_payload(token: &str) -> String {
    let seg = token.split('.').nth(1).expect("three segments");
    String::from_utf8(B64.decode(seg).expect("base64url payload")).expect("UTF-8 payload")
}

#[test]
fn committed_keys_and_jcs_are_consistent() {
    let f = load(FORMATS);
    let keys = arr(&f, "keys");
    assert_eq!(keys.len(), 2);
    for entry in keys {
        let k = &entry["key"];
        let seed: [u8; 32] = unhex(s(k, "seed")).try_into().expect("32-byte seed");
        let key = SigningKey::from_seed(&seed);
        assert_eq!(hex::encode(key.verifying_key().as_bytes()), s(k, "public_key"));
        assert_eq!(B64.decode(s(k, "x")).unwrap(), unhex(s(k, "public_key")));
        // RFC 7638, computed here without the crate.
        let tp_input = s(k, "thumbprint_input");
        assert_eq!(tp_input, format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, s(k, "x")));
        assert_eq!(B64.encode(Sha256::digest(tp_input.as_bytes())), s(k, "kid"));
        assert_eq!(key.kid(), s(k, "kid"));
        let jwk: Jwk = serde_json::from_str(s(k, "jwk_json")).expect("JWK JSON");
        assert_eq!(jwk.kid, s(k, "kid"));
        assert_eq!(jwk.x, s(k, "x"));
        assert_eq!(jwk.valid_from, entry["valid_from"].as_i64());
        assert_eq!(jwk.verifying_key().expect("JWK checks"), key.verifying_key());
    }
    let jwks = arr(&f["jwks"], "keys");
    assert_eq!(jwks.len(), 1, "only the vendor key is published");
    assert_eq!(jwks[0], serde_json::from_str::<Value>(s(&keys[0]["key"], "jwk_json")).unwrap());

    let cases = arr(&f, "jcs");
    assert_eq!(cases.len(), JCS_CASES.len());
    for c in cases {
        let v: Value = serde_json::from_str(s(c, "input")).expect("input parses");
        let canonical = s(c, "canonical");
        assert_eq!(jcs::to_string(&v).unwrap(), canonical, "JCS of {}", s(c, "name"));
        // Canonical text is a fixed point.
        let again: Value = serde_json::from_str(canonical).expect("canonical parses");
        assert_eq!(jcs::to_string(&again).unwrap(), canonical);
    }
    // The committed output, against RFC 8785 worked out by hand: keys sorted by UTF-16 code
    // units, ES6 number forms (1e+21, 1e-7, -0 as 0, 2^53 + 1 rounded to a double),
    // minimal escapes (U+007F and U+0080 raw, "/" unescaped), nested objects sorted too.
    assert_eq!(
        s(&cases[0], "canonical"),
        "{\"\":\"empty key\",\"neg_zero\":0,\"nested\":{\"a\":\"first\",\"b\":{\"c\":{\"e\":null,\
         \"f\":true},\"d\":[3,2,1]}},\"numbers\":[1e-7,0.000001,100,1.5,0,9007199254740992,5e-324,\
         -12.5],\"strings\":[\"\\u0000\\u001f\\b\\t\\n\\f\\r\\\"\\\\/\u{7f}\",\"\u{e9}\",\"\u{e9}\",\
         \"\u{1f600}\",\"\u{65e5}\u{672c}\"],\"z\":1e+21,\"\u{20ac}uro\":\"\u{20ac}\"}"
    );
    // U+1F600 (D83D DE00) sorts before U+FB33 in UTF-16, after it in code points.
    assert_eq!(
        s(&cases[1], "canonical"),
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"</script>\":\"Browser Challenge\",\
         \"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\
         \"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\
         \"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );

    // Salt, computed here with HMAC-SHA-256 directly.
    let salt = &f["salt"];
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&unhex(s(salt, "secret"))).unwrap();
    mac.update(b"settle/salt/v1\n");
    mac.update(s(salt, "id").as_bytes());
    assert_eq!(B64.encode(&mac.finalize().into_bytes()[..16]), s(salt, "salt"));
    let secret: [u8; 32] = unhex(s(salt, "secret")).try_into().unwrap();
    assert_eq!(derive_salt(&secret, s(salt, "id")), s(salt, "salt"));
}

#[test]
fn committed_tokens_and_notes_verify() {
    let f = load(FORMATS);
    let ring = committed_ring(&f);
    let kid = vendor_kid(&f);

    let om = &f["open_mandate"];
    assert_eq!(s(om, "typ"), TYP_OPEN_MANDATE);
    let (open, key): (OpenMandate, _) =
        verify_as(s(om, "jws"), &ring, TYP_OPEN_MANDATE).expect("open mandate verifies");
    assert_eq!(key.kid, kid);
    assert_eq!(decoded_payload(s(om, "jws")), s(om, "payload"));
    assert_eq!(jcs::to_string(&open).unwrap(), s(om, "payload"));
    assert_eq!(open.vct, VCT_OPEN_MANDATE);
    assert_eq!(open.constraints.len(), 4);

    let secret: [u8; 32] = unhex(s(&f["salt"], "secret")).try_into().unwrap();
    for (name, typ, direction) in [
        ("payment_mandate", TYP_PAYMENT_MANDATE, Direction::Payment),
        ("clawback_mandate", TYP_CLAWBACK_MANDATE, Direction::Clawback),
        ("adjustment_mandate", TYP_ADJUSTMENT_MANDATE, Direction::Adjustment),
    ] {
        let e = &f[name];
        assert_eq!(s(e, "typ"), typ);
        let (m, key) = Mandate::verify(s(e, "jws"), &ring).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(key.kid, kid);
        assert_eq!(m.direction, direction);
        assert_eq!(m.vct, Mandate::vct_for(direction));
        assert_eq!(m.salt, derive_salt(&secret, &m.transaction_id), "{name}: salt");
        assert_eq!(decoded_payload(s(e, "jws")), s(e, "payload"), "{name}: payload");
        assert_eq!(jcs::to_string(&m).unwrap(), s(e, "payload"), "{name}: canonical");
        // Typed: a mandate is never a receipt.
        assert!(matches!(
            verify_as::<ReceiptPayload>(s(e, "jws"), &ring, TYP_RECEIPT),
            Err(SignedError::Jws(JwsError::WrongType { .. }))
        ));
    }
    let clawback: Mandate = serde_json::from_str(s(&f["clawback_mandate"], "payload")).unwrap();
    assert_eq!(clawback.basis.reverses.as_deref(), Some(PAYMENT_ID));
    // An adjustment is signed (negative here) and names its dispute; the others never do.
    let adjustment: Mandate = serde_json::from_str(s(&f["adjustment_mandate"], "payload")).unwrap();
    assert_eq!((adjustment.payment_amount.minor_units(), adjustment.basis.dispute.as_deref()), (-500, Some("dsp_7")));
    assert!(clawback.basis.dispute.is_none());

    let r = &f["receipt_payload"];
    let (receipt, _): (ReceiptPayload, _) =
        verify_as(s(r, "jws"), &ring, TYP_RECEIPT).expect("receipt payload verifies");
    assert_eq!(decoded_payload(s(r, "jws")), s(r, "payload"));
    assert_eq!(receipt.reference, token_reference(s(&f["payment_mandate"], "jws")));
    assert!(receipt.error.is_some() && receipt.rail.is_some() && receipt.psp_confirmation_id.is_some());

    // Checkpoints: parsed and verified, and the signed-note rules checked here directly.
    let rfc_roots = load("rfc6962_merkle.json");
    for (name, cpv) in [("checkpoint", &f["checkpoint"]), ("receipt checkpoint", &f["receipt_document"]["checkpoint"])]
    {
        let note = s(cpv, "note");
        let (cp, by) = Checkpoint::verify(note, &ring, Some(ORIGIN)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(by, kid);
        assert_eq!(
            (cp.origin.as_str(), cp.size, hex::encode(cp.root), cp.time),
            (s(cpv, "origin"), u(cpv, "size"), s(cpv, "root").to_owned(), i(cpv, "time"))
        );
        let body = format!(
            "{}\n{}\n{}\ntime {}\n",
            s(cpv, "origin"),
            u(cpv, "size"),
            B64STD.encode(hash32(s(cpv, "root"))),
            i(cpv, "time")
        );
        assert_eq!(s(cpv, "body"), body);
        let (sig_line, blob) = {
            let rest = note.strip_prefix(&body).expect("note starts with its body");
            let line =
                rest.strip_prefix('\n').and_then(|l| l.strip_suffix('\n')).expect("blank line, one signature line");
            let b64 = line.strip_prefix(&format!("\u{2014} {ORIGIN} ")).expect("em dash, origin");
            (line, B64STD.decode(b64).expect("base64 blob"))
        };
        assert_eq!(blob.len(), 68, "{sig_line}");
        let vk = SigningKey::from_seed(&vendor_seed()).verifying_key();
        let mut h = Sha256::new();
        h.update(ORIGIN.as_bytes());
        h.update(b"\n\x01");
        h.update(vk.as_bytes());
        assert_eq!(blob[..4], h.finalize()[..4], "{name}: key hash");
        assert_eq!(hex::encode(&blob[..4]), s(cpv, "key_hash"));
        let sig: [u8; 64] = blob[4..].try_into().unwrap();
        vk.verify_strict(body.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig)).expect("note signature");
    }
    assert_eq!(
        s(&f["checkpoint"], "root"),
        arr(&rfc_roots, "roots")[7].as_str().unwrap(),
        "the checkpoint is of the RFC 6962 8-leaf tree"
    );

    // The receipt document.
    let rd = &f["receipt_document"];
    let doc: ReceiptDocument = serde_json::from_value(rd["document"].clone()).expect("document");
    let v = verify_receipt(&doc, &ring, Some(ORIGIN)).expect("committed receipt document verifies");
    assert_eq!(v.receipt.leaf_index, u(rd, "leaf_index"));
    assert_eq!(v.checkpoint.size, u(rd, "tree_size"));
    assert_eq!(v.mandate.transaction_id, PAYMENT_ID);
    assert_eq!(doc.receipt, s(&rd["receipt"], "jws"));
    assert_eq!(doc.mandate, s(&f["payment_mandate"], "jws"));
    assert_eq!(doc.checkpoint, s(&rd["checkpoint"], "note"));
    // The leaf is the JCS form of the mandate_issued event naming the mandate, and the
    // tree of the committed leaves has the committed root.
    let leaves: Vec<&str> = arr(rd, "leaves").iter().map(|l| l.as_str().unwrap()).collect();
    let leaf = leaves[idx(u(rd, "leaf_index"))];
    assert_eq!(B64.decode(&doc.leaf).unwrap(), leaf.as_bytes());
    assert_eq!(
        leaf,
        jcs::to_string(&json!({"type": "mandate_issued", "v": 1, "data": {"mandate": doc.mandate}})).unwrap()
    );
    let hashes: Vec<Hash> = leaves.iter().map(|l| merkle::leaf_hash(l.as_bytes())).collect();
    assert_eq!(hex::encode(merkle::root_of(&hashes)), s(rd, "root"));
    assert_eq!(len64(hashes.len()), u(rd, "tree_size"));

    // The receipt of the payment: its leaf is the mandate's own `mandate_paid` record,
    // in the same tree, under the same checkpoint.
    let sd = &f["settled_receipt_document"];
    let doc: ReceiptDocument = serde_json::from_value(sd["document"].clone()).expect("settled document");
    let v = verify_receipt(&doc, &ring, Some(ORIGIN)).expect("committed settled receipt verifies");
    assert_eq!(v.receipt.kind, ReceiptKind::PaymentSettled);
    assert_eq!(v.receipt.leaf_index, u(sd, "leaf_index"));
    assert_eq!(v.receipt.psp_confirmation_id.as_deref(), Some("psp_7f3a"));
    assert_eq!(doc.receipt, s(&sd["receipt"], "jws"));
    assert_eq!(doc.checkpoint, s(&rd["checkpoint"], "note"));
    let leaf: Value = serde_json::from_slice(&B64.decode(&doc.leaf).unwrap()).unwrap();
    assert_eq!(B64.decode(&doc.leaf).unwrap(), leaves[idx(u(sd, "leaf_index"))].as_bytes());
    assert_eq!((leaf["type"].as_str(), leaf["data"]["mandate_id"].as_str()), (Some("mandate_paid"), Some(PAYMENT_ID)));
}

// ---------------------------------------------------------------------------------------
// The receipt document: every tampering is refused with the right reason
// ---------------------------------------------------------------------------------------

/// Re-encodes a token's payload after `edit`, keeping its header and signature.
fn tamper_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    let bytes = jcs::to_vec(&payload).unwrap();
    format!("{}.{}.{}", parts[0], B64.encode(bytes), parts[2])
}

fn tamper_leaf(doc: &ReceiptDocument, edit: impl FnOnce(&mut Value)) -> String {
    let mut leaf: Value = serde_json::from_slice(&B64.decode(&doc.leaf).unwrap()).unwrap();
    edit(&mut leaf);
    B64.encode(jcs::to_vec(&leaf).unwrap())
}

#[test]
fn receipt_document_refuses_tampering() {
    let f = load(FORMATS);
    let ring = committed_ring(&f);
    let kid = vendor_kid(&f);
    let base: ReceiptDocument = serde_json::from_value(f["receipt_document"]["document"].clone()).expect("document");
    // Every outcome twice: one-off, and through a verifier that already trusts the
    // committed checkpoint (the cached path must refuse exactly the same).
    let check = |doc: &ReceiptDocument| {
        let once = verify_receipt(doc, &ring, Some(ORIGIN));
        let mut cached = settle_mandates::receipt::ReceiptVerifier::new(&ring, Some(ORIGIN));
        cached.verify(&base).expect("the committed document verifies");
        assert_eq!(
            cached.verify(doc).map(|_| ()),
            once.as_ref().map(|_| ()).map_err(Clone::clone),
            "cached path differs"
        );
        // And amid good receipts in one run (signatures batch-checked together; a bad
        // one sends the run to the one-by-one checks), with a fresh verifier.
        let mut run = settle_mandates::receipt::ReceiptVerifier::new(&ring, Some(ORIGIN));
        let outcomes: Vec<Result<(), ReceiptError>> =
            run.verify_all(&[base.clone(), doc.clone(), base.clone()]).into_iter().map(|r| r.map(|_| ())).collect();
        assert_eq!(outcomes, vec![Ok(()), once.as_ref().map(|_| ()).map_err(Clone::clone), Ok(())], "run differs");
        once
    };
    check(&base).expect("the committed document verifies");

    // Tampered receipt JWS.
    let mut d = base.clone();
    d.receipt = tamper_payload(&d.receipt, |p| p["leaf_index"] = json!(3));
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Receipt(SignedError::Jws(JwsError::BadSignature(kid.clone()))));
    let mut d = base.clone();
    d.receipt = d.mandate.clone();
    assert!(matches!(check(&d).unwrap_err(), ReceiptError::Receipt(SignedError::Jws(JwsError::WrongType { .. }))));

    // Tampered mandate.
    let mut d = base.clone();
    d.mandate = tamper_payload(&d.mandate, |p| p["payment_amount"]["amount"] = json!(999_999));
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Mandate(SignedError::Jws(JwsError::BadSignature(kid.clone()))));
    // Another validly signed mandate is not the one the receipt answers.
    let mut d = base.clone();
    d.mandate = s(&f["clawback_mandate"], "jws").to_owned();
    assert_eq!(check(&d).unwrap_err(), ReceiptError::ReferenceMismatch);

    // Tampered leaf: still naming the mandate (the proof no longer holds), or not.
    let mut d = base.clone();
    d.leaf = tamper_leaf(&base, |l| l["v"] = json!(2));
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Inclusion(ProofError::RootMismatch));
    let mut d = base.clone();
    d.leaf = tamper_leaf(&base, |l| l["data"]["mandate"] = json!("another token"));
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Leaf("the leaf does not name this mandate"));

    // A payment receipt whose leaf is not its mandate's payment record: another record
    // type (the failure type; a settlement fact listing the mandate among others), or
    // another mandate.
    let paid: ReceiptDocument =
        serde_json::from_value(f["settled_receipt_document"]["document"].clone()).expect("settled document");
    check(&paid).expect("the committed payment receipt verifies");
    for edit in [
        (|l: &mut Value| l["type"] = json!("mandate_payment_failed")) as fn(&mut Value),
        |l| l["data"]["mandate_id"] = json!("md_other"),
        |l| {
            l["type"] = json!("settlement_confirmed");
            l["data"] = json!({"mandate_ids": [PAYMENT_ID, "md_other"]});
        },
    ] {
        let mut d = paid.clone();
        d.leaf = tamper_leaf(&paid, edit);
        assert_eq!(check(&d).unwrap_err(), ReceiptError::Leaf("the leaf does not name this mandate"));
    }

    // A flipped bit in each proof hash.
    assert_eq!(base.inclusion.len(), 3);
    for j in 0..base.inclusion.len() {
        for bit in [0usize, 77, 255] {
            let mut d = base.clone();
            let h: Hash = B64STD.decode(&d.inclusion[j]).unwrap().try_into().unwrap();
            d.inclusion[j] = B64STD.encode(flip(&h, bit));
            assert_eq!(
                check(&d).unwrap_err(),
                ReceiptError::Inclusion(ProofError::RootMismatch),
                "proof[{j}] bit {bit}"
            );
        }
    }
    let mut d = base.clone();
    d.inclusion.pop();
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Inclusion(ProofError::WrongLength));

    // Tampered checkpoint: the signed body changed.
    let (cp, _) = Checkpoint::parse(&base.checkpoint).expect("checkpoint parses");
    let mut d = base.clone();
    d.checkpoint = base.checkpoint.replacen(&format!("\ntime {}\n", cp.time), &format!("\ntime {}\n", cp.time + 1), 1);
    assert_ne!(d.checkpoint, base.checkpoint);
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Checkpoint(CheckpointError::BadSignature(kid.clone())));
    // A checkpoint of another tree, validly signed, does not match the receipt.
    let other = Checkpoint { size: cp.size + 1, ..cp.clone() };
    let mut d = base.clone();
    d.checkpoint = other.sign(&vendor());
    assert_eq!(
        check(&d).unwrap_err(),
        ReceiptError::CheckpointMismatch { receipt_size: cp.size, checkpoint_size: cp.size + 1 }
    );

    // The same checkpoint signed by a key the vendor never published.
    let mut d = base.clone();
    d.checkpoint = cp.sign(&SigningKey::from_seed(&STRANGER_SEED));
    assert_eq!(check(&d).unwrap_err(), ReceiptError::Checkpoint(CheckpointError::NoKnownSignature(ORIGIN.into())));
    // And a pinned origin is enforced.
    assert!(matches!(
        verify_receipt(&base, &ring, Some("other.example/log")).unwrap_err(),
        ReceiptError::Checkpoint(CheckpointError::WrongOrigin { .. })
    ));
}

#[test]
fn committed_webhook_signatures_verify_independently() {
    let f = load(FORMATS);
    let w = &f["webhook"];
    let (id, ts, body, header) = (s(w, "id"), i(w, "timestamp"), s(w, "body"), s(w, "signature_header"));
    assert_eq!(s(w, "signed_content"), format!("{id}.{ts}.{body}"));
    let (v1, v1a) = header.split_once(' ').expect("two signatures, space-separated");
    // v1: HMAC-SHA256 over the signed content with the base64-decoded secret.
    let key = B64STD.decode(s(w, "secret").strip_prefix("whsec_").expect("whsec_ prefix")).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(s(w, "signed_content").as_bytes());
    assert_eq!(v1, format!("v1,{}", B64STD.encode(mac.finalize().into_bytes())));
    // v1a: Ed25519 over the same bytes, checked with the bare public key.
    let pk: [u8; 32] =
        B64STD.decode(s(w, "public_key").strip_prefix("whpk_").expect("whpk_ prefix")).unwrap().try_into().unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk).unwrap();
    let sig: [u8; 64] = B64STD.decode(v1a.strip_prefix("v1a,").expect("v1a prefix")).unwrap().try_into().unwrap();
    vk.verify_strict(s(w, "signed_content").as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .expect("v1a verifies");
    // And through the crate, against the committed JWKS.
    let secret = webhook::Secret::parse(s(w, "secret")).unwrap();
    webhook::verify_v1(id, ts, body.as_bytes(), header, &secret).unwrap();
    assert_eq!(webhook::verify_v1a(id, ts, body.as_bytes(), header, &committed_ring(&f)).unwrap(), vendor_kid(&f));
    assert!(webhook::verify_v1(id, ts, body.replace("1234", "1235").as_bytes(), header, &secret).is_err());
}

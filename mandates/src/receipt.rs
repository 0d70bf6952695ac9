//! The receipt a partner holds and verifies offline, and the one call that verifies it.
//!
//! A receipt document carries everything needed, and nothing to trust: the signed
//! receipt, the signed mandate it answers, the log leaf that records the outcome, the
//! inclusion proof of that leaf, and the signed checkpoint the proof is against.
//! [`verify_receipt`] checks all of it against the vendor's JWKS and says exactly what
//! failed.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::keys::KeyRing;
use crate::merkle::{self, Hash, ProofError};
use crate::types::{Mandate, ReceiptKind, ReceiptPayload, SignedError, TYP_RECEIPT, token_reference, verify_as_with};

/// A receipt as handed to a partner (one JSON object; a line of `receipts.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptDocument {
    /// Compact JWS of a [`ReceiptPayload`].
    pub receipt: String,
    /// Compact JWS of the [`Mandate`] the receipt answers.
    pub mandate: String,
    /// base64url of the exact log leaf bytes (the event's canonical JSON).
    pub leaf: String,
    /// Inclusion proof, leaf side first, base64 (standard) hashes.
    pub inclusion: Vec<String>,
    /// The signed checkpoint (C2SP signed note) the proof is against.
    pub checkpoint: String,
}

/// What failed, first failure only, in the order checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The receipt JWS.
    #[error("receipt: {0}")]
    Receipt(SignedError),
    /// The mandate JWS.
    #[error("mandate: {0}")]
    Mandate(SignedError),
    /// The receipt does not reference this mandate.
    #[error("receipt references another mandate (reference or payment_id differ)")]
    ReferenceMismatch,
    /// The leaf is not base64url JSON recording this outcome.
    #[error("leaf does not record this outcome: {0}")]
    Leaf(&'static str),
    /// The checkpoint.
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// Receipt and checkpoint disagree on size or root.
    #[error("receipt is bound to tree size {receipt_size}, checkpoint has {checkpoint_size} (or roots differ)")]
    CheckpointMismatch {
        /// Size in the receipt.
        receipt_size: u64,
        /// Size in the checkpoint.
        checkpoint_size: u64,
    },
    /// The inclusion proof.
    #[error("inclusion proof: {0}")]
    Inclusion(ProofError),
    /// A proof hash is not 32 base64 bytes.
    #[error("inclusion proof hash {0} is not 32 base64 bytes")]
    BadHash(usize),
}

/// A receipt that verified, with its parts decoded.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    /// The receipt payload.
    pub receipt: ReceiptPayload,
    /// The mandate.
    pub mandate: Mandate,
    /// The checkpoint.
    pub checkpoint: Checkpoint,
}

/// Decodes base64 (standard) hashes.
pub fn decode_hashes(hashes: &[String]) -> Result<Vec<Hash>, usize> {
    hashes.iter().enumerate().map(|(i, h)| B64STD.decode(h).ok().and_then(|b| b.try_into().ok()).ok_or(i)).collect()
}

/// Batch-verifies the receipt's, mandate's and checkpoint's signatures; true only if all
/// three verify under keys of `ring`.
fn batch_signatures(doc: &ReceiptDocument, ring: &KeyRing, with_checkpoint: bool) -> bool {
    let Ok(r) = crate::jws::parse(&doc.receipt, TYP_RECEIPT) else { return false };
    let Ok(typ) = Mandate::token_typ(&doc.mandate) else { return false };
    let Ok(m) = crate::jws::parse(&doc.mandate, typ) else { return false };
    let (Some((_, rk)), Some((_, mk))) = (ring.get(&r.header.kid), ring.get(&m.header.kid)) else { return false };
    if !with_checkpoint {
        return ed25519_dalek::verify_batch(
            &[r.signing_input, m.signing_input],
            &[r.signature, m.signature],
            &[*rk, *mk],
        )
        .is_ok();
    }
    let Some((body, cs, ck)) = Checkpoint::signed_by(&doc.checkpoint, ring) else { return false };
    ed25519_dalek::verify_batch(
        &[r.signing_input, m.signing_input, body.as_bytes()],
        &[r.signature, m.signature, cs],
        &[*rk, *mk, *ck],
    )
    .is_ok()
}

/// Verifies a receipt document against the vendor's keys; `origin` pins the log identity.
pub fn verify_receipt(
    doc: &ReceiptDocument,
    ring: &KeyRing,
    origin: Option<&str>,
) -> Result<VerifiedReceipt, ReceiptError> {
    verify_inner(doc, ring, origin, false)
}

/// Verifies many receipts with one key set, remembering the checkpoints it has already
/// verified: a partner checking a file of receipts against one checkpoint pays for the
/// checkpoint's signature once. Same outcomes as [`verify_receipt`].
#[derive(Debug)]
pub struct ReceiptVerifier<'a> {
    ring: &'a KeyRing,
    origin: Option<String>,
    verified: std::collections::HashSet<String>,
}

/// Most checkpoints a [`ReceiptVerifier`] remembers.
pub const MAX_REMEMBERED_CHECKPOINTS: usize = 1024;

impl<'a> ReceiptVerifier<'a> {
    /// A verifier for `ring`, pinning the log `origin` if given.
    #[must_use]
    pub fn new(ring: &'a KeyRing, origin: Option<&str>) -> Self {
        Self { ring, origin: origin.map(str::to_owned), verified: std::collections::HashSet::new() }
    }

    /// Verifies one receipt.
    pub fn verify(&mut self, doc: &ReceiptDocument) -> Result<VerifiedReceipt, ReceiptError> {
        let known = self.verified.contains(&doc.checkpoint);
        let v = verify_inner(doc, self.ring, self.origin.as_deref(), known)?;
        if !known && self.verified.len() < MAX_REMEMBERED_CHECKPOINTS {
            self.verified.insert(doc.checkpoint.clone());
        }
        Ok(v)
    }
}

/// `checkpoint_verified`: the checkpoint note's signature was verified before (the note
/// is compared byte for byte); everything else is still checked.
fn verify_inner(
    doc: &ReceiptDocument,
    ring: &KeyRing,
    origin: Option<&str>,
    checkpoint_verified: bool,
) -> Result<VerifiedReceipt, ReceiptError> {
    // The signatures in one batch check (cheaper than one by one); if it fails, each is
    // checked alone below, which names the one that is bad.
    let batched = batch_signatures(doc, ring, !checkpoint_verified);
    let check = !batched;
    let (receipt, _): (ReceiptPayload, _) =
        verify_as_with(&doc.receipt, ring, TYP_RECEIPT, check).map_err(ReceiptError::Receipt)?;
    let (mandate, _) = Mandate::verify_with(&doc.mandate, ring, check).map_err(ReceiptError::Mandate)?;
    if receipt.reference != token_reference(&doc.mandate) || receipt.payment_id != mandate.transaction_id {
        return Err(ReceiptError::ReferenceMismatch);
    }
    let leaf = B64.decode(&doc.leaf).map_err(|_| ReceiptError::Leaf("not base64url"))?;
    let leaf_json: serde_json::Value = serde_json::from_slice(&leaf).map_err(|_| ReceiptError::Leaf("not JSON"))?;
    let recorded = match receipt.kind {
        ReceiptKind::MandateRecorded => {
            leaf_json.pointer("/data/mandate").and_then(|v| v.as_str()) == Some(doc.mandate.as_str())
        }
        ReceiptKind::PaymentSettled | ReceiptKind::PaymentFailed => leaf_json
            .pointer("/data/mandate_ids")
            .and_then(|v| v.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(&mandate.transaction_id))),
    };
    if !recorded {
        return Err(ReceiptError::Leaf("the leaf does not name this mandate"));
    }
    let (cp, _) = Checkpoint::verify_with(&doc.checkpoint, ring, origin, check && !checkpoint_verified)
        .map_err(ReceiptError::Checkpoint)?;
    if cp.size != receipt.tree_size || hex::encode(cp.root) != receipt.root {
        return Err(ReceiptError::CheckpointMismatch { receipt_size: receipt.tree_size, checkpoint_size: cp.size });
    }
    let path = decode_hashes(&doc.inclusion).map_err(ReceiptError::BadHash)?;
    merkle::verify_inclusion(receipt.leaf_index, cp.size, &merkle::leaf_hash(&leaf), &path, &cp.root)
        .map_err(ReceiptError::Inclusion)?;
    Ok(VerifiedReceipt { receipt, mandate, checkpoint: cp })
}

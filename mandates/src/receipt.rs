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
use crate::types::{
    Mandate, ReceiptKind, ReceiptPayload, SignedError, TYP_RECEIPT, decode_as, token_reference, verify_as_with,
};

/// A receipt as handed to a partner (one JSON object; a line of `receipts.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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

/// One signature a receipt carries: the signed bytes, the signature and the key.
type SignatureCheck<'d> = (std::borrow::Cow<'d, [u8]>, ed25519_dalek::Signature, ed25519_dalek::VerifyingKey);

/// A receipt's two tokens, parsed once.
#[derive(Debug)]
struct Tokens<'d> {
    receipt: crate::jws::Parsed<'d>,
    mandate: crate::jws::Parsed<'d>,
}

/// The receipt's and mandate's signatures, and the checkpoint's if `with_checkpoint`,
/// appended to `out`, with the tokens parsed; None (and `out` unchanged) if a part does
/// not parse or names a key outside `ring` (the one-by-one checks then say which).
fn signatures<'d>(
    doc: &'d ReceiptDocument,
    ring: &KeyRing,
    with_checkpoint: bool,
    out: &mut Vec<SignatureCheck<'d>>,
) -> Option<Tokens<'d>> {
    let r = crate::jws::parse(&doc.receipt, TYP_RECEIPT).ok()?;
    let m = crate::jws::parse(&doc.mandate, Mandate::token_typ(&doc.mandate).ok()?).ok()?;
    let ((_, rk), (_, mk)) = (ring.get(&r.header.kid)?, ring.get(&m.header.kid)?);
    let checkpoint = if with_checkpoint {
        let (body, cs, ck) = Checkpoint::signed_by(&doc.checkpoint, ring)?;
        Some((body.into_bytes().into(), cs, *ck))
    } else {
        None
    };
    out.push((r.signing_input.into(), r.signature, *rk));
    out.push((m.signing_input.into(), m.signature, *mk));
    out.extend(checkpoint);
    Some(Tokens { receipt: r, mandate: m })
}

/// One Ed25519 batch check of `sigs`: true only if every one verifies.
fn batch_verifies(sigs: &[SignatureCheck<'_>]) -> bool {
    let msgs: Vec<&[u8]> = sigs.iter().map(|(m, _, _)| m.as_ref()).collect();
    let s: Vec<ed25519_dalek::Signature> = sigs.iter().map(|(_, s, _)| *s).collect();
    let k: Vec<ed25519_dalek::VerifyingKey> = sigs.iter().map(|(_, _, k)| *k).collect();
    ed25519_dalek::verify_batch(&msgs, &s, &k).is_ok()
}

/// Verifies a receipt document against the vendor's keys; `origin` pins the log identity.
pub fn verify_receipt(
    doc: &ReceiptDocument,
    ring: &KeyRing,
    origin: Option<&str>,
) -> Result<VerifiedReceipt, ReceiptError> {
    verify_inner(doc, ring, origin, Signatures::Unchecked { checkpoint_known: false })
}

/// Receipts a [`ReceiptVerifier::verify_all`] checks with one batch signature check.
pub const RECEIPT_BATCH: usize = 64;

/// Verifies many receipts with one key set, remembering the checkpoints it has already
/// verified: a partner checking a file of receipts against one checkpoint pays for the
/// checkpoint's signature once. Same outcomes as [`verify_receipt`].
#[derive(Debug, Clone)]
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
        let v =
            verify_inner(doc, self.ring, self.origin.as_deref(), Signatures::Unchecked { checkpoint_known: known })?;
        if !known {
            self.remember(&doc.checkpoint);
        }
        Ok(v)
    }

    /// Verifies a run of receipts, one outcome per document in order, each the same as
    /// [`ReceiptVerifier::verify`] would give. The signatures of up to [`RECEIPT_BATCH`]
    /// receipts (and of each checkpoint not verified before) are checked together in one
    /// Ed25519 batch check, which costs a fraction of checking them one by one; if that
    /// check fails, the receipts of the batch are verified one by one, so the outcome
    /// still names what is wrong with each.
    pub fn verify_all(&mut self, docs: &[ReceiptDocument]) -> Vec<Result<VerifiedReceipt, ReceiptError>> {
        let mut out = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(RECEIPT_BATCH) {
            let mut sigs = Vec::with_capacity(2 * chunk.len() + 1);
            let mut new_checkpoints: Vec<&str> = Vec::new();
            let mut parsed = Vec::with_capacity(chunk.len());
            for d in chunk {
                let known = self.verified.contains(&d.checkpoint) || new_checkpoints.contains(&d.checkpoint.as_str());
                let Some(tokens) = signatures(d, self.ring, !known, &mut sigs) else { break };
                parsed.push(tokens);
                if !known {
                    new_checkpoints.push(&d.checkpoint);
                }
            }
            if parsed.len() == chunk.len() && batch_verifies(&sigs) {
                for cp in new_checkpoints {
                    self.remember(cp);
                }
                let origin = self.origin.as_deref();
                out.extend(
                    chunk
                        .iter()
                        .zip(parsed)
                        .map(|(d, t)| verify_inner(d, self.ring, origin, Signatures::Checked(Box::new(t)))),
                );
            } else {
                out.extend(chunk.iter().map(|d| self.verify(d)));
            }
        }
        out
    }

    fn remember(&mut self, checkpoint: &str) {
        if self.verified.len() < MAX_REMEMBERED_CHECKPOINTS {
            self.verified.insert(checkpoint.to_owned());
        }
    }
}

/// What is known of a receipt's signatures before [`verify_inner`] looks at it.
#[derive(Debug)]
enum Signatures<'d> {
    /// All three were verified by a batch check over the same bytes, which parsed these
    /// tokens.
    Checked(Box<Tokens<'d>>),
    /// None yet; `checkpoint_known`: the checkpoint note (compared byte for byte) was
    /// verified before.
    Unchecked { checkpoint_known: bool },
}

/// Everything a receipt claims is checked; signatures as `sigs` says.
fn verify_inner<'d>(
    doc: &'d ReceiptDocument,
    ring: &KeyRing,
    origin: Option<&str>,
    sigs: Signatures<'d>,
) -> Result<VerifiedReceipt, ReceiptError> {
    let (receipt, mandate, checkpoint_checked) = match sigs {
        Signatures::Checked(t) => {
            let receipt = crate::jws::already_verified(t.receipt, ring)
                .map_err(SignedError::from)
                .and_then(|v| decode_as::<ReceiptPayload>(&v))
                .map_err(ReceiptError::Receipt)?;
            let mandate = crate::jws::already_verified(t.mandate, ring)
                .map_err(SignedError::from)
                .and_then(|v| decode_as::<Mandate>(&v))
                .map_err(ReceiptError::Mandate)?;
            (receipt, mandate, true)
        }
        Signatures::Unchecked { checkpoint_known } => {
            // The signatures in one batch check (cheaper than one by one); if it fails,
            // each is checked alone below, which names the one that is bad.
            let mut batch = Vec::with_capacity(3);
            let check = !(signatures(doc, ring, !checkpoint_known, &mut batch).is_some() && batch_verifies(&batch));
            let (receipt, _): (ReceiptPayload, _) =
                verify_as_with(&doc.receipt, ring, TYP_RECEIPT, check).map_err(ReceiptError::Receipt)?;
            let (mandate, _) = Mandate::verify_with(&doc.mandate, ring, check).map_err(ReceiptError::Mandate)?;
            (receipt, mandate, !check || checkpoint_known)
        }
    };
    if receipt.reference != token_reference(&doc.mandate) || receipt.payment_id != mandate.transaction_id {
        return Err(ReceiptError::ReferenceMismatch);
    }
    let leaf = B64.decode(&doc.leaf).map_err(|_| ReceiptError::Leaf("not base64url"))?;
    let leaf_json: serde_json::Value = serde_json::from_slice(&leaf).map_err(|_| ReceiptError::Leaf("not JSON"))?;
    let recorded = match receipt.kind {
        ReceiptKind::MandateRecorded => {
            leaf_json.pointer("/data/mandate").and_then(|v| v.as_str()) == Some(doc.mandate.as_str())
        }
        ReceiptKind::PaymentSettled | ReceiptKind::PaymentFailed => {
            let want =
                if receipt.kind == ReceiptKind::PaymentSettled { "mandate_paid" } else { "mandate_payment_failed" };
            leaf_json.get("type").and_then(|v| v.as_str()) == Some(want)
                && leaf_json.pointer("/data/mandate_id").and_then(|v| v.as_str())
                    == Some(mandate.transaction_id.as_str())
        }
    };
    if !recorded {
        return Err(ReceiptError::Leaf("the leaf does not name this mandate"));
    }
    let (cp, _) = Checkpoint::verify_with(&doc.checkpoint, ring, origin, !checkpoint_checked)
        .map_err(ReceiptError::Checkpoint)?;
    if cp.size != receipt.tree_size || hex::encode(cp.root) != receipt.root {
        return Err(ReceiptError::CheckpointMismatch { receipt_size: receipt.tree_size, checkpoint_size: cp.size });
    }
    let path = decode_hashes(&doc.inclusion).map_err(ReceiptError::BadHash)?;
    merkle::verify_inclusion(receipt.leaf_index, cp.size, &merkle::leaf_hash(&leaf), &path, &cp.root)
        .map_err(ReceiptError::Inclusion)?;
    Ok(VerifiedReceipt { receipt, mandate, checkpoint: cp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Jwks, SigningKey};
    use crate::money::{Amount, Currency};
    use crate::types::{Direction, Instrument, LogRef, MandateBasis, Payee, Signed, Status, VCT_PAYMENT_MANDATE};

    fn usd(minor: i64) -> Amount {
        let c: Currency = "USD".parse().unwrap();
        Amount::from_minor(minor, c).unwrap()
    }

    fn mandate() -> Mandate {
        Mandate {
            basis: MandateBasis {
                caused_by: "agent:crm".into(),
                conversion: "deal-1".into(),
                hop: 0,
                hops: 1,
                log: LogRef { event_hash: "00".repeat(32), seq: 0 },
                open_mandate: "om_p_0".into(),
                pool: usd(1000),
                program: "p".into(),
                reverses: None,
                dispute: None,
                role: "sole".into(),
                rounding: "largest_remainder.v1+pool.half_even".into(),
                rule_version: 1,
            },
            direction: Direction::Payment,
            execution_date: 1_767_225_600,
            iat: 1_767_225_600,
            iss: "vendor".into(),
            payee: Payee { id: "p01".into() },
            payment_amount: usd(1000),
            payment_instrument: Instrument { id: "p01".into(), kind: "settle.commission_account".into() },
            salt: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            transaction_id: "md_0_0".into(),
            vct: VCT_PAYMENT_MANDATE.into(),
        }
    }

    /// A receipt the vendor's key signed for a one-leaf log, with `leaf_index` as given.
    fn receipt(key: &SigningKey, leaf_index: u64) -> ReceiptDocument {
        let token = mandate().sign(key);
        let leaf = serde_json::json!({"data": {"mandate": token}, "type": "mandate_issued", "v": 1}).to_string();
        let root = merkle::leaf_hash(leaf.as_bytes());
        let cp = Checkpoint { origin: "settle.test/log".into(), size: 1, root, time: 1_767_225_600 };
        let payload = ReceiptPayload {
            error: None,
            error_description: None,
            iat: 1_767_225_600,
            iss: "vendor".into(),
            kind: ReceiptKind::MandateRecorded,
            leaf_index,
            network_confirmation_id: None,
            payment_id: "md_0_0".into(),
            psp_confirmation_id: None,
            rail: None,
            reference: token_reference(&token),
            root: hex::encode(root),
            status: Status::Success,
            tree_size: 1,
            vct: crate::types::VCT_RECEIPT.into(),
        };
        ReceiptDocument {
            receipt: payload.sign(key),
            mandate: token,
            leaf: B64.encode(leaf.as_bytes()),
            inclusion: Vec::new(),
            checkpoint: cp.sign(key),
        }
    }

    /// RFC 9162 §2.1.3.2 starts with "fail if leaf_index ≥ tree_size": without it, a
    /// receipt of a one-leaf tree pointing at leaf 1 (past the tree), whose empty path
    /// leads from the leaf to the root, would pass. Signed by the vendor's own key, it is
    /// still refused, one by one and in a batch.
    #[test]
    fn a_receipt_pointing_past_its_tree_is_refused_even_when_the_vendor_signed_it() {
        let key = SigningKey::from_seed(&[4; 32]);
        let ring = KeyRing::new(&Jwks { keys: vec![key.to_jwk(None, None)] }).unwrap();
        let good = receipt(&key, 0);
        verify_receipt(&good, &ring, Some("settle.test/log")).unwrap();
        for index in [1, 2, 7] {
            let past = receipt(&key, index);
            let want = Err(ReceiptError::Inclusion(ProofError::OutOfRange { index, size: 1 }));
            assert_eq!(verify_receipt(&past, &ring, None).map(|v| v.receipt.leaf_index), want);
            let batch = ReceiptVerifier::new(&ring, None).verify_all(&[good.clone(), past]);
            assert!(batch[0].is_ok());
            assert_eq!(batch[1].as_ref().map(|v| v.receipt.leaf_index).map_err(Clone::clone), want);
        }
    }
}

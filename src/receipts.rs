//! Receipts: one builder for a single receipt (what the API answers for one mandate) and
//! for every receipt of the log (what an export writes). A receipt binds one record about
//! one mandate (its issue, or a rail's outcome for it) to its Merkle leaf, an inclusion
//! proof and a signed checkpoint, so a partner verifies it offline with the vendor's
//! JWKS alone.

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use rayon::prelude::*;
use settle_engine::model::EventKind;
use settle_engine::{Envelope, Event};
use settle_ledger::{Ledger, Record, SignedCheckpoint};
use settle_mandates::keys::SigningKey;

use crate::keystore::KeyFile;
use settle_mandates::receipt::ReceiptDocument;
use settle_mandates::types::{ReceiptKind, ReceiptPayload, Signed, Status, VCT_RECEIPT, token_reference};

/// Receipts signed and written together: at most this many, and ...
const RECEIPT_CHUNK: usize = 2048;
/// ... at most this many leaf bytes (each receipt carries its leaf in base64: a bound on
/// a chunk's memory whatever the events' sizes).
const RECEIPT_CHUNK_BYTES: usize = 8 << 20;

/// Who issues receipts, and against what: the vendor, its signing key, the time they
/// are issued at, and the signed checkpoint they prove against.
pub struct Issuer<'a> {
    /// The vendor's id (`iss`).
    pub vendor: &'a str,
    /// The key that signs them.
    pub key: &'a SigningKey,
    /// When (see [`issued_at`]).
    pub iat: i64,
    /// The checkpoint the inclusion proofs end at.
    pub cp: &'a SignedCheckpoint,
}

impl<'a> Issuer<'a> {
    /// The vendor of `keys` signing with `key`, its current key, at `cp`.
    #[must_use]
    pub fn current(keys: &'a KeyFile, key: &'a SigningKey, cp: &'a SignedCheckpoint) -> Self {
        Self { vendor: &keys.vendor, key, iat: issued_at(cp.checkpoint.time, keys.current_valid_from()), cp }
    }
}

/// A rail's word on a mandate, for the receipt of its payment's outcome.
pub struct RailOutcome {
    /// The rail.
    pub rail: String,
    /// Its confirmation id (paid) or error (failed).
    pub said: String,
    /// Paid, or failed.
    pub paid: bool,
}

/// What a receipt is about: the record at `seq` about mandate `mandate_id`.
#[derive(Clone, Copy)]
pub struct About<'a> {
    /// The record's log position (its leaf index).
    pub seq: u64,
    /// The mandate's id.
    pub mandate_id: &'a str,
    /// The signed mandate (compact JWS).
    pub mandate: &'a str,
    /// `None`: the mandate's issue; else the rail's outcome recorded at `seq`.
    pub rail: Option<&'a RailOutcome>,
}

/// When a receipt is issued: at its checkpoint's time, or when the signing key became
/// valid if that is later (after a key rotation), so the receipt's key is valid at `iat`.
#[must_use]
fn issued_at(checkpoint_time: i64, key_valid_from: Option<i64>) -> i64 {
    key_valid_from.map_or(checkpoint_time, |v| v.max(checkpoint_time))
}

/// The payload of the receipt of `about`, issued by `by`.
fn payload(by: &Issuer<'_>, about: About<'_>) -> ReceiptPayload {
    let (kind, status, psp, rail, error) = match about.rail {
        None => (ReceiptKind::MandateRecorded, Status::Success, None, None, None),
        Some(RailOutcome { rail, said, paid: true }) => {
            (ReceiptKind::PaymentSettled, Status::Success, Some(said.clone()), Some(rail.clone()), None)
        }
        Some(RailOutcome { rail, said, paid: false }) => {
            (ReceiptKind::PaymentFailed, Status::Error, None, Some(rail.clone()), Some(said.clone()))
        }
    };
    ReceiptPayload {
        vct: VCT_RECEIPT.into(),
        status,
        iss: by.vendor.into(),
        iat: by.iat,
        reference: token_reference(about.mandate),
        payment_id: about.mandate_id.into(),
        psp_confirmation_id: psp,
        network_confirmation_id: None,
        error_description: error.as_ref().map(|e| format!("rail reported {e}")),
        error,
        kind,
        rail,
        leaf_index: about.seq,
        tree_size: by.cp.checkpoint.size,
        root: hex::encode(by.cp.checkpoint.root),
    }
}

/// The signed receipt document of `about`, whose record's bytes are `leaf`.
fn document(ledger: &Ledger, by: &Issuer<'_>, about: About<'_>, leaf: &[u8]) -> Result<ReceiptDocument> {
    let proof = ledger.inclusion_proof(about.seq, by.cp.checkpoint.size)?;
    Ok(ReceiptDocument {
        receipt: payload(by, about).sign(by.key),
        mandate: about.mandate.to_owned(),
        leaf: B64.encode(leaf),
        inclusion: proof.iter().map(|h| B64STD.encode(h)).collect(),
        checkpoint: by.cp.note.clone(),
    })
}

/// A mandate's issue as the log holds it: its record, the signed mandate and its payee.
pub struct MandateRecord {
    /// The record (`mandate_issued`, `clawback_issued` or `adjustment_issued`).
    pub record: Record,
    /// The signed mandate (compact JWS).
    pub mandate: String,
    /// Its payee.
    pub partner: String,
}

/// The log record of mandate `id` (payment `md_<seq>_<hop>`, clawback `cb_<seq>_<hop>` or
/// adjustment `aj_<seq>_<n>`), among the few records after the fact at `<seq>`.
pub fn mandate_record(ledger: &Ledger, id: &str) -> Result<Option<MandateRecord>> {
    // A payment mandate follows its conversion (or the release of a held one), a clawback
    // its refund, an adjustment its dispute's resolution: at most one per hop (a
    // partner of the chain), in order (a hop owed nothing has none).
    let Some((rseq, _)) = ["md_", "cb_", "aj_"].iter().find_map(|p| id.strip_prefix(p)).and_then(|r| r.split_once('_'))
    else {
        return Ok(None);
    };
    let Ok(rseq) = rseq.parse::<u64>() else { return Ok(None) };
    for seq in rseq.saturating_add(1)..rseq.saturating_add(1 + settle_engine::model::MAX_HOPS as u64) {
        let Some(record) = ledger.record(seq)? else { break };
        match Envelope::from_bytes(&record.event)?.event {
            Event::MandateIssued { mandate_id, mandate, partner, .. }
            | Event::ClawbackIssued { mandate_id, mandate, partner, .. }
            | Event::AdjustmentIssued { mandate_id, mandate, partner, .. }
                if mandate_id == id =>
            {
                return Ok(Some(MandateRecord { record, mandate, partner }));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The receipt of mandate `m`'s issue, issued by `by`.
pub fn receipt(ledger: &Ledger, by: &Issuer<'_>, m: &MandateRecord, mandate_id: &str) -> Result<ReceiptDocument> {
    let about = About { seq: m.record.seq, mandate_id, mandate: &m.mandate, rail: None };
    document(ledger, by, about, &m.record.event)
}

/// One receipt to build: its payee, what it is about (owned), and its leaf's bytes.
struct Pending {
    partner: String,
    seq: u64,
    mandate_id: String,
    mandate: String,
    rail: Option<RailOutcome>,
    leaf: Vec<u8>,
}

impl Pending {
    fn about(&self) -> About<'_> {
        About { seq: self.seq, mandate_id: &self.mandate_id, mandate: &self.mandate, rail: self.rail.as_ref() }
    }
}

/// The receipt to build for record `r`, if it has one: a mandate's issue, or a rail's
/// outcome for one mandate (its leaf is that record: one per mandate, so a receipt stays
/// small whatever the size of the settlement).
fn pending(ledger: &Ledger, r: &Record) -> Result<Option<Pending>> {
    let kind = EventKind::parse(&r.kind);
    if !matches!(
        kind,
        Some(
            EventKind::MandateIssued
                | EventKind::ClawbackIssued
                | EventKind::AdjustmentIssued
                | EventKind::MandatePaid
                | EventKind::MandatePaymentFailed
        )
    ) {
        return Ok(None);
    }
    let leaf = r.event.as_slice().to_vec();
    Ok(match Envelope::from_bytes(&r.event)?.event {
        Event::MandateIssued { mandate_id, partner, mandate, .. }
        | Event::ClawbackIssued { mandate_id, partner, mandate, .. }
        | Event::AdjustmentIssued { mandate_id, partner, mandate, .. } => {
            Some(Pending { partner, seq: r.seq, mandate_id, mandate, rail: None, leaf })
        }
        Event::MandatePaid { mandate_id, rail, confirmation_id: said, .. }
        | Event::MandatePaymentFailed { mandate_id, rail, error: said, .. } => {
            let paid = kind == Some(EventKind::MandatePaid);
            let Some(m) = mandate_record(ledger, &mandate_id)? else {
                bail!("settlement outcome at seq {} names unknown mandate {mandate_id}", r.seq)
            };
            let rail = Some(RailOutcome { rail, said, paid });
            Some(Pending { partner: m.partner, seq: r.seq, mandate_id, mandate: m.mandate, rail, leaf })
        }
        _ => None,
    })
}

/// Builds every receipt the log holds up to `by`'s checkpoint, calling `out` with
/// (partner, receipt) in log order. Signing runs on all cores in chunks.
pub fn receipts(
    ledger: &Ledger,
    by: &Issuer<'_>,
    mut out: impl FnMut(&str, &ReceiptDocument) -> Result<()>,
) -> Result<u64> {
    let mut n = 0u64;
    let mut chunk: Vec<Pending> = Vec::new();
    let mut chunk_bytes = 0usize;
    let mut flush = |chunk: &mut Vec<Pending>| -> Result<()> {
        let docs: Vec<Result<ReceiptDocument>> =
            chunk.par_iter().map(|p| document(ledger, by, p.about(), &p.leaf)).collect();
        for (p, d) in chunk.drain(..).zip(docs) {
            out(&p.partner, &d?)?;
        }
        Ok(())
    };
    for r in ledger.records(0) {
        let r = r?;
        if r.seq >= by.cp.checkpoint.size {
            break;
        }
        if let Some(p) = pending(ledger, &r)? {
            chunk_bytes += p.leaf.len();
            chunk.push(p);
            n += 1;
        }
        if chunk.len() >= RECEIPT_CHUNK || chunk_bytes >= RECEIPT_CHUNK_BYTES {
            flush(&mut chunk)?;
            chunk_bytes = 0;
        }
    }
    flush(&mut chunk)?;
    Ok(n)
}

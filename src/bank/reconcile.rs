//! Reconciliation: a bank's `camt.054` notification applied to the payout batches on the
//! bank rail. Each booked payment matched by its end-to-end id pays its batch
//! (`settlement_confirmed`, the bank's reference as the confirmation: one `mandate_paid`
//! per mandate); each return, with its ISO reason code, fails it or, if it was paid,
//! returns it (`settlement_failed`: `mandate_payment_failed` per mandate, the money
//! payable again). What matches nothing, is pending, or disagrees with the batch (another
//! amount or currency) is reported and changes nothing: never guessed. A notification is
//! applied once: its report is kept under its message id, and the same file again changes
//! nothing and answers that report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use settle_engine::Event;
use settle_engine::model::BANK_RAIL;
use settle_engine::state::BatchStatus;
use sha2::{Digest, Sha256};

use super::camt054::{self, Item};
use super::{bank_batch, pain001};
use crate::error::{Error, Kind};
use crate::service::{Service, Submit, SubmitError, by_mandates};

/// What became of one reported transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Booked: the batch is paid.
    Paid,
    /// Returned before the batch was paid: its mandates are payable again.
    Failed,
    /// Returned after it was paid: the money is payable again.
    Returned,
    /// Pending or for information: nothing changes until it is booked.
    Pending,
    /// Matches no payout batch on the bank rail: nothing changes.
    Unmatched,
    /// Disagrees with its batch (amount, currency, or what was recorded before):
    /// nothing changes.
    Mismatch,
    /// Says what was recorded already: nothing changes.
    Already,
}

/// One reported transaction and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Line {
    /// The end-to-end id reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
    /// The amount reported.
    pub amount: String,
    /// Its currency.
    pub currency: String,
    /// The entry's status (`BOOK`, `PDNG`, ...).
    pub status: String,
    /// What became of it.
    pub outcome: Outcome,
    /// The payout batch it matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    /// That batch's partner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// How many mandates it paid or failed.
    pub mandates: usize,
    /// The bank's reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank_reference: Option<String>,
    /// A return's ISO reason code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The settlement recorded, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settlement: Option<String>,
    /// Why nothing changed, where nothing did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a notification did.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "ReconciliationReport")]
pub struct Report {
    /// The notification's message id.
    pub message_id: String,
    /// Its version (`camt.054.001.02` or `camt.054.001.08`).
    pub version: String,
    /// The SHA-256 of the document (hex): another document under the same message id
    /// is refused.
    pub document_sha256: String,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
    /// True when this notification had been applied before: this is that report, and
    /// nothing changed now.
    pub already_applied: bool,
    /// Counts by outcome.
    pub counts: BTreeMap<String, usize>,
    /// Every transaction reported, in the notification's order.
    pub lines: Vec<Line>,
}

/// Where the report of notification `message_id` is kept.
fn report_key(message_id: &str) -> Vec<u8> {
    format!("bank/camt054/{}", hex::encode(Sha256::digest(message_id.as_bytes()))).into_bytes()
}

/// The id of the settlement item `n` of notification `message_id` records (also its
/// idempotency key): `camt054:`, the message id (or, if it holds other characters than
/// an id may, 32 hex digits of its SHA-256) and `n`.
fn settlement_id(message_id: &str, n: usize) -> String {
    format!("camt054:{}:{n}", pain001::id_or_digest(message_id, 64, b"._-", ""))
}

/// Applies notification `xml` in the name of `by` at `now` (see the module's doc).
pub fn reconcile(svc: &Service, xml: &[u8], by: &str, now: DateTime<Utc>) -> Result<Report, Error> {
    svc.writable()?;
    let n = camt054::parse(xml)?;
    let key = report_key(&n.message_id);
    let document = hex::encode(Sha256::digest(xml));
    if let Some(v) = svc.ledger().aux_get(&key).map_err(Error::internal)? {
        let mut r: Report = serde_json::from_slice(&v).map_err(Error::internal)?;
        if r.document_sha256 != document {
            return Err(Error::new(
                Kind::Conflict,
                format!(
                    "another notification with message id '{}' was applied at {}: a bank's message id names one notification",
                    n.message_id, r.applied_at
                ),
            ));
        }
        r.already_applied = true;
        return Ok(r);
    }
    // The end-to-end ids of the bank rail's batches.
    let by_e2e: BTreeMap<String, String> = svc.with_state(|s| {
        s.batches
            .iter()
            .filter(|(_, b)| b.rail == BANK_RAIL)
            .map(|(id, _)| (pain001::end_to_end_id(id), id.clone()))
            .collect()
    });
    let mut lines = Vec::with_capacity(n.items.len());
    // The facts to record, each with its line and the mandates it names; and what they
    // make of each batch (a payment and its return may come in one notification).
    let mut planned: Vec<(usize, Submit, usize)> = Vec::new();
    let mut now_status: BTreeMap<String, BatchStatus> = BTreeMap::new();
    for (i, item) in n.items.iter().enumerate() {
        let mut line = Line {
            end_to_end_id: item.end_to_end_id.clone(),
            amount: item.amount.0.clone(),
            currency: item.amount.1.clone(),
            status: item.status.clone(),
            outcome: Outcome::Unmatched,
            batch: None,
            partner: None,
            mandates: 0,
            bank_reference: item.bank_reference.clone(),
            reason: item.return_reason.clone(),
            settlement: None,
            detail: None,
        };
        let Some(batch_id) = item.end_to_end_id.as_ref().and_then(|e| by_e2e.get(e)) else {
            line.detail = Some(
                if item.end_to_end_id.is_some() {
                    "no payout batch on the bank rail has this end-to-end id"
                } else {
                    "the entry names no end-to-end id"
                }
                .into(),
            );
            lines.push(line);
            continue;
        };
        let b = bank_batch(svc, batch_id)?;
        line.batch = Some(b.id.clone());
        line.partner = Some(b.partner.clone());
        let (outcome, detail) = judge(item, &b, *now_status.get(&b.id).unwrap_or(&b.status));
        line.outcome = outcome;
        line.detail = detail;
        let after = match outcome {
            Outcome::Paid => BatchStatus::Paid,
            Outcome::Failed => BatchStatus::Failed,
            Outcome::Returned => BatchStatus::Returned,
            _ => {
                lines.push(line);
                continue;
            }
        };
        let settlement = settlement_id(&n.message_id, i);
        let (partner, rail, mandate_ids, batch) =
            (b.partner.clone(), BANK_RAIL.to_owned(), b.mandate_ids.clone(), Some(b.id.clone()));
        let event = if outcome == Outcome::Paid {
            let confirmation_id = item.bank_reference.clone().unwrap_or_else(|| format!("{}#{i}", n.message_id));
            line.bank_reference = Some(confirmation_id.clone());
            Event::SettlementConfirmed {
                settlement: settlement.clone(),
                batch,
                partner,
                rail,
                mandate_ids,
                confirmation_id,
            }
        } else {
            let error = item.return_reason.clone().unwrap_or_else(|| "NARR".into());
            Event::SettlementFailed { settlement: settlement.clone(), batch, partner, rail, mandate_ids, error }
        };
        line.settlement = Some(settlement.clone());
        now_status.insert(b.id.clone(), after);
        planned.push((
            lines.len(),
            Submit { key: settlement, by: by.to_owned(), at: now, event, request: None },
            b.mandate_ids.len(),
        ));
        lines.push(line);
    }
    // Recorded in order, a group commit per group of them; what the engine refuses is
    // reported.
    let (meta, subs): (Vec<(usize, usize)>, Vec<Submit>) = planned.into_iter().map(|(l, s, m)| ((l, m), s)).unzip();
    let mut meta = meta.into_iter();
    for group in by_mandates(subs) {
        // The answers first: a zip takes nothing more from `meta` once they end.
        for (r, (l, mandates)) in svc.submit_blocking(group).into_iter().zip(meta.by_ref()) {
            let line = &mut lines[l];
            match r {
                Ok(_) => line.mandates = mandates,
                Err(SubmitError::Rejected(r)) => {
                    line.outcome = Outcome::Mismatch;
                    line.detail = Some(r.to_string());
                    line.settlement = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut counts = BTreeMap::new();
    for l in &lines {
        *counts.entry(name(l.outcome)).or_insert(0) += 1;
    }
    let report = Report {
        message_id: n.message_id,
        version: n.version.into(),
        document_sha256: document,
        applied_at: now,
        already_applied: false,
        counts,
        lines,
    };
    svc.ledger()
        .aux_put(&key, &serde_json::to_vec(&report).map_err(Error::internal)?, true)
        .map_err(Error::internal)?;
    Ok(report)
}

/// What a reported transaction does to batch `b`, which is `status` now.
fn judge(item: &Item, b: &super::BankBatch, status: BatchStatus) -> (Outcome, Option<String>) {
    if !item.booked() {
        return (Outcome::Pending, Some(format!("the entry is {}, not booked", item.status)));
    }
    let (value, currency) = &item.amount;
    let same_amount = currency == b.amount.currency().code()
        && settle_mandates::money::Amount::parse(value, b.amount.currency(), settle_mandates::money::Sign::NonNegative)
            .is_ok_and(|a| a == b.amount);
    if !same_amount {
        return (Outcome::Mismatch, Some(format!("the batch pays {}, the bank reported {value} {currency}", b.amount)));
    }
    match (item.returned(), status) {
        (false, BatchStatus::Open) => (Outcome::Paid, None),
        (true, BatchStatus::Open) => (Outcome::Failed, None),
        (true, BatchStatus::Paid) => (Outcome::Returned, None),
        (false, BatchStatus::Paid) | (true, BatchStatus::Failed | BatchStatus::Returned) => {
            (Outcome::Already, Some(format!("payout batch '{}' is already {}", b.id, name(status))))
        }
        (false, s) => {
            (Outcome::Mismatch, Some(format!("payout batch '{}' was {} before the bank booked it", b.id, name(s))))
        }
    }
}

/// A status or outcome by its name on the wire (`paid`, `returned`, ...).
pub fn name(s: impl Serialize) -> String {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

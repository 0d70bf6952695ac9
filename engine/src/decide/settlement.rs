//! Deciding payouts: a payout batch of a partner's payable mandates sent to a rail, and a
//! rail's answer, a settlement paid or failed (of named mandates, or of a whole batch), or
//! a bank's return of a batch it paid; one record per mandate paid or not, the leaf of a
//! partner's receipt.

use std::collections::BTreeSet;

use settle_mandates::money::{Amount, Currency};

use super::{Apply, Decider};
use crate::book::{Account, Book};
use crate::decision::Rejection;
use crate::ids::parse_mandate_id;
use crate::model::{BANK_RAIL, Event, MAX_SETTLEMENT_MANDATES, check_id, check_text};
use crate::records::HopStatus;
use crate::state::Payout;
use crate::state::{Batch, BatchStatus};

/// A rail's answer for a whole payout batch: the settlement, the partner paid, the rail,
/// the batch's mandates and the batch.
struct BatchAnswer {
    settlement: String,
    partner: String,
    rail: String,
    ids: Vec<String>,
    batch: String,
}

/// Payable mandates named by a settlement or batch: where each is kept, their net value
/// and currency.
type Payable = (Vec<Payout>, i64, Currency);

/// What a rail's answer settles: the settlement, the partner paid, the rail, the
/// mandates, and the payout batch they were sent in (if any).
pub(super) struct RailAnswer {
    pub(super) settlement: String,
    pub(super) partner: String,
    pub(super) rail: String,
    pub(super) ids: Vec<String>,
    pub(super) batch: Option<String>,
}

impl Decider<'_> {
    /// `payout_batched`: a new batch of some of a partner's payable mandates; what the
    /// rail is to pay, less what earlier clawbacks of paid money left owing.
    pub(super) fn batch(
        &mut self,
        batch: String,
        partner: String,
        rail: String,
        ids: Vec<String>,
    ) -> Result<Apply, Rejection> {
        check_text("rail", &rail)?;
        check_id("payout batch", &batch)?;
        if self.st.batches.contains_key(&batch) {
            return Err(Rejection::Conflict(format!("payout batch '{batch}' already exists")));
        }
        let book = self.partner_book(&partner)?;
        let (hops, net, cur) = self.payable_hops(&partner, &ids)?;
        let instrument = if rail == BANK_RAIL {
            let registered = self.st.partners.get(&partner).and_then(|p| p.instrument.clone());
            Some(registered.ok_or_else(|| {
                Rejection::Invalid(format!(
                    "partner '{partner}' has no payout instrument: register its bank account before a payout on the '{BANK_RAIL}' rail"
                ))
            })?)
        } else {
            None
        };
        // What the rail pays: the mandates' value and any credit owed beyond them, less
        // what earlier clawbacks of paid money left owing (a negative payable).
        let pays = (net + book.credit).min(book.payable_now());
        let credit = (pays - net).max(0);
        let amount = Amount::from_minor(pays, cur)?;
        let offset = Amount::from_minor((net - pays).max(0), cur)?;
        if rail == BANK_RAIL && pays == 0 {
            return Err(Rejection::Invalid(format!(
                "nothing to transfer: what earlier clawbacks of paid money left owing absorbs the whole value of these mandates (partner '{partner}')"
            )));
        }
        self.derived(
            Event::PayoutBatchCreated {
                batch: batch.clone(),
                partner: partner.clone(),
                rail: rail.clone(),
                amount,
                offset,
                credit: (credit > 0).then(|| Amount::from_minor(credit, cur)).transpose()?,
                instrument,
                mandate_ids: ids.clone(),
            },
            None,
        );
        let seq = self.seq;
        Ok(Box::new(move |s| {
            for at in &hops {
                s.set_payout_status(at, HopStatus::Batched, None);
            }
            let b = s.book(&partner);
            b.post(Account::Payable, Account::InPayout, amount.minor_units(), &partner);
            b.credit -= credit;
            for id in &ids {
                s.in_flight.insert(id.clone(), batch.clone());
            }
            let status = BatchStatus::Open;
            s.batches.insert(
                batch,
                Batch { partner, rail, mandate_ids: ids, amount, offset, clawed: 0, credit, status, seq },
            );
        }))
    }

    /// `settlement_confirmed` (`said`: the rail's confirmation id) or
    /// `settlement_failed` (the rail's error).
    pub(super) fn rail_answered(&mut self, a: RailAnswer, said: Result<String, String>) -> Result<Apply, Rejection> {
        check_text("rail", &a.rail)?;
        match &said {
            Ok(confirmation_id) => check_text("confirmation_id", confirmation_id)?,
            Err(error) => check_text("error", error)?,
        }
        self.settle(a, said)
    }

    /// A new settlement: of a payout batch, or of payable mandates named directly (paid:
    /// their value, less what earlier clawbacks of paid money left owing; failed: they
    /// stay payable).
    fn settle(&mut self, a: RailAnswer, said: Result<String, String>) -> Result<Apply, Rejection> {
        let RailAnswer { settlement, partner, rail, ids, batch } = a;
        check_id("settlement", &settlement)?;
        if self.st.settlements.contains_key(&settlement) {
            return Err(Rejection::Conflict(format!("settlement '{settlement}' is already recorded")));
        }
        if let Some(b) = batch {
            return self.settle_batch(BatchAnswer { settlement, partner, rail, ids, batch: b }, said);
        }
        let book = self.partner_book(&partner)?;
        let (hops, net, cur) = self.payable_hops(&partner, &ids)?;
        let seq = self.seq;
        if said.is_err() {
            self.per_mandate(&settlement, &partner, &rail, &ids, said);
            return Ok(Box::new(move |s| {
                s.settlements.insert(settlement, seq);
            }));
        }
        let paid = net.min(book.payable_now());
        let offset = net - paid;
        self.derived(
            Event::PayoutBooked {
                settlement: settlement.clone(),
                partner: partner.clone(),
                paid: Amount::from_minor(paid, cur)?,
                offset: Amount::from_minor(offset, cur)?,
                mandate_ids: ids.clone(),
            },
            None,
        );
        self.per_mandate(&settlement, &partner, &rail, &ids, said);
        Ok(Box::new(move |s| {
            s.settlements.insert(settlement, seq);
            for at in &hops {
                s.set_payout_status(at, HopStatus::Paid, None);
            }
            s.book(&partner).post(Account::Payable, Account::Paid, paid, &partner);
        }))
    }

    /// A rail's answer for a whole payout batch: paid (the mandates are paid) or failed
    /// (they are payable again).
    fn settle_batch(&mut self, a: BatchAnswer, said: Result<String, String>) -> Result<Apply, Rejection> {
        let b = self.answerable_batch(&a.batch, &a.partner, &a.rail, &a.ids, said.is_err())?;
        if b.status == BatchStatus::Paid {
            return self.returned(a, said);
        }
        let BatchAnswer { settlement, partner, rail, ids, batch } = a;
        let rail = rail.as_str();
        let hops = self.hops_of(&ids);
        let (amount, offset, clawed, credit) = (b.amount, b.offset, b.clawed, b.credit);
        let seq = self.seq;
        let ok = said.is_ok();
        // A bank may still return a batch it paid: its mandates stay listed until then.
        let returnable = ok && rail == BANK_RAIL;
        if ok {
            self.derived(
                Event::PayoutBooked {
                    settlement: settlement.clone(),
                    partner: partner.clone(),
                    paid: amount,
                    offset,
                    mandate_ids: ids.clone(),
                },
                None,
            );
        }
        self.per_mandate(&settlement, &partner, rail, &ids, said);
        Ok(Box::new(move |s| {
            s.settlements.insert(settlement, seq);
            let status = if ok { HopStatus::Paid } else { HopStatus::Payable };
            for at in &hops {
                s.set_payout_status(at, status, None);
            }
            if let Some(b) = s.batches.get_mut(&batch) {
                b.status = if ok { BatchStatus::Paid } else { BatchStatus::Failed };
                for id in &b.mandate_ids {
                    s.in_flight.remove(id);
                }
                // A batch answered for good is never settled again: its mandates (in the
                // log, with the batch's fact) need not stay in the state for the rest of
                // its life.
                if !returnable {
                    b.mandate_ids = Vec::new();
                }
            }
            let b = s.book(&partner);
            // Paid: what was clawed in flight is now a debt of money that left. Failed:
            // the batch's money is payable again, less what was clawed from it.
            b.clawed_in_payout -= clawed;
            let to = if ok { Account::Paid } else { Account::Payable };
            b.post(Account::InPayout, to, amount.minor_units(), &partner);
            if !ok {
                b.credit += credit;
            }
        }))
    }

    /// Where the mandates `ids` names are kept.
    fn hops_of(&self, ids: &[String]) -> Vec<Payout> {
        ids.iter().filter_map(|id| self.st.payout_item(id).map(|m| m.at)).collect()
    }

    /// A bank's return of payout batch `batch`, which it paid: the money is payable again,
    /// each mandate's payment failed (with the bank's reason), the batch returned.
    fn returned(&mut self, a: BatchAnswer, said: Result<String, String>) -> Result<Apply, Rejection> {
        let BatchAnswer { settlement, partner, rail, ids, batch } = a;
        let amount = self
            .st
            .batches
            .get(&batch)
            .map(|b| b.amount)
            .ok_or_else(|| Rejection::NotFound(format!("payout batch '{batch}'")))?;
        let hops = self.hops_of(&ids);
        let credit = self.credit_after_return(&partner, &hops, amount.minor_units());
        self.derived(
            Event::PayoutReturned {
                settlement: settlement.clone(),
                batch: batch.clone(),
                partner: partner.clone(),
                amount,
                mandate_ids: ids.clone(),
            },
            None,
        );
        self.per_mandate(&settlement, &partner, &rail, &ids, said);
        let seq = self.seq;
        Ok(Box::new(move |s| {
            s.settlements.insert(settlement, seq);
            for at in &hops {
                s.set_payout_status(at, HopStatus::Payable, Some(HopStatus::Paid));
            }
            if let Some(b) = s.batches.get_mut(&batch) {
                b.status = BatchStatus::Returned;
                b.mandate_ids = Vec::new();
            }
            let b = s.book(&partner);
            b.post(Account::Paid, Account::Payable, amount.minor_units(), &partner);
            b.credit = credit;
        }))
    }

    /// The partner's credit once a bank returned `returned` of a payout whose mandates
    /// sit at `hops`: what its payable would then hold beyond every payable mandate's
    /// value (theirs and the returned ones'). Positive when other payouts had recovered
    /// clawbacks of the returned money, a debt the return voids. It reads the partner's
    /// hops in every conversion (their payees only; a conversion of theirs is decoded),
    /// once per return: returns are rare. Its positive adjustment mandates count as its
    /// hops do.
    fn credit_after_return(&self, partner: &str, hops: &[Payout], returned: i64) -> i64 {
        let payable = self.st.books.get(partner).map_or(0, |b| b.payable + b.clawed_in_payout) + returned;
        let mut carried = 0i64;
        for (cs, i, _, _) in self.st.conversions.hops_of(0, partner) {
            let Some(h) = self.st.conversions.get(cs).and_then(|c| c.hops.get(i).cloned()) else { continue };
            let back = h.status == HopStatus::Paid && hops.contains(&Payout::Hop(cs, i));
            if h.status == HopStatus::Payable || back {
                carried += h.amount - h.clawed;
            }
        }
        for (id, a) in self.st.adjustments.iter().filter(|(_, a)| a.partner == partner) {
            let back = a.status == HopStatus::Paid && hops.contains(&Payout::Adjustment(id.clone()));
            if a.status == HopStatus::Payable || back {
                carried += a.amount.minor_units();
            }
        }
        (payable - carried).max(0)
    }

    /// Payout batch `batch` as a settlement names it: its partner, its rail and exactly
    /// its mandates, in its order; open, or (for a failure, a bank's return) paid on the
    /// `bank` rail.
    fn answerable_batch(
        &self,
        batch: &str,
        partner: &str,
        rail: &str,
        ids: &[String],
        failed: bool,
    ) -> Result<&Batch, Rejection> {
        let b = self.st.batches.get(batch).ok_or_else(|| Rejection::NotFound(format!("payout batch '{batch}'")))?;
        if b.partner != partner {
            return Err(Rejection::Invalid(format!(
                "payout batch '{batch}' pays partner '{}', not '{partner}'",
                b.partner
            )));
        }
        let returnable = failed && b.status == BatchStatus::Paid && b.rail == BANK_RAIL;
        if b.status != BatchStatus::Open && !returnable {
            return Err(Rejection::Conflict(
                format!("payout batch '{batch}' is already settled (it {:?})", b.status).to_lowercase(),
            ));
        }
        if rail != b.rail {
            return Err(Rejection::Invalid(format!("payout batch '{batch}' went to rail '{}', not '{rail}'", b.rail)));
        }
        if ids != b.mandate_ids {
            return Err(Rejection::Invalid(format!(
                "mandate_ids must list the {} mandates of payout batch '{batch}', in the batch's order",
                b.mandate_ids.len()
            )));
        }
        Ok(b)
    }

    /// The payment and positive adjustment mandates `ids` name, each `partner`'s and
    /// payable, none twice: where they are kept, what they are worth now (amount −
    /// clawed) and their currency.
    fn payable_hops(&self, partner: &str, ids: &[String]) -> Result<Payable, Rejection> {
        if ids.is_empty() || ids.len() > MAX_SETTLEMENT_MANDATES {
            return Err(Rejection::Invalid(format!("name 1..={MAX_SETTLEMENT_MANDATES} mandates")));
        }
        let mut hops = Vec::with_capacity(ids.len());
        let mut net = 0i64;
        let mut cur = None;
        let mut seen = BTreeSet::new();
        for id in ids {
            if parse_mandate_id(id).is_none() && !id.starts_with("aj_") {
                return Err(Rejection::Invalid(format!("'{id}' is not a payment or positive adjustment mandate id")));
            }
            let m = self.st.payout_item(id).ok_or_else(|| Rejection::NotFound(format!("mandate '{id}'")))?;
            if m.partner != partner {
                return Err(Rejection::Invalid(format!("mandate '{id}' pays another partner")));
            }
            if m.status != HopStatus::Payable {
                return Err(Rejection::Invalid(
                    format!("mandate '{id}' is not payable (it is {:?})", m.status).to_lowercase(),
                ));
            }
            if !seen.insert(id.as_str()) {
                return Err(Rejection::Invalid(format!("mandate '{id}' is named twice")));
            }
            if cur.is_some_and(|c| c != m.currency) {
                return Err(Rejection::Invalid(format!("mandate '{id}' is in another currency")));
            }
            cur = Some(m.currency);
            net += m.value;
            hops.push(m.at);
        }
        Ok((hops, net, cur.unwrap_or_else(|| unreachable!("ids is not empty"))))
    }

    /// The book of `partner`, who must have earned commissions.
    fn partner_book(&self, partner: &str) -> Result<Book, Rejection> {
        self.st
            .books
            .get(partner)
            .copied()
            .ok_or_else(|| Rejection::NotFound(format!("partner '{partner}' with commissions")))
    }

    /// One record per mandate a settlement paid (or failed to pay), after the booking:
    /// the leaf a partner's receipt of that payment proves.
    fn per_mandate(
        &mut self,
        settlement: &str,
        partner: &str,
        rail: &str,
        ids: &[String],
        said: Result<String, String>,
    ) {
        self.outputs.reserve(ids.len());
        for id in ids {
            let (mandate_id, settlement, partner, rail) = (id.clone(), settlement.into(), partner.into(), rail.into());
            let event = match &said {
                Ok(c) => Event::MandatePaid { mandate_id, settlement, partner, rail, confirmation_id: c.clone() },
                Err(e) => Event::MandatePaymentFailed { mandate_id, settlement, partner, rail, error: e.clone() },
            };
            self.derived(event, None);
        }
    }
}

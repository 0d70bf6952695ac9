//! Deciding a refund: how much of the conversion's revenue it refunds, and the clawbacks
//! along the whole chain that bring what the hops were paid down to the refunded
//! share of the pool.

use rust_decimal::Decimal;
use settle_mandates::money::{Amount, Rounding, Sign};
use settle_mandates::types::{Direction, LogRef, MandateBasis};

use super::{Apply, Decider};
use crate::arith;
use crate::book::Account;
use crate::decision::{Rejection, ToSign};
use crate::ids::clawback_id;
use crate::model::{Allocation, Event, ProgramSpec, RefundSize, check_id};
use crate::records::{Conversion, HopStatus, role_of};

impl Decider<'_> {
    /// `refund_recorded`: a new refund of at most what is not yet refunded of a recorded
    /// conversion; clawbacks of the hops it paid.
    pub(super) fn refund(&mut self, refund: String, conversion: String, size: RefundSize) -> Result<Apply, Rejection> {
        check_id("refund", &refund)?;
        if self.st.refunds.contains_key(&refund) {
            return Err(Rejection::Conflict(format!("refund '{refund}' is already recorded")));
        }
        let (cseq, c) = self.st.conversion(&conversion)?;
        let amount = self.refund_amount(&c, &conversion, size)?;
        let refunded_after = c.refunded + amount;
        let claws = if c.hops.is_empty() { Vec::new() } else { self.claw_back(&c, cseq, refunded_after)? };
        Ok(refunded(refund, (self.seq, super::ts(self.env.at)), cseq, refunded_after, claws))
    }

    /// What `size` refunds of conversion `c`, minor units of its revenue's currency: more
    /// than nothing, at most what is not yet refunded.
    fn refund_amount(&self, c: &Conversion, conversion: &str, size: RefundSize) -> Result<i64, Rejection> {
        let left = c.revenue.minor_units() - c.refunded;
        let cur = c.revenue.currency();
        let amount = match size {
            RefundSize::Full => left,
            RefundSize::Fraction(f) => self.refund_fraction(c, f)?,
            RefundSize::Amount(a) => {
                if a.currency() != cur {
                    return Err(Rejection::Invalid(format!(
                        "refund in {} but the conversion is in {cur}",
                        a.currency()
                    )));
                }
                a.check_sign(Sign::Positive)?;
                a.minor_units()
            }
        };
        if amount > left {
            return Err(Rejection::Invalid(format!(
                "refund of {} exceeds the {} not yet refunded",
                Amount::from_minor(amount, cur)?,
                Amount::from_minor(left, cur)?
            )));
        }
        if amount <= 0 {
            return Err(Rejection::Invalid(format!("conversion '{conversion}' is already fully refunded")));
        }
        Ok(amount)
    }

    /// A fraction `f` (0 < f ≤ 1) of conversion `c`'s revenue, by the arithmetic and
    /// rounding of its rules.
    fn refund_fraction(&self, c: &Conversion, f: Decimal) -> Result<i64, Rejection> {
        if f <= Decimal::ZERO || f > Decimal::ONE {
            return Err(Rejection::Invalid(format!("refund fraction {f} is not in (0, 1]")));
        }
        // A deal of no program (no registered lead) has no rules to name an
        // arithmetic: it rounds half-even as it always did (v1), so older logs
        // replay as they were (its pool is 0: only what is refunded depends on it).
        let (allocation, rounding) =
            self.st.programs.get(c.program.as_str()).map_or((Allocation::V1, Rounding::HalfEven), |p| {
                let spec = &p.version(c.rule_version).spec;
                (spec.allocation(), spec.pool_rounding)
            });
        let a = arith::times(allocation, c.revenue, f, c.revenue.currency(), rounding)?;
        if a.is_zero() {
            return Err(Rejection::Invalid(format!("a refund of {f} of {} rounds to nothing", c.revenue)));
        }
        Ok(a.minor_units())
    }

    /// The clawbacks of conversion `c` (recorded at `cseq`) once `refunded_after` of its
    /// revenue is refunded, one mandate each: the cumulative target is pool × refunded /
    /// revenue, by the pool rounding; the increment is split over what each hop still
    /// holds (never more). Returns (hop, amount) of each.
    fn claw_back(&mut self, c: &Conversion, cseq: u64, refunded_after: i64) -> Result<Vec<(usize, i64)>, Rejection> {
        let st = self.st;
        let spec = &st.programs[c.program.as_str()].version(c.rule_version).spec;
        let pool = c.pool.minor_units();
        let clawed: i64 = c.hops.iter().map(|h| h.clawed).sum();
        let target = arith::clawback_target(
            spec.allocation(),
            pool,
            refunded_after,
            c.revenue.minor_units(),
            c.pool.currency(),
            spec.pool_rounding,
        )?;
        let delta = (target - clawed).max(0);
        let holds: Vec<i64> = c.hops.iter().map(|h| h.amount - h.clawed).collect();
        let parts = arith::allocate_clawback(spec.allocation(), delta, &holds);
        let mut claws: Vec<(usize, i64)> = Vec::new();
        for (i, p) in parts.into_iter().enumerate() {
            if p > 0 {
                assert!(p <= c.hops[i].amount - c.hops[i].clawed, "clawback exceeds what the hop holds");
                claws.push((i, p));
            }
        }
        for &(i, p) in &claws {
            self.clawback(c, cseq, spec, i, p)?;
        }
        Ok(claws)
    }

    /// The clawback mandate of `p` from hop `i` of conversion `c` (recorded at `cseq`),
    /// priced under `spec`. What is already paid or in a payout batch is its offset: owed
    /// back out of what is payable.
    fn clawback(&mut self, c: &Conversion, cseq: u64, spec: &ProgramSpec, i: usize, p: i64) -> Result<(), Rejection> {
        let (seq, cur, n) = (self.seq, c.pool.currency(), c.hops.len());
        let h = &c.hops[i];
        let orig = c.mandate_id(cseq, i);
        let cb = clawback_id(seq, i);
        let amt = Amount::from_minor(p, cur)?;
        let committed = matches!(h.status, HopStatus::Paid | HopStatus::Batched);
        let offset = Amount::from_minor(if committed { p } else { 0 }, cur)?;
        let basis = MandateBasis {
            dispute: None,
            program: c.program.to_string(),
            rule_version: c.rule_version,
            rounding: spec.rounding_id(),
            open_mandate: self.st.programs[c.program.as_str()].open_mandate.clone(),
            conversion: c.id.to_string(),
            hop: u32::try_from(i).unwrap_or(u32::MAX),
            hops: u32::try_from(n).unwrap_or(u32::MAX),
            role: role_of(i, n).into(),
            pool: c.pool,
            log: LogRef { seq, event_hash: self.event_hash() },
            caused_by: self.env.by.clone(),
            reverses: Some(orig.clone()),
        };
        let m = self.mandate(Direction::Clawback, &cb, &h.partner, amt, super::ts(self.env.at), basis);
        self.derived(
            Event::ClawbackIssued {
                mandate_id: cb,
                reverses: orig,
                partner: h.partner.to_string(),
                amount: amt,
                offset,
                mandate: String::new(),
            },
            Some(ToSign::Mandate(Box::new(m))),
        );
        Ok(())
    }
}

/// The change a refund makes: the refund recorded at `seq` and `at` (Unix seconds), what
/// is refunded of the conversion at `cseq`, and each clawback (hop, amount) taken from the
/// hop and its partner's book.
fn refunded(refund: String, (seq, at): (u64, i64), cseq: u64, refunded_after: i64, claws: Vec<(usize, i64)>) -> Apply {
    Box::new(move |s| {
        s.refunds.insert(refund, seq);
        s.refunded_at.insert(seq, (cseq, at));
        let moves = s
            .conversions
            .update(cseq, |c| {
                c.refunded = refunded_after;
                let mut moves = Vec::new();
                for (i, p) in claws {
                    let id = c.mandate_id(cseq, i);
                    let h = &mut c.hops[i];
                    h.clawed += p;
                    moves.push((h.partner.clone(), h.status, p, id));
                }
                moves
            })
            .unwrap_or_else(|| unreachable!());
        for (partner, status, p, id) in moves {
            if status == HopStatus::Batched
                && let Some(batch) = s.in_flight.get(&id).and_then(|b| s.batches.get_mut(b))
            {
                batch.clawed += p;
            }
            let b = s.book(&partner);
            // A clawback of paid money, or of money in a payout batch, is owed back
            // out of what is payable (negative while nothing else is).
            let from = if status == HopStatus::Held { Account::OnHold } else { Account::Payable };
            b.post(from, Account::Commission, p, &partner);
            if status == HopStatus::Batched {
                b.clawed_in_payout += p;
            }
        }
    })
}

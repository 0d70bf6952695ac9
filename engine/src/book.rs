//! A partner's book: its balances ([`Book`]) and the accounts a posting moves money
//! between ([`Account`]). Every change is one balanced double entry (`Book::post`).

use serde::{Deserialize, Serialize};

/// A partner's balances, program currency, minor units.
/// Invariant: `earned - clawed_back + adjusted == on_hold + payable + in_payout + paid`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Total earned (mandates issued).
    pub earned: i64,
    /// Total clawed back.
    pub clawed_back: i64,
    /// Net of the adjustment mandates of accepted disputes (positive: paid more; negative:
    /// owed back).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adjusted: i64,
    /// In the holding period.
    pub on_hold: i64,
    /// Payable now (negative: an offset owed from clawbacks of paid money).
    pub payable: i64,
    /// In open payout batches: sent to a rail, not yet confirmed.
    #[serde(default)]
    pub in_payout: i64,
    /// Of `payable`'s debt, what clawbacks of money still in open payout batches left:
    /// owed back only if the rail pays the batch, so no other payout absorbs it meanwhile.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clawed_in_payout: i64,
    /// Total paid on rails.
    pub paid: i64,
    /// Of `payable`, what no payable mandate carries: money owed beyond them, which the
    /// next payout batch pays with its mandates. Only a bank's return makes it: of a
    /// payout whose clawbacks later payouts had already recovered (those payouts paid
    /// less, for a debt the return voids).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub credit: i64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Book {
    /// What a payout may pay now: the payable balance, less only the debts of money that
    /// has left (clawbacks of money still in flight wait for the rail's answer).
    #[must_use]
    pub fn payable_now(&self) -> i64 {
        (self.payable + self.clawed_in_payout).max(0)
    }

    /// Posts `amount` from account `from` to account `to`: one balanced double entry
    /// (what leaves one account enters the other), so every book stays balanced by
    /// construction. Money leaves [`Account::Commission`] as it is earned and returns
    /// to it as it is clawed back; that account's balance, `clawed_back − earned`, is
    /// kept as its two sides for the statements.
    ///
    /// Every total stays within [`MAX_BOOK_TOTAL`](crate::model::MAX_BOOK_TOTAL) under v2 rules: the engine refuses a
    /// mandate that would take `earned` past it, and every other total is bounded by
    /// `earned` (what is clawed back, held, payable, in payout or paid was earned first; a
    /// negative payable is at most what was clawed back). An older log's v1 rules had no
    /// such bound, so the sums are checked against `i64` itself: leaving it is a bug, and
    /// crashes rather than wraps.
    pub(crate) fn post(&mut self, from: Account, to: Account, amount: i64, who: &str) {
        debug_assert!(from != to, "a posting moves money between two accounts");
        let add = |total: &mut i64, delta: i64| {
            *total = total.checked_add(delta).unwrap_or_else(|| panic!("book of {who}: a total overflows i64"));
        };
        match from {
            Account::Commission => add(&mut self.earned, amount),
            Account::Adjustment => add(&mut self.adjusted, amount),
            a => add(self.balance(a), -amount),
        }
        match to {
            Account::Commission => add(&mut self.clawed_back, amount),
            Account::Adjustment => add(&mut self.adjusted, -amount),
            a => add(self.balance(a), amount),
        }
        self.assert_balanced(who);
    }

    fn balance(&mut self, a: Account) -> &mut i64 {
        match a {
            Account::OnHold => &mut self.on_hold,
            Account::Payable => &mut self.payable,
            Account::InPayout => &mut self.in_payout,
            Account::Paid => &mut self.paid,
            Account::Commission | Account::Adjustment => {
                unreachable!("the commission and adjustment accounts are kept as totals")
            }
        }
    }

    /// Whether `earned − clawed_back + adjusted = on_hold + payable + in_payout + paid`.
    #[must_use]
    pub fn is_balanced(&self) -> bool {
        self.earned - self.clawed_back + self.adjusted == self.on_hold + self.payable + self.in_payout + self.paid
    }

    /// What the partner is owed in all: earned, less clawed back, plus adjustments.
    #[must_use]
    pub fn net(&self) -> i64 {
        self.earned - self.clawed_back + self.adjusted
    }

    fn assert_balanced(&self, who: &str) {
        // Within ±MAX_BOOK_TOTAL each, so these sums cannot overflow.
        assert!(self.is_balanced(), "book of {who} is unbalanced: {self:?}");
    }
}

/// The accounts of a partner's book. [`Book::post`] moves money between two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// The vendor's commission: where earned money comes from and clawed-back money
    /// returns to.
    Commission,
    /// Earned, in the holding period.
    OnHold,
    /// Payable now (negative: owed back from clawbacks of paid money).
    Payable,
    /// In open payout batches.
    InPayout,
    /// Paid on a rail.
    Paid,
    /// The vendor's adjustments of accepted disputes: where a positive adjustment comes
    /// from and a negative one returns to (kept as its net, `adjusted`).
    Adjustment,
}

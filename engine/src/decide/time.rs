//! Deciding time: log time advancing (`holds_advanced`) ends the holds that end by then,
//! and their mandates become payable; disputes unresolved past their response time are
//! flagged overdue.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use settle_mandates::money::{Amount, Currency, MAX_MINOR_UNITS};

use super::{Apply, Decider, ts};
use crate::book::Account;
use crate::decision::Rejection;
use crate::model::{Event, MAX_RELEASED_PER_EVENT};
use crate::records::HopStatus;

/// Released mandates by currency, each with what it releases (amount − clawed).
type Released = BTreeMap<Currency, Vec<(String, i64)>>;

impl Decider<'_> {
    /// `holds_advanced`: to the log time at the latest; every hold ending by `to` ends,
    /// every open dispute due by `to` is flagged overdue.
    pub(super) fn holds_advanced(&mut self, to: DateTime<Utc>) -> Result<Apply, Rejection> {
        let at = self.env.at;
        if to > at {
            return Err(Rejection::Invalid(format!(
                "holds can be advanced to the log time ({at}) at the latest, not to {to}"
            )));
        }
        let (keys, released) = self.holds_ending(ts(to));
        self.holds_released(&released);
        let overdue = self.disputes_overdue(to);
        let release = release_holds(keys);
        Ok(Box::new(move |s| {
            release(s);
            for id in overdue {
                if let Some(d) = s.disputes.get_mut(&id) {
                    d.overdue = true;
                }
            }
        }))
    }

    /// The holds ending by `t`: their keys in the state's holds, and the mandates they
    /// hold, by currency.
    fn holds_ending(&self, t: i64) -> (Vec<i64>, Released) {
        let mut released = Released::new();
        let mut keys = Vec::new();
        for (&at, seqs) in self.st.holds.range(..=t) {
            keys.push(at);
            for &cs in seqs {
                let c = self.st.conversions.get(cs).unwrap_or_else(|| unreachable!());
                for (i, h) in c.hops.iter().enumerate() {
                    if h.status == HopStatus::Held {
                        released.entry(c.pool.currency()).or_default().push((c.mandate_id(cs, i), h.amount - h.clawed));
                    }
                }
            }
        }
        (keys, released)
    }

    /// One event per currency and per chunk of ids, each with its exact total: a chunk
    /// ends at [`MAX_RELEASED_PER_EVENT`] ids, or before its total would pass what an
    /// amount may be (10^15), so a total is never out of range (it was written as 0
    /// before).
    fn holds_released(&mut self, released: &Released) {
        for (cur, items) in released {
            let mut start = 0;
            // Bounded by the items: every chunk takes at least one (`end == start`).
            while start < items.len() {
                let (mut end, mut sum) = (start, 0i64);
                // Bounded by the items too, and by MAX_RELEASED_PER_EVENT.
                while end < items.len()
                    && end - start < MAX_RELEASED_PER_EVENT
                    && (end == start || sum + items[end].1 <= MAX_MINOR_UNITS)
                {
                    sum += items[end].1;
                    end += 1;
                }
                let total =
                    Amount::from_minor(sum, *cur).unwrap_or_else(|_| unreachable!("a chunk's total is an amount"));
                let mandate_ids = items[start..end].iter().map(|(id, _)| id.clone()).collect();
                self.derived(Event::HoldsReleased { mandate_ids, total }, None);
                start = end;
            }
        }
    }
}

/// The change holds ending makes: the holds at `keys` removed, their held hops payable,
/// their money moved from on hold to payable in their partners' books.
fn release_holds(keys: Vec<i64>) -> Apply {
    Box::new(move |s| {
        for at in keys {
            let Some(seqs) = s.holds.remove(&at) else { continue };
            for cs in seqs {
                let moves = s
                    .conversions
                    .update(cs, |c| {
                        let mut moves = Vec::new();
                        for h in &mut c.hops {
                            if h.status == HopStatus::Held {
                                h.status = HopStatus::Payable;
                                moves.push((h.partner.clone(), h.amount - h.clawed));
                            }
                        }
                        moves
                    })
                    .unwrap_or_else(|| unreachable!());
                for (p, v) in moves {
                    s.book(&p).post(Account::OnHold, Account::Payable, v, &p);
                }
            }
        }
    })
}

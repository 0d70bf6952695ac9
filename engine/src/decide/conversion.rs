//! Deciding a conversion: whether it earns (a registered lead that owns its customer, in
//! its attribution window, within the recurring months, in the program's currency or
//! with a rate), its pool and split, whether the program's standing authorisation allows
//! paying it (else it is held, with the reason), and one payment mandate per hop owed
//! something; and the release of a held conversion.

use chrono::{DateTime, Duration, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use settle_mandates::money::{Amount, Sign};
use settle_mandates::types::{Direction, LogRef, MandateBasis};

use super::{Apply, Decider, ts};
use crate::arith;
use crate::book::Account;
use crate::decision::{Rejection, ToSign};
use crate::ids::mandate_id;
use crate::model::{Allocation, ConversionOutcomeKind, Event, MAX_BOOK_TOTAL, ProgramSpec, check_id};
use crate::records::{Conversion, HeldDeal, Hop, HopStatus, Lead, role_of};
use crate::rules::Deal;
use crate::state::{Program, RuleVersion, State, month_key};

impl Decider<'_> {
    /// `conversion_recorded`: a won deal, recorded whatever it earns; paid, held or
    /// earning nothing, as its lead, the rules in force when it occurred and the
    /// program's standing authorisation say.
    pub(super) fn conversion(
        &mut self,
        id: String,
        lead_id: String,
        revenue: Amount,
        occurred_at: DateTime<Utc>,
        month: Option<u32>,
        fx: Option<Decimal>,
    ) -> Result<Apply, Rejection> {
        self.check_conversion(&id, &lead_id, revenue, occurred_at, fx)?;
        let Some(lead) = self.st.leads.get(lead_id.as_str()) else {
            // A deal no partner registered: recorded, so the log holds every won deal, but
            // it belongs to no program and earns nothing.
            let conv =
                Conversion::recorded(&id, CompactString::default(), 0, revenue, Amount::zero(revenue.currency()));
            let reason = format!("no lead '{lead_id}' is registered");
            return Ok(self.unpaid(conv, ConversionOutcomeKind::NoCommission, reason));
        };
        let prog = self.st.program(&lead.program)?;
        let rv = prog.rules_at(occurred_at).clone();
        let spec = &rv.spec;
        let conv = Conversion::recorded(&id, lead.program.clone(), rv.version, revenue, Amount::zero(spec.currency));
        if let Some(reason) = earns_nothing(&lead, spec, occurred_at, month) {
            return Ok(self.unpaid(conv, ConversionOutcomeKind::NoCommission, reason));
        }
        let Some(revenue_prog) = in_program_currency(spec, revenue, fx)? else {
            let reason = format!(
                "revenue in {} but program pays in {} and no fx rate was given",
                revenue.currency(),
                spec.currency
            );
            return Ok(self.unpaid(conv, ConversionOutcomeKind::NoCommission, reason));
        };
        let chain: Vec<String> = lead.chain.iter().map(ToString::to_string).collect();
        self.pool_and_pay(conv, prog, &rv, chain, occurred_at, revenue_prog)
    }

    /// The checks of a conversion fact itself: ids, a positive revenue, a deal already
    /// won, a new conversion id, a positive rate.
    fn check_conversion(
        &self,
        id: &str,
        lead_id: &str,
        revenue: Amount,
        occurred_at: DateTime<Utc>,
        fx: Option<Decimal>,
    ) -> Result<(), Rejection> {
        check_id("conversion", id)?;
        revenue.check_sign(Sign::Positive)?;
        if occurred_at > self.env.at {
            return Err(Rejection::Invalid(format!(
                "occurred_at {occurred_at} is after the log time {}: a deal is recorded once it is won",
                self.env.at
            )));
        }
        if self.st.conversions.seq_of(id).is_some() {
            return Err(Rejection::Conflict(format!("conversion '{id}' is already recorded")));
        }
        if fx.is_some_and(|r| r <= Decimal::ZERO) {
            return Err(Rejection::Invalid("fx rate must be positive".into()));
        }
        check_id("lead", lead_id)?;
        Ok(())
    }

    /// A deal that earns: its pool and split under `rv`, then held (a partner suspended,
    /// or the standing authorisation breached), nothing (a v2 pool of 0) or paid.
    fn pool_and_pay(
        &mut self,
        mut conv: Conversion,
        prog: &Program,
        rv: &RuleVersion,
        chain: Vec<String>,
        occurred_at: DateTime<Utc>,
        revenue_prog: i64,
    ) -> Result<Apply, Rejection> {
        let spec = &rv.spec;
        // A suspended partner holds the deal before its pool is computed (the outcome's
        // pool is zero, as it always was); a suspension is never lifted, so there is no
        // split to keep for a release.
        if let Some(p) = chain.iter().find(|p| self.st.partners.get(*p).is_none_or(|x| x.suspended)) {
            let reason = format!("partner '{p}' is suspended or unknown");
            let parts = Vec::new();
            let deal = HeldDeal { chain, parts, occurred_at, revenue: revenue_prog, reason: reason.clone() };
            conv.held = Some(Box::new(deal));
            return Ok(self.unpaid(conv, ConversionOutcomeKind::Held, reason));
        }
        let closer = chain.last().map_or("", String::as_str);
        let volume_before = self.st.volume.get(&month_key(closer, occurred_at)).copied().unwrap_or(0);
        let priced = arith::price(
            spec,
            &Deal { revenue: revenue_prog, closer_volume_before: volume_before, occurred_at, hops: chain.len() },
        )?;
        conv.pool = Amount::from_minor(priced.pool, spec.currency)?;
        // Under v2 nothing owed is nothing signed: a pool of 0 issues no mandates. The deal
        // still counts toward the closer's volume, so a first tier at 0 % builds the volume
        // that reaches the next (commission-rules.md, "Tiers").
        if priced.pool == 0 && spec.allocation() == Allocation::V2 {
            let vkey = month_key(closer, occurred_at);
            let recorded =
                self.unpaid(conv, ConversionOutcomeKind::NoCommission, "the pool of this deal rounds to 0".to_owned());
            return Ok(Box::new(move |s: &mut State| {
                recorded(s);
                s.add_volume(vkey, revenue_prog);
            }));
        }
        let parts = priced.parts;
        let deal = HeldDeal { chain, parts, occurred_at, revenue: revenue_prog, reason: String::new() };
        if let Some(reason) = self.breach(spec, &conv.program, &deal)? {
            conv.held = Some(Box::new(HeldDeal { reason: reason.clone(), ..deal }));
            return Ok(self.unpaid(conv, ConversionOutcomeKind::Held, reason));
        }
        let open = prog.open_mandate.clone();
        let seq = self.seq;
        self.pay(seq, conv, rv, open, deal, None)
    }

    /// Records `conv` with no mandates: its outcome (held or no commission) and why.
    fn unpaid(&mut self, conv: Conversion, outcome: ConversionOutcomeKind, reason: String) -> Apply {
        let seq = self.seq;
        self.derived(
            Event::ConversionOutcome {
                conversion: conv.id.to_string(),
                outcome,
                reason: Some(reason),
                pool: conv.pool,
                rule_version: (conv.rule_version > 0).then_some(conv.rule_version),
            },
            None,
        );
        Box::new(move |s: &mut State| {
            s.conversions.insert(seq, &conv);
        })
    }

    /// Why the standing authorisation `spec` does not allow paying `deal` (the first
    /// reason), or `None`.
    fn breach(&self, spec: &ProgramSpec, program: &str, deal: &HeldDeal) -> Result<Option<String>, Rejection> {
        for p in &deal.chain {
            if self.st.partners.get(p).is_none_or(|x| x.suspended) {
                return Ok(Some(format!("partner '{p}' is suspended or unknown")));
            }
        }
        let pool: i64 = deal.parts.iter().sum();
        let used = self.st.budget_used.get(&month_key(program, deal.occurred_at)).copied().unwrap_or(0);
        if deal.occurred_at < spec.valid_from || spec.valid_until.is_some_and(|u| deal.occurred_at >= u) {
            return Ok(Some("deal occurred outside the program's validity window".to_owned()));
        }
        if let Some(b) = &spec.budget
            && used + pool > b.max
        {
            return Ok(Some(format!(
                "monthly budget exceeded: {} used of {}, pool {}",
                Amount::from_minor(used, spec.currency)?,
                Amount::from_minor(b.max, spec.currency)?,
                Amount::from_minor(pool, spec.currency)?
            )));
        }
        if let Some(r) = &spec.payment_range
            && let Some(p) = deal.parts.iter().find(|p| **p > 0 && (**p < r.min || **p > r.max))
        {
            return Ok(Some(format!(
                "hop amount {} is outside the allowed range {}..{}",
                Amount::from_minor(*p, spec.currency)?,
                Amount::from_minor(r.min, spec.currency)?,
                Amount::from_minor(r.max, spec.currency)?
            )));
        }
        Ok(None)
    }

    /// Issues one payment mandate per hop of `deal` for conversion `conv` (recorded at
    /// `cs`), computed under `rv`, from this fact: the conversion itself, or the release
    /// of a held one (`released` names what held it).
    fn pay(
        &mut self,
        cs: u64,
        mut conv: Conversion,
        rv: &RuleVersion,
        open: String,
        deal: HeldDeal,
        released: Option<String>,
    ) -> Result<Apply, Rejection> {
        let spec = &rv.spec;
        let seq = self.seq;
        let pool = Amount::from_minor(deal.parts.iter().sum(), spec.currency)?;
        conv.pool = pool;
        let payable_at = ts(self.env.at) + i64::from(spec.holding_days) * 86_400;
        let status = if spec.holding_days == 0 { HopStatus::Payable } else { HopStatus::Held };
        let log = LogRef { seq, event_hash: self.event_hash() };
        within_book_limits(self.st, spec, &deal)?;
        self.issue_payments(&mut conv, rv, open, log, &deal, (status, payable_at))?;
        self.derived(
            Event::ConversionOutcome {
                conversion: conv.id.to_string(),
                outcome: ConversionOutcomeKind::Settled,
                reason: released.map(|r| format!("released from hold ({r})")),
                pool,
                rule_version: Some(rv.version),
            },
            None,
        );
        let vkey = month_key(deal.chain.last().map_or("", String::as_str), deal.occurred_at);
        let bkey = month_key(&conv.program, deal.occurred_at);
        conv.held = None;
        conv.released_at = (seq != cs).then_some(seq);
        Ok(Box::new(move |s| {
            s.add_volume(vkey, deal.revenue);
            let used = s.budget_used.entry(bkey).or_default();
            *used = used.saturating_add(pool.minor_units());
            for h in conv.hops.iter().filter(|h| h.status != HopStatus::Nothing) {
                let to = if h.status == HopStatus::Held { Account::OnHold } else { Account::Payable };
                s.book(&h.partner).post(Account::Commission, to, h.amount, &h.partner);
            }
            if status == HopStatus::Held {
                s.holds.entry(payable_at).or_default().push(cs);
            }
            if let Some(r) = conv.released_at {
                s.releases.insert(r, cs);
            }
            s.conversions.insert(cs, &conv);
        }))
    }

    /// The hops of `deal`, each with its payment mandate (of this fact, `log`) unless it
    /// is owed nothing under v2; `(status, payable_at)` is where their money starts.
    fn issue_payments(
        &mut self,
        conv: &mut Conversion,
        rv: &RuleVersion,
        open: String,
        log: LogRef,
        deal: &HeldDeal,
        (status, payable_at): (HopStatus, i64),
    ) -> Result<(), Rejection> {
        let spec = &rv.spec;
        let n = deal.chain.len();
        let basis = MandateBasis {
            dispute: None,
            program: conv.program.to_string(),
            rule_version: rv.version,
            rounding: spec.rounding_id(),
            open_mandate: open,
            conversion: conv.id.to_string(),
            hop: 0,
            hops: u32::try_from(n).unwrap_or(u32::MAX),
            role: String::new(),
            pool: conv.pool,
            log,
            caused_by: self.env.by.clone(),
            reverses: None,
        };
        // Exactly as many hops as the chain has: the state keeps them for the deal's life.
        conv.hops.reserve_exact(n);
        for (i, (partner, amount)) in deal.chain.iter().zip(&deal.parts).enumerate() {
            let partner_id = CompactString::from(partner.as_str());
            // Under v2 nothing owed is nothing signed: a hop of 0 gets no mandate.
            if *amount == 0 && spec.allocation() == Allocation::V2 {
                let status = HopStatus::Nothing;
                conv.hops.push(Hop { partner: partner_id, amount: 0, clawed: 0, status, payable_at });
                continue;
            }
            let mid = mandate_id(self.seq, i);
            let amt = Amount::from_minor(*amount, spec.currency)?;
            let hop = u32::try_from(i).unwrap_or(u32::MAX);
            let basis = MandateBasis { hop, role: role_of(i, n).into(), ..basis.clone() };
            let m = self.mandate(Direction::Payment, &mid, partner, amt, payable_at, basis);
            self.derived(
                Event::MandateIssued { mandate_id: mid, partner: partner.clone(), amount: amt, mandate: String::new() },
                Some(ToSign::Mandate(Box::new(m))),
            );
            conv.hops.push(Hop { partner: partner_id, amount: *amount, clawed: 0, status, payable_at });
        }
        Ok(())
    }

    /// `conversion_released`: a held conversion, with no refunds, whose whole deal the
    /// program's current standing authorisation now allows: paid as computed when it was
    /// recorded.
    pub(super) fn release(&mut self, conversion: String) -> Result<Apply, Rejection> {
        let (cs, c) = self.st.conversion(&conversion)?;
        let Some(deal) = &c.held else {
            return Err(Rejection::Conflict(format!("conversion '{conversion}' is not held")));
        };
        if c.refunded > 0 {
            return Err(Rejection::Invalid(format!(
                "conversion '{conversion}' has refunds recorded: only a whole deal can be released from hold"
            )));
        }
        let prog = self.st.program(&c.program)?;
        if let Some(reason) = self.breach(&prog.latest().spec, &c.program, deal)? {
            return Err(Rejection::Invalid(format!("conversion '{conversion}' stays held: {reason}")));
        }
        if deal.parts.len() != deal.chain.len() {
            return Err(Rejection::Invalid(format!("conversion '{conversion}' stays held: {}", deal.reason)));
        }
        let rv = prog.version(c.rule_version);
        self.pay(cs, c.clone(), rv, prog.open_mandate.clone(), (**deal).clone(), Some(deal.reason.clone()))
    }
}

/// Why a deal on `lead` earns nothing under `spec` though its lead is registered: a
/// duplicate lead, outside the attribution window, past the recurring months; or `None`.
fn earns_nothing(lead: &Lead, spec: &ProgramSpec, occurred_at: DateTime<Utc>, month: Option<u32>) -> Option<String> {
    if let Some(o) = &lead.duplicate_of {
        return Some(format!("lead is a duplicate of '{o}'"));
    }
    let window = Duration::days(i64::from(spec.attribution_window_days));
    if occurred_at < lead.registered_at || occurred_at >= lead.registered_at + window {
        return Some(format!(
            "deal occurred outside the lead's {}-day attribution window",
            spec.attribution_window_days
        ));
    }
    if let (Some(m), Some(limit)) = (month, spec.pool.recurring_months)
        && (m == 0 || m > limit)
    {
        return Some(format!("subscription month {m} is beyond the first {limit} months that earn"));
    }
    None
}

/// `revenue` in the program's currency, minor units: as it is, or converted at `fx`
/// (`None` without a rate).
fn in_program_currency(spec: &ProgramSpec, revenue: Amount, fx: Option<Decimal>) -> Result<Option<i64>, Rejection> {
    if revenue.currency() == spec.currency {
        return Ok(Some(revenue.minor_units()));
    }
    let Some(rate) = fx else { return Ok(None) };
    let converted = arith::times(spec.allocation(), revenue, rate, spec.currency, spec.pool_rounding)
        .map_err(|_| Rejection::Invalid("revenue × fx rate is out of range".into()))?;
    Ok(Some(converted.minor_units()))
}

/// Refuses a deal that would take a payee's earnings past [`MAX_BOOK_TOTAL`] (v2 rule
/// versions only: an older log whose totals went past it replays as it was).
fn within_book_limits(st: &State, spec: &ProgramSpec, deal: &HeldDeal) -> Result<(), Rejection> {
    for (partner, amount) in deal.chain.iter().zip(&deal.parts) {
        // Positive adjustments count toward the limit as earnings do.
        let earned = st.books.get(partner).map_or(0, |b| b.earned.saturating_add(b.adjusted.max(0)));
        if spec.allocation() == Allocation::V2 && earned.saturating_add(*amount) > MAX_BOOK_TOTAL {
            return Err(Rejection::Invalid(format!(
                "partner '{partner}' would have earned more than {} in all (the limit of a book's totals)",
                Amount::from_minor(MAX_BOOK_TOTAL, spec.currency)?
            )));
        }
    }
    Ok(())
}

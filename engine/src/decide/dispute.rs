//! Deciding disputes: a partner's claim on a conversion, a mandate, a clawback or a deal
//! missing on its lead, opened within the program's dispute window; comments; the
//! vendor's resolution (rejected, or accepted with one signed adjustment mandate per
//! partner, never more than the claim); a withdrawal; and the flag of a dispute left
//! unresolved past the program's response time.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use settle_mandates::money::{Amount, Currency, Sign};
use settle_mandates::types::{Direction, LogRef, MandateBasis};

use super::{Apply, Decider, ts};
use crate::book::Account;
use crate::decision::{Rejection, ToSign};
use crate::ids::{adjustment_id, parse_clawback_id};
use crate::model::{
    AdjustmentLine, DisputeOutcome, DisputeStatus, DisputeSubject, Event, MAX_BOOK_TOTAL, MAX_COMMENTS, MAX_EVIDENCE,
    check_id, check_text,
};
use crate::records::{Conversion, role_of};
use crate::state::{Adjustment, Closed, Comment, Dispute, HopStatus};

/// A dispute's subject as the state has it: its program, the conversion (if any), the
/// partners on it in chain order, the one partner whose mandate or clawback it is (if
/// it is one), and when its dispute window starts (Unix seconds).
struct Subject {
    program: String,
    conversion: Option<Conversion>,
    chain: Vec<String>,
    owner: Option<String>,
    from: i64,
}

/// One adjustment as decided: its mandate id, partner and amount (signed).
type Issued = (String, String, Amount);

impl Decider<'_> {
    /// `dispute_opened`: a new dispute of `partner`, a party to its subject, within the
    /// program's dispute window.
    pub(super) fn dispute_opened(
        &mut self,
        dispute: String,
        partner: String,
        subject: DisputeSubject,
        claimed: Option<Amount>,
        statement: String,
        evidence: Vec<String>,
    ) -> Result<Apply, Rejection> {
        check_id("dispute", &dispute)?;
        if self.st.disputes.contains_key(&dispute) {
            return Err(Rejection::Conflict(format!("dispute '{dispute}' already exists")));
        }
        let p = self.st.partners.get(&partner).ok_or_else(|| Rejection::NotFound(format!("partner '{partner}'")))?;
        // Whether the subject does not exist, is not the partner's, or earned nothing, the
        // answer is the same: a partner learns nothing of what is not its own.
        let not_found = || Rejection::NotFound(format!("{} for partner '{partner}'", what(&subject)));
        let s = self.subject(&subject).map_err(|_| not_found())?;
        let party = s.chain.contains(&partner) && s.owner.as_ref().is_none_or(|o| *o == partner);
        if p.program != s.program || !party {
            return Err(not_found());
        }
        let rules = self.st.program(&s.program)?.latest().spec.dispute_rules();
        let closes = s.from.saturating_add(i64::from(rules.window_days) * 86_400);
        if ts(self.env.at) > closes {
            return Err(Rejection::Invalid(format!(
                "the dispute window of {} closed at {} ({} days in program '{}')",
                what(&subject),
                DateTime::from_timestamp(closes, 0).map_or_else(String::new, |t| t.to_rfc3339()),
                rules.window_days,
                s.program
            )));
        }
        if let Some(c) = claimed {
            self.check_amount("claimed", c, &s.program, Sign::Positive)?;
        }
        if statement.trim().is_empty() {
            return Err(Rejection::Invalid("a dispute states its claim in words (statement)".into()));
        }
        check_text("statement", &statement)?;
        if evidence.len() > MAX_EVIDENCE {
            return Err(Rejection::Invalid(format!("name at most {MAX_EVIDENCE} pieces of evidence")));
        }
        for e in &evidence {
            if e.trim().is_empty() {
                return Err(Rejection::Invalid("a piece of evidence is empty".into()));
            }
            check_text("evidence", e)?;
        }
        let (at, seq) = (self.env.at, self.seq);
        let d = Dispute {
            partner,
            program: s.program,
            opened_by: self.env.by.clone(),
            subject,
            claimed,
            statement,
            evidence,
            opened_at: at,
            due_at: at + Duration::days(i64::from(rules.response_days)),
            status: DisputeStatus::Open,
            overdue: false,
            seq,
            comments: Vec::new(),
            closed: None,
            adjustments: Vec::new(),
        };
        Ok(Box::new(move |st| {
            st.disputes.insert(dispute, d);
        }))
    }

    /// `dispute_commented`: a comment on an open dispute.
    pub(super) fn dispute_commented(&mut self, dispute: String, text: String) -> Result<Apply, Rejection> {
        let d = self.open_dispute(&dispute)?;
        if text.trim().is_empty() {
            return Err(Rejection::Invalid("a comment is not empty".into()));
        }
        check_text("comment", &text)?;
        if d.comments.len() >= MAX_COMMENTS {
            return Err(Rejection::Invalid(format!("dispute '{dispute}' already has {MAX_COMMENTS} comments")));
        }
        let c = Comment { by: self.env.by.clone(), at: self.env.at, text };
        Ok(Box::new(move |st| {
            if let Some(d) = st.disputes.get_mut(&dispute) {
                d.comments.push(c);
            }
        }))
    }

    /// `dispute_withdrawn`: an open dispute withdrawn by the side that opened it (the
    /// vendor's, or the partner's and its agents').
    pub(super) fn dispute_withdrawn(&mut self, dispute: String, reason: String) -> Result<Apply, Rejection> {
        let d = self.open_dispute(&dispute)?;
        if vendor_side(&d.opened_by) != vendor_side(&self.env.by) {
            return Err(Rejection::Invalid(format!(
                "dispute '{dispute}' is withdrawn by the side that opened it ({}); the other side resolves or comments",
                d.opened_by
            )));
        }
        check_text("reason", &reason)?;
        let closed = self.closed(reason);
        Ok(Box::new(move |st| {
            if let Some(d) = st.disputes.get_mut(&dispute) {
                d.status = DisputeStatus::Withdrawn;
                d.closed = Some(closed);
            }
        }))
    }

    /// `dispute_resolved`: an open dispute rejected (with a reason), or accepted with one
    /// adjustment mandate per line (absent: the claimed amount, to the disputing partner).
    pub(super) fn dispute_resolved(
        &mut self,
        dispute: String,
        outcome: DisputeOutcome,
        reason: String,
        lines: Vec<AdjustmentLine>,
    ) -> Result<Apply, Rejection> {
        let d = self.open_dispute(&dispute)?.clone();
        check_text("reason", &reason)?;
        let issued = match outcome {
            DisputeOutcome::Rejected => {
                if reason.trim().is_empty() {
                    return Err(Rejection::Invalid("a rejection gives its reason".into()));
                }
                if !lines.is_empty() {
                    return Err(Rejection::Invalid("a rejected dispute adjusts nothing".into()));
                }
                Vec::new()
            }
            DisputeOutcome::Accepted => {
                let lines = if lines.is_empty() {
                    d.claimed.map(|amount| AdjustmentLine { amount, partner: d.partner.clone() }).into_iter().collect()
                } else {
                    lines
                };
                self.adjust(&dispute, &d, &lines)?
            }
        };
        // The conversion whose holdings the adjustments change (none for a missing deal).
        let conversion = self.subject(&d.subject)?.conversion.map(|c| c.id.to_string());
        let closed = self.closed(reason);
        let status = match outcome {
            DisputeOutcome::Accepted => DisputeStatus::Accepted,
            DisputeOutcome::Rejected => DisputeStatus::Rejected,
        };
        Ok(Box::new(move |st| {
            for (id, partner, amount) in &issued {
                let b = st.book(partner);
                let a = amount.minor_units();
                if a > 0 {
                    b.post(Account::Adjustment, Account::Payable, a, partner);
                    let adj = Adjustment { partner: partner.clone(), amount: *amount, status: HopStatus::Payable };
                    st.adjustments.insert(id.clone(), adj);
                } else {
                    b.post(Account::Payable, Account::Adjustment, -a, partner);
                }
                if let Some(c) = &conversion {
                    *st.adjusted.entry(adjusted_key(c, partner)).or_default() += a;
                }
            }
            if let Some(d) = st.disputes.get_mut(&dispute) {
                d.status = status;
                d.closed = Some(closed);
                d.adjustments = issued.into_iter().map(|(id, p, a)| (id, p, a.minor_units())).collect();
            }
        }))
    }

    /// The adjustment mandates of `lines` for dispute `id` (`d`): each to a partner on
    /// the subject, once, in the program's currency, never zero; the positive ones
    /// together, and the negative ones together, at most the claimed amount; a negative
    /// one at most what the partner holds of the conversion.
    fn adjust(&mut self, id: &str, d: &Dispute, lines: &[AdjustmentLine]) -> Result<Vec<Issued>, Rejection> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let claimed = d.claimed.ok_or_else(|| {
            Rejection::Invalid(format!(
                "dispute '{id}' claims no amount: it may be accepted without an adjustment only (an adjustment never exceeds the claim)"
            ))
        })?;
        let s = self.subject(&d.subject)?;
        let (mut up, mut down, mut seen) = (0i64, 0i64, BTreeSet::new());
        for l in lines {
            self.check_amount("adjustment", l.amount, &s.program, Sign::Any)?;
            let a = l.amount.minor_units();
            if a == 0 {
                return Err(Rejection::Invalid(format!("the adjustment of partner '{}' is zero", l.partner)));
            }
            if !s.chain.contains(&l.partner) {
                return Err(Rejection::Invalid(format!("partner '{}' is not on {}", l.partner, what(&d.subject))));
            }
            if !seen.insert(l.partner.as_str()) {
                return Err(Rejection::Invalid(format!("partner '{}' is adjusted twice", l.partner)));
            }
            if a > 0 {
                if self.st.partners.get(&l.partner).is_some_and(|p| p.suspended) {
                    return Err(Rejection::Invalid(format!(
                        "partner '{}' is suspended: no new mandate pays it",
                        l.partner
                    )));
                }
                up += a;
                let b = self.st.books.get(&l.partner).copied().unwrap_or_default();
                if b.earned.saturating_add(b.adjusted.max(0)).saturating_add(a) > MAX_BOOK_TOTAL {
                    return Err(Rejection::Invalid(format!(
                        "partner '{}' would earn past the largest total",
                        l.partner
                    )));
                }
            } else {
                down -= a;
                let holds = self.holds(&s, &l.partner);
                if -a > holds {
                    return Err(Rejection::Invalid(format!(
                        "the adjustment of partner '{}' takes back {} but it holds {} of {}",
                        l.partner,
                        Amount::from_minor(-a, claimed.currency())?,
                        Amount::from_minor(holds, claimed.currency())?,
                        what(&d.subject)
                    )));
                }
            }
        }
        if up > claimed.minor_units() || down > claimed.minor_units() {
            return Err(Rejection::Invalid(format!(
                "adjustments of {} up and {} down exceed the {claimed} claimed",
                Amount::from_minor(up, claimed.currency())?,
                Amount::from_minor(down, claimed.currency())?
            )));
        }
        let mut issued = Vec::with_capacity(lines.len());
        for (k, l) in lines.iter().enumerate() {
            let mid = adjustment_id(self.seq, k);
            let basis = self.adjustment_basis(id, &s, &l.partner, claimed.currency())?;
            let m = self.mandate(Direction::Adjustment, &mid, &l.partner, l.amount, ts(self.env.at), basis);
            self.derived(
                Event::AdjustmentIssued {
                    amount: l.amount,
                    dispute: id.to_owned(),
                    mandate: String::new(),
                    mandate_id: mid.clone(),
                    partner: l.partner.clone(),
                },
                Some(ToSign::Mandate(Box::new(m))),
            );
            issued.push((mid, l.partner.clone(), l.amount));
        }
        Ok(issued)
    }

    /// The basis of an adjustment mandate of dispute `id` to `partner` on subject `s`:
    /// the conversion's program, rule version, pool and `partner`'s first hop (for a
    /// conversion missing on a lead: the lead's chain, the current rules, a pool of 0).
    fn adjustment_basis(
        &mut self,
        id: &str,
        s: &Subject,
        partner: &str,
        cur: Currency,
    ) -> Result<MandateBasis, Rejection> {
        let prog = self.st.program(&s.program)?;
        let (rule_version, pool, conversion) = match &s.conversion {
            Some(c) => (c.rule_version, c.pool, c.id.to_string()),
            None => (prog.latest().version, Amount::from_minor(0, cur)?, String::new()),
        };
        let spec = &prog.version(rule_version).spec;
        let hop = s.chain.iter().position(|p| p == partner).unwrap_or(0);
        let n = s.chain.len();
        Ok(MandateBasis {
            program: s.program.clone(),
            rule_version,
            rounding: spec.rounding_id(),
            open_mandate: prog.open_mandate.clone(),
            conversion,
            dispute: Some(id.to_owned()),
            hop: u32::try_from(hop).unwrap_or(u32::MAX),
            hops: u32::try_from(n).unwrap_or(u32::MAX),
            role: role_of(hop, n).into(),
            pool,
            log: LogRef { seq: self.seq, event_hash: self.event_hash() },
            caused_by: self.env.by.clone(),
            reverses: None,
        })
    }

    /// What `partner` holds of subject `s`'s conversion: its hops' amounts less what was
    /// clawed back, plus the net of its earlier adjustments (0 without a conversion).
    fn holds(&self, s: &Subject, partner: &str) -> i64 {
        let Some(c) = &s.conversion else { return 0 };
        let hops: i64 = c.hops.iter().filter(|h| h.partner == partner).map(|h| h.amount - h.clawed).sum();
        hops + self.st.adjusted.get(&adjusted_key(&c.id, partner)).copied().unwrap_or(0)
    }

    /// `a` in program `program`'s currency, of sign `sign`.
    fn check_amount(&self, what: &str, a: Amount, program: &str, sign: Sign) -> Result<(), Rejection> {
        let cur = self.st.program(program)?.latest().spec.currency;
        if a.currency() != cur {
            return Err(Rejection::Invalid(format!(
                "{what} in {} but program '{program}' pays in {cur}",
                a.currency()
            )));
        }
        a.check_sign(sign)?;
        Ok(())
    }

    /// Dispute `id`, open.
    fn open_dispute(&self, id: &str) -> Result<&Dispute, Rejection> {
        let d = self.st.disputes.get(id).ok_or_else(|| Rejection::NotFound(format!("dispute '{id}'")))?;
        if d.status != DisputeStatus::Open {
            return Err(Rejection::Conflict(format!("dispute '{id}' is already {}", d.status)));
        }
        Ok(d)
    }

    /// How this fact closes a dispute.
    fn closed(&self, reason: String) -> Closed {
        Closed { by: self.env.by.clone(), at: self.env.at, reason, seq: self.seq }
    }

    /// The subject as the state has it.
    fn subject(&self, subject: &DisputeSubject) -> Result<Subject, Rejection> {
        let st = self.st;
        let gone = || Rejection::NotFound(what(subject));
        let of_conversion = |c: Conversion| -> Result<Subject, Rejection> {
            let program = c.program.to_string();
            if let Some(h) = c.hops.first() {
                let holding = st.program(&program)?.version(c.rule_version).spec.holding_days;
                let from = h.payable_at - i64::from(holding) * 86_400;
                let chain = c.hops.iter().map(|h| h.partner.to_string()).collect();
                Ok(Subject { program, chain, from, owner: None, conversion: Some(c) })
            } else if let Some(held) = c.held.clone() {
                let from = ts(held.occurred_at);
                Ok(Subject { program, chain: held.chain, from, owner: None, conversion: Some(c) })
            } else {
                Err(Rejection::Invalid(format!(
                    "conversion '{}' earned no commission: dispute it as a conversion missing on the lead",
                    c.id
                )))
            }
        };
        match subject {
            DisputeSubject::Conversion { conversion } => of_conversion(st.conversion(conversion)?.1),
            DisputeSubject::Mandate { mandate } => {
                let (_, i, c) = st.mandate_hop(mandate).ok_or_else(gone)?;
                let owner = Some(c.hops[i].partner.to_string());
                Ok(Subject { owner, ..of_conversion(c)? })
            }
            DisputeSubject::Clawback { clawback } => {
                let (seq, hop) = parse_clawback_id(clawback).ok_or_else(gone)?;
                let &(cs, at) = st.refunded_at.get(&seq).ok_or_else(gone)?;
                let c = st
                    .conversions
                    .get(cs)
                    .filter(|c| c.hops.get(hop).is_some_and(|h| h.clawed > 0))
                    .ok_or_else(gone)?;
                let owner = Some(c.hops[hop].partner.to_string());
                Ok(Subject { from: at, owner, ..of_conversion(c)? })
            }
            DisputeSubject::MissingConversion { lead } => {
                let l = st.leads.get(lead).ok_or_else(gone)?;
                let program = l.program.to_string();
                let window = st.program(&program)?.latest().spec.attribution_window_days;
                let from = ts(l.registered_at).saturating_add(i64::from(window) * 86_400);
                let chain = l.chain.iter().map(ToString::to_string).collect();
                Ok(Subject { program, chain, from, owner: None, conversion: None })
            }
        }
    }

    /// `dispute_overdue` for every open dispute due by `to` and not yet flagged; the ids.
    pub(super) fn disputes_overdue(&mut self, to: DateTime<Utc>) -> Vec<String> {
        let due: Vec<(String, DateTime<Utc>)> = self
            .st
            .disputes
            .iter()
            .filter(|(_, d)| d.status == DisputeStatus::Open && !d.overdue && d.due_at <= to)
            .map(|(id, d)| (id.clone(), d.due_at))
            .collect();
        for (dispute, due_at) in &due {
            self.derived(Event::DisputeOverdue { dispute: dispute.clone(), due_at: *due_at }, None);
        }
        due.into_iter().map(|(id, _)| id).collect()
    }
}

/// Whether the principal a fact names (its `by`) is the vendor's side: a vendor
/// administrator or agent (`vendor:…`, `vendor_agent:…`), not a partner or its agent.
fn vendor_side(by: &str) -> bool {
    by.starts_with("vendor:") || by.starts_with("vendor_agent:")
}

/// The key of a partner's net adjustments of a conversion in `State::adjusted`.
fn adjusted_key(conversion: &str, partner: &str) -> String {
    format!("{conversion}\u{1f}{partner}")
}

/// The subject in words.
fn what(s: &DisputeSubject) -> String {
    match s {
        DisputeSubject::Conversion { conversion } => format!("conversion '{conversion}'"),
        DisputeSubject::Mandate { mandate } => format!("mandate '{mandate}'"),
        DisputeSubject::Clawback { clawback } => format!("clawback '{clawback}'"),
        DisputeSubject::MissingConversion { lead } => format!("lead '{lead}'"),
    }
}

//! The projection's state ([`State`]): programs and their rule versions, partners, agents,
//! the packed tables of leads and conversions, holds, books, monthly volumes and budgets,
//! settlements and payout batches; and what the state answers without deciding anything
//! (an agent's grant, the hop a mandate id names). Deciding a fact is `decide`'s.
//!
//! The records of leads and conversions are `records`', the books `book`'s, the
//! mandate ids `ids`', the rejections and decisions `decision`'s, and the id and text
//! checks `limits`': they stay importable from here, where they were. The engine
//! itself ([`crate::Engine`], with its configuration) is `decide`'s.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use settle_mandates::money::Amount;

use crate::model::{AgentScope, DisputeStatus, DisputeSubject, PartnerRole, ProgramSpec};
use crate::table::{Conversions, Leads};

pub use crate::book::{Account, Book};
pub use crate::decision::{Decision, Output, Rejection, ToSign};
pub use crate::ids::{mandate_id, mandate_seq, parse_mandate_id};
pub use crate::limits::{check_id, check_text};
pub use crate::records::{Conversion, HeldDeal, Hop, HopStatus, Lead, mandate_seq_of, role_of};

/// One version of a program's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVersion {
    /// 1, 2, ...
    pub version: u32,
    /// Applies to conversions occurring from here on.
    pub effective_from: DateTime<Utc>,
    /// The rules.
    pub spec: ProgramSpec,
}

/// A program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Rule versions, ascending.
    pub versions: Vec<RuleVersion>,
    /// Current open mandate id.
    pub open_mandate: String,
}

impl Program {
    /// The rules in force for a deal that occurred at `t`.
    #[must_use]
    pub fn rules_at(&self, t: DateTime<Utc>) -> &RuleVersion {
        self.versions.iter().rev().find(|v| v.effective_from <= t).unwrap_or(&self.versions[0])
    }
    /// Rule version `version` (every conversion names one of its program's).
    #[must_use]
    pub fn version(&self, version: u32) -> &RuleVersion {
        self.versions.iter().find(|v| v.version == version).unwrap_or_else(|| unreachable!("rule version {version}"))
    }
    /// Latest rules.
    #[must_use]
    pub fn latest(&self) -> &RuleVersion {
        &self.versions[self.versions.len() - 1]
    }
}

/// A partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partner {
    /// Program id.
    pub program: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: PartnerRole,
    /// Suspended?
    pub suspended: bool,
    /// Its payout instrument for the `bank` rail (a salted hash of its bank account's
    /// details), if one is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instrument: Option<String>,
}

/// An agent acting for a partner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Partner.
    pub partner: String,
    /// Scopes.
    pub scopes: Vec<AgentScope>,
    /// Start.
    pub not_before: DateTime<Utc>,
    /// End.
    pub expires_at: DateTime<Utc>,
    /// Revoked?
    pub revoked: bool,
    /// Its own public key, when it signs its own (short-lived bearer) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<settle_mandates::keys::Jwk>,
}

impl Agent {
    /// Whether the grant is in force at `now`: not revoked, between `not_before` and
    /// `expires_at`.
    #[must_use]
    pub fn is_current(&self, now: DateTime<Utc>) -> bool {
        !self.revoked && self.not_before <= now && now < self.expires_at
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A payout batch: mandates of one partner sent to a rail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Partner.
    pub partner: String,
    /// Rail.
    pub rail: String,
    /// Mandates, in the batch's order, while the batch may still be answered: while it
    /// is open, and while a bank may return it (paid on the `bank` rail); emptied when it
    /// closes for good (the log keeps them in the batch's fact).
    pub mandate_ids: Vec<String>,
    /// What the rail is to pay.
    pub amount: Amount,
    /// Part of the mandates' value absorbed by earlier negative balances.
    pub offset: Amount,
    /// Clawed back from its mandates while it was open.
    #[serde(default)]
    pub clawed: i64,
    /// Of `amount`, the partner's credit it pays beyond its mandates (given back if the
    /// rail fails it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub credit: i64,
    /// Open, paid or failed.
    pub status: BatchStatus,
    /// The log position of its `payout_batched` fact (its `payout_batch_created` follows
    /// it); 0 in a state saved before it was kept.
    #[serde(default)]
    pub seq: u64,
}

/// Where a payout batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Sent, not yet confirmed.
    Open,
    /// The rail paid it.
    Paid,
    /// The rail failed; its mandates are payable again.
    Failed,
    /// The rail paid it, then returned the money (a bank's return); its mandates are
    /// payable again.
    Returned,
}

/// A comment on a dispute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Who wrote it (the fact's `by`).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The text.
    pub text: String,
}

/// A dispute, as the log has it so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// The disputing partner.
    pub partner: String,
    /// Its program.
    pub program: String,
    /// Who opened it (the fact's `by`: the partner, its agent, or the vendor).
    pub opened_by: String,
    /// What is disputed.
    pub subject: DisputeSubject,
    /// The amount claimed, if any.
    pub claimed: Option<Amount>,
    /// The claim in words.
    pub statement: String,
    /// Evidence named.
    pub evidence: Vec<String>,
    /// Opened at.
    pub opened_at: DateTime<Utc>,
    /// Resolution due by (the program's response time after opening).
    pub due_at: DateTime<Utc>,
    /// Where it stands.
    pub status: DisputeStatus,
    /// Flagged overdue (unresolved past `due_at`).
    pub overdue: bool,
    /// The log position of its `dispute_opened`.
    pub seq: u64,
    /// Comments, oldest first.
    pub comments: Vec<Comment>,
    /// How it ended: the reason given, the fact's position, and who closed it.
    pub closed: Option<Closed>,
    /// The adjustment mandates issued, with their amounts (signed, minor units).
    pub adjustments: Vec<(String, String, i64)>,
}

/// How a dispute was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// Who (the fact's `by`).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
    /// The reason given.
    pub reason: String,
    /// The log position of the fact.
    pub seq: u64,
}

/// A positive adjustment mandate: payable at once, paid in a payout batch as a payment
/// mandate is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    /// Partner paid.
    pub partner: String,
    /// Amount (positive).
    pub amount: Amount,
    /// Payable, batched or paid.
    pub status: HopStatus,
}

/// The whole projection state. Ordered maps only: iteration order never depends on
/// hashing, so replay is byte-identical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Last log time seen.
    pub now: Option<DateTime<Utc>>,
    /// Programs.
    pub programs: BTreeMap<String, Program>,
    /// Partners.
    pub partners: BTreeMap<String, Partner>,
    /// Agents.
    pub agents: BTreeMap<String, Agent>,
    /// Leads by id, and the lead that owns each customer of a program.
    pub leads: Leads,
    /// Conversions by the sequence of their fact, and by id.
    pub conversions: Conversions,
    /// Held conversions by end of hold: payable_at → conversion seqs.
    pub holds: BTreeMap<i64, Vec<u64>>,
    /// Balances by partner.
    pub books: BTreeMap<String, Book>,
    /// Closer revenue volume by `partner \u{1f} YYYY-MM`.
    pub volume: BTreeMap<String, i64>,
    /// Pool used by `program \u{1f} YYYY-MM`.
    pub budget_used: BTreeMap<String, i64>,
    /// Refund ids recorded.
    pub refunds: BTreeMap<String, u64>,
    /// Settlement ids recorded.
    pub settlements: BTreeMap<String, u64>,
    /// Payout batches by id.
    #[serde(default)]
    pub batches: BTreeMap<String, Batch>,
    /// Conversion sequence by the sequence of the `conversion_released` that paid it.
    #[serde(default)]
    pub releases: BTreeMap<u64, u64>,
    /// The open payout batch of every mandate in flight.
    #[serde(default)]
    pub in_flight: BTreeMap<String, String>,
    /// Each refund by the sequence of its fact: the conversion it refunds (by sequence)
    /// and when (Unix seconds): where a clawback's dispute window starts.
    #[serde(default)]
    pub refunded_at: BTreeMap<u64, (u64, i64)>,
    /// Disputes by id.
    #[serde(default)]
    pub disputes: BTreeMap<String, Dispute>,
    /// Positive adjustment mandates by id: paid in payout batches.
    #[serde(default)]
    pub adjustments: BTreeMap<String, Adjustment>,
    /// The net of every adjustment so far, by `<conversion id> U+001F <partner>` (signed,
    /// minor units): a negative adjustment takes back at most what the partner holds of
    /// the conversion.
    #[serde(default)]
    pub adjusted: BTreeMap<String, i64>,
}

/// A payable kind of mandate, where the state keeps it: a hop of a conversion (its
/// sequence, the hop) or a positive adjustment (its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payout {
    /// A payment mandate: (conversion seq, hop).
    Hop(u64, usize),
    /// A positive adjustment mandate.
    Adjustment(String),
}

/// A payable kind of mandate as a payout sees it ([`State::payout_item`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutItem {
    /// Where it is kept.
    pub at: Payout,
    /// Partner paid.
    pub partner: String,
    /// Its amount when issued, minor units.
    pub amount: i64,
    /// What it is worth now (less what was clawed back), minor units.
    pub value: i64,
    /// Currency.
    pub currency: settle_mandates::money::Currency,
    /// Where its money is.
    pub status: HopStatus,
}

/// The key of a month's total in [`State::volume`] and [`State::budget_used`]: `prefix`
/// (a partner or a program), U+001F, `YYYY-MM` of `t` (UTC).
pub(crate) fn month_key(prefix: &str, t: DateTime<Utc>) -> String {
    format!("{prefix}\u{1f}{:04}-{:02}", t.year(), t.month())
}

impl State {
    /// The program `id`.
    pub(crate) fn program(&self, id: &str) -> Result<&Program, Rejection> {
        self.programs.get(id).ok_or_else(|| Rejection::NotFound(format!("program '{id}'")))
    }

    /// A recorded conversion by id, with the sequence of its fact.
    pub(crate) fn conversion(&self, id: &str) -> Result<(u64, Conversion), Rejection> {
        let cs = self.conversions.seq_of(id).ok_or_else(|| Rejection::NotFound(format!("conversion '{id}'")))?;
        Ok((cs, self.conversions.get(cs).unwrap_or_else(|| unreachable!("conversion '{id}' is indexed at {cs}"))))
    }

    /// Partner `id`, enrolled in `program` and not suspended.
    pub(crate) fn active_partner(&self, id: &str, program: &str) -> Result<&Partner, Rejection> {
        let p = self.partners.get(id).ok_or_else(|| Rejection::NotFound(format!("partner '{id}'")))?;
        if p.program != program {
            return Err(Rejection::Invalid(format!("partner '{id}' is not enrolled in program '{program}'")));
        }
        if p.suspended {
            return Err(Rejection::Invalid(format!("partner '{id}' is suspended")));
        }
        Ok(p)
    }

    /// The one check of an agent's grant: `agent` may act with `scope` at `t` if it
    /// exists, its grant is current at `t` ([`Agent::is_current`]: not revoked, from
    /// `not_before` until before `expires_at`) and includes `scope`. Its grant, if so.
    #[must_use]
    pub fn agent_may(&self, agent: &str, scope: AgentScope, t: DateTime<Utc>) -> Option<&Agent> {
        self.agents.get(agent).filter(|a| a.is_current(t) && a.scopes.contains(&scope))
    }

    /// The conversion (by its sequence) and hop a payment mandate id names, if it exists.
    #[must_use]
    pub fn mandate_hop(&self, id: &str) -> Option<(u64, usize, Conversion)> {
        let (s, i) = parse_mandate_id(id)?;
        let (cs, c) = match self.conversions.get(s) {
            Some(c) if c.released_at.is_none() => (s, c),
            Some(_) => return None,
            None => {
                let cs = *self.releases.get(&s)?;
                (cs, self.conversions.get(cs)?)
            }
        };
        if c.hops.get(i)?.status == HopStatus::Nothing {
            return None;
        }
        Some((cs, i, c))
    }

    /// Partner `partner`'s payable mandates, oldest first: its payment mandates payable
    /// now, then its positive adjustment mandates payable now.
    pub fn payable_mandates<'a>(&'a self, partner: &'a str) -> impl Iterator<Item = String> + 'a {
        let hops = self.conversions.hops_of(0, partner).filter_map(|(cs, hop, _, _)| {
            let c = self.conversions.get(cs)?;
            (c.hops.get(hop)?.status == HopStatus::Payable).then(|| c.mandate_id(cs, hop))
        });
        let adjustments =
            self.adjustments.iter().filter(move |(_, a)| a.partner == partner && a.status == HopStatus::Payable);
        hops.chain(adjustments.map(|(m, _)| m.clone()))
    }

    /// The payment mandate or positive adjustment mandate `id`, as a payout sees it.
    #[must_use]
    pub fn payout_item(&self, id: &str) -> Option<PayoutItem> {
        if let Some(a) = self.adjustments.get(id) {
            return Some(PayoutItem {
                at: Payout::Adjustment(id.to_owned()),
                partner: a.partner.clone(),
                amount: a.amount.minor_units(),
                value: a.amount.minor_units(),
                currency: a.amount.currency(),
                status: a.status,
            });
        }
        let (cs, i, c) = self.mandate_hop(id)?;
        let h = &c.hops[i];
        Some(PayoutItem {
            at: Payout::Hop(cs, i),
            partner: h.partner.to_string(),
            amount: h.amount,
            value: h.amount - h.clawed,
            currency: c.pool.currency(),
            status: h.status,
        })
    }

    /// Sets the status of payable mandate `at` to `to` (if it is `from`, when given).
    pub(crate) fn set_payout_status(&mut self, at: &Payout, to: HopStatus, from: Option<HopStatus>) {
        let ok = |s: HopStatus| from.is_none_or(|f| f == s);
        match at {
            Payout::Hop(cs, i) => {
                self.conversions.update(*cs, |c| {
                    if let Some(h) = c.hops.get_mut(*i).filter(|h| ok(h.status)) {
                        h.status = to;
                    }
                });
            }
            Payout::Adjustment(id) => {
                if let Some(a) = self.adjustments.get_mut(id).filter(|a| ok(a.status)) {
                    a.status = to;
                }
            }
        }
    }

    /// The book of `partner`, opened empty if it has none.
    pub(crate) fn book(&mut self, partner: &str) -> &mut Book {
        self.books.entry(partner.to_owned()).or_default()
    }

    /// Adds `revenue` to a closer's monthly volume (`key` from [`month_key`]), saturating:
    /// past every tier's `from` (≤ 10^15) a larger volume changes nothing.
    pub(crate) fn add_volume(&mut self, key: String, revenue: i64) {
        let v = self.volume.entry(key).or_default();
        *v = v.saturating_add(revenue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// [`State::agent_may`] is the one check of an agent's grant: the agent exists, is
    /// current at `t` (not revoked, from `not_before`, before `expires_at`) and holds the
    /// scope.
    #[test]
    fn an_agent_may_act_only_within_its_grant() {
        let t = |h| Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap();
        let grant = Agent {
            partner: "p1".into(),
            scopes: vec![AgentScope::LeadsWrite],
            not_before: t(1),
            expires_at: t(3),
            revoked: false,
            public_key: None,
        };
        let mut st = State::default();
        st.agents.insert("a1".into(), grant.clone());
        st.agents.insert("a2".into(), Agent { revoked: true, ..grant });
        assert_eq!(st.agent_may("a1", AgentScope::LeadsWrite, t(1)).map(|a| a.partner.as_str()), Some("p1"));
        assert!(st.agent_may("a1", AgentScope::LeadsWrite, t(2)).is_some());
        assert!(st.agent_may("a1", AgentScope::LeadsWrite, t(0)).is_none(), "before not_before");
        assert!(st.agent_may("a1", AgentScope::LeadsWrite, t(3)).is_none(), "at expires_at");
        assert!(st.agent_may("a1", AgentScope::Read, t(2)).is_none(), "a scope not granted");
        assert!(st.agent_may("a2", AgentScope::LeadsWrite, t(2)).is_none(), "revoked");
        assert!(st.agent_may("a3", AgentScope::LeadsWrite, t(2)).is_none(), "unknown");
    }
}

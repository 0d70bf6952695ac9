//! The projection: state, and the pure function from (state, fact, seq) to the derived
//! events, with every rejection a value.

use std::collections::BTreeMap;

use compact_str::CompactString;

use crate::table::{Conversions, Leads};

use chrono::{DateTime, Datelike, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use settle_mandates::money::{Amount, Currency, MoneyError};
use settle_mandates::types::{
    Constraint, Direction, Instrument, LogRef, Mandate, MandateBasis, OpenMandate, Payee, VCT_OPEN_MANDATE, derive_salt,
};

use crate::arith;
use crate::model::{
    AgentScope, Allocation, CustomerKey, Envelope, Event, MAX_BOOK_TOTAL, MAX_HOPS, MAX_ID_BYTES,
    MAX_SETTLEMENT_MANDATES, PartnerRole, ProgramSpec, RefundSize,
};
use crate::rules::Deal;

/// Why a fact was refused. Nothing is recorded and nothing changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Bad shape or value.
    #[error("{0}")]
    Invalid(String),
    /// Something named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// It exists already, or conflicts with what is recorded.
    #[error("{0}")]
    Conflict(String),
    /// Money error.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// Rules refused.
    #[error(transparent)]
    Rules(#[from] crate::rules::RuleError),
    /// A derived event is not a fact.
    #[error("'{0}' is derived by the engine and cannot be submitted")]
    NotAFact(&'static str),
}

/// Checks an id: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub fn check_id(what: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty()
        || id.len() > MAX_ID_BYTES
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    {
        return Err(Rejection::Invalid(format!(
            "{what} id '{id}' must be 1..={MAX_ID_BYTES} characters of A-Z a-z 0-9 . _ : -"
        )));
    }
    Ok(())
}

/// Checks free text: at most [`MAX_TEXT_BYTES`] bytes.
pub fn check_text(what: &str, s: &str) -> Result<(), Rejection> {
    if s.len() > crate::model::MAX_TEXT_BYTES {
        return Err(Rejection::Invalid(format!("{what} is longer than {} bytes", crate::model::MAX_TEXT_BYTES)));
    }
    Ok(())
}

/// Engine identity and secrets (injected, never read from the environment).
#[derive(Clone)]
pub struct EngineConfig {
    /// Vendor id (`iss` of every mandate).
    pub vendor: String,
    /// Secret the mandate salts are derived from.
    pub salt_secret: [u8; 32],
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig").field("vendor", &self.vendor).finish_non_exhaustive()
    }
}

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

/// A lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lead {
    /// Program.
    pub program: CompactString,
    /// Customer key.
    pub customer: CompactString,
    /// Referral chain, originator first.
    pub chain: Vec<CompactString>,
    /// Registered at.
    pub registered_at: DateTime<Utc>,
    /// The owning lead when this one is a duplicate.
    pub duplicate_of: Option<CompactString>,
}

/// Where one hop's money is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HopStatus {
    /// In the holding period.
    Held,
    /// Payable.
    Payable,
    /// In an open payout batch: sent to a rail, not yet confirmed.
    Batched,
    /// Settled on a rail.
    Paid,
    /// Owed nothing, so no mandate: a hop whose part is 0 under
    /// `largest_remainder.v2` (v1 signed a mandate of 0 for it).
    Nothing,
}

/// One hop of a settled conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    /// Payee.
    pub partner: CompactString,
    /// Amount of the mandate, minor units.
    pub amount: i64,
    /// Clawed back so far, minor units.
    pub clawed: i64,
    /// Status.
    pub status: HopStatus,
    /// End of hold, Unix seconds.
    pub payable_at: i64,
}

/// A conversion that produced mandates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    /// Conversion id.
    pub id: CompactString,
    /// Program (empty for a deal whose lead was never registered: no commission).
    pub program: CompactString,
    /// Rule version used (0 with no program).
    pub rule_version: u32,
    /// Revenue in its own currency, minor units.
    pub revenue: Amount,
    /// Refunded so far, same currency.
    pub refunded: i64,
    /// Pool, program currency.
    pub pool: Amount,
    /// The hops (empty when held or no commission).
    pub hops: Vec<Hop>,
    /// The fact whose derived events hold the mandates when it is not the conversion's
    /// own: the `conversion_released` that settled it after a hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
    /// What a held conversion is paid from if it is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Box<HeldDeal>>,
}

impl Conversion {
    /// A conversion just recorded: nothing refunded, no hops yet.
    fn recorded(id: &str, program: CompactString, rule_version: u32, revenue: Amount, pool: Amount) -> Self {
        Self {
            id: id.into(),
            program,
            rule_version,
            revenue,
            refunded: 0,
            pool,
            hops: Vec::new(),
            released_at: None,
            held: None,
        }
    }

    /// Id of hop `hop`'s payment mandate, for this conversion recorded at `seq`.
    #[must_use]
    pub fn mandate_id(&self, seq: u64, hop: usize) -> String {
        mandate_id(self.released_at.unwrap_or(seq), hop)
    }
}

/// A deal's split as computed when it was recorded: what a held conversion pays on release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldDeal {
    /// Payees, originator first.
    pub chain: Vec<String>,
    /// Each hop's part of the pool, minor units (Σ = pool).
    pub parts: Vec<i64>,
    /// When the deal was won.
    pub occurred_at: DateTime<Utc>,
    /// Revenue in the program's currency, minor units (counts toward the closer's volume).
    pub revenue: i64,
    /// Why it is held.
    pub reason: String,
}

/// A payout batch: mandates of one partner sent to a rail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Partner.
    pub partner: String,
    /// Rail.
    pub rail: String,
    /// Mandates, in the batch's order, while the batch is open (emptied when it closes:
    /// the log keeps them in the batch's fact).
    pub mandate_ids: Vec<String>,
    /// What the rail is to pay.
    pub amount: Amount,
    /// Part of the mandates' value absorbed by earlier negative balances.
    pub offset: Amount,
    /// Clawed back from its mandates while it was open.
    #[serde(default)]
    pub clawed: i64,
    /// Open, paid or failed.
    pub status: BatchStatus,
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
}

/// A partner's balances, program currency, minor units.
/// Invariant: `earned - clawed_back == on_hold + payable + in_payout + paid`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Total earned (mandates issued).
    pub earned: i64,
    /// Total clawed back.
    pub clawed_back: i64,
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
    /// Every total stays within [`MAX_BOOK_TOTAL`] under v2 rules: the engine refuses a
    /// mandate that would take `earned` past it, and every other total is bounded by
    /// `earned` (what is clawed back, held, payable, in payout or paid was earned first; a
    /// negative payable is at most what was clawed back). An older log's v1 rules had no
    /// such bound, so the sums are checked against `i64` itself: leaving it is a bug, and
    /// crashes rather than wraps.
    fn post(&mut self, from: Account, to: Account, amount: i64, who: &str) {
        debug_assert!(from != to, "a posting moves money between two accounts");
        let add = |total: &mut i64, delta: i64| {
            *total = total.checked_add(delta).unwrap_or_else(|| panic!("book of {who}: a total overflows i64"));
        };
        match from {
            Account::Commission => add(&mut self.earned, amount),
            a => add(self.balance(a), -amount),
        }
        match to {
            Account::Commission => add(&mut self.clawed_back, amount),
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
            Account::Commission => unreachable!("the commission account is kept as its two sides"),
        }
    }

    fn assert_balanced(&self, who: &str) {
        // Within ±MAX_BOOK_TOTAL each, so these sums cannot overflow.
        assert_eq!(
            self.earned - self.clawed_back,
            self.on_hold + self.payable + self.in_payout + self.paid,
            "book of {who} is unbalanced: {self:?}"
        );
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
}

/// Something the engine still has to sign before the derived event is final.
#[derive(Debug, Clone)]
pub enum ToSign {
    /// A payment or clawback mandate.
    Mandate(Box<Mandate>),
    /// A program's open mandate.
    Open(OpenMandate),
}

/// A derived event, possibly waiting for its signature.
#[derive(Debug, Clone)]
pub struct Output {
    /// The event; its `mandate` field is filled by signing.
    pub envelope: Envelope,
    /// What to sign, if anything.
    pub sign: Option<ToSign>,
}

/// What a fact caused: the fact as it will be stored, and its derived events.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Sequence the fact gets.
    pub seq: u64,
    /// The fact.
    pub fact: Envelope,
    /// Derived events, in log order after the fact.
    pub outputs: Vec<Output>,
    /// The fact's canonical bytes, when deciding needed them (their hash is in every
    /// mandate the fact caused), so they are not made twice.
    pub fact_bytes: Option<Vec<u8>>,
}

fn month_key(prefix: &str, t: DateTime<Utc>) -> String {
    format!("{prefix}\u{1f}{:04}-{:02}", t.year(), t.month())
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// Position name of hop `i` of `n`.
#[must_use]
pub fn role_of(i: usize, n: usize) -> &'static str {
    match (i, n) {
        (_, 1) => "sole",
        (0, _) => "originator",
        (i, n) if i + 1 == n => "closer",
        _ => "intermediary",
    }
}

/// Mandate id of hop `hop` of the conversion recorded at `seq`.
#[must_use]
pub fn mandate_id(seq: u64, hop: usize) -> String {
    format!("md_{seq}_{hop}")
}

/// Log position of the `position`-th `mandate_issued` record after the fact at `seq`
/// (the conversion, or its release: its derived events start with its mandates, in hop
/// order, one per hop owed something).
#[must_use]
pub fn mandate_seq(seq: u64, position: usize) -> Option<u64> {
    seq.checked_add(1)?.checked_add(u64::try_from(position).ok()?)
}

/// The log position of the payment mandate of hop `hop` of conversion `c`, whose
/// mandates follow the fact at `seq` (the conversion, or its release): one record per
/// hop that has a mandate, in hop order (`None` for a hop without one).
#[must_use]
pub fn mandate_seq_of(c: &Conversion, seq: u64, hop: usize) -> Option<u64> {
    if c.hops.get(hop)?.status == HopStatus::Nothing {
        return None;
    }
    let before = c.hops[..hop].iter().filter(|h| h.status != HopStatus::Nothing).count();
    mandate_seq(seq, before)
}

/// Parses a mandate id back into (conversion seq, hop).
#[must_use]
pub fn parse_mandate_id(id: &str) -> Option<(u64, usize)> {
    let rest = id.strip_prefix("md_")?;
    let (s, h) = rest.split_once('_')?;
    Some((s.parse().ok()?, h.parse().ok()?))
}

impl State {
    fn program(&self, id: &str) -> Result<&Program, Rejection> {
        self.programs.get(id).ok_or_else(|| Rejection::NotFound(format!("program '{id}'")))
    }

    /// A recorded conversion by id, with the sequence of its fact.
    fn conversion(&self, id: &str) -> Result<(u64, Conversion), Rejection> {
        let cs = self.conversions.seq_of(id).ok_or_else(|| Rejection::NotFound(format!("conversion '{id}'")))?;
        Ok((cs, self.conversions.get(cs).unwrap_or_else(|| unreachable!("conversion '{id}' is indexed at {cs}"))))
    }

    fn active_partner(&self, id: &str, program: &str) -> Result<&Partner, Rejection> {
        let p = self.partners.get(id).ok_or_else(|| Rejection::NotFound(format!("partner '{id}'")))?;
        if p.program != program {
            return Err(Rejection::Invalid(format!("partner '{id}' is not enrolled in program '{program}'")));
        }
        if p.suspended {
            return Err(Rejection::Invalid(format!("partner '{id}' is suspended")));
        }
        Ok(p)
    }

    /// Whether `agent` may act with `scope` at `t` (exists, not revoked, in its period).
    #[must_use]
    pub fn agent_may(&self, agent: &str, scope: AgentScope, t: DateTime<Utc>) -> Option<&Agent> {
        self.agents
            .get(agent)
            .filter(|a| !a.revoked && a.not_before <= t && t < a.expires_at && a.scopes.contains(&scope))
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

    fn book(&mut self, partner: &str) -> &mut Book {
        self.books.entry(partner.to_owned()).or_default()
    }

    /// Adds `revenue` to a closer's monthly volume (`key` from [`month_key`]), saturating:
    /// past every tier's `from` (≤ 10^15) a larger volume changes nothing.
    fn add_volume(&mut self, key: String, revenue: i64) {
        let v = self.volume.entry(key).or_default();
        *v = v.saturating_add(revenue);
    }
}

/// The engine: configuration plus state.
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: EngineConfig,
    state: State,
}

impl Engine {
    /// A new engine with empty state.
    #[must_use]
    pub fn new(cfg: EngineConfig) -> Self {
        Self { cfg, state: State::default() }
    }

    /// An engine resumed from a saved state.
    #[must_use]
    pub fn with_state(cfg: EngineConfig, state: State) -> Self {
        Self { cfg, state }
    }

    /// The state.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Decides what fact `env` (to be stored at `seq`) causes, and applies it. On
    /// rejection nothing changes.
    pub fn decide(&mut self, env: Envelope, seq: u64) -> Result<Decision, Rejection> {
        if !env.event.is_fact() {
            return Err(Rejection::NotAFact(env.event.kind()));
        }
        let mut d = Decider {
            cfg: &self.cfg,
            st: &self.state,
            env: &env,
            seq,
            outputs: Vec::new(),
            event_hash: None,
            fact_bytes: None,
        };
        let apply = d.run()?;
        let (outputs, fact_bytes) = (d.outputs, d.fact_bytes);
        apply(&mut self.state);
        let now = self.state.now.map_or(env.at, |n| n.max(env.at));
        self.state.now = Some(now);
        Ok(Decision { seq, fact: env, outputs, fact_bytes })
    }
}

type Apply = Box<dyn FnOnce(&mut State)>;

/// Payable hops named by a settlement or batch: positions (conversion seq, hop), their
/// net value and currency.
type Payable = (Vec<(u64, usize)>, i64, Currency);

struct Decider<'a> {
    cfg: &'a EngineConfig,
    st: &'a State,
    env: &'a Envelope,
    seq: u64,
    outputs: Vec<Output>,
    event_hash: Option<String>,
    fact_bytes: Option<Vec<u8>>,
}

impl Decider<'_> {
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

    fn derived(&mut self, event: Event, sign: Option<ToSign>) {
        let envelope = Envelope { v: 1, at: self.env.at, by: "engine".into(), key: None, cause: Some(self.seq), event };
        self.outputs.push(Output { envelope, sign });
    }

    fn event_hash(&mut self) -> String {
        use sha2::Digest;
        if let Some(h) = &self.event_hash {
            return h.clone();
        }
        let bytes = self.env.to_bytes();
        let h = hex::encode(sha2::Sha256::digest(&bytes));
        self.fact_bytes = Some(bytes);
        self.event_hash.get_or_insert(h).clone()
    }

    fn open_mandate(&mut self, spec: &ProgramSpec, version: u32, payees: Vec<String>) -> String {
        let id = format!("om_{}_{}", spec.program, self.seq);
        let mut constraints = vec![Constraint::AllowedPayees { payees }];
        if let Some(r) = &spec.payment_range {
            constraints.push(Constraint::AmountRange { currency: spec.currency, max: r.max, min: Some(r.min) });
        }
        if let Some(b) = &spec.budget {
            constraints.push(Constraint::Budget { max: b.max, currency: spec.currency, period: "month".into() });
        }
        constraints
            .push(Constraint::ExecutionDate { not_before: ts(spec.valid_from), not_after: spec.valid_until.map(ts) });
        let om = OpenMandate {
            vct: VCT_OPEN_MANDATE.into(),
            mandate_id: id.clone(),
            iss: self.cfg.vendor.clone(),
            iat: ts(self.env.at),
            program: spec.program.clone(),
            rule_version: version,
            constraints,
            salt: derive_salt(&self.cfg.salt_secret, &id),
        };
        self.derived(
            Event::OpenMandateIssued { mandate_id: id.clone(), mandate: String::new() },
            Some(ToSign::Open(om)),
        );
        id
    }

    fn payees(&self, program: &str, plus: Option<&str>, minus: Option<&str>) -> Vec<String> {
        let mut v: Vec<String> = self
            .st
            .partners
            .iter()
            .filter(|(id, p)| p.program == program && !p.suspended && Some(id.as_str()) != minus)
            .map(|(id, _)| id.clone())
            .collect();
        if let Some(p) = plus {
            v.push(p.to_owned());
            v.sort();
        }
        v
    }

    fn run(&mut self) -> Result<Apply, Rejection> {
        let at = self.env.at;
        match self.env.event.clone() {
            Event::ProgramPublished { spec } => {
                crate::rules::validate(&spec)?;
                if self.st.programs.contains_key(&spec.program) {
                    return Err(Rejection::Conflict(format!("program '{}' already exists", spec.program)));
                }
                let om = self.open_mandate(&spec, 1, Vec::new());
                let id = spec.program.clone();
                let program = Program {
                    versions: vec![RuleVersion { version: 1, effective_from: spec.valid_from.min(at), spec }],
                    open_mandate: om,
                };
                Ok(Box::new(move |s| {
                    s.programs.insert(id, program);
                }))
            }
            Event::ProgramAmended { spec, effective_from } => {
                crate::rules::validate(&spec)?;
                let p = self.st.program(&spec.program)?;
                let latest = p.latest();
                if latest.spec.currency != spec.currency {
                    return Err(Rejection::Invalid("an amendment cannot change the program currency".into()));
                }
                if effective_from < latest.effective_from {
                    return Err(Rejection::Invalid(
                        "an amendment cannot take effect before the rules it replaces".into(),
                    ));
                }
                let version = latest.version + 1;
                let payees = self.payees(&spec.program, None, None);
                let om = self.open_mandate(&spec, version, payees);
                let id = spec.program.clone();
                Ok(Box::new(move |s| {
                    let p = s.programs.get_mut(&id).unwrap_or_else(|| unreachable!());
                    p.versions.push(RuleVersion { version, effective_from, spec });
                    p.open_mandate = om;
                }))
            }
            Event::PartnerEnrolled { partner, program, name, role } => {
                check_id("partner", &partner)?;
                check_text("partner name", &name)?;
                let p = self.st.program(&program)?;
                if self.st.partners.values().filter(|x| x.program == program).count()
                    >= crate::model::MAX_PARTNERS_PER_PROGRAM
                {
                    return Err(Rejection::Invalid(format!(
                        "program '{program}' already has {} partners (the most a program may have)",
                        crate::model::MAX_PARTNERS_PER_PROGRAM
                    )));
                }
                if self.st.partners.contains_key(&partner) {
                    return Err(Rejection::Conflict(format!("partner '{partner}' is already enrolled")));
                }
                let rv = p.latest().clone();
                let payees = self.payees(&program, Some(&partner), None);
                let om = self.open_mandate(&rv.spec, rv.version, payees);
                Ok(Box::new(move |s| {
                    s.partners.insert(partner, Partner { program: program.clone(), name, role, suspended: false });
                    if let Some(p) = s.programs.get_mut(&program) {
                        p.open_mandate = om;
                    }
                }))
            }
            Event::PartnerSuspended { partner, reason } => {
                check_text("reason", &reason)?;
                let p = self
                    .st
                    .partners
                    .get(&partner)
                    .ok_or_else(|| Rejection::NotFound(format!("partner '{partner}'")))?;
                if p.suspended {
                    return Err(Rejection::Conflict(format!("partner '{partner}' is already suspended")));
                }
                let program = p.program.clone();
                let rv = self.st.program(&program)?.latest().clone();
                let payees = self.payees(&program, None, Some(&partner));
                let om = self.open_mandate(&rv.spec, rv.version, payees);
                Ok(Box::new(move |s| {
                    if let Some(p) = s.partners.get_mut(&partner) {
                        p.suspended = true;
                    }
                    if let Some(p) = s.programs.get_mut(&program) {
                        p.open_mandate = om;
                    }
                }))
            }
            Event::AgentAuthorised { agent, partner, public_key, scopes, not_before, expires_at } => {
                check_id("agent", &agent)?;
                if !self.st.partners.contains_key(&partner) {
                    return Err(Rejection::NotFound(format!("partner '{partner}'")));
                }
                if self.st.agents.contains_key(&agent) {
                    return Err(Rejection::Conflict(format!("agent '{agent}' already exists")));
                }
                if expires_at <= not_before {
                    return Err(Rejection::Invalid("agent expires_at must be after not_before".into()));
                }
                if scopes.is_empty() {
                    return Err(Rejection::Invalid("an agent needs at least one scope".into()));
                }
                if let Some(k) = &public_key {
                    k.verifying_key().map_err(|e| Rejection::Invalid(format!("agent public key: {e}")))?;
                }
                Ok(Box::new(move |s| {
                    s.agents
                        .insert(agent, Agent { partner, scopes, not_before, expires_at, revoked: false, public_key });
                }))
            }
            Event::AgentRevoked { agent } => {
                let a = self.st.agents.get(&agent).ok_or_else(|| Rejection::NotFound(format!("agent '{agent}'")))?;
                if a.revoked {
                    return Err(Rejection::Conflict(format!("agent '{agent}' is already revoked")));
                }
                Ok(Box::new(move |s| {
                    if let Some(a) = s.agents.get_mut(&agent) {
                        a.revoked = true;
                    }
                }))
            }
            Event::LeadRegistered { lead, program, customer, customer_key, partner } => {
                self.lead_registered(lead, program, customer, customer_key.unwrap_or(CustomerKey::V1), partner, at)
            }
            Event::LeadHandedOff { lead, from, to } => self.lead_handed_off(lead, from, to),
            Event::ConversionRecorded { conversion, lead, revenue, occurred_at, subscription_month, fx } => {
                self.conversion(conversion, lead, revenue, occurred_at, subscription_month, fx.map(|f| f.rate))
            }
            Event::RefundRecorded { refund, conversion, size } => self.refund(refund, conversion, size),
            Event::HoldsAdvanced { to } => {
                if to > at {
                    return Err(Rejection::Invalid(format!(
                        "holds can be advanced to the log time ({at}) at the latest, not to {to}"
                    )));
                }
                Ok(self.advance(to))
            }
            Event::PayoutBatched { batch, partner, rail, mandate_ids } => {
                check_text("rail", &rail)?;
                self.batch(batch, partner, rail, mandate_ids)
            }
            Event::ConversionReleased { conversion } => self.release(conversion),
            Event::SettlementConfirmed { settlement, batch, partner, mandate_ids, rail, confirmation_id } => {
                check_text("rail", &rail)?;
                check_text("confirmation_id", &confirmation_id)?;
                self.settle(settlement, partner, rail, mandate_ids, batch, Ok(confirmation_id))
            }
            Event::SettlementFailed { settlement, batch, partner, mandate_ids, rail, error } => {
                check_text("rail", &rail)?;
                check_text("error", &error)?;
                self.settle(settlement, partner, rail, mandate_ids, batch, Err(error))
            }
            other => Err(Rejection::NotAFact(other.kind())),
        }
    }

    fn lead_registered(
        &mut self,
        lead: String,
        program: String,
        customer: String,
        version: CustomerKey,
        partner: String,
        at: DateTime<Utc>,
    ) -> Result<Apply, Rejection> {
        check_id("lead", &lead)?;
        let customer = crate::customer::key(version, &customer).map_err(Rejection::Invalid)?;
        let prog = self.st.program(&program)?;
        self.st.active_partner(&partner, &program)?;
        if self.st.leads.contains_key(lead.as_str()) {
            return Err(Rejection::Conflict(format!("lead '{lead}' already exists")));
        }
        let window = Duration::days(i64::from(prog.latest().spec.attribution_window_days));
        let open = |(_, x): &(CompactString, Lead)| x.registered_at + window > at;
        // v1 compares recorded keys exactly, as it always did; v2 compares v2 forms, those
        // of keys recorded under v1 too (crate::customer).
        let owner = match version {
            CustomerKey::V1 => self.st.leads.owner(&program, &customer).filter(open),
            CustomerKey::V2 => self.st.leads.owners_folded(&program, &customer).into_iter().find(open),
        }
        .map(|(l, _)| l.to_string());
        let chain = vec![partner];
        let (outcome, dup) = match &owner {
            Some(o) => ("duplicate", Some(o.clone())),
            None => ("owner", None),
        };
        self.derived(
            Event::LeadOutcome {
                lead: lead.clone(),
                outcome: outcome.into(),
                owner: dup.clone(),
                chain: chain.clone(),
            },
            None,
        );
        Ok(Box::new(move |s| {
            let owns = dup.is_none();
            let (program, customer) = (program.into(), customer.into());
            let chain = chain.into_iter().map(CompactString::from).collect();
            let duplicate_of = dup.map(CompactString::from);
            s.leads.insert(&lead, &Lead { program, customer, chain, registered_at: at, duplicate_of });
            if owns {
                s.leads.set_owner(&lead);
            }
        }))
    }

    fn lead_handed_off(&mut self, lead: String, from: String, to: String) -> Result<Apply, Rejection> {
        let l = self.st.leads.get(lead.as_str()).ok_or_else(|| Rejection::NotFound(format!("lead '{lead}'")))?;
        if let Some(o) = &l.duplicate_of {
            return Err(Rejection::Invalid(format!("lead '{lead}' is a duplicate of '{o}' and cannot be handed off")));
        }
        if l.chain.last().map(CompactString::as_str) != Some(from.as_str()) {
            return Err(Rejection::Invalid(format!(
                "'{from}' does not hold lead '{lead}' (its last hop is '{}')",
                l.chain.last().map_or("", CompactString::as_str)
            )));
        }
        if l.chain.iter().any(|p| *p == to) {
            return Err(Rejection::Invalid(format!(
                "handing lead '{lead}' to '{to}' would make a referral cycle (already in the chain)"
            )));
        }
        if l.chain.len() >= MAX_HOPS {
            return Err(Rejection::Invalid(format!(
                "lead '{lead}' already has {MAX_HOPS} hops (the most a chain may have)"
            )));
        }
        self.st.active_partner(&from, &l.program)?;
        self.st.active_partner(&to, &l.program)?;
        let mut chain: Vec<String> = l.chain.iter().map(ToString::to_string).collect();
        chain.push(to);
        self.derived(
            Event::LeadOutcome { lead: lead.clone(), outcome: "handed_off".into(), owner: None, chain: chain.clone() },
            None,
        );
        Ok(Box::new(move |s| {
            s.leads.update(&lead, |l| l.chain = chain.into_iter().map(CompactString::from).collect());
        }))
    }

    #[allow(clippy::too_many_lines)]
    fn conversion(
        &mut self,
        id: String,
        lead_id: String,
        revenue: Amount,
        occurred_at: DateTime<Utc>,
        month: Option<u32>,
        fx: Option<Decimal>,
    ) -> Result<Apply, Rejection> {
        check_id("conversion", &id)?;
        revenue.check_sign(settle_mandates::money::Sign::Positive)?;
        if occurred_at > self.env.at {
            return Err(Rejection::Invalid(format!(
                "occurred_at {occurred_at} is after the log time {}: a deal is recorded once it is won",
                self.env.at
            )));
        }
        if self.st.conversions.seq_of(&id).is_some() {
            return Err(Rejection::Conflict(format!("conversion '{id}' is already recorded")));
        }
        if fx.is_some_and(|r| r <= Decimal::ZERO) {
            return Err(Rejection::Invalid("fx rate must be positive".into()));
        }
        check_id("lead", &lead_id)?;
        let seq = self.seq;
        let no = |this: &mut Self, conv: Conversion, outcome: &str, reason: String| -> Result<Apply, Rejection> {
            this.derived(
                Event::ConversionOutcome {
                    conversion: conv.id.to_string(),
                    outcome: outcome.into(),
                    reason: Some(reason),
                    pool: conv.pool,
                    rule_version: (conv.rule_version > 0).then_some(conv.rule_version),
                },
                None,
            );
            Ok(Box::new(move |s: &mut State| {
                s.conversions.insert(seq, &conv);
            }))
        };
        let Some(lead) = self.st.leads.get(lead_id.as_str()) else {
            // A deal no partner registered: recorded, so the log holds every won deal, but
            // it belongs to no program and earns nothing.
            let conv =
                Conversion::recorded(&id, CompactString::default(), 0, revenue, Amount::zero(revenue.currency()));
            return no(self, conv, "no_commission", format!("no lead '{lead_id}' is registered"));
        };
        let prog = self.st.program(&lead.program)?;
        let rv = prog.rules_at(occurred_at).clone();
        let spec = &rv.spec;
        let zero = Amount::zero(spec.currency);
        let mut conv = Conversion::recorded(&id, lead.program.clone(), rv.version, revenue, zero);
        if let Some(o) = &lead.duplicate_of {
            return no(self, conv, "no_commission", format!("lead is a duplicate of '{o}'"));
        }
        let window = Duration::days(i64::from(spec.attribution_window_days));
        if occurred_at < lead.registered_at || occurred_at >= lead.registered_at + window {
            return no(
                self,
                conv,
                "no_commission",
                format!("deal occurred outside the lead's {}-day attribution window", spec.attribution_window_days),
            );
        }
        if let (Some(m), Some(limit)) = (month, spec.pool.recurring_months)
            && (m == 0 || m > limit)
        {
            return no(
                self,
                conv,
                "no_commission",
                format!("subscription month {m} is beyond the first {limit} months that earn"),
            );
        }
        let revenue_prog = if revenue.currency() == spec.currency {
            revenue.minor_units()
        } else {
            let Some(rate) = fx else {
                return no(
                    self,
                    conv,
                    "no_commission",
                    format!(
                        "revenue in {} but program pays in {} and no fx rate was given",
                        revenue.currency(),
                        spec.currency
                    ),
                );
            };
            arith::times(spec.allocation(), revenue, rate, spec.currency, spec.pool_rounding)
                .map_err(|_| Rejection::Invalid("revenue × fx rate is out of range".into()))?
                .minor_units()
        };
        let chain: Vec<String> = lead.chain.iter().map(ToString::to_string).collect();
        // A suspended partner holds the deal before its pool is computed (the outcome's
        // pool is zero, as it always was); a suspension is never lifted, so there is no
        // split to keep for a release.
        if let Some(p) = chain.iter().find(|p| self.st.partners.get(*p).is_none_or(|x| x.suspended)) {
            let reason = format!("partner '{p}' is suspended or unknown");
            let parts = Vec::new();
            let deal = HeldDeal { chain, parts, occurred_at, revenue: revenue_prog, reason: reason.clone() };
            conv.held = Some(Box::new(deal));
            return no(self, conv, "held", reason);
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
            let recorded = no(self, conv, "no_commission", "the pool of this deal rounds to 0".to_owned())?;
            let vkey = month_key(closer, occurred_at);
            return Ok(Box::new(move |s: &mut State| {
                recorded(s);
                s.add_volume(vkey, revenue_prog);
            }));
        }
        let parts = priced.parts;
        let deal = HeldDeal { chain, parts, occurred_at, revenue: revenue_prog, reason: String::new() };
        if let Some(reason) = self.breach(spec, &conv.program, &deal)? {
            conv.held = Some(Box::new(HeldDeal { reason: reason.clone(), ..deal }));
            return no(self, conv, "held", reason);
        }
        let open = prog.open_mandate.clone();
        self.pay(seq, conv, &rv, open, deal, None)
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
        let n = deal.chain.len();
        for (partner, amount) in deal.chain.iter().zip(&deal.parts) {
            let earned = self.st.books.get(partner).map_or(0, |b| b.earned);
            // v2 rule versions only: an older log whose totals went past it replays as it was.
            if spec.allocation() == Allocation::V2 && earned.saturating_add(*amount) > MAX_BOOK_TOTAL {
                return Err(Rejection::Invalid(format!(
                    "partner '{partner}' would have earned more than {} in all (the limit of a book's totals)",
                    Amount::from_minor(MAX_BOOK_TOTAL, spec.currency)?
                )));
            }
        }
        // Exactly as many hops as the chain has: the state keeps them for the deal's life.
        conv.hops.reserve_exact(n);
        for (i, (partner, amount)) in deal.chain.iter().zip(&deal.parts).enumerate() {
            // Under v2 nothing owed is nothing signed: a hop of 0 gets no mandate.
            if *amount == 0 && spec.allocation() == Allocation::V2 {
                let h = Hop {
                    partner: partner.as_str().into(),
                    amount: 0,
                    clawed: 0,
                    status: HopStatus::Nothing,
                    payable_at,
                };
                conv.hops.push(h);
                continue;
            }
            let mid = mandate_id(seq, i);
            let amt = Amount::from_minor(*amount, spec.currency)?;
            let m = Mandate {
                vct: Mandate::vct_for(Direction::Payment).into(),
                transaction_id: mid.clone(),
                payee: Payee { id: partner.clone() },
                payment_amount: amt,
                payment_instrument: Instrument { kind: "settle.commission_account".into(), id: partner.clone() },
                direction: Direction::Payment,
                iss: self.cfg.vendor.clone(),
                iat: ts(self.env.at),
                execution_date: payable_at,
                basis: MandateBasis {
                    program: conv.program.to_string(),
                    rule_version: rv.version,
                    rounding: spec.rounding_id(),
                    open_mandate: open.clone(),
                    conversion: conv.id.to_string(),
                    hop: u32::try_from(i).unwrap_or(u32::MAX),
                    hops: u32::try_from(n).unwrap_or(u32::MAX),
                    role: role_of(i, n).into(),
                    pool,
                    log: log.clone(),
                    caused_by: self.env.by.clone(),
                    reverses: None,
                },
                salt: derive_salt(&self.cfg.salt_secret, &mid),
            };
            self.derived(
                Event::MandateIssued { mandate_id: mid, partner: partner.clone(), amount: amt, mandate: String::new() },
                Some(ToSign::Mandate(Box::new(m))),
            );
            conv.hops.push(Hop { partner: partner.as_str().into(), amount: *amount, clawed: 0, status, payable_at });
        }
        self.derived(
            Event::ConversionOutcome {
                conversion: conv.id.to_string(),
                outcome: "settled".into(),
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

    fn release(&mut self, conversion: String) -> Result<Apply, Rejection> {
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

    fn refund(&mut self, refund: String, conversion: String, size: RefundSize) -> Result<Apply, Rejection> {
        check_id("refund", &refund)?;
        if self.st.refunds.contains_key(&refund) {
            return Err(Rejection::Conflict(format!("refund '{refund}' is already recorded")));
        }
        let (cseq, c) = self.st.conversion(&conversion)?;
        let left = c.revenue.minor_units() - c.refunded;
        let cur = c.revenue.currency();
        let amount = match size {
            RefundSize::Full => left,
            RefundSize::Fraction(f) => {
                if f <= Decimal::ZERO || f > Decimal::ONE {
                    return Err(Rejection::Invalid(format!("refund fraction {f} is not in (0, 1]")));
                }
                // A deal of no program (no registered lead) has no rules to name an
                // arithmetic: it rounds half-even as it always did (v1), so older logs
                // replay as they were (its pool is 0: only what is refunded depends on it).
                let (allocation, rounding) = self.st.programs.get(c.program.as_str()).map_or(
                    (Allocation::V1, settle_mandates::money::Rounding::HalfEven),
                    |p| {
                        let spec = &p.version(c.rule_version).spec;
                        (spec.allocation(), spec.pool_rounding)
                    },
                );
                let a = arith::times(allocation, c.revenue, f, cur, rounding)?;
                if a.is_zero() {
                    return Err(Rejection::Invalid(format!("a refund of {f} of {} rounds to nothing", c.revenue)));
                }
                a.minor_units()
            }
            RefundSize::Amount(a) => {
                if a.currency() != cur {
                    return Err(Rejection::Invalid(format!(
                        "refund in {} but the conversion is in {cur}",
                        a.currency()
                    )));
                }
                a.check_sign(settle_mandates::money::Sign::Positive)?;
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
        let refunded_after = c.refunded + amount;
        let seq = self.seq;
        let cur = c.pool.currency();
        // Cumulative clawback target: pool × refunded / revenue, by the pool rounding;
        // the increment is split over what each hop still holds (never more).
        let mut claws: Vec<(usize, i64)> = Vec::new();
        if !c.hops.is_empty() {
            let spec = &self.st.programs[c.program.as_str()].version(c.rule_version).spec;
            let pool = c.pool.minor_units();
            let clawed: i64 = c.hops.iter().map(|h| h.clawed).sum();
            let target = arith::clawback_target(
                spec.allocation(),
                pool,
                refunded_after,
                c.revenue.minor_units(),
                cur,
                spec.pool_rounding,
            )?;
            let delta = (target - clawed).max(0);
            let holds: Vec<i64> = c.hops.iter().map(|h| h.amount - h.clawed).collect();
            let parts = arith::allocate_clawback(spec.allocation(), delta, &holds);
            for (i, p) in parts.into_iter().enumerate() {
                if p > 0 {
                    assert!(p <= c.hops[i].amount - c.hops[i].clawed, "clawback exceeds what the hop holds");
                    claws.push((i, p));
                }
            }
            let n = c.hops.len();
            for &(i, p) in &claws {
                let h = &c.hops[i];
                let orig = c.mandate_id(cseq, i);
                let cb = format!("cb_{seq}_{i}");
                let amt = Amount::from_minor(p, cur)?;
                let committed = matches!(h.status, HopStatus::Paid | HopStatus::Batched);
                let offset = Amount::from_minor(if committed { p } else { 0 }, cur)?;
                let m = Mandate {
                    vct: Mandate::vct_for(Direction::Clawback).into(),
                    transaction_id: cb.clone(),
                    payee: Payee { id: h.partner.to_string() },
                    payment_amount: amt,
                    payment_instrument: Instrument {
                        kind: "settle.commission_account".into(),
                        id: h.partner.to_string(),
                    },
                    direction: Direction::Clawback,
                    iss: self.cfg.vendor.clone(),
                    iat: ts(self.env.at),
                    execution_date: ts(self.env.at),
                    basis: MandateBasis {
                        program: c.program.to_string(),
                        rule_version: c.rule_version,
                        rounding: spec.rounding_id(),
                        open_mandate: self.st.programs[c.program.as_str()].open_mandate.clone(),
                        conversion: conversion.clone(),
                        hop: u32::try_from(i).unwrap_or(u32::MAX),
                        hops: u32::try_from(n).unwrap_or(u32::MAX),
                        role: role_of(i, n).into(),
                        pool: c.pool,
                        log: LogRef { seq, event_hash: self.event_hash() },
                        caused_by: self.env.by.clone(),
                        reverses: Some(orig.clone()),
                    },
                    salt: derive_salt(&self.cfg.salt_secret, &cb),
                };
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
            }
        }
        Ok(Box::new(move |s| {
            s.refunds.insert(refund, seq);
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
        }))
    }

    fn advance(&mut self, to: DateTime<Utc>) -> Apply {
        let t = ts(to);
        // Released mandates by currency, each with what it releases (amount − clawed).
        let mut released = BTreeMap::<Currency, Vec<(String, i64)>>::new();
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
        // One event per currency and per chunk of ids, each with its exact total: a chunk
        // ends at MAX_RELEASED_PER_EVENT ids, or before its total would pass what an amount
        // may be (10^15), so a total is never out of range (it was written as 0 before).
        for (cur, items) in &released {
            let mut start = 0;
            while start < items.len() {
                let (mut end, mut sum) = (start, 0i64);
                while end < items.len()
                    && end - start < crate::model::MAX_RELEASED_PER_EVENT
                    && (end == start || sum + items[end].1 <= settle_mandates::money::MAX_MINOR_UNITS)
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

    /// The hops `ids` name, each `partner`'s and payable, none twice: their positions,
    /// what they are worth now (amount − clawed) and their currency.
    fn payable_hops(&self, partner: &str, ids: &[String]) -> Result<Payable, Rejection> {
        if ids.is_empty() || ids.len() > MAX_SETTLEMENT_MANDATES {
            return Err(Rejection::Invalid(format!("name 1..={MAX_SETTLEMENT_MANDATES} mandates")));
        }
        let mut hops = Vec::with_capacity(ids.len());
        let mut net = 0i64;
        let mut cur = None;
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            if parse_mandate_id(id).is_none() {
                return Err(Rejection::Invalid(format!("'{id}' is not a payment mandate id")));
            }
            let (cs, i, c) = self.st.mandate_hop(id).ok_or_else(|| Rejection::NotFound(format!("mandate '{id}'")))?;
            let h = &c.hops[i];
            if h.partner != partner {
                return Err(Rejection::Invalid(format!("mandate '{id}' pays another partner")));
            }
            if h.status != HopStatus::Payable {
                return Err(Rejection::Invalid(
                    format!("mandate '{id}' is not payable (it is {:?})", h.status).to_lowercase(),
                ));
            }
            if !seen.insert(id.as_str()) {
                return Err(Rejection::Invalid(format!("mandate '{id}' is named twice")));
            }
            cur = Some(c.pool.currency());
            net += h.amount - h.clawed;
            hops.push((cs, i));
        }
        Ok((hops, net, cur.unwrap_or_else(|| unreachable!("ids is not empty"))))
    }

    fn partner_book(&self, partner: &str) -> Result<Book, Rejection> {
        self.st
            .books
            .get(partner)
            .copied()
            .ok_or_else(|| Rejection::NotFound(format!("partner '{partner}' with commissions")))
    }

    fn batch(&mut self, batch: String, partner: String, rail: String, ids: Vec<String>) -> Result<Apply, Rejection> {
        check_id("payout batch", &batch)?;
        if self.st.batches.contains_key(&batch) {
            return Err(Rejection::Conflict(format!("payout batch '{batch}' already exists")));
        }
        let book = self.partner_book(&partner)?;
        let (hops, net, cur) = self.payable_hops(&partner, &ids)?;
        // What the rail pays: the mandates' value, less what earlier clawbacks of paid
        // money left owing (a negative payable).
        let amount = Amount::from_minor(net.min(book.payable_now()), cur)?;
        let offset = Amount::from_minor(net - amount.minor_units(), cur)?;
        self.derived(
            Event::PayoutBatchCreated {
                batch: batch.clone(),
                partner: partner.clone(),
                rail: rail.clone(),
                amount,
                offset,
                mandate_ids: ids.clone(),
            },
            None,
        );
        Ok(Box::new(move |s| {
            for (cs, i) in hops {
                s.conversions.update(cs, |c| {
                    if let Some(h) = c.hops.get_mut(i) {
                        h.status = HopStatus::Batched;
                    }
                });
            }
            s.book(&partner).post(Account::Payable, Account::InPayout, amount.minor_units(), &partner);
            for id in &ids {
                s.in_flight.insert(id.clone(), batch.clone());
            }
            let status = BatchStatus::Open;
            s.batches.insert(batch, Batch { partner, rail, mandate_ids: ids, amount, offset, clawed: 0, status });
        }))
    }

    fn settle(
        &mut self,
        settlement: String,
        partner: String,
        rail: String,
        ids: Vec<String>,
        batch: Option<String>,
        said: Result<String, String>,
    ) -> Result<Apply, Rejection> {
        check_id("settlement", &settlement)?;
        if self.st.settlements.contains_key(&settlement) {
            return Err(Rejection::Conflict(format!("settlement '{settlement}' is already recorded")));
        }
        if let Some(b) = batch {
            return self.settle_batch(settlement, partner, &rail, ids, b, said);
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
            for (cs, i) in hops {
                s.conversions.update(cs, |c| {
                    if let Some(h) = c.hops.get_mut(i) {
                        h.status = HopStatus::Paid;
                    }
                });
            }
            s.book(&partner).post(Account::Payable, Account::Paid, paid, &partner);
        }))
    }

    /// A rail's answer for a whole payout batch: paid (the mandates are paid) or failed
    /// (they are payable again).
    fn settle_batch(
        &mut self,
        settlement: String,
        partner: String,
        rail: &str,
        ids: Vec<String>,
        batch: String,
        said: Result<String, String>,
    ) -> Result<Apply, Rejection> {
        let b = self.st.batches.get(&batch).ok_or_else(|| Rejection::NotFound(format!("payout batch '{batch}'")))?;
        if b.partner != partner {
            return Err(Rejection::Invalid(format!(
                "payout batch '{batch}' pays partner '{}', not '{partner}'",
                b.partner
            )));
        }
        if b.status != BatchStatus::Open {
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
        let hops: Vec<(u64, usize)> =
            ids.iter().filter_map(|id| self.st.mandate_hop(id).map(|(cs, i, _)| (cs, i))).collect();
        let (amount, offset, clawed) = (b.amount, b.offset, b.clawed);
        let seq = self.seq;
        let ok = said.is_ok();
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
            for (cs, i) in hops {
                s.conversions.update(cs, |c| {
                    if let Some(h) = c.hops.get_mut(i) {
                        h.status = status;
                    }
                });
            }
            if let Some(b) = s.batches.get_mut(&batch) {
                b.status = if ok { BatchStatus::Paid } else { BatchStatus::Failed };
                // A closed batch is never settled again: its mandates (in the log, with
                // the batch's fact) need not stay in the state for the rest of its life.
                for id in std::mem::take(&mut b.mandate_ids) {
                    s.in_flight.remove(&id);
                }
            }
            let b = s.book(&partner);
            // Paid: what was clawed in flight is now a debt of money that left. Failed:
            // the batch's money is payable again, less what was clawed from it.
            b.clawed_in_payout -= clawed;
            let to = if ok { Account::Paid } else { Account::Payable };
            b.post(Account::InPayout, to, amount.minor_units(), &partner);
        }))
    }
}

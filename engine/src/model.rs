//! The log's vocabulary: programs and their rules, and every event type, each versioned.
//!
//! Facts are what callers tell the engine (past tense: `conversion_recorded`). Derived
//! events are what the engine concluded from a fact (`mandate_issued`); they follow their
//! fact in the log, in the same atomic append, and replaying the facts reproduces them
//! byte for byte.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use settle_mandates::money::{Amount, Currency, Rounding};

/// Most hops in a referral chain.
pub const MAX_HOPS: usize = 8;
/// Most tiers in a pool rule.
pub const MAX_TIERS: usize = 16;
/// Most spiffs in a pool rule.
pub const MAX_SPIFFS: usize = 16;
/// Most levels in a per-level split.
pub const MAX_LEVELS: usize = MAX_HOPS;
/// Most partners in one program (its open mandate lists them all).
pub const MAX_PARTNERS_PER_PROGRAM: usize = 4096;
/// Longest free text (names, reasons, rail codes), bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most mandate ids in one `holds_released` event (more are split over several).
pub const MAX_RELEASED_PER_EVENT: usize = 10_000;
/// Longest id, bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Most mandates named in one settlement.
pub const MAX_SETTLEMENT_MANDATES: usize = 10_000;
/// Longest holding period, days.
pub const MAX_HOLDING_DAYS: u32 = 365;
/// Longest attribution window, days.
pub const MAX_WINDOW_DAYS: u32 = 730;

/// A percentage, `"10"` = 10 %, exact, between 0 and 100 with at most 6 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Percent(Decimal);

impl Percent {
    /// The value as a fraction of one (10 % → 0.1).
    #[must_use]
    pub fn fraction(self) -> Decimal {
        self.0 / Decimal::ONE_HUNDRED
    }
    /// The value in percent.
    #[must_use]
    pub fn value(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Percent {
    type Error = String;
    fn try_from(d: Decimal) -> Result<Self, String> {
        if d.is_sign_negative() || d > Decimal::ONE_HUNDRED || d.normalize().scale() > 6 {
            return Err(format!("percentage {d} must be between 0 and 100 with at most 6 decimals"));
        }
        Ok(Self(d.normalize()))
    }
}

impl From<Percent> for Decimal {
    fn from(p: Percent) -> Self {
        p.0
    }
}

/// How tiers apply to a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// The whole deal earns the rate of the tier the closer's period volume reaches
    /// (this deal included).
    Tiered,
    /// Each part of the deal earns the rate of the volume band it falls in.
    Marginal,
}

/// A volume tier: from `from` minor units of the closer's revenue in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Volume threshold, minor units of the program currency.
    pub from: i64,
    /// Rate from there on.
    pub percent: Percent,
}

/// A time-boxed bonus added to the pool for deals that occur in its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spiff {
    /// Name shown on statements.
    pub name: String,
    /// Window start (inclusive).
    pub from: DateTime<Utc>,
    /// Window end (exclusive).
    pub until: DateTime<Utc>,
    /// Extra percentage of revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
    /// Extra flat amount, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<i64>,
}

/// How big the pool of a deal is. `Default` is the empty rule (no pool at all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRule {
    /// Percentage of revenue (replaced by `tiers` when those are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
    /// Flat amount per deal, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<i64>,
    /// Largest pool per deal, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<i64>,
    /// Smallest pool per deal, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i64>,
    /// Volume tiers (ascending `from`, the first from 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// How tiers apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_mode: Option<TierMode>,
    /// Bonuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spiffs: Vec<Spiff>,
    /// Pay only the first N months of a subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_months: Option<u32>,
}

/// A position in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// The partner who registered the lead (hop 0).
    Originator,
    /// Partners between originator and closer.
    Intermediaries,
    /// The partner who closed (last hop).
    Closer,
}

/// How the pool is split along the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitRule {
    /// Shares of the pool by position; what is left (including the share of an absent
    /// position) goes to `remaining`. Intermediaries share their part equally.
    Shares {
        /// Share of the originator.
        originator: Percent,
        /// Share of all intermediaries together.
        intermediaries: Percent,
        /// Share of the closer.
        closer: Percent,
        /// Who takes the rest.
        remaining: Position,
    },
    /// Per-level rates of revenue, closer first (10 % / 2 % / 1 %): the pool is their
    /// sum over the hops present. `pool` percent, flat and tiers must be absent.
    Levels {
        /// Rate of revenue per level, level 1 = closer.
        rates: Vec<Percent>,
    },
}

/// Budget per period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most pool per calendar month (UTC), minor units.
    pub max: i64,
}

/// Bounds on each payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRange {
    /// Smallest hop payment, minor units.
    pub min: i64,
    /// Largest hop payment, minor units.
    pub max: i64,
}

/// A program's rules, as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// Program id.
    pub program: String,
    /// Display name.
    pub name: String,
    /// Currency of commissions.
    pub currency: Currency,
    /// Days a commission stays on hold (refund window) before it is payable.
    pub holding_days: u32,
    /// Days after a lead's registration in which its deals earn.
    pub attribution_window_days: u32,
    /// Rounding of the pool to minor units (named, no default).
    pub pool_rounding: Rounding,
    /// The pool.
    pub pool: PoolRule,
    /// The split.
    pub split: SplitRule,
    /// Budget per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Bounds on each payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_range: Option<PaymentRange>,
    /// Program start.
    pub valid_from: DateTime<Utc>,
    /// Program end (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

/// The split allocation policy id stamped into every mandate.
pub const SPLIT_POLICY: &str = "largest_remainder.v1";

impl ProgramSpec {
    /// The rounding policy id of this program: split policy and pool rounding.
    #[must_use]
    pub fn rounding_id(&self) -> String {
        let r = serde_json::to_value(self.pool_rounding)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        format!("{SPLIT_POLICY}+pool.{r}")
    }
}

/// A partner's role, as users know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerRole {
    /// Finds and registers leads.
    Partner,
    /// Routes leads to others and earns for the handoff.
    Connector,
    /// Receives leads and closes.
    Receiver,
    /// Both sides.
    Master,
}

/// What an agent may do for its partner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentScope {
    /// Register leads and hand them off.
    LeadsWrite,
    /// Read own mandates, receipts, balances.
    Read,
}

/// Refund size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RefundSize {
    /// An amount of the conversion's currency.
    Amount(Amount),
    /// The rest of the revenue not yet refunded.
    Full,
}

/// Foreign exchange given with a conversion in another currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxRate {
    /// Program-currency units per one unit of the conversion's currency.
    pub rate: Decimal,
    /// Source of the rate (shown on statements).
    pub source: String,
}

/// Every event type. Facts first, then derived events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    // ---- facts ----
    /// A program was published.
    ProgramPublished {
        /// The rules.
        spec: ProgramSpec,
    },
    /// A program's rules were amended from `effective_from` on.
    ProgramAmended {
        /// The new rules (same program id and currency).
        spec: ProgramSpec,
        /// From when they apply (conversions occurring earlier keep the old rules).
        effective_from: DateTime<Utc>,
    },
    /// A partner joined a program.
    PartnerEnrolled {
        /// Partner id.
        partner: String,
        /// Program id.
        program: String,
        /// Display name.
        name: String,
        /// Role.
        role: PartnerRole,
    },
    /// A partner was suspended: no new leads, handoffs or mandates.
    PartnerSuspended {
        /// Partner id.
        partner: String,
        /// Why.
        reason: String,
    },
    /// A partner authorised an agent.
    AgentAuthorised {
        /// Agent id.
        agent: String,
        /// Partner it acts for.
        partner: String,
        /// What it may do.
        scopes: Vec<AgentScope>,
        /// Start.
        not_before: DateTime<Utc>,
        /// End (exclusive).
        expires_at: DateTime<Utc>,
    },
    /// An agent's authority was revoked.
    AgentRevoked {
        /// Agent id.
        agent: String,
    },
    /// A partner registered a customer.
    LeadRegistered {
        /// Lead id.
        lead: String,
        /// Program id.
        program: String,
        /// Normalised customer key (e.g. company domain).
        customer: String,
        /// Registering partner.
        partner: String,
    },
    /// A lead was handed to another partner (adds a hop).
    LeadHandedOff {
        /// Lead id.
        lead: String,
        /// Current last hop.
        from: String,
        /// New last hop.
        to: String,
    },
    /// A deal was won.
    ConversionRecorded {
        /// Conversion id.
        conversion: String,
        /// Lead id.
        lead: String,
        /// Revenue.
        revenue: Amount,
        /// When the deal was won.
        occurred_at: DateTime<Utc>,
        /// Month of a subscription (1 = first), for recurring limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_month: Option<u32>,
        /// Exchange rate when revenue is not in the program's currency.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fx: Option<FxRate>,
    },
    /// Revenue of a conversion was refunded (wholly or partly).
    RefundRecorded {
        /// Refund id.
        refund: String,
        /// Conversion id.
        conversion: String,
        /// How much.
        size: RefundSize,
    },
    /// Log time advanced: holds that end by `to` are released.
    HoldsAdvanced {
        /// New time.
        to: DateTime<Utc>,
    },
    /// Payable mandates of one partner were put into a payout batch for a rail: they are
    /// in flight (neither payable nor paid) until the batch is settled or fails.
    PayoutBatched {
        /// Batch id.
        batch: String,
        /// Partner.
        partner: String,
        /// Rail the batch is sent to.
        rail: String,
        /// Mandates in the batch.
        mandate_ids: Vec<String>,
    },
    /// The vendor released a held conversion: it is decided again against the program's
    /// current standing authorisation (after an amendment raised its budget or widened
    /// its range or validity) and settled if that now allows it.
    ConversionReleased {
        /// Conversion id.
        conversion: String,
    },
    /// A rail paid a partner's payable mandates (or a payout batch).
    SettlementConfirmed {
        /// Settlement id.
        settlement: String,
        /// The payout batch settled, if the mandates were batched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
        /// Partner.
        partner: String,
        /// Rail name (`book`, `sepa`, `stripe`, ...).
        rail: String,
        /// The rail's confirmation id.
        confirmation_id: String,
        /// Mandates paid.
        mandate_ids: Vec<String>,
    },
    /// A rail failed to pay.
    SettlementFailed {
        /// Settlement id.
        settlement: String,
        /// The payout batch that failed (its mandates are payable again), if batched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
        /// Partner.
        partner: String,
        /// Rail name.
        rail: String,
        /// The rail's error code.
        error: String,
        /// Mandates it tried to pay.
        mandate_ids: Vec<String>,
    },
    // ---- derived ----
    /// The program's standing authorisation (open mandate) was (re)issued.
    OpenMandateIssued {
        /// Its id.
        mandate_id: String,
        /// Compact JWS.
        mandate: String,
    },
    /// Outcome of a lead registration or handoff.
    LeadOutcome {
        /// Lead id.
        lead: String,
        /// `owner`, `duplicate`, `handed_off`.
        outcome: String,
        /// The lead that owns the customer, for duplicates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// The chain now.
        chain: Vec<String>,
    },
    /// Outcome of a conversion: the pool and what was done with it.
    ConversionOutcome {
        /// Conversion id.
        conversion: String,
        /// `settled`, `held`, `no_commission`.
        outcome: String,
        /// Why (for held and no_commission).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The pool (zero when none).
        pool: Amount,
        /// Rule version used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_version: Option<u32>,
    },
    /// One hop's payment mandate.
    MandateIssued {
        /// Mandate id.
        mandate_id: String,
        /// Payee.
        partner: String,
        /// Amount.
        amount: Amount,
        /// Compact JWS of the mandate.
        mandate: String,
    },
    /// One hop's clawback mandate.
    ClawbackIssued {
        /// Clawback mandate id.
        mandate_id: String,
        /// The mandate reversed.
        reverses: String,
        /// Partner.
        partner: String,
        /// Amount clawed back.
        amount: Amount,
        /// Part of it taken from money already paid (a negative payable to offset).
        offset: Amount,
        /// Compact JWS.
        mandate: String,
    },
    /// Holds ended: these mandates are payable.
    HoldsReleased {
        /// Mandates released.
        mandate_ids: Vec<String>,
        /// Total released.
        total: Amount,
    },
    /// A payout batch was made: what the rail is to pay.
    PayoutBatchCreated {
        /// Batch id.
        batch: String,
        /// Partner.
        partner: String,
        /// Rail.
        rail: String,
        /// Amount the rail is to pay.
        amount: Amount,
        /// Part of the mandates' value absorbed by earlier negative balances.
        offset: Amount,
        /// Mandates in the batch.
        mandate_ids: Vec<String>,
    },
    /// A settlement was booked.
    PayoutBooked {
        /// Settlement id.
        settlement: String,
        /// Partner.
        partner: String,
        /// Amount moved to paid.
        paid: Amount,
        /// Part of the mandates' value absorbed by earlier negative balances.
        offset: Amount,
        /// Mandates settled.
        mandate_ids: Vec<String>,
    },
    /// A settlement paid one mandate: a small leaf of its own, so that a partner's
    /// receipt of the payment carries this record, not the settlement's whole list.
    MandatePaid {
        /// The mandate.
        mandate_id: String,
        /// Settlement id.
        settlement: String,
        /// Partner paid.
        partner: String,
        /// Rail name.
        rail: String,
        /// The rail's confirmation id.
        confirmation_id: String,
    },
    /// A settlement failed to pay one mandate (its own leaf, as for [`Event::MandatePaid`]).
    MandatePaymentFailed {
        /// The mandate.
        mandate_id: String,
        /// Settlement id.
        settlement: String,
        /// Partner.
        partner: String,
        /// Rail name.
        rail: String,
        /// The rail's error code.
        error: String,
    },
}

impl Event {
    /// The `type` string.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProgramPublished { .. } => "program_published",
            Self::ProgramAmended { .. } => "program_amended",
            Self::PartnerEnrolled { .. } => "partner_enrolled",
            Self::PartnerSuspended { .. } => "partner_suspended",
            Self::AgentAuthorised { .. } => "agent_authorised",
            Self::AgentRevoked { .. } => "agent_revoked",
            Self::LeadRegistered { .. } => "lead_registered",
            Self::LeadHandedOff { .. } => "lead_handed_off",
            Self::ConversionRecorded { .. } => "conversion_recorded",
            Self::RefundRecorded { .. } => "refund_recorded",
            Self::HoldsAdvanced { .. } => "holds_advanced",
            Self::PayoutBatched { .. } => "payout_batched",
            Self::ConversionReleased { .. } => "conversion_released",
            Self::SettlementConfirmed { .. } => "settlement_confirmed",
            Self::SettlementFailed { .. } => "settlement_failed",
            Self::OpenMandateIssued { .. } => "open_mandate_issued",
            Self::LeadOutcome { .. } => "lead_outcome",
            Self::ConversionOutcome { .. } => "conversion_outcome",
            Self::MandateIssued { .. } => "mandate_issued",
            Self::ClawbackIssued { .. } => "clawback_issued",
            Self::HoldsReleased { .. } => "holds_released",
            Self::PayoutBatchCreated { .. } => "payout_batch_created",
            Self::PayoutBooked { .. } => "payout_booked",
            Self::MandatePaid { .. } => "mandate_paid",
            Self::MandatePaymentFailed { .. } => "mandate_payment_failed",
        }
    }

    /// True for facts (what callers say), false for what the engine derives.
    #[must_use]
    pub fn is_fact(&self) -> bool {
        is_fact_kind(self.kind())
    }
}

/// The event types the engine derives (every other type is a fact).
pub const DERIVED_TYPES: &[&str] = &[
    "open_mandate_issued",
    "lead_outcome",
    "conversion_outcome",
    "mandate_issued",
    "clawback_issued",
    "holds_released",
    "payout_batch_created",
    "payout_booked",
    "mandate_paid",
    "mandate_payment_failed",
];

/// True for a known fact type, by name (what a stored record's type says).
#[must_use]
pub fn is_fact_kind(kind: &str) -> bool {
    EVENT_TYPES.iter().any(|(k, _)| *k == kind) && !DERIVED_TYPES.contains(&kind)
}

/// Every event type name and its current version: what the ledger accepts.
pub const EVENT_TYPES: &[(&str, u32)] = &[
    ("program_published", 1),
    ("program_amended", 1),
    ("partner_enrolled", 1),
    ("partner_suspended", 1),
    ("agent_authorised", 1),
    ("agent_revoked", 1),
    ("lead_registered", 1),
    ("lead_handed_off", 1),
    ("conversion_recorded", 1),
    ("refund_recorded", 1),
    ("holds_advanced", 1),
    ("payout_batched", 1),
    ("conversion_released", 1),
    ("settlement_confirmed", 1),
    ("settlement_failed", 1),
    ("open_mandate_issued", 1),
    ("lead_outcome", 1),
    ("conversion_outcome", 1),
    ("mandate_issued", 1),
    ("clawback_issued", 1),
    ("holds_released", 1),
    ("payout_batch_created", 1),
    ("payout_booked", 1),
    ("mandate_paid", 1),
    ("mandate_payment_failed", 1),
];

/// Whether the log accepts `kind` at `version`.
#[must_use]
pub fn accepts(kind: &str, version: u32) -> bool {
    EVENT_TYPES.iter().any(|(k, v)| *k == kind && *v == version)
}

/// An event as stored: the envelope (RFC 8785 canonical JSON of this is the leaf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Version of the event type.
    pub v: u32,
    /// Log time of the fact (derived events carry their fact's time).
    pub at: DateTime<Utc>,
    /// Principal that caused it (`vendor:admin`, `partner:p1`, `agent:a1`, `engine`).
    pub by: String,
    /// Client idempotency key (facts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Sequence of the fact that caused it (derived only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<u64>,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// Canonical bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        // Events hold no floats and only string keys: always canonicalisable.
        settle_mandates::jcs::to_vec(self).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// Parses stored bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_types_are_known_types_and_facts_are_the_rest() {
        for d in DERIVED_TYPES {
            assert!(accepts(d, 1), "{d} is not a known event type");
            assert!(!is_fact_kind(d));
        }
        let facts = EVENT_TYPES.iter().filter(|(k, _)| is_fact_kind(k)).count();
        assert_eq!(facts + DERIVED_TYPES.len(), EVENT_TYPES.len());
        assert!(is_fact_kind("conversion_recorded") && !is_fact_kind("no_such_event"));
    }
}

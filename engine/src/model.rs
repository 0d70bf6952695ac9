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
/// What an id is: 1..=[`MAX_ID_BYTES`] bytes of `A-Z a-z 0-9 . _ : -`, as
/// [`crate::state::check_id`] checks it, as a regular expression.
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";
/// Most mandates named in one settlement.
pub const MAX_SETTLEMENT_MANDATES: usize = 10_000;
/// The largest magnitude of any total of a partner's book (earned, clawed back, on hold,
/// payable, in payout, paid), minor units: a fact that would take `earned` past it is
/// refused, so a total never wraps and is always shown as an amount.
pub const MAX_BOOK_TOTAL: i64 = settle_mandates::money::MAX_MINOR_UNITS;
/// Longest holding period, days.
pub const MAX_HOLDING_DAYS: u32 = 365;
/// Longest attribution window, days.
pub const MAX_WINDOW_DAYS: u32 = 730;

/// A percentage, `"10"` = 10 %, exact, between 0 and 100 with at most 6 decimals.
///
/// Read from a decimal string of exactly [`PERCENT_PATTERN`] (`"10"`, `"2.5"`,
/// `"33.333333"`, `"100"`; not `"1e1"`, `"+5"`, `".5"`, `"05"` or a JSON number); written
/// as its normalised decimal string, which that pattern always matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "Decimal")]
pub struct Percent(Decimal);

/// The strings a [`Percent`] is read from: 0 to 100, at most 6 decimals, no sign, no
/// exponent, no leading zeros.
pub const PERCENT_PATTERN: &str = r"^(?:100(?:\.0{1,6})?|(?:0|[1-9][0-9]?)(?:\.[0-9]{1,6})?)$";

impl Percent {
    /// Parses a percentage written as [`PERCENT_PATTERN`] says: the one decimal grammar
    /// of the doors ([`settle_mandates::money::parse_decimal`]), unsigned, with no
    /// leading zero and at most six decimals, from 0 to 100.
    pub fn parse(s: &str) -> Result<Self, String> {
        let refuse = || format!("percentage '{s}' must be a decimal string from 0 to 100 with at most 6 decimals");
        let int = s.split('.').next().unwrap_or_default();
        if s.starts_with('-') || (int.len() > 1 && int.starts_with('0')) {
            return Err(refuse());
        }
        let d = settle_mandates::money::parse_decimal(s).map_err(|_| refuse())?;
        if d.scale() > 6 {
            return Err(refuse());
        }
        Self::try_from(d)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Percent {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A percentage as a decimal string, \"10\" = 10 %: 0 to 100 with at most 6 decimals, never a number.",
            "pattern": PERCENT_PATTERN,
            "examples": ["10", "2.5", "33.333333"],
        })
    }
}

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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Volume threshold, minor units of the program currency.
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub from: i64,
    /// Rate from there on.
    pub percent: Percent,
}

/// A time-boxed bonus added to the pool for deals that occur in its window.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spiff {
    /// Name shown on statements.
    #[cfg_attr(feature = "schemars", schemars(length(max = MAX_TEXT_BYTES)))]
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
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub flat: Option<i64>,
}

/// How big the pool of a deal is. `Default` is the empty rule (no pool at all).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRule {
    /// Percentage of revenue (replaced by `tiers` when those are given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<Percent>,
    /// Flat amount per deal, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub flat: Option<i64>,
    /// Largest pool per deal, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub cap: Option<i64>,
    /// Smallest pool per deal, minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub floor: Option<i64>,
    /// Volume tiers (ascending `from`, the first from 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schemars", schemars(length(max = MAX_TIERS)))]
    pub tiers: Vec<Tier>,
    /// How tiers apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_mode: Option<TierMode>,
    /// Bonuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schemars", schemars(length(max = MAX_SPIFFS)))]
    pub spiffs: Vec<Spiff>,
    /// Pay only the first N months of a subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_months: Option<u32>,
}

/// A position in the chain.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
        #[cfg_attr(feature = "schemars", schemars(length(min = 1, max = MAX_LEVELS)))]
        rates: Vec<Percent>,
    },
}

/// Budget per period.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most pool per calendar month (UTC), minor units.
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub max: i64,
}

/// Bounds on each payment.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRange {
    /// Smallest hop payment, minor units.
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub min: i64,
    /// Largest hop payment, minor units.
    #[cfg_attr(feature = "schemars", schemars(range(min = 0, max = settle_mandates::money::MAX_MINOR_UNITS)))]
    pub max: i64,
}

/// The named arithmetic of a rule version: how its pool, split, FX, refund fractions
/// and clawbacks are computed and rounded. Stamped into every mandate's
/// `basis.rounding` (`largest_remainder.v2+pool.half_even`).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Allocation {
    /// Decimal division with 28 significant digits (settle before exact arithmetic):
    /// equal remainders that are not finite decimals may compare unequal, a whole
    /// clawback target may come out a unit short. Kept only so that older logs, whose
    /// specs were recorded without `allocation`, replay to the same bytes.
    #[serde(rename = "largest_remainder.v1")]
    V1,
    /// Exact rational arithmetic in integers: every rounding is of an exact value,
    /// every tie is exact. What settle records for every new program and amendment.
    #[serde(rename = "largest_remainder.v2")]
    V2,
}

impl Allocation {
    /// What settle records now.
    pub const CURRENT: Self = Self::V2;

    /// The policy's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "largest_remainder.v1",
            Self::V2 => "largest_remainder.v2",
        }
    }
}

/// The named normalisation that makes a lead's `customer` into the key its owner is
/// found by ([`crate::customer`]). Recorded on every `lead_registered` fact the doors
/// write; absent in a recorded fact, it is [`CustomerKey::V1`] (facts recorded before v2
/// existed), so older logs replay to the same bytes.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CustomerKey {
    /// Trimmed, ASCII letters lowercased, nothing else: `BÜCHER-BI.example`, the NFD
    /// spelling of `bücher-bi.example`, its punycode or fullwidth letters are each another
    /// customer. Kept only so that older logs, recorded without `customer_key`, replay to
    /// the same bytes.
    #[serde(rename = "trim_lower.v1")]
    V1,
    /// A domain through UTS #46 to its ASCII (punycode) form, any other name by NFKC and
    /// full case folding ([`crate::customer`]); code points unassigned in the Unicode
    /// version of the build are refused. What settle records for every new registration.
    #[serde(rename = "uts46_nfkc_cf.v2")]
    V2,
}

impl CustomerKey {
    /// What settle records now.
    pub const CURRENT: Self = Self::V2;

    /// The normalisation's name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "trim_lower.v1",
            Self::V2 => "uts46_nfkc_cf.v2",
        }
    }
}

/// Reads a `T` from a JSON object only. A derived `Deserialize` of a struct also takes
/// an array of its fields in order (`[5]` for a budget), which the rules' JSON Schema
/// does not allow: for the structs a short array could spell, the field says so.
pub fn object<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(d: D) -> Result<T, D::Error> {
    let fields = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    T::deserialize(serde_json::Value::Object(fields)).map_err(serde::de::Error::custom)
}

/// [`object`], or `null`.
pub fn optional_object<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)?
        .map(|fields| T::deserialize(serde_json::Value::Object(fields)).map_err(serde::de::Error::custom))
        .transpose()
}

/// A program's rules, as published.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSpec {
    /// The arithmetic of these rules ([`ProgramSpec::allocation`]). Absent in a recorded
    /// spec, it is [`Allocation::V1`] (specs recorded before v2 existed); the doors
    /// record [`Allocation::CURRENT`] for every new program and amendment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
    /// Program id.
    #[cfg_attr(feature = "schemars", schemars(regex(pattern = ID_PATTERN)))]
    pub program: String,
    /// Display name.
    #[cfg_attr(feature = "schemars", schemars(length(max = MAX_TEXT_BYTES)))]
    pub name: String,
    /// Currency of commissions.
    pub currency: Currency,
    /// Days a commission stays on hold (refund window) before it is payable.
    #[cfg_attr(feature = "schemars", schemars(range(max = MAX_HOLDING_DAYS)))]
    pub holding_days: u32,
    /// Days after a lead's registration in which its deals earn.
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = MAX_WINDOW_DAYS)))]
    pub attribution_window_days: u32,
    /// Rounding of the pool to minor units (named, no default).
    pub pool_rounding: Rounding,
    /// The pool.
    #[serde(deserialize_with = "object")]
    #[cfg_attr(feature = "schemars", schemars(with = "PoolRule"))]
    pub pool: PoolRule,
    /// The split.
    pub split: SplitRule,
    /// Budget per month.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_object")]
    #[cfg_attr(feature = "schemars", schemars(with = "Option<Budget>"))]
    pub budget: Option<Budget>,
    /// Bounds on each payment.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_object")]
    #[cfg_attr(feature = "schemars", schemars(with = "Option<PaymentRange>"))]
    pub payment_range: Option<PaymentRange>,
    /// Program start.
    pub valid_from: DateTime<Utc>,
    /// Program end (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<DateTime<Utc>>,
}

impl ProgramSpec {
    /// The arithmetic these rules are priced with (absent: v1, as recorded before v2).
    #[must_use]
    pub fn allocation(&self) -> Allocation {
        self.allocation.unwrap_or(Allocation::V1)
    }

    /// The rounding policy id of this program: split policy and pool rounding.
    #[must_use]
    pub fn rounding_id(&self) -> String {
        let r = serde_json::to_value(self.pool_rounding)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        format!("{}+pool.{r}", self.allocation().name())
    }
}

/// A partner's role, as users know it.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentScope {
    /// Register leads and hand them off.
    LeadsWrite,
    /// Read own mandates, receipts, balances.
    Read,
    /// Subscribe to the partner's webhooks and manage those subscriptions.
    WebhooksWrite,
}

/// Refund size.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RefundSize {
    /// An amount of the conversion's currency.
    Amount(Amount),
    /// A fraction of the conversion's revenue, `0 < f ≤ 1` (e.g. `"0.25"`): the amount
    /// is revenue × f, rounded to minor units by the program's pool rounding.
    Fraction(Decimal),
    /// The rest of the revenue not yet refunded.
    Full,
}

/// Foreign exchange given with a conversion in another currency.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxRate {
    /// Program-currency units per one unit of the conversion's currency.
    pub rate: Decimal,
    /// Source of the rate (shown on statements).
    pub source: String,
}

/// Every event type. Facts first, then derived events. Each variant declares its fields
/// in RFC 8785 (sorted) order, so that serde writes its data already canonical and
/// [`Envelope::to_bytes`] need not sort it (a test holds the kinds written most to that;
/// a kind that is not falls back to sorting, with the same bytes).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
        /// From when they apply (conversions occurring earlier keep the old rules).
        effective_from: DateTime<Utc>,
        /// The new rules (same program id and currency).
        spec: ProgramSpec,
    },
    /// A partner joined a program.
    PartnerEnrolled {
        /// Display name.
        name: String,
        /// Partner id.
        partner: String,
        /// Program id.
        program: String,
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
        /// End (exclusive).
        expires_at: DateTime<Utc>,
        /// Start.
        not_before: DateTime<Utc>,
        /// Partner it acts for.
        partner: String,
        /// The agent's own Ed25519 public key (a JWK), if it signs its own short-lived
        /// bearer tokens instead of presenting a token the vendor issued.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<settle_mandates::keys::Jwk>,
        /// What it may do.
        scopes: Vec<AgentScope>,
    },
    /// An agent's authority was revoked.
    AgentRevoked {
        /// Agent id.
        agent: String,
    },
    /// A partner registered a customer.
    LeadRegistered {
        /// The customer as the partner named it (e.g. the company's domain); its key, by
        /// which the owner is found, is derived with `customer_key`.
        customer: String,
        /// The normalisation of the customer key ([`CustomerKey`]; absent: v1, as
        /// recorded before v2). After `customer` in the canonical field order.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer_key: Option<CustomerKey>,
        /// Lead id.
        lead: String,
        /// Registering partner.
        partner: String,
        /// Program id.
        program: String,
    },
    /// A lead was handed to another partner (adds a hop).
    LeadHandedOff {
        /// Current last hop.
        from: String,
        /// Lead id.
        lead: String,
        /// New last hop.
        to: String,
    },
    /// A deal was won.
    ConversionRecorded {
        /// Conversion id.
        conversion: String,
        /// Exchange rate when revenue is not in the program's currency.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fx: Option<FxRate>,
        /// Lead id.
        lead: String,
        /// When the deal was won.
        occurred_at: DateTime<Utc>,
        /// Revenue.
        revenue: Amount,
        /// Month of a subscription (1 = first), for recurring limits.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_month: Option<u32>,
    },
    /// Revenue of a conversion was refunded (wholly or partly).
    RefundRecorded {
        /// Conversion id.
        conversion: String,
        /// Refund id.
        refund: String,
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
        /// Mandates in the batch.
        mandate_ids: Vec<String>,
        /// Partner.
        partner: String,
        /// Rail the batch is sent to.
        rail: String,
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
        /// The payout batch settled, if the mandates were batched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
        /// The rail's confirmation id.
        confirmation_id: String,
        /// Mandates paid.
        mandate_ids: Vec<String>,
        /// Partner.
        partner: String,
        /// Rail name (`book`, `sepa`, `stripe`, ...).
        rail: String,
        /// Settlement id.
        settlement: String,
    },
    /// A rail failed to pay.
    SettlementFailed {
        /// The payout batch that failed (its mandates are payable again), if batched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
        /// The rail's error code.
        error: String,
        /// Mandates it tried to pay.
        mandate_ids: Vec<String>,
        /// Partner.
        partner: String,
        /// Rail name.
        rail: String,
        /// Settlement id.
        settlement: String,
    },
    // ---- derived ----
    /// The program's standing authorisation (open mandate) was (re)issued.
    OpenMandateIssued {
        /// Compact JWS.
        mandate: String,
        /// Its id.
        mandate_id: String,
    },
    /// Outcome of a lead registration or handoff.
    LeadOutcome {
        /// The chain now.
        chain: Vec<String>,
        /// Lead id.
        lead: String,
        /// `owner`, `duplicate`, `handed_off`.
        outcome: String,
        /// The lead that owns the customer, for duplicates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Outcome of a conversion: the pool and what was done with it.
    ConversionOutcome {
        /// Conversion id.
        conversion: String,
        /// `settled`, `held`, `no_commission`.
        outcome: String,
        /// The pool (zero when none).
        pool: Amount,
        /// Why (for held and no_commission).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Rule version used.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule_version: Option<u32>,
    },
    /// One hop's payment mandate.
    MandateIssued {
        /// Amount.
        amount: Amount,
        /// Compact JWS of the mandate.
        mandate: String,
        /// Mandate id.
        mandate_id: String,
        /// Payee.
        partner: String,
    },
    /// One hop's clawback mandate.
    ClawbackIssued {
        /// Amount clawed back.
        amount: Amount,
        /// Compact JWS.
        mandate: String,
        /// Clawback mandate id.
        mandate_id: String,
        /// Part of it taken from money already paid (a negative payable to offset).
        offset: Amount,
        /// Partner.
        partner: String,
        /// The mandate reversed.
        reverses: String,
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
        /// Amount the rail is to pay.
        amount: Amount,
        /// Batch id.
        batch: String,
        /// Mandates in the batch.
        mandate_ids: Vec<String>,
        /// Part of the mandates' value absorbed by earlier negative balances.
        offset: Amount,
        /// Partner.
        partner: String,
        /// Rail.
        rail: String,
    },
    /// A settlement was booked.
    PayoutBooked {
        /// Mandates settled.
        mandate_ids: Vec<String>,
        /// Part of the mandates' value absorbed by earlier negative balances.
        offset: Amount,
        /// Amount moved to paid.
        paid: Amount,
        /// Partner.
        partner: String,
        /// Settlement id.
        settlement: String,
    },
    /// A settlement paid one mandate: a small leaf of its own, so that a partner's
    /// receipt of the payment carries this record, not the settlement's whole list.
    MandatePaid {
        /// The rail's confirmation id.
        confirmation_id: String,
        /// The mandate.
        mandate_id: String,
        /// Partner paid.
        partner: String,
        /// Rail name.
        rail: String,
        /// Settlement id.
        settlement: String,
    },
    /// A settlement failed to pay one mandate (its own leaf, as for [`Event::MandatePaid`]).
    MandatePaymentFailed {
        /// The rail's error code.
        error: String,
        /// The mandate.
        mandate_id: String,
        /// Partner.
        partner: String,
        /// Rail name.
        rail: String,
        /// Settlement id.
        settlement: String,
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
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
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
        if let Some(b) = self.sorted_bytes() {
            return b;
        }
        // Events hold no floats and only string keys: always canonicalisable.
        settle_mandates::jcs::to_vec(self).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The canonical bytes assembled without a JSON tree: the envelope's members written
    /// in RFC 8785 order around the event's data as serde writes it, then checked to be
    /// canonical (so the data's own members must come out sorted; where they do not,
    /// `None`, and [`Envelope::to_bytes`] takes the general path). Same bytes either way.
    fn sorted_bytes(&self) -> Option<Vec<u8>> {
        let event = serde_json::to_vec(&self.event).ok()?;
        // serde writes an adjacently tagged variant as {"type":"<kind>","data":<data>},
        // or {"type":"<kind>"} when it has no data.
        let kind = self.event.kind();
        let rest = event
            .strip_prefix(b"{\"type\":\"")?
            .strip_prefix(kind.as_bytes())?
            .strip_prefix(b"\"")?
            .strip_suffix(b"}")?;
        let data = match rest {
            [] => None,
            r => Some(r.strip_prefix(b",\"data\":")?),
        };
        let mut out = Vec::with_capacity(event.len() + 96 + self.by.len());
        let member = |out: &mut Vec<u8>, name: &[u8]| {
            out.push(if out.is_empty() { b'{' } else { b',' });
            out.extend_from_slice(name);
        };
        member(&mut out, b"\"at\":");
        serde_json::to_writer(&mut out, &self.at).ok()?;
        member(&mut out, b"\"by\":");
        serde_json::to_writer(&mut out, &self.by).ok()?;
        if let Some(c) = self.cause {
            member(&mut out, b"\"cause\":");
            out.extend_from_slice(c.to_string().as_bytes());
        }
        if let Some(d) = data {
            member(&mut out, b"\"data\":");
            out.extend_from_slice(d);
        }
        if let Some(k) = &self.key {
            member(&mut out, b"\"key\":");
            serde_json::to_writer(&mut out, k).ok()?;
        }
        member(&mut out, b"\"type\":");
        serde_json::to_writer(&mut out, kind).ok()?;
        member(&mut out, b"\"v\":");
        out.extend_from_slice(self.v.to_string().as_bytes());
        out.push(b'}');
        settle_mandates::jcs::is_canonical(&out).then_some(out)
    }

    /// Parses stored bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error> {
        /// The envelope's members, the event's data left unparsed: what the derived
        /// `Deserialize` reads, without buffering the whole envelope first (as
        /// `#[serde(flatten)]` does).
        #[derive(Deserialize)]
        struct Parts<'a> {
            v: u32,
            at: DateTime<Utc>,
            by: String,
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            cause: Option<u64>,
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            data: Option<&'a serde_json::value::RawValue>,
        }
        // A JSON object, as the derived reading requires (a struct would also take an
        // array of its fields in order).
        if b.trim_ascii_start().first() != Some(&b'{') {
            return Err(serde::de::Error::custom("an event envelope must be a JSON object"));
        }
        let p: Parts<'_> = serde_json::from_slice(b)?;
        // The event as its own derived `Deserialize` reads it fastest: tag, then data.
        let mut tagged = Vec::with_capacity(p.kind.len() + p.data.map_or(0, |d| d.get().len()) + 20);
        tagged.extend_from_slice(b"{\"type\":");
        serde_json::to_writer(&mut tagged, &p.kind)?;
        if let Some(d) = p.data {
            tagged.extend_from_slice(b",\"data\":");
            tagged.extend_from_slice(d.get().as_bytes());
        }
        tagged.push(b'}');
        let event = serde_json::from_slice(&tagged)?;
        Ok(Self { v: p.v, at: p.at, by: p.by, key: p.key, cause: p.cause, event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A percentage is read from exactly the strings `PERCENT_PATTERN` (the OpenAPI
    /// document's) describes, and written back normalised, as one of them.
    #[test]
    fn percentages_are_read_from_exactly_their_pattern() {
        for ok in ["0", "10", "2.5", "2.50", "33.333333", "100", "100.000000", "0.000001", "99.9"] {
            let p = Percent::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            let back = serde_json::to_value(p).unwrap();
            assert_eq!(serde_json::from_value::<Percent>(back).unwrap(), p, "{ok}");
        }
        for bad in
            ["", "-1", "-0", "+5", "1e1", ".5", "5.", "05", "00", "100.1", "101", "1.1234567", "5.0000000", " 5", "1_0"]
        {
            assert!(Percent::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(serde_json::from_str::<Percent>("10").is_err(), "a JSON number is not a percentage");
        assert_eq!(serde_json::from_str::<Percent>("\"2.50\"").unwrap().value().to_string(), "2.5");
    }

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

    /// The kinds a conversion and its settlement write take the direct path to their
    /// canonical bytes (no JSON tree), which gives the reference bytes, and they read
    /// back as the derived `Deserialize` reads them.
    #[test]
    fn hot_kinds_are_written_canonical_without_sorting() {
        let usd: settle_mandates::money::Currency = "USD".parse().unwrap();
        let amount = Amount::from_minor(12_345, usd).unwrap();
        let at: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let s = |x: &str| x.to_owned();
        let events = [
            Event::LeadRegistered {
                lead: s("l1"),
                program: s("growth"),
                customer: s("acme.example"),
                customer_key: Some(CustomerKey::CURRENT),
                partner: s("p1"),
            },
            Event::LeadRegistered {
                lead: s("l1"),
                program: s("growth"),
                customer: s("Bücher.example"),
                customer_key: None,
                partner: s("p1"),
            },
            Event::LeadHandedOff { lead: s("l1"), from: s("p1"), to: s("p2") },
            Event::ConversionRecorded {
                conversion: s("c1"),
                lead: s("l1"),
                revenue: amount,
                occurred_at: at,
                subscription_month: Some(2),
                fx: None,
            },
            Event::LeadOutcome { lead: s("l1"), outcome: s("owner"), owner: None, chain: vec![s("p1"), s("p2")] },
            Event::ConversionOutcome {
                conversion: s("c1"),
                outcome: s("settled"),
                reason: None,
                pool: amount,
                rule_version: Some(1),
            },
            Event::MandateIssued { mandate_id: s("md_7_0"), partner: s("p1"), amount, mandate: s("eyJ.eyJ.sig") },
            Event::ClawbackIssued {
                mandate_id: s("cb_9_0"),
                reverses: s("md_7_0"),
                partner: s("p1"),
                amount,
                offset: amount,
                mandate: s("eyJ.eyJ.sig"),
            },
            Event::MandatePaid {
                mandate_id: s("md_7_0"),
                settlement: s("st1"),
                partner: s("p1"),
                rail: s("book"),
                confirmation_id: s("bk-1"),
            },
            Event::HoldsAdvanced { to: at },
        ];
        for (i, event) in events.into_iter().enumerate() {
            let (key, cause) = if i % 2 == 0 { (Some(s("k-\"é\"")), None) } else { (None, Some(7)) };
            let e = Envelope { v: 1, at, by: s("vendor:admin"), key, cause, event };
            let reference = serde_json_canonicalizer::to_vec(&serde_json::to_value(&e).unwrap()).unwrap();
            assert_eq!(e.sorted_bytes().as_deref(), Some(&reference[..]), "{}", e.event.kind());
            assert_eq!(e.to_bytes(), reference);
            assert_eq!(Envelope::from_bytes(&reference).unwrap(), e, "{}", e.event.kind());
            assert_eq!(serde_json::from_slice::<Envelope>(&reference).unwrap(), e);
        }
        // A kind with no data, and refusals as the derived reading refuses them.
        let unit = br#"{"at":"2026-03-01T12:00:00Z","by":"engine","type":"no_such_kind","v":1}"#;
        assert!(Envelope::from_bytes(unit).is_err());
        assert!(Envelope::from_bytes(br#"{"at":"2026-03-01T12:00:00Z","by":"engine","v":1}"#).is_err());
        let array = br#"[1,"2026-03-01T12:00:00Z","engine",null,null,"holds_advanced",{"to":"2026-03-01T12:00:00Z"}]"#;
        assert!(serde_json::from_slice::<Envelope>(array).is_err());
        assert!(Envelope::from_bytes(array).is_err());
    }
}

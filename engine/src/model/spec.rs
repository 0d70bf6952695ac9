//! A program's rules as data: the pool, the split, budgets and bounds, the named
//! arithmetic a rule set is recorded with ([`Allocation`]), and [`ProgramSpec`], the
//! rules as published.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use settle_mandates::money::{Currency, Rounding};

use super::dispute::DisputeRules;

// The limits the JSON Schemas state.
#[cfg(feature = "schemars")]
use crate::limits::{ID_PATTERN, MAX_HOLDING_DAYS, MAX_LEVELS, MAX_SPIFFS, MAX_TEXT_BYTES, MAX_TIERS, MAX_WINDOW_DAYS};

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
    /// Disputes: how long a partner may open one, how long the vendor has to answer
    /// (absent: [`DisputeRules::default`]).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "optional_object")]
    #[cfg_attr(feature = "schemars", schemars(with = "Option<DisputeRules>"))]
    pub disputes: Option<DisputeRules>,
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

    /// The rules for disputes: as given, or the defaults.
    #[must_use]
    pub fn dispute_rules(&self) -> DisputeRules {
        self.disputes.unwrap_or_default()
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
}

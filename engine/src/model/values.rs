//! The typed values facts and derived events carry besides the rules: partner roles,
//! agent scopes, refund sizes, FX rates, and the outcomes of a lead and of a conversion.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use settle_mandates::money::Amount;

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
    /// Open, comment on and withdraw the partner's disputes.
    DisputesWrite,
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

/// What a lead registration or hand-off came to (`lead_outcome`'s `outcome`), written as
/// its [`LeadOutcomeKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadOutcomeKind {
    /// The lead is the first registration of its customer in the window: it owns it.
    Owner,
    /// Another lead owns the customer: this one earns nothing.
    Duplicate,
    /// The lead was handed to another partner (a hop was added).
    HandedOff,
}

impl LeadOutcomeKind {
    /// Every outcome, in declaration order.
    pub const ALL: [Self; 3] = [Self::Owner, Self::Duplicate, Self::HandedOff];

    /// The name written in the log (`owner`, `duplicate`, `handed_off`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Duplicate => "duplicate",
            Self::HandedOff => "handed_off",
        }
    }
}

/// What was done with a conversion's pool (`conversion_outcome`'s `outcome`), written as
/// its [`ConversionOutcomeKind::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionOutcomeKind {
    /// Paid: one payment mandate per hop owed something.
    Settled,
    /// Owed but not paid: past the program's standing authorisation, or a partner is
    /// suspended; a release may settle it later.
    Held,
    /// Nothing owed (no lead, a duplicate, outside the window, ...).
    NoCommission,
}

impl ConversionOutcomeKind {
    /// Every outcome, in declaration order.
    pub const ALL: [Self; 3] = [Self::Settled, Self::Held, Self::NoCommission];

    /// The name written in the log (`settled`, `held`, `no_commission`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Held => "held",
            Self::NoCommission => "no_commission",
        }
    }
}

super::named_enum!(LeadOutcomeKind, "lead outcome");
super::named_enum!(ConversionOutcomeKind, "conversion outcome");

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are what serde writes and reads, so the log's bytes are the strings
    /// they always were.
    #[test]
    fn outcomes_are_written_as_their_names() {
        for k in LeadOutcomeKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.as_str().into()));
            assert_eq!(serde_json::from_value::<LeadOutcomeKind>(k.as_str().into()).unwrap(), k);
            assert_eq!(k.as_str().parse::<LeadOutcomeKind>(), Ok(k));
            assert!(k == k.as_str() && k.as_str() == k);
            assert_eq!(k.to_string(), k.as_str());
        }
        for k in ConversionOutcomeKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.as_str().into()));
            assert_eq!(serde_json::from_value::<ConversionOutcomeKind>(k.as_str().into()).unwrap(), k);
            assert_eq!(k.as_str().parse::<ConversionOutcomeKind>(), Ok(k));
            assert!(k == k.as_str() && k.as_str() == k);
            assert_eq!(k.to_string(), k.as_str());
        }
        assert!("settled".parse::<LeadOutcomeKind>().is_err() && "owner".parse::<ConversionOutcomeKind>().is_err());
        assert!(serde_json::from_str::<ConversionOutcomeKind>("\"Settled\"").is_err());
    }
}

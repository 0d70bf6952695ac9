//! The vocabulary of disputes: what a partner disputes ([`DisputeSubject`]), how the
//! vendor resolves it ([`DisputeOutcome`], [`AdjustmentLine`]), and a program's rules for
//! them ([`DisputeRules`]: how long a partner may dispute, how long the vendor has to
//! answer). The lifecycle and the adjustment arithmetic are docs/commission-rules.md's.

use serde::{Deserialize, Serialize};
use settle_mandates::money::Amount;

#[cfg(feature = "schemars")]
use crate::limits::ID_PATTERN;

/// Days after its subject in which a partner may open a dispute, when a program's rules
/// do not say.
pub const DEFAULT_DISPUTE_WINDOW_DAYS: u32 = 90;
/// Days the vendor has to resolve a dispute before it is overdue, when a program's rules
/// do not say.
pub const DEFAULT_DISPUTE_RESPONSE_DAYS: u32 = 14;
/// Longest dispute window or response time, days.
pub const MAX_DISPUTE_DAYS: u32 = 730;
/// Most pieces of evidence a dispute names.
pub const MAX_EVIDENCE: usize = 16;
/// Most comments on one dispute.
pub const MAX_COMMENTS: usize = 100;

/// A program's rules for disputes. Absent from a program's rules: the defaults
/// ([`DEFAULT_DISPUTE_WINDOW_DAYS`], [`DEFAULT_DISPUTE_RESPONSE_DAYS`]).
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeRules {
    /// Days the vendor has to resolve a dispute; past them it is overdue (flagged and
    /// announced).
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = MAX_DISPUTE_DAYS)))]
    pub response_days: u32,
    /// Days after its subject (the conversion's pricing, the clawback, the lead's
    /// attribution window's end) in which a partner may open a dispute.
    #[cfg_attr(feature = "schemars", schemars(range(min = 1, max = MAX_DISPUTE_DAYS)))]
    pub window_days: u32,
}

impl Default for DisputeRules {
    fn default() -> Self {
        Self { response_days: DEFAULT_DISPUTE_RESPONSE_DAYS, window_days: DEFAULT_DISPUTE_WINDOW_DAYS }
    }
}

/// What a dispute is about.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DisputeSubject {
    /// A conversion the partner is on (settled, or held): its split, its pool.
    Conversion {
        /// Conversion id.
        #[cfg_attr(feature = "schemars", schemars(regex(pattern = ID_PATTERN)))]
        conversion: String,
    },
    /// A payment mandate (`md_…`) of the partner's (disputed by its payee only).
    Mandate {
        /// Mandate id.
        #[cfg_attr(feature = "schemars", schemars(regex(pattern = ID_PATTERN)))]
        mandate: String,
    },
    /// A clawback mandate (`cb_…`) of the partner's (disputed by its payee only).
    Clawback {
        /// Clawback mandate id.
        #[cfg_attr(feature = "schemars", schemars(regex(pattern = ID_PATTERN)))]
        clawback: String,
    },
    /// A deal the partner says was won on its lead, which earned it nothing: never
    /// recorded, or recorded with no commission.
    MissingConversion {
        /// The lead.
        #[cfg_attr(feature = "schemars", schemars(regex(pattern = ID_PATTERN)))]
        lead: String,
    },
}

/// How the vendor resolved a dispute.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeOutcome {
    /// The claim holds: adjustment mandates correct the commissions.
    Accepted,
    /// The claim does not hold; the reason says why.
    Rejected,
}

/// One partner's adjustment in an accepted dispute: signed, never zero, in the program's
/// currency.
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentLine {
    /// Positive: the partner is paid more; negative: it is owed back.
    pub amount: Amount,
    /// A partner on the dispute's subject.
    #[cfg_attr(feature = "schemars", schemars(regex(pattern = ID_PATTERN)))]
    pub partner: String,
}

/// Where a dispute stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// Waiting for the vendor.
    Open,
    /// Resolved: accepted.
    Accepted,
    /// Resolved: rejected.
    Rejected,
    /// Withdrawn by its opener.
    Withdrawn,
}

impl DisputeStatus {
    /// Every status, in declaration order.
    pub const ALL: [Self; 4] = [Self::Open, Self::Accepted, Self::Rejected, Self::Withdrawn];

    /// Its name (`open`, `accepted`, `rejected`, `withdrawn`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
        }
    }
}

super::named_enum!(DisputeStatus, "dispute status");

//! The log's vocabulary: programs and their rules, and every event type, each versioned.
//!
//! Facts are what callers tell the engine (past tense: `conversion_recorded`). Derived
//! events are what the engine concluded from a fact (`mandate_issued`); they follow their
//! fact in the log, in the same atomic append, and replaying the facts reproduces them
//! byte for byte.
//!
//! Above the named limits (`crate::limits`) and customer keys (`crate::customer`), whose
//! items it re-exports, it names nothing else in the crate. One home each for
//! - a program's rules as data, [`ProgramSpec`] and its parts (`spec`),
//! - the typed values facts and events carry: roles, scopes, refund sizes, FX rates, and
//!   the outcomes of a lead and of a conversion (`values`),
//! - disputes: their subjects, outcomes, adjustments and a program's rules for them
//!   (`dispute`),
//! - every event type and its data, [`Event`] (`event`),
//! - the names of the event types, their versions and which are facts, [`EventKind`]
//!   (`kind`),
//! - an event as stored and its canonical bytes, [`Envelope`] (`envelope`).
//!
//! Everything is used from here, `crate::model::X`, as it always was.

/// The string side of an enum named by its `as_str` (its serde name) and listed in its
/// `ALL`: `Display` and `FromStr` by that name, and comparison with strings both ways.
macro_rules! named_enum {
    ($t:ty, $what:literal) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown {} '{s}'", $what))
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<$t> for str {
            fn eq(&self, other: &$t) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$t> for &str {
            fn eq(&self, other: &$t) -> bool {
                *self == other.as_str()
            }
        }
    };
}
use named_enum;

mod dispute;
mod envelope;
mod event;
mod kind;
mod spec;
mod values;

pub use crate::customer::CustomerKey;
pub use crate::limits::{
    BANK_RAIL, ID_PATTERN, InvalidValue, MAX_BOOK_TOTAL, MAX_HOLDING_DAYS, MAX_HOPS, MAX_ID_BYTES, MAX_LEVELS,
    MAX_PARTNERS_PER_PROGRAM, MAX_RELEASED_PER_EVENT, MAX_SETTLEMENT_MANDATES, MAX_SPIFFS, MAX_TEXT_BYTES, MAX_TIERS,
    MAX_WINDOW_DAYS, check_id, check_text,
};
pub use dispute::{
    AdjustmentLine, DEFAULT_DISPUTE_RESPONSE_DAYS, DEFAULT_DISPUTE_WINDOW_DAYS, DisputeOutcome, DisputeRules,
    DisputeStatus, DisputeSubject, MAX_COMMENTS, MAX_DISPUTE_DAYS, MAX_EVIDENCE,
};
pub use envelope::Envelope;
pub use event::Event;
pub use kind::{DERIVED_TYPES, EVENT_TYPES, EventKind, accepts, is_fact_kind};
pub use spec::{
    Allocation, Budget, PERCENT_PATTERN, PaymentRange, Percent, PoolRule, Position, ProgramSpec, Spiff, SplitRule,
    Tier, TierMode, object, optional_object,
};
pub use values::{AgentScope, ConversionOutcomeKind, FxRate, LeadOutcomeKind, PartnerRole, RefundSize};

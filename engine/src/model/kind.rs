//! The names of the event types ([`EventKind`]): the one list of the log's types, their
//! current versions and which are facts; and the lists and look-ups by name the ledger
//! and the doors use ([`EVENT_TYPES`], [`DERIVED_TYPES`], [`accepts`], [`is_fact_kind`]).

use serde::{Deserialize, Serialize};

/// Every event type, by name: the one list of the log's types, their current versions
/// and which are facts. Facts first, then derived events, as [`Event`](super::Event) declares
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    // ---- facts ----
    /// `program_published`.
    ProgramPublished,
    /// `program_amended`.
    ProgramAmended,
    /// `partner_enrolled`.
    PartnerEnrolled,
    /// `partner_suspended`.
    PartnerSuspended,
    /// `agent_authorised`.
    AgentAuthorised,
    /// `agent_revoked`.
    AgentRevoked,
    /// `lead_registered`.
    LeadRegistered,
    /// `lead_handed_off`.
    LeadHandedOff,
    /// `conversion_recorded`.
    ConversionRecorded,
    /// `refund_recorded`.
    RefundRecorded,
    /// `holds_advanced`.
    HoldsAdvanced,
    /// `payout_batched`.
    PayoutBatched,
    /// `conversion_released`.
    ConversionReleased,
    /// `settlement_confirmed`.
    SettlementConfirmed,
    /// `settlement_failed`.
    SettlementFailed,
    /// `payout_instrument_registered`.
    PayoutInstrumentRegistered,
    /// `payout_instrument_removed`.
    PayoutInstrumentRemoved,
    /// `dispute_opened`.
    DisputeOpened,
    /// `dispute_commented`.
    DisputeCommented,
    /// `dispute_resolved`.
    DisputeResolved,
    /// `dispute_withdrawn`.
    DisputeWithdrawn,
    // ---- derived ----
    /// `open_mandate_issued`.
    OpenMandateIssued,
    /// `lead_outcome`.
    LeadOutcome,
    /// `conversion_outcome`.
    ConversionOutcome,
    /// `mandate_issued`.
    MandateIssued,
    /// `clawback_issued`.
    ClawbackIssued,
    /// `holds_released`.
    HoldsReleased,
    /// `payout_batch_created`.
    PayoutBatchCreated,
    /// `payout_booked`.
    PayoutBooked,
    /// `payout_returned`.
    PayoutReturned,
    /// `mandate_paid`.
    MandatePaid,
    /// `mandate_payment_failed`.
    MandatePaymentFailed,
    /// `adjustment_issued`.
    AdjustmentIssued,
    /// `dispute_overdue`.
    DisputeOverdue,
}

impl EventKind {
    /// Every event type, facts first, then derived events.
    pub const ALL: [Self; 34] = [
        Self::ProgramPublished,
        Self::ProgramAmended,
        Self::PartnerEnrolled,
        Self::PartnerSuspended,
        Self::AgentAuthorised,
        Self::AgentRevoked,
        Self::LeadRegistered,
        Self::LeadHandedOff,
        Self::ConversionRecorded,
        Self::RefundRecorded,
        Self::HoldsAdvanced,
        Self::PayoutBatched,
        Self::ConversionReleased,
        Self::SettlementConfirmed,
        Self::SettlementFailed,
        Self::PayoutInstrumentRegistered,
        Self::PayoutInstrumentRemoved,
        Self::DisputeOpened,
        Self::DisputeCommented,
        Self::DisputeResolved,
        Self::DisputeWithdrawn,
        Self::OpenMandateIssued,
        Self::LeadOutcome,
        Self::ConversionOutcome,
        Self::MandateIssued,
        Self::ClawbackIssued,
        Self::HoldsReleased,
        Self::PayoutBatchCreated,
        Self::PayoutBooked,
        Self::PayoutReturned,
        Self::MandatePaid,
        Self::MandatePaymentFailed,
        Self::AdjustmentIssued,
        Self::DisputeOverdue,
    ];

    /// The `type` string.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ProgramPublished => "program_published",
            Self::ProgramAmended => "program_amended",
            Self::PartnerEnrolled => "partner_enrolled",
            Self::PartnerSuspended => "partner_suspended",
            Self::AgentAuthorised => "agent_authorised",
            Self::AgentRevoked => "agent_revoked",
            Self::LeadRegistered => "lead_registered",
            Self::LeadHandedOff => "lead_handed_off",
            Self::ConversionRecorded => "conversion_recorded",
            Self::RefundRecorded => "refund_recorded",
            Self::HoldsAdvanced => "holds_advanced",
            Self::PayoutBatched => "payout_batched",
            Self::ConversionReleased => "conversion_released",
            Self::SettlementConfirmed => "settlement_confirmed",
            Self::SettlementFailed => "settlement_failed",
            Self::PayoutInstrumentRegistered => "payout_instrument_registered",
            Self::PayoutInstrumentRemoved => "payout_instrument_removed",
            Self::DisputeOpened => "dispute_opened",
            Self::DisputeCommented => "dispute_commented",
            Self::DisputeResolved => "dispute_resolved",
            Self::DisputeWithdrawn => "dispute_withdrawn",
            Self::OpenMandateIssued => "open_mandate_issued",
            Self::LeadOutcome => "lead_outcome",
            Self::ConversionOutcome => "conversion_outcome",
            Self::MandateIssued => "mandate_issued",
            Self::ClawbackIssued => "clawback_issued",
            Self::HoldsReleased => "holds_released",
            Self::PayoutBatchCreated => "payout_batch_created",
            Self::PayoutBooked => "payout_booked",
            Self::PayoutReturned => "payout_returned",
            Self::MandatePaid => "mandate_paid",
            Self::MandatePaymentFailed => "mandate_payment_failed",
            Self::AdjustmentIssued => "adjustment_issued",
            Self::DisputeOverdue => "dispute_overdue",
        }
    }

    /// The type named `kind`, if there is one (what a stored record's type says).
    #[must_use]
    pub fn parse(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The current version of the type: what the ledger accepts.
    #[must_use]
    pub const fn version(self) -> u32 {
        1
    }

    /// True for what the engine derives from a fact, false for a fact.
    #[must_use]
    pub const fn is_derived(self) -> bool {
        matches!(
            self,
            Self::OpenMandateIssued
                | Self::LeadOutcome
                | Self::ConversionOutcome
                | Self::MandateIssued
                | Self::ClawbackIssued
                | Self::HoldsReleased
                | Self::PayoutBatchCreated
                | Self::PayoutBooked
                | Self::PayoutReturned
                | Self::MandatePaid
                | Self::MandatePaymentFailed
                | Self::AdjustmentIssued
                | Self::DisputeOverdue
        )
    }

    /// True for facts (what callers say), false for what the engine derives.
    #[must_use]
    pub const fn is_fact(self) -> bool {
        !self.is_derived()
    }
}

super::named_enum!(EventKind, "event type");

/// How many of [`EventKind::ALL`] are derived.
const DERIVED_COUNT: usize = {
    let mut n = 0;
    let mut i = 0;
    // Bounded by the number of event types.
    while i < EventKind::ALL.len() {
        n += EventKind::ALL[i].is_derived() as usize;
        i += 1;
    }
    n
};

/// The event types the engine derives (every other type is a fact).
pub const DERIVED_TYPES: &[&str] = &{
    let mut out = [""; DERIVED_COUNT];
    let (mut i, mut j) = (0, 0);
    // Bounded by the number of event types.
    while i < EventKind::ALL.len() {
        if EventKind::ALL[i].is_derived() {
            out[j] = EventKind::ALL[i].as_str();
            j += 1;
        }
        i += 1;
    }
    out
};

/// True for a known fact type, by name (what a stored record's type says).
#[must_use]
pub fn is_fact_kind(kind: &str) -> bool {
    EventKind::parse(kind).is_some_and(EventKind::is_fact)
}

/// Every event type name and its current version: what the ledger accepts.
pub const EVENT_TYPES: &[(&str, u32)] = &{
    let mut out = [("", 0); EventKind::ALL.len()];
    let mut i = 0;
    // Bounded by the number of event types.
    while i < EventKind::ALL.len() {
        out[i] = (EventKind::ALL[i].as_str(), EventKind::ALL[i].version());
        i += 1;
    }
    out
};

/// Whether the log accepts `kind` at `version`.
#[must_use]
pub fn accepts(kind: &str, version: u32) -> bool {
    EventKind::parse(kind).is_some_and(|k| k.version() == version)
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

    /// The lists as they were written out by hand before [`EventKind`] (and the payout
    /// instruments, returns and disputes since): same names, same versions, same order.
    #[test]
    fn the_lists_of_types_are_as_they_were() {
        let derived = [
            "open_mandate_issued",
            "lead_outcome",
            "conversion_outcome",
            "mandate_issued",
            "clawback_issued",
            "holds_released",
            "payout_batch_created",
            "payout_booked",
            "payout_returned",
            "mandate_paid",
            "mandate_payment_failed",
            "adjustment_issued",
            "dispute_overdue",
        ];
        assert_eq!(DERIVED_TYPES, derived);
        let facts = [
            "program_published",
            "program_amended",
            "partner_enrolled",
            "partner_suspended",
            "agent_authorised",
            "agent_revoked",
            "lead_registered",
            "lead_handed_off",
            "conversion_recorded",
            "refund_recorded",
            "holds_advanced",
            "payout_batched",
            "conversion_released",
            "settlement_confirmed",
            "settlement_failed",
            "payout_instrument_registered",
            "payout_instrument_removed",
            "dispute_opened",
            "dispute_commented",
            "dispute_resolved",
            "dispute_withdrawn",
        ];
        let all: Vec<(&str, u32)> = facts.iter().chain(&derived).map(|k| (*k, 1)).collect();
        assert_eq!(EVENT_TYPES, all);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::String(k.as_str().into()));
            assert_eq!(k.is_fact(), is_fact_kind(k.as_str()));
            assert!(accepts(k.as_str(), 1) && !accepts(k.as_str(), 2));
        }
        assert_eq!(EventKind::parse("no_such_event"), None);
    }
}

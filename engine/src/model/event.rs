//! Every event type, with its data: the facts callers state and the events the engine
//! derives from them ([`Event`]). Their names, versions and which are facts are
//! [`EventKind`]'s (`kind`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use settle_mandates::money::{Amount, Currency};

#[cfg(doc)]
use super::Envelope;
use super::dispute::{AdjustmentLine, DisputeOutcome, DisputeSubject};
use super::kind::EventKind;
use super::spec::ProgramSpec;
use super::values::{AgentScope, ConversionOutcomeKind, FxRate, LeadOutcomeKind, PartnerRole, RefundSize};
use crate::customer::CustomerKey;

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
    /// A partner's bank account for payouts on the `bank` rail was registered, replacing
    /// any earlier one. The log holds only a salted hash of the account's details, which
    /// are kept beside the log (never exported) and can be erased (docs/payouts.md).
    PayoutInstrumentRegistered {
        /// The currency it is paid in: the partner's program's.
        currency: Currency,
        /// The instrument's reference: `pi_` and the hex SHA-256 of a salt and the
        /// details.
        instrument: String,
        /// Partner.
        partner: String,
    },
    /// A partner's payout instrument was removed (its details erased): no payout goes to
    /// the bank rail for it until another is registered.
    PayoutInstrumentRemoved {
        /// The instrument's reference.
        instrument: String,
        /// Partner.
        partner: String,
    },
    /// A partner (its agent, or the vendor on its behalf) disputed a commission: a
    /// conversion, a mandate, a clawback, or a deal missing on its lead.
    DisputeOpened {
        /// What the partner claims it is owed beyond what it was paid, in the program's
        /// currency (absent: the claim is the statement alone, which no adjustment may
        /// pay).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        claimed: Option<Amount>,
        /// Dispute id.
        dispute: String,
        /// Evidence: receipt ids, references (text).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        evidence: Vec<String>,
        /// The partner whose commission is disputed.
        partner: String,
        /// The claim in words.
        statement: String,
        /// What is disputed.
        subject: DisputeSubject,
    },
    /// Either side commented on an open dispute.
    DisputeCommented {
        /// Dispute id.
        dispute: String,
        /// The comment.
        text: String,
    },
    /// The vendor resolved a dispute: rejected, or accepted with adjustments.
    DisputeResolved {
        /// For an accepted dispute, each partner's adjustment (absent: the claimed amount,
        /// to the disputing partner).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adjustments: Vec<AdjustmentLine>,
        /// Dispute id.
        dispute: String,
        /// Accepted or rejected.
        outcome: DisputeOutcome,
        /// Why.
        reason: String,
    },
    /// The disputing side withdrew an open dispute.
    DisputeWithdrawn {
        /// Dispute id.
        dispute: String,
        /// Why (may be empty).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
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
        #[cfg_attr(feature = "schemars", schemars(with = "String"))]
        outcome: LeadOutcomeKind,
        /// The lead that owns the customer, for duplicates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Outcome of a conversion: the pool and what was done with it.
    ConversionOutcome {
        /// Conversion id.
        conversion: String,
        /// `settled`, `held`, `no_commission`.
        #[cfg_attr(feature = "schemars", schemars(with = "String"))]
        outcome: ConversionOutcomeKind,
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
        /// Of `amount`, the partner's credit it pays beyond its mandates (owed since a
        /// bank returned a payout whose clawbacks other payouts had recovered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credit: Option<Amount>,
        /// The partner's payout instrument the rail pays (the `bank` rail's batches).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instrument: Option<String>,
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
    /// A rail returned a payout batch it had paid (a bank's return, with its reason): the
    /// money is payable again.
    PayoutReturned {
        /// Amount returned (what the batch paid).
        amount: Amount,
        /// Batch id.
        batch: String,
        /// Mandates in the batch, payable again.
        mandate_ids: Vec<String>,
        /// Partner.
        partner: String,
        /// Settlement id of the return.
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
    /// One partner's adjustment mandate of an accepted dispute: positive, payable at once
    /// (paid in a payout batch like a payment mandate); negative, owed back out of what is
    /// payable (as a clawback of paid money is).
    AdjustmentIssued {
        /// Amount, signed.
        amount: Amount,
        /// The dispute.
        dispute: String,
        /// Compact JWS of the mandate.
        mandate: String,
        /// Adjustment mandate id (`aj_<seq>_<n>`).
        mandate_id: String,
        /// Partner.
        partner: String,
    },
    /// A dispute passed the program's response time unresolved.
    DisputeOverdue {
        /// The dispute.
        dispute: String,
        /// When its response was due.
        due_at: DateTime<Utc>,
    },
}

impl Event {
    /// The `type` string.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        self.event_kind().as_str()
    }

    /// The type, typed.
    #[must_use]
    pub fn event_kind(&self) -> EventKind {
        match self {
            Self::ProgramPublished { .. } => EventKind::ProgramPublished,
            Self::ProgramAmended { .. } => EventKind::ProgramAmended,
            Self::PartnerEnrolled { .. } => EventKind::PartnerEnrolled,
            Self::PartnerSuspended { .. } => EventKind::PartnerSuspended,
            Self::AgentAuthorised { .. } => EventKind::AgentAuthorised,
            Self::AgentRevoked { .. } => EventKind::AgentRevoked,
            Self::LeadRegistered { .. } => EventKind::LeadRegistered,
            Self::LeadHandedOff { .. } => EventKind::LeadHandedOff,
            Self::ConversionRecorded { .. } => EventKind::ConversionRecorded,
            Self::RefundRecorded { .. } => EventKind::RefundRecorded,
            Self::HoldsAdvanced { .. } => EventKind::HoldsAdvanced,
            Self::PayoutBatched { .. } => EventKind::PayoutBatched,
            Self::ConversionReleased { .. } => EventKind::ConversionReleased,
            Self::SettlementConfirmed { .. } => EventKind::SettlementConfirmed,
            Self::SettlementFailed { .. } => EventKind::SettlementFailed,
            Self::PayoutInstrumentRegistered { .. } => EventKind::PayoutInstrumentRegistered,
            Self::PayoutInstrumentRemoved { .. } => EventKind::PayoutInstrumentRemoved,
            Self::DisputeOpened { .. } => EventKind::DisputeOpened,
            Self::DisputeCommented { .. } => EventKind::DisputeCommented,
            Self::DisputeResolved { .. } => EventKind::DisputeResolved,
            Self::DisputeWithdrawn { .. } => EventKind::DisputeWithdrawn,
            Self::OpenMandateIssued { .. } => EventKind::OpenMandateIssued,
            Self::LeadOutcome { .. } => EventKind::LeadOutcome,
            Self::ConversionOutcome { .. } => EventKind::ConversionOutcome,
            Self::MandateIssued { .. } => EventKind::MandateIssued,
            Self::ClawbackIssued { .. } => EventKind::ClawbackIssued,
            Self::HoldsReleased { .. } => EventKind::HoldsReleased,
            Self::PayoutBatchCreated { .. } => EventKind::PayoutBatchCreated,
            Self::PayoutBooked { .. } => EventKind::PayoutBooked,
            Self::PayoutReturned { .. } => EventKind::PayoutReturned,
            Self::MandatePaid { .. } => EventKind::MandatePaid,
            Self::MandatePaymentFailed { .. } => EventKind::MandatePaymentFailed,
            Self::AdjustmentIssued { .. } => EventKind::AdjustmentIssued,
            Self::DisputeOverdue { .. } => EventKind::DisputeOverdue,
        }
    }

    /// True for facts (what callers say), false for what the engine derives.
    #[must_use]
    pub fn is_fact(&self) -> bool {
        self.event_kind().is_fact()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Event::kind`] is the `type` serde writes, for every variant.
    #[test]
    fn an_event_is_written_under_its_kind() {
        let at: DateTime<Utc> = "2026-03-01T12:00:00Z".parse().unwrap();
        let e = Event::HoldsAdvanced { to: at };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.kind());
        assert_eq!(e.event_kind(), EventKind::HoldsAdvanced);
        // Every kind reads back from its name with no data as far as the tag: serde knows
        // exactly the names of EventKind.
        for k in EventKind::ALL {
            let err = serde_json::from_value::<Event>(serde_json::json!({ "type": k.as_str() })).unwrap_err();
            assert!(!err.to_string().contains("unknown variant"), "{k}: {err}");
        }
        let err = serde_json::from_value::<Event>(serde_json::json!({ "type": "no_such_event" })).unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}

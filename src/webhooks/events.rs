//! The events a subscriber hears of: each a record of the log, seen as the subscriber
//! may see it (a partner only of its own money), and the signed message it becomes.

use chrono::SecondsFormat;
use serde_json::{Value, json};
use settle_engine::model::Event;
use settle_engine::{Envelope, State};

use super::subscription::Subscription;

/// A type of event a subscription can ask for: the one list, and the names the match in
/// [`event_of`] produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `mandate.issued`: a payment mandate signed.
    MandateIssued,
    /// `clawback.issued`: a clawback mandate signed.
    ClawbackIssued,
    /// `hold.released`: held commission became payable.
    HoldReleased,
    /// `settlement.confirmed`: a rail paid.
    SettlementConfirmed,
    /// `settlement.failed`: a rail failed to pay.
    SettlementFailed,
    /// `payout.batched`: mandates sent to a rail in a batch.
    PayoutBatched,
    /// `payout.booked`: a payment booked against a partner's books.
    PayoutBooked,
    /// `payout.returned`: a bank returned a payout it had paid; the money is payable again.
    PayoutReturned,
    /// `dispute.opened`: a partner disputed a commission.
    DisputeOpened,
    /// `dispute.commented`: a comment on an open dispute.
    DisputeCommented,
    /// `dispute.resolved`: the vendor accepted or rejected a dispute.
    DisputeResolved,
    /// `dispute.withdrawn`: a dispute was withdrawn.
    DisputeWithdrawn,
    /// `dispute.overdue`: a dispute passed the program's response time unresolved.
    DisputeOverdue,
    /// `adjustment.issued`: an adjustment mandate of an accepted dispute signed.
    AdjustmentIssued,
}

impl EventType {
    /// Every event type, in the order the guide lists them.
    pub const ALL: [Self; 14] = [
        Self::MandateIssued,
        Self::ClawbackIssued,
        Self::HoldReleased,
        Self::SettlementConfirmed,
        Self::SettlementFailed,
        Self::PayoutBatched,
        Self::PayoutBooked,
        Self::PayoutReturned,
        Self::DisputeOpened,
        Self::DisputeCommented,
        Self::DisputeResolved,
        Self::DisputeWithdrawn,
        Self::DisputeOverdue,
        Self::AdjustmentIssued,
    ];

    /// Its name on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MandateIssued => "mandate.issued",
            Self::ClawbackIssued => "clawback.issued",
            Self::HoldReleased => "hold.released",
            Self::SettlementConfirmed => "settlement.confirmed",
            Self::SettlementFailed => "settlement.failed",
            Self::PayoutBatched => "payout.batched",
            Self::PayoutBooked => "payout.booked",
            Self::PayoutReturned => "payout.returned",
            Self::DisputeOpened => "dispute.opened",
            Self::DisputeCommented => "dispute.commented",
            Self::DisputeResolved => "dispute.resolved",
            Self::DisputeWithdrawn => "dispute.withdrawn",
            Self::DisputeOverdue => "dispute.overdue",
            Self::AdjustmentIssued => "adjustment.issued",
        }
    }

    /// The type named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The names of [`EventType::ALL`], for schemas and messages.
pub const EVENT_TYPES: [&str; EventType::ALL.len()] = {
    let mut names = [""; EventType::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = EventType::ALL[i].as_str();
        i += 1;
    }
    names
};

/// One event ready to send.
#[derive(Debug, Clone)]
pub struct Message {
    /// `webhook-id`.
    pub id: String,
    /// The record.
    pub seq: u64,
    /// Event type.
    pub kind: EventType,
    /// The JSON body (JCS bytes).
    pub body: Vec<u8>,
}

/// Event type, log time and data of record `seq` as `partner` (or the vendor, `None`)
/// may see it; `None` when it is not a webhook event or not theirs.
#[must_use]
pub fn event_of(seq: u64, env: &Envelope, partner: Option<&str>, state: &State) -> Option<(EventType, Value)> {
    let mine = |p: &str| partner.is_none_or(|me| me == p);
    let conversion_of = |mandate: &str| state.mandate_hop(mandate).map(|(_, _, c)| c.id.clone());
    let partner_of = |mandate: &str| state.mandate_hop(mandate).map(|(_, i, c)| c.hops[i].partner.clone());
    // A dispute's partner never changes: the state's answer is the record's.
    let disputant = |d: &str| state.disputes.get(d).map(|x| x.partner.clone()).unwrap_or_default();
    let (kind, mut data) = match &env.event {
        Event::MandateIssued { mandate_id, partner: p, amount, mandate } if mine(p) => (
            EventType::MandateIssued,
            json!({"mandate_id": mandate_id, "partner": p, "amount": amount, "conversion": conversion_of(mandate_id), "mandate": mandate}),
        ),
        Event::ClawbackIssued { mandate_id, reverses, partner: p, amount, offset, mandate } if mine(p) => (
            EventType::ClawbackIssued,
            json!({"mandate_id": mandate_id, "reverses": reverses, "partner": p, "amount": amount, "offset": offset, "mandate": mandate}),
        ),
        Event::HoldsReleased { mandate_ids, total } => match partner {
            None => (EventType::HoldReleased, json!({"mandate_ids": mandate_ids, "total": total})),
            Some(me) => {
                let ids: Vec<&String> = mandate_ids.iter().filter(|m| partner_of(m).as_deref() == Some(me)).collect();
                if ids.is_empty() {
                    return None;
                }
                (EventType::HoldReleased, json!({"mandate_ids": ids}))
            }
        },
        Event::SettlementConfirmed { settlement, batch, partner: p, rail, confirmation_id, mandate_ids } if mine(p) => {
            (
                EventType::SettlementConfirmed,
                with_batch(
                    json!({"settlement": settlement, "partner": p, "rail": rail, "confirmation_id": confirmation_id, "mandate_ids": mandate_ids}),
                    batch.as_deref(),
                ),
            )
        }
        Event::SettlementFailed { settlement, batch, partner: p, rail, error, mandate_ids } if mine(p) => (
            EventType::SettlementFailed,
            with_batch(
                json!({"settlement": settlement, "partner": p, "rail": rail, "error": error, "mandate_ids": mandate_ids}),
                batch.as_deref(),
            ),
        ),
        Event::PayoutBatchCreated { batch, partner: p, rail, amount, offset, credit, instrument, mandate_ids }
            if mine(p) =>
        {
            let mut data = json!({"batch": batch, "partner": p, "rail": rail, "amount": amount, "offset": offset, "mandate_ids": mandate_ids});
            if let Some(i) = instrument {
                data["instrument"] = json!(i);
            }
            if let Some(c) = credit {
                data["credit"] = json!(c);
            }
            (EventType::PayoutBatched, data)
        }
        Event::PayoutBooked { settlement, partner: p, paid, offset, mandate_ids } if mine(p) => (
            EventType::PayoutBooked,
            json!({"settlement": settlement, "partner": p, "paid": paid, "offset": offset, "mandate_ids": mandate_ids}),
        ),
        Event::PayoutReturned { settlement, batch, partner: p, amount, mandate_ids } if mine(p) => (
            EventType::PayoutReturned,
            json!({"settlement": settlement, "batch": batch, "partner": p, "amount": amount, "mandate_ids": mandate_ids}),
        ),
        Event::DisputeOpened { dispute, partner: p, subject, claimed, statement, evidence } if mine(p) => (
            EventType::DisputeOpened,
            json!({"dispute": dispute, "partner": p, "subject": subject, "claimed": claimed, "statement": statement, "evidence": evidence, "by": env.by}),
        ),
        Event::DisputeCommented { dispute, text } if mine(&disputant(dispute)) => (
            EventType::DisputeCommented,
            json!({"dispute": dispute, "partner": disputant(dispute), "text": text, "by": env.by}),
        ),
        Event::DisputeResolved { dispute, outcome, reason, .. } if mine(&disputant(dispute)) => (
            EventType::DisputeResolved,
            json!({"dispute": dispute, "partner": disputant(dispute), "outcome": outcome, "reason": reason}),
        ),
        Event::DisputeWithdrawn { dispute, reason } if mine(&disputant(dispute)) => (
            EventType::DisputeWithdrawn,
            json!({"dispute": dispute, "partner": disputant(dispute), "reason": reason, "by": env.by}),
        ),
        Event::DisputeOverdue { dispute, due_at } if mine(&disputant(dispute)) => {
            (EventType::DisputeOverdue, json!({"dispute": dispute, "partner": disputant(dispute), "due_at": due_at}))
        }
        Event::AdjustmentIssued { mandate_id, dispute, partner: p, amount, mandate } if mine(p) => (
            EventType::AdjustmentIssued,
            json!({"mandate_id": mandate_id, "dispute": dispute, "partner": p, "amount": amount, "mandate": mandate}),
        ),
        _ => return None,
    };
    data["seq"] = json!(seq);
    Some((kind, data))
}

fn with_batch(mut data: Value, batch: Option<&str>) -> Value {
    if let Some(b) = batch {
        data["batch"] = json!(b);
    }
    data
}

/// The message for record `seq` to subscription `sub`, if it hears of it.
#[must_use]
pub fn message_for(sub: &Subscription, seq: u64, env: &Envelope, state: &State) -> Option<Message> {
    let (kind, data) = event_of(seq, env, sub.partner.as_deref(), state)?;
    if !sub.events.is_empty() && !sub.events.iter().any(|e| e == kind.as_str()) {
        return None;
    }
    let body =
        json!({"type": kind.as_str(), "timestamp": env.at.to_rfc3339_opts(SecondsFormat::AutoSi, true), "data": data});
    Some(Message { id: format!("evt_{seq}"), seq, kind, body: settle_mandates::jcs::to_vec(&body).ok()? })
}

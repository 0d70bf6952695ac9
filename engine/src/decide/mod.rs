//! Deciding a fact: [`Engine::decide`], the one state transition, a pure function from
//! (state, fact, seq) to the derived events, with every rejection a value.
//!
//! [`Engine::decide`] runs a `Decider` over the fact: it reads the state, writes the
//! derived events (and what is to be signed) in log order, and returns the change to the
//! state as a closure, applied only once the whole fact is accepted. One home per fact:
//! - `program`: programs, their amendments, partners and agents (and open mandates),
//! - `lead`: lead registrations and hand-offs,
//! - `conversion`: conversions, holds and the standing authorisation's breaches,
//!   payment mandates, releases,
//! - `refund`: refunds and their clawbacks,
//! - `settlement`: payout batches and settlements (paid, failed or returned),
//! - `instrument`: partners' payout instruments for the bank rail,
//! - `dispute`: disputes, their comments, resolutions (adjustment mandates) and
//!   withdrawals; disputes overdue,
//! - `time`: log time advancing, holds released.

mod conversion;
mod dispute;
mod instrument;
mod lead;
mod program;
mod refund;
mod settlement;
mod time;

use chrono::{DateTime, Utc};
use settle_mandates::money::Amount;
use settle_mandates::types::{Direction, Instrument, Mandate, MandateBasis, Payee, derive_salt};

use crate::decision::{Decision, Output, Rejection, ToSign};
use crate::model::{CustomerKey, Envelope, Event};
use crate::state::{Agent, State};

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

/// The change a fact makes to the state, applied once the fact is accepted.
type Apply = Box<dyn FnOnce(&mut State)>;

/// Decides one fact: reads the state, writes the derived events.
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
    /// The dispatch: one method per fact type.
    fn run(&mut self) -> Result<Apply, Rejection> {
        let at = self.env.at;
        match self.env.event.clone() {
            Event::ProgramPublished { spec } => self.program_published(spec),
            Event::ProgramAmended { spec, effective_from } => self.program_amended(spec, effective_from),
            Event::PartnerEnrolled { partner, program, name, role } => {
                self.partner_enrolled(partner, program, name, role)
            }
            Event::PartnerSuspended { partner, reason } => self.partner_suspended(partner, reason),
            Event::AgentAuthorised { agent, partner, public_key, scopes, not_before, expires_at } => {
                let grant = Agent { partner, scopes, not_before, expires_at, revoked: false, public_key };
                self.agent_authorised(agent, grant)
            }
            Event::AgentRevoked { agent } => self.agent_revoked(agent),
            Event::LeadRegistered { lead, program, customer, customer_key, partner } => {
                self.lead_registered(lead, program, customer, customer_key.unwrap_or(CustomerKey::V1), partner, at)
            }
            Event::LeadHandedOff { lead, from, to } => self.lead_handed_off(lead, from, to),
            Event::ConversionRecorded { conversion, lead, revenue, occurred_at, subscription_month, fx } => {
                self.conversion(conversion, lead, revenue, occurred_at, subscription_month, fx.map(|f| f.rate))
            }
            Event::RefundRecorded { refund, conversion, size } => self.refund(refund, conversion, size),
            Event::HoldsAdvanced { to } => self.holds_advanced(to),
            Event::PayoutBatched { batch, partner, rail, mandate_ids } => self.batch(batch, partner, rail, mandate_ids),
            Event::ConversionReleased { conversion } => self.release(conversion),
            Event::SettlementConfirmed { settlement, batch, partner, mandate_ids, rail, confirmation_id } => {
                let a = settlement::RailAnswer { settlement, partner, rail, ids: mandate_ids, batch };
                self.rail_answered(a, Ok(confirmation_id))
            }
            Event::SettlementFailed { settlement, batch, partner, mandate_ids, rail, error } => {
                let a = settlement::RailAnswer { settlement, partner, rail, ids: mandate_ids, batch };
                self.rail_answered(a, Err(error))
            }
            Event::PayoutInstrumentRegistered { partner, instrument, currency } => {
                self.instrument_registered(partner, instrument, currency)
            }
            Event::PayoutInstrumentRemoved { partner, instrument } => self.instrument_removed(partner, instrument),
            Event::DisputeOpened { dispute, partner, subject, claimed, statement, evidence } => {
                self.dispute_opened(dispute, partner, subject, claimed, statement, evidence)
            }
            Event::DisputeCommented { dispute, text } => self.dispute_commented(dispute, text),
            Event::DisputeResolved { dispute, outcome, reason, adjustments } => {
                self.dispute_resolved(dispute, outcome, reason, adjustments)
            }
            Event::DisputeWithdrawn { dispute, reason } => self.dispute_withdrawn(dispute, reason),
            other => Err(Rejection::NotAFact(other.kind())),
        }
    }

    /// Writes a derived event of this fact (after those written before it).
    fn derived(&mut self, event: Event, sign: Option<ToSign>) {
        let envelope = Envelope { v: 1, at: self.env.at, by: "engine".into(), key: None, cause: Some(self.seq), event };
        self.outputs.push(Output { envelope, sign });
    }

    /// The SHA-256 of this fact's canonical bytes (hex), which every mandate it causes
    /// names; the bytes are kept for the decision.
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

    /// The payment, clawback or adjustment mandate `id` of `amount` to `partner`'s commission account,
    /// issued now, executable from `execution_date`, on `basis`.
    fn mandate(
        &self,
        direction: Direction,
        id: &str,
        partner: &str,
        amount: Amount,
        execution_date: i64,
        basis: MandateBasis,
    ) -> Mandate {
        Mandate {
            vct: Mandate::vct_for(direction).into(),
            transaction_id: id.to_owned(),
            payee: Payee { id: partner.to_owned() },
            payment_amount: amount,
            payment_instrument: Instrument { kind: "settle.commission_account".into(), id: partner.to_owned() },
            direction,
            iss: self.cfg.vendor.clone(),
            iat: ts(self.env.at),
            execution_date,
            basis,
            salt: derive_salt(&self.cfg.salt_secret, id),
        }
    }
}

/// Unix seconds of `t`.
fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

//! Writes: each request type, the fact it becomes once the catalogue allows its caller
//! ([`crate::catalogue::allow`], with the request's targets), and [`record`], which
//! records a fact under the caller's idempotency key and answers once it is durable.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use settle_engine::Envelope;
use settle_engine::model::{
    AgentScope, Allocation, CustomerKey, Event, FxRate, ID_PATTERN, MAX_SETTLEMENT_MANDATES, MAX_TEXT_BYTES,
    PartnerRole, ProgramSpec, RefundSize,
};
use settle_mandates::money::{Amount, Currency, Sign};

use super::{App, FRACTION_PATTERN, MANDATE_ID_PATTERN, POSITIVE_DECIMAL_PATTERN};
use crate::auth::{Principal, agent_scopes};
use crate::catalogue::{Op, Target, allow};
use crate::error::Error;
use crate::service::{MAX_BATCH, Outcome, Submit, SubmitError};

/// A fact a caller may record, and the request that makes a retry "the same request"
/// (`None`: the fact itself).
pub struct Fact {
    /// The fact.
    pub event: Event,
    /// The request as sent, when the fact adds what the request left out (the time).
    pub request: Option<Value>,
}

impl From<Event> for Fact {
    fn from(event: Event) -> Self {
        Self { event, request: None }
    }
}

/// Records `fact` for `p` under the idempotency key `key` (already scoped to `p`);
/// answers once it is durable.
pub async fn record(app: &App, p: &Principal, key: String, fact: Fact) -> Result<Outcome, Error> {
    let sub = Submit { key, by: p.by(), at: Utc::now(), event: fact.event, request: fact.request };
    let r = app.svc.try_submit(vec![sub]).await.into_iter().next().ok_or_else(|| Error::internal("no outcome"))?;
    Ok(r?)
}

/// Records the conversions of a batch (each under `key#<index>`), in order, in one group
/// commit: each answers its outcome or its own refusal. A full queue refuses the whole
/// batch.
pub async fn record_batch(
    app: &App,
    p: &Principal,
    key: &str,
    items: Vec<ConversionBody>,
) -> Result<Vec<Result<Outcome, Error>>, Error> {
    allow(p, Op::RecordConversions, &[])?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(Error::rejected(format!("a batch holds 1..={MAX_BATCH} conversions")));
    }
    let now = Utc::now();
    let mut subs = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let Fact { event, request } = it.fact(p, now).map_err(|e| e.at(&format!("item {i}")))?;
        subs.push(Submit { key: format!("{key}#{i}"), by: p.by(), at: now, event, request });
    }
    let results = app.svc.try_submit(subs).await;
    if results.iter().any(|r| matches!(r, Err(SubmitError::Busy))) {
        return Err(SubmitError::Busy.into());
    }
    Ok(results.into_iter().map(|r| r.map_err(Error::from)).collect())
}

fn parse_amount(value: &str, currency: &str, sign: Sign) -> Result<Amount, Error> {
    let c: Currency =
        currency.parse().map_err(|e: settle_mandates::money::MoneyError| Error::rejected(e.to_string()))?;
    Amount::parse(value, c, sign).map_err(|e| Error::rejected(e.to_string()))
}

/// The rules as settle records them now: with the current arithmetic
/// ([`Allocation::CURRENT`]) when the request leaves it out; a request naming
/// `largest_remainder.v1`, kept only to replay older logs, is refused.
pub fn current_rules(mut spec: ProgramSpec) -> Result<ProgramSpec, Error> {
    match spec.allocation {
        Some(Allocation::V1) => Err(Error::rejected(
            "allocation largest_remainder.v1 is kept only to replay older logs; publish with largest_remainder.v2",
        )),
        _ => {
            spec.allocation = Some(Allocation::CURRENT);
            Ok(spec)
        }
    }
}

/// `POST /v1/programs`: a program published (vendor only).
pub fn publish(p: &Principal, spec: ProgramSpec) -> Result<Fact, Error> {
    allow(p, Op::PublishProgram, &[])?;
    Ok(Event::ProgramPublished { spec: current_rules(spec)? }.into())
}

/// `POST /v1/programs/{id}/amendments`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Amendment")]
pub struct AmendBody {
    /// The new rules (same program id, which must be the one in the path, and currency).
    pub spec: ProgramSpec,
    /// From when they apply: conversions occurring earlier keep the rules they had.
    pub effective_from: DateTime<Utc>,
}

impl AmendBody {
    /// The amendment of `program` (vendor only).
    pub fn fact(self, p: &Principal, program: &str) -> Result<Fact, Error> {
        allow(p, Op::AmendProgram, &[])?;
        if self.spec.program != program {
            return Err(Error::rejected("spec.program must match the program in the path"));
        }
        Ok(Event::ProgramAmended { spec: current_rules(self.spec)?, effective_from: self.effective_from }.into())
    }
}

/// `POST /v1/partners`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Enrollment")]
pub struct PartnerBody {
    /// Partner id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
    /// The program it joins.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub program: String,
    /// Display name (at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub name: String,
    /// Its role.
    pub role: PartnerRole,
}

impl PartnerBody {
    /// The enrolment (vendor only).
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::EnrollPartner, &[])?;
        Ok(Event::PartnerEnrolled { partner: self.partner, program: self.program, name: self.name, role: self.role }
            .into())
    }
}

/// `POST /v1/partners/{id}/suspend`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Suspension")]
pub struct ReasonBody {
    /// Why (at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub reason: String,
}

impl ReasonBody {
    /// The suspension of `partner` (vendor only).
    pub fn fact(self, p: &Principal, partner: String) -> Result<Fact, Error> {
        allow(p, Op::SuspendPartner, &[])?;
        Ok(Event::PartnerSuspended { partner, reason: self.reason }.into())
    }
}

/// `POST /v1/agents`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AgentGrant")]
pub struct AgentBody {
    /// Agent id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub agent: String,
    /// The partner it acts for (a partner authorises agents for itself only).
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
    /// The agent's Ed25519 public key (JWK: kty OKP, crv Ed25519, x, kid = its RFC 7638
    /// thumbprint), for requests it signs itself; absent or `null`: none.
    #[serde(default)]
    pub public_key: Option<settle_mandates::keys::Jwk>,
    /// What it may do (never more than the granting token holds).
    #[schemars(length(min = 1))]
    pub scopes: Vec<AgentScope>,
    /// Start of its authority.
    pub not_before: DateTime<Utc>,
    /// End of its authority (exclusive), after `not_before`.
    pub expires_at: DateTime<Utc>,
}

impl AgentBody {
    /// The grant: by the vendor, or by the partner itself, for that partner; never more
    /// than the granting token holds.
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        let granted = agent_scopes(&self.scopes);
        allow(p, Op::AuthoriseAgent, &[Target::NameOf(&self.partner), Target::Scopes(&granted)])?;
        Ok(Event::AgentAuthorised {
            agent: self.agent,
            partner: self.partner,
            public_key: self.public_key,
            scopes: self.scopes,
            not_before: self.not_before,
            expires_at: self.expires_at,
        }
        .into())
    }
}

/// `POST /v1/agents/{id}/revoke`: by the vendor, or by the partner that granted it.
pub fn revoke_agent(app: &App, p: &Principal, agent: String) -> Result<Fact, Error> {
    let owner = app.svc.with_state(|s| s.agents.get(&agent).map(|a| a.partner.clone()));
    allow(p, Op::RevokeAgent, &[Target::Agent { id: &agent, owner: owner.as_deref() }])?;
    Ok(Event::AgentRevoked { agent }.into())
}

/// A lead registration.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadBody {
    /// Lead id, unique per vendor (e.g. `lead-7`).
    #[schemars(regex(pattern = ID_PATTERN))]
    pub lead: String,
    /// Program id the lead is registered in.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub program: String,
    /// The customer (e.g. the customer's domain); the first valid registration of a
    /// customer in the attribution window owns it. Its key (the name normalised) must be
    /// 1..=128 bytes.
    #[schemars(length(min = 1))]
    pub customer: String,
    /// The registering partner (a partner may register only in its own name).
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
}

impl LeadBody {
    /// The registration, if `p` may make it (a partner in its own name only).
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::RegisterLead, &[Target::NameOf(&self.partner)])?;
        // Keyed by the normalisation in force, named in the fact (absent: v1, older logs).
        Ok(Event::LeadRegistered {
            lead: self.lead,
            program: self.program,
            customer: self.customer,
            customer_key: Some(CustomerKey::CURRENT),
            partner: self.partner,
        }
        .into())
    }
}

/// A hand-off of a lead to the next partner in its referral chain.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffBody {
    /// The partner holding the lead now (its last hop).
    #[schemars(regex(pattern = ID_PATTERN))]
    pub from: String,
    /// The partner it is handed to.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub to: String,
}

impl HandoffBody {
    /// The hand-off of `lead`, if `p` may make it: a partner hands off only a lead it
    /// holds (another's is not found), in its own name.
    pub fn fact(self, app: &App, p: &Principal, lead: String) -> Result<Fact, Error> {
        let holder = app.svc.with_state(|s| s.leads.get(&lead).and_then(|l| l.chain.last().map(ToString::to_string)));
        let targets = [Target::Lead { id: &lead, holder: holder.as_deref() }, Target::NameOf(&self.from)];
        allow(p, Op::HandOffLead, &targets)?;
        Ok(Event::LeadHandedOff { lead, from: self.from, to: self.to }.into())
    }
}

/// A lead hand-off naming its lead (the agent doors' form of `HandoffBody`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffParams {
    /// The lead.
    pub lead: String,
    /// The partner holding the lead now (its last hop).
    pub from: String,
    /// The partner it is handed to.
    pub to: String,
}

/// An FX rate applied to a conversion in another currency.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FxBody {
    /// Decimal rate: one unit of the deal's currency in the program's currency.
    #[schemars(regex(pattern = POSITIVE_DECIMAL_PATTERN))]
    pub rate: String,
    /// Where the rate comes from (recorded for audit).
    pub source: String,
}

/// A won deal, as sent over the API: amounts as decimal strings.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionBody {
    /// Conversion (deal) id, unique per vendor (e.g. `deal-42`).
    #[schemars(regex(pattern = ID_PATTERN))]
    pub conversion: String,
    /// The lead the deal was won on.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub lead: String,
    /// Revenue as a decimal string in major units (e.g. `"12345.67"`); never a float.
    /// More decimals than the currency has are refused.
    #[schemars(regex(pattern = POSITIVE_DECIMAL_PATTERN))]
    pub revenue: String,
    /// ISO 4217 code of the revenue (e.g. `USD`).
    #[schemars(with = "Currency")]
    pub currency: String,
    /// When the deal was won (RFC 3339); now if absent.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Month of a subscription (1 = first), for programs paying the first N months.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub subscription_month: Option<u32>,
    /// FX rate when the revenue is not in the program's currency.
    #[serde(default, deserialize_with = "settle_engine::model::optional_object")]
    #[schemars(with = "Option<FxBody>")]
    pub fx: Option<FxBody>,
}

impl ConversionBody {
    /// The conversion (vendor only), with the request as sent (it leaves the time out);
    /// a deal without `occurred_at` occurred at `now`, which must not be later than the
    /// time the event is recorded at.
    pub fn fact(self, p: &Principal, now: DateTime<Utc>) -> Result<Fact, Error> {
        allow(p, Op::RecordConversion, &[])?;
        let request = serde_json::to_value(&self).ok();
        // What the document states of a conversion is checked here, before the engine:
        // an item of a batch that breaks it refuses the whole batch.
        for (what, id) in [("conversion", &self.conversion), ("lead", &self.lead)] {
            settle_engine::state::check_id(what, id).map_err(|e| Error::rejected(e.to_string()))?;
        }
        if self.subscription_month == Some(0) {
            return Err(Error::rejected("subscription_month counts from 1 (the first month)"));
        }
        let revenue = parse_amount(&self.revenue, &self.currency, Sign::Positive)?;
        let fx = self.fx.map(FxBody::rate).transpose()?;
        let event = Event::ConversionRecorded {
            conversion: self.conversion,
            lead: self.lead,
            revenue,
            occurred_at: self.occurred_at.unwrap_or(now),
            subscription_month: self.subscription_month,
            fx,
        };
        Ok(Fact { event, request })
    }
}

impl FxBody {
    fn rate(self) -> Result<FxRate, Error> {
        let rate = settle_mandates::money::parse_decimal(&self.rate)
            .ok()
            .filter(|r| r.is_sign_positive() && !r.is_zero())
            .ok_or_else(|| {
                Error::rejected(format!("fx rate '{}' is not a positive decimal such as \"1.0842\"", self.rate))
            })?;
        Ok(FxRate { rate, source: self.source })
    }
}

/// `POST /v1/conversions/batch`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConversionBatch")]
pub struct BatchBody {
    /// The conversions, each as `POST /v1/conversions` takes it.
    #[schemars(length(min = 1, max = MAX_BATCH))]
    pub items: Vec<ConversionBody>,
}

/// A full or partial refund of a conversion.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Refund id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub refund: String,
    /// The refunded conversion.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub conversion: String,
    /// Refunded revenue as a decimal string (with `currency`), for a partial refund.
    #[serde(default)]
    #[schemars(regex(pattern = POSITIVE_DECIMAL_PATTERN))]
    pub amount: Option<String>,
    /// ISO 4217 code of `amount`.
    #[serde(default)]
    #[schemars(with = "Option<Currency>")]
    pub currency: Option<String>,
    /// A fraction of the conversion's revenue as a decimal string, `0 < f ≤ 1` (e.g.
    /// `"0.25"`), instead of an amount.
    #[serde(default)]
    #[schemars(regex(pattern = FRACTION_PATTERN))]
    pub fraction: Option<String>,
    /// `true` for a full refund (then no amount).
    #[serde(default)]
    pub full: bool,
}

impl RefundBody {
    /// The refund (vendor only).
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::RecordRefund, &[])?;
        let size = match (self.full, self.amount, self.currency, self.fraction) {
            (true, None, None, None) => RefundSize::Full,
            (false, Some(a), Some(c), None) => RefundSize::Amount(parse_amount(&a, &c, Sign::Positive)?),
            (false, None, None, Some(f)) => RefundSize::Fraction(
                settle_mandates::money::parse_decimal(&f)
                    .map_err(|_| Error::rejected(format!("fraction '{f}' is not a decimal number such as \"0.25\"")))?,
            ),
            _ => {
                return Err(Error::rejected(
                    "give one of: \"full\": true; \"amount\" and \"currency\"; or \"fraction\"",
                ));
            }
        };
        Ok(Event::RefundRecorded { refund: self.refund, conversion: self.conversion, size }.into())
    }
}

/// `POST /v1/settlements`: `confirmation_id` (paid) or `error` (failed), not both.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Settlement")]
pub struct SettlementBody {
    /// Settlement id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub settlement: String,
    /// The payout batch this answers, if the mandates were batched.
    #[serde(default)]
    #[schemars(regex(pattern = ID_PATTERN))]
    pub batch: Option<String>,
    /// The partner paid.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
    /// Rail name (`book`, `sepa`, `stripe`, ...; at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub rail: String,
    /// The payable mandates paid (with `batch`: the batch's, in its order).
    #[schemars(length(min = 1, max = MAX_SETTLEMENT_MANDATES), inner(regex(pattern = MANDATE_ID_PATTERN)))]
    pub mandate_ids: Vec<String>,
    /// The rail's confirmation id (paid; at most 256 bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub confirmation_id: Option<String>,
    /// The rail's error code (failed; at most 256 bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub error: Option<String>,
}

impl SettlementBody {
    /// The rail's answer (vendor only): paid, or failed.
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::RecordSettlement, &[])?;
        let Self { settlement, batch, partner, rail, mandate_ids, confirmation_id, error } = self;
        let event = match (confirmation_id, error) {
            (Some(confirmation_id), None) => {
                Event::SettlementConfirmed { settlement, batch, partner, rail, confirmation_id, mandate_ids }
            }
            (None, Some(error)) => Event::SettlementFailed { settlement, batch, partner, rail, error, mandate_ids },
            _ => return Err(Error::rejected("give either confirmation_id (paid) or error (failed)")),
        };
        Ok(event.into())
    }
}

/// `POST /v1/payouts`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Payout")]
pub struct PayoutBody {
    /// Payout batch id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub batch: String,
    /// The partner paid.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
    /// Rail the batch is sent to (at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub rail: String,
    /// The partner's payable mandates in the batch.
    #[schemars(length(min = 1, max = MAX_SETTLEMENT_MANDATES), inner(regex(pattern = MANDATE_ID_PATTERN)))]
    pub mandate_ids: Vec<String>,
}

impl PayoutBody {
    /// The payout batch (vendor only).
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::CreatePayout, &[])?;
        Ok(Event::PayoutBatched {
            batch: self.batch,
            partner: self.partner,
            rail: self.rail,
            mandate_ids: self.mandate_ids,
        }
        .into())
    }
}

/// `POST /v1/conversions/{id}/release`: a held conversion decided again (vendor only).
pub fn release(p: &Principal, conversion: String) -> Result<Fact, Error> {
    allow(p, Op::ReleaseConversion, &[])?;
    Ok(Event::ConversionReleased { conversion }.into())
}

/// `POST /v1/holds/advance`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HoldsAdvance")]
pub struct AdvanceBody {
    /// The new log time, at most now; absent or `null`: now.
    #[serde(default)]
    pub to: Option<DateTime<Utc>>,
}

impl AdvanceBody {
    /// Holds released up to `to` (vendor only), with the request as sent.
    pub fn fact(self, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::AdvanceHolds, &[])?;
        let request = serde_json::to_value(&self).ok();
        Ok(Fact { event: Event::HoldsAdvanced { to: self.to.unwrap_or_else(Utc::now) }, request })
    }
}

/// The answer to a write, serialised straight from the outcome (no intermediate
/// `Value`: batches of a thousand conversions answer megabytes of it). Members are in
/// sorted order, as `serde_json::Value` would give them.
#[derive(Serialize, JsonSchema)]
#[schemars(
    rename = "Outcome",
    description = "The answer to a write, once it is durable: the fact's log position, what the engine concluded, the mandates issued and every record written."
)]
pub struct OutcomeView<'a> {
    /// The fact and every record it caused, as logged (a partner's copy leaves out the
    /// lead that owns a customer it registered again). Left out of a minimal answer
    /// (`Prefer: return=minimal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<Envelope>")]
    events: Option<std::borrow::Cow<'a, [Envelope]>>,
    /// The payment, clawback and adjustment mandates issued.
    mandates: Vec<MandateView<'a>>,
    /// What the engine concluded about a conversion or a lead (`null` for other facts).
    outcome: Option<Summary<'a>>,
    /// `true` when this answers an earlier request with the same idempotency key.
    replayed: bool,
    /// Log position of the fact.
    seq: u64,
}

/// A mandate issued by a write.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "IssuedMandate")]
struct MandateView<'a> {
    /// Its amount.
    amount: &'a Amount,
    /// `payment`, `clawback` or `adjustment` (signed: positive pays more, negative takes
    /// back).
    #[schemars(extend("enum" = ["payment", "clawback", "adjustment"]))]
    direction: &'static str,
    /// The signed mandate (compact JWS). Left out of a minimal answer (`Prefer:
    /// return=minimal`): read it with the partner's mandates or its receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    mandate: Option<&'a str>,
    /// Its id: `md_<seq>_<hop>` (payment), `cb_<seq>_<hop>` (clawback) or `aj_<seq>_<n>`
    /// (adjustment).
    mandate_id: &'a str,
    /// Of a clawback: the part taken from money already paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<&'a Amount>,
    /// The payee.
    partner: &'a str,
    /// Of a clawback: the payment mandate it reverses.
    #[serde(skip_serializing_if = "Option::is_none")]
    reverses: Option<&'a str>,
}

/// What the engine concluded.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "OutcomeSummary")]
enum Summary<'a> {
    /// Of a conversion.
    Conversion {
        /// `settled`, `held` or `no_commission`.
        outcome: &'a str,
        /// The pool (zero when none).
        pool: &'a Amount,
        /// Why it was held or earns nothing.
        reason: Option<&'a str>,
        /// The rule version it was priced with.
        rule_version: Option<u32>,
    },
    /// Of a lead registration or hand-off.
    Lead {
        /// The referral chain now.
        chain: &'a [String],
        /// `owner`, `duplicate` or `handed_off`.
        outcome: &'a str,
        /// Of a duplicate, to the vendor: the lead that owns the customer.
        owner: Option<&'a str>,
    },
}

impl<'a> OutcomeView<'a> {
    /// The view of `o` for `p`. A partner learns only that a customer is already
    /// registered, never by whom: the owning lead of a duplicate is left out.
    #[must_use]
    pub fn of(o: &'a Outcome, p: &Principal) -> Self {
        let mandates = o
            .records
            .iter()
            .filter_map(|e| match &e.event {
                Event::MandateIssued { mandate_id, partner, amount, mandate } => Some(MandateView {
                    amount,
                    direction: "payment",
                    mandate: Some(mandate),
                    mandate_id,
                    offset: None,
                    partner,
                    reverses: None,
                }),
                Event::ClawbackIssued { mandate_id, partner, amount, offset, mandate, reverses } => Some(MandateView {
                    amount,
                    direction: "clawback",
                    mandate: Some(mandate),
                    mandate_id,
                    offset: Some(offset),
                    partner,
                    reverses: Some(reverses),
                }),
                Event::AdjustmentIssued { mandate_id, partner, amount, mandate, .. } => Some(MandateView {
                    amount,
                    direction: "adjustment",
                    mandate: Some(mandate),
                    mandate_id,
                    offset: None,
                    partner,
                    reverses: None,
                }),
                _ => None,
            })
            .collect();
        let outcome = o.records.iter().find_map(|e| match &e.event {
            Event::ConversionOutcome { outcome, reason, pool, rule_version, .. } => Some(Summary::Conversion {
                outcome: outcome.as_str(),
                pool,
                reason: reason.as_deref(),
                rule_version: *rule_version,
            }),
            Event::LeadOutcome { outcome, owner, chain, .. } => Some(Summary::Lead {
                chain,
                outcome: outcome.as_str(),
                owner: owner.as_deref().filter(|_| p.is_vendor()),
            }),
            _ => None,
        });
        let names_owner = |e: &Envelope| matches!(&e.event, Event::LeadOutcome { owner: Some(_), .. });
        let events = if p.is_vendor() || !o.records.iter().any(names_owner) {
            std::borrow::Cow::Borrowed(o.records.as_slice())
        } else {
            std::borrow::Cow::Owned(
                o.records
                    .iter()
                    .cloned()
                    .map(|mut e| {
                        if let Event::LeadOutcome { owner, .. } = &mut e.event {
                            *owner = None;
                        }
                        e
                    })
                    .collect(),
            )
        };
        Self { events: Some(events), mandates, outcome, replayed: o.replayed, seq: o.seq }
    }

    /// The minimal answer (RFC 7240 `Prefer: return=minimal`): what the engine concluded
    /// and each mandate's id, payee and amount, without the records written and the
    /// signed mandates (a few hundred bytes instead of about 9 KiB for three hops).
    #[must_use]
    pub fn minimal(mut self) -> Self {
        self.events = None;
        for m in &mut self.mandates {
            m.mandate = None;
        }
        self
    }
}

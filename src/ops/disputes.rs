//! Disputes at every door: the requests that open, comment on, resolve and withdraw one
//! (each becomes its fact after the catalogue's authorisation), and what a caller may see
//! of them ([`DisputeView`]: a partner only its own, and of an accepted dispute only its
//! own adjustments). The lifecycle and the arithmetic are docs/commission-rules.md's.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use settle_engine::model::{
    AdjustmentLine, DisputeOutcome, DisputeStatus, DisputeSubject, Event, ID_PATTERN, MAX_EVIDENCE, MAX_TEXT_BYTES,
};
use settle_engine::state::{Dispute, State};
use settle_mandates::money::{Amount, Currency, Sign};

use super::commands::Fact;
use super::{App, POSITIVE_DECIMAL_PATTERN, SIGNED_DECIMAL_PATTERN};
use crate::auth::Principal;
use crate::catalogue::{Op, Target, allow};
use crate::error::Error;

/// Most disputes in one list.
pub const MAX_DISPUTES_LISTED: usize = 1000;

/// `POST /v1/disputes`: a partner's dispute of its commission.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DisputeOpening")]
pub struct DisputeBody {
    /// Dispute id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub dispute: String,
    /// The disputing partner (a partner disputes in its own name only).
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
    /// What is disputed: a conversion, a payment mandate, a clawback, or a deal missing
    /// on a lead.
    pub subject: DisputeSubject,
    /// What the partner claims it is owed, a decimal string in the program's currency
    /// (absent: a claim in words, which no adjustment may pay).
    #[serde(default)]
    #[schemars(regex(pattern = POSITIVE_DECIMAL_PATTERN))]
    pub claimed: Option<String>,
    /// ISO 4217 code of `claimed`, if given: the program's currency.
    #[serde(default)]
    #[schemars(with = "Option<Currency>")]
    pub currency: Option<String>,
    /// The claim in words (1..=256 bytes).
    #[schemars(length(min = 1, max = MAX_TEXT_BYTES))]
    pub statement: String,
    /// Evidence: receipt ids, references (each 1..=256 bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_EVIDENCE), inner(length(min = 1, max = MAX_TEXT_BYTES)))]
    pub evidence: Vec<String>,
}

impl DisputeBody {
    /// The dispute, if `p` may open it (a partner in its own name; the vendor on its
    /// behalf).
    pub fn fact(self, app: &App, p: &Principal) -> Result<Fact, Error> {
        allow(p, Op::OpenDispute, &[Target::NameOf(&self.partner)])?;
        let cur =
            currency_of(app, self.currency.as_deref(), |s| s.partners.get(&self.partner).map(|x| x.program.clone()))?;
        let claimed = match (self.claimed, cur) {
            (Some(c), Some(cur)) => Some(parse(&c, cur, Sign::Positive)?),
            (Some(_), None) => return Err(Error::not_found(format!("partner '{}' not found", self.partner))),
            (None, _) => None,
        };
        Ok(Event::DisputeOpened {
            dispute: self.dispute,
            partner: self.partner,
            subject: self.subject,
            claimed,
            statement: self.statement,
            evidence: self.evidence,
        }
        .into())
    }
}

/// `POST /v1/disputes/{id}/comments`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DisputeComment")]
pub struct CommentBody {
    /// The comment (1..=256 bytes).
    #[schemars(length(min = 1, max = MAX_TEXT_BYTES))]
    pub text: String,
}

/// A step of a dispute named in the request's path (`POST /v1/disputes/{id}/…`): its
/// operation, and the fact it becomes once the catalogue allows its caller.
pub trait Step: serde::de::DeserializeOwned {
    /// The operation.
    const OP: Op;
    /// The fact, for dispute `id`.
    fn fact(self, app: &App, p: &Principal, id: String) -> Result<Fact, Error>;
}

impl Step for CommentBody {
    const OP: Op = Op::CommentDispute;
    /// The comment on dispute `id`, by the vendor or the dispute's partner.
    fn fact(self, app: &App, p: &Principal, id: String) -> Result<Fact, Error> {
        allow_on(app, p, Self::OP, &id)?;
        Ok(Event::DisputeCommented { dispute: id, text: self.text }.into())
    }
}

/// `POST /v1/disputes/{id}/withdraw`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DisputeWithdrawal")]
pub struct WithdrawBody {
    /// Why (at most 256 bytes; may be empty).
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub reason: String,
}

impl Step for WithdrawBody {
    const OP: Op = Op::WithdrawDispute;
    /// The withdrawal of dispute `id`, by its partner or the vendor.
    fn fact(self, app: &App, p: &Principal, id: String) -> Result<Fact, Error> {
        allow_on(app, p, Self::OP, &id)?;
        Ok(Event::DisputeWithdrawn { dispute: id, reason: self.reason }.into())
    }
}

/// One partner's adjustment, as sent.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DisputeAdjustment")]
pub struct AdjustmentBody {
    /// A partner on the dispute's subject.
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: String,
    /// Signed decimal string in the program's currency: positive pays the partner more,
    /// negative takes back; never zero.
    #[schemars(regex(pattern = SIGNED_DECIMAL_PATTERN))]
    pub amount: String,
}

/// `POST /v1/disputes/{id}/resolution`: the vendor's decision.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DisputeResolution")]
pub struct ResolutionBody {
    /// `accepted` or `rejected`.
    pub outcome: DisputeOutcome,
    /// Why (required for a rejection; at most 256 bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_BYTES))]
    pub reason: String,
    /// For an accepted dispute: each partner's adjustment. Absent or empty: the claimed
    /// amount, to the disputing partner (nothing, for a claim in words).
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub adjustments: Vec<AdjustmentBody>,
    /// ISO 4217 code of the adjustments, if given: the program's currency.
    #[serde(default)]
    #[schemars(with = "Option<Currency>")]
    pub currency: Option<String>,
}

impl Step for ResolutionBody {
    const OP: Op = Op::ResolveDispute;
    /// The resolution of dispute `id` (the vendor only).
    fn fact(self, app: &App, p: &Principal, id: String) -> Result<Fact, Error> {
        allow(p, Self::OP, &[])?;
        let cur = currency_of(app, self.currency.as_deref(), |s| s.disputes.get(&id).map(|d| d.program.clone()))?
            .ok_or_else(|| Error::not_found(format!("dispute '{id}' not found")))?;
        let adjustments = self
            .adjustments
            .into_iter()
            .map(|a| Ok(AdjustmentLine { amount: parse(&a.amount, cur, Sign::Any)?, partner: a.partner }))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Event::DisputeResolved { dispute: id, outcome: self.outcome, reason: self.reason, adjustments }.into())
    }
}

/// The currency amounts of a request are read in: `given`, or the currency of the
/// program `program` finds (`None`: none found).
fn currency_of(
    app: &App,
    given: Option<&str>,
    program: impl FnOnce(&State) -> Option<String>,
) -> Result<Option<Currency>, Error> {
    if let Some(c) = given {
        return c.parse().map(Some).map_err(|e: settle_mandates::money::MoneyError| Error::rejected(e.to_string()));
    }
    Ok(app.svc.with_state(|s| program(s).and_then(|p| s.programs.get(&p)).map(|p| p.latest().spec.currency)))
}

fn parse(value: &str, cur: Currency, sign: Sign) -> Result<Amount, Error> {
    Amount::parse(value, cur, sign).map_err(|e| Error::rejected(e.to_string()))
}

/// Lets `p` call `op` on dispute `id`: a partner only on its own (another's is not found).
fn allow_on(app: &App, p: &Principal, op: Op, id: &str) -> Result<(), Error> {
    let owner = app.svc.with_state(|s| s.disputes.get(id).map(|d| d.partner.clone()));
    allow(p, op, &[Target::Dispute { id, owner: owner.as_deref() }])
}

/// Which disputes to list.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeQuery {
    /// Only this partner's (a partner sees only its own).
    #[serde(default)]
    #[schemars(regex(pattern = ID_PATTERN))]
    pub partner: Option<String>,
    /// Only those in this state (`open`, `accepted`, `rejected`, `withdrawn`).
    #[serde(default)]
    #[schemars(with = "Option<String>", extend("enum" = ["open", "accepted", "rejected", "withdrawn"]))]
    pub status: Option<String>,
    /// Only those flagged overdue (`true`) or not (`false`).
    #[serde(default)]
    pub overdue: Option<bool>,
}

/// A dispute as a caller may see it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Dispute")]
pub struct DisputeView {
    /// The adjustment mandates of an accepted dispute (a partner sees only its own).
    pub adjustments: Vec<AdjustmentView>,
    /// The amount claimed, if any (decimal string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
    /// How it was closed, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<ClosedView>,
    /// Comments, oldest first.
    pub comments: Vec<CommentView>,
    /// The program's currency.
    pub currency: Currency,
    /// Dispute id.
    pub dispute: String,
    /// When the vendor's resolution is due.
    pub due_at: DateTime<Utc>,
    /// Evidence named.
    pub evidence: Vec<String>,
    /// When it was opened.
    pub opened_at: DateTime<Utc>,
    /// Who opened it (`partner:…`, `agent:…`, `vendor:…`).
    pub opened_by: String,
    /// Unresolved past `due_at`.
    pub overdue: bool,
    /// The disputing partner.
    pub partner: String,
    /// Its program.
    pub program: String,
    /// Log position of its `dispute_opened`.
    pub seq: u64,
    /// The claim in words.
    pub statement: String,
    /// `open`, `accepted`, `rejected` or `withdrawn`.
    #[schemars(with = "String", extend("enum" = ["open", "accepted", "rejected", "withdrawn"]))]
    pub status: DisputeStatus,
    /// What is disputed.
    pub subject: DisputeSubject,
}

/// An adjustment mandate of a dispute.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AdjustmentView {
    /// Signed decimal string.
    pub amount: String,
    /// Its id, `aj_<seq>_<n>`: its receipt is `GET /v1/partners/{partner}/receipts/{id}`.
    pub mandate_id: String,
    /// The partner.
    pub partner: String,
}

/// A comment on a dispute.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CommentView {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: String,
    /// The text.
    pub text: String,
}

/// How a dispute was closed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ClosedView {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: String,
    /// The reason given.
    pub reason: String,
    /// Log position of the fact that closed it.
    pub seq: u64,
}

/// Disputes as a page.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "DisputeList")]
pub struct DisputeList {
    /// The disputes, by id (at most 1,000).
    pub disputes: Vec<DisputeView>,
}

/// The view of dispute `id` (`d`) for `p`.
fn view(s: &State, id: &str, d: &Dispute, p: &Principal) -> DisputeView {
    // A dispute is opened only in a program that exists, and programs stay.
    let cur = s
        .programs
        .get(&d.program)
        .map(|pr| pr.latest().spec.currency)
        .unwrap_or_else(|| unreachable!("dispute '{id}' names program '{}'", d.program));
    let dec = |m: i64| Amount::from_minor(m, cur).map_or_else(|_| m.to_string(), |a| a.to_decimal_string());
    DisputeView {
        adjustments: d
            .adjustments
            .iter()
            .filter(|(_, partner, _)| p.is_vendor() || p.partner.as_deref() == Some(partner.as_str()))
            .map(|(m, partner, a)| AdjustmentView { amount: dec(*a), mandate_id: m.clone(), partner: partner.clone() })
            .collect(),
        claimed: d.claimed.map(|c| c.to_decimal_string()),
        closed: d.closed.as_ref().map(|c| ClosedView {
            at: c.at,
            by: c.by.clone(),
            reason: c.reason.clone(),
            seq: c.seq,
        }),
        comments: d.comments.iter().map(|c| CommentView { at: c.at, by: c.by.clone(), text: c.text.clone() }).collect(),
        currency: cur,
        dispute: id.to_owned(),
        due_at: d.due_at,
        evidence: d.evidence.clone(),
        opened_at: d.opened_at,
        opened_by: d.opened_by.clone(),
        overdue: d.overdue,
        partner: d.partner.clone(),
        program: d.program.clone(),
        seq: d.seq,
        statement: d.statement.clone(),
        status: d.status,
        subject: d.subject.clone(),
    }
}

/// Dispute `id`, as `p` may see it (another partner's is not found).
pub fn dispute(app: &App, p: &Principal, id: &str) -> Result<DisputeView, Error> {
    allow_on(app, p, Op::GetDispute, id)?;
    app.svc
        .with_state(|s| s.disputes.get(id).map(|d| view(s, id, d, p)))
        .ok_or_else(|| Error::not_found(format!("dispute '{id}' not found")))
}

/// The disputes `q` asks for, as `p` may see them: a partner only its own.
pub fn disputes(app: &App, p: &Principal, q: &DisputeQuery) -> Result<DisputeList, Error> {
    let partner = match (p.is_vendor(), q.partner.as_deref()) {
        (true, asked) => asked,
        (false, asked) => {
            Some(asked.or(p.partner.as_deref()).ok_or_else(|| Error::forbidden("this token acts for no partner"))?)
        }
    };
    let targets: Vec<Target<'_>> = partner.map(Target::DataOf).into_iter().collect();
    allow(p, Op::ListDisputes, &targets)?;
    // What the document states of the query is checked as the body of a request is: 400.
    if let Some(asked) = &q.partner {
        settle_engine::state::check_id("partner", asked).map_err(|e| Error::malformed(e.to_string()))?;
    }
    let status = q.status.as_deref().map(str::parse::<DisputeStatus>).transpose().map_err(Error::malformed)?;
    Ok(app.svc.with_state(|s| DisputeList {
        disputes: s
            .disputes
            .iter()
            .filter(|(_, d)| partner.is_none_or(|me| d.partner == me))
            .filter(|(_, d)| status.is_none_or(|st| d.status == st))
            .filter(|(_, d)| q.overdue.is_none_or(|o| d.overdue == o))
            .take(MAX_DISPUTES_LISTED)
            .map(|(id, d)| view(s, id, d, p))
            .collect(),
    }))
}

/// A dispute, named (the agent doors' argument).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisputeParams {
    /// Dispute id.
    pub dispute: String,
}

/// A comment on a dispute, naming it (the agent doors' form of [`CommentBody`]).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentParams {
    /// Dispute id.
    pub dispute: String,
    /// The comment (1..=256 bytes).
    pub text: String,
}

/// A withdrawal, naming its dispute (the agent doors' form of [`WithdrawBody`]).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawParams {
    /// Dispute id.
    pub dispute: String,
    /// Why (may be empty).
    #[serde(default)]
    pub reason: String,
}

/// A resolution, naming its dispute (the agent doors' form of [`ResolutionBody`]).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveParams {
    /// Dispute id.
    pub dispute: String,
    /// The decision, as `POST /v1/disputes/{id}/resolution` takes it.
    pub resolution: ResolutionBody,
}

impl CommentParams {
    /// The comment's fact and its natural id (the dispute and a digest of the text: the
    /// same comment again is a retry).
    pub fn fact(self, app: &App, p: &Principal) -> Result<(String, Fact), Error> {
        use sha2::Digest;
        let id = format!("{}/{}", self.dispute, &hex::encode(sha2::Sha256::digest(self.text.as_bytes()))[..16]);
        Ok((id, CommentBody { text: self.text }.fact(app, p, self.dispute)?))
    }
}

//! The operations every front door shares: the HTTP API (`server`), the MCP tools
//! (`mcp`) and A2A `SendMessage` (`a2a`). Each takes an authenticated [`Principal`],
//! checks the same scopes, and answers with JSON or an RFC 9457 [`Problem`], so the three
//! doors cannot drift apart.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use settle_engine::model::{AgentScope, Allocation, Event, FxRate, ProgramSpec, RefundSize};
use settle_engine::{Envelope, Rejection};
use settle_mandates::money::{Amount, Currency, Sign};
use settle_mandates::receipt::{ReceiptDocument, verify_receipt};
use settle_mandates::types::{ReceiptKind, Signed};

use crate::catalogue::{self, Denied, Op, Target};
use crate::keystore::{KeyFile, PrincipalKind, Scope, StoredToken};
use crate::service::{Outcome, Service, Submit, SubmitError};

/// Most mandates in one list page.
pub const MAX_PAGE: usize = 1000;

/// What every front door holds: the service, the keys and the public base URL.
#[derive(Clone)]
pub struct App {
    /// The sequencer and the ledger.
    pub svc: Arc<Service>,
    /// Signing keys.
    pub keys: Arc<KeyFile>,
    /// API tokens, live: issued or revoked, they take effect at the next request.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// `http://<listen address>`.
    pub base: String,
    /// The webhook deliverer (`settle serve` only).
    pub hooks: Option<Arc<crate::webhooks::Webhooks>>,
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short, stable title.
    pub title: &'static str,
    /// What went wrong and what to do about it.
    pub detail: String,
}

impl Problem {
    /// A problem.
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, title, detail: detail.into() }
    }

    /// The problem+json body.
    #[must_use]
    pub fn body(&self) -> Value {
        json!({
            "type": format!("https://settle.dev/problems/{}", self.title.to_lowercase().replace(' ', "-")),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.title, self.status.as_u16(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body())).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<SubmitError> for Problem {
    fn from(e: SubmitError) -> Self {
        match &e {
            SubmitError::Rejected(Rejection::NotFound(_)) => {
                Self::new(StatusCode::NOT_FOUND, "Not found", e.to_string())
            }
            SubmitError::Rejected(Rejection::Conflict(_)) => Self::new(StatusCode::CONFLICT, "Conflict", e.to_string()),
            SubmitError::Rejected(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Rejected", e.to_string()),
            SubmitError::KeyConflict(_) => key_reused(e.to_string()),
            SubmitError::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests", e.to_string()),
            SubmitError::Storage(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.to_string()),
        }
    }
}

/// 400.
pub fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
}

/// 422.
pub fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Rejected", detail)
}

/// 409, for an idempotency key reused with another request.
pub fn key_reused(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::CONFLICT, "Idempotency key reused", detail)
}

/// 403.
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "Forbidden", detail)
}

/// 404.
pub fn not_found(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "Not found", detail)
}

/// 500.
pub fn internal(detail: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", detail.to_string())
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail.to_owned())
}

/// Who is calling: a token resolved against the key file and, for a partner's agent,
/// against the grant its partner recorded in the log (checked on every request).
#[derive(Debug, Clone)]
pub struct Principal {
    /// What it is.
    pub kind: PrincipalKind,
    /// Vendor user, partner or agent id.
    pub subject: String,
    /// The partner it acts for (partners and partner agents).
    pub partner: Option<String>,
    /// Scopes in force now.
    pub scopes: Vec<Scope>,
    /// The token's id: idempotency keys are per token.
    pub token_id: String,
}

impl Principal {
    /// Resolves a bearer token.
    pub fn from_token(app: &App, token: &str) -> Result<Self, Problem> {
        let token = token.trim();
        if token.bytes().filter(|b| *b == b'.').count() == 2 {
            return Self::from_agent_jwt(app, token, Utc::now());
        }
        let t: StoredToken = app
            .tokens
            .find(token, Utc::now().timestamp())
            .ok_or_else(|| unauthorized("unknown, expired or revoked token"))?;
        let mut p = Self {
            kind: t.kind,
            subject: t.subject.clone(),
            partner: None,
            scopes: t.scopes.clone(),
            token_id: t.id.clone(),
        };
        match t.kind {
            PrincipalKind::Partner => p.partner = Some(t.subject.clone()),
            PrincipalKind::PartnerAgent => {
                // The agent acts only within what its partner granted, now.
                let a = current_grant(app, &t.subject, Utc::now())?;
                if Some(&a.partner) != t.partner.as_ref() {
                    return Err(unauthorized("this agent's authority is revoked or expired"));
                }
                let granted = agent_scopes(&a.scopes);
                p.scopes.retain(|s| granted.contains(s));
                p.partner = Some(a.partner);
            }
            PrincipalKind::VendorAdmin | PrincipalKind::VendorAgent => {}
        }
        Ok(p)
    }

    /// A partner's agent that signs its own bearer tokens: the token is a compact JWS
    /// of type [`AGENT_JWT_TYP`] over `{"iss": <agent id>, "aud": <log origin>, "iat",
    /// "exp"}` (Unix seconds; at most [`AGENT_JWT_MAX_SECS`] apart, `iat` no later than
    /// [`AGENT_JWT_SKEW_SECS`] ahead of `now`, `now` before `exp`), signed with the key its
    /// partner registered in the log (`public_key` of `agent_authorised`). The agent then
    /// holds exactly the scopes of that grant, while it is current.
    pub fn from_agent_jwt(app: &App, token: &str, now: DateTime<Utc>) -> Result<Self, Problem> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Claims {
            iss: String,
            aud: String,
            iat: i64,
            exp: i64,
        }
        let bad = |why: &str| unauthorized(&format!("agent token: {why}"));
        let parsed = settle_mandates::jws::parse(token, AGENT_JWT_TYP).map_err(|e| bad(&e.to_string()))?;
        let claims: Claims =
            serde_json::from_slice(&parsed.payload).map_err(|_| bad("claims must be exactly iss, aud, iat and exp"))?;
        // One answer for an unknown agent, one with no key, and a key that is not the
        // one registered: nothing about the agent is told before its signature holds.
        let not_valid = || bad("not signed by the key registered for an agent in force");
        let a = app.svc.with_state(|s| s.agents.get(&claims.iss).cloned()).ok_or_else(not_valid)?;
        let jwk = a.public_key.clone().filter(|k| k.valid_at(now.timestamp())).ok_or_else(not_valid)?;
        let ring = settle_mandates::keys::KeyRing::new(&settle_mandates::keys::Jwks { keys: vec![jwk] })
            .map_err(|_| not_valid())?;
        settle_mandates::jws::verify(token, &ring, AGENT_JWT_TYP).map_err(|_| not_valid())?;
        if !a.is_current(now) {
            return Err(unauthorized("this agent's authority is revoked or expired"));
        }
        if claims.aud != app.keys.origin {
            return Err(bad(&format!("aud must be '{}'", app.keys.origin)));
        }
        let t = now.timestamp();
        let life = claims.exp.checked_sub(claims.iat).unwrap_or(i64::MAX);
        if life <= 0 || life > AGENT_JWT_MAX_SECS {
            return Err(bad(&format!("exp must be after iat, by at most {AGENT_JWT_MAX_SECS} s")));
        }
        if claims.iat > t.saturating_add(AGENT_JWT_SKEW_SECS) || t >= claims.exp {
            return Err(bad("expired or not yet valid"));
        }
        Ok(Self {
            kind: PrincipalKind::PartnerAgent,
            subject: claims.iss.clone(),
            partner: Some(a.partner),
            scopes: agent_scopes(&a.scopes),
            token_id: format!("{AGENT_KEY_TOKEN_ID}{}", claims.iss),
        })
    }

    /// Resolves an `Authorization: Bearer <token>` header value.
    pub fn from_authorization(app: &App, header: Option<&HeaderValue>) -> Result<Self, Problem> {
        let h = header.ok_or_else(|| unauthorized("send Authorization: Bearer <token>"))?;
        let token = h
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .ok_or_else(|| unauthorized("Authorization must be 'Bearer <token>'"))?;
        Self::from_token(app, token)
    }

    /// The id of the stored API token this principal presented; `None` for an agent that
    /// signs its own tokens (it holds none).
    #[must_use]
    pub fn stored_token(&self) -> Option<&str> {
        (!self.token_id.starts_with(AGENT_KEY_TOKEN_ID)).then_some(self.token_id.as_str())
    }

    /// The `by` recorded in every event this principal causes.
    #[must_use]
    pub fn by(&self) -> String {
        match self.kind {
            PrincipalKind::VendorAdmin => format!("vendor:{}", self.subject),
            PrincipalKind::VendorAgent => format!("vendor_agent:{}", self.subject),
            PrincipalKind::Partner => format!("partner:{}", self.subject),
            PrincipalKind::PartnerAgent => format!("agent:{}", self.subject),
        }
    }

    /// The vendor or one of its agents.
    #[must_use]
    pub fn is_vendor(&self) -> bool {
        matches!(self.kind, PrincipalKind::VendorAdmin | PrincipalKind::VendorAgent)
    }

    /// The idempotency key of this principal for the caller's `key`.
    pub fn idempotency_key(&self, key: &str) -> Result<String, Problem> {
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("Idempotency-Key must be 1..=200 visible ASCII characters (no spaces)"));
        }
        Ok(format!("{}/{key}", self.token_id))
    }
}

/// Lets `p` call `op` on `targets`, or answers the refusal as a problem: the one
/// authorisation rule ([`catalogue::authorize`]), framed for the doors.
pub fn allow(p: &Principal, op: Op, targets: &[Target<'_>]) -> Result<(), Problem> {
    catalogue::authorize(Some(p), op, targets).map_err(denied)
}

/// The problem of a refusal.
#[must_use]
pub fn denied(d: Denied) -> Problem {
    match d {
        Denied::Unauthenticated(m) => unauthorized(&m),
        Denied::Forbidden(m) => forbidden(m),
        Denied::NotFound(m) => not_found(m),
    }
}

/// The last hop of lead `id`, if it is registered.
#[must_use]
pub fn lead_holder(app: &App, id: &str) -> Option<String> {
    app.svc.with_state(|s| s.leads.get(id).and_then(|l| l.chain.last().map(ToString::to_string)))
}

/// `typ` of a token an agent signs itself ([`Principal::from_agent_jwt`]).
pub const AGENT_JWT_TYP: &str = "settle-agent+jwt";
/// Longest life of a self-signed agent token, seconds.
pub const AGENT_JWT_MAX_SECS: i64 = 300;
/// How far ahead of the server's clock an agent token's `iat` may be, seconds.
pub const AGENT_JWT_SKEW_SECS: i64 = 60;

/// Prefix of the token id (the scope of idempotency keys and webhook subscriptions) of an
/// agent that signs its own tokens.
pub const AGENT_KEY_TOKEN_ID: &str = "agent-key:";

/// The grant of agent `id` if it is current at `now` (authorised, not revoked, inside
/// its validity), else 401.
fn current_grant(app: &App, id: &str, now: DateTime<Utc>) -> Result<settle_engine::state::Agent, Problem> {
    let a = app
        .svc
        .with_state(|s| s.agents.get(id).cloned())
        .ok_or_else(|| unauthorized("this agent is not authorised by any partner"))?;
    if !a.is_current(now) {
        return Err(unauthorized("this agent's authority is revoked or expired"));
    }
    Ok(a)
}

/// The API scopes an agent's grant gives.
pub fn agent_scopes(granted: &[AgentScope]) -> Vec<Scope> {
    granted
        .iter()
        .map(|s| match s {
            AgentScope::Read => Scope::Read,
            AgentScope::LeadsWrite => Scope::LeadsWrite,
            AgentScope::WebhooksWrite => Scope::WebhooksWrite,
        })
        .collect()
}

/// The JSON answer to a write: the outcome, the signed mandates, the events recorded.
#[must_use]
pub fn outcome_json(o: &Outcome, p: &Principal) -> Value {
    serde_json::to_value(OutcomeView::of(o, p)).unwrap_or_else(|e| json!({"error": e.to_string()}))
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
    /// lead that owns a customer it registered again).
    events: std::borrow::Cow<'a, [Envelope]>,
    /// The payment and clawback mandates issued, one per hop.
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
    /// `payment` or `clawback`.
    #[schemars(extend("enum" = ["payment", "clawback"]))]
    direction: &'static str,
    /// The signed mandate (compact JWS).
    mandate: &'a str,
    /// Its id: `md_<seq>_<hop>` (payment) or `cb_<seq>_<hop>` (clawback).
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
                    mandate,
                    mandate_id,
                    offset: None,
                    partner,
                    reverses: None,
                }),
                Event::ClawbackIssued { mandate_id, partner, amount, offset, mandate, reverses } => Some(MandateView {
                    amount,
                    direction: "clawback",
                    mandate,
                    mandate_id,
                    offset: Some(offset),
                    partner,
                    reverses: Some(reverses),
                }),
                _ => None,
            })
            .collect();
        let outcome = o.records.iter().find_map(|e| match &e.event {
            Event::ConversionOutcome { outcome, reason, pool, rule_version, .. } => {
                Some(Summary::Conversion { outcome, pool, reason: reason.as_deref(), rule_version: *rule_version })
            }
            Event::LeadOutcome { outcome, owner, chain, .. } => {
                Some(Summary::Lead { chain, outcome, owner: owner.as_deref().filter(|_| p.is_vendor()) })
            }
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
        Self { events, mandates, outcome, replayed: o.replayed, seq: o.seq }
    }
}

/// Records one fact for `p` under the idempotency key `key` (already scoped to `p`);
/// answers once it is durable.
pub async fn write(
    app: &App,
    p: &Principal,
    key: String,
    event: Event,
    request: Option<Value>,
) -> Result<Outcome, Problem> {
    let sub = Submit { key, by: p.by(), at: Utc::now(), event, request };
    let r = app.svc.try_submit(vec![sub]).await.into_iter().next().ok_or_else(|| internal("no outcome"))?;
    Ok(r?)
}

fn parse_amount(value: &str, currency: &str, sign: Sign) -> Result<Amount, Problem> {
    let c: Currency = currency.parse().map_err(|e: settle_mandates::money::MoneyError| unprocessable(e.to_string()))?;
    Amount::parse(value, c, sign).map_err(|e| unprocessable(e.to_string()))
}

/// A lead registration.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeadBody {
    /// Lead id, unique per vendor (e.g. `lead-7`).
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub lead: String,
    /// Program id the lead is registered in.
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub program: String,
    /// The customer (e.g. the customer's domain); the first valid registration of a
    /// customer in the attribution window owns it. Its key (the name normalised) must be
    /// 1..=128 bytes.
    #[schemars(length(min = 1))]
    pub customer: String,
    /// The registering partner (a partner may register only in its own name).
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub partner: String,
}

impl LeadBody {
    /// The event, if `p` may register it.
    pub fn event(self, p: &Principal) -> Result<Event, Problem> {
        allow(p, Op::RegisterLead, &[Target::NameOf(&self.partner)])?;
        // Keyed by the normalisation in force, named in the fact (absent: v1, older logs).
        Ok(Event::LeadRegistered {
            lead: self.lead,
            program: self.program,
            customer: self.customer,
            customer_key: Some(settle_engine::model::CustomerKey::CURRENT),
            partner: self.partner,
        })
    }
}

/// A hand-off of a lead to the next partner in its referral chain.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffBody {
    /// The partner holding the lead now (its last hop).
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub from: String,
    /// The partner it is handed to.
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub to: String,
}

impl HandoffBody {
    /// The event, if `p` may hand `lead` off: a partner hands off only a lead it holds
    /// (another's is not found), in its own name.
    pub fn event(self, app: &App, p: &Principal, lead: String) -> Result<Event, Problem> {
        let holder = lead_holder(app, &lead);
        allow(
            p,
            Op::HandOffLead,
            &[Target::Lead { id: &lead, holder: holder.as_deref() }, Target::NameOf(&self.from)],
        )?;
        Ok(Event::LeadHandedOff { lead, from: self.from, to: self.to })
    }
}

/// An FX rate applied to a conversion in another currency.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FxBody {
    /// Decimal rate: one unit of the deal's currency in the program's currency.
    #[schemars(regex(pattern = crate::openapi::POSITIVE_DECIMAL_PATTERN))]
    pub rate: String,
    /// Where the rate comes from (recorded for audit).
    pub source: String,
}

/// A won deal, as sent over the API: amounts as decimal strings.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionBody {
    /// Conversion (deal) id, unique per vendor (e.g. `deal-42`).
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub conversion: String,
    /// The lead the deal was won on.
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub lead: String,
    /// Revenue as a decimal string in major units (e.g. `"12345.67"`); never a float.
    /// More decimals than the currency has are refused.
    #[schemars(regex(pattern = crate::openapi::POSITIVE_DECIMAL_PATTERN))]
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

/// The rules as settle records them now: with the current arithmetic
/// ([`Allocation::CURRENT`]) when the request leaves it out; a request naming
/// `largest_remainder.v1`, kept only to replay older logs, is refused.
pub fn current_rules(mut spec: ProgramSpec) -> Result<ProgramSpec, Problem> {
    match spec.allocation {
        Some(Allocation::V1) => Err(unprocessable(
            "allocation largest_remainder.v1 is kept only to replay older logs; publish with largest_remainder.v2",
        )),
        _ => {
            spec.allocation = Some(Allocation::CURRENT);
            Ok(spec)
        }
    }
}

impl ConversionBody {
    /// The event (vendor only); a deal without `occurred_at` occurred at `now`, which
    /// must not be later than the time the event is recorded at.
    pub fn event(self, p: &Principal, now: DateTime<Utc>) -> Result<Event, Problem> {
        allow(p, Op::RecordConversion, &[])?;
        // What the document states of a conversion is checked here, before the engine:
        // an item of a batch that breaks it refuses the whole batch.
        for (what, id) in [("conversion", &self.conversion), ("lead", &self.lead)] {
            settle_engine::state::check_id(what, id).map_err(|e| unprocessable(e.to_string()))?;
        }
        if self.subscription_month == Some(0) {
            return Err(unprocessable("subscription_month counts from 1 (the first month)"));
        }
        let revenue = parse_amount(&self.revenue, &self.currency, Sign::Positive)?;
        let fx = self
            .fx
            .map(|f| -> Result<FxRate, Problem> {
                let rate = settle_mandates::money::parse_decimal(&f.rate)
                    .ok()
                    .filter(|r| r.is_sign_positive() && !r.is_zero())
                    .ok_or_else(|| {
                        unprocessable(format!("fx rate '{}' is not a positive decimal such as \"1.0842\"", f.rate))
                    })?;
                Ok(FxRate { rate, source: f.source })
            })
            .transpose()?;
        Ok(Event::ConversionRecorded {
            conversion: self.conversion,
            lead: self.lead,
            revenue,
            occurred_at: self.occurred_at.unwrap_or(now),
            subscription_month: self.subscription_month,
            fx,
        })
    }
}

/// A full or partial refund of a conversion.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Refund id, unique per vendor.
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub refund: String,
    /// The refunded conversion.
    #[schemars(regex(pattern = settle_engine::model::ID_PATTERN))]
    pub conversion: String,
    /// Refunded revenue as a decimal string (with `currency`), for a partial refund.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::POSITIVE_DECIMAL_PATTERN))]
    pub amount: Option<String>,
    /// ISO 4217 code of `amount`.
    #[serde(default)]
    #[schemars(with = "Option<Currency>")]
    pub currency: Option<String>,
    /// A fraction of the conversion's revenue as a decimal string, `0 < f ≤ 1` (e.g.
    /// `"0.25"`), instead of an amount.
    #[serde(default)]
    #[schemars(regex(pattern = crate::openapi::FRACTION_PATTERN))]
    pub fraction: Option<String>,
    /// `true` for a full refund (then no amount).
    #[serde(default)]
    pub full: bool,
}

impl RefundBody {
    /// The event (vendor only).
    pub fn event(self, p: &Principal) -> Result<Event, Problem> {
        allow(p, Op::RecordRefund, &[])?;
        let size = match (self.full, self.amount, self.currency, self.fraction) {
            (true, None, None, None) => RefundSize::Full,
            (false, Some(a), Some(c), None) => RefundSize::Amount(parse_amount(&a, &c, Sign::Positive)?),
            (false, None, None, Some(f)) => RefundSize::Fraction(
                settle_mandates::money::parse_decimal(&f)
                    .map_err(|_| unprocessable(format!("fraction '{f}' is not a decimal number such as \"0.25\"")))?,
            ),
            _ => {
                return Err(unprocessable("give one of: \"full\": true; \"amount\" and \"currency\"; or \"fraction\""));
            }
        };
        Ok(Event::RefundRecorded { refund: self.refund, conversion: self.conversion, size })
    }
}

/// A program as `GET /v1/programs/{id}` (and the `describe_program` tool) answers it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Program")]
pub struct ProgramView {
    /// The id of the program's current open mandate (its standing authorisation).
    pub open_mandate: String,
    /// Program id.
    pub program: String,
    /// Its rule versions, oldest first.
    pub versions: Vec<RuleVersionView>,
}

/// One rule version of a program.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "RuleVersion")]
pub struct RuleVersionView {
    /// Applies to conversions occurring from here on.
    pub effective_from: DateTime<Utc>,
    /// The rules in plain language, one sentence a line.
    pub explanation: Vec<String>,
    /// The rules as published.
    pub spec: ProgramSpec,
    /// 1, 2, ...
    pub version: u32,
}

/// A program's rule versions, with a plain-language account of each.
pub fn program_view(app: &App, p: &Principal, id: &str) -> Result<ProgramView, Problem> {
    let own = app
        .svc
        .with_state(|s| p.partner.as_deref().and_then(|me| s.partners.get(me)).is_some_and(|pt| pt.program == id));
    allow(p, Op::DescribeProgram, &[Target::Program { id, own }])?;
    app.svc
        .with_state(|s| {
            s.programs.get(id).map(|pr| ProgramView {
                open_mandate: pr.open_mandate.clone(),
                program: id.to_owned(),
                versions: pr
                    .versions
                    .iter()
                    .map(|v| RuleVersionView {
                        effective_from: v.effective_from,
                        explanation: v.spec.explain(),
                        spec: v.spec.clone(),
                        version: v.version,
                    })
                    .collect(),
            })
        })
        .ok_or_else(|| not_found(format!("program '{id}' not found")))
}

/// [`program_view`] as JSON.
pub fn program(app: &App, p: &Principal, id: &str) -> Result<Value, Problem> {
    program_view(app, p, id).and_then(|v| serde_json::to_value(v).map_err(internal))
}

/// A partner's balance in its program's currency, as decimal strings.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Balance")]
pub struct BalanceView {
    /// Clawed back, in total.
    #[schemars(regex(pattern = crate::openapi::SIGNED_DECIMAL_PATTERN))]
    pub clawed_back: String,
    /// The program's currency.
    pub currency: Currency,
    /// Earned (mandates issued), in total.
    #[schemars(regex(pattern = crate::openapi::SIGNED_DECIMAL_PATTERN))]
    pub earned: String,
    /// In open payout batches: sent to a rail, not yet confirmed.
    #[schemars(regex(pattern = crate::openapi::SIGNED_DECIMAL_PATTERN))]
    pub in_payout: String,
    /// In the holding period (the refund window).
    #[schemars(regex(pattern = crate::openapi::SIGNED_DECIMAL_PATTERN))]
    pub on_hold: String,
    /// Paid on rails, in total.
    #[schemars(regex(pattern = crate::openapi::SIGNED_DECIMAL_PATTERN))]
    pub paid: String,
    /// The partner.
    pub partner: String,
    /// Payable now (negative: an offset owed from clawbacks of money already paid).
    #[schemars(regex(pattern = crate::openapi::SIGNED_DECIMAL_PATTERN))]
    pub payable: String,
    /// Its program.
    pub program: String,
}

/// A partner's balance: earned, on hold, payable, in payout, paid and clawed back.
pub fn balance_view(app: &App, p: &Principal, id: &str) -> Result<BalanceView, Problem> {
    allow(p, Op::GetBalance, &[Target::DataOf(id)])?;
    app.svc
        .with_state(|s| {
            s.partners.get(id).map(|pt| {
                let b = s.books.get(id).copied().unwrap_or_default();
                let cur = s
                    .programs
                    .get(&pt.program)
                    .map(|pr| pr.latest().spec.currency)
                    .ok_or_else(|| internal(format!("partner '{id}' is in no program")))?;
                // Every total of a book is bounded (MAX_BOOK_TOTAL): always an amount.
                let a = |m: i64| Amount::from_minor(m, cur).map(|a| a.to_decimal_string()).map_err(internal);
                Ok(BalanceView {
                    clawed_back: a(b.clawed_back)?,
                    currency: cur,
                    earned: a(b.earned)?,
                    in_payout: a(b.in_payout)?,
                    on_hold: a(b.on_hold)?,
                    paid: a(b.paid)?,
                    partner: id.to_owned(),
                    payable: a(b.payable)?,
                    program: pt.program.clone(),
                })
            })
        })
        .ok_or_else(|| not_found(format!("partner '{id}' not found")))?
}

/// [`balance_view`] as JSON.
pub fn balance(app: &App, p: &Principal, id: &str) -> Result<Value, Problem> {
    balance_view(app, p, id).and_then(|v| serde_json::to_value(v).map_err(internal))
}

/// A page of a partner's payment mandates (what [`mandates`] answers).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "MandatePage")]
pub struct MandatePage {
    /// The mandates, in log order; pass the last one's `seq` as `after` for the next page.
    pub mandates: Vec<MandateItem>,
    /// The partner.
    pub partner: String,
}

/// One payment mandate of a partner.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MandateItem {
    /// Its amount.
    pub amount: Amount,
    /// The signed mandate (compact JWS).
    pub mandate: String,
    /// Its id, `md_<seq>_<hop>`.
    pub mandate_id: String,
    /// Log position of its record.
    pub seq: u64,
}

/// A page of a partner's payment mandates, in log order, after record `after`: `limit`
/// of them, 1..=[`MAX_PAGE`] (default 100; another limit is refused, 422).
pub async fn mandates(
    app: &App,
    p: &Principal,
    id: String,
    after: Option<u64>,
    limit: Option<usize>,
) -> Result<Value, Problem> {
    allow(p, Op::ListMandates, &[Target::DataOf(&id)])?;
    if !app.svc.with_state(|s| s.partners.contains_key(&id)) {
        return Err(not_found(format!("partner '{id}' not found")));
    }
    let limit = limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(unprocessable(format!("limit must be 1..={MAX_PAGE}, not {limit}")));
    }
    let svc = app.svc.clone();
    tokio::task::spawn_blocking(move || -> Result<Value, String> {
        // The log positions of this partner's payment mandates, in log order: after the
        // conversion that issued them, or the release of a held one (a hop owed nothing
        // has none).
        let seqs: Vec<u64> = svc.with_state(|s| {
            let from = after.map_or(0, |a| a.saturating_add(1));
            let position = |base: u64, c: &settle_engine::state::Conversion| {
                let i = c.hops.iter().position(|h| h.partner == id)?;
                settle_engine::state::mandate_seq_of(c, base, i)
            };
            let mut v: Vec<u64> = s
                .conversions
                .hops_of(from, &id)
                .filter(|(_, _, _, released)| !released)
                .filter_map(|(cs, _, position, _)| settle_engine::state::mandate_seq(cs, position?))
                .take(limit)
                .collect();
            v.extend(
                s.releases
                    .range(from..)
                    .filter_map(|(r, cs)| s.conversions.get(*cs).and_then(|c| position(*r, &c)))
                    .take(limit),
            );
            v.sort_unstable();
            v.truncate(limit);
            v
        });
        let mut items = Vec::new();
        for seq in seqs {
            let r = svc.ledger().record(seq).map_err(|e| e.to_string())?.ok_or("missing record")?;
            let env = Envelope::from_bytes(&r.event).map_err(|e| e.to_string())?;
            if let Event::MandateIssued { mandate_id, amount, mandate, .. } = env.event {
                items.push(json!({"seq": r.seq, "mandate_id": mandate_id, "amount": amount, "mandate": mandate}));
            }
        }
        Ok(json!({"partner": id, "mandates": items}))
    })
    .await
    .map_err(internal)?
    .map_err(internal)
}

/// The receipt of a partner's mandate (payment `md_` or clawback `cb_`), proved against
/// the latest signed checkpoint.
pub fn receipt(app: &App, p: &Principal, id: &str, mid: &str) -> Result<ReceiptDocument, Problem> {
    allow(p, Op::GetReceipt, &[Target::DataOf(id)])?;
    let nf = || not_found(format!("mandate '{mid}' of partner '{id}' not found"));
    let ledger = app.svc.ledger().clone();
    let (r, mandate, partner) = crate::bundle::mandate_record(&ledger, mid).map_err(internal)?.ok_or_else(nf)?;
    if partner != id {
        return Err(nf());
    }
    let cp = ledger.checkpoint_covering(r.seq).ok().flatten().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "Not yet checkpointed",
            "no signed checkpoint covers this mandate yet; retry in a second",
        )
    })?;
    // Prove against the latest checkpoint.
    let cp = ledger.latest_checkpoint().ok().flatten().unwrap_or(cp);
    let proof = ledger.inclusion_proof(r.seq, cp.checkpoint.size).map_err(internal)?;
    let iat = crate::bundle::receipt_iat(cp.checkpoint.time, app.keys.current_valid_from());
    let payload = crate::bundle::receipt_payload(
        &app.keys.vendor,
        iat,
        &cp,
        ReceiptKind::MandateRecorded,
        r.seq,
        &mandate,
        mid,
        None,
    );
    let key = app.keys.current().map_err(internal)?;
    Ok(ReceiptDocument {
        receipt: payload.sign(&key),
        mandate,
        leaf: B64.encode(&r.event),
        inclusion: proof.iter().map(|h| B64STD.encode(h)).collect(),
        checkpoint: cp.note,
    })
}

/// Verifies a receipt document against the vendor's JWKS, as a partner would offline.
pub fn verify(app: &App, doc: &ReceiptDocument) -> Result<Value, Problem> {
    let ring = app.keys.ring().map_err(internal)?;
    match verify_receipt(doc, &ring, Some(&app.keys.origin)) {
        Ok(v) => Ok(json!({
            "valid": true,
            "mandate_id": v.receipt.payment_id,
            "leaf_index": v.receipt.leaf_index,
            "checkpoint": {"origin": v.checkpoint.origin, "size": v.checkpoint.size, "root": B64STD.encode(v.checkpoint.root)},
        })),
        Err(e) => Ok(json!({"valid": false, "reason": e.to_string()})),
    }
}

/// A signed checkpoint of the log.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Checkpoint")]
pub struct CheckpointView {
    /// The C2SP signed note: origin, size and root hash, signed by the vendor's key.
    pub note: String,
    /// The log's origin line.
    pub origin: String,
    /// The tree's root hash (base64).
    pub root: String,
    /// Records in the tree.
    pub size: u64,
    /// When it was signed (Unix seconds).
    pub time: i64,
}

/// The latest signed checkpoint.
pub fn latest_checkpoint_view(app: &App) -> Result<CheckpointView, Problem> {
    match app.svc.ledger().latest_checkpoint() {
        Ok(Some(c)) => Ok(CheckpointView {
            note: c.note,
            origin: c.checkpoint.origin,
            root: B64STD.encode(c.checkpoint.root),
            size: c.checkpoint.size,
            time: c.checkpoint.time,
        }),
        Ok(None) => Err(not_found("no checkpoint yet")),
        Err(e) => Err(internal(e)),
    }
}

/// [`latest_checkpoint_view`] as JSON.
pub fn latest_checkpoint(app: &App) -> Result<Value, Problem> {
    latest_checkpoint_view(app).and_then(|v| serde_json::to_value(v).map_err(internal))
}

/// An RFC 9162 consistency proof.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "ConsistencyProof")]
pub struct ConsistencyView {
    /// The earlier tree size.
    pub from: u64,
    /// The proof's hashes (base64).
    pub proof: Vec<String>,
    /// The later tree size (a signed checkpoint's).
    pub to: u64,
}

/// An RFC 9162 consistency proof between two signed checkpoint sizes.
pub fn consistency_view(app: &App, from: u64, to: u64) -> Result<ConsistencyView, Problem> {
    let l = app.svc.ledger();
    if l.checkpoint_at(to).ok().flatten().is_none() {
        return Err(not_found(format!("no signed checkpoint of size {to}")));
    }
    let proof = l.consistency_proof(from, to).map_err(|e| unprocessable(e.to_string()))?;
    Ok(ConsistencyView { from, proof: proof.iter().map(|h| B64STD.encode(h)).collect(), to })
}

/// [`consistency_view`] as JSON.
pub fn consistency(app: &App, from: u64, to: u64) -> Result<Value, Problem> {
    consistency_view(app, from, to).and_then(|v| serde_json::to_value(v).map_err(internal))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full ledger queue reaches an HTTP client as 429 problem+json with Retry-After,
    /// so it backs off instead of treating the refusal as a failure of its request.
    #[test]
    fn a_full_queue_is_429_with_retry_after() {
        let r = Problem::from(SubmitError::Busy).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}

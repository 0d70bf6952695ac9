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

use crate::keystore::{KeyFile, PrincipalKind, Scope, StoredToken};
use crate::service::{Outcome, Service, Submit, SubmitError};

/// Most mandates in one list page.
pub const MAX_PAGE: usize = 1000;

/// What every front door holds: the service, the keys and the public base URL.
#[derive(Clone)]
pub struct App {
    /// The sequencer and the ledger.
    pub svc: Arc<Service>,
    /// Signing keys and API tokens.
    pub keys: Arc<KeyFile>,
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
        let t: &StoredToken = app.keys.find_token(token).ok_or_else(|| unauthorized("unknown or revoked token"))?;
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

    /// 403 unless the principal holds `scope` (the vendor admin holds all).
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.kind == PrincipalKind::VendorAdmin || self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "this token lacks the '{}' scope",
                serde_json::to_value(scope).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            )))
        }
    }

    /// 403 unless the vendor (or its agent) holds `scope`.
    pub fn require_vendor(&self, scope: Scope) -> Result<(), Problem> {
        if !self.is_vendor() {
            return Err(forbidden("only the vendor may do this"));
        }
        self.require(scope)
    }

    /// A partner (or its agent) may see only its own data; others get 404.
    pub fn may_see(&self, partner: &str) -> Result<(), Problem> {
        self.require(Scope::Read)?;
        if self.is_vendor() || self.partner.as_deref() == Some(partner) {
            Ok(())
        } else {
            Err(not_found(format!("partner '{partner}' not found")))
        }
    }

    /// The idempotency key of this principal for the caller's `key`.
    pub fn idempotency_key(&self, key: &str) -> Result<String, Problem> {
        if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(bad("Idempotency-Key must be 1..=200 visible ASCII characters"));
        }
        Ok(format!("{}/{key}", self.token_id))
    }
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
fn agent_scopes(granted: &[AgentScope]) -> Vec<Scope> {
    granted
        .iter()
        .map(|s| match s {
            AgentScope::Read => Scope::Read,
            AgentScope::LeadsWrite => Scope::LeadsWrite,
        })
        .collect()
}

/// The JSON answer to a write: the outcome, the signed mandates, the events recorded.
#[must_use]
pub fn outcome_json(o: &Outcome) -> Value {
    serde_json::to_value(OutcomeView::of(o)).unwrap_or_else(|e| json!({"error": e.to_string()}))
}

/// The answer to a write, serialised straight from the outcome (no intermediate
/// `Value`: batches of a thousand conversions answer megabytes of it). Members are in
/// sorted order, as `serde_json::Value` would give them.
#[derive(Serialize)]
pub struct OutcomeView<'a> {
    events: &'a [Envelope],
    mandates: Vec<MandateView<'a>>,
    outcome: Option<Summary<'a>>,
    replayed: bool,
    seq: u64,
}

#[derive(Serialize)]
struct MandateView<'a> {
    amount: &'a Amount,
    direction: &'static str,
    mandate: &'a str,
    mandate_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<&'a Amount>,
    partner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reverses: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Summary<'a> {
    Conversion { outcome: &'a str, pool: &'a Amount, reason: Option<&'a str>, rule_version: Option<u32> },
    Lead { chain: &'a [String], outcome: &'a str, owner: Option<&'a str> },
}

impl<'a> OutcomeView<'a> {
    /// The view of `o`.
    #[must_use]
    pub fn of(o: &'a Outcome) -> Self {
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
                Some(Summary::Lead { chain, outcome, owner: owner.as_deref() })
            }
            _ => None,
        });
        Self { events: &o.records, mandates, outcome, replayed: o.replayed, seq: o.seq }
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
    pub lead: String,
    /// Program id the lead is registered in.
    pub program: String,
    /// The customer (e.g. the customer's domain); the first valid registration of a
    /// customer in the attribution window owns it.
    pub customer: String,
    /// The registering partner (a partner may register only in its own name).
    pub partner: String,
}

impl LeadBody {
    /// The event, if `p` may register it.
    pub fn event(self, p: &Principal) -> Result<Event, Problem> {
        p.require(Scope::LeadsWrite)?;
        if !p.is_vendor() && p.partner.as_deref() != Some(&self.partner) {
            return Err(forbidden("a partner registers leads in its own name only"));
        }
        Ok(Event::LeadRegistered {
            lead: self.lead,
            program: self.program,
            customer: self.customer,
            partner: self.partner,
        })
    }
}

/// A hand-off of a lead to the next partner in its referral chain.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandoffBody {
    /// The partner holding the lead now (its last hop).
    pub from: String,
    /// The partner it is handed to.
    pub to: String,
}

impl HandoffBody {
    /// The event, if `p` may hand `lead` off.
    pub fn event(self, p: &Principal, lead: String) -> Result<Event, Problem> {
        p.require(Scope::LeadsWrite)?;
        if !p.is_vendor() && p.partner.as_deref() != Some(&self.from) {
            return Err(forbidden("a partner hands off only leads it holds"));
        }
        Ok(Event::LeadHandedOff { lead, from: self.from, to: self.to })
    }
}

/// An FX rate applied to a conversion in another currency.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FxBody {
    /// Decimal rate: one unit of the deal's currency in the program's currency.
    pub rate: String,
    /// Where the rate comes from (recorded for audit).
    pub source: String,
}

/// A won deal, as sent over the API: amounts as decimal strings.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversionBody {
    /// Conversion (deal) id, unique per vendor (e.g. `deal-42`).
    pub conversion: String,
    /// The lead the deal was won on.
    pub lead: String,
    /// Revenue as a decimal string in major units (e.g. `"12345.67"`); never a float.
    pub revenue: String,
    /// ISO 4217 code of the revenue (e.g. `USD`).
    pub currency: String,
    /// When the deal was won (RFC 3339); now if absent.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Month of a subscription (1 = first), for programs paying the first N months.
    #[serde(default)]
    pub subscription_month: Option<u32>,
    /// FX rate when the revenue is not in the program's currency.
    #[serde(default)]
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
        p.require_vendor(Scope::ConversionsWrite)?;
        if self.subscription_month == Some(0) {
            return Err(unprocessable("subscription_month counts from 1 (the first month)"));
        }
        let revenue = parse_amount(&self.revenue, &self.currency, Sign::Positive)?;
        let fx = self
            .fx
            .map(|f| -> Result<FxRate, Problem> {
                Ok(FxRate {
                    rate: rust_decimal::Decimal::from_str_exact(&f.rate)
                        .map_err(|_| unprocessable(format!("fx rate '{}' is not a decimal", f.rate)))?,
                    source: f.source,
                })
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
    pub refund: String,
    /// The refunded conversion.
    pub conversion: String,
    /// Refunded revenue as a decimal string (with `currency`), for a partial refund.
    #[serde(default)]
    pub amount: Option<String>,
    /// ISO 4217 code of `amount`.
    #[serde(default)]
    pub currency: Option<String>,
    /// A fraction of the conversion's revenue as a decimal string, `0 < f ≤ 1` (e.g.
    /// `"0.25"`), instead of an amount.
    #[serde(default)]
    pub fraction: Option<String>,
    /// `true` for a full refund (then no amount).
    #[serde(default)]
    pub full: bool,
}

impl RefundBody {
    /// The event (vendor only).
    pub fn event(self, p: &Principal) -> Result<Event, Problem> {
        p.require_vendor(Scope::RefundsWrite)?;
        let size = match (self.full, self.amount, self.currency, self.fraction) {
            (true, None, None, None) => RefundSize::Full,
            (false, Some(a), Some(c), None) => RefundSize::Amount(parse_amount(&a, &c, Sign::Positive)?),
            (false, None, None, Some(f)) => RefundSize::Fraction(
                rust_decimal::Decimal::from_str_exact(&f)
                    .map_err(|_| unprocessable(format!("fraction '{f}' is not a decimal number such as \"0.25\"")))?,
            ),
            _ => {
                return Err(unprocessable("give one of: \"full\": true; \"amount\" and \"currency\"; or \"fraction\""));
            }
        };
        Ok(Event::RefundRecorded { refund: self.refund, conversion: self.conversion, size })
    }
}

/// A program's rule versions, with a plain-language account of each.
pub fn program(app: &App, p: &Principal, id: &str) -> Result<Value, Problem> {
    p.require(Scope::Read)?;
    app.svc
        .with_state(|s| {
            s.programs.get(id).map(|pr| {
                let versions: Vec<Value> = pr
                    .versions
                    .iter()
                    .map(|v| {
                        let mut j = serde_json::to_value(v).unwrap_or(Value::Null);
                        j["explanation"] = json!(v.spec.explain());
                        j
                    })
                    .collect();
                json!({"program": id, "open_mandate": pr.open_mandate, "versions": versions})
            })
        })
        .ok_or_else(|| not_found(format!("program '{id}' not found")))
}

/// A partner's balance: earned, on hold, payable, paid and clawed back.
pub fn balance(app: &App, p: &Principal, id: &str) -> Result<Value, Problem> {
    p.may_see(id)?;
    app.svc
        .with_state(|s| {
            s.partners.get(id).map(|pt| {
                let b = s.books.get(id).copied().unwrap_or_default();
                let cur = s.programs.get(&pt.program).map(|pr| pr.latest().spec.currency);
                let a = |m: i64| cur.and_then(|c| Amount::from_minor(m, c).ok()).map(|a| a.to_decimal_string());
                json!({"partner": id, "program": pt.program, "currency": cur, "earned": a(b.earned), "on_hold": a(b.on_hold), "payable": a(b.payable), "in_payout": a(b.in_payout), "paid": a(b.paid), "clawed_back": a(b.clawed_back)})
            })
        })
        .ok_or_else(|| not_found(format!("partner '{id}' not found")))
}

/// A page of a partner's payment mandates, in log order, after record `after`.
pub async fn mandates(
    app: &App,
    p: &Principal,
    id: String,
    after: Option<u64>,
    limit: Option<usize>,
) -> Result<Value, Problem> {
    p.may_see(&id)?;
    let limit = limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let svc = app.svc.clone();
    tokio::task::spawn_blocking(move || -> Result<Value, String> {
        // Hops of this partner, by the log position of the fact that issued their
        // mandates: the conversion, or the release of a held one.
        let seqs: Vec<(u64, usize)> = svc.with_state(|s| {
            let from = after.map_or(0, |a| a.saturating_add(1));
            let hops = |base: u64, c: &settle_engine::state::Conversion| {
                c.hops.iter().position(|h| h.partner == id).map(|i| (base, i))
            };
            let mut v: Vec<(u64, usize)> = s
                .conversions
                .hops_of(from, &id)
                .filter(|(_, _, released)| !released)
                .map(|(cs, i, _)| (cs, i))
                .take(limit)
                .collect();
            v.extend(
                s.releases
                    .range(from..)
                    .filter_map(|(r, cs)| s.conversions.get(*cs).and_then(|c| hops(*r, &c)))
                    .take(limit),
            );
            v.sort_unstable();
            v.truncate(limit);
            v
        });
        let mut items = Vec::new();
        for (base, i) in seqs {
            let r = svc
                .ledger()
                .record(settle_engine::state::mandate_seq(base, i).ok_or("mandate position out of range")?)
                .map_err(|e| e.to_string())?
                .ok_or("missing record")?;
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
    p.may_see(id)?;
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

/// The latest signed checkpoint.
pub fn latest_checkpoint(app: &App) -> Result<Value, Problem> {
    match app.svc.ledger().latest_checkpoint() {
        Ok(Some(c)) => Ok(
            json!({"origin": c.checkpoint.origin, "size": c.checkpoint.size, "root": B64STD.encode(c.checkpoint.root), "time": c.checkpoint.time, "note": c.note}),
        ),
        Ok(None) => Err(not_found("no checkpoint yet")),
        Err(e) => Err(internal(e)),
    }
}

/// An RFC 9162 consistency proof between two signed checkpoint sizes.
pub fn consistency(app: &App, from: u64, to: u64) -> Result<Value, Problem> {
    let l = app.svc.ledger();
    if l.checkpoint_at(to).ok().flatten().is_none() {
        return Err(not_found(format!("no signed checkpoint of size {to}")));
    }
    let proof = l.consistency_proof(from, to).map_err(|e| unprocessable(e.to_string()))?;
    Ok(json!({"from": from, "to": to, "proof": proof.iter().map(|h| B64STD.encode(h)).collect::<Vec<_>>()}))
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

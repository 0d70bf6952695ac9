//! The HTTP API (axum on tokio), for agents first: JSON under `/v1`, RFC 9457
//! problem+json errors, bearer tokens bound to a principal and scopes, an
//! `Idempotency-Key` on every write, and responses only after the write is durable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use settle_engine::model::{AgentScope, Event, FxRate, PartnerRole, ProgramSpec, RefundSize};
use settle_engine::{Envelope, Rejection};
use settle_mandates::money::{Amount, Currency, Sign};
use settle_mandates::receipt::ReceiptDocument;
use settle_mandates::types::{ReceiptKind, Signed};

use crate::keystore::{KeyFile, PrincipalKind, Scope, StoredToken};
use crate::service::{MAX_BATCH, Service, Submit, SubmitError};

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most mandates in one list page.
pub const MAX_PAGE: usize = 1000;

/// The OpenAPI 3.1 document (kept in `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

#[derive(Clone)]
struct App {
    svc: Arc<Service>,
    keys: Arc<KeyFile>,
    /// `http://<listen address>`.
    base: String,
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, title, detail: detail.into() }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": format!("https://settle.dev/problems/{}", self.title.to_lowercase().replace(' ', "-")),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut r = (self.status, Json(body)).into_response();
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
            SubmitError::KeyConflict(_) => Self::new(StatusCode::CONFLICT, "Idempotency key reused", e.to_string()),
            SubmitError::Busy => Self::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests", e.to_string()),
            SubmitError::Storage(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", e.to_string()),
        }
    }
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "Bad request", detail)
}

fn unprocessable(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Rejected", detail)
}

fn body<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, Problem> {
    r.map(|Json(t)| t).map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        ),
        other => bad(other.body_text()),
    })
}

/// Who is calling.
#[derive(Debug, Clone)]
struct Principal {
    kind: PrincipalKind,
    subject: String,
    partner: Option<String>,
    scopes: Vec<Scope>,
    token_id: String,
}

impl Principal {
    fn by(&self) -> String {
        match self.kind {
            PrincipalKind::VendorAdmin => format!("vendor:{}", self.subject),
            PrincipalKind::VendorAgent => format!("vendor_agent:{}", self.subject),
            PrincipalKind::Partner => format!("partner:{}", self.subject),
            PrincipalKind::PartnerAgent => format!("agent:{}", self.subject),
        }
    }

    fn is_vendor(&self) -> bool {
        matches!(self.kind, PrincipalKind::VendorAdmin | PrincipalKind::VendorAgent)
    }

    fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.kind == PrincipalKind::VendorAdmin || self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(Problem::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "this token lacks the '{}' scope",
                    serde_json::to_value(scope).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
                ),
            ))
        }
    }

    fn require_vendor(&self, scope: Scope) -> Result<(), Problem> {
        if !self.is_vendor() {
            return Err(Problem::new(StatusCode::FORBIDDEN, "Forbidden", "only the vendor may do this"));
        }
        self.require(scope)
    }

    /// A partner (or its agent) may see only its own data; others get 404.
    fn may_see(&self, partner: &str) -> Result<(), Problem> {
        self.require(Scope::Read)?;
        if self.is_vendor() || self.partner.as_deref() == Some(partner) {
            Ok(())
        } else {
            Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("partner '{partner}' not found")))
        }
    }
}

fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, Problem> {
    let unauth = |d: &str| Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", d.to_owned());
    let h = headers.get(header::AUTHORIZATION).ok_or_else(|| unauth("send Authorization: Bearer <token>"))?;
    let token = h
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .ok_or_else(|| unauth("Authorization must be 'Bearer <token>'"))?;
    let t: &StoredToken = app.keys.find_token(token.trim()).ok_or_else(|| unauth("unknown or revoked token"))?;
    let mut p = Principal {
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
            let partner = t.partner.clone().unwrap_or_default();
            let now = Utc::now();
            let grant = app.svc.with_state(|s| {
                s.agents.get(&t.subject).map(|a| {
                    (a.partner.clone(), a.revoked, a.not_before <= now && now < a.expires_at, a.scopes.clone())
                })
            });
            let Some((ap, revoked, current, scopes)) = grant else {
                return Err(unauth("this agent is not authorised by any partner"));
            };
            if ap != partner || revoked || !current {
                return Err(unauth("this agent's authority is revoked or expired"));
            }
            p.scopes.retain(|s| match s {
                Scope::Read => scopes.contains(&AgentScope::Read),
                Scope::LeadsWrite => scopes.contains(&AgentScope::LeadsWrite),
                _ => false,
            });
            p.partner = Some(partner);
        }
        _ => {}
    }
    Ok(p)
}

fn idem_key(p: &Principal, headers: &HeaderMap) -> Result<String, Problem> {
    let k = headers.get("idempotency-key").ok_or_else(|| bad("every write needs an Idempotency-Key header"))?;
    let k = k.to_str().map_err(|_| bad("Idempotency-Key must be visible ASCII"))?;
    if k.is_empty() || k.len() > 200 {
        return Err(bad("Idempotency-Key must be 1..=200 characters"));
    }
    Ok(format!("{}/{k}", p.token_id))
}

fn outcome_json(o: &crate::service::Outcome) -> Value {
    let mandates: Vec<Value> = o
        .records
        .iter()
        .filter_map(|e| match &e.event {
            Event::MandateIssued { mandate_id, partner, amount, mandate } => Some(json!({"mandate_id": mandate_id, "partner": partner, "amount": amount, "direction": "payment", "mandate": mandate})),
            Event::ClawbackIssued { mandate_id, partner, amount, offset, mandate, reverses } => Some(json!({"mandate_id": mandate_id, "partner": partner, "amount": amount, "direction": "clawback", "offset": offset, "reverses": reverses, "mandate": mandate})),
            _ => None,
        })
        .collect();
    let outcome = o.records.iter().find_map(|e| match &e.event {
        Event::ConversionOutcome { outcome, reason, pool, rule_version, .. } => {
            Some(json!({"outcome": outcome, "reason": reason, "pool": pool, "rule_version": rule_version}))
        }
        Event::LeadOutcome { outcome, owner, chain, .. } => {
            Some(json!({"outcome": outcome, "owner": owner, "chain": chain}))
        }
        _ => None,
    });
    json!({"seq": o.seq, "replayed": o.replayed, "outcome": outcome, "mandates": mandates, "events": o.records})
}

async fn write_one(
    app: &App,
    p: &Principal,
    headers: &HeaderMap,
    event: Event,
    request: Option<Value>,
) -> Result<Response, Problem> {
    let key = idem_key(p, headers)?;
    let sub = Submit { key, by: p.by(), at: Utc::now(), event, request };
    let r = app
        .svc
        .try_submit(vec![sub])
        .await
        .into_iter()
        .next()
        .ok_or_else(|| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "no outcome"))?;
    let o = r?;
    let status = if o.replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(outcome_json(&o))).into_response())
}

fn parse_amount(value: &str, currency: &str, sign: Sign) -> Result<Amount, Problem> {
    let c: Currency = currency.parse().map_err(|e: settle_mandates::money::MoneyError| unprocessable(e.to_string()))?;
    Amount::parse(value, c, sign).map_err(|e| unprocessable(e.to_string()))
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct AmendBody {
    spec: ProgramSpec,
    effective_from: DateTime<Utc>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PartnerBody {
    partner: String,
    program: String,
    name: String,
    role: PartnerRole,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    agent: String,
    partner: String,
    scopes: Vec<AgentScope>,
    not_before: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct LeadBody {
    lead: String,
    program: String,
    customer: String,
    partner: String,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct HandoffBody {
    from: String,
    to: String,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct FxBody {
    rate: String,
    source: String,
}

/// A conversion as sent over the API: amounts as decimal strings.
#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionBody {
    conversion: String,
    lead: String,
    revenue: String,
    currency: String,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    subscription_month: Option<u32>,
    #[serde(default)]
    fx: Option<FxBody>,
}

impl ConversionBody {
    fn event(self) -> Result<Event, Problem> {
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
            occurred_at: self.occurred_at.unwrap_or_else(Utc::now),
            subscription_month: self.subscription_month,
            fx,
        })
    }
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    items: Vec<ConversionBody>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RefundBody {
    refund: String,
    conversion: String,
    #[serde(default)]
    amount: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    full: bool,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SettlementBody {
    settlement: String,
    partner: String,
    rail: String,
    mandate_ids: Vec<String>,
    #[serde(default)]
    confirmation_id: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

async fn publish(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<ProgramSpec>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::ProgramsWrite)?;
    write_one(&app, &p, &h, Event::ProgramPublished { spec: body(b)? }, None).await
}

async fn amend(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Json<AmendBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::ProgramsWrite)?;
    let b = body(b)?;
    if b.spec.program != id {
        return Err(unprocessable("spec.program must match the program in the path"));
    }
    write_one(&app, &p, &h, Event::ProgramAmended { spec: b.spec, effective_from: b.effective_from }, None).await
}

async fn program(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require(Scope::Read)?;
    let v = app.svc.with_state(|s| {
        s.programs.get(&id).map(|pr| json!({"program": id, "open_mandate": pr.open_mandate, "versions": pr.versions}))
    });
    v.map(|v| Json(v).into_response())
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "Not found", format!("program '{id}' not found")))
}

async fn enroll(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<PartnerBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::ProgramsWrite)?;
    let b = body(b)?;
    write_one(
        &app,
        &p,
        &h,
        Event::PartnerEnrolled { partner: b.partner, program: b.program, name: b.name, role: b.role },
        None,
    )
    .await
}

async fn suspend(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Json<ReasonBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::ProgramsWrite)?;
    write_one(&app, &p, &h, Event::PartnerSuspended { partner: id, reason: body(b)?.reason }, None).await
}

async fn authorise(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<AgentBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let b = body(b)?;
    // The vendor, or the partner itself, may authorise an agent for that partner.
    let vendor = p.is_vendor() && p.require(Scope::ProgramsWrite).is_ok();
    let own_partner = p.kind == PrincipalKind::Partner && p.partner.as_deref() == Some(&b.partner);
    if !vendor && !own_partner {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "only the vendor or the partner itself may authorise its agents",
        ));
    }
    write_one(
        &app,
        &p,
        &h,
        Event::AgentAuthorised {
            agent: b.agent,
            partner: b.partner,
            scopes: b.scopes,
            not_before: b.not_before,
            expires_at: b.expires_at,
        },
        None,
    )
    .await
}

async fn revoke(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let owner = app.svc.with_state(|s| s.agents.get(&id).map(|a| a.partner.clone()));
    let allowed = (p.is_vendor() && p.require(Scope::ProgramsWrite).is_ok())
        || (p.kind == PrincipalKind::Partner && owner.is_some() && p.partner == owner);
    if !allowed {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "only the vendor or the agent's partner may revoke it",
        ));
    }
    write_one(&app, &p, &h, Event::AgentRevoked { agent: id }, None).await
}

async fn register(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<LeadBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require(Scope::LeadsWrite)?;
    let b = body(b)?;
    if !p.is_vendor() && p.partner.as_deref() != Some(&b.partner) {
        return Err(Problem::new(StatusCode::FORBIDDEN, "Forbidden", "a partner registers leads in its own name only"));
    }
    write_one(
        &app,
        &p,
        &h,
        Event::LeadRegistered { lead: b.lead, program: b.program, customer: b.customer, partner: b.partner },
        None,
    )
    .await
}

async fn handoff(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Json<HandoffBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require(Scope::LeadsWrite)?;
    let b = body(b)?;
    if !p.is_vendor() && p.partner.as_deref() != Some(&b.from) {
        return Err(Problem::new(StatusCode::FORBIDDEN, "Forbidden", "a partner hands off only leads it holds"));
    }
    write_one(&app, &p, &h, Event::LeadHandedOff { lead: id, from: b.from, to: b.to }, None).await
}

async fn convert(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<ConversionBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::ConversionsWrite)?;
    let b = body(b)?;
    let request = serde_json::to_value(&b).ok();
    let e = b.event()?;
    write_one(&app, &p, &h, e, request).await
}

async fn convert_batch(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<BatchBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::ConversionsWrite)?;
    let key = idem_key(&p, &h)?;
    let items = body(b)?.items;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(unprocessable(format!("a batch holds 1..={MAX_BATCH} conversions")));
    }
    let now = Utc::now();
    let mut subs = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let request = serde_json::to_value(&it).ok();
        let e = it.event().map_err(|mut pr| {
            pr.detail = format!("item {i}: {}", pr.detail);
            pr
        })?;
        subs.push(Submit { key: format!("{key}#{i}"), by: p.by(), at: now, event: e, request });
    }
    let results = app.svc.try_submit(subs).await;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        out.push(match r {
            Ok(o) => outcome_json(&o),
            Err(SubmitError::Busy) => return Err(SubmitError::Busy.into()),
            Err(e) => {
                let pr: Problem = e.into();
                json!({"status": pr.status.as_u16(), "title": pr.title, "detail": pr.detail})
            }
        });
    }
    Ok(Json(json!({"results": out})).into_response())
}

async fn refund(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<RefundBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::RefundsWrite)?;
    let b = body(b)?;
    let size = match (b.full, b.amount, b.currency) {
        (true, None, None) => RefundSize::Full,
        (false, Some(a), Some(c)) => RefundSize::Amount(parse_amount(&a, &c, Sign::Positive)?),
        _ => return Err(unprocessable("give either \"full\": true, or \"amount\" and \"currency\"")),
    };
    write_one(&app, &p, &h, Event::RefundRecorded { refund: b.refund, conversion: b.conversion, size }, None).await
}

async fn settlement(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<SettlementBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::SettlementsWrite)?;
    let b = body(b)?;
    let e = match (b.confirmation_id, b.error) {
        (Some(c), None) => Event::SettlementConfirmed {
            settlement: b.settlement,
            partner: b.partner,
            rail: b.rail,
            confirmation_id: c,
            mandate_ids: b.mandate_ids,
        },
        (None, Some(err)) => Event::SettlementFailed {
            settlement: b.settlement,
            partner: b.partner,
            rail: b.rail,
            error: err,
            mandate_ids: b.mandate_ids,
        },
        _ => return Err(unprocessable("give either confirmation_id (paid) or error (failed)")),
    };
    write_one(&app, &p, &h, e, None).await
}

async fn advance(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<AdvanceBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::SettlementsWrite)?;
    let b = body(b)?;
    let request = serde_json::to_value(&b).ok();
    let to = b.to.unwrap_or_else(Utc::now);
    write_one(&app, &p, &h, Event::HoldsAdvanced { to }, request).await
}

async fn balance(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.may_see(&id)?;
    let v = app.svc.with_state(|s| {
        s.partners.get(&id).map(|pt| {
            let b = s.books.get(&id).copied().unwrap_or_default();
            let cur = s.programs.get(&pt.program).map(|pr| pr.latest().spec.currency);
            let a = |m: i64| cur.and_then(|c| Amount::from_minor(m, c).ok()).map(|a| a.to_decimal_string());
            json!({"partner": id, "program": pt.program, "currency": cur, "earned": a(b.earned), "on_hold": a(b.on_hold), "payable": a(b.payable), "paid": a(b.paid), "clawed_back": a(b.clawed_back)})
        })
    });
    v.map(|v| Json(v).into_response())
        .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "Not found", format!("partner '{id}' not found")))
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn mandates(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<Page>,
    h: HeaderMap,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.may_see(&id)?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let svc = app.svc.clone();
    let v = tokio::task::spawn_blocking(move || -> Result<Value, String> {
        // Hops of this partner, from the engine's index, in log order.
        let seqs: Vec<(u64, usize)> = svc.with_state(|s| {
            s.conversions
                .range(q.after.map_or(0, |a| a.saturating_add(1))..)
                .flat_map(|(cs, c)| {
                    c.hops.iter().enumerate().filter(|(_, h)| h.partner == id).map(move |(i, _)| (*cs, i))
                })
                .take(limit)
                .collect()
        });
        let mut items = Vec::new();
        for (cs, i) in seqs {
            let r = svc
                .ledger()
                .record(settle_engine::state::mandate_seq(cs, i).ok_or("mandate position out of range")?)
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
    .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?
    .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e))?;
    Ok(Json(v).into_response())
}

async fn receipt(
    State(app): State<App>,
    UrlPath((id, mid)): UrlPath<(String, String)>,
    h: HeaderMap,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.may_see(&id)?;
    let nf =
        || Problem::new(StatusCode::NOT_FOUND, "Not found", format!("mandate '{mid}' of partner '{id}' not found"));
    let ledger = app.svc.ledger().clone();
    // Payment (md_) and clawback (cb_) mandates alike.
    let (r, mandate, partner) = crate::bundle::mandate_record(&ledger, &mid)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?
        .ok_or_else(nf)?;
    if partner != id {
        return Err(nf());
    }
    let mandate_id = mid.clone();
    let cp = ledger.checkpoint_covering(r.seq).ok().flatten().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "Not yet checkpointed",
            "no signed checkpoint covers this mandate yet; retry in a second",
        )
    })?;
    // Prove against the latest checkpoint.
    let cp = ledger.latest_checkpoint().ok().flatten().unwrap_or(cp);
    let proof = ledger
        .inclusion_proof(r.seq, cp.checkpoint.size)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?;
    let iat = crate::bundle::receipt_iat(cp.checkpoint.time, app.keys.current_valid_from());
    let payload = crate::bundle::receipt_payload(
        &app.keys.vendor,
        iat,
        &cp,
        ReceiptKind::MandateRecorded,
        r.seq,
        &mandate,
        &mandate_id,
        None,
    );
    let key = app
        .keys
        .current()
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?;
    let doc = ReceiptDocument {
        receipt: payload.sign(&key),
        mandate,
        leaf: B64.encode(&r.event),
        inclusion: proof.iter().map(|h| B64STD.encode(h)).collect(),
        checkpoint: cp.note,
    };
    Ok(Json(doc).into_response())
}

async fn jwks(State(app): State<App>) -> Result<Response, Problem> {
    let j = app
        .keys
        .jwks()
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?;
    Ok(Json(j).into_response())
}

async fn latest(State(app): State<App>) -> Result<Response, Problem> {
    match app.svc.ledger().latest_checkpoint() {
        Ok(Some(c)) => Ok(Json(json!({"origin": c.checkpoint.origin, "size": c.checkpoint.size, "root": B64STD.encode(c.checkpoint.root), "time": c.checkpoint.time, "note": c.note})).into_response()),
        Ok(None) => Err(Problem::new(StatusCode::NOT_FOUND, "Not found", "no checkpoint yet")),
        Err(e) => Err(Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string())),
    }
}

#[derive(Deserialize)]
struct Consistency {
    from: u64,
    to: u64,
}

async fn consistency(State(app): State<App>, Query(q): Query<Consistency>) -> Result<Response, Problem> {
    let l = app.svc.ledger();
    if l.checkpoint_at(q.to).ok().flatten().is_none() {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no signed checkpoint of size {}", q.to)));
    }
    let proof = l.consistency_proof(q.from, q.to).map_err(|e| unprocessable(e.to_string()))?;
    Ok(Json(json!({"from": q.from, "to": q.to, "proof": proof.iter().map(|h| B64STD.encode(h)).collect::<Vec<_>>()}))
        .into_response())
}

/// JWS `typ` of the signed agent card.
pub const TYP_AGENT_CARD: &str = "settle-agent-card+jws";

/// The A2A v1.0 agent card: what settle does for agents, where, and how to authenticate.
/// `signatures` holds a JWS (flattened: protected header and signature, detached
/// payload) over the RFC 8785 form of the card without `signatures`, by the vendor key.
fn card(app: &App, base: &str) -> Result<Value, Problem> {
    let skill = |id: &str, name: &str, description: &str, tags: &[&str], examples: &[&str]| json!({"id": id, "name": name, "description": description, "tags": tags, "examples": examples});
    let mut card = json!({
        "name": format!("settle ({})", app.keys.vendor),
        "description": "Commission settlement for the vendor's partner program: register leads, record won deals and refunds, and receive one Ed25519-signed AP2-style payment mandate per hop of the referral chain, with receipts and Merkle proofs verifiable offline against the vendor's JWKS.",
        "supportedInterfaces": [{"url": format!("{base}/v1"), "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"}],
        "version": env!("CARGO_PKG_VERSION"),
        "provider": {"organization": app.keys.vendor, "url": base},
        "documentationUrl": format!("{base}/openapi.json"),
        "capabilities": {"streaming": false, "pushNotifications": false},
        "defaultInputModes": ["application/json"],
        "defaultOutputModes": ["application/json"],
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer", "description": "API token from `settle keys token`, bound to a principal and scopes"}}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
        "skills": [
            skill("register-lead", "Register a lead", "Register a customer for a partner; the first valid registration in the attribution window owns it (POST /v1/leads).", &["leads", "attribution"], &["Register acme.example for partner p01 in program growth"]),
            skill("hand-off-lead", "Hand off a lead", "Add a hop to a lead's referral chain (POST /v1/leads/{id}/handoffs).", &["leads", "referral chain"], &["Hand lead-7 from p01 to p02"]),
            skill("record-conversion", "Record a won deal", "Record a conversion and get the signed payment mandate of every hop, after it is durable (POST /v1/conversions).", &["settlement", "mandates", "AP2"], &["Deal deal-42 on lead-7 won 12345.67 USD"]),
            skill("record-refund", "Record a refund", "Record a full or partial refund; every hop's commission is clawed back proportionally (POST /v1/refunds).", &["refunds", "clawbacks"], &["Refund 2000.00 USD of deal-42"]),
            skill("partner-balance", "Partner balance", "Earned, on hold, payable, paid and clawed back for one partner (GET /v1/partners/{id}/balance).", &["balances"], &["What is p01 owed?"]),
            skill("receipt-with-proof", "Receipt with proof", "A mandate's receipt with its RFC 9162 inclusion proof and signed checkpoint (GET /v1/partners/{id}/receipts/{mandate}).", &["receipts", "verification", "merkle"], &["Receipt of md_120_1 for p02"]),
            skill("log-consistency", "Checkpoint consistency", "The latest signed checkpoint and a consistency proof between two sizes (GET /v1/checkpoints/...).", &["transparency", "audit"], &["Prove the log only grew from size 1000 to 2000"])
        ]
    });
    let key = app
        .keys
        .current()
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?;
    let payload = settle_mandates::jcs::to_vec(&card)
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", e.to_string()))?;
    let token = settle_mandates::jws::sign(TYP_AGENT_CARD, &payload, &key);
    let mut parts = token.split('.');
    let (protected, _, signature) = (parts.next().unwrap_or_default(), parts.next(), parts.next().unwrap_or_default());
    card["signatures"] = json!([{"protected": protected, "signature": signature}]);
    Ok(card)
}

/// The card names the address settle was started on, never the request's Host header
/// (a signed card must not echo what a caller sends).
async fn agent_card(State(app): State<App>) -> Result<Response, Problem> {
    let base = app.base.clone();
    Ok(Json(card(&app, &base)?).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "Not found", "no such endpoint; see /openapi.json")
}

fn router(app: App) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/agent-card.json", get(agent_card))
        .route("/v1/checkpoints/latest", get(latest))
        .route("/v1/checkpoints/consistency", get(consistency))
        .route("/v1/programs", post(publish))
        .route("/v1/programs/{id}", get(program))
        .route("/v1/programs/{id}/amendments", post(amend))
        .route("/v1/partners", post(enroll))
        .route("/v1/partners/{id}/suspend", post(suspend))
        .route("/v1/partners/{id}/balance", get(balance))
        .route("/v1/partners/{id}/mandates", get(mandates))
        .route("/v1/partners/{id}/receipts/{mandate}", get(receipt))
        .route("/v1/agents", post(authorise))
        .route("/v1/agents/{id}/revoke", post(revoke))
        .route("/v1/leads", post(register))
        .route("/v1/leads/{id}/handoffs", post(handoff))
        .route("/v1/conversions", post(convert))
        .route("/v1/conversions/batch", post(convert_batch))
        .route("/v1/refunds", post(refund))
        .route("/v1/settlements", post(settlement))
        .route("/v1/holds/advance", post(advance))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .with_state(app)
}

/// Serves the API on `listen` until SIGTERM/SIGINT; then drains, checkpoints, saves.
pub fn serve(data: &Path, listen: std::net::SocketAddr) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let keys = Arc::new(KeyFile::load(data)?);
    let svc = Service::open(data)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let svc2 = svc.clone();
    rt.block_on(async move {
        let svc = svc2;
        let app = App { svc: svc.clone(), keys, base: format!("http://{listen}") };
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!("settle serving {} on http://{listen}", data.display());
        // Checkpoints at least every second while the log grows; holds released as due.
        let bg = svc.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                n += 1;
                let l = bg.ledger().clone();
                let size = l.size();
                let covered = l.latest_checkpoint().ok().flatten().map_or(0, |c| c.checkpoint.size);
                if size > covered
                    && let Err(e) = l.checkpoint(Utc::now().timestamp()).await
                {
                    tracing::error!("checkpoint failed: {e}");
                }
                if n.is_multiple_of(60) {
                    let now = Utc::now();
                    let due = bg.with_state(|s| s.holds.keys().next().is_some_and(|t| *t <= now.timestamp()));
                    if due {
                        let sub = Submit {
                            request: None,
                            key: format!("clock/advance/{}", now.timestamp()),
                            by: "engine:clock".into(),
                            at: now,
                            event: Event::HoldsAdvanced { to: now },
                        };
                        let _ = bg.submit(vec![sub]).await;
                    }
                }
            }
        });
        axum::serve(listener, router(app)).with_graceful_shutdown(shutdown()).await?;
        ticker.abort();
        Ok::<(), anyhow::Error>(())
    })?;
    drop(rt);
    // Drained: a final checkpoint and the engine state, then close.
    let _ = svc.checkpoint(Utc::now().timestamp());
    svc.save_state()?;
    svc.close()?;
    Ok(())
}

async fn shutdown() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining requests");
}

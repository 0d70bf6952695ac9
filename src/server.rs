//! The HTTP API (axum on tokio), for agents first: JSON under `/v1`, RFC 9457
//! problem+json errors, bearer tokens bound to a principal and scopes, an
//! `Idempotency-Key` on every write, and responses only after the write is durable.
//!
//! What a request may hold is what the OpenAPI document (`crate::openapi`, built from
//! the types below) states: a request it forbids is answered 400 (or 413, 414, 415), one
//! it allows but the rules refuse 422.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use settle_engine::model::{
    AgentScope, Event, ID_PATTERN, MAX_SETTLEMENT_MANDATES, MAX_TEXT_BYTES, PartnerRole, ProgramSpec,
};

use crate::api::{
    self, App, ConversionBody, HandoffBody, LeadBody, Principal, Problem, RefundBody, bad, unprocessable,
};
use crate::catalogue::{self, Op, Target};
use crate::keystore::{KeyFile, PrincipalKind, Scope};
use crate::openapi::MANDATE_ID_PATTERN;
use crate::service::{MAX_BATCH, Service, Submit, SubmitError};
use crate::tokens::MAX_TOKEN_LIFE_SECS;
use crate::webhooks::{ReplayBody, RetryPolicy, SubscribeBody, Webhooks};

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest request target (path and query), bytes: a longer one is answered 414. (A
/// request line past hyper's own limit, 65,534 bytes, is refused by hyper itself, with
/// 414 and no body.)
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON request body as `T`: 413 past [`MAX_BODY_BYTES`], 415 unless it is sent as
/// JSON, 400 unless it is what the document states `T` is. A number with a fraction or an
/// exponent that is a whole number (`30.0`, `1e3`) is, in JSON Schema, an integer: where
/// the first reading fails, such numbers are read again as integers.
fn body<T: serde::de::DeserializeOwned>(h: &HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    let bytes = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload too large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
        } else {
            bad(e.body_text())
        }
    })?;
    if !json_content_type(h) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type",
            "send Content-Type: application/json",
        ));
    }
    // Every body is a JSON object (a derived `Deserialize` would take an array of a
    // struct's fields too).
    if bytes.trim_ascii_start().first().is_some_and(|b| *b != b'{') {
        return Err(bad("the body must be a JSON object"));
    }
    match Json::<T>::from_bytes(&bytes) {
        Ok(Json(t)) => Ok(t),
        Err(e @ JsonRejection::JsonDataError(_)) => json_numbers::integral_as_integers(&bytes)
            .and_then(|again| Json::<T>::from_bytes(&again).ok())
            .map(|Json(t)| t)
            .ok_or_else(|| bad(e.body_text())),
        Err(e) => Err(bad(e.body_text())),
    }
}

/// `Content-Type: application/json`, or another `application/*+json`.
fn json_content_type(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.split_once('/').is_some_and(|(ty, sub)| ty == "application" && (sub == "json" || sub.ends_with("+json")))
}

fn query<T>(r: Result<Query<T>, QueryRejection>) -> Result<T, Problem> {
    r.map(|Query(t)| t).map_err(|e| bad(e.body_text()))
}

fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, Problem> {
    Principal::from_authorization(app, headers.get(header::AUTHORIZATION))
}

fn idem_key(p: &Principal, headers: &HeaderMap) -> Result<String, Problem> {
    let k = headers.get("idempotency-key").ok_or_else(|| bad("every write needs an Idempotency-Key header"))?;
    let k = k.to_str().map_err(|_| bad("Idempotency-Key must be visible ASCII"))?;
    p.idempotency_key(k)
}

/// The caller of a write and its idempotency key, in that order: no token is 401, no
/// key 400, before anything else is looked at.
fn writer(app: &App, headers: &HeaderMap) -> Result<(Principal, String), Problem> {
    let p = principal(app, headers)?;
    let key = idem_key(&p, headers)?;
    Ok((p, key))
}

async fn write_one(
    app: &App,
    p: &Principal,
    key: String,
    event: Event,
    request: Option<Value>,
) -> Result<Response, Problem> {
    let o = api::write(app, p, key, event, request).await?;
    let status = if o.replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(api::OutcomeView::of(&o, p))).into_response())
}

/// `POST /v1/programs/{id}/amendments`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Amendment")]
pub(crate) struct AmendBody {
    /// The new rules (same program id, which must be the one in the path, and currency).
    spec: ProgramSpec,
    /// From when they apply: conversions occurring earlier keep the rules they had.
    effective_from: DateTime<Utc>,
}

/// `POST /v1/partners`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Enrollment")]
pub(crate) struct PartnerBody {
    /// Partner id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    partner: String,
    /// The program it joins.
    #[schemars(regex(pattern = ID_PATTERN))]
    program: String,
    /// Display name (at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    name: String,
    /// Its role.
    role: PartnerRole,
}

/// `POST /v1/partners/{id}/suspend`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Suspension")]
pub(crate) struct ReasonBody {
    /// Why (at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    reason: String,
}

/// `POST /v1/agents`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AgentGrant")]
pub(crate) struct AgentBody {
    /// Agent id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    agent: String,
    /// The partner it acts for (a partner authorises agents for itself only).
    #[schemars(regex(pattern = ID_PATTERN))]
    partner: String,
    /// The agent's Ed25519 public key (JWK: kty OKP, crv Ed25519, x, kid = its RFC 7638
    /// thumbprint), for requests it signs itself; absent or `null`: none.
    #[serde(default)]
    public_key: Option<settle_mandates::keys::Jwk>,
    /// What it may do (never more than the granting token holds).
    #[schemars(length(min = 1))]
    scopes: Vec<AgentScope>,
    /// Start of its authority.
    not_before: DateTime<Utc>,
    /// End of its authority (exclusive), after `not_before`.
    expires_at: DateTime<Utc>,
}

/// `POST /v1/conversions/batch`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConversionBatch")]
pub(crate) struct BatchBody {
    /// The conversions, each as `POST /v1/conversions` takes it.
    #[schemars(length(min = 1, max = MAX_BATCH))]
    items: Vec<ConversionBody>,
}

/// `POST /v1/settlements`: `confirmation_id` (paid) or `error` (failed), not both.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Settlement")]
pub(crate) struct SettlementBody {
    /// Settlement id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    settlement: String,
    /// The payout batch this answers, if the mandates were batched.
    #[serde(default)]
    #[schemars(regex(pattern = ID_PATTERN))]
    batch: Option<String>,
    /// The partner paid.
    #[schemars(regex(pattern = ID_PATTERN))]
    partner: String,
    /// Rail name (`book`, `sepa`, `stripe`, ...; at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    rail: String,
    /// The payable mandates paid (with `batch`: the batch's, in its order).
    #[schemars(length(min = 1, max = MAX_SETTLEMENT_MANDATES), inner(regex(pattern = MANDATE_ID_PATTERN)))]
    mandate_ids: Vec<String>,
    /// The rail's confirmation id (paid; at most 256 bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_BYTES))]
    confirmation_id: Option<String>,
    /// The rail's error code (failed; at most 256 bytes).
    #[serde(default)]
    #[schemars(length(max = MAX_TEXT_BYTES))]
    error: Option<String>,
}

/// `POST /v1/payouts`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Payout")]
pub(crate) struct PayoutBody {
    /// Payout batch id, unique per vendor.
    #[schemars(regex(pattern = ID_PATTERN))]
    batch: String,
    /// The partner paid.
    #[schemars(regex(pattern = ID_PATTERN))]
    partner: String,
    /// Rail the batch is sent to (at most 256 bytes).
    #[schemars(length(max = MAX_TEXT_BYTES))]
    rail: String,
    /// The partner's payable mandates in the batch.
    #[schemars(length(min = 1, max = MAX_SETTLEMENT_MANDATES), inner(regex(pattern = MANDATE_ID_PATTERN)))]
    mandate_ids: Vec<String>,
}

/// `POST /v1/holds/advance`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HoldsAdvance")]
pub(crate) struct AdvanceBody {
    /// The new log time, at most now; absent or `null`: now.
    #[serde(default)]
    to: Option<DateTime<Utc>>,
}

async fn publish(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::PublishProgram, &[])?;
    write_one(&app, &p, key, Event::ProgramPublished { spec: api::current_rules(body::<ProgramSpec>(&h, b)?)? }, None)
        .await
}

async fn amend(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::AmendProgram, &[])?;
    let b = body::<AmendBody>(&h, b)?;
    if b.spec.program != id {
        return Err(unprocessable("spec.program must match the program in the path"));
    }
    let spec = api::current_rules(b.spec)?;
    write_one(&app, &p, key, Event::ProgramAmended { spec, effective_from: b.effective_from }, None).await
}

async fn program(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(api::program_view(&app, &p, &id)?).into_response())
}

async fn enroll(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::EnrollPartner, &[])?;
    let b = body::<PartnerBody>(&h, b)?;
    let e = Event::PartnerEnrolled { partner: b.partner, program: b.program, name: b.name, role: b.role };
    write_one(&app, &p, key, e, None).await
}

async fn suspend(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::SuspendPartner, &[])?;
    write_one(&app, &p, key, Event::PartnerSuspended { partner: id, reason: body::<ReasonBody>(&h, b)?.reason }, None)
        .await
}

async fn authorise(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<AgentBody>(&h, b)?;
    // The vendor, or the partner itself, for that partner; never more than it holds.
    let granted = api::agent_scopes(&b.scopes);
    api::allow(&p, Op::AuthoriseAgent, &[Target::NameOf(&b.partner), Target::Scopes(&granted)])?;
    let e = Event::AgentAuthorised {
        agent: b.agent,
        partner: b.partner,
        public_key: b.public_key,
        scopes: b.scopes,
        not_before: b.not_before,
        expires_at: b.expires_at,
    };
    write_one(&app, &p, key, e, None).await
}

async fn revoke(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let owner = app.svc.with_state(|s| s.agents.get(&id).map(|a| a.partner.clone()));
    api::allow(&p, Op::RevokeAgent, &[Target::Agent { id: &id, owner: owner.as_deref() }])?;
    write_one(&app, &p, key, Event::AgentRevoked { agent: id }, None).await
}

async fn register(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let e = body::<LeadBody>(&h, b)?.event(&p)?;
    write_one(&app, &p, key, e, None).await
}

async fn handoff(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let e = body::<HandoffBody>(&h, b)?.event(&app, &p, id)?;
    write_one(&app, &p, key, e, None).await
}

async fn convert(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<ConversionBody>(&h, b)?;
    let request = serde_json::to_value(&b).ok();
    let e = b.event(&p, Utc::now())?;
    write_one(&app, &p, key, e, request).await
}

async fn convert_batch(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::RecordConversions, &[])?;
    let items = body::<BatchBody>(&h, b)?.items;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(unprocessable(format!("a batch holds 1..={MAX_BATCH} conversions")));
    }
    let now = Utc::now();
    let mut subs = Vec::with_capacity(items.len());
    for (i, it) in items.into_iter().enumerate() {
        let request = serde_json::to_value(&it).ok();
        let e = it.event(&p, now).map_err(|mut pr| {
            pr.detail = format!("item {i}: {}", pr.detail);
            pr
        })?;
        subs.push(Submit { key: format!("{key}#{i}"), by: p.by(), at: now, event: e, request });
    }
    let results = app.svc.try_submit(subs).await;
    if results.iter().any(|r| matches!(r, Err(SubmitError::Busy))) {
        return Err(SubmitError::Busy.into());
    }
    let items: Vec<BatchItem> = results
        .iter()
        .map(|r| match r {
            Ok(o) => BatchItem::Done(api::OutcomeView::of(o, &p)),
            Err(e) => {
                let pr: Problem = e.clone().into();
                BatchItem::Failed { detail: pr.detail, status: pr.status.as_u16(), title: pr.title }
            }
        })
        .collect();
    // Sized up front: a batch answer runs to megabytes, and growing it by doubling costs
    // copies and fresh pages.
    let mut buf = Vec::with_capacity(items.len().saturating_mul(BATCH_ITEM_BYTES_HINT));
    serde_json::to_writer(&mut buf, &BatchAnswer { results: items }).map_err(api::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], buf).into_response())
}

/// About how many bytes one conversion takes in a batch answer (three hops).
const BATCH_ITEM_BYTES_HINT: usize = 9 * 1024;

/// The answer to `POST /v1/conversions/batch`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ConversionBatchOutcome")]
pub(crate) struct BatchAnswer<'a> {
    /// One result per item, in order: its outcome, or the problem that refused it.
    results: Vec<BatchItem<'a>>,
}

/// One item's result.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "ConversionBatchItem")]
enum BatchItem<'a> {
    /// Recorded (or replayed).
    Done(api::OutcomeView<'a>),
    /// Refused: the problem's status, title and detail.
    Failed {
        /// What went wrong.
        detail: String,
        /// Its HTTP status.
        status: u16,
        /// Its title.
        title: &'static str,
    },
}

async fn refund(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let e = body::<RefundBody>(&h, b)?.event(&p)?;
    write_one(&app, &p, key, e, None).await
}

async fn settlement(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::RecordSettlement, &[])?;
    let b = body::<SettlementBody>(&h, b)?;
    let e = match (b.confirmation_id, b.error) {
        (Some(c), None) => Event::SettlementConfirmed {
            settlement: b.settlement,
            batch: b.batch,
            partner: b.partner,
            rail: b.rail,
            confirmation_id: c,
            mandate_ids: b.mandate_ids,
        },
        (None, Some(err)) => Event::SettlementFailed {
            settlement: b.settlement,
            batch: b.batch,
            partner: b.partner,
            rail: b.rail,
            error: err,
            mandate_ids: b.mandate_ids,
        },
        _ => return Err(unprocessable("give either confirmation_id (paid) or error (failed)")),
    };
    write_one(&app, &p, key, e, None).await
}

async fn payout(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::CreatePayout, &[])?;
    let b = body::<PayoutBody>(&h, b)?;
    let e = Event::PayoutBatched { batch: b.batch, partner: b.partner, rail: b.rail, mandate_ids: b.mandate_ids };
    write_one(&app, &p, key, e, None).await
}

async fn release(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::ReleaseConversion, &[])?;
    write_one(&app, &p, key, Event::ConversionReleased { conversion: id }, None).await
}

async fn advance(State(app): State<App>, h: HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    api::allow(&p, Op::AdvanceHolds, &[])?;
    let b = body::<AdvanceBody>(&h, b)?;
    let request = serde_json::to_value(&b).ok();
    let to = b.to.unwrap_or_else(Utc::now);
    write_one(&app, &p, key, Event::HoldsAdvanced { to }, request).await
}

async fn balance(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(api::balance_view(&app, &p, &id)?).into_response())
}

/// The query of `GET /v1/partners/{id}/mandates`: integers only (anything else is 400);
/// the page size's range is `api::mandates`'.
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
    q: Result<Query<Page>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let q = query(q)?;
    Ok(Json(api::mandates(&app, &p, id, q.after, q.limit).await?).into_response())
}

async fn receipt(
    State(app): State<App>,
    UrlPath((id, mid)): UrlPath<(String, String)>,
    h: HeaderMap,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(api::receipt(&app, &p, &id, &mid)?).into_response())
}

fn hooks(app: &App) -> Result<Arc<Webhooks>, Problem> {
    app.hooks.clone().ok_or_else(|| api::not_found("webhooks are delivered by `settle serve`"))
}

async fn subscribe(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<SubscribeBody>(&h, b)?;
    let hooks = hooks(&app)?;
    let (v, replayed) = tokio::task::block_in_place(|| hooks.subscribe(&p, &key, b))?;
    Ok((if replayed { StatusCode::OK } else { StatusCode::CREATED }, Json(v)).into_response())
}

async fn subscriptions(State(app): State<App>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(hooks(&app)?.list(&p)?).into_response())
}

async fn subscription(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(hooks(&app)?.get(&p, &id)?).into_response())
}

async fn unsubscribe(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let hooks = hooks(&app)?;
    tokio::task::block_in_place(|| hooks.delete(&p, &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn dead_letters(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(hooks(&app)?.dead_letters(&p, &id)?).into_response())
}

async fn replay(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<ReplayBody>(&h, b)?;
    let hooks = hooks(&app)?;
    let (v, replayed) = tokio::task::block_in_place(|| hooks.replay(&p, &key, &id, &b))?;
    Ok((if replayed { StatusCode::OK } else { StatusCode::ACCEPTED }, Json(v)).into_response())
}

/// An API token to issue: `POST /v1/tokens`.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TokenRequest")]
pub(crate) struct TokenBody {
    /// The kind of principal it authenticates.
    kind: PrincipalKind,
    /// Partner id (partner tokens), agent id (agent tokens), or a name.
    subject: String,
    /// For a partner agent: the partner it acts for (required then).
    #[serde(default)]
    partner: Option<String>,
    /// Its scopes: at least one, at most the issuing token's.
    #[schemars(length(min = 1))]
    scopes: Vec<Scope>,
    /// Life in seconds, at most ten years; absent or `null`: until revoked.
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_TOKEN_LIFE_SECS))]
    expires_in: Option<i64>,
}

/// A token as listed: never its hash; its secret only in the answer that issued it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Token")]
pub(crate) struct TokenView {
    /// When it was issued (Unix seconds); `null` for tokens issued before lifecycles.
    created_at: Option<i64>,
    /// When it stops working (Unix seconds, exclusive); `null`: until revoked.
    expires_at: Option<i64>,
    /// `tok_` and 12 hex digits.
    id: String,
    /// The kind of principal.
    kind: PrincipalKind,
    /// For a partner agent: its partner.
    partner: Option<String>,
    /// When it was revoked (Unix seconds).
    revoked_at: Option<i64>,
    /// Its scopes.
    scopes: Vec<Scope>,
    /// Partner id, agent id or a name.
    subject: String,
    /// The secret (`stl_` and 64 hex digits): in the answer that issued it only.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl TokenView {
    fn of(t: &crate::keystore::StoredToken, secret: Option<String>) -> Self {
        Self {
            created_at: t.created_at,
            expires_at: t.expires_at,
            id: t.id.clone(),
            kind: t.kind,
            partner: t.partner.clone(),
            revoked_at: t.revoked_at,
            scopes: t.scopes.clone(),
            subject: t.subject.clone(),
            token: secret,
        }
    }
}

/// `GET /v1/tokens`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "TokenList")]
pub(crate) struct TokenList {
    /// Every token, revoked and expired ones too.
    tokens: Vec<TokenView>,
}

async fn issue_token(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<TokenBody>(&h, b)?;
    api::allow(&p, Op::IssueToken, &[Target::Scopes(&b.scopes)])?;
    // Never a longer life than the issuer's own: a token that expires cannot outlive
    // itself through the tokens it issues.
    let now = Utc::now().timestamp();
    let issuer_expires = app.tokens.by_id(&p.token_id).and_then(|t| t.expires_at);
    if let Some(limit) = issuer_expires
        && b.expires_in.is_none_or(|s| now.saturating_add(s) > limit)
    {
        return Err(api::forbidden(format!(
            "this token expires at {limit} (Unix s): a token it issues needs an expires_in that ends by then"
        )));
    }
    // Idempotent on the key: the same key and body answer the same token id, never the
    // secret again (it is shown once).
    let request = serde_json::to_value(&b).map_err(api::internal)?;
    let req = crate::tokens::TokenRequest {
        kind: b.kind,
        subject: b.subject,
        partner: b.partner,
        scopes: b.scopes,
        expires_in: b.expires_in,
    };
    let tokens = app.tokens.clone();
    let out = tokio::task::spawn_blocking(move || tokens.issue_once(&key, &request, req, now))
        .await
        .map_err(api::internal)?;
    match out {
        Ok(crate::tokens::Issued::New(secret, t)) => {
            Ok((StatusCode::CREATED, Json(TokenView::of(&t, Some(secret)))).into_response())
        }
        Ok(crate::tokens::Issued::Again(t)) => Ok((StatusCode::OK, Json(TokenView::of(&t, None))).into_response()),
        Err(crate::tokens::IssueError::KeyReused) => {
            Err(api::key_reused("this Idempotency-Key issued a token for another request"))
        }
        Err(crate::tokens::IssueError::Refused(e)) => Err(unprocessable(format!("{e:#}"))),
    }
}

async fn list_tokens(State(app): State<App>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    api::allow(&p, Op::ListTokens, &[])?;
    let tokens = app.tokens.list().iter().map(|t| TokenView::of(t, None)).collect();
    Ok(Json(TokenList { tokens }).into_response())
}

async fn revoke_token(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    api::allow(&p, Op::RevokeToken, &[])?;
    if app.tokens.by_id(&id).is_none() {
        return Err(api::not_found(format!("token '{id}' not found")));
    }
    let tokens = app.tokens.clone();
    let now = Utc::now().timestamp();
    tokio::task::spawn_blocking(move || tokens.revoke(&id, now))
        .await
        .map_err(api::internal)?
        .map_err(|e| unprocessable(format!("{e:#}")))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn jwks(State(app): State<App>) -> Result<Response, Problem> {
    Ok(Json(app.keys.jwks().map_err(api::internal)?).into_response())
}

async fn latest(State(app): State<App>) -> Result<Response, Problem> {
    Ok(Json(api::latest_checkpoint_view(&app)?).into_response())
}

/// The query of `GET /v1/checkpoints/consistency`.
#[derive(Deserialize)]
struct Consistency {
    from: u64,
    to: u64,
}

async fn consistency(
    State(app): State<App>,
    q: Result<Query<Consistency>, QueryRejection>,
) -> Result<Response, Problem> {
    let q = query(q)?;
    Ok(Json(api::consistency_view(&app, q.from, q.to)?).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::document()).into_response()
}

/// A request target longer than [`MAX_URI_BYTES`] is answered 414 before routing.
async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return Problem::new(
            StatusCode::URI_TOO_LONG,
            "URI too long",
            format!("the request target is {len} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    next.run(req).await
}

/// Every error answer is RFC 9457 problem+json, whichever layer made it (routing's 405,
/// an extractor's 400, the body limit's 413, the timeout's 408): an error that is not
/// one already becomes one, with its status and what it said as the detail.
async fn as_problem(r: Response) -> Response {
    let status = r.status();
    let is_problem = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return r;
    }
    let (parts, body) = r.into_parts();
    let said = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let said = String::from_utf8_lossy(&said).trim().to_owned();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this path does not take that method; see /openapi.json".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        StatusCode::REQUEST_TIMEOUT => format!("the request took longer than {} s", REQUEST_TIMEOUT.as_secs()),
        _ if !said.is_empty() => said,
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let mut out = Problem::new(status, title, detail).into_response();
    for h in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

async fn no_route() -> Problem {
    api::not_found("no such endpoint; see /openapi.json")
}

/// The handler of an operation served over HTTP (`None`: the operation has no HTTP
/// door). Exhaustive: a new operation must be given a door here, or none; each answers
/// the method the catalogue names (`tests/authz.rs` calls every one by it).
fn handler(op: Op) -> Option<MethodRouter<App>> {
    Some(match op {
        Op::OpenApi => get(openapi),
        Op::Jwks => get(jwks),
        Op::AgentCard => get(crate::a2a::agent_card),
        Op::LatestCheckpoint => get(latest),
        Op::Consistency => get(consistency),
        Op::VerifyReceipt => return None,
        Op::PublishProgram => post(publish),
        Op::DescribeProgram => get(program),
        Op::AmendProgram => post(amend),
        Op::EnrollPartner => post(enroll),
        Op::SuspendPartner => post(suspend),
        Op::GetBalance => get(balance),
        Op::ListMandates => get(mandates),
        Op::GetReceipt => get(receipt),
        Op::AuthoriseAgent => post(authorise),
        Op::RevokeAgent => post(revoke),
        Op::RegisterLead => post(register),
        Op::HandOffLead => post(handoff),
        Op::RecordConversion => post(convert),
        Op::RecordConversions => post(convert_batch),
        Op::ReleaseConversion => post(release),
        Op::RecordRefund => post(refund),
        Op::CreatePayout => post(payout),
        Op::RecordSettlement => post(settlement),
        Op::AdvanceHolds => post(advance),
        Op::Subscribe => post(subscribe),
        Op::ListSubscriptions => get(subscriptions),
        Op::GetSubscription => get(subscription),
        Op::Unsubscribe => delete(unsubscribe),
        Op::DeadLetters => get(dead_letters),
        Op::ReplayDeliveries => post(replay),
        Op::IssueToken => post(issue_token),
        Op::ListTokens => get(list_tokens),
        Op::RevokeToken => delete(revoke_token),
        Op::GetTask => return None,
    })
}

/// The HTTP routes of `settle serve` (also served in-process by `settle load`): every
/// operation of the catalogue that has an HTTP door, at its path, and the two agent
/// transports (`/a2a`, `/mcp`), whose operations the catalogue names too.
pub fn router(app: App, listen: std::net::SocketAddr) -> Router {
    let mut r = Router::new();
    for o in catalogue::OPERATIONS {
        match (o.http, handler(o.op)) {
            (Some((m, path)), Some(h)) => {
                assert!(!o.writes || m != catalogue::Method::Get, "{} {}: a write is never a GET", m.as_str(), o.name);
                r = r.route(path, h);
            }
            (None, None) => {}
            _ => unreachable!("operation {} has an HTTP path but no handler, or the reverse", o.name),
        }
    }
    r.route("/a2a", post(crate::a2a::rpc))
        .nest_service("/mcp", crate::mcp::http_service(app.clone(), listen))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A declared length over the limit is refused before any of the body is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::map_response(as_problem))
        .with_state(app)
}

/// What a running store does on its own: a signed checkpoint at least every second while
/// the log grows (so receipts are available within a second), and held commissions
/// released once a minute when due.
pub async fn background(svc: Arc<Service>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        n += 1;
        let l = svc.ledger().clone();
        let size = l.size();
        let covered = l.latest_checkpoint().ok().flatten().map_or(0, |c| c.checkpoint.size);
        if size > covered
            && let Err(e) = l.checkpoint(Utc::now().timestamp()).await
        {
            tracing::error!("checkpoint failed: {e}");
        }
        if n.is_multiple_of(60) {
            let now = Utc::now();
            let due = svc.with_state(|s| s.holds.keys().next().is_some_and(|t| *t <= now.timestamp()));
            if due {
                let sub = Submit {
                    request: None,
                    key: format!("clock/advance/{}", now.timestamp()),
                    by: "engine:clock".into(),
                    at: now,
                    event: Event::HoldsAdvanced { to: now },
                };
                let _ = svc.submit(vec![sub]).await;
            }
        }
    }
}

/// Serves the API on `listen` until SIGTERM/SIGINT; then drains, checkpoints, saves.
pub fn serve(
    data: &Path,
    listen: std::net::SocketAddr,
    webhooks: RetryPolicy,
    webhook_ca: Option<&Path>,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let keys = Arc::new(KeyFile::load(data)?);
    let extra_roots = webhook_ca.map(crate::webhooks::read_ca).transpose()?.unwrap_or_default();
    let svc = Service::open(data)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let svc2 = svc.clone();
    rt.block_on(async move {
        let svc = svc2;
        let tokens = Arc::new(crate::tokens::Tokens::open(data)?);
        let hooks = Webhooks::new(svc.clone(), keys.current()?, webhooks, extra_roots, tokens.clone())?;
        hooks.start()?;
        let app = App { svc: svc.clone(), keys, tokens, base: format!("http://{listen}"), hooks: Some(hooks.clone()) };
        let listener =
            tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        tracing::info!("settle serving {} on http://{listen}", data.display());
        let ticker = tokio::spawn(background(svc.clone()));
        axum::serve(listener, router(app, listen)).with_graceful_shutdown(shutdown()).await?;
        ticker.abort();
        hooks.stop();
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

/// Whole numbers written with a fraction or an exponent, read as integers.
mod json_numbers {
    /// Digits past which a whole number is left as written (no integer field is that long).
    const MAX_DIGITS: usize = 40;

    /// `json` with every number token that is a whole number but written with a fraction
    /// or an exponent (`30.0`, `1e3`, `-2.50e2`) rewritten as the integer it is (`30`,
    /// `1000`, `-250`), exactly, from its digits; `None` if there is none. Strings are left
    /// as they are.
    pub fn integral_as_integers(json: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(json.len());
        let mut changed = false;
        let mut i = 0;
        while i < json.len() {
            let c = json[i];
            if c == b'"' {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(json.len());
                out.extend_from_slice(&json[start..i]);
            } else if c == b'-' || c.is_ascii_digit() {
                let start = i;
                while i < json.len() && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = &json[start..i];
                match whole(token) {
                    Some(int) => {
                        out.extend_from_slice(int.as_bytes());
                        changed = true;
                    }
                    None => out.extend_from_slice(token),
                }
            } else {
                out.push(c);
                i += 1;
            }
        }
        changed.then_some(out)
    }

    /// The integer a number token with a fraction or an exponent is, if it is whole.
    fn whole(token: &[u8]) -> Option<String> {
        let t = std::str::from_utf8(token).ok()?;
        let (neg, t) = t.strip_prefix('-').map_or((false, t), |r| (true, r));
        let (mantissa, exp) = match t.find(['e', 'E']) {
            Some(k) => (&t[..k], t[k + 1..].parse::<i64>().ok()?),
            None => (t, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if (frac.is_empty() && exp == 0)
            || int.is_empty()
            || !(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        let digits = format!("{int}{frac}");
        // The value is digits × 10^(exp − len(frac)).
        let shift = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
        let int = if shift >= 0 {
            let zeros = usize::try_from(shift).ok().filter(|z| digits.len() + z <= MAX_DIGITS)?;
            format!("{digits}{}", "0".repeat(zeros))
        } else {
            let cut = usize::try_from(shift.unsigned_abs()).ok()?;
            let keep = digits.len().checked_sub(cut)?;
            if !digits[keep..].bytes().all(|b| b == b'0') {
                return None;
            }
            digits[..keep].to_owned()
        };
        let int = int.trim_start_matches('0');
        Some(match (int.is_empty(), neg) {
            (true, _) => "0".to_owned(),
            (false, true) => format!("-{int}"),
            (false, false) => int.to_owned(),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn whole_numbers_are_rewritten_exactly_and_nothing_else() {
            let cases: &[(&str, Option<&str>)] = &[
                (r#"{"a": 30.0}"#, Some(r#"{"a": 30}"#)),
                (r#"[1e3, -2.50e2, 0.0, -0.0, 5367612.0, 1.5e1]"#, Some("[1000, -250, 0, 0, 5367612, 15]")),
                (r#"[123456789012345678901.0]"#, Some("[123456789012345678901]")),
                (r#"[2.5, 1e-3, 7]"#, None),
                (r#"{"s": "30.0", "t": "a\"1.0"}"#, None),
                (r#"{"n": 1e400}"#, None),
                (r#"{"n": 10e-1}"#, Some(r#"{"n": 1}"#)),
            ];
            for (input, want) in cases {
                let got = integral_as_integers(input.as_bytes()).map(|b| String::from_utf8(b).unwrap());
                assert_eq!(got.as_deref(), *want, "{input}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document names exactly the catalogue's HTTP operations, each with its
    /// method and its `operationId`.
    #[test]
    fn the_openapi_document_is_the_catalogues() {
        let doc = crate::openapi::build();
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                if path != "/a2a" && path != "/mcp" {
                    let id = op["operationId"].as_str().unwrap_or_default().to_owned();
                    documented.insert((method.to_uppercase(), path.clone(), id));
                }
            }
        }
        let catalogued: std::collections::BTreeSet<_> = catalogue::OPERATIONS
            .iter()
            .filter_map(|o| o.http.map(|(m, p)| (m.as_str().to_owned(), p.to_owned(), o.name.to_owned())))
            .collect();
        assert_eq!(documented, catalogued);
    }
}

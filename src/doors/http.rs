//! The HTTP API (axum on tokio), for agents first: JSON under `/v1`, RFC 9457
//! problem+json errors, bearer tokens bound to a principal and scopes, an
//! `Idempotency-Key` on every write, and responses only after the write is durable.
//!
//! What a request may hold is what the OpenAPI document (`super::openapi`, built from
//! the types it reads) states: a request it forbids is answered 400 (or 413, 414, 415), one
//! it allows but the rules refuse 422.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Json, Router};
use chrono::Utc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use settle_engine::model::ProgramSpec;

use super::problem::Problem;
use crate::auth::Principal;
use crate::bank;
use crate::catalogue::{self, Op, Target, allow};
use crate::error::{Error, Kind};
use crate::ops::admin::{self, TokenBody};
use crate::ops::commands::{
    self, AdvanceBody, AgentBody, AmendBody, BatchBody, ConversionBody, Fact, HandoffBody, LeadBody, OutcomeView,
    PartnerBody, PayoutBody, ReasonBody, RefundBody, SettlementBody,
};
use crate::ops::disputes::{self, CommentBody, DisputeBody, DisputeQuery, ResolutionBody, WithdrawBody};
use crate::ops::reports::{self, PayoutQuery, StatementQuery};
use crate::ops::{App, audits, queries};
use crate::webhooks::{ReplayBody, SubscribeBody};

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
fn body<T: serde::de::DeserializeOwned>(h: &HeaderMap, b: Result<Bytes, BytesRejection>) -> Result<T, Error> {
    let bytes = b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::new(Kind::TooLarge, format!("request bodies are limited to {MAX_BODY_BYTES} bytes"))
        } else {
            Error::malformed(e.body_text())
        }
    })?;
    if !json_content_type(h) {
        return Err(Error::new(Kind::WrongMediaType, "send Content-Type: application/json"));
    }
    // Every body is a JSON object (a derived `Deserialize` would take an array of a
    // struct's fields too).
    if bytes.trim_ascii_start().first().is_some_and(|b| *b != b'{') {
        return Err(Error::malformed("the body must be a JSON object"));
    }
    match Json::<T>::from_bytes(&bytes) {
        Ok(Json(t)) => Ok(t),
        Err(e @ JsonRejection::JsonDataError(_)) => json_numbers::integral_as_integers(&bytes)
            .and_then(|again| Json::<T>::from_bytes(&again).ok())
            .map(|Json(t)| t)
            .ok_or_else(|| Error::malformed(e.body_text())),
        Err(e) => Err(Error::malformed(e.body_text())),
    }
}

/// `Content-Type: application/json`, or another `application/*+json`.
fn json_content_type(h: &HeaderMap) -> bool {
    let Some(ct) = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.split_once('/').is_some_and(|(ty, sub)| ty == "application" && (sub == "json" || sub.ends_with("+json")))
}

fn query<T>(r: Result<Query<T>, QueryRejection>) -> Result<T, Error> {
    r.map(|Query(t)| t).map_err(|e| Error::malformed(e.body_text()))
}

fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, Error> {
    app.principal(headers.get(header::AUTHORIZATION).map(axum::http::HeaderValue::as_bytes))
}

fn idem_key(p: &Principal, headers: &HeaderMap) -> Result<String, Error> {
    let k = headers
        .get("idempotency-key")
        .ok_or_else(|| Error::malformed("every write needs an Idempotency-Key header"))?;
    let k = k.to_str().map_err(|_| Error::malformed("Idempotency-Key must be visible ASCII"))?;
    p.idempotency_key(k)
}

/// The caller of a write and its idempotency key, in that order: no token is 401, no
/// key 400, before anything else is looked at.
fn writer(app: &App, headers: &HeaderMap) -> Result<(Principal, String), Error> {
    let p = principal(app, headers)?;
    let key = idem_key(&p, headers)?;
    Ok((p, key))
}

/// As [`writer`], for an operation the caller's kind and scopes decide before its body
/// is read (a vendor's write: whoever may not call it learns nothing of its body's rules).
fn writer_of(app: &App, headers: &HeaderMap, op: Op) -> Result<(Principal, String), Error> {
    let (p, key) = writer(app, headers)?;
    allow(&p, op, &[])?;
    Ok((p, key))
}

/// Whether the request prefers a minimal answer (RFC 7240 `Prefer: return=minimal`;
/// preferences are case-insensitive, several may be listed, unknown ones are ignored).
fn prefers_minimal(h: &HeaderMap) -> bool {
    h.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|p| {
        let p = p.split(';').next().unwrap_or_default();
        let mut kv = p.splitn(2, '=').map(str::trim);
        kv.next().is_some_and(|k| k.eq_ignore_ascii_case("return"))
            && kv.next().is_some_and(|v| v.trim_matches('"').eq_ignore_ascii_case("minimal"))
    })
}

/// A write's answer, saying (`Preference-Applied`) when it is the minimal one; either
/// way it depends on the request's `Prefer` (`Vary`).
fn applied(mut r: Response, minimal: bool) -> Response {
    r.headers_mut().insert(header::VARY, header::HeaderValue::from_static("prefer"));
    if minimal {
        r.headers_mut().insert("preference-applied", header::HeaderValue::from_static("return=minimal"));
    }
    r
}

/// Records `fact` and answers its outcome: 201, or 200 for a retry.
async fn write(
    app: &App,
    p: &Principal,
    h: &HeaderMap,
    key: String,
    fact: Result<Fact, Error>,
) -> Result<Response, Error> {
    let o = commands::record(app, p, key, fact?).await?;
    let status = if o.replayed { StatusCode::OK } else { StatusCode::CREATED };
    let minimal = prefers_minimal(h);
    let view = OutcomeView::of(&o, p);
    Ok(applied((status, Json(if minimal { view.minimal() } else { view })).into_response(), minimal))
}

/// A JSON answer.
fn answer<T: Serialize>(r: Result<T, Error>) -> Result<Response, Error> {
    r.map(|v| Json(v).into_response())
}

/// The handlers, one per operation, in the catalogue's order.
type Body = Result<Bytes, BytesRejection>;

async fn publish(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::PublishProgram)?;
    let spec = body::<ProgramSpec>(&h, b)?;
    write(&app, &p, &h, key, commands::publish(&p, spec)).await
}

async fn amend(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::AmendProgram)?;
    write(&app, &p, &h, key, body::<AmendBody>(&h, b)?.fact(&p, &id)).await
}

async fn program(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(queries::program(&app, &p, &id))
}

async fn enroll(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::EnrollPartner)?;
    write(&app, &p, &h, key, body::<PartnerBody>(&h, b)?.fact(&p)).await
}

async fn suspend(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Body,
) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::SuspendPartner)?;
    write(&app, &p, &h, key, body::<ReasonBody>(&h, b)?.fact(&p, id)).await
}

async fn authorise(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, body::<AgentBody>(&h, b)?.fact(&p)).await
}

async fn revoke(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, commands::revoke_agent(&app, &p, id)).await
}

async fn register(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, body::<LeadBody>(&h, b)?.fact(&p)).await
}

async fn handoff(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Body,
) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, body::<HandoffBody>(&h, b)?.fact(&app, &p, id)).await
}

async fn convert(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, body::<ConversionBody>(&h, b)?.fact(&p, Utc::now())).await
}

async fn convert_batch(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::RecordConversions)?;
    let items = body::<BatchBody>(&h, b)?.items;
    let results = commands::record_batch(&app, &p, &key, items).await?;
    let minimal = prefers_minimal(&h);
    let items: Vec<BatchItem> = results
        .iter()
        .map(|r| match r {
            Ok(o) if minimal => BatchItem::Done(OutcomeView::of(o, &p).minimal()),
            Ok(o) => BatchItem::Done(OutcomeView::of(o, &p)),
            Err(e) => {
                let pr = Problem::from(e.clone());
                BatchItem::Failed { detail: pr.detail, status: pr.status.as_u16(), title: pr.title }
            }
        })
        .collect();
    // Sized up front: a batch answer runs to megabytes, and growing it by doubling costs
    // copies and fresh pages.
    let hint = if minimal { BATCH_ITEM_BYTES_HINT / 16 } else { BATCH_ITEM_BYTES_HINT };
    let mut buf = Vec::with_capacity(items.len().saturating_mul(hint));
    serde_json::to_writer(&mut buf, &BatchAnswer { results: items }).map_err(Error::internal)?;
    Ok(applied(([(header::CONTENT_TYPE, "application/json")], buf).into_response(), minimal))
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
    Done(OutcomeView<'a>),
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

async fn refund(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, body::<RefundBody>(&h, b)?.fact(&p)).await
}

async fn settlement(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::RecordSettlement)?;
    write(&app, &p, &h, key, body::<SettlementBody>(&h, b)?.fact(&p)).await
}

async fn payout(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::CreatePayout)?;
    write(&app, &p, &h, key, body::<PayoutBody>(&h, b)?.fact(&p)).await
}

async fn release(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, commands::release(&p, id)).await
}

async fn advance(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, Op::AdvanceHolds)?;
    write(&app, &p, &h, key, body::<AdvanceBody>(&h, b)?.fact(&p)).await
}

async fn register_instrument(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Body,
) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    allow(&p, Op::RegisterInstrument, &[Target::NameOf(&id)])?;
    let registration = body::<bank::Registration>(&h, b)?;
    // The request as sent makes a retry the same one (the salt is the server's): a retry
    // is answered with the first registration, and its own details forgotten.
    let request = serde_json::json!({"partner": id, "registration": registration});
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(Error::internal)?;
    let _one_at_a_time = INSTRUMENT_WRITES.lock().await;
    let (event, stored) = bank::prepare(&app.svc, &id, registration, salt, Utc::now())?;
    let answered = write(&app, &p, &h, key, Ok(Fact { event, request: Some(request) })).await;
    bank::settled(&app.svc, &stored)?;
    answered
}

/// Registrations and erasures of bank details, one at a time: each reads which
/// instrument the log names, then changes what is kept beside it.
static INSTRUMENT_WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn instrument(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    allow(&p, Op::GetInstrument, &[Target::DataOf(&id)])?;
    answer(bank::current(&app.svc, &id))
}

/// Erases a partner's bank details: the removal of its instrument recorded (if it has
/// one), then every account it registered forgotten. Idempotent by its path: 204 again.
async fn erase_instrument(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    allow(&p, Op::EraseInstrument, &[Target::NameOf(&id)])?;
    let _one_at_a_time = INSTRUMENT_WRITES.lock().await;
    if let Some((event, instrument)) = bank::removal(&app.svc, &id)? {
        let key = p.idempotency_key(&format!("erase-payout-instrument:{id}:{instrument}"))?;
        commands::record(&app, &p, key, event.into()).await?;
    }
    bank::instruments::erase(&app.svc, &id, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of `GET /v1/payouts/{id}/pain.001`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    #[serde(default)]
    execution_date: Option<chrono::NaiveDate>,
}

async fn payment_file(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<FileQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    allow(&p, Op::PaymentFile, &[])?;
    let q = query(q)?;
    let xml = bank::payment_file(&app.svc, &[id], q.execution_date)?;
    Ok(([(header::CONTENT_TYPE, XML)], xml).into_response())
}

/// The media type of ISO 20022 files.
const XML: &str = "application/xml";

/// Applies a bank's camt.054 notification (sent as `application/xml` or `text/xml`).
async fn reconcile(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, _key) = writer_of(&app, &h, Op::ReconcilePayouts)?;
    let bytes = b.map_err(|e| Error::malformed(e.body_text()))?;
    let essence = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = essence.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != XML && essence != "text/xml" {
        return Err(Error::new(Kind::WrongMediaType, "send the notification as Content-Type: application/xml"));
    }
    let (svc, by) = (app.svc.clone(), p.by());
    let report = tokio::task::spawn_blocking(move || bank::reconcile::reconcile(&svc, &bytes, &by, Utc::now()))
        .await
        .map_err(Error::internal)??;
    answer(Ok(report))
}

async fn balance(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(queries::balance(&app, &p, &id))
}

/// The query of `GET /v1/partners/{id}/mandates`: integers only (anything else is 400);
/// the page size's range is `queries::mandates`'.
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
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    let q = query(q)?;
    answer(queries::mandates(&app, &p, id, q.after, q.limit).await)
}

async fn conversion(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(queries::conversion(&app, &p, &id))
}

async fn receipt(
    State(app): State<App>,
    UrlPath((id, mid)): UrlPath<(String, String)>,
    h: HeaderMap,
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(queries::receipt(&app, &p, &id, &mid))
}

async fn statement(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<StatementQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(reports::statement(&app, &p, id, query(q)?).await)
}

async fn leads(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    answer(reports::leads(&app, &principal(&app, &h)?, &id, Utc::now()))
}

async fn agents(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    answer(reports::agents(&app, &principal(&app, &h)?, &id, Utc::now()))
}

async fn payouts(
    State(app): State<App>,
    q: Result<Query<PayoutQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(reports::payouts(&app, &p, &query(q)?).await)
}

/// 202 and where to ask after it, for a run this call started; 200 for the one running.
async fn start_audit(State(app): State<App>, h: HeaderMap) -> Result<Response, Error> {
    let (v, started) = audits::start(&app, &principal(&app, &h)?, Utc::now())?;
    let at = format!("/v1/audits/{}", v.id);
    let status = if started { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, [(header::LOCATION, at)], Json(v)).into_response())
}

async fn audit(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    answer(audits::get(&app, &principal(&app, &h)?, &id))
}

async fn open_dispute(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    write(&app, &p, &h, key, body::<DisputeBody>(&h, b)?.fact(&app, &p)).await
}

async fn list_disputes(
    State(app): State<App>,
    q: Result<Query<DisputeQuery>, QueryRejection>,
    h: HeaderMap,
) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(disputes::disputes(&app, &p, &query(q)?))
}

async fn get_dispute(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(disputes::dispute(&app, &p, &id))
}

/// A step of dispute `id` (a comment, a resolution, a withdrawal): the caller's kind and
/// scopes first, then its body.
async fn dispute_step<B: disputes::Step>(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Body,
) -> Result<Response, Error> {
    let (p, key) = writer_of(&app, &h, B::OP)?;
    write(&app, &p, &h, key, body::<B>(&h, b)?.fact(&app, &p, id)).await
}

async fn subscribe(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<SubscribeBody>(&h, b)?;
    let hooks = admin::hooks(&app)?;
    let (v, replayed) = tokio::task::block_in_place(|| hooks.subscribe(&p, &key, b))?;
    Ok((if replayed { StatusCode::OK } else { StatusCode::CREATED }, Json(v)).into_response())
}

async fn subscriptions(State(app): State<App>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(admin::hooks(&app)?.list(&p))
}

async fn subscription(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(admin::hooks(&app)?.get(&p, &id))
}

async fn unsubscribe(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    let hooks = admin::hooks(&app)?;
    tokio::task::block_in_place(|| hooks.delete(&p, &id))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn dead_letters(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(admin::hooks(&app)?.dead_letters(&p, &id))
}

async fn replay(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Body,
) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<ReplayBody>(&h, b)?;
    let hooks = admin::hooks(&app)?;
    let (v, replayed) = tokio::task::block_in_place(|| hooks.replay(&p, &key, &id, &b))?;
    Ok((if replayed { StatusCode::OK } else { StatusCode::ACCEPTED }, Json(v)).into_response())
}

async fn issue_token(State(app): State<App>, h: HeaderMap, b: Body) -> Result<Response, Error> {
    let (p, key) = writer(&app, &h)?;
    let b = body::<TokenBody>(&h, b)?;
    let (view, new) = admin::issue_token(&app, &p, key, b).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, Json(view)).into_response())
}

async fn list_tokens(State(app): State<App>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    answer(admin::list_tokens(&app, &p))
}

async fn revoke_token(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Error> {
    let p = principal(&app, &h)?;
    admin::revoke_token(&app, &p, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn jwks(State(app): State<App>) -> Result<Response, Error> {
    answer(app.keys.jwks().map_err(Error::internal))
}

async fn latest(State(app): State<App>) -> Result<Response, Error> {
    answer(queries::latest_checkpoint(&app))
}

/// The query of `GET /v1/checkpoints/consistency`.
#[derive(Deserialize)]
struct Consistency {
    from: u64,
    to: u64,
}

async fn consistency(State(app): State<App>, q: Result<Query<Consistency>, QueryRejection>) -> Result<Response, Error> {
    let q = query(q)?;
    answer(queries::consistency(&app, q.from, q.to))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi::document()).into_response()
}

/// A request target longer than [`MAX_URI_BYTES`] is answered 414 before routing.
async fn limit_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        let detail = format!("the request target is {len} bytes; at most {MAX_URI_BYTES} are read");
        return Error::new(Kind::TargetTooLong, detail).into_response();
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
        .is_some_and(|c| c.starts_with("application/problem+json") || c.starts_with("text/html"));
    // A problem, or a page of the workspace (which says what went wrong as a page).
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
    let mut out = Problem { status, title, detail }.into_response();
    for h in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&h) {
            out.headers_mut().insert(h, v.clone());
        }
    }
    out
}

async fn no_route() -> Error {
    Error::not_found("no such endpoint; see /openapi.json")
}

/// The handler of an operation served over HTTP (`None`: the operation has no HTTP
/// door). Exhaustive: a new operation must be given a door here, or none; each answers
/// the method the catalogue names (`tests/authz.rs` calls every one by it).
fn handler(op: Op) -> Option<MethodRouter<App>> {
    Some(match op {
        Op::OpenApi => get(openapi),
        Op::Jwks => get(jwks),
        Op::AgentCard => get(super::a2a::agent_card),
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
        Op::GetConversion => get(conversion),
        Op::GetReceipt => get(receipt),
        Op::GetStatement => get(statement),
        Op::ListLeads => get(leads),
        Op::ListAgents => get(agents),
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
        Op::RegisterInstrument => post(register_instrument),
        Op::GetInstrument => get(instrument),
        Op::EraseInstrument => delete(erase_instrument),
        Op::PaymentFile => get(payment_file),
        Op::ReconcilePayouts => post(reconcile),
        Op::ListPayouts => get(payouts),
        Op::OpenDispute => post(open_dispute),
        Op::ListDisputes => get(list_disputes),
        Op::GetDispute => get(get_dispute),
        Op::CommentDispute => post(dispute_step::<CommentBody>),
        Op::ResolveDispute => post(dispute_step::<ResolutionBody>),
        Op::WithdrawDispute => post(dispute_step::<WithdrawBody>),
        Op::Subscribe => post(subscribe),
        Op::ListSubscriptions => get(subscriptions),
        Op::GetSubscription => get(subscription),
        Op::Unsubscribe => delete(unsubscribe),
        Op::DeadLetters => get(dead_letters),
        Op::ReplayDeliveries => post(replay),
        Op::IssueToken => post(issue_token),
        Op::ListTokens => get(list_tokens),
        Op::RevokeToken => delete(revoke_token),
        Op::StartAudit => post(start_audit),
        Op::GetAudit => get(audit),
        Op::GetTask => return None,
    })
}

/// Every accepted connection answers at once: with Nagle's algorithm a response written
/// in parts waits for the client's acknowledgement of the first.
pub fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
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
    r.merge(super::workspace::routes())
        .route("/a2a", post(super::a2a::rpc))
        .nest_service("/mcp", super::mcp::http_service(app.clone(), listen))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // A declared length over the limit is refused before any of the body is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::map_response(as_problem))
        .with_state(app)
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
        let doc = super::super::openapi::build();
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

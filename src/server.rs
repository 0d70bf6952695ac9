//! The HTTP API (axum on tokio), for agents first: JSON under `/v1`, RFC 9457
//! problem+json errors, bearer tokens bound to a principal and scopes, an
//! `Idempotency-Key` on every write, and responses only after the write is durable.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use settle_engine::model::{AgentScope, Event, PartnerRole, ProgramSpec};

use crate::api::{
    self, App, ConversionBody, HandoffBody, LeadBody, Principal, Problem, RefundBody, bad, unprocessable,
};
use crate::keystore::{KeyFile, PrincipalKind, Scope};
use crate::service::{MAX_BATCH, Service, Submit, SubmitError};
use crate::webhooks::{ReplayBody, RetryPolicy, SubscribeBody, Webhooks};

/// Largest request body, bytes.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest a request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The OpenAPI 3.1 document (kept in `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../docs/openapi.json");

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

fn principal(app: &App, headers: &HeaderMap) -> Result<Principal, Problem> {
    Principal::from_authorization(app, headers.get(header::AUTHORIZATION))
}

fn idem_key(p: &Principal, headers: &HeaderMap) -> Result<String, Problem> {
    let k = headers.get("idempotency-key").ok_or_else(|| bad("every write needs an Idempotency-Key header"))?;
    let k = k.to_str().map_err(|_| bad("Idempotency-Key must be visible ASCII"))?;
    p.idempotency_key(k)
}

async fn write_one(
    app: &App,
    p: &Principal,
    headers: &HeaderMap,
    event: Event,
    request: Option<Value>,
) -> Result<Response, Problem> {
    let key = idem_key(p, headers)?;
    let o = api::write(app, p, key, event, request).await?;
    let status = if o.replayed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(api::OutcomeView::of(&o))).into_response())
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
    /// The agent's Ed25519 public key (JWK), for requests it signs itself.
    #[serde(default)]
    public_key: Option<settle_mandates::keys::Jwk>,
    scopes: Vec<AgentScope>,
    not_before: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    items: Vec<ConversionBody>,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct SettlementBody {
    settlement: String,
    #[serde(default)]
    batch: Option<String>,
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
struct PayoutBody {
    batch: String,
    partner: String,
    rail: String,
    mandate_ids: Vec<String>,
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
    write_one(&app, &p, &h, Event::ProgramPublished { spec: api::current_rules(body(b)?)? }, None).await
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
    let spec = api::current_rules(b.spec)?;
    write_one(&app, &p, &h, Event::ProgramAmended { spec, effective_from: b.effective_from }, None).await
}

async fn program(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    Ok(Json(api::program(&app, &p, &id)?).into_response())
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
            public_key: b.public_key,
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
    let e = body(b)?.event(&p)?;
    write_one(&app, &p, &h, e, None).await
}

async fn handoff(
    State(app): State<App>,
    UrlPath(id): UrlPath<String>,
    h: HeaderMap,
    b: Result<Json<HandoffBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let e = body(b)?.event(&p, id)?;
    write_one(&app, &p, &h, e, None).await
}

async fn convert(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<ConversionBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let b = body(b)?;
    let request = serde_json::to_value(&b).ok();
    let e = b.event(&p, Utc::now())?;
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
            Ok(o) => BatchItem::Done(api::OutcomeView::of(o)),
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

#[derive(serde::Serialize)]
struct BatchAnswer<'a> {
    results: Vec<BatchItem<'a>>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum BatchItem<'a> {
    Done(api::OutcomeView<'a>),
    Failed { detail: String, status: u16, title: &'static str },
}

async fn refund(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<RefundBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let e = body(b)?.event(&p)?;
    write_one(&app, &p, &h, e, None).await
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
    write_one(&app, &p, &h, e, None).await
}

async fn payout(
    State(app): State<App>,
    h: HeaderMap,
    b: Result<Json<PayoutBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::SettlementsWrite)?;
    let b = body(b)?;
    let e = Event::PayoutBatched { batch: b.batch, partner: b.partner, rail: b.rail, mandate_ids: b.mandate_ids };
    write_one(&app, &p, &h, e, None).await
}

async fn release(State(app): State<App>, UrlPath(id): UrlPath<String>, h: HeaderMap) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    p.require_vendor(Scope::SettlementsWrite)?;
    write_one(&app, &p, &h, Event::ConversionReleased { conversion: id }, None).await
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
    Ok(Json(api::balance(&app, &p, &id)?).into_response())
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
    b: Result<Json<SubscribeBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let key = idem_key(&p, &h)?;
    let b = body(b)?;
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
    b: Result<Json<ReplayBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let p = principal(&app, &h)?;
    let key = idem_key(&p, &h)?;
    let b = body(b)?;
    let hooks = hooks(&app)?;
    let (v, replayed) = tokio::task::block_in_place(|| hooks.replay(&p, &key, &id, &b))?;
    Ok((if replayed { StatusCode::OK } else { StatusCode::ACCEPTED }, Json(v)).into_response())
}

async fn jwks(State(app): State<App>) -> Result<Response, Problem> {
    Ok(Json(app.keys.jwks().map_err(api::internal)?).into_response())
}

async fn latest(State(app): State<App>) -> Result<Response, Problem> {
    Ok(Json(api::latest_checkpoint(&app)?).into_response())
}

#[derive(Deserialize)]
struct Consistency {
    from: u64,
    to: u64,
}

async fn consistency(State(app): State<App>, Query(q): Query<Consistency>) -> Result<Response, Problem> {
    Ok(Json(api::consistency(&app, q.from, q.to)?).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn no_route() -> Problem {
    api::not_found("no such endpoint; see /openapi.json")
}

/// The HTTP routes of `settle serve` (also served in-process by `settle load`).
pub fn router(app: App, listen: std::net::SocketAddr) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/agent-card.json", get(crate::a2a::agent_card))
        .route("/a2a", post(crate::a2a::rpc))
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
        .route("/v1/conversions/{id}/release", post(release))
        .route("/v1/refunds", post(refund))
        .route("/v1/payouts", post(payout))
        .route("/v1/settlements", post(settlement))
        .route("/v1/holds/advance", post(advance))
        .route("/v1/webhooks", post(subscribe).get(subscriptions))
        .route("/v1/webhooks/{id}", get(subscription).delete(unsubscribe))
        .route("/v1/webhooks/{id}/dead-letters", get(dead_letters))
        .route("/v1/webhooks/{id}/replay", post(replay))
        .nest_service("/mcp", crate::mcp::http_service(app.clone(), listen))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
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
        let tokens = keys.tokens.iter().map(|t| t.id.clone()).collect();
        let hooks = Webhooks::new(svc.clone(), keys.current()?, webhooks, extra_roots, tokens)?;
        hooks.start()?;
        let app = App { svc: svc.clone(), keys, base: format!("http://{listen}"), hooks: Some(hooks.clone()) };
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

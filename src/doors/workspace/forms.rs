//! The workspace's forms for what people do by hand: publish or amend a program (a JSON
//! editor whose errors show beside it), enroll or suspend a partner, record a refund,
//! book a payout, authorise or revoke an agent, start an audit, replay a webhook's dead
//! letters. Every form carries the session's CSRF token (checked in constant time before
//! anything else) and an idempotency key made when the form was shown, so a form sent
//! twice records once. Each builds the API's own request type from its fields, so the
//! same schema and the same rules decide, then records it as the signed-in person
//! through `crate::ops`, which authorises it by the catalogue.

use axum::extract::{Form, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use maud::{Markup, html};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use settle_engine::model::ProgramSpec;

use super::pages::{Viewer, layout};
use super::{Signed, html as page_html, refused};
use crate::auth::Principal;
use crate::auth::sessions::{csrf_ok, random_hex};
use crate::catalogue::Op;
use crate::error::{Error, Kind};
use crate::ops::commands::{self, AgentBody, AmendBody, Fact, PartnerBody, PayoutBody, ReasonBody, RefundBody};
use crate::ops::{App, audits, queries};
use crate::webhooks::ReplayBody;

/// The hidden fields every form that writes carries: the session's CSRF token and a
/// fresh idempotency key.
pub(super) fn hidden(v: &Viewer<'_>) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(v.csrf);
        input type="hidden" name="key" value=(random_hex());
    }
}

/// A form's fields in order (a checkbox's name repeats).
type Fields = Vec<(String, String)>;

fn field<'a>(f: &'a Fields, name: &str) -> &'a str {
    f.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
}

/// The API's request type `T` from `body`, as the API reads it (its schema's errors are
/// 400, in serde's words).
fn request<T: DeserializeOwned>(body: Value) -> Result<T, Error> {
    serde_json::from_value(body).map_err(|e| Error::malformed(e.to_string()))
}

/// 303 to `to`.
fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

/// The signed-in person of a form, its CSRF token checked, and the form's idempotency
/// key scoped to its token; or the answer to give instead.
fn sender(who: Signed, f: &Fields) -> Result<(Signed, String), Box<Response>> {
    if !csrf_ok(&who.csrf, field(f, "csrf")) {
        let e = Error::new(Kind::Forbidden, "this form is not from this session (CSRF token missing or wrong)");
        return Err(Box::new(refused(&who.viewer(), e)));
    }
    match who.p.idempotency_key(&format!("workspace:{}", field(f, "key"))) {
        Ok(key) => Ok((who, key)),
        Err(e) => Err(Box::new(refused(&who.viewer(), e))),
    }
}

/// Records the fact `make` builds from the form as the signed-in person, then sends the
/// browser to the page it names (303); a refusal is its page, with its status.
async fn act(
    app: &App,
    who: Signed,
    f: &Fields,
    make: impl FnOnce(&Principal) -> Result<(Fact, String), Error>,
) -> Response {
    let (who, key) = match sender(who, f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let done = async {
        let (fact, to) = make(&who.p)?;
        commands::record(app, &who.p, key, fact).await?;
        Ok::<_, Error>(to)
    };
    match done.await {
        Ok(to) => see_other(&to),
        Err(e) => refused(&who.viewer(), e),
    }
}

pub(super) async fn enroll(State(app): State<App>, who: Signed, Form(f): Form<Fields>) -> Response {
    act(&app, who, &f, |p| {
        let b: PartnerBody = request(json!({"partner": field(&f, "partner"), "program": field(&f, "program"),
            "name": field(&f, "name"), "role": field(&f, "role")}))?;
        let to = format!("/partners/{}", b.partner);
        Ok((b.fact(p)?, to))
    })
    .await
}

pub(super) async fn suspend(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<Fields>,
) -> Response {
    act(&app, who, &f, |p| {
        let b: ReasonBody = request(json!({"reason": field(&f, "reason")}))?;
        Ok((b.fact(p, id.clone())?, format!("/partners/{id}")))
    })
    .await
}

pub(super) async fn refund(State(app): State<App>, who: Signed, Form(f): Form<Fields>) -> Response {
    act(&app, who, &f, |p| {
        let (refund, conversion) = (field(&f, "refund"), field(&f, "conversion"));
        let mut body = json!({"refund": refund, "conversion": conversion});
        match field(&f, "size") {
            "full" => body["full"] = json!(true),
            "fraction" => body["fraction"] = json!(field(&f, "value")),
            _ => {
                body["amount"] = json!(field(&f, "value"));
                body["currency"] = json!(field(&f, "currency"));
            }
        }
        let b: RefundBody = request(body)?;
        Ok((b.fact(p)?, format!("/conversions/{conversion}")))
    })
    .await
}

/// Books a payout of everything partner `id` has payable now (up to the most one batch
/// holds), on the `book` rail.
pub(super) async fn book_payout(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<Fields>,
) -> Response {
    act(&app, who, &f, |p| {
        // Whoever may not book payouts learns nothing of the partner's mandates.
        crate::catalogue::allow(p, Op::CreatePayout, &[])?;
        let payable = payable_mandates(&app, &id);
        if payable.is_empty() {
            return Err(Error::rejected(format!("partner '{id}' has nothing payable")));
        }
        let b: PayoutBody = request(json!({"batch": field(&f, "batch"), "partner": id, "rail": "book",
            "mandate_ids": payable}))?;
        Ok((b.fact(p)?, format!("/payouts?partner={id}")))
    })
    .await
}

/// Partner `id`'s payable mandates, oldest first, as many as one batch holds.
pub(super) fn payable_mandates(app: &App, id: &str) -> Vec<String> {
    app.svc.with_state(|s| s.payable_mandates(id).take(settle_engine::model::MAX_SETTLEMENT_MANDATES).collect())
}

pub(super) async fn grant_agent(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<Fields>,
) -> Response {
    act(&app, who, &f, |p| {
        let scopes: Vec<&str> = f.iter().filter(|(k, _)| k == "scopes").map(|(_, v)| v.as_str()).collect();
        let days: i64 = field(&f, "days").parse().map_err(|_| Error::malformed("days must be a whole number"))?;
        if !(1..=3650).contains(&days) {
            return Err(Error::rejected("an agent is authorised for 1 to 3650 days"));
        }
        let now = Utc::now();
        let b: AgentBody = request(json!({"agent": field(&f, "agent"), "partner": id, "scopes": scopes,
            "not_before": now, "expires_at": now + Duration::days(days)}))?;
        Ok((b.fact(p)?, format!("/partners/{id}/agents")))
    })
    .await
}

pub(super) async fn revoke_agent(
    State(app): State<App>,
    who: Signed,
    UrlPath(agent): UrlPath<String>,
    Form(f): Form<Fields>,
) -> Response {
    let to = format!("/partners/{}/agents", field(&f, "partner"));
    act(&app, who, &f, |p| Ok((commands::revoke_agent(&app, p, agent)?, to))).await
}

pub(super) async fn start_audit(State(app): State<App>, who: Signed, Form(f): Form<Fields>) -> Response {
    let (who, _) = match sender(who, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match audits::start(&app, &who.p, Utc::now()) {
        Ok(_) => see_other("/audit"),
        Err(e) => refused(&who.viewer(), e),
    }
}

pub(super) async fn replay_webhook(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<Fields>,
) -> Response {
    let (who, key) = match sender(who, &f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let body = ReplayBody { dead_letters: true, from_seq: None };
    let done = crate::ops::admin::hooks(&app)
        .and_then(|hooks| tokio::task::block_in_place(|| hooks.replay(&who.p, &key, &id, &body)).map(|_| ()));
    match done {
        Ok(()) => see_other(&format!("/webhooks/{id}")),
        Err(e) => refused(&who.viewer(), e),
    }
}

/// The program editor: what it edits (a new program, or an amendment of one), its text,
/// and what was wrong with it last time.
struct Editor<'a> {
    amends: Option<&'a str>,
    text: &'a str,
    effective_from: &'a str,
    error: Option<String>,
}

/// The editor's page.
fn editor(v: &Viewer<'_>, e: &Editor<'_>) -> Markup {
    let (title, action) = match e.amends {
        Some(id) => (format!("Amend program {id}"), format!("/programs/{id}/amendments")),
        None => ("Publish a program".to_owned(), "/programs".to_owned()),
    };
    let body = html! {
        p { "The rules as JSON, checked against the same schema and rules as " code { "POST /v1/programs" }
            " (see docs/commission-rules.md). Nothing is recorded until they pass." }
        form method="post" action=(action) novalidate {
            (hidden(v))
            @if let Some(err) = &e.error {
                p.error id="spec-error" role="alert" { strong { "Not recorded: " } (err) }
            }
            p { label for="spec" { "Rules (JSON)" } br;
                textarea id="spec" name="spec" rows="24" cols="90" spellcheck="false" required
                    aria-invalid=(if e.error.is_some() { "true" } else { "false" })
                    aria-describedby=[e.error.as_ref().map(|_| "spec-error")] { (e.text) } }
            @if e.amends.is_some() {
                p { label for="effective_from" { "Effective from (RFC 3339, UTC) " }
                    input id="effective_from" name="effective_from" value=(e.effective_from) size="30" required; }
            }
            p { button type="submit" { (if e.amends.is_some() { "Record the amendment" } else { "Publish" }) } }
        }
    };
    layout(&title, Some(v), &body)
}

/// A new program's starting text.
fn template() -> String {
    let spec = json!({
        "program": "new-program",
        "name": "New partner program",
        "currency": "USD",
        "holding_days": 30,
        "attribution_window_days": 90,
        "pool_rounding": "half_even",
        "pool": {"percent": "10"},
        "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "50", "remaining": "closer"},
        "valid_from": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    serde_json::to_string_pretty(&spec).unwrap_or_default()
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) async fn new_program(who: Signed) -> Response {
    who.page(|p, v| {
        crate::catalogue::allow(p, Op::PublishProgram, &[])?;
        Ok(editor(v, &Editor { amends: None, text: &template(), effective_from: "", error: None }))
    })
}

pub(super) async fn amend_program(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    who.page(|p, v| {
        crate::catalogue::allow(p, Op::AmendProgram, &[])?;
        let pv = queries::program(&app, p, &id)?;
        let latest = pv.versions.last().map(|r| serde_json::to_string_pretty(&r.spec).unwrap_or_default());
        let now = now_text();
        Ok(editor(
            v,
            &Editor { amends: Some(&id), text: &latest.unwrap_or_default(), effective_from: &now, error: None },
        ))
    })
}

/// The editor's text as the API's request: a JSON syntax or schema error in serde's
/// words, with its line and column.
fn parse_spec(text: &str) -> Result<ProgramSpec, Error> {
    serde_json::from_str::<ProgramSpec>(text).map_err(|e| Error::malformed(format!("the rules are not valid: {e}")))
}

/// Records what the editor sent; on any refusal, the editor again with the text as sent
/// and the refusal beside it (with the refusal's status).
async fn submit_program(app: &App, who: Signed, f: &Fields, amends: Option<&str>) -> Response {
    let (who, key) = match sender(who, f) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (text, from) = (field(f, "spec"), field(f, "effective_from"));
    let done = async {
        let spec = parse_spec(text)?;
        let (fact, id) = match amends {
            None => {
                let id = spec.program.clone();
                (commands::publish(&who.p, spec)?, id)
            }
            Some(id) => {
                let at = DateTime::parse_from_rfc3339(from)
                    .map_err(|e| Error::malformed(format!("effective from must be an RFC 3339 time: {e}")))?
                    .with_timezone(&Utc);
                (AmendBody { spec, effective_from: at }.fact(&who.p, id)?, id.to_owned())
            }
        };
        commands::record(app, &who.p, key, fact).await?;
        Ok::<_, Error>(id)
    };
    match done.await {
        Ok(id) => see_other(&format!("/programs/{id}")),
        Err(e) if e.kind == Kind::Forbidden || e.kind == Kind::NotFound => refused(&who.viewer(), e),
        Err(e) => {
            let pr = super::Problem::from(e);
            let error = Some(pr.detail.clone());
            page_html(pr.status, &editor(&who.viewer(), &Editor { amends, text, effective_from: from, error }))
        }
    }
}

pub(super) async fn publish_program(State(app): State<App>, who: Signed, Form(f): Form<Fields>) -> Response {
    submit_program(&app, who, &f, None).await
}

pub(super) async fn record_amendment(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Form(f): Form<Fields>,
) -> Response {
    submit_program(&app, who, &f, Some(&id)).await
}

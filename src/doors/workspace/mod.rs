//! The workspace: web pages for people on `settle serve`, at `/`. One more door over the
//! same operations and authorisation as HTTP, MCP and A2A: a person signs in with an API
//! token (`crate::auth::sessions`), and every page asks the operations of `crate::ops` as
//! that token's principal, so a partner sees only its own pages (another partner's is
//! 404). Pages are rendered on the server (`pages`), with no script and no asset from
//! elsewhere; forms that write carry the session's CSRF token.

mod forms;
mod pages;
mod reports;

use axum::Router;
use axum::extract::{Form, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;

use chrono::Datelike;
use serde::Deserialize;
use settle_mandates::money::{Amount, Currency};

use super::problem::Problem;
use crate::auth::Principal;
use crate::auth::sessions::{csrf_ok, set_cookie};
use crate::catalogue::{Op, allow};
use crate::error::{Error, Kind};
use crate::ops::disputes::{self, DisputeQuery};
use crate::ops::{App, queries, reports as report_ops};
use pages::Viewer;

/// Partners on one page of the list.
const PAGE: usize = 50;

/// The workspace's routes.
pub fn routes() -> Router<App> {
    Router::new()
        .route("/", get(home))
        .route("/session", post(sign_in))
        .route("/session/end", post(sign_out))
        .route("/partners", get(partners).post(forms::enroll))
        .route("/partners/{id}", get(partner))
        .route("/partners/{id}/receipts/{mandate}", get(receipt))
        .route("/programs/{id}", get(program))
        .route("/conversions/{id}", get(conversion))
        .route("/disputes", get(disputes_page))
        .route("/partners/{id}/statement", get(reports::statement))
        .route("/partners/{id}/statement.csv", get(reports::statement_csv))
        .route("/partners/{id}/leads", get(reports::leads))
        .route("/partners/{id}/agents", get(reports::agents).post(forms::grant_agent))
        .route("/payouts", get(reports::payouts))
        .route("/audit", get(reports::audit).post(forms::start_audit))
        .route("/webhooks", get(reports::webhooks))
        .route("/webhooks/{id}", get(reports::webhook))
        .route("/webhooks/{id}/replay", post(forms::replay_webhook))
        .route("/programs", get(forms::new_program).post(forms::publish_program))
        .route("/programs/{id}/amendments", get(forms::amend_program).post(forms::record_amendment))
        .route("/partners/{id}/suspend", post(forms::suspend))
        .route("/partners/{id}/payouts", post(forms::book_payout))
        .route("/refunds", post(forms::refund))
        .route("/agents/{id}/revoke", post(forms::revoke_agent))
}

/// An HTML answer.
fn html(status: StatusCode, m: &maud::Markup) -> Response {
    let mut r = (status, Html(m.clone().into_string())).into_response();
    // Pages are never cached: they show money as of now, to one principal.
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A signed-in person: the principal its token resolves to now, and its session's CSRF
/// token.
struct Signed {
    p: Principal,
    by: String,
    csrf: String,
}

impl Signed {
    /// What the pages show of the viewer.
    fn viewer(&self) -> Viewer<'_> {
        Viewer {
            by: &self.by,
            vendor: self.p.is_vendor(),
            csrf: &self.csrf,
            me: self.p.partner.as_deref().filter(|_| !self.p.is_vendor()),
        }
    }

    /// A page made for this person, or its refusal as a page.
    fn answer(&self, made: Result<maud::Markup, Error>) -> Response {
        match made {
            Ok(m) => html(StatusCode::OK, &m),
            Err(e) => refused(&self.viewer(), e),
        }
    }

    /// The page `make` makes for this person, or its refusal.
    fn page(&self, make: impl FnOnce(&Principal, &Viewer<'_>) -> Result<maud::Markup, Error>) -> Response {
        self.answer(make(&self.p, &self.viewer()))
    }
}

/// A handler's signed-in person, or (its rejection) the sign-in page.
impl axum::extract::FromRequestParts<App> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &App) -> Result<Self, Response> {
        signed_in(app, &parts.headers).map_err(|r| *r)
    }
}

/// The signed-in person, or the answer to give instead: the sign-in page (no session, or
/// its token no longer authenticates).
fn signed_in(app: &App, h: &HeaderMap) -> Result<Signed, Box<Response>> {
    let Some((id, s)) = app.sessions.of(h) else {
        return Err(Box::new(html(StatusCode::UNAUTHORIZED, &pages::sign_in(None))));
    };
    match app.authenticator().token(&s.token) {
        Ok(p) => Ok(Signed { by: p.by(), p, csrf: s.csrf }),
        Err(e) => {
            app.sessions.close(&id);
            let mut r = html(StatusCode::UNAUTHORIZED, &pages::sign_in(Some(&e.detail)));
            if let Ok(v) = HeaderValue::from_str(&set_cookie("", h)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            Err(Box::new(r))
        }
    }
}

/// A refused or failed operation as a page, with its HTTP status.
fn refused(v: &Viewer<'_>, e: Error) -> Response {
    let pr = Problem::from(e);
    html(pr.status, &pages::problem(Some(v), pr.title, &pr.detail))
}

async fn home(State(app): State<App>, h: HeaderMap) -> Response {
    // No session yet: the sign-in page, as a page (200), not a refusal.
    if app.sessions.of(&h).is_none() {
        return html(StatusCode::OK, &pages::sign_in(None));
    }
    let who = match signed_in(&app, &h) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Some(me) = who.p.partner.as_deref().filter(|_| !who.p.is_vendor()) {
        return Redirect::to(&format!("/partners/{me}")).into_response();
    }
    who.answer(overview(&app, &who.p, &who.viewer()).await)
}

/// The vendor's overview: what moved this month and what every partner's books hold, by
/// currency; the latest checkpoint and audit; the programs; the disputes open and overdue.
async fn overview(app: &App, p: &Principal, v: &Viewer<'_>) -> Result<maud::Markup, Error> {
    allow(p, Op::GetBalance, &[])?;
    allow(p, Op::ListDisputes, &[])?;
    let now = chrono::Utc::now();
    let month = now.date_naive().with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)).map_or(now, |t| t.and_utc());
    let flows = report_ops::flows(app, p, month).await?;
    let (programs, held) = app.svc.with_state(|s| {
        let programs: Vec<(String, String, u32)> = s
            .programs
            .iter()
            .map(|(id, pr)| (id.clone(), pr.latest().spec.name.clone(), pr.latest().version))
            .collect();
        let mut sums: BTreeMap<Currency, [i128; 7]> = BTreeMap::new();
        for (id, b) in &s.books {
            let Some(cur) =
                s.partners.get(id).and_then(|pt| s.programs.get(&pt.program)).map(|pr| pr.latest().spec.currency)
            else {
                continue;
            };
            let t = sums.entry(cur).or_default();
            for (i, x) in
                [b.on_hold, b.payable, b.in_payout, b.earned, b.clawed_back, b.adjusted, b.paid].into_iter().enumerate()
            {
                t[i] += i128::from(x);
            }
        }
        (programs, sums)
    });
    let currencies: std::collections::BTreeSet<Currency> =
        held.keys().chain(flows.by_currency.keys()).copied().collect();
    let totals: Vec<pages::Totals> = currencies
        .into_iter()
        .map(|cur| {
            let f = flows.by_currency.get(&cur).copied().unwrap_or_default();
            let h = held.get(&cur).copied().unwrap_or_default();
            let minor = |x: i128| {
                i64::try_from(x)
                    .ok()
                    .and_then(|m| Amount::from_minor(m, cur).ok())
                    .map_or_else(|| x.to_string(), |a| a.to_decimal_string())
            };
            let dec = |d: rust_decimal::Decimal| format!("{:.*}", cur.exponent() as usize, d);
            pages::Totals {
                currency: cur,
                month: ["Earned", "Clawed back", "Adjusted (disputes)", "Paid"].into_iter().zip(f.map(dec)).collect(),
                now: ["On hold", "Payable", "In payout", "Earned", "Clawed back", "Adjusted (disputes)", "Paid"]
                    .into_iter()
                    .zip(h.map(minor))
                    .collect(),
            }
        })
        .collect();
    let checkpoint = queries::latest_checkpoint(app).ok();
    let audit = crate::ops::audits::latest(app, p)?;
    let all = disputes::disputes(app, p, &DisputeQuery { status: Some("open".into()), ..DisputeQuery::default() })?;
    let overdue = all.disputes.iter().filter(|d| d.overdue).count();
    let month_name = now.format("%B %Y").to_string();
    Ok(pages::overview(
        v,
        &programs,
        (&month_name, &totals),
        (checkpoint.as_ref(), audit.as_ref()),
        (all.disputes.len(), overdue),
    ))
}

/// The sign-in form's field.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(State(app): State<App>, h: HeaderMap, Form(f): Form<SignIn>) -> Response {
    let token = f.token.trim().to_owned();
    if let Err(e) = app.authenticator().token(&token) {
        return html(StatusCode::UNAUTHORIZED, &pages::sign_in(Some(&e.detail)));
    }
    let id = app.sessions.open(token);
    let mut r = Redirect::to("/").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&id, &h)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A form's CSRF token.
#[derive(Deserialize)]
struct Csrf {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(State(app): State<App>, h: HeaderMap, Form(f): Form<Csrf>) -> Response {
    let Some((id, s)) = app.sessions.of(&h) else { return Redirect::to("/").into_response() };
    if !csrf_ok(&s.csrf, &f.csrf) {
        let e = Error::new(Kind::Forbidden, "this form is not from this session (CSRF token missing or wrong)");
        let by = String::new();
        return refused(&Viewer { by: &by, vendor: false, csrf: &s.csrf, me: None }, e);
    }
    app.sessions.close(&id);
    let mut r = Redirect::to("/").into_response();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(&set_cookie("", &h)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The partners' list: a search, a sort, a page.
#[derive(Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: Option<usize>,
}

async fn partners(State(app): State<App>, who: Signed, Query(q): Query<ListQuery>) -> Response {
    who.page(|p, v| partner_list(&app, p, v, &q))
}

/// The vendor's list of partners (another principal finds no such page).
fn partner_list(app: &App, p: &Principal, v: &Viewer<'_>, q: &ListQuery) -> Result<maud::Markup, Error> {
    if !p.is_vendor() {
        return Err(Error::not_found("no such page"));
    }
    let needle = q.q.to_lowercase();
    let ids: Vec<(String, String)> = app.svc.with_state(|st| {
        st.partners
            .iter()
            .filter(|(id, pt)| {
                needle.is_empty() || id.to_lowercase().contains(&needle) || pt.name.to_lowercase().contains(&needle)
            })
            .map(|(id, pt)| (id.clone(), pt.name.clone()))
            .collect()
    });
    let mut rows = Vec::with_capacity(ids.len());
    for (id, name) in ids {
        rows.push(pages::PartnerRow { balance: queries::balance(app, p, &id)?, name });
    }
    let key = |d: &str| settle_mandates::money::parse_decimal(d).unwrap_or_default();
    match q.sort.as_str() {
        "payable" => rows.sort_by_key(|r| std::cmp::Reverse(key(&r.balance.payable))),
        "earned" => rows.sort_by_key(|r| std::cmp::Reverse(key(&r.balance.earned))),
        "paid" => rows.sort_by_key(|r| std::cmp::Reverse(key(&r.balance.paid))),
        _ => {}
    }
    let pages_n = rows.len().div_ceil(PAGE);
    let n = q.page.unwrap_or(1).clamp(1, pages_n.max(1));
    let shown: Vec<pages::PartnerRow> = rows.into_iter().skip((n - 1) * PAGE).take(PAGE).collect();
    let sort = if q.sort.is_empty() { "partner" } else { q.sort.as_str() };
    let programs: Vec<String> = app.svc.with_state(|s| s.programs.keys().cloned().collect());
    Ok(pages::partners(v, &shown, &programs, (&q.q, sort), (n, pages_n)))
}

async fn partner(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    let (p, v) = (&who.p, who.viewer());
    let made = async {
        let b = queries::balance(&app, p, &id)?;
        let m = queries::mandates(&app, p, id.clone(), None, Some(queries::MAX_PAGE)).await?;
        let d = disputes::disputes(&app, p, &DisputeQuery { partner: Some(id.clone()), ..DisputeQuery::default() })?;
        let statuses: Vec<String> = app.svc.with_state(|s| {
            let status = |m: &str| {
                let st = s.payout_item(m).map(|i| i.status)?;
                serde_json::to_value(st).ok()?.as_str().map(str::to_owned)
            };
            m.mandates.iter().map(|x| status(&x.mandate_id).unwrap_or_default()).collect()
        });
        let suspended = app.svc.with_state(|s| s.partners.get(&id).is_some_and(|x| x.suspended));
        let extra = pages::PartnerExtra {
            statuses,
            payable: forms::payable_mandates(&app, &id).len(),
            suspended,
            links: reports::partner_links(&id),
        };
        Ok(pages::partner(&v, &b, &m.mandates, &d.disputes, &extra))
    };
    who.answer(made.await)
}

/// A mandate's receipt as a file to keep: what `settle verify` and the kits check.
async fn receipt(State(app): State<App>, who: Signed, UrlPath((id, mandate)): UrlPath<(String, String)>) -> Response {
    match queries::receipt(&app, &who.p, &id, &mandate).and_then(|d| serde_json::to_vec(&d).map_err(Error::internal)) {
        Ok(bytes) => {
            let name = format!("attachment; filename=\"receipt-{mandate}.json\"");
            let mut r = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
            if let Ok(v) = HeaderValue::from_str(&name) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => refused(&who.viewer(), e),
    }
}

async fn program(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    who.page(|p, v| Ok(pages::program(v, &queries::program(&app, p, &id)?)))
}

async fn conversion(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    who.page(|p, v| Ok(pages::conversion(v, &queries::conversion(&app, p, &id)?)))
}

async fn disputes_page(State(app): State<App>, who: Signed, Query(q): Query<DisputeQuery>) -> Response {
    who.page(|p, v| Ok(pages::disputes(v, &disputes::disputes(&app, p, &q)?.disputes)))
}

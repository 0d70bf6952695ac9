//! The workspace's pages over the reports: payout batches and their mandates, a
//! partner's statement for a period (and as CSV), its leads, its agents, the audit of the
//! live log, and the webhook subscriptions with their dead letters. Each asks the
//! operation of `crate::ops` as the signed-in person, so the catalogue authorises it as
//! at every other door.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::forms::hidden;
use super::pages::{layout, money, urlencoding, utc};
use super::{Signed, refused};
use crate::auth::Principal;
use crate::error::Error;
use crate::ops::reports::{self, PayoutQuery, StatementQuery, StatementView};
use crate::ops::{App, admin, audits};

/// Statement lines shown on the page (the CSV holds them all).
const SHOWN_LINES: usize = 500;

pub(super) async fn payouts(State(app): State<App>, who: Signed, Query(q): Query<PayoutQuery>) -> Response {
    let list = reports::payouts(&app, &who.p, &q).await;
    let v = &who.viewer();
    who.answer(list.map(|list| {
        let body = html! {
            p { "Newest first, with each batch's mandates and their receipts." }
            @if list.batches.is_empty() { p { "No payout batch yet." } } @else {
                table {
                    caption { "Payout batches" }
                    thead { tr { th scope="col" { "Batch" } th scope="col" { "Partner" } th scope="col" { "Rail" }
                        th scope="col" { "Status" } th.n scope="col" { "Amount" } th.n scope="col" { "Offset" }
                        th scope="col" { "Mandates" } } }
                    tbody { @for b in &list.batches { tr {
                        td { (b.batch) }
                        td { a href=(format!("/partners/{}", b.partner)) { (b.partner) } }
                        td { (b.rail) } td { (b.status) }
                        td.n { (money(&b.amount.to_decimal_string(), b.amount.currency())) }
                        td.n { (money(&b.offset.to_decimal_string(), b.offset.currency())) }
                        td { @for m in &b.mandate_ids {
                            a href=(format!("/partners/{}/receipts/{m}", b.partner)) download { code { (m) } } " "
                        } }
                    } } }
                }
            }
        };
        layout("Payout batches", Some(v), &body)
    }))
}

/// A statement's period as the page's form sends it: UTC dates, both inclusive.
#[derive(Deserialize, Default)]
pub(super) struct PeriodForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl PeriodForm {
    /// The period as the operation takes it (`to` exclusive), and as the form shows it:
    /// this month so far when none is given.
    fn period(&self, now: DateTime<Utc>) -> Result<(StatementQuery, String, String), Error> {
        let date = |s: &str, what: &str| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| Error::malformed(format!("{what} must be a date such as 2026-12-01, not '{s}'")))
        };
        let today = now.date_naive();
        let from = if self.from.is_empty() { today.with_day(1).unwrap_or(today) } else { date(&self.from, "from")? };
        let to = if self.to.is_empty() { today } else { date(&self.to, "to")? };
        let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        let q = StatementQuery { from: at(from), to: at(to + Duration::days(1)) };
        Ok((q, from.to_string(), to.to_string()))
    }
}

async fn statement_of(
    app: &App,
    p: &Principal,
    id: &str,
    f: &PeriodForm,
) -> Result<(StatementView, String, String), Error> {
    let (q, from, to) = f.period(Utc::now())?;
    Ok((reports::statement(app, p, id.to_owned(), q).await?, from, to))
}

pub(super) async fn statement(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Query(f): Query<PeriodForm>,
) -> Response {
    let made = async {
        let (st, from, to) = statement_of(&app, &who.p, &id, &f).await?;
        let csv = format!("/partners/{id}/statement.csv?from={from}&to={to}");
        let body = html! {
            form method="get" action=(format!("/partners/{id}/statement")) {
                label for="from" { "From (UTC, inclusive) " } input id="from" name="from" type="date" value=(from) required;
                " " label for="to" { "To (UTC, inclusive) " } input id="to" name="to" type="date" value=(to) required;
                " " button type="submit" { "Show" }
            }
            p { a href=(csv) download { "Download this statement as CSV" } " (every line; the columns of "
                code { "settle statement" } ")." }
            @if st.lines.len() > SHOWN_LINES { p { "The first " (SHOWN_LINES) " of " (st.lines.len()) " lines; the CSV has them all." } }
            table {
                caption { "Statement lines, " (from) " to " (to) }
                thead { tr { th scope="col" { "Seq" } th scope="col" { "At" } th scope="col" { "Entry" }
                    th scope="col" { "Reference" } th scope="col" { "Mandate" } th.n scope="col" { "Amount" }
                    th.n scope="col" { "On hold" } th.n scope="col" { "Payable" } th.n scope="col" { "In payout" }
                    th.n scope="col" { "Paid" } } }
                tbody { @for l in st.lines.iter().take(SHOWN_LINES) {
                    @let m = |v: &str| l.currency.parse().map_or_else(|_| v.to_owned(), |c| money(v, c));
                    @let at = DateTime::parse_from_rfc3339(&l.at).map_or_else(|_| l.at.clone(), |t| utc(t.with_timezone(&Utc)));
                    tr {
                        td { (l.seq) } td { (at) } td { (l.entry) } td { (l.reference) } td { code { (l.mandate_id) } }
                        td.n { (m(&l.amount)) } td.n { (m(&l.on_hold)) } td.n { (m(&l.payable)) }
                        td.n { (m(&l.in_payout)) } td.n { (m(&l.paid)) }
                    }
                } }
            }
        };
        Ok(layout(&format!("Statement of {id}"), Some(&who.viewer()), &body))
    };
    who.answer(made.await)
}

/// The statement as a CSV file (the columns of `settle statement --format csv`).
pub(super) async fn statement_csv(
    State(app): State<App>,
    who: Signed,
    UrlPath(id): UrlPath<String>,
    Query(f): Query<PeriodForm>,
) -> Response {
    let made = async {
        let (st, from, to) = statement_of(&app, &who.p, &id, &f).await?;
        let mut out = Vec::new();
        crate::audit::write_csv(&st.lines, &mut out).map_err(Error::internal)?;
        Ok((out, format!("attachment; filename=\"statement-{id}-{from}-{to}.csv\"")))
    };
    match made.await {
        Ok((bytes, name)) => {
            let mut r = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response();
            if let Ok(v) = HeaderValue::from_str(&name) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => refused(&who.viewer(), e),
    }
}

pub(super) async fn leads(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    who.page(|p, v| {
        let list = reports::leads(&app, p, &id, Utc::now())?;
        let body = html! {
            p { "Leads " (id) " is on the referral chain of, newest first. A lead earns while its attribution window is "
                "open; a duplicate (another lead owns the customer) earns nothing." }
            @if list.leads.is_empty() { p { "No lead yet." } } @else {
                table {
                    caption { "Leads" }
                    thead { tr { th scope="col" { "Lead" } th scope="col" { "Customer" } th scope="col" { "Chain" }
                        th scope="col" { "Registered" } th scope="col" { "Attributable until" } th scope="col" { "Status" } } }
                    tbody { @for l in &list.leads { tr {
                        td { (l.lead) } td { (l.customer) } td { (l.chain.join(" → ")) }
                        td { (utc(l.registered_at)) } td { (utc(l.attributable_until)) }
                        td { (l.status) @if let Some(d) = &l.duplicate_of { " of " (d) } }
                    } } }
                }
            }
        };
        Ok(layout(&format!("Leads of {id}"), Some(v), &body))
    })
}

pub(super) async fn agents(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    who.page(|p, v| {
        let list = reports::agents(&app, p, &id, Utc::now())?;
        // What this person may grant: the agent scopes its own token holds.
        let grantable: Vec<&str> = ["read", "leads_write", "webhooks_write", "disputes_write"]
            .into_iter()
            .filter(|s| p.scopes.iter().any(|t| crate::catalogue::scope_name(*t) == *s))
            .collect();
        let may_manage = p.kind != crate::auth::PrincipalKind::PartnerAgent;
        let body = html! {
            @if list.agents.is_empty() { p { "No agent yet." } } @else {
                table {
                    caption { "Agents" }
                    thead { tr { th scope="col" { "Agent" } th scope="col" { "Scopes" } th scope="col" { "From" }
                        th scope="col" { "Until" } th scope="col" { "In force" } th scope="col" { "Revoke" } } }
                    tbody { @for a in &list.agents { tr {
                        td { (a.agent) }
                        td { (a.scopes.iter().map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()).collect::<Vec<_>>().join(", ")) }
                        td { (utc(a.not_before)) } td { (utc(a.expires_at)) }
                        td { @if a.current { "yes" } @else if a.revoked { "revoked" } @else { "no" } }
                        td { @if may_manage && !a.revoked {
                            form method="post" action=(format!("/agents/{}/revoke", a.agent)) {
                                (hidden(v)) input type="hidden" name="partner" value=(id);
                                button type="submit" aria-label=(format!("Revoke agent {}", a.agent)) { "Revoke" }
                            }
                        } }
                    } } }
                }
            }
            @if may_manage && !grantable.is_empty() {
                h2 { "Authorise an agent" }
                form method="post" action=(format!("/partners/{id}/agents")) {
                    (hidden(v))
                    p { label for="agent" { "Agent id " } input id="agent" name="agent" required pattern="[A-Za-z0-9._:-]{1,64}"; }
                    fieldset { legend { "Scopes (at most those your own token holds)" }
                        @for s in &grantable { label { input type="checkbox" name="scopes" value=(s); " " (s) } " " } }
                    p { label for="days" { "Valid for (days) " } input id="days" name="days" type="number" min="1" max="3650" value="90" required; }
                    p { button type="submit" { "Authorise" } }
                }
            }
        };
        Ok(layout(&format!("Agents of {id}"), Some(v), &body))
    })
}

pub(super) async fn audit(State(app): State<App>, who: Signed) -> Response {
    who.page(|p, v| {
        let run = audits::latest(&app, p)?;
        let running = run.as_ref().is_some_and(|r| r.status == "running");
        let body = html! {
            p { "An audit reads the whole live log again: every record's hash and chain link, the Merkle tree, every "
                "checkpoint's signature, every split and mandate derived again, and money conserved in every book. "
                "It runs in the background while the server goes on taking writes." }
            @if let Some(r) = &run {
                h2 { "Audit " (r.id) ", started " (utc(r.started_at)) " by " (r.started_by) }
                @match r.status.as_str() {
                    "running" => {
                        p { label for="progress" { "Records verified " }
                            progress id="progress" max=(r.records_at_start.max(1)) value=(r.records_verified.min(r.records_at_start)) {}
                            " " (r.records_verified) " of " (r.records_at_start) }
                        p role="status" { "Running: this page refreshes every two seconds." }
                    }
                    "passed" => {
                        @if let Some(f) = &r.finding {
                            p role="status" .ok { "Passed: " (f.records) " records, " (f.checkpoints) " checkpoints, "
                                (f.mandates) " mandates, " (f.partners) " books balanced." }
                            @match &f.checkpoint {
                                Some(c) => p { "It covered the signed checkpoint of " (c.size) " records, root " code { (c.root) } ", signed "
                                    (DateTime::from_timestamp(c.time, 0).map(utc).unwrap_or_default()) "; "
                                    (f.uncovered) " records after it were not yet signed over." },
                                None => p { "No signed checkpoint yet: " (f.uncovered) " records are not yet signed over." },
                            }
                        }
                    }
                    _ => { p.error role="alert" { "Failed: " (r.error.clone().unwrap_or_default()) } }
                }
                @if let Some(t) = r.finished_at { p { "Finished " (utc(t)) "." } }
            } @else { p { "No audit has run since the server started." } }
            @if !running {
                form method="post" action="/audit" { (hidden(v)) button type="submit" { "Audit the live log now" } }
            }
        };
        let page = layout("Audit", Some(v), &body);
        Ok(if running { refreshing(&page) } else { page })
    })
}

/// `m` with a refresh every two seconds (no script: the browser reloads it).
fn refreshing(m: &Markup) -> Markup {
    let s = m.clone().into_string().replacen("<head>", "<head><meta http-equiv=\"refresh\" content=\"2\">", 1);
    maud::PreEscaped(s)
}

pub(super) async fn webhooks(State(app): State<App>, who: Signed) -> Response {
    who.page(|p, v| {
        let list = admin::hooks(&app)?.list(p)?;
        let body = html! {
            p { "Signed deliveries of the log's events (Standard Webhooks). Subscribe over the API or an agent: "
                code { "POST /v1/webhooks" } "." }
            @if list.subscriptions.is_empty() { p { "No subscription." } } @else {
                table {
                    caption { "Subscriptions" }
                    thead { tr { th scope="col" { "Subscription" } th scope="col" { "URL" } th scope="col" { "Owner" }
                        th scope="col" { "Events" } th.n scope="col" { "Delivered up to" } th.n scope="col" { "Dead letters" } } }
                    tbody { @for s in &list.subscriptions { tr {
                        td { a href=(format!("/webhooks/{}", s.id)) { code { (s.id) } } }
                        td { (s.url) } td { (s.owner) }
                        td { @if s.events.is_empty() { "all" } @else { (s.events.join(", ")) } }
                        td.n { (s.cursor) } td.n { (s.dead_letters) }
                    } } }
                }
            }
        };
        Ok(layout("Webhooks", Some(v), &body))
    })
}

pub(super) async fn webhook(State(app): State<App>, who: Signed, UrlPath(id): UrlPath<String>) -> Response {
    who.page(|p, v| {
        let hooks = admin::hooks(&app)?;
        let s = hooks.get(p, &id)?;
        let dead = hooks.dead_letters(p, &id)?;
        let body = html! {
            p { "Delivers to " code { (s.url) } " for " (s.owner) ", from log position " (s.from_seq)
                "; delivered up to " (s.cursor) "." }
            h2 { "Dead letters" }
            @if dead.dead_letters.is_empty() { p { "None: every event was delivered." } } @else {
                table {
                    caption { "Dead letters" }
                    thead { tr { th scope="col" { "Webhook id" } th.n scope="col" { "Seq" } th scope="col" { "Event" }
                        th.n scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "Given up" } } }
                    tbody { @for d in &dead.dead_letters { tr {
                        td { code { (d.webhook_id) } } td.n { (d.seq) } td { (d.kind) } td.n { (d.attempts) }
                        td { (d.last_error) } td { (utc(d.failed_at)) }
                    } } }
                }
                @if v.vendor {
                    form method="post" action=(format!("/webhooks/{id}/replay")) {
                        (hidden(v)) button type="submit" { "Deliver the dead letters again" }
                    }
                }
            }
        };
        Ok(layout(&format!("Webhook {id}"), Some(v), &body))
    })
}

/// A link to partner `id`'s pages beside its own.
pub(super) fn partner_links(id: &str) -> Markup {
    let e = urlencoding(id);
    html! {
        p { a href=(format!("/partners/{e}/statement")) { "Statement" } " · "
            a href=(format!("/partners/{e}/leads")) { "Leads" } " · "
            a href=(format!("/partners/{e}/agents")) { "Agents" } " · "
            a href=(format!("/payouts?partner={e}")) { "Payout batches" } }
    }
}

//! The workspace's pages as HTML (maud: compiled in, no front-end toolchain): one layout,
//! the sign-in form, and a renderer per page. Money is shown from the exact decimal
//! strings the operations answer, grouped by thousands and with its currency's symbol;
//! times in UTC, with the zone shown.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::forms::hidden;
use settle_mandates::money::{Amount, Currency};

use crate::ops::audits::AuditView;
use crate::ops::disputes::DisputeView;
use crate::ops::queries::{BalanceView, CheckpointView, ConversionView, MandateItem, ProgramView};

/// The workspace's one stylesheet: system fonts, high contrast, visible focus.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#111;background:#fff;line-height:1.45}\
header{background:#123;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}\
header a{color:#fff}header form{margin-left:auto}main{padding:1rem 1.5rem;max-width:72rem}\
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border-bottom:1px solid #bbb;padding:.3rem .7rem;text-align:left}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}a{color:#0645ad}\
a:focus,button:focus,input:focus{outline:3px solid #f90;outline-offset:2px}\
.error{background:#fde;border:1px solid #a00;padding:.5rem;color:#600}button{padding:.3rem .8rem}\
.skip{position:absolute;left:-999px}.skip:focus{left:.5rem;top:.5rem;background:#fff;color:#0645ad;padding:.3rem;z-index:1}";

/// Who the page is for: the principal's name, and the CSRF token its forms carry.
pub struct Viewer<'a> {
    /// `vendor:ops`, `partner:p01`, ...
    pub by: &'a str,
    /// Whether the vendor's side is viewing.
    pub vendor: bool,
    /// The session's CSRF token.
    pub csrf: &'a str,
    /// The partner a partner's side acts for.
    pub me: Option<&'a str>,
}

/// A decimal string of `cur` (`"-1234.50"`) grouped by thousands, with the currency's
/// symbol where it has a common one (`-$1,234.50`), else its code after (`1,234.50 CHF`).
#[must_use]
pub fn money(decimal: &str, cur: Currency) -> String {
    let (neg, digits) = decimal.strip_prefix('-').map_or((false, decimal), |d| (true, d));
    let (int, frac) = digits.split_once('.').map_or((digits, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if let Some(f) = frac {
        grouped.push('.');
        grouped.push_str(f);
    }
    let sign = if neg { "-" } else { "" };
    match cur.code() {
        "USD" => format!("{sign}${grouped}"),
        "EUR" => format!("{sign}€{grouped}"),
        "GBP" => format!("{sign}£{grouped}"),
        "JPY" => format!("{sign}¥{grouped}"),
        code => format!("{sign}{grouped} {code}"),
    }
}

/// A time as UTC, the zone shown.
pub fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The layout: title, navigation for `who` (none before sign-in), the page.
pub fn layout(title: &str, who: Option<&Viewer<'_>>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · settle" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                a.skip href="#main" { "Skip to the page" }
                header {
                    strong { "settle" }
                    @if let Some(v) = who {
                        nav aria-label="Workspace" {
                            @if v.vendor {
                                a href="/" { "Overview" } " " a href="/partners" { "Partners" } " "
                            }
                            @if let Some(me) = v.me {
                                a href=(format!("/partners/{me}")) { "My page" } " "
                                a href=(format!("/partners/{me}/leads")) { "Leads" } " "
                                a href=(format!("/partners/{me}/statement")) { "Statement" } " "
                                a href=(format!("/partners/{me}/agents")) { "Agents" } " "
                            }
                            a href="/payouts" { "Payouts" } " "
                            a href="/disputes" { "Disputes" } " "
                            a href="/webhooks" { "Webhooks" }
                            @if v.vendor { " " a href="/audit" { "Audit" } }
                        }
                        span { "Signed in as " (v.by) }
                        form method="post" action="/session/end" {
                            input type="hidden" name="csrf" value=(v.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { h1 { (title) } (body) }
            }
        }
    }
}

/// The sign-in form, with what went wrong last time.
pub fn sign_in(error: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form method="post" action="/session" {
            p {
                label for="token" { "API token" } br;
                input id="token" name="token" type="password" autocomplete="off" required size="70";
            }
            p { button type="submit" { "Sign in" } }
        }
        p { "Sign in with an API token: the vendor's (" code { "settle keys token" } ") or a partner's. "
            "The session lasts eight hours; sign out ends it at once." }
    };
    layout("Sign in", None, &body)
}

/// A page saying what went wrong.
pub fn problem(who: Option<&Viewer<'_>>, title: &str, detail: &str) -> Markup {
    layout(title, who, &html! { p.error role="alert" { (detail) } p { a href="/" { "Back to the overview" } } })
}

/// A partner's balances as a table.
fn balance_table(b: &BalanceView) -> Markup {
    let rows = [
        ("Earned", &b.earned),
        ("Clawed back", &b.clawed_back),
        ("Adjusted (disputes)", &b.adjusted),
        ("On hold", &b.on_hold),
        ("Payable", &b.payable),
        ("In payout", &b.in_payout),
        ("Paid", &b.paid),
    ];
    html! {
        table {
            caption { "Balances in " (b.currency.code()) }
            @for (name, v) in rows { tr { th scope="row" { (name) } td.n { (money(v, b.currency)) } } }
        }
    }
}

/// One currency's money on the overview: what moved this month, what the books hold now.
pub struct Totals {
    /// The currency.
    pub currency: Currency,
    /// Earned, clawed back, adjusted, paid this month (decimal strings).
    pub month: Vec<(&'static str, String)>,
    /// On hold, payable, in payout now; earned, clawed back, adjusted, paid in all
    /// (decimal strings).
    pub now: Vec<(&'static str, String)>,
}

/// The vendor's overview: this month's flows and the books by currency, the latest
/// checkpoint and audit, programs, disputes.
pub fn overview(
    v: &Viewer<'_>,
    programs: &[(String, String, u32)],
    (month, totals): (&str, &[Totals]),
    (checkpoint, audit): (Option<&CheckpointView>, Option<&AuditView>),
    disputes: (usize, usize),
) -> Markup {
    let body = html! {
        h2 { "Money, all partners" }
        @for t in totals {
            table {
                caption { "In " (t.currency.code()) }
                tbody {
                    @for (name, value) in &t.month { tr { th scope="row" { (name) ", " (month) } td.n { (money(value, t.currency)) } } }
                    @for (i, (name, value)) in t.now.iter().enumerate() { tr {
                        th scope="row" { (name) @if i < 3 { ", now" } @else { ", all time" } }
                        td.n { (money(value, t.currency)) } } }
                }
            }
        }
        h2 { "Log" }
        @match checkpoint {
            Some(c) => p { "Latest signed checkpoint: " (c.size) " records, root " code { (c.root) } ", signed "
                (chrono::DateTime::from_timestamp(c.time, 0).map(utc).unwrap_or_default()) "." },
            None => p { "No checkpoint is signed yet." },
        }
        @match audit {
            Some(a) => p { "Latest " a href="/audit" { "audit" } " (" (a.id) ", started " (utc(a.started_at)) "): "
                strong { (a.status) } @if let Some(f) = &a.finding { ", " (f.records) " records verified" } "." },
            None => p { "The log has not been audited since the server started: " a href="/audit" { "audit it now" } "." },
        }
        h2 { "Programs" }
        p { a href="/programs" { "Publish a program" } }
        table {
            thead { tr { th scope="col" { "Program" } th scope="col" { "Name" } th.n scope="col" { "Rule versions" } } }
            tbody { @for (id, name, versions) in programs { tr {
                td { a href=(format!("/programs/{id}")) { (id) } } td { (name) } td.n { (versions) }
            } } }
        }
        h2 { "Disputes" }
        p { a href="/disputes?status=open" { (disputes.0) " open" } ", of which " (disputes.1) " overdue." }
    };
    layout("Overview", Some(v), &body)
}

/// One row of the partners' list.
pub struct PartnerRow {
    /// Its balance.
    pub balance: BalanceView,
    /// Its display name.
    pub name: String,
}

/// The vendor's list of partners: searched, sorted, a page of them.
pub fn partners(
    v: &Viewer<'_>,
    rows: &[PartnerRow],
    programs: &[String],
    (q, sort): (&str, &str),
    (page, pages): (usize, usize),
) -> Markup {
    let link = |s: &str, p: usize| format!("/partners?q={}&sort={s}&page={p}", urlencoding(q));
    let body = html! {
        form method="get" action="/partners" role="search" {
            label for="q" { "Search partners " }
            input id="q" name="q" type="search" value=(q);
            input type="hidden" name="sort" value=(sort);
            " " button type="submit" { "Search" }
        }
        table {
            thead { tr {
                th scope="col" { a href=(link("partner", 1)) { "Partner" } }
                th scope="col" { "Name" }
                th.n scope="col" { a href=(link("payable", 1)) { "Payable" } }
                th.n scope="col" { a href=(link("earned", 1)) { "Earned" } }
                th.n scope="col" { a href=(link("paid", 1)) { "Paid" } }
            } }
            tbody { @for r in rows { tr {
                td { a href=(format!("/partners/{}", r.balance.partner)) { (r.balance.partner) } }
                td { (r.name) }
                td.n { (money(&r.balance.payable, r.balance.currency)) }
                td.n { (money(&r.balance.earned, r.balance.currency)) }
                td.n { (money(&r.balance.paid, r.balance.currency)) }
            } } }
        }
        nav aria-label="Pages" {
            @if page > 1 { a href=(link(sort, page - 1)) rel="prev" { "Previous" } " " }
            "Page " (page) " of " (pages.max(1))
            @if page < pages { " " a href=(link(sort, page + 1)) rel="next" { "Next" } }
        }
        h2 { "Enroll a partner" }
        form method="post" action="/partners" {
            (hidden(v))
            p { label for="partner" { "Partner id " } input id="partner" name="partner" required pattern="[A-Za-z0-9._:-]{1,64}"; }
            p { label for="name" { "Name " } input id="name" name="name" required maxlength="256"; }
            p { label for="program" { "Program " } select id="program" name="program" required {
                @for id in programs { option value=(id) { (id) } } } }
            p { label for="role" { "Role " } select id="role" name="role" {
                @for r in ["partner", "connector", "receiver", "master"] { option value=(r) { (r) } } } }
            p { button type="submit" { "Enroll" } }
        }
    };
    layout("Partners", Some(v), &body)
}

/// What a partner's page shows beside its balances, mandates and disputes.
pub struct PartnerExtra {
    /// Each mandate's status (`payable`, `batched`, `paid`, ...), in the mandates' order.
    pub statuses: Vec<String>,
    /// Mandates payable now.
    pub payable: usize,
    /// Whether it is suspended.
    pub suspended: bool,
    /// Links to its other pages.
    pub links: Markup,
}

/// A partner's page: balances, mandates with their receipts, disputes; for the vendor,
/// the forms that book a payout and suspend it.
pub fn partner(
    v: &Viewer<'_>,
    b: &BalanceView,
    mandates: &[MandateItem],
    disputes: &[DisputeView],
    x: &PartnerExtra,
) -> Markup {
    let body = html! {
        p { "Program " a href=(format!("/programs/{}", b.program)) { (b.program) } "."
            @if x.suspended { strong { " Suspended: it earns nothing on new deals." } } }
        (x.links)
        (balance_table(b))
        @if v.vendor && x.payable > 0 {
            form method="post" action=(format!("/partners/{}/payouts", b.partner)) {
                (hidden(v))
                label for="batch" { "Book a payout of the " (x.payable) " payable mandates, batch id " }
                input id="batch" name="batch" required pattern="[A-Za-z0-9._:-]{1,64}"
                    value=(format!("po-{}-{}", b.partner, chrono::Utc::now().format("%Y%m%d%H%M%S")));
                " " button type="submit" { "Book payout" }
            }
        }
        h2 { "Mandates" }
        @if mandates.is_empty() { p { "No payment mandate yet." } } @else {
            table {
                thead { tr { th scope="col" { "Mandate" } th scope="col" { "Conversion" } th.n scope="col" { "Amount" }
                    th scope="col" { "Status" } th scope="col" { "Receipt" } } }
                tbody { @for (i, m) in mandates.iter().enumerate() { tr {
                    td { code { (m.mandate_id) } }
                    td { a href=(format!("/conversions/{}", m.conversion)) { (m.conversion) } }
                    td.n { (money(&m.amount.to_decimal_string(), m.amount.currency())) }
                    td { (x.statuses.get(i).map_or("", String::as_str)) }
                    td { a href=(format!("/partners/{}/receipts/{}", b.partner, m.mandate_id)) download {
                        "Download receipt" } }
                } } }
            }
        }
        h2 { "Disputes" }
        (dispute_table(disputes))
        @if v.vendor && !x.suspended {
            h2 { "Suspend" }
            form method="post" action=(format!("/partners/{}/suspend", b.partner)) {
                (hidden(v))
                label for="reason" { "Reason " } input id="reason" name="reason" required maxlength="256";
                " " button type="submit" { "Suspend " (b.partner) }
            }
        }
    };
    layout(&format!("Partner {}", b.partner), Some(v), &body)
}

/// A conversion's page: its referral chain drawn as a graph (each hop with its partner,
/// role, amount, status and what was clawed back), then the same as a table.
pub fn conversion(v: &Viewer<'_>, c: &ConversionView) -> Markup {
    const W: usize = 220;
    const GAP: usize = 60;
    let n = c.hops.len();
    let width = n * W + n.saturating_sub(1) * GAP + 20;
    let cur = c.pool.currency();
    let amount = |a: &Option<Amount>| a.map(|a| money(&a.to_decimal_string(), a.currency()));
    let body = html! {
        p { "Program " (c.program) ", rule version " (c.rule_version) ", " (c.status) ". Pool "
            (money(&c.pool.to_decimal_string(), cur))
            @if let Some(r) = &c.revenue { " of revenue " (money(&r.to_decimal_string(), r.currency())) }
            "." }
        svg role="img" aria-labelledby="chain-title" width=(width) height="150" viewBox=(format!("0 0 {width} 150"))
            xmlns="http://www.w3.org/2000/svg" font-family="system-ui, sans-serif" font-size="14" {
            title id="chain-title" { "The referral chain of " (c.conversion) ", originator first" }
            defs { marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto" {
                path d="M0,0 L10,5 L0,10 z" fill="#123" {} } }
            @for (i, h) in c.hops.iter().enumerate() {
                @let x = 10 + i * (W + GAP);
                rect x=(x) y="10" width=(W) height="130" rx="8" fill="#eef3f8" stroke="#123" stroke-width="2" {}
                text x=(x + 12) y="36" font-weight="bold" { (h.partner) }
                text x=(x + 12) y="58" { (h.role) }
                @if let Some(a) = amount(&h.amount) { text x=(x + 12) y="82" { (a) } }
                @if let Some(s) = &h.status { text x=(x + 12) y="104" { (s) } }
                @if let Some(cb) = &h.clawed_back { @if !cb.is_zero() {
                    text x=(x + 12) y="126" fill="#900" { "clawed back " (money(&cb.to_decimal_string(), cb.currency())) } } }
                @if i + 1 < n {
                    line x1=(x + W) y1="75" x2=(x + W + GAP - 4) y2="75" stroke="#123" stroke-width="2" marker-end="url(#arrow)" {}
                }
            }
        }
        table {
            caption { "Hops of " (c.conversion) }
            thead { tr { th scope="col" { "Hop" } th scope="col" { "Partner" } th scope="col" { "Role" }
                th.n scope="col" { "Amount" } th scope="col" { "Status" } th.n scope="col" { "Clawed back" } th scope="col" { "Receipt" } } }
            tbody { @for h in &c.hops { tr {
                td { (h.hop) } td { (h.partner) } td { (h.role) }
                td.n { (amount(&h.amount).unwrap_or_default()) }
                td { (h.status.clone().unwrap_or_default()) }
                td.n { (amount(&h.clawed_back).unwrap_or_default()) }
                td { @if let Some(m) = &h.mandate_id {
                    a href=(format!("/partners/{}/receipts/{m}", h.partner)) download { "Download receipt of " code { (m) } } } }
            } } }
        }
    };
    let refund = html! {
        @if v.vendor {
            h2 { "Record a refund" }
            form method="post" action="/refunds" {
                (hidden(v))
                input type="hidden" name="conversion" value=(c.conversion);
                input type="hidden" name="currency" value=(c.revenue.map_or(cur, |r| r.currency()).code());
                p { label for="refund" { "Refund id " } input id="refund" name="refund" required pattern="[A-Za-z0-9._:-]{1,64}"
                    value=(format!("rf-{}-{}", c.conversion, chrono::Utc::now().format("%Y%m%d%H%M%S"))); }
                fieldset { legend { "How much" }
                    label { input type="radio" name="size" value="full" checked; " All of it" } " "
                    label { input type="radio" name="size" value="amount"; " An amount of revenue" } " "
                    label { input type="radio" name="size" value="fraction"; " A fraction (0 to 1)" } }
                p { label for="value" { "Amount or fraction " } input id="value" name="value" inputmode="decimal"; }
                p { button type="submit" { "Record refund" } }
            }
        }
    };
    layout(&format!("Conversion {}", c.conversion), Some(v), &html! { (body) (refund) })
}

/// A program's page: every rule version, newest first, in plain words and as published.
pub fn program(v: &Viewer<'_>, p: &ProgramView) -> Markup {
    let body = html! {
        p { "Its standing authorisation (open mandate) is " code { (p.open_mandate) } "."
            @if v.vendor { " " a href=(format!("/programs/{}/amendments", p.program)) { "Amend its rules" } } }
        @for r in p.versions.iter().rev() {
            section aria-labelledby=(format!("v{}", r.version)) {
                h2 id=(format!("v{}", r.version)) { "Rule version " (r.version) ", from " (utc(r.effective_from)) }
                ul { @for line in &r.explanation { li { (line) } } }
                details {
                    summary { "The rules as published (JSON)" }
                    pre { (serde_json::to_string_pretty(&r.spec).unwrap_or_default()) }
                }
            }
        }
    };
    layout(&format!("Program {}", p.program), Some(v), &body)
}

/// Disputes as a table.
pub fn dispute_table(disputes: &[DisputeView]) -> Markup {
    html! {
        @if disputes.is_empty() { p { "No dispute." } } @else {
            table {
                thead { tr {
                    th scope="col" { "Dispute" } th scope="col" { "Partner" } th scope="col" { "Status" }
                    th.n scope="col" { "Claimed" } th scope="col" { "Due" } th scope="col" { "Statement" }
                } }
                tbody { @for d in disputes { tr {
                    td { (d.dispute) } td { (d.partner) }
                    td { (d.status.as_str()) @if d.overdue { " (overdue)" } }
                    td.n { @if let Some(c) = &d.claimed { (money(c, d.currency)) } }
                    td { (utc(d.due_at)) } td { (d.statement) }
                } } }
            }
        }
    }
}

/// The disputes page.
pub fn disputes(v: &Viewer<'_>, disputes: &[DisputeView]) -> Markup {
    layout("Disputes", Some(v), &dispute_table(disputes))
}

/// `s` for a query string (RFC 3986 unreserved characters kept).
pub fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_grouped_and_symbolled() {
        let usd: Currency = "USD".parse().unwrap();
        let chf: Currency = "CHF".parse().unwrap();
        let jpy: Currency = "JPY".parse().unwrap();
        assert_eq!(money("1234567.89", usd), "$1,234,567.89");
        assert_eq!(money("-1000.00", usd), "-$1,000.00");
        assert_eq!(money("999.10", chf), "999.10 CHF");
        assert_eq!(money("123456", jpy), "¥123,456");
        assert_eq!(money("0.00", usd), "$0.00");
    }
}

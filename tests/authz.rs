//! The authorisation matrix: every operation × every kind of principal × its own and
//! another partner's target, at every door (HTTP, MCP, A2A), against the policy as
//! docs/agents.md ("Who may do what") states it, written here from that table and not
//! from the code. A partner's answers never name another partner's data.
//!
//! The table below is also the list of operations each door must offer: the test fails
//! when the OpenAPI document, the MCP tool list or the A2A agent card has an operation
//! the table lacks, or lacks one it has.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use support::*;

/// Who may call an operation (docs/agents.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Callers {
    Anyone,
    Vendor,
    /// A vendor administrator, not the vendor's agents.
    VendorAdmin,
    VendorOrPartner,
    /// The partner's own token, not its agents: managing its agents.
    VendorOrPartnerItself,
    /// A vendor administrator or the partner's own token (no agent): bank details.
    VendorAdminOrPartnerItself,
}

/// What the operation is about, where it matters whose it is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum About {
    Nothing,
    /// A partner's data (another's: 404).
    Data,
    /// A write in a partner's name (another's: 403).
    Name,
    /// A program (another's: 404).
    Program,
    /// A lead (one another holds: 404).
    Lead,
    /// An agent (another's: 404).
    Agent,
    /// A grant to an agent (for another: 403; more than the token holds: 403).
    Grant,
    /// Scopes given to a new token (more than the token holds: 403).
    Scopes,
    /// A dispute (another partner's: 404).
    Dispute,
    /// A conversion (one the partner is not on: 404).
    Conversion,
}

/// One row of the policy.
struct Rule {
    name: &'static str,
    http: Option<(&'static str, &'static str)>,
    mcp: Option<&'static str>,
    a2a: Option<&'static str>,
    callers: Callers,
    vendor_scope: Option<&'static str>,
    partner_scope: Option<&'static str>,
    /// A second scope every caller needs too.
    also: Option<&'static str>,
    about: About,
}

const fn rule(
    name: &'static str,
    http: Option<(&'static str, &'static str)>,
    callers: Callers,
    scope: Option<&'static str>,
    about: About,
) -> Rule {
    Rule { name, http, mcp: None, a2a: None, callers, vendor_scope: scope, partner_scope: scope, also: None, about }
}

impl Rule {
    const fn mcp(mut self, t: &'static str) -> Self {
        self.mcp = Some(t);
        self
    }
    const fn a2a(mut self, t: &'static str) -> Self {
        self.a2a = Some(t);
        self
    }
    const fn also(mut self, s: &'static str) -> Self {
        self.also = Some(s);
        self
    }
    const fn partner_needs_no_scope(mut self) -> Self {
        self.partner_scope = None;
        self
    }
}

use About::*;
use Callers::*;

const READ: Option<&str> = Some("read");
const PROGRAMS: Option<&str> = Some("programs_write");
const LEADS: Option<&str> = Some("leads_write");
const CONVERSIONS: Option<&str> = Some("conversions_write");
const REFUNDS: Option<&str> = Some("refunds_write");
const SETTLEMENTS: Option<&str> = Some("settlements_write");
const HOOKS: Option<&str> = Some("webhooks_write");
const TOKENS: Option<&str> = Some("tokens_write");
const DISPUTES: Option<&str> = Some("disputes_write");

/// The policy, from docs/agents.md.
const RULES: &[Rule] = &[
    rule("getOpenApi", Some(("GET", "/openapi.json")), Anyone, None, Nothing),
    rule("getJwks", Some(("GET", "/.well-known/jwks.json")), Anyone, None, Nothing),
    rule("getAgentCard", Some(("GET", "/.well-known/agent-card.json")), Anyone, None, Nothing),
    rule("getLatestCheckpoint", Some(("GET", "/v1/checkpoints/latest")), Anyone, None, Nothing).mcp("get_checkpoint"),
    rule("getConsistencyProof", Some(("GET", "/v1/checkpoints/consistency")), Anyone, None, Nothing),
    rule("verifyReceipt", None, Anyone, None, Nothing).mcp("verify_receipt"),
    rule("publishProgram", Some(("POST", "/v1/programs")), Vendor, PROGRAMS, Nothing),
    rule("getProgram", Some(("GET", "/v1/programs/{id}")), VendorOrPartner, READ, Program).mcp("describe_program"),
    rule("amendProgram", Some(("POST", "/v1/programs/{id}/amendments")), Vendor, PROGRAMS, Nothing),
    rule("enrollPartner", Some(("POST", "/v1/partners")), Vendor, PROGRAMS, Nothing),
    rule("suspendPartner", Some(("POST", "/v1/partners/{id}/suspend")), Vendor, PROGRAMS, Nothing),
    rule("getBalance", Some(("GET", "/v1/partners/{id}/balance")), VendorOrPartner, READ, Data)
        .mcp("get_balance")
        .a2a("balance"),
    rule("listMandates", Some(("GET", "/v1/partners/{id}/mandates")), VendorOrPartner, READ, Data).mcp("list_mandates"),
    rule("getConversion", Some(("GET", "/v1/conversions/{id}")), VendorOrPartner, READ, Conversion)
        .mcp("get_conversion"),
    rule("getReceipt", Some(("GET", "/v1/partners/{id}/receipts/{mandate}")), VendorOrPartner, READ, Data)
        .mcp("get_receipt")
        .a2a("receipt"),
    rule("getStatement", Some(("GET", "/v1/partners/{id}/statement")), VendorOrPartner, READ, Data),
    rule("listLeads", Some(("GET", "/v1/partners/{id}/leads")), VendorOrPartner, READ, Data).mcp("list_leads"),
    rule("listAgents", Some(("GET", "/v1/partners/{id}/agents")), VendorOrPartner, READ, Data),
    rule("authoriseAgent", Some(("POST", "/v1/agents")), VendorOrPartnerItself, PROGRAMS, Grant)
        .partner_needs_no_scope(),
    rule("revokeAgent", Some(("POST", "/v1/agents/{id}/revoke")), VendorOrPartnerItself, PROGRAMS, Agent)
        .partner_needs_no_scope(),
    rule("registerLead", Some(("POST", "/v1/leads")), VendorOrPartner, LEADS, Name).mcp("register_lead").a2a("lead"),
    rule("handOffLead", Some(("POST", "/v1/leads/{id}/handoffs")), VendorOrPartner, LEADS, Lead)
        .mcp("hand_off_lead")
        .a2a("handoff"),
    rule("recordConversion", Some(("POST", "/v1/conversions")), Vendor, CONVERSIONS, Nothing)
        .mcp("record_conversion")
        .a2a("conversion"),
    rule("recordConversions", Some(("POST", "/v1/conversions/batch")), Vendor, CONVERSIONS, Nothing),
    rule("releaseConversion", Some(("POST", "/v1/conversions/{id}/release")), Vendor, SETTLEMENTS, Nothing),
    rule("recordRefund", Some(("POST", "/v1/refunds")), Vendor, REFUNDS, Nothing).mcp("record_refund").a2a("refund"),
    rule("createPayout", Some(("POST", "/v1/payouts")), Vendor, SETTLEMENTS, Nothing),
    rule("recordSettlement", Some(("POST", "/v1/settlements")), Vendor, SETTLEMENTS, Nothing),
    rule("advanceHolds", Some(("POST", "/v1/holds/advance")), Vendor, SETTLEMENTS, Nothing),
    // Bank details: a vendor administrator, or the partner itself, for the partner (no agent).
    rule(
        "registerPayoutInstrument",
        Some(("POST", "/v1/partners/{id}/payout-instrument")),
        VendorAdminOrPartnerItself,
        SETTLEMENTS,
        Name,
    ),
    rule("getPayoutInstrument", Some(("GET", "/v1/partners/{id}/payout-instrument")), VendorOrPartner, READ, Data),
    rule(
        "erasePayoutInstrument",
        Some(("DELETE", "/v1/partners/{id}/payout-instrument")),
        VendorAdminOrPartnerItself,
        SETTLEMENTS,
        Name,
    ),
    rule("getPaymentFile", Some(("GET", "/v1/payouts/{id}/pain.001")), Vendor, SETTLEMENTS, Nothing),
    rule("reconcilePayouts", Some(("POST", "/v1/payouts/reconcile")), Vendor, SETTLEMENTS, Nothing),
    rule("listPayouts", Some(("GET", "/v1/payouts")), VendorOrPartner, READ, Data),
    // Disputes: a partner opens, comments on and withdraws its own; resolving is the
    // vendor's, and moves money.
    rule("openDispute", Some(("POST", "/v1/disputes")), VendorOrPartner, DISPUTES, Name)
        .mcp("open_dispute")
        .a2a("dispute"),
    rule("listDisputes", Some(("GET", "/v1/disputes")), VendorOrPartner, READ, Data)
        .mcp("list_disputes")
        .a2a("disputes"),
    rule("getDispute", Some(("GET", "/v1/disputes/{id}")), VendorOrPartner, READ, Dispute).mcp("get_dispute"),
    rule("commentOnDispute", Some(("POST", "/v1/disputes/{id}/comments")), VendorOrPartner, DISPUTES, Dispute)
        .mcp("comment_on_dispute"),
    rule("resolveDispute", Some(("POST", "/v1/disputes/{id}/resolution")), Vendor, SETTLEMENTS, Nothing)
        .mcp("resolve_dispute")
        .a2a("resolution"),
    rule("withdrawDispute", Some(("POST", "/v1/disputes/{id}/withdraw")), VendorOrPartner, DISPUTES, Dispute)
        .mcp("withdraw_dispute"),
    // A subscription delivers what `read` shows: it needs both.
    rule("subscribeWebhook", Some(("POST", "/v1/webhooks")), VendorOrPartner, HOOKS, Nothing).also("read"),
    rule("listWebhooks", Some(("GET", "/v1/webhooks")), VendorOrPartner, READ, Nothing),
    rule("getWebhook", Some(("GET", "/v1/webhooks/{id}")), VendorOrPartner, READ, Data),
    rule("deleteWebhook", Some(("DELETE", "/v1/webhooks/{id}")), VendorOrPartner, HOOKS, Data),
    rule("listDeadLetters", Some(("GET", "/v1/webhooks/{id}/dead-letters")), VendorOrPartner, READ, Data),
    rule("replayWebhook", Some(("POST", "/v1/webhooks/{id}/replay")), Vendor, HOOKS, Nothing),
    rule("issueToken", Some(("POST", "/v1/tokens")), VendorAdmin, TOKENS, Scopes),
    rule("listTokens", Some(("GET", "/v1/tokens")), VendorAdmin, TOKENS, Nothing),
    rule("revokeToken", Some(("DELETE", "/v1/tokens/{id}")), VendorAdmin, TOKENS, Nothing),
    // An audit of the live log, in the background: the vendor's, records nothing.
    rule("startAudit", Some(("POST", "/v1/audits")), Vendor, READ, Nothing),
    rule("getAudit", Some(("GET", "/v1/audits/{id}")), Vendor, READ, Nothing),
];

const ALL_SCOPES: [&str; 9] = [
    "programs_write",
    "leads_write",
    "conversions_write",
    "refunds_write",
    "settlements_write",
    "read",
    "webhooks_write",
    "tokens_write",
    "disputes_write",
];
const AGENT_GRANTS: [&str; 4] = ["read", "leads_write", "webhooks_write", "disputes_write"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    NoToken,
    UnknownToken,
    /// A partner agent whose grant is revoked, expired or not yet valid.
    DeadAgent,
    VendorAdmin,
    VendorAgent,
    Partner,
    PartnerAgent,
}

/// A caller: its kind, its token and the scopes it holds in effect.
struct Who {
    label: String,
    kind: Kind,
    token: Option<String>,
    scopes: BTreeSet<&'static str>,
}

fn cli_scope(s: &str) -> String {
    s.replace('_', "-")
}

/// What the policy says `who` gets for `r` on its own (`own`) or another partner's target.
fn expected(who: &Who, r: &Rule, own: bool) -> Result<(), u16> {
    if r.callers == Anyone {
        return Ok(());
    }
    if matches!(who.kind, Kind::NoToken | Kind::UnknownToken | Kind::DeadAgent) {
        return Err(401);
    }
    let vendor = matches!(who.kind, Kind::VendorAdmin | Kind::VendorAgent);
    if r.callers == Vendor && !vendor {
        return Err(403);
    }
    if r.callers == VendorAdmin && who.kind != Kind::VendorAdmin {
        return Err(403);
    }
    if r.callers == VendorAdminOrPartnerItself && matches!(who.kind, Kind::PartnerAgent | Kind::VendorAgent) {
        return Err(403);
    }
    if r.callers == VendorOrPartnerItself && who.kind == Kind::PartnerAgent {
        return Err(403);
    }
    let scope = if vendor { r.vendor_scope } else { r.partner_scope };
    if [scope, r.also].into_iter().flatten().any(|s| !who.scopes.contains(s)) {
        return Err(403);
    }
    // The grant or token asked for below has `read`: never more than the giver holds.
    if (r.about == Grant && (own || vendor) || r.about == Scopes) && !who.scopes.contains("read") {
        return Err(403);
    }
    if vendor || own {
        return Ok(());
    }
    match r.about {
        Nothing => Ok(()),
        Data | Program | Lead | Agent | Dispute | Conversion => Err(404),
        Name | Grant | Scopes => Err(403),
    }
}

struct World {
    admin: Api,
    p2_full: Api,
    p1_full: Api,
    addr: std::net::SocketAddr,
    n: AtomicU64,
    /// A mandate, a subscription and a dispute of p1 and of p2, the latest checkpoint size.
    md: [String; 2],
    hook: [String; 2],
    dispute: [String; 2],
    size: u64,
    receipt: Value,
}

impl World {
    fn next(&self) -> u64 {
        self.n.fetch_add(1, Ordering::Relaxed)
    }

    fn partner(own: bool) -> &'static str {
        if own { "p1" } else { "p2" }
    }

    /// A fresh payable mandate of p1 (own) or p2: a conversion on their lead.
    fn fresh_mandate(&self, own: bool) -> String {
        self.fresh_conversion(own).0
    }

    /// A fresh conversion on p1's (own) or p2's lead: its first mandate and its id.
    fn fresh_conversion(&self, own: bool) -> (String, String) {
        let n = self.next();
        let lead = if own { "l1" } else { "l2" };
        let v = self.admin.post_expect(
            "/v1/conversions",
            &format!("fm{n}"),
            &json!({"conversion": format!("fm{n}"), "lead": lead, "revenue": "100.00", "currency": "USD"}),
            201,
        );
        (v["mandates"][0]["mandate_id"].as_str().expect("mandate").to_owned(), format!("fm{n}"))
    }

    /// A fresh dispute's opening for p1 (`own`) or p2, of a fresh conversion on its lead.
    fn dispute_body(&self, own: bool) -> Value {
        let n = self.next();
        let conversion = self.fresh_conversion(own).1;
        json!({"dispute": format!("ds{n}"), "partner": Self::partner(own), "claimed": "1.00", "statement": "too little",
            "subject": {"kind": "conversion", "conversion": conversion}})
    }

    /// A fresh open dispute of p1 (`own`) or p2, opened by the vendor on its behalf.
    fn fresh_dispute(&self, own: bool) -> String {
        self.fresh_dispute_by(own, true)
    }

    /// A fresh open dispute of p1 (`own`) or p2, opened by the vendor on its behalf or
    /// (`vendor` false) by the partner itself: a dispute is withdrawn by the side that
    /// opened it.
    fn fresh_dispute_by(&self, own: bool, vendor: bool) -> String {
        let b = self.dispute_body(own);
        let id = b["dispute"].as_str().expect("id").to_owned();
        let opener = match (vendor, own) {
            (true, _) => &self.admin,
            (false, true) => &self.p1_full,
            (false, false) => &self.p2_full,
        };
        opener.post_expect("/v1/disputes", &id, &b, 201);
        id
    }

    fn fresh_subscription(&self, own: bool) -> String {
        let n = self.next();
        let api = if own { &self.p1_full } else { &self.p2_full };
        let body = json!({"url": format!("http://127.0.0.1:9/hooks/{n}")});
        api.post_expect("/v1/webhooks", &format!("sub{n}"), &body, 201)["id"].as_str().expect("id").to_owned()
    }

    /// The HTTP request of `r` for a target of p1 (`own`) or p2, by a caller of the
    /// vendor's side (`vendor`) or a partner's: method, path, body.
    fn http_request(&self, r: &Rule, own: bool, vendor: bool) -> (String, String, Option<Value>) {
        let n = self.next();
        let p = Self::partner(own);
        let now = Utc::now();
        let (m, path) = r.http.expect("an HTTP door");
        let (path, body) = match r.name {
            "getConsistencyProof" => (format!("{path}?from={0}&to={0}", self.size), None),
            "publishProgram" => (path.into(), Some(program_spec(&format!("prg{n}")))),
            "getProgram" => (format!("/v1/programs/{}", if own { "growth" } else { "other" }), None),
            "amendProgram" => (
                "/v1/programs/growth/amendments".into(),
                Some(json!({"spec": program_spec("growth"), "effective_from": now.to_rfc3339()})),
            ),
            "enrollPartner" => (
                path.into(),
                Some(json!({"partner": format!("e{n}"), "program": "growth", "name": "E", "role": "partner"})),
            ),
            "suspendPartner" => {
                let id = format!("s{n}");
                self.admin.post_expect("/v1/partners", &format!("s{n}"), &enroll_body(&id, "growth"), 201);
                (format!("/v1/partners/{id}/suspend"), Some(json!({"reason": "test"})))
            }
            "getBalance" => (format!("/v1/partners/{p}/balance"), None),
            "listMandates" => (format!("/v1/partners/{p}/mandates"), None),
            "getConversion" => (format!("/v1/conversions/{}", self.fresh_conversion(own).1), None),
            "getReceipt" => (format!("/v1/partners/{p}/receipts/{}", self.md[usize::from(!own)]), None),
            "getStatement" => (format!("/v1/partners/{p}/statement"), None),
            "listLeads" => (format!("/v1/partners/{p}/leads"), None),
            "listAgents" => (format!("/v1/partners/{p}/agents"), None),
            "listPayouts" => (format!("{path}?partner={p}"), None),
            "getAudit" => {
                let r = self.admin.post("/v1/audits", &format!("au{n}"), &json!({}));
                assert!([200, 202].contains(&r.status), "POST /v1/audits: {}", r.text());
                (format!("/v1/audits/{}", r.json()["id"].as_str().expect("id")), None)
            }
            "authoriseAgent" => (
                path.into(),
                Some(json!({"agent": format!("g{n}"), "partner": p, "scopes": ["read"],
                    "not_before": (now - Duration::hours(1)).to_rfc3339(), "expires_at": (now + Duration::days(1)).to_rfc3339()})),
            ),
            "revokeAgent" => {
                let id = format!("r{n}");
                let grant = json!({"agent": id, "partner": p, "scopes": ["read"],
                    "not_before": (now - Duration::hours(1)).to_rfc3339(), "expires_at": (now + Duration::days(1)).to_rfc3339()});
                self.admin.post_expect("/v1/agents", &id, &grant, 201);
                (format!("/v1/agents/{id}/revoke"), Some(json!({})))
            }
            "registerLead" => (path.into(), Some(duplicate_of_p2s_customer(&format!("n{n}"), p))),
            "handOffLead" => {
                let id = format!("h{n}");
                let mut b = lead_body(&id, "growth", p);
                b["customer"] = json!(format!("h{n}.example"));
                self.admin.post_expect("/v1/leads", &id, &b, 201);
                (format!("/v1/leads/{id}/handoffs"), Some(json!({"from": p, "to": "p3"})))
            }
            "recordConversion" => (
                path.into(),
                Some(json!({"conversion": format!("c{n}"), "lead": "l1", "revenue": "10.00", "currency": "USD"})),
            ),
            "recordConversions" => (
                path.into(),
                Some(
                    json!({"items": [{"conversion": format!("b{n}"), "lead": "l1", "revenue": "10.00", "currency": "USD"}]}),
                ),
            ),
            // Never held: past authorisation, the engine refuses (409).
            "releaseConversion" => ("/v1/conversions/fm0/release".into(), None),
            "recordRefund" => {
                let conv = self.fresh_conversion(true).1;
                (path.into(), Some(json!({"refund": format!("f{n}"), "conversion": conv, "full": true})))
            }
            "createPayout" => {
                let md = self.fresh_mandate(own);
                (
                    path.into(),
                    Some(json!({"batch": format!("b{n}"), "partner": p, "rail": "book", "mandate_ids": [md]})),
                )
            }
            "recordSettlement" => {
                let md = self.fresh_mandate(own);
                (
                    path.into(),
                    Some(
                        json!({"settlement": format!("st{n}"), "partner": p, "rail": "book", "mandate_ids": [md], "confirmation_id": format!("c{n}")}),
                    ),
                )
            }
            "advanceHolds" => (path.into(), Some(json!({}))),
            "registerPayoutInstrument" => (format!("/v1/partners/{p}/payout-instrument"), Some(account())),
            "getPayoutInstrument" => {
                // Another principal's call may have erased it.
                self.admin.post_expect(
                    &format!("/v1/partners/{p}/payout-instrument"),
                    &format!("pi{n}"),
                    &account(),
                    201,
                );
                (format!("/v1/partners/{p}/payout-instrument"), None)
            }
            "erasePayoutInstrument" => (format!("/v1/partners/{p}/payout-instrument"), None),
            "getPaymentFile" => {
                self.admin.post_expect("/v1/partners/p1/payout-instrument", &format!("pi{n}"), &account(), 201);
                let md = self.fresh_mandate(true);
                let batch = json!({"batch": format!("bank{n}"), "partner": "p1", "rail": "bank", "mandate_ids": [md]});
                self.admin.post_expect("/v1/payouts", &format!("bb{n}"), &batch, 201);
                (format!("/v1/payouts/bank{n}/pain.001"), None)
            }
            // A notification (its XML as a string): its entries match nothing here.
            "reconcilePayouts" => (path.into(), Some(Value::String(CAMT054.into()))),
            "openDispute" => (path.into(), Some(self.dispute_body(own))),
            "listDisputes" => (format!("{path}?partner={p}"), None),
            "getDispute" => (format!("/v1/disputes/{}", self.dispute[usize::from(!own)]), None),
            "commentOnDispute" => {
                (format!("/v1/disputes/{}/comments", self.fresh_dispute(own)), Some(json!({"text": "see the receipt"})))
            }
            "resolveDispute" => (
                format!("/v1/disputes/{}/resolution", self.fresh_dispute(own)),
                Some(json!({"outcome": "rejected", "reason": "as published"})),
            ),
            "withdrawDispute" => {
                (format!("/v1/disputes/{}/withdraw", self.fresh_dispute_by(own, vendor)), Some(json!({})))
            }
            "subscribeWebhook" => (path.into(), Some(json!({"url": format!("http://127.0.0.1:9/new/{n}")}))),
            "listWebhooks" => (path.into(), None),
            "getWebhook" => (format!("/v1/webhooks/{}", self.hook[usize::from(!own)]), None),
            "deleteWebhook" => (format!("/v1/webhooks/{}", self.fresh_subscription(own)), None),
            "listDeadLetters" => (format!("/v1/webhooks/{}/dead-letters", self.hook[usize::from(!own)]), None),
            "replayWebhook" => (format!("/v1/webhooks/{}/replay", self.hook[1]), Some(json!({"dead_letters": true}))),
            "issueToken" => {
                (path.into(), Some(json!({"kind": "partner", "subject": "p1", "scopes": ["read"], "expires_in": 3600})))
            }
            "revokeToken" => {
                let body = json!({"kind": "partner", "subject": "p1", "scopes": ["read"]});
                let t = self.admin.post_expect("/v1/tokens", &format!("t{n}"), &body, 201);
                (format!("/v1/tokens/{}", t["id"].as_str().expect("id")), None)
            }
            _ => (path.into(), None),
        };
        let body = if m == "POST" { Some(body.unwrap_or_else(|| json!({}))) } else { body };
        (m.into(), path, body)
    }

    /// Deletes what a webhook call left (a principal holds at most 20 subscriptions).
    fn clean_up(&self, r: &Rule, path: &str, resp: &Resp) {
        let id = match r.name {
            "deleteWebhook" => path.rsplit('/').next().map(str::to_owned),
            "subscribeWebhook" if resp.status == 201 => resp.json()["id"].as_str().map(str::to_owned),
            _ => None,
        };
        if let Some(id) = id {
            let auth = format!("Bearer {}", self.admin.token.as_deref().expect("admin token"));
            let key = format!("cleanup-{id}");
            let h = [("Authorization", auth.as_str()), ("Idempotency-Key", key.as_str())];
            let r = http(self.addr, "DELETE", &format!("/v1/webhooks/{id}"), &h, None).expect("DELETE");
            assert!([204, 404].contains(&r.status), "clean-up of {id}: {}", r.text());
        }
    }

    fn send(&self, who: &Who, method: &str, path: &str, body: Option<&Value>, key: &str) -> Resp {
        let auth = who.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("Authorization", a));
        }
        let bytes = body.map(|b| match b {
            Value::String(xml) => xml.clone().into_bytes(),
            b => serde_json::to_vec(b).expect("json"),
        });
        if let Some(Value::String(_)) = body {
            h.push(("Content-Type", "application/xml"));
            h.push(("Idempotency-Key", key));
        } else if bytes.is_some() {
            h.push(("Content-Type", "application/json"));
            h.push(("Accept", "application/json, text/event-stream"));
            h.push(("Idempotency-Key", key));
        } else if method == "DELETE" {
            h.push(("Idempotency-Key", key));
        }
        if path == "/a2a" {
            h.push(("A2A-Version", "1.0")); // no header is A2A 0.3, which is refused
        }
        http(self.addr, method, path, &h, bytes.as_deref()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }
}

/// A bank's camt.054 notification (made with pyiso20022; tests/vectors/bank).
const CAMT054: &str = include_str!("vectors/bank/camt.054.001.08.xml");

/// A partner's bank account, as a registration's body.
fn account() -> Value {
    json!({"holder": "Partner One GmbH", "iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"})
}

/// The statuses that mean "past authorisation" for `r`.
fn allowed_statuses(r: &Rule) -> &'static [u16] {
    match r.name {
        "releaseConversion" => &[409],
        "replayWebhook" | "startAudit" => &[200, 202],
        _ => &[200, 201, 202, 204],
    }
}

/// A registration of p2's customer: a partner learns only that it is taken, never by
/// which lead.
fn duplicate_of_p2s_customer(lead: &str, partner: &str) -> Value {
    json!({"lead": lead, "program": "growth", "customer": "p2-customer.example", "partner": partner})
}

/// Whether an answer to `who` names p2's data that its request did not name: the lead
/// that owns the customer p2 registered, p2's mandate, p2's webhook subscription, p2's
/// dispute.
fn names_secrets(w: &World, who: &Who, asked: &str, text: &str) -> bool {
    let secrets = ["l2", w.md[1].as_str(), w.hook[1].as_str(), w.dispute[1].as_str()];
    !matches!(who.kind, Kind::VendorAdmin | Kind::VendorAgent)
        && secrets
            .iter()
            .filter(|s| !asked.contains(*s))
            .any(|s| text.contains(&format!("\"{s}\"")) || text.contains(&format!("'{s}'")))
}

fn setup(dir: &std::path::Path) -> (std::path::PathBuf, Vec<Who>, String, String, String) {
    let data = dir.join("d");
    keys_create(&data);
    // The vendor's own account, the debtor of payment files.
    let debtor = ["payouts", "debtor", "--name", "Vendor Inc.", "--iban", "GB82WEST12345698765432", "--data"];
    settle_ok(debtor.iter().map(std::ffi::OsStr::new).chain([data.as_os_str()]));
    let all = ALL_SCOPES.iter().map(|s| cli_scope(s)).collect::<Vec<_>>().join(",");
    let admin = token(&data, "vendor-admin", "ops", None, &all);
    let mut whos = vec![
        Who { label: "no token".into(), kind: Kind::NoToken, token: None, scopes: BTreeSet::new() },
        Who {
            label: "unknown token".into(),
            kind: Kind::UnknownToken,
            token: Some(format!("stl_{}", "0".repeat(64))),
            scopes: BTreeSet::new(),
        },
    ];
    let mut add = |label: String, kind: Kind, tok: String, scopes: &[&'static str]| {
        whos.push(Who { label, kind, token: Some(tok), scopes: scopes.iter().copied().collect() });
    };
    for (kind, cli, subject) in
        [(Kind::VendorAdmin, "vendor-admin", "v-admin"), (Kind::VendorAgent, "vendor-agent", "v-agent")]
    {
        for s in ALL_SCOPES {
            add(format!("{cli} [{s}]"), kind, token(&data, cli, subject, None, &cli_scope(s)), &[s]);
        }
        add(format!("{cli} [all]"), kind, token(&data, cli, subject, None, &all), &ALL_SCOPES);
    }
    for s in ALL_SCOPES {
        add(format!("partner [{s}]"), Kind::Partner, token(&data, "partner", "p1", None, &cli_scope(s)), &[s]);
    }
    add("partner [all]".into(), Kind::Partner, token(&data, "partner", "p1", None, &all), &ALL_SCOPES);
    for g in AGENT_GRANTS {
        let t = token(&data, "partner-agent", &format!("ag-{g}"), Some("p1"), &all);
        add(format!("partner agent [grant {g}]"), Kind::PartnerAgent, t, &[g]);
    }
    let t = token(&data, "partner-agent", "ag-all", Some("p1"), &all);
    add("partner agent [grant all]".into(), Kind::PartnerAgent, t, &AGENT_GRANTS);
    for dead in ["ag-revoked", "ag-expired", "ag-early"] {
        let t = token(&data, "partner-agent", dead, Some("p1"), &all);
        add(format!("partner agent [{dead}]"), Kind::DeadAgent, t, &[]);
    }
    let p1 = token(&data, "partner", "p1", None, &all);
    let p2 = token(&data, "partner", "p2", None, &all);
    (data, whos, admin, p1, p2)
}

fn populate(server: &Server, admin: &str, p1: &str, p2: &str) -> World {
    let a = server.api(Some(admin));
    for prg in ["growth", "other"] {
        a.post_expect("/v1/programs", prg, &program_spec(prg), 201);
    }
    for (p, prg) in [("p1", "growth"), ("p2", "growth"), ("p3", "growth"), ("p9", "other")] {
        a.post_expect("/v1/partners", p, &enroll_body(p, prg), 201);
    }
    a.post_expect("/v1/leads", "l1", &lead_body("l1", "growth", "p1"), 201);
    let mut l2 = lead_body("l2", "growth", "p2");
    l2["customer"] = json!("p2-customer.example");
    a.post_expect("/v1/leads", "l2", &l2, 201);
    let now = Utc::now();
    let grant = |id: &str, scopes: &[&str], from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>| {
        let b = json!({"agent": id, "partner": "p1", "scopes": scopes, "not_before": from.to_rfc3339(), "expires_at": to.to_rfc3339()});
        a.post_expect("/v1/agents", id, &b, 201);
    };
    let (past, future) = (now - Duration::hours(1), now + Duration::days(1));
    for g in AGENT_GRANTS {
        grant(&format!("ag-{g}"), &[g], past, future);
    }
    grant("ag-all", &AGENT_GRANTS, past, future);
    grant("ag-revoked", &AGENT_GRANTS, past, future);
    a.post_expect("/v1/agents/ag-revoked/revoke", "rv", &json!({}), 201);
    grant("ag-expired", &AGENT_GRANTS, now - Duration::days(2), now - Duration::days(1));
    grant("ag-early", &AGENT_GRANTS, now + Duration::days(1), now + Duration::days(2));
    let mut w = World {
        admin: a.clone(),
        p1_full: server.api(Some(p1)),
        p2_full: server.api(Some(p2)),
        addr: server.addr,
        n: AtomicU64::new(0),
        md: [String::new(), String::new()],
        hook: [String::new(), String::new()],
        dispute: [String::new(), String::new()],
        size: 0,
        receipt: Value::Null,
    };
    w.md = [w.fresh_mandate(true), w.fresh_mandate(false)];
    w.hook = [w.fresh_subscription(true), w.fresh_subscription(false)];
    w.dispute = [w.fresh_dispute(true), w.fresh_dispute(false)];
    // Wait for a checkpoint that covers both mandates, so their receipts exist.
    // The receipt verifyReceipt is given is p1's own.
    let receipt = wait_for("receipts", 30, || {
        let r = a.get(&format!("/v1/partners/p1/receipts/{}", w.md[0]));
        (r.status == 200 && a.get(&format!("/v1/partners/p2/receipts/{}", w.md[1])).status == 200).then(|| r.json())
    });
    w.receipt = receipt;
    w.size = a.get("/v1/checkpoints/latest").json()["size"].as_u64().expect("size");
    w
}

#[test]
fn every_operation_every_principal_every_door_answers_as_the_policy_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, whos, admin, p1, p2) = setup(dir.path());
    let server = Server::start_with(&data, dir.path(), &["--webhook-allow-private"]);
    let w = populate(&server, &admin, &p1, &p2);
    let mut failures = Vec::new();
    let mut checked = 0usize;
    for who in &whos {
        for r in RULES {
            for own in [true, false] {
                let want = expected(who, r, own);
                // One call at one door: (what was called, the refusal's status or None, text).
                let mut calls: Vec<(String, Option<u16>, String, String)> = Vec::new();
                if r.http.is_some() {
                    let (m, path, body) = w.http_request(r, own, vendor_side(who));
                    let key = format!("k{}", w.next());
                    let resp = w.send(who, &m, &path, body.as_ref(), &key);
                    w.clean_up(r, &path, &resp);
                    let refused = (!allowed_statuses(r).contains(&resp.status)).then_some(resp.status);
                    let asked = format!("{path} {}", body.as_ref().map(Value::to_string).unwrap_or_default());
                    calls.push((format!("HTTP {m} {path}"), refused, resp.text(), asked));
                }
                if let Some(tool) = r.mcp {
                    let (refused, text, asked) = mcp_call(&w, who, tool, own);
                    calls.push((format!("MCP {tool}"), refused, text, asked));
                }
                if let Some(intent) = r.a2a {
                    let (refused, text, asked) = a2a_send(&w, who, intent, own);
                    calls.push((format!("A2A {intent}"), refused, text, asked));
                }
                for (what, refused, text, asked) in calls {
                    checked += 1;
                    if refused != want.err() || names_secrets(&w, who, &asked, &text) {
                        failures.push(format!(
                            "{what} as {} ({}): want {want:?}, got {refused:?} {}",
                            who.label,
                            if own { "own" } else { "other" },
                            &text[..text.len().min(200)]
                        ));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} calls disagree with the policy:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 2000, "the matrix covers every door ({checked} calls)");
    server.stop();
}

/// Whether `who` is of the vendor's side.
fn vendor_side(who: &Who) -> bool {
    matches!(who.kind, Kind::VendorAdmin | Kind::VendorAgent)
}

/// The arguments of an MCP tool / A2A intent for a target of p1 (`own`) or p2, by a
/// caller of the vendor's side (`vendor`) or a partner's.
fn agent_args(w: &World, name: &str, own: bool, vendor: bool) -> Value {
    let n = w.next();
    let p = World::partner(own);
    match name {
        "register_lead" | "lead" => duplicate_of_p2s_customer(&format!("m{n}"), p),
        "hand_off_lead" | "handoff" => {
            let id = format!("mh{n}");
            let mut b = lead_body(&id, "growth", p);
            b["customer"] = json!(format!("mh{n}.example"));
            w.admin.post_expect("/v1/leads", &id, &b, 201);
            json!({"lead": id, "from": p, "to": "p3"})
        }
        "record_conversion" | "conversion" => {
            json!({"conversion": format!("mc{n}"), "lead": "l1", "revenue": "10.00", "currency": "USD"})
        }
        "record_refund" | "refund" => {
            json!({"refund": format!("mf{n}"), "conversion": w.fresh_conversion(true).1, "full": true})
        }
        "get_balance" | "balance" | "list_mandates" | "list_leads" => json!({"partner": p}),
        "get_receipt" | "receipt" => json!({"partner": p, "mandate_id": w.md[usize::from(!own)]}),
        "get_conversion" => json!({"conversion": w.fresh_conversion(own).1}),
        "verify_receipt" => json!({"receipt": w.receipt}),
        "get_checkpoint" => json!({}),
        "describe_program" => json!({"program": if own { "growth" } else { "other" }}),
        "open_dispute" | "dispute" => w.dispute_body(own),
        "list_disputes" | "disputes" => json!({"partner": p}),
        "get_dispute" => json!({"dispute": w.dispute[usize::from(!own)]}),
        "comment_on_dispute" => json!({"dispute": w.fresh_dispute(own), "text": "see the receipt"}),
        "resolve_dispute" | "resolution" => json!({"dispute": w.fresh_dispute(own),
            "resolution": {"outcome": "rejected", "reason": "as published"}}),
        "withdraw_dispute" => json!({"dispute": w.fresh_dispute_by(own, vendor)}),
        other => panic!("no arguments for {other}"),
    }
}

/// Calls an MCP tool over streamable HTTP: the refusal's status (`None`: not refused)
/// and the answer's text.
fn mcp_call(w: &World, who: &Who, tool: &str, own: bool) -> (Option<u16>, String, String) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": agent_args(w, tool, own, vendor_side(who))}});
    let r = w.send(who, "POST", "/mcp", Some(&body), "unused");
    let v = r.json();
    let res = &v["result"];
    assert!(res.is_object(), "tools/call {tool}: {v}");
    let status = if res["isError"] == true {
        Some(res["structuredContent"]["status"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(0))
    } else {
        None
    };
    (status, r.text(), body.to_string())
}

/// Sends an A2A message: the refusal's status (`None`: the task completed) and the text.
fn a2a_send(w: &World, who: &Who, intent: &str, own: bool) -> (Option<u16>, String, String) {
    let n = w.next();
    let data = json!({intent: agent_args(w, intent, own, vendor_side(who))});
    let body = json!({"jsonrpc": "2.0", "id": n, "method": "SendMessage", "params": {"message": {
        "messageId": format!("msg{n}"), "role": "ROLE_USER", "parts": [{"data": data, "mediaType": "application/json"}]}}});
    let r = w.send(who, "POST", "/a2a", Some(&body), "unused");
    if r.status != 200 {
        return (Some(r.status), r.text(), body.to_string());
    }
    let v = r.json();
    let task = &v["result"]["task"];
    let status = match task["status"]["state"].as_str() {
        Some("TASK_STATE_COMPLETED") => None,
        _ => Some(
            task.pointer("/status/message/parts/1/data/status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(0),
        ),
    };
    (status, r.text(), body.to_string())
}

#[test]
fn every_door_offers_exactly_the_operations_of_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    keys_create(&data);
    let server = Server::start(&data, dir.path());
    let api = server.api(None);
    // HTTP: the OpenAPI document's operations.
    let doc = api.get("/openapi.json").json();
    let mut served = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            // `/a2a` and `/mcp` are transports: their operations are checked below.
            if ["get", "post", "delete", "put", "patch"].contains(&method.as_str()) && path != "/a2a" && path != "/mcp"
            {
                served.insert((
                    method.to_uppercase(),
                    path.clone(),
                    op["operationId"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    let want: BTreeSet<(String, String, String)> =
        RULES.iter().filter_map(|r| r.http.map(|(m, p)| (m.to_owned(), p.to_owned(), r.name.to_owned()))).collect();
    assert_eq!(served, want, "the OpenAPI document's operations are the policy's");
    // MCP: the tools.
    let list = http(
        server.addr,
        "POST",
        "/mcp",
        &[("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")],
        Some(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string().as_bytes()),
    )
    .expect("tools/list")
    .json();
    let tools: BTreeSet<String> = list["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_owned())
        .collect();
    let want: BTreeSet<String> = RULES.iter().filter_map(|r| r.mcp.map(str::to_owned)).collect();
    assert_eq!(tools, want, "the MCP tools are the policy's");
    // A2A: the agent card's skills, one per intent.
    let card = api.get("/.well-known/agent-card.json").json();
    let skills: BTreeSet<String> =
        card["skills"].as_array().expect("skills").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect();
    let intents: BTreeSet<&str> = RULES.iter().filter_map(|r| r.a2a).collect();
    assert_eq!(skills.len(), intents.len(), "one skill per A2A intent: {skills:?} vs {intents:?}");
    server.stop();
}

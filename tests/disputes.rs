//! Disputes end to end, over HTTP and A2A against `settle serve` (MCP: the official SDK's
//! client in tests/agents.rs): a partner's agent opens one with evidence, both sides
//! comment, the vendor accepts it over A2A; the adjustment mandate is paid in a payout
//! batch, its receipt verifies offline with `settle verify`, and the statement shows it. A
//! partner never sees another's dispute, refusals change nothing, and the store audits.

mod support;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use support::*;

/// An A2A `SendMessage` with one data part; the task it answers.
fn a2a(server: &Server, token: &str, message_id: &str, data: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": message_id, "method": "SendMessage", "params": {"message": {
        "messageId": message_id, "role": "ROLE_USER", "parts": [{"data": data, "mediaType": "application/json"}]}}});
    let auth = format!("Bearer {token}");
    let bytes = serde_json::to_vec(&body).expect("json");
    let h = [("Authorization", auth.as_str()), ("Content-Type", "application/json"), ("A2A-Version", "1.0")];
    let r = http(server.addr, "POST", "/a2a", &h, Some(&bytes)).expect("POST /a2a");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["result"]["task"].clone()
}

/// The result of a completed task (panics with the task otherwise).
fn completed(task: &Value) -> Value {
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{task}");
    task["artifacts"][0]["parts"][0]["data"].clone()
}

#[test]
fn a_dispute_is_opened_by_an_agent_resolved_over_a2a_paid_and_proved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    keys_create(&data);
    let all = "programs-write,leads-write,conversions-write,refunds-write,settlements-write,read,disputes-write";
    let admin = token(&data, "vendor-admin", "ops", None, all);
    let p1 = token(&data, "partner", "p1", None, "read,disputes-write");
    let p2 = token(&data, "partner", "p2", None, "read,disputes-write");
    let agent = token(&data, "partner-agent", "ag2", Some("p2"), "read,disputes-write");
    let server = Server::start(&data, dir.path());
    let a = server.api(Some(&admin));
    // Pool 100.00: p1 (originator) 30.00, p2 (closer) 70.00.
    let (_, md2) = two_hop_deal(&a, "1000.00");
    // p2 grants its agent the right to dispute (a grant never exceeds its token).
    let now = Utc::now();
    let grant = json!({"agent": "ag2", "partner": "p2", "scopes": ["read", "disputes_write"],
        "not_before": (now - Duration::hours(1)).to_rfc3339(), "expires_at": (now + Duration::days(1)).to_rfc3339()});
    server.api(Some(&p2)).post_expect("/v1/agents", "g", &grant, 201);

    // The agent opens a dispute of p2's mandate, with evidence.
    let ag = server.api(Some(&agent));
    let opening = json!({"dispute": "ds1", "partner": "p2", "subject": {"kind": "mandate", "mandate": md2},
        "claimed": "10.00", "statement": "the closer's share should be 80%", "evidence": [format!("receipt {md2}")]});
    let opened = ag.post_expect("/v1/disputes", "ds1", &opening, 201);
    assert_eq!(opened["events"][0]["type"], "dispute_opened", "{opened}");
    assert_eq!(opened["events"][0]["by"], "agent:ag2", "{opened}");
    // The same request again is the same answer; a partner acts in its own name only.
    assert_eq!(ag.post("/v1/disputes", "ds1", &opening).status, 200);
    let mut in_p1 = opening.clone();
    in_p1["partner"] = json!("p1");
    in_p1["dispute"] = json!("ds9");
    assert_eq!(ag.post("/v1/disputes", "ds9", &in_p1).status, 403);
    // Another partner's dispute is not found, even by a partner on its conversion.
    let mine = server.api(Some(&p1));
    assert_eq!(mine.get("/v1/disputes/ds1").status, 404);
    assert_eq!(mine.get("/v1/disputes").json()["disputes"], json!([]));
    mine.post("/v1/disputes/ds1/comments", "c0", &json!({"text": "hi"})).problem(404);
    // Both sides comment.
    ag.post_expect("/v1/disputes/ds1/comments", "c1", &json!({"text": "see clause 4"}), 201);
    a.post_expect("/v1/disputes/ds1/comments", "c2", &json!({"text": "checking rule version 1"}), 201);
    // Refusals change nothing: a partner cannot resolve; more than claimed is refused.
    server.api(Some(&p2)).post("/v1/disputes/ds1/resolution", "r0", &json!({"outcome": "accepted"})).problem(403);
    let too_much = json!({"outcome": "accepted", "adjustments": [{"partner": "p2", "amount": "10.01"}]});
    let p = a.post("/v1/disputes/ds1/resolution", "r1", &too_much).problem(422);
    assert!(p["detail"].as_str().expect("detail").contains("exceed the 10.00 USD claimed"), "{p}");
    let d = ag.get("/v1/disputes/ds1").json();
    assert_eq!((d["status"].clone(), d["comments"].as_array().map(Vec::len)), (json!("open"), Some(2)), "{d}");
    let (opened_at, due_at) = (d["opened_at"].as_str().expect("at"), d["due_at"].as_str().expect("due"));
    let days = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect("time");
    assert_eq!(days(due_at) - days(opened_at), Duration::days(14), "the default response time: {d}");

    // The vendor accepts over A2A: the claimed amount to p2, one signed adjustment.
    let task = a2a(
        &server,
        &admin,
        "m-res",
        json!({"resolution": {"dispute": "ds1",
        "resolution": {"outcome": "accepted", "reason": "agreed: clause 4"}}}),
    );
    let out = completed(&task);
    let m = &out["mandates"][0];
    assert_eq!((m["direction"].clone(), m["partner"].clone()), (json!("adjustment"), json!("p2")), "{out}");
    assert_eq!(m["amount"], json!({"amount": 1000, "currency": "USD"}), "{out}");
    let payload = jws_payload(m["mandate"].as_str().expect("jws"));
    assert_eq!(payload["vct"], "settle.mandate.adjustment.1");
    assert_eq!(
        (payload["basis"]["dispute"].clone(), payload["basis"]["conversion"].clone()),
        (json!("ds1"), json!("d1"))
    );
    let aj = m["mandate_id"].as_str().expect("id").to_owned();
    let b = server.api(Some(&p2)).get("/v1/partners/p2/balance").json();
    assert_eq!((b["adjusted"].clone(), b["payable"].clone()), (json!("10.00"), json!("80.00")), "{b}");
    // The agent reads it back over A2A.
    let listed = completed(&a2a(&server, &agent, "m-list", json!({"disputes": {}})));
    assert_eq!(listed["disputes"][0]["status"], "accepted", "{listed}");
    assert_eq!(listed["disputes"][0]["adjustments"][0]["mandate_id"], json!(aj), "{listed}");

    // Paid in a payout batch with p2's payment mandate.
    let batch = json!({"batch": "b1", "partner": "p2", "rail": "book", "mandate_ids": [md2, aj]});
    let paid = a.post_expect("/v1/payouts", "b1", &batch, 201);
    assert_eq!(paid["events"][1]["data"]["amount"], json!({"amount": 8000, "currency": "USD"}), "{paid}");
    let settle_body = json!({"settlement": "s1", "batch": "b1", "partner": "p2", "rail": "book",
        "mandate_ids": [md2, aj], "confirmation_id": "BOOK-1"});
    a.post_expect("/v1/settlements", "s1", &settle_body, 201);
    let b = server.api(Some(&p2)).get("/v1/partners/p2/balance").json();
    assert_eq!((b["paid"].clone(), b["payable"].clone()), (json!("80.00"), json!("0.00")), "{b}");

    // Its receipt verifies offline with the vendor's keys only.
    let receipt = wait_for("a checkpoint covering the adjustment", 15, || {
        let r = server.api(Some(&p2)).get(&format!("/v1/partners/p2/receipts/{aj}"));
        (r.status == 200).then_some(r.body)
    });
    assert_eq!(mine.get(&format!("/v1/partners/p1/receipts/{aj}")).status, 404, "not p1's mandate");
    std::fs::write(dir.path().join("jwks.json"), a.get("/.well-known/jwks.json").body).expect("jwks");
    std::fs::write(dir.path().join("aj.json"), &receipt).expect("receipt");
    let out = settle([
        "verify".into(),
        "--keys".into(),
        dir.path().join("jwks.json").into_os_string(),
        dir.path().join("aj.json").into_os_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("1 receipts verified"), "{}", stdout(&out));

    // A deal missing on p1's lead, opened over A2A, rejected over HTTP; closed for good.
    let task = a2a(
        &server,
        &p1,
        "m-open",
        json!({"dispute": {"dispute": "ds2", "partner": "p1",
        "subject": {"kind": "missing_conversion", "lead": "l1"}, "statement": "a second order was signed"}}),
    );
    completed(&task);
    let rejected = json!({"outcome": "rejected", "reason": "the second order was cancelled"});
    a.post_expect("/v1/disputes/ds2/resolution", "r2", &rejected, 201);
    mine.post("/v1/disputes/ds2/withdraw", "w2", &json!({})).problem(409);
    assert_eq!(mine.get("/v1/disputes/ds2").json()["closed"]["reason"], "the second order was cancelled");
    server.stop();

    // The statement shows the adjustment against its dispute; the store audits.
    let out = settle_ok(["statement", "--data", data.to_str().expect("path"), "--partner", "p2"]);
    let line = out.lines().find(|l| l.contains(",adjustment,")).unwrap_or_else(|| panic!("no adjustment in:\n{out}"));
    assert!(line.contains(",ds1,") && line.contains(&aj) && line.contains(",10.00,"), "{line}");
    let audit = settle_ok(["audit", "--data", data.to_str().expect("path")]);
    assert!(audit.contains("conserved"), "{audit}");
}

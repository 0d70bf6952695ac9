//! Agent-native access: the A2A agent card (required v1.0 fields, a signature over the
//! RFC 8785 form of the card, verified by the A2A SDK's own verifier too), `SendMessage`,
//! `GetTask` and the `A2A-Version` header; the MCP server over stdio and over streamable
//! HTTP, every tool called (by the official MCP Python client too, which checks every
//! answer against the tool's output schema), scope refusals and argument errors included;
//! the partner kit in Python on the receipts a demo produces.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use settle_mandates::keys::{Jwks, KeyRing};
use support::*;

#[test]
fn agent_card_has_the_a2a_fields_and_a_valid_signature() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    keys_create(&data);
    let server = Server::start(&data, dir.path());
    let api = server.api(None);
    let resp = api.get("/.well-known/agent-card.json");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let card = resp.json();
    for f in [
        "name",
        "description",
        "supportedInterfaces",
        "version",
        "capabilities",
        "defaultInputModes",
        "defaultOutputModes",
        "skills",
        "securitySchemes",
    ] {
        assert!(card.get(f).is_some(), "agent card lacks {f}");
    }
    let iface = &card["supportedInterfaces"][0];
    assert_eq!(iface["protocolVersion"], "1.0");
    assert_eq!(iface["protocolBinding"], "JSONRPC");
    assert_eq!(iface["url"].as_str().unwrap(), format!("http://{}/a2a", server.addr));
    let skills = card["skills"].as_array().unwrap();
    assert!(skills.len() >= 5);
    for s in skills {
        for f in ["id", "name", "description", "tags"] {
            assert!(s.get(f).is_some(), "skill lacks {f}: {s}");
        }
    }

    // Verify: protected header + JCS(card without signatures) + signature, as a compact JWS.
    let jwks: Jwks = serde_json::from_slice(&api.get("/.well-known/jwks.json").body).unwrap();
    let ring = KeyRing::new(&jwks).unwrap();
    let sig = card["signatures"][0].clone();
    let mut unsigned = card.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    let compact = |c: &Value| {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(settle_mandates::jcs::to_vec(c).unwrap());
        format!("{}.{payload}.{}", sig["protected"].as_str().unwrap(), sig["signature"].as_str().unwrap())
    };
    settle_mandates::jws::verify(&compact(&unsigned), &ring, "settle-agent-card+jws").expect("card signature verifies");
    // An edited card does not.
    let mut edited = unsigned.clone();
    edited["supportedInterfaces"][0]["url"] = "http://evil.example/a2a".into();
    assert!(settle_mandates::jws::verify(&compact(&edited), &ring, "settle-agent-card+jws").is_err());
    // The card is the same on every request (it names the listen address, not the Host header).
    let again = api.get("/.well-known/agent-card.json").json();
    assert_eq!(again, card);
    server.stop();
}

#[test]
fn clawback_mandates_have_receipts_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    keys_create(&data);
    let admin =
        token(&data, "vendor-admin", "ops", None, "programs-write,leads-write,conversions-write,refunds-write,read");
    let partner = token(&data, "partner", "p1", None, "read");
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    api.post_expect("/v1/programs", "prog", &program_spec("growth"), 201);
    api.post_expect("/v1/partners", "p1", &enroll_body("p1", "growth"), 201);
    api.post_expect("/v1/leads", "lead", &lead_body("l1", "growth", "p1"), 201);
    let conv = serde_json::json!({"conversion": "d1", "lead": "l1", "revenue": "100.00", "currency": "USD"});
    api.post_expect("/v1/conversions", "conv", &conv, 201);
    let refund = serde_json::json!({"refund": "r1", "conversion": "d1", "amount": "25.00", "currency": "USD"});
    let r = api.post_expect("/v1/refunds", "refund", &refund, 201);
    let cb = r["mandates"][0].clone();
    assert_eq!(cb["direction"], "clawback");
    assert_eq!(cb["amount"]["amount"], 250, "25% of a 10.00 pool");
    // A quarter more, as a fraction of the revenue: the same 2.50 again.
    let quarter = serde_json::json!({"refund": "r2", "conversion": "d1", "fraction": "0.25"});
    let r2 = api.post_expect("/v1/refunds", "refund-2", &quarter, 201);
    assert_eq!(r2["mandates"][0]["amount"]["amount"], 250, "{r2}");
    for (body, says) in [
        (serde_json::json!({"refund": "r3", "conversion": "d1", "fraction": "a quarter"}), "not a decimal"),
        (serde_json::json!({"refund": "r3", "conversion": "d1", "fraction": "0.6"}), "exceeds"),
        (serde_json::json!({"refund": "r3", "conversion": "d1", "fraction": "0.1", "full": true}), "give one of"),
    ] {
        let p = api.post("/v1/refunds", "refund-3", &body).problem(422);
        assert!(p["detail"].as_str().unwrap().contains(says), "{p}");
    }
    let id = cb["mandate_id"].as_str().unwrap().to_owned();
    let mine = server.api(Some(&partner));
    let receipt = wait_for("a checkpoint covering the clawback", 10, || {
        let resp = mine.get(&format!("/v1/partners/p1/receipts/{id}"));
        (resp.status == 200).then_some(resp.body)
    });
    assert_eq!(api.get(&format!("/v1/partners/p2/receipts/{id}")).status, 404, "another partner's path");
    std::fs::write(dir.path().join("jwks.json"), api.get("/.well-known/jwks.json").body).unwrap();
    std::fs::write(dir.path().join("cb.json"), &receipt).unwrap();
    let out = settle([
        "verify".into(),
        "--keys".into(),
        dir.path().join("jwks.json").into_os_string(),
        dir.path().join("cb.json").into_os_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("1 receipts verified"), "{}", stdout(&out));
    server.stop();
}

/// A rail that refuses a payment: the partner gets an AP2 payment receipt with status
/// `Error` and the rail's reason, which verifies offline with the vendor's keys and
/// cannot be turned into a `Success` without them; the mandate stays payable, and the
/// rail's later confirmation gives a `Success` receipt.
#[test]
fn a_failed_settlement_gives_an_error_receipt_that_verifies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = vendor_store(dir.path());
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    api.post_expect("/v1/programs", "prog", &program_spec("growth"), 201);
    api.post_expect("/v1/partners", "p1", &enroll_body("p1", "growth"), 201);
    api.post_expect("/v1/leads", "lead", &lead_body("l1", "growth", "p1"), 201);
    let conv = json!({"conversion": "d1", "lead": "l1", "revenue": "100.00", "currency": "USD"});
    let md = api.post_expect("/v1/conversions", "conv", &conv, 201)["mandates"][0]["mandate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = json!({"settlement": "S1", "partner": "p1", "rail": "sepa", "error": "AC04", "mandate_ids": [md]});
    api.post_expect("/v1/settlements", "s1", &failed, 201);
    assert_eq!(api.get("/v1/partners/p1/balance").json()["payable"], "10.00", "a failed payment stays payable");
    let paid =
        json!({"settlement": "S2", "partner": "p1", "rail": "book", "confirmation_id": "BK-1", "mandate_ids": [md]});
    api.post_expect("/v1/settlements", "s2", &paid, 201);
    server.stop();

    let bundle = dir.path().join("bundle");
    settle_ok([
        std::ffi::OsString::from("export"),
        "--data".into(),
        data.into_os_string(),
        "--out".into(),
        bundle.clone().into_os_string(),
    ]);
    let receipts = std::fs::read_to_string(bundle.join("partners/p1/receipts.jsonl")).unwrap();
    let payment = |kind: &str| {
        receipts
            .lines()
            .find(|l| {
                jws_payload(serde_json::from_str::<Value>(l).unwrap()["receipt"].as_str().unwrap())["kind"] == kind
            })
            .unwrap_or_else(|| panic!("no {kind} receipt in {receipts}"))
            .to_owned()
    };
    let error = payment("payment_failed");
    let p = jws_payload(serde_json::from_str::<Value>(&error).unwrap()["receipt"].as_str().unwrap());
    assert_eq!(
        (&p["status"], &p["error"], &p["rail"], &p["payment_id"]),
        (&json!("Error"), &json!("AC04"), &json!("sepa"), &json!(md)),
        "{p}"
    );
    let ok =
        jws_payload(serde_json::from_str::<Value>(&payment("payment_settled")).unwrap()["receipt"].as_str().unwrap());
    assert_eq!((&ok["status"], &ok["psp_confirmation_id"]), (&json!("Success"), &json!("BK-1")), "{ok}");

    let verify = |doc: &str| {
        let f = dir.path().join("one.json");
        std::fs::write(&f, doc).unwrap();
        settle([
            std::ffi::OsString::from("verify"),
            "--keys".into(),
            bundle.join("jwks.json").into_os_string(),
            f.into_os_string(),
        ])
    };
    let out = verify(&error);
    assert!(out.status.success(), "{}", stderr(&out));
    // The same receipt claiming success, without the vendor's key to sign it.
    let mut doc: Value = serde_json::from_str(&error).unwrap();
    let parts: Vec<String> = doc["receipt"].as_str().unwrap().split('.').map(str::to_owned).collect();
    let mut claim = p.clone();
    claim["status"] = "Success".into();
    let forged = format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&claim).unwrap()), parts[2]);
    doc["receipt"] = forged.into();
    let out = verify(&doc.to_string());
    assert!(!out.status.success(), "a receipt edited to Success verified: {}", stdout(&out));
}

/// An MCP client speaking JSON-RPC over the stdio of `settle mcp`.
struct Mcp {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
    next: u64,
}

impl Mcp {
    fn start(data: &std::path::Path, token: Option<&str>) -> Mcp {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["mcp", "--data"]).arg(data).env_remove("SETTLE_TOKEN").env("RUST_LOG", "warn");
        if let Some(t) = token {
            cmd.env("SETTLE_TOKEN", t);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("cannot start settle mcp");
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut m = Mcp { child, out, next: 1 };
        let init = m.request(
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}),
        );
        assert_eq!(init["result"]["serverInfo"]["name"], "settle", "{init}");
        m.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        m
    }

    fn send(&mut self, v: &Value) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{v}").expect("write to settle mcp");
        stdin.flush().expect("flush");
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        use std::io::BufRead as _;
        let id = self.next;
        self.next += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let mut line = String::new();
            assert!(self.out.read_line(&mut line).expect("read from settle mcp") > 0, "settle mcp closed stdout");
            let m: Value = serde_json::from_str(&line).expect("settle mcp writes JSON lines");
            if m["id"] == json!(id) {
                return m;
            }
        }
    }

    /// Calls a tool; returns (is_error, structured content).
    fn call(&mut self, tool: &str, args: Value) -> (bool, Value) {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args}));
        let res = &r["result"];
        assert!(res.is_object(), "tools/call {tool} answered no result: {r}");
        (res["isError"] == json!(true), res["structuredContent"].clone())
    }

    fn ok(&mut self, tool: &str, args: Value) -> Value {
        let (err, v) = self.call(tool, args);
        assert!(!err, "{tool} failed: {v}");
        v
    }

    fn refused(&mut self, tool: &str, args: Value, status: u64) -> Value {
        let (err, v) = self.call(tool, args);
        assert!(err, "{tool} should have been refused: {v}");
        assert_eq!(v["status"], json!(status), "{tool}: {v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{tool}: a refusal says why: {v}");
        v
    }

    fn close(mut self) {
        drop(self.child.stdin.take());
        let st = self.child.wait().expect("wait for settle mcp");
        assert!(st.success(), "settle mcp exited with {st}");
    }
}

/// A new data directory in `dir` and a token of the vendor's admin with every scope.
fn vendor_store(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let data = dir.join("data");
    keys_create(&data);
    let admin = token(
        &data,
        "vendor-admin",
        "ops",
        None,
        "programs-write,leads-write,conversions-write,refunds-write,settlements-write,read,disputes-write",
    );
    (data, admin)
}

/// A store with the test program, partners p1 and p2, set up over HTTP and stopped.
fn program_with_two_partners(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let (data, admin) = vendor_store(dir);
    let server = Server::start(&data, dir);
    let api = server.api(Some(&admin));
    api.post_expect("/v1/programs", "prog", &program_spec("growth"), 201);
    api.post_expect("/v1/partners", "p1", &enroll_body("p1", "growth"), 201);
    api.post_expect("/v1/partners", "p2", &enroll_body("p2", "growth"), 201);
    server.stop();
    (data, admin)
}

#[test]
fn mcp_over_stdio_lists_and_calls_every_tool_within_token_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    let reader = token(&data, "vendor-agent", "bot", None, "read");

    // Listing needs no token; calls without one are refused with a way out.
    let mut anon = Mcp::start(&data, None);
    let tools = anon.request("tools/list", json!({}));
    let tools = tools["result"]["tools"].as_array().expect("tools").clone();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    for want in [
        "register_lead",
        "hand_off_lead",
        "record_conversion",
        "record_refund",
        "get_balance",
        "list_mandates",
        "get_receipt",
        "verify_receipt",
        "get_checkpoint",
        "describe_program",
    ] {
        assert!(names.contains(&want), "missing tool {want}: {names:?}");
    }
    for t in &tools {
        assert!(t["description"].as_str().is_some_and(|d| d.len() > 40), "{t}");
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "every tool declares its structured answer: {t}");
    }
    let conv_schema = &tools.iter().find(|t| t["name"] == "record_conversion").unwrap()["inputSchema"];
    assert_eq!(conv_schema["properties"]["revenue"]["type"], "string", "money is never a float: {conv_schema}");
    let v = anon.refused("get_balance", json!({"partner": "p1"}), 401);
    assert!(v["detail"].as_str().unwrap().contains("SETTLE_TOKEN"), "{v}");
    anon.close();

    // The vendor: every write and read tool.
    let mut m = Mcp::start(&data, Some(&admin));
    let lead =
        m.ok("register_lead", json!({"lead": "l1", "program": "growth", "customer": "acme.example", "partner": "p1"}));
    assert_eq!(lead["outcome"]["outcome"], "owner", "{lead}");
    let again =
        m.ok("register_lead", json!({"lead": "l1", "program": "growth", "customer": "acme.example", "partner": "p1"}));
    assert_eq!(again["replayed"], true, "a retried call is replayed, not recorded twice: {again}");
    m.ok("hand_off_lead", json!({"lead": "l1", "from": "p1", "to": "p2"}));
    let conv =
        m.ok("record_conversion", json!({"conversion": "d1", "lead": "l1", "revenue": "1000.00", "currency": "USD"}));
    let mandates = conv["mandates"].as_array().expect("mandates").clone();
    assert_eq!(mandates.len(), 2, "one mandate per hop: {conv}");
    let sum: i64 = mandates.iter().map(|x| x["amount"]["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, 10_000, "hops sum to the 100.00 pool exactly");
    let bad = m.refused(
        "record_conversion",
        json!({"conversion": "d2", "lead": "l1", "revenue": "1e3", "currency": "USD"}),
        422,
    );
    assert!(bad["detail"].as_str().unwrap().contains("1e3"), "{bad}");
    let direct =
        m.ok("record_conversion", json!({"conversion": "d3", "lead": "nope", "revenue": "5.00", "currency": "USD"}));
    assert_eq!(direct["outcome"]["outcome"], "no_commission", "a deal no partner registered: {direct}");

    let bal = m.ok("get_balance", json!({"partner": "p2"}));
    assert_eq!(bal["earned"], "70.00", "closer 40 % + the absent intermediaries' 20 % + the unallocated 10 %: {bal}");
    let list = m.ok("list_mandates", json!({"partner": "p2"}));
    assert_eq!(list["mandates"][0]["mandate_id"], mandates[1]["mandate_id"], "{list}");
    let mid = mandates[1]["mandate_id"].as_str().unwrap().to_owned();
    let receipt = wait_for("a checkpoint covering the mandate", 10, || {
        let (err, v) = m.call("get_receipt", json!({"partner": "p2", "mandate_id": mid}));
        (!err).then_some(v)
    });
    let verdict = m.ok("verify_receipt", json!({"receipt": receipt}));
    assert_eq!(verdict["valid"], true, "{verdict}");
    let mut forged = receipt.clone();
    forged["inclusion"] = json!([]);
    let verdict = m.ok("verify_receipt", json!({"receipt": forged}));
    assert_eq!(verdict["valid"], false, "{verdict}");
    assert!(verdict["reason"].as_str().is_some_and(|r| !r.is_empty()), "{verdict}");
    let cp = m.ok("get_checkpoint", json!({}));
    let size = cp["size"].as_u64().unwrap();
    assert!(
        size > 0 && cp["note"].as_str().unwrap().starts_with(&format!("{}\n{size}\n", cp["origin"].as_str().unwrap()))
    );
    let cp2 = m.ok("get_checkpoint", json!({"since_size": 3}));
    assert_eq!(cp2["consistency"]["from"], 3, "{cp2}");
    assert!(cp2["consistency"]["proof"].as_array().is_some_and(|p| !p.is_empty()), "{cp2}");
    let prog = m.ok("describe_program", json!({"program": "growth"}));
    let text = prog["versions"][0]["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.contains("10% of revenue") && text.contains("closer 40%"), "{text}");
    let refund = m.ok("record_refund", json!({"refund": "r1", "conversion": "d1", "full": true}));
    assert_eq!(refund["mandates"].as_array().map(Vec::len), Some(2), "one clawback per hop: {refund}");
    m.refused("record_refund", json!({"refund": "r2", "conversion": "d1", "amount": "5.00"}), 422);
    m.close();

    // A partner: its own leads and data only; no vendor writes.
    let mut p = Mcp::start(&data, Some(&p1));
    p.ok("register_lead", json!({"lead": "l2", "program": "growth", "customer": "beta.example", "partner": "p1"}));
    p.refused(
        "register_lead",
        json!({"lead": "l3", "program": "growth", "customer": "c.example", "partner": "p2"}),
        403,
    );
    p.refused(
        "record_conversion",
        json!({"conversion": "d9", "lead": "l2", "revenue": "5.00", "currency": "USD"}),
        403,
    );
    p.refused("record_refund", json!({"refund": "r9", "conversion": "d1", "full": true}), 403);
    p.ok("get_balance", json!({"partner": "p1"}));
    p.refused("get_balance", json!({"partner": "p2"}), 404);
    p.refused("list_mandates", json!({"partner": "p2"}), 404);
    p.refused("get_receipt", json!({"partner": "p2", "mandate_id": mid}), 404);
    p.close();

    // A read-only vendor agent: reads, and every write refused for want of its scope.
    let mut r = Mcp::start(&data, Some(&reader));
    r.ok("describe_program", json!({"program": "growth"}));
    let v = r.refused(
        "register_lead",
        json!({"lead": "l4", "program": "growth", "customer": "d.example", "partner": "p1"}),
        403,
    );
    assert!(v["detail"].as_str().unwrap().contains("leads_write"), "{v}");
    r.refused("hand_off_lead", json!({"lead": "l2", "from": "p1", "to": "p2"}), 403);
    r.refused(
        "record_conversion",
        json!({"conversion": "d9", "lead": "l2", "revenue": "5.00", "currency": "USD"}),
        403,
    );
    r.close();

    // What the sessions recorded audits clean.
    let out = settle_ok(["audit".as_ref(), "--data".as_ref(), data.as_os_str()]);
    assert!(out.starts_with("audit ok") && out.contains("money conserved"), "{out}");
}

/// One JSON-RPC request to `path` with an optional bearer token and more headers.
fn rpc_raw(addr: std::net::SocketAddr, path: &str, token: Option<&str>, more: &[(&str, &str)], body: &[u8]) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json"), ("Accept", "application/json, text/event-stream")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    headers.extend_from_slice(more);
    http(addr, "POST", path, &headers, Some(body)).expect("POST")
}

/// One JSON-RPC request to `path` with an optional bearer token.
fn rpc(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &Value) -> Resp {
    rpc_raw(addr, path, token, &[], body.to_string().as_bytes())
}

/// One A2A JSON-RPC request to `path`, speaking A2A 1.0 (`A2A-Version: 1.0`).
fn a2a_rpc(addr: std::net::SocketAddr, path: &str, token: Option<&str>, body: &Value) -> Resp {
    rpc_raw(addr, path, token, &[("A2A-Version", "1.0")], body.to_string().as_bytes())
}

#[test]
fn mcp_over_streamable_http_checks_the_bearer_token_of_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let p1 = token(&data, "partner", "p1", None, "read");
    let server = Server::start(&data, dir.path());
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let r = rpc(server.addr, "/mcp", None, &init);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["result"]["serverInfo"]["name"], "settle");
    let list = rpc(server.addr, "/mcp", None, &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    assert!(list.json()["result"]["tools"].as_array().is_some_and(|t| t.len() >= 10), "{}", list.text());
    let call = |token: Option<&str>, partner: &str| {
        let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_balance", "arguments": {"partner": partner}}});
        rpc(server.addr, "/mcp", token, &body).json()["result"].clone()
    };
    let ok = call(Some(&admin), "p1");
    assert_eq!(ok["isError"], false, "{ok}");
    assert_eq!(ok["structuredContent"]["partner"], "p1");
    let own = call(Some(&p1), "p1");
    assert_eq!(own["isError"], false, "{own}");
    let other = call(Some(&p1), "p2");
    assert_eq!((other["isError"].clone(), other["structuredContent"]["status"].clone()), (json!(true), json!(404)));
    let anon = call(None, "p1");
    assert_eq!((anon["isError"].clone(), anon["structuredContent"]["status"].clone()), (json!(true), json!(401)));
    let wrong = call(Some("stl_not_a_token"), "p1");
    assert_eq!(wrong["structuredContent"]["status"], 401, "{wrong}");
    server.stop();
}

fn send_message(addr: std::net::SocketAddr, token: Option<&str>, message_id: &str, data: Value) -> Resp {
    let body = json!({"jsonrpc": "2.0", "id": message_id, "method": "SendMessage", "params": {"message": {
        "messageId": message_id, "role": "ROLE_USER", "parts": [{"data": data, "mediaType": "application/json"}]}}});
    a2a_rpc(addr, "/a2a", token, &body)
}

/// `GetTask` of `id` (with `historyLength` when given); the JSON-RPC answer.
fn get_task(addr: std::net::SocketAddr, token: &str, id: &str, history: Option<u64>) -> Value {
    let mut params = json!({"id": id});
    if let Some(n) = history {
        params["historyLength"] = json!(n);
    }
    let r = a2a_rpc(
        addr,
        "/a2a",
        Some(token),
        &json!({"jsonrpc": "2.0", "id": "get-1", "method": "GetTask", "params": params}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A mandate's payload without what depends on the wall clock of the request.
fn timeless(token: &str) -> Value {
    let mut p = jws_payload(token);
    let o = p.as_object_mut().unwrap();
    o.remove("iat");
    o.remove("execution_date");
    o["basis"].as_object_mut().unwrap().remove("log");
    p
}

#[test]
fn a2a_send_message_answers_with_the_mandates_the_http_api_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    // The partner's agent registers and hands off the lead agent to agent.
    let server = Server::start(&data, dir.path());
    let r = send_message(
        server.addr,
        Some(&p1),
        "msg-lead-1",
        json!({"lead": {"lead": "l1", "program": "growth", "customer": "acme.example", "partner": "p1"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let task = r.json()["result"]["task"].clone();
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{task}");
    assert_eq!(task["artifacts"][0]["parts"][0]["data"]["outcome"]["outcome"], "owner", "{task}");
    let again = send_message(
        server.addr,
        Some(&p1),
        "msg-lead-1",
        json!({"lead": {"lead": "l1", "program": "growth", "customer": "acme.example", "partner": "p1"}}),
    )
    .json();
    assert_eq!(again["result"]["task"]["id"], task["id"], "a retried message is the same task");
    assert_eq!(again["result"]["task"]["artifacts"][0]["parts"][0]["data"]["replayed"], true);
    let h =
        send_message(server.addr, Some(&p1), "msg-h-1", json!({"handoff": {"lead": "l1", "from": "p1", "to": "p2"}}));
    assert_eq!(h.json()["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{}", h.text());
    // A partner may not record deals: the task is rejected with the problem.
    let conv = json!({"conversion": "d1", "lead": "l1", "revenue": "1234.56", "currency": "USD"});
    let no = send_message(server.addr, Some(&p1), "msg-c-0", json!({"conversion": conv})).json();
    let st = &no["result"]["task"]["status"];
    assert_eq!(st["state"], "TASK_STATE_REJECTED", "{no}");
    assert_eq!(st["message"]["parts"][1]["data"]["status"], 403, "{no}");
    // Bad requests get JSON-RPC errors; no token gets HTTP 401.
    let bad = send_message(server.addr, Some(&admin), "msg-x", json!({"teleport": {}})).json();
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let unknown = a2a_rpc(
        server.addr,
        "/a2a",
        Some(&admin),
        &json!({"jsonrpc": "2.0", "id": 9, "method": "CancelTask", "params": {}}),
    );
    assert_eq!(unknown.json()["error"]["code"], -32601);
    assert_eq!(send_message(server.addr, None, "msg-y", json!({"conversion": conv})).problem(401)["status"], 401);
    server.stop();

    // The same conversion over HTTP and over A2A, on two copies of this store.
    let twin = dir.path().join("twin");
    copy_dir(&data, &twin);
    let server = Server::start(&data, dir.path());
    let http_resp = server.api(Some(&admin)).post_expect("/v1/conversions", "conv-1", &conv, 201);
    server.stop();
    let server = Server::start(&twin, dir.path());
    let a2a = send_message(server.addr, Some(&admin), "msg-c-1", json!({"conversion": conv})).json();
    let task = &a2a["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{a2a}");
    let art = &task["artifacts"][0]["parts"][0]["data"];
    let (hm, am) = (http_resp["mandates"].as_array().unwrap(), art["mandates"].as_array().unwrap());
    assert_eq!(hm.len(), 2);
    assert_eq!(hm.len(), am.len());
    for (h, a) in hm.iter().zip(am) {
        assert_eq!(h["mandate_id"], a["mandate_id"]);
        assert_eq!(h["amount"], a["amount"]);
        assert_eq!(timeless(h["mandate"].as_str().unwrap()), timeless(a["mandate"].as_str().unwrap()));
    }
    assert_eq!(http_resp["outcome"], art["outcome"]);
    // And the A2A mandates are the ones the HTTP API lists for the partner, byte for byte.
    let listed = server.api(Some(&admin)).get("/v1/partners/p2/mandates").json();
    assert_eq!(listed["mandates"][0]["mandate"], am[1]["mandate"], "{listed}");

    // An agent that knows only the card URL and its token: it finds the endpoint in the
    // card, asks for its receipt there, and verifies it offline with the JWKS alone.
    let card = server.api(None).get("/.well-known/agent-card.json").json();
    let url = card["supportedInterfaces"][0]["url"].as_str().unwrap().to_owned();
    let path = url.strip_prefix(&format!("http://{}", server.addr)).expect("the card names this server");
    let p2 = token(&twin, "partner", "p2", None, "read");
    let server = {
        server.stop();
        Server::start(&twin, dir.path())
    };
    let mid = am[1]["mandate_id"].as_str().unwrap().to_owned();
    let receipt = wait_for("a checkpoint covering the mandate", 10, || {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
            "messageId": format!("msg-r-{mid}"), "role": "ROLE_USER",
            "parts": [{"data": {"receipt": {"partner": "p2", "mandate_id": mid}}}]}}});
        let r = a2a_rpc(server.addr, path, Some(&p2), &body).json();
        let t = &r["result"]["task"];
        (t["status"]["state"] == "TASK_STATE_COMPLETED").then(|| t["artifacts"][0]["parts"][0]["data"].clone())
    });
    std::fs::write(dir.path().join("jwks.json"), server.api(None).get("/.well-known/jwks.json").body).unwrap();
    std::fs::write(dir.path().join("receipt.json"), receipt.to_string()).unwrap();
    let out = settle([
        "verify".into(),
        "--keys".into(),
        dir.path().join("jwks.json").into_os_string(),
        dir.path().join("receipt.json").into_os_string(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.stop();
}

/// A2A 1.0 servers refuse every other version with VersionNotSupportedError, and read a
/// request without an `A2A-Version` header as 0.3 (A2A v1.0, section 3.6.2).
#[test]
fn a2a_refuses_requests_that_do_not_speak_version_1_0() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let server = Server::start(&data, dir.path());
    let body = json!({"jsonrpc": "2.0", "id": "v-1", "method": "SendMessage", "params": {"message": {
        "messageId": "msg-v-1", "role": "ROLE_USER", "parts": [{"data": {"balance": {"partner": "p1"}}}]}}});
    let send = |version: Option<&str>| {
        let more: Vec<(&str, &str)> = version.map(|v| vec![("A2A-Version", v)]).unwrap_or_default();
        let r = rpc_raw(server.addr, "/a2a", Some(&admin), &more, body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    for (version, requested) in
        [(None, "0.3"), (Some(""), "0.3"), (Some("0.3"), "0.3"), (Some("2.0"), "2.0"), (Some("1.1"), "1.1")]
    {
        let r = send(version);
        assert_eq!(r["error"]["code"], -32009, "A2A-Version {version:?} must be refused: {r}");
        assert_eq!(r["id"], "v-1", "{r}");
        assert!(r["result"].is_null(), "{r}");
        let info = &r["error"]["data"][0];
        assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo", "{r}");
        assert_eq!(info["reason"], "VERSION_NOT_SUPPORTED", "{r}");
        assert_eq!(info["metadata"]["requestedVersion"], requested, "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains("A2A-Version: 1.0"), "says what to send: {r}");
    }
    // The refused requests recorded and answered nothing: the same message served now.
    for version in ["1.0", "1.0.0"] {
        let r = send(Some(version));
        assert_eq!(r["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "A2A-Version {version}: {r}");
    }
    server.stop();
}

/// Tasks are complete when answered, and kept: `GetTask` answers the task a message was
/// answered with (after a restart too), to the principal that sent it only.
#[test]
fn a2a_get_task_answers_the_stored_task_to_its_principal_only() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    let p1_again = token(&data, "partner", "p1", None, "read");
    let p2 = token(&data, "partner", "p2", None, "read,leads-write");
    let server = Server::start(&data, dir.path());
    let lead = json!({"lead": {"lead": "l1", "program": "growth", "customer": "acme.example", "partner": "p1"}});
    let written = send_message(server.addr, Some(&p1), "same-id", lead).json()["result"]["task"].clone();
    assert_eq!(written["status"]["state"], "TASK_STATE_COMPLETED", "{written}");
    let read =
        send_message(server.addr, Some(&p1), "bal-1", json!({"balance": {"partner": "p1"}})).json()["result"]["task"]
            .clone();
    let refused = send_message(
        server.addr,
        Some(&p1),
        "conv-1",
        json!({"conversion": {"conversion": "d1", "lead": "l1", "revenue": "10.00", "currency": "USD"}}),
    )
    .json()["result"]["task"]
        .clone();
    assert_eq!(refused["status"]["state"], "TASK_STATE_REJECTED", "{refused}");
    // Another principal may use the same messageId: its own task, not p1's.
    let theirs = send_message(
        server.addr,
        Some(&p2),
        "same-id",
        json!({"lead": {"lead": "l2", "program": "growth", "customer": "beta.example", "partner": "p2"}}),
    )
    .json()["result"]["task"]
        .clone();
    assert_ne!(theirs["id"], written["id"], "{theirs}");

    for task in [&written, &read, &refused] {
        let id = task["id"].as_str().unwrap();
        let got = get_task(server.addr, &p1, id, None);
        assert_eq!(got["result"], *task, "GetTask answers the task as answered: {got}");
        // Another token of the same principal sees it; another principal does not.
        assert_eq!(get_task(server.addr, &p1_again, id, None)["result"]["id"], json!(id));
        for other in [&p2, &admin] {
            let no = get_task(server.addr, other, id, None);
            assert_eq!(no["error"]["code"], -32001, "another principal must not see task {id}: {no}");
            assert_eq!(no["error"]["data"][0]["reason"], "TASK_NOT_FOUND", "{no}");
            assert_eq!(no["error"]["data"][0]["metadata"]["taskId"], json!(id), "{no}");
        }
    }
    assert_eq!(get_task(server.addr, &p2, theirs["id"].as_str().unwrap(), None)["result"], theirs);
    let none = get_task(server.addr, &p1, "task_999999", None);
    assert_eq!(none["error"]["code"], -32001, "{none}");
    let short = get_task(server.addr, &p1, written["id"].as_str().unwrap(), Some(0));
    assert!(short["result"].get("history").is_none(), "historyLength 0: no history: {short}");
    assert_eq!(short["result"]["artifacts"], written["artifacts"]);
    let one = get_task(server.addr, &p1, written["id"].as_str().unwrap(), Some(1));
    assert_eq!(one["result"]["history"], written["history"]);
    for bad in [json!({}), json!({"id": ""}), json!({"id": 7}), json!({"id": "x", "historyLength": -1})] {
        let r = a2a_rpc(
            server.addr,
            "/a2a",
            Some(&p1),
            &json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": bad}),
        );
        assert_eq!(r.json()["error"]["code"], -32602, "{bad}: {}", r.text());
    }
    server.stop();

    // Kept beside the log: a restarted server still answers them.
    let server = Server::start(&data, dir.path());
    assert_eq!(get_task(server.addr, &p1, written["id"].as_str().unwrap(), None)["result"], written);
    server.stop();
}

/// The A2A SDK (`a2a-sdk` from PyPI, pinned in tests/support/venv.rs) resolves the card
/// `settle serve` serves and verifies its signature with its own verifier, and its client,
/// made from that card, sends a message and reads the task back with `GetTask`; another
/// principal gets `TaskNotFoundError`.
#[test]
fn a2a_sdk_verifies_the_served_card_and_gets_its_task() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let p1 = token(&data, "partner", "p1", None, "read");
    let server = Server::start(&data, dir.path());
    let base = format!("http://{}", server.addr);
    let seen = support::venv::run_script("a2a_sdk_client.py", &[&base, &p1, &admin]);
    server.stop();
    assert_eq!(seen["card_verified"], true, "{seen}");
    assert_eq!(seen["edited_card_verified"], false, "an edited card must fail the SDK's verifier: {seen}");
    assert_eq!(seen["sent"]["status"]["state"], "TASK_STATE_COMPLETED", "{seen}");
    assert_eq!(seen["sent"]["artifacts"][0]["parts"][0]["data"]["partner"], "p1", "{seen}");
    assert_eq!(seen["got"], seen["sent"], "GetTask answers the task SendMessage answered: {seen}");
    assert!(seen["got_without_history"].get("history").is_none(), "{seen}");
    assert!(seen["other_principal"].as_str().unwrap().starts_with("TaskNotFoundError"), "{seen}");
}

/// A tool called with arguments that do not fit its input schema answers a tool error
/// carrying the RFC 9457 problem the HTTP API answers for the same body (400), and a page
/// size outside 1..=1000 is refused alike by both doors (422).
#[test]
fn mcp_argument_errors_are_the_problems_http_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    api.post_expect("/v1/leads", "lead", &lead_body("l1", "growth", "p1"), 201);
    let conv = json!({"conversion": "d1", "lead": "l1", "revenue": "100.00", "currency": "USD"});
    api.post_expect("/v1/conversions", "conv", &conv, 201);
    let call = |tool: &str, args: Value| {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}});
        let r = rpc(server.addr, "/mcp", Some(&admin), &body).json();
        assert!(r["error"].is_null(), "a tool error, not a protocol error: {r}");
        r["result"].clone()
    };
    let lead = |f: &dyn Fn(&mut Value)| {
        let mut b = lead_body("l2", "growth", "p1");
        f(&mut b);
        b
    };
    let cases: [(&str, Value); 4] = [
        ("a missing field", lead(&|b| drop(b.as_object_mut().unwrap().remove("customer")))),
        ("an unknown field", lead(&|b| b["colour"] = json!("red"))),
        ("a wrong type", lead(&|b| b["customer"] = json!(42))),
        ("null for a string", lead(&|b| b["partner"] = Value::Null)),
    ];
    for (what, body) in cases {
        let tool = call("register_lead", body.clone());
        assert_eq!(tool["isError"], true, "{what}: {tool}");
        let problem = &tool["structuredContent"];
        let http = api.post("/v1/leads", &format!("k-{what}"), &body).problem(400);
        for f in ["type", "title", "status"] {
            assert_eq!(problem[f], http[f], "{what}: MCP {problem} vs HTTP {http}");
        }
        assert!(problem["detail"].as_str().unwrap().starts_with("Failed to deserialize"), "{what}: {problem}");
        assert_eq!(
            tool["content"][0]["text"].as_str().map(|t| serde_json::from_str::<Value>(t).unwrap()),
            Some(problem.clone())
        );
    }
    // Reads too, and the token is checked first, as over HTTP.
    let r = call("get_balance", json!({}));
    assert_eq!((r["isError"].clone(), r["structuredContent"]["status"].clone()), (json!(true), json!(400)), "{r}");
    let anon = rpc(
        server.addr,
        "/mcp",
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_balance", "arguments": {}}}),
    )
    .json();
    assert_eq!(anon["result"]["structuredContent"]["status"], 401, "{anon}");

    // Page sizes: 1..=1000, at both doors.
    for limit in [0, 1001] {
        let tool = call("list_mandates", json!({"partner": "p1", "limit": limit}));
        assert_eq!((tool["isError"].clone(), tool["structuredContent"]["status"].clone()), (json!(true), json!(422)));
        let http = api.get(&format!("/v1/partners/p1/mandates?limit={limit}")).problem(422);
        assert_eq!(tool["structuredContent"]["detail"], http["detail"], "{tool}");
    }
    let one = call("list_mandates", json!({"partner": "p1", "limit": 1}));
    assert_eq!(one["structuredContent"]["mandates"].as_array().map(Vec::len), Some(1), "{one}");
    let http = api.get("/v1/partners/p1/mandates?limit=1000");
    assert_eq!(http.status, 200, "{}", http.text());
    let tool = call("list_mandates", json!({"partner": "p1", "limit": -1}));
    assert_eq!(tool["structuredContent"]["status"], 400, "{tool}");
    assert_eq!(api.get("/v1/partners/p1/mandates?limit=-1").problem(400)["status"], 400);
    server.stop();
}

/// `/mcp` answers a body that is not JSON with a JSON-RPC parse error, and JSON that is
/// not a JSON-RPC message with an invalid-request error, not with HTTP 415.
#[test]
fn mcp_over_http_answers_a_body_that_is_not_json_rpc_with_a_json_rpc_error() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let server = Server::start(&data, dir.path());
    for (body, code) in [
        (&b"not json"[..], -32700),
        (b"{\"jsonrpc\": \"2.0\", \"id\": 1,", -32700),
        (b"[1, 2]", -32600),
        (b"{\"a\": 1}", -32600),
    ] {
        let r = rpc_raw(server.addr, "/mcp", Some(&admin), &[], body);
        assert_eq!(r.status, 200, "{}: {}", String::from_utf8_lossy(body), r.text());
        let v = r.json();
        assert_eq!((v["jsonrpc"].clone(), v["id"].clone()), (json!("2.0"), Value::Null), "{v}");
        assert_eq!(v["error"]["code"], code, "{}: {v}", String::from_utf8_lossy(body));
    }
    // A well-formed request is still served.
    let list = rpc(server.addr, "/mcp", None, &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}));
    assert!(list.json()["result"]["tools"].as_array().is_some_and(|t| t.len() >= 10), "{}", list.text());
    server.stop();
}

/// The official MCP Python SDK (`mcp` from PyPI, pinned in tests/support/venv.rs) connects
/// over streamable HTTP at `/mcp` with a bearer token, lists the tools and calls every one
/// (writes and reads); it checks each answer against the tool's output schema itself.
#[test]
fn mcp_python_sdk_client_calls_every_tool_over_streamable_http() {
    let dir = tempfile::tempdir().unwrap();
    let (data, admin) = program_with_two_partners(dir.path());
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    let server = Server::start(&data, dir.path());
    let url = format!("http://{}/mcp", server.addr);
    let seen = support::venv::run_script("mcp_sdk_client.py", &[&url, &admin, &p1]);
    server.stop();
    assert_eq!(seen["tools"].as_array().map(Vec::len), Some(18), "{seen}");
    assert_eq!(seen["chain"], json!([["p1", "originator", 3000], ["p2", "closer", 7000]]), "{seen}");
    assert_eq!(seen["leads"], json!([["l1", ["p1", "p2"], "attributable"]]), "{seen}");
    assert_eq!(seen["without_output_schema"], json!([]), "{seen}");
    let answered: std::collections::BTreeSet<&str> =
        seen["answered"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let tools: std::collections::BTreeSet<&str> =
        seen["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(answered, tools, "every tool answered in its schema: {seen}");
    assert_eq!(seen["lead_outcome"]["outcome"], "owner", "{seen}");
    assert_eq!(seen["conversion_mandates"].as_array().map(Vec::len), Some(2), "{seen}");
    assert_eq!(seen["balance"]["earned"], "70.00", "{seen}");
    assert_eq!(seen["listed"], json!([seen["conversion_mandates"][1]]), "{seen}");
    assert_eq!(
        (seen["verdict"]["valid"].clone(), seen["forged_verdict"]["valid"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(seen["refund_directions"], json!(["clawback", "clawback"]), "{seen}");
    // Disputes: a re-split of 5.00 from p1 to p2, signed as two adjustment mandates.
    assert_eq!(seen["disputes_listed"], json!(["ds1"]), "{seen}");
    assert_eq!(seen["adjustments"], json!([["adjustment", "p2", 500], ["adjustment", "p1", -500]]), "{seen}");
    assert_eq!(seen["dispute"], json!({"status": "accepted", "comments": 1, "adjusted": ["5.00", "-5.00"]}), "{seen}");
    assert_eq!(seen["too_much"]["status"], 422, "never more than the claim: {seen}");
    assert_eq!(seen["partner"]["other_dispute"]["status"], 404, "{seen}");
    assert_eq!(seen["partner"]["own_disputes"], json!(["ds2"]), "{seen}");
    for (case, status) in [("missing_field", 400), ("unknown_field", 400), ("wrong_type", 400), ("limit_zero", 422)] {
        assert_eq!(seen[case]["status"], status, "{case}: {seen}");
    }
    assert_eq!(seen["partner"]["duplicate"]["outcome"], "duplicate", "{seen}");
    assert_eq!(seen["partner"]["duplicate"]["owner"], Value::Null, "a partner never learns the owner: {seen}");
    assert_eq!(seen["partner"]["other_partner"]["status"], 404, "{seen}");
}

#[test]
fn python_kit_verifies_demo_receipts_and_refuses_tampered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    settle_ok(["demo", "--quiet", "--conversions", "300", "--seed", "11", "--data", data.to_str().unwrap()]);
    let bundle = data.join("bundle");
    let jwks = bundle.join("jwks.json");
    let partners: Vec<_> = std::fs::read_dir(bundle.join("partners")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!partners.is_empty());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut verified = 0;
    for p in &partners {
        let receipts = p.join("receipts.jsonl");
        let out = support::python::run(root, &["receipt".as_ref(), jwks.as_os_str(), receipts.as_os_str()]);
        assert!(
            out.status.success(),
            "the kit refused demo receipts of {}:\n{}",
            p.display(),
            support::python::describe(&out)
        );
        verified += String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("ok")).count();
    }
    assert!(verified > 0, "no receipt verified");

    // Tampered: a changed amount in a mandate, a changed leaf, a dropped proof step.
    let receipts = std::fs::read_to_string(partners[0].join("receipts.jsonl")).unwrap();
    let doc: Value = serde_json::from_str(receipts.lines().next().unwrap()).unwrap();
    let tamper = |name: &str, edit: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        edit(&mut d);
        let f = dir.path().join(format!("{name}.json"));
        std::fs::write(&f, d.to_string()).unwrap();
        let out = support::python::run(root, &["receipt".as_ref(), jwks.as_os_str(), f.as_os_str()]);
        assert_eq!(out.status.code(), Some(1), "{name} passed:\n{}", support::python::describe(&out));
    };
    tamper("mandate", &|d| {
        let t = d["mandate"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = t.split('.').collect();
        let mut p = jws_payload(&t);
        p["payment_amount"]["amount"] = json!(p["payment_amount"]["amount"].as_i64().unwrap() + 1);
        use base64::Engine as _;
        let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(settle_mandates::jcs::to_vec(&p).unwrap());
        d["mandate"] = json!(format!("{}.{enc}.{}", parts[0], parts[2]));
    });
    tamper("leaf", &|d| {
        let mut l = d["leaf"].as_str().unwrap().to_owned();
        let c = if l.ends_with('A') { 'B' } else { 'A' };
        l.pop();
        l.push(c);
        d["leaf"] = json!(l);
    });
    tamper("proof", &|d| {
        d["inclusion"].as_array_mut().unwrap().pop();
    });

    // Consistency: the first checkpoint of the bundle is a prefix of the last, by a proof
    // from the running server.
    let cps: Vec<String> = serde_json::from_slice(&std::fs::read(bundle.join("checkpoints.json")).unwrap()).unwrap();
    assert!(cps.len() >= 2);
    let size_of = |note: &str| note.lines().nth(1).unwrap().parse::<u64>().unwrap();
    let server = Server::start(&data, dir.path());
    let (old, new) = (&cps[0], cps.last().unwrap());
    let proof = server.api(None).get(&format!("/v1/checkpoints/consistency?from={}&to={}", size_of(old), size_of(new)));
    assert_eq!(proof.status, 200, "{}", proof.text());
    server.stop();
    let files: Vec<std::path::PathBuf> = [("old", old.as_bytes()), ("new", new.as_bytes()), ("proof", &proof.body[..])]
        .iter()
        .map(|(n, b)| {
            let f = dir.path().join(n);
            std::fs::write(&f, b).unwrap();
            f
        })
        .collect();
    let args = |v: &[&std::path::PathBuf]| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = vec!["consistency".into(), jwks.clone().into_os_string()];
        a.extend(v.iter().map(|p| p.as_os_str().to_owned()));
        a
    };
    let good = args(&[&files[0], &files[1], &files[2]]);
    let out = support::python::run(root, &good.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", support::python::describe(&out));
    let swapped = args(&[&files[1], &files[0], &files[2]]);
    let out = support::python::run(root, &swapped.iter().map(|s| s.as_os_str()).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "a proof for other sizes must fail:\n{}", support::python::describe(&out));
}

#[test]
fn typescript_kit_verifies_demo_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    settle_ok(["demo", "--quiet", "--conversions", "200", "--seed", "12", "--data", data.to_str().unwrap()]);
    let kit = typescript_kit();
    let bundle = data.join("bundle");
    let mut verified = 0;
    for p in std::fs::read_dir(bundle.join("partners")).unwrap() {
        let receipts = p.unwrap().path().join("receipts.jsonl");
        let out = std::process::Command::new("node")
            .arg(kit.join("verify_receipt.mjs"))
            .arg("receipt")
            .arg(bundle.join("jwks.json"))
            .arg(&receipts)
            .output()
            .expect("node is needed to run the TypeScript kit");
        assert!(out.status.success(), "{}", support::python::describe(&out));
        verified += String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("ok")).count();
    }
    assert!(verified > 0, "no receipt verified");
}

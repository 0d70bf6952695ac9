//! Integration tests of the HTTP API: the real `settle serve` binary on 127.0.0.1, driven
//! with a hand-rolled HTTP/1.1 client. Covers an end-to-end settlement with receipts,
//! export, audit and tampered bundles; idempotency under concurrency; the authorisation
//! table; and bad input.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

/// A fresh data dir with keys and a vendor-admin token.
fn new_data() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    keys_create(&data);
    let admin = token(&data, "vendor-admin", "ops", None, ADMIN_SCOPES);
    (dir, data, admin)
}

/// Publishes program `growth`, enrolls `partners`, registers `lead` for the first partner
/// and hands it down the list. Returns the last write's response.
fn setup_program(api: &Api, partners: &[&str], lead: &str) -> Value {
    let r = api.post_expect("/v1/programs", "setup-program", &program_spec("growth"), 201);
    assert_eq!(r["seq"], 0, "the first fact is record 0");
    for p in partners {
        api.post_expect("/v1/partners", &format!("setup-enroll-{p}"), &enroll_body(p, "growth"), 201);
    }
    let mut last = api.post_expect("/v1/leads", &format!("setup-{lead}"), &lead_body(lead, "growth", partners[0]), 201);
    assert_eq!(last["outcome"]["outcome"], "owner");
    assert_eq!(last["outcome"]["chain"], json!([partners[0]]));
    for w in partners.windows(2) {
        last = api.post_expect(
            &format!("/v1/leads/{lead}/handoffs"),
            &format!("setup-handoff-{lead}-{}", w[1]),
            &json!({"from": w[0], "to": w[1]}),
            201,
        );
    }
    assert_eq!(last["outcome"]["chain"], json!(partners), "chain after the handoffs");
    last
}

fn mandate_tokens(r: &Value) -> Vec<String> {
    r["mandates"]
        .as_array()
        .expect("mandates array")
        .iter()
        .map(|m| m["mandate"].as_str().expect("mandate JWS").to_owned())
        .collect()
}

/// Runs `settle audit --bundle B`, asserts it fails with a one-line message, returns it.
fn audit_fails(bundle: &Path, what: &str) -> String {
    let out = settle([OsArg::from("audit"), "--bundle".into(), bundle.into()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "audit passed a bundle with {what}:\nstdout: {}\nstderr: {err}", stdout(&out));
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(err.trim_end().lines().count(), 1, "one-line error expected for {what}: {err}");
    assert!(err.starts_with("settle: "), "error format for {what}: {err}");
    eprintln!("audit of a bundle with {what}: {}", err.trim_end());
    err
}

type OsArg = std::ffi::OsString;

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p).expect("read").lines().map(str::to_owned).collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(p, s).expect("write");
}

/// The raw `event` object of an export line (it is written canonically).
fn event_text(line: &str) -> &str {
    let i = line.find("\"event\":").expect("event field") + "\"event\":".len();
    &line[i..line.len() - 1]
}

#[test]
fn end_to_end_over_http_then_export_audit_and_tampered_bundles() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    let anon = server.api(None);

    let doc = anon.get("/openapi.json");
    assert_eq!(doc.header("content-type"), Some("application/json"));
    assert_eq!(doc.text(), include_str!("../docs/openapi.json"), "the served OpenAPI document is docs/openapi.json");

    let last = setup_program(&api, &["p1", "p2", "p3"], "lead-1");
    let conv_seq = next_seq(&last);
    assert_eq!(conv_seq, 14, "program (2) + 3 enrollments (6) + lead (2) + 2 handoffs (4)");
    // A checkpoint over the setup first, so that the bundle holds more than one.
    wait_for("a checkpoint over the setup", 30, || {
        let c = anon.get("/v1/checkpoints/latest");
        (c.status == 200 && c.json()["size"] == json!(conv_seq)).then_some(())
    });

    let conv = api.post_expect(
        "/v1/conversions",
        "conv-1",
        &json!({"conversion": "C1", "lead": "lead-1", "revenue": "12345.67", "currency": "USD"}),
        201,
    );
    assert_eq!(conv["seq"], json!(conv_seq));
    assert_eq!(conv["replayed"], false);
    assert_eq!(conv["outcome"]["outcome"], "settled");
    assert_eq!(conv["outcome"]["pool"], json!({"amount": 123457, "currency": "USD"}), "10 % of 12345.67, half-even");
    assert_eq!(conv["outcome"]["rule_version"], 1);
    let kinds: Vec<&str> = conv["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["conversion_recorded", "mandate_issued", "mandate_issued", "mandate_issued", "conversion_outcome"]
    );
    let ms = conv["mandates"].as_array().expect("mandates");
    assert_eq!(ms.len(), 3);
    let amounts: Vec<i64> = ms.iter().map(|m| m["amount"]["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [37037, 24691, 61729]);
    assert_eq!(amounts.iter().sum::<i64>(), 123_457, "mandates sum to the pool");
    let roles = ["originator", "intermediary", "closer"];
    for (i, m) in ms.iter().enumerate() {
        let partner = format!("p{}", i + 1);
        let mid = format!("md_{conv_seq}_{i}");
        assert_eq!(m["partner"], json!(partner));
        assert_eq!(m["mandate_id"], json!(mid));
        assert_eq!(m["direction"], "payment");
        assert_eq!(m["amount"]["currency"], "USD");
        let p = jws_payload(m["mandate"].as_str().unwrap());
        assert_eq!(p["transaction_id"], json!(mid));
        assert_eq!(p["payee"]["id"], json!(partner));
        assert_eq!(p["payment_amount"], json!({"amount": amounts[i], "currency": "USD"}));
        assert_eq!(p["iss"], "vendor");
        assert_eq!(p["direction"], "payment");
        assert_eq!(p["basis"]["conversion"], "C1");
        assert_eq!(p["basis"]["hop"], json!(i));
        assert_eq!(p["basis"]["hops"], 3);
        assert_eq!(p["basis"]["role"], roles[i]);
        assert_eq!(p["basis"]["pool"]["amount"], 123_457);
        assert_eq!(p["basis"]["log"]["seq"], json!(conv_seq));
    }
    let bal = api.get("/v1/partners/p3/balance");
    assert_eq!(bal.status, 200, "{}", bal.text());
    let bal = bal.json();
    assert_eq!(bal["earned"], "617.29");
    assert_eq!(bal["payable"], "617.29", "holding_days 0: payable at once");
    assert_eq!(bal["on_hold"], "0.00");
    let list = api.get("/v1/partners/p2/mandates");
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_eq!(list["mandates"].as_array().unwrap().len(), 1);
    assert_eq!(list["mandates"][0]["mandate"], ms[1]["mandate"]);

    // Receipts, once a checkpoint covers the conversion; verified offline with the JWKS.
    let jwks = anon.get("/.well-known/jwks.json");
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.json()["keys"].as_array().unwrap().len(), 1);
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, &jwks.body).unwrap();
    let mut receipt_files = Vec::new();
    let mut docs = Vec::new();
    for (i, m) in ms.iter().enumerate() {
        let path = format!("/v1/partners/p{}/receipts/md_{conv_seq}_{i}", i + 1);
        let doc = wait_for("a checkpointed receipt", 30, || {
            let r = api.get(&path);
            match r.status {
                200 => Some(r.json()),
                409 => None,
                s => panic!("GET {path}: unexpected {s}: {}", r.text()),
            }
        });
        assert_eq!(doc["mandate"], m["mandate"], "the receipt carries the mandate it proves");
        let rp = jws_payload(doc["receipt"].as_str().unwrap());
        assert_eq!(rp["payment_id"], m["mandate_id"]);
        assert_eq!(rp["kind"], "mandate_recorded");
        assert_eq!(rp["leaf_index"], json!(conv_seq + 1 + i as u64));
        assert!(rp["tree_size"].as_u64().unwrap() >= conv_seq + 5);
        let f = dir.path().join(format!("receipt-{i}.json"));
        std::fs::write(&f, r_bytes(&doc)).unwrap();
        receipt_files.push(f);
        docs.push(doc);
    }
    let mut args: Vec<OsArg> = vec!["verify".into(), "--keys".into(), jwks_file.clone().into()];
    args.extend(receipt_files.iter().map(|f| f.clone().into()));
    let out = settle_ok(&args);
    assert_eq!(out.trim(), "3 receipts verified");
    // A receipt carrying another partner's (validly signed) mandate does not verify.
    let mut forged = docs[0].clone();
    forged["mandate"] = docs[1]["mandate"].clone();
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, r_bytes(&forged)).unwrap();
    let out = settle([OsArg::from("verify"), "--keys".into(), jwks_file.into(), forged_file.into()]);
    assert!(!out.status.success(), "a receipt with a swapped mandate verified: {}", stdout(&out));
    // A partner cannot fetch a receipt through another partner's path.
    api.get(&format!("/v1/partners/p1/receipts/md_{conv_seq}_1")).problem(404);

    // Graceful stop, export, audit.
    let st = server.stop();
    assert!(st.success(), "settle serve exited with {st} on SIGTERM");
    let bundle = dir.path().join("bundle");
    let out =
        settle_ok([OsArg::from("export"), "--data".into(), data.clone().into(), "--out".into(), bundle.clone().into()]);
    assert!(out.starts_with("exported 19 records"), "{out}");
    let out = settle_ok([OsArg::from("audit"), "--bundle".into(), bundle.clone().into()]);
    assert!(out.starts_with("audit ok"), "{out}");
    assert!(out.contains("19 records"), "{out}");
    assert!(out.contains("3 receipts"), "{out}");
    let notes: Vec<String> = serde_json::from_slice(&std::fs::read(bundle.join("checkpoints.json")).unwrap()).unwrap();
    assert!(notes.len() >= 2, "expected at least two checkpoints, got {}", notes.len());
    let log = read_lines(&bundle.join("log.jsonl"));
    assert_eq!(log.len(), 19);

    let copy = |name: &str| -> PathBuf {
        let d = dir.path().join(name);
        copy_dir(&bundle, &d);
        d
    };
    // An untouched copy passes (the tampering below is what fails).
    let clean = copy("clean");
    settle_ok([OsArg::from("audit"), "--bundle".into(), clean.into()]);

    // 1. An amount edited in a middle line: hop 0's mandate at seq 15.
    let t = copy("edited-amount");
    let mut lines = log.clone();
    assert!(lines[15].contains("\"type\":\"mandate_issued\"") && lines[15].contains("\"amount\":37037"));
    lines[15] = lines[15].replacen("\"amount\":37037", "\"amount\":37038", 1);
    write_lines(&t.join("log.jsonl"), &lines);
    let err = audit_fails(&t, "an edited amount");
    assert!(err.contains("at seq 15") && err.contains("event hash"), "{err}");

    // 1b. The same edit with the event hash and every later chain link recomputed.
    let t = copy("edited-amount-rehashed");
    let mut lines = log.clone();
    lines[15] = lines[15].replacen("\"amount\":37037", "\"amount\":37038", 1);
    let mut prev: [u8; 32] = hex::decode(serde_json::from_str::<Value>(&lines[14]).unwrap()["chain"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    for (seq, line) in lines.iter_mut().enumerate().skip(15) {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let eh: [u8; 32] = Sha256::digest(event_text(line).as_bytes()).into();
        if seq > 15 {
            assert_eq!(v["event_hash"], json!(hex::encode(eh)), "export lines hold the canonical event");
        }
        let mut h = Sha256::new();
        h.update(prev);
        h.update((seq as u64).to_be_bytes());
        h.update(eh);
        h.update(u32::try_from(v["v"].as_u64().unwrap()).unwrap().to_be_bytes());
        h.update(v["type"].as_str().unwrap().as_bytes());
        prev = h.finalize().into();
        v["event_hash"] = json!(hex::encode(eh));
        v["chain"] = json!(hex::encode(prev));
        // Keep the canonical event text byte for byte.
        let head = serde_json::to_string(&json!({"seq": v["seq"], "type": v["type"], "v": v["v"], "event_hash": v["event_hash"], "chain": v["chain"]})).unwrap();
        *line = format!("{},\"event\":{}}}", &head[..head.len() - 1], event_text(line));
    }
    write_lines(&t.join("log.jsonl"), &lines);
    let err = audit_fails(&t, "an edited amount with recomputed hashes");
    assert!(err.contains("at seq 15") && err.contains("differs from the replay"), "{err}");

    // 2. A line deleted.
    let t = copy("deleted-line");
    let mut lines = log.clone();
    lines.remove(9);
    write_lines(&t.join("log.jsonl"), &lines);
    let err = audit_fails(&t, "a deleted line");
    assert!(err.contains("expected record 9, found record 10"), "{err}");

    // 3. Two lines swapped.
    let t = copy("swapped-lines");
    let mut lines = log.clone();
    lines.swap(15, 16);
    write_lines(&t.join("log.jsonl"), &lines);
    let err = audit_fails(&t, "two swapped lines");
    assert!(err.contains("expected record 15, found record 16"), "{err}");

    // 4. The last checkpoint replaced by an earlier one.
    let t = copy("swapped-checkpoint");
    let mut n2 = notes.clone();
    let k = n2.len() - 1;
    n2[k] = notes[0].clone();
    std::fs::write(t.join("checkpoints.json"), serde_json::to_vec_pretty(&n2).unwrap()).unwrap();
    let err = audit_fails(&t, "a swapped checkpoint");
    assert!(err.contains("not covered"), "{err}");

    // 5. A partner's statement edited.
    let t = copy("edited-statement");
    let sp = t.join("partners/p1/statement.csv");
    let s = std::fs::read_to_string(&sp).unwrap();
    assert!(s.contains(",370.37,"), "{s}");
    std::fs::write(&sp, s.replacen(",370.37,", ",470.37,", 1)).unwrap();
    let err = audit_fails(&t, "an edited statement");
    assert!(err.contains("partners/p1/statement.csv differs from the manifest"), "{err}");
}

fn r_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

#[test]
fn fifty_concurrent_posts_with_one_idempotency_key_record_one_conversion() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    let last = setup_program(&api, &["p1", "p2"], "lead-c");
    let seq = next_seq(&last);
    // occurred_at is explicit: the request is then the same bytes every time (see
    // `retrying_an_identical_request_without_a_time_is_a_replay` for the default).
    let occurred = chrono::Utc::now().to_rfc3339();
    let body = json!({"conversion": "C-conc", "lead": "lead-c", "revenue": "999.99", "currency": "USD", "occurred_at": occurred});

    let n = 50;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (api, body, barrier) = (api.clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                api.post("/v1/conversions", "same-key", &body)
            })
        })
        .collect();
    let resps: Vec<Resp> = threads.into_iter().map(|t| t.join().expect("client thread")).collect();
    for r in &resps {
        assert!(r.status == 200 || r.status == 201, "status {}: {}", r.status, r.text());
    }
    assert_eq!(resps.iter().filter(|r| r.status == 201).count(), 1, "exactly one 201");
    let first = resps.iter().find(|r| r.status == 201).unwrap().json();
    let tokens = mandate_tokens(&first);
    assert_eq!(tokens.len(), 2);
    let amounts: Vec<i64> =
        first["mandates"].as_array().unwrap().iter().map(|m| m["amount"]["amount"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [3000, 7000], "pool 99.9999 → 100.00; 30 % / 70 %");
    for r in &resps {
        let v = r.json();
        assert_eq!(v["seq"], json!(seq));
        assert_eq!(v["replayed"], json!(r.status == 200));
        assert_eq!(mandate_tokens(&v), tokens, "every answer names the same mandates");
    }

    // The log grew once: the next fact gets the next sequence number.
    let after = api.post_expect("/v1/leads", "after-1", &lead_body("lead-after-1", "growth", "p1"), 201);
    assert_eq!(after["seq"], json!(seq + 4), "one conversion, two mandates, one outcome");
    let listed = api.get("/v1/partners/p2/mandates").json();
    assert_eq!(listed["mandates"].as_array().unwrap().len(), 1, "{listed}");

    // Same key, different body: 409, and nothing recorded.
    let mut other = body.clone();
    other["revenue"] = json!("1000.00");
    let p = api.post("/v1/conversions", "same-key", &other).problem(409);
    assert_eq!(p["title"], "Idempotency key reused");
    // Same key, same body, later: still a replay.
    let again = api.post("/v1/conversions", "same-key", &body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["replayed"], true);
    assert_eq!(mandate_tokens(&again.json()), tokens);
    let after = api.post_expect("/v1/leads", "after-2", &lead_body("lead-after-2", "growth", "p1"), 201);
    assert_eq!(after["seq"], json!(seq + 6), "neither the 409 nor the replay wrote anything");
}

/// A client that retries the very same request (same bytes, same key) after a timeout
/// gets a replay, even where the server fills in a time the client left out
/// (`occurred_at` of a conversion, `to` of a holds advance). Regression test: up to
/// 5a3c2a1 that time entered the request's content hash and the retry got 409.
/// `Prefer: return=minimal` (RFC 7240) answers a write without its records and signed
/// mandates, says so with `Preference-Applied`, and changes nothing else: the outcome,
/// the mandate ids and amounts are those of the full answer, which a retry without the
/// preference gets.
#[test]
fn a_minimal_answer_is_the_full_one_without_records_and_signatures() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1", "p2", "p3"], "lead-m");
    let auth = format!("Bearer {admin}");
    let post = |path: &str, key: &str, body: &Value, prefer: Option<&str>| {
        let b = serde_json::to_vec(body).unwrap();
        let mut h =
            vec![("Authorization", auth.as_str()), ("Idempotency-Key", key), ("Content-Type", "application/json")];
        if let Some(p) = prefer {
            h.push(("Prefer", p));
        }
        http(server.addr, "POST", path, &h, Some(&b)).unwrap()
    };
    let body = json!({"conversion": "C-min", "lead": "lead-m", "revenue": "1000.00", "currency": "USD"});
    let minimal = post("/v1/conversions", "min-1", &body, Some("respond-async, RETURN=minimal; x=1"));
    assert_eq!(minimal.status, 201, "{}", minimal.text());
    assert_eq!(minimal.header("preference-applied"), Some("return=minimal"));
    let m = minimal.json();
    assert!(m.get("events").is_none(), "{m}");
    assert_eq!(m["mandates"].as_array().map(Vec::len), Some(3), "{m}");
    assert!(m["mandates"].as_array().unwrap().iter().all(|x| x.get("mandate").is_none()), "{m}");
    assert!(minimal.body.len() < 1024, "a minimal answer of {} bytes", minimal.body.len());

    let full = post("/v1/conversions", "min-1", &body, None);
    assert_eq!(full.status, 200, "{}", full.text());
    assert_eq!(full.header("preference-applied"), None);
    let mut f = full.json();
    assert_eq!(f["events"].as_array().map(Vec::len), Some(5), "{f}");
    assert_eq!(mandate_tokens(&f).len(), 3);
    // The full answer less what minimal leaves out is the minimal answer.
    f.as_object_mut().unwrap().remove("events");
    for x in f["mandates"].as_array_mut().unwrap() {
        x.as_object_mut().unwrap().remove("mandate");
    }
    f["replayed"] = json!(false);
    assert_eq!(f, m);

    // Other preferences are ignored; a batch answers minimal items too.
    let other = post(
        "/v1/conversions",
        "min-2",
        &json!({"conversion": "C-min2", "lead": "lead-m", "revenue": "10.00", "currency": "USD"}),
        Some("return=representation"),
    );
    assert_eq!(other.status, 201);
    assert!(other.json().get("events").is_some() && other.header("preference-applied").is_none());
    let items = json!({"items": [{"conversion": "C-min3", "lead": "lead-m", "revenue": "20.00", "currency": "USD"}]});
    let batch = post("/v1/conversions/batch", "min-3", &items, Some("return=minimal"));
    assert_eq!(batch.status, 200, "{}", batch.text());
    assert_eq!(batch.header("preference-applied"), Some("return=minimal"));
    let item = &batch.json()["results"][0];
    assert!(item.get("events").is_none() && item["mandates"][0].get("mandate").is_none(), "{item}");
    assert_eq!(item["outcome"]["outcome"], "settled");
}

#[test]
fn retrying_an_identical_request_without_a_time_is_a_replay() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1", "p2"], "lead-r");
    let body = json!({"conversion": "C-retry", "lead": "lead-r", "revenue": "100.00", "currency": "USD"});
    let first = api.post_expect("/v1/conversions", "retry-key", &body, 201);
    let retry = api.post("/v1/conversions", "retry-key", &body);
    let advance1 = api.post_expect("/v1/holds/advance", "advance-key", &json!({}), 201);
    let advance2 = api.post("/v1/holds/advance", "advance-key", &json!({}));
    let mut problems = Vec::new();
    if retry.status != 200
        || retry.json()["replayed"] != true
        || mandate_tokens(&retry.json()) != mandate_tokens(&first)
    {
        problems.push(format!(
            "POST /v1/conversions retried with the same body and Idempotency-Key: expected 200 replayed, got {} {}",
            retry.status,
            retry.text()
        ));
    }
    if advance2.status != 200 || advance2.json()["seq"] != advance1["seq"] {
        problems.push(format!(
            "POST /v1/holds/advance {{}} retried with the same Idempotency-Key: expected 200 replayed, got {} {}",
            advance2.status,
            advance2.text()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn authorisation_table_and_revocation() {
    let (dir, data, admin) = new_data();
    let crm = token(&data, "vendor-agent", "crm", None, "conversions-write");
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    let agent1 = token(&data, "partner-agent", "agent-1", Some("p1"), "read,leads-write");
    let agent2 = token(&data, "partner-agent", "agent-2", Some("p1"), "read,leads-write");
    let agent3 = token(&data, "partner-agent", "agent-3", Some("p1"), "read,leads-write");
    let p2 = token(&data, "partner", "p2", None, "read,leads-write");
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1", "p2"], "lead-conv");
    let now = chrono::Utc::now();
    let grant = |agent: &str| {
        json!({"agent": agent, "partner": "p1", "scopes": ["leads_write", "read"],
               "not_before": (now - chrono::Duration::hours(1)).to_rfc3339(),
               "expires_at": (now + chrono::Duration::days(1)).to_rfc3339()})
    };
    // The partner itself authorises agent-1; the vendor the others.
    api.with_token(Some(&p1)).post_expect("/v1/agents", "grant-agent-1", &grant("agent-1"), 201);
    api.post_expect("/v1/agents", "grant-agent-2", &grant("agent-2"), 201);
    api.post_expect("/v1/agents", "grant-agent-3", &grant("agent-3"), 201);
    api.post_expect("/v1/agents/agent-2/revoke", "revoke-agent-2", &json!(null), 201);

    let bad = format!("stl_{}", "0".repeat(64));
    let principals: [(&str, Option<&str>); 7] = [
        ("no token", None),
        ("bad token", Some(bad.as_str())),
        ("vendor-admin", Some(admin.as_str())),
        ("vendor-agent (conversions-write)", Some(crm.as_str())),
        ("partner p1", Some(p1.as_str())),
        ("agent of p1", Some(agent1.as_str())),
        ("revoked agent", Some(agent2.as_str())),
    ];
    // Expected status per principal, in the order above.
    let table: [(&str, [u16; 7]); 7] = [
        ("POST /v1/programs", [401, 401, 201, 403, 403, 403, 401]),
        ("POST /v1/conversions", [401, 401, 201, 201, 403, 403, 401]),
        ("POST /v1/leads (p1)", [401, 401, 201, 403, 201, 201, 401]),
        ("POST /v1/leads (p2)", [401, 401, 201, 403, 403, 403, 401]),
        ("GET /v1/partners/p1/balance", [401, 401, 200, 403, 200, 200, 401]),
        ("GET /v1/partners/p2/balance", [401, 401, 200, 403, 404, 404, 401]),
        ("GET /v1/partners/p2/mandates", [401, 401, 200, 403, 404, 404, 401]),
    ];
    let mut wrong = Vec::new();
    for (ei, (endpoint, want)) in table.iter().enumerate() {
        for (pi, (who, tok)) in principals.iter().enumerate() {
            let c = api.with_token(*tok);
            let key = format!("auth-{ei}-{pi}");
            let r = match ei {
                0 => c.post("/v1/programs", &key, &program_spec(&format!("prog-{pi}"))),
                1 => c.post(
                    "/v1/conversions",
                    &key,
                    &json!({"conversion": format!("conv-{pi}"), "lead": "lead-conv", "revenue": "10.00", "currency": "USD"}),
                ),
                2 => c.post("/v1/leads", &key, &lead_body(&format!("lead-own-{pi}"), "growth", "p1")),
                3 => c.post("/v1/leads", &key, &lead_body(&format!("lead-other-{pi}"), "growth", "p2")),
                4 => c.get("/v1/partners/p1/balance"),
                5 => c.get("/v1/partners/p2/balance"),
                _ => c.get("/v1/partners/p2/mandates"),
            };
            let w = want[pi];
            if r.status != w {
                wrong.push(format!("{endpoint} as {who}: expected {w}, got {} {}", r.status, r.text()));
                continue;
            }
            if w >= 400 {
                r.problem(w);
                if w == 401 {
                    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{endpoint} as {who}");
                }
            } else if endpoint.contains("balance") {
                assert_eq!(r.json()["partner"], endpoint.split('/').nth(3).unwrap(), "{endpoint} as {who}");
            }
        }
    }
    assert!(wrong.is_empty(), "authorisation table mismatches:\n{}", wrong.join("\n"));

    // Revocation by the vendor takes effect on the agent's very next request.
    let a3 = api.with_token(Some(&agent3));
    assert_eq!(a3.get("/v1/partners/p1/balance").status, 200);
    api.post_expect("/v1/agents/agent-3/revoke", "revoke-agent-3", &json!(null), 201);
    a3.get("/v1/partners/p1/balance").problem(401);
    a3.post("/v1/leads", "after-revoke", &lead_body("lead-after-revoke", "growth", "p1")).problem(401);
    // Revoking again is a conflict.
    api.post("/v1/agents/agent-3/revoke", "revoke-agent-3-again", &json!(null)).problem(409);
    // Neither an agent nor another partner may revoke an agent; its own partner may.
    let a1 = api.with_token(Some(&agent1));
    a1.post("/v1/agents/agent-1/revoke", "agent-revokes-itself", &json!(null)).problem(403);
    // Another partner's agent is not found, as if it did not exist.
    api.with_token(Some(&p2)).post("/v1/agents/agent-1/revoke", "p2-revokes-agent-1", &json!(null)).problem(404);
    assert_eq!(a1.get("/v1/partners/p1/balance").status, 200, "agent-1 is still authorised");
    api.with_token(Some(&p1)).post_expect("/v1/agents/agent-1/revoke", "p1-revokes-agent-1", &json!(null), 201);
    a1.get("/v1/partners/p1/balance").problem(401);
}

#[test]
fn bad_input_is_a_problem_and_changes_nothing() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    let last = setup_program(&api, &["p1", "p2"], "lead-b");
    let next = next_seq(&last);
    let balance = || api.get("/v1/partners/p2/balance").json();
    let before = balance();
    assert_eq!(before["earned"], "0.00");

    let conv = |revenue: Value, currency: &str| {
        serde_json::to_vec(&json!({"conversion": "C-bad", "lead": "lead-b", "revenue": revenue, "currency": currency}))
            .unwrap()
    };
    let json_ct = Some("application/json");
    let mut big =
        br#"{"conversion": "C-big", "lead": "lead-b", "revenue": "1.00", "currency": "USD", "pad": ""#.to_vec();
    big.resize(big.len() + 5 * 1024 * 1024, b'x');
    big.extend_from_slice(b"\"}");
    let mut split110 = program_spec("split110");
    split110["split"]["originator"] = json!("50");
    let mut pct101 = program_spec("pct101");
    pct101["pool"]["percent"] = json!("101");
    // (name, path, Idempotency-Key, Content-Type, body, status, a word the detail must hold)
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed JSON", "/v1/conversions", Some("k-malformed"), json_ct, br#"{"conversion": "C-bad", "lead": "#.to_vec(), 400, ""),
        ("not JSON at all", "/v1/conversions", Some("k-garbage"), json_ct, b"\xff\xfe garbage".to_vec(), 400, ""),
        ("revenue as a number", "/v1/conversions", Some("k-type-1"), json_ct, conv(json!(12.5), "USD"), 400, "revenue"),
        (
            "lead as an array",
            "/v1/conversions",
            Some("k-type-2"),
            json_ct,
            serde_json::to_vec(&json!({"conversion": "C-bad", "lead": ["lead-b"], "revenue": "1.00", "currency": "USD"})).unwrap(),
            400,
            "lead",
        ),
        (
            "unknown field",
            "/v1/conversions",
            Some("k-unknown"),
            json_ct,
            serde_json::to_vec(&json!({"conversion": "C-bad", "lead": "lead-b", "revenue": "1.00", "currency": "USD", "discount": "5"})).unwrap(),
            400,
            "discount",
        ),
        ("5 MiB body", "/v1/conversions", Some("k-big"), json_ct, big, 413, "4194304"),
        ("negative revenue", "/v1/conversions", Some("k-negative"), json_ct, conv(json!("-10.00"), "USD"), 422, "greater than zero"),
        ("zero revenue", "/v1/conversions", Some("k-zero"), json_ct, conv(json!("0"), "USD"), 422, "greater than zero"),
        ("over-precise revenue", "/v1/conversions", Some("k-precise"), json_ct, conv(json!("1.234"), "USD"), 422, "decimal places"),
        ("unknown currency", "/v1/conversions", Some("k-currency"), json_ct, conv(json!("1.00"), "XYZ"), 422, "XYZ"),
        (
            "referral cycle",
            "/v1/leads/lead-b/handoffs",
            Some("k-cycle"),
            json_ct,
            serde_json::to_vec(&json!({"from": "p2", "to": "p1"})).unwrap(),
            422,
            "cycle",
        ),
        ("split totalling 110 %", "/v1/programs", Some("k-110"), json_ct, serde_json::to_vec(&split110).unwrap(), 422, "110"),
        ("pool percent over 100", "/v1/programs", Some("k-101"), json_ct, serde_json::to_vec(&pct101).unwrap(), 400, "101"),
        ("missing Idempotency-Key", "/v1/conversions", None, json_ct, conv(json!("1.00"), "USD"), 400, "Idempotency-Key"),
        ("empty Idempotency-Key", "/v1/conversions", Some(""), json_ct, conv(json!("1.00"), "USD"), 400, "Idempotency-Key"),
        ("no Content-Type", "/v1/conversions", Some("k-no-ct"), None, conv(json!("1.00"), "USD"), 415, "Content-Type"),
    ];
    let mut wrong = Vec::new();
    for (name, path, key, ct, body, status, word) in &cases {
        let r = api.post_raw(path, *key, *ct, body);
        if r.status != *status {
            wrong.push(format!("{name}: POST {path}: expected {status}, got {} {}", r.status, r.text()));
            continue;
        }
        let p = r.problem(*status);
        let detail = p["detail"].as_str().unwrap();
        assert!(detail.contains(word), "{name}: detail {detail:?} should mention {word:?}");
    }
    assert!(wrong.is_empty(), "bad input answered wrongly:\n{}", wrong.join("\n"));

    // Nothing changed: balances, and the next fact gets the sequence number it would
    // have had. A key used only by rejected requests is still free.
    assert_eq!(balance(), before);
    let ok = api.post_expect(
        "/v1/conversions",
        "k-precise",
        &json!({"conversion": "C-bad", "lead": "lead-b", "revenue": "1.23", "currency": "USD"}),
        201,
    );
    assert_eq!(ok["seq"], json!(next), "rejected requests must not have written anything");
    assert_eq!(ok["replayed"], false);
    assert_eq!(mandate_tokens(&ok).len(), 2);

    // A deal whose lead no partner registered is not bad input: it is recorded, earns
    // nothing, and says why.
    let after = balance();
    let none = api.post_expect(
        "/v1/conversions",
        "k-no-lead",
        &json!({"conversion": "C-direct", "lead": "no-such-lead", "revenue": "1.00", "currency": "USD"}),
        201,
    );
    assert_eq!(none["outcome"]["outcome"], "no_commission", "{none}");
    assert!(none["outcome"]["reason"].as_str().unwrap().contains("no-such-lead"), "{none}");
    assert!(mandate_tokens(&none).is_empty(), "{none}");
    assert_eq!(balance(), after);
}

/// BUG: numbers at the edge of `u64` in a mandate id or a page cursor overflow
/// `seq + 1` in the handlers (debug builds panic; release builds wrap around).
#[test]
fn edge_numbers_in_paths_and_queries_are_answered_not_panicked() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    let last = setup_program(&api, &["p1", "p2"], "lead-e");
    let seq = next_seq(&last);
    api.post_expect(
        "/v1/conversions",
        "conv-e",
        &json!({"conversion": "C-e", "lead": "lead-e", "revenue": "50.00", "currency": "USD"}),
        201,
    );
    let max = u64::MAX;
    let mut wrong = Vec::new();
    // Sanity: ordinary cursors work.
    let page = api.get(&format!("/v1/partners/p1/mandates?after={seq}"));
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["mandates"], json!([]), "nothing after the last conversion");
    match api.try_get(&format!("/v1/partners/p1/receipts/md_{max}_0")) {
        Ok(r) if r.status == 404 && r.header("content-type") == Some("application/problem+json") => {}
        Ok(r) => {
            wrong.push(format!("GET /v1/partners/p1/receipts/md_{max}_0: expected 404, got {} {}", r.status, r.text()))
        }
        Err(e) => wrong.push(format!("GET /v1/partners/p1/receipts/md_{max}_0: expected 404, connection failed: {e}")),
    }
    match api.try_get(&format!("/v1/partners/p1/mandates?after={max}")) {
        Ok(r) if r.status == 200 && r.json()["mandates"] == json!([]) => {}
        Ok(r) => wrong.push(format!(
            "GET /v1/partners/p1/mandates?after={max}: expected 200 with no mandates, got {} {}",
            r.status,
            r.text()
        )),
        Err(e) => wrong.push(format!("GET /v1/partners/p1/mandates?after={max}: connection failed: {e}")),
    }
    // The server is still up.
    assert_eq!(api.get("/v1/partners/p1/balance").status, 200);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A conversion over the budget is held; releasing it is refused (422, nothing written)
/// until an amendment raises the budget, then pays the amounts computed when it was
/// recorded. Its closer is paid through a payout batch the rail first fails, then
/// confirms; the balance shows money in flight; the store audits.
#[test]
fn held_conversions_are_released_and_payout_batches_answered_by_the_rail() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    let mut spec = program_spec("growth");
    spec["budget"] = json!({"max": 150_000});
    let r = api.post_expect("/v1/programs", "setup-program", &spec, 201);
    assert_eq!(r["seq"], 0);
    for p in ["p1", "p2"] {
        api.post_expect("/v1/partners", &format!("enroll-{p}"), &enroll_body(p, "growth"), 201);
    }
    api.post_expect("/v1/leads", "lead", &lead_body("lead-h", "growth", "p1"), 201);
    api.post_expect("/v1/leads/lead-h/handoffs", "handoff", &json!({"from": "p1", "to": "p2"}), 201);
    let convert = |id: &str| {
        api.post_expect(
            "/v1/conversions",
            id,
            &json!({"conversion": id, "lead": "lead-h", "revenue": "10000.00", "currency": "USD"}),
            201,
        )
    };
    let c1 = convert("C1");
    assert_eq!(c1["outcome"]["outcome"], "settled", "pool 1000.00 of the 1500.00 budget");
    let held = convert("C2");
    assert_eq!(held["outcome"]["outcome"], "held");
    assert!(held["outcome"]["reason"].as_str().unwrap().contains("budget"), "{held}");

    // Still over budget: a problem, and nothing written.
    let before = api.get("/v1/partners/p2/balance").json();
    let p = api.post("/v1/conversions/C2/release", "release-1", &json!({})).problem(422);
    assert!(p["detail"].as_str().unwrap().contains("stays held: monthly budget exceeded"), "{p}");
    assert_eq!(api.get("/v1/partners/p2/balance").json(), before);
    api.post("/v1/conversions/C1/release", "release-c1", &json!({})).problem(409);

    spec["budget"] = json!({"max": 500_000});
    let amended = api.post_expect(
        "/v1/programs/growth/amendments",
        "raise-budget",
        &json!({"spec": spec, "effective_from": "2025-01-01T00:00:00Z"}),
        201,
    );
    let release_seq = next_seq(&amended);
    let released = api.post_expect("/v1/conversions/C2/release", "release-2", &json!({}), 201);
    assert_eq!(released["seq"], json!(release_seq));
    assert_eq!(released["outcome"]["outcome"], "settled");
    let ms = released["mandates"].as_array().unwrap();
    let ids: Vec<&str> = ms.iter().map(|m| m["mandate_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [format!("md_{release_seq}_0"), format!("md_{release_seq}_1")]);
    let closer = ids[1].to_owned();
    let to_p2 = |r: &Value| -> i64 {
        r["mandates"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["partner"] == "p2")
            .map(|m| m["amount"]["amount"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(to_p2(&released), to_p2(&c1), "the same deal pays the same split once released");
    let owed = to_p2(&c1) + to_p2(&released);
    let dec = |minor: i64| format!("{}.{:02}", minor / 100, minor % 100);
    let basis = &jws_payload(ms[1]["mandate"].as_str().unwrap())["basis"];
    assert_eq!((basis["conversion"].as_str(), basis["log"]["seq"].as_u64()), (Some("C2"), Some(release_seq)));
    // The same key and body is the same answer; the partner lists the released mandate.
    assert_eq!(api.post_expect("/v1/conversions/C2/release", "release-2", &json!({}), 200)["seq"], json!(release_seq));
    let listed = api.get("/v1/partners/p2/mandates").json();
    let listed: Vec<&str> =
        listed["mandates"].as_array().unwrap().iter().map(|m| m["mandate_id"].as_str().unwrap()).collect();
    assert!(listed.contains(&closer.as_str()), "{listed:?}");

    // A payout batch of both of p2's mandates: in flight, failed, batched again, paid.
    let mut all: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    all.sort_by_key(|id| id.split('_').nth(1).unwrap().parse::<u64>().unwrap());
    let batch = |b: &str, key: &str| {
        api.post_expect(
            "/v1/payouts",
            key,
            &json!({"batch": b, "partner": "p2", "rail": "sepa", "mandate_ids": all}),
            201,
        )
    };
    let b1 = batch("B1", "batch-1");
    let created = b1["events"].as_array().unwrap().iter().find(|e| e["type"] == "payout_batch_created").unwrap();
    assert_eq!(created["data"]["amount"], json!({"amount": owed, "currency": "USD"}));
    let bal = api.get("/v1/partners/p2/balance").json();
    assert_eq!((bal["payable"].as_str(), bal["in_payout"].as_str()), (Some("0.00"), Some(dec(owed).as_str())));
    let answer = |s: &str, b: &str, ok: bool| {
        let mut body = json!({"settlement": s, "batch": b, "partner": "p2", "rail": "sepa", "mandate_ids": all});
        body[if ok { "confirmation_id" } else { "error" }] = json!(if ok { "SEPA-OK" } else { "AC04" });
        api.post("/v1/settlements", s, &body)
    };
    assert_eq!(answer("S1", "B1", false).status, 201);
    assert_eq!(
        api.get("/v1/partners/p2/balance").json()["payable"],
        json!(dec(owed)),
        "a failed batch is payable again"
    );
    answer("S1b", "B1", true).problem(409);
    batch("B2", "batch-2");
    let paid = answer("S2", "B2", true).json();
    assert!(paid["events"].as_array().unwrap().iter().any(|e| e["type"] == "payout_booked"), "{paid}");
    let bal = api.get("/v1/partners/p2/balance").json();
    assert_eq!((bal["in_payout"].as_str(), bal["paid"].as_str()), (Some("0.00"), Some(dec(owed).as_str())));

    assert!(server.stop().success());
    settle_ok([OsArg::from("audit"), "--data".into(), data.into()]);
}

/// A partner's agent with its own key: the partner registers the agent's public key in
/// the log; the agent then signs short-lived tokens itself (no secret from the vendor)
/// and acts within its grant. A token signed by another key, for another audience, too
/// long-lived, expired, or of an agent with no key or a revoked one, is refused with 401.
#[test]
fn an_agent_signs_its_own_short_lived_tokens_with_the_key_its_partner_registered() {
    use settle_mandates::keys::SigningKey;
    let (dir, data, admin) = new_data();
    let p1 = token(&data, "partner", "p1", None, "read,leads-write");
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1", "p2"], "lead-1");
    let key = SigningKey::from_seed(&[42; 32]);
    let now = chrono::Utc::now();
    let grant = |agent: &str, public_key: Option<&SigningKey>| {
        let mut g = json!({"agent": agent, "partner": "p1", "scopes": ["leads_write", "read"],
               "not_before": (now - chrono::Duration::hours(1)).to_rfc3339(),
               "expires_at": (now + chrono::Duration::days(1)).to_rfc3339()});
        if let Some(k) = public_key {
            g["public_key"] = serde_json::to_value(k.to_jwk(None, None)).unwrap();
        }
        g
    };
    let partner = api.with_token(Some(&p1));
    partner.post_expect("/v1/agents", "grant-keyed", &grant("agent-keyed", Some(&key)), 201);
    partner.post_expect("/v1/agents", "grant-plain", &grant("agent-plain", None), 201);
    // A key that is not Ed25519 (or whose kid is not its thumbprint) is refused.
    let mut wrong = grant("agent-bad", Some(&key));
    wrong["public_key"]["kid"] = "not-the-thumbprint".into();
    let p = partner.post("/v1/agents", "grant-bad", &wrong).problem(422);
    assert!(p["detail"].as_str().unwrap().contains("public key"), "{p}");

    let t = now.timestamp();
    let jwt = |k: &SigningKey, iss: &str, aud: &str, iat: i64, exp: i64| {
        let claims = json!({"aud": aud, "exp": exp, "iat": iat, "iss": iss});
        settle_mandates::jws::sign("settle-agent+jwt", &serde_json::to_vec(&claims).unwrap(), k)
    };
    let good = jwt(&key, "agent-keyed", "settle.local/log", t - 5, t + 120);
    let agent = api.with_token(Some(&good));
    let lead = agent.post_expect("/v1/leads", "agent-lead", &lead_body("lead-2", "growth", "p1"), 201);
    assert_eq!(lead["events"][0]["by"], "agent:agent-keyed", "{lead}");
    assert_eq!(agent.get("/v1/partners/p1/balance").status, 200);
    assert_eq!(agent.get("/v1/partners/p2/balance").status, 404, "only its partner's data");
    assert_eq!(agent.post("/v1/programs", "agent-program", &program_spec("other")).status, 403, "within its grant");
    let refused = [
        ("signed by another key", jwt(&SigningKey::from_seed(&[7; 32]), "agent-keyed", "settle.local/log", t, t + 60)),
        ("another audience", jwt(&key, "agent-keyed", "other.example/log", t, t + 60)),
        ("living longer than 300 s", jwt(&key, "agent-keyed", "settle.local/log", t, t + 301)),
        ("expired", jwt(&key, "agent-keyed", "settle.local/log", t - 200, t - 100)),
        ("issued in the future", jwt(&key, "agent-keyed", "settle.local/log", t + 600, t + 700)),
        ("an agent with no key", jwt(&key, "agent-plain", "settle.local/log", t, t + 60)),
        ("an unknown agent", jwt(&key, "agent-nobody", "settle.local/log", t, t + 60)),
        ("living forever by overflow", jwt(&key, "agent-keyed", "settle.local/log", -1, i64::MAX)),
        ("the registered kid, another payload under its signature", {
            let other = jwt(&key, "agent-keyed", "settle.local/log", t, t + 290);
            let mut parts: Vec<&str> = good.split('.').collect();
            parts[1] = other.split('.').nth(1).unwrap();
            parts.join(".")
        }),
    ];
    for (what, tok) in &refused {
        let r = api.with_token(Some(tok)).get("/v1/partners/p1/balance");
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    // Revoked: the same token no longer works.
    api.post_expect("/v1/agents/agent-keyed/revoke", "revoke-keyed", &json!(null), 201);
    assert_eq!(agent.get("/v1/partners/p1/balance").status, 401);
    server.stop();
}

#[test]
fn every_error_of_every_layer_is_a_problem_and_smaller_holes_stay_closed() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1", "p2"], "l1");
    let is_problem = |r: &Resp, status: u16, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let ct = r.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.clone()).unwrap_or_default();
        assert!(ct.starts_with("application/problem+json"), "{what}: content-type {ct:?}");
        assert_eq!(r.json()["status"], status, "{what}: {}", r.text());
    };
    // Routing's 405, extractors' 400s, the path's bad UTF-8.
    is_problem(&api.get("/v1/leads"), 405, "GET on a POST route");
    is_problem(&api.get("/v1/partners/p1/mandates?limit=abc"), 400, "a limit that is not a number");
    is_problem(&api.get("/v1/partners/p1/mandates?after=-1"), 400, "a negative cursor");
    is_problem(&api.get("/v1/checkpoints/consistency"), 400, "a consistency proof without sizes");
    is_problem(&api.get("/v1/partners/%FF/balance"), 400, "a path that is not UTF-8");
    // A declared body over the limit is refused at once, before any of it is sent.
    let auth = format!("Bearer {admin}");
    let t = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
    use std::io::{Read, Write};
    write!(
        s,
        "POST /v1/conversions HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nIdempotency-Key: big\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut head = vec![0u8; 4096];
    let n = s.read(&mut head).expect("read");
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.to_ascii_lowercase().contains("application/problem+json"), "{head}");
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "413 came after {:?}", t.elapsed());
    // An idempotency key is visible ASCII: no spaces.
    let r = api.post("/v1/leads", "a b", &lead_body("l-space", "growth", "p1"));
    is_problem(&r, 400, "an idempotency key with a space");
    // One decimal grammar: at most the currency's fraction digits, digits on both sides.
    for bad in ["1.230", "1.", ".5", "1e3", "+1"] {
        let body = json!({"conversion": format!("d-{bad}"), "lead": "l1", "revenue": bad, "currency": "USD"});
        is_problem(&api.post("/v1/conversions", &format!("dec-{bad}"), &body), 422, bad);
    }
    let body = json!({"conversion": "d-jpy", "lead": "l1", "revenue": "1.0", "currency": "JPY"});
    is_problem(&api.post("/v1/conversions", "dec-jpy", &body), 422, "JPY 1.0");
    // An unknown partner is not found, whatever is asked of it.
    is_problem(&api.get("/v1/partners/nobody/balance"), 404, "balance of nobody");
    is_problem(&api.get("/v1/partners/nobody/mandates"), 404, "mandates of nobody");
    // Months count from 1.
    let body =
        json!({"conversion": "m0", "lead": "l1", "revenue": "10.00", "currency": "USD", "subscription_month": 0});
    is_problem(&api.post("/v1/conversions", "m0", &body), 422, "subscription month 0");
    // None of that was recorded: p1 has no mandate.
    let list = api.get("/v1/partners/p1/mandates").json();
    assert_eq!(list["mandates"], json!([]), "{list}");
    server.stop();
}

#[test]
fn tokens_issued_or_revoked_by_the_cli_or_the_api_take_effect_at_once() {
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1"], "l1");
    // Issued on the command line while the server runs: works at the next request.
    let t = token(&data, "partner", "p1", None, "read");
    assert_eq!(api.with_token(Some(&t)).get("/v1/partners/p1/balance").status, 200);
    let list = settle_ok(["keys".as_ref(), "list".as_ref(), "--data".as_ref(), data.as_os_str()]);
    let id = list
        .lines()
        .rfind(|l| l.starts_with("token ") && l.contains("Partner p1"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("the new token is listed")
        .to_owned();
    assert!(!list.contains(&t), "a list never shows a secret");
    // Revoked on the command line: refused at the next request.
    settle_ok(["keys".as_ref(), "revoke".as_ref(), "--data".as_ref(), data.as_os_str(), id.as_ref()]);
    api.with_token(Some(&t)).get("/v1/partners/p1/balance").problem(401);
    // An expiry: in force, then not.
    let short = settle_ok([
        "keys".as_ref(),
        "token".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--kind".as_ref(),
        "partner".as_ref(),
        "--subject".as_ref(),
        "p1".as_ref(),
        "--scope".as_ref(),
        "read".as_ref(),
        "--expires-in".as_ref(),
        "2s".as_ref(),
    ]);
    let short = short.trim();
    assert_eq!(api.with_token(Some(short)).get("/v1/partners/p1/balance").status, 200);
    wait_for("the 2 s token to expire", 10, || {
        (api.with_token(Some(short)).get("/v1/partners/p1/balance").status == 401).then_some(())
    });
    // Over the API, by a vendor administrator with tokens_write only.
    let issuer = token(&data, "vendor-admin", "security", None, "tokens-write,read");
    let sec = api.with_token(Some(&issuer));
    let body = json!({"kind": "partner", "subject": "p1", "scopes": ["read"], "expires_in": 3600});
    let issued = sec.post_expect("/v1/tokens", "issue-1", &body, 201);
    let secret = issued["token"].as_str().expect("the secret, shown once").to_owned();
    let again = sec.post_expect("/v1/tokens", "issue-1", &body, 200);
    assert_eq!(again["id"], issued["id"]);
    assert!(again.get("token").is_none(), "a retry never shows the secret again: {again}");
    assert_eq!(api.with_token(Some(&secret)).get("/v1/partners/p1/balance").status, 200);
    let listed = sec.get("/v1/tokens").text();
    assert!(!listed.contains(&secret) && !listed.contains("\"hash\""), "no secret or hash is listed");
    // More than the issuer holds is refused; so is a vendor agent.
    let more = json!({"kind": "vendor_admin", "subject": "x", "scopes": ["programs_write"]});
    sec.post("/v1/tokens", "issue-more", &more).problem(403);
    let agent = token(&data, "vendor-agent", "bot", None, "tokens-write,read");
    api.with_token(Some(&agent)).post("/v1/tokens", "issue-agent", &body).problem(403);
    let id = issued["id"].as_str().expect("id");
    let h = [("Authorization", format!("Bearer {issuer}")), ("Idempotency-Key", "rev".to_owned())];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = http(server.addr, "DELETE", &format!("/v1/tokens/{id}"), &h, None).expect("DELETE");
    assert_eq!(r.status, 204, "{}", r.text());
    api.with_token(Some(&secret)).get("/v1/partners/p1/balance").problem(401);
    // A token that expires cannot outlive itself through the tokens it issues.
    let brief = settle_ok([
        "keys".as_ref(),
        "token".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--kind".as_ref(),
        "vendor-admin".as_ref(),
        "--subject".as_ref(),
        "brief".as_ref(),
        "--scope".as_ref(),
        "tokens-write,read".as_ref(),
        "--expires-in".as_ref(),
        "1h".as_ref(),
    ]);
    let brief = api.with_token(Some(brief.trim()));
    let forever = json!({"kind": "partner", "subject": "p1", "scopes": ["read"]});
    brief.post("/v1/tokens", "forever", &forever).problem(403);
    let longer = json!({"kind": "partner", "subject": "p1", "scopes": ["read"], "expires_in": 7200});
    brief.post("/v1/tokens", "longer", &longer).problem(403);
    let within = json!({"kind": "partner", "subject": "p1", "scopes": ["read"], "expires_in": 600});
    brief.post_expect("/v1/tokens", "within", &within, 201);
    server.stop();
}

/// An agent signs its token with a stock JWT library (PyJWT), not settle's code: the
/// server accepts it within its grant, and refuses one PyJWT signs with another key.
#[test]
fn an_agent_token_signed_by_pyjwt_is_accepted() {
    use settle_mandates::keys::SigningKey;
    support::python::ensure("jwt, cryptography", &["pyjwt[crypto]", "cryptography"], "the PyJWT agent token test");
    let (dir, data, admin) = new_data();
    let server = Server::start(&data, dir.path());
    let api = server.api(Some(&admin));
    setup_program(&api, &["p1", "p2"], "lead-1");
    let seed = [7u8; 32];
    let key = SigningKey::from_seed(&seed);
    let jwk = key.to_jwk(None, None);
    let now = chrono::Utc::now();
    let grant = json!({"agent": "agent-py", "partner": "p1", "scopes": ["read"],
        "not_before": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "expires_at": (now + chrono::Duration::days(1)).to_rfc3339(),
        "public_key": serde_json::to_value(&jwk).expect("jwk")});
    api.post_expect("/v1/agents", "grant-py", &grant, 201);
    let kid = serde_json::to_value(&jwk).expect("jwk")["kid"].as_str().expect("kid").to_owned();
    let sign = |seed: [u8; 32]| {
        let script = r#"
import sys, time, jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[1]))
now = int(time.time())
print(jwt.encode({"iss": "agent-py", "aud": sys.argv[3], "iat": now, "exp": now + 120}, key,
                 algorithm="EdDSA", headers={"kid": sys.argv[2], "typ": "settle-agent+jwt"}))
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script, &hex::encode(seed), &kid, "settle.local/log"])
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", support::python::describe(&out));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    };
    let token = sign(seed);
    let agent = api.with_token(Some(&token));
    let b = agent.get("/v1/partners/p1/balance");
    assert_eq!(b.status, 200, "{}", b.text());
    agent.get("/v1/partners/p2/balance").problem(404);
    agent.post("/v1/leads", "py-lead", &lead_body("py-lead", "growth", "p1")).problem(403);
    api.with_token(Some(&sign([8u8; 32]))).get("/v1/partners/p1/balance").problem(401);
    server.stop();
}

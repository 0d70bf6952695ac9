//! Webhooks end to end: the real `settle serve` delivers to the partner kit's receiver
//! (`examples/python/webhook_receiver.py`), which checks the `v1` signature with the stock
//! `standardwebhooks` library and the `v1a` signature with `cryptography` and the JWKS.
//! Receivers that fail, a server killed with SIGKILL while events wait, dead letters and
//! the vendor's replay: every event arrives, each exactly once by `webhook-id`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use support::*;

/// The receiver, killed on drop.
struct Receiver {
    child: Child,
    url: String,
    out: PathBuf,
    secret: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path, name: &str, jwks: &Path, opts: &[&str]) -> Receiver {
        python::ensure_webhook_deps();
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let port_file = dir.join(format!("{name}.port"));
        let out = dir.join(format!("{name}.jsonl"));
        let secret = dir.join(format!("{name}.secret"));
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("receiver log");
        let child = Command::new("python3")
            .arg(workspace.join("examples").join("python").join("webhook_receiver.py"))
            .arg("--jwks")
            .arg(jwks)
            .arg("--secret-file")
            .arg(&secret)
            .arg("--out")
            .arg(&out)
            .arg("--port-file")
            .arg(&port_file)
            .args(opts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 runs the receiver");
        let port = wait_for("the receiver's port", 30, || std::fs::read_to_string(&port_file).ok());
        let scheme = if opts.contains(&"--tls-dir") { "https" } else { "http" };
        Receiver { child, url: format!("{scheme}://127.0.0.1:{}/hooks/{name}", port.trim()), out, secret }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver writes JSON lines"))
            .collect()
    }

    /// Accepted events by webhook-id; panics on a rejected delivery or an id accepted twice.
    fn accepted(&self) -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        for l in self.lines() {
            assert!(l.get("rejected").is_none(), "the receiver refused a delivery: {l}");
            if let Some(id) = l["webhook_id"].as_str() {
                assert!(m.insert(id.to_owned(), l["event"].clone()).is_none(), "{id} accepted twice");
            }
        }
        m
    }

    fn wait_for_ids(&self, want: &BTreeSet<String>, secs: u64) -> BTreeMap<String, Value> {
        wait_for(&format!("{} webhooks at {}", want.len(), self.url), secs, || {
            let got = self.accepted();
            want.iter().all(|id| got.contains_key(id)).then_some(got)
        })
    }
}

fn webhook_type(log_type: &str) -> Option<&'static str> {
    Some(match log_type {
        "mandate_issued" => "mandate.issued",
        "clawback_issued" => "clawback.issued",
        "holds_released" => "hold.released",
        "settlement_confirmed" => "settlement.confirmed",
        "settlement_failed" => "settlement.failed",
        "payout_batch_created" => "payout.batched",
        "payout_booked" => "payout.booked",
        _ => return None,
    })
}

/// The webhook events a write response announces: id → (type, log event).
fn events_of(resp: &Value, out: &mut BTreeMap<String, (String, Value)>) {
    let seq = resp["seq"].as_u64().expect("seq");
    for (i, e) in resp["events"].as_array().expect("events").iter().enumerate() {
        if let Some(t) = webhook_type(e["type"].as_str().expect("type")) {
            out.insert(format!("evt_{}", seq + i as u64), (t.to_owned(), e["data"].clone()));
        }
    }
}

/// The id of the payment mandate to `partner` in a conversion's answer.
fn payment_to(conversion: &Value, partner: &str) -> String {
    let mandates = conversion["mandates"].as_array().expect("mandates");
    let m = mandates.iter().find(|m| m["partner"] == partner && m["direction"] == "payment");
    m.and_then(|m| m["mandate_id"].as_str())
        .unwrap_or_else(|| panic!("{partner} is not paid in {conversion}"))
        .to_owned()
}

/// Records conversion `id` of lead-1 (the idempotency key is the id).
fn convert(api: &Api, id: &str, revenue: &str) -> Value {
    let body = json!({"conversion": id, "lead": "lead-1", "revenue": revenue, "currency": "USD"});
    api.post_expect("/v1/conversions", &id.to_lowercase(), &body, 201)
}

const FAST_RETRIES: &[&str] = &[
    "--webhook-backoff-ms",
    "100",
    "--webhook-backoff-cap-ms",
    "800",
    "--webhook-attempts",
    "40",
    "--webhook-allow-private",
];

#[test]
fn signed_webhooks_survive_failing_receivers_a_crash_and_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    keys_create(&data);
    let admin = token(&data, "vendor-admin", "ops", None, ADMIN_SCOPES);
    let p1 = token(&data, "partner", "p1", None, "read,webhooks-write");
    let p2 = token(&data, "partner", "p2", None, "read,webhooks-write");
    let srv = Server::start_with(&data, dir.path(), FAST_RETRIES);
    let api = srv.api(Some(&admin));

    // The program, three partners, one lead handed p1 → p2 → p3.
    three_hop_program(&api);

    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, api.get("/.well-known/jwks.json").text()).expect("write JWKS");
    let vendor_down = dir.path().join("vendor-down");
    std::fs::write(&vendor_down, "").expect("flag");
    let vendor_rx =
        Receiver::start(dir.path(), "vendor", &jwks, &["--fail-while", vendor_down.to_str().expect("utf-8")]);
    let p1_rx = Receiver::start(dir.path(), "p1", &jwks, &["--fail-first", "3"]);

    // Subscriptions: the vendor hears of everything, p1 of its own money only.
    let sub = |api: &Api, key: &str, body: &Value| api.post_expect("/v1/webhooks", key, body, 201);
    let vendor_sub = sub(&api, "sub-vendor", &json!({"url": vendor_rx.url}));
    assert!(vendor_sub["secret"].as_str().expect("secret").starts_with("whsec_"));
    assert!(vendor_sub["public_key"].as_str().expect("public key").starts_with("whpk_"));
    assert_eq!(vendor_sub["events"].as_array().map(Vec::len), Some(14), "all event types by default");
    std::fs::write(&vendor_rx.secret, vendor_sub["secret"].as_str().expect("secret")).expect("secret file");
    let p1_api = srv.api(Some(&p1));
    let p1_sub = sub(&p1_api, "sub-p1", &json!({"url": p1_rx.url}));
    std::fs::write(&p1_rx.secret, p1_sub["secret"].as_str().expect("secret")).expect("secret file");
    assert_eq!(p1_sub["partner"], "p1");

    // Idempotent creation; refusals change nothing.
    let again = api.post("/v1/webhooks", "sub-vendor", &json!({"url": vendor_rx.url}));
    assert_eq!(again.status, 200, "a retry answers the original: {}", again.text());
    assert_eq!(again.json(), vendor_sub, "the original answer, secret included");
    assert_eq!(api.post("/v1/webhooks", "sub-vendor", &json!({"url": p1_rx.url})).problem(409)["status"], 409);
    api.post("/v1/webhooks", "sub-ftp", &json!({"url": "ftp://127.0.0.1/x"})).problem(422);
    api.post("/v1/webhooks", "sub-bad-type", &json!({"url": vendor_rx.url, "events": ["mandate.paid"]})).problem(422);
    api.post("/v1/webhooks", "sub-extra", &json!({"url": vendor_rx.url, "secret": "mine"})).problem(400);
    let none = api.post_raw("/v1/webhooks", None, Some("application/json"), br#"{"url":"http://127.0.0.1:9/x"}"#);
    none.problem(400);
    srv.api(None).post("/v1/webhooks", "anon", &json!({"url": vendor_rx.url})).problem(401);
    let vid = vendor_sub["id"].as_str().expect("id").to_owned();
    let pid = p1_sub["id"].as_str().expect("id").to_owned();
    // Partners see only their own subscriptions; only the vendor replays.
    srv.api(Some(&p2)).get(&format!("/v1/webhooks/{pid}")).problem(404);
    p1_api.get(&format!("/v1/webhooks/{vid}")).problem(404);
    assert_eq!(p1_api.get("/v1/webhooks").json()["subscriptions"].as_array().map(Vec::len), Some(1));
    assert_eq!(api.get("/v1/webhooks").json()["subscriptions"].as_array().map(Vec::len), Some(2));
    p1_api.post(&format!("/v1/webhooks/{pid}/replay"), "r", &json!({})).problem(403);

    // Money moves: two conversions, a partial refund, holds advanced, a settlement.
    let mut expected = BTreeMap::new();
    let c1 = convert(&api, "C1", "12345.67");
    events_of(&c1, &mut expected);
    let c2 = convert(&api, "C2", "500.00");
    events_of(&c2, &mut expected);
    let refund = api.post_expect(
        "/v1/refunds",
        "r1",
        &json!({"refund": "R1", "conversion": "C1", "amount": "1000.00", "currency": "USD"}),
        201,
    );
    events_of(&refund, &mut expected);
    events_of(&api.post_expect("/v1/holds/advance", "adv", &json!({}), 201), &mut expected);
    let p1_c2 = payment_to(&c2, "p1");
    let settled = api.post_expect(
        "/v1/settlements",
        "s1",
        &json!({"settlement": "S1", "partner": "p1", "rail": "book", "confirmation_id": "BK-1", "mandate_ids": [p1_c2]}),
        201,
    );
    events_of(&settled, &mut expected);
    let p1_c1 = payment_to(&c1, "p1");
    let failed = api.post_expect(
        "/v1/settlements",
        "s2",
        &json!({"settlement": "S2", "partner": "p1", "rail": "sepa", "error": "AC04", "mandate_ids": [p1_c1]}),
        201,
    );
    events_of(&failed, &mut expected);
    // The same mandate again, through a payout batch the rail confirms as a whole.
    let batched = api.post_expect(
        "/v1/payouts",
        "b1",
        &json!({"batch": "B1", "partner": "p1", "rail": "sepa", "mandate_ids": [p1_c1]}),
        201,
    );
    events_of(&batched, &mut expected);
    let paid = api.post_expect(
        "/v1/settlements",
        "s3",
        &json!({"settlement": "S3", "batch": "B1", "partner": "p1", "rail": "sepa", "confirmation_id": "SEPA-1", "mandate_ids": [p1_c1]}),
        201,
    );
    events_of(&paid, &mut expected);
    let kinds: BTreeSet<&str> = expected.values().map(|(t, _)| t.as_str()).collect();
    assert!(
        [
            "mandate.issued",
            "clawback.issued",
            "settlement.confirmed",
            "settlement.failed",
            "payout.batched",
            "payout.booked"
        ]
        .iter()
        .all(|k| kinds.contains(k)),
        "the flow should produce these event types: {kinds:?}"
    );

    // p1 hears of its mandates, clawbacks, releases and settlements, nothing else.
    let mut p1_mandates = BTreeSet::new();
    for (t, d) in expected.values() {
        if t == "mandate.issued" && d["partner"] == "p1" {
            p1_mandates.insert(d["mandate_id"].as_str().expect("id").to_owned());
        }
    }
    let p1_expected: BTreeSet<String> = expected
        .iter()
        .filter(|(_, (t, d))| match t.as_str() {
            "hold.released" => {
                d["mandate_ids"].as_array().expect("ids").iter().any(|m| p1_mandates.contains(m.as_str().expect("id")))
            }
            _ => d["partner"] == "p1",
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert!(p1_expected.len() >= 3, "p1 should hear of several events: {p1_expected:?}");
    let p1_got = p1_rx.wait_for_ids(&p1_expected, 60);
    assert_eq!(p1_got.keys().cloned().collect::<BTreeSet<_>>(), p1_expected, "p1 hears of its own events only");
    for e in p1_got.values() {
        if let Some(p) = e["data"].get("partner") {
            assert_eq!(p, "p1", "{e}");
        }
        if e["type"] == "hold.released" {
            for m in e["data"]["mandate_ids"].as_array().expect("ids") {
                assert!(p1_mandates.contains(m.as_str().expect("id")), "another partner's mandate in {e}");
            }
        }
    }

    // The vendor's receiver is still down: kill the server before it recovers, restart.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(vendor_rx.accepted().is_empty(), "the vendor's receiver is down");
    // Failed attempts are counted (by this process: the restarted one may reach the
    // receiver at its first attempt, so its count is not asserted).
    let status = api.get(&format!("/v1/webhooks/{vid}")).json();
    assert!(status["delivery"]["failed_attempts"].as_u64().expect("count") >= 1, "{status}");
    srv.kill9();
    let srv = Server::start_with(&data, dir.path(), FAST_RETRIES);
    let api = srv.api(Some(&admin));
    std::fs::remove_file(&vendor_down).expect("receiver back up");
    let want: BTreeSet<String> = expected.keys().cloned().collect();
    let got = vendor_rx.wait_for_ids(&want, 90);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want, "every event, nothing else");
    for (id, (t, d)) in &expected {
        let e = &got[id];
        assert_eq!(e["type"], json!(t), "{id}");
        assert_eq!(e["data"]["seq"], json!(id[4..].parse::<u64>().expect("evt_<seq>")), "{id}");
        if t == "mandate.issued" {
            assert_eq!(e["data"]["mandate"], d["mandate"], "{id}: the signed mandate itself");
        }
    }
    eprintln!("vendor receiver: {} events {kinds:?}; p1 receiver: {} events", got.len(), p1_got.len());
    let status = api.get(&format!("/v1/webhooks/{vid}")).json();
    assert!(status["delivery"]["delivered"].as_u64().expect("count") >= 1, "{status}");
    assert!(status.get("secret").is_none(), "the secret is shown only on creation: {status}");
    let listed = api.get("/v1/webhooks").json();
    assert!(!listed.to_string().contains("whsec_"), "no secret in the list: {listed}");

    // Dead letters: a server that gives up after two attempts, a receiver that is down.
    // And https: a receiver with a certificate from a private CA the server is told to trust.
    assert!(srv.stop().success(), "graceful stop");
    let tls_dir = dir.path().join("tls");
    let tls_rx = Receiver::start(dir.path(), "tls", &jwks, &["--tls-dir", tls_dir.to_str().expect("utf-8")]);
    assert!(tls_rx.url.starts_with("https://"));
    let ca = tls_dir.join("ca.pem");
    let ca = ca.to_str().expect("utf-8");
    let srv = Server::start_with(
        &data,
        dir.path(),
        &["--webhook-backoff-ms", "50", "--webhook-attempts", "2", "--webhook-ca", ca, "--webhook-allow-private"],
    );
    let api = srv.api(Some(&admin));
    let tsub = sub(&api, "sub-tls", &json!({"url": tls_rx.url, "events": ["mandate.issued"]}));
    std::fs::write(&tls_rx.secret, tsub["secret"].as_str().expect("secret")).expect("secret file");
    let dead_down = dir.path().join("dead-down");
    std::fs::write(&dead_down, "").expect("flag");
    let dead_rx = Receiver::start(dir.path(), "dead", &jwks, &["--fail-while", dead_down.to_str().expect("utf-8")]);
    let dsub = sub(&api, "sub-dead", &json!({"url": dead_rx.url, "events": ["mandate.issued"]}));
    std::fs::write(&dead_rx.secret, dsub["secret"].as_str().expect("secret")).expect("secret file");
    let did = dsub["id"].as_str().expect("id").to_owned();
    let c3 = convert(&api, "C3", "80.00");
    let mut c3_events = BTreeMap::new();
    events_of(&c3, &mut c3_events);
    let c3_ids: BTreeSet<String> =
        c3_events.iter().filter(|(_, (t, _))| t == "mandate.issued").map(|(id, _)| id.clone()).collect();
    assert_eq!(c3_ids.len(), 3, "three hops");
    let dead = wait_for("three dead letters", 30, || {
        let d = api.get(&format!("/v1/webhooks/{did}/dead-letters")).json();
        (d["dead_letters"].as_array().map(Vec::len) == Some(3)).then_some(d)
    });
    let dead_ids: BTreeSet<String> = dead["dead_letters"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| {
            assert_eq!(d["attempts"], 2, "{d}");
            assert!(d["last_error"].as_str().expect("error").contains("503"), "{d}");
            d["webhook_id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(dead_ids, c3_ids);
    let got = tls_rx.wait_for_ids(&c3_ids, 30);
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), c3_ids, "over https, verified by the receiver");
    std::fs::remove_file(&dead_down).expect("receiver back up");
    let r = api.post(&format!("/v1/webhooks/{did}/replay"), "replay-1", &json!({}));
    assert_eq!((r.status, r.json()["queued_dead_letters"].clone()), (202, json!(3)), "{}", r.text());
    let retried = api.post(&format!("/v1/webhooks/{did}/replay"), "replay-1", &json!({}));
    assert_eq!((retried.status, retried.json()), (200, r.json()), "a retried replay answers the original");
    let other = api.post(&format!("/v1/webhooks/{did}/replay"), "replay-1", &json!({"from_seq": 0}));
    assert_eq!(other.problem(409)["title"], "Idempotency key reused");
    dead_rx.wait_for_ids(&c3_ids, 30);
    wait_for("no dead letters after the replay", 30, || {
        let d = api.get(&format!("/v1/webhooks/{did}/dead-letters")).json();
        (d["dead_letters"].as_array().map(Vec::len) == Some(0)).then_some(())
    });
    // Replay from the start of the log: every mandate ever issued, once each by id.
    let all_mandates: BTreeSet<String> = expected
        .iter()
        .chain(c3_events.iter())
        .filter(|(_, (t, _))| t == "mandate.issued")
        .map(|(id, _)| id.clone())
        .collect();
    let r = api.post(&format!("/v1/webhooks/{did}/replay"), "replay-2", &json!({"from_seq": 0}));
    assert_eq!(r.status, 202, "{}", r.text());
    let got = dead_rx.wait_for_ids(&all_mandates, 60);
    let dups = dead_rx.lines().iter().filter(|l| l.get("duplicate").is_some()).count();
    eprintln!("replay from 0: {} mandates, {dups} duplicate deliveries deduplicated by id", got.len());
    assert!(dups >= 3, "the replay from 0 redelivers C3's three mandates");
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), all_mandates);
    api.post(&format!("/v1/webhooks/{did}/replay"), "replay-3", &json!({"from_seq": 1_000_000})).problem(422);

    // A partner's agent hears of p1's money while its grant holds, and nothing after it
    // is revoked: the subscription pauses, its cursor stays put. The agent holds its own
    // key (registered with the grant) and subscribes with a token it signed itself.
    let now = chrono::Utc::now();
    let key = settle_mandates::keys::SigningKey::from_seed(&[42; 32]);
    let grant = json!({"agent": "agent-w", "partner": "p1", "scopes": ["read", "webhooks_write"],
        "not_before": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "expires_at": (now + chrono::Duration::days(1)).to_rfc3339(),
        "public_key": serde_json::to_value(key.to_jwk(None, None)).expect("JWK")});
    api.post_expect("/v1/agents", "grant-agent-w", &grant, 201);
    let claims =
        json!({"aud": "settle.local/log", "exp": now.timestamp() + 120, "iat": now.timestamp(), "iss": "agent-w"});
    let agent = settle_mandates::jws::sign("settle-agent+jwt", &serde_json::to_vec(&claims).expect("claims"), &key);
    let agent_rx = Receiver::start(dir.path(), "agent", &jwks, &[]);
    let asub = sub(&srv.api(Some(&agent)), "sub-agent", &json!({"url": agent_rx.url, "events": ["mandate.issued"]}));
    std::fs::write(&agent_rx.secret, asub["secret"].as_str().expect("secret")).expect("secret file");
    assert_eq!(asub["partner"], "p1");
    let mut c4 = BTreeMap::new();
    events_of(&convert(&api, "C4", "90.00"), &mut c4);
    let p1_c4: BTreeSet<String> = c4
        .iter()
        .filter(|(_, (t, d))| t == "mandate.issued" && d["partner"] == "p1")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(p1_c4.len(), 1);
    agent_rx.wait_for_ids(&p1_c4, 30);
    api.post_expect("/v1/agents/agent-w/revoke", "revoke-agent-w", &json!(null), 201);
    let mut c5 = BTreeMap::new();
    events_of(&convert(&api, "C5", "95.00"), &mut c5);
    let aid = asub["id"].as_str().expect("id").to_owned();
    let paused = wait_for("the agent's subscription to pause", 30, || {
        let st = api.get(&format!("/v1/webhooks/{aid}")).json();
        st["delivery"]["last_error"].as_str().is_some_and(|e| e.starts_with("paused")).then_some(st)
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(agent_rx.accepted().keys().cloned().collect::<BTreeSet<_>>(), p1_c4, "nothing after the revocation");
    let c5_seq = c5.keys().map(|id| id[4..].parse::<u64>().expect("seq")).min().expect("C5 events");
    assert!(paused["cursor"].as_u64().expect("cursor") <= c5_seq, "the cursor stays before C5: {paused}");

    // Unsubscribing stops deliveries and forgets the subscription.
    let d = support::http(
        srv.addr,
        "DELETE",
        &format!("/v1/webhooks/{did}"),
        &[("authorization", &format!("Bearer {admin}"))],
        None,
    )
    .expect("DELETE");
    assert_eq!(d.status, 204, "{}", d.text());
    api.get(&format!("/v1/webhooks/{did}")).problem(404);
    let anew =
        api.post_expect("/v1/webhooks", "sub-dead", &json!({"url": dead_rx.url, "events": ["mandate.issued"]}), 201);
    assert_ne!(anew["id"], json!(did), "after a delete, the same request subscribes anew");
    let d = support::http(
        srv.addr,
        "DELETE",
        &format!("/v1/webhooks/{}", anew["id"].as_str().expect("id")),
        &[("authorization", &format!("Bearer {admin}"))],
        None,
    )
    .expect("DELETE");
    assert_eq!(d.status, 204, "{}", d.text());
    assert_eq!(api.get("/v1/webhooks").json()["subscriptions"].as_array().map(Vec::len), Some(4));
    assert!(srv.stop().success());
}

/// A receiver in this process that takes every delivery (200, after `delay`) and keeps
/// the `webhook-id` of each one it read, in order, repeats included; it stops when dropped.
struct Sink {
    url: String,
    ids: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start(delay: std::time::Duration) -> Sink {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex, atomic::AtomicBool};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the sink");
        let url = format!("http://{}/hooks/sink", listener.local_addr().expect("address"));
        listener.set_nonblocking(true).expect("non-blocking accept");
        let ids = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ids2, stop2) = (Arc::clone(&ids), Arc::clone(&stop));
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop2.load(Ordering::Acquire) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                let (ids, stop) = (Arc::clone(&ids2), Arc::clone(&stop2));
                conns.push(std::thread::spawn(move || {
                    conn.set_nonblocking(false).expect("blocking connection");
                    conn.set_read_timeout(Some(std::time::Duration::from_millis(100))).expect("read timeout");
                    let mut w = conn.try_clone().expect("connection");
                    let mut r = BufReader::new(conn);
                    // One request at a time (keep-alive), until the server goes away or the
                    // sink stops.
                    let idle = |e: &std::io::Error| {
                        matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
                    };
                    'requests: loop {
                        let (mut id, mut len) = (None, 0usize);
                        let mut line = String::new();
                        loop {
                            match r.read_line(&mut line) {
                                Ok(0) => break 'requests,
                                Ok(_) => {
                                    let l = std::mem::take(&mut line);
                                    let Some((k, v)) = l.trim_end().split_once(':') else {
                                        if l.trim_end().is_empty() {
                                            break;
                                        }
                                        continue;
                                    };
                                    match k.trim().to_ascii_lowercase().as_str() {
                                        "webhook-id" => id = Some(v.trim().to_owned()),
                                        "content-length" => len = v.trim().parse().expect("content-length"),
                                        _ => {}
                                    }
                                }
                                // A partial line stays in `line`.
                                Err(e) if idle(&e) && !stop.load(Ordering::Acquire) => {}
                                Err(_) => break 'requests,
                            }
                        }
                        let mut body = vec![0; len];
                        let mut got = 0;
                        while got < len {
                            match r.read(&mut body[got..]) {
                                Ok(0) => break 'requests,
                                Ok(n) => got += n,
                                Err(e) if idle(&e) && !stop.load(Ordering::Acquire) => {}
                                Err(_) => break 'requests,
                            }
                        }
                        ids.lock().expect("ids").push(id.expect("every delivery has a webhook-id"));
                        std::thread::sleep(delay);
                        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                            break;
                        }
                    }
                }));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Sink { url, ids, stop, accept: Some(accept) }
    }

    fn ids(&self) -> Vec<String> {
        self.ids.lock().expect("ids").clone()
    }

    fn distinct(&self) -> usize {
        self.ids().iter().collect::<BTreeSet<_>>().len()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// `kill -9` in the middle of a delivery run repeats only what was in flight: the cursor
/// of every event a receiver took is stored before the next delivery, so each crash
/// repeats at most the one event whose answer the server did not live to read.
#[test]
fn a_kill_9_repeats_only_the_delivery_in_flight() {
    const CONVERSIONS: usize = 300;
    const KILLS: usize = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    keys_create(&data);
    let admin = token(&data, "vendor-admin", "ops", None, ADMIN_SCOPES);
    let mut srv = Server::start_with(&data, dir.path(), FAST_RETRIES);
    let api = srv.api(Some(&admin));
    three_hop_program(&api);

    let sink = Sink::start(std::time::Duration::from_millis(2));
    api.post_expect("/v1/webhooks", "sub-sink", &json!({"url": sink.url, "events": ["mandate.issued"]}), 201);
    let items: Vec<Value> = (0..CONVERSIONS)
        .map(|n| json!({"conversion": format!("C{n}"), "lead": "lead-1", "revenue": format!("{}.00", 100 + n), "currency": "USD"}))
        .collect();
    let t = std::time::Instant::now();
    api.post_expect("/v1/conversions/batch", "batch", &json!({"items": items}), 200);
    let events = CONVERSIONS * 3;

    // Killed three times while the log stands still and deliveries run.
    let mut repeats = Vec::new();
    for k in 1..=KILLS {
        let at = events * k / (KILLS + 1);
        wait_for(&format!("{at} deliveries"), 60, || (sink.distinct() >= at).then_some(()));
        srv.kill9();
        let before = sink.ids().len();
        let taken: BTreeSet<String> = sink.ids().into_iter().collect();
        srv = Server::start_with(&data, dir.path(), FAST_RETRIES);
        // What the restarted server sends first that the receiver had already taken.
        wait_for("deliveries after the restart", 60, || (sink.ids().len() > before).then_some(()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let again = sink.ids()[before..].iter().take_while(|id| taken.contains(*id)).count();
        repeats.push(again);
    }
    wait_for(&format!("{events} deliveries"), 120, || (sink.distinct() == events).then_some(()));
    let ids = sink.ids();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} deliveries of {events} events ({:.0}/s with {KILLS} restarts); repeated after each kill -9: {repeats:?}",
        ids.len(),
        ids.len() as f64 / secs
    );
    assert_eq!(ids.len() - events, repeats.iter().sum::<usize>(), "repeats only right after a restart: {repeats:?}");
    assert!(repeats.iter().all(|&r| r <= 1), "each kill -9 repeats at most the delivery in flight: {repeats:?}");
    assert!(srv.stop().success());
}

/// The program, three partners, one lead handed p1 → p2 → p3.
fn three_hop_program(api: &Api) {
    api.post_expect("/v1/programs", "program", &program_spec("growth"), 201);
    for p in ["p1", "p2", "p3"] {
        api.post_expect("/v1/partners", &format!("enroll-{p}"), &enroll_body(p, "growth"), 201);
    }
    api.post_expect("/v1/leads", "lead", &lead_body("lead-1", "growth", "p1"), 201);
    api.post_expect("/v1/leads/lead-1/handoffs", "h2", &json!({"from": "p1", "to": "p2"}), 201);
    api.post_expect("/v1/leads/lead-1/handoffs", "h3", &json!({"from": "p2", "to": "p3"}), 201);
}

//! settle on PostgreSQL, as an operator runs it: keys and a token created in the store,
//! `settle serve --store postgres://…` settling conversions over HTTP, other writers
//! refused while it holds the writer lease, and the audit, export and statements of the
//! store once it stopped; then two nodes, one the other's standby, under load, the
//! writer killed (`kill -9`) round after round: the standby takes over, and every
//! acknowledged conversion is in the log exactly once; and the bank rail, its bank
//! details kept beside the log in the store. A throw-away PostgreSQL server
//! per test (Debian's PostgreSQL, as the `postgres` user, on a free loopback port).

mod support;

use std::ffi::OsStr;

use serde_json::json;
use settle_ledger::backend::throwaway::ThrowawayPostgres;
use support::*;

#[test]
fn a_server_on_postgresql_settles_and_a_second_writer_is_refused() {
    let pg = ThrowawayPostgres::start();
    let url = pg.database("settle");
    let dir = tempfile::tempdir().expect("tempdir");
    let place = [OsStr::new("--store"), OsStr::new(&url)];
    let created = settle_ok(["keys", "create", "--store", &url, "--vendor", "acme", "--origin", "acme.test/log"]);
    assert!(created.contains("created keys for acme"), "{created}");
    // The key file is in the store, not on disk.
    assert_eq!(pg.psql("settle", "SELECT count(*) FROM settle_aux WHERE k = 'settle/keys.json'::bytea"), "1");
    let admin = token_on(&place, "vendor-admin", "ops", None, &format!("{ADMIN_SCOPES},tokens-write"));

    let server = Server::start_on(&place, dir.path(), &[]);
    let api = server.api(Some(&admin));
    setup_chain(server.addr, &admin);
    let body = json!({"conversion": "C-1", "lead": "lead-1", "revenue": "1000.00", "currency": "USD"});
    let first = api.post_expect("/v1/conversions", "conv-1", &body, 201);
    assert_eq!(first["mandates"].as_array().map(Vec::len), Some(3), "{first}");
    let again = api.post_expect("/v1/conversions", "conv-1", &body, 200);
    assert_eq!(again["replayed"], true);
    // A token issued over the API while the server holds the lease lands in the store.
    let issued =
        api.post_expect("/v1/tokens", "token-1", &json!({"kind": "partner", "subject": "p1", "scopes": ["read"]}), 201);
    let partner = issued["token"].as_str().expect("the new token's secret").to_owned();
    let p1 = server.api(Some(&partner));
    assert_eq!(p1.get("/v1/partners/p1/balance").status, 200);

    // While the server holds the writer lease, what would write is refused (a second
    // `settle serve` is a standby instead: see the failover test), and what reads reads
    // the log as of the server's latest signed checkpoint.
    let out = settle(["keys", "list", "--store", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another settle writes this log"), "keys list: {err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let beside = loop {
        // The server signs a checkpoint within a second of its last write.
        let audit = settle_ok(["audit", "--store", &url]);
        if !audit.contains("— 0 records") {
            break audit;
        }
        assert!(std::time::Instant::now() < deadline, "{audit}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(beside.contains("audit ok") && beside.contains("money conserved"), "{beside}");
    let during = dir.path().join("during");
    settle_ok([OsStr::new("export"), OsStr::new("--store"), OsStr::new(&url), OsStr::new("--out"), during.as_os_str()]);
    let checked = settle_ok([OsStr::new("audit"), OsStr::new("--bundle"), during.as_os_str()]);
    assert!(checked.contains("audit ok"), "{checked}");

    assert!(server.stop().success());
    let audit = settle_ok(["audit", "--store", &url]);
    assert!(audit.contains("audit ok") && audit.contains("money conserved"), "{audit}");
    let out = dir.path().join("bundle");
    settle_ok([OsStr::new("export"), OsStr::new("--store"), OsStr::new(&url), OsStr::new("--out"), out.as_os_str()]);
    let bundle = settle_ok([OsStr::new("audit"), OsStr::new("--bundle"), out.as_os_str()]);
    assert!(bundle.contains("audit ok"), "{bundle}");
    let balances = settle_ok(["balances", "--store", &url, "--format", "json"]);
    assert!(balances.contains("\"p3\""), "{balances}");
    // The partner token issued over the API is in the store's key file.
    let listed = settle_ok(["keys", "list", "--store", &url]);
    assert!(listed.contains("Partner p1"), "{listed}");
}

/// `--store` is checked before anything is opened: a bad URL or scheme is a one-line
/// error, and `--data` with `--store` is refused.
#[test]
fn a_bad_store_is_refused_with_one_line() {
    for (args, says) in [
        (vec!["audit", "--store", "mysql://h/db"], "--store takes fjall:DIR or postgres://"),
        (vec!["balances", "--store", "fjall:"], "needs a directory"),
        (vec!["export", "--store", "postgres://127.0.0.1:1/none", "--out", "x"], "PostgreSQL"),
        (vec!["balances", "--data", "d", "--store", "fjall:e"], "cannot be used with"),
    ] {
        let out = settle(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
}

/// `settle serve --store URL` on 127.0.0.1:`port` (its log in `logdir`), not waited
/// for: it may be a standby.
fn node(url: &str, logdir: &std::path::Path, port: u16) -> Server {
    Server::spawn_on(&[OsStr::new("--store"), OsStr::new(url)], logdir, port, &[])
}

/// A new log on a throw-away PostgreSQL (database `db`): its server, URL, a scratch
/// directory, and a vendor administrator's token (`scopes`) from its key file.
fn new_log(db: &str, scopes: &str) -> (ThrowawayPostgres, String, tempfile::TempDir, String) {
    let pg = ThrowawayPostgres::start();
    let url = pg.database(db);
    let dir = tempfile::tempdir().expect("tempdir");
    settle_ok(["keys", "create", "--store", &url]);
    let admin = token_on(&[OsStr::new("--store"), OsStr::new(&url)], "vendor-admin", "ops", None, scopes);
    (pg, url, dir, admin)
}

/// POSTs a conversion under `key` to whichever node answers, retrying the same request
/// until one acknowledges it (or `deadline`): the answer's status.
fn post_until_acknowledged(nodes: &[std::net::SocketAddr], token: &str, key: &str, body: &[u8]) -> u16 {
    let auth = format!("Bearer {token}");
    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", key), ("Content-Type", "application/json")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        for a in nodes {
            if let Ok(r) = http(*a, "POST", "/v1/conversions", &h, Some(body))
                && (r.status == 200 || r.status == 201)
            {
                return r.status;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no node acknowledged {key} within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// A program whose lead `lead-1` has a three-hop chain, set up through the writer at
/// `addr`; returns the time every conversion states (a retried request is then the same
/// request).
fn setup_chain(addr: std::net::SocketAddr, admin: &str) -> String {
    let api = Api { addr, token: Some(admin.to_owned()) };
    api.post_expect("/v1/programs", "program", &program_spec("growth"), 201);
    for p in ["p1", "p2", "p3"] {
        api.post_expect("/v1/partners", &format!("enroll-{p}"), &enroll_body(p, "growth"), 201);
    }
    api.post_expect("/v1/leads", "lead", &lead_body("lead-1", "growth", "p1"), 201);
    for (from, to) in [("p1", "p2"), ("p2", "p3")] {
        api.post_expect("/v1/leads/lead-1/handoffs", &format!("hand-{to}"), &json!({"from": from, "to": to}), 201);
    }
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn conversion(id: &str, at: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"conversion": id, "lead": "lead-1", "revenue": "100.00", "currency": "USD", "occurred_at": at}),
    )
    .unwrap()
}

/// Four clients posting conversions one after another to whichever node answers, each
/// retried with its key until acknowledged, until `stop`: each returns the ids it saw
/// acknowledged.
fn start_clients(
    addrs: &[std::net::SocketAddr],
    admin: &str,
    at: &str,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<String>>> {
    (0..4)
        .map(|c| {
            let (addrs, admin, stop, at) = (addrs.to_vec(), admin.to_owned(), stop.clone(), at.to_owned());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("C-{c}-{i}");
                    post_until_acknowledged(&addrs, &admin, &format!("k-{c}-{i}"), &conversion(&id, &at));
                    acknowledged.push(id);
                    i += 1;
                }
                acknowledged
            })
        })
        .collect()
}

/// Stops the clients: every id they saw acknowledged.
fn stop_clients(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Vec<String>>>,
) -> Vec<String> {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
}

/// From an export of the store at `url` (its nodes stopped): every acknowledged
/// conversion is in the log exactly once and none twice; and the store audits.
fn check_nothing_lost(url: &str, dir: &std::path::Path, acknowledged: &[String]) {
    let out = dir.join("bundle");
    settle_ok([OsStr::new("export"), OsStr::new("--store"), OsStr::new(url), OsStr::new("--out"), out.as_os_str()]);
    let log = std::fs::read_to_string(out.join("log.jsonl")).unwrap();
    let mut recorded = std::collections::HashMap::<String, usize>::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "conversion_recorded" {
            *recorded.entry(v["event"]["data"]["conversion"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert!(recorded.values().all(|n| *n == 1), "a conversion recorded twice");
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !recorded.contains_key(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but not in the log: {lost:?}");
    let audit = settle_ok(["audit", "--store", url]);
    assert!(audit.contains("audit ok"), "{audit}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two nodes, one the other's standby, which serves reads (the writer's books, as of its
/// latest checkpoint) and refuses writes; four clients posting conversions; the writer is
/// killed (`kill -9`) five times, each time mid-load, and restarted as the new writer's
/// standby. The standby takes over within seconds; every conversion a client saw
/// acknowledged is in the log exactly once, none is in it twice, and the store audits.
#[test]
fn the_standby_takes_over_from_a_killed_writer_and_no_acknowledged_conversion_is_lost() {
    let (_pg, url, dir, admin) = new_log("failover", ADMIN_SCOPES);
    let mut nodes = vec![node(&url, dir.path(), free_port())];
    nodes[0].wait_for("settle serving");
    nodes.push(node(&url, dir.path(), free_port()));
    nodes[1].wait_for("standby:");
    let at = setup_chain(nodes[0].addr, &admin);
    let first = conversion("C-first", &at);
    post_until_acknowledged(&[nodes[0].addr], &admin, "first", &first);

    // The standby serves reads, as of the writer's latest signed checkpoint (one a
    // second while the log grows), and refuses writes.
    nodes[1].wait_for("settle standby: serving reads");
    let (writer, standby) = (
        Api { addr: nodes[0].addr, token: Some(admin.clone()) },
        Api { addr: nodes[1].addr, token: Some(admin.clone()) },
    );
    let balance = writer.get("/v1/partners/p3/balance");
    assert_eq!(balance.status, 200, "{}", balance.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let read = standby.get("/v1/partners/p3/balance");
        if read.status == 200 && read.json() == balance.json() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the standby never caught up: {} {}", read.status, read.text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let refused =
        standby.post("/v1/conversions", "on-standby", &serde_json::from_slice(&conversion("C-s", &at)).unwrap());
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("standby"), "{}", refused.text());

    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_clients(&addrs, &admin, &at, &stop);

    let mut takeovers = Vec::new();
    let mut writer = 0;
    for round in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        let killed = std::time::Instant::now();
        nodes[writer].kill9_in_place();
        let standby = 1 - writer;
        nodes[standby].wait_for("settle serving");
        // Taken over once the standby answers a write.
        let probe = conversion(&format!("probe-{round}"), &at);
        post_until_acknowledged(&[nodes[standby].addr], &admin, &format!("probe-{round}"), &probe);
        takeovers.push(killed.elapsed());
        // The killed node comes back as the new writer's standby, on its old port.
        nodes[writer] = node(&url, dir.path(), nodes[writer].addr.port());
        nodes[writer].wait_for("standby:");
        writer = standby;
    }
    let acknowledged = stop_clients(&stop, clients);
    drop(nodes);
    check_nothing_lost(&url, dir.path(), &acknowledged);
    eprintln!("takeovers after kill -9 of the writer: {takeovers:?}; {} conversions acknowledged", acknowledged.len());
    assert!(takeovers.iter().all(|t| t.as_secs() < 10), "a takeover took {takeovers:?}");
}

/// A synchronous pair of PostgreSQL servers (every commit waits for the standby) under
/// two settle nodes, load running; the primary is killed (`kill -9`) and its replica
/// promoted, five times, each time with a new replica of the new primary on the killed
/// one's port. settle connects to the new primary and goes on (several hosts and
/// `target_session_attrs=read-write` in its URL); every conversion a client saw
/// acknowledged is in the log exactly once, and the store audits.
#[test]
fn settle_follows_a_postgresql_failover_and_no_acknowledged_conversion_is_lost() {
    let mut primary = ThrowawayPostgres::start_primary();
    let mut replica = primary.start_replica(free_port());
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port(),
        replica.port()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    settle_ok(["keys", "create", "--store", &url]);
    let place = [OsStr::new("--store"), OsStr::new(&url)];
    let admin = token_on(&place, "vendor-admin", "ops", None, ADMIN_SCOPES);
    let nodes = [node(&url, dir.path(), free_port()), node(&url, dir.path(), free_port())];
    // One of them takes the lease, the other waits as its standby.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let writer = loop {
        if let Some(w) = nodes.iter().position(|n| n.log_text().contains("settle serving")) {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "no node took the lease");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let at = setup_chain(nodes[writer].addr, &admin);
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_clients(&addrs, &admin, &at, &stop);

    let mut failovers = Vec::new();
    for round in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(400));
        let killed = std::time::Instant::now();
        primary.kill();
        replica.promote();
        let port = primary.port();
        let next = replica.start_replica(port);
        drop(std::mem::replace(&mut primary, std::mem::replace(&mut replica, next)));
        // settle writes again once a probe is acknowledged.
        let probe = conversion(&format!("probe-{round}"), &at);
        let acked =
            std::panic::catch_unwind(|| post_until_acknowledged(&addrs, &admin, &format!("probe-{round}"), &probe));
        assert!(
            acked.is_ok(),
            "round {round}: no write after the failover: {}\n---\n{}",
            nodes[0].log_text(),
            nodes[1].log_text()
        );
        failovers.push(killed.elapsed());
    }
    let acknowledged = stop_clients(&stop, clients);
    drop(nodes);
    check_nothing_lost(&url, dir.path(), &acknowledged);
    eprintln!(
        "writes again after a PostgreSQL failover: {failovers:?}; {} conversions acknowledged",
        acknowledged.len()
    );
}

/// A writer fenced off (another node took the lease after its epoch) refuses the write
/// that finds out, then steps down: the process ends by itself with a one-line reason,
/// letting go of everything it held, so that a supervisor restarts it as a standby.
#[test]
fn a_writer_fenced_off_steps_down() {
    let (pg, url, dir, admin) = new_log("stepdown", ADMIN_SCOPES);
    let mut writer = node(&url, dir.path(), free_port());
    writer.wait_for("settle serving");
    let at = setup_chain(writer.addr, &admin);
    assert_eq!(pg.psql("stepdown", "UPDATE settle_writer SET epoch = epoch + 1, holder = 'elsewhere'"), "UPDATE 1");
    let auth = format!("Bearer {admin}");
    let h = [("Authorization", auth.as_str()), ("Idempotency-Key", "late"), ("Content-Type", "application/json")];
    let r = http(writer.addr, "POST", "/v1/conversions", &h, Some(&conversion("C-late", &at))).expect("an answer");
    assert!(r.status >= 500, "a fenced writer answered {} {}", r.status, r.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(st) = writer.exited() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "the fenced writer did not step down: {}", writer.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(!status.success(), "it stepped down with success");
    assert!(writer.log_text().contains("stepped down"), "{}", writer.log_text());
    // Nothing of the refused write is in the log.
    let out = dir.path().join("bundle");
    settle_ok([OsStr::new("export"), OsStr::new("--store"), OsStr::new(&url), OsStr::new("--out"), out.as_os_str()]);
    assert!(!std::fs::read_to_string(out.join("log.jsonl")).unwrap().contains("C-late"));
}

/// The bank rail on PostgreSQL: a partner's bank details kept in `settle_aux`, never in
/// the log's tables; its payment file; a bank's notification (pyiso20022's vector, made
/// to book this batch) applied once; erasure leaving no detail in the store and a log
/// that still audits.
#[test]
fn the_bank_rail_keeps_bank_details_beside_the_log_on_postgresql() {
    const IBAN: &str = "DE89370400440532013000";
    let (pg, url, dir, admin) = new_log("bank", ADMIN_SCOPES);
    settle_ok(["payouts", "debtor", "--store", &url, "--name", "Acme", "--iban", "GB82WEST12345698765432"]);
    let server = Server::start_on(&[OsStr::new("--store"), OsStr::new(&url)], dir.path(), &[]);
    let api = server.api(Some(&admin));
    setup_chain(server.addr, &admin);
    let reg = json!({"holder": "Partner One GmbH", "iban": IBAN});
    api.post_expect("/v1/partners/p1/payout-instrument", "pi-1", &reg, 201);
    let conv = json!({"conversion": "C-1", "lead": "lead-1", "revenue": "100.00", "currency": "USD"});
    let done = api.post_expect("/v1/conversions", "conv-1", &conv, 201);
    // p1 registered the lead: hop 0, the first mandate.
    let mine = &done["mandates"][0];
    assert!(mine["mandate_id"].as_str().is_some_and(|m| m.ends_with("_0")), "{done}");
    let body = json!({"batch": "payout-6-p01-0", "partner": "p1", "rail": "bank", "mandate_ids": [mine["mandate_id"]]});
    let batch = api.post_expect("/v1/payouts", "payout-1", &body, 201);
    let amount = batch["events"][1]["data"]["amount"]["amount"].as_i64().expect("the batch's amount");
    let file = api.get("/v1/payouts/payout-6-p01-0/pain.001");
    assert_eq!(file.status, 200, "{}", file.text());
    assert!(file.text().contains(IBAN));
    // The notification books the batch (its first entry, given the batch's amount).
    let camt = include_str!("vectors/bank/camt.054.001.08.xml")
        .replace("123.45", &format!("{}.{:02}", amount / 100, amount % 100));
    let r = api.post_raw("/v1/payouts/reconcile", Some("camt-1"), Some("application/xml"), camt.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["lines"][0]["outcome"], "paid", "{}", r.text());
    let again = api.post_raw("/v1/payouts/reconcile", Some("camt-2"), Some("application/xml"), camt.as_bytes());
    assert_eq!(again.json()["already_applied"], true);
    server.stop();
    let holding = |table: &str| {
        pg.psql("bank", &format!("SELECT count(*) FROM {table} WHERE position('{IBAN}'::bytea in v) > 0"))
    };
    assert_eq!(holding("settle_aux"), "1", "the details are kept beside the log");
    assert_eq!(holding("settle_records"), "0", "and never in it");
    settle_ok(["payouts", "erase", "--store", &url, "--partner", "p1"]);
    assert_eq!(holding("settle_aux"), "0", "erased");
    let audit = settle_ok(["audit", "--store", &url]);
    assert!(audit.starts_with("audit ok"), "{audit}");
}

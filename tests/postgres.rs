//! settle on PostgreSQL, as an operator runs it: keys and a token created in the store,
//! `settle serve --store postgres://…` settling conversions over HTTP, a second node
//! refused while the first holds the writer lease, and the audit, export and statements
//! of the store once it stopped. A throw-away PostgreSQL server per test (Debian's
//! PostgreSQL, as the `postgres` user, on a free loopback port).

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
    api.post_expect("/v1/programs", "program", &program_spec("growth"), 201);
    for p in ["p1", "p2", "p3"] {
        api.post_expect("/v1/partners", &format!("enroll-{p}"), &enroll_body(p, "growth"), 201);
    }
    api.post_expect("/v1/leads", "lead", &lead_body("lead-1", "growth", "p1"), 201);
    for (from, to) in [("p1", "p2"), ("p2", "p3")] {
        api.post_expect("/v1/leads/lead-1/handoffs", &format!("hand-{to}"), &json!({"from": from, "to": to}), 201);
    }
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

    // A second node is refused while the first holds the lease, and so is `keys`.
    let second = settle(["serve", "--store", &url, "--listen", "127.0.0.1:0"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success() && err.contains("another settle writes this log"), "{err}");
    let keys = settle(["keys", "list", "--store", &url]);
    assert!(!keys.status.success(), "keys list opened the store beside a running writer");

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

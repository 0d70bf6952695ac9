//! The bank rail from outside: payment files checked with stock libraries against the
//! official ISO 20022 schema (sepaxml's pain.001.001.09.xsd, validated with xmlschema)
//! for many random payout batches, and a whole round on demo data with bank
//! notifications made by pyiso20022 (camt.054 .02 and .08): booked, returned, pending,
//! unmatched, applied twice, a return after booking; then receipts, statements and the
//! audit.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use support::*;

/// Valid IBANs of ten countries (the IBAN registry's examples).
const IBANS: [&str; 10] = [
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "BE68539007547034",
    "ES9121000418450200051332",
    "IT60X0542811101000000123456",
    "CH9300762011623852957",
    "AT611904300234573201",
    "PL61109010140000071219812874",
];

/// Holders' names, some of them with what XML must escape or what is not ASCII.
const NAMES: [&str; 6] = [
    "Müller & Söhne GmbH",
    "<Acme> \"Partners\" Ltd",
    "Zoë's Référencement SARL",
    "Øresund ApS",
    "李记贸易",
    "Plain Name",
];

fn python() -> std::path::PathBuf {
    venv::bank_libraries()
}

/// `bank_check.py validate` over `files`: the number of transactions, after asserting that
/// every file is valid.
fn validate(files: &[std::path::PathBuf]) -> u64 {
    let mut args = vec!["validate"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let v = venv::run_script_with(&python(), "bank_check.py", &args);
    assert_eq!(v["errors"], json!([]), "payment files that do not validate: {v}");
    assert_eq!(v["files"], json!(files.len()));
    v["transactions"].as_u64().expect("transactions")
}

/// A camt.054 notification of `version` (`02`, `08`) made by pyiso20022 from `entries`.
fn camt054(dir: &Path, version: &str, msg_id: &str, entries: &[Value]) -> std::path::PathBuf {
    let spec = json!({
        "msg_id": msg_id,
        "created": "2026-06-01T10:00:00Z",
        "account_iban": "DE89370400440532013000",
        "entries": entries,
    });
    let spec_path = dir.join(format!("{msg_id}.json"));
    std::fs::write(&spec_path, spec.to_string()).expect("spec");
    let out = dir.join(format!("{msg_id}.xml"));
    let (s, o) = (spec_path.display().to_string(), out.display().to_string());
    let v = venv::run_script_with(
        &python(),
        "bank_check.py",
        &["camt054", "--version", version, "--spec", &s, "--out", &o],
    );
    assert_eq!(v["entries"], json!(entries.len()), "{v}");
    out
}

fn entry(outcome: &str, e2e: &str, amount: &str, bank_ref: &str) -> Value {
    let mut e = json!({"outcome": outcome, "e2e": e2e, "amount": amount, "currency": "USD", "bank_ref": bank_ref, "booking_date": "2026-06-01"});
    if outcome == "returned" {
        e["reason"] = json!("AC04");
    }
    e
}

#[test]
fn payment_files_of_random_batches_validate_against_the_official_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("d");
    keys_create(&data);
    let d = data.as_os_str();
    let debtor = ["payouts", "debtor", "--name", "Vendor & Co <Holdings>", "--iban", "GB82 WEST 1234 5698 7654 32"];
    settle_ok(
        debtor
            .iter()
            .map(std::ffi::OsStr::new)
            .chain([std::ffi::OsStr::new("--bic"), "NWBKGB2L".as_ref()])
            .chain(["--data".as_ref(), d]),
    );
    let admin = token(
        &data,
        "vendor-admin",
        "ops",
        None,
        "programs-write,leads-write,conversions-write,settlements-write,read",
    );
    let server = Server::start(&data, dir.path());
    let a = server.api(Some(&admin));
    let mut usd = program_spec("usd");
    usd["program"] = json!("usd");
    let mut eur = program_spec("eur");
    eur["program"] = json!("eur");
    eur["currency"] = json!("EUR");
    a.post_expect("/v1/programs", "usd", &usd, 201);
    a.post_expect("/v1/programs", "eur", &eur, 201);
    let mut rng = ChaCha8Rng::seed_from_u64(20_022);
    let mut batches: Vec<(String, String)> = Vec::new(); // (batch, partner)
    for i in 0..12 {
        let (p, program) = (format!("p{i}"), if i % 3 == 0 { "eur" } else { "usd" });
        a.post_expect("/v1/partners", &p, &enroll_body(&p, program), 201);
        let mut reg =
            json!({"holder": NAMES[rng.random_range(0..NAMES.len())], "iban": IBANS[rng.random_range(0..IBANS.len())]});
        if rng.random_bool(0.5) {
            reg["bic"] = json!(["DEUTDEFF", "COBADEFFXXX", "BNPAFRPPXXX"][rng.random_range(0..3)]);
        }
        a.post_expect(&format!("/v1/partners/{p}/payout-instrument"), &format!("pi-{p}"), &reg, 201);
        let mut lead = lead_body(&format!("l{i}"), program, &p);
        lead["customer"] = json!(format!("customer-{i}.example"));
        a.post_expect("/v1/leads", &format!("l{i}"), &lead, 201);
        let mut mandates = Vec::new();
        for c in 0..rng.random_range(1..8) {
            let revenue = format!("{}.{:02}", rng.random_range(1..50_000), rng.random_range(0..100));
            let conv = json!({"conversion": format!("c{i}-{c}"), "lead": format!("l{i}"), "revenue": revenue, "currency": if program == "eur" { "EUR" } else { "USD" }});
            let v = a.post_expect("/v1/conversions", &format!("c{i}-{c}"), &conv, 201);
            mandates.extend(
                v["mandates"]
                    .as_array()
                    .expect("mandates")
                    .iter()
                    .map(|m| m["mandate_id"].as_str().expect("id").to_owned()),
            );
        }
        // Split into batches, their ids short, long (over 35 characters) or with '_'.
        let mut k = 0;
        while !mandates.is_empty() {
            let take = rng.random_range(1..=mandates.len());
            let ids: Vec<String> = mandates.drain(..take).collect();
            let b = match k % 3 {
                0 => format!("b-{p}-{k}"),
                1 => format!("payout_{p}_{k}"),
                _ => format!("a-long-payout-batch-id-of-partner-{p}-number-{k}"),
            };
            let body = json!({"batch": b, "partner": p, "rail": "bank", "mandate_ids": ids});
            a.post_expect("/v1/payouts", &b, &body, 201);
            batches.push((b, p.clone()));
            k += 1;
        }
    }
    let mut files = Vec::new();
    for (i, (b, _)) in batches.iter().enumerate() {
        let path = if i % 4 == 0 {
            format!("/v1/payouts/{b}/pain.001?execution_date=2026-12-24")
        } else {
            format!("/v1/payouts/{b}/pain.001")
        };
        let r = a.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/xml"));
        assert_eq!(a.get(&path).body, r.body, "the same batch gives the same bytes");
        let f = dir.path().join(format!("single-{i}.xml"));
        std::fs::write(&f, &r.body).expect("write");
        files.push(f);
    }
    // An unknown batch: not found.
    assert_eq!(a.get("/v1/payouts/nope/pain.001").status, 404);
    // The bank books the first batch: reconciled over HTTP, the partner's money is paid.
    let (b0, p0) = &batches[0];
    let xml = std::fs::read_to_string(&files[0]).expect("file");
    let amount = xml.split("<InstdAmt Ccy=\"").nth(1).expect("amount");
    let (currency, rest) = amount.split_once("\">").expect("currency");
    let value = rest.split('<').next().expect("value");
    let mut booked = entry("booked", &pain_e2e(&xml), value, "HTTP-REF-1");
    booked["currency"] = json!(currency);
    let n = camt054(dir.path(), "08", "HTTP-MSG-1", &[booked]);
    let body = std::fs::read(&n).expect("notification");
    let r = a.post_raw("/v1/payouts/reconcile", Some("rc1"), Some("application/xml"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["lines"][0]["outcome"], "paid", "{}", r.text());
    assert_eq!(r.json()["lines"][0]["batch"], json!(b0));
    let balance = a.get(&format!("/v1/partners/{p0}/balance")).json();
    assert_eq!(balance["paid"], json!(value), "{balance}");
    // Not a notification: refused, nothing changed.
    let r = a.post_raw("/v1/payouts/reconcile", Some("rc2"), Some("application/xml"), b"<x/>");
    assert_eq!(r.problem(422)["status"], 422);
    let r = a.post_raw("/v1/payouts/reconcile", Some("rc3"), Some("application/json"), &body);
    assert_eq!(r.status, 415);
    // Another document under a message id already applied: refused, not skipped.
    let other = String::from_utf8(body.clone()).expect("UTF-8").replace("HTTP-REF-1", "HTTP-REF-2");
    let r = a.post_raw("/v1/payouts/reconcile", Some("rc4"), Some("application/xml"), other.as_bytes());
    assert_eq!(r.problem(409)["status"], 409);
    // A registration retried with its key is answered as the first; with another body, 409.
    a.post_expect("/v1/partners", "px", &enroll_body("px", "usd"), 201);
    let path = "/v1/partners/px/payout-instrument";
    let reg = json!({"holder": "Retry GmbH", "iban": IBANS[0]});
    let first = a.post_expect(path, "retry-1", &reg, 201);
    let again = a.post_expect(path, "retry-1", &reg, 200);
    assert_eq!(first["events"], again["events"], "the same instrument, not a new salt");
    assert!(first["events"][0]["data"]["instrument"].as_str().is_some_and(|i| i.starts_with("pi_")), "{first}");
    assert_eq!(a.post(path, "retry-1", &json!({"holder": "Other", "iban": IBANS[1]})).status, 409);
    let shown = a.get(path).json();
    assert_eq!(shown["holder"], "Retry GmbH");
    assert!(shown["iban"].as_str().expect("iban").contains('*'), "masked: {shown}");
    // Erased, registered again, erased again: each time gone.
    for round in 0..2 {
        let h = [("Authorization", format!("Bearer {admin}")), ("Idempotency-Key", format!("del-{round}"))];
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http(server.addr, "DELETE", path, &h, None).expect("DELETE");
        assert_eq!(r.status, 204, "{}", r.text());
        assert_eq!(a.get(path).status, 404);
        a.post_expect(path, &format!("again-{round}"), &reg, 201);
    }
    server.stop();
    // One file of every batch still open from the command line: a block per currency.
    let all = dir.path().join("all.xml");
    let mut args: Vec<std::ffi::OsString> =
        vec!["payouts".into(), "file".into(), "--data".into(), d.into(), "--out".into(), all.clone().into()];
    for (b, _) in &batches[1..] {
        args.extend(["--batch".into(), b.into()]);
    }
    // The paid one is written again only on its own, never with others.
    let mut with_paid = args.clone();
    with_paid.extend(["--batch".into(), batches[0].0.clone().into()]);
    let o = settle(&with_paid);
    assert!(!o.status.success() && stderr(&o).contains("only on its own"), "{}", stderr(&o));
    settle_ok(&args);
    let text = std::fs::read_to_string(&all).expect("file");
    assert_eq!(text.matches("<PmtInf>").count(), 2, "one block per execution date and currency");
    assert!(text.contains("Vendor &amp; Co &lt;Holdings&gt;"), "escaped as XML");
    files.push(all);
    // And the golden vector docs/payouts.md points to (three transactions).
    files.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/bank/pain.001.001.09.xml"));
    assert_eq!(validate(&files), 2 * batches.len() as u64 - 1 + 3);
}

/// The first end-to-end id of payment file `xml`.
fn pain_e2e(xml: &str) -> String {
    xml.split("<EndToEndId>").nth(1).and_then(|r| r.split('<').next()).expect("an end-to-end id").to_owned()
}

/// The batches the demo sent to the bank that no notification answered yet, with their
/// amounts (minor units), from its exported log.
fn open_bank_batches(log: &Path) -> Vec<(String, String, i64)> {
    let text = std::fs::read_to_string(log).expect("log");
    let mut created: BTreeMap<String, (String, i64)> = BTreeMap::new();
    let mut answered = BTreeSet::new();
    for line in text.lines() {
        let r: Value = serde_json::from_str(line).expect("record");
        let d = &r["event"]["data"];
        match r["type"].as_str() {
            Some("payout_batch_created") if d["rail"] == "bank" => {
                let b = d["batch"].as_str().expect("batch").to_owned();
                created.insert(
                    b,
                    (
                        d["partner"].as_str().expect("partner").to_owned(),
                        d["amount"]["amount"].as_i64().expect("amount"),
                    ),
                );
            }
            Some("settlement_confirmed" | "settlement_failed") => {
                if let Some(b) = d["batch"].as_str() {
                    answered.insert(b.to_owned());
                }
            }
            _ => {}
        }
    }
    created.into_iter().filter(|(b, _)| !answered.contains(b)).map(|(b, (p, a))| (b, p, a)).collect()
}

/// `settle payouts file --data <data> --batch <b>... --out <out>`.
fn payouts_file(data: &Path, batches: &[&str], out: &Path) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> = vec!["payouts".into(), "file".into(), "--data".into(), data.into()];
    for b in batches {
        args.extend(["--batch".into(), (*b).into()]);
    }
    args.extend(["--out".into(), out.into()]);
    settle(&args)
}

fn decimal(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

fn reconcile(data: &Path, file: &Path) -> Value {
    let out = settle_ok([
        "payouts".as_ref(),
        "reconcile".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--file".as_ref(),
        file.as_os_str(),
        "--format".as_ref(),
        std::ffi::OsStr::new("json"),
    ]);
    serde_json::from_str(&out).expect("report")
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (l["end_to_end_id"].as_str().unwrap_or("-").to_owned(), l["outcome"].as_str().expect("outcome").to_owned())
        })
        .collect()
}

fn log_size(data: &Path) -> String {
    let out = settle_ok(["audit".as_ref(), "--data".as_ref(), data.as_os_str()]);
    out.split_whitespace().find(|w| w.chars().all(|c| c.is_ascii_digit())).expect("a record count").to_owned()
}

#[test]
fn a_round_on_demo_data_pays_returns_and_reports_and_the_audit_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("demo");
    let d = data.as_os_str();
    settle_ok([
        "demo".as_ref(),
        "--data".as_ref(),
        d,
        "--conversions".as_ref(),
        "1200".as_ref(),
        "--seed".as_ref(),
        "5".as_ref(),
        "--quiet".as_ref(),
    ]);
    let open = open_bank_batches(&data.join("bundle").join("log.jsonl"));
    assert!(open.len() >= 3, "the demo leaves its last week's bank payouts to the bank: {open:?}");
    let (paid, failed, pending) = (&open[0], &open[1], &open[2]);
    // The payment file of the three.
    let file = dir.path().join("pain.001.xml");
    let o = payouts_file(&data, &[&paid.0, &failed.0, &pending.0], &file);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(validate(std::slice::from_ref(&file)), 3);
    // The bank books the first, returns the second (AC04), holds the third; one entry
    // names no batch.
    let before = log_size(&data);
    let n1 = camt054(
        dir.path(),
        "08",
        "BANK-2026-06-01",
        &[
            entry("booked", &paid.0, &decimal(paid.2), "BANKREF-0001"),
            entry("returned", &failed.0, &decimal(failed.2), "BANKREF-0002"),
            entry("pending", &pending.0, &decimal(pending.2), "BANKREF-0003"),
            entry("booked", "SOMEONE-ELSES-PAYMENT", "12.34", "BANKREF-0004"),
        ],
    );
    let r = reconcile(&data, &n1);
    assert_eq!(r["already_applied"], json!(false));
    assert_eq!(
        outcomes(&r),
        [
            (paid.0.clone(), "paid".into()),
            (failed.0.clone(), "failed".into()),
            (pending.0.clone(), "pending".into()),
            ("SOMEONE-ELSES-PAYMENT".into(), "unmatched".into())
        ]
    );
    let after = log_size(&data);
    assert_ne!(before, after, "the paid and the failed batch are recorded");
    // The same notification again: nothing changes.
    let again = reconcile(&data, &n1);
    assert_eq!(again["already_applied"], json!(true));
    assert_eq!(log_size(&data), after);
    // A later notification, in the older version: the paid batch comes back (a return
    // after booking), the pending one is booked with another amount (reported, not
    // guessed), then with its own.
    let n2 = camt054(
        dir.path(),
        "02",
        "BANK-2026-06-08",
        &[
            entry("returned", &paid.0, &decimal(paid.2), "BANKREF-0005"),
            entry("booked", &pending.0, &decimal(pending.2 + 1), "BANKREF-0006"),
            entry("booked", &pending.0, &decimal(pending.2), "BANKREF-0007"),
        ],
    );
    let r = reconcile(&data, &n2);
    assert_eq!(
        outcomes(&r),
        [
            (paid.0.clone(), "returned".into()),
            (pending.0.clone(), "mismatch".into()),
            (pending.0.clone(), "paid".into())
        ]
    );
    // Receipts, statements and the audit.
    let audit = settle_ok(["audit".as_ref(), "--data".as_ref(), d]);
    assert!(audit.contains("money conserved: yes") || audit.contains("conserved"), "{audit}");
    let bundle = dir.path().join("bundle");
    settle_ok(["export".as_ref(), "--data".as_ref(), d, "--out".as_ref(), bundle.as_os_str()]);
    settle_ok(["audit".as_ref(), "--bundle".as_ref(), bundle.as_os_str()]);
    let pending_partner = &pending.1;
    let receipts = std::fs::read_to_string(bundle.join("partners").join(pending_partner).join("receipts.jsonl"))
        .expect("receipts");
    let settled: Vec<Value> = receipts
        .lines()
        .map(|l| jws_payload(serde_json::from_str::<Value>(l).expect("receipt")["receipt"].as_str().expect("jws")))
        .filter(|r| r["kind"] == "payment_settled" && r["rail"] == "bank")
        .collect();
    assert!(
        settled.iter().any(|r| r["psp_confirmation_id"] == "BANKREF-0007"),
        "the receipts of the bank-paid mandates carry the bank's reference: {settled:?}"
    );
    let statement =
        std::fs::read_to_string(bundle.join("partners").join(&paid.1).join("statement.csv")).expect("statement");
    assert!(
        statement.contains("BANKREF-0001") && statement.contains("paid_returned") && statement.contains("AC04"),
        "{statement}"
    );
    // A failed batch's file is never written again: its mandates are payable again.
    let o = payouts_file(&data, &[&failed.0], &dir.path().join("y.xml"));
    assert!(!o.status.success() && stderr(&o).contains("payable again"), "{}", stderr(&o));
    // A paid batch's file is written again on its own; once its partner's details are
    // erased, no more; the log still verifies.
    let copy = dir.path().join("copy.xml");
    {
        let o = payouts_file(&data, &[&pending.0], &copy);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    settle_ok(["payouts".as_ref(), "erase".as_ref(), "--data".as_ref(), d, "--partner".as_ref(), pending.1.as_ref()]);
    let o = payouts_file(&data, &[&pending.0], &dir.path().join("x.xml"));
    assert!(!o.status.success() && stderr(&o).contains("were erased"), "{}", stderr(&o));
    settle_ok(["audit".as_ref(), "--data".as_ref(), d]);
}

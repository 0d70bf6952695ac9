//! Integration tests of the `settle` command line: reproducible demos and exports, audits,
//! statements, offline receipt verification, errors and help.

mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

fn demo(data: &Path, conversions: u32, seed: u32) -> String {
    settle_ok([
        OsString::from("demo"),
        "--data".into(),
        data.into(),
        "--conversions".into(),
        conversions.to_string().into(),
        "--seed".into(),
        seed.to_string().into(),
        "--quiet".into(),
    ])
}

fn export(data: &Path, out: &Path) -> String {
    settle_ok([OsString::from("export"), "--data".into(), data.into(), "--out".into(), out.into()])
}

/// The lines of the demo summary that do not depend on timing.
fn summary(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.contains("throughput") && !l.contains("audit ") && !l.starts_with("settle demo"))
        .map(str::to_owned)
        .collect()
}

/// Decimal string → minor units ("-12.34" → -1234).
fn cents(s: &str) -> i64 {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').expect("two decimals");
    assert_eq!(frac.len(), 2, "USD amounts have two decimals: {s}");
    let v = int.parse::<i64>().expect("integer part") * 100 + frac.parse::<i64>().expect("fraction");
    if neg { -v } else { v }
}

fn assert_same_tree(a: &Path, b: &Path) {
    let fa = files_under(a);
    let fb = files_under(b);
    assert_eq!(fa, fb, "{} and {} hold different files", a.display(), b.display());
    for f in &fa {
        let x = std::fs::read(a.join(f)).expect("read");
        let y = std::fs::read(b.join(f)).expect("read");
        assert!(x == y, "{} differs between {} and {}", f.display(), a.display(), b.display());
    }
}

#[test]
fn same_seed_gives_byte_identical_bundles_that_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d1, d2) = (dir.path().join("d1"), dir.path().join("d2"));
    let d2c = d2.clone();
    let other = std::thread::spawn(move || demo(&d2c, 200, 5));
    let s1 = demo(&d1, 200, 5);
    let s2 = other.join().expect("demo thread");
    assert!(s1.contains("settle demo (seed 5)"), "{s1}");
    assert_eq!(summary(&s1.replace("/d1/", "/dX/")), summary(&s2.replace("/d2/", "/dX/")), "same seed, same demo");

    let (e1, e2) = (dir.path().join("e1"), dir.path().join("e2"));
    let o1 = export(&d1, &e1);
    let o2 = export(&d2, &e2);
    // The directories' names, not any "e1" in the root's hex.
    let named = |o: &str, e: &std::path::Path| o.replace(&e.display().to_string(), "eX");
    assert_eq!(named(&o1, &e1), named(&o2, &e2));
    let files = files_under(&e1);
    for f in ["manifest.json", "log.jsonl", "checkpoints.json", "jwks.json", "partners/p01/statement.csv"] {
        assert!(files.contains(&f.into()), "bundle lacks {f}: {files:?}");
    }
    assert!(files.len() > 40, "a receipts file and a statement per partner: {files:?}");
    assert_same_tree(&e1, &e2);
    // Exporting again gives the bundle the demo wrote.
    assert_same_tree(&e1, &d1.join("bundle"));
    let m: Value = serde_json::from_slice(&std::fs::read(e1.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["format"], "settle.bundle.2");
    let log_lines = std::fs::read_to_string(e1.join("log.jsonl")).unwrap().lines().count();
    assert_eq!(m["records"], json!(log_lines));
    assert!(o1.starts_with(&format!("exported {log_lines} records")), "{o1}");

    let a = settle_ok([OsString::from("audit"), "--data".into(), d1.clone().into()]);
    assert!(a.starts_with("audit ok"), "{a}");
    assert!(a.contains(&format!("{log_lines} records")), "{a}");
    let b = settle_ok([OsString::from("audit"), "--bundle".into(), e2.into()]);
    assert!(b.starts_with("audit ok") && b.contains("money conserved"), "{b}");
    // Export refuses a non-empty target.
    let out = settle([OsString::from("export"), "--data".into(), d1.into(), "--out".into(), e1.into()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

#[test]
fn statement_verify_and_errors_on_a_demo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    demo(&d, 150, 5);
    let statement = |partner: &str, extra: &[&str]| {
        let mut args: Vec<OsString> =
            vec!["statement".into(), "--data".into(), d.clone().into(), "--partner".into(), partner.into()];
        args.extend(extra.iter().map(OsString::from));
        settle(&args)
    };

    // CSV: header, an opening line first, a closing line last, earned lines naming mandates.
    let out = statement("p01", &["--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header,
        [
            "seq",
            "at",
            "entry",
            "reference",
            "mandate_id",
            "rule_version",
            "hop",
            "role",
            "amount",
            "currency",
            "on_hold",
            "payable",
            "in_payout",
            "paid",
            "rail_reference"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert!(rows.len() >= 3, "{text}");
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    assert_eq!(&first[2], "opening", "{text}");
    assert_eq!(&last[2], "closing", "{text}");
    let inner = &rows[1..rows.len() - 1];
    assert!(inner.iter().all(|r| &r[2] != "opening" && &r[2] != "closing"), "{text}");
    let earned: Vec<&csv::StringRecord> = inner.iter().filter(|r| &r[2] == "earned").collect();
    assert!(!earned.is_empty(), "p01 earned nothing in this demo: {text}");
    let mut earned_ids = BTreeSet::new();
    for r in &earned {
        let (cs, hop) = r[4].strip_prefix("md_").and_then(|x| x.split_once('_')).expect("mandate id md_SEQ_HOP");
        assert_eq!(cs, &r[0], "the mandate id names the fact's sequence: {r:?}");
        assert_eq!(hop, &r[6], "and the hop: {r:?}");
        assert!(r[3].starts_with("deal-"), "earned lines name the conversion: {r:?}");
        assert!(cents(&r[8]) > 0);
        earned_ids.insert(r[4].to_owned());
    }
    // Balances: the closing line is the last balances, and opening + earned − clawed +
    // adjusted = closing.
    let total = |r: &csv::StringRecord| cents(&r[10]) + cents(&r[11]) + cents(&r[12]) + cents(&r[13]);
    assert_eq!(cents(&last[8]), total(last));
    let balances = |r: &csv::StringRecord| r.iter().skip(10).take(4).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(balances(last), balances(&rows[rows.len() - 2]), "closing balances are those after the last line");
    let moved: i64 = inner
        .iter()
        .filter(|r| ["earned", "clawback", "adjustment"].iter().any(|k| r[2].starts_with(k)))
        .map(|r| cents(&r[8]))
        .sum();
    assert_eq!(cents(&first[8]) + moved, cents(&last[8]), "opening + earned − clawed back + adjusted = closing");
    // The CLI statement is the one in the bundle.
    let bundle = d.join("bundle");
    assert_eq!(text, std::fs::read_to_string(bundle.join("partners/p01/statement.csv")).unwrap());
    // Every earned mandate has a receipt in the partner's receipts file.
    let receipts = std::fs::read_to_string(bundle.join("partners/p01/receipts.jsonl")).unwrap();
    let ids: BTreeSet<String> = receipts
        .lines()
        .map(|l| {
            let doc: Value = serde_json::from_str(l).unwrap();
            jws_payload(doc["receipt"].as_str().unwrap())["payment_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(earned_ids.is_subset(&ids), "earned {earned_ids:?} vs receipts {ids:?}");

    // A period: the closing before a date is the opening from it.
    let before = stdout(&statement("p01", &["--to", "2026-03-01"]));
    let after = stdout(&statement("p01", &["--from", "2026-03-01"]));
    let close: Vec<&str> = before.lines().last().unwrap().split(',').collect();
    let open: Vec<&str> = after.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((close[2], open[2]), ("closing", "opening"));
    assert_eq!(close[8..13], open[8..13], "balances carry over: {close:?} / {open:?}");
    // JSON has the same lines.
    let js: Value = serde_json::from_slice(&statement("p01", &["--format", "json"]).stdout).unwrap();
    assert_eq!(js.as_array().unwrap().len(), rows.len());
    assert_eq!(js[0]["entry"], "opening");

    // Unknown partner: non-zero, one line on stderr, nothing on stdout.
    let out = statement("no-such-partner", &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.trim_end(), "settle: partner 'no-such-partner' not found");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    // A bad date likewise.
    let out = statement("p01", &["--from", "March"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).contains("'March' is not a date"), "{}", stderr(&out));

    // Offline verification of receipts with the JWKS only.
    let jwks = bundle.join("jwks.json");
    let rfile = bundle.join("partners/p01/receipts.jsonl");
    let out = settle_ok([OsString::from("verify"), "--keys".into(), jwks.clone().into(), rfile.clone().into()]);
    assert_eq!(out.trim(), format!("{} receipts verified", receipts.lines().count()));
    let lines: Vec<Value> = receipts.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 2, "need two receipts to tamper with");
    // `line`: the first bad line, the one the error must name.
    let tampered = |name: &str, docs: &[Value], line: usize| {
        let p = dir.path().join(name);
        let s: String = docs.iter().map(|d| format!("{d}\n")).collect();
        std::fs::write(&p, s).unwrap();
        let out = settle([OsString::from("verify"), "--keys".into(), jwks.clone().into(), p.clone().into()]);
        assert!(!out.status.success(), "{name} verified: {}", stdout(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("{name}:{line}:")), "the error names file and line: {}", stderr(&out));
    };
    // Another (validly signed) mandate in the first receipt.
    let mut docs = lines.clone();
    let j = lines.iter().position(|l| l["mandate"] != lines[0]["mandate"]).expect("receipts of two mandates");
    docs[0]["mandate"] = lines[j]["mandate"].clone();
    tampered("swapped-mandate.jsonl", &docs, 1);
    // A line that is not a receipt after it: the first failure is still the one named.
    docs.push(json!({"not": "a receipt"}));
    tampered("swapped-then-unreadable.jsonl", &docs, 1);
    let n = docs.len();
    tampered("unreadable.jsonl", &[&lines[..], &docs[n - 1..]].concat(), n);
    // A first line that is not a receipt (the file is read as it is verified, and a file
    // that is not JSON Lines is read as one receipt).
    tampered("unreadable-first.jsonl", &[&docs[n - 1..], &lines[..]].concat(), 1);
    // One receipt, pretty-printed, is a file of its own.
    let one = dir.path().join("one-receipt.json");
    std::fs::write(&one, serde_json::to_vec_pretty(&lines[0]).unwrap()).unwrap();
    let out = settle_ok([OsString::from("verify"), "--keys".into(), jwks.clone().into(), one.into()]);
    assert_eq!(out.trim(), "1 receipts verified");
    // A byte of the receipt's payload changed (the amount is not in it; its leaf index is).
    let mut docs = lines.clone();
    let r = docs[0]["receipt"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = r.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    payload["leaf_index"] = json!(payload["leaf_index"].as_u64().unwrap() + 1);
    let forged = format!("{}.{}.{}", parts[0], B64.encode(serde_json::to_vec(&payload).unwrap()), parts[2]);
    docs[0]["receipt"] = json!(forged);
    tampered("forged-payload.jsonl", &docs, 1);
    // The leaf swapped for another record.
    let mut docs = lines.clone();
    docs[j]["leaf"] = lines[0]["leaf"].clone();
    tampered("swapped-leaf.jsonl", &docs, j + 1);
    // A wrong key set.
    let mut keys: Value = serde_json::from_slice(&std::fs::read(&jwks).unwrap()).unwrap();
    let x = keys["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut xb = B64.decode(&x).unwrap();
    xb[0] ^= 1;
    keys["keys"][0]["x"] = json!(B64.encode(xb));
    let wrong = dir.path().join("wrong-jwks.json");
    std::fs::write(&wrong, serde_json::to_vec(&keys).unwrap()).unwrap();
    let out = settle([OsString::from("verify"), "--keys".into(), wrong.into(), rfile.into()]);
    assert!(!out.status.success(), "receipts verified with the wrong key");
}

/// FINDING: the manifest of a bundle is not signed, and `audit --bundle` does not
/// re-derive statements nor check that every mandate has its receipt. Editing a
/// partner's statement (or dropping a receipt) and updating the manifest's hash passes
/// the audit.
#[test]
fn bundle_audit_rejects_a_forged_statement_with_a_matching_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    demo(&d, 60, 3);
    let bundle = d.join("bundle");
    settle_ok([OsString::from("audit"), "--bundle".into(), bundle.clone().into()]);
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let rewrite = |b: &Path, rel: &str, text: String, manifest: &mut Value| {
        std::fs::write(b.join(rel), &text).unwrap();
        manifest["files"][rel] = json!(hex::encode(Sha256::digest(text.as_bytes())));
        std::fs::write(b.join("manifest.json"), serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
    };

    // A statement whose first earned amount is raised by 1000.00.
    let forged = dir.path().join("forged-statement");
    copy_dir(&bundle, &forged);
    let partner = (1..=40)
        .map(|i| format!("p{i:02}"))
        .find(|p| {
            std::fs::read_to_string(bundle.join(format!("partners/{p}/statement.csv")))
                .is_ok_and(|s| s.contains(",earned,"))
        })
        .expect("a partner with earnings");
    let rel = format!("partners/{partner}/statement.csv");
    let text = std::fs::read_to_string(bundle.join(&rel)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = lines.iter().position(|l| l.contains(",earned,")).unwrap();
    let mut cols: Vec<String> = lines[i].split(',').map(str::to_owned).collect();
    let raised = cents(&cols[8]) + 100_000;
    cols[8] = format!("{}.{:02}", raised / 100, raised % 100);
    lines[i] = cols.join(",");
    let mut m = manifest.clone();
    rewrite(&forged, &rel, lines.join("\n") + "\n", &mut m);
    let out = settle([OsString::from("audit"), "--bundle".into(), forged.into()]);

    // A receipt dropped from a partner's receipts.
    let dropped = dir.path().join("dropped-receipt");
    copy_dir(&bundle, &dropped);
    let rrel = format!("partners/{partner}/receipts.jsonl");
    let text = std::fs::read_to_string(bundle.join(&rrel)).unwrap();
    let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    rewrite(&dropped, &rrel, rest, &mut manifest);
    let out2 = settle([OsString::from("audit"), "--bundle".into(), dropped.into()]);

    let mut wrong = Vec::new();
    if out.status.success() {
        wrong.push(format!("a statement with a forged earned amount ({rel}) passed: {}", stdout(&out).trim()));
    }
    if out2.status.success() {
        wrong.push(format!("{rrel} missing its first receipt passed: {}", stdout(&out2).trim()));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_subcommand_has_help_and_bad_usage_fails() {
    let cmds: &[&[&str]] = &[
        &[],
        &["demo"],
        &["audit"],
        &["export"],
        &["verify"],
        &["statement"],
        &["balances"],
        &["serve"],
        &["mcp"],
        &["load"],
        &["keys"],
        &["keys", "create"],
        &["keys", "rotate"],
        &["keys", "list"],
        &["keys", "token"],
        &["payouts"],
        &["payouts", "debtor"],
        &["payouts", "instrument"],
        &["payouts", "erase"],
        &["payouts", "file"],
        &["payouts", "reconcile"],
    ];
    for c in cmds {
        let mut args: Vec<&str> = c.to_vec();
        args.push("--help");
        let out = settle(&args);
        assert!(out.status.success(), "settle {args:?} exited {}: {}", out.status, stderr(&out));
        let text = stdout(&out);
        let usage = format!("Usage: {}", ["settle"].iter().chain(c.iter()).copied().collect::<Vec<_>>().join(" "));
        assert!(text.contains(&usage), "settle {args:?}: no {usage:?} in {text}");
        // `settle help <cmd>` says the same.
        let mut h = vec!["help"];
        h.extend_from_slice(c);
        let out = settle(&h);
        assert!(out.status.success(), "settle {h:?}");
        assert_eq!(stdout(&out), text, "settle {h:?} vs {args:?}");
    }
    let v = settle(["--version"]);
    assert!(v.status.success());
    assert_eq!(stdout(&v).trim(), format!("settle {}", env!("CARGO_PKG_VERSION")));
    // Bad usage: clap errors exit non-zero.
    for bad in [
        &["frobnicate"][..],
        &["audit"],
        &["demo", "--conversions", "0", "--data", "/nonexistent/x"],
        &["verify", "--keys", "k.json"],
        &["payouts", "file", "--data", "/nonexistent/x", "--out", "f.xml"],
    ] {
        let out = settle(bad);
        assert!(!out.status.success(), "settle {bad:?} succeeded");
        assert!(!stderr(&out).is_empty(), "settle {bad:?}: no message");
    }
}

#[test]
fn load_drives_the_http_api_and_leaves_a_store_that_audits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("load");
    let out = settle_ok([
        "load",
        "--data",
        data.to_str().unwrap(),
        "--conversions",
        "600",
        "--batch",
        "200",
        "--leads",
        "50",
        "--rate",
        "40",
        "--seconds",
        "1",
    ]);
    let line = |prefix: &str| {
        out.lines().map(str::trim).find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in {out}"))
    };
    assert!(line("batched").starts_with("batched             600 conversions, 1800 mandates"), "{out}");
    assert!(line("singles").starts_with("singles             40 conversions offered at 40/s"), "{out}");
    assert!(line("raw signing").contains("signatures/s"), "{out}");
    let audit = settle_ok(["audit", "--data", data.to_str().unwrap()]);
    assert!(audit.starts_with("audit ok") && audit.contains("money conserved"), "{audit}");
    let mandates: u64 = audit
        .split(" mandates re-derived")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no mandate count in {audit}"));
    assert!(mandates >= 1920, "3 hops x 640 conversions, plus the open mandates: {audit}");
    // A store that is not empty is refused, and left alone.
    let again = settle(["load", "--data", data.to_str().unwrap(), "--conversions", "10"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
}

/// `settle balances` replays the log to any position: at the end it agrees with every
/// partner's statement closing line, at a past fact with that fact's statement line; the
/// books balance at every position asked; a position past the end is a one-line error.
#[test]
fn balances_at_any_past_position_agree_with_the_statements() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("demo");
    demo(&d, 120, 8);
    let run = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec!["balances".into(), "--data".into(), d.clone().into()];
        args.extend(extra.iter().map(OsString::from));
        settle_ok(args)
    };
    let rows = |text: &str| -> Vec<csv::StringRecord> {
        csv::Reader::from_reader(text.as_bytes()).records().map(|r| r.unwrap()).collect()
    };
    let statement = stdout(&settle([
        OsString::from("statement"),
        "--data".into(),
        d.clone().into(),
        "--partner".into(),
        "p01".into(),
    ]));
    let lines = rows(&statement);
    // Statement columns 10..=13 are on_hold, payable, in_payout, paid; balance columns 6..=9.
    let after = |r: &csv::StringRecord, from: usize| (from..from + 4).map(|i| r[i].to_owned()).collect::<Vec<_>>();
    let p01 = |text: &str| rows(text).into_iter().find(|r| &r[1] == "p01").expect("p01 has a line");
    let end = p01(&run(&[]));
    assert_eq!(after(&end, 6), after(lines.last().unwrap(), 10), "at the end: the closing balances");
    // Every position asked: earned − clawed back + adjusted = on hold + payable + in payout
    // + paid.
    let mut checked = 0;
    for l in lines.iter().filter(|l| &l[2] == "earned" || &l[2] == "paid" || &l[2] == "hold_released").take(8) {
        let text = run(&["--at", &l[0]]);
        let b = p01(&text);
        assert!(b[0].parse::<u64>().unwrap() >= l[0].parse::<u64>().unwrap(), "reflects the fact at {}", &l[0]);
        assert_eq!(after(&b, 6), after(l, 10), "balances after the fact at seq {}", &l[0]);
        for r in rows(&text) {
            let c = |i: usize| cents(&r[i]);
            assert_eq!(c(4) - c(5) + c(10), c(6) + c(7) + c(8) + c(9), "books of {} balance at {}", &r[1], &l[0]);
        }
        checked += 1;
    }
    assert!(checked >= 3, "too few positions checked: {checked}");
    let json: Value = serde_json::from_str(&run(&["--at", "0", "--format", "json"])).unwrap();
    assert_eq!(json, serde_json::json!([]), "before any partner enrolled there are no books");
    let out = settle([OsString::from("balances"), "--data".into(), d.into(), "--at".into(), "99999999".into()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("past the end of the log"), "{err}");
}

/// The log alone as one self-contained JSON Lines file: exported, audited with its own
/// keys or pinned ones, and refused (one line, non-zero exit, the seq named) once edited.
#[test]
fn the_log_file_export_audits_alone_and_an_edit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    demo(&d, 40, 2);
    let file = dir.path().join("log.settle.jsonl");
    let args = |v: &[&std::ffi::OsStr]| v.iter().map(|s| s.to_os_string()).collect::<Vec<OsString>>();
    let out =
        settle_ok(args(&["export".as_ref(), "--data".as_ref(), d.as_os_str(), "--file".as_ref(), file.as_os_str()]));
    let text = std::fs::read_to_string(&file).unwrap();
    let records = text.lines().filter(|l| l.starts_with(r#"{"seq":"#)).count();
    assert!(out.starts_with(&format!("exported {records} records")), "{out}");
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["format"], "settle.log.1");
    assert!(text.lines().last().unwrap().starts_with(r#"{"checkpoint":"#), "a checkpoint covers the last record");
    let audit = |f: &Path, keys: Option<&Path>| {
        let mut a = args(&["audit".as_ref(), "--file".as_ref(), f.as_os_str()]);
        if let Some(k) = keys {
            a.extend(args(&["--keys".as_ref(), k.as_os_str()]));
        }
        settle(a)
    };
    let ok = audit(&file, None);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains(&format!("{records} records")), "{}", stdout(&ok));
    // Pinned to the vendor's JWKS as published in a bundle of the same store.
    let bundle = dir.path().join("bundle");
    export(&d, &bundle);
    let pinned = audit(&file, Some(&bundle.join("jwks.json")));
    assert!(pinned.status.success(), "{}", stderr(&pinned));
    // An amount edited in one record.
    let edited = dir.path().join("edited.jsonl");
    let (i, line) = text.lines().enumerate().find(|(_, l)| l.contains(r#""type":"mandate_issued""#)).unwrap();
    let seq = serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap();
    let amount = serde_json::from_str::<Value>(line).unwrap()["event"]["data"]["amount"]["amount"].as_i64().unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[i] = lines[i].replacen(&format!(r#""amount":{amount}"#), &format!(r#""amount":{}"#, amount + 1), 1);
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();
    let bad = audit(&edited, None);
    assert!(!bad.status.success());
    let err = stderr(&bad);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("at seq {seq}")) && err.contains("event hash"), "{err}");
    // The export never overwrites.
    let again =
        settle(args(&["export".as_ref(), "--data".as_ref(), d.as_os_str(), "--file".as_ref(), file.as_os_str()]));
    assert!(!again.status.success() && stderr(&again).contains("must not exist"), "{}", stderr(&again));
}

// ---- checkpoints held before, the payee, one number rule, the demo's sample ----------

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

/// The vendor's current signing key, from a data directory's keys.json.
fn vendor_key(data: &Path) -> settle_mandates::keys::SigningKey {
    let kf: Value = serde_json::from_slice(&std::fs::read(data.join("keys.json")).unwrap()).unwrap();
    let seed = hex::decode(kf["keys"].as_array().unwrap().last().unwrap()["seed"].as_str().unwrap()).unwrap();
    settle_mandates::keys::SigningKey::from_seed(&seed.try_into().unwrap())
}

/// Fails with exactly one line on stderr (and a non-zero exit) that contains `want`.
fn refused(out: &std::process::Output, want: &str) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded: {}", stdout(out));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("settle: ") && err.contains(want), "expected {want:?} in {err}");
    err
}

/// The leaf hashes of a bundle's log.jsonl (RFC 9162 leaves: the JCS of each event).
fn bundle_leaves(bundle: &Path) -> Vec<settle_mandates::merkle::Hash> {
    std::fs::read_to_string(bundle.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            settle_mandates::merkle::leaf_hash(&settle_mandates::jcs::to_vec(&r["event"]).unwrap())
        })
        .collect()
}

/// A log file cut back at an older signed checkpoint verifies on its own; given a
/// checkpoint the auditor held before (a note, a receipt, a bundle's checkpoints.json,
/// an earlier log file) `audit --file` and `audit --bundle` prove the log consistent with
/// it, and refuse a log cut back or rewritten with one line and a non-zero exit.
#[test]
fn audits_refuse_a_log_cut_back_or_rewritten_against_checkpoints_held_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    demo(&d, 40, 2);
    let bundle = d.join("bundle");
    let file = dir.path().join("log.jsonl");
    settle_ok(os(&[&"export", &"--data", &d, &"--file", &file]));
    let lines: Vec<String> = std::fs::read_to_string(&file).unwrap().lines().map(str::to_owned).collect();
    // No checkpoint of the empty log in the demo's file: record 0 follows the header.
    assert!(lines[1].starts_with(r#"{"seq":0,"#), "{}", lines[1]);
    let cps: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with(r#"{"checkpoint":"#)).collect();
    assert!(cps.len() >= 3, "the demo signs a checkpoint a day: {}", cps.len());
    let note_of =
        |i: usize| serde_json::from_str::<Value>(&lines[i]).unwrap()["checkpoint"].as_str().unwrap().to_owned();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let latest = write("latest.note", &note_of(*cps.last().unwrap()));
    let older = write("older.note", &note_of(cps[1]));
    let cut = write("cut.jsonl", &(lines[..=cps[cps.len() - 2]].join("\n") + "\n"));
    let audit = |f: &Path, known: &[&Path]| {
        let mut a = os(&[&"audit", &"--file", &f]);
        for k in known {
            a.extend(os(&[&"--known", k]));
        }
        settle(a)
    };
    // The hole: the cut file audits clean on its own.
    let alone = audit(&cut, &[]);
    assert!(alone.status.success(), "{}", stderr(&alone));
    // Held before: the latest note, a receipt (any receipts file), the bundle's checkpoints.
    let receipts = bundle.join("partners/p01/receipts.jsonl");
    for held in [&latest, &receipts, &bundle.join("checkpoints.json")] {
        let err = refused(&audit(&cut, &[held]), "the log was cut back");
        assert!(err.contains(&held.display().to_string()), "names where the checkpoint came from: {err}");
    }
    // The whole log extends every checkpoint held, in every accepted form, and the cut
    // file (an earlier export) too.
    let ok = audit(&file, &[&latest, &older, &receipts, &bundle.join("checkpoints.json"), &cut]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains(&format!("the log extends the {} checkpoint(s) you hold", cps.len())),
        "{}",
        stdout(&ok)
    );
    let api = write(
        "latest.json",
        &json!({"origin": "settle.demo/log", "size": 1, "root": "x", "time": 1, "note": note_of(cps[0])}).to_string(),
    );
    assert!(audit(&file, &[&api]).status.success());
    let b = settle(os(&[&"audit", &"--bundle", &bundle, &"--known", &older, &"--known", &file]));
    assert!(b.status.success() && stdout(&b).contains("the log extends"), "{}", stderr(&b));
    // Rewritten: the vendor's key signs another root at an older size (a fork).
    let (cp, _) = settle_mandates::checkpoint::Checkpoint::parse(&note_of(cps[1])).unwrap();
    let forked = settle_mandates::checkpoint::Checkpoint { root: [7; 32], ..cp };
    let forked = write("forked.note", &forked.sign(&vendor_key(&d)));
    refused(&audit(&file, &[&forked]), "the log was rewritten");
    refused(&settle(os(&[&"audit", &"--bundle", &bundle, &"--known", &forked])), "the log was rewritten");
    // A note another key signed; a file with no checkpoint in it.
    let stranger = forked.with_extension("stranger");
    std::fs::write(&stranger, cp_signed_by_stranger(&note_of(cps[1]))).unwrap();
    refused(&audit(&file, &[&stranger]), "you hold from");
    refused(&audit(&file, &[&bundle.join("jwks.json")]), "holds no signed checkpoint");
    // --known needs an export: the live store is audited as it is.
    assert!(!settle(os(&[&"audit", &"--data", &d, &"--known", &latest])).status.success());
}

fn cp_signed_by_stranger(note: &str) -> String {
    let (cp, _) = settle_mandates::checkpoint::Checkpoint::parse(note).unwrap();
    cp.sign(&settle_mandates::keys::SigningKey::from_seed(&[42; 32]))
}

/// `settle verify --known`: a receipt's checkpoint equal to one held passes; of another
/// size it needs the consistency proof the vendor serves (`--proof`), which must verify;
/// a fork (same size, other root) is refused.
#[test]
fn verify_checks_receipts_against_checkpoints_held_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    demo(&d, 40, 3);
    let bundle = d.join("bundle");
    let jwks = bundle.join("jwks.json");
    let receipts = bundle.join("partners/p01/receipts.jsonl");
    let n_receipts = std::fs::read_to_string(&receipts).unwrap().lines().count();
    let notes: Vec<String> = serde_json::from_slice(&std::fs::read(bundle.join("checkpoints.json")).unwrap()).unwrap();
    let parse = |n: &str| settle_mandates::checkpoint::Checkpoint::parse(n).unwrap().0;
    let (old, last) = (parse(&notes[0]), parse(notes.last().unwrap()));
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (old_note, last_note) = (write("old.note", &notes[0]), write("last.note", notes.last().unwrap()));
    let verify = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut a = os(&[&"verify", &"--keys", &jwks]);
        a.extend(os(extra));
        a.push(receipts.clone().into());
        settle(a)
    };
    let ok = verify(&[&"--known", &last_note]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(
        stdout(&ok).trim(),
        format!("{n_receipts} receipts verified; their 1 checkpoint(s) extend the 1 checkpoint(s) you hold")
    );
    let err = refused(&verify(&[&"--known", &old_note]), "no consistency proof");
    assert!(err.contains(&format!("/v1/checkpoints/consistency?from={}&to={}", old.size, last.size)), "{err}");
    // The proof the server would serve, from the log the bundle holds.
    let leaves = bundle_leaves(&bundle);
    let proof = settle_mandates::merkle::consistency_proof(leaves.as_slice(), old.size, last.size).unwrap().unwrap();
    let b64 = |h: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(h);
    let doc =
        |p: &[[u8; 32]]| json!({"from": old.size, "to": last.size, "proof": p.iter().map(b64).collect::<Vec<_>>()});
    let good = write("proof.json", &doc(&proof).to_string());
    let ok = verify(&[&"--known", &old_note, &"--known", &last_note, &"--proof", &good]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let mut bad = proof.clone();
    bad[0][0] ^= 1;
    let bad = write("bad-proof.json", &doc(&bad).to_string());
    refused(&verify(&[&"--known", &old_note, &"--proof", &bad]), "does not verify");
    // A fork: the vendor's key over another root at the receipts' size.
    let forked = settle_mandates::checkpoint::Checkpoint { root: [3; 32], ..last.clone() };
    let forked = write("forked.note", &forked.sign(&vendor_key(&d)));
    refused(&verify(&[&"--known", &forked]), "the log was forked");
    // A larger checkpoint held (the receipts are older): a proof is needed that way too.
    let later = settle_mandates::checkpoint::Checkpoint { size: last.size + 5, ..last.clone() };
    let later = write("later.note", &later.sign(&vendor_key(&d)));
    refused(&verify(&[&"--known", &later]), "no consistency proof");
    // A held note another key signed.
    let stranger = write("stranger.note", &cp_signed_by_stranger(notes.last().unwrap()));
    refused(&verify(&[&"--known", &stranger]), "the checkpoint you hold from");
    // --proof means nothing without --known.
    assert!(!verify(&[&"--proof", &good]).status.success());
}

/// One receipt of `doc` with its receipt payload edited and re-signed by `key`.
fn resign_receipt(doc: &Value, key: &settle_mandates::keys::SigningKey, edit: impl FnOnce(&mut Value)) -> Value {
    let mut payload = jws_payload(doc["receipt"].as_str().unwrap());
    edit(&mut payload);
    let bytes = settle_mandates::jcs::to_vec(&payload).unwrap();
    let mut d = doc.clone();
    d["receipt"] = json!(settle_mandates::jws::sign("settle-receipt+jws", &bytes, key));
    d
}

/// A base64 text with the unused low bit of its last character set: the same bytes to a
/// lenient decoder, not the canonical encoding.
fn noncanonical_b64(s: &str, url: bool) -> String {
    let alphabet: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let body = s.trim_end_matches('=');
    let pad = &s[body.len()..];
    let last = *body.as_bytes().last().unwrap();
    let v = alphabet.iter().position(|&c| c == last).unwrap();
    let c = alphabet[v ^ 1] as char;
    format!("{}{c}{pad}", &body[..body.len() - 1])
}

/// A receipt whose leaf index is `2^40` past the leaf its path proves: the RFC 9162
/// loop alone leads it to the root (the leaf is not on the tree's right edge), so only the
/// first step, leaf_index ≥ tree_size, refuses it. Signed with the vendor's own key.
fn receipt_past_the_tree(data: &Path) -> (Value, u64) {
    let receipts = std::fs::read_to_string(data.join("bundle/partners/p01/receipts.jsonl")).unwrap();
    let doc: Value = serde_json::from_str(receipts.lines().next().unwrap()).unwrap();
    let index = jws_payload(doc["receipt"].as_str().unwrap())["leaf_index"].as_u64().unwrap();
    let past = index + (1 << 40);
    (resign_receipt(&doc, &vendor_key(data), |p| p["leaf_index"] = json!(past)), past)
}

/// The three verifiers (`settle verify`, the Python kit, the TypeScript kit) accept and
/// refuse the same receipts, with the same options: edits a lenient decoder would not see
/// (non-canonical base64, an unknown member, a malformed signature line), a payee or an
/// origin other than the one asked for, a vendor-signed receipt pointing past its tree or
/// with a non-canonical payload.
#[test]
fn all_three_verifiers_accept_and_refuse_the_same_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    demo(&d, 40, 4);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kit = typescript_kit();
    let jwks = d.join("bundle/jwks.json");
    let receipts = std::fs::read_to_string(d.join("bundle/partners/p01/receipts.jsonl")).unwrap();
    let doc: Value = serde_json::from_str(receipts.lines().next().unwrap()).unwrap();
    let key = vendor_key(&d);
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut x = doc.clone();
        f(&mut x);
        x
    };
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    let token_with_sig = |t: &str| {
        let (rest, sig) = t.rsplit_once('.').unwrap();
        format!("{rest}.{}", noncanonical_b64(sig, true))
    };
    let cases: Vec<(&str, Value, &[&str], bool)> = vec![
        ("as issued", doc.clone(), &[], true),
        ("payee and origin as asked", doc.clone(), &["--partner", "p01", "--origin", "settle.demo/log"], true),
        (
            "a foreign witness signature line",
            edit(&|x| x["checkpoint"] = json!(format!("{}\u{2014} witness.example AAAA\n", s(x, "checkpoint")))),
            &[],
            true,
        ),
        ("another payee", doc.clone(), &["--partner", "p02"], false),
        ("another origin", doc.clone(), &["--origin", "other.example/log"], false),
        ("an unknown member", edit(&|x| x["note"] = json!("x")), &[], false),
        (
            "a non-canonical inclusion hash",
            edit(&|x| x["inclusion"][0] = json!(noncanonical_b64(x["inclusion"][0].as_str().unwrap(), false))),
            &[],
            false,
        ),
        (
            "a non-canonical receipt signature",
            edit(&|x| x["receipt"] = json!(token_with_sig(&s(x, "receipt")))),
            &[],
            false,
        ),
        (
            "a malformed signature line",
            edit(&|x| x["checkpoint"] = json!(format!("{}\u{2014} junk\n", s(x, "checkpoint")))),
            &[],
            false,
        ),
        (
            "a non-canonical checkpoint signature",
            edit(&|x| {
                let note = s(x, "checkpoint");
                let (head, sig) = note.trim_end().rsplit_once(' ').unwrap();
                x["checkpoint"] = json!(format!("{head} {}\n", noncanonical_b64(sig, false)));
            }),
            &[],
            false,
        ),
        ("a leaf index past the tree, vendor-signed", receipt_past_the_tree(&d).0, &[], false),
        (
            "a non-canonical payload, vendor-signed",
            {
                let p = jws_payload(doc["receipt"].as_str().unwrap());
                let bytes = serde_json::to_vec_pretty(&p).unwrap();
                edit(&|x| x["receipt"] = json!(settle_mandates::jws::sign("settle-receipt+jws", &bytes, &key)))
            },
            &[],
            false,
        ),
        ("an unknown payload member, vendor-signed", resign_receipt(&doc, &key, |p| p["extra"] = json!(1)), &[], false),
    ];
    let mut wrong = Vec::new();
    for (i, (name, doc, flags, accept)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("case-{i}.json"));
        std::fs::write(&f, doc.to_string()).unwrap();
        let mut rust = os(&[&"verify", &"--keys", &jwks]);
        rust.extend(flags.iter().map(OsString::from));
        rust.push(f.clone().into());
        let rust = settle(rust);
        let mut args: Vec<OsString> = os(&[&"receipt", &jwks, &f]);
        args.extend(flags.iter().map(OsString::from));
        let py = support::python::run(root, &args.iter().map(OsString::as_os_str).collect::<Vec<_>>());
        let ts = std::process::Command::new("node").arg(kit.join("verify_receipt.mjs")).args(&args).output().unwrap();
        for (who, out) in [("settle verify", &rust), ("python", &py), ("typescript", &ts)] {
            let code = out.status.code();
            if (code == Some(0)) != *accept || !matches!(code, Some(0 | 1)) {
                wrong.push(format!("{who} on {name}: {}", support::python::describe(out)));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// Runs a Python snippet of the docs (the first ```python block after `marker` in
/// `doc`), after `prelude`, with `after` appended, in `cwd`.
fn run_doc_snippet(doc: &str, marker: &str, prelude: &str, after: &str, cwd: &Path) -> std::process::Output {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(doc)).unwrap();
    let from = text.find(marker).unwrap_or_else(|| panic!("{marker:?} is not in {doc}"));
    let block = text[from..].split("```python\n").nth(1).and_then(|b| b.split("\n```").next()).unwrap();
    std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}\n{block}\n{after}"))
        .current_dir(cwd)
        .output()
        .expect("python3 runs the docs' snippets")
}

/// docs/verify-a-receipt.md, step 6: the snippet refuses a vendor-signed receipt whose
/// leaf index is past its tree (RFC 9162's first step), and still verifies the receipt
/// as issued.
#[test]
fn the_inclusion_snippet_refuses_a_leaf_index_past_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    demo(&d, 30, 6);
    let (doc, past) = receipt_past_the_tree(&d);
    let index = past - (1 << 40);
    std::fs::write(dir.path().join("r.json"), doc.to_string()).unwrap();
    let prelude = "import base64, hashlib, json\n\
                   class Invalid(Exception): pass\n\
                   def sha256(b): return hashlib.sha256(b).digest()";
    let after = format!(
        "doc = json.load(open('r.json'))\n\
         leaf = base64.urlsafe_b64decode(doc['leaf'] + '=' * (-len(doc['leaf']) % 4))\n\
         lines = doc['checkpoint'].split('\\n')\n\
         size, root = int(lines[1]), base64.b64decode(lines[2])\n\
         path = [base64.b64decode(h) for h in doc['inclusion']]\n\
         assert root_from_inclusion({index}, size, sha256(b'\\x00' + leaf), path) == root\n\
         try:\n    r = root_from_inclusion({past}, size, sha256(b'\\x00' + leaf), path)\n\
         except Invalid:\n    print('refused')\n\
         else:\n    print('accepted', r == root)"
    );
    let out = run_doc_snippet("verify-a-receipt.md", "### 6. The inclusion proof", prelude, &after, dir.path());
    assert!(out.status.success(), "{}", support::python::describe(&out));
    assert_eq!(stdout(&out).trim(), "refused", "the snippet accepts a leaf past the tree");
}

/// One rule for the numbers of the log, in every verifier: `audit --file`, `audit
/// --bundle` (whose manifest the vendor re-signed) and the chain snippet of
/// docs/formats.md refuse an event whose number is written `5397.0`, `5.397e3` or `-0`,
/// though its event hash and chain are those of the integer; all accept the log as
/// exported.
#[test]
fn a_number_written_as_a_float_is_refused_by_every_audit_and_the_formats_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    demo(&d, 60, 3);
    let bundle = d.join("bundle");
    let file = dir.path().join("log.jsonl");
    settle_ok(os(&[&"export", &"--data", &d, &"--file", &file]));
    let text = std::fs::read_to_string(&file).unwrap();
    let log = std::fs::read_to_string(bundle.join("log.jsonl")).unwrap();
    let line_of = |kind: &str, has: &str| {
        log.lines().find(|l| l.contains(&format!(r#""type":"{kind}""#)) && l.contains(has)).unwrap().to_owned()
    };
    let amount_of = |l: &str| serde_json::from_str::<Value>(l).unwrap()["event"]["data"]["amount"]["amount"].as_i64();
    let mandate = log
        .lines()
        .find(|l| l.contains(r#""type":"mandate_issued""#) && amount_of(l).is_some_and(|a| a >= 10))
        .unwrap()
        .to_owned();
    let a = amount_of(&mandate).unwrap().to_string();
    let clawback = line_of("clawback_issued", r#""offset":{"amount":0,"#);
    let edits: Vec<(String, String, String)> = vec![
        (mandate.clone(), format!(r#""amount":{a},"#), format!(r#""amount":{a}.0,"#)),
        (mandate.clone(), format!(r#""amount":{a},"#), format!(r#""amount":{}.{}e{},"#, &a[..1], &a[1..], a.len() - 1)),
        (clawback.clone(), r#""offset":{"amount":0,"#.into(), r#""offset":{"amount":-0,"#.into()),
    ];
    let key = vendor_key(&d);
    let snippet = |log: &str| {
        let cwd = tempfile::tempdir().unwrap();
        std::fs::create_dir(cwd.path().join("bundle")).unwrap();
        std::fs::write(cwd.path().join("bundle/log.jsonl"), log).unwrap();
        run_doc_snippet("formats.md", "Reproduce the whole chain of a bundle", "", "print('chain ok')", cwd.path())
    };
    let ok = snippet(&log);
    assert!(ok.status.success() && stdout(&ok).contains("chain ok"), "{}", support::python::describe(&ok));
    for (i, (line, from, to)) in edits.iter().enumerate() {
        let seq = serde_json::from_str::<Value>(line).unwrap()["seq"].as_u64().unwrap();
        let edited = line.replacen(from.as_str(), to, 1);
        assert_ne!(&edited, line);
        // The log file.
        let f = dir.path().join(format!("edited-{i}.jsonl"));
        std::fs::write(&f, text.replacen(line.as_str(), &edited, 1)).unwrap();
        let err = refused(&settle(os(&[&"audit", &"--file", &f])), "not an integer");
        assert!(err.contains(&format!("at seq {seq}:")), "{err}");
        // The bundle, its manifest re-hashed and re-signed with the vendor's key.
        let b = dir.path().join(format!("bundle-{i}"));
        copy_dir(&bundle, &b);
        let new_log = log.replacen(line.as_str(), &edited, 1);
        std::fs::write(b.join("log.jsonl"), &new_log).unwrap();
        let mut m: Value = serde_json::from_slice(&std::fs::read(b.join("manifest.json")).unwrap()).unwrap();
        m["files"]["log.jsonl"] = json!(hex::encode(Sha256::digest(new_log.as_bytes())));
        std::fs::write(b.join("manifest.json"), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let signed =
            settle_mandates::jws::sign("settle-manifest+jws", &settle_mandates::jcs::to_vec(&m).unwrap(), &key);
        std::fs::write(b.join("manifest.jws"), format!("{signed}\n")).unwrap();
        let err = refused(&settle(os(&[&"audit", &"--bundle", &b])), "not an integer");
        assert!(err.contains(&format!("at seq {seq}:")), "{err}");
        // The snippet of formats.md.
        let out = snippet(&new_log);
        assert!(!out.status.success(), "the formats.md snippet accepted {to}: {}", support::python::describe(&out));
    }
}

/// The demo says how many of the bundle's receipts it verified, and that they are a
/// sample (three partners' receipts), not all of them.
#[test]
fn the_demo_says_its_receipt_check_is_a_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    let out = demo(&d, 40, 9);
    let count = |p: &Path| std::fs::read_to_string(p).map_or(0, |s| s.lines().count());
    let partners = d.join("bundle/partners");
    let all: usize =
        std::fs::read_dir(&partners).unwrap().map(|e| count(&e.unwrap().path().join("receipts.jsonl"))).sum();
    let present: Vec<&str> =
        ["p01", "p05", "p25"].into_iter().filter(|p| count(&partners.join(p).join("receipts.jsonl")) > 0).collect();
    let sample: usize = present.iter().map(|p| count(&partners.join(p).join("receipts.jsonl"))).sum();
    assert!(sample > 0 && sample < all, "{sample} of {all}");
    let line = out.lines().find(|l| l.trim_start().starts_with("receipts ")).unwrap_or_else(|| panic!("{out}"));
    let want = format!(
        "{sample} of {all} verified offline with the JWKS only: a sample, the receipts of {}",
        present.join(", ")
    );
    assert!(line.contains(&want), "{line:?} does not say {want:?}");
}

/// A command whose reader stops reading (`settle balances | head -1`) ends quietly and
/// with success, as Unix tools do: here standard output is a pipe whose reading end is
/// closed before the command starts, so its first write fails (EPIPE).
#[test]
fn output_to_a_closed_pipe_ends_quietly_with_success() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("d");
    demo(&d, 30, 3);
    let bundle = dir.path().join("bundle");
    export(&d, &bundle);
    let receipts = bundle.join("partners").join("p01").join("receipts.jsonl");
    let jwks = bundle.join("jwks.json");
    let (data, file) = (d.as_os_str(), dir.path().join("log.jsonl"));
    let again = dir.path().join("again");
    let commands: Vec<Vec<&std::ffi::OsStr>> = vec![
        vec!["balances".as_ref(), "--data".as_ref(), data],
        vec!["balances".as_ref(), "--data".as_ref(), data, "--format".as_ref(), "json".as_ref()],
        vec!["statement".as_ref(), "--data".as_ref(), data, "--partner".as_ref(), "p01".as_ref()],
        vec![
            "statement".as_ref(),
            "--data".as_ref(),
            data,
            "--partner".as_ref(),
            "p01".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
        ],
        vec!["verify".as_ref(), "--keys".as_ref(), jwks.as_os_str(), receipts.as_os_str()],
        vec!["audit".as_ref(), "--data".as_ref(), data],
        vec!["export".as_ref(), "--data".as_ref(), data, "--file".as_ref(), file.as_os_str()],
        vec!["keys".as_ref(), "list".as_ref(), "--data".as_ref(), data],
        // A demo of its own (it replaces what its data directory holds).
        vec![
            "demo".as_ref(),
            "--data".as_ref(),
            again.as_os_str(),
            "--conversions".as_ref(),
            "30".as_ref(),
            "--quiet".as_ref(),
        ],
    ];
    for args in commands {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = std::process::Command::new(bin())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .output()
            .expect("run settle");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "settle {args:?} into a closed pipe: {}, stderr: {}",
            out.status,
            stderr(&out)
        );
    }
    assert!(file.exists(), "the export was written before its line was printed");
}

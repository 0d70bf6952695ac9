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
    assert_eq!(o1.replace("e1", "eX"), o2.replace("e2", "eX"));
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
            "paid"
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
    // Balances: the closing line is the last balances, and opening + earned − clawed = closing.
    let total = |r: &csv::StringRecord| cents(&r[10]) + cents(&r[11]) + cents(&r[12]) + cents(&r[13]);
    assert_eq!(cents(&last[8]), total(last));
    let balances = |r: &csv::StringRecord| r.iter().skip(10).map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(balances(last), balances(&rows[rows.len() - 2]), "closing balances are those after the last line");
    let moved: i64 =
        inner.iter().filter(|r| r[2].starts_with("earned") || r[2].starts_with("clawback")).map(|r| cents(&r[8])).sum();
    assert_eq!(cents(&first[8]) + moved, cents(&last[8]), "opening + earned − clawed back = closing");
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
    // Every position asked: earned − clawed back = on hold + payable + in payout + paid.
    let mut checked = 0;
    for l in lines.iter().filter(|l| &l[2] == "earned" || &l[2] == "paid" || &l[2] == "hold_released").take(8) {
        let text = run(&["--at", &l[0]]);
        let b = p01(&text);
        assert!(b[0].parse::<u64>().unwrap() >= l[0].parse::<u64>().unwrap(), "reflects the fact at {}", &l[0]);
        assert_eq!(after(&b, 6), after(l, 10), "balances after the fact at seq {}", &l[0]);
        for r in rows(&text) {
            let c = |i: usize| cents(&r[i]);
            assert_eq!(c(4) - c(5), c(6) + c(7) + c(8) + c(9), "books of {} balance at {}", &r[1], &l[0]);
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

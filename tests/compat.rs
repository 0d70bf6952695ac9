//! Older logs still audit and replay byte for byte.
//!
//! `tests/fixtures/v1-demo-seed1/` was written by settle before exact arithmetic
//! (`largest_remainder.v1`): `settle demo --data store --conversions 200 --seed 1`, then
//! `settle export --data store --out bundle` (the fixture's README). Its specs carry no
//! `allocation`, so they must be priced with v1, whose results this binary must
//! reproduce to the byte, however its current arithmetic differs.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use support::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-demo-seed1")
}

#[test]
fn a_store_written_before_exact_arithmetic_audits_and_exports_the_same_bundle() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    copy_dir(&fixture().join("store"), &store);
    // Git keeps no empty directory: give back each keyspace the (empty) `tables` folder
    // the store had when it was written.
    for ks in std::fs::read_dir(store.join("log/keyspaces")).expect("keyspaces") {
        std::fs::create_dir_all(ks.expect("keyspace").path().join("tables")).expect("mkdir");
    }
    let audit = settle_ok([OsString::from("audit"), "--data".into(), store.clone().into()]);
    assert!(audit.contains("money conserved"), "{audit}");
    let out = tmp.path().join("bundle");
    settle_ok([OsString::from("export"), "--data".into(), store.into(), "--out".into(), out.clone().into()]);
    let old = fixture().join("bundle");
    let files = files_under(&old);
    assert_eq!(files_under(&out), files, "the same files");
    // Statements gained a last column since (`rail_reference`, the rail's word on a
    // payout); every column the older settle wrote is the same, and so is every other
    // file but the manifest, which names the statements' new digests and nothing else new.
    let statement = |f: &Path, dir: &Path| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(f)).expect("read");
        text.lines().map(|l| l.splitn(15, ',').take(14).collect::<Vec<_>>().join(",")).collect()
    };
    for f in &files {
        let name = f.display().to_string();
        if name.ends_with("statement.csv") {
            assert_eq!(statement(f, &old), statement(f, &out), "{name}: the older columns differ");
        } else if !name.starts_with("manifest.") {
            let (a, b) = (std::fs::read(old.join(f)).expect("read"), std::fs::read(out.join(f)).expect("read"));
            assert!(a == b, "{name} differs from what the older settle exported");
        }
    }
    let manifest = |dir: &Path| -> serde_json::Value {
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("JSON");
        let files = m["files"].as_object_mut().expect("files");
        files.retain(|k, _| !k.ends_with("statement.csv"));
        m
    };
    assert_eq!(manifest(&old), manifest(&out), "the manifest names the same log, root and files");
}

#[test]
fn a_bundle_written_before_exact_arithmetic_audits() {
    let bundle = fixture().join("bundle");
    let keys = bundle.join("jwks.json");
    let audit = settle_ok([OsString::from("audit"), "--bundle".into(), bundle.into(), "--keys".into(), keys.into()]);
    assert!(audit.contains("audit ok"), "{audit}");
}

#[test]
fn the_older_mandates_name_v1_and_new_ones_name_v2() {
    let log = std::fs::read_to_string(fixture().join("bundle/log.jsonl")).expect("log");
    assert!(!log.contains("largest_remainder.v2"), "the fixture predates v2");
    assert!(!log.contains("\"allocation\""), "the fixture's specs carry no allocation");
    assert!(!log.contains("\"customer_key\""), "the fixture's leads carry no customer_key (trim_lower.v1)");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("d");
    settle_ok([
        OsString::from("demo"),
        "--data".into(),
        data.clone().into(),
        "--conversions".into(),
        "200".into(),
        "--seed".into(),
        "1".into(),
        "--quiet".into(),
    ]);
    let out = tmp.path().join("b");
    settle_ok([OsString::from("export"), "--data".into(), data.into(), "--out".into(), out.clone().into()]);
    let new = std::fs::read_to_string(out.join("log.jsonl")).expect("log");
    assert!(new.contains(r#""allocation":"largest_remainder.v2""#), "new specs record their arithmetic");
    assert!(new.contains(r#""customer_key":"uts46_nfkc_cf.v2""#), "new leads record their customer key");
}

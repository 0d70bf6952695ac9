//! Interop: the partner kit's verifier, `examples/python/verify_receipt.py`, built on stock
//! libraries (joserfc, cryptography, hashlib), accepts the committed receipt document
//! vector and rejects tampered copies of it.
//!
//! Needs `python3`; the script installs joserfc with pip if it cannot import it. If the
//! verifier cannot run, these tests fail: they never skip.

#[path = "../../tests/support/python.rs"]
mod python;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use serde_json::{Value, json};

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::jcs;
use settle_mandates::keys::SigningKey;

use python::describe;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed vectors (see tests/vectors.rs).
fn formats() -> Value {
    let path = manifest_dir().join("tests").join("vectors").join("settle_formats.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("settle_formats.json is JSON")
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("settle-interop-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        // create_dir (not create_dir_all) fails if the name is taken: the dir is ours.
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `jwks` and `receipt` to a temp dir and runs the Python verifier on them.
fn run_verifier(jwks: &Value, receipt: &Value) -> Output {
    let dir = TempDir::new();
    let jwks_path = dir.path().join("jwks.json");
    let receipt_path = dir.path().join("receipt.json");
    std::fs::write(&jwks_path, serde_json::to_vec_pretty(jwks).unwrap()).expect("write JWKS");
    std::fs::write(&receipt_path, serde_json::to_vec_pretty(receipt).unwrap()).expect("write receipt");
    let workspace = manifest_dir().parent().expect("workspace root").to_owned();
    python::run(&workspace, &["receipt".as_ref(), jwks_path.as_os_str(), receipt_path.as_os_str()])
}

fn s(v: &Value) -> &str {
    v.as_str().expect("a string")
}

/// Re-encodes a token's payload after `edit`, keeping its header and signature.
fn tamper_payload(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    edit(&mut payload);
    format!("{}.{}.{}", parts[0], B64.encode(jcs::to_vec(&payload).unwrap()), parts[2])
}

#[test]
fn python_verifier_accepts_the_committed_receipt() {
    let f = formats();
    let out = run_verifier(&f["jwks"], &f["receipt_document"]["document"]);
    assert!(out.status.success(), "the Python verifier refused the committed receipt:\n{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok"), "{}", describe(&out));
}

#[test]
fn python_verifier_accepts_the_committed_payment_receipt_and_refuses_another_leaf() {
    let f = formats();
    let base = &f["settled_receipt_document"]["document"];
    let out = run_verifier(&f["jwks"], base);
    assert!(out.status.success(), "the Python verifier refused the payment receipt:\n{}", describe(&out));
    // The leaf must be the mandate's own payment record: a failure record is not one.
    let mut leaf: Value = serde_json::from_slice(&B64.decode(s(&base["leaf"])).unwrap()).unwrap();
    leaf["type"] = json!("mandate_payment_failed");
    let mut d = base.clone();
    d["leaf"] = json!(B64.encode(jcs::to_vec(&leaf).unwrap()));
    let out = run_verifier(&f["jwks"], &d);
    assert!(!out.status.success(), "accepted a payment receipt with a failure leaf:\n{}", describe(&out));
    assert!(describe(&out).contains("does not name this mandate"), "{}", describe(&out));
}

#[test]
fn python_verifier_rejects_tampered_receipts() {
    let f = formats();
    let jwks = &f["jwks"];
    let base = &f["receipt_document"]["document"];

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();

    let mut d = base.clone();
    d["receipt"] = json!(tamper_payload(s(&base["receipt"]), |p| p["leaf_index"] = json!(3)));
    cases.push(("receipt payload changed", d, "receipt: signature does not verify"));

    let mut d = base.clone();
    d["mandate"] = json!(tamper_payload(s(&base["mandate"]), |p| {
        p["payment_amount"]["amount"] = json!(999_999);
    }));
    cases.push(("mandate payload changed", d, "mandate: signature does not verify"));

    let mut d = base.clone();
    d["mandate"] = f["clawback_mandate"]["jws"].clone();
    cases.push(("another valid mandate", d, "reference is not base64url(SHA-256(mandate token))"));

    let mut d = base.clone();
    let mut leaf: Value = serde_json::from_slice(&B64.decode(s(&base["leaf"])).unwrap()).unwrap();
    leaf["v"] = json!(2);
    d["leaf"] = json!(B64.encode(jcs::to_vec(&leaf).unwrap()));
    cases.push(("leaf changed", d, "inclusion proof: leads to root"));

    let proof = base["inclusion"].as_array().expect("inclusion proof");
    assert!(!proof.is_empty());
    for j in 0..proof.len() {
        let mut h = B64STD.decode(s(&proof[j])).unwrap();
        h[31] ^= 0x01;
        let mut d = base.clone();
        d["inclusion"][j] = json!(B64STD.encode(h));
        cases.push(("proof hash bit flipped", d, "inclusion proof: leads to root"));
    }

    let note = s(&base["checkpoint"]);
    let (cp, _) = Checkpoint::parse(note).expect("checkpoint parses");
    let mut d = base.clone();
    d["checkpoint"] = json!(note.replacen(&format!("\ntime {}\n", cp.time), &format!("\ntime {}\n", cp.time + 1), 1));
    cases.push(("checkpoint body changed", d, "checkpoint: signature by key"));

    let stranger = SigningKey::from_seed(&[0xee; 32]);
    let mut d = base.clone();
    d["checkpoint"] = json!(cp.sign(&stranger));
    cases.push(("checkpoint by an unknown key", d, "checkpoint: no signature by a JWKS key"));

    for (name, doc, reason) in &cases {
        assert_ne!(doc, base, "{name}: the tampering changed nothing");
        let out = run_verifier(jwks, doc);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: expected a verification failure\n{}", describe(&out));
        assert!(stderr.contains(reason), "{name}: expected '{reason}'\n{}", describe(&out));
        assert!(!String::from_utf8_lossy(&out.stdout).starts_with("ok"), "{name}\n{}", describe(&out));
    }
}

/// The committed webhook vector's `v1` signature is what the stock `standardwebhooks`
/// library computes, and its `v1a` signature verifies with `cryptography` and the bare
/// public key: receivers need nothing from us.
#[test]
fn webhook_vector_matches_the_standardwebhooks_library() {
    python::ensure_webhook_deps();
    let f = formats();
    let w = &f["webhook"];
    let script = r#"
import base64, datetime, json, sys
from standardwebhooks import Webhook
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
w = json.load(sys.stdin)
ts = datetime.datetime.fromtimestamp(w["timestamp"], tz=datetime.timezone.utc)
v1 = Webhook(w["secret"]).sign(w["id"], ts, w["body"])
sigs = dict(e.split(",", 1) for e in w["signature_header"].split(" "))
assert "v1," + sigs["v1"] == v1, (v1, sigs)
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(w["public_key"][len("whpk_"):]))
key.verify(base64.b64decode(sigs["v1a"]), f'{w["id"]}.{w["timestamp"]}.{w["body"]}'.encode())
print("ok")
"#;
    let run = |w: &Value| {
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), w.to_string().as_bytes()).expect("write");
        child.wait_with_output().expect("python3 finishes")
    };
    let out = run(w);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok", "{}", describe(&out));
    let mut tampered = w.clone();
    tampered["body"] = json!(s(&w["body"]).replace("1234", "1235"));
    let out = run(&tampered);
    assert!(!out.status.success(), "a tampered body passed: {}", describe(&out));
}

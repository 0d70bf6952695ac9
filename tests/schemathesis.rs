//! The OpenAPI document against the live server, by Schemathesis (PyPI, pinned below):
//! `schemathesis run <url>/openapi.json -c all`, every check, once as a partner and once
//! as a vendor administrator, against a store holding real data, must find nothing. A
//! failure here means the server answers something the document does not state, or
//! accepts what it forbids, or refuses what it allows.
//!
//! The server and Schemathesis run in a network namespace of their own that holds only
//! the loopback interface (`unshare --net`): the fuzzer subscribes webhooks to public
//! URLs, and nothing they cause may leave the machine. The run is driven from inside it
//! by `tests/support/schemathesis_run.py`.
//!
//! `SETTLE_SCHEMATHESIS_EXAMPLES` (default 40 per operation) and `SETTLE_SCHEMATHESIS_SEED`
//! (default fixed, so a failure reproduces) widen or vary the search.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::*;

/// The pinned Schemathesis.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "40";
/// The generation seed, so that a failure is found again by the next run.
const SEED: &str = "20261207";
/// Longest the whole run may take before it is stopped and fails.
const DEADLINE: Duration = Duration::from_secs(20 * 60);

/// Schemathesis at [`SCHEMATHESIS`], in a venv of its own under the target directory.
fn schemathesis() -> PathBuf {
    support::venv::pinned("schemathesis-venv", &[SCHEMATHESIS]).join("bin").join("schemathesis")
}

/// The id of a token (`tok_` and the first 12 hex digits of its SHA-256).
fn token_id(token: &str) -> String {
    format!("tok_{}", &hex::encode(Sha256::digest(token.as_bytes()))[..12])
}

/// The last lines of a run's output, for the failure message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn schemathesis_finds_no_difference_between_the_openapi_document_and_the_server() {
    let schemathesis = schemathesis();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    keys_create(&data);
    let all = format!("{ADMIN_SCOPES},tokens-write");
    let admin = token(&data, "vendor-admin", "ops", None, &all);
    let partner = token(&data, "partner", "p1", None, "read,leads-write,webhooks-write");
    let spare = token_id(&token(&data, "partner", "p3", None, "read"));
    let examples = std::env::var("SETTLE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned());
    let seed = std::env::var("SETTLE_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("support").join("schemathesis_run.py");
    let started = Instant::now();
    // A network namespace with only `lo`, brought up; the driver runs inside it.
    let mut child = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up && exec python3 \"$@\"", "sh"])
        .arg(&driver)
        .arg(bin())
        .arg(&data)
        .arg(dir.path())
        .arg(&schemathesis)
        .args([&admin, &partner, &spare, &examples, &seed])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run unshare (util-linux) to make a network namespace for the run");
    // Its output is read after it exits (it prints one line; Schemathesis writes to files).
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the run") {
            break st;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Schemathesis run took longer than {} s", DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output().expect("the run's output");
    let said = format!(
        "exit {status}\n--- stdout\n{}\n--- stderr\n{}\n--- server log (tail)\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&dir.path().join("serve.log"), 30)
    );
    assert!(status.success(), "the Schemathesis run did not complete:\n{said}");
    let line = String::from_utf8_lossy(&out.stdout).lines().next_back().unwrap_or_default().to_owned();
    let runs: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the driver printed no JSON ({e}):\n{said}"));
    let mut failed = Vec::new();
    for who in ["partner", "vendor"] {
        let run = &runs[who];
        let output = PathBuf::from(run["output"].as_str().expect("output file"));
        eprintln!(
            "schemathesis as {who}: exit {}, {} s\n  {}\n{}",
            run["code"],
            run["secs"],
            run["command"].as_str().unwrap_or_default(),
            tail(&output, 12)
        );
        if run["code"] != 0 {
            let text = std::fs::read_to_string(&output).unwrap_or_default();
            failed.push(format!("=== as {who} (exit {}) ===\n{text}", run["code"]));
        }
    }
    assert!(
        failed.is_empty(),
        "Schemathesis found differences between docs/openapi.json and the server (seed {seed}, {examples} examples; \
         reproduce with SETTLE_SCHEMATHESIS_SEED={seed}):\n{}",
        failed.join("\n")
    );
}

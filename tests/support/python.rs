//! The partner kit's Python verifier and its stock dependencies, shared by the interop
//! tests of the mandates crate and the end-to-end tests of the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `examples/python/verify_receipt.py` under the workspace root.
pub fn kit(workspace: &Path) -> PathBuf {
    workspace.join("examples").join("python").join("verify_receipt.py")
}

/// Installs `packages` from PyPI unless `imports` already import; fails loudly (never
/// skips) when they cannot be installed.
pub fn ensure(imports: &str, packages: &[&str], needed_for: &str) {
    let have = Command::new("python3").args(["-c", &format!("import {imports}")]).status();
    if have.is_ok_and(|s| s.success()) {
        return;
    }
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet"])
        .args(packages)
        .status()
        .unwrap_or_else(|e| panic!("python3 is needed to run {needed_for}: {e}"));
    assert!(st.success(), "could not install {} from PyPI: {needed_for} cannot run", packages.join(" and "));
}

/// The partner kit's stock libraries.
pub fn ensure_deps() {
    ensure("joserfc, cryptography", &["joserfc", "cryptography"], "the partner kit");
}

/// What the kit's webhook receiver needs (`standardwebhooks`, `cryptography`).
pub fn ensure_webhook_deps() {
    ensure("standardwebhooks, cryptography", &["standardwebhooks", "cryptography"], "the webhook receiver");
}

/// Runs the kit with `args` (after installing its dependencies).
pub fn run(workspace: &Path, args: &[&std::ffi::OsStr]) -> Output {
    ensure_deps();
    Command::new("python3")
        .arg(kit(workspace))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", kit(workspace).display()))
}

/// Exit status and both streams, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

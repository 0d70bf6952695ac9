//! The partner kit's Python verifier and its stock dependencies, shared by the interop
//! tests of the mandates crate and the end-to-end tests of the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `examples/python/verify_receipt.py` under the workspace root.
pub fn kit(workspace: &Path) -> PathBuf {
    workspace.join("examples").join("python").join("verify_receipt.py")
}

/// Installs the kit's stock libraries from PyPI when they are missing; fails loudly
/// (never skips) when they cannot be installed.
pub fn ensure_deps() {
    let have = Command::new("python3").args(["-c", "import joserfc, cryptography"]).status();
    if have.is_ok_and(|s| s.success()) {
        return;
    }
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "joserfc", "cryptography"])
        .status()
        .expect("python3 is needed to run the partner kit");
    assert!(st.success(), "could not install joserfc and cryptography from PyPI: the partner kit cannot run");
}

/// Installs what the kit's webhook receiver needs (`standardwebhooks`, `cryptography`)
/// when missing; fails loudly when it cannot.
pub fn ensure_webhook_deps() {
    let have = Command::new("python3").args(["-c", "import standardwebhooks, cryptography"]).status();
    if have.is_ok_and(|s| s.success()) {
        return;
    }
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "standardwebhooks", "cryptography"])
        .status()
        .expect("python3 is needed to run the webhook receiver");
    assert!(st.success(), "could not install standardwebhooks and cryptography from PyPI");
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

//! A Python virtual environment holding the stock agent SDKs at pinned versions, for the
//! interop tests of the agent doors: the A2A SDK's card verifier and client, and the
//! official MCP client. Installed from PyPI with pip, as the partner kit's libraries are
//! (`python.rs`), but into a venv under the target directory, so the pins hold whatever
//! else the machine's Python has. Made once and reused while the pins are unchanged;
//! fails loudly (never skips) when it cannot be made.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// The pinned SDKs (and the JWT library the A2A SDK verifies cards with).
pub const AGENT_SDKS: &[&str] = &["a2a-sdk[signing]==1.3.0", "mcp==2.3.0", "PyJWT[crypto]==2.15.1"];

/// The venv's Python, with [`AGENT_SDKS`] installed.
pub fn agent_sdks() -> PathBuf {
    pinned("agent-sdks-venv", AGENT_SDKS).join("bin").join("python")
}

/// A venv `name` under the target directory with `pins` installed from PyPI: made once
/// and again when the pins change, one process at a time; fails loudly (never skips)
/// when it cannot be made. Returns the venv's folder.
pub fn pinned(name: &str, pins: &[&str]) -> PathBuf {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _in_process = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    // Another test process may be making it too: one at a time, across processes.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.with_extension("lock"))
        .expect("cannot open the venv lock file");
    lock.lock().expect("cannot lock the venv"); // released when `lock` is dropped, on return
    let python = dir.join("bin").join("python");
    let marker = dir.join("settle-pins.txt");
    let wanted = pins.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && python.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("python3").args(["-m", "venv"]).arg(&dir), "python3 -m venv (python3 with venv is needed)");
    run(
        Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(pins),
        &format!("pip install {} from PyPI", pins.join(" ")),
    );
    std::fs::write(&marker, wanted).expect("cannot write the venv marker");
    dir
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed, so the tests of stock Python clients cannot run:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The stock ISO 20022 libraries: sepaxml (which ships the official pain.001.001.09
/// schema), xmlschema to validate against it, and pyiso20022 (on xsdata) to write bank
/// notifications.
pub const BANK_LIBRARIES: &[&str] = &[
    "sepaxml==2.7.0",
    "text-unidecode==1.3",
    "xmlschema==4.3.2",
    "elementpath==5.1.4",
    "pyiso20022==1.6.2",
    "xsdata==26.10",
    "typing_extensions==4.16.0",
];

/// The venv's Python, with [`BANK_LIBRARIES`] installed.
pub fn bank_libraries() -> PathBuf {
    pinned("bank-libraries-venv", BANK_LIBRARIES).join("bin").join("python")
}

/// Runs `script` (a file of `tests/support/`) with the venv's Python and `args`; returns
/// its stdout parsed as JSON, or fails with everything it said.
pub fn run_script(script: &str, args: &[&str]) -> serde_json::Value {
    run_script_with(&agent_sdks(), script, args)
}

/// [`run_script`] with the Python `python`.
pub fn run_script_with(python: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("support").join(script);
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    let said = super::python::describe(&out);
    assert!(out.status.success(), "{script} failed:\n{said}");
    let last = String::from_utf8_lossy(&out.stdout).lines().next_back().unwrap_or_default().to_owned();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{said}"))
}

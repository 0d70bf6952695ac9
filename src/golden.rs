//! Golden vectors of the formats the binary puts on the wire (the agent card, the MCP
//! tool list, webhook bodies, bank files), kept in `tests/vectors/`. Tests recompute them and fail on any drift;
//! after a deliberate change, rewrite them with `SETTLE_BLESS=1 cargo test -p settle` and
//! review the diff.

use std::path::PathBuf;

use serde_json::Value;

/// Compares `generated` with the committed vector `name` (or rewrites it when blessing).
pub fn check(name: &str, generated: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors").join(name);
    let rendered = format!("{}\n", serde_json::to_string_pretty(generated).expect("JSON"));
    if std::env::var("SETTLE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &rendered).expect("write vector");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}; create it with `SETTLE_BLESS=1 cargo test -p settle`", path.display())
    });
    let committed: Value = serde_json::from_str(&committed).expect("committed vector is JSON");
    assert!(
        committed == *generated,
        "{} drifted from what the code produces; if deliberate, rewrite it with `SETTLE_BLESS=1 cargo test -p settle` and review the diff.\ngenerated:\n{rendered}",
        path.display()
    );
}

/// [`check`] for a vector that is text, not JSON (an XML file): byte for byte.
pub fn check_text(name: &str, generated: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors").join(name);
    if std::env::var("SETTLE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, generated).expect("write vector");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e}; create it with `SETTLE_BLESS=1 cargo test -p settle`", path.display())
    });
    assert!(
        committed == generated,
        "{} drifted from what the code produces; if deliberate, rewrite it with `SETTLE_BLESS=1 cargo test -p settle` and review the diff.\ngenerated:\n{generated}",
        path.display()
    );
}

//! What a finance team and an auditor read off the log: statements and balances at any
//! log position (`statements`), the self-contained audit bundle and log file
//! (`export`), the audits of a live store, a bundle or a log file (`check`), and the
//! offline verification of receipt files (`verify`). Each reads the ledger alone and
//! replays it with an engine of its own.

pub mod check;
pub mod export;
pub mod statements;
pub mod verify;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use settle_mandates::types::Signed;

pub use check::{AuditReport, audit_bundle, audit_data, audit_file, audit_ledger, read_known};
pub use export::{export, export_counted, export_file};
pub use statements::{Period, StatementLine, balances, statement, statements, write_csv};
pub use verify::{VerifyOptions, verify_files};

/// Bundle file names.
pub const LOG_FILE: &str = "log.jsonl";
/// Checkpoints (JSON array of signed notes, by size).
pub const CHECKPOINTS_FILE: &str = "checkpoints.json";
/// Public keys.
pub const JWKS_FILE: &str = "jwks.json";
/// Manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's signature: a compact JWS over its JCS bytes.
pub const MANIFEST_SIG_FILE: &str = "manifest.jws";
/// JWS `typ` of a signed manifest.
pub const TYP_MANIFEST: &str = "settle-manifest+jws";

/// `manifest.json` of a bundle, signed in `manifest.jws`: editing any file of the bundle
/// and re-hashing it needs the vendor's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format id.
    pub format: String,
    /// When signed (the final checkpoint's time, or the key's start if later), Unix s.
    pub signed_at: i64,
    /// Vendor.
    pub vendor: String,
    /// Log origin.
    pub origin: String,
    /// Records in the log.
    pub records: u64,
    /// Hex root of the final checkpoint.
    pub root: String,
    /// SHA-256 of every other file, by relative path.
    pub files: BTreeMap<String, String>,
}

/// `format` of the bundle manifest. 2: the log's chain links cover each record's type
/// and version.
pub const BUNDLE_FORMAT: &str = "settle.bundle.2";

impl Signed for Manifest {
    const WHAT: &'static str = "bundle manifest";
    fn typ(&self) -> &'static str {
        TYP_MANIFEST
    }
    fn iat(&self) -> i64 {
        self.signed_at
    }
    fn check(&self) -> Result<(), String> {
        match self.format.as_str() {
            BUNDLE_FORMAT => Ok(()),
            "settle.bundle.1" => Err("bundle format settle.bundle.1 was written before the hash chain covered each \
                 record's type and version; audit it with the settle that exported it"
                .into()),
            other => Err(format!("unknown bundle format '{other}'")),
        }
    }
}

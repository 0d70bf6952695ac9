//! The verification pass: stream the log, re-check every hash and chain link, recompute
//! the Merkle root at every signed checkpoint and check its signature. Works on a live
//! ledger ([`verify_log`]), on the log of an export bundle ([`verify_export`]) and on the
//! self-contained log file ([`export_file`], [`verify_file`]), with memory that does not
//! grow with the log. Every pass applies one rule to the numbers of the log
//! ([`integers_only`]), and the passes over exports also prove the log consistent with the
//! checkpoints an auditor held before ([`Known`]).

mod export;
mod file;
mod numbers;
mod pass;

use settle_mandates::keys::KeyRing;
use settle_mandates::merkle::Hash;

pub use export::{export_bundle_log, verify_export, verify_export_known};
pub use file::{LOG_FILE_FORMAT, export_file, verify_file, verify_file_known};
pub use numbers::{MAX_LOG_INTEGER, integers_only};
pub use pass::Known;

use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::record::Record;
use pass::Pass;

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at seq {seq}: {what}")]
pub struct Failure {
    /// Sequence number (or checkpoint size) where it was found.
    pub seq: u64,
    /// What, with expected and found values where they exist.
    pub what: String,
}

/// What a clean pass saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// Checkpoints whose root and signature were checked.
    pub checkpoints: u64,
    /// Root of the whole log.
    pub root: Hash,
    /// Records after the last checkpoint (not yet signed over).
    pub uncovered: u64,
}

fn storage(e: &LedgerError) -> Failure {
    match e {
        LedgerError::Inconsistent { seq, what } => Failure { seq: *seq, what: what.clone() },
        other => Failure { seq: 0, what: other.to_string() },
    }
}

/// Verifies a live ledger: chain, hashes, tree roots and signatures of every checkpoint,
/// and that the stored Merkle tree agrees with the records.
pub fn verify_log(ledger: &Ledger, ring: &KeyRing) -> Result<VerifyReport, Failure> {
    verify_log_each(ledger, ring, |_| {})
}

/// [`verify_log`], handing every record that verified to `each`, in order, as the pass
/// reads it: one read of the log serves a caller that also replays it (the audit).
/// Nothing after the first failure is handed over.
pub fn verify_log_each(ledger: &Ledger, ring: &KeyRing, mut each: impl FnMut(Record)) -> Result<VerifyReport, Failure> {
    let notes = ledger
        .checkpoints()
        .map(|c| c.map(|c| (c.checkpoint.size, c.note)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| storage(&e))?;
    let mut pass = Pass::new(ring, ledger.origin(), notes);
    pass.check_checkpoints()?;
    // `feed` checks each event's hash and chain link: the iterator need not.
    for r in ledger.records_unchecked(0) {
        let r = r.map_err(|e| storage(&e))?;
        pass.feed(&r)?;
        integers_only(&r.event).map_err(|what| Failure { seq: r.seq, what })?;
        each(r);
    }
    let size = pass.frontier.size;
    let report = pass.finish(false)?;
    let stored = ledger.root(size).map_err(|e| storage(&e))?;
    if stored != report.root {
        return Err(Failure { seq: size, what: "the stored Merkle tree disagrees with the records".into() });
    }
    Ok(report)
}

#[cfg(test)]
mod tests;

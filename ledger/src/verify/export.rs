//! The log of an export bundle (`log.jsonl`, one [`ExportLine`] per record): writing it
//! from a live ledger, and verifying it against signed checkpoints without any database.

use std::io::{BufRead, Write};

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::KeyRing;
use settle_mandates::merkle::Hash;

use super::numbers::integers_only;
use super::pass::{Known, Pass};
use super::{Failure, VerifyReport};
use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::record::{ExportLine, Record};

/// Writes the log as JSON Lines (one [`ExportLine`] per record); returns the count.
pub fn export_bundle_log(ledger: &Ledger, out: &mut impl Write) -> Result<u64, LedgerError> {
    write_records(ledger, out, |_, _| Ok(()))
}

/// Writes every record as an export line, calling `after` with the number written so far
/// after each; returns the number of records.
pub(super) fn write_records<W: Write>(
    ledger: &Ledger,
    out: &mut W,
    mut after: impl FnMut(&mut W, u64) -> Result<(), LedgerError>,
) -> Result<u64, LedgerError> {
    let mut n = 0;
    for r in ledger.records(0) {
        let r: Record = r?;
        let line = r.to_export_line().map_err(|e| LedgerError::Inconsistent { seq: r.seq, what: e.to_string() })?;
        write_line(out, &line)?;
        n += 1;
        after(out, n)?;
    }
    Ok(n)
}

/// The record an export line stands for (its event re-canonicalised).
pub(super) fn export_record(l: ExportLine) -> Result<Record, Failure> {
    let event = settle_mandates::jcs::to_vec(&l.event).map_err(|e| Failure { seq: l.seq, what: e.to_string() })?;
    let parse = |h: &str, what: &str| -> Result<Hash, Failure> {
        hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Failure { seq: l.seq, what: format!("{what} is not 32 hex bytes") })
    };
    let event_hash = parse(&l.event_hash, "event_hash")?;
    let chain = parse(&l.chain, "chain")?;
    Ok(Record { seq: l.seq, kind: l.kind, version: l.v, event, event_hash, chain })
}

/// Verifies an exported log (JSON Lines) against signed checkpoints and keys, without
/// any database. Every record must be covered by the last checkpoint. `each` sees every
/// record that verified (for replaying it).
pub fn verify_export(
    log: impl BufRead,
    checkpoints: Vec<String>,
    ring: &KeyRing,
    origin: &str,
    each: impl FnMut(&Record) -> Result<(), Failure>,
) -> Result<VerifyReport, Failure> {
    verify_export_known(log, checkpoints, ring, origin, &[], each)
}

/// [`verify_export`], also proving the log consistent with every checkpoint in `known`
/// (held by the auditor before): each must verify under `ring` for `origin`, cover no
/// more records than the log, and an RFC 9162 consistency proof from it to the log's
/// last checkpoint, computed during the pass, must verify.
pub fn verify_export_known(
    log: impl BufRead,
    checkpoints: Vec<String>,
    ring: &KeyRing,
    origin: &str,
    known: &[Known],
    mut each: impl FnMut(&Record) -> Result<(), Failure>,
) -> Result<VerifyReport, Failure> {
    let notes = checkpoints
        .into_iter()
        .map(|n| Checkpoint::parse(&n).map(|(c, _)| (c.size, n.clone())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure { seq: 0, what: format!("checkpoint: {e}") })?;
    let mut pass = Pass::new(ring, origin, notes);
    pass.hold(known)?;
    pass.check_checkpoints()?;
    for (i, line) in log.lines().enumerate() {
        let at = pass.frontier.size;
        let line = line.map_err(|e| Failure { seq: at, what: format!("cannot read line {}: {e}", i + 1) })?;
        let l: ExportLine = serde_json::from_str(&line)
            .map_err(|e| Failure { seq: at, what: format!("line {} is not a log record: {e}", i + 1) })?;
        integers_only(line.as_bytes()).map_err(|what| Failure { seq: l.seq, what })?;
        let rec = export_record(l)?;
        pass.feed(&rec)?;
        each(&rec)?;
    }
    pass.finish(true)
}

/// Writes `line` and a newline.
pub(super) fn write_line(out: &mut impl Write, line: &str) -> Result<(), LedgerError> {
    out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).map_err(|e| LedgerError::Storage(e.to_string()))
}

//! The self-contained log file: a header (format, origin, keys), every record, and each
//! signed checkpoint right after the last record it covers; written from a live ledger
//! ([`export_file`]) and verified with nothing else ([`verify_file`]).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, KeyRing};

use super::export::{export_record, write_line, write_records};
use super::numbers::integers_only;
use super::pass::{Known, Pass};
use super::{Failure, VerifyReport};
use crate::checkpoint::SignedCheckpoint;
use crate::error::LedgerError;
use crate::handle::Ledger;
use crate::record::{ExportLine, Record};

/// `format` of the first line of the self-contained log file.
pub const LOG_FILE_FORMAT: &str = "settle.log.1";

/// First line of the self-contained log file: what it is, the log's origin, and every
/// key that signed a checkpoint in it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeader {
    format: String,
    origin: String,
    keys: Jwks,
}

/// A signed checkpoint's line in the self-contained log file, right after the last record
/// it covers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    checkpoint: String,
}

/// Writes the whole log as one self-contained JSON Lines file an auditor verifies with
/// nothing else ([`verify_file`]): a header line (format, origin, `keys`, the JWKS of
/// every checkpoint key), then one line per record as in an export bundle's `log.jsonl`,
/// each signed checkpoint as `{"checkpoint": note}` right after the last record it
/// covers. Returns the number of records written.
pub fn export_file(ledger: &Ledger, keys: &Jwks, out: &mut impl Write) -> Result<u64, LedgerError> {
    let header = FileHeader { format: LOG_FILE_FORMAT.into(), origin: ledger.origin().into(), keys: keys.clone() };
    write_line(out, &serde_json::to_string(&header).map_err(|e| LedgerError::Storage(e.to_string()))?)?;
    let mut checkpoints = ledger.checkpoints().peekable();
    write_checkpoints(out, 0, &mut checkpoints)?;
    write_records(ledger, out, |out, n| write_checkpoints(out, n, &mut checkpoints))
}

/// Writes the checkpoints of `cps` (by size) over at most `upto` records.
fn write_checkpoints(
    out: &mut impl Write,
    upto: u64,
    cps: &mut std::iter::Peekable<impl Iterator<Item = Result<SignedCheckpoint, LedgerError>>>,
) -> Result<(), LedgerError> {
    while let Some(cp) = cps.next_if(|c| c.as_ref().is_err() || c.as_ref().is_ok_and(|c| c.checkpoint.size <= upto)) {
        let line = serde_json::to_string(&CheckpointLine { checkpoint: cp?.note })
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        write_line(out, &line)?;
    }
    Ok(())
}

/// Verifies a self-contained log file ([`export_file`]) with no database: the header,
/// every record's hash and chain link, and each checkpoint, where it stands, against the
/// root recomputed over the records before it and its signature. The keys are `pinned`
/// when the auditor obtained them elsewhere, else the file's own. Every record must be
/// covered by a checkpoint. `each` sees every record that verified. Returns the report
/// and the log's origin.
pub fn verify_file(
    input: impl BufRead,
    pinned: Option<&KeyRing>,
    each: impl FnMut(&Record) -> Result<(), Failure>,
) -> Result<(VerifyReport, String), Failure> {
    verify_file_known(input, pinned, &[], each)
}

/// [`verify_file`], also proving the log consistent with every checkpoint in `known`, as
/// [`verify_export_known`](super::verify_export_known) does: a file cut back at an older checkpoint, or rewritten,
/// verifies on its own but not against a checkpoint the auditor held before.
pub fn verify_file_known(
    input: impl BufRead,
    pinned: Option<&KeyRing>,
    known: &[Known],
    mut each: impl FnMut(&Record) -> Result<(), Failure>,
) -> Result<(VerifyReport, String), Failure> {
    let mut lines = input.lines().enumerate();
    let bad = |at: u64, what: String| Failure { seq: at, what };
    let header = match lines.next() {
        Some((_, Ok(l))) => l,
        Some((_, Err(e))) => return Err(bad(0, format!("cannot read line 1: {e}"))),
        None => return Err(bad(0, "the file is empty: no header line".into())),
    };
    let header: FileHeader =
        serde_json::from_str(&header).map_err(|e| bad(0, format!("line 1 is not a settle log file header: {e}")))?;
    if header.format != LOG_FILE_FORMAT {
        return Err(bad(0, format!("format '{}' is not {LOG_FILE_FORMAT}", header.format)));
    }
    let own;
    let ring = match pinned {
        Some(r) => r,
        None => {
            own = KeyRing::new(&header.keys).map_err(|e| bad(0, format!("the header's keys: {e}")))?;
            &own
        }
    };
    let mut pass = Pass::new(ring, &header.origin, Vec::new());
    pass.hold(known)?;
    for (i, line) in lines {
        let at = pass.frontier.size;
        let line = line.map_err(|e| bad(at, format!("cannot read line {}: {e}", i + 1)))?;
        match serde_json::from_str::<ExportLine>(&line) {
            Ok(l) => {
                integers_only(line.as_bytes()).map_err(|what| Failure { seq: l.seq, what })?;
                let rec = export_record(l)?;
                pass.feed(&rec)?;
                each(&rec)?;
            }
            Err(e) => {
                let Ok(CheckpointLine { checkpoint }) = serde_json::from_str(&line) else {
                    return Err(bad(at, format!("line {} is neither a log record nor a checkpoint: {e}", i + 1)));
                };
                let (cp, _) = Checkpoint::parse(&checkpoint).map_err(|e| bad(at, format!("checkpoint: {e}")))?;
                if cp.size != at {
                    return Err(bad(
                        at,
                        format!("a checkpoint over {} records stands after record {}", cp.size, at.wrapping_sub(1)),
                    ));
                }
                pass.checkpoints.push_back((cp.size, checkpoint));
                pass.check_checkpoints()?;
            }
        }
    }
    if pass.checked == 0 {
        return Err(bad(pass.frontier.size, "the file holds no signed checkpoint".into()));
    }
    Ok((pass.finish(true)?, header.origin))
}

//! The verification pass: stream the log, re-check every hash and chain link, recompute
//! the Merkle root at every signed checkpoint and check its signature. Works on a live
//! ledger ([`verify_log`]), on the log of an export bundle ([`verify_export`]) and on the
//! self-contained log file ([`export_file`], [`verify_file`]), with memory that does not
//! grow with the log.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, KeyRing};
use settle_mandates::merkle::Hash;
use sha2::{Digest, Sha256};

use crate::record::{ExportLine, GENESIS_CHAIN, Record, chain_link};
use crate::{Frontier, Ledger, LedgerError};

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

struct Pass<'a> {
    ring: &'a KeyRing,
    origin: &'a str,
    chain: Hash,
    frontier: Frontier,
    /// Signed notes not yet reached, by size.
    checkpoints: std::collections::VecDeque<(u64, String)>,
    checked: u64,
    last_cp: u64,
}

impl<'a> Pass<'a> {
    fn new(ring: &'a KeyRing, origin: &'a str, mut notes: Vec<(u64, String)>) -> Self {
        notes.sort_by_key(|(s, _)| *s);
        Self {
            ring,
            origin,
            chain: GENESIS_CHAIN,
            frontier: Frontier::default(),
            checkpoints: notes.into(),
            checked: 0,
            last_cp: 0,
        }
    }

    fn check_checkpoints(&mut self) -> Result<(), Failure> {
        let size = self.frontier.size;
        while let Some((cp_size, note)) = self.checkpoints.front() {
            if *cp_size > size {
                break;
            }
            let (cp, _) = Checkpoint::verify(note, self.ring, Some(self.origin))
                .map_err(|e| Failure { seq: size, what: format!("checkpoint: {e}") })?;
            if cp.size < size {
                return Err(Failure { seq: cp.size, what: "checkpoints are not in order of size".into() });
            }
            let root = self.frontier.root();
            if cp.root != root {
                return Err(Failure {
                    seq: size,
                    what: format!(
                        "checkpoint root {} differs from the recomputed root {}",
                        hex::encode(cp.root),
                        hex::encode(root)
                    ),
                });
            }
            self.checked += 1;
            self.last_cp = size;
            self.checkpoints.pop_front();
        }
        Ok(())
    }

    fn feed(&mut self, r: &Record) -> Result<(), Failure> {
        let (seq, event, event_hash, chain) = (r.seq, &r.event, &r.event_hash, &r.chain);
        let expected = self.frontier.size;
        if seq != expected {
            return Err(Failure {
                seq: expected,
                what: format!("expected record {expected}, found record {seq} (gap or reordering)"),
            });
        }
        let eh: Hash = Sha256::digest(event).into();
        if &eh != event_hash {
            return Err(Failure {
                seq,
                what: format!("event hash is {}, the event bytes hash to {}", hex::encode(event_hash), hex::encode(eh)),
            });
        }
        let c = chain_link(&self.chain, seq, &eh, &r.kind, r.version);
        if &c != chain {
            return Err(Failure {
                seq,
                what: format!("chain link is {}, expected {}", hex::encode(chain), hex::encode(c)),
            });
        }
        self.chain = c;
        self.frontier.push(settle_mandates::merkle::leaf_hash(event), |_, _, _| {});
        self.check_checkpoints()
    }

    fn finish(mut self, require_covered: bool) -> Result<VerifyReport, Failure> {
        self.check_checkpoints()?;
        let size = self.frontier.size;
        if let Some((cp_size, _)) = self.checkpoints.pop_front() {
            return Err(Failure {
                seq: size,
                what: format!(
                    "a checkpoint is signed over {cp_size} records, but the log has only {size} (records missing at the end)"
                ),
            });
        }
        if require_covered && self.last_cp != size {
            return Err(Failure {
                seq: self.last_cp,
                what: format!(
                    "{} records after the last signed checkpoint (size {}) are not covered",
                    size - self.last_cp,
                    self.last_cp
                ),
            });
        }
        Ok(VerifyReport {
            records: size,
            checkpoints: self.checked,
            root: self.frontier.root(),
            uncovered: size - self.last_cp,
        })
    }
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

/// Writes the log as JSON Lines (one [`ExportLine`] per record); returns the count.
pub fn export_bundle_log(ledger: &Ledger, out: &mut impl Write) -> Result<u64, LedgerError> {
    write_records(ledger, out, |_, _| Ok(()))
}

/// Writes every record as an export line, calling `after` with the number written so far
/// after each; returns the number of records.
fn write_records<W: Write>(
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
fn export_record(l: ExportLine) -> Result<Record, Failure> {
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
    mut each: impl FnMut(&Record) -> Result<(), Failure>,
) -> Result<VerifyReport, Failure> {
    let notes = checkpoints
        .into_iter()
        .map(|n| Checkpoint::parse(&n).map(|(c, _)| (c.size, n.clone())))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure { seq: 0, what: format!("checkpoint: {e}") })?;
    let mut pass = Pass::new(ring, origin, notes);
    pass.check_checkpoints()?;
    for (i, line) in log.lines().enumerate() {
        let at = pass.frontier.size;
        let line = line.map_err(|e| Failure { seq: at, what: format!("cannot read line {}: {e}", i + 1) })?;
        let l: ExportLine = serde_json::from_str(&line)
            .map_err(|e| Failure { seq: at, what: format!("line {} is not a log record: {e}", i + 1) })?;
        let rec = export_record(l)?;
        pass.feed(&rec)?;
        each(&rec)?;
    }
    pass.finish(true)
}

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

fn write_line(out: &mut impl Write, line: &str) -> Result<(), LedgerError> {
    out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).map_err(|e| LedgerError::Storage(e.to_string()))
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
    cps: &mut std::iter::Peekable<impl Iterator<Item = Result<crate::SignedCheckpoint, LedgerError>>>,
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
    for (i, line) in lines {
        let at = pass.frontier.size;
        let line = line.map_err(|e| bad(at, format!("cannot read line {}: {e}", i + 1)))?;
        match serde_json::from_str::<ExportLine>(&line) {
            Ok(l) => {
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

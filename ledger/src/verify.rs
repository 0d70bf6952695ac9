//! The verification pass: stream the log, re-check every hash and chain link, recompute
//! the Merkle root at every signed checkpoint and check its signature. Works on a live
//! ledger ([`verify_log`]) and on an exported JSON Lines file ([`verify_export`]), with
//! memory that does not grow with the log.

use std::io::{BufRead, Write};

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::KeyRing;
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
    checkpoints: std::iter::Peekable<std::vec::IntoIter<(u64, String)>>,
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
            checkpoints: notes.into_iter().peekable(),
            checked: 0,
            last_cp: 0,
        }
    }

    fn check_checkpoints(&mut self) -> Result<(), Failure> {
        let size = self.frontier.size;
        while let Some((cp_size, note)) = self.checkpoints.peek() {
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
            self.checkpoints.next();
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
        if let Some((cp_size, _)) = self.checkpoints.next() {
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
    let mut n = 0;
    for r in ledger.records(0) {
        let r: Record = r?;
        let line = r.to_export_line().map_err(|e| LedgerError::Inconsistent { seq: r.seq, what: e.to_string() })?;
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        n += 1;
    }
    Ok(n)
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
        let event = settle_mandates::jcs::to_vec(&l.event).map_err(|e| Failure { seq: l.seq, what: e.to_string() })?;
        let parse = |h: &str, what: &str| -> Result<Hash, Failure> {
            hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Failure { seq: l.seq, what: format!("{what} is not 32 hex bytes") })
        };
        let eh = parse(&l.event_hash, "event_hash")?;
        let chain = parse(&l.chain, "chain")?;
        let rec = Record { seq: l.seq, kind: l.kind, version: l.v, event, event_hash: eh, chain };
        pass.feed(&rec)?;
        each(&rec)?;
    }
    pass.finish(true)
}

//! The verification pass: stream the log, re-check every hash and chain link, recompute
//! the Merkle root at every signed checkpoint and check its signature. Works on a live
//! ledger ([`verify_log`]), on the log of an export bundle ([`verify_export`]) and on the
//! self-contained log file ([`export_file`], [`verify_file`]), with memory that does not
//! grow with the log. Every pass applies one rule to the numbers of the log
//! ([`integers_only`]), and the passes over exports also prove the log consistent with the
//! checkpoints an auditor held before ([`Known`]).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, KeyRing};
use settle_mandates::merkle::{self, Hash, NodeSource};
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

/// Largest magnitude of a number in a log line or event: 2^53 − 1, which every JSON
/// implementation reads exactly.
pub const MAX_LOG_INTEGER: u64 = (1 << 53) - 1;

/// The one rule every verifier applies to the numbers of the log (a live log's events, a
/// bundle's `log.jsonl` and a log file's lines, as written): each is an integer written
/// as one — an optional minus sign and decimal digits, no leading zero, no fraction, no
/// exponent, not `-0` — of magnitude at most [`MAX_LOG_INTEGER`]. `5397.0` and `5.397e3`
/// are refused although RFC 8785 would canonicalise them to `5397`: money is never a
/// float, and a verifier that re-canonicalises must not accept what one that hashes the
/// text refuses. JSON that is malformed otherwise is left to the parser.
pub fn integers_only(json: &[u8]) -> Result<(), String> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Strings are most of an event's bytes (its tokens): skip to the quote
                // that ends them, past escapes.
                i += 1;
                loop {
                    let Some(k) = json.get(i..).and_then(quote_or_backslash) else {
                        return Ok(()); // unterminated: the parser says so
                    };
                    i += k;
                    if json[i] == b'"' {
                        i += 1;
                        break;
                    }
                    i += 2;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len() && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let token = &json[start..i];
                let (negative, digits) = token.strip_prefix(b"-").map_or((false, token), |d| (true, d));
                let integer = !digits.is_empty()
                    && digits.iter().all(u8::is_ascii_digit)
                    && (digits.len() == 1 || digits[0] != b'0')
                    && !(negative && digits == b"0")
                    && std::str::from_utf8(digits)
                        .ok()
                        .and_then(|d| d.parse::<u64>().ok())
                        .is_some_and(|n| n <= MAX_LOG_INTEGER);
                if !integer {
                    let shown = String::from_utf8_lossy(&token[..token.len().min(40)]).into_owned();
                    return Err(format!(
                        "the number {shown} is not an integer written as one (no fraction, no exponent, no -0, \
                         magnitude below 2^53): numbers in the log are integers"
                    ));
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The position of the first `"` or `\` in `s`, eight bytes at a time (a string's bytes
/// are most of an event's, and the log's pass reads every event).
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = s.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let (q, b) = (v ^ (LO * u64::from(b'"')), v ^ (LO * u64::from(b'\\')));
        // A byte of q or b is zero where v holds a quote or a backslash; the lowest such
        // byte is found exactly (a borrow only marks bytes above a zero byte).
        let zero = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&c| c == b'"' || c == b'\\').map(|k| i + k)
}

/// A checkpoint the auditor held before this audit (from an earlier export, a receipt,
/// `GET /v1/checkpoints/latest`): the log audited must extend it, or it was cut back or
/// rewritten since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Where it came from, for messages (`old.note`, `receipts.jsonl:3`).
    pub source: String,
    /// The signed note.
    pub note: String,
}

/// The nodes of the tree a consistency proof from `m` leaves needs that are complete
/// before the end of the log: the complete subtrees that make up the first `m` leaves,
/// and the right siblings on the path from leaf `m − 1` to the root. The rest (the
/// right edge of the tree at its final size) is the final frontier.
fn proof_nodes(m: u64) -> impl Iterator<Item = (u32, u64)> {
    (0..64u32).flat_map(move |level| {
        let mut out = Vec::with_capacity(2);
        if m > 0 {
            if (m >> level) & 1 == 1 {
                out.push((level, (m >> level) - 1));
            }
            let a = (m - 1) >> level;
            if a & 1 == 0 {
                out.push((level, a + 1));
            }
        }
        out
    })
}

/// Nodes captured during a pass, by (level, index).
struct Captured<'a>(&'a HashMap<(u32, u64), Hash>);

impl NodeSource for Captured<'_> {
    type Error = (u32, u64);
    fn node(&self, level: u32, index: u64) -> Result<Hash, (u32, u64)> {
        self.0.get(&(level, index)).copied().ok_or((level, index))
    }
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
    /// Checkpoints the auditor held before, verified.
    known: Vec<(Known, Checkpoint)>,
    /// The nodes their consistency proofs need, and those captured so far.
    wanted: HashSet<(u32, u64)>,
    nodes: HashMap<(u32, u64), Hash>,
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
            known: Vec::new(),
            wanted: HashSet::new(),
            nodes: HashMap::new(),
        }
    }

    /// Verifies the checkpoints the auditor held (signature, key validity, the log's
    /// origin) and notes which nodes their consistency proofs need.
    fn hold(&mut self, known: &[Known]) -> Result<(), Failure> {
        for k in known {
            let (cp, _) = Checkpoint::verify(&k.note, self.ring, Some(self.origin))
                .map_err(|e| Failure { seq: 0, what: format!("the checkpoint you hold from {}: {e}", k.source) })?;
            self.wanted.extend(proof_nodes(cp.size));
            self.known.push((k.clone(), cp));
        }
        Ok(())
    }

    /// Proves the log of `size` leaves with `root` (its latest checkpoint: every record is
    /// covered) consistent with every checkpoint held: RFC 9162 consistency proofs
    /// computed from the nodes captured during the pass and verified.
    fn check_known(&mut self, size: u64, root: &Hash) -> Result<(), Failure> {
        if self.known.is_empty() {
            return Ok(());
        }
        let mut start = 0u64;
        for &(level, h) in &self.frontier.nodes {
            self.nodes.insert((level, start >> level), h);
            start += 1 << level;
        }
        for (k, cp) in &self.known {
            let m = cp.size;
            if m > size {
                return Err(Failure {
                    seq: size,
                    what: format!(
                        "the log was cut back: you hold a checkpoint of {m} records from {} (root {}), this log has only {size}",
                        k.source,
                        hex::encode(cp.root)
                    ),
                });
            }
            let proof = merkle::consistency_proof(&Captured(&self.nodes), m, size)
                .map_err(|(l, i)| Failure {
                    seq: m,
                    what: format!("cannot compute the consistency proof from {m}: node {l}/{i} was not kept"),
                })?
                .map_err(|e| Failure { seq: m, what: format!("consistency proof from {m}: {e}") })?;
            merkle::verify_consistency(m, size, &cp.root, root, &proof).map_err(|e| Failure {
                seq: m,
                what: format!(
                    "the log was rewritten: the checkpoint of {m} records you hold from {} (root {}) is not a prefix \
                     of this log of {size} records (root {}): {e}",
                    k.source,
                    hex::encode(cp.root),
                    hex::encode(root)
                ),
            })?;
        }
        Ok(())
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
        let leaf = merkle::leaf_hash(event);
        if self.wanted.is_empty() {
            self.frontier.push(leaf, |_, _, _| {});
        } else {
            let (wanted, nodes) = (&self.wanted, &mut self.nodes);
            self.frontier.push(leaf, |level, index, h| {
                if wanted.contains(&(level, index)) {
                    nodes.insert((level, index), h);
                }
            });
        }
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
        let root = self.frontier.root();
        if require_covered {
            self.check_known(size, &root)?;
        }
        Ok(VerifyReport { records: size, checkpoints: self.checked, root, uncovered: size - self.last_cp })
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
    each: impl FnMut(&Record) -> Result<(), Failure>,
) -> Result<(VerifyReport, String), Failure> {
    verify_file_known(input, pinned, &[], each)
}

/// [`verify_file`], also proving the log consistent with every checkpoint in `known`, as
/// [`verify_export_known`] does: a file cut back at an older checkpoint, or rewritten,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{append, config, ring};
    use settle_mandates::keys::SigningKey;

    /// A ledger of `n` records `e0…`, checkpointed after every `every` records and at the
    /// end, exported as a log file; its lines.
    fn log_file(dir: &std::path::Path, n: u64, every: u64) -> (Vec<String>, Vec<Checkpoint>) {
        let l = Ledger::open(dir, config(1)).unwrap();
        for i in 0..n {
            l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
            if (i + 1) % every == 0 {
                l.checkpoint_blocking(i64::try_from(i).unwrap()).unwrap();
            }
        }
        l.checkpoint_blocking(1000).unwrap();
        let cps = l.checkpoints().map(|c| c.unwrap().checkpoint).collect();
        let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
        let mut buf = Vec::new();
        export_file(&l, &jwks, &mut buf).unwrap();
        l.close().unwrap();
        (String::from_utf8(buf).unwrap().lines().map(str::to_owned).collect(), cps)
    }

    fn note(cp: &Checkpoint) -> String {
        cp.sign(&SigningKey::from_seed(&[1; 32]))
    }

    fn known(source: &str, note: String) -> Known {
        Known { source: source.into(), note }
    }

    #[test]
    fn numbers_in_the_log_are_integers_written_as_one() {
        for ok in [
            &br#"{"a":5397,"b":-12,"c":0,"d":[1,2,{"e":9007199254740991}],"s":"5.5e3 -0 1.0"}"#[..],
            br#"{"esc":"a\"1.5\\","n":1}"#,
            br#"{"long":"0123456789abcdef\"0123456789.5\\\\ \\\" 1.5","n":[12345678901,-3]}"#,
            b"[true,false,null,-1]",
        ] {
            assert_eq!(integers_only(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &br#"{"amount":5397.0}"#[..],
            br#"{"amount":5.397e3}"#,
            br#"{"amount":5397E0}"#,
            br#"{"amount":1e3}"#,
            br#"{"amount":-0}"#,
            br#"{"amount":007}"#,
            br#"{"amount":9007199254740992}"#,
            br#"{"amount":99999999999999999999999}"#,
            br#"{"s":"\\","amount":1.5}"#,
            br#"{"s":"0123456789abcdef0123456789\\","amount":1.5}"#,
            br#"{"s":"0123456\"\\","amount":2e1}"#,
        ] {
            let e = integers_only(bad).unwrap_err();
            assert!(e.contains("not an integer"), "{}: {e}", String::from_utf8_lossy(bad));
        }
    }

    /// The eight-byte search finds the first quote or backslash wherever it stands.
    #[test]
    fn the_first_quote_or_backslash_is_found_at_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                for c in [b'"', b'\\'] {
                    let mut s = vec![b'a'; len];
                    if at > 0 {
                        s[at - 1] = b'"' ^ 0x80;
                    }
                    if at < len {
                        s[at] = c;
                        if at + 3 < len {
                            s[at + 3] = b'"';
                        }
                    }
                    let want = s.iter().position(|&x| x == b'"' || x == b'\\');
                    assert_eq!(quote_or_backslash(&s), want, "{len} {at} {c}");
                }
            }
        }
    }

    /// The nodes a pass keeps answer every consistency proof exactly as the whole tree.
    #[test]
    fn captured_nodes_give_every_consistency_proof() {
        let leaves: Vec<Hash> = (0..80u64).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        for n in 1..=80u64 {
            for m in 0..=n {
                let wanted: HashSet<(u32, u64)> = proof_nodes(m).collect();
                let mut nodes = HashMap::new();
                let mut f = Frontier::default();
                for l in &leaves[..usize::try_from(n).unwrap()] {
                    f.push(*l, |level, index, h| {
                        if wanted.contains(&(level, index)) {
                            nodes.insert((level, index), h);
                        }
                    });
                }
                let mut start = 0u64;
                for &(level, h) in &f.nodes {
                    nodes.insert((level, start >> level), h);
                    start += 1 << level;
                }
                let got = merkle::consistency_proof(&Captured(&nodes), m, n).unwrap().unwrap();
                let want = merkle::consistency_proof(&leaves[..usize::try_from(n).unwrap()], m, n).unwrap().unwrap();
                assert_eq!(got, want, "m {m} n {n}");
            }
        }
    }

    /// A log file cut back at an older signed checkpoint verifies on its own; against a
    /// checkpoint the auditor held before it is refused, and so is a log rewritten under
    /// the same key. Checkpoints the log extends pass.
    #[test]
    fn a_log_cut_back_or_rewritten_is_refused_against_a_checkpoint_held_before() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, cps) = log_file(&dir.path().join("a"), 23, 5);
        assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), [5, 10, 15, 20, 23]);
        let check = |ls: &[String], held: &[Known]| verify_file_known(ls.join("\n").as_bytes(), None, held, |_| Ok(()));
        // Every checkpoint the log signed, and the empty log, are prefixes of it.
        for cp in &cps {
            check(&lines, &[known("held", note(cp))]).unwrap();
        }
        let empty = Checkpoint { origin: "settle.test/log".into(), size: 0, root: merkle::empty_root(), time: 1 };
        check(&lines, &[known("empty", note(&empty))]).unwrap();
        // Cut back at the checkpoint of 15: on its own it verifies.
        let cut_at = lines.iter().position(|l| l.starts_with(r#"{"checkpoint":"settle.test/log\n15\n"#)).unwrap();
        let cut = lines[..=cut_at].to_vec();
        assert_eq!(check(&cut, &[]).unwrap().0.records, 15);
        check(&cut, &[known("old", note(&cps[1]))]).unwrap();
        let f = check(&cut, &[known("old", note(&cps[1])), known("receipt.json:1", note(&cps[3]))]).unwrap_err();
        assert!(
            f.what.contains("cut back") && f.what.contains("receipt.json:1") && f.what.contains("20 records"),
            "{f:?}"
        );
        // Rewritten from record 12 on, re-signed with the vendor's key: the file verifies
        // alone, but not against a checkpoint of 15 or 20 held before; one of 10 still passes.
        let l = Ledger::open(&dir.path().join("b"), config(1)).unwrap();
        for i in 0..23u64 {
            let e = if i < 12 { format!("e{i}") } else { format!("x{i}") };
            l.append_blocking(append(&format!("k{i}"), &[&e])).unwrap();
        }
        l.checkpoint_blocking(1000).unwrap();
        let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
        let mut buf = Vec::new();
        export_file(&l, &jwks, &mut buf).unwrap();
        let rewritten: Vec<String> = String::from_utf8(buf).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(check(&rewritten, &[]).unwrap().0.records, 23);
        check(&rewritten, &[known("old", note(&cps[1]))]).unwrap();
        for held in [&cps[2], &cps[3], &cps[4]] {
            let f = check(&rewritten, &[known("old", note(held))]).unwrap_err();
            assert!(f.what.contains("rewritten") && f.seq == held.size, "{f:?}");
        }
        // A held checkpoint that does not verify under the log's keys, or is of another log.
        let forged = cps[1].sign(&SigningKey::from_seed(&[7; 32]));
        assert!(check(&lines, &[known("forged", forged)]).unwrap_err().what.contains("you hold from forged"));
        let elsewhere = Checkpoint { origin: "other/log".into(), ..cps[1].clone() };
        assert!(check(&lines, &[known("o", note(&elsewhere))]).unwrap_err().what.contains("origin"));
        // The bundle's log is checked the same way.
        let records: Vec<String> = lines[1..].iter().filter(|l| l.starts_with(r#"{"seq":"#)).cloned().collect();
        let notes: Vec<String> = cps.iter().map(note).collect();
        let export = |held: &[Known]| {
            verify_export_known(
                records.join("\n").as_bytes(),
                notes.clone(),
                &ring(&[1]),
                "settle.test/log",
                held,
                |_| Ok(()),
            )
        };
        export(&[known("old", note(&cps[4]))]).unwrap();
        let bigger = Checkpoint { size: 24, ..cps[4].clone() };
        assert!(export(&[known("old", note(&bigger))]).unwrap_err().what.contains("cut back"));
    }

    /// A record line whose event writes a number as a float is refused by the file and the
    /// bundle verifiers, even when its event hash and chain are those of the integer
    /// (RFC 8785 would turn `7.0` into `7`).
    #[test]
    fn a_float_in_a_log_line_is_refused_even_when_its_hashes_match() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path(), config(1)).unwrap();
        for i in 0..3 {
            let mut a = append(&format!("k{i}"), &["x"]);
            a.records[0].event = format!(r#"{{"amount":{}}}"#, 5397 + i).into_bytes();
            l.append_blocking(a).unwrap();
        }
        l.checkpoint_blocking(5).unwrap();
        let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
        let mut buf = Vec::new();
        export_file(&l, &jwks, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        verify_file(text.as_bytes(), None, |_| Ok(())).unwrap();
        let notes: Vec<String> = l.checkpoints().map(|c| c.unwrap().note).collect();
        let records = |t: &str| t.lines().filter(|l| l.starts_with(r#"{"seq":"#)).collect::<Vec<_>>().join("\n");
        verify_export(records(&text).as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", |_| Ok(())).unwrap();
        for float in ["5398.0", "5.398e3", "53980e-1"] {
            let edited = text.replace(r#""amount":5398"#, &format!(r#""amount":{float}"#));
            assert_ne!(edited, text);
            let f = verify_file(edited.as_bytes(), None, |_| Ok(())).unwrap_err();
            assert!(f.seq == 1 && f.what.contains("not an integer"), "{float}: {f:?}");
            let f =
                verify_export(records(&edited).as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", |_| Ok(()))
                    .unwrap_err();
            assert!(f.seq == 1 && f.what.contains("not an integer"), "{float}: {f:?}");
        }
        // The live log is held to the same rule (its events are bytes as stored).
        verify_log(&l, &ring(&[1])).unwrap();
    }

    /// A checkpoint of the empty log is in the file only if the vendor signed one (a
    /// store served and stopped before its first record); it then stands right after the
    /// header and is checked like any other. A log whose first checkpoint covers records
    /// has record 0 right after the header.
    #[test]
    fn a_checkpoint_of_the_empty_log_follows_the_header_only_when_one_was_signed() {
        let dir = tempfile::tempdir().unwrap();
        let (lines, _) = log_file(&dir.path().join("a"), 4, 2);
        assert!(lines[1].starts_with(r#"{"seq":0,"#), "{}", lines[1]);
        let l = Ledger::open(&dir.path().join("b"), config(1)).unwrap();
        let empty = l.checkpoint_blocking(0).unwrap();
        assert_eq!((empty.checkpoint.size, empty.checkpoint.root), (0, merkle::empty_root()));
        l.append_blocking(append("k", &["e"])).unwrap();
        l.checkpoint_blocking(1).unwrap();
        let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
        let mut buf = Vec::new();
        export_file(&l, &jwks, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with(r#"{"checkpoint":"settle.test/log\n0\n"#), "{}", lines[1]);
        assert_eq!(verify_file(text.as_bytes(), None, |_| Ok(())).unwrap().0.checkpoints, 2);
        // One that claims a root for the empty log other than SHA-256 of nothing is refused.
        let bad = Checkpoint { root: [1; 32], ..empty.checkpoint.clone() };
        let forged = text.replace(
            lines[1],
            &serde_json::json!({"checkpoint": bad.sign(&SigningKey::from_seed(&[1; 32]))}).to_string(),
        );
        let f = verify_file(forged.as_bytes(), None, |_| Ok(())).unwrap_err();
        assert!(f.seq == 0 && f.what.contains("recomputed root"), "{f:?}");
    }
}

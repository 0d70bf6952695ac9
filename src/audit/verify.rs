//! `settle verify`: receipt files checked offline with a JWKS, as a partner would, on
//! all cores, with the consistency of every checkpoint held before.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use serde::Deserialize;
use settle_ledger::Known;
use settle_mandates::checkpoint::{Checkpoint, ConsistencyError};
use settle_mandates::receipt::{RECEIPT_BATCH, ReceiptDocument, ReceiptError, ReceiptVerifier, VerifiedReceipt};

use super::check::read_ring;

/// Receipts read ahead and verified on all cores at once, [`RECEIPT_BATCH`] per task.
const RECEIPT_READ_AHEAD: usize = 32 * RECEIPT_BATCH;

/// Verifies numbered receipts as they come, [`RECEIPT_READ_AHEAD`] at a time on all cores
/// (each run of [`RECEIPT_BATCH`] with its signatures batch-checked together), handing
/// each outcome to `each` in order; stops at the first error of either. Returns how many
/// were verified.
pub(super) fn verify_receipt_run(
    verifier: &mut ReceiptVerifier<'_>,
    docs: impl Iterator<Item = Result<(usize, ReceiptDocument)>>,
    mut each: impl FnMut(usize, &ReceiptDocument, Result<VerifiedReceipt, ReceiptError>) -> Result<()>,
) -> Result<u64> {
    let mut n = 0;
    let (mut lines, mut run) = (Vec::with_capacity(RECEIPT_READ_AHEAD), Vec::with_capacity(RECEIPT_READ_AHEAD));
    let mut docs = docs.peekable();
    while docs.peek().is_some() {
        lines.clear();
        run.clear();
        // A line that is not a receipt is reported after the receipts before it.
        let mut unreadable = None;
        for d in docs.by_ref().take(RECEIPT_READ_AHEAD) {
            match d {
                Ok((line, doc)) => {
                    lines.push(line);
                    run.push(doc);
                }
                Err(e) => {
                    unreadable = Some(e);
                    break;
                }
            }
        }
        // Each task starts from the checkpoints already verified; what it learns is kept
        // from the first task (the others learn the same notes in a file of one bundle).
        let mut outcomes: Vec<_> = run
            .par_chunks(RECEIPT_BATCH)
            .map(|c| {
                let mut v = verifier.clone();
                let out = v.verify_all(c);
                (v, out)
            })
            .collect();
        if let Some((learned, _)) = outcomes.first() {
            *verifier = learned.clone();
        }
        let verified = outcomes.drain(..).flat_map(|(_, out)| out);
        for ((line, doc), verified) in lines.iter().zip(&run).zip(verified) {
            each(*line, doc, verified)?;
            n += 1;
        }
        if let Some(e) = unreadable {
            return Err(e);
        }
    }
    Ok(n)
}

/// What `settle verify` checks receipts against.
#[derive(Debug, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The vendor's JWKS.
    pub keys: &'a Path,
    /// Receipt files: one JSON receipt, or JSON Lines of receipts.
    pub files: &'a [PathBuf],
    /// The log identity every checkpoint must name.
    pub origin: Option<&'a str>,
    /// The partner every mandate must pay (or claw back from).
    pub partner: Option<&'a str>,
    /// Checkpoints the user held before ([`read_known`]): every receipt's checkpoint must
    /// extend (or equal) each.
    pub known: &'a [Known],
    /// Files of RFC 9162 consistency proofs between checkpoint sizes, as
    /// `GET /v1/checkpoints/consistency` serves them (one JSON document, or JSON Lines).
    pub proofs: &'a [PathBuf],
}

/// What `settle verify` verified.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Receipts verified.
    pub receipts: u64,
    /// Distinct checkpoints the receipts are against.
    pub checkpoints: usize,
    /// Checkpoints held before that every one of those extends.
    pub known: usize,
}

/// `{"from", "to", "proof"}`: a consistency proof as `GET /v1/checkpoints/consistency`
/// serves it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyDoc {
    from: u64,
    to: u64,
    proof: Vec<String>,
}

/// The consistency proofs of `files`, by (from, to).
fn read_proofs(files: &[PathBuf]) -> Result<BTreeMap<(u64, u64), Vec<settle_mandates::merkle::Hash>>> {
    let mut out = BTreeMap::new();
    for f in files {
        let name = f.display();
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {name}"))?;
        let docs: Vec<(String, ConsistencyDoc)> = match serde_json::from_str(&text) {
            Ok(d) => vec![(name.to_string(), d)],
            Err(_) => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    let at = format!("{name}:{}", i + 1);
                    serde_json::from_str(l).map(|d| (at.clone(), d)).with_context(|| {
                        format!("{at}: not a consistency proof {{\"from\",\"to\",\"proof\"}} (--proof)")
                    })
                })
                .collect::<Result<_>>()?,
        };
        for (at, d) in docs {
            let hashes = settle_mandates::receipt::decode_hashes(&d.proof)
                .map_err(|i| anyhow::anyhow!("{at}: proof hash {i} is not 32 base64 bytes"))?;
            out.insert((d.from, d.to), hashes);
        }
    }
    Ok(out)
}

/// Verifies receipt files (one JSON receipt, or JSON Lines of receipts) with a JWKS: every
/// receipt, that it pays `partner` and names `origin` when given, and that its checkpoint
/// extends every checkpoint held before. Returns the counts, or the first failure with
/// file and line.
pub fn verify_files(o: &VerifyOptions<'_>) -> Result<Verified> {
    let ring = read_ring(o.keys)?;
    let mut verifier = ReceiptVerifier::new(&ring, o.origin);
    // The distinct checkpoints the receipts are against (with the first receipt of each),
    // kept only to compare with checkpoints held before.
    let mut checkpoints: BTreeMap<String, (Checkpoint, String)> = BTreeMap::new();
    let mut n = 0;
    for f in o.files {
        // A file is one receipt (possibly pretty-printed) or JSON Lines of receipts, read
        // as it is verified: a partner's file of receipts can be larger than memory.
        let open = || File::open(f).with_context(|| format!("cannot read {}", f.display()));
        let mut first = String::new();
        BufReader::new(open()?).read_line(&mut first).with_context(|| format!("cannot read {}", f.display()))?;
        let one_line = serde_json::from_str::<ReceiptDocument>(&first).is_ok();
        let docs: Box<dyn Iterator<Item = (usize, Result<ReceiptDocument>)>> = if one_line || first.trim().is_empty() {
            Box::new(
                BufReader::new(open()?)
                    .lines()
                    .enumerate()
                    .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
                    .map(|(i, l)| {
                        let doc = l
                            .with_context(|| format!("cannot read {}", f.display()))
                            .and_then(|l| serde_json::from_str(&l).map_err(anyhow::Error::from));
                        (i + 1, doc)
                    }),
            )
        } else {
            let doc = serde_json::from_reader(BufReader::new(open()?)).map_err(anyhow::Error::from);
            Box::new(std::iter::once((1, doc)))
        };
        let mut docs = docs.peekable();
        if docs.peek().is_none() {
            bail!("{}: no receipts", f.display());
        }
        let docs = docs.map(|(line, d)| {
            d.map(|d| (line, d)).map_err(|e| anyhow::anyhow!("{}:{line}: not a receipt: {e}", f.display()))
        });
        n += verify_receipt_run(&mut verifier, docs, |line, doc, verified| {
            let v = verified.map_err(|e| anyhow::anyhow!("{}:{line}: {e}", f.display()))?;
            if let Some(p) = o.partner
                && v.mandate.payee.id != p
            {
                bail!("{}:{line}: mandate: payee is '{}', not '{p}'", f.display(), v.mandate.payee.id);
            }
            if !o.known.is_empty() && !checkpoints.contains_key(&doc.checkpoint) {
                checkpoints.insert(doc.checkpoint.clone(), (v.checkpoint, format!("{}:{line}", f.display())));
            }
            Ok(())
        })?;
    }
    let mut out = Verified { receipts: n, checkpoints: checkpoints.len(), known: 0 };
    if o.known.is_empty() {
        return Ok(out);
    }
    let proofs = read_proofs(o.proofs)?;
    for k in o.known {
        let (held, _) = Checkpoint::verify(&k.note, &ring, o.origin)
            .map_err(|e| anyhow::anyhow!("the checkpoint you hold from {}: {e}", k.source))?;
        for (cp, at) in checkpoints.values() {
            let (from, to) = (held.size.min(cp.size), held.size.max(cp.size));
            held.consistent_with(cp, proofs.get(&(from, to)).map(Vec::as_slice)).map_err(|e| {
                let hint = if matches!(e, ConsistencyError::NoProof { .. }) {
                    format!(
                        "; fetch GET /v1/checkpoints/consistency?from={from}&to={to} from the vendor and give it with --proof"
                    )
                } else {
                    String::new()
                };
                anyhow::anyhow!(
                    "{at}: the receipt's checkpoint of {} records against the checkpoint of {} you hold from {}: {e}{hint}",
                    cp.size,
                    held.size,
                    k.source
                )
            })?;
        }
        out.known += 1;
    }
    Ok(out)
}

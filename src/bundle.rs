//! Receipts, statements, the audit bundle (export), and the audits.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64STD, URL_SAFE_NO_PAD as B64};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use settle_engine::replay::{Mismatch, Replay, parse_record};
use settle_engine::state::Book;
use settle_engine::{Engine, EngineConfig, Envelope, Event};
use settle_ledger::{Known, Ledger, SignedCheckpoint};
use settle_mandates::checkpoint::{Checkpoint, ConsistencyError};
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use settle_mandates::receipt::{RECEIPT_BATCH, ReceiptDocument, ReceiptError, ReceiptVerifier, VerifiedReceipt};
use settle_mandates::types::{ReceiptKind, ReceiptPayload, Signed, Status, VCT_RECEIPT, token_reference};
use sha2::{Digest, Sha256};

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

/// A receipt for the mandate recorded at `seq` (or a rail outcome recorded at `seq`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn receipt_payload(
    vendor: &str,
    iat: i64,
    cp: &SignedCheckpoint,
    kind: ReceiptKind,
    seq: u64,
    mandate_token: &str,
    mandate_id: &str,
    rail: Option<(&str, &str, bool)>,
) -> ReceiptPayload {
    let (status, psp, rail_name, error) = match rail {
        None => (Status::Success, None, None, None),
        Some((name, conf, true)) => (Status::Success, Some(conf.to_owned()), Some(name.to_owned()), None),
        Some((name, err, false)) => (Status::Error, None, Some(name.to_owned()), Some(err.to_owned())),
    };
    ReceiptPayload {
        vct: VCT_RECEIPT.into(),
        status,
        iss: vendor.into(),
        iat,
        reference: token_reference(mandate_token),
        payment_id: mandate_id.into(),
        psp_confirmation_id: psp,
        network_confirmation_id: None,
        error_description: error.as_ref().map(|e| format!("rail reported {e}")),
        error,
        kind,
        rail: rail_name,
        leaf_index: seq,
        tree_size: cp.checkpoint.size,
        root: hex::encode(cp.checkpoint.root),
    }
}

/// When a receipt is issued: at its checkpoint's time, or when the signing key became
/// valid if that is later (after a key rotation), so the receipt's key is valid at `iat`.
#[must_use]
pub fn receipt_iat(checkpoint_time: i64, key_valid_from: Option<i64>) -> i64 {
    key_valid_from.map_or(checkpoint_time, |v| v.max(checkpoint_time))
}

/// The log record of mandate `id` (payment `md_<seq>_<hop>` or clawback `cb_<seq>_<hop>`):
/// its record, token and payee, among the few records after the fact at `<seq>`.
pub fn mandate_record(ledger: &Ledger, id: &str) -> Result<Option<(settle_ledger::Record, String, String)>> {
    let found = |r: settle_ledger::Record| -> Result<Option<(settle_ledger::Record, String, String)>> {
        match Envelope::from_bytes(&r.event)?.event {
            Event::MandateIssued { mandate_id, mandate, partner, .. }
            | Event::ClawbackIssued { mandate_id, mandate, partner, .. }
                if mandate_id == id =>
            {
                Ok(Some((r, mandate, partner)))
            }
            _ => Ok(None),
        }
    };
    // A payment mandate follows its conversion (or the release of a held one), a clawback
    // its refund: at most one per hop, in hop order (a hop owed nothing has none).
    let Some((rseq, _)) = id.strip_prefix("md_").or_else(|| id.strip_prefix("cb_")).and_then(|r| r.split_once('_'))
    else {
        return Ok(None);
    };
    let Ok(rseq) = rseq.parse::<u64>() else { return Ok(None) };
    for seq in rseq.saturating_add(1)..rseq.saturating_add(1 + settle_engine::model::MAX_HOPS as u64) {
        match ledger.record(seq)? {
            Some(r) => {
                if let Some(x) = found(r)? {
                    return Ok(Some(x));
                }
            }
            None => break,
        }
    }
    Ok(None)
}

/// One receipt to build: partner, payload, mandate token, leaf seq.
struct Pending {
    partner: String,
    payload: ReceiptPayload,
    mandate: String,
    /// The record's bytes (a mandate's issue or its payment outcome: one record each).
    leaf: Vec<u8>,
}

/// Receipts signed and written together: at most this many, and ...
const RECEIPT_CHUNK: usize = 2048;
/// ... at most this many leaf bytes (each receipt carries its leaf in base64: a bound on
/// a chunk's memory whatever the events' sizes).
const RECEIPT_CHUNK_BYTES: usize = 8 << 20;

/// Builds every receipt the log holds against checkpoint `cp`, calling `out` with
/// (partner, receipt) in log order. Signing runs on all cores in chunks.
pub fn receipts(
    ledger: &Ledger,
    cp: &SignedCheckpoint,
    key: &SigningKey,
    key_valid_from: Option<i64>,
    vendor: &str,
    mut out: impl FnMut(&str, &ReceiptDocument) -> Result<()>,
) -> Result<u64> {
    let iat = receipt_iat(cp.checkpoint.time, key_valid_from);
    let mut n = 0u64;
    let mut chunk: Vec<Pending> = Vec::new();
    let mut chunk_bytes = 0usize;
    let flush = |chunk: &mut Vec<Pending>, out: &mut dyn FnMut(&str, &ReceiptDocument) -> Result<()>| -> Result<u64> {
        let docs: Vec<Result<(String, ReceiptDocument)>> = chunk
            .par_drain(..)
            .map(|p| {
                let proof = ledger.inclusion_proof(p.payload.leaf_index, cp.checkpoint.size)?;
                Ok((
                    p.partner,
                    ReceiptDocument {
                        receipt: p.payload.sign(key),
                        mandate: p.mandate,
                        leaf: B64.encode(&p.leaf),
                        inclusion: proof.iter().map(|h| B64STD.encode(h)).collect(),
                        checkpoint: cp.note.clone(),
                    },
                ))
            })
            .collect();
        let mut k = 0;
        for d in docs {
            let (partner, doc) = d?;
            out(&partner, &doc)?;
            k += 1;
        }
        Ok(k)
    };
    // Mandate tokens by id, for rail receipts: looked up in the log when needed.
    let token_of = |id: &str| -> Result<Option<(String, String)>> {
        Ok(mandate_record(ledger, id)?.map(|(_, token, partner)| (token, partner)))
    };
    for r in ledger.records(0) {
        let r = r?;
        if r.seq >= cp.checkpoint.size {
            break;
        }
        let env = match r.kind.as_str() {
            "mandate_issued" | "clawback_issued" | "mandate_paid" | "mandate_payment_failed" => {
                Envelope::from_bytes(&r.event)?
            }
            _ => continue,
        };
        match env.event {
            Event::MandateIssued { mandate_id, partner, mandate, .. }
            | Event::ClawbackIssued { mandate_id, partner, mandate, .. } => {
                let payload =
                    receipt_payload(vendor, iat, cp, ReceiptKind::MandateRecorded, r.seq, &mandate, &mandate_id, None);
                chunk_bytes += r.event.len();
                chunk.push(Pending { partner, payload, mandate, leaf: r.event.as_slice().into() });
            }
            Event::MandatePaid { mandate_id, rail, confirmation_id, .. }
            | Event::MandatePaymentFailed { mandate_id, rail, error: confirmation_id, .. } => {
                // The leaf is this record: one per mandate, so a receipt stays small
                // whatever the size of the settlement.
                let ok = r.kind == "mandate_paid";
                let Some((mandate, partner)) = token_of(&mandate_id)? else {
                    bail!("settlement outcome at seq {} names unknown mandate {mandate_id}", r.seq)
                };
                let kind = if ok { ReceiptKind::PaymentSettled } else { ReceiptKind::PaymentFailed };
                let payload = receipt_payload(
                    vendor,
                    iat,
                    cp,
                    kind,
                    r.seq,
                    &mandate,
                    &mandate_id,
                    Some((&rail, &confirmation_id, ok)),
                );
                chunk_bytes += r.event.len();
                chunk.push(Pending { partner, payload, mandate, leaf: r.event.as_slice().into() });
            }
            _ => {}
        }
        if chunk.len() >= RECEIPT_CHUNK || chunk_bytes >= RECEIPT_CHUNK_BYTES {
            n += flush(&mut chunk, &mut out)?;
            chunk_bytes = 0;
        }
    }
    n += flush(&mut chunk, &mut out)?;
    Ok(n)
}

/// A statement line.
#[derive(Debug, Clone, Serialize)]
pub struct StatementLine {
    /// Sequence of the fact.
    pub seq: u64,
    /// Log time.
    pub at: String,
    /// `opening`, `earned`, `clawback`, `hold_released`, `paid`, `closing`.
    pub entry: String,
    /// Conversion or settlement id.
    pub reference: String,
    /// Mandate id.
    pub mandate_id: String,
    /// Rule version.
    pub rule_version: String,
    /// Hop (0 = originator).
    pub hop: String,
    /// Role on the hop.
    pub role: String,
    /// Signed change, decimal.
    pub amount: String,
    /// Currency.
    pub currency: String,
    /// Balances after the fact.
    pub on_hold: String,
    /// Payable after the fact (negative: offset owed).
    pub payable: String,
    /// In open payout batches after the fact.
    pub in_payout: String,
    /// Paid to date after the fact.
    pub paid: String,
}

fn dec(minor: i64, cur: settle_mandates::money::Currency) -> String {
    settle_mandates::money::Amount::from_minor(minor, cur).map(|a| a.to_decimal_string()).unwrap_or_default()
}

fn mandate_basis(token: &str) -> Option<settle_mandates::types::Mandate> {
    let p = token.split('.').nth(1)?;
    serde_json::from_slice(&B64.decode(p).ok()?).ok()
}

fn balance_line(
    entry: &str,
    seq: u64,
    at: &str,
    b: &Book,
    c: Option<settle_mandates::money::Currency>,
) -> StatementLine {
    let c = c.unwrap_or_else(|| "USD".parse().unwrap_or_else(|_| unreachable!()));
    StatementLine {
        seq,
        at: at.to_owned(),
        entry: entry.into(),
        reference: String::new(),
        mandate_id: String::new(),
        rule_version: String::new(),
        hop: String::new(),
        role: String::new(),
        amount: dec(b.on_hold + b.payable + b.in_payout + b.paid, c),
        currency: c.to_string(),
        on_hold: dec(b.on_hold, c),
        payable: dec(b.payable, c),
        in_payout: dec(b.in_payout, c),
        paid: dec(b.paid, c),
    }
}

/// Streams the statements of `partners` (all when `None`) for facts in `[from, to)` by
/// replaying the log once (facts only, no signing). Every line names the fact,
/// conversion, rule version, hop and mandate behind it; each partner's lines open with
/// its balances before the period and close with its balances after it.
pub fn statements(
    ledger: &Ledger,
    cfg: EngineConfig,
    partners: Option<&std::collections::BTreeSet<String>>,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    mut sink: impl FnMut(&str, StatementLine) -> Result<()>,
) -> Result<()> {
    struct Acc {
        last: Book,
        opened: bool,
        currency: Option<settle_mandates::money::Currency>,
    }
    let mut engine = Engine::new(cfg);
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut pending: Vec<Envelope> = Vec::new();
    let mut fact: Option<(u64, chrono::DateTime<chrono::Utc>)> = None;
    let mut derived_left = 0usize;
    let wanted = |p: &str| partners.is_none_or(|s| s.contains(p));
    let mut last_seq = 0;
    let mut flush = |engine: &Engine,
                     pending: &mut Vec<Envelope>,
                     fact: Option<(u64, chrono::DateTime<chrono::Utc>)>,
                     acc: &mut BTreeMap<String, Acc>|
     -> Result<()> {
        let Some((seq, at)) = fact else { return Ok(()) };
        let in_range = from.is_none_or(|f| at >= f) && to.is_none_or(|t| at < t);
        let at_s = at.to_rfc3339();
        let st = engine.state();
        let mut lines: Vec<(String, StatementLine)> = Vec::new();
        for env in pending.drain(..) {
            let mut push = |partner: &str,
                            entry: &str,
                            reference: String,
                            mid: String,
                            amount: i64,
                            c: settle_mandates::money::Currency,
                            token: Option<&str>,
                            hop_info: Option<(u32, u32, String)>| {
                if !wanted(partner) {
                    return;
                }
                let b = st.books.get(partner).copied().unwrap_or_default();
                let basis = token.and_then(mandate_basis);
                let (rv, hop, role) = basis.as_ref().map_or(
                    hop_info.map_or((String::new(), String::new(), String::new()), |(rv, h, r)| {
                        (rv.to_string(), h.to_string(), r)
                    }),
                    |m| (m.basis.rule_version.to_string(), m.basis.hop.to_string(), m.basis.role.clone()),
                );
                lines.push((
                    partner.to_owned(),
                    StatementLine {
                        seq,
                        at: at_s.clone(),
                        entry: entry.into(),
                        reference: basis.as_ref().map_or(reference, |m| m.basis.conversion.clone()),
                        mandate_id: mid,
                        rule_version: rv,
                        hop,
                        role,
                        amount: dec(amount, c),
                        currency: c.to_string(),
                        on_hold: dec(b.on_hold, c),
                        payable: dec(b.payable, c),
                        in_payout: dec(b.in_payout, c),
                        paid: dec(b.paid, c),
                    },
                ));
            };
            match &env.event {
                Event::MandateIssued { mandate_id, partner, amount, mandate } => push(
                    partner,
                    "earned",
                    String::new(),
                    mandate_id.clone(),
                    amount.minor_units(),
                    amount.currency(),
                    Some(mandate),
                    None,
                ),
                Event::ClawbackIssued { mandate_id, partner, amount, offset, mandate, .. } => push(
                    partner,
                    if offset.is_zero() { "clawback" } else { "clawback_offset" },
                    String::new(),
                    mandate_id.clone(),
                    -amount.minor_units(),
                    amount.currency(),
                    Some(mandate),
                    None,
                ),
                Event::PayoutBooked { settlement, partner, paid, .. } => push(
                    partner,
                    "paid",
                    settlement.clone(),
                    String::new(),
                    paid.minor_units(),
                    paid.currency(),
                    None,
                    None,
                ),
                Event::PayoutBatchCreated { batch, partner, amount, .. } => push(
                    partner,
                    "payout_batched",
                    batch.clone(),
                    String::new(),
                    amount.minor_units(),
                    amount.currency(),
                    None,
                    None,
                ),
                // A failed batch's money is payable again (the fact itself is the line).
                Event::SettlementFailed { batch: Some(batch), partner, .. } => {
                    if let Some(b) = st.batches.get(batch) {
                        push(
                            partner,
                            "payout_returned",
                            batch.clone(),
                            String::new(),
                            b.amount.minor_units(),
                            b.amount.currency(),
                            None,
                            None,
                        );
                    }
                }
                Event::HoldsReleased { mandate_ids, .. } => {
                    for id in mandate_ids {
                        let Some((_, h, c)) = st.mandate_hop(id) else { continue };
                        let hop = &c.hops[h];
                        let info = (
                            c.rule_version,
                            u32::try_from(h).unwrap_or(u32::MAX),
                            settle_engine::state::role_of(h, c.hops.len()).to_owned(),
                        );
                        push(
                            &hop.partner,
                            "hold_released",
                            c.id.to_string(),
                            id.clone(),
                            hop.amount - hop.clawed,
                            c.pool.currency(),
                            None,
                            Some(info),
                        );
                    }
                }
                _ => {}
            }
        }
        for (partner, line) in lines {
            let a = acc.entry(partner.clone()).or_insert(Acc { last: Book::default(), opened: false, currency: None });
            a.currency = Some(line.currency.parse()?);
            if in_range {
                if !a.opened {
                    a.opened = true;
                    sink(&partner, balance_line("opening", seq, &at_s, &a.last, a.currency))?;
                }
                sink(&partner, line)?;
            }
        }
        // Remember every wanted partner's book after this fact.
        if from.is_none_or(|f| at < f) || in_range {
            for (p, b) in &st.books {
                if wanted(p) {
                    let a =
                        acc.entry(p.clone()).or_insert(Acc { last: Book::default(), opened: false, currency: None });
                    a.last = *b;
                }
            }
        }
        Ok(())
    };
    for r in ledger.records(0) {
        let r = r?;
        let env = Envelope::from_bytes(&r.event)?;
        if env.event.is_fact() {
            flush(&engine, &mut pending, fact, &mut acc)?;
            if to.is_some_and(|t| env.at >= t) {
                fact = None;
                break;
            }
            fact = Some((r.seq, env.at));
            if matches!(env.event, Event::SettlementFailed { batch: Some(_), .. }) {
                pending.push(env.clone());
            }
            let d = engine
                .decide(env, r.seq)
                .map_err(|e| anyhow::anyhow!("record {} is rejected on replay: {e}", r.seq))?;
            derived_left = d.outputs.len();
        } else {
            anyhow::ensure!(derived_left > 0, "record {} is a derived event no fact caused", r.seq);
            derived_left -= 1;
            pending.push(env);
        }
        last_seq = r.seq;
    }
    flush(&engine, &mut pending, fact, &mut acc)?;
    let end = to.map_or_else(|| engine.state().now.map(|t| t.to_rfc3339()).unwrap_or_default(), |t| t.to_rfc3339());
    let start = from.map_or_else(String::new, |f| f.to_rfc3339());
    for p in engine.state().partners.keys().filter(|p| wanted(p)) {
        let a = acc.entry(p.clone()).or_insert(Acc { last: Book::default(), opened: false, currency: None });
        if !a.opened {
            sink(p, balance_line("opening", last_seq, &start, &a.last, a.currency))?;
        }
        sink(p, balance_line("closing", last_seq, &end, &a.last, a.currency))?;
    }
    if let Some(s) = partners
        && let Some(p) = s.iter().find(|p| !engine.state().partners.contains_key(*p))
    {
        bail!("partner '{p}' not found");
    }
    Ok(())
}

/// One partner's statement, in memory (the CLI's `settle statement`).
pub fn statement(
    ledger: &Ledger,
    cfg: EngineConfig,
    partner: &str,
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<StatementLine>> {
    let set: std::collections::BTreeSet<String> = [partner.to_owned()].into();
    let mut out = Vec::new();
    statements(ledger, cfg, Some(&set), from, to, |_, l| {
        out.push(l);
        Ok(())
    })?;
    Ok(out)
}

/// Writes a statement as CSV.
pub fn write_csv<T: Serialize>(lines: &[T], w: impl Write) -> Result<()> {
    let mut c = csv::Writer::from_writer(w);
    for l in lines {
        c.serialize(l)?;
    }
    c.flush()?;
    Ok(())
}

fn sha256_file(p: &Path) -> Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// A signed checkpoint over the whole log, as of its last record's time (an export must
/// be covered to its last record).
fn final_checkpoint(ledger: &Ledger, data: &Path) -> Result<settle_ledger::SignedCheckpoint> {
    let last_time = match ledger.size() {
        0 => bail!("the log in {} is empty: nothing to export", data.display()),
        n => Envelope::from_bytes(&ledger.record(n - 1)?.context("last record missing")?.event)?.at.timestamp(),
    };
    Ok(ledger.checkpoint_blocking(last_time)?)
}

/// Writes the self-contained log file (`settle.log.1`, docs/formats.md): the log, its
/// signed checkpoints and the vendor's public keys in one JSON Lines file. Returns the
/// number of records.
pub fn export_file(data: &Path, file: &Path) -> Result<u64> {
    let keys = crate::keystore::KeyFile::load(data)?;
    let ledger = open_ledger(data, &keys)?;
    final_checkpoint(&ledger, data)?;
    let f = File::create_new(file).with_context(|| format!("cannot create {} (it must not exist)", file.display()))?;
    let mut out = BufWriter::new(f);
    let n = settle_ledger::export_file(&ledger, &keys.jwks()?, &mut out)?;
    out.flush()?;
    ledger.close()?;
    Ok(n)
}

/// Verifies a self-contained log file with no database: every record's hash and chain
/// link, the root and signature of every checkpoint, all records covered. With `keys`,
/// against the vendor's keys as the auditor obtained them; else the file's own. With
/// `known` (checkpoints the auditor held before, [`read_known`]), the log must extend
/// each: a file cut back at an older checkpoint, or rewritten, is refused.
pub fn audit_file(file: &Path, keys: Option<&Path>, known: &[Known]) -> Result<(settle_ledger::VerifyReport, String)> {
    let pinned = keys.map(read_ring).transpose()?;
    let input = BufReader::new(File::open(file).with_context(|| format!("cannot read {}", file.display()))?);
    settle_ledger::verify_file_known(input, pinned.as_ref(), known, |_| Ok(())).map_err(|f| failed_at(f.seq, &f.what))
}

/// Where the signed checkpoint notes are in one JSON value of a `--known` file: a note
/// (a string), a list of notes (a bundle's `checkpoints.json`), `{"note": …}` (the JSON of
/// `GET /v1/checkpoints/latest`) or `{"checkpoint": …}` (a receipt document, a checkpoint
/// line of a log file). A log file's header and record lines hold none (an empty list);
/// anything else is not a checkpoint (`None`).
fn notes_in(v: &serde_json::Value) -> Option<Vec<String>> {
    use serde_json::Value;
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_owned)).collect(),
        Value::Object(o) => match o.get("checkpoint").or_else(|| o.get("note")) {
            Some(Value::String(n)) => Some(vec![n.clone()]),
            Some(_) => None,
            None if o.get("format").and_then(Value::as_str) == Some(settle_ledger::LOG_FILE_FORMAT) => Some(Vec::new()),
            None if o.contains_key("seq") && o.contains_key("event") => Some(Vec::new()),
            None => None,
        },
        _ => None,
    }
}

/// The signed checkpoints in files the user held before (`--known`), each once, named by
/// file (and line). A file is a signed note as the ledger exports it (one entry of
/// `checkpoints.json`, the `note` of `GET /v1/checkpoints/latest`), or JSON holding notes
/// (see [`notes_in`]): one document, or JSON Lines such as a partner's `receipts.jsonl` or
/// a log file from `settle export --file`. Signatures are checked where the notes are
/// used, against the keys of what they are compared with.
pub fn read_known(paths: &[PathBuf]) -> Result<Vec<Known>> {
    let mut out: Vec<Known> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in paths {
        let name = p.display().to_string();
        let open = || File::open(p).with_context(|| format!("cannot read {name}"));
        let mut first = String::new();
        BufReader::new(open()?).read_line(&mut first).with_context(|| format!("cannot read {name}"))?;
        let mut push = |source: String, note: String| {
            if seen.insert(note.clone()) {
                out.push(Known { source, note });
            }
        };
        let mut found = 0usize;
        let one_line = serde_json::from_str::<serde_json::Value>(&first)
            .is_ok_and(|v| v.is_object() || v.is_array() || v.is_string());
        if one_line {
            // JSON Lines (a file of one line among them), read as it goes.
            for (i, line) in BufReader::new(open()?).lines().enumerate() {
                let line = line.with_context(|| format!("cannot read {name}"))?;
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("{name}:{}", i + 1);
                let v: serde_json::Value =
                    serde_json::from_str(&line).with_context(|| format!("{at}: not JSON (--known)"))?;
                let notes = notes_in(&v).with_context(|| format!("{at}: holds no signed checkpoint (--known)"))?;
                for n in notes {
                    push(at.clone(), n);
                    found += 1;
                }
            }
        } else {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {name}"))?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => {
                    for n in notes_in(&v).with_context(|| format!("{name}: holds no signed checkpoint (--known)"))? {
                        push(name.clone(), n);
                        found += 1;
                    }
                }
                // Not JSON: the note itself, as the ledger writes it.
                Err(_) => {
                    push(name.clone(), text);
                    found += 1;
                }
            }
        }
        if found == 0 {
            bail!("{name}: holds no signed checkpoint (--known)");
        }
    }
    Ok(out)
}

/// The key ring of a JWKS file.
fn read_ring(path: &Path) -> Result<KeyRing> {
    let jwks: Jwks =
        serde_json::from_slice(&std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
            .with_context(|| format!("{} is not a JWKS", path.display()))?;
    Ok(KeyRing::new(&jwks)?)
}

/// Exports the self-contained audit bundle into `out`.
pub fn export(data: &Path, out: &Path) -> Result<Manifest> {
    export_counted(data, out).map(|(m, _)| m)
}

/// [`export`], also returning how many receipts the bundle holds.
pub fn export_counted(data: &Path, out: &Path) -> Result<(Manifest, u64)> {
    let keys = crate::keystore::KeyFile::load(data)?;
    // The ledger alone: the statements below replay the log with an engine of their own,
    // so the service's restored engine state would only double the memory.
    let ledger = open_ledger(data, &keys)?;
    let cp = final_checkpoint(&ledger, data)?;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("{} is not empty; export needs a new or empty directory", out.display());
    }
    std::fs::create_dir_all(out.join("partners"))?;
    let mut log = BufWriter::new(File::create(out.join(LOG_FILE))?);
    let records = settle_ledger::export_bundle_log(&ledger, &mut log)?;
    log.flush()?;
    let notes: Vec<String> = ledger.checkpoints().map(|c| c.map(|c| c.note)).collect::<Result<_, _>>()?;
    std::fs::write(out.join(CHECKPOINTS_FILE), serde_json::to_vec_pretty(&notes)?)?;
    std::fs::write(out.join(JWKS_FILE), serde_json::to_vec_pretty(&keys.jwks()?)?)?;
    let pfile = |p: &str, name: &str| -> Result<BufWriter<File>> {
        let d = out.join("partners").join(p);
        std::fs::create_dir_all(&d)?;
        Ok(BufWriter::new(File::create(d.join(name))?))
    };
    // Statements first: they name every partner (each gets at least its opening and
    // closing lines), then every partner's receipts.
    let ecfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt()? };
    let mut writers: BTreeMap<String, csv::Writer<BufWriter<File>>> = BTreeMap::new();
    statements(&ledger, ecfg, None, None, None, |p, line| {
        if !writers.contains_key(p) {
            writers.insert(p.to_owned(), csv::Writer::from_writer(pfile(p, "statement.csv")?));
        }
        writers.get_mut(p).context("statement writer")?.serialize(line)?;
        Ok(())
    })?;
    let mut files: BTreeMap<String, BufWriter<File>> = BTreeMap::new();
    for (p, mut w) in writers {
        w.flush()?;
        files.insert(p.clone(), pfile(&p, "receipts.jsonl")?);
    }
    let key = keys.current()?;
    let receipts = receipts(&ledger, &cp, &key, keys.current_valid_from(), &keys.vendor, |partner, doc| {
        let f = files.get_mut(partner).context("receipt for an unknown partner")?;
        serde_json::to_writer(&mut *f, doc)?;
        f.write_all(b"\n")?;
        Ok(())
    })?;
    for (_, mut f) in files {
        f.flush()?;
    }
    ledger.close()?;
    let mut hashes = BTreeMap::new();
    for entry in walk(out)? {
        let rel = entry.strip_prefix(out)?.to_string_lossy().replace('\\', "/");
        if rel == MANIFEST_FILE || rel == MANIFEST_SIG_FILE {
            continue;
        }
        hashes.insert(rel, sha256_file(&entry)?);
    }
    let m = Manifest {
        format: BUNDLE_FORMAT.into(),
        signed_at: receipt_iat(cp.checkpoint.time, keys.current_valid_from()),
        vendor: keys.vendor,
        origin: keys.origin,
        records,
        root: hex::encode(cp.checkpoint.root),
        files: hashes,
    };
    std::fs::write(out.join(MANIFEST_FILE), serde_json::to_vec_pretty(&m)?)?;
    std::fs::write(out.join(MANIFEST_SIG_FILE), format!("{}\n", m.sign(&key)))?;
    Ok((m, receipts))
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What an audit found.
#[derive(Debug, Default)]
pub struct AuditReport {
    /// Records checked.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Mandates re-derived and signature-checked.
    pub mandates: u64,
    /// Receipts verified.
    pub receipts: u64,
    /// Partners whose books balance.
    pub partners: usize,
    /// Σ earned − Σ clawed back, minor units (all currencies together: informational).
    pub net_commission: i128,
    /// Records not yet under a checkpoint (live logs only).
    pub uncovered: u64,
}

fn conserved(engine: &Engine, report: &mut AuditReport) -> Result<()> {
    let st = engine.state();
    // Sums over every partner and conversion: each term is bounded (MAX_BOOK_TOTAL), their
    // number is not, so they are added in i128, which cannot overflow here.
    let mut earned = 0i128;
    let mut held = 0i128;
    for (p, b) in &st.books {
        if b.earned - b.clawed_back != b.on_hold + b.payable + b.in_payout + b.paid {
            bail!(
                "money not conserved for partner {p}: earned {} − clawed {} ≠ on hold {} + payable {} + in payout {} + paid {}",
                b.earned,
                b.clawed_back,
                b.on_hold,
                b.payable,
                b.in_payout,
                b.paid
            );
        }
        earned += i128::from(b.earned - b.clawed_back);
        held += i128::from(b.on_hold + b.payable + b.in_payout + b.paid);
    }
    let mut from_hops = 0i128;
    for c in st.conversions.values() {
        let sum: i64 = c.hops.iter().map(|h| h.amount).sum();
        if !c.hops.is_empty() && sum != c.pool.minor_units() {
            bail!("conversion {}: hops sum to {sum}, pool is {}", c.id, c.pool.minor_units());
        }
        for h in &c.hops {
            if h.clawed > h.amount || h.clawed < 0 {
                bail!("conversion {}: clawed {} of a hop that earned {}", c.id, h.clawed, h.amount);
            }
            from_hops += i128::from(h.amount - h.clawed);
        }
    }
    if from_hops != earned || earned != held {
        bail!("money not conserved: conversions say {from_hops}, books say {earned} earned and {held} held");
    }
    report.partners = st.books.len();
    report.net_commission = earned;
    Ok(())
}

/// One partner's balances as of a log position (`settle balances`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalanceLine {
    /// Last record reflected: the books are those after every fact up to here.
    pub seq: u64,
    /// Partner.
    pub partner: String,
    /// Program.
    pub program: String,
    /// Currency of the program.
    pub currency: String,
    /// Total earned.
    pub earned: String,
    /// Total clawed back.
    pub clawed_back: String,
    /// On hold.
    pub on_hold: String,
    /// Payable (negative: offset owed).
    pub payable: String,
    /// In open payout batches.
    pub in_payout: String,
    /// Paid.
    pub paid: String,
}

/// Every partner's books after each fact recorded at or before `at` (all of the log when
/// `None`): the log replayed from its first record, so any past position can be asked.
pub fn balances(ledger: &Ledger, cfg: EngineConfig, at: Option<u64>) -> Result<Vec<BalanceLine>> {
    let size = ledger.size();
    if size == 0 {
        bail!("the log is empty");
    }
    if let Some(a) = at
        && a >= size
    {
        bail!("--at {a} is past the end of the log ({size} records, the last is {})", size - 1);
    }
    let mut engine = Engine::new(cfg);
    let last = crate::service::replay(ledger, &mut engine, 0, at)?.unwrap_or(0);
    let st = engine.state();
    Ok(st
        .partners
        .iter()
        .map(|(id, p)| {
            let b = st.books.get(id).copied().unwrap_or_default();
            let cur = st.programs.get(&p.program).map_or_else(|| "USD".parse(), |pr| Ok(pr.latest().spec.currency));
            let cur = cur.unwrap_or_else(|_| unreachable!("USD is a currency"));
            BalanceLine {
                seq: last,
                partner: id.clone(),
                program: p.program.clone(),
                currency: cur.to_string(),
                earned: dec(b.earned, cur),
                clawed_back: dec(b.clawed_back, cur),
                on_hold: dec(b.on_hold, cur),
                payable: dec(b.payable, cur),
                in_payout: dec(b.in_payout, cur),
                paid: dec(b.paid, cur),
            }
        })
        .collect())
}

/// Opens the log of `data` alone (no engine), exclusively.
pub fn open_ledger(data: &Path, keys: &crate::keystore::KeyFile) -> Result<Ledger> {
    Ledger::open(
        &data.join("log"),
        settle_ledger::LedgerConfig {
            origin: keys.origin.clone(),
            key: keys.current()?,
            accepts: std::sync::Arc::new(settle_engine::model::accepts),
            persist: fjall::PersistMode::SyncAll,
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot open the log in {}: {e}", data.display()))
}

/// Audits a live data dir: chain, tree, checkpoints, full replay of every split and
/// mandate, signatures, conservation of money.
pub fn audit_data(data: &Path) -> Result<AuditReport> {
    let keys = crate::keystore::KeyFile::load(data)?;
    let ring = keys.ring()?;
    let ledger = open_ledger(data, &keys)?;
    // One read of the log, three stages on their own threads: the ledger's pass (chain,
    // hashes, tree, checkpoint signatures) hands each record it verified to the parser
    // (parse, check canonical), which hands it to the replay on this thread (re-derive
    // every split, mandate and balance, in log order; signatures batch-verified in the
    // background).
    let cfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt()? };
    let mut replay = Replay::new(Engine::new(cfg), ring.clone(), true);
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<settle_ledger::Record>>(16);
    let reader = ledger.clone();
    let structural = std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(PARSE_CHUNK);
        let mut open = true;
        let v = settle_ledger::verify_log_each(&reader, &ring, |r| {
            // Once the replay has stopped, the pass goes on alone (its verdict comes first).
            if open {
                chunk.push(r);
                if chunk.len() == PARSE_CHUNK {
                    open = raw_tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(PARSE_CHUNK))).is_ok();
                }
            }
        });
        if open {
            let _ = raw_tx.send(chunk);
        }
        v
    });
    /// A record for the replay: a fact parsed (and checked canonical), or a derived
    /// record left as bytes for the replay to compare with what it derives.
    enum Item {
        Fact(u64, Box<Result<Envelope, Mismatch>>),
        Derived(settle_ledger::Record),
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Item>>(16);
    let parser = std::thread::spawn(move || {
        for records in raw_rx {
            let mut chunk = Vec::with_capacity(records.len());
            let mut stop = false;
            for r in records {
                if !settle_engine::model::is_fact_kind(&r.kind) {
                    chunk.push(Item::Derived(r));
                    continue;
                }
                let parsed = parse_record(r.seq, &r.kind, r.version, &r.event);
                stop = parsed.is_err();
                chunk.push(Item::Fact(r.seq, Box::new(parsed)));
                if stop {
                    break;
                }
            }
            // A failure ends the stream after it is handed over.
            if tx.send(chunk).is_err() || stop {
                return;
            }
        }
    });
    let replayed = (|| {
        for chunk in rx {
            for item in chunk {
                match item {
                    Item::Fact(seq, parsed) => match *parsed {
                        Ok(env) => replay.feed_parsed(seq, env)?,
                        Err(m) => return Err(replay.earliest(m)),
                    },
                    Item::Derived(r) => replay.feed_derived_bytes(r.seq, &r.kind, r.version, &r.event)?,
                }
            }
        }
        let (mandates, records) = (replay.mandates, replay.records);
        Ok::<_, Mismatch>((mandates, records, replay.finish()?))
    })();
    let parsed = parser.join();
    // A broken chain or tree is reported first: it is what makes everything else moot.
    let v = structural
        .join()
        .map_err(|_| anyhow::anyhow!("the log verification thread panicked"))?
        .map_err(|f| failed_at(f.seq, &f.what))?;
    parsed.map_err(|_| anyhow::anyhow!("the audit's parsing thread panicked"))?;
    let (mandates, replayed_records, engine) = replayed.map_err(|m| failed_at(m.seq, &m.what))?;
    // Every record the ledger's pass verified was replayed too.
    anyhow::ensure!(
        replayed_records == v.records,
        "audit failed: {} records verified but {replayed_records} replayed",
        v.records
    );
    let mut report = AuditReport {
        records: v.records,
        checkpoints: v.checkpoints,
        mandates,
        uncovered: v.uncovered,
        ..Default::default()
    };
    conserved(&engine, &mut report)?;
    ledger.close()?;
    Ok(report)
}

fn failed_at(seq: u64, what: &str) -> anyhow::Error {
    anyhow::anyhow!("audit failed at seq {seq}: {what}")
}

/// Records parsed per hand-off between the audit's parsing and replaying threads.
const PARSE_CHUNK: usize = 256;

/// Audits an exported bundle with the public keys it carries only.
/// With `keys`, the vendor's keys as the auditor obtained them (pinned); without, the
/// bundle's own `jwks.json`. With `known` (checkpoints the auditor held before), the
/// bundle's log must extend each.
pub fn audit_bundle(dir: &Path, keys: Option<&Path>, known: &[Known]) -> Result<AuditReport> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join(MANIFEST_FILE))
            .with_context(|| format!("{} has no {MANIFEST_FILE}: not a settle bundle", dir.display()))?,
    )
    .context("manifest.json is not a bundle manifest")?;
    let ring = read_ring(&keys.map_or_else(|| dir.join(JWKS_FILE), Path::to_path_buf))?;
    let sig = std::fs::read_to_string(dir.join(MANIFEST_SIG_FILE))
        .context("bundle has no manifest.jws (unsigned manifest)")?;
    let (signed, _): (Manifest, _) = settle_mandates::types::verify_as(sig.trim(), &ring, TYP_MANIFEST)
        .map_err(|e| anyhow::anyhow!("audit failed: manifest signature: {e}"))?;
    if signed != manifest {
        bail!("audit failed: manifest.json differs from the signed manifest");
    }
    let notes: Vec<String> = serde_json::from_slice(&std::fs::read(dir.join(CHECKPOINTS_FILE))?)
        .context("checkpoints.json is not a list of signed notes")?;
    let log = BufReader::new(File::open(dir.join(LOG_FILE)).context("bundle has no log.jsonl")?);
    let cfg = EngineConfig { vendor: manifest.vendor.clone(), salt_secret: [0; 32] };
    let mut replay = Replay::new(Engine::new(cfg), ring.clone(), false);
    let v = settle_ledger::verify_export_known(log, notes.clone(), &ring, &manifest.origin, known, |r| {
        replay
            .feed(r.seq, &r.kind, r.version, &r.event)
            .map_err(|m| settle_ledger::Failure { seq: m.seq, what: m.what })
    })
    .map_err(|f| failed_at(f.seq, &f.what))?;
    let mandates = replay.mandates;
    let engine = replay.finish().map_err(|m| failed_at(m.seq, &m.what))?;
    let mut report = AuditReport { records: v.records, checkpoints: v.checkpoints, mandates, ..Default::default() };
    conserved(&engine, &mut report)?;
    if hex::encode(v.root) != manifest.root || v.records != manifest.records {
        bail!(
            "audit failed: manifest says {} records with root {}, the log has {} with root {}",
            manifest.records,
            manifest.root,
            v.records,
            hex::encode(v.root)
        );
    }
    // Every file as listed, byte for byte.
    let mut listed = manifest.files.clone();
    for p in walk(dir)? {
        let rel = p.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
        if rel == MANIFEST_FILE || rel == MANIFEST_SIG_FILE {
            continue;
        }
        let Some(h) = listed.remove(&rel) else { bail!("audit failed: {rel} is not listed in the manifest") };
        if h != sha256_file(&p)? {
            bail!("audit failed: {rel} differs from the manifest (edited)");
        }
    }
    if let Some((rel, _)) = listed.into_iter().next() {
        bail!("audit failed: {rel} is listed in the manifest but missing");
    }
    // Every receipt verifies against the keys and the final checkpoint.
    let last = notes.last().cloned().unwrap_or_default();
    let mut verifier = ReceiptVerifier::new(&ring, Some(&manifest.origin));
    for p in walk(&dir.join("partners"))? {
        if p.file_name().is_some_and(|n| n == "receipts.jsonl") {
            let partner =
                p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let lines = BufReader::new(File::open(&p)?).lines().enumerate().map(|(i, line)| {
                let doc = serde_json::from_str(&line?)
                    .with_context(|| format!("{}: line {} is not a receipt", p.display(), i + 1))?;
                Ok((i + 1, doc))
            });
            report.receipts += verify_receipt_run(&mut verifier, lines, |line, doc, verified| {
                let vr = verified.map_err(|e| anyhow::anyhow!("audit failed: receipt {line} of {partner}: {e}"))?;
                if doc.checkpoint != last || vr.mandate.payee.id != partner {
                    bail!(
                        "audit failed: receipt {line} of {partner} is not for this partner or not against the final checkpoint"
                    );
                }
                Ok(())
            })?;
        }
    }
    Ok(report)
}

/// Receipts read ahead and verified on all cores at once, [`RECEIPT_BATCH`] per task.
const RECEIPT_READ_AHEAD: usize = 32 * RECEIPT_BATCH;

/// Verifies numbered receipts as they come, [`RECEIPT_READ_AHEAD`] at a time on all cores
/// (each run of [`RECEIPT_BATCH`] with its signatures batch-checked together), handing
/// each outcome to `each` in order; stops at the first error of either. Returns how many
/// were verified.
fn verify_receipt_run(
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

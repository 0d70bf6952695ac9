//! The audits: of a live store (chain, tree, checkpoints, every derived record derived
//! again, signatures, money conserved), of an exported bundle with its public keys only,
//! and of a self-contained log file with no database.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use settle_engine::replay::{Mismatch, Replay, parse_record};
use settle_engine::{Engine, EngineConfig, Envelope};
use settle_ledger::{Known, Ledger};
use settle_mandates::keys::{Jwks, KeyRing};
use settle_mandates::receipt::ReceiptVerifier;

use super::export::{sha256_file, walk};
use super::verify::verify_receipt_run;
use super::{CHECKPOINTS_FILE, JWKS_FILE, LOG_FILE, MANIFEST_FILE, MANIFEST_SIG_FILE, Manifest, TYP_MANIFEST};
use crate::home::Home;
use crate::keystore::KeyFile;
use crate::service::open_ledger_to_read;

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
pub(super) fn read_ring(path: &Path) -> Result<KeyRing> {
    let jwks: Jwks =
        serde_json::from_slice(&std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
            .with_context(|| format!("{} is not a JWKS", path.display()))?;
    Ok(KeyRing::new(&jwks)?)
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
        if !b.is_balanced() {
            bail!(
                "money not conserved for partner {p}: earned {} − clawed {} + adjusted {} ≠ on hold {} + payable {} + in payout {} + paid {}",
                b.earned,
                b.clawed_back,
                b.adjusted,
                b.on_hold,
                b.payable,
                b.in_payout,
                b.paid
            );
        }
        earned += i128::from(b.net());
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
    // Every adjustment mandate of an accepted dispute, as the disputes recorded them.
    let adjusted: i128 = st.disputes.values().flat_map(|d| &d.adjustments).map(|(_, _, a)| i128::from(*a)).sum();
    if from_hops + adjusted != earned || earned != held {
        bail!(
            "money not conserved: conversions say {from_hops} and adjustments {adjusted}, books say {earned} earned and {held} held"
        );
    }
    report.partners = st.books.len();
    report.net_commission = earned;
    Ok(())
}

/// Audits a live data dir: chain, tree, checkpoints, full replay of every split and
/// mandate, signatures, conservation of money.
pub fn audit_data(home: &Home) -> Result<AuditReport> {
    let (ledger, keys, _) = open_ledger_to_read(home)?;
    let report = audit_ledger(&ledger, &keys, &Arc::default())?;
    ledger.close()?;
    Ok(report)
}

/// [`audit_data`] of an open ledger, the live one of `settle serve` included (records
/// appended while it runs are audited too, up to where its pass ends), counting the
/// records its pass has verified in `seen` as it goes.
pub fn audit_ledger(ledger: &Ledger, keys: &KeyFile, seen: &Arc<AtomicU64>) -> Result<AuditReport> {
    let ring = keys.ring()?;
    // One read of the log, three stages on their own threads: the ledger's pass (chain,
    // hashes, tree, checkpoint signatures) hands each record it verified to the parser
    // (parse, check canonical), which hands it to the replay on this thread (re-derive
    // every split, mandate and balance, in log order; signatures batch-verified in the
    // background).
    let cfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt()? };
    let mut replay = Replay::new(Engine::new(cfg), ring.clone(), true);
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<settle_ledger::Record>>(16);
    let reader = ledger.clone();
    let seen = Arc::clone(seen);
    let structural = std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(PARSE_CHUNK);
        let mut open = true;
        let v = settle_ledger::verify_log_each(&reader, &ring, |r| {
            seen.fetch_add(1, Ordering::Relaxed);
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

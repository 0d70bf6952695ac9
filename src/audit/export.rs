//! The self-contained audit bundle (the log as JSON Lines, checkpoints, public keys,
//! every partner's statement and receipts, a signed manifest) and the self-contained log
//! file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use settle_engine::{EngineConfig, Envelope};
use settle_ledger::Ledger;
use settle_mandates::types::Signed;
use sha2::{Digest, Sha256};

use super::statements::{Period, statements};
use super::{BUNDLE_FORMAT, CHECKPOINTS_FILE, JWKS_FILE, LOG_FILE, MANIFEST_FILE, MANIFEST_SIG_FILE, Manifest};
use crate::home::Home;
use crate::receipts::{Issuer, receipts};
use crate::service::open_ledger_to_read;

/// The SHA-256 of a file, hex.
pub(super) fn sha256_file(p: &Path) -> Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// A signed checkpoint over the whole log, as of its last record's time (an export must
/// be covered to its last record); a follower's (the log written by another node) is its
/// latest, which covers exactly what it reads.
fn final_checkpoint(ledger: &Ledger, home: &Home, follower: bool) -> Result<settle_ledger::SignedCheckpoint> {
    let last_time = match ledger.size() {
        0 => bail!("the log in {} is empty: nothing to export", home.describe()),
        n => Envelope::from_bytes(&ledger.record(n - 1)?.context("last record missing")?.event)?.at.timestamp(),
    };
    if follower {
        return ledger.latest_checkpoint()?.context("no signed checkpoint to export against");
    }
    Ok(ledger.checkpoint_blocking(last_time)?)
}

/// Writes the self-contained log file (`settle.log.1`, docs/formats.md): the log, its
/// signed checkpoints and the vendor's public keys in one JSON Lines file. Returns the
/// number of records.
pub fn export_file(home: &Home, file: &Path) -> Result<u64> {
    let (ledger, keys, follower) = open_ledger_to_read(home)?;
    final_checkpoint(&ledger, home, follower)?;
    let f = File::create_new(file).with_context(|| format!("cannot create {} (it must not exist)", file.display()))?;
    let mut out = BufWriter::new(f);
    let n = settle_ledger::export_file(&ledger, &keys.jwks()?, &mut out)?;
    out.flush()?;
    ledger.close()?;
    Ok(n)
}

/// Exports the self-contained audit bundle into `out`.
pub fn export(home: &Home, out: &Path) -> Result<Manifest> {
    export_counted(home, out).map(|(m, _)| m)
}

/// [`export`], also returning how many receipts the bundle holds.
pub fn export_counted(home: &Home, out: &Path) -> Result<(Manifest, u64)> {
    // The ledger alone: the statements below replay the log with an engine of their own,
    // so the service's restored engine state would only double the memory.
    let (ledger, keys, follower) = open_ledger_to_read(home)?;
    let cp = final_checkpoint(&ledger, home, follower)?;
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
    statements(&ledger, ecfg, Period::default(), |p, line| {
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
    let by = Issuer::current(&keys, &key, &cp);
    let signed_at = by.iat;
    let receipts = receipts(&ledger, &by, |partner, doc| {
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
        signed_at,
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

/// Every file under `dir`, sorted.
pub(super) fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
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

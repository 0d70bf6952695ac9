//! SIGKILL crash test.
//!
//! The test binary re-executes itself as a child (`crash_child`, which does nothing
//! unless `SETTLE_CRASH_CHILD` names a directory). The child appends from several
//! threads and prints each key only after its append was acknowledged. The parent kills
//! it with SIGKILL after a reproducible, round-seeded number of acknowledgements, reopens
//! the ledger and checks that every acknowledged key is there exactly once, that the key
//! index and the records agree, that the chain and tree verify, and that retrying an
//! acknowledged key across the crash replays it instead of appending it again. Several
//! rounds run against the same directory, so each recovery starts from a recovered log.
//!
//! A kill loses no OS buffers, so this checks atomicity and recovery of the batches (and
//! that nothing is acknowledged before its batch is committed), not power-loss
//! durability. It runs on fjall (a directory) and, with the `test-postgres` feature (on
//! in `cargo test --workspace`), on a throw-away PostgreSQL server: the child and the
//! parent open the store `SETTLE_CRASH_CHILD` names, a directory or a URL.

#![allow(clippy::cast_possible_truncation)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use settle_ledger::{Append, Appended, Ledger, LedgerConfig, LedgerError, NewRecord, verify_log};
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use settle_mandates::merkle::{self, Hash};
use sha2::{Digest, Sha256};

const CHILD_ENV: &str = "SETTLE_CRASH_CHILD";
const ROUND_ENV: &str = "SETTLE_CRASH_ROUND";
const ORIGIN: &str = "settle.test/crash";
const SEED: u8 = 9;
const ROUNDS: u64 = 6;
const THREADS: u64 = 4;
/// The child stops by itself after this many appends per thread (the parent kills it
/// long before; reaching it means the parent stopped reading).
const CHILD_CAP: u64 = 20_000;
const KIND: &str = "crash_event";

fn config() -> LedgerConfig {
    LedgerConfig {
        origin: ORIGIN.into(),
        key: SigningKey::from_seed(&[SEED; 32]),
        accepts: Arc::new(|k, v| k == KIND && v == 1),
        persist: fjall::PersistMode::SyncAll,
    }
}

fn ring() -> KeyRing {
    KeyRing::new(&Jwks { keys: vec![SigningKey::from_seed(&[SEED; 32]).to_jwk(None, None)] }).unwrap()
}

fn event(key: &str) -> Vec<u8> {
    format!(r#"{{"key":"{key}"}}"#).into_bytes()
}

fn key_of(event: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(event).expect("event is JSON");
    v["key"].as_str().expect("event names its key").to_owned()
}

fn append(key: &str, event: Vec<u8>) -> Append {
    Append {
        key: key.as_bytes().to_vec(),
        content_hash: Sha256::digest(&event).into(),
        records: vec![NewRecord { kind: KIND.into(), version: 1, event }],
        expected_seq: None,
        projection: None,
        looked_up: None,
    }
}

/// splitmix64: reproducible per-round numbers without a dependency.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Child mode: append `k-<round>-<n>` from several threads until killed, printing
/// `ACK <key> <seq> <chain hex>` after each acknowledgement. Does nothing (and passes)
/// when run normally.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let round: u64 = std::env::var(ROUND_ENV).expect("round").parse().expect("round is a number");
    let l = open(&dir).expect("child: open");
    let start = l.size();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (l, out) = (l.clone(), Arc::clone(&out));
            std::thread::spawn(move || {
                for i in 0..CHILD_CAP {
                    let key = format!("k-{round}-{}", i * THREADS + t);
                    let a = l.append_blocking(append(&key, event(&key))).expect("child: append");
                    assert!(!a.replayed && a.count == 1 && a.first_seq >= start, "child: fresh key {key}: {a:?}");
                    let mut o = out.lock().unwrap();
                    let line = format!("ACK {key} {} {}\n", a.first_seq, hex::encode(a.chain));
                    if o.write_all(line.as_bytes()).and_then(|()| o.flush()).is_err() {
                        return; // The parent is gone.
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("child: appender thread");
    }
    l.close().expect("child: close");
}

struct Ack {
    seq: u64,
    chain: Hash,
}

/// Runs one child until `target` acknowledgements, kills it and collects every
/// acknowledgement it printed (including those after the count was reached).
fn crash_round(dir: &str, round: u64, target: usize, acked: &mut HashMap<String, Ack>) -> usize {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["crash_child", "--exact", "--quiet", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut n = 0;
    let mut killed = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let Some(rest) = line.strip_prefix("ACK ") else { continue };
        let parts: Vec<&str> = rest.split(' ').collect();
        let [key, seq, chain] = parts[..] else { panic!("bad line from child: {line}") };
        let ack = Ack { seq: seq.parse().unwrap(), chain: hex::decode(chain).unwrap().try_into().unwrap() };
        assert!(acked.insert(key.to_owned(), ack).is_none(), "round {round}: {key} acknowledged twice");
        n += 1;
        if n == target {
            child.kill().unwrap(); // SIGKILL
            killed = true;
            break;
        }
    }
    assert!(killed, "round {round}: child exited after {n} of {target} acknowledgements: {:?}", child.wait());
    // Lines already in the pipe were printed after their acknowledgement too.
    for line in lines {
        let Ok(line) = line else { break };
        let Some(rest) = line.strip_prefix("ACK ") else { continue };
        let parts: Vec<&str> = rest.split(' ').collect();
        let [key, seq, chain] = parts[..] else { continue }; // the kill may cut the last line
        let (Ok(seq), Ok(Ok(chain))) = (seq.parse(), hex::decode(chain).map(<[u8; 32]>::try_from)) else { continue };
        assert!(acked.insert(key.to_owned(), Ack { seq, chain }).is_none(), "round {round}: {key} twice");
        n += 1;
    }
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "round {round}: child was killed, not exited: {status:?}");
    }
    n
}

/// The ledger of `place`: a PostgreSQL URL, or a directory.
fn open(place: &str) -> Result<Ledger, LedgerError> {
    if place.starts_with("postgres://") {
        let b = settle_ledger::backend::PostgresBackend::open(place)?;
        Ledger::open_on(Arc::new(b), config())
    } else {
        Ledger::open(Path::new(place), config())
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    survive_sigkill(dir.path().to_str().unwrap());
}

#[cfg(feature = "test-postgres")]
#[test]
fn acknowledged_appends_survive_sigkill_on_postgres() {
    let pg = settle_ledger::backend::throwaway::ThrowawayPostgres::start();
    survive_sigkill(&pg.database("crash"));
}

fn survive_sigkill(dir: &str) {
    let mut acked: HashMap<String, Ack> = HashMap::new();
    let mut prev_cp: Option<(u64, Hash)> = None;
    let mut highest_n: HashMap<u64, u64> = HashMap::new();
    for round in 0..ROUNDS {
        let target = 50 + usize::try_from(mix(round) % 351).unwrap();
        let got = crash_round(dir, round, target, &mut acked);
        assert!(got >= target);
        for k in acked.keys() {
            let mut p = k.split('-').skip(1).map(|x| x.parse::<u64>().unwrap());
            let (r, n) = (p.next().unwrap(), p.next().unwrap());
            let h = highest_n.entry(r).or_default();
            *h = (*h).max(n);
        }

        let l = open(dir).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        // Scan everything: every record decodes, the chain holds (the iterator checks it),
        // and no key is in two records.
        let mut by_key: HashMap<String, u64> = HashMap::new();
        let mut leaves = Vec::new();
        let mut scanned = 0u64;
        for r in l.records(0) {
            let r = r.unwrap_or_else(|e| panic!("round {round}: scan: {e}"));
            assert_eq!(r.seq, scanned);
            let key = key_of(&r.event);
            assert_eq!(r.event, event(&key));
            if let Some(first) = by_key.insert(key.clone(), r.seq) {
                panic!("round {round}: {key} is in records {first} and {}", r.seq);
            }
            // Index and records are written in one batch: a record's key is indexed,
            // pointing at it.
            let e = l.key_entry(key.as_bytes()).unwrap().unwrap_or_else(|| panic!("{key} at {} not indexed", r.seq));
            assert_eq!((e.appended.first_seq, e.appended.count, e.appended.chain), (r.seq, 1, r.chain), "{key}");
            leaves.push(merkle::leaf_hash(&r.event));
            scanned += 1;
        }
        assert_eq!(l.size(), scanned, "round {round}: size vs records scanned");
        eprintln!(
            "round {round}: killed after {got} acknowledgements (target {target}); {scanned} records, {} acknowledged in all",
            acked.len()
        );
        // Every acknowledged key is there, once, with the seq and chain it was given.
        for (key, ack) in &acked {
            let seq = by_key.get(key).unwrap_or_else(|| panic!("round {round}: acknowledged {key} is lost"));
            assert_eq!(*seq, ack.seq, "round {round}: {key} moved");
            let rec = l.record(*seq).unwrap().unwrap();
            assert_eq!((rec.event, rec.chain), (event(key), ack.chain), "round {round}: record of {key}");
            let e = l.key_entry(key.as_bytes()).unwrap().unwrap();
            assert_eq!(e.appended, Appended { first_seq: ack.seq, count: 1, chain: ack.chain, replayed: true });
        }
        // And the converse: no key is indexed without its record (probe past the last
        // acknowledgement of every round, where the kill cut appends in flight).
        for (r, top) in &highest_n {
            for n in 0..=top + 4 * THREADS + 64 {
                let key = format!("k-{r}-{n}");
                if let Some(e) = l.key_entry(key.as_bytes()).unwrap() {
                    assert_eq!(
                        by_key.get(&key),
                        Some(&e.appended.first_seq),
                        "round {round}: {key} indexed, no record"
                    );
                }
            }
        }

        // Retries across the crash replay the original; a changed retry conflicts.
        let keys: Vec<&String> = {
            let mut v: Vec<&String> = acked.keys().collect();
            v.sort();
            let pick = mix(round ^ 0xabc);
            (0..4).map(|i| v[usize::try_from((pick >> (i * 16)) % v.len() as u64).unwrap()]).collect()
        };
        for key in keys.iter().copied().collect::<HashSet<_>>() {
            let ack = &acked[key];
            let again = l.append_blocking(append(key, event(key))).unwrap();
            assert_eq!(again, Appended { first_seq: ack.seq, count: 1, chain: ack.chain, replayed: true }, "{key}");
            let changed = l.append_blocking(append(key, event(&format!("{key}-changed"))));
            assert_eq!(changed, Err(LedgerError::KeyConflict { key: key.clone(), seq: ack.seq }), "{key}");
        }
        assert_eq!(l.size(), scanned, "round {round}: retries appended nothing");

        // A checkpoint over the recovered log; it extends the previous round's.
        let cp = l.checkpoint_blocking(i64::try_from(round + 1).unwrap() * 1000).unwrap();
        assert_eq!((cp.checkpoint.size, cp.checkpoint.root), (scanned, merkle::root_of(&leaves)));
        if let Some((old, old_root)) = prev_cp {
            let p = l.consistency_proof(old, scanned).unwrap();
            merkle::verify_consistency(old, scanned, &old_root, &cp.checkpoint.root, &p)
                .unwrap_or_else(|e| panic!("round {round}: consistency {old} -> {scanned}: {e}"));
        }
        prev_cp = Some((scanned, cp.checkpoint.root));
        let report = verify_log(&l, &ring()).unwrap_or_else(|f| panic!("round {round}: verify_log: {f}"));
        assert_eq!((report.records, report.checkpoints, report.uncovered), (scanned, round + 1, 0));
        l.close().unwrap();
    }
}

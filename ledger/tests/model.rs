//! Model-based property test of the ledger (in the style of sled's model tests).
//!
//! Random sequences of operations run against a real ledger on disk and against a
//! plain in-memory model (a `Vec` of records and a `HashMap` of idempotency keys).
//! After every operation the ledger's answers must equal what the model predicts:
//! acknowledgements, replays, conflicts, reads, scans, checkpoint roots and proofs
//! (checked with the pure verifiers of `settle_mandates::merkle` against roots the
//! model computes from its own leaf hashes). Every case ends with `verify_log`.

#![allow(clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use settle_ledger::{
    Append, Appended, GENESIS_CHAIN, KeyEntry, Ledger, LedgerConfig, LedgerError, NewRecord, Record, SignedCheckpoint,
    verify_log,
};
use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use settle_mandates::merkle::{self, Hash};
use sha2::{Digest, Sha256};

const ORIGIN: &str = "settle.test/model";
const SEED: u8 = 7;
/// The two inputs that once hit ledger bugs (a checkpoint of the empty log; a scan from
/// past the end) stay in the generated operations; each also has its own test below.
const AVOID_KNOWN_BUGS: bool = false;
const KINDS: [&str; 3] = ["model_a", "model_b", "model_conversion_recorded"];

fn config() -> LedgerConfig {
    LedgerConfig {
        origin: ORIGIN.into(),
        key: SigningKey::from_seed(&[SEED; 32]),
        accepts: Arc::new(|k, v| k.starts_with("model_") && v == 1),
        // Logic, not durability, is modelled here (the crash test covers durability):
        // buffered writes keep a hundred-odd reopens per run fast on any disk.
        persist: fjall::PersistMode::Buffer,
    }
}

fn ring() -> KeyRing {
    KeyRing::new(&Jwks { keys: vec![SigningKey::from_seed(&[SEED; 32]).to_jwk(None, None)] }).unwrap()
}

fn sha(b: &[u8]) -> Hash {
    Sha256::digest(b).into()
}

/// The chain link as documented in `record.rs`, computed independently of the crate.
fn link(prev: &Hash, seq: u64, r: &NewRecord) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(sha(&r.event));
    h.update(r.version.to_be_bytes());
    h.update(r.kind.as_bytes());
    h.finalize().into()
}

/// One record to generate: which kind, and a small payload.
#[derive(Debug, Clone)]
struct RecSpec {
    kind: usize,
    payload: String,
}

/// Which earlier key to reuse: one of the last two, or any.
#[derive(Debug, Clone, Copy)]
struct Pick {
    recent: bool,
    n: usize,
}

/// One append, alone or inside a group.
#[derive(Debug, Clone)]
enum Item {
    /// A fresh key; `expect`: no expected_seq, the right one, or a wrong one.
    Fresh { recs: Vec<RecSpec>, expect: Option<bool> },
    /// An earlier key with its original content.
    Retry(Pick),
    /// An earlier key with other content.
    Conflict(Pick),
}

#[derive(Debug, Clone)]
enum Op {
    One(Item),
    /// Several appends through one queue reservation: they land in one group commit,
    /// so a key used twice in the group is answered from the batch's pending keys.
    Group(Vec<Item>),
    Reopen,
    Read {
        seq: usize,
        from: usize,
        key: usize,
    },
    Checkpoint {
        time: i64,
    },
    Proof {
        size: usize,
        index: usize,
        new: usize,
        old: usize,
    },
}

fn rec_spec() -> impl Strategy<Value = RecSpec> {
    (0..KINDS.len(), "[a-z0-9]{0,6}").prop_map(|(kind, payload)| RecSpec { kind, payload })
}

fn pick() -> impl Strategy<Value = Pick> {
    (any::<bool>(), any::<usize>()).prop_map(|(recent, n)| Pick { recent, n })
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        5 => (prop::collection::vec(rec_spec(), 1..=4), prop_oneof![6 => Just(None), 1 => Just(Some(true)), 1 => Just(Some(false))])
            .prop_map(|(recs, expect)| Item::Fresh { recs, expect }),
        // Long appends, so that runs cross the ledger's 256-leaf tiles (and reopen
        // inside and at the edge of one).
        1 => prop::collection::vec(rec_spec(), 100..=300).prop_map(|recs| Item::Fresh { recs, expect: None }),
        3 => pick().prop_map(Item::Retry),
        2 => pick().prop_map(Item::Conflict),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => item().prop_map(Op::One),
        2 => prop::collection::vec(item(), 2..6).prop_map(Op::Group),
        1 => Just(Op::Reopen),
        3 => (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(seq, from, key)| Op::Read { seq, from, key }),
        2 => (0..2_000_000_000i64).prop_map(|time| Op::Checkpoint { time }),
        3 => (any::<usize>(), any::<usize>(), any::<usize>(), any::<usize>())
            .prop_map(|(size, index, new, old)| Op::Proof { size, index, new, old }),
    ]
}

#[derive(Debug, Clone)]
struct KeyState {
    content_hash: Hash,
    recs: Vec<NewRecord>,
    appended: Appended,
}

/// What the ledger should hold.
#[derive(Default)]
struct Model {
    records: Vec<Record>,
    leaves: Vec<Hash>,
    keys: HashMap<Vec<u8>, KeyState>,
    order: Vec<Vec<u8>>,
    checkpoints: Vec<SignedCheckpoint>,
    next_key: u64,
}

/// What an append should come back with.
#[derive(Debug)]
enum Expect {
    Ok(Appended),
    Conflict { key: String, seq: u64 },
    Mismatch { expected: u64, actual: u64 },
}

fn content_hash(recs: &[NewRecord]) -> Hash {
    let mut h = Sha256::new();
    for r in recs {
        h.update((r.kind.len() as u64).to_be_bytes());
        h.update(r.kind.as_bytes());
        h.update(r.version.to_be_bytes());
        h.update((r.event.len() as u64).to_be_bytes());
        h.update(&r.event);
    }
    h.finalize().into()
}

impl Model {
    fn size(&self) -> u64 {
        self.records.len() as u64
    }

    fn chain(&self) -> Hash {
        self.records.last().map_or(GENESIS_CHAIN, |r| r.chain)
    }

    fn root(&self, size: usize) -> Hash {
        merkle::root_of(&self.leaves[..size])
    }

    fn pick(&self, p: Pick) -> Option<Vec<u8>> {
        let n = self.order.len();
        if n == 0 {
            return None;
        }
        let i = if p.recent { n - 1 - p.n % n.min(2) } else { p.n % n };
        Some(self.order[i].clone())
    }

    /// Turns an item into the append to send and applies its expected effect to the
    /// model (appends are applied in order, as the writer does). `None`: nothing to
    /// retry yet.
    fn plan(&mut self, item: &Item) -> Option<(Append, Expect)> {
        match item {
            Item::Fresh { recs, expect } => {
                // Odd key bytes now and then: the index must not care.
                let key = if self.next_key % 5 == 4 {
                    let mut k = vec![0xff, 0x00];
                    k.extend_from_slice(&self.next_key.to_be_bytes());
                    k
                } else {
                    format!("key-{}", self.next_key).into_bytes()
                };
                self.next_key += 1;
                let new: Vec<NewRecord> = recs
                    .iter()
                    .enumerate()
                    .map(|(i, r)| NewRecord {
                        kind: KINDS[r.kind].into(),
                        version: 1,
                        event: format!(r#"{{"i":{i},"p":"{}"}}"#, r.payload).into_bytes(),
                    })
                    .collect();
                let first_seq = self.size();
                let expected_seq = match expect {
                    None => None,
                    Some(true) => Some(first_seq),
                    Some(false) => Some(first_seq + 1 + (self.next_key % 3)),
                };
                let append = Append {
                    key: key.clone(),
                    content_hash: content_hash(&new),
                    records: new.clone(),
                    expected_seq,
                    projection: None,
                    looked_up: None,
                };
                if let Some(exp) = expected_seq
                    && exp != first_seq
                {
                    return Some((append, Expect::Mismatch { expected: exp, actual: first_seq }));
                }
                let mut chain = self.chain();
                for r in &new {
                    let seq = self.size();
                    chain = link(&chain, seq, r);
                    self.leaves.push(merkle::leaf_hash(&r.event));
                    self.records.push(Record {
                        seq,
                        kind: r.kind.clone(),
                        version: r.version,
                        event: r.event.clone(),
                        event_hash: sha(&r.event),
                        chain,
                    });
                }
                let appended = Appended { first_seq, count: new.len() as u32, chain, replayed: false };
                self.keys.insert(key.clone(), KeyState { content_hash: append.content_hash, recs: new, appended });
                self.order.push(key);
                Some((append, Expect::Ok(appended)))
            }
            Item::Retry(p) => {
                let key = self.pick(*p)?;
                let k = &self.keys[&key];
                let append = Append {
                    key,
                    content_hash: k.content_hash,
                    records: k.recs.clone(),
                    expected_seq: None,
                    projection: None,
                    looked_up: None,
                };
                Some((append, Expect::Ok(Appended { replayed: true, ..k.appended })))
            }
            Item::Conflict(p) => {
                let key = self.pick(*p)?;
                let k = &self.keys[&key];
                let mut recs = k.recs.clone();
                let last = recs.last_mut().expect("appends have records");
                last.event.splice(1..1, *br#""x":1,"#);
                let ch = content_hash(&recs);
                assert_ne!(ch, k.content_hash);
                let expect =
                    Expect::Conflict { key: String::from_utf8_lossy(&key).into_owned(), seq: k.appended.first_seq };
                // A stale expected_seq must not matter: the key is looked at first.
                Some((
                    Append {
                        key,
                        content_hash: ch,
                        records: recs,
                        expected_seq: Some(0),
                        projection: None,
                        looked_up: None,
                    },
                    expect,
                ))
            }
        }
    }
}

fn check_outcome(got: Result<Appended, LedgerError>, want: &Expect, what: &str) {
    match (want, &got) {
        (Expect::Ok(w), Ok(g)) => assert_eq!(g, w, "{what}"),
        (Expect::Conflict { key, seq }, Err(LedgerError::KeyConflict { key: k, seq: s })) => {
            assert_eq!((k, s), (key, seq), "{what}");
        }
        (Expect::Mismatch { expected, actual }, Err(LedgerError::SequenceMismatch { expected: e, actual: a })) => {
            assert_eq!((e, a), (expected, actual), "{what}");
        }
        _ => panic!("{what}: expected {want:?}, got {got:?}"),
    }
}

/// Everything the ledger holds equals the model: size, every record, a full scan, and
/// the key index for every key.
fn check_all(l: &Ledger, m: &Model) {
    assert_eq!(l.size(), m.size());
    let scanned: Vec<Record> = l.records(0).collect::<Result<_, _>>().unwrap();
    assert_eq!(scanned, m.records);
    for (key, k) in &m.keys {
        let e = l.key_entry(key).unwrap().expect("acknowledged key is in the index");
        assert_eq!(e, KeyEntry { content_hash: k.content_hash, appended: Appended { replayed: true, ..k.appended } });
    }
    assert_eq!(l.latest_checkpoint().unwrap(), m.checkpoints.last().cloned());
    let all: Vec<SignedCheckpoint> = l.checkpoints().collect::<Result<_, _>>().unwrap();
    assert_eq!(all, m.checkpoints);
}

/// Where a run's ledger lives: a new directory (fjall), or a new database (PostgreSQL).
enum Place {
    Dir(tempfile::TempDir),
    #[cfg_attr(not(feature = "test-postgres"), allow(dead_code))]
    Postgres(String),
}

impl Place {
    fn open(&self) -> Ledger {
        match self {
            Place::Dir(d) => Ledger::open(d.path(), config()).unwrap(),
            Place::Postgres(url) => Ledger::open_on(
                std::sync::Arc::new(settle_ledger::backend::PostgresBackend::open(url).unwrap()),
                config(),
            )
            .unwrap(),
        }
    }
}

fn run(ops: &[Op]) {
    run_on(ops, &Place::Dir(tempfile::tempdir().unwrap()));
}

fn run_on(ops: &[Op], place: &Place) {
    let mut l = place.open();
    let mut m = Model::default();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::One(item) => {
                let before = l.size();
                let Some((a, want)) = m.plan(item) else { continue };
                let got = l.append_blocking(a);
                check_outcome(got, &want, &format!("step {step}: {item:?}"));
                assert_eq!(l.size(), m.size(), "step {step}: size after {item:?}");
                if !matches!(want, Expect::Ok(Appended { replayed: false, .. })) {
                    assert_eq!(l.size(), before, "a replay or refusal must not grow the log");
                }
            }
            Op::Group(items) => {
                let planned: Vec<(Append, Expect)> = items.iter().filter_map(|i| m.plan(i)).collect();
                if planned.is_empty() {
                    continue;
                }
                let (appends, wants): (Vec<Append>, Vec<Expect>) = planned.into_iter().unzip();
                let futs = l.try_reserve().unwrap().append_group(appends).unwrap();
                let got: Vec<Result<Appended, LedgerError>> = rt.block_on(async { futures_join(futs).await });
                for (i, (g, w)) in got.into_iter().zip(&wants).enumerate() {
                    check_outcome(g, w, &format!("step {step}: group item {i} of {items:?}"));
                }
                assert_eq!(l.size(), m.size(), "step {step}: size after group");
            }
            Op::Reopen => {
                l.close().unwrap();
                // Closed: appends are refused, nothing changes.
                let fresh = Append {
                    key: b"after-close".to_vec(),
                    content_hash: [0; 32],
                    records: vec![NewRecord { kind: "model_a".into(), version: 1, event: b"{}".to_vec() }],
                    expected_seq: None,
                    projection: None,
                    looked_up: None,
                };
                assert_eq!(l.append_blocking(fresh), Err(LedgerError::Closed));
                drop(l);
                l = place.open();
                check_all(&l, &m);
            }
            Op::Read { seq, from, key } => {
                let n = m.records.len();
                let seq = seq % (n + 2);
                assert_eq!(l.record(seq as u64).unwrap().as_ref(), m.records.get(seq), "record({seq})");
                // From anywhere in the log or its end. (Past the end was once a bug,
                // now pinned by `scan_from_past_the_end_is_empty`.)
                let from = from % (n + 1);
                let tail: Vec<Record> = l.records(from as u64).collect::<Result<_, _>>().unwrap();
                assert_eq!(tail, m.records[from..], "records({from})");
                if let Some(k) = m.pick(Pick { recent: false, n: *key }) {
                    let e = l.key_entry(&k).unwrap().expect("key is indexed");
                    assert_eq!(e.appended, Appended { replayed: true, ..m.keys[&k].appended });
                }
                assert_eq!(l.key_entry(b"never-used").unwrap(), None);
            }
            // A checkpoint of the empty log breaks `verify_log` once anything is
            // appended (once a bug, now pinned by `empty_log_checkpoint_then_append_verifies`).
            Op::Checkpoint { .. } if AVOID_KNOWN_BUGS && m.records.is_empty() => {}
            Op::Checkpoint { time } => {
                let cp = l.checkpoint_blocking(*time).unwrap();
                let want_root = m.root(m.records.len());
                assert_eq!(
                    (cp.checkpoint.origin.as_str(), cp.checkpoint.size, cp.checkpoint.root),
                    (ORIGIN, m.size(), want_root)
                );
                match m.checkpoints.last() {
                    // The tree has not grown: the earlier checkpoint comes back unchanged.
                    Some(last) if last.checkpoint.size == m.size() => assert_eq!(&cp, last),
                    _ => {
                        assert_eq!(cp.checkpoint.time, *time);
                        m.checkpoints.push(cp.clone());
                    }
                }
                let (verified, _) = Checkpoint::verify(&cp.note, &ring(), Some(ORIGIN)).unwrap();
                assert_eq!(verified, cp.checkpoint);
                assert_eq!(l.checkpoint_at(m.size()).unwrap().as_ref(), Some(&cp));
                assert_eq!(l.latest_checkpoint().unwrap().as_ref(), Some(&cp));
            }
            Op::Proof { size, index, new, old } => {
                let n = m.records.len();
                if n > 0 {
                    let size = 1 + size % n;
                    let index = index % size;
                    let root = m.root(size);
                    assert_eq!(l.root(size as u64).unwrap(), root, "root({size})");
                    let p = l.inclusion_proof(index as u64, size as u64).unwrap();
                    merkle::verify_inclusion(index as u64, size as u64, &m.leaves[index], &p, &root)
                        .unwrap_or_else(|e| panic!("inclusion ({index}, {size}): {e}"));
                    // And a covering checkpoint, where there is one, commits to the leaf too.
                    if let Some(cp) = l.checkpoint_covering(index as u64).unwrap() {
                        let want = m.checkpoints.iter().find(|c| c.checkpoint.size > index as u64);
                        assert_eq!(Some(&cp), want);
                        let s = cp.checkpoint.size;
                        let p = l.inclusion_proof(index as u64, s).unwrap();
                        merkle::verify_inclusion(index as u64, s, &m.leaves[index], &p, &cp.checkpoint.root).unwrap();
                    }
                }
                let new = new % (n + 1);
                let old = old % (new + 1);
                let p = l.consistency_proof(old as u64, new as u64).unwrap();
                merkle::verify_consistency(old as u64, new as u64, &m.root(old), &m.root(new), &p)
                    .unwrap_or_else(|e| panic!("consistency ({old}, {new}): {e}"));
                // Positions outside the log are refused, not answered.
                let n = n as u64;
                assert!(l.inclusion_proof(n, n).is_err());
                assert!(l.consistency_proof(0, n + 1).is_err());
                assert!(l.root(n + 1).is_err());
            }
        }
    }
    check_all(&l, &m);
    let cp = l.checkpoint_blocking(2_000_000_001).unwrap();
    if m.checkpoints.last().is_none_or(|c| c.checkpoint.size != m.size()) {
        m.checkpoints.push(cp);
    }
    let report = verify_log(&l, &ring()).unwrap_or_else(|f| panic!("verify_log: {f}"));
    assert_eq!(report.records, m.size());
    assert_eq!(report.root, m.root(m.records.len()));
    assert_eq!(report.checkpoints, m.checkpoints.len() as u64);
    assert_eq!(report.uncovered, 0);
    l.close().unwrap();
}

/// Awaits the futures in order (they all resolve together, from one group commit).
async fn futures_join<F: std::future::Future<Output = Result<Appended, LedgerError>>>(
    futs: Vec<F>,
) -> Vec<Result<Appended, LedgerError>> {
    let mut out = Vec::with_capacity(futs.len());
    for f in futs {
        out.push(f.await);
    }
    out
}

proptest! {
    // 64 cases unless PROPTEST_CASES says otherwise. The time is mostly fsync waits
    // (SyncAll per group commit), so it depends on the disk more than on the CPU.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn ledger_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

/// The model test on PostgreSQL: one throw-away server, a database for each case (16
/// cases unless PROPTEST_CASES says otherwise), and the fixed sequence below.
#[cfg(feature = "test-postgres")]
#[test]
fn ledger_matches_model_on_postgres() {
    let pg = settle_ledger::backend::throwaway::ThrowawayPostgres::start();
    let n = std::sync::atomic::AtomicU64::new(0);
    let next = || Place::Postgres(pg.database(&format!("m{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed))));
    run_on(&every_operation(), &next());
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(16);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
    runner
        .run(&prop::collection::vec(op(), 1..60), |ops| {
            run_on(&ops, &next());
            Ok(())
        })
        .unwrap();
}

/// A fixed sequence that touches every operation, so the model test does something
/// useful even if the generator drifts.
#[test]
fn every_operation_once() {
    run(&every_operation());
}

fn every_operation() -> Vec<Op> {
    let recs = |n: usize| (0..n).map(|i| RecSpec { kind: i % KINDS.len(), payload: format!("p{i}") }).collect();
    let p = Pick { recent: true, n: 0 };
    let ops = vec![
        Op::Read { seq: 0, from: 0, key: 0 },
        Op::Checkpoint { time: 1 },
        Op::One(Item::Retry(p)),
        Op::One(Item::Fresh { recs: recs(3), expect: Some(true) }),
        Op::One(Item::Fresh { recs: recs(1), expect: Some(false) }),
        Op::One(Item::Retry(p)),
        Op::One(Item::Conflict(p)),
        Op::Group(vec![
            Item::Fresh { recs: recs(2), expect: None },
            Item::Retry(p),
            Item::Conflict(p),
            Item::Fresh { recs: recs(4), expect: Some(true) },
        ]),
        Op::Checkpoint { time: 2 },
        Op::Checkpoint { time: 3 },
        Op::Proof { size: 7, index: 3, new: 9, old: 5 },
        Op::Reopen,
        Op::One(Item::Retry(Pick { recent: false, n: 0 })),
        Op::One(Item::Fresh { recs: recs(2), expect: None }),
        Op::Read { seq: 4, from: 3, key: 1 },
        Op::Proof { size: 100, index: 50, new: 11, old: 1 },
        // Across tiles of 256 leaves (11 records so far): to the edge of one, reopen,
        // past it, reopen. (Proof sizes are taken modulo the log's size, plus one.)
        Op::One(Item::Fresh { recs: recs(256 - 11), expect: Some(true) }),
        Op::Reopen,
        Op::Proof { size: 255, index: 255, new: 256, old: 17 },
        Op::One(Item::Fresh { recs: recs(300), expect: None }),
        Op::Checkpoint { time: 4 },
        Op::Reopen,
        Op::Proof { size: 555, index: 300, new: 556, old: 256 },
        Op::Proof { size: 300, index: 3, new: 555, old: 100 },
    ];
    ops
}

/// Regression (fixed): `verify_log` rejected a log with a signed checkpoint of size 0 as soon as the
/// log has a record ("checkpoints are not in order of size"). The ledger signs and stores
/// such a checkpoint when asked on an empty log (the server's shutdown does), so a log
/// that was once checkpointed while empty can never verify again.
#[test]
fn empty_log_checkpoint_then_append_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config()).unwrap();
    let cp = l.checkpoint_blocking(1).unwrap();
    assert_eq!((cp.checkpoint.size, cp.checkpoint.root), (0, merkle::empty_root()));
    assert_eq!(verify_log(&l, &ring()).unwrap().checkpoints, 1, "an empty log with its checkpoint verifies");
    let mut m = Model::default();
    let (a, _) = m.plan(&Item::Fresh { recs: vec![RecSpec { kind: 0, payload: "a".into() }], expect: None }).unwrap();
    l.append_blocking(a).unwrap();
    let r = verify_log(&l, &ring());
    assert!(r.is_ok(), "after one append: {r:?}");
    l.close().unwrap();
}

/// Regression (fixed): `records(from)` with `from` past the end of the log reported the log as
/// inconsistent ("record is missing" at `from - 1`), i.e. as storage corruption, where
/// `record(seq)` past the end answers `None`. Expected: an empty scan.
#[test]
fn scan_from_past_the_end_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config()).unwrap();
    let mut m = Model::default();
    for _ in 0..3 {
        let (a, _) =
            m.plan(&Item::Fresh { recs: vec![RecSpec { kind: 1, payload: "x".into() }], expect: None }).unwrap();
        l.append_blocking(a).unwrap();
    }
    assert_eq!(l.record(4).unwrap(), None);
    assert_eq!(l.records(3).count(), 0, "from the end: empty");
    let past: Vec<Result<Record, LedgerError>> = l.records(5).collect();
    assert!(past.is_empty(), "records(5) of a 3-record log: {past:?}");
    l.close().unwrap();
}

/// Regression (fixed): dropping every handle without `close()` never released the ledger. The
/// writer thread holds the `Arc` of the state that holds the queue's sender, so the queue
/// never closes, the thread never ends and the database lock is never released: opening
/// the same directory again in this process fails with `Storage("FjallError: Locked")`
/// (after a panic, for example, or any caller that forgets `close`).
#[test]
fn dropping_the_last_handle_releases_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config()).unwrap();
    let mut m = Model::default();
    let (a, _) = m.plan(&Item::Fresh { recs: vec![RecSpec { kind: 0, payload: "d".into() }], expect: None }).unwrap();
    let acked = l.append_blocking(a).unwrap();
    drop(l);
    let l = Ledger::open(dir.path(), config()).unwrap_or_else(|e| panic!("reopen after drop without close: {e}"));
    assert_eq!(l.size(), 1);
    assert_eq!(l.key_entry(&m.order[0]).unwrap().unwrap().appended, Appended { replayed: true, ..acked });
    l.close().unwrap();
}

use super::*;
use settle_mandates::keys::{Jwks, KeyRing};

pub(crate) fn config(seed: u8) -> LedgerConfig {
    LedgerConfig {
        origin: "settle.test/log".into(),
        key: SigningKey::from_seed(&[seed; 32]),
        accepts: Arc::new(|k, v| k.starts_with("test_") && v == 1),
        persist: PersistMode::SyncAll,
    }
}

pub(crate) fn ring(seeds: &[u8]) -> KeyRing {
    KeyRing::new(&Jwks { keys: seeds.iter().map(|s| SigningKey::from_seed(&[*s; 32]).to_jwk(None, None)).collect() })
        .unwrap()
}

pub(crate) fn append(key: &str, events: &[&str]) -> Append {
    Append {
        key: key.as_bytes().to_vec(),
        content_hash: Sha256::digest(events.concat().as_bytes()).into(),
        records: events
            .iter()
            .map(|e| NewRecord {
                kind: "test_event".into(),
                version: 1,
                event: format!(r#"{{"e":"{e}"}}"#).into_bytes(),
            })
            .collect(),
        expected_seq: None,
        projection: None,
        looked_up: None,
    }
}

#[test]
fn append_read_proofs_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    for i in 0..37 {
        let a = l.append_blocking(append(&format!("k{i}"), &[&format!("a{i}"), &format!("b{i}")])).unwrap();
        assert_eq!((a.first_seq, a.count, a.replayed), (2 * i, 2, false));
    }
    assert_eq!(l.size(), 74);
    let cp = l.checkpoint_blocking(1000).unwrap();
    assert_eq!(cp.checkpoint.size, 74);
    let leaves: Vec<Hash> = l.records(0).map(|r| merkle::leaf_hash(&r.unwrap().event)).collect();
    assert_eq!(cp.checkpoint.root, merkle::root_of(&leaves));
    for i in [0, 1, 33, 73] {
        let p = l.inclusion_proof(i, 74).unwrap();
        merkle::verify_inclusion(i, 74, &leaves[i as usize], &p, &cp.checkpoint.root).unwrap();
    }
    let c = l.consistency_proof(10, 74).unwrap();
    merkle::verify_consistency(10, 74, &merkle::root_of(&leaves[..10]), &cp.checkpoint.root, &c).unwrap();
    assert!(l.inclusion_proof(74, 74).is_err());
    assert!(l.consistency_proof(10, 75).is_err());
    let r = verify_log(&l, &ring(&[1])).unwrap();
    assert_eq!((r.records, r.checkpoints, r.uncovered), (74, 1, 0));
}

#[test]
fn idempotency_same_and_different_content() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let first = l.append_blocking(append("k", &["x"])).unwrap();
    let again = l.append_blocking(append("k", &["x"])).unwrap();
    assert_eq!(again, Appended { replayed: true, ..first });
    assert_eq!(l.size(), 1);
    assert!(matches!(l.append_blocking(append("k", &["y"])), Err(LedgerError::KeyConflict { seq: 0, .. })));
    l.close().unwrap();
    drop(l);
    // The key outlives a restart.
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    assert_eq!(l.append_blocking(append("k", &["x"])).unwrap(), again);
    assert!(matches!(l.append_blocking(append("k", &["y"])), Err(LedgerError::KeyConflict { .. })));
    assert_eq!(l.size(), 1);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let mut a = append("k", &["x"]);
    a.records[0].kind = "other".into();
    assert!(matches!(l.append_blocking(a), Err(LedgerError::UnknownEvent { .. })));
    let mut a = append("k", &["x"]);
    a.records[0].version = 2;
    assert!(matches!(l.append_blocking(a), Err(LedgerError::UnknownEvent { version: 2, .. })));
    let mut a = append("k", &["x"]);
    a.records[0].event = vec![b' '; MAX_EVENT_BYTES + 1];
    assert!(matches!(l.append_blocking(a), Err(LedgerError::TooLarge(_))));
    let mut a = append("k", &["x"]);
    a.expected_seq = Some(5);
    assert!(matches!(l.append_blocking(a), Err(LedgerError::SequenceMismatch { expected: 5, actual: 0 })));
    assert!(matches!(l.append_blocking(append("", &["x"])), Err(LedgerError::Invalid(_))));
    assert_eq!(l.size(), 0);
    assert!(l.key_entry(b"k").unwrap().is_none(), "a refused append leaves no key behind");
}

#[test]
fn projection_is_stored_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let mut a = append("k", &["x", "y"]);
    a.projection = Some(ProjectionUpdate { name: "p".into(), state: b"state".to_vec() });
    l.append_blocking(a).unwrap();
    assert_eq!(l.projection("p").unwrap(), Some((1, b"state".to_vec())));
}

#[test]
fn key_rotation_keeps_old_checkpoints_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    l.append_blocking(append("a", &["x"])).unwrap();
    l.checkpoint_blocking(100).unwrap();
    l.rotate_key(SigningKey::from_seed(&[2; 32])).unwrap();
    l.append_blocking(append("b", &["y"])).unwrap();
    l.checkpoint_blocking(200).unwrap();
    let both = KeyRing::new(&Jwks {
        keys: vec![
            SigningKey::from_seed(&[1; 32]).to_jwk(None, Some(150)),
            SigningKey::from_seed(&[2; 32]).to_jwk(Some(150), None),
        ],
    })
    .unwrap();
    assert_eq!(verify_log(&l, &both).unwrap().checkpoints, 2);
    assert!(verify_log(&l, &ring(&[2])).is_err(), "without the old key the first checkpoint fails");
}

#[test]
fn export_verifies_and_tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    for i in 0..20 {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
        if i % 7 == 6 {
            l.checkpoint_blocking(i).unwrap();
        }
    }
    let notes: Vec<String> = vec![l.checkpoint_blocking(99).unwrap().note];
    let mut buf = Vec::new();
    assert_eq!(export_bundle_log(&l, &mut buf).unwrap(), 20);
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let check = |ls: &[String]| {
        verify_export(ls.join("\n").as_bytes(), notes.clone(), &ring(&[1]), "settle.test/log", |_| Ok(()))
    };
    let orig: Vec<String> = lines.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(check(&orig).unwrap().records, 20);
    let mut edited = orig.clone();
    edited[10] = edited[10].replace("e10", "e11");
    assert!(check(&edited).unwrap_err().what.contains("event hash"));
    // The stored type and version are inside the chain.
    for (from, to) in [(r#""type":"test_event""#, r#""type":"test_other""#), (r#""v":1"#, r#""v":2"#)] {
        let mut retyped = orig.clone();
        retyped[10] = retyped[10].replacen(from, to, 1);
        assert_ne!(retyped[10], orig[10]);
        let f = check(&retyped).unwrap_err();
        assert!(f.seq == 10 && f.what.contains("chain"), "{f:?}");
    }
    let mut deleted = orig.clone();
    deleted.remove(10);
    assert_eq!(check(&deleted).unwrap_err().seq, 10);
    let mut swapped = orig.clone();
    swapped.swap(4, 5);
    assert!(check(&swapped).unwrap_err().what.contains("gap or reordering"));
    let mut truncated = orig.clone();
    truncated.pop();
    assert!(check(&truncated).unwrap_err().what.contains("records missing"));
    // Re-hashing an edited record breaks the chain instead.
    let mut rehashed = orig;
    let mut v: serde_json::Value = serde_json::from_str(&rehashed[3]).unwrap();
    v["event"]["e"] = "zz".into();
    let bytes = settle_mandates::jcs::to_vec(&v["event"]).unwrap();
    v["event_hash"] = hex::encode(Sha256::digest(&bytes)).into();
    rehashed[3] = v.to_string();
    assert!(check(&rehashed).unwrap_err().what.contains("chain"));
}

#[test]
fn concurrent_appenders_are_all_acknowledged_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let acks: Vec<Appended> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..400 {
            let l = l.clone();
            set.spawn(async move { l.append(append(&format!("c{i}"), &["x"])).await.unwrap() });
        }
        let mut v = Vec::new();
        while let Some(r) = set.join_next().await {
            v.push(r.unwrap());
        }
        v
    });
    let mut seqs: Vec<u64> = acks.iter().map(|a| a.first_seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    assert_eq!(verify_log(&l, &ring(&[1])).unwrap().records, 400);
}

/// The writer writes a batch while the one before it syncs; a checkpoint queued behind
/// appends must wait for their sync: it never names a record a reader cannot yet see.
#[test]
fn a_checkpoint_behind_appends_names_only_durable_records() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        for round in 0..20u64 {
            // Queued in this order, none awaited yet: the appends, then the checkpoint.
            let acks: Vec<_> =
                (0..50).map(|i| l.try_append(append(&format!("r{round}-{i}"), &["x"])).unwrap()).collect();
            let cp = l.checkpoint(i64::try_from(round).unwrap() + 1).await.unwrap();
            assert_eq!(cp.checkpoint.size, 50 * (round + 1), "the checkpoint covers the appends queued before it");
            assert!(
                l.size() >= cp.checkpoint.size,
                "checkpoint of {} records, {} readable",
                cp.checkpoint.size,
                l.size()
            );
            assert_eq!(l.root(cp.checkpoint.size).unwrap(), cp.checkpoint.root);
            for a in acks {
                a.await.unwrap();
            }
        }
    });
    assert_eq!(verify_log(&l, &ring(&[1])).unwrap().records, 1000);
}
#[test]
fn aux_entries_survive_reopen_and_stay_out_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = Ledger::open(dir.path(), config(1)).unwrap();
        l.append_blocking(append("k", &["a"])).unwrap();
        l.aux_put(b"wh/sub/1", b"one", true).unwrap();
        l.aux_put(b"wh/sub/2", b"two", false).unwrap();
        l.aux_put(b"wh/cur/1", b"7", true).unwrap();
        l.aux_remove(b"wh/sub/2", true).unwrap();
        l.close().unwrap();
    }
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    assert_eq!(l.size(), 1, "aux writes are not records");
    assert_eq!(l.aux_get(b"wh/sub/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(l.aux_get(b"wh/sub/2").unwrap(), None);
    let subs = l.aux_scan(b"wh/sub/", 10).unwrap();
    assert_eq!(subs, vec![(b"wh/sub/1".to_vec(), b"one".to_vec())]);
    assert_eq!(l.aux_scan(b"wh/", 1).unwrap().len(), 1, "the limit holds");
}

/// An aux write that is not synced is still handed to the operating system before it
/// returns (webhook cursors rely on it): a process killed right after it loses nothing.
/// The test runs itself again as the process that writes and is killed (`abort`: no
/// destructor, no buffer flushed).
#[test]
fn an_aux_write_not_synced_survives_the_process_being_killed() {
    const CHILD: &str = "SETTLE_LEDGER_KILLED_WRITER";
    if let Some(dir) = std::env::var_os(CHILD) {
        let l = Ledger::open(Path::new(&dir), config(1)).unwrap();
        l.aux_put(b"wh/cur/1", &42u64.to_be_bytes(), false).unwrap();
        l.aux_apply(&[(b"wh/cur/2", b"x")], &[b"wh/sub/gone"], false).unwrap();
        std::fs::write(Path::new(&dir).join("written"), b"").unwrap();
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let l = Ledger::open(dir.path(), config(1)).unwrap();
        l.append_blocking(append("k", &["a"])).unwrap();
        l.aux_put(b"wh/sub/gone", b"1", true).unwrap();
        l.close().unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "tests::an_aux_write_not_synced_survives_the_process_being_killed", "--nocapture"])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the writer was to be killed: {out:?}");
    assert!(dir.path().join("written").exists(), "the writer did not write: {out:?}");
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    assert_eq!(l.aux_get(b"wh/cur/1").unwrap(), Some(42u64.to_be_bytes().to_vec()), "a cursor written, then a kill");
    assert_eq!(l.aux_get(b"wh/cur/2").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(l.aux_get(b"wh/sub/gone").unwrap(), None, "a removal, then a kill");
    assert_eq!(l.size(), 1);
}

/// Appends `n` groups of `per` fresh keys, each group one group commit.
fn fill(l: &Ledger, prefix: &str, n: usize, per: usize) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for g in 0..n {
        let group = (0..per).map(|i| append(&format!("{prefix}{g}-{i}"), &["f"])).collect();
        for f in l.reserve_blocking().unwrap().append_group(group).unwrap() {
            assert!(!rt.block_on(f).unwrap().replayed);
        }
    }
}

/// The writer settles an append from the look-up made on the caller's side, plus the
/// keys of the batches made durable since; a look-up older than the batches it keeps
/// is read again from the store. Either way a key is never appended twice.
#[test]
fn a_look_up_made_before_the_key_was_appended_never_appends_it_twice() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let stale = l.look_up(b"k").unwrap();
    assert_eq!(stale.entry(), None);
    let first = l.append_blocking(append("k", &["x"])).unwrap();
    let with = |events: &[&str]| Append { looked_up: Some(stale.clone()), ..append("k", events) };
    let check = |l: &Ledger, size: u64| {
        assert_eq!(l.append_blocking(with(&["x"])).unwrap(), Appended { replayed: true, ..first });
        assert!(matches!(l.append_blocking(with(&["y"])), Err(LedgerError::KeyConflict { seq: 0, .. })));
        assert_eq!(l.size(), size);
    };
    // Settled from the recent batches.
    check(&l, 1);
    // Push the key's batch out of the recent ones: now the writer reads the store.
    let per = 1000;
    let groups = RECENT_KEYS / per + 2;
    fill(&l, "f", groups, per);
    let size = 1 + (groups * per) as u64;
    check(&l, size);
    // A fresh look-up finds the entry itself.
    let fresh = l.look_up(b"k").unwrap();
    assert_eq!(fresh.entry().map(|e| e.appended.first_seq), Some(0));
    assert_eq!(l.append_blocking(Append { looked_up: Some(fresh), ..append("k", &["x"]) }).unwrap().first_seq, 0);
    assert_eq!(verify_log(&l, &ring(&[1])).unwrap().records, size);
    // The writer reading an entry that does not decode: an error for that append only,
    // never taken for an unused key.
    l.inner.stores.keys.insert(b"k", [1u8; 50]).unwrap();
    match l.append_blocking(with(&["x"])) {
        Err(LedgerError::Inconsistent { seq, what }) => {
            assert!(seq == size && what.contains("does not decode"), "{what}")
        }
        other => panic!("the append gave {other:?}"),
    }
    assert_eq!((l.size(), l.is_poisoned()), (size, false));
}

/// Within one group commit, a key's second append is the first one's replay.
#[test]
fn a_key_twice_in_one_group_commit_is_appended_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let group = vec![append("d", &["x"]), append("e", &["x"]), append("d", &["x"]), append("d", &["z"])];
    let out: Vec<Result<Appended>> =
        l.reserve_blocking().unwrap().append_group(group).unwrap().into_iter().map(|f| rt.block_on(f)).collect();
    let d = *out[0].as_ref().unwrap();
    assert_eq!((d.first_seq, d.replayed), (0, false));
    assert_eq!(out[1].as_ref().unwrap().first_seq, 1);
    assert_eq!(out[2].as_ref().unwrap(), &Appended { replayed: true, ..d });
    assert!(matches!(out[3], Err(LedgerError::KeyConflict { seq: 0, .. })));
    assert_eq!(l.size(), 2);
}

/// A failed sync fails every append of its batch, whatever the writer first judged: here
/// a conflict judged against an append of the same batch, which was never acknowledged.
/// The log then refuses writes and checkpoints; after a reopen a retry with the same key
/// gets one outcome, and the log verifies.
#[test]
fn a_failed_sync_fails_its_whole_batch_and_stops_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    l.append_blocking(append("a", &["x"])).unwrap();
    l.hold_next_sync().release(true);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let group = vec![append("k", &["x"]), append("k", &["y"]), append("m", &["x"])];
    let out: Vec<Result<Appended>> =
        l.reserve_blocking().unwrap().append_group(group).unwrap().into_iter().map(|f| rt.block_on(f)).collect();
    for (i, o) in out.iter().enumerate() {
        assert!(matches!(o, Err(LedgerError::Storage(m)) if m.contains("sync")), "append {i}: {o:?}");
    }
    assert!(l.is_poisoned());
    assert_eq!(l.size(), 1, "nothing of the failed batch is published");
    assert!(matches!(l.append_blocking(append("b", &["x"])), Err(LedgerError::Poisoned)));
    assert!(l.checkpoint_blocking(1).is_err());
    assert!(l.rotate_key(SigningKey::from_seed(&[2; 32])).is_err());
    drop(l);

    // The batch reached the store before its sync failed, so it may be there after a
    // reopen; either way a retry gets exactly one outcome per key.
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let k = l.append_blocking(append("k", &["x"])).unwrap();
    assert_eq!(k.first_seq, 1);
    assert!(matches!(l.append_blocking(append("k", &["y"])), Err(LedgerError::KeyConflict { seq: 1, .. })));
    let m = l.append_blocking(append("m", &["x"])).unwrap();
    assert_eq!(m.first_seq, 2);
    assert_eq!(l.append_blocking(append("k", &["x"])).unwrap(), Appended { replayed: true, ..k });
    assert_eq!(l.size(), 3);
    l.checkpoint_blocking(2).unwrap();
    let r = verify_log(&l, &ring(&[1])).unwrap();
    assert_eq!(r.records, 3);
}

/// A key rotation queued behind a batch whose sync then fails is refused, not reported
/// done: the log stopped before the new key could sign anything.
#[test]
fn a_rotation_queued_behind_a_failed_sync_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let hold = l.hold_next_sync();
    let pending = l.try_append(append("a", &["x"])).unwrap();
    std::thread::scope(|s| {
        let rotation = s.spawn(|| l.rotate_key(SigningKey::from_seed(&[2; 32])));
        // Time for the rotation to reach the writer, which holds it until the batch
        // before it is durable.
        std::thread::sleep(std::time::Duration::from_millis(100));
        hold.release(true);
        let r = rotation.join().unwrap();
        assert!(matches!(r, Err(LedgerError::Poisoned)), "{r:?}");
    });
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(matches!(rt.block_on(pending), Err(LedgerError::Storage(_))));
    assert!(l.is_poisoned());
}

/// A look-up serves only its own key on the ledger it was made on: a look-up of another
/// key, or one made before the ledger was reopened (whose batch count starts again), is
/// ignored and the key looked up afresh.
#[test]
fn a_look_up_of_another_key_or_opening_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let before = l.look_up(b"k").unwrap();
    let first = l.append_blocking(append("k", &["x"])).unwrap();
    let other = l.look_up(b"other").unwrap();
    let a = Append { looked_up: Some(other), ..append("k", &["x"]) };
    assert_eq!(l.append_blocking(a).unwrap(), Appended { replayed: true, ..first });
    l.close().unwrap();
    drop(l);
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let a = Append { looked_up: Some(before), ..append("k", &["x"]) };
    assert_eq!(l.append_blocking(a).unwrap(), Appended { replayed: true, ..first });
    let a = Append { looked_up: Some(l.look_up(b"k").unwrap()), ..append("k", &["y"]) };
    assert!(matches!(l.append_blocking(a), Err(LedgerError::KeyConflict { seq: 0, .. })));
    assert_eq!(l.size(), 1);
}

/// A ledger of 20 records (keys `k0`..`k19`, one record each) with a checkpoint over all
/// of them.
fn twenty(dir: &Path) -> Ledger {
    let l = Ledger::open(dir, config(1)).unwrap();
    for i in 0..20 {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
    }
    l.checkpoint_blocking(20).unwrap();
    l
}

fn stored(s: &Stores, seq: u64) -> Record {
    Record::decode(seq, &s.records.get(seq.to_be_bytes()).unwrap().unwrap()).unwrap()
}

fn store(s: &Stores, r: &Record) {
    s.records.insert(r.seq.to_be_bytes(), r.encode()).unwrap();
}

/// Every edit of history on disk, as someone with write access to the store would make
/// it: the verification pass of the live store names the first bad record, and opening
/// the store again refuses it (the records are all in the open tile, which opening
/// re-checks) instead of repairing it.
#[test]
fn an_edited_store_fails_verification_and_is_refused_on_open() {
    type Tamper = fn(&Stores);
    // Record 10, stored again after `f`.
    fn edit(s: &Stores, f: fn(&mut Record)) {
        let mut r = stored(s, 10);
        f(&mut r);
        store(s, &r);
    }
    let cases: [(&str, Tamper, u64, &str); 7] = [
        ("event edited", |s| edit(s, |r| r.event = br#"{"e":"e99"}"#.to_vec()), 10, "event hash"),
        (
            "event edited and re-hashed",
            |s| {
                edit(s, |r| {
                    r.event = br#"{"e":"e99"}"#.to_vec();
                    r.event_hash = Sha256::digest(&r.event).into();
                });
            },
            10,
            "chain",
        ),
        ("type edited", |s| edit(s, |r| r.kind = "test_other".into()), 10, "chain"),
        ("version edited", |s| edit(s, |r| r.version = 2), 10, "chain"),
        ("record deleted", |s| s.records.remove(10u64.to_be_bytes()).unwrap(), 10, "gap"),
        (
            "records reordered",
            |s| {
                let (a, b) = (stored(s, 4), stored(s, 5));
                store(s, &Record { seq: 4, ..b });
                store(s, &Record { seq: 5, ..a });
            },
            4,
            "chain",
        ),
        ("last record truncated", |s| s.records.remove(19u64.to_be_bytes()).unwrap(), 19, "missing"),
    ];
    for (what, tamper, seq, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let l = twenty(dir.path());
        assert_eq!(verify_log(&l, &ring(&[1])).unwrap().records, 20);
        tamper(&l.inner.stores);
        l.inner.stores.db.persist(PersistMode::SyncAll).unwrap();
        let f = verify_log(&l, &ring(&[1])).expect_err(what);
        assert_eq!(f.seq, seq, "{what}: {f:?}");
        assert!(f.what.contains(says), "{what}: {f:?}");
        drop(l);
        match Ledger::open(dir.path(), config(1)) {
            Err(LedgerError::Inconsistent { seq: at, .. }) => assert_eq!(at, seq, "{what}"),
            other => panic!("{what}: reopening gave {other:?}"),
        }
    }
}

/// The key index and the head are written in the same batch as the records; a store
/// where they disagree with the log is refused on open.
#[test]
fn a_key_index_or_head_out_of_step_with_the_log_is_refused_on_open() {
    type Tamper = fn(&Stores);
    let cases: [(&str, Tamper, &str); 5] = [
        ("last key's entry deleted", |s| s.keys.remove(b"k19").unwrap(), "no entry"),
        ("last key's entry truncated", |s| s.keys.insert(b"k19", [0u8; 40]).unwrap(), "does not decode"),
        (
            "last key's entry pointing elsewhere",
            |s| {
                let v = s.keys.get(b"k18").unwrap().unwrap();
                s.keys.insert(b"k19", v).unwrap();
            },
            "disagrees",
        ),
        ("head deleted", |s| s.head.remove(HEAD).unwrap(), "head is missing"),
        (
            "head of a shorter log",
            |s| {
                let chain = stored(s, 18).chain;
                s.head.insert(HEAD, Head::encode(19, &chain, b"k18")).unwrap();
            },
            "head names 19 records",
        ),
    ];
    for (what, tamper, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let l = twenty(dir.path());
        tamper(&l.inner.stores);
        l.inner.stores.db.persist(PersistMode::SyncAll).unwrap();
        drop(l);
        match Ledger::open(dir.path(), config(1)) {
            Err(LedgerError::Inconsistent { seq: 19, what: w }) => assert!(w.contains(says), "{what}: {w}"),
            other => panic!("{what}: reopening gave {other:?}"),
        }
    }
    // Untouched, the same store opens and goes on.
    let dir = tempfile::tempdir().unwrap();
    drop(twenty(dir.path()));
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    assert_eq!(l.append_blocking(append("k20", &["e20"])).unwrap().first_seq, 20);
}

/// The index stores an append's outcome without its chain link, which is the link of
/// the append's last record: a replay reads it there, after a reopen too, and an entry
/// written in the older 76-byte form is read with the link it holds. An entry that does
/// not decode, or names a record the log does not have, is an error for the append that
/// uses its key, never taken for an unused key; other appends go on.
#[test]
fn an_index_entry_gives_the_original_outcome_or_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = twenty(dir.path()).append_blocking(append("k20", &["e20", "f20"])).unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    assert_eq!(l.inner.stores.keys.get(b"k20").unwrap().unwrap().len(), 44);
    let again = l.append_blocking(append("k20", &["e20", "f20"])).unwrap();
    assert_eq!(again, Appended { replayed: true, ..first });
    assert_eq!(again.chain, stored(&l.inner.stores, 21).chain);

    // The older form: the same 44 bytes, then a chain link, which is what is answered.
    let s = &l.inner.stores;
    let mut old = s.keys.get(b"k5").unwrap().unwrap().to_vec();
    old.extend_from_slice(&[9; 32]);
    s.keys.insert(b"k5", old).unwrap();
    let e = l.append_blocking(append("k5", &["e5"])).unwrap();
    assert_eq!((e.first_seq, e.count, e.chain, e.replayed), (5, 1, [9; 32], true));

    type Tamper = fn(&Stores);
    fn with_fields(s: &Stores, first_seq: u64, count: u32) {
        let mut v = s.keys.get(b"k5").unwrap().unwrap()[..44].to_vec();
        v[32..40].copy_from_slice(&first_seq.to_be_bytes());
        v[40..44].copy_from_slice(&count.to_be_bytes());
        s.keys.insert(b"k5", v).unwrap();
    }
    let cases: [(&str, Tamper, u64, &str); 5] = [
        ("truncated", |s| s.keys.insert(b"k5", [7u8; 30]).unwrap(), 20, "does not decode"),
        ("of neither length", |s| s.keys.insert(b"k5", [7u8; 60]).unwrap(), 20, "does not decode"),
        ("naming no record", |s| with_fields(s, 5, 0), 20, "does not decode"),
        ("past the last seq", |s| with_fields(s, u64::MAX, 2), 20, "does not decode"),
        ("naming a record past the end", |s| with_fields(s, 99, 1), 99, "names a missing record"),
    ];
    for (what, tamper, seq, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let l = twenty(dir.path());
        tamper(&l.inner.stores);
        for _ in 0..2 {
            match l.append_blocking(append("k5", &["e5"])) {
                Err(LedgerError::Inconsistent { seq: at, what: w }) => {
                    assert_eq!(at, seq, "{what}");
                    assert!(w.contains(says) && w.contains("k5"), "{what}: {w}");
                }
                other => panic!("{what}: the append gave {other:?}"),
            }
        }
        assert_eq!((l.size(), l.is_poisoned()), (20, false), "{what}: nothing was appended");
        assert_eq!(l.append_blocking(append("k21", &["e21"])).unwrap().first_seq, 20, "{what}");
    }
}

/// Backpressure and grouping, made deterministic by holding the first sync: while it is
/// held the writer can build at most two more batches (one waiting for the sync thread,
/// one waiting to hand over), so everything else stays in the queue until it is full.
/// A full queue refuses at once and queues nothing; once the sync passes, everything
/// queued is acknowledged, in at most four group commits.
#[test]
fn a_full_queue_refuses_at_once_and_what_was_queued_commits_in_few_batches() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let hold = l.hold_next_sync();
    let mut pending = Vec::new();
    let mut refused = None;
    for i in 0..4 * MAX_BATCH_RECORDS + QUEUE_CAPACITY {
        match l.try_append(append(&format!("q{i}"), &["x"])) {
            Ok(f) => pending.push(f),
            Err(LedgerError::QueueFull) => {
                refused = Some(i);
                break;
            }
            Err(e) => panic!("append {i}: {e}"),
        }
    }
    let refused = refused.expect("the queue never filled while the sync was held");
    assert!(refused >= QUEUE_CAPACITY, "refused after only {refused} appends");
    assert!(matches!(l.try_reserve(), Err(LedgerError::QueueFull)));
    hold.release(false);
    let mut seqs: Vec<u64> = rt.block_on(async {
        let mut v = Vec::new();
        for f in pending {
            v.push(f.await.unwrap().first_seq);
        }
        v
    });
    seqs.sort_unstable();
    assert_eq!(seqs, (0..refused as u64).collect::<Vec<_>>());
    assert!(l.key_entry(format!("q{refused}").as_bytes()).unwrap().is_none(), "a refused append was queued");
    let batches = l.inner.batches.load(Ordering::Acquire);
    assert!(batches <= 4, "{refused} appends took {batches} group commits");
    // The refused append, retried, goes in after the others.
    assert_eq!(l.append_blocking(append(&format!("q{refused}"), &["x"])).unwrap().first_seq, refused as u64);
    assert_eq!(verify_log(&l, &ring(&[1])).unwrap().records, refused as u64 + 1);
}

/// The self-contained log file: header (format, origin, keys), records, and each
/// checkpoint right after the last record it covers. It verifies on its own, or against
/// pinned keys; every edit is found, with the seq.
#[test]
fn the_self_contained_log_file_verifies_alone_and_every_edit_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), config(1)).unwrap();
    l.checkpoint_blocking(0).unwrap();
    for i in 0..20 {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
        if i % 7 == 6 {
            l.checkpoint_blocking(i).unwrap();
        }
    }
    l.checkpoint_blocking(99).unwrap();
    let jwks = Jwks { keys: vec![SigningKey::from_seed(&[1; 32]).to_jwk(None, None)] };
    let mut buf = Vec::new();
    assert_eq!(export_file(&l, &jwks, &mut buf).unwrap(), 20);
    let text = String::from_utf8(buf).unwrap();
    let orig: Vec<String> = text.lines().map(str::to_owned).collect();
    assert!(orig[0].starts_with(r#"{"format":"settle.log.1","origin":"settle.test/log","keys":{"#), "{}", orig[0]);
    assert!(orig[1].starts_with(r#"{"checkpoint":"settle.test/log"#), "the empty log's checkpoint first: {}", orig[1]);
    assert_eq!(orig.len(), 1 + 20 + 4, "header, records, checkpoints of sizes 0, 7, 14 and 20");
    let check = |ls: &[String], pinned: Option<&KeyRing>| verify_file(ls.join("\n").as_bytes(), pinned, |_| Ok(()));
    let (report, origin) = check(&orig, None).unwrap();
    assert_eq!((report.records, report.checkpoints, origin.as_str()), (20, 4, "settle.test/log"));
    assert_eq!(check(&orig, Some(&ring(&[1]))).unwrap().0.root, verify_log(&l, &ring(&[1])).unwrap().root);
    // Record 10 is line 10 + 1 (header) + 2 (the checkpoints of sizes 0 and 7).
    let line_of = |seq: usize| seq + 1 + 1 + usize::from(seq >= 7) + usize::from(seq >= 14);
    assert!(orig[line_of(10)].starts_with(r#"{"seq":10,"#));
    let fails = |ls: Vec<String>, pinned: Option<&KeyRing>| check(&ls, pinned).unwrap_err();
    let edit = |seq: usize, from: &str, to: &str| {
        let mut ls = orig.clone();
        ls[line_of(seq)] = ls[line_of(seq)].replacen(from, to, 1);
        assert_ne!(ls, orig);
        ls
    };
    let f = fails(edit(10, "e10", "e11"), None);
    assert!(f.seq == 10 && f.what.contains("event hash"), "{f:?}");
    let f = fails(edit(10, r#""type":"test_event""#, r#""type":"test_other""#), None);
    assert!(f.seq == 10 && f.what.contains("chain"), "{f:?}");
    let mut deleted = orig.clone();
    deleted.remove(line_of(10));
    assert_eq!(fails(deleted, None).seq, 10);
    let mut swapped = orig.clone();
    swapped.swap(line_of(4), line_of(5));
    assert!(fails(swapped, None).what.contains("gap or reordering"));
    // The tail cut, its checkpoints with it: what is left is not covered by a checkpoint
    // unless the cut falls on one, and never matches the checkpoints that were cut.
    let mut truncated = orig.clone();
    truncated.truncate(line_of(17));
    assert!(fails(truncated, None).what.contains("not covered"));
    // A checkpoint moved: it stands after a record it does not end on.
    let mut moved = orig.clone();
    let cp = moved.remove(line_of(7) - 1);
    moved.insert(line_of(9), cp);
    assert!(fails(moved, None).what.contains("stands after record"));
    // Everything re-signed with another key, the header's keys swapped for it: the file
    // verifies on its own, but not against the vendor's pinned keys.
    let forger = SigningKey::from_seed(&[9; 32]);
    let mut forged: Vec<String> = orig
        .iter()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line).unwrap().get("checkpoint") {
            Some(note) => {
                let (cp, _) = Checkpoint::parse(note.as_str().unwrap()).unwrap();
                serde_json::json!({"checkpoint": cp.sign(&forger)}).to_string()
            }
            None => line.clone(),
        })
        .collect();
    let header = serde_json::json!({"format": "settle.log.1", "origin": "settle.test/log", "keys": Jwks { keys: vec![forger.to_jwk(None, None)] }});
    forged[0] = header.to_string();
    assert_eq!(check(&forged, None).unwrap().0.records, 20);
    assert!(fails(forged, Some(&ring(&[1]))).what.contains("checkpoint"));
    // Not a log file at all; a header alone, with nothing signed.
    assert!(fails(vec![r#"{"format":"settle.bundle.1"}"#.into()], None).what.contains("header"));
    assert!(fails(vec![orig[0].clone()], None).what.contains("no signed checkpoint"));
}

/// When the log ends on a tile boundary, the tile re-checked on open is the last complete
/// one: an edit of its records' type or version is refused too.
#[test]
fn a_log_ending_on_a_tile_boundary_is_rechecked_on_open() {
    for (seq, tamper) in [(255u64, "kind"), (200, "version")] {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path(), config(1)).unwrap();
        let events: Vec<String> = (0..16).map(|i| format!("e{i}")).collect();
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        for a in 0..TILE_WIDTH / 16 {
            l.append_blocking(append(&format!("a{a}"), &events)).unwrap();
        }
        assert_eq!(l.size(), TILE_WIDTH);
        let mut r = stored(&l.inner.stores, seq);
        if tamper == "kind" {
            r.kind = "test_other".into();
        } else {
            r.version = 2;
        }
        store(&l.inner.stores, &r);
        l.inner.stores.db.persist(PersistMode::SyncAll).unwrap();
        drop(l);
        match Ledger::open(dir.path(), config(1)) {
            Err(LedgerError::Inconsistent { seq: at, what }) => {
                assert_eq!((at, what.as_str()), (seq, "hash chain is broken"))
            }
            other => panic!("{tamper} of record {seq} edited: reopening gave {other:?}"),
        }
    }
}

/// A store written by an earlier version (record format 1) is refused on open with a
/// message that says so, not reported as a broken chain.
#[test]
fn a_store_of_the_first_record_format_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let l = twenty(dir.path());
    let mut v = l.inner.stores.records.get(19u64.to_be_bytes()).unwrap().unwrap().to_vec();
    v[0] = 1;
    l.inner.stores.records.insert(19u64.to_be_bytes(), v).unwrap();
    l.inner.stores.db.persist(PersistMode::SyncAll).unwrap();
    drop(l);
    match Ledger::open(dir.path(), config(1)) {
        Err(LedgerError::Inconsistent { seq: 19, what }) => assert!(what.contains("record format 1"), "{what}"),
        other => panic!("reopening gave {other:?}"),
    }
}

/// No keyspace pins index or filter blocks: fjall would keep them for every table a
/// compaction only moves (each table of the records, keyed by sequence), and the
/// ledger's memory would grow with the log (`keyspace_options`). fjall stores the policy when
/// it creates a keyspace, so it must hold after a reopen too.
#[test]
fn no_keyspace_pins_blocks_for_as_long_as_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let l = Ledger::open(dir.path(), config(1)).unwrap();
        l.append_blocking(append(&format!("k{round}"), &["a"])).unwrap();
        // Every keyspace, named so that a new one cannot be left out.
        let Stores { db: _, records, tiles, upper, keys, checkpoints, projections, aux, head } = &l.inner.stores;
        for ks in [records, tiles, upper, keys, checkpoints, projections, aux, head] {
            // A policy lists levels 0, 1, ...; its last entry holds for the levels below.
            let (index, filter) = (&ks.config.index_block_pinning_policy, &ks.config.filter_block_pinning_policy);
            assert!(
                !index.is_empty() && !filter.is_empty() && !index.contains(&true) && !filter.contains(&true),
                "keyspace {:?} pins blocks: index {:?}, filter {:?} (opening {round})",
                ks.name(),
                &index[..],
                &filter[..]
            );
        }
        l.close().unwrap();
    }
}

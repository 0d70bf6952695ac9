//! Appends, reads and proofs: outcomes, idempotency within and across restarts, refusals,
//! projections, concurrent appenders, groups.

use super::*;

fn append_read_proofs_and_checkpoints(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

fn idempotency_same_and_different_content(store: &Store) {
    let l = store.open(config(1)).unwrap();
    let first = l.append_blocking(append("k", &["x"])).unwrap();
    let again = l.append_blocking(append("k", &["x"])).unwrap();
    assert_eq!(again, Appended { replayed: true, ..first });
    assert_eq!(l.size(), 1);
    assert!(matches!(l.append_blocking(append("k", &["y"])), Err(LedgerError::KeyConflict { seq: 0, .. })));
    l.close().unwrap();
    drop(l);
    // The key outlives a restart.
    let l = store.open(config(1)).unwrap();
    assert_eq!(l.append_blocking(append("k", &["x"])).unwrap(), again);
    assert!(matches!(l.append_blocking(append("k", &["y"])), Err(LedgerError::KeyConflict { .. })));
    assert_eq!(l.size(), 1);
}

fn bad_input_is_refused_and_changes_nothing(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

fn projection_is_stored_with_its_records(store: &Store) {
    let l = store.open(config(1)).unwrap();
    let mut a = append("k", &["x", "y"]);
    a.projection = Some(ProjectionUpdate { name: "p".into(), state: b"state".to_vec() });
    l.append_blocking(a).unwrap();
    assert_eq!(l.projection("p").unwrap(), Some((1, b"state".to_vec())));
}

fn concurrent_appenders_are_all_acknowledged_once(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

/// Within one group commit, a key's second append is the first one's replay.
fn a_key_twice_in_one_group_commit_is_appended_once(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

on_both!(
    append_read_proofs_and_checkpoints,
    idempotency_same_and_different_content,
    bad_input_is_refused_and_changes_nothing,
    projection_is_stored_with_its_records,
    concurrent_appenders_are_all_acknowledged_once,
    a_key_twice_in_one_group_commit_is_appended_once,
);

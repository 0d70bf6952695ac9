//! Group commit and its sync: what waits for durability, a failed sync, and a full queue.

use super::*;

/// The writer writes a batch while the one before it syncs; a checkpoint queued behind
/// appends must wait for their sync: it never names a record a reader cannot yet see.
fn a_checkpoint_behind_appends_names_only_durable_records(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

/// A failed sync fails every append of its batch, whatever the writer first judged: here
/// a conflict judged against an append of the same batch, which was never acknowledged.
/// The log then refuses writes and checkpoints; after a reopen a retry with the same key
/// gets one outcome, and the log verifies.
fn a_failed_sync_fails_its_whole_batch_and_stops_the_log(store: &Store) {
    let l = store.open(config(1)).unwrap();
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
    let l = store.open(config(1)).unwrap();
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
fn a_rotation_queued_behind_a_failed_sync_is_refused(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

/// Backpressure and grouping, made deterministic by holding the first sync: while it is
/// held the writer can build at most two more batches (one waiting for the sync thread,
/// one waiting to hand over), so everything else stays in the queue until it is full.
/// A full queue refuses at once and queues nothing; once the sync passes, everything
/// queued is acknowledged, in at most four group commits.
fn a_full_queue_refuses_at_once_and_what_was_queued_commits_in_few_batches(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

/// A blocking reserve waits for room while the queue moves, and gives up with
/// `QueueFull` once it has waited its bound for a queue that stays full (here, behind a
/// held sync); once the sync passes it gets its place.
fn a_blocking_reserve_gives_up_on_a_queue_that_stays_full(store: &Store) {
    let l = store.open(config(1)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let hold = l.hold_next_sync();
    let mut pending = Vec::new();
    for i in 0..4 * MAX_BATCH_RECORDS + QUEUE_CAPACITY {
        match l.try_append(append(&format!("q{i}"), &["x"])) {
            Ok(f) => pending.push(f),
            Err(LedgerError::QueueFull) => break,
            Err(e) => panic!("append {i}: {e}"),
        }
    }
    let wait = std::time::Duration::from_millis(50);
    let started = std::time::Instant::now();
    assert!(matches!(l.reserve_within(wait), Err(LedgerError::QueueFull)));
    assert!(started.elapsed() >= wait, "gave up after {:?}", started.elapsed());
    hold.release(false);
    let group = l.reserve_within(std::time::Duration::from_secs(60)).unwrap();
    let last = group.append_group(vec![append("last", &["x"])]).unwrap();
    for f in pending {
        rt.block_on(f).unwrap();
    }
    for f in last {
        assert!(!rt.block_on(f).unwrap().replayed);
    }
    assert_eq!(l.append_blocking(append("last", &["x"])).unwrap().first_seq, l.size() - 1);
}

on_both!(
    a_checkpoint_behind_appends_names_only_durable_records,
    a_failed_sync_fails_its_whole_batch_and_stops_the_log,
    a_rotation_queued_behind_a_failed_sync_is_refused,
    a_full_queue_refuses_at_once_and_what_was_queued_commits_in_few_batches,
    a_blocking_reserve_gives_up_on_a_queue_that_stays_full,
);

//! The ledger on PostgreSQL (a throw-away server per test): the same appends give the
//! same records, tree and checkpoints as on fjall; replays, conflicts, proofs, the aux
//! keyspace and reopening work the same; one writer per log, and a writer whose lease
//! was taken over commits nothing more.

use std::sync::Arc;

use super::*;
use crate::backend::throwaway::ThrowawayPostgres;
use crate::backend::{Backend, PostgresBackend};

/// The epoch in the writer row of database `db`.
fn on_postgres_epoch(pg: &ThrowawayPostgres, db: &str) -> i64 {
    pg.psql(db, "SELECT epoch FROM settle_writer").parse().unwrap()
}

fn on_postgres(url: &str) -> Ledger {
    Ledger::open_on(Arc::new(PostgresBackend::open(url).unwrap()), config(1)).unwrap()
}

/// The same appends on both backends: appends of one and several records (one of them
/// larger than an entry), replays and a conflict, two checkpoints.
fn drive(l: &Ledger) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for g in 0..6 {
        let group: Vec<Append> = (0..5)
            .map(|i| {
                let events: Vec<String> = (0..=i).map(|e| format!("g{g}-{i}-{e}")).collect();
                let refs: Vec<&str> = events.iter().map(String::as_str).collect();
                append(&format!("k{g}-{i}"), &refs)
            })
            .collect();
        for f in l.reserve_blocking().unwrap().append_group(group).unwrap() {
            assert!(!rt.block_on(f).unwrap().replayed);
        }
        if g == 2 {
            l.checkpoint_blocking(100).unwrap();
        }
    }
    let pad = "x".repeat(3000);
    let large: Vec<String> = (0..40).map(|i| format!("{i}{pad}")).collect();
    let refs: Vec<&str> = large.iter().map(String::as_str).collect();
    l.append_blocking(append("large", &refs)).unwrap();
    let again = l.append_blocking(append("k0-0", &["g0-0-0"])).unwrap();
    assert!(again.replayed && again.first_seq == 0);
    assert!(matches!(l.append_blocking(append("k0-0", &["other"])), Err(LedgerError::KeyConflict { seq: 0, .. })));
    l.checkpoint_blocking(200).unwrap();
}

#[test]
fn the_same_appends_on_postgres_and_on_fjall_give_the_same_log() {
    let pg = ThrowawayPostgres::start();
    let url = pg.database("same_log");
    let dir = tempfile::tempdir().unwrap();
    let (on_pg, on_fjall) = (on_postgres(&url), Ledger::open(dir.path(), config(1)).unwrap());
    drive(&on_pg);
    drive(&on_fjall);
    let records = |l: &Ledger| l.records(0).map(Result::unwrap).collect::<Vec<Record>>();
    assert_eq!(on_pg.size(), 90 + 40);
    assert_eq!(records(&on_pg), records(&on_fjall));
    let roots = |l: &Ledger| l.latest_checkpoint().unwrap().map(|c| (c.checkpoint.size, c.checkpoint.root));
    assert_eq!(roots(&on_pg), roots(&on_fjall));
    let r = verify_log(&on_pg, &ring(&[1])).unwrap();
    assert_eq!((r.records, r.checkpoints, r.uncovered), (130, 2, 0));
    // Proofs read tiles from the tables.
    let cp = on_pg.latest_checkpoint().unwrap().unwrap().checkpoint;
    let leaves: Vec<Hash> = records(&on_pg).iter().map(|r| merkle::leaf_hash(&r.event)).collect();
    for i in [0u64, 7, 64, 129] {
        let p = on_pg.inclusion_proof(i, 130).unwrap();
        merkle::verify_inclusion(i, 130, &leaves[i as usize], &p, &cp.root).unwrap();
    }
    // The aux keyspace, synced and not.
    on_pg.aux_put(b"sub/1", b"one", true).unwrap();
    on_pg.aux_put(b"sub/2", b"two", false).unwrap();
    on_pg.aux_remove(b"sub/1", true).unwrap();
    assert_eq!(on_pg.aux_scan(b"sub/", 10).unwrap(), vec![(b"sub/2".to_vec(), b"two".to_vec())]);
    // Reopened, it goes on where it stood.
    on_pg.close().unwrap();
    drop(on_pg);
    let again = on_postgres(&url);
    assert_eq!(again.size(), 130);
    assert!(again.append_blocking(append("k0-0", &["g0-0-0"])).unwrap().replayed);
    assert_eq!(again.append_blocking(append("after", &["a"])).unwrap().first_seq, 130);
    assert_eq!(again.aux_get(b"sub/2").unwrap(), Some(b"two".to_vec()));
    assert_eq!(verify_log(&again, &ring(&[1])).unwrap().records, 131);
    // An edit of a stored entry is found, as on fjall.
    again.close().unwrap();
    drop(again);
    let edit = "UPDATE settle_records SET v = overlay(v placing '\\x7a'::bytea from 80 for 1) \
                WHERE k = '\\x0000000000000006'";
    assert_eq!(pg.psql("same_log", edit), "UPDATE 1");
    match Ledger::open_on(Arc::new(PostgresBackend::open(&url).unwrap()), config(1)) {
        Ok(l) => assert!(verify_log(&l, &ring(&[1])).is_err(), "an edited entry verified"),
        Err(e) => assert!(matches!(e, LedgerError::Inconsistent { .. }), "{e:?}"),
    }
}

#[test]
fn one_writer_per_log_and_a_writer_taken_over_commits_nothing() {
    let pg = ThrowawayPostgres::start();
    let url = pg.database("fenced");
    let first = on_postgres(&url);
    first.append_blocking(append("a", &["a"])).unwrap();
    // A second node cannot take the lease while the first holds it.
    match PostgresBackend::open(&url) {
        Err(LedgerError::WriterElsewhere { epoch, .. }) => {
            assert_eq!(epoch, on_postgres_epoch(&pg, "fenced"));
        }
        other => panic!("a second writer opened: {:?}", other.map(|b| b.describe())),
    }
    // Another node took over (as after the first one's session was lost): its epoch is
    // newer. The first one's next sync is refused inside its transaction; nothing of it
    // is acknowledged and the log is poisoned.
    let epoch = on_postgres_epoch(&pg, "fenced");
    assert_eq!(pg.psql("fenced", "UPDATE settle_writer SET epoch = epoch + 1, holder = 'elsewhere'"), "UPDATE 1");
    match first.append_blocking(append("b", &["b"])) {
        Err(LedgerError::Storage(m)) => assert!(m.contains("taken over"), "{m}"),
        other => panic!("a fenced writer appended: {other:?}"),
    }
    assert!(first.is_poisoned());
    assert_eq!(first.size(), 1);
    drop(first);
    let next = PostgresBackend::open(&url).unwrap();
    assert_eq!(next.lease().epoch, epoch + 2);
    let l = Ledger::open_on(Arc::new(next), config(1)).unwrap();
    assert_eq!(l.size(), 1);
    assert_eq!(l.append_blocking(append("b", &["b"])).unwrap().first_seq, 1);
}

/// A log batch never replaces a value already stored in the log's keyspaces: a row
/// planted where the next entry goes makes that commit fail (nothing of it is
/// acknowledged, the log stops) instead of writing over it.
#[test]
fn a_commit_never_replaces_a_stored_entry() {
    let pg = ThrowawayPostgres::start();
    let url = pg.database("guard");
    let l = on_postgres(&url);
    l.append_blocking(append("a", &["a"])).unwrap();
    let plant = "INSERT INTO settle_records VALUES ('\\x0000000000000001', '\\x01')";
    assert_eq!(pg.psql("guard", plant), "INSERT 0 1");
    match l.append_blocking(append("b", &["b"])) {
        Err(LedgerError::Storage(m)) => assert!(m.contains("would replace"), "{m}"),
        other => panic!("the append gave {other:?}"),
    }
    assert!(l.is_poisoned());
    assert_eq!(l.size(), 1);
    assert_eq!(pg.psql("guard", "SELECT encode(v, 'hex') FROM settle_records WHERE k = '\\x0000000000000001'"), "01");
}

/// A follower (a standby's read-only ledger) reads the log another ledger writes, as of
/// its latest signed checkpoint: records, proofs against that checkpoint, and nothing
/// past it; it catches up with the next checkpoint and refuses every write.
#[test]
fn a_follower_reads_the_log_as_of_its_latest_checkpoint() {
    let pg = ThrowawayPostgres::start();
    let url = pg.database("follow");
    let writer = on_postgres(&url);
    let reader = || Arc::new(PostgresBackend::open_reader(&url).unwrap()) as Arc<dyn Backend>;
    let follower = Ledger::open_follower(reader(), &config(1)).unwrap();
    assert_eq!(follower.size(), 0, "no checkpoint yet");
    for i in 0..300 {
        writer.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
    }
    let cp = writer.checkpoint_blocking(1).unwrap().checkpoint;
    writer.append_blocking(append("past", &["past"])).unwrap();
    assert_eq!(follower.follow().unwrap(), 300);
    assert_eq!(follower.size(), 300, "only what the checkpoint covers");
    assert!(follower.record(300).unwrap().is_none());
    let leaves: Vec<Hash> = follower.records(0).map(|r| merkle::leaf_hash(&r.unwrap().event)).collect();
    assert_eq!(merkle::root_of(&leaves), cp.root);
    for i in [0u64, 255, 256, 299] {
        let p = follower.inclusion_proof(i, 300).unwrap();
        merkle::verify_inclusion(i, 300, &leaves[i as usize], &p, &cp.root).unwrap();
    }
    assert!(matches!(follower.append_blocking(append("x", &["x"])), Err(LedgerError::Closed)));
    assert!(follower.checkpoint_blocking(2).is_err());
    writer.checkpoint_blocking(2).unwrap();
    assert_eq!(follower.follow().unwrap(), 301);
    assert_eq!(follower.record(300).unwrap().unwrap().event, br#"{"e":"past"}"#.to_vec());
    assert_eq!(verify_log(&follower, &ring(&[1])).unwrap().records, 301);
}

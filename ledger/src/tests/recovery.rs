//! Opening a store: every edit of history, and every disagreement between records, tree,
//! index and head, is refused; the keyspaces' tuning holds.

use super::*;

/// Every edit of history on disk, as someone with write access to the store would make
/// it: the verification pass of the live store names the first bad record, and opening
/// the store again refuses it (the records are all in the open tile, which opening
/// re-checks) instead of repairing it.
fn an_edited_store_fails_verification_and_is_refused_on_open(store: &Store) {
    type Tamper = fn(&Stores);
    // Record 10, stored again after `f`.
    fn edit(s: &Stores, f: fn(&mut Record)) {
        let mut r = stored(s, 10);
        f(&mut r);
        put_record(s, &r);
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
                put_record(s, &Record { seq: 4, ..b });
                put_record(s, &Record { seq: 5, ..a });
            },
            4,
            "chain",
        ),
        ("last record truncated", |s| s.records.remove(19u64.to_be_bytes()).unwrap(), 19, "missing"),
    ];
    for (what, tamper, seq, says) in cases {
        let fresh = store.fresh();
        let store = &fresh;
        let l = twenty(store);
        assert_eq!(verify_log(&l, &ring(&[1])).unwrap().records, 20);
        tamper(&l.inner.stores);
        refused_at(store, l, seq, says, what);
    }
}

/// The key index and the head are written in the same batch as the records; a store
/// where they disagree with the log is refused on open.
fn a_key_index_or_head_out_of_step_with_the_log_is_refused_on_open(store: &Store) {
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
        let fresh = store.fresh();
        let store = &fresh;
        let l = twenty(store);
        tamper(&l.inner.stores);
        l.inner.stores.backend.sync().unwrap();
        drop(l);
        match store.open(config(1)) {
            Err(LedgerError::Inconsistent { seq: 19, what: w }) => assert!(w.contains(says), "{what}: {w}"),
            other => panic!("{what}: reopening gave {other:?}"),
        }
    }
    // Untouched, the same store opens and goes on.
    drop(twenty(store));
    let l = store.open(config(1)).unwrap();
    assert_eq!(l.append_blocking(append("k20", &["e20"])).unwrap().first_seq, 20);
}

/// When the log ends on a tile boundary, the tile re-checked on open is the last complete
/// one: an edit of its records' type or version is refused too.
fn a_log_ending_on_a_tile_boundary_is_rechecked_on_open(store: &Store) {
    for (seq, tamper) in [(255u64, "kind"), (200, "version")] {
        let fresh = store.fresh();
        let store = &fresh;
        let l = store.open(config(1)).unwrap();
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
        put_record(&l.inner.stores, &r);
        l.inner.stores.backend.sync().unwrap();
        drop(l);
        match store.open(config(1)) {
            Err(LedgerError::Inconsistent { seq: at, what }) => {
                assert_eq!((at, what.as_str()), (seq, "hash chain is broken"))
            }
            other => panic!("{tamper} of record {seq} edited: reopening gave {other:?}"),
        }
    }
}

/// A store written by an earlier version (record format 1) is refused on open with a
/// message that says so, not reported as a broken chain.
fn a_store_of_the_first_record_format_is_refused_with_a_clear_message(store: &Store) {
    let l = twenty(store);
    let mut v = l.inner.stores.records.get(19u64.to_be_bytes()).unwrap().unwrap().to_vec();
    v[0] = 1;
    l.inner.stores.records.insert(19u64.to_be_bytes(), v).unwrap();
    l.inner.stores.backend.sync().unwrap();
    drop(l);
    match store.open(config(1)) {
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
        let fjall = l.inner.stores.backend.as_any().downcast_ref::<crate::backend::FjallBackend>().unwrap();
        for space in crate::backend::Space::ALL {
            let ks = fjall.keyspace(space);
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

on_both!(
    an_edited_store_fails_verification_and_is_refused_on_open,
    a_key_index_or_head_out_of_step_with_the_log_is_refused_on_open,
    a_log_ending_on_a_tile_boundary_is_rechecked_on_open,
    a_store_of_the_first_record_format_is_refused_with_a_clear_message,
);

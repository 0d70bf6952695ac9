//! The writer's settling of keys: look-ups made on the caller's side, and index entries
//! as stored (older forms, and entries that do not decode).

use super::*;

/// The writer settles an append from the look-up made on the caller's side, plus the
/// keys of the batches made durable since; a look-up older than the batches it keeps
/// is read again from the store. Either way a key is never appended twice.
fn a_look_up_made_before_the_key_was_appended_never_appends_it_twice(store: &Store) {
    let l = store.open(config(1)).unwrap();
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

/// A look-up serves only its own key on the ledger it was made on: a look-up of another
/// key, or one made before the ledger was reopened (whose batch count starts again), is
/// ignored and the key looked up afresh.
fn a_look_up_of_another_key_or_opening_is_not_trusted(store: &Store) {
    let l = store.open(config(1)).unwrap();
    let before = l.look_up(b"k").unwrap();
    let first = l.append_blocking(append("k", &["x"])).unwrap();
    let other = l.look_up(b"other").unwrap();
    let a = Append { looked_up: Some(other), ..append("k", &["x"]) };
    assert_eq!(l.append_blocking(a).unwrap(), Appended { replayed: true, ..first });
    l.close().unwrap();
    drop(l);
    let l = store.open(config(1)).unwrap();
    let a = Append { looked_up: Some(before), ..append("k", &["x"]) };
    assert_eq!(l.append_blocking(a).unwrap(), Appended { replayed: true, ..first });
    let a = Append { looked_up: Some(l.look_up(b"k").unwrap()), ..append("k", &["y"]) };
    assert!(matches!(l.append_blocking(a), Err(LedgerError::KeyConflict { seq: 0, .. })));
    assert_eq!(l.size(), 1);
}

/// The index stores an append's outcome without its chain link, which is the link of
/// the append's last record: a replay reads it there, after a reopen too, and an entry
/// written in the older 76-byte form is read with the link it holds. An entry that does
/// not decode, or names a record the log does not have, is an error for the append that
/// uses its key, never taken for an unused key; other appends go on.
fn an_index_entry_gives_the_original_outcome_or_a_clear_error(store: &Store) {
    let first = twenty(store).append_blocking(append("k20", &["e20", "f20"])).unwrap();
    let l = store.open(config(1)).unwrap();
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
        let fresh = store.fresh();
        let store = &fresh;
        let l = twenty(store);
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

on_both!(
    a_look_up_made_before_the_key_was_appended_never_appends_it_twice,
    a_look_up_of_another_key_or_opening_is_not_trusted,
    an_index_entry_gives_the_original_outcome_or_a_clear_error,
);

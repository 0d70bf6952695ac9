//! Stored entries: an append's records under one key (several for a large append), a
//! store of the earlier one-record-a-key format read and extended, and entries edited
//! or overlapping refused.

use super::*;
use crate::entry::{self, ENTRY_BYTES};

/// Every key of the records keyspace, as sequences.
fn entry_keys(s: &Stores) -> Vec<u64> {
    s.records.iter().map(|r| u64::from_be_bytes(r.unwrap().0.as_ref().try_into().unwrap())).collect()
}

/// The events of records `0..n` as `append` writes them, read back one by one and as a
/// stream, each checked.
fn read_back(l: &Ledger, events: &[String]) {
    let all: Vec<Record> = l.records(0).map(Result::unwrap).collect();
    assert_eq!(all.len(), events.len());
    for (i, e) in events.iter().enumerate() {
        let want = format!(r#"{{"e":"{e}"}}"#).into_bytes();
        assert_eq!(all[i].event, want, "streamed record {i}");
        assert_eq!(l.record(i as u64).unwrap().unwrap(), all[i], "record {i}");
        // A stream from any sequence starts there, mid-entry too.
        assert_eq!(l.records(i as u64).next().unwrap().unwrap(), all[i], "stream from {i}");
    }
    assert_eq!(verify_log(l, &ring(&[1])).unwrap().records, events.len() as u64);
}

fn an_append_is_one_entry_and_a_large_one_several(store: &Store) {
    let l = store.open(config(1)).unwrap();
    let small: Vec<String> = (0..5).map(|i| format!("e{i}")).collect();
    let mut events = small.clone();
    let small_refs: Vec<&str> = small.iter().map(String::as_str).collect();
    l.append_blocking(append("small", &small_refs)).unwrap();
    assert_eq!(entry_keys(&l.inner.stores), vec![0], "five records, one key");

    // Records of about 1 KiB: a 200-record append fills more than three entries.
    let pad = "x".repeat(1000);
    let large: Vec<String> = (5..205).map(|i| format!("{i}{pad}")).collect();
    events.extend(large.iter().cloned());
    let refs: Vec<&str> = large.iter().map(String::as_str).collect();
    let a = l.append_blocking(append("large", &refs)).unwrap();
    assert_eq!((a.first_seq, a.count), (5, 200));
    let keys = entry_keys(&l.inner.stores);
    assert!(keys.len() >= 4 && keys[1] == 5, "{keys:?}");
    for w in keys.windows(2).skip(1) {
        let v = l.inner.stores.records.get(w[0].to_be_bytes()).unwrap().unwrap();
        assert!(v.len() <= ENTRY_BYTES + 8, "an entry of {} bytes", v.len());
        assert_eq!(entry::last_link(&v).unwrap().0, w[1] - w[0], "entry {} ends where {} starts", w[0], w[1]);
    }
    read_back(&l, &events);
    // The same after reopening.
    drop(l);
    let l = store.open(config(1)).unwrap();
    read_back(&l, &events);
}

/// A store written before entries (format 2: one record a key) opens, reads, verifies,
/// and grows by entries; its records' chain links are unchanged.
fn a_store_of_one_record_a_key_is_read_and_extended(store: &Store) {
    let l = twenty(store);
    let before: Vec<Record> = l.records(0).map(Result::unwrap).collect();
    for r in &before {
        l.inner.stores.records.insert(r.seq.to_be_bytes(), entry::encode_format_2(r)).unwrap();
    }
    l.inner.stores.backend.sync().unwrap();
    drop(l);
    let l = store.open(config(1)).unwrap();
    assert_eq!(l.records(0).map(Result::unwrap).collect::<Vec<_>>(), before);
    l.append_blocking(append("more", &["e20", "e21", "e22"])).unwrap();
    let events: Vec<String> = (0..23).map(|i| format!("e{i}")).collect();
    read_back(&l, &events);
    assert_eq!(entry_keys(&l.inner.stores), (0..21).collect::<Vec<u64>>());
    drop(l);
    read_back(&store.open(config(1)).unwrap(), &events);
}

/// A record edited inside an entry of several, and an entry stored over the records of
/// the one before it (which a read by sequence alone would take for the truth): the
/// verification pass names the record, and opening the store refuses it.
fn an_edit_inside_an_entry_or_an_overlapping_entry_is_refused(store: &Store) {
    type Tamper = fn(&Stores);
    let cases: [(&str, Tamper, u64, &str); 3] = [
        (
            "third record of an entry edited",
            |s| {
                let mut r = stored(s, 6);
                r.event = br#"{"e":"e99"}"#.to_vec();
                put_record(s, &r);
            },
            6,
            "event hash",
        ),
        (
            "an entry over the last record of the one before",
            |s| {
                let mut r = stored(s, 9);
                r.kind = "test_other".into();
                s.records.insert(9u64.to_be_bytes(), entry::encode(&[r])).unwrap();
            },
            9,
            "overlaps",
        ),
        (
            "an entry over a record in the middle",
            |s| {
                let r = stored(s, 7);
                s.records.insert(7u64.to_be_bytes(), entry::encode(&[r])).unwrap();
            },
            7,
            "overlaps",
        ),
    ];
    for (what, tamper, seq, says) in cases {
        let fresh = store.fresh();
        let store = &fresh;
        let l = store.open(config(1)).unwrap();
        l.append_blocking(append("a", &["e0", "e1", "e2", "e3"])).unwrap();
        l.append_blocking(append("b", &["e4", "e5", "e6", "e7", "e8", "e9"])).unwrap();
        l.checkpoint_blocking(10).unwrap();
        tamper(&l.inner.stores);
        let w = refused_at(store, l, seq, says, what);
        assert!(w.contains(says), "{what}: {w}");
    }
}

on_both!(
    an_append_is_one_entry_and_a_large_one_several,
    a_store_of_one_record_a_key_is_read_and_extended,
    an_edit_inside_an_entry_or_an_overlapping_entry_is_refused,
);

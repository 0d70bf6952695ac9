//! The ledger's unit tests, by concern, and the helpers only they use (those the
//! verification pass's own tests share are in `testing`).

/// For each test body `name(store: &Store)`, a module `name` of two tests: `on_fjall`
/// and `on_postgres` (a throw-away server of its own).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn on_fjall() {
                    super::$name(&crate::testing::Store::fjall());
                }

                #[test]
                fn on_postgres() {
                    super::$name(&crate::testing::Store::postgres());
                }
            }
        )*
    };
}

mod appends;
mod aux;
mod durability;
mod entries;
mod export;
mod idempotency;
mod postgres;
mod recovery;

use std::path::Path;
use std::sync::atomic::Ordering;

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::{Jwks, KeyRing, SigningKey};
use settle_mandates::merkle::{self, Hash};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::store::{HEAD, Head, Stores};
use crate::testing::{Store, append, config, ring};
use crate::tree::TILE_WIDTH;
use crate::{
    Append, Appended, Ledger, LedgerError, MAX_BATCH_RECORDS, MAX_EVENT_BYTES, ProjectionUpdate, QUEUE_CAPACITY,
    RECENT_KEYS, Record, export_bundle_log, export_file, verify_export, verify_file, verify_log,
};

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

/// A ledger of 20 records (keys `k0`..`k19`, one record each) with a checkpoint over all
/// of them.
fn twenty(store: &Store) -> Ledger {
    let l = store.open(config(1)).unwrap();
    for i in 0..20 {
        l.append_blocking(append(&format!("k{i}"), &[&format!("e{i}")])).unwrap();
    }
    l.checkpoint_blocking(20).unwrap();
    l
}

/// After an edit of the store of `l` (`what`): once synced, the verification pass names
/// record `seq` and says `says`, and reopening `store` is refused at `seq`; returns what
/// the refusal said.
fn refused_at(store: &Store, l: Ledger, seq: u64, says: &str, what: &str) -> String {
    l.inner.stores.backend.sync().unwrap();
    let f = verify_log(&l, &ring(&[1])).expect_err(what);
    assert_eq!(f.seq, seq, "{what}: {f:?}");
    assert!(f.what.contains(says), "{what}: {f:?}");
    drop(l);
    match store.open(config(1)) {
        Err(LedgerError::Inconsistent { seq: at, what: w }) => {
            assert_eq!(at, seq, "{what}: {w}");
            w
        }
        other => panic!("{what}: reopening gave {other:?}"),
    }
}

/// Record `seq`, as stored.
fn stored(s: &Stores, seq: u64) -> Record {
    s.record(seq).unwrap()
}

/// Stores `r` in place of the record of its sequence, in the entry that holds it.
fn put_record(s: &Stores, r: &Record) {
    let (first, v) = s.entry_holding(r.seq).unwrap().unwrap();
    let mut records = crate::entry::decode(first, &v).unwrap();
    records[usize::try_from(r.seq - first).unwrap()] = r.clone();
    s.records.insert(first.to_be_bytes(), crate::entry::encode(&records)).unwrap();
}

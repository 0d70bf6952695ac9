//! The permanent idempotency index: what it holds for a key ([`KeyEntry`]: the request's
//! content hash and the append's outcome, [`Appended`]), its stored form and how it is
//! read, a caller's look-up of a key ([`KeyLookup`]), and the keys of the latest group
//! commits the writer keeps in memory ([`RecentKeys`]). The keyspace's options are with
//! the store's ([`index_keyspace_options`](crate::index_keyspace_options)).

use std::collections::{HashMap, VecDeque};

use settle_mandates::merkle::Hash;

use crate::backend::Bytes;
use crate::error::{LedgerError, Result};
use crate::limits::RECENT_KEYS;
use crate::store::Stores;

/// Outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Sequence of the first record.
    pub first_seq: u64,
    /// Number of records.
    pub count: u32,
    /// Chain value after the last record.
    pub chain: Hash,
    /// True when this is the original outcome of an earlier append with the same key.
    pub replayed: bool,
}

/// What the idempotency index holds for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    /// Content hash.
    pub content_hash: Hash,
    /// Outcome.
    pub appended: Appended,
}

impl KeyEntry {
    /// The stored value: content hash, first sequence, count (44 bytes). The chain link
    /// after the append is not stored twice: it is the link of the append's last record.
    /// (Earlier stores kept it as 32 more bytes; those entries are still read.)
    pub(crate) fn encode(&self) -> [u8; 44] {
        let mut v = [0u8; 44];
        v[..32].copy_from_slice(&self.content_hash);
        v[32..40].copy_from_slice(&self.appended.first_seq.to_be_bytes());
        v[40..].copy_from_slice(&self.appended.count.to_be_bytes());
        v
    }
}

impl Stores {
    /// The index entry of `key`, its chain link read from the append's last record.
    ///
    /// That record is readable whenever the entry is, even while the batch holding both
    /// is being written: the writer inserts an append's records before its key, and a
    /// read that sees the key sees what was inserted before it. An entry that does not
    /// decode is reported at `at`, where the log stands; one naming a record the log
    /// lacks, at that record. Both are [`LedgerError::Inconsistent`], never a key unused.
    pub(crate) fn key_entry(&self, key: &[u8], at: u64) -> Result<Option<KeyEntry>> {
        let Some(v) = self.keys.get(key)? else { return Ok(None) };
        let bad = |seq: u64, what: &str| LedgerError::Inconsistent {
            seq,
            what: format!("the key index entry of {:?} {what}", String::from_utf8_lossy(key)),
        };
        let fields = || {
            if !matches!(v.len(), 44 | 76) {
                return None;
            }
            let content_hash: Hash = v.get(..32)?.try_into().ok()?;
            let first_seq = u64::from_be_bytes(v.get(32..40)?.try_into().ok()?);
            let count = u32::from_be_bytes(v.get(40..44)?.try_into().ok()?);
            // Every append has a record; its last one has a seq.
            let last = first_seq.checked_add(u64::from(count.checked_sub(1)?))?;
            Some((content_hash, first_seq, count, last))
        };
        let Some((content_hash, first_seq, count, last)) = fields() else {
            return Err(bad(at, "does not decode"));
        };
        let chain = match v.get(44..76).and_then(|c| Hash::try_from(c).ok()) {
            Some(c) => c,
            None => match self.record(last) {
                Ok(r) => r.chain,
                Err(LedgerError::Inconsistent { what, .. }) if what.contains("missing") => {
                    return Err(bad(last, "names a missing record"));
                }
                Err(LedgerError::Inconsistent { .. }) => {
                    return Err(bad(last, "names a record that does not decode"));
                }
                Err(e) => return Err(e),
            },
        };
        Ok(Some(KeyEntry { content_hash, appended: Appended { first_seq, count, chain, replayed: true } }))
    }
}

/// What the idempotency index held for a key when it was looked up, and how much of the
/// log that look-up could have seen (so the writer can tell what it may have missed).
/// It serves only an append of the same key to the same opened ledger; any other append
/// ignores it and looks its key up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    key: Vec<u8>,
    /// Which opening of which ledger it was made on (`Shared::opened`).
    opened: u64,
    entry: Option<KeyEntry>,
    /// Group commits durable (and readable) before the look-up.
    after: u64,
}

impl KeyLookup {
    pub(crate) fn new(key: &[u8], opened: u64, entry: Option<KeyEntry>, after: u64) -> Self {
        Self { key: key.to_vec(), opened, entry, after }
    }

    /// The key's entry, if the key was used.
    #[must_use]
    pub fn entry(&self) -> Option<&KeyEntry> {
        self.entry.as_ref()
    }

    /// The entry found and the group commits durable before the look-up, if this look-up
    /// serves an append of `key` to opening `opened`.
    pub(crate) fn serving(self, key: &[u8], opened: u64) -> Option<(Option<KeyEntry>, u64)> {
        (self.key == key && self.opened == opened).then_some((self.entry, self.after))
    }
}

/// The keys of the latest group commits, for the writer: an append carries what was
/// found in the store for its key and how many batches were durable before that look-up
/// ([`KeyLookup`]); every later batch is either here or, if it has been dropped from
/// here, the writer reads the store again.
pub(crate) struct RecentKeys {
    pub(crate) map: HashMap<Bytes, KeyEntry>,
    /// Batch number and its keys, oldest first.
    batches: VecDeque<(u64, Vec<Bytes>)>,
    /// The keys of every batch from this number on are in `map`.
    pub(crate) from: u64,
}

impl RecentKeys {
    pub(crate) fn new(next_batch: u64) -> Self {
        Self { map: HashMap::new(), batches: VecDeque::new(), from: next_batch }
    }

    /// Keeps batch `n`'s keys (already in `map`), dropping the oldest batches while
    /// more than [`RECENT_KEYS`] are kept, but only batches already durable (numbered up
    /// to `durable`): the store shows a batch's keys for sure only once its sync is done
    /// (PostgreSQL commits it then), so a batch the writer could not yet read back in the
    /// store stays here, whatever its size.
    pub(crate) fn committed(&mut self, n: u64, keys: Vec<Bytes>, durable: u64) {
        self.batches.push_back((n, keys));
        // Bounded: each turn drops a batch, and the last one is always kept.
        while self.map.len() > RECENT_KEYS
            && self.batches.len() > 1
            && self.batches.front().is_some_and(|b| b.0 <= durable)
        {
            let Some((old, keys)) = self.batches.pop_front() else { break };
            for k in &keys {
                self.map.remove(k);
            }
            self.from = old + 1;
        }
    }
}

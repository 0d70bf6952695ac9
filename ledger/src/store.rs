//! The store as the ledger uses it ([`Stores`]): its keyspaces over a
//! [`Backend`](crate::backend::Backend), each a [`Ks`] handle with the reads and writes
//! the ledger makes; the log's head ([`Head`]), rewritten with every group commit that
//! appends; and reading records out of their stored entries ([`Stores::record`],
//! [`Scan`]).

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use settle_mandates::merkle::Hash;

use crate::backend::{Backend, Batch, Bytes, Durability, Entries, Space, prefix_end};
use crate::entry;
use crate::error::{LedgerError, Result};
use crate::record::Record;

/// One keyspace of the store.
#[derive(Clone)]
pub(crate) struct Ks {
    pub(crate) space: Space,
    backend: Arc<dyn Backend>,
}

/// A bound of a range of keys, as bytes.
fn bytes_bound<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Ks {
    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.backend.get(self.space, key.as_ref())
    }

    /// The entries within `range`, ascending.
    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Entries {
        self.backend.range(self.space, bytes_bound(range.start_bound()), bytes_bound(range.end_bound()))
    }

    /// Every entry, ascending.
    pub(crate) fn iter(&self) -> Entries {
        self.backend.range(self.space, Bound::Unbounded, Bound::Unbounded)
    }

    /// The entries whose key starts with `prefix`, ascending.
    pub(crate) fn prefix(&self, prefix: &[u8]) -> Entries {
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.backend.range(self.space, Bound::Included(prefix), to)
    }

    /// The entry with the greatest key within `..to`.
    pub(crate) fn last_before(&self, to: Bound<&[u8]>) -> Result<Option<(Bytes, Bytes)>> {
        self.backend.last_before(self.space, to)
    }

    pub(crate) fn first_key_value(&self) -> Result<Option<(Bytes, Bytes)>> {
        self.iter().next().transpose()
    }

    pub(crate) fn last_key_value(&self) -> Result<Option<(Bytes, Bytes)>> {
        self.last_before(Bound::Unbounded)
    }

    /// Sets `key` outside the writer's batches: readable at once and surviving the
    /// process, not synced (the caller syncs).
    pub(crate) fn insert(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<()> {
        let mut b = Batch::with_capacity(1);
        b.insert(self.space, key, value);
        self.backend.write(b, Durability::Process)
    }

    /// Removes `key` outside the writer's batches, as [`Ks::insert`] (tests that edit a
    /// store).
    #[cfg(test)]
    pub(crate) fn remove(&self, key: impl Into<Bytes>) -> Result<()> {
        let mut b = Batch::with_capacity(1);
        b.remove(self.space, key);
        self.backend.write(b, Durability::Process)
    }
}

/// The store and its keyspaces.
#[derive(Clone)]
pub(crate) struct Stores {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) records: Ks,
    pub(crate) tiles: Ks,
    pub(crate) upper: Ks,
    pub(crate) keys: Ks,
    pub(crate) checkpoints: Ks,
    pub(crate) projections: Ks,
    pub(crate) aux: Ks,
    /// The log's head ([`Head`]), rewritten in every group commit that appends.
    pub(crate) head: Ks,
}

impl Stores {
    /// The ledger's keyspaces on `backend`.
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        let ks = |space| Ks { space, backend: Arc::clone(&backend) };
        Self {
            records: ks(Space::Records),
            tiles: ks(Space::Tiles),
            upper: ks(Space::Upper),
            keys: ks(Space::Keys),
            checkpoints: ks(Space::Checkpoints),
            projections: ks(Space::Projections),
            aux: ks(Space::Aux),
            head: ks(Space::Head),
            backend,
        }
    }
}

impl Stores {
    /// The stored entry holding record `seq` (the last one stored under a sequence at or
    /// before it): its first sequence and value.
    pub(crate) fn entry_holding(&self, seq: u64) -> Result<Option<(u64, Bytes)>> {
        let key = seq.to_be_bytes();
        let Some((k, v)) = self.records.last_before(Bound::Included(&key))? else { return Ok(None) };
        Ok(Some((seq_of(&k)?, v)))
    }

    /// Record `seq`, which the log must hold.
    pub(crate) fn record(&self, seq: u64) -> Result<Record> {
        let bad = |what: &str| LedgerError::Inconsistent { seq, what: what.into() };
        let (first, v) = self.entry_holding(seq)?.ok_or_else(|| bad("record is missing"))?;
        let i = usize::try_from(seq - first).map_err(|_| bad("record is missing"))?;
        match entry::stored(&v).nth(i) {
            None => Err(bad("record is missing")),
            Some(f) => f.and_then(|f| f.record(seq)).ok_or_else(|| bad("record does not decode")),
        }
    }

    /// The records from `from` up to `end` (not included), entry by entry, with their
    /// sequences checked (no gap, nothing missing) but not their hashes or links.
    pub(crate) fn scan(&self, from: u64, end: u64) -> Result<Scan> {
        let start = if from >= end {
            end
        } else {
            self.entry_holding(from)?
                .map(|(first, _)| first)
                .ok_or(LedgerError::Inconsistent { seq: from, what: "record is missing".into() })?
        };
        Ok(Scan {
            iter: self.records.range(start.to_be_bytes()..end.to_be_bytes()),
            pending: Vec::new().into_iter(),
            next: from,
            stored_next: start,
            end,
            done: false,
        })
    }
}

/// The sequence a key of the records keyspace names.
fn seq_of(k: &[u8]) -> Result<u64> {
    k.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| LedgerError::Inconsistent { seq: 0, what: "bad record key".into() })
}

/// Records read in order out of their entries ([`Stores::scan`]).
pub(crate) struct Scan {
    iter: Entries,
    /// The records of the entry read last that are not yet returned.
    pending: std::vec::IntoIter<Record>,
    /// The next record to return...
    next: u64,
    /// ...and the sequence the next entry must be stored under.
    stored_next: u64,
    end: u64,
    /// Everything is read (or an error ended the scan).
    done: bool,
}

impl Scan {
    /// Ends the scan (after an error).
    pub(crate) fn stop(&mut self) {
        self.done = true;
    }
}

impl Iterator for Scan {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Result<Record>> {
        if self.done {
            return None;
        }
        if self.next >= self.end {
            self.done = true;
            // Past the last record, the range must hold no other entry (one stored over
            // the records of the entry before it would be read by `record` alone).
            return match self.iter.next() {
                None => None,
                Some(Err(e)) => Some(Err(e)),
                Some(Ok((k, _))) => {
                    let at = seq_of(&k).unwrap_or(self.end);
                    Some(Err(LedgerError::Inconsistent { seq: at, what: "an entry overlaps the one before it".into() }))
                }
            };
        }
        let out = loop {
            if let Some(r) = self.pending.next() {
                if r.seq < self.next {
                    continue;
                }
                break Ok(r);
            }
            let bad = |seq: u64, what: &str| Err(LedgerError::Inconsistent { seq, what: what.into() });
            let (k, v) = match self.iter.next() {
                None => break bad(self.next, "record is missing"),
                Some(Err(e)) => break Err(e),
                Some(Ok(kv)) => kv,
            };
            let first = match seq_of(&k) {
                Ok(first) => first,
                Err(e) => break Err(e),
            };
            if first < self.stored_next {
                break bad(first, "an entry overlaps the one before it");
            }
            if first > self.stored_next {
                break bad(self.stored_next.max(self.next), "sequence gap");
            }
            let Some(records) = entry::decode(first, &v) else {
                break bad(first.max(self.next), "record does not decode");
            };
            self.stored_next = first + u64::try_from(records.len()).unwrap_or(u64::MAX);
            self.pending = records.into_iter();
        };
        match &out {
            Ok(_) => self.next += 1,
            Err(_) => self.stop(),
        }
        Some(out)
    }
}

/// Key of the head entry in [`Stores::head`].
pub(crate) const HEAD: &[u8] = b"head";

/// What the last group commit that appended left behind, written in the same atomic
/// batch as its records and keys: the log's size and last chain link, and the last key
/// it indexed. On open the records and the key index must agree with it.
pub(crate) struct Head {
    pub(crate) size: u64,
    pub(crate) chain: Hash,
    pub(crate) last_key: Vec<u8>,
}

impl Head {
    pub(crate) fn encode(size: u64, chain: &Hash, last_key: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 32 + last_key.len());
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(chain);
        v.extend_from_slice(last_key);
        v
    }
    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            size: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            chain: b.get(8..40)?.try_into().ok()?,
            last_key: b.get(40..)?.to_vec(),
        })
    }
}

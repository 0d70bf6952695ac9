//! The fjall store: its keyspaces ([`Stores`]), how they are opened and tuned (the
//! storage engine's threads, memtables, block cache and the index's table size), and the
//! log's head ([`Head`]), rewritten with every group commit that appends; and reading
//! records out of their stored entries ([`Stores::record`], [`Scan`]).

use std::path::Path;
use std::sync::Arc;

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use settle_mandates::merkle::Hash;

use crate::entry;
use crate::error::{LedgerError, Result};
use crate::record::Record;

/// The storage engine's background threads (flushes and compactions). fjall's default
/// is one per core up to four; with two, its first worker hands each compaction request
/// back to the queue while the other is busy and takes it again at once, a busy loop
/// that cost a tenth of the group-commit throughput here (docs/performance.md). With
/// three the loop is rare; one alone can stall writes behind a long compaction.
pub const STORAGE_WORKERS: usize = 3;

/// Memtable size of every keyspace. fjall's default (64 MiB) makes each flush a burst
/// of tens of megabytes, and every group commit's sync waits behind it: with 1,000
/// single appends/s after a large batched load, p99 latency was 118–140 ms with 64 MiB
/// memtables and 10–12 ms with 8 MiB (`settle load`, see docs/performance.md).
pub const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// The storage engine's block cache, through which every read of a table's index,
/// filter and data blocks goes (fjall's default size, named here because the ledger's
/// memory relies on it: see [`keyspace_options`]).
pub const BLOCK_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// Table size of the idempotency index (leveled compaction; fjall's default is 64 MiB).
/// Its keys arrive in any order, so every L0 → L1 compaction rewrites the tables of L1
/// it overlaps, and L1 targets four tables: 16 MiB tables keep it near 64 MiB, not 256.
/// Group commit with 2,048 appenders: +20 % (median of seven alternated runs) with `k{i}` keys,
/// +13 % (median) with time-ordered keys, no change with random ones; 8 MiB tables were
/// no better (docs/performance.md). fjall stores a keyspace's strategy when it creates
/// it: a log created before this setting keeps the default.
pub const INDEX_TABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Options of every keyspace of a new store (the idempotency index adds its compaction
/// strategy): [`MEMTABLE_BYTES`] memtables, and no table pins its index or filter blocks.
/// fjall pins them in the tables written at its first levels, and a table keeps what it
/// was given when a compaction only moves it, which is all that ever happens to the
/// tables of a log keyed by sequence (and to those of an index whose keys arrive in
/// order). So memory grew with the log, about 5 MiB a million records
/// (`cargo bench --bench ledger_memory`); unpinned, those blocks are read through the
/// block cache ([`BLOCK_CACHE_BYTES`]). What stays in memory per table is small: its
/// metadata, and the top-level block of a partitioned index or filter (fjall partitions
/// the tables it writes from the fourth level down). fjall stores a keyspace's options
/// when it creates it: a log created before this setting keeps the default, is back to
/// its baseline at each reopen (tables opened from disk are pinned by the level they are
/// at) and grows again while it runs.
#[must_use]
pub fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .index_block_pinning_policy(PinningPolicy::disabled())
        .filter_block_pinning_policy(PinningPolicy::disabled())
}

/// Options of the idempotency index's keyspace: [`keyspace_options`], compacted in
/// [`INDEX_TABLE_BYTES`] tables.
#[must_use]
pub fn index_keyspace_options() -> KeyspaceCreateOptions {
    keyspace_options()
        .compaction_strategy(Arc::new(fjall::compaction::Leveled::default().with_table_target_size(INDEX_TABLE_BYTES)))
}

/// The store and its keyspaces.
#[derive(Clone)]
pub(crate) struct Stores {
    pub(crate) db: Database,
    pub(crate) records: Keyspace,
    pub(crate) tiles: Keyspace,
    pub(crate) upper: Keyspace,
    pub(crate) keys: Keyspace,
    pub(crate) checkpoints: Keyspace,
    pub(crate) projections: Keyspace,
    pub(crate) aux: Keyspace,
    /// The log's head ([`Head`]), rewritten in every group commit that appends.
    pub(crate) head: Keyspace,
}

impl Stores {
    /// Opens (or creates) the store in `path` with the ledger's tuning and its keyspaces.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let db = Database::builder(path).worker_threads(STORAGE_WORKERS).cache_size(BLOCK_CACHE_BYTES).open()?;
        let ks = |n: &str| db.keyspace(n, keyspace_options);
        Ok(Self {
            records: ks("records")?,
            tiles: ks("tiles")?,
            upper: ks("upper")?,
            keys: db.keyspace("idempotency", index_keyspace_options)?,
            checkpoints: ks("checkpoints")?,
            projections: ks("projections")?,
            aux: ks("aux")?,
            head: ks("head")?,
            db: db.clone(),
        })
    }
}

impl Stores {
    /// The stored entry holding record `seq` (the last one stored under a sequence at or
    /// before it): its first sequence and value.
    pub(crate) fn entry_holding(&self, seq: u64) -> Result<Option<(u64, fjall::Slice)>> {
        let Some(g) = self.records.range(..=seq.to_be_bytes()).next_back() else { return Ok(None) };
        let (k, v) = g.into_inner()?;
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
    iter: fjall::Iter,
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
            return match self.iter.next().map(|g| g.into_inner()) {
                None => None,
                Some(Err(e)) => Some(Err(e.into())),
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
            let (k, v) = match self.iter.next().map(|g| g.into_inner()) {
                None => break bad(self.next, "record is missing"),
                Some(Err(e)) => break Err(e.into()),
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

//! The fjall store: its keyspaces ([`Stores`]), how they are opened and tuned (the
//! storage engine's threads, memtables, block cache and the index's table size), and the
//! log's head ([`Head`]), rewritten with every group commit that appends.

use std::path::Path;
use std::sync::Arc;

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use settle_mandates::merkle::Hash;

use crate::error::Result;

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

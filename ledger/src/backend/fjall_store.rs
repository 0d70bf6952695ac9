//! The embedded backend: the keyspaces in one fjall database, tuned for the ledger (the
//! storage engine's threads, memtables, block cache and the index's table size).

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Backend, Batch, Bytes, Change, Durability, Entries, Space};
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

/// The ledger's keyspaces in one fjall database, synced with `persist`.
pub struct FjallBackend {
    db: Database,
    spaces: [Keyspace; 8],
    persist: PersistMode,
    path: std::path::PathBuf,
}

impl FjallBackend {
    /// Opens (or creates) the database in `path` with the ledger's tuning and its
    /// keyspaces; [`Backend::sync`] persists with `persist` (`SyncAll` but in tests).
    pub fn open(path: &Path, persist: PersistMode) -> Result<Self> {
        let db = Database::builder(path).worker_threads(STORAGE_WORKERS).cache_size(BLOCK_CACHE_BYTES).open()?;
        let open = |s: Space| match s {
            Space::Keys => db.keyspace(s.name(), index_keyspace_options),
            _ => db.keyspace(s.name(), keyspace_options),
        };
        let spaces = [
            open(Space::Records)?,
            open(Space::Tiles)?,
            open(Space::Upper)?,
            open(Space::Keys)?,
            open(Space::Checkpoints)?,
            open(Space::Projections)?,
            open(Space::Aux)?,
            open(Space::Head)?,
        ];
        Ok(Self { db, spaces, persist, path: path.to_owned() })
    }

    /// The fjall keyspace of `space`.
    #[must_use]
    pub fn keyspace(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    /// The fjall database.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.db
    }
}

fn entries(iter: fjall::Iter) -> Entries {
    Box::new(iter.map(|g| g.into_inner().map_err(Into::into)))
}

impl Backend for FjallBackend {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.keyspace(space).get(key)?)
    }

    fn range(&self, space: Space, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries {
        entries(self.keyspace(space).range::<&[u8], _>((from, to)))
    }

    fn last_before(&self, space: Space, to: Bound<&[u8]>) -> Result<Option<(Bytes, Bytes)>> {
        match self.keyspace(space).range::<&[u8], _>((Bound::Unbounded, to)).next_back() {
            None => Ok(None),
            Some(g) => Ok(Some(g.into_inner()?)),
        }
    }

    fn write(&self, batch: Batch, durability: Durability) -> Result<()> {
        let changes = batch.into_changes();
        let mode = match durability {
            Durability::Later => None,
            // Not `None`: fjall would keep the write in its journal's buffer, in this
            // process, until that buffer fills or another write syncs.
            Durability::Process => Some(PersistMode::Buffer),
            Durability::Synced => Some(self.persist),
        };
        let mut b = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), changes.len()).durability(mode);
        for c in changes {
            match c {
                Change::Put(s, k, v) => b.insert(self.keyspace(s), k, v),
                Change::Remove(s, k) => b.remove(self.keyspace(s), k),
            }
        }
        b.commit()?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(self.db.persist(self.persist)?)
    }

    fn describe(&self) -> String {
        format!("fjall:{}", self.path.display())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

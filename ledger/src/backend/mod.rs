//! The storage seam: everything the ledger writes and reads goes through a [`Backend`]:
//! eight keyspaces ([`Space`]) of ordered byte keys and values, read by key, by range
//! and by the last key before a bound, and written in atomic batches ([`Batch`]) that are
//! made durable by a separate sync. The ledger's logic (the chain, the tree, the key
//! index, recovery, verification) is the same on every backend; a backend only stores
//! bytes. [`FjallBackend`] is the embedded one; [`PostgresBackend`] keeps the same
//! keyspaces as tables of a PostgreSQL database, with one fenced writer.

pub(crate) mod fjall_store;
mod postgres;
#[cfg(any(test, feature = "test-postgres"))]
pub mod throwaway;

use std::ops::Bound;

pub use fjall_store::FjallBackend;
pub use postgres::{Lease, MIGRATIONS, PostgresBackend, STANDBY_POLL, shown_url};

use crate::error::Result;

/// The bytes a backend hands back (fjall's shared buffer: a clone is a reference count,
/// not a copy).
pub type Bytes = fjall::Slice;

/// The keyspaces of a ledger's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Stored entries (the records of an append), by the seq of their first record.
    Records,
    /// Complete tiles of the Merkle tree's lower levels, by tile index.
    Tiles,
    /// Nodes above the tiles, by level and index.
    Upper,
    /// The idempotency index, by client key.
    Keys,
    /// Signed checkpoints, by tree size.
    Checkpoints,
    /// Saved read-model state, by name.
    Projections,
    /// Operational state beside the log (webhooks), not hashed.
    Aux,
    /// The log's head, written with every group commit that appends.
    Head,
}

impl Space {
    /// Every keyspace, in the order a store opens them.
    pub const ALL: [Space; 8] = [
        Space::Records,
        Space::Tiles,
        Space::Upper,
        Space::Keys,
        Space::Checkpoints,
        Space::Projections,
        Space::Aux,
        Space::Head,
    ];

    /// Its name in the store (fjall keyspace, PostgreSQL table suffix).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Space::Records => "records",
            Space::Tiles => "tiles",
            Space::Upper => "upper",
            Space::Keys => "idempotency",
            Space::Checkpoints => "checkpoints",
            Space::Projections => "projections",
            Space::Aux => "aux",
            Space::Head => "head",
        }
    }
}

/// How durable a batch is when [`Backend::write`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written but not synced: the next [`Backend::sync`] makes it durable (and, on some
    /// backends, readable).
    Later,
    /// Handed to the operating system: survives the process being killed, not the
    /// machine losing power.
    Process,
    /// Synced before returning.
    Synced,
}

/// One change of a batch.
#[derive(Clone, Debug)]
pub enum Change {
    /// Sets a key's value.
    Put(Space, Bytes, Bytes),
    /// Removes a key.
    Remove(Space, Bytes),
}

/// Changes written atomically: all or none.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    changes: Vec<Change>,
}

impl Batch {
    /// An empty batch with room for `n` changes.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self { changes: Vec::with_capacity(n) }
    }

    /// Sets `key` of `space` to `value`.
    pub fn insert(&mut self, space: Space, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.changes.push(Change::Put(space, key.into(), value.into()));
    }

    /// Removes `key` of `space`.
    pub fn remove(&mut self, space: Space, key: impl Into<Bytes>) {
        self.changes.push(Change::Remove(space, key.into()));
    }

    /// True when it changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Its changes, in order (a later change of a key wins).
    #[must_use]
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Its changes, taken.
    #[must_use]
    pub fn into_changes(self) -> Vec<Change> {
        self.changes
    }
}

/// Entries of a keyspace in ascending key order.
pub type Entries = Box<dyn Iterator<Item = Result<(Bytes, Bytes)>> + Send>;

/// A store of the ledger's keyspaces. Reads see every batch synced, and every batch
/// written [`Durability::Process`] or [`Durability::Synced`]; a batch written
/// [`Durability::Later`] may be visible before its sync (fjall) or only after it
/// (PostgreSQL), and the ledger never reads one before (it publishes a batch to its
/// readers only after the sync that covers it). One writer thread writes the log's
/// batches; other writes (checkpoints, the aux keyspace) may come from any thread.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key` in `space`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>>;

    /// The entries of `space` with keys within `from` and `to`, ascending.
    fn range(&self, space: Space, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries;

    /// The entry of `space` with the greatest key within `..to`.
    fn last_before(&self, space: Space, to: Bound<&[u8]>) -> Result<Option<(Bytes, Bytes)>>;

    /// Writes `batch` atomically, as durable as `durability` says.
    fn write(&self, batch: Batch, durability: Durability) -> Result<()>;

    /// Makes every batch written before it durable.
    fn sync(&self) -> Result<()>;

    /// What it is, for messages (`fjall:/path`, `postgres://host/db`).
    fn describe(&self) -> String;

    /// The backend itself, for tests that look inside it.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The first key after every key that starts with `prefix` (`None`: there is none, the
/// prefix is all 0xff bytes).
#[must_use]
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

//! # settle-ledger
//!
//! The append-only, verifiable event log of settle, on fjall (the only crate that names
//! fjall). What it guarantees:
//!
//! - **Durable before acknowledged.** Appends from any number of callers are grouped by
//!   one writer thread into one atomic fjall batch with one durable sync
//!   ([`fjall::PersistMode::SyncAll`]); a caller's future resolves only after its
//!   batch is on disk. The sync runs on a thread of its own, so the writer builds and
//!   writes batch k+1 while batch k syncs ([`SYNC_QUEUE`]); readers see a batch's
//!   records (and [`Ledger::size`] grows) only after its sync; checkpoints and
//!   projections wait for it too. The queue is bounded ([`QUEUE_CAPACITY`]); a full
//!   queue blocks (or, with [`Ledger::try_append`], refuses) rather than grows.
//! - **Idempotent forever.** Every append carries a client key and a hash of the
//!   request's content. The same key with the same content returns the original result;
//!   with different content it is [`LedgerError::KeyConflict`]. The key index is written
//!   in the same batch as the records.
//! - **One key an append.** An append's records are stored as one entry ([`ENTRY_BYTES`]
//!   at most; a larger append as several), each record with its own chain link and leaf.
//! - **Tamper-evident.** Records form a hash chain, and an RFC 9162 Merkle tree is kept
//!   incrementally (every complete subtree is stored once, in the same batch: the lower
//!   [`TILE_HEIGHT`] levels as tiles of 256 leaves, the levels above node by node). Signed
//!   C2SP checkpoints commit to the tree; an inclusion proof reads one tile, the rest
//!   of the tree is in memory.
//! - **Consistent read models.** A projection's state and the sequence it reflects are
//!   written in the same batch as the records that produced it.
//! - **Fail-stop.** After any storage error the ledger is poisoned and refuses writes
//!   until reopened; on open, disagreement between records, tree and index is reported,
//!   never repaired.
//!
//! ## Layout
//!
//! Each module is one concept, and uses only modules listed before it:
//!
//! - `error`, `limits`, `config`, `record`, `entry`: errors, the limits on input and
//!   queues, opening options, the record and its chain link, and the stored entry (the
//!   records of one append under one key);
//! - `backend` (the storage seam: keyspaces of ordered bytes, atomic batches, a sync;
//!   the fjall backend and its tuning), at the bottom with the formats;
//! - `store` (the keyspaces as the ledger uses them, the head, reading records out of
//!   entries), `tree` (tiles, frontier, node source),
//!   `projection`, `checkpoint` (signed checkpoints as stored);
//! - `index` (the idempotency index, outcomes, look-ups, recent keys), then `append`
//!   (what callers append, its checks, its prepared form);
//! - `shared` (what the threads share with the handles), `recovery` (opening a store);
//! - `sync` (the sync thread), then `writer` (the writer thread and group commit);
//! - `handle` (the [`Ledger`] handle, its methods by concern), then `verify` (the
//!   verification pass, exports and the log file).

// Bottom: no other module of the crate.
pub mod backend;
mod config;
mod entry;
mod error;
mod limits;
mod record;

// Storage, the tree, the idempotency index.
mod checkpoint;
mod index;
mod projection;
mod store;
mod tree;

// Appends, shared state, and the threads.
mod append;
mod recovery;
mod shared;
mod sync;
mod writer;

// Top: the handle and what is built on it.
mod handle;
mod verify;

pub use append::{Append, NewRecord};
pub use backend::fjall_store::{
    BLOCK_CACHE_BYTES, INDEX_TABLE_BYTES, MEMTABLE_BYTES, STORAGE_WORKERS, index_keyspace_options, keyspace_options,
};
pub use backend::{Backend, FjallBackend};
pub use checkpoint::SignedCheckpoint;
pub use config::{Acceptor, LedgerConfig};
pub use entry::ENTRY_BYTES;
pub use error::LedgerError;
pub use handle::{CheckedGroup, Ledger, RecordIter, Reserved};
pub use index::{Appended, KeyEntry, KeyLookup};
pub use limits::{
    MAX_BATCH_RECORDS, MAX_EVENT_BYTES, MAX_KEY_BYTES, MAX_RECORDS_PER_APPEND, PARALLEL_PRECHECK, QUEUE_CAPACITY,
    RECENT_KEYS, RESERVE_WAIT, SYNC_QUEUE,
};
pub use projection::ProjectionUpdate;
pub use record::{ExportLine, GENESIS_CHAIN, Record, chain_link};
#[cfg(any(test, feature = "fault-injection"))]
pub use sync::{SyncHold, inject_ack_before_sync};
pub use tree::TILE_HEIGHT;
pub use verify::{
    Failure, Known, LOG_FILE_FORMAT, MAX_LOG_INTEGER, VerifyReport, export_bundle_log, export_file, integers_only,
    verify_export, verify_export_known, verify_file, verify_file_known, verify_log, verify_log_each,
};

#[cfg(test)]
mod testing;
#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests;

//! The ledger's limits on what it accepts and how much it holds in memory: the size of an
//! event, a key, an append and a group commit, and the queues between the callers, the
//! writer thread and the sync thread. (The storage engine's own tuning, such as
//! [`MEMTABLE_BYTES`](crate::MEMTABLE_BYTES), is beside the keyspaces it tunes; the tile
//! height, [`TILE_HEIGHT`](crate::TILE_HEIGHT), with the tree.)

use std::time::Duration;

/// Largest event accepted, bytes. Bounds one record: what a caller prepares, the writer
/// copies into a batch and an export writes as one line. One MiB leaves room for the
/// largest event the engine derives: it bounds the facts it accepts (their text, their
/// partners, released holds in chunks) so that every event they cause fits.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Most records in one group-commit batch: bounds what the writer thread holds and
/// writes between two syncs, and so how long one sync (and every append waiting on it)
/// takes. It is above [`MAX_RECORDS_PER_APPEND`], so the largest append fits one batch.
pub const MAX_BATCH_RECORDS: usize = 16_384;
/// Most records in one append (one request: an event and what it caused; a settlement
/// of 10,000 mandates derives a record per mandate). One append fits one batch.
///
/// It is three quarters of [`MAX_BATCH_RECORDS`]; the service checks at compile time that
/// its largest settlement (the fact, its booking and one record per mandate) fits.
pub const MAX_RECORDS_PER_APPEND: usize = 12_288;
/// Appends waiting for the writer before callers are held back: places in the writer's
/// queue, one per append or per group of appends ([`Ledger::try_reserve`](crate::Ledger::try_reserve)).
/// Bounds what is prepared but not yet written when callers outpace the disk: beyond it
/// [`Ledger::append`](crate::Ledger::append) waits, and
/// [`Ledger::try_append`](crate::Ledger::try_append) and `try_reserve` refuse
/// ([`LedgerError::QueueFull`](crate::LedgerError::QueueFull)). 8,192 single-record
/// appends are half of [`MAX_BATCH_RECORDS`]: the writer takes a full queue of them off
/// in one group commit.
pub const QUEUE_CAPACITY: usize = 8192;
/// Longest [`Ledger::reserve_blocking`](crate::Ledger::reserve_blocking) waits for room
/// in the queue before it refuses with
/// [`LedgerError::QueueFull`](crate::LedgerError::QueueFull), as
/// [`Ledger::try_reserve`](crate::Ledger::try_reserve) does at once.
///
/// A queue that moves makes room each time the writer takes its next group off it,
/// which it does as soon as it has handed its last batch to the sync thread (within
/// [`SYNC_QUEUE`] + 1 syncs, milliseconds). A queue still full after a minute has a
/// writer that is not moving (a sync that does not return), and a caller that holds a
/// lock while it waits (the service's sequencer) is better told so than held forever.
pub const RESERVE_WAIT: Duration = Duration::from_secs(60);
/// How often [`Ledger::reserve_blocking`](crate::Ledger::reserve_blocking) tries again
/// while the queue is full: short against a sync, so a place freed is taken at once.
pub(crate) const RESERVE_RETRY: Duration = Duration::from_micros(50);
/// Appends in one group from which
/// [`Reserved::append_group`](crate::Reserved::append_group) prepares them in parallel
/// (checks, hashes and storage encoding on all cores). A smaller group is prepared on the
/// caller's thread, where a few appends cost less than handing them to the thread pool;
/// a settlement batch, thousands of records, is prepared on all cores
/// (docs/performance.md, 2026-12-01).
pub const PARALLEL_PRECHECK: usize = 64;
/// Group commits written to the store and waiting for their sync, beyond the one being
/// synced: the writer builds and writes the next batch while the last one syncs.
///
/// This also bounds how long an append waits for its batch. The writer never lingers to
/// grow a batch: a batch is whatever is queued (up to [`MAX_BATCH_RECORDS`]) when the
/// writer is free, and it is free once its last batch is handed to the sync thread,
/// which holds at most `SYNC_QUEUE` batches besides the one it syncs. So an append at the
/// head of the queue is written within `SYNC_QUEUE + 1` syncs, and made durable by the
/// next; one behind more than a batch's worth of records waits one more sync for each
/// batch ahead of it. When the queue ([`QUEUE_CAPACITY`]) is full, `try_append` and
/// `try_reserve` refuse at once ([`LedgerError::QueueFull`](crate::LedgerError::QueueFull);
/// HTTP 429) and `append` waits for room.
pub const SYNC_QUEUE: usize = 1;
/// Longest idempotency key, bytes. Keys are kept forever (one index entry per append)
/// and named in conflict errors: a key is an identifier, not a payload, and 256 bytes
/// holds a UUID, a ULID or a hash in hex with room to spare.
pub const MAX_KEY_BYTES: usize = 256;
/// Keys of the latest group commits the writer keeps in memory (at least the last
/// batch's, whatever its size), so that an append whose key was looked up on the
/// caller's thread before those batches were durable is settled without reading the
/// store again. An append looked up before the oldest batch kept is read again.
///
/// It bounds the writer's memory for keys: at most this many keys of up to
/// [`MAX_KEY_BYTES`] each, beyond those of the last batch. It is as many as one full
/// batch ([`MAX_BATCH_RECORDS`]) of single-record appends.
pub const RECENT_KEYS: usize = 16_384;

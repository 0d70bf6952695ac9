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

mod record;
mod verify;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::SigningKey;
use settle_mandates::merkle::{self, Hash, NodeSource, ProofError};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

pub use record::{ExportLine, GENESIS_CHAIN, Record, chain_link};
pub use verify::{
    Failure, Known, LOG_FILE_FORMAT, MAX_LOG_INTEGER, VerifyReport, export_bundle_log, export_file, integers_only,
    verify_export, verify_export_known, verify_file, verify_file_known, verify_log, verify_log_each,
};

/// Largest event accepted, bytes.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// Most records in one group-commit batch.
pub const MAX_BATCH_RECORDS: usize = 16_384;
/// Most records in one append (one request: an event and what it caused; a settlement
/// of 10,000 mandates derives a record per mandate). One append fits one batch.
pub const MAX_RECORDS_PER_APPEND: usize = 12_288;
/// Appends waiting for the writer before callers are held back.
pub const QUEUE_CAPACITY: usize = 8192;
/// Appends in one group from which [`Reserved::append_group`] prepares them in parallel.
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
/// `try_reserve` refuse at once ([`LedgerError::QueueFull`]; HTTP 429) and `append`
/// waits for room.
pub const SYNC_QUEUE: usize = 1;
/// Longest idempotency key, bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Keys of the latest group commits the writer keeps in memory (at least the last
/// batch's, whatever its size), so that an append whose key was looked up on the
/// caller's thread before those batches were durable is settled without reading the
/// store again. An append looked up before the oldest batch kept is read again.
pub const RECENT_KEYS: usize = 16_384;
/// The storage engine's background threads (flushes and compactions). fjall's default
/// is one per core up to four; with two, its first worker hands each compaction request
/// back to the queue while the other is busy and takes it again at once, a busy loop
/// that cost a tenth of the group-commit throughput here (docs/performance.md). With
/// three the loop is rare; one alone can stall writes behind a long compaction.
pub const STORAGE_WORKERS: usize = 3;

/// Why the ledger refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The store failed; the ledger is now poisoned.
    #[error("storage error: {0}")]
    Storage(String),
    /// A previous storage error poisoned the ledger; reopen it.
    #[error("ledger is poisoned by an earlier storage error; reopen it")]
    Poisoned,
    /// An event over [`MAX_EVENT_BYTES`] or an append over [`MAX_RECORDS_PER_APPEND`].
    #[error("too large: {0}")]
    TooLarge(String),
    /// Event type or version unknown to this log.
    #[error("unknown event type '{kind}' version {version}")]
    UnknownEvent {
        /// Type.
        kind: String,
        /// Version.
        version: u32,
    },
    /// The key was used before with different content.
    #[error("idempotency key '{key}' was already used with different content (first at seq {seq})")]
    KeyConflict {
        /// The key.
        key: String,
        /// Where the original append starts.
        seq: u64,
    },
    /// The append expected another next sequence number.
    #[error("expected next sequence {expected}, log is at {actual}")]
    SequenceMismatch {
        /// What the caller expected.
        expected: u64,
        /// Actual next sequence.
        actual: u64,
    },
    /// The queue is full ([`Ledger::try_append`] only).
    #[error("ingest queue is full")]
    QueueFull,
    /// The ledger is closed.
    #[error("ledger is closed")]
    Closed,
    /// Records, tree and index disagree (found on open or on read).
    #[error("inconsistent log at seq {seq}: {what}")]
    Inconsistent {
        /// Where.
        seq: u64,
        /// What.
        what: String,
    },
    /// A proof was asked for positions outside the log.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Empty append, bad key...
    #[error("invalid append: {0}")]
    Invalid(String),
}

impl From<fjall::Error> for LedgerError {
    fn from(e: fjall::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Event type.
    pub kind: String,
    /// Event schema version.
    pub version: u32,
    /// Canonical event bytes.
    pub event: Vec<u8>,
}

/// Projection state to store with an append.
#[derive(Debug, Clone)]
pub struct ProjectionUpdate {
    /// Projection name.
    pub name: String,
    /// Its serialised state after this append.
    pub state: Vec<u8>,
}

/// One atomic append: records that succeed or fail together under one client key.
#[derive(Debug, Clone)]
pub struct Append {
    /// Client idempotency key (permanent).
    pub key: Vec<u8>,
    /// Hash of the client's request content (same key + other content = conflict).
    pub content_hash: Hash,
    /// The records, in order.
    pub records: Vec<NewRecord>,
    /// Optimistic concurrency: the sequence the first record must get.
    pub expected_seq: Option<u64>,
    /// Read-model state to store atomically with the records.
    pub projection: Option<ProjectionUpdate>,
    /// The caller's own look-up of `key` ([`Ledger::look_up`]), when it made one before
    /// deciding what to append; otherwise the ledger looks the key up itself.
    pub looked_up: Option<KeyLookup>,
}

/// What the idempotency index held for a key when it was looked up, and how much of the
/// log that look-up could have seen (so the writer can tell what it may have missed).
/// It serves only an append of the same key to the same opened ledger; any other append
/// ignores it and looks its key up again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    key: Vec<u8>,
    /// Which opening of which ledger it was made on ([`Shared::opened`]).
    opened: u64,
    entry: Option<KeyEntry>,
    /// Group commits durable (and readable) before the look-up.
    after: u64,
}

impl KeyLookup {
    /// The key's entry, if the key was used.
    #[must_use]
    pub fn entry(&self) -> Option<&KeyEntry> {
        self.entry.as_ref()
    }
}

/// A hold on the ledger's next durable sync (tests only, feature `fault-injection`):
/// see [`Ledger::hold_next_sync`].
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug)]
pub struct SyncHold(std::sync::mpsc::Sender<bool>);

#[cfg(any(test, feature = "fault-injection"))]
impl SyncHold {
    /// Lets the held sync go on: it fails if `fail`, and runs as usual otherwise.
    pub fn release(self, fail: bool) {
        let _ = self.0.send(fail);
    }
}

/// An [`Append`] checked and prepared for the writer.
struct Prepared {
    key: fjall::Slice,
    content_hash: Hash,
    records: Vec<PreparedRecord>,
    expected_seq: Option<u64>,
    projection: Option<ProjectionUpdate>,
    /// The key's entry in the store when it was looked up...
    seen: Option<KeyEntry>,
    /// ...and the group commits durable before that look-up (see [`RecentKeys`]).
    seen_after: u64,
}

/// A record encoded for storage but for its chain link, with its hashes.
struct PreparedRecord {
    /// [`Record::encode`] with a zero chain at `chain_at`, already in the store's own
    /// buffer type, so the writer thread patches the link in place instead of copying.
    value: byteview::ByteView,
    chain_at: usize,
    event_hash: Hash,
    leaf: Hash,
}

impl PreparedRecord {
    fn new(r: &NewRecord) -> Self {
        let event_hash: Hash = Sha256::digest(&r.event).into();
        let mut value = byteview::ByteView::builder(record::encoded_len(&r.kind, &r.event));
        let chain_at = record::encode_into(&mut value, &r.kind, r.version, &event_hash, &GENESIS_CHAIN, &r.event);
        Self { value: value.freeze(), chain_at, event_hash, leaf: merkle::leaf_hash(&r.event) }
    }

    /// Its chain link as record `seq` after `prev`, from the kind and version already
    /// encoded in `value`.
    fn link(&self, prev: &Hash, seq: u64) -> Hash {
        let version_at = self.chain_at - 32 - 4;
        record::link(prev, seq, &self.event_hash, &self.value[version_at..version_at + 4], &self.value[3..version_at])
    }

    /// The storage value, linked after `chain`.
    fn with_chain(mut self, chain: &Hash) -> fjall::Slice {
        {
            let Some(mut v) = self.value.get_mut() else { unreachable!("built in `new` and never shared") };
            v[self.chain_at..self.chain_at + 32].copy_from_slice(chain);
        }
        fjall::Slice::from(self.value)
    }
}

/// The keys of the latest group commits, for the writer: an append carries what was
/// found in the store for its key and how many batches were durable before that look-up
/// ([`KeyLookup`]); every later batch is either here or, if it has been dropped from
/// here, the writer reads the store again.
struct RecentKeys {
    map: HashMap<fjall::Slice, KeyEntry>,
    /// Batch number and its keys, oldest first.
    batches: std::collections::VecDeque<(u64, Vec<fjall::Slice>)>,
    /// The keys of every batch from this number on are in `map`.
    from: u64,
}

impl RecentKeys {
    fn new(next_batch: u64) -> Self {
        Self { map: HashMap::new(), batches: std::collections::VecDeque::new(), from: next_batch }
    }

    /// Keeps batch `n`'s keys (already in `map`), dropping the oldest batches while
    /// more than [`RECENT_KEYS`] are kept.
    fn committed(&mut self, n: u64, keys: Vec<fjall::Slice>) {
        self.batches.push_back((n, keys));
        while self.map.len() > RECENT_KEYS && self.batches.len() > 1 {
            let Some((old, keys)) = self.batches.pop_front() else { break };
            for k in &keys {
                self.map.remove(k);
            }
            self.from = old + 1;
        }
    }
}

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
    fn encode(&self) -> [u8; 44] {
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
    fn key_entry(&self, key: &[u8], at: u64) -> Result<Option<KeyEntry>> {
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
            None => {
                let r = self.records.get(last.to_be_bytes())?.ok_or_else(|| bad(last, "names a missing record"))?;
                Record::chain_of(&r).ok_or_else(|| bad(last, "names a record that does not decode"))?
            }
        };
        Ok(Some(KeyEntry { content_hash, appended: Appended { first_seq, count, chain, replayed: true } }))
    }
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Parsed body.
    pub checkpoint: Checkpoint,
    /// The signed note text.
    pub note: String,
}

/// Which event types and versions the log accepts.
pub type Acceptor = Arc<dyn Fn(&str, u32) -> bool + Send + Sync>;

/// How to open a ledger.
#[derive(Clone)]
pub struct LedgerConfig {
    /// Log identity in checkpoints, e.g. `settle.example/log`.
    pub origin: String,
    /// Key that signs checkpoints (rotatable with [`Ledger::rotate_key`]).
    pub key: SigningKey,
    /// Event types accepted.
    pub accepts: Acceptor,
    /// Durable sync mode per batch.
    pub persist: PersistMode,
}

impl std::fmt::Debug for LedgerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerConfig").field("origin", &self.origin).finish_non_exhaustive()
    }
}

enum Cmd {
    Append(Vec<(Prepared, oneshot::Sender<Result<Appended>>)>),
    Checkpoint(i64, oneshot::Sender<Result<SignedCheckpoint>>),
    Rotate(SigningKey, oneshot::Sender<Result<()>>),
    Projection(ProjectionUpdate, u64, oneshot::Sender<Result<()>>),
}

#[derive(Clone)]
struct Stores {
    db: Database,
    records: Keyspace,
    tiles: Keyspace,
    upper: Keyspace,
    keys: Keyspace,
    checkpoints: Keyspace,
    projections: Keyspace,
    aux: Keyspace,
    /// The log's head ([`Head`]), rewritten in every group commit that appends.
    head: Keyspace,
}

/// Key of the head entry in [`Stores::head`].
const HEAD: &[u8] = b"head";

/// What the last group commit that appended left behind, written in the same atomic
/// batch as its records and keys: the log's size and last chain link, and the last key
/// it indexed. On open the records and the key index must agree with it.
struct Head {
    size: u64,
    chain: Hash,
    last_key: Vec<u8>,
}

impl Head {
    fn encode(size: u64, chain: &Hash, last_key: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + 32 + last_key.len());
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(chain);
        v.extend_from_slice(last_key);
        v
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Self {
            size: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            chain: b.get(8..40)?.try_into().ok()?,
            last_key: b.get(40..)?.to_vec(),
        })
    }
}

/// What the writer thread shares with the handles (no queue sender: dropping the last
/// handle closes the queue, which stops the writer).
struct Shared {
    stores: Stores,
    /// The tree's levels from [`TILE_HEIGHT`] up, in memory; holds only durable nodes.
    nodes: RwLock<HashMap<(u32, u64), Hash>>,
    /// The tile being filled, as far as it is durable.
    open_tile: RwLock<OpenTile>,
    size: AtomicU64,
    /// Group commits made durable since the ledger was opened.
    batches: AtomicU64,
    /// This opening's number, unique in the process: a [`KeyLookup`] counts batches of
    /// one opening only.
    opened: u64,
    poisoned: AtomicBool,
    origin: String,
    accepts: Acceptor,
    /// Tests only: the next durable sync waits for [`SyncHold::release`].
    #[cfg(any(test, feature = "fault-injection"))]
    sync_hold: Mutex<Option<std::sync::mpsc::Receiver<bool>>>,
}

impl Shared {
    /// After a key look-up failed with `e`: a failed read poisons the ledger; an entry
    /// the store returned but that is inconsistent fails only the append using its key
    /// (nothing was written).
    fn look_up_failed(&self, e: &LedgerError) {
        if !matches!(e, LedgerError::Inconsistent { .. }) {
            self.poisoned.store(true, Ordering::Release);
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: RwLock<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::ops::Deref for Inner {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for Inner {
    /// The last handle is gone: close the queue, let the writer drain it, and wait, so
    /// the store is released when the drop returns.
    fn drop(&mut self) {
        self.tx.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = h.join();
        }
    }
}

/// A reserved place in the writer's queue (see [`Ledger::try_reserve`]).
pub struct Reserved {
    permit: mpsc::OwnedPermit<Cmd>,
    ledger: Ledger,
}

impl Reserved {
    /// Enqueues several appends as one unit: they land in the same group commit, in
    /// order, each with its own outcome.
    pub fn append_group(
        self,
        appends: Vec<Append>,
    ) -> Result<Vec<impl std::future::Future<Output = Result<Appended>> + use<>>> {
        // A large group is checked and hashed on all cores (a settlement batch is
        // thousands of records); a small one on the caller's thread.
        let appends = if appends.len() >= PARALLEL_PRECHECK {
            use rayon::prelude::*;
            appends.into_par_iter().map(|a| self.ledger.precheck(a)).collect::<Result<Vec<_>>>()?
        } else {
            appends.into_iter().map(|a| self.ledger.precheck(a)).collect::<Result<Vec<_>>>()?
        };
        let mut items = Vec::with_capacity(appends.len());
        let mut rxs = Vec::with_capacity(appends.len());
        for a in appends {
            let (tx, rx) = oneshot::channel();
            items.push((a, tx));
            rxs.push(rx);
        }
        self.permit.send(Cmd::Append(items));
        Ok(rxs.into_iter().map(|rx| async move { rx.await.map_err(|_| LedgerError::Closed)? }).collect())
    }
}

/// Handle to an open ledger; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({}, size {})", self.inner.origin, self.size())
    }
}

/// Ledgers opened in this process (numbers each opening, see [`KeyLookup`]).
static OPENINGS: AtomicU64 = AtomicU64::new(0);

/// Key of an upper node (level ≥ [`TILE_HEIGHT`]) in the `upper` keyspace: level, then
/// index, so opening the ledger loads them all with one scan.
fn upper_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = u8::try_from(level).unwrap_or(u8::MAX);
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Memtable size of every keyspace. fjall's default (64 MiB) makes each flush a burst
/// of tens of megabytes, and every group commit's sync waits behind it: with 1,000
/// single appends/s after a large batched load, p99 latency was 118–140 ms with 64 MiB
/// memtables and 10–12 ms with 8 MiB (`settle load`, see docs/performance.md).
pub const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// The storage engine's block cache, through which every read of a table's index,
/// filter and data blocks goes (fjall's default size, named here because the ledger's
/// memory relies on it: see [`keyspace_options`]).
pub const BLOCK_CACHE_BYTES: u64 = 32 * 1024 * 1024;

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

/// Table size of the idempotency index (leveled compaction; fjall's default is 64 MiB).
/// Its keys arrive in any order, so every L0 → L1 compaction rewrites the tables of L1
/// it overlaps, and L1 targets four tables: 16 MiB tables keep it near 64 MiB, not 256.
/// Group commit with 2,048 appenders: +20 % (median of seven alternated runs) with `k{i}` keys,
/// +13 % (median) with time-ordered keys, no change with random ones; 8 MiB tables were
/// no better (docs/performance.md). fjall stores a keyspace's strategy when it creates
/// it: a log created before this setting keeps the default.
pub const INDEX_TABLE_BYTES: u64 = 16 * 1024 * 1024;

/// Height of a tile: the tree's lower levels are stored as tiles of 2^TILE_HEIGHT = 256
/// leaves (in the manner of C2SP tlog-tiles), written once, when complete, as one value
/// holding every node of the tile below its root. Appending costs one write per 256
/// records instead of one per node, and the lower part of an inclusion proof is one
/// read. Nodes from this height up (one per 128 records on average, about 2.5 MB for ten
/// million) are stored one by one and all kept in memory.
pub const TILE_HEIGHT: u32 = 8;
/// Leaves of a tile.
const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Nodes a tile stores: its levels 0 to TILE_HEIGHT − 1, lowest first (256 + 128 + … + 2);
/// its root is the upper node above it.
const TILE_NODES: usize = 2 * (1 << TILE_HEIGHT) - 2;

/// Where node (`level` < TILE_HEIGHT, `index`) sits: its tile, and its slot in the tile.
fn tile_slot(level: u32, index: u64) -> (u64, usize) {
    let shift = TILE_HEIGHT - level;
    let offset = TILE_NODES + 2 - (2 << shift);
    (index >> shift, offset + usize::try_from(index & ((1 << shift) - 1)).unwrap_or(usize::MAX))
}

/// The tile being filled: leaves `index`·256 .. + `count`, and every node of it complete.
#[derive(Debug, Clone)]
struct OpenTile {
    index: u64,
    count: u64,
    nodes: Box<[Hash; TILE_NODES]>,
}

impl OpenTile {
    fn new(index: u64) -> Self {
        Self { index, count: 0, nodes: Box::new([[0; 32]; TILE_NODES]) }
    }

    /// Records a node of this tile completed by the frontier (leaves count as level 0).
    fn set(&mut self, level: u32, index: u64, h: Hash) {
        let (_, slot) = tile_slot(level, index);
        self.nodes[slot] = h;
        if level == 0 {
            self.count += 1;
        }
    }

    /// Node (`level`, `index`) of this tile, if complete.
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let (tile, slot) = tile_slot(level, index);
        let complete = ((index + 1) << level) - (tile << TILE_HEIGHT) <= self.count;
        (tile == self.index && complete).then(|| self.nodes[slot])
    }

    fn bytes(&self) -> Vec<u8> {
        self.nodes.concat()
    }
}

/// The tree as stored: tiles in fjall (the last one read is kept), the open tile and the
/// upper levels in memory.
struct TreeSource<'a> {
    tiles: &'a Keyspace,
    upper: &'a HashMap<(u32, u64), Hash>,
    open: &'a OpenTile,
    last_tile: std::cell::RefCell<Option<(u64, fjall::Slice)>>,
}

impl<'a> TreeSource<'a> {
    fn new(tiles: &'a Keyspace, upper: &'a HashMap<(u32, u64), Hash>, open: &'a OpenTile) -> Self {
        Self { tiles, upper, open, last_tile: std::cell::RefCell::new(None) }
    }

    fn missing(level: u32, index: u64, what: &str) -> LedgerError {
        LedgerError::Inconsistent { seq: index << level, what: format!("Merkle node ({level}, {index}) {what}") }
    }
}

impl NodeSource for TreeSource<'_> {
    type Error = LedgerError;
    fn node(&self, level: u32, index: u64) -> Result<Hash> {
        if level >= TILE_HEIGHT {
            return self.upper.get(&(level, index)).copied().ok_or_else(|| Self::missing(level, index, "is missing"));
        }
        if let Some(h) = self.open.node(level, index) {
            return Ok(h);
        }
        let (tile, slot) = tile_slot(level, index);
        let mut last = self.last_tile.borrow_mut();
        if last.as_ref().is_none_or(|(t, _)| *t != tile) {
            let v = self.tiles.get(tile.to_be_bytes())?.ok_or_else(|| Self::missing(level, index, "is missing"))?;
            if v.len() != TILE_NODES * 32 {
                return Err(Self::missing(level, index, "is in a malformed tile"));
            }
            *last = Some((tile, v));
        }
        let v = last.as_ref().map(|(_, v)| v).ok_or_else(|| Self::missing(level, index, "is missing"))?;
        v.get(slot * 32..slot * 32 + 32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Self::missing(level, index, "is in a malformed tile"))
    }
}

/// The right edge of the tree: complete subtrees by decreasing height.
#[derive(Debug, Clone, Default)]
struct Frontier {
    nodes: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    /// Adds a leaf; returns the nodes completed (level ≥ 1) to store, with their index.
    fn push(&mut self, leaf: Hash, mut out: impl FnMut(u32, u64, Hash)) {
        let index = self.size;
        out(0, index, leaf);
        self.nodes.push((0, leaf));
        self.size += 1;
        while self.nodes.len() >= 2 {
            let (lr, r) = self.nodes[self.nodes.len() - 1];
            let (ll, l) = self.nodes[self.nodes.len() - 2];
            if ll != lr {
                break;
            }
            self.nodes.truncate(self.nodes.len() - 2);
            let h = merkle::node_hash(&l, &r);
            let level = ll + 1;
            out(level, index >> level, h);
            self.nodes.push((level, h));
        }
    }

    fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut r)) = it.next() else { return merkle::empty_root() };
        for (_, l) in it {
            r = merkle::node_hash(l, &r);
        }
        r
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `path` and starts its writer thread.
    pub fn open(path: &Path, config: LedgerConfig) -> Result<Self> {
        let db = Database::builder(path).worker_threads(STORAGE_WORKERS).cache_size(BLOCK_CACHE_BYTES).open()?;
        let ks = |n: &str| db.keyspace(n, keyspace_options);
        let stores = Stores {
            records: ks("records")?,
            tiles: ks("tiles")?,
            upper: ks("upper")?,
            keys: db.keyspace("idempotency", index_keyspace_options)?,
            checkpoints: ks("checkpoints")?,
            projections: ks("projections")?,
            aux: ks("aux")?,
            head: ks("head")?,
            db: db.clone(),
        };
        let Recovered { size, chain: last_chain, frontier, upper: nodes, open_tile } = recover(&stores)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            nodes: RwLock::new(nodes),
            open_tile: RwLock::new(open_tile.clone()),
            stores: stores.clone(),
            size: AtomicU64::new(size),
            batches: AtomicU64::new(0),
            opened: OPENINGS.fetch_add(1, Ordering::Relaxed),
            poisoned: AtomicBool::new(false),
            origin: config.origin.clone(),
            accepts: config.accepts.clone(),
            #[cfg(any(test, feature = "fault-injection"))]
            sync_hold: Mutex::new(None),
        });
        let inner =
            Arc::new(Inner { shared: Arc::clone(&shared), tx: RwLock::new(Some(tx)), writer: Mutex::new(None) });
        drop(stores);
        let mut writer = Writer {
            inner: shared,
            rx,
            chain: last_chain,
            frontier,
            open_tile,
            key: config.key,
            persist: config.persist,
            recent: RecentKeys::new(1),
            next_batch: 1,
        };
        let handle = std::thread::Builder::new()
            .name("settle-ledger-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        *inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        Ok(Self { inner })
    }

    /// Log identity used in checkpoints.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Number of durable records.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.inner.size.load(Ordering::Acquire)
    }

    /// True once a storage error stopped the log taking writes (until it is reopened).
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Tests only (feature `fault-injection`): the next sync that makes records durable
    /// waits until the returned hold is released, then fails if told to, as a disk
    /// refusing an fsync would. Dropping the hold lets the sync go on.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn hold_next_sync(&self) -> SyncHold {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.inner.sync_hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
        SyncHold(tx)
    }

    fn sender(&self) -> Result<mpsc::Sender<Cmd>> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(LedgerError::Poisoned);
        }
        self.inner.tx.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or(LedgerError::Closed)
    }

    /// Checks an append and prepares its records on the caller's thread (hashes and
    /// storage encoding; the writer only links the chain), so the one writer thread does
    /// as little per record as it can.
    fn precheck(&self, a: Append) -> Result<Prepared> {
        if a.records.is_empty() {
            return Err(LedgerError::Invalid("an append needs at least one record".into()));
        }
        if a.key.is_empty() || a.key.len() > MAX_KEY_BYTES {
            return Err(LedgerError::Invalid(format!("idempotency key must be 1..={MAX_KEY_BYTES} bytes")));
        }
        if a.records.len() > MAX_RECORDS_PER_APPEND {
            return Err(LedgerError::TooLarge(format!(
                "{} records in one append (max {MAX_RECORDS_PER_APPEND})",
                a.records.len()
            )));
        }
        for r in &a.records {
            if r.event.len() > MAX_EVENT_BYTES {
                return Err(LedgerError::TooLarge(format!("event of {} bytes (max {MAX_EVENT_BYTES})", r.event.len())));
            }
            if !(self.inner.accepts)(&r.kind, r.version) {
                return Err(LedgerError::UnknownEvent { kind: r.kind.clone(), version: r.version });
            }
        }
        let records = a.records.iter().map(PreparedRecord::new).collect();
        // The key is looked up on the caller's thread (here, or by the caller before it
        // decided), so the one writer thread does not have to: what it finds is final
        // (keys are permanent), and what was appended after the look-up the writer
        // knows from its recent batches.
        let (seen, seen_after) = match a.looked_up {
            Some(l) if l.key == a.key && l.opened == self.inner.opened => (l.entry, l.after),
            _ => self.look_up_entry(&a.key)?,
        };
        Ok(Prepared {
            key: fjall::Slice::from(a.key),
            content_hash: a.content_hash,
            records,
            expected_seq: a.expected_seq,
            projection: a.projection,
            seen,
            seen_after,
        })
    }

    /// Appends atomically and durably; resolves after the batch holding it is synced.
    pub async fn append(&self, a: Append) -> Result<Appended> {
        let a = self.precheck(a)?;
        let (tx, rx) = oneshot::channel();
        self.sender()?.send(Cmd::Append(vec![(a, tx)])).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Reserves a place in the queue for one group of appends, refusing at once with
    /// [`LedgerError::QueueFull`] when there is none. Reserve before deciding what to
    /// append, so a full queue never leaves a decision without its append.
    pub fn try_reserve(&self) -> Result<Reserved> {
        let permit = self.sender()?.try_reserve_owned().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LedgerError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => LedgerError::Closed,
        })?;
        Ok(Reserved { permit, ledger: self.clone() })
    }

    /// Reserves a place, waiting for room (from a thread outside the async runtime's
    /// workers).
    pub fn reserve_blocking(&self) -> Result<Reserved> {
        loop {
            match self.try_reserve() {
                Err(LedgerError::QueueFull) => std::thread::sleep(std::time::Duration::from_micros(50)),
                other => return other,
            }
        }
    }

    /// As [`Ledger::append`], but refuses at once with [`LedgerError::QueueFull`] when
    /// the queue is full. Returns a future of the outcome.
    pub fn try_append(&self, a: Append) -> Result<impl std::future::Future<Output = Result<Appended>> + use<>> {
        let a = self.precheck(a)?;
        let (tx, rx) = oneshot::channel();
        self.sender()?.try_send(Cmd::Append(vec![(a, tx)])).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LedgerError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => LedgerError::Closed,
        })?;
        Ok(async move { rx.await.map_err(|_| LedgerError::Closed)? })
    }

    /// Blocking append, for threads outside an async runtime.
    pub fn append_blocking(&self, a: Append) -> Result<Appended> {
        let a = self.precheck(a)?;
        let (tx, rx) = oneshot::channel();
        self.sender()?.blocking_send(Cmd::Append(vec![(a, tx)])).map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    /// Signs a checkpoint of the current tree at log time `time` (returns the latest
    /// one unchanged if the tree has not grown).
    pub fn checkpoint_blocking(&self, time: i64) -> Result<SignedCheckpoint> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.blocking_send(Cmd::Checkpoint(time, tx)).map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    /// Async [`Ledger::checkpoint_blocking`].
    pub async fn checkpoint(&self, time: i64) -> Result<SignedCheckpoint> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.send(Cmd::Checkpoint(time, tx)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Signs future checkpoints with `key` (key rotation). Old checkpoints keep their
    /// signatures; publish the old key with its validity period to keep them verifiable.
    /// Fails, and keeps the old key, once the log has stopped taking writes.
    pub fn rotate_key(&self, key: SigningKey) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.blocking_send(Cmd::Rotate(key, tx)).map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    /// Stores a projection's state as of record `seq`, which must be the last record
    /// (so the state is exactly the log's, never ahead or behind). Ordered with appends.
    pub fn save_projection_blocking(&self, update: ProjectionUpdate, seq: u64) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.blocking_send(Cmd::Projection(update, seq, tx)).map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    /// Async [`Ledger::save_projection_blocking`].
    pub async fn save_projection(&self, update: ProjectionUpdate, seq: u64) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.send(Cmd::Projection(update, seq, tx)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// The record at `seq`.
    pub fn record(&self, seq: u64) -> Result<Option<Record>> {
        if seq >= self.size() {
            return Ok(None);
        }
        let v = self.inner.stores.records.get(seq.to_be_bytes())?;
        match v {
            None => Err(LedgerError::Inconsistent { seq, what: "record is missing".into() }),
            Some(b) => Record::decode(seq, &b)
                .map(Some)
                .ok_or_else(|| LedgerError::Inconsistent { seq, what: "record does not decode".into() }),
        }
    }

    /// Streams records from `from` to the current size, checking each record's hash and
    /// chain link as it goes (memory stays flat).
    pub fn records(&self, from: u64) -> RecordIter {
        RecordIter { check: true, ..self.records_unchecked(from) }
    }

    /// [`Ledger::records`] without the hash and chain checks, for a caller that makes
    /// them itself (the verification pass): each event is hashed once, not twice.
    pub(crate) fn records_unchecked(&self, from: u64) -> RecordIter {
        let end = self.size();
        let from = from.min(end);
        let prev = if from == 0 {
            Ok(GENESIS_CHAIN)
        } else {
            self.record(from - 1).and_then(|r| {
                r.map(|r| r.chain).ok_or(LedgerError::Inconsistent { seq: from - 1, what: "record is missing".into() })
            })
        };
        RecordIter {
            iter: self.inner.stores.records.range(from.to_be_bytes()..end.to_be_bytes()),
            next: from,
            end,
            prev,
            check: false,
        }
    }

    /// The idempotency entry for `key`, if the key was used. The entry may name records
    /// of a group commit that is written but not yet synced: they are acknowledged (and
    /// readable) once [`Ledger::size`] covers them. An entry that does not decode, or
    /// names a record the log lacks, is [`LedgerError::Inconsistent`].
    pub fn key_entry(&self, key: &[u8]) -> Result<Option<KeyEntry>> {
        self.inner.stores.key_entry(key, self.size())
    }

    /// Looks `key` up in the idempotency index; pass the result in
    /// [`Append::looked_up`] to spare the ledger a second look-up.
    pub fn look_up(&self, key: &[u8]) -> Result<KeyLookup> {
        let (entry, after) = self.look_up_entry(key)?;
        Ok(KeyLookup { key: key.to_vec(), opened: self.inner.opened, entry, after })
    }

    /// The key's entry and the group commits durable before the look-up.
    fn look_up_entry(&self, key: &[u8]) -> Result<(Option<KeyEntry>, u64)> {
        // Read the count first: every batch it counts is readable below. The store may
        // also show a batch that is written but not yet synced; an entry found there is
        // only ever answered through the writer, after the sync that covers it.
        let after = self.inner.batches.load(Ordering::Acquire);
        let entry = self.key_entry(key).inspect_err(|e| self.inner.look_up_failed(e))?;
        Ok((entry, after))
    }

    /// The stored projection state and the last sequence it reflects. Projections are
    /// written in the same group commit as the records they reflect, so a projection
    /// read while that commit syncs may name a sequence past [`Ledger::size`] (it is
    /// durable with those records, or lost with them; after a failed sync, until the log
    /// is reopened, it may name records that never became durable).
    pub fn projection(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(v) = self.inner.stores.projections.get(name)? else { return Ok(None) };
        let seq =
            u64::from_be_bytes(v.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
                LedgerError::Inconsistent { seq: 0, what: format!("projection {name} is truncated") }
            })?);
        Ok(Some((seq, v[8..].to_vec())))
    }

    /// Operational state kept beside the log but outside it (webhook subscriptions,
    /// delivery cursors, dead letters): not hashed, not exported, not part of the
    /// verifiable history. `durable` syncs before returning; otherwise the write is handed
    /// to the operating system before returning (one `write`, no sync): it survives the
    /// process being killed, not the machine losing power (the next sync, of any write,
    /// makes it durable).
    pub fn aux_put(&self, key: &[u8], value: &[u8], durable: bool) -> Result<()> {
        self.aux_apply(&[(key, value)], &[], durable)
    }

    /// Removes an [`Ledger::aux_put`] entry (`durable`: synced before returning).
    pub fn aux_remove(&self, key: &[u8], durable: bool) -> Result<()> {
        self.aux_apply(&[], &[key], durable)
    }

    /// Puts and removals of [`Ledger::aux_put`] entries in one atomic batch.
    pub fn aux_apply(&self, puts: &[(&[u8], &[u8])], removes: &[&[u8]], durable: bool) -> Result<()> {
        let s = &self.inner.stores;
        // Not `None`: fjall would keep the write in its journal's buffer, in this process,
        // until that buffer fills or another write syncs, and a killed process would lose it.
        let mode = if durable { PersistMode::SyncAll } else { PersistMode::Buffer };
        let mut batch = s.db.batch().durability(Some(mode));
        for (k, v) in puts {
            batch.insert(&s.aux, *k, *v);
        }
        for k in removes {
            batch.remove(&s.aux, *k);
        }
        batch.commit()?;
        Ok(())
    }

    /// An [`Ledger::aux_put`] entry.
    pub fn aux_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.stores.aux.get(key)?.map(|v| v.to_vec()))
    }

    /// The [`Ledger::aux_put`] entries whose key starts with `prefix`, in key order, at
    /// most `limit`.
    pub fn aux_scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for g in self.inner.stores.aux.prefix(prefix).take(limit) {
            let (k, v) = g.into_inner()?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Root of the first `size` records.
    pub fn root(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        self.with_tree(|t| merkle::root(t, size))
    }

    /// Runs `f` on the durable tree (tiles, the open tile, the upper levels).
    fn with_tree<R>(&self, f: impl FnOnce(&TreeSource<'_>) -> R) -> R {
        let upper = self.inner.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = self.inner.open_tile.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&TreeSource::new(&self.inner.stores.tiles, &upper, &open))
    }

    fn check_size(&self, size: u64) -> Result<()> {
        let n = self.size();
        if size > n {
            return Err(ProofError::OutOfRange { index: size, size: n }.into());
        }
        Ok(())
    }

    /// Inclusion proof of record `index` in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        Ok(self.with_tree(|t| merkle::inclusion_proof(t, index, size))??)
    }

    /// Consistency proof between tree sizes `old` and `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_size(new)?;
        Ok(self.with_tree(|t| merkle::consistency_proof(t, old, new))??)
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        match self.inner.stores.checkpoints.last_key_value() {
            None => Ok(None),
            Some(g) => decode_checkpoint(&g.value()?).map(Some),
        }
    }

    /// The checkpoint of exactly `size` records, if one was signed.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>> {
        match self.inner.stores.checkpoints.get(size.to_be_bytes())? {
            None => Ok(None),
            Some(v) => decode_checkpoint(&v).map(Some),
        }
    }

    /// The first checkpoint covering record `seq` (size > seq).
    pub fn checkpoint_covering(&self, seq: u64) -> Result<Option<SignedCheckpoint>> {
        match self.inner.stores.checkpoints.range((seq + 1).to_be_bytes()..).next() {
            None => Ok(None),
            Some(g) => decode_checkpoint(&g.value()?).map(Some),
        }
    }

    /// Every signed checkpoint, by increasing size.
    pub fn checkpoints(&self) -> impl Iterator<Item = Result<SignedCheckpoint>> + '_ {
        self.inner.stores.checkpoints.iter().map(|g| decode_checkpoint(&g.value()?))
    }

    /// Stops the writer after the queue drains and syncs. Further appends fail.
    pub fn close(&self) -> Result<()> {
        self.inner.tx.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let h = self.inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = h {
            let _ = h.join();
        }
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(LedgerError::Poisoned);
        }
        self.inner.stores.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

fn decode_checkpoint(v: &[u8]) -> Result<SignedCheckpoint> {
    let note = std::str::from_utf8(v)
        .map_err(|_| LedgerError::Inconsistent { seq: 0, what: "checkpoint is not UTF-8".into() })?
        .to_owned();
    let (checkpoint, _) = Checkpoint::parse(&note)
        .map_err(|e| LedgerError::Inconsistent { seq: 0, what: format!("stored checkpoint: {e}") })?;
    Ok(SignedCheckpoint { checkpoint, note })
}

/// Streaming, verifying iterator over records.
pub struct RecordIter {
    iter: fjall::Iter,
    next: u64,
    end: u64,
    prev: Result<Hash>,
    /// Check each record's event hash and chain link.
    check: bool,
}

impl Iterator for RecordIter {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Result<Record>> {
        let prev = match &self.prev {
            Ok(p) => *p,
            Err(e) => {
                let e = e.clone();
                self.next = self.end;
                self.prev = Ok(GENESIS_CHAIN);
                return Some(Err(e));
            }
        };
        if self.next >= self.end {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        let fail = |what: &str| Some(Err(LedgerError::Inconsistent { seq, what: what.to_owned() }));
        let (k, v) = match self.iter.next() {
            None => return fail("record is missing"),
            Some(g) => match g.into_inner() {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            },
        };
        if k.as_ref() != seq.to_be_bytes() {
            return fail("sequence gap");
        }
        let Some(r) = Record::decode(seq, &v) else { return fail("record does not decode") };
        if !self.check {
            return Some(Ok(r));
        }
        match r.check_link(&prev) {
            Ok(link) => self.prev = Ok(link),
            Err(what) => return fail(what),
        }
        Some(Ok(r))
    }
}

/// What opening the store finds: the log's size and last chain link, and the tree.
struct Recovered {
    size: u64,
    chain: Hash,
    frontier: Frontier,
    upper: HashMap<(u32, u64), Hash>,
    open_tile: OpenTile,
}

/// Reads the tail of the log, the stored tree and the key index, checking they agree:
/// the records of the tile holding the last record must hash and chain on from the
/// record before them, and the open tile is rebuilt from those after the last complete
/// tile; the last complete tile must end
/// where the upper levels say; nothing of the tree may lie beyond the log; the head
/// written with the last group commit must name the log's size and last link, and the
/// key index the same for its last key; the latest checkpoint's root must be the tree's.
/// Anything else is reported, never repaired. (The whole chain is re-checked by the
/// verification pass, [`verify_log`].)
fn recover(s: &Stores) -> Result<Recovered> {
    let inconsistent = |seq: u64, what: &str| LedgerError::Inconsistent { seq, what: what.into() };
    let mut upper = HashMap::new();
    for g in s.upper.iter() {
        let (k, v) = g.into_inner()?;
        let (Some(&level), Some(ix), Ok(h)) = (k.first(), k.get(1..9), <[u8; 32]>::try_from(v.as_ref())) else {
            return Err(inconsistent(0, "a stored Merkle node is malformed"));
        };
        let index = u64::from_be_bytes(ix.try_into().unwrap_or([0; 8]));
        upper.insert((u32::from(level), index), h);
    }
    let Some(last) = s.records.last_key_value() else {
        if s.tiles.first_key_value().is_some()
            || !upper.is_empty()
            || s.keys.first_key_value().is_some()
            || s.head.get(HEAD)?.is_some()
        {
            return Err(inconsistent(0, "no records, but the tree, the key index or the head is not empty"));
        }
        return Ok(Recovered {
            size: 0,
            chain: GENESIS_CHAIN,
            frontier: Frontier::default(),
            upper,
            open_tile: OpenTile::new(0),
        });
    };
    let (k, v) = last.into_inner()?;
    let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| inconsistent(0, "bad record key"))?);
    let size = seq + 1;
    if v.first() == Some(&1) {
        return Err(inconsistent(
            seq,
            "the store was written by an earlier settle (record format 1, whose chain links do not cover \
             the type and version); this version cannot open it: export it with that version",
        ));
    }
    let rec = Record::decode(seq, &v).ok_or_else(|| inconsistent(seq, "last record does not decode"))?;
    // The open tile, from the records after the last complete tile. The records of the
    // tile holding the last record (the open one, or the last complete one when the log
    // ends on a tile boundary) are re-hashed and re-linked from the record before them.
    let tile = size >> TILE_HEIGHT;
    let mut open_tile = OpenTile::new(tile);
    let mut scratch = Frontier { nodes: Vec::new(), size: tile << TILE_HEIGHT };
    let check_from = (seq >> TILE_HEIGHT) << TILE_HEIGHT;
    let mut chain = match check_from.checked_sub(1) {
        None => GENESIS_CHAIN,
        Some(before) => {
            let v = s.records.get(before.to_be_bytes())?.ok_or_else(|| inconsistent(before, "record is missing"))?;
            Record::chain_of(&v).ok_or_else(|| inconsistent(before, "record does not decode"))?
        }
    };
    for (next, g) in (check_from..).zip(s.records.range(check_from.to_be_bytes()..)) {
        let (k, v) = g.into_inner()?;
        let n = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| inconsistent(0, "bad record key"))?);
        if n != next {
            return Err(inconsistent(next, "record is missing"));
        }
        let r = Record::decode(n, &v).ok_or_else(|| inconsistent(n, "record does not decode"))?;
        chain = r.check_link(&chain).map_err(|what| inconsistent(n, what))?;
        if n >= tile << TILE_HEIGHT {
            scratch.push(merkle::leaf_hash(&r.event), |level, index, h| open_tile.set(level, index, h));
        }
    }
    check_head(s, size, &chain)?;
    if s.tiles.get(tile.to_be_bytes())?.is_some() || upper.keys().any(|&(l, i)| ((i + 1) << l) > size) {
        return Err(inconsistent(size, "tree has leaves beyond the last record"));
    }
    let src = TreeSource::new(&s.tiles, &upper, &open_tile);
    // The last complete tile must be the one the upper levels were built on.
    if tile > 0 {
        let below =
            merkle::node_hash(&src.node(TILE_HEIGHT - 1, 2 * tile - 2)?, &src.node(TILE_HEIGHT - 1, 2 * tile - 1)?);
        if below != src.node(TILE_HEIGHT, tile - 1)? {
            return Err(inconsistent(
                (tile - 1) << TILE_HEIGHT,
                "the last complete tile differs from the tree above it",
            ));
        }
        if size == tile << TILE_HEIGHT && src.node(0, seq)? != merkle::leaf_hash(&rec.event) {
            return Err(inconsistent(seq, "last record's leaf hash differs from the tree"));
        }
    }
    // The frontier: the complete subtrees of `size`, largest first.
    let mut nodes = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1 << level) != 0 {
            nodes.push((level, src.node(level, start >> level)?));
            start += 1 << level;
        }
    }
    if let Some(g) = s.checkpoints.last_key_value() {
        let cp = decode_checkpoint(&g.value()?)?;
        if cp.checkpoint.size > size {
            return Err(LedgerError::Inconsistent {
                seq: size,
                what: format!("a checkpoint covers {} records but the log has {size}", cp.checkpoint.size),
            });
        }
        if merkle::root(&src, cp.checkpoint.size)? != cp.checkpoint.root {
            return Err(inconsistent(cp.checkpoint.size, "latest checkpoint root differs from the tree"));
        }
    }
    drop(src);
    Ok(Recovered { size, chain: rec.chain, frontier: Frontier { nodes, size }, upper, open_tile })
}

/// The head and the key index must agree with a log of `size` records ending in
/// `chain`.
fn check_head(s: &Stores, size: u64, chain: &Hash) -> Result<()> {
    let at = size - 1;
    let inconsistent = |what: &str| LedgerError::Inconsistent { seq: at, what: what.into() };
    let head = s.head.get(HEAD)?.ok_or_else(|| inconsistent("the log's head is missing"))?;
    let head = Head::decode(&head).ok_or_else(|| inconsistent("the log's head does not decode"))?;
    if head.size != size {
        return Err(LedgerError::Inconsistent {
            seq: head.size.min(size),
            what: format!("the head names {} records, the log has {size}", head.size),
        });
    }
    if head.chain != *chain {
        return Err(inconsistent("the head names another last chain link than the log's"));
    }
    let entry = s.key_entry(&head.last_key, at)?;
    match entry {
        Some(e) if e.appended.first_seq + u64::from(e.appended.count) == size && e.appended.chain == *chain => Ok(()),
        Some(_) => Err(inconsistent("the key index disagrees with the log's last append")),
        None => Err(inconsistent("the key index has no entry for the log's last append")),
    }
}

struct Writer {
    inner: Arc<Shared>,
    rx: mpsc::Receiver<Cmd>,
    chain: Hash,
    frontier: Frontier,
    /// The tile being filled, including what is not durable yet.
    open_tile: OpenTile,
    key: SigningKey,
    persist: PersistMode,
    recent: RecentKeys,
    /// Number of the next group commit (the first is 1).
    next_batch: u64,
}

type Reply = (oneshot::Sender<Result<Appended>>, Result<Appended>);

/// A group commit written to the store but not yet synced, on its way to the syncer.
struct Committed {
    /// Its number, or `None` when it wrote nothing (its replies only repeat or refuse,
    /// and wait for the batches before them).
    n: Option<u64>,
    /// The log's size, open tile and new upper nodes once it is durable.
    size: u64,
    open_tile: Option<OpenTile>,
    new_nodes: Vec<((u32, u64), Hash)>,
    replies: Vec<Reply>,
}

/// What the writer hands to the syncer thread.
enum ToSync {
    Batch(Committed),
    /// Answered once everything before it is durable and readable.
    Barrier(std::sync::mpsc::SyncSender<()>),
}

/// One durable sync of everything written to the store (in tests, held and failed on
/// request: see [`Ledger::hold_next_sync`]).
fn sync(shared: &Shared, persist: PersistMode) -> Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    {
        let hold = shared.sync_hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if hold.is_some_and(|h| h.recv() == Ok(true)) {
            return Err(LedgerError::Storage("injected: the sync failed".into()));
        }
    }
    shared.stores.db.persist(persist).map_err(LedgerError::from)
}

/// The syncer: makes the writer's group commits durable, one sync for all it finds
/// waiting, then publishes them to readers and acknowledges their appends, while the
/// writer builds the next batch. It never publishes or acknowledges a batch before the
/// sync that covers it has returned.
fn sync_loop(shared: &Shared, persist: PersistMode, rx: &std::sync::mpsc::Receiver<ToSync>) {
    let mut msgs = Vec::new();
    while let Ok(first) = rx.recv() {
        msgs.push(first);
        msgs.extend(rx.try_iter());
        let wrote = msgs.iter().any(|m| matches!(m, ToSync::Batch(Committed { n: Some(_), .. })));
        let synced = if shared.poisoned.load(Ordering::Acquire) {
            Err(LedgerError::Poisoned)
        } else if wrote {
            sync(shared, persist)
        } else {
            Ok(())
        };
        if synced.is_err() {
            shared.poisoned.store(true, Ordering::Release);
        }
        for m in msgs.drain(..) {
            match m {
                ToSync::Batch(b) => {
                    if let (Ok(()), Some(n)) = (&synced, b.n) {
                        // Durable now: readers may see the new nodes (before the new size).
                        if let Some(t) = &b.open_tile {
                            shared.open_tile.write().unwrap_or_else(std::sync::PoisonError::into_inner).clone_from(t);
                        }
                        if !b.new_nodes.is_empty() {
                            let mut m = shared.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                            m.extend(b.new_nodes);
                        }
                        shared.size.store(b.size, Ordering::Release);
                        // Its keys were readable in the store before it was durable; a
                        // caller that reads this count and then finds no key knows which
                        // batches its look-up may have missed (see `RecentKeys`).
                        shared.batches.store(n, Ordering::Release);
                    }
                    // A failed sync wins over every answer of its batches: a conflict or
                    // a sequence mismatch may have been judged against an earlier batch
                    // that never became durable.
                    for (reply, out) in b.replies {
                        let _ = reply.send(synced.clone().and(out));
                    }
                }
                ToSync::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }
}

impl Writer {
    fn run(&mut self) {
        let shared = Arc::clone(&self.inner);
        let persist = self.persist;
        let (to_sync, rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        std::thread::scope(|scope| {
            let syncer = std::thread::Builder::new()
                .name("settle-ledger-sync".into())
                .spawn_scoped(scope, move || sync_loop(&shared, persist, &rx));
            if let Err(e) = syncer {
                self.poison();
                let err = LedgerError::Storage(format!("cannot start the sync thread: {e}"));
                while let Some(c) = self.rx.blocking_recv() {
                    self.fail_rest(vec![c], &err);
                }
                return;
            }
            self.collect(&to_sync);
            // Dropping the sender stops the syncer once it has drained; the scope waits.
            drop(to_sync);
        });
    }

    /// Takes commands off the queue in groups of up to [`MAX_BATCH_RECORDS`] records.
    fn collect(&mut self, to_sync: &std::sync::mpsc::SyncSender<ToSync>) {
        let mut cmds = Vec::with_capacity(1024);
        while let Some(first) = self.rx.blocking_recv() {
            cmds.push(first);
            let mut n_records = 0usize;
            while n_records < MAX_BATCH_RECORDS {
                match self.rx.try_recv() {
                    Ok(c) => {
                        if let Cmd::Append(v) = &c {
                            n_records += v.iter().map(|(a, _)| a.records.len()).sum::<usize>();
                        }
                        cmds.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut cmds, to_sync);
        }
    }

    /// Waits until every batch handed to the syncer is durable and published.
    fn barrier(&self, to_sync: &std::sync::mpsc::SyncSender<ToSync>) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        to_sync.send(ToSync::Barrier(tx)).map_err(|_| LedgerError::Closed)?;
        rx.recv().map_err(|_| LedgerError::Closed)?;
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(LedgerError::Poisoned);
        }
        Ok(())
    }

    fn poison(&self) {
        self.inner.poisoned.store(true, Ordering::Release);
    }

    fn process(&mut self, cmds: &mut Vec<Cmd>, to_sync: &std::sync::mpsc::SyncSender<ToSync>) {
        let s = self.inner.stores.clone();
        let mut after: Vec<Cmd> = Vec::new();
        let mut appends = Vec::with_capacity(cmds.len());
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Append(v) => appends.extend(v),
                other => after.push(other),
            }
        }
        // Sized up front: a batch of thousands of records otherwise grows (and copies)
        // its item list and the key map a dozen times.
        let n_records: usize = appends.iter().map(|(a, _): &(Prepared, _)| a.records.len()).sum();
        let mut batch = fjall::OwnedWriteBatch::with_capacity(s.db.clone(), n_records + appends.len() + 8)
            .durability(Some(self.persist));
        let mut replies: Vec<Reply> = Vec::with_capacity(appends.len());
        // Keys appended in this batch (also in `recent.map`, which settles duplicates
        // within the batch).
        let mut batch_keys: Vec<fjall::Slice> = Vec::with_capacity(appends.len());
        let mut new_nodes: Vec<((u32, u64), Hash)> = Vec::new();
        let start = (self.chain, self.frontier.clone(), self.open_tile.clone());
        for (a, reply) in appends {
            if self.inner.poisoned.load(Ordering::Acquire) {
                replies.push((reply, Err(LedgerError::Poisoned)));
                continue;
            }
            let existing = match self.recent.map.get(&a.key) {
                Some(e) => Some(*e),
                None if a.seen.is_some() => a.seen,
                // Every batch made durable after the look-up is in `recent`.
                None if a.seen_after + 1 >= self.recent.from => None,
                None => match s.key_entry(&a.key, self.frontier.size) {
                    Ok(e) => e,
                    Err(e) => {
                        self.inner.look_up_failed(&e);
                        replies.push((reply, Err(e)));
                        continue;
                    }
                },
            };
            if let Some(e) = existing {
                let out = if e.content_hash == a.content_hash {
                    Ok(Appended { replayed: true, ..e.appended })
                } else {
                    Err(LedgerError::KeyConflict {
                        key: String::from_utf8_lossy(&a.key).into_owned(),
                        seq: e.appended.first_seq,
                    })
                };
                replies.push((reply, out));
                continue;
            }
            let first_seq = self.frontier.size;
            if let Some(exp) = a.expected_seq
                && exp != first_seq
            {
                replies.push((reply, Err(LedgerError::SequenceMismatch { expected: exp, actual: first_seq })));
                continue;
            }
            let count = u32::try_from(a.records.len()).unwrap_or(u32::MAX);
            for r in a.records {
                let seq = self.frontier.size;
                self.chain = r.link(&self.chain, seq);
                let leaf = r.leaf;
                batch.insert(&s.records, seq.to_be_bytes(), r.with_chain(&self.chain));
                let open_tile = &mut self.open_tile;
                self.frontier.push(leaf, |level, index, h| {
                    if level < TILE_HEIGHT {
                        open_tile.set(level, index, h);
                    } else {
                        batch.insert(&s.upper, upper_key(level, index), h);
                        new_nodes.push(((level, index), h));
                    }
                });
                if self.open_tile.count == TILE_WIDTH {
                    batch.insert(&s.tiles, self.open_tile.index.to_be_bytes(), self.open_tile.bytes());
                    self.open_tile = OpenTile::new(self.open_tile.index + 1);
                }
            }
            let appended = Appended { first_seq, count, chain: self.chain, replayed: false };
            let entry = KeyEntry { content_hash: a.content_hash, appended };
            // After the records: a reader that sees the key sees them (`Stores::key_entry`).
            batch.insert(&s.keys, a.key.clone(), entry.encode());
            self.recent.map.insert(a.key.clone(), entry);
            batch_keys.push(a.key);
            if let Some(p) = a.projection {
                let mut v = Vec::with_capacity(8 + p.state.len());
                v.extend_from_slice(&(self.frontier.size - 1).to_be_bytes());
                v.extend_from_slice(&p.state);
                batch.insert(&s.projections, p.name, v);
            }
            replies.push((reply, Ok(appended)));
        }
        if let Some(last_key) = batch_keys.last() {
            batch.insert(&s.head, HEAD, Head::encode(self.frontier.size, &self.chain, last_key));
        }
        let mut committed = Committed { n: None, size: 0, open_tile: None, new_nodes, replies };
        if !batch.is_empty() {
            // Written to the store, not yet synced: the syncer syncs it (and acknowledges
            // its appends) while this thread builds the next batch.
            if let Err(e) = batch.durability(None).commit() {
                // Nothing of this batch is acknowledged; refuse everything after.
                self.poison();
                for k in &batch_keys {
                    self.recent.map.remove(k);
                }
                (self.chain, self.frontier, self.open_tile) = start;
                let err = LedgerError::Storage(e.to_string());
                for (reply, out) in committed.replies {
                    let _ = reply.send(out.and(Err(err.clone())));
                }
                self.fail_rest(after, &LedgerError::Poisoned);
                return;
            }
            let n = self.next_batch;
            self.next_batch += 1;
            self.recent.committed(n, batch_keys);
            committed.n = Some(n);
            committed.size = self.frontier.size;
            committed.open_tile = Some(self.open_tile.clone());
        }
        if let Err(ToSync::Batch(c)) = to_sync.send(ToSync::Batch(committed)).map_err(|e| e.0) {
            for (reply, _) in c.replies {
                let _ = reply.send(Err(LedgerError::Closed));
            }
        }
        if after.is_empty() {
            return;
        }
        // Checkpoints and projections are of durable records only.
        if let Err(e) = self.barrier(to_sync) {
            self.fail_rest(after, &e);
            return;
        }
        for cmd in after {
            match cmd {
                Cmd::Checkpoint(time, reply) => {
                    let _ = reply.send(self.checkpoint(time));
                }
                Cmd::Rotate(key, reply) => {
                    self.key = key;
                    let _ = reply.send(Ok(()));
                }
                Cmd::Projection(p, seq, reply) => {
                    let _ = reply.send(self.projection(p, seq));
                }
                Cmd::Append(..) => unreachable!("appends are handled above"),
            }
        }
    }

    fn fail_rest(&self, cmds: Vec<Cmd>, err: &LedgerError) {
        for c in cmds {
            match c {
                Cmd::Append(v) => {
                    for (_, r) in v {
                        let _ = r.send(Err(err.clone()));
                    }
                }
                Cmd::Checkpoint(_, r) => {
                    let _ = r.send(Err(err.clone()));
                }
                Cmd::Rotate(_, r) => {
                    let _ = r.send(Err(err.clone()));
                }
                Cmd::Projection(_, _, r) => {
                    let _ = r.send(Err(err.clone()));
                }
            }
        }
    }

    fn projection(&mut self, p: ProjectionUpdate, seq: u64) -> Result<()> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(LedgerError::Poisoned);
        }
        if self.frontier.size != seq + 1 {
            return Err(LedgerError::SequenceMismatch { expected: seq + 1, actual: self.frontier.size });
        }
        let s = &self.inner.stores;
        let mut v = Vec::with_capacity(8 + p.state.len());
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&p.state);
        let r = s.projections.insert(p.name, v).and_then(|()| s.db.persist(self.persist));
        if let Err(e) = r {
            self.poison();
            return Err(e.into());
        }
        Ok(())
    }

    fn checkpoint(&mut self, time: i64) -> Result<SignedCheckpoint> {
        if self.inner.poisoned.load(Ordering::Acquire) {
            return Err(LedgerError::Poisoned);
        }
        let s = &self.inner.stores;
        let size = self.frontier.size;
        if let Some(g) = s.checkpoints.last_key_value() {
            let last = decode_checkpoint(&g.value()?)?;
            if last.checkpoint.size == size {
                return Ok(last);
            }
        }
        let cp = Checkpoint { origin: self.inner.origin.clone(), size, root: self.frontier.root(), time };
        let note = cp.sign(&self.key);
        let r = s.checkpoints.insert(size.to_be_bytes(), note.as_bytes()).and_then(|()| s.db.persist(self.persist));
        if let Err(e) = r {
            self.poison();
            return Err(e.into());
        }
        Ok(SignedCheckpoint { checkpoint: cp, note })
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests;

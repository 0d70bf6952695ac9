//! What a caller appends ([`Append`], [`NewRecord`]), the checks every append passes,
//! and the form the writer thread takes it in ([`Prepared`]): checked, looked up, and
//! its records hashed and encoded into stored entries on the caller's thread, so the one
//! writer thread only links the chain.

use settle_mandates::merkle::{self, Hash};
use sha2::{Digest, Sha256};

use crate::backend::Bytes;
use crate::config::Acceptor;
use crate::entry::{self, ENTRY_BYTES, Slot};
use crate::error::{LedgerError, Result};
use crate::index::{KeyEntry, KeyLookup};
use crate::limits::{MAX_EVENT_BYTES, MAX_KEY_BYTES, MAX_RECORDS_PER_APPEND};
use crate::projection::ProjectionUpdate;
use crate::record::{self, GENESIS_CHAIN};

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
    /// The caller's own look-up of `key` ([`Ledger::look_up`](crate::Ledger::look_up)),
    /// when it made one before deciding what to append; otherwise the ledger looks the key
    /// up itself.
    pub looked_up: Option<KeyLookup>,
}

impl Append {
    /// Checks the append against the ledger's limits and accepted event types: at least
    /// one record, a key of 1..=[`MAX_KEY_BYTES`], at most [`MAX_RECORDS_PER_APPEND`]
    /// records of at most [`MAX_EVENT_BYTES`] each, every type and version accepted.
    pub(crate) fn check(&self, accepts: &Acceptor) -> Result<()> {
        if self.records.is_empty() {
            return Err(LedgerError::Invalid("an append needs at least one record".into()));
        }
        if self.key.is_empty() || self.key.len() > MAX_KEY_BYTES {
            return Err(LedgerError::Invalid(format!("idempotency key must be 1..={MAX_KEY_BYTES} bytes")));
        }
        if self.records.len() > MAX_RECORDS_PER_APPEND {
            return Err(LedgerError::TooLarge(format!(
                "{} records in one append (max {MAX_RECORDS_PER_APPEND})",
                self.records.len()
            )));
        }
        for r in &self.records {
            if r.event.len() > MAX_EVENT_BYTES {
                return Err(LedgerError::TooLarge(format!("event of {} bytes (max {MAX_EVENT_BYTES})", r.event.len())));
            }
            if !accepts(&r.kind, r.version) {
                return Err(LedgerError::UnknownEvent { kind: r.kind.clone(), version: r.version });
            }
        }
        Ok(())
    }
}

/// An [`Append`] checked and prepared for the writer.
pub(crate) struct Prepared {
    pub(crate) key: Bytes,
    pub(crate) content_hash: Hash,
    pub(crate) entries: Vec<PreparedEntry>,
    /// How many records the entries hold.
    pub(crate) count: usize,
    pub(crate) expected_seq: Option<u64>,
    pub(crate) projection: Option<ProjectionUpdate>,
    /// The key's entry in the store when it was looked up...
    pub(crate) seen: Option<KeyEntry>,
    /// ...and the group commits durable before that look-up (see
    /// [`RecentKeys`](crate::index::RecentKeys)).
    pub(crate) seen_after: u64,
}

impl Prepared {
    /// A checked append ([`Append::check`]) with its `records` prepared
    /// ([`PreparedEntry::all`]), and its key's look-up: the entry `seen`, and the group
    /// commits durable before that look-up, `seen_after`.
    pub(crate) fn new(a: Append, entries: Vec<PreparedEntry>, seen: Option<KeyEntry>, seen_after: u64) -> Self {
        Self {
            key: Bytes::from(a.key),
            content_hash: a.content_hash,
            count: entries.iter().map(PreparedEntry::len).sum(),
            entries,
            expected_seq: a.expected_seq,
            projection: a.projection,
            seen,
            seen_after,
        }
    }
}

/// An append's records encoded for storage as an entry ([`crate::entry`]), but for
/// their chain links, with their hashes: the writer thread links them in place.
pub(crate) struct PreparedEntry {
    /// The entry with zero chain links, already in the store's own buffer type, so the
    /// writer thread patches the links in place instead of copying.
    value: byteview::ByteView,
    records: Vec<PreparedRecord>,
}

/// Where a record sits in its entry, and its hashes.
struct PreparedRecord {
    slot: Slot,
    event_hash: Hash,
    leaf: Hash,
}

impl PreparedEntry {
    /// The records of an append, hashed and encoded in entries of at most
    /// [`ENTRY_BYTES`] (a larger record alone in one).
    pub(crate) fn all(records: &[NewRecord]) -> Vec<Self> {
        let mut out = Vec::with_capacity(1);
        let mut start = 0;
        let mut bytes = 0;
        for (i, r) in records.iter().enumerate() {
            let len = entry::record_len(&r.kind, &r.event);
            if i > start && bytes + len > ENTRY_BYTES {
                out.push(Self::new(&records[start..i], bytes));
                (start, bytes) = (i, 0);
            }
            bytes += len;
        }
        if start < records.len() {
            out.push(Self::new(&records[start..], bytes));
        }
        out
    }

    fn new(records: &[NewRecord], bytes: usize) -> Self {
        let mut value = byteview::ByteView::builder(entry::ENTRY_HEAD + bytes);
        entry::write_head(&mut value, records.len());
        let mut at = entry::ENTRY_HEAD;
        let records = records
            .iter()
            .map(|r| {
                let event_hash: Hash = Sha256::digest(&r.event).into();
                let slot =
                    entry::write_record(&mut value, at, &r.kind, r.version, &event_hash, &GENESIS_CHAIN, &r.event);
                at += entry::record_len(&r.kind, &r.event);
                PreparedRecord { slot, event_hash, leaf: merkle::leaf_hash(&r.event) }
            })
            .collect();
        Self { value: value.freeze(), records }
    }

    /// How many records it holds.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The storage value, its records linked as records `first`, `first + 1`, ... after
    /// `chain`, which it leaves at the last link; `leaf` is given each record's leaf hash,
    /// in order.
    pub(crate) fn link(mut self, first: u64, chain: &mut Hash, mut leaf: impl FnMut(Hash)) -> Bytes {
        {
            let Some(mut v) = self.value.get_mut() else { unreachable!("built in `new` and never shared") };
            for (seq, r) in (first..).zip(&self.records) {
                let Slot { kind_at, version_at, chain_at } = r.slot;
                *chain =
                    record::link(chain, seq, &r.event_hash, &v[version_at..version_at + 4], &v[kind_at..version_at]);
                v[chain_at..chain_at + 32].copy_from_slice(chain);
                leaf(r.leaf);
            }
        }
        Bytes::from(self.value)
    }
}

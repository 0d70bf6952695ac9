//! What a caller appends ([`Append`], [`NewRecord`]), the checks every append passes,
//! and the form the writer thread takes it in ([`Prepared`]): checked, looked up, and
//! its records hashed and encoded on the caller's thread, so the one writer thread only
//! links the chain.

use settle_mandates::merkle::{self, Hash};
use sha2::{Digest, Sha256};

use crate::config::Acceptor;
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
    pub(crate) key: fjall::Slice,
    pub(crate) content_hash: Hash,
    pub(crate) records: Vec<PreparedRecord>,
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
    /// ([`PreparedRecord::all`]), and its key's look-up: the entry `seen`, and the group
    /// commits durable before that look-up, `seen_after`.
    pub(crate) fn new(a: Append, records: Vec<PreparedRecord>, seen: Option<KeyEntry>, seen_after: u64) -> Self {
        Self {
            key: fjall::Slice::from(a.key),
            content_hash: a.content_hash,
            records,
            expected_seq: a.expected_seq,
            projection: a.projection,
            seen,
            seen_after,
        }
    }
}

/// A record encoded for storage but for its chain link, with its hashes.
pub(crate) struct PreparedRecord {
    /// [`Record::encode`](crate::Record::encode) with a zero chain at `chain_at`, already
    /// in the store's own buffer type, so the writer thread patches the link in place
    /// instead of copying.
    value: byteview::ByteView,
    chain_at: usize,
    event_hash: Hash,
    pub(crate) leaf: Hash,
}

impl PreparedRecord {
    /// The records of an append, hashed and encoded.
    pub(crate) fn all(records: &[NewRecord]) -> Vec<Self> {
        records.iter().map(Self::new).collect()
    }

    fn new(r: &NewRecord) -> Self {
        let event_hash: Hash = Sha256::digest(&r.event).into();
        let mut value = byteview::ByteView::builder(record::encoded_len(&r.kind, &r.event));
        let chain_at = record::encode_into(&mut value, &r.kind, r.version, &event_hash, &GENESIS_CHAIN, &r.event);
        Self { value: value.freeze(), chain_at, event_hash, leaf: merkle::leaf_hash(&r.event) }
    }

    /// Its chain link as record `seq` after `prev`, from the kind and version already
    /// encoded in `value`.
    pub(crate) fn link(&self, prev: &Hash, seq: u64) -> Hash {
        let version_at = self.chain_at - 32 - 4;
        record::link(prev, seq, &self.event_hash, &self.value[version_at..version_at + 4], &self.value[3..version_at])
    }

    /// The storage value, linked after `chain`.
    pub(crate) fn with_chain(mut self, chain: &Hash) -> fjall::Slice {
        {
            let Some(mut v) = self.value.get_mut() else { unreachable!("built in `new` and never shared") };
            v[self.chain_at..self.chain_at + 32].copy_from_slice(chain);
        }
        fjall::Slice::from(self.value)
    }
}

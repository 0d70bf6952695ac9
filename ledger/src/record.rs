//! The stored record and its hash chain.

use serde::{Deserialize, Serialize};
use settle_mandates::merkle::Hash;
use sha2::{Digest, Sha256};

/// Chain value before the first record.
pub const GENESIS_CHAIN: Hash = [0; 32];

/// One record of the log (stored with the others of its append, in one entry).
///
/// `event` is the event's canonical (RFC 8785) JSON bytes and is also the Merkle leaf
/// data. `event_hash` = SHA-256(event). `chain` = SHA-256(previous chain ‖ seq as 8
/// big-endian bytes ‖ event_hash ‖ version as 4 big-endian bytes ‖ kind), so any edit of
/// the event, its stored type or version, and any reordering or removal breaks every
/// later link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Global sequence number, from 0; also the Merkle leaf index.
    pub seq: u64,
    /// Event type (`conversion_recorded`, ...).
    pub kind: String,
    /// Version of that event type's schema.
    pub version: u32,
    /// Canonical event bytes.
    pub event: Vec<u8>,
    /// SHA-256 of `event`.
    pub event_hash: Hash,
    /// Hash chain link.
    pub chain: Hash,
}

/// Chain link for record `seq` (of `kind`, `version`, hashing to `event_hash`) after
/// `prev`.
#[must_use]
pub fn chain_link(prev: &Hash, seq: u64, event_hash: &Hash, kind: &str, version: u32) -> Hash {
    link(prev, seq, event_hash, &version.to_be_bytes(), stored_kind(kind))
}

/// The kind as stored and linked (at most `u16::MAX` bytes of it).
pub(crate) fn stored_kind(kind: &str) -> &[u8] {
    &kind.as_bytes()[..kind.len().min(usize::from(u16::MAX))]
}

/// [`chain_link`] from the stored bytes of the version and the kind.
pub(crate) fn link(prev: &Hash, seq: u64, event_hash: &Hash, version: &[u8], kind: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(event_hash);
    h.update(version);
    h.update(kind);
    h.finalize().into()
}

impl Record {
    /// Checks the event hash and the chain link after `prev`; returns the link.
    pub(crate) fn check_link(&self, prev: &Hash) -> Result<Hash, &'static str> {
        let eh: Hash = Sha256::digest(&self.event).into();
        if eh != self.event_hash {
            return Err("event hash does not match the event bytes");
        }
        let link = chain_link(prev, self.seq, &eh, &self.kind, self.version);
        if link != self.chain {
            return Err("hash chain is broken");
        }
        Ok(link)
    }

    /// The record as one line of the JSON Lines export.
    pub fn to_export_line(&self) -> Result<String, serde_json::Error> {
        let event: serde_json::Value = serde_json::from_slice(&self.event)?;
        serde_json::to_string(&ExportLine {
            seq: self.seq,
            kind: self.kind.clone(),
            v: self.version,
            event_hash: hex::encode(self.event_hash),
            chain: hex::encode(self.chain),
            event,
        })
    }
}

/// One line of `log.jsonl` in an export bundle.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLine {
    /// Sequence number.
    pub seq: u64,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Event schema version.
    pub v: u32,
    /// Hex SHA-256 of the canonical event.
    pub event_hash: String,
    /// Hex chain link.
    pub chain: String,
    /// The event (its RFC 8785 form is the leaf data).
    pub event: serde_json::Value,
}

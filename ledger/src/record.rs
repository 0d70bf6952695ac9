//! The stored record and its hash chain.

use serde::{Deserialize, Serialize};
use settle_mandates::merkle::Hash;
use sha2::{Digest, Sha256};

/// Chain value before the first record.
pub const GENESIS_CHAIN: Hash = [0; 32];

/// One entry of the log.
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

/// Storage format of a record. 2: the chain link covers the type and version (format 1
/// linked the event hash only, and is no longer read).
const FORMAT: u8 = 2;

/// The kind as stored (at most `u16::MAX` bytes of it).
fn stored_kind(kind: &str) -> &[u8] {
    &kind.as_bytes()[..kind.len().min(usize::from(u16::MAX))]
}

/// Length of [`Record::encode`] of a record of `kind` and `event`.
pub(crate) fn encoded_len(kind: &str, event: &[u8]) -> usize {
    1 + 2 + stored_kind(kind).len() + 4 + 64 + event.len()
}

/// Writes [`Record::encode`] from its parts into `out`, exactly [`encoded_len`] bytes
/// long; returns where in it the chain link sits.
pub(crate) fn encode_into(
    out: &mut [u8],
    kind: &str,
    version: u32,
    event_hash: &Hash,
    chain: &Hash,
    event: &[u8],
) -> usize {
    let kind = stored_kind(kind);
    let kl = u16::try_from(kind.len()).unwrap_or(u16::MAX);
    let chain_at = 1 + 2 + kind.len() + 4 + 32;
    out[0] = FORMAT;
    out[1..3].copy_from_slice(&kl.to_be_bytes());
    out[3..3 + kind.len()].copy_from_slice(kind);
    out[3 + kind.len()..chain_at - 32].copy_from_slice(&version.to_be_bytes());
    out[chain_at - 32..chain_at].copy_from_slice(event_hash);
    out[chain_at..chain_at + 32].copy_from_slice(chain);
    out[chain_at + 32..].copy_from_slice(event);
    chain_at
}

impl Record {
    /// Storage encoding: format byte, kind length (u16) and kind, version (u32),
    /// event hash, chain, event bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![0; encoded_len(&self.kind, &self.event)];
        encode_into(&mut v, &self.kind, self.version, &self.event_hash, &self.chain, &self.event);
        v
    }

    /// Decodes the storage encoding.
    pub fn decode(seq: u64, b: &[u8]) -> Option<Self> {
        let f = Fields::split(b)?;
        let kind = std::str::from_utf8(f.kind).ok()?.to_owned();
        Some(Self { seq, kind, version: f.version, event: f.event.to_vec(), event_hash: f.event_hash, chain: f.chain })
    }

    /// The chain link in a storage encoding, without copying the rest.
    pub(crate) fn chain_of(b: &[u8]) -> Option<Hash> {
        Fields::split(b).map(|f| f.chain)
    }

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

/// The fields of a record's storage encoding, borrowed.
struct Fields<'a> {
    kind: &'a [u8],
    version: u32,
    event_hash: Hash,
    chain: Hash,
    event: &'a [u8],
}

impl<'a> Fields<'a> {
    fn split(b: &'a [u8]) -> Option<Self> {
        let (&fmt, rest) = b.split_first()?;
        if fmt != FORMAT {
            return None;
        }
        let kl = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
        let rest = rest.get(2..)?;
        let kind = rest.get(..kl)?;
        let rest = rest.get(kl..)?;
        Some(Self {
            kind,
            version: u32::from_be_bytes(rest.get(..4)?.try_into().ok()?),
            event_hash: rest.get(4..36)?.try_into().ok()?,
            chain: rest.get(36..68)?.try_into().ok()?,
            event: rest.get(68..)?,
        })
    }
}

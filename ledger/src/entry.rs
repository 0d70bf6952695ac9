//! The stored entry: the records of one append under one key of the store, the sequence
//! of its first record. Each record keeps its own chain link and its own Merkle leaf (a
//! receipt discloses one record, never the others of its append); only the storage is
//! shared, so an append of a conversion and the four records it caused costs one key,
//! not five.
//!
//! Formats, by the first byte of the stored value:
//!
//! - **3** (written since entries were introduced): byte 3, the number of records (u32,
//!   big-endian, at least 1), then for each record its kind length (u16) and kind, version (u32), event hash (32 bytes), chain link
//!   (32 bytes), event length (u32) and event bytes. An append whose records pass
//!   [`ENTRY_BYTES`] is stored as several entries, each under its own first sequence.
//! - **2** (read, no longer written): one record: byte 2, kind length and kind, version,
//!   event hash, chain link, and the event bytes to the end of the value.
//! - **1** (refused on open: its chain links did not cover the type and version).
//!
//! The chain link is the same in every format ([`chain_link`](crate::chain_link)), so a
//! store written before keeps verifying, and new entries extend its chain.

use settle_mandates::merkle::Hash;

use crate::record::{Record, stored_kind};

/// Entry format written.
const FORMAT_ENTRY: u8 = 3;
/// One-record format of earlier stores, still read.
const FORMAT_RECORD: u8 = 2;

/// Most bytes an append's records fill in one entry before the next record starts
/// another (a record larger than this is an entry alone). A conversion and what it
/// causes (a few kilobytes) is one entry; a settlement of thousands of mandates is many
/// entries of this size, so no stored value grows with an append.
pub const ENTRY_BYTES: usize = 64 * 1024;

/// Bytes a record of `kind` and `event` takes in an entry (after the format byte).
pub(crate) fn record_len(kind: &str, event: &[u8]) -> usize {
    2 + stored_kind(kind).len() + 4 + 32 + 32 + 4 + event.len()
}

/// Where, in an entry being built, a record's parts sit: what the writer thread needs to
/// link it without decoding it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) kind_at: usize,
    pub(crate) version_at: usize,
    pub(crate) chain_at: usize,
}

/// Writes a record into `out` at `at` (exactly [`record_len`] bytes), its chain link
/// `chain`; returns where its parts sit.
pub(crate) fn write_record(
    out: &mut [u8],
    at: usize,
    kind: &str,
    version: u32,
    event_hash: &Hash,
    chain: &Hash,
    event: &[u8],
) -> Slot {
    let kind = stored_kind(kind);
    let kl = u16::try_from(kind.len()).unwrap_or(u16::MAX);
    let event_len = u32::try_from(event.len()).unwrap_or(u32::MAX);
    let kind_at = at + 2;
    let version_at = kind_at + kind.len();
    let hash_at = version_at + 4;
    let chain_at = hash_at + 32;
    let event_at = chain_at + 32 + 4;
    out[at..kind_at].copy_from_slice(&kl.to_be_bytes());
    out[kind_at..version_at].copy_from_slice(kind);
    out[version_at..hash_at].copy_from_slice(&version.to_be_bytes());
    out[hash_at..chain_at].copy_from_slice(event_hash);
    out[chain_at..chain_at + 32].copy_from_slice(chain);
    out[chain_at + 32..event_at].copy_from_slice(&event_len.to_be_bytes());
    out[event_at..event_at + event.len()].copy_from_slice(event);
    Slot { kind_at, version_at, chain_at }
}

/// Bytes before an entry's first record: the format and the number of records.
pub(crate) const ENTRY_HEAD: usize = 1 + 4;

/// Writes an entry's head (format and count) into `out`.
pub(crate) fn write_head(out: &mut [u8], count: usize) {
    out[0] = FORMAT_ENTRY;
    out[1..ENTRY_HEAD].copy_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_be_bytes());
}

/// The entry of `records` (consecutive, the first under the entry's key), as stored
/// (the writer builds it in place, [`write_record`]; tests store entries of their own).
#[cfg(test)]
pub(crate) fn encode(records: &[Record]) -> Vec<u8> {
    let len = ENTRY_HEAD + records.iter().map(|r| record_len(&r.kind, &r.event)).sum::<usize>();
    let mut v = vec![0; len];
    write_head(&mut v, records.len());
    let mut at = ENTRY_HEAD;
    for r in records {
        write_record(&mut v, at, &r.kind, r.version, &r.event_hash, &r.chain, &r.event);
        at += record_len(&r.kind, &r.event);
    }
    v
}

/// One record of a stored entry, borrowed.
pub(crate) struct Stored<'a> {
    pub(crate) kind: &'a [u8],
    pub(crate) version: u32,
    pub(crate) event_hash: Hash,
    pub(crate) chain: Hash,
    pub(crate) event: &'a [u8],
}

impl Stored<'_> {
    /// The record, as record `seq`; `None` when its kind is not UTF-8.
    pub(crate) fn record(&self, seq: u64) -> Option<Record> {
        Some(Record {
            seq,
            kind: std::str::from_utf8(self.kind).ok()?.to_owned(),
            version: self.version,
            event: self.event.to_vec(),
            event_hash: self.event_hash,
            chain: self.chain,
        })
    }
}

/// The records of a stored entry, in order, borrowed from it. An item is `None` where
/// the value stops decoding (and the iteration ends there); an empty or unknown value
/// yields a single `None`.
pub(crate) fn stored(b: &[u8]) -> StoredIter<'_> {
    let none = StoredIter { rest: &[], left: 1, single: true };
    match b.split_first() {
        Some((&FORMAT_ENTRY, rest)) => match rest.get(..4).map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]])) {
            Some(left) if left > 0 => StoredIter { rest: &rest[4..], left, single: false },
            _ => none,
        },
        Some((&FORMAT_RECORD, rest)) => StoredIter { rest, left: 1, single: true },
        _ => none,
    }
}

/// Iterator of [`stored`].
pub(crate) struct StoredIter<'a> {
    rest: &'a [u8],
    /// Records still to read.
    left: u32,
    single: bool,
}

impl<'a> Iterator for StoredIter<'a> {
    type Item = Option<Stored<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some((f, rest)) = split(self.rest, self.single) else {
            self.left = 0;
            return Some(None);
        };
        self.rest = rest;
        // Bytes after the last record: the entry does not decode.
        if self.left == 0 && !rest.is_empty() {
            return Some(None);
        }
        Some(Some(f))
    }
}

/// The first record of `b` and what follows it: in format 3 the event's length is
/// stated; in format 2 (`single`) the event runs to the end.
fn split(b: &[u8], single: bool) -> Option<(Stored<'_>, &[u8])> {
    let kl = usize::from(u16::from_be_bytes(b.get(..2)?.try_into().ok()?));
    let kind = b.get(2..2 + kl)?;
    let b = b.get(2 + kl..)?;
    let version = u32::from_be_bytes(b.get(..4)?.try_into().ok()?);
    let event_hash = b.get(4..36)?.try_into().ok()?;
    let chain = b.get(36..68)?.try_into().ok()?;
    let (event, rest) = if single {
        (b.get(68..)?, &[][..])
    } else {
        let n = usize::try_from(u32::from_be_bytes(b.get(68..72)?.try_into().ok()?)).ok()?;
        (b.get(72..72 + n)?, b.get(72 + n..)?)
    };
    Some((Stored { kind, version, event_hash, chain, event }, rest))
}

/// The records of the entry stored under `first`; `None` when it does not decode.
pub(crate) fn decode(first: u64, b: &[u8]) -> Option<Vec<Record>> {
    (first..).zip(stored(b)).map(|(seq, f)| f?.record(seq)).collect()
}

/// How many records the entry holds and the last one's chain link; `None` when it does
/// not decode.
pub(crate) fn last_link(b: &[u8]) -> Option<(u64, Hash)> {
    let mut n = 0u64;
    let mut chain = None;
    for f in stored(b) {
        chain = Some(f?.chain);
        n += 1;
    }
    Some((n, chain?))
}

/// `r` as an earlier version stored it (format 2, alone under its sequence).
#[cfg(test)]
pub(crate) fn encode_format_2(r: &Record) -> Vec<u8> {
    let kind = stored_kind(&r.kind);
    let mut v = vec![FORMAT_RECORD];
    v.extend_from_slice(&u16::try_from(kind.len()).unwrap_or(u16::MAX).to_be_bytes());
    v.extend_from_slice(kind);
    v.extend_from_slice(&r.version.to_be_bytes());
    v.extend_from_slice(&r.event_hash);
    v.extend_from_slice(&r.chain);
    v.extend_from_slice(&r.event);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{GENESIS_CHAIN, chain_link};
    use sha2::{Digest, Sha256};

    fn rec(seq: u64, prev: &Hash, kind: &str, event: &[u8]) -> Record {
        let event_hash: Hash = Sha256::digest(event).into();
        Record {
            seq,
            kind: kind.into(),
            version: 1,
            event: event.to_vec(),
            event_hash,
            chain: chain_link(prev, seq, &event_hash, kind, 1),
        }
    }

    #[test]
    fn an_entry_round_trips_and_names_its_last_link() {
        let a = rec(7, &GENESIS_CHAIN, "a", b"{}");
        let b = rec(8, &a.chain, "bb", b"{\"x\":1}");
        let c = rec(9, &b.chain, "", b"");
        let v = encode(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(v[0], FORMAT_ENTRY);
        assert_eq!(decode(7, &v).unwrap(), vec![a, b.clone(), c.clone()]);
        assert_eq!(last_link(&v), Some((3, c.chain)));
        assert_eq!(stored(&v).nth(1).unwrap().unwrap().record(8), Some(b));
        assert!(stored(&v).nth(3).is_none());
    }

    /// A record stored by an earlier version (format 2, one record a key, the event to
    /// the end of the value) reads as an entry of one.
    #[test]
    fn a_record_of_format_2_reads_as_an_entry_of_one() {
        let r = rec(3, &GENESIS_CHAIN, "kind", b"{\"e\":1}");
        let v = encode_format_2(&r);
        assert_eq!(decode(3, &v).unwrap(), vec![r.clone()]);
        assert_eq!(last_link(&v), Some((1, r.chain)));
    }

    #[test]
    fn a_cut_or_unknown_value_does_not_decode() {
        let a = rec(0, &GENESIS_CHAIN, "a", b"{\"a\":1}");
        let b = rec(1, &a.chain, "b", b"{\"b\":2}");
        let v = encode(&[a, b]);
        for cut in 1..v.len() {
            assert!(decode(0, &v[..cut]).is_none(), "cut at {cut}");
            assert!(last_link(&v[..cut]).is_none(), "cut at {cut}");
        }
        let mut longer = v.clone();
        longer.push(0);
        assert!(decode(0, &longer).is_none(), "a byte after the last record");
        for bad in [&[][..], &[FORMAT_ENTRY][..], &[FORMAT_ENTRY, 0, 0, 0, 0][..], &[1, 0, 0][..], &[4, 0][..]] {
            assert!(decode(0, bad).is_none(), "{bad:?}");
        }
    }
}

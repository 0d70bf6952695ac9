//! Reading records: one by sequence, or a stream from a sequence on, checking each
//! record's hash and chain link ([`RecordIter`]), out of their stored entries. Only
//! durable records are read.

use settle_mandates::merkle::Hash;
use sha2::{Digest, Sha256};

use super::Ledger;
use crate::error::{LedgerError, Result};
use crate::record::{GENESIS_CHAIN, Record};
use crate::store::Scan;

impl Ledger {
    /// The record at `seq`, its event checked against its stored hash: bytes that
    /// changed at rest are reported ([`LedgerError::Inconsistent`]), never served.
    pub fn record(&self, seq: u64) -> Result<Option<Record>> {
        if seq >= self.size() {
            return Ok(None);
        }
        let r = self.inner.stores.record(seq)?;
        if <[u8; 32]>::from(Sha256::digest(&r.event)) != r.event_hash {
            return Err(LedgerError::Inconsistent { seq, what: "the stored event does not match its hash".into() });
        }
        Ok(Some(r))
    }

    /// Streams records from `from` to the current size, checking each record's hash and
    /// chain link as it goes (memory stays flat: one stored entry at a time).
    pub fn records(&self, from: u64) -> RecordIter {
        RecordIter { check: true, ..self.records_unchecked(from) }
    }

    /// [`Ledger::records`] without the hash and chain checks, for a caller that makes
    /// them itself (the verification pass): each event is hashed once, not twice.
    pub(crate) fn records_unchecked(&self, from: u64) -> RecordIter {
        let end = self.size();
        let from = from.min(end);
        let prev = match from.checked_sub(1) {
            None => Ok(GENESIS_CHAIN),
            Some(before) => self.inner.stores.record(before).map(|r| r.chain),
        };
        let (scan, prev) = match self.inner.stores.scan(from, end) {
            Ok(scan) => (Some(scan), prev),
            Err(e) => (None, prev.and(Err(e))),
        };
        RecordIter { scan, prev, check: false }
    }
}

/// Streaming, verifying iterator over records.
pub struct RecordIter {
    scan: Option<Scan>,
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
                self.scan = None;
                self.prev = Ok(GENESIS_CHAIN);
                return Some(Err(e));
            }
        };
        let r = match self.scan.as_mut()?.next()? {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        if !self.check {
            return Some(Ok(r));
        }
        match r.check_link(&prev) {
            Ok(link) => self.prev = Ok(link),
            Err(what) => {
                self.scan = None;
                return Some(Err(LedgerError::Inconsistent { seq: r.seq, what: what.to_owned() }));
            }
        }
        Some(Ok(r))
    }
}

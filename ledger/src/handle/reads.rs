//! Reading records: one by sequence, or a stream from a sequence on, checking each
//! record's hash and chain link ([`RecordIter`]). Only durable records are read.

use settle_mandates::merkle::Hash;

use super::Ledger;
use crate::error::{LedgerError, Result};
use crate::record::{GENESIS_CHAIN, Record};

impl Ledger {
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

//! Signed checkpoints as stored: one C2SP signed note per tree size, keyed by that size,
//! in the `checkpoints` keyspace ([`SignedCheckpoint`] and its reads). The writer signs
//! and stores them; the [`Ledger`](crate::Ledger) handle and recovery read them here.

use settle_mandates::checkpoint::Checkpoint;

use crate::error::{LedgerError, Result};
use crate::store::Stores;

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// Parsed body.
    pub checkpoint: Checkpoint,
    /// The signed note text.
    pub note: String,
}

impl SignedCheckpoint {
    /// A stored note, parsed (its signature is checked by the verification pass, not here).
    pub(crate) fn decode(v: &[u8]) -> Result<Self> {
        let note = std::str::from_utf8(v)
            .map_err(|_| LedgerError::Inconsistent { seq: 0, what: "checkpoint is not UTF-8".into() })?
            .to_owned();
        let (checkpoint, _) = Checkpoint::parse(&note)
            .map_err(|e| LedgerError::Inconsistent { seq: 0, what: format!("stored checkpoint: {e}") })?;
        Ok(Self { checkpoint, note })
    }
}

impl Stores {
    /// The latest signed checkpoint (of the largest tree).
    pub(crate) fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        match self.checkpoints.last_key_value()? {
            None => Ok(None),
            Some((_, v)) => SignedCheckpoint::decode(&v).map(Some),
        }
    }

    /// The checkpoint of exactly `size` records, if one was signed.
    pub(crate) fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>> {
        match self.checkpoints.get(size.to_be_bytes())? {
            None => Ok(None),
            Some(v) => SignedCheckpoint::decode(&v).map(Some),
        }
    }

    /// The first checkpoint covering record `seq` (size > seq).
    pub(crate) fn checkpoint_covering(&self, seq: u64) -> Result<Option<SignedCheckpoint>> {
        match self.checkpoints.range((seq + 1).to_be_bytes()..).next().transpose()? {
            None => Ok(None),
            Some((_, v)) => SignedCheckpoint::decode(&v).map(Some),
        }
    }

    /// Every signed checkpoint, by increasing size.
    pub(crate) fn all_checkpoints(&self) -> impl Iterator<Item = Result<SignedCheckpoint>> + '_ {
        self.checkpoints.iter().map(|r| r.and_then(|(_, v)| SignedCheckpoint::decode(&v)))
    }

    /// Stores the note signed over a tree of `size` records (not synced: the caller
    /// syncs).
    pub(crate) fn put_checkpoint(&self, size: u64, note: &str) -> Result<()> {
        self.checkpoints.insert(size.to_be_bytes().to_vec(), note.as_bytes().to_vec())
    }
}

//! Checkpoints: signing one of the current tree (through the writer, after every batch
//! before it is durable), rotating the signing key, and reading the signed ones.

use settle_mandates::keys::SigningKey;

use super::Ledger;
use crate::checkpoint::SignedCheckpoint;
use crate::error::Result;
use crate::writer::Cmd;

impl Ledger {
    /// Signs a checkpoint of the current tree at log time `time` (returns the latest
    /// one unchanged if the tree has not grown).
    pub fn checkpoint_blocking(&self, time: i64) -> Result<SignedCheckpoint> {
        self.ask_blocking(|tx| Cmd::Checkpoint(time, tx))
    }

    /// Waits until everything written before the call is durable (an error if a sync
    /// failed: the ledger is then poisoned).
    pub fn wait_durable_blocking(&self) -> Result<()> {
        self.ask_blocking(Cmd::Durable)
    }

    /// Async [`Ledger::checkpoint_blocking`].
    pub async fn checkpoint(&self, time: i64) -> Result<SignedCheckpoint> {
        self.ask(|tx| Cmd::Checkpoint(time, tx)).await
    }

    /// Signs future checkpoints with `key` (key rotation). Old checkpoints keep their
    /// signatures; publish the old key with its validity period to keep them verifiable.
    /// Fails, and keeps the old key, once the log has stopped taking writes.
    pub fn rotate_key(&self, key: SigningKey) -> Result<()> {
        self.ask_blocking(|tx| Cmd::Rotate(key, tx))
    }

    /// The latest signed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>> {
        self.inner.stores.latest_checkpoint()
    }

    /// The checkpoint of exactly `size` records, if one was signed.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>> {
        self.inner.stores.checkpoint_at(size)
    }

    /// The first checkpoint covering record `seq` (size > seq).
    pub fn checkpoint_covering(&self, seq: u64) -> Result<Option<SignedCheckpoint>> {
        self.inner.stores.checkpoint_covering(seq)
    }

    /// Every signed checkpoint, by increasing size.
    pub fn checkpoints(&self) -> impl Iterator<Item = Result<SignedCheckpoint>> + '_ {
        self.inner.stores.all_checkpoints()
    }
}

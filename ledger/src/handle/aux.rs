//! The aux keyspace: operational state kept beside the log but outside it (webhook
//! subscriptions, delivery cursors, dead letters), written directly, not through the
//! writer.

use super::Ledger;
use crate::backend::{Batch, Durability, Space};
use crate::error::Result;

impl Ledger {
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
        let mut batch = Batch::with_capacity(puts.len() + removes.len());
        for (k, v) in puts {
            batch.insert(Space::Aux, k.to_vec(), v.to_vec());
        }
        for k in removes {
            batch.remove(Space::Aux, k.to_vec());
        }
        let durability = if durable { Durability::Synced } else { Durability::Process };
        self.inner.stores.backend.write(batch, durability)
    }

    /// An [`Ledger::aux_put`] entry.
    pub fn aux_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.stores.aux.get(key)?.map(|v| v.to_vec()))
    }

    /// The [`Ledger::aux_put`] entries whose key starts with `prefix`, in key order, at
    /// most `limit`.
    pub fn aux_scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for r in self.inner.stores.aux.prefix(prefix).take(limit) {
            let (k, v) = r?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

//! A follower: a read-only [`Ledger`] of a log another process writes (a standby beside
//! its writer), which sees the log as of its latest signed checkpoint and catches up with
//! [`Ledger::follow`]. It has no writer thread: every write is refused as closed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use super::{Inner, Ledger};
use crate::backend::Backend;
use crate::config::LedgerConfig;
use crate::error::Result;
use crate::recovery::view_at_checkpoint;
use crate::shared::Shared;
use crate::store::Stores;
use crate::tree::OpenTile;

impl Ledger {
    /// A follower of the log on `backend` (which another process writes), as of its
    /// latest signed checkpoint.
    pub fn open_follower(backend: Arc<dyn Backend>, config: &LedgerConfig) -> Result<Self> {
        let shared = Arc::new(Shared::new(
            Stores::new(backend),
            0,
            std::collections::HashMap::new(),
            OpenTile::new(0),
            config.origin.clone(),
            config.accepts.clone(),
        ));
        let l = Self { inner: Arc::new(Inner { shared, tx: RwLock::new(None), writer: Mutex::new(None) }) };
        l.follow()?;
        Ok(l)
    }

    /// Catches up with the log's latest signed checkpoint; returns the size it now reads.
    /// (A ledger that writes only ever reads what it wrote.)
    pub fn follow(&self) -> Result<u64> {
        let now = self.size();
        if let Some((size, upper, open_tile)) = view_at_checkpoint(&self.inner.stores)?
            && size > now
        {
            // Nodes and tile before the size, as the sync thread publishes a batch.
            *self.inner.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = upper;
            *self.inner.open_tile.write().unwrap_or_else(std::sync::PoisonError::into_inner) = open_tile;
            self.inner.size.store(size, Ordering::Release);
            return Ok(size);
        }
        Ok(now)
    }
}

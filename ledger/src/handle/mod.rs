//! The [`Ledger`] handle, which callers hold: opening and closing a ledger here, its
//! methods by concern in the submodules (appends, reads, proofs, checkpoints,
//! projections, the aux keyspace). Writes go to the writer thread through its queue;
//! reads go to the store and the durable tree directly.

mod appends;
mod aux;
mod checkpoints;
mod follow;
mod projections;
mod proofs;
mod reads;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

pub use appends::{CheckedGroup, Reserved};
pub use reads::RecordIter;

use crate::backend::{Backend, FjallBackend};
use crate::config::LedgerConfig;
use crate::error::{LedgerError, Result};
use crate::limits::QUEUE_CAPACITY;
use crate::recovery::{Recovered, recover};
use crate::shared::Shared;
use crate::store::Stores;
use crate::writer::{self, Cmd, Tip};

/// What the handles share: the writer's queue and thread, and what the writer shares
/// with them.
pub(crate) struct Inner {
    shared: Arc<Shared>,
    tx: RwLock<Option<mpsc::Sender<Cmd>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::ops::Deref for Inner {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Inner {
    /// Closes the queue, lets the writer drain it, and waits for the writer to stop.
    fn stop_writer(&self) {
        self.tx.write().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let h = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone: close the queue, let the writer drain it, and wait, so
    /// the store is released when the drop returns.
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// Handle to an open ledger; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Ledger {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({}, size {})", self.inner.origin, self.size())
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `path` on the embedded store (fjall) and starts
    /// its writer thread.
    pub fn open(path: &Path, config: LedgerConfig) -> Result<Self> {
        let backend = FjallBackend::open(path, config.persist)?;
        Self::open_on(Arc::new(backend), config)
    }

    /// Opens (or creates) the ledger on `backend` and starts its writer thread.
    pub fn open_on(backend: Arc<dyn Backend>, config: LedgerConfig) -> Result<Self> {
        let stores = Stores::new(backend);
        let Recovered { size, chain, frontier, upper, open_tile } = recover(&stores)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared::new(
            stores,
            size,
            upper,
            open_tile.clone(),
            config.origin.clone(),
            config.accepts.clone(),
        ));
        let inner =
            Arc::new(Inner { shared: Arc::clone(&shared), tx: RwLock::new(Some(tx)), writer: Mutex::new(None) });
        let tip = Tip { chain, frontier, open_tile };
        let handle = writer::start(shared, rx, tip, config.key)?;
        *inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        Ok(Self { inner })
    }

    /// Log identity used in checkpoints.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Number of durable records.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.inner.size.load(std::sync::atomic::Ordering::Acquire)
    }

    /// True once a storage error stopped the log taking writes (until it is reopened).
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Tests only (feature `fault-injection`): the next sync that makes records durable
    /// waits until the returned hold is released, then fails if told to, as a disk
    /// refusing an fsync would. Dropping the hold lets the sync go on.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn hold_next_sync(&self) -> crate::sync::SyncHold {
        let (tx, rx) = std::sync::mpsc::channel();
        *self.inner.sync_hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rx);
        crate::sync::SyncHold(tx)
    }

    /// Stops the writer after the queue drains and syncs. Further appends fail.
    pub fn close(&self) -> Result<()> {
        self.inner.stop_writer();
        if self.inner.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        self.inner.stores.backend.sync()?;
        Ok(())
    }

    /// The writer's queue, unless the log is poisoned or closed.
    fn sender(&self) -> Result<mpsc::Sender<Cmd>> {
        if self.inner.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        self.inner.tx.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or(LedgerError::Closed)
    }

    /// Sends the writer the command `cmd` makes of a reply channel, waiting for room in
    /// the queue, and waits for the reply (from a thread outside the async runtime).
    fn ask_blocking<T>(&self, cmd: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.blocking_send(cmd(tx)).map_err(|_| LedgerError::Closed)?;
        rx.blocking_recv().map_err(|_| LedgerError::Closed)?
    }

    /// Async [`Ledger::ask_blocking`].
    async fn ask<T>(&self, cmd: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.sender()?.send(cmd(tx)).await.map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }
}

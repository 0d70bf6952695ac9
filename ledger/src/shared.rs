//! What the writer and sync threads share with the [`Ledger`](crate::Ledger) handles
//! ([`Shared`]): the store, the durable part of the tree, the durable size and batch
//! count, and the poison flag.

use std::collections::HashMap;
#[cfg(any(test, feature = "fault-injection"))]
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use settle_mandates::merkle::Hash;

use crate::config::Acceptor;
use crate::error::LedgerError;
use crate::store::Stores;
use crate::tree::OpenTile;

/// Ledgers opened in this process (numbers each opening, see
/// [`KeyLookup`](crate::KeyLookup)).
static OPENINGS: AtomicU64 = AtomicU64::new(0);

/// What the writer thread shares with the handles (no queue sender: dropping the last
/// handle closes the queue, which stops the writer).
pub(crate) struct Shared {
    pub(crate) stores: Stores,
    /// The tree's levels from [`TILE_HEIGHT`](crate::TILE_HEIGHT) up, in memory; holds
    /// only durable nodes.
    pub(crate) nodes: RwLock<HashMap<(u32, u64), Hash>>,
    /// The tile being filled, as far as it is durable.
    pub(crate) open_tile: RwLock<OpenTile>,
    pub(crate) size: AtomicU64,
    /// Group commits made durable since the ledger was opened.
    pub(crate) batches: AtomicU64,
    /// This opening's number, unique in the process: a [`KeyLookup`](crate::KeyLookup)
    /// counts batches of one opening only.
    pub(crate) opened: u64,
    pub(crate) poisoned: AtomicBool,
    pub(crate) origin: String,
    pub(crate) accepts: Acceptor,
    /// Tests only: the next durable sync waits for
    /// [`SyncHold::release`](crate::SyncHold::release).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) sync_hold: Mutex<Option<std::sync::mpsc::Receiver<bool>>>,
}

impl Shared {
    /// The state of a ledger just opened: `size` durable records, the tree's durable
    /// `upper` nodes and `open_tile`, no batch yet; a new opening number.
    pub(crate) fn new(
        stores: Stores,
        size: u64,
        upper: HashMap<(u32, u64), Hash>,
        open_tile: OpenTile,
        origin: String,
        accepts: Acceptor,
    ) -> Self {
        Self {
            nodes: RwLock::new(upper),
            open_tile: RwLock::new(open_tile),
            stores,
            size: AtomicU64::new(size),
            batches: AtomicU64::new(0),
            opened: OPENINGS.fetch_add(1, Ordering::Relaxed),
            poisoned: AtomicBool::new(false),
            origin,
            accepts,
            #[cfg(any(test, feature = "fault-injection"))]
            sync_hold: Mutex::new(None),
        }
    }

    /// True once a storage error stopped the log taking writes.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Stops the log taking writes (until it is reopened).
    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// After a key look-up failed with `e`: a failed read poisons the ledger; an entry
    /// the store returned but that is inconsistent fails only the append using its key
    /// (nothing was written).
    pub(crate) fn look_up_failed(&self, e: &LedgerError) {
        if !matches!(e, LedgerError::Inconsistent { .. }) {
            self.poison();
        }
    }
}

//! The sync thread: makes the writer's group commits durable, one sync for all it finds
//! waiting, then publishes them to readers and answers their appends ([`sync_loop`]),
//! while the writer builds the next batch. What the writer hands it ([`ToSync`],
//! [`Committed`]), and the test hook that holds or fails a sync (`SyncHold`).

use std::sync::atomic::Ordering;

use settle_mandates::merkle::Hash;
use tokio::sync::oneshot;

use crate::error::{LedgerError, Result};
use crate::index::Appended;
use crate::shared::Shared;
use crate::tree::OpenTile;

/// A hold on the ledger's next durable sync (tests only, feature `fault-injection`):
/// see [`Ledger::hold_next_sync`](crate::Ledger::hold_next_sync).
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug)]
pub struct SyncHold(pub(crate) std::sync::mpsc::Sender<bool>);

#[cfg(any(test, feature = "fault-injection"))]
impl SyncHold {
    /// Lets the held sync go on: it fails if `fail`, and runs as usual otherwise.
    pub fn release(self, fail: bool) {
        let _ = self.0.send(fail);
    }
}

/// The bug the simulator must find (tests only, feature `fault-injection`): when set,
/// the syncer acknowledges a batch's appends before its sync. See
/// [`inject_ack_before_sync`].
#[cfg(any(test, feature = "fault-injection"))]
static ACK_BEFORE_SYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Injects a known bug into every ledger of the process (tests only, feature
/// `fault-injection`): appends are acknowledged, and published to readers, before the
/// sync that makes them durable. A power cut then loses acknowledged appends: the
/// deterministic simulation (`settle-sim`) must find it.
#[cfg(any(test, feature = "fault-injection"))]
pub fn inject_ack_before_sync(on: bool) {
    ACK_BEFORE_SYNC.store(on, Ordering::Relaxed);
}

/// An append's answer, and where to send it once its batch is durable.
pub(crate) type Reply = (oneshot::Sender<Result<Appended>>, Result<Appended>);

/// A group commit written to the store but not yet synced, on its way to the syncer.
pub(crate) struct Committed {
    /// Its number, or `None` when it wrote nothing (its replies only repeat or refuse,
    /// and wait for the batches before them).
    pub(crate) n: Option<u64>,
    /// The log's size, open tile and new upper nodes once it is durable.
    pub(crate) size: u64,
    pub(crate) open_tile: Option<OpenTile>,
    pub(crate) new_nodes: Vec<((u32, u64), Hash)>,
    pub(crate) replies: Vec<Reply>,
}

/// What the writer hands to the syncer thread.
pub(crate) enum ToSync {
    Batch(Committed),
    /// Answered once everything before it is durable and readable.
    Barrier(std::sync::mpsc::SyncSender<()>),
}

/// One durable sync of everything written to the store (in tests, held and failed on
/// request: see `Ledger::hold_next_sync`).
fn sync(shared: &Shared) -> Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    {
        let hold = shared.sync_hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if hold.is_some_and(|h| h.recv() == Ok(true)) {
            return Err(LedgerError::Storage("injected: the sync failed".into()));
        }
    }
    shared.stores.backend.sync()
}

/// The syncer: makes the writer's group commits durable, one sync for all it finds
/// waiting, then publishes them to readers and acknowledges their appends, while the
/// writer builds the next batch. It never publishes or acknowledges a batch before the
/// sync that covers it has returned.
pub(crate) fn sync_loop(
    shared: &Shared,
    rx: &std::sync::mpsc::Receiver<ToSync>,
    spare: &std::sync::mpsc::Sender<Vec<Reply>>,
) {
    let mut msgs = Vec::new();
    // Ends when the writer drops its sender, once it has stopped (the queue closed).
    while let Ok(first) = rx.recv() {
        msgs.push(first);
        msgs.extend(rx.try_iter());
        let wrote = msgs.iter().any(|m| matches!(m, ToSync::Batch(Committed { n: Some(_), .. })));
        #[cfg(any(test, feature = "fault-injection"))]
        if ACK_BEFORE_SYNC.load(Ordering::Relaxed) {
            // The bug: every batch answered first, then the sync; barriers after it.
            let mut barriers = Vec::new();
            for m in msgs.drain(..) {
                match m {
                    ToSync::Batch(b) => publish(shared, b, &Ok(()), spare),
                    ToSync::Barrier(tx) => barriers.push(tx),
                }
            }
            if wrote && sync(shared).is_err() {
                shared.poison();
            }
            for tx in barriers {
                let _ = tx.send(());
            }
            continue;
        }
        let synced = if shared.is_poisoned() {
            Err(LedgerError::Poisoned)
        } else if wrote {
            sync(shared)
        } else {
            Ok(())
        };
        if synced.is_err() {
            shared.poison();
        }
        for m in msgs.drain(..) {
            match m {
                ToSync::Batch(b) => publish(shared, b, &synced, spare),
                ToSync::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// After the sync that covers batch `b` (`synced`, its outcome): publishes it to readers
/// if it is durable, and answers its appends; their emptied list goes back to the writer
/// (`spare`).
fn publish(shared: &Shared, mut b: Committed, synced: &Result<()>, spare: &std::sync::mpsc::Sender<Vec<Reply>>) {
    if let (Ok(()), Some(n)) = (synced, b.n) {
        // Durable now: readers may see the new nodes (before the new size).
        if let Some(t) = &b.open_tile {
            shared.open_tile.write().unwrap_or_else(std::sync::PoisonError::into_inner).clone_from(t);
        }
        if !b.new_nodes.is_empty() {
            let mut m = shared.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            m.extend(b.new_nodes);
        }
        shared.size.store(b.size, Ordering::Release);
        // Its keys were readable in the store before it was durable; a caller that reads
        // this count and then finds no key knows which batches its look-up may have
        // missed (see `RecentKeys`).
        shared.batches.store(n, Ordering::Release);
    }
    // A failed sync wins over every answer of its batches: a conflict or a sequence
    // mismatch may have been judged against an earlier batch that never became durable.
    for (reply, out) in b.replies.drain(..) {
        let _ = reply.send(synced.clone().and(out));
    }
    // The writer may have stopped: then the list is dropped here.
    let _ = spare.send(b.replies);
}

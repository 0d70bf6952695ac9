//! Appending: one append (async, blocking, or refused at once when the queue is full),
//! a group of appends in one reserved place ([`Reserved`]), and the idempotency look-ups
//! a caller makes before it decides what to append.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Ledger;
use crate::append::{Append, Prepared, PreparedEntry};
use crate::error::{LedgerError, Result};
use crate::index::{Appended, KeyEntry, KeyLookup};
use crate::limits::{PARALLEL_PRECHECK, RESERVE_RETRY, RESERVE_WAIT};
use crate::writer::Cmd;

/// A reserved place in the writer's queue (see [`Ledger::try_reserve`]).
pub struct Reserved {
    permit: mpsc::OwnedPermit<Cmd>,
    ledger: Ledger,
}

impl Reserved {
    /// Enqueues several appends as one unit: they land in the same group commit, in
    /// order, each with its own outcome.
    pub fn append_group(
        self,
        appends: Vec<Append>,
    ) -> Result<Vec<impl std::future::Future<Output = Result<Appended>> + use<>>> {
        Ok(self.check(appends)?.queue())
    }

    /// Checks and hashes a group of appends for this place (on all cores when the group is
    /// large, else on the caller's thread), without queueing it yet: a caller that orders
    /// groups itself checks them concurrently and queues each in its turn.
    pub fn check(self, appends: Vec<Append>) -> Result<CheckedGroup> {
        let appends = if appends.len() >= PARALLEL_PRECHECK {
            use rayon::prelude::*;
            appends.into_par_iter().map(|a| self.ledger.precheck(a)).collect::<Result<Vec<_>>>()?
        } else {
            appends.into_iter().map(|a| self.ledger.precheck(a)).collect::<Result<Vec<_>>>()?
        };
        Ok(CheckedGroup { reserved: self, appends })
    }
}

/// A group of appends checked and hashed in its reserved place, ready to be queued.
pub struct CheckedGroup {
    reserved: Reserved,
    appends: Vec<Prepared>,
}

impl CheckedGroup {
    /// Queues the group (it lands in one group commit, in order); each append's outcome
    /// resolves once its batch is durable.
    pub fn queue(self) -> Vec<impl std::future::Future<Output = Result<Appended>> + use<>> {
        let mut items = Vec::with_capacity(self.appends.len());
        let mut rxs = Vec::with_capacity(self.appends.len());
        for a in self.appends {
            let (tx, rx) = oneshot::channel();
            items.push((a, tx));
            rxs.push(rx);
        }
        self.reserved.permit.send(Cmd::Append(items));
        rxs.into_iter().map(|rx| async move { rx.await.map_err(|_| LedgerError::Closed)? }).collect()
    }
}

/// A full queue refuses at once ([`LedgerError::QueueFull`]); a closed one is closed.
fn refused<T>(e: mpsc::error::TrySendError<T>) -> LedgerError {
    match e {
        mpsc::error::TrySendError::Full(_) => LedgerError::QueueFull,
        mpsc::error::TrySendError::Closed(_) => LedgerError::Closed,
    }
}

impl Ledger {
    /// Checks an append and prepares its records on the caller's thread (hashes and
    /// storage encoding; the writer only links the chain), so the one writer thread does
    /// as little per record as it can.
    fn precheck(&self, mut a: Append) -> Result<Prepared> {
        a.check(&self.inner.accepts)?;
        let entries = PreparedEntry::all(&a.records);
        // The key is looked up on the caller's thread (here, or by the caller before it
        // decided), so the one writer thread does not have to: what it finds is final
        // (keys are permanent), and what was appended after the look-up the writer
        // knows from its recent batches.
        let (seen, seen_after) = match a.looked_up.take().and_then(|l| l.serving(&a.key, self.inner.opened)) {
            Some(found) => found,
            None => self.look_up_entry(&a.key)?,
        };
        Ok(Prepared::new(a, entries, seen, seen_after))
    }

    /// Appends atomically and durably; resolves after the batch holding it is synced.
    pub async fn append(&self, a: Append) -> Result<Appended> {
        let a = self.precheck(a)?;
        self.ask(|tx| Cmd::Append(vec![(a, tx)])).await
    }

    /// Reserves a place in the queue for one group of appends, refusing at once with
    /// [`LedgerError::QueueFull`] when there is none. Reserve before deciding what to
    /// append, so a full queue never leaves a decision without its append.
    pub fn try_reserve(&self) -> Result<Reserved> {
        let permit = self.sender()?.try_reserve_owned().map_err(refused)?;
        Ok(Reserved { permit, ledger: self.clone() })
    }

    /// Reserves a place, waiting for room (from a thread outside the async runtime's
    /// workers). Refuses with [`LedgerError::QueueFull`] if the queue is still full after
    /// [`RESERVE_WAIT`] (a writer that is not moving), as
    /// [`Ledger::try_reserve`] does at once.
    pub fn reserve_blocking(&self) -> Result<Reserved> {
        self.reserve_within(RESERVE_WAIT)
    }

    /// [`Ledger::reserve_blocking`], waiting for room at most `wait`.
    pub(crate) fn reserve_within(&self, wait: Duration) -> Result<Reserved> {
        let deadline = Instant::now() + wait;
        // Bounded by the deadline: every turn that does not return sleeps.
        loop {
            match self.try_reserve() {
                Err(LedgerError::QueueFull) if Instant::now() < deadline => std::thread::sleep(RESERVE_RETRY),
                other => return other,
            }
        }
    }

    /// As [`Ledger::append`], but refuses at once with [`LedgerError::QueueFull`] when
    /// the queue is full. Returns a future of the outcome.
    pub fn try_append(&self, a: Append) -> Result<impl std::future::Future<Output = Result<Appended>> + use<>> {
        let a = self.precheck(a)?;
        let (tx, rx) = oneshot::channel();
        self.sender()?.try_send(Cmd::Append(vec![(a, tx)])).map_err(refused)?;
        Ok(async move { rx.await.map_err(|_| LedgerError::Closed)? })
    }

    /// Blocking append, for threads outside an async runtime.
    pub fn append_blocking(&self, a: Append) -> Result<Appended> {
        let a = self.precheck(a)?;
        self.ask_blocking(|tx| Cmd::Append(vec![(a, tx)]))
    }

    /// The idempotency entry for `key`, if the key was used. The entry may name records
    /// of a group commit that is written but not yet synced: they are acknowledged (and
    /// readable) once [`Ledger::size`] covers them. An entry that does not decode, or
    /// names a record the log lacks, is [`LedgerError::Inconsistent`].
    pub fn key_entry(&self, key: &[u8]) -> Result<Option<KeyEntry>> {
        self.inner.stores.key_entry(key, self.size())
    }

    /// Looks `key` up in the idempotency index; pass the result in
    /// [`Append::looked_up`] to spare the ledger a second look-up.
    pub fn look_up(&self, key: &[u8]) -> Result<KeyLookup> {
        let (entry, after) = self.look_up_entry(key)?;
        Ok(KeyLookup::new(key, self.inner.opened, entry, after))
    }

    /// The key's entry and the group commits durable before the look-up.
    fn look_up_entry(&self, key: &[u8]) -> Result<(Option<KeyEntry>, u64)> {
        // Read the count first: every batch it counts is readable below. The store may
        // also show a batch that is written but not yet synced; an entry found there is
        // only ever answered through the writer, after the sync that covers it.
        let after = self.inner.batches.load(Ordering::Acquire);
        let entry = self.key_entry(key).inspect_err(|e| self.inner.look_up_failed(e))?;
        Ok((entry, after))
    }
}

//! The writer thread: takes commands off the queue ([`Cmd`]) in groups, and builds each
//! group of appends into one atomic batch (group commit): settles every append's key,
//! links its records into the chain, grows the tree, and writes records, tree, keys,
//! projections and head together. It hands each batch, written but not synced, to the
//! sync thread ([`sync`](crate::sync)) and goes on with the next; checkpoints, key
//! rotations and projection saves wait until everything before them is durable.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use settle_mandates::checkpoint::Checkpoint;
use settle_mandates::keys::SigningKey;
use settle_mandates::merkle::Hash;
use tokio::sync::{mpsc, oneshot};

use crate::append::{Prepared, PreparedEntry};
use crate::backend::{Batch, Bytes, Durability, Space};
use crate::checkpoint::SignedCheckpoint;
use crate::error::{LedgerError, Result};
use crate::index::{Appended, KeyEntry, RecentKeys};
use crate::limits::{MAX_BATCH_RECORDS, SYNC_QUEUE};
use crate::projection::{self, ProjectionUpdate};
use crate::shared::Shared;
use crate::store::{HEAD, Head, Stores};
use crate::sync::{Committed, Reply, ToSync, sync_loop};
use crate::tree::{Frontier, OpenTile, TILE_HEIGHT, TILE_WIDTH, upper_key};

/// What the handles ask of the writer thread, in queue order.
pub(crate) enum Cmd {
    Append(Vec<(Prepared, oneshot::Sender<Result<Appended>>)>),
    Checkpoint(i64, oneshot::Sender<Result<SignedCheckpoint>>),
    Rotate(SigningKey, oneshot::Sender<Result<()>>),
    Projection(ProjectionUpdate, u64, oneshot::Sender<Result<()>>),
    /// Answered once everything written before it is durable.
    Durable(oneshot::Sender<Result<()>>),
}

/// Where the log stands for the writer: what opening the store found, and then what the
/// writer has written (durable or not).
#[derive(Clone)]
pub(crate) struct Tip {
    pub(crate) chain: Hash,
    pub(crate) frontier: Frontier,
    /// The tile being filled, including what is not durable yet.
    pub(crate) open_tile: OpenTile,
}

/// Starts the writer thread on the queue `rx`, from `tip`; it signs checkpoints with
/// `key`. It runs until the queue closes (the last handle is
/// dropped, or [`Ledger::close`](crate::Ledger::close)).
pub(crate) fn start(shared: Arc<Shared>, rx: mpsc::Receiver<Cmd>, tip: Tip, key: SigningKey) -> Result<JoinHandle<()>> {
    let (spare_tx, spare) = std::sync::mpsc::channel();
    let mut writer = Writer { shared, rx, tip, key, recent: RecentKeys::new(1), next_batch: 1, spare };
    std::thread::Builder::new()
        .name("settle-ledger-writer".into())
        .spawn(move || writer.run(spare_tx))
        .map_err(|e| LedgerError::Storage(e.to_string()))
}

struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Cmd>,
    tip: Tip,
    key: SigningKey,
    recent: RecentKeys,
    /// Number of the next group commit (the first is 1).
    next_batch: u64,
    /// Answer lists the syncer has emptied, to fill again: a group's list is written
    /// while the group is built, and memory the writer wrote before costs less to write
    /// than memory fresh from the allocator.
    spare: std::sync::mpsc::Receiver<Vec<Reply>>,
}

/// A group commit being built: its batch, the appends' answers, the keys it appends
/// (also in `recent.map`, which settles duplicates within the batch) and the upper
/// nodes it completes.
struct Group {
    batch: Batch,
    replies: Vec<Reply>,
    keys: Vec<Bytes>,
    new_nodes: Vec<((u32, u64), Hash)>,
}

impl Writer {
    /// Runs the writer, and the syncer beside it, which hands emptied answer lists back
    /// through `spare`.
    fn run(&mut self, spare: std::sync::mpsc::Sender<Vec<Reply>>) {
        let shared = Arc::clone(&self.shared);
        let (to_sync, rx) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        std::thread::scope(|scope| {
            let syncer = std::thread::Builder::new()
                .name("settle-ledger-sync".into())
                .spawn_scoped(scope, move || sync_loop(&shared, &rx, &spare));
            if let Err(e) = syncer {
                self.shared.poison();
                let err = LedgerError::Storage(format!("cannot start the sync thread: {e}"));
                // Ends when the queue closes (the last handle dropped, or `close`).
                while let Some(c) = self.rx.blocking_recv() {
                    fail_rest(vec![c], &err);
                }
                return;
            }
            self.collect(&to_sync);
            // Dropping the sender stops the syncer once it has drained; the scope waits.
            drop(to_sync);
        });
    }

    /// Takes commands off the queue in groups of up to [`MAX_BATCH_RECORDS`] records.
    fn collect(&mut self, to_sync: &SyncSender<ToSync>) {
        let mut cmds = Vec::with_capacity(1024);
        // Ends when the queue closes: the last handle is dropped, or `close` takes the
        // sender; what was queued before is processed first.
        while let Some(first) = self.rx.blocking_recv() {
            cmds.push(first);
            let mut n_records = 0usize;
            while n_records < MAX_BATCH_RECORDS {
                match self.rx.try_recv() {
                    Ok(c) => {
                        if let Cmd::Append(v) = &c {
                            n_records += v.iter().map(|(a, _)| a.count).sum::<usize>();
                        }
                        cmds.push(c);
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut cmds, to_sync);
        }
    }

    /// One group of commands: its appends become one group commit, written and handed
    /// to the syncer; then the other commands run, once everything before them is
    /// durable.
    fn process(&mut self, cmds: &mut Vec<Cmd>, to_sync: &SyncSender<ToSync>) {
        let mut appends = Vec::with_capacity(cmds.len());
        let mut after: Vec<Cmd> = Vec::new();
        for cmd in cmds.drain(..) {
            match cmd {
                Cmd::Append(v) => appends.extend(v),
                other => after.push(other),
            }
        }
        let shared = Arc::clone(&self.shared);
        let start = self.tip.clone();
        let group = self.build(&shared.stores, appends);
        let Some(committed) = self.write(group, start) else {
            fail_rest(after, &LedgerError::Poisoned);
            return;
        };
        if let Err(ToSync::Batch(c)) = to_sync.send(ToSync::Batch(committed)).map_err(|e| e.0) {
            for (reply, _) in c.replies {
                let _ = reply.send(Err(LedgerError::Closed));
            }
        }
        self.run_after(after, to_sync);
    }

    /// Builds the group commit of `appends`, in order: each is refused, answered with
    /// its original outcome, or added to the batch; the head names the last key added.
    fn build(&mut self, s: &Stores, appends: Vec<(Prepared, oneshot::Sender<Result<Appended>>)>) -> Group {
        // Sized up front: a batch of thousands of records otherwise grows (and copies)
        // its item list and the key map a dozen times.
        let n_entries: usize = appends.iter().map(|(a, _)| a.entries.len()).sum();
        let batch = Batch::with_capacity(n_entries + 2 * appends.len() + 8);
        let mut replies = self.spare.try_recv().unwrap_or_default();
        replies.reserve(appends.len());
        let mut g = Group { batch, replies, keys: Vec::with_capacity(appends.len()), new_nodes: Vec::new() };
        for (a, reply) in appends {
            let out = self.add(s, &mut g, a);
            g.replies.push((reply, out));
        }
        if let Some(last_key) = g.keys.last() {
            g.batch.insert(Space::Head, HEAD, Head::encode(self.tip.frontier.size, &self.tip.chain, last_key));
        }
        g
    }

    /// One append of a group: refused (the log is poisoned, its key cannot be read, or
    /// it expected another sequence), answered from its key's entry (a replay or a
    /// conflict), or added to the batch.
    fn add(&mut self, s: &Stores, g: &mut Group, a: Prepared) -> Result<Appended> {
        if self.shared.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        if let Some(e) = self.existing(s, &a)? {
            return if e.content_hash == a.content_hash {
                Ok(Appended { replayed: true, ..e.appended })
            } else {
                Err(LedgerError::KeyConflict {
                    key: String::from_utf8_lossy(&a.key).into_owned(),
                    seq: e.appended.first_seq,
                })
            };
        }
        let first_seq = self.tip.frontier.size;
        if let Some(exp) = a.expected_seq
            && exp != first_seq
        {
            return Err(LedgerError::SequenceMismatch { expected: exp, actual: first_seq });
        }
        Ok(self.add_records(g, a))
    }

    /// The entry of `a`'s key: from this group or the recent ones, from the caller's
    /// look-up, or (when that look-up is older than the recent batches) from the store.
    fn existing(&self, s: &Stores, a: &Prepared) -> Result<Option<KeyEntry>> {
        match self.recent.map.get(&a.key) {
            Some(e) => Ok(Some(*e)),
            None if a.seen.is_some() => Ok(a.seen),
            // Every batch made durable after the look-up is in `recent`.
            None if a.seen_after + 1 >= self.recent.from => Ok(None),
            None => s.key_entry(&a.key, self.tip.frontier.size).inspect_err(|e| self.shared.look_up_failed(e)),
        }
    }

    /// Adds an append the log takes to the batch: its entries, then its key, then its
    /// projection.
    fn add_records(&mut self, g: &mut Group, a: Prepared) -> Appended {
        let first_seq = self.tip.frontier.size;
        let count = u32::try_from(a.count).unwrap_or(u32::MAX);
        for e in a.entries {
            self.add_entry(g, e);
        }
        let appended = Appended { first_seq, count, chain: self.tip.chain, replayed: false };
        let entry = KeyEntry { content_hash: a.content_hash, appended };
        // After the records: a reader that sees the key sees them (`Stores::key_entry`).
        g.batch.insert(Space::Keys, a.key.clone(), entry.encode());
        self.recent.map.insert(a.key.clone(), entry);
        g.keys.push(a.key);
        if let Some(p) = a.projection {
            g.batch.insert(Space::Projections, p.name, projection::encode(self.tip.frontier.size - 1, &p.state));
        }
        appended
    }

    /// Adds one entry under the sequence of its first record: links its records, grows
    /// the tree by their leaves (the open tile in memory, upper nodes to the batch) and
    /// writes each tile they complete.
    fn add_entry(&mut self, g: &mut Group, e: PreparedEntry) {
        let tip = &mut self.tip;
        let first = tip.frontier.size;
        let (frontier, open_tile, batch, new_nodes) =
            (&mut tip.frontier, &mut tip.open_tile, &mut g.batch, &mut g.new_nodes);
        let value = e.link(first, &mut tip.chain, |leaf| {
            frontier.push(leaf, |level, index, h| {
                if level < TILE_HEIGHT {
                    open_tile.set(level, index, h);
                } else {
                    batch.insert(Space::Upper, upper_key(level, index).to_vec(), h.to_vec());
                    new_nodes.push(((level, index), h));
                }
            });
            if open_tile.count == TILE_WIDTH {
                batch.insert(Space::Tiles, open_tile.index.to_be_bytes().to_vec(), open_tile.bytes());
                *open_tile = OpenTile::new(open_tile.index + 1);
            }
        });
        g.batch.insert(Space::Records, first.to_be_bytes().to_vec(), value);
    }

    /// Writes the group to the store, not synced: the syncer syncs it (and acknowledges
    /// its appends) while this thread builds the next batch. `None` when the write
    /// failed: the ledger is poisoned, the writer is back at `start`, and every append
    /// of the group has had its answer (a storage error).
    fn write(&mut self, g: Group, start: Tip) -> Option<Committed> {
        let Group { batch, replies, keys, new_nodes } = g;
        let mut committed = Committed { n: None, size: 0, open_tile: None, new_nodes, replies };
        if batch.is_empty() {
            return Some(committed);
        }
        if let Err(e) = self.shared.stores.backend.write(batch, Durability::Later) {
            // Nothing of this batch is acknowledged; refuse everything after.
            self.shared.poison();
            for k in &keys {
                self.recent.map.remove(k);
            }
            self.tip = start;
            let err = LedgerError::Storage(e.to_string());
            for (reply, out) in committed.replies {
                let _ = reply.send(out.and(Err(err.clone())));
            }
            return None;
        }
        let n = self.next_batch;
        self.next_batch += 1;
        self.recent.committed(n, keys, self.shared.batches.load(std::sync::atomic::Ordering::Acquire));
        committed.n = Some(n);
        committed.size = self.tip.frontier.size;
        committed.open_tile = Some(self.tip.open_tile.clone());
        Some(committed)
    }

    /// Runs the group's other commands once every batch before them is durable:
    /// checkpoints and projections are of durable records only.
    fn run_after(&mut self, after: Vec<Cmd>, to_sync: &SyncSender<ToSync>) {
        if after.is_empty() {
            return;
        }
        if let Err(e) = self.barrier(to_sync) {
            fail_rest(after, &e);
            return;
        }
        for cmd in after {
            match cmd {
                Cmd::Checkpoint(time, reply) => {
                    let _ = reply.send(self.checkpoint(time));
                }
                Cmd::Rotate(key, reply) => {
                    self.key = key;
                    let _ = reply.send(Ok(()));
                }
                Cmd::Projection(p, seq, reply) => {
                    let _ = reply.send(self.projection(p, seq));
                }
                Cmd::Durable(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Cmd::Append(..) => unreachable!("appends are handled above"),
            }
        }
    }

    /// Waits until every batch handed to the syncer is durable and published.
    fn barrier(&self, to_sync: &SyncSender<ToSync>) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        to_sync.send(ToSync::Barrier(tx)).map_err(|_| LedgerError::Closed)?;
        rx.recv().map_err(|_| LedgerError::Closed)?;
        if self.shared.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        Ok(())
    }

    /// Stores a projection's state as of record `seq`, the last one, and syncs.
    fn projection(&mut self, p: ProjectionUpdate, seq: u64) -> Result<()> {
        if self.shared.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        let size = self.tip.frontier.size;
        if size != seq + 1 {
            return Err(LedgerError::SequenceMismatch { expected: seq + 1, actual: size });
        }
        let s = &self.shared.stores;
        let r = s.projections.insert(p.name, projection::encode(seq, &p.state)).and_then(|()| s.backend.sync());
        if let Err(e) = r {
            self.shared.poison();
            return Err(e);
        }
        Ok(())
    }

    /// Signs and stores a checkpoint of the tree at log time `time`, and syncs; the
    /// latest one unchanged if the tree has not grown.
    fn checkpoint(&mut self, time: i64) -> Result<SignedCheckpoint> {
        if self.shared.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        let s = &self.shared.stores;
        let size = self.tip.frontier.size;
        if let Some(last) = s.latest_checkpoint()?
            && last.checkpoint.size == size
        {
            return Ok(last);
        }
        let cp = Checkpoint { origin: self.shared.origin.clone(), size, root: self.tip.frontier.root(), time };
        let note = cp.sign(&self.key);
        let r = s.put_checkpoint(size, &note).and_then(|()| s.backend.sync());
        if let Err(e) = r {
            self.shared.poison();
            return Err(e);
        }
        Ok(SignedCheckpoint { checkpoint: cp, note })
    }
}

/// Answers every command of `cmds` with `err`.
fn fail_rest(cmds: Vec<Cmd>, err: &LedgerError) {
    for c in cmds {
        match c {
            Cmd::Append(v) => {
                for (_, r) in v {
                    let _ = r.send(Err(err.clone()));
                }
            }
            Cmd::Checkpoint(_, r) => {
                let _ = r.send(Err(err.clone()));
            }
            Cmd::Rotate(_, r) => {
                let _ = r.send(Err(err.clone()));
            }
            Cmd::Projection(_, _, r) | Cmd::Durable(r) => {
                let _ = r.send(Err(err.clone()));
            }
        }
    }
}

//! The storage model behind the ledger's storage seam ([`Backend`]): the eight
//! keyspaces in memory, with exactly the failures a real store may show the ledger, at
//! the moments the simulator chooses from its seed.
//!
//! What the seam promises, and so what the model keeps: a batch is written whole or not
//! at all (fjall's journal checksums each batch; PostgreSQL commits a transaction
//! whole); batches become durable in the order they were written; a read sees every batch
//! written, synced or not. What it may do, and so what the model does:
//!
//! - **Crash** (a power cut): every batch written since the last successful sync may be
//!   lost. The batches that survive are a prefix of them, in order: all, none, or the
//!   first k (the unsynced tail torn at a batch boundary). A crash also strikes during a
//!   call: the write or sync under way fails, and so does every later call of that
//!   process (its handles go stale: a restart is a new process).
//! - **A failed sync**: the sync returns an error; what it was to make durable may or may
//!   not survive the next crash.
//! - **A full disk**: writes fail until the process restarts (the operator frees space).
//! - **A bit flipped at rest** in a stored record's event bytes: every later read returns
//!   it, until the simulator puts it back (a replaced disk).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use settle_ledger::LedgerError;
use settle_ledger::backend::{Backend, Batch, Bytes, Change, Durability, Entries, Space};

/// A key of the model: its keyspace and its bytes.
type Key = (Space, Vec<u8>);

/// What a backend's calls answer.
type Res<T> = Result<T, LedgerError>;

/// A fault armed for a later call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The process dies during the `n`-th mutating call (write or sync) from now.
    CrashAt(u64),
    /// The process dies during the `n`-th call of any kind (a read too) from now: a
    /// recovery only reads, and dies half-way.
    CrashAtCall(u64),
    /// The `n`-th sync from now fails.
    FailSyncAt(u64),
    /// From the `n`-th write from now, the disk is full.
    FullAt(u64),
}

/// What the model has seen, for the simulator's checks and its printed schedule.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Batches written.
    pub writes: u64,
    /// Syncs that succeeded.
    pub syncs: u64,
    /// Syncs that failed.
    pub failed_syncs: u64,
    /// Writes refused for a full disk.
    pub full: u64,
    /// Crashes.
    pub crashes: u64,
}

#[derive(Default)]
struct State {
    /// What survives any crash.
    durable: BTreeMap<Key, Vec<u8>>,
    /// What reads see: `durable` and every batch written since.
    live: BTreeMap<Key, Vec<u8>>,
    /// Batches written since the last successful sync, in order.
    pending: Vec<Batch>,
    /// The process generation: a handle of an older one is a dead process's.
    generation: u64,
    /// The current process has died (a crash struck): every call fails.
    down: bool,
    /// Mutating calls, writes and syncs, since the disk was made.
    calls: u64,
    /// Calls of any kind.
    all_calls: u64,
    crash_at_call: Option<u64>,
    writes_n: u64,
    syncs_n: u64,
    /// When armed faults strike: at which mutating call, sync, write.
    crash_at: Option<u64>,
    fail_sync_at: Option<u64>,
    full_from: Option<u64>,
    /// A bit flipped at rest: the key, the byte and bit, and the value as flipped.
    flipped: Option<(Key, usize, u8, Vec<u8>)>,
    counts: Counts,
}

/// A simulated disk: what the processes of one simulated run share.
#[derive(Default)]
pub struct Disk {
    state: Mutex<State>,
}

/// The model's handle for one process: every call of a dead process fails.
struct Handle {
    disk: Arc<Disk>,
    generation: u64,
}

fn err(what: &str) -> LedgerError {
    LedgerError::Storage(format!("simulated: {what}"))
}

fn apply(map: &mut BTreeMap<Key, Vec<u8>>, b: &Batch) {
    for c in b.changes() {
        match c {
            Change::Put(s, k, v) => {
                map.insert((*s, k.to_vec()), v.to_vec());
            }
            Change::Remove(s, k) => {
                map.remove(&(*s, k.to_vec()));
            }
        }
    }
}

impl Disk {
    /// A new, empty disk.
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A backend for a new process on this disk (the old process's handles go stale).
    #[must_use]
    pub fn start_process(self: &Arc<Self>) -> Arc<dyn Backend> {
        let mut s = self.lock();
        s.generation += 1;
        s.down = false;
        s.full_from = None;
        Arc::new(Handle { disk: Arc::clone(self), generation: s.generation })
    }

    /// Arms `f`.
    pub fn arm(&self, f: Fault) {
        let mut s = self.lock();
        match f {
            Fault::CrashAt(n) => s.crash_at = Some(s.calls + n.max(1)),
            Fault::CrashAtCall(n) => s.crash_at_call = Some(s.all_calls + n.max(1)),
            Fault::FailSyncAt(n) => s.fail_sync_at = Some(s.syncs_n + n.max(1)),
            Fault::FullAt(n) => s.full_from = Some(s.writes_n + n.max(1)),
        }
    }

    /// Disarms every fault not yet struck (a disk found full stays full until the
    /// process restarts).
    pub fn disarm(&self) {
        let mut s = self.lock();
        s.crash_at = None;
        s.crash_at_call = None;
        s.fail_sync_at = None;
        if s.full_from.is_some_and(|f| s.writes_n < f) {
            s.full_from = None;
        }
    }

    /// Whether a crash struck the current process.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.lock().down
    }

    /// The power goes: the current process is dead, and of the batches written since
    /// the last successful sync only the first `keep` of `pending` survive (`keep` is
    /// taken modulo their number plus one). Answers how many there were and how many
    /// survive.
    pub fn power_cut(&self, keep: usize) -> (usize, usize) {
        self.cut(|n| keep % (n + 1), true)
    }

    /// The power goes after everything written was synced or not: all of it survives
    /// (a restart that loses nothing).
    pub fn restart_keeping_all(&self) {
        self.cut(|n| n, false);
    }

    /// The power goes: of the `n` unsynced batches the first `keep(n)` survive, the rest
    /// are lost (`counted`: as a crash). Answers `n` and how many survive.
    fn cut(&self, keep: impl FnOnce(usize) -> usize, counted: bool) -> (usize, usize) {
        let mut s = self.lock();
        s.down = true;
        s.counts.crashes += u64::from(counted);
        let n = s.pending.len();
        let keep = keep(n).min(n);
        let survivors: Vec<Batch> = s.pending.drain(..keep).collect();
        s.pending.clear();
        let mut durable = std::mem::take(&mut s.durable);
        for b in &survivors {
            apply(&mut durable, b);
        }
        s.live.clone_from(&durable);
        s.durable = durable;
        (n, keep)
    }

    /// Flips bit `bit` of a byte of the event bytes of a record (chosen by `at`) of the
    /// `nth` stored record entry (modulo their number), at rest: the key flipped,
    /// or `None` when there is none.
    pub fn flip(&self, nth: usize, at: usize, bit: u8) -> Option<Vec<u8>> {
        let mut s = self.lock();
        let keys: Vec<Key> = s.durable.keys().filter(|(sp, _)| *sp == Space::Records).cloned().collect();
        let key = keys.get(nth % keys.len().max(1))?.clone();
        let value = s.durable.get(&key)?;
        let events = event_ranges(value);
        let (from, to) = *events.get(at % events.len().max(1))?;
        let i = from + at % (to - from).max(1);
        let mask = 1u8 << (bit % 8);
        let st = &mut *s;
        for map in [&mut st.durable, &mut st.live] {
            if let Some(v) = map.get_mut(&key) {
                v[i] ^= mask;
            }
        }
        let flipped = s.durable.get(&key).cloned().unwrap_or_default();
        s.flipped = Some((key.clone(), i, mask, flipped));
        Some(key.1)
    }

    /// Whether the flipped bit is still flipped where it was (nothing rewrote the bytes).
    #[must_use]
    pub fn flip_in_place(&self) -> bool {
        let s = self.lock();
        s.flipped.as_ref().is_some_and(|(key, _, _, v)| s.durable.get(key) == Some(v) && s.live.get(key) == Some(v))
    }

    /// Puts a flipped bit back (the disk replaced from a good copy).
    pub fn unflip(&self) {
        let mut s = self.lock();
        let st = &mut *s;
        if let Some((key, i, mask, _)) = st.flipped.take() {
            for map in [&mut st.durable, &mut st.live] {
                if let Some(v) = map.get_mut(&key) {
                    v[i] ^= mask;
                }
            }
        }
    }

    /// What the model has seen.
    #[must_use]
    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    /// Batches written and not yet synced.
    #[must_use]
    pub fn unsynced(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Where the event bytes of each record of a stored entry are (format 3 of
/// docs/formats.md, "Stored record and hash chain": byte 3, the count, then per record
/// kind length and kind, version, event hash, chain link, event length and event).
fn event_ranges(v: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if v.first() != Some(&3) {
        return out;
    }
    let n =
        |at: usize, len: usize| v.get(at..at + len).map(|b| b.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x)));
    let Some(count) = n(1, 4) else { return out };
    let mut at = 5;
    for _ in 0..count {
        let Some(kind) = n(at, 2) else { break };
        let ev = at + 2 + kind + 4 + 32 + 32;
        let Some(len) = n(ev, 4) else { break };
        if len > 0 && ev + 4 + len <= v.len() {
            out.push((ev + 4, ev + 4 + len));
        }
        at = ev + 4 + len;
    }
    out
}

impl Handle {
    /// The state, if this process is alive (a crash armed for this call strikes).
    fn alive(&self) -> Result<MutexGuard<'_, State>, LedgerError> {
        let mut s = self.disk.lock();
        if s.generation != self.generation || s.down {
            return Err(err("the process has crashed"));
        }
        s.all_calls += 1;
        if s.crash_at_call.is_some_and(|at| s.all_calls >= at) {
            s.crash_at_call = None;
            s.down = true;
            return Err(err("the power went during the call"));
        }
        Ok(s)
    }

    /// Counts a mutating call; a crash armed for it strikes.
    fn call(s: &mut State) -> Result<(), LedgerError> {
        s.calls += 1;
        if s.crash_at.is_some_and(|at| s.calls >= at) {
            s.crash_at = None;
            s.down = true;
            return Err(err("the power went during the call"));
        }
        Ok(())
    }
}

fn in_range(k: &[u8], from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    let lo = match from {
        Bound::Included(f) => k >= f,
        Bound::Excluded(f) => k > f,
        Bound::Unbounded => true,
    };
    let hi = match to {
        Bound::Included(t) => k <= t,
        Bound::Excluded(t) => k < t,
        Bound::Unbounded => true,
    };
    lo && hi
}

impl Backend for Handle {
    fn get(&self, space: Space, key: &[u8]) -> Res<Option<Bytes>> {
        let s = self.alive()?;
        Ok(s.live.get(&(space, key.to_vec())).map(|v| Bytes::from(v.as_slice())))
    }

    fn range(&self, space: Space, from: Bound<&[u8]>, to: Bound<&[u8]>) -> Entries {
        let found: Vec<Res<(Bytes, Bytes)>> = match self.alive() {
            Err(e) => vec![Err(e)],
            Ok(s) => s
                .live
                .range((space, Vec::new())..)
                .take_while(|((sp, _), _)| *sp == space)
                .filter(|((_, k), _)| in_range(k, from, to))
                .map(|((_, k), v)| Ok((Bytes::from(k.as_slice()), Bytes::from(v.as_slice()))))
                .collect(),
        };
        Box::new(found.into_iter())
    }

    fn last_before(&self, space: Space, to: Bound<&[u8]>) -> Res<Option<(Bytes, Bytes)>> {
        let s = self.alive()?;
        Ok(s.live
            .range((space, Vec::new())..)
            .take_while(|((sp, _), _)| *sp == space)
            .filter(|((_, k), _)| in_range(k, Bound::Unbounded, to))
            .last()
            .map(|((_, k), v)| (Bytes::from(k.as_slice()), Bytes::from(v.as_slice()))))
    }

    fn write(&self, batch: Batch, durability: Durability) -> Res<()> {
        let mut s = self.alive()?;
        Self::call(&mut s)?;
        s.writes_n += 1;
        if s.full_from.is_some_and(|f| s.writes_n >= f) {
            s.counts.full += 1;
            return Err(err("no space left on the device"));
        }
        s.counts.writes += 1;
        apply(&mut s.live, &batch);
        s.pending.push(batch);
        if durability == Durability::Synced {
            drop(s);
            return self.sync();
        }
        Ok(())
    }

    fn sync(&self) -> Res<()> {
        let mut s = self.alive()?;
        Self::call(&mut s)?;
        s.syncs_n += 1;
        if s.fail_sync_at.is_some_and(|at| s.syncs_n >= at) {
            s.fail_sync_at = None;
            s.counts.failed_syncs += 1;
            return Err(err("the sync failed (EIO)"));
        }
        s.counts.syncs += 1;
        let pending = std::mem::take(&mut s.pending);
        let mut durable = std::mem::take(&mut s.durable);
        for b in &pending {
            apply(&mut durable, b);
        }
        s.durable = durable;
        Ok(())
    }

    fn describe(&self) -> String {
        "sim:memory".into()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

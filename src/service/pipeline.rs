//! The sequencer's pipeline: decide → sign → queue, one group at a time.
//!
//! A group of submissions is decided in order under the sequencer's lock (it fixes every
//! record's sequence number), its mandates signed on all cores (each signature a task of
//! its own), its appends checked and queued to the ledger as one group commit, before the
//! lock is let go, so groups reach the ledger in the order they were decided. The doors'
//! calls go through the combiner: one thread takes every call waiting and prepares them
//! as one group, so a single conversion costs no thread of its own and concurrent ones
//! share their signing, their hand-off to the ledger and their sync.

use std::sync::Weak;
use std::sync::atomic::Ordering;

use settle_engine::replay::sign_decisions;
use settle_engine::{Envelope, Event};
use settle_ledger::{CheckedGroup, KeyLookup, LedgerError, ProjectionUpdate, Reserved};

use super::{
    Durable, InFlight, MAX_BATCH, PROJECTION, Prepared, Sequencer, Service, Span, Submit, SubmitError, WhenFull,
    content_hash, forget_durable, to_append,
};

/// A door's submissions waiting for the combiner, and where their preparation goes.
pub(super) struct Job {
    pub(super) subs: Vec<Submit>,
    pub(super) reply: tokio::sync::oneshot::Sender<Vec<Prepared>>,
}

/// A decided submission waiting to be signed and queued.
struct Decided {
    slot: usize,
    key: String,
    hash: [u8; 32],
    first: u64,
    looked_up: KeyLookup,
}

/// The submissions of one group that were decided: the decisions to sign, the engine
/// state to store with them when one is due, and the place reserved for them in the
/// ledger's queue.
struct Group {
    reserved: Reserved,
    decided: Vec<Decided>,
    decisions: Vec<settle_engine::Decision>,
    state: Option<Vec<u8>>,
}

/// What each decided submission will answer once queued: its slot, first record and
/// records.
type Meta = (usize, u64, Vec<Envelope>);

/// What a group's signing and checking gave: the group to queue and its submissions'
/// answers-to-be, or why it cannot be queued.
type Checked = Result<(CheckedGroup, Vec<Meta>), String>;

impl Service {
    /// Whether this node takes writes now: not a standby, not stopped after a storage
    /// failure (what a write beside the log, such as bank details, asks first too).
    pub fn writable(&self) -> Result<(), SubmitError> {
        if self.follower {
            return Err(SubmitError::Storage(
                "this node is a standby: it serves reads and takes over when the writer stops; write to the writer"
                    .into(),
            ));
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(SubmitError::Storage("the service stopped after a storage failure; restart it".into()));
        }
        Ok(())
    }

    /// Decides `subs` in order, signs what they cause (on all cores) and queues it as one
    /// group commit, all under the sequencer's lock, after a place in the ledger's queue is
    /// reserved for it: each submission is then answered, pending, or waits for an earlier
    /// one with its key.
    pub(super) fn prepare(&self, subs: Vec<Submit>, when_full: WhenFull) -> Vec<Prepared> {
        let refuse_all = |err: SubmitError| subs.iter().map(|_| Prepared::Done(Err(err.clone()))).collect();
        if let Err(e) = self.writable() {
            return refuse_all(e);
        }
        let mut sq = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        forget_durable(&mut sq, self.ledger.size());
        // A place in the queue first: a full queue refuses before anything is decided.
        let reserved = match when_full {
            WhenFull::Wait => self.ledger.reserve_blocking(),
            WhenFull::Refuse => self.ledger.try_reserve(),
        };
        let reserved = match reserved {
            Ok(r) => r,
            Err(LedgerError::QueueFull) => return refuse_all(SubmitError::Busy),
            Err(e) => return refuse_all(SubmitError::Storage(e.to_string())),
        };
        let mut slots: Vec<Option<Prepared>> = Vec::with_capacity(subs.len());
        let (mut decided, mut decisions) = (Vec::new(), Vec::new());
        for s in subs {
            match self.decide_one(&mut sq, s, slots.len()) {
                Ok((d, decision)) => {
                    decided.push(d);
                    decisions.push(decision);
                    slots.push(None);
                }
                Err(p) => slots.push(Some(p)),
            }
        }
        if !decided.is_empty() {
            // The state after every decision above is the state as of the group's last
            // record: stored with it, atomically, or not at all.
            let state = sq.state_to_store();
            let queued = self.sign_and_check(Group { reserved, decided, decisions, state }).map(|(group, metas)| {
                let acks = group.queue().into_iter().map(|f| -> Durable { Box::new(Box::pin(f)) });
                metas.into_iter().zip(acks).collect()
            });
            if queued.is_err() {
                // Decided but not queued: the engine is ahead of the log. Refuse writes
                // until a restart rebuilds the engine from the log.
                self.fail();
            }
            fill(&mut slots, queued);
        }
        drop(sq);
        slots.into_iter().map(|s| s.unwrap_or_else(|| unreachable!("every slot is filled"))).collect()
    }

    /// One submission: the answer it already has (`Err`: refused, a retry, a conflict),
    /// or the engine's decision, against the next sequence number.
    fn decide_one(
        &self,
        sq: &mut Sequencer,
        s: Submit,
        slot: usize,
    ) -> Result<(Decided, settle_engine::Decision), Prepared> {
        let hash = content_hash(&s);
        let earlier = |key: String, h: [u8; 32], span: Span| {
            if h == hash { Prepared::Wait(span) } else { Prepared::Conflict(key, span) }
        };
        if let Some(f) = sq.inflight.get(&s.key) {
            return Err(earlier(s.key, f.content_hash, Span { first: f.first_seq, count: f.count }));
        }
        let looked_up = self
            .ledger
            .look_up(s.key.as_bytes())
            .map_err(|e| Prepared::Done(Err(SubmitError::Storage(e.to_string()))))?;
        if let Some(e) = looked_up.entry() {
            let span = Span { first: e.appended.first_seq, count: e.appended.count };
            return Err(earlier(s.key, e.content_hash, span));
        }
        let env = Envelope { v: 1, at: s.at, by: s.by, key: Some(s.key.clone()), cause: None, event: s.event };
        let first = sq.next;
        let d = sq.engine.decide(env, first).map_err(|e| Prepared::Done(Err(e.into())))?;
        let count = 1 + u32::try_from(d.outputs.len()).unwrap_or(u32::MAX);
        sq.next += u64::from(count);
        sq.inflight.insert(s.key.clone(), InFlight { content_hash: hash, first_seq: first, count });
        Ok((Decided { slot, key: s.key, hash, first, looked_up }, d))
    }

    /// Signs a group's mandates (on all cores) and checks and hashes its appends in their
    /// reserved place, ready to be queued.
    fn sign_and_check(&self, group: Group) -> Checked {
        let Group { reserved, decided, decisions, state, .. } = group;
        let signed = sign_decisions(decisions, &self.key);
        let mut appends = Vec::with_capacity(signed.len());
        let mut metas = Vec::with_capacity(signed.len());
        for (d, records) in decided.into_iter().zip(signed) {
            metas.push((d.slot, d.first, records.iter().map(|r| r.envelope.clone()).collect::<Vec<Envelope>>()));
            appends.push(to_append(&d.key, d.hash, d.first, records, d.looked_up));
        }
        if let Some(state) = state
            && let Some(last) = appends.last_mut()
        {
            last.projection = Some(ProjectionUpdate { name: PROJECTION.into(), state });
        }
        let checked = reserved.check(appends).map_err(|e| e.to_string())?;
        Ok((checked, metas))
    }
}

/// Fills the slots of a group's decided submissions: pending on their acknowledgements,
/// or failed.
fn fill(slots: &mut [Option<Prepared>], queued: Result<Vec<(Meta, Durable)>, String>) {
    match queued {
        Ok(acks) => {
            for ((slot, first, records), durable) in acks {
                slots[slot] = Some(Prepared::Pending { first, records, durable });
            }
        }
        Err(e) => {
            for slot in slots.iter_mut().filter(|s| s.is_none()) {
                *slot = Some(Prepared::Done(Err(SubmitError::Storage(e.clone()))));
            }
        }
    }
}

/// The combiner: takes the doors' waiting submissions of small facts, at most
/// [`MAX_BATCH`] at a time in the order they came, and prepares them as one group (any
/// other call as a group of its own). Ends when the service is dropped.
pub(super) fn combine(svc: &Weak<Service>, queued: &std::sync::mpsc::Receiver<Job>) {
    let mut carried: Option<Job> = None;
    // Bounded: each turn waits for a job and ends when the service and its sender are gone.
    loop {
        let Some(first) = carried.take().or_else(|| queued.recv().ok()) else { return };
        let mut n = first.subs.len();
        let alone = !small(&first);
        let mut jobs = vec![first];
        while !alone && let Ok(j) = queued.try_recv() {
            if n + j.subs.len() > MAX_BATCH || !small(&j) {
                carried = Some(j);
                break;
            }
            n += j.subs.len();
            jobs.push(j);
        }
        let Some(svc) = svc.upgrade() else { return };
        let mut subs = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(jobs.len());
        for j in jobs {
            replies.push((j.subs.len(), j.reply));
            subs.extend(j.subs);
        }
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.prepare(subs, WhenFull::Refuse)));
        if prepared.is_err() {
            svc.fail();
        }
        // The callers may hold the last references to the service: let go of it first, so
        // it is dropped (and its ledger closed) where they drop it, not here.
        drop(svc);
        // A panic drops the replies: their callers answer a failure.
        if let Ok(prepared) = prepared {
            answer(prepared.into_iter().map(Some).collect(), replies);
        }
    }
}

/// Whether a call is made of small facts only (leads, hand-offs, conversions, refunds: a
/// few records each), which are combined with others; any other call (a payout, a
/// settlement, holds released: up to thousands of records) is prepared alone, so a group
/// commit stays within the ledger's batch.
fn small(job: &Job) -> bool {
    job.subs.iter().all(|s| {
        matches!(
            s.event,
            Event::LeadRegistered { .. }
                | Event::LeadHandedOff { .. }
                | Event::ConversionRecorded { .. }
                | Event::RefundRecorded { .. }
        )
    })
}

/// Sends each caller of a group the slots of its own submissions, in order.
fn answer(slots: Vec<Option<Prepared>>, replies: Vec<(usize, tokio::sync::oneshot::Sender<Vec<Prepared>>)>) {
    let mut slots = slots.into_iter().map(|s| s.unwrap_or_else(|| unreachable!("every slot is filled")));
    for (len, reply) in replies {
        let _ = reply.send(slots.by_ref().take(len).collect());
    }
}

//! The sequencer's pipeline: decide → sign → queue.
//!
//! A group of submissions is decided in order under the sequencer's lock (it fixes every
//! record's sequence number) and takes the next turn. Its mandates are then signed on all
//! cores (each signature a task of its own) and its appends checked outside the lock, so
//! the next group is decided while this one is signed. The turnstile queues groups to
//! the ledger in the order of their turns, whichever finishes signing first: the ledger
//! checks each append's expected sequence number, so they must arrive in the order they
//! were decided. The doors' calls go through the combiner: one thread takes every call
//! waiting, decides them as one group and hands its signing to the pool, so a single
//! conversion costs no thread of its own and concurrent ones share their signing, their
//! hand-off to the ledger and their sync.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError, Weak};

use settle_engine::replay::sign_decisions;
use settle_engine::{Envelope, Event};
use settle_ledger::{CheckedGroup, KeyLookup, LedgerError, NewRecord, ProjectionUpdate, Reserved};

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

/// The submissions of one group that were decided: its turn, the decisions to sign, the
/// engine state to store with them when one is due, and the place reserved for them in
/// the ledger's queue.
pub(super) struct Group {
    turn: u64,
    reserved: Reserved,
    decided: Vec<Decided>,
    decisions: Vec<settle_engine::Decision>,
    state: Option<Vec<u8>>,
}

/// What each decided submission will answer once queued: its slot and records.
type Meta = (usize, Vec<Envelope>);

/// What a group's signing and checking gave: the group to queue and its submissions'
/// answers-to-be, or why it cannot be queued.
type Checked = Result<(CheckedGroup, Vec<Meta>), String>;

/// Each submission's slot: answered already, or waiting for its group to be queued.
pub(super) type Slots = Vec<Option<Prepared>>;

/// Where a group's answers go once it is queued (or failed).
pub(super) type Then = Box<dyn FnOnce(Vec<Prepared>) + Send>;

/// Answers ready to be handed over, outside every lock.
pub(super) type Handover = Vec<(Then, Vec<Prepared>)>;

/// Groups signed out of turn, waiting for the groups decided before them.
#[derive(Default)]
pub(super) struct Turnstile(Mutex<Turns>);

#[derive(Default)]
struct Turns {
    /// The next turn to queue.
    next: u64,
    /// Groups signed (or failed) whose turn has not come.
    waiting: BTreeMap<u64, (Checked, Slots, Then)>,
}

impl Turnstile {
    /// Groups signed and waiting for their turn.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).waiting.len()
    }
}

/// Groups the combiner has handed to the pool and that are not yet queued: at most
/// [`SIGNING_AHEAD`] a pool thread. Past that the combiner waits, and the calls that come
/// meanwhile join its next group, so the pool's backlog (and the nesting of one group's
/// signing inside another's on a pool thread's stack) stays bounded.
#[derive(Default)]
pub(super) struct Signing {
    groups: Mutex<usize>,
    left: std::sync::Condvar,
}

/// Groups in signing a pool thread may have ahead of the combiner.
const SIGNING_AHEAD: usize = 2;

impl Signing {
    /// Waits for a place (bounded: each place is given back once its group is queued).
    fn enter(&self) {
        let most = SIGNING_AHEAD * rayon::current_num_threads().max(1);
        let mut n = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        while *n >= most {
            n = self.left.wait(n).unwrap_or_else(PoisonError::into_inner);
        }
        *n += 1;
    }

    /// Gives a place back.
    fn leave(&self) {
        let mut n = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        drop(n);
        self.left.notify_one();
    }
}

/// Hands each group's answers to where they go.
pub(super) fn hand_over(answers: Handover) {
    for (then, prepared) in answers {
        then(prepared);
    }
}

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
    /// group commit in its turn, after a place in the ledger's queue is reserved for it:
    /// each submission is then answered, pending, or waits for an earlier one with its
    /// key. Returns once the group is queued, which may wait for groups decided before
    /// it: so not from a pool thread while the doors use the same service (their groups
    /// are signed on the pool).
    pub(super) fn prepare(&self, subs: Vec<Submit>, when_full: WhenFull) -> Vec<Prepared> {
        let n = subs.len();
        let (slots, group) = self.decide_group(subs, when_full);
        let Some(group) = group else { return unwrap_slots(slots) };
        let (tx, rx) = std::sync::mpsc::channel();
        hand_over(self.sign_and_queue(
            group,
            slots,
            Box::new(move |p| {
                let _ = tx.send(p);
            }),
        ));
        // Handed over by this thread, or by the one that queued the group before it.
        rx.recv().unwrap_or_else(|_| refused(n, &SubmitError::Storage("internal error while signing".into())))
    }

    /// Decides `subs` in order under the sequencer's lock, in a place reserved in the
    /// ledger's queue, and gives what was decided the next turn: the slots of the
    /// submissions answered already, and the group to sign (none if nothing was decided).
    pub(super) fn decide_group(&self, subs: Vec<Submit>, when_full: WhenFull) -> (Slots, Option<Group>) {
        if let Err(e) = self.writable() {
            return (refused_slots(subs.len(), &e), None);
        }
        let mut sq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        forget_durable(&mut sq, self.ledger.size());
        // A place in the queue first: a full queue refuses before anything is decided.
        let reserved = match when_full {
            WhenFull::Wait => self.ledger.reserve_blocking(),
            WhenFull::Refuse => self.ledger.try_reserve(),
        };
        let reserved = match reserved {
            Ok(r) => r,
            Err(e) => {
                let e = if matches!(e, LedgerError::QueueFull) {
                    SubmitError::Busy
                } else {
                    SubmitError::Storage(e.to_string())
                };
                return (refused_slots(subs.len(), &e), None);
            }
        };
        let mut slots: Slots = Vec::with_capacity(subs.len());
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
        if decided.is_empty() {
            return (slots, None);
        }
        // The state after every decision above is the state as of the group's last
        // record: stored with it, atomically, or not at all.
        let state = sq.state_to_store();
        let turn = sq.turns;
        sq.turns += 1;
        (slots, Some(Group { turn, reserved, decided, decisions, state }))
    }

    /// Signs and checks a decided group (a panic fails the group), then queues it in its
    /// turn, with every group after it that was waiting for it: the answers to hand over.
    pub(super) fn sign_and_queue(&self, group: Group, slots: Slots, then: Then) -> Handover {
        let turn = group.turn;
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sign_and_check(group)))
            .unwrap_or_else(|_| Err("internal error while signing".into()));
        // Under the turnstile's lock only what must be in turn: each group queued (or
        // refused) in the order of the turns. The answers are made after it is let go.
        let mut done = Vec::new();
        {
            let mut turns = self.turnstile.0.lock().unwrap_or_else(PoisonError::into_inner);
            turns.waiting.insert(turn, (checked, slots, then));
            loop {
                let next = turns.next;
                let Some((checked, slots, then)) = turns.waiting.remove(&next) else { break };
                turns.next += 1;
                let queued = match checked {
                    Ok(_) if self.failed.load(Ordering::Acquire) => {
                        Err("the service stopped after a failure; restart it".to_string())
                    }
                    Ok((group, metas)) => {
                        let acks = group.queue().into_iter().map(|f| -> Durable { Box::new(Box::pin(f)) });
                        Ok(metas.into_iter().zip(acks).collect())
                    }
                    Err(e) => Err(e),
                };
                if queued.is_err() {
                    // Decided but not queued: the engine is ahead of the log. Refuse
                    // writes until a restart rebuilds the engine from the log.
                    self.fail();
                }
                done.push((queued, slots, then));
            }
        }
        done.into_iter()
            .map(|(queued, mut slots, then)| {
                fill(&mut slots, queued);
                (then, unwrap_slots(slots))
            })
            .collect()
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
            // Each record's envelope goes to the answer and its bytes to the log: moved, not copied.
            let (envelopes, records): (Vec<Envelope>, Vec<NewRecord>) = records
                .into_iter()
                .map(|r| (r.envelope, NewRecord { kind: r.kind.into(), version: r.version, event: r.bytes }))
                .unzip();
            metas.push((d.slot, envelopes));
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
            for ((slot, records), durable) in acks {
                slots[slot] = Some(Prepared::Pending { records, durable });
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
/// [`MAX_BATCH`] at a time in the order they came, and decides them as one group (any
/// other call as a group of its own); the group is signed and queued on the pool while
/// the combiner decides the next. Ends when the service is dropped.
pub(super) fn combine(svc: &Weak<Service>, queued: &std::sync::mpsc::Receiver<Job>) {
    let mut carried: Option<Job> = None;
    // Bounded: each turn waits for a job and ends when the service and its sender are gone.
    loop {
        let Some(first) = carried.take().or_else(|| queued.recv().ok()) else { return };
        let Some(svc) = svc.upgrade() else { return };
        // A place among the groups being signed first: the calls that come meanwhile
        // join this group.
        svc.signing.enter();
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
        let mut subs = Vec::with_capacity(n);
        let mut replies = Vec::with_capacity(jobs.len());
        for j in jobs {
            replies.push((j.subs.len(), j.reply));
            subs.extend(j.subs);
        }
        let decided =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.decide_group(subs, WhenFull::Refuse)));
        match decided {
            Ok((slots, Some(group))) => {
                rayon::spawn(move || {
                    let then: Then = Box::new(move |p| answer(p, replies));
                    // A panic here would end the process (the pool's default): stop
                    // taking writes instead; the callers of the group answer a failure.
                    let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        svc.sign_and_queue(group, slots, then)
                    }));
                    if answers.is_err() {
                        svc.fail();
                    }
                    svc.signing.leave();
                    // The callers may hold the last references to the service: let go of
                    // it first, so it is dropped (and its ledger closed) where they drop
                    // it, not here.
                    drop(svc);
                    if let Ok(answers) = answers {
                        hand_over(answers);
                    }
                });
            }
            Ok((slots, None)) => {
                svc.signing.leave();
                drop(svc);
                answer(unwrap_slots(slots), replies);
            }
            // The replies are dropped: their callers answer a failure.
            Err(_) => {
                svc.signing.leave();
                svc.fail();
            }
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

/// Sends each caller of a group the answers of its own submissions, in order.
fn answer(prepared: Vec<Prepared>, replies: Vec<(usize, tokio::sync::oneshot::Sender<Vec<Prepared>>)>) {
    let mut prepared = prepared.into_iter();
    for (len, reply) in replies {
        let _ = reply.send(prepared.by_ref().take(len).collect());
    }
}

/// The answers of slots all filled.
fn unwrap_slots(slots: Slots) -> Vec<Prepared> {
    slots.into_iter().map(|s| s.unwrap_or_else(|| unreachable!("every slot is filled"))).collect()
}

/// `n` submissions refused with `err`.
fn refused(n: usize, err: &SubmitError) -> Vec<Prepared> {
    (0..n).map(|_| Prepared::Done(Err(err.clone()))).collect()
}

/// The slots of `n` submissions refused with `err`, before any was decided.
fn refused_slots(n: usize, err: &SubmitError) -> Slots {
    refused(n, err).into_iter().map(Some).collect()
}

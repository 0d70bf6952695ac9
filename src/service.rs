//! The settlement service: one sequencer in front of the ledger.
//!
//! decide (sequential, pure engine) → sign (parallel, order-preserving) → append (group
//! commit, one sync per batch) → acknowledge. A fact is decided against the sequence
//! number it will get; the ledger checks that with `expected_seq`, so engine state and
//! log can never drift apart. Retries are answered from the idempotency index (or from
//! the in-flight table while the original is not yet durable): nothing is paid twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use settle_engine::replay::{Ready, sign_decisions};
use settle_engine::{Engine, EngineConfig, Envelope, Event, Rejection, State};
use settle_ledger::{Append, Appended, KeyLookup, Ledger, LedgerConfig, LedgerError, NewRecord, ProjectionUpdate};
use settle_mandates::keys::SigningKey;
use sha2::{Digest, Sha256};

use crate::keystore::KeyFile;

/// Name of the engine's projection in the ledger. Versioned with the state's shape: a
/// state saved by an older shape is not restored (the log is replayed instead). v3: a
/// settlement derives one record per mandate. v4: the look-ups by id are no longer saved
/// (they are rebuilt), and the owners of customers are saved with the leads.
pub const PROJECTION: &str = "engine.v4";

/// The engine state is stored with an append (in the same atomic batch as its records)
/// once the log has grown by this many records, or by as many as the last stored state
/// reflected, whichever is more, since that state. A restart after a crash replays at
/// most that many records; the doubling keeps the total cost of serialising the state
/// linear in the log's length.
pub const PROJECTION_MIN_RECORDS: u64 = 4096;
/// Largest engine state stored with an append, bytes of JSON. The state is serialised
/// beside the live one (and the store holds the bytes again until its next flush), so a
/// larger one would raise the peak memory of a long run by about its size; past this,
/// only [`Service::save_state`] (at shutdown) stores it, and a crash replays the log
/// from the last state stored.
pub const PROJECTION_MAX_BYTES: usize = 8 << 20;
/// Most facts in one submitted batch.
pub const MAX_BATCH: usize = 1000;

// The largest fact and what it derives fit one append: a settlement of the most mandates
// is the fact, its booking and one record per mandate.
const _: () = assert!(2 + settle_engine::model::MAX_SETTLEMENT_MANDATES <= settle_ledger::MAX_RECORDS_PER_APPEND);

/// A fact to record.
#[derive(Debug, Clone)]
pub struct Submit {
    /// Client idempotency key.
    pub key: String,
    /// Principal.
    pub by: String,
    /// Log time.
    pub at: DateTime<Utc>,
    /// The fact.
    pub event: Event,
    /// The request as the client sent it, before the server filled in defaults such as
    /// the current time: what makes a retry "the same request". `None`: the event.
    pub request: Option<serde_json::Value>,
}

/// A recorded fact and what it caused.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Sequence of the fact.
    pub seq: u64,
    /// The fact and its derived events, in log order.
    pub records: Vec<Envelope>,
    /// True when this answers a retry.
    pub replayed: bool,
}

/// Why a submission failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// The engine refused it; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The key was used with other content.
    #[error("idempotency key '{0}' was already used with a different request")]
    KeyConflict(String),
    /// The ingest queue is full; retry later.
    #[error("ingest queue is full; retry later")]
    Busy,
    /// Storage failed; the service stopped accepting writes.
    #[error("storage failure: {0}")]
    Storage(String),
}

struct InFlight {
    content_hash: [u8; 32],
    first_seq: u64,
    count: u32,
}

struct Sequencer {
    engine: Engine,
    next: u64,
    inflight: HashMap<String, InFlight>,
    /// Records reflected by the engine state last stored (saved, or attached to an
    /// append), so the next is attached once the log has grown enough
    /// ([`PROJECTION_MIN_RECORDS`]).
    saved: u64,
    /// Bytes of that state (0: not known), to tell when the next would be over
    /// [`PROJECTION_MAX_BYTES`].
    saved_bytes: usize,
}

impl Sequencer {
    /// The engine state to store with the append that ends the log at `self.next`, when
    /// one is due and small enough.
    fn state_to_store(&mut self) -> Option<Vec<u8>> {
        let grown = self.next - self.saved;
        if grown < PROJECTION_MIN_RECORDS.max(self.saved) {
            return None;
        }
        // The state grows about with the log: expect the last size scaled by the growth.
        let expected = u128::try_from(self.saved_bytes).unwrap_or(u128::MAX) * u128::from(self.next)
            / u128::from(self.saved.max(1));
        if expected > PROJECTION_MAX_BYTES as u128 {
            return None;
        }
        let state = match serde_json::to_vec(self.engine.state()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot serialise the engine state: {e}");
                return None;
            }
        };
        (self.saved, self.saved_bytes) = (self.next, state.len());
        (state.len() <= PROJECTION_MAX_BYTES).then_some(state)
    }
}

/// The service.
pub struct Service {
    ledger: Ledger,
    key: SigningKey,
    seq: Mutex<Sequencer>,
    failed: AtomicBool,
}

/// The hash of a request as idempotency compares it: SHA-256 of its RFC 8785 (JCS) bytes.
/// The log's facts and webhook subscriptions hash their requests with this (API tokens
/// keep the hash `keys.json` has always stored, of the request's compact JSON).
#[must_use]
pub fn request_hash(request: &impl serde::Serialize) -> [u8; 32] {
    Sha256::digest(settle_mandates::jcs::to_vec(request).unwrap_or_default()).into()
}

/// The hash that makes two submissions "the same request": everything but the time.
#[must_use]
pub fn content_hash(s: &Submit) -> [u8; 32] {
    match &s.request {
        Some(r) => request_hash(&serde_json::json!({"by": s.by, "key": s.key, "request": r})),
        None => request_hash(&serde_json::json!({"by": s.by, "key": s.key, "event": s.event})),
    }
}

/// The ledger's options for the store of `keys`: the one place they are set.
pub fn ledger_config(keys: &KeyFile) -> Result<LedgerConfig> {
    Ok(LedgerConfig {
        origin: keys.origin.clone(),
        key: keys.current()?,
        accepts: Arc::new(settle_engine::model::accepts),
        persist: fjall::PersistMode::SyncAll,
    })
}

/// Opens the log of `data` (no engine), exclusively.
pub fn open_ledger(data: &Path, keys: &KeyFile) -> Result<Ledger> {
    Ledger::open(&data.join("log"), ledger_config(keys)?)
        .map_err(|e| anyhow::anyhow!("cannot open the log in {}: {e}", data.display()))
}

/// What a submission does when the ledger's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Waits for room (the demo, the clock).
    Wait,
    /// Refuses at once with [`SubmitError::Busy`] (the doors).
    Refuse,
}

/// Records `first..first + count` of the log: what one submission wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    first: u64,
    count: u32,
}

/// The acknowledgement of an append, once its batch is durable.
type Durable = Box<dyn std::future::Future<Output = Result<Appended, LedgerError>> + Send + Unpin>;

/// A submission after the sequencer saw it.
enum Prepared {
    /// Answered already (refused, or failed).
    Done(Result<Outcome, SubmitError>),
    /// Decided and queued: its records, and the acknowledgement to wait for.
    Pending { first: u64, records: Vec<Envelope>, durable: Durable },
    /// The same request was written before (or is being written): its records, once
    /// they are durable, are the answer.
    Wait(Span),
    /// The key names other content in these records: a conflict once they are durable
    /// (if their commit fails, the key was never used).
    Conflict(String, Span),
}

/// A decided submission waiting to be signed and queued.
struct Decided {
    slot: usize,
    key: String,
    hash: [u8; 32],
    first: u64,
    looked_up: KeyLookup,
}

impl Service {
    /// Opens the ledger in `DATA/log` and restores the engine (saved state + replay of
    /// the records after it).
    pub fn open(data: &Path) -> Result<Arc<Self>> {
        let keys = KeyFile::load(data)?;
        let key = keys.current()?;
        let ledger = open_ledger(data, &keys)?;
        let cfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt()? };
        let (engine, saved, saved_bytes) = restore(&ledger, cfg)?;
        let next = ledger.size();
        Ok(Arc::new(Self {
            ledger,
            key,
            seq: Mutex::new(Sequencer { engine, next, inflight: HashMap::new(), saved, saved_bytes }),
            failed: AtomicBool::new(false),
        }))
    }

    /// The ledger.
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Runs `f` on the engine state (read-only, briefly locks the sequencer).
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let s = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(s.engine.state())
    }

    /// Decides `subs` in order, signs what they cause on all cores and queues it as one
    /// group commit: each submission is then answered, pending, or waits for an earlier
    /// one with its key.
    fn prepare(&self, subs: Vec<Submit>, when_full: WhenFull) -> Vec<Prepared> {
        let refuse_all =
            |err: SubmitError| -> Vec<Prepared> { subs.iter().map(|_| Prepared::Done(Err(err.clone()))).collect() };
        if self.failed.load(Ordering::Acquire) {
            return refuse_all(SubmitError::Storage("the service stopped after a storage failure; restart it".into()));
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
        let mut decisions = Vec::new();
        let mut decided = Vec::new();
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
        self.enqueue(&mut sq, reserved, decided, decisions, &mut slots);
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

    /// Signs `decisions` on all cores and queues them, in decision order, as one group
    /// (one commit), filling their slots; the state after them goes with the last when
    /// one is due.
    fn enqueue(
        &self,
        sq: &mut Sequencer,
        reserved: settle_ledger::Reserved,
        decided: Vec<Decided>,
        decisions: Vec<settle_engine::Decision>,
        slots: &mut [Option<Prepared>],
    ) {
        if decided.is_empty() {
            return;
        }
        let signed = sign_decisions(decisions, &self.key);
        let mut appends = Vec::with_capacity(signed.len());
        let mut metas = Vec::with_capacity(signed.len());
        for (d, records) in decided.into_iter().zip(signed) {
            metas.push((d.slot, d.first, records.iter().map(|r| r.envelope.clone()).collect::<Vec<Envelope>>()));
            appends.push(to_append(&d.key, d.hash, d.first, records, d.looked_up));
        }
        // The state after every decision above is the state as of the last append's last
        // record: stored with it, atomically, or not at all.
        if let Some(state) = sq.state_to_store()
            && let Some(last) = appends.last_mut()
        {
            last.projection = Some(ProjectionUpdate { name: PROJECTION.into(), state });
        }
        match reserved.append_group(appends) {
            Ok(futs) => {
                for ((slot, first, records), f) in metas.into_iter().zip(futs) {
                    slots[slot] = Some(Prepared::Pending { first, records, durable: Box::new(Box::pin(f)) });
                }
            }
            Err(e) => {
                // Decided but not enqueued: the engine is ahead of the log. Refuse
                // writes until a restart rebuilds the engine from the log.
                self.failed.store(true, Ordering::Release);
                let err = SubmitError::Storage(e.to_string());
                for (slot, _, _) in metas {
                    slots[slot] = Some(Prepared::Done(Err(err.clone())));
                }
            }
        }
    }

    async fn complete(&self, p: Vec<Prepared>) -> Vec<Result<Outcome, SubmitError>> {
        let mut out = Vec::with_capacity(p.len());
        for x in p {
            out.push(match x {
                Prepared::Done(r) => r,
                Prepared::Pending { first, records, durable } => match durable.await {
                    Ok(a) => {
                        self.done(first);
                        Ok(Outcome { seq: a.first_seq, records, replayed: a.replayed })
                    }
                    Err(e) => {
                        self.failed.store(true, Ordering::Release);
                        Err(SubmitError::Storage(e.to_string()))
                    }
                },
                Prepared::Wait(span) => self.durable(span).await.and_then(|()| self.read_outcome(span)),
                Prepared::Conflict(key, span) => self.durable(span).await.and(Err(SubmitError::KeyConflict(key))),
            });
        }
        out
    }

    /// Waits until records `first..first + count` are durable (written by another
    /// submission's group commit); fails at once if the log stopped taking writes.
    async fn durable(&self, Span { first, count }: Span) -> Result<(), SubmitError> {
        let end = first + u64::from(count);
        for _ in 0..10_000 {
            // Stopped is read first: records durable before a later batch failed are
            // then seen in the size.
            let stopped = self.ledger.is_poisoned() || self.failed.load(Ordering::Acquire);
            if self.ledger.size() >= end {
                return Ok(());
            }
            if stopped {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Err(SubmitError::Storage(format!("records {first}..{end} did not become durable")))
    }

    fn done(&self, first: u64) {
        let mut sq = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sq.inflight.retain(|_, f| f.first_seq != first);
    }

    fn read_outcome(&self, Span { first, count }: Span) -> Result<Outcome, SubmitError> {
        let mut records = Vec::with_capacity(count as usize);
        for s in first..first + u64::from(count) {
            let r = self
                .ledger
                .record(s)
                .map_err(|e| SubmitError::Storage(e.to_string()))?
                .ok_or_else(|| SubmitError::Storage(format!("record {s} is not durable yet")))?;
            records.push(Envelope::from_bytes(&r.event).map_err(|e| SubmitError::Storage(e.to_string()))?);
        }
        Ok(Outcome { seq: first, records, replayed: true })
    }

    /// Records facts, waiting for room in the queue; each result after it is durable.
    pub async fn submit(self: &Arc<Self>, subs: Vec<Submit>) -> Vec<Result<Outcome, SubmitError>> {
        let me = Arc::clone(self);
        let n = subs.len();
        match tokio::task::spawn_blocking(move || me.prepare(subs, WhenFull::Wait)).await {
            Ok(p) => self.complete(p).await,
            Err(e) => self.panicked(n, &e),
        }
    }

    /// As [`Service::submit`] but refuses with [`SubmitError::Busy`] when the queue is full.
    pub async fn try_submit(self: &Arc<Self>, subs: Vec<Submit>) -> Vec<Result<Outcome, SubmitError>> {
        let me = Arc::clone(self);
        let n = subs.len();
        match tokio::task::spawn_blocking(move || me.prepare(subs, WhenFull::Refuse)).await {
            Ok(p) => self.complete(p).await,
            Err(e) => self.panicked(n, &e),
        }
    }

    /// A bug panicked while deciding: the engine may be ahead of the log, so stop writing
    /// (a restart rebuilds it from the log).
    fn panicked(&self, n: usize, e: &tokio::task::JoinError) -> Vec<Result<Outcome, SubmitError>> {
        self.failed.store(true, Ordering::Release);
        (0..n)
            .map(|_| Err(SubmitError::Storage(format!("internal error while deciding ({e}); restart the service"))))
            .collect()
    }

    /// Blocking [`Service::submit`] for synchronous drivers (the demo).
    pub fn submit_blocking(&self, subs: Vec<Submit>) -> Vec<Result<Outcome, SubmitError>> {
        let p = self.prepare(subs, WhenFull::Wait);
        futures_lite_block_on(self.complete(p))
    }

    /// Saves the engine state as of the last record (fast restarts).
    pub fn save_state(&self) -> Result<()> {
        let mut sq = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        forget_durable(&mut sq, self.ledger.size());
        if sq.next == 0 || !sq.inflight.is_empty() {
            return Ok(());
        }
        let state = serde_json::to_vec(sq.engine.state())?;
        let len = state.len();
        self.ledger.save_projection_blocking(ProjectionUpdate { name: PROJECTION.into(), state }, sq.next - 1)?;
        (sq.saved, sq.saved_bytes) = (sq.next, len);
        Ok(())
    }

    /// Signs a checkpoint now (log time `time`).
    pub fn checkpoint(&self, time: i64) -> Result<settle_ledger::SignedCheckpoint> {
        Ok(self.ledger.checkpoint_blocking(time)?)
    }

    /// Stops the writer after the queue drains.
    pub fn close(&self) -> Result<()> {
        Ok(self.ledger.close()?)
    }
}

/// Drops in-flight entries whose records are durable: also those whose caller went away
/// before its acknowledgement (a dropped request still commits).
fn forget_durable(sq: &mut Sequencer, durable: u64) {
    sq.inflight.retain(|_, f| f.first_seq + u64::from(f.count) > durable);
}

fn to_append(key: &str, h: [u8; 32], first: u64, records: Vec<Ready>, looked_up: KeyLookup) -> Append {
    Append {
        key: key.as_bytes().to_vec(),
        content_hash: h,
        records: records
            .into_iter()
            .map(|r| NewRecord { kind: r.kind.into(), version: r.version, event: r.bytes })
            .collect(),
        expected_seq: Some(first),
        projection: None,
        looked_up: Some(looked_up),
    }
}

/// Runs a future to completion on the current thread (the demo has no runtime).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map(|rt| rt.block_on(f))
        .unwrap_or_else(|e| panic!("cannot start a runtime: {e}"))
}

/// Rebuilds the engine: the saved state, then every fact after it. Also tells how many
/// records the stored state reflected and its size in bytes (0 and 0 without one).
pub fn restore(ledger: &Ledger, cfg: EngineConfig) -> Result<(Engine, u64, usize)> {
    let (mut engine, from, bytes) = match ledger.projection(PROJECTION)? {
        Some((seq, bytes)) => {
            let st: State = serde_json::from_slice(&bytes).context("saved engine state does not decode")?;
            (Engine::with_state(cfg, st), seq + 1, bytes.len())
        }
        None => (Engine::new(cfg), 0, 0),
    };
    replay(ledger, &mut engine, from, None)?;
    Ok((engine, from, bytes))
}

/// Feeds `engine` every fact from record `from` on (through the fact at `until`, when
/// given), checking that each fact's derived events follow it; returns the last record
/// reflected (a fact's derived events belong to it).
pub fn replay(ledger: &Ledger, engine: &mut Engine, from: u64, until: Option<u64>) -> Result<Option<u64>> {
    let mut expect_derived = 0u64;
    let mut last = None;
    for r in ledger.records(from) {
        let r = r?;
        let fact = settle_engine::model::is_fact_kind(&r.kind);
        if !fact {
            anyhow::ensure!(expect_derived > 0, "record {} is a derived event no fact caused", r.seq);
            expect_derived -= 1;
            continue;
        }
        anyhow::ensure!(
            expect_derived == 0,
            "record {} is a fact, but {expect_derived} derived events are missing before it",
            r.seq
        );
        if until.is_some_and(|u| r.seq > u) {
            return Ok(last);
        }
        let env = Envelope::from_bytes(&r.event).with_context(|| format!("record {} does not decode", r.seq))?;
        let d =
            engine.decide(env, r.seq).map_err(|e| anyhow::anyhow!("record {} is rejected on replay: {e}", r.seq))?;
        expect_derived = d.outputs.len() as u64;
        last = Some(r.seq + expect_derived);
    }
    anyhow::ensure!(expect_derived == 0, "the log ends {expect_derived} derived events short");
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(key: &str, name: &str) -> Submit {
        publish_at(key, name, Utc::now())
    }

    fn publish_at(key: &str, name: &str, at: DateTime<Utc>) -> Submit {
        let spec = serde_json::json!({
            "program": "growth", "name": name, "currency": "USD", "holding_days": 0,
            "attribution_window_days": 120, "pool_rounding": "half_even", "pool": {"percent": "10"},
            "split": {"kind": "shares", "originator": "30", "intermediaries": "20", "closer": "40", "remaining": "closer"},
            "valid_from": "2025-01-01T00:00:00Z"
        });
        let event = Event::ProgramPublished { spec: serde_json::from_value(spec).unwrap() };
        Submit { key: key.into(), by: "admin".into(), at, event, request: None }
    }

    fn new_store(dir: &Path) -> Arc<Service> {
        std::fs::create_dir_all(dir).unwrap();
        KeyFile::new("ven_test", "settle.test/log", [1; 32], [2; 32], 0).save(dir).unwrap();
        Service::open(dir).unwrap()
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A deal of this revenue (cents).
        Convert(i64),
        /// A refund of this percentage of an earlier deal.
        Refund(usize, u8),
        /// An earlier accepted submission again (same key, same content), later.
        Retry(usize),
        /// An earlier accepted submission's key, with other content.
        Reuse(usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (1i64..10_000_000).prop_map(Op::Convert),
            1 => (any::<usize>(), 1u8..=100).prop_map(|(i, p)| Op::Refund(i, p)),
            2 => any::<usize>().prop_map(Op::Retry),
            1 => any::<usize>().prop_map(Op::Reuse),
        ]
    }

    fn submit_one(svc: &Service, s: Submit) -> Result<Outcome, SubmitError> {
        svc.submit_blocking(vec![s]).remove(0)
    }

    fn records(svc: &Service) -> Vec<Vec<u8>> {
        svc.ledger().records(0).map(|r| r.unwrap().event).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Law: a fact submitted again with the same client key changes nothing. Random
        /// deals and refunds; some submitted again later (the original outcome comes
        /// back, marked replayed), some keys reused for other content (a conflict).
        /// The log and the engine state end byte for byte as those of a service that got
        /// each accepted submission once.
        #[test]
        fn the_same_client_key_twice_changes_nothing(ops in proptest::collection::vec(op(), 1..24)) {
            let dir = tempfile::tempdir().unwrap();
            let (svc, once) = (new_store(&dir.path().join("a")), new_store(&dir.path().join("b")));
            let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
            let at = |n: usize| t0 + chrono::Duration::seconds(i64::try_from(n).unwrap());
            let fact = |key: String, n: usize, event: Event| Submit { key, by: "admin".into(), at: at(n), event, request: None };
            let mut setup = vec![publish_at("pub", "Growth", at(0))];
            for (i, p) in ["p1", "p2"].iter().enumerate() {
                let event = Event::PartnerEnrolled { partner: (*p).into(), program: "growth".into(), name: format!("P {p}"), role: settle_engine::model::PartnerRole::Partner };
                setup.push(fact(format!("enrol-{p}"), i + 1, event));
            }
            setup.push(fact("lead".into(), 3, Event::LeadRegistered { lead: "l1".into(), program: "growth".into(), customer: "acme.example".into(), customer_key: Some(settle_engine::model::CustomerKey::CURRENT), partner: "p1".into() }));
            setup.push(fact("handoff".into(), 4, Event::LeadHandedOff { lead: "l1".into(), from: "p1".into(), to: "p2".into() }));
            // Accepted submissions, in order, with their outcomes.
            let mut accepted: Vec<(Submit, u64)> = Vec::new();
            for s in setup {
                let o = submit_one(&svc, s.clone()).unwrap();
                accepted.push((s, o.seq));
            }
            let usd = |c: i64| settle_mandates::money::Amount::from_minor(c, "USD".parse().unwrap()).unwrap();
            let mut deals: Vec<(String, i64)> = Vec::new();
            for (n, op) in ops.iter().enumerate() {
                let n = n + 10;
                match op {
                    Op::Convert(rev) => {
                        let event = Event::ConversionRecorded { conversion: format!("d{n}"), lead: "l1".into(), revenue: usd(*rev), occurred_at: at(n), subscription_month: None, fx: None };
                        let s = fact(format!("k{n}"), n, event);
                        let o = submit_one(&svc, s.clone()).unwrap();
                        deals.push((format!("d{n}"), *rev));
                        accepted.push((s, o.seq));
                    }
                    Op::Refund(i, pct) if !deals.is_empty() => {
                        let (id, rev) = &deals[i % deals.len()];
                        let size = settle_engine::model::RefundSize::Amount(usd((rev * i64::from(*pct) / 100).max(1)));
                        let s = fact(format!("k{n}"), n, Event::RefundRecorded { refund: format!("r{n}"), conversion: id.clone(), size });
                        if let Ok(o) = submit_one(&svc, s.clone()) {
                            accepted.push((s, o.seq));
                        }
                    }
                    Op::Retry(i) => {
                        let (s, seq) = accepted[i % accepted.len()].clone();
                        let size = svc.ledger().size();
                        let o = submit_one(&svc, Submit { at: at(n), ..s }).unwrap();
                        proptest::prop_assert!(o.replayed && o.seq == seq, "retry answered {:?} for {}", (o.replayed, o.seq), seq);
                        proptest::prop_assert_eq!(svc.ledger().size(), size);
                    }
                    Op::Reuse(i) => {
                        let (s, _) = accepted[i % accepted.len()].clone();
                        let size = svc.ledger().size();
                        let other = Event::HoldsAdvanced { to: at(n) };
                        let r = submit_one(&svc, Submit { event: other, at: at(n), ..s });
                        proptest::prop_assert!(matches!(r, Err(SubmitError::KeyConflict(_))), "{:?}", r.map(|o| o.seq));
                        proptest::prop_assert_eq!(svc.ledger().size(), size);
                    }
                    Op::Refund(..) => {}
                }
            }
            for (s, seq) in &accepted {
                let o = submit_one(&once, s.clone()).unwrap();
                proptest::prop_assert_eq!((o.seq, o.replayed), (*seq, false));
            }
            proptest::prop_assert_eq!(records(&svc), records(&once));
            let state = |x: &Service| x.with_state(|st| serde_json::to_vec(st).unwrap());
            proptest::prop_assert_eq!(state(&svc), state(&once));
        }
    }

    /// A full ledger queue refuses a submission with `Busy` before anything is decided:
    /// the engine does not move, the refused fact can be sent again later, and what was
    /// queued is all acknowledged once the log syncs again.
    #[test]
    fn a_full_queue_answers_busy_and_decides_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let svc = new_store(&dir.path().join("s"));
        let enrol = Event::PartnerEnrolled {
            partner: "p1".into(),
            program: "growth".into(),
            name: "P1".into(),
            role: settle_engine::model::PartnerRole::Partner,
        };
        for s in [
            publish("pub", "Growth"),
            Submit { key: "enrol".into(), by: "admin".into(), at: Utc::now(), event: enrol, request: None },
        ] {
            submit_one(&svc, s).unwrap();
        }
        let lead = |i: usize| Submit {
            key: format!("lead-{i}"),
            by: "admin".into(),
            at: Utc::now(),
            event: Event::LeadRegistered {
                lead: format!("l{i}"),
                program: "growth".into(),
                customer: format!("c{i}.example"),
                customer_key: Some(settle_engine::model::CustomerKey::CURRENT),
                partner: "p1".into(),
            },
            request: None,
        };
        let hold = svc.ledger().hold_next_sync();
        let mut pending = Vec::new();
        let mut busy = None;
        for i in 0..4 * settle_ledger::MAX_BATCH_RECORDS + settle_ledger::QUEUE_CAPACITY {
            let p = svc.prepare(vec![lead(i)], WhenFull::Refuse);
            if matches!(p[..], [Prepared::Done(Err(SubmitError::Busy))]) {
                busy = Some(i);
                break;
            }
            assert!(matches!(p[..], [Prepared::Pending { .. }]), "lead {i} was not queued");
            pending.push(p);
        }
        let busy = busy.expect("the queue never filled while the sync was held");
        let decided = svc.with_state(|st| st.leads.len());
        assert_eq!(decided, busy, "the refused lead was not decided");
        hold.release(false);
        for p in pending {
            futures_lite_block_on(svc.complete(p)).remove(0).unwrap();
        }
        let o = submit_one(&svc, lead(busy)).unwrap();
        assert!(!o.replayed);
        assert_eq!(svc.ledger().size(), o.seq + 2, "the lead and its outcome, last");
    }

    /// A key that names another submission's records, with other content, is a conflict
    /// only once those records are durable: until then the answer waits, and when their
    /// sync fails both submissions get the storage error, not a conflict over a key
    /// that was never used.
    #[test]
    fn a_conflict_waits_for_the_records_it_conflicts_with() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("store");
        std::fs::create_dir_all(&data).unwrap();
        KeyFile::new("ven_test", "settle.test/log", [1; 32], [2; 32], 0).save(&data).unwrap();
        let svc = Service::open(&data).unwrap();
        let hold = svc.ledger().hold_next_sync();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        let in_flight = || svc.seq.lock().unwrap().inflight.contains_key("k");
        let submit = |s: Submit| {
            let svc = Arc::clone(&svc);
            rt.spawn(async move { svc.try_submit(vec![s]).await.remove(0) })
        };
        let first = submit(publish("k", "Growth"));
        for _ in 0..10_000 {
            if in_flight() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(in_flight(), "the first submission never went in flight");
        let second = submit(publish("k", "Other name"));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!second.is_finished(), "answered before the first submission's records were durable");
        hold.release(true);
        let (first, second) = rt.block_on(async { (first.await.unwrap(), second.await.unwrap()) });
        assert!(matches!(first, Err(SubmitError::Storage(_))), "{first:?}");
        assert!(matches!(second, Err(SubmitError::Storage(_))), "{second:?}");
    }

    /// The engine state is stored with the appends as the log grows, not only when the
    /// service stops: after a run that never saved it, the store holds a state as of the
    /// last record of some append, and restoring from it builds exactly the state a
    /// replay of the whole log builds.
    #[test]
    fn the_state_is_stored_with_the_appends_as_the_log_grows() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("store");
        crate::demo::run(&data, 400, 3, true).unwrap();
        let keys = KeyFile::load(&data).unwrap();
        let ledger = open_ledger(&data, &keys).unwrap();
        let (seq, _) = ledger.projection(PROJECTION).unwrap().expect("a state stored with an append");
        let size = ledger.size();
        assert!(seq + 1 >= PROJECTION_MIN_RECORDS && seq + 1 < size, "stored as of {seq} of {size}");
        let next = ledger.record(seq + 1).unwrap().unwrap();
        assert!(settle_engine::model::is_fact_kind(&next.kind), "stored mid-append: {} follows", next.kind);
        let cfg = || EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt().unwrap() };
        let restored = restore(&ledger, cfg()).unwrap().0;
        let mut replayed = Engine::new(cfg());
        replay(&ledger, &mut replayed, 0, None).unwrap();
        assert_eq!(serde_json::to_vec(restored.state()).unwrap(), serde_json::to_vec(replayed.state()).unwrap());
    }

    /// When the engine state is stored with an append: once the log has grown by
    /// `PROJECTION_MIN_RECORDS` or doubled, and never once it would be over
    /// `PROJECTION_MAX_BYTES` (judged from the last one stored, scaled by the growth).
    #[test]
    fn the_state_is_stored_when_due_and_only_while_it_is_small() {
        let engine = || Engine::new(EngineConfig { vendor: "v".into(), salt_secret: [0; 32] });
        let seq = |next, saved, saved_bytes| Sequencer {
            engine: engine(),
            next,
            inflight: HashMap::new(),
            saved,
            saved_bytes,
        };
        let mut s = seq(PROJECTION_MIN_RECORDS - 1, 0, 0);
        assert!(s.state_to_store().is_none(), "not yet grown enough");
        s.next = PROJECTION_MIN_RECORDS;
        let stored = s.state_to_store().expect("due");
        assert_eq!((s.saved, s.saved_bytes), (PROJECTION_MIN_RECORDS, stored.len()));
        s.next = 2 * PROJECTION_MIN_RECORDS - 1;
        assert!(s.state_to_store().is_none(), "the log has not doubled since");
        // Due, but the last state, scaled by the growth, would be over the limit.
        let mut big = seq(2 * PROJECTION_MIN_RECORDS, PROJECTION_MIN_RECORDS, PROJECTION_MAX_BYTES / 2 + 1);
        assert!(big.state_to_store().is_none());
        assert_eq!(big.saved, PROJECTION_MIN_RECORDS, "nothing was stored");
        big.saved_bytes = PROJECTION_MAX_BYTES / 2;
        assert!(big.state_to_store().is_some(), "at the limit it is stored");
    }

    /// A saved projection restores to exactly the state a replay of the whole log builds:
    /// the packed tables' look-ups (ids, the owners of customers) are rebuilt from it.
    #[test]
    fn a_saved_state_restores_as_the_log_replays() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("store");
        crate::demo::run(&data, 400, 3, true).unwrap();
        let replayed = {
            let svc = Service::open(&data).unwrap();
            svc.save_state().unwrap();
            let st = svc.with_state(|s| serde_json::to_vec(s).unwrap());
            svc.close().unwrap();
            st
        };
        let keys = KeyFile::load(&data).unwrap();
        let ledger = open_ledger(&data, &keys).unwrap();
        let (seq, saved) = ledger.projection(PROJECTION).unwrap().expect("a saved projection");
        assert_eq!(seq + 1, ledger.size(), "saved as of the last record");
        assert_eq!(saved, replayed, "what is saved is the replayed state's JSON");
        let cfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt().unwrap() };
        let restored = restore(&ledger, cfg).unwrap().0;
        assert_eq!(serde_json::to_vec(restored.state()).unwrap(), replayed);
        // The look-ups work on the restored state: every lead and conversion is found.
        let st = restored.state();
        assert!(st.leads.len() > 100 && st.conversions.len() == 400, "{} leads", st.leads.len());
        for (seq, c) in st.conversions.iter() {
            assert_eq!(st.conversions.seq_of(&c.id), Some(seq));
        }
        let owners = st
            .leads
            .iter()
            .filter(|(id, l)| st.leads.owner(&l.program, &l.customer).is_some_and(|(o, _)| o.as_str() == *id));
        assert!(owners.count() > 100, "the owners of customers are restored");
    }
}

//! The settlement service: one sequencer in front of the ledger.
//!
//! decide (sequential, pure engine) → sign (parallel, order-preserving) → append (group
//! commit, one sync per batch) → acknowledge. A fact is decided against the sequence
//! number it will get; the ledger checks that with `expected_seq`, so engine state and
//! log can never drift apart. Retries are answered from the idempotency index (or from
//! the in-flight table while the original is not yet durable): nothing is paid twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use settle_engine::{Engine, EngineConfig, Envelope, Event, Rejection, State};
use settle_ledger::{Append, Appended, KeyLookup, Ledger, LedgerConfig, LedgerError, NewRecord, ProjectionUpdate};
use settle_mandates::keys::SigningKey;
use sha2::{Digest, Sha256};

use settle_ledger::backend::{Backend, PostgresBackend};

use crate::home::Home;
use crate::keystore::{KeyFile, KeyHome};

mod pipeline;

/// Name of the engine's projection in the ledger. Versioned with the state's shape: a
/// state saved by an older shape is not restored (the log is replayed instead). v3: a
/// settlement derives one record per mandate. v4: the look-ups by id are no longer saved
/// (they are rebuilt), and the owners of customers are saved with the leads.
pub const PROJECTION: &str = "engine.v6";

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
    /// The turn the next group decided takes (see [`pipeline::Turnstile`]).
    turns: u64,
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
    /// Where its key file is kept.
    key_home: KeyHome,
    /// A standby's: it reads the log another node writes, and refuses every write.
    follower: bool,
    seq: Mutex<Sequencer>,
    failed: AtomicBool,
    /// The doors' submissions, for the combiner (see [`Service::try_submit`]).
    jobs: std::sync::mpsc::Sender<pipeline::Job>,
    /// Groups decided, signed out of turn, waiting to be queued in their turn.
    turnstile: pipeline::Turnstile,
    /// Groups the combiner handed to the pool, not yet queued (bounded).
    signing: pipeline::Signing,
}

/// The hash of a request as idempotency compares it: SHA-256 of its RFC 8785 (JCS) bytes.
/// The log's facts and webhook subscriptions hash their requests with this (API tokens
/// keep the hash `keys.json` has always stored, of the request's compact JSON).
#[must_use]
pub fn request_hash(request: &impl serde::Serialize) -> [u8; 32] {
    Sha256::digest(settle_mandates::jcs::to_vec(request).unwrap_or_default()).into()
}

/// The hash that makes two submissions "the same request": everything but the time.
/// It is SHA-256 of the canonical JSON of `{"by", "key", "request"}` (or `"event"` when
/// there is no request), written member by member in canonical order (`by`, `key`,
/// `request`, or `by`, `event`, `key`): the object's canonical bytes are its members'
/// canonical bytes in that order, so the request is not first copied into a JSON tree.
#[must_use]
pub fn content_hash(s: &Submit) -> [u8; 32] {
    use settle_mandates::jcs::to_vec as jcs;
    let (by, key) = (serde_json::to_vec(&s.by).ok(), serde_json::to_vec(&s.key).ok());
    let members = match &s.request {
        Some(r) => [("by", by), ("key", key), ("request", jcs(r).ok())],
        None => [("by", by), ("event", jcs(&s.event).ok()), ("key", key)],
    };
    let mut h = Sha256::new();
    for (i, (name, bytes)) in members.into_iter().enumerate() {
        // Strings, a JSON value and an event always serialise; were one not to, the hash
        // of no bytes, as `request_hash` gives for a value that does not canonicalise.
        let Some(bytes) = bytes else { return Sha256::digest(b"").into() };
        h.update(if i == 0 { "{\"" } else { ",\"" });
        h.update(name);
        h.update("\":");
        h.update(bytes);
    }
    h.update("}");
    h.finalize().into()
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

/// Splits payout facts, in order, into submissions naming at most
/// `MAX_SETTLEMENT_MANDATES` mandates (and [`MAX_BATCH`] facts) each. A submission's
/// derived records are all in memory until it is durable, and a week of a large demo's
/// payouts, or a bank's notification, names hundreds of thousands of mandates.
#[must_use]
pub fn by_mandates(facts: Vec<Submit>) -> Vec<Vec<Submit>> {
    let mut groups: Vec<Vec<Submit>> = Vec::new();
    let mut named = 0;
    for f in facts {
        let n = match &f.event {
            settle_engine::Event::PayoutBatched { mandate_ids, .. }
            | settle_engine::Event::SettlementConfirmed { mandate_ids, .. }
            | settle_engine::Event::SettlementFailed { mandate_ids, .. } => mandate_ids.len(),
            _ => 1,
        };
        match groups.last_mut() {
            Some(g) if named + n <= settle_engine::model::MAX_SETTLEMENT_MANDATES && g.len() < MAX_BATCH => {
                named += n;
                g.push(f);
            }
            _ => {
                named = n;
                groups.push(vec![f]);
            }
        }
    }
    groups
}

/// The log of `home`, opened (no engine; on PostgreSQL with the writer lease): the
/// ledger, its key file, and where that is kept.
pub fn open_ledger(home: &Home) -> Result<(Ledger, KeyFile, KeyHome)> {
    let (backend, key_home) = home.open()?;
    let keys = key_home.load()?;
    let ledger = Ledger::open_on(backend, ledger_config(&keys)?)
        .map_err(|e| anyhow::anyhow!("cannot open the log in {}: {e}", home.describe()))?;
    Ok((ledger, keys, key_home))
}

/// The log of `home` to read (audits, exports, statements): [`open_ledger`], or, on
/// PostgreSQL while another node writes the log, a follower of it as of its latest
/// signed checkpoint (`true`: it reads, it cannot write).
pub fn open_ledger_to_read(home: &Home) -> Result<(Ledger, KeyFile, bool)> {
    match (open_ledger(home), home) {
        (Ok((ledger, keys, _)), _) => Ok((ledger, keys, false)),
        (Err(e), Home::Postgres(url)) if writer_elsewhere(&e) => {
            let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open_reader(url)?);
            let keys = KeyHome::Store(Arc::clone(&backend)).load()?;
            let ledger = Ledger::open_follower(backend, &ledger_config(&keys)?)?;
            Ok((ledger, keys, true))
        }
        (Err(e), _) => Err(e),
    }
}

/// Whether `e` says that another node holds the log's writer lease.
#[must_use]
pub fn writer_elsewhere(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<LedgerError>(), Some(LedgerError::WriterElsewhere { .. })))
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

/// Submissions decided, signed and queued, not yet known durable
/// ([`Service::queue_blocking`]).
pub struct Queued(Vec<Prepared>);

/// A submission after the sequencer saw it.
enum Prepared {
    /// Answered already (refused, or failed).
    Done(Result<Outcome, SubmitError>),
    /// Decided and queued: its records, and the acknowledgement to wait for.
    Pending { records: Vec<Envelope>, durable: Durable },
    /// The same request was written before (or is being written): its records, once
    /// they are durable, are the answer.
    Wait(Span),
    /// The key names other content in these records: a conflict once they are durable
    /// (if their commit fails, the key was never used).
    Conflict(String, Span),
}

impl Service {
    /// Opens the log of `home` and restores the engine (saved state + replay of the
    /// records after it).
    pub fn open(home: &Home) -> Result<Arc<Self>> {
        let (ledger, keys, key_home) = open_ledger(home)?;
        Self::start(ledger, &keys, key_home, false)
    }

    /// The service of the log on `backend`, opened with the writer lease (a standby that
    /// took over).
    pub fn open_on(backend: Arc<dyn Backend>, home: &Home) -> Result<Arc<Self>> {
        let key_home = KeyHome::Store(Arc::clone(&backend));
        let keys = key_home.load()?;
        let ledger = Ledger::open_on(backend, ledger_config(&keys)?)
            .map_err(|e| anyhow::anyhow!("cannot open the log in {}: {e}", home.describe()))?;
        Self::start(ledger, &keys, key_home, false)
    }

    /// A standby's service: the log another node writes, read as of its latest signed
    /// checkpoint ([`Service::follow`] catches up); every write is refused.
    pub fn open_follower(url: &str) -> Result<Arc<Self>> {
        let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::open_reader(url)?);
        let key_home = KeyHome::Store(Arc::clone(&backend));
        let keys = key_home.load()?;
        let ledger = Ledger::open_follower(backend, &ledger_config(&keys)?)?;
        Self::start(ledger, &keys, key_home, true)
    }

    /// Catches a standby's service up with the latest signed checkpoint: the records up
    /// to it are fed to its engine.
    pub fn follow(&self) -> Result<()> {
        let mut sq = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let from = sq.next;
        let to = self.ledger.follow()?;
        if to > from {
            replay(&self.ledger, &mut sq.engine, from, None)?;
            sq.next = to;
        }
        Ok(())
    }

    /// The service of `ledger` (a follower's: its engine replayed from the first record,
    /// never from a saved state, which may be ahead of what it reads).
    fn start(ledger: Ledger, keys: &KeyFile, key_home: KeyHome, follower: bool) -> Result<Arc<Self>> {
        let key = keys.current()?;
        let cfg = EngineConfig { vendor: keys.vendor.clone(), salt_secret: keys.salt()? };
        let (engine, saved, saved_bytes) = if follower {
            let mut engine = Engine::new(cfg);
            replay(&ledger, &mut engine, 0, None)?;
            (engine, 0, 0)
        } else {
            restore(&ledger, cfg)?
        };
        let next = ledger.size();
        let (jobs, queued) = std::sync::mpsc::channel();
        let svc = Arc::new(Self {
            ledger,
            key,
            key_home,
            seq: Mutex::new(Sequencer { engine, next, inflight: HashMap::new(), turns: 0, saved, saved_bytes }),
            failed: AtomicBool::new(false),
            follower,
            jobs,
            turnstile: pipeline::Turnstile::default(),
            signing: pipeline::Signing::default(),
        });
        let weak = Arc::downgrade(&svc);
        std::thread::Builder::new()
            .name("settle-combiner".into())
            .spawn(move || pipeline::combine(&weak, &queued))
            .context("cannot start the sequencer's combiner")?;
        Ok(svc)
    }

    /// The ledger.
    #[must_use]
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Where its key file is kept.
    #[must_use]
    pub fn key_home(&self) -> &KeyHome {
        &self.key_home
    }

    /// Runs `f` on the engine state (read-only, briefly locks the sequencer).
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let s = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(s.engine.state())
    }

    async fn complete(&self, p: Vec<Prepared>) -> Vec<Result<Outcome, SubmitError>> {
        let mut out = Vec::with_capacity(p.len());
        let mut durable_now = false;
        for x in p {
            out.push(match x {
                Prepared::Done(r) => r,
                Prepared::Pending { records, durable } => match durable.await {
                    Ok(a) => {
                        durable_now = true;
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
        if durable_now {
            // Once for the call, not once a submission: a batch's in-flight keys go in one
            // pass over the table, under one turn of the sequencer's lock.
            let mut sq = self.seq.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            forget_durable(&mut sq, self.ledger.size());
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

    /// As [`Service::submit`] but refuses with [`SubmitError::Busy`] when the queue is full:
    /// what the doors call. The submissions of concurrent calls are combined: one thread
    /// takes every call waiting and prepares them as one group (decided in order, signed
    /// on all cores, one group commit), so a single conversion costs no thread of its own.
    pub async fn try_submit(self: &Arc<Self>, subs: Vec<Submit>) -> Vec<Result<Outcome, SubmitError>> {
        let n = subs.len();
        let (reply, prepared) = tokio::sync::oneshot::channel();
        if self.jobs.send(pipeline::Job { subs, reply }).is_err() {
            return self.stopped(n, "the sequencer's combiner stopped");
        }
        match prepared.await {
            Ok(p) => self.complete(p).await,
            Err(_) => self.stopped(n, "the sequencer's combiner stopped while deciding"),
        }
    }

    /// A bug panicked while deciding: the engine may be ahead of the log, so stop writing
    /// (a restart rebuilds it from the log).
    fn panicked(&self, n: usize, e: &tokio::task::JoinError) -> Vec<Result<Outcome, SubmitError>> {
        self.stopped(n, &e.to_string())
    }

    /// Stops taking writes after an internal error while deciding; answers `n` failures.
    fn stopped(&self, n: usize, why: &str) -> Vec<Result<Outcome, SubmitError>> {
        self.fail();
        (0..n)
            .map(|_| Err(SubmitError::Storage(format!("internal error while deciding ({why}); restart the service"))))
            .collect()
    }

    /// Marks the service failed: it refuses writes until restarted (which rebuilds the
    /// engine from the log).
    fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Blocking [`Service::submit`] for synchronous drivers (the demo).
    pub fn submit_blocking(&self, subs: Vec<Submit>) -> Vec<Result<Outcome, SubmitError>> {
        self.wait_blocking(self.queue_blocking(subs))
    }

    /// The first half of [`Service::submit_blocking`]: returns once `subs` are decided,
    /// signed and queued, before they are durable, so a driver can decide and sign its
    /// next submission while this one is written ([`Service::wait_blocking`] for the
    /// results).
    pub fn queue_blocking(&self, subs: Vec<Submit>) -> Queued {
        Queued(self.prepare(subs, WhenFull::Wait))
    }

    /// The results of submissions queued with [`Service::queue_blocking`], each after it
    /// is durable.
    pub fn wait_blocking(&self, queued: Queued) -> Vec<Result<Outcome, SubmitError>> {
        futures_lite_block_on(self.complete(queued.0))
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

fn to_append(key: &str, h: [u8; 32], first: u64, records: Vec<NewRecord>, looked_up: KeyLookup) -> Append {
    Append {
        key: key.as_bytes().to_vec(),
        content_hash: h,
        records,
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
mod tests;

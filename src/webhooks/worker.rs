//! The delivery worker of one subscription: it walks the log from its cursor, in order,
//! delivering each event it hears of at least once (retries with backoff and jitter,
//! then the dead letters), after queued replays, while its subscriber's authority holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rand::Rng;
use settle_engine::Envelope;
use settle_mandates::webhook::{self, Secret};

use super::events::{Message, message_for};
use super::subscription::keys::{cursor_key, dead_key, replay_prefix, reset_key, seq_of_key};
use super::subscription::{DeadLetter, Progress, Subscription};
use super::{Webhooks, lock};
use crate::auth::{Principal, grant_in_force};

/// Records a worker reads from the log at a time.
const SCAN_CHUNK: u64 = 256;
/// How often an idle worker looks for new records.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often a paused or failing worker looks again.
const PAUSED_POLL: Duration = Duration::from_secs(1);
/// How often a moving cursor is synced (see [`StoredCursor`]).
const CURSOR_SYNC: Duration = Duration::from_secs(1);

/// A subscription's delivery task and what it reports.
pub(super) struct Worker {
    pub(super) sub: Subscription,
    pub(super) progress: Mutex<Progress>,
    /// Set when the subscription is deleted: the worker writes nothing more.
    pub(super) deleted: std::sync::atomic::AtomicBool,
    pub(super) task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Worker {
    /// Whether `p` may see this subscription: the vendor sees all, a partner its own.
    pub(super) fn seen_by(&self, p: &Principal) -> bool {
        p.is_vendor() || (self.sub.partner.is_some() && self.sub.partner == p.partner)
    }

    /// Stops the delivery task (at its next await).
    pub(super) fn abort(&self) {
        if let Some(h) = lock(&self.task).take() {
            h.abort();
        }
    }

    /// Whether its subscription was deleted: it then writes nothing more.
    pub(super) fn is_deleted(&self) -> bool {
        self.deleted.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(super) fn new(sub: Subscription) -> Self {
        Self {
            sub,
            progress: Mutex::new(Progress::default()),
            deleted: std::sync::atomic::AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }
}

/// A worker's cursor as stored. Every move is written before the next delivery and
/// handed to the operating system at once (one `write`, no sync), so a killed server
/// repeats only the event in flight. It is synced by every group commit of the log (the
/// same journal) and, while it moves, when the last sync is [`CURSOR_SYNC`] old; a machine
/// that loses power repeats the deliveries since the last sync. A sync per delivered event
/// would cost an fsync per event per subscription, each holding the store's journal, and
/// so the log's appends, while it runs: deliveries would go at the disk's fsync rate
/// (a tenth of the rate, measured).
struct StoredCursor {
    key: Vec<u8>,
    /// A delivered event was passed since the last sync.
    unsynced: bool,
    synced_at: std::time::Instant,
}

impl StoredCursor {
    fn new(id: &str) -> Self {
        Self { key: cursor_key(id), unsynced: false, synced_at: std::time::Instant::now() }
    }

    /// Writes `cursor`; `delivered`: it passed an event the receiver took (or that went to
    /// the dead letters), so it is synced within [`CURSOR_SYNC`].
    fn write(&mut self, ledger: &settle_ledger::Ledger, cursor: u64, delivered: bool) {
        self.unsynced |= delivered;
        let sync = self.due();
        if ledger.aux_put(&self.key, &cursor.to_be_bytes(), sync).is_ok() && sync {
            self.synced();
        }
    }

    /// Syncs `cursor` if an unsynced move is [`CURSOR_SYNC`] old.
    fn sync_if_due(&mut self, ledger: &settle_ledger::Ledger, cursor: u64) {
        if self.due() && ledger.aux_put(&self.key, &cursor.to_be_bytes(), true).is_ok() {
            self.synced();
        }
    }

    fn due(&self) -> bool {
        self.unsynced && self.synced_at.elapsed() >= CURSOR_SYNC
    }

    fn synced(&mut self) {
        self.unsynced = false;
        self.synced_at = std::time::Instant::now();
    }
}

impl Webhooks {
    /// The worker of one subscription: queued replays first, then the log from its
    /// cursor, one event at a time, in order. It runs until the subscription is deleted
    /// (or the server stops and aborts it): every turn of its loop waits on a delivery or
    /// a poll interval.
    pub(super) async fn run(self: Arc<Self>, w: Arc<Worker>) {
        let mut cursor = self.stored_cursor(&w.sub);
        let mut stored = StoredCursor::new(&w.sub.id);
        while !w.is_deleted() {
            stored.sync_if_due(self.svc.ledger(), cursor);
            if !self.authorised(&w.sub) {
                lock(&w.progress).last_error =
                    Some("paused: the token that subscribed is revoked, or the agent's grant is not current".into());
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            if let Some(rewound) = self.rewind(&w.sub.id).await {
                cursor = rewound;
                continue;
            }
            if self.replay_dead_letters(&w).await {
                continue;
            }
            let size = self.svc.ledger().size();
            if cursor >= size {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            let records = self.read_chunk(cursor, size.min(cursor + SCAN_CHUNK));
            if records.is_empty() {
                tokio::time::sleep(PAUSED_POLL).await;
                continue;
            }
            cursor = self.deliver_chunk(&w, &records, cursor, &mut stored).await;
            // Records this subscription does not hear of: one cursor write per chunk.
            if !w.is_deleted() {
                stored.write(self.svc.ledger(), cursor, false);
            }
        }
    }

    /// A rewind a replay asked for (stored durably with its answer): the cursor it moves
    /// to, once stored.
    async fn rewind(&self, id: &str) -> Option<u64> {
        let ledger = self.svc.ledger();
        let v = ledger.aux_get(&reset_key(id)).ok()??;
        let to = u64::from_be_bytes(<[u8; 8]>::try_from(v.as_slice()).ok()?);
        if ledger.aux_apply(&[(&cursor_key(id), &to.to_be_bytes())], &[&reset_key(id)], true).is_err() {
            tokio::time::sleep(IDLE_POLL).await;
        }
        Some(to)
    }

    /// Delivers the dead letters queued for replay, a few at a time; `false` when none are
    /// queued.
    async fn replay_dead_letters(&self, w: &Worker) -> bool {
        let ledger = self.svc.ledger();
        let id = &w.sub.id;
        let queued = match ledger.aux_scan(&replay_prefix(id), 64) {
            Ok(q) if !q.is_empty() => q,
            _ => return false,
        };
        let mut failed = false;
        for (k, _) in queued {
            if !self.authorised(&w.sub) {
                break;
            }
            let mut removes = vec![k.clone()];
            if let Some(seq) = seq_of_key(&k)
                && let Some(m) = self.message_at(&w.sub, seq)
                && self.deliver(w, &m).await
            {
                removes.push(dead_key(id, seq));
            }
            if w.is_deleted() {
                return true;
            }
            let r: Vec<&[u8]> = removes.iter().map(Vec::as_slice).collect();
            failed |= ledger.aux_apply(&[], &r, false).is_err();
        }
        if failed {
            tokio::time::sleep(IDLE_POLL).await;
        }
        tokio::task::yield_now().await;
        true
    }

    /// Records `from..end` of the log, decoded; fewer if one cannot be read.
    fn read_chunk(&self, from: u64, end: u64) -> Vec<(u64, Envelope)> {
        let mut records = Vec::new();
        for r in self.svc.ledger().records(from).take(usize::try_from(end - from).unwrap_or(usize::MAX)) {
            match r
                .map_err(|e| e.to_string())
                .and_then(|r| Envelope::from_bytes(&r.event).map(|e| (r.seq, e)).map_err(|e| e.to_string()))
            {
                Ok(x) => records.push(x),
                Err(e) => {
                    tracing::error!("webhooks: cannot read the log at {from}: {e}");
                    break;
                }
            }
        }
        records
    }

    /// Delivers the events of `records` this subscription hears of, in order, from
    /// `cursor`; answers the cursor after the last record handled.
    async fn deliver_chunk(
        &self,
        w: &Worker,
        records: &[(u64, Envelope)],
        mut cursor: u64,
        stored: &mut StoredCursor,
    ) -> u64 {
        // One look at the engine state per chunk (it shares a lock with the sequencer).
        let messages: Vec<(u64, Option<Message>)> = self
            .svc
            .with_state(|s| records.iter().map(|(seq, env)| (*seq, message_for(&w.sub, *seq, env, s))).collect());
        for (seq, m) in messages {
            if w.is_deleted() {
                break;
            }
            let Some(m) = m else {
                cursor = seq + 1;
                continue;
            };
            // Authority is checked before every delivery (the cursor stays here).
            if !self.authorised(&w.sub) {
                break;
            }
            cursor = seq + 1;
            self.deliver(w, &m).await;
            if w.is_deleted() {
                break;
            }
            // Past this event for good (taken, or a dead letter): stored before the next
            // delivery, so a crash repeats only the event in flight.
            stored.write(self.svc.ledger(), cursor, true);
        }
        cursor
    }

    /// Whether the subscriber may still hear of its events: its token is in force and, for
    /// a partner's agent, the partner's grant recorded in the log is current.
    fn authorised(&self, sub: &Subscription) -> bool {
        if !sub.token_id.is_empty() && !self.tokens.id_in_force(&sub.token_id, Utc::now().timestamp()) {
            return false;
        }
        let Some(agent) = &sub.agent else { return true };
        let partner = sub.partner.as_deref().unwrap_or_default();
        grant_in_force(&self.svc, agent, Some(partner), Utc::now()).is_ok()
    }

    /// The next record `sub` has not handled, as stored.
    pub(super) fn stored_cursor(&self, sub: &Subscription) -> u64 {
        let stored = self.svc.ledger().aux_get(&cursor_key(&sub.id)).ok().flatten();
        stored.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map_or(sub.from_seq, u64::from_be_bytes)
    }

    fn message_at(&self, sub: &Subscription, seq: u64) -> Option<Message> {
        let r = self.svc.ledger().record(seq).ok()??;
        let env = Envelope::from_bytes(&r.event).ok()?;
        self.svc.with_state(|s| message_for(sub, seq, &env, s))
    }

    /// Delivers `m` with retries; true when the subscriber took it, false when it went to
    /// the dead letters.
    async fn deliver(&self, w: &Worker, m: &Message) -> bool {
        let mut failed = 0u32;
        // Bounded: each turn is an attempt, and the policy's `attempts` end it.
        loop {
            {
                let mut p = lock(&w.progress);
                p.pending = Some(m.seq);
                p.pending_attempts = failed;
            }
            let err = match self.attempt(&w.sub, m).await {
                Ok(()) => {
                    let mut p = lock(&w.progress);
                    p.delivered += 1;
                    p.pending = None;
                    p.pending_attempts = 0;
                    p.last_success_at = Some(Utc::now());
                    return true;
                }
                Err(e) => e,
            };
            failed += 1;
            {
                let mut p = lock(&w.progress);
                p.failed_attempts += 1;
                p.last_error = Some(format!("{}: {err}", m.id));
            }
            if failed >= self.policy.attempts {
                let d = DeadLetter {
                    webhook_id: m.id.clone(),
                    seq: m.seq,
                    kind: m.kind.as_str().into(),
                    attempts: failed,
                    last_error: err,
                    failed_at: Utc::now(),
                };
                tracing::warn!("webhook {} to {} is dead after {failed} attempts", m.id, w.sub.url);
                if let Ok(v) = serde_json::to_vec(&d)
                    && !w.is_deleted()
                {
                    let _ = self.svc.ledger().aux_put(&dead_key(&w.sub.id, m.seq), &v, true);
                }
                lock(&w.progress).pending = None;
                return false;
            }
            let jitter = rand::rng().random_range(0..=1000);
            tokio::time::sleep(self.policy.delay(failed, jitter)).await;
        }
    }

    async fn attempt(&self, sub: &Subscription, m: &Message) -> Result<(), String> {
        let secret = Secret::parse(&sub.secret).map_err(|e| e.to_string())?;
        let ts = Utc::now().timestamp();
        let sig = webhook::sign(&m.id, ts, &m.body, &secret, &self.key);
        let req = hyper::Request::post(&sub.url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("settle-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &m.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(Full::new(Bytes::from(m.body.clone())))
            .map_err(|e| e.to_string())?;
        let res = tokio::time::timeout(self.policy.timeout, async {
            let r = self.client.request(req).await.map_err(|e| format!("cannot deliver: {e}"))?;
            let status = r.status();
            // Drain (bounded by the timeout) so the connection can be reused.
            let _ = r.into_body().collect().await;
            Ok::<StatusCode, String>(status)
        })
        .await
        .map_err(|_| format!("no answer within {} ms", self.policy.timeout.as_millis()))??;
        if res.is_success() { Ok(()) } else { Err(format!("answered {res}")) }
    }
}
